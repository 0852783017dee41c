"""Reporting: the table (Markdown, so it pastes into README), the footnotes, K's per-kernel
table, the JSON record, the PNG chart. The ``--compare`` table is ``compare.py``'s.

The ratio column is a COST ratio, subject over reference (gpugrad over PyTorch): time over
time, bytes over bytes, and for GB/s rows the reference's GB/s over the subject's (the same
thing as time over time). Below 1, gpugrad is faster or smaller; 1 is parity.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

RATIO_NOTE = ("ratio = gpugrad's cost / PyTorch's (time or memory; for GB/s rows PyTorch's "
              "GB/s / gpugrad's): below 1 gpugrad is faster or smaller")


def ratio(row: dict, subject: str, reference: str) -> float | None:
    a = row["results"].get(subject, {}).get("value")
    b = row["results"].get(reference, {}).get("value")
    if not a or not b:
        return None
    return b / a if row["higher_is_better"] else a / b


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def _cell(res: dict | None) -> str:
    if not res or res.get("value") is None:
        return "n/a"
    s = _num(res["value"])
    if res.get("iqr") is not None and res["value"]:
        s += f" ±{100 * res['iqr'] / 2 / abs(res['value']):.0f}%"
    return s


def table(record: dict) -> str:
    """The Markdown table: one row per case; a column per peer (median, ±half the IQR as a
    percentage of the median), the ratio of the first two peers right after them, then the
    further peers (captured, compiled, the hand-written floor), the unit."""
    peers = record["peers"]
    subject, reference = peers[0]["key"], peers[1]["key"] if len(peers) > 1 else None
    head = (["workload"] + [p["label"] for p in peers[:2]] + ["ratio"]
            + [p["label"] for p in peers[2:]] + ["unit"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in record["rows"]:
        cells = [row["label"]] + [_cell(row["results"].get(p["key"])) for p in peers[:2]]
        r = ratio(row, subject, reference) if reference else None
        cells.append("n/a" if r is None else f"{r:.2f}")
        cells += [_cell(row["results"].get(p["key"])) for p in peers[2:]]
        cells.append(row["unit"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnotes(record: dict) -> list[str]:
    out = [RATIO_NOTE + "; ±: half the inter-quartile range, as % of the median."]
    for row in record["rows"]:
        if row.get("ceiling_gbps"):
            parts = [f"{record_label(record, k)} {100 * r['extra']['fraction_of_copy']:.0f}%"
                     for k, r in row["results"].items()
                     if r.get("extra", {}).get("fraction_of_copy")]
            out.append(f"{row['id']}: copy ceiling {row['ceiling_gbps']:.3g} GB/s (best copy_ "
                       f"of the run); chain at " + ", ".join(parts) + " of it.")
        floor = row["results"].get("floor", {}).get("value")
        mine = row["results"].get(record["peers"][0]["key"], {}).get("value")
        if floor and mine:
            out.append(f"{row['id']}: {record_label(record, record['peers'][0]['key'])} at "
                       f"{mine / floor:.2f}x the hand-written floor (no autograd)")
        losses = {k: r["extra"]["loss_init"] for k, r in row["results"].items()
                  if r.get("extra", {}).get("loss_init") is not None}
        if len(losses) > 1:
            vals = list(losses.values())
            if max(vals) - min(vals) > 1e-3 * max(1.0, abs(vals[0])):
                out.append(f"WARNING {row['id']}: the peers' initial losses differ: {losses}")
        out += _trajectory_warnings(record, row)
        for k, r in row["results"].items():
            if r.get("reason") and k in {p["key"] for p in record["peers"] if p["available"]} \
                    and not _skipped(r):
                out.append(f"{row['id']} {record_label(record, k)}: n/a ({r['reason']})")
    for p in record["peers"]:
        if p["key"] == "floor" and p["available"]:
            out.append(f"{p['label']}: W1 written by hand on {p['version']} without autograd "
                       f"(benchmarks/floor.py); n/a elsewhere")
        if not p["available"]:
            out.append(f"{p['label']}: n/a everywhere ({p['reason']})")
    return out


def _skipped(res: dict) -> bool:
    """n/a by design: the peer does not run this case (older records: "runs ... only")."""
    return bool(res.get("skipped")) or (res.get("reason") or "").startswith("runs ")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-3 * max(1.0, abs(a))


def _trajectory_warnings(record: dict, row: dict) -> list[str]:
    """Each peer's losses over its first calls (``first_losses``: the warm-up, capture and
    first replays of a captured step) against the subject's (gpugrad eager): a captured or
    compiled step that leaves the eager trajectory computes something else."""
    traces = {k: r["extra"]["first_losses"] for k, r in row["results"].items()
              if r.get("extra", {}).get("first_losses")}
    if len(traces) < 2:
        return []
    ref_key = record["peers"][0]["key"] if record["peers"][0]["key"] in traces \
        else next(iter(traces))
    ref = traces[ref_key]
    out = []
    for k, trace in traces.items():
        n = min(len(ref), len(trace))
        if k != ref_key and not all(_close(a, b) for a, b in zip(ref[:n], trace[:n])):
            fmt = lambda v: "[" + ", ".join(f"{x:.6g}" for x in v[:n]) + "]"  # noqa: E731
            out.append(f"WARNING {row['id']}: {record_label(record, k)}'s losses over its "
                       f"first {n} calls leave {record_label(record, ref_key)}'s: "
                       f"{fmt(trace)} vs {fmt(ref)}")
    return out


def kernel_table(record: dict) -> str | None:
    """K's per-kernel bandwidth (``gpugrad._kernel_bench.format_table``) in a code block
    with its summary line, or None when the run has no K figures."""
    row = next((r for r in record["rows"] if r["id"] == "K.kernels"), None)
    extra = row and (row["results"].get("gpugrad") or {}).get("extra") or {}
    if not extra.get("kernels"):
        return None
    from gpugrad._kernel_bench import format_table
    return (f"K: {extra['n_at_target']} of {extra['n_kernels']} kernels at "
            f">= {100 * extra['target_frac']:.0f}% of the copy bandwidth (each at its better "
            f"path); worst {extra['worst_kernel']} at {100 * extra['worst_frac']:.0f}%, "
            f"median {100 * extra['median_frac']:.0f}%."
            + (f" Failed: {extra['failed']}." if extra.get("failed") else "")
            + "\n\n```\n"
            + format_table(extra["kernels"]) + "\n```")


def record_label(record: dict, key: str) -> str:
    return next((p["label"] for p in record["peers"] if p["key"] == key), key)


def write_json(record: dict, out_dir: Path, stem: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.json"
    text = json.dumps(record, indent=1, ensure_ascii=False, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    shutil.copyfile(path, out_dir / "latest.json")
    return path


def write_chart(record: dict, out_dir: Path, stem: str) -> Path | None:
    """A horizontal bar per case: the cost ratio on a log axis, parity marked. None when
    matplotlib is missing (the table and JSON do not need it)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return None
    peers = record["peers"]
    subject, reference = peers[0]["key"], peers[1]["key"] if len(peers) > 1 else None
    rows = record["rows"]
    labels = [r["label"] for r in rows]
    ratios = [ratio(r, subject, reference) if reference else None for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.8))
    ys = list(range(len(rows)))[::-1]
    finite = [v for v in ratios if v]
    lo = min(finite + [1.0]) / 1.8
    hi = max(finite + [1.0]) * 1.6
    for y, v in zip(ys, ratios):
        if v:
            # From parity outward: left of the line gpugrad wins, right of it PyTorch does.
            ax.barh(y, v - 1, left=1, color="#3a7d44" if v <= 1 else "#b5523b", height=0.6)
            ax.text(v * (1.04 if v > 1 else 1 / 1.04), y, f"{v:.2f}", va="center",
                    ha="left" if v > 1 else "right", fontsize=8)
        else:
            ax.text(1.05, y, "n/a", va="center", fontsize=8, color="grey")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
             if lo <= t <= hi]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("cost ratio gpugrad / PyTorch (log scale; < 1: gpugrad faster or smaller)")
    env = record["environment"]
    ax.set_title(f"gpugrad {env['versions'].get('gpugrad')} vs PyTorch "
                 f"{env['versions'].get('torch') or 'n/a'} on {env['device_name']} "
                 f"({record['mode']}, {record['created'][:16]})", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{stem}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    shutil.copyfile(path, out_dir / "latest.png")
    return path


def default_out_dir() -> Path:
    return Path(os.environ.get("GPUGRAD_BENCH_OUT", Path(__file__).parent / "results"))
