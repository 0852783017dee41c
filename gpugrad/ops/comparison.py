"""Comparisons and logical ops: they return bool tensors and are never differentiated."""
from __future__ import annotations

from .._tensor import Tensor
from ._util import binary_arrays, make, xp_of


def _compare(name, ufunc):
    def op(input, other):
        x, y, _ = binary_arrays(name, input, other)
        _check_devices(name, input, other)
        xp = xp_of(x) if isinstance(input, Tensor) else xp_of(y)
        return make(getattr(xp, ufunc)(x, y))
    op.__name__ = name
    op.__doc__ = f"Elementwise ``{ufunc}`` of two tensors (or a tensor and a number), as bool."
    return op


def _check_devices(name, a, b):
    if isinstance(a, Tensor) and isinstance(b, Tensor) and \
            a._data.__class__ is not b._data.__class__:
        raise RuntimeError(f"{name}: expected all tensors to be on the same device, but found "
                           f"{a.device} and {b.device}")


eq = _compare("eq", "equal")
ne = _compare("ne", "not_equal")
lt = _compare("lt", "less")
le = _compare("le", "less_equal")
gt = _compare("gt", "greater")
ge = _compare("ge", "greater_equal")
logical_and = _compare("logical_and", "logical_and")
logical_or = _compare("logical_or", "logical_or")
logical_xor = _compare("logical_xor", "logical_xor")
greater, greater_equal, less, less_equal, not_equal = gt, ge, lt, le, ne


def _bitwise(name, ufunc):
    def op(input, other):
        x, y, dt = binary_arrays(name, input, other)
        _check_devices(name, input, other)
        if dt.category == 2:
            raise RuntimeError(f"\"{name}\" is not implemented for floating point tensors "
                               f"({dt}); use logical_{name.split('_')[-1]} or integer tensors")
        xp = xp_of(x) if isinstance(input, Tensor) else xp_of(y)
        return make(getattr(xp, ufunc)(x, y))
    op.__name__ = name
    op.__doc__ = f"Elementwise ``{ufunc}`` of bool or integer tensors."
    return op


bitwise_and = _bitwise("bitwise_and", "bitwise_and")
bitwise_or = _bitwise("bitwise_or", "bitwise_or")
bitwise_xor = _bitwise("bitwise_xor", "bitwise_xor")


def logical_not(input: Tensor) -> Tensor:
    """Elementwise NOT (True where ``input`` is zero)."""
    return make(xp_of(input._data).logical_not(input._data))


def bitwise_not(input: Tensor) -> Tensor:
    """``~input``: NOT for bool tensors, bitwise complement for integers."""
    if input._data.dtype.kind == "f":
        raise RuntimeError(f"bitwise_not is not implemented for floating point tensors "
                           f"({input.dtype})")
    return make(xp_of(input._data).invert(input._data))


def isnan(input: Tensor) -> Tensor:
    """True where ``input`` is NaN."""
    return make(xp_of(input._data).isnan(input._data))


def isinf(input: Tensor) -> Tensor:
    """True where ``input`` is +inf or -inf."""
    return make(xp_of(input._data).isinf(input._data))


def isfinite(input: Tensor) -> Tensor:
    """True where ``input`` is neither inf nor NaN."""
    return make(xp_of(input._data).isfinite(input._data))


def isclose(input: Tensor, other: Tensor, rtol=1e-05, atol=1e-08, equal_nan=False) -> Tensor:
    """True where ``|input - other| <= atol + rtol * |other|``."""
    x, y, _ = binary_arrays("isclose", input, other)
    _check_devices("isclose", input, other)  # NumPy and CuPy arrays do not mix
    return make(xp_of(x).isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan))


def allclose(input: Tensor, other: Tensor, rtol=1e-05, atol=1e-08, equal_nan=False) -> bool:
    """True when every element is close (see ``isclose``)."""
    return bool(isclose(input, other, rtol, atol, equal_nan)._data.all())


def equal(input: Tensor, other: Tensor) -> bool:
    """True when both tensors have the same shape and elements."""
    _check_devices("equal", input, other)
    return input.shape == other.shape and bool((input._data == other._data).all())


__all__ = ["eq", "ne", "lt", "le", "gt", "ge", "greater", "greater_equal", "less", "less_equal",
           "not_equal", "logical_and", "logical_or", "logical_xor", "logical_not", "bitwise_and",
           "bitwise_or", "bitwise_xor", "bitwise_not", "isnan", "isinf", "isfinite", "isclose",
           "allclose", "equal"]
