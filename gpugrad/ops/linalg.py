"""Matrix products: matmul in every form torch.matmul accepts, plus mm, bmm, mv, dot, outer.

One Function does the work. 1-D operands are promoted to matrices (a row vector on the
left, a column vector on the right) and the added dimension is dropped from the result, as
torch.matmul specifies; batch dimensions broadcast. The backward is two matmuls, and the
engine sums broadcast batch dimensions back to each operand's shape.

float32 products on CUDA use TF32 when ``gpugrad.backends.cuda.matmul.allow_tf32`` (or
``set_float32_matmul_precision``) allows it: eager ones tell CuPy when the flag has changed
(``backends/_precision.py``), captured ones set the math mode of gpugrad's cuBLAS handle.
"""
from __future__ import annotations

import numpy as np

from .. import _capture
from .._tensor import Tensor, _refresh_view
from ..backends import _precision
from ..autograd.function import Function, _record_binary, _Saved, _saved_arrays
from ..autograd import grad_mode as _grad_mode
from ..autograd import _jvp_rules as _rules
from ..autograd.grad_mode import is_grad_enabled
from ._util import make, xp_of

_grad_state = _grad_mode.state


def _check_dtypes(op, a, b):
    if a._data.dtype != b._data.dtype:
        raise RuntimeError(f"{op}: expected both operands to have the same dtype, but got "
                           f"{a.dtype} and {b.dtype}. Convert one with .to(dtype) first.")
    if a._data.dtype.kind == "b":
        raise RuntimeError(f"{op}: not implemented for bool tensors")


def _matmul_arrays(x, y):
    """``x @ y`` on arrays, as gpugrad computes every matrix product: inside a CUDA graph
    capture through gpugrad's cuBLAS handle (CuPy refuses cuBLAS there), else the array
    module's matmul, CuPy's told of the TF32 setting first when it changed."""
    if _capture.cuda_capturing:
        return _capture.matmul(x, y)
    xp = xp_of(x)
    if xp is np:
        return np.matmul(x, y)
    if _precision.cupy_mode is not _precision.tf32:
        _precision.sync_cupy(xp)  # the TF32 flag changed since CuPy last heard of it
    return xp.matmul(x, y)


class Matmul(Function):
    """The matrix product with torch.matmul's broadcasting and 1-D rules."""
    _builtin = True
    _node_name = "MatmulBackward0"

    @classmethod
    def forward(cls, ctx, a, b):
        x, y = a._data, b._data
        ctx.save_for_backward(a if ctx.needs_input_grad[1] else None,
                              b if ctx.needs_input_grad[0] else None)
        ctx.ndims = (x.ndim, y.ndim)
        return make(_matmul_arrays(x, y))

    @classmethod
    def _fast(cls, a, b):
        """The common case (see ``Function._fast``; ``matmul`` checked the operands): the
        product, and when recorded the node the general path makes, with what ``forward``
        saves and sets."""
        x, y = a._data, b._data
        if (x.__class__ is not np.ndarray or y.__class__ is not np.ndarray) and (
                x.__class__ is not y.__class__ or x.device != y.device):
            return None  # two devices: the general path names them in its error
        if _grad_state.enabled:
            if a._base is not None:  # a view: its history may be stale (ops/_views)
                _refresh_view(a)
            if b._base is not None:
                _refresh_view(b)
            na, nb = a._requires_grad, b._requires_grad
            if na or nb:
                out = make(_matmul_arrays(x, y))
                ctx = _record_binary(cls, a, b, True, True, out, 2)
                ctx._saved = [_Saved(a, None) if nb else None, _Saved(b, None) if na else None]
                ctx.ndims = (x.ndim, y.ndim)
                return out
        return make(_matmul_arrays(x, y))

    jvp = _rules.multilinear

    @staticmethod
    def _backward_arrays(ctx, g):
        """backward on arrays (see ``Function._backward_arrays``) of matrices and batches:
        the two products (no transpose views, no nodes); broadcast batch dimensions are
        summed back by the engine."""
        nda, ndb = ctx.ndims
        if nda < 2 or ndb < 2:
            return None
        saved = _saved_arrays(ctx)
        if saved is None:
            return None
        a, b = saved
        na, nb = ctx.needs_input_grad
        return (_matmul_arrays(g, b.swapaxes(-1, -2)) if na else None,
                _matmul_arrays(a.swapaxes(-1, -2), g) if nb else None)

    @staticmethod
    def backward(ctx, g):
        if not is_grad_enabled() and not ctx._in_jvp:  # not recorded: as the engine runs it
            out = Matmul._backward_arrays(ctx, g._data)
            if out is not None:
                return tuple(None if o is None else make(o) for o in out)
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        nda, ndb = ctx.ndims
        # Put the vector dimensions back so that the products below are plain matmuls.
        if nda == 1 and ndb == 1:
            return (g * b if na else None, g * a if nb else None)
        if nda == 1:
            g = g.unsqueeze(-2)
        if ndb == 1:
            g = g.unsqueeze(-1)
        ga = gb = None
        if na:
            bm = b.unsqueeze(-1) if ndb == 1 else b
            ga = g.matmul(bm.mT)
            if nda == 1:
                ga = ga.squeeze(-2)
        if nb:
            am = a.unsqueeze(-2) if nda == 1 else a
            gb = am.mT.matmul(g)
            if ndb == 1:
                gb = gb.squeeze(-1)
        return ga, gb


class Mm(Matmul):
    """2-D x 2-D."""
    _node_name = "MmBackward0"


class Mv(Matmul):
    """2-D x 1-D."""
    _node_name = "MvBackward0"


class Dot(Matmul):
    """1-D . 1-D."""
    _node_name = "DotBackward0"


class Bmm(Matmul):
    """3-D x 3-D, same batch size."""
    _node_name = "BmmBackward0"


def _kind(nda, ndb):
    if nda == 2 and ndb == 2:
        return Mm
    if nda == 2 and ndb == 1:
        return Mv
    if nda == 1 and ndb == 1:
        return Dot
    return Matmul


def _require_tensors(op, a, b):
    for name, t in (("input", a), ("other", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}(): argument '{name}' must be a Tensor, not {type(t).__name__}")


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """Matrix product with broadcasting (``input @ other``), as torch.matmul defines it."""
    _require_tensors("matmul", input, other)
    nda, ndb = input._data.ndim, other._data.ndim
    if nda == 0 or ndb == 0:
        raise RuntimeError(f"both arguments to matmul need to be at least 1D, but they are "
                           f"{nda}D and {ndb}D")
    _check_dtypes("matmul", input, other)
    k_a = input._data.shape[-1]
    k_b = other._data.shape[-2] if ndb > 1 else other._data.shape[0]
    if k_a != k_b:
        sa = _fmt(input.shape)
        sb = _fmt(other.shape)
        raise RuntimeError(f"matmul: shapes cannot be multiplied ({sa} and {sb}): the last "
                           f"dimension of input ({k_a}) must equal the "
                           f"{'first' if ndb == 1 else 'second-to-last'} dimension of other "
                           f"({k_b})")
    if nda > 2 or ndb > 2:
        ba, bb = input._data.shape[:-2], other._data.shape[:-2] if ndb > 1 else ()
        try:
            _broadcast_shapes(ba, bb)
        except ValueError:
            raise RuntimeError(f"matmul: batch dimensions {list(ba)} and {list(bb)} of shapes "
                               f"{list(input.shape)} and {list(other.shape)} cannot be "
                               "broadcast") from None
    return _kind(nda, ndb).apply(input, other)


def _fmt(shape):
    return "x".join(str(s) for s in shape) if len(shape) > 1 else f"{shape[0]}"


def _broadcast_shapes(a, b):
    out = []
    for x, y in zip(reversed((1,) * (len(b) - len(a)) + tuple(a)),
                    reversed((1,) * (len(a) - len(b)) + tuple(b))):
        if x != y and 1 not in (x, y):
            raise ValueError
        out.append(max(x, y))
    return tuple(reversed(out))


def mm(input: Tensor, mat2: Tensor) -> Tensor:
    """Product of two matrices (2-D only)."""
    _require_tensors("mm", input, mat2)
    if input._data.ndim != 2 or mat2._data.ndim != 2:
        raise RuntimeError(f"mm: expected 2-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D (use matmul for other shapes)")
    if input._data.shape[1] != mat2._data.shape[0]:
        raise RuntimeError(f"mm: mat1 and mat2 shapes cannot be multiplied "
                           f"({_fmt(input.shape)} and {_fmt(mat2.shape)})")
    return matmul(input, mat2)


def bmm(input: Tensor, mat2: Tensor) -> Tensor:
    """Batched product of 3-D tensors with equal batch sizes."""
    _require_tensors("bmm", input, mat2)
    if input._data.ndim != 3 or mat2._data.ndim != 3:
        raise RuntimeError(f"bmm: expected 3-D tensors, got {input._data.ndim}-D and "
                           f"{mat2._data.ndim}-D")
    if input._data.shape[0] != mat2._data.shape[0]:
        raise RuntimeError(f"bmm: batch sizes differ: {input._data.shape[0]} and "
                           f"{mat2._data.shape[0]}")
    if input._data.shape[2] != mat2._data.shape[1]:
        raise RuntimeError(f"bmm: shapes cannot be multiplied ({_fmt(input.shape)} and "
                           f"{_fmt(mat2.shape)})")
    _check_dtypes("bmm", input, mat2)
    return Bmm.apply(input, mat2)


def mv(input: Tensor, vec: Tensor) -> Tensor:
    """Matrix-vector product."""
    _require_tensors("mv", input, vec)
    if input._data.ndim != 2 or vec._data.ndim != 1:
        raise RuntimeError(f"mv: expected a 2-D matrix and a 1-D vector, got "
                           f"{input._data.ndim}-D and {vec._data.ndim}-D")
    return matmul(input, vec)


def dot(input: Tensor, other: Tensor) -> Tensor:
    """Inner product of two 1-D tensors of the same length."""
    _require_tensors("dot", input, other)
    if input._data.ndim != 1 or other._data.ndim != 1:
        raise RuntimeError(f"1D tensors expected, but got {input._data.ndim}D and "
                           f"{other._data.ndim}D tensors")
    if input._data.shape[0] != other._data.shape[0]:
        raise RuntimeError(f"inconsistent tensor size, expected tensor [{input._data.shape[0]}] "
                           f"and src [{other._data.shape[0]}] to have the same number of "
                           "elements, but got "
                           f"{input._data.shape[0]} and {other._data.shape[0]} elements "
                           "respectively")
    if input._data.dtype != other._data.dtype:
        raise RuntimeError(f"dot : expected both vectors to have same dtype, but found "
                           f"{input.dtype} and {other.dtype}")
    return Dot.apply(input, other)


inner = dot
vdot = dot


def outer(input: Tensor, vec2: Tensor) -> Tensor:
    """Outer product of two 1-D tensors."""
    _require_tensors("outer", input, vec2)
    if input._data.ndim != 1 or vec2._data.ndim != 1:
        raise RuntimeError(f"outer: expected 1-D tensors, got {input._data.ndim}-D and "
                           f"{vec2._data.ndim}-D")
    return input.unsqueeze(1) * vec2.unsqueeze(0)


ger = outer

