"""``Adam``: adaptive moment estimation (with AMSGrad, L2 or decoupled weight decay and
maximize), as ``torch.optim.Adam``; one fused kernel per parameter."""
from __future__ import annotations



from . import _fused
from .optimizer import Optimizer, _step_tensor, check_float

__all__ = ["Adam"]


class Adam(Optimizer):
    """Adam, as ``torch.optim.Adam``: ``m`` and ``v`` are running averages of the gradient
    and of its square; ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) +
    eps)``. ``weight_decay`` adds ``wd * p`` to the gradient (L2), or, with
    ``decoupled_weight_decay=True`` (AdamW), shrinks ``p`` by ``1 - lr * wd`` first."""

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
        if not state:
            state["step"] = _step_tensor()
            state["exp_avg"] = self._zeros_like(p)
            state["exp_avg_sq"] = self._zeros_like(p)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = self._zeros_like(p)
        step_t = state["step"]
        step_t._data += 1
        step = float(step_t._data)
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        # Host arithmetic in double, as torch's single-tensor Adam does it in Python.
        decay, l2 = (1 - lr * wd, 0) if group["decoupled_weight_decay"] and wd != 0 else (1, wd)
        step_size = lr / (1 - beta1 ** step)
        bc2_sqrt = (1 - beta2 ** step) ** 0.5
        m, v = state["exp_avg"], state["exp_avg_sq"]
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


