"""Runs one fused update kernel of ``kernels/optim.cu`` in place.

An optimizer must write into the parameter's own memory (views of it, and references held
elsewhere, must see the update), so each kernel is launched with its ``NAME_out`` outputs bound
to the very arrays of its inputs ``NAME``, through the kernel's ``out=`` (gpugrad._kernels):
on CuPy one launch (the ElementwiseKernel, or the vectorized RawKernel for large float32 /
float64 parameters), on NumPy one run of the twin writing into the arrays. This is safe
because the kernel texts read every input before they write any output (kernels/optim.cu;
tests/test_optim.py checks it). float16 parameters are computed in float32 and rounded once
into the parameter's memory.

``launch_at_step`` runs the ``_capturable_`` kernels, which also read the step count from a
0-d array on the parameter's device (capturable=True: no host read of the count, so a CUDA
graph replay uses the current one).
"""
from __future__ import annotations

import numpy as np

from .._kernels import kernels as K

__all__ = ["launch", "launch_at_step"]

_F32 = np.dtype(np.float32)


def launch(name: str, args: tuple, outs: tuple) -> None:
    """Run kernel ``name`` on ``args`` (arrays and numbers, in the kernel's input order),
    writing its outputs into the arrays ``outs`` (in its output order), in place."""
    K[name](*args, out=outs)


def launch_at_step(name: str, arrays: tuple, step, scalars: tuple, outs: tuple) -> None:
    """Run kernel ``name`` on ``arrays`` (its array inputs before the step count), ``step``
    (the count: a 0-d array on their device, of any float dtype) and ``scalars``, writing its
    outputs into ``outs`` (arrays among ``arrays``), in place.

    The kernel's arrays share one dtype T, so the count is passed as a T array (float64: the
    float32 count converted exactly, one tiny cast on the device). A float16 parameter is
    computed in float32 (its arrays converted, the count as it is) and rounded once into its
    memory, as ``launch`` does: a float16 count would be inexact beyond 2048 steps."""
    dtype = arrays[0].dtype
    compute = _F32 if dtype.itemsize < 4 else dtype
    if step.dtype != compute:
        step = step.astype(compute)
    if dtype == compute:
        K[name](*arrays, step, *scalars, out=outs)
        return
    work = {id(a): a.astype(compute) for a in arrays}
    K[name](*(work[id(a)] for a in arrays), step, *scalars,
            out=tuple(work[id(o)] for o in outs))
    for o in outs:
        o[...] = work[id(o)]
