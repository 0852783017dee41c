"""Helpers shared by the op modules: array module, dtype preparation, dims, results."""
from __future__ import annotations

import numbers

import numpy as np

from .. import _dtypes
from .._tensor import Tensor, _wrap_dim
from ..autograd import grad_mode as _grad_mode

_ndarray = np.ndarray
make = Tensor._make
_grad_state = _grad_mode.state


def xp_of(a):
    """numpy or cupy, whichever module owns array ``a``."""
    if a.__class__ is _ndarray:
        return np
    import cupy
    return cupy


_PY_SCALARS = (float, int, bool)


def is_scalar(x) -> bool:
    """A Python (or NumPy) number that ops accept in place of a tensor."""
    if x.__class__ in _PY_SCALARS:
        return True
    if isinstance(x, Tensor):  # before the ABC check of numbers.Number, which is slow
        return False
    return isinstance(x, (numbers.Number, np.generic))


def check_operand(op: str, x, position: str):
    """Reject operands that are neither tensors nor numbers, naming the op."""
    if not isinstance(x, Tensor) and not is_scalar(x):
        raise TypeError(f"{op}(): argument '{position}' must be a Tensor or a number, not "
                        f"{type(x).__name__}")


def binary_arrays(op: str, a, b):
    """Arrays (or Python scalars) for a binary op, cast to the promoted dtype as torch would,
    and that dtype.

    Scalars stay Python numbers: NumPy and CuPy treat them as weakly typed (NEP 50), which
    matches torch's rule that a scalar never widens a tensor of its own category.
    """
    # Fast paths for the common cases: two tensors of one dtype; a float tensor and a float
    # or int scalar. Everything else takes torch's full promotion rule.
    if isinstance(a, Tensor):
        x = a._data
        if isinstance(b, Tensor):
            y = b._data
            if x.shape != y.shape:
                check_broadcast(op, x.shape, y.shape)
            if x.dtype == y.dtype:
                return x, y, _dtypes.from_numpy_dtype(x.dtype)
        elif (b.__class__ is float or b.__class__ is int) and x.dtype.kind == "f":
            return x, b, _dtypes.from_numpy_dtype(x.dtype)
    elif isinstance(b, Tensor) and (a.__class__ is float or a.__class__ is int) and \
            b._data.dtype.kind == "f":
        return a, b._data, _dtypes.from_numpy_dtype(b._data.dtype)
    check_operand(op, a, "input")
    check_operand(op, b, "other")
    dt = _dtypes.result_type(a, b)
    return _cast(a, dt), _cast(b, dt), dt


def check_broadcast(op: str, sa: tuple, sb: tuple) -> None:
    """torch's error for shapes that do not broadcast, naming the op and both shapes."""
    n = max(len(sa), len(sb))
    for k in range(1, min(len(sa), len(sb)) + 1):
        x, y = sa[-k], sb[-k]
        if x != y and x != 1 and y != 1:
            raise RuntimeError(f"{op}: the size of tensor a ({x}) must match the size of tensor "
                               f"b ({y}) at non-singleton dimension {n - k} (shapes {list(sa)} "
                               f"and {list(sb)} do not broadcast)")


def _cast(x, dt):
    if isinstance(x, Tensor):
        arr = x._data
        return arr if arr.dtype == dt.np else arr.astype(dt.np)
    if dt.category == 2:
        return float(x)
    if dt.category == 1:
        return int(x)
    return bool(x)


def float_array(x: Tensor):
    """The data of ``x`` as floating point (ints and bools go to the default float dtype)."""
    arr = x._data
    if arr.dtype.kind == "f":
        return arr
    return arr.astype(_dtypes.get_default_dtype().np)


def arr(x):
    """The array of a tensor, or the number itself."""
    return x._data if isinstance(x, Tensor) else x


def dims(dim, ndim: int, op: str) -> tuple:
    """Normalize ``dim`` (None, an int, or a sequence of ints) to a sorted tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (int, np.integer)):
        dim = (dim,)
    out = tuple(sorted(_wrap_dim(int(d), ndim, op) for d in dim))
    if len(set(out)) != len(out):
        raise RuntimeError(f"{op}: dim {tuple(dim)} appears multiple times in the list of dims")
    # torch: an empty dim list reduces over everything; a 0-d tensor accepts dim 0 (or -1),
    # which is the whole tensor (the arrays have no axis for it)
    if not out or ndim == 0:
        return tuple(range(ndim))
    return out


wrap_dim = _wrap_dim


# ---- the fused backward kernels, called directly ------------------------------------------------
_direct_kernels: dict = {}


def kernel_call(fn_cls, g: Tensor, s: Tensor) -> Tensor:
    """``fn_cls.call(g, s)`` for a fused backward Function of two tensors (``ops/fused.py``),
    with the eager hot path cut short: when nothing is recorded and both are NumPy arrays of
    one shape and dtype, the kernel runs directly on the two arrays (no argument lists, no
    tuple checks). Anything else goes through ``fn_cls.call``."""
    if not _grad_state.enabled:
        a, b = g._data, s._data
        if (a.__class__ is _ndarray and b.__class__ is _ndarray and a.shape == b.shape
                and a.dtype is b.dtype):
            kernel = _direct_kernels.get(fn_cls)
            if kernel is None:
                from .._kernels import kernels as K
                kernel = _direct_kernels[fn_cls] = getattr(K, fn_cls.kernel)
            out = kernel(a, b)
            return make(out)
    return fn_cls.call(g, s)
