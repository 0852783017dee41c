"""dtypes with PyTorch's names, and PyTorch's type-promotion rules.

A :class:`dtype` wraps a NumPy dtype (CuPy uses the same ones). Promotion follows
torch: categories bool < integer < floating; a dimensioned tensor outranks a
zero-dimensional one, which outranks a Python scalar, unless the lower-ranked
operand belongs to a higher category.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "dtype", "bool", "uint8", "int8", "int16", "int32", "int64", "float16",
    "float32", "float64", "half", "float", "double", "short", "int", "long",
    "get_default_dtype", "set_default_dtype", "promote_types", "result_type",
    "can_cast",
]

_BOOL, _INT, _FLOAT = 0, 1, 2


class dtype:
    """A tensor element type, e.g. ``gpugrad.float32``; compares equal to itself only."""

    __slots__ = ("name", "np", "category", "itemsize")

    def __init__(self, name: str, np_dtype) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        kind = self.np.kind
        self.category = _FLOAT if kind == "f" else (_BOOL if kind == "b" else _INT)
        self.itemsize = self.np.itemsize

    @property
    def is_floating_point(self) -> bool:
        """True for float16, float32 and float64."""
        return self.category == _FLOAT

    @property
    def is_signed(self) -> bool:
        """True unless the dtype is bool or uint8."""
        return self.np.kind in "if"

    @property
    def is_complex(self) -> bool:
        """Always False: gpugrad has no complex dtypes yet."""
        return False

    def __repr__(self) -> str:
        return f"gpugrad.{self.name}"

    def __reduce__(self):
        return (_by_name, (self.name,))


bool = dtype("bool", np.bool_)  # noqa: A001 - torch's name
uint8 = dtype("uint8", np.uint8)
int8 = dtype("int8", np.int8)
int16 = dtype("int16", np.int16)
int32 = dtype("int32", np.int32)
int64 = dtype("int64", np.int64)
float16 = dtype("float16", np.float16)
float32 = dtype("float32", np.float32)
float64 = dtype("float64", np.float64)

half, float, double = float16, float32, float64  # noqa: A001
short, int, long = int16, int32, int64  # noqa: A001

_ALL = (bool, uint8, int8, int16, int32, int64, float16, float32, float64)
_FROM_NUMPY = {d.np: d for d in _ALL}
_NAMES = {d.name: d for d in _ALL}
_NAMES.update(half=float16, float=float32, double=float64, short=int16, int=int32, long=int64)

_default_float = float32


def _by_name(name: str) -> dtype:
    return _NAMES[name]


def get_default_dtype() -> dtype:
    """The dtype of tensors made from Python floats (float32 unless changed)."""
    return _default_float


def set_default_dtype(d: dtype) -> None:
    """Set the default floating dtype; like torch, only float32/float64/float16 are allowed."""
    global _default_float
    d = as_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"set_default_dtype: only floating-point dtypes are allowed, got {d}")
    _default_float = d


def as_dtype(d) -> dtype:
    """Convert a gpugrad dtype, a NumPy dtype, a Python type or a name to a gpugrad dtype."""
    if d.__class__ is dtype:
        return d
    if d is builtins_float:  # torch maps Python's float type to float64, not the default
        return float64
    if d is builtins_int:
        return int64
    if d is builtins_bool:
        return bool
    if isinstance(d, str):
        found = _NAMES.get(d.removeprefix("gpugrad.").removeprefix("torch."))
        if found is not None:
            return found
    try:
        found = _FROM_NUMPY.get(np.dtype(d))
    except TypeError:
        found = None
    if found is None:
        names = ", ".join(x.name for x in _ALL)
        raise TypeError(f"gpugrad has no dtype for {d!r}; supported dtypes are {names}")
    return found


def from_numpy_dtype(np_dtype) -> dtype:
    """The gpugrad dtype of a NumPy/CuPy array dtype (raises TypeError for unsupported ones)."""
    found = _FROM_NUMPY.get(np_dtype)
    if found is None:
        return as_dtype(np_dtype)
    return found


import builtins as _builtins  # noqa: E402

builtins_float, builtins_int, builtins_bool = _builtins.float, _builtins.int, _builtins.bool


def promote_types(a: dtype, b: dtype) -> dtype:
    """torch.promote_types: the smallest dtype both ``a`` and ``b`` cast to safely."""
    if a is b:
        return a
    if a.category != b.category:
        return a if a.category > b.category else b
    return _FROM_NUMPY[np.promote_types(a.np, b.np)]


def _scalar_dtype(x) -> dtype:
    if isinstance(x, builtins_bool) or isinstance(x, np.bool_):
        return bool
    if isinstance(x, (builtins_int, np.integer)):
        return int64
    if isinstance(x, (builtins_float, np.floating)):
        return _default_float
    raise TypeError(f"expected a Tensor or a Python number, got {type(x).__name__}")


def result_type(*operands) -> dtype:
    """torch.result_type over tensors and Python scalars (torch's three-tier rule)."""
    dim = zero = scalar = None
    for x in operands:
        d = getattr(x, "dtype", None)
        if d.__class__ is dtype:
            if x.ndim:
                dim = d if dim is None else promote_types(dim, d)
            else:
                zero = d if zero is None else promote_types(zero, d)
        else:
            s = _scalar_dtype(x)
            scalar = s if scalar is None else promote_types(scalar, s)
    result = dim
    if zero is not None and (result is None or zero.category > result.category):
        result = zero if result is None else promote_types(result, zero)
    if scalar is not None and (result is None or scalar.category > result.category):
        result = scalar
    return result


def can_cast(from_: dtype, to: dtype) -> bool:
    """torch.can_cast: False only when the cast lowers the category (float->int, int->bool)."""
    return from_.category <= to.category
