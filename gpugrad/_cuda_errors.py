"""CUDA failures as clear Python errors: ``gpugrad.cuda.OutOfMemoryError`` and ``CudaError``.

CuPy reports an exhausted device as ``cupy.cuda.memory.OutOfMemoryError``, other failures
(a bad launch, an illegal address) as ``CUDARuntimeError``/``CUDADriverError``/``CUBLASError``,
and a kernel that does not compile as ``cupy.cuda.compiler.CompileException``; none of them
names the gpugrad op that failed or says what to do. gpugrad catches them where
arrays are made (``Function.apply`` around ``forward``, the factories, the backward engine)
and raises its own error, chained to CuPy's. (Kernels of ``kernels/`` turn their own compile
errors into ``KernelSourceError`` naming the source line, in ``_kernels.py``; the compile case
here catches the rest: CuPy's internal kernels, a user's RawKernel inside a custom Function.)

The CuPy classes are looked up lazily: ``except error_types() as e`` evaluates
``error_types()`` only when an exception is already propagating, so the success path costs
nothing, and a process that never touched CUDA gets ``()`` without importing CuPy.
"""
from __future__ import annotations

import functools

from . import _backend

__all__ = ["OutOfMemoryError", "CudaError", "error_types", "translate", "guard"]


class OutOfMemoryError(RuntimeError, MemoryError):
    """The device ran out of memory (torch.cuda.OutOfMemoryError; also a MemoryError, as
    CuPy's is). Attributes: ``op``, ``device``, ``requested_bytes``, ``allocated_bytes``,
    ``reserved_bytes``, ``free_bytes``, ``total_bytes`` (None where unknown)."""

    op = device = requested_bytes = allocated_bytes = reserved_bytes = None
    free_bytes = total_bytes = None


class CudaError(RuntimeError):
    """A CUDA call failed (a kernel launch, a cuBLAS call, an earlier asynchronous error).
    Attributes: ``op`` and ``status`` (CUDA's error code, None where unknown)."""

    op = status = None


_OOM, _OTHER, _COMPILE = "oom", "other", "compile"
# Status codes that mean "out of memory" in each CuPy error family.
_OOM_STATUS = {"CUDARuntimeError": 2,   # cudaErrorMemoryAllocation
               "CUDADriverError": 2,    # CUDA_ERROR_OUT_OF_MEMORY
               "CUBLASError": 3}        # CUBLAS_STATUS_ALLOC_FAILED

_types: tuple | None = None
_kinds: dict = {}


def _collect() -> tuple:
    """CuPy's error classes that can be imported here, each with how to read it."""
    import importlib
    found = {}
    for module, name, kind in (("cupy.cuda.memory", "OutOfMemoryError", _OOM),
                               ("cupy_backends.cuda.api.runtime", "CUDARuntimeError", _OTHER),
                               ("cupy_backends.cuda.api.driver", "CUDADriverError", _OTHER),
                               ("cupy_backends.cuda.libs.cublas", "CUBLASError", _OTHER),
                               ("cupy_backends.cuda.libs.curand", "CURANDError", _OTHER),
                               ("cupy_backends.cuda.libs.cusolver", "CUSOLVERError", _OTHER),
                               ("cupy.cuda.compiler", "CompileException", _COMPILE),
                               ("cupy_backends.cuda.libs.nvrtc", "NVRTCError", _COMPILE)):
        try:
            cls = getattr(importlib.import_module(module), name)
        except Exception:  # an older or newer CuPy without it: nothing to translate
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found[cls] = kind
    return found


def error_types() -> tuple:
    """The CuPy exception classes gpugrad translates; ``()`` until CuPy is in use."""
    global _types, _kinds
    if _types is None:
        if _backend._cupy is None:  # CUDA never found usable: no CuPy error can occur
            return ()
        _kinds = _collect()
        _types = tuple(_kinds)
    return _types


def _op_name(op) -> str:
    if isinstance(op, str):
        return op
    return getattr(op, "_op_name", None) or getattr(op, "__name__", None) or str(op)


def _fmt(n) -> str:
    if n is None:
        return "an unknown number of bytes"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def _requested(e):
    size = getattr(e, "_size", None)  # cupy.cuda.memory.OutOfMemoryError(size, total, limit)
    if size is None and e.args and isinstance(e.args[0], int):
        size = e.args[0]
    return size


def _device_state():
    """(device index, pool bytes in use, pool bytes reserved, device free, device total);
    None for what cannot be read (the failure may have left the context unusable)."""
    cp = _backend._cupy
    index = used = reserved = free = total = None
    if cp is None:
        return index, used, reserved, free, total
    try:
        index = cp.cuda.runtime.getDevice()
        pool = cp.get_default_memory_pool()
        used, reserved = pool.used_bytes(), pool.total_bytes()
        free, total = cp.cuda.runtime.memGetInfo()
    except Exception:
        pass
    return index, used, reserved, free, total


def translate(e: BaseException, op) -> BaseException:
    """gpugrad's error for CuPy's exception ``e`` raised while running ``op`` (a Function
    class or a name). Raise it ``from e``."""
    name = _op_name(op)
    kind = _OTHER
    for cls, k in _kinds.items():
        if isinstance(e, cls):
            kind = k
            if k == _OTHER and getattr(e, "status", None) == _OOM_STATUS.get(cls.__name__):
                kind = _OOM
            break
    if kind == _OOM:
        return _oom(e, name)
    status = getattr(e, "status", None)
    if kind == _COMPILE:
        log = e.get_message() if hasattr(e, "get_message") else str(e)
        err = CudaError(
            f"{name}: a CUDA kernel failed to compile (NVRTC): {log.strip()}\nThe kernel source "
            "is CuPy's or a custom kernel's (gpugrad's own kernels report their source line): "
            "check the kernel's code and the dtypes it was called with.")
        err.op, err.status = name, status
        return err
    err = CudaError(
        f"{name}: CUDA error: {e}. CUDA reports some errors asynchronously, so the kernel at "
        "fault may belong to an earlier op: rerun with CUDA_LAUNCH_BLOCKING=1 to stop at the "
        "failing launch. After an illegal memory access the CUDA context is unusable; restart "
        "the process.")
    err.op, err.status = name, status
    return err


def _oom(e, name) -> OutOfMemoryError:
    requested = _requested(e)
    index, used, reserved, free, total = _device_state()
    where = f"cuda:{index}" if index is not None else "the CUDA device"
    usage = ""
    if used is not None:
        usage = (f" CuPy's memory pool holds {_fmt(used)} in arrays "
                 f"(gpugrad.cuda.memory_allocated()) and has {_fmt(reserved)} reserved "
                 "(gpugrad.cuda.memory_reserved())")
        if free is not None:
            usage += f"; the device has {_fmt(free)} free of {_fmt(total)}"
        usage += "."
    err = OutOfMemoryError(
        f"{name}: CUDA out of memory on {where}: tried to allocate {_fmt(requested)}."
        f"{usage} To go on: free tensors you no longer need (del them, and drop outputs whose "
        "graph you will not backward through), call gpugrad.cuda.empty_cache() to return "
        "cached blocks to the device, or use a smaller batch.")
    err.op, err.device = name, where
    err.requested_bytes, err.allocated_bytes, err.reserved_bytes = requested, used, reserved
    err.free_bytes, err.total_bytes = free, total
    return err


def guard(fn, op: str | None = None):
    """``fn`` with CuPy's errors translated, naming ``op`` (default: ``fn.__name__``)."""
    name = op or fn.__name__

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except error_types() as e:
            raise translate(e, name) from e

    return guarded
