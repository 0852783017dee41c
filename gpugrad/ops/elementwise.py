"""Elementwise operations: arithmetic, powers, unary math, clamp, maximum/minimum, where, lerp.

Every op is a Function whose backward is written with tensor operations, so that it is
recorded under ``create_graph=True`` (gradients of gradients). Broadcasting needs no code
here: the engine sums each returned gradient down to its input's shape.
"""
from __future__ import annotations

import math
import operator as _operator

import numpy as np

from .. import _dtypes
from .._tensor import Tensor, _refresh_view
from .._kernels import erf as _erf_numpy
from .._kernels import kernels as _K
from ..autograd.function import Function
from ..autograd.function import _record_binary, _record_one, _Saved, _saved_arrays
from ..autograd import _jvp_rules as _rules
from ..autograd import grad_mode as _grad_mode
from . import fused
from ._util import (binary_arrays, check_operand, float_array, is_scalar, kernel_call,
                    make, xp_of)


_grad_state = _grad_mode.state


_ndarray = np.ndarray


def _xp2(a, b):
    return xp_of(a) if not is_scalar(a) else xp_of(b)


def _is_bool(v) -> bool:
    return isinstance(v, (bool, np.bool_)) or (isinstance(v, Tensor) and v._data.dtype == np.bool_)


def _same_float_arrays(a, b):
    """The arrays (or the number) of ``a`` and ``b`` when they are the common case of the
    arithmetic ops: two floating tensors of one dtype and device whose shapes are equal or
    one the trailing part of the other (a bias: the result has the longer shape), or a
    floating tensor and a Python float or int (which never changes its dtype); else None."""
    if isinstance(a, Tensor):
        x = a._data
        if x.dtype.kind != "f":
            return None
        if isinstance(b, Tensor):
            y = b._data
            if y.dtype != x.dtype or y.__class__ is not x.__class__:
                return None
            sx, sy = x.shape, y.shape
            if sx != sy:
                nx, ny = len(sx), len(sy)
                if not ((ny < nx and sx[nx - ny:] == sy) or (nx < ny and sy[ny - nx:] == sx)):
                    return None
            if x.__class__ is not _ndarray and x.device != y.device:
                return None  # two GPUs: forward names them in its error
            return x, y
        if b.__class__ is float or b.__class__ is int:
            return x, b
        return None
    if (a.__class__ is float or a.__class__ is int) and isinstance(b, Tensor):
        y = b._data
        if y.dtype.kind == "f":
            return a, y
    return None


def _binary_fast(cls, op, save, n_args: int):
    """The ``_fast`` routine of binary arithmetic op ``cls`` (see ``Function._fast``) for the
    common case of ``_same_float_arrays``; anything else (promotion, broadcasting, alpha, bad
    operands) goes to forward. ``save(ctx, a, b)`` sets on a recorded node what forward
    would set and save."""

    def fast(a, b, alpha=1):
        if alpha != 1:
            return None
        arrays = _same_float_arrays(a, b)
        if arrays is None:
            return None
        if _grad_state.enabled:
            ta = isinstance(a, Tensor)
            tb = isinstance(b, Tensor)
            if ta and a._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(a)
            if tb and b._base is not None:
                _refresh_view(b)
            if (ta and a._requires_grad) or (tb and b._requires_grad):
                out = make(op(*arrays))
                save(_record_binary(cls, a, b, ta, tb, out, n_args), a, b)
                return out
        return make(op(*arrays))

    return staticmethod(fast)


def _mul_save(ctx, a, b):
    na, nb = ctx.needs_input_grad
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    ctx.scalars = (None if ta else a, None if tb else b)
    ctx.square = a is b
    if na or nb:
        ctx._saved = [_Saved(a, None) if nb and ta else None,
                      _Saved(b, None) if na and tb else None]


def _div_save(ctx, a, b):
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    ctx._saved = [_Saved(a, None) if ctx.needs_input_grad[1] and ta else None,
                  _Saved(b, None) if tb else None]
    ctx.scalar_a = None if ta else a
    ctx.scalar_b = None if tb else b


def _alpha_save(ctx, a, b):
    ctx.alpha = 1


# ---- arithmetic -------------------------------------------------------------------------------
class Add(Function):
    """``input + alpha * other``."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b, alpha=1):
        x, y, _ = binary_arrays("add", a, b)
        ctx.alpha = alpha
        return make(x + y if alpha == 1 else x + alpha * y)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad[:2]
        alpha = ctx.alpha
        return (g if na else None,
                (g if alpha == 1 else g * alpha) if nb else None, None)

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``): g to each tensor."""
        if ctx.alpha != 1:
            return None
        return (g, g) if len(ctx._arg_positions) == 2 else (g,)


Add._fast = _binary_fast(Add, _operator.add, _alpha_save, 3)


class Sub(Function):
    """``input - alpha * other``."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b, alpha=1):
        x, y, dt = binary_arrays("sub", a, b)
        if dt is _dtypes.bool:
            raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not "
                               "supported. Use the `^` or `logical_xor()` operator instead.")
        if _is_bool(a) or _is_bool(b):  # torch refuses a bool operand also in x - mask
            raise RuntimeError("Subtraction, the `-` operator, with a bool tensor is not "
                               "supported. If you are trying to invert a mask, use the `~` or "
                               "`logical_not()` operator instead.")
        ctx.alpha = alpha
        return make(x - y if alpha == 1 else x - alpha * y)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        na, nb = ctx.needs_input_grad[:2]
        return (g if na else None, (-g if ctx.alpha == 1 else g * -ctx.alpha) if nb else None,
                None)

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``): g and -g."""
        if ctx.alpha != 1:
            return None
        positions = ctx._arg_positions
        if len(positions) == 2:
            return g, -g if ctx.needs_input_grad[1] else None
        return (g,) if positions[0] == 0 else (-g,)


Sub._fast = _binary_fast(Sub, _operator.sub, _alpha_save, 3)


class Mul(Function):
    """``input * other``."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b):
        x, y, _ = binary_arrays("mul", a, b)
        na, nb = ctx.needs_input_grad
        if na or nb:  # nothing to keep when no gradient (nor tangent) is wanted
            # Save only what the wanted gradients need: memory, and in-place safety.
            ctx.save_for_backward(a if nb and isinstance(a, Tensor) else None,
                                  b if na and isinstance(b, Tensor) else None)
            ctx.scalars = (a if is_scalar(a) else None, b if is_scalar(b) else None)
            ctx.square = a is b  # x * x: both gradients are g * x
        return make(x * y)

    jvp = _rules.multilinear

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        sa, sb = ctx.scalars
        na, nb = ctx.needs_input_grad
        if ctx.square and na and nb:
            # x * x: the engine would add g*x to g*x; 2 (g x) is the same sum, bit for bit
            # (doubling is exact), in two passes over one fresh buffer instead of three
            # passes and two buffers. The whole gradient goes to the first edge.
            ga = g * a
            if _grad_state.enabled:  # create_graph: keep the doubling in the graph
                return ga * 2, None
            ga._data *= 2
            return ga, None
        if na and nb and a is not None and b is not None:
            return fused.MulBackward.call(g, a, b)  # both in one kernel
        return (g * (b if b is not None else sb) if na else None,
                g * (a if a is not None else sa) if nb else None)

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``) where it is plain: a
        tensor times a number, or two tensors of g's dtype that are not the same one."""
        saved = _saved_arrays(ctx)
        if saved is None or ctx.square:
            return None
        a, b = saved
        sa, sb = ctx.scalars
        if sb is not None:  # tensor * number (a Python one: NumPy's promotion is torch's)
            return (g * sb,) if sb.__class__ is float or sb.__class__ is int else None
        if sa is not None:  # number * tensor
            return (g * sa,) if sa.__class__ is float or sa.__class__ is int else None
        if a is not None and b is not None:
            return _K.mul_backward(g, a, b)  # both in one kernel
        if b is not None and b.dtype is g.dtype:  # only a's gradient
            return g * b, None
        if a is not None and a.dtype is g.dtype:
            return None, g * a
        return None


Mul._fast = _binary_fast(Mul, _operator.mul, _mul_save, 2)


def _true_div_arrays(a, b):
    x, y, dt = binary_arrays("div", a, b)
    if dt.category != 2:  # int / int is true division to the default float, as in torch
        f = _dtypes.get_default_dtype().np
        x = x.astype(f) if not is_scalar(x) else float(x)
        y = y.astype(f) if not is_scalar(y) else float(y)
    return x, y


class Div(Function):
    """``input / other`` (true division)."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b):
        x, y = _true_div_arrays(a, b)
        na, nb = ctx.needs_input_grad
        # As torch, backward reads a and b, never the quotient: it may be modified in place.
        ctx.save_for_backward(a if nb and isinstance(a, Tensor) else None,
                              b if isinstance(b, Tensor) else None)
        ctx.scalar_a = a if is_scalar(a) else None
        ctx.scalar_b = b if is_scalar(b) else None
        return make(x / y)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        if b is None:
            return g / ctx.scalar_b, None
        if a is None:  # a number divided by a tensor, or a's gradient alone
            return (g / b if na else None,
                    fused.RDivBackward.call(g, b, ctx.scalar_a) if nb else None)
        if na:  # both in one kernel
            return fused.DivBackward.call(g, a, b)
        return None, fused.DivBackwardDivisor.call(g, a, b)


Div._fast = _binary_fast(Div, _operator.truediv, _div_save, 2)


class FloorDivide(Function):
    """``input // other`` (rounding toward -inf); its gradient is zero almost everywhere."""
    _builtin = True
    _node_name = "DivBackward1"

    @staticmethod
    def forward(ctx, a, b, mode="floor"):
        x, y, dt = binary_arrays("div", a, b)
        xp = _xp2(x, y)
        if dt is _dtypes.bool:
            raise NotImplementedError(f'"div_{mode}" not implemented for \'Bool\'')
        if dt.category == 2:
            q = x / y
            out = xp.floor(q) if mode == "floor" else xp.trunc(q)
        else:
            if (not is_scalar(y) and (y == 0).any()) or (is_scalar(y) and y == 0):
                raise ZeroDivisionError("div(rounding_mode): integer division by zero")
            out = x // y
            if mode == "trunc":
                out = xp.where((out < 0) & (out * y != x), out + 1, out)
        ctx.shapes = (a.shape if isinstance(a, Tensor) else None)
        return make(out.astype(dt.np) if hasattr(out, "astype") else out)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        z = g * 0
        return z, z, None


class Remainder(Function):
    """``input % other`` with the sign of the divisor (Python's and torch's remainder)."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b):
        x, y, dt = binary_arrays("remainder", a, b)
        ctx.save_for_backward(a if isinstance(a, Tensor) else None,
                              b if isinstance(b, Tensor) else None)
        ctx.scalars = (a, b)
        return make(_xp2(x, y).remainder(x, y))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        if not nb:
            return g if na else None, None
        # -g * floor(a / b) in one kernel (b is a tensor when it needs a gradient)
        gb = (fused.RemainderBackward.call(g, a, b) if a is not None else
              fused.RRemainderBackward.call(g, b, ctx.scalars[0]))
        return g if na else None, gb


class Neg(Function):
    """``-input``."""
    _builtin = True

    @staticmethod
    def forward(ctx, x):
        if x._data.dtype == np.bool_:
            raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported. "
                               "If you are trying to invert a mask, use the `~` or "
                               "`logical_not()` operator instead.")
        return make(-x._data)

    @staticmethod
    def _fast(x):
        """The common case (see ``Function._fast``): a float tensor's negation."""
        if not isinstance(x, Tensor) or x._data.dtype.kind != "f":
            return None
        if _grad_state.enabled:
            if x._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(x)
            if x._requires_grad:
                return _record_one(Neg, x, make(-x._data), False, False, saves=False)
        return make(-x._data)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        return -g

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``)."""
        return (-g,)


class Pow(Function):
    """``input ** exponent``; either side may be a Python number."""
    _builtin = True

    @staticmethod
    def forward(ctx, a, b):
        x, y, dt = binary_arrays("pow", a, b)
        xp = _xp2(x, y)
        if dt.category == 1 and ((is_scalar(y) and y < 0) or (not is_scalar(y) and (y < 0).any())):
            raise RuntimeError("Integers to negative integer powers are not allowed.")
        if is_scalar(x):
            out = xp.power(xp.asarray(x, dtype=dt.np), y)
        else:
            out = xp.power(x, y)
        out = make(out)
        na, nb = ctx.needs_input_grad
        ctx.save_for_backward(a if isinstance(a, Tensor) else None,
                              b if isinstance(b, Tensor) else None, out if nb else None)
        ctx.scalars = (a if is_scalar(a) else None, b if is_scalar(b) else None)
        return out

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        a, b, out = ctx.saved_tensors
        sa, sb = ctx.scalars
        na, nb = ctx.needs_input_grad
        ga = gb = None
        if a is not None and b is not None:  # tensor ** tensor: kernels/math_backward.cu
            # d/da a**b = b * a**(b-1), taken as 0 where b == 0 (also at a == 0), like torch;
            # d/db a**b = a**b * log(a), taken as 0 where a == 0 and b >= 0, like torch
            if na and nb:
                return fused.PowBackward.call(g, a, b, out)
            if na:
                return fused.PowBackwardBase.call(g, a, b), None
            return None, fused.PowBackwardExponent.call(g, a, b, out)
        if na:  # tensor ** scalar
            ga = g * 0 if sb == 0 else fused.PowScalarBackward.call(g, a, sb)
        if nb:  # scalar ** tensor
            # log(0) is -inf; torch takes the gradient as 0 where the exponent is >= 0
            gb = (fused.RpowBackward.call(g, out, math.log(sa) if sa > 0 else math.nan)
                  if sa != 0 else fused.RpowZeroBackward.call(g, b, -math.inf))
        return ga, gb


# ---- unary math, declared as a table ----------------------------------------------------------
def _erf_array(a):
    xp = xp_of(a)
    if xp is np:  # NumPy has no erf: the vectorized one of the kernels' NumPy twins
        return _erf_numpy(a)
    from cupyx.scipy.special import erf
    return erf(a)


def _unary(name, forward, backward, save=("x",), keep_int=False, doc=""):
    """Make the Function for ``y = forward(xp, a)`` whose gradient is ``backward(g, x, y)``,
    or, with ``backward=(fused.XBackward, "x" or "y")``, that one fused kernel of ``g`` and
    the input or the output.

    ``save`` names what backward reads (``"x"`` the input, ``"y"`` the output); integer inputs
    are computed in the default float dtype unless ``keep_int``.
    """

    save_x, save_y = "x" in save, "y" in save
    kernel_of = None  # the fused kernel's name and which saved array it reads
    if isinstance(backward, tuple):
        fn_cls, operand = backward
        kernel_of = (fn_cls.kernel, 1 if operand == "y" else 0)
        backward = ((lambda g, x, y: kernel_call(fn_cls, g, y)) if operand == "y"
                    else (lambda g, x, y: kernel_call(fn_cls, g, x)))
    direct = []  # [kernel], resolved on the first backward

    def lean(ctx, g):  # backward on arrays (see Function._backward_arrays)
        saved = _saved_arrays(ctx)
        if saved is None:
            return None
        if not direct:
            direct.append(getattr(_K, kernel_of[0]))
        return (direct[0](g, saved[kernel_of[1]]),)

    def fwd(ctx, x):
        a = x._data
        if a.__class__ is _ndarray and (keep_int or a.dtype.kind == "f"):  # the common case
            y = make(forward(np, a))
        else:
            if not keep_int:
                a = float_array(x)
            y = make(forward(xp_of(a), a))
        if ctx.needs_input_grad[0]:  # saved only when a gradient (or tangent) is wanted
            ctx.save_for_backward(x if save_x else None, y if save_y else None)
        return y

    def bwd(ctx, g):
        if kernel_of is not None and not _grad_state.enabled and not ctx._in_jvp:
            # Not recorded (no create_graph): the kernel on the arrays, as the engine runs it
            out = lean(ctx, g._data)
            if out is not None:
                return make(out[0])
        x, y = ctx.saved_tensors
        return backward(g, x, y)

    def fast(x):  # the common case (see Function._fast): a float tensor, or keep_int
        if not isinstance(x, Tensor):
            return None
        a = x._data
        if a.dtype.kind != "f":
            if not keep_int:
                return None
            if _grad_state.enabled and x._base is not None:
                _refresh_view(x)
            return make(forward(np if a.__class__ is _ndarray else xp_of(a), a))
        if _grad_state.enabled:
            if x._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(x)
            if x._requires_grad:
                y = make(forward(np if a.__class__ is _ndarray else xp_of(a), a))
                if y._data.dtype.kind != "f":  # (sign of a float is float: never here)
                    return None
                return _record_one(cls, x, y, save_x, save_y)
        return make(forward(np if a.__class__ is _ndarray else xp_of(a), a))

    cls = type(name, (Function,), {"_builtin": True, "__doc__": doc, "_fast": staticmethod(fast),
                                   "forward": staticmethod(fwd), "backward": staticmethod(bwd),
                                   "_backward_arrays": None if kernel_of is None
                                   else staticmethod(lean),
                                   "jvp": _rules.self_adjoint,
                                   "__module__": __name__})
    return cls


# Each backward is one fused kernel of kernels/ (a differentiable Function: see ops/fused.py).
Exp = _unary("Exp", lambda xp, a: xp.exp(a), (fused.ExpBackward, "y"),
             ("y",), doc="e**x")
Log = _unary("Log", lambda xp, a: xp.log(a), (fused.LogBackward, "x"),
             doc="natural log")
Log2 = _unary("Log2", lambda xp, a: xp.log2(a),
              (fused.Log2Backward, "x"))
Log10 = _unary("Log10", lambda xp, a: xp.log10(a),
               (fused.Log10Backward, "x"))
Log1p = _unary("Log1P", lambda xp, a: xp.log1p(a),
               (fused.Log1pBackward, "x"), doc="log(1+x)")
Expm1 = _unary("Expm1", lambda xp, a: xp.expm1(a),
               (fused.Expm1Backward, "y"), ("y",), doc="e**x - 1")
Sqrt = _unary("Sqrt", lambda xp, a: xp.sqrt(a),
              (fused.SqrtBackward, "y"),
              ("y",))
Rsqrt = _unary("Rsqrt", lambda xp, a: 1 / xp.sqrt(a),
               (fused.RsqrtBackward, "y"), ("y",), doc="1/sqrt(x)")
Abs = _unary("Abs", lambda xp, a: xp.abs(a), (fused.AbsBackward, "x"),
             keep_int=True)
Sign = _unary("Sign", lambda xp, a: xp.sign(a), lambda g, x, y: g * 0, (), keep_int=True)
Sin = _unary("Sin", lambda xp, a: xp.sin(a), (fused.SinBackward, "x"))
Cos = _unary("Cos", lambda xp, a: xp.cos(a), (fused.CosBackward, "x"))
Tan = _unary("Tan", lambda xp, a: xp.tan(a), (fused.TanBackward, "y"),
             ("y",))
Tanh = _unary("Tanh", lambda xp, a: xp.tanh(a),
              (fused.TanhBackward, "y"),
              ("y",))
Sigmoid = _unary("Sigmoid", lambda xp, a: _K.sigmoid(a),
                 (fused.SigmoidBackward, "y"), ("y",))
Reciprocal = _unary("Reciprocal", lambda xp, a: 1 / a,
                    (fused.ReciprocalBackward, "y"), ("y",))
Erf = _unary("Erf", lambda xp, a: _erf_array(a),
             (fused.ErfBackward, "x"))
Relu = _unary("Relu", lambda xp, a: xp.maximum(a, 0),
              (fused.ReluBackward, "y"), ("y",), keep_int=True)
Silu = _unary("Silu", lambda xp, a: _K.silu(a),
              (fused.SiluBackward, "x"))


def _float_op(cls, x):
    if isinstance(x, Tensor):
        return cls.apply(x)
    check_operand(cls.__name__.lower(), x, "input")
    if not isinstance(x, Tensor):
        raise TypeError(f"{cls.__name__.lower()}(): argument 'input' must be a Tensor, not "
                        f"{type(x).__name__}")
    return cls.apply(x)


def exp(input): """e raised to each element."""; return _float_op(Exp, input)  # noqa: E702
def log(input): """Natural logarithm."""; return _float_op(Log, input)  # noqa: E702
def log2(input): """Base-2 logarithm."""; return _float_op(Log2, input)  # noqa: E702
def log10(input): """Base-10 logarithm."""; return _float_op(Log10, input)  # noqa: E702
def log1p(input): """log(1 + x), accurate near 0."""; return _float_op(Log1p, input)  # noqa: E702
def expm1(input): """exp(x) - 1, accurate near 0."""; return _float_op(Expm1, input)  # noqa: E702
def sqrt(input): """Square root."""; return _float_op(Sqrt, input)  # noqa: E702
def rsqrt(input): """1 / sqrt(x)."""; return _float_op(Rsqrt, input)  # noqa: E702
def abs(input): """Absolute value."""; return _float_op(Abs, input)  # noqa: E702,A001
def sign(input): """-1, 0 or 1 by sign (gradient 0)."""; return _float_op(Sign, input)  # noqa
def sin(input): """Sine."""; return _float_op(Sin, input)  # noqa: E702
def cos(input): """Cosine."""; return _float_op(Cos, input)  # noqa: E702
def tan(input): """Tangent."""; return _float_op(Tan, input)  # noqa: E702
def tanh(input): """Hyperbolic tangent."""; return _float_op(Tanh, input)  # noqa: E702
def sigmoid(input): """Logistic sigmoid 1/(1+e**-x)."""; return _float_op(Sigmoid, input)  # noqa
def reciprocal(input): """1 / x."""; return _float_op(Reciprocal, input)  # noqa: E702
def erf(input): """The error function."""; return _float_op(Erf, input)  # noqa: E702
def relu(input): """max(x, 0)."""; return _float_op(Relu, input)  # noqa: E702
def silu(input, inplace=False): """x * sigmoid(x) (swish)."""; return _float_op(Silu, input)  # noqa


absolute = abs

#: The Tensor methods of the unary functions above, by function: ``x.tanh()`` calls
#: ``Tanh.apply(x)`` itself (``self`` is a tensor: no operand check, one call layer less).
UNARY_METHOD_CLASSES = {
    exp: Exp, log: Log, log2: Log2, log10: Log10, log1p: Log1p, expm1: Expm1, sqrt: Sqrt,
    rsqrt: Rsqrt, abs: Abs, sign: Sign, sin: Sin, cos: Cos, tan: Tan, tanh: Tanh,
    sigmoid: Sigmoid, reciprocal: Reciprocal, erf: Erf, relu: Relu,
}


# ---- activations with parameters --------------------------------------------------------------
class LeakyRelu(Function):
    """``x`` where positive, ``negative_slope * x`` elsewhere."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, slope):
        a = float_array(x)
        ctx.save_for_backward(x)
        ctx.slope = slope
        return make(_K.leaky_relu(a, slope))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return fused.LeakyReluBackward.call(g, x, ctx.slope), None


def leaky_relu(input, negative_slope: float = 0.01, inplace: bool = False):
    """Leaky ReLU with slope ``negative_slope`` below zero."""
    return LeakyRelu.apply(input, float(negative_slope))


class Elu(Function):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)  # the backward kernel needs x only
        ctx.alpha = alpha
        return make(_K.elu(float_array(x), alpha))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return fused.EluBackward.call(g, x, ctx.alpha), None


def elu(input, alpha: float = 1.0, inplace: bool = False):
    """Exponential linear unit."""
    return Elu.apply(input, float(alpha))


class Gelu(Function):
    """Gaussian error linear unit, exact (``'none'``) or with the tanh approximation."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, approximate):
        ctx.save_for_backward(x)
        ctx.approximate = approximate
        a = float_array(x)
        return make(_K.gelu_tanh(a) if approximate == "tanh" else _K.gelu(a))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        if ctx.approximate == "tanh":
            return fused.GeluTanhBackward.call(g, x), None
        return fused.GeluBackward.call(g, x), None


def gelu(input, approximate: str = "none"):
    """GELU: ``x * Phi(x)``; ``approximate='tanh'`` uses the tanh formula."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(input, approximate)


class Softplus(Function):
    """``log(1 + exp(beta * x)) / beta``, linear above ``threshold`` for stability."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, beta, threshold):
        ctx.save_for_backward(x)
        ctx.params = (beta, threshold)
        return make(_K.softplus(float_array(x), beta, threshold))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        beta, threshold = ctx.params
        return fused.SoftplusBackward.call(g, x, beta, threshold), None, None


def softplus(input, beta: float = 1.0, threshold: float = 20.0):
    """Smooth approximation of ReLU."""
    return Softplus.apply(input, float(beta), float(threshold))


LogSigmoid = _unary("LogSigmoid", lambda xp, a: _K.logsigmoid(a),
                    lambda g, x, y: fused.LogsigmoidBackward.call(g, x),
                    doc="log(sigmoid(x)), one kernel each way")


def logsigmoid(input):
    """``log(sigmoid(x))``, stable on both tails (one kernel forward, one backward)."""
    return _float_op(LogSigmoid, input)


# ---- clamp, maximum, minimum, where, lerp ------------------------------------------------------
class Clamp(Function):
    """Limit values to ``[min, max]`` (Python numbers); gradient 1 inside, 0 outside."""
    _builtin = True

    @staticmethod
    def forward(ctx, x, lo, hi):
        a = x._data
        xp = xp_of(a)
        dt = _dtypes.result_type(x, *(v for v in (lo, hi) if v is not None))
        a = a.astype(dt.np, copy=False)
        out = xp.clip(a, lo, hi) if (lo is None or hi is None or lo <= hi) else \
            xp.full_like(a, hi)
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return make(out)

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        lo, hi = ctx.bounds
        return fused.ClampBackward.call(g, x, -math.inf if lo is None else lo,
                                        math.inf if hi is None else hi), None, None


def clamp(input, min=None, max=None):  # noqa: A002 - torch's names
    """Limit ``input`` to ``[min, max]``; bounds may be numbers or tensors."""
    if min is None and max is None:
        raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        # a number beside a tensor bound: a 0-d tensor (the kernel broadcasts it)
        lo = min if min is None or isinstance(min, Tensor) else _scalar_like(input, min)
        hi = max if max is None or isinstance(max, Tensor) else _scalar_like(input, max)
        return ClampTensor.apply(input, lo, hi)
    return Clamp.apply(input, min, max)


def _scalar_like(t, value):
    return make(xp_of(t._data).asarray(value, dtype=t._data.dtype))


class ClampTensor(Function):
    """``clamp`` with tensor bounds (``min`` or ``max`` may be None), as torch: ``min(max(x,
    lo), hi)``; one kernel forward and one backward (torch's clamp_backward_min_max)."""
    _builtin = True
    _node_name = "ClampBackward0"

    @staticmethod
    def forward(ctx, x, lo, hi):
        bounds = [b for b in (lo, hi) if b is not None]
        dt = _dtypes.result_type(x, *bounds)
        ctx.save_for_backward(x, lo, hi)
        if dt.category != 2:  # integers and bools: exact, and without gradient
            xp = xp_of(x._data)
            out = x._data if lo is None else xp.maximum(x._data, lo._data)
            out = out if hi is None else xp.minimum(out, hi._data)
            return make(out.astype(dt.np, copy=False))
        # torch's result dtype (a 0-d float64 bound leaves a float32 x float32)
        xs = [t._data.astype(dt.np, copy=False) for t in [x] + bounds]
        if lo is not None and hi is not None:
            return make(_K.clamp_tensor(*xs))
        return make((_K.clamp_min_tensor if lo is not None else _K.clamp_max_tensor)(*xs))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        x, lo, hi = ctx.saved_tensors
        bounds = [b for b in (lo, hi) if b is not None]
        grads = iter(fused.ClampTensorBackward.for_bounds(lo, hi).call(g, x, *bounds))
        gx = next(grads)
        return gx, (next(grads) if lo is not None else None), \
            (next(grads) if hi is not None else None)


clip = clamp


def clamp_min(input, min):  # noqa: A002
    """``clamp(input, min=min)``."""
    return clamp(input, min=min)


def clamp_max(input, max):  # noqa: A002
    """``clamp(input, max=max)``."""
    return clamp(input, max=max)


class _MaxMin(Function):
    _builtin = True
    _take_max = True

    @classmethod
    def forward(cls, ctx, a, b):
        x, y, _ = binary_arrays(cls.__name__.lower(), a, b)
        xp = xp_of(x)
        ctx.save_for_backward(a, b)
        return make(xp.maximum(x, y) if cls._take_max else xp.minimum(x, y))

    jvp = _rules.self_adjoint

    @classmethod
    def backward(cls, ctx, g):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        fn = fused.MaximumBackward if cls._take_max else fused.MinimumBackward
        ga, gb = fn.call(g, a, b)  # both in one kernel
        return ga if na else None, gb if nb else None


class Maximum(_MaxMin):
    """Elementwise maximum (ties share the gradient equally, as in torch)."""
    _take_max = True


class Minimum(_MaxMin):
    """Elementwise minimum (ties share the gradient equally, as in torch)."""
    _take_max = False


def maximum(input, other):
    """Elementwise maximum of two tensors."""
    return Maximum.apply(input, other)


def minimum(input, other):
    """Elementwise minimum of two tensors."""
    return Minimum.apply(input, other)


fmax, fmin = maximum, minimum


class Where(Function):
    """``input`` where ``condition`` holds, else ``other``."""
    _builtin = True

    @staticmethod
    def forward(ctx, cond, a, b):
        c = cond._data
        if c.dtype != np.bool_:
            raise RuntimeError(f"where expected condition to be a boolean tensor, but got a "
                               f"tensor with dtype {cond.dtype}")
        x, y, _ = binary_arrays("where", a, b)
        ctx.save_for_backward(cond)
        return make(xp_of(c).where(c, x, y))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        cond, = ctx.saved_tensors
        _, na, nb = ctx.needs_input_grad
        if na and nb:
            return (None, *fused.WhereBackward.call(g, cond))  # both in one kernel
        # zeros where not chosen (not g * 0, which keeps NaN), as torch
        return (None, where(cond, g, 0.0) if na else None, where(cond, 0.0, g) if nb else None)


def where(condition, input=None, other=None):
    """Choose elementwise between ``input`` and ``other`` (tensors or numbers) by
    ``condition``; ``where(condition)`` alone is ``nonzero(condition, as_tuple=True)``."""
    if input is None and other is None:
        from .indexing import nonzero  # late: indexing builds on this module's ops
        if not isinstance(condition, Tensor):
            raise TypeError(f"where(): argument 'condition' must be a Tensor, not "
                            f"{type(condition).__name__}")
        return nonzero(condition, as_tuple=True)
    if not isinstance(condition, Tensor):
        raise TypeError(f"where(): argument 'condition' must be a Tensor, not "
                        f"{type(condition).__name__}")
    return Where.apply(condition, input, other)


class Lerp(Function):
    """``start + weight * (end - start)``."""
    _builtin = True

    @staticmethod
    def forward(ctx, start, end, weight):
        s, e, _ = binary_arrays("lerp", start, end)
        ctx.save_for_backward(start, end, weight if isinstance(weight, Tensor) else None)
        ctx.scalar_w = weight if is_scalar(weight) else None
        if isinstance(weight, Tensor):  # one kernel, in torch's exact-at-both-ends form
            return make(_K.lerp(s, e, weight._data))
        return make(_K.lerp_scalar(s, e, weight))

    jvp = _rules.self_adjoint

    @staticmethod
    def backward(ctx, g):
        start, end, w = ctx.saved_tensors
        ns, ne, nw = ctx.needs_input_grad
        if w is not None:  # all three in one kernel (those not needed are dropped)
            ga, gb, gw = fused.LerpBackward.call(g, start, end, w)
            return ga if ns else None, gb if ne else None, gw if nw else None
        w = ctx.scalar_w
        if ns and ne:
            return (*fused.LerpScalarBackward.call(g, w), None)
        return g * (1 - w) if ns else None, g * w if ne else None, None


def lerp(input, end, weight):
    """Linear interpolation from ``input`` to ``end`` by ``weight``."""
    if not isinstance(input, Tensor) or not isinstance(end, Tensor):
        raise TypeError("lerp(): 'input' and 'end' must be tensors")
    return Lerp.apply(input, end, weight)


# ---- functional spellings of the operators ------------------------------------------------------
def add(input, other, *, alpha=1):
    """``input + alpha * other``."""
    return Add.apply(input, other, alpha)


def sub(input, other, *, alpha=1):
    """``input - alpha * other``."""
    return Sub.apply(input, other, alpha)


subtract = sub


def rsub(input, other, *, alpha=1):
    """``other - alpha * input``."""
    return Sub.apply(other, input, alpha)


def mul(input, other):
    """``input * other``."""
    return Mul.apply(input, other)


multiply = mul


def div(input, other, *, rounding_mode=None):
    """``input / other``; ``rounding_mode`` ``'floor'`` or ``'trunc'`` rounds the quotient."""
    if rounding_mode is None:
        return Div.apply(input, other)
    if rounding_mode not in ("floor", "trunc"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                         f"found {rounding_mode!r}")
    return FloorDivide.apply(input, other, rounding_mode)


divide = true_divide = div


def floor_divide(input, other):
    """``input // other`` (rounded toward negative infinity)."""
    return FloorDivide.apply(input, other, "floor")


def remainder(input, other):
    """``input % other``, with the sign of ``other``."""
    return Remainder.apply(input, other)


def neg(input):
    """``-input``."""
    return Neg.apply(input)


negative = neg


def pow(input, exponent):  # noqa: A001
    """``input ** exponent``; ``input`` or ``exponent`` may be a Python number."""
    return Pow.apply(input, exponent)


def square(input):
    """``input * input``."""
    return Pow.apply(input, 2)

