"""gpugrad.func against torch.func: grad, grad_and_value, vjp, jvp, jacrev, jacfwd, hessian as
composable transforms (grad of grad, argnums, has_aux, pytrees, closures over tensors that
require grad)."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad import func as gfunc
from helpers import to_numpy, torch_or_skip


def _t(mod, arr, device):
    kw = {"device": device} if mod is gpugrad else {}
    return mod.tensor(arr, dtype=mod.float64, **kw)


def assert_same(a, b, what=""):
    if isinstance(b, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b), f"{what}: {type(a)} vs {type(b)}"
        for k, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{what}[{k}]")
        return
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), what
        for k in b:
            assert_same(a[k], b[k], f"{what}[{k!r}]")
        return
    assert isinstance(a, gpugrad.Tensor), f"{what}: {type(a).__name__}"
    assert tuple(a.shape) == tuple(b.shape), f"{what}: {tuple(a.shape)} vs {tuple(b.shape)}"
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-10, atol=1e-12, err_msg=what)


@pytest.fixture
def pair(device):
    """(torch, x for gpugrad, x for torch, rng) with x a float64 vector of 3."""
    torch = torch_or_skip()
    arr = np.array([0.3, -0.8, 1.1])
    return torch, _t(gpugrad, arr, device), _t(torch, arr, None)


def f_scalar(x):
    return (x.sin() * x ** 2).sum()


def f_vec(x):
    return x.exp() * x.cos()


def f_two(x, y):
    return (x * y.sin()).sum() + (x ** 2 * y).sum()


def test_grad(pair):
    torch, gx, tx = pair
    assert_same(gfunc.grad(f_scalar)(gx), torch.func.grad(f_scalar)(tx))
    assert not gfunc.grad(f_scalar)(gx).requires_grad  # top level: a plain tensor


def test_grad_of_grad_and_third_order(pair):
    torch, gx, tx = pair

    def gsum(f):
        return lambda x: f(x).sum()

    for gf, tf in [(gfunc.grad(gsum(gfunc.grad(f_scalar))), torch.func.grad(gsum(
            torch.func.grad(f_scalar)))),
                   (gfunc.grad(gsum(gfunc.grad(gsum(gfunc.grad(f_scalar))))),
                    torch.func.grad(gsum(torch.func.grad(gsum(torch.func.grad(f_scalar))))))]:
        assert_same(gf(gx), tf(tx))
    # third derivative of x^3 is 6, everywhere
    third = gfunc.grad(gfunc.grad(gfunc.grad(lambda x: x ** 3)))
    assert third(gpugrad.tensor(0.7, dtype=gpugrad.float64)).item() == pytest.approx(6.0)


@pytest.mark.parametrize("argnums", [0, 1, (0, 1), (1, 0), -1])
def test_grad_argnums(pair, argnums):
    torch, gx, tx = pair
    gy, ty = gx * 2 + 0.1, tx * 2 + 0.1
    assert_same(gfunc.grad(f_two, argnums=argnums)(gx, gy),
                torch.func.grad(f_two, argnums=argnums)(tx, ty), str(argnums))


def test_grad_and_value_has_aux(pair):
    torch, gx, tx = pair

    def f(x):
        y = x.sin()
        return (y * y).sum(), {"y": y}

    g_res = gfunc.grad_and_value(f, has_aux=True)(gx)
    t_res = torch.func.grad_and_value(f, has_aux=True)(tx)
    assert_same(g_res[0], t_res[0], "grad")
    assert_same(g_res[1][0], t_res[1][0], "value")
    assert_same(g_res[1][1]["y"], t_res[1][1]["y"], "aux")
    g, aux = gfunc.grad(f, has_aux=True)(gx)
    assert_same(g, t_res[0])


def test_grad_pytree_argument(pair):
    torch, gx, tx = pair

    def f(params, x):
        return ((params["w"] * x).sum() + params["b"][0].sum()) ** 2

    gp = {"w": gx * 3, "b": (gx[:1] + 1, gx[1:])}
    tp = {"w": tx * 3, "b": (tx[:1] + 1, tx[1:])}
    assert_same(gfunc.grad(f)(gp, gx), torch.func.grad(f)(tp, tx))


def test_grad_through_closure_over_tensor_requiring_grad(device):
    # the result of an inner transform stays differentiable w.r.t. captured tensors
    w = gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    x = gpugrad.tensor([0.5, -1.0], dtype=gpugrad.float64, device=device)
    g = gfunc.grad(lambda x: (w * x ** 2).sum())(x)  # 2 w x
    assert g.requires_grad
    g.sum().backward()
    np.testing.assert_allclose(to_numpy(w.grad), 2 * to_numpy(x))


def test_no_perturbation_confusion():
    # d/dx [x * (d/dy (x + y))] = 1: the inner derivative must not see the outer x's perturbation
    f = gfunc.grad(lambda x: x * gfunc.grad(lambda y: x + y)(x))
    assert f(gpugrad.tensor(3.0, dtype=gpugrad.float64)).item() == pytest.approx(1.0)
    # d/dx [x * (d/dy (x * y))] = d/dx x^2 = 2x
    f = gfunc.grad(lambda x: x * gfunc.grad(lambda y: x * y)(x))
    assert f(gpugrad.tensor(3.0, dtype=gpugrad.float64)).item() == pytest.approx(6.0)


def test_aux_may_hold_non_tensors():
    g, (value, aux) = gfunc.grad_and_value(lambda x: ((x * x).sum(), {"n": 3, "x": x}),
                                           has_aux=True)(gpugrad.ones(2))
    assert aux["n"] == 3 and not aux["x"].requires_grad and g.tolist() == [2.0, 2.0]


def test_grad_errors():
    with pytest.raises(RuntimeError, match="scalar"):
        gfunc.grad(f_vec)(gpugrad.ones(3))
    with pytest.raises(RuntimeError, match="argnums"):
        gfunc.grad(f_scalar, argnums=2)(gpugrad.ones(3))
    with pytest.raises(RuntimeError, match="has_aux"):
        gfunc.grad(f_scalar, has_aux=True)(gpugrad.ones(3))


def test_vjp(pair):
    torch, gx, tx = pair
    gout, gfn = gfunc.vjp(f_vec, gx)
    tout, tfn = torch.func.vjp(f_vec, tx)
    assert_same(gout, tout)
    v = np.array([1.0, -2.0, 0.5])
    assert_same(gfn(_t(gpugrad, v, gx.device)), tfn(_t(torch, v, None)))
    assert_same(gfn(_t(gpugrad, v, gx.device)), tfn(_t(torch, v, None)), "second call")
    # two primals, tuple output, aux
    gres = gfunc.vjp(lambda a, b: (((a * b).sin(), a + b), a.sum()), gx, gx * 2, has_aux=True)
    tres = torch.func.vjp(lambda a, b: (((a * b).sin(), a + b), a.sum()), tx, tx * 2,
                          has_aux=True)
    assert_same(gres[0], tres[0])
    assert_same(gres[2], tres[2])
    assert_same(gres[1]((gx, gx)), tres[1]((tx, tx)))


def test_jvp(pair):
    torch, gx, tx = pair
    assert_same(gfunc.jvp(f_vec, (gx,), (gx * 0 + 1,)), torch.func.jvp(f_vec, (tx,), (tx * 0 + 1,)))
    assert_same(gfunc.jvp(f_two, (gx, gx + 1), (gx, -gx)),
                torch.func.jvp(f_two, (tx, tx + 1), (tx, -tx)))
    with pytest.raises(RuntimeError, match="primals to be a tuple"):
        gfunc.jvp(f_vec, gx, (gx,))


@pytest.mark.parametrize("name", ["jacrev", "jacfwd"])
def test_jacobians(pair, name):
    torch, gx, tx = pair
    gj, tj = getattr(gfunc, name), getattr(torch.func, name)
    m = np.arange(6.0).reshape(2, 3) / 5
    gm, tm = _t(gpugrad, m, gx.device), _t(torch, m, None)
    assert_same(gj(f_vec)(gx), tj(f_vec)(tx), "vector")
    assert_same(gj(lambda a: (a @ a.t()).tanh())(gm), tj(lambda a: (a @ a.t()).tanh())(tm),
                "matrix")
    assert_same(gj(f_two, argnums=(0, 1))(gx, gx), tj(f_two, argnums=(0, 1))(tx, tx), "argnums")
    two_out = (lambda a: (a.sin(), (a ** 2).sum()))
    assert_same(gj(two_out)(gx), tj(two_out)(tx), "tuple output")
    aux = (lambda a: (a.exp(), a.sum()))
    gres, tres = gj(aux, has_aux=True)(gx), tj(aux, has_aux=True)(tx)
    assert_same(gres, tres, "has_aux")


def test_hessian_and_compositions(pair):
    torch, gx, tx = pair
    assert_same(gfunc.hessian(f_scalar)(gx), torch.func.hessian(f_scalar)(tx))
    assert_same(gfunc.hessian(f_two, argnums=(0, 1))(gx, gx * 2),
                torch.func.hessian(f_two, argnums=(0, 1))(tx, tx * 2))
    assert_same(gfunc.jacrev(gfunc.jacrev(f_vec))(gx), torch.func.jacrev(torch.func.jacrev(f_vec))(tx))
    assert_same(gfunc.jacfwd(gfunc.grad(f_scalar))(gx),
                torch.func.jacfwd(torch.func.grad(f_scalar))(tx))
    # grad of a function that uses jvp inside
    gh = gfunc.grad(lambda x: gfunc.jvp(f_vec, (x,), (x,))[1].sum())
    th = torch.func.grad(lambda x: torch.func.jvp(f_vec, (x,), (x,))[1].sum())
    assert_same(gh(gx), th(tx))


def test_transforms_work_under_no_grad(pair):
    torch, gx, tx = pair
    with gpugrad.no_grad():
        g = gfunc.grad(f_scalar)(gx)
    assert_same(g, torch.func.grad(f_scalar)(tx))
    assert gpugrad.is_grad_enabled()


def test_aux_stays_differentiable_for_an_outer_transform(pair):
    torch, gx, tx = pair

    def f(x):
        return (x.sin()).sum(), (x ** 3).sum()

    def outer(gmod):
        return lambda x: gmod.grad(f, has_aux=True)(x)[1]

    assert_same(gfunc.grad(outer(gfunc))(gx), torch.func.grad(outer(torch.func))(tx))
