"""Shape operations: reshape/view, flatten/unflatten, expand, sum_to_size, squeeze/unsqueeze,
transpose/permute/movedim, narrow, repeat/tile, flip, roll.

Ops that return views in torch return views here too: the result shares the input's memory
and is marked with ``as_view(out, input, Fn.apply, *args)``, the step that replays it on any
tensor of the input's shape (see ``_views.py``). The others return fresh arrays. (cat/stack/
split live in ``join.py``, pad in ``pad.py``, tril/triu/diagonal/trace in ``triangular.py``.)
"""
from __future__ import annotations

import operator

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, wrap_dim, xp_of
from ._views import as_view, shares_memory


def _size_args(size, op: str) -> tuple:
    """Accept ``f(2, 3)``, ``f((2, 3))`` and ``f([2, 3])`` like torch (ints only: 2.0 is a
    TypeError, as in torch)."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        return tuple(operator.index(s) for s in size)
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

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


def reshape(input: Tensor, *shape) -> Tensor:
    """``input`` with a new shape of the same number of elements (one dim may be -1)."""
    shape = _infer_shape(_size_args(shape, "reshape"), input._data.size, "reshape",
                         input.shape)
    # Even a reshape to the same shape is a new view tensor (torch: ``y is x`` is False).
    return as_view(Reshape.apply(input, shape), input, Reshape.apply, shape)


def view(input: Tensor, *shape) -> Tensor:
    """``input`` with a new shape, sharing its memory; like torch, an error when the strides
    do not allow it (where ``reshape`` would copy)."""
    if len(shape) == 1 and not isinstance(shape[0], (tuple, list, int, np.integer)):
        return input.to(shape[0])  # view(dtype) is not supported as a reinterpretation
    a = input._data
    shape = _infer_shape(_size_args(shape, "view"), a.size, "view", input.shape)
    # NumPy and CuPy copy only when no strides give the new shape: exactly torch's rule.
    if a.size and shape != a.shape and not a.flags.c_contiguous and \
            not shares_memory(a.reshape(shape), a):
        item = a.itemsize
        raise RuntimeError(
            "view size is not compatible with input tensor's size and stride (at least one "
            "dimension spans across two contiguous subspaces): a tensor of size "
            f"{list(a.shape)} and stride {[st // item for st in a.strides]} cannot be viewed "
            f"as {list(shape)}. Use .reshape(...) instead.")
    return as_view(Reshape.apply(input, shape), input, Reshape.apply, shape)


def view_as(input: Tensor, other: Tensor) -> Tensor:
    """``input.view(other.shape)``."""
    return view(input, other.shape)


def reshape_as(input: Tensor, other: Tensor) -> Tensor:
    """``input.reshape(other.shape)``."""
    return reshape(input, other.shape)


def flatten(input: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """Merge dimensions ``start_dim..end_dim`` into one (a view when the layout allows)."""
    shp = input._data.shape
    nd = len(shp)
    s, e = wrap_dim(start_dim, nd, "flatten"), wrap_dim(end_dim, nd, "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if nd == 0:
        return reshape(input, (1,))
    if s == e:
        return input
    n = 1
    for d in shp[s:e + 1]:
        n *= d
    return reshape(input, shp[:s] + (n,) + shp[e + 1:])


def unflatten(input: Tensor, dim: int, sizes) -> Tensor:
    """Split dimension ``dim`` into ``sizes`` (one of them may be -1)."""
    shp = input._data.shape
    d = wrap_dim(dim, len(shp), "unflatten")
    sizes = _size_args((sizes,), "unflatten")
    if not sizes:
        raise RuntimeError("unflatten: sizes must be non-empty")
    if sizes.count(-1) > 1:
        raise RuntimeError(f"unflatten: only one dimension can be inferred (got sizes "
                           f"{list(sizes)})")
    known = 1
    for s in sizes:
        if s != -1:
            known *= s
    n = shp[d]
    if -1 in sizes:
        if known == 0:
            raise RuntimeError(f"unflatten: cannot infer the -1 in sizes {list(sizes)} for a "
                               f"dimension of size {n}: it can be any value")
        if n % known == 0:
            sizes = tuple(n // known if s == -1 else s for s in sizes)
            known = n
    if known != n:
        raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the "
                           f"size of dim {dim} ({n}) in the input tensor")
    return reshape(input, shp[:d] + sizes + shp[d + 1:])


_as_strided = np.lib.stride_tricks.as_strided


def broadcast_view(a, shape):
    """Array ``a`` broadcast to ``shape`` (which it must broadcast to), without a copy.

    NumPy's broadcast views are read-only; torch's (and CuPy's) are not: writing through a
    non-overlapping view of it (``z[0] = 5``) reaches the base. Writes that would overlap are
    refused by check_inplace, as torch refuses them. So on NumPy the view is made with
    as_strided, from the strides a broadcast gives (0 on new and stretched dimensions), in
    one call."""
    if a.__class__ is not np.ndarray:
        return xp_of(a).broadcast_to(a, shape)
    lead = len(shape) - a.ndim
    strides = [0] * lead
    for n, st, size in zip(a.shape, a.strides, shape[lead:]):
        strides.append(0 if n == 1 and size != 1 else st)
    return _as_strided(a, shape, strides)


class Expand(Function):
    """Broadcast to a larger shape without copying; the gradient is summed back."""
    _builtin = True
    _node_name = "ExpandBackward0"

    @staticmethod
    def forward(ctx, x, shape):
        ctx.in_shape = x.shape
        a = x._data
        if a.shape == shape:  # a plain view
            return make(a[...])
        return make(broadcast_view(a, shape))

    jvp = _rules.linear()

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
        elif s < 0:
            raise RuntimeError(f"expand: the expanded size of the tensor ({s}) isn't allowed "
                               f"(dimension {i}).  Target sizes: {list(sizes)}.  Tensor sizes: "
                               f"{list(input.shape)}")
        elif i >= lead and input._data.shape[i - lead] not in (1, s):
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size "
                f"({input._data.shape[i - lead]}) at non-singleton dimension {i}.  Target sizes: "
                f"{list(sizes)}.  Tensor sizes: {list(input.shape)}")
        shape.append(s)
    shape = tuple(shape)
    return as_view(Expand.apply(input, shape), input, Expand.apply, shape)


def expand_as(input: Tensor, other: Tensor) -> Tensor:
    """``input.expand(other.shape)``."""
    return expand(input, other.shape)


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

    jvp = _rules.linear()

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

    jvp = _rules.linear()

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
        a = x._data
        return make(a.swapaxes(d0, d1) if a.ndim else a[...])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g.transpose(*ctx.dims), None, None


def transpose(input: Tensor, dim0: int, dim1: int) -> Tensor:
    """``input`` with dimensions ``dim0`` and ``dim1`` swapped."""
    nd = input._data.ndim
    d0, d1 = wrap_dim(dim0, nd, "transpose"), wrap_dim(dim1, nd, "transpose")
    return as_view(Transpose.apply(input, d0, d1), input, Transpose.apply, d0, d1)


swapaxes = swapdims = transpose


def t(input: Tensor) -> Tensor:
    """Transpose a tensor of at most 2 dimensions."""
    if input._data.ndim > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is "
                           f"{input._data.ndim}D; use transpose(dim0, dim1) or mT")
    d1 = 1 if input._data.ndim == 2 else 0
    return as_view(_T.apply(input, 0, d1), input, _T.apply, 0, d1)


class _T(Transpose):
    """``t()`` (torch names its node apart from transpose's)."""
    _node_name = "TBackward0"


def mT(input: Tensor) -> Tensor:
    """Transpose the last two dimensions (batched matrix transpose)."""
    if input._data.ndim < 2:
        raise RuntimeError(f"tensor.mT is only supported on matrices or batches of matrices. "
                           f"Got {input._data.ndim}-D tensor.")
    return transpose(input, -2, -1)


def T(input: Tensor) -> Tensor:
    """All dimensions reversed (torch deprecates this for ndim other than 2)."""
    nd = input._data.ndim
    return permute(input, tuple(range(nd - 1, -1, -1)))


class Squeeze(Function):
    """Remove size-1 dimensions (a view)."""
    _builtin = True
    _node_name = "SqueezeBackward0"

    @staticmethod
    def forward(ctx, x, axes):
        ctx.in_shape = x.shape
        return make(x._data.squeeze(axis=axes) if axes else x._data[...])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.in_shape), None


class _SqueezeDim(Squeeze):
    """``squeeze(dim)`` with one dim (torch's node name)."""
    _node_name = "SqueezeBackward1"


class _SqueezeDims(Squeeze):
    """``squeeze(dims)`` with a tuple of dims (torch's node name)."""
    _node_name = "SqueezeBackward2"


def squeeze(input: Tensor, dim=None) -> Tensor:
    """Remove the dimensions of size 1 (all of them, or those in ``dim``); a new view even
    when nothing is removed, as in torch."""
    shape = input._data.shape
    if dim is None:
        axes = tuple(i for i, s in enumerate(shape) if s == 1)
        fn = Squeeze.apply
    else:
        ds = _dim_list(dim, len(shape), "squeeze")
        axes = tuple(sorted(d for d in ds if shape and shape[d] == 1))
        fn = _SqueezeDim.apply if isinstance(dim, (int, np.integer)) else _SqueezeDims.apply
    return as_view(fn(input, axes), input, fn, axes)


class Unsqueeze(Function):
    """Insert a size-1 dimension (a view)."""
    _builtin = True
    _node_name = "UnsqueezeBackward0"

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        return make(xp_of(x._data).expand_dims(x._data, dim))

    jvp = _rules.linear()

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

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g.flip(ctx.axes), None


def _dim_list(dims, ndim: int, op: str) -> tuple:
    """An int or a sequence of ints as wrapped dims; a dim given twice is torch's error."""
    ds = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    out = tuple(wrap_dim(operator.index(d), ndim, op) for d in ds)
    for i, d in enumerate(out):
        if d in out[:i]:
            raise RuntimeError(f"{op}: dim {d} appears multiple times in the list of dims")
    return out


def flip(input: Tensor, *dims, **kwargs) -> Tensor:
    """Reverse ``input`` along each dimension in ``dims`` (``flip(x, (0, 1))``,
    ``x.flip(0, 1)``); returns a copy, as torch does."""
    if "dims" in kwargs:
        dims = (kwargs.pop("dims"),)
    if kwargs:
        raise TypeError(f"flip() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if len(dims) == 1 and not isinstance(dims[0], (int, np.integer)):
        dims = tuple(dims[0])
    axes = _dim_list(dims, input._data.ndim, "flip")
    if input._data.ndim == 0:
        axes = ()
    return Flip.apply(input, axes)


class Roll(Function):
    """Shift elements circularly along dims (the whole flattened tensor when ``dims`` is
    None); the gradient rolls back."""
    _builtin = True
    _node_name = "RollBackward0"

    @staticmethod
    def forward(ctx, x, shifts, dims):
        ctx.args = (tuple(-s for s in shifts), dims)
        a = x._data
        xp = xp_of(a)
        out = xp.roll(a, shifts[0]) if dims is None else xp.roll(a, shifts, axis=dims)
        return make(out.copy() if shares_memory(out, a) else out)  # always a new tensor

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return Roll.apply(g, *ctx.args), None, None


def roll(input: Tensor, shifts, dims=None) -> Tensor:
    """Roll ``input`` by ``shifts`` along ``dims`` (over the flattened tensor without dims);
    elements shifted past the end come back at the start."""
    shifts = (shifts,) if isinstance(shifts, (int, np.integer)) else tuple(shifts)
    shifts = tuple(operator.index(s) for s in shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                               "dims:0")
        return Roll.apply(input, shifts, None)
    ds = (dims,) if isinstance(dims, (int, np.integer)) else tuple(dims)
    if not shifts and not ds:
        raise RuntimeError("roll: `shifts` required")
    if len(shifts) != len(ds):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, "
                           f"dims:{len(ds)}")
    nd = input._data.ndim
    if nd == 0:
        raise IndexError(f"roll: Dimension specified as {ds[0]} but tensor has no dimensions")
    axes = tuple(wrap_dim(operator.index(d), nd, "roll") for d in ds)
    return Roll.apply(input, shifts, axes)


def movedim(input: Tensor, source, destination) -> Tensor:
    """Move dimensions ``source`` to positions ``destination`` (ints or sequences of ints);
    the others keep their order. A view (a permutation)."""
    nd = input._data.ndim
    src = (source,) if isinstance(source, (int, np.integer)) else tuple(source)
    dst = (destination,) if isinstance(destination, (int, np.integer)) else tuple(destination)
    if len(src) != len(dst):
        raise RuntimeError(f"movedim: Invalid source or destination dims: source "
                           f"({list(src)} dims) should contain the same number of dims as "
                           f"destination ({list(dst)} dims)")
    src = tuple(wrap_dim(operator.index(d), nd, "movedim") for d in src)
    dst = tuple(wrap_dim(operator.index(d), nd, "movedim") for d in dst)
    if len(set(src)) != len(src):
        raise RuntimeError(f"movedim: repeated dim in `source` ({list(source)})")
    if len(set(dst)) != len(dst):
        raise RuntimeError(f"movedim: repeated dim in `destination` ({list(destination)})")
    if nd == 0:
        return input
    order = [-1] * nd
    for s_, d_ in zip(src, dst):
        order[d_] = s_
    rest = iter(d for d in range(nd) if d not in src)
    order = tuple(o if o != -1 else next(rest) for o in order)
    return permute(input, order)


moveaxis = movedim


class Narrow(Function):
    """``length`` elements of dimension ``dim`` from ``start`` (a view)."""
    _builtin = True
    _node_name = "SliceBackward0"

    @staticmethod
    def forward(ctx, x, dim, start, length):
        ctx.args = (x.shape, dim, start, length)
        return make(x._data[(slice(None),) * dim + (slice(start, start + length),)])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return _NarrowBackward.apply(g, *ctx.args), None, None, None


class _NarrowBackward(Function):
    """Zeros of ``shape`` with ``g`` in the narrowed slice (Narrow's adjoint)."""
    _builtin = True
    _node_name = "SliceBackwardBackward0"

    @staticmethod
    def forward(ctx, g, shape, dim, start, length):
        ctx.args = (dim, start, length)
        out = xp_of(g._data).zeros(shape, dtype=g._data.dtype)
        out[(slice(None),) * dim + (slice(start, start + length),)] = g._data
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return Narrow.apply(gg, *ctx.args), None, None, None, None


def narrow(input: Tensor, dim: int, start, length: int) -> Tensor:
    """The view of ``input`` holding ``length`` elements of dimension ``dim`` from ``start``
    (negative ``start`` counts from the end)."""
    nd = input._data.ndim
    if nd == 0:
        raise RuntimeError("narrow() cannot be applied to a 0-dim tensor.")
    d = wrap_dim(dim, nd, "narrow")
    start, length = operator.index(start), operator.index(length)
    if length < 0:
        raise RuntimeError("narrow(): length must be non-negative.")
    n = input._data.shape[d]
    if not -n <= start <= n:
        raise IndexError(f"start out of range (expected to be in range of [{-n}, {n}], but got "
                         f"{start})")
    if start < 0:
        start += n
    if start + length > n:
        raise RuntimeError(f"start ({start}) + length ({length}) exceeds dimension size ({n}).")
    return as_view(Narrow.apply(input, d, start, length), input, Narrow.apply, d, start, length)


class Select(Function):
    """Index ``index`` of dimension ``dim``, which is removed (a view)."""
    _builtin = True
    _node_name = "SelectBackward0"

    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.args = (x.shape, dim, index)
        # The trailing Ellipsis keeps a 0-d result an array (a view), not a NumPy scalar.
        return make(x._data[(slice(None),) * dim + (index, Ellipsis)])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return _SelectBackward.apply(g, *ctx.args), None, None


class _SelectBackward(Function):
    """Zeros of ``shape`` with ``g`` at the selected index (Select's adjoint)."""
    _builtin = True
    _node_name = "SelectBackwardBackward0"

    @staticmethod
    def forward(ctx, g, shape, dim, index):
        ctx.args = (dim, index)
        out = xp_of(g._data).zeros(shape, dtype=g._data.dtype)
        out[(slice(None),) * dim + (index, Ellipsis)] = g._data
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return Select.apply(gg, *ctx.args), None, None, None


def select(input: Tensor, dim: int, index: int) -> Tensor:
    """``input`` at ``index`` along ``dim``, which is removed (a view)."""
    nd = input._data.ndim
    if nd == 0:
        raise IndexError("select() cannot be applied to a 0-dim tensor.")
    d = wrap_dim(dim, nd, "select")
    n = input._data.shape[d]
    index = operator.index(index)
    if not -n <= index < n:
        raise IndexError(f"select(): index {index} out of range for tensor of size "
                         f"{list(input.shape)} at dimension {dim}")
    index %= n
    return as_view(Select.apply(input, d, index), input, Select.apply, d, index)


class Repeat(Function):
    """``input`` tiled ``reps[i]`` times along each dim (leading dims are added as needed)."""
    _builtin = True
    _node_name = "RepeatBackward0"

    @staticmethod
    def forward(ctx, x, reps):
        a = x._data
        padded = (1,) * (len(reps) - a.ndim) + a.shape
        ctx.shapes = (a.shape, padded, reps)
        inter = tuple(v for pair in zip(reps, padded) for v in pair)
        out = xp_of(a).empty(tuple(r * s for r, s in zip(reps, padded)), dtype=a.dtype)
        # out seen as (r0, s0, r1, s1, ...): every r-slice gets a copy of the input.
        out.reshape(inter)[...] = a.reshape(tuple(v for s in padded for v in (1, s)))
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        shape, padded, reps = ctx.shapes
        inter = tuple(v for pair in zip(reps, padded) for v in pair)
        summed = g.reshape(inter).sum(tuple(range(0, 2 * len(reps), 2)))
        return summed.reshape(shape), None


def repeat(input: Tensor, *sizes) -> Tensor:
    """``input`` repeated ``sizes[i]`` times along dim ``i`` (torch's ``Tensor.repeat``; more
    sizes than dims add leading dims); always a copy."""
    reps = _size_args(sizes, "repeat")
    nd = input._data.ndim
    if len(reps) < nd:
        raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number "
                           f"of dimensions of tensor (repeat dims {list(reps)} for a tensor of "
                           f"shape {list(input.shape)})")
    padded = (1,) * (len(reps) - nd) + input._data.shape
    if any(r < 0 for r in reps):
        out = [r * s for r, s in zip(reps, padded)]
        bad = next(o for o in out if o < 0) if any(o < 0 for o in out) else min(reps)
        raise RuntimeError(f"Trying to create tensor with negative dimension {bad}: {out}")
    if not reps:
        return Repeat.apply(input, ())
    return Repeat.apply(input, reps)


def tile(input: Tensor, *dims, **kwargs) -> Tensor:
    """``input`` repeated ``dims[i]`` times along each dim; fewer dims than the tensor has
    are padded with leading 1s (``torch.tile``)."""
    if "dims" in kwargs:
        dims = (kwargs.pop("dims"),)
    if kwargs:
        raise TypeError(f"tile() got an unexpected keyword argument {next(iter(kwargs))!r}")
    reps = _size_args(dims, "tile")
    reps = (1,) * (input._data.ndim - len(reps)) + reps
    return repeat(input, reps)
