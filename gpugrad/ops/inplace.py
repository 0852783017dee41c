"""In-place ops (``add_``, ``mul_``, ``zero_``, ``copy_``, ``x += y``, ``x[i] = v`` ...).

An in-place op computes its out-of-place result, writes it into the tensor's own memory (so
every view of that memory sees it) and bumps the version counter shared with the views.
When recorded, the result's node becomes the tensor's new history:

- on a tensor that is not a view, directly;
- on a view, through its base: the base's history becomes ``CopySlices(old base, new
  values)``, whose backward sends the gradient of the written region to the new values and
  the rest to the old base; the view's history is then replayed from the base (ops/_views).

Tensors saved for a backward before the write are caught by their version check, except the
op's own input, of which a copy is kept when its backward needs it (as torch does).
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import _dtypes
from .._tensor import Tensor, _refresh_view, _replay
from ..autograd import grad_mode
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ..autograd import forward_ad as _forward_ad
from ..autograd import function as _function
from ._util import is_scalar, make, xp_of
from ._views import shares_memory

_state = grad_mode.state


def _recording(t: Tensor) -> bool:
    return _state.enabled and (t._requires_grad or (t._base is not None
                                                    and t._base._requires_grad))


def check_inplace(t: Tensor, op: str) -> None:
    """Refuse the in-place writes torch refuses, before anything is changed."""
    if _state.enabled:
        if t.grad_fn is None and t._requires_grad and t._base is None:
            raise RuntimeError(
                f"{op}: a leaf Variable that requires grad is being used in an in-place "
                "operation. Wrap the update in `with gpugrad.no_grad():` (e.g. an optimizer "
                "step), or apply it to a clone.")
        base = t._base
        if base is not None and base.grad_fn is None and base._requires_grad:
            raise RuntimeError(
                f"{op}: a view of a leaf Variable that requires grad is being used in an "
                "in-place operation. Wrap the update in `with gpugrad.no_grad():`, or write "
                "into a clone of the leaf.")
        if t._multi_view and (t._requires_grad or (base is not None and base._requires_grad)):
            raise RuntimeError(
                f"{op}: this tensor is a view made by a function that returns several views "
                "(split, chunk, unbind); such views cannot be modified in place while "
                "recording. Use an out-of-place op, or clone() the view first.")
    a = t._data
    if a.size > 1 and any(s == 0 and n > 1 for s, n in zip(a.strides, a.shape)):
        raise RuntimeError(
            f"{op}: unsupported operation: more than one element of the written-to tensor "
            "refers to a single memory location (an expanded tensor). Please clone() the "
            "tensor before performing the operation.")


def apply_inplace(t: Tensor, op: str, fn, *args, **kwargs) -> Tensor:
    """Run ``fn(t, *args)`` out of place and store the result into ``t``; returns ``t``.

    When nothing is recorded (an optimizer's ``p -= lr * p.grad`` under ``no_grad``), the
    arithmetic ops write straight into ``t``'s memory instead (``_direct``): no temporary of
    ``t``'s size, one pass instead of two."""
    if not kwargs and len(args) == 1 and not _function._fw_enabled:
        ufunc = _DIRECT.get(fn)
        if ufunc is not None and _direct(t, op, ufunc, args[0]):
            return t
    check_inplace(t, op)
    out = fn(t, *args, **kwargs)
    if out.shape != t.shape:
        raise RuntimeError(f"{op}: output with shape {list(t.shape)} doesn't match the broadcast "
                           f"shape {list(out.shape)}")
    if not _dtypes.can_cast(out.dtype, t.dtype):
        raise RuntimeError(f"{op}: result type {out.dtype} can't be cast to the desired output "
                           f"type {t.dtype}")
    if out.grad_fn is not None and out.grad_fn._saved:
        _save_original(out.grad_fn, t)
    a = t._data
    if out._data is not a:
        xp_of(a).copyto(a, out._data, casting="unsafe")
    t._version.value += 1
    if _state.enabled:
        _rebase(t, out)
    if _function._fw_enabled:  # a dual level is active: t (and its base) take out's tangent
        _forward_ad._after_inplace(t, out)
    return t


# The out-of-place ops whose in-place form may run as one ufunc into t (filled below, after
# the import of elementwise, which imports this module's package).
_DIRECT = {}


def _direct_ok(t: Tensor, other) -> bool:
    """Whether ``t op= other`` computes in ``t``'s own dtype with no recording, so that the
    ufunc written into ``t`` gives the very bits of the out-of-place result cast back to
    ``t``: a tensor of t's dtype and device that broadcasts to t's shape without aliasing it
    in another layout, or an int/float Python number with a float ``t``. Anything else (type
    promotion, errors to report, autograd) takes the general path."""
    a = t._data
    if isinstance(other, Tensor):
        b = other._data
        if b.dtype != a.dtype or b.__class__ is not a.__class__:
            return False
        if _state.enabled and (other._requires_grad or _recording(t)):
            return False
        if b.shape != a.shape:
            try:
                _broadcast_check(b.shape, a.shape)
            except ValueError:
                return False
        if b is not a and shares_memory(a, b):
            return False  # a partial overlap: the general path copies first
        if getattr(b, "device", None) != getattr(a, "device", None):
            return False  # CuPy arrays on two GPUs
        return a.dtype.kind in "fciu"
    if other.__class__ is float or other.__class__ is int:
        return a.dtype.kind in "fc" and not (_state.enabled and _recording(t))
    return False


def _direct(t: Tensor, op: str, ufunc, other) -> bool:
    """``t op= other`` as ``ufunc(t, other, out=t)`` when ``_direct_ok``; False otherwise."""
    if not _direct_ok(t, other):
        return False
    if ufunc is _TRUE_DIVIDE and t._data.dtype.kind not in "fc":
        return False  # int / int is float division: the general path reports the cast error
    check_inplace(t, op)
    a = t._data
    getattr(xp_of(a), ufunc)(a, other._data if isinstance(other, Tensor) else other, out=a)
    t._version.value += 1
    return True


_TRUE_DIVIDE = "true_divide"


def _rebase(t: Tensor, out: Tensor) -> None:
    """Make ``out``'s history the history of ``t`` (see the module docstring)."""
    base = t._base
    if base is None:
        if out.grad_fn is not None:
            t.grad_fn, t._output_nr, t._requires_grad = out.grad_fn, out._output_nr, True
        return
    if out.grad_fn is None and not base._requires_grad:
        return
    # The old base only carries the base's previous history into CopySlices.
    old = Tensor._make(base._data)
    old.grad_fn, old._output_nr, old._requires_grad = \
        base.grad_fn, base._output_nr, base._requires_grad
    new = CopySlices.apply(old, out, t._view_chain)
    base.grad_fn, base._output_nr, base._requires_grad = new.grad_fn, 0, True
    t._view_stamp = -1  # force the view's history to be replayed from the new base
    _refresh_view(t)


def _save_original(node, t: Tensor) -> None:
    """The op saved ``t`` for its backward, but ``t`` is about to be overwritten: keep a copy of
    its current value, with its current history, in the saved slot instead (as torch does for
    in-place ops whose derivative needs the original input)."""
    for saved in node._saved:
        if saved is not None and saved.tensor is t:
            original = Tensor._make(t._data.copy())
            original.grad_fn, original._output_nr = t.grad_fn, t._output_nr
            original._requires_grad = t._requires_grad
            saved.tensor = original
            saved.version_counter, saved.version = original._version, 0


class CopySlices(Function):
    """The base after values were written into one of its views."""
    _builtin = True
    _node_name = "CopySlices"

    @staticmethod
    def forward(ctx, old, values, chain):
        ctx.chain = chain
        return make(old._data)

    @staticmethod
    def jvp(ctx, t_old, t_values, _):
        # the old base's tangent with the view's region replaced by the values' tangent
        old, values = ctx._fw_args[:2]
        new = t_old.clone() if t_old is not None else make(xp_of(old._data).zeros_like(old._data))
        _replay(new, ctx.chain).copy_(t_values if t_values is not None else
                                      make(xp_of(values._data).zeros_like(values._data)))
        return new

    @staticmethod
    def backward(ctx, g):
        need_old, need_values = ctx.needs_input_grad[:2]
        return (ZeroRegion.apply(g, ctx.chain) if need_old else None,
                _replay(g, ctx.chain) if need_values else None, None)


class ZeroRegion(Function):
    """A copy of ``g`` with the elements a view chain selects set to zero (self-adjoint)."""
    _builtin = True

    @staticmethod
    def forward(ctx, g, chain):
        ctx.chain = chain
        c = g._data.copy()
        region = _replay(make(c), chain)._data
        if not shares_memory(region, c):
            raise RuntimeError("in-place write through a view: the view could not be replayed "
                               "on the gradient's layout; clone() the view before writing")
        region[...] = 0
        return make(c)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return ZeroRegion.apply(gg, ctx.chain), None


# ---- fill_, zero_, copy_, setitem -----------------------------------------------------------
class Fill(Function):
    """``t.fill_(value)``: every element becomes ``value``; no gradient reaches the old data."""
    _builtin = True
    _node_name = "FillBackward2"

    @staticmethod
    def forward(ctx, t, value):
        return make(xp_of(t._data).full_like(t._data, value))

    jvp = _rules.linear(zero=(1,))

    @staticmethod
    def backward(ctx, g):
        return g * 0, None


class _FillValue(Fill):
    """``t[...] = number``: torch makes the number a tensor, hence its node name."""
    _node_name = "FillBackward3"


class Zero(Fill):
    """``t.zero_()``."""


class FillTensor(Function):
    """``t.fill_(value)`` with a 0-d tensor ``value``, which gets the sum of the gradient."""
    _builtin = True
    _node_name = "FillBackward3"

    @staticmethod
    def forward(ctx, t, value):
        a = t._data
        out = xp_of(a).empty_like(a)
        out[...] = value._data
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        nt, nv = ctx.needs_input_grad
        return (g * 0 if nt else None), (g.sum() if nv else None)


def _write_scalar(t: Tensor, op: str, fn_cls, value) -> Tensor:
    if _recording(t) or _function._fw_enabled:  # (a dual level: the tangent is zeroed too)
        return apply_inplace(t, op, fn_cls.apply, value)
    check_inplace(t, op)
    t._data.fill(value)  # nothing to record: write directly, no temporary
    t._version.value += 1
    return t


def fill_(t: Tensor, value) -> Tensor:
    """Set every element of ``t`` to ``value``, in place."""
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                               f"with {value._data.ndim} dimensions.")
        if _recording(t) or (_state.enabled and value._requires_grad) or \
                _function._fw_enabled:
            if value.device != t.device:
                value = value.to(t.device)
            return apply_inplace(t, "fill_", FillTensor.apply, value)
        value = value.item()
    return _write_scalar(t, "fill_", Fill, value)


def zero_(t: Tensor) -> Tensor:
    """Set every element of ``t`` to zero, in place."""
    return _write_scalar(t, "zero_", Zero, 0)


class Copy(Function):
    """The values of ``src``, broadcast to ``t``'s shape and cast to its dtype."""
    _builtin = True
    _node_name = "CopyBackwards"

    @staticmethod
    def forward(ctx, t, src):
        a = t._data
        out = xp_of(a).empty_like(a)
        xp_of(a).copyto(out, src._data, casting="unsafe")
        return make(out)

    jvp = _rules.linear(all_tensors=True)

    @staticmethod
    def backward(ctx, g):
        return (g * 0 if ctx.needs_input_grad[0] else None), g


def copy_(t: Tensor, src, non_blocking: bool = False) -> Tensor:
    """Copy ``src`` (broadcast, cast, and moved across devices as needed) into ``t``."""
    if is_scalar(src):
        return fill_(t, src)
    if not isinstance(src, Tensor):
        raise TypeError(f"copy_(): argument 'src' must be a Tensor, not {type(src).__name__}")
    if src.device != t.device:
        src = src.to(t.device)
    try:
        _broadcast_check(src._data.shape, t._data.shape)
    except ValueError:
        raise RuntimeError(f"copy_: the size of src {list(src.shape)} cannot be broadcast to "
                           f"the destination's {list(t.shape)}") from None
    if _function._fw_enabled or (_state.enabled and (_recording(t) or src._requires_grad)):
        return apply_inplace(t, "copy_", Copy.apply, src)
    # Nothing to record: one copy straight into t (no Function, no temporary of t's size).
    check_inplace(t, "copy_")
    a, b = t._data, src._data
    if b is not a and shares_memory(a, b):
        b = b.copy()  # an overlapping source: read it whole before writing (CuPy does not)
    xp_of(a).copyto(a, b, casting="unsafe")
    t._version.value += 1
    return t


def _broadcast_check(src, dst):
    if len(src) > len(dst) or any(s not in (1, d) for s, d in zip(src[::-1], dst[::-1])):
        raise ValueError


def _check_value(t: Tensor, value):
    """The value of ``t[idx] = value`` as torch takes it: a tensor (moved to t's device) or a
    number; anything else is torch's TypeError."""
    if isinstance(value, Tensor):
        return value if value.device == t.device else value.to(t.device)
    if is_scalar(value) and not isinstance(value, (str, bytes)):
        if isinstance(value, (complex, np.complexfloating)) and not t.dtype.is_complex:
            from .indexing import _torch_dtype_word
            raise RuntimeError(f"value cannot be converted to type "
                               f"{_torch_dtype_word(t._data.dtype)} without overflow")
        return value
    cls = type(value)
    name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__name__}"
    raise TypeError(f"can't assign a {name} to a {t.type()}; assign a tensor or a number")


def _check_expand(value: Tensor, shape: tuple) -> Tensor:
    """``value`` without its leading size-1 dims when it has more dims than ``shape`` (torch's
    ``slicePrefix1sDims``), after torch's expand checks against ``shape``."""
    vs = tuple(value._data.shape)
    extra = len(vs) - len(shape)
    if extra > 0:
        k = 0
        while k < extra and vs[k] == 1:
            k += 1
        if k:
            value = value.reshape(vs[k:])
            vs = vs[k:]
        if len(vs) > len(shape):
            raise RuntimeError(f"expand({value.type()}{{{list(vs)}}}, size={list(shape)}): the "
                               f"number of sizes provided ({len(shape)}) must be greater or "
                               f"equal to the number of dimensions in the tensor ({len(vs)})")
    lead = len(shape) - len(vs)
    for i in range(len(vs) - 1, -1, -1):  # torch reports the last mismatching dim
        s = vs[i]
        if s != 1 and s != shape[lead + i]:
            raise RuntimeError(f"The expanded size of the tensor ({shape[lead + i]}) must match "
                               f"the existing size ({s}) at non-singleton dimension {lead + i}.  "
                               f"Target sizes: {list(shape)}.  Tensor sizes: {list(vs)}")
    return value


def _copy_to(dst: Tensor, value) -> None:
    """torch's ``copy_to``: ``fill_`` a number or a 0-d tensor, else ``copy_`` (broadcast)."""
    if not isinstance(value, Tensor):
        _write_scalar(dst, "fill_", _FillValue, value)
    elif value._data.shape == dst._data.shape:
        copy_(dst, value)
    elif value._data.ndim == 0:
        fill_(dst, value)
    else:
        copy_(dst, _check_expand(value, dst._data.shape))


def _split_advanced(idx, shape: tuple, device):
    """An index with advanced items split as torch's setitem does: the basic part (ints,
    slices, None; an advanced item keeps its dims with ``:``; a bool scalar adds its dim with
    None); what indexes the resulting view (``:`` for each kept dim, the advanced items, and
    the bool scalars as index lists [0] or [] of their new dims); and whether that second
    index holds one boolean mask and nothing else advanced."""
    from .indexing import _ARRAY, _BOOL, _ELLIPSIS, _INT, _MASK, _NONE, _SLICE, _items, _parse
    basic, rest, kinds = [], [], []
    with warnings.catch_warnings():  # a legacy list index warned once already, in _normalize
        warnings.simplefilter("ignore")
        items = _items(idx)
    for item in items:
        kind, v = _parse(item, device)
        if kind == _ELLIPSIS:
            basic.append(Ellipsis)
            rest.append(Ellipsis)
        elif kind == _NONE or kind == _SLICE:
            basic.append(item)
            rest.append(slice(None))
        elif kind == _INT:
            basic.append(item)
        elif kind == _BOOL:  # torch indexes the new dim with a long tensor: [0] or []
            basic.append(None)
            rest.append(np.zeros(int(v), np.int64))
            kinds.append(_ARRAY)
        else:
            basic.extend((slice(None),) * (v.ndim if kind == _MASK else 1))
            rest.append(item)
            kinds.append(kind)
    return tuple(basic), tuple(rest), kinds == [_MASK]


def setitem(t: Tensor, idx, value) -> None:
    """``t[idx] = value`` as torch does it: the basic part of the index (ints, slices, None,
    Ellipsis) is applied as a view, into which a basic index copies (``fill_``/``copy_``) and
    an advanced one writes with ``index_put_``. The gradient of the written region goes to
    ``value``, the rest to ``t``'s previous history. All checks run before anything is
    written: a failed assignment leaves ``t`` and its version unchanged."""
    from .indexing import (_ALIAS, _UNSQUEEZE, _VIEW_FN, _device, _normalize, _put,
                           _torch_name, _trivial_slice)
    from ._views import as_view
    value = _check_value(t, value)
    if idx is False:  # torch writes nothing, and checks nothing (an empty selection)
        return
    if idx is True:  # torch's shortcut: copy into t[None] (the other bools are index_put_)
        fn = _VIEW_FN[_UNSQUEEZE]
        _copy_to(as_view(fn(t, (None, Ellipsis)), t, fn, (None, Ellipsis)), value)
        return
    shape = t._data.shape
    device = _device(t)
    ix = _normalize(idx, shape, device)
    if not ix.advanced:
        if ix.last == _ALIAS or (idx.__class__ is slice and _trivial_slice(idx, shape[0])):
            _copy_to(t, value)  # torch skips a full slice: the write goes to t itself
        else:
            fn = _VIEW_FN[ix.last]
            _copy_to(as_view(fn(t, ix.index), t, fn, ix.index), value)
        return
    basic, rest, one_mask = _split_advanced(idx, shape, device)
    if isinstance(value, Tensor) and value._data.dtype != t._data.dtype:
        # torch's index_put_ casts only where it runs as masked_fill_ (one boolean mask and a
        # one-element value); elsewhere the dtypes must match.
        if not (one_mask and value._data.size == 1):
            from .indexing import _fit_values
            _fit_values(value, ix.shape)  # torch checks the shape first: report that first
            raise RuntimeError(f"Index put requires the source and destination dtypes match, "
                               f"got {_torch_name(t._data.dtype)} for the destination and "
                               f"{_torch_name(value._data.dtype)} for the source.")
        value = value.to(t.dtype)
    bx = _normalize(basic, shape, device)
    target = t
    if bx.last != _ALIAS:
        fn = _VIEW_FN[bx.last]
        target = as_view(fn(t, bx.index), t, fn, bx.index)
    if not isinstance(value, Tensor):
        from .._factories import tensor
        value = tensor(value, dtype=t.dtype, device=t.device)
    apply_inplace(target, "index_put_", _put, rest, value, False)


def _fill_direct() -> None:
    from . import elementwise as ew  # imported here: elementwise is loaded before this module
    _DIRECT.update({ew.add: "add", ew.sub: "subtract", ew.mul: "multiply",
                    ew.div: _TRUE_DIVIDE})


_fill_direct()
