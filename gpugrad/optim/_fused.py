"""Runs one fused update kernel of ``kernels/optim.cu`` in place.

An optimizer must write into the parameter's own memory (views of it, and references held
elsewhere, must see the update), so each kernel is launched with its ``NAME_out`` outputs bound
to the very arrays of its inputs ``NAME``, through the kernel's ``out=`` (gpugrad._kernels):
on CuPy one launch (the ElementwiseKernel, or the vectorized RawKernel for large float32 /
float64 parameters), on NumPy one run of the twin writing into the arrays. This is safe
because the kernel texts read every input before they write any output (kernels/optim.cu;
tests/test_optim.py checks it). float16 parameters are computed in float32 and rounded once
into the parameter's memory.
"""
from __future__ import annotations

from .._kernels import kernels as K

__all__ = ["launch"]


def launch(name: str, args: tuple, outs: tuple) -> None:
    """Run kernel ``name`` on ``args`` (arrays and numbers, in the kernel's input order),
    writing its outputs into the arrays ``outs`` (in its output order), in place."""
    K[name](*args, out=outs)
