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

from benchmarks import cli, compare, report, workloads  # noqa: E402
from benchmarks.peers import (GpugradCompilePeer, GpugradPeer, TorchCompilePeer,  # noqa: E402
                              TorchGraphPeer, TorchPeer, discover)
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
    assert ids[-1] == "K.kernels"  # in the plan everywhere; n/a ("needs CUDA") on a CPU
    cases, _ = workloads.plan(["W1", "W2"], "full", cuda=True)
    assert "W1.large" in [c.id for c in cases]
    assert next(c for c in cases if c.id == "W2.chain").params["n"] == 2 ** 26


def test_tiny_run_writes_table_json_and_chart(tmp_path, capsys, device):
    # torch.compile is left out on a GPU too (compiling takes a minute): see its own test.
    assert cli.main(["--tiny", "--device", device, "--out", str(tmp_path), "--no-progress",
                     "--compare"] + (["--no-torch-compile"] if device != "cpu" else [])) == 0
    out = capsys.readouterr().out
    assert ("| workload | gpugrad | PyTorch | ratio | gpugrad.compile | torch.cuda.graph | "
            "torch.compile | floor (hand-written) | unit |") in out
    record = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    assert record["mode"] == "tiny" and record["environment"]["device"] == device
    ids = [r["id"] for r in record["rows"]]
    assert ids == ["W1.small", "W1.medium", "W1.large", "W2.copy", "W2.chain", "W3.nograd",
                   "W3.record", "W3.fwdbwd", "W4.medium", "K.kernels"]
    for row in record["rows"]:
        assert row["label"] in out
        g = row["results"]["gpugrad"]
        if (row["id"] == "W4.medium" and device != "cpu"
                and not hasattr(gpugrad.cuda, "max_memory_allocated")):
            assert "lacks" in g["reason"]  # gpugrad.cuda's memory stats are on their way
            continue
        if row["id"] == "K.kernels" and device == "cpu":
            assert g["value"] is None and g["reason"] == "needs CUDA"
            continue
        assert g["reason"] is None and g["value"] > 0, (row["id"], g)
    # gpugrad.compile runs W1 and W2's chain on every device, and its first calls' losses
    # (warm-up, capture, replays) are the eager step's.
    for row in record["rows"]:
        c = row["results"]["gpugrad_compile"]
        if row["workload"] == "W1" or row["id"] == "W2.chain":
            assert c["reason"] is None and c["value"] > 0, (row["id"], c)
            eager = row["results"]["gpugrad"]["extra"]["first_losses"]
            assert len(c["extra"]["first_losses"]) == len(eager) == workloads.FIRST_CALLS
            assert_close(np.array(c["extra"]["first_losses"]), np.array(eager), rtol=1e-5,
                         msg=f"{row['id']} gpugrad.compile losses")
        else:
            assert c["value"] is None and c["skipped"], (row["id"], c)
    have_torch = importlib.util.find_spec("torch") is not None
    if device == "cpu":  # the CUDA-only cells say why they are empty
        for row in record["rows"]:
            tg = row["results"]["torch_graph"]
            assert tg["value"] is None and (tg["skipped"] or not have_torch
                                            or tg["reason"] == "needs CUDA"), (row["id"], tg)
            tc = row["results"]["torch_compile"]
            assert tc["value"] is None and (tc["skipped"] or not have_torch
                                            or "--torch-compile" in tc["reason"])
        if have_torch:
            assert "torch.cuda.graph: n/a everywhere (needs CUDA)" in out
    torch = sys.modules.get("torch")
    if device != "cpu" and have_torch and torch is not None and torch.cuda.is_available():
        # torch.cuda.graph's replays follow PyTorch eager's losses (and K measured above)
        for row in record["rows"]:
            tg = row["results"]["torch_graph"]
            if row["workload"] == "W1" or row["id"] == "W2.chain":
                assert tg["value"] > 0, (row["id"], tg)
                assert_close(np.array(tg["extra"]["first_losses"]),
                             np.array(row["results"]["torch"]["extra"]["first_losses"]),
                             rtol=1e-4, msg=f"{row['id']} torch.cuda.graph losses")
        assert "WARNING" not in out
    # the comparison: printed and kept in the JSON
    cmp = record["compare"]
    assert cmp["device"] == ("cpu" if device == "cpu" else "cuda")
    assert compare.markdown(cmp) in out
    pairs = {(e["row"], e["subject"], e["reference"]) for e in cmp["entries"]}
    assert {("W1.small", "gpugrad", "torch"), ("W1.small", "gpugrad_compile", "torch_graph"),
            ("W1.medium", "gpugrad", "floor"), ("W2.chain", "gpugrad_compile", "copy"),
            ("W3.fwdbwd", "gpugrad", "torch"), ("K.kernels", "gpugrad", "copy")} <= pairs
    assert not any(r == "W3.fwdbwd" and s == "gpugrad_compile" for r, s, _ in pairs)
    if have_torch and device == "cpu":
        for row in record["rows"]:
            if row["workload"] == "K":
                continue
            t = row["results"]["torch"]
            assert t["value"] is not None, (row["id"], t)
            assert report.ratio(row, "gpugrad", "torch") > 0
            if "loss_init" in t["extra"]:
                g = row["results"]["gpugrad"]["extra"]["loss_init"]
                assert abs(g - t["extra"]["loss_init"]) <= 1e-4 * max(1.0, abs(g)), row["id"]
        assert "WARNING" not in out
        e = next(e for e in cmp["entries"] if (e["row"], e["subject"], e["reference"])
                 == ("W1.small", "gpugrad", "torch"))
        assert e["value"] == report.ratio(record["rows"][0], "gpugrad", "torch")
        assert e["status"] in ("met", "not met") and e["target"]["bound"] == 1.0
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


def test_bad_flags_are_refused(tmp_path):
    for argv in (["--workloads", "W9"], ["--repeats", "0"], ["--quick", "--tiny"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
    with pytest.raises(SystemExit, match="TF32 is a CUDA matmul mode"):
        cli.main(["--tiny", "--device", "cpu", "--tf32", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="cannot read a results JSON"):
        cli.main(["--compare-from", str(tmp_path / "missing.json")])
    # a failing peer's reason is one short line (compilers' errors run to pages)
    assert cli._first_line(RuntimeError("\n  inductor failed\nC++ log...")) == "inductor failed"
    assert len(cli._first_line(RuntimeError("x" * 500))) == 200


def test_tf32_needs_no_environment_and_sets_both_libraries(monkeypatch, tmp_path):
    from benchmarks import peers as peers_module
    monkeypatch.delenv("CUPY_TF32", raising=False)  # it used to be required
    seen = {}

    class Reached(Exception):
        pass

    def fake_discover(device, **kw):
        seen.update(kw, device=device)
        raise Reached

    monkeypatch.setattr(peers_module, "discover", fake_discover)
    monkeypatch.setattr(gpugrad.cuda, "is_available", lambda: True)  # the CUDA path, on a CPU
    with pytest.raises(Reached):
        cli.main(["--tiny", "--device", "cuda", "--tf32", "--out", str(tmp_path)])
    assert seen["device"] == "cuda" and seen["tf32"] is True
    # the peers set gpugrad's flag and torch's to the run's precision
    flags = gpugrad.backends.cuda.matmul
    try:
        peers_module._gpugrad_peer("cuda", tf32=True)
        assert flags.allow_tf32 is True
        assert gpugrad.get_float32_matmul_precision() == "high"
        peers_module._gpugrad_peer("cuda", tf32=False)
        assert flags.allow_tf32 is False
        peers_module._gpugrad_peer("cpu", tf32=True)  # a CPU run leaves it alone
        assert flags.allow_tf32 is False
    finally:
        flags.allow_tf32 = False
    torch = torch_or_skip()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        peers_module._torch_peer("cuda", tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 is True
        peers_module._torch_peer("cuda", tf32=False)
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_discover_names_the_peers():
    ps = discover("cpu")
    assert [p.key for p in ps] == ["gpugrad", "torch", "gpugrad_compile", "torch_graph",
                                   "torch_compile", "floor"]
    assert ps[5].available and ps[5].mod is np and ps[5].workloads == {"W1"}
    assert ps[2].available and ps[2].workloads == {"W1", "W2.chain"}  # CPU: eager bookkeeping
    assert [p.key for p in discover("cpu", with_floor=False, eager_only=True)] == [
        "gpugrad", "torch"]
    assert ps[0].available and ps[0].clock.name == "perf_counter"
    torch_or_skip()
    assert ps[3].reason == "needs CUDA"
    assert "--torch-compile" in ps[4].reason  # on a CPU, only when asked
    assert discover("cpu", torch_compile=True)[4].available
    assert discover("cpu", torch_compile=False)[4].reason == "--no-torch-compile"
    assert discover("cpu", with_torch=False)[3].reason == "--no-torch"


def _row(rid, workload, values, higher=False, **extra):
    return {"id": rid, "workload": workload, "label": rid, "unit": "u",
            "higher_is_better": higher,
            "results": {k: {"value": v, "reason": None if v else "why", "skipped": v is False,
                            "extra": dict(extra.get(k, {}))} for k, v in values.items()}}


def test_compare_targets_and_table():
    # A record by hand: the comparison's pairs, ratios and the targets' status.
    peers = [{"key": k, "label": lab, "available": True} for k, lab in (
        ("gpugrad", "gpugrad"), ("torch", "PyTorch"), ("gpugrad_compile", "gpugrad.compile"),
        ("torch_graph", "torch.cuda.graph"), ("torch_compile", "torch.compile"),
        ("floor", "floor (hand-written)"))]
    w1 = dict(gpugrad=2.0, torch=4.0, gpugrad_compile=0.3, torch_graph=0.2,
              torch_compile=None, floor=1.0)
    rows = [_row("W1.small", "W1", w1),
            _row("W2.chain", "W2", dict(gpugrad=100.0, torch=50.0, gpugrad_compile=900.0,
                                        torch_graph=800.0, torch_compile=None, floor=False),
                 higher=True, gpugrad_compile={"fraction_of_copy": 0.85}),
            _row("W3.fwdbwd", "W3", dict(gpugrad=10.0, torch=5.0, gpugrad_compile=False,
                                         torch_graph=False, torch_compile=False, floor=False)),
            _row("K.kernels", "K", dict(gpugrad=70.0, torch=False, gpugrad_compile=False,
                                        torch_graph=False, torch_compile=False, floor=False),
                 higher=True)]
    record = {"environment": {"device": "cuda:0"}, "peers": peers, "rows": rows}
    cmp = compare.compare(record)
    got = {(e["row"], e["subject"], e["reference"]): (e["value"], e["status"])
           for e in cmp["entries"]}
    assert got[("W1.small", "gpugrad", "torch")] == (0.5, "met")
    assert got[("W1.small", "gpugrad_compile", "torch_graph")] == (pytest.approx(1.5),
                                                                   "not met")
    assert got[("W1.small", "gpugrad_compile", "torch")] == (pytest.approx(0.075), "met")
    assert got[("W1.small", "gpugrad", "torch_compile")] == (None, None)  # no target there
    assert got[("W1.small", "gpugrad", "floor")] == (2.0, None)  # a CPU target only
    assert got[("W2.chain", "gpugrad", "torch")] == (0.5, "met")  # GB/s: 50 / 100
    assert got[("W2.chain", "gpugrad_compile", "copy")] == (0.85, "met")
    assert got[("W3.fwdbwd", "gpugrad", "torch")] == (2.0, "not met")
    assert got[("K.kernels", "gpugrad", "copy")] == (0.7, "not met")
    assert not any(k[0] == "W3.fwdbwd" and k[1] == "gpugrad_compile" for k in got)
    assert not any(k[0] == "K.kernels" and k[2] == "torch" for k in got)
    assert cmp["summary"] == {"met": 4, "not met": 3, "n/a": 0}
    text = compare.markdown(cmp)
    assert ("| W1.small | gpugrad.compile | 0.07 (≤ 0.1: met) | 1.50 (≤ 1: not met) | n/a "
            "| 0.30 |") in text
    assert "| W2.chain | gpugrad.compile | 0.06 | 0.89 | n/a | 85% of copy (≥ 80%: met) |" in text
    assert "| K.kernels | eager | — | — | — | 70% of copy (≥ 80%: not met) |" in text
    assert "TF32" in text  # the target this run does not measure is named
    # a --tf32 run: W1 medium/large get the TF32 target, and the fp32 ones are named as missing
    rows.append(_row("W1.medium", "W1", dict(w1, gpugrad=1.02, torch=1.0)))
    record["environment"]["tf32"] = True
    tf32 = compare.compare(record)
    e = next(e for e in tf32["entries"] if e["row"] == "W1.medium" and e["reference"] == "torch"
             and e["subject"] == "gpugrad")
    assert e["status"] == "met" and "TF32" in e["target"]["text"]
    assert tf32["precision"] == "tf32" and "fp32" in tf32["not_measured"]
    del record["environment"]["tf32"], rows[-1]
    # the CPU targets of the same figures
    record["environment"]["device"] = "cpu"
    cpu = {(e["row"], e["subject"], e["reference"]): e["status"]
           for e in compare.compare(record)["entries"]}
    assert cpu[("W1.small", "gpugrad", "torch")] == "met"
    assert cpu[("W1.small", "gpugrad_compile", "torch_graph")] is None
    assert cpu[("W3.fwdbwd", "gpugrad", "torch")] == "not met"


def test_compare_from_a_stored_record(tmp_path, capsys, device):
    assert cli.main(["--tiny", "--device", device, "--workloads", "W3", "--no-torch",
                     "--eager-only", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Comparison (" not in printed  # only with --compare
    assert cli.main(["--compare-from", str(tmp_path / "latest.json")]) == 0
    out = capsys.readouterr().out
    assert "| W3.fwdbwd | eager | n/a" in out and "n/a)" in out


class _FakeCuda:
    """torch.cuda's capture API, recording what is called (the CUDA path, on a CPU)."""

    def __init__(self, log):
        self.log = log
        fake = self

        class Stream:
            def wait_stream(self, other):
                fake.log.append("wait")

        class CUDAGraph:
            def replay(self):
                fake.log.append("replay")
                fake.body()  # a replay runs what was captured

        self.Stream, self.CUDAGraph, self.body = Stream, CUDAGraph, None

    def current_stream(self):
        return self.Stream()

    def stream(self, s):
        return _Ctx(self.log, "side")

    def graph(self, g):
        return _Ctx(self.log, "capture")


class _Ctx:
    def __init__(self, log, what):
        self.log, self.what = log, what

    def __enter__(self):
        self.log.append(self.what)

    def __exit__(self, *exc):
        pass


def test_torch_graph_peer_follows_the_recipe():
    # The CUDA-only wrapper's logic, with a stand-in for torch.cuda: warm-up calls on a side
    # stream, then one capture replayed at once, then replays of the static output.
    log, counter = [], {"n": 0}
    cuda = _FakeCuda(log)
    peer = TorchGraphPeer(type("torch", (), {"cuda": cuda}), "cuda")

    def step():
        counter["n"] += 1
        log.append("step")
        return counter["n"]
    cuda.body = step
    call = peer.wrap(step)
    outs = [call() for _ in range(5)]
    assert outs[:3] == [1, 2, 3]  # warm-ups return their own outputs
    assert outs[3] == outs[4] == 4  # the capture's static output (the fake captures by running)
    assert log.count("side") == 3 and log.count("capture") == 1 and log.count("replay") == 2
    assert log.index("capture") > max(i for i, x in enumerate(log) if x == "side")


def test_torch_compile_peer_functional_step_is_the_eager_step():
    # The functional forms torch.compile receives (grad_and_value, the update inside) give
    # the eager steps' numbers; torch.compile itself is replaced by the identity here
    # (compiling takes a minute on a CPU).
    import types
    torch = torch_or_skip()
    shim = types.SimpleNamespace(compile=lambda f: f, func=torch.func, no_grad=torch.no_grad)
    t_peer, c_peer = TorchPeer(torch, "cpu"), TorchCompilePeer(shim, "cpu")
    c_peer.tensor = t_peer.tensor
    eager, comp = (workloads.MLP(p, SIZES, BATCH, seed=3) for p in (t_peer, t_peer))
    fn = c_peer.wrap_grad(comp.step, workloads.mlp_loss, comp.params, (comp.x, comp.onehot),
                          lr=workloads.LR)
    for _ in range(3):
        assert_close(fn(), eager.step(), rtol=1e-5, atol=1e-6, msg="W1 functional loss")
    for pc, pe in zip(comp.params, eager.params):
        assert_close(pc.detach(), pe.detach(), rtol=1e-5, atol=1e-6, msg="W1 weights")
    xs = [torch.linspace(-1, 1, 32, requires_grad=True) for _ in range(2)]
    fn = c_peer.wrap_grad(None, workloads.chain_params_loss, [xs[1]])
    assert_close(fn(), workloads.chain_step(xs[0]), rtol=1e-6, msg="W2 functional loss")
    assert_close(xs[1].grad, xs[0].grad, rtol=1e-6, msg="W2 functional grad")


def test_kernel_case_summarizes_the_bandwidth_table(monkeypatch):
    # K's CUDA path, with the table's rows given (gpugrad._kernel_bench needs a GPU).
    import gpugrad._kernel_bench as kb
    rows = [{"kernel": k, "n": 8, "dtype": "float32", "bytes": 96e6, "copy_ms": 1.0,
             "copy_gbps": 1000.0, "elementwise_ms": 1.0, "elementwise_gbps": 700.0,
             "elementwise_frac": e, "vectorized_ms": None, "vectorized_gbps": v and 900.0,
             "vectorized_frac": v}
            for k, e, v in (("sigmoid", 0.7, 0.9), ("mul_backward", 0.6, None),
                            ("sgd_step", 0.85, 0.95))]
    seen = {"names": []}

    def fake_bandwidth(name, n=0, dtype="float32", repeat=0, warmup=0):
        seen["names"].append(name)
        seen.update(n=n, repeat=repeat)
        if name == "sgd_step":
            raise RuntimeError("nvrtc: compile failed\n(the rest of the log)")
        return next(r for r in rows if r["kernel"] == name)
    monkeypatch.setattr(kb, "kernel_bandwidth", fake_bandwidth)
    case = workloads.k_case("tiny")
    assert case.skip_reason(GpugradPeer(gpugrad, "cpu")) is None
    assert case.skip_reason(TorchPeer(None, "cpu")) == "K.kernels is gpugrad only"
    with pytest.raises(workloads.Unavailable, match="needs CUDA"):
        case.run(GpugradPeer(gpugrad, "cpu"))
    res = case.run(GpugradPeer(gpugrad, "cuda"))
    assert seen == {"names": ["sigmoid", "mul_backward", "sgd_step"], "n": 2 ** 16,
                    "repeat": 2}
    assert res.value == pytest.approx(60.0)  # the worst kernel at its better path
    assert (res.extra["worst_kernel"], res.extra["n_at_target"]) == ("mul_backward", 1)
    assert res.extra["failed"] == {"sgd_step": "RuntimeError: nvrtc: compile failed"}
    record = {"rows": [{"id": "K.kernels", "results": {"gpugrad": {"extra": res.extra}}}]}
    text = report.kernel_table(record)
    assert text.startswith("K: 1 of 2 kernels at >= 80%") and "mul_backward" in text
    assert "Failed: {'sgd_step'" in text


def test_gpugrad_compile_peer_releases_its_capture(device):
    peer = GpugradCompilePeer(gpugrad, device)
    mlp = workloads.MLP(peer, SIZES, BATCH, seed=3)
    fn = peer.wrap_grad(mlp.step, workloads.mlp_loss, mlp.params, (mlp.x, mlp.onehot))
    from gpugrad._compile import CompiledFunction
    assert isinstance(fn, CompiledFunction)
    for _ in range(4):
        fn()
    assert fn.stats["captures"] == 1 and fn.signatures()
    peer.release()
    assert fn.signatures() == [] and peer._compiled is None


@pytest.mark.gpu
@pytest.mark.slow
def test_torch_compile_runs_on_cuda(tmp_path, capsys):
    # On a GPU torch.compile is on by default; its losses follow the eager ones.
    torch = torch_or_skip()
    if not torch.cuda.is_available():
        pytest.skip("this torch has no CUDA")
    assert cli.main(["--tiny", "--device", "cuda", "--workloads", "W2", "--out",
                     str(tmp_path), "--no-progress"]) == 0
    assert "WARNING" not in capsys.readouterr().out
    record = json.loads((tmp_path / "latest.json").read_text(encoding="utf-8"))
    chain = next(r for r in record["rows"] if r["id"] == "W2.chain")
    for key in ("torch_graph", "torch_compile"):
        assert chain["results"][key]["value"] > 0, chain["results"][key]


def test_report_warns_when_a_captured_step_leaves_the_eager_losses():
    peers = [{"key": k, "label": k, "available": True}
             for k in ("gpugrad", "torch", "gpugrad_compile")]
    losses = {"gpugrad": [2.0, 1.9, 1.8], "torch": [2.0, 1.9, 1.8],
              "gpugrad_compile": [2.0, 1.9, 1.5]}
    row = _row("W1.small", "W1", {k: 1.0 for k in losses},
               **{k: {"first_losses": v} for k, v in losses.items()})
    notes = report.footnotes({"peers": peers, "rows": [row]})
    warned = [n for n in notes if n.startswith("WARNING")]
    assert len(warned) == 1 and "gpugrad_compile's losses over its first 3 calls" in warned[0]
    row["results"]["gpugrad_compile"]["extra"]["first_losses"][2] = 1.8
    assert not any(n.startswith("WARNING") for n in report.footnotes(
        {"peers": peers, "rows": [row]}))
