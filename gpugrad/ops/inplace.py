"""In-place variants (``add_``, ``mul_``, ``zero_``, ``x += y`` ...) on whole tensors.

An in-place op computes its out-of-place result, writes it into the tensor's own memory
(so every alias of the data sees it), bumps the version counter, and, when recorded, makes
the result's graph node the tensor's new history. Tensors saved for a backward before the
write are caught by their version check instead of giving a wrong gradient.
"""
from __future__ import annotations

from .. import _dtypes
from .._tensor import Tensor
from ..autograd import grad_mode
from ..autograd.function import Function
from ._util import xp_of

_state = grad_mode.state


def check_inplace(t: Tensor, op: str) -> None:
    """Refuse in-place writes into a leaf that requires grad while recording (torch's rule)."""
    if _state.enabled and t.grad_fn is None and t._requires_grad:
        raise RuntimeError(
            f"{op}: a leaf Variable that requires grad is being used in an in-place operation. "
            "Wrap the update in `with gpugrad.no_grad():` (e.g. an optimizer step), or apply it "
            "to a clone.")


def apply_inplace(t: Tensor, op: str, fn, *args, **kwargs) -> Tensor:
    """Run ``fn(t, *args)`` out of place and store the result into ``t``; returns ``t``."""
    check_inplace(t, op)
    out = fn(t, *args, **kwargs)
    if out.grad_fn is not None and out.grad_fn._saved:
        _save_original(out.grad_fn, t)
    if out.shape != t.shape:
        raise RuntimeError(f"{op}: output with shape {list(t.shape)} doesn't match the broadcast "
                           f"shape {list(out.shape)}")
    if not _dtypes.can_cast(out.dtype, t.dtype):
        raise RuntimeError(f"{op}: result type {out.dtype} can't be cast to the desired output "
                           f"type {t.dtype}")
    a = t._data
    if out._data is not a:
        xp_of(a).copyto(a, out._data, casting="unsafe")
    t._version.value += 1
    if out.grad_fn is not None:
        t.grad_fn, t._output_nr, t._requires_grad = out.grad_fn, out._output_nr, True
    return t


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


class Fill(Function):
    """``t.fill_(value)``: every element becomes ``value``; no gradient flows to the old data."""
    _builtin = True

    @staticmethod
    def forward(ctx, t, value):
        t._data.fill(value)
        ctx.mark_dirty(t)
        return t

    @staticmethod
    def backward(ctx, g):
        return g * 0, None


class Zero(Fill):
    """``t.zero_()``."""


def fill_(t: Tensor, value) -> Tensor:
    """Set every element of ``t`` to ``value``, in place."""
    if isinstance(value, Tensor):
        value = value.item()
    check_inplace(t, "fill_")
    return Fill.apply(t, value)


def zero_(t: Tensor) -> Tensor:
    """Set every element of ``t`` to zero, in place."""
    check_inplace(t, "zero_")
    return Zero.apply(t, 0)
