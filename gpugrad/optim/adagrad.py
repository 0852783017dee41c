"""``Adagrad`` (with learning-rate decay, an initial accumulator, weight decay and maximize),
as ``torch.optim.Adagrad``; one fused kernel per parameter."""
from __future__ import annotations

from . import _fused
from .optimizer import Optimizer, _step_tensor, check_float

__all__ = ["Adagrad"]


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: ``s += g**2``; ``p -= clr * g / (sqrt(s) +
    eps)`` with ``clr = lr / (1 + (t - 1) * lr_decay)``. The sums start at
    ``initial_accumulator_value`` and exist from construction on, as in torch.

    torch's Adagrad has no ``capturable`` argument, and its step count stays on the CPU. In
    a CUDA graph (``gpugrad.compile``) the update is exact with ``lr_decay=0`` (the count,
    bookkeeping only, then keeps its capture value on CUDA); with ``lr_decay != 0`` the
    decayed learning rate would be frozen, so ``step`` raises when captured."""

    def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float = 0,
                 eps: float = 1e-10, foreach=None, *, maximize: bool = False,
                 differentiable: bool = False, fused=None) -> None:
        check_float("learning rate", lr)
        check_float("lr_decay value", lr_decay)
        check_float("weight_decay value", weight_decay)
        check_float("initial_accumulator_value value", initial_accumulator_value)
        check_float("epsilon value", eps)
        if differentiable:
            raise NotImplementedError("Adagrad(differentiable=True) is not supported by gpugrad")
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)

    def _init_group_state(self, group: dict) -> None:
        for p in group["params"]:
            state = self.state[p]
            if not state:
                state["step"] = _step_tensor()
                state["sum"] = self._zeros_like(p, group["initial_accumulator_value"])

    def _check_capture(self) -> None:
        """Raise at a CUDA graph capture if a group decays its learning rate: the decay is
        computed on the host from the step count, and would keep its capture-time value."""
        for group in self.param_groups:
            if group["lr_decay"] != 0:
                raise RuntimeError(
                    f"Attempting CUDA graph capture of step() for an instance of Adagrad with "
                    f"lr_decay={group['lr_decay']}: the decayed learning rate lr / (1 + (t - 1) "
                    f"* lr_decay) is computed on the host from the step count, so every replay "
                    f"of the graph would reuse the capture's value. Use lr_decay=0 in a "
                    f"captured step (Adagrad is then exact), or run the step outside the "
                    f"captured function.")

    def _update(self, group, p, g):
        state = self.state[p]
        step_t, s = state["step"], state["sum"]
        step_t._data += 1
        step = float(step_t._data)
        clr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        _fused.launch("adagrad_step",
                      (p._data, g, s._data, clr, group["eps"], group["weight_decay"],
                       float(group["maximize"])),
                      (p._data, s._data))
        return (s, step_t)
