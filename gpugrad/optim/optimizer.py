"""``Optimizer``: the base of every optimizer, with torch's param groups, state and state dicts.

A subclass lists its hyper-parameters in ``defaults`` and implements ``_update(group, p, g)``
(one parameter: one fused kernel of ``kernels/optim.cu``, through ``_fused.launch``). The
base class runs the closure, walks the groups and the parameters that have a gradient, and
bumps the versions of everything a kernel wrote, as torch's in-place updates do.

CUDA graphs (``gpugrad.compile``, ``gpugrad.cuda.graph``): a step count kept on the host is a
constant of a capture, so an optimizer whose update depends on it must keep it on the device
(``capturable=True``, torch's argument; Adam, AdamW, RMSprop). ``step`` raises at capture, as
torch does, when a group that has a ``capturable`` setting has it False
(``_check_capture``).
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from copy import deepcopy
from itertools import chain

import numpy as np

from .. import _backend, _capture
from .._tensor import Tensor
from ..autograd import grad_mode

__all__ = ["Optimizer", "required"]


class _RequiredParameter:
    """Marks a hyper-parameter that has no default (a param group must give it)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _RequiredParameter()


class _RemovableHandle:
    """Returned by the hook registrations: ``remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, table: dict) -> None:
        self._table = table
        self.id = _RemovableHandle._next_id
        _RemovableHandle._next_id += 1

    def remove(self) -> None:
        """Unregister the hook (again: no effect)."""
        self._table.pop(self.id, None)

    def __enter__(self) -> "_RemovableHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _step_tensor(value=0.0, device=None) -> Tensor:
    """A step counter as torch keeps it: a float32 0-d tensor, on the CPU, or on ``device``
    (a capturable optimizer's, on its parameter's device)."""
    a = np.array(float(value), dtype=np.float32)
    if device is not None and device.type != "cpu":
        a = _backend.to_device(a, device)
    return Tensor._make(a)


def _device_step(step: Tensor, device) -> Tensor:
    """A capturable step count on ``device``: ``step`` itself when it is there already, else
    a float32 copy of it there (never a host read of a device count)."""
    a = step._data
    if a.dtype == np.float32 and step.device == device:
        return step
    if _capture.cuda_capturing:  # the copy would be recorded, and redone by every replay
        raise RuntimeError(
            f"a capturable optimizer's step count is on {step.device}, its parameter on "
            f"{device}, while a CUDA graph is being captured: moving it now would reset it "
            f"on every replay. Run one step (or load_state_dict) outside the capture first, "
            f"so that the count is on the parameter's device before capturing.")
    return Tensor._make(_backend.to_device(a, device, copy=True).astype(np.float32, copy=False))


class Optimizer:
    """Base class of all optimizers.

    Args:
        params: an iterable of tensors, or of dicts (param groups: ``{'params': [...],
            'lr': ...}``), whose hyper-parameters override ``defaults``.
        defaults: the default hyper-parameters of every group.
    """

    def __init__(self, params, defaults: dict) -> None:
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError(f"params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}; wrap a single "
                            f"tensor in a list: [tensor]")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ---- groups ----------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters (with hyper-parameters of its own) to optimize, e.g. the
        layers unfrozen while fine-tuning."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor (it has a grad_fn); optimize "
                                 "the leaf it was computed from, or .detach().requires_grad_()")
            if not p.is_floating_point():
                raise ValueError(f"optimizer can only optimize floating point Tensors, got one "
                                 f"of dtype {p.dtype}")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        ids = [id(p) for p in param_group["params"]]
        if len(set(ids)) != len(ids):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in "
                          "future, this will cause an error", UserWarning, stacklevel=3)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if seen & set(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)
        self._init_group_state(param_group)

    def _init_group_state(self, group: dict) -> None:
        """State a subclass creates as soon as a group is added (Adagrad's sums)."""

    # ---- gradients -------------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized tensors: to None (the default, which saves
        memory and lets ``step`` skip them), or to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                g = p._grad
                if g is None:
                    continue
                if set_to_none:
                    p._grad = None
                else:
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g._data[...] = 0
                    g._version.value += 1

    # ---- the update ------------------------------------------------------------------------
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` (optional) re-evaluates the model and
        returns the loss, which ``step`` returns. Runs the step hooks around it."""
        hooks = self.__dict__.get("_step_hooks")
        if hooks:
            args, kwargs = (closure,), {}
            for hook in list(hooks["pre"].values()):
                out = hook(self, args, kwargs)
                if out is not None:
                    args, kwargs = out
            closure = kwargs.get("closure", args[0] if args else None)
        if _capture.cuda_capturing:
            self._check_capture()
        loss = None
        if closure is not None:
            with grad_mode.enable_grad():
                loss = closure()
        with grad_mode.no_grad():
            for group in self.param_groups:
                self._step_group(group)
        if hooks:
            for hook in list(hooks["post"].values()):
                hook(self, args, kwargs)
        return loss

    def register_step_pre_hook(self, hook) -> "_RemovableHandle":
        """Call ``hook(optimizer, args, kwargs)`` before each ``step``; it may return new
        ``(args, kwargs)``. Returns a handle whose ``remove()`` unregisters it."""
        return self._add_step_hook("pre", hook)

    def register_step_post_hook(self, hook) -> "_RemovableHandle":
        """Call ``hook(optimizer, args, kwargs)`` after each ``step``. Returns a handle whose
        ``remove()`` unregisters it."""
        return self._add_step_hook("post", hook)

    def _add_step_hook(self, kind: str, hook) -> "_RemovableHandle":
        hooks = self.__dict__.setdefault("_step_hooks", {"pre": {}, "post": {}})
        handle = _RemovableHandle(hooks[kind])
        hooks[kind][handle.id] = hook
        return handle

    def _step_group(self, group: dict) -> None:
        for p in group["params"]:
            g = p._grad
            if g is None:
                continue
            if g._data.shape != p._data.shape or g.device != p.device:
                raise RuntimeError(f"{type(self).__name__}.step: the gradient of a parameter "
                                   f"of shape {list(p.shape)} on {p.device} has shape "
                                   f"{list(g.shape)} on {g.device}; gradients must match "
                                   f"their parameters")
            written = self._update(group, p, g._data)
            p._version.value += 1
            for t in written:
                t._version.value += 1

    def _check_capture(self) -> None:
        """Called by ``step`` while a CUDA graph is being captured: raise if a replay of the
        step would not redo it exactly. Here: a group with ``capturable`` False (torch's
        check), whose step count lives on the host and so would stay at its capture value."""
        for group in self.param_groups:
            if not group.get("capturable", True):
                name = type(self).__name__
                raise RuntimeError(
                    f"Attempting CUDA graph capture of step() for an instance of {name} but "
                    f"param_groups' capturable is False: its step count lives on the host, so "
                    f"every replay of the graph would reuse the capture's count (and the bias "
                    f"corrections computed from it). Construct it with capturable=True "
                    f"({name}(params, ..., capturable=True)), which keeps the count on the "
                    f"device, or run the step outside the captured function.")

    def _update(self, group: dict, p: Tensor, g) -> tuple:
        """Update parameter ``p`` from its gradient array ``g`` with one fused kernel; return
        the state tensors it wrote."""
        raise NotImplementedError

    # ---- state helpers for subclasses ------------------------------------------------------
    @staticmethod
    def _zeros_like(p: Tensor, fill: float = 0.0) -> Tensor:
        a = p._data
        xp = np if a.__class__ is np.ndarray else _backend.array_module(p.device)
        out = xp.zeros_like(a) if fill == 0 else xp.full_like(a, fill)
        return Tensor._make(out)

    # ---- state dicts -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The optimizer's state as torch lays it out: ``{'state': {index: {...}},
        'param_groups': [{..., 'params': [indices]}]}``, parameters numbered in the order of
        the groups. Tensors are references, not copies (as torch's)."""
        index: dict = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index.setdefault(id(p), len(index))
            packed["params"] = [index[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {(index[id(k)] if isinstance(k, Tensor) else k): v
                 for k, v in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state from ``state_dict()`` (of this optimizer class, for the same
        parameters): hyper-parameters and per-parameter state, the latter copied onto each
        parameter's device and (floating point) dtype. A torch optimizer's ``state_dict()``
        with its tensors converted to gpugrad tensors loads too.

        Unlike torch, a group keeps its own ``capturable`` setting (torch takes the saved
        one): the step counts of a capturable optimizer are put on the parameters' devices
        whatever state they come from, those of a non-capturable one on the CPU."""
        if not isinstance(state_dict, dict) or "state" not in state_dict or \
                "param_groups" not in state_dict:
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected a dict with keys "
                             f"'state' and 'param_groups' (from optimizer.state_dict())")
        groups, saved_groups = self.param_groups, state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)}) than the optimizer ({len(groups)})")
        for i, (g, s) in enumerate(zip(groups, saved_groups)):
            if len(g["params"]) != len(s["params"]):
                raise ValueError(f"loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group: group {i} has "
                                 f"{len(s['params'])} parameters in the state dict, "
                                 f"{len(g['params'])} in the optimizer")
        id_map = dict(zip(chain.from_iterable(s["params"] for s in saved_groups),
                          chain.from_iterable(g["params"] for g in groups)))
        new_groups = []
        capturable = {}  # id(param) -> its group's capturable setting
        for g, s in zip(groups, saved_groups):
            new = {k: deepcopy(v) for k, v in s.items() if k != "params"}
            if isinstance(new.get("betas"), list):  # JSON-like round trips turn tuples to lists
                new["betas"] = tuple(new["betas"])
            # Where this optimizer is capturable (or not), it stays so: capturable says how
            # it runs (a CUDA graph, or not), not where training stands. (torch takes the
            # saved flag, so a capturable optimizer resuming from a non-capturable run's
            # checkpoint would fail its next capture.)
            if "capturable" in g:
                new["capturable"] = g["capturable"]
            new["params"] = g["params"]
            new_groups.append(new)
            for p in g["params"]:
                capturable[id(p)] = bool(new.get("capturable", False))
        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            key = int(k) if isinstance(k, str) and k.isdigit() else k
            if key in id_map:
                p = id_map[key]
                state[p] = {name: self._cast_state(p, name, value, capturable[id(p)])
                            for name, value in v.items()}
            else:
                state[k] = deepcopy(v)
        self.state = state
        self.param_groups = new_groups

    def _cast_state(self, p: Tensor, name: str, value, capturable: bool = False):
        """A state value for parameter ``p``: a copy of a tensor on ``p``'s device (floating
        point ones in ``p``'s dtype); ``step`` stays a float32 CPU tensor, as in torch, or,
        for a ``capturable`` group, a float32 tensor on ``p``'s device (a copy; from a
        tensor on another device, without a host read of a device count)."""
        if name == "step":
            if capturable and isinstance(value, Tensor):
                a = _backend.to_device(value._data, p.device, copy=True)
                return Tensor._make(a.astype(np.float32, copy=False))
            if capturable:
                return _step_tensor(float(value), p.device)
            return _step_tensor(float(value) if not isinstance(value, Tensor) else value.item())
        if isinstance(value, Tensor):
            if value.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: state {name!r} has "
                                 f"shape {list(value.shape)} but its parameter has shape "
                                 f"{list(p.shape)}; is this the state of another model?")
            dtype = p.dtype if value.is_floating_point() else value.dtype
            return value.to(device=p.device, dtype=dtype, copy=True).detach()
        return deepcopy(value)

    def __getstate__(self) -> dict:
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)


def check_float(name: str, value, low: float = 0.0) -> None:
    """torch's constructor check: ``Invalid <name>: <value>`` for values below ``low``."""
    if not (value >= low):
        raise ValueError(f"Invalid {name}: {value}")
