"""CUDA graphs with torch.cuda's API: ``CUDAGraph``, the ``graph`` context manager and
``make_graphed_callables`` (exposed as ``gpugrad.cuda.*``).

A CUDA graph records the kernels a region queues and replays them with one launch, so the
host cost of a step (Python, op dispatch, one launch per kernel) disappears. The rules are
CUDA's: every array the region reads or writes must stay at the same address (inputs are
copied into static buffers; the blocks allocated during the capture are kept by the graph,
as torch's private graph pool keeps them), and no host synchronisation may happen inside
(``.item()`` and its kin raise ``gpugrad.CaptureSyncError``). Matrix products inside a
capture run on cuBLAS through gpugrad's own handle (``_cublas``), since CuPy refuses cuBLAS
while a stream captures.

``CUDAGraph`` and ``graph`` need CUDA, as in torch (a ``with`` block cannot be replayed
without it). ``make_graphed_callables`` runs on the CPU too: there the "graphs" re-run the
callable eagerly (``_capture.CpuRecorder``), with the same static buffers, outputs and errors.
"""
from __future__ import annotations

from . import _backend, _capture

__all__ = ["CUDAGraph", "graph", "make_graphed_callables", "is_current_stream_capturing",
           "graph_pool_handle"]


def is_current_stream_capturing() -> bool:
    """True while the calling thread captures a CUDA graph (or gpugrad's CPU stand-in of
    one: then ``.item()`` and other host synchronisations raise)."""
    return _capture.is_capturing()


class CUDAGraph:
    """A CUDA graph (torch.cuda.CUDAGraph): ``capture_begin()``/``capture_end()`` around the
    work to record (or ``with gpugrad.cuda.graph(g):``), then ``replay()``."""

    def __init__(self, keep_graph: bool = False) -> None:
        cp = _backend._require_cuda("gpugrad.cuda.CUDAGraph()")
        self._rec = _capture.CudaRecorder("gpugrad.cuda.graph", cp.cuda.runtime.getDevice())

    def capture_begin(self, pool=None, capture_error_mode: str = "global") -> None:
        """Start capturing the calling thread's work on gpugrad's capture side stream.
        ``pool``: another graph's ``pool()``, whose memory this one then shares."""
        if capture_error_mode not in ("global", "thread_local", "relaxed"):
            raise ValueError(f"capture_error_mode must be 'global', 'thread_local' or "
                             f"'relaxed', got {capture_error_mode!r}")
        if self._rec.graph is not None:
            raise RuntimeError("CUDAGraph.capture_begin: this graph was already captured; "
                               "call reset() first or make a new CUDAGraph")
        self._rec.begin(pool)

    def capture_end(self) -> None:
        """Stop capturing; the graph is ready to ``replay``."""
        self._rec.end()

    def replay(self) -> None:
        """Run the captured work again, on the current stream."""
        if self._rec.graph is None:
            raise RuntimeError("CUDAGraph.replay: nothing was captured; capture the work "
                               "first (capture_begin/capture_end or gpugrad.cuda.graph)")
        self._rec.replay()

    def reset(self) -> None:
        """Free the graph and the memory its capture allocated."""
        self._rec.release()

    def pool(self):
        """A handle of this graph's memory, to share with another capture (``pool=``)."""
        return self._rec.keep


def graph_pool_handle() -> list:
    """A fresh memory-pool handle for ``graph(..., pool=)`` / ``capture_begin(pool=)``."""
    return []


class graph:
    """``with gpugrad.cuda.graph(g):`` captures the block into ``g`` (torch.cuda.graph).
    ``stream`` is not supported (gpugrad captures on the graph's own stream)."""

    def __init__(self, cuda_graph: CUDAGraph, pool=None, stream=None,
                 capture_error_mode: str = "global") -> None:
        if stream is not None:
            raise NotImplementedError("gpugrad.cuda.graph(stream=...): gpugrad captures on "
                                      "its own side stream; leave stream=None")
        self.cuda_graph, self.pool, self.mode = cuda_graph, pool, capture_error_mode

    def __enter__(self) -> None:
        from . import cuda
        cuda.synchronize()  # as torch: nothing queued before may land inside the capture
        self.cuda_graph.capture_begin(self.pool, self.mode)

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.cuda_graph._rec.end(ok=False)
            return
        self.cuda_graph.capture_end()


# ---- make_graphed_callables ------------------------------------------------------------------
def _graph_one(fn, params, sample_args, num_warmup_iters, allow_unused_input, what):
    """Capture the forward and the backward of ``fn`` on ``sample_args`` (its static inputs)
    and return a function replaying them, differentiable through a Function."""
    from . import autograd
    from ._tensor import Tensor
    from .autograd import grad_mode
    from .autograd.function import Function

    for i, a in enumerate(sample_args):
        if not isinstance(a, Tensor):
            raise TypeError(f"{what}: sample_args must hold only tensors; argument {i} is a "
                            f"{type(a).__name__}")
    inputs = tuple(sample_args)
    surface = inputs + tuple(params)
    grad_pos = [i for i, t in enumerate(surface) if t.requires_grad]
    dev = inputs[0].device if inputs else (params[0].device if params else
                                           _backend.default_device())

    def run_forward():
        with grad_mode.enable_grad():
            out = fn(*inputs)
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            if not isinstance(o, Tensor):
                raise TypeError(f"{what}: the callable must return tensors, got a "
                                f"{type(o).__name__}")
        return outs, isinstance(out, tuple)

    def run_backward(outs, grad_outputs):
        diff = [(o, g) for o, g in zip(outs, grad_outputs) if o.requires_grad]
        if not diff or not grad_pos:
            return (None,) * len(grad_pos)
        grads = autograd.grad([o for o, _ in diff], [surface[i] for i in grad_pos],
                              [g for _, g in diff], allow_unused=allow_unused_input)
        if not allow_unused_input and any(g is None for g in grads):
            raise RuntimeError(f"{what}: one of the differentiated inputs was not used in "
                               "the graph; pass allow_unused_input=True")
        return grads

    for _ in range(num_warmup_iters):  # as torch: warm up with autograd.grad (no .grad set)
        outs, _tuple = run_forward()
        run_backward(outs, [o.detach() * 0 + 1 for o in outs])

    fwd = _capture.recorder_for(dev, what + " (forward)")
    bwd = _capture.recorder_for(dev, what + " (backward)")
    live = [None]  # the outputs of the latest forward run: the backward differentiates them

    def fwd_body():
        outs, is_tuple = run_forward()
        live[0] = outs
        return tuple(o.detach() for o in outs), is_tuple

    static_out, is_tuple = fwd.capture(fwd_body)
    if not fwd.runs_on_capture:
        fwd.replay()
    static_grad_out = tuple(o.detach().clone() for o in static_out)

    def bwd_body():
        g = run_backward(live[0], static_grad_out)
        return tuple(x.detach() if x is not None else None for x in g)

    bwd.capture(bwd_body)  # bwd.result: the static gradients every backward replay writes
    fwd.result = (static_out, is_tuple)

    class Graphed(Function):
        """Replays the captured forward and backward."""

        @staticmethod
        def forward(ctx, *args):
            for s, a in zip(inputs, args):
                if s is not a:
                    s._data[...] = a._data
            fwd.replay()
            return tuple(o.detach() for o in fwd.result[0])

        @staticmethod
        def backward(ctx, *grads):
            for s, g in zip(static_grad_out, grads):
                s._data[...] = 0 if g is None else g._data
            bwd.replay()
            out = [None] * len(surface)
            for i, g in zip(grad_pos, bwd.result):
                out[i] = None if g is None else g.detach().clone()
            return tuple(out)

    def check(args):
        if len(args) != len(inputs):
            raise TypeError(f"{what}: expected {len(inputs)} arguments (as sample_args), got "
                            f"{len(args)}")
        for i, (s, a) in enumerate(zip(inputs, args)):
            if (not isinstance(a, Tensor) or a._data.shape != s._data.shape
                    or a._data.dtype != s._data.dtype or a.device != s.device
                    or a.requires_grad != s.requires_grad):
                got = (f"{list(a.shape)}, {a.dtype}, {a.device}, requires_grad="
                       f"{a.requires_grad}" if isinstance(a, Tensor) else type(a).__name__)
                raise RuntimeError(
                    f"{what}: argument {i} is {got}, but the graphs were captured for "
                    f"{list(s.shape)}, {s.dtype}, {s.device}, requires_grad={s.requires_grad}; "
                    "graphed callables need inputs like their sample_args (capture another "
                    "one for other shapes)")

    def graphed(*args):
        check(args)
        outs = Graphed.apply(*args, *params)
        return outs if is_tuple else outs[0]

    return graphed


def make_graphed_callables(callables, sample_args, num_warmup_iters: int = 3,
                           allow_unused_input: bool = False, pool=None):
    """Graphed versions of ``callables`` (torch.cuda.make_graphed_callables): each one's
    forward and backward are captured (after ``num_warmup_iters`` warm-up runs on
    ``sample_args``, which become its static inputs) and replayed on every call.

    ``callables`` is a function or Module, or a tuple of them (then ``sample_args`` is a
    tuple of argument tuples). A Module comes back with its ``forward`` graphed (used while
    it is in training mode and grad is enabled, else the original), its parameters' gradients
    flowing to ``.grad`` as usual. Outputs are the graph's static outputs: the next call
    overwrites them. Arguments must match ``sample_args`` in shape, dtype, device and
    requires_grad. On the CPU the callables run eagerly through the same machinery."""
    from .nn.module import Module
    from ._tensor import Tensor

    single = not isinstance(callables, tuple)
    if single:
        callables, sample_args = (callables,), (sample_args,)
    if len(callables) != len(sample_args):
        raise ValueError(f"make_graphed_callables: {len(callables)} callables but "
                         f"{len(sample_args)} sample_args tuples")
    if num_warmup_iters < 1 and _backend.cuda_available():
        raise ValueError("make_graphed_callables: num_warmup_iters must be >= 1 on CUDA")
    results = []
    for fn, args in zip(callables, sample_args):
        args = (args,) if isinstance(args, Tensor) else tuple(args)
        name = getattr(fn, "__qualname__", type(fn).__name__)
        what = f"gpugrad.cuda.make_graphed_callables({name})"
        if isinstance(fn, Module):
            if fn._forward_hooks or fn._forward_pre_hooks:
                raise RuntimeError(f"{what}: modules with forward hooks cannot be graphed "
                                   "(the hooks would not run on replay)")
            params = tuple(p for p in fn.parameters() if p.requires_grad)
            original = fn.forward  # captured and replayed (CPU) unpatched: no recursion
            g = _graph_one(original, params, args, num_warmup_iters, allow_unused_input, what)

            def forward(*a, _g=g, _orig=original, _m=fn, **kw):
                from .autograd import grad_mode
                if _m.training and grad_mode.is_grad_enabled() and not kw:
                    return _g(*a)
                return _orig(*a, **kw)

            object.__setattr__(fn, "forward", forward)
            results.append(fn)
        else:
            results.append(_graph_one(fn, (), args, num_warmup_iters, allow_unused_input,
                                      what))
    return results[0] if single else tuple(results)
