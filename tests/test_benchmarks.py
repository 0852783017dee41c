"""The benchmark suite's machinery (benchmarks/): its programs compute the same numbers in
gpugrad and PyTorch, and a tiny run produces the table, the JSON record and the PNG chart.
Correctness only: nothing here asserts a time."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad
from helpers import assert_close, torch_or_skip

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import cli, report, workloads  # noqa: E402
from benchmarks.peers import GpugradPeer, TorchPeer, discover  # noqa: E402
from benchmarks.timing import Budget, Clock, measure, summarize  # noqa: E402

SIZES, BATCH = [12, 16, 8, 5], 6


def peers(device):
    torch = torch_or_skip()
    return GpugradPeer(gpugrad, device), TorchPeer(torch, "cpu")


def test_mlp_step_same_losses_and_weights(device):
    g_peer, t_peer = peers(device)
    g = workloads.MLP(g_peer, SIZES, BATCH, seed=3)
    t = workloads.MLP(t_peer, SIZES, BATCH, seed=3)
    for _ in range(3):
        assert_close(g.step(), t.step(), rtol=1e-5, atol=1e-6, msg="W1 loss")
    for pg, pt in zip(g.params, t.params):
        assert_close(pg, pt, rtol=1e-5, atol=1e-6, msg="W1 weights after 3 steps")
        assert pg.grad is None and pt.grad is None  # set_to_none after the update
    assert g.live_bytes == sum(p.numel() * 4 for p in g.params) + (BATCH * 12 + BATCH * 5) * 4


def test_floor_step_matches_autograd_step(device):
    # The hand-written W1 step (benchmarks/floor.py) does the same arithmetic as the autograd
    # step: equal losses and weights over a few steps, or its column would compare nothing.
    from benchmarks.floor import FloorMLP
    g = workloads.MLP(GpugradPeer(gpugrad, device), SIZES, BATCH, seed=3)
    f = FloorMLP(np, *workloads.mlp_arrays(SIZES, BATCH, seed=3))
    assert_close(float(f.loss()), g.loss(), rtol=1e-5, msg="W1 floor initial loss")
    for _ in range(3):
        assert_close(float(f.step()), g.step(), rtol=1e-5, atol=1e-6, msg="W1 floor loss")
    for pf, pg in zip(f.params, g.params):
        assert_close(pf, pg, rtol=1e-5, atol=1e-6, msg="W1 floor weights after 3 steps")


def test_chain_and_host_programs_agree(device):
    g_peer, t_peer = peers(device)
    x = np.random.default_rng(0).standard_normal(64, dtype=np.float32)
    xs = [p.tensor(x, requires_grad=True) for p in (g_peer, t_peer)]
    losses = [workloads.chain_step(v) for v in xs]
    assert_close(losses[0], losses[1], rtol=1e-5, msg="W2 loss")
    assert_close(xs[0].grad, xs[1].grad, rtol=1e-5, atol=1e-6, msg="W2 grad")
    # the same expression written out, in NumPy, for the loss
    a, b = workloads.W2_A, workloads.W2_B
    ref = (np.tanh(x * a + b) / (1 + np.exp(-x)) + x * x).sum()
    assert abs(float(losses[0].item()) - ref) <= 1e-4 * abs(ref)

    xs = [p.tensor(np.linspace(-1, 1, 16, dtype=np.float32), requires_grad=True)
          for p in (g_peer, t_peer)]
    ys = [workloads.host_chain(v).sum() for v in xs]
    for y in ys:
        y.backward()
    assert_close(ys[0], ys[1], rtol=1e-5, msg="W3 value")
    assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-6, msg="W3 grad")
    assert ys[0].grad_fn is not None


def test_timing_statistics():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.5, 1.0, 4.0, 4)
    assert s.q1 <= s.median <= s.q3 and s.iqr == s.q3 - s.q1
    calls = []
    stats = measure(lambda: calls.append(1), Clock(), Budget(repeats=4, warmup=2))
    assert stats.n == 4 and len(calls) == 1 + 2 + 4  # first call, warm-up, repeats
    assert stats.first_call_s is not None


def test_plan_quick_cpu_skips_large_and_says_so():
    cases, notes = workloads.plan(workloads.WORKLOADS, "quick", cuda=False)
    ids = [c.id for c in cases]
    assert "W1.large" not in ids and {"W1.small", "W1.medium", "W2.chain", "W3.fwdbwd",
                                      "W4.medium"} <= set(ids)
    assert any("W1 large skipped" in n for n in notes)
    assert next(c for c in cases if c.id == "W2.chain").params["n"] == 2 ** 22
    cases, _ = workloads.plan(["W1", "W2"], "full", cuda=True)
    assert "W1.large" in [c.id for c in cases]
    assert next(c for c in cases if c.id == "W2.chain").params["n"] == 2 ** 26


def test_tiny_run_writes_table_json_and_chart(tmp_path, capsys, device):
    assert cli.main(["--tiny", "--device", device, "--out", str(tmp_path),
                     "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| workload | gpugrad | PyTorch | ratio | floor (hand-written) | unit |" in out
    record = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert record["mode"] == "tiny" and record["environment"]["device"] == device
    ids = [r["id"] for r in record["rows"]]
    assert ids == ["W1.small", "W1.medium", "W1.large", "W2.copy", "W2.chain", "W3.nograd",
                   "W3.record", "W3.fwdbwd", "W4.medium"]
    for row in record["rows"]:
        assert row["label"] in out
        g = row["results"]["gpugrad"]
        if (row["id"] == "W4.medium" and device != "cpu"
                and not hasattr(gpugrad.cuda, "max_memory_allocated")):
            assert "lacks" in g["reason"]  # gpugrad.cuda's memory stats are on their way
            continue
        assert g["reason"] is None and g["value"] > 0, (row["id"], g)
    have_torch = importlib.util.find_spec("torch") is not None
    if have_torch and device == "cpu":
        for row in record["rows"]:
            t = row["results"]["torch"]
            assert t["value"] is not None, (row["id"], t)
            assert report.ratio(row, "gpugrad", "torch") > 0
            if "loss_init" in t["extra"]:
                g = row["results"]["gpugrad"]["extra"]["loss_init"]
                assert abs(g - t["extra"]["loss_init"]) <= 1e-4 * max(1.0, abs(g)), row["id"]
        assert "WARNING" not in out
        for row in record["rows"]:  # the floor runs W1 and says so elsewhere
            f = row["results"]["floor"]
            if row["workload"] == "W1":
                g = row["results"]["gpugrad"]["extra"]["loss_init"]
                assert f["value"] > 0 and abs(f["extra"]["loss_init"] - g) <= 1e-4 * max(
                    1.0, abs(g)), row["id"]
            else:
                assert f["value"] is None and f["reason"] == "runs W1 only"
    stamped = [p for p in tmp_path.glob("*.json") if p.name != "latest.json"]
    assert len(stamped) == 1 and stamped[0].name.startswith(device.replace(":", ""))
    if importlib.util.find_spec("matplotlib") is not None:
        png = tmp_path / "latest.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / stamped[0].name.replace(".json", ".png")).is_file()
    else:
        assert "matplotlib is not installed" in out


def test_without_torch_ratios_are_na(tmp_path, capsys, device):
    assert cli.main(["--tiny", "--device", device, "--workloads", "w3", "--no-torch",
                     "--out", str(tmp_path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in record["rows"]] == ["W3.nograd", "W3.record", "W3.fwdbwd"]
    for row in record["rows"]:
        assert row["results"]["torch"]["value"] is None
        assert report.ratio(row, "gpugrad", "torch") is None
        assert row["label"] in out and " n/a | n/a | µs/op |" in out
    assert "PyTorch: n/a everywhere (--no-torch)" in out


def test_bad_flags_are_refused():
    for argv in (["--workloads", "W9"], ["--repeats", "0"], ["--quick", "--tiny"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)


def test_discover_names_the_peers():
    ps = discover("cpu")
    assert [p.key for p in ps] == ["gpugrad", "torch", "floor"]
    assert ps[2].available and ps[2].mod is np and ps[2].workloads == {"W1"}
    assert [p.key for p in discover("cpu", with_floor=False)] == ["gpugrad", "torch"]
    assert ps[0].available and ps[0].clock.name == "perf_counter"
