"""Matrix products on cuBLAS through NVIDIA's ``nvmath-python`` bindings, on gpugrad's own
handle, for CUDA graph captures.

Why: CuPy refuses every cuBLAS call while a stream captures (``NotImplementedError``), on
its own handles and on private ones, so ``cupy.matmul`` cannot be part of a CUDA graph.
``nvmath.bindings.cublas`` calls the library directly; a handle bound to the current stream,
with a workspace set before the capture, records into the graph and replays exactly
(../shared/GPU_NOTES.md, measured on an H100).

Used only while capturing (``_capture.cuda_capturing``, read by ``ops/linalg.py``). The
notes measured the direct call cheaper than ``cupy.matmul`` in eager mode too (19.6 us against
32.8 us of host time for a 64x784 @ 784x256 product), but gpugrad's eager matmul stays on
CuPy until a benchmark of gpugrad's own path shows the gain: ``EAGER = False`` below.

Layout: cuBLAS is column-major. A row-major (m, k) @ (k, n) product C = A B is computed as
the column-major C^T = B^T A^T; a C-contiguous operand is passed untransposed with its row
length as leading dimension, an F-contiguous one (a ``.mT`` view, as every backward makes)
transposed with its column length, so neither is copied. Other layouts, batches and 1-D
operands are made contiguous (a captured copy kernel) and batches use the strided-batched
GEMM. float32 and float64 only; other dtypes raise.

Precision: the handle's math mode follows ``gpugrad.backends.cuda.matmul.allow_tf32``
(``TF32_TENSOR_OP_MATH`` when allowed, which makes ``sgemm`` round its inputs to TF32, else
``DEFAULT_MATH``), set when the handle is next taken after the flag changed: ``prepare()``
before a capture, so a captured graph keeps the precision it was captured with.
"""
from __future__ import annotations

import threading

import numpy as np

from .backends import _precision

__all__ = ["available", "prepare", "matmul", "EAGER"]

EAGER = False  # use cuBLAS directly outside captures too (off: not yet measured in gpugrad)
_WORKSPACE = 32 << 20  # bytes; cuBLAS' recommendation on Hopper
_lock = threading.Lock()
# device index -> [handle, workspace array, bound stream pointer, TF32 math mode set (bool)]
_handles: dict = {}
_nv = None
_ONE = {np.dtype(np.float32): np.array(1, np.float32),
        np.dtype(np.float64): np.array(1, np.float64)}
_ZERO = {k: np.zeros((), k) for k in _ONE}


def _bindings():
    """``nvmath.bindings.cublas``, imported on first use, with a clear error if missing."""
    global _nv
    if _nv is None:
        try:
            from nvmath.bindings import cublas
        except Exception as e:
            raise RuntimeError(
                "matmul inside a CUDA graph capture needs nvmath-python (CuPy refuses cuBLAS "
                "calls during a capture): pip install nvmath-python, or install gpugrad "
                "with the cuda12/cuda13 extra, which brings it") from e
        _nv = cublas
    return _nv


def available() -> bool:
    """True when nvmath-python's cuBLAS bindings import."""
    try:
        _bindings()
        return True
    except RuntimeError:
        return False


def _handle(cp):
    """gpugrad's cuBLAS handle of the current device, bound to the current stream."""
    cublas = _bindings()
    index = cp.cuda.runtime.getDevice()
    entry = _handles.get(index)
    if entry is None:
        with _lock:
            entry = _handles.get(index)
            if entry is None:
                h = cublas.create()  # before a capture: see prepare()
                ws = cp.empty(_WORKSPACE, dtype=cp.uint8)
                cublas.set_workspace(h, ws.data.ptr, _WORKSPACE)
                entry = _handles[index] = [h, ws, None, None]
    stream = cp.cuda.get_current_stream().ptr
    if entry[2] != stream:
        cublas.set_stream(entry[0], stream)
        entry[2] = stream
    if entry[3] is not _precision.tf32:  # the TF32 flag changed since this handle was set
        _set_math_mode(cublas, entry)
    return entry[0]


def _set_math_mode(cublas, entry) -> None:
    """Give the handle of ``entry`` the math mode of ``allow_tf32``: TF32 tensor cores for
    sgemm, or cuBLAS' default (full fp32). A host-side setting of the handle: no stream work,
    so it may also run while a capture records."""
    tf32 = _precision.tf32
    cublas.set_math_mode(entry[0], cublas.Math.TF32_TENSOR_OP_MATH if tf32
                         else cublas.Math.DEFAULT_MATH)
    entry[3] = tf32


def prepare(cp) -> None:
    """Create the current device's handle and workspace, and bind the handle to the current
    stream: done before a capture begins, since those calls cannot be captured."""
    _handle(cp)


def _operand(xp, a):
    """(array, transposed?, leading dimension) of a 2-D operand, without copying when it
    is C- or F-contiguous."""
    if a.flags.c_contiguous:
        return a, False, a.shape[1]
    if a.flags.f_contiguous:
        return a, True, a.shape[0]
    a = xp.ascontiguousarray(a)
    return a, False, a.shape[1]


def matmul(x, y):
    """``x @ y`` for CuPy arrays (torch.matmul's 1-D and broadcasting rules) on cuBLAS."""
    cublas = _bindings()  # first: without nvmath-python, say so (not that cupy is missing)
    import cupy as cp
    return _matmul(x, y, cp, cublas, lambda: _handle(cp), lambda a: a.data.ptr)


def _matmul(x, y, xp, cublas, handle, ptr):
    """The product on the BLAS ``cublas`` (nvmath's bindings, or a stand-in in tests) for
    arrays of ``xp``; ``handle()`` gives the handle, ``ptr(a)`` an array's address."""
    if x.dtype != y.dtype or x.dtype not in _ONE:
        raise RuntimeError(f"matmul inside a CUDA graph capture supports float32 and float64 "
                           f"operands of one dtype, got {x.dtype} and {y.dtype}; compute it "
                           "outside the captured function or cast the operands")
    dt = x.dtype
    one, zero = _ONE[dt].ctypes.data, _ZERO[dt].ctypes.data
    xv, yv = x.ndim == 1, y.ndim == 1
    a = x[None, :] if xv else x
    b = y[:, None] if yv else y
    N, T = cublas.Operation.N, cublas.Operation.T
    if a.ndim == 2 and b.ndim == 2:
        m, k = a.shape
        n = b.shape[1]
        out = xp.empty((m, n), dtype=dt)
        if m and n:
            if k == 0:
                out[...] = 0
            else:
                a, ta, lda = _operand(xp, a)
                b, tb, ldb = _operand(xp, b)
                gemm = cublas.sgemm if dt == np.float32 else cublas.dgemm
                # column-major C^T (n x m) = op(B)^T-as-stored . op(A)^T-as-stored
                gemm(handle(), T if tb else N, T if ta else N, n, m, k, one, ptr(b), ldb,
                     ptr(a), lda, zero, ptr(out), n)
    else:
        batch = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
        m, k = a.shape[-2:]
        n = b.shape[-1]
        a = xp.ascontiguousarray(xp.broadcast_to(a, batch + (m, k)))
        b = xp.ascontiguousarray(xp.broadcast_to(b, batch + (k, n)))
        count = int(np.prod(batch, dtype=np.int64))
        out = xp.empty(batch + (m, n), dtype=dt)
        if out.size:
            if k == 0:
                out[...] = 0
            else:
                sb = cublas.sgemm_strided_batched if dt == np.float32 else \
                    cublas.dgemm_strided_batched
                sb(handle(), N, N, n, m, k, one, ptr(b), n, k * n, ptr(a), k, m * k, zero,
                   ptr(out), n, m * n, count)
    if xv:
        out = out[..., 0, :]
    if yv:
        out = out[..., 0]
    return out
