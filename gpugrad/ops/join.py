"""Joining and splitting: cat/concat, stack, hstack/vstack/dstack/column_stack, split, chunk,
unbind, tensor_split, hsplit/vsplit/dsplit, atleast_1d/2d/3d.

cat and stack return fresh arrays (their inputs are promoted to one dtype, as torch does);
split, chunk and unbind return views of the input, each marked as one output of a function
that returns several views (in-place writes into them are refused while recording, as in
torch). Each output's replay step is the single view it is (a Narrow or a Select), so that
replaying one output does not rebuild all of them. tensor_split (and hsplit/vsplit/dsplit)
returns plain slices, which torch lets one write into.
"""
from __future__ import annotations

import operator

import numpy as np

from .. import _dtypes
from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, wrap_dim, xp_of
from ._views import as_view
from .shape import Narrow, Select


def _tensor_list(tensors, op: str) -> list:
    if isinstance(tensors, Tensor):
        raise TypeError(f"{op}(): argument 'tensors' (position 1) must be tuple of Tensors, "
                        "not Tensor")
    tensors = list(tensors)
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"expected Tensor as element {i} in argument 0, but got "
                            f"{type(t).__name__}")
    return tensors


def _promoted(tensors) -> _dtypes.dtype:
    dt = tensors[0].dtype
    for t in tensors[1:]:
        dt = _dtypes.promote_types(dt, t.dtype)
    return dt


def _legacy_empty(t: Tensor) -> bool:
    """torch.cat skips 1-D tensors of size 0 whatever the other shapes are (legacy rule)."""
    return t._data.shape == (0,)


# ---- cat / stack ------------------------------------------------------------------------------
class Cat(Function):
    """The tensors joined along ``dim``; the gradient is cut back into their pieces."""
    _builtin = True
    _node_name = "CatBackward0"

    @staticmethod
    def forward(ctx, dim, dtype, *tensors):
        arrays = [t._data for t in tensors if not _legacy_empty(t)]
        ctx.sizes = [None if _legacy_empty(t) else t._data.shape[dim] for t in tensors]
        ctx.dim = dim
        xp = xp_of(tensors[0]._data)
        if not arrays:
            return make(xp.empty((0,), dtype=dtype.np))
        arrays = [a if a.dtype == dtype.np else a.astype(dtype.np) for a in arrays]
        return make(xp.concatenate(arrays, axis=dim))

    jvp = _rules.linear(all_tensors=True)

    @staticmethod
    def backward(ctx, g):
        grads = [None, None]
        start = 0
        for size, need in zip(ctx.sizes, ctx.needs_input_grad[2:]):
            if size is None:
                grads.append(make(xp_of(g._data).zeros((0,), dtype=g._data.dtype))
                             if need else None)
                continue
            grads.append(Narrow.apply(g, ctx.dim, start, size) if need else None)
            start += size
        return tuple(grads)


def cat(tensors, dim: int = 0) -> Tensor:
    """The tensors joined along ``dim``: all shapes must match except in ``dim``. Dtypes
    are promoted; 1-D empty tensors are skipped (torch's legacy rule)."""
    tensors = _tensor_list(tensors, "cat")
    if not tensors:
        raise ValueError("torch.cat(): expected a non-empty list of Tensors")
    dim = operator.index(dim)
    ref_i = None
    for i, t in enumerate(tensors):
        if t._data.ndim == 0:
            raise RuntimeError(f"zero-dimensional tensor (at position {i}) cannot be "
                               "concatenated")
        if ref_i is None and not _legacy_empty(t):
            ref_i = i
    dtype = _promoted(tensors)
    if ref_i is None:  # only 1-D empties
        return Cat.apply(0, dtype, *tensors)
    ref = tensors[ref_i]._data.shape
    d = wrap_dim(dim, len(ref), "cat")
    for i, t in enumerate(tensors):
        s = t._data.shape
        if _legacy_empty(t):
            continue
        if len(s) != len(ref):
            raise RuntimeError(f"Tensors must have same number of dimensions: got {len(ref)} "
                               f"and {len(s)} (shapes {list(ref)} of tensor {ref_i} and "
                               f"{list(s)} of tensor {i})")
        for k, (a, b) in enumerate(zip(ref, s)):
            if k != d and a != b:
                raise RuntimeError(
                    f"Sizes of tensors must match except in dimension {d}. Expected size {a} "
                    f"but got size {b} for tensor number {i} in the list (shapes {list(ref)} "
                    f"and {list(s)}, cat along dim {d}).")
    return Cat.apply(d, dtype, *tensors)


concat = cat


def concatenate(tensors, axis: int = 0) -> Tensor:
    """``cat`` with NumPy's argument name."""
    return cat(tensors, axis)


class Stack(Function):
    """The tensors (of one shape) stacked along a new dimension ``dim``."""
    _builtin = True
    _node_name = "StackBackward0"

    @staticmethod
    def forward(ctx, dim, dtype, *tensors):
        ctx.dim = dim
        arrays = [t._data if t._data.dtype == dtype.np else t._data.astype(dtype.np)
                  for t in tensors]
        return make(xp_of(arrays[0]).stack(arrays, axis=dim))

    jvp = _rules.linear(all_tensors=True)

    @staticmethod
    def backward(ctx, g):
        return (None, None) + tuple(Select.apply(g, ctx.dim, i) if need else None
                                    for i, need in enumerate(ctx.needs_input_grad[2:]))


def stack(tensors, dim: int = 0) -> Tensor:
    """The tensors, all of one shape, joined along a new dimension ``dim``."""
    tensors = _tensor_list(tensors, "stack")
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    ref = tensors[0]._data.shape
    for i, t in enumerate(tensors[1:], 1):
        if t._data.shape != ref:
            raise RuntimeError(f"stack expects each tensor to be equal size, but got "
                               f"{list(ref)} at entry 0 and {list(t.shape)} at entry {i}")
    d = wrap_dim(operator.index(dim), len(ref) + 1, "stack")
    return Stack.apply(d, _promoted(tensors), *tensors)


# ---- split / chunk / unbind -------------------------------------------------------------------
class Split(Function):
    """Consecutive pieces of ``sizes`` along ``dim`` (views); the gradient is their cat."""
    _builtin = True
    _node_name = "SplitBackward0"

    @staticmethod
    def forward(ctx, x, dim, sizes):
        ctx.dim = dim
        a = x._data
        outs, start = [], 0
        head = (slice(None),) * dim
        for s in sizes:
            outs.append(make(a[head + (slice(start, start + s),)]))
            start += s
        return tuple(outs)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, *grads):
        return (Cat.apply(ctx.dim, grads[0].dtype, *grads), None, None)


class SplitWithSizes(Split):
    """``split`` with a list of sizes (torch names its node apart)."""
    _node_name = "SplitWithSizesBackward0"


def _split_views(x: Tensor, d: int, sizes, fn) -> tuple:
    outs = fn.apply(x, d, tuple(sizes))
    start = 0
    views = []
    for o, s in zip(outs, sizes):
        views.append(as_view(o, x, Narrow.apply, d, start, s, multi_output=True))
        start += s
    return tuple(views)


def split(tensor: Tensor, split_size_or_sections, dim: int = 0) -> tuple:
    """Views of ``tensor`` cut along ``dim``: pieces of ``split_size`` (the last may be
    smaller), or of the sizes listed."""
    nd = tensor._data.ndim
    if nd == 0:
        raise RuntimeError("split expects at least a 1-dimensional tensor")
    d = wrap_dim(operator.index(dim), nd, "split")
    n = tensor._data.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = operator.index(split_size_or_sections)
        if size < 0:
            raise RuntimeError(f"split expects split_size be non-negative, but got "
                               f"split_size={size}")
        if size == 0 and n != 0:
            raise RuntimeError(f"split_size can only be 0 if dimension size is 0, but got "
                               f"dimension size of {n}")
        count = max(-(-n // size), 1) if size else 1
        sizes = [size] * (count - 1) + [n - size * (count - 1)]
        return _split_views(tensor, d, sizes, Split)
    sizes = [operator.index(s) for s in split_size_or_sections]
    if any(s < 0 for s in sizes):
        raise RuntimeError(f"split_with_sizes expects split_sizes have only non-negative "
                           f"entries, but got split_sizes={sizes}")
    if sum(sizes) != n:
        raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input "
                           f"tensor's size at dimension {d}), but got split_sizes={sizes}")
    return _split_views(tensor, d, sizes, SplitWithSizes)


def chunk(input: Tensor, chunks: int, dim: int = 0) -> tuple:
    """``input`` cut into ``chunks`` views along ``dim`` of ``ceil(size / chunks)`` elements
    (so there may be fewer than ``chunks``, as in torch)."""
    nd = input._data.ndim
    if nd == 0:
        raise RuntimeError("chunk expects at least a 1-dimensional tensor")
    chunks = operator.index(chunks)
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    d = wrap_dim(operator.index(dim), nd, "chunk")
    n = input._data.shape[d]
    size = -(-n // chunks)
    if size == 0:  # an empty dimension gives `chunks` empty pieces
        return _split_views(input, d, [0] * chunks, Split)
    return split(input, size, d)


class Unbind(Function):
    """Every index of ``dim`` as its own view; the gradient is their stack."""
    _builtin = True
    _node_name = "UnbindBackward0"

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        a = x._data
        head = (slice(None),) * dim
        return tuple(make(a[head + (i, Ellipsis)]) for i in range(a.shape[dim]))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, *grads):
        return Stack.apply(ctx.dim, grads[0].dtype, *grads), None


def unbind(input: Tensor, dim: int = 0) -> tuple:
    """The slices of ``input`` along ``dim`` (views, with ``dim`` removed)."""
    nd = input._data.ndim
    if nd == 0:
        raise IndexError(f"Dimension specified as {dim} but tensor has no dimensions")
    d = wrap_dim(operator.index(dim), nd, "unbind")
    if input._data.shape[d] == 0:
        return ()
    outs = Unbind.apply(input, d)
    return tuple(as_view(o, input, Select.apply, d, i, multi_output=True)
                 for i, o in enumerate(outs))


# ---- atleast_nd, hstack / vstack / dstack / column_stack --------------------------------------
def _atleast(tensors, op: str, make_nd) -> Tensor | tuple:
    """One tensor in, one out; several (or a list/tuple of them) in, a tuple out (torch)."""
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return tuple(make_nd(t) for t in _tensor_list(tensors[0], op))
    if len(tensors) == 1 and isinstance(tensors[0], Tensor):
        return make_nd(tensors[0])
    return tuple(make_nd(t) for t in _tensor_list(tensors, op))


def _1d(t: Tensor) -> Tensor:
    return t.reshape(1) if t._data.ndim == 0 else t


def _2d(t: Tensor) -> Tensor:
    nd = t._data.ndim
    return t.reshape(1, 1) if nd == 0 else t.unsqueeze(0) if nd == 1 else t


def _3d(t: Tensor) -> Tensor:
    nd = t._data.ndim
    if nd == 0:
        return t.reshape(1, 1, 1)
    if nd == 1:
        return t.unsqueeze(0).unsqueeze(-1)
    return t.unsqueeze(-1) if nd == 2 else t


def atleast_1d(*tensors):
    """Each tensor with at least 1 dimension (0-d tensors become shape [1]); others are
    returned as they are."""
    return _atleast(tensors, "atleast_1d", _1d)


def atleast_2d(*tensors):
    """Each tensor with at least 2 dimensions (a 1-D tensor of n becomes [1, n])."""
    return _atleast(tensors, "atleast_2d", _2d)


def atleast_3d(*tensors):
    """Each tensor with at least 3 dimensions (1-D n -> [1, n, 1], 2-D [m, n] -> [m, n, 1])."""
    return _atleast(tensors, "atleast_3d", _3d)


def _nonempty(tensors, op: str) -> list:
    tensors = _tensor_list(tensors, op)
    if not tensors:
        raise RuntimeError(f"{op} expects a non-empty TensorList")
    return tensors


def hstack(tensors) -> Tensor:
    """The tensors joined column-wise: along dim 0 for 1-D tensors, else along dim 1."""
    ts = [_1d(t) for t in _nonempty(tensors, "hstack")]
    return cat(ts, 0 if ts[0]._data.ndim == 1 else 1)


def vstack(tensors) -> Tensor:
    """The tensors, made at least 2-D, joined row-wise (along dim 0)."""
    return cat([_2d(t) for t in _nonempty(tensors, "vstack")], 0)


row_stack = vstack


def dstack(tensors) -> Tensor:
    """The tensors, made at least 3-D, joined depth-wise (along dim 2)."""
    return cat([_3d(t) for t in _nonempty(tensors, "dstack")], 2)


def column_stack(tensors) -> Tensor:
    """The tensors as columns: 0-d and 1-D tensors become [n, 1] columns, then all are joined
    along dim 1."""
    ts = _nonempty(tensors, "column_stack")
    return cat([t.reshape(t._data.size, 1) if t._data.ndim <= 1 else t for t in ts], 1)


# ---- tensor_split, hsplit / vsplit / dsplit ---------------------------------------------------
def _pieces(input: Tensor, d: int, bounds) -> tuple:
    """Views of ``input`` between consecutive ``bounds`` along ``d`` (clamped, as slices)."""
    n = input._data.shape[d]
    out = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        start = min(max(start + n if start < 0 else start, 0), n)
        stop = min(max(stop + n if stop < 0 else stop, 0), n)
        length = max(stop - start, 0)
        out.append(as_view(Narrow.apply(input, d, start, length), input, Narrow.apply, d,
                           start, length))
    return tuple(out)


def tensor_split(input: Tensor, indices_or_sections, dim: int = 0) -> tuple:
    """Views of ``input`` cut along ``dim``: into ``sections`` pieces of near-equal size (the
    first ``size % sections`` one longer), or at the listed indices (``[1, 3]`` gives
    ``[:1], [1:3], [3:]``). Unlike ``split``, each piece can be written in place."""
    nd = input._data.ndim
    if nd == 0:
        raise RuntimeError("tensor_split expected at least a 1-dimensional tensor, but got a "
                           "tensor with 0 dims")
    d = wrap_dim(operator.index(dim), nd, "tensor_split")
    ios = indices_or_sections
    if isinstance(ios, Tensor):
        a = ios._data
        if a.ndim > 1:
            raise RuntimeError("tensor_split expected tensor_indices_or_sections to be a "
                               "zero-dimensional or one-dimensional tensor, but got a tensor "
                               f"with {a.ndim} dims")
        if a.dtype != np.int64:
            raise RuntimeError("tensor_split expected tensor_indices_or_sections to have dtype "
                               f"of long, but got {_torch_dtype_name(ios.dtype)}")
        ios = int(a) if a.ndim == 0 else [int(v) for v in a.tolist()]
    n = input._data.shape[d]
    if isinstance(ios, (int, np.integer)):
        sections = operator.index(ios)
        if sections <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {sections}")
        size, extra = divmod(n, sections)
        bounds = [0]
        for i in range(sections):
            bounds.append(bounds[-1] + size + (1 if i < extra else 0))
        return _pieces(input, d, bounds)
    indices = [operator.index(i) for i in ios]
    return _pieces(input, d, [0] + indices + [n])


def _torch_dtype_name(dtype) -> str:
    return {"float32": "Float", "float64": "Double", "float16": "Half", "int32": "Int",
            "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}.get(
        str(dtype).split(".")[-1], str(dtype))


def _split_along(input: Tensor, ios, d: int, op: str, min_dim: int) -> tuple:
    nd = input._data.ndim
    if nd < min_dim:
        raise RuntimeError(f"torch.{op} requires a tensor with at least {min_dim} dimension, "
                           f"but got a tensor with {nd} dimensions!")
    if isinstance(ios, (int, np.integer)):
        n = input._data.shape[d]
        if ios == 0 or n % ios:
            raise RuntimeError(f"torch.{op} attempted to split along dimension {d}, but the "
                               f"size of the dimension {n} is not divisible by the split_size "
                               f"{ios}!")
    return tensor_split(input, ios, d)


def hsplit(input: Tensor, indices_or_sections) -> tuple:
    """``tensor_split`` along dim 1 (dim 0 for a 1-D tensor); sections must divide evenly."""
    d = 0 if input._data.ndim == 1 else 1
    return _split_along(input, indices_or_sections, d, "hsplit", 1)


def vsplit(input: Tensor, indices_or_sections) -> tuple:
    """``tensor_split`` along dim 0 of a tensor of at least 2 dims; sections divide evenly."""
    return _split_along(input, indices_or_sections, 0, "vsplit", 2)


def dsplit(input: Tensor, indices_or_sections) -> tuple:
    """``tensor_split`` along dim 2 of a tensor of at least 3 dims; sections divide evenly."""
    return _split_along(input, indices_or_sections, 2, "dsplit", 3)
