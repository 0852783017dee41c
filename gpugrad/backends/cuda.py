"""``gpugrad.backends.cuda``: torch.backends.cuda's matmul switch, ``matmul.allow_tf32``.

``matmul.allow_tf32`` and ``gpugrad.set_float32_matmul_precision`` are one setting, with
torch's rules: ``allow_tf32`` reads True unless the precision is "highest"; setting it True
sets the precision "high", False sets "highest". Only a Python bool is accepted. With TF32
allowed, float32 matmuls on CUDA round their inputs to TF32 (10 explicit mantissa bits) and
accumulate in float32: eager ones through CuPy, captured ones (``gpugrad.compile``) through
gpugrad's cuBLAS handle. A CUDA graph keeps the setting it was captured with. NumPy (CPU)
matmuls are always full precision. See ``_precision.py`` for how each path is switched.
"""
from __future__ import annotations

from . import _precision

__all__ = ["matmul", "cuBLASModule"]


class cuBLASModule:  # noqa: N801 - torch's name
    """torch.backends.cuda.matmul: the cuBLAS settings, as attributes (``allow_tf32``).
    Unknown attributes raise AttributeError, as torch's do."""
    __slots__ = ()

    @property
    def allow_tf32(self) -> bool:
        """True when float32 matmuls on CUDA may use TF32 (precision "high" or "medium")."""
        return _precision.tf32

    @allow_tf32.setter
    def allow_tf32(self, value: bool) -> None:
        _precision.set_tf32(value)

    def __getattr__(self, name):
        raise AttributeError(f"Unknown attribute {name} of gpugrad.backends.cuda.matmul "
                             "(gpugrad supports allow_tf32)")

    def __setattr__(self, name, value):
        if name != "allow_tf32":
            raise AttributeError(f"Unknown attribute {name} of gpugrad.backends.cuda.matmul "
                                 "(gpugrad supports allow_tf32)")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"gpugrad.backends.cuda.matmul(allow_tf32={self.allow_tf32})"


#: torch.backends.cuda.matmul: ``matmul.allow_tf32`` reads and sets TF32 for float32 matmuls.
matmul = cuBLASModule()
