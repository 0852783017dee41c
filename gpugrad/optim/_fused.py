"""Runs one fused update kernel of ``kernels/optim.cu`` in place.

The kernel language gives each kernel fresh output arrays; an optimizer must write into the
parameter's own memory (views of it, and references held elsewhere, must see the update). So:

- on CuPy, the kernel is launched once with its outputs bound to the very arrays it reads
  (``p_out`` is ``p``): CuPy copies an input only when it overlaps an output that is a
  *different* array object, so passing the same object is a true in-place launch. The kernel
  texts read every input before they write any output (kernels/optim.cu), which keeps that
  safe even though CuPy binds inputs by reference;
- on NumPy, the kernel's twin computes the new values and they are copied back.

float16 parameters on CuPy take the NumPy-style route too (the kernel computes in float32 and
returns float16 arrays, copied back), since an in-place float16 launch would compute in half.
"""
from __future__ import annotations

import threading

import numpy as np

from .._kernels import kernels as K

__all__ = ["launch"]

_ndarray = np.ndarray
_inplace_cupy: dict = {}
_lock = threading.Lock()
_FAST = (np.dtype(np.float32), np.dtype(np.float64))


def _cupy_kernel(name: str):
    """The CuPy ElementwiseKernel of ``name`` whose outputs the caller passes in."""
    k = _inplace_cupy.get(name)
    if k is None:
        with _lock:
            k = _inplace_cupy.get(name)
            if k is None:
                import cupy
                d = K[name].definition
                k = _inplace_cupy[name] = cupy.ElementwiseKernel(
                    d.in_params, d.out_params, d.cuda_operation, d.name + "_inplace")
    return k


def launch(name: str, args: tuple, outs: tuple) -> None:
    """Run kernel ``name`` on ``args`` (arrays and numbers, in the kernel's input order),
    writing its outputs into the arrays ``outs`` (in its output order), in place."""
    first = outs[0]
    if first.__class__ is not _ndarray and first.dtype in _FAST:
        try:
            _cupy_kernel(name)(*args, *outs)
            return
        except Exception as e:  # a compile error names the kernel's line in kernels/optim.cu
            from cupy.cuda.compiler import CompileException

            from .._kernels import compile_error
            if isinstance(e, CompileException):
                raise compile_error(K[name].definition, e) from e
            raise
    res = K[name](*args)
    if len(outs) == 1:
        res = (res,)
    copyto = np.copyto if first.__class__ is _ndarray else _cupy_copyto()
    for out, r in zip(outs, res):
        copyto(out, r)


def _cupy_copyto():
    import cupy
    return cupy.copyto
