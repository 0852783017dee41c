"""Higher-order derivatives of every differentiable op, enumerated so that none is forgotten.

The cases are those of the op tables (test_ops, test_shape, test_indexing) plus a few here
for ops those tables do not reach. For every built-in Function class of gpugrad.ops, the
module picks (at collection) one case whose graph, or whose gradient's graph, contains it;
each picked case then runs

- gradgradcheck in float64 (second derivatives against finite differences), and
- a Hessian-vector product three ways that must agree: reverse-over-reverse (grad of a
  grad), forward-over-reverse (the tangent of a grad: jvp rules of the backward Functions)
  and reverse-over-forward (the grad of a tangent).

A test asserts that the picked cases reach every built-in Function (or that it is listed,
with the reason, in NOT_REACHED), and that every jvp rule ran. Last, third derivatives of
smooth elementwise ops against closed forms and torch.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import gpugrad
import gpugrad.autograd.forward_ad as fwAD
from gpugrad.autograd import gradgradcheck
from helpers import assert_close, to_numpy, torch_or_skip

from gpugrad.ops.elementwise import logsigmoid as _logsigmoid  # (F.logsigmoid composes)
import test_forward_ad as _fwd
import test_indexing as _indexing_table
import test_ops as _ops_table
import test_shape as _shape_table


class Case:
    """An op the shared tables do not reach: ``fn(m, *inputs)`` on random float64 inputs."""

    def __init__(self, name, fn, *shapes, low=-2.0, high=2.0):
        self.name, self.fn, self.shapes, self.low, self.high = name, fn, shapes, low, high
        self.gc = self.ggc = True

    def arrays(self):
        rng = np.random.default_rng(len(self.name))
        return [rng.uniform(self.low, self.high, s) for s in self.shapes]


def _inplace_through_view(m, x, v):
    y = x * 1
    y[0] = v  # CopySlices (and ZeroRegion in its backward)
    return y


def _fill_all(y):
    y[...] = 2.0  # a number written through a full view
    return y


def _index_put(m, x, v):
    y = x * 1
    y[m.tensor([0, 2]), m.tensor([1, 0])] = v  # Put
    return y


EXTRA = [
    Case("inplace_through_view", _inplace_through_view, (3, 2), (2,)),
    Case("index_put", _index_put, (3, 2), (2,)),
    Case("copy_", lambda m, x, y: x.clone().copy_(y) * x, (2, 3), (3,)),
    Case("unfold", lambda m, x: m.nn.functional.unfold(x, 2), (1, 2, 3, 3)),
    Case("fold", lambda m, x: m.nn.functional.fold(x, (3, 3), 2), (1, 8, 4)),
    Case("max_pool2d", lambda m, x: m.nn.functional.max_pool2d(x, 2) ** 2, (1, 2, 4, 4)),
    Case("embedding", lambda m, w: m.nn.functional.embedding(m.tensor([[0, 2], [2, 1]]), w,
                                                             padding_idx=1) ** 2, (3, 2)),
    Case("to_copy", lambda m, x: x.to(m.float64, copy=True) * x, (2, 3)),
    Case("div_divisor_only", lambda m, x: m.full_like(x, 1.5) / x, (2, 3), low=0.5),
    Case("pow_base_only", lambda m, x: x ** m.full_like(x, 1.7), (2, 3), low=0.5),
    Case("pow_exponent_only", lambda m, x: m.full_like(x, 1.7) ** x, (2, 3)),
    Case("rpow_zero_base", lambda m, x: 0.0 ** x, (2, 3), low=0.5),
    Case("logsigmoid", lambda m, x: _logsigmoid(x), (2, 3)),
    Case("fill_tensor", lambda m, x, v: x.clone().fill_(v) * x, (2, 3), ()),
    Case("fill_value_setitem", lambda m, x: _fill_all(x * 1) * x, (2, 3)),
    Case("select", lambda m, x: x.select(1, 1) ** 2, (2, 3)),
]

# Built-in Functions no case reaches, with the reason.
NOT_REACHED: dict[str, str] = {
    "_PoolGather": "the backward of max_pool2d's backward (_PoolScatter): it appears at third "
                   "order only; its jvp is the same linear rule as _PoolScatter's",
}


# ---- picking the cases --------------------------------------------------------------------------
def _all_cases():
    out = [("ops", c) for c in _ops_table.DIFFERENTIABLE if c.ggc]
    out += [("shape", c) for c in _shape_table.CASES if c.ggc]
    out += [("indexing", c) for c in _indexing_table.CASES if c.ggc]
    out += [("extra", c) for c in EXTRA]
    return out


def _leaves(case, device="cpu"):
    return [gpugrad.tensor(a, dtype=gpugrad.float64, device=device, requires_grad=True)
            for a in case.arrays()]


def _float_outputs(out):
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    return [o for o in outs if o.dtype.is_floating_point and o.requires_grad]


def _functions_in_graph(roots):
    seen, stack, found = set(), [r.grad_fn for r in roots if r.grad_fn is not None], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        fn = getattr(node, "_function", None)
        if fn is not None:
            found.add(fn)
        stack.extend(n for n, _ in node.next_functions)
    return found


def _functions_of(case):
    """The Functions in the case's graph and in the graph of its (recorded) gradient."""
    xs = _leaves(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = _float_outputs(case.fn(gpugrad, *xs))
        if not outs:
            return set()
        # gradients w.r.t. outputs that require grad, as in gradgradcheck: the backward
        # Functions are then recorded even for linear ops
        ws = [gpugrad.ones_like(o).requires_grad_() for o in outs]
        grads = [g for g in gpugrad.autograd.grad(outs, xs, ws, create_graph=True,
                                                  allow_unused=True) if g is not None]
    return _functions_in_graph(outs) | _functions_in_graph(grads)


def _pick():
    """Greedy cover: cases in table order, each kept if it reaches a Function not yet reached."""
    reached, picked = set(), []
    for table, case in _all_cases():
        fns = _functions_of(case)
        if fns - reached:
            picked.append(pytest.param(case, id=f"{table}-{case.name}"))
            reached |= fns
    return picked, reached


PICKED, REACHED = _pick()


def test_every_builtin_function_is_reached():
    """(A base class such as KernelFunction is reached through its subclasses.)"""
    missing = [f"{c.__module__}.{c.__name__}" for c in _fwd.builtin_functions()
               if not any(issubclass(r, c) for r in REACHED) and c.__name__ not in NOT_REACHED]
    assert not missing, f"no higher-order case reaches {missing}: add a case (EXTRA) or list " \
                        "it in NOT_REACHED with the reason"


# ---- second order -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", PICKED)
def test_gradgradcheck(case, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradgradcheck(lambda *a: case.fn(gpugrad, *a), _leaves(case, device))


def _scalar(case, xs):
    outs = _float_outputs(case.fn(gpugrad, *xs))
    rng = np.random.default_rng(3)
    return sum((o * gpugrad.tensor(rng.uniform(-1, 1, tuple(o.shape)), device=o.device))
               .sum() for o in outs)


def _hvp_three_ways(case, device):
    vs = [gpugrad.tensor(v, device=device) for v in _fwd._tangents_for(case)]
    # reverse-over-reverse: grad of <grad, v>
    xs = _leaves(case, device)
    gs = gpugrad.autograd.grad(_scalar(case, xs), xs, create_graph=True, allow_unused=True)
    dot = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None and g.requires_grad)
    rr = [None] * len(xs) if not isinstance(dot, gpugrad.Tensor) else \
        gpugrad.autograd.grad(dot, xs, allow_unused=True)
    # forward-over-reverse: the tangent of the (recorded) gradient
    xs = _leaves(case, device)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(x, v) for x, v in zip(xs, vs)]
        gs = gpugrad.autograd.grad(_scalar(case, duals), xs, create_graph=True,
                                   allow_unused=True)
        fr = [None if g is None else fwAD.unpack_dual(g).tangent for g in gs]
    # reverse-over-forward: the gradient of the output's tangent
    xs = _leaves(case, device)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(x, v) for x, v in zip(xs, vs)]
        tangent = fwAD.unpack_dual(_scalar(case, duals)).tangent
        rf = gpugrad.autograd.grad(tangent, xs, allow_unused=True) if tangent is not None \
            and tangent.requires_grad else [None] * len(xs)
    return rr, fr, rf


@pytest.mark.parametrize("case", PICKED)
def test_hessian_vector_product_three_ways(case, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rr, fr, rf = _hvp_three_ways(case, device)
    for k, x in enumerate(case.arrays()):
        ref = np.zeros(np.shape(x)) if rr[k] is None else to_numpy(rr[k])
        for name, got in (("forward-over-reverse", fr[k]), ("reverse-over-forward", rf[k])):
            got = np.zeros(np.shape(x)) if got is None else to_numpy(got)
            assert_close(got, ref, rtol=1e-9, atol=1e-10, msg=f"{case.name}: {name}, input {k}")


def _vjp_tangent(case, device):
    """The tangent of vjp(x, w) = J(x)^T w in the direction (v, u), computed forward-over-
    reverse (every backward Function's jvp runs, the cotangent carrying a tangent too), and
    the reverse-mode reference (d/dx (J^T w) v, a Hessian-vector product, plus J^T u)."""
    rng = np.random.default_rng(11)
    vs = [gpugrad.tensor(v, device=device) for v in _fwd._tangents_for(case)]
    xs = _leaves(case, device)
    outs = _float_outputs(case.fn(gpugrad, *xs))
    ws = [gpugrad.tensor(rng.uniform(-1, 1, tuple(o.shape)), device=device) for o in outs]
    us = [gpugrad.tensor(rng.uniform(-1, 1, tuple(o.shape)), device=device) for o in outs]
    ju = gpugrad.autograd.grad(outs, xs, us, retain_graph=True, allow_unused=True)
    gs = gpugrad.autograd.grad(outs, xs, ws, create_graph=True, allow_unused=True)
    dot = sum((g * v).sum() for g, v in zip(gs, vs) if g is not None and g.requires_grad)
    hv = gpugrad.autograd.grad(dot, xs, allow_unused=True) if isinstance(dot, gpugrad.Tensor) \
        else [None] * len(xs)
    ref = [sum(to_numpy(t) for t in (a, b) if t is not None) + np.zeros(np.shape(x))
           for a, b, x in zip(hv, ju, case.arrays())]
    xs = _leaves(case, device)
    with fwAD.dual_level():
        duals = [fwAD.make_dual(x, v) for x, v in zip(xs, vs)]
        outs = _float_outputs(case.fn(gpugrad, *duals))
        seeds = [fwAD.make_dual(w, u) for w, u in zip(ws, us)]
        gs = gpugrad.autograd.grad(outs, xs, seeds, create_graph=True, allow_unused=True)
        got = [np.zeros(np.shape(x)) if g is None or fwAD.unpack_dual(g).tangent is None
               else to_numpy(fwAD.unpack_dual(g).tangent) for g, x in zip(gs, case.arrays())]
    return got, ref


def test_every_jvp_rule_runs_and_the_vjp_tangent_is_right(monkeypatch):
    """Forward-over-reverse with a dual cotangent over the picked cases: its result is right
    for every case, and it runs the jvp of every built-in Function (the forward ops and the
    backward Functions of their gradients)."""
    ran = set()
    original = fwAD._run_jvp

    def recording(cls, *args):
        ran.add(cls)
        return original(cls, *args)

    monkeypatch.setattr(fwAD, "_run_jvp", recording)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in PICKED:
            case = p.values[0]
            got, ref = _vjp_tangent(case, "cpu")
            for k, (a, b) in enumerate(zip(got, ref)):
                assert_close(a, b, rtol=1e-9, atol=1e-10, msg=f"{case.name}: input {k}")
    missing = [c.__name__ for c in _fwd.builtin_functions()
               if not any(issubclass(r, c) for r in ran) and c.__name__ not in NOT_REACHED]
    assert not missing, f"jvp rules never run by the higher-order cases: {missing}"


# ---- third order --------------------------------------------------------------------------------
def _phi(x):
    return np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _sig(x):
    return 1 / (1 + np.exp(-x))


# name, f(m, x), closed-form f''', input range
THIRD = [
    ("tanh", lambda m, x: m.tanh(x),
     lambda x: (1 - np.tanh(x) ** 2) * (6 * np.tanh(x) ** 2 - 2), (-2, 2)),
    ("sigmoid", lambda m, x: m.sigmoid(x),
     lambda x: _sig(x) * (1 - _sig(x)) * (1 - 6 * _sig(x) + 6 * _sig(x) ** 2), (-4, 4)),
    ("exp", lambda m, x: m.exp(x), np.exp, (-2, 2)),
    ("log", lambda m, x: m.log(x), lambda x: 2 / x ** 3, (0.5, 2)),
    ("sin", lambda m, x: m.sin(x), lambda x: -np.cos(x), (-3, 3)),
    ("pow_scalar", lambda m, x: x ** 3.5, lambda x: 3.5 * 2.5 * 1.5 * x ** 0.5, (0.5, 2)),
    ("rpow", lambda m, x: 2.0 ** x, lambda x: 2.0 ** x * math.log(2.0) ** 3, (-2, 2)),
    ("pow_exponent", lambda m, x: m.pow(m.full_like(x, 1.7), x),
     lambda x: 1.7 ** x * math.log(1.7) ** 3, (-2, 2)),
    ("gelu", lambda m, x: m.nn.functional.gelu(x), lambda x: _phi(x) * (x ** 3 - 4 * x), (-3, 3)),
    ("softplus", lambda m, x: m.nn.functional.softplus(x),
     lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x)), (-4, 4)),
    ("div_divisor", lambda m, x: 1.5 / x, lambda x: -6 * 1.5 / x ** 4, (0.5, 2)),
    ("div_tensors", lambda m, x: m.full_like(x, 1.5) / x, lambda x: -6 * 1.5 / x ** 4, (0.5, 2)),
]


def _third(m, f, x):
    y = f(m, x).sum()
    g1, = m.autograd.grad(y, x, create_graph=True)
    g2, = m.autograd.grad(g1.sum(), x, create_graph=True)
    g3, = m.autograd.grad(g2.sum(), x)
    return g3


@pytest.mark.parametrize("name,f,closed,rng", THIRD, ids=[t[0] for t in THIRD])
def test_third_derivative(name, f, closed, rng, device):
    a = np.random.default_rng(5).uniform(*rng, (2, 3))
    x = gpugrad.tensor(a, device=device, requires_grad=True)
    assert_close(_third(gpugrad, f, x), closed(a), rtol=1e-9, atol=1e-10, msg=name)
    # the same third derivative as the tangent of a second derivative (forward-over-reverse)
    x = gpugrad.tensor(a, device=device, requires_grad=True)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, gpugrad.ones_like(x))
        g1, = gpugrad.autograd.grad(f(gpugrad, d).sum(), x, create_graph=True)
        g2, = gpugrad.autograd.grad(g1.sum(), x, create_graph=True)
        assert_close(fwAD.unpack_dual(g2).tangent, closed(a), rtol=1e-9, atol=1e-10,
                     msg=f"{name}: forward-over-reverse")


@pytest.mark.parametrize("name,f,closed,rng", THIRD, ids=[t[0] for t in THIRD])
def test_third_derivative_matches_torch(name, f, closed, rng):
    torch = torch_or_skip()
    a = np.random.default_rng(5).uniform(*rng, (2, 3))
    ours = _third(gpugrad, f, gpugrad.tensor(a, requires_grad=True))
    theirs = _third(torch, f, torch.tensor(a, requires_grad=True))
    assert_close(ours, theirs, rtol=1e-9, atol=1e-10, msg=name)


def test_mixed_third_derivative_of_div(device):
    """d3 (a / b) / (da db db) = 2 / b**3; d3 / da3 = 0 (linear in a)."""
    a = gpugrad.tensor([1.5, -0.5], dtype=gpugrad.float64, device=device, requires_grad=True)
    b = gpugrad.tensor([0.7, 1.3], dtype=gpugrad.float64, device=device, requires_grad=True)
    gb, = gpugrad.autograd.grad((a / b).sum(), b, create_graph=True)
    gbb, = gpugrad.autograd.grad(gb.sum(), b, create_graph=True)
    gbba, = gpugrad.autograd.grad(gbb.sum(), a)
    assert_close(gbba, 2 / np.array([0.7, 1.3]) ** 3, rtol=1e-12, atol=0)
