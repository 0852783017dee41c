"""``gpugrad.func``: composable function transforms, as ``torch.func`` / JAX.

``grad(f)`` is a new function that returns the gradient of ``f``; it can be transformed again
(``grad(grad(f))``), and mixed with ``vjp``, ``jvp``, ``jacrev``, ``jacfwd`` and ``hessian``.

How it works on a tape-based engine: every call of a transformed function differentiates
w.r.t. fresh tensors made for that call (a detached leaf, or a view when the argument already
requires grad because an outer transform is differentiating it), and records the reverse pass
(``create_graph=True``) exactly when the result can matter to something outside the call:
when the function's graph reaches a tensor that requires grad and is not one of the call's own
inputs (an outer transform's input, a captured parameter), or when the cotangents / tangents
themselves require grad. At the top level nothing is recorded, and results come back detached.

``jvp`` and ``jacfwd`` use the double-vjp trick: ``u -> J^T u`` is linear, so its vjp with
cotangent ``v`` is ``J v``. It needs only reverse mode, and composes with the other transforms.

Arguments and outputs may be tensors or (nested) tuples, lists and dicts of tensors.
"""
from __future__ import annotations

import functools

from . import _factories
from .autograd import grad as _autograd_grad
from .autograd.function import BackwardNode
from .autograd.grad_mode import enable_grad

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "jacrev", "jacfwd", "hessian"]


def _Tensor():
    from ._tensor import Tensor
    return Tensor


# ---- pytrees (tuples, lists, dicts of tensors) -----------------------------------------------
def _flatten(tree):
    """(leaves, spec): ``_unflatten(leaves, spec)`` rebuilds ``tree``."""
    if isinstance(tree, (tuple, list)):
        leaves, specs = [], []
        for t in tree:
            lv, sp = _flatten(t)
            leaves += lv
            specs.append((len(lv), sp))
        return leaves, (type(tree), specs)
    if isinstance(tree, dict):
        keys = list(tree)
        leaves, spec = _flatten([tree[k] for k in keys])
        return leaves, (dict, (keys, spec))
    return [tree], None


def _unflatten(leaves, spec):
    leaves = list(leaves)
    if spec is None:
        return leaves[0]
    kind, rest = spec
    if kind is dict:
        keys, inner = rest
        return dict(zip(keys, _unflatten(leaves, inner)))
    out, pos = [], 0
    for n, sp in rest:
        out.append(_unflatten(leaves[pos:pos + n], sp))
        pos += n
    return kind(out) if kind in (tuple, list) else kind(*out)


def _tensor_leaves(tree, what):
    leaves, spec = _flatten(tree)
    Tensor = _Tensor()
    for i, t in enumerate(leaves):
        if not isinstance(t, Tensor):
            raise RuntimeError(f"{what}: expected only Tensors (in tuples, lists or dicts), but "
                               f"found a {type(t).__name__} at position {i}")
    return leaves, spec


# ---- the core: differentiable inputs and the vjp ------------------------------------------------
def _fresh(t):
    """A tensor to differentiate w.r.t. for this call (see the module docstring)."""
    if not t.dtype.is_floating_point:
        raise RuntimeError(f"gpugrad.func: only floating point Tensors can be differentiated, "
                           f"got an input of dtype {t.dtype}")
    return t.view_as(t) if t.requires_grad else t.detach().requires_grad_()


def _reaches_foreign(tensors, own):
    """True if the graph of ``tensors`` reaches a tensor that requires grad other than the
    leaves in ``own``. A non-leaf in ``own`` (a view made because the argument requires grad
    for an outer transform) is walked through: what it views is foreign."""
    own_nodes = set()
    for t in own:
        if t.grad_fn is None:
            acc = t._grad_accumulator_if_exists()
            if acc is not None:
                own_nodes.add(id(acc))
    own_ids = {id(t) for t in own if t.grad_fn is None}
    stack, seen = [], set()
    for t in tensors:
        if not t.requires_grad:
            continue
        if t.grad_fn is None:
            if id(t) not in own_ids:
                return True  # a foreign leaf, returned as is
            continue
        stack.append(t.grad_fn)
    while stack:
        node = stack.pop()
        if id(node) in seen or id(node) in own_nodes:
            continue
        seen.add(id(node))
        if not isinstance(node, BackwardNode):
            return True  # the AccumulateGrad of a foreign leaf (or another kind of root)
        for nxt, _ in node.next_functions:
            if nxt is not None:
                stack.append(nxt)
    return False


def _vjp_core(outs, ins, cotangents, retain_graph, force_graph=False, own=(), foreign=None):
    """``cotangents^T d outs / d ins``; zeros where unused. Records the reverse pass only
    when needed (foreign history, cotangents requiring grad, or ``force_graph``); ``own``
    lists more leaves of this call that are not foreign; ``foreign``, when known, saves
    the walk over the graph."""
    pairs = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
    if not pairs:
        return [_factories.zeros_like(x) for x in ins]
    if foreign is None:
        foreign = _reaches_foreign([o for o, _ in pairs], list(ins) + list(own))
    create_graph = force_graph or foreign or any(c.requires_grad for _, c in pairs)
    with enable_grad():
        gs = _autograd_grad([o for o, _ in pairs], list(ins), [c for _, c in pairs],
                            retain_graph=retain_graph or create_graph, create_graph=create_graph,
                            allow_unused=True)
    return [_factories.zeros_like(x) if g is None else g for g, x in zip(gs, ins)]


def _split_aux(out, has_aux, name):
    if not has_aux:
        return out, None
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise RuntimeError(f"{name}(f, ...)(*args): output of function f should be a tuple: "
                           "(output, aux) if has_aux is True")
    return out[0], out[1]


def _detach_aux(aux, own):
    """Aux outputs come back as the function made them, cut from this call's inputs (but
    still differentiable by an outer transform, like the value)."""
    leaves, spec = _flatten(aux)
    Tensor = _Tensor()
    return _unflatten([_keep_if_foreign(t, own) if isinstance(t, Tensor) else t
                       for t in leaves], spec)


def _check_argnums(argnums, n_args, name):
    if isinstance(argnums, int):
        nums = (argnums,)
    elif isinstance(argnums, tuple) and argnums and all(isinstance(a, int) for a in argnums):
        nums = argnums
    else:
        raise RuntimeError(f"{name}: argnums must be int or Tuple[int, ...], got: {argnums!r}")
    norm = []
    for a in nums:
        if not -n_args <= a < n_args:
            raise RuntimeError(f"{name}: Got argnums={a}, but only {n_args} positional inputs")
        norm.append(a % n_args)
    if len(set(norm)) != len(norm):
        raise RuntimeError(f"{name}: argnums must be unique, got {argnums!r}")
    return norm


def _prepare_args(args, argnums, name):
    """Replace the differentiated arguments with fresh tensors; returns (args, diff trees,
    their leaves, specs)."""
    nums = _check_argnums(argnums, len(args), name)
    args = list(args)
    diff_leaves, specs = [], []
    for a in nums:
        leaves, spec = _tensor_leaves(args[a], f"{name}: argument {a}")
        fresh = [_fresh(t) for t in leaves]
        args[a] = _unflatten(fresh, spec)
        diff_leaves.append(fresh)
        specs.append(spec)
    return args, nums, diff_leaves, specs


# ---- the transforms --------------------------------------------------------------------------
def grad_and_value(func, argnums=0, has_aux=False):
    """``grad_and_value(f)(*args)`` returns ``(grad, value)``; with ``has_aux`` (``f``
    returns ``(value, aux)``) it returns ``(grad, (value, aux))``, as torch.func."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with enable_grad():
            args2, nums, diff_leaves, specs = _prepare_args(args, argnums, "grad_and_value")
            out = func(*args2, **kwargs)
            value, aux = _split_aux(out, has_aux, "grad_and_value")
            Tensor = _Tensor()
            if not isinstance(value, Tensor):
                raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a "
                                   f"Tensor, got {type(value)}")
            if value.dim() != 0:
                raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a "
                                   f"scalar Tensor, got tensor with {value.dim()} dims. Maybe "
                                   "you wanted to use the vjp or jacrev APIs instead?")
            flat_in = [t for leaves in diff_leaves for t in leaves]
            gs = _vjp_core([value], flat_in, [_factories.ones_like(value)], retain_graph=False)
        grads, pos = [], 0
        for leaves, spec in zip(diff_leaves, specs):
            grads.append(_unflatten(gs[pos:pos + len(leaves)], spec))
            pos += len(leaves)
        g = grads[0] if isinstance(argnums, int) else tuple(grads)
        value = _keep_if_foreign(value, flat_in)
        if has_aux:
            return g, (value, _detach_aux(aux, flat_in))
        return g, value

    return wrapper


def _keep_if_foreign(t, own):
    """The value itself when an outer transform can differentiate it, else detached."""
    return t if _reaches_foreign([t], own) else t.detach()


def grad(func, argnums=0, has_aux=False):
    """``grad(f)(*args)``: the gradient of the scalar ``f(*args)`` w.r.t. ``args[argnums]``
    (a tuple of gradients for a tuple ``argnums``; ``(grad, aux)`` with ``has_aux``)."""
    gv = grad_and_value(func, argnums, has_aux)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        g, value = gv(*args, **kwargs)
        return (g, value[1]) if has_aux else g

    return wrapper


def vjp(func, *primals, has_aux=False):
    """``out, vjp_fn = vjp(f, *primals)``; ``vjp_fn(cotangents)`` returns a tuple with one
    gradient per primal (it may be called several times). ``(out, vjp_fn, aux)`` with
    ``has_aux``."""
    with enable_grad():
        leaves, spec = _tensor_leaves(list(primals), "vjp")
        fresh = [_fresh(t) for t in leaves]
        out = func(*_unflatten(fresh, spec))
        out, aux = _split_aux(out, has_aux, "vjp")
        out_leaves, out_spec = _tensor_leaves(out, "vjp(f, *primals): output of f")

    def vjp_fn(cotangents):
        """Pull ``cotangents`` (the structure of the output) back to the primals."""
        ct_leaves, ct_spec = _tensor_leaves(cotangents, "vjp_fn: cotangents")
        if len(ct_leaves) != len(out_leaves):
            raise RuntimeError(f"Expected pytree structure of cotangents to be the same as "
                               f"pytree structure of outputs to the function: got "
                               f"{len(ct_leaves)} cotangent tensors for {len(out_leaves)} "
                               "outputs")
        for i, (c, o) in enumerate(zip(ct_leaves, out_leaves)):
            if c.shape != o.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of "
                                   f"{list(c.shape)} and output[{i}] has a shape of "
                                   f"{list(o.shape)}.")
        gs = _vjp_core(out_leaves, fresh, ct_leaves, retain_graph=True)
        return tuple(_unflatten(gs, spec))

    out = _unflatten([_keep_if_foreign(o, fresh) for o in out_leaves], out_spec)
    if has_aux:
        return out, vjp_fn, _detach_aux(aux, fresh)
    return out, vjp_fn


def _jvp_core(func, primal_leaves, spec, tangent_leaves, has_aux, name):
    """(out leaves, out spec, jvp leaves, aux) by the double-vjp trick."""
    with enable_grad():
        fresh = [_fresh(t) for t in primal_leaves]
        out = func(*_unflatten(fresh, spec))
        out, aux = _split_aux(out, has_aux, name)
        out_leaves, out_spec = _tensor_leaves(out, f"{name}(f, primals, tangents): output of f")
        # u -> J^T u is linear: its value at u = 0 does not matter, only its graph.
        us = [_factories.zeros_like(o).requires_grad_() for o in out_leaves]
        g = _vjp_core(out_leaves, fresh, us, retain_graph=True, force_graph=True)
        # d/du <J^T u, t> = J t; unused pieces give zeros
        jt = _vjp_core(g, us, tangent_leaves, retain_graph=False, own=fresh)
    outs = [_keep_if_foreign(o, fresh) for o in out_leaves]
    return outs, out_spec, jt, (_detach_aux(aux, fresh) if has_aux else None)


def jvp(func, primals, tangents, *, strict=False, has_aux=False):
    """``jvp(f, primals, tangents)`` returns ``(f(*primals), J tangents)`` (and ``aux``);
    ``primals`` and ``tangents`` are tuples of the same structure."""
    if not isinstance(primals, tuple):
        raise RuntimeError("jvp(f, primals, tangents): Expected primals to be a tuple. E.g. it "
                           "should be valid to call f(*primals).")
    if not isinstance(tangents, tuple):
        raise RuntimeError("jvp(f, primals, tangents): Expected tangents to be a tuple.")
    if strict:
        raise RuntimeError("jvp(f, primals, tangents): strict=True is not implemented")
    p_leaves, spec = _tensor_leaves(list(primals), "jvp(f, primals, tangents): primals")
    t_leaves, t_spec = _tensor_leaves(list(tangents), "jvp(f, primals, tangents): tangents")
    if len(p_leaves) != len(t_leaves):
        raise RuntimeError("jvp(f, primals, tangents): Expected primals and tangents to have "
                           "the same python structure")
    for p, t in zip(p_leaves, t_leaves):
        if p.shape != t.shape:
            raise RuntimeError(f"jvp(f, primals, tangents): Expected primals and tangents to "
                               f"have the same shape, got {list(p.shape)} and {list(t.shape)}")
    outs, out_spec, jt, aux = _jvp_core(func, p_leaves, spec, t_leaves, has_aux, "jvp")
    res = (_unflatten(outs, out_spec), _unflatten(jt, out_spec))
    return res + (aux,) if has_aux else res


def _stack_rows(rows, out, x, batch_first):
    """Jacobian block of output ``out`` w.r.t. input ``x`` from per-element derivatives."""
    from . import ops
    if not rows:
        return _factories.zeros(tuple(out.shape) + tuple(x.shape), dtype=out.dtype,
                                device=out.device)
    dim = 0 if batch_first else -1
    return ops.stack(rows, dim=dim).reshape(tuple(out.shape) + tuple(x.shape))


def _jacobian_transform(func, argnums, has_aux, name, forward):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with enable_grad():
            args2, nums, diff_leaves, specs = _prepare_args(args, argnums, name)
            flat_in = [t for leaves in diff_leaves for t in leaves]
            out = func(*args2, **kwargs)
            out, aux = _split_aux(out, has_aux, name)
            out_leaves, out_spec = _tensor_leaves(out, f"{name}: output of f")
            # blocks[o][i]: the Jacobian of output leaf o w.r.t. input leaf i
            if forward:
                blocks = _forward_blocks(out_leaves, flat_in)
            else:
                blocks = _reverse_blocks(out_leaves, flat_in)
        per_out = []
        for o_blocks in blocks:
            grouped, pos = [], 0
            for leaves, spec in zip(diff_leaves, specs):
                grouped.append(_unflatten(o_blocks[pos:pos + len(leaves)], spec))
                pos += len(leaves)
            per_out.append(grouped[0] if isinstance(argnums, int) else tuple(grouped))
        jac = _unflatten(per_out, out_spec)
        return (jac, _detach_aux(aux, flat_in)) if has_aux else jac

    return wrapper


def _reverse_blocks(out_leaves, flat_in):
    """One vjp per output element: rows of J."""
    blocks = []
    foreign = _reaches_foreign(out_leaves, flat_in)  # once: every row has the same graph
    for o in out_leaves:
        flat = o.reshape(-1)
        rows = [[] for _ in flat_in]
        basis = _factories.zeros(o.numel(), dtype=o.dtype, device=o.device)
        for k in range(o.numel()):
            e = basis.clone()
            e._data[k] = 1
            gs = _vjp_core([flat], flat_in, [e], retain_graph=True, foreign=foreign)
            for i, g in enumerate(gs):
                rows[i].append(g)
        blocks.append([_stack_rows(rows[i], o, x, True) for i, x in enumerate(flat_in)])
    return blocks


def _forward_blocks(out_leaves, flat_in):
    """One jvp per input element (double-vjp trick): columns of J."""
    us = [_factories.zeros_like(o).requires_grad_() for o in out_leaves]
    g = _vjp_core(out_leaves, flat_in, us, retain_graph=True, force_graph=True)
    cols = [[[] for _ in flat_in] for _ in out_leaves]
    foreign = _reaches_foreign([t for t in g if t.requires_grad], list(us) + list(flat_in))
    for i, x in enumerate(flat_in):
        basis = _factories.zeros(x.numel(), dtype=x.dtype, device=x.device)
        for k in range(x.numel()):
            e = basis.clone()
            e._data[k] = 1
            tangents = [e.view(x.shape) if n == i else _factories.zeros_like(y)
                        for n, y in enumerate(flat_in)]
            jt = _vjp_core(g, us, tangents, retain_graph=True, foreign=foreign)
            for o, t in enumerate(jt):
                cols[o][i].append(t)
    return [[_stack_rows(cols[o][i], out, x, False) for i, x in enumerate(flat_in)]
            for o, out in enumerate(out_leaves)]


def jacrev(func, argnums=0, *, has_aux=False, chunk_size=None, _preallocate_and_copy=False):
    """``jacrev(f)(*args)``: the Jacobian by reverse mode (one vjp per output element), with
    the structure of the output; each block has shape ``out.shape + arg.shape``."""
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")
    return _jacobian_transform(func, argnums, has_aux, "jacrev", forward=False)


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """``jacfwd(f)(*args)``: the Jacobian by forward accumulation (one jvp per input
    element, by the double-vjp trick); same layout as ``jacrev``."""
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or "
                           f"'same'. Got {randomness}")
    return _jacobian_transform(func, argnums, has_aux, "jacfwd", forward=True)


def hessian(func, argnums=0):
    """``hessian(f)(*args)`` = ``jacfwd(jacrev(f, argnums), argnums)(*args)``."""
    return jacfwd(jacrev(func, argnums), argnums)
