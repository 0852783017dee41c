"""Fusion of elementwise chains: one generated kernel per chain, forward and backward.

A chain (a DAG) of elementwise ops is recorded as a :class:`FusedGraph`, either by hand
(``g.input()``, ``g.op("tanh", v)``, ``g.output(v, reduce="sum")``) or by tracing a Python
function with :func:`fuse`, which runs it once on tracer inputs (operators, the methods
``.tanh() .sigmoid() .exp() .log() .sin() .cos() .sqrt() .relu() .pow(p) .sum()`` and the
functions of :data:`ops`, e.g. ``ops.where``). From the graph this module generates, for each
*program* (the forward; the backward; forward and gradient together), ONE kernel that reads each
input once and writes each output once:

- CUDA: the body of a ``cupy.ElementwiseKernel`` (any dtype, broadcasting by CuPy), and a
  grid-stride ``RawKernel`` with ``float4`` loads and stores for contiguous float32 arrays
  (the faster one on large arrays, see ../shared/GPU_NOTES.md);
- NumPy: a generated Python function that walks the arrays in cache-sized chunks and computes
  each op with a NumPy ufunc into a preallocated chunk buffer (``out=``): a handful of small
  temporaries that stay in cache, instead of one full-size temporary per op.

The derivative of each op is a C-expression template (``_OPS``) written as the kernels of
``kernels/*.cu`` write it (``tanh``: ``g * (1 - y*y)``, ``sigmoid``: ``g * y * (1 - y)``, ...);
the backward program recomputes the forward values it needs (rematerialization: reading the
inputs again is cheaper than writing and reading back intermediates) and accumulates adjoints
in reverse topological order, all as local variables of the one kernel. Python numbers in the
chain become scalar parameters of the kernel, so one compiled kernel serves any constants.

Generated kernels are cached in memory (per program signature) and on disk, in
``$GPUGRAD_CACHE_DIR`` or ``~/.cache/gpugrad/fusion``: one JSON file per program, named by
the hash of its signature, holding the generated sources and a hash of them; an entry that does
not parse or whose hash does not match is ignored and rebuilt. The compiled CUDA binaries are
cached by CuPy itself (``CUPY_CACHE_DIR``), keyed by the generated source, whose kernel name
carries that source's hash.

Reductions: an output may be ``.sum()`` of an elementwise value (all elements, as W2's loss);
the kernel computes the elementwise value and a reduction follows (NumPy: summed chunk by chunk
inside the twin, no full-size array written; CuPy: ``cupy.sum``). Under
:meth:`FusedFunction.value_and_grad` the gradient of such a sum is elementwise, so value and
gradient come from ONE pass (W2: one kernel and one reduction). :meth:`FusedKernel.reduce_call`
runs a program with summed outputs as ONE CUDA kernel that sums as it goes (per-thread sums in
double, a block reduction, one atomic per block; see ``_raw_reduce_source``): no full-size
value is written and read back. ``gpugrad._lazy`` uses it for ``loss.backward()`` of a fused
loss.

Not supported: ops outside ``_OPS`` (a :class:`FusionError` names the op), reductions other
than a full sum at the end, gradients of gradients (the fused backward is not recorded).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
from pathlib import Path

import numpy as np

from . import _kernels

__all__ = ["FusionError", "FUNCTION_OPS", "FusedGraph", "FusedKernel", "FusedFunction", "fuse",
           "ops", "cache_info", "cache_clear", "cache_dir", "w2_chain_loss", "w2_fused_step",
           "REDUCE_THREADS", "reduce_kernel_name", "reduce_launch", "reduce_arguments",
           "blocks_per_sm"]

_VERSION = 1
# Disk entries are keyed by this file's content too: a changed generator never reads old code.
try:
    _GENERATOR = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
except OSError:  # pragma: no cover - a frozen install without sources
    _GENERATOR = "unknown"


class FusionError(RuntimeError):
    """A chain cannot be fused (an unsupported op or input); the message names it."""


class _FusionAttributeError(FusionError, AttributeError):
    """A tensor attribute a tracer does not have (an AttributeError, for hasattr())."""


# ---- the ops: C-expression templates ----------------------------------------------------------
# fwd: a list of C expressions; each may use the previous ones as {t0}, {t1}, ...; the last is
# the value. Arguments are {a}, {b}, {c}. grads: per argument, the contribution to its adjoint
# given this node's adjoint {g}, its value {y} and its arguments (None: no gradient).
# kind: "T" (floating) or "bool". All as kernels/*.cu writes them.
class _Op:
    __slots__ = ("name", "arity", "fwd", "grads", "kind")

    def __init__(self, name, arity, fwd, grads, kind="T"):
        self.name, self.arity, self.fwd, self.grads, self.kind = name, arity, fwd, grads, kind


# kernels/activations.cu's stable sigmoid, with one division: e / (1 + e) as e * (1 / (1 + e))
_SIGMOID = ["exp(-fabs({a}))", "T(1) / (T(1) + {t0})", "{a} >= 0 ? {t1} : {t0} * {t1}"]
_OPS = {o.name: o for o in [
    _Op("add", 2, ["{a} + {b}"], ["{g}", "{g}"]),
    _Op("sub", 2, ["{a} - {b}"], ["{g}", "-{g}"]),
    _Op("mul", 2, ["{a} * {b}"], ["{g} * {b}", "{g} * {a}"]),
    # as div_backward: from a and b, not y
    _Op("div", 2, ["{a} / {b}"], ["{g} / {b}", "-({g} / {b}) * {a} / {b}"]),
    _Op("neg", 1, ["-{a}"], ["-{g}"]),
    _Op("exp", 1, ["exp({a})"], ["{g} * {y}"]),
    _Op("log", 1, ["log({a})"], ["{g} / {a}"]),
    _Op("sin", 1, ["sin({a})"], ["{g} * cos({a})"]),
    _Op("cos", 1, ["cos({a})"], ["-{g} * sin({a})"]),
    _Op("sqrt", 1, ["sqrt({a})"], ["{g} / (2 * {y})"]),
    _Op("tanh", 1, ["tanh({a})"], ["{g} * (1 - {y} * {y})"]),
    _Op("sigmoid", 1, _SIGMOID, ["{g} * {y} * (1 - {y})"]),
    # NaN stays NaN (NaN < 0 is false); the gradient as relu_backward
    _Op("relu", 1, ["{a} < 0 ? T(0) : {a}"], ["{y} > 0 ? {g} : T(0)"]),
    # x ** p for a number p (argument b, a scalar): as pow_scalar_backward, 0 when p == 0
    _Op("pow", 2, ["pow({a}, {b})"], ["{b} == 0 ? T(0) : {g} * {b} * pow({a}, {b} - 1)", None]),
    _Op("where", 3, ["{a} ? {b} : {c}"], [None, "{a} ? {g} : T(0)", "{a} ? T(0) : {g}"]),
    _Op("gt", 2, ["{a} > {b}"], [None, None], "bool"),
    _Op("lt", 2, ["{a} < {b}"], [None, None], "bool"),
    _Op("ge", 2, ["{a} >= {b}"], [None, None], "bool"),
    _Op("le", 2, ["{a} <= {b}"], [None, None], "bool"),
]}


# gpugrad's elementwise Functions (by class name) and the fusion op each one is, for a capture
# that records Function applications (Pow: with a number exponent only; Add/Sub: alpha == 1):
# _lazy swaps these Functions' apply inside gpugrad.compile (the chains it fuses).
FUNCTION_OPS = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Neg": "neg",
                "Exp": "exp", "Log": "log", "Sin": "sin", "Cos": "cos", "Sqrt": "sqrt",
                "Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Pow": "pow",
                "Where": "where"}


# ---- the graph ----------------------------------------------------------------------------------
class FusedGraph:
    """A DAG of elementwise nodes: inputs (arrays, float or bool), constants (numbers, passed
    to the kernels as scalar parameters) and ops of ``_OPS``; outputs are nodes, optionally
    summed over all elements (``reduce="sum"``). Node ids are ints in creation order, which
    is a topological order."""

    def __init__(self) -> None:
        self.nodes = []        # (kind, op, args, extra): kind "T"/"bool"; op "input"/"const"/name
        self.inputs = []       # node ids of the inputs, in call order
        self.consts = []       # node ids of the constants
        self.outputs = []      # (node id, reduce)
        self._programs = {}

    def input(self, kind: str = "T") -> int:
        """A new array input (``kind`` "T": floating, "bool": a mask)."""
        self.nodes.append((kind, "input", (), len(self.inputs)))
        self.inputs.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def const(self, value) -> int:
        """A number (a scalar parameter of the kernels; its value is not part of the code)."""
        self.nodes.append(("T", "const", (), float(value)))
        self.consts.append(len(self.nodes) - 1)
        return len(self.nodes) - 1

    def op(self, name: str, *args: int) -> int:
        """A node applying op ``name`` of ``_OPS`` to the nodes ``args``."""
        spec = _OPS.get(name)
        if spec is None:
            raise FusionError(f"fusion: op {name!r} cannot be fused (fusable ops: "
                              f"{', '.join(sorted(_OPS))}); compute it outside the fused chain")
        if len(args) != spec.arity:
            raise FusionError(f"fusion: op {name} takes {spec.arity} arguments, got {len(args)}")
        for a in args:
            if not 0 <= a < len(self.nodes):
                raise FusionError(f"fusion: op {name}: unknown node {a}")
        if name == "pow" and self.nodes[args[1]][1] != "const":
            raise FusionError("fusion: pow is fused for a number exponent only (x ** p); "
                              "write exp(b * log(a)) for a tensor exponent")
        if name == "where" and self.nodes[args[0]][0] != "bool":
            raise FusionError("fusion: where expects a boolean condition (a comparison or a "
                              "bool input)")
        self.nodes.append((spec.kind, name, tuple(args), None))
        return len(self.nodes) - 1

    def output(self, node: int, reduce: str | None = None) -> None:
        """Mark ``node`` as an output, elementwise (``reduce=None``) or summed (``"sum"``)."""
        if reduce not in (None, "sum"):
            raise FusionError(f"fusion: reduce must be None or 'sum', got {reduce!r}")
        if self.nodes[node][0] != "T":
            raise FusionError("fusion: a boolean output cannot be fused")
        self.outputs.append((node, reduce))

    def signature(self) -> str:
        """The structure of the graph as text (constants' values excluded): equal signatures
        mean the same generated code."""
        parts = [f"v{_VERSION}-{_GENERATOR}-{_CHUNK}"]
        for kind, op, args, extra in self.nodes:
            parts.append(f"{kind}:{op}:{','.join(map(str, args))}" +
                         (f":{extra}" if op == "input" else ""))
        parts.append("out:" + ",".join(f"{n}{'s' if r else ''}" for n, r in self.outputs))
        return ";".join(parts)

    def forward(self, *arrays):
        """The outputs (a tuple of arrays; 0-d for a summed output), one kernel."""
        return self.program("forward")(*arrays, *self.const_values)

    def backward(self, arrays, grad_outputs, wrt=None):
        """The gradients of the inputs ``wrt`` (default: every float input) given one
        gradient per output (an array, or a 0-d array for a summed output), one kernel."""
        return self.program("backward", wrt)(*arrays, *self.const_values, *grad_outputs)

    def value_and_grad(self, *arrays, wrt=None):
        """(outputs, gradients of the sum of all outputs w.r.t. ``wrt``), one kernel."""
        res = self.program("value_and_grad", wrt)(*arrays, *self.const_values)
        return res[:len(self.outputs)], res[len(self.outputs):]

    @property
    def const_values(self) -> tuple:
        """The values of the constants, in parameter order."""
        return tuple(self.nodes[c][3] for c in self.consts)

    # ---- programs ------------------------------------------------------------------------
    def program(self, mode: str, wrt: tuple | None = None) -> "FusedKernel":
        """The generated kernel of ``mode``: "forward" (inputs -> outputs), "backward"
        (inputs, one gradient per output -> gradients of the inputs ``wrt``) or
        "value_and_grad" (inputs -> outputs and the gradients of the inputs ``wrt`` of the sum
        of all outputs, each seeded with 1). Cached in memory and on disk."""
        floats = tuple(i for i, n in enumerate(self.inputs) if self.nodes[n][0] == "T")
        wrt = floats if wrt is None else tuple(wrt)
        for i in wrt:
            if i not in floats:
                raise FusionError(f"fusion: cannot differentiate with respect to input {i} "
                                  f"(not a floating point input)")
        if mode == "forward":
            wrt = ()
        key = (mode, wrt)
        prog = self._programs.get(key)
        if prog is None:
            prog = self._programs[key] = _get_kernel(self, mode, wrt)
        return prog


# ---- code generation: statements ----------------------------------------------------------------
def _names(graph):
    """C names: inputs x{i}_, constants s{i}_, values v{n}_ (no name is part of another)."""
    names = {}
    for i, n in enumerate(graph.inputs):
        names[n] = f"x{i}_"
    for i, n in enumerate(graph.consts):
        names[n] = f"s{i}_"
    return names


def _forward_statements(graph, names, stmts):
    """Append the forward statements (kind, name, expr) of every op node."""
    for n, (kind, op, args, _) in enumerate(graph.nodes):
        if op in ("input", "const"):
            continue
        spec = _OPS[op]
        fmt = dict(zip("abc", (names[a] for a in args)))
        for j, t in enumerate(spec.fwd[:-1]):
            local = f"v{n}t{j}_"
            stmts.append(("T", local, t.format(**fmt)))
            fmt[f"t{j}"] = local
        names[n] = f"v{n}_"
        stmts.append((kind, names[n], spec.fwd[-1].format(**fmt)))


def _needs_grad(graph, wrt):
    """Nodes through which an input of ``wrt`` flows (their adjoints are needed)."""
    need = set(graph.inputs[i] for i in wrt)
    for n, (kind, op, args, _) in enumerate(graph.nodes):
        if kind == "T" and op not in ("input", "const") and any(a in need for a in args):
            need.add(n)
    return need


def _generate(graph, mode, wrt):
    """(params, outputs, statements) of a program; params: (name, kind) with kind "T",
    "bool" (arrays) or "scalar"; outputs: (name, reduce)."""
    names = _names(graph)
    params = [(names[n], graph.nodes[n][0]) for n in graph.inputs]
    params += [(names[c], "scalar") for c in graph.consts]
    stmts, outs = [], []
    _forward_statements(graph, names, stmts)
    if mode in ("forward", "value_and_grad"):
        for k, (n, reduce) in enumerate(graph.outputs):
            stmts.append(("out", f"o{k}_", names[n]))
            outs.append((f"o{k}_", reduce))
    if mode == "forward":
        return params, outs, stmts
    need = _needs_grad(graph, wrt)
    contrib = {}  # node -> list of adjoint expressions
    for k, (n, _) in enumerate(graph.outputs):
        if mode == "backward":
            params.append((f"gy{k}_", "T"))
            contrib.setdefault(n, []).append(f"gy{k}_")
        else:
            contrib.setdefault(n, []).append("T(1)")
    adj = {}
    for n in range(len(graph.nodes) - 1, -1, -1):
        if n not in need or n not in contrib:
            continue
        parts = contrib[n]
        name = f"a{n}_"
        stmts.append(("T", name, " + ".join(parts) if len(parts) > 1 else parts[0]))
        adj[n] = name
        kind, op, args, _ = graph.nodes[n]
        if op in ("input", "const"):
            continue
        spec = _OPS[op]
        fmt = dict(zip("abc", (names[a] for a in args)), g=name, y=names[n])
        for a, tmpl in zip(args, spec.grads):
            if tmpl is not None and a in need:
                c = f"a{n}c{len(stmts)}_"
                stmts.append(("T", c, tmpl.format(**fmt)))
                contrib.setdefault(a, []).append(c)
    for i in wrt:
        n = graph.inputs[i]
        stmts.append(("out", f"gx{i}_", adj.get(n, "T(0)")))
        outs.append((f"gx{i}_", None))
    return params, outs, _fold_outputs(_dead_code(_copy_propagate(stmts)))


def _fold_outputs(stmts):
    """``o = v;`` where ``v`` is a local used nowhere else: compute ``v``'s expression
    straight into the output (saves the NumPy twin a copy per chunk)."""
    count = {}
    for _, _, expr in stmts:
        for u in _uses(expr):
            count[u] = count.get(u, 0) + 1
    define = {name: j for j, (kind, name, _) in enumerate(stmts) if kind == "T"}
    stmts = list(stmts)
    for j, (kind, name, expr) in enumerate(stmts):
        src = expr.strip()
        if kind == "out" and src in define and count.get(src) == 1:
            d = define[src]
            stmts[d] = ("out", name, stmts[d][2])
            stmts[j] = None
    return [s for s in stmts if s is not None]


_SIMPLE = re.compile(r"^(?:[A-Za-z_]\w*|T\(\d+\))$")
_WORD = re.compile(r"[A-Za-z_]\w*")


def _copy_propagate(stmts):
    """Replace locals that only copy a name or an integer ``T(k)`` by what they copy (the
    adjoint bookkeeping makes many); outputs stay."""
    subst, out = {}, []
    for kind, name, expr in stmts:
        expr = _WORD.sub(lambda m: subst.get(m.group(), m.group()), expr)
        if kind != "out" and _SIMPLE.match(expr):
            subst[name] = expr
            continue
        out.append((kind, name, expr))
    return out


def _uses(expr):
    return set(t.text for t in _kernels._tokenize(expr, 1, _parse_error) if t.kind == "name")


def _dead_code(stmts):
    """Drop statements whose value no output needs."""
    live, keep = set(), []
    for st in reversed(stmts):
        if st[0] == "out" or st[1] in live:
            keep.append(st)
            live |= _uses(st[2])
    return keep[::-1]


def _parse_error(msg, line, kernel=None):
    raise FusionError(f"fusion: generated code does not parse ({msg}); a gpugrad bug")


# ---- code generation: CUDA ----------------------------------------------------------------------
def _c_body(stmts):
    lines = []
    for kind, name, expr in stmts:
        if kind == "out":
            lines.append(f"{name} = {expr};")
        else:
            lines.append(f"{'bool' if kind == 'bool' else 'T'} {name} = {expr};")
    return "\n".join(lines)


def _raw_source(name, params, outs, body):
    """A grid-stride float32 kernel with float4 loads/stores (arrays contiguous, 16-byte
    aligned; the last n % 4 elements by a scalar loop in the same launch)."""
    arrays = [(p, k) for p, k in params if k != "scalar"]
    fargs = [f"const {'bool' if k == 'bool' else 'T'} {p}" for p, k in arrays]
    fargs += [f"const T {p}" for p, k in params if k == "scalar"]
    fargs += [f"T& {o}" for o, _ in outs]
    call = ", ".join([p for p, _ in arrays] + [p for p, k in params if k == "scalar"] +
                     [o for o, _ in outs])
    kargs = [f"const {'bool' if k == 'bool' else 'float'}* __restrict__ p_{p}" for p, k in arrays]
    kargs += [f"const float {p}" for p, k in params if k == "scalar"]
    kargs += [f"float* __restrict__ p_{o}" for o, _ in outs]
    vec_loads, scal_loads = [], []
    for p, k in arrays:
        if k == "bool":
            vec_loads.append(f"      const bool {p} = p_{p}[4 * q + j];")
        else:
            vec_loads.append(f"      const float {p} = reinterpret_cast<const float*>(&v_{p})[j];")
        scal_loads.append(f"    const {'bool' if k == 'bool' else 'float'} {p} = p_{p}[i];")
    vec_pre = [f"    const float4 v_{p} = reinterpret_cast<const float4*>(p_{p})[q];"
               for p, k in arrays if k != "bool"]
    vec_out = [f"    float4 w_{o};" for o, _ in outs]
    vec_store = [f"      reinterpret_cast<float*>(&w_{o})[j] = {o};" for o, _ in outs]
    vec_post = [f"    reinterpret_cast<float4*>(p_{o})[q] = w_{o};" for o, _ in outs]
    decl_outs = [f"      float {o};" for o, _ in outs]
    body_c = "\n".join("  " + line for line in body.splitlines())
    return "\n".join([
        "typedef float T;",
        f"__device__ __forceinline__ void {name}_body({', '.join(fargs)}) {{",
        body_c, "}",
        f'extern "C" __global__ void {name}({", ".join(kargs)}, const long long n) {{',
        "  const long long stride = (long long)blockDim.x * gridDim.x;",
        "  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;",
        "  const long long n4 = n / 4;",
        "  for (long long q = tid; q < n4; q += stride) {",
        *vec_pre, *vec_out,
        "    #pragma unroll",
        "    for (int j = 0; j < 4; ++j) {",
        *vec_loads, *decl_outs,
        f"      {name}_body({call});",
        *vec_store,
        "    }",
        *vec_post,
        "  }",
        "  for (long long i = 4 * n4 + tid; i < n; i += stride) {",
        *scal_loads,
        *[f"    float {o};" for o, _ in outs],
        f"    {name}_body({call});",
        *[f"    p_{o}[i] = {o};" for o, _ in outs],
        "  }",
        "}", ""])


REDUCE_THREADS = 256    # threads per block of the reduce kernel (a multiple of 32, <= 1024)
_REDUCE_VEC = {"float": ("float4", 4), "double": ("double2", 2)}  # 16-byte vector accesses
_REDUCE_CTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# double atomicAdd is native from sm_60 (H100: sm_90); older GPUs get the CAS loop of the CUDA
# programming guide. Guarded: several generated kernels may share one translation unit.
_ATOMIC_ADD = """#ifndef GPUGRAD_ATOMIC_ADD_F64
#define GPUGRAD_ATOMIC_ADD_F64
__device__ __forceinline__ double gpugrad_atomic_add_f64(double* a, double v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  return atomicAdd(a, v);
#else
  unsigned long long* p = reinterpret_cast<unsigned long long*>(a);
  unsigned long long old = *p, assumed;
  do {
    assumed = old;
    old = atomicCAS(p, assumed, __double_as_longlong(v + __longlong_as_double(assumed)));
  } while (assumed != old);
  return __longlong_as_double(old);
#endif
}
#endif"""


def reduce_kernel_name(name: str, ctype: str) -> str:
    """The name of the reduce kernel of program ``name`` for C type ``ctype``."""
    return f"{name}_sum_{ctype[0]}"


def _raw_reduce_source(name, params, outs, body, ctype="float"):
    """ONE grid-stride kernel for a program with summed outputs (a loss's value_and_grad):
    it reads each input once, writes each elementwise output once (the gradients), and sums
    each summed output in the same pass, so no full-size value is written and read back.

    The sums: each element's value is computed in T (rounded as eager computes it), then
    added to a per-thread partial sum in **double**; warp shuffles and shared memory sum a
    block's partials; one double ``atomicAdd`` per block and summed output goes into the
    workspace ``ws`` (K doubles, then an unsigned counter); the last block to finish (a
    ticket from the counter, after a fence) writes each sum rounded to T into its 0-d output.
    Why double and not Kahan in float: summing N terms in double has a relative error below
    N * 2**-53 of the sum of their magnitudes (2**26 terms: < 7.5e-9), well under float32's
    half ulp (6e-8), so the float32 result is the exact sum of the float32 terms to within
    about one ulp, whatever the order of the atomics; a float64 chain's sums get the usual
    double rounding (the atomics' order varies from run to run in the last bits, as
    ``cupy.sum``'s need not). ``ws`` must be zero at launch: the caller zeroes it with a
    memset on the same stream (no host synchronisation: the launch can be captured in a
    CUDA graph). Arrays: contiguous, of one shape, 16-byte aligned; 16-byte vector accesses
    (float4 / double2) and a scalar loop for the tail. Launch with REDUCE_THREADS threads."""
    vec, width = _REDUCE_VEC[ctype]
    k = reduce_kernel_name(name, ctype)
    arrays = [(p, kd) for p, kd in params if kd != "scalar"]
    scalars = [p for p, kd in params if kd == "scalar"]
    summed = [o for o, r in outs if r]
    elem = [o for o, r in outs if not r]
    nsum = len(summed)
    fargs = [f"const {'bool' if kd == 'bool' else ctype} {p}" for p, kd in arrays]
    fargs += [f"const {ctype} {p}" for p in scalars]
    fargs += [f"{ctype}& {o}" for o, _ in outs]
    call = ", ".join([p for p, _ in arrays] + scalars + [o for o, _ in outs])
    kargs = [f"const {'bool' if kd == 'bool' else ctype}* __restrict__ p_{p}"
             for p, kd in arrays]
    kargs += [f"const {ctype} {p}" for p in scalars]
    kargs += [f"{ctype}* __restrict__ p_{o}" for o, _ in outs]
    kargs += ["double* __restrict__ ws", "const long long n"]
    vec_pre = [f"    const {vec} v_{p} = reinterpret_cast<const {vec}*>(p_{p})[q];"
               for p, kd in arrays if kd != "bool"]
    vec_loads = [f"      const bool {p} = p_{p}[{width} * q + j];" if kd == "bool" else
                 f"      const {ctype} {p} = reinterpret_cast<const {ctype}*>(&v_{p})[j];"
                 for p, kd in arrays]
    scal_loads = [f"    const {'bool' if kd == 'bool' else ctype} {p} = p_{p}[i];"
                  for p, kd in arrays]
    decl = [f"{ctype} {o};" for o, _ in outs]
    acc = [f"r{j}_ += (double){o};" for j, o in enumerate(summed)]
    body_c = "\n".join("  " + line for line in body.splitlines())
    shfl = "r{j}_ += __shfl_down_sync(0xffffffffu, r{j}_, o);"
    reduce = []
    for j in range(nsum):
        reduce += [
            "  #pragma unroll",
            f"  for (int o = 16; o > 0; o >>= 1) {shfl.format(j=j)}",
            f"  if (lane == 0) sh{j}_[warp] = r{j}_;"]
    final = []
    for j in range(nsum):
        final += [
            f"    r{j}_ = lane < nwarps ? sh{j}_[lane] : 0.0;",
            "    #pragma unroll",
            f"    for (int o = 16; o > 0; o >>= 1) {shfl.format(j=j)}",
            f"    if (lane == 0) gpugrad_atomic_add_f64(ws + {j}, r{j}_);"]
    last = [f"        p_{o}[0] = ({ctype})gpugrad_atomic_add_f64(ws + {j}, 0.0);"
            for j, o in enumerate(summed)]
    return "\n".join([
        _ATOMIC_ADD,
        f"__device__ __forceinline__ void {k}_body({', '.join(fargs)}) {{",
        f"  typedef {ctype} T;",
        body_c, "}",
        f'extern "C" __global__ void {k}({", ".join(kargs)}) {{',
        "  const long long stride = (long long)blockDim.x * gridDim.x;",
        "  const long long tid = blockIdx.x * (long long)blockDim.x + threadIdx.x;",
        *[f"  double r{j}_ = 0.0;" for j in range(nsum)],
        f"  const long long nv = n / {width};",
        "  #pragma unroll 2",
        "  for (long long q = tid; q < nv; q += stride) {",
        *vec_pre, *[f"    {vec} w_{o};" for o in elem],
        "    #pragma unroll",
        f"    for (int j = 0; j < {width}; ++j) {{",
        *vec_loads, "      " + " ".join(decl),
        f"      {k}_body({call});",
        *["      " + a for a in acc],
        *[f"      reinterpret_cast<{ctype}*>(&w_{o})[j] = {o};" for o in elem],
        "    }",
        *[f"    reinterpret_cast<{vec}*>(p_{o})[q] = w_{o};" for o in elem],
        "  }",
        f"  for (long long i = {width} * nv + tid; i < n; i += stride) {{",
        *scal_loads, "    " + " ".join(decl),
        f"    {k}_body({call});",
        *["    " + a for a in acc],
        *[f"    p_{o}[i] = {o};" for o in elem],
        "  }",
        "  // the block's sums: warp shuffles, then one value per warp in shared memory",
        *[f"  __shared__ double sh{j}_[32];" for j in range(nsum)],
        "  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;",
        "  const int nwarps = (blockDim.x + 31) >> 5;",
        *reduce,
        "  __syncthreads();",
        "  if (warp == 0) {",
        *final,
        "    if (lane == 0) {",
        "      __threadfence();  // this block's sums are visible before its ticket",
        f"      unsigned int* count = reinterpret_cast<unsigned int*>(ws + {nsum});",
        "      if (atomicAdd(count, 1u) == gridDim.x - 1) {  // the last block: all sums are in",
        *last,
        "      }",
        "    }",
        "  }",
        "}", ""])


def blocks_per_sm(num_regs: int, threads: int = REDUCE_THREADS) -> int:
    """Blocks of ``threads`` threads resident on one multiprocessor for a kernel using
    ``num_regs`` registers per thread (sm_70 to sm_90: 64K registers, allocated per warp in
    units of 256; at most 2048 threads and 32 blocks): the reduce kernel's grid is one such
    full wave, so that no block waits for a second wave and few atomics are needed."""
    per_warp = -(-max(int(num_regs), 1) * 32 // 256) * 256
    return max(1, min(65536 // (per_warp * (threads // 32)), 2048 // threads, 32))


def reduce_launch(kernel, args, sm_count: int, per_sm: int = 2048 // REDUCE_THREADS):
    """CPU-side plan of ``kernel``'s reduce kernel for ``args`` (arrays, NumPy or CuPy, and
    numbers as :meth:`FusedKernel.__call__` takes them): ``(ctype, shape, dtype, n, grid)``,
    or None where the kernel does not apply (then the ElementwiseKernel and ``sum`` run):
    no summed output, an array of another shape (broadcast) or dtype, not contiguous, or not
    16-byte aligned. ``grid``: enough blocks of REDUCE_THREADS threads for one vector per
    thread, at most ``per_sm`` (:func:`blocks_per_sm`) per multiprocessor: one wave, the
    grid-stride loop doing the rest."""
    if not any(r for _, r in kernel.outs):
        return None
    arrays = [a for (p, k), a in zip(kernel.params, args) if k != "scalar"]
    floats = [a for (p, k), a in zip(kernel.params, args) if k == "T"]
    if not floats:
        return None
    dt = floats[0].dtype
    ctype = _REDUCE_CTYPE.get(dt)
    if ctype is None:
        return None
    shape = arrays[0].shape
    for (p, k), a in zip(kernel.params, args):
        if k == "scalar":
            continue
        if a.shape != shape or not a.flags.c_contiguous or _address(a) % 16 or \
                a.dtype != (np.bool_ if k == "bool" else dt):
            return None
    n = math.prod(shape)
    width = _REDUCE_VEC[ctype][1]
    units = n // width + n % width
    grid = max(1, min((units + REDUCE_THREADS - 1) // REDUCE_THREADS,
                      max(1, per_sm) * max(1, sm_count)))
    return ctype, shape, dt, n, grid


def reduce_arguments(kernel, args, outs, ws, n, dtype) -> tuple:
    """The reduce kernel's arguments: the arrays in parameter order, the numbers as
    ``dtype`` scalars, the outputs (0-d for a summed one), the workspace, ``n``."""
    kargs = [a for (p, k), a in zip(kernel.params, args) if k != "scalar"]
    kargs += [dtype.type(a) for (p, k), a in zip(kernel.params, args) if k == "scalar"]
    return tuple(kargs + list(outs) + [ws, np.int64(n)])


def _address(a) -> int:
    data = a.data
    return data.ptr if hasattr(data, "ptr") else a.__array_interface__["data"][0]


# ---- code generation: NumPy ---------------------------------------------------------------------
_UFUNC = {"exp": "np.exp", "log": "np.log", "sin": "np.sin", "cos": "np.cos",
          "tanh": "np.tanh", "sqrt": "np.sqrt", "fabs": "np.abs", "abs": "np.abs",
          "pow": "np.power", "fmax": "np.fmax", "fmin": "np.fmin", "expm1": "np.expm1",
          "log1p": "np.log1p"}
_BIN_UFUNC = {"+": "np.add", "-": "np.subtract", "*": "np.multiply", "/": "np.divide",
              ">": "np.greater", "<": "np.less", ">=": "np.greater_equal",
              "<=": "np.less_equal", "==": "np.equal", "!=": "np.not_equal",
              "&&": "np.logical_and", "||": "np.logical_or"}
_PY_BIN = {"&&": "and", "||": "or"}
_CHUNK = 32768  # elements per chunk: few Python calls per element, buffers near L2 (measured)


class _NumpyEmitter:
    """Python source for one chunk of a program: every op a ufunc into a buffer (``out=``),
    buffers reused as soon as their value is dead."""

    def __init__(self, params, outs):
        self.lines = []
        self.free = {"T": [], "bool": [], "I": []}   # T, bool, and ints of T's size
        self.count = {"T": 0, "bool": 0, "I": 0}
        self.kind = {}     # name -> "T"/"bool" (arrays) or "u" (uniform: Python/NumPy scalar)
        self.buf = {}      # name -> buffer it lives in (locals only)
        self.alias = {}    # uniform local -> its Python expression
        for p, k in params:
            self.kind[p] = "u" if k == "scalar" else k
        self.outs = dict(outs)

    def alloc(self, kind):
        if self.free[kind]:
            return self.free[kind].pop()
        self.count[kind] += 1
        return f"_{ {'T': 'b', 'bool': 'm', 'I': 'i'}[kind]}{self.count[kind] - 1}"

    def release(self, buf):
        if buf is not None:
            self.free[self.kind_of(buf)].append(buf)

    @staticmethod
    def kind_of(buf):
        return {"_b": "T", "_m": "bool", "_i": "I"}[buf[:2]]

    # emit(node) -> (source, kind, owned buffer or None); kind "T"/"bool" (arrays) / "u"/"ub"
    def emit(self, node, dest=None):
        tag = node[0]
        if tag == "num":
            return (node[1] if node[2] else f"_T({node[1]})"), "u", None
        if tag == "name":
            if node[1] in self.alias:  # a uniform local: its (cheap) expression inline
                return self.alias[node[1]], "u", None
            k = self.kind[node[1]]
            return node[1], ("u" if k == "u" else k), None
        if tag == "cast":
            src, k, own = self.emit(node[1], dest)
            if k in ("u", "ub"):
                return f"_T({src})", "u", None
            return src, k, own
        if tag == "unary":
            src, k, own = self.emit(node[2])
            if k in ("u", "ub"):
                if node[1] == "!":
                    return f"(not {src})", "ub", None
                return f"({node[1]}{src})", "u", None
            fn = "np.logical_not" if node[1] == "!" else ("np.negative" if node[1] == "-" else None)
            if fn is None:
                return src, k, own
            kind = "bool" if node[1] == "!" else "T"
            out = self._target(dest, own, kind)
            self.lines.append(f"{fn}({src}, out={out})")
            return out, kind, self._done(out, dest, own)
        if tag == "bin":
            op = node[1]
            ls, lk, lo = self.emit(node[2])
            rs, rk, ro = self.emit(node[3])
            if lk in ("u", "ub") and rk in ("u", "ub"):
                pyop = _PY_BIN.get(op, op)
                return f"({ls} {pyop} {rs})", ("ub" if op in _BIN_UFUNC and op not in "+-*/"
                                              else "u"), None
            # identities the seeds T(1) produce: x * 1, 1 * x
            if op == "*" and ls == "_T(1)":
                return rs, rk, ro
            if op == "*" and rs == "_T(1)":
                return ls, lk, lo
            res = "bool" if op not in ("+", "-", "*", "/") else "T"
            own = lo if lo is not None and lk == res else (ro if ro is not None and rk == res
                                                            else None)
            out = self._target(dest, own, res)
            self.lines.append(f"{_BIN_UFUNC[op]}({ls}, {rs}, out={out})")
            return out, res, self._done(out, dest, lo, ro)
        if tag == "cond":
            cs, ck, co = self.emit(node[1])
            as_, ak, ao = self.emit(node[2])
            bs, bk, bo = self.emit(node[3])
            if ck in ("u", "ub"):  # a condition on numbers only (pow's p == 0): Python's
                if ak in ("u", "ub") and bk in ("u", "ub"):
                    return f"({as_} if {cs} else {bs})", "u", None
                out = self._target(dest, None, "T")
                self.lines.append(f"np.copyto({out}, {as_} if {cs} else {bs})")
                return out, "T", self._done(out, dest, ao, bo)
            # A bitwise select on the integer views (out = b ^ ((a ^ b) & mask), mask 0 or
            # all ones): exact, NaN-safe, and 4x faster than np.copyto(where=), whose masked
            # loop is not vectorized. A branch that is T(0) (all bits 0) needs one AND.
            out = self._target(dest, ao if ao is not None else bo, "T")
            mask = self.alloc("I")
            ov = f"{out}.view(_I)"
            av = f"{as_}.view(_I)" if ak == "T" else f"_T({as_}).view(_I)"
            bv = f"{bs}.view(_I)" if bk == "T" else f"_T({bs}).view(_I)"
            if bs == "_T(0)":
                self.lines.append(f"np.subtract(0, {cs}, out={mask}, dtype=_I, casting='unsafe')")
                self.lines.append(f"np.bitwise_and({av}, {mask}, out={ov})")
            elif as_ == "_T(0)":
                self.lines.append(f"np.subtract({cs}, 1, out={mask}, dtype=_I, casting='unsafe')")
                self.lines.append(f"np.bitwise_and({bv}, {mask}, out={ov})")
            else:
                tmp = self.alloc("I")
                self.lines.append(f"np.subtract(0, {cs}, out={mask}, dtype=_I, casting='unsafe')")
                self.lines.append(f"np.bitwise_xor({av}, {bv}, out={tmp})")
                self.lines.append(f"np.bitwise_and({tmp}, {mask}, out={tmp})")
                self.lines.append(f"np.bitwise_xor({bv}, {tmp}, out={ov})")
                self.release(tmp)
            self.release(mask)
            return out, "T", self._done(out, dest, co, ao, bo)
        if tag == "call":
            fn = node[1]
            args = [self.emit(a) for a in node[2]]
            if all(k in ("u", "ub") for _, k, _ in args):
                return f"np.{_UFUNC[fn][3:]}({', '.join(s for s, _, _ in args)})", "u", None
            if fn not in _UFUNC:
                raise FusionError(f"fusion: function {fn} has no NumPy ufunc here")
            own = next((o for _, k, o in args if o is not None and k == "T"), None)
            out = self._target(dest, own, "T")
            self.lines.append(f"{_UFUNC[fn]}({', '.join(s for s, _, _ in args)}, out={out})")
            return out, "T", self._done(out, dest, *(o for _, _, o in args))
        raise FusionError(f"fusion: cannot translate {tag}")  # pragma: no cover

    def _target(self, dest, own, kind):
        """Where a result of ``kind`` goes: the output slice, else an operand's dead buffer
        of the same kind, else a fresh buffer. The caller releases the other operands."""
        if dest is not None and kind == "T":
            return dest
        if own is not None and self.kind_of(own) == kind:
            return own
        return self.alloc(kind)

    def _done(self, out, dest, *owned):
        """Release the operands' buffers not reused as ``out``; the result's own buffer."""
        for o in owned:
            if o is not None and o != out:
                self.release(o)
        return None if out == dest else out


def _parse_expr(text):
    toks = _kernels._tokenize(text, 1, _parse_error)
    p = _kernels._Parser(toks, _parse_error)
    e = p.expr()
    if p.peek().kind != "end":
        _parse_error("trailing tokens", 1)
    return e


def _python_source(name, params, outs, stmts):
    """A function ``name(_T, _n, *params, *outs, *bufs)`` computing the program over flat
    arrays chunk by chunk; summed outputs are accumulated and returned (a tuple)."""
    em = _NumpyEmitter(params, outs)
    last = {}
    for j, (_, _, expr) in enumerate(stmts):
        for u in _uses(expr):
            last[u] = j
    body_start = len(em.lines)
    for j, (kind, target, expr) in enumerate(stmts):
        ast = _parse_expr(expr)
        if kind == "out":
            reduce = em.outs[target]
            src, k, own = em.emit(ast, None if reduce else f"{target}[_s:_e]")
            if reduce and k in ("u", "ub"):
                em.lines.append(f"_acc_{target} += float({src}) * _m")
            elif reduce:
                em.lines.append(f"_acc_{target} += float(np.sum({src}, dtype=_T))")
                em.release(own)
            elif src != f"{target}[_s:_e]":
                em.lines.append(f"np.copyto({target}[_s:_e], {src})")
                em.release(own)
        else:
            src, k, own = em.emit(ast)
            if own is None and k not in ("u", "ub"):  # an alias of an array: keep it a name
                em.kind[target] = k
                if src in em.buf:  # shares that local's buffer: freed when both are dead
                    em.buf[target] = em.buf[src]
                em.lines.append(f"{target} = {src}")
            elif k in ("u", "ub"):
                em.alias[target] = src
            else:
                em.kind[target] = k
                em.buf[target] = own
                em.lines.append(f"{target} = {own}")
        # free the buffers of locals whose last use was this statement
        for u in _uses(expr):
            if last.get(u) == j and u in em.buf:
                b = em.buf.pop(u)
                if b not in em.buf.values():
                    em.release(b)
    body = em.lines[body_start:]
    arrays = [p for p, k in params if k != "scalar"]
    scalars = [p for p, k in params if k == "scalar"]
    elem = [o for o, r in outs if not r]
    summed = [o for o, r in outs if r]
    nb, nm, ni = em.count["T"], em.count["bool"], em.count["I"]
    head = [f"def {name}(_T, _n, {', '.join([p for p, _ in params] + elem) or '_'}):"]
    src = head + [f"    _B{i} = np.empty(min(_n, {_CHUNK}), _T)" for i in range(nb)]
    src += [f"    _M{i} = np.empty(min(_n, {_CHUNK}), np.bool_)" for i in range(nm)]
    src += ["    _I = np.int32 if np.dtype(_T).itemsize == 4 else np.int64"]
    src += [f"    _I{i} = np.empty(min(_n, {_CHUNK}), _I)" for i in range(ni)]
    src += [f"    {s} = _T({s})" for s in scalars]
    src += [f"    _acc_{o} = 0.0" for o in summed]
    src += [f"    _X_{a} = {a}" for a in arrays]
    src += [f"    for _s in range(0, _n, {_CHUNK}):",
            f"        _e = min(_s + {_CHUNK}, _n)", "        _m = _e - _s"]
    src += [f"        _b{i} = _B{i}[:_m]" for i in range(nb)]
    src += [f"        _m{i} = _M{i}[:_m]" for i in range(nm)]
    src += [f"        _i{i} = _I{i}[:_m]" for i in range(ni)]
    src += [f"        {a} = _X_{a}[_s:_e] if _X_{a}.ndim else _X_{a}" for a in arrays]
    src += ["        " + line for line in body]
    src += [f"    return ({''.join(f'_acc_{o}, ' for o in summed)})", ""]
    return "\n".join(src)


# ---- a generated kernel -------------------------------------------------------------------------
class FusedKernel:
    """One generated program: its CUDA (ElementwiseKernel body, float4 RawKernel) and NumPy
    sources, callable on flat-broadcastable arrays. ``params``: (name, kind) with kind "T",
    "bool" or "scalar"; ``outs``: (name, reduce)."""

    def __init__(self, params, outs, cuda_operation, python_source, raw_source, name):
        self.params, self.outs = tuple(map(tuple, params)), tuple(map(tuple, outs))
        self.cuda_operation, self.python_source = cuda_operation, python_source
        self.raw_source, self.name = raw_source, name
        ns = {"np": np}
        exec(compile(python_source, f"<fused kernel {name}>", "exec"), ns)
        self.twin = ns[name]
        self._ew = self._raw = None
        self._reduce = {}  # C type -> (reduce RawKernel, blocks per SM) (see reduce_call)
        self._lock = threading.Lock()
        self.launches = 0  # kernel runs (tests count them)

    @property
    def in_params(self) -> str:
        """The ElementwiseKernel's input parameters."""
        return ", ".join(f"{'bool' if k == 'bool' else 'T'} {p}" for p, k in self.params)

    @property
    def out_params(self) -> str:
        """The ElementwiseKernel's output parameters."""
        return ", ".join(f"T {o}" for o, _ in self.outs)

    def __repr__(self) -> str:
        return f"<gpugrad fused kernel {self.name}({self.in_params}) -> ({self.out_params})>"

    def __call__(self, *args):
        """Run on ``args`` (arrays, or numbers for scalar params); returns one array per
        output (a 0-d array for a summed output), as a tuple."""
        arrays = [a for (p, k), a in zip(self.params, args) if k != "scalar"]
        first = next((a for a in arrays if getattr(a, "ndim", 0) >= 0 and
                      hasattr(a, "dtype") and a.dtype != np.bool_), None)
        if first is None:
            raise FusionError(f"fused kernel {self.name}: no floating point array argument")
        self.launches += 1
        if isinstance(first, np.ndarray):
            return self._run_numpy(args)
        return self._run_cupy(args)

    def _run_numpy(self, args):
        floats = [a for (p, k), a in zip(self.params, args) if k == "T"]
        dt = floats[0].dtype
        if any(a.dtype != dt for a in floats):
            dt = np.result_type(*(a.dtype for a in floats))
        if dt.kind != "f" or dt.itemsize < 4:  # ints, float16: computed in float32
            dt = np.dtype(np.float32)
        shapes = [np.shape(a) for (p, k), a in zip(self.params, args) if k != "scalar"]
        shape = shapes[0]
        if any(s != shape for s in shapes):  # broadcast_shapes costs microseconds: not always
            shape = np.broadcast_shapes(*shapes)
        n = math.prod(shape)
        flat = []
        for (p, k), a in zip(self.params, args):
            if k == "scalar":
                flat.append(a)
                continue
            a = np.asarray(a)
            if k == "T" and a.dtype != dt:
                a = a.astype(dt)
            if a.size == 1 and k == "T":  # a broadcast number: 0-d, not copied to full size
                flat.append(a.reshape(()))
                continue
            if a.shape != shape:
                a = np.broadcast_to(a, shape)
            flat.append(np.ascontiguousarray(a).reshape(-1))
        elem = [np.empty(n, dt) for _, r in self.outs if not r]
        with np.errstate(all="ignore"):
            sums = self.twin(dt.type, n, *flat, *elem)
        res, ie, isum = [], 0, 0
        for _, r in self.outs:
            if r:
                res.append(np.asarray(sums[isum], dtype=dt))
                isum += 1
            else:
                res.append(elem[ie].reshape(shape))
                ie += 1
        return tuple(res)

    def reduce_source(self, ctype: str = "float") -> str:
        """CUDA source of this program as ONE kernel that also sums its summed outputs
        (``_raw_reduce_source``; ``ctype`` "float" or "double")."""
        return _raw_reduce_source(self.name, self.params, self.outs, self.cuda_operation, ctype)

    def reduce_call(self, *args):
        """As calling the kernel, but on CuPy a program with summed outputs runs as ONE
        kernel (:meth:`reduce_source`: no full-size value written, then read by a sum) where
        :func:`reduce_launch` allows it, after a memset of its small workspace; no host
        synchronisation. On NumPy the twin already sums chunk by chunk in its one pass."""
        arrays = [a for (p, k), a in zip(self.params, args) if k != "scalar"]
        if not arrays or isinstance(arrays[0], np.ndarray):
            return self(*args)
        import cupy
        dt = next((a.dtype for (p, k), a in zip(self.params, args) if k == "T"), None)
        ctype = _REDUCE_CTYPE.get(dt)
        if ctype is None:
            return self(*args)
        kern, per_sm = self._reduce.get(ctype) or self._build_reduce(ctype)
        plan = reduce_launch(self, args, _sm_count(arrays[0].device.id), per_sm)
        if plan is None:
            return self(*args)
        ctype, shape, dt, n, grid = plan
        outs = [cupy.empty(() if r else shape, dt) for _, r in self.outs]
        ws = cupy.zeros(sum(1 for _, r in self.outs if r) + 1, np.float64)  # a memset
        self.launches += 1
        kern((grid,), (REDUCE_THREADS,), reduce_arguments(self, args, outs, ws, n, dt))
        return tuple(outs)

    # ---- CuPy (awaits a GPU) -----------------------------------------------------------------
    def _build_reduce(self, ctype):
        """The reduce RawKernel for ``ctype`` (compiled now) and its resident blocks per SM."""
        import cupy
        with self._lock:
            got = self._reduce.get(ctype)
            if got is None:
                kern = cupy.RawKernel(self.reduce_source(ctype),
                                      reduce_kernel_name(self.name, ctype))
                try:
                    per_sm = blocks_per_sm(kern.attributes["num_regs"])
                except Exception:  # an attribute CuPy does not report: a safe guess
                    per_sm = 4
                got = self._reduce[ctype] = (kern, per_sm)
        return got

    def _build(self):
        with self._lock:
            if self._ew is None:
                import cupy
                self._ew = cupy.ElementwiseKernel(self.in_params, self.out_params,
                                                  self.cuda_operation, self.name)
                self._raw = cupy.RawKernel(self.raw_source, self.name)
        return self._ew

    def _run_cupy(self, args):
        import cupy
        ew = self._ew or self._build()
        floats = [a for (p, k), a in zip(self.params, args) if k == "T"]
        dt = np.result_type(*(a.dtype for a in floats))
        arrays = [a for (p, k), a in zip(self.params, args) if k != "scalar"]
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
        fast = (dt == np.float32 and all(
            a.shape == shape and a.flags.c_contiguous and a.data.ptr % 16 == 0
            and (a.dtype == np.float32 or a.dtype == np.bool_) for a in arrays))
        if fast:
            n = math.prod(shape)
            outs = [cupy.empty(shape, dt) for _ in self.outs]
            kargs = [a for (p, k), a in zip(self.params, args) if k != "scalar"]
            kargs += [np.float32(a) for (p, k), a in zip(self.params, args) if k == "scalar"]
            kargs += outs + [np.int64(n)]
            threads = 256
            blocks = max(1, min((n // 4 + threads - 1) // threads, 65536))
            self._raw((blocks,), (threads,), tuple(kargs))
        else:
            args = [a.astype(dt) if k == "T" and a.dtype != dt else a
                    for (p, k), a in zip(self.params, args)]
            outs = ew(*args)
            outs = list(outs) if isinstance(outs, tuple) else [outs]
        return tuple(o.sum() if r else o for o, (_, r) in zip(outs, self.outs))


_SM_COUNT = {}


def _sm_count(device_id) -> int:
    """Multiprocessors of a CUDA device (asked once per device)."""
    n = _SM_COUNT.get(device_id)
    if n is None:
        import cupy
        n = _SM_COUNT[device_id] = int(
            cupy.cuda.Device(device_id).attributes["MultiProcessorCount"])
    return n


# ---- the cache ----------------------------------------------------------------------------------
_memory = {}
_stats = {"hits": 0, "misses": 0, "disk_hits": 0, "disk_misses": 0, "disk_corrupt": 0}
_cache_lock = threading.Lock()


def cache_dir() -> Path:
    """The on-disk cache: ``$GPUGRAD_CACHE_DIR/fusion`` or ``~/.cache/gpugrad/fusion``."""
    root = os.environ.get("GPUGRAD_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "gpugrad") / "fusion"


def cache_info() -> dict:
    """Counters: memory hits/misses, disk hits/misses, corrupt disk entries rebuilt."""
    return dict(_stats, entries=len(_memory))


def cache_clear(disk: bool = False) -> None:
    """Empty the in-memory cache (and the disk cache with ``disk=True``); reset counters."""
    with _cache_lock:
        _memory.clear()
        for k in _stats:
            _stats[k] = 0
        if disk and cache_dir().is_dir():
            for f in cache_dir().glob("*.json"):
                f.unlink(missing_ok=True)


def _digest(*texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()


def _build_kernel(graph, mode, wrt):
    params, outs, stmts = _generate(graph, mode, wrt)
    body = _c_body(stmts)
    name = "gpugrad_fused_" + _digest(body, repr(params), repr(outs))[:16]
    return FusedKernel(params, outs, body, _python_source(name, params, outs, stmts),
                       _raw_source(name, params, outs, body), name)


def _get_kernel(graph, mode, wrt) -> FusedKernel:
    key = f"{graph.signature()}|{mode}|{wrt}"
    with _cache_lock:
        k = _memory.get(key)
        if k is not None:
            _stats["hits"] += 1
            return k
        _stats["misses"] += 1
    path = cache_dir() / f"{_digest(key)[:32]}.json"
    k = _load(path, key)
    if k is None:
        k = _build_kernel(graph, mode, wrt)
        _store(path, key, k)
    with _cache_lock:
        _memory[key] = k
    return k


_FIELDS = ("params", "outs", "cuda_operation", "python_source", "raw_source", "name")


def _load(path, key):
    """The kernel stored at ``path``, or None (missing, or corrupt: counted, then rebuilt)."""
    try:
        raw = path.read_bytes()
    except OSError:
        _stats["disk_misses"] += 1
        return None
    try:
        d = json.loads(raw.decode())
        fields = [d[f] for f in _FIELDS]
        if d["version"] != _VERSION or d["key"] != key or \
                d["hash"] != _digest(*map(json.dumps, fields)):
            raise ValueError("stale or altered entry")
        k = FusedKernel(*fields)
    except Exception:  # any damage: ignore the entry, rebuild it
        _stats["disk_corrupt"] += 1
        return None
    _stats["disk_hits"] += 1
    return k


def _store(path, key, k):
    fields = [list(map(list, k.params)), list(map(list, k.outs)), k.cuda_operation,
              k.python_source, k.raw_source, k.name]
    d = dict(zip(_FIELDS, fields), version=_VERSION, key=key,
             hash=_digest(*map(json.dumps, fields)))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(d))
        os.replace(tmp, path)  # atomic: a reader never sees half a file
    except OSError:
        pass  # a read-only home: the memory cache still works


# ---- tracing ------------------------------------------------------------------------------------
class _Tracer:
    """A stand-in tensor that records the elementwise ops applied to it in a FusedGraph."""

    __slots__ = ("graph", "node", "reduced")
    __array_priority__ = 1000

    def __init__(self, graph, node, reduced=False):
        self.graph, self.node, self.reduced = graph, node, reduced

    def _arg(self, v):
        if isinstance(v, _Tracer):
            if v.graph is not self.graph:
                raise FusionError("fusion: values of two different traces mixed")
            v._check()
            return v.node
        if isinstance(v, (bool, int, float, np.generic)) and not isinstance(v, np.bool_):
            return self.graph.const(v)
        raise FusionError(f"fusion: cannot fuse an operand of type {type(v).__name__}: pass "
                          f"tensors as inputs of the fused function, numbers as numbers")

    def _check(self):
        if self.reduced:
            raise FusionError("fusion: a summed value can only be returned (sum is fused at "
                              "the end of a chain only)")

    def _op(self, name, *others, first=None):
        self._check()
        args = [self.node if first is None else first] + [self._arg(o) for o in others]
        return _Tracer(self.graph, self.graph.op(name, *args))

    def __add__(self, o): return self._op("add", o)  # noqa: E704
    def __radd__(self, o): return self._op("add", self, first=self._arg(o))  # noqa: E704
    def __sub__(self, o): return self._op("sub", o)  # noqa: E704
    def __rsub__(self, o): return self._op("sub", self, first=self._arg(o))  # noqa: E704
    def __mul__(self, o): return self._op("mul", o)  # noqa: E704
    def __rmul__(self, o): return self._op("mul", self, first=self._arg(o))  # noqa: E704
    def __truediv__(self, o): return self._op("div", o)  # noqa: E704
    def __rtruediv__(self, o): return self._op("div", self, first=self._arg(o))  # noqa: E704
    def __neg__(self): return self._op("neg")  # noqa: E704
    def __gt__(self, o): return self._op("gt", o)  # noqa: E704
    def __lt__(self, o): return self._op("lt", o)  # noqa: E704
    def __ge__(self, o): return self._op("ge", o)  # noqa: E704
    def __le__(self, o): return self._op("le", o)  # noqa: E704

    def __pow__(self, p):
        if isinstance(p, _Tracer):
            raise FusionError("fusion: pow is fused for a number exponent only")
        return self._op("pow", p)

    pow = __pow__

    def exp(self): return self._op("exp")  # noqa: E704
    def log(self): return self._op("log")  # noqa: E704
    def sin(self): return self._op("sin")  # noqa: E704
    def cos(self): return self._op("cos")  # noqa: E704
    def sqrt(self): return self._op("sqrt")  # noqa: E704
    def tanh(self): return self._op("tanh")  # noqa: E704
    def sigmoid(self): return self._op("sigmoid")  # noqa: E704
    def relu(self): return self._op("relu")  # noqa: E704
    def neg(self): return self._op("neg")  # noqa: E704

    def sum(self, dim=None, keepdim=False):
        """A sum over all elements (the only reduction that fuses, at the end)."""
        if dim is not None or keepdim:
            raise FusionError("fusion: only a full sum (no dim) is fused")
        self._check()
        return _Tracer(self.graph, self.node, reduced=True)

    def __bool__(self):
        raise FusionError("fusion: a traced value has no truth value (a Python `if` on a "
                          "tensor cannot be fused; use ops.where)")

    def __getattr__(self, name):
        raise _FusionAttributeError(f"fusion: Tensor.{name} cannot be fused (fusable ops: "
                          f"{', '.join(sorted(_OPS))}, sum)")


class _Ops:
    """Functions usable both eagerly (on gpugrad tensors: the gpugrad op) and in a traced
    function (on tracers: recorded): ``ops.tanh(x)``, ``ops.where(c, a, b)``, ..."""

    def __getattr__(self, name):
        if name not in _OPS and name not in ("sum",):
            raise AttributeError(f"fusion ops has no {name!r}")

        def fn(*args):
            t = next((a for a in args if isinstance(a, _Tracer)), None)
            if t is None:
                import gpugrad
                return getattr(gpugrad, name)(*args)
            if name == "where":
                c, a, b = args
                if not isinstance(c, _Tracer):
                    raise FusionError("fusion: where's condition must be traced")
                return _Tracer(c.graph, c.graph.op("where", c.node, t._arg(a), t._arg(b)))
            if name in ("add", "sub", "mul", "div", "pow"):
                a, b = args
                return _Tracer(t.graph, t.graph.op(name, t._arg(a), t._arg(b)))
            if name == "sum":
                return args[0].sum()
            return getattr(args[0], name)()
        fn.__name__ = name
        return fn


ops = _Ops()


class FusedFunction:
    """A traced function whose elementwise chain runs as generated kernels: calling it on
    gpugrad tensors returns tensors recorded for autograd (forward: one kernel; backward:
    one kernel for every input gradient, recomputing the chain; on NumPy, a function with
    one summed output computes its gradient in the forward's kernel instead, and backward
    scales it); :meth:`value_and_grad` computes the outputs and the gradients of their sum
    in ONE kernel (plus the sums). Gradients of gradients are refused, not wrong."""

    def __init__(self, fn, example_inputs) -> None:
        self.fn = fn
        self.graph = g = FusedGraph()
        tracers = []
        self._input_kinds = []
        for x in example_inputs:
            kind = "bool" if str(getattr(x, "dtype", "")).endswith("bool") else "T"
            self._input_kinds.append(kind)
            tracers.append(_Tracer(g, g.input(kind)))
        out = fn(*tracers)
        self._single = not isinstance(out, (tuple, list))
        for o in ((out,) if self._single else out):
            if not isinstance(o, _Tracer):
                raise FusionError(f"fusion: the function must return traced values, got "
                                  f"{type(o).__name__}")
            g.output(o.node, "sum" if o.reduced else None)

    def __repr__(self) -> str:
        return f"<FusedFunction of {getattr(self.fn, '__name__', self.fn)}: " \
               f"{len(self.graph.nodes)} nodes>"

    def _check(self, inputs):
        if len(inputs) != len(self.graph.inputs):
            raise TypeError(f"fused {getattr(self.fn, '__name__', 'function')}: expected "
                            f"{len(self.graph.inputs)} inputs, got {len(inputs)}")

    def __call__(self, *inputs):
        """The outputs, as gpugrad tensors recorded for backward."""
        self._check(inputs)
        out = _FusedOp.apply(self, *inputs)
        return out[0] if self._single else out

    def value_and_grad(self, *inputs, argnums=None):
        """(outputs, gradients): the outputs of the function and the gradient of the sum of
        its outputs with respect to the inputs ``argnums`` (default: every float input), all
        from one generated kernel."""
        from ._tensor import Tensor
        self._check(inputs)
        wrt = tuple(i for i, k in enumerate(self._input_kinds) if k == "T") \
            if argnums is None else tuple(argnums)
        prog = self.graph.program("value_and_grad", wrt)
        res = prog(*[t._data for t in inputs], *self.graph.const_values)
        nout = len(self.graph.outputs)
        vals = [Tensor._make(r) for r in res[:nout]]
        grads = []
        for i, r in zip(wrt, res[nout:]):
            grads.append(Tensor._make(_sum_to(r, inputs[i]._data.shape)))
        return (vals[0] if self._single else tuple(vals)), tuple(grads)


def _sum_to(a, shape):
    """``a`` summed down to ``shape`` (the gradient of a broadcast input)."""
    if a.shape == tuple(shape):
        return a
    lead = a.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, s in enumerate(shape)
                                      if s == 1 and a.shape[i + lead] != 1)
    return a.sum(axis=axes, keepdims=True).reshape(shape) if axes else a.reshape(shape)


def _make_op_class():
    from .autograd.function import Function
    from ._tensor import Tensor

    class FusedOp(Function):
        """The Function of a FusedFunction call: forward and backward, one kernel each."""

        @staticmethod
        def forward(ctx, ff, *inputs):
            arrays = [t._data for t in inputs]
            ctx.ff, ctx.shapes = ff, [a.shape for a in arrays]
            need = ctx.needs_input_grad[1:]
            wrt = tuple(i for i, (k, nd) in enumerate(zip(ff._input_kinds, need))
                        if k == "T" and nd)
            ctx.wrt, ctx.grads = wrt, None
            nout = len(ff.graph.outputs)
            if wrt and nout == 1 and ff.graph.outputs[0][1] and \
                    isinstance(arrays[0], np.ndarray):
                # NumPy is bound by computation, not memory: a loss (summed outputs) computes
                # its gradient now, in the forward's pass, instead of recomputing the chain
                # in backward (which a GPU, bound by memory, prefers).
                res = ff.graph.program("value_and_grad", wrt)(*arrays, *ff.graph.const_values)
                ctx.grads = res[nout:]
                return tuple(Tensor._make(r) for r in res[:nout])
            ctx.save_for_backward(*inputs)
            res = ff.graph.program("forward")(*arrays, *ff.graph.const_values)
            return tuple(Tensor._make(r) for r in res)

        @staticmethod
        def backward(ctx, *gys):
            from .autograd.grad_mode import state
            if state.enabled:  # create_graph=True: the generated backward is not recorded
                raise RuntimeError(
                    "fused function: gradients of gradients (create_graph=True) are not "
                    "supported by a fused chain; run the function unfused (call ff.fn) for "
                    "higher-order derivatives")
            ff, wrt = ctx.ff, ctx.wrt
            if ctx.grads is not None:  # d(loss)/dx from forward, scaled by gy (a number)
                gy = gys[0]._data
                grads = [None] * len(ctx.shapes)
                for i, r in zip(wrt, ctx.grads):
                    r = r if gy == 1 else r * gy
                    grads[i] = Tensor._make(_sum_to(r, ctx.shapes[i]))
                return (None, *grads)
            inputs = ctx.saved_tensors
            prog = ff.graph.program("backward", wrt)
            res = prog(*[t._data for t in inputs], *ff.graph.const_values,
                       *[g._data for g in gys])
            grads = [None] * len(inputs)
            for i, r in zip(wrt, res):
                grads[i] = Tensor._make(_sum_to(r, ctx.shapes[i]))
            return (None, *grads)

    return FusedOp


class _LazyOp:
    cls = None

    def apply(self, *args):
        if _LazyOp.cls is None:  # late: the autograd package imports much of gpugrad
            _LazyOp.cls = _make_op_class()
        return _LazyOp.cls.apply(*args)


_FusedOp = _LazyOp()


def fuse(fn, example_inputs) -> FusedFunction:
    """Trace ``fn`` once on tracer stand-ins of ``example_inputs`` (tensors; a bool tensor
    is a mask input) and return a :class:`FusedFunction` computing the same outputs (and
    gradients) with one generated kernel per program. ``fn`` may use operators, the tensor
    methods of ``_OPS``, ``.sum()`` at the end, and :data:`ops` functions."""
    return FusedFunction(fn, example_inputs)


# ---- the W2 benchmark hook ----------------------------------------------------------------------
W2_A, W2_B = 0.5, 0.1  # as benchmarks/workloads.py


def w2_chain_loss(x, a: float = W2_A, b: float = W2_B):
    """W2's loss: sum(tanh(x*a + b) * sigmoid(x) + x*x) (the program benchmarks trace)."""
    return ((x * a + b).tanh() * x.sigmoid() + x * x).sum()


_w2 = {}


def w2_fused_step(x):
    """W2's step fused: sets ``x.grad`` and returns the loss, computed by ONE generated kernel
    (per-element value and gradient) and one sum. For ``benchmarks/`` (a ``fused`` peer)."""
    ff = _w2.get("ff")
    if ff is None:
        ff = _w2["ff"] = fuse(w2_chain_loss, [x])
    loss, (gx,) = ff.value_and_grad(x)
    x.grad = gx
    return loss
