"""The one-kernel backward of a fused loss (``gpugrad._lazy._fast_backward``) through both
forms of backward: ``loss.backward()`` and ``gpugrad.autograd.backward(loss)`` take it under
the same conditions (one pending tensor, the implicit seed, no ``inputs=``, no
``create_graph``), and give eager's gradients; every other call takes the engine, with
eager's gradients too.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad import _lazy
from helpers import assert_close

pytestmark = pytest.mark.usefixtures("fusion_state")  # tests/conftest.py

TOL = dict(rtol=1e-6, atol=1e-6)


def _leaves(device):
    rng = np.random.default_rng(3)
    x = gpugrad.tensor(rng.standard_normal(64).astype("float32"), device=device,
                       requires_grad=True)
    w = gpugrad.tensor(rng.standard_normal(64).astype("float32"), device=device,
                       requires_grad=True)
    return x, w


def _loss(x, w):
    return ((x * 0.5 + 0.1).tanh() * w.sigmoid() + x * x).sum()


def _eager_grads(x, w, **kw):
    xe, we = x.detach().requires_grad_(), w.detach().requires_grad_()
    gpugrad.autograd.backward(_loss(xe, we), **kw)
    return xe.grad, we.grad


FORMS = {
    "method": lambda loss, **kw: loss.backward(**kw),
    "function": lambda loss, **kw: gpugrad.autograd.backward(loss, **kw),
    "function_list": lambda loss, **kw: gpugrad.autograd.backward([loss], **kw),
    "function_none_seed": lambda loss, **kw: gpugrad.autograd.backward(loss, [None], **kw),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_both_forms_take_the_one_kernel_backward(form, device):
    x, w = _leaves(device)
    with _lazy.fusing():
        loss = _loss(x, w)
        assert type(loss) is not gpugrad.Tensor  # pending
        FORMS[form](loss)
    assert _lazy.stats["fast_backwards"] == 1
    assert _lazy.stats["backward_launches"] == 0  # the engine did not run the region
    gx, gw = _eager_grads(x, w)
    assert_close(x.grad, gx, **TOL)
    assert_close(w.grad, gw, **TOL)
    assert type(loss) is gpugrad.Tensor
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()  # released, as after the engine's backward


def test_function_form_with_retain_graph_accumulates(device):
    x, w = _leaves(device)
    with _lazy.fusing():
        loss = _loss(x, w)
        gpugrad.autograd.backward(loss, retain_graph=True)
    assert _lazy.stats["fast_backwards"] == 1
    gpugrad.autograd.backward(loss)  # a plain tensor now: the engine, the backward kernel
    assert _lazy.stats["fast_backwards"] == 1
    gx, gw = _eager_grads(x, w)
    assert_close(x.grad, 2 * gx, **TOL)
    assert_close(w.grad, 2 * gw, **TOL)


def test_function_form_inside_compile(device):
    x, w = _leaves(device)

    def step(x, w):
        x.grad = w.grad = None
        loss = _loss(x, w)
        gpugrad.autograd.backward(loss)
        return loss

    compiled = gpugrad.compile(step, warmup=1)
    gx, gw = _eager_grads(x, w)
    for i in range(3):
        compiled(x, w)
        assert_close(x.grad, gx, **TOL)
        assert_close(w.grad, gw, **TOL)
    assert _lazy.stats["fast_backwards"] >= 3


@pytest.mark.parametrize("case", ["grad_tensors", "inputs", "create_graph", "two_tensors"])
def test_function_form_not_taken(case, device):
    x, w = _leaves(device)
    with _lazy.fusing():
        loss = _loss(x, w)
        if case == "grad_tensors":
            gpugrad.autograd.backward(loss, gpugrad.tensor(2.0, device=device))
        elif case == "inputs":
            gpugrad.autograd.backward(loss, inputs=[x])
        elif case == "create_graph":
            gpugrad.autograd.backward(loss, create_graph=True)
        else:
            gpugrad.autograd.backward([loss, (x * 3).sum()])
    assert _lazy.stats["fast_backwards"] == 0
    gx, gw = _eager_grads(x, w, create_graph=case == "create_graph")
    expect = {"grad_tensors": (2 * gx, 2 * gw), "inputs": (gx, None),
              "create_graph": (gx, gw), "two_tensors": (gx + 3, gw)}[case]
    assert_close(x.grad.detach(), expect[0].detach(), **TOL)
    if expect[1] is None:
        assert w.grad is None
    else:
        assert_close(w.grad.detach(), expect[1].detach(), **TOL)
