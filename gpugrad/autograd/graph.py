"""Graph nodes: the ``grad_fn`` objects the tape is made of.

A node knows the nodes that produced its inputs (``next_functions``, as ``(node, output_nr)``
pairs), a sequence number giving its creation order, and hooks. Two kinds exist:
``BackwardNode`` (the ctx of a Function application, in ``function.py``) and
``AccumulateGrad`` (the sink of a leaf tensor, which adds the gradient into ``.grad``).
"""
from __future__ import annotations

import itertools
from collections import OrderedDict

__all__ = ["Node", "AccumulateGrad", "RemovableHandle"]

# Creation order of nodes; next() on a count is atomic under the GIL.
_sequence = itertools.count()


class RemovableHandle:
    """Returned by ``register_hook``-style calls; ``handle.remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_key")
    _ids = itertools.count()

    def __init__(self, hooks: OrderedDict) -> None:
        self._hooks = hooks
        self._key = next(RemovableHandle._ids)

    def remove(self) -> None:
        """Unregister the hook (a second call does nothing)."""
        self._hooks.pop(self._key, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def add_hook(hooks: OrderedDict | None, fn) -> tuple[OrderedDict, RemovableHandle]:
    """Append ``fn`` to an ordered hook table (made on first use); return table and handle."""
    if not callable(fn):
        raise TypeError(f"hook must be callable, got {type(fn).__name__}")
    if hooks is None:
        hooks = OrderedDict()
    handle = RemovableHandle(hooks)
    hooks[handle._key] = fn
    return hooks, handle


class Node:
    """Base of every graph node (``grad_fn``)."""

    __slots__ = ("__dict__", "__weakref__")

    # Class-level defaults keep node creation (one per op, recorded or not) cheap: a
    # Function's ctx is made without __init__ and gets its edges and number when recorded.
    next_functions: tuple = ()
    _seq = 0
    _builtin = False  # True for the nodes of built-in ops (see the engine's "owned" flag)
    _input_meta = ()  # per input edge: (shape, dtype, device), for the engine's checks
    # ``_lean(node, g)``: the array-level backward of a one-output node (see
    # Function._backward_arrays), or None: the engine then calls ``_apply`` with tensors.
    _lean = None
    # Rarely set:
    _pre_hooks = None
    _post_hooks = None
    _tensor_hooks = None  # {output_nr: OrderedDict} from Tensor.register_hook
    _retain = None  # {output_nr: weakref to a tensor} from Tensor.retain_grad
    _metadata = None

    def __init__(self) -> None:
        self.next_functions: tuple = ()
        self._seq = next(_sequence)

    def name(self) -> str:
        """The node's type name, e.g. ``'MulBackward0'``."""
        return type(self).__name__

    @property
    def metadata(self) -> dict:
        """A dict for the user's own annotations (as in torch)."""
        if self._metadata is None:
            self._metadata = {}
        return self._metadata

    def register_hook(self, fn):
        """``fn(grad_inputs, grad_outputs)`` runs after the node; it may return new grad_inputs."""
        self._post_hooks, handle = add_hook(self._post_hooks, fn)
        return handle

    def register_prehook(self, fn):
        """``fn(grad_outputs)`` runs before the node; it may return new grad_outputs."""
        self._pre_hooks, handle = add_hook(self._pre_hooks, fn)
        return handle

    def _register_tensor_hook(self, output_nr: int, fn):
        if self._tensor_hooks is None:
            self._tensor_hooks = {}
        table, handle = add_hook(self._tensor_hooks.get(output_nr), fn)
        self._tensor_hooks[output_nr] = table
        return handle

    def _num_outputs(self) -> int:
        raise NotImplementedError

    def _apply(self, grads: list):
        """Run the backward: grads w.r.t. this node's outputs -> grads w.r.t. its inputs."""
        raise NotImplementedError

    def _release(self) -> None:
        """Drop what the backward needed (called after it ran, unless retain_graph)."""

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"


class AccumulateGrad(Node):
    """The node of a leaf tensor that requires grad: adds incoming gradients into ``.grad``."""

    __slots__ = ("variable",)

    def __init__(self, variable) -> None:
        super().__init__()
        self.variable = variable
        # Run as soon as ready, like torch (whose AccumulateGrad has the largest sequence
        # number): it frees the incoming gradient buffer early.
        self._seq = float("inf")

    def _num_outputs(self) -> int:
        return 1

    def _apply(self, grads: list):
        raise AssertionError("AccumulateGrad is run by the engine itself")
