"""The libraries a run compares ("peers"): gpugrad and PyTorch, each on the run's device.

A workload is ONE program written against a module ``m`` (``m.tensor``, ``m.no_grad``,
operators and methods); a Peer supplies the module, the device, a clock and a peak-memory
probe. PyTorch is optional: when it does not import (or lacks the device) its Peer is kept,
unavailable, with the reason, and every ratio reads "n/a".

To grow the comparison (issue 7: gpugrad captured in a CUDA graph, ``torch.cuda.graph``,
``torch.compile``, a hand-written NumPy floor), add a Peer whose ``wrap`` turns an eager step
into its variant, and list it in ``discover``; results are keyed by ``Peer.key``.
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
    #: the workloads this peer runs (None: all of them)
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

    def describe(self) -> dict:
        return {"key": self.key, "label": self.label, "version": self.version,
                "device": self.device, "available": self.available, "reason": self.reason,
                "clock": self.clock.name if self.available else None}

    # -- tensors --------------------------------------------------------------------
    def tensor(self, array: np.ndarray, requires_grad: bool = False):
        """A tensor on this peer's device holding a copy of ``array`` (same bits in both)."""
        return self.mod.tensor(array, device=self.device, requires_grad=requires_grad)

    def wrap(self, step: Callable[[], object]) -> Callable[[], object]:
        """The callable the clock times (eager peers: the step itself)."""
        return step

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


def _gpugrad_peer(device: str) -> Peer:
    import gpugrad
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


def _torch_peer(device: str) -> Peer:
    try:
        torch = importlib.import_module("torch")
    except Exception as e:
        return TorchPeer(None, device, reason=f"torch does not import ({type(e).__name__})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        return TorchPeer(torch, device, reason="this torch build has no CUDA device")
    if device.startswith("cuda"):
        # Like with like: CuPy's matmul is full fp32 (no TF32) unless CUPY_TF32=1.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return TorchPeer(torch, device)


#: The peers of a run, in column order. The first is the subject, the second the reference
#: that ratios are taken against; the floor comes last.
PEER_FACTORIES = [_gpugrad_peer, _torch_peer, _floor_peer]


def discover(device: str, with_torch: bool = True, with_floor: bool = True) -> list[Peer]:
    peers = [f(device) for f in PEER_FACTORIES]
    if not with_floor:
        peers = [p for p in peers if p.key != "floor"]
    if not with_torch:
        peers = [p if p.key != "torch" else TorchPeer(None, device, reason="--no-torch")
                 for p in peers]
    return peers
