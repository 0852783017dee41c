"""Custom Function completeness (issue 5), each beside torch: non-tensor arguments and outputs,
several outputs with some None gradients, mark_non_differentiable, once_differentiable on double
backward, save_for_forward with jvp, and seed 003's NumPy-implemented Function (static API)."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from helpers import to_numpy, vals


def test_non_tensor_arguments_and_outputs(lib):
    class Scale(lib.Function):
        @staticmethod
        def forward(ctx, x, factor, name, opts, y):
            ctx.factor, ctx.offset = factor, opts["offset"]
            ctx.save_for_backward(y)
            return x * factor + y * ctx.offset, name.upper(), factor + 1

        @staticmethod
        def backward(ctx, g, g_name, g_int):
            y, = ctx.saved_tensors
            assert g_name is None and g_int is None  # non-tensor outputs have no gradient
            return g * ctx.factor, None, None, None, g * ctx.offset

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = lib.tensor([3.0, 4.0], requires_grad=True)
    out, name, k = Scale.apply(x, 3.0, "ab", {"offset": 0.5}, y)
    assert name == "AB" and k == 4.0
    out.sum().backward()
    assert vals(x.grad) == [3.0, 3.0] and vals(y.grad) == [0.5, 0.5]


def test_several_outputs_some_none_gradients(lib):
    class Split(lib.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b, a * 2, b * 3

        @staticmethod
        def backward(ctx, g_sum, g_a2, g_b3):
            # b gets no gradient from this backward at all (None), even though it requires it
            return g_sum + 2 * g_a2, None

    a = lib.tensor([1.0, 2.0], requires_grad=True)
    b = lib.tensor([5.0, 6.0], requires_grad=True)
    s, a2, b3 = Split.apply(a, b)
    (a2 * 10).sum().backward()  # only one output used: the others' grads are zeros
    assert vals(a.grad) == [20.0, 20.0]
    assert b.grad is None  # None gradient: nothing accumulated
    ga, gb = lib.autograd.grad(s.sum() + b3.sum(), (a, b), allow_unused=True)
    assert vals(ga) == [1.0, 1.0] and gb is None


def test_mark_non_differentiable_index_output(lib):
    class MaxWithIndex(lib.Function):
        @staticmethod
        def forward(ctx, x):
            idx = x.argmax(0)
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(idx)
            ctx.n = x.shape[0]
            return x.amax(0), idx

        @staticmethod
        def backward(ctx, g, g_idx):
            idx, = ctx.saved_tensors
            out = lib.zeros(ctx.n, dtype=g.dtype)
            out[idx] = g
            return out

    x = lib.tensor([1.0, 5.0, 2.0], requires_grad=True)
    value, idx = MaxWithIndex.apply(x)
    assert not idx.requires_grad and idx.grad_fn is None
    assert value.requires_grad
    value.backward()
    assert vals(x.grad) == [0.0, 1.0, 0.0]


def test_once_differentiable_refuses_double_backward(lib):
    class Square(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        @lib.once_differentiable
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return 2 * x * g

    x = lib.tensor([3.0], requires_grad=True)
    v = lib.tensor([1.0], requires_grad=True)  # the result depends on v: it is recorded
    (g,) = lib.autograd.grad(Square.apply(x), x, v, create_graph=True)
    assert vals(g) == [6.0]
    with pytest.raises(RuntimeError, match="trying to differentiate twice a function that was "
                                           "marked with @once_differentiable"):
        g.sum().backward()


def test_save_for_forward_and_jvp(lib):
    if lib.mod is gpugrad:
        pytest.importorskip("gpugrad.autograd.forward_ad")
    fwad = lib.autograd.forward_ad

    class Cube(lib.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_forward(x)
            ctx.k = k
            return k * x ** 3

        @staticmethod
        def backward(ctx, g):  # not used here
            raise AssertionError

        @staticmethod
        def jvp(ctx, t, _):
            x, = ctx.saved_tensors
            return ctx.k * 3 * x ** 2 * t

    x = lib.tensor([1.0, 2.0], dtype=lib.float64)
    with fwad.dual_level():
        out = Cube.apply(fwad.make_dual(x, lib.tensor([1.0, 0.5], dtype=lib.float64)), 2.0)
        primal, tangent = fwad.unpack_dual(out)[:2]
    assert vals(primal) == [2.0, 16.0]
    assert vals(tangent) == [6.0, 12.0]


def test_seed003_numpy_function_static_api(lib):
    """seed 003's BadFFTFunction, with torch's static-method API: forward and backward in
    NumPy, state kept on ctx as NumPy arrays."""

    class BadFFTFunction(lib.Function):
        @staticmethod
        def forward(ctx, input):
            numpy_input = input.detach().numpy()
            ctx.numpy_input = numpy_input  # not a tensor: kept on ctx, not saved
            result = np.power(np.add(numpy_input, 2), 2) + 3  # (x+2) ** 2 + 3
            return input.new(result)

        @staticmethod
        def backward(ctx, grad_output):
            result = np.dot(np.add(ctx.numpy_input, 2), 2)
            return grad_output.new(result) * grad_output

    x = lib.tensor([2.0], requires_grad=True)
    result = BadFFTFunction.apply(x)
    assert vals(result) == [19.0]
    result.backward(lib.ones(result.size()) * 0.01)
    assert vals(x.grad) == pytest.approx([0.08])
    # and it is right: gradcheck in float64
    x64 = lib.tensor([0.5, -1.5, 2.0], dtype=lib.float64, requires_grad=True)
    assert lib.autograd.gradcheck(BadFFTFunction.apply, (x64,))


def test_input_new_keeps_dtype_and_device(device):
    x = gpugrad.tensor([1.0], dtype=gpugrad.float64, device=device)
    y = x.new(np.array([2.0, 3.0]))
    assert y.dtype == gpugrad.float64 and str(y.device) == str(x.device)
    np.testing.assert_array_equal(to_numpy(y), [2.0, 3.0])
