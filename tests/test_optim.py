"""gpugrad.optim against torch.optim: parameter trajectories over many steps on the same
initial parameters and gradients, for every optimizer and option combination; param groups,
state dicts (round trips mid-training, torch's own state dicts), zero_grad, closures, errors,
in-place semantics, and one fused kernel launch per parameter and step."""
from __future__ import annotations

import re

import numpy as np
import pytest

import gpugrad
import gpugrad.optim as optim
from gpugrad._kernels import kernels as K
from gpugrad.optim import _fused
from helpers import to_numpy, torch_or_skip

STEPS = 12
TOL = {np.float64: 1e-10, np.float32: 1e-5}

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, weight_decay=0.2, maximize=True)),
    ("SGD", dict(lr=0.1, momentum=0.5, maximize=True)),
    ("Adam", dict(lr=0.05)),
    ("Adam", dict(lr=0.05, amsgrad=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1)),
    ("Adam", dict(lr=0.05, betas=(0.3, 0.6), eps=1e-3)),  # 1 - beta1 >= 0.5: lerp's 2nd form
    ("Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.05)),
    ("AdamW", dict(lr=0.05, weight_decay=0.3, amsgrad=True)),
    ("AdamW", dict(lr=0.05, maximize=True, betas=(0.8, 0.9))),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.7)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.7, weight_decay=0.1)),
    ("RMSprop", dict(lr=0.01, alpha=0.3, centered=True, maximize=True)),  # lerp's 2nd form
    ("RMSprop", dict(lr=0.01, weight_decay=0.2, eps=1e-4)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.3, weight_decay=0.1)),
    ("Adagrad", dict(lr=0.1, maximize=True, eps=1e-3)),
]
SHAPES = [(3, 4), (5,), ()]


def _ids(case):
    name, kw = case
    return name + "-" + ",".join(f"{k}={v}" for k, v in kw.items())


def _problem(dtype, seed=0, steps=STEPS):
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return p0, grads


def _gg(a, device, requires_grad=False):
    return gpugrad.tensor(np.array(a), device=device, requires_grad=requires_grad)


def _set_grads(params, grads, mod, device=None):
    for p, g in zip(params, grads):
        p.grad = _gg(g, device) if mod is gpugrad else mod.tensor(np.array(g))


def _assert_params(gp, tp, tol, msg):
    for i, (a, b) in enumerate(zip(gp, tp)):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=0, atol=tol,
                                   err_msg=f"{msg}: parameter {i}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_trajectory_matches_torch(case, dtype, device):
    torch = torch_or_skip()
    name, kw = case
    p0, grads = _problem(dtype)
    gp = [_gg(a, device, True) for a in p0]
    tp = [torch.tensor(np.array(a), requires_grad=True) for a in p0]
    gopt, topt = getattr(optim, name)(gp, **kw), getattr(torch.optim, name)(tp, **kw)
    for t, g in enumerate(grads):
        _set_grads(gp, g, gpugrad, device)
        _set_grads(tp, g, torch)
        gopt.step()
        topt.step()
        _assert_params(gp, tp, TOL[dtype], f"{name}{kw} step {t + 1}")
        for p in gp:
            assert p.dtype == (gpugrad.float64 if dtype is np.float64 else gpugrad.float32)


def test_param_groups_and_real_backward_match_torch(device):
    """Two groups with their own hyper-parameters; gradients from a real backward pass of a
    tiny linear model (a quadratic loss), in float64."""
    torch = torch_or_skip()
    rng = np.random.default_rng(1)
    w0, b0 = rng.standard_normal((3, 4)), rng.standard_normal(3)
    x, y = rng.standard_normal((8, 4)), rng.standard_normal((8, 3))

    def run(mod, opt_cls, dev):
        w = mod.tensor(w0.copy(), requires_grad=True, **dev)
        b = mod.tensor(b0.copy(), requires_grad=True, **dev)
        xt, yt = mod.tensor(x, **dev), mod.tensor(y, **dev)
        opt = opt_cls([{"params": [w], "lr": 0.05, "momentum": 0.9},
                       {"params": b, "weight_decay": 0.1}], lr=0.1)
        for _ in range(15):
            opt.zero_grad()
            loss = ((xt @ w.t() + b - yt) ** 2).mean()
            loss.backward()
            opt.step()
        return w, b, opt

    gw, gb, gopt = run(gpugrad, optim.SGD, {"device": device})
    tw, tb, topt = run(torch, torch.optim.SGD, {})
    _assert_params([gw, gb], [tw, tb], 1e-10, "SGD with two param groups")
    assert [g["lr"] for g in gopt.param_groups] == [0.05, 0.1]
    assert [g["momentum"] for g in gopt.param_groups] == [0.9, 0]


def _train(opt, params, grads, device):
    for g in grads:
        _set_grads(params, g, gpugrad, device)
        opt.step()


@pytest.mark.parametrize("case", [CASES[3], CASES[10], CASES[14], CASES[18], CASES[23]],
                         ids=_ids)
def test_state_dict_round_trip_mid_training(case, device):
    name, kw = case
    p0, grads = _problem(np.float64, seed=2, steps=10)
    a = [_gg(x, device, True) for x in p0]
    opt_a = getattr(optim, name)(a, **kw)
    _train(opt_a, a, grads[:5], device)
    # a second model continues from a copy of the first's parameters and optimizer state
    b = [_gg(to_numpy(x), device, True) for x in a]
    opt_b = getattr(optim, name)(b, lr=123.0)  # hyper-parameters come from the state dict
    opt_b.load_state_dict(opt_a.state_dict())
    assert opt_b.param_groups[0]["lr"] == kw["lr"]
    _train(opt_a, a, grads[5:], device)
    _train(opt_b, b, grads[5:], device)
    for x, y in zip(a, b):
        assert np.array_equal(to_numpy(x), to_numpy(y))
    # the loaded state is a copy: stepping one optimizer leaves the other's state alone
    sa, sb = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    for i in sa:
        for k, v in sa[i].items():
            if isinstance(v, gpugrad.Tensor) and k != "step":
                assert v is not sb[i][k]


@pytest.mark.parametrize("case", [CASES[2], CASES[7], CASES[13], CASES[18], CASES[22]],
                         ids=_ids)
def test_state_dict_layout_matches_torch_and_loads_torch_state(case, device):
    """Same keys as torch's state dict; a torch optimizer's state dict (tensors converted)
    loads into the gpugrad optimizer, which then continues exactly as torch does."""
    torch = torch_or_skip()
    name, kw = case
    p0, grads = _problem(np.float64, seed=3, steps=8)
    gp = [_gg(x, device, True) for x in p0]
    tp = [torch.tensor(np.array(x), requires_grad=True) for x in p0]
    gopt, topt = getattr(optim, name)(gp, **kw), getattr(torch.optim, name)(tp, **kw)
    for g in grads[:4]:
        _set_grads(gp, g, gpugrad, device)
        _set_grads(tp, g, torch)
        gopt.step()
        topt.step()
    gsd, tsd = gopt.state_dict(), topt.state_dict()
    assert set(gsd["state"]) == set(tsd["state"])
    for i in tsd["state"]:
        assert set(gsd["state"][i]) == set(tsd["state"][i])
    assert [sorted(g) for g in gsd["param_groups"]] == [sorted(g) for g in tsd["param_groups"]]
    assert [g["params"] for g in gsd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]

    def convert(v):
        if isinstance(v, torch.Tensor):
            return gpugrad.tensor(v.detach().numpy().copy())
        return v

    converted = {"state": {i: {k: convert(v) for k, v in s.items()}
                           for i, s in tsd["state"].items()},
                 "param_groups": tsd["param_groups"]}
    fresh = [_gg(to_numpy(x), device, True) for x in gp]
    fopt = getattr(optim, name)(fresh, **kw)
    fopt.load_state_dict(converted)
    for g in grads[4:]:
        _set_grads(fresh, g, gpugrad, device)
        _set_grads(tp, g, torch)
        fopt.step()
        topt.step()
    _assert_params(fresh, tp, 1e-10, f"{name} continued from torch's state dict")


def test_load_state_dict_errors(device):
    p = [_gg(np.ones(3), device, True), _gg(np.ones(2), device, True)]
    opt = optim.Adam(p)
    p[0].grad = _gg(np.ones(3), device)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="different number of parameter groups"):
        optim.Adam([{"params": [p[0]]}, {"params": [p[1]]}]).load_state_dict(sd)
    with pytest.raises(ValueError, match="doesn't match the size"):
        optim.Adam([p[0]]).load_state_dict(sd)
    other = [_gg(np.ones(4), device, True), _gg(np.ones(2), device, True)]
    with pytest.raises(ValueError, match=r"shape \[3\] but its parameter has shape \[4\]"):
        optim.Adam(other).load_state_dict(sd)


def test_zero_grad(device):
    p = _gg(np.ones(3), device, True)
    opt = optim.SGD([p], lr=0.1)
    p.grad = _gg(np.full(3, 2.0), device)
    g = p.grad
    opt.zero_grad(set_to_none=False)
    assert p.grad is g and to_numpy(p.grad).tolist() == [0.0, 0.0, 0.0]
    opt.zero_grad()
    assert p.grad is None
    opt.step()  # a parameter without a gradient is skipped
    assert to_numpy(p).tolist() == [1.0, 1.0, 1.0]


def test_closure_is_evaluated_with_grad_enabled(device):
    w = _gg(np.array([1.0, -2.0]), device, True)
    opt = optim.SGD([w], lr=0.25)
    calls = []

    def closure():
        calls.append(gpugrad.is_grad_enabled())
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss

    with gpugrad.no_grad():
        loss = opt.step(closure)
    assert calls == [True] and float(loss) == 5.0
    assert to_numpy(w).tolist() == [0.5, -1.0]  # w - 0.25 * 2w


def test_update_is_in_place_and_bumps_versions(device):
    p = _gg(np.arange(6.0).reshape(2, 3), device, True)
    view = p.detach()[0]  # shares p's memory
    opt = optim.Adam([p], lr=0.1)
    y = (p * p).sum()  # saves p for backward
    p.grad = _gg(np.ones((2, 3)), device)
    data_before, version = p._data, p._version.value
    opt.step()
    assert p._data is data_before
    assert p._version.value == version + 1
    assert opt.state[p]["exp_avg"]._version.value == 1
    np.testing.assert_allclose(to_numpy(view), to_numpy(p)[0])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()
    assert p.grad_fn is None and p.requires_grad


def test_constructor_errors(device):
    p = _gg(np.ones(2), device, True)
    with pytest.raises(ValueError, match="empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match="iterable of Tensors"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.Adam([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="Invalid beta parameter at index 1"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="non-leaf"):
        optim.SGD([p * 2], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="ordered collections"):
        optim.SGD([{"params": {p}}], lr=0.1)


def test_add_param_group_and_repr(device):
    a, b = _gg(np.ones(2), device, True), _gg(np.ones(3), device, True)
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": b, "lr": 0.01})
    assert opt.param_groups[1]["momentum"] == 0.9 and opt.param_groups[1]["lr"] == 0.01
    r = repr(opt)
    assert r.startswith("SGD (\nParameter Group 0\n") and "    lr: 0.01" in r


def test_one_fused_kernel_launch_per_parameter(device, monkeypatch):
    """Each parameter's update is ONE kernel of kernels/optim.cu, nothing else: on NumPy its
    twin runs once per parameter (CuPy: the in-place launch, once)."""
    launches, twins = [], []
    real_launch = _fused.launch

    def counting_launch(name, args, outs):
        launches.append(name)
        return real_launch(name, args, outs)

    monkeypatch.setattr(_fused, "launch", counting_launch)
    for k in K:
        if k.name.endswith("_step"):
            def counting_twin(*a, _real=k.twin, _name=k.name):
                twins.append(_name)
                return _real(*a)
            monkeypatch.setattr(k, "twin", counting_twin)
    expected = {"SGD": "sgd_step", "Adam": "adam_step", "AdamW": "adam_step",
                "RMSprop": "rmsprop_step", "Adagrad": "adagrad_step"}
    for name, kernel in expected.items():
        params = [_gg(np.ones(s), device, True) for s in [(2, 3), (4,), (5,)]]
        opt = getattr(optim, name)(params, lr=0.1)
        for p in params[:2]:  # the third has no gradient: skipped
            p.grad = _gg(np.ones(p.shape), device)
        launches.clear()
        twins.clear()
        opt.step()
        opt.step()
        assert launches == [kernel] * 4, name
        assert twins == ([kernel] * 4 if device == "cpu" else []), name
    params = [_gg(np.ones(3), device, True)]
    params[0].grad = _gg(np.ones(3), device)
    launches.clear()
    optim.RMSprop(params, centered=True, momentum=0.5).step()
    optim.Adam(params, amsgrad=True).step()
    optim.SGD(params, momentum=0.5).step()
    assert launches == ["rmsprop_centered_momentum_step", "adam_amsgrad_step",
                        "sgd_momentum_step"]


def test_optim_kernels_read_inputs_before_writing_outputs():
    """The in-place launch binds each output to an input's memory (kernels/optim.cu): after
    a kernel's first output assignment, it only copies locals into outputs."""
    names = [k.name for k in K if k.definition.relname.endswith("optim.cu")]
    assert len(names) == 11
    for name in names:
        d = K[name].definition
        statements = [s.strip() for s in re.sub(r"//[^\n]*", "", d.body).split(";") if s.strip()]
        inputs = {n for n, _ in d.inputs}
        writing = False
        for s in statements:
            lhs, rhs = (x.strip() for x in s.split("=", 1))
            if lhs in d.outputs:
                writing = True
            if writing:
                assert lhs in d.outputs, f"{name}: {s!r} after an output was written"
                assert re.fullmatch(r"\w+", rhs) and rhs not in inputs, \
                    f"{name}: output {lhs} must be assigned a local, got {rhs!r}"
        # each output NAME_out is written into input NAME
        assert all(o.endswith("_out") and o[:-4] in inputs for o in d.outputs), name


@pytest.mark.gpu
def test_inplace_cupy_launch_matches_twin():
    """On the GPU: the in-place CuPy launch of every optimizer kernel equals its NumPy twin."""
    import cupy
    rng = np.random.default_rng(5)
    for k in K:
        if not k.definition.relname.endswith("optim.cu"):
            continue
        for dtype in (np.float32, np.float64):
            args = []
            for n, scalar in k.definition.inputs:
                if scalar:
                    args.append(0.0 if n in ("maximize", "nesterov", "first") else 0.3)
                else:
                    args.append(np.abs(rng.standard_normal(1000)).astype(dtype) + 0.1)
            expect = k(*args)
            expect = expect if isinstance(expect, tuple) else (expect,)
            dev = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
            names = [n for n, _ in k.definition.inputs]
            outs = tuple(dev[names.index(o[:-4])] for o in k.definition.outputs)
            ptrs = [o.data.ptr for o in outs]
            _fused.launch(k.name, tuple(dev), outs)
            assert [o.data.ptr for o in outs] == ptrs
            for o, e in zip(outs, expect):
                tol = 1e-6 if dtype == np.float32 else 1e-13
                np.testing.assert_allclose(cupy.asnumpy(o), e, rtol=tol, atol=tol,
                                           err_msg=k.name)


# ---- gradient clipping ------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1, float("inf"), 0.5, 3.0, 0, float("-inf")])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, device):
    torch = torch_or_skip()
    rng = np.random.default_rng(7)
    shapes = [(3, 4), (5,), ()] + ([] if np.isinf(norm_type) else [(0, 2)])
    grads = [rng.standard_normal(s) for s in shapes]
    gp = [_gg(np.zeros(g.shape), device, True) for g in grads] + [_gg(np.ones(2), device, True)]
    tp = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads] + \
        [torch.ones(2, dtype=torch.float64, requires_grad=True)]
    _set_grads(gp, grads, gpugrad, device)  # the last parameter has no gradient
    _set_grads(tp, grads, torch)
    total = gpugrad.nn.utils.clip_grad_norm_(gp, max_norm, norm_type=norm_type)
    expect = torch.nn.utils.clip_grad_norm_(tp, max_norm, norm_type=norm_type)
    assert isinstance(total, gpugrad.Tensor) and total.shape == ()
    np.testing.assert_allclose(to_numpy(total), expect.numpy(), rtol=1e-12)
    for a, b in zip(gp[:-1], tp[:-1]):
        np.testing.assert_allclose(to_numpy(a.grad), b.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert gp[-1].grad is None


def test_clip_grad_norm_single_tensor_float32_and_nonfinite(device):
    torch = torch_or_skip()
    g = np.array([3.0, 4.0], dtype=np.float32)
    p = _gg(np.zeros(2, np.float32), device, True)
    p.grad = _gg(g, device)
    version = p.grad._version.value
    total = gpugrad.nn.utils.clip_grad_norm_(p, 1.0)
    assert total.dtype == gpugrad.float32 and float(total) == 5.0
    assert p.grad._version.value == version + 1
    q = torch.zeros(2, requires_grad=True)
    q.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_(q, 1.0)
    np.testing.assert_allclose(to_numpy(p.grad), q.grad.numpy(), rtol=1e-6)
    p.grad = _gg(np.array([np.inf, 1.0], np.float32), device)
    with pytest.raises(RuntimeError, match="non-finite"):
        gpugrad.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert to_numpy(p.grad).tolist() == [np.inf, 1.0]  # untouched by the failed call
    assert float(gpugrad.nn.utils.clip_grad_norm_([], 1.0)) == 0.0
    for lib, t in ((gpugrad, _gg(np.zeros(0), device, True)), (torch, torch.zeros(0))):
        t.grad = t.detach().clone()
        with pytest.raises(RuntimeError, match="compute the inf(inity)? norm on an empty"):
            lib.nn.utils.clip_grad_norm_([t], 1.0, norm_type=float("inf"))


def test_clip_grad_value_matches_torch(device):
    torch = torch_or_skip()
    g = np.array([[-3.0, 0.2], [0.7, 5.0]])
    p = _gg(np.zeros((2, 2)), device, True)
    p.grad = _gg(g, device)
    q = torch.zeros((2, 2), dtype=torch.float64, requires_grad=True)
    q.grad = torch.tensor(g)
    grad = p.grad
    assert gpugrad.nn.utils.clip_grad_value_([p, _gg(np.ones(1), device, True)], 0.5) is None
    torch.nn.utils.clip_grad_value_(q, 0.5)
    assert p.grad is grad
    np.testing.assert_array_equal(to_numpy(p.grad), q.grad.numpy())


def test_step_hooks(device):
    p = _gg(np.ones(2), device, True)
    p.grad = _gg(np.ones(2), device)
    opt = optim.SGD([p], lr=0.5)
    calls = []

    def pre(o, args, kwargs):
        calls.append(("pre", to_numpy(p).tolist()))

    def post(o, args, kwargs):
        calls.append(("post", to_numpy(p).tolist()))

    h1, h2 = opt.register_step_pre_hook(pre), opt.register_step_post_hook(post)
    opt.step()
    assert calls == [("pre", [1.0, 1.0]), ("post", [0.5, 0.5])]
    h1.remove()
    h2.remove()
    opt.step()
    assert len(calls) == 2 and to_numpy(p).tolist() == [0.0, 0.0]
