"""``gradcheck`` and ``gradgradcheck``: the engine's gradients against finite differences.

For every output ``o`` and every input ``i`` that requires grad, two Jacobians are built in
torch's layout (row = element of input ``i``, column = element of output ``o``):

- numerical: central differences ``(f(x + eps) - f(x - eps)) / 2 eps``, perturbing one element
  of the input's array in place and re-running ``func`` under ``no_grad``;
- analytical: reverse mode, one ``autograd.grad`` per output element with a unit-vector
  ``grad_outputs``;

and they must agree as ``|a - n| <= atol + rtol * |n|``. With ``check_forward_ad=True`` a
third Jacobian, built by forward mode (one dual-number pass per input element), must agree
with the numerical one too. Comparisons run on the host in
float64, so the same check works for CPU and CUDA tensors.
"""
from __future__ import annotations

import warnings

import numpy as np

from .. import _backend
from .function import Function
from .grad_mode import enable_grad, no_grad

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError"]

_PRINT_LIMIT = 400  # print whole Jacobians in the error message up to this many entries


class GradcheckError(RuntimeError):
    """A gradient check failed."""


def _as_tuple(x):
    if isinstance(x, tuple):
        return x
    return tuple(x) if isinstance(x, list) else (x,)


def _is_tensor(x) -> bool:
    from .._tensor import Tensor
    return isinstance(x, Tensor)


def _host(t) -> np.ndarray:
    """A flat float64 host copy of a tensor's data."""
    return np.array(_backend.to_device(t._data, _backend.CPU), dtype=np.float64).reshape(-1)


def _unit(out, k):
    """A tensor like ``out`` that is 1 at flat position ``k`` and 0 elsewhere."""
    from .._tensor import Tensor
    xp = _backend.array_module(out.device)
    a = xp.zeros(out._data.size, dtype=out._data.dtype)
    a[k] = 1
    return Tensor._make(a.reshape(out._data.shape))


def _float_outputs(outputs):
    return [k for k, o in enumerate(outputs) if _is_tensor(o) and o.dtype.is_floating_point]


# ---- the two Jacobians --------------------------------------------------------------------
def _evaluate(func, inputs, out_idx):
    with no_grad():
        outs = _as_tuple(func(*inputs))
    return [_host(outs[k]) for k in out_idx]  # copies: an output may be a view of an input


def _numerical(func, inputs, diff_idx, out_idx, outputs, eps):
    """{(o, i): Jacobian (numel_i x numel_o)} by central differences."""
    jac = {(o, i): np.zeros((inputs[i].numel(), outputs[o].numel()))
           for o in out_idx for i in diff_idx}
    for i in diff_idx:
        arr = inputs[i]._data
        for row, pos in enumerate(np.ndindex(arr.shape)):
            orig = arr[pos].item()
            try:
                arr[pos] = orig - eps
                minus = _evaluate(func, inputs, out_idx)
                arr[pos] = orig + eps
                plus = _evaluate(func, inputs, out_idx)
            finally:
                arr[pos] = orig
            for o, p, m in zip(out_idx, plus, minus):
                jac[o, i][row] = (p - m) / (2 * eps)
    return jac


def _grads(out, diff, grad_output, check_grad_dtypes):
    """``autograd.grad`` of one output, with None (unused input) kept as None."""
    from . import grad
    gs = grad(out, diff, grad_output, retain_graph=True, allow_unused=True)
    for g, x in zip(gs, diff):
        if g is None:
            continue
        if g.shape != x.shape:
            raise GradcheckError(f"Gradient has shape mismatch: got {list(g.shape)} for an "
                                 f"input of shape {list(x.shape)}")
        if check_grad_dtypes and (g.dtype is not x.dtype or g.device != x.device):
            raise GradcheckError(f"Gradient has dtype mismatch: got {g.dtype} on {g.device} "
                                 f"for an input of dtype {x.dtype} on {x.device}")
    return gs


def _analytical(inputs, outputs, diff_idx, out_idx, check_grad_dtypes):
    """{(o, i): Jacobian (numel_i x numel_o)} by reverse mode, one unit vector at a time."""
    diff = [inputs[i] for i in diff_idx]
    jac = {(o, i): np.zeros((inputs[i].numel(), outputs[o].numel()))
           for o in out_idx for i in diff_idx}
    for o in out_idx:
        out = outputs[o]
        if not out.requires_grad:
            continue  # no path to any input: the Jacobian is zero
        for col in range(out.numel()):
            for i, g in zip(diff_idx, _grads(out, diff, _unit(out, col), check_grad_dtypes)):
                if g is not None:
                    jac[o, i][:, col] = _host(g)
    return jac


def _mismatch(o, i, shape, a, n, atol, rtol):
    bad = np.argwhere(~(np.abs(a - n) <= atol + rtol * np.abs(n)))
    r, c = (int(v) for v in bad[0])
    where_ = f"index {tuple(int(v) for v in np.unravel_index(r, shape))}" if shape else "0-d"
    msg = (f"Jacobian mismatch for output {o} with respect to input {i}: first mismatch at "
           f"(row {r}, col {c}) = (input element {r} [{where_}], output element {c}): "
           f"numerical {float(n[r, c])!r} vs analytical {float(a[r, c])!r} ({len(bad)} of "
           f"{a.size} entries fail |a - n| <= atol + rtol * |n| with atol={atol}, rtol={rtol})")
    if a.size <= _PRINT_LIMIT:
        with np.printoptions(precision=6, suppress=True, linewidth=120):
            msg += f"\nnumerical:\n{n + 0.0}\nanalytical:\n{a + 0.0}"  # + 0.0: no -0.
    return msg


# ---- the checks -----------------------------------------------------------------------------
def _slow_check(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol, nondet_tol,
                check_grad_dtypes):
    diff_out = [o for o in out_idx if outputs[o].requires_grad]
    numerical = _numerical(func, inputs, diff_idx, out_idx, outputs, eps)
    if not diff_out:  # nothing differentiable: then the function must be locally constant
        for (o, i), n in numerical.items():
            if not np.allclose(n, 0, rtol=rtol, atol=atol):
                raise GradcheckError(f"Numerical gradient for function expected to be zero "
                                     f"(output {o} does not require grad), but output {o} "
                                     f"changes with input {i}")
        return
    analytical = _analytical(inputs, outputs, diff_idx, diff_out, check_grad_dtypes)
    for key, a in analytical.items():
        n = numerical[key]
        if not np.allclose(a, n, rtol=rtol, atol=atol):
            raise GradcheckError(_mismatch(*key, inputs[key[1]].shape, a, n, atol, rtol))
    _check_reentrant(inputs, outputs, diff_idx, diff_out, analytical, nondet_tol)


def _check_reentrant(inputs, outputs, diff_idx, diff_out, analytical, nondet_tol):
    """A second backward with the same grad_output must give the same gradient (within
    ``nondet_tol``). Checked for one column of each Jacobian: running them all twice would
    double the cost for little gain."""
    diff = [inputs[i] for i in diff_idx]
    for o in diff_out:
        out = outputs[o]
        if out.numel() == 0:
            continue
        col = out.numel() // 2
        for i, g in zip(diff_idx, _grads(out, diff, _unit(out, col), False)):
            again = np.zeros(inputs[i].numel()) if g is None else _host(g)
            if np.abs(analytical[o, i][:, col] - again).max(initial=0.0) > nondet_tol:
                raise GradcheckError(
                    f"Backward is not reentrant, i.e., running backward with same input and "
                    f"grad_output multiple times gives different values (output {o}, input "
                    f"{i}), although analytical gradient matches numerical gradient. The "
                    f"tolerance for nondeterminism was {nondet_tol}.")


def _random_unit(rng, n):
    v = rng.uniform(size=n)
    return v / np.linalg.norm(v) if n else v


def _fast_check(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol, check_grad_dtypes):
    """torch's fast mode: compare the scalars ``v^T J u`` for random unit vectors u, v."""
    from .._tensor import Tensor
    diff_out = [o for o in out_idx if outputs[o].requires_grad]
    rng = np.random.RandomState(0)
    us = {i: _random_unit(rng, inputs[i].numel()) for i in diff_idx}
    vs = {o: _random_unit(rng, outputs[o].numel()) for o in out_idx}
    numerical = {}
    for i in diff_idx:  # J u is a directional derivative: two evaluations per input
        arr = inputs[i]._data
        orig = arr.copy()
        du = _backend.to_device(us[i].reshape(arr.shape).astype(arr.dtype), inputs[i].device)
        try:
            arr[...] = orig - eps * du
            minus = _evaluate(func, inputs, out_idx)
            arr[...] = orig + eps * du
            plus = _evaluate(func, inputs, out_idx)
        finally:
            arr[...] = orig
        for o, p, m in zip(out_idx, plus, minus):
            numerical[o, i] = float(vs[o] @ ((p - m) / (2 * eps)))
    diff = [inputs[i] for i in diff_idx]
    for o in out_idx:
        if o in diff_out:
            out = outputs[o]
            v = Tensor._make(_backend.to_device(vs[o].reshape(out._data.shape).astype(
                out._data.dtype), out.device))
            gs = _grads(out, diff, v, check_grad_dtypes)
        else:
            gs = [None] * len(diff)
        for i, g in zip(diff_idx, gs):
            a = 0.0 if g is None else float(_host(g) @ us[i])
            n = numerical[o, i]
            tol = atol * us[i].sum() * vs[o].sum() + rtol * abs(n)  # torch's adjusted atol
            if not abs(a - n) <= tol:
                raise GradcheckError(
                    f"Jacobian mismatch for output {o} with respect to input {i} (fast mode, "
                    f"comparing v^T J u for random unit vectors u, v): numerical {n!r} vs "
                    f"analytical {a!r}. Rerun with fast_mode=False to see the failing entry.")


class _UndefinedGrad(Function):
    """Identity whose backward returns None: the next node sees an undefined gradient."""

    @staticmethod
    def forward(ctx, x):
        return x

    @staticmethod
    def backward(ctx, g):
        return None


def _check_undefined_grad(func, inputs, diff_idx):
    """Backward must cope with undefined (None) output gradients, and then give zeros."""
    from . import grad
    diff = [inputs[i] for i in diff_idx]

    def outputs(undefined):
        with enable_grad():
            outs = [o for o in _as_tuple(func(*inputs)) if _is_tensor(o) and o.requires_grad]
            return [_UndefinedGrad.apply(o) if undefined in (None, k) else o
                    for k, o in enumerate(outs)]

    n_out = len(outputs(-1))
    cases = [None] + (list(range(n_out)) if n_out > 1 else [])  # all undefined, then each one
    for which in cases:
        outs = outputs(which)
        zeros = [o.new_zeros(o.shape) for o in outs]
        try:
            gs = grad(outs, diff, zeros, allow_unused=True)
        except RuntimeError as e:
            raise GradcheckError(f"Expected backward function to handle undefined output "
                                 f"grads (output {which if which is not None else 'all'}): "
                                 f"{e}") from e
        for i, g in zip(diff_idx, gs):
            if g is not None and _host(g).any():
                raise GradcheckError(f"Expected all input grads to be undefined or zero when "
                                     f"all output grads are undefined or zero (input {i})")


def _forward_ad_module():
    """gpugrad.autograd.forward_ad, looked up at call time (it may be added later)."""
    import importlib
    try:
        fwad = importlib.import_module("gpugrad.autograd.forward_ad")
    except ImportError as e:
        raise NotImplementedError("gradcheck(check_forward_ad=True) needs forward-mode AD "
                                  "(gpugrad.autograd.forward_ad), which is not available in "
                                  "this build. Leave check_forward_ad=False.") from e
    return fwad


def _forward_jacobian(func, inputs, diff_idx, out_idx, outputs):
    """{(o, i): Jacobian (numel_i x numel_o)} by forward mode: one dual-number pass per
    input element, with tangent = that unit vector."""
    fwad = _forward_ad_module()
    jac = {(o, i): np.zeros((inputs[i].numel(), outputs[o].numel()))
           for o in out_idx for i in diff_idx}
    for i in diff_idx:
        x = inputs[i]
        for row in range(x.numel()):
            tangent = _unit(x, row)
            with fwad.dual_level():
                args = tuple(fwad.make_dual(a.detach(), tangent) if n == i else a
                             for n, a in enumerate(inputs))
                outs = _as_tuple(func(*args))
                for o in out_idx:
                    t = fwad.unpack_dual(outs[o])[1]  # (primal, tangent)
                    if t is not None:
                        if t.shape != outs[o].shape:
                            raise GradcheckError(
                                f"Forward AD gradient has shape mismatch: got {list(t.shape)} "
                                f"for output {o} of shape {list(outs[o].shape)}")
                        jac[o, i][row] = _host(t)
    return jac


def _check_forward_ad(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol):
    numerical = _numerical(func, inputs, diff_idx, out_idx, outputs, eps)
    forward = _forward_jacobian(func, inputs, diff_idx, out_idx, outputs)
    for key, a in forward.items():
        n = numerical[key]
        if not np.allclose(a, n, rtol=rtol, atol=atol):
            raise GradcheckError("While considering the forward AD gradients: "
                                 + _mismatch(*key, inputs[key[1]].shape, a, n, atol, rtol))


def gradcheck(func, inputs, *, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              nondet_tol=0.0, check_undefined_grad=True, check_grad_dtypes=False,
              check_batched_grad=False, check_batched_forward_grad=False,
              check_forward_ad=False, check_backward_ad=True, fast_mode=False,
              masked=None) -> bool:
    """Check the gradients of ``func`` at ``inputs`` against finite differences.

    ``func`` returns a tensor or a tuple of tensors; ``inputs`` is a tensor or a tuple whose
    tensors with ``requires_grad=True`` are checked (they should be float64; anything else is
    passed through as it is).
    Returns True, or raises ``GradcheckError`` naming the output, the input and the first
    failing Jacobian entry (returns False instead with ``raise_exception=False``).
    ``fast_mode`` compares ``v^T J u`` for random ``u``, ``v`` instead of whole Jacobians.
    ``check_forward_ad`` also compares the Jacobian built by forward mode
    (``gpugrad.autograd.forward_ad``) with the numerical one; ``check_backward_ad=False``
    skips the reverse-mode checks. ``check_batched_grad`` / ``check_batched_forward_grad``
    need vmap, which gpugrad does not have: True raises NotImplementedError. ``masked`` is
    accepted for torch compatibility (no sparse tensors).
    """
    if check_batched_grad or check_batched_forward_grad:
        which = "check_batched_grad" if check_batched_grad else "check_batched_forward_grad"
        raise NotImplementedError(f"gradcheck({which}=True) checks gradients computed with "
                                  "vmap, which gpugrad does not have. Leave it False.")
    if not (check_forward_ad or check_backward_ad):
        raise ValueError("Expected at least one of check_forward_ad or check_backward_ad to "
                         "be True")
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if _is_tensor(x) and x.requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck expects at least one input tensor to require gradient, but "
                         "none of them have requires_grad=True.")
    for i in diff_idx:
        if inputs[i].dtype.name != "float64":
            warnings.warn(f"Input #{i} requires gradient and is not a double precision floating "
                          "point. This check will likely fail if all the inputs are not of "
                          "double precision floating point.", UserWarning, stacklevel=2)
    try:
        with enable_grad():
            outputs = _as_tuple(func(*inputs))
        out_idx = _float_outputs(outputs)
        if check_backward_ad:
            if fast_mode:
                _fast_check(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol,
                            check_grad_dtypes)
            else:
                _slow_check(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol,
                            nondet_tol, check_grad_dtypes)
            if check_undefined_grad:
                _check_undefined_grad(func, inputs, diff_idx)
        if check_forward_ad:
            _check_forward_ad(func, inputs, outputs, diff_idx, out_idx, eps, atol, rtol)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _random_grad_output(out, rng, non_contiguous):
    """Uniform(-1, 1) values of the shape, dtype and device of ``out``, requiring grad."""
    from .._tensor import Tensor
    dt, shape = out._data.dtype, out._data.shape
    if non_contiguous and shape:
        # every other element of a wider array: same values, strided memory
        wide = rng.uniform(-1, 1, size=shape[:-1] + (2 * shape[-1],)).astype(dt)
        arr = _backend.to_device(wide, out.device)[..., ::2]
    else:
        arr = _backend.to_device(rng.uniform(-1, 1, size=shape).astype(dt), out.device)
    return Tensor._make(arr).requires_grad_()


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
                  check_fwd_over_rev=False, check_rev_over_rev=True, fast_mode=False,
                  masked=False) -> bool:
    """Check second derivatives: ``gradcheck`` of ``(inputs, grad_outputs) ->
    autograd.grad(func(inputs), inputs, grad_outputs, create_graph=True)``.

    Without ``grad_outputs``, random ones (seeded, so reruns see the same values) that
    require grad are used, one per output of ``func`` that requires grad.
    """
    from . import grad
    inputs = _as_tuple(inputs)
    diff_idx = [i for i, x in enumerate(inputs) if _is_tensor(x) and x.requires_grad]

    def diff_outputs(ins):
        return [o for o in _as_tuple(func(*ins)) if _is_tensor(o) and o.requires_grad]

    if grad_outputs is None:
        rng = np.random.RandomState(0)
        with enable_grad():
            grad_outputs = tuple(_random_grad_output(o, rng, gen_non_contig_grad_outputs)
                                 for o in diff_outputs(inputs))
    else:
        grad_outputs = _as_tuple(grad_outputs)
    n_in = len(inputs)

    def backward_of_func(*args):
        ins, gos = args[:n_in], args[n_in:]
        with enable_grad():
            gs = grad(diff_outputs(ins), [ins[i] for i in diff_idx], gos, create_graph=True,
                      allow_unused=True)
        return tuple(g for g in gs if g is not None)

    return gradcheck(backward_of_func, inputs + grad_outputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, nondet_tol=nondet_tol,
                     check_undefined_grad=check_undefined_grad,
                     check_grad_dtypes=check_grad_dtypes,
                     check_batched_grad=check_batched_grad,
                     check_forward_ad=check_fwd_over_rev, check_backward_ad=check_rev_over_rev,
                     fast_mode=fast_mode)
