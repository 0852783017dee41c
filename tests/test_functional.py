"""gpugrad.autograd.functional against torch.autograd.functional: jacobian, hessian, vjp, jvp,
hvp, vhp on scalar, vector, matrix and tuple inputs/outputs, create_graph, strict mode's errors,
vectorize, and strategy="forward-mode"."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import functional as F
from helpers import to_numpy, torch_or_skip


# Each case: (name, function of (module, *inputs), input shapes or a single shape, scalar output?)
def _vec(m, x):
    return x.sin() * x.exp()


def _matrix(m, x):
    return (x @ x.t()).tanh()


def _scalar(m, x):
    return (x ** 3).sin()


def _to_scalar(m, x):
    return (x.sin() * x ** 2).sum()


def _tuple_in(m, a, b):
    return a * b.sum() + a.exp() * b


def _tuple_out(m, x):
    return x.sin(), (x ** 2).sum()


def _tuple_in_out(m, a, b):
    return a @ b, (a ** 2).sum() * b.sum(0)


def _tuple_in_scalar(m, a, b):
    return (a.sin() * b).sum() + (a * a * b).sum()


def _seed000(m, x):
    return m.stack([x[0] ** 2 + 2 * x[1], 3 * x[0] + 4 * x[1] ** 2])


CASES = [
    ("vector", _vec, (4,), False),
    ("matrix", _matrix, (2, 3), False),
    ("scalar", _scalar, (), False),
    ("to_scalar", _to_scalar, (3,), True),
    ("tuple_in", _tuple_in, ((3,), (3,)), False),
    ("tuple_out", _tuple_out, (3,), False),
    ("tuple_in_out", _tuple_in_out, ((2, 3), (3, 2)), False),
    ("tuple_in_scalar", _tuple_in_scalar, ((2, 2), (2, 2)), True),
    ("seed000", _seed000, (2,), False),
]
IDS = [c[0] for c in CASES]


def _inputs(shapes, seed=0):
    rng = np.random.RandomState(seed)
    if isinstance(shapes[0] if shapes else None, tuple):
        return tuple(rng.uniform(-1, 1, s) for s in shapes)
    return rng.uniform(-1, 1, shapes)


def _to(mod, arrays, device):
    if isinstance(arrays, tuple):
        return tuple(_to(mod, a, device) for a in arrays)
    kw = {"device": device} if mod is gpugrad else {}
    return mod.tensor(arrays, dtype=mod.float64, **kw)


def assert_same(a, b, what):
    """Same nesting (tuple vs tensor) and same values. (torch's forward-mode jacobian nests
    lists where reverse mode nests tuples; gpugrad uses tuples for both.)"""
    if isinstance(b, (tuple, list)):
        assert isinstance(a, tuple) and len(a) == len(b), f"{what}: {type(a)} vs {type(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{what}[{k}]")
        return
    assert isinstance(a, gpugrad.Tensor), f"{what}: got {type(a).__name__}, expected a Tensor"
    assert tuple(a.shape) == tuple(b.shape), f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}"
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-10, atol=1e-12, err_msg=what)


def _both(case, device, seed=0):
    torch = torch_or_skip()
    _, fn, shapes, _ = case
    arrays = _inputs(shapes, seed)
    return (torch, lambda *xs: fn(gpugrad, *xs), _to(gpugrad, arrays, device),
            lambda *xs: fn(torch, *xs), _to(torch, arrays, None))


def _like(mod, ref, seed, device=None):
    """Random tensors shaped like ref (a tensor or a tuple)."""
    rng = np.random.RandomState(seed)
    refs = ref if isinstance(ref, tuple) else (ref,)
    kw = {"device": device} if mod is gpugrad else {}
    out = tuple(mod.tensor(rng.uniform(-1, 1, tuple(r.shape)), dtype=mod.float64, **kw)
                for r in refs)
    return out if isinstance(ref, tuple) else out[0]


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("create_graph", [False, True])
def test_jacobian_matches_torch(case, create_graph, device):
    torch, gf, gx, tf, tx = _both(case, device)
    got = F.jacobian(gf, gx, create_graph=create_graph)
    want = torch.autograd.functional.jacobian(tf, tx, create_graph=create_graph)
    assert_same(got, want, f"jacobian {case[0]}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacobian_vectorize_gives_the_same(case, device):
    torch, gf, gx, tf, tx = _both(case, device)
    assert_same(F.jacobian(gf, gx, vectorize=True),
                torch.autograd.functional.jacobian(tf, tx, vectorize=True), case[0])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_jacobian_forward_mode(case, device):
    torch, gf, gx, tf, tx = _both(case, device)
    got = F.jacobian(gf, gx, strategy="forward-mode")
    want = torch.autograd.functional.jacobian(tf, tx, strategy="forward-mode", vectorize=True)
    assert_same(got, want, f"forward-mode jacobian {case[0]}")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vjp_and_jvp_match_torch(case, device):
    torch, gf, gx, tf, tx = _both(case, device)
    gout = gf(*gx) if isinstance(gx, tuple) else gf(gx)
    tout = tf(*tx) if isinstance(tx, tuple) else tf(tx)
    gv, tv = _like(gpugrad, gout, 1, device), _like(torch, tout, 1)
    assert_same(F.vjp(gf, gx, gv), torch.autograd.functional.vjp(tf, tx, tv), "vjp")
    gu, tu = _like(gpugrad, gx, 2, device), _like(torch, tx, 2)
    assert_same(F.jvp(gf, gx, gu), torch.autograd.functional.jvp(tf, tx, tu), "jvp")


@pytest.mark.parametrize("case", [c for c in CASES if c[3]], ids=[c[0] for c in CASES if c[3]])
@pytest.mark.parametrize("create_graph", [False, True])
def test_hessian_hvp_vhp_match_torch(case, create_graph, device):
    torch, gf, gx, tf, tx = _both(case, device)
    assert_same(F.hessian(gf, gx, create_graph=create_graph),
                torch.autograd.functional.hessian(tf, tx, create_graph=create_graph), "hessian")
    gv, tv = _like(gpugrad, gx, 3, device), _like(torch, tx, 3)
    for name in ("hvp", "vhp"):
        got = getattr(F, name)(gf, gx, gv, create_graph=create_graph)
        want = getattr(torch.autograd.functional, name)(tf, tx, tv, create_graph=create_graph)
        assert_same(got, want, name)


def test_hessian_forward_over_reverse(device):
    torch, gf, gx, tf, tx = _both(CASES[3], device)
    assert_same(F.hessian(gf, gx, outer_jacobian_strategy="forward-mode"),
                torch.autograd.functional.hessian(tf, tx, outer_jacobian_strategy="forward-mode",
                                                  vectorize=True), "hessian fwd-over-rev")


def test_seed000_jacobian(device):
    def funx(x):
        return gpugrad.stack([x[0] ** 2 + 2 * x[1], 3 * x[0] + 4 * x[1] ** 2])

    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    assert F.jacobian(funx, x).tolist() == [[2.0, 2.0], [3.0, 16.0]]
    assert gpugrad.autograd.functional is F  # reachable as an attribute, as in torch


def test_create_graph_gives_differentiable_results(device):
    x = gpugrad.tensor([0.3, 0.7], dtype=gpugrad.float64, requires_grad=True, device=device)
    jac = F.jacobian(lambda t: t ** 3, x, create_graph=True)
    assert jac.requires_grad
    (g,) = gpugrad.autograd.grad(jac.sum(), x)
    np.testing.assert_allclose(to_numpy(g), 6 * to_numpy(x.detach()))
    # without create_graph: results are detached even when x requires grad
    assert not F.jacobian(lambda t: t ** 3, x).requires_grad
    out, v = F.vjp(lambda t: t ** 2, x, gpugrad.ones_like(x))
    assert not out.requires_grad and not v.requires_grad


def test_results_are_detached_from_grad_mode_state(device):
    x = gpugrad.tensor([1.0, 2.0], device=device)
    with gpugrad.no_grad():
        jac = F.jacobian(lambda t: t * t, x)
    assert jac.tolist() == [[2.0, 0.0], [0.0, 4.0]]
    assert gpugrad.is_grad_enabled()


# ---- errors: same messages as torch --------------------------------------------------------------
def _error(call):
    with pytest.raises(Exception) as e:
        call()
    return type(e.value), str(e.value)


def _same_error(gcall, tcall):
    gt, gm = _error(gcall)
    tt, tm = _error(tcall)
    assert gt.__name__ == tt.__name__ and gm == tm.replace("torch.Size", "gpugrad.Size"), \
        f"gpugrad: {gt.__name__}: {gm}\ntorch:   {tt.__name__}: {tm}"


@pytest.mark.parametrize("which", ["jacobian", "vjp", "jvp", "hessian", "hvp", "vhp"])
def test_strict_independent_output_errors_match_torch(which, device):
    torch = torch_or_skip()
    gx = gpugrad.ones(2, dtype=gpugrad.float64, device=device)
    tx = torch.ones(2, dtype=torch.float64)
    # output independent of the input
    scalar = which in ("hessian", "hvp", "vhp")

    def const(m):
        return (lambda x: m.ones((), dtype=m.float64)) if scalar else \
            (lambda x: m.ones(2, dtype=m.float64))

    # v: shaped like the output for vjp, like the input for the others
    extra_g = () if which in ("jacobian", "hessian") else (
        gpugrad.ones(2, dtype=gpugrad.float64, device=device),)
    extra_t = () if which in ("jacobian", "hessian") else (torch.ones(2, dtype=torch.float64),)
    _same_error(lambda: getattr(F, which)(const(gpugrad), gx, *extra_g, strict=True),
                lambda: getattr(torch.autograd.functional, which)(const(torch), tx, *extra_t,
                                                                  strict=True))


def test_strict_linear_function_hessian_error_matches_torch(device):
    torch = torch_or_skip()
    _same_error(lambda: F.hessian(lambda x: (2 * x).sum(),
                                  gpugrad.ones(2, dtype=gpugrad.float64, device=device),
                                  strict=True),
                lambda: torch.autograd.functional.hessian(lambda x: (2 * x).sum(),
                                                          torch.ones(2, dtype=torch.float64),
                                                          strict=True))


@pytest.mark.parametrize("bad", ["v_length", "v_shape", "v_none", "not_tensor", "hessian_vec",
                                 "strict_vectorize", "strategy", "fwd_create_graph"])
def test_argument_errors_match_torch(bad, device):
    torch = torch_or_skip()

    def calls(m, F_, dev):
        kw = {"device": dev} if m is gpugrad else {}
        x = m.ones(3, dtype=m.float64, **kw)
        sq = (lambda t: t * t)
        return {
            "v_length": lambda: F_.vjp(sq, x, (x, x)),
            "v_shape": lambda: F_.jvp(sq, x, m.ones(2, dtype=m.float64, **kw)),
            "v_none": lambda: F_.vjp(sq, x),
            "not_tensor": lambda: F_.jacobian(sq, [x]),
            "hessian_vec": lambda: F_.hessian(sq, x),
            "strict_vectorize": lambda: F_.jacobian(sq, x, strict=True, vectorize=True),
            "strategy": lambda: F_.jacobian(sq, x, strategy="sideways"),
            "fwd_create_graph": lambda: F_.jacobian(sq, x, create_graph=True,
                                                    strategy="forward-mode"),
        }[bad]

    _same_error(calls(gpugrad, F, device), calls(torch, torch.autograd.functional, None))


def test_forward_mode_without_forward_ad_names_the_missing_piece(monkeypatch):
    import importlib

    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name == "gpugrad.autograd.forward_ad":
            raise ImportError("no forward AD in this build")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(NotImplementedError, match="gpugrad.autograd.forward_ad"):
        F.jacobian(lambda t: t * t, gpugrad.ones(2), strategy="forward-mode")


@pytest.mark.parametrize("which", ["jacobian", "vjp", "jvp", "hessian", "hvp", "vhp"])
def test_independent_output_gives_zeros_without_strict(which, device):
    torch = torch_or_skip()
    scalar = which in ("hessian", "hvp", "vhp")

    def fn(m):
        # depends on x only through a non-differentiable path (or not at all)
        return (lambda x: (x.detach() * 0).sum() + 1) if scalar else \
            (lambda x: m.ones(2, dtype=m.float64) + x.detach())

    gx = gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, device=device)
    tx = torch.tensor([1.0, 2.0], dtype=torch.float64)
    extra_g = () if which in ("jacobian", "hessian") else (gx * 0 + 1,)
    extra_t = () if which in ("jacobian", "hessian") else (tx * 0 + 1,)
    got = getattr(F, which)(fn(gpugrad), gx, *extra_g)
    want = getattr(torch.autograd.functional, which)(fn(torch), tx, *extra_t)
    assert_same(got, want, which)
