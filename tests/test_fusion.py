"""Fusion of elementwise chains (``gpugrad._fusion``): fused == unfused.

- traced programs (W2 among them) against the same function run eagerly by gpugrad (one op
  at a time): values, autograd gradients and ``value_and_grad``, float32 and float64, with
  numbers and broadcast tensors as operands; gradcheck in float64;
- random DAGs of every fusable op across chunk boundaries of the NumPy twin (buffer reuse);
- one kernel per program (launch counts), W2's forward+gradient in one;
- the kernel cache: memory and disk hits and misses, corrupt disk entries rebuilt;
- errors for what cannot be fused;
- the generated CUDA (ElementwiseKernel body and float4 RawKernel) compiled by ``nvcc`` when
  installed; on a GPU (``gpu``), CuPy fused against the NumPy twin and eager gpugrad.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

import gpugrad
from gpugrad import _fusion as F
from gpugrad._fusion import FusionError, fuse, ops
from gpugrad.autograd import gradcheck
from helpers import assert_close, to_numpy


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test with its own, empty disk cache."""
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(tmp_path / "cache"))
    F.cache_clear()
    yield
    F.cache_clear()


TOL = {"float32": dict(rtol=2e-5, atol=2e-5), "float64": dict(rtol=1e-12, atol=1e-12)}


# ---- programs: each runs on gpugrad tensors (eager) and on tracers (fused) --------------------
def w2(x):
    return F.w2_chain_loss(x)


def mixed(x, y):
    return (x * y - x / (y.exp() + 1)).sin() + (x * 0.5).cos() - 3.0 * y


def guarded(x, y):
    return ops.where(x > 0, x.relu() * y, (x - y).tanh()) + ops.where(y <= x, 2.0, y)


def powers(x, y):
    return ((x * x + 1).sqrt().log() + x ** 3 - 2 / (1 + y.sigmoid()) - (-x) * x ** 0,
            (x.tanh() * y).sum())


def reuse(x, y):
    a = x * y
    b = a.tanh()
    return (a * b + b * b - a / (b * b + 2)).exp() * 0.1


PROGRAMS = [(w2, 1), (mixed, 2), (guarded, 2), (powers, 2), (reuse, 2)]


def _inputs(n_in, shape, dtype, device, seed, shapes=None):
    rng = np.random.default_rng(seed)
    shapes = shapes or [shape] * n_in
    return [gpugrad.tensor(rng.uniform(-2, 2, s).astype(dtype), device=device,
                           requires_grad=True) for s in shapes]


def _eager(fn, xs):
    out = fn(*xs)
    return out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn,n_in", PROGRAMS, ids=[p[0].__name__ for p in PROGRAMS])
def test_fused_equals_unfused(fn, n_in, dtype, device):
    xs = _inputs(n_in, (7, 9), dtype, device, seed=1)
    ff = fuse(fn, xs)
    ref = _eager(fn, xs)
    weights = [gpugrad.tensor(np.random.default_rng(2).uniform(-1, 1, r.shape).astype(dtype),
                              device=device) for r in ref]
    ref_grads = gpugrad.autograd.grad(sum((r * w).sum() for r, w in zip(ref, weights)), xs,
                                      retain_graph=True)
    got = ff(*xs)
    got = got if isinstance(got, tuple) else (got,)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        assert_close(g, r, **TOL[dtype])
    # backward of the fused call: one generated kernel for every input gradient
    grads = gpugrad.autograd.grad(sum((g * w).sum() for g, w in zip(got, weights)), xs)
    for g, r in zip(grads, ref_grads):
        assert_close(g, r, **TOL[dtype])
    # value_and_grad: the outputs, and the gradient of their sum, from one kernel
    vals, vgrads = ff.value_and_grad(*xs)
    vals = vals if isinstance(vals, tuple) else (vals,)
    for v, r in zip(vals, ref):
        assert_close(v, r, **TOL[dtype])
    sref = gpugrad.autograd.grad(sum(r.sum() for r in ref), xs)
    for g, r in zip(vgrads, sref):
        assert_close(g, r, **TOL[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shapes", [[(6, 5), ()], [(6, 5), (1,)], [(6, 1), (1, 5)],
                                    [(), (4, 3)]], ids=str)
def test_broadcasting(shapes, dtype, device):
    xs = _inputs(2, None, dtype, device, seed=3, shapes=shapes)
    ff = fuse(mixed, xs)
    ref = mixed(*xs)
    ref_grads = gpugrad.autograd.grad(ref.sum(), xs)
    got = ff(*xs)
    assert_close(got, ref, **TOL[dtype])
    for g, r, x in zip(gpugrad.autograd.grad(got.sum(), xs), ref_grads, xs):
        assert g.shape == x.shape
        assert_close(g, r, **TOL[dtype])
    _, vgrads = ff.value_and_grad(*xs)
    for g, r in zip(vgrads, ref_grads):
        assert_close(g, r, **TOL[dtype])


def test_gradcheck(device):
    xs = _inputs(2, (3, 4), "float64", device, seed=4)
    for fn in (mixed, guarded, reuse):
        ff = fuse(fn, xs)
        assert gradcheck(lambda a, b: ff(a, b), xs)
    ff = fuse(powers, xs)
    assert gradcheck(lambda a, b: ff(a, b), xs)


def test_argnums_and_grad_only_where_needed(device):
    x, y = _inputs(2, (5,), "float64", device, seed=5)
    ff = fuse(mixed, [x, y])
    _, (gy,) = ff.value_and_grad(x, y, argnums=(1,))
    assert_close(gy, gpugrad.autograd.grad(mixed(x, y).sum(), [y])[0])
    # only y requires grad: the backward program computes its gradient alone
    x2 = x.detach()
    out = ff(x2, y)
    out.sum().backward()
    assert_close(y.grad, gpugrad.autograd.grad(mixed(x2, y).sum(), [y])[0])
    assert (("backward", (1,)) in ff.graph._programs)


# ---- W2 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_w2_one_kernel(dtype, device):
    n = 3 * F._CHUNK + 7  # several chunks of the NumPy twin, and a tail
    x = gpugrad.tensor(np.random.default_rng(6).standard_normal(n).astype(dtype),
                       device=device, requires_grad=True)
    loss = w2(x)
    loss.backward()
    ref_grad = x.grad
    x.grad = None
    got = F.w2_fused_step(x)
    # float32 sums of 2**16 terms: accumulation order differs (chunks vs pairwise)
    assert_close(got, loss, rtol=1e-5 if dtype == "float32" else 1e-12, atol=0)
    assert_close(x.grad, ref_grad, **TOL[dtype])
    prog = F._w2["ff"].graph.program("value_and_grad")
    before = prog.launches
    F.w2_fused_step(x)
    assert prog.launches == before + 1  # value and gradient: one kernel (and one sum)
    # the generated code has one output per result: the per-element value, the gradient
    assert [o for o, _ in prog.outs] == ["o0_", "gx0_"]
    assert [p for p, _ in prog.params] == ["x0_", "s0_", "s1_"]


def test_autograd_path_is_one_kernel_each_way(device):
    x = _inputs(1, (100,), "float32", device, seed=7)[0]
    ff = fuse(w2, [x])
    fwd, bwd = ff.graph.program("forward"), ff.graph.program("backward", (0,))
    loss = ff(x)
    loss.backward()
    if device == "cpu":  # NumPy: the loss's gradient computed in forward's pass, saved
        vg = ff.graph.program("value_and_grad", (0,))
        assert (fwd.launches, bwd.launches, vg.launches) == (0, 0, 1)
    else:  # a GPU: the backward recomputes the chain (memory-bound: cheaper than saving)
        assert (fwd.launches, bwd.launches) == (1, 1)
    ref = x.grad
    x.grad = None
    (ff(x) * 3.0).backward()  # a seed other than 1: the saved gradient scaled
    assert_close(x.grad, 3.0 * ref, rtol=1e-6, atol=1e-6)
    x.grad = None
    (ff(x) * 3.0).backward()
    w2(x * 1.0).backward()  # x * 1.0: no effect on the values
    assert_close(x.grad, 4.0 * ref, rtol=1e-5, atol=1e-5)


# ---- random DAGs: buffer reuse in the twin, every op -------------------------------------------
_UNARY = ["neg", "exp", "log", "sin", "cos", "sqrt", "tanh", "sigmoid", "relu"]
_BINARY = ["add", "sub", "mul", "div"]


def _apply(op, args):
    """Op ``op`` on tensors or tracers (the same code runs eagerly and traced)."""
    a = args[0]
    if op == "add":
        return a + args[1]
    if op == "sub":
        return a - args[1]
    if op == "mul":
        return a * args[1]
    if op == "div":
        return a / (args[1] * args[1] + 0.5)  # a divisor away from 0
    if op in ("log", "sqrt"):  # inside their domain
        return getattr(a * a + 1, op)()
    return getattr(a, op)()


@pytest.mark.parametrize("seed", range(6))
def test_random_dags(seed, device):
    n = 2 * F._CHUNK + 3
    xs = _inputs(3, (n,), "float64", device, seed=seed)

    def program(*inputs):
        vals = list(inputs)
        r = np.random.default_rng(seed + 100)
        for _ in range(14):
            kind = r.integers(4)
            pick = [vals[int(i)] for i in r.integers(len(vals), size=3)]
            if kind == 0:
                op = _UNARY[r.integers(len(_UNARY))]
                v = _apply(op, [pick[0].tanh()] if op == "exp" else pick)
            elif kind == 1:
                v = _apply(_BINARY[r.integers(len(_BINARY))], pick)
            elif kind == 2:
                v = ops.where(pick[0] > pick[1], pick[1], pick[2])
            else:
                v = (pick[0].tanh()) ** float(r.integers(0, 4))
            vals.append(v.tanh() if r.integers(2) else v * 0.5)
        return vals[-1] + vals[-2] * vals[-3], vals[-4].sum()

    ref = program(*xs)
    assert all(np.isfinite(to_numpy(r)).all() for r in ref)  # a test of numbers, not of NaN
    ff = fuse(program, xs)
    got = ff(*xs)
    for g, r in zip(got, ref):
        assert_close(g, r, rtol=1e-12, atol=1e-12)
    w = gpugrad.tensor(np.linspace(-1, 1, n), device=device)
    ref_g = gpugrad.autograd.grad((ref[0] * w).sum() + ref[1], xs, allow_unused=True)
    got_g = gpugrad.autograd.grad((got[0] * w).sum() + got[1], xs, allow_unused=True)
    for g, r, x in zip(got_g, ref_g, xs):
        r = gpugrad.zeros_like(x) if r is None else r
        assert_close(g, r, rtol=1e-10, atol=1e-12)


# ---- the cache ----------------------------------------------------------------------------------
def test_cache_memory_and_disk(device, tmp_path):
    x = _inputs(1, (10,), "float32", device, seed=8)[0]
    ff = fuse(w2, [x])
    k1 = ff.graph.program("value_and_grad")
    info = F.cache_info()
    assert (info["misses"], info["disk_misses"], info["hits"]) == (1, 1, 0)
    files = list(F.cache_dir().glob("*.json"))
    assert len(files) == 1 and F.cache_dir() == tmp_path / "cache" / "fusion"
    # the same structure again, other constants: the same kernel, from memory
    ff2 = fuse(lambda t: F.w2_chain_loss(t, a=2.0, b=-1.0), [x])
    assert ff2.graph.program("value_and_grad") is k1
    assert F.cache_info()["hits"] == 1
    v2, (g2,) = ff2.value_and_grad(x)
    assert_close(v2, F.w2_chain_loss(x, 2.0, -1.0), rtol=1e-6, atol=1e-5)
    # a new process (memory emptied): from disk, not regenerated
    F.cache_clear()
    ff3 = fuse(w2, [x])
    k3 = ff3.graph.program("value_and_grad")
    assert k3 is not k1 and k3.python_source == k1.python_source
    assert k3.cuda_operation == k1.cuda_operation and k3.raw_source == k1.raw_source
    info = F.cache_info()
    assert (info["disk_hits"], info["disk_misses"], info["disk_corrupt"]) == (1, 0, 0)
    assert_close(ff3.value_and_grad(x)[0], w2(x), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "altered", "wrong_key"])
def test_corrupt_disk_entry_is_rebuilt(damage, device):
    x = _inputs(1, (10,), "float32", device, seed=9)[0]
    k1 = fuse(w2, [x]).graph.program("forward")
    path, = F.cache_dir().glob("*.json")
    text = path.read_text()
    if damage == "garbage":
        path.write_bytes(b"\x00\xffnot json")
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    else:
        d = json.loads(text)
        if damage == "altered":  # code changed without its hash: must not be run
            d["python_source"] = d["python_source"].replace("np.tanh", "np.sin")
        else:
            d["key"] = "another graph"
        path.write_text(json.dumps(d))
    F.cache_clear()
    k2 = fuse(w2, [x]).graph.program("forward")
    assert F.cache_info()["disk_corrupt"] == 1
    assert k2.python_source == k1.python_source
    assert_close(fuse(w2, [x])(x), w2(x), rtol=1e-6, atol=1e-5)
    F.cache_clear()  # rewritten whole: the next process reads it
    fuse(w2, [x]).graph.program("forward")
    assert F.cache_info()["disk_hits"] == 1


def test_unwritable_cache_dir_still_works(device, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPUGRAD_CACHE_DIR", str(blocker))  # a file: no directory under it
    x = _inputs(1, (4,), "float64", device, seed=10)[0]
    assert_close(fuse(w2, [x])(x), w2(x), rtol=1e-12, atol=1e-12)


# ---- errors --------------------------------------------------------------------------------------
def test_errors(device):
    x = _inputs(1, (4,), "float32", device, seed=11)[0]
    with pytest.raises(FusionError, match="abs cannot be fused"):
        fuse(lambda t: t.abs(), [x])
    with pytest.raises(FusionError, match="truth value"):
        fuse(lambda t: t if t > 0 else -t, [x])
    with pytest.raises(FusionError, match="summed value"):
        fuse(lambda t: t.sum() * 2, [x])
    with pytest.raises(FusionError, match="full sum"):
        fuse(lambda t: t.sum(0), [x])
    with pytest.raises(FusionError, match="number exponent"):
        fuse(lambda t: t ** t, [x])
    with pytest.raises(FusionError, match="must return traced"):
        fuse(lambda t: 3.0, [x])
    with pytest.raises(FusionError, match="'erf' cannot be fused"):
        F.FusedGraph().op("erf", 0)
    ff = fuse(w2, [x])
    with pytest.raises(TypeError, match="expected 1 inputs, got 2"):
        ff(x, x)
    assert not hasattr(F._Tracer(F.FusedGraph(), 0), "dtype")  # hasattr: an AttributeError


def test_ops_run_eagerly_on_tensors(device):
    x, y = _inputs(2, (4,), "float64", device, seed=12)
    assert_close(ops.where(x > y, x, y), gpugrad.where(x > y, x, y))
    assert_close(ops.tanh(x), x.tanh())


# ---- CUDA source: nvcc (no GPU needed) ---------------------------------------------------------
def _ew_wrapper(k, ctype, tag):
    """The ElementwiseKernel body wrapped as CuPy wraps it, for ``ctype``."""
    params, reads = [], []
    for p, kind in k.params:
        if kind == "scalar":
            params.append(f"const T {p}")
        else:
            t = "bool" if kind == "bool" else "T"
            params.append(f"const {t}* _raw_{p}")
            reads.append(f"    const {t} {p} = _raw_{p}[i];")
    for o, _ in k.outs:
        params.append(f"T* _raw_{o}")
        reads.append(f"    T &{o} = _raw_{o}[i];")
    return "\n".join([f"namespace ew_{ctype}_{tag} {{", f"typedef {ctype} T;",
                      f"__global__ void {k.name}({', '.join(params)}, long long _n) {{",
                      "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;"
                      " i < _n; i += (long long)blockDim.x * gridDim.x) {",
                      *reads, k.cuda_operation, "  }", "}", "}", ""])


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_generated_cuda_compiles_with_nvcc(tmp_path, device):
    xs = _inputs(2, (4,), "float32", device, seed=13)
    parts, raw = [], []
    for j, (fn, n_in) in enumerate(PROGRAMS):
        g = fuse(fn, xs[:n_in]).graph
        for mode in ("forward", "backward", "value_and_grad"):
            k = g.program(mode)
            for ctype in ("float", "double"):
                parts.append(_ew_wrapper(k, ctype, f"{j}_{mode}"))
            raw.append(k.raw_source)
    src = tmp_path / "fused_check.cu"
    src.write_text("\n".join(parts + raw))  # raw kernels: extern "C", names unique by hash
    proc = subprocess.run(["nvcc", "--ptx", "-o", str(tmp_path / "out.ptx"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    assert "ld.global.v4.f32" in ptx or "ld.global.nc.v4.f32" in ptx  # float4 loads


# ---- on a GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("n", [4 * 1000, 4 * 1000 + 3, 1 << 20])
@pytest.mark.parametrize("fn,n_in", PROGRAMS, ids=[p[0].__name__ for p in PROGRAMS])
def test_cupy_fused_vs_unfused(fn, n_in, n):
    import cupy
    xs = _inputs(n_in, (n,), "float32", "cuda", seed=14)
    ff = fuse(fn, xs)
    ref = _eager(fn, xs)
    got = ff(*xs)
    got = got if isinstance(got, tuple) else (got,)
    for g, r in zip(got, ref):
        assert_close(g, r, rtol=1e-4, atol=1e-4)
    vals, vgrads = ff.value_and_grad(*xs)
    for g, r in zip(vgrads, gpugrad.autograd.grad(sum(r.sum() for r in ref), xs)):
        assert_close(g, r, rtol=1e-5, atol=1e-5)
    # the twin on the same inputs, through NumPy
    prog = ff.graph.program("value_and_grad")
    host = prog(*[cupy.asnumpy(x._data) for x in xs], *ff.graph.const_values)
    dev = prog(*[x._data for x in xs], *ff.graph.const_values)
    for h, d in zip(host, dev):
        np.testing.assert_allclose(cupy.asnumpy(d), h, rtol=1e-4, atol=1e-4)
    # a misaligned view takes the ElementwiseKernel path: same values
    big = _inputs(n_in, (n + 1,), "float32", "cuda", seed=14)
    views = [b[1:] for b in big]
    a = ff.graph.program("forward")(*[v._data for v in views], *ff.graph.const_values)
    b = _eager(fn, views)
    for g, r in zip(a, b):
        np.testing.assert_allclose(cupy.asnumpy(g), to_numpy(r), rtol=1e-4, atol=1e-4)


# ---- the pieces a capture plugs in ---------------------------------------------------------------
def test_graph_api_and_function_table(device):
    from gpugrad.ops import elementwise as E
    for cls_name, op in F.FUNCTION_OPS.items():
        assert hasattr(E, cls_name) and op in F._OPS, cls_name
    g = F.FusedGraph()
    x, y = g.input(), g.input()
    t = g.op("tanh", g.op("mul", x, y))
    g.output(t)
    g.output(g.op("add", t, g.const(2.0)), reduce="sum")
    rng = np.random.default_rng(15)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    out, total = g.forward(a, b)
    np.testing.assert_allclose(out, np.tanh(a * b), rtol=1e-14)
    np.testing.assert_allclose(total, np.sum(np.tanh(a * b) + 2), rtol=1e-14)
    gy = rng.standard_normal(6)
    ga, gb = g.backward((a, b), (gy, np.array(0.5)))
    d = (gy + 0.5) * (1 - np.tanh(a * b) ** 2)
    np.testing.assert_allclose(ga, d * b, rtol=1e-13)
    np.testing.assert_allclose(gb, d * a, rtol=1e-13)
    (v0, v1), (gb2,) = g.value_and_grad(a, b, wrt=(1,))
    np.testing.assert_allclose(gb2, 2 * (1 - np.tanh(a * b) ** 2) * a, rtol=1e-13)


def test_double_backward_is_refused(device):
    x = _inputs(1, (5,), "float64", device, seed=16)[0]
    ff = fuse(lambda t: (t.tanh() * t).sum(), [x])
    ff2 = fuse(lambda t: t.tanh() * t, [x])
    with pytest.raises(RuntimeError, match="create_graph=True"):
        gpugrad.autograd.grad(ff(x), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="create_graph=True"):
        gpugrad.autograd.grad(ff2(x).sum(), [x], create_graph=True)
