"""Matrix structure: tril, triu (copies), diagonal (a view) and trace.

All act on the last two dimensions (tril/triu, batched) or on a chosen pair (diagonal).
"""
from __future__ import annotations

import operator

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, wrap_dim, xp_of
from ._views import as_view


# ---- tril / triu ------------------------------------------------------------------------------
def _tri_mask(a, k: int, upper: bool):
    r, c = a.shape[-2:]
    xp = xp_of(a)
    return ~xp.tri(r, c, k - 1, dtype=bool) if upper else xp.tri(r, c, k, dtype=bool)


class Tril(Function):
    """The lower triangle (``j - i <= k``) of the last two dims; zeros above."""
    _builtin = True
    _node_name = "TrilBackward0"
    _upper = False

    @staticmethod
    def forward(ctx, x, k):
        ctx.k = k
        a = x._data
        mask = _tri_mask(a, k, ctx._function._upper)
        return make(xp_of(a).where(mask, a, xp_of(a).zeros((), dtype=a.dtype)))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return ctx._function.apply(g, ctx.k), None


class Triu(Tril):
    """The upper triangle (``j - i >= k``) of the last two dims; zeros below."""
    _node_name = "TriuBackward0"
    _upper = True


def _tri(fn, input: Tensor, diagonal, op: str) -> Tensor:
    if input._data.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions (got a tensor "
                           f"of shape {list(input.shape)})")
    return fn.apply(input, operator.index(diagonal))


def tril(input: Tensor, diagonal: int = 0) -> Tensor:
    """The lower triangle of the matrices in the last two dims: elements with
    ``col - row <= diagonal`` are kept, the others zeroed."""
    return _tri(Tril, input, diagonal, "tril")


def triu(input: Tensor, diagonal: int = 0) -> Tensor:
    """The upper triangle of the matrices in the last two dims: elements with
    ``col - row >= diagonal`` are kept, the others zeroed."""
    return _tri(Triu, input, diagonal, "triu")


# ---- diagonal / trace -------------------------------------------------------------------------
def _diag_view(a, offset: int, d1: int, d2: int):
    """The writable diagonal view of array ``a`` (NumPy hands it out read-only)."""
    d = a.diagonal(offset, d1, d2)
    flags = d.flags
    if not getattr(flags, "writeable", True) and a.flags.writeable:
        flags.writeable = True
    return d


class Diagonal(Function):
    """The diagonal ``offset`` of the (dim1, dim2) planes as a last dimension (a view)."""
    _builtin = True
    _node_name = "DiagonalBackward0"

    @staticmethod
    def forward(ctx, x, offset, d1, d2):
        ctx.args = (x.shape, offset, d1, d2)
        return make(_diag_view(x._data, offset, d1, d2))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return _DiagonalBackward.apply(g, *ctx.args), None, None, None


class _DiagonalBackward(Function):
    """Zeros of ``shape`` with ``g`` on the diagonal (Diagonal's adjoint)."""
    _builtin = True
    _node_name = "DiagonalBackwardBackward0"

    @staticmethod
    def forward(ctx, g, shape, offset, d1, d2):
        ctx.args = (offset, d1, d2)
        out = xp_of(g._data).zeros(shape, dtype=g._data.dtype)
        _diag_view(out, offset, d1, d2)[...] = g._data
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return Diagonal.apply(gg, *ctx.args), None, None, None, None


def diagonal(input: Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Tensor:
    """The view of the diagonal ``offset`` (above the main one when positive) of the planes
    ``(dim1, dim2)``; those dims are removed and the diagonal becomes the last one."""
    nd = input._data.ndim
    d1, d2 = wrap_dim(dim1, nd, "diagonal"), wrap_dim(dim2, nd, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    offset = operator.index(offset)
    return as_view(Diagonal.apply(input, offset, d1, d2), input, Diagonal.apply, offset, d1,
                   d2)


class Trace(Function):
    """The sum of the main diagonal of a matrix (integer inputs sum to int64, as in torch)."""
    _builtin = True
    _node_name = "TraceBackward0"

    @staticmethod
    def forward(ctx, x):
        a = x._data
        ctx.shape = a.shape
        if a.dtype.kind == "b":
            raise NotImplementedError("\"trace\" not implemented for 'Bool'")
        dt = np.int64 if a.dtype.kind in "iu" else a.dtype
        return make(a.diagonal().sum(dtype=dt))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        n = min(ctx.shape)
        return _DiagonalBackward.apply(g.expand(n), ctx.shape, 0, 0, 1)


def trace(input: Tensor) -> Tensor:
    """The sum of the main diagonal of the matrix ``input``."""
    if input._data.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim "
                           f"{input._data.ndim}")
    return Trace.apply(input)
