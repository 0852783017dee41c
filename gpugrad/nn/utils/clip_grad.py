"""Gradient clipping, as ``torch.nn.utils``: ``clip_grad_norm_`` and ``clip_grad_value_``
(and the two halves of the former, ``get_total_norm`` and ``clip_grads_with_norm_``).

The norms are computed on the gradients' device and the total stays there: clipping needs
no transfer to the host (only ``error_if_nonfinite=True`` reads the total back). Gradients
are scaled in place, their version counters bumped, as torch's ``mul_`` does.
"""
from __future__ import annotations

import math

import numpy as np

from ... import _backend
from ..._tensor import Tensor

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _xp(a):
    return np if a.__class__ is np.ndarray else _backend.array_module(_backend.device_of_array(a))


def _as_list(tensors) -> list:
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _norm(xp, a, p: float):
    """The vector p-norm of array ``a`` (torch.linalg.vector_norm's orders), a 0-d array."""
    # NumPy reductions return scalars, not 0-d arrays
    return xp.asarray(_norm_value(xp, a, p))


def _norm_value(xp, a, p: float):
    if a.size == 0:
        if math.isinf(p):
            raise RuntimeError(f"linalg.vector_norm cannot compute the {p} norm on an empty "
                               f"tensor because the operation does not have an identity")
        return xp.zeros((), dtype=a.dtype)
    x = xp.abs(a)
    if p == math.inf:
        return x.max()
    if p == -math.inf:
        return x.min()
    if p == 0:
        return xp.asarray(xp.count_nonzero(x), dtype=a.dtype)
    if p == 1:
        return x.sum()
    if p == 2:
        return xp.sqrt((x * x).sum())
    return (x ** p).sum() ** (1.0 / p)


def get_total_norm(tensors, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                   foreach=None) -> Tensor:
    """The ``norm_type``-norm of the norms of ``tensors`` (as if they were concatenated into
    one vector), a 0-d tensor on the first tensor's device; 0 for no tensors."""
    tensors = [t for t in _as_list(tensors) if t is not None]
    norm_type = float(norm_type)
    if not tensors:
        return Tensor._make(np.zeros((), dtype=np.float32))
    first = tensors[0]._data
    dev = _backend.device_of_array(first)
    xp = _xp(first)
    norms = [_backend.to_device(_norm(_xp(t._data), t._data, norm_type), dev) for t in tensors]
    dtype = np.result_type(*[n.dtype for n in norms])
    total = _norm(xp, xp.stack([n.astype(dtype, copy=False) for n in norms]), norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                           f"`parameters` is non-finite, so it cannot be clipped. To disable "
                           f"this error and scale the gradients by the non-finite norm anyway, "
                           f"set `error_if_nonfinite=False`")
    return Tensor._make(xp.asarray(total))


def clip_grads_with_norm_(parameters, max_norm: float, total_norm, foreach=None) -> None:
    """Scale the gradients of ``parameters`` in place by ``min(1, max_norm / (total_norm +
    1e-6))`` (always multiplied, as in torch)."""
    grads = [p._grad for p in _as_list(parameters) if p._grad is not None]
    if not grads:
        return
    total = total_norm._data if isinstance(total_norm, Tensor) else total_norm
    xp = _xp(grads[0]._data)
    coef = xp.minimum(float(max_norm) / (total + 1e-6), 1.0)
    for g in grads:
        a = g._data
        c = _backend.to_device(xp.asarray(coef), _backend.device_of_array(a))
        a *= c.astype(a.dtype, copy=False)
        g._version.value += 1


def clip_grad_norm_(parameters, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach=None) -> Tensor:
    """Clip the gradients of ``parameters`` (a tensor or an iterable of them) so that their
    total ``norm_type``-norm (``inf`` for the max-norm) is at most ``max_norm``, in place;
    return the total norm before clipping, a 0-d tensor. ``error_if_nonfinite`` raises when
    that norm is nan or inf instead of scaling by it."""
    parameters = _as_list(parameters)
    grads = [p._grad for p in parameters if p._grad is not None]
    total = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total, foreach)
    return total


def clip_grad_value_(parameters, clip_value: float, foreach=None) -> None:
    """Clamp the gradients of ``parameters`` to ``[-clip_value, clip_value]``, in place."""
    clip_value = float(clip_value)
    for p in _as_list(parameters):
        g = p._grad
        if g is None:
            continue
        a = g._data
        _xp(a).clip(a, -clip_value, clip_value, out=a)
        g._version.value += 1
