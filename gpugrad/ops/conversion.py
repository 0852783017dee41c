"""Copies and conversions: ``to`` (dtype/device), ``clone``, ``contiguous``."""
from __future__ import annotations

from .. import _backend
from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, xp_of


class ToCopy(Function):
    """Convert dtype and/or device; the gradient goes back to the source dtype and device."""
    _builtin = True
    _node_name = "ToCopyBackward0"

    @staticmethod
    def forward(ctx, x, device, dtype, copy):
        ctx.src = (x.device, x.dtype)
        a = x._data
        if device is not None and device != x.device:
            a = _backend.to_device(a, device)
            copy = False  # the transfer already made a new array
        if dtype is not None and a.dtype != dtype.np:
            a = a.astype(dtype.np)
        elif copy:
            a = a.copy()
        return make(a)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        device, dtype = ctx.src
        return to_copy(g, device, dtype, False), None, None, None


def to_copy(x: Tensor, device, dtype, copy: bool) -> Tensor:
    """``x`` on ``device`` with ``dtype`` (None keeps each); self when nothing changes."""
    same_device = device is None or device == x.device
    same_dtype = dtype is None or dtype is x.dtype
    if same_device and same_dtype and not copy:
        return x
    if x._requires_grad and dtype is not None and not dtype.is_floating_point:
        # An integer copy of a tensor that requires grad is outside the graph, as in torch.
        from ..autograd.grad_mode import no_grad
        with no_grad():
            return ToCopy.apply(x, device, dtype, copy)
    return ToCopy.apply(x, device, dtype, copy)


class Clone(Function):
    """A copy of the data; the gradient passes through."""
    _builtin = True
    _node_name = "CloneBackward0"

    @staticmethod
    def forward(ctx, x):
        return make(x._data.copy())

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g


def clone(input: Tensor, *, memory_format=None) -> Tensor:
    """A copy of ``input`` that is recorded in the graph."""
    return Clone.apply(input)


class Contiguous(Function):
    """A row-major copy of non-contiguous data."""
    _builtin = True
    _node_name = "CloneBackward0"

    @staticmethod
    def forward(ctx, x):
        return make(xp_of(x._data).ascontiguousarray(x._data))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return g


def contiguous(input: Tensor, memory_format=None) -> Tensor:
    """``input`` itself if it is row-major contiguous, else a contiguous copy."""
    if input._data.flags.c_contiguous:
        return input
    return Contiguous.apply(input)
