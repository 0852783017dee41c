"""``gpugrad.autograd.functional``: derivatives of whole functions, as ``torch.autograd.functional``.

``jacobian``, ``hessian``, ``vjp``, ``jvp``, ``hvp`` and ``vhp`` take a Python function of
tensors and the point to differentiate at, and return derivatives in torch's layout: a single
tensor when the function takes (and returns) a single tensor, tuples (of tuples) when it takes
or returns tuples. ``jacobian(f, x)[i][j]`` has shape ``outputs[i].shape + inputs[j].shape``.

Everything runs on the reverse-mode engine: a Jacobian is one ``autograd.grad`` per output
element (reverse accumulation: cheap when outputs are few), and the Jacobian-vector products
``jvp`` / ``hvp`` use the "double backward trick": the vector-Jacobian product
``g(u) = J^T u`` is linear in ``u``, so differentiating ``g`` w.r.t. ``u`` in the direction
``v`` gives ``J v``. ``jacobian(..., strategy="forward-mode")`` runs on
``gpugrad.autograd.forward_ad`` (dual numbers), one forward pass per input element.
"""
from __future__ import annotations

import importlib

from .. import _factories
from .grad_mode import enable_grad, is_grad_enabled, set_grad_enabled

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _tensor_type():
    from .._tensor import Tensor
    return Tensor


# ---- argument plumbing (torch's helpers, same names and messages) -----------------------------
def _as_tuple(inp, arg_name, fn_name):
    """(was it a tuple, the tuple of tensors); anything but tensors raises TypeError."""
    Tensor = _tensor_type()
    is_tuple = isinstance(inp, tuple)
    if not is_tuple:
        inp = (inp,)
    for i, el in enumerate(inp):
        if not isinstance(el, Tensor):
            where = (f"the value at index {i} has type {type(el)}" if is_tuple
                     else f"the given {arg_name} has type {type(el)}")
            raise TypeError(f"The {arg_name} given to {fn_name} must be either a Tensor or a "
                            f"tuple of Tensors but {where}.")
    return is_tuple, inp


def _tuple_postprocess(res, to_unpack):
    """Undo the tupling: ``to_unpack`` is one flag, or (outer flag, inner flag)."""
    if isinstance(to_unpack, tuple):
        if not to_unpack[1]:
            res = tuple(el[0] for el in res)
        if not to_unpack[0]:
            res = res[0]
    elif not to_unpack:
        res = res[0]
    return res


def _grad_preprocess(inputs, create_graph, need_graph):
    """Fresh tensors to differentiate w.r.t.: with ``create_graph`` an input that requires
    grad is viewed (so the result stays differentiable w.r.t. it), else detached."""
    res = []
    for inp in inputs:
        if create_graph and inp.requires_grad:
            res.append(inp.view_as(inp))
        else:
            res.append(inp.detach().requires_grad_(need_graph))
    return tuple(res)


def _grad_postprocess(inputs, create_graph):
    """Detach results unless the user asked for their graph."""
    if isinstance(inputs[0], _tensor_type()):
        return inputs if create_graph else tuple(inp.detach() for inp in inputs)
    return tuple(_grad_postprocess(inp, create_graph) for inp in inputs)


def _validate_v(v, other, is_other_tuple):
    if len(other) != len(v):
        if is_other_tuple:
            raise RuntimeError(f"v is a tuple of invalid length: should be {len(other)} but got "
                               f"{len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for idx, (el_v, el_other) in enumerate(zip(v, other)):
        if el_v.size() != el_other.size():
            prepend = f"Entry {idx} in " if is_other_tuple else ""
            raise RuntimeError(f"{prepend}v has invalid size: should be {el_other.size()} but "
                               f"got {el_v.size()}.")


def _check_requires_grad(inputs, input_type, strict):
    """strict mode: every output / gradient must depend on the inputs."""
    if not strict:
        return
    for i, inp in enumerate(inputs):
        if inp is None:
            raise RuntimeError(f"The output of the user-provided function is independent of "
                               f"input {i}. This is not allowed in strict mode.")
        if inp.requires_grad:
            continue
        if input_type == "hessian":
            raise RuntimeError(
                f"The hessian of the user-provided function with respect to input {i} is "
                "independent of the input. This is not allowed in strict mode. You should ensure "
                "that your function is thrice differentiable and that the hessian depends on "
                "the inputs.")
        if input_type == "jacobian":
            raise RuntimeError(
                f"While computing the hessian, found that the jacobian of the user-provided "
                f"function with respect to input {i} is independent of the input. This is not "
                "allowed in strict mode. You should ensure that your function is twice "
                "differentiable and that the jacobian depends on the inputs (this would be "
                "violated by a linear function for example).")
        if input_type == "grad_inputs":
            raise RuntimeError(f"The gradient with respect to input {i} is independent of the "
                               "inputs of the user-provided function. This is not allowed in "
                               "strict mode.")
        raise RuntimeError(f"Output {i} of the user-provided function does not require "
                           "gradients. The outputs must be computed in a differentiable manner "
                           "from the input when running in strict mode.")


def _autograd_grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None):
    """``autograd.grad`` over the outputs that require grad (None for every input if none)."""
    from . import grad
    if grad_outputs is None:
        grad_outputs = (None,) * len(outputs)
    new_outputs, new_grad_outputs = [], []
    for out, g in zip(outputs, grad_outputs):
        if out is not None and out.requires_grad:
            new_outputs.append(out)
            new_grad_outputs.append(g)
    if not new_outputs:
        return (None,) * len(inputs)
    return grad(new_outputs, inputs, new_grad_outputs, allow_unused=True,
                create_graph=create_graph, retain_graph=retain_graph)


_STAGE_ERRORS = {
    "back": "The output of the user-provided function is independent of input {i}. This is not "
            "allowed in strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the "
                  "grad_outputs when using the double backward trick to compute forward mode "
                  "gradients. This is not allowed in strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. "
                   "This is not allowed in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry "
                         "{i} in the grad_jacobian. This is not allowed in strict mode as it "
                         "prevents from using the double backward trick to replace forward "
                         "mode AD.",
}


def _fill_in_zeros(grads, refs, strict, create_graph, stage):
    """Replace None gradients with zeros (or raise in strict mode)."""
    res = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise RuntimeError(_STAGE_ERRORS[stage].format(i=i))
            g = _factories.zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(f"The {what} of the user-provided function is independent of "
                               f"input {i}. This is not allowed in strict mode when "
                               "create_graph=True.")
        res.append(g)
    return tuple(res)



def _final_vjp(outputs, inputs, v, like, strict, create_graph, stage):
    """The last vector-Jacobian product of vjp/jvp/vhp/hvp (recorded only under
    ``create_graph``), with torch's zeros for unused inputs (``like``) and its strict errors."""
    with set_grad_enabled(True if create_graph else is_grad_enabled()):
        grad_res = _autograd_grad(outputs, inputs, v, create_graph=create_graph)
        return _fill_in_zeros(grad_res, like, strict, create_graph, stage)

def _prepare_v(v, ref, is_ref_tuple, create_graph, fn_name, what):
    """Check ``v`` against ``ref`` (inputs or outputs); None is allowed for one scalar."""
    if v is not None:
        _, v = _as_tuple(v, "v", fn_name)
        v = _grad_preprocess(v, create_graph=create_graph, need_graph=False)
        _validate_v(v, ref, is_ref_tuple)
        return v
    if len(ref) != 1 or ref[0].numel() != 1:
        raise RuntimeError(f"The vector v can only be None if the {what} a single Tensor with "
                           "a single element.")
    return None


# ---- the products ------------------------------------------------------------------------------
def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """Vector-Jacobian product ``v^T J`` of ``func`` at ``inputs``.

    Returns ``(func(inputs), vjp)``; ``vjp`` has the structure of ``inputs``. ``v`` has the
    structure of the outputs (it may be None when the output is a single-element tensor).
    """
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vjp")
        inputs = _grad_preprocess(inputs, create_graph=create_graph, need_graph=True)
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function",
                                              "vjp")
        _check_requires_grad(outputs, "outputs", strict=strict)
        v = _prepare_v(v, outputs, is_outputs_tuple, create_graph, "vjp",
                       "user-provided function returns")
    res = _final_vjp(outputs, inputs, v, inputs, strict, create_graph, "back")
    outputs = _grad_postprocess(outputs, create_graph)
    res = _grad_postprocess(res, create_graph)
    return (_tuple_postprocess(outputs, is_outputs_tuple),
            _tuple_postprocess(res, is_inputs_tuple))


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """Jacobian-vector product ``J v`` of ``func`` at ``inputs`` (double backward trick).

    Returns ``(func(inputs), jvp)``; ``jvp`` has the structure of the outputs, ``v`` that of
    ``inputs`` (it may be None when the input is a single-element tensor).
    """
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jvp")
        inputs = _grad_preprocess(inputs, create_graph=create_graph, need_graph=True)
        v = _prepare_v(v, inputs, is_inputs_tuple, create_graph, "jvp",
                       "input to the user-provided function is")
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function",
                                              "jvp")
        _check_requires_grad(outputs, "outputs", strict=strict)
        # The backward is linear in grad_outputs, so their value does not matter (zeros: no
        # inf or nan can leak in); they only have to require grad.
        grad_outputs = tuple(_factories.zeros_like(out, requires_grad=True) for out in outputs)
        grad_inputs = _autograd_grad(outputs, inputs, grad_outputs, create_graph=True)
        _check_requires_grad(grad_inputs, "grad_inputs", strict=strict)
    res = _final_vjp(grad_inputs, grad_outputs, v, outputs, strict, create_graph, "back_trick")
    outputs = _grad_postprocess(outputs, create_graph)
    res = _grad_postprocess(res, create_graph)
    return (_tuple_postprocess(outputs, is_outputs_tuple),
            _tuple_postprocess(res, is_outputs_tuple))


# ---- Jacobians -----------------------------------------------------------------------------------
def _forward_ad():
    """The forward-mode AD module, looked up at call time (it may be added later)."""
    try:
        fwad = importlib.import_module("gpugrad.autograd.forward_ad")
    except ImportError as e:
        raise NotImplementedError(
            "jacobian(strategy=\"forward-mode\") needs forward-mode AD "
            "(gpugrad.autograd.forward_ad: dual_level, make_dual, unpack_dual), which is not "
            "available in this build. Use strategy=\"reverse-mode\" (the default).") from e
    for name in ("dual_level", "make_dual", "unpack_dual"):
        if not hasattr(fwad, name):
            raise NotImplementedError(f"jacobian(strategy=\"forward-mode\") needs "
                                      f"gpugrad.autograd.forward_ad.{name}, which is missing. "
                                      "Use strategy=\"reverse-mode\" (the default).")
    return fwad


def _jacfwd(func, inputs, strict=False, vectorize=False):
    """Forward accumulation: one dual-number pass per input element (column of J)."""
    if strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and "
                           "`strategy=\"forward-mode\"` are not supported together (yet). Please "
                           "either set `strict=False` or `strategy=\"reverse-mode\"`.")
    fwad = _forward_ad()
    from .. import ops
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
    inputs = tuple(inp.detach() for inp in inputs)
    columns = None  # columns[i][j]: list over the elements of input j of d out_i / d x_j[k]
    is_outputs_tuple, primal_outs = False, ()
    for j, inp in enumerate(inputs):
        flat_basis = _factories.zeros(inp.numel(), dtype=inp.dtype, device=inp.device)
        for k in range(inp.numel()):
            tangent = flat_basis.clone()
            tangent._data[k] = 1
            with fwad.dual_level():
                duals = tuple(fwad.make_dual(x, tangent.view(x.shape)) if n == j else x
                              for n, x in enumerate(inputs))
                is_outputs_tuple, outs = _as_tuple(func(*duals), "outputs of the "
                                                   "user-provided function", "jacobian")
                unpacked = [fwad.unpack_dual(o) for o in outs]
            primal_outs = tuple(u[0] for u in unpacked)
            if columns is None:
                columns = [[[] for _ in inputs] for _ in outs]
            for i, (primal, t) in enumerate(unpacked):
                columns[i][j].append(_factories.zeros_like(primal) if t is None else t.detach())
    jac = tuple(
        tuple(ops.stack(columns[i][j], dim=-1).reshape(tuple(out.shape) + tuple(inp.shape))
              if columns[i][j] else _factories.zeros(tuple(out.shape) + tuple(inp.shape),
                                                     dtype=out.dtype, device=out.device)
              for j, inp in enumerate(inputs))
        for i, out in enumerate(primal_outs))
    return _tuple_postprocess(jac, (is_outputs_tuple, is_inputs_tuple))


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False,
             strategy="reverse-mode"):
    """The Jacobian of ``func`` at ``inputs``.

    A single tensor in and out gives one tensor of shape ``out.shape + in.shape``; tuples give
    ``J[i][j]`` for output ``i`` and input ``j`` (one level of tuple dropped where ``func``
    takes or returns a single tensor). ``strategy="reverse-mode"`` runs one backward pass per
    output element, ``"forward-mode"`` one forward-mode pass per input element (prefer it
    when outputs outnumber inputs). ``vectorize`` is accepted for torch compatibility: gpugrad
    has no vmap, so it computes the same result with the same loop.
    """
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode". '
                             'Hint: If your function has more outputs than inputs, '
                             '"forward-mode" tends to be more performant. Otherwise, prefer to '
                             'use "reverse-mode".')
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError(
                "torch.autograd.functional.jacobian: `create_graph=True` and "
                "`strategy=\"forward-mode\"` are not supported together (yet). Please either "
                "set `create_graph=False` or `strategy=\"reverse-mode\"`.")
        return _jacfwd(func, inputs, strict, vectorize)
    if vectorize and strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and "
                           "`vectorized=True` are not supported together. Please either set "
                           "`strict=False` or `vectorize=False`.")
    from .. import ops
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "jacobian")
        inputs = _grad_preprocess(inputs, create_graph=create_graph, need_graph=True)
        outputs = func(*inputs)
        is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function",
                                              "jacobian")
        _check_requires_grad(outputs, "outputs", strict=strict)
        jac = []
        for i, out in enumerate(outputs):
            rows = [[] for _ in inputs]  # rows[j][k]: d out[k] / d inputs[j]
            flat = out.reshape(-1)
            for k in range(out.numel()):
                vj = _autograd_grad((flat[k],), inputs, retain_graph=True,
                                    create_graph=create_graph)
                for j, (g, inp) in enumerate(zip(vj, inputs)):
                    if g is not None:
                        if strict and create_graph and not g.requires_grad:
                            raise RuntimeError(
                                f"The jacobian of the user-provided function is independent of "
                                f"input {j}. This is not allowed in strict mode when "
                                "create_graph=True.")
                        rows[j].append(g)
                    else:
                        if strict:
                            raise RuntimeError(
                                f"Output {i} of the user-provided function is independent of "
                                f"input {j}. This is not allowed in strict mode.")
                        rows[j].append(_factories.zeros_like(inp))
            jac.append(tuple(
                ops.stack(rows[j], dim=0).view(tuple(out.shape) + tuple(inp.shape)) if rows[j]
                else _factories.zeros(tuple(out.shape) + tuple(inp.shape), dtype=inp.dtype,
                                      device=inp.device)
                for j, inp in enumerate(inputs)))
        jac = _grad_postprocess(tuple(jac), create_graph) if jac else ()
        return _tuple_postprocess(jac, (is_outputs_tuple, is_inputs_tuple))


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False,
            outer_jacobian_strategy="reverse-mode"):
    """The Hessian of a scalar-valued ``func`` at ``inputs``: ``H[i][j]`` has shape
    ``inputs[i].shape + inputs[j].shape`` (a single tensor for a single input)."""
    is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')
    Tensor = _tensor_type()

    def ensure_single_output_function(*inp):
        out = func(*inp)
        is_out_tuple, t_out = _as_tuple(out, "outputs of the user-provided function", "hessian")
        _check_requires_grad(t_out, "outputs", strict=strict)
        if is_out_tuple or not isinstance(out, Tensor):
            raise RuntimeError("The function given to hessian should return a single Tensor")
        if out.numel() != 1:
            raise RuntimeError("The Tensor returned by the function given to hessian should "
                               "contain a single element")
        return out.squeeze()

    def jac_func(*inp):
        if outer_jacobian_strategy == "forward-mode":
            inp = tuple(t.requires_grad_(True) for t in inp)
        jac = jacobian(ensure_single_output_function, inp, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict=strict)
        return jac

    res = jacobian(jac_func, inputs, create_graph=create_graph, strict=strict,
                   vectorize=vectorize, strategy=outer_jacobian_strategy)
    return _tuple_postprocess(res, (is_inputs_tuple, is_inputs_tuple))


def _scalar_function_outputs(func, inputs, fn_name):
    outputs = func(*inputs)
    is_outputs_tuple, outputs = _as_tuple(outputs, "outputs of the user-provided function",
                                          fn_name)
    if is_outputs_tuple or not isinstance(outputs[0], _tensor_type()):
        raise RuntimeError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {fn_name} should "
                           "contain a single element")
    return is_outputs_tuple, outputs


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """Vector-Hessian product ``v^T H`` of a scalar ``func``; returns ``(func(inputs), vhp)``."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "vhp")
        inputs = _grad_preprocess(inputs, create_graph=create_graph, need_graph=True)
        v = _prepare_v(v, inputs, is_inputs_tuple, create_graph, "vhp",
                       "input to the user-provided function is")
        is_outputs_tuple, outputs = _scalar_function_outputs(func, inputs, "vhp")
        _check_requires_grad(outputs, "outputs", strict=strict)
        jac = _autograd_grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict=strict)
    res = _final_vjp(jac, inputs, v, inputs, strict, create_graph, "double_back")
    outputs = _grad_postprocess(outputs, create_graph)
    res = _grad_postprocess(res, create_graph)
    return (_tuple_postprocess(outputs, is_outputs_tuple),
            _tuple_postprocess(res, is_inputs_tuple))


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """Hessian-vector product ``H v`` of a scalar ``func`` (double backward trick); returns
    ``(func(inputs), hvp)``. Equal to ``vhp`` for twice continuously differentiable ``func``."""
    with enable_grad():
        is_inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hvp")
        inputs = _grad_preprocess(inputs, create_graph=create_graph, need_graph=True)
        v = _prepare_v(v, inputs, is_inputs_tuple, create_graph, "hvp",
                       "input to the user-provided function is")
        is_outputs_tuple, outputs = _scalar_function_outputs(func, inputs, "hvp")
        _check_requires_grad(outputs, "outputs", strict=strict)
        jac = _autograd_grad(outputs, inputs, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict=strict)
        grad_jac = tuple(_factories.zeros_like(inp, requires_grad=True) for inp in inputs)
        double_back = _autograd_grad(jac, inputs, grad_jac, create_graph=True)
        _check_requires_grad(jac, "hessian", strict=strict)
    res = _final_vjp(double_back, grad_jac, v, inputs, strict, create_graph, "double_back_trick")
    outputs = _grad_postprocess(outputs, create_graph)
    res = _grad_postprocess(res, create_graph)
    return (_tuple_postprocess(outputs, is_outputs_tuple),
            _tuple_postprocess(res, is_inputs_tuple))
