"""The tape: order of the reverse pass, accumulation, retain_graph, create_graph,
``autograd.grad``/``backward`` options, hooks, graph introspection, in-place checks, and
memory release.

Most tests take the ``lib`` fixture and run twice: once on gpugrad and once on PyTorch (the
reference; skipped when it is not installed). Their expected values are fixed numbers or
behaviours, so running them on torch shows that the expectation is torch's. Tests about
gpugrad's own internals (saved-tensor release, reference cycles) run on gpugrad only.
"""
from __future__ import annotations

import gc
import math
import re
import sys
import time
import warnings
import weakref

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import Function, Variable
from helpers import assert_close, to_numpy, to_torch, torch_or_skip, vals


# ---- running one test on gpugrad and on torch --------------------------------------------------


# ---- order and dependencies ------------------------------------------------------------------
def test_nodes_run_in_reverse_creation_order(lib):
    # A FIFO of ready nodes would run b before c, a depth-first walk a before b.
    x = lib.tensor(1.0, requires_grad=True)
    log = []
    a = x * 2
    a.register_hook(lambda g: log.append("a"))
    b = x * 3
    b.register_hook(lambda g: log.append("b"))
    c = a * 4
    c.register_hook(lambda g: log.append("c"))
    (b + c).backward()
    assert log == ["c", "b", "a"]
    assert x.grad.item() == 11.0


def test_node_runs_once_after_all_its_gradients_arrived(lib):
    x = lib.tensor(2.0, requires_grad=True)
    a = x * x
    seen = []
    a.register_hook(lambda g: seen.append(g.item()))
    b = a * 3
    c = a.exp()
    d = a.sin()
    (b + c + d).backward()
    expected_ga = 3 + math.exp(4.0) + math.cos(4.0)
    assert len(seen) == 1
    assert seen[0] == pytest.approx(expected_ga, rel=1e-5)
    assert x.grad.item() == pytest.approx(expected_ga * 4.0, rel=1e-5)


def test_value_used_twice_accumulates(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x + x  # x reaches the leaf three times
    y.sum().backward()
    assert vals(x.grad) == [3.0, 5.0, 7.0]


def test_diamond_matches_torch(device):
    torch = torch_or_skip()
    data = [0.5, -1.0, 2.0]

    def f(m, x):
        h = x.tanh()
        left = h * h
        right = h.exp() * x
        return (left + right).sum()

    xg = gpugrad.tensor(data, device=device, requires_grad=True)
    xt = torch.tensor(data, requires_grad=True)
    f(gpugrad, xg).backward()
    f(torch, xt).backward()
    assert_close(xg.grad, xt.grad, rtol=1e-5)


# ---- accumulation and retain_graph -----------------------------------------------------------
def test_grad_accumulates_over_two_backward_calls(lib):
    x = lib.tensor([3.0], requires_grad=True)
    y = x * 2 + x ** 2 + 3
    assert vals(y) == [18.0]
    y.backward(retain_graph=True)
    assert vals(x.grad) == [8.0]
    y.backward()
    assert vals(x.grad) == [16.0]


def test_second_backward_without_retain_graph_raises(lib):
    x = lib.tensor([3.0], requires_grad=True)
    y = x * 2 + x ** 2 + 3
    y.backward()
    with pytest.raises(RuntimeError, match="second time") as info:
        y.backward()
    assert "retain_graph=True" in str(info.value)
    assert vals(x.grad) == [8.0]  # the failed call added nothing


def test_second_grad_call_without_retain_graph_raises(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x.exp()
    lib.autograd.grad(y, x)
    with pytest.raises(RuntimeError, match="second time"):
        lib.autograd.grad(y, x)


def test_retain_graph_then_release(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 3
    y.backward(retain_graph=True)
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 36.0
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_graph_without_saved_tensors_can_be_run_twice(lib):
    # Nothing was freed, so torch allows it; so must we.
    x = lib.tensor(1.0, requires_grad=True)
    y = x + 1
    y.backward()
    y.backward()
    assert x.grad.item() == 2.0


def test_backward_on_tensor_without_grad_raises(lib):
    x = lib.tensor([1.0, 2.0])
    with pytest.raises(RuntimeError, match="does not require grad"):
        x.sum().backward()


# ---- higher-order derivatives ----------------------------------------------------------------
def test_third_derivative_of_cube(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 3
    (g1,) = lib.autograd.grad(y, x, create_graph=True)
    assert g1.item() == 12.0 and g1.requires_grad
    (g2,) = lib.autograd.grad(g1, x, create_graph=True)
    assert g2.item() == 12.0  # 6x
    (g3,) = lib.autograd.grad(g2, x)
    assert g3.item() == 6.0
    assert not g3.requires_grad


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_backward_create_graph_records_grad(lib):
    # seed 002: dy/dx = 12, then d2y/dx2 via x.grad.backward()
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 3
    y.backward(create_graph=True)
    assert x.grad.item() == 12.0
    assert x.grad.requires_grad and x.grad.grad_fn is not None
    g = x.grad
    x.grad = None
    g.backward()
    assert x.grad.item() == 12.0


def test_grads_without_create_graph_do_not_require_grad(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 3
    (g,) = lib.autograd.grad(y, x, retain_graph=True)
    assert not g.requires_grad and g.grad_fn is None
    y.backward()
    assert not x.grad.requires_grad and x.grad.grad_fn is None


_CHAINS = {
    "sin": lambda x: x.sin(),
    "exp": lambda x: x.exp(),
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "log": lambda x: x.log(),
    "chain": lambda x: (x.sigmoid() * 2 + x).log().tanh().exp().sin(),
    "product": lambda x: x.sin() * x.exp() / (x * x + 1),
}


@pytest.mark.parametrize("name", list(_CHAINS))
def test_higher_derivatives_match_torch(device, name):
    torch = torch_or_skip()
    f = _CHAINS[name]
    data = [0.3, 0.9, 1.7]

    def derivatives(m, x):
        out = []
        y = f(x).sum()
        for _ in range(3):
            (y,) = m.autograd.grad(y, x, create_graph=True)
            out.append(y)
            y = y.sum()
        return out

    xg = gpugrad.tensor(data, dtype=gpugrad.float64, device=device, requires_grad=True)
    xt = torch.tensor(data, dtype=torch.float64, requires_grad=True)
    for k, (a, e) in enumerate(zip(derivatives(gpugrad, xg), derivatives(torch, xt))):
        assert_close(a, e, rtol=1e-9, atol=1e-12, msg=f"{name}: derivative {k + 1}")


def test_mixed_second_derivative(lib):
    x = lib.tensor(1.5, requires_grad=True)
    y = lib.tensor(-0.5, requires_grad=True)
    z = x * x * y + y.exp() * x
    gx, gy = lib.autograd.grad(z, (x, y), create_graph=True)
    (gxy,) = lib.autograd.grad(gx, y)
    assert gxy.item() == pytest.approx(2 * 1.5 + math.exp(-0.5), rel=1e-6)


# ---- autograd.grad options -------------------------------------------------------------------
def test_grad_with_grad_outputs(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x
    (g,) = lib.autograd.grad(y, x, grad_outputs=lib.tensor([1.0, 0.5, -1.0]))
    assert vals(g) == [2.0, 2.0, -6.0]
    assert x.grad is None  # grad() does not accumulate


def test_grad_several_outputs_and_inputs(lib):
    x = lib.tensor(2.0, requires_grad=True)
    w = lib.tensor(3.0, requires_grad=True)
    y1 = x * w
    y2 = x ** 2
    gx, gw = lib.autograd.grad([y1, y2], [x, w], grad_outputs=[lib.tensor(1.0),
                                                               lib.tensor(10.0)])
    assert gx.item() == 3.0 + 10.0 * 4.0
    assert gw.item() == 2.0


def test_grad_unused_input(lib):
    x = lib.tensor(1.0, requires_grad=True)
    unused = lib.tensor(1.0, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="allow_unused=True"):
        lib.autograd.grad(y, [x, unused], retain_graph=True)
    gx, gu = lib.autograd.grad(y, [x, unused], allow_unused=True, retain_graph=True)
    assert gx.item() == 2.0 and gu is None
    gx, gu = lib.autograd.grad(y, [x, unused], materialize_grads=True)
    assert gx.item() == 2.0 and gu.item() == 0.0 and tuple(gu.shape) == ()


def test_materialize_grads_shape_and_conflict(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    unused = lib.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    y = (x * 2).sum()
    _, gu = lib.autograd.grad(y, [x, unused], materialize_grads=True, retain_graph=True)
    assert vals(gu) == [[0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="allow_unused"):
        lib.autograd.grad(y, [x, unused], materialize_grads=True, allow_unused=False)


def test_grad_wrt_non_leaf_inputs(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    y = (h ** 2).sum()
    gh, gx = lib.autograd.grad(y, [h, x])
    assert vals(gh) == [6.0, 12.0]
    assert vals(gx) == [18.0, 36.0]
    assert x.grad is None


def test_grad_wrt_input_that_does_not_require_grad_raises(lib):
    x = lib.tensor(1.0, requires_grad=True)
    c = lib.tensor(2.0)
    y = x * c
    with pytest.raises(RuntimeError, match="does not require grad"):
        lib.autograd.grad(y, [x, c])


def test_backward_inputs_accumulates_only_there(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    y = (x * w).sum()
    y.backward(inputs=[x], retain_graph=True)
    assert vals(x.grad) == [3.0, 4.0]
    assert w.grad is None
    y.backward(inputs=[w])
    assert vals(w.grad) == [1.0, 2.0]
    assert vals(x.grad) == [3.0, 4.0]


def test_backward_inputs_non_leaf(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = (h * h).sum()
    lib.autograd.backward(y, inputs=[h])
    assert vals(h.grad) == [4.0, 8.0]
    assert x.grad is None


def test_backward_several_roots(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y1 = x * 2
    y2 = (x * x).sum()
    lib.autograd.backward([y1, y2], [lib.tensor([1.0, -1.0]), None])
    assert vals(x.grad) == [2.0 + 2.0, -2.0 + 4.0]


def test_non_scalar_backward_needs_gradient(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar outputs"):
        y.backward()
    with pytest.raises(RuntimeError, match="scalar outputs"):
        lib.autograd.grad(y, x)
    assert x.grad is None


@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_gradient_shape_mismatch_raises(lib, shape):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match="(?i)mismatch in shape"):
        y.backward(lib.ones(*shape))
    assert x.grad is None


def test_long_chain_does_not_recurse(device):
    # 100,000 nodes: a recursive walk of the graph (or of its deallocation) would overflow.
    limit = sys.getrecursionlimit()
    n = 100_000
    start = time.perf_counter()
    x = gpugrad.tensor(1.0, dtype=gpugrad.float64, device=device, requires_grad=True)
    y = x
    for i in range(n):
        y = y * 1.5 if i % 10_000 == 0 else y + 0  # adds: the cheapest nodes
    y.backward()
    assert sys.getrecursionlimit() == limit
    assert x.grad.item() == 1.5 ** 10
    del y  # dropping the chain must not overflow the C stack either
    elapsed = time.perf_counter() - start
    # Linear time: anything quadratic in the chain length would take hours. (On a loaded
    # 2-core runner this takes ~5-10 s; torch needs ~2 s there.)
    assert elapsed < 60.0, f"100k-op chain took {elapsed:.1f}s"


def test_long_chain_through_grad_with_inputs(device):
    # autograd.grad prunes the graph to the nodes leading to `inputs`; that walk must be
    # iterative too. A node in the middle of the chain is one of the inputs.
    limit = sys.getrecursionlimit()
    x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = x
    for i in range(10_000):
        y = y + 0
        if i == 4_999:
            mid = y
    gx, gmid = gpugrad.autograd.grad(y.sum(), [x, mid])
    assert vals(gx) == [1.0, 1.0] and vals(gmid) == [1.0, 1.0]
    assert sys.getrecursionlimit() == limit


# ---- leaves and .grad ------------------------------------------------------------------------
def test_leaves_and_non_leaves(lib):
    x = lib.tensor([1.0], requires_grad=True)
    c = lib.tensor([1.0])
    y = x * 2
    assert x.is_leaf and x.grad_fn is None
    assert c.is_leaf and c.grad_fn is None and not c.requires_grad
    assert not y.is_leaf and y.grad_fn is not None and y.requires_grad
    z = c * 2  # nothing requires grad: a leaf
    assert z.is_leaf and z.grad_fn is None and not z.requires_grad
    d = y.detach()
    assert d.is_leaf and d.grad_fn is None and not d.requires_grad
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad_(False)


def test_grad_of_non_leaf_warns(lib):
    x = lib.tensor([1.0], requires_grad=True)
    y = x * 2
    y.sum().backward()
    with pytest.warns(UserWarning, match="not a leaf"):
        assert y.grad is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vals(x.grad) == [2.0]  # leaves never warn


def test_retain_grad_keeps_intermediate_grads(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    assert h.retains_grad and not x.retains_grad
    y = (h * h).sum()
    y.backward(retain_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert vals(h.grad) == [6.0, 12.0]
    y.backward()
    assert vals(h.grad) == [12.0, 24.0]  # accumulates like a leaf's
    assert vals(x.grad) == [36.0, 72.0]


def test_retained_grad_is_not_aliased(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1
    h.retain_grad()
    h.sum().backward()
    h.grad.zero_()
    assert vals(x.grad) == [1.0, 1.0]


# ---- tensor hooks ----------------------------------------------------------------------------
def test_leaf_hook_modifies_grad_and_can_be_removed(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    seen = []

    def hook(g):
        seen.append(vals(g))
        return g * 10

    handle = x.register_hook(hook)
    (x * x).sum().backward()
    assert seen == [[2.0, 4.0]]
    assert vals(x.grad) == [20.0, 40.0]
    handle.remove()
    x.grad = None
    (x * x).sum().backward()
    assert vals(x.grad) == [2.0, 4.0]
    assert len(seen) == 1


def test_non_leaf_hook_changes_upstream_grad(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    seen = []

    def hook(g):
        seen.append(vals(g))
        return g + 1

    handle = h.register_hook(hook)
    (h * h).sum().backward(retain_graph=True)
    assert seen == [[4.0, 8.0]]
    assert vals(x.grad) == [10.0, 18.0]  # (2h + 1) * 2
    handle.remove()
    x.grad = None
    (h * h).sum().backward()
    assert vals(x.grad) == [8.0, 16.0]


def test_hook_returning_none_keeps_grad(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    calls = []
    x.register_hook(lambda g: calls.append(1))
    x.register_hook(lambda g: g * 2)
    (x * 3).sum().backward()
    assert calls == [1]
    assert vals(x.grad) == [6.0, 6.0]


def test_hooks_run_in_registration_order_and_chain(lib):
    x = lib.tensor(1.0, requires_grad=True)
    x.register_hook(lambda g: g + 1)
    x.register_hook(lambda g: g * 10)
    (x * 2).backward()
    assert x.grad.item() == 30.0


def test_hook_on_tensor_without_grad_raises(lib):
    x = lib.tensor(1.0)
    with pytest.raises(RuntimeError, match="doesn't require"):
        x.register_hook(lambda g: g)


# ---- node hooks ------------------------------------------------------------------------------
def test_grad_fn_register_hook(lib):
    x = lib.tensor(2.0, requires_grad=True)
    w = lib.tensor(5.0, requires_grad=True)
    y = x * w
    seen = []

    def hook(grad_inputs, grad_outputs):
        seen.append(([g.item() for g in grad_inputs], [g.item() for g in grad_outputs]))
        return (grad_inputs[0] * 0, grad_inputs[1])

    handle = y.grad_fn.register_hook(hook)
    (y * 3).backward(retain_graph=True)
    assert seen == [([15.0, 6.0], [3.0])]
    assert x.grad.item() == 0.0 and w.grad.item() == 6.0
    handle.remove()
    (y * 3).backward()
    assert x.grad.item() == 15.0 and w.grad.item() == 12.0
    assert len(seen) == 1


def test_grad_fn_register_prehook(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x * x
    seen = []

    def prehook(grad_outputs):
        seen.append([g.item() for g in grad_outputs])
        return (grad_outputs[0] * 100,)

    handle = y.grad_fn.register_prehook(prehook)
    (y + 1).backward(retain_graph=True)
    assert seen == [[1.0]]
    assert x.grad.item() == 400.0
    handle.remove()
    x.grad = None
    (y + 1).backward()
    assert x.grad.item() == 4.0


# ---- graph introspection ---------------------------------------------------------------------
def test_grad_fn_names_and_next_functions(lib):
    # seed 002: z = x*y + x**2
    x = lib.tensor(2.0, requires_grad=True)
    y = lib.tensor(3.0, requires_grad=True)
    z = x * y + x ** 2
    assert z.grad_fn.name() == "AddBackward0"
    nf = z.grad_fn.next_functions
    assert [(n.name(), nr) for n, nr in nf] == [("MulBackward0", 0), ("PowBackward0", 0)]
    assert type(nf).__name__ == "tuple"
    assert re.fullmatch(r"\(\(<MulBackward0 object at 0x[0-9a-f]+>, 0\), "
                        r"\(<PowBackward0 object at 0x[0-9a-f]+>, 0\)\)", str(nf))
    mul_next = nf[0][0].next_functions
    # (torch's AccumulateGrad.name() is 'torch::autograd::AccumulateGrad')
    assert [(type(n).__name__, nr) for n, nr in mul_next] == [("AccumulateGrad", 0),
                                                              ("AccumulateGrad", 0)]
    assert mul_next[0][0].variable is x and mul_next[1][0].variable is y
    # one accumulator per leaf, shared by every use while the graph is alive
    assert nf[1][0].next_functions[0][0] is mul_next[0][0]
    z.backward()
    assert x.grad.item() == 7.0 and y.grad.item() == 2.0


def test_next_functions_of_input_without_grad(lib):
    x = lib.tensor(2.0, requires_grad=True)
    c = lib.tensor(3.0)
    nf = (c * x).grad_fn.next_functions
    assert nf[0] == (None, 0)
    assert type(nf[1][0]).__name__ == "AccumulateGrad" and nf[1][1] == 0


def test_output_nr_in_next_functions(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    values, _ = x.max(dim=1)
    y = values * 2
    assert y.grad_fn.next_functions[0][0].name() == "MaxBackward0"
    assert y.grad_fn.next_functions[0][1] == values.output_nr == 0


def test_repr_shows_grad_fn(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    assert repr(x) == "tensor([1., 2.], requires_grad=True)"
    assert repr(x * 2) == "tensor([2., 4.], grad_fn=<MulBackward0>)"


# ---- Variable and detach ---------------------------------------------------------------------
def test_variable_alias(lib):
    V = lib.autograd.Variable
    x = V(lib.Tensor([2.0]).to(lib.device), requires_grad=True)
    a = V(lib.Tensor([2.0]).to(lib.device), requires_grad=True)
    assert isinstance(x, V) and isinstance(x, lib.Tensor)
    assert not isinstance(3.0, V) and not isinstance([1.0], V)
    assert x.requires_grad and x.is_leaf
    assert x.grad is None
    z = (x + a) ** 2 + 3  # seed 003
    assert vals(z) == [19.0]
    z.backward()
    assert vals(x.grad) == [8.0] and vals(a.grad) == [8.0]
    c = V(lib.Tensor([1.0]).to(lib.device))
    assert not c.requires_grad


def test_variable_is_importable_from_gpugrad_autograd(device):
    x = Variable(gpugrad.Tensor([2.0], device=device), requires_grad=True)
    assert isinstance(x, Variable) and isinstance(x, gpugrad.Tensor)
    assert x.requires_grad and vals(x) == [2.0]


def test_detach_shares_data_and_leaves_graph(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    d = h.detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    d.add_(1)  # same memory: h sees the change
    assert vals(h) == [3.0, 5.0]
    e = (d * x).sum()
    e.backward()
    assert vals(x.grad) == [3.0, 5.0]


def test_detach_shares_version_counter(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 2
    y = (h * h).sum()  # saves h
    h.detach().mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


# ---- in-place --------------------------------------------------------------------------------
def test_inplace_on_leaf_requiring_grad_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.add_(1)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x *= 2
    assert vals(x) == [1.0, 2.0]


def test_inplace_on_leaf_allowed_under_no_grad(lib):
    w = lib.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    before = w
    lr = 0.5
    with lib.no_grad():
        w -= lr * w.grad
    assert w is before
    assert vals(w) == [0.0, 0.0]
    assert w.requires_grad and w.is_leaf and w.grad_fn is None


def test_inplace_on_saved_tensor_raises_with_versions(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    h = x * 2
    y = (h * h).sum()
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation") as info:
        y.backward()
    assert "is at version 1; expected version 0" in str(info.value)
    assert x.grad is None


def test_inplace_on_saved_output_raises(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()  # saves its output
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_inplace_on_unsaved_non_leaf_is_fine(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x + 1  # add saves nothing
    h.mul_(3)
    assert h.grad_fn.name() == "MulBackward0"
    (h * 1).sum().backward()
    assert vals(x.grad) == [3.0, 3.0]


# ---- .grad management and aliasing -----------------------------------------------------------
def test_grad_zero_and_none(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    g = x.grad
    x.grad.zero_()
    assert vals(x.grad) == [0.0, 0.0]
    (x * 3).sum().backward()
    assert vals(x.grad) == [3.0, 3.0]
    assert x.grad is g  # accumulation is in place into the existing .grad
    x.grad = None
    (x * 5).sum().backward()
    assert vals(x.grad) == [5.0, 5.0]
    assert vals(g) == [3.0, 3.0]  # a new .grad, not written into the dropped one


def test_assigning_grad_checks_shape(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="size"):
        x.grad = lib.zeros(3)
    x.grad = lib.ones(2)
    (x * 2).sum().backward()
    assert vals(x.grad) == [3.0, 3.0]


def test_accumulation_never_writes_into_user_gradient(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    g = lib.ones(3)
    y = x + 0
    y.backward(g, retain_graph=True)
    y.backward(g)
    assert vals(g) == [1.0, 1.0, 1.0]
    assert vals(x.grad) == [2.0, 2.0, 2.0]
    y2 = x + x
    y2.backward(g)
    assert vals(g) == [1.0, 1.0, 1.0]
    assert vals(x.grad) == [4.0, 4.0, 4.0]


def test_first_grad_is_not_the_user_gradient(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    g = lib.tensor([5.0, 6.0])
    (x * 1).backward(g)
    (x + 0).backward(g)
    assert vals(g) == [5.0, 6.0]
    assert vals(x.grad) == [10.0, 12.0]


def test_two_leaves_get_separate_grads(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = lib.tensor([3.0, 4.0], requires_grad=True)
    (x + y).sum().backward()
    x.grad.zero_()
    assert vals(y.grad) == [1.0, 1.0]
    x.grad = None
    z = x + y
    z.backward(lib.ones(2))
    x.grad.add_(5)
    assert vals(y.grad) == [2.0, 2.0]
    assert vals(z) == [4.0, 6.0]


def test_grad_is_writable_and_contiguous(lib):
    # sum's backward broadcasts the incoming gradient: .grad must still be a real buffer
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x.sum().backward()
    assert x.grad.is_contiguous()
    x.grad.add_(1)
    (x * 1).sum().backward()
    assert vals(x.grad) == [[3.0, 3.0], [3.0, 3.0]]


def test_hook_result_held_by_user_is_not_written(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    held = lib.ones(2)
    x.register_hook(lambda g: held)
    (x * 3).sum().backward()
    (x * 3).sum().backward()
    assert vals(held) == [1.0, 1.0]
    assert vals(x.grad) == [2.0, 2.0]


# ---- memory release --------------------------------------------------------------------------
def test_saved_tensors_released_after_backward(device):
    x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
    h = x * 2
    y = h * h  # saves h (twice)
    ref = weakref.ref(h)
    del h
    assert ref() is not None  # kept alive by the saved tensors
    node = y.grad_fn
    y.sum().backward(retain_graph=True)
    assert ref() is not None and node._saved is not None
    y.sum().backward()
    assert node._saved is None
    assert ref() is None  # freed although y and its graph are still alive
    assert vals(x.grad) == [16.0, 32.0]


def test_saved_tensors_of_custom_function_released(device):
    refs = []

    class SaveTemp(Function):
        @staticmethod
        def forward(ctx, x):
            tmp = x * 3
            refs.append(weakref.ref(tmp))
            ctx.save_for_backward(tmp)
            return x * tmp

        @staticmethod
        def backward(ctx, g):
            (tmp,) = ctx.saved_tensors
            return g * tmp * 2

    x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = SaveTemp.apply(x)
    assert refs[0]() is not None
    y.sum().backward(retain_graph=True)
    assert refs[0]() is not None
    y.sum().backward()
    assert refs[0]() is None
    assert vals(x.grad) == [12.0, 24.0]


def test_intermediate_grads_dropped_once_consumed(device):
    x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
    a = x * 2
    b = a * 3
    c = b * 4
    refs, alive = {}, {}

    def keep(name):
        def hook(g):
            refs[name] = weakref.ref(g)
            alive[name] = {k: r() is not None for k, r in refs.items() if k != name}
        return hook

    c.register_hook(keep("c"))
    b.register_hook(keep("b"))
    a.register_hook(keep("a"))
    c.sum().backward()
    assert alive["b"] == {"c": False}
    assert alive["a"] == {"c": False, "b": False}
    assert vals(x.grad) == [24.0, 24.0]


def test_intermediates_freed_when_graph_dropped(device):
    gc.collect()
    gc.disable()  # freed by reference counting alone: no reference cycles
    try:
        x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
        a = x.exp()
        b = a.sin() * a
        c = b.tanh()
        out = c.sum()
        refs = [weakref.ref(t) for t in (a, b, c)]
        node_refs = [weakref.ref(t.grad_fn) for t in (a, b, c, out)]
        del a, b, c
        out.backward()
        assert x.grad is not None
        del out
        assert [r() for r in refs] == [None, None, None]
        assert [r() for r in node_refs] == [None] * 4
    finally:
        gc.enable()


def test_graph_freed_without_backward_and_without_gc(device):
    gc.collect()
    gc.disable()
    try:
        x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
        y = x.exp().sigmoid().tanh() * x  # ops that save their outputs
        refs = [weakref.ref(y), weakref.ref(y.grad_fn)]
        assert all(r() is not None for r in refs)
        del y
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


def test_create_graph_grads_do_not_leak(device):
    gc.collect()
    gc.disable()
    try:
        x = gpugrad.tensor(2.0, device=device, requires_grad=True)
        y = x.exp() * x.sin()
        (g,) = gpugrad.autograd.grad(y, x, create_graph=True)
        refs = [weakref.ref(y), weakref.ref(g), weakref.ref(g.grad_fn)]
        del y, g
        assert [r() for r in refs] == [None, None, None]
    finally:
        gc.enable()


def test_accumulate_grad_node_freed_with_graph(device):
    gc.collect()
    gc.disable()
    try:
        x = gpugrad.tensor(1.0, device=device, requires_grad=True)
        y = x * 2
        acc = weakref.ref(y.grad_fn.next_functions[0][0])
        y.backward()
        del y
        assert acc() is None
        assert x.grad.item() == 2.0
    finally:
        gc.enable()


# ---- compared end to end with torch ----------------------------------------------------------
def test_mixed_graph_matches_torch(device):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((4, 2)).astype(np.float32)

    def run(m, A, B):
        h = (A @ B).tanh()
        s = (h * h).sum(dim=0)
        out = (s.exp() + h.mean()).sum()
        return out

    ag = gpugrad.tensor(a, device=device, requires_grad=True)
    bg = gpugrad.tensor(b, device=device, requires_grad=True)
    at, bt = to_torch(ag), to_torch(bg)
    run(gpugrad, ag, bg).backward()
    run(torch, at, bt).backward()
    assert_close(ag.grad, at.grad, rtol=1e-5, atol=1e-6)
    assert_close(bg.grad, bt.grad, rtol=1e-5, atol=1e-6)


def test_leaf_hook_applies_to_autograd_grad(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(1) or g * 2)
    (g,) = lib.autograd.grad((x * 3).sum(), x)
    assert vals(g) == [6.0, 6.0] and seen == [1]
    assert x.grad is None


def test_leaf_hook_not_run_when_leaf_not_wanted(lib):
    x = lib.tensor(1.0, requires_grad=True)
    w = lib.tensor(2.0, requires_grad=True)
    seen = []
    w.register_hook(lambda g: seen.append("w"))
    y = x * w
    lib.autograd.grad(y, x, retain_graph=True)
    y.backward(inputs=[x], retain_graph=True)
    assert seen == []
    y.backward()
    assert seen == ["w"]


def test_retain_grad_sees_hooked_grad(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    h = x * 1
    h.retain_grad()
    h.register_hook(lambda g: g * 2)  # registered after retain_grad, still applies to it
    (h * 3).sum().backward()
    assert vals(h.grad) == [6.0, 6.0] and vals(x.grad) == [6.0, 6.0]


def test_inplace_on_saved_leaf_under_no_grad_is_caught(lib):
    x = lib.tensor([2.0], requires_grad=True)
    w = lib.tensor([3.0], requires_grad=True)
    y = x * w  # saves x and w
    with lib.no_grad():
        x.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_changes_through_data_are_not_tracked(lib):
    x = lib.tensor([2.0], requires_grad=True)
    w = lib.tensor([3.0], requires_grad=True)
    y = x * w
    w.data.mul_(2)  # .data escapes the version counter, as in torch
    y.backward()
    assert vals(x.grad) == [6.0]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_backward_inside_no_grad(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 3
    with lib.no_grad():
        (g,) = lib.autograd.grad(y, x, retain_graph=True)
        y.backward(create_graph=True)
    assert g.item() == 12.0 and not g.requires_grad
    assert x.grad.item() == 12.0 and x.grad.requires_grad  # create_graph wins over no_grad
    assert lib.is_grad_enabled()


def test_double_backward_through_grad_outputs(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    v = lib.tensor([1.0, 1.0], requires_grad=True)
    (gx,) = lib.autograd.grad(x ** 2, x, grad_outputs=v, create_graph=True)
    (gv,) = lib.autograd.grad(gx.sum(), v)
    assert vals(gv) == [2.0, 4.0]
