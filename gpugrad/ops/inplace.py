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

import numpy as np

from .. import _dtypes
from .._tensor import Tensor, _refresh_view, _replay
from ..autograd import grad_mode
from ..autograd.function import Function
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
    """Run ``fn(t, *args)`` out of place and store the result into ``t``; returns ``t``."""
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
    return t


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

    @staticmethod
    def backward(ctx, gg):
        return ZeroRegion.apply(gg, ctx.chain), None


# ---- fill_, zero_, copy_, setitem -----------------------------------------------------------
class Fill(Function):
    """``t.fill_(value)``: every element becomes ``value``; no gradient reaches the old data."""
    _builtin = True

    @staticmethod
    def forward(ctx, t, value):
        return make(xp_of(t._data).full_like(t._data, value))

    @staticmethod
    def backward(ctx, g):
        return g * 0, None


class Zero(Fill):
    """``t.zero_()``."""


def _write_scalar(t: Tensor, op: str, fn_cls, value) -> Tensor:
    if _recording(t):
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
    return apply_inplace(t, "copy_", Copy.apply, src)


def _broadcast_check(src, dst):
    if len(src) > len(dst) or any(s not in (1, d) for s, d in zip(src[::-1], dst[::-1])):
        raise ValueError


def _is_basic(idx) -> bool:
    """Ints, slices, None and Ellipsis only: the indexed region is a view."""
    for i in (idx if isinstance(idx, tuple) else (idx,)):
        if isinstance(i, Tensor):
            if i._data.ndim or i._data.dtype.kind not in "iu":
                return False
        elif not (i is None or i is Ellipsis or isinstance(i, (int, slice, np.integer))) \
                or isinstance(i, (bool, np.bool_)):
            return False
    return True


def setitem(t: Tensor, idx, value) -> None:
    """``t[idx] = value``: the gradient of the written region goes to ``value``, the rest to
    ``t``'s previous history (basic indices write through a view; others use index_put_)."""
    from .._factories import tensor
    from .indexing import getitem
    if isinstance(value, Tensor):
        if value.device != t.device:
            value = value.to(t.device)
    elif not is_scalar(value):
        value = tensor(value, dtype=t.dtype, device=t.device)
    if not _is_basic(idx):
        from .indexing import _put
        if not isinstance(value, Tensor):
            value = tensor(value, dtype=t.dtype, device=t.device)
        apply_inplace(t, "index_put_", _put, idx, value, False)
        return
    view = getitem(t, idx)
    if isinstance(value, Tensor):
        copy_(view, value)
    else:
        fill_(view, value)
