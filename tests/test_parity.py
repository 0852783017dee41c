"""CPU/GPU parity: every op runs on both devices from the same inputs; values and gradients
must agree (float32 within 1e-5, float64 within 1e-10, relative to the tensor's magnitude).

The ops are one table, ``CASES``: a name, a function of tensors, and makers of its inputs.
``test_table_is_complete`` (always runs) fails when a public op of ``gpugrad.ops`` or
``gpugrad.nn.functional`` is neither in the table nor in ``EXCLUDED`` with a reason, so the
table cannot silently fall behind the ops. ``test_table_runs_on_cpu`` (always runs) checks
that every entry runs and yields a gradient for every input that should have one, so that a
GPU run fails on the device, not on the table. ``test_parity`` and
``test_parity_double_backward`` (gradients of gradients) need CUDA.

Tolerance: ``|gpu - cpu| <= rtol * max|cpu|`` per tensor (plus ``rtol`` elementwise), because
reductions and matrix products sum in another order on the device: an elementwise relative
bound would fail on entries that cancel to near zero while the op is right.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pytest

import gpugrad
import gpugrad.nn.functional as F
import gpugrad.ops as ops

RTOL = {"float32": 1e-5, "float64": 1e-10}


# ---- input makers ------------------------------------------------------------------------------
@dataclass
class Arg:
    """One input: ``kind`` f (float, requires grad), c (float constant), i (int64 indices
    below ``high``), b (bool mask), r (small integers as floats: ties for comparisons),
    s (floats with inf, -inf and nan among them)."""
    kind: str
    shape: tuple
    lo: float = -2.0
    hi: float = 2.0
    high: int = 3

    def make(self, rng, dtype):
        if self.kind in "fc":
            return rng.uniform(self.lo, self.hi, self.shape).astype(dtype)
        if self.kind == "r":
            return rng.integers(-2, 3, self.shape).astype(dtype)
        if self.kind == "i":
            return rng.integers(0, self.high, self.shape).astype(np.int64)
        if self.kind == "b":
            return rng.random(self.shape) < 0.5
        if self.kind == "s":
            special = np.array([np.inf, -np.inf, np.nan, 1.0, -0.5], dtype=dtype)
            return rng.choice(special, self.shape)
        raise ValueError(self.kind)

    @property
    def grad(self) -> bool:
        return self.kind == "f"


def f(*shape, lo=-2.0, hi=2.0):
    return Arg("f", shape, lo, hi)


def pos(*shape):  # away from 0, for log, sqrt, division, pow's base
    return Arg("f", shape, 0.5, 2.0)


def c(*shape, lo=-2.0, hi=2.0):
    return Arg("c", shape, lo, hi)


def idx(*shape, high=3):
    return Arg("i", shape, high=high)


def mask(*shape):
    return Arg("b", shape)


def ints(*shape):
    return Arg("r", shape)


def special(*shape):
    return Arg("s", shape)


@dataclass
class Case:
    name: str
    fn: object
    args: list
    grad: bool = True  # False: the op has no gradient (its float inputs do not require one)


CASES: dict[str, Case] = {}


def case(name, fn, args, **kw):
    assert name not in CASES, f"duplicate parity case {name!r}"
    CASES[name] = Case(name, fn, list(args), **kw)


# ---- elementwise -------------------------------------------------------------------------------
for _n in ["abs", "absolute", "cos", "erf", "exp", "expm1", "neg", "negative", "relu", "sigmoid",
           "sign", "sin", "square", "tanh", "silu", "gelu", "elu", "leaky_relu", "softplus"]:
    case(_n, (lambda fn: lambda x: fn(x))(getattr(ops, _n)), [f(3, 4)])
for _n in ["log", "log2", "log10", "log1p", "sqrt", "rsqrt", "reciprocal"]:
    case(_n, (lambda fn: lambda x: fn(x))(getattr(ops, _n)), [pos(3, 4)])
case("tan", ops.tan, [f(3, 4, lo=-1.2, hi=1.2)])
case("gelu[tanh]", lambda x: ops.gelu(x, approximate="tanh"), [f(3, 4)])
case("elu[alpha]", lambda x: ops.elu(x, alpha=0.7), [f(3, 4)])
case("leaky_relu[slope]", lambda x: ops.leaky_relu(x, 0.2), [f(3, 4)])
case("softplus[beta]", lambda x: ops.softplus(x, beta=2.0, threshold=3.0), [f(3, 4)])
for _n in ["add", "sub", "subtract", "mul", "multiply", "maximum", "minimum", "fmax", "fmin"]:
    case(_n, (lambda fn: lambda x, y: fn(x, y))(getattr(ops, _n)), [f(3, 4), f(4)])
for _n in ["div", "divide", "true_divide"]:
    case(_n, (lambda fn: lambda x, y: fn(x, y))(getattr(ops, _n)), [f(3, 4), pos(3, 1)])
case("add[alpha]", lambda x, y: ops.add(x, y, alpha=-1.5), [f(3, 4), f(3, 4)])
case("rsub", lambda x, y: ops.rsub(x, y, alpha=2), [f(3, 4), f(3, 4)])
case("div[floor]", lambda x, y: ops.div(x, y, rounding_mode="floor"), [f(3, 4), pos(3, 4)],
     grad=False)
case("floor_divide", ops.floor_divide, [f(3, 4), pos(3, 4)], grad=False)
case("remainder", ops.remainder, [f(3, 4), pos(3, 4)])
case("pow", ops.pow, [pos(3, 4), f(3, 4)])
case("pow[scalar]", lambda x: ops.pow(x, 3), [f(3, 4)])
case("lerp", ops.lerp, [f(3, 4), f(3, 4), f(3, 4, lo=0.0, hi=1.0)])
for _n in ["clamp", "clip"]:
    case(_n, (lambda fn: lambda x: fn(x, -0.5, 0.7))(getattr(ops, _n)), [f(3, 4)])
case("clamp[tensor]", lambda x, lo, hi: ops.clamp(x, lo, hi),
     [f(3, 4), f(3, 4, lo=-2, hi=-0.5), f(3, 4, lo=0.5, hi=2)])
case("clamp_min", lambda x: ops.clamp_min(x, -0.3), [f(3, 4)])
case("clamp_max", lambda x: ops.clamp_max(x, 0.4), [f(3, 4)])
case("where", lambda m, x, y: ops.where(m, x, y), [mask(3, 4), f(3, 4), f(4)])
case("where[cond]", lambda m: ops.where(m)[0], [mask(3, 4)])

# comparisons and logic (no gradients)
for _n in ["eq", "ne", "not_equal", "lt", "less", "le", "less_equal", "gt", "greater", "ge",
           "greater_equal"]:
    case(_n, (lambda fn: lambda x, y: fn(x, y))(getattr(ops, _n)), [ints(3, 4), ints(3, 4)])
case("isclose", lambda x, y: ops.isclose(x, y, atol=0.5), [f(3, 4), f(3, 4)], grad=False)
case("allclose", lambda x: ops.allclose(x, x + 1e-9), [f(3, 4)], grad=False)
case("equal", lambda x, y: ops.equal(x, x) and not ops.equal(x, y), [f(3), f(3)], grad=False)
case("isfinite", ops.isfinite, [special(3, 4)])
case("isinf", ops.isinf, [special(3, 4)])
case("isnan", ops.isnan, [special(3, 4)])
for _n in ["logical_and", "logical_or", "logical_xor"]:
    case(_n, (lambda fn: lambda a, b: fn(a, b))(getattr(ops, _n)), [mask(3, 4), mask(3, 4)])
case("logical_not", ops.logical_not, [mask(3, 4)])
for _n in ["bitwise_and", "bitwise_or", "bitwise_xor"]:
    case(_n, (lambda fn: lambda a, b: fn(a, b))(getattr(ops, _n)),
         [idx(3, 4, high=16), idx(3, 4, high=16)])
case("bitwise_not", ops.bitwise_not, [idx(3, 4, high=16)])

# ---- reductions --------------------------------------------------------------------------------
case("sum", lambda x: ops.sum(x), [f(5, 6)])
case("sum[dim]", lambda x: ops.sum(x, dim=(0, 2), keepdim=True), [f(3, 4, 5)])
case("mean", lambda x: ops.mean(x, 1), [f(5, 6)])
case("prod", lambda x: ops.prod(x, 1), [f(4, 5)])
case("prod[all]", lambda x: ops.prod(x), [pos(3, 3)])
case("amax", lambda x: ops.amax(x, 1), [f(4, 5)])
case("amin", lambda x: ops.amin(x, (0, 1)), [f(3, 4, 2)])
case("max", lambda x: ops.max(x), [f(4, 5)])
case("max[dim]", lambda x: tuple(ops.max(x, 1)), [f(4, 5)])
case("max[other]", lambda x, y: ops.max(x, other=y), [f(4, 5), f(4, 5)])
case("min", lambda x: ops.min(x), [f(4, 5)])
case("min[dim]", lambda x: tuple(ops.min(x, 0, keepdim=True)), [f(4, 5)])
case("argmax", lambda x: ops.argmax(x, 1), [f(4, 5)], grad=False)
case("argmin", lambda x: ops.argmin(x), [f(4, 5)], grad=False)
case("all", lambda m: ops.all(m, 1), [mask(4, 5)])
case("any", lambda m: ops.any(m), [mask(4, 5)])
case("count_nonzero", lambda x: ops.count_nonzero(x, 0), [ints(4, 5)])
case("cumsum", lambda x: ops.cumsum(x, 1), [f(4, 5)])
case("logsumexp", lambda x: ops.logsumexp(x, 1), [f(4, 5)])
case("softmax", lambda x: ops.softmax(x, -1), [f(4, 5)])
case("log_softmax", lambda x: ops.log_softmax(x, 0), [f(4, 5)])
case("norm", lambda x: ops.norm(x), [f(4, 5)])
case("norm[p1,dim]", lambda x: ops.norm(x, 1, dim=1), [f(4, 5)])
case("std", lambda x: ops.std(x, 1), [f(4, 5)])
case("var", lambda x: ops.var(x, correction=0), [f(4, 5)])
case("std_mean", lambda x: tuple(ops.std_mean(x, 0)), [f(4, 5)])
case("var_mean", lambda x: tuple(ops.var_mean(x, 1, keepdim=True)), [f(4, 5)])

# ---- linear algebra ----------------------------------------------------------------------------
case("matmul", ops.matmul, [f(2, 3, 4), f(4, 5)])
case("matmul[vec]", ops.matmul, [f(4), f(3, 4, 2)])
case("mm", ops.mm, [f(3, 4), f(4, 5)])
case("bmm", ops.bmm, [f(2, 3, 4), f(2, 4, 5)])
case("mv", ops.mv, [f(3, 4), f(4)])
case("dot", ops.dot, [f(6), f(6)])
case("vdot", ops.vdot, [f(6), f(6)])
case("inner", ops.inner, [f(4), f(4)])  # gpugrad's inner takes 1-D tensors only
case("outer", ops.outer, [f(3), f(4)])
case("ger", ops.ger, [f(3), f(4)])

# ---- shape -------------------------------------------------------------------------------------
case("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)), [f(3, 1)])
case("expand", lambda x: ops.expand(x, 2, -1, 4), [f(3, 1)])
case("expand_as", ops.expand_as, [f(1, 4), c(3, 4)])
case("flatten", lambda x: ops.flatten(x, 1), [f(2, 3, 4)])
case("unflatten", lambda x: ops.unflatten(x, 1, (2, 3)), [f(4, 6)])
case("flip", lambda x: ops.flip(x, (0, 2)), [f(2, 3, 4)])
case("permute", lambda x: ops.permute(x, 2, 0, 1), [f(2, 3, 4)])
case("reshape", lambda x: ops.reshape(x, 4, -1), [f(2, 3, 4)])
case("reshape_as", ops.reshape_as, [f(2, 6), c(3, 4)])
case("view", lambda x: ops.view(x, 6, 4), [f(2, 3, 4)])
case("view_as", ops.view_as, [f(2, 6), c(3, 4)])
case("squeeze", lambda x: ops.squeeze(x, 1), [f(3, 1, 4)])
case("unsqueeze", lambda x: ops.unsqueeze(x, -1), [f(3, 4)])
case("swapaxes", lambda x: ops.swapaxes(x, 0, 2), [f(2, 3, 4)])
case("swapdims", lambda x: ops.swapdims(x, 0, 1), [f(2, 3, 4)])
case("transpose", lambda x: ops.transpose(x, 1, 2), [f(2, 3, 4)])
case("t", ops.t, [f(3, 4)])
case("movedim", lambda x: ops.movedim(x, 0, -1), [f(2, 3, 4)])
case("moveaxis", lambda x: ops.moveaxis(x, (0, 1), (2, 0)), [f(2, 3, 4)])
case("narrow", lambda x: ops.narrow(x, 1, 1, 2), [f(3, 4)])
case("repeat", lambda x: ops.repeat(x, 2, 1, 3), [f(3, 4)])
case("tile", lambda x: ops.tile(x, (2, 2)), [f(3, 4)])
case("roll", lambda x: ops.roll(x, (1, -2), (0, 1)), [f(3, 4)])
case("select", lambda x: ops.select(x, 1, 2), [f(3, 4)])
case("sum_to_size", lambda x: ops.sum_to_size(x, 1, 4), [f(3, 4)])
case("contiguous", lambda x: ops.contiguous(ops.t(x)), [f(3, 4)])
case("clone", ops.clone, [f(3, 4)])
case("to_copy", lambda x: ops.to_copy(x, x.device, gpugrad.float64, True), [f(3, 4)])
case("cat", lambda x, y: ops.cat([x, y], 1), [f(3, 2), f(3, 4)])
case("concat", lambda x, y: ops.concat([x, y]), [f(2, 4), f(3, 4)])
case("concatenate", lambda x, y: ops.concatenate([x, y], axis=0), [f(2, 4), f(3, 4)])
case("stack", lambda x, y: ops.stack([x, y], 1), [f(3, 4), f(3, 4)])
case("split", lambda x: ops.split(x, [1, 3], 1), [f(3, 4)])
case("chunk", lambda x: ops.chunk(x, 2, 0), [f(4, 3)])
case("unbind", lambda x: ops.unbind(x, 1), [f(3, 4)])
case("atleast_1d", lambda x: ops.atleast_1d(x), [f()])
case("atleast_2d", lambda x, y: ops.atleast_2d(x, y), [f(), f(3)])
case("atleast_3d", lambda x, y: ops.atleast_3d(x, y), [f(3), f(2, 3)])
case("hstack", lambda x, y: ops.hstack([x, y]), [f(3, 2), f(3, 4)])
case("vstack", lambda x, y: ops.vstack([x, y]), [f(4), f(2, 4)])
case("row_stack", lambda x, y: ops.row_stack([x, y]), [f(2, 4), f(1, 4)])
case("dstack", lambda x, y: ops.dstack([x, y]), [f(3, 2), f(3, 2)])
case("column_stack", lambda x, y: ops.column_stack([x, y]), [f(3), f(3, 2)])
case("tensor_split", lambda x: ops.tensor_split(x, 3, 1), [f(3, 5)])
case("tensor_split[indices]", lambda x: ops.tensor_split(x, [1, 3]), [f(4, 2)])
case("hsplit", lambda x: ops.hsplit(x, [1, 3]), [f(3, 4)])
case("vsplit", lambda x: ops.vsplit(x, 2), [f(4, 3)])
case("dsplit", lambda x: ops.dsplit(x, [2]), [f(2, 3, 4)])
case("diagonal", lambda x: ops.diagonal(x, 1), [f(4, 5)])
case("trace", ops.trace, [f(4, 5)])
case("tril", lambda x: ops.tril(x, -1), [f(4, 5)])
case("triu", lambda x: ops.triu(x, 1), [f(4, 5)])

# ---- indexing and in-place ---------------------------------------------------------------------
case("getitem", lambda x, i: ops.getitem(x, (slice(1, None), i)), [f(3, 4), idx(5, high=4)])
case("getitem[mask]", lambda x, m: ops.getitem(x, m), [f(3, 4), mask(3, 4)])
case("setitem", lambda x, v: _setitem(x, (slice(None), slice(1, 3)), v), [f(3, 4), f(3, 2)])
case("gather", lambda x, i: ops.gather(x, 1, i), [f(3, 4), idx(3, 5, high=4)])
case("index_add", lambda x, i, s: ops.index_add(x, 0, i, s, alpha=2),
     [f(3, 4), idx(5, high=3), f(5, 4)])
case("index_fill", lambda x, i: ops.index_fill(x, 1, i, -1.0), [f(3, 4), idx(2, high=4)])
case("index_copy", lambda x, s: ops.index_copy(x, 0, gpugrad.tensor([2, 0], device=x.device), s),
     [f(3, 4), f(2, 4)])
case("masked_scatter", lambda x, m, s: ops.masked_scatter(x, m, s), [f(3, 4), mask(3, 4),
                                                                    f(12)])
case("index_put", lambda x, i, v: ops.index_put(x, (i,), v, accumulate=True),
     [f(4, 3), idx(5, high=4), f(5, 3)])
case("index_put_", lambda x, i, v: ops.index_put_(x.clone(), (i,), v),
     [f(4, 3), Arg("i", (1,), high=4), f(1, 3)])
case("index_select", lambda x, i: ops.index_select(x, 0, i), [f(3, 4), idx(5, high=3)])
case("masked_fill", lambda x, m: ops.masked_fill(x, m, 0.5), [f(3, 4), mask(3, 4)])
case("masked_select", ops.masked_select, [f(3, 4), mask(3, 4)])
case("nonzero", lambda x: ops.nonzero(x), [ints(3, 4)])
case("argwhere", ops.argwhere, [ints(3, 4)])
case("scatter", lambda x, s: ops.scatter(x, 1, _perm_index(3, 4, x), s), [f(3, 4), f(3, 4)])
case("scatter[value]", lambda x, i: ops.scatter(x, 1, i, value=2.0), [f(3, 4), idx(3, 2, high=4)])
case("scatter_add", lambda x, i, s: ops.scatter_add(x, 0, i, s),
     [f(3, 4), idx(5, 4, high=3), f(5, 4)])
case("take", ops.take, [f(3, 4), idx(2, 3, high=12)])
case("copy_", lambda x, y: ops.copy_(x.clone(), y), [f(3, 4), f(4)])
case("fill_", lambda x: ops.fill_(x.clone(), 1.5) * x, [f(3, 4)])
case("zero_", lambda x: ops.zero_(x.clone()) + x, [f(3, 4)])


def _setitem(x, index, value):
    y = x.clone()
    ops.setitem(y, index, value)
    return y


def _perm_index(rows, cols, like):
    # scatter's gradient w.r.t. src is defined only without duplicate targets: a permutation.
    i = np.stack([np.roll(np.arange(cols), r) for r in range(rows)])
    return gpugrad.tensor(i, device=like.device)


# ---- nn.functional -----------------------------------------------------------------------------
def fcase(name, fn, args, **kw):
    case(f"F.{name}", fn, args, **kw)


fcase("relu", lambda x: F.relu(x), [f(3, 4)])
fcase("relu_", lambda x: F.relu_(x.clone()), [f(3, 4)])
fcase("relu6", lambda x: F.relu6(x * 4), [f(3, 4)])
fcase("leaky_relu", lambda x: F.leaky_relu(x, 0.1), [f(3, 4)])
fcase("elu", lambda x: F.elu(x), [f(3, 4)])
fcase("silu", lambda x: F.silu(x), [f(3, 4)])
fcase("softmin", lambda x: F.softmin(x, 1), [f(3, 4)])
fcase("hardtanh", lambda x: F.hardtanh(x, -0.5, 0.5), [f(3, 4)])
fcase("logsigmoid", F.logsigmoid, [f(3, 4)])
fcase("linear", F.linear, [f(2, 3, 4), f(5, 4), f(5)])
fcase("bilinear", F.bilinear, [f(3, 2), f(3, 4), f(5, 2, 4), f(5)])
fcase("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [f(2, 3, 9), f(4, 3, 3),
                                                                      f(4)])
fcase("conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1, dilation=2, groups=2),
      [f(2, 4, 6, 5), f(6, 2, 3, 3), f(6)])
fcase("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1),
      [f(2, 3, 4, 4), f(3, 2, 3, 3), f(2)])
fcase("unfold", lambda x: F.unfold(x, 2, stride=1), [f(2, 3, 4, 4)])
fcase("fold", lambda x: F.fold(x, (4, 5), 2), [f(2, 12, 12)])
fcase("max_pool2d", lambda x: F.max_pool2d(x, 2, padding=1), [f(2, 3, 5, 4)])
fcase("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [f(2, 3, 6, 5)])
fcase("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [f(2, 3, 5, 7)])
fcase("max_pool1d", lambda x: F.max_pool1d(x, 3, stride=2, padding=1), [f(2, 3, 7)])
fcase("avg_pool1d", lambda x: F.avg_pool1d(x, 3, stride=2, padding=1), [f(2, 3, 7)])
fcase("adaptive_avg_pool1d", lambda x: F.adaptive_avg_pool1d(x, 3), [f(2, 3, 7)])
fcase("prelu", F.prelu, [f(2, 3, 4), c(3, lo=0.05, hi=0.5)])
fcase("batch_norm", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
      [f(4, 3, 2, 2), f(3), f(3)])
fcase("layer_norm", lambda x, w, b: F.layer_norm(x, (4,), w, b), [f(2, 3, 4), f(4), f(4)])
fcase("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), [f(2, 4, 3), f(4), f(4)])
fcase("embedding", lambda i, w: F.embedding(i, w), [idx(2, 3, high=5), f(5, 4)])
fcase("one_hot", lambda i: F.one_hot(i, 5), [idx(2, 3, high=5)])
fcase("normalize", lambda x: F.normalize(x, dim=1), [f(3, 4)])
fcase("pad", lambda x: F.pad(x, (1, 2, 0, 1), value=0.5), [f(2, 3, 4)])
fcase("pad[reflect]", lambda x: F.pad(x, (2, 1), mode="reflect"), [f(2, 3, 4)])
fcase("pairwise_distance", F.pairwise_distance, [f(3, 4), f(3, 4)])
fcase("cosine_similarity", F.cosine_similarity, [f(3, 4), f(3, 4)])
fcase("mse_loss", F.mse_loss, [f(3, 4), c(3, 4)])
fcase("l1_loss", lambda x, y: F.l1_loss(x, y, reduction="sum"), [f(3, 4), c(3, 4)])
fcase("smooth_l1_loss", lambda x, y: F.smooth_l1_loss(x, y, beta=0.5), [f(3, 4), c(3, 4)])
fcase("huber_loss", lambda x, y: F.huber_loss(x, y, delta=0.7), [f(3, 4), c(3, 4)])
fcase("cross_entropy", F.cross_entropy, [f(4, 5), idx(4, high=5)])
fcase("cross_entropy[probs]", lambda x, p: F.cross_entropy(x, ops.softmax(p, 1),
                                                          label_smoothing=0.1),
      [f(4, 5), c(4, 5)])
fcase("nll_loss", lambda x, t: F.nll_loss(ops.log_softmax(x, 1), t), [f(4, 5), idx(4, high=5)])
fcase("binary_cross_entropy", lambda x, t: F.binary_cross_entropy(ops.sigmoid(x), t),
      [f(3, 4), c(3, 4, lo=0.0, hi=1.0)])
fcase("binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits,
      [f(3, 4), c(3, 4, lo=0.0, hi=1.0)])
fcase("kl_div", lambda x, t: F.kl_div(ops.log_softmax(x, 1), t, reduction="batchmean"),
      [f(3, 4), c(3, 4, lo=0.1, hi=1.0)])

# Public names that are not ops to compare, each with the reason.
EXCLUDED = {
    "Tensor": "the class, not an op",
    "Abs": "the Function behind abs (covered by 'abs')",
    "Exp": "the Function behind exp (covered by 'exp')",
    "Relu": "the Function behind relu (covered by 'relu')",
    "Sigmoid": "the Function behind sigmoid (covered by 'sigmoid')",
    "Tanh": "the Function behind tanh (covered by 'tanh')",
    "apply_inplace": "the machinery of in-place methods (covered by copy_/fill_/zero_/setitem)",
    "is_scalar": "a Python predicate on arguments, no tensor op",
    "fused": "a module: the fused backward Functions, exercised by the elementwise backwards",
    "F.dropout": "random: the devices draw different masks (and p=0 or eval is the identity)",
    "F.dropout1d": "random, as F.dropout",
    "F.dropout2d": "random, as F.dropout",
}


def _public_ops():
    """Every public op name of gpugrad.ops and gpugrad.nn.functional ('F.' prefixed); an
    nn.functional name that is the very function of gpugrad.ops counts as that op."""
    names = set(ops.__all__)
    for n in F.__all__:
        fn = getattr(F, n)
        if n in ops.__all__ and getattr(ops, n) is fn:
            continue
        names.add(f"F.{n}")
    return names


def test_table_is_complete():
    covered = {name.split("[")[0] for name in CASES}
    missing = sorted(_public_ops() - covered - set(EXCLUDED))
    assert not missing, (
        f"ops with no parity case: {missing}. Add each to CASES in tests/test_parity.py (a "
        "function of tensors and makers of its inputs), or to EXCLUDED with the reason.")
    stale = sorted((covered | set(EXCLUDED)) - _public_ops())
    assert not stale, f"parity cases/exclusions for names that are no public op: {stale}"
    assert not set(EXCLUDED) & covered, "an op is both in CASES and in EXCLUDED"


# ---- running a case ----------------------------------------------------------------------------
def _flat(out):
    if isinstance(out, (tuple, list)):
        return [o for x in out for o in _flat(x)]
    return [out]


def _host(v):
    if isinstance(v, gpugrad.Tensor):
        return v.detach().cpu().numpy()
    return v


def run(case: Case, device: str, dtype: str, order: int = 1):
    """(outputs, gradients, number of inputs that require grad) of ``case`` on ``device``,
    as host values. The inputs and the output gradients come from a generator seeded by the
    case's name, so that both devices see the same numbers.

    ``order=2`` also differentiates the gradients (``create_graph=True``) with respect to the
    inputs and to the output gradients, as gradgradcheck does, so that linear ops count too:
    the gradients are then the first ones followed by these second ones."""
    rng = np.random.default_rng(zlib.crc32(case.name.encode()))
    arrays = [a.make(rng, dtype) for a in case.args]
    inputs = [gpugrad.tensor(arr, device=device, requires_grad=case.grad and a.grad)
              for a, arr in zip(case.args, arrays)]
    outs = _flat(case.fn(*inputs))
    leaves = [t for t in inputs if t.requires_grad]
    diff = [o for o in outs if isinstance(o, gpugrad.Tensor) and o.requires_grad]
    grads = []
    if leaves and diff:
        upstream = [gpugrad.tensor(rng.standard_normal(tuple(o.shape)).astype(dtype),
                                   device=device).to(o.dtype).requires_grad_(order > 1)
                    for o in diff]
        grads = list(gpugrad.autograd.grad(diff, leaves, upstream, allow_unused=True,
                                           create_graph=order > 1))
        if order > 1:
            firsts = [g for g in grads if g is not None and g.requires_grad]
            if firsts:
                v = [gpugrad.tensor(rng.standard_normal(tuple(g.shape)).astype(dtype),
                                    device=device).to(g.dtype) for g in firsts]
                grads += gpugrad.autograd.grad(firsts, leaves + upstream, v, allow_unused=True)
    return [_host(o) for o in outs], [_host(g) for g in grads], len(leaves)


def _assert_close(actual, expected, rtol, what):
    if not isinstance(expected, np.ndarray):
        assert actual == expected, f"{what}: {actual!r} != {expected!r}"
        return
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, \
        f"{what}: {actual.shape}/{actual.dtype} vs {expected.shape}/{expected.dtype}"
    if expected.dtype.kind not in "fc":
        np.testing.assert_array_equal(actual, expected, err_msg=what)
        return
    scale = float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what,
                               equal_nan=True)


@pytest.mark.parametrize("name", sorted(CASES))
def test_table_runs_on_cpu(name):
    """Each entry runs, every float input that requires grad gets a finite gradient of its
    own shape (an op whose gradient is None or NaN here would make parity vacuous), and the
    double-backward pass runs too."""
    c = CASES[name]
    outs, grads, n_leaves = run(c, "cpu", "float64")
    assert outs, name
    if c.grad and n_leaves:
        assert len(grads) == n_leaves
        shapes = [a.shape for a in c.args if a.grad]
        for g, shape in zip(grads, shapes):
            assert g is not None and g.shape == shape and np.isfinite(g).all(), name
        _, grads2, _ = run(c, "cpu", "float64", order=2)
        assert len(grads2) > n_leaves, f"{name}: no second-order gradients"
        for g1, g2 in zip(grads, grads2):  # the first-order part, recorded this time
            np.testing.assert_allclose(g1, g2, rtol=1e-12, atol=1e-12)
        assert all(g is None or np.isfinite(g).all() for g in grads2), name


def _compare(c: Case, dtype, order, devices=("cpu", "cuda")):
    name = c.name
    cpu_out, cpu_grads, _ = run(c, devices[0], dtype, order)
    gpu_out, gpu_grads, _ = run(c, devices[1], dtype, order)
    assert len(cpu_out) == len(gpu_out) and len(cpu_grads) == len(gpu_grads)
    for k, (a, e) in enumerate(zip(gpu_out, cpu_out)):
        _assert_close(a, e, RTOL[dtype], f"{name} ({dtype}) output {k}")
    for k, (a, e) in enumerate(zip(gpu_grads, cpu_grads)):
        if e is None or a is None:
            assert a is None and e is None, f"{name} ({dtype}) gradient {k}: None on one device"
            continue
        _assert_close(a, e, RTOL[dtype], f"{name} ({dtype}, order {order}) gradient {k}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_parity(name, dtype):
    _compare(CASES[name], dtype, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c.grad))
def test_parity_double_backward(name, dtype):
    """Gradients of gradients: the fused backward kernels are Functions themselves, and
    their own backward runs on the device too."""
    _compare(CASES[name], dtype, 2)


@pytest.mark.parametrize("order", [1, 2])
def test_compare_catches_a_wrong_gradient(order):
    """The parity check, CPU against CPU, with a backward that is right on the first run and
    off by 1e-4 (relative) on the second: the comparison must see it."""
    runs = []

    class Square(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            ctx.run = len(runs)
            runs.append(ctx.run)
            return x * x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * x * (2.0 if ctx.run % 2 == 0 else 2.0 * (1 + 1e-4))

    good = Case("square", lambda x: Square.apply(x) + Square.apply(x), [f(3, 4)])
    _compare(good, "float32", order, devices=("cpu", "cpu"))  # runs 0+1, 2+3: equal sums
    runs.clear()
    bad = Case("square", lambda x: Square.apply(x), [f(3, 4)])
    with pytest.raises(AssertionError, match="gradient 0"):
        _compare(bad, "float32", order, devices=("cpu", "cpu"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_comparison_is_strict(dtype):
    """The parity check itself: it accepts rounding-level differences and catches more."""
    rtol = RTOL[dtype]
    e = np.array([1.0, -3.0, 1e-3, 0.0], dtype=dtype)
    _assert_close(e * (1 + rtol / 10), e, rtol, "close")
    _assert_close(e + rtol * 2, e, rtol, "within the tensor's scale")  # 3 * rtol allowed
    for bad in (e * (1 + 20 * rtol), e + 10 * rtol, e.astype(np.float16).astype(dtype) * 1.01):
        with pytest.raises(AssertionError):
            _assert_close(bad, e, rtol, "far")
    with pytest.raises(AssertionError):
        _assert_close(e.astype("float32" if dtype == "float64" else "float64"), e, rtol, "dtype")
    with pytest.raises(AssertionError):
        _assert_close(np.array([1, 2]), np.array([1, 3]), rtol, "ints are exact")
    with pytest.raises(AssertionError):
        _assert_close(True, False, rtol, "python values")
