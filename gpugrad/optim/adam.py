"""``Adam``: adaptive moment estimation (with AMSGrad, L2 or decoupled weight decay and
maximize), as ``torch.optim.Adam``; one fused kernel per parameter. With ``capturable=True``
the step count lives on the parameter's device and the kernel computes the bias corrections
from it, so that the update can be captured into a CUDA graph and replayed exactly."""
from __future__ import annotations

import math

from . import _fused
from .optimizer import Optimizer, _device_step, _step_tensor, check_float

__all__ = ["Adam"]


def _log(beta: float) -> float:
    """log(beta) in double for the capturable kernels (beta = 0: -inf, so beta**t = 0)."""
    return math.log(beta) if beta > 0 else -math.inf


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``: ``m`` and ``v`` are running averages of the gradient
    and of its square; ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) +
    eps)``. ``weight_decay`` adds ``wd * p`` to the gradient (L2), or, with
    ``decoupled_weight_decay=True`` (AdamW), shrinks ``p`` by ``1 - lr * wd`` first.

    ``capturable`` (torch's argument, default False): False keeps the step count ``t`` a
    float32 tensor on the CPU and computes the bias corrections on the host in double, as
    torch does (exactly torch's trajectory; but a CUDA graph would freeze them, so ``step``
    raises when captured). True keeps ``t`` a float32 0-d tensor on the parameter's device,
    increments it there and lets the fused kernel compute the bias corrections from it
    (``adam_capturable_step``: no host read of ``t``, exact under ``gpugrad.compile``); the
    result equals the default's to a few ulps of the parameter's dtype. The learning rate and
    betas remain Python numbers, constants of a capture.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, foreach=None,
                 maximize: bool = False, capturable: bool = False,
                 differentiable: bool = False, fused=None,
                 decoupled_weight_decay: bool = False) -> None:
        check_float("learning rate", lr)
        check_float("epsilon value", eps)
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        check_float("weight_decay value", weight_decay)
        if differentiable:
            raise NotImplementedError(f"{type(self).__name__}(differentiable=True) is not "
                                      f"supported by gpugrad")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach,
                        capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _update(self, group, p, g):
        state = self.state[p]
        capturable = group["capturable"]
        if not state:
            state["step"] = _step_tensor(device=p.device if capturable else None)
            state["exp_avg"] = self._zeros_like(p)
            state["exp_avg_sq"] = self._zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = self._zeros_like(p)
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        decay, l2 = (1 - lr * wd, 0) if group["decoupled_weight_decay"] and wd != 0 else (1, wd)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if capturable:
            return self._update_capturable(group, p, g, state, lr, beta1, beta2, decay, l2)
        step_t = state["step"]
        step_t._data += 1
        step = float(step_t._data)
        # Host arithmetic in double, as torch's single-tensor Adam does it in Python.
        step_size = lr / (1 - beta1 ** step)
        bc2_sqrt = (1 - beta2 ** step) ** 0.5
        scalars = (lr, 1 - beta1, beta2, 1 - beta2, group["eps"], l2, decay, step_size,
                   bc2_sqrt, float(group["maximize"]))
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            _fused.launch("adam_amsgrad_step",
                          (p._data, g, m._data, v._data, vmax._data) + scalars,
                          (p._data, m._data, v._data, vmax._data))
            return (m, v, vmax, step_t)
        _fused.launch("adam_step", (p._data, g, m._data, v._data) + scalars,
                      (p._data, m._data, v._data))
        return (m, v, step_t)

    def _update_capturable(self, group, p, g, state, lr, beta1, beta2, decay, l2):
        """capturable=True: the count is incremented on the device (one tiny launch: the
        fused kernel cannot do it, as its threads all read the count while one would write
        it) and read there by the fused kernel."""
        step_t = state["step"]
        if step_t._data.__class__ is not p._data.__class__ or \
                step_t._data.dtype.name != "float32":
            # a count made before capturable was switched on (or on another device): moved
            # to the parameter's device, once (a device-side copy, not a host read)
            step_t = state["step"] = _device_step(step_t, p.device)
        count = step_t._data
        count += 1
        m, v = state["exp_avg"], state["exp_avg_sq"]
        scalars = (lr, 1 - beta1, beta2, 1 - beta2, group["eps"], l2, decay, _log(beta1),
                   _log(beta2), float(group["maximize"]))
        if group["amsgrad"]:
            vmax = state["max_exp_avg_sq"]
            _fused.launch_at_step("adam_amsgrad_capturable_step",
                                  (p._data, g, m._data, v._data, vmax._data), count, scalars,
                                  (p._data, m._data, v._data, vmax._data))
            return (m, v, vmax, step_t)
        _fused.launch_at_step("adam_capturable_step", (p._data, g, m._data, v._data), count,
                              scalars, (p._data, m._data, v._data))
        return (m, v, step_t)
