"""Activation checkpointing, as ``torch.utils.checkpoint``: trade compute for memory.

``checkpoint(fn, *args)`` runs ``fn`` without keeping its intermediate activations; the
backward pass runs ``fn`` again to get them back. Peak memory drops from "every activation
of the network" to "the checkpointed segments' inputs plus one segment's activations".

Two implementations, chosen by ``use_reentrant`` as in torch:

- ``use_reentrant=False`` (recommended): ``fn`` runs with recording on, so the graph (its
  nodes and edges to the inputs and to captured parameters) is the normal one; what is
  dropped is each new node's saved tensors, replaced by placeholders. The first placeholder
  unpacked in backward reruns ``fn`` (same inputs, same RNG state), and the rerun's saved
  tensors are handed to the original nodes, matched in creation order. ``autograd.grad``,
  ``backward(inputs=...)``, keyword arguments and inputs that do not require grad all work.
- ``use_reentrant=True``: a Function whose forward runs ``fn`` under ``no_grad`` and whose
  backward reruns it with grad and calls ``backward()`` inside the backward pass (hence
  "reentrant"). Gradients of captured parameters are accumulated into their ``.grad``
  during that inner pass; it needs at least one input that requires grad and does not
  support ``autograd.grad`` w.r.t. captured parameters (as torch).

``use_reentrant=None`` warns and means True, as torch 2.x does.
"""
from __future__ import annotations

import warnings
import weakref

from .. import _backend, _random
from .._tensor import Tensor
from ..autograd.function import BackwardNode, Function, InplaceError
from ..autograd.grad_mode import enable_grad, is_grad_enabled, no_grad
from ..autograd.graph import _sequence

__all__ = ["checkpoint", "checkpoint_sequential"]

_NO_REENTRANT_WARNING = (
    "gpugrad.utils.checkpoint: the use_reentrant parameter should be passed explicitly. "
    "In a future version, calling checkpoint without use_reentrant will raise an exception. "
    "use_reentrant=False is recommended, but if you need to preserve the current default "
    "behavior, you can pass use_reentrant=True.")


# ---- RNG state: the rerun must draw the same random numbers (dropout) ----------------------------
class _RngState:
    """The generators' state before ``fn`` runs: exact for the CPU (NumPy bit generator
    state); for the CUDA devices of the inputs (CuPy's RandomState has no state to copy),
    a generator freshly seeded from the current one is installed for the forward and what
    follows it, and the rerun draws from a new one with the same seed."""

    def __init__(self, args) -> None:
        self.cpu = _random._cpu.bit_generator.state
        self.cuda = {}
        for a in args:
            if isinstance(a, Tensor) and a.device.type == "cuda":
                idx = a.device.index
                if idx not in self.cuda:
                    seed = int(_random.generator_for(a.device).randint(0, 2 ** 31 - 1))
                    self.cuda[idx] = seed
                    _random._cuda[idx] = self._fresh_cuda(a.device, seed)

    @staticmethod
    def _fresh_cuda(device, seed):
        cp = _backend.array_module(device)
        with cp.cuda.Device(device.index):
            return cp.random.RandomState(seed)

    def fork(self):
        """Context manager: run with the saved state, then restore the current one."""
        return _RngFork(self)


class _RngFork:
    def __init__(self, state: _RngState) -> None:
        self.state = state

    def __enter__(self) -> None:
        self.prev_cpu_gen = _random._cpu
        self.prev_cpu = _random._cpu.bit_generator.state
        _random._cpu.bit_generator.state = self.state.cpu
        self.prev_cuda = {idx: _random._cuda.get(idx) for idx in self.state.cuda}
        for idx, seed in self.state.cuda.items():
            _random._cuda[idx] = _RngState._fresh_cuda(_backend.device("cuda", idx), seed)

    def __exit__(self, *exc) -> None:
        self.prev_cpu_gen.bit_generator.state = self.prev_cpu
        for idx, gen in self.prev_cuda.items():
            if gen is None:
                _random._cuda.pop(idx, None)
            else:
                _random._cuda[idx] = gen


class _NoFork:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


# ---- non-reentrant: strip saved tensors, recompute on first unpack --------------------------------
def _tensors_in(obj, out):
    """The tensors in a (nested) tuple / list / dict ``obj``."""
    if isinstance(obj, Tensor):
        out.append(obj)
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _tensors_in(o, out)
    elif isinstance(obj, dict):
        for o in obj.values():
            _tensors_in(o, out)
    return out


def _segment_nodes(outputs, start: int, end: int):
    """The nodes created between sequence numbers ``start`` and ``end`` that the outputs'
    history reaches, in creation order."""
    stack = [t.grad_fn for t in _tensors_in(outputs, []) if t.grad_fn is not None]
    found, seen = [], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if not isinstance(node, BackwardNode) or not start < node._seq < end:
            continue  # history from before the segment (or a leaf): the boundary
        found.append(node)
        stack.extend(n for n, _ in node.next_functions if n is not None)
    found.sort(key=lambda n: n._seq)
    return found


class _Placeholder:
    """Stands in a node's ``_saved`` list for one dropped tensor; duck-types ``_Saved``."""

    __slots__ = ("segment", "index", "slot", "version_counter", "version")

    def __init__(self, segment, index, slot, saved) -> None:
        self.segment, self.index, self.slot = segment, index, slot
        self.version_counter, self.version = saved.version_counter, saved.version

    def unpack(self, node):
        if self.version_counter.value != self.version:
            raise InplaceError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: a tensor saved by {node.name()} inside a checkpointed "
                f"region is at version {self.version_counter.value}; expected version "
                f"{self.version} instead. Hint: do not modify the inputs or outputs of a "
                "checkpointed function in place before backward.")
        # by index into the rerun's lists, not through node._saved: with nested checkpoints
        # the rerun's saved entries are themselves placeholders (of the inner rerun)
        return self.segment.recompute()[self.index][self.slot].unpack(node)


class _Segment:
    """One checkpointed call: what to rerun, and the nodes whose saved tensors it restores."""

    def __init__(self, function, args, kwargs, rng, nodes) -> None:
        self.function, self.args, self.kwargs, self.rng = function, args, kwargs, rng
        self.names = [n.name() for n in nodes]
        # weak: the nodes hold this segment (through their placeholders), not the reverse
        self.nodes = [weakref.ref(n) for n in nodes]
        self.recomputed = None  # per node: the rerun's saved list
        for k, n in enumerate(nodes):
            if n._saved:
                n._saved = [None if s is None else _Placeholder(self, k, j, s)
                            for j, s in enumerate(n._saved)]

    def recompute(self) -> list:
        """Rerun the function (once); returns the rerun's saved lists, node by node."""
        if self.recomputed is not None:
            return self.recomputed
        create_graph = is_grad_enabled()  # in backward: the create_graph flag
        with (self.rng.fork() if self.rng is not None else _NoFork()), enable_grad():
            start = next(_sequence)
            out = self.function(*self.args, **self.kwargs)
            end = next(_sequence)
        new = _segment_nodes(out, start, end)
        names = [n.name() for n in new]
        if names != self.names:
            raise RuntimeError(
                "gpugrad.utils.checkpoint: the recomputed forward recorded a different graph "
                f"than the original one ({len(names)} ops vs {len(self.names)}; first "
                f"difference: {_first_difference(self.names, names)}). The checkpointed "
                "function must be deterministic in which operations it runs (make control "
                "flow depend only on its inputs, and keep preserve_rng_state=True).")
        self.recomputed = [fresh._saved for fresh in new]
        for ref, fresh in zip(self.nodes, new):
            old = ref()
            if old is not None and not old._released and old._saved:
                old._saved = fresh._saved  # later unpacks skip the placeholders
            if not create_graph:
                fresh._saved = None  # let each old node free its tensors once it has run
        self.function = self.args = self.kwargs = self.rng = None
        return self.recomputed


def _first_difference(a, b) -> str:
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"op {k} was {x}, now {y}"
    return f"op {min(len(a), len(b))} is missing in the shorter one"


def _checkpoint_without_reentrant(function, preserve_rng_state, args, kwargs):
    if not is_grad_enabled():
        return function(*args, **kwargs)
    rng = _RngState(args) if preserve_rng_state else None
    start = next(_sequence)
    out = function(*args, **kwargs)
    end = next(_sequence)
    nodes = _segment_nodes(out, start, end)
    if nodes:
        _Segment(function, args, kwargs, rng, nodes)
    return out


# ---- reentrant -------------------------------------------------------------------------------------
class CheckpointFunction(Function):
    """The reentrant checkpoint: forward under no_grad, backward reruns and backprops."""

    @staticmethod
    def forward(ctx, run_function, preserve_rng_state, *args):
        ctx.run_function = run_function
        ctx.rng = _RngState(args) if preserve_rng_state else None
        ctx.tensor_indices = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        ctx.inputs = [None if isinstance(a, Tensor) else a for a in args]
        ctx.save_for_backward(*(args[i] for i in ctx.tensor_indices))
        with no_grad():
            return run_function(*args)

    @staticmethod
    def backward(ctx, *grads):
        from ..autograd import backward
        inputs = list(ctx.inputs)
        for i, t in zip(ctx.tensor_indices, ctx.saved_tensors):
            d = t.detach()
            d.requires_grad_(t.requires_grad)
            inputs[i] = d
        with (ctx.rng.fork() if ctx.rng is not None else _NoFork()), enable_grad():
            outputs = ctx.run_function(*inputs)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        pairs = [(o, g) for o, g in zip(outputs, grads)
                 if isinstance(o, Tensor) and o.requires_grad and g is not None]
        if not pairs:
            raise RuntimeError("none of output has requires_grad=True, this checkpoint() is "
                               "not necessary")
        backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None) + tuple(inp.grad if isinstance(inp, Tensor) else None
                                    for inp in inputs)


# ---- public API ----------------------------------------------------------------------------------
def checkpoint(function, *args, use_reentrant=None, context_fn=None, determinism_check="default",
               debug=False, preserve_rng_state=True, **kwargs):
    """Run ``function(*args, **kwargs)`` without keeping its activations; backward reruns it.

    ``preserve_rng_state`` makes the rerun draw the same random numbers as the first run.
    ``context_fn`` and ``debug`` are not supported (``context_fn`` must be None); the
    determinism check compares the op sequence of the two runs (always on).
    """
    if use_reentrant is None:
        warnings.warn(_NO_REENTRANT_WARNING, UserWarning, stacklevel=2)
        use_reentrant = True
    if context_fn is not None:
        raise NotImplementedError("gpugrad.utils.checkpoint: context_fn is not supported")
    if determinism_check not in ("default", "none"):
        raise ValueError(f"determinism_check should be one of ['default', 'none'], but got "
                         f"{determinism_check}")
    if use_reentrant:
        if debug:
            raise ValueError("Passing `context_fn` or `debug` is only supported when "
                             "use_reentrant=False.")
        if kwargs:
            raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))
        if is_grad_enabled() and not any(isinstance(a, Tensor) and a.requires_grad
                                         for a in args):
            warnings.warn("None of the inputs have requires_grad=True. Gradients will be None",
                          UserWarning, stacklevel=2)
        return CheckpointFunction.apply(function, preserve_rng_state, *args)
    return _checkpoint_without_reentrant(function, preserve_rng_state, args, kwargs)


def checkpoint_sequential(functions, segments, input, use_reentrant=None, **kwargs):
    """Run a sequence of functions (or an ``nn.Sequential``) in ``segments`` chunks, each
    checkpointed except the last (its activations are needed right away by backward)."""
    if use_reentrant is None:
        warnings.warn(_NO_REENTRANT_WARNING, UserWarning, stacklevel=2)
        use_reentrant = True
    preserve = kwargs.pop("preserve_rng_state", True)
    if kwargs:
        raise ValueError("Unexpected keyword arguments: " + ",".join(kwargs))

    def run_function(start, end, functions):
        def forward(x):
            for j in range(start, end + 1):
                x = functions[j](x)
            return x
        return forward

    if hasattr(functions, "children") and callable(functions.children):
        functions = list(functions.children())
    functions = list(functions)
    segment_size = len(functions) // segments
    end = -1
    for start in range(0, segment_size * (segments - 1), segment_size):
        end = start + segment_size - 1
        input = checkpoint(run_function(start, end, functions), input,
                           use_reentrant=use_reentrant, preserve_rng_state=preserve)
    return run_function(end + 1, len(functions) - 1, functions)(input)

