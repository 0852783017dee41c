"""The tape: runs the reverse pass over the graph of nodes.

1. Walk the graph from the roots (iteratively: a chain of a million nodes must not hit the
   recursion limit) and count, for every node, the edges that lead into it.
2. Run nodes from a heap ordered by reverse creation order; a node becomes ready once all
   its incoming gradients have arrived and been summed in its buffer.
3. Drop each buffer as soon as its node has run, and (without ``retain_graph``) the node's
   saved tensors too, so that peak memory stays close to the forward's.

Without create_graph the buffers hold bare arrays: a one-output built-in node runs its
array-level backward (``node._lean``, from ``Function._backward_arrays``) on them, and no
tensor is made per gradient. Nodes with hooks, captures of ``inputs`` or a general backward
(``_run_node``) see tensors, as every node does with create_graph (whose gradients are
recorded).

Each buffered gradient carries an ``owned`` flag: True when no one else can see its array
(it was freshly computed by a built-in backward, or is a sum made here). Owned buffers may be
summed into in place and handed to ``.grad`` without a copy; others are copied first, so that
accumulating into ``x.grad`` never writes into a tensor the user or another leaf holds.
"""
from __future__ import annotations

import heapq
import itertools

import numpy as np

from .._cuda_errors import error_types as _cuda_error_types
from .._cuda_errors import translate as _cuda_error
from . import anomaly_mode, grad_mode
from .._backend import CPU as _CPU
from .._backend import device_of_array as _device_of
from .._dtypes import from_numpy_dtype
from .graph import AccumulateGrad

heappush = heapq.heappush
_make = None  # Tensor._make, set by _tensor.py (which imports this module)
# Whether nodes run their array-level backward (``_lean``) when they can; tests turn it off
# to compare with the general path.
_LEAN = True

_ndarray = np.ndarray
_generic = np.generic

__all__ = ["run_backward"]

_state = grad_mode.state


def _collect(roots):
    """Dependencies: node -> number of edges into it from nodes reachable from the roots."""
    # One dict is both the count and the set of nodes seen (the roots start at 0).
    deps = dict.fromkeys(roots, 0)
    stack = list(roots)
    while stack:
        for nxt, _ in stack.pop().next_functions:
            if nxt is None:
                continue
            if nxt in deps:
                deps[nxt] += 1
            else:
                deps[nxt] = 1
                stack.append(nxt)
    return deps, deps.keys()


def _needed(nodes, targets):
    """The nodes from which some target node can be reached (only these must run)."""
    needed = set(targets)
    # Iterative post-order walk: a node is needed when one of its next nodes is.
    done = set()
    for start in nodes:
        if start in done:
            continue
        stack = [(start, iter(start.next_functions))]
        done.add(start)
        while stack:
            node, it = stack[-1]
            for nxt, _ in it:
                if nxt is not None and nxt not in done:
                    done.add(nxt)
                    stack.append((nxt, iter(nxt.next_functions)))
                    break
            else:
                stack.pop()
                if node not in needed and any(n in needed for n, _ in node.next_functions
                                              if n is not None):
                    needed.add(node)
    return needed


def _validate(node, i, g, meta):
    """Make gradient ``g`` of input ``i`` match that input: reduce broadcast dims, cast dtype.
    ``meta``: the input's (shape, array dtype, device or None for a NumPy array)."""
    shape, np_dtype, device = meta
    a = g._data
    if a.shape != shape:
        try:
            g = g.sum_to_size(shape)
        except RuntimeError:
            raise RuntimeError(
                f"Function {node.name()} returned an invalid gradient at index {i} - got "
                f"{list(g.shape)} but expected shape compatible with {list(shape)}") from None
    if a.dtype != np_dtype:
        g = g.to(from_numpy_dtype(np_dtype))
    if device is None:
        device = _CPU
    if (device.type != "cpu" or a.__class__ is not np.ndarray) and g.device != device:
        raise RuntimeError(
            f"Function {node.name()} returned an invalid gradient at index {i} - expected "
            f"device {device} but got {g.device}")
    return g


def _add_to_buffer(buf, nr, g, owned, arrays: bool = False):
    """Sum gradient ``g`` into slot ``nr`` of a node's buffer (``arrays``: bare arrays, else
    tensors); in place when the slot's gradient is ours alone."""
    slot = buf[nr]
    if slot is None:
        buf[nr] = [g, owned]
        return
    old = slot[0]
    a, b = (old, g) if arrays else (old._data, g._data)
    if slot[1] and not _state.enabled and a.shape == b.shape and a.dtype == b.dtype \
            and a.__class__ is b.__class__:
        a += b  # ours alone: sum in place
    else:
        s = old + g
        slot[0] = np.asarray(s) if arrays and isinstance(s, _generic) else s
        slot[1] = True


def _unwrap(node, out, arrays: bool):
    """A general backward's results, checked to be tensors (or None); their arrays when the
    pass keeps bare arrays."""
    from .._tensor import Tensor
    result = []
    i = 0
    for g in out:
        if g is not None:
            if not isinstance(g, Tensor):
                raise TypeError(f"Function {node.name()} returned a gradient of type "
                                f"{type(g).__name__} at index {i}; expected a Tensor or None")
            if arrays:
                g = g._data
        result.append(g)
        i += 1
    return result


def _on(a, device) -> bool:
    """Whether ``a`` (not a NumPy array) is a device array on ``device`` (None: the host)."""
    return device is not None and not isinstance(a, _generic) and _device_of(a) is device


def _run_tensor_hooks(node, buf):
    """Hooks registered with Tensor.register_hook on this node's outputs, then retain_grad."""
    if node._tensor_hooks:
        for nr, hooks in node._tensor_hooks.items():
            slot = buf[nr]
            if slot is None:
                continue
            for hook in tuple(hooks.values()):
                r = hook(slot[0])
                if r is not None:
                    slot[0], slot[1] = r, False
    if node._retain:
        for nr, ref in node._retain.items():
            t, slot = ref(), buf[nr]
            if t is None or slot is None:
                continue
            g = slot[0] if _state.enabled else slot[0].detach()
            t._grad = g.clone() if t._grad is None else t._grad + g


def _run_leaf_hooks(var, slot):
    """Hooks registered with Tensor.register_hook on a leaf (before capture or accumulation)."""
    for hook in tuple(var._hooks.values()):
        r = hook(slot[0])
        if r is not None:
            slot[0], slot[1] = r, False


def _accumulate(var, g, owned):
    """AccumulateGrad: add ``g`` into ``var.grad`` (in place when recording is off)."""
    old = var._grad
    if _state.enabled:  # create_graph: keep the history of the gradient
        var._grad = (g if owned else g.clone()) if old is None else old + g
    elif old is None:
        var._grad = g.detach() if owned else g.detach().clone()
    else:
        old._data += g._data
        old._version.value += 1


def _accumulate_array(var, a, owned):
    """``_accumulate`` of an array, without create_graph."""
    old = var._grad
    if old is None:
        var._grad = _make(a if owned else a.copy())
    else:
        old._data += a
        old._version.value += 1


def _run_node(node, buf, arrays, anomaly, captures, results, accumulate, needed):
    """One node the general way: tensor hooks, pre-hooks, captures of ``inputs``, a leaf's
    accumulation, ``_apply`` (or anomaly mode's run), post-hooks. Returns the gradients for
    its edges (arrays when the pass keeps arrays), the ids of arrays that are not ours, and
    whether the node is built in; or Nones when nothing goes on from it (a leaf, or a node
    that no wanted input needs)."""
    if buf is None:
        buf = [None] * node._num_outputs()
    elif arrays:  # hooks, captures and general backwards see tensors
        buf = [None if s is None else [_make(s[0]), s[1]] for s in buf]
    if node._tensor_hooks is not None or node._retain is not None:
        _run_tensor_hooks(node, buf)
    if node._pre_hooks:
        grads = [s and s[0] for s in buf]
        for hook in tuple(node._pre_hooks.values()):
            r = hook(tuple(grads))
            if r is not None:
                grads = list(r)
        buf = [None if g is None else [g, False] for g in grads]

    is_leaf = node.__class__ is AccumulateGrad or isinstance(node, AccumulateGrad)
    if (is_leaf and node.variable._hooks and buf[0] is not None
            and ((node, 0) in captures or (accumulate and (needed is None or node in needed)))):
        # as in torch, autograd.grad() w.r.t. a leaf sees its hooks' result too
        _run_leaf_hooks(node.variable, buf[0])
    if captures:
        for nr in range(len(buf)):
            ks = captures.get((node, nr))
            if ks and buf[nr] is not None:
                for k in ks:
                    results[k] = buf[nr][0]
    if is_leaf:
        if accumulate and buf[0] is not None and (needed is None or node in needed):
            _accumulate(node.variable, buf[0][0], buf[0][1])
        return None, None, None
    if needed is not None and node not in needed:
        return None, None, None

    if len(buf) == 1:  # one output (most nodes): no comprehension frame (3.11)
        incoming = [None if buf[0] is None else buf[0][0]]
    else:
        incoming = [s and s[0] for s in buf]
    del buf  # (the incoming gradients may be freed as soon as backward lets them go)
    out = anomaly_mode.run_node(node, incoming) if anomaly else node._apply(incoming)
    if node._post_hooks:
        for hook in tuple(node._post_hooks.values()):
            r = hook(tuple(out), tuple(incoming))
            if r is not None:
                out = list(r)
    builtin = node._builtin
    taken = None
    if builtin:  # (a loop, not a comprehension: each costs a frame on 3.11)
        taken = set()
        for g in incoming:
            if g is not None:
                taken.add(id(g._data))
    return _unwrap(node, out, arrays), taken, builtin


def run_backward(roots, root_grads, root_owned, retain_graph, create_graph, inputs=None,
                 allow_unused=False, accumulate=True, materialize_grads=False):
    """Run the reverse pass from ``roots`` (tensors) seeded with ``root_grads``
    (``root_owned[i]``: the engine may write into ``root_grads[i]``).

    ``accumulate=True`` (``backward``): add into ``.grad`` of leaves (only ``inputs`` if
    given). ``accumulate=False`` (``autograd.grad``): return the gradients of ``inputs``.
    """
    from .._tensor import Tensor, _refresh_view

    root_edges = []
    for i, t in enumerate(roots):
        if t._base is not None:
            _refresh_view(t)
        if not t.requires_grad:
            raise RuntimeError(f"element {i} of tensors does not require grad and does not have "
                               "a grad_fn")
        root_edges.append((t.grad_fn or t._grad_accumulator(), t._output_nr))

    # Where the gradients of `inputs` are caught: at a leaf's AccumulateGrad, or in the buffer
    # slot of a non-leaf's grad_fn just before that node runs.
    captures = {}
    if inputs is not None:
        for k, t in enumerate(inputs):
            if not isinstance(t, Tensor):
                raise TypeError(f"inputs[{k}] is a {type(t).__name__}, expected a Tensor")
            if not t.requires_grad:
                raise RuntimeError(f"One of the differentiated Tensors (inputs[{k}]) does not "
                                   "require grad")
            if t.grad_fn is not None:
                key = (t.grad_fn, t._output_nr)
            else:
                acc = t._grad_accumulator_if_exists()
                key = (acc if acc is not None else object(), 0)
            captures.setdefault(key, []).append(k)

    root_nodes = list({n: None for n, _ in root_edges})
    deps, nodes = _collect(root_nodes)
    needed = _needed(nodes, {n for n, _ in captures}) if inputs is not None else None
    results = [None] * (len(inputs) if inputs is not None else 0)

    # Without create_graph the buffers hold bare arrays: a node with an array-level backward
    # (``_lean``, most built-in ops) runs on them directly, and no tensor is made per
    # gradient. With create_graph they hold tensors, whose history the gradient graph needs.
    arrays = not create_graph
    lean_ok = arrays and _LEAN and not anomaly_mode._mode.enabled
    buffers = {}
    for (node, nr), g, owned in zip(root_edges, root_grads, root_owned):
        buf = buffers.get(node)
        if buf is None:
            buf = buffers[node] = [None] * node._num_outputs()
        _add_to_buffer(buf, nr, g._data if arrays else g, owned, arrays)

    prev = _state.enabled
    _state.enabled = bool(create_graph)
    anomaly = anomaly_mode._mode.enabled  # read once per pass: nothing per node when off
    heap = []
    ticks = itertools.count()  # ties (leaves' AccumulateGrad nodes) pop in push order
    for node in root_nodes:
        if deps.get(node, 0) == 0:
            heappush(heap, (-node._seq, next(ticks), node))
    heappop = heapq.heappop
    try:
        while heap:
            node = heappop(heap)[2]
            buf = buffers.pop(node, None)
            lean = node._lean
            out = None
            if (lean is not None and lean_ok and buf is not None and len(buf) == 1
                    and buf[0] is not None and node._tensor_hooks is None
                    and node._retain is None and not node._pre_hooks
                    and not node._post_hooks and (not captures or (node, 0) not in captures)
                    and (needed is None or node in needed)):
                # The common node: one output, nothing watching it; arrays in, arrays out.
                g = buf[0][0]
                out = lean(node, g)
                if out is not None:
                    taken = {id(g)}
                    builtin = True
            elif (node.__class__ is AccumulateGrad and lean_ok and buf is not None
                    and buf[0] is not None and not node.variable._hooks and not captures
                    and accumulate and node._pre_hooks is None):
                # A leaf that nothing watches: add the array into .grad
                _accumulate_array(node.variable, buf[0][0], buf[0][1])
                continue
            if out is None:
                out, taken, builtin = _run_node(node, buf, arrays, anomaly, captures, results,
                                                accumulate, needed)
                if out is None:  # a leaf, or a node no input needs
                    continue
            if not retain_graph:
                node._release()
            # Hand each gradient on to the node it belongs to, checked against the input's
            # shape, dtype and device. It is ours (owned: the engine may sum into it and
            # give it to .grad) when a built-in backward made it fresh: not a view, not an
            # incoming gradient, not returned twice.
            meta = node._input_meta
            i = -1
            for (nxt, nr), g in zip(node.next_functions, out):
                i += 1
                if nxt is None:
                    continue
                if g is not None:
                    arr = g if arrays else g._data
                    if arr.__class__ is not _ndarray and arrays and isinstance(arr, _generic):
                        arr = g = np.asarray(arr)  # NumPy gives 0-d results as scalars
                    if builtin:
                        owned = arr.base is None and id(arr) not in taken
                        taken.add(id(arr))
                    else:
                        owned = False
                    if meta:
                        m = meta[i]
                        if not (arr.shape == m[0] and arr.dtype == m[1] and (
                                m[2] is None if arr.__class__ is _ndarray else _on(arr, m[2]))):
                            t = _make(arr) if arrays else g
                            t2 = _validate(node, i, t, m)
                            if t2 is not t:
                                g, owned = (t2._data if arrays else t2), True
                    nbuf = buffers.get(nxt)
                    if nbuf is None:
                        if nxt._lean is not None:  # (one output)
                            buffers[nxt] = [[g, owned]]
                        else:
                            nbuf = buffers[nxt] = [None] * nxt._num_outputs()
                            nbuf[nr] = [g, owned]
                    elif nbuf[nr] is None:
                        nbuf[nr] = [g, owned]
                    else:
                        _add_to_buffer(nbuf, nr, g, owned, arrays)
                d = deps[nxt] - 1
                deps[nxt] = d
                if d == 0:
                    heappush(heap, (-nxt._seq, next(ticks), nxt))
            out = g = arr = None  # (no reference to a gradient outlives its use)
    except _cuda_error_types() as e:  # CUDA failures outside an op (summing gradients, ...)
        raise _cuda_error(e, f"backward (at {node.name()})") from e
    finally:
        _state.enabled = prev

    if inputs is None:
        return None
    for k, t in enumerate(inputs):
        g = results[k]
        if g is None:
            if materialize_grads:
                from .._factories import zeros_like
                results[k] = zeros_like(t)
            elif not allow_unused:
                raise RuntimeError(
                    f"One of the differentiated Tensors (inputs[{k}]) appears to not have been "
                    "used in the graph. Set allow_unused=True if this is the desired behavior.")
        elif accumulate:
            # backward(inputs=...) on a non-leaf: accumulate like a leaf would.
            if t.grad_fn is not None:
                gd = g if create_graph else g.detach()
                t._grad = gd.clone() if t._grad is None else t._grad + gd
        elif not create_graph:
            results[k] = g.detach()
    return tuple(results)

