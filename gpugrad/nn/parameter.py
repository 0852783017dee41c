"""``nn.Parameter``: a tensor that a ``Module`` registers as one of its parameters."""
from __future__ import annotations

from .. import _backend
from .._tensor import Tensor, _Version

__all__ = ["Parameter"]


class Parameter(Tensor):
    """A leaf tensor that requires grad by default and that a ``Module`` attribute assignment
    registers as a parameter (``self.weight = nn.Parameter(t)``).

    It shares ``data``'s memory, as torch's does; ops on it return plain tensors.
    """

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from .._factories import empty
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter(): data must be a Tensor, not {type(data).__name__}")
        p = object.__new__(cls)
        p._data = data._data
        p._version = data._version if data._version is not None else _Version()
        p.requires_grad_(bool(requires_grad))
        return p

    def __init__(self, data=None, requires_grad: bool = True) -> None:
        pass  # all done in __new__ (Tensor.__init__ would parse data as a legacy shape)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        # copy.deepcopy(model) and pickle keep parameters Parameters
        return (_rebuild_parameter, (_backend.to_device(self._data, _backend.CPU),
                                     str(self.device), self._requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        p = Parameter(Tensor._make(self._data.copy()), self._requires_grad)
        if self._grad is not None:
            p._grad = Tensor._make(self._grad._data.copy())
        memo[id(self)] = p
        return p


def _rebuild_parameter(array, device, requires_grad):
    data = Tensor._make(_backend.to_device(array, _backend.canonical_device(device)))
    return Parameter(data, requires_grad)
