"""``python -m benchmarks``: run the workloads with gpugrad and PyTorch in one process and
report a table, a JSON record and a PNG chart. ``--help`` lists the flags."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import compare, report
from .workloads import WORKLOADS, Result, annotate, plan


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="gpugrad beside PyTorch: W1 MLP training step (small/medium/large), W2 "
                    "elementwise chain vs copy bandwidth, W3 host overhead per op, W4 peak "
                    "memory of the medium step, K gpugrad's kernels vs copy bandwidth (CUDA); "
                    "eager, captured (gpugrad.compile, torch.cuda.graph) and torch.compile.")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: gpugrad's default device)")
    p.add_argument("--quick", action="store_true",
                   help="short budgets; on a CPU, W1 large skipped (under two minutes)")
    p.add_argument("--tiny", action="store_true",
                   help="toy sizes and 2 repeats: checks the machinery in seconds (tests)")
    p.add_argument("--workloads", default=",".join(WORKLOADS),
                   help="comma-separated subset of W1,W2,W3,W4,K (default: all)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls per case and library (default: as many as fit the "
                        "time budget, within bounds)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default benchmarks/results, git-ignored)")
    p.add_argument("--no-torch", action="store_true", help="gpugrad only (ratios n/a)")
    p.add_argument("--no-floor", action="store_true",
                   help="without the hand-written array-module W1 step (the floor column)")
    p.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                   help="run the torch.compile peer (default: on CUDA yes, on a CPU no: it "
                        "needs a C++ compiler and compiles for minutes); --no-torch-compile "
                        "skips it everywhere")
    p.add_argument("--tf32", action="store_true",
                   help="CUDA: TF32 float32 matmuls in both libraries "
                        "(gpugrad.backends.cuda.matmul.allow_tf32 and torch's); default full "
                        "fp32 in both")
    p.add_argument("--eager-only", action="store_true",
                   help="without the captured/compiled peers (gpugrad.compile, "
                        "torch.cuda.graph, torch.compile)")
    p.add_argument("--compare", action="store_true",
                   help="also print the comparison: gpugrad (eager, compiled) over each "
                        "PyTorch peer per row, with issue 7's targets (always in the JSON)")
    p.add_argument("--compare-from", type=Path, default=None, metavar="JSON",
                   help="print the comparison of a stored results JSON and exit (no run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in args.workloads if w not in WORKLOADS]
    if bad:
        p.error(f"unknown workload(s) {', '.join(bad)}: choose from {', '.join(WORKLOADS)}")
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.quick and args.tiny:
        p.error("--quick and --tiny exclude each other")
    return args


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                             capture_output=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, text=True, capture_output=True,
                               timeout=5).stdout.strip() != ""
        return {"commit": rev or None, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _loadavg() -> list[float] | None:
    """1-, 5- and 15-minute load averages: other processes competing for the CPU make
    host-bound and CPU figures noisy, so the record keeps them."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def environment(device: str, peers, tf32: bool = False) -> dict:
    import numpy as np
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for p in peers:
        versions[p.key] = p.version
    torch = next((p.mod for p in peers if p.key == "torch" and p.mod is not None), None)
    env = {"device": device, "cpu": _cpu_name(), "cpu_count": os.cpu_count(),
           "platform": platform.platform(), "versions": versions, "git": _git(),
           "torch_threads": torch.get_num_threads() if torch is not None else None,
           "precision": "float32; matmuls TF32 (allow_tf32 in gpugrad and torch)" if tf32
           else "float32; matmuls full fp32 (no TF32)", "tf32": tf32}
    if device.startswith("cuda"):
        try:
            import cupy
            versions["cupy"] = cupy.__version__
            idx = int(device.split(":")[1]) if ":" in device else 0
            name = cupy.cuda.runtime.getDeviceProperties(idx)["name"]
            env["device_name"] = name.decode() if isinstance(name, bytes) else str(name)
            # what the run's flags read (set by discover()); CuPy follows gpugrad's
            gg = next((p.mod for p in peers if p.key == "gpugrad" and p.mod is not None), None)
            env["allow_tf32"] = {
                "gpugrad": gg.backends.cuda.matmul.allow_tf32 if gg is not None else None,
                "torch": torch.backends.cuda.matmul.allow_tf32 if torch is not None else None}
        except Exception as e:  # noqa: BLE001 - a label must not end the run
            env["device_name"] = f"{device} ({type(e).__name__})"
    else:
        env["device_name"] = f"{env['cpu']} ({os.cpu_count()} cores)"
    return env


class _Progress:
    """tqdm when installed and wanted; otherwise nothing."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="case", file=sys.stderr,
                                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
            except ImportError:
                print("(install tqdm for a progress bar: pip install -e \".[bench]\")",
                      file=sys.stderr)

    def doing(self, what: str) -> None:
        if self.bar is not None:
            self.bar.set_description(what)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> dict:
    """Run the plan; returns the JSON record (not yet written)."""
    import gpugrad

    from .peers import Unavailable, discover

    device = str(gpugrad.device(args.device) if args.device else gpugrad.get_default_device())
    if device.startswith("cuda") and not gpugrad.cuda.is_available():
        raise SystemExit(f"--device {device}: gpugrad sees no CUDA device (is CuPy installed? "
                         f"pip install -e \".[cuda13]\")")
    if args.tf32 and not device.startswith("cuda"):
        raise SystemExit("--tf32: TF32 is a CUDA matmul mode; run it with --device cuda")
    peers = discover(device, with_torch=not args.no_torch, with_floor=not args.no_floor,
                     torch_compile=args.torch_compile, eager_only=args.eager_only,
                     tf32=args.tf32)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    cases, notes = plan(args.workloads, mode, device.startswith("cuda"), args.repeats)

    started = time.perf_counter()
    load_start = _loadavg()
    rows = []
    bar = _Progress(len(cases) * len(peers), enabled=not args.no_progress)
    try:
        for case in cases:
            results = {}
            for peer in peers:
                bar.doing(f"{case.id} {peer.label}")
                skip = case.skip_reason(peer)
                if skip is not None:
                    res = Result(reason=skip, skipped=True)
                elif not peer.available:
                    res = Result(reason=peer.reason)
                else:
                    try:
                        res = case.run(peer)
                    except Unavailable as e:
                        res = Result(reason=str(e))
                    except Exception as e:  # noqa: BLE001 - one failure must not end the run
                        res = Result(reason=f"error: {type(e).__name__}: {_first_line(e)}")
                    finally:
                        peer.release()
                results[peer.key] = res.to_dict()
                bar.done()
            rows.append({"id": case.id, "workload": case.workload, "label": case.label,
                         "unit": case.unit, "higher_is_better": case.higher_is_better,
                         "note": case.note, "params": case.params, "results": results})
    finally:
        bar.close()
    annotate(rows)
    env = environment(device, peers, tf32=args.tf32)
    env["load_average"] = {"start": load_start, "end": _loadavg()}
    now = dt.datetime.now(dt.timezone.utc)
    record = {"schema": 1, "created": now.isoformat(timespec="seconds"), "mode": mode,
              "command": " ".join(["python -m benchmarks"] + list(args.argv)),
              "duration_s": round(time.perf_counter() - started, 1),
              "environment": env,
              "peers": [p.describe() for p in peers], "notes": notes, "rows": rows}
    record["compare"] = compare.compare(record)
    return record


def _first_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message, short enough for a table's footnote (compilers' errors run
    to pages)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.argv = argv
    if args.compare_from is not None:
        import json
        try:
            stored = json.loads(args.compare_from.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SystemExit(f"--compare-from {args.compare_from}: cannot read a results JSON "
                             f"({e}); pass a file written by python -m benchmarks") from None
        print(compare.markdown(compare.compare(stored)))
        return 0
    record = run(args)

    out_dir = args.out or report.default_out_dir()
    stem = f"{record['environment']['device'].replace(':', '')}-" \
           f"{record['created'][:19].replace(':', '').replace('-', '')}"
    json_path = report.write_json(record, out_dir, stem)
    png_path = report.write_chart(record, out_dir, stem)

    env = record["environment"]
    print(f"gpugrad {env['versions'].get('gpugrad')} vs PyTorch "
          f"{env['versions'].get('torch') or 'n/a'} on {env['device_name']}, "
          f"{record['mode']} mode, {record['duration_s']} s")
    for n in record["notes"]:
        print(f"note: {n}")
    loads = [v[0] for v in env["load_average"].values() if v]
    if loads and max(loads) > 0.5 + (os.cpu_count() or 1) * 0.75:
        print(f"warning: load average {max(loads):.1f} on {os.cpu_count()} cores during the "
              f"run: other processes competed for the CPU, so the figures are noisy")
    print()
    print(report.table(record))
    print()
    for n in report.footnotes(record):
        print(n)
    kernels = report.kernel_table(record)
    if kernels:
        print()
        print(kernels)
    if args.compare:
        print()
        print(compare.markdown(record["compare"]))
    print(f"\nJSON: {json_path} (and latest.json)")
    print(f"PNG:  {png_path} (and latest.png)" if png_path else
          "PNG:  none (matplotlib is not installed: pip install -e \".[bench]\")")
    return 0
