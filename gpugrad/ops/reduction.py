"""Reductions: sum, mean, prod, max/min, amax/amin, argmax/argmin, var/std, logsumexp,
softmax/log_softmax, norm, cumsum, all/any.

``dim`` is an int, a tuple of ints or None (everything); ``keepdim`` keeps reduced dims as 1.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .. import _dtypes
from .._tensor import Tensor, _refresh_view
from ..autograd.function import Function, _record_one, _Saved, _saved_arrays
from ..autograd import grad_mode as _grad_mode
from ..autograd import _jvp_rules as _rules
from ..autograd.grad_mode import is_grad_enabled
from ._util import dims as _dims, float_array, make, wrap_dim, xp_of
from .elementwise import exp, where
from .shape import broadcast_view

_grad_state = _grad_mode.state

return_types_max = namedtuple("max", ["values", "indices"])
return_types_min = namedtuple("min", ["values", "indices"])


def _expand_back(g: Tensor, axes: tuple, keepdim: bool, shape) -> Tensor:
    """Broadcast a reduced gradient back over the reduced axes of ``shape``."""
    if not keepdim:
        g = g.reshape(_kept_shape(shape, axes))
    return g.expand(shape)


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


def _reduced_shape(shape, axes, keepdim):
    return _kept_shape(shape, axes) if keepdim else tuple(
        s for i, s in enumerate(shape) if i not in axes)


def _count(shape, axes) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


# ---- sum, mean, prod ------------------------------------------------------------------------
class Sum(Function):
    """Sum over ``dim``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, axes, keepdim, dtype):
        a = x._data
        if dtype is None and a.dtype.kind in "biu":
            dtype = _dtypes.int64  # torch sums integers and bools as int64
        ctx.meta = (x.shape, axes, keepdim)
        return make(a.sum(axis=axes, keepdims=keepdim, dtype=None if dtype is None else dtype.np))

    @staticmethod
    def _fast(x, axes, keepdim, dtype):
        """The common case (see ``Function._fast``): a float sum in its own dtype."""
        a = x._data
        if dtype is not None or a.dtype.kind != "f":
            return None
        if _grad_state.enabled:
            if x._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(x)
            if x._requires_grad:
                out = _record_one(Sum, x, make(a.sum(axis=axes, keepdims=keepdim)), False,
                                  False, saves=False, n_args=4)
                out.grad_fn.meta = (x.shape, axes, keepdim)
                return out
        return make(a.sum(axis=axes, keepdims=keepdim))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled():  # not recorded: as the engine runs it
            return make(Sum._backward_arrays(ctx, g._data)[0]), None, None, None
        shape, axes, keepdim = ctx.meta
        return _expand_back(g, axes, keepdim, shape), None, None, None

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``): the broadcast view."""
        shape, axes, keepdim = ctx.meta
        return (broadcast_view(g if keepdim else g.reshape(_kept_shape(shape, axes)), shape),)


def sum(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:  # noqa: A001
    """Sum of elements over ``dim`` (all by default)."""
    axes = _dims(dim, input._data.ndim, "sum")
    return Sum.apply(input, axes, keepdim, None if dtype is None else _dtypes.as_dtype(dtype))


class Mean(Function):
    """Mean over ``dim``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        a = x._data
        ctx.meta = (x.shape, axes, keepdim)
        return make(a.mean(axis=axes, keepdims=keepdim))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        shape, axes, keepdim = ctx.meta
        n = _count(shape, axes)
        return _expand_back(g / n if n else g * math.nan, axes, keepdim, shape), None, None


def mean(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Mean of elements over ``dim`` (floating dtypes only, as in torch)."""
    if dtype is not None:
        input = input.to(_dtypes.as_dtype(dtype))
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a "
                           f"floating point or complex dtype. Got: {input.dtype}. Hint: call "
                           ".float() first.")
    return Mean.apply(input, _dims(dim, input._data.ndim, "mean"), keepdim)


class Prod(Function):
    """Product over ``dim``; the gradient is exact also when inputs contain zeros."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        a = x._data
        if a.dtype.kind in "bi" and a.dtype != np.int64:
            a = a.astype(np.int64)
        y = make(a.prod(axis=axes, keepdims=keepdim))
        ctx.save_for_backward(x, y)
        ctx.meta = (axes, keepdim)
        return y

    jvp = _rules.reduction(lambda ctx: ctx.meta)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        axes, keepdim = ctx.meta
        shape = x.shape
        gk = _expand_back(g, axes, keepdim, shape)
        yk = _expand_back(y, axes, keepdim, shape)
        is_zero = x == 0
        if not bool(is_zero.any()):
            return gk * yk / x, None, None
        if is_grad_enabled():  # create_graph: the formula below has wrong derivatives at zeros
            return gk * _prod_of_others(x, axes), None, None
        # With zeros: d prod / d x_i is the product of the other elements. It is nonzero only
        # where x_i is the sole zero of its slice, and there it is the product of the rest.
        zeros = is_zero.sum(dim=axes, keepdim=True)
        nonzero_prod = where(is_zero, 1.0, x).prod(dim=axes, keepdim=True)
        safe_x = where(is_zero, 1.0, x)
        grad = where(zeros == 0, yk / safe_x,
                     where((zeros == 1) & is_zero, nonzero_prod.expand(shape), 0.0))
        return gk * grad, None, None


def _prod_of_others(x: Tensor, axes: tuple) -> Tensor:
    """For each element, the product of the other elements of its slice, as recorded ops, so
    that its derivatives of every order are exact whatever the zeros. The reduced dims are
    flattened to ``n``; row ``i`` of an ``(n, n)`` stack is the slice with ``x_i`` set to 1.
    O(n^2) memory: used only when a gradient with zeros is itself being differentiated."""
    kept = [d for d in range(x.ndim) if d not in axes]
    xt = x.permute(kept + list(axes))
    lead = tuple(xt.shape[:len(kept)])
    n = _count(x.shape, axes)
    rows = xt.reshape(lead + (1, n)).expand(lead + (n, n))
    others = where(make(xp_of(x._data).eye(n, dtype=bool)), 1.0, rows).prod(dim=-1)
    return others.reshape(xt.shape).permute(tuple(int(i) for i in np.argsort(kept + list(axes))))


def prod(input: Tensor, dim=None, keepdim: bool = False, *, dtype=None) -> Tensor:
    """Product of elements over ``dim`` (one int in torch; a tuple works here too)."""
    if dtype is not None:
        input = input.to(_dtypes.as_dtype(dtype))
    return Prod.apply(input, _dims(dim, input._data.ndim, "prod"), keepdim)


# ---- max / min family -----------------------------------------------------------------------
class _Extreme(Function):
    """amax/amin and full max()/min(): the gradient is shared evenly among tied extremes."""
    _builtin = True
    _is_max = True

    @classmethod
    def forward(cls, ctx, x, axes, keepdim):
        a = x._data
        if a.size == 0:
            raise RuntimeError(f"{cls._op}(): Expected reduction dim to be specified for "
                               "input.numel() == 0. Specify the reduction dim with the 'dim' "
                               "argument.")
        y = make(a.max(axis=axes, keepdims=keepdim) if cls._is_max else
                 a.min(axis=axes, keepdims=keepdim))
        ctx.save_for_backward(x, y)
        ctx.meta = (axes, keepdim)
        return y

    jvp = _rules.reduction(lambda ctx: ctx.meta)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        axes, keepdim = ctx.meta
        shape = x.shape
        mask = x == _expand_back(y, axes, keepdim, shape)
        count = mask.sum(dim=axes, keepdim=True)
        return _expand_back(g, axes, keepdim, shape) * mask / count, None, None


class Amax(_Extreme):
    """Maximum over dims."""
    _is_max, _op = True, "amax"


class Amin(_Extreme):
    """Minimum over dims."""
    _is_max, _op = False, "amin"


class MaxAll(_Extreme):
    """Maximum of all elements."""
    _is_max, _op, _node_name = True, "max", "MaxBackward1"


class MinAll(_Extreme):
    """Minimum of all elements."""
    _is_max, _op, _node_name = False, "min", "MinBackward1"


class _ExtremeDim(Function):
    """max/min along one dim with indices; the gradient goes to the selected index."""
    _builtin = True
    _is_max = True

    @classmethod
    def forward(cls, ctx, x, dim, keepdim):
        a = x._data
        xp = xp_of(a)
        if a.shape and a.shape[dim] == 0:
            raise IndexError(f"{cls._op}(): Expected reduction dim {dim} to have non-zero size.")
        idx = (xp.argmax if cls._is_max else xp.argmin)(a, axis=dim, keepdims=True)
        values = xp.take_along_axis(a, idx, axis=dim)
        if not keepdim:
            values, idx = values.squeeze(dim), idx.squeeze(dim)
        indices = make(idx.astype(np.int64, copy=False))
        ctx.mark_non_differentiable(indices)
        ctx.save_for_backward(indices)
        ctx.meta = (x.shape, dim, keepdim)
        return make(values), indices

    @staticmethod
    def jvp(ctx, t, *_):
        # the tangent at the selected index; the indices have none
        shape, dim, keepdim = ctx.meta
        if not shape:
            return t.clone(), None
        indices = ctx._fw_outputs[1]
        v = t.gather(dim, indices if keepdim else indices.unsqueeze(dim))
        return (v if keepdim else v.squeeze(dim)), None

    @staticmethod
    def backward(ctx, g, g_indices):
        indices, = ctx.saved_tensors
        shape, dim, keepdim = ctx.meta
        if not keepdim:
            g, indices = g.unsqueeze(dim), indices.unsqueeze(dim)
        positions = _arange_along(shape, dim, indices._data)
        return where(positions == indices, g, 0.0), None, None


def _arange_along(shape, dim, like):
    xp = xp_of(like)
    view = [1] * len(shape)
    view[dim] = shape[dim]
    return make(xp.arange(shape[dim]).reshape(view))


class MaxDim(_ExtremeDim):
    """max(dim) -> (values, indices)."""
    _is_max, _op, _node_name = True, "max", "MaxBackward0"


class MinDim(_ExtremeDim):
    """min(dim) -> (values, indices)."""
    _is_max, _op, _node_name = False, "min", "MinBackward0"


def _max_min(input, dim, keepdim, other, full, per_dim, binary, result_type):
    if isinstance(dim, Tensor):  # torch.max(a, b)
        return binary(input, dim)
    if other is not None:
        return binary(input, other)
    if dim is None:
        return full.apply(input, tuple(range(input._data.ndim)), False)
    nd = input._data.ndim
    d = wrap_dim(dim, nd, per_dim._op)
    if nd == 0:
        return result_type(input.clone(), make(np.zeros((), np.int64)) if not input.is_cuda
                           else input.new_zeros((), dtype=_dtypes.int64))
    return result_type(*per_dim.apply(input, d, keepdim))


def max(input: Tensor, dim=None, keepdim: bool = False, *, other=None):  # noqa: A001
    """``max(input)``: the largest element; ``max(input, dim)``: (values, indices);
    ``max(input, other)``: elementwise maximum."""
    from .elementwise import maximum
    return _max_min(input, dim, keepdim, other, MaxAll, MaxDim, maximum, return_types_max)


def min(input: Tensor, dim=None, keepdim: bool = False, *, other=None):  # noqa: A001
    """``min(input)``: the smallest element; ``min(input, dim)``: (values, indices);
    ``min(input, other)``: elementwise minimum."""
    from .elementwise import minimum
    return _max_min(input, dim, keepdim, other, MinAll, MinDim, minimum, return_types_min)


def amax(input: Tensor, dim=(), keepdim: bool = False) -> Tensor:
    """Maximum over ``dim`` (all dims by default); ties share the gradient."""
    return Amax.apply(input, _dims(dim if dim != () else None, input._data.ndim, "amax"),
                      keepdim)


def amin(input: Tensor, dim=(), keepdim: bool = False) -> Tensor:
    """Minimum over ``dim`` (all dims by default); ties share the gradient."""
    return Amin.apply(input, _dims(dim if dim != () else None, input._data.ndim, "amin"),
                      keepdim)


def _arg(input, dim, keepdim, fn_name):
    a = input._data
    xp = xp_of(a)
    fn = getattr(xp, fn_name)
    if dim is None:
        out = fn(a.reshape(-1))
        if keepdim:
            out = xp.asarray(out).reshape((1,) * a.ndim)
    else:
        out = fn(a, axis=wrap_dim(dim, a.ndim, fn_name), keepdims=keepdim) if a.ndim else \
            xp.zeros((), np.int64)
    return make(xp.asarray(out).astype(np.int64, copy=False))


def argmax(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the largest element (over the flattened tensor when ``dim`` is None)."""
    return _arg(input, dim, keepdim, "argmax")


def argmin(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the smallest element (over the flattened tensor when ``dim`` is None)."""
    return _arg(input, dim, keepdim, "argmin")


# ---- variance and standard deviation ---------------------------------------------------------
class Var(Function):
    """Variance with Bessel-style ``correction``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, axes, correction, keepdim):
        a = x._data
        xp = xp_of(a)
        n = _count(a.shape, axes)
        ctx.save_for_backward(x)
        ctx.meta = (axes, correction, keepdim, n)
        centered = a - a.mean(axis=axes, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):  # dof <= 0 gives inf/nan, as torch
            out = (centered * centered).sum(axis=axes, keepdims=keepdim) / a.dtype.type(
                n - correction)
        return make(xp.asarray(out).astype(a.dtype, copy=False))

    jvp = _rules.reduction(lambda ctx: (ctx.meta[0], ctx.meta[2]))

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        axes, correction, keepdim, n = ctx.meta
        centered = x - x.mean(dim=axes, keepdim=True)
        scale = 2.0 / (n - correction) if n - correction > 0 else math.inf
        return _expand_back(g, axes, keepdim, x.shape) * centered * scale, None, None, None


def _correction(unbiased, correction, op):
    if unbiased is not None and correction is not None:
        raise RuntimeError(f"{op}: pass either unbiased or correction, not both")
    if correction is not None:
        return correction
    return 1 if unbiased is None or unbiased else 0


def _var_args(input, dim, unbiased, keepdim, correction, op):
    if isinstance(dim, bool):  # legacy var(input, unbiased)
        dim, unbiased = None, dim
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"{op}(): input dtype should be floating point, got {input.dtype}")
    return _dims(dim, input._data.ndim, op), _correction(unbiased, correction, op), keepdim


def var(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *,
        correction=None) -> Tensor:
    """Variance over ``dim``; ``correction=1`` (default) divides by N-1."""
    axes, c, keepdim = _var_args(input, dim, unbiased, keepdim, correction, "var")
    return Var.apply(input, axes, c, keepdim)


def std(input: Tensor, dim=None, unbiased=None, keepdim: bool = False, *,
        correction=None) -> Tensor:
    """Standard deviation over ``dim``; ``correction=1`` (default) divides by N-1."""
    axes, c, keepdim = _var_args(input, dim, unbiased, keepdim, correction, "std")
    return Std.apply(input, axes, c, keepdim)


class Std(Function):
    """Standard deviation with Bessel-style ``correction``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, axes, correction, keepdim):
        v = Var.forward(ctx, x, axes, correction, keepdim)
        y = make(xp_of(v._data).sqrt(v._data))
        ctx.save_for_backward(x, y)
        return y

    jvp = _rules.reduction(lambda ctx: (ctx.meta[0], ctx.meta[2]))

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        axes, correction, keepdim, n = ctx.meta
        centered = x - x.mean(dim=axes, keepdim=True)
        yk = _expand_back(y, axes, keepdim, x.shape)
        gk = _expand_back(g, axes, keepdim, x.shape)
        # d std = centered / ((n - c) * std); where std == 0 torch's result is nan-free 0
        denom = yk * (n - correction)
        return where(yk == 0, 0.0, gk * centered / where(yk == 0, 1.0, denom)), None, None, None


def var_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(var, mean) over ``dim``."""
    return var(input, dim, unbiased, keepdim, correction=correction), \
        mean(input, dim if not isinstance(dim, bool) else None, keepdim)


def std_mean(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """(std, mean) over ``dim``."""
    return std(input, dim, unbiased, keepdim, correction=correction), \
        mean(input, dim if not isinstance(dim, bool) else None, keepdim)


# ---- logsumexp, softmax, log_softmax -----------------------------------------------------------
class LogSumExp(Function):
    """``log(sum(exp(x)))`` over dims, computed stably."""
    _builtin = True
    _node_name = "LogsumexpBackward0"

    @staticmethod
    def forward(ctx, x, axes, keepdim):
        a = float_array(x)
        xp = xp_of(a)
        m = a.max(axis=axes, keepdims=True) if a.size else xp.zeros(
            _kept_shape(a.shape, axes), a.dtype)
        m = xp.where(xp.isfinite(m), m, 0)
        out = xp.log(xp.exp(a - m).sum(axis=axes, keepdims=True)) + m
        y = make(out if keepdim else out.reshape(_reduced_shape(a.shape, axes, False)))
        ctx.save_for_backward(x, y)
        ctx.meta = (axes, keepdim)
        return y

    jvp = _rules.reduction(lambda ctx: ctx.meta)

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        axes, keepdim = ctx.meta
        shape = x.shape
        return _expand_back(g, axes, keepdim, shape) * exp(
            x - _expand_back(y, axes, keepdim, shape)), None, None


def logsumexp(input: Tensor, dim, keepdim: bool = False) -> Tensor:
    """``log(sum(exp(input), dim))``, without overflow."""
    return LogSumExp.apply(input, _dims(dim, input._data.ndim, "logsumexp"), keepdim)


class Softmax(Function):
    """``exp(x) / sum(exp(x))`` along one dim."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim):
        a = float_array(x)
        xp = xp_of(a)
        e = xp.exp(a - a.max(axis=dim, keepdims=True)) if a.size else a.copy()
        y = make(e / e.sum(axis=dim, keepdims=True))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        y, = ctx.saved_tensors
        return y * (g - (g * y).sum(dim=ctx.dim, keepdim=True)), None


#: On NumPy, log_softmax and its backward over the last dim of an array of at least twice
#: this many elements run in blocks of rows of about this many elements: a block's passes
#: (max, subtract, exp, sum, multiply) reuse it while it is in the cache, and no temporary of
#: the array's size is made (W1 large, 4096x4096 float32 logits on a 2-core EPYC: forward
#: ~130 -> ~110 ms, backward ~135 -> ~105 ms). The same ufuncs on the same rows: the results
#: are bit for bit those of the whole-array expressions.
_BLOCK = 1 << 16


def _row_blocks(a, dim):
    """``a`` as a 2-D view (rows, last dim) and the rows per block when ``a`` takes the
    blocked NumPy path for a reduction over ``dim``, else None."""
    if (a.__class__ is not np.ndarray or a.size < 2 * _BLOCK or dim % a.ndim != a.ndim - 1
            or not a.flags.c_contiguous):
        return None
    n = a.shape[-1]
    return a.reshape(-1, n), _BLOCK // n or 1  # (max and min are ops here)


def _log_softmax_array(a, dim):
    """log_softmax of float array ``a`` along ``dim``: a new array."""
    if not a.size:
        return a.copy()
    blocked = _row_blocks(a, dim)
    if blocked is not None:
        a2, rows = blocked
        out = np.empty_like(a2)
        e = np.empty(a2[:rows].shape, a.dtype)  # one block's exp
        for i in range(0, a2.shape[0], rows):
            x, o = a2[i:i + rows], out[i:i + rows]
            eb = e[:x.shape[0]]
            np.subtract(x, x.max(axis=1, keepdims=True), out=o)
            np.exp(o, out=eb)
            s = eb.sum(axis=1, keepdims=True)
            o -= np.log(s, out=s)
        return out.reshape(a.shape)
    shifted = a - a.max(axis=dim, keepdims=True)
    # shifted is ours: subtract in place (one buffer of a's size less, same values)
    shifted -= xp_of(a).log(xp_of(a).exp(shifted).sum(axis=dim, keepdims=True))
    return shifted


def _log_softmax_backward_array(gd, yd, dim):
    """``gd - exp(yd) * gd.sum(dim)`` (log_softmax's backward on the arrays): one new array,
    written in place (no temporaries of its size), in row blocks on large NumPy arrays."""
    s = gd.sum(axis=dim, keepdims=True)
    blocked = _row_blocks(yd, dim)
    if blocked is not None and gd.shape == yd.shape and gd.__class__ is np.ndarray:
        y2, rows = blocked
        g2, s2 = gd.reshape(y2.shape), s.reshape(-1, 1)  # views unless gd is strided N-D
        out = np.empty_like(y2)
        for i in range(0, y2.shape[0], rows):
            o = out[i:i + rows]
            np.exp(y2[i:i + rows], out=o)
            o *= s2[i:i + rows]
            np.subtract(g2[i:i + rows], o, out=o)
        return out.reshape(yd.shape)
    xp = xp_of(gd)
    out = xp.exp(yd)
    out *= s
    if gd.shape != out.shape or not out.ndim:
        # a gradient of another shape broadcasts, and NumPy gives a 0-d result as a scalar
        # (no out= into it): a new array
        return gd - out
    return xp.subtract(gd, out, out=out)


class LogSoftmax(Function):
    """``x - logsumexp(x)`` along one dim."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim):
        y = make(_log_softmax_array(float_array(x), dim))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def _fast(x, dim):
        """The common case (see ``Function._fast``): a float tensor's log-softmax; a recorded
        one saves its output, as forward does."""
        if not isinstance(x, Tensor) or x._data.dtype.kind != "f":
            return None
        if _grad_state.enabled:
            if x._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(x)
            if x._requires_grad:
                y = _record_one(LogSoftmax, x, make(_log_softmax_array(x._data, dim)), False,
                                False, saves=False, n_args=2)
                ctx = y.grad_fn
                ctx._saved = [_Saved(y, 0)]
                ctx.dim = dim
                return y
        return make(_log_softmax_array(x._data, dim))

    @staticmethod
    def jvp(ctx, t, _):
        # J v = v - sum(softmax * v): LogSoftmax's Jacobian is not symmetric
        return t - (exp(ctx._fw_outputs[0]) * t).sum(dim=ctx.dim, keepdim=True)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled() and not ctx._in_jvp:  # not recorded: as the engine runs it
            out = LogSoftmax._backward_arrays(ctx, g._data)
            if out is not None:
                return make(out[0]), None
        y, = ctx.saved_tensors
        return g - exp(y) * g.sum(dim=ctx.dim, keepdim=True), None

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``): one expression."""
        saved = _saved_arrays(ctx)
        if saved is None:
            return None
        y = saved[0]
        if g.__class__ is not y.__class__ or g.dtype != y.dtype:
            return None
        return (_log_softmax_backward_array(g, y, ctx.dim),)


def _softmax_dim(input, dim, op):
    if dim is None:
        raise TypeError(f"{op}() requires dim: softmax over an implicit dim is deprecated in "
                        "torch; pass dim= explicitly (e.g. dim=-1)")
    return wrap_dim(dim, input._data.ndim, op) if input._data.ndim else 0


def softmax(input: Tensor, dim=None, dtype=None) -> Tensor:
    """Softmax along ``dim``."""
    if dtype is not None:
        input = input.to(_dtypes.as_dtype(dtype))
    d = _softmax_dim(input, dim, "softmax")
    return Softmax.apply(input, d)


def log_softmax(input: Tensor, dim=None, dtype=None) -> Tensor:
    """Log of softmax along ``dim``, computed stably."""
    if dtype is not None:
        input = input.to(_dtypes.as_dtype(dtype))
    d = _softmax_dim(input, dim, "log_softmax")
    return LogSoftmax.apply(input, d)


# ---- norm ---------------------------------------------------------------------------------
def norm(input: Tensor, p="fro", dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Vector p-norm over ``dim`` (all elements by default): p = 'fro'/2, 1, inf, -inf, 0, or
    any number. Built from differentiable ops, so it has every higher derivative."""
    if dtype is not None:
        input = input.to(_dtypes.as_dtype(dtype))
    if not input.dtype.is_floating_point:
        raise RuntimeError(f"norm(): input dtype should be floating point, got {input.dtype}. "
                           "Hint: call .float() first.")
    if p == "fro" or p is None:
        p = 2
    if isinstance(p, str):
        raise ValueError(f"norm(): p={p!r} is not supported; use 'fro' or a number")
    axes = _dims(dim, input._data.ndim, "norm")
    return Norm.apply(input, float(p), axes, keepdim)


class Norm(Function):
    """p-norm over dims."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, p, axes, keepdim):
        a = x._data
        xp = xp_of(a)
        absa = xp.abs(a)
        if p == 2:
            out = xp.sqrt((a * a).sum(axis=axes, keepdims=keepdim))
        elif p == math.inf:
            out = absa.max(axis=axes, keepdims=keepdim) if a.size else absa.sum(
                axis=axes, keepdims=keepdim)
        elif p == -math.inf:
            out = absa.min(axis=axes, keepdims=keepdim)
        elif p == 0:
            out = (a != 0).sum(axis=axes, keepdims=keepdim).astype(a.dtype)
        elif p == 1:
            out = absa.sum(axis=axes, keepdims=keepdim)
        else:
            out = (absa ** p).sum(axis=axes, keepdims=keepdim) ** (1.0 / p)
        y = make(xp.asarray(out).astype(a.dtype, copy=False))
        ctx.save_for_backward(x, y)
        ctx.meta = (p, axes, keepdim)
        return y

    jvp = _rules.reduction(lambda ctx: ctx.meta[1:])

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        p, axes, keepdim = ctx.meta
        shape = x.shape
        gk = _expand_back(g, axes, keepdim, shape)
        yk = _expand_back(y, axes, keepdim, shape)
        if p == 0:
            return gk * 0, None, None, None
        if p == 1:
            return gk * x.sign(), None, None, None
        if p in (math.inf, -math.inf):
            mask = x.abs() == yk
            count = mask.sum(dim=axes, keepdim=True)
            return gk * x.sign() * mask / count, None, None, None
        if p == 2:
            # x / ||x||, taken as 0 where the norm is 0 (torch's subgradient)
            return where(yk == 0, 0.0, gk * x / where(yk == 0, 1.0, yk)), None, None, None
        ax = x.abs()
        grad = x.sign() * ax ** (p - 1) / where(yk == 0, 1.0, yk) ** (p - 1)
        return where(yk == 0, 0.0, gk * grad), None, None, None


# ---- cumulative sum ---------------------------------------------------------------------------
class Cumsum(Function):
    """Running sum along one dim; the gradient is the reversed running sum."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, dim, dtype):
        a = x._data
        if dtype is None and a.dtype.kind in "biu":
            dtype = _dtypes.int64
        ctx.dim = dim
        return make(a.cumsum(axis=dim, dtype=None if dtype is None else dtype.np))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        d = ctx.dim
        return g.flip(d).cumsum(d).flip(d), None, None


def cumsum(input: Tensor, dim: int, *, dtype=None) -> Tensor:
    """Cumulative sum along ``dim``."""
    if input._data.ndim == 0:
        return input.clone()
    return Cumsum.apply(input, wrap_dim(dim, input._data.ndim, "cumsum"),
                        None if dtype is None else _dtypes.as_dtype(dtype))


# ---- logical reductions (no gradient) ------------------------------------------------------------
def all(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """True where every element over ``dim`` is nonzero."""
    axes = _dims(dim, input._data.ndim, "all")
    return make(xp_of(input._data).asarray(input._data.astype(bool).all(axis=axes,
                                                                          keepdims=keepdim)))


def any(input: Tensor, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A001
    """True where some element over ``dim`` is nonzero."""
    axes = _dims(dim, input._data.ndim, "any")
    return make(xp_of(input._data).asarray(input._data.astype(bool).any(axis=axes,
                                                                          keepdims=keepdim)))


def count_nonzero(input: Tensor, dim=None) -> Tensor:
    """Number of nonzero elements over ``dim``."""
    axes = _dims(dim, input._data.ndim, "count_nonzero")
    return make(xp_of(input._data).asarray((input._data != 0).sum(axis=axes)).astype(np.int64))
