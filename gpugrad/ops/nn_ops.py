"""Neural-network ops with their own Functions: im2col/col2im (``Unfold``/``Fold``, on which
convolutions and average pooling are built), max pooling and embedding lookup.

Everything is vectorized on the array module (NumPy or CuPy, the same code): ``Unfold``
reads every sliding window at once through a strided view (``as_strided``) and copies it
into columns; ``Fold`` adds columns back with one strided slice-add per kernel offset
(``kh * kw`` adds, never a loop over output positions or channels). A convolution is then
one ``Unfold`` and one (batched) matmul. ``Unfold`` and ``Fold`` are linear and each is the
other's backward, so gradients of gradients come for free.
"""
from __future__ import annotations

import numpy as np

from .._tensor import Tensor
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make, xp_of
from .indexing import _add_at

__all__ = ["Unfold", "Fold", "MaxPool2d", "unfold_windows", "out_size", "im2col", "col2im",
           "max_pool2d_with_indices"]


def out_size(n: int, k: int, s: int, d: int, pad_total: int) -> int:
    """The number of window positions along one axis (floor mode)."""
    return (n + pad_total - d * (k - 1) - 1) // s + 1


def _strided(xp):
    if xp is np:
        return np.lib.stride_tricks.as_strided
    # imported by name: ``cupy.lib`` is a subpackage that ``import cupy`` need not load
    from cupy.lib.stride_tricks import as_strided
    return as_strided


def unfold_windows(a, kernel, dilation, stride, out_hw):
    """A read-only strided view (N, C, kh, kw, oh, ow) of the windows of a padded array
    (N, C, H, W): element [n, c, i, j, p, q] is a[n, c, p*sh + i*dh, q*sw + j*dw]."""
    (kh, kw), (dh, dw), (sh, sw), (oh, ow) = kernel, dilation, stride, out_hw
    sn, sc, sy, sx = a.strides
    return _strided(xp_of(a))(a, (a.shape[0], a.shape[1], kh, kw, oh, ow),
                              (sn, sc, sy * dh, sx * dw, sy * sh, sx * sw))


def _pad_array(a, padding, value=0.0):
    """``a`` padded by ((top, bottom), (left, right)); a negative amount crops (the transposed
    convolution's output_padding makes the adjoint of such a fold)."""
    (pt, pb), (pl, pr) = padding
    if min(pt, pb, pl, pr) < 0:
        a = a[:, :, max(-pt, 0):a.shape[2] - max(-pb, 0), max(-pl, 0):a.shape[3] - max(-pr, 0)]
        pt, pb, pl, pr = max(pt, 0), max(pb, 0), max(pl, 0), max(pr, 0)
    if not (pt or pb or pl or pr):
        return a
    return xp_of(a).pad(a, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=value)


def im2col(a, kernel, dilation, padding, stride):
    """Columns (N, C*kh*kw, oh*ow) of array ``a`` (N, C, H, W), and (oh, ow)."""
    n, c, h, w = a.shape
    (pt, pb), (pl, pr) = padding
    oh = out_size(h, kernel[0], stride[0], dilation[0], pt + pb)
    ow = out_size(w, kernel[1], stride[1], dilation[1], pl + pr)
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"unfold: the input of spatial size ({h}, {w}) with padding "
                           f"{padding} is smaller than the kernel {tuple(kernel)} with dilation "
                           f"{tuple(dilation)}: the output would be ({oh}, {ow}). Use a smaller "
                           "kernel or more padding.")
    win = unfold_windows(_pad_array(a, padding), kernel, dilation, stride, (oh, ow))
    # the reshape copies the windows into contiguous columns: one pass over the output
    return win.reshape(n, c * kernel[0] * kernel[1], oh * ow), (oh, ow)


def col2im(cols, hw, kernel, dilation, padding, stride):
    """The adjoint of ``im2col``: add columns (N, C*kh*kw, L) back into (N, C, H, W)."""
    xp = xp_of(cols)
    (kh, kw), (dh, dw), (sh, sw) = kernel, dilation, stride
    (pt, pb), (pl, pr) = padding
    h, w = hw
    hp, wp = h + pt + pb, w + pl + pr
    oh, ow = out_size(h, kh, sh, dh, pt + pb), out_size(w, kw, sw, dw, pl + pr)
    n, ck, length = cols.shape
    if ck % (kh * kw) or length != oh * ow:
        raise RuntimeError(f"fold: expected input of shape (N, C*{kh}*{kw}, {oh}*{ow}) for an "
                           f"output of size ({h}, {w}) with kernel {tuple(kernel)}, dilation "
                           f"{tuple(dilation)}, padding {padding}, stride {tuple(stride)}; got "
                           f"{tuple(cols.shape)}")
    c = ck // (kh * kw)
    blocks = cols.reshape(n, c, kh, kw, oh, ow)
    # negative bottom/right padding: output rows no window reaches (they stay zero)
    out = xp.zeros((n, c, max(hp, pt + h), max(wp, pl + w)), dtype=cols.dtype)
    # one strided add per kernel offset: within one offset the windows never overlap
    for i in range(kh):
        y0 = i * dh
        for j in range(kw):
            x0 = j * dw
            out[:, :, y0:y0 + sh * (oh - 1) + 1:sh, x0:x0 + sw * (ow - 1) + 1:sw] += \
                blocks[:, :, i, j]
    return out[:, :, pt:pt + h, pl:pl + w]


class Unfold(Function):
    """Sliding windows of (N, C, H, W) as columns (N, C*kh*kw, L), torch's ``F.unfold``
    layout; ``padding`` is ((top, bottom), (left, right))."""
    _builtin = True
    _node_name = "Im2ColBackward0"

    @staticmethod
    def forward(ctx, x, kernel, dilation, padding, stride):
        cols, _ = im2col(x._data, kernel, dilation, padding, stride)
        ctx.meta = (tuple(x.shape[2:]), kernel, dilation, padding, stride)
        return make(np.ascontiguousarray(cols) if cols.__class__ is np.ndarray else cols)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        hw, kernel, dilation, padding, stride = ctx.meta
        return Fold.apply(g, hw, kernel, dilation, padding, stride), None, None, None, None


class Fold(Function):
    """Columns (N, C*kh*kw, L) summed back into (N, C, H, W) (``F.fold``; the adjoint of
    ``Unfold``)."""
    _builtin = True
    _node_name = "Col2ImBackward0"

    @staticmethod
    def forward(ctx, cols, hw, kernel, dilation, padding, stride):
        ctx.meta = (kernel, dilation, padding, stride)
        out = col2im(cols._data, hw, kernel, dilation, padding, stride)
        return make(xp_of(out).ascontiguousarray(out))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        kernel, dilation, padding, stride = ctx.meta
        return Unfold.apply(g, kernel, dilation, padding, stride), None, None, None, None, None


# ---- max pooling ------------------------------------------------------------------------------
def max_pool2d_with_indices(a, kernel, stride, padding, dilation, ceil_mode):
    """(values, indices) of 2-D max pooling of array ``a`` (N, C, H, W); indices are flat
    positions in each (H, W) plane, as torch returns them."""
    xp = xp_of(a)
    n, c, h, w = a.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh, ow = (_pool_out(h, kh, sh, ph, dh, ceil_mode), _pool_out(w, kw, sw, pw, dw, ceil_mode))
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"max_pool2d: output size is too small: input ({h}, {w}), kernel "
                           f"{tuple(kernel)}, padding {tuple(padding)} give ({oh}, {ow})")
    # pad right/bottom as far as the last (ceil-mode) window reaches
    extra_h = max(0, (oh - 1) * sh + dh * (kh - 1) + 1 - (h + 2 * ph))
    extra_w = max(0, (ow - 1) * sw + dw * (kw - 1) + 1 - (w + 2 * pw))
    fill = -xp.inf if a.dtype.kind == "f" else np.iinfo(a.dtype).min
    padded = _pad_array(a, ((ph, ph + extra_h), (pw, pw + extra_w)), fill)
    win = unfold_windows(padded, kernel, dilation, stride, (oh, ow))
    # (N, C, oh, ow, kh*kw): windows last, so one argmax finds each maximum
    win = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, oh, ow, kh * kw)
    arg = win.argmax(axis=-1)
    values = xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    ki, kj = arg // kw, arg % kw
    rows = xp.arange(oh).reshape(oh, 1) * sh - ph + ki * dh
    cols = xp.arange(ow).reshape(1, ow) * sw - pw + kj * dw
    return values, (rows * w + cols).astype(np.int64)


def _pool_out(n, k, s, p, d, ceil_mode):
    span = n + 2 * p - d * (k - 1) - 1
    if ceil_mode:
        o = -(-span // s) + 1
        if (o - 1) * s >= n + p:  # the last window must start inside the input or left pad
            o -= 1
        return o
    return span // s + 1


class MaxPool2d(Function):
    """2-D max pooling; the gradient goes to each window's (first) maximum."""
    _builtin = True
    _node_name = "MaxPool2DWithIndicesBackward0"

    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        values, idx = max_pool2d_with_indices(x._data, kernel, stride, padding, dilation,
                                              ceil_mode)
        indices = make(idx)
        ctx.mark_non_differentiable(indices)
        ctx.meta = (tuple(x.shape), idx)
        return make(values), indices

    @staticmethod
    def jvp(ctx, t, *_):
        # the tangent at each window's maximum; the indices have none
        shape, idx = ctx.meta
        gshape = tuple(ctx._fw_outputs[0].shape)
        return _PoolGather.apply(t, _plane_flat(idx, shape), gshape), None

    @staticmethod
    def backward(ctx, g, _gi):
        shape, idx = ctx.meta
        return _PoolScatter.apply(g, idx, shape), None, None, None, None, None


def _plane_flat(idx, shape):
    """Flat positions in the whole (N, C, H, W) array from per-plane indices."""
    xp = xp_of(idx)
    n, c, h, w = shape
    base = (xp.arange(n * c, dtype=np.int64) * (h * w)).reshape(n, c, 1, 1)
    return (idx + base).reshape(-1)


class _PoolScatter(Function):
    """Add ``g`` (N, C, oh, ow) into zeros (N, C, H, W) at per-plane flat indices."""
    _builtin = True
    _node_name = "MaxPool2DWithIndicesBackwardBackward0"

    @staticmethod
    def forward(ctx, g, idx, shape):
        a = g._data
        flat = _plane_flat(idx, shape)
        out = xp_of(a).zeros(int(np.prod(shape)), dtype=a.dtype)
        _add_at(out, flat, a.reshape(-1))  # overlapping windows may share a maximum
        ctx.meta = (flat, tuple(g.shape))
        return make(out.reshape(shape))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        flat, gshape = ctx.meta
        return _PoolGather.apply(gg, flat, gshape), None, None


class _PoolGather(Function):
    """The adjoint of ``_PoolScatter``: read (N, C, H, W) at the flat indices."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, flat, gshape):
        ctx.meta = (flat, tuple(x.shape))
        return make(x._data.reshape(-1)[flat].reshape(gshape))

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        flat, shape = ctx.meta
        xp = xp_of(g._data)
        n, c, h, w = shape
        # express the flat positions per plane again for _PoolScatter
        plane = flat.reshape(n, c, -1) - (xp.arange(n * c, dtype=np.int64) * (h * w)).reshape(
            n, c, 1)
        return _PoolScatter.apply(g, plane.reshape(g.shape), shape), None, None


# ---- embedding --------------------------------------------------------------------------------
class Embedding(Function):
    """Rows of ``weight`` at integer ``indices``; the gradient of the ``padding_idx`` row is
    zero; with ``scale_grad_by_freq`` each row's gradient is divided by how often its index
    occurs in ``indices``."""
    _builtin = True

    @staticmethod
    def forward(ctx, weight, indices, padding_idx, scale_grad_by_freq=False):
        idx = indices._data
        ctx.meta = (idx, padding_idx, tuple(weight.shape), scale_grad_by_freq)
        return make(weight._data[idx])

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, g):
        idx, padding_idx, shape, by_freq = ctx.meta
        return _EmbeddingScatter.apply(g, idx, padding_idx, shape, by_freq), None, None, None


def _inverse_frequency(flat, n: int, dtype):
    """1 / (occurrences of each entry of ``flat`` in ``flat``), one per entry, as a column."""
    xp = xp_of(flat)
    counts = xp.bincount(flat, minlength=n)[flat]
    return (1.0 / counts).astype(dtype)[:, None]


class _EmbeddingScatter(Function):
    """Sum the rows of ``g`` into a (num_embeddings, dim) gradient at ``idx``."""
    _builtin = True
    _node_name = "EmbeddingBackward0"

    @staticmethod
    def forward(ctx, g, idx, padding_idx, shape, by_freq=False):
        a = g._data
        flat = idx.reshape(-1)
        rows = a.reshape(-1, shape[1])
        if by_freq:
            rows = rows * _inverse_frequency(flat, shape[0], a.dtype)
        out = xp_of(a).zeros(shape, dtype=a.dtype)
        _add_at(out, flat, rows)
        if padding_idx is not None:
            out[padding_idx] = 0
        ctx.meta = (idx, padding_idx, shape[0], by_freq)
        return make(out)

    jvp = _rules.linear()

    @staticmethod
    def backward(ctx, gg):
        idx, padding_idx, n, by_freq = ctx.meta
        out = Embedding.apply(gg, Tensor._make(idx), None)
        if padding_idx is not None:
            keep = make((idx != padding_idx)[..., None].astype(gg._data.dtype))
            out = out * keep
        if by_freq:
            out = out * make(_inverse_frequency(idx.reshape(-1), n, gg._data.dtype)
                             .reshape(idx.shape + (1,)))
        return out, None, None, None, None
