"""Indexing: ``x[idx]`` (basic indexing gives views), and the index-based ops."""
from __future__ import annotations

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ._util import make, xp_of
from ._views import as_view


# ---- basic indexing: ints, slices, None, Ellipsis (advanced indexing builds on it) ------------
class Index(Function):
    """``x[idx]`` for basic indices; the backward writes the gradient into zeros."""
    _builtin = True
    _node_name = "IndexBackward0"

    @staticmethod
    def forward(ctx, x, idx):
        ctx.meta = (x.shape, x.dtype, idx)
        return make(x._data[idx])

    @staticmethod
    def backward(ctx, g):
        shape, _, idx = ctx.meta
        return _IndexScatter.apply(g, shape, idx), None


class _IndexScatter(Function):
    """Zeros of ``shape`` with ``g`` written at ``idx`` (the adjoint of Index)."""
    _builtin = True
    _node_name = "IndexPutBackward0"

    @staticmethod
    def forward(ctx, g, shape, idx):
        ctx.idx = idx
        out = xp_of(g._data).zeros(shape, dtype=g._data.dtype)
        out[idx] = g._data
        return make(out)

    @staticmethod
    def backward(ctx, gg):
        return gg[ctx.idx], None, None


def _normalize_index(idx, shape):
    """Check a basic index against ``shape`` (torch's IndexError messages); tensors of one
    integer element become ints."""
    if not isinstance(idx, tuple):
        idx = (idx,)
    out = []
    dim = 0
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    if n_real > len(shape):
        raise IndexError(f"too many indices for tensor of dimension {len(shape)}")
    for i in idx:
        if isinstance(i, Tensor):
            if i._data.ndim == 0 and i._data.dtype.kind in "iu":
                i = int(i.item())
            else:
                raise NotImplementedError(
                    "indexing with tensors (advanced indexing) is not supported yet")
        if isinstance(i, (bool, np.bool_)) or isinstance(i, (list, np.ndarray)):
            raise NotImplementedError(
                "indexing with lists, arrays or booleans (advanced indexing) is not supported yet")
        if isinstance(i, (int, np.integer)):
            size = shape[dim]
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for dimension {dim} with size "
                                 f"{size}")
            dim += 1
        elif isinstance(i, slice):
            if i.step is not None and i.step <= 0:
                raise ValueError("step must be greater than zero")
            dim += 1
        elif i is Ellipsis:
            dim = len(shape) - (n_real - dim)
        elif i is not None:
            raise TypeError(f"invalid index of type {type(i).__name__}; use ints, slices, None "
                            "or ...")
        out.append(i)
    if Ellipsis not in out:
        out.append(Ellipsis)  # a[0, 0] is a NumPy scalar (a copy); a[0, 0, ...] is a 0-d view
    return tuple(out)


def getitem(input: Tensor, idx) -> Tensor:
    """``input[idx]`` for basic indexing (ints, slices with steps, None, Ellipsis)."""
    idx = _normalize_index(idx, input._data.shape)
    return as_view(Index.apply(input, idx), input, Index.apply, idx)
