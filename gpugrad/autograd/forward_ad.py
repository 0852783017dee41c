"""Forward-mode AD with dual tensors, as ``torch.autograd.forward_ad``::

    import gpugrad.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        x = fwAD.make_dual(primal, tangent)      # x carries a tangent v
        y = f(x)                                 # every op pushes it: y's tangent is J v
        jvp = fwAD.unpack_dual(y).tangent

Inside a dual level, ``Function.apply`` sees which inputs carry a tangent; if any does, it
runs the op (with ``needs_input_grad`` also set for those inputs) and then the Function's
``jvp(ctx, *tangents)``, whose results become the outputs' tangents. Built-in ops define
``jvp`` next to ``backward``; custom Functions may (``ctx.save_for_forward`` keeps what it
needs). Tangents are computed with gpugrad ops under the current grad mode, so they are
themselves differentiable: reverse-over-forward (``grad`` of a tangent) and forward-over-
reverse (a tangent of a ``grad(..., create_graph=True)``) both give Hessian-vector products.

As in torch, dual levels do not nest (one level at a time), and leaving the level forgets
every tangent made in it. Costs: one extra evaluation of each op's derivative per forward
op (about the work of the forward again), no stored graph; see docs/autograd.md.
"""
from __future__ import annotations

import functools
import weakref
from collections import namedtuple

from . import function as _fn
from . import grad_mode

__all__ = ["dual_level", "enter_dual_level", "exit_dual_level", "make_dual", "unpack_dual",
           "UnpackedDualTensor"]

_state = grad_mode.state


class _Level:
    """One dual level: its index and weak references to the tensors given a tangent in it
    (cleared when the level exits)."""

    __slots__ = ("index", "refs", "compact_at", "__weakref__")

    def __init__(self, index: int) -> None:
        self.index = index
        self.refs = []
        self.compact_at = 1024  # drop dead references past this many (amortized O(1))


_current: _Level | None = None  # the active level (torch allows one at a time)


def _level_index() -> int:
    return -1 if _current is None else _current.index


def enter_dual_level() -> int:
    """Open a new dual level and return its index; tangents made in it live until
    ``exit_dual_level``. Prefer ``with dual_level():``."""
    global _current
    if _current is not None:
        raise RuntimeError("Nested forward mode AD is not supported at the moment: a dual level "
                           f"({_current.index}) is already active. Exit it first "
                           "(leave its `with dual_level():` block).")
    _current = _Level(0)
    _fn._fw_enabled = True
    return _current.index


def exit_dual_level(*, level: int | None = None) -> None:
    """Close the dual level ``level`` (the current one by default); every tangent made in it
    is forgotten."""
    global _current
    if level is None:
        level = _level_index()
    if _current is None or level != _current.index:
        raise RuntimeError("Trying to exit a forward AD level that was not the last one that was "
                           f"created (level {level}, current {_level_index()}). This is not "
                           "supported.")
    lvl, _current = _current, None
    _fn._fw_enabled = False
    for ref in lvl.refs:
        t = ref()
        if t is not None and t.__dict__.get("_fw", (None,))[0] is lvl:
            del t.__dict__["_fw"]
    lvl.refs.clear()


class dual_level:
    """Context manager (or decorator) for one dual level: ``with dual_level(): ...``; entering
    returns the level's index. Levels do not nest, as in torch."""

    def __enter__(self) -> int:
        return enter_dual_level()

    def __exit__(self, *exc) -> None:
        exit_dual_level()

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with dual_level():
                return fn(*args, **kwargs)
        return wrapper


UnpackedDualTensor = namedtuple("UnpackedDualTensor", ["primal", "tangent"])
UnpackedDualTensor.__doc__ = "``unpack_dual``'s result: the primal and its tangent (or None)."


def _check_level(level, op: str) -> _Level:
    if _current is None:
        raise RuntimeError(f"{op}: Trying to create a dual Tensor for forward AD but no level "
                           "exists, make sure to enter_dual_level() first (or use `with "
                           "gpugrad.autograd.forward_ad.dual_level():`).")
    if level is not None and level != _current.index:
        raise RuntimeError(f"{op}: level {level} is not the current dual level "
                           f"({_current.index}); only the current level can be used.")
    return _current


def make_dual(tensor, tangent, *, level: int | None = None):
    """A view of ``tensor`` that carries ``tangent`` (same shape, dtype and device) at the
    current dual level. Gradients of the result flow back to ``tensor``, as in torch."""
    Tensor = _fn._Tensor
    lvl = _check_level(level, "make_dual")
    if not isinstance(tensor, Tensor) or not isinstance(tangent, Tensor):
        raise TypeError(f"make_dual: expected two tensors, got {type(tensor).__name__} and "
                        f"{type(tangent).__name__}")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"make_dual: Expected primal to be floating point, but got "
                         f"{tensor.dtype}. Convert it first, e.g. x.double().")
    if not tangent.dtype.is_floating_point:
        raise ValueError(f"make_dual: Expected tangent to be floating point, but got "
                         f"{tangent.dtype}.")
    if tangent.shape != tensor.shape:
        raise RuntimeError(
            "make_dual: Trying to set a forward gradient that has a different size than that of "
            f"the original Tensor, this is not supported. Tensor is of size {list(tensor.shape)} "
            f"while the given forward gradient is of size {list(tangent.shape)}.")
    if tangent.dtype != tensor.dtype:
        raise RuntimeError(f"make_dual: the tangent's dtype {tangent.dtype} differs from the "
                           f"primal's {tensor.dtype}; convert it with .to({tensor.dtype}).")
    if tangent.device != tensor.device:
        raise RuntimeError(f"make_dual: the tangent is on {tangent.device} but the primal is on "
                           f"{tensor.device}; move it with .to({str(tensor.device)!r}).")
    dual = _fn._without_forward_ad(tensor.view_as, tensor)
    _set_tangent(dual, tangent, lvl)
    return dual


def unpack_dual(tensor, *, level: int | None = None) -> UnpackedDualTensor:
    """``(primal, tangent)`` of ``tensor`` at the current dual level: the primal is a view
    without the tangent (still differentiable in reverse mode); the tangent is None for a
    tensor that carries none (or outside any level)."""
    if _current is None or (level is not None and level != _current.index):
        return UnpackedDualTensor(tensor, None)
    t = tangent_of(tensor)
    if t is None:
        return UnpackedDualTensor(tensor, None)
    return UnpackedDualTensor(_fn._without_forward_ad(tensor.view_as, tensor), t)


# ---- tangent storage: a tensor's ``_fw`` is (level, tangent) ---------------------------------
def tangent_of(t):
    """The tangent ``t`` carries at the current level, or None (internal; ops use it)."""
    fw = t.__dict__.get("_fw")
    if fw is None or fw[0] is not _current or _current is None:
        return None
    return fw[1]


def _set_tangent(t, tangent, lvl) -> None:
    if tangent is None:
        t.__dict__.pop("_fw", None)
        return
    if "_fw" not in t.__dict__:
        lvl.refs.append(weakref.ref(t))
        if len(lvl.refs) >= lvl.compact_at:  # a long loop in one level: forget dead tensors
            lvl.refs = [r for r in lvl.refs if r() is not None]
            lvl.compact_at = 2 * len(lvl.refs) + 1024
    t.__dict__["_fw"] = (lvl, tangent)


def _restore_tangent(t, stored, output_nr: int) -> None:
    """Give an output saved for backward its tangent back (forward-over-reverse)."""
    lvl, tangents = stored
    if lvl is _current and output_nr in tangents:
        _set_tangent(t, tangents[output_nr], lvl)


# ---- Function.apply inside a dual level --------------------------------------------------------
def _dual_apply(cls, args, kwargs):
    """``cls.apply(*args)`` when a dual level is active: also push the inputs' tangents
    through ``cls.jvp``."""
    Tensor = _fn._Tensor
    if kwargs:
        args, kwargs = _fn._bind_kwargs(cls, args, kwargs)
    tangents = [tangent_of(a) if isinstance(a, Tensor) else None for a in args]
    lvl = _current
    _fn._fw_enabled = False  # the op's own forward and jvp compute no tangents
    try:
        if all(t is None for t in tangents):
            return cls.apply(*args, **kwargs)
        ctx, result = _fn._apply_with_tangents(cls, args, kwargs,
                                               [t is not None for t in tangents])
        outs = result if isinstance(result, tuple) else (result,)
        out_tangents = _run_jvp(cls, ctx, args, kwargs, tangents, outs)
        _attach(ctx, outs, out_tangents, lvl)
        return result
    finally:
        _fn._fw_enabled = _current is not None


def _run_jvp(cls, ctx, args, kwargs, tangents, outs):
    if cls.jvp is _fn.Function.jvp:
        if cls._builtin:
            raise RuntimeError(
                f"Trying to use forward AD with {ctx.name()} that does not support it because "
                "it has not been implemented yet. Compute this part in reverse mode (outside "
                "the dual level), or give the op a jvp rule.")
        raise NotImplementedError(
            f"{cls.__name__}: You must implement the jvp function for custom autograd.Function "
            "to use it with forward mode AD (a tangent reached it). Define "
            "`@staticmethod def jvp(ctx, *tangents)` returning one tangent per output; save "
            "what it needs in forward with ctx.save_for_forward(...).")
    if not cls._builtin and ctx.materialize_grads:  # as torch: zeros for inputs without one
        Tensor = _fn._Tensor
        tangents = [t if t is not None or not isinstance(a, Tensor) or
                    not a.dtype.is_floating_point else _zeros_like(a)
                    for a, t in zip(args, tangents)]
    ctx._fw_args, ctx._fw_kwargs, ctx._fw_outputs = args, kwargs, outs
    ctx._in_jvp = True
    try:
        return cls.jvp(ctx, *tangents)
    finally:
        ctx._in_jvp = False
        del ctx._fw_args, ctx._fw_kwargs, ctx._fw_outputs


def _attach(ctx, outs, out_tangents, lvl) -> None:
    """Check the tangents ``jvp`` returned and set them on the differentiable outputs."""
    Tensor = _fn._Tensor
    if not isinstance(out_tangents, tuple):
        out_tangents = (out_tangents,)
    if len(out_tangents) != len(outs):
        raise RuntimeError(f"function {ctx.name()}: jvp returned an incorrect number of tangents "
                           f"(expected {len(outs)}, got {len(out_tangents)})")
    nondiff = ctx._non_differentiable or ()
    stored = {}
    for nr, (o, t) in enumerate(zip(outs, out_tangents)):
        if t is None or not isinstance(o, Tensor) or o._data.dtype.kind != "f" \
                or id(o) in nondiff:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"function {ctx.name()}: jvp returned a {type(t).__name__} as "
                            f"tangent of output {nr}; expected a Tensor or None")
        if t._data.shape != o._data.shape:
            try:
                t = _fn._without_forward_ad(t.expand, o.shape)
            except RuntimeError:
                raise RuntimeError(
                    f"function {ctx.name()}: jvp returned a tangent of shape {list(t.shape)} "
                    f"for output {nr} of shape {list(o.shape)}; they must match.") from None
        if t._data.dtype != o._data.dtype:
            t = _fn._without_forward_ad(t.to, o.dtype)
        _set_tangent(o, t, lvl)
        stored[nr] = t
    if stored:
        ctx._fw_out_tangents = (lvl, stored)


def _zeros_like(t):
    from .._tensor import _zeros_like_meta
    return _zeros_like_meta((t._data.shape, t.dtype, t.device))


# ---- in-place ops (called by ops/inplace.apply_inplace) ----------------------------------------
def _writable(t) -> bool:
    a = t._data
    return getattr(a.flags, "writeable", True) and (a.size <= 1 or 0 not in a.strides)


def _after_inplace(t, out) -> None:
    """``t`` was overwritten in place with ``out``'s values; update the tangents as torch does:
    ``t``'s tangent takes out's values *in place*, so that tangents of views of ``t`` (views
    of its tangent) follow; when ``t`` is a view, its base's tangent takes them in the view's
    region (a zero tangent is made for a base without one)."""
    lvl = _current
    tan, old, base = tangent_of(out), tangent_of(t), t._base
    base_tan = tangent_of(base) if base is not None else None
    if tan is None and old is None and base_tan is None:
        return
    if tan is None:
        tan = _zeros_like(t)
    if tan.requires_grad or any(x is not None and x.requires_grad for x in (old, base_tan)):
        # Tangents in a graph (reverse-over-forward) are never written in place.
        if base is not None:
            raise RuntimeError(
                "forward AD: an in-place op on a view of a dual tensor whose tangent requires "
                f"grad is not supported (view of shape {list(t.shape)}). Apply the op to a "
                "clone() of the view, or make the base dual instead.")
        _set_tangent(t, tan, lvl)
        return
    from .._tensor import _replay
    if old is not None and _writable(old) and old.dtype == tan.dtype:
        if old._data is not tan._data:
            _copy(old, tan)
        tan = old
    else:
        _set_tangent(t, tan, lvl)
    if base is None:
        return
    if base_tan is None or not _writable(base_tan):
        base_tan = base_tan.clone() if base_tan is not None else _zeros_like(base)
        _set_tangent(base, base_tan, lvl)
    with grad_mode.no_grad():
        region = _fn._without_forward_ad(_replay, base_tan, t._view_chain)
    if not _shares_memory(region._data, base_tan._data):
        raise RuntimeError("forward AD: an in-place write through a view could not be replayed "
                           "on the base's tangent; clone() the view before writing into it.")
    _copy(region, tan)


def _shares_memory(a, b) -> bool:
    while getattr(a, "base", None) is not None:
        a = a.base
    while getattr(b, "base", None) is not None:
        b = b.base
    return a is b


def _copy(dst, src) -> None:
    """Write ``src``'s values into ``dst``'s memory (tangents outside any graph)."""
    from .. import _backend
    _backend.array_module(dst.device).copyto(dst._data, src._data, casting="unsafe")
    dst._version.value += 1


_fn._dual_apply = _dual_apply
_fn._restore_tangent = _restore_tangent
