"""Automatic differentiation: ``backward``, ``grad``, ``Function``, grad modes.

``gpugrad.autograd`` mirrors ``torch.autograd``: the engine (the tape) lives in
``engine.py``, graph nodes in ``graph.py``, ``Function`` in ``function.py``.
"""
from __future__ import annotations

import numpy as _np

from . import graph  # noqa: F401
from . import forward_ad  # noqa: F401  (forward-mode AD: dual_level, make_dual, ...)
from .function import Function, FunctionCtx, InplaceError, once_differentiable  # noqa: F401
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled,  # noqa: F401
                        is_inference_mode_enabled, no_grad, set_grad_enabled)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from .anomaly_mode import detect_anomaly, is_anomaly_enabled, set_detect_anomaly  # noqa: F401

__all__ = ["backward", "grad", "Function", "FunctionCtx", "once_differentiable", "Variable",
           "no_grad", "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled",
           "graph", "gradcheck", "gradgradcheck", "GradcheckError", "functional", "forward_ad",
           "detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled"]


def __getattr__(name):
    # ``autograd.functional`` is loaded on first use: it needs the factories, which are not
    # importable yet while gpugrad/_tensor.py (which imports this package) is loading.
    if name == "functional":
        import importlib
        return importlib.import_module(".functional", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _as_tuple(x):
    if x is None:
        return None
    from .._tensor import Tensor
    if isinstance(x, Tensor):
        return (x,)
    return tuple(x)


def _make_grads(outputs, grad_outputs, op):
    """Seed gradients for the roots: given ones are checked, missing ones are 1 for scalars."""
    from .._tensor import Tensor
    grads, owned = [], []
    for i, (out, g) in enumerate(zip(outputs, grad_outputs)):
        if g is None:
            if out.requires_grad and out.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs ({op}: output {i} "
                    f"has shape {list(out.shape)}). Pass a gradient of that shape, e.g. "
                    f"{op}(gradient=gpugrad.ones_like(out)), or reduce the output first "
                    "(out.sum().backward()).")
            if out.requires_grad and not out.dtype.is_floating_point:
                raise RuntimeError(f"grad can be implicitly created only for real scalar "
                                   f"outputs but got {out.dtype}")
            a = out._data
            if a.__class__ is _np.ndarray:  # (the factory's device and dtype handling, skipped)
                grads.append(Tensor._make(_np.ones(a.shape, a.dtype)))
            else:
                grads.append(out.new_ones(out.shape))
            owned.append(True)
        else:
            if not isinstance(g, Tensor):
                raise TypeError(f"{op}: gradient {i} must be a Tensor or None, got "
                                f"{type(g).__name__}")
            if g.shape != out.shape:
                if g.numel() == out.numel() == 1:
                    g = g.reshape(out.shape)
                else:
                    raise RuntimeError(
                        f"{op}: mismatch in shape: grad_output[{i}] has a shape of "
                        f"{list(g.shape)} and output[{i}] has a shape of {list(out.shape)}.")
            if g.device != out.device:
                raise RuntimeError(f"{op}: gradient {i} is on {g.device} but the output is on "
                                   f"{out.device}; move it with .to({str(out.device)!r})")
            if g.dtype is not out.dtype:
                if not g.dtype.is_floating_point:
                    raise RuntimeError(f"{op}: gradient {i} has dtype {g.dtype}; expected a "
                                       f"floating dtype like the output's {out.dtype}")
                g = g.to(out.dtype)
            grads.append(g)
            owned.append(False)
    return grads, owned


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False,
             grad_variables=None, inputs=None) -> None:
    """Accumulate into the leaves' ``.grad`` the gradient of ``tensors`` (weighted by
    ``grad_tensors``). With ``inputs``, only those tensors accumulate."""
    from .engine import run_backward
    tensors = _as_tuple(tensors)
    if grad_tensors is None:
        grad_tensors = grad_variables
    grads = _as_tuple(grad_tensors) if grad_tensors is not None else (None,) * len(tensors)
    if len(grads) != len(tensors):
        raise RuntimeError(f"backward: got {len(grads)} gradients for {len(tensors)} tensors")
    if retain_graph is None:
        retain_graph = create_graph
    if inputs is not None:
        inputs = _as_tuple(inputs)
        if not inputs:
            raise RuntimeError("backward: 'inputs' argument to backward() cannot be empty.")
    elif len(tensors) == 1 and grads[0] is None and not create_graph:
        # A pending fused loss (gpugrad._lazy, inside gpugrad.compile) may compute its value
        # and its leaves' gradients in one kernel, without the engine; it says whether it did.
        fast = getattr(type(tensors[0]), "_fast_backward", None)
        if fast is not None and fast(tensors[0], bool(retain_graph)):
            return
    seeds, owned = _make_grads(tensors, grads, "backward")
    run_backward(tensors, seeds, owned, retain_graph, create_graph, inputs=inputs,
                 allow_unused=True, accumulate=True)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """The gradients of ``outputs`` w.r.t. ``inputs``, returned (not accumulated into
    ``.grad``). ``create_graph=True`` records them, for higher-order derivatives."""
    from .engine import run_backward
    if is_grads_batched:
        raise NotImplementedError("grad(is_grads_batched=True) is not supported yet")
    if materialize_grads and allow_unused is False:
        raise ValueError("Expected allow_unused to be True or not passed when "
                         "materialize_grads=True, but got: allow_unused=False.")
    allow_unused = bool(allow_unused) or materialize_grads
    outputs = _as_tuple(outputs)
    inputs = _as_tuple(inputs)
    grads = _as_tuple(grad_outputs) if grad_outputs is not None else (None,) * len(outputs)
    if len(grads) != len(outputs):
        raise RuntimeError(f"grad: got {len(grads)} grad_outputs for {len(outputs)} outputs")
    if retain_graph is None:
        retain_graph = create_graph
    seeds, owned = _make_grads(outputs, grads, "grad")
    return run_backward(outputs, seeds, owned, retain_graph, create_graph, inputs=inputs,
                        allow_unused=allow_unused, accumulate=False,
                        materialize_grads=materialize_grads)


class _VariableMeta(type):
    def __instancecheck__(cls, obj):
        from .._tensor import Tensor
        return isinstance(obj, Tensor)


class Variable(metaclass=_VariableMeta):
    """Deprecated torch alias kept for old code: ``Variable(t, requires_grad=True)`` returns a
    tensor over the same data that requires grad; ``isinstance(t, Variable)`` is True."""

    def __new__(cls, data=None, requires_grad: bool = False, volatile: bool = False):
        from .._tensor import Tensor
        if data is None:
            from .._factories import empty
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(data).__name__}")
        t = data.detach()
        if requires_grad:
            t.requires_grad_(True)
        return t
