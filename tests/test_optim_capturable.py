"""capturable=True (torch's argument) for Adam, AdamW and RMSprop: the step count lives on the
parameter's device and Adam's bias corrections are computed by the fused kernel
(``adam_capturable_step``), so that a CUDA graph replay (gpugrad.compile) redoes the step
exactly. Checked here: trajectories against capturable=False and torch.optim, the kernel
against an independent float64 formula, no host read of the count, state dicts, the capture
checks (capturable=False raises when captured on CUDA), and, on a GPU, replays against eager
steps."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gpugrad
import gpugrad.optim as optim
from gpugrad import _capture, nn
from gpugrad._kernels import kernels as K
from gpugrad.optim import _fused
from helpers import to_numpy, torch_or_skip
from test_optim import _gg, _ids, _problem as _optim_problem

STEPS = 60


def _problem(dtype, seed=0, steps=STEPS):
    """test_optim's problem (its SHAPES), over this file's number of steps."""
    return _optim_problem(dtype, seed, steps)
CASES = [
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.6), eps=1e-3)),  # 1 - beta1 >= 0.5: lerp's 2nd form
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    ("Adam", dict(lr=0.02, betas=(0.0, 0.99))),  # beta1 = 0: log(beta1) = -inf
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, maximize=True, betas=(0.8, 0.9))),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.7, weight_decay=0.1)),
]
# capturable=True against the default: the same arithmetic except the bias corrections,
# computed in the parameter's dtype on the device instead of in double on the host.
TOL_DEFAULT = {np.float64: 1e-13, np.float32: 2e-6}
# against torch (capturable=False on the CPU; torch's capturable needs an accelerator)
TOL_TORCH = {np.float64: 1e-10, np.float32: 2e-5}



def _set_grads(params, grads, device):
    for p, g in zip(params, grads):
        p.grad = _gg(g, device)


def _train(opt, params, grads, device):
    for g in grads:
        _set_grads(params, g, device)
        opt.step()


def _assert_params(a, b, tol, msg):
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(to_numpy(x), to_numpy(y), rtol=0, atol=tol,
                                   err_msg=f"{msg}: parameter {i}")


def _assert_step(opt, params, count, device):
    for p in params:
        step = opt.state[p]["step"]
        assert isinstance(step, gpugrad.Tensor) and step.shape == () and \
            step.dtype == gpugrad.float32 and str(step.device) == str(p.device), step
        assert float(step) == count


# ---- trajectories -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_capturable_matches_default_and_torch(case, dtype, device):
    name, kw = case
    p0, grads = _problem(dtype)
    cap = [_gg(a, device, True) for a in p0]
    ref = [_gg(a, device, True) for a in p0]
    copt = getattr(optim, name)(cap, capturable=True, **kw)
    ropt = getattr(optim, name)(ref, **kw)
    assert copt.param_groups[0]["capturable"] and not ropt.param_groups[0]["capturable"]
    for t, g in enumerate(grads):
        _set_grads(cap, g, device)
        _set_grads(ref, g, device)
        copt.step()
        ropt.step()
        _assert_params(cap, ref, TOL_DEFAULT[dtype], f"{name}{kw} step {t + 1}")
    _assert_step(copt, cap, STEPS, device)
    torch = pytest.importorskip("torch")
    tp = [torch.tensor(np.array(a), requires_grad=True) for a in p0]
    topt = getattr(torch.optim, name)(tp, **kw)
    for g in grads:
        for p, x in zip(tp, g):
            p.grad = torch.tensor(np.array(x))
        topt.step()
    _assert_params(cap, tp, TOL_TORCH[dtype], f"{name}{kw} against torch")


def test_capturable_float16_is_computed_in_float32(device):
    """float16 parameters: the update is computed in float32 and rounded once, as with the
    default (equal here on the CPU; within a float16 ulp elsewhere, where the float32 bias
    corrections may round differently); the count stays float32, exact beyond 2048 steps
    (where float16 integers are not)."""
    def same(x, y):
        if device == "cpu":
            np.testing.assert_array_equal(to_numpy(x), to_numpy(y))
        else:
            np.testing.assert_allclose(to_numpy(x).astype(np.float64),
                                       to_numpy(y).astype(np.float64), rtol=2e-3, atol=1e-4)

    rng = np.random.default_rng(4)
    p0 = rng.standard_normal((4, 5)).astype(np.float16)
    a, b = _gg(p0, device, True), _gg(p0, device, True)
    oa, ob = optim.Adam([a], lr=0.01), optim.Adam([b], lr=0.01, capturable=True)
    for _ in range(20):
        g = rng.standard_normal((4, 5)).astype(np.float16)
        a.grad, b.grad = _gg(g, device), _gg(g, device)
        oa.step()
        ob.step()
    assert b.dtype == gpugrad.float16
    same(b, a)
    ob.state[b]["step"].fill_(3000.0)  # 3001 is not a float16 number
    oa.state[a]["step"].fill_(3000.0)
    a.grad = b.grad = _gg(np.ones((4, 5), np.float16), device)
    oa.step()
    ob.step()
    same(b, a)
    assert float(ob.state[b]["step"]) == 3001.0


# ---- the kernel --------------------------------------------------------------------------------
def _reference_adam(p, g, m, v, vmax, t, lr, beta1, beta2, eps, wd, decay, maximize):
    """Adam's update in float64, bias corrections as torch computes them (1 - beta**t)."""
    p, g, m, v, t = (np.asarray(x, np.float64) for x in (p, g, m, v, t))
    d = -g if maximize else g
    q = p * decay
    d = d + wd * q
    m_new = beta1 * m + (1 - beta1) * d
    v_new = beta2 * v + (1 - beta2) * d * d
    den_v = v_new if vmax is None else np.maximum(np.asarray(vmax, np.float64), v_new)
    bc1, bc2 = 1 - beta1 ** t, 1 - beta2 ** t
    p_new = q - lr / bc1 * (m_new / (np.sqrt(den_v) / np.sqrt(bc2) + eps))
    return p_new, m_new, v_new, den_v


@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_capturable_kernel_twin_equals_reference_formula(dtype, amsgrad):
    """The twin of the capturable kernels against float64 Adam, over counts from 1 (where
    1 - beta2**t nearly cancels) to 10**5, one count per element (step broadcasts). float32
    within 2e-6 of the float64 update: T(1) - pow(beta2, t) in float32 would be off by ~6e-6
    at t = 1 (beta2 = 0.999 is not a float32 number), -expm1(t * log(beta2)) is not."""
    rng = np.random.default_rng(7)
    n = 4000
    t = np.concatenate([np.arange(1, 101), rng.integers(101, 100_000, n - 100)]).astype(dtype)
    # m of the sign of the gradient (the direction): m_new does not cancel, so the update
    # is compared relatively (it is where the bias corrections show)
    g = (rng.random(n) + 0.1).astype(dtype)
    m0 = (0.1 * rng.random(n)).astype(dtype)
    v = (0.01 * rng.random(n)).astype(dtype)
    vmax = (v + 0.01 * rng.random(n)).astype(dtype)
    p = np.zeros(n, dtype)  # p_new is the update itself: compared relatively
    tol = 2e-6 if dtype == np.float32 else 1e-13
    for lr, beta1, beta2, eps, wd, maximize in [(1e-3, 0.9, 0.999, 1e-8, 0.0, False),
                                                (0.05, 0.3, 0.6, 1e-3, 0.1, True),
                                                (0.01, 0.0, 0.99, 1e-8, 0.0, False)]:
        scalars = (lr, 1 - beta1, beta2, 1 - beta2, eps, wd, 1.0,
                   math.log(beta1) if beta1 > 0 else -math.inf, math.log(beta2),
                   float(maximize))
        m = -m0 if maximize else m0
        if amsgrad:
            got = K.adam_amsgrad_capturable_step(p, g, m, v, vmax, t, *scalars)
        else:
            got = K.adam_capturable_step(p, g, m, v, t, *scalars)
        want = _reference_adam(p, g, m, v, vmax if amsgrad else None, t, lr, beta1, beta2,
                               eps, wd, 1.0, maximize)
        assert all(x.dtype == dtype for x in got)
        for name, x, w in zip(("p", "m", "v", "vmax"), got, want):
            np.testing.assert_allclose(x, w, rtol=tol, atol=0,
                                       err_msg=f"{name} beta1={beta1} beta2={beta2}")


def test_capturable_kernels_are_written_for_in_place():
    """Outputs last, from locals (the in-place launch), and the count is not an output."""
    for name in ("adam_capturable_step", "adam_amsgrad_capturable_step"):
        d = K[name].definition
        assert "step" in [n for n, s in d.inputs if not s] and "step_out" not in d.outputs
        assert K[name]._inplace_ok(tuple(o[:-4] for o in d.outputs))


class _NoHostRead(np.ndarray):
    """A step count that fails on any read by the host (float(), .item(), bool(), ...): the
    CPU stand-in of a device count inside a CUDA graph."""

    def _fail(self, *a, **k):
        raise AssertionError("the capturable path read the step count on the host")

    __float__ = __int__ = __bool__ = __index__ = item = tolist = _fail


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_capturable_step_never_reads_the_count_on_the_host(name):
    p = _gg(np.ones(3), "cpu", True)
    opt = getattr(optim, name)([p], lr=0.1, capturable=True)
    p.grad = _gg(np.full(3, 0.5), "cpu")
    opt.step()  # creates the state
    step = opt.state[p]["step"]
    step._data = np.array(1.0, np.float32).view(_NoHostRead)
    for _ in range(3):
        opt.step()
    assert step._data.view(np.ndarray) == 4.0
    # the default path reads it (torch computes its bias corrections in Python)
    if name != "RMSprop":
        ref = getattr(optim, name)([_gg(np.ones(3), "cpu", True)], lr=0.1)
        q = ref.param_groups[0]["params"][0]
        q.grad = p.grad
        ref.step()
        ref.state[q]["step"]._data = np.array(1.0, np.float32).view(_NoHostRead)
        with pytest.raises(AssertionError, match="read the step count on the host"):
            ref.step()


def test_capturable_adam_is_one_fused_kernel_per_parameter(device, monkeypatch):
    names = []
    real = _fused.launch_at_step
    monkeypatch.setattr(_fused, "launch_at_step",
                        lambda name, *a: (names.append(name), real(name, *a))[1])
    monkeypatch.setattr(_fused, "launch", lambda name, *a: names.append(name))
    params = [_gg(np.ones(s), device, True) for s in [(2, 3), (4,), (5,)]]
    for amsgrad, kernel in [(False, "adam_capturable_step"),
                            (True, "adam_amsgrad_capturable_step")]:
        opt = optim.AdamW(params, amsgrad=amsgrad, capturable=True)
        for p in params[:2]:
            p.grad = _gg(np.ones(p.shape), device)
        names.clear()
        opt.step()
        opt.step()
        assert names == [kernel] * 4


# ---- state dicts -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", [CASES[1], CASES[8], CASES[11]], ids=_ids)
def test_capturable_state_dict_round_trip(case, device):
    name, kw = case
    p0, grads = _problem(np.float64, seed=2, steps=10)
    a = [_gg(x, device, True) for x in p0]
    opt_a = getattr(optim, name)(a, capturable=True, **kw)
    _train(opt_a, a, grads[:5], device)
    b = [_gg(to_numpy(x), device, True) for x in a]
    opt_b = getattr(optim, name)(b, capturable=True, lr=123.0)
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == kw["lr"]
    _assert_step(opt_b, b, 5, device)
    for i, p in enumerate(b):  # copies, not the other optimizer's tensors
        assert opt_b.state[p]["step"] is not opt_a.state[a[i]]["step"]
    _train(opt_a, a, grads[5:], device)
    _train(opt_b, b, grads[5:], device)
    for x, y in zip(a, b):
        assert np.array_equal(to_numpy(x), to_numpy(y))
    _assert_step(opt_a, a, 10, device)
    _assert_step(opt_b, b, 10, device)


@pytest.mark.parametrize("case", [CASES[4], CASES[9], CASES[11]], ids=_ids)
def test_loading_across_capturable_settings_keeps_the_loaders_setting(case, device):
    """A non-capturable state loaded into a capturable optimizer: the count moves to the
    parameter's device and the optimizer stays capturable (and the other way round: the
    count goes to the CPU). Either continues as the saved optimizer does."""
    name, kw = case
    p0, grads = _problem(np.float64, seed=3, steps=10)
    for saved_cap, loader_cap in [(False, True), (True, False)]:
        a = [_gg(x, device, True) for x in p0]
        opt_a = getattr(optim, name)(a, capturable=saved_cap, **kw)
        _train(opt_a, a, grads[:4], device)
        b = [_gg(to_numpy(x), device, True) for x in a]
        opt_b = getattr(optim, name)(b, capturable=loader_cap, **kw)
        opt_b.load_state_dict(opt_a.state_dict())
        assert opt_b.param_groups[0]["capturable"] is loader_cap
        for p in b:
            step = opt_b.state[p]["step"]
            want = str(p.device) if loader_cap else "cpu"
            assert str(step.device) == want and step.dtype == gpugrad.float32
            assert float(step) == 4
        _train(opt_a, a, grads[4:], device)
        _train(opt_b, b, grads[4:], device)
        _assert_params(b, a, 1e-13, f"{name} saved capturable={saved_cap}")


def test_torch_state_dict_loads_into_a_capturable_optimizer(device):
    torch = torch_or_skip()
    p0, grads = _problem(np.float64, seed=5, steps=10)
    tp = [torch.tensor(np.array(x), requires_grad=True) for x in p0]
    topt = torch.optim.AdamW(tp, lr=0.05, amsgrad=True)
    for g in grads[:4]:
        for p, x in zip(tp, g):
            p.grad = torch.tensor(np.array(x))
        topt.step()
    tsd = topt.state_dict()
    converted = {"state": {i: {k: gpugrad.tensor(v.detach().numpy().copy())
                               if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                           for i, s in tsd["state"].items()},
                 "param_groups": tsd["param_groups"]}
    gp = [_gg(p.detach().numpy(), device, True) for p in tp]
    gopt = optim.AdamW(gp, lr=0.05, amsgrad=True, capturable=True)
    gopt.load_state_dict(converted)
    _assert_step(gopt, gp, 4, device)
    for g in grads[4:]:
        _set_grads(gp, g, device)
        for p, x in zip(tp, g):
            p.grad = torch.tensor(np.array(x))
        gopt.step()
        topt.step()
    _assert_params(gp, tp, 1e-10, "AdamW(capturable) continued from torch's state dict")


def test_switching_capturable_on_moves_the_count(device):
    p = _gg(np.ones(3), device, True)
    opt = optim.Adam([p], lr=0.1)
    p.grad = _gg(np.full(3, 0.5), device)
    opt.step()
    assert str(opt.state[p]["step"].device) == "cpu"
    opt.param_groups[0]["capturable"] = True
    opt.step()
    _assert_step(opt, [p], 2, device)


# ---- the capture checks -----------------------------------------------------------------------
def _one_param_step(opt_cls, device, **kw):
    p = _gg(np.ones(3), device, True)
    opt = opt_cls([p], **kw)
    p.grad = _gg(np.full(3, 0.5), device)
    opt.step()  # warm-up: the state exists
    return opt


@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_non_capturable_step_raises_in_a_cuda_capture(name, device, monkeypatch):
    """What step() does while a CUDA graph is being captured (the flag that CudaRecorder
    sets, set here by hand): capturable=False raises torch's error, with the fix in it;
    capturable=True runs."""
    opt = _one_param_step(getattr(optim, name), device, lr=0.1)
    cap = _one_param_step(getattr(optim, name), device, lr=0.1, capturable=True)
    monkeypatch.setattr(_capture, "cuda_capturing", True)
    with pytest.raises(RuntimeError, match=rf"graph capture of step\(\) for an instance of "
                                           rf"{name} but param_groups' capturable is False.*"
                                           rf"capturable=True"):
        opt.step()
    cap.step()
    _one_param_step(optim.SGD, device, lr=0.1, momentum=0.9).step()
    _one_param_step(optim.Adagrad, device, lr=0.1).step()
    with pytest.raises(RuntimeError, match="Adagrad with lr_decay=0.1.*lr_decay=0"):
        _one_param_step(optim.Adagrad, device, lr=0.1, lr_decay=0.1).step()
    monkeypatch.setattr(_capture, "cuda_capturing", False)
    opt.step()  # outside a capture: fine


def test_compiled_capturable_adam_equals_eager(device):
    """gpugrad.compile of a whole step with capturable AdamW (amsgrad, weight decay) over 12
    calls: the same parameters, state and step count as eager steps (on CPU, compile runs
    eagerly under the capture flag; on a GPU, replays of a CUDA graph)."""
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 5)).astype(np.float32)
    xs = [rng.standard_normal((8, 5)).astype(np.float32) for _ in range(12)]
    ys = [rng.standard_normal((8, 4)).astype(np.float32) for _ in range(12)]

    def make():
        w = _gg(w0, device, True)
        opt = optim.AdamW([w], lr=0.05, amsgrad=True, weight_decay=0.1, capturable=True)

        def step(x, y):
            opt.zero_grad()
            loss = (((x[:, None, :] * w).sum(-1) - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        return w, opt, step

    we, oe, eager = make()
    wc, oc, stepc = make()
    compiled = gpugrad.compile(stepc, warmup=2)
    for x, y in zip(xs, ys):
        le = eager(_gg(x, device), _gg(y, device))
        lc = compiled(_gg(x, device), _gg(y, device))
        np.testing.assert_allclose(to_numpy(lc), to_numpy(le), rtol=1e-6)
    assert compiled.stats["replays"] == 9
    np.testing.assert_allclose(to_numpy(wc), to_numpy(we), rtol=1e-6, atol=1e-7)
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_allclose(to_numpy(oc.state[wc][k]), to_numpy(oe.state[we][k]),
                                   rtol=1e-6, atol=1e-9)
    _assert_step(oc, [wc], 12, device)


# ---- on a GPU: real CUDA graphs ---------------------------------------------------------------
def _elementwise_problem(dtype, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    w0 = [rng.standard_normal(s).astype(dtype) for s in [(64, 33), (33,), ()]]
    data = [(rng.standard_normal((64, 33)).astype(dtype),
             rng.standard_normal((64, 33)).astype(dtype)) for _ in range(n_steps)]
    return w0, data


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[8], CASES[6], CASES[11]], ids=_ids)
def test_gpu_replays_of_a_capturable_step_equal_eager(case, dtype):
    """40 calls of a compiled step (3 warm-up, 1 capture, 36 replays) against 40 eager steps,
    elementwise ops only (the same kernels on both sides): bias corrections that froze at the
    capture's count would be off by far more than rounding at every replay."""
    name, kw = case
    n = 40
    w0, data = _elementwise_problem(dtype, n)

    def make():
        ws = [_gg(a, "cuda", True) for a in w0]
        opt = getattr(optim, name)(ws, capturable=True, **kw)

        def step(x, y):
            opt.zero_grad()
            loss = (((x * ws[0] + ws[1]) * ws[2] - y) ** 2).mean()
            loss.backward()
            opt.step()
            return loss
        return ws, opt, step

    we, oe, eager = make()
    wc, oc, stepc = make()
    compiled = gpugrad.compile(stepc, warmup=3)
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for i, (x, y) in enumerate(data):
        le = eager(_gg(x, "cuda"), _gg(y, "cuda")).item()
        lc = compiled(_gg(x, "cuda"), _gg(y, "cuda")).item()
        assert abs(lc - le) <= tol * max(1.0, abs(le)), (i, lc, le)
    assert compiled.stats["replays"] == n - 4
    for a, b in zip(wc, we):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=tol, atol=tol)
    _assert_step(oc, wc, n, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop"])
def test_gpu_non_capturable_step_raises_at_capture(name):
    model = nn.Linear(5, 3).to("cuda")
    opt = getattr(optim, name)(model.parameters(), lr=0.01)

    def step(x):
        opt.zero_grad()
        loss = (model(x) ** 2).mean()
        loss.backward()
        opt.step()
        return loss

    compiled = gpugrad.compile(step, warmup=1)
    x = gpugrad.randn(4, 5, device="cuda")
    compiled(x)  # warm-up: eager
    with pytest.raises(RuntimeError, match=f"instance of {name} but param_groups' capturable "
                                           "is False.*capturable=True"):
        compiled(x)
    assert compiled.signatures() == []  # the failed capture left nothing behind
    assert not _capture.cuda_capturing
