"""gpugrad.nn.init: gains, bounds and statistics of each initialiser, torch's default
initialisation of every layer (same distributions and bounds), seeded reproducibility."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gpugrad
import gpugrad.nn as nn
from gpugrad.nn import init
from helpers import to_numpy, torch_or_skip


@pytest.mark.parametrize("nl,param", [("linear", None), ("conv2d", None), ("sigmoid", None),
                                      ("tanh", None), ("relu", None), ("leaky_relu", None),
                                      ("leaky_relu", 0.2), ("selu", None)])
def test_calculate_gain_matches_torch(nl, param):
    torch = torch_or_skip()
    assert init.calculate_gain(nl, param) == pytest.approx(torch.nn.init.calculate_gain(nl,
                                                                                        param))


def test_calculate_gain_errors():
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="not a valid number"):
        init.calculate_gain("leaky_relu", "x")


def _t(*shape, device):
    return gpugrad.empty(*shape, device=device)


def test_fill_initialisers(device):
    t = _t(3, 4, device=device)
    v = t._version.value
    assert init.constant_(t, 0.25) is t and (to_numpy(t) == 0.25).all()
    assert t._version.value > v  # an in-place write
    assert not to_numpy(init.zeros_(t)).any()
    assert (to_numpy(init.ones_(t)) == 1).all()
    assert (to_numpy(init.eye_(t)) == np.eye(3, 4)).all()
    with pytest.raises(ValueError, match="2 dimensions"):
        init.eye_(_t(2, device=device))


def test_initialisers_work_on_parameters_that_require_grad(device):
    p = nn.Parameter(_t(50, 40, device=device))
    init.kaiming_normal_(p)
    assert p.requires_grad and p.is_leaf and p.grad_fn is None


def test_uniform_and_normal_statistics(device):
    gpugrad.manual_seed(0)
    t = _t(200, 100, device=device)
    a = to_numpy(init.uniform_(t, -2.0, 3.0))
    assert a.min() >= -2.0 and a.max() < 3.0 and abs(a.mean() - 0.5) < 0.05
    a = to_numpy(init.normal_(t, 1.0, 0.5))
    assert abs(a.mean() - 1.0) < 0.01 and abs(a.std() - 0.5) < 0.01
    a = to_numpy(init.trunc_normal_(t, 0.0, 1.0, -1.0, 1.5))
    assert a.min() >= -1.0 and a.max() <= 1.5 and a.std() < 1.0


@pytest.mark.parametrize("shape", [(64, 32), (16, 8, 3, 3)])
def test_xavier_and_kaiming(shape, device):
    gpugrad.manual_seed(1)
    fan_in = shape[1] * int(np.prod(shape[2:]))
    fan_out = shape[0] * int(np.prod(shape[2:]))
    t = _t(*shape, device=device)
    a = to_numpy(init.xavier_uniform_(t, gain=2.0))
    bound = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
    a = to_numpy(init.xavier_normal_(t))
    assert abs(a.std() / math.sqrt(2.0 / (fan_in + fan_out)) - 1) < 0.1
    a = to_numpy(init.kaiming_uniform_(t, a=math.sqrt(5)))
    bound = math.sqrt(3.0) * math.sqrt(2.0 / 6.0) / math.sqrt(fan_in)  # = 1/sqrt(fan_in)
    assert bound == pytest.approx(1 / math.sqrt(fan_in))
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
    a = to_numpy(init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu"))
    assert abs(a.std() / (math.sqrt(2.0) / math.sqrt(fan_out)) - 1) < 0.1
    with pytest.raises(ValueError, match="fan_in, fan_out"):
        init.kaiming_uniform_(t, mode="fan_avg")
    with pytest.raises(ValueError, match="fewer than 2"):
        init.xavier_uniform_(_t(4, device=device))


def test_seeded_initialisation_is_reproducible():
    gpugrad.manual_seed(3)
    a = nn.Linear(4, 3).weight.tolist()
    gpugrad.manual_seed(3)
    assert nn.Linear(4, 3).weight.tolist() == a



@pytest.mark.parametrize("build,checks", [
    # (layer factory on a library, {parameter: ("uniform", bound) | ("normal", std) | value})
    (lambda n: n.Linear(50, 30), {"weight": ("uniform", 1 / math.sqrt(50)),
                                  "bias": ("uniform", 1 / math.sqrt(50))}),
    (lambda n: n.Conv2d(6, 20, 3, groups=2), {"weight": ("uniform", 1 / math.sqrt(27)),
                                              "bias": ("uniform", 1 / math.sqrt(27))}),
    (lambda n: n.Conv1d(4, 30, 5), {"weight": ("uniform", 1 / math.sqrt(20)),
                                    "bias": ("uniform", 1 / math.sqrt(20))}),
    (lambda n: n.ConvTranspose2d(20, 12, 3, groups=2),
     {"weight": ("uniform", 1 / math.sqrt(54)), "bias": ("uniform", 1 / math.sqrt(54))}),
    (lambda n: n.Bilinear(20, 5, 30), {"weight": ("uniform", 1 / math.sqrt(20)),
                                       "bias": ("uniform", 1 / math.sqrt(20))}),
    (lambda n: n.Embedding(200, 30), {"weight": ("normal", 1.0)}),
    (lambda n: n.BatchNorm2d(8), {"weight": 1.0, "bias": 0.0, "running_mean": 0.0,
                                  "running_var": 1.0}),
    (lambda n: n.LayerNorm(8), {"weight": 1.0, "bias": 0.0}),
    (lambda n: n.GroupNorm(2, 8), {"weight": 1.0, "bias": 0.0}),
])
def test_default_initialisation_matches_torch(build, checks):
    torch = torch_or_skip()
    torch.manual_seed(0)
    gpugrad.manual_seed(0)
    tmod, gmod = build(torch.nn), build(nn)
    tsd, gsd = tmod.state_dict(), gmod.state_dict()
    assert list(gsd) == list(tsd)
    for name, check in checks.items():
        g, t = to_numpy(gsd[name]), tsd[name].numpy()
        assert g.shape == t.shape and g.dtype == t.dtype
        if isinstance(check, float):
            assert (g == check).all() and (t == check).all()
        elif check[0] == "uniform":
            bound = check[1]
            for a in (g, t):  # same support, and (when there are enough values) spread over it
                assert np.abs(a).max() <= bound + 1e-7
                if a.size >= 100:
                    assert np.abs(a).max() > 0.9 * bound
                    assert abs(a.std() / (bound / math.sqrt(3)) - 1) < 0.2
        else:
            for a in (g, t):
                assert abs(a.std() / check[1] - 1) < 0.1 and abs(a.mean()) < 0.1
