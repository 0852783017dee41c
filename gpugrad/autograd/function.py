"""``Function``: the one mechanism for everything differentiable, built-in ops included.

``MyOp.apply(*args)`` runs ``MyOp.forward(ctx, *args)`` with recording off; when grad mode is
on and a tensor input requires grad, the ctx becomes the outputs' ``grad_fn`` node, linked to
the inputs' nodes. In the reverse pass the engine calls ``MyOp.backward(ctx, *grads)``, with
grad mode set to ``create_graph``: a backward written with tensor operations is itself
recorded, which is how gradients of gradients work. Inside a dual level (forward_ad.py),
``apply`` also runs ``MyOp.jvp(ctx, *tangents)`` to give the outputs their tangents.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

from .._cuda_errors import error_types as _cuda_error_types
from .._cuda_errors import translate as _cuda_error
from . import grad_mode
from .._backend import CPU as _CPU
from .._backend import device_of_array as _device_of
from .._dtypes import from_numpy_dtype as _from_numpy_dtype
from .graph import Node, _sequence

__all__ = ["Function", "FunctionCtx", "BackwardNode", "once_differentiable", "InplaceError"]

_state = grad_mode.state
_FREED = ("Trying to backward through the graph a second time (or directly access saved "
          "tensors after they have already been freed). Saved intermediate values of the graph "
          "are freed when you call .backward() or autograd.grad(). Specify retain_graph=True if "
          "you need to backward through the graph a second time or if you need to access saved "
          "tensors after calling backward.")


class InplaceError(RuntimeError):
    """A tensor needed for gradient computation was modified by an in-place operation."""


class _Saved:
    """One tensor saved for backward, with the version it had when saved.

    An output of the node's own Function is stored without its ``grad_fn`` (which is the
    node itself): storing the tensor would make a reference cycle that keeps memory alive
    until the garbage collector runs. It is rebuilt, linked to the node, on unpacking.
    """

    __slots__ = ("tensor", "data", "version_counter", "version", "output_nr", "requires_grad")

    def __init__(self, t, output_nr: int | None) -> None:
        v = self.version_counter = t._version
        self.version = v.value
        self.output_nr = output_nr
        if output_nr is None:
            self.tensor = t
            self.data = None
        else:
            self.tensor = None
            self.data = t._data
            self.requires_grad = t._requires_grad

    def unpack(self, node):
        if self.output_nr is None and self.version_counter.value == self.version:
            return self.tensor  # the common case first: an input, unchanged
        if self.version_counter.value != self.version:
            t = self.tensor
            shape = list(t.shape) if t is not None else list(self.data.shape)
            dtype = t.dtype.name if t is not None else str(self.data.dtype)
            which = (f"output {self.output_nr} of {node.name()}" if self.output_nr is not None
                     else ("a leaf tensor" if t.grad_fn is None else
                           f"output {t._output_nr} of {t.grad_fn.name()}"))
            raise InplaceError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{dtype} {shape}], which is {which}, is at version "
                f"{self.version_counter.value}; expected version {self.version} instead. Hint: "
                "do not modify it in place (use an out-of-place op, or .clone() it before "
                f"modifying), or call its in-place op before it is used by {node.name()}.")
        if self.output_nr is None:
            return self.tensor
        t = _Tensor._make(self.data)
        t._version = self.version_counter
        if self.requires_grad:
            t.grad_fn, t._output_nr, t._requires_grad = node, self.output_nr, True
        if node._fw_out_tangents is not None:  # the output had a tangent: keep it
            _restore_tangent(t, node._fw_out_tangents, self.output_nr)
        return t


class BackwardNode(Node):
    """The graph node of one Function application; it is also the ``ctx`` of forward/backward.

    Each Function subclass gets its own BackwardNode subclass named ``<Function>Backward``
    (built-in ops: ``<Op>Backward0``, as torch names them).
    """

    # No __slots__ restriction beyond the base: users store their own attributes on ctx.
    # Defaults live on the class: an op's ctx is made on every call, recorded or not.
    _function: type = None
    needs_input_grad: tuple = ()
    materialize_grads = True
    _to_save = None
    _saved = None
    _released = False
    _non_differentiable = None
    _dirty = None
    _input_meta = ()   # per tensor input: (shape, dtype, device) for grad checks
    _output_meta = ()  # per output: (shape, dtype, device) for materialized zeros
    _arg_positions = ()  # positions of tensor arguments among forward's args
    _n_args = 0
    # Forward-mode AD (see forward_ad.py): tensors given to save_for_forward, whether jvp is
    # running (saved_tensors then returns them), and (level, {output_nr: tangent}) so that
    # outputs saved for backward unpack with their tangent (forward-over-reverse).
    _to_save_fw = None
    _in_jvp = False
    _fw_out_tangents = None

    def __init__(self) -> None:
        self._seq = next(_sequence)

    # ---- the ctx API -------------------------------------------------------------------
    def save_for_backward(self, *tensors) -> None:
        """Save tensors (or None) for ``backward``; read them back with ``saved_tensors``."""
        self._to_save = tensors

    def save_for_forward(self, *tensors) -> None:
        """Save tensors (or None) for ``jvp``, which reads them back with ``saved_tensors``."""
        self._to_save_fw = tensors

    @property
    def saved_tensors(self) -> tuple:
        """The tensors given to ``save_for_backward`` (in ``jvp``: to ``save_for_forward``);
        checked against in-place changes."""
        saved = self._saved
        if saved is not None and not self._in_jvp:  # the backward of a recorded node
            if len(saved) == 2:  # the commonest (binary ops, unary ones): no comprehension
                a, b = saved
                return (a if a is None else a.unpack(self), b if b is None else b.unpack(self))
            return tuple([s if s is None else s.unpack(self) for s in saved])
        if self._in_jvp and self._to_save_fw is not None:
            return tuple(self._to_save_fw)
        if self._released:
            raise RuntimeError(f"{_FREED} (in {self.name()})")
        if saved is None:  # forward without recording: the tensors as given
            return tuple(self._to_save or ())
        return tuple([s if s is None else s.unpack(self) for s in saved])

    def mark_non_differentiable(self, *tensors) -> None:
        """Declare outputs that have no gradient (e.g. indices); they never require grad."""
        self._non_differentiable = {id(t) for t in tensors}

    def mark_dirty(self, *tensors) -> None:
        """Declare inputs that forward modified in place (they must be returned as outputs)."""
        self._dirty = {id(t) for t in tensors}

    def set_materialize_grads(self, value: bool) -> None:
        """If False, ``backward`` receives None (not zeros) for outputs without gradient."""
        self.materialize_grads = bool(value)

    # ---- engine interface ----------------------------------------------------------------
    def _num_outputs(self) -> int:
        return len(self._output_meta)

    def _apply(self, grads: list):
        if _fw_enabled and not _state.enabled:
            # A dual level is active but this backward is not recorded: the engine then sums
            # gradients on raw arrays, which would drop part of their tangents. Computing none
            # (rather than wrong ones) is the safe choice; create_graph=True gives them.
            return _without_forward_ad(self._apply, grads)
        if self.materialize_grads:
            i = 0
            for g in grads:
                if g is None and self._output_meta[i] is not None:  # None: not a tensor
                    grads[i] = _zeros(self._output_meta[i])
                i += 1
        out = self._function.backward(self, *grads)
        if out.__class__ is not tuple:
            out = tuple(out) if isinstance(out, tuple) else (out,)
        positions = self._arg_positions
        n_args = self._n_args
        if len(out) == n_args and len(positions) == n_args:  # every argument a tensor
            return out
        if len(out) != n_args:
            if len(out) > n_args and all(g is None for g in out[n_args:]):
                out = out[:n_args]
            else:
                raise RuntimeError(
                    f"function {self.name()} returned an incorrect number of gradients "
                    f"(expected {n_args}, got {len(out)})")
        if len(positions) == 1:  # (no comprehension: each costs a frame on Python 3.11)
            return [out[positions[0]]]
        if len(positions) == 2:
            return [out[positions[0]], out[positions[1]]]
        return [out[p] for p in positions]

    def _release(self) -> None:
        if self._saved is not None:
            self._saved = None
            self._released = True

    def __repr__(self) -> str:
        return f"<{self.name()} object at {id(self):#x}>"


FunctionCtx = BackwardNode


def _zeros(meta):
    """Zeros for an output without a gradient, from its ``_output_meta`` entry: (shape,
    array dtype, device or None for a NumPy array)."""
    from .._tensor import _zeros_like_meta
    shape, np_dtype, device = meta
    return _zeros_like_meta((shape, _from_numpy_dtype(np_dtype),
                             _CPU if device is None else device))


class _FunctionMeta(type):
    """Gives each Function subclass its BackwardNode subclass (its ``grad_fn`` type)."""

    def __init__(cls, name, bases, namespace):
        super().__init__(name, bases, namespace)
        suffix = "Backward0" if namespace.get("_builtin", getattr(cls, "_builtin", False)) \
            else "Backward"
        node_name = namespace.get("_node_name") or f"{name}{suffix}"
        cls._backward_cls = type(node_name, (BackwardNode,), {
            "_function": cls, "__module__": cls.__module__, "_builtin": cls._builtin,
            "_lean": _inherited(cls, "_backward_arrays")})
        if "_fast" not in namespace and _inherited(cls, "_fast") is None:
            cls._fast = None


def _inherited(cls, name):
    """The built-in shortcut ``name`` (``_fast``, ``_backward_arrays``) that ``cls`` defines or
    inherits, as stored (a staticmethod); None when a class on the way redefines ``forward``
    or ``backward`` (a subclass's own forward must run, and its own backward)."""
    for klass in cls.__mro__:
        own = vars(klass)
        if name in own:
            return own[name]
        if "forward" in own or "backward" in own:
            return None
    return None


class Function(metaclass=_FunctionMeta):
    """Base class of differentiable operations, with torch's API::

        class Exp(Function):
            @staticmethod
            def forward(ctx, x):
                y = x.exp()
                ctx.save_for_backward(y)
                return y

            @staticmethod
            def backward(ctx, grad):
                y, = ctx.saved_tensors
                return grad * y

        y = Exp.apply(x)
    """

    _builtin = False
    #: Built-in ops may set this to ``staticmethod(fn)``: ``fn(*args)`` is the whole op for
    #: its common case, checked first: it computes the result from the arrays and, when grad
    #: mode is on and an argument requires grad, records the node (``_record_one``,
    #: ``_record_binary``); or it returns None to take the general path. Outputs and nodes
    #: must be those of the general path. Not called under anomaly mode or forward AD.
    _fast = None
    #: Built-in ops with one output may set this to ``staticmethod(fn)`` in their class body:
    #: ``fn(ctx, g)`` is backward on arrays for a pass that records nothing (no
    #: create_graph): ``g`` is the output's gradient array, the result a sequence of arrays
    #: (or None) with one gradient per tensor argument (``ctx.next_functions``), or None to
    #: let the engine call ``backward`` with tensors (unusual cases, and its errors). The
    #: gradients must be those ``backward`` gives, bit for bit; an array the engine may write
    #: into must be fresh (not ``g`` itself, not a view).
    _backward_arrays = None

    def __init__(self, *args, **kwargs) -> None:
        if type(self).forward is not Function.forward and not isinstance(
                type(self).__dict__.get("forward"), staticmethod):
            # torch dropped "legacy" Functions (instance forward, called as MyFn()(x)).
            raise RuntimeError(
                f"{type(self).__name__}: legacy autograd function with non-static forward method "
                "is not supported. Define forward(ctx, ...) and backward(ctx, ...) as "
                "@staticmethods and call the function as "
                f"{type(self).__name__}.apply(...) (see gpugrad.autograd.Function).")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"{type(self).__name__}: Function instances are not callable; "
            f"use {type(self).__name__}.apply(...)")

    @staticmethod
    def forward(ctx, *args, **kwargs):
        """Compute the outputs from the inputs (grad mode is off inside)."""
        raise NotImplementedError("You must implement the forward function for custom "
                                  "autograd.Function.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        """Given gradients w.r.t. the outputs, return one gradient (or None) per input."""
        raise NotImplementedError("You must implement either the backward or vjp method for "
                                  "your custom autograd.Function to use it with backward mode AD.")

    vjp = backward

    @staticmethod
    def jvp(ctx, *grad_inputs):
        """Given one tangent per input (None for non-tensors), return one per output (forward
        mode AD, see ``gpugrad.autograd.forward_ad``). ``forward`` keeps what it needs with
        ``ctx.save_for_forward``."""
        raise NotImplementedError("You must implement the jvp function for custom "
                                  "autograd.Function to use it with forward mode AD.")

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run the function on ``args``, recording it in the graph when grad is needed."""
        # The hot path of every op: one global read for forward AD, one pass over the
        # arguments, no per-call work for features not in use. Keep it flat.
        if _fw_enabled:  # a dual level is active: forward_ad may have tangents to push
            return _dual_apply(cls, args, kwargs)
        if cls._fast is not None and not kwargs and _record is _plain_record:
            # A built-in op's common case, computed (and recorded) in one routine
            try:
                out = cls._fast(*args)
            except _cuda_error_types() as e:
                raise _cuda_error(e, cls) from e
            if out is not None:
                return out
        if kwargs:  # as in torch: arguments given by name take their forward() position
            args, kwargs = _bind_kwargs(cls, args, kwargs)
        Tensor = _Tensor
        positions = []
        record = False
        host = True  # every tensor argument holds a NumPy array (no device check needed)
        enabled = _state.enabled
        i = 0
        for a in args:
            if isinstance(a, Tensor):
                positions.append(i)
                if a._data.__class__ is not _ndarray:
                    host = False
                if enabled:
                    if a._base is not None:  # a view: its history may be stale (ops/_views)
                        _refresh_view(a)
                    if a._requires_grad:
                        record = True
            i += 1
        if not host and len(positions) > 1:
            _check_same_device(cls, args, positions)
        ctx = _new(cls._backward_cls)  # its sequence number is given when it is recorded
        if record:
            if i == 1:  # a unary op (its one argument requires grad)
                ctx.needs_input_grad = _ONE_GRAD
            else:  # no comprehension: each costs a frame on Python 3.11
                needs = [False] * i
                for p in positions:
                    if args[p]._requires_grad:
                        needs[p] = True
                ctx.needs_input_grad = tuple(needs)
        else:
            ctx.needs_input_grad = _NO_GRAD[i] if i < 8 else (False,) * i

        _state.enabled = False
        try:
            outputs = cls.forward(ctx, *args, **kwargs)
        except _cuda_error_types() as e:  # evaluated only when forward raised: free otherwise
            raise _cuda_error(e, cls) from e
        finally:
            _state.enabled = enabled

        if not record:
            if ctx._dirty:  # tested here, so that apply pays no call without an in-place op
                _bump_dirty(ctx, outputs)
            return outputs
        return _record(ctx, args, positions, outputs)


_new = object.__new__
_ndarray = np.ndarray

_NO_GRAD = [(False,) * n for n in range(8)]
_ONE_GRAD = (True,)


def _bump_dirty(ctx, outputs) -> None:
    """An unrecorded in-place op: bump the version of each output ``mark_dirty`` named (a
    recorded one does it in ``_record``)."""
    for t in (outputs if isinstance(outputs, tuple) else (outputs,)):
        if isinstance(t, _Tensor) and id(t) in ctx._dirty:
            t._version.value += 1

# Forward-mode AD hooks, set by forward_ad.py: the flag is True only while a dual level is
# active (and off while a forward or jvp runs inside it), so apply() pays one global read.
_fw_enabled = False
_dual_apply = None
_restore_tangent = None


def _without_forward_ad(fn, *args):
    """Run ``fn(*args)`` with forward-mode AD paused (no tangents are computed)."""
    global _fw_enabled
    prev, _fw_enabled = _fw_enabled, False
    try:
        return fn(*args)
    finally:
        _fw_enabled = prev


def _apply_with_tangents(cls, args, kwargs, has_tangent):
    """``apply`` for inputs some of which carry tangents (``has_tangent[i]``); returns
    ``(ctx, outputs)``. It mirrors ``apply``, except that ``needs_input_grad`` is also True
    for inputs with a tangent, so that forward saves what ``jvp`` (or a built-in jvp reusing
    ``backward``) needs. Kept apart so that apply's hot path stays as it is."""
    positions = [i for i, a in enumerate(args) if isinstance(a, _Tensor)]
    if len(positions) > 1:
        _check_same_device(cls, args, positions)
    record = False
    if _state.enabled:
        for i in positions:
            a = args[i]
            if a._base is not None:
                _refresh_view(a)
            if a._requires_grad:
                record = True
    ctx = cls._backward_cls()
    ctx.needs_input_grad = tuple(
        has_tangent[i] or (record and i in positions and args[i]._requires_grad)
        for i in range(len(args)))
    prev = _state.enabled
    _state.enabled = False
    try:
        outputs = cls.forward(ctx, *args, **kwargs)
    except _cuda_error_types() as e:
        raise _cuda_error(e, cls) from e
    finally:
        _state.enabled = prev
    if not record:
        if ctx._dirty:
            _bump_dirty(ctx, outputs)
        return ctx, outputs
    return ctx, _record(ctx, args, positions, outputs)


def _bind_kwargs(cls, args, kwargs):
    """Move keyword arguments of ``forward`` to their positions, so that a tensor passed by
    name is recorded (and gets its gradient) like a positional one."""
    args, kwargs = list(args), dict(kwargs)
    params = list(inspect.signature(cls.forward).parameters.values())[1 + len(args):]
    for p in params:
        if not kwargs or p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            break
        if p.name not in kwargs:
            raise TypeError(f"{cls.__name__}.forward() missing required argument: "
                            f"{p.name!r} (position {len(args)})")
        args.append(kwargs.pop(p.name))
    return tuple(args), kwargs
_Tensor = None  # set by _tensor.py (which imports this module) to avoid a per-call import
_check_same_device = None
_edge_of = None
_refresh_view = None


def _link_inputs(ctx, args, positions) -> None:
    """Number ``ctx`` and link it to its tensor arguments (``args[p]`` for ``p`` in
    ``positions``): one edge to each one's node, and each one's (shape, dtype, device) for
    the engine's gradient checks."""
    # Numbered here, after forward and any view refresh: later than every input's node.
    ctx._seq = next(_sequence)
    ctx._arg_positions = positions
    ctx._n_args = len(args)
    edges = []
    in_meta = []
    for p in positions:
        t = args[p]
        fn = t.grad_fn
        if fn is not None:
            edges.append((fn, t._output_nr))
        elif t._requires_grad:
            edges.append((t._grad_accumulator(), 0))
        else:
            edges.append(_NO_EDGE)
        d = t._data
        in_meta.append((d.shape, d.dtype, None if d.__class__ is _ndarray else _device_of(d)))
    ctx.next_functions = tuple(edges)
    ctx._input_meta = in_meta


def _record(ctx, args, positions, outputs):
    """Link ``ctx`` into the graph: edges to the inputs, grad_fn on the outputs."""
    Tensor = _Tensor
    _link_inputs(ctx, args, positions)

    if not isinstance(outputs, tuple):  # the common case: one fresh output tensor
        out = outputs
        if out.__class__ is Tensor and ctx._dirty is None and ctx._non_differentiable is None:
            for p in positions:
                if args[p] is out:
                    break
            else:
                d = out._data
                if d.dtype.kind == "f":
                    out.grad_fn, out._output_nr, out._requires_grad = ctx, 0, True
                else:
                    out.grad_fn, out._requires_grad = None, False
                ctx._output_meta = ((d.shape, d.dtype, None if d.__class__ is _ndarray
                                     else _device_of(d)),)
                if ctx._to_save is not None:
                    _save(ctx, (out,), (out,))
                return out
        single = True
        outs = (outputs,)
    else:
        single = False
        outs = outputs
    dirty = ctx._dirty or ()
    nondiff = ctx._non_differentiable or ()
    input_ids = {id(args[p]) for p in positions}
    result = []
    meta = []
    for nr, out in enumerate(outs):
        if not isinstance(out, Tensor):
            result.append(out)
            meta.append(None)
            continue
        if id(out) in dirty:
            if out.grad_fn is None and out.requires_grad:
                raise RuntimeError(
                    f"{ctx.name()}: a leaf Variable that requires grad is being used in an "
                    "in-place operation. Wrap the update in `with gpugrad.no_grad():` or apply "
                    "it to a clone.")
            out._version.value += 1
        elif id(out) in input_ids:
            # Returned an input unchanged: hand back an alias, so that setting grad_fn on
            # the output does not rewrite the input's history.
            out = out._alias()
        differentiable = id(outs[nr]) not in nondiff and out.dtype.is_floating_point
        if differentiable:
            out.grad_fn, out._output_nr, out._requires_grad = ctx, nr, True
        else:
            out.grad_fn, out._requires_grad = None, False
        result.append(out)
        d = out._data
        meta.append((d.shape, d.dtype, None if d.__class__ is _ndarray else _device_of(d)))
    ctx._output_meta = meta

    if ctx._to_save is not None:
        _save(ctx, outs, result)
    return result[0] if single else tuple(result)


def _record_one(cls, x, out, saved_x: bool, saved_y: bool, saves: bool = True,
                n_args: int = 1):
    """``_record`` for the commonest node: a built-in op of one tensor argument ``x`` (which
    requires grad, grad mode on; then ``n_args - 1`` arguments that are not tensors) and one
    fresh floating output ``out``, saving ``x`` and/or ``out`` (``saves=False``: an op whose
    forward saves nothing, or sets ``out.grad_fn._saved`` itself); the same node as the
    general path, built in a few steps. Returns ``out``."""
    ctx = _new(cls._backward_cls)
    ctx._seq = next(_sequence)
    ctx.needs_input_grad = _FIRST_GRAD[n_args]
    ctx._arg_positions = _POSITION_0
    ctx._n_args = n_args
    fn = x.grad_fn
    ctx.next_functions = ((fn, x._output_nr),) if fn is not None else \
        ((x._grad_accumulator(), 0),)
    a = x._data
    device = None if a.__class__ is _ndarray else _device_of(a)
    ctx._input_meta = ((a.shape, a.dtype, device),)
    d = out._data
    ctx._output_meta = ((d.shape, d.dtype, device),)
    out.grad_fn = ctx
    out._requires_grad = True
    if saves:
        ctx._saved = [_Saved(x, None) if saved_x else None,
                      _Saved(out, 0) if saved_y else None]
    return out


_FIRST_GRAD = [(True,) + (False,) * (n - 1) if n else () for n in range(8)]
_POSITION_0 = (0,)
_POSITIONS = {(True, True): (0, 1), (True, False): (0,), (False, True): (1,)}


def _edge(t):
    """The edge from a node to tensor ``t``'s node: its grad_fn, its leaf accumulator when it
    requires grad, or none."""
    fn = t.grad_fn
    if fn is not None:
        return fn, t._output_nr
    if t._requires_grad:
        return t._grad_accumulator(), 0
    return _NO_EDGE


def _record_binary(cls, a, b, ta: bool, tb: bool, out, n_args: int):
    """``_record`` for a built-in op of two arguments ``a`` and ``b`` (tensors where ``ta`` /
    ``tb``, else numbers; one requires grad, grad mode on, no stale view among them) and
    maybe more that are not tensors (``n_args`` in all), with one fresh floating output
    ``out`` on the arguments' device; returns the ctx, for the op's own attributes and
    saved tensors. The same node as the general path, built in a few steps."""
    ctx = _new(cls._backward_cls)
    ctx._seq = next(_sequence)
    ctx._n_args = n_args
    d = out._data
    device = None if d.__class__ is _ndarray else _device_of(d)
    ra = ta and a._requires_grad
    rb = tb and b._requires_grad
    ctx.needs_input_grad = _NEEDS[ra, rb, n_args]
    ctx._arg_positions = _POSITIONS[ta, tb]
    if ta and tb:
        x, y = a._data, b._data
        ctx.next_functions = (_edge(a), _edge(b))
        ctx._input_meta = ((x.shape, x.dtype, device), (y.shape, y.dtype, device))
    else:
        t = a if ta else b
        x = t._data
        ctx.next_functions = (_edge(t),)
        ctx._input_meta = ((x.shape, x.dtype, device),)
    ctx._output_meta = ((d.shape, d.dtype, device),)
    out.grad_fn = ctx
    out._requires_grad = True
    return ctx


_NEEDS = {(ra, rb, n): (ra, rb) + (False,) * (n - 2)
          for ra in (True, False) for rb in (True, False) for n in (2, 3)}


def _saved_arrays(ctx):
    """The arrays of ``ctx``'s saved tensors (None in empty slots), for a backward on arrays
    (``Function._backward_arrays``); None when the general path must run instead: the saved
    tensors were freed or modified in place (``saved_tensors`` raises the error), or a slot
    holds something else (a checkpoint's placeholder)."""
    saved = ctx._saved
    if saved is None:
        return None
    out = []
    for e in saved:
        if e is None:
            out.append(None)
        elif e.__class__ is not _Saved or e.version_counter.value != e.version:
            return None
        else:
            out.append(e.data if e.tensor is None else e.tensor._data)
    return out


def _save(ctx, outs, result) -> None:
    """Turn what ``save_for_backward`` got into ``_Saved`` entries (outputs without their
    grad_fn, see ``_Saved``)."""
    Tensor = _Tensor
    saved = []
    single = len(outs) == 1
    for t in ctx._to_save:
        if t is None:
            saved.append(None)
        elif single and t is outs[0]:  # the common case: the op's one output
            saved.append(_Saved(result[0], 0))
        elif not isinstance(t, Tensor):
            raise TypeError(f"{ctx.name()}: save_for_backward can only save tensors or "
                            f"None, got {type(t).__name__}")
        else:
            nr = 0
            for o in outs:
                if o is t:
                    saved.append(_Saved(result[nr], nr))
                    break
                nr += 1
            else:
                saved.append(_Saved(t, None))
    ctx._saved = saved
    ctx._to_save = None


_NO_EDGE = (None, 0)
_plain_record = _record  # anomaly mode swaps _record for a wrapper: fast paths then step aside


def once_differentiable(fn):
    """Decorate a ``backward`` that is not itself differentiable: it runs with grad mode off,
    and asking for a higher-order gradient through it raises a clear error."""

    @functools.wraps(fn)
    def wrapper(ctx, *grads):
        from .._tensor import Tensor
        with grad_mode.no_grad():
            out = fn(ctx, *grads)
        if not _state.enabled or not any(isinstance(g, Tensor) and g.requires_grad
                                         for g in grads):
            return out
        # create_graph=True: results depend on grads, but this backward was not recorded.
        outs = out if isinstance(out, tuple) else (out,)
        wrapped = tuple(_OnceDifferentiableError.apply(o, *grads) if isinstance(o, Tensor)
                        else o for o in outs)
        return wrapped if isinstance(out, tuple) else wrapped[0]

    return wrapper


class _OnceDifferentiableError(Function):
    """Carries a once_differentiable result; differentiating through it is an error."""

    _node_name = "DelayedError"

    @staticmethod
    def forward(ctx, value, *grads):
        ctx.fn_name = "a once_differentiable backward"
        return value._alias()

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError("trying to differentiate twice a function that was marked with "
                           "@once_differentiable")

    @staticmethod
    def jvp(ctx, *tangents):  # forward-over-reverse reached the gradient: differentiating it
        raise RuntimeError("trying to differentiate twice a function that was marked with "
                           "@once_differentiable (a forward-mode tangent reached its gradient)")
