"""Fused backward Functions: the backward of each elementwise op is ONE kernel of ``kernels/``.

``TanhBackward.call(g, y)`` computes ``g * (1 - y*y)`` in one launch (``kernels.tanh_backward``)
instead of three. Each of these is itself a ``Function`` (as Chainer's ``TanhGrad`` is), so
that under ``create_graph=True`` the gradient is recorded and can be differentiated again:

- a gradient ``gx = kernel(gy, s, ...)`` is linear in ``gy``, so its own gradient w.r.t.
  ``gy`` is the same kernel applied to the incoming ``ggx`` (the fast path again);
- its gradient w.r.t. the saved tensor ``s`` (``x`` or ``y``) is ``ggx * gy * f''(s)``,
  written with tensor ops (so that third derivatives work too).

Without recording (an ordinary ``backward()``), ``call`` launches the kernel directly,
skipping ``Function.apply``: that is the eager hot path.
"""
from __future__ import annotations

import math

from .._kernels import kernels as K
from .._tensor import Tensor
from ..autograd import grad_mode
from ..autograd.function import Function
from ..autograd import _jvp_rules as _rules
from ._util import make

_state = grad_mode.state


class KernelFunction(Function):
    """A Function whose forward is one kernel of ``kernels/`` over its arguments (tensors,
    or numbers for the kernel's scalar inputs); subclasses name the ``kernel`` and write
    ``backward``. Tensor arguments are saved for backward, numbers kept in ``ctx.scalars``."""

    _builtin = True
    kernel = ""
    jvp = _rules.self_adjoint  # elementwise in every input: J v = backward(v)

    @classmethod
    def forward(cls, ctx, *args):
        out = getattr(K, cls.kernel)(*[a._data if isinstance(a, Tensor) else a for a in args])
        ctx.save_for_backward(*[a if isinstance(a, Tensor) else None for a in args])
        ctx.scalars = tuple(None if isinstance(a, Tensor) else a for a in args)
        return tuple(make(o) for o in out) if isinstance(out, tuple) else make(out)

    @classmethod
    def call(cls, *args):
        """``apply``, or, when nothing can be recorded (grad mode off), the kernel alone."""
        if _state.enabled:
            return cls.apply(*args)
        out = getattr(K, cls.kernel)(*[a._data if isinstance(a, Tensor) else a for a in args])
        return tuple(make(o) for o in out) if isinstance(out, tuple) else make(out)


def _linear(name, kernel, second=None, doc=""):
    """The Function of ``gx = kernel(gy, s, *numbers)``, linear in ``gy``.

    Its gradient w.r.t. ``gy`` is the same kernel on ``ggx``; w.r.t. ``s`` it is
    ``second(ggx, gy, s, *numbers)`` in tensor ops, or nothing (zero almost everywhere) when
    ``second`` is None.
    """

    def backward(ctx, ggx):
        gy, s = ctx.saved_tensors[:2]
        numbers = ctx.scalars[2:]
        need_gy, need_s = ctx.needs_input_grad[:2]
        return (cls.call(ggx, s, *numbers) if need_gy else None,
                second(ggx, gy, s, *numbers) if need_s and second is not None else None,
                *(None for _ in numbers))

    cls = type(name, (KernelFunction,), {"kernel": kernel, "backward": staticmethod(backward),
                                         "__doc__": doc, "__module__": __name__})
    return cls


def _where(cond, a, b):
    from .elementwise import where
    return where(cond, a, b)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_LN2, _LN10 = math.log(2.0), math.log(10.0)

# ---- unary math: gx = gy * f'(s) ------------------------------------------------------------------
ExpBackward = _linear("ExpBackward", "exp_backward", lambda gg, gy, y: gg * gy,
                      "gy * y, y = exp(x)")
Expm1Backward = _linear("Expm1Backward", "expm1_backward", lambda gg, gy, y: gg * gy,
                        "gy * (y + 1), y = expm1(x)")
LogBackward = _linear("LogBackward", "log_backward", lambda gg, gy, x: -(gg * gy) / (x * x),
                      "gy / x")
Log2Backward = _linear("Log2Backward", "log2_backward",
                       lambda gg, gy, x: -(gg * gy) / (x * x * _LN2), "gy / (x log 2)")
Log10Backward = _linear("Log10Backward", "log10_backward",
                        lambda gg, gy, x: -(gg * gy) / (x * x * _LN10), "gy / (x log 10)")
Log1pBackward = _linear("Log1pBackward", "log1p_backward",
                        lambda gg, gy, x: -(gg * gy) / ((x + 1) * (x + 1)), "gy / (x + 1)")
SqrtBackward = _linear("SqrtBackward", "sqrt_backward",
                       lambda gg, gy, y: (gg * gy) / (y * y) * -0.5, "gy / (2 y), y = sqrt(x)")
RsqrtBackward = _linear("RsqrtBackward", "rsqrt_backward",
                        lambda gg, gy, y: gg * gy * y * y * -1.5, "-gy y**3 / 2, y = rsqrt(x)")
SinBackward = _linear("SinBackward", "sin_backward", lambda gg, gy, x: -(gg * gy * x.sin()),
                      "gy * cos(x)")
CosBackward = _linear("CosBackward", "cos_backward", lambda gg, gy, x: -(gg * gy * x.cos()),
                      "-gy * sin(x)")
TanBackward = _linear("TanBackward", "tan_backward", lambda gg, gy, y: gg * gy * y * 2,
                      "gy * (1 + y**2), y = tan(x)")
TanhBackward = _linear("TanhBackward", "tanh_backward", lambda gg, gy, y: gg * gy * y * -2,
                       "gy * (1 - y**2), y = tanh(x)")
SigmoidBackward = _linear("SigmoidBackward", "sigmoid_backward",
                          lambda gg, gy, y: gg * gy * (1 - 2 * y),
                          "gy * y * (1 - y), y = sigmoid(x)")
ReciprocalBackward = _linear("ReciprocalBackward", "reciprocal_backward",
                             lambda gg, gy, y: gg * gy * y * -2, "-gy * y**2, y = 1/x")
ErfBackward = _linear("ErfBackward", "erf_backward",
                      lambda gg, gy, x: gg * gy * x * (-x * x).exp() * (-2 * _TWO_OVER_SQRT_PI),
                      "gy * 2/sqrt(pi) * exp(-x**2)")
# Piecewise linear: the second derivative is zero almost everywhere.
AbsBackward = _linear("AbsBackward", "abs_backward", None, "gy * sign(x)")
ReluBackward = _linear("ReluBackward", "relu_backward", None, "gy where y > 0, else 0")
LeakyReluBackward = _linear("LeakyReluBackward", "leaky_relu_backward", None,
                            "gy where x > 0, else gy * slope")
ClampBackward = _linear("ClampBackward", "clamp_backward", None,
                        "gy where lo <= x <= hi, else 0")


# ---- activations ----------------------------------------------------------------------------------
def _elu_second(gg, gy, x, alpha):
    # d/dx (gy * alpha * exp(x)) below 0; clamp keeps exp finite where the branch is unused
    return _where(x > 0, 0.0, gg * gy * alpha * x.clamp(max=0.0).exp())


def _gelu_second(gg, gy, x):
    # d/dx (Phi + x phi) = 2 phi - x**2 phi
    pdf = (x * x * -0.5).exp() * _INV_SQRT_2PI
    return gg * gy * pdf * (2 - x * x)


def _gelu_tanh_second(gg, gy, x):
    # f' = (1 + t)/2 + x (1 - t**2) u'/2, t = tanh(u), u = k (x + c x**3):
    # f'' = (1 - t**2) (u' + x (u''/2 - t u'**2)), u' = k (1 + 3c x**2), u'' = 6 k c x
    k, c = _SQRT_2_OVER_PI, 0.044715
    t = ((x + x * x * x * c) * k).tanh()
    du = (x * x * (3 * c) + 1) * k
    return gg * gy * (1 - t * t) * (du + x * (x * (3 * k * c) - t * du * du))


def _silu_second(gg, gy, x):
    s = x.sigmoid()
    return gg * gy * s * (1 - s) * (2 + x * (1 - 2 * s))


def _softplus_second(gg, gy, x, beta, threshold):
    z = x * beta
    s = z.sigmoid()
    return _where(z > threshold, 0.0, gg * gy * s * (1 - s) * beta)


EluBackward = _linear("EluBackward", "elu_backward", _elu_second,
                      "gy where x > 0, else gy * alpha * exp(x)")
GeluBackward = _linear("GeluBackward", "gelu_backward", _gelu_second,
                       "gy * (Phi(x) + x phi(x))")
GeluTanhBackward = _linear("GeluTanhBackward", "gelu_tanh_backward", _gelu_tanh_second,
                           "the derivative of the tanh approximation of GELU")
SiluBackward = _linear("SiluBackward", "silu_backward", _silu_second,
                       "gy * s * (1 + x (1 - s)), s = sigmoid(x)")
SoftplusBackward = _linear("SoftplusBackward", "softplus_backward", _softplus_second,
                           "gy * sigmoid(beta x), or gy above the threshold")


# ---- powers ---------------------------------------------------------------------------------------
def _pow_scalar_second(gg, gy, x, p):
    # d/dx p x**(p-1) = p (p-1) x**(p-2); none for p == 1 (p == 0 never gets here)
    return None if p == 1 else gg * gy * x ** (p - 2) * (p * (p - 1))


PowScalarBackward = _linear("PowScalarBackward", "pow_scalar_backward", _pow_scalar_second,
                            "gy * p * x**(p-1), for a number p != 0")
RpowBackward = _linear("RpowBackward", "rpow_backward",
                       lambda gg, gy, y, log_base: gg * gy * log_base,
                       "gy * y * log(base), y = base**x for a number base")


def _pow_base_grads(gga, gy, a, b, need):
    """Gradients of ga = [b != 0] gy b a**(b-1) w.r.t. (gy, a, b), given gga."""
    ggy = ga_ = gb_ = None
    if need[0]:
        ggy = PowBackwardBase.call(gga, a, b)
    if need[1] or need[2]:
        nz = b != 0
        am1 = a ** (b - 1)
        if need[1]:
            ga_ = _where(nz, gga * gy * b * (b - 1) * a ** (b - 2), 0.0)
        if need[2]:
            gb_ = _where(nz, gga * gy * am1 * (1 + b * a.log()), 0.0)
    return ggy, ga_, gb_


def _pow_exponent_grads(ggb, gy, a, b, y, need):
    """Gradients of gb = [!(a == 0 & b >= 0)] gy y log(a) w.r.t. (gy, a, b, y), given ggb."""
    ggy = ga_ = gy_ = None
    if need[0]:
        ggy = PowBackwardExponent.call(ggb, a, b, y)
    if need[1] or need[3]:
        keep = ~((a == 0) & (b >= 0))
        if need[1]:
            ga_ = _where(keep, ggb * gy * y / a, 0.0)
        if need[3]:
            gy_ = _where(keep, ggb * gy * a.log(), 0.0)
    return ggy, ga_, None, gy_


def _add(*gs):
    out = None
    for g in gs:
        if g is not None:
            out = g if out is None else out + g
    return out


class PowBackwardBase(KernelFunction):
    """``ga`` of ``a ** b`` (two tensors): ``gy * b * a**(b-1)``, 0 where b == 0."""
    kernel = "pow_backward_base"

    @staticmethod
    def backward(ctx, gga):
        gy, a, b = ctx.saved_tensors
        return _pow_base_grads(gga, gy, a, b, ctx.needs_input_grad)


class PowBackwardExponent(KernelFunction):
    """``gb`` of ``y = a ** b`` (two tensors): ``gy * y * log(a)``, 0 where a == 0, b >= 0."""
    kernel = "pow_backward_exponent"

    @staticmethod
    def backward(ctx, ggb):
        gy, a, b, y = ctx.saved_tensors
        return _pow_exponent_grads(ggb, gy, a, b, y, ctx.needs_input_grad)


class PowBackward(KernelFunction):
    """Both gradients of ``y = a ** b`` (two tensors) in one launch."""
    kernel = "pow_backward"

    @staticmethod
    def backward(ctx, gga, ggb):
        gy, a, b, y = ctx.saved_tensors
        need = ctx.needs_input_grad
        g1 = _pow_base_grads(gga, gy, a, b, need[:3])
        g2 = _pow_exponent_grads(ggb, gy, a, b, y, need)
        return tuple(_add(u, v) for u, v in zip(g1 + (None,), g2))


# ---- division -------------------------------------------------------------------------------------
# gb = -gy a / b**2: d/dgy = -a / b**2 (the same kernel), d/da = -gy / b**2, d/db = 2 gy a / b**3.
def _divisor_grads(ggb, gy, a, b, need):
    """Gradients of ``gb = -gy a / b**2`` w.r.t. (gy, a, b), given ``ggb``; ``a`` a tensor."""
    gb_over = (ggb * gy) / (b * b) if need[1] or need[2] else None
    return (DivBackwardDivisor.call(ggb, a, b) if need[0] else None,
            -gb_over if need[1] else None,
            gb_over * a * 2 / b if need[2] else None)


class DivBackwardDivisor(KernelFunction):
    """``gb`` of ``y = a / b`` for a tensor ``a``: ``-gy * a / b**2``."""
    kernel = "div_backward_divisor"

    @staticmethod
    def backward(ctx, ggb):
        gy, a, b = ctx.saved_tensors
        return _divisor_grads(ggb, gy, a, b, ctx.needs_input_grad)


class RDivBackward(KernelFunction):
    """``gb`` of ``y = a / b`` for a number ``a``: ``-gy * a / b**2``."""
    kernel = "rdiv_backward"

    @staticmethod
    def backward(ctx, ggb):
        gy, b, _ = ctx.saved_tensors
        a = ctx.scalars[2]
        need = ctx.needs_input_grad
        return (RDivBackward.call(ggb, b, a) if need[0] else None,
                (ggb * gy) * (2 * a) / (b * b * b) if need[1] else None, None)


class DivBackward(KernelFunction):
    """Both gradients of ``y = a / b`` in one launch: ``gy / b`` and ``-gy * a / b**2``."""
    kernel = "div_backward"

    @staticmethod
    def backward(ctx, gga, ggb):
        gy, a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        # ga = gy / b: d/dgy = gga / b, d/da = 0, d/db = -gga gy / b**2
        g1 = (gga / b if need[0] else None, None,
              -(gga * gy) / (b * b) if need[2] else None)
        g2 = _divisor_grads(ggb, gy, a, b, need)
        return tuple(_add(u, v) for u, v in zip(g1, g2))


# ---- maximum / minimum ----------------------------------------------------------------------------
class _MaxMinBackward(KernelFunction):
    """Both gradients of maximum/minimum(a, b) in one launch; ties share ``gy`` equally. The
    result is piecewise linear in a and b: only ``gy`` has a second-order gradient."""

    _take_max = True

    @classmethod
    def backward(cls, ctx, gga, ggb):
        gy, a, b = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        tie = a == b
        pick_a, pick_b = (a > b, b > a) if cls._take_max else (a < b, b < a)
        ggy = _where(tie, (gga + ggb) * 0.5, _where(pick_a, gga, _where(pick_b, ggb, 0.0)))
        return ggy, None, None


class MaximumBackward(_MaxMinBackward):
    kernel = "maximum_backward"
    _take_max = True


class MinimumBackward(_MaxMinBackward):
    kernel = "minimum_backward"
    _take_max = False


# ---- product, where, lerp, remainder, 0 ** x ------------------------------------------------------
class MulBackward(KernelFunction):
    """Both gradients of ``y = a * b`` in one launch: ``gy * b`` and ``gy * a``."""
    kernel = "mul_backward"

    @staticmethod
    def backward(ctx, gga, ggb):
        gy, a, b = ctx.saved_tensors
        need = ctx.needs_input_grad
        # ga = gy b, gb = gy a: d/dgy = gga b + ggb a, d/da = ggb gy, d/db = gga gy
        return (gga * b + ggb * a if need[0] else None,
                ggb * gy if need[1] else None,
                gga * gy if need[2] else None)


class WhereBackward(KernelFunction):
    """Both gradients of ``where(c, a, b)`` in one launch (zeros where not chosen)."""
    kernel = "where_backward"

    @staticmethod
    def backward(ctx, gga, ggb):
        gy, c = ctx.saved_tensors
        # linear in gy: ga + gb routes gga where c holds and ggb elsewhere
        return (_where(c, gga, ggb) if ctx.needs_input_grad[0] else None), None


class LerpBackward(KernelFunction):
    """The three gradients of ``lerp(a, b, w)`` (w a tensor) in one launch."""
    kernel = "lerp_backward"

    @staticmethod
    def backward(ctx, gga, ggb, ggw):
        gy, a, b, w = ctx.saved_tensors
        need = ctx.needs_input_grad
        # ga = gy (1 - w), gb = gy w, gw = gy (b - a)
        return (gga * (1 - w) + ggb * w + ggw * (b - a) if need[0] else None,
                -(ggw * gy) if need[1] else None,
                ggw * gy if need[2] else None,
                (ggb - gga) * gy if need[3] else None)


class LerpScalarBackward(KernelFunction):
    """Both gradients of ``lerp(a, b, w)`` for a number ``w`` in one launch."""
    kernel = "lerp_scalar_backward"

    @staticmethod
    def backward(ctx, gga, ggb):
        w = ctx.scalars[1]
        return (gga * (1 - w) + ggb * w if ctx.needs_input_grad[0] else None), None


class RemainderBackward(KernelFunction):
    """``gb`` of ``remainder(a, b)`` (two tensors): ``-gy * floor(a / b)``; piecewise
    constant in a and b, so only ``gy`` has a second-order gradient."""
    kernel = "remainder_backward"

    @staticmethod
    def backward(ctx, ggb):
        _, a, b = ctx.saved_tensors
        return (RemainderBackward.call(ggb, a, b) if ctx.needs_input_grad[0] else None,
                None, None)


RRemainderBackward = _linear("RRemainderBackward", "rremainder_backward", None,
                             "gb of remainder(a, b) for a number a: -gy * floor(a / b)")
RpowZeroBackward = _linear("RpowZeroBackward", "rpow_zero_backward", None,
                           "gb of 0 ** b: 0 where b >= 0, else gy * -inf (as torch)")


# ---- logsigmoid, clamp with tensor bounds ---------------------------------------------------------
def _logsigmoid_second(gg, gy, x):
    s = x.sigmoid()  # d/dx sigmoid(-x) = -s (1 - s)
    return -(gg * gy * s * (1 - s))


LogsigmoidBackward = _linear("LogsigmoidBackward", "logsigmoid_backward", _logsigmoid_second,
                             "gy * sigmoid(-x)")


class ClampTensorBackward(KernelFunction):
    """The gradients of ``clamp(x, lo, hi)`` with tensor bounds (``lo`` or ``hi`` may be
    missing: the kernel without it) in one launch. Piecewise linear: only ``gy`` has a
    second-order gradient, the sum of the incoming ones, each where its mask holds."""

    @classmethod
    def for_bounds(cls, lo, hi):
        """The subclass for the bounds given."""
        return _CLAMP[lo is not None, hi is not None]

    @classmethod
    def masks(cls, x, lo, hi):
        """The masks of x, lo, hi's gradients (as the kernel's, in tensor ops)."""
        if lo is not None and hi is not None:
            return (x >= lo) & (x <= hi), (x < lo) & (lo < hi), (x > hi) | (hi < lo)
        if lo is not None:
            return x >= lo, x < lo
        return x <= hi, x > hi

    @classmethod
    def backward(cls, ctx, *ggs):
        gy, x, *bounds = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return (None,) * (2 + len(bounds))
        lo, hi = (bounds if len(bounds) == 2 else
                  ((bounds[0], None) if cls.kernel == "clamp_min_tensor_backward"
                   else (None, bounds[0])))
        ggy = None
        for mask, gg in zip(cls.masks(x, lo, hi), ggs):
            part = _where(mask, gg, 0.0)
            ggy = part if ggy is None else ggy + part
        return (ggy, None) + (None,) * len(bounds)


class _ClampBothBackward(ClampTensorBackward):
    kernel = "clamp_tensor_backward"


class _ClampMinBackward(ClampTensorBackward):
    kernel = "clamp_min_tensor_backward"


class _ClampMaxBackward(ClampTensorBackward):
    kernel = "clamp_max_tensor_backward"


_CLAMP = {(True, True): _ClampBothBackward, (True, False): _ClampMinBackward,
          (False, True): _ClampMaxBackward}
