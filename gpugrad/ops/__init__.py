"""Differentiable operations, one module per family, and their binding to ``Tensor``.

Each public function here is also a ``Tensor`` method (``x.exp()``) and, where Python has
one, an operator (``x * y``). The binding lives in this one place so that the op modules
stay plain functions and Functions.
"""
from __future__ import annotations

from .._tensor import Tensor
from . import comparison, conversion, elementwise, indexing, inplace, linalg, reduction, shape
from ._util import is_scalar
from .comparison import *  # noqa: F401,F403
from .conversion import clone, contiguous, to_copy  # noqa: F401
from .elementwise import (Abs, Exp, Relu, Sigmoid, Tanh, abs, absolute, add, clamp,  # noqa: F401
                          clamp_max, clamp_min, clip, cos, div, divide, elu, erf, exp, expm1,
                          floor_divide, fmax, fmin, gelu, leaky_relu, lerp, log, log1p, log2,
                          log10, maximum, minimum, mul, multiply, neg, negative, pow,
                          reciprocal, relu, remainder, rsqrt, rsub, sigmoid, sign, silu, sin,
                          softplus, sqrt, square, sub, subtract, tan, tanh, true_divide, where)
from .inplace import apply_inplace, copy_, fill_, setitem, zero_  # noqa: F401
from .linalg import bmm, dot, ger, inner, matmul, mm, mv, outer, vdot  # noqa: F401
from .reduction import (all, amax, amin, any, argmax, argmin, count_nonzero, cumsum,  # noqa
                        logsumexp, log_softmax, max, mean, min, norm, prod, softmax, std,
                        std_mean, sum, var, var_mean)
from .indexing import (index_copy, masked_scatter)  # noqa: F401
from .indexing import (argwhere, gather, getitem, index_add, index_fill,  # noqa: F401
                       index_put, index_put_, index_select, masked_fill, masked_select,
                       nonzero, scatter, scatter_add, take)
from .shape import (broadcast_to, expand, flip, permute, reshape,  # noqa: F401
                    squeeze, sum_to_size, swapaxes, swapdims, t, transpose, unsqueeze, view)
from .shape import (expand_as, flatten, movedim, moveaxis, narrow, repeat,  # noqa: F401
                    reshape_as, roll, select, tile, unflatten, view_as)
from .join import cat, chunk, concat, concatenate, split, stack, unbind  # noqa: F401
from .join import (atleast_1d, atleast_2d, atleast_3d, column_stack, dsplit,  # noqa: F401
                   dstack, hsplit, hstack, row_stack, tensor_split, vsplit, vstack)
from .triangular import diagonal, trace, tril, triu  # noqa: F401


def _operand_ok(x) -> bool:
    return isinstance(x, Tensor) or is_scalar(x)


# operands that need no further check (Tensor subclasses and NumPy numbers take _operand_ok)
_PLAIN_OPERANDS = frozenset((Tensor, float, int, bool))


def _binary(fn, reflected=False):
    """An operator method: NotImplemented for foreign operands, so Python can try the other.

    The four arithmetic operators call their Function's apply directly, with the arguments
    their function passes (``x + y`` is ``add(x, y)`` is ``Add.apply(x, y, 1)``): operators
    are the hottest path of eager code, and each Python call layer costs."""
    plain = _PLAIN_OPERANDS
    # the Function class, not its bound apply: apply is looked up at each call, as the
    # functions do (a patched Function.apply, as tests install, must see operators too)
    with_alpha = {add: elementwise.Add, sub: elementwise.Sub}.get(fn)
    direct = {mul: elementwise.Mul, div: elementwise.Div}.get(fn)
    if with_alpha is not None and reflected:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return with_alpha.apply(other, self, 1)
            return NotImplemented
    elif with_alpha is not None:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return with_alpha.apply(self, other, 1)
            return NotImplemented
    elif direct is not None and reflected:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return direct.apply(other, self)
            return NotImplemented
    elif direct is not None:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return direct.apply(self, other)
            return NotImplemented
    elif reflected:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return fn(other, self)
            return NotImplemented
    else:
        def method(self, other):
            if other.__class__ in plain or _operand_ok(other):
                return fn(self, other)
            return NotImplemented
    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def _inplace_method(fn, name):
    def method(self, *args, **kwargs):
        return apply_inplace(self, name, fn, *args, **kwargs)
    method.__name__ = name
    method.__doc__ = f"In-place version of ``{fn.__name__}``; returns self."
    return method


def _inplace_operator(fn, name):
    def method(self, other):
        if not _operand_ok(other):
            return NotImplemented
        return apply_inplace(self, name, fn, other)
    method.__name__ = name
    return method


_METHODS = {
    # elementwise
    "add": add, "sub": sub, "subtract": sub, "mul": mul, "multiply": mul, "div": div,
    "divide": div, "true_divide": div, "floor_divide": floor_divide, "remainder": remainder,
    "pow": pow, "neg": neg, "negative": neg, "exp": exp, "log": log, "log2": log2,
    "log10": log10, "log1p": log1p, "expm1": expm1, "sqrt": sqrt, "rsqrt": rsqrt, "abs": abs,
    "absolute": abs, "sign": sign, "sin": sin, "cos": cos, "tan": tan, "tanh": tanh,
    "sigmoid": sigmoid, "relu": relu, "erf": erf, "reciprocal": reciprocal, "square": square,
    "clamp": clamp, "clip": clamp, "clamp_min": clamp_min, "clamp_max": clamp_max,
    "maximum": maximum, "minimum": minimum, "lerp": lerp,
    "where": lambda self, condition, other: where(condition, self, other),
    # comparison and logic
    "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge, "greater": gt,  # noqa: F405
    "greater_equal": ge, "less": lt, "less_equal": le, "not_equal": ne,  # noqa: F405
    "logical_and": logical_and, "logical_or": logical_or,  # noqa: F405
    "logical_xor": logical_xor, "logical_not": logical_not,  # noqa: F405
    "isnan": isnan, "isinf": isinf, "isfinite": isfinite, "isclose": isclose,  # noqa: F405
    "allclose": allclose, "equal": equal,  # noqa: F405
    # reductions
    "sum": sum, "mean": mean, "prod": prod, "max": max, "min": min, "amax": amax,
    "amin": amin, "argmax": argmax, "argmin": argmin, "var": var, "std": std,
    "logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax, "norm": norm,
    "cumsum": cumsum, "all": all, "any": any, "count_nonzero": count_nonzero,
    # linear algebra
    "matmul": matmul, "mm": mm, "bmm": bmm, "mv": mv, "dot": dot, "outer": outer, "ger": outer,
    "inner": dot,
    # shape
    "reshape": reshape, "view": view, "expand": expand, "broadcast_to": broadcast_to,
    "sum_to_size": sum_to_size, "permute": permute, "transpose": transpose,
    "swapaxes": transpose, "swapdims": transpose, "t": t, "squeeze": squeeze,
    "unsqueeze": unsqueeze, "flip": flip,
    "expand_as": expand_as, "view_as": view_as, "reshape_as": reshape_as, "flatten": flatten,
    "unflatten": unflatten, "movedim": movedim, "moveaxis": movedim, "narrow": narrow,
    "select": select, "repeat": repeat, "tile": tile, "roll": roll, "split": split,
    "chunk": chunk, "unbind": unbind, "diagonal": diagonal, "trace": trace, "tril": tril,
    "triu": triu, "tensor_split": tensor_split, "hsplit": hsplit, "vsplit": vsplit,
    "dsplit": dsplit,
    # copies
    "clone": clone, "contiguous": contiguous,
    # in place
    "fill_": fill_, "zero_": zero_, "copy_": copy_, "__setitem__": setitem,
    # indexing
    "gather": gather, "scatter": scatter, "scatter_add": scatter_add,
    "index_select": index_select, "index_add": index_add, "index_fill": index_fill,
    "masked_fill": masked_fill, "masked_select": masked_select, "take": take,
    "index_copy": index_copy, "masked_scatter": masked_scatter,
    "nonzero": nonzero, "argwhere": argwhere, "index_put": index_put,
}

_INPLACE = {
    "add_": add, "sub_": sub, "subtract_": sub, "mul_": mul, "multiply_": mul, "div_": div,
    "divide_": div, "true_divide_": div, "floor_divide_": floor_divide,
    "remainder_": remainder, "pow_": pow, "neg_": neg, "negative_": neg, "exp_": exp,
    "log_": log, "log1p_": log1p, "expm1_": expm1, "sqrt_": sqrt, "rsqrt_": rsqrt,
    "abs_": abs, "sign_": sign, "sin_": sin, "cos_": cos, "tan_": tan, "tanh_": tanh,
    "sigmoid_": sigmoid, "relu_": relu, "reciprocal_": reciprocal, "square_": square,
    "clamp_": clamp, "clip_": clamp, "clamp_min_": clamp_min, "clamp_max_": clamp_max,
    "lerp_": lerp, "log2_": log2, "log10_": log10, "erf_": erf,
    # indexing
    "scatter_": scatter, "scatter_add_": scatter_add, "index_add_": index_add,
    "index_fill_": index_fill, "masked_fill_": masked_fill, "index_put_": index_put,
    "index_copy_": index_copy, "masked_scatter_": masked_scatter,
    # shape
    "tril_": tril, "triu_": triu,
}

_OPERATORS = {
    "__add__": (add, False), "__radd__": (add, True), "__sub__": (sub, False),
    "__rsub__": (sub, True), "__mul__": (mul, False), "__rmul__": (mul, True),
    "__truediv__": (div, False), "__rtruediv__": (div, True),
    "__floordiv__": (floor_divide, False), "__rfloordiv__": (floor_divide, True),
    "__mod__": (remainder, False), "__rmod__": (remainder, True),
    "__pow__": (pow, False), "__rpow__": (pow, True),
    "__eq__": (eq, False), "__ne__": (ne, False), "__lt__": (lt, False),  # noqa: F405
    "__le__": (le, False), "__gt__": (gt, False), "__ge__": (ge, False),  # noqa: F405
    "__and__": (bitwise_and, False), "__rand__": (bitwise_and, True),  # noqa: F405
    "__or__": (bitwise_or, False), "__ror__": (bitwise_or, True),  # noqa: F405
    "__xor__": (bitwise_xor, False), "__rxor__": (bitwise_xor, True),  # noqa: F405
}

_INPLACE_OPERATORS = {
    "__iadd__": add, "__isub__": sub, "__imul__": mul, "__itruediv__": div,
    "__ifloordiv__": floor_divide, "__imod__": remainder, "__ipow__": pow,
    "__iand__": bitwise_and, "__ior__": bitwise_or, "__ixor__": bitwise_xor,  # noqa: F405
}


def _matmul_op(self, other):
    return matmul(self, other) if isinstance(other, Tensor) else NotImplemented


def _rmatmul_op(self, other):
    return matmul(other, self) if isinstance(other, Tensor) else NotImplemented


def _unary_method(cls, fn):
    """``x.<op>()`` for a unary op: its Function's apply, looked up at each call (a patched
    ``apply`` must see methods too)."""
    def method(self):
        return cls.apply(self)
    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


def _install() -> None:
    unary = elementwise.UNARY_METHOD_CLASSES
    for name, fn in _METHODS.items():
        cls = unary.get(fn)
        setattr(Tensor, name, fn if cls is None else _unary_method(cls, fn))
    for name, fn in _INPLACE.items():
        setattr(Tensor, name, _inplace_method(fn, name))
    for name, (fn, reflected) in _OPERATORS.items():
        setattr(Tensor, name, _binary(fn, reflected))
    for name, fn in _INPLACE_OPERATORS.items():
        setattr(Tensor, name, _inplace_operator(fn, name))
    Tensor.__matmul__ = _matmul_op
    Tensor.__rmatmul__ = _rmatmul_op
    Tensor.__neg__ = neg
    Tensor.__pos__ = lambda self: self
    Tensor.__abs__ = abs
    Tensor.__invert__ = bitwise_not  # noqa: F405
    Tensor.__getitem__ = getitem
    Tensor.T = property(shape.T, doc="All dimensions reversed (a 2-D transpose).")
    Tensor.mT = property(shape.mT, doc="The last two dimensions swapped.")


_install()

del comparison, conversion, elementwise, indexing, inplace, linalg, reduction
del join, triangular  # modules (from the imports above), not ops
__all__ = [n for n in dir() if not n.startswith("_") and n not in ("shape", "annotations")]
