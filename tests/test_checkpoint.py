"""Activation checkpointing: gpugrad.utils.checkpoint.checkpoint / checkpoint_sequential
recompute the forward in backward, give the same gradients, and lower peak memory."""
from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest

import gpugrad
from gpugrad.utils.checkpoint import checkpoint, checkpoint_sequential
from helpers import to_numpy

MODES = [False, True]  # use_reentrant


# ---- a peak-memory tracker for the CPU ------------------------------------------------------------
class HostPeak:
    """Peak bytes allocated on the host inside the block, above what was live at its start.

    tracemalloc sees NumPy's array buffers: NumPy (>= 1.13) reports them to it, which
    ``test_tracemalloc_sees_numpy_buffers`` checks."""

    def __enter__(self):
        tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def held(self) -> int:
        """Bytes live now, above the start."""
        return tracemalloc.get_traced_memory()[0] - self.base

    def __exit__(self, *exc):
        self.peak = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


def test_tracemalloc_sees_numpy_buffers():
    with HostPeak() as p:
        a = np.ones(1 << 20)  # 8 MiB
        del a
    assert 8 << 20 <= p.peak < 9 << 20


# ---- the deep MLP ---------------------------------------------------------------------------------
def _mlp(device, layers=16, width=256, batch=256):
    gen = np.random.RandomState(0)
    ws = [gpugrad.tensor(gen.standard_normal((width, width)).astype(np.float32) / width ** 0.5,
                         requires_grad=True, device=device) for _ in range(layers)]
    bs = [gpugrad.zeros(width, requires_grad=True, device=device) for _ in range(layers)]
    x = gpugrad.tensor(gen.standard_normal((batch, width)).astype(np.float32), device=device,
                       requires_grad=True)

    def layer(i):
        return lambda h: gpugrad.relu(h @ ws[i].t() + bs[i])

    return x, ws + bs, [layer(i) for i in range(layers)]


def _run(mode, x, params, fns, tracker):
    """Forward + backward with ``mode``; returns (bytes held after forward, gradients)."""
    for p in params + [x]:  # .grad buffers exist before: the peak is about activations
        p.grad = gpugrad.zeros_like(p)
    with tracker() as t:
        h = x
        if mode == "plain":
            for f in fns:
                h = f(h)
        elif mode == "sequential":
            h = checkpoint_sequential(fns, 4, h, use_reentrant=False)
        else:  # blocks of 4 layers, each checkpointed
            reentrant = mode == "reentrant"
            for k in range(0, len(fns), 4):
                block = fns[k:k + 4]

                def run_block(h, block=block):
                    for f in block:
                        h = f(h)
                    return h

                h = checkpoint(run_block, h, use_reentrant=reentrant)
        held = t.held()
        h.sum().backward()
    return held, t.peak, [to_numpy(p.grad) for p in params + [x]]


def test_deep_mlp_lower_peak_memory_equal_gradients_cpu():
    """16 layers, width 256, batch 256 (float32) on the CPU, measured with tracemalloc.
    (docs/autograd.md has the numbers for width 512.)"""
    x, params, fns = _mlp("cpu")
    held0, peak0, ref = _run("plain", x, params, fns, HostPeak)
    act = 256 * 256 * 4
    assert held0 >= 16 * act  # the plain run keeps (at least) one activation per layer
    for mode in ("blocks", "reentrant", "sequential"):
        held, peak, grads = _run(mode, x, params, fns, HostPeak)
        # checkpointed: the block inputs (+ the last segment's activations) only
        assert held <= 8 * act, f"{mode}: held {held / 2**20:.1f} MiB after forward"
        assert peak < 0.7 * peak0, (f"{mode}: peak {peak / 2**20:.1f} MiB vs "
                                    f"{peak0 / 2**20:.1f} MiB without checkpointing")
        for a, b in zip(grads, ref):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7, err_msg=mode)


class DevicePeak:
    """Peak bytes allocated on the current CUDA device inside the block."""

    def __enter__(self):
        gpugrad.cuda.synchronize()
        gpugrad.cuda.reset_peak_memory_stats()
        self.base = gpugrad.cuda.memory_allocated()
        return self

    def held(self) -> int:
        return gpugrad.cuda.memory_allocated() - self.base

    def __exit__(self, *exc):
        gpugrad.cuda.synchronize()
        self.peak = gpugrad.cuda.max_memory_allocated() - self.base


@pytest.mark.gpu
def test_deep_mlp_lower_peak_memory_equal_gradients_gpu():
    x, params, fns = _mlp("cuda")
    _, peak0, ref = _run("plain", x, params, fns, DevicePeak)
    for mode in ("blocks", "reentrant", "sequential"):
        _, peak, grads = _run(mode, x, params, fns, DevicePeak)
        assert peak < 0.7 * peak0, f"{mode}: {peak} vs {peak0} bytes"
        for a, b in zip(grads, ref):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=mode)


# ---- semantics --------------------------------------------------------------------------------------
def _f64(data, device, **kw):
    return gpugrad.tensor(data, dtype=gpugrad.float64, device=device, **kw)


@pytest.mark.parametrize("reentrant", MODES)
def test_recomputes_once_in_backward_and_matches(reentrant, device):
    w = _f64([[0.5, -1.0], [2.0, 0.3]], device, requires_grad=True)
    calls = []

    def f(x):
        calls.append(1)
        return (x @ w).tanh() * x

    x = _f64([[1.0, 2.0], [-0.5, 0.25]], device, requires_grad=True)
    out = checkpoint(f, x, use_reentrant=reentrant)
    assert len(calls) == 1
    out.sum().backward()
    assert len(calls) == 2  # rerun once, in backward
    gx, gw = to_numpy(x.grad), to_numpy(w.grad)
    x2 = x.detach().requires_grad_()
    w.grad = None
    f(x2).sum().backward()
    np.testing.assert_allclose(gx, to_numpy(x2.grad), rtol=1e-12)
    np.testing.assert_allclose(gw, to_numpy(w.grad), rtol=1e-12)


def test_non_reentrant_supports_autograd_grad_on_captured_parameters(device):
    w = _f64([1.0, -2.0, 3.0], device, requires_grad=True)
    x = _f64([0.5, 0.25, -1.0], device)  # the input does not require grad
    out = checkpoint(lambda t, scale=1.0: (t * w).sin() * scale, x, scale=2.0,
                     use_reentrant=False)
    (gw,) = gpugrad.autograd.grad(out.sum(), w)
    np.testing.assert_allclose(to_numpy(gw), 2 * to_numpy(x) * np.cos(to_numpy(x * w.detach())))


def test_non_reentrant_double_backward(device):
    x = _f64([0.3, -0.7], device, requires_grad=True)
    y = checkpoint(lambda t: (t ** 3).sum(), x, use_reentrant=False)
    (g,) = gpugrad.autograd.grad(y, x, create_graph=True)
    (gg,) = gpugrad.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(to_numpy(g), 3 * to_numpy(x.detach()) ** 2)
    np.testing.assert_allclose(to_numpy(gg), 6 * to_numpy(x.detach()))


@pytest.mark.parametrize("reentrant", MODES)
@pytest.mark.parametrize("preserve", [True, False])
def test_preserve_rng_state(reentrant, preserve, device):
    drawn = []

    def noisy(x):
        r = gpugrad.rand(x.shape, dtype=x.dtype, device=x.device)
        drawn.append(to_numpy(r))
        return x * r

    gpugrad.manual_seed(123)
    x = _f64(np.ones(64), device, requires_grad=True)
    checkpoint(noisy, x, use_reentrant=reentrant, preserve_rng_state=preserve).sum().backward()
    forward_draw = drawn[0]
    same = np.array_equal(to_numpy(x.grad), forward_draw)
    assert same == preserve  # without the saved state, the rerun draws other numbers
    # the generator moves on as if the function ran once
    gpugrad.manual_seed(123)
    gpugrad.rand(64, dtype=gpugrad.float64)
    expected_next = to_numpy(gpugrad.rand(3))
    gpugrad.manual_seed(123)
    x2 = _f64(np.ones(64), device, requires_grad=True)
    checkpoint(noisy, x2, use_reentrant=reentrant, preserve_rng_state=preserve).sum().backward()
    if preserve and device == "cpu":
        np.testing.assert_array_equal(to_numpy(gpugrad.rand(3)), expected_next)


def test_inplace_change_of_saved_input_is_caught(device):
    x = _f64([1.0, 2.0], device, requires_grad=True)
    h = x * 1
    out = checkpoint(lambda t: t.sin(), h, use_reentrant=False)
    with gpugrad.no_grad():
        h.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_different_graph_on_recompute_raises(device):
    state = {"n": 0}

    def flaky(t):
        state["n"] += 1
        return t.sin() if state["n"] == 1 else t.cos().exp()

    out = checkpoint(flaky, _f64([1.0], device, requires_grad=True), use_reentrant=False)
    with pytest.raises(RuntimeError, match="recomputed forward recorded a different graph"):
        out.sum().backward()


def test_argument_errors_and_warnings(device):
    x = _f64([1.0], device, requires_grad=True)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed"):
        checkpoint(lambda t: t * 2, x)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: k"):
        checkpoint(lambda t, k=1: t * k, x, k=2, use_reentrant=True)
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):
        checkpoint(lambda t: t * 2, _f64([1.0], device), use_reentrant=True)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: bad"):
        checkpoint_sequential([lambda t: t], 1, x, use_reentrant=False, bad=1)


def test_nested_checkpoints(device):
    w = _f64([0.5, -1.5], device, requires_grad=True)

    def inner(t):
        return (t * w).sin()

    def outer(t):
        return checkpoint(inner, t * 2, use_reentrant=False).exp()

    x = _f64([0.3, 0.8], device, requires_grad=True)
    checkpoint(outer, x, use_reentrant=False).sum().backward()
    gx, gw = to_numpy(x.grad), to_numpy(w.grad)
    x.grad = w.grad = None
    inner(x * 2).exp().sum().backward()
    np.testing.assert_allclose(gx, to_numpy(x.grad), rtol=1e-12)
    np.testing.assert_allclose(gw, to_numpy(w.grad), rtol=1e-12)


def test_no_grad_just_runs(device):
    with gpugrad.no_grad():
        out = checkpoint(lambda t: t * 2, _f64([1.0], device, requires_grad=True),
                         use_reentrant=False)
    assert not out.requires_grad


@pytest.mark.parametrize("reentrant", MODES)
def test_checkpoint_sequential_matches_plain(reentrant, device):
    gen = np.random.RandomState(1)
    ws = [_f64(gen.standard_normal((3, 3)), device, requires_grad=True) for _ in range(5)]
    fns = [lambda h, w=w: (h @ w).tanh() for w in ws]
    x = _f64(gen.standard_normal((2, 3)), device, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit use_reentrant: no warning
        out = checkpoint_sequential(fns, 2, x, use_reentrant=reentrant)
    out.sum().backward()
    got = [to_numpy(p.grad) for p in ws + [x]]
    for p in ws + [x]:
        p.grad = None
    h = x
    for f in fns:
        h = f(h)
    h.sum().backward()
    for a, p in zip(got, ws + [x]):
        np.testing.assert_allclose(a, to_numpy(p.grad), rtol=1e-12)
