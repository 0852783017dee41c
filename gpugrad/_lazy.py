"""Lazy elementwise ops for ``gpugrad.compile(fn, fuse=True)``: each maximal chain of
elementwise ops becomes one generated kernel forward, and one backward (``_fusion``).

While :func:`fusing` is active (``gpugrad.compile`` enters it around every run of ``fn``:
warm-up, capture, and the CPU stand-in's replays alike), the ``apply`` of the fusable
Functions (``_fusion.FUNCTION_OPS``: Add, Mul, Tanh, Where, ...) is swapped for a lazy one.
A lazy op whose operands are float tensors of one dtype and device (and Python numbers) does
not compute: it returns a *pending* tensor, a :class:`Tensor` subclass that only knows its
shape, dtype, device and requires_grad, and adds one node to the thread's open **region** for
its (shape, dtype, device, grad mode); an operand of a smaller shape (a bias) is an input of
that region. A full ``.sum()`` or ``.mean()`` of a pending tensor joins its region too, as a
summed output of the kernel. Anything else (another dtype, a tensor exponent, ``alpha != 1``,
forward-mode AD) runs the original ``apply``, which reads its inputs' ``_data`` and so
computes them first.

A region is flushed when the data (or the history: ``grad_fn``) of one of its pending tensors
is read (by a matmul, a reduction, ``.item()``, ...), when one of its pending tensors is the
operand of an op of another region (another shape), when it grows past ``_MAX_NODES``, and
when :func:`fusing` exits. A flush:

1. takes as outputs the pending tensors still alive (weak references: the temporaries of an
   expression are gone by then), and prunes the nodes no output needs;
2. builds a ``_fusion.FusedGraph`` (cached per structure: constants are kernel parameters) and
   runs its generated **forward** kernel, which reads each input once and writes each output
   once;
3. records ONE autograd node for the region (``FusedRegionBackward``) when the region ran
   with grad mode on and an input requires grad; its backward is the region's generated
   **backward** kernel (gradients of the inputs from those of the outputs, the chain
   recomputed from the inputs inside the kernel), each summed down to its input's shape as
   the eager ops' broadcasting would be. On NumPy, which is bound by computation rather than
   memory, a region whose only output is a sum (a loss) computes its gradient in the
   forward's own kernel instead (``value_and_grad``), and backward only scales it;
4. turns each output back into a plain :class:`Tensor` in place (``__class__`` assignment:
   the subclass adds no slots), holding the result and that node as its ``grad_fn``.

``loss.backward()`` or ``gpugrad.autograd.backward(loss)`` on a pending loss (a full sum, the
only live output of its region) whose region reads only plain leaves among the tensors that
require grad (no ``.grad`` yet, no hooks, not views), with the implicit seed (no
``gradient``, ``create_graph`` or ``inputs``), needs no engine: the flush runs the region's
``value_and_grad`` program, which gives the loss and each leaf's gradient at once, and the
gradients become the leaves' ``.grad`` as AccumulateGrad would set them
(:func:`_fast_backward`). On CuPy that program is ONE reduce
kernel (``_fusion.FusedKernel.reduce_call``): W2's step reads x once and writes x.grad once.
The loss then looks as after an ordinary backward: a plain tensor whose ``grad_fn`` is
released (a second backward raises torch's error), or kept with ``retain_graph=True``.
Any other case takes the ordinary path above.

Semantics kept: values equal the eager ones within float tolerance; requires_grad and
grad_fn as eager (one node instead of many). Gradients of gradients through a region
(``create_graph=True``) replay the region's ops eagerly, so they are exact, not fused.

In-place writes do what they do to eager code, error included (see "in-place writes" below),
although a region reads its inputs when it is flushed and its backward recomputes the chain
from them, where the eager ops save what their backward reads (exp, tanh and sigmoid: their
result). While fusing, every in-place op of gpugrad (all pass ``ops.inplace.check_inplace``,
which :func:`fusing` wraps) first computes the thread's pending regions that read the tensor
it writes, and gives each live region node that saved it a copy of its current value (as
torch's in-place ops do for their own node); and each region node checks, at the start of its
backward, the versions of what the eager ops would have saved (its inputs, its live outputs),
in eager's order, raising eager's InplaceError with eager's message where eager would raise
it. A write that goes around gpugrad's in-place ops (an optimizer's update of the arrays, a
raw array write, another thread's, or one after :func:`fusing` ended) to an input that a
region still needs raises InplaceError, naming the tensor and the chain: at the region's
flush (``y = p * 2`` pending, then ``opt.step()``) or in its backward.

Outside :func:`fusing` nothing here runs: eager ops pay nothing for it.
"""
from __future__ import annotations

import threading
import weakref

import numpy as np

from . import _fusion
from ._tensor import Tensor, Size, _Version, _wrap_dim
from ._dtypes import from_numpy_dtype
from .autograd import function as _function
from .autograd import grad_mode as _grad_mode

__all__ = ["fusing", "is_fusing", "stats", "reset_stats", "flush"]

_state = _grad_mode.state
_tls = threading.local()
_new = object.__new__
_MAX_NODES = 64  # ops per region: a longer chain is split (bounded kernel size and codegen)
_MAX_OPEN = 8    # open regions per thread (one per shape, dtype, device and grad mode)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
#: On NumPy, ops on fewer elements than this are not fused but run eagerly. A region costs
#: ~0.1-0.2 ms of Python (building it, finding its kernel, its node), and its chunked NumPy
#: kernel copies each chunk once more than a lone ufunc would: it pays off for long chains
#: over large arrays (W2's, 2**22: 1.5x) but not for short ones below a few 10**5 elements
#: (W1 small compiled on a CPU: 6.0 ms fused against 3.5 ms eager; its SGD update,
#: ``lr * p.grad`` over 784x256, was a one-op region at 0.28 ms against 0.05 eager). CuPy
#: arrays are always fused (a capture replays without Python, and each pass saved is a
#: launch saved). Tests set it to 0 to fuse everything.
NUMPY_MIN_ELEMENTS = 1 << 18

# Counters for tests and benchmarks: regions flushed, kernels launched each way, ops fused,
# ops that fell back to eager, backward() calls run as one kernel (_fast_backward).
stats = {"regions": 0, "forward_launches": 0, "backward_launches": 0, "ops": 0,
         "fallbacks": 0, "fast_backwards": 0}


def reset_stats() -> None:
    """Zero :data:`stats`."""
    for k in stats:
        stats[k] = 0


# ---- the pending tensor --------------------------------------------------------------------
def _flush_of(t) -> None:
    region = t.__dict__["_lz"][0]
    flush(region)
    if t.__class__ is _Pending:  # its region's flush failed (and said why): say it again
        raise RuntimeError(f"fused elementwise chain: this tensor could not be computed: "
                           f"{region.error or 'a gpugrad bug'} (compile with fuse=False to "
                           "run the chain op by op)")


class _Pending(Tensor):
    """A tensor whose value a region has not computed yet. Reading its data or history
    flushes the region, which turns it into a plain Tensor; its metadata answers without.
    Its ``__dict__["_lz"]`` is (region, node, summed, shape)."""

    __slots__ = ()  # the same layout as Tensor: __class__ can be assigned back

    @property
    def _data(self):
        _flush_of(self)
        return self._data

    @_data.setter
    def _data(self, value):
        _flush_of(self)
        self._data = value

    @property
    def grad_fn(self):
        _flush_of(self)
        return self.grad_fn

    @grad_fn.setter
    def grad_fn(self, value):
        _flush_of(self)
        self.grad_fn = value

    @property
    def shape(self) -> Size:
        return Size(self.__dict__["_lz"][3])

    def size(self, dim=None):
        shape = self.__dict__["_lz"][3]
        if dim is None:
            return Size(shape)
        return shape[_wrap_dim(dim, len(shape), "size")]

    def dim(self) -> int:
        return len(self.__dict__["_lz"][3])

    ndimension = dim

    @property
    def ndim(self) -> int:
        return len(self.__dict__["_lz"][3])

    def numel(self) -> int:
        return Size(self.__dict__["_lz"][3]).numel()

    nelement = numel

    @property
    def dtype(self):
        return from_numpy_dtype(self.__dict__["_lz"][0].dtype)

    @property
    def device(self):
        return self.__dict__["_lz"][0].device

    @property
    def is_cuda(self) -> bool:
        return self.__dict__["_lz"][0].cls is not np.ndarray

    def is_floating_point(self) -> bool:
        return True

    def sum(self, dim=None, keepdim=False, *, dtype=None):
        """A full sum fuses into the chain (a summed output of its kernel); else eager."""
        if dim is None and not keepdim and dtype is None:
            out = _lazy_sum(self, False)
            if out is not None:
                return out
        return _eager("sum")(self, dim, keepdim, dtype=dtype)

    def mean(self, dim=None, keepdim=False, *, dtype=None):
        """A full mean fuses into the chain (the sum of ``x * (1/n)``); else eager."""
        if dim is None and not keepdim and dtype is None:
            out = _lazy_sum(self, True)
            if out is not None:
                return out
        return _eager("mean")(self, dim, keepdim, dtype=dtype)

    def _fast_backward(self, retain_graph: bool) -> bool:
        """``gpugrad.autograd.backward`` (and so ``Tensor.backward``) of this tensor alone,
        with the implicit seed of 1 (no gradient, ``create_graph`` or ``inputs``), asks this
        first: a loss (a fused full sum) whose chain reads only plain leaves among the
        tensors that require grad computes its value and the leaves' gradients in ONE
        kernel (:func:`_fast_backward`); True when it did."""
        return _fast_backward(self, retain_graph)


def _eager(name):
    from . import ops
    return getattr(ops, name)


def _materialize(t, array) -> None:
    """Turn pending ``t`` into a plain Tensor holding ``array`` (its autograd metadata is
    set by the region's Function, as for any op's output)."""
    t.__class__ = Tensor
    d = t.__dict__
    del d["_lz"]
    d.pop("_requires_grad", None)
    t._data = array


# ---- regions ---------------------------------------------------------------------------------
class _Region:
    """The open chain of one thread: nodes as ``_fusion.FusedGraph`` nodes (kind, op, args,
    extra), its inputs (tensors, their arrays and versions when read), its constants, and a
    weak reference to each pending tensor."""

    __slots__ = ("key", "shape", "dtype", "cls", "device", "grad", "nodes", "consts",
                 "tensors", "arrays", "versions", "input_of", "refs", "rg", "done",
                 "error", "means", "__weakref__")

    def __init__(self, key, shape, dtype, cls, device, grad) -> None:
        self.key, self.shape, self.dtype, self.cls = key, shape, dtype, cls
        self.device, self.grad = device, grad
        self.nodes, self.consts = [], []
        self.tensors, self.arrays, self.versions = [], [], []
        self.input_of = {}  # id(tensor) -> node
        self.refs = []      # (node, weakref to its pending tensor, summed)
        self.rg = {}        # node -> requires grad (op time)
        self.done = False
        self.error = None   # why its flush failed
        self.means = ()     # summed nodes that are a mean (eager: MeanBackward0)

    def input(self, t, kind) -> int:
        n = self.input_of.get(id(t))
        if n is None:
            self.nodes.append((kind, "input", (), len(self.tensors)))
            n = self.input_of[id(t)] = len(self.nodes) - 1
            self.tensors.append(t)
            self.arrays.append(t._data)
            v = t._version
            self.versions.append((v, v.value))
        return n

    def const(self, value) -> int:
        self.nodes.append(("T", "const", (), len(self.consts)))
        self.consts.append(value)
        return len(self.nodes) - 1


class _State:
    """A thread's open regions, one per (shape, dtype, device, grad mode), oldest first."""

    __slots__ = ("regions",)

    def __init__(self) -> None:
        self.regions = {}


def is_fusing() -> bool:
    """True while the calling thread is inside :func:`fusing`."""
    return getattr(_tls, "st", None) is not None


# ---- the lazy apply ---------------------------------------------------------------------------
_UNARY = frozenset(("neg", "exp", "log", "sin", "cos", "sqrt", "tanh", "sigmoid", "relu"))
_NUMBER = (float, int)


def _lazy(st, op, args):
    """The pending result of ``op`` on ``args``, or None when it cannot be fused."""
    if op in _UNARY:
        if len(args) != 1:
            return None
        operands = args
    elif op == "add" or op == "sub":
        if not 2 <= len(args) <= 3 or (len(args) == 3 and not (
                args[2].__class__ in _NUMBER and args[2] == 1)):
            return None
        operands = args[:2]
    elif op == "mul" or op == "div":
        if len(args) != 2:
            return None
        operands = args
    elif op == "pow":
        if len(args) != 2 or args[1].__class__ not in _NUMBER or \
                not isinstance(args[0], Tensor):
            return None
        operands = args
    elif op == "where":
        if len(args) != 3:
            return None
        c = args[0]
        if c.__class__ is not Tensor or c._data.dtype != np.bool_:
            return None
        operands = args
    else:  # pragma: no cover - the table and _OPS agree
        return None
    # operands: one float dtype, one device; shapes broadcast
    dtype = cls = dev = None
    shapes = []
    rg = False
    enabled = _state.enabled
    others = None  # regions of pending operands: flushed if not the op's own region
    for i, a in enumerate(operands):
        if a.__class__ in _NUMBER:
            continue
        if not isinstance(a, Tensor):
            return None
        if a.__class__ is _Pending:
            r, _, summed, pshape = a.__dict__["_lz"]
            if summed:  # a sum ends a chain: the op computes it first
                return None
            others = (r,) if others is None else others + (r,)
            shapes.append(pshape)
            dt, c, d = r.dtype, r.cls, r.key[2]
        else:
            arr = a._data
            shapes.append(arr.shape)
            c = arr.__class__
            d = None if c is np.ndarray else arr.device.id
            if op == "where" and i == 0:  # the condition: a bool mask on the same device
                if (cls is not None and c is not cls) or (dev is not None and d != dev):
                    return None
                cls, dev = c, d
                continue
            dt = arr.dtype
            if enabled and a._base is not None:
                _function._refresh_view(a)
        if dtype is None:
            if dt not in _FLOATS:
                return None
            dtype = dt
        elif dt != dtype:
            return None
        if (cls is not None and c is not cls) or (dev is not None and d != dev):
            return None
        cls = c
        if d is not None:
            dev = d
        if enabled and not rg and a._requires_grad:
            rg = True
    if dtype is None:
        return None
    shape = shapes[0]
    for s in shapes[1:]:
        if s != shape:
            try:
                shape = np.broadcast_shapes(*shapes)
            except ValueError:
                return None  # the eager op reports it
            break
    if cls is np.ndarray and NUMPY_MIN_ELEMENTS:
        n = 1
        for s in shape:
            n *= s
        if n < NUMPY_MIN_ELEMENTS:
            return None  # small NumPy arrays: the eager op is cheaper (see NUMPY_MIN_ELEMENTS)
    key = (shape, dtype, dev, enabled)
    regions = st.regions
    region = regions.get(key)
    if region is not None and (region.done or len(region.nodes) >= _MAX_NODES):
        flush(region)
        region = None
    if others is not None:  # operands pending in another region (another shape): compute
        for r in others:
            if r is not region:
                flush(r)
    if region is None:
        if len(regions) >= _MAX_OPEN:
            flush(next(iter(regions.values())))
        device = operands[0].device if isinstance(operands[0], Tensor) else operands[1].device
        region = regions[key] = _Region(key, shape, dtype, cls, device, enabled)
    node_args = []
    for i, a in enumerate(operands):
        if a.__class__ in _NUMBER:
            node_args.append(region.const(float(a)))
        elif a.__class__ is _Pending:  # of this region (the flushes above made others real)
            if a.__dict__["_lz"][0] is not region:
                _flush_of(a)  # its region's flush failed: raises, saying why
            node_args.append(a.__dict__["_lz"][1])
        else:
            node_args.append(region.input(a, "bool" if op == "where" and i == 0 else "T"))
    region.nodes.append((_fusion._OPS[op].kind, op, tuple(node_args), None))
    n = len(region.nodes) - 1
    if rg:
        region.rg[n] = True
    stats["ops"] += 1
    return _pending(region, n, False, shape, rg)


def _pending(region, n, summed, shape, rg):
    t = _new(_Pending)
    t._version = _Version()
    d = t.__dict__
    d["_lz"] = (region, n, summed, shape)
    if rg:
        d["_requires_grad"] = True
    region.refs.append((n, weakref.ref(t), summed))
    return t


def _lazy_sum(t, mean):
    """The pending full sum (or mean) of pending ``t``, or None (then computed eagerly)."""
    st = getattr(_tls, "st", None)
    region, n, summed, shape = t.__dict__["_lz"]
    if st is None or region is not st.regions.get(region.key) or summed or \
            region.grad != _state.enabled \
            or len(region.nodes) >= _MAX_NODES:
        return None
    rg = region.rg.get(n, False)
    if mean:  # sum(x * (1/n)): within rounding of eager's sum(x) / n
        count = Size(shape).numel()
        if count == 0:
            return None
        region.nodes.append(("T", "mul", (n, region.const(1.0 / count)), None))
        n = len(region.nodes) - 1
        if rg:
            region.rg[n] = True
        region.means += (n,)
    stats["ops"] += 1
    return _pending(region, n, True, (), rg)


def _make_apply(cls, op):
    def apply(klass, *args, **kwargs):
        st = getattr(_tls, "st", None)
        if st is not None and not kwargs and klass is cls and not _function._fw_enabled:
            out = _lazy(st, op, args)
            if out is not None:
                return out
            stats["fallbacks"] += 1
        return _originals[cls].__func__(klass, *args, **kwargs)
    apply.__doc__ = "``apply``, lazy inside ``gpugrad._lazy.fusing`` (see gpugrad._lazy)."
    return classmethod(apply)


_install_lock = threading.Lock()
_installed = {"depth": 0, "saved": []}
_originals = {}  # class -> its apply when installed (what a fallback runs)
_lazy_applies = {}  # class -> its lazy apply (made once)


def _install() -> None:
    with _install_lock:
        _installed["depth"] += 1
        if _installed["depth"] > 1:
            return
        if not _lazy_applies:
            from .ops import elementwise
            for name, op in _fusion.FUNCTION_OPS.items():
                cls = getattr(elementwise, name)
                _lazy_applies[cls] = _make_apply(cls, op)
        saved = _installed["saved"] = []
        for cls, lazy in _lazy_applies.items():
            own = cls.__dict__.get("apply")
            saved.append((cls, own))
            _originals[cls] = cls.apply
            cls.apply = lazy
        if not _check_inplace_orig:
            from .ops import inplace  # every in-place op of gpugrad checks through it first
            _check_inplace_orig[:] = [inplace.check_inplace, inplace]
        inplace = _check_inplace_orig[1]
        if inplace.check_inplace is not _check_inplace:
            _check_inplace_orig[0] = inplace.check_inplace
            inplace.check_inplace = _check_inplace


def _uninstall() -> None:
    with _install_lock:
        _installed["depth"] -= 1
        if _installed["depth"] > 0:
            return
        for cls, own in _installed["saved"]:
            if own is None:
                del cls.apply
            else:
                cls.apply = own
        _installed["saved"] = []
        inplace = _check_inplace_orig[1]
        if inplace.check_inplace is _check_inplace:
            inplace.check_inplace = _check_inplace_orig[0]


class fusing:
    """Context manager: elementwise chains run by the calling thread become lazy and fuse
    (see the module docstring). The open region is flushed on a normal exit; after an
    exception it stays pending (its tensors compute when read)."""

    def __enter__(self):
        self._prev = getattr(_tls, "st", None)
        _install()
        _tls.st = _State()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        st = _tls.st
        try:
            regions = list(st.regions.values())
            if exc_type is None:
                for region in regions:
                    flush(region)
            st.regions.clear()
        finally:
            _tls.st = self._prev
            _uninstall()


# ---- the flush --------------------------------------------------------------------------------
_graphs: dict = {}  # structure -> FusedGraph (its programs cached on it)


def flush(region, fast: bool = False, released: bool = False):
    """Compute ``region``: one forward kernel, and one autograd node for its backward.
    ``fast`` (from :func:`_fast_backward`): the kernel also computes the gradients of its
    one summed output; returns the ``_Plan`` (its ``grads``), or None. ``released``: the
    node is released as soon as it is made (no backward will run it: nothing to check)."""
    if region.done:
        return None
    region.done = True
    st = getattr(_tls, "st", None)
    if st is not None and st.regions.get(region.key) is region:
        del st.regions[region.key]
    try:
        return _compute(region, fast, released)
    except BaseException as e:
        region.error = f"{type(e).__name__}: {e}"
        raise


def _plain_leaf(x) -> bool:
    """True for a leaf whose AccumulateGrad would just take a fresh gradient as ``.grad``:
    no ``.grad`` yet (else it accumulates), not a view, no hooks on it or on its node."""
    if x.grad_fn is not None or x._base is not None or x._hooks or x._grad is not None:
        return False
    acc = x._grad_accumulator_if_exists()
    return acc is None or not (acc._pre_hooks or acc._post_hooks or acc._tensor_hooks)


def _fast_backward(t, retain_graph: bool) -> bool:
    """``t.backward()`` of pending loss ``t`` as ONE kernel, when that is what the engine
    would do: ``t`` is a full sum in a region recorded for autograd, no other tensor of that
    region is alive (the loss is the region's only output), every input of the region that
    requires grad is a plain leaf (:func:`_plain_leaf`), and neither forward-mode AD nor
    anomaly mode is on. Then the region's ``value_and_grad`` kernel (on CuPy, the reduce
    kernel: inputs read once, gradients written once, the sum reduced in the same pass)
    gives the loss and each leaf's gradient, set as its ``.grad`` (as the engine's
    AccumulateGrad sets a fresh gradient). ``t`` becomes a plain tensor with its
    ``grad_fn``, released as after a backward (a second ``backward()`` raises torch's
    error), or kept with ``retain_graph=True`` (a second backward then runs the region's
    backward kernel and accumulates). Returns False otherwise (the ordinary backward then
    runs; the region is computed, as any flush, only in the rare case where its Function
    found nothing to differentiate)."""
    d = t.__dict__
    region, n, summed, _ = d["_lz"]
    if not summed or region.done or not region.grad or not d.get("_requires_grad") or \
            _function._fw_enabled or _anomaly_enabled():
        return False
    for _, ref, _ in region.refs:
        o = ref()
        if o is not None and o is not t and o.__class__ is _Pending:
            return False  # another output: the ordinary flush and backward
    for x in region.tensors:
        if x._requires_grad and not _plain_leaf(x):
            return False
    plan = flush(region, fast=True, released=not retain_graph)
    if plan is None or plan.grads is None:  # computed as an ordinary flush: the engine runs
        return False
    for x, g in zip(plan.grad_inputs, plan.grads):
        x._grad = Tensor._make(g)
    if not retain_graph:
        t.grad_fn._release()
    stats["fast_backwards"] += 1
    return True


def _anomaly_enabled() -> bool:
    from .autograd import anomaly_mode
    return anomaly_mode._mode.enabled


def _compute(region, fast=False, released=False):
    outs, objs, reduce = [], [], []
    for n, ref, summed in region.refs:
        t = ref()
        if t is not None and t.__class__ is _Pending:
            outs.append(n)
            objs.append(t)
            reduce.append(summed)
    if not outs:
        return None
    nodes = region.nodes
    live, stack = set(), list(outs)
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(nodes[n][2])
    order = sorted(live)
    pos = {n: i for i, n in enumerate(order)}
    key = [region.dtype.char]
    inputs, consts = [], []
    for n in order:
        kind, op, args, extra = nodes[n]
        if op == "input":
            inputs.append(extra)
        elif op == "const":
            consts.append(region.consts[extra])
        key.append((kind, op, tuple([pos[a] for a in args])))
    key.append(tuple([(pos[n], r) for n, r in zip(outs, reduce)]))
    key = tuple(key)
    graph = _graphs.get(key)
    if graph is None:
        graph = _build_graph(key)
        if len(_graphs) > 1024:
            _graphs.clear()
        _graphs[key] = graph
    for j in inputs:
        counter, version = region.versions[j]
        if counter.value != version:
            # gpugrad's in-place ops compute the chains reading a tensor before writing it
            # (_before_write); this write went around them (an optimizer's update, a raw
            # array write) or came from another thread: the values read are gone.
            t = region.tensors[j]
            raise _function.InplaceError(
                f"fused elementwise chain ({_op_names(nodes, order)}): an input "
                f"[{t.dtype.name} {list(t.shape)}], which is {_which(t)}, was modified in "
                f"place (version {counter.value}; expected {version}) after an elementwise "
                "op read it and before that op's result was used, by a write that does not "
                "go through gpugrad's in-place ops (an optimizer step, a raw array write) "
                "or from another thread; inside gpugrad.compile elementwise results are "
                "computed when first used. Use the result before modifying its inputs in "
                "place (or clone the input), or compile with fuse=False.")
    plan = _Plan(graph, [region.arrays[j] for j in inputs], consts, objs,
                 [region.rg.get(n, False) for n in outs], [nodes[n] for n in order], pos,
                 key[-1])
    plan.fast = fast
    if region.grad and not released:
        plan.checks = _eager_saved(region, key, order, outs, objs, reduce, inputs)
        plan.names = [("MeanBackward0" if n in region.means else "SumBackward0") if r
                      else _EAGER_NAMES[nodes[n][1]] for n, r in zip(outs, reduce)]
    tensors = [region.tensors[j] for j in inputs]
    prev = _state.enabled
    _state.enabled = region.grad
    try:
        _region_fn().apply(plan, *tensors)
    finally:
        _state.enabled = prev
    stats["regions"] += 1
    if plan.ctx is not None and plan.ctx._saved and not released:  # inputs are watched
        _watch(plan.ctx)
    for t, rg in zip(objs, plan.rg):
        if not rg and t.__dict__.get("grad_fn") is not None:  # independent of every input
            t.grad_fn, t._requires_grad = None, False        # that requires grad: as eager
    if plan.grads is not None:
        plan.grad_inputs = [tensors[i] for i in plan.wrt]
    return plan


def _build_graph(key):
    g = _fusion.FusedGraph()
    for kind, op, args in key[1:-1]:
        if op == "input":
            g.input(kind)
        elif op == "const":
            g.const(0.0)  # its value is a kernel parameter
        else:
            g.op(op, *args)
    for n, summed in key[-1]:
        g.output(n, "sum" if summed else None)
    return g


class _Plan:
    """What a flush hands to the region's Function: the graph, input arrays, constants, the
    pending outputs, and the pruned nodes (to replay the chain eagerly for double backward).
    ``fast``: compute the gradients of the one summed output too (``_fast_backward``), into
    ``grads`` (one per input index of ``wrt``; ``grad_inputs``: those input tensors)."""

    __slots__ = ("graph", "arrays", "consts", "outs", "rg", "nodes", "pos", "out_pos",
                 "fast", "grads", "wrt", "grad_inputs", "checks", "names", "ctx")

    def __init__(self, graph, arrays, consts, outs, rg, nodes, pos, out_pos) -> None:
        self.graph, self.arrays, self.consts, self.outs = graph, arrays, consts, outs
        self.rg, self.nodes, self.pos, self.out_pos = rg, nodes, pos, out_pos
        self.fast, self.grads, self.wrt, self.grad_inputs = False, None, (), ()
        # what eager would have saved (_eager_saved), each output's eager node name, and
        # the region's node (ctx) once its Function ran
        self.checks, self.names, self.ctx = (), (), None


_REGION_FN = []


def _region_fn():
    """The Function class of a flushed region (made on first use: autograd imports late)."""
    if _REGION_FN:
        return _REGION_FN[0]
    from .autograd.function import Function

    class FusedRegion(Function):
        """A fused elementwise chain: forward and backward, one generated kernel each."""

        @staticmethod
        def forward(ctx, plan, *inputs):
            graph, arrays, consts = plan.graph, plan.arrays, plan.consts
            need = ctx.needs_input_grad[1:]
            wrt = tuple(i for i, (nd, a) in enumerate(zip(need, arrays))
                        if nd and a.dtype != np.bool_)
            ctx.vg = None
            if plan.fast and wrt and len(plan.out_pos) == 1 and plan.out_pos[0][1]:
                # backward() of this loss, now (_fast_backward): its value and the inputs'
                # gradients from ONE kernel; the engine does not run. ctx.vg stays None: a
                # second backward (retain_graph=True) runs the backward kernel.
                res = graph.program("value_and_grad", wrt).reduce_call(*arrays, *consts)
                plan.grads = [_fusion._sum_to(r, arrays[i].shape)
                              for i, r in zip(wrt, res[1:])]
                plan.wrt = wrt
                res = res[:1]
            elif wrt and arrays[0].__class__ is np.ndarray and len(plan.out_pos) == 1 and \
                    plan.out_pos[0][1]:
                # A loss (one summed output) on NumPy, which is bound by computation, not
                # memory: its gradient comes from the forward's own pass (one kernel for
                # value and gradient), instead of recomputing the chain in backward (which a
                # GPU, bound by memory, prefers).
                res = graph.program("value_and_grad", wrt)(*arrays, *consts)
                ctx.vg = [_fusion._sum_to(r, arrays[i].shape) for i, r in zip(wrt, res[1:])]
                res = res[:1]
            else:
                res = graph.program("forward")(*arrays, *consts)
            stats["forward_launches"] += 1
            for t, r in zip(plan.outs, res):
                _materialize(t, r)
            if wrt:
                ctx.plan_ = (graph, consts, [a.shape for a in arrays], plan.nodes, plan.pos,
                             plan.out_pos, wrt)
                ctx.save_for_backward(*inputs)
                ctx.checks_, ctx.names_ = plan.checks, plan.names
                ctx.copied_ = set()  # slots given a copy by _before_write
                # None (not zeros) for an output no gradient reaches: eager would not run
                # the ops only it needs, nor check what they saved (_check_saved)
                ctx.set_materialize_grads(False)
                plan.ctx = ctx
            outs = tuple(plan.outs)
            plan.outs = None  # the node must not keep its outputs alive
            return outs

        @staticmethod
        def backward(ctx, *gys):
            graph, consts, shapes, nodes, pos, out_pos, wrt = ctx.plan_
            if all(g is None for g in gys):
                return (None,) * (len(shapes) + 1)
            vg = ctx.vg if not _state.enabled else None
            reached = None  # the region nodes whose eager ops run: all, unless...
            if any(g is None for g in gys):  # (not `None in gys`: that compares tensors)
                reached = _reached(ctx, gys)
                gys = [g if g is not None else _function._zeros(ctx._output_meta[i])
                       for i, g in enumerate(gys)]
            # What eager would have raised first; then the inputs, unless vg has it all
            _check_saved(ctx, reached, vg is None)
            grads = _region_backward(ctx, gys, vg)
            if reached is not None:  # no gradient for an input only unreached outputs read
                slot = 0
                for n, p in sorted(pos.items(), key=lambda item: item[1]):
                    if nodes[p][1] == "input":
                        if n not in reached:
                            grads[slot] = None
                        slot += 1
            return (None, *grads)

    _REGION_FN.append(FusedRegion)
    return FusedRegion


def _region_backward(ctx, gys, vg):
    """The gradients of the inputs of fused node ``ctx`` (a list, one per input): from the
    forward's own pass (``vg``), the chain replayed eagerly (``create_graph``), or the
    backward kernel."""
    graph, consts, shapes, nodes, pos, out_pos, wrt = ctx.plan_
    grads = [None] * len(shapes)
    if vg is not None:
        ctx.vg = None  # given away once: the engine may sum into them
        gy = gys[0]._data
        for i, r in zip(wrt, vg):
            grads[i] = Tensor._make(r if gy == 1 else r * gy)
        return grads
    inputs = ctx.saved_tensors
    if _state.enabled:  # create_graph=True: differentiate the chain replayed eagerly
        return list(_replay_backward(nodes, pos, out_pos, consts, inputs, gys,
                                     ctx.needs_input_grad[1:]))
    res = graph.program("backward", wrt)(*[t._data for t in inputs], *consts,
                                         *[g._data for g in gys])
    stats["backward_launches"] += 1
    for i, r in zip(wrt, res):
        grads[i] = Tensor._make(_fusion._sum_to(r, shapes[i]))
    return grads


def _replay_backward(nodes, pos, out_pos, consts, inputs, gys, need):
    """Gradients of the inputs, recorded (create_graph=True): the chain recomputed eagerly
    from the inputs with the ordinary ops, then differentiated by autograd."""
    from .autograd import grad as _grad
    from .ops import elementwise as E
    fns = {"add": lambda a, b: E.Add.apply(a, b, 1), "sub": lambda a, b: E.Sub.apply(a, b, 1),
           "mul": E.Mul.apply, "div": E.Div.apply, "pow": E.Pow.apply, "where": E.Where.apply}
    st, _tls.st = getattr(_tls, "st", None), None  # eager ops, not lazy ones
    try:
        vals, ci, ii = [], 0, 0
        for kind, op, args, extra in nodes:
            if op == "input":
                vals.append(inputs[ii])
                ii += 1
            elif op == "const":
                vals.append(consts[ci])
                ci += 1
            elif op in fns:
                vals.append(fns[op](*[vals[pos[a]] for a in args]))
            else:
                vals.append(getattr(E, op.capitalize()).apply(*[vals[pos[a]] for a in args]))
        outs = [vals[j].sum() if summed else vals[j] for j, summed in out_pos]
        wrt = [t for t, n in zip(inputs, need) if n]
        got = _grad(outs, wrt, gys, create_graph=True, allow_unused=True)
    finally:
        _tls.st = st
    it = iter(got)
    return tuple(next(it) if n else None for n in need)


# ---- in-place writes: eager's semantics -------------------------------------------------------
# A fused region saves its inputs (its backward recomputes the chain from them) where the eager
# ops save what each one's backward reads, often its result (exp, tanh, sigmoid). So that an
# in-place write does to a compiled step exactly what it does to eager code:
#
# - before gpugrad's in-place ops write a tensor (they all pass ops.inplace.check_inplace,
#   which fusing() wraps), the chains of the thread that read it are computed, and a fused
#   node that still needs it for its backward gets a copy of its current value (as torch's
#   in-place ops keep the original of their own input: ops.inplace._save_original);
# - a fused node remembers the version of what the eager ops would have saved (_eager_saved)
#   and checks it first in its backward (_check_saved): InplaceError with eager's message,
#   where eager raises it, and only there.
#
# A write that goes around gpugrad's in-place ops (an optimizer's update, a raw array write,
# another thread's, or one after fusing() ended) to an input a fused chain still needs raises
# InplaceError too, naming the tensor and the chain: at the chain's flush or its backward.
# One difference remains: a region is one node, so an output no gradient reaches still links
# it to the inputs of its chain, and the engine runs the nodes behind those (with zeros), as
# eager would not: one of them whose saved tensor was modified raises where eager does not.

#: what the eager Function of each op saves for backward (gpugrad/ops/elementwise.py): its
#: result ("out") or its arguments ("a", "b"); "a?" only when the other argument requires
#: grad (Mul and Div save only what the wanted gradients read). Numbers are never saved.
_SAVES = {"add": (), "sub": (), "neg": (), "mul": ("a?", "b?"), "div": ("a?", "b"),
          "pow": ("a",), "exp": ("out",), "tanh": ("out",), "sigmoid": ("out",),
          "sqrt": ("out",), "relu": ("out",), "log": ("a",), "sin": ("a",), "cos": ("a",),
          "where": ("a",)}
_EAGER_NAMES = {op: f"{name}Backward0" for name, op in _fusion.FUNCTION_OPS.items()}


def _eager_saved(region, key, order, outs, objs, reduce, inputs):
    """The tensors the eager ops of ``region`` would have saved that code can still write:
    its inputs and its live outputs (a temporary that is gone cannot be written). A list,
    in op order, of (node, eager node name, items); an item is [version counter, version
    when saved, a reference to the tensor (weak; made strong by :func:`_before_write` when
    it is written, to describe it as eager would), saved as its op's own result, dtype,
    shape, the node's saved slot of an input or None]. Which ones depends only on the
    region's structure (``key``) and on which inputs require grad: cached."""
    tensors = region.tensors
    rgs = tuple([tensors[j]._requires_grad for j in inputs])
    spec = _saves_cache.get((key, rgs))
    if spec is None:
        if len(_saves_cache) > 1024:
            _saves_cache.clear()
        spec = _saves_cache[(key, rgs)] = _saves_spec(region, order, inputs)
    if not spec:
        return ()
    live = {n: t for n, t, r in zip(outs, objs, reduce) if not r}
    checks = []
    for p, name, saved in spec:
        items = []
        for ap, own, slot in saved:
            a = order[ap]
            if slot is not None:
                j = inputs[slot]
                t = tensors[j]
                counter, version = region.versions[j]
                dtype, shape = t._data.dtype, t._data.shape
            else:
                t = live.get(a)
                if t is None:  # a temporary, gone: nothing can write it
                    continue
                counter = t._version
                version = counter.value
                dtype, shape = region.dtype, t.__dict__["_lz"][3]  # (still pending)
            items.append([counter, version, weakref.ref(t), own, dtype, shape, slot])
        if items:
            checks.append((order[p], name, items))
    return checks


_saves_cache: dict = {}  # (structure, inputs' requires_grad) -> _saves_spec


def _saves_spec(region, order, inputs):
    """What :func:`_eager_saved` looks for, by positions in ``order``: (op's position, eager
    node name, ((saved node's position, saved as its op's own result, the input's slot or
    None), ...)), for each op whose eager Function records a node and saves something."""
    nodes, rg, tensors = region.nodes, region.rg, region.tensors
    pos = {n: i for i, n in enumerate(order)}
    slot_of = {j: i for i, j in enumerate(inputs)}
    spec = []
    for n in order:
        op, args = nodes[n][1], nodes[n][2]
        saves = _SAVES.get(op)
        if not saves or not rg.get(n):  # saves nothing, or eager records no node
            continue
        saved = []
        for s in saves:
            if s == "out":
                a = n
            else:
                i = "ab".index(s[0])
                a = args[i]
                if s[-1] == "?":
                    other = nodes[args[1 - i]]
                    if not (rg.get(args[1 - i]) if other[1] != "input"
                            else tensors[other[3]]._requires_grad):
                        continue
            aop, extra = nodes[a][1], nodes[a][3]
            if aop != "const":
                saved.append((pos[a], s == "out", slot_of[extra] if aop == "input" else None))
        if saved:
            spec.append((pos[n], _EAGER_NAMES[op], tuple(saved)))
    return tuple(spec)


def _check_saved(ctx, reached, inputs_read) -> None:
    """Raise InplaceError as eager would, before the backward of fused node ``ctx``: first
    for what eager's ops would have saved (in the order eager runs them: the last op first;
    only the ops that run, ``reached`` (:func:`_reached`; None: all), those whose result
    leads to an output with a gradient), then, when the backward reads them
    (``inputs_read``), for the inputs it saved, changed by a write that went around
    gpugrad's in-place ops (see the section comment)."""
    checks, saved = ctx.checks_, ctx._saved
    if saved is None:  # released: saved_tensors raises torch's error, as eager's would
        return
    if checks:
        for n, name, items in reversed(checks):
            for counter, version, ref, own, dtype, shape, slot in items:
                if counter.value == version:
                    continue
                if slot is not None and saved[slot].version_counter is not counter and \
                        slot not in ctx.copied_:
                    # this node is the in-place op's own, which kept the original of its
                    # input (ops.inplace._save_original), as eager's node does
                    continue
                if reached is not None and n not in reached:
                    continue
                t = ref()
                if own:
                    which = f"output 0 of {name}"
                else:
                    which = _which(t) if t is not None else "an input of the chain"
                    if t is not None:
                        dtype = t.dtype.name
                raise _function.InplaceError(
                    "one of the variables needed for gradient computation has been modified "
                    f"by an inplace operation: [{dtype} {list(shape)}], which is {which}, is at "
                    f"version {counter.value}; expected version {version} instead. Hint: do "
                    "not modify it in place (use an out-of-place op, or .clone() it before "
                    f"modifying), or call its in-place op before it is used by {name}.")
    if not inputs_read:
        return
    for s in saved:
        if s is not None and s.version_counter.value != s.version:
            t = s.tensor
            nodes = ctx.plan_[3]
            raise _function.InplaceError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{t.dtype.name} {list(t.shape)}], which is {_which(t)}, "
                f"is at version {s.version_counter.value}; expected version {s.version} "
                f"instead. It is an input of a fused elementwise chain "
                f"({_op_names(nodes, None)}), whose backward recomputes the chain from its "
                "inputs, and it was written after the chain read it by a write that does not "
                "go through gpugrad's in-place ops (an optimizer step, a raw array write), "
                "or outside gpugrad.compile. Hint: do not modify it before backward (or "
                ".clone() it before modifying), or compile with fuse=False.")


def _reached(ctx, gys) -> set:
    """The region nodes whose eager ops backward would run: those an output with a
    gradient depends on."""
    nodes, pos, out_pos = ctx.plan_[3], ctx.plan_[4], ctx.plan_[5]
    at = {p: n for n, p in pos.items()}  # position -> region node
    stack = [at[p] for (p, _), g in zip(out_pos, gys) if g is not None]
    seen = set()
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(nodes[pos[n]][2])
    return seen


def _which(t) -> str:
    """``t`` as eager's InplaceError describes it: a leaf, or the output of its node (for a
    fused node, the eager op that made that output)."""
    g = t.grad_fn
    if g is None:
        return "a leaf tensor"
    names = getattr(g, "names_", None) if isinstance(g, _region_fn()._backward_cls) else None
    if names:
        return f"output 0 of {names[t._output_nr]}"
    return f"output {t._output_nr} of {g.name()}"


def _op_names(nodes, order) -> str:
    """The ops of a chain, for messages: ``exp, mul``."""
    ops = []
    for node in (nodes if order is None else [nodes[n] for n in order]):
        if node[1] not in ("input", "const") and node[1] not in ops:
            ops.append(node[1])
    return ", ".join(ops)


# Live fused nodes by the version counters of the tensors they saved (the slot's index) or
# whose eager saving they check (the _eager_saved item): (counter, weak reference to the
# node, slot or item); the counter object is held, so its id is not reused. And the saved
# slots again by the memory they read (the id of its root array, kept alive by the slot):
# a write through another tensor over it (``.data``) is seen too.
_watched: dict = {}
_watched_memory: dict = {}
_SWEEP_AT = 256  # entries at least before the freed or released ones are swept
_watch_size = [0, _SWEEP_AT]  # entries now, and when to sweep next
_watch_lock = threading.Lock()


def _watch(ctx) -> None:
    """Watch what fused node ``ctx`` saved or checks (see :func:`_before_write`)."""
    if _watch_size[0] > _watch_size[1]:  # entries of freed or released nodes: forgotten
        _sweep()
    ref = weakref.ref(ctx)
    with _watch_lock:
        for i, s in enumerate(ctx._saved):
            if s is not None:
                e = (s.version_counter, ref, i)
                _watched.setdefault(id(s.version_counter), []).append(e)
                _watched_memory.setdefault(id(_root(s.tensor._data)), []).append(e)
                _watch_size[0] += 2
        for _, _, items in ctx.checks_:
            for item in items:
                if not item[3]:  # saved as an argument: eager names it by its history
                    _watched.setdefault(id(item[0]), []).append((item[0], ref, item))
                    _watch_size[0] += 1


def _live(entry) -> bool:
    counter, ref, slot = entry
    node = ref()
    if node is None or node._saved is None:
        return False
    if slot.__class__ is list:
        return True
    s = node._saved[slot]
    return s is not None and s.version_counter is counter


def _sweep() -> None:
    """Forget the nodes freed or released (their backward ran): nothing to protect."""
    with _watch_lock:
        size = 0
        for watched in (_watched, _watched_memory):
            for key, entries in list(watched.items()):
                keep = [e for e in entries if _live(e)]
                if keep:
                    watched[key] = keep
                    size += len(keep)
                else:
                    del watched[key]
        # the next sweep after as many new entries again: amortized O(1) per entry
        _watch_size[:] = [size, max(_SWEEP_AT, 2 * size)]


def _root(a):
    """The array that owns the memory of view ``a`` (as ops._views._root)."""
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def _before_write(t) -> None:
    """Called (while fusing) by every in-place op of gpugrad before it writes ``t``: the
    thread's pending chains that read ``t``'s memory are computed first, with the values
    they read (as eager computed them), and each live fused node that saved ``t`` (or a
    tensor over its memory: a view, its base, ``.data``) keeps a copy of the current value
    instead, for its backward (ops.inplace._save_original does this for the in-place op's
    own node). Eager's own InplaceError then comes from :func:`_check_saved`."""
    v = t._version
    root = None
    st = getattr(_tls, "st", None)
    if st is not None and st.regions:
        for region in list(st.regions.values()):
            if region.done:
                continue
            reads = False
            for counter, _ in region.versions:
                if counter is v:
                    reads = True
                    break
            if not reads:  # another tensor over the same memory
                if root is None:
                    root = _root(t._data)
                reads = any(_root(a) is root for a in region.arrays)
            if reads:
                flush(region)
    if not _watched and not _watched_memory:
        return
    if root is None:
        root = _root(t._data)
    with _watch_lock:
        entries = _watched.pop(id(v), []) + _watched_memory.pop(id(root), [])
    for e in entries:
        if not _live(e):
            continue
        if e[2].__class__ is list:  # checked as eager would: hold it, to describe it
            if e[0] is v:
                held = e[2][2]()
                if held is not None:
                    e[2][2] = _holder(held)
            continue
        node = e[1]()
        s = node._saved[e[2]]
        if s.version_counter.value != s.version:
            continue  # written before, around the in-place ops: _check_saved says so
        old = s.tensor
        if _root(old._data) is not root and old._version is not v:
            continue  # (an id reused by another array)
        copy = Tensor._make(old._data.copy())
        copy.grad_fn, copy._output_nr = old.grad_fn, old._output_nr
        copy._requires_grad = old._requires_grad
        s.tensor, s.version_counter, s.version = copy, copy._version, 0
        node.copied_.add(e[2])


def _holder(t):
    return lambda: t


def _check_inplace(t, op: str) -> None:
    """``ops.inplace.check_inplace`` while fusing: its checks, then :func:`_before_write`."""
    _check_inplace_orig[0](t, op)
    _before_write(t)


# ops.inplace.check_inplace (wrapped by _check_inplace while fusing) and ops.inplace
_check_inplace_orig = []
