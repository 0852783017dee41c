"""The machinery of capture and replay: the "capturing" flag, input signatures, static
buffers, the bounded cache of captures, and the two recorders (a CUDA graph, a CPU stand-in).

What each piece is for:

- **The flag.** While a region is being captured, the host must not wait for the device:
  ``Tensor.item()``, ``.tolist()``, ``.numpy()``, ``bool(t)``, ``float(t)``, printing, ...
  would read memory that the capture has not computed (a CUDA graph records work, it does
  not run it), and CUDA would fail with an opaque error. ``check_sync(what)`` (called by
  those methods only, never on an op's path) raises ``CaptureSyncError`` naming the call. The
  flag is thread-local (CUDA captures the calling thread's work) and is set on the CPU too,
  by the CPU stand-in below, so that the same code fails the same way on both devices.
- **Signatures.** ``signature(args, kwargs)`` is the key of a capture: the structure of the
  arguments, and for each tensor its shape, dtype, device and requires_grad; tensors that
  require grad (parameters) are taken by identity, not copied, so their ``id`` is part of
  the key; other values by value (they are constants of the captured work).
- **Static buffers.** A replay reads the arrays the capture read: ``make_static`` copies a
  call's data tensors into buffers made once, ``copy_inputs`` refreshes them per call.
- **Recorders.** ``CudaRecorder`` captures a body into a CuPy CUDA graph on gpugrad's side
  stream and replays it with one launch; every block allocated during the capture is kept alive
  for the graph's lifetime (the role of torch's private graph memory pool: the graph writes
  into those blocks on every replay, so the pool must never hand them to anyone else).
  ``CpuRecorder`` has the same interface on the CPU: "capture" runs the body once with the
  flag set, "replay" runs it again and copies the results into the captured output arrays.
  Results, output aliasing and errors are therefore those of the CUDA path.
- **LRU.** ``LRUCache``: a bounded dict that calls ``release()`` on what it evicts.

Nothing here is imported by an op on its hot path except the plain module flag
``cuda_capturing``, read by matmul (CuPy refuses cuBLAS during a capture; see ``_cublas``).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

__all__ = ["CaptureSyncError", "is_capturing", "capturing", "check_sync", "signature",
           "LRUCache", "CudaRecorder", "CpuRecorder", "recorder_for", "cuda_capturing"]


class CaptureSyncError(RuntimeError):
    """A host synchronisation (``.item()``, ``print(t)``, ...) was requested while a region
    was being captured into a CUDA graph (or its CPU stand-in)."""


_tls = threading.local()
# True while this process captures a CUDA graph: matmul then calls cuBLAS through gpugrad's
# own handle (CuPy refuses). A plain module global so that matmul pays one global read.
cuda_capturing = False


def is_capturing() -> bool:
    """True while the calling thread is inside a captured region."""
    return getattr(_tls, "what", None) is not None


class capturing:
    """Context manager: mark the calling thread as capturing ``what`` (a name for errors)."""

    def __init__(self, what: str, cuda: bool = False) -> None:
        self.what, self.cuda = what, cuda

    def __enter__(self):
        global cuda_capturing
        self._prev = getattr(_tls, "what", None)
        self._prev_cuda = cuda_capturing
        _tls.what = self.what
        if self.cuda:
            cuda_capturing = True
        return self

    def __exit__(self, *exc) -> None:
        global cuda_capturing
        _tls.what = self._prev
        cuda_capturing = self._prev_cuda


def check_sync(call: str) -> None:
    """Raise CaptureSyncError if the calling thread is capturing; ``call`` names the
    synchronising call (``'Tensor.item()'``)."""
    what = getattr(_tls, "what", None)
    if what is not None:
        raise CaptureSyncError(
            f"{call} was called while {what} was capturing: it copies data to the host and "
            "waits for the device, which a captured region (a CUDA graph) cannot do; on a "
            "replay the Python code does not run at all. Move it out of the captured "
            "function: return the tensor (e.g. the loss) and call .item() on the result "
            "after the call, or run the function uncompiled to debug it.")


# ---- signatures ------------------------------------------------------------------------------
_T = None


def _tensor_cls():
    global _T
    if _T is None:
        from ._tensor import Tensor
        _T = Tensor
    return _T


def signature(args: tuple, kwargs: dict) -> tuple:
    """The hashable key of a call: structure, and per tensor (shape, dtype, device,
    requires_grad); tensors that require grad add their identity."""
    return flatten(args, kwargs)[0]


def flatten(args: tuple, kwargs: dict) -> tuple:
    """``(signature, tensors)`` of a call in one walk: the key, and its tensors in order
    (what a replay copies into the static buffers)."""
    T = _tensor_cls()
    out = []
    tensors = []

    def walk(x):
        if isinstance(x, T):
            d = x._data  # dtype and device objects, not their str(): str(dtype) costs ~20 us
            tensors.append(x)
            if x._requires_grad:
                out.append(("P", id(x), d.shape, d.dtype, x.device))
            else:
                out.append(("T", d.shape, d.dtype, x.device))
        elif isinstance(x, (tuple, list)):
            out.append((type(x).__name__, len(x)))
            for v in x:
                walk(v)
        elif isinstance(x, dict):
            out.append(("dict", tuple(x)))
            for v in x.values():
                walk(v)
        else:
            try:
                hash(x)
                out.append(("V", type(x).__name__, x))
            except TypeError:  # an unhashable object (a Module, ...): by identity
                out.append(("O", type(x).__name__, id(x)))

    walk(args)
    if kwargs:
        walk(kwargs)
    return tuple(out), tensors


def describe(sig: tuple) -> str:
    """A short, readable form of a signature's tensors, for error messages."""
    parts = []
    for item in sig:
        if item[0] == "T":
            parts.append(f"Tensor{list(item[1])}:{item[2]}@{item[3]}")
        elif item[0] == "P":
            parts.append(f"Tensor{list(item[2])}:{item[3]}@{item[4]}(requires_grad, "
                         f"id {item[1]:#x})")
        elif item[0] == "V":
            parts.append(repr(item[2]))
        elif item[0] == "tf32":
            parts.append(f"allow_tf32={item[1]}")
    return "(" + ", ".join(parts) + ")"


def map_tensors(fn, x):
    """``x`` with every tensor ``t`` in nested tuples/lists/dicts replaced by ``fn(t)``."""
    T = _tensor_cls()
    if isinstance(x, T):
        return fn(x)
    if isinstance(x, tuple):
        return tuple(map_tensors(fn, v) for v in x)
    if isinstance(x, list):
        return [map_tensors(fn, v) for v in x]
    if isinstance(x, dict):
        return {k: map_tensors(fn, v) for k, v in x.items()}
    return x


def tensors_of(x, found=None) -> list:
    """The tensors in nested tuples/lists/dicts, in order."""
    if found is None:
        found = []
    T = _tensor_cls()
    if isinstance(x, T):
        found.append(x)
    elif isinstance(x, (tuple, list)):
        for v in x:
            if isinstance(v, T):
                found.append(v)
            elif isinstance(v, (tuple, list, dict)):
                tensors_of(v, found)
    elif isinstance(x, dict):
        tensors_of(tuple(x.values()), found)
    return found


def make_static(x):
    """Copies of the data tensors of ``x`` (static buffers made once per capture); tensors
    that require grad are kept as they are (taken by identity)."""
    return map_tensors(lambda t: t if t.requires_grad else t.detach().clone(), x)


def copy_inputs(static: list, tensors: list) -> None:
    """Copy ``tensors`` (a call's, from ``flatten``) into the static buffers ``static`` (the
    capture's, in the same order, as equal signatures guarantee)."""
    for s, t in zip(static, tensors):
        if s is not t:
            s._data[...] = t._data


def copy_outputs(static, fresh, what: str) -> None:
    """CPU stand-in of a replay's writes: copy the arrays of ``fresh`` into those of
    ``static`` (the outputs of the capture)."""
    st, fr = tensors_of(static), tensors_of(fresh)
    if len(st) != len(fr):
        raise RuntimeError(f"{what}: the function returned {len(fr)} tensors, but "
                           f"{len(st)} when it was captured; a captured function must "
                           "return the same structure on every call")
    for s, f in zip(st, fr):
        if s is f:
            continue
        if s._data.shape != f._data.shape:
            raise RuntimeError(f"{what}: an output has shape {list(f.shape)}, but "
                               f"{list(s.shape)} when it was captured; captured functions "
                               "must not have data-dependent output shapes")
        np.copyto(s._data, f._data) if isinstance(s._data, np.ndarray) else \
            s._data.__setitem__(Ellipsis, f._data)


# ---- the cache -------------------------------------------------------------------------------
class LRUCache:
    """At most ``maxsize`` entries, least recently used evicted first; an evicted value's
    ``release()`` is called (a graph frees its memory)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"cache_size must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self._d: OrderedDict = OrderedDict()
        self.evictions = 0

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value) -> None:
        self._d[key] = value
        self._d.move_to_end(key)
        while len(self._d) > self.maxsize:
            _, old = self._d.popitem(last=False)
            self.evictions += 1
            old.release()

    def pop(self, key) -> None:
        v = self._d.pop(key, None)
        if v is not None:
            v.release()

    def clear(self) -> None:
        for v in self._d.values():
            v.release()
        self._d.clear()

    def keys(self) -> list:
        return list(self._d)

    def __len__(self) -> int:
        return len(self._d)


# ---- recorders -------------------------------------------------------------------------------
class CpuRecorder:
    """The CPU stand-in of a CUDA graph: ``capture(body)`` runs ``body()`` once with the
    capturing flag set and keeps its result; ``replay()`` runs it again (flag set, as the GPU
    path would have failed at capture) and copies the new results into the captured ones, so
    callers see the static, overwritten outputs a real graph gives."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.body = self.result = None

    runs_on_capture = True  # capture() computes the result (a CUDA capture computes nothing)

    def warmup(self, body):
        """Run ``body()`` eagerly."""
        return body()

    def capture(self, body):
        """Run ``body`` under the flag; return (and keep) its result."""
        with capturing(self.what):
            self.result = body()
        self.body = body
        return self.result

    def replay(self) -> None:
        """Run the body again and write its results into the captured outputs."""
        with capturing(self.what):
            fresh = self.body()
        copy_outputs(self.result, fresh, self.what)

    def release(self) -> None:
        """Drop the body and outputs."""
        self.body = self.result = None


_streams: dict = {}


def _capture_stream(cp, index: int):
    """The side stream gpugrad captures and warms up on, one per device. Shared, because
    CuPy's pool caches a freed block for the stream it was allocated on: the memory of an
    evicted graph is reused by the next capture instead of being stranded on a dead stream.
    Every use first waits for the caller's stream, so reuse is ordered after any replay."""
    s = _streams.get(index)
    if s is None:
        with cp.cuda.Device(index):
            s = _streams[index] = cp.cuda.Stream(non_blocking=True)
    return s


class CudaRecorder:
    """A CUDA graph captured through CuPy on gpugrad's side stream of ``device_index``."""

    def __init__(self, what: str, device_index: int, cp=None) -> None:
        if cp is None:  # tests pass a stand-in of CuPy
            from . import _backend
            cp = _backend._require_cuda(what)
        self.what, self.cp, self.index = what, cp, device_index
        self.stream = _capture_stream(cp, device_index)
        self.graph = self.result = None
        self.keep = []  # every block allocated during the capture: the graph's own pool

    def warmup(self, body):
        """Run ``body()`` eagerly on the side stream (compiles kernels and primes the
        pool of that stream, as the capture will allocate there)."""
        cp = self.cp
        with cp.cuda.Device(self.index):
            current = cp.cuda.get_current_stream()
            self.stream.wait_event(current.record())
            with self.stream:
                out = body()
            current.wait_event(self.stream.record())
        return out

    runs_on_capture = False

    def begin(self, keep: list | None = None) -> None:
        """Start capturing the calling thread's work on the side stream. ``keep``: the
        list that owns the blocks allocated meanwhile (another graph's, to share it)."""
        cp = self.cp
        if keep is not None:
            self.keep = keep
        keep = self.keep
        base = cp.cuda.get_allocator()

        def keeping_malloc(size):
            mem = base(size)
            keep.append(mem)
            return mem

        self._dev = cp.cuda.Device(self.index)
        self._dev.__enter__()
        current = cp.cuda.get_current_stream()
        self.stream.wait_event(current.record())
        self._ctx = [self.stream, cp.cuda.using_allocator(keeping_malloc),
                     capturing(self.what, cuda=True)]
        entered = []
        try:
            for c in self._ctx:
                c.__enter__()
                entered.append(c)
            from . import _cublas
            if _cublas.available():  # create gpugrad's cuBLAS handle, bound to this stream,
                _cublas.prepare(cp)  # now: cublasCreate/SetStream cannot be captured
            self.stream.begin_capture()
        except BaseException:
            for c in reversed(entered):
                c.__exit__(None, None, None)
            self._dev.__exit__(None, None, None)
            raise
        self._caller_stream = current

    def end(self, ok: bool = True) -> None:
        """Stop capturing; with ``ok=False`` (the body raised) discard what was captured."""
        try:
            graph = self.stream.end_capture()
        except Exception:
            if ok:
                raise
            graph = None
        finally:
            for c in reversed(self._ctx):
                c.__exit__(None, None, None)
            self._caller_stream.wait_event(self.stream.record())
            self._dev.__exit__(None, None, None)
        if ok:
            self.graph = graph
        else:
            self.keep = []  # rebinding, not clear(): a pool shared with another graph stays

    def capture(self, body):
        """Capture ``body()`` into a graph (it runs nothing on the device) and keep its
        result: the static outputs every replay overwrites."""
        self.begin()
        try:
            result = body()
        except BaseException as e:
            self.end(ok=False)
            if _is_cuda_error(e):
                raise RuntimeError(
                    f"{self.what}: a CUDA call failed while capturing ({e}). Most often an op "
                    "inside waited for the device or read data-dependent sizes (a bounds "
                    "check, boolean-mask indexing, nonzero) or called a library that cannot "
                    "be captured; such ops must run outside the captured function. Run the "
                    "function uncompiled to find the op (the traceback above names it).") from e
            raise
        self.end()
        self.result = result
        return result

    def replay(self) -> None:
        """Launch the graph on the current stream (after the input copies queued there)."""
        cp = self.cp
        with cp.cuda.Device(self.index):
            self.graph.launch(stream=cp.cuda.get_current_stream())

    def release(self) -> None:
        """Free the graph and the memory it owns (shared memory: once no graph holds it)."""
        self.graph = self.result = None
        self.keep = []


def _is_cuda_error(e: BaseException) -> bool:
    from ._cuda_errors import CudaError, error_types
    if isinstance(e, NotImplementedError):  # CuPy: "... during stream capture is unsupported"
        return "capture" in str(e)
    return isinstance(e, (CudaError,) + error_types()) and not isinstance(e, MemoryError)


def recorder_for(device, what: str):
    """A CudaRecorder for a CUDA device, else a CpuRecorder."""
    if getattr(device, "type", "cpu") == "cuda":
        return CudaRecorder(what, device.index)
    return CpuRecorder(what)


def matmul(x, y):
    """``x @ y`` on CuPy arrays during a capture: cuBLAS on gpugrad's handle (``_cublas``)."""
    from . import _cublas
    return _cublas.matmul(x, y)
