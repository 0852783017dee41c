"""The jvp rules the built-in ops share (forward-mode AD, see ``forward_ad.py``).

A built-in op names its rule next to its backward (``jvp = rules.linear()``). Inside a
rule, ``ctx._fw_args`` / ``ctx._fw_kwargs`` are the op's arguments and ``ctx._fw_outputs``
its outputs (a tuple); tangents are None for inputs that carry none. Every rule computes
with gpugrad ops, so tangents are recorded under grad mode (higher-order derivatives):

- ``linear``: the op is linear in its tensor inputs, J v = op(v): re-apply it to the
  tangents (zeros for float inputs without one; index and mask tensors kept; numbers at the
  ``zero`` positions, like a fill value, become 0).
- ``multilinear``: linear in each tensor input separately (mul, matmul):
  J v = sum_i op(..., v_i, ...).
- ``self_adjoint``: every input-output block of the Jacobian is symmetric (elementwise ops
  after broadcasting, softmax): J v = backward(v), so the fused backward kernels serve both.
- ``reduction(meta)``: each input element feeds one output element (prod, norm, var, max, ...):
  J v = sum over the reduced dims of backward(1) * v.
"""
from __future__ import annotations

from . import function as _fn

__all__ = ["linear", "multilinear", "self_adjoint", "reduction"]


def _zeros_like(t):
    from .._tensor import _zeros_like_meta
    return _zeros_like_meta((t._data.shape, t.dtype, t.device))


def _ones_like(t):
    z = _zeros_like(t)
    z._data += 1
    return z


def linear(zero=(), all_tensors: bool = False):
    """The jvp of an op linear in its tensor inputs; numbers at positions ``zero`` (fill
    values) become 0; ``all_tensors``: integer tensors are data too (cat), not indices."""

    def jvp(ctx, *tangents):
        Tensor = _fn._Tensor
        args = list(ctx._fw_args)
        for i, a in enumerate(args):
            if isinstance(a, Tensor):
                t = tangents[i]
                if t is not None:
                    args[i] = t
                elif all_tensors or a._data.dtype.kind == "f":
                    args[i] = _zeros_like(a)
            elif i in zero and a is not None:
                args[i] = 0
        return ctx._function.apply(*args, **ctx._fw_kwargs)

    return staticmethod(jvp)


def _multilinear(ctx, *tangents):
    out = None
    for i, t in enumerate(tangents):
        if t is None:
            continue
        args = list(ctx._fw_args)
        args[i] = t
        term = ctx._function.apply(*args, **ctx._fw_kwargs)
        out = term if out is None else out + term
    return out


def _self_adjoint(ctx, *tangents):
    Tensor = _fn._Tensor
    outs = ctx._fw_outputs
    backward = ctx._function.backward
    need = ctx.needs_input_grad
    result = [None] * len(outs)
    try:
        for i, t in enumerate(tangents):
            if t is None:
                continue
            # Ask backward for input i alone (a fused kernel then does only that work).
            ctx.needs_input_grad = tuple(k == i for k in range(len(need)))
            for j, o in enumerate(outs):
                if not isinstance(o, Tensor) or o._data.dtype.kind != "f":
                    continue
                v = t if t._data.shape == o._data.shape else t.expand(o.shape)
                if v._data.dtype != o._data.dtype:
                    v = v.to(o.dtype)
                grads = [v if k == j else (_zeros_like(u) if isinstance(u, Tensor) else None)
                         for k, u in enumerate(outs)]
                r = backward(ctx, *grads)
                g = (r if isinstance(r, tuple) else (r,))[i]
                if g is not None:
                    result[j] = g if result[j] is None else result[j] + g
    finally:
        ctx.needs_input_grad = need
    return result[0] if len(outs) == 1 else tuple(result)


def reduction(meta):
    """The jvp of a reduction whose ``meta(ctx)`` gives ``(dims, keepdim)``."""

    def jvp(ctx, t, *rest):
        need = ctx.needs_input_grad
        ctx.needs_input_grad = (True,) + (False,) * (len(need) - 1)
        try:
            w = ctx._function.backward(ctx, _ones_like(ctx._fw_outputs[0]))
        finally:
            ctx.needs_input_grad = need
        w = w[0] if isinstance(w, tuple) else w
        dims, keepdim = meta(ctx)
        return (w * t).sum(dim=dims, keepdim=keepdim)

    return staticmethod(jvp)


multilinear = staticmethod(_multilinear)
self_adjoint = staticmethod(_self_adjoint)
