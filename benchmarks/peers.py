"""The libraries a run compares ("peers"): gpugrad and PyTorch, each on the run's device.

A workload is ONE program written against a module ``m`` (``m.tensor``, ``m.no_grad``,
operators and methods); a Peer supplies the module, the device, a clock and a peak-memory
probe. PyTorch is optional: when it does not import (or lacks the device) its Peer is kept,
unavailable, with the reason, and every ratio reads "n/a".

The peers (column order): gpugrad eager, PyTorch eager, ``gpugrad.compile`` of the step,
``torch.cuda.graph`` capture of the step (CUDA only), ``torch.compile`` (CUDA by default, CPU
with ``--torch-compile``), and the hand-written floor (W1). A variant peer keeps its library's
module and turns the eager step into its variant in ``wrap`` (or ``wrap_grad``, for a step
that torch.compile takes in functional form); ``workloads`` says what it runs. Results are
keyed by ``Peer.key``.
"""
from __future__ import annotations

import gc
import contextlib
import importlib
import os
import sys
import tracemalloc
from typing import Callable

import numpy as np

from .timing import Clock, EventClock


class Unavailable(Exception):
    """This peer cannot produce this measurement; the message says why (shown as n/a)."""


class Peer:
    key = "?"
    label = "?"
    #: the workloads ("W1") or cases ("W2.chain") this peer runs (None: all of them)
    workloads: frozenset | None = None

    def __init__(self, mod, device: str, reason: str | None = None) -> None:
        self.mod, self.device, self.reason = mod, device, reason
        self.is_cuda = device.startswith("cuda")
        self._clock: Clock | None = None

    # -- identity -------------------------------------------------------------------
    @property
    def available(self) -> bool:
        return self.mod is not None and self.reason is None

    @property
    def version(self) -> str | None:
        return getattr(self.mod, "__version__", None) if self.mod is not None else None

    def runs(self, workload: str, case_id: str) -> bool:
        """Whether this peer runs the case (by its workload or its own id)."""
        return self.workloads is None or workload in self.workloads or case_id in self.workloads

    def describe(self) -> dict:
        return {"key": self.key, "label": self.label, "version": self.version,
                "device": self.device, "available": self.available, "reason": self.reason,
                "runs": None if self.workloads is None else sorted(self.workloads),
                "clock": self.clock.name if self.available else None}

    # -- tensors --------------------------------------------------------------------
    def tensor(self, array: np.ndarray, requires_grad: bool = False):
        """A tensor on this peer's device holding a copy of ``array`` (same bits in both)."""
        return self.mod.tensor(array, device=self.device, requires_grad=requires_grad)

    def wrap(self, step: Callable[[], object]) -> Callable[[], object]:
        """The callable the clock times (eager peers: the step itself)."""
        return step

    def wrap_grad(self, step: Callable[[], object], loss_fn: Callable, params: list,
                  args: tuple = (), lr: float | None = None) -> Callable[[], object]:
        """A gradient step in the form this peer runs best. ``step`` is the eager step:
        ``loss_fn(params, *args)``, ``backward()``, then with ``lr`` an SGD update under
        ``no_grad`` and ``p.grad = None``, without ``lr`` the gradients left in ``p.grad``;
        it returns the loss. Eager and captured peers wrap
        ``step`` itself; torch.compile takes the functional form (``TorchCompilePeer``)."""
        return self.wrap(step)

    # -- device ---------------------------------------------------------------------
    def sync(self) -> None:
        if self.is_cuda:
            self.mod.cuda.synchronize()

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            event = getattr(self.mod.cuda, "Event", None) if self.is_cuda else None
            if event is not None:
                self._clock = EventClock(self.sync, event)
            else:
                self._clock = Clock(self.sync if self.is_cuda else None)
        return self._clock

    def release(self) -> None:
        """Between workloads: collect garbage and hand cached device blocks back, so that one
        workload's leftovers neither count in the next one's memory nor crowd it out."""
        gc.collect()
        if self.is_cuda:
            self.sync()
            empty = getattr(self.mod.cuda, "empty_cache", None)
            if empty is not None:
                empty()

    # -- memory ---------------------------------------------------------------------
    def peak_memory(self, step: Callable[[], object], live_bytes: int) -> tuple[int, dict]:
        """Peak bytes held by this library during one call of ``step``; ``live_bytes`` is what
        the caller knows to be live before it (parameters, batch). Returns (bytes, details)."""
        if self.is_cuda:
            return self._peak_cuda(step)
        return self._peak_cpu(step, live_bytes)

    def _peak_cuda(self, step) -> tuple[int, dict]:
        cuda = self.mod.cuda
        names = ("reset_peak_memory_stats", "max_memory_allocated", "memory_allocated")
        missing = [n for n in names if not hasattr(cuda, n)]
        if missing:
            raise Unavailable(f"{self.mod.__name__}.cuda lacks {', '.join(missing)}")
        gc.collect()
        self.sync()
        cuda.reset_peak_memory_stats()
        before = cuda.memory_allocated()
        step()
        self.sync()
        peak = cuda.max_memory_allocated()
        return peak, {"method": f"{self.mod.__name__}.cuda.max_memory_allocated after "
                                f"reset_peak_memory_stats, one step",
                      "allocated_before_step": before, "step_extra": peak - before}

    def _peak_cpu(self, step, live_bytes) -> tuple[int, dict]:
        raise Unavailable("no CPU memory probe for this library")


class GpugradPeer(Peer):
    key, label = "gpugrad", "gpugrad"

    def _peak_cpu(self, step, live_bytes):
        # NumPy reports its data buffers to tracemalloc, so the traced peak during the step is
        # the step's own transient memory (plus a few KB of Python objects: nodes, Tensors).
        gc.collect()
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            current0 = tracemalloc.get_traced_memory()[0]
            step()
            peak = tracemalloc.get_traced_memory()[1] - current0
        finally:
            if started:
                tracemalloc.stop()
        return live_bytes + peak, {
            "method": "parameters+batch (nbytes) + tracemalloc peak during one step "
                      "(NumPy buffers are traced)",
            "allocated_before_step": live_bytes, "step_extra": peak}


class FloorPeer(Peer):
    """W1 written by hand on the device's array module (benchmarks/floor.py): no autograd,
    the cost of the arithmetic alone. It runs W1 only; its other cells read n/a."""
    key, label = "floor", "floor (hand-written)"
    workloads = frozenset({"W1"})

    @property
    def version(self) -> str | None:
        return f"{self.mod.__name__} {self.mod.__version__}" if self.mod is not None else None

    def sync(self) -> None:
        if self.is_cuda:
            self.mod.cuda.Device().synchronize()

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = Clock(self.sync if self.is_cuda else None)
        return self._clock

    def release(self) -> None:
        gc.collect()
        if self.is_cuda:
            self.sync()
            self.mod.get_default_memory_pool().free_all_blocks()


class TorchPeer(Peer):
    key, label = "torch", "PyTorch"

    def _peak_cpu(self, step, live_bytes):
        # PyTorch's CPU allocator is invisible to tracemalloc. Its profiler records every
        # allocation and free (profile_memory=True); replaying them in time order gives the
        # step's transient peak. That reads the profiler's event tree, a private API: if it
        # moves, report n/a rather than a guess.
        try:
            from torch._C._profiler import _EventType
            from torch.profiler import ProfilerActivity, profile
        except Exception as e:  # pragma: no cover - depends on the torch build
            raise Unavailable(f"torch profiler unavailable ({e})") from None
        gc.collect()
        with _stderr_silenced():  # kineto prints "profiler_start/stop" lines on fd 2
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                step()
        try:
            allocs = []
            stack = list(prof.profiler.kineto_results.experimental_event_tree())
            while stack:
                node = stack.pop()
                if node.tag == _EventType.Allocation:
                    f = node.extra_fields
                    if f.device.type == "cpu":
                        allocs.append((node.start_time_ns, f.alloc_size))
                stack.extend(node.children)
        except Exception as e:  # pragma: no cover - private API moved
            raise Unavailable(f"cannot read torch profiler memory events ({e})") from None
        if not allocs:
            raise Unavailable("torch profiler recorded no CPU allocations")
        allocs.sort()
        current = peak = 0
        for _, size in allocs:
            current += size
            peak = max(peak, current)
        return live_bytes + peak, {
            "method": "parameters+batch (nbytes) + peak of torch.profiler's CPU allocation "
                      "events (profile_memory=True) replayed in time order, one step",
            "allocated_before_step": live_bytes, "step_extra": peak}


class GpugradCompilePeer(GpugradPeer):
    """``gpugrad.compile(step)``: after its warm-up calls (2), the whole step (forward,
    backward, SGD update) is captured into one CUDA graph and replayed, its elementwise
    chains fused (the default). Parameters are used by identity (the step closes over them),
    the returned loss is a static output (read before the next call). On a CPU it runs the
    step eagerly every call through the same bookkeeping (cache, static outputs, capture
    flag, fusion)."""
    key, label = "gpugrad_compile", "gpugrad.compile"
    workloads = frozenset({"W1", "W2.chain"})

    def __init__(self, mod, device: str, reason: str | None = None) -> None:
        super().__init__(mod, device, reason)
        self._compiled = None

    def wrap(self, step):
        self._compiled = self.mod.compile(step)
        return self._compiled

    def release(self) -> None:
        if self._compiled is not None:  # free the graph and its memory before the next case
            self._compiled.reset()
            self._compiled = None
        super().release()


class TorchGraphPeer(TorchPeer):
    """The step captured with ``torch.cuda.graph``, after torch's whole-network recipe
    (CUDA semantics, "Whole-network capture"): warm-up iterations on a side stream, then one
    capture of the whole step (forward, ``backward()``, the SGD update under ``no_grad``),
    then ``replay()``. Gradients are None before the capture (W1 sets them to None after each
    update; W2's step sets ``x.grad = None`` first), so ``backward()`` allocates them from
    the graph's private pool and every replay writes the same buffers. Inputs are static
    already (the same tensors every call). As with ``gpugrad.compile``, each warm-up is one
    call (so the losses of the first calls follow the eager ones), the capture happens on the
    call after them and replays at once, and the loss returned is the graph's static
    output. CUDA only."""
    key, label = "torch_graph", "torch.cuda.graph"
    workloads = frozenset({"W1", "W2.chain"})
    #: torch's recipe warms up for 3 iterations before capturing
    warmup = 3

    def wrap(self, step):
        torch = self.mod
        side = torch.cuda.Stream()
        state = {"calls": 0, "graph": None, "out": None}

        def call():
            if state["graph"] is not None:
                state["graph"].replay()
                return state["out"]
            if state["calls"] < self.warmup:
                state["calls"] += 1
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    out = step()
                torch.cuda.current_stream().wait_stream(side)
                return out
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = step()
            state["graph"], state["out"] = graph, out
            graph.replay()  # a capture records the step; run it for this call
            return out
        return call


class TorchCompilePeer(TorchPeer):
    """``torch.compile`` in its functional form: ``torch.compile(torch.func.grad_and_value(
    loss_fn))`` (W2, the form the issue names), and for W1 the same with the SGD update inside
    the compiled function (``p.sub_(lr * g)`` under ``no_grad``, on detached views of the
    parameters, so the model's tensors are updated). Default mode (no CUDA graphs:
    ``torch.cuda.graph`` is its own column). The first call compiles (``first_call_s``).

    Why not ``torch.compile(step)`` of the eager W1 step: dynamo breaks the graph at
    ``backward()`` and at the ``.grad`` updates, and with torch 2.13 on a CPU that compiled
    step's losses leave the eager ones from its third call on (measured); the functional
    form's losses are the eager ones."""
    key, label = "torch_compile", "torch.compile"
    workloads = frozenset({"W1", "W2.chain"})

    def wrap(self, step):
        return self.mod.compile(step)

    def wrap_grad(self, step, loss_fn, params, args=(), lr=None):
        torch = self.mod
        leaves = [p.detach() for p in params]  # the same storage, outside autograd
        grad_and_value = torch.func.grad_and_value(loss_fn)
        if lr is None:
            compiled = torch.compile(grad_and_value)

            def call():
                grads, loss = compiled(leaves, *args)
                for p, g in zip(params, grads):
                    p.grad = g
                return loss
            return call

        def sgd_step(ps, *a):
            grads, loss = grad_and_value(ps, *a)
            with torch.no_grad():
                for p, g in zip(ps, grads):
                    p.sub_(lr * g)
            return loss
        compiled = torch.compile(sgd_step)
        return lambda: compiled(leaves, *args)

    def release(self) -> None:
        # Forget compiled code: each case compiles its own shapes (no recompilation with
        # dynamic shapes because a previous case had other ones).
        try:
            self.mod._dynamo.reset()
        except Exception:  # noqa: BLE001 - a private API; stale caches only cost time
            pass
        super().release()


@contextlib.contextmanager
def _stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block (C++ libraries write to it)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _gpugrad_peer(device: str, tf32: bool = False) -> Peer:
    import gpugrad
    if device.startswith("cuda"):
        # Like with like: torch's flag below gets the same value (default full fp32). With
        # CUDA in use (is_available() checks it), setting the flag also switches CuPy's own
        # float32 matmuls at once: the CUDA floor's follow it too.
        gpugrad.cuda.is_available()
        gpugrad.backends.cuda.matmul.allow_tf32 = tf32
    return GpugradPeer(gpugrad, device)


def _floor_peer(device: str) -> Peer:
    if not device.startswith("cuda"):
        return FloorPeer(np, device)
    try:
        cupy = importlib.import_module("cupy")
    except Exception as e:
        return FloorPeer(None, device, reason=f"cupy does not import ({type(e).__name__})")
    cupy.cuda.Device(int(device.partition(":")[2] or 0)).use()
    return FloorPeer(cupy, device)


def _torch_peer(device: str, tf32: bool = False) -> Peer:
    try:
        torch = importlib.import_module("torch")
    except Exception as e:
        return TorchPeer(None, device, reason=f"torch does not import ({type(e).__name__})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return TorchPeer(torch, device, reason="this torch build has no CUDA device")
    if device.startswith("cuda"):
        # Like with like: gpugrad's flag gets the same value (_gpugrad_peer).
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    return TorchPeer(torch, device)


def _torch_variant(cls, eager: Peer, torch_compile: bool | None) -> Peer:
    """A torch variant peer: unavailable for the eager peer's reason, or its own."""
    if not eager.available:
        return cls(None, eager.device, reason=eager.reason)
    cuda = eager.device.startswith("cuda")
    if cls is TorchGraphPeer and not cuda:
        return cls(eager.mod, eager.device, reason="needs CUDA")
    if cls is TorchCompilePeer:
        if not hasattr(eager.mod, "compile") or not hasattr(eager.mod, "func"):
            return cls(eager.mod, eager.device, reason="this torch has no torch.compile")
        if torch_compile is False:
            return cls(eager.mod, eager.device, reason="--no-torch-compile")
        if torch_compile is None and not cuda:
            return cls(eager.mod, eager.device,
                       reason="on a CPU only with --torch-compile: it needs a C++ compiler "
                              "and compiles for minutes")
    return cls(eager.mod, eager.device)


#: Column order of a run's peers: the subject (gpugrad), the reference that the main table's
#: ratio is taken against (PyTorch eager), the captured/compiled variants, the floor.
PEER_KEYS = ("gpugrad", "torch", "gpugrad_compile", "torch_graph", "torch_compile", "floor")


def discover(device: str, with_torch: bool = True, with_floor: bool = True,
             torch_compile: bool | None = None, eager_only: bool = False,
             tf32: bool = False) -> list[Peer]:
    """The peers of a run, in ``PEER_KEYS`` order. ``torch_compile``: None runs
    torch.compile on CUDA only, True on a CPU too, False nowhere. ``eager_only`` leaves out
    the captured/compiled variants. ``tf32``: CUDA float32 matmuls in TF32 in both libraries
    (``gpugrad.backends.cuda.matmul.allow_tf32`` and torch's), else full fp32 in both."""
    torch = _torch_peer(device, tf32) if with_torch else \
        TorchPeer(None, device, reason="--no-torch")
    peers = [_gpugrad_peer(device, tf32), torch]
    if not eager_only:
        peers += [GpugradCompilePeer(peers[0].mod, device),
                  _torch_variant(TorchGraphPeer, torch, torch_compile),
                  _torch_variant(TorchCompilePeer, torch, torch_compile)]
    if with_floor:
        peers.append(_floor_peer(device))
    return peers
