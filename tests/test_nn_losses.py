"""Every loss (module and functional) against PyTorch's for each reduction: values and
gradients; stability on large logits; gradcheck in float64; errors."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
import gpugrad.nn as nn
import gpugrad.nn.functional as F
from gpugrad.autograd import gradcheck
from helpers import assert_close, torch_or_skip

RNG = np.random.default_rng(7)
REDUCTIONS = ["none", "mean", "sum"]


def _both(name, args, kwargs, arrays, device, grad=(0,)):
    """Loss module ``name`` of torch and gpugrad on the same arrays; backward of the sum.
    Returns (torch loss, gpugrad loss, torch tensors, gpugrad tensors)."""
    torch = torch_or_skip()
    tt = [torch.tensor(a, requires_grad=i in grad) for i, a in enumerate(arrays)]
    gt = [gpugrad.tensor(a, device=device, requires_grad=i in grad) for i, a in enumerate(arrays)]
    targs = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    gargs = [gpugrad.tensor(a, device=device) if isinstance(a, np.ndarray) else a for a in args]
    tkw = {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    gkw = {k: gpugrad.tensor(v, device=device) if isinstance(v, np.ndarray) else v
           for k, v in kwargs.items()}
    tmod, gmod = getattr(torch.nn, name)(*targs, **tkw), getattr(nn, name)(*gargs, **gkw)
    assert repr(gmod) == repr(tmod)
    tl, gl = tmod(*tt), gmod(*gt)
    tl.sum().backward()
    gl.sum().backward()
    return tl, gl, tt, gt


def _check(name, arrays, device, args=(), grad=(0,), rtol=1e-10, atol=1e-12, **kwargs):
    tl, gl, tt, gt = _both(name, args, kwargs, arrays, device, grad)
    assert_close(gl, tl, rtol, atol, f"{name} value")
    for i in grad:
        assert_close(gt[i].grad, tt[i].grad, rtol, atol, f"{name} grad of argument {i}")
    return gl


def _x(*shape):
    return RNG.standard_normal(shape)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_regression_losses(reduction, device):
    x, y = _x(3, 4), _x(3, 4)
    for name, kw in [("MSELoss", {}), ("L1Loss", {}), ("SmoothL1Loss", {}),
                     ("SmoothL1Loss", {"beta": 0.5}), ("SmoothL1Loss", {"beta": 0.0}),
                     ("HuberLoss", {}), ("HuberLoss", {"delta": 0.3})]:
        _check(name, [x, y], device, grad=(0, 1), reduction=reduction, **kw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_indices(reduction, device):
    x = _x(5, 4)
    t = np.array([0, 3, 1, 1, 2])
    _check("CrossEntropyLoss", [x, t], device, reduction=reduction)
    w = np.array([0.5, 2.0, 1.0, 0.1])
    _check("CrossEntropyLoss", [x, t], device, reduction=reduction, weight=w)
    ti = np.array([0, -100, 1, 3, -100])
    _check("CrossEntropyLoss", [x, ti], device, reduction=reduction, weight=w)
    t7 = np.array([0, 7, 1, 7, 2])
    _check("CrossEntropyLoss", [x, t7], device, reduction=reduction, ignore_index=7,
           label_smoothing=0.2)
    _check("CrossEntropyLoss", [x, ti], device, reduction=reduction, weight=w,
           label_smoothing=0.1)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_probabilities(reduction, device):
    x = _x(4, 3)
    p = np.abs(_x(4, 3))
    p /= p.sum(1, keepdims=True)
    _check("CrossEntropyLoss", [x, p], device, reduction=reduction)
    _check("CrossEntropyLoss", [x, p], device, grad=(0, 1), reduction=reduction,
           weight=np.array([1.0, 0.2, 3.0]), label_smoothing=0.3)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_k_dim_and_unbatched(reduction, device):
    x = _x(2, 3, 4, 2)
    t = RNG.integers(0, 3, (2, 4, 2))
    t[0, 1, 1] = -100
    _check("CrossEntropyLoss", [x, t], device, reduction=reduction,
           weight=np.array([1.0, 2.0, 0.5]), label_smoothing=0.1)
    p = np.abs(_x(2, 3, 4))
    _check("CrossEntropyLoss", [_x(2, 3, 4), p / p.sum(1, keepdims=True)], device,
           reduction=reduction)
    _check("CrossEntropyLoss", [_x(5), np.array(2)], device, reduction=reduction)


def test_cross_entropy_large_logits_stable(device):
    x = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4], [3e4, 3e4, 3e4]])
    t = np.array([1, 2, 0])
    loss = _check("CrossEntropyLoss", [x, t], device, reduction="none")
    assert np.isfinite(loss.tolist()).all()
    assert loss.tolist()[0] == pytest.approx(1e4)
    _check("CrossEntropyLoss", [x, t], device, label_smoothing=0.1)
    xs = np.array([[1e4, -1e4], [-1e4, 1e4]])
    _check("BCEWithLogitsLoss", [xs, np.array([[1.0, 0.0], [1.0, 0.0]])], device)
    lp = F.log_softmax(gpugrad.tensor(x, device=device), 1)
    _check("NLLLoss", [np.array(lp.tolist()), t], device)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(reduction, device):
    lp = np.log(np.abs(_x(4, 3)) + 0.1)
    t = np.array([2, 0, -100, 1])
    _check("NLLLoss", [lp, t], device, reduction=reduction)
    _check("NLLLoss", [lp, np.array([2, 0, 1, 1])], device, reduction=reduction,
           weight=np.array([0.3, 1.0, 2.0]), ignore_index=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_losses(reduction, device):
    p = 1 / (1 + np.exp(-_x(3, 4)))
    y = (RNG.random((3, 4)) > 0.5).astype(np.float64)
    w = np.abs(_x(4))
    _check("BCELoss", [p, y], device, reduction=reduction)
    _check("BCELoss", [p, y], device, reduction=reduction, weight=w)
    logits = _x(3, 4) * 3
    soft = RNG.random((3, 4))
    _check("BCEWithLogitsLoss", [logits, soft], device, grad=(0, 1), reduction=reduction)
    _check("BCEWithLogitsLoss", [logits, y], device, reduction=reduction, weight=w,
           pos_weight=np.array([0.5, 1.0, 2.0, 3.0]))


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides")  # torch's advice
@pytest.mark.parametrize("reduction", REDUCTIONS + ["batchmean"])
def test_kl_div(reduction, device):
    inp = np.log(np.abs(_x(3, 4)) + 0.1)
    t = np.abs(_x(3, 4))
    _check("KLDivLoss", [inp, t], device, grad=(0, 1), reduction=reduction)
    t[0, 1] = 0.0  # 0 log 0 = 0 (torch's gradient w.r.t. such a target is NaN: not compared)
    _check("KLDivLoss", [inp, t], device, grad=(0,), reduction=reduction)
    _check("KLDivLoss", [inp, _x(3, 4)], device, grad=(0, 1), reduction=reduction,
           log_target=True)


def test_functional_forms_match_modules(device):
    x = gpugrad.tensor(_x(4, 3), device=device)
    t = gpugrad.tensor([0, 2, 1, 1], device=device)
    assert F.cross_entropy(x, t).item() == nn.CrossEntropyLoss()(x, t).item()
    assert F.nll_loss(F.log_softmax(x, 1), t).item() == pytest.approx(
        F.cross_entropy(x, t).item(), rel=1e-12)
    y = gpugrad.tensor(_x(4, 3), device=device)
    assert F.mse_loss(x, y, reduction="sum").item() == nn.MSELoss(reduction="sum")(x, y).item()
    assert F.mse_loss(x, y, size_average=False).item() == F.mse_loss(x, y, reduction="sum").item()


def test_loss_weight_is_a_buffer():
    w = gpugrad.tensor([1.0, 2.0])
    ce = nn.CrossEntropyLoss(weight=w)
    assert list(ce.state_dict()) == ["weight"] and list(ce.parameters()) == []
    assert list(nn.BCEWithLogitsLoss(pos_weight=w).state_dict()) == ["pos_weight"]


def test_gradcheck_losses(device):
    def g(*shape):
        return gpugrad.tensor(_x(*shape), device=device, requires_grad=True)

    x, y = g(3, 4), g(3, 4)
    t = gpugrad.tensor([1, 0, -100], device=device)
    w = gpugrad.tensor([0.5, 1.0, 2.0, 0.3], device=device, dtype=gpugrad.float64)
    for fn in (F.mse_loss, F.l1_loss, lambda a, b: F.smooth_l1_loss(a, b, beta=0.7),
               lambda a, b: F.huber_loss(a, b, delta=0.4),
               lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=w),
               lambda a, b: F.kl_div(a, b.exp(), reduction="batchmean"),
               lambda a, b: F.kl_div(a, b, log_target=True),
               lambda a, b: F.cross_entropy(a, b.softmax(1), label_smoothing=0.2, weight=w)):
        assert gradcheck(fn, (x, y))
    assert gradcheck(lambda a: F.cross_entropy(a, t, weight=w, label_smoothing=0.1), (x,))
    assert gradcheck(lambda a: F.nll_loss(a, t, reduction="sum"), (x,))
    p = gpugrad.tensor(RNG.random((3, 4)) * 0.8 + 0.1, device=device, requires_grad=True)
    assert gradcheck(lambda a, b: F.binary_cross_entropy(a, b.sigmoid()), (p, y))


def test_loss_errors(device):
    x = gpugrad.randn(3, 4, device=device)
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        F.mse_loss(x, x, reduction="avg")
    with pytest.raises(IndexError, match="out of bounds"):
        F.cross_entropy(x, gpugrad.tensor([0, 4, 1], device=device))
    with pytest.raises(ValueError, match="batch_size"):
        F.cross_entropy(x, gpugrad.tensor([0, 1], device=device))
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(x, x)
    with pytest.raises(ValueError, match="same as input size"):
        F.binary_cross_entropy_with_logits(x, x[:2])
    with pytest.warns(UserWarning, match="target size"):
        F.mse_loss(x, x[0])
