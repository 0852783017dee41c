"""``RMSprop`` (with momentum, centering, weight decay and maximize), as
``torch.optim.RMSprop``; one fused kernel per parameter. ``capturable=True`` keeps the step
count on the parameter's device (the update does not use it; it is state, as in torch)."""
from __future__ import annotations

from . import _fused
from .optimizer import Optimizer, _device_step, _step_tensor, check_float

__all__ = ["RMSprop"]


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``: ``sq = alpha * sq + (1 - alpha) * g**2``;
    ``p -= lr * g / (sqrt(sq) + eps)``. ``centered`` divides by the estimated standard
    deviation ``sqrt(sq - mean(g)**2)`` instead; ``momentum`` keeps a buffer
    ``b = momentum * b + g / avg`` and steps by ``lr * b``.

    ``capturable`` (torch's argument, default False): True keeps the step count a float32
    0-d tensor on the parameter's device, incremented there, so that it keeps counting under
    CUDA graph replays; with False it is a CPU tensor, and ``step`` raises when captured into
    a CUDA graph (as torch's), since replays would not count."""

    def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False,
                 capturable: bool = False, foreach=None, maximize: bool = False,
                 differentiable: bool = False) -> None:
        check_float("learning rate", lr)
        check_float("epsilon value", eps)
        check_float("momentum value", momentum)
        check_float("weight_decay value", weight_decay)
        check_float("alpha value", alpha)
        if differentiable:
            raise NotImplementedError("RMSprop(differentiable=True) is not supported by gpugrad")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable)
        super().__init__(params, defaults)

    def _update(self, group, p, g):
        state = self.state[p]
        momentum, centered = group["momentum"], group["centered"]
        capturable = group["capturable"]
        if not state:
            state["step"] = _step_tensor(device=p.device if capturable else None)
            state["square_avg"] = self._zeros_like(p)
            if momentum > 0:
                state["momentum_buffer"] = self._zeros_like(p)
            if centered:
                state["grad_avg"] = self._zeros_like(p)
        step_t = state["step"]
        if capturable and step_t._data.__class__ is not p._data.__class__:
            step_t = state["step"] = _device_step(step_t, p.device)
        step_t._data += 1  # capturable: on the device (one tiny launch)
        alpha = group["alpha"]
        scalars = (group["lr"], alpha, 1 - alpha, group["eps"], group["weight_decay"],
                   float(group["maximize"]))
        sq = state["square_avg"]
        arrays, written = [p._data, g, sq._data], [sq]
        if centered:
            written.append(state["grad_avg"])
        if momentum > 0:
            written.append(state["momentum_buffer"])
            scalars += (momentum,)
        arrays += [t._data for t in written[1:]]
        name = "rmsprop" + ("_centered" if centered else "") + \
            ("_momentum" if momentum > 0 else "") + "_step"
        _fused.launch(name, tuple(arrays) + scalars,
                      (p._data,) + tuple(t._data for t in written))
        return tuple(written) + (step_t,)
