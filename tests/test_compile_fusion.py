"""Fusion inside ``gpugrad.compile`` (``gpugrad._lazy``): each maximal chain of elementwise
ops becomes one generated kernel forward and one backward, with the eager results.

- W2's chain: one region, one kernel each way (on NumPy a loss takes its gradient from the
  forward's own kernel), loss and gradient equal to eager in float32 and float64;
- chains broken by a matmul (two regions), broadcast inputs (gradients summed down), an
  intermediate kept alive (a second output), requires_grad=False inputs and no_grad chains;
- a W1-style MLP step (matmul, bias, relu, log_softmax, SGD under no_grad) over several
  compiled steps (warm-up, capture, replays) equal to eager;
- gradcheck of fused regions in float64, gradients of gradients (replayed eagerly);
- what falls back to the eager ops, pending metadata, in-place hazards, errors, fuse=False.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad import _fusion, _lazy, nn, optim
from gpugrad.autograd import gradcheck
from gpugrad.ops import elementwise as E
from helpers import assert_close, to_numpy

TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}


pytestmark = pytest.mark.usefixtures("fusion_state")  # tests/conftest.py


def _data(rng, shape, dtype, device, requires_grad=False, positive=False):
    a = rng.standard_normal(shape)
    if positive:
        a = np.abs(a) + 0.5
    return gpugrad.tensor(a.astype(dtype), device=device, requires_grad=requires_grad)


def w2_loss(x):
    return ((x * 0.5 + 0.1).tanh() * x.sigmoid() + x * x).sum()


def _launches():
    return _lazy.stats["forward_launches"], _lazy.stats["backward_launches"]


# ---- W2 --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_w2_chain_is_one_kernel_and_equals_eager(dtype, device):
    rng = np.random.default_rng(0)
    x = _data(rng, (3000,), dtype, device, requires_grad=True)

    def step(x):
        loss = w2_loss(x)
        loss.backward()
        return loss

    compiled = gpugrad.compile(step, warmup=1)
    xe = x.detach().requires_grad_()
    le = w2_loss(xe)
    le.backward()
    for i in range(4):  # warm-up, capture, replays
        x.grad = None
        before = dict(_lazy.stats)
        loss = compiled(x)
        assert _lazy.stats["regions"] - before["regions"] == 1
        assert _lazy.stats["ops"] - before["ops"] == 8  # 7 elementwise ops and the sum
        fwd = _lazy.stats["forward_launches"] - before["forward_launches"]
        bwd = _lazy.stats["backward_launches"] - before["backward_launches"]
        # loss.backward() of the pending loss: value and gradient from ONE kernel (the
        # region's value_and_grad; on CUDA its reduce kernel), no backward kernel
        assert (fwd, bwd) == (1, 0)
        assert _lazy.stats["fast_backwards"] - before["fast_backwards"] == 1
        assert_close(loss, le.detach(), **TOL[dtype])
        assert_close(x.grad, xe.grad, **TOL[dtype])
    assert _fusion.cache_info()["entries"] == 1  # the value_and_grad program alone


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_chain_with_eager_reduction_is_one_kernel_each_way(dtype, device):
    rng = np.random.default_rng(1)
    x = _data(rng, (5, 7), dtype, device, requires_grad=True)

    def f(x):
        y = (x * 0.5 + 0.1).tanh() * x.sigmoid() + x * x
        return y.sum(dim=0)  # a partial sum: not fused, the chain's output is elementwise

    compiled = gpugrad.compile(f, warmup=1)
    compiled(x)
    out = compiled(x)  # the warm-up and the capture each run the chain: one kernel
    assert _launches() == (2, 0)
    xe = x.detach().requires_grad_()
    oe = f(xe)
    with _lazy.fusing():
        of = f(x)
    g = _data(rng, (7,), dtype, device)
    of.backward(g)
    oe.backward(g)
    assert _launches() == (3, 1)
    assert_close(out, oe.detach(), **TOL[dtype])
    assert_close(of, oe, **TOL[dtype])
    assert_close(x.grad, xe.grad, **TOL[dtype])


# ---- region boundaries and outputs ------------------------------------------------------------
def test_matmul_breaks_the_chain_into_two_regions(device):
    rng = np.random.default_rng(2)
    x = _data(rng, (6, 5), "float64", device, requires_grad=True)
    w = _data(rng, (5, 4), "float64", device, requires_grad=True)

    def f(x, w):
        h = (x * 2 + 1).tanh() - x
        return ((h @ w).sigmoid() * 3 + 1).sum()

    with _lazy.fusing():
        loss = f(x, w)
        loss.backward()
    assert _lazy.stats["regions"] == 2
    xe, we = (t.detach().requires_grad_() for t in (x, w))
    le = f(xe, we)
    le.backward()
    assert_close(loss, le, **TOL["float64"])
    assert_close(x.grad, xe.grad, **TOL["float64"])
    assert_close(w.grad, we.grad, **TOL["float64"])
    # the first region's backward is its own kernel, the loss region's came with its forward
    assert _launches() == ((2, 1) if device == "cpu" else (2, 2))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_broadcast_inputs_get_reduced_gradients(dtype, device):
    rng = np.random.default_rng(3)
    h = _data(rng, (4, 3, 5), dtype, device, requires_grad=True)
    b = _data(rng, (5,), dtype, device, requires_grad=True)
    c = _data(rng, (3, 1), dtype, device, requires_grad=True)
    s = _data(rng, (), dtype, device, requires_grad=True)

    def f(h, b, c, s):
        y = ((h + b).relu() * c - s).sigmoid() + b / (c * c + 1)
        return y.sum(dim=(0, 1))

    with _lazy.fusing():
        out = f(h, b, c, s)
    # one region per shape: (3, 1) for c * c + 1, (3, 5) for b / that, (4, 3, 5) the rest
    assert _lazy.stats["regions"] == 3
    g = _data(rng, (5,), dtype, device)
    out.backward(g)
    ref = [t.detach().requires_grad_() for t in (h, b, c, s)]
    f(*ref).backward(g)
    assert_close(out, f(*ref), **TOL[dtype])
    for t, r in zip((h, b, c, s), ref):
        assert t.grad.shape == t.shape
        assert_close(t.grad, r.grad, **TOL[dtype])


def test_intermediate_kept_alive_is_an_output(device):
    rng = np.random.default_rng(4)
    x = _data(rng, (50,), "float64", device, requires_grad=True)
    y = _data(rng, (50,), "float64", device, requires_grad=True)

    def f(x, y):
        a = x * y                  # kept: returned, and used by the chain
        b = (a.exp() + a).sin()    # the chain goes on past it
        return a, (b * 2).sum()

    compiled = gpugrad.compile(lambda x, y: f(x, y), warmup=1)
    compiled(x, y)
    a_c, s_c = compiled(x, y)
    with _lazy.fusing():
        a, s = f(x, y)
        (a.sum(dim=0) + s).backward()  # gradients flow into both outputs of the one region
    ref = [t.detach().requires_grad_() for t in (x, y)]
    ae, se = f(*ref)
    (ae.sum(dim=0) + se).backward()
    assert_close(a_c, ae.detach(), **TOL["float64"])
    assert_close(s_c, se.detach(), **TOL["float64"])
    assert_close(a, ae, **TOL["float64"])
    assert_close(s, se, **TOL["float64"])
    assert_close(x.grad, ref[0].grad, **TOL["float64"])
    assert_close(y.grad, ref[1].grad, **TOL["float64"])
    assert a.grad_fn is s.grad_fn and a.grad_fn.name() == "FusedRegionBackward"
    assert (a.output_nr, s.output_nr) == (0, 1)


def test_unused_output_gets_zero_gradient(device):
    x = gpugrad.tensor([0.5, -1.0, 2.0], device=device, requires_grad=True)
    with _lazy.fusing():
        a = x.exp()
        b = (a * 3).tanh()
    b.sum().backward()  # a is an output of the region, without a gradient
    xe = x.detach().requires_grad_()
    (xe.exp() * 3).tanh().sum().backward()
    assert_close(x.grad, xe.grad, **TOL["float32"])


# ---- grad modes -------------------------------------------------------------------------------
def test_requires_grad_false_inputs_and_no_grad_chains(device):
    rng = np.random.default_rng(5)
    x = _data(rng, (8,), "float32", device, requires_grad=True)
    c = _data(rng, (8,), "float32", device)
    with _lazy.fusing():
        u = c * 2 + 1                    # no input requires grad
        v = (x * c).tanh()               # same region: requires grad
        with gpugrad.no_grad():
            w = (x * 3).exp()            # no_grad: its own region, never recorded
        assert u.shape == (8,) and not u.requires_grad and v.requires_grad
        assert not w.requires_grad
        loss = (v * u).sum()
    assert u.grad_fn is None and not u.requires_grad and u.is_leaf
    assert w.grad_fn is None and not w.requires_grad
    assert v.grad_fn is not None
    loss.backward()
    assert c.grad is None
    xe = x.detach().requires_grad_()
    ((xe * c).tanh() * (c * 2 + 1)).sum().backward()
    assert_close(x.grad, xe.grad, **TOL["float32"])
    assert_close(w, (x.detach() * 3).exp(), **TOL["float32"])


def test_no_grad_compiled_step_records_nothing(device):
    x = gpugrad.ones(4, device=device, requires_grad=True)

    @gpugrad.compile(warmup=1)
    def f(x):
        with gpugrad.no_grad():
            return (x * 2).sigmoid() + 1

    for _ in range(3):
        assert_close(f(x), (x.detach() * 2).sigmoid() + 1, **TOL["float32"])
    assert _lazy.stats["backward_launches"] == 0


# ---- a W1-style step --------------------------------------------------------------------------
def _w1_params(device, seed):
    rng = np.random.default_rng(seed)
    shapes = [(12, 32), (32,), (32, 4), (4,)]
    return [gpugrad.tensor((rng.standard_normal(s) * 0.3).astype(np.float32), device=device,
                           requires_grad=True) for s in shapes]


def _w1_step(params, lr=0.1):
    w1, b1, w2, b2 = params

    def step(x, y):
        for p in params:
            p.grad = None
        h = (x @ w1 + b1).relu()
        logp = (h @ w2 + b2).log_softmax(dim=1)
        loss = nn.functional.nll_loss(logp, y)
        loss.backward()
        with gpugrad.no_grad():
            for p in params:
                p -= lr * p.grad           # an elementwise chain under no_grad
        return loss
    return step


def test_w1_mlp_step_compiled_with_fusion_equals_eager(device):
    rng = np.random.default_rng(6)
    batches = [(gpugrad.tensor(rng.standard_normal((8, 12)).astype(np.float32), device=device),
                gpugrad.tensor(rng.integers(0, 4, 8), device=device)) for _ in range(6)]
    pe, pc = _w1_params(device, 0), _w1_params(device, 0)
    eager, compiled = _w1_step(pe), gpugrad.compile(_w1_step(pc), warmup=1)
    for x, y in batches:
        le = eager(x, y)
        lc = compiled(x, y)
        assert_close(lc, le.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(pc, pe):
        assert_close(a, b, rtol=1e-5, atol=1e-6)
        assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6)
    assert compiled.stats["replays"] == 4
    assert _lazy.stats["regions"] >= 6 * 2  # bias+relu, and the updates, fused on every call


def test_compiled_training_with_optimizer_equals_eager(device):
    def mlp():
        gpugrad.manual_seed(0)
        return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 1))

    def step_fn(model, opt):
        def step(x, y):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()   # a fused loss: the sum of (d^2 / n)
            loss.backward()
            opt.step()
            return loss
        return step

    me, mc = mlp().to(device), mlp().to(device)
    eager = step_fn(me, optim.SGD(me.parameters(), lr=0.05, momentum=0.9))
    compiled = gpugrad.compile(step_fn(mc, optim.SGD(mc.parameters(), lr=0.05, momentum=0.9)))
    rng = np.random.default_rng(7)
    for _ in range(8):
        x = gpugrad.tensor(rng.standard_normal((8, 12)).astype(np.float32), device=device)
        y = gpugrad.tensor(rng.standard_normal((8, 1)).astype(np.float32), device=device)
        assert_close(compiled(x, y), eager(x, y).detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(mc.parameters(), me.parameters()):
        assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---- gradients ----------------------------------------------------------------------------------
def test_gradcheck_of_fused_regions(device):
    rng = np.random.default_rng(8)
    x = _data(rng, (3, 4), "float64", device, requires_grad=True)
    y = _data(rng, (4,), "float64", device, requires_grad=True, positive=True)
    mask = gpugrad.tensor(rng.standard_normal((3, 4)) > 0, device=device)

    def f(x, y):
        with _lazy.fusing():
            a = (x * y).sin() + x / y - (-x).exp() * 0.25
            b = E.Where.apply(mask, a.tanh(), y.sqrt() ** 1.5) + (x - 1).relu()
            return a, b, (b * b).sum()

    before = _lazy.stats["regions"]
    assert gradcheck(f, (x, y))
    assert _lazy.stats["regions"] > before


def test_double_backward_replays_the_chain(device):
    x = gpugrad.tensor([0.3, -0.7, 1.1], dtype=gpugrad.float64, device=device,
                       requires_grad=True)

    def f(x):
        return ((x * x).sin() * x.exp()).sum()

    with _lazy.fusing():
        loss = f(x)
    (g,) = gpugrad.autograd.grad(loss, x, create_graph=True)
    (h,) = gpugrad.autograd.grad(g.sum(), x)
    xe = x.detach().requires_grad_()
    (ge,) = gpugrad.autograd.grad(f(xe), xe, create_graph=True)
    (he,) = gpugrad.autograd.grad(ge.sum(), xe)
    assert_close(g, ge, **TOL["float64"])
    assert_close(h, he, **TOL["float64"])


def test_backward_twice_with_retain_graph(device):
    x = gpugrad.tensor([0.3, -0.7, 1.1, 2.0], device=device, requires_grad=True)
    with _lazy.fusing():
        loss = w2_loss(x)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()  # the gradient again (on NumPy: now from the backward kernel)
    assert_close(x.grad, first * 2, **TOL["float32"])


# ---- what falls back, metadata, hazards ----------------------------------------------------------
def test_unfusable_ops_fall_back_to_eager(device):
    xi = gpugrad.tensor([1, 2, 3], device=device)
    xf = gpugrad.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    xd = xf.detach().double()

    def f(xi, xf, xd):
        return (xi * 2,                         # an integer tensor
                xf + xd,                        # two dtypes
                gpugrad.add(xf, xf, alpha=2),   # alpha
                xf ** xf,                       # a tensor exponent
                2.0 ** xf,                      # a number base
                xf.abs() + True)                # an op outside the table, a bool operand

    with _lazy.fusing():
        got = f(xi, xf, xd)
    for a, b in zip(got, f(xi, xf, xd)):
        assert a.dtype == b.dtype
        assert_close(a, b)
    assert _lazy.stats["fallbacks"] >= 6


def test_pending_metadata_does_not_compute(device):
    x = gpugrad.ones(2, 3, device=device, requires_grad=True)
    with _lazy.fusing():
        y = (x * 2).tanh()
        assert type(y) is not gpugrad.Tensor and isinstance(y, gpugrad.Tensor)
        assert y.shape == (2, 3) and y.size() == (2, 3) and y.size(-1) == 3
        assert y.dim() == 2 and y.ndim == 2 and y.numel() == 6
        assert y.dtype == gpugrad.float32 and y.device == x.device and y.requires_grad
        assert y.is_floating_point()
        assert _lazy.stats["regions"] == 0
        assert y.grad_fn is not None          # history: computes the region
        assert _lazy.stats["regions"] == 1 and type(y) is gpugrad.Tensor
        z = x * 3
    assert type(z) is gpugrad.Tensor  # the exit flushed what was alive
    assert_close(z, x.detach() * 3)


def test_views_and_in_place_ops_on_pending_tensors(device):
    base = gpugrad.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], device=device,
                          requires_grad=True)

    def f(base):
        row = base * 1.0                 # a fresh tensor, so its view may be written
        v = row[1]                       # a view (its history replayed from its base)
        y = (v * 2).sin() * 1.5
        y.add_(1)                        # in place on a pending tensor: computed first
        y.mul_(v)                        # ... with another pending chain after it
        z = row @ y.reshape(3, 1)        # a matmul consumer
        return (z.sigmoid() * y.sum()).sum()

    with _lazy.fusing():
        loss = f(base)
    loss.backward()
    ref = base.detach().requires_grad_()
    le = f(ref)
    le.backward()
    assert_close(loss, le, **TOL["float32"])
    assert_close(base.grad, ref.grad, rtol=1e-5, atol=1e-6)


def test_input_changed_in_place_before_use_keeps_eager_values(device):
    # gpugrad's in-place ops compute the pending chains that read a tensor before writing it
    x = gpugrad.ones(3, device=device)
    with _lazy.fusing():
        y = x * 2
        x.add_(1)
        s = y.sum()
    assert s.item() == 6.0 and x.sum().item() == 6.0  # as eager: y read x before the write


def test_input_changed_around_the_in_place_ops_before_use_is_an_error(device):
    # An optimizer's update writes the arrays itself: the chain that read the old values
    # cannot compute them any more, and says so (eager computed y before the step)
    p = gpugrad.ones(3, device=device, requires_grad=True)
    p.grad = gpugrad.ones(3, device=device)
    opt = optim.SGD([p], lr=0.5)
    with pytest.raises(gpugrad.autograd.InplaceError, match="modified in place"):
        with _lazy.fusing():
            y = p.detach() * 2
            opt.step()
            s = y.sum()
    with pytest.raises(RuntimeError, match="could not be computed.*modified in place"):
        s.item()  # the failed chain says why again


def test_other_threads_stay_eager(device):
    import threading
    x = gpugrad.ones(3, device=device)
    seen = []
    with _lazy.fusing():
        t = threading.Thread(target=lambda: seen.append(type(x * 2)))
        t.start()
        t.join()
        assert type(x * 2) is not gpugrad.Tensor
    assert seen == [gpugrad.Tensor]


def test_error_in_compiled_function_restores_eager_ops(device):
    def f(x):
        _ = x * 2
        raise ValueError("boom")

    c = gpugrad.compile(f, warmup=1)
    with pytest.raises(ValueError, match="boom"):
        c(gpugrad.ones(2, device=device))
    assert type(gpugrad.ones(2, device=device) * 2) is gpugrad.Tensor


def test_fuse_false_runs_eager_ops(device):
    x = gpugrad.ones(3, device=device, requires_grad=True)

    def step(x):
        loss = w2_loss(x)
        loss.backward()
        return loss

    c = gpugrad.compile(step, fuse=False, warmup=1)
    for _ in range(3):
        c(x)
    assert _lazy.stats["ops"] == 0 and _lazy.stats["regions"] == 0
    assert gpugrad.compile(fuse=False)(step).fuse is False
    assert gpugrad.compile(step).fuse is True


def test_long_chains_are_split(device):
    x = gpugrad.full((4,), 0.5, device=device, requires_grad=True)

    def f(x):
        for _ in range(100):
            x = x * 0.99 + 0.001
        return x.sum()

    with _lazy.fusing():
        loss = f(x)
    loss.backward()
    assert 4 <= _lazy.stats["regions"] <= 10
    xe = x.detach().requires_grad_()
    f(xe).backward()
    assert_close(loss, f(xe), rtol=1e-6)
    assert_close(x.grad, xe.grad, rtol=1e-5)


# ---- CUDA ----------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_fused_capture_equals_eager(dtype):
    rng = np.random.default_rng(9)
    x = _data(rng, (1 << 16) + 3, dtype, "cuda", requires_grad=True)
    b = _data(rng, (1,), dtype, "cuda", requires_grad=True)

    def step(x, b):
        x.grad = b.grad = None
        loss = (((x * 0.5 + b).tanh() * x.sigmoid() + x * x).sum())
        loss.backward()
        return loss, x.grad, b.grad

    compiled = gpugrad.compile(step, warmup=2)
    ref = [t.detach().requires_grad_() for t in (x, b)]
    le, gxe, gbe = step(*ref)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else TOL["float64"]
    for _ in range(5):
        loss, gx, gb = compiled(x, b)
        assert_close(loss, le.detach(), **tol)
        assert_close(gx, gxe, **tol)
        assert_close(gb, gbe, rtol=1e-4, atol=1e-3)
    assert compiled.stats["replays"] == 2
    assert to_numpy(gx).shape == (x.shape[0],)


@pytest.mark.parametrize("n, fused", [(1000, False), (1 << 18, True)])
def test_small_numpy_chains_run_eagerly_by_default(monkeypatch, n, fused):
    """Below _lazy.NUMPY_MIN_ELEMENTS a NumPy chain is cheaper eager; its results are the
    same either way."""
    monkeypatch.setattr(_lazy, "NUMPY_MIN_ELEMENTS", 1 << 18)
    x = _data(np.random.default_rng(0), (n,), np.float32, "cpu", requires_grad=True)

    def step(x):
        x.grad = None
        loss = ((x * 0.5 + 0.1).tanh() * x.sigmoid()).sum()
        loss.backward()
        return loss

    expected = step(x).item(), to_numpy(x.grad).copy()
    compiled = gpugrad.compile(step, warmup=1)
    for _ in range(3):
        loss = compiled(x).item()
    assert (_lazy.stats["regions"] > 0) is fused
    assert abs(loss - expected[0]) <= 1e-5 * abs(expected[0])
    assert_close(to_numpy(x.grad), expected[1], rtol=1e-5, atol=1e-6)
