"""Every op of ``gpugrad.ops``, declared once in a table and checked the same ways
(tinygrad's ``helper_test_op`` style).

A case is a name, a function ``fn(m, *inputs)`` written once against torch's API (``m`` is
``gpugrad`` or ``torch``; a separate ``torch_fn`` where the spellings differ) and its inputs:
a shape (random float64 values in the case's ``low``/``high`` range), ``R(shape, low, high,
signed)`` for another range, or a nested list of explicit values (ties, zeros, nan). Each case

- runs against PyTorch when it is installed: the forward values, dtypes and requires_grad of
  every output, and the gradients of ``sum(out * w)`` (random ``w``) w.r.t. every input;
- runs through ``gradcheck`` and ``gradgradcheck`` in float64 (no torch needed).

Then: dtype promotion over a grid of operand kinds, and the errors for bad inputs.
"""
from __future__ import annotations

import itertools
import math
import re
import zlib

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import GradcheckError, gradcheck, gradgradcheck
from helpers import assert_close, to_numpy, torch_or_skip


# ---- the table ------------------------------------------------------------------------------
class R:
    """Random values of ``shape`` in [low, high] (with a random sign when ``signed``)."""

    def __init__(self, shape, low, high, signed=False):
        self.shape, self.low, self.high, self.signed = tuple(shape), low, high, signed

    def sample(self, rng):
        v = rng.uniform(self.low, self.high, self.shape)
        return v * rng.choice([-1.0, 1.0], self.shape) if self.signed else v


class Op:
    """One case. ``grad``: compare gradients with torch (False where torch has none);
    ``gc`` / ``ggc``: run gradcheck / gradgradcheck (False at non-differentiable points
    such as ties, and for ops without a gradient)."""

    def __init__(self, name, fn, *inputs, torch_fn=None, low=-2.0, high=2.0, grad=True,
                 gc=True, ggc=True, marks=()):
        self.name, self.fn, self.torch_fn, self.inputs = name, fn, torch_fn or fn, inputs
        self.low, self.high = low, high
        self.grad, self.gc, self.ggc = grad, gc and grad is not None, ggc and gc
        self.marks = marks

    def arrays(self):
        rng = np.random.default_rng(zlib.crc32(self.name.encode()))
        out = []
        for spec in self.inputs:
            if isinstance(spec, R):
                out.append(spec.sample(rng))
            elif isinstance(spec, list):
                out.append(np.array(spec, dtype=np.float64))
            else:
                out.append(rng.uniform(self.low, self.high, spec))
        return out

    def tensors(self, device):
        return [gpugrad.tensor(a, dtype=gpugrad.float64, device=device, requires_grad=True)
                for a in self.arrays()]


def values_only(name, fn, *inputs, **kw):
    """An op without gradient (comparisons, argmax, ...): forward values and dtypes only."""
    return Op(name, fn, *inputs, grad=None, **kw)


S = (2, 3)
POS = R(S, 0.5, 2.0)            # log, sqrt, fractional powers
NZ = R(S, 0.5, 2.0, signed=True)  # divisors: away from zero, both signs
X3 = (2, 3, 2)


def nnf(name):
    """``m.nn.functional.<name>`` for either module."""
    return lambda m: getattr(m.nn.functional, name)


ELEMENTWISE = [
    Op("add", lambda m, x, y: m.add(x, y), S, S),
    Op("add_alpha", lambda m, x, y: m.add(x, y, alpha=2.5), S, S),
    Op("add_operator", lambda m, x, y: x + y, S, S),
    Op("sub", lambda m, x, y: x - y, S, S),
    Op("sub_alpha", lambda m, x, y: m.sub(x, y, alpha=-1.5), S, S),
    Op("sub_method", lambda m, x, y: x.sub(y), S, S),
    Op("subtract", lambda m, x, y: m.subtract(x, y, alpha=0.5), S, S),
    Op("rsub", lambda m, x, y: m.rsub(x, y, alpha=2), S, S),
    Op("mul", lambda m, x, y: x * y, S, S),
    Op("mul_fn", lambda m, x, y: m.mul(x, y), S, S),
    Op("multiply", lambda m, x, y: x.multiply(y), S, S),
    Op("mul_self", lambda m, x: x * x, S),
    Op("div", lambda m, x, y: x / y, S, NZ),
    Op("div_fn", lambda m, x, y: m.div(x, y), S, NZ),
    Op("true_divide", lambda m, x, y: m.true_divide(x, y), S, NZ),
    Op("divide", lambda m, x, y: m.divide(x, y), S, NZ),
    Op("divide_floor", lambda m, x, y: x.divide(y, rounding_mode="floor"), R(S, -4, 4), NZ),
    Op("div_floor", lambda m, x, y: m.div(x, y, rounding_mode="floor"), R(S, -4, 4), NZ),
    Op("div_trunc", lambda m, x, y: m.div(x, y, rounding_mode="trunc"), R(S, -4, 4), NZ),
    Op("div_trunc_scalar", lambda m, x: m.div(x, -0.7, rounding_mode="trunc"), S),
    # torch has no derivative for floor_divide / scalar % tensor; gpugrad's (zero / -floor)
    # is still checked numerically.
    Op("floordiv_operator", lambda m, x, y: x // y, R(S, -4, 4), NZ, grad=False),
    Op("floordiv_scalar", lambda m, x: x // 0.7, R(S, -4, 4), grad=False),
    Op("floor_divide", lambda m, x, y: m.floor_divide(x, y), R(S, -4, 4), NZ, grad=False),
    Op("remainder", lambda m, x, y: x % y, R(S, -4, 4), NZ),
    Op("remainder_fn", lambda m, x, y: m.remainder(x, y), R(S, -4, 4), NZ),
    Op("remainder_scalar", lambda m, x: x % 1.5, R(S, -4, 4)),
    Op("remainder_neg_scalar", lambda m, x: x % -1.5, R(S, -4, 4)),
    Op("rremainder", lambda m, x: 5.0 % x, NZ, grad=False),
    Op("neg", lambda m, x: -x, S),
    Op("neg_fn", lambda m, x: m.neg(x), S),
    Op("negative", lambda m, x: m.negative(x), S),
    Op("pos", lambda m, x: +x, S),
    # powers
    Op("pow_0", lambda m, x: x ** 0, S),
    Op("pow_1", lambda m, x: x ** 1, S),
    Op("pow_2", lambda m, x: x ** 2, S),
    Op("pow_3", lambda m, x: m.pow(x, 3), S),
    Op("pow_half", lambda m, x: x ** 0.5, POS),
    Op("pow_neg_1_5", lambda m, x: x ** -1.5, POS),
    Op("pow_float_2", lambda m, x: m.pow(x, 2.0), S),
    Op("rpow", lambda m, x: 2 ** x, S),
    Op("rpow_fn", lambda m, x: m.pow(0.5, x), S),
    Op("pow_tensor", lambda m, x, y: x ** y, POS, S),
    Op("pow_tensor_fn", lambda m, x, y: m.pow(x, y), POS, S),
    Op("pow_tensor_bcast", lambda m, x, y: x ** y, R((3, 1), 0.5, 2), (4,)),
    Op("square", lambda m, x: m.square(x), S),
    # unary math
    Op("exp", lambda m, x: m.exp(x), S),
    Op("exp_method", lambda m, x: x.exp(), S),
    Op("log", lambda m, x: m.log(x), POS),
    Op("log2", lambda m, x: m.log2(x), POS),
    Op("log10", lambda m, x: x.log10(), POS),
    Op("log1p", lambda m, x: m.log1p(x), R(S, -0.5, 2)),
    Op("expm1", lambda m, x: m.expm1(x), S),
    Op("sqrt", lambda m, x: m.sqrt(x), POS),
    Op("rsqrt", lambda m, x: m.rsqrt(x), POS),
    Op("abs", lambda m, x: m.abs(x), S),
    Op("abs_operator", lambda m, x: abs(x), S),
    Op("absolute", lambda m, x: m.absolute(x), S),
    Op("sign", lambda m, x: m.sign(x), S),
    Op("sin", lambda m, x: m.sin(x), S),
    Op("cos", lambda m, x: m.cos(x), S),
    Op("tan", lambda m, x: m.tan(x), R(S, -1.2, 1.2)),
    Op("tanh", lambda m, x: m.tanh(x), S),
    Op("sigmoid", lambda m, x: m.sigmoid(x), R(S, -6, 6)),
    Op("relu", lambda m, x: m.relu(x), S),
    Op("relu_functional", lambda m, x: nnf("relu")(m)(x), S),
    Op("erf", lambda m, x: m.erf(x), S),
    Op("reciprocal", lambda m, x: m.reciprocal(x), NZ),
    # activations with parameters
    Op("leaky_relu", lambda m, x: nnf("leaky_relu")(m)(x), S),
    Op("leaky_relu_slope", lambda m, x: nnf("leaky_relu")(m)(x, 0.2), S),
    Op("elu", lambda m, x: nnf("elu")(m)(x), S),
    Op("elu_alpha", lambda m, x: nnf("elu")(m)(x, alpha=0.5), S),
    Op("gelu", lambda m, x: nnf("gelu")(m)(x), R(S, -3, 3)),
    Op("gelu_tanh", lambda m, x: nnf("gelu")(m)(x, approximate="tanh"), R(S, -3, 3)),
    Op("silu", lambda m, x: nnf("silu")(m)(x), R(S, -4, 4)),
    Op("softplus", lambda m, x: nnf("softplus")(m)(x), R(S, -4, 4)),
    Op("softplus_beta_threshold", lambda m, x: nnf("softplus")(m)(x, beta=2, threshold=3),
       R(S, -3, 3)),
    # clamp and friends
    Op("clamp_min", lambda m, x: m.clamp(x, min=-0.5), S),
    Op("clamp_max", lambda m, x: m.clamp(x, max=0.5), S),
    Op("clamp_both", lambda m, x: m.clamp(x, -0.5, 0.5), S),
    Op("clip", lambda m, x: m.clip(x, -1.0, 0.3), S),
    Op("clamp_int_bounds", lambda m, x: x.clamp(-1, 1), S),
    Op("clamp_min_method", lambda m, x: x.clamp_min(0.2), S),
    Op("clamp_max_method", lambda m, x: x.clamp_max(0.2), S),
    Op("clamp_tensor_bounds", lambda m, x, lo, hi: m.clamp(x, min=lo, max=hi), S,
       R(S, -1, 0), R(S, 0, 1)),
    Op("clamp_tensor_min", lambda m, x, lo: m.clamp(x, min=lo), S, R((3,), -1, 1)),
    Op("clamp_tensor_max", lambda m, x, hi: x.clamp(max=hi), S, R((3,), -1, 1)),
    # maximum / minimum / where / lerp
    Op("maximum", lambda m, x, y: m.maximum(x, y), S, S),
    Op("minimum", lambda m, x, y: m.minimum(x, y), S, S),
    Op("max_binary", lambda m, x, y: m.max(x, y), S, S),
    Op("min_binary", lambda m, x, y: m.min(x, y), S, S),
    Op("fmax", lambda m, x, y: m.fmax(x, y), S, S),
    Op("fmin", lambda m, x, y: m.fmin(x, y), S, S),
    # ties share the gradient equally (also what central differences see); a tie is a kink,
    # so there is no second derivative to check
    Op("maximum_ties", lambda m, x, y: m.maximum(x, y), [[1., 2., -3.], [0.5, 0., 4.]],
       [[1., -2., -3.], [0.5, 1., 4.]], ggc=False),
    Op("minimum_ties", lambda m, x, y: m.minimum(x, y), [[1., 2., -3.], [0.5, 0., 4.]],
       [[1., -2., -3.], [0.5, 1., 4.]], ggc=False),
    Op("where", lambda m, x, y: m.where(x > 0, x, y), S, S),
    Op("where_scalar", lambda m, x: m.where(x > 0, x, 0.0), S),
    Op("where_bcast", lambda m, x, y: m.where(y > 0, x, y), S, (3,)),
    Op("where_method", lambda m, x, y: x.where(x < y, y), S, S),
    Op("lerp_scalar", lambda m, x, y: m.lerp(x, y, 0.3), S, S),
    Op("lerp_tensor", lambda m, x, y, w: m.lerp(x, y, w), S, S, R(S, 0, 1)),
    Op("lerp_method", lambda m, x, y: x.lerp(y, 0.75), S, S),
]

BROADCAST = [
    Op("add_bcast", lambda m, x, y: x + y, (3, 1, 4), (2, 4)),
    Op("sub_bcast", lambda m, x, y: x - y, (2, 4), (3, 1, 4)),
    Op("mul_bcast", lambda m, x, y: x * y, (3, 1, 4), (2, 1)),
    Op("div_bcast", lambda m, x, y: x / y, (3, 1, 4), R((2, 4), 0.5, 2, signed=True)),
    Op("maximum_bcast", lambda m, x, y: m.maximum(x, y), (3, 1), (4,)),
    Op("remainder_bcast", lambda m, x, y: x % y, R((3, 1, 4), -4, 4), R((4,), .5, 2)),
    Op("add_0d", lambda m, x, y: x + y, S, ()),
    Op("mul_0d_left", lambda m, x, y: x * y, (), S),
    Op("div_0d", lambda m, x, y: x / y, S, R((), 0.5, 2)),
    Op("pow_0d", lambda m, x, y: x ** y, POS, ()),
    Op("mul_0d_0d", lambda m, x, y: x * y, (), ()),
    Op("unary_0d", lambda m, x: m.exp(x) + m.sin(x), ()),
    Op("scalar_add", lambda m, x: x + 2.5, S),
    Op("scalar_radd", lambda m, x: 2.5 + x, S),
    Op("scalar_sub", lambda m, x: x - 2, S),
    Op("scalar_rsub", lambda m, x: 2 - x, S),
    Op("scalar_mul", lambda m, x: x * 3, S),
    Op("scalar_rmul", lambda m, x: 3 * x, S),
    Op("scalar_div", lambda m, x: x / 2, S),
    Op("scalar_rdiv", lambda m, x: 2 / x, NZ),
    Op("scalar_rpow", lambda m, x: 2 ** x, S),
    Op("scalar_pow", lambda m, x: x ** 2, S),
    Op("scalar_bool", lambda m, x: x * True + False, S),
]

_TIES = [[1., 3., 3., -1.], [2., 0., 2., -5.], [-1., -1., 4., 4.]]
_ZEROS = [[1.5, 0., 2., -1.], [0., 0., 3., 0.5], [1., 2., -0.5, 1.5]]  # one, two, no zeros

REDUCTIONS = [
    Op("sum", lambda m, x: m.sum(x), X3),
    Op("sum_dim", lambda m, x: x.sum(1), X3),
    Op("sum_neg_dim", lambda m, x: x.sum(dim=-1), X3),
    Op("sum_tuple", lambda m, x: x.sum((0, 2)), X3),
    Op("sum_keepdim", lambda m, x: x.sum((0, -1), keepdim=True), X3),
    Op("sum_0d", lambda m, x: x.sum(), ()),
    Op("mean", lambda m, x: m.mean(x), X3),
    Op("mean_dim", lambda m, x: x.mean(1), X3),
    Op("mean_neg_dim_keepdim", lambda m, x: x.mean(-2, keepdim=True), X3),
    Op("mean_tuple", lambda m, x: x.mean((0, 2)), X3),
    Op("prod", lambda m, x: m.prod(x), S),
    Op("prod_dim", lambda m, x: x.prod(1), S),
    Op("prod_neg_dim_keepdim", lambda m, x: x.prod(-2, keepdim=True), S),
    # a tuple of dims is a gpugrad extension: torch reduces one dim at a time
    Op("prod_tuple", lambda m, x: x.prod((0, 2)), X3,
       torch_fn=lambda m, x: x.prod(2).prod(0)),
    Op("prod_zeros_dim", lambda m, x: x.prod(1), _ZEROS),
    Op("prod_zeros_dim0", lambda m, x: x.prod(0, keepdim=True), _ZEROS),
    Op("prod_one_zero", lambda m, x: x.prod(), [[1.5, 0., 2.], [-1., 0.5, 2.]]),
    Op("prod_two_zeros", lambda m, x: x.prod(), [[1.5, 0., 2.], [-1., 0., 2.]]),
    Op("max", lambda m, x: m.max(x), S),
    Op("min", lambda m, x: x.min(), S),
    Op("max_ties", lambda m, x: x.max(), [[1., 3., 3.], [2., 0., 2.]], ggc=False),
    Op("min_ties", lambda m, x: x.min(), [[1., 0., 3.], [2., 0., 2.]], ggc=False),
    Op("max_dim", lambda m, x: m.max(x, 1), X3),
    Op("max_dim_keepdim", lambda m, x: x.max(dim=-1, keepdim=True), X3),
    Op("min_dim", lambda m, x: m.min(x, dim=0), X3),
    Op("min_dim_keepdim", lambda m, x: x.min(2, keepdim=True), X3),
    # with ties the whole gradient goes to the returned (first) index: torch's rule; central
    # differences see a kink there, so no gradcheck
    Op("max_dim_ties", lambda m, x: x.max(1), _TIES, gc=False),
    Op("min_dim_ties", lambda m, x: x.min(1), _TIES, gc=False),
    Op("amax", lambda m, x: m.amax(x), X3),
    Op("amax_dim", lambda m, x: x.amax(1), X3),
    Op("amax_tuple_keepdim", lambda m, x: x.amax((0, -1), keepdim=True), X3),
    Op("amin", lambda m, x: m.amin(x, dim=-1), X3),
    Op("amin_tuple", lambda m, x: x.amin((1, 2)), X3),
    Op("amax_ties", lambda m, x: x.amax(1), _TIES, ggc=False),
    Op("amin_ties", lambda m, x: x.amin(1), _TIES, ggc=False),
    Op("amax_ties_all", lambda m, x: x.amax(), _TIES, ggc=False),
    values_only("argmax", lambda m, x: m.argmax(x), X3),
    values_only("argmax_dim", lambda m, x: x.argmax(1), X3),
    values_only("argmax_neg_dim_keepdim", lambda m, x: x.argmax(-1, keepdim=True), X3),
    values_only("argmin", lambda m, x: x.argmin(), X3),
    values_only("argmin_dim", lambda m, x: m.argmin(x, dim=0), X3),
    values_only("argmax_ties", lambda m, x: x.argmax(1), _TIES),
    Op("var", lambda m, x: m.var(x), X3),
    Op("var_dim", lambda m, x: x.var(1), X3),
    Op("var_correction0", lambda m, x: x.var(dim=-1, correction=0), X3),
    Op("var_correction2_tuple", lambda m, x: m.var(x, (0, 2), correction=2), X3),
    Op("var_unbiased_false", lambda m, x: x.var(1, unbiased=False, keepdim=True), X3),
    Op("std", lambda m, x: m.std(x), X3),
    Op("std_dim", lambda m, x: x.std(-1), X3),
    Op("std_correction0", lambda m, x: x.std(dim=0, correction=0), X3),
    Op("std_correction2_keepdim", lambda m, x: x.std(1, correction=2, keepdim=True), X3),
    Op("std_unbiased_false", lambda m, x: x.std((0, 1), unbiased=False), X3),
    Op("var_mean", lambda m, x: m.var_mean(x, 1), X3),
    Op("std_mean", lambda m, x: m.std_mean(x, dim=-1, keepdim=True), X3),
    Op("logsumexp", lambda m, x: m.logsumexp(x, 1), X3),
    Op("logsumexp_tuple_keepdim", lambda m, x: x.logsumexp((0, -1), keepdim=True), X3),
    Op("softmax", lambda m, x: m.softmax(x, dim=-1), X3),
    Op("softmax_dim0", lambda m, x: x.softmax(0), X3),
    Op("softmax_functional", lambda m, x: nnf("softmax")(m)(x, dim=1), X3),
    Op("log_softmax", lambda m, x: m.log_softmax(x, dim=1), X3),
    Op("log_softmax_neg_dim", lambda m, x: x.log_softmax(-1), X3),
    Op("log_softmax_functional", lambda m, x: nnf("log_softmax")(m)(x, dim=0), X3),
    Op("norm", lambda m, x: m.norm(x), X3),
    Op("norm_fro_dim", lambda m, x: x.norm("fro", dim=1), X3),
    Op("norm_2_dim", lambda m, x: x.norm(2, dim=-1, keepdim=True), X3),
    Op("norm_1", lambda m, x: x.norm(p=1), X3),
    Op("norm_1_dim", lambda m, x: x.norm(1, dim=(0, 2)), X3),
    Op("norm_3", lambda m, x: x.norm(p=3, dim=1), X3),
    Op("norm_inf", lambda m, x: x.norm(p=math.inf), X3),
    Op("norm_inf_dim", lambda m, x: x.norm(p=float("inf"), dim=2), X3),
    Op("norm_neg_inf_dim", lambda m, x: x.norm(p=-math.inf, dim=0), X3),
    Op("norm_0", lambda m, x: x.norm(p=0), X3),
    Op("norm_0_dim", lambda m, x: x.norm(p=0, dim=1), [[1., 0., 2.], [0., 0., 3.]]),
    Op("cumsum", lambda m, x: m.cumsum(x, 0), X3),
    Op("cumsum_neg_dim", lambda m, x: x.cumsum(dim=-1), X3),
    values_only("all", lambda m, x: m.all(x > -1), S),
    values_only("all_dim", lambda m, x: (x > 0).all(1), S),
    values_only("any", lambda m, x: m.any(x > 1), S),
    values_only("any_dim_keepdim", lambda m, x: (x > 1).any(0, keepdim=True), S),
    values_only("count_nonzero", lambda m, x: m.count_nonzero(x > 0), S),
    values_only("count_nonzero_dim", lambda m, x: (x > 0).count_nonzero(1), S),
]

_CMP_A = [[1., 2., 3., -1.], [0., 2., -5., 7.], [4., 4., 1., 0.]]
_CMP_B = [[1., 0., 3., -2.], [0., 5., -5., 7.], [-4., 4., 2., 1.]]
_SPECIAL = [[1., math.inf, -math.inf, math.nan], [0., -2., 1e308, -0.]]

COMPARISONS = [
    values_only("eq", lambda m, x, y: x == y, _CMP_A, _CMP_B),
    values_only("ne", lambda m, x, y: x != y, _CMP_A, _CMP_B),
    values_only("lt", lambda m, x, y: x < y, _CMP_A, _CMP_B),
    values_only("le", lambda m, x, y: x <= y, _CMP_A, _CMP_B),
    values_only("gt", lambda m, x, y: x > y, _CMP_A, _CMP_B),
    values_only("ge", lambda m, x, y: x >= y, _CMP_A, _CMP_B),
    values_only("eq_fn", lambda m, x, y: m.eq(x, y), _CMP_A, _CMP_B),
    values_only("ne_fn", lambda m, x, y: m.ne(x, y), _CMP_A, _CMP_B),
    values_only("lt_fn", lambda m, x, y: m.lt(x, y), _CMP_A, _CMP_B),
    values_only("le_method", lambda m, x, y: x.le(y), _CMP_A, _CMP_B),
    values_only("gt_method", lambda m, x, y: x.gt(y), _CMP_A, _CMP_B),
    values_only("ge_fn", lambda m, x, y: m.ge(x, y), _CMP_A, _CMP_B),
    values_only("greater_less", lambda m, x, y: m.greater(x, y) & m.less_equal(x, 2), _CMP_A,
                _CMP_B),
    values_only("greater_equal_less", lambda m, x, y: m.greater_equal(x, y) ^ x.less(0),
                _CMP_A, _CMP_B),
    values_only("not_equal", lambda m, x, y: m.not_equal(x, y) | x.not_equal(2), _CMP_A,
                _CMP_B),
    values_only("cmp_scalar", lambda m, x: x > 1.5, _CMP_A),
    values_only("cmp_rscalar", lambda m, x: 1 < x, _CMP_A),
    values_only("cmp_bcast", lambda m, x, y: x <= y, _CMP_A, [[0.], [2.], [4.]]),
    values_only("logical_and", lambda m, x, y: m.logical_and(x, y), _CMP_A, _CMP_B),
    values_only("logical_or", lambda m, x, y: m.logical_or(x > 0, y > 0), _CMP_A, _CMP_B),
    values_only("logical_xor", lambda m, x, y: x.logical_xor(y), _CMP_A, _CMP_B),
    values_only("logical_not", lambda m, x: m.logical_not(x), _CMP_A),
    values_only("bitwise_and", lambda m, x, y: (x > 0) & (y > 0), _CMP_A, _CMP_B),
    values_only("bitwise_or", lambda m, x, y: (x > 0) | (y > 0), _CMP_A, _CMP_B),
    values_only("bitwise_xor", lambda m, x, y: (x > 0) ^ (y > 0), _CMP_A, _CMP_B),
    values_only("bitwise_not", lambda m, x: ~(x > 0), _CMP_A),
    values_only("bitwise_int", lambda m, x, y: (x.long() & y.long()) | (x.long() ^ 3),
                _CMP_A, _CMP_B),
    values_only("invert_int", lambda m, x: ~x.long(), _CMP_A),
    values_only("isnan", lambda m, x: m.isnan(x), _SPECIAL),
    values_only("isinf", lambda m, x: x.isinf(), _SPECIAL),
    values_only("isfinite", lambda m, x: m.isfinite(x), _SPECIAL),
    values_only("isclose", lambda m, x, y: m.isclose(x, y + 1e-9), _CMP_A, _CMP_A),
    values_only("isclose_tol", lambda m, x, y: x.isclose(y, rtol=0.5, atol=1.0), _CMP_A, _CMP_B),
]

LINALG = [
    Op("matmul_1d_1d", lambda m, x, y: m.matmul(x, y), (3,), (3,)),
    Op("matmul_2d_1d", lambda m, x, y: m.matmul(x, y), (2, 3), (3,)),
    Op("matmul_1d_2d", lambda m, x, y: m.matmul(x, y), (3,), (3, 4)),
    Op("matmul_2d_2d", lambda m, x, y: m.matmul(x, y), (2, 3), (3, 4)),
    Op("matmul_3d_3d", lambda m, x, y: m.matmul(x, y), (2, 2, 3), (2, 3, 2)),
    Op("matmul_4d_3d_bcast", lambda m, x, y: m.matmul(x, y), (2, 1, 2, 3), (3, 3, 2)),
    Op("matmul_3d_2d", lambda m, x, y: m.matmul(x, y), (2, 2, 3), (3, 2)),
    Op("matmul_3d_1d", lambda m, x, y: m.matmul(x, y), (2, 2, 3), (3,)),
    Op("matmul_1d_3d", lambda m, x, y: m.matmul(x, y), (3,), (2, 3, 2)),
    Op("matmul_operator", lambda m, x, y: x @ y, (2, 3), (3, 2)),
    Op("matmul_operator_bcast", lambda m, x, y: x @ y, (2, 1, 3), (2, 3, 2)),
    Op("matmul_method", lambda m, x, y: x.matmul(y), (2, 3), (3,)),
    Op("dot", lambda m, x, y: m.dot(x, y), (4,), (4,)),
    Op("dot_method", lambda m, x, y: x.dot(y), (4,), (4,)),
    Op("inner", lambda m, x, y: m.inner(x, y), (4,), (4,)),
    Op("vdot", lambda m, x, y: m.vdot(x, y), (4,), (4,)),
    Op("mm", lambda m, x, y: m.mm(x, y), (2, 3), (3, 4)),
    Op("mm_method", lambda m, x, y: x.mm(y), (3, 3), (3, 2)),
    Op("bmm", lambda m, x, y: m.bmm(x, y), (2, 2, 3), (2, 3, 4)),
    Op("mv", lambda m, x, y: m.mv(x, y), (2, 3), (3,)),
    Op("outer", lambda m, x, y: m.outer(x, y), (3,), (4,)),
    Op("outer_method", lambda m, x, y: x.outer(y), (2,), (3,)),
    Op("ger", lambda m, x, y: m.ger(x, y), (2,), (3,)),
]

SHAPE = [
    Op("transpose", lambda m, x: m.transpose(x, 0, 2), X3),
    Op("transpose_neg", lambda m, x: x.transpose(-1, -2), X3),
    Op("swapaxes", lambda m, x: m.swapaxes(x, 0, 1), X3),
    Op("swapdims", lambda m, x: x.swapdims(1, 2), X3),
    Op("t", lambda m, x: m.t(x), S),
    Op("t_1d", lambda m, x: x.t(), (4,)),
    Op("permute", lambda m, x: m.permute(x, (2, 0, 1)), X3),
    Op("permute_method_neg", lambda m, x: x.permute(-1, 0, 1), X3),
    Op("mT", lambda m, x: x.mT, X3),
    Op("T", lambda m, x: x.T, S),
    Op("reshape", lambda m, x: m.reshape(x, (6, 2)), X3),
    Op("reshape_infer", lambda m, x: x.reshape(-1, 2), X3),
    Op("reshape_varargs", lambda m, x: x.reshape(2, 1, 6), X3),
    Op("view", lambda m, x: x.view(2, 6), X3),
    Op("view_infer", lambda m, x: x.view(-1), X3),
    Op("view_as", lambda m, x, y: x.view_as(y), S, (3, 2)),
    Op("reshape_as", lambda m, x, y: x.reshape_as(y) * y, S, (1, 6)),
    Op("flatten", lambda m, x: x.flatten(), X3),
    Op("flatten_range", lambda m, x: x.flatten(1), X3),
    Op("expand", lambda m, x: x.expand(3, 4), (3, 1)),
    Op("expand_new_dims", lambda m, x: m.Tensor.expand(x, 2, 3, 4), (3, 1)),
    Op("expand_minus_one", lambda m, x: x.expand(2, -1, 4), (3, 1)),
    Op("expand_as", lambda m, x, y: x.expand_as(y) * y, (1, 3), S),
    Op("broadcast_to", lambda m, x: m.broadcast_to(x, (2, 3, 4)), (4,)),
    Op("sum_to_size", lambda m, x: x.sum_to_size(2, 1), S),
    Op("squeeze", lambda m, x: m.squeeze(x), (3, 1, 4, 1)),
    Op("squeeze_dim", lambda m, x: x.squeeze(1), (3, 1, 4, 1)),
    Op("squeeze_neg_dim", lambda m, x: x.squeeze(-1), (3, 1, 4, 1)),
    Op("squeeze_tuple", lambda m, x: x.squeeze((1, 3)), (3, 1, 4, 1)),
    Op("squeeze_noop", lambda m, x: x.squeeze(0), (3, 1, 4, 1)),
    Op("unsqueeze", lambda m, x: m.unsqueeze(x, 0), S),
    Op("unsqueeze_mid", lambda m, x: x.unsqueeze(1), S),
    Op("unsqueeze_neg", lambda m, x: x.unsqueeze(-1), S),
    Op("flip", lambda m, x: m.flip(x, (0,)), X3),
    Op("flip_many", lambda m, x: x.flip((0, 2)), X3),
    Op("flip_neg", lambda m, x: x.flip(-1), X3),
    Op("getitem_int", lambda m, x: x[1], X3),
    Op("getitem_neg_int", lambda m, x: x[-1, 0], X3),
    Op("getitem_slice", lambda m, x: x[:, 1:3], X3),
    Op("getitem_step", lambda m, x: x[::2, :, 1::2], X3),
    Op("getitem_neg_slice", lambda m, x: x[-2:, :-1], X3),
    Op("getitem_none", lambda m, x: x[None, :, None], X3),
    Op("getitem_ellipsis", lambda m, x: x[..., 1], X3),
    Op("getitem_mixed", lambda m, x: x[1, ..., None, ::3], X3),
    Op("getitem_scalar", lambda m, x: x[1, 2, 1], X3),
    Op("getitem_0d", lambda m, x: x[...], ()),
    Op("getitem_twice", lambda m, x: x[0][1:] * x[1][:-1], X3),
    # copies and conversions
    Op("clone", lambda m, x: x.clone(), S),
    Op("clone_fn", lambda m, x: m.clone(x) * 2, S),
    Op("contiguous", lambda m, x: x.t().contiguous(), S),
    Op("to_float32", lambda m, x: x.to(m.float32), S, gc=False),
    Op("float_roundtrip", lambda m, x: x.float().double(), [[0.5, 1.0, -2.0]], gc=False),
    Op("to_same_dtype", lambda m, x: x.to(m.float64) * 1, S),
    values_only("to_int", lambda m, x: x.to(m.int64), R(S, -5, 5)),
    Op("double", lambda m, x: x.double(), S),
    # in-place on a clone (a non-leaf): the gradient goes through the history
    Op("inplace_add", lambda m, x, y: x.clone().add_(y, alpha=2), S, S),
    Op("inplace_mul_scalar", lambda m, x: x.clone().mul_(3), S),
    Op("inplace_iadd", lambda m, x, y: _iadd(x.clone(), y), S, S),
    Op("inplace_exp", lambda m, x: x.clone().exp_(), S),
    Op("inplace_clamp", lambda m, x: x.clone().clamp_(min=-0.5), S),
    Op("inplace_sin", lambda m, x: x.clone().sin_(), S),
    Op("inplace_mul_tensor", lambda m, x, y: x.clone().mul_(y), S, S),
    Op("inplace_pow_twice", lambda m, x: x.clone().pow_(2).pow_(3), S),
    Op("inplace_zero", lambda m, x: x.clone().zero_() + x, S),
    Op("inplace_fill", lambda m, x: x.clone().fill_(2.0) * x, S),
]


def _iadd(a, b):
    a += b
    return a


OPS = ELEMENTWISE + BROADCAST + REDUCTIONS + COMPARISONS + LINALG + SHAPE
DIFFERENTIABLE = [c for c in OPS if c.gc]


def _params(cases):
    return [pytest.param(c, id=c.name, marks=c.marks) for c in cases]


def test_case_names_are_unique():
    names = [c.name for c in OPS]
    assert len(names) == len(set(names)), [n for n in names if names.count(n) > 1]


# ---- the checks -------------------------------------------------------------------------------
def _outputs(out):
    return list(out) if isinstance(out, tuple) else [out]


def _torch_dtype_name(t):
    return str(t.dtype).removeprefix("torch.")


@pytest.mark.parametrize("case", _params(OPS))
def test_op_matches_torch(case, device):
    """Forward values, dtypes and requires_grad, and the gradients of sum(out * w)."""
    torch = torch_or_skip()
    xs = case.tensors(device)
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in case.arrays()]
    outs, touts = _outputs(case.fn(gpugrad, *xs)), _outputs(case.torch_fn(torch, *ts))
    assert len(outs) == len(touts)
    for k, (o, t) in enumerate(zip(outs, touts)):
        msg = f"{case.name}: output {k}"
        assert o.dtype.name == _torch_dtype_name(t), f"{msg}: dtype {o.dtype} vs {t.dtype}"
        assert o.requires_grad == t.requires_grad, f"{msg}: requires_grad"
        assert_close(o, t, rtol=1e-7, atol=1e-9, msg=msg)
    if not case.grad:
        return
    rng = np.random.default_rng(1)
    pairs = [(o, t, rng.uniform(-1, 1, tuple(o.shape))) for o, t in zip(outs, touts)
             if t.requires_grad]
    loss = sum((o * gpugrad.tensor(w, device=device)).sum() for o, _, w in pairs)
    tloss = sum((t * torch.tensor(w)).sum() for _, t, w in pairs)
    grads = gpugrad.autograd.grad(loss, xs, allow_unused=True)
    tgrads = torch.autograd.grad(tloss, ts, allow_unused=True)
    for k, (g, tg, x) in enumerate(zip(grads, tgrads, xs)):
        g = np.zeros(x.shape) if g is None else to_numpy(g)
        tg = np.zeros(x.shape) if tg is None else to_numpy(tg)
        assert_close(g, tg, rtol=1e-7, atol=1e-9, msg=f"{case.name}: gradient of input {k}")


@pytest.mark.parametrize("case", _params(DIFFERENTIABLE))
def test_gradcheck(case, device):
    xs = case.tensors(device)
    assert gradcheck(lambda *a: case.fn(gpugrad, *a), xs)


@pytest.mark.parametrize("case", _params([c for c in DIFFERENTIABLE if c.ggc]))
def test_gradgradcheck(case, device):
    xs = case.tensors(device)
    assert gradgradcheck(lambda *a: case.fn(gpugrad, *a), xs)


@pytest.mark.parametrize("case", _params([c for c in OPS if c.grad is None]))
def test_values_only_ops_have_no_gradient(case, device):
    for out in _outputs(case.fn(gpugrad, *case.tensors(device))):
        assert not out.requires_grad and out.grad_fn is None
        assert not out.dtype.is_floating_point


def test_equal_and_allclose_return_python_bools(device):
    x = gpugrad.tensor([1.0, 2.0, 3.0], device=device)
    assert gpugrad.equal(x, x.clone()) is True and x.equal(x * 1) is True
    assert gpugrad.equal(x, x + 1e-3) is False and gpugrad.equal(x, x[:2]) is False
    assert gpugrad.allclose(x, x + 1e-9) is True and x.allclose(x + 1e-3) is False
    assert gpugrad.allclose(x, x + 0.1, atol=0.2) is True


# ---- gradcheck itself -------------------------------------------------------------------------
class _WrongSquare(gpugrad.autograd.Function):
    """x**2 with a backward that is off by a factor of 2."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g * x


class _WrongSecondDerivative(gpugrad.autograd.Function):
    """x**3 whose first derivative is right but is computed outside the graph."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x * x

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return g * gpugrad.tensor(3 * to_numpy(x) ** 2, device=x.device)


def test_gradcheck_reports_the_failing_entry(device):
    x = gpugrad.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=gpugrad.float64, device=device,
                       requires_grad=True)
    y = gpugrad.ones(2, dtype=gpugrad.float64, device=device, requires_grad=True)
    with pytest.raises(GradcheckError) as info:
        gradcheck(lambda a, s, b: (a + b, _WrongSquare.apply(a) * s), (x, 3.0, y))
    msg = str(info.value)
    assert "output 1 with respect to input 0" in msg
    assert re.search(r"\(row 0, col 0\).*numerical (6\.0|5\.9999)\d* vs analytical 3\.0", msg)
    assert "numerical:\n" in msg and "analytical:\n" in msg  # small: both Jacobians printed
    assert not gradcheck(_WrongSquare.apply, (x,), raise_exception=False)
    with pytest.raises(GradcheckError, match="fast mode"):
        gradcheck(_WrongSquare.apply, (x,), fast_mode=True)
    assert gradcheck(lambda a: a * a, (x,), fast_mode=True)


def test_gradgradcheck_catches_a_wrong_second_derivative(device):
    x = gpugrad.tensor([0.5, -1.0, 2.0], dtype=gpugrad.float64, device=device,
                       requires_grad=True)
    assert gradcheck(_WrongSecondDerivative.apply, (x,))
    assert not gradgradcheck(_WrongSecondDerivative.apply, (x,), raise_exception=False)
    assert gradgradcheck(lambda a: a * a * a, (x,), gen_non_contig_grad_outputs=True)
    go = gpugrad.tensor([1.0, 2.0, 3.0], dtype=gpugrad.float64, device=device,
                        requires_grad=True)
    assert gradgradcheck(lambda a: a.exp(), (x,), (go,))


def test_gradcheck_warns_for_float32_and_needs_an_input_requiring_grad(device):
    x = gpugrad.tensor([0.5, 1.5], device=device, requires_grad=True)
    with pytest.warns(UserWarning, match="not a double precision"):
        assert gradcheck(lambda a: a * 2, (x,), eps=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="requires_grad=True"):
        gradcheck(lambda a: a * 2, (x.detach(),))


# ---- dtype promotion --------------------------------------------------------------------------
DTYPES = ["bool", "int32", "int64", "float16", "float32", "float64"]
PROMOTION_OPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "floor_divide": lambda a, b: a // b,
    "maximum": lambda a, b: a.maximum(b),  # tensors only, as in torch
    "eq": lambda a, b: a == b,
    "lt": lambda a, b: a < b,
}


def _operand(m, dtype, shape, device=None):
    """Values 1..3 (True for bool): exact in every dtype, and never a zero divisor."""
    vals = (np.arange(int(np.prod(shape))).reshape(shape) % 3 + 1).astype(np.float64)
    if m is gpugrad:
        return gpugrad.tensor(vals, device=device).to(getattr(gpugrad, dtype))
    return m.tensor(vals).to(getattr(m, dtype))


def _promotion_grid():
    """(left, right) operand kinds: dtype and shape of tensors, or Python scalars."""
    tensors = [(d, s) for d in DTYPES for s in ((2, 3), ())]
    scalars = [3, 2.5, True]
    for a, b in itertools.product(tensors, tensors):
        yield a, b
    for t, s in itertools.product(tensors, scalars):
        yield t, s
        yield s, t


@pytest.mark.parametrize("op", sorted(PROMOTION_OPS))
def test_type_promotion_matches_torch(op, device):
    torch = torch_or_skip()
    fn = PROMOTION_OPS[op]
    problems = []
    for a, b in _promotion_grid():
        def build(m, x, dev=None):
            return _operand(m, *x, device=dev) if isinstance(x, tuple) else x
        if op == "maximum" and not (isinstance(a, tuple) and isinstance(b, tuple)):
            continue
        try:
            expected = fn(build(torch, a), build(torch, b))
        except Exception:  # noqa: BLE001 - torch raises RuntimeError or NotImplementedError
            with pytest.raises((RuntimeError, TypeError)):
                fn(build(gpugrad, a, device), build(gpugrad, b, device))
            continue
        got = fn(build(gpugrad, a, device), build(gpugrad, b, device))
        if got.dtype.name != _torch_dtype_name(expected) or got.shape != expected.shape:
            problems.append(f"{a} {op} {b}: {got.dtype}{list(got.shape)} vs torch "
                            f"{expected.dtype}{list(expected.shape)}")
        elif not np.allclose(to_numpy(got).astype(np.float64),
                             to_numpy(expected).astype(np.float64), rtol=1e-3):
            problems.append(f"{a} {op} {b}: values {to_numpy(got)} vs {to_numpy(expected)}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("a, b, expected", [
    (("int32", (2, 3)), 2.5, "float32"),
    (("int32", (2, 3)), ("int64", ()), "int32"),
    (("int64", ()), ("int32", (2, 3)), "int32"),
    (("bool", (2, 3)), 1, "int64"),
    (("bool", (2, 3)), True, "bool"),
    (("float16", (2, 3)), ("float64", ()), "float16"),
    (("int64", (2, 3)), ("float16", ()), "float16"),
    (("float16", ()), ("float64", ()), "float64"),
    (("int32", (2, 3)), ("float32", (2, 3)), "float32"),
    (("float32", (2, 3)), 2, "float32"),
    (2.5, ("int64", (2, 3)), "float32"),
    (("bool", ()), ("int32", ()), "int32"),
])
def test_type_promotion_rules(a, b, expected, device):
    def build(x):
        return _operand(gpugrad, *x, device=device) if isinstance(x, tuple) else x
    assert (build(a) + build(b)).dtype.name == expected
    assert gpugrad.result_type(build(a), build(b)).name == expected


def test_mixed_dtype_gradients_come_back_in_each_input_dtype(device):
    x = gpugrad.tensor([1.0, 2.0], device=device, requires_grad=True)
    y = gpugrad.tensor([3.0, 4.0], dtype=gpugrad.float64, device=device, requires_grad=True)
    z = x * y
    assert z.dtype is gpugrad.float64
    z.sum().backward()
    assert x.grad.dtype is gpugrad.float32 and y.grad.dtype is gpugrad.float64
    assert_close(x.grad, np.array([3.0, 4.0], np.float32))
    assert_close(y.grad, np.array([1.0, 2.0]))


# ---- errors -----------------------------------------------------------------------------------
def test_add_shape_mismatch_names_the_shapes(device):
    x, y = gpugrad.ones(2, 3, device=device), gpugrad.ones(4, device=device)
    with pytest.raises(RuntimeError, match=r"add.*\(3\).*\(4\).*dimension 1.*\[2, 3\].*\[4\]"):
        x + y
    with pytest.raises(RuntimeError, match=r"mul.*\[2, 3\] and \[3, 2\]"):
        x * gpugrad.ones(3, 2, dtype=gpugrad.float64, device=device)


def test_matmul_shape_mismatch_names_the_shapes(device):
    a, b = gpugrad.ones(2, 3, device=device), gpugrad.ones(4, 5, device=device)
    with pytest.raises(RuntimeError, match=r"2x3 and 4x5"):
        a @ b
    with pytest.raises(RuntimeError, match=r"2x3 and 4x5"):
        gpugrad.mm(a, b)
    with pytest.raises(RuntimeError, match=r"\[2, 3, 4\].*\[5, 4, 2\]"):
        gpugrad.ones(2, 3, 4, device=device) @ gpugrad.ones(5, 4, 2, device=device)
    with pytest.raises(RuntimeError, match="at least 1D"):
        gpugrad.matmul(gpugrad.ones((), device=device), a)
    with pytest.raises(RuntimeError, match=r"\b1D tensors expected"):
        gpugrad.dot(a, a)


def test_matmul_mixed_dtypes(device):
    a = gpugrad.ones(2, 3, device=device)
    b = gpugrad.ones(3, 2, dtype=gpugrad.float64, device=device)
    with pytest.raises(RuntimeError, match=r"same dtype.*float32.*float64"):
        a @ b
    with pytest.raises(RuntimeError, match="same dtype"):
        gpugrad.bmm(a[None], b[None])
    with pytest.raises(RuntimeError, match="same dtype"):
        gpugrad.dot(a[0], b[:, 0])


def test_non_tensor_operand_type_error(device):
    x = gpugrad.ones(2, device=device)
    with pytest.raises(TypeError, match=r"add\(\).*'other'.*str"):
        gpugrad.add(x, "a")
    with pytest.raises(TypeError, match="unsupported operand"):
        x + "a"
    with pytest.raises(TypeError, match="unsupported operand"):
        None * x
    with pytest.raises(TypeError, match=r"matmul\(\).*'other'.*list"):
        gpugrad.matmul(x, [1.0, 2.0])
    with pytest.raises(TypeError, match=r"exp\(\).*'input'"):
        gpugrad.exp([1.0])


def test_mean_of_int_tensor(device):
    with pytest.raises(RuntimeError, match=r"mean\(\).*floating point.*int64"):
        gpugrad.tensor([1, 2, 3], device=device).mean()
    t = gpugrad.tensor([1, 2, 4], device=device)
    assert_close(t.mean(dtype=gpugrad.float64), np.array(7 / 3))


def test_softmax_without_dim(device):
    x = gpugrad.ones(2, 3, device=device)
    with pytest.raises(TypeError, match="dim"):
        gpugrad.softmax(x)
    with pytest.raises(TypeError, match="dim"):
        x.log_softmax()
    with pytest.raises(IndexError, match="Dimension out of range"):
        x.softmax(2)
