"""Loss functions under torch.nn.functional's names, built from differentiable ops (so every
loss has gradients of gradients), each numerically stable: cross entropy goes through
``log_softmax`` (log-sum-exp), the logit BCE through ``log1p(exp(-|x|))``."""
from __future__ import annotations

from .. import _capture
from .._tensor import Tensor
from ..ops import log_softmax, where
from ..ops._compat import host_minmax
from ..ops._util import xp_of

__all__ = ["mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "cross_entropy", "nll_loss",
           "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]

_REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average, reduce, reduction):
    """torch's deprecated size_average/reduce flags mapped to a reduction string."""
    if size_average is None and reduce is None:
        return reduction
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _reduce(loss: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{op}: {reduction} is not a valid value for reduction (expected one of "
                     f"{', '.join(_REDUCTIONS)})")


def _check_pair(op, input, target, same_shape=True):
    for name, t in (("input", input), ("target", target)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}(): argument '{name}' must be a Tensor, not {type(t).__name__}")
    if same_shape and input.shape != target.shape:
        import warnings
        warnings.warn(f"{op}: Using a target size ({target.shape}) that is different to the "
                      f"input size ({input.shape}). This will likely lead to incorrect results "
                      "due to broadcasting. Please ensure they have the same size.",
                      UserWarning, stacklevel=3)


def mse_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
             reduction: str = "mean") -> Tensor:
    """Mean squared error ``(input - target)**2``."""
    _check_pair("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, _legacy_reduction(size_average, reduce, reduction), "mse_loss")


def l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
            reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``."""
    _check_pair("l1_loss", input, target)
    return _reduce((input - target).abs(), _legacy_reduction(size_average, reduce, reduction),
                   "l1_loss")


def smooth_l1_loss(input: Tensor, target: Tensor, size_average=None, reduce=None,
                   reduction: str = "mean", beta: float = 1.0) -> Tensor:
    """``0.5 d**2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``."""
    _check_pair("smooth_l1_loss", input, target)
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")
    d = (input - target).abs()
    if beta == 0:
        loss = d
    else:
        loss = where(d < beta, d * d * (0.5 / beta), d - 0.5 * beta)
    return _reduce(loss, _legacy_reduction(size_average, reduce, reduction), "smooth_l1_loss")


def huber_loss(input: Tensor, target: Tensor, reduction: str = "mean",
               delta: float = 1.0) -> Tensor:
    """``0.5 d**2`` where ``|d| <= delta``, else ``delta * (|d| - 0.5 delta)``."""
    _check_pair("huber_loss", input, target)
    if delta <= 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")
    d = (input - target).abs()
    loss = where(d <= delta, 0.5 * d * d, delta * (d - 0.5 * delta))
    return _reduce(loss, reduction, "huber_loss")


# ---- classification ---------------------------------------------------------------------------
def _class_shape(weight: Tensor, ndim: int) -> Tensor:
    """A per-class weight (C,) shaped to broadcast against (N, C, d1, ...)."""
    return weight.reshape((1, -1) + (1,) * (ndim - 2))


def nll_loss(input: Tensor, target: Tensor, weight: Tensor | None = None, size_average=None,
             ignore_index: int = -100, reduce=None, reduction: str = "mean") -> Tensor:
    """Negative log likelihood of log-probabilities ``input`` (N, C, d1, ...) or (C,) at the
    class indices ``target`` (N, d1, ...) or (). ``mean`` divides by the summed weights of
    the targets that are not ``ignore_index``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_pair("nll_loss", input, target, same_shape=False)
    if target._data.dtype.kind not in "iu":
        raise RuntimeError(f"nll_loss: expected target of an integer dtype (class indices), got "
                           f"{target.dtype}; for class probabilities use cross_entropy")
    if input.ndim == 1:
        if target.ndim != 0:
            raise ValueError(f"nll_loss: expected a 0-D target for a 1-D input, got "
                             f"{list(target.shape)}")
        out = nll_loss(input.unsqueeze(0), target.reshape(1), weight, None, ignore_index, None,
                       reduction)
        return out.squeeze(0) if reduction == "none" else out
    n, c = input.shape[:2]
    if target.shape[0] != n or tuple(target.shape[1:]) != tuple(input.shape[2:]):
        raise ValueError(f"nll_loss: Expected input batch_size ({n}) to match target batch_size "
                         f"({target.shape[0]}); input {list(input.shape)} needs a target of "
                         f"shape {[n] + list(input.shape[2:])}, got {list(target.shape)}")
    t = target._data
    ignored = t == ignore_index
    if not _capture.cuda_capturing:  # (a capture cannot read the targets on the host: see
        valid = t[~ignored]          # ops/indexing.py, _out_of_bounds)
        lo, hi = host_minmax(valid) if valid.size else (0, -1)  # one host transfer on CUDA
        if lo < 0 or hi >= c:
            raise IndexError(f"nll_loss: Target {hi if hi >= c else lo} is out of bounds for "
                             f"{c} classes")
    safe = xp_of(t).where(ignored, 0, t)  # no boolean-mask write: no data-dependent shape
    picked = input.gather(1, Tensor._make(safe[:, None])).squeeze(1)  # (N, d1, ...)
    w = (~ignored).astype(input._data.dtype)
    if weight is not None:
        w = w * weight._data.astype(input._data.dtype)[safe]
    wt = Tensor._make(w)
    loss = -picked * wt
    if reduction == "mean":
        return loss.sum() / wt.sum()
    return _reduce(loss, reduction, "nll_loss")


def cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                  size_average=None, ignore_index: int = -100, reduce=None,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy of logits ``input`` (N, C, d1, ...) or (C,) against class indices or
    class probabilities (a float ``target`` of the input's shape), through a stable
    ``log_softmax``; ``label_smoothing`` mixes in the uniform distribution as torch does."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_pair("cross_entropy", input, target, same_shape=False)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0. Got: "
                         f"{label_smoothing}")
    class_dim = 0 if input.ndim == 1 else 1
    c = input.shape[class_dim]
    logp = log_softmax(input, class_dim)
    if target.is_floating_point():  # class probabilities
        if target.shape != input.shape:
            raise RuntimeError(f"cross_entropy: a target of class probabilities must have the "
                               f"input's shape {list(input.shape)}, got {list(target.shape)}")
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / c
        prod = logp * target
        if weight is not None:
            prod = prod * (weight if input.ndim == 1 else _class_shape(weight, input.ndim))
        if reduction == "mean":
            return -prod.sum() / (input.numel() // c if input.numel() else 1)
        if reduction == "sum":
            return -prod.sum()
        return _reduce(-prod.sum(class_dim), reduction, "cross_entropy")
    nll = nll_loss(logp, target, weight, None, ignore_index, None, reduction)
    if label_smoothing <= 0:
        return nll
    # torch: (1 - ls) * nll + ls/C * smooth, smooth = -sum_c w_c logp_c (0 where ignored)
    if weight is not None:
        smooth = -(logp * (weight if input.ndim == 1 else _class_shape(weight, input.ndim))) \
            .sum(class_dim)
    else:
        smooth = -logp.sum(class_dim)
    ignored = target._data == ignore_index
    keep = Tensor._make((~ignored).astype(logp._data.dtype))
    smooth = smooth * keep
    if reduction == "mean":
        # the denominator stays on the device (float() of it would be a sync on CUDA)
        dt = logp._data.dtype
        if weight is not None:
            t = target._data.copy()
            t[ignored] = 0
            denom = (weight._data[t].astype(dt) * (~ignored)).sum(dtype=dt)
        else:
            denom = (~ignored).sum(dtype=dt)
        smooth = smooth.sum() / Tensor._make(xp_of(target._data).asarray(denom))
    elif reduction == "sum":
        smooth = smooth.sum()
    return nll * (1 - label_smoothing) + smooth * (label_smoothing / c)


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Tensor | None = None,
                         size_average=None, reduce=None, reduction: str = "mean") -> Tensor:
    """``-(t log p + (1 - t) log(1 - p))`` of probabilities ``input``; the logs are clamped
    at -100 as in torch."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_pair("binary_cross_entropy", input, target, same_shape=False)
    if input.shape != target.shape:
        raise ValueError(f"Using a target size ({target.shape}) that is different to the input "
                         f"size ({input.shape}) is deprecated. Please ensure they have the same "
                         "size.")
    a = input._data
    # one reduction and one host transfer (min and max would be two on CUDA); NaN passes
    if a.size and bool(((a < 0) | (a > 1)).any()):
        raise RuntimeError("all elements of input should be between 0 and 1")
    loss = -(target * input.log().clamp_min(-100) + (1 - target) * (1 - input).log()
             .clamp_min(-100))
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Tensor | None = None, size_average=None,
                                     reduce=None, reduction: str = "mean",
                                     pos_weight: Tensor | None = None) -> Tensor:
    """BCE of ``sigmoid(input)``, computed from the logits without overflow:
    ``(1 - t) x + (1 + (pw - 1) t) (log1p(exp(-|x|)) + max(-x, 0))``."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_pair("binary_cross_entropy_with_logits", input, target, same_shape=False)
    if input.shape != target.shape:
        raise ValueError(f"Target size ({target.shape}) must be the same as input size "
                         f"({input.shape})")
    log_sig_neg = (-input.abs()).exp().log1p() + (-input).clamp_min(0)  # -log(sigmoid(x))
    if pos_weight is not None:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * log_sig_neg
    else:
        loss = (1 - target) * input + log_sig_neg
    if weight is not None:
        loss = loss * weight
    return _reduce(loss, reduction, "binary_cross_entropy_with_logits")


def kl_div(input: Tensor, target: Tensor, size_average=None, reduce=None,
           reduction: str = "mean", log_target: bool = False) -> Tensor:
    """Kullback-Leibler divergence with ``input`` as log-probabilities: ``t (log t - input)``
    (0 where t == 0), or ``exp(t) (t - input)`` with ``log_target``. ``batchmean`` divides the
    sum by the batch size (what the maths means; ``mean`` averages every element)."""
    reduction = _legacy_reduction(size_average, reduce, reduction)
    _check_pair("kl_div", input, target, same_shape=False)
    if log_target:
        loss = target.exp() * (target - input)
    else:
        # xlogy(t, t): t log t with 0 log 0 = 0 (inner where keeps log's gradient finite)
        pos = target > 0
        tlogt = where(pos, target * where(pos, target, 1.0).log(), 0.0)
        loss = tlogt - target * input
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return _reduce(loss, reduction, "kl_div")
