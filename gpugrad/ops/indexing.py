"""Indexing: ``x[idx]`` and the index-based ops (gather, scatter, index_select, index_add,
index_fill, masked_fill, masked_select, take, index_put, nonzero).

Every index form torch accepts goes through one normalizer, ``normalize_index``, which checks
it with torch's errors and turns it into an index NumPy/CuPy apply with torch's meaning:

- basic indices (ints, slices, None, Ellipsis) give a view, as in torch;
- advanced indices (integer and boolean tensors, lists, arrays) give a copy. Boolean masks
  become their ``nonzero()`` integer arrays. Where NumPy's rule for the place of the
  broadcast index dimensions differs from torch's (torch applies ints first, as ``select``;
  NumPy counts them among the advanced indices), the index is rewritten so that NumPy
  gives torch's layout.

The backward of an advanced index scatters with accumulation (repeated indices add up): one
helper, ``_add_at``, does it with ``numpy.add.at`` or ``cupyx.scatter_add``.
"""
from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import _backend, _capture
from .._tensor import Tensor, _wrap_dim
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import check_broadcast, is_scalar, make, xp_of
from ._compat import host_minmax, scatter_add as _scatter_add
from ._views import as_view

__all__ = ["normalize_index", "getitem", "index_put", "index_put_", "gather", "scatter",
           "scatter_add", "index_select", "index_add", "index_fill", "masked_fill",
           "masked_select", "take", "nonzero", "argwhere"]

_ndarray = np.ndarray
_INVALID = ("only integers, slices (`:`), ellipsis (`...`), None and long or byte Variables "
            "are valid indices (got {})")
_INDEX_DTYPE = "tensors used as indices must be long, int, byte or bool tensors"
_SEQ_AS_TUPLE = ("Using a non-tuple sequence for multidimensional indexing is deprecated; use "
                 "x[tuple(seq)] instead of x[seq] (a list holding tensors, lists, slices, None "
                 "or ... is read as a tuple of indices, as torch does).")
_TORCH_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
                "bool": "Bool"}


def _torch_name(dtype) -> str:
    return _TORCH_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


# ---- scatter with accumulation: the one NumPy/CuPy difference ---------------------------------
def _add_at(out, idx, values) -> None:
    """``out[idx] += values`` where repeated positions in ``idx`` all add up (``numpy.add.at``
    or ``cupyx.scatter_add``, which needs help for int64/narrow-int/bool: see ``_compat``)."""
    _scatter_add(out, idx, values)


# ---- the index normalizer ---------------------------------------------------------------------
class Indexed:
    """A normalized index: ``index`` (a tuple for ``array[index]``), ``advanced`` (it copies),
    ``accumulate`` (positions may repeat: scatter its adjoint with ``_add_at``), ``shape``
    (the shape of ``input[index]``, torch's; None until ``_result_shape`` computes it, for
    some basic indices) and ``last`` (for a basic index, the last view op torch applies:
    ``_SELECT``, ``_SLICE_OP``, ``_UNSQUEEZE`` or ``_ALIAS``; it names the grad_fn)."""

    __slots__ = ("index", "advanced", "accumulate", "shape", "last")

    def __init__(self, index, advanced, accumulate, shape, last=None) -> None:
        self.index, self.advanced, self.accumulate, self.shape = index, advanced, accumulate, shape
        self.last = last


_NONE, _ELLIPSIS, _INT, _SLICE, _BOOL, _ARRAY, _MASK = range(7)
# The view op torch applies last for a basic index (torch runs select / slice / unsqueeze one
# item at a time, skipping a full slice inside a tuple; nothing applied is an alias).
_SELECT, _SLICE_OP, _UNSQUEEZE, _ALIAS = range(4)


def _trivial_slice(s: slice, size: int) -> bool:
    """torch skips ``start == 0, stop >= size, step == 1`` slices inside a tuple index (it
    compares the start as written: ``-size:`` is still sliced)."""
    start, stop, step = s.start, s.stop, s.step
    return (start is None or start == 0) and (step is None or step == 1) and \
        (stop is None or stop >= size)


def _items(idx) -> tuple:
    """The index as a tuple of items; a short list holding tensors, sequences, slices, None or
    Ellipsis is read as a tuple (torch's legacy rule, with its deprecation warning)."""
    if idx.__class__ is tuple:
        return idx
    if idx.__class__ is list and len(idx) < 32:
        for e in idx:
            if e is None or e is Ellipsis or isinstance(e, (Tensor, list, tuple, slice,
                                                            _ndarray)):
                warnings.warn(_SEQ_AS_TUPLE, UserWarning, stacklevel=4)
                return tuple(idx)
    return (idx,)


def _on_device(a, device):
    """Index array ``a`` on ``device``: CPU indices may index tensors on any device."""
    if a.__class__ is _ndarray:
        return a if device.type == "cpu" else _backend.to_device(a, device)
    if _backend.device_of_array(a) != device:
        raise IndexError(f"indices should be either on cpu or on the same device as the indexed "
                         f"tensor ({device})")
    return a


def _array_item(a, device, from_numpy: bool):
    """Classify an index array (from a tensor, NumPy, or a list)."""
    dt = a.dtype
    if dt == np.bool_ or dt == np.uint8:
        if dt == np.uint8:
            warnings.warn("indexing with dtype uint8 is now deprecated, please use a dtype bool "
                          "instead.", UserWarning, stacklevel=5)
        if a.ndim == 0:
            return _BOOL, bool(a)
        return _MASK, _on_device(a.astype(np.bool_, copy=False), device)
    if dt.kind in "iu" and (from_numpy or dt == np.int64 or dt == np.int32):
        if a.ndim == 0:
            return _INT, int(a)
        return _ARRAY, _on_device(a, device)
    raise IndexError(_INDEX_DTYPE)


def _parse(item, device):
    """(kind, value) of one index item."""
    if item is None:
        return _NONE, None
    if item is Ellipsis:
        return _ELLIPSIS, None
    cls = item.__class__
    if cls is int:
        return _INT, item
    if cls is slice:
        if item.step is not None:
            step = item.step.__index__()
            if step == 0:
                raise ValueError("slice step cannot be zero")
            if step < 0:
                raise ValueError("step must be greater than zero")
        return _SLICE, item
    if cls is bool:
        return _BOOL, item
    if isinstance(item, Tensor):
        return _array_item(item._data, device, False)
    if isinstance(item, _ndarray):
        return _array_item(_host_index(item), device, True)
    if isinstance(item, np.bool_):
        raise IndexError(_INVALID.format(f"numpy.{type(item).__name__}"))
    if isinstance(item, (str, bytes)):
        raise TypeError(_INVALID.format(type(item).__name__))
    if isinstance(item, (numbers.Integral, np.integer)):
        return _INT, int(item)
    if isinstance(item, (list, tuple)):
        try:
            a = np.asarray(item)
        except ValueError:
            raise IndexError(f"the index {item!r} is a ragged sequence; index lists must be "
                             "rectangular") from None
        return _array_item(_host_index(a.astype(np.int64) if a.size == 0 else a), device, True)
    raise IndexError(_INVALID.format(type(item).__name__))


def _host_index(a):
    """A NumPy array or list used as an index, as torch converts it: bool and uint8 stay (masks),
    other numbers become int64 (floats truncated toward zero, as torch does)."""
    kind = a.dtype.kind
    if kind == "b" or a.dtype == np.uint8 or a.dtype == np.int64:
        return a
    if kind in "iuf":
        return a.astype(np.int64)
    raise TypeError(f"can't use an array of dtype {a.dtype} as an index; use integer or "
                    "boolean values")


def _slice_len(s: slice, n: int) -> int:
    return len(range(*s.indices(n)))


def normalize_index(idx, shape, device=None) -> tuple:
    """Check ``idx`` (any index torch accepts in ``x[idx]``) against a tensor of ``shape`` on
    ``device`` (a gpugrad device; None means the CPU) and return the equivalent index for a
    NumPy/CuPy array of that device: a tuple of ints, slices, None, integer arrays of the
    device's array module and 0-d boolean arrays (for ``x[True]``), ending with Ellipsis.

    ``array[normalize_index(idx, a.shape, device)]`` has torch's values and shape, and
    ``array[...] = values`` writes torch's elements. Errors are torch's (IndexError for
    out-of-bounds, bad dtypes, mask shapes; ValueError for a slice step <= 0)."""
    return _normalize(idx, tuple(shape), _backend.CPU if device is None else
                      _backend.canonical_device(device)).index


def _normalize(idx, shape: tuple, device) -> Indexed:
    ndim = len(shape)
    # Fast paths: one int, one slice or None (the hot cases of x[i], x[a:b], x[None]).
    cls = idx.__class__
    if cls is int:
        if ndim == 0:
            raise IndexError("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
                             "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")
        size = shape[0]
        if not -size <= idx < size:
            raise IndexError(f"index {idx} is out of bounds for dimension 0 with size {size}")
        return Indexed((idx, Ellipsis), False, False, shape[1:], _SELECT)
    if cls is slice and ndim and (idx.step is None or (idx.step.__class__ is int
                                                       and idx.step > 0)):
        return Indexed((idx, Ellipsis), False, False, None, _SLICE_OP)
    if idx is None:
        return Indexed((None, Ellipsis), False, False, (1,) + shape, _UNSQUEEZE)
    if cls is tuple:
        fast = _basic_fast(idx, shape)
        if fast is not None:
            return fast
    parsed = [_parse(i, device) for i in _items(idx)]

    consumed = 0
    for kind, v in parsed:
        if kind == _INT or kind == _SLICE or kind == _ARRAY:
            consumed += 1
        elif kind == _MASK:
            consumed += v.ndim
    if consumed > ndim:
        if ndim == 0 and cls is slice:
            raise IndexError("slice() cannot be applied to a 0-dim tensor.")
        if ndim == 0 and cls is not tuple and parsed[0][0] == _INT:
            raise IndexError("invalid index of a 0-dim tensor. Use `tensor.item()` in Python or "
                             "`tensor.item<T>()` in C++ to convert a 0-dim tensor to a number")
        raise IndexError(f"too many indices for tensor of dimension {ndim}")

    # Walk the items: `d` is the input dim. `items` are
    # (kind, value, size of the input dim); `post` is the shape after the basic indices
    # (selects, slices, unsqueezes), which torch's mask errors print.
    items = []
    post = []
    masks = []
    d = 0
    for pos, (kind, v) in enumerate(parsed):
        if kind == _ELLIPSIS:
            span = ndim - consumed
            consumed = ndim  # as in torch, a second Ellipsis spans no dims
            for k in range(span):
                items.append((_SLICE, slice(None), shape[d + k]))
                post.append(shape[d + k])
            d += span
        elif kind == _NONE:
            items.append((_NONE, None, 1))
            post.append(1)
        elif kind == _INT:
            size = shape[d]
            if not -size <= v < size:  # torch names the item's position in the index
                raise IndexError(f"index {v} is out of bounds for dimension {pos} with size "
                                 f"{size}")
            items.append((_INT, v, size))
            d += 1
        elif kind == _SLICE:
            items.append((_SLICE, v, shape[d]))
            post.append(_slice_len(v, shape[d]))
            d += 1
        elif kind == _BOOL:
            items.append((_BOOL, v, 1))
            post.append(1)
        elif kind == _ARRAY:
            items.append((_ARRAY, v, shape[d]))
            post.append(shape[d])
            d += 1
        else:  # _MASK
            masks.append((v, len(post)))
            items.append((_MASK, v, shape[d:d + v.ndim]))
            post.extend(shape[d:d + v.ndim])
            d += v.ndim
    trailing = shape[d:]
    post.extend(trailing)

    if not any(k == _ARRAY or k == _MASK or k == _BOOL for k, _, _ in items):
        out_shape = tuple(_slice_len(v, n) if k == _SLICE else 1
                          for k, v, n in items if k != _INT) + trailing
        last = _ALIAS
        if cls is slice:
            last = _SLICE_OP
        else:
            for k, v, n in items:
                if k == _INT:
                    last = _SELECT
                elif k == _NONE:
                    last = _UNSQUEEZE
                elif not _trivial_slice(v, n):
                    last = _SLICE_OP
        return Indexed(tuple(v for _, v, _ in items) + (Ellipsis,), False, False, out_shape,
                       last)

    for m, at in masks:
        ms = m.shape
        for j, s in enumerate(ms):
            if s != post[at + j]:
                raise IndexError(f"The shape of the mask {list(ms)} at index {j} does not match "
                                 f"the shape of the indexed tensor {post} at index {at + j}")
    return _advanced(items, trailing, device)


def _basic_fast(idx: tuple, shape: tuple):
    """The Indexed of a tuple of ints, slices with positive steps and None (the common case),
    or None for anything else (the general path checks it)."""
    d = 0
    ndim = len(shape)
    last = _ALIAS
    for pos, i in enumerate(idx):
        c = i.__class__
        if c is int:
            if d == ndim:
                return None
            size = shape[d]
            if not -size <= i < size:
                raise IndexError(f"index {i} is out of bounds for dimension {pos} with size "
                                 f"{size}")
            d += 1
            last = _SELECT
        elif c is slice:
            step = i.step
            if d == ndim or not (step is None or (step.__class__ is int and step > 0)):
                return None
            if not _trivial_slice(i, shape[d]):
                last = _SLICE_OP
            d += 1
        elif i is None:
            last = _UNSQUEEZE
        else:
            return None
    return Indexed(idx + (Ellipsis,), False, False, None, last)


def _result_shape(ix: Indexed, shape: tuple) -> tuple:
    if ix.shape is None:  # basic: NumPy's view has torch's shape; index a 0-byte stand-in
        ix.shape = np.broadcast_to(np.zeros((), np.bool_), shape)[ix.index].shape
    return ix.shape


def _advanced(items, trailing, device) -> Indexed:
    """The NumPy/CuPy form of an index with advanced items (see the module docstring)."""
    xp = _backend.array_module(device)
    # Expand masks into their nonzero() arrays; bool scalars become 0-d bool arrays (NumPy and
    # torch agree: a new dim of size 1 or 0, indexed as an advanced index).
    flat = []
    n_masks = n_arrays = 0
    for kind, v, n in items:
        if kind == _MASK:
            n_masks += 1
            for k, a in enumerate(xp.nonzero(v)):
                flat.append((_ARRAY, a, n[k]))
        elif kind == _BOOL:
            flat.append((_BOOL, xp.asarray(v), 1))
        else:
            if kind == _ARRAY:
                n_arrays += 1
            flat.append((kind, v, n))
    # The index arrays broadcast together, and are in bounds (torch numbers them among the
    # index tensors in its message).
    shapes = [a.shape if kind == _ARRAY else (1,) if a else (0,)
              for kind, a, _ in flat if kind == _ARRAY or kind == _BOOL]
    try:
        bshape = np.broadcast_shapes(*shapes)
    except ValueError:
        raise IndexError("shape mismatch: indexing tensors could not be broadcast together with "
                         "shapes " + ", ".join(str(list(s)) for s in shapes)) from None
    k = 0
    for kind, a, n in (flat if 0 not in bshape else ()):  # nothing read: torch checks nothing
        if kind == _ARRAY:
            bad = _out_of_bounds(a, -n, n)
            if bad is not None:
                raise IndexError(f"index {bad} is out of bounds for dimension {k} with size {n}")
        if kind == _ARRAY or kind == _BOOL:
            k += 1

    adv, dims, ints = [], [], []  # positions of advanced items, of slices/None, of ints
    for i, (kind, _, _) in enumerate(flat):
        (dims if kind == _SLICE or kind == _NONE else ints if kind == _INT else adv).append(i)
    first, last = adv[0], adv[-1]
    # torch: ints are selects, so advanced indices are adjacent when only ints lie between.
    torch_adjacent = not any(first < i < last for i in dims)
    torch_pos = sum(1 for i in dims if i < first) if torch_adjacent else 0
    np_pos = torch_pos
    if ints:  # NumPy counts ints among the advanced indices
        lo, hi = min(first, ints[0]), max(last, ints[-1])
        np_pos = 0 if any(lo < i < hi for i in dims) else sum(1 for i in dims if i < lo)
    result_dims = [_slice_len(v, n) if kind == _SLICE else 1
                   for kind, v, n in (flat[i] for i in dims)]
    out_shape = tuple(result_dims[:torch_pos]) + bshape + tuple(result_dims[torch_pos:]) + \
        trailing
    accumulate = not (n_masks == 1 and n_arrays == 0)  # one mask: no position repeats
    if torch_pos == np_pos:
        index = tuple(v for _, v, _ in flat) + (Ellipsis,)
        return Indexed(index, True, accumulate, out_shape)
    # Torch keeps the advanced dims in place, NumPy would move them to the front (a stray int
    # separated from them by slices). Make every item from the first int/advanced one to the
    # last an explicit broadcast array, laid out as torch's result: NumPy then sees one block.
    span = flat[lo:hi + 1]
    pre = [i for i in range(lo, hi + 1) if i in dims and i < first]
    post_ = [i for i in range(lo, hi + 1) if i in dims and i > last]
    full = tuple(result_dims[dims.index(i)] for i in pre) + bshape + \
        tuple(result_dims[dims.index(i)] for i in post_)
    r = len(full)
    index = [v for _, v, _ in flat[:lo]]
    for j, (kind, v, n) in enumerate(span, start=lo):
        if kind == _SLICE:
            p = pre.index(j) if j in pre else len(pre) + len(bshape) + post_.index(j)
            shp = [1] * r
            shp[p] = -1
            index.append(xp.broadcast_to(xp.arange(*v.indices(n)).reshape(shp), full))
        elif kind == _ARRAY:
            lead = len(pre) + len(bshape) - v.ndim
            a = v.reshape((1,) * lead + v.shape + (1,) * len(post_))
            index.append(xp.broadcast_to(a, full))
        elif kind == _INT:  # an array too, so that the block has `full`'s shape in any case
            index.append(xp.broadcast_to(xp.asarray(v), full))
        # None and bool scalars: their size-1 (or 0) dims are part of `full` already
    index.extend(v for _, v, _ in flat[hi + 1:])
    return Indexed(tuple(index) + (Ellipsis,), True, accumulate, out_shape)


# ---- x[idx] -----------------------------------------------------------------------------------
class Index(Function):
    """``x[idx]`` for a normalized index; the backward writes (or, where positions may repeat,
    adds) the gradient into zeros."""
    _builtin = True
    _node_name = "IndexBackward0"

    @staticmethod
    def forward(ctx, x, idx, accumulate=False):
        ctx.meta = (x._data.shape, idx, accumulate)
        return make(x._data[idx])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        shape, idx, accumulate = ctx.meta
        return _IndexScatter.apply(g, shape, idx, accumulate), None, None


class _IndexScatter(Function):
    """Zeros of ``shape`` with ``g`` written (or added) at ``idx``: the adjoint of Index."""
    _builtin = True
    _node_name = "IndexPutBackward0"

    @staticmethod
    def forward(ctx, g, shape, idx, accumulate=False):
        ctx.meta = (idx, accumulate)
        a = g._data
        out = xp_of(a).zeros(shape, dtype=a.dtype)
        if accumulate:
            _add_at(out, idx, a)
        else:
            out[idx] = a
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        idx, accumulate = ctx.meta
        return Index.apply(gg, idx, accumulate), None, None, None


class _SelectView(Index):
    """A basic index whose last op in torch is a select (``x[0]``, ``x[:, 1]``)."""
    _node_name = "SelectBackward0"


class _SliceView(Index):
    """A basic index whose last op in torch is a slice (``x[1:3]``, ``x[0, ::2]``)."""
    _node_name = "SliceBackward0"


class _UnsqueezeView(Index):
    """A basic index whose last op in torch is an unsqueeze (``x[None]``, ``x[0, None]``)."""
    _node_name = "UnsqueezeBackward0"


class _AliasView(Index):
    """A basic index that selects everything (``x[...]``, ``x[:, :]``): torch's alias."""
    _node_name = "AliasBackward0"


# One node per basic index, whatever its length (fast), named after the op torch would
# have applied last, which is the grad_fn torch prints.
_VIEW_FN = (_SelectView.apply, _SliceView.apply, _UnsqueezeView.apply, _AliasView.apply)


def getitem(input: Tensor, idx) -> Tensor:
    """``input[idx]`` with every index torch accepts: ints, slices (with steps), None, Ellipsis
    (a view), and integer/boolean tensors, lists and arrays, alone or mixed (a copy)."""
    ix = _normalize(idx, input._data.shape, _device(input))
    if not ix.advanced:
        fn = _VIEW_FN[ix.last]
        return as_view(fn(input, ix.index), input, fn, ix.index)
    return Index.apply(input, ix.index, ix.accumulate)


def _device(t: Tensor):
    a = t._data
    return _backend.CPU if a.__class__ is _ndarray else _backend.device_of_array(a)


# ---- index_put and the general write (x[idx] = v) ---------------------------------------------
class _ZeroAt(Function):
    """A copy of ``g`` with the elements at ``idx`` set to zero (its own adjoint)."""
    _builtin = True

    @staticmethod
    def forward(ctx, g, idx):
        ctx.idx = idx
        out = g._data.copy()
        out[idx] = 0
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return _ZeroAt.apply(gg, ctx.idx), None


class Put(Function):
    """``input`` with ``values`` written (or, with ``accumulate``, added) at a normalized index.

    The gradient of ``input`` is the incoming one with the written region zeroed (unless
    accumulating); that of ``values`` is the incoming one at the region (``g[idx]``, summed by
    the engine to the values' shape)."""
    _builtin = True
    _node_name = "IndexPutBackward0"

    @staticmethod
    def forward(ctx, x, values, ix, accumulate):
        ctx.meta = (ix, accumulate)
        out = x._data.copy()
        v = values._data if isinstance(values, Tensor) else values
        if accumulate:
            _add_at(out, ix.index, v if is_scalar(v) else v.astype(out.dtype, copy=False))
        else:
            out[ix.index] = v
        return make(out)

    jvp = _rules.linear(zero=(1,), all_tensors=True)

    @staticmethod
    def backward(ctx, g):
        ix, accumulate = ctx.meta
        nx, nv = ctx.needs_input_grad[:2]
        gx = (g if accumulate else _ZeroAt.apply(g, ix.index)) if nx else None
        gv = None
        if nv:
            gv = Index.apply(g, ix.index, ix.accumulate)
            if not ix.advanced:
                gv = gv.clone()  # a fresh tensor, not a view into g
        return gx, gv, None, None


def _put(input: Tensor, idx, values, accumulate: bool = False) -> Tensor:
    """``input`` with ``values`` written at ``idx`` (any index of ``x[idx]``), out of place:
    ``x[idx] = values`` is ``apply_inplace(x, "index_put_", _put, idx, values, False)``.

    ``values`` is a tensor (cast to input's dtype, broadcast to the shape of ``input[idx]``;
    extra leading size-1 dims are dropped, as in torch) or a number."""
    ix = _normalize(idx, input._data.shape, _device(input))
    if isinstance(values, Tensor):
        values = _fit_values(values, _result_shape(ix, input._data.shape))
    elif not is_scalar(values):
        raise TypeError(f"index_put_(): values must be a Tensor or a number, not "
                        f"{type(values).__name__}")
    elif accumulate:
        values = make(xp_of(input._data).asarray(values, dtype=input._data.dtype))
    return Put.apply(input, values, ix, accumulate)


def _fit_values(values: Tensor, shape: tuple) -> Tensor:
    vs = given = tuple(values.shape)
    if len(vs) > len(shape):
        extra = len(vs) - len(shape)
        if all(s == 1 for s in vs[:extra]):
            values = values.reshape(vs[extra:])
            vs = vs[extra:]
    if len(vs) > len(shape) or any(a != b and a != 1 for a, b in zip(vs[::-1], shape[::-1])):
        raise RuntimeError(f"shape mismatch: value tensor of shape {list(given)} cannot "
                           f"be broadcast to indexing result of shape {list(shape)}")
    return values


def index_put(input: Tensor, indices, values: Tensor, accumulate: bool = False) -> Tensor:
    """``input`` with ``values`` put at ``input[indices]`` (a tuple of index tensors), out of
    place; ``accumulate=True`` adds instead, repeated positions adding up."""
    if not isinstance(indices, (tuple, list)):
        raise TypeError(f"index_put(): argument 'indices' (position 2) must be tuple of Tensors, "
                        f"not {type(indices).__name__}")
    for k, i in enumerate(indices):
        if not isinstance(i, Tensor):
            raise TypeError(f"expected Tensor as element {k} in argument 1, but got "
                            f"{type(i).__name__}")
    if not isinstance(values, Tensor):
        raise TypeError(f"index_put(): argument 'values' (position 3) must be Tensor, not "
                        f"{type(values).__name__}")
    if values.dtype != input.dtype:
        raise RuntimeError(f"Index put requires the source and destination dtypes match, got "
                           f"{_torch_name(input._data.dtype)} for the destination and "
                           f"{_torch_name(values._data.dtype)} for the source.")
    consumed = sum(i._data.ndim if i._data.dtype in (np.bool_, np.uint8) else 1
                   for i in indices)
    if consumed > input._data.ndim:
        raise IndexError(f"too many indices for tensor of dimension {input._data.ndim} (got "
                         f"{consumed})")
    return _put(input, tuple(indices), values, accumulate)


def index_put_(input: Tensor, indices, values: Tensor, accumulate: bool = False) -> Tensor:
    """In-place ``index_put``; returns ``input``."""
    from .inplace import apply_inplace
    return apply_inplace(input, "index_put_", index_put, indices, values, accumulate)


# ---- helpers of the dim-wise ops --------------------------------------------------------------
def _check_index_dtype(index, op: str, msg=None) -> None:
    if not isinstance(index, Tensor):
        raise TypeError(f"{op}(): argument 'index' must be Tensor, not {type(index).__name__}")
    if index._data.dtype not in (np.int64, np.int32):
        raise RuntimeError(msg or f"{op}(): Expected dtype int32/int64 for index")


def _out_of_bounds(a, low: int, high: int):
    """The first entry of index array ``a`` outside ``[low, high)``, or None. Inside a CUDA
    graph capture there is none to report: the check reads the indices on the host, which a
    capture cannot do (and a replay would not redo); torch's kernels check on the device
    instead, and CuPy's indexing wraps an out-of-range index rather than reading outside the
    array. Eager calls (and the warm-up calls before a capture) keep the check."""
    if a.size == 0 or _capture.cuda_capturing:
        return None
    lo, hi = host_minmax(a)  # one pass each (one host transfer on CUDA); the common case
    if lo >= low and hi < high:
        return None
    return int(a[(a < low) | (a >= high)].ravel()[0])


def _check_bounds(a, size: int, dim: int, op: str, negative: bool = False) -> None:
    """torch's out-of-bounds error for index array ``a`` into a dim of ``size``."""
    bad = _out_of_bounds(a, -size if negative else 0, size)
    if bad is not None:
        raise RuntimeError(f"{op}: index {bad} is out of bounds for dimension {dim} with size "
                           f"{size}")


def _along(index, dim: int) -> tuple:
    """The NumPy index of ``gather``/``scatter``: ``index`` along ``dim``, the position itself
    along every other dim (``out[i][j] = x[index[i][j]][j]`` for dim 0)."""
    xp = xp_of(index)
    nd = index.ndim
    out = []
    for d in range(nd):
        if d == dim:
            out.append(index)
        else:
            shp = [1] * nd
            shp[d] = index.shape[d]
            out.append(xp.arange(index.shape[d]).reshape(shp))
    return tuple(out)


def _dim_index(index, dim: int) -> tuple:
    """The NumPy index selecting ``index`` (1-D) along ``dim``."""
    return (slice(None),) * dim + (index, Ellipsis)


def _pad_to(g: Tensor, shape: tuple) -> Tensor:
    """``g`` in the leading corner of zeros of ``shape`` (differentiable)."""
    if tuple(g.shape) == tuple(shape):
        return g
    zeros = make(xp_of(g._data).zeros(shape, dtype=g._data.dtype))
    region = Indexed(tuple(slice(0, s) for s in g.shape) + (Ellipsis,), False, False,
                     tuple(g.shape))
    return Put.apply(zeros, g, region, False)


# ---- gather / scatter / scatter_add -----------------------------------------------------------
def _gather_checks(input: Tensor, dim: int, index: Tensor, op: str) -> int:
    _check_index_dtype(index, op)
    nd = input._data.ndim
    dim = _wrap_dim(dim, nd, op)
    ishape, xshape = index._data.shape, input._data.shape
    if index._data.ndim != max(nd, 1) and not (nd == 0 and index._data.ndim == 0):
        raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    if nd:
        for d in range(nd):
            if d != dim and ishape[d] > xshape[d]:
                raise RuntimeError(f"Size does not match at dimension {d} expected index "
                                   f"{list(ishape)} to be no larger than self {list(xshape)} "
                                   f"apart from dimension {dim}")
    return dim


class Gather(Function):
    """``out[i][j] = input[index[i][j]][j]`` (dim 0), and likewise along any dim."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index):
        a, i = x._data, index._data
        if a.ndim == 0:
            a, i = a.reshape(1), i.reshape(1)
        _check_bounds(i, a.shape[dim], dim, "gather")
        ctx.meta = (x.shape, dim)
        ctx.save_for_backward(index)
        return make(a[_along(i, dim)].reshape(index._data.shape))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        shape, dim = ctx.meta
        index, = ctx.saved_tensors
        zeros = make(xp_of(g._data).zeros(shape, dtype=g._data.dtype))
        return ScatterAdd.apply(zeros, dim, index, g), None, None


def gather(input: Tensor, dim: int, index: Tensor, *, sparse_grad: bool = False) -> Tensor:
    """Values of ``input`` along ``dim`` at ``index`` (same number of dims as input)."""
    dim = _gather_checks(input, dim, index, "gather")
    return Gather.apply(input, dim, index)


def _scatter_checks(input: Tensor, dim: int, index: Tensor, src, op: str) -> int:
    _check_index_dtype(index, op, msg="scatter(): Expected dtype int32/int64 for index")
    nd = input._data.ndim
    dim = _wrap_dim(dim, nd, op)
    ishape, xshape = index._data.shape, input._data.shape
    if index._data.ndim != nd:
        raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    if isinstance(src, Tensor):
        if src._data.ndim != nd:
            raise RuntimeError("Index tensor must have the same number of dimensions as src "
                               "tensor")
        if src._data.dtype != input._data.dtype:
            raise RuntimeError("scatter(): Expected self.dtype to be equal to src.dtype")
        sshape = src._data.shape
        if any(ishape[d] > sshape[d] or (d != dim and ishape[d] > xshape[d])
               for d in range(nd)):
            raise RuntimeError(f"Expected index {list(ishape)} to be no larger than self "
                               f"{list(xshape)} apart from dimension {dim} and to be no larger "
                               f"size than src {list(sshape)}")
    elif any(d != dim and ishape[d] > xshape[d] for d in range(nd)):
        raise RuntimeError(f"Expected index {list(ishape)} to be no larger than self "
                           f"{list(xshape)} apart from dimension {dim}")
    return dim


def _scatter_arrays(x, dim, index, src):
    a, i = x._data, index._data
    out = a.copy()
    view = out.reshape(1) if out.ndim == 0 else out
    i = i.reshape(1) if i.ndim == 0 else i
    _check_bounds(i, view.shape[dim], dim, "scatter")
    where = _along(i, dim)
    if isinstance(src, Tensor):
        s = src._data.reshape(1) if src._data.ndim == 0 else src._data
        src = s[tuple(slice(0, n) for n in i.shape)]
    return out, view, where, src


class Scatter(Function):
    """``input`` with ``src`` (a tensor, or a number) written along ``dim`` at ``index``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index, src):
        out, view, where, s = _scatter_arrays(x, dim, index, src)
        view[where] = s
        ctx.meta = (dim, src.shape if isinstance(src, Tensor) else None)
        ctx.save_for_backward(index)
        return make(out)

    jvp = _rules.linear(zero=(3,))

    @staticmethod
    def backward(ctx, g):
        dim, src_shape = ctx.meta
        index, = ctx.saved_tensors
        nx, _, _, ns = ctx.needs_input_grad
        gx = Scatter.apply(g, dim, index, 0) if nx else None
        gs = _pad_to(Gather.apply(g, dim, index), src_shape) if ns else None
        return gx, None, None, gs


class ScatterAdd(Function):
    """``input`` with ``src`` added along ``dim`` at ``index`` (repeated positions add up)."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index, src):
        out, view, where, s = _scatter_arrays(x, dim, index, src)
        _add_at(view, where, s)
        ctx.meta = (dim, src.shape)
        ctx.save_for_backward(index)
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        dim, src_shape = ctx.meta
        index, = ctx.saved_tensors
        nx, _, _, ns = ctx.needs_input_grad
        gs = _pad_to(Gather.apply(g, dim, index), src_shape) if ns else None
        return g if nx else None, None, None, gs


def scatter(input: Tensor, dim: int, index: Tensor, src=None, value=None, *,
            reduce=None) -> Tensor:
    """``input`` with ``src`` (a tensor; or ``value``, a number) written along ``dim`` at
    ``index``: ``out[index[i][j]][j] = src[i][j]`` for dim 0. Out of place."""
    if reduce is not None:
        raise NotImplementedError("scatter(reduce=...) is not supported; use scatter_add (or "
                                  "scatter_reduce when it exists)")
    if src is None:
        src = value
    if src is None:
        raise TypeError("scatter() missing 1 required argument: 'src' or 'value'")
    if not isinstance(src, Tensor) and not is_scalar(src):
        raise TypeError(f"scatter(): argument 'src' must be Tensor or a number, not "
                        f"{type(src).__name__}")
    dim = _scatter_checks(input, dim, index, src, "scatter")
    return Scatter.apply(input, dim, index, src)


def scatter_add(input: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    """``input`` with ``src`` added along ``dim`` at ``index``; repeated indices add up."""
    if not isinstance(src, Tensor):
        raise TypeError(f"scatter_add(): argument 'src' (position 4) must be Tensor, not "
                        f"{type(src).__name__}")
    dim = _scatter_checks(input, dim, index, src, "scatter_add")
    return ScatterAdd.apply(input, dim, index, src)


# ---- index_select / index_add / index_fill ----------------------------------------------------
class IndexSelect(Index):
    """``input`` at ``index`` (1-D) along one dim."""
    _node_name = "IndexSelectBackward0"


def index_select(input: Tensor, dim: int, index: Tensor) -> Tensor:
    """The entries of ``input`` at ``index`` (a vector) along ``dim``."""
    _check_index_dtype(index, "index_select",
                       msg="index_select(): Expected dtype int32 or int64 for index")
    if index._data.ndim > 1:
        raise IndexError("index_select(): Index is supposed to be a vector")
    nd = input._data.ndim
    dim = _wrap_dim(dim, nd, "index_select")
    i = _on_device(index._data.reshape(-1), _device(input))
    if nd == 0:
        _check_bounds(i, 1, 0, "index_select")
        return IndexSelect.apply(input.reshape(1), _dim_index(i, 0), True).reshape(i.shape[:0])
    _check_bounds(i, input._data.shape[dim], dim, "index_select")
    return IndexSelect.apply(input, _dim_index(i, dim), True)


def _index_vector(index, op: str):
    if index._data.ndim > 1:
        raise IndexError(f"{op}(): Index is supposed to be a vector, but got dim: "
                         f"{index._data.ndim} with type: {_torch_name(index._data.dtype)} and "
                         f"size: {list(index.shape)}")
    return index._data.reshape(-1)


class IndexAdd(Function):
    """``input`` with ``alpha * source`` added at ``index`` along ``dim``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index, source, alpha):
        out = x._data.copy()
        i = index._data.reshape(-1)
        s = source._data
        _add_at(out, _dim_index(i, dim), s if alpha == 1 else s * alpha)
        ctx.meta = (dim, alpha)
        ctx.save_for_backward(index)
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        dim, alpha = ctx.meta
        index, = ctx.saved_tensors
        nx, _, _, ns, _ = ctx.needs_input_grad
        gs = None
        if ns:
            gs = IndexSelect.apply(g, _dim_index(index._data.reshape(-1), dim), True)
            if alpha != 1:
                gs = gs * alpha
        return g if nx else None, None, None, gs, None


def _index_source_checks(op: str, input: Tensor, dim: int, index, source: Tensor) -> int:
    """The checks torch makes for index_add_/index_copy_ (in each one's words); returns
    ``dim`` wrapped."""
    copy = op == "index_copy_"
    _check_index_dtype(index, op, f"{op}(): Expected dtype int32/int64 for index but got: "
                       f"{_torch_name(getattr(index, '_data', np.empty(0)).dtype)}")
    i = _index_vector(index, op)
    nd = input._data.ndim
    dim = _wrap_dim(dim, nd, op.rstrip("_"))
    xs, ss = input._data.shape, source._data.shape
    if nd and (len(ss) != nd or any(a != b for d, (a, b) in enumerate(zip(xs, ss)) if d != dim)):
        raise RuntimeError(f"{op}(): source tensor shape must match self tensor shape, excluding "
                           f"the specified dimension. Got self.shape = {list(xs)} source.shape = "
                           f"{list(ss)}" if copy else
                           f"source tensor shape must match self tensor shape, excluding the "
                           f"specified dimension. Got self.shape = {list(xs)} source.shape = "
                           f"{list(ss)}")
    n_src = ss[dim] if nd else 1
    if i.size != n_src:
        if copy:
            raise IndexError(f"{op}(): Number of indices ({i.size}) should be equal to "
                             f"source.size(dim) ({n_src})")
        raise RuntimeError(f"{op}(): Number of indices ({i.size}) should be equal to "
                           f"source.size(dim): ({n_src}), for dim: {dim}")
    if source._data.dtype != input._data.dtype:
        a, b = _torch_name(input._data.dtype), _torch_name(source._data.dtype)
        raise RuntimeError(f"{op}(): self and source expected to have the same dtype, but got "
                           f"(self) {a} and (source) {b}" if copy else
                           f"{op}(): self ({a}) and source ({b}) must have the same scalar type")
    try:
        _check_bounds(i, xs[dim] if nd else 1, dim, f"{op}()" if copy else op)
    except RuntimeError as e:
        if copy:  # torch raises IndexError here
            raise IndexError(str(e)) from None
        raise
    return dim


def index_add(input: Tensor, dim: int, index: Tensor, source: Tensor, *, alpha=1) -> Tensor:
    """``input`` with ``alpha * source`` added at ``index`` (a vector) along ``dim``; repeated
    indices add up. Out of place."""
    dim = _index_source_checks("index_add_", input, dim, index, source)
    if input._data.ndim == 0:
        return IndexAdd.apply(input.reshape(1), 0, index, source.reshape(1), alpha).reshape(())
    return IndexAdd.apply(input, dim, index, source, alpha)


class IndexCopy(Function):
    """``input`` with the slices at ``index`` along ``dim`` replaced by ``source``'s."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index, source):
        out = x._data.copy()
        out[_dim_index(index._data.reshape(-1), dim)] = source._data
        ctx.meta = dim
        ctx.save_for_backward(index)
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        dim = ctx.meta
        index, = ctx.saved_tensors
        nx, _, _, ns = ctx.needs_input_grad
        return (IndexFill.apply(g, dim, index, 0) if nx else None, None, None,
                IndexSelect.apply(g, _dim_index(index._data.reshape(-1), dim), True)
                if ns else None)


def index_copy(input: Tensor, dim: int, index: Tensor, source: Tensor) -> Tensor:
    """``input`` with its slices at ``index`` (a vector) along ``dim`` replaced by the slices
    of ``source``, in order. Out of place; with repeated indices the last copy wins."""
    dim = _index_source_checks("index_copy_", input, dim, index, source)
    if input._data.ndim == 0:
        return IndexCopy.apply(input.reshape(1), 0, index, source.reshape(1)).reshape(())
    return IndexCopy.apply(input, dim, index, source)


class IndexFill(Function):
    """``input`` with ``value`` (a number or a 0-d tensor) at ``index`` along ``dim``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, index, value):
        out = x._data.copy()
        v = value._data if isinstance(value, Tensor) else value
        out[_dim_index(index._data.reshape(-1), dim)] = v
        ctx.meta = dim
        ctx.save_for_backward(index)
        return make(out)

    jvp = _rules.linear(zero=(3,))

    @staticmethod
    def backward(ctx, g):
        dim = ctx.meta
        index, = ctx.saved_tensors
        nx, _, _, nv = ctx.needs_input_grad
        rest = IndexFill.apply(g, dim, index, 0) if (nx or nv) else None
        return rest if nx else None, None, None, (g - rest).sum() if nv else None


def index_fill(input: Tensor, dim: int, index: Tensor, value) -> Tensor:
    """``input`` with ``value`` written at ``index`` (a vector) along ``dim``. Out of place."""
    if index._data.dtype != np.int64:
        raise IndexError("index_fill_(): Expected dtype int64 for index.")
    if index._data.ndim > 1:
        raise RuntimeError("Index has to be a vector/scalar")
    value = _fill_value(value, "index_fill_", input)
    nd = input._data.ndim
    dim = _wrap_dim(dim, nd, "index_fill")
    _check_bounds(index._data, input._data.shape[dim] if nd else 1, dim, "index_fill_",
                  negative=True)
    if nd == 0:
        return IndexFill.apply(input.reshape(1), 0, index, value).reshape(())
    return IndexFill.apply(input, dim, index, value)


def _fill_value(value, op: str, input: Tensor):
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(f"{op} only supports a 0-dimensional value tensor, but got tensor "
                               f"with {value._data.ndim} dimension(s).")
        return value if value.device == input.device else value.to(input.device)  # as torch
    if not is_scalar(value):
        raise TypeError(f"{op.rstrip('_')}(): argument 'value' must be a Number or a 0-d Tensor, "
                        f"not {type(value).__name__}")
    return value


# ---- masked_fill / masked_select --------------------------------------------------------------
def _check_mask(mask, op: str, msg: str):
    if not isinstance(mask, Tensor):
        raise TypeError(f"{op}(): argument 'mask' must be Tensor, not {type(mask).__name__}")
    if mask._data.dtype != np.bool_:
        raise RuntimeError(msg.format(_torch_dtype_word(mask._data.dtype)))


def _torch_dtype_word(dtype) -> str:
    return {"float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int",
            "int32": "int", "uint8": "unsigned char", "int8": "signed char",
            "int16": "short int"}.get(np.dtype(dtype).name, np.dtype(dtype).name)


class MaskedFill(Function):
    """``value`` where ``mask`` holds, ``input`` elsewhere (both broadcast)."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, mask, value):
        a, m = x._data, mask._data
        xp = xp_of(a)
        v = value._data if isinstance(value, Tensor) else value
        v = xp.asarray(v).astype(a.dtype)
        ctx.save_for_backward(mask)
        return make(xp.where(m, v, a))

    jvp = _rules.linear(zero=(2,))

    @staticmethod
    def backward(ctx, g):
        mask, = ctx.saved_tensors
        nx, _, nv = ctx.needs_input_grad
        gx = MaskedFill.apply(g, mask, 0) if nx else None
        gv = MaskedFill.apply(g, ~mask, 0).sum() if nv else None
        return gx, None, gv


def masked_fill(input: Tensor, mask: Tensor, value) -> Tensor:
    """``input`` with ``value`` (a number or a 0-d tensor) where ``mask`` (bool, broadcast)
    holds. Out of place."""
    _check_mask(mask, "masked_fill", "masked_fill_ only supports boolean masks, but got mask "
                "with dtype {}")
    value = _fill_value(value, "masked_fill_", input)
    check_broadcast("masked_fill", input._data.shape, mask._data.shape)
    return MaskedFill.apply(input, mask, value)


def masked_select(input: Tensor, mask: Tensor) -> Tensor:
    """The elements of ``input`` where ``mask`` (bool, broadcast with input) holds, as 1-D."""
    _check_mask(mask, "masked_select", "masked_select: expected BoolTensor for mask")
    xs, ms = input._data.shape, mask._data.shape
    if xs != ms:
        check_broadcast("masked_select", xs, ms)
        shape = np.broadcast_shapes(xs, ms)
        input = input.expand(shape) if xs != shape else input
        mask = mask.expand(shape) if ms != shape else mask
    if mask._data.ndim == 0:
        return getitem(input.reshape(1), mask.reshape(1))
    return getitem(input, mask)


class MaskedScatter(Function):
    """``source``'s first elements, in order, where ``mask`` holds; ``input`` elsewhere."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, mask, source, k):
        # k: the number of True in the mask, counted once by masked_scatter (a host sync)
        out = x._data.copy()
        m = mask._data
        out[m] = source._data.reshape(-1)[:k]
        ctx.meta = (m, k, tuple(source.shape))
        return make(out)

    jvp = _rules.linear(zero=(1,))

    @staticmethod
    def backward(ctx, g):
        m, k, src_shape = ctx.meta
        nx, _, ns, _ = ctx.needs_input_grad
        mask = Tensor._make(m)
        gs = None
        if ns:
            picked = masked_select(g, mask)
            n = int(np.prod(src_shape))
            if n > k:  # source elements past the k used get no gradient
                from .pad import pad
                picked = pad(picked, (0, n - k))
            gs = picked.reshape(src_shape)
        return MaskedFill.apply(g, mask, 0) if nx else None, None, gs, None


def masked_scatter(input: Tensor, mask: Tensor, source: Tensor) -> Tensor:
    """``input`` with the positions where ``mask`` (broadcast to ``input``) holds filled, in
    row-major order, from the first elements of ``source``. Out of place."""
    _check_mask(mask, "masked_scatter", "masked_scatter_ only supports boolean masks, but got "
                f"mask with dtype {_torch_name(getattr(mask, '_data', np.empty(0)).dtype)}")
    if source._data.dtype != input._data.dtype:
        raise RuntimeError(f"masked_scatter: expected self and source to have same dtypes but "
                           f"got{_torch_name(input._data.dtype)} and "
                           f"{_torch_name(source._data.dtype)}")  # sic: torch's missing space
    xp = xp_of(input._data)
    try:
        m = xp.broadcast_to(mask._data, input._data.shape)
    except ValueError:
        raise RuntimeError(f"masked_scatter_: the mask of shape {list(mask.shape)} cannot be "
                           f"broadcast to the tensor's shape {list(input.shape)}") from None
    k = int(m.sum())
    if k > source.numel():
        raise RuntimeError(f"masked_scatter: Number of elements of source < number of ones in "
                           f"mask (source has {source.numel()}, the mask {k} True values)")
    # a contiguous mask (not the broadcast view); ascontiguousarray would make a 0-d one 1-d
    m = m.copy() if m.ndim == 0 else xp.ascontiguousarray(m)
    return MaskedScatter.apply(input, Tensor._make(m), source, k)


# ---- take -------------------------------------------------------------------------------------
class Take(Index):
    """``input`` as 1-D at ``index``."""
    _node_name = "TakeBackward0"


def take(input: Tensor, index: Tensor) -> Tensor:
    """``input.flatten()[index]``: the result has the shape of ``index``."""
    if not isinstance(index, Tensor):
        raise TypeError(f"take(): argument 'index' (position 2) must be Tensor, not "
                        f"{type(index).__name__}")
    if index._data.dtype != np.int64:
        raise RuntimeError(f"take(): Expected a long tensor for index, but got "
                           f"{_torch_name(index._data.dtype)}")
    n = input._data.size
    i = _on_device(index._data, _device(input))
    bad = _out_of_bounds(i, -n, n)
    if bad is not None:
        raise IndexError(f"out of range: tried to access index {bad} on a tensor of {n} "
                         "elements.")
    return Take.apply(input.reshape(-1), (i, Ellipsis), True)


# ---- nonzero / argwhere -----------------------------------------------------------------------
def nonzero(input: Tensor, *, as_tuple: bool = False):
    """Indices of the non-zero elements: an (n, ndim) int64 tensor, or with ``as_tuple`` one
    1-D tensor per dim (one for a 0-d input). Not differentiable."""
    a = input._data
    xp = xp_of(a)
    if as_tuple:
        if a.ndim == 0:
            return (make(xp.zeros(int(a != 0), dtype=np.int64)),)
        return tuple(make(i.astype(np.int64, copy=False)) for i in xp.nonzero(a))
    if a.ndim == 0:
        return make(xp.zeros((int(a != 0), 0), dtype=np.int64))
    return make(xp.argwhere(a).astype(np.int64, copy=False))


def argwhere(input: Tensor) -> Tensor:
    """``nonzero(input)``: the (n, ndim) indices of the non-zero elements."""
    return nonzero(input)
