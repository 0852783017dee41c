"""Custom ``autograd.Function``: forward/backward/apply, the ctx API, gradient checks on
what backward returns, once_differentiable, double backward, and legacy Functions.

Tests taking ``lib`` run on gpugrad and on PyTorch (the reference, skipped when not
installed) with the same fixed expectations; each defines its Functions on ``lib``.
"""
from __future__ import annotations

import gc
import weakref

import pytest

import gpugrad
from gpugrad.autograd import Function, once_differentiable
from helpers import assert_close, to_numpy, torch_or_skip, vals


def cube_function(lib):
    """seed 002's MyFunction: x**3, saving x; backward 3*x**2*grad (tensor ops)."""

    class MyFunction(lib.Function):
        @staticmethod
        def forward(ctx, x):
            result = x ** 3
            ctx.save_for_backward(x)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * grad_output

    return MyFunction


# ---- the basics ------------------------------------------------------------------------------
def test_seed_my_function(lib):
    MyFunction = cube_function(lib)
    x = lib.tensor(2.0, requires_grad=True)
    y = MyFunction.apply(x)
    assert y.item() == 8.0
    assert y.requires_grad and not y.is_leaf
    y.backward()
    assert x.grad.item() == 12.0


def test_grad_fn_name(lib):
    MyFunction = cube_function(lib)
    y = MyFunction.apply(lib.tensor(2.0, requires_grad=True))
    assert y.grad_fn.name() == "MyFunctionBackward"
    assert type(y.grad_fn).__name__ == "MyFunctionBackward"
    assert "grad_fn=<MyFunctionBackward>" in repr(y)
    nf = y.grad_fn.next_functions
    assert len(nf) == 1 and type(nf[0][0]).__name__ == "AccumulateGrad"


def test_apply_without_grad_records_nothing(lib):
    MyFunction = cube_function(lib)
    y = MyFunction.apply(lib.tensor(2.0))
    assert y.item() == 8.0 and not y.requires_grad and y.grad_fn is None
    with lib.no_grad():
        y = MyFunction.apply(lib.tensor(2.0, requires_grad=True))
    assert not y.requires_grad and y.grad_fn is None


def test_forward_runs_without_recording_backward_with_create_graph(lib):
    modes = {}

    class Probe(lib.Function):
        @staticmethod
        def forward(ctx, x):
            modes["forward"] = lib.is_grad_enabled()
            return x * 2

        @staticmethod
        def backward(ctx, g):
            modes.setdefault("backward", []).append(lib.is_grad_enabled())
            return g * 2

    x = lib.tensor(1.0, requires_grad=True)
    y = Probe.apply(x)
    assert modes["forward"] is False
    assert lib.is_grad_enabled()
    lib.autograd.grad(y, x, retain_graph=True)
    lib.autograd.grad(y, x, create_graph=True)
    assert modes["backward"] == [False, True]


def test_save_for_backward_and_saved_tensors(lib):
    got = {}

    class MulAdd(lib.Function):
        @staticmethod
        def forward(ctx, x, w, b):
            ctx.save_for_backward(x, w, None)
            return x * w + b

        @staticmethod
        def backward(ctx, g):
            saved = ctx.saved_tensors
            got["saved"] = saved
            x, w, none = saved
            return g * w, g * x, g

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    b = lib.tensor([5.0, 6.0], requires_grad=True)
    y = MulAdd.apply(x, w, b)
    assert vals(y) == [8.0, 14.0]
    y.sum().backward()
    assert isinstance(got["saved"], tuple) and len(got["saved"]) == 3
    assert got["saved"][2] is None
    assert vals(got["saved"][0]) == [1.0, 2.0] and vals(got["saved"][1]) == [3.0, 4.0]
    assert vals(x.grad) == [3.0, 4.0] and vals(w.grad) == [1.0, 2.0]
    assert vals(b.grad) == [1.0, 1.0]


def test_saved_tensors_freed_after_backward(lib):
    MyFunction = cube_function(lib)
    y = MyFunction.apply(lib.tensor(2.0, requires_grad=True))
    y.backward(retain_graph=True)
    assert vals(y.grad_fn.saved_tensors[0]) == 2.0
    y.backward()
    with pytest.raises(RuntimeError, match="after they have already been freed"):
        y.grad_fn.saved_tensors
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_saving_an_output(lib):
    class Exp(lib.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    x = lib.tensor([0.0, 1.0], requires_grad=True)
    y = Exp.apply(x)
    y.sum().backward(retain_graph=True)
    assert_close(x.grad, lib.tensor([0.0, 1.0]).exp(), rtol=1e-6)
    y.mul_(2)  # the saved output was modified
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_saving_an_output_makes_no_reference_cycle(device):
    class Exp(Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * y

    gc.collect()
    gc.disable()
    try:
        x = gpugrad.tensor([0.0, 1.0], device=device, requires_grad=True)
        y = Exp.apply(x)
        refs = [weakref.ref(y), weakref.ref(y.grad_fn)]
        del y
        assert [r() for r in refs] == [None, None]
    finally:
        gc.enable()


def test_ctx_attributes_and_needs_input_grad(lib):
    seen = {}

    class Scale(lib.Function):
        @staticmethod
        def forward(ctx, x, c, k, name):
            ctx.k = k
            seen["forward"] = ctx.needs_input_grad
            return x * c * k

        @staticmethod
        def backward(ctx, g):
            seen["backward"] = ctx.needs_input_grad
            return g * ctx.k, None, None, None

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    c = lib.tensor([3.0, 3.0])
    y = Scale.apply(x, c, 2.0, "label")
    y.sum().backward()
    assert seen["forward"] == (True, False, False, False)
    assert seen["backward"] == (True, False, False, False)
    assert vals(x.grad) == [2.0, 2.0]


def test_needs_input_grad_two_tensors(lib):
    seen = []

    class Mul(lib.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            seen.append(ctx.needs_input_grad)
            a, b = ctx.saved_tensors
            return (g * b if ctx.needs_input_grad[0] else None,
                    g * a if ctx.needs_input_grad[1] else None)

    a = lib.tensor(2.0)
    b = lib.tensor(3.0, requires_grad=True)
    Mul.apply(a, b).backward()
    assert seen == [(False, True)]
    assert b.grad.item() == 2.0 and a.grad is None


# ---- outputs ---------------------------------------------------------------------------------
def test_mark_non_differentiable(lib):
    got = []

    class MaxWithIndex(lib.Function):
        @staticmethod
        def forward(ctx, x):
            idx = x.argmax()
            top = x.max()
            flag = x.sum() > 0  # a bool output: never differentiable
            mask = (x > 0).to(x.dtype)  # a float output marked non-differentiable
            ctx.mark_non_differentiable(idx, mask)
            ctx.save_for_backward((x == top).to(x.dtype))
            return top, idx, mask, flag

        @staticmethod
        def backward(ctx, g_top, g_idx, g_mask, g_flag):
            got.append((g_idx, g_mask))
            (onehot,) = ctx.saved_tensors
            return onehot * g_top

    x = lib.tensor([1.0, 5.0, -2.0], requires_grad=True)
    top, idx, mask, flag = MaxWithIndex.apply(x)
    assert top.requires_grad and top.item() == 5.0
    assert not idx.requires_grad and idx.grad_fn is None and idx.item() == 1
    assert not mask.requires_grad and mask.grad_fn is None
    assert not flag.requires_grad  # bool outputs never require grad
    top.backward()
    assert vals(x.grad) == [0.0, 1.0, 0.0]
    g_idx, g_mask = got[0]
    assert g_idx.item() == 0
    assert g_mask is not None and vals(g_mask) == [0.0, 0.0, 0.0]  # materialized zeros


def test_mark_dirty(lib):
    class MulInplace(lib.Function):
        @staticmethod
        def forward(ctx, x, k):
            x.mul_(k)
            ctx.mark_dirty(x)
            ctx.k = k
            return x

        @staticmethod
        def backward(ctx, g):
            return g * ctx.k, None

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    a = x.clone()
    out = MulInplace.apply(a, 3.0)
    assert out is a  # the dirty input itself is returned, with new history
    assert vals(a) == [3.0, 6.0]
    assert a.grad_fn.name() == "MulInplaceBackward"
    (a * a).sum().backward()
    assert vals(x.grad) == [18.0, 36.0]  # d/dx (3x)^2


def test_mark_dirty_invalidates_earlier_saves(lib):
    class AddOneInplace(lib.Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    a = x * 1
    b = a * a  # saves a
    AddOneInplace.apply(a)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        b.sum().backward()


def test_mark_dirty_on_leaf_requiring_grad_raises(lib):
    class AddOneInplace(lib.Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, g):
            return g

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        AddOneInplace.apply(x)


def test_returning_an_input_unchanged_keeps_it_a_leaf(lib):
    class Identity(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            return g * 2

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    y = Identity.apply(x)
    assert y is not x
    assert x.is_leaf and x.grad_fn is None
    assert y.grad_fn.name() == "IdentityBackward"
    y.sum().backward()
    assert vals(x.grad) == [2.0, 2.0]


@pytest.mark.parametrize("materialize", [True, False])
def test_set_materialize_grads(lib, materialize):
    got = []

    class Split(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(materialize)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            got.append((g1, g2))
            total = None
            for g, k in ((g1, 2), (g2, 3)):
                if g is not None:
                    total = g * k if total is None else total + g * k
            return total

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    a, b = Split.apply(x)
    a.sum().backward()  # b unused
    assert vals(x.grad) == [2.0, 2.0]
    g1, g2 = got[0]
    assert vals(g1) == [1.0, 1.0]
    if materialize:
        assert g2 is not None and vals(g2) == [0.0, 0.0]
    else:
        assert g2 is None


def test_several_outputs_some_unused(lib):
    class Three(lib.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x + y, x * y, x - y

        @staticmethod
        def backward(ctx, ga, gb, gc):
            x, y = ctx.saved_tensors
            return ga + gb * y + gc, ga + gb * x - gc

    x = lib.tensor(2.0, requires_grad=True)
    y = lib.tensor(5.0, requires_grad=True)
    s, p, d = Three.apply(x, y)
    assert (s.item(), p.item(), d.item()) == (7.0, 10.0, -3.0)
    (p * 2).backward()
    assert x.grad.item() == 10.0 and y.grad.item() == 4.0
    x.grad = y.grad = None
    s2, p2, d2 = Three.apply(x, y)
    lib.autograd.backward([s2, d2], [lib.tensor(1.0), lib.tensor(10.0)])
    assert x.grad.item() == 11.0 and y.grad.item() == -9.0


def test_non_tensor_outputs_pass_through(lib):
    class WithInfo(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, "info"

        @staticmethod
        def backward(ctx, g, g_info):
            assert g_info is None
            return g * 2

    x = lib.tensor(1.0, requires_grad=True)
    y, info = WithInfo.apply(x)
    assert info == "info"
    y.backward()
    assert x.grad.item() == 2.0


# ---- what backward returns -------------------------------------------------------------------
def test_non_tensor_arguments_get_none_gradients(lib):
    class Power(lib.Function):
        @staticmethod
        def forward(ctx, x, n, label):
            ctx.save_for_backward(x)
            ctx.n = n
            return x ** n

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * ctx.n * x ** (ctx.n - 1), None, None

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    Power.apply(x, 3, "cube").sum().backward()
    assert vals(x.grad) == [3.0, 12.0]


def test_extra_trailing_none_gradients_are_accepted(lib):
    class Double(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2, None, None

    x = lib.tensor(1.0, requires_grad=True)
    Double.apply(x).backward()
    assert x.grad.item() == 2.0


@pytest.mark.parametrize("returned", ["too_few", "too_many"])
def test_wrong_number_of_gradients_raises(lib, returned):
    class Bad(lib.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            if returned == "too_few":
                return (g,)
            return g, g, g

    x = lib.tensor(1.0, requires_grad=True)
    y = lib.tensor(2.0, requires_grad=True)
    with pytest.raises(RuntimeError, match="incorrect number of gradients") as info:
        Bad.apply(x, y).backward()
    assert "expected 2" in str(info.value)
    assert x.grad is None and y.grad is None


def test_gradient_of_wrong_shape_raises(lib):
    class Bad(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return lib.mod.ones(4, dtype=g.dtype, device=g.device)

    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="invalid gradient at index 0") as info:
        Bad.apply(x).sum().backward()
    assert "[4]" in str(info.value) and "[3]" in str(info.value)
    assert x.grad is None


def test_broadcastable_gradient_is_summed(lib):
    class Wide(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return (g * 2).expand(4, 3) * 1  # shape (4, 3) for an input of shape (3,)

    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    Wide.apply(x).sum().backward()
    assert vals(x.grad) == [8.0, 8.0, 8.0]


def test_gradient_dtype_is_cast_to_input_dtype(lib):
    class Widen(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return (g * 2).to(lib.float64)

    x = lib.tensor([1.0, 2.0], requires_grad=True)
    Widen.apply(x).sum().backward()
    assert x.grad.dtype == lib.float32 and vals(x.grad) == [2.0, 2.0]


def test_none_gradient_for_input_that_requires_grad(lib):
    class Stop(lib.Function):
        @staticmethod
        def forward(ctx, x, y):
            return x + y

        @staticmethod
        def backward(ctx, g):
            return None, g

    x = lib.tensor(1.0, requires_grad=True)
    y = lib.tensor(1.0, requires_grad=True)
    Stop.apply(x, y).backward()
    assert x.grad is None and y.grad.item() == 1.0


# ---- higher order ----------------------------------------------------------------------------
def test_double_backward_through_custom_function(lib):
    MyFunction = cube_function(lib)
    x = lib.tensor(2.0, requires_grad=True)
    y = MyFunction.apply(x)
    (g1,) = lib.autograd.grad(y, x, create_graph=True)
    assert g1.item() == 12.0 and g1.requires_grad
    (g2,) = lib.autograd.grad(g1, x, create_graph=True)
    assert g2.item() == 12.0
    (g3,) = lib.autograd.grad(g2, x)
    assert g3.item() == 6.0


def test_custom_function_matches_builtin_second_derivative(device):
    torch = torch_or_skip()

    def make(m):
        class SinExp(m.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x.sin() * x.exp()

            @staticmethod
            def backward(ctx, g):
                (x,) = ctx.saved_tensors
                return g * (x.cos() + x.sin()) * x.exp()
        return SinExp

    data = [0.1, 0.7, -1.3]

    def second(m, x):
        y = make(m).apply(x).sum()
        (g,) = m.autograd.grad(y, x, create_graph=True)
        (gg,) = m.autograd.grad(g.sum(), x)
        return g, gg

    xg = gpugrad.tensor(data, dtype=gpugrad.float64, device=device, requires_grad=True)
    xt = torch.tensor(data, dtype=torch.float64, requires_grad=True)
    for a, e in zip(second(gpugrad, xg), second(torch, xt)):
        assert_close(a, e, rtol=1e-10, atol=1e-12)


def once_cube(lib):
    class OnceCube(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        @lib.once_differentiable
        def backward(ctx, g):
            assert not lib.is_grad_enabled()
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    return OnceCube


def test_once_differentiable_first_order(lib):
    OnceCube = once_cube(lib)
    x = lib.tensor(2.0, requires_grad=True)
    OnceCube.apply(x).backward()
    assert x.grad.item() == 12.0


def test_once_differentiable_double_backward_raises(lib):
    OnceCube = once_cube(lib)
    x = lib.tensor(2.0, requires_grad=True)
    z = OnceCube.apply(x) ** 2  # the gradient reaching OnceCube's backward requires grad
    (g,) = lib.autograd.grad(z, x, create_graph=True)
    assert g.item() == 192.0  # 2 * x**3 * 3 * x**2
    assert g.requires_grad
    with pytest.raises(RuntimeError, match="differentiate twice a function that was marked "
                                           "with @once_differentiable"):
        g.backward()
    # (torch links its error node to fake leaves, so it reports x as unused here instead)
    with pytest.raises(RuntimeError):
        lib.autograd.grad(g, x)


def test_once_differentiable_result_is_constant_without_graph_input(lib):
    OnceCube = once_cube(lib)
    x = lib.tensor(2.0, requires_grad=True)
    (g,) = lib.autograd.grad(OnceCube.apply(x), x, create_graph=True)
    assert g.item() == 12.0 and not g.requires_grad


def test_once_differentiable_is_exported():
    assert gpugrad.autograd.function.once_differentiable is once_differentiable


# ---- misuse ----------------------------------------------------------------------------------
def test_legacy_function_raises(lib):
    class Legacy(lib.Function):
        def forward(self, x):
            return x * 2

        def backward(self, g):
            return g * 2

    x = lib.tensor([1.0], requires_grad=True)
    with pytest.warns(DeprecationWarning) if lib.name == "torch" else _nothing():
        with pytest.raises(RuntimeError, match="(?i)legacy autograd function with non-static"):
            Legacy()(x)


def test_static_function_instance_is_not_callable(lib):
    MyFunction = cube_function(lib)
    with pytest.warns(DeprecationWarning) if lib.name == "torch" else _nothing():
        with pytest.raises(RuntimeError, match="(?i)apply|legacy"):
            MyFunction()(lib.tensor(1.0, requires_grad=True))


def test_function_without_backward_raises_on_backward(lib):
    class NoBackward(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    x = lib.tensor(1.0, requires_grad=True)
    y = NoBackward.apply(x)
    with pytest.raises(NotImplementedError, match="backward"):
        y.backward()


def test_save_for_backward_rejects_non_tensors(lib):
    class SavesNumber(lib.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, 3)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with pytest.raises(TypeError, match="save_for_backward can only save"):
        SavesNumber.apply(lib.tensor(1.0, requires_grad=True))


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_tensor_passed_by_keyword_is_recorded(lib):
    class AddScaled(lib.Function):
        @staticmethod
        def forward(ctx, a, k=2.0, b=None):
            ctx.k = k
            return a * k + (b if b is not None else 0)

        @staticmethod
        def backward(ctx, g):
            return g * ctx.k, None, g

    x = lib.tensor(3.0, requires_grad=True)
    y = lib.tensor(1.0, requires_grad=True)
    out = AddScaled.apply(x, k=3.0, b=y)
    assert out.item() == 10.0 and out.grad_fn is not None
    out.backward()
    assert x.grad.item() == 3.0 and y.grad.item() == 1.0
    by_name = AddScaled.apply(a=x)
    assert by_name.item() == 6.0 and by_name.requires_grad
    with pytest.raises(TypeError, match="missing required argument: 'k'"):
        AddScaled.apply(x, b=y)


def test_subclass_of_a_built_in_op_runs_its_own_forward_and_backward():
    """Built-in ops take shortcuts (Function._fast, _backward_arrays); a subclass that
    redefines forward or backward must run its own, recorded or not, with or without
    gradients, and a subclass that redefines neither keeps the op's behaviour."""
    from gpugrad.ops.elementwise import Mul, Tanh
    from gpugrad.ops.linalg import Matmul, Mm

    calls = []

    class LoudMul(Mul):
        @staticmethod
        def forward(ctx, a, b):
            calls.append("forward")
            return Mul.forward(ctx, a, b)

    class HalfTanh(Tanh):
        @staticmethod
        def backward(ctx, g):
            calls.append("backward")
            return Tanh.backward(ctx, g) * 0.5

    x = gpugrad.tensor([0.5, -1.0, 2.0], requires_grad=True)
    with gpugrad.no_grad():
        LoudMul.apply(x, 2.0)
    LoudMul.apply(x, 2.0).sum().backward()
    assert calls == ["forward", "forward"]
    assert vals(x.grad) == [2.0, 2.0, 2.0]

    calls.clear()
    x.grad = None
    HalfTanh.apply(x).sum().backward()
    assert calls == ["backward"]
    assert_close(x.grad, 0.5 * (1 - gpugrad.tanh(x.detach()) ** 2))

    assert LoudMul._fast is None and LoudMul._backward_cls._lean is None
    assert HalfTanh._fast is None and HalfTanh._backward_cls._lean is None
    # a subclass that only renames the node (torch's MmBackward0) keeps both shortcuts
    assert Mm._fast is not None and Mm._backward_cls._lean is Matmul._backward_cls._lean
