"""Indexing: ``x[idx]`` with every index form, the index-based ops (gather, scatter,
index_select, index_add, index_fill, masked_fill, masked_select, take, index_put, nonzero,
where(cond)) and their in-place variants, checked against PyTorch and numerically.

A case is a name, ``fn(m, *inputs)`` written once against torch's API (``m`` is gpugrad or
torch; index tensors are made with ``T(x, data)`` in the library and on the device of ``x``)
and its inputs: shapes of random float64 tensors (or a 0-d ``()``). Each case

- runs against PyTorch when installed: values, shape, dtype, requires_grad of the output, and
  the gradients of ``sum(out * w)`` (random ``w``) w.r.t. every input;
- runs through gradcheck and gradgradcheck in float64 (no torch needed).

Then: a randomized comparison of many mixed index forms with torch (values, shapes, errors,
gradients), repeated-index accumulation, views vs copies, the in-place variants, torch's error
messages, ``normalize_index`` / ``_put`` (the pieces ``x[idx] = v`` is built on), and the
manual Jacobian loop of seed 000.
"""
from __future__ import annotations

import random
import warnings
import zlib

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import gradcheck, gradgradcheck
from gpugrad.ops.indexing import _put, normalize_index
from helpers import assert_close, to_numpy, torch_or_skip


def T(x, data, dtype=None):
    """An index tensor in the library and on the device of ``x``."""
    mod = gpugrad if isinstance(x, gpugrad.Tensor) else torch_or_skip()
    t = mod.tensor(data, device=x.device)
    return t if dtype is None else t.to(getattr(mod, dtype))


def lib_of(x):
    return gpugrad if isinstance(x, gpugrad.Tensor) else torch_or_skip()


class Case:
    """``torch_grad``: compare gradients with torch (False where torch has none, or fails);
    ``gc`` / ``ggc``: run gradcheck / gradgradcheck; ``grad=None``: no gradient at all."""

    def __init__(self, name, fn, *shapes, grad=True, torch_grad=True, gc=True, ggc=True):
        self.name, self.fn, self.shapes = name, fn, shapes
        self.grad, self.torch_grad = grad, torch_grad and grad is not None
        self.gc = gc and grad is not None
        self.ggc = ggc and self.gc

    def arrays(self):
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        return [rng.uniform(-2, 2, s) for s in self.shapes]

    def tensors(self, device):
        return [gpugrad.tensor(a, dtype=gpugrad.float64, device=device, requires_grad=True)
                for a in self.arrays()]


def values_only(name, fn, *shapes):
    return Case(name, fn, *shapes, grad=None)


X = (4, 3)
X3 = (3, 4, 2)
X4 = (2, 3, 2, 3)

GETITEM = [
    # basic indexing: views
    Case("int", lambda m, x: x[1], X3),
    Case("neg_int", lambda m, x: x[-1, -2], X3),
    Case("slice_step", lambda m, x: x[::2, 1::2], X3),
    Case("neg_slice", lambda m, x: x[-2:, :-1], X3),
    Case("none_ellipsis", lambda m, x: x[None, ..., None, 1], X3),
    Case("zero_d_int_tensor", lambda m, x: x[T(x, 1)], X3),
    Case("empty_tuple", lambda m, x: x[()], X3),
    Case("two_ellipses", lambda m, x: x[..., 0, ...], X3),
    # integer lists, tensors, arrays
    Case("list", lambda m, x: x[[0, 2]], X3),
    Case("list_neg_repeated", lambda m, x: x[[0, -1, 0, 0]], X3),
    Case("tensor_1d", lambda m, x: x[T(x, [2, 0, 2])], X3),
    Case("tensor_2d", lambda m, x: x[T(x, [[0, 1], [2, 2]])], X3),
    Case("tensor_int32", lambda m, x: x[T(x, [1, 0], "int32")], X3),
    Case("numpy_int", lambda m, x: x[np.array([[1], [0]])], X3),
    Case("numpy_int16", lambda m, x: x[np.array([2, 1], dtype=np.int16)], X3),
    Case("numpy_int_0d", lambda m, x: x[:, np.array(2)], X3),
    # torch truncates the floats of NumPy arrays and lists used as indices
    Case("numpy_float", lambda m, x: x[np.array([1.7, -0.5, -1.5])], X3),
    Case("list_float_and_bool", lambda m, x: x[:, [True, 2.5]], X3),
    Case("empty_list", lambda m, x: x[[]], X3),
    Case("list_at_dim1", lambda m, x: x[:, [3, 0, 3]], X3),
    Case("tensor_at_last", lambda m, x: x[..., T(x, [1, 1, 0])], X3),
    Case("slice_and_list", lambda m, x: x[1:, [0, 2], 1:], X3),
    # several advanced indices broadcast together
    Case("two_lists", lambda m, x: x[[0, 2, 2], [1, 3, 1]], X3),
    Case("broadcast_2d", lambda m, x: x[T(x, [[0], [2]]), T(x, [1, 3, 3])], X3),
    Case("adjacent_in_middle", lambda m, x: x[:, [0, 2], [1, 0]], X4),
    Case("separated_go_first", lambda m, x: x[[0, 1], :, [1, 0]], X4),
    Case("separated_by_none", lambda m, x: x[[1, 0], None, [1, 0]], X4),
    Case("int_then_list", lambda m, x: x[1, :, [0, 1, 0]], X4),
    # ints are selects in torch (NumPy would move the advanced dims to the front)
    Case("select_and_list_apart", lambda m, x: x[:, [0, 2], :, 1], X4),
    Case("int_slice_list", lambda m, x: x[-1, :, [1, 0]], X4),
    Case("int_slice_list_slice_int", lambda m, x: x[:, 1, :, [2, 0, 2]], X4),
    Case("int_none_list", lambda m, x: x[1, None, [0, 2]], X4),
    Case("int_bool", lambda m, x: x[0, :, True], X4),
    Case("int_list_int", lambda m, x: x[1, [0, 2], 0, [1, 2]], X4),
    # boolean masks
    Case("mask_dim0", lambda m, x: x[T(x, [True, False, True])], X3),
    Case("mask_full", lambda m, x: x[x > 0], X3),
    Case("mask_2d_leading", lambda m, x: x[x[..., 0] > 0], X3),
    Case("mask_dim1", lambda m, x: x[:, T(x, [True, False, False, True])], X3),
    Case("mask_list", lambda m, x: x[[False, True, True]], X3),
    Case("mask_numpy", lambda m, x: x[:, np.array([True, True, False, True])], X3),
    Case("mask_and_list", lambda m, x: x[T(x, [True, False, True]), [3, 3]], X3),
    Case("mask_empty_selection", lambda m, x: x[T(x, [False, False, False])], X3),
    Case("bool_true", lambda m, x: x[True], X3),
    Case("bool_false", lambda m, x: x[False], X3),
    Case("bool_with_list", lambda m, x: x[:, True, [0, 2]], X3),
    Case("zero_d_mask", lambda m, x: x[T(x, True)], X3),
    # 0-d tensors
    Case("zero_d_none", lambda m, x: x[None], ()),
    Case("zero_d_ellipsis", lambda m, x: x[...], ()),
    Case("zero_d_true", lambda m, x: x[True], ()),
    # torch's legacy rule: a short list holding sequences is a tuple of indices
    Case("list_as_tuple", lambda m, x: x[[[0, 2], [1, 3]]], X3),
    # indexing twice, and a view of an advanced result
    Case("twice", lambda m, x: x[[2, 0]][:, [1, 1]] * x[0, 0], X3),
]

OPS = [
    Case("gather_dim0", lambda m, x: m.gather(x, 0, T(x, [[0, 3, 1], [3, 3, 0]])), X),
    Case("gather_dim1_method", lambda m, x: x.gather(1, T(x, [[2, 2], [0, 1], [1, 0], [0, 0]])),
         X),
    Case("gather_neg_dim_kw", lambda m, x: x.gather(dim=-1, index=T(x, [[0], [1], [2], [2]])), X),
    Case("gather_int32", lambda m, x: m.gather(x, 0, T(x, [[1, 0, 3]], "int32")), X),
    Case("gather_3d", lambda m, x: m.gather(x, 1, T(x, np.array([[[1, 0], [3, 3]]] * 2))), X3),
    Case("gather_0d", lambda m, x: m.gather(x, 0, T(x, 0)), ()),
    Case("scatter_src", lambda m, x, s: m.scatter(x, 0, T(x, [[0, 3, 1], [2, 1, 0]]), s), X,
         (2, 3)),
    Case("scatter_method_dim1", lambda m, x, s: x.scatter(1, T(x, [[2], [0], [1], [0]]), s),
         X, (4, 1)),
    Case("scatter_value", lambda m, x: m.scatter(x, 0, T(x, [[0, 3, 1]]), 2.5), X),
    Case("scatter_value_kw", lambda m, x: x.scatter(dim=1, index=T(x, [[2, 0]]), value=-1.0),
         X),
    # src larger than index: gpugrad pads the gradient with zeros (torch's backward fails)
    Case("scatter_big_src", lambda m, x, s: x.scatter(0, T(x, [[1, 0, 2]]), s), X, (2, 4),
         torch_grad=False),
    Case("scatter_add", lambda m, x, s: m.scatter_add(x, 0, T(x, [[0, 0, 1], [0, 3, 1]]), s),
         X, (2, 3)),
    Case("scatter_add_method", lambda m, x, s: x.scatter_add(1, T(x, [[1, 1, 1]] * 4), s), X,
         (4, 3)),
    Case("index_select", lambda m, x: m.index_select(x, 1, T(x, [2, 0, 2, 2])), X),
    Case("index_select_method", lambda m, x: x.index_select(0, T(x, [2, 1])), X3),
    Case("index_select_0d_index", lambda m, x: x.index_select(-1, T(x, 1)), X3),
    Case("index_add", lambda m, x, s: m.index_add(x, 0, T(x, [1, 3, 1]), s), X, (3, 3)),
    Case("index_add_alpha", lambda m, x, s: x.index_add(1, T(x, [2, 2]), s, alpha=-1.5), X,
         (4, 2)),
    Case("index_copy", lambda m, x, s: m.index_copy(x, 0, T(x, [3, 0, 1]), s), X, (3, 3)),
    Case("index_copy_method", lambda m, x, s: x.index_copy(1, T(x, [2]), s), X, (4, 1)),
    Case("masked_scatter", lambda m, x, s: m.masked_scatter(x, x > 0, s), X, (20,)),
    Case("masked_scatter_bcast", lambda m, x, s: x.masked_scatter(T(x, [True, False, True]), s),
         X, (3, 3)),
    Case("index_fill", lambda m, x: m.index_fill(x, 1, T(x, [2, 0]), -1.0), X),
    Case("index_fill_repeated_neg", lambda m, x: x.index_fill(0, T(x, [-1, 3, 0]), 0.5), X),
    Case("index_fill_tensor_value", lambda m, x, v: x.index_fill(0, T(x, [1, 1]), v), X, ()),
    Case("masked_fill", lambda m, x: m.masked_fill(x, x > 0.5, 0.0), X),
    Case("masked_fill_bcast_mask", lambda m, x: x.masked_fill(T(x, [True, False, True]), 3.0),
         X),
    Case("masked_fill_bcast_up", lambda m, x: x.masked_fill(T(x, [[True], [False]]), 3.0),
         (3,)),
    Case("masked_fill_tensor_value", lambda m, x, v: m.masked_fill(x, x < 0, v), X, ()),
    Case("masked_select", lambda m, x: m.masked_select(x, x > 0), X),
    Case("masked_select_bcast", lambda m, x: x.masked_select(T(x, [True, False, True])), X),
    Case("masked_select_bcast_both", lambda m, x: m.masked_select(x, T(x, [[True], [False]])),
         (3,)),
    Case("take", lambda m, x: m.take(x, T(x, [[0, 11], [-1, 5]])), X),
    Case("take_repeated", lambda m, x: x.take(T(x, [3, 3, 3, 0])), X3),
    Case("index_put", lambda m, x, v: m.index_put(x, (T(x, [0, 2]), T(x, [1, 1])), v), X, (2,)),
    Case("index_put_accumulate", lambda m, x, v: x.index_put((T(x, [0, 0, 3]),), v,
                                                             accumulate=True), X, (3, 3)),
    Case("index_put_bcast_value", lambda m, x, v: m.index_put(x, [T(x, [1, 3])], v), X, (3,)),
    Case("index_put_mask", lambda m, x, v: x.index_put((x > 0,), v), X, ()),
    # in-place variants, on a clone (a non-leaf)
    Case("scatter_", lambda m, x, s: x.clone().scatter_(1, T(x, [[0, 2]] * 4), s), X, (4, 2)),
    Case("scatter_value_", lambda m, x: x.clone().scatter_(0, T(x, [[3, 0, 1]]), 7.0), X),
    Case("scatter_add_", lambda m, x, s: x.clone().scatter_add_(0, T(x, [[3, 3, 3]]), s), X,
         (1, 3)),
    Case("index_add_", lambda m, x, s: x.clone().index_add_(1, T(x, [0, 0]), s, alpha=2), X,
         (4, 2)),
    Case("index_fill_", lambda m, x: x.clone().index_fill_(1, T(x, [1]), 9.0), X),
    Case("index_copy_", lambda m, x, s: x.clone().index_copy_(1, T(x, [0, 2]), s), X, (4, 2)),
    Case("masked_scatter_", lambda m, x, s: x.clone().masked_scatter_(x < 0, s), X, (12,)),
    Case("masked_fill_", lambda m, x: x.clone().masked_fill_(x > 0, -2.0), X),
    Case("masked_fill_tensor_", lambda m, x, v: x.clone().masked_fill_(x > 0, v), X, ()),
    Case("index_put_", lambda m, x, v: x.clone().index_put_((T(x, [3, 1]),), v), X, (2, 3)),
    Case("index_put_acc_", lambda m, x, v: x.clone().index_put_((T(x, [1, 1]), T(x, [0, 0])),
                                                                v, accumulate=True), X, (2,)),
    Case("inplace_chain", lambda m, x: (x * 2).masked_fill_(x > 1, 0.0).index_fill_(
        0, T(x, [0]), 1.0).exp(), X),
    # no gradient
    values_only("nonzero", lambda m, x: m.nonzero(x > 0), X3),
    values_only("nonzero_method", lambda m, x: (x > 0).nonzero(), X),
    values_only("nonzero_0d", lambda m, x: m.nonzero(x > -5), ()),
    values_only("nonzero_as_tuple", lambda m, x: m.nonzero(x > 0, as_tuple=True), X3),
    values_only("nonzero_as_tuple_0d", lambda m, x: (x > 5).nonzero(as_tuple=True), ()),
    values_only("argwhere", lambda m, x: m.argwhere(x < 0), X),
    values_only("argwhere_method", lambda m, x: (x < 0).argwhere(), X3),
    values_only("where_condition", lambda m, x: m.where(x > 0), X3),
    values_only("where_float_condition", lambda m, x: m.where(x.clamp(min=0)), X),
]

CASES = GETITEM + OPS


def _params(cases):
    return [pytest.param(c, id=c.name) for c in cases]


def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]


@pytest.mark.parametrize("case", _params(CASES))
def test_matches_torch(case, device):
    """Values, shape, dtype and requires_grad of the outputs; the gradients of sum(out * w)."""
    torch = torch_or_skip()
    xs = case.tensors(device)
    ts = [torch.tensor(a, requires_grad=True) for a in case.arrays()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy list rule / uint8 masks warn in both
        outs, touts = _outputs(case.fn(gpugrad, *xs)), _outputs(case.fn(torch, *ts))
    assert len(outs) == len(touts)
    for k, (o, t) in enumerate(zip(outs, touts)):
        msg = f"{case.name}: output {k}"
        assert o.dtype.name == str(t.dtype).removeprefix("torch."), msg
        assert o.requires_grad == t.requires_grad, msg
        assert tuple(o.shape) == tuple(t.shape), msg
        assert_close(o, t, rtol=1e-12, atol=1e-12, msg=msg)
    if not case.torch_grad:
        return
    rng = np.random.default_rng(1)
    ws = [rng.uniform(-1, 1, tuple(o.shape)) for o in outs]
    loss = sum((o * gpugrad.tensor(w, device=device)).sum() for o, w in zip(outs, ws))
    tloss = sum((t * torch.tensor(w)).sum() for t, w in zip(touts, ws))
    grads = gpugrad.autograd.grad(loss, xs, allow_unused=True)
    tgrads = torch.autograd.grad(tloss, ts, allow_unused=True)
    for k, (g, tg, x) in enumerate(zip(grads, tgrads, xs)):
        g = np.zeros(x.shape) if g is None else to_numpy(g)
        tg = np.zeros(x.shape) if tg is None else to_numpy(tg)
        assert_close(g, tg, rtol=1e-12, atol=1e-12, msg=f"{case.name}: gradient of input {k}")


@pytest.mark.parametrize("case", _params([c for c in CASES if c.gc]))
def test_gradcheck(case, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradcheck(lambda *a: case.fn(gpugrad, *a), case.tensors(device))


@pytest.mark.parametrize("case", _params([c for c in CASES if c.ggc]))
def test_gradgradcheck(case, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert gradgradcheck(lambda *a: case.fn(gpugrad, *a), case.tensors(device))


@pytest.mark.parametrize("case", _params([c for c in CASES if c.grad is None]))
def test_index_results_have_no_gradient(case, device):
    for out in _outputs(case.fn(gpugrad, *case.tensors(device))):
        assert not out.requires_grad and out.grad_fn is None and out.dtype is gpugrad.int64


# ---- many random index forms against torch --------------------------------------------------
SHAPE = (5, 3, 4, 6)


def _random_index(rng: random.Random):
    """A random mix of ints, slices, None, Ellipsis, bools, lists, index tensors and masks
    (as (kind, data) for the tensors), sometimes out of bounds or mismatched."""
    items, d = [], 0
    for _ in range(rng.randrange(1, 5)):
        if d >= len(SHAPE):
            break
        n = SHAPE[d]
        c = rng.randrange(8)
        if c == 0:
            items.append(rng.randrange(-n - 1, n + 1))
        elif c == 1:
            items.append(slice(rng.choice([None, 0, 1, -2]), rng.choice([None, -1, n]),
                               rng.choice([None, 1, 2])))
        elif c == 2:
            items.append(None)
            continue
        elif c == 3:
            items.append([rng.randrange(-n, n) for _ in range(rng.randrange(1, 3))])
        elif c == 4:
            items.append(("int", [[rng.randrange(-n, n + 1)] for _ in range(2)]))
        elif c == 5:
            items.append(("mask", [rng.random() < .5 for _ in range(rng.choice([n, n, n - 1]))]))
        elif c == 6:
            items.append(rng.random() < .7)
            continue
        else:
            items.append(("int", [rng.randrange(n) for _ in range(2)]))
        d += 1
    if rng.random() < 0.3:
        items.insert(rng.randrange(len(items) + 1), Ellipsis)
    return items


def _build(x, items):
    return tuple(T(x, i[1]) if isinstance(i, tuple) else i for i in items)


def test_random_index_forms_match_torch(device):
    """Values, shapes and gradients of x[idx], and errors (type and message), for 400 random
    mixed indices."""
    torch = torch_or_skip()
    rng = random.Random(3)
    data = np.random.default_rng(0).uniform(-1, 1, SHAPE)
    problems = []
    for _ in range(400):
        items = _random_index(rng)
        x = gpugrad.tensor(data, device=device, requires_grad=True)
        t = torch.tensor(data, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                expected, terr = t[_build(t, items)], None
            except (IndexError, ValueError, RuntimeError) as e:
                expected, terr = None, e
            try:
                got, err = x[_build(x, items)], None
            except (IndexError, ValueError, RuntimeError) as e:
                got, err = None, e
        if terr is not None or err is not None:
            if type(terr) is not type(err) or str(terr) != str(err):
                problems.append(f"{items}: torch {terr!r}, gpugrad {err!r}")
            continue
        if tuple(got.shape) != tuple(expected.shape) or not np.array_equal(to_numpy(got),
                                                                           to_numpy(expected)):
            problems.append(f"{items}: {list(got.shape)} vs torch {list(expected.shape)}")
            continue
        w = np.random.default_rng(1).uniform(-1, 1, tuple(got.shape))
        (got * gpugrad.tensor(w, device=device)).sum().backward()
        (expected * torch.tensor(w)).sum().backward()
        if not np.allclose(to_numpy(x.grad), to_numpy(t.grad), rtol=1e-12, atol=1e-12):
            problems.append(f"{items}: gradient differs")
    assert not problems, "\n".join(problems[:20])


def test_random_writes_match_torch_setitem(device):
    """``_put(x, idx, v)`` (what ``x[idx] = v`` runs for advanced indices) against torch's
    ``x[idx] = v``: values and both gradients."""
    torch = torch_or_skip()
    rng = random.Random(5)
    data = np.random.default_rng(0).uniform(-1, 1, SHAPE)
    checked, problems = 0, []
    while checked < 150:
        items = _random_index(rng)
        t = torch.tensor(data, requires_grad=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                shape = t[_build(t, items)].shape
            except (IndexError, ValueError):
                continue
            vshape = tuple(shape)[rng.randrange(len(shape) + 1):]  # broadcast values too
            v = np.random.default_rng(checked).uniform(-1, 1, vshape)
            tv = torch.tensor(v, requires_grad=True)
            ty = t.clone()
            ty[_build(t, items)] = tv
            x = gpugrad.tensor(data, device=device, requires_grad=True)
            gv = gpugrad.tensor(v, device=device, requires_grad=True)
            y = _put(x, _build(x, items), gv)
        checked += 1
        w = np.random.default_rng(1).uniform(-1, 1, SHAPE)
        (ty * torch.tensor(w)).sum().backward()
        (y * gpugrad.tensor(w, device=device)).sum().backward()
        for name, a, b in (("values", y, ty), ("input grad", x.grad, t.grad),
                           ("values grad", gv.grad, tv.grad)):
            if not np.allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-12):
                problems.append(f"{items}: {name} differ")
    assert not problems, "\n".join(problems[:20])


# ---- accumulation, views and copies -------------------------------------------------------------
def test_repeated_indices_accumulate_their_gradients(device):
    x = gpugrad.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    x[[0, 0, 2, 0]].sum().backward()
    assert x.grad.tolist() == [3.0, 0.0, 1.0]
    x.grad = None
    idx = gpugrad.tensor([[1, 1], [1, 0]], device=device)
    (x[idx] * gpugrad.tensor([[1.0, 2.0], [3.0, 4.0]], device=device)).sum().backward()
    assert x.grad.tolist() == [4.0, 6.0, 0.0]
    x.grad = None
    gpugrad.take(x, gpugrad.tensor([2, -1], device=device)).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 2.0]
    x.grad = None
    x.index_select(0, gpugrad.tensor([1, 1, 1], device=device)).sum().backward()
    assert x.grad.tolist() == [0.0, 3.0, 0.0]
    x.grad = None
    x.gather(0, gpugrad.tensor([0, 0], device=device)).sum().backward()
    assert x.grad.tolist() == [2.0, 0.0, 0.0]
    # the values of an accumulating index_put add up where indices repeat
    z = gpugrad.zeros(3, device=device).index_put(
        (gpugrad.tensor([1, 1, 1], device=device),), gpugrad.tensor([1.0, 2.0, 3.0],
                                                                    device=device),
        accumulate=True)
    assert z.tolist() == [0.0, 6.0, 0.0]


def test_second_derivative_through_repeated_indices(device):
    x = gpugrad.tensor([1.0, 2.0, 3.0], dtype=gpugrad.float64, device=device,
                       requires_grad=True)
    y = (x[[0, 0, 1]] ** 3).sum()
    g, = gpugrad.autograd.grad(y, x, create_graph=True)
    assert g.tolist() == [6.0, 12.0, 0.0]
    h, = gpugrad.autograd.grad(g.sum(), x)
    assert h.tolist() == [12.0, 12.0, 0.0]


def test_basic_indexing_is_a_view_advanced_a_copy(device):
    x = gpugrad.tensor(np.arange(12.0).reshape(3, 4), device=device)
    v = x[1:, ::2]
    assert v._base is x and v._version is x._version
    for c in (x[[1, 2]], x[x > 5], x[:, [0, 0]], x[1, [2]], x[True]):
        assert c._base is None and c._version is not x._version
    x[[1]].fill_(-1.0)
    assert x[1].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_advanced_index_of_a_non_contiguous_view(device):
    torch = torch_or_skip()
    data = np.arange(24.0).reshape(4, 6)
    res = {}
    for m, dev in ((gpugrad, device), (torch, "cpu")):
        x = m.tensor(data, device=dev, requires_grad=True)
        y = x.t()[1::2][[2, 0, 2], 1:]
        (y * y).sum().backward()
        res[m.__name__] = (y, x.grad)
    assert_close(res["gpugrad"][0], res["torch"][0])
    assert_close(res["gpugrad"][1], res["torch"][1])


def test_index_tensor_device_and_type_errors(device):
    x = gpugrad.ones(3, 2, device=device)
    with pytest.raises(IndexError, match="tensors used as indices must be long, int, byte or "
                                         "bool tensors"):
        x[gpugrad.tensor([0.0], device=device)]
    with pytest.raises(IndexError, match=r"valid indices \(got float\)"):
        x[1.0]
    with pytest.raises(TypeError, match=r"valid indices \(got str\)"):
        x["a"]


@pytest.mark.gpu
def test_cpu_indices_index_cuda_tensors_and_cuda_indices_need_the_same_device():
    x = gpugrad.arange(6.0, device="cuda").reshape(3, 2)
    assert x[gpugrad.tensor([2, 0])].tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert x[gpugrad.tensor([True, False, True])].tolist() == [[0.0, 1.0], [4.0, 5.0]]
    c = gpugrad.arange(6.0).reshape(3, 2)
    with pytest.raises(IndexError, match=r"indices should be either on cpu or on the same "
                                         r"device as the indexed tensor \(cpu\)"):
        c[gpugrad.tensor([0], device="cuda")]
    with pytest.raises(RuntimeError, match="same device"):
        gpugrad.gather(c, 0, gpugrad.tensor([[0]], device="cuda"))


# ---- in-place variants ------------------------------------------------------------------------
INPLACE = [
    ("scatter_", lambda x: x.scatter_(0, T(x, [[1]]), 5.0)),
    ("scatter_add_", lambda x: x.scatter_add_(0, T(x, [[1]]), x.new_ones(1, 1))),
    ("index_add_", lambda x: x.index_add_(0, T(x, [1]), x.new_ones(1, 2))),
    ("index_fill_", lambda x: x.index_fill_(0, T(x, [1]), 5.0)),
    ("masked_fill_", lambda x: x.masked_fill_(T(x, [True, False]), 5.0)),
    ("index_put_", lambda x: x.index_put_((T(x, [1]),), x.new_ones(2))),
]


@pytest.mark.parametrize("name, fn", INPLACE, ids=[n for n, _ in INPLACE])
def test_inplace_variants_write_in_place_and_bump_the_version(name, fn, device):
    x = gpugrad.zeros(3, 2, device=device)
    v = x[1]  # a view sees the write
    version = x._version.value
    assert fn(x) is x
    assert x._version.value > version and v.tolist() != [0.0, 0.0]
    leaf = gpugrad.zeros(3, 2, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match=f"{name}: a leaf Variable that requires grad"):
        fn(leaf)
    with gpugrad.no_grad():
        fn(leaf)
    assert leaf.requires_grad and leaf.grad_fn is None


def test_inplace_write_into_a_view_reaches_the_base(device):
    torch = torch_or_skip()
    data = np.random.default_rng(0).uniform(-1, 1, (3, 4))
    res = {}
    for m, dev in ((gpugrad, device), (torch, "cpu")):
        x = m.tensor(data, device=dev, requires_grad=True)
        b = x * 1
        b[1].masked_fill_(b[1] > 0, 0.0)
        b[:, 0].index_add_(0, T(b, [2, 2]), x[0, :2] ** 2)
        b[2:].scatter_(1, T(b, [[3, 1]]), x[1:2, 2:] * 3)
        (b * b).sum().backward()
        res[m.__name__] = (b, x.grad)
    assert_close(res["gpugrad"][0], res["torch"][0])
    assert_close(res["gpugrad"][1], res["torch"][1])


def test_masked_fill_inplace_cannot_broadcast_self(device):
    x = gpugrad.zeros(3, device=device)
    with pytest.raises(RuntimeError, match=r"masked_fill_.*\[3\].*\[2, 3\]"):
        x.masked_fill_(gpugrad.tensor([[True, False, True]] * 2, device=device), 1.0)


# ---- errors: torch's types and messages -------------------------------------------------------
def _x(m):
    return m.arange(24.0).reshape(2, 3, 4)


ERRORS = [
    ("int_out_of_bounds", lambda m, x: x[5]),
    ("int_out_of_bounds_dim2", lambda m, x: x[0, 1, -5]),
    ("int_after_none", lambda m, x: x[None, :, 3]),
    ("list_out_of_bounds", lambda m, x: x[[0, 5]]),
    ("tensor_out_of_bounds_dim1", lambda m, x: x[:, T(x, [1, 3])]),
    ("second_tensor_out_of_bounds", lambda m, x: x[[0], :, [-5]]),
    ("float_tensor_index", lambda m, x: x[T(x, [0.0, 1.0])]),
    ("int16_tensor_index", lambda m, x: x[T(x, [0], "int16")]),
    ("float_index", lambda m, x: x[0, 1.5]),
    ("numpy_bool_scalar", lambda m, x: x[np.bool_(True)]),
    ("mask_shape", lambda m, x: x[T(x, [True, False, True])]),
    ("mask_shape_2d", lambda m, x: x[T(x, [[True, False]] * 2)]),
    ("mask_shape_after_slice", lambda m, x: x[1:, T(x, [True, False])]),
    ("mask_too_many_dims", lambda m, x: x[m.zeros(2, 3, 4, 1, dtype=m.bool)]),
    ("broadcast_mismatch", lambda m, x: x[[0, 1], [0, 1, 2]]),
    ("too_many_indices", lambda m, x: x[0, 0, 0, 0]),
    ("too_many_with_list", lambda m, x: x[:, :, :, [0]]),
    ("zero_dim_int", lambda m, x: m.tensor(3.0)[0]),
    ("zero_step", lambda m, x: x[::0]),
    ("negative_step", lambda m, x: x[::-1]),
    ("gather_float_index", lambda m, x: m.gather(x, 0, T(x, [[[0.0]]]))),
    ("gather_ndim", lambda m, x: m.gather(x, 0, T(x, [0, 1]))),
    ("gather_size", lambda m, x: m.gather(x, 0, m.zeros(1, 4, 4, dtype=m.long))),
    ("gather_out_of_bounds", lambda m, x: x.gather(1, T(x, [[[3]]]))),
    ("gather_negative", lambda m, x: x.gather(2, T(x, [[[-1]]]))),
    ("gather_dim", lambda m, x: x.gather(3, T(x, [[[0]]]))),
    ("scatter_src_dtype", lambda m, x: x.scatter(0, T(x, [[[0]]]), x.double())),
    ("scatter_index_vs_src", lambda m, x: x.scatter(0, T(x, [[[0, 1]]]), x[:1, :1, :1])),
    ("scatter_out_of_bounds", lambda m, x: x.scatter(0, T(x, [[[2]]]), 1.0)),
    ("scatter_float_index", lambda m, x: x.scatter_add(0, T(x, [[[0.0]]]), x)),
    ("scatter_add_number", lambda m, x: m.scatter_add(x, 0, T(x, [[[0]]]), 1.0)),
    ("scatter_index_ndim", lambda m, x: x.scatter(0, T(x, [0]), 1.0)),
    ("index_select_matrix", lambda m, x: x.index_select(0, T(x, [[0]]))),
    ("index_select_float", lambda m, x: x.index_select(0, T(x, [0.0]))),
    ("index_add_count", lambda m, x: x.index_add(1, T(x, [0]), m.ones(2, 2, 4))),
    ("index_add_shape", lambda m, x: x.index_add(1, T(x, [0]), m.ones(2, 1, 3))),
    ("index_add_dtype", lambda m, x: x.index_add(1, T(x, [0]), m.ones(2, 1, 4).double())),
    ("index_add_float_index", lambda m, x: x.index_add(1, T(x, [0.0]), m.ones(2, 1, 4))),
    ("index_add_out_of_bounds", lambda m, x: x.index_add(0, T(x, [2]), m.ones(1, 3, 4))),
    ("index_copy_count", lambda m, x: x.index_copy(1, T(x, [0, 1]), m.ones(2, 1, 4))),
    ("index_copy_dtype", lambda m, x: x.index_copy(1, T(x, [0]), m.ones(2, 1, 4).double())),
    ("index_copy_out_of_bounds", lambda m, x: x.index_copy(0, T(x, [2]), m.ones(1, 3, 4))),
    ("masked_scatter_float_mask", lambda m, x: x.masked_scatter((x > 2).double(), x)),
    ("masked_scatter_dtype", lambda m, x: x.masked_scatter(x > 2, x.double())),
    ("masked_scatter_short_source", lambda m, x: x.masked_scatter(x > -1, m.ones(3))),
    ("index_fill_int32", lambda m, x: x.index_fill(1, T(x, [0], "int32"), 1.0)),
    ("index_fill_matrix", lambda m, x: x.index_fill(1, T(x, [[0]]), 1.0)),
    ("index_fill_vector_value", lambda m, x: x.index_fill(1, T(x, [0]), m.ones(1))),
    ("masked_fill_float_mask", lambda m, x: x.masked_fill((x > 2).double(), 0.0)),
    ("masked_fill_vector_value", lambda m, x: x.masked_fill(x > 2, m.ones(1))),
    ("masked_select_float_mask", lambda m, x: x.masked_select((x > 2).float())),
    ("take_out_of_bounds", lambda m, x: x.take(T(x, [24]))),
    ("take_negative", lambda m, x: m.take(x, T(x, [0, -25]))),
    ("take_int32", lambda m, x: x.take(T(x, [0], "int32"))),
    ("index_put_dtype", lambda m, x: x.index_put((T(x, [0]),), m.ones(1, dtype=m.float64))),
    ("index_put_value_shape", lambda m, x: x.index_put((T(x, [0, 1]),), m.ones(3, 3, 4))),
    ("index_put_too_many", lambda m, x: x.index_put((T(x, [0]),) * 4, m.ones(1))),
    ("index_put_not_tuple", lambda m, x: m.index_put(x, T(x, [0]), m.ones(1))),
    ("index_put_number", lambda m, x: m.index_put(x, (T(x, [0]),), 1.0)),
]


@pytest.mark.parametrize("name, fn", ERRORS, ids=[n for n, _ in ERRORS])
def test_errors_match_torch(name, fn, device):
    """The same exception type as torch, with torch's message (gpugrad may add the op name)."""
    torch = torch_or_skip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            fn(torch, _x(torch))
        x = gpugrad.arange(24.0, device=device).reshape(2, 3, 4)
        with pytest.raises(type(expected.value)) as got:
            fn(gpugrad, x)
    assert type(got.value) is type(expected.value)
    if isinstance(expected.value, TypeError):
        return  # torch's argument-parser wording; the type is what matters
    assert str(expected.value) in str(got.value), f"torch: {expected.value}\ngpugrad: {got.value}"


def test_errors_leave_the_tensor_unchanged(device):
    x = gpugrad.arange(6.0, device=device).reshape(2, 3)
    before = x.tolist()
    for bad in (lambda: x.index_put_((gpugrad.tensor([0, 5], device=device),), x.new_ones(1)),
                lambda: x.scatter_(1, gpugrad.tensor([[0, 3]], device=device), 1.0),
                lambda: x.index_add_(0, gpugrad.tensor([2], device=device), x.new_ones(1, 3))):
        with pytest.raises((IndexError, RuntimeError)):
            bad()
    assert x.tolist() == before and x._version.value == 0


def test_legacy_forms_warn_like_torch(device):
    x = gpugrad.arange(6.0, device=device).reshape(2, 3)
    with pytest.warns(UserWarning, match="non-tuple sequence"):
        assert x[[[0, 1], [2, 0]]].tolist() == [2.0, 3.0]
    with pytest.warns(UserWarning, match="uint8"):
        assert x[gpugrad.tensor([1, 0], dtype=gpugrad.uint8, device=device)].shape == (1, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x[[0] * 40].shape == (40, 3)  # 32 items and more: always an index tensor


# ---- the pieces of x[idx] = v ------------------------------------------------------------------
def test_normalize_index_gives_numpy_torchs_meaning():
    a = np.arange(5 * 3 * 4 * 6).reshape(5, 3, 4, 6)
    idx = normalize_index((slice(None), [0, 2], slice(None), 1), a.shape)
    assert isinstance(idx, tuple) and idx[-1] is Ellipsis
    assert a[idx].shape == (5, 2, 4)  # torch's; NumPy's own a[:, [0, 2], :, 1] is (2, 5, 4)
    mask = gpugrad.tensor([True, False, True])
    idx = normalize_index((0, mask), a.shape)
    assert all(isinstance(i, (int, slice, np.ndarray)) or i is Ellipsis for i in idx)
    assert a[idx].shape == (2, 4, 6)
    b = a.copy()
    b[normalize_index((slice(None), [0, 2], slice(None), 1), a.shape)] = -np.ones((5, 2, 4))
    assert (b[:, [0, 2], :, 1] == -1).all() and (b[:, 1] == a[:, 1]).all()
    assert normalize_index(2, (4,)) == (2, Ellipsis)
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 4"):
        normalize_index([4], (4,))


def test_put_general_indices_scalars_and_accumulate(device):
    x = gpugrad.zeros(3, 4, dtype=gpugrad.float64, device=device, requires_grad=True)
    v = gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, device=device, requires_grad=True)
    y = _put(x, (slice(None), [1, 3]), v)  # values broadcast over the rows
    assert y.tolist() == [[0.0, 1.0, 0.0, 2.0]] * 3
    y2 = _put(y, (x.detach() == 0) & (y.detach() == 0), 5)  # a mask and a number
    assert y2.tolist() == [[5.0, 1.0, 5.0, 2.0]] * 3
    y3 = _put(y2, ([0, 0],), v[:1].reshape(1, 1, 1), accumulate=True)  # leading 1s dropped
    assert y3[0].tolist() == [7.0, 3.0, 7.0, 4.0]
    y3.sum().backward()
    # v: 3 rows at cols 1 and 3 of y; v[0] also 2 rows x 4 cols through the accumulation
    assert x.grad.tolist() == [[0.0] * 4] * 3 and v.grad.tolist() == [3.0 + 8.0, 3.0]
    with pytest.raises(RuntimeError, match=r"shape mismatch: value tensor of shape \[3\] cannot "
                                           r"be broadcast to indexing result of shape \[3, 2\]"):
        _put(x, (slice(None), [1, 3]), v.new_ones(3))
    assert gradcheck(lambda a, b: _put(a, ([2, 0, 2], [1, 1, 1]), b, accumulate=True),
                     (x.detach().requires_grad_(), v[:1].detach().requires_grad_()))
    assert gradgradcheck(lambda a, b: _put(a * a, (slice(None), [0, 2]), b * b),
                         ((x.detach() + 1).requires_grad_(),
                          (v.detach() + 0.5).requires_grad_()))


def test_put_runs_in_place_through_apply_inplace(device):
    from gpugrad.ops.inplace import apply_inplace
    x = gpugrad.tensor([1.0, 2.0, 3.0], device=device, requires_grad=True)
    b = x * 2
    apply_inplace(b, "index_put_", _put, [True, False, True], x[1] ** 2, False)
    assert b.tolist() == [4.0, 4.0, 4.0] and b.grad_fn is not None
    b.sum().backward()
    assert x.grad.tolist() == [0.0, 2.0 + 2 * 2 * 2.0, 0.0]


# ---- seed 000: the manual Jacobian ------------------------------------------------------------
def test_manual_jacobian_row_by_row(device):
    torch = torch_or_skip()
    res = {}
    for m, dev in ((gpugrad, device), (torch, "cpu")):
        x = m.tensor([1.0, 2.0, 3.0], device=dev, requires_grad=True)
        y = x ** 2 * m.tensor([1.0, 2.0, 3.0], device=dev) + x.flip(0) * x[[1, 1, 0]]
        jac = m.zeros(3, 3, device=dev)
        for i in range(len(y)):
            x.grad = None
            y[i].backward(retain_graph=True)
            jac[i] = x.grad
        res[m.__name__] = jac
    assert_close(res["gpugrad"], res["torch"])
    assert res["gpugrad"].tolist()[0] == [2.0, 3.0, 2.0]  # y0 = x0**2 + x2 * x1


def test_top_level_functions_and_methods_exist():
    for name in ("gather", "scatter", "scatter_add", "index_select", "index_add", "index_fill",
                 "masked_fill", "masked_select", "take", "nonzero", "argwhere", "index_put",
                 "index_put_", "where"):
        assert callable(getattr(gpugrad, name)), name
    for name in ("gather", "scatter", "scatter_", "scatter_add", "scatter_add_", "index_select",
                 "index_add", "index_add_", "index_fill", "index_fill_", "masked_fill",
                 "masked_fill_", "masked_select", "take", "nonzero", "argwhere", "index_put",
                 "index_put_"):
        assert callable(getattr(gpugrad.Tensor, name)), name


# ---- grad_fn names of basic indexing (torch runs select / slice / unsqueeze in turn) ----------
NAMES = [
    (lambda m, x: x[0], "SelectBackward0"),
    (lambda m, x: x[-1, 1], "SelectBackward0"),
    (lambda m, x: x[..., 0], "SelectBackward0"),
    (lambda m, x: x[0, ...], "SelectBackward0"),
    (lambda m, x: x[None, 0], "SelectBackward0"),
    (lambda m, x: x[np.int64(1)], "SelectBackward0"),
    (lambda m, x: x[m.tensor(1)], "SelectBackward0"),
    (lambda m, x: x[-10:, 0], "SelectBackward0"),
    (lambda m, x: x[1:3], "SliceBackward0"),
    (lambda m, x: x[:], "SliceBackward0"),  # one slice alone is always sliced
    (lambda m, x: x[0:10], "SliceBackward0"),
    (lambda m, x: x[::2], "SliceBackward0"),
    (lambda m, x: x[:, -4:], "SliceBackward0"),  # a written start of -n is not skipped
    (lambda m, x: x[0, 1:], "SliceBackward0"),
    (lambda m, x: x[m.tensor(1), 1:], "SliceBackward0"),
    (lambda m, x: x[None], "UnsqueezeBackward0"),
    (lambda m, x: x[0, :, None], "UnsqueezeBackward0"),
    (lambda m, x: x[..., None], "UnsqueezeBackward0"),
    (lambda m, x: x[...], "AliasBackward0"),
    (lambda m, x: x[()], "AliasBackward0"),
    (lambda m, x: x[:, :], "AliasBackward0"),  # full slices inside a tuple are skipped
    (lambda m, x: x[:, 0:10], "AliasBackward0"),
    (lambda m, x: x[:, ::1, ...], "AliasBackward0"),
    (lambda m, x: x[[0, 1]], "IndexBackward0"),
    (lambda m, x: x[0, [0, 1]], "IndexBackward0"),
    (lambda m, x: x[x > 0], "IndexBackward0"),
    (lambda m, x: x[True], "IndexBackward0"),
    (lambda m, x: x[0, True], "IndexBackward0"),
]


@pytest.mark.parametrize("k", range(len(NAMES)))
def test_basic_index_grad_fn_names_match_torch(lib, k):
    fn, name = NAMES[k]
    x = lib.tensor(np.arange(60.0).reshape(3, 4, 5) - 30, requires_grad=True)
    assert type(fn(lib, x).grad_fn).__name__ == name


def test_basic_index_grad_fn_names_on_a_0d_tensor(lib):
    x = lib.tensor(1.0, requires_grad=True)
    names = [type(y.grad_fn).__name__ for y in (x[...], x[None], x[()])]
    assert names == ["AliasBackward0", "UnsqueezeBackward0", "AliasBackward0"]


# ---- x[idx] = v with every index form, against torch -----------------------------------------
SETITEM_INDICES = {
    "int": lambda m: 0, "neg_int": lambda m: -1, "slice": lambda m: slice(1, 3),
    "step": lambda m: slice(None, None, 2), "full_slice": lambda m: slice(None),
    "none": lambda m: None, "ellipsis": lambda m: Ellipsis, "empty_tuple": lambda m: (),
    "two_ints": lambda m: (0, 1), "ellipsis_int": lambda m: (Ellipsis, 0),
    "slice_step_dim1": lambda m: (slice(None), slice(1, None, 2)),
    "none_int": lambda m: (None, 0), "zero_d_tensor": lambda m: m.tensor(1),
    "numpy_int": lambda m: np.int64(2), "full_slices": lambda m: (slice(None), slice(0, 9)),
    "list": lambda m: [0, 2], "repeated_list": lambda m: [0, 0],
    "tensor": lambda m: m.tensor([2, 0]), "int32": lambda m: m.tensor([1, 2]).int(),
    "numpy": lambda m: np.array([2, 1]), "empty_list": lambda m: [],
    "int_list": lambda m: (0, [1, 3]), "list_int": lambda m: ([0, 1], 1),
    "separated_lists": lambda m: ([0, 1], slice(None), [1, 2]),
    "adjacent_lists": lambda m: (slice(None), [0, 2], [1, 1]),
    "int_slice_list": lambda m: (1, slice(None), [0, 4]),
    "slice_int_list": lambda m: (slice(None), 1, [0, 4]),
    "none_list": lambda m: (Ellipsis, None, [1]),
    "broadcast_lists": lambda m: ([[0], [2]], [1, 3]),
    "mask": lambda m: m.tensor([True, False, True]),
    "mask_2d": lambda m: m.tensor(np.arange(12).reshape(3, 4) % 3 == 0),
    "mask_dim1": lambda m: (slice(None), m.tensor([True, False, True, True])),
    "true": lambda m: True, "false": lambda m: False, "int_true": lambda m: (0, True),
    "zero_d_mask": lambda m: m.tensor(True), "zero_d_mask_false": lambda m: m.tensor(False),
}
SETITEM_VALUES = ("number", "int", "same_shape", "broadcast", "leading_one", "zero_d",
                  "float32", "zero_d_float32")


def _setitem_value(m, kind, shape, rng):
    if kind == "number":
        return 2.5
    if kind == "int":
        return 7
    shape = {"same_shape": shape, "broadcast": shape[-1:], "leading_one": (1,) + shape,
             "zero_d": (), "float32": shape, "zero_d_float32": ()}[kind]
    v = m.tensor(rng.uniform(-1, 1, shape), requires_grad=True)
    return v.float().detach().requires_grad_() if "float32" in kind else v


def _run_setitem(m, index, kind, on_view, device):
    rng = np.random.default_rng(1)
    x = m.tensor(np.random.default_rng(0).uniform(-1, 1, (3, 4, 5)), requires_grad=True,
                 device=device)
    y = x * 2
    target = y[1:] if on_view else y
    idx = index(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = target._version if m.__name__ == "torch" else target._version.value
        try:
            v = _setitem_value(m, kind, tuple(target[idx].shape), rng)
            target[idx] = v
        except (RuntimeError, IndexError, TypeError) as e:
            return type(e), str(e)
    after = target._version if m.__name__ == "torch" else target._version.value
    w = np.arange(60.0).reshape(3, 4, 5) % 7 - 3
    (y * m.tensor(w, device=device)).sum().backward()
    vgrad = v.grad if isinstance(v, m.Tensor) else None
    return (to_numpy(y), to_numpy(x.grad), None if vgrad is None else to_numpy(vgrad),
            after - before, type(y.grad_fn).__name__, str(y.dtype).split(".")[-1])


@pytest.mark.parametrize("form", sorted(SETITEM_INDICES))
def test_setitem_every_index_form_matches_torch(form, device):
    """``y[idx] = v`` on a graph tensor and on a view of one, for numbers and tensors (same
    shape, broadcast, extra leading 1s, 0-d, another dtype): values, both gradients, the
    version bump, the grad_fn torch records (CopySlices, IndexPutBackward0, ...), errors."""
    torch = torch_or_skip()
    for kind in SETITEM_VALUES:
        for on_view in (False, True):
            got = _run_setitem(gpugrad, SETITEM_INDICES[form], kind, on_view, device)
            expected = _run_setitem(torch, SETITEM_INDICES[form], kind, on_view, "cpu")
            where = f"{form}, {kind} value, {'view' if on_view else 'graph tensor'}"
            if len(expected) == 2 or len(got) == 2:  # an error
                assert got[0] is expected[0], f"{where}: {got} vs torch {expected}"
                if expected[0] is not TypeError:
                    assert got[1] == expected[1], where
                continue
            for a, b, what in zip(got[:3], expected[:3], ("values", "x.grad", "v.grad")):
                assert (a is None) == (b is None), f"{where}: {what}"
                if a is not None:
                    assert_close(a, b, rtol=1e-6, atol=1e-6, msg=f"{where}: {what}")
            assert got[3:] == expected[3:], f"{where}: version bump, grad_fn, dtype"


SETITEM_GRADCHECK = [
    ("int", 0, (3, 4)), ("slice_step", slice(None, None, 2), (4,)),
    ("int_list", (1, [0, 2]), (2, 4)), ("mask", "mask", ()),
    ("separated", ([0, 1], slice(1, 3), [3, 3]), (1, 2)), ("none_list", (None, [1]), (3, 4)),
    ("true", True, (2, 3, 4)),
]


@pytest.mark.parametrize("idx, vshape", [pytest.param(i, s, id=n)
                                         for n, i, s in SETITEM_GRADCHECK])
def test_setitem_gradcheck(idx, vshape, device):
    def f(x, v):
        y = x * x
        y[(x.detach() > 0) if isinstance(idx, str) else idx] = v * 3
        return y

    rng = np.random.default_rng(2)
    x = gpugrad.tensor(rng.uniform(-1, 1, (2, 3, 4)), device=device, requires_grad=True)
    v = gpugrad.tensor(rng.uniform(-1, 1, vshape), device=device, requires_grad=True)
    assert gradcheck(f, (x, v))
    assert gradgradcheck(f, (x, v))


SETITEM_ERRORS = [
    ("shape_mismatch", lambda m, x: x.__setitem__(0, m.ones(4, 3))),
    ("too_many_value_dims", lambda m, x: x.__setitem__(0, m.ones(2, 3, 4))),
    ("into_new_dim", lambda m, x: x.__setitem__((Ellipsis, None), m.ones(4))),
    ("advanced_shape", lambda m, x: x.__setitem__([0, 1], m.ones(5))),
    ("advanced_shape_before_dtype", lambda m, x: x.__setitem__([0, 1], m.ones(5).double())),
    ("advanced_dtype", lambda m, x: x.__setitem__([0, 1], m.ones(4).double())),
    ("out_of_bounds", lambda m, x: x.__setitem__(2, 1.0)),
    ("advanced_out_of_bounds", lambda m, x: x.__setitem__((0, [0, 9]), 1.0)),
    ("mask_shape", lambda m, x: x.__setitem__(m.tensor([True]), 1.0)),
    ("float_index", lambda m, x: x.__setitem__(m.tensor([0.0]), 1.0)),
    ("complex_value", lambda m, x: x.__setitem__(0, 1 + 2j)),
    ("list_value", lambda m, x: x.__setitem__(0, [1.0, 2.0, 3.0, 4.0])),
    ("array_value", lambda m, x: x.__setitem__(0, np.ones(4))),
    ("str_value", lambda m, x: x.__setitem__(0, "a")),
    ("slice_of_0d", lambda m, x: m.tensor(1.0)[:]),
]


@pytest.mark.parametrize("name, fn", SETITEM_ERRORS, ids=[n for n, _ in SETITEM_ERRORS])
def test_setitem_errors_match_torch_and_change_nothing(name, fn, device):
    """torch's exception type and message (TypeErrors: torch's text, gpugrad's type name);
    the tensor, its version and its history are untouched."""
    torch = torch_or_skip()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(Exception) as expected:
            fn(torch, _x(torch))
        base = gpugrad.arange(24.0, device=device, requires_grad=True)
        x = (base * 1).reshape(2, 3, 4)
        node, before = x.grad_fn, x.tolist()
        with pytest.raises(type(expected.value)) as got:
            fn(gpugrad, x)
    message = str(expected.value).replace("torch.", "gpugrad.").replace("FloatTensor",
                                                                          "FloatTensor")
    assert message in str(got.value), f"torch: {expected.value}\ngpugrad: {got.value}"
    assert x.tolist() == before and x._version.value == 0 and x.grad_fn is node


def test_setitem_false_writes_and_checks_nothing(lib):
    x = lib.zeros(2, 3)
    x[False] = lib.ones(7)  # torch: an empty selection, not even a shape check
    assert x._version == 0 if lib.name == "torch" else x._version.value == 0
    x[True] = lib.ones(3)
    assert x.sum().item() == 6.0


def test_setitem_casts_basic_writes_and_one_mask_fills(lib):
    x = lib.zeros(2, 3, dtype=lib.int64)
    x[0] = 2.7  # basic writes cast (truncating) like copy_
    x[1, [0]] = 3.9  # a number is cast by index_put_ too
    assert x.tolist() == [[2, 2, 2], [3, 0, 0]]
    y = lib.zeros(2, 3, dtype=lib.float64, requires_grad=True) * 1
    v = lib.tensor(1.5, requires_grad=True)  # float32: cast, since this runs as masked_fill_
    y[y == 0] = v
    y.sum().backward()
    assert y.dtype == lib.float64 and v.grad.item() == 6.0 and v.grad.dtype == lib.float32


def test_fill_with_a_0d_tensor_gives_it_the_gradient(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    v = lib.tensor(2.0, requires_grad=True)
    y = x * 1
    y.fill_(v)
    assert type(y.grad_fn).__name__ == "FillBackward3"
    (y * lib.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert v.grad.item() == 6.0 and x.grad.tolist() == [0.0, 0.0, 0.0]
    z = x * 1
    z.fill_(1.0)
    assert type(z.grad_fn).__name__ == "FillBackward2"


def test_where_forms(lib):
    c = lib.tensor([[True, False], [False, True]])
    rows, cols = lib.where(c)  # torch.where(cond) is nonzero(as_tuple=True)
    assert rows.tolist() == [0, 1] and cols.tolist() == [0, 1] and rows.dtype == lib.int64
    assert [t.tolist() for t in lib.where(lib.tensor(True))] == [[0]]
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = lib.where(c, x, 0.0) + lib.where(c, 1.0, x * 2)
    assert y.tolist() == [[2.0, 4.0], [6.0, 5.0]]
    y.sum().backward()
    assert x.grad.tolist() == [[1.0, 2.0], [2.0, 1.0]]
    assert lib.where(c, 1, 0).dtype == lib.int64


def test_augmented_assignment_on_graph_tensors(lib):
    x = lib.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 1
    y += 1
    y *= x
    y -= 2
    y /= 3
    y **= 2
    y[1:] += x[:2]
    y[[0]] *= 2
    y.sum().backward()
    assert type(y.grad_fn).__name__ == "IndexPutBackward0"
    g = x.grad.tolist()
    xs = [1.0, 2.0, 3.0]
    # y_i = ((x_i + 1) x_i - 2)^2 / 9 (+ x_{i-1} for i > 0), then y_0 doubled
    d = [2 * ((a + 1) * a - 2) * (2 * a + 1) / 9 for a in xs]
    expected = [2 * d[0] + 1, d[1] + 1, d[2]]
    assert np.allclose(g, expected)
