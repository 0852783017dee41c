"""The workloads: each is one program written against a module ``m`` (gpugrad or torch) and
a plan of cases (sizes) per mode and device.

W1  MLP training step: forward, cross-entropy (log_softmax), backward, SGD; float32.
W2  elementwise chain over N floats: loss = sum(tanh(x*a + b) * sigmoid(x) + x*x), backward
    to x; effective GB/s against the copy bandwidth measured in the same run.
W3  host overhead: 200 elementwise ops on a 16-element tensor, per op.
W4  peak memory of W1's medium step.
K   bandwidth of gpugrad's own elementwise kernels (kernels/) as a fraction of the copy
    bandwidth (gpugrad._kernel_bench), CUDA only.

Every timed case produces seconds per call (see timing.py); the case converts the median to
its unit. Inputs are made with NumPy from fixed seeds and copied into each library, so both
peers compute the same numbers: the suite records each peer's initial loss to show it, and
the losses of the first calls of each peer's step (``first_losses``: warm-up, capture and
first replays of the captured peers), which must follow the eager ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .floor import FloorMLP
from .peers import Peer, Unavailable
from .timing import Budget, Stats, measure

# --------------------------------------------------------------------------------------
# The programs (written once, run with m = gpugrad and m = torch)
# --------------------------------------------------------------------------------------


def mlp_arrays(sizes: list[int], batch: int, seed: int = 0):
    """NumPy float32 parameters [w1, b1, w2, b2, ...] (N(0, 1/fan_in) weights, zero biases),
    an input batch and one-hot targets, all from ``seed``."""
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w = rng.standard_normal((n_in, n_out), dtype=np.float32)
        w *= np.float32(1 / math.sqrt(n_in))
        params += [w, np.zeros(n_out, np.float32)]
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    onehot = np.zeros((batch, sizes[-1]), np.float32)
    onehot[np.arange(batch), rng.integers(0, sizes[-1], batch)] = 1
    return params, x, onehot


def mlp_loss(params, x, onehot):
    """Cross-entropy of a ReLU MLP: -mean over the batch of sum(onehot * log_softmax(h))."""
    h = x
    last = len(params) // 2 - 1
    for i in range(0, len(params), 2):
        h = h @ params[i] + params[i + 1]
        if i // 2 < last:
            h = h.relu()
    return -(h.log_softmax(dim=1) * onehot).sum() * (1.0 / x.shape[0])


LR = 0.01  # W1's SGD learning rate


def mlp_step(m, params, x, onehot, lr: float = LR):
    """One SGD training step; gradients are dropped after the update (set_to_none)."""
    loss = mlp_loss(params, x, onehot)
    loss.backward()
    with m.no_grad():
        for p in params:
            p -= lr * p.grad
            p.grad = None
    return loss


class MLP:
    """W1's model and batch as one peer's tensors."""

    def __init__(self, peer: Peer, sizes: list[int], batch: int, seed: int = 0) -> None:
        params, x, onehot = mlp_arrays(sizes, batch, seed)
        self.m = peer.mod
        self.params = [peer.tensor(p, requires_grad=True) for p in params]
        self.x, self.onehot = peer.tensor(x), peer.tensor(onehot)
        self.live_bytes = sum(a.nbytes for a in params) + x.nbytes + onehot.nbytes

    def loss(self):
        return mlp_loss(self.params, self.x, self.onehot)

    def step(self):
        return mlp_step(self.m, self.params, self.x, self.onehot)


W2_A, W2_B = 0.5, 0.1


def chain_loss(x, a: float = W2_A, b: float = W2_B):
    """W2's loss: sum(tanh(x*a + b) * sigmoid(x) + x*x)."""
    return ((x * a + b).tanh() * x.sigmoid() + x * x).sum()


def chain_step(x):
    x.grad = None
    loss = chain_loss(x)
    loss.backward()
    return loss


def chain_params_loss(params):
    """W2's loss of ``params = [x]``: the signature ``Peer.wrap_grad`` takes."""
    return chain_loss(params[0])


W3_OPS = 200


def host_chain(x, n_ops: int = W3_OPS):
    """``n_ops`` elementwise ops (mul by a scalar, add a tensor, tanh, sigmoid, in turn) on a
    small tensor; the values stay bounded however long the chain."""
    y = x
    for _ in range(n_ops // 4):
        y = ((y * 1.01 + x).tanh()).sigmoid()
    return y


# --------------------------------------------------------------------------------------
# Cases: what to run, at which size, with which unit
# --------------------------------------------------------------------------------------


@dataclass
class Result:
    """One peer's figure for one case (``value`` in the case's unit), or why there is none."""
    value: float | None = None
    lo: float | None = None  # the IQR's ends, in the case's unit
    hi: float | None = None
    stats: Stats | None = None
    extra: dict = field(default_factory=dict)
    reason: str | None = None
    #: n/a by design (this peer does not run this case), not for want of something
    skipped: bool = False

    def to_dict(self) -> dict:
        return {"value": self.value, "iqr": None if self.lo is None else abs(self.hi - self.lo),
                "q1": self.lo, "q3": self.hi, "reason": self.reason, "skipped": self.skipped,
                "extra": self.extra,
                "seconds": None if self.stats is None else self.stats.to_dict()}


@dataclass
class Case:
    id: str                  # "W1.small"
    workload: str            # "W1"
    label: str               # for the table
    unit: str
    run: Callable[[Peer], Result]
    higher_is_better: bool = False
    note: str = ""
    params: dict = field(default_factory=dict)
    #: the keys of the peers that run it (None: every peer whose ``workloads`` include it)
    peers: frozenset | None = None

    def skip_reason(self, peer: Peer) -> str | None:
        """Why ``peer`` does not run this case by design, or None when it does."""
        if not peer.runs(self.workload, self.id):
            return f"runs {', '.join(sorted(peer.workloads))} only"
        if self.peers is not None and peer.key not in self.peers:
            return f"{self.id} is {', '.join(sorted(self.peers))} only"
        return None


def timed(stats: Stats, to_unit: Callable[[float], float]) -> Result:
    a, b = to_unit(stats.q1), to_unit(stats.q3)
    return Result(value=to_unit(stats.median), lo=min(a, b), hi=max(a, b), stats=stats)


#: Calls of each step whose losses are read before timing: covers gpugrad.compile's two
#: warm-up calls, its capture and two replays, and torch.cuda.graph's three warm-ups, its
#: capture and a replay.
FIRST_CALLS = 5


def _scalar(out) -> float:
    return float(out.item()) if hasattr(out, "item") else float(out)


def measure_checked(peer: Peer, fn: Callable[[], object], budget: Budget,
                    first_calls: int = FIRST_CALLS) -> tuple[Stats, dict]:
    """``measure(fn)`` after ``first_calls`` calls from the initial state, each timed by the
    peer's clock and its loss read (a host sync, outside the timed calls): the losses show
    that a captured or compiled step follows the eager one. The first of them is the cold
    call (compile, allocator growth): it becomes ``first_call_s``. Returns the stats and
    ``{"first_losses": [...], "first_calls_s": [...]}``."""
    losses, seconds = [], []
    for _ in range(first_calls):
        box = []
        seconds.append(peer.clock.time(lambda: box.append(fn())))
        losses.append(_scalar(box[0]))
    stats = measure(fn, peer.clock, budget)
    if seconds:
        stats.first_call_s = seconds[0]
    return stats, {"first_losses": losses, "first_calls_s": seconds}


# W1 sizes: name -> (batch, layer sizes)
W1_SIZES = {
    "small": (64, [784, 256, 256, 10]),
    "medium": (512, [1024, 4096, 4096, 1024]),
    "large": (4096, [4096, 4096, 4096, 4096]),
}
W1_TINY = {"small": (8, [16, 8, 8, 4]), "medium": (16, [32, 64, 64, 32]),
           "large": (32, [64, 64, 64, 64])}
W2_N = {"cuda": 2 ** 26, "cpu": 2 ** 22, "tiny": 2 ** 12}


def _arch(batch, sizes) -> str:
    return f"batch {batch}, {'-'.join(map(str, sizes))}"


def w1_case(name: str, batch: int, sizes: list[int], budget: Budget, note: str = "",
            first_calls: int = FIRST_CALLS) -> Case:
    def run(peer: Peer) -> Result:
        if peer.key == "floor":  # the same step without autograd, on the array module
            mlp = FloorMLP(peer.mod, *mlp_arrays(sizes, batch))
            loss0 = float(mlp.loss())
            fn = mlp.step
        else:
            mlp = MLP(peer, sizes, batch)
            with peer.mod.no_grad():
                loss0 = float(mlp.loss().item())
            fn = peer.wrap_grad(mlp.step, mlp_loss, mlp.params, (mlp.x, mlp.onehot),
                                lr=LR)
        stats, extra = measure_checked(peer, fn, budget, first_calls)
        r = timed(stats, lambda s: s * 1e3)
        r.extra["loss_init"] = loss0
        r.extra.update(extra)
        return r
    return Case(f"W1.{name}", "W1", f"W1 MLP step, {name} ({_arch(batch, sizes)})",
                "ms/step", run, note=note, params={"batch": batch, "sizes": sizes})


def w2_cases(n: int, budget: Budget) -> list[Case]:
    nbytes = 2 * 4 * n  # the minimal traffic: read x (or src) once, write grad (or dst) once

    def copy(peer: Peer) -> Result:
        src = peer.tensor(np.random.default_rng(2).standard_normal(n, dtype=np.float32))
        dst = peer.tensor(np.zeros(n, np.float32))

        def step():
            with peer.mod.no_grad():
                dst.copy_(src)
        return timed(measure(peer.wrap(step), peer.clock, budget), lambda s: nbytes / s / 1e9)

    def chain(peer: Peer) -> Result:
        x = peer.tensor(np.random.default_rng(2).standard_normal(n, dtype=np.float32),
                        requires_grad=True)
        with peer.mod.no_grad():
            loss0 = float(chain_loss(x).item())
        fn = peer.wrap_grad(lambda: chain_step(x), chain_params_loss, [x])
        stats, extra = measure_checked(peer, fn, budget)
        r = timed(stats, lambda s: nbytes / s / 1e9)
        r.extra["loss_init"] = loss0
        r.extra.update(extra)
        return r

    size = f"2**{int(math.log2(n))} float32" if n & (n - 1) == 0 else f"{n} float32"
    return [
        Case("W2.copy", "W2", f"W2 copy_ bandwidth, {size} (the ceiling)", "GB/s", copy,
             higher_is_better=True, params={"n": n, "bytes": nbytes},
             note="dst.copy_(src): bytes = 8N (read N floats, write N floats)"),
        Case("W2.chain", "W2", f"W2 elementwise chain fwd+bwd, {size}", "GB/s", chain,
             higher_is_better=True, params={"n": n, "bytes": nbytes},
             note="effective GB/s = 8N / time: the minimal traffic (read x once, write "
                  "x.grad once), whatever the library actually moves"),
    ]


def w3_cases(budget: Budget, n_elems: int = 16) -> list[Case]:
    per_op = lambda s: s / W3_OPS * 1e6  # noqa: E731

    def make(peer: Peer, requires_grad: bool):
        return peer.tensor(np.linspace(-1, 1, n_elems, dtype=np.float32), requires_grad)

    def nograd(peer: Peer) -> Result:
        x = make(peer, False)

        def step():
            with peer.mod.no_grad():
                return host_chain(x)
        return timed(measure(peer.wrap(step), peer.clock, budget), per_op)

    def record(peer: Peer) -> Result:
        x = make(peer, True)
        return timed(measure(peer.wrap(lambda: host_chain(x)), peer.clock, budget), per_op)

    def fwdbwd(peer: Peer) -> Result:
        x = make(peer, True)

        def step():
            x.grad = None
            y = host_chain(x).sum()
            y.backward()
            return y
        return timed(measure(peer.wrap(step), peer.clock, budget), per_op)

    what = f"{W3_OPS} ops on {n_elems} floats"
    return [
        Case("W3.nograd", "W3", f"W3 host overhead, forward under no_grad ({what})", "µs/op",
             nograd, params={"ops": W3_OPS, "n": n_elems}),
        Case("W3.record", "W3", f"W3 host overhead, forward recording ({what})", "µs/op",
             record, params={"ops": W3_OPS, "n": n_elems}),
        Case("W3.fwdbwd", "W3", f"W3 host overhead, forward+backward ({what})", "µs/op",
             fwdbwd, params={"ops": W3_OPS, "n": n_elems},
             note="(forward + sum + backward time) / 200"),
    ]


def w4_case(batch: int, sizes: list[int], name: str = "medium") -> Case:
    def run(peer: Peer) -> Result:
        mlp = MLP(peer, sizes, batch)
        mlp.step()  # warm-up: lazily created state is not the step's memory
        peer.sync()
        peak, extra = peer.peak_memory(mlp.step, mlp.live_bytes)
        extra["live_bytes"] = mlp.live_bytes
        return Result(value=peak / 2 ** 20, extra=extra)
    return Case(f"W4.{name}", "W4", f"W4 peak memory, W1 {name} step ({_arch(batch, sizes)})",
                "MiB", run, params={"batch": batch, "sizes": sizes},
                note="GPU: max_memory_allocated of each library; CPU: see benchmarks/README.md")


#: K's sizes per mode: elements per array, timed launches, warm-up launches, kernels (None:
#: every kernel of kernels/)
K_PLAN = {
    "full": (2 ** 26, 20, 3, None),
    "quick": (2 ** 26, 10, 2, None),
    "tiny": (2 ** 16, 2, 1, ("sigmoid", "mul_backward", "sgd_step")),
}


def k_case(mode: str) -> Case:
    """gpugrad's own elementwise kernels (kernels/, both CuPy paths: ElementwiseKernel and
    the vectorized RawKernel) against a device-to-device copy, through
    ``gpugrad._kernel_bench.kernel_bandwidth`` (``bandwidth_table``'s rows, one kernel at a
    time so that a failing kernel is named in ``extra["failed"]``). The row's value is the
    WORST kernel's fraction of the copy bandwidth (each kernel at its better path), in %;
    ``extra`` holds every kernel's row. CUDA only."""
    n, repeat, warmup, names = K_PLAN[mode]

    def run(peer: Peer) -> Result:
        if not peer.is_cuda:
            raise Unavailable("needs CUDA")
        from gpugrad._kernel_bench import kernel_bandwidth
        from gpugrad._kernels import kernels
        rows, failed = [], {}
        for name in kernels.names() if names is None else names:
            try:  # one kernel's failure (a compile error) must not hide the others' figures
                row = kernel_bandwidth(name, n=n, dtype="float32", repeat=repeat,
                                       warmup=warmup)
            except Exception as e:  # noqa: BLE001
                msg = str(e).strip().splitlines()
                failed[name] = f"{type(e).__name__}: {msg[0][:160] if msg else ''}"
                continue
            if row is None:
                raise Unavailable("needs CUDA (CuPy sees no GPU)")
            rows.append(row)
        if not rows:
            raise Unavailable(f"every kernel failed: {failed}")
        summary = kernel_summary(rows)
        return Result(value=100 * summary["worst_frac"],
                      extra={**summary, "failed": failed, "kernels": rows})

    size = f"2**{int(math.log2(n))} float32"
    what = "every kernel" if names is None else f"{len(names)} kernels"
    return Case("K.kernels", "K", f"K kernel bandwidth, worst of {what}, {size}",
                "% of copy", run, higher_is_better=True, peers=frozenset({"gpugrad"}),
                params={"n": n, "repeat": repeat, "kernels": names},
                note="bytes read + written per launch / time, over a device-to-device copy's; "
                     "each kernel at its better CuPy path (ElementwiseKernel or vectorized)")


def kernel_summary(rows: list[dict], target: float = 0.8) -> dict:
    """The worst kernel, the median fraction and how many kernels reach ``target``, each
    kernel taken at its better path."""
    best = {r["kernel"]: max(f for f in (r.get("elementwise_frac"), r.get("vectorized_frac"))
                             if f is not None) for r in rows}
    worst = min(best, key=best.get)
    fracs = sorted(best.values())
    return {"worst_kernel": worst, "worst_frac": best[worst],
            "median_frac": fracs[len(fracs) // 2], "n_kernels": len(fracs),
            "n_at_target": sum(f >= target for f in fracs), "target_frac": target}


# --------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------

WORKLOADS = ("W1", "W2", "W3", "W4", "K")

BUDGETS = {  # mode -> the default budget of one (case, peer)
    "full": Budget(seconds=3.0, min_repeats=5, max_repeats=300, warmup=5),
    "quick": Budget(seconds=1.0, min_repeats=3, max_repeats=100, warmup=2),
    "tiny": Budget(seconds=0.0, min_repeats=2, max_repeats=2, warmup=1, repeats=2),
}


def plan(workloads, mode: str, cuda: bool, repeats: int | None = None):
    """The cases to run and the notes that explain any size changed or skipped."""
    base = BUDGETS[mode]
    if repeats is not None:
        base = Budget(base.seconds, base.min_repeats, base.max_repeats, base.warmup, repeats)
    cases: list[Case] = []
    notes: list[str] = []
    w1_sizes = W1_TINY if mode == "tiny" else W1_SIZES
    if mode == "tiny":
        notes.append("tiny mode: toy sizes and 2 repeats, to check the machinery; "
                     "the figures mean nothing")
    for w in workloads:
        if w == "W1":
            for name, (batch, sizes) in w1_sizes.items():
                budget, first_calls = base, FIRST_CALLS
                if not cuda and mode != "tiny" and name != "small":
                    # A CPU step of these sizes takes seconds: one checked call (its loss
                    # read), the first call of the timing as the warm-up, few timed calls.
                    budget = Budget(base.seconds, 3, base.max_repeats, 0, base.repeats)
                    first_calls = 1
                    if mode == "quick" and name == "large":
                        notes.append("quick on CPU: W1 large skipped (one step is ~1.2 TFLOP,"
                                     " tens of seconds on a few cores); run without --quick")
                        continue
                    notes.append(f"CPU: a W1 {name} step takes seconds: two untimed calls "
                                 f"(the first one's loss checked), then "
                                 f"{budget.repeats or 'at least 3'} timed calls")
                cases.append(w1_case(name, batch, sizes, budget, first_calls=first_calls))
        elif w == "W2":
            n = W2_N["tiny" if mode == "tiny" else ("cuda" if cuda else "cpu")]
            if not cuda and mode != "tiny":
                notes.append(f"CPU: W2 over 2**{int(math.log2(n))} floats (2**26 on a GPU)")
            cases += w2_cases(n, base)
        elif w == "W3":
            cases += w3_cases(base)
        elif w == "W4":
            batch, sizes = w1_sizes["medium"]
            cases.append(w4_case(batch, sizes))
        elif w == "K":
            cases.append(k_case(mode))
        else:
            raise ValueError(f"unknown workload {w!r}: choose from {', '.join(WORKLOADS)}")
    return cases, notes


def annotate(rows: list[dict]) -> None:
    """Cross-row figures: W2's chain as a fraction of the best copy bandwidth of the run."""
    by_id = {r["id"]: r for r in rows}
    copy, chain = by_id.get("W2.copy"), by_id.get("W2.chain")
    if not (copy and chain):
        return
    copies = [r["value"] for r in copy["results"].values() if r["value"]]
    if not copies:
        return
    ceiling = max(copies)
    chain["ceiling_gbps"] = ceiling
    for res in chain["results"].values():
        if res["value"]:
            res["extra"]["fraction_of_copy"] = res["value"] / ceiling


__all__ = ["MLP", "Case", "Result", "Unavailable", "WORKLOADS", "plan", "annotate",
           "mlp_arrays", "mlp_loss", "mlp_step", "chain_loss", "chain_step",
           "chain_params_loss", "host_chain", "measure_checked", "kernel_summary"]
