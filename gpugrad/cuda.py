"""``gpugrad.cuda``: devices, memory statistics, streams and events, with torch.cuda's names.

Everything runs on CuPy. On a machine without CUDA, as in a CPU-only torch build:
``is_available()`` is False, ``device_count()`` 0, the memory figures are 0
(``memory_stats()`` is empty), ``empty_cache()`` does nothing, and what needs a device
(``current_device``, ``set_device``, ``mem_get_info``, ``Stream()``, ``Event()``, ...) raises a
RuntimeError saying CUDA is not available and what to do. Two deliberate differences, so that
device-agnostic code (timing loops, benchmarks) runs unchanged on a CPU: ``synchronize()`` and
``reset_peak_memory_stats()`` do nothing there (torch raises an AssertionError and an
AttributeError).

Memory figures are those of CuPy's default memory pool, which holds every gpugrad CUDA
tensor: ``memory_allocated`` = bytes in live arrays, ``memory_reserved`` = bytes held from
the device (cached blocks included), ``max_memory_allocated`` = the peak since start or the
last ``reset_peak_memory_stats`` (tracked by gpugrad; see ``_cuda_memory.py``). Memory that
PyTorch or another library allocates itself is not counted.
"""
from __future__ import annotations

from . import _backend, _cuda_memory
from ._cuda_errors import CudaError, OutOfMemoryError, guard
from ._cuda_graphs import (CUDAGraph, graph, graph_pool_handle,  # noqa: F401
                           is_current_stream_capturing, make_graphed_callables)

__all__ = ["is_available", "device_count", "current_device", "set_device", "device",
           "get_device_name", "get_device_capability", "get_device_properties", "mem_get_info",
           "synchronize", "memory_allocated", "max_memory_allocated", "memory_reserved",
           "reset_peak_memory_stats", "reset_max_memory_allocated", "memory_stats",
           "empty_cache", "Stream", "Event", "StreamContext", "stream", "current_stream",
           "default_stream", "set_stream", "OutOfMemoryError", "CudaError", "manual_seed",
           "manual_seed_all", "CUDAGraph", "graph", "make_graphed_callables",
           "is_current_stream_capturing", "graph_pool_handle"]


# ---- devices ---------------------------------------------------------------------------------
def is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _backend.cuda_available()


def device_count() -> int:
    """The number of visible CUDA devices (0 without CUDA)."""
    cp = _backend.cupy_or_none()
    return 0 if cp is None else cp.cuda.runtime.getDeviceCount()


def _index(dev, what: str) -> int:
    """The CUDA device index ``dev`` names: None (the current device), an int, ``'cuda:N'``,
    a gpugrad.device or a Stream. Raises when CUDA is missing or the device does not exist."""
    cp = _backend._require_cuda(what)
    if isinstance(dev, Stream):
        return dev.device.index
    if dev is None:
        return cp.cuda.runtime.getDevice()
    if isinstance(dev, int) and not isinstance(dev, bool):
        index = dev
    else:
        d = _backend.device(dev)
        if d.type != "cuda":
            raise ValueError(f"{what}: expected a CUDA device, got {str(d)!r}")
        index = cp.cuda.runtime.getDevice() if d.index is None else d.index
    count = cp.cuda.runtime.getDeviceCount()
    if not 0 <= index < count:
        raise ValueError(f"{what}: device 'cuda:{index}' does not exist: {count} CUDA "
                         f"device(s) visible")
    return index


def current_device() -> int:
    """The index of the current CUDA device."""
    cp = _backend._require_cuda("gpugrad.cuda.current_device()")
    return cp.cuda.runtime.getDevice()


def set_device(device) -> None:  # noqa: F811 - torch's parameter name
    """Make ``device`` the current CUDA device: ``'cuda'`` and new CuPy work go there.
    (The default device of factories, resolved once, is set with gpugrad.set_default_device.)"""
    cp = _backend._require_cuda("gpugrad.cuda.set_device()")
    cp.cuda.Device(_index(device, "gpugrad.cuda.set_device()")).use()


class device:
    """Context manager that makes a CUDA device current, then restores the previous one
    (torch.cuda.device). ``None`` or ``-1`` does nothing."""

    def __init__(self, device) -> None:  # noqa: F811
        self._target = device
        self._prev = []

    def __enter__(self):
        d = self._target
        if d is None or (isinstance(d, int) and d == -1):
            self._prev.append(None)
            return self
        cp = _backend._require_cuda("gpugrad.cuda.device()")
        index = _index(d, "gpugrad.cuda.device()")
        prev = cp.cuda.runtime.getDevice()
        if prev != index:
            cp.cuda.runtime.setDevice(index)
        self._prev.append(prev)
        return self

    def __exit__(self, *exc) -> None:
        prev = self._prev.pop()
        if prev is not None:
            cp = _backend.cupy_or_none()
            if cp.cuda.runtime.getDevice() != prev:
                cp.cuda.runtime.setDevice(prev)


class _DeviceProperties:
    """What torch.cuda.get_device_properties reports, read from cudaGetDeviceProperties."""

    def __init__(self, props: dict) -> None:
        name = props.get("name", b"")
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.major, self.minor = int(props["major"]), int(props["minor"])
        self.total_memory = int(props["totalGlobalMem"])
        self.multi_processor_count = int(props["multiProcessorCount"])

    def __repr__(self) -> str:
        return (f"_CudaDeviceProperties(name={self.name!r}, major={self.major}, "
                f"minor={self.minor}, total_memory={self.total_memory >> 20}MB, "
                f"multi_processor_count={self.multi_processor_count})")


def get_device_properties(device=None) -> _DeviceProperties:  # noqa: F811
    """Name, compute capability, memory and SM count of a CUDA device."""
    cp = _backend._require_cuda("gpugrad.cuda.get_device_properties()")
    return _DeviceProperties(cp.cuda.runtime.getDeviceProperties(
        _index(device, "gpugrad.cuda.get_device_properties()")))


def get_device_name(device=None) -> str:  # noqa: F811
    """The name of a CUDA device, e.g. ``'NVIDIA H100 80GB HBM3'``."""
    return get_device_properties(device).name


def get_device_capability(device=None) -> tuple:  # noqa: F811
    """The compute capability ``(major, minor)`` of a CUDA device, e.g. ``(9, 0)``."""
    p = get_device_properties(device)
    return p.major, p.minor


def mem_get_info(device=None) -> tuple:  # noqa: F811
    """``(free, total)`` bytes of a CUDA device, as the driver reports them (memory that
    CuPy's pool caches counts as used)."""
    cp = _backend._require_cuda("gpugrad.cuda.mem_get_info()")
    with cp.cuda.Device(_index(device, "gpugrad.cuda.mem_get_info()")):
        free, total = cp.cuda.runtime.memGetInfo()
    return int(free), int(total)


@guard
def synchronize(device=None) -> None:  # noqa: F811
    """Wait for all work queued on a CUDA device to finish (no-op without CUDA). Errors of
    earlier asynchronous work surface here, as gpugrad.cuda.CudaError."""
    cp = _backend.cupy_or_none()
    if cp is None:
        return
    with cp.cuda.Device(_index(device, "gpugrad.cuda.synchronize()")):
        cp.cuda.runtime.deviceSynchronize()


# ---- memory ----------------------------------------------------------------------------------
def _pool_bytes(device, what: str):
    """(cupy, device index, in-use bytes, reserved bytes) of the default pool; None without
    CUDA."""
    cp = _backend.cupy_or_none()
    if cp is None:
        return None
    index = _index(device, what)
    pool = cp.get_default_memory_pool()
    with cp.cuda.Device(index):
        return cp, index, int(pool.used_bytes()), int(pool.total_bytes())


def memory_allocated(device=None) -> int:  # noqa: F811
    """Bytes in live CUDA arrays (CuPy's pool; 0 without CUDA)."""
    s = _pool_bytes(device, "gpugrad.cuda.memory_allocated()")
    return 0 if s is None else s[2]


def max_memory_allocated(device=None) -> int:  # noqa: F811
    """The peak of ``memory_allocated`` since the start or ``reset_peak_memory_stats``."""
    s = _pool_bytes(device, "gpugrad.cuda.max_memory_allocated()")
    if s is None:
        return 0
    cp, index, used, _ = s
    return _cuda_memory.peak(cp, index, used)


def memory_reserved(device=None) -> int:  # noqa: F811
    """Bytes CuPy's pool holds from the device, cached free blocks included (0 without
    CUDA)."""
    s = _pool_bytes(device, "gpugrad.cuda.memory_reserved()")
    return 0 if s is None else s[3]


def reset_peak_memory_stats(device=None) -> None:  # noqa: F811
    """Restart ``max_memory_allocated`` from the current usage (no-op without CUDA)."""
    s = _pool_bytes(device, "gpugrad.cuda.reset_peak_memory_stats()")
    if s is not None:
        _cuda_memory.reset_peak(s[1], s[2])


reset_max_memory_allocated = reset_peak_memory_stats


def memory_stats(device=None) -> dict:  # noqa: F811
    """The figures above under torch.cuda.memory_stats' keys (empty without CUDA)."""
    s = _pool_bytes(device, "gpugrad.cuda.memory_stats()")
    if s is None:
        return {}
    cp, index, used, reserved = s
    return {"allocated_bytes.all.current": used,
            "allocated_bytes.all.peak": _cuda_memory.peak(cp, index, used),
            "reserved_bytes.all.current": reserved}


def empty_cache() -> None:
    """Give the blocks CuPy's pool caches (not those of live tensors) back to the device, so
    that other libraries and processes can use them (no-op without CUDA)."""
    cp = _backend.cupy_or_none()
    if cp is None:
        return
    pool = cp.get_default_memory_pool()
    # The current device and every device gpugrad has made tensors on; switching to any
    # other device would create a CUDA context there.
    current = cp.cuda.runtime.getDevice()
    for index in sorted({current, *_backend._cuda_devices}):
        with cp.cuda.Device(index):
            pool.free_all_blocks()
    cp.get_default_pinned_memory_pool().free_all_blocks()


# ---- streams and events ----------------------------------------------------------------------
class Stream:
    """A CUDA stream (torch.cuda.Stream over cupy.cuda.Stream): a queue of device work.

    ``with s:`` (or ``with gpugrad.cuda.stream(s):``) makes it the current stream of its
    device, so gpugrad's ops queue their kernels there. Like torch's side streams it does not
    synchronize with the default stream: order work across streams with ``wait_stream`` or
    ``wait_event``. ``priority``: lower is higher, as in CUDA."""

    def __init__(self, device=None, priority: int = 0, **kwargs) -> None:  # noqa: F811
        cp = _backend._require_cuda("gpugrad.cuda.Stream()")
        index = _index(device, "gpugrad.cuda.Stream()")
        with cp.cuda.Device(index):
            if not priority:
                self._cp = cp.cuda.Stream(non_blocking=True)
            else:
                try:
                    self._cp = cp.cuda.Stream(non_blocking=True, priority=priority)
                except TypeError:  # a CuPy whose Stream takes no priority
                    raise RuntimeError(
                        f"gpugrad.cuda.Stream(priority={priority}): this CuPy "
                        f"({getattr(cp, '__version__', '?')}) cannot set stream priorities; "
                        "use priority=0 or a newer CuPy") from None
        self.device = _backend.cuda_device(index)
        self._entered = []

    @classmethod
    def _wrap(cls, cp_stream, index: int) -> "Stream":
        s = cls.__new__(cls)
        s._cp, s.device, s._entered = cp_stream, _backend.cuda_device(index), []
        return s

    @property
    def cuda_stream(self) -> int:
        """The ``cudaStream_t`` handle, as an int (0 for the default stream)."""
        return int(self._cp.ptr)

    def __cuda_stream__(self) -> tuple:
        """The CUDA stream protocol (CuPy's Stream.from_external, cuda.core, ...)."""
        return (0, self.cuda_stream)

    def query(self) -> bool:
        """True when all work queued on the stream has finished."""
        return bool(self._cp.done)

    def synchronize(self) -> None:
        """Wait (on the host) for all work queued on the stream. Errors of that work surface
        here, as gpugrad.cuda.CudaError."""
        self._cp.synchronize()

    synchronize = guard(synchronize, "Stream.synchronize")

    def wait_event(self, event: "Event") -> None:
        """Make work queued on this stream from now on wait for ``event``."""
        self._cp.wait_event(event._cp)

    def wait_stream(self, stream: "Stream") -> None:
        """Make work queued on this stream from now on wait for the work queued on
        ``stream`` so far."""
        self.wait_event(stream.record_event())

    def record_event(self, event: "Event | None" = None) -> "Event":
        """Record ``event`` (a new one if None) on this stream; returns it."""
        if event is None:
            event = Event()
        event.record(self)
        return event

    def __enter__(self) -> "Stream":
        cp = _backend.cupy_or_none()
        dev = cp.cuda.Device(self.device.index)
        dev.__enter__()  # a stream belongs to its device: switch to it, as torch does
        try:
            self._cp.__enter__()
        except BaseException:
            dev.__exit__(None, None, None)
            raise
        self._entered.append(dev)
        return self

    def __exit__(self, *exc) -> None:
        dev = self._entered.pop()
        try:
            self._cp.__exit__(*exc)
        finally:
            dev.__exit__(*exc)

    def __eq__(self, other) -> bool:
        return isinstance(other, Stream) and self.cuda_stream == other.cuda_stream and \
            self.device == other.device

    def __hash__(self) -> int:
        return hash((self.cuda_stream, self.device.index))

    def __repr__(self) -> str:
        return (f"<gpugrad.cuda.Stream device={self.device} "
                f"cuda_stream={self.cuda_stream:#x}>")


class Event:
    """A CUDA event (torch.cuda.Event over cupy.cuda.Event): a marker in a stream, to wait
    for or, with ``enable_timing=True``, to time the work between two of them::

        start, end = Event(enable_timing=True), Event(enable_timing=True)
        start.record(); y = f(x); end.record()
        ms = start.elapsed_time(end)   # waits for ``end``
    """

    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        cp = _backend._require_cuda("gpugrad.cuda.Event()")
        self.enable_timing, self.blocking = bool(enable_timing), bool(blocking)
        self.interprocess = bool(interprocess)
        self._cp = cp.cuda.Event(block=self.blocking, disable_timing=not self.enable_timing,
                                 interprocess=self.interprocess)
        self._recorded = False

    @property
    def cuda_event(self) -> int:
        """The ``cudaEvent_t`` handle, as an int."""
        return int(self._cp.ptr)

    def record(self, stream: Stream | None = None) -> None:
        """Record the event on ``stream`` (default: the current stream)."""
        if stream is None:
            self._cp.record()  # CuPy's current stream: where gpugrad's ops are queued
        else:
            self._cp.record(stream._cp)
        self._recorded = True

    def wait(self, stream: Stream | None = None) -> None:
        """Make work queued on ``stream`` (default: the current one) wait for this event."""
        (stream if stream is not None else current_stream()).wait_event(self)

    def query(self) -> bool:
        """True when the work before the event has finished (or it was never recorded)."""
        return bool(self._cp.done)

    def synchronize(self) -> None:
        """Wait (on the host) until the work before the event has finished. Errors of that
        work surface here, as gpugrad.cuda.CudaError."""
        self._cp.synchronize()

    synchronize = guard(synchronize, "Event.synchronize")

    def elapsed_time(self, end_event: "Event") -> float:
        """Milliseconds between this event and ``end_event`` (waits for ``end_event``)."""
        if not (self.enable_timing and end_event.enable_timing):
            raise RuntimeError("Both events must be created with argument "
                               "'enable_timing=True' to measure elapsed time.")
        if not (self._recorded and end_event._recorded):
            raise RuntimeError("Both events must be recorded before calculating elapsed "
                               "time: call .record() on each first.")
        cp = _backend.cupy_or_none()
        end_event._cp.synchronize()
        return float(cp.cuda.get_elapsed_time(self._cp, end_event._cp))

    elapsed_time = guard(elapsed_time, "Event.elapsed_time")

    def __repr__(self) -> str:
        return f"<gpugrad.cuda.Event {self.cuda_event:#x}>"


def current_stream(device=None) -> Stream:  # noqa: F811
    """The stream gpugrad's ops on ``device`` (default: the current device) are queued on."""
    cp = _backend._require_cuda("gpugrad.cuda.current_stream()")
    index = _index(device, "gpugrad.cuda.current_stream()")
    with cp.cuda.Device(index):  # CuPy keeps one current stream per device
        return Stream._wrap(cp.cuda.get_current_stream(), index)


def default_stream(device=None) -> Stream:  # noqa: F811
    """The default (legacy, ``cuda_stream == 0``) stream of ``device``."""
    cp = _backend._require_cuda("gpugrad.cuda.default_stream()")
    return Stream._wrap(cp.cuda.Stream.null, _index(device, "gpugrad.cuda.default_stream()"))


def set_stream(stream: Stream) -> None:  # noqa: F811
    """Make ``stream`` the current stream of its device (prefer ``with stream:``, which
    restores the previous one)."""
    if stream is None:
        return
    cp = _backend._require_cuda("gpugrad.cuda.set_stream()")
    with cp.cuda.Device(stream.device.index):  # CuPy keeps one current stream per device
        stream._cp.use()


class StreamContext:
    """``with StreamContext(s):`` makes ``s`` current on its device; None does nothing."""

    def __init__(self, stream: Stream | None) -> None:
        self.stream = stream

    def __enter__(self):
        if self.stream is not None:
            self.stream.__enter__()
        return self.stream

    def __exit__(self, *exc) -> None:
        if self.stream is not None:
            self.stream.__exit__(*exc)


def stream(stream: Stream | None) -> StreamContext:  # noqa: F811
    """Context manager making ``stream`` current (torch.cuda.stream); None: no-op."""
    return StreamContext(stream)


def manual_seed(seed: int) -> None:
    """Seed the CUDA generators (same as gpugrad.manual_seed, which seeds every device)."""
    from ._random import manual_seed as seed_all
    seed_all(seed)


manual_seed_all = manual_seed
