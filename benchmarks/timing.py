"""Timing: device-synchronized clocks, warm-up, repeats, and robust statistics.

Every sample times ONE call of the workload, with the device idle before it and drained after
it, so a sample is the latency of one step as a user sees it (host overhead included, no
overlap with the next call). On a GPU, a CUDA event pair brackets the call when the library
has ``cuda.Event`` (gpugrad gets it with issue 4; guarded here so the suite runs today), else
``perf_counter`` around a synchronize; on the CPU, ``perf_counter``. The first call is timed
on its own and kept apart (``first_call_s``: compilation, allocator growth); the warm-up
calls after it are not recorded. Figures are medians with the inter-quartile range.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable


@dataclass
class Stats:
    """Seconds per call: median, quartiles, extremes, count and the raw samples."""
    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int
    first_call_s: float | None = None
    samples: list[float] = field(default_factory=list, repr=False)

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["iqr"] = self.iqr
        return d


def summarize(samples: list[float], first_call_s: float | None = None) -> Stats:
    """Median and quartiles (inclusive method: defined for two samples and up)."""
    if not samples:
        raise ValueError("no samples")
    s = sorted(samples)
    if len(s) == 1:
        q1 = q3 = s[0]
    else:
        q1, _, q3 = statistics.quantiles(s, n=4, method="inclusive")
    return Stats(median=statistics.median(s), q1=q1, q3=q3, min=s[0], max=s[-1], n=len(s),
                 first_call_s=first_call_s, samples=list(samples))


class Clock:
    """Times one call of ``fn`` in seconds, the device drained before and after."""
    name = "perf_counter"

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync or (lambda: None)

    def time(self, fn: Callable[[], object]) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0


class EventClock(Clock):
    """A CUDA event pair around the call (torch.cuda.Event-like ``event_cls``): the device's
    own timeline, from when the start event is reached to when the end event is."""
    name = "cuda-events"

    def __init__(self, sync: Callable[[], None], event_cls) -> None:
        super().__init__(sync)
        self.start = event_cls(enable_timing=True)
        self.end = event_cls(enable_timing=True)

    def time(self, fn: Callable[[], object]) -> float:
        self.sync()
        self.start.record()
        fn()
        self.end.record()
        self.end.synchronize()
        return self.start.elapsed_time(self.end) / 1e3  # ms -> s


@dataclass
class Budget:
    """How many calls to make. ``repeats`` fixes the count of timed calls; otherwise it is
    ``seconds`` divided by the time of one warm call, kept within [min_repeats, max_repeats].
    Warm-up: up to ``warmup`` calls after the first, stopping early once they took
    ``seconds / 2`` (a slow step on a CPU needs no five warm-ups)."""
    seconds: float = 2.0
    min_repeats: int = 5
    max_repeats: int = 300
    warmup: int = 3
    repeats: int | None = None

    def scaled(self, factor: float) -> "Budget":
        return Budget(self.seconds * factor, self.min_repeats, self.max_repeats, self.warmup,
                      self.repeats)


def measure(fn: Callable[[], object], clock: Clock, budget: Budget) -> Stats:
    """Time ``fn``: a first (cold) call, the warm-up, then the repeats; returns the stats."""
    first = clock.time(fn)
    last, spent = first, 0.0
    for _ in range(budget.warmup):
        if spent >= budget.seconds / 2:
            break
        last = clock.time(fn)
        spent += last
    if budget.repeats is not None:
        n = budget.repeats
    else:
        n = int(budget.seconds / max(last, 1e-9))
        n = max(budget.min_repeats, min(budget.max_repeats, n))
    samples = [clock.time(fn) for _ in range(max(1, n))]
    return summarize(samples, first_call_s=first)


def fmt_seconds(s: float | None) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"
