"""gradcheck / gradgradcheck as public API: torch's arguments, and broken custom Functions are
caught (wrong first or second derivative, wrong jvp, non-deterministic backward, backward that
cannot take undefined gradients), with reports naming input, output, entry and both values."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import GradcheckError, gradcheck, gradgradcheck


def _f64(lib, data, requires_grad=True):
    return lib.tensor(data, dtype=lib.float64, requires_grad=requires_grad)


def _functions(lib):
    """Custom Functions: a correct one, and broken ones."""

    class Cube(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x ** 2 * g

    class WrongScale(lib.Function):  # d(x*y)/dy reported as 2x
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x * y

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return g * y, 2 * g * x

    class WrongEntry(lib.Function):  # one entry of the Jacobian is off
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            gx = g * 2
            mask = lib.zeros(gx.shape, dtype=gx.dtype)
            mask[1] = 1.0
            return gx + mask * g

    class Noisy(lib.Function):  # backward is not deterministic
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g * (1 + 1e-9 * lib.rand(g.shape, dtype=g.dtype))

    return Cube, WrongScale, WrongEntry, Noisy


def test_good_function_passes(lib):
    Cube, *_ = _functions(lib)
    x = _f64(lib, [0.5, -1.5, 2.0])
    assert lib.autograd.gradcheck(Cube.apply, (x,)) is True
    assert lib.autograd.gradcheck(Cube.apply, x, fast_mode=True) is True
    assert lib.autograd.gradgradcheck(Cube.apply, (x,)) is True


def test_wrong_gradient_is_caught(lib):
    _, WrongScale, *_ = _functions(lib)
    x, y = _f64(lib, [1.0, 2.0]), _f64(lib, [3.0, -1.0])
    with pytest.raises(RuntimeError, match="Jacobian mismatch for output 0 with respect to "
                                           "input 1"):
        lib.autograd.gradcheck(WrongScale.apply, (x, y))
    assert lib.autograd.gradcheck(WrongScale.apply, (x, y), raise_exception=False) is False
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        lib.autograd.gradcheck(WrongScale.apply, (x, y), fast_mode=True)


def test_report_names_input_output_entry_and_both_values():
    Cube, WrongScale, WrongEntry, _ = _functions(gpugrad)
    x = gpugrad.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gpugrad.float64, requires_grad=True)
    with pytest.raises(GradcheckError) as e:
        gradcheck(lambda a: WrongEntry.apply(a.reshape(-1)), (x,))
    msg = str(e.value)
    assert "output 0 with respect to input 0" in msg
    # flat element 1 of the input is element [0, 1]; output element 1
    assert "(row 1, col 1)" in msg and "index (0, 1)" in msg
    assert re.search(r"numerical 2\.0\d* vs analytical 3\.0", msg), msg
    assert "1 of 16 entries fail" in msg
    assert "numerical:\n" in msg and "analytical:\n" in msg  # the Jacobians themselves

    x, y = (gpugrad.tensor(v, dtype=gpugrad.float64, requires_grad=True)
            for v in ([1.0, 2.0], [3.0, -1.0]))
    with pytest.raises(GradcheckError, match=r"input 1: first mismatch at \(row 0, col 0\) .* "
                                             r"numerical 1\.0\d* vs analytical 2\.0"):
        gradcheck(lambda a, b: (a + b, WrongScale.apply(a, b)), (x, y))


def test_wrong_second_derivative_is_caught_by_gradgradcheck(lib):
    class CubeGrad(lib.Function):  # forward 3x^2 is right, its derivative 3x is wrong
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 3 * x ** 2

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 3 * x * g

    class Cube(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return CubeGrad.apply(x) * g

    x = _f64(lib, [0.5, -1.5])
    assert lib.autograd.gradcheck(Cube.apply, (x,))
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        lib.autograd.gradgradcheck(Cube.apply, (x,))


def test_non_deterministic_backward(lib):
    *_, Noisy = _functions(lib)
    x = _f64(lib, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="Backward is not reentrant"):
        lib.autograd.gradcheck(Noisy.apply, (x,))
    assert lib.autograd.gradcheck(Noisy.apply, (x,), nondet_tol=1e-6)


def test_backward_that_mishandles_undefined_grads(lib):
    class Sloppy(lib.Function):  # with an undefined (None) grad it should give zeros
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            if g is None:
                return lib.ones((2,), dtype=lib.float64)
            return 2 * g

    x = _f64(lib, [1.0, 2.0])
    with pytest.raises(RuntimeError, match="undefined or zero"):
        lib.autograd.gradcheck(Sloppy.apply, (x,))
    assert lib.autograd.gradcheck(Sloppy.apply, (x,), check_undefined_grad=False)


def test_check_grad_dtypes(device):
    class WrongDtype(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return (g * 2).float()  # float32 for a float64 input: the engine casts it back

    x = gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    assert gradcheck(WrongDtype.apply, (x,), check_grad_dtypes=True, atol=1e-4)


def test_check_forward_ad(device):
    pytest.importorskip("gpugrad.autograd.forward_ad")

    class Sq(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.save_for_forward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

        @staticmethod
        def jvp(ctx, t):
            x, = ctx.saved_tensors
            return 2 * x * t

    class SqWrongJvp(Sq):
        @staticmethod
        def jvp(ctx, t):
            x, = ctx.saved_tensors
            return 3 * x * t

    x = gpugrad.tensor([0.5, -2.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    assert gradcheck(Sq.apply, (x,), check_forward_ad=True)
    assert gradcheck(lambda t: (t.sin() * t).exp(), (x,), check_forward_ad=True)
    with pytest.raises(GradcheckError, match="While considering the forward AD gradients: "
                                             "Jacobian mismatch for output 0 with respect to "
                                             "input 0"):
        gradcheck(SqWrongJvp.apply, (x,), check_forward_ad=True)
    # the reverse-mode check alone does not look at jvp
    assert gradcheck(SqWrongJvp.apply, (x,))
    with pytest.raises(GradcheckError, match="forward AD"):
        gradcheck(SqWrongJvp.apply, (x,), check_forward_ad=True, check_backward_ad=False)


def test_argument_checks(device):
    x = gpugrad.tensor([1.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    with pytest.raises(NotImplementedError, match="vmap"):
        gradcheck(lambda t: t * 2, (x,), check_batched_grad=True)
    with pytest.raises(NotImplementedError, match="vmap"):
        gradgradcheck(lambda t: t * t, (x,), check_batched_grad=True)
    with pytest.raises(ValueError, match="at least one of check_forward_ad or check_backward_ad"):
        gradcheck(lambda t: t * 2, (x,), check_backward_ad=False)
    with pytest.raises(ValueError, match="requires_grad=True"):
        gradcheck(lambda t: t * 2, (x.detach(),))
    with pytest.warns(UserWarning, match="not a double precision"):
        gradcheck(lambda t: t * 2, (gpugrad.ones(1, requires_grad=True, device=device),),
                  atol=1e-2, rtol=1e-2, eps=1e-3)


def test_eps_atol_rtol_are_used(device):
    # a kink inside the finite-difference window: a large eps sees it, a small one does not
    x = gpugrad.tensor([1e-3], dtype=gpugrad.float64, requires_grad=True, device=device)
    assert gradcheck(gpugrad.abs, (x,), eps=1e-6)
    assert not gradcheck(gpugrad.abs, (x,), eps=1e-2, raise_exception=False)
    # a loose tolerance accepts a slightly wrong gradient, a tight one does not
    class Off(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            return g * 1.01

    y = gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    assert not gradcheck(Off.apply, (y,), raise_exception=False)
    assert gradcheck(Off.apply, (y,), rtol=2e-2)
    assert gradcheck(Off.apply, (y,), atol=3e-2, rtol=0)


def test_third_derivatives_of_smooth_ops(device):
    """gradgradcheck of the second derivative (third order) on a few elementwise ops."""
    x = gpugrad.tensor([0.3, -0.6, 0.9], dtype=gpugrad.float64, requires_grad=True,
                       device=device)
    for op in (gpugrad.sin, gpugrad.exp, gpugrad.tanh, gpugrad.sigmoid, lambda t: t ** 4):
        def first(t, op=op):
            (g,) = gpugrad.autograd.grad(op(t).sum(), t, create_graph=True)
            return g
        assert gradgradcheck(first, (x,)), op
    # and by value: d^3/dx^3 sin = -cos
    f = gpugrad.func.grad(gpugrad.func.grad(gpugrad.func.grad(lambda t: t.sin())))
    assert f(gpugrad.tensor(0.4, dtype=gpugrad.float64)).item() == pytest.approx(-np.cos(0.4))


def test_quiet_on_float64(device):
    x = gpugrad.tensor([1.0], dtype=gpugrad.float64, requires_grad=True, device=device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradcheck(lambda t: t.exp(), (x,))
