"""``nn.functional.pad``: constant, reflect, replicate and circular padding.

``pad`` lists (left, right) amounts from the last dimension backwards, as torch does:
``(1, 2)`` pads the last dim, ``(1, 2, 3, 4)`` the last two. Negative amounts crop.

Constant padding writes the input into a filled array; its adjoint is constant padding by
the negated amounts (a crop). The other modes gather along each padded dim with an index
array; their adjoint adds the gradient back run by run (slices, reversed slices, or sums of
one repeated element), so that both directions use basic slicing on NumPy and CuPy alike.
"""
from __future__ import annotations

import operator

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, xp_of

_MODES = ("constant", "reflect", "replicate", "circular")


class ConstantPad(Function):
    """``input`` with ``pads[d] = (left, right)`` elements of ``value`` around each dim."""
    _builtin = True
    _node_name = "ConstantPadNdBackward0"

    @staticmethod
    def forward(ctx, x, pads, value):
        ctx.pads = pads
        a = x._data
        out_shape = tuple(n + l + r for n, (l, r) in zip(a.shape, pads))
        out = xp_of(a).full(out_shape, value, dtype=a.dtype)
        src = tuple(slice(max(-l, 0), n - max(-r, 0)) for n, (l, r) in zip(a.shape, pads))
        dst = tuple(slice(max(l, 0), o - max(r, 0)) for o, (l, r) in zip(out_shape, pads))
        out[dst] = a[src]
        return make(out)

    jvp = _rules.linear(zero=(2,))

    @staticmethod
    def backward(ctx, g):
        return ConstantPad.apply(g, tuple((-l, -r) for l, r in ctx.pads), 0), None, None


def _indices(n: int, left: int, right: int, mode: str) -> np.ndarray:
    """For each output position along a padded dim, the input position it copies."""
    p = np.arange(-left, n + right)
    if mode == "reflect":
        p = np.abs(p)
        p = (n - 1) - np.abs((n - 1) - p)
    elif mode == "replicate":
        p = np.clip(p, 0, n - 1)
    else:
        p = p % n
    return p


def _runs(idx: np.ndarray) -> list:
    """``idx`` cut into runs ``(j0, j1, p0, step)``: output ``j0 + i`` copies input
    ``p0 + step * i`` for ``i < j1 - j0``, with step 1, -1 or 0."""
    runs = []
    j0, m = 0, len(idx)
    while j0 < m:
        j1 = j0 + 1
        step = int(idx[j1] - idx[j0]) if j1 < m else 1
        if step not in (-1, 0, 1):
            step = 1
        else:
            while j1 < m and idx[j1] - idx[j1 - 1] == step:
                j1 += 1
        runs.append((j0, j1, int(idx[j0]), step))
        j0 = j1
    return runs


class IndexPad(Function):
    """Reflect, replicate or circular padding: a gather along each padded dim."""
    _builtin = True
    _node_name = "IndexPadBackward0"

    @staticmethod
    def forward(ctx, x, plan):
        ctx.args = (x.shape, plan)
        a = x._data
        xp = xp_of(a)
        for dim, idx in plan:
            a = xp.take(a, xp.asarray(idx), axis=dim)
        return make(a if plan else a.copy())  # nothing to pad: still a new tensor

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        return _IndexPadBackward.apply(g, *ctx.args), None


class ReflectionPad(IndexPad):
    _node_name = "ReflectionPadBackward0"


class ReplicationPad(IndexPad):
    _node_name = "ReplicationPadBackward0"


class CircularPad(IndexPad):
    _node_name = "CircularPadBackward0"


class _IndexPadBackward(Function):
    """The adjoint of IndexPad: each input position gets the sum of the gradient at the
    output positions that copied it."""
    _builtin = True

    @staticmethod
    def forward(ctx, g, shape, plan):
        ctx.plan = plan
        a = g._data
        xp = xp_of(a)
        for dim, idx in reversed(plan):
            n = shape[dim]
            out = xp.zeros(a.shape[:dim] + (n,) + a.shape[dim + 1:], dtype=a.dtype)
            head = (slice(None),) * dim
            for j0, j1, p0, step in _runs(idx):
                src = a[head + (slice(j0, j1),)]
                if step == 1:
                    out[head + (slice(p0, p0 + j1 - j0),)] += src
                elif step == -1:
                    out[head + (slice(p0 - (j1 - j0) + 1, p0 + 1),)] += xp.flip(src, dim)
                else:
                    out[head + (slice(p0, p0 + 1),)] += src.sum(axis=dim, keepdims=True)
            a = out
        return make(a)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        return IndexPad.apply(gg, ctx.plan), None, None


_INDEX_PAD = {"reflect": ReflectionPad, "replicate": ReplicationPad, "circular": CircularPad}
_SUPPORTED = ("Supported combinations for non-constant padding:\n"
              "  - 2D or 3D input: padding size = 2 (pads last dimension)\n"
              "  - 3D or 4D input: padding size = 4 (pads last 2 dimensions)\n"
              "  - 4D or 5D input: padding size = 6 (pads last 3 dimensions)")


def pad(input: Tensor, pad, mode: str = "constant", value=None) -> Tensor:
    """``input`` padded by ``pad = (left_last, right_last, left_before_last, ...)``.

    mode ``constant`` fills with ``value`` (0 by default; negative amounts crop); ``reflect``
    mirrors without repeating the edge; ``replicate`` repeats the edge; ``circular`` wraps.
    """
    amounts = tuple(operator.index(p) for p in pad)
    shape = input._data.shape
    nd = len(shape)
    if len(amounts) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    k = len(amounts) // 2
    if k > nd:
        raise RuntimeError(f"Padding length should be less than or equal to two times the input "
                           f"dimension but got padding length {len(amounts)} and input of "
                           f"dimension {nd}")
    if mode not in _MODES:
        raise NotImplementedError(f"Unrecognised padding mode {mode} (expected one of "
                                  f"{', '.join(_MODES)})")
    pads = [(0, 0)] * nd
    for i in range(k):
        pads[nd - 1 - i] = (amounts[2 * i], amounts[2 * i + 1])
    for d, (n, (l, r)) in enumerate(zip(shape, pads)):
        if n + l + r < 0 or -l > n or -r > n:
            raise RuntimeError(f"pad: padding ({l}, {r}) of dimension {d} of an input of shape "
                               f"{list(shape)} crops more than the {n} elements there are")
    if mode == "constant":
        return ConstantPad.apply(input, tuple(pads), 0 if value is None else value)

    if value is not None and value != 0:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    if k not in (1, 2, 3) or nd not in (k + 1, k + 2):
        raise NotImplementedError(f"Padding size {len(amounts)} is not supported for {nd}D "
                                  f"input tensor.\n{_SUPPORTED}")
    if mode in ("reflect", "replicate") and input._data.dtype == np.bool_:  # as in torch
        kind = "reflection" if mode == "reflect" else "replication"
        raise NotImplementedError(f"\"{kind}_pad{k}d\" not implemented for 'Bool'")
    if any(n == 0 for n in shape[nd - k - 1:]):
        raise RuntimeError(f"Expected {k + 1}D or {k + 2}D (batch mode) tensor with possibly 0 "
                           f"batch size and other non-zero dimensions for input, but got: "
                           f"{list(shape)}")
    for i in range(k):
        d = nd - 1 - i
        (l, r), n = pads[d], shape[d]
        if mode == "reflect" and (l >= n or r >= n):
            raise RuntimeError(f"Argument #{4 + 2 * i}: Padding size should be less than the "
                               f"corresponding input dimension, but got: padding ({l}, {r}) at "
                               f"dimension {d} of input {list(shape)}")
        if mode == "circular" and (l > n or r > n):
            raise RuntimeError(f"Padding value causes wrapping around more than once (padding "
                               f"({l}, {r}) at dimension {d} of size {n}).")
    plan = tuple((d, _indices(shape[d], *pads[d], mode)) for d in range(nd - k, nd)
                 if pads[d] != (0, 0))
    return _INDEX_PAD[mode].apply(input, plan)
