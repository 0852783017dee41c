"""gpugrad.cuda: devices, memory statistics, streams/events, and CUDA failures as clear errors.

Three kinds of tests:
- behaviour without CUDA, against a CPU-only torch build (skipped where CUDA is usable);
- the logic of gpugrad.cuda, _cuda_memory and _cuda_errors on a fake CuPy (``fake_cupy``):
  device indices, the peak-tracking allocator, event/stream bookkeeping, and the translation
  of CuPy's exceptions at every boundary (factories, Function.apply, the backward engine).
  These run everywhere, a GPU machine included, and restore the real state afterwards;
- ``gpu``-marked tests on the real device (skipped without CUDA): memory figures, stream
  and event timing, out-of-memory recovery.
"""
from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import gpugrad
from gpugrad import _backend, _cuda_errors, _cuda_memory
from helpers import torch_or_skip

CUDA = gpugrad.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour without CUDA")
MiB = 1 << 20


# ---- without CUDA: as a CPU-only torch ---------------------------------------------------------
@needs_no_cuda
def test_queries_without_cuda_match_cpu_torch():
    torch = torch_or_skip()
    assert gpugrad.cuda.is_available() is False is torch.cuda.is_available()
    assert gpugrad.cuda.device_count() == 0 == torch.cuda.device_count()
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved"):
        assert getattr(gpugrad.cuda, name)() == 0 == getattr(torch.cuda, name)(), name
        assert getattr(gpugrad.cuda, name)("cuda:0") == 0, name
    assert gpugrad.cuda.memory_stats() == {} and dict(torch.cuda.memory_stats()) == {}
    assert gpugrad.cuda.empty_cache() is None and torch.cuda.empty_cache() is None
    # torch raises here (AssertionError / AttributeError); gpugrad does nothing, so that
    # device-agnostic timing loops run on a CPU.
    gpugrad.cuda.synchronize()
    gpugrad.cuda.reset_peak_memory_stats()


@needs_no_cuda
@pytest.mark.parametrize("call", [
    lambda c: c.current_device(),
    lambda c: c.set_device(0),
    lambda c: c.get_device_name(),
    lambda c: c.get_device_properties(0),
    lambda c: c.mem_get_info(),
    lambda c: c.Stream(),
    lambda c: c.Event(enable_timing=True),
    lambda c: c.current_stream(),
    lambda c: c.default_stream(),
    lambda c: c.device(0).__enter__(),
], ids=["current_device", "set_device", "get_device_name", "get_device_properties",
        "mem_get_info", "Stream", "Event", "current_stream", "default_stream", "device"])
def test_device_calls_without_cuda_are_clear_errors(call):
    with pytest.raises(RuntimeError, match="CUDA is not available") as info:
        call(gpugrad.cuda)
    assert "device='cpu'" in str(info.value)  # says what to do instead


@needs_no_cuda
def test_none_stream_and_device_contexts_are_no_ops_without_cuda():
    with gpugrad.cuda.stream(None) as s:  # as torch.cuda.stream(None)
        assert s is None
    with gpugrad.cuda.device(None), gpugrad.cuda.device(-1):
        pass
    gpugrad.cuda.set_stream(None)


def test_public_names_exist_with_docstrings():
    torch = pytest.importorskip("torch")
    for name in gpugrad.cuda.__all__:
        obj = getattr(gpugrad.cuda, name)
        assert obj.__doc__, name
        assert hasattr(torch.cuda, name), f"{name} is not a torch.cuda name"


def test_oom_error_is_torch_like():
    assert issubclass(gpugrad.cuda.OutOfMemoryError, RuntimeError)
    assert issubclass(gpugrad.cuda.OutOfMemoryError, MemoryError)  # as CuPy's
    assert issubclass(gpugrad.cuda.CudaError, RuntimeError)
    torch = pytest.importorskip("torch")
    assert issubclass(torch.cuda.OutOfMemoryError, RuntimeError)


def test_no_cupy_errors_are_caught_before_cuda_is_used(monkeypatch):
    # Without CUDA the boundaries catch nothing (``except ():``) and import nothing.
    monkeypatch.setattr(_cuda_errors, "_types", None)
    monkeypatch.setattr(_backend, "_cupy", None)
    assert _cuda_errors.error_types() == ()


# ---- a fake CuPy: the logic of gpugrad.cuda without a GPU --------------------------------------
class _Runtime:
    def __init__(self, n):
        self.n, self.dev, self.syncs, self.free = n, 0, [], 40 * MiB

    def getDeviceCount(self):
        return self.n

    def getDevice(self):
        return self.dev

    def setDevice(self, i):
        self.dev = i

    def deviceSynchronize(self):
        self.syncs.append(self.dev)

    def memGetInfo(self):
        return self.free, 80 * MiB

    def getDeviceProperties(self, i):
        return {"name": f"Fake GPU {i}".encode(), "major": 9, "minor": 0,
                "totalGlobalMem": 80 * MiB, "multiProcessorCount": 132}


class _Pointer:
    def __init__(self, pool, size, device_id):
        self.pool, self.size, self.device_id = pool, size, device_id

    def free(self):
        self.pool.used[self.device_id] -= self.size


class _Pool:
    """CuPy's MemoryPool, as far as gpugrad uses it: per-device used/total bytes."""

    def __init__(self, rt):
        self.rt = rt
        self.used, self.total, self.emptied = [0] * rt.n, [0] * rt.n, []

    def malloc(self, size):
        d = self.rt.dev
        self.used[d] += size
        self.total[d] = max(self.total[d], self.used[d])
        return _Pointer(self, size, d)

    def used_bytes(self):
        return self.used[self.rt.dev]

    def total_bytes(self):
        return self.total[self.rt.dev]

    def free_all_blocks(self):
        self.emptied.append(self.rt.dev)
        self.total[self.rt.dev] = self.used[self.rt.dev]


class _FakeStream:
    count = 0

    def __init__(self, null=False, non_blocking=False, priority=None, _cuda=None):
        _FakeStream.count += 1
        self.ptr = 0 if null else 0x1000 + _FakeStream.count
        self.non_blocking, self.priority, self.waited = non_blocking, priority, []
        self.done, self.cuda = True, _cuda

    def synchronize(self):
        pass

    def wait_event(self, e):
        self.waited.append(e)

    def __enter__(self):
        self.cuda.stack.append((self.cuda.rt.dev, self.cuda.current.get(self.cuda.rt.dev)))
        self.cuda.current[self.cuda.rt.dev] = self
        return self

    def __exit__(self, *exc):
        dev, prev = self.cuda.stack.pop()
        self.cuda.current[dev] = prev

    def use(self):
        self.cuda.current[self.cuda.rt.dev] = self


class _FakeEvent:
    def __init__(self, block=False, disable_timing=False, interprocess=False, _cuda=None):
        self.disable_timing, self.ptr, self.cuda = disable_timing, 0xE000, _cuda
        self.on, self.done, self.t = None, True, None

    def record(self, stream=None):
        self.on = stream if stream is not None else self.cuda.get_current_stream()
        self.t = self.cuda.clock
        self.cuda.clock += 2.5

    def synchronize(self):
        pass


class _Device:
    def __init__(self, cuda, i):
        self.cuda, self.id = cuda, i

    def __enter__(self):
        self.prev = self.cuda.rt.dev
        self.cuda.rt.dev = self.id
        return self

    def __exit__(self, *exc):
        self.cuda.rt.dev = self.prev

    def use(self):
        self.cuda.rt.dev = self.id


class _Cuda:
    def __init__(self, n):
        self.rt = self.runtime = _Runtime(n)
        self.pool = _Pool(self.rt)
        self.allocator = self.pool.malloc
        self.current, self.stack, self.clock = {}, [], 0.0
        cuda = self

        class Stream(_FakeStream):
            def __init__(self, *a, **k):
                super().__init__(*a, _cuda=cuda, **k)

        class Event(_FakeEvent):
            def __init__(self, *a, **k):
                super().__init__(*a, _cuda=cuda, **k)

        Stream.null = Stream(null=True)
        self.Stream, self.Event = Stream, Event

    def Device(self, i):  # noqa: N802 - CuPy's name
        return _Device(self, i)

    def get_allocator(self):
        return self.allocator

    def set_allocator(self, f):
        self.allocator = f

    def get_current_stream(self):
        return self.current.get(self.rt.dev) or self.Stream.null

    def get_elapsed_time(self, start, end):
        return end.t - start.t


class FakeCupy:
    def __init__(self, n=2):
        self.cuda = _Cuda(n)
        self.pinned_emptied = 0

    def get_default_memory_pool(self):
        return self.cuda.pool

    def get_default_pinned_memory_pool(self):
        fake = self

        class Pinned:
            def free_all_blocks(self):
                fake.pinned_emptied += 1
        return Pinned()

    def malloc(self, size):
        """What CuPy does for every array: call the current allocator."""
        return self.cuda.allocator(size)


@pytest.fixture
def fake_cupy(monkeypatch):
    """gpugrad sees a CuPy with two devices; the real state comes back afterwards."""
    cp = FakeCupy()
    monkeypatch.setattr(_backend, "_cupy", cp)
    monkeypatch.setattr(_backend, "_cupy_checked", True)
    monkeypatch.setattr(_backend, "_cuda_devices", {})
    monkeypatch.setattr(_cuda_memory, "_peaks", [])
    monkeypatch.setattr(_cuda_memory, "_tracking_malloc", None)
    monkeypatch.setattr(_cuda_memory, "_pool", None)
    assert _cuda_memory.install(cp)
    return cp


def test_fake_device_queries(fake_cupy):
    c = gpugrad.cuda
    assert c.is_available() and c.device_count() == 2 and c.current_device() == 0
    c.set_device("cuda:1")
    assert c.current_device() == 1
    c.set_device(0)
    with c.device(1):
        assert c.current_device() == 1
        with c.device("cuda:0"):
            assert c.current_device() == 0
        assert c.current_device() == 1
    assert c.current_device() == 0
    assert c.get_device_name(1) == "Fake GPU 1" and c.get_device_capability() == (9, 0)
    p = c.get_device_properties("cuda:1")
    assert p.total_memory == 80 * MiB and p.multi_processor_count == 132 and "Fake" in repr(p)
    assert c.mem_get_info() == (40 * MiB, 80 * MiB)
    c.synchronize(1)
    c.synchronize()
    assert fake_cupy.cuda.rt.syncs == [1, 0] and c.current_device() == 0


@pytest.mark.parametrize("bad", [2, "cuda:5", -3])
def test_fake_bad_device_index_is_a_clear_error(fake_cupy, bad):
    with pytest.raises(ValueError, match=r"does not exist: 2 CUDA device\(s\) visible"):
        gpugrad.cuda.set_device(bad)
    with pytest.raises(ValueError, match="expected a CUDA device"):
        gpugrad.cuda.memory_allocated("cpu")


def test_fake_memory_figures_and_peak(fake_cupy):
    c, cp = gpugrad.cuda, fake_cupy
    assert cp.cuda.get_allocator() is not cp.cuda.pool.malloc  # the counting allocator
    a = cp.malloc(10 * MiB)
    b = cp.malloc(30 * MiB)
    assert c.memory_allocated() == 40 * MiB and c.max_memory_allocated() == 40 * MiB
    b.free()
    assert c.memory_allocated() == 10 * MiB and c.max_memory_allocated() == 40 * MiB
    assert c.memory_reserved() == 40 * MiB  # the pool keeps the freed block cached
    stats = c.memory_stats()
    assert stats["allocated_bytes.all.current"] == 10 * MiB
    assert stats["allocated_bytes.all.peak"] == 40 * MiB
    assert stats["reserved_bytes.all.current"] == 40 * MiB
    c.reset_peak_memory_stats()
    assert c.max_memory_allocated() == 10 * MiB
    cp.malloc(5 * MiB).free()  # a temporary: counted by the peak although already gone
    assert c.max_memory_allocated() == 15 * MiB and c.memory_allocated() == 10 * MiB
    # devices are counted apart
    with c.device(1):
        cp.malloc(7 * MiB)
    assert c.max_memory_allocated(1) == 7 * MiB and c.memory_allocated("cuda:1") == 7 * MiB
    assert c.max_memory_allocated(0) == 15 * MiB
    c.reset_max_memory_allocated(1)  # torch's older name
    c.empty_cache()
    assert cp.cuda.pool.emptied == [0] and c.memory_reserved() == 10 * MiB
    assert cp.pinned_emptied == 1
    a.free()
    assert c.memory_allocated() == 0


def test_fake_peak_not_tracked_under_a_foreign_allocator(fake_cupy):
    cp = fake_cupy
    cp.cuda.set_allocator(cp.cuda.pool.malloc)  # someone replaced gpugrad's allocator
    cp.malloc(3 * MiB).free()
    cp.malloc(1 * MiB)
    # Not tracked: the peak falls back to the current figure rather than a stale one.
    assert gpugrad.cuda.max_memory_allocated() == 1 * MiB


def test_fake_install_leaves_a_foreign_allocator_alone(monkeypatch):
    cp = FakeCupy()
    foreign = cp.cuda.pool.malloc
    cp.cuda.set_allocator(lambda size: foreign(size))
    monkeypatch.setattr(_cuda_memory, "_tracking_malloc", None)
    monkeypatch.setattr(_cuda_memory, "_peaks", [])
    assert _cuda_memory.install(cp) is False
    assert not _cuda_memory.installed(cp)
    assert _cuda_memory.peak(cp, 0, 123) == 123


def test_fake_events_time_and_order(fake_cupy):
    c = gpugrad.cuda
    start, end = c.Event(enable_timing=True), c.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded"):
        start.elapsed_time(end)
    start.record()
    end.record()
    assert start.elapsed_time(end) == 2.5
    assert start.query() and end.query()
    plain = c.Event()
    plain.record()
    with pytest.raises(RuntimeError, match="enable_timing=True"):
        plain.elapsed_time(end)
    s = c.Stream()
    e = s.record_event()
    assert e._cp.on is s._cp
    s2 = c.Stream(priority=-1)
    assert s2._cp.priority == -1 and s2._cp.non_blocking
    s2.wait_stream(s)
    assert len(s2._cp.waited) == 1
    e.wait(s2)
    assert s2._cp.waited[-1] is e._cp


def test_fake_stream_context_makes_it_current_on_its_device(fake_cupy):
    c = gpugrad.cuda
    assert c.current_stream() == c.default_stream() and c.current_stream().cuda_stream == 0
    s = c.Stream(device=1)
    assert s.device == gpugrad.device("cuda:1")
    with c.stream(s) as entered:
        assert entered is s
        assert c.current_device() == 1  # torch switches to the stream's device too
        assert c.current_stream() == s and c.current_stream(1) == s
        ev = c.Event()
        ev.record()
        assert ev._cp.on is s._cp  # recorded on the current stream
    assert c.current_device() == 0 and c.current_stream(1) == c.default_stream(1)
    assert c.current_stream(1) != c.default_stream(0)  # same handle, other device
    assert s.__cuda_stream__() == (0, s.cuda_stream) and "cuda:1" in repr(s)
    assert len({s, c.Stream._wrap(s._cp, 1)}) == 1
    c.set_stream(s)
    assert c.current_stream(1) == s and c.current_stream(0) == c.default_stream(0)


def test_fake_stream_priority_needs_a_cupy_that_has_it(fake_cupy, monkeypatch):
    base = fake_cupy.cuda.Stream

    class OldStream(base):
        def __init__(self, null=False, non_blocking=False):
            super().__init__(null=null, non_blocking=non_blocking)
    monkeypatch.setattr(fake_cupy.cuda, "Stream", OldStream)
    with pytest.raises(RuntimeError, match="cannot set stream priorities"):
        gpugrad.cuda.Stream(priority=-1)
    assert gpugrad.cuda.Stream().query()


def test_fake_stream_context_restores_on_error(fake_cupy):
    c = gpugrad.cuda
    s = c.Stream(device=1)
    with pytest.raises(KeyError):
        with s:
            raise KeyError("x")
    assert c.current_device() == 0 and c.current_stream(1) == c.default_stream(1)


# ---- CuPy's exceptions become gpugrad's, at every boundary -------------------------------------
class OutOfMemoryError(MemoryError):
    """cupy.cuda.memory.OutOfMemoryError(size, total, limit)."""

    def __init__(self, size, total, limit=0):
        self._size, self._total, self._limit = size, total, limit
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: "
                         f"{total:,} bytes).")


class CUDARuntimeError(RuntimeError):
    def __init__(self, status, msg="cudaErrorLaunchFailure: unspecified launch failure"):
        self.status = status
        super().__init__(msg)


class CUBLASError(RuntimeError):
    def __init__(self, status):
        self.status = status
        super().__init__(f"CUBLAS_STATUS {status}")


class CompileException(Exception):
    def __init__(self, msg):
        self._msg = msg
        super().__init__(msg)

    def get_message(self):
        return self._msg


@pytest.fixture
def fake_errors(monkeypatch):
    """gpugrad translates these stand-ins as CuPy's classes (matched by their names)."""
    kinds = {OutOfMemoryError: _cuda_errors._OOM, CUDARuntimeError: _cuda_errors._OTHER,
             CUBLASError: _cuda_errors._OTHER, CompileException: _cuda_errors._COMPILE}
    monkeypatch.setattr(_cuda_errors, "_kinds", kinds)
    monkeypatch.setattr(_cuda_errors, "_types", tuple(kinds))


def _raising(exc, where="forward"):
    class Boom(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            if where == "forward":
                raise exc
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise exc
    return Boom


def test_oom_in_forward_names_op_size_and_hint(fake_errors, fake_cupy):
    fake_cupy.cuda.pool.malloc(3 * MiB)
    x = gpugrad.ones(3, device="cpu", requires_grad=True)
    err = OutOfMemoryError(2 << 30, 5 * MiB)
    with pytest.raises(gpugrad.cuda.OutOfMemoryError) as info:
        _raising(err).apply(x)
    e = info.value
    msg = str(e)
    assert msg.startswith("Boom: CUDA out of memory on cuda:0: tried to allocate 2.00 GiB.")
    assert "3.00 MiB in arrays" in msg and "40.00 MiB free of 80.00 MiB" in msg
    assert "empty_cache()" in msg and "del" in msg  # what to do
    assert e.__cause__ is err and isinstance(e, RuntimeError)
    assert (e.op, e.device, e.requested_bytes) == ("Boom", "cuda:0", 2 << 30)
    assert (e.allocated_bytes, e.free_bytes, e.total_bytes) == (3 * MiB, 40 * MiB, 80 * MiB)
    assert gpugrad.is_grad_enabled()  # the failed call left grad mode as it was


def test_oom_without_device_state(fake_errors, monkeypatch):
    monkeypatch.setattr(_backend, "_cupy", None)  # nothing readable: the message still holds
    with pytest.raises(gpugrad.cuda.OutOfMemoryError,
                       match="the CUDA device: tried to allocate 512.00 KiB") as info:
        _raising(OutOfMemoryError(512 << 10, 0)).apply(gpugrad.ones(2, device="cpu"))
    assert info.value.allocated_bytes is None and "empty_cache" in str(info.value)


@pytest.mark.parametrize("exc, cls, text", [
    (CUDARuntimeError(2, "cudaErrorMemoryAllocation: out of memory"),
     gpugrad.cuda.OutOfMemoryError, "tried to allocate an unknown number of bytes"),
    (CUBLASError(3), gpugrad.cuda.OutOfMemoryError, "out of memory"),
    (CUDARuntimeError(700, "cudaErrorIllegalAddress: an illegal memory access"),
     gpugrad.cuda.CudaError, "CUDA_LAUNCH_BLOCKING=1"),
    (CUBLASError(13), gpugrad.cuda.CudaError, "CUBLAS_STATUS 13"),
    (CompileException("kern.cu(3): error: identifier \"y\" is undefined"),
     gpugrad.cuda.CudaError, "failed to compile"),
], ids=["runtime-oom", "cublas-alloc", "illegal-address", "cublas-other", "compile"])
def test_cuda_errors_by_kind(fake_errors, fake_cupy, exc, cls, text):
    with pytest.raises(cls, match=text) as info:
        _raising(exc).apply(gpugrad.ones(2, device="cpu"))
    assert str(info.value).startswith("Boom: ") and info.value.__cause__ is exc
    if cls is gpugrad.cuda.CudaError:
        assert not isinstance(info.value, gpugrad.cuda.OutOfMemoryError)
        assert info.value.status == getattr(exc, "status", None)
    if isinstance(exc, CompileException):
        assert 'identifier "y" is undefined' in str(info.value)


def test_other_errors_pass_through(fake_errors):
    with pytest.raises(ZeroDivisionError):
        _raising(ZeroDivisionError("not CUDA")).apply(gpugrad.ones(2, device="cpu"))


def test_oom_in_backward_names_the_node(fake_errors, fake_cupy):
    x = gpugrad.ones(3, device="cpu", requires_grad=True)
    y = _raising(OutOfMemoryError(64 * MiB, 0), where="backward").apply(x).sum()
    with pytest.raises(gpugrad.cuda.OutOfMemoryError, match=r"^backward \(at BoomBackward\)"
                       r": CUDA out of memory on cuda:0: tried to allocate 64.00 MiB"):
        y.backward()
    assert gpugrad.is_grad_enabled() and x.grad is None


def test_cuda_error_in_backward_with_create_graph(fake_errors, fake_cupy):
    x = gpugrad.ones(3, device="cpu", requires_grad=True)
    y = _raising(CUDARuntimeError(719), where="backward").apply(x).sum()
    with pytest.raises(gpugrad.cuda.CudaError, match="backward"):
        gpugrad.autograd.grad(y, x, create_graph=True)
    assert gpugrad.is_grad_enabled()


def test_oom_in_a_factory_names_the_factory(fake_errors, fake_cupy, monkeypatch):
    from gpugrad import _factories

    def fail(*args):
        raise OutOfMemoryError(8 << 30, 0)
    monkeypatch.setattr(_factories, "_make_filled", fail)
    with pytest.raises(gpugrad.cuda.OutOfMemoryError, match=r"^zeros: .*8.00 GiB"):
        gpugrad.zeros(1 << 31, device="cpu")
    with pytest.raises(gpugrad.cuda.OutOfMemoryError, match=r"^full: "):
        gpugrad.full((4,), 3.0, device="cpu")


def test_synchronize_reports_async_errors(fake_errors, fake_cupy, monkeypatch):
    def fail():
        raise CUDARuntimeError(700, "cudaErrorIllegalAddress: an illegal memory access")
    monkeypatch.setattr(fake_cupy.cuda.rt, "deviceSynchronize", fail)
    with pytest.raises(gpugrad.cuda.CudaError, match="^synchronize: CUDA error"):
        gpugrad.cuda.synchronize()


def test_stream_and_event_waits_report_async_errors(fake_errors, fake_cupy, monkeypatch):
    def fail(*args):
        raise CUDARuntimeError(719, "cudaErrorLaunchFailure: unspecified launch failure")
    c = gpugrad.cuda
    s, start, end = c.Stream(), c.Event(enable_timing=True), c.Event(enable_timing=True)
    start.record(s)
    end.record(s)
    for obj in (s._cp, end._cp):
        monkeypatch.setattr(obj, "synchronize", fail)
    with pytest.raises(gpugrad.cuda.CudaError, match="^Stream.synchronize: CUDA error"):
        s.synchronize()
    with pytest.raises(gpugrad.cuda.CudaError, match="^Event.synchronize: "):
        end.synchronize()
    with pytest.raises(gpugrad.cuda.CudaError, match="^Event.elapsed_time: "):
        start.elapsed_time(end)


def test_after_oom_nothing_of_the_failed_call_stays_alive(fake_errors, fake_cupy):
    """The process can free memory and go on: once the error is handled, gpugrad keeps no
    reference to the failed call's arrays (no cached exception, no half-made graph)."""
    class Big:
        pass
    ref = []

    class Grow(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            scratch = Big()  # an intermediate the failed forward had made
            ref.append(weakref.ref(scratch))
            raise OutOfMemoryError(1 << 30, 0)

        @staticmethod
        def backward(ctx, g):
            return g

    x = gpugrad.ones(3, device="cpu", requires_grad=True)
    try:
        Grow.apply(x)
    except gpugrad.cuda.OutOfMemoryError:
        pass
    gc.collect()
    assert ref[0]() is None
    y = (x * 3).sum()  # and the process goes on
    y.backward()
    assert x.grad.tolist() == [3.0, 3.0, 3.0]


def test_translation_costs_nothing_on_success(fake_errors):
    # The boundary's ``except error_types()`` is evaluated only when an exception propagates.
    calls = []
    real = _cuda_errors.error_types

    def counting():
        calls.append(1)
        return real()
    import gpugrad.autograd.function as function
    try:
        function._cuda_error_types = counting
        x = gpugrad.ones(3, device="cpu", requires_grad=True)
        ((x * 2).exp().sum()).backward()
        assert calls == []
        with pytest.raises(gpugrad.cuda.OutOfMemoryError):
            _raising(OutOfMemoryError(1, 0)).apply(x)
        assert calls == [1]
    finally:
        function._cuda_error_types = real


# ---- on a real GPU -----------------------------------------------------------------------------
@pytest.fixture
def cuda_clean():
    """A GPU test starts and ends with no cached blocks, and with the pool unlimited."""
    import cupy
    gc.collect()
    gpugrad.cuda.synchronize()
    gpugrad.cuda.empty_cache()
    yield cupy
    cupy.get_default_memory_pool().set_limit(size=0)
    gc.collect()
    gpugrad.cuda.empty_cache()


@pytest.mark.gpu
def test_gpu_device_queries():
    c = gpugrad.cuda
    assert c.is_available() and c.device_count() >= 1 and c.current_device() == 0
    assert c.get_device_name() and c.get_device_capability()[0] >= 5
    free, total = c.mem_get_info()
    assert 0 < free <= total
    with c.device(0):
        assert c.current_device() == 0
    c.synchronize()


@pytest.mark.gpu
def test_gpu_memory_stats(cuda_clean):
    c = gpugrad.cuda
    base = c.memory_allocated()
    c.reset_peak_memory_stats()
    assert c.max_memory_allocated() == base
    x = gpugrad.empty(16 * MiB, dtype=gpugrad.float32, device="cuda")  # 64 MiB
    assert c.memory_allocated() - base == 64 * MiB
    y = x * 2  # another 64 MiB
    peak = c.max_memory_allocated()
    assert peak - base >= 128 * MiB
    del x, y
    assert c.memory_allocated() == base and c.max_memory_allocated() == peak
    assert c.memory_reserved() >= 128 * MiB  # cached by the pool
    c.empty_cache()
    assert c.memory_reserved() < 128 * MiB
    c.reset_peak_memory_stats()
    assert c.max_memory_allocated() == base
    # temporaries inside one op count: sum(x*x) makes x*x and drops it
    x = gpugrad.ones(4 * MiB, device="cuda")  # 16 MiB
    c.reset_peak_memory_stats()
    s = (x * x).sum()
    assert c.max_memory_allocated() - c.memory_allocated() >= 16 * MiB - 4096
    assert s.item() == 4 * MiB


@pytest.mark.gpu
def test_gpu_event_timing_and_streams():
    c = gpugrad.cuda
    a = gpugrad.randn(2048, 2048, device="cuda")
    start, end = c.Event(enable_timing=True), c.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        b = a @ a
    end.record()
    ms = start.elapsed_time(end)
    assert 0 < ms < 10_000 and end.query()
    s = c.Stream()
    s.wait_stream(c.current_stream())
    with c.stream(s):
        assert c.current_stream() == s
        import cupy
        assert cupy.cuda.get_current_stream().ptr == s.cuda_stream
        e0, e1 = c.Event(enable_timing=True), c.Event(enable_timing=True)
        e0.record()
        d = (b * 2).sum()
        e1.record()
    c.current_stream().wait_stream(s)
    assert e0.elapsed_time(e1) >= 0
    s.synchronize()
    assert s.query()
    assert d.item() == pytest.approx(2 * float((a @ a).sum().item()), rel=1e-3)


@pytest.mark.gpu
def test_gpu_oom_recovery_allocate_until_full(cuda_clean):
    """Fill the device until it refuses, catch gpugrad's error, free, and go on."""
    c = gpugrad.cuda
    free, total = c.mem_get_info()
    chunk = max(total // 16, 256 * MiB) // MiB * MiB  # CuPy's pool rounds to 512 bytes
    held = []
    with pytest.raises(gpugrad.cuda.OutOfMemoryError) as info:
        for _ in range(64):
            held.append(gpugrad.empty(chunk // 4, dtype=gpugrad.float32, device="cuda"))
    e = info.value
    assert e.requested_bytes == chunk and "empty_cache" in str(e) and e.op == "empty"
    assert len(held) >= 1 and e.allocated_bytes >= len(held) * chunk
    del held, e, info
    gc.collect()
    c.empty_cache()
    again = gpugrad.ones(chunk // 4, device="cuda")  # the memory is usable again
    assert again.sum().item() == chunk // 4


@pytest.mark.gpu
def test_gpu_oom_in_op_forward_and_backward(cuda_clean):
    """With CuPy's pool limited, an op's forward and the backward engine fail cleanly."""
    cupy = cuda_clean
    pool = cupy.get_default_memory_pool()
    x = gpugrad.randn(1024, 1024, device="cuda", requires_grad=True)  # 4 MiB
    # The limit bounds the pool's reserved bytes: with no cached block to reuse, a new
    # 4 MiB block does not fit.
    gpugrad.cuda.empty_cache()
    pool.set_limit(size=pool.total_bytes() + 2 * MiB)
    with pytest.raises(gpugrad.cuda.OutOfMemoryError,
                       match=r"^(Matmul|Mm): CUDA out of memory on cuda:0: tried to allocate "
                             r"4.00 MiB") as info:
        x @ x
    assert info.value.__cause__.__class__ is cupy.cuda.memory.OutOfMemoryError
    del info
    pool.set_limit(size=0)
    y = (x @ x).sum()
    gpugrad.cuda.empty_cache()
    pool.set_limit(size=pool.total_bytes() + 1 * MiB)
    with pytest.raises(gpugrad.cuda.OutOfMemoryError, match="out of memory"):
        y.backward()
    pool.set_limit(size=0)
    x.grad = None  # whatever a failed backward may have accumulated
    z = (x * 2).sum()  # the process goes on
    z.backward()
    assert float(x.grad.sum().item()) == pytest.approx(2 * 1024 * 1024)


@pytest.mark.gpu
def test_gpu_real_cupy_errors_are_registered():
    _cuda_errors.error_types()
    names = {cls.__name__ for cls in _cuda_errors._kinds}
    assert {"OutOfMemoryError", "CUDARuntimeError", "CompileException"} <= names
    assert _cuda_memory.installed(_backend.cupy_or_none())


@pytest.mark.gpu
def test_gpu_compile_error_is_translated():
    import cupy
    bad = cupy.RawKernel(r'extern "C" __global__ void bad(float* x) { x[0] = y; }', "bad")

    class UsesRaw(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            bad((1,), (1,), (x._data,))
            return x

        @staticmethod
        def backward(ctx, g):
            return g
    with pytest.raises(gpugrad.cuda.CudaError, match="failed to compile"):
        UsesRaw.apply(gpugrad.ones(1, device="cuda"))
    assert np.isfinite(gpugrad.ones(2, device="cuda").sum().item())  # the context still works
