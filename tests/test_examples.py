"""Each script of examples/ runs (in quick mode) as a test: the digits classifiers reach a
reduced accuracy bar within 30 s of CPU time, the seed 002 loop prints torch's losses."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp_digits", "cnn_digits"])
def test_digits_example_quick(name, device, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("tqdm")
    example = _load(name)
    start = time.process_time()
    acc = example.main(["--quick", "--device", device])
    elapsed = time.process_time() - start
    out = capsys.readouterr().out
    assert f"test accuracy: {acc:.4f}" in out
    # the full run reaches >= 97% (see the report); a few epochs must already reach 90%
    assert acc >= 0.90, f"{name} --quick: test accuracy {acc:.4f}"
    if device == "cpu":  # on a GPU, a fresh machine first compiles every CuPy kernel
        assert elapsed < 30, f"{name} --quick took {elapsed:.1f} s of CPU time"


def test_seed002_training_example(device, capsys):
    example = _load("seed002_training")
    runs = example.main(["--device", device])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("Epoch [")]
    assert lines == runs["gpugrad"] and len(lines) == 10
    assert runs["gpugrad.optim.SGD"] == runs["gpugrad"]
    losses = [float(line.rsplit(" ", 1)[1]) for line in lines]
    assert losses[-1] < 0.1 * losses[0]  # the fit converges
    if "torch" in runs:
        assert "the same printed losses" in out
