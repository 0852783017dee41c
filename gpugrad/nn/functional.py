"""``gpugrad.nn.functional``: layers, activations and losses as functions, under
torch.nn.functional's names and argument orders.

Convolutions are ``Unfold`` (im2col) plus one batched matmul; pooling and normalization are
vectorized over positions and channels. Losses live in ``_losses`` and are re-exported here.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .. import _capture, _random
from .._tensor import Tensor
from ..autograd.grad_mode import no_grad
from ..ops import (elu as _elu, gelu, leaky_relu as _leaky_relu, log_softmax, relu as _relu,  # noqa
                   sigmoid, silu as _silu, softmax, softplus, tanh)
from ..ops import matmul, where
from ..ops._compat import host_minmax
from ..ops.inplace import apply_inplace
from ..ops.nn_ops import Embedding as _EmbeddingFn
from ..ops.nn_ops import Fold, MaxPool2d, Unfold, _pool_out
from ..ops.pad import pad  # noqa: F401
from ._losses import (binary_cross_entropy, binary_cross_entropy_with_logits,  # noqa: F401
                      cross_entropy, huber_loss, kl_div, l1_loss, mse_loss, nll_loss,
                      smooth_l1_loss)

__all__ = [
    # activations
    "relu", "relu_", "relu6", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softmax",
    "log_softmax", "softmin", "softplus", "hardtanh", "logsigmoid",
    # layers
    "linear", "bilinear", "conv1d", "conv2d", "conv_transpose2d", "unfold", "fold",
    "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "max_pool1d", "avg_pool1d",
    "adaptive_avg_pool1d", "dropout1d", "dropout2d", "prelu", "batch_norm", "layer_norm",
    "group_norm", "dropout", "embedding", "one_hot", "normalize", "pad", "pairwise_distance",
    "cosine_similarity",
    # losses
    "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]


def _check_tensor(op, x, name="input"):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}(): argument '{name}' must be a Tensor, not {type(x).__name__}")


# ---- activations (torch.nn.functional signatures, with inplace) --------------------------------
def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """max(x, 0); ``inplace`` writes into ``input``."""
    return input.relu_() if inplace else _relu(input)


def relu_(input: Tensor) -> Tensor:
    """In-place ReLU."""
    return input.relu_()


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    """Leaky ReLU with slope ``negative_slope`` below zero."""
    if inplace:
        return apply_inplace(input, "leaky_relu_", _leaky_relu, negative_slope)
    return _leaky_relu(input, negative_slope)


def elu(input: Tensor, alpha: float = 1.0, inplace: bool = False) -> Tensor:
    """Exponential linear unit."""
    if inplace:
        return apply_inplace(input, "elu_", _elu, alpha)
    return _elu(input, alpha)


def silu(input: Tensor, inplace: bool = False) -> Tensor:
    """x * sigmoid(x)."""
    if inplace:
        return apply_inplace(input, "silu_", _silu)
    return _silu(input)


def hardtanh(input: Tensor, min_val: float = -1.0, max_val: float = 1.0,
             inplace: bool = False) -> Tensor:
    """Clamp to [min_val, max_val]."""
    if inplace:
        return input.clamp_(min_val, max_val)
    return input.clamp(min_val, max_val)


def relu6(input: Tensor, inplace: bool = False) -> Tensor:
    """min(max(x, 0), 6)."""
    return hardtanh(input, 0.0, 6.0, inplace)


def logsigmoid(input: Tensor) -> Tensor:
    """log(sigmoid(x)), stable for large |x|: -softplus(-x)."""
    return -softplus(-input)


def softmin(input: Tensor, dim=None, dtype=None) -> Tensor:
    """softmax(-x)."""
    return softmax(-input, dim, dtype)


# ---- linear -----------------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias``."""
    _check_tensor("linear", input)
    if input.shape[-1:] != weight.shape[-1:]:
        raise RuntimeError(f"linear: mat1 and mat2 shapes cannot be multiplied "
                           f"({_rows(input.shape)}x{input.shape[-1] if input.ndim else 1} and "
                           f"{weight.shape[-1]}x{weight.shape[0] if weight.ndim > 1 else 1}); "
                           f"the input's last dim must be in_features={weight.shape[-1]}")
    out = matmul(input, weight.t() if weight.ndim == 2 else weight)
    return out if bias is None else out + bias


def _rows(shape):
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def bilinear(input1: Tensor, input2: Tensor, weight: Tensor, bias: Tensor | None = None):
    """``y_k = x1^T W_k x2 + b_k`` for weight (out, in1, in2)."""
    out_f, in1, in2 = weight.shape
    if input1.shape[-1] != in1 or input2.shape[-1] != in2:
        raise RuntimeError(f"bilinear: expected input1 (..., {in1}) and input2 (..., {in2}) for "
                           f"weight {list(weight.shape)}, got {list(input1.shape)} and "
                           f"{list(input2.shape)}")
    w = weight.permute(1, 0, 2).reshape(in1, out_f * in2)
    t = matmul(input1, w).unflatten(-1, (out_f, in2))  # (..., out, in2)
    y = (t * input2.unsqueeze(-2)).sum(-1)
    return y if bias is None else y + bias


# ---- convolution ------------------------------------------------------------------------------
def _ntuple(v, n, name="argument"):
    if isinstance(v, (tuple, list)):
        if len(v) != n:
            raise ValueError(f"expected {name} to be a single int or a tuple of {n} ints, got "
                             f"{tuple(v)}")
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _conv_padding(padding, kernel, dilation, stride, op):
    """((top, bottom), (left, right)) from an int, a tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        if padding != "same":
            raise ValueError(f"{op}: invalid padding string {padding!r}, should be one of "
                             "{'valid', 'same'}")
        if any(s != 1 for s in stride):
            raise ValueError(f"{op}: padding='same' is not supported for strided convolutions")
        # torch puts the odd pixel of an even kernel on the bottom/right
        tot = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return tuple((t // 2, t - t // 2) for t in tot)
    p = _ntuple(padding, 2, "padding")
    return ((p[0], p[0]), (p[1], p[1]))


def _check_conv(op, x, weight, groups, nd):
    _check_tensor(op, x)
    if x.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"{op}: expected a {nd + 1}D (unbatched) or {nd + 2}D (batched) input, "
                           f"got input of size {list(x.shape)}")
    if weight.ndim != nd + 2:
        raise RuntimeError(f"{op}: expected a {nd + 2}D weight, got {list(weight.shape)}")
    c = x.shape[-nd - 1]
    if groups < 1 or c % groups or weight.shape[0] % groups:
        raise RuntimeError(f"{op}: groups={groups} must divide both the input channels ({c}) "
                           f"and the output channels ({weight.shape[0]})")


def conv2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """2-D convolution (cross-correlation) of (N, C_in, H, W) with weight
    (C_out, C_in/groups, kh, kw): one im2col and one batched matmul."""
    _check_conv("conv2d", input, weight, groups, 2)
    if input.ndim == 3:
        return conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation,
                      groups).squeeze(0)
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    kernel = tuple(weight.shape[2:])
    pads = _conv_padding(padding, kernel, dilation, stride, "conv2d")
    n, c = input.shape[:2]
    cout, cg = weight.shape[:2]
    if cg * groups != c:
        raise RuntimeError(f"conv2d: Given groups={groups}, weight of size {list(weight.shape)}, "
                           f"expected input{list(input.shape)} to have {cg * groups} channels, "
                           f"but got {c} channels instead")
    cols = Unfold.apply(input, kernel, dilation, pads, stride)  # (N, C*kh*kw, L)
    h, w = input.shape[2:]
    oh = (h + sum(pads[0]) - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    ow = (w + sum(pads[1]) - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    if groups == 1:
        out = matmul(weight.reshape(cout, -1), cols)  # (N, C_out, L)
    else:
        k = cg * kernel[0] * kernel[1]
        out = matmul(weight.reshape(groups, cout // groups, k),
                     cols.reshape(n, groups, k, oh * ow))  # (N, G, C_out/G, L)
    out = out.reshape(n, cout, oh, ow)
    return out if bias is None else out + bias.reshape(1, cout, 1, 1)


def conv1d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1, padding=0,
           dilation=1, groups: int = 1) -> Tensor:
    """1-D convolution of (N, C_in, L) with weight (C_out, C_in/groups, k), as a 2-D one
    of height 1."""
    _check_conv("conv1d", input, weight, groups, 1)
    if isinstance(padding, str):
        pad2 = padding
    else:
        pad2 = (0, _ntuple(padding, 1, "padding")[0])
    out = conv2d(input.unsqueeze(-2), weight.unsqueeze(-2), bias,
                 (1, _ntuple(stride, 1, "stride")[0]), pad2,
                 (1, _ntuple(dilation, 1, "dilation")[0]), groups)
    return out.squeeze(-2)


def conv_transpose2d(input: Tensor, weight: Tensor, bias: Tensor | None = None, stride=1,
                     padding=0, output_padding=0, groups: int = 1, dilation=1) -> Tensor:
    """Transposed 2-D convolution (the gradient of conv2d w.r.t. its input) with weight
    (C_in, C_out/groups, kh, kw): one batched matmul and one col2im."""
    _check_tensor("conv_transpose2d", input)
    if input.ndim == 3:
        return conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding,
                                output_padding, groups, dilation).squeeze(0)
    if input.ndim != 4 or weight.ndim != 4:
        raise RuntimeError(f"conv_transpose2d: expected 4D input and weight, got "
                           f"{list(input.shape)} and {list(weight.shape)}")
    stride, dilation = _ntuple(stride, 2, "stride"), _ntuple(dilation, 2, "dilation")
    padding, output_padding = _ntuple(padding, 2, "padding"), _ntuple(output_padding, 2,
                                                                      "output_padding")
    for op_, s, d in zip(output_padding, stride, dilation):
        if op_ >= max(s, d):
            raise RuntimeError(f"conv_transpose2d: output padding must be smaller than either "
                               f"stride or dilation, but got output_padding={output_padding}, "
                               f"stride={stride}, dilation={dilation}")
    n, cin, h, w = input.shape
    if weight.shape[0] != cin or cin % groups:
        raise RuntimeError(f"conv_transpose2d: Given transposed=1, weight of size "
                           f"{list(weight.shape)}, expected input{list(input.shape)} to have "
                           f"{weight.shape[0]} channels, but got {cin} channels instead")
    cog, kh, kw = weight.shape[1:]
    cg = cin // groups
    oh = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    # columns (N, G, C_out/G*kh*kw, H*W) = W_g^T @ x_g
    wt = weight.reshape(groups, cg, cog * kh * kw).transpose(-1, -2)
    cols = matmul(wt, input.reshape(n, groups, cg, h * w))
    cols = cols.reshape(n, groups * cog * kh * kw, h * w)
    pads = ((padding[0], padding[0] + output_padding[0]),
            (padding[1], padding[1] + output_padding[1]))
    # col2im onto the padded output; the extra output_padding rows get no contribution
    out = Fold.apply(cols, (oh, ow), (kh, kw), dilation, _fold_pads(pads, output_padding),
                     stride)
    return out if bias is None else out + bias.reshape(1, -1, 1, 1)


def _fold_pads(pads, output_padding):
    # The windows cover (h-1)*s + d*(k-1) + 1 rows of the padded output; output_padding rows
    # are added at the bottom/right and receive nothing, so they are "negative" padding there.
    (pt, _), (pl, _) = pads
    return ((pt, pt - output_padding[0]), (pl, pl - output_padding[1]))


def unfold(input: Tensor, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Sliding blocks of (N, C, H, W) as columns (N, C*kh*kw, L)."""
    p = _ntuple(padding, 2, "padding")
    return Unfold.apply(input, _ntuple(kernel_size, 2, "kernel_size"),
                        _ntuple(dilation, 2, "dilation"), ((p[0], p[0]), (p[1], p[1])),
                        _ntuple(stride, 2, "stride"))


def fold(input: Tensor, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Sum columns (N, C*kh*kw, L) back into (N, C, H, W) (the adjoint of ``unfold``)."""
    p = _ntuple(padding, 2, "padding")
    return Fold.apply(input, _ntuple(output_size, 2, "output_size"),
                      _ntuple(kernel_size, 2, "kernel_size"), _ntuple(dilation, 2, "dilation"),
                      ((p[0], p[0]), (p[1], p[1])), _ntuple(stride, 2, "stride"))


# ---- pooling ----------------------------------------------------------------------------------
def _pool_args(op, input, kernel_size, stride, padding, dilation=1):
    _check_tensor(op, input)
    if input.ndim not in (3, 4):
        raise RuntimeError(f"{op}: expected 3D or 4D input, got {list(input.shape)}")
    k = _ntuple(kernel_size, 2, "kernel_size")
    s = k if stride is None or (isinstance(stride, (tuple, list)) and not stride) else \
        _ntuple(stride, 2, "stride")
    p = _ntuple(padding, 2, "padding")
    if any(pi > ki // 2 for pi, ki in zip(p, k)):
        raise RuntimeError(f"{op}: pad should be at most half of effective kernel size, but got "
                           f"pad={p}, kernel_size={k}")
    return k, s, p, _ntuple(dilation, 2, "dilation")


def max_pool2d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """2-D max pooling; with ``return_indices``, also the flat (H*W) index of each max."""
    k, s, p, d = _pool_args("max_pool2d", input, kernel_size, stride, padding, dilation)
    if input.ndim == 3:
        out, idx = MaxPool2d.apply(input.unsqueeze(0), k, s, p, d, bool(ceil_mode))
        out, idx = out.squeeze(0), idx.squeeze(0)
    else:
        out, idx = MaxPool2d.apply(input, k, s, p, d, bool(ceil_mode))
    return (out, idx) if return_indices else out


def _avg_pool_divisors(n_in, k, s, p, n_out, include_pad):
    """Per output position along one axis, the size torch divides the window's sum by: the
    window clipped to the padded input (``include_pad``) or to the input itself."""
    start = np.arange(n_out) * s - p
    end = np.minimum(start + k, n_in + p)
    if not include_pad:
        start, end = np.maximum(start, 0), np.minimum(end, n_in)
    return end - start


def avg_pool2d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override=None) -> Tensor:
    """2-D average pooling, as an unfold of each channel and a sum over the window divided
    by torch's window sizes (``ceil_mode`` adds the partial windows at the end)."""
    k, s, p, _ = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    if input.ndim == 3:
        return avg_pool2d(input.unsqueeze(0), k, s, p, ceil_mode, count_include_pad,
                          divisor_override).squeeze(0)
    n, c, h, w = input.shape
    oh, ow = (_pool_out(h, k[0], s[0], p[0], 1, ceil_mode),
              _pool_out(w, k[1], s[1], p[1], 1, ceil_mode))
    # ceil_mode's last windows may reach past the padded input: zeros there add nothing
    extra = [max(0, (o - 1) * si + ki - (n_ + 2 * pi))
             for o, si, ki, n_, pi in zip((oh, ow), s, k, (h, w), p)]
    pads = ((p[0], p[0] + extra[0]), (p[1], p[1] + extra[1]))
    cols = Unfold.apply(input.reshape(n * c, 1, h, w), k, (1, 1), pads, s)  # (NC, kh*kw, L)
    total = cols.sum(1)
    if divisor_override:
        out = total / divisor_override
    else:
        dh = _avg_pool_divisors(h, k[0], s[0], p[0], oh, count_include_pad)
        dw = _avg_pool_divisors(w, k[1], s[1], p[1], ow, count_include_pad)
        sizes = np.outer(dh, dw).reshape(-1)
        if (sizes == sizes[0]).all():  # the common case: one number
            out = total / int(sizes[0])
        else:
            xp = _xp(input)
            out = total / Tensor._make(xp.asarray(sizes.astype(input._data.dtype)))
    return out.reshape(n, c, oh, ow)


def _xp(t: Tensor):
    from ..ops._util import xp_of
    return xp_of(t._data)


def _adaptive_matrix(n_in, n_out, like: Tensor) -> Tensor:
    """(n_out, n_in) averaging matrix of torch's adaptive windows
    [floor(i*n_in/n_out), ceil((i+1)*n_in/n_out))."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    j = np.arange(n_in)
    m = ((j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])).astype(np.float64)
    m /= m.sum(1, keepdims=True)
    from .. import _backend
    return Tensor._make(_backend.to_device(m.astype(like._data.dtype), like.device))


def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """Average over torch's adaptive windows: ``P_h @ x @ P_w^T`` with two small averaging
    matrices (exact for any input and output size)."""
    _check_tensor("adaptive_avg_pool2d", input)
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d: expected 3D or 4D input, got "
                           f"{list(input.shape)}")
    h, w = input.shape[-2:]
    oh, ow = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
    oh, ow = h if oh is None else int(oh), w if ow is None else int(ow)
    if oh == h and ow == w:
        return input * 1.0 if input.is_floating_point() else input.float()
    ph = _adaptive_matrix(h, oh, input)
    pw = _adaptive_matrix(w, ow, input)
    return matmul(matmul(ph, input), pw.t())


# ---- normalization ----------------------------------------------------------------------------
def batch_norm(input: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
               weight: Tensor | None = None, bias: Tensor | None = None,
               training: bool = False, momentum: float | None = 0.1, eps: float = 1e-5):
    """Normalize over the batch (and spatial) dims per channel (dim 1). In training, batch
    statistics are used and the running ones updated in place (unbiased variance)."""
    _check_tensor("batch_norm", input)
    if input.ndim < 2:
        raise ValueError(f"batch_norm: expected 2D or more input, got {input.ndim}D")
    c = input.shape[1]
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, c) + (1,) * (input.ndim - 2)
    if training:
        count = input.numel() // c
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input "
                             f"size {list(input.shape)}")
        mean = input.mean(axes, keepdim=True)
        var = ((input - mean) ** 2).mean(axes, keepdim=True)
        if running_mean is not None and running_var is not None:
            with no_grad():
                m = 0.1 if momentum is None else momentum
                bm = mean.detach().reshape(c)
                bv = var.detach().reshape(c) * (count / (count - 1))
                running_mean.mul_(1 - m).add_(bm * m)
                running_var.mul_(1 - m).add_(bv * m)
    else:
        if running_mean is None or running_var is None:
            raise RuntimeError("batch_norm: running_mean and running_var are needed when not "
                               "training (or pass training=True)")
        mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    out = (input - mean) * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


def layer_norm(input: Tensor, normalized_shape, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over the last ``len(normalized_shape)`` dims (biased variance)."""
    _check_tensor("layer_norm", input)
    ns = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else \
        tuple(normalized_shape)
    if tuple(input.shape[input.ndim - len(ns):]) != ns:
        raise RuntimeError(f"layer_norm: Given normalized_shape={list(ns)}, expected input with "
                           f"shape [*, {', '.join(map(str, ns))}], but got input of size"
                           f"{list(input.shape)}")
    axes = tuple(range(input.ndim - len(ns), input.ndim))
    mean = input.mean(axes, keepdim=True)
    centered = input - mean
    var = (centered * centered).mean(axes, keepdim=True)
    out = centered * (var + eps).rsqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Normalize over groups of channels (and all spatial positions) per sample."""
    _check_tensor("group_norm", input)
    n, c = input.shape[:2]
    if c % num_groups:
        raise RuntimeError(f"group_norm: Expected number of channels in input to be divisible "
                           f"by num_groups, but got input of shape {list(input.shape)} and "
                           f"num_groups={num_groups}")
    x = input.reshape(n, num_groups, -1)
    mean = x.mean(-1, keepdim=True)
    centered = x - mean
    var = (centered * centered).mean(-1, keepdim=True)
    out = (centered * (var + eps).rsqrt()).reshape(input.shape)
    shape = (1, c) + (1,) * (input.ndim - 2)
    if weight is not None:
        out = out * weight.reshape(shape)
    if bias is not None:
        out = out + bias.reshape(shape)
    return out


# ---- dropout, embedding, one_hot, normalize ----------------------------------------------------
def dropout(input: Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> Tensor:
    """Zero each element with probability ``p`` (gpugrad's seeded RNG) and scale the rest by
    ``1/(1-p)``; the identity when not training."""
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        keep = input._data * 0
    else:
        u = _random.uniform(input.device, tuple(input.shape), input.dtype)
        keep = (u >= p).astype(input._data.dtype) * (1.0 / (1.0 - p))
    mask = Tensor._make(keep.astype(input._data.dtype, copy=False))
    if inplace:
        return input.mul_(mask)
    return input * mask


def embedding(input: Tensor, weight: Tensor, padding_idx: int | None = None,
              max_norm: float | None = None, norm_type: float = 2.0,
              scale_grad_by_freq: bool = False, sparse: bool = False) -> Tensor:
    """Rows of ``weight`` at the integer indices ``input``. ``max_norm`` renormalizes the rows
    used, in place, as torch does."""
    _check_tensor("embedding", input)
    if input._data.dtype.kind not in "iu":
        raise RuntimeError(f"embedding: Expected tensor for argument #1 'indices' to have one of "
                           f"the following scalar types: Long, Int; but got {input.dtype} "
                           "instead")
    num = weight.shape[0]
    if padding_idx is not None:
        if not -num <= padding_idx < num:
            raise AssertionError("Padding_idx must be within num_embeddings")
        padding_idx = padding_idx % num
    idx = input._data
    if not _capture.cuda_capturing:  # a capture cannot read them (see ops/indexing.py)
        lo, hi = host_minmax(idx) if idx.size else (0, -1)  # one host transfer on CUDA
        if lo < 0 or hi >= num:
            raise IndexError(f"embedding: index out of range in self (indices must be in "
                             f"[0, {num}), got min {lo}, max {hi})")
    if sparse:
        raise NotImplementedError("embedding: sparse=True is not supported: gpugrad has no "
                                  "sparse tensors; the dense gradient is the same values")
    if max_norm is not None:
        with no_grad():
            xp = _xp(weight)
            rows = xp.unique(idx.reshape(-1))
            w = weight._data
            norms = (xp.abs(w[rows]) ** norm_type).sum(-1) ** (1.0 / norm_type)
            scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0)
            w[rows] *= scale[:, None].astype(w.dtype)
            weight._version.value += 1
    return _EmbeddingFn.apply(weight, input, padding_idx, bool(scale_grad_by_freq))


def one_hot(tensor: Tensor, num_classes: int = -1) -> Tensor:
    """int64 one-hot encoding with a new last dim of ``num_classes`` (max + 1 by default)."""
    _check_tensor("one_hot", tensor, "tensor")
    a = tensor._data
    if a.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    # A capture cannot read the values on the host (see ops/indexing.py): the check is
    # skipped there; num_classes=-1 must read the maximum, and fails in a capture.
    if num_classes == -1 or not _capture.cuda_capturing:
        lo, hi = host_minmax(a) if a.size else (0, -1)  # one host transfer on CUDA
        if lo < 0:
            raise RuntimeError("one_hot: Class values must be non-negative.")
        if num_classes == -1:
            num_classes = hi + 1
        elif hi >= num_classes:
            raise RuntimeError("one_hot: Class values must be smaller than num_classes.")
    xp = _xp(tensor)
    return Tensor._make((a[..., None] == xp.arange(num_classes)).astype(np.int64))


def normalize(input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """``input / max(||input||_p, eps)`` along ``dim``."""
    return input / input.norm(p, dim, keepdim=True).clamp_min(eps).expand_as(input)


def pairwise_distance(x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6,
                      keepdim: bool = False) -> Tensor:
    """``||x1 - x2 + eps||_p`` over the last dim."""
    return (x1 - x2 + eps).norm(p, -1, keepdim=keepdim)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of the angle between x1 and x2 along ``dim``."""
    n1 = x1.norm(2, dim).clamp_min(eps)
    n2 = x2.norm(2, dim).clamp_min(eps)
    return (x1 * x2).sum(dim) / (n1 * n2)


# ---- 1-D pooling, channel dropout, PReLU ---------------------------------------------------------
def _one(v):
    return v[0] if isinstance(v, (tuple, list)) else v


def max_pool1d(input: Tensor, kernel_size, stride=None, padding=0, dilation=1,
               ceil_mode: bool = False, return_indices: bool = False):
    """1-D max pooling over (N, C, L) or (C, L), as a 2-D one of height 1."""
    stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and
                                               not stride) else stride
    out = max_pool2d(input.unsqueeze(-2), (1, _one(kernel_size)), (1, _one(stride)),
                     (0, _one(padding)), (1, _one(dilation)), ceil_mode, return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(input: Tensor, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    """1-D average pooling over (N, C, L) or (C, L)."""
    stride = kernel_size if stride is None or (isinstance(stride, (tuple, list)) and
                                               not stride) else stride
    return avg_pool2d(input.unsqueeze(-2), (1, _one(kernel_size)), (1, _one(stride)),
                      (0, _one(padding)), ceil_mode, count_include_pad).squeeze(-2)


def adaptive_avg_pool1d(input: Tensor, output_size) -> Tensor:
    """Average over torch's adaptive windows along the last dim: ``x @ P^T``."""
    _check_tensor("adaptive_avg_pool1d", input)
    n = input.shape[-1]
    return matmul(input, _adaptive_matrix(n, int(_one(output_size)), input).t())


def _channel_dropout(op, input, p, training, inplace, batched_ndim):
    if p < 0.0 or p > 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if input.ndim not in (batched_ndim - 1, batched_ndim):
        raise RuntimeError(f"{op}: Expected {batched_ndim - 1}D or {batched_ndim}D input, but "
                           f"received a {input.ndim}D input")
    lead = input.ndim - (batched_ndim - 2)  # (N, C) or (C,)
    shape = tuple(input.shape[:lead]) + (1,) * (input.ndim - lead)
    if p == 1.0:
        keep = _xp(input).zeros(shape, dtype=input._data.dtype)
    else:
        u = _random.uniform(input.device, shape, input.dtype)
        keep = (u >= p).astype(input._data.dtype) * (1.0 / (1.0 - p))
    mask = Tensor._make(keep.astype(input._data.dtype, copy=False))
    return input.mul_(mask) if inplace else input * mask


def dropout1d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) with probability ``p``."""
    return _channel_dropout("dropout1d", input, p, training, inplace, 3)


def dropout2d(input: Tensor, p: float = 0.5, training: bool = True,
              inplace: bool = False) -> Tensor:
    """Zero whole channels of (N, C, H, W) or (C, H, W) with probability ``p``."""
    return _channel_dropout("dropout2d", input, p, training, inplace, 4)


def prelu(input: Tensor, weight: Tensor) -> Tensor:
    """``x`` where positive, ``weight * x`` elsewhere; weight has 1 or C (dim 1) entries."""
    if weight.numel() != 1 and input.ndim >= 2:
        weight = weight.reshape((1, -1) + (1,) * (input.ndim - 2))
    return where(input > 0, input, input * weight)


_ = (math, where)  # re-exported helpers used by the modules
