"""gpugrad.optim.lr_scheduler against torch.optim.lr_scheduler: the learning rates (and, for
OneCycleLR, the momenta / betas) of every step over 30 steps, on two param groups; state
dict round trips; errors."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad
from helpers import torch_or_skip

STEPS = 30


def _scale(e):
    return 0.95 ** e


def _halve_after_5(e):
    return 1.0 if e < 5 else 0.5


CASES = [
    ("StepLR", dict(step_size=7, gamma=0.5), "SGD"),
    ("MultiStepLR", dict(milestones=[5, 12, 12, 20], gamma=0.3), "SGD"),
    ("ExponentialLR", dict(gamma=0.9), "SGD"),
    ("CosineAnnealingLR", dict(T_max=10, eta_min=0.001), "SGD"),  # 30 steps: past T_max
    ("CosineAnnealingLR", dict(T_max=30), "Adam"),
    ("LambdaLR", dict(lr_lambda=_scale), "SGD"),
    ("LambdaLR", dict(lr_lambda=[_scale, _halve_after_5]), "SGD"),
    ("OneCycleLR", dict(max_lr=[0.5, 0.1], total_steps=STEPS), "SGD"),
    ("OneCycleLR", dict(max_lr=0.01, total_steps=STEPS), "Adam"),
    ("OneCycleLR", dict(max_lr=0.3, epochs=3, steps_per_epoch=10, three_phase=True), "SGD"),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=STEPS, anneal_strategy="linear",
                        pct_start=0.25, div_factor=10.0, final_div_factor=100.0), "AdamW"),
    ("OneCycleLR", dict(max_lr=0.3, total_steps=STEPS, cycle_momentum=False), "SGD"),
]


def _optimizer(mod, name, params):
    kw = dict(momentum=0.9) if name == "SGD" else {}
    return getattr(mod.optim, name)([{"params": [params[0]], "lr": 0.1},
                                     {"params": [params[1]], "lr": 0.02}], **kw)


def _params(mod):
    return [mod.zeros(2, requires_grad=True), mod.zeros(3, requires_grad=True)]


def _snapshot(opt, sched):
    keys = ("lr", "momentum", "betas")
    return [sched.get_last_lr()] + [[g.get(k) for k in keys] for g in opt.param_groups]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[2]}-{sorted(c[1])}")
def test_schedule_matches_torch(case):
    torch = torch_or_skip()
    name, kw, opt_name = case
    runs = []
    for mod in (gpugrad, torch):
        opt = _optimizer(mod, opt_name, _params(mod))
        sched = getattr(mod.optim.lr_scheduler, name)(opt, **kw)
        trace = [_snapshot(opt, sched)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: scheduler stepped before any opt.step()
            for _ in range(STEPS):
                opt.step()
                sched.step()
                trace.append(_snapshot(opt, sched))
        runs.append(trace)
    ours, theirs = runs
    for t, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{name}{kw} step {t}: {a} vs {b}"


def test_state_dict_round_trip_continues_identically():
    p = _params(gpugrad)
    opt = _optimizer(gpugrad, "SGD", p)
    sched = gpugrad.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.4, total_steps=STEPS)
    for _ in range(10):
        opt.step()
        sched.step()
    opt_sd, sched_sd = opt.state_dict(), sched.state_dict()
    assert "optimizer" not in sched_sd and sched_sd["last_epoch"] == 10

    q = _params(gpugrad)
    opt2 = _optimizer(gpugrad, "SGD", q)
    opt2.load_state_dict(opt_sd)
    sched2 = gpugrad.optim.lr_scheduler.OneCycleLR(opt2, max_lr=0.4, total_steps=STEPS,
                                                   last_epoch=9)
    sched2.load_state_dict(sched_sd)
    for _ in range(STEPS - 10):
        for o, s in ((opt, sched), (opt2, sched2)):
            o.step()
            s.step()
        assert sched.get_last_lr() == sched2.get_last_lr()
        assert [g["momentum"] for g in opt.param_groups] == \
            [g["momentum"] for g in opt2.param_groups]


def test_lambda_state_dict_skips_functions_keeps_callable_objects():
    class Decay:
        def __init__(self):
            self.rate = 0.5

        def __call__(self, e):
            return self.rate ** e

    opt = _optimizer(gpugrad, "SGD", _params(gpugrad))
    fn = Decay()
    sched = gpugrad.optim.lr_scheduler.LambdaLR(opt, [fn, _scale])
    sd = sched.state_dict()
    assert sd["lr_lambdas"] == [{"rate": 0.5}, None]
    fn.rate = 0.1
    sched.load_state_dict(sd)
    assert fn.rate == 0.5


def test_step_with_epoch_uses_closed_form():
    torch = torch_or_skip()
    out = []
    for mod in (gpugrad, torch):
        opt = _optimizer(mod, "SGD", _params(mod))
        sched = mod.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        opt.step()
        with pytest.warns(UserWarning, match="epoch parameter"):
            sched.step(7)
        out.append(sched.get_last_lr())
    assert out[0] == out[1] == [0.1 * 0.25, 0.02 * 0.25]


def test_errors():
    opt = _optimizer(gpugrad, "SGD", _params(gpugrad))
    sched = gpugrad.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=3)
    for _ in range(3):
        sched.step()
    with pytest.raises(ValueError, match="Tried to step 4 times"):
        sched.step()
    with pytest.raises(ValueError, match="either total_steps OR"):
        gpugrad.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1)
    fresh = _optimizer(gpugrad, "SGD", _params(gpugrad))
    with pytest.raises(KeyError, match="initial_lr"):
        gpugrad.optim.lr_scheduler.StepLR(fresh, 3, last_epoch=4)
    with pytest.raises(TypeError, match="is not an Optimizer"):
        gpugrad.optim.lr_scheduler.ExponentialLR(object(), 0.5)
    adagrad = gpugrad.optim.Adagrad([gpugrad.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match="support momentum or beta1"):
        gpugrad.optim.lr_scheduler.OneCycleLR(adagrad, max_lr=0.1, total_steps=5)


def test_scheduled_lr_drives_the_kernel(device):
    """The lr a scheduler sets is the one the next fused step uses."""
    p = gpugrad.tensor([1.0], device=device, requires_grad=True)
    opt = gpugrad.optim.SGD([p], lr=1.0)
    sched = gpugrad.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        p.grad = gpugrad.tensor([1.0], device=device)
        opt.step()
        sched.step()
    np.testing.assert_allclose(p.detach().cpu().numpy(), [1.0 - 1.0 - 0.5 - 0.25])
