"""Shared test helpers: PyTorch (when installed) as the reference, conversions both ways."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad


def torch_or_skip():
    """The torch module, or skip the test cleanly when PyTorch is not installed."""
    return pytest.importorskip("torch")


def to_numpy(t) -> np.ndarray:
    """Host copy of a gpugrad or torch tensor (or anything array-like)."""
    if isinstance(t, gpugrad.Tensor):
        return t.detach().cpu().numpy()
    if hasattr(t, "detach"):  # torch
        return t.detach().cpu().numpy()
    return np.asarray(t)


def to_torch(t, requires_grad=None):
    """A CPU torch tensor with the values (and requires_grad) of a gpugrad tensor."""
    torch = torch_or_skip()
    out = torch.from_numpy(to_numpy(t).copy())
    rg = t.requires_grad if requires_grad is None else requires_grad
    return out.requires_grad_(rg)


def assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=""):
    """Values (and shapes) match within tolerance; None matches None only."""
    if actual is None or expected is None:
        assert actual is None and expected is None, f"{msg}: {actual!r} vs {expected!r}"
        return
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape, f"{msg}: shape {a.shape} vs {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=msg, equal_nan=True)


class Lib:
    """A module (gpugrad or torch) plus the device its tensors are made on, so that one test
    body runs on both: ``lib.tensor(...)``, ``lib.ones(...)``; anything else is the module's."""

    def __init__(self, mod, device) -> None:
        self.mod, self.device, self.name = mod, device, mod.__name__
        self.Function = mod.autograd.Function
        self.once_differentiable = mod.autograd.function.once_differentiable

    def tensor(self, data, **kw):
        return self.mod.tensor(data, device=self.device, **kw)

    def ones(self, *shape, **kw):
        return self.mod.ones(*shape, device=self.device, **kw)

    def zeros(self, *shape, **kw):
        return self.mod.zeros(*shape, device=self.device, **kw)

    def __getattr__(self, name):
        return getattr(self.mod, name)


def vals(t):
    """The values of a tensor as (nested) Python lists."""
    return to_numpy(t).tolist()
