"""Capture and replay: gpugrad.compile, gpugrad.cuda.{CUDAGraph, graph, make_graphed_callables},
the host-sync errors inside a capture, and the cuBLAS path of captured matmuls.

On the CPU the same machinery runs with ``_capture.CpuRecorder`` (the function re-runs
eagerly, through the same signatures, cache, static buffers and capture flag); the tests
marked ``gpu`` check the real CUDA graphs.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import gpugrad
from gpugrad import _capture, _cublas, nn, optim
from helpers import assert_close, to_numpy


def _mlp(device, seed=0):
    gpugrad.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)


def _clone_model(src, device):
    dst = _mlp(device, seed=123)
    dst.load_state_dict(src.state_dict())
    return dst


def _batches(device, n, batch=8, seed=1):
    rng = np.random.default_rng(seed)
    return [(gpugrad.tensor(rng.standard_normal((batch, 12)).astype(np.float32), device=device),
             gpugrad.tensor(rng.integers(0, 4, batch), device=device)) for _ in range(n)]


def _step_fn(model, opt, set_to_none=True, loss_fn=nn.functional.cross_entropy):
    def step(x, y):
        opt.zero_grad(set_to_none=set_to_none)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


# ---- compile: results -------------------------------------------------------------------------
@pytest.mark.parametrize("set_to_none", [True, False])
def test_compiled_training_equals_eager(device, set_to_none):
    eager_model = _mlp(device)
    comp_model = _clone_model(eager_model, device)
    eager_opt = optim.SGD(eager_model.parameters(), lr=0.1, momentum=0.9)
    comp_opt = optim.SGD(comp_model.parameters(), lr=0.1, momentum=0.9)
    eager = _step_fn(eager_model, eager_opt, set_to_none)
    compiled = gpugrad.compile(_step_fn(comp_model, comp_opt, set_to_none), warmup=2)
    for x, y in _batches(device, 30):
        le = eager(x, y)
        lc = compiled(x, y)
        assert_close(lc, le.detach(), rtol=1e-5, atol=1e-6)
    for pe, pc in zip(eager_model.parameters(), comp_model.parameters()):
        assert_close(pc, pe, rtol=1e-5, atol=1e-6)
        assert_close(pc.grad, pe.grad, rtol=1e-5, atol=1e-6)
    assert compiled.stats == {"calls": 30, "warmup": 2, "captures": 1, "replays": 27}
    assert len(compiled.signatures()) == 1


def test_static_outputs_are_overwritten_and_detached(device):
    w = gpugrad.ones(3, device=device, requires_grad=True)

    def f(x):
        return (x * w).sum(), x + 1

    c = gpugrad.compile(f, warmup=1)
    x1, x2, x3 = (gpugrad.full((3,), float(v), device=device) for v in (1, 2, 3))
    warm = c(x1)
    assert warm[0].grad_fn is None and not warm[0].requires_grad
    out2 = c(x2)  # the capture: static outputs
    assert to_numpy(out2[0]).item() == 6.0 and not out2[0].requires_grad
    out3 = c(x3)  # a replay: the same objects, overwritten
    assert out3[0] is out2[0] and out3[1] is out2[1]
    assert to_numpy(out2[0]).item() == 9.0
    assert to_numpy(out2[1]).tolist() == [4.0, 4.0, 4.0]
    assert to_numpy(x2).tolist() == [2.0, 2.0, 2.0]  # inputs are copied, never written


def test_inputs_are_copied_into_static_buffers(device):
    seen = []

    def f(x):
        seen.append(x)
        return x * 2

    c = gpugrad.compile(f, warmup=1)
    a = gpugrad.ones(2, device=device)
    c(a)
    c(a)
    c(a + 1)
    assert seen[0] is a            # a warm-up call sees the caller's tensor
    assert seen[1] is not a        # the capture (and every replay) sees the static buffer
    assert seen[2] is seen[1]


# ---- compile: the cache -----------------------------------------------------------------------
def test_new_signature_recaptures_and_lru_evicts(device):
    c = gpugrad.compile(lambda x: x * 2, warmup=1, cache_size=2)
    a = gpugrad.ones(2, device=device)
    b = gpugrad.ones(3, device=device)
    d = gpugrad.ones(2, dtype=gpugrad.float64, device=device)
    for _ in range(3):
        assert_close(c(a), a * 2)
    for _ in range(3):
        assert_close(c(b), b * 2)
    assert c.stats["captures"] == 2 and c.evictions == 0
    assert_close(c(d), d * 2)  # a third signature evicts the least recently used (a's)
    assert c.evictions == 1 and len(c.signatures()) == 2
    assert c.signatures()[0][1][1] == (3,)  # b's signature is the oldest now
    warm = c.stats["warmup"]
    assert_close(c(a), a * 2)  # a was evicted: warm-up again
    assert c.stats["warmup"] == warm + 1
    c.reset()
    assert c.signatures() == []


def test_a_changed_tf32_setting_is_another_capture(device):
    """A capture keeps the matmul precision it was made with: flipping allow_tf32 recaptures
    (or, with recapture=False, raises naming the setting)."""
    a = gpugrad.ones(2, 2, device=device)
    c = gpugrad.compile(lambda x: x @ x, warmup=1)
    strict = gpugrad.compile(lambda x: x @ x, warmup=1, recapture=False)
    try:
        for _ in range(3):
            c(a)
            strict(a)
        assert c.stats["captures"] == 1
        gpugrad.backends.cuda.matmul.allow_tf32 = True
        for _ in range(3):
            assert_close(c(a), a @ a)
        assert c.stats["captures"] == 2 and len(c.signatures()) == 2
        with pytest.raises(RuntimeError, match="allow_tf32=True.*allow_tf32=False"):
            strict(a)
    finally:
        gpugrad.backends.cuda.matmul.allow_tf32 = False


def test_signature_distinguishes_dtype_requires_grad_constants_and_params(device):
    x = gpugrad.ones(2, device=device)
    p, q = (gpugrad.ones(2, device=device, requires_grad=True) for _ in range(2))
    sig = _capture.signature
    assert sig((x,), {}) == sig((gpugrad.zeros(2, device=device),), {})
    assert sig((x,), {}) != sig((x.double(),), {})
    assert sig((x,), {}) != sig((x.clone().requires_grad_(),), {})
    assert sig((x, 1.0), {}) != sig((x, 2.0), {})
    assert sig((p,), {}) != sig((q,), {})  # parameters are taken by identity
    assert sig((x,), {"k": x}) != sig((x, x), {})
    assert sig(([x, x],), {}) != sig(((x, x),), {})


def test_python_constants_are_part_of_the_capture(device):
    c = gpugrad.compile(lambda x, scale: x * scale, warmup=0)
    x = gpugrad.ones(2, device=device)
    assert to_numpy(c(x, 2.0)).tolist() == [2.0, 2.0]
    assert to_numpy(c(x, 3.0)).tolist() == [3.0, 3.0]  # another constant: another capture
    assert c.stats["captures"] == 2


def test_parameters_are_used_by_identity(device):
    def f(w, x):
        return (w * x).sum()

    c = gpugrad.compile(f, warmup=1)
    w = gpugrad.ones(2, device=device, requires_grad=True)
    x = gpugrad.ones(2, device=device)
    c(w, x)
    c(w, x)
    with gpugrad.no_grad():
        w.mul_(3)  # in place: the capture sees it
    assert to_numpy(c(w, x)).item() == 6.0
    assert c.stats["replays"] == 1


def test_recapture_disabled_raises(device):
    c = gpugrad.compile(lambda x: x + 1, warmup=1, recapture=False)
    c(gpugrad.ones(2, 3, device=device))
    c(gpugrad.ones(2, 3, device=device))
    with pytest.raises(RuntimeError, match=r"recapture=False.*") as e:
        c(gpugrad.ones(4, 3, device=device))
    assert "[4, 3]" in str(e.value) and "[2, 3]" in str(e.value)
    c(gpugrad.ones(2, 3, device=device))  # the captured signature still works


def test_kwargs_and_nested_inputs(device):
    def f(pair, *, bias):
        a, b = pair
        return {"s": a + b + bias["v"]}

    c = gpugrad.compile(f, warmup=1)
    for i in range(4):
        a = gpugrad.full((2,), float(i), device=device)
        out = c((a, a), bias={"v": gpugrad.ones(2, device=device)})
        assert to_numpy(out["s"]).tolist() == [2.0 * i + 1] * 2
    assert c.stats["replays"] == 2


def test_compile_arguments():
    def f(x):
        return x

    assert gpugrad.compile(f, disable=True) is f
    assert gpugrad.compile(f, mode="max-autotune-no-cudagraphs") is f
    assert isinstance(gpugrad.compile(f, mode="reduce-overhead", fullgraph=True),
                      gpugrad._compile.CompiledFunction)
    deco = gpugrad.compile(warmup=3)
    assert deco(f).warmup == 3 and deco(f).__name__ == "f"
    with pytest.raises(TypeError, match="unexpected keyword"):
        gpugrad.compile(f, warmups=3)
    with pytest.raises(ValueError, match="warmup"):
        gpugrad.compile(f, warmup=-1)
    with pytest.raises(ValueError, match="cache_size"):
        gpugrad.compile(f, cache_size=0)
    with pytest.raises(TypeError, match="callable"):
        gpugrad.compile(3)


def test_error_inside_capture_leaves_no_entry(device):
    calls = []

    def f(x):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("boom")
        return x + 1

    c = gpugrad.compile(f, warmup=1)
    x = gpugrad.ones(2, device=device)
    c(x)
    with pytest.raises(ValueError, match="boom"):
        c(x)
    assert c.signatures() == [] and not gpugrad.cuda.is_current_stream_capturing()
    c(x)  # warm-up again, then capture
    assert_close(c(x), x + 1)
    assert c.stats["captures"] == 1


# ---- host synchronisation inside a capture ----------------------------------------------------
SYNCS = {
    "Tensor.item()": lambda t: t.sum().item(),
    "Tensor.tolist()": lambda t: t.tolist(),
    "Tensor.numpy()": lambda t: t.detach().numpy(),
    "Tensor.cpu()": lambda t: t.cpu(),
    "bool(Tensor)": lambda t: bool(t.sum() > 0),
    "float(Tensor)": lambda t: float(t.sum()),
    "int(Tensor)": lambda t: int(t.sum()),
    "printing a Tensor": lambda t: repr(t),
    "printing a Tensor (str)": lambda t: str(t),
    "f-string": lambda t: f"{t.sum()}",
    "np.asarray": lambda t: np.asarray(t.detach()),
}


@pytest.mark.parametrize("name", list(SYNCS))
def test_host_sync_in_capture_raises_clear_error(device, name):
    sync = SYNCS[name]

    def f(x):
        y = x * 2
        sync(y)
        return y

    c = gpugrad.compile(f, warmup=2)
    x = gpugrad.ones(2, device=device)
    c(x)
    c(x)  # warm-up calls run eagerly: host syncs are fine there
    with pytest.raises(gpugrad.CaptureSyncError, match=r"was called while gpugrad.compile\(") \
            as e:
        c(x)
    msg = str(e.value)
    assert "Move it out of the captured function" in msg
    assert isinstance(e.value, RuntimeError)
    assert not gpugrad.cuda.is_current_stream_capturing()
    assert x.sum().item() == 2.0  # outside the capture it works again


def test_capture_flag_is_set_only_while_capturing(device):
    flags = []

    def f(x):
        flags.append(gpugrad.cuda.is_current_stream_capturing())
        return x + 1

    c = gpugrad.compile(f, warmup=1)
    for _ in range(3):
        c(gpugrad.ones(1, device=device))
    assert flags[0] is False and flags[1] is True
    assert not gpugrad.cuda.is_current_stream_capturing()


def test_check_sync_names_the_call():
    with _capture.capturing("my region"):
        with pytest.raises(_capture.CaptureSyncError, match=r"^Tensor.item\(\) was called "
                                                          r"while my region was capturing"):
            gpugrad.ones(()).item()
    gpugrad.ones(()).item()


# ---- make_graphed_callables -------------------------------------------------------------------
def test_make_graphed_module_matches_eager(device):
    ref = _mlp(device)
    model = _clone_model(ref, device)
    x0 = gpugrad.zeros(8, 12, device=device)
    graphed = gpugrad.cuda.make_graphed_callables(model, (x0,), num_warmup_iters=2)
    assert graphed is model
    opt_r = optim.SGD(ref.parameters(), lr=0.05)
    opt_g = optim.SGD(model.parameters(), lr=0.05)
    for x, y in _batches(device, 6):
        for m, opt in ((ref, opt_r), (model, opt_g)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(m(x), y)
            loss.backward()
            opt.step()
        assert_close(model[0].weight.grad, ref[0].weight.grad, rtol=1e-5, atol=1e-6)
    for pr, pg in zip(ref.parameters(), model.parameters()):
        assert_close(pg, pr, rtol=1e-5, atol=1e-6)
    model.eval()
    x = gpugrad.ones(3, 12, device=device)  # eval mode: the original forward (any shape)
    assert_close(model(x), ref.eval()(x), rtol=1e-5, atol=1e-6)


def test_make_graphed_function_grads_and_shape_check(device):
    def f(a, b):
        return a * b + a.exp(), (a * b).sum()

    a0 = gpugrad.ones(3, device=device, requires_grad=True)
    b0 = gpugrad.ones(3, device=device)
    g = gpugrad.cuda.make_graphed_callables(f, (a0, b0), num_warmup_iters=1)
    rng = np.random.default_rng(0)
    for _ in range(3):
        a = gpugrad.tensor(rng.standard_normal(3), dtype=gpugrad.float32, device=device,
                           requires_grad=True)
        b = gpugrad.tensor(rng.standard_normal(3), dtype=gpugrad.float32, device=device)
        out, s = g(a, b)
        (out.sum() + 2 * s).backward()
        ae = a.detach().requires_grad_()
        oe, se = f(ae, b)
        (oe.sum() + 2 * se).backward()
        assert_close(out, oe.detach(), rtol=1e-6, atol=1e-6)
        assert_close(a.grad, ae.grad, rtol=1e-6, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"captured for \[3\]"):
        g(gpugrad.ones(4, device=device, requires_grad=True), gpugrad.ones(4, device=device))


def test_make_graphed_callables_checks_arguments(device):
    x = gpugrad.ones(2, device=device)
    with pytest.raises(TypeError, match="only tensors"):
        gpugrad.cuda.make_graphed_callables(lambda a, n: a * n, (x, 2))
    with pytest.raises(ValueError, match="sample_args"):
        gpugrad.cuda.make_graphed_callables((lambda a: a, lambda a: a), ((x,),))


# ---- CUDAGraph without CUDA -------------------------------------------------------------------
def test_cuda_graph_needs_cuda():
    if gpugrad.cuda.is_available():
        pytest.skip("CUDA is available")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        gpugrad.cuda.CUDAGraph()


# ---- the CUDA recorder's bookkeeping, on a stand-in of CuPy -----------------------------------
class _FakeCupy:
    """Just enough of cupy.cuda for CudaRecorder: streams, capture, allocator, graph launch."""

    def __init__(self):
        fake = self
        self.log, self.fail_end = [], False

        class Stream:
            def __init__(s, non_blocking=False):
                s.name = f"stream{len(fake.log)}"

            def record(s):
                return ("event", s)

            def wait_event(s, e):
                fake.log.append(("wait", s.name))

            def __enter__(s):
                fake.streams.append(s)
                return s

            def __exit__(s, *a):
                fake.streams.pop()

            def begin_capture(s):
                fake.log.append(("begin", s.name))

            def end_capture(s):
                fake.log.append(("end", s.name))
                if fake.fail_end:
                    raise RuntimeError("invalidated")
                return Graph()

        class Graph:
            def launch(g, stream=None):
                fake.log.append(("launch", stream.name))

        class Device:
            def __init__(s, index):
                pass

            def __enter__(s):
                return s

            def __exit__(s, *a):
                pass

        class using_allocator:
            def __init__(s, fn):
                s.fn = fn

            def __enter__(s):
                s.prev, fake.allocator = fake.allocator, s.fn

            def __exit__(s, *a):
                fake.allocator = s.prev

        self.streams = [Stream()]
        self.allocator = lambda size: ("block", size)
        self.cuda = type("cuda", (), dict(
            Stream=Stream, Device=Device, using_allocator=using_allocator,
            get_current_stream=staticmethod(lambda: fake.streams[-1]),
            get_allocator=staticmethod(lambda: fake.allocator)))


@pytest.fixture
def fake_cupy(monkeypatch):
    monkeypatch.setattr(_capture, "_streams", {})  # never leave a fake stream in the cache
    monkeypatch.setattr(_cublas, "available", lambda: False)
    return _FakeCupy()


def test_cuda_recorder_capture_replay_and_memory(fake_cupy):
    cp = fake_cupy
    rec = _capture.CudaRecorder("test region", 0, cp=cp)
    default = cp.streams[0]

    def body():
        assert _capture.cuda_capturing and _capture.is_capturing()
        assert cp.cuda.get_current_stream() is rec.stream
        cp.cuda.get_allocator()(512)
        cp.cuda.get_allocator()(1024)
        return "static outputs"

    assert rec.capture(body) == "static outputs" and rec.result == "static outputs"
    assert rec.keep == [("block", 512), ("block", 1024)]  # kept alive with the graph
    assert not _capture.cuda_capturing and not _capture.is_capturing()
    assert cp.cuda.get_current_stream() is default
    assert cp.cuda.get_allocator()(8) == ("block", 8) and len(rec.keep) == 2
    assert [e for e in cp.log if e[0] != "wait"] == [("begin", rec.stream.name),
                                                     ("end", rec.stream.name)]
    rec.replay()
    assert cp.log[-1] == ("launch", default.name)  # replays queue on the caller's stream
    assert rec.warmup(lambda: cp.cuda.get_current_stream()) is rec.stream
    assert _capture.CudaRecorder("other", 0, cp=cp).stream is rec.stream  # one side stream
    rec.release()
    assert rec.keep == [] and rec.graph is None


def test_cuda_recorder_failed_capture_cleans_up(fake_cupy):
    cp = fake_cupy
    rec = _capture.CudaRecorder("test region", 0, cp=cp)

    def sync():
        cp.cuda.get_allocator()(64)
        gpugrad.ones(()).item()

    with pytest.raises(gpugrad.CaptureSyncError, match="while test region was capturing"):
        rec.capture(sync)
    assert rec.keep == [] and rec.graph is None and not _capture.cuda_capturing

    def refused():
        raise NotImplementedError("calling cuBLAS API during stream capture is currently "
                                  "unsupported")

    cp.fail_end = True  # an invalidated capture: end_capture fails too
    with pytest.raises(RuntimeError, match="a CUDA call failed while capturing"):
        rec.capture(refused)
    assert cp.cuda.get_current_stream() is cp.streams[0] and not _capture.is_capturing()


def test_compile_replays_after_a_cuda_capture(monkeypatch, device):
    """compile on a recorder that, like a CUDA graph, computes nothing when capturing: the
    capturing call must replay once, and later calls replay once each."""
    class LikeCuda(_capture.CpuRecorder):
        runs_on_capture = False
        replays = 0

        def capture(self, body):
            out = super().capture(body)
            _capture.map_tensors(lambda t: t._data.fill(np.nan), out)  # nothing computed
            return out

        def replay(self):
            LikeCuda.replays += 1
            super().replay()

    monkeypatch.setattr(_capture, "recorder_for", lambda dev, what: LikeCuda(what))
    c = gpugrad.compile(lambda x: x * 3, warmup=1)
    x = gpugrad.ones(2, device=device)
    c(x)
    assert to_numpy(c(x + 1)).tolist() == [6.0, 6.0] and LikeCuda.replays == 1
    assert to_numpy(c(x)).tolist() == [3.0, 3.0] and LikeCuda.replays == 2
    with pytest.raises(ValueError, match="warmup=0 cannot capture on CUDA"):
        gpugrad.compile(lambda x: x, warmup=0)(x)


def test_matmul_inside_a_cuda_capture_goes_to_cublas(device):
    if _cublas.available():
        pytest.skip("nvmath-python is installed: the GPU tests cover this path")
    a = gpugrad.ones(2, 2, device=device)
    with _capture.capturing("test region", cuda=True):
        with pytest.raises(RuntimeError, match="needs nvmath-python"):
            a @ a
    assert_close(a @ a, a * 2)


# ---- the cuBLAS layout logic, on a NumPy stand-in of nvmath's bindings ------------------------
class _FakeCublas:
    """Column-major GEMMs on host memory addressed by pointers, as cuBLAS reads them."""

    class Operation:
        N, T = 0, 1

    calls = 0

    @staticmethod
    def _view(ptr, rows, cols, ld, dt):
        size = dt.itemsize
        n = (cols - 1) * ld + rows
        buf = (ctypes.c_char * (n * size)).from_address(ptr)
        return np.lib.stride_tricks.as_strided(np.frombuffer(buf, dt), (rows, cols),
                                               (size, ld * size))

    def _gemm(self, dt, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        type(self).calls += 1
        sa = self._view(A, *((m, k) if ta == 0 else (k, m)), lda, dt)
        sb = self._view(B, *((k, n) if tb == 0 else (n, k)), ldb, dt)
        opa = sa if ta == 0 else sa.T
        opb = sb if tb == 0 else sb.T
        al = self._view(alpha, 1, 1, 1, dt)[0, 0]
        assert self._view(beta, 1, 1, 1, dt)[0, 0] == 0  # C is never read
        self._view(C, m, n, ldc, dt)[...] = al * (opa @ opb)

    def sgemm(self, h, *a):
        self._gemm(np.dtype(np.float32), *a)

    def dgemm(self, h, *a):
        self._gemm(np.dtype(np.float64), *a)

    def _batched(self, dt, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc,
                 count):
        s = dt.itemsize
        for i in range(count):
            self._gemm(dt, ta, tb, m, n, k, alpha, A + i * sa * s, lda, B + i * sb * s, ldb,
                       beta, C + i * sc * s, ldc)

    def sgemm_strided_batched(self, h, *a):
        self._batched(np.dtype(np.float32), *a)

    def dgemm_strided_batched(self, h, *a):
        self._batched(np.dtype(np.float64), *a)


@pytest.mark.parametrize("sa,sb", [((5, 7), (7, 3)), ((7,), (7, 3)), ((5, 7), (7,)),
                                   ((7,), (7,)), ((2, 5, 7), (7, 3)), ((4, 1, 5, 7), (3, 7, 2)),
                                   ((2, 5, 7), (7,)), ((5, 0), (0, 3))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cublas_layout_matches_numpy(sa, sb, dtype):
    rng = np.random.default_rng(0)
    a = rng.standard_normal(sa).astype(dtype)
    b = rng.standard_normal(sb).astype(dtype)
    got = _cublas._matmul(a, b, np, _FakeCublas(), lambda: 0, lambda x: x.ctypes.data)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-6)
    assert got.shape == (a @ b).shape and got.dtype == dtype


def test_cublas_transposed_operands_are_not_copied():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((7, 5)).astype(np.float32).T  # F-contiguous, as .mT gives
    b = rng.standard_normal((3, 7)).astype(np.float32).T
    copies = []

    class Xp:
        empty = staticmethod(np.empty)

        @staticmethod
        def ascontiguousarray(x):
            copies.append(x)
            return np.ascontiguousarray(x)

    got = _cublas._matmul(a, b, Xp, _FakeCublas(), lambda: 0, lambda x: x.ctypes.data)
    np.testing.assert_allclose(got, a @ b, rtol=1e-5, atol=1e-6)
    assert copies == []
    c = rng.standard_normal((5, 14)).astype(np.float32)[:, ::2]  # neither layout: copied
    got = _cublas._matmul(c, b, Xp, _FakeCublas(), lambda: 0, lambda x: x.ctypes.data)
    np.testing.assert_allclose(got, c @ b, rtol=1e-5, atol=1e-6)
    assert len(copies) == 1


def test_cublas_rejects_other_dtypes():
    a = np.ones((2, 2), np.float16)
    with pytest.raises(RuntimeError, match="float32 and float64"):
        _cublas._matmul(a, a, np, _FakeCublas(), lambda: 0, lambda x: x.ctypes.data)


def test_eager_cublas_is_off_by_default():
    assert _cublas.EAGER is False and _capture.cuda_capturing is False


# ---- on a GPU ---------------------------------------------------------------------------------
def _count_applies(monkeypatch):
    from gpugrad.autograd.function import Function
    counter = [0]
    original = Function.apply.__func__

    def counting(cls, *a, **k):
        counter[0] += 1
        return original(cls, *a, **k)

    monkeypatch.setattr(Function, "apply", classmethod(counting))
    return counter


@pytest.mark.gpu
def test_gpu_compiled_step_equals_eager_and_replays_without_python(monkeypatch):
    device = "cuda"
    eager_model = _mlp(device)
    comp_model = _clone_model(eager_model, device)
    eager_opt = optim.SGD(eager_model.parameters(), lr=0.05, momentum=0.9)
    comp_opt = optim.SGD(comp_model.parameters(), lr=0.05, momentum=0.9)
    eager = _step_fn(eager_model, eager_opt, loss_fn=nn.functional.mse_loss)
    body_runs = [0]
    step = _step_fn(comp_model, comp_opt, loss_fn=nn.functional.mse_loss)

    def counted(x, y):
        body_runs[0] += 1
        return step(x, y)

    compiled = gpugrad.compile(counted, warmup=3)
    batches = [(x, gpugrad.nn.functional.one_hot(y, 4).float())
               for x, y in _batches(device, 50, batch=64)]
    counter = None
    for i, (x, y) in enumerate(batches):
        le = eager(x, y).item()
        if i == 4:  # after warm-up and capture: count the ops the replays dispatch
            counter = _count_applies(monkeypatch)
        lc = compiled(x, y).item()
        assert abs(lc - le) <= 1e-4 * max(1.0, abs(le)), (i, lc, le)
    assert counter[0] == 0 and body_runs[0] == 4
    assert compiled.stats["replays"] == 46
    eager(*batches[0])
    assert counter[0] > 0  # the counter does see eager ops
    for pe, pc in zip(eager_model.parameters(), comp_model.parameters()):
        assert_close(pc, pe, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_cuda_graph_context_replays_elementwise_and_matmul():
    x = gpugrad.randn(64, 32, device="cuda")
    w = gpugrad.randn(32, 16, device="cuda")
    y = (x @ w).tanh() * 2  # warm-up: compiles the kernels
    g = gpugrad.cuda.CUDAGraph()
    with gpugrad.cuda.graph(g):
        y = (x @ w).tanh() * 2
    for _ in range(3):
        x.copy_(gpugrad.randn(64, 32, device="cuda"))
        g.replay()
        assert_close(y, (x @ w).tanh() * 2, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
def test_gpu_cross_entropy_step_is_captured_and_equals_eager():
    """cross_entropy's target check reads the targets on the host: it steps aside inside a
    capture (tests/test_capture_index_checks.py), so a classifier's step is captured."""
    eager_model = _mlp("cuda")
    comp_model = _clone_model(eager_model, "cuda")
    eager = _step_fn(eager_model, optim.SGD(eager_model.parameters(), lr=0.1))
    c = gpugrad.compile(_step_fn(comp_model, optim.SGD(comp_model.parameters(), lr=0.1)),
                        warmup=1)
    for x, y in _batches("cuda", 8):
        le, lc = eager(x, y).item(), c(x, y).item()
        assert abs(lc - le) <= 1e-5 * max(1.0, abs(le)), (lc, le)
    assert c.stats["captures"] == 1 and c.stats["replays"] == 6
    for pe, pc in zip(eager_model.parameters(), comp_model.parameters()):
        assert_close(pc, pe, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_gpu_item_in_capture_is_a_gpugrad_error():
    x = gpugrad.ones(4, device="cuda")
    g = gpugrad.cuda.CUDAGraph()
    with pytest.raises(gpugrad.CaptureSyncError, match=r"Tensor.item\(\)"):
        with gpugrad.cuda.graph(g):
            (x * 2).sum().item()
    assert (x * 2).sum().item() == 8.0  # the stream and allocator are back to normal


@pytest.mark.gpu
def test_gpu_make_graphed_callables_matches_eager():
    ref = _mlp("cuda")
    model = _clone_model(ref, "cuda")
    gpugrad.cuda.make_graphed_callables(model, (gpugrad.zeros(8, 12, device="cuda"),))
    for x, y in _batches("cuda", 5):
        for m in (ref, model):
            m.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
        for pr, pg in zip(ref.parameters(), model.parameters()):
            assert_close(pg.grad, pr.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("sa,sb", [((64, 784), (784, 256)), ((5, 7), (7,)),
                                   ((2, 5, 7), (3, 1, 7, 4))])
def test_gpu_cublas_matches_cupy(sa, sb):
    import cupy as cp
    a = cp.random.standard_normal(sa, dtype=cp.float32)
    b = cp.random.standard_normal(sb, dtype=cp.float32)
    cp.testing.assert_allclose(_cublas.matmul(a, b), cp.matmul(a, b), rtol=1e-4, atol=1e-4)
    bt = cp.ascontiguousarray(b.swapaxes(-1, -2)).swapaxes(-1, -2) if b.ndim == 2 else b
    cp.testing.assert_allclose(_cublas.matmul(a, bt), cp.matmul(a, b), rtol=1e-4, atol=1e-4)
