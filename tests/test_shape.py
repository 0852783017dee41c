"""The shape family (issue 3), declared once in a table and checked the same ways.

A case is a name, a function ``fn(m, *inputs)`` written once against torch's API (``m`` is
``gpugrad`` or ``torch``), its inputs (shapes: random float64 values), and what the outputs
are: ``views=True`` when every output is a view of the first input (as in torch), ``False``
when every output is a new tensor, ``None`` when neither is promised. Each case

- runs against PyTorch when it is installed: values, shapes, dtypes and requires_grad of every
  output, the gradients of ``sum(out * w)``, and torch's own view-ness of the outputs;
- runs through ``gradcheck`` and ``gradgradcheck`` in float64 (no torch needed);
- checks the view contract of ``ops/_views``: a view shares memory with its base, and its
  view chain replays it exactly (on the base, and on another tensor of the base's shape);
  a non-view shares memory with no input. Writes through views (and their gradients) are
  compared with torch.

Then: dtype promotion and dtypes of non-float inputs, and the errors for bad arguments.
"""
from __future__ import annotations

import re
import zlib

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import gradcheck, gradgradcheck
from gpugrad.ops._views import replay, shares_memory
from helpers import assert_close, to_numpy, torch_or_skip


class Case:
    """``views``: see the module docstring. ``multi``: outputs of a function returning several
    views (split/chunk/unbind). ``write``: a write through the view is well defined (not for
    expanded views). ``ggc``: run gradgradcheck."""

    def __init__(self, name, fn, *shapes, views=False, multi=False, write=True, ggc=True):
        self.name, self.fn, self.shapes = name, fn, shapes
        self.views, self.multi, self.write, self.ggc = views, multi, write, ggc

    def arrays(self, salt=0):
        rng = np.random.default_rng(zlib.crc32(self.name.encode()) + salt)
        return [rng.uniform(-2.0, 2.0, s) for s in self.shapes]

    def tensors(self, device, salt=0, requires_grad=True):
        return [gpugrad.tensor(a, dtype=gpugrad.float64, device=device,
                               requires_grad=requires_grad) for a in self.arrays(salt)]


def V(name, fn, *shapes, **kw):
    """A case whose outputs are views of its first input."""
    return Case(name, fn, *shapes, views=True, **kw)


def M(name, fn, *shapes, **kw):
    """A case whose outputs are several views of its first input (split, chunk, unbind)."""
    return Case(name, fn, *shapes, views=True, multi=True, **kw)


def nnf(m):
    return m.nn.functional


X3 = (2, 3, 4)
S = (2, 3)
CASES = [
    # reshape / view / flatten / unflatten
    V("reshape", lambda m, x: x.reshape(4, 6), X3),
    V("reshape_fn_infer", lambda m, x: m.reshape(x, (-1, 3)), X3),
    V("reshape_split_transposed", lambda m, x: x.transpose(0, 1).reshape(3, 2, 2, 2), X3),
    Case("reshape_copies_transposed", lambda m, x: x.transpose(0, 1).reshape(3, 8), X3),
    Case("reshape_copies_t", lambda m, x: x.t().reshape(6), S),
    V("reshape_empty", lambda m, x: x.reshape(3, 0, 5), (0, 3)),
    V("reshape_0d", lambda m, x: x.reshape(1, 1), ()),
    V("reshape_to_0d", lambda m, x: x.reshape(()), (1, 1)),
    V("reshape_as", lambda m, x, y: x.reshape_as(y), X3, (6, 4)),
    V("view", lambda m, x: x.view(6, 4), X3),
    V("view_tuple", lambda m, x: x.view((4, -1)), X3),
    V("view_flat", lambda m, x: x.view(-1), X3),
    V("view_transposed_split", lambda m, x: x.transpose(0, 1).view(3, 2, 2, 2), X3),
    V("view_transposed_same", lambda m, x: x.t().view(3, 2), S),
    V("view_expanded", lambda m, x: x.expand(3, 4).view(3, 2, 2), (3, 1), write=False),
    V("view_sliced", lambda m, x: x[:, 1:3].view(2, 2, 1, 4), X3),
    V("view_as", lambda m, x, y: x.view_as(y), S, (3, 2)),
    V("view_0d", lambda m, x: x.view(1), ()),
    V("view_empty", lambda m, x: x.view(0, 2), (2, 0, 3)),
    V("flatten", lambda m, x: x.flatten(), X3),
    V("flatten_fn", lambda m, x: m.flatten(x, 1), X3),
    V("flatten_range", lambda m, x: x.flatten(0, 1), X3),
    V("flatten_neg", lambda m, x: x.flatten(-2, -1), X3),
    V("flatten_0d", lambda m, x: x.flatten(), ()),
    Case("flatten_copies", lambda m, x: x.transpose(1, 2).flatten(1), X3),
    Case("flatten_same_dim", lambda m, x: x.flatten(1, 1) * 1, X3),
    V("unflatten", lambda m, x: x.unflatten(1, (3, 1)), X3),
    V("unflatten_fn_infer", lambda m, x: m.unflatten(x, -1, (2, -1)), X3),
    V("unflatten_many", lambda m, x: x.unflatten(0, (1, 2, 1)), X3),
    # squeeze / unsqueeze
    V("squeeze", lambda m, x: m.squeeze(x), (3, 1, 4, 1)),
    V("squeeze_dim", lambda m, x: x.squeeze(1), (3, 1, 4, 1)),
    V("squeeze_neg", lambda m, x: x.squeeze(-1), (3, 1, 4, 1)),
    V("squeeze_tuple", lambda m, x: x.squeeze((1, -1)), (3, 1, 4, 1)),
    V("squeeze_tuple_partial", lambda m, x: m.squeeze(x, (0, 1)), (3, 1, 4, 1)),
    V("squeeze_empty", lambda m, x: x.squeeze(1), (0, 1, 2)),
    Case("squeeze_noop", lambda m, x: x.squeeze(0), (3, 1), views=None),
    V("unsqueeze", lambda m, x: m.unsqueeze(x, 0), S),
    V("unsqueeze_mid", lambda m, x: x.unsqueeze(1), S),
    V("unsqueeze_neg", lambda m, x: x.unsqueeze(-1), S),
    V("unsqueeze_neg3", lambda m, x: x.unsqueeze(-3), S),
    V("unsqueeze_0d", lambda m, x: x.unsqueeze(0), ()),
    # expand / expand_as / broadcast_to
    V("expand", lambda m, x: x.expand(3, 4), (3, 1), write=False),
    V("expand_new_dims", lambda m, x: x.expand(2, 3, 4), (3, 1), write=False),
    V("expand_minus_one", lambda m, x: x.expand(2, -1, 4), (3, 1), write=False),
    V("expand_tuple", lambda m, x: x.expand((2, 1, 4)), (1, 4), write=False),
    V("expand_0d", lambda m, x: x.expand(2, 3), (), write=False),
    V("expand_empty", lambda m, x: x.expand(0, 4), (1, 1), write=False),
    V("expand_as", lambda m, x, y: x.expand_as(y), (1, 3), S, write=False),
    V("broadcast_to", lambda m, x: m.broadcast_to(x, (2, 3, 4)), (4,), write=False),
    V("broadcast_to_mid", lambda m, x: m.broadcast_to(x, (2, 3, 4)), (3, 1), write=False),
    # transpose family and slicing (views from the core)
    V("transpose", lambda m, x: x.transpose(0, 2), X3),
    V("permute", lambda m, x: x.permute(2, 0, 1), X3),
    V("t", lambda m, x: x.t(), S),
    V("T", lambda m, x: x.T, S),
    V("mT", lambda m, x: x.mT, X3),
    V("getitem_slices", lambda m, x: x[1:, ::2, -1], X3),
    V("getitem_none_ellipsis", lambda m, x: x[None, ..., 1:3], X3),
    # repeat / tile
    Case("repeat", lambda m, x: x.repeat(2, 1), S),
    Case("repeat_new_dims", lambda m, x: x.repeat(2, 1, 3), S),
    Case("repeat_tuple", lambda m, x: x.repeat((1, 2, 2)), (2, 1, 3)),
    Case("repeat_ones", lambda m, x: x.repeat(1, 1), S),
    Case("repeat_0d", lambda m, x: x.repeat(2, 3), ()),
    Case("repeat_zero", lambda m, x: x.repeat(2, 0), S),
    Case("repeat_empty", lambda m, x: x.repeat(2, 3), (0, 2)),
    Case("tile", lambda m, x: x.tile(2), S),
    Case("tile_fn", lambda m, x: m.tile(x, (2, 1, 2)), S),
    Case("tile_ones", lambda m, x: m.tile(x, (1,)), S),
    # cat / stack
    Case("cat", lambda m, x, y: m.cat([x, y]), (2, 3), (4, 3)),
    Case("cat_dim1", lambda m, x, y: m.cat((x, y), 1), (2, 3), (2, 1)),
    Case("cat_neg_dim", lambda m, x, y, z: m.cat([x, y, z], dim=-1), (2, 1, 2), (2, 1, 3),
         (2, 1, 1)),
    Case("cat_self", lambda m, x: m.cat([x, x * 2, x], 1), S),
    Case("cat_single", lambda m, x: m.cat([x]), S),
    Case("cat_empty", lambda m, x, y: m.cat([x, y]), (0, 3), (2, 3)),
    Case("cat_legacy_empty", lambda m, x, y: m.cat([x, y], 1), (0,), (2, 3)),
    Case("cat_all_empty", lambda m, x, y: m.cat([x, y]), (0,), (0,)),
    Case("concat", lambda m, x, y: m.concat([x, y], dim=1), S, S),
    Case("concatenate", lambda m, x, y: m.concatenate([x, y], axis=-2), S, S),
    Case("stack", lambda m, x, y: m.stack([x, y]), S, S),
    Case("stack_dim1", lambda m, x, y, z: m.stack((x, y, z), 1), S, S, S),
    Case("stack_neg_dim", lambda m, x, y: m.stack([x, y], dim=-1), S, S),
    Case("stack_0d", lambda m, x, y: m.stack([x, y]), (), ()),
    Case("stack_empty", lambda m, x, y: m.stack([x, y], 1), (0, 2), (0, 2)),
    # split / chunk / unbind
    M("split", lambda m, x: x.split(2), (5, 3)),
    M("split_fn_dim", lambda m, x: m.split(x, 2, dim=1), (2, 5)),
    M("split_sizes", lambda m, x: x.split([1, 2], 1), S),
    M("split_sizes_neg_dim", lambda m, x: m.split(x, (3, 0, 1), -1), (2, 4)),
    M("split_big", lambda m, x: x.split(10), S),
    M("split_empty", lambda m, x: x.split(2), (0, 3)),
    M("chunk", lambda m, x: x.chunk(2), (5, 3)),
    M("chunk_dim", lambda m, x: m.chunk(x, 3, dim=-1), (2, 6)),
    M("chunk_fewer", lambda m, x: x.chunk(4, 1), (2, 6)),
    M("chunk_empty", lambda m, x: x.chunk(2), (0, 3)),
    M("unbind", lambda m, x: x.unbind(), X3),
    M("unbind_fn_dim", lambda m, x: m.unbind(x, -1), X3),
    M("unbind_1d", lambda m, x: x.unbind(0), (3,)),
    # flip / roll / movedim / narrow
    Case("flip", lambda m, x: m.flip(x, (0,)), X3),
    Case("flip_many", lambda m, x: x.flip((0, 2)), X3),
    Case("flip_varargs", lambda m, x: x.flip(0, -1), X3),
    Case("flip_neg", lambda m, x: x.flip(-1), X3),
    Case("flip_0d", lambda m, x: x.flip(0), ()),
    Case("roll_flat", lambda m, x: m.roll(x, 1), S),
    Case("roll_dim", lambda m, x: x.roll(-2, 0), (4, 3)),
    Case("roll_dims", lambda m, x: x.roll((1, 2), (0, -1)), X3),
    Case("roll_big_shift", lambda m, x: x.roll(7, dims=1), X3),
    Case("roll_zero", lambda m, x: x.roll(0, 0), S),
    Case("roll_empty", lambda m, x: x.roll(1, 0), (0, 3)),
    V("movedim", lambda m, x: m.movedim(x, 0, 2), X3),
    V("movedim_tuple", lambda m, x: x.movedim((0, 1), (2, 0)), X3),
    V("movedim_neg", lambda m, x: x.movedim(-1, 0), X3),
    V("moveaxis", lambda m, x: m.moveaxis(x, 1, -1), X3),
    V("narrow", lambda m, x: x.narrow(1, 1, 2), X3),
    V("narrow_fn_neg", lambda m, x: m.narrow(x, -1, -3, 2), X3),
    V("narrow_empty", lambda m, x: x.narrow(0, 1, 0), X3),
    V("narrow_tensor_start", lambda m, x: x.narrow(0, m.tensor(1), 1), X3),
    # tril / triu
    Case("tril", lambda m, x: m.tril(x), (3, 3)),
    Case("tril_pos", lambda m, x: x.tril(1), (3, 4)),
    Case("tril_neg", lambda m, x: x.tril(diagonal=-1), (4, 3)),
    Case("tril_batched", lambda m, x: x.tril(), X3),
    Case("tril_far", lambda m, x: x.tril(-5), (3, 3)),
    Case("triu", lambda m, x: m.triu(x), (3, 3)),
    Case("triu_neg", lambda m, x: x.triu(-1), (3, 4)),
    Case("triu_pos_batched", lambda m, x: m.triu(x, 2), (2, 3, 5)),
    Case("triu_empty", lambda m, x: x.triu(), (0, 3)),
    # diagonal / trace
    V("diagonal", lambda m, x: m.diagonal(x), (3, 4)),
    V("diagonal_pos", lambda m, x: x.diagonal(1), (3, 4)),
    V("diagonal_neg", lambda m, x: x.diagonal(-1), (3, 4)),
    V("diagonal_dims", lambda m, x: x.diagonal(0, 1, 2), X3),
    V("diagonal_neg_dims", lambda m, x: m.diagonal(x, offset=1, dim1=-1, dim2=0), X3),
    V("diagonal_far", lambda m, x: x.diagonal(5), (3, 4)),
    Case("trace", lambda m, x: m.trace(x), (3, 3)),
    Case("trace_wide", lambda m, x: x.trace(), (2, 4)),
    Case("trace_tall", lambda m, x: x.trace(), (4, 2)),
    # pad
    Case("pad", lambda m, x: nnf(m).pad(x, (1, 2)), S),
    Case("pad_value", lambda m, x: nnf(m).pad(x, (1, 1, 2, 0), value=1.5), S),
    Case("pad_constant_3d", lambda m, x: nnf(m).pad(x, (1, 0, 0, 1, 2, 1), "constant", -1.0),
         X3),
    Case("pad_crop", lambda m, x: nnf(m).pad(x, [-1, 2, 0, -1]), X3),
    Case("pad_zero", lambda m, x: nnf(m).pad(x, (0, 0)), S),
    Case("pad_empty", lambda m, x: nnf(m).pad(x, (1, 1)), (0, 2)),
    Case("pad_reflect", lambda m, x: nnf(m).pad(x, (2, 1), mode="reflect"), (2, 4)),
    Case("pad_reflect_2d", lambda m, x: nnf(m).pad(x, (1, 2, 2, 1), mode="reflect"), X3),
    Case("pad_reflect_3d", lambda m, x: nnf(m).pad(x, (1, 1, 1, 0, 0, 1), mode="reflect"),
         (1, 2, 2, 3)),
    Case("pad_reflect_crop", lambda m, x: nnf(m).pad(x, (-1, 2), mode="reflect"), (2, 4)),
    Case("pad_reflect_zero", lambda m, x: nnf(m).pad(x, (0, 0), mode="reflect", value=0.0),
         (2, 4)),
    Case("pad_replicate", lambda m, x: nnf(m).pad(x, (2, 3), mode="replicate"), (2, 3)),
    Case("pad_replicate_2d", lambda m, x: nnf(m).pad(x, (1, 0, 2, 2), mode="replicate"),
         (1, 2, 2, 3)),
    Case("pad_replicate_3d", lambda m, x: nnf(m).pad(x, (0, 1, 1, 1, 2, 0), "replicate"),
         (1, 2, 2, 3)),
    Case("pad_replicate_batch0", lambda m, x: nnf(m).pad(x, (1, 1), mode="replicate"),
         (0, 2, 3)),
    Case("pad_circular", lambda m, x: nnf(m).pad(x, (1, 2), mode="circular"), X3),
    Case("pad_circular_2d", lambda m, x: nnf(m).pad(x, (3, 1, 1, 2), mode="circular"),
         (1, 2, 3, 3)),
    # ops that change nothing still return a new view (torch: `x.reshape(x.shape) is x` is
    # False), with torch's node
    V("reshape_same", lambda m, x: x.reshape(x.shape), X3),
    V("view_same", lambda m, x: x.view(2, 3, 4), X3),
    V("expand_same", lambda m, x: x.expand(2, 3), S),
    V("expand_as_self", lambda m, x: x.expand_as(x), S),
    V("broadcast_to_same", lambda m, x: m.broadcast_to(x, (2, 3)), S),
    V("squeeze_nothing", lambda m, x: x.squeeze(), S),
    V("squeeze_dim_nothing", lambda m, x: x.squeeze(0), S),
    V("squeeze_dims_nothing", lambda m, x: x.squeeze((0, 1)), S),
    V("squeeze_0d", lambda m, x: x.squeeze(), ()),
    V("transpose_same_dim", lambda m, x: x.transpose(1, 1), S),
    V("transpose_0d", lambda m, x: x.transpose(0, -1), ()),
    V("t_1d", lambda m, x: x.t(), (3,)),
    V("t_0d", lambda m, x: m.t(x), ()),
    # atleast_nd and the numpy-style stacks
    V("atleast_1d_0d", lambda m, x: m.atleast_1d(x), ()),
    Case("atleast_1d_many", lambda m, x, y: m.atleast_1d(x, y), (), S, views=None),
    Case("atleast_1d_list", lambda m, x, y: m.atleast_1d([x, y]), (3,), (), views=None),
    V("atleast_2d_1d", lambda m, x: m.atleast_2d(x), (3,)),
    Case("atleast_2d_tuple", lambda m, x, y, z: m.atleast_2d((x, y, z)), (), (3,), X3,
         views=None),
    V("atleast_3d_2d", lambda m, x: m.atleast_3d(x), S),
    Case("atleast_3d_many", lambda m, x, y, z: m.atleast_3d(x, y, z), (), (3,), X3,
         views=None),
    Case("hstack", lambda m, x, y: m.hstack([x, y]), S, (2, 1)),
    Case("hstack_1d", lambda m, x, y: m.hstack((x, y, x)), (3,), ()),
    Case("vstack", lambda m, x, y: m.vstack([x, y, y]), S, (3,)),
    Case("row_stack", lambda m, x, y: m.row_stack([x, y]), (3,), (3,)),
    Case("dstack", lambda m, x, y: m.dstack([x, y]), S, S),
    Case("dstack_3d", lambda m, x, y: m.dstack([x, y]), X3, (2, 3, 1)),
    Case("dstack_1d", lambda m, x, y: m.dstack([x, y]), (3,), (3,)),
    Case("column_stack", lambda m, x, y, z: m.column_stack([x, y, z]), (2,), S, (2,)),
    Case("column_stack_0d", lambda m, x, y: m.column_stack((x, y)), (), ()),
    # tensor_split family: plain slices (writable views, unlike split's)
    V("tensor_split_sections", lambda m, x: m.tensor_split(x, 3), (5, 3)),
    V("tensor_split_indices", lambda m, x: m.tensor_split(x, [1, 9, 2, -1], dim=0), (5, 3)),
    V("tensor_split_method_dim", lambda m, x: x.tensor_split(3, 1), (2, 4)),
    V("tensor_split_tensor", lambda m, x: m.tensor_split(x, m.tensor([1, 3]), -1), X3),
    V("tensor_split_0d_tensor", lambda m, x: m.tensor_split(x, m.tensor(2), 1), X3),
    V("tensor_split_more_than_size", lambda m, x: m.tensor_split(x, 5), (3,)),
    V("hsplit", lambda m, x: m.hsplit(x, 2), (3, 4)),
    V("hsplit_1d", lambda m, x: x.hsplit([1, 3]), (4,)),
    V("vsplit", lambda m, x: m.vsplit(x, [2]), (5, 2)),
    V("dsplit", lambda m, x: x.dsplit(2), X3),
]

CASE_IDS = [pytest.param(c, id=c.name) for c in CASES]


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _torch_is_view_of(t, base) -> bool:
    return t._is_view() and t._base is base


# ---- against torch ----------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_IDS)
def test_matches_torch(case, device):
    """Values, shapes, dtypes, requires_grad, view-ness, and the gradients of sum(out * w)."""
    torch = torch_or_skip()
    xs = case.tensors(device)
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in case.arrays()]
    outs, touts = _outputs(case.fn(gpugrad, *xs)), _outputs(case.fn(torch, *ts))
    assert len(outs) == len(touts), f"{case.name}: {len(outs)} outputs vs torch's {len(touts)}"
    for k, (o, t) in enumerate(zip(outs, touts)):
        msg = f"{case.name}: output {k}"
        assert o.dtype.name == str(t.dtype).removeprefix("torch."), msg
        assert o.requires_grad == t.requires_grad, msg
        assert_close(o, t, rtol=0, atol=0, msg=msg)  # shape ops move values, never round them
        if case.views is not None:  # the table's promise is torch's behavior
            assert _torch_is_view_of(t, ts[0]) == case.views, f"{msg}: torch's view-ness"
    rng = np.random.default_rng(1)
    ws = [rng.uniform(-1, 1, tuple(t.shape)) for t in touts]
    loss = sum((o * gpugrad.tensor(w, device=device)).sum() for o, w in zip(outs, ws))
    tloss = sum((t * torch.tensor(w)).sum() for t, w in zip(touts, ws))
    grads = gpugrad.autograd.grad(loss, xs, allow_unused=True)
    tgrads = torch.autograd.grad(tloss, ts, allow_unused=True)
    for k, (g, tg, x) in enumerate(zip(grads, tgrads, xs)):
        g = np.zeros(x.shape) if g is None else to_numpy(g)
        tg = np.zeros(x.shape) if tg is None else to_numpy(tg)
        assert_close(g, tg, rtol=1e-12, atol=1e-12, msg=f"{case.name}: gradient of input {k}")


# ---- numerical gradients ----------------------------------------------------------------------
@pytest.mark.parametrize("case", CASE_IDS)
def test_gradcheck(case, device):
    assert gradcheck(lambda *a: case.fn(gpugrad, *a), case.tensors(device))


@pytest.mark.parametrize("case", [p for p in CASE_IDS if p.values[0].ggc])
def test_gradgradcheck(case, device):
    assert gradgradcheck(lambda *a: case.fn(gpugrad, *a), case.tensors(device))


# ---- the view contract ------------------------------------------------------------------------
@pytest.mark.parametrize("case", [p for p in CASE_IDS if p.values[0].views is not None])
def test_view_contract(case, device):
    """A view shares memory with its base and is marked with an exact replay chain; any
    other result shares memory with no input."""
    xs = case.tensors(device)
    outs = _outputs(case.fn(gpugrad, *xs))
    x = xs[0]
    # another tensor of x's shape, with other values
    y = gpugrad.tensor(case.arrays(salt=7)[0], dtype=gpugrad.float64, device=device)
    youts = _outputs(case.fn(gpugrad, y, *xs[1:]))
    for k, o in enumerate(outs):
        msg = f"{case.name}: output {k}"
        if not case.views:
            assert o._base is None, msg
            assert not any(shares_memory(o._data, a._data) for a in xs), msg
            continue
        assert o._base is x, msg
        assert shares_memory(o._data, x._data), msg
        assert o._multi_view == case.multi, msg
        assert o._version is x._version, f"{msg}: a view shares its base's version counter"
        again = replay(x, o._view_chain)
        assert_close(again, o, rtol=0, atol=0, msg=f"{msg}: replayed on the base")
        assert shares_memory(again._data, x._data), f"{msg}: the replay is a view"
        assert again.requires_grad
        on_y = replay(y, o._view_chain)
        assert_close(on_y, youts[k], rtol=0, atol=0, msg=f"{msg}: replayed on another tensor")
        assert shares_memory(on_y._data, y._data), msg


@pytest.mark.parametrize("case", [p for p in CASE_IDS if p.values[0].views
                                  and p.values[0].write])
def test_write_through_view_matches_torch(case, device):
    """``view.mul_(2)`` outside the graph doubles exactly the base's viewed elements."""
    torch = torch_or_skip()
    xs = case.tensors(device, requires_grad=False)
    ts = [torch.tensor(a, dtype=torch.float64) for a in case.arrays()]
    for o in _outputs(case.fn(gpugrad, *xs)):
        o.mul_(2)
    for t in _outputs(case.fn(torch, *ts)):
        t.mul_(2)
    assert_close(xs[0], ts[0], rtol=0, atol=0, msg=case.name)


@pytest.mark.parametrize("case", [p for p in CASE_IDS if p.values[0].views
                                  and p.values[0].write])
def test_inplace_on_view_gradients_match_torch(case, device):
    """An in-place op on a view of a non-leaf: the gradient reaches the leaf through both the
    view and the base, as in torch; on split/chunk/unbind outputs both refuse."""
    torch = torch_or_skip()

    def run(m, xs):
        base = xs[0] * 1.5
        view = _outputs(case.fn(m, base, *xs[1:]))[0]
        view.mul_(view.detach() + 0.5)
        w = m.tensor(np.linspace(-1, 1, base.numel()).reshape(tuple(base.shape)),
                     dtype=m.float64, device=xs[0].device)
        return (base * w).sum() + (view ** 2).sum()

    xs = case.tensors(device)
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in case.arrays()]
    if case.multi:
        with pytest.raises(RuntimeError):
            run(torch, ts)
        with pytest.raises(RuntimeError, match="split, chunk, unbind"):
            run(gpugrad, xs)
        return
    g = gpugrad.autograd.grad(run(gpugrad, xs), xs[0])[0]
    tg = torch.autograd.grad(run(torch, ts), ts[0])[0]
    assert_close(g, tg, rtol=1e-12, atol=1e-12, msg=case.name)


def test_view_and_reshape_contiguity_rule(device):
    x = gpugrad.tensor(np.arange(24.0).reshape(2, 3, 4), device=device)
    t = x.transpose(0, 1)
    r = t.reshape(3, 8)  # no strides give this shape: a copy
    assert not shares_memory(r._data, x._data) and r._base is None
    with pytest.raises(RuntimeError, match=r"view size is not compatible.*Use \.reshape"):
        t.view(3, 8)
    v = t.view(3, 2, 2, 2)  # splitting one dim always works
    assert shares_memory(v._data, x._data) and v._base is x
    assert x.view(24)._base is x and x.reshape(4, 6)._base is x
    e = gpugrad.ones(3, 1, device=device).expand(3, 4)
    assert e.view(3, 2, 2)._base is e._base
    with pytest.raises(RuntimeError, match="view size is not compatible"):
        e.view(12)
    assert gpugrad.zeros(0, 3, device=device).t().view(3, 0).shape == (3, 0)


def test_views_see_writes_to_the_base(device):
    x = gpugrad.zeros(3, 4, device=device)
    views = [x.view(12), x.flatten(), x.narrow(1, 1, 2), x.diagonal(), x.movedim(0, 1),
             x.unflatten(1, (2, 2)), x.unsqueeze(0), x[None].squeeze(0)]
    pieces = list(x.split(2, 1)) + list(x.chunk(3)) + list(x.unbind(1))
    x.fill_(3.0)
    for v in views + pieces:
        assert (to_numpy(v) == 3.0).all()
        assert v._version.value == x._version.value


def test_non_view_results_are_fresh(device):
    x = gpugrad.ones(2, 3, device=device)
    fresh = [x.repeat(1, 1), x.tile(1), gpugrad.cat([x]), gpugrad.stack([x])[0], x.flip(0),
             x.roll(0), x.roll(3), x.tril(5), x.triu(-5), gpugrad.nn.functional.pad(x, (0, 0)),
             gpugrad.nn.functional.pad(x, (0, 0), mode="replicate")]
    for k, r in enumerate(fresh):
        r.mul_(2)
        assert (to_numpy(x) == 1).all(), k


# ---- dtypes -----------------------------------------------------------------------------------
DTYPES = ["bool", "int32", "int64", "float16", "float32", "float64"]


def _typed(m, dtype, shape, device=None):
    vals = (np.arange(int(np.prod(shape))).reshape(shape) % 3).astype(np.float64)
    t = m.tensor(vals, device=device) if m is gpugrad else m.tensor(vals)
    return t.to(getattr(m, dtype))


@pytest.mark.parametrize("op", ["cat", "stack"])
def test_cat_and_stack_promote_dtypes_like_torch(op, device):
    torch = torch_or_skip()
    problems = []
    for a in DTYPES:
        for b in DTYPES:
            got = getattr(gpugrad, op)([_typed(gpugrad, a, (2, 2), device),
                                        _typed(gpugrad, b, (2, 2), device)])
            want = getattr(torch, op)([_typed(torch, a, (2, 2)), _typed(torch, b, (2, 2))])
            if got.dtype.name != str(want.dtype).removeprefix("torch.") or \
                    not np.array_equal(to_numpy(got), to_numpy(want)):
                problems.append(f"{op}({a}, {b}): {got.dtype} vs torch {want.dtype}")
    assert not problems, "\n".join(problems)


def test_cat_mixed_dtype_gradients_come_back_in_each_dtype(device):
    x = gpugrad.ones(2, device=device, requires_grad=True)
    y = gpugrad.ones(3, dtype=gpugrad.float64, device=device, requires_grad=True)
    out = gpugrad.cat([x, y])
    assert out.dtype is gpugrad.float64
    (out * gpugrad.arange(5.0, device=device)).sum().backward()
    assert x.grad.dtype is gpugrad.float32 and y.grad.dtype is gpugrad.float64
    assert to_numpy(x.grad).tolist() == [0, 1] and to_numpy(y.grad).tolist() == [2, 3, 4]


INT_OPS = {
    "repeat": lambda m, x: x.repeat(2, 1),
    "tile": lambda m, x: x.tile(2),
    "flip": lambda m, x: x.flip(0),
    "roll": lambda m, x: x.roll(1),
    "tril": lambda m, x: x.tril(),
    "triu": lambda m, x: x.triu(1),
    "diagonal": lambda m, x: x.diagonal(),
    "trace": lambda m, x: x.trace(),
    "split": lambda m, x: x.split(1)[1],
    "unbind": lambda m, x: x.unbind(1)[2],
    "narrow": lambda m, x: x.narrow(1, 1, 2),
    "movedim": lambda m, x: x.movedim(0, 1),
    "pad": lambda m, x: m.nn.functional.pad(x, (1, 1), value=2),
    "pad_replicate": lambda m, x: m.nn.functional.pad(x[None], (1, 1), mode="replicate"),
    "view": lambda m, x: x.view(6),
    "unflatten": lambda m, x: x.unflatten(1, (3, 1)),
}


@pytest.mark.parametrize("op", sorted(INT_OPS))
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "float16"])
def test_dtypes_of_non_float_inputs_match_torch(op, dtype, device):
    torch = torch_or_skip()
    fn = INT_OPS[op]
    try:
        want = fn(torch, _typed(torch, dtype, (2, 3)))
    except (RuntimeError, NotImplementedError) as e:  # e.g. trace of bool
        with pytest.raises(type(e)):
            fn(gpugrad, _typed(gpugrad, dtype, (2, 3), device))
        return
    got = fn(gpugrad, _typed(gpugrad, dtype, (2, 3), device))
    assert got.dtype.name == str(want.dtype).removeprefix("torch.")
    assert not got.requires_grad
    assert np.array_equal(to_numpy(got), to_numpy(want))


# ---- errors -----------------------------------------------------------------------------------
class Err:
    """``fn(m, x)`` on ``x`` of ``shape`` raises ``exc`` (torch too) with a gpugrad message
    matching ``match``."""

    def __init__(self, name, fn, shape, exc, match):
        self.name, self.fn, self.shape, self.exc, self.match = name, fn, shape, exc, match


def _cat2(a, b, dim=0):
    return lambda m, x: m.cat([m.zeros(*a), m.zeros(*b)], dim)


ERRORS = [
    Err("view_incompatible", lambda m, x: x.t().view(6), S, RuntimeError,
        r"view size is not compatible with input tensor's size and stride.*\[3, 2\].*"
        r"stride \[1, 3\].*\[6\]\. Use \.reshape\(\.\.\.\) instead\."),
    Err("view_bad_size", lambda m, x: x.view(4, -1), S, RuntimeError,
        r"shape '\[4, -1\]' is invalid for input of size 6"),
    Err("view_two_inferred", lambda m, x: x.view(-1, -1), S, RuntimeError,
        "only one dimension can be inferred"),
    Err("view_float_size", lambda m, x: x.view(2, 3.0), S, TypeError, "sequence of ints"),
    Err("reshape_bad_size", lambda m, x: x.reshape(4, 4), S, RuntimeError,
        r"shape '\[4, 4\]' is invalid for input of size 6"),
    Err("flatten_order", lambda m, x: x.flatten(1, 0), S, RuntimeError,
        "start_dim cannot come after end_dim"),
    Err("flatten_range", lambda m, x: x.flatten(0, 2), S, IndexError, "Dimension out of range"),
    Err("unflatten_product", lambda m, x: x.unflatten(1, (2, 2)), S, RuntimeError,
        r"Provided sizes \[2, 2\] don't multiply up to the size of dim 1 \(3\)"),
    Err("unflatten_empty", lambda m, x: x.unflatten(1, ()), S, RuntimeError,
        "sizes must be non-empty"),
    Err("squeeze_dup", lambda m, x: x.squeeze((0, 0)), S, RuntimeError,
        "dim 0 appears multiple times"),
    Err("squeeze_range", lambda m, x: x.squeeze(2), S, IndexError,
        r"expected to be in range of \[-2, 1\], but got 2"),
    Err("unsqueeze_range", lambda m, x: x.unsqueeze(3), S, IndexError,
        r"range of \[-3, 2\], but got 3"),
    Err("expand_mismatch", lambda m, x: x.expand(3, 3), S, RuntimeError,
        r"expanded size of the tensor \(3\) must match the existing size \(2\) at "
        r"non-singleton dimension 0"),
    Err("expand_too_few", lambda m, x: x.expand(3), S, RuntimeError,
        r"number of sizes provided \(1\) must be greater or equal to the number of "
        r"dimensions in the tensor \(2\)"),
    Err("broadcast_to_mismatch", lambda m, x: m.broadcast_to(x, (4, 2)), S, RuntimeError,
        "must match the existing size"),
    Err("repeat_too_few", lambda m, x: x.repeat(2), S, RuntimeError,
        "Number of dimensions of repeat dims can not be smaller than number of dimensions"),
    Err("repeat_negative", lambda m, x: x.repeat(-1, 2), S, RuntimeError,
        r"negative dimension -2: \[-2, 6\]"),
    Err("cat_shapes", _cat2((2, 3), (3, 3), 1), S, RuntimeError,
        r"Sizes of tensors must match except in dimension 1\. Expected size 2 but got size 3 "
        r"for tensor number 1 in the list \(shapes \[2, 3\] and \[3, 3\], cat along dim 1\)"),
    Err("cat_shapes_neg_dim", _cat2((2, 3, 1), (2, 4, 2), -1), S, RuntimeError,
        r"except in dimension 2\. Expected size 3 but got size 4 .*\[2, 3, 1\] and \[2, 4, 2\]"),
    Err("cat_ndim", _cat2((2, 3), (2, 3, 1), 1), S, RuntimeError,
        r"same number of dimensions: got 2 and 3 \(shapes \[2, 3\].*\[2, 3, 1\]"),
    Err("cat_0d", lambda m, x: m.cat([x, x.sum()]), S, RuntimeError,
        r"zero-dimensional tensor \(at position 1\) cannot be concatenated"),
    Err("cat_nothing", lambda m, x: m.cat([]), S, ValueError, "expected a non-empty list"),
    Err("cat_a_tensor", lambda m, x: m.cat(x), S, TypeError,
        "must be tuple of Tensors, not Tensor"),
    Err("cat_not_a_tensor", lambda m, x: m.cat([x, 1]), S, TypeError,
        "expected Tensor as element 1 in argument 0, but got int"),
    Err("cat_dim_range", lambda m, x: m.cat([x, x], 2), S, IndexError,
        r"range of \[-2, 1\], but got 2"),
    Err("stack_shapes", lambda m, x: m.stack([x, x[0]]), S, RuntimeError,
        r"stack expects each tensor to be equal size, but got \[2, 3\] at entry 0 and \[3\] "
        r"at entry 1"),
    Err("stack_nothing", lambda m, x: m.stack([]), S, RuntimeError,
        "stack expects a non-empty TensorList"),
    Err("stack_dim_range", lambda m, x: m.stack([x, x], 3), S, IndexError,
        r"range of \[-3, 2\], but got 3"),
    Err("split_sizes_sum", lambda m, x: x.split([1, 1], 1), S, RuntimeError,
        r"split_with_sizes expects split_sizes to sum exactly to 3 \(input tensor's size at "
        r"dimension 1\), but got split_sizes=\[1, 1\]"),
    Err("split_sizes_negative", lambda m, x: x.split([4, -1], 1), S, RuntimeError,
        r"only non-negative entries, but got split_sizes=\[4, -1\]"),
    Err("split_zero", lambda m, x: x.split(0), S, RuntimeError,
        "split_size can only be 0 if dimension size is 0"),
    Err("split_negative", lambda m, x: x.split(-1), S, RuntimeError,
        "split expects split_size be non-negative, but got split_size=-1"),
    Err("split_0d", lambda m, x: x.sum().split(1), S, RuntimeError,
        "split expects at least a 1-dimensional tensor"),
    Err("chunk_zero", lambda m, x: x.chunk(0), S, RuntimeError,
        "chunk expects `chunks` to be greater than 0, got: 0"),
    Err("unbind_0d", lambda m, x: x.sum().unbind(), S, IndexError,
        "Dimension specified as 0 but tensor has no dimensions"),
    Err("flip_dup", lambda m, x: x.flip((0, -2)), S, RuntimeError,
        "dim 0 appears multiple times"),
    Err("roll_align", lambda m, x: x.roll((1, 2), 0), S, RuntimeError,
        "shifts and dimensions must align. shifts: 2, dims:1"),
    Err("roll_flat_tuple", lambda m, x: x.roll((1, 2)), S, RuntimeError,
        "shifts and dimensions must align. shifts: 2, dims:0"),
    Err("roll_dim_range", lambda m, x: x.roll(1, 2), S, IndexError, "Dimension out of range"),
    Err("movedim_lengths", lambda m, x: x.movedim((0, 1), (1,)), S, RuntimeError,
        r"movedim: Invalid source or destination dims: source \(\[0, 1\] dims\) should "
        r"contain the same number of dims as destination \(\[1\] dims\)"),
    Err("movedim_repeated_source", lambda m, x: x.movedim((0, 0), (0, 1)), S, RuntimeError,
        r"repeated dim in `source` \(\[0, 0\]\)"),
    Err("movedim_repeated_destination", lambda m, x: x.movedim((0, 1), (1, -1)), S,
        RuntimeError, r"repeated dim in `destination`"),
    Err("narrow_past_end", lambda m, x: x.narrow(1, 2, 2), S, RuntimeError,
        r"start \(2\) \+ length \(2\) exceeds dimension size \(3\)\."),
    Err("narrow_start_range", lambda m, x: x.narrow(1, -4, 1), S, IndexError,
        r"start out of range \(expected to be in range of \[-3, 3\], but got -4\)"),
    Err("narrow_negative_length", lambda m, x: x.narrow(1, 0, -1), S, RuntimeError,
        "length must be non-negative"),
    Err("narrow_0d", lambda m, x: x.sum().narrow(0, 0, 1), S, RuntimeError,
        "cannot be applied to a 0-dim tensor"),
    Err("tril_1d", lambda m, x: x[0].tril(), S, RuntimeError,
        "tril: input tensor must have at least 2 dimensions"),
    Err("triu_1d", lambda m, x: m.triu(x[0]), S, RuntimeError,
        "triu: input tensor must have at least 2 dimensions"),
    Err("trace_3d", lambda m, x: x[None].trace(), S, RuntimeError,
        "trace: expected a matrix, but got tensor with dim 3"),
    Err("diagonal_same_dims", lambda m, x: x.diagonal(0, 1, -1), S, RuntimeError,
        "diagonal dimensions cannot be identical 1, -1"),
    Err("diagonal_1d", lambda m, x: x[0].diagonal(), S, IndexError, "Dimension out of range"),
    Err("pad_odd", lambda m, x: m.nn.functional.pad(x, (1,)), S, RuntimeError,
        "Padding length must be divisible by 2"),
    Err("pad_too_long", lambda m, x: m.nn.functional.pad(x, (1,) * 6), S, RuntimeError,
        "Padding length should be less than or equal to two times the input dimension but got "
        "padding length 6 and input of dimension 2"),
    Err("pad_bad_mode", lambda m, x: m.nn.functional.pad(x, (1, 1), mode="mirror"), S,
        NotImplementedError, "Unrecognised padding mode mirror"),
    Err("pad_crop_too_much", lambda m, x: m.nn.functional.pad(x, (-2, -2)), S, RuntimeError,
        r"padding \(-2, -2\) of dimension 1"),
    Err("pad_reflect_too_big", lambda m, x: m.nn.functional.pad(x, (3, 3), mode="reflect"),
        S, RuntimeError,
        r"Padding size should be less than the corresponding input dimension, but got: padding "
        r"\(3, 3\) at dimension 1 of input \[2, 3\]"),
    Err("pad_reflect_too_big_h", lambda m, x: m.nn.functional.pad(x, (1, 1, 0, 2), "reflect"),
        (1, 2, 3), RuntimeError, r"Argument #6.*padding \(0, 2\) at dimension 1"),
    Err("pad_reflect_value", lambda m, x: m.nn.functional.pad(x, (1, 1), "reflect", 2.0), S,
        RuntimeError, "Padding mode \"reflect\" doesn't take in value argument"),
    Err("pad_reflect_1d", lambda m, x: m.nn.functional.pad(x[0], (1, 1), mode="reflect"), S,
        NotImplementedError, "Padding size 2 is not supported for 1D input tensor"),
    Err("pad_replicate_4_on_2d", lambda m, x: m.nn.functional.pad(x, (1,) * 4, "replicate"), S,
        NotImplementedError, "Padding size 4 is not supported for 2D input tensor"),
    Err("pad_replicate_empty", lambda m, x: m.nn.functional.pad(x[:, :0], (1, 1), "replicate"),
        S, RuntimeError, r"non-zero dimensions for input, but got: \[2, 0\]"),
    Err("pad_circular_wraps", lambda m, x: m.nn.functional.pad(x[None], (4, 0), "circular"),
        S, RuntimeError, "Padding value causes wrapping around more than once"),
    Err("hstack_nothing", lambda m, x: m.hstack([]), S, RuntimeError,
        "hstack expects a non-empty TensorList"),
    Err("vstack_a_tensor", lambda m, x: m.vstack(x), S, TypeError,
        "must be tuple of Tensors, not Tensor"),
    Err("column_stack_nothing", lambda m, x: m.column_stack([]), S, RuntimeError,
        "column_stack expects a non-empty TensorList"),
    Err("tensor_split_zero", lambda m, x: m.tensor_split(x, 0), S, RuntimeError,
        "number of sections must be larger than 0, got 0"),
    Err("tensor_split_0d", lambda m, x: x.sum().tensor_split(2), S, RuntimeError,
        "tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims"),
    Err("tensor_split_float_tensor", lambda m, x: x.tensor_split(m.tensor([1.0])), S,
        RuntimeError, "to have dtype of long, but got Float"),
    Err("tensor_split_2d_tensor", lambda m, x: x.tensor_split(m.tensor([[1]])), S,
        RuntimeError, "to be a zero-dimensional or one-dimensional tensor, but got a tensor "
        "with 2 dims"),
    Err("hsplit_uneven", lambda m, x: m.hsplit(x, 2), S, RuntimeError,
        r"torch\.hsplit attempted to split along dimension 1, but the size of the dimension 3 "
        r"is not divisible by the split_size 2!"),
    Err("vsplit_1d", lambda m, x: m.vsplit(x[0], 1), S, RuntimeError,
        "torch.vsplit requires a tensor with at least 2 dimension, but got a tensor with 1 "
        "dimensions!"),
    Err("dsplit_2d", lambda m, x: x.dsplit(1), S, RuntimeError,
        "torch.dsplit requires a tensor with at least 3 dimension, but got a tensor with 2 "
        "dimensions!"),
]


@pytest.mark.parametrize("err", [pytest.param(e, id=e.name) for e in ERRORS])
def test_errors(err, device):
    x = gpugrad.zeros(*err.shape, device=device)
    with pytest.raises(err.exc) as info:
        err.fn(gpugrad, x)
    assert re.search(err.match, str(info.value)), str(info.value)


@pytest.mark.parametrize("err", [pytest.param(e, id=e.name) for e in ERRORS])
def test_torch_raises_the_same_error_type(err):
    torch = torch_or_skip()
    with pytest.raises(err.exc):
        err.fn(torch, torch.zeros(*err.shape))


def test_error_leaves_no_partial_graph(device):
    """A refused split leaves the input untouched and records nothing."""
    x = gpugrad.ones(2, 3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError):
        x.split([1, 1], 1)
    with pytest.raises(RuntimeError):
        gpugrad.cat([x, gpugrad.ones(3, 3, device=device)], 1)
    assert x.grad_fn is None and x._version.value == 0


def test_grad_fn_names_match_torch(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    names = {
        "cat": lib.cat([x, x]), "stack": lib.stack([x, x]), "split": x.split(1)[0],
        "split_sizes": x.split([1, 1])[0], "chunk": x.chunk(2)[0], "unbind": x.unbind()[0],
        "narrow": x.narrow(0, 0, 1), "diagonal": x.diagonal(), "trace": x.trace(),
        "tril": x.tril(), "triu": x.triu(), "repeat": x.repeat(2, 1), "tile": x.tile(2),
        "roll": x.roll(1), "flip": x.flip(0), "view": x.view(4), "flatten": x.flatten(),
        "movedim": x.movedim(0, 1), "pad": lib.nn.functional.pad(x, (1, 1)),
    }
    got = {k: type(v.grad_fn).__name__ for k, v in names.items()}
    assert got == {
        "cat": "CatBackward0", "stack": "StackBackward0", "split": "SplitBackward0",
        "split_sizes": "SplitWithSizesBackward0", "chunk": "SplitBackward0",
        "unbind": "UnbindBackward0", "narrow": "SliceBackward0",
        "diagonal": "DiagonalBackward0", "trace": "TraceBackward0", "tril": "TrilBackward0",
        "triu": "TriuBackward0", "repeat": "RepeatBackward0", "tile": "RepeatBackward0",
        "roll": "RollBackward0", "flip": "FlipBackward0", "view": "ViewBackward0",
        "flatten": "ViewBackward0", "movedim": "PermuteBackward0",
        "pad": "ConstantPadNdBackward0"}


def test_ops_that_change_nothing_return_new_views_named_as_torch(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    s = lib.tensor(1.0, requires_grad=True)
    v = lib.tensor([1.0, 2.0], requires_grad=True)
    results = {
        "reshape": x.reshape(x.shape), "view": x.view(2, 2), "expand": x.expand(2, 2),
        "expand_as": x.expand_as(x), "squeeze": x.squeeze(), "squeeze_dim": x.squeeze(0),
        "squeeze_dims": x.squeeze((0, 1)), "transpose": x.transpose(0, 0),
        "permute": x.permute(0, 1), "t_1d": v.t(), "t_0d": s.t(), "T_0d": s.permute(()),
        "squeeze_0d": s.squeeze(), "flatten_0d": s.flatten(), "transpose_0d": s.transpose(0, -1),
    }
    assert not any(y is x or y is s or y is v for y in results.values())
    assert {k: type(y.grad_fn).__name__ for k, y in results.items()} == {
        "reshape": "ViewBackward0", "view": "ViewBackward0", "expand": "ExpandBackward0",
        "expand_as": "ExpandBackward0", "squeeze": "SqueezeBackward0",
        "squeeze_dim": "SqueezeBackward1", "squeeze_dims": "SqueezeBackward2",
        "transpose": "TransposeBackward0", "permute": "PermuteBackward0", "t_1d": "TBackward0",
        "t_0d": "TBackward0", "T_0d": "PermuteBackward0", "squeeze_0d": "SqueezeBackward0",
        "flatten_0d": "ViewBackward0", "transpose_0d": "TransposeBackward0"}
    # torch returns the input itself here
    assert x.flatten(1, 1) is x and x.contiguous() is x and lib.atleast_1d(v) is v
    y = lib.ones(2, 3)
    z = y.reshape(2, 3)
    z[0] = 5.0  # a new view, still sharing memory and the version counter
    assert y.tolist()[0] == [5.0] * 3 and z._version == y._version


def test_new_join_grad_fn_names_match_torch(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    got = [type(y.grad_fn).__name__ for y in (
        lib.hstack([x, x]), lib.vstack([x, x]), lib.dstack([x, x]), lib.column_stack([x, x]),
        lib.tensor_split(x, 2)[0], x.hsplit(2)[1], lib.atleast_3d(x))]
    assert got == ["CatBackward0"] * 4 + ["SliceBackward0"] * 2 + ["UnsqueezeBackward0"]


def test_tril_and_triu_in_place(lib):
    x = lib.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = x * 1
    assert y.tril_() is y and y.tolist() == [[1.0, 0.0], [3.0, 4.0]]
    z = x * 1
    z.triu_(1)
    (y.sum() + z.sum()).backward()
    assert type(y.grad_fn).__name__ == "TrilBackward0"
    assert x.grad.tolist() == [[1.0, 1.0], [1.0, 1.0]]
