"""Shape operations the core needs: reshape/view, expand, sum_to_size, squeeze, unsqueeze,
transpose, permute, flip, and basic indexing. (The rest of the shape family, and views'
in-place semantics, build on these.)"""
from __future__ import annotations

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ._util import make, wrap_dim, xp_of
from ._views import as_view


def _size_args(size, op: str) -> tuple:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` like torch."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        return tuple(int(s) for s in size)
    except TypeError:
        raise TypeError(f"{op}(): size must be a sequence of ints, got {size!r}") from None


def _infer_shape(shape: tuple, numel: int, op: str, src_shape) -> tuple:
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred (got {list(shape)})")
    known = 1
    for s in shape:
        if s != -1:
            if s < 0:
                raise RuntimeError(f"{op}: invalid shape dimension {s} in {list(shape)}")
            known *= s
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size "
                               f"{numel}")
        shape = tuple(numel // known if s == -1 else s for s in shape)
    elif known != numel:
        raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size {numel} "
                           f"(input shape {list(src_shape)})")
    return shape


class Reshape(Function):
    """``x.reshape(shape)``: a view when the layout allows, else a copy."""
    _builtin = True
    _node_name = "ViewBackward0"

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return make(x._data.reshape(shape))

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def reshape(input: Tensor, *shape) -> Tensor:
    """``input`` with a new shape of the same number of elements (one dim may be -1)."""
    shape = _infer_shape(_size_args(shape, "reshape"), input._data.size, "reshape",
                         input.shape)
    if shape == input._data.shape and not input.requires_grad:
        return input
    return as_view(Reshape.apply(input, shape), input, Reshape.apply, shape)


def view(input: Tensor, *shape) -> Tensor:
    """Like ``reshape``, for torch code that calls ``view``."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int)):
        return input.to(shape[0])  # view(dtype) is not supported as a reinterpretation
    return reshape(input, *shape)


class Expand(Function):
    """Broadcast to a larger shape without copying; the gradient is summed back."""
    _builtin = True
    _node_name = "ExpandBackward0"

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        return make(xp_of(x._data).broadcast_to(x._data, shape))

    @staticmethod
    def backward(ctx, g):
        return g.sum_to_size(ctx.in_shape), None


def expand(input: Tensor, *sizes) -> Tensor:
    """Broadcast ``input`` to ``sizes`` (-1 keeps a dimension); no data is copied."""
    sizes = _size_args(sizes, "expand")
    nd = input._data.ndim
    if len(sizes) < nd:
        raise RuntimeError(f"expand: the number of sizes provided ({len(sizes)}) must be greater "
                           f"or equal to the number of dimensions in the tensor ({nd})")
    lead = len(sizes) - nd
    shape = []
    for i, s in enumerate(sizes):
        if s == -1:
            if i < lead:
                raise RuntimeError("expand: -1 is not allowed in a leading, non-existing "
                                   "dimension")
            s = input._data.shape[i - lead]
        elif i >= lead and input._data.shape[i - lead] not in (1, s):
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size "
                f"({input._data.shape[i - lead]}) at non-singleton dimension {i}.  Target sizes: "
                f"{list(sizes)}.  Tensor sizes: {list(input.shape)}")
        shape.append(s)
    shape = tuple(shape)
    if shape == input._data.shape:
        return input
    return as_view(Expand.apply(input, shape), input, Expand.apply, shape)


def broadcast_to(input: Tensor, size) -> Tensor:
    """``input`` expanded to ``size``."""
    return expand(input, tuple(size))


class SumToSize(Function):
    """Sum over broadcast dimensions so that the result has ``shape`` (expand's adjoint)."""
    _builtin = True
    _node_name = "SumToSizeBackward0"

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        a = x._data
        lead = a.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and a.shape[lead + i] != 1)
        out = a.sum(axis=axes, keepdims=True) if axes else a
        if lead:
            out = out.reshape(shape)
        return make(out)

    @staticmethod
    def backward(ctx, g):
        return g.expand(ctx.in_shape), None


def sum_to_size(input: Tensor, *size) -> Tensor:
    """Sum ``input`` down to ``size``, to which it must be broadcastable."""
    shape = _size_args(size, "sum_to_size")
    src = input._data.shape
    if shape == src:
        return input
    lead = len(src) - len(shape)
    if lead < 0 or any(s not in (1, d) for s, d in zip(shape, src[lead:])):
        raise RuntimeError(f"size {list(shape)} is not expandable to size {list(src)}")
    return SumToSize.apply(input, shape)


class Permute(Function):
    """Reorder dimensions (a view)."""
    _builtin = True
    _node_name = "PermuteBackward0"

    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return make(x._data.transpose(axes))

    @staticmethod
    def backward(ctx, g):
        return g.permute(tuple(np.argsort(ctx.axes))), None


def permute(input: Tensor, *dims) -> Tensor:
    """``input`` with its dimensions reordered to ``dims``."""
    nd = input._data.ndim
    dims = _size_args(dims, "permute")
    if len(dims) != nd:
        raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does "
                           f"not match the length of the desired ordering of dimensions i.e. "
                           f"input.dim() = {nd} is not equal to len(dims) = {len(dims)}"
                           .replace("(sparse_coo)", ""))
    axes = tuple(wrap_dim(d, nd, "permute") for d in dims)
    if len(set(axes)) != nd:
        raise RuntimeError(f"permute(): duplicate dims are not allowed (got {list(dims)})")
    return as_view(Permute.apply(input, axes), input, Permute.apply, axes)


class Transpose(Function):
    """Swap two dimensions (a view)."""
    _builtin = True
    _node_name = "TransposeBackward0"

    @staticmethod
    def forward(ctx, x, d0, d1):
        ctx.dims = (d0, d1)
        return make(x._data.swapaxes(d0, d1))

    @staticmethod
    def backward(ctx, g):
        return g.transpose(*ctx.dims), None, None


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """``input`` with dimensions ``dim0`` and ``dim1`` swapped."""
    nd = input._data.ndim
    d0, d1 = wrap_dim(dim0, nd, "transpose"), wrap_dim(dim1, nd, "transpose")
    if nd == 0:
        return input
    return as_view(Transpose.apply(input, d0, d1), input, Transpose.apply, d0, d1)


swapaxes = swapdims = transpose


def t(input: Tensor) -> Tensor:
    """Transpose a tensor of at most 2 dimensions."""
    if input._data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input._data.ndim}D; use transpose(dim0, dim1) or mT")
    return transpose(input, 0, -1) if input._data.ndim == 2 else input


def mT(input: Tensor) -> Tensor:
    """Transpose the last two dimensions (batched matrix transpose)."""
    if input._data.ndim < 2:
        raise RuntimeError(f"tensor.mT is only supported on matrices or batches of matrices. "
                           f"Got {input._data.ndim}-D tensor.")
    return transpose(input, -2, -1)


def T(input: Tensor) -> Tensor:
    """All dimensions reversed (torch deprecates this for ndim other than 2)."""
    nd = input._data.ndim
    return permute(input, tuple(range(nd - 1, -1, -1))) if nd >= 2 else input


class Squeeze(Function):
    """Remove size-1 dimensions (a view)."""
    _builtin = True
    _node_name = "SqueezeBackward0"

    @staticmethod
    def forward(ctx, x, axes):
        ctx.in_shape = x.shape
        return make(x._data.squeeze(axis=axes) if axes else x._data)

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def squeeze(input: Tensor, dim=None) -> Tensor:
    """Remove the dimensions of size 1 (all of them, or those in ``dim``)."""
    shape = input._data.shape
    if dim is None:
        axes = tuple(i for i, s in enumerate(shape) if s == 1)
    else:
        ds = (dim,) if isinstance(dim, int) else tuple(dim)
        axes = tuple(sorted({wrap_dim(d, len(shape), "squeeze") for d in ds
                             if shape and shape[wrap_dim(d, len(shape), "squeeze")] == 1}))
    if not axes:
        return input
    return as_view(Squeeze.apply(input, axes), input, Squeeze.apply, axes)


class Unsqueeze(Function):
    """Insert a size-1 dimension (a view)."""
    _builtin = True
    _node_name = "UnsqueezeBackward0"

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return make(xp_of(x._data).expand_dims(x._data, dim))

    @staticmethod
    def backward(ctx, g):
        return g.squeeze(ctx.dim), None


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    """``input`` with a new dimension of size 1 at ``dim``."""
    d = wrap_dim(dim, input._data.ndim + 1, "unsqueeze")
    return as_view(Unsqueeze.apply(input, d), input, Unsqueeze.apply, d)


class Flip(Function):
    """Reverse the order of elements along dims."""
    _builtin = True
    _node_name = "FlipBackward0"

    @staticmethod
    def forward(ctx, x, axes):
        ctx.axes = axes
        return make(xp_of(x._data).flip(x._data, axes).copy())  # torch's flip copies

    @staticmethod
    def backward(ctx, g):
        return g.flip(ctx.axes), None


def flip(input: Tensor, dims) -> Tensor:
    """Reverse ``input`` along each dimension in ``dims``."""
    ds = (dims,) if isinstance(dims, int) else tuple(dims)
    axes = tuple(wrap_dim(d, input._data.ndim, "flip") for d in ds)
    return Flip.apply(input, axes)
