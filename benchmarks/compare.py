"""``--compare``: gpugrad (eager, and compiled with ``gpugrad.compile``) against each PyTorch
peer (eager, ``torch.cuda.graph``, ``torch.compile``) per row, with issue 7's targets.

Each comparison is a COST ratio, gpugrad's over the peer's (time over time; for GB/s rows the
peer's GB/s over gpugrad's): below 1 gpugrad is faster. Two references are not peers: the
hand-written floor (W1; the CPU target) and the copy ceiling (W2 chain, K), where the figure
is a fraction of the copy bandwidth, higher is better. A target applies on the device the
issue names it for (``TARGETS``); its status is "met", "not met", or "n/a" (a figure is
missing: the peer needs CUDA, was not asked for, or failed, see the run's footnotes).

``compare(record)`` works on any results JSON (``--compare-from``): the JSON keeps its
entries under ``compare``, and ``markdown`` renders them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

#: The subjects (gpugrad's peers) and the PyTorch references, in column order; then the
#: floor (W1 rows) or the copy ceiling (W2 chain, K) in the last column.
SUBJECTS = ("gpugrad", "gpugrad_compile")
REFERENCES = ("torch", "torch_graph", "torch_compile")
COPY_ROWS = ("W2.chain", "K.kernels")


@dataclass(frozen=True)
class Target:
    """Issue 7's target for one comparison on one device: ``ratio <= bound`` (a cost ratio),
    or ``fraction >= bound`` when ``reference`` is "copy"."""
    row: str
    subject: str
    reference: str
    bound: float
    device: str  # "cuda" or "cpu"
    text: str
    #: the matmul precision of the run it applies to ("tf32": --tf32), None: any
    precision: str | None = None


_W3_CPU = "W3: per op no slower than PyTorch CPU"
TARGETS = (
    # On the GPU (H100 or H200)
    Target("W3.fwdbwd", "gpugrad", "torch", 1.0, "cuda",
           "W3: eager forward+backward per op no slower than PyTorch eager"),
    Target("W1.small", "gpugrad", "torch", 1.0, "cuda",
           "W1 small: eager no slower than PyTorch eager"),
    Target("W1.small", "gpugrad_compile", "torch_graph", 1.0, "cuda",
           "W1 small: captured no slower than torch.cuda.graph"),
    Target("W1.small", "gpugrad_compile", "torch", 0.1, "cuda",
           "W1 small: captured more than 10x faster than PyTorch eager"),
    Target("W1.medium", "gpugrad", "torch", 1.03, "cuda",
           "W1 medium: within 3% of PyTorch eager (fp32)", "fp32"),
    Target("W1.large", "gpugrad", "torch", 1.03, "cuda",
           "W1 large: within 3% of PyTorch eager (fp32)", "fp32"),
    Target("W1.medium", "gpugrad", "torch", 1.03, "cuda",
           "W1 medium: within 3% of PyTorch eager with TF32 on both", "tf32"),
    Target("W1.large", "gpugrad", "torch", 1.03, "cuda",
           "W1 large: within 3% of PyTorch eager with TF32 on both", "tf32"),
    Target("W2.chain", "gpugrad", "torch", 1.0, "cuda",
           "W2 chain: eager no slower than PyTorch eager"),
    Target("W2.chain", "gpugrad_compile", "copy", 0.8, "cuda",
           "W2 chain: captured/fused at >= 80% of the copy bandwidth"),
    Target("W4.medium", "gpugrad", "torch", 1.05, "cuda",
           "W4: peak memory at most 5% above PyTorch's"),
    Target("K.kernels", "gpugrad", "copy", 0.8, "cuda",
           "K: every kernel at >= 80% of the copy bandwidth on large float32"),
    # On the CPU (the NumPy fallback)
    Target("W3.nograd", "gpugrad", "torch", 1.0, "cpu", _W3_CPU),
    Target("W3.record", "gpugrad", "torch", 1.0, "cpu", _W3_CPU),
    Target("W3.fwdbwd", "gpugrad", "torch", 1.0, "cpu", _W3_CPU),
    Target("W1.small", "gpugrad", "torch", 1.0, "cpu",
           "W1 small: no slower than PyTorch CPU"),
    Target("W1.medium", "gpugrad", "floor", 1.10, "cpu",
           "W1 medium: within 10% of the hand-written NumPy step"),
    Target("W1.large", "gpugrad", "floor", 1.10, "cpu",
           "W1 large: within 10% of the hand-written NumPy step"),
)

#: Targets of the issue that a run of one precision does not measure (said under the table).
NOT_MEASURED = {
    ("cuda", "fp32"): "W1 medium/large within 3% of PyTorch eager with TF32 enabled on both "
                      "(a second run: python -m benchmarks --tf32 --workloads W1)",
    ("cuda", "tf32"): "the fp32 targets (W1 medium/large in fp32; this run is --tf32)",
}


def _target(row: str, subject: str, reference: str, device: str,
            precision: str) -> Target | None:
    return next((t for t in TARGETS if (t.row, t.subject, t.reference, t.device)
                 == (row, subject, reference, device)
                 and t.precision in (None, precision)), None)


def _skipped(res: dict | None) -> bool:
    if not res:
        return True
    return bool(res.get("skipped")) or (res.get("reason") or "").startswith("runs ")


def _value(row: dict, subject: str, reference: str) -> float | None:
    """The cost ratio subject/reference, or for "copy" the subject's fraction of it."""
    res = row["results"]
    if reference == "copy":
        if row["id"] == "K.kernels":
            v = (res.get(subject) or {}).get("value")
            return None if v is None else v / 100
        return ((res.get(subject) or {}).get("extra") or {}).get("fraction_of_copy")
    a = (res.get(subject) or {}).get("value")
    b = (res.get(reference) or {}).get("value")
    if not a or not b:
        return None
    return b / a if row["higher_is_better"] else a / b


def compare(record: dict) -> dict:
    """The comparisons of a run: a list of entries (row, subject, reference, kind, value,
    target, status), one per pair that both ran by design or that has a target on the run's
    device, and the count of targets met / not met / n/a."""
    device = "cuda" if record["environment"]["device"].startswith("cuda") else "cpu"
    precision = "tf32" if record["environment"].get("tf32") else "fp32"
    keys = {p["key"] for p in record["peers"]}
    labels = {p["key"]: p["label"] for p in record["peers"]}
    entries = []
    for row in record["rows"]:
        for subject in SUBJECTS:
            if subject not in keys or _skipped(row["results"].get(subject)):
                continue
            refs = list(REFERENCES) + (["floor"] if row["workload"] == "W1" else []) \
                + (["copy"] if row["id"] in COPY_ROWS else [])
            for ref in refs:
                target = _target(row["id"], subject, ref, device, precision)
                ran = ref == "copy" or (ref in keys and not _skipped(row["results"].get(ref)))
                if not ran and target is None:
                    continue
                value = _value(row, subject, ref)
                status = None
                if target is not None:
                    status = "n/a" if value is None else "met" if (
                        value >= target.bound if ref == "copy" else value <= target.bound) \
                        else "not met"
                entries.append({
                    "row": row["id"], "subject": subject, "reference": ref,
                    "subject_label": labels.get(subject, subject),
                    "reference_label": "copy ceiling" if ref == "copy"
                    else labels.get(ref, ref),
                    "kind": "fraction of copy" if ref == "copy" else "cost ratio",
                    "value": value, "status": status,
                    "target": None if target is None else asdict(target)})
    summary = {s: sum(e["status"] == s for e in entries) for s in ("met", "not met", "n/a")}
    return {"device": device, "precision": precision, "entries": entries, "summary": summary,
            "not_measured": NOT_MEASURED.get((device, precision))}


def _cell(e: dict | None) -> str:
    if e is None:
        return "—"
    v, t = e["value"], e["target"]
    if e["kind"] == "fraction of copy":
        s = "n/a" if v is None else f"{100 * v:.0f}% of copy"
        bound = None if t is None else f"≥ {100 * t['bound']:.0f}%"
    else:
        s = "n/a" if v is None else f"{v:.2f}"
        bound = None if t is None else f"≤ {t['bound']:g}"
    return s if t is None else f"{s} ({bound}: {e['status']})"


def markdown(cmp: dict) -> str:
    """The comparison as a Markdown table: a line per (row, gpugrad peer), a column per
    reference; each cell the figure, and the target with its status where the issue sets
    one on this device."""
    head = ["row", "gpugrad", "vs PyTorch eager", "vs torch.cuda.graph", "vs torch.compile",
            "vs floor / copy"]
    what = f"{cmp['device']} targets of issue 7" + (
        f", {cmp.get('precision', 'fp32')} matmuls" if cmp["device"] == "cuda" else "")
    lines = [f"Comparison ({what})", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order: dict = {}
    for e in cmp["entries"]:
        order.setdefault((e["row"], e["subject"]), {})[e["reference"]] = e
    for (row, subject), by_ref in order.items():
        last = by_ref.get("floor") or by_ref.get("copy")  # a row has one or the other
        label = "eager" if subject == "gpugrad" else by_ref[next(iter(by_ref))]["subject_label"]
        cells = [row, label] + [_cell(by_ref.get(r)) for r in REFERENCES] + [_cell(last)]
        lines.append("| " + " | ".join(cells) + " |")
    s = cmp["summary"]
    lines += ["", f"Targets: {s['met']} met, {s['not met']} not met, {s['n/a']} n/a. "
                  "Cost ratio = gpugrad's time (or bytes) over the peer's: below 1 gpugrad is "
                  "faster or smaller; \"% of copy\": the chain's effective GB/s over the best "
                  "copy_ of the run (W2), the worst kernel's over a device copy (K); "
                  "—: the pair does not run by design."]
    if cmp.get("not_measured"):
        lines.append(f"Not measured by this suite: {cmp['not_measured']}.")
    return "\n".join(lines)
