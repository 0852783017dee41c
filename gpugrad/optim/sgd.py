"""``SGD``: stochastic gradient descent, with momentum (heavy-ball or Nesterov), dampening,
weight decay and maximize, as ``torch.optim.SGD``; one fused kernel per parameter."""
from __future__ import annotations

from . import _fused
from .optimizer import Optimizer, check_float

__all__ = ["SGD"]


class SGD(Optimizer):
    """Stochastic gradient descent (optionally with momentum), as ``torch.optim.SGD``.

    With momentum ``mu`` and dampening ``tau``: ``b = mu * b + (1 - tau) * g`` (``b = g`` on
    the first step), then ``p -= lr * (g + mu * b if nesterov else b)``; ``g`` includes
    ``weight_decay * p`` and is negated when ``maximize``.
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False,
                 foreach=None, differentiable: bool = False, fused=None) -> None:
        check_float("learning rate", lr)
        check_float("momentum value", momentum)
        check_float("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        if differentiable:
            raise NotImplementedError("SGD(differentiable=True) is not supported by gpugrad")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
                        foreach=foreach, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def _update(self, group, p, g):
        lr, wd, mx = group["lr"], group["weight_decay"], float(group["maximize"])
        momentum = group["momentum"]
        if momentum == 0:
            _fused.launch("sgd_step", (p._data, g, lr, wd, mx), (p._data,))
            return ()
        state = self.state[p]
        buf = state.get("momentum_buffer")
        first = buf is None
        if first:
            buf = state["momentum_buffer"] = self._zeros_like(p)
        _fused.launch("sgd_momentum_step",
                      (p._data, g, buf._data, lr, wd, momentum, 1 - group["dampening"],
                       float(group["nesterov"]), mx, float(first)),
                      (p._data, buf._data))
        return (buf,)
