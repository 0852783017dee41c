"""One suite for every device: tests take the ``device`` fixture, which is the default device
(``GPUGRAD_DEVICE=cpu`` in CI, ``cuda`` on a GPU machine). Tests marked ``gpu`` need CUDA."""
from __future__ import annotations

import pytest

import gpugrad
from helpers import Lib, torch_or_skip

DEVICE = str(gpugrad.get_default_device())


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_collection_modifyitems(config, items):
    if gpugrad.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)


def pytest_report_header(config):
    return f"gpugrad device: {DEVICE}"


@pytest.fixture
def device() -> str:
    """The device every tensor of the test should live on."""
    return DEVICE


@pytest.fixture(params=["gpugrad", "torch"])
def lib(request, device):
    """Runs a test twice: on gpugrad (on ``device``) and on PyTorch, the reference (skipped
    when not installed). Fails a test that leaves grad mode disabled."""
    if request.param == "torch":
        mod = torch_or_skip()
        lib = Lib(mod, "cpu")
    else:
        mod = gpugrad
        lib = Lib(mod, device)
    assert mod.is_grad_enabled()
    yield lib
    # A failing test must not leave recording off for the tests after it.
    enabled = mod.is_grad_enabled()
    mod.set_grad_enabled(True)
    assert enabled, "the test left grad mode disabled"


@pytest.fixture
def fusion_state(tmp_path, monkeypatch):
    """For the tests of fusion (gpugrad/_lazy.py, _fusion.py): a private kernel cache and
    zeroed counters per test; small NumPy arrays fused too (by default they run eagerly:
    _lazy.NUMPY_MIN_ELEMENTS); afterwards, no fusing left on and the lazy applies restored."""
    from gpugrad import _fusion, _lazy
    from gpugrad.ops import elementwise as E
    monkeypatch.setattr(_lazy, "NUMPY_MIN_ELEMENTS", 0)
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path / "cache"))
    _fusion.cache_clear()
    _lazy._graphs.clear()
    _lazy.reset_stats()
    yield
    assert not _lazy.is_fusing()
    assert "apply" not in E.Mul.__dict__ and "apply" not in E.Tanh.__dict__  # restored
