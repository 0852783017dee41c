"""``loss.backward()`` of a fused loss as ONE kernel (``gpugrad._lazy._fast_backward``).

Inside ``gpugrad.compile`` (or ``_lazy.fusing``) a full sum of an elementwise chain is a
pending tensor; its ``backward()`` with the implicit seed, over a chain whose inputs that
require grad are plain leaves, computes the loss and the leaves' gradients with the region's
``value_and_grad`` kernel (on CuPy: one reduce kernel that reads each input once, writes each
gradient once and sums the loss in the same pass). Tested here:

- W2's chain: loss and ``x.grad`` equal to eager, to ``fuse=False`` and to the fused path
  with the fast backward switched off, over several compiled calls, float32 and float64;
  other chains taken (two leaves, an input without grad, a broadcast leaf, ``mean``);
- what the loss looks like afterwards (a plain tensor, a released ``grad_fn``: a second
  ``backward()`` raises torch's error; with ``retain_graph=True`` it accumulates);
- every case that must take the ordinary path, each still correct: a ``gradient``,
  ``create_graph``, ``inputs=``, a ``.grad`` already there, a hook, a non-leaf input, a
  loss that is not the region's pure sum, another output alive, anomaly mode;
- the CUDA plan on the CPU (kernel choice, launch shape, arguments), the generated reduce
  kernel compiled by ``nvcc`` when installed, and on a GPU (``gpu``) the kernel vs eager.
"""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

import gpugrad
from gpugrad import _fusion, _lazy
from gpugrad._fusion import fuse, ops
from helpers import assert_close, to_numpy

TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}


pytestmark = pytest.mark.usefixtures("fusion_state")  # tests/conftest.py


def _x(shape, dtype, device, seed=0, requires_grad=True):
    a = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return gpugrad.tensor(a, device=device, requires_grad=requires_grad)


def w2_loss(x):
    return ((x * 0.5 + 0.1).tanh() * x.sigmoid() + x * x).sum()


def w2_step(x):
    x.grad = None
    loss = w2_loss(x)
    loss.backward()
    return loss


def _eager(fn, *xs):
    """``fn``'s loss and its leaves' gradients, eagerly."""
    ref = [x.detach().requires_grad_(x.requires_grad) for x in xs]
    loss = fn(*ref)
    loss.backward()
    return loss.detach(), [r.grad for r in ref]


def _fast():
    return _lazy.stats["fast_backwards"]


# ---- taken: W2 and other chains ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_w2_step_is_one_kernel_and_equals_eager_and_unfused(dtype, device, monkeypatch):
    x = _x((3001,), dtype, device)
    le, (ge,) = _eager(w2_loss, x)
    fused = gpugrad.compile(w2_step, warmup=1)
    unfused = gpugrad.compile(w2_step, warmup=1, fuse=False)
    for i in range(5):  # warm-up, capture, replays
        before = dict(_lazy.stats)
        loss = fused(x)
        assert _fast() - before["fast_backwards"] == 1
        assert _lazy.stats["forward_launches"] - before["forward_launches"] == 1
        assert _lazy.stats["backward_launches"] == before["backward_launches"]
        assert_close(loss, le, **TOL[dtype])
        assert_close(x.grad, ge, **TOL[dtype])
        g_fast = x.grad
        lu = unfused(x)
        assert_close(lu, loss, **TOL[dtype])
        assert_close(x.grad, g_fast, **TOL[dtype])
    # the previous fused path (region forward, then the engine) agrees too
    monkeypatch.setattr(_lazy, "_fast_backward", lambda t, retain: False)
    lo = w2_step_fused_once(x)
    assert_close(lo, le, **TOL[dtype])
    assert_close(x.grad, ge, **TOL[dtype])


def w2_step_fused_once(x):
    with _lazy.fusing():
        return w2_step(x)


def test_loss_after_the_fast_backward(device):
    x = _x((100,), "float32", device)
    with _lazy.fusing():
        loss = w2_loss(x)
        assert loss.__class__ is not gpugrad.Tensor  # pending
        loss.backward()
        assert _fast() == 1
        assert loss.__class__ is gpugrad.Tensor and not loss.is_leaf and loss.requires_grad
        assert loss.grad_fn.name() == "FusedRegionBackward" and loss.shape == ()
        le, (ge,) = _eager(w2_loss, x)
        assert loss.item() == pytest.approx(le.item(), rel=1e-6)
        with pytest.raises(RuntimeError, match="backward through the graph a second time"):
            loss.backward()
    assert_close(x.grad, ge, **TOL["float32"])  # the failed second pass added nothing


def test_retain_graph_takes_it_and_a_second_backward_accumulates(device):
    x = _x((64,), "float64", device, seed=1)
    le, (ge,) = _eager(w2_loss, x)
    with _lazy.fusing():
        loss = w2_loss(x)
        loss.backward(retain_graph=True)
    assert _fast() == 1
    assert_close(x.grad, ge, **TOL["float64"])
    loss.backward()  # through the region's backward kernel: accumulates
    assert_close(x.grad, ge * 2, **TOL["float64"])
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        loss.backward()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_other_chains_taken(dtype, device):
    rng = np.random.default_rng(3)
    x = _x((4, 5), dtype, device, seed=4)
    y = _x((4, 5), dtype, device, seed=5)
    c = _x((4, 5), dtype, device, seed=6, requires_grad=False)  # no grad: read only
    b = _x((5,), dtype, device, seed=7)                         # broadcast leaf
    m = gpugrad.tensor(rng.standard_normal((4, 5)) > 0, device=device)

    cases = [
        (lambda x, y: (x * y + (x - y).exp() / (y * y + 1)).sum(), (x, y)),
        (lambda x, c: ((x * c).tanh() - c).sum(), (x, c)),
        (lambda x, b: ((x + b).relu() * b).sum(), (x, b)),
        (lambda x, y: gpugrad.where(m, x.sin(), y.cos() * 2).sum(), (x, y)),
        (lambda x: (x.sigmoid() * 3 - x).mean(), (x,)),
    ]
    for k, (fn, args) in enumerate(cases):
        for t in args:
            t.grad = None
        le, ges = _eager(fn, *args)
        with _lazy.fusing():
            loss = fn(*args)
            loss.backward()
        assert _fast() == k + 1, k
        assert_close(loss, le, **TOL[dtype])
        for t, g in zip(args, ges):
            if t.requires_grad:
                assert t.grad.shape == t.shape
                assert_close(t.grad, g, **TOL[dtype])
            else:
                assert t.grad is None


# ---- not taken: the ordinary path, still right ---------------------------------------------------
def _not_taken_cases():
    def gradient(x, le, ge):
        w2_loss(x).backward(gpugrad.tensor(2.0, device=x.device))
        return le * 1, ge * 2

    def create_graph(x, le, ge):
        loss = w2_loss(x)
        loss.backward(create_graph=True)
        assert x.grad.requires_grad  # recorded: the region replayed eagerly
        return loss, ge

    def inputs(x, le, ge):
        w2_loss(x).backward(inputs=[x])
        return le, ge

    def grad_already_there(x, le, ge):
        x.grad = gpugrad.ones_like(x)
        w2_loss(x).backward()
        return le, ge + 1

    def hook(x, le, ge):
        h = x.register_hook(lambda g: g * 3)
        try:
            w2_loss(x).backward()
        finally:
            h.remove()
        return le, ge * 3

    def not_a_leaf(x, le, ge):
        h = x.clone()  # not fusable: a recorded non-leaf input of the chain
        w2_loss(h).backward()
        return le, ge

    def not_a_pure_sum(x, le, ge):
        loss = w2_loss(x) * 2  # computed: a plain tensor whose graph is the engine's
        loss.backward()
        return le * 2, ge * 2

    def another_output_alive(x, le, ge):
        s = x.sigmoid()  # kept: an output of the region besides the loss
        loss = ((x * 0.5 + 0.1).tanh() * s + x * x).sum()
        loss.backward()
        assert s.grad_fn is loss.grad_fn
        return loss, ge

    def anomaly(x, le, ge):
        with gpugrad.autograd.detect_anomaly():
            w2_loss(x).backward()
        return le, ge

    return [gradient, create_graph, inputs, grad_already_there, hook, not_a_leaf,
            not_a_pure_sum, another_output_alive, anomaly]


@pytest.mark.parametrize("case", _not_taken_cases(), ids=lambda f: f.__name__)
def test_not_taken(case, device):
    x = _x((257,), "float64", device, seed=8)
    le, (ge,) = _eager(w2_loss, x)
    with _lazy.fusing():
        want_loss, want_grad = case(x, le, ge)
    assert _fast() == 0
    assert_close(x.grad, want_grad, **TOL["float64"])
    assert_close(want_loss, le * (2 if case.__name__ == "not_a_pure_sum" else 1),
                 **TOL["float64"])


def test_leaf_hook_on_its_node_is_not_taken(device):
    x = _x((33,), "float64", device, seed=9)
    le, (ge,) = _eager(w2_loss, x)
    seen = []
    acc = x._grad_accumulator()  # kept alive, as the graph of a first backward keeps it
    acc.register_prehook(lambda gs: seen.append(1))
    with _lazy.fusing():
        w2_loss(x).backward()
    assert _fast() == 0 and seen == [1]
    assert_close(x.grad, ge, **TOL["float64"])


# ---- the CUDA path, on the CPU -------------------------------------------------------------------
def _w2_program(dtype="float32"):
    x = gpugrad.tensor(np.ones(8, dtype))
    return fuse(w2_loss, [x]).graph.program("value_and_grad")


def test_reduce_launch_plan_and_arguments():
    k = _w2_program()
    x = np.random.default_rng(0).standard_normal(4 * 1000 + 4).astype(np.float32)
    a = x[:4000] if x[:4000].ctypes.data % 16 == 0 else x[4:4004]
    assert a.ctypes.data % 16 == 0
    ctype, shape, dt, n, grid = _fusion.reduce_launch(k, (a, 0.5, 0.1), sm_count=132)
    assert (ctype, shape, dt, n) == ("float", (4000,), np.dtype(np.float32), 4000)
    assert grid == (1000 + 255) // 256  # one float4 per thread
    big = np.zeros(1 << 24, np.float32)
    assert _fusion.reduce_launch(k, (big, 0.5, 0.1), sm_count=132)[4] == 8 * 132  # capped
    assert _fusion.reduce_launch(k, (big, 0.5, 0.1), sm_count=2)[4] == 16
    assert _fusion.reduce_launch(k, (big, 0.5, 0.1), sm_count=132, per_sm=6)[4] == 6 * 132
    # one full wave: 64K registers per SM, allocated per warp in units of 256
    assert [_fusion.blocks_per_sm(r) for r in (16, 32, 40, 64, 255)] == [8, 8, 6, 4, 1]
    # where it does not apply: misaligned, strided, float16, or no summed output
    mis = a[1:] if a[1:].ctypes.data % 16 else a[2:]
    assert _fusion.reduce_launch(k, (mis, 0.5, 0.1), sm_count=132) is None
    assert _fusion.reduce_launch(k, (big[::2], 0.5, 0.1), sm_count=132) is None
    assert _fusion.reduce_launch(k, (a.astype(np.float16), 0.5, 0.1), sm_count=132) is None
    fwd = fuse(lambda x: (x * 2).tanh(), [gpugrad.tensor(a)]).graph.program("forward")
    assert _fusion.reduce_launch(fwd, (a,), sm_count=132) is None
    k64 = _w2_program("float64")
    assert _fusion.reduce_launch(k64, (a.astype(np.float64), 0.5, 0.1), 132)[0] == "double"
    # arguments: arrays, numbers as the kernel's T, outputs, workspace, n
    outs, ws = [np.empty((), np.float32), np.empty(4000, np.float32)], np.zeros(2)
    args = _fusion.reduce_arguments(k, (a, 0.5, 0.1), outs, ws, n, dt)
    assert args[0] is a and args[3] is outs[0] and args[4] is outs[1] and args[5] is ws
    assert [type(v) for v in (args[1], args[2], args[6])] == [np.float32, np.float32, np.int64]
    assert (args[1], args[2], args[6]) == (np.float32(0.5), np.float32(0.1), 4000)
    assert k.params[0] == ("x0_", "T") and [r for _, r in k.outs] == ["sum", None]


def test_reduce_call_on_numpy_is_the_twin():
    k = _w2_program("float64")
    x = np.random.default_rng(1).standard_normal(777)
    before = k.launches
    v, g = k.reduce_call(x, 0.5, 0.1)
    assert k.launches == before + 1
    v2, g2 = k(x, 0.5, 0.1)
    np.testing.assert_allclose(v, v2, rtol=1e-12)
    np.testing.assert_allclose(g, g2, rtol=1e-12)


def test_reduce_source_structure():
    k = _w2_program()
    src = k.reduce_source("float")
    name = _fusion.reduce_kernel_name(k.name, "float")
    assert name.startswith(k.name) and f'extern "C" __global__ void {name}(' in src
    assert k.cuda_operation.splitlines()[0].strip() in src  # the same generated body
    assert "float4" in src and "double r0_" in src and src.count("gpugrad_atomic_add_f64(") >= 3
    assert "double2" in k.reduce_source("double")


def _programs():
    """Programs with summed outputs: W2, several inputs, a mask, two sums and an output."""
    xs = [gpugrad.tensor(np.ones(8, np.float32)) for _ in range(2)]
    m = gpugrad.tensor(np.ones(8, bool))
    progs = [fuse(w2_loss, xs[:1]).graph.program("value_and_grad"),
             fuse(lambda x, y: (x * y + (x / y).exp()).sum(), xs).graph.program(
                 "value_and_grad"),
             fuse(lambda m, x, y: ops.where(m, x.relu(), y.sqrt()).sum(), [m] + xs).graph
             .program("value_and_grad", (1, 2)),
             fuse(lambda x, y: ((x * y).sum(), (x - y).tanh(), y.sin().sum()), xs).graph
             .program("forward")]
    assert sum(1 for _, r in progs[-1].outs if r) == 2
    return progs


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_reduce_kernels_compile_with_nvcc(tmp_path):
    parts = [k.reduce_source(ct) for k in _programs() for ct in ("float", "double")]
    src = tmp_path / "reduce_check.cu"
    src.write_text("\n".join(parts))
    proc = subprocess.run(["nvcc", "--ptx", "-arch=sm_90", "-o", str(tmp_path / "out.ptx"),
                           str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert ".v4.f32" in ptx and ".v2.f64" in ptx          # 16-byte loads and stores
    assert "atom.global.add.f64" in ptx or "red.global.add.f64" in ptx  # native on sm_90
    assert "shfl.sync.down" in ptx


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [4000, 4003, 1 << 20])
def test_cuda_reduce_kernel_vs_eager(n, dtype):
    x = _x((n,), dtype, "cuda", seed=10)
    le, (ge,) = _eager(w2_loss, x)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else TOL["float64"]
    compiled = gpugrad.compile(w2_step, warmup=1)
    for _ in range(4):  # warm-up, CUDA graph capture, replays
        loss = compiled(x)
        assert_close(loss, le, **tol)
        assert_close(x.grad, ge, **tol)
    k = _w2_program(dtype)
    # the reduce kernel ran (not the ElementwiseKernel and a sum)
    assert any(v._reduce for v in _fusion._memory.values())
    # the kernel alone, against the twin on the same values
    v, g = k.reduce_call(x._data, 0.5, 0.1)
    hv, hg = k(to_numpy(x), 0.5, 0.1)
    np.testing.assert_allclose(float(v), float(hv), rtol=1e-6 if dtype == "float32" else 1e-12)
    np.testing.assert_allclose(to_numpy(gpugrad.Tensor._make(g)), hg,
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
