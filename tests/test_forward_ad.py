"""Forward-mode AD (``gpugrad.autograd.forward_ad``): the dual-level API, custom Functions
with ``jvp``, in-place ops and views of dual tensors, and, for every differentiable op of the
op tables (test_ops, test_shape, test_indexing), the tangent forward mode computes equals
J v computed in reverse mode (one vjp per output element) and torch.autograd.forward_ad's.
A last test checks that every built-in Function of gpugrad.ops has a jvp rule and that the
tables reach every rule.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import gpugrad
import gpugrad.autograd.forward_ad as fwAD
from gpugrad.autograd.function import Function
from helpers import assert_close, to_numpy, torch_or_skip

import test_indexing as _indexing_table
import test_ops as _ops_table
import test_shape as _shape_table


def _f64(a, device, requires_grad=False):
    return gpugrad.tensor(np.asarray(a, dtype=np.float64), device=device,
                          requires_grad=requires_grad)


# ---- the API ------------------------------------------------------------------------------------
def test_dual_level_make_and_unpack(device):
    x = _f64([1.0, 2.0, 3.0], device)
    v = _f64([1.0, 0.0, -1.0], device)
    with fwAD.dual_level() as level:
        assert level == 0
        d = fwAD.make_dual(x, v)
        primal, tangent = fwAD.unpack_dual(d)
        assert tangent is v
        assert_close(primal, x)
        assert fwAD.unpack_dual(primal).tangent is None  # the primal carries no tangent
        assert fwAD.unpack_dual(x).tangent is None       # nor does the original tensor
        y = d * d
        assert_close(fwAD.unpack_dual(y).tangent, 2 * to_numpy(x) * to_numpy(v))
        assert isinstance(fwAD.unpack_dual(y), fwAD.UnpackedDualTensor)
    # leaving the level forgets every tangent
    assert fwAD.unpack_dual(d).tangent is None
    assert fwAD.unpack_dual(y).tangent is None
    assert_close(y, to_numpy(x) ** 2)


def test_levels_do_not_nest_and_exit_checks_the_level(device):
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match="Nested forward mode AD is not supported"):
            fwAD.enter_dual_level()
        with pytest.raises(RuntimeError, match="not the last one"):
            fwAD.exit_dual_level(level=3)
    level = fwAD.enter_dual_level()
    fwAD.exit_dual_level(level=level)
    with pytest.raises(RuntimeError, match="not the last one"):
        fwAD.exit_dual_level()


def test_make_dual_errors(device):
    x = _f64([1.0, 2.0], device)
    with pytest.raises(RuntimeError, match="no level exists.*enter_dual_level"):
        fwAD.make_dual(x, x)
    with fwAD.dual_level():
        with pytest.raises(RuntimeError, match=r"different size.*\[2\].*\[3\]"):
            fwAD.make_dual(x, _f64([1.0, 2.0, 3.0], device))
        with pytest.raises(RuntimeError, match="dtype"):
            fwAD.make_dual(x, x.float())
        with pytest.raises(ValueError, match="floating point"):
            fwAD.make_dual(gpugrad.tensor([1, 2], device=device), x)


def test_unpack_outside_a_level_and_decorator(device):
    x = _f64([1.0], device)
    assert fwAD.unpack_dual(x) == (x, None)

    @fwAD.dual_level()
    def jvp_of_exp(p, v):
        return fwAD.unpack_dual(fwAD.make_dual(p, v).exp()).tangent

    assert_close(jvp_of_exp(x, _f64([2.0], device)), [2 * np.exp(1.0)])


def test_detach_and_data_drop_the_tangent(device):
    with fwAD.dual_level():
        d = fwAD.make_dual(_f64([1.0, 2.0], device), _f64([1.0, 1.0], device))
        assert fwAD.unpack_dual(d.detach()).tangent is None
        assert fwAD.unpack_dual(d.data).tangent is None
        assert fwAD.unpack_dual(d.sum()).tangent.item() == 2.0


def test_tangents_under_no_grad(device):
    """Forward AD does not depend on grad mode (as in torch)."""
    with fwAD.dual_level(), gpugrad.no_grad():
        d = fwAD.make_dual(_f64([0.5, 1.0], device), _f64([1.0, 2.0], device))
        t = fwAD.unpack_dual(d.tanh()).tangent
    x = np.array([0.5, 1.0])
    assert_close(t, (1 - np.tanh(x) ** 2) * [1.0, 2.0])


def test_make_dual_is_differentiable_in_reverse_mode(device):
    x = _f64([1.0, 2.0], device, requires_grad=True)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, _f64([1.0, 1.0], device))
        (d * d).sum().backward()
    assert_close(x.grad, [2.0, 4.0])


# ---- custom Functions ---------------------------------------------------------------------------
class _Cube(Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.scale = scale
        return x * x * x * scale

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g * 3 * x * x * ctx.scale, None

    @staticmethod
    def jvp(ctx, t, _):
        x, = ctx.saved_tensors
        return t * 3 * x * x * ctx.scale


class _NoJvp(Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class _TwoOutputs(Function):
    """Two outputs, one non-differentiable; jvp sees a zero tangent for ``b`` (materialized)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_forward(a, b)
        idx = gpugrad.tensor([0], device=a.device)
        ctx.mark_non_differentiable(idx)
        return a * b, idx

    @staticmethod
    def backward(ctx, g, _):
        return None, None

    @staticmethod
    def jvp(ctx, ta, tb):
        a, b = ctx.saved_tensors
        assert tb is not None  # materialized zeros
        return ta * b + a * tb, None


def test_custom_function_jvp(lib, device):
    torch = lib.mod
    fw = torch.autograd.forward_ad

    class Cube(lib.Function):
        forward, backward, jvp = _Cube.forward, _Cube.backward, _Cube.jvp

    dev = device if lib.name == "gpugrad" else "cpu"
    x = torch.tensor([1.0, -2.0], dtype=torch.float64, device=dev)
    with fw.dual_level():
        y = Cube.apply(fw.make_dual(x, torch.ones_like(x)), 2.0)
        assert to_numpy(fw.unpack_dual(y).tangent).tolist() == [6.0, 24.0]


def test_custom_function_without_jvp_raises(device):
    with fwAD.dual_level():
        d = fwAD.make_dual(_f64([1.0], device), _f64([1.0], device))
        with pytest.raises(NotImplementedError, match="_NoJvp.*implement the jvp function"):
            _NoJvp.apply(d)
        # no tangent reaches it: no jvp needed
        assert _NoJvp.apply(_f64([1.0], device)).item() == 2.0


def test_custom_function_materialized_tangents_and_non_differentiable_output(device):
    a, b = _f64([2.0], device), _f64([3.0], device)
    with fwAD.dual_level():
        y, idx = _TwoOutputs.apply(fwAD.make_dual(a, _f64([1.0], device)), b)
        assert fwAD.unpack_dual(y).tangent.item() == 3.0
        assert fwAD.unpack_dual(idx).tangent is None


# ---- in-place ops and views ---------------------------------------------------------------------
def test_inplace_ops_with_duals_match_torch(lib, device):
    """``x.add_(y)`` with duals, a tangent given to a plain tensor by an in-place op, a write
    through a view into a base with and without a tangent, fill_/zero_ of a dual."""
    torch = lib.mod
    fw = torch.autograd.forward_ad
    dev = device if lib.name == "gpugrad" else "cpu"

    def t(v):
        return torch.tensor(v, dtype=torch.float64, device=dev)

    def tangent(x):
        tan = fw.unpack_dual(x).tangent
        return None if tan is None else to_numpy(tan).tolist()

    with fw.dual_level():
        a = fw.make_dual(t([1.0, 2.0]), t([1.0, 1.0]))
        b = fw.make_dual(t([3.0, 4.0]), t([2.0, -1.0]))
        a.mul_(b)
        assert tangent(a) == [5.0, 2.0]           # ta * b + a * tb
        p = t([0.0, 0.0])
        p.add_(b)
        assert tangent(p) == [2.0, -1.0]          # a plain tensor becomes dual
        base = t([[0.0, 0.0], [0.0, 0.0]])
        base[0].copy_(b)
        assert tangent(base) == [[2.0, -1.0], [0.0, 0.0]]
        x = fw.make_dual(t([[1.0, 2.0], [3.0, 4.0]]), t([[1.0, 1.0], [1.0, 1.0]]))
        v = x[1]
        v.mul_(3)
        assert tangent(v) == [3.0, 3.0]
        assert tangent(x) == [[1.0, 1.0], [3.0, 3.0]]
        z = fw.make_dual(t([1.0, 2.0]), t([1.0, 1.0]))
        z.zero_()
        assert tangent(z) == [0.0, 0.0]


def test_inplace_on_a_dual_updates_the_tangents_of_its_views(lib, device):
    torch = lib.mod
    fw = torch.autograd.forward_ad
    dev = device if lib.name == "gpugrad" else "cpu"
    with fw.dual_level():
        x = fw.make_dual(torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64, device=dev),
                         torch.ones(2, 2, dtype=torch.float64, device=dev))
        row = x[0]
        x.mul_(torch.tensor([[2.0, 3.0], [4.0, 5.0]], dtype=torch.float64, device=dev))
        assert to_numpy(fw.unpack_dual(row).tangent).tolist() == [2.0, 3.0]


def test_jvp_returning_the_wrong_number_of_tangents(device):
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t * 2, t

    with fwAD.dual_level():
        d = fwAD.make_dual(_f64([1.0], device), _f64([1.0], device))
        with pytest.raises(RuntimeError, match="BadBackward: jvp returned an incorrect number "
                                               r"of tangents \(expected 1, got 2\)"):
            Bad.apply(d)


def test_gradient_inside_a_dual_level(device):
    """Forward-over-reverse needs create_graph=True; without it the gradient is right and
    carries no tangent (torch computes one; gpugrad computes none rather than part of one)."""
    x = _f64([0.5, 1.5], device, requires_grad=True)
    v = _f64([1.0, -1.0], device)
    with fwAD.dual_level():
        d = fwAD.make_dual(x, v)
        g, = gpugrad.autograd.grad((d.sin() * d).sum(), x)
        assert fwAD.unpack_dual(g).tangent is None
        assert_close(g, np.cos([0.5, 1.5]) * [0.5, 1.5] + np.sin([0.5, 1.5]))
        g, = gpugrad.autograd.grad((d.sin() * d).sum(), x, create_graph=True)
        a = np.array([0.5, 1.5])
        assert_close(fwAD.unpack_dual(g).tangent,
                     (2 * np.cos(a) - a * np.sin(a)) * [1.0, -1.0], rtol=1e-12, atol=1e-12)


def test_views_of_duals_carry_the_viewed_tangent(device):
    with fwAD.dual_level():
        x = fwAD.make_dual(_f64(np.arange(6.0).reshape(2, 3), device),
                           _f64(np.arange(6.0).reshape(2, 3) * 10, device))
        assert_close(fwAD.unpack_dual(x[1]).tangent, [30.0, 40.0, 50.0])
        assert_close(fwAD.unpack_dual(x.t()).tangent, (np.arange(6.0).reshape(2, 3) * 10).T)
        assert_close(fwAD.unpack_dual(x.view(6)).tangent, np.arange(6.0) * 10)


# ---- every op: forward mode against reverse mode and against torch ------------------------------
def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _cases():
    out = []
    for table, cases in (("ops", _ops_table.DIFFERENTIABLE), ("shape", _shape_table.CASES),
                         ("indexing", [c for c in _indexing_table.CASES if c.gc])):
        for c in cases:
            out.append(pytest.param(c, id=f"{table}-{c.name}"))
    return out


CASES = _cases()


def _tangents_for(case):
    rng = np.random.default_rng(7)
    return [rng.uniform(-1, 1, np.shape(a)) for a in case.arrays()]


def forward_mode(case, device, tangents):
    """The outputs' tangents (None for non-float outputs) from gpugrad's forward mode."""
    primals = [_f64(a, device) for a in case.arrays()]
    with warnings.catch_warnings(), fwAD.dual_level():
        warnings.simplefilter("ignore")
        duals = [fwAD.make_dual(p, _f64(v, device)) for p, v in zip(primals, tangents)]
        outs = _outputs(case.fn(gpugrad, *duals))
        return [None if not o.dtype.is_floating_point else
                (lambda t: np.zeros(o.shape) if t is None else to_numpy(t))(
                    fwAD.unpack_dual(o).tangent) for o in outs]


def reverse_mode_jvp(case, device, tangents):
    """J v from reverse mode: one vjp per output element, with basis vectors."""
    xs = [_f64(a, device, requires_grad=True) for a in case.arrays()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = _outputs(case.fn(gpugrad, *xs))
    result = []
    for o in outs:
        if not o.dtype.is_floating_point:
            result.append(None)
            continue
        jv = np.zeros(o.numel())
        if o.requires_grad:
            flat = o.reshape(-1)
            for k in range(o.numel()):
                gs = gpugrad.autograd.grad(flat[k], xs, retain_graph=True, allow_unused=True)
                jv[k] = sum(float((to_numpy(g) * v).sum()) for g, v in zip(gs, tangents)
                            if g is not None)
        result.append(jv.reshape(tuple(o.shape)))
    return result


def torch_forward_mode(case, tangents):
    torch = torch_or_skip()
    fw = torch.autograd.forward_ad
    fn = getattr(case, "torch_fn", case.fn)
    with warnings.catch_warnings(), fw.dual_level():
        warnings.simplefilter("ignore")
        duals = [fw.make_dual(torch.tensor(a, dtype=torch.float64), torch.tensor(v))
                 for a, v in zip(case.arrays(), tangents)]
        outs = _outputs(fn(torch, *duals))
        return [None if not o.dtype.is_floating_point else
                (lambda t: np.zeros(tuple(o.shape)) if t is None else to_numpy(t))(
                    fw.unpack_dual(o).tangent) for o in outs]


def _tol(result):
    """float64 results agree to rounding; float32 ones (``.float()`` cases) to float32's."""
    return dict(rtol=1e-5, atol=1e-6) if result.dtype == np.float32 else \
        dict(rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", CASES)
def test_jvp_equals_reverse_mode(case, device):
    tangents = _tangents_for(case)
    fwd = forward_mode(case, device, tangents)
    rev = reverse_mode_jvp(case, device, tangents)
    assert len(fwd) == len(rev)
    for k, (f, r) in enumerate(zip(fwd, rev)):
        if r is None:
            assert f is None
            continue
        assert_close(f, r, msg=f"{case.name}: tangent of output {k}", **_tol(f))


@pytest.mark.parametrize("case", [c for c in CASES if getattr(c.values[0], "gc", True) and
                                  getattr(c.values[0], "grad", True) and
                                  getattr(c.values[0], "torch_grad", True)])
def test_jvp_matches_torch(case, device):
    tangents = _tangents_for(case)
    fwd = forward_mode(case, device, tangents)
    ref = torch_forward_mode(case, tangents)
    assert len(fwd) == len(ref)
    for k, (f, r) in enumerate(zip(fwd, ref)):
        if r is None:
            continue
        assert_close(f, r, msg=f"{case.name}: tangent of output {k}", **_tol(f))


# ---- every built-in Function has a jvp, and the tables reach it ---------------------------------
# Built-in Functions of gpugrad.ops without a jvp rule, each with the reason. (None today.)
NO_JVP: dict[str, str] = {}


def builtin_functions():
    """Every concrete built-in Function class defined in gpugrad.ops."""
    seen, stack = set(), [Function]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return sorted((c for c in seen if c._builtin and c.__module__.startswith("gpugrad.ops.")),
                  key=lambda c: (c.__module__, c.__name__))


def test_every_builtin_function_has_a_jvp_rule():
    missing = [f"{c.__module__}.{c.__name__}" for c in builtin_functions()
               if c.jvp is Function.jvp and c.__name__ not in NO_JVP]
    assert not missing, f"built-in Functions without jvp (add one, or list them in NO_JVP " \
                        f"with the reason): {missing}"
    stale = [n for n in NO_JVP if not any(c.__name__ == n for c in builtin_functions())]
    assert not stale, stale


def test_a_builtin_without_jvp_raises_torchs_error(device, monkeypatch):
    from gpugrad.ops.elementwise import Exp
    monkeypatch.setattr(Exp, "jvp", Function.jvp)
    with fwAD.dual_level():
        d = fwAD.make_dual(_f64([1.0], device), _f64([1.0], device))
        with pytest.raises(RuntimeError, match="Trying to use forward AD with ExpBackward0 "
                                               "that does not support it"):
            d.exp()
