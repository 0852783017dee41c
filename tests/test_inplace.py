"""In-place ops and views: shared memory and version counters, gradients through writes into
views (CopySlices), ``__setitem__``, ``copy_``, and torch's errors where it refuses.

Each program runs on gpugrad and on PyTorch (the reference, when installed) from the same
float64 inputs; values and the inputs' gradients must match. ``gradcheck`` runs too, so the
gradients are checked numerically also without PyTorch.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import gradcheck, gradgradcheck
from helpers import assert_close, torch_or_skip

rng = np.random.default_rng(0)


def _inputs(mod, device, arrays):
    return [mod.tensor(a.copy(), dtype=mod.float64, device=device, requires_grad=True)
            for a in arrays]


def check(program, *shapes, device="cpu", double=True):
    """Run ``program(lib_module, *inputs)`` on gpugrad and torch; compare values and grads."""
    arrays = [rng.standard_normal(s) for s in shapes]
    xs = _inputs(gpugrad, device, arrays)
    out = program(gpugrad, *xs)
    weights = rng.standard_normal(tuple(out.shape))
    (out * gpugrad.tensor(weights, device=device)).sum().backward()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        ts = _inputs(torch, "cpu", arrays)
        tout = program(torch, *ts)
        (tout * torch.tensor(weights)).sum().backward()
        assert_close(out, tout, rtol=1e-10, atol=1e-12, msg="value")
        for x, t in zip(xs, ts):
            assert_close(x.grad, t.grad, rtol=1e-10, atol=1e-12, msg="grad")
    fresh = _inputs(gpugrad, device, arrays)
    assert gradcheck(lambda *a: program(gpugrad, *a), fresh)
    if double:
        assert gradgradcheck(lambda *a: program(gpugrad, *a), fresh)
    return out


# ---- writes into views of non-leaf tensors: gradients for base, view and values ------------
def _row_mul(m, x):
    b = x * 1
    b[1].mul_(10)
    return b


def _view_then_use_view(m, x):
    b = x * 1
    r = b[0]
    r.add_(r * 2)
    return r * b[1]


def _sibling_view_goes_stale(m, x):
    b = x.clone()
    col = b[:, 0]          # made before the write: its history must be regenerated
    b[0].mul_(3)
    return col * 2


def _write_base_read_old_view(m, x):
    b = x.clone()
    v = b[1:, :2]
    b.mul_(x.exp())         # the base changes; v sees new data and new history
    return v.exp()


def _nested_views(m, x):
    b = x * 1
    b.t()[1][::2].sub_(x[0, ::2].t() if x.dim() == 1 else x[0:2, 1].t())
    return b


def _transposed_view_zero(m, x):
    b = x * 2
    b.t()[0].zero_()
    return b * x


def _setitem_forms(m, x, v):
    b = x * 2
    b[0] = v[0] ** 2              # tensor into a row
    b[1, 1:] = 5.0                # scalar into a slice
    b[..., 0] = v[1, 0]           # 0-d tensor broadcast into a column
    b[-1, ::2] = v[2, ::2] * b[0, ::2].clone()
    return b


def _copy_into_view(m, x, v):
    b = x + 1
    b[1:].copy_(v[0])             # broadcast (3,) into (2, 3)
    return b.sin()


def _inplace_family_on_view(m, x):
    b = x * 1
    b[0].add_(1.5).mul_(2).sub_(b[1]).div_(3)
    b[1].pow_(2).clamp_(max=2.0)
    b[2].mul_(0.5).exp_()
    return b


def _augmented_assignment(m, x, y):
    b = x * 1
    b += y
    b *= y
    b[0] -= y[1]
    b /= 2
    return b


def _seed_001_grad_routing(m, x):
    n = m.zeros(1, 2, dtype=m.float64, device=x.device)
    n[0, 0] = x[0, 0] ** 2
    n[0, 1] = x[0, 1] ** 3
    return n


@pytest.mark.parametrize("program,shapes", [
    (_row_mul, [(3, 4)]),
    (_view_then_use_view, [(2, 3)]),
    (_sibling_view_goes_stale, [(3, 3)]),
    (_write_base_read_old_view, [(3, 3)]),
    (_nested_views, [(3, 4)]),
    (_transposed_view_zero, [(3, 2)]),
    (_setitem_forms, [(3, 3), (3, 3)]),
    (_copy_into_view, [(3, 3), (2, 3)]),
    (_inplace_family_on_view, [(3, 4)]),
    (_augmented_assignment, [(3, 2), (3, 2)]),
    (_seed_001_grad_routing, [(1, 2)]),
], ids=lambda p: getattr(p, "__name__", "")[1:] if callable(p) else "")
def test_gradients_through_writes(program, shapes, device):
    check(program, *shapes, device=device)


def test_seed_001_prints_copyslices(device):
    m = gpugrad.tensor([[2.0, 3.0]], requires_grad=True, device=device)
    n = gpugrad.zeros(1, 2, device=device)
    n[0, 0] = m[0, 0] ** 2
    n[0, 1] = m[0, 1] ** 3
    assert n.grad_fn.name() == "CopySlices"
    assert n.tolist() == [[4.0, 27.0]]
    n.backward(gpugrad.ones_like(n))
    assert m.grad.tolist() == [[4.0, 27.0]]


# ---- memory and version sharing ---------------------------------------------------------------
@pytest.mark.parametrize("make_view", [
    lambda t: t[1], lambda t: t[:, 1:], lambda t: t.t(), lambda t: t.transpose(0, 1)[0],
    lambda t: t.reshape(3, 2), lambda t: t.unsqueeze(0)[0], lambda t: t[None, ..., 0],
    lambda t: t.permute(1, 0)[::2], lambda t: t.view(-1), lambda t: t[0, 0],
])
def test_views_share_memory_and_version(make_view, device):
    base = gpugrad.arange(6.0, device=device).reshape(2, 3).clone()
    view = make_view(base)
    assert view._base is base and view._version is base._version
    before = base._version.value
    view.fill_(7.0)
    assert base._version.value == before + 1
    assert (make_view(base) == 7.0).all()
    base.zero_()
    assert (view == 0).all()


def test_detach_shares_version_counter(device):
    x = gpugrad.ones(3, device=device, requires_grad=True)
    y = x.exp()
    y.detach().add_(1)        # modifies y's data: its saved value is now wrong
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_saved_tensor_modified_in_place_names_versions(device):
    x = gpugrad.ones(3, device=device, requires_grad=True)
    y = x.tanh()
    y.mul_(2)
    with pytest.raises(RuntimeError, match=r"is at version 1; expected version 0"):
        y.sum().backward()


def test_write_into_view_after_it_was_saved(device):
    x = gpugrad.ones(2, 3, device=device, requires_grad=True)
    b = x * 1
    c = b * b                  # saves b
    b[0] = 5.0                 # bumps the version shared with b
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        c.sum().backward()


# ---- refusals -----------------------------------------------------------------------------------
def test_inplace_on_leaf_requiring_grad_refused(device):
    w = gpugrad.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        w[0] = 2.0
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        w += 1
    assert w.tolist() == [1.0, 1.0, 1.0]  # nothing half-changed


def test_inplace_on_leaf_allowed_under_no_grad(device):
    w = gpugrad.ones(3, device=device, requires_grad=True)
    (w * 3).sum().backward()
    same = w
    with gpugrad.no_grad():
        w -= 0.5 * w.grad
        w[0] = 10.0
    assert w is same and w.requires_grad and w.is_leaf
    assert w.tolist() == [10.0, -0.5, -0.5]


def test_write_into_expanded_tensor_refused(device):
    b = gpugrad.ones(3, device=device).expand(2, 3)
    with pytest.raises(RuntimeError, match="single memory location"):
        b.add_(1)


def test_result_type_cannot_be_cast_back(device):
    i = gpugrad.ones(3, dtype=gpugrad.int64, device=device)
    with pytest.raises(RuntimeError, match="can't be cast"):
        i.add_(0.5)
    assert i.tolist() == [1, 1, 1]


def test_torch_refuses_the_same(device):
    torch = torch_or_skip()
    w = torch.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.add_(1)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        w[0] = 2.0


# ---- grads and the seeds' idioms --------------------------------------------------------------
def test_grad_zeroing_idioms(device):
    x = gpugrad.tensor([2.0, 3.0], requires_grad=True, device=device)
    (x * x).sum().backward()
    g = x.grad
    x.grad.data.zero_()
    assert g.tolist() == [0.0, 0.0] and x.grad is g
    (x * x).sum().backward()
    x.grad.zero_()
    assert x.grad.tolist() == [0.0, 0.0]
    x.grad = None
    (x * x).sum().backward()
    assert x.grad.tolist() == [4.0, 6.0]


def test_copy_between_dtypes_and_gradient_to_source(device):
    src = gpugrad.tensor([1.5, -2.5], dtype=gpugrad.float32, requires_grad=True, device=device)
    dst = gpugrad.zeros(3, 2, dtype=gpugrad.float64, device=device)
    dst.copy_(src)
    assert dst.dtype is gpugrad.float64 and dst.grad_fn.name() == "CopyBackwards"
    (dst * 2).sum().backward()
    assert src.grad.dtype is gpugrad.float32 and src.grad.tolist() == [6.0, 6.0]


def test_zero_on_graph_tensor_gives_zero_backward(device):
    # seed 002: x.grad (with history, from create_graph) zeroed in place, then backward.
    x = gpugrad.tensor(2.0, requires_grad=True, device=device)
    (x ** 3).backward(create_graph=True)
    grad_x = x.grad
    x.grad.zero_()
    assert grad_x.grad_fn.name() == "ZeroBackward0"
    grad_x.backward()
    assert x.grad is grad_x and x.grad.item() == 0.0


def test_gpugrad_keeps_the_original_where_torch_refuses(device):
    # torch saves self for mul_'s backward and then sees it modified; gpugrad saves a copy
    # of the original input, so the gradient is simply right.
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    b = x * 1
    b.mul_(b)
    b.sum().backward()
    assert x.grad.tolist() == [2.0, 4.0]


def test_double_backward_through_copyslices(device):
    x = gpugrad.tensor(rng.standard_normal((3, 3)), requires_grad=True, device=device)

    def f(x):
        b = x * x
        b[1:, 1] = x[0, 1:] ** 3
        return b.sin()

    assert gradgradcheck(f, [x])


def test_write_through_a_view_of_an_expanded_tensor(lib):
    # torch's expand is writable: a non-overlapping view of it writes into the base (every
    # row shows the write); a write to the whole expanded tensor would overlap and is refused.
    z = lib.ones(3).expand(2, 3)
    z[0] = 5
    assert z.tolist() == [[5.0] * 3] * 2
    with pytest.raises(RuntimeError, match="refers to a single memory location"):
        z.add_(1)
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    w = lib.tensor([7.0, 8.0, 9.0], requires_grad=True)
    y = x * 2
    z = y.expand(2, 3)
    z[1] = w * 3  # overwrites all of y's memory: x gets no gradient, w all of it
    assert y.tolist() == [21.0, 24.0, 27.0]
    (z * lib.tensor([[1.0], [2.0]])).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0] and w.grad.tolist() == [9.0, 9.0, 9.0]
