"""The lean paths of issue 7 (memory and bandwidth) compute what the general paths compute.

- In-place arithmetic with nothing to record (``p -= lr * p.grad`` under ``no_grad``) and
  ``copy_`` under ``no_grad`` write straight into the tensor (no temporary of its size):
  values, dtypes, version counters, views and errors must be those of the recorded path /
  of torch.
- ``sigmoid`` on NumPy is SciPy's ``expit`` when SciPy is installed; without it, of a large
  array torch's CPU formula ``1 / (1 + exp(-x))``, of a small one the stable
  ``exp(min(x, 0)) / (1 + exp(-|x|))`` without a branch (both paths tested).
- ``x * x`` sends ``2 g x`` down one edge instead of ``g x`` down both.
- ``log_softmax`` of a large NumPy array and its backward run in blocks of rows (the
  temporaries stay in the cache): bit for bit the whole-array expressions.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import gpugrad
from gpugrad.autograd import gradcheck, gradgradcheck
from helpers import assert_close, to_numpy, torch_or_skip

rng = np.random.default_rng(7)


def _pair(a, device, requires_grad=False):
    torch = torch_or_skip()
    return (gpugrad.tensor(a.copy(), device=device, requires_grad=requires_grad),
            torch.tensor(a.copy(), requires_grad=requires_grad))


# ---- in-place arithmetic without recording ---------------------------------------------------
@pytest.mark.parametrize("op", ["add_", "sub_", "mul_", "div_", "__iadd__", "__isub__",
                                "__imul__", "__itruediv__"])
@pytest.mark.parametrize("other", ["same", "row", "scalar", "int", "zero_d"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inplace_arith_no_grad_matches_torch(device, op, other, dtype):
    torch = torch_or_skip()
    a = rng.standard_normal((4, 5)).astype(dtype)
    o = {"same": rng.standard_normal((4, 5)).astype(dtype),
         "row": rng.standard_normal(5).astype(dtype),
         "zero_d": np.asarray(1.5, dtype), "scalar": 0.37, "int": 3}[other]
    g, t = _pair(a, device, requires_grad=True)
    go = gpugrad.tensor(o, device=device) if isinstance(o, np.ndarray) else o
    to = torch.tensor(o) if isinstance(o, np.ndarray) else o
    v0 = g._version.value
    with gpugrad.no_grad():
        r = getattr(g, op)(go)
    with torch.no_grad():
        getattr(t, op)(to)
    assert r is g
    assert g._version.value == v0 + 1
    assert g.dtype == gpugrad.float32 if dtype == np.float32 else gpugrad.float64
    assert np.array_equal(to_numpy(g), to_numpy(t))  # same ufunc, same bits


def test_inplace_no_grad_writes_into_the_same_memory(device):
    x = gpugrad.tensor(rng.standard_normal((3, 4)), device=device)
    base_data = x._data
    view = x[1]
    with gpugrad.no_grad():
        view -= gpugrad.ones(4, dtype=gpugrad.float64, device=device)
        x *= 2
    assert x._data is base_data
    assert view._version.value == x._version.value == 2
    assert_close(view, x[1])


def test_inplace_no_grad_allocates_no_temporary():
    # The optimizer update p -= g must not allocate a buffer of p's size (W4's peak).
    p = gpugrad.tensor(np.ones((512, 1024), np.float32), requires_grad=True)
    g = gpugrad.tensor(np.full((512, 1024), 0.5, np.float32))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with gpugrad.no_grad():
            p -= g
            p.mul_(0.5)
            p.copy_(g)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert peak < p._data.nbytes // 4, peak
    assert np.all(to_numpy(p) == 0.5)


@pytest.mark.parametrize("case", ["int_tensor_float_scalar", "int_div", "bigger_other",
                                  "float64_into_float32", "bool_sub"])
def test_inplace_no_grad_general_cases_match_torch(device, lib, case):
    # Promotions, casts and errors take the general path: the same outcome as torch.
    m = lib.mod
    with m.no_grad():
        if case == "int_tensor_float_scalar":
            x = lib.tensor([1, 2, 3])
            with pytest.raises(RuntimeError):
                x += 0.5
        elif case == "int_div":
            x = lib.tensor([1, 2, 3])
            with pytest.raises(RuntimeError):
                x /= lib.tensor([2, 2, 2])
        elif case == "bigger_other":
            x = lib.tensor([1.0, 2.0])
            with pytest.raises(RuntimeError):
                x += lib.tensor([[1.0, 2.0], [3.0, 4.0]])
        elif case == "float64_into_float32":
            x = lib.tensor([1.0, 2.0], dtype=m.float32)
            x += lib.tensor([0.1, 0.2], dtype=m.float64)
            assert x.dtype == m.float32
            assert np.allclose(np.asarray(x.tolist()), [1.1, 2.2])
        else:
            x = lib.tensor([True, False])
            with pytest.raises(RuntimeError):
                x -= lib.tensor([True, True])


def test_inplace_on_leaf_still_refused_when_recording(device):
    w = gpugrad.ones(3, device=device, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w -= 1.0
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.copy_(gpugrad.zeros(3, device=device))


def test_inplace_recording_non_leaf_still_differentiates(device):
    a = rng.standard_normal(5)
    g, t = _pair(a, device, requires_grad=True)
    yg, yt = g * 2, t * 2
    yg -= g * g
    yt -= t * t
    yg.sum().backward()
    yt.sum().backward()
    assert_close(g.grad, t.grad, rtol=1e-12, atol=1e-12)


def test_inplace_overlapping_operand_matches_out_of_place(device):
    x = gpugrad.tensor(np.arange(9.0).reshape(3, 3), device=device)
    expected = to_numpy(x + x.mT)
    with gpugrad.no_grad():
        x += x.mT
    assert np.array_equal(to_numpy(x), expected)


# ---- copy_ without recording ---------------------------------------------------------------
@pytest.mark.parametrize("src_kind", ["same", "broadcast", "cast", "overlap", "self"])
def test_copy_no_grad_matches_torch(device, src_kind):
    torch = torch_or_skip()
    a = rng.standard_normal((3, 4))
    g, t = _pair(a, device)
    if src_kind == "same":
        s = rng.standard_normal((3, 4))
        gs, ts = gpugrad.tensor(s, device=device), torch.tensor(s)
    elif src_kind == "broadcast":
        s = rng.standard_normal(4)
        gs, ts = gpugrad.tensor(s, device=device), torch.tensor(s)
    elif src_kind == "cast":
        s = rng.integers(-5, 5, (3, 4))
        gs, ts = gpugrad.tensor(s, device=device), torch.tensor(s)
    elif src_kind == "overlap":  # rows shifted by one within the same buffer
        # torch refuses a partial overlap; gpugrad reads the whole source before writing
        gs, g = g[:2], g[1:]
        with gpugrad.no_grad():
            g.copy_(gs)
        assert np.array_equal(to_numpy(g), a[:2])
        return
    else:
        gs, ts = g, t
    v0 = g._version.value
    with gpugrad.no_grad():
        r = g.copy_(gs)
    with torch.no_grad():
        t.copy_(ts)
    assert r is g and g._version.value == v0 + 1
    assert np.array_equal(to_numpy(g), to_numpy(t))


def test_copy_no_grad_into_view_updates_base(device):
    x = gpugrad.zeros(2, 3, device=device)
    with gpugrad.no_grad():
        x[1].copy_(gpugrad.ones(3, device=device))
    assert np.array_equal(to_numpy(x), [[0, 0, 0], [1, 1, 1]])


def test_copy_recorded_still_differentiates(device):
    src = gpugrad.tensor(rng.standard_normal(4), device=device, requires_grad=True)
    dst = gpugrad.zeros(4, dtype=gpugrad.float64, device=device)
    dst.copy_(src)
    (dst * 3).sum().backward()
    assert np.array_equal(to_numpy(src.grad), np.full(4, 3.0))


@pytest.fixture(params=["scipy", "formulas"])
def sigmoid_path(request, monkeypatch):
    """Both NumPy paths of sigmoid: SciPy's expit (when SciPy is installed) and the
    formulas used without it."""
    from gpugrad import _kernels
    if request.param == "scipy":
        pytest.importorskip("scipy.special")
        monkeypatch.setattr(_kernels, "_expit", [])  # found again on first use
    else:
        monkeypatch.setattr(_kernels, "_expit", [None])
    return request.param


# ---- sigmoid on large arrays ---------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_large_matches_torch(sigmoid_path, device, dtype):
    torch = torch_or_skip()
    a = (rng.standard_normal(10000) * 30).astype(dtype)
    a[:4] = [-1000.0, 1000.0, 0.0, -90.0]
    g = to_numpy(gpugrad.tensor(a, device=device).sigmoid())
    t = to_numpy(torch.tensor(a).sigmoid())
    assert g.dtype == dtype
    assert_close(g, t, rtol=4e-7 if dtype == np.float32 else 1e-15, atol=0)
    assert np.all((g >= 0) & (g <= 1))


def test_sigmoid_large_gradcheck(sigmoid_path, device):
    x = gpugrad.tensor(rng.standard_normal(5000), device=device, requires_grad=True)
    w = gpugrad.tensor(rng.standard_normal(5000), device=device)
    assert gradcheck(lambda x: (x.sigmoid() * w).sum(), (x,))


def test_sigmoid_large_and_small_agree(sigmoid_path, device):
    a = rng.standard_normal(8192) * 10
    big = to_numpy(gpugrad.tensor(a, device=device).sigmoid())
    small = np.concatenate([to_numpy(gpugrad.tensor(c, device=device).sigmoid())
                            for c in np.split(a, 8)])
    assert_close(big, small, rtol=1e-14, atol=0)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_sigmoid_small_matches_torch_at_the_extremes(sigmoid_path, device, dtype):
    torch = torch_or_skip()
    a = np.array([-np.inf, -1000.0, -200.0, -90.0, -88.0, -30.0, -1.0, -0.0, 0.0, 1e-8, 1.0,
                  30.0, 90.0, 1000.0, np.inf, np.nan], dtype=dtype)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # nothing to silence
        g = to_numpy(gpugrad.tensor(a, device=device).sigmoid())
    t = to_numpy(torch.tensor(a).sigmoid())
    assert g.dtype == dtype
    rtol = {np.float16: 1e-3, np.float32: 4e-7, np.float64: 1e-15}[dtype]
    # at -90 the exact value is a float32 subnormal: torch's formula flushes it to 0, ours
    # keeps it; both are within the smallest normal number of it
    keep = np.arange(len(a) - 1) != 3
    assert_close(g[:-1][keep], t[:-1][keep], rtol=rtol, atol=0)
    assert abs(float(g[3]) - float(t[3])) <= np.finfo(dtype).tiny
    assert g[0] == 0 and g[-2] == 1 and np.isnan(g[-1])


def test_sigmoid_of_a_0d_tensor(sigmoid_path, device):
    torch = torch_or_skip()
    x = gpugrad.tensor(-1.25, device=device, requires_grad=True)
    y = x.sigmoid()
    assert y.shape == () and abs(float(y) - float(torch.tensor(-1.25).sigmoid())) < 1e-7
    y.backward()
    assert abs(float(x.grad) - float(y) * (1 - float(y))) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_small_is_accurate_in_the_tails(sigmoid_path, device, dtype):
    a = np.linspace(-80, 80, 1001).astype(dtype)
    g = to_numpy(gpugrad.tensor(a, device=device).sigmoid()).astype(np.float64)
    exact = 1 / (1 + np.exp(-a.astype(np.float64)))
    assert_close(g, exact, rtol=4e-7 if dtype == np.float32 else 1e-15, atol=0)


# ---- x * x ---------------------------------------------------------------------------------
def test_square_by_mul_matches_torch(device):
    torch = torch_or_skip()
    a = rng.standard_normal((3, 4))
    g, t = _pair(a, device, requires_grad=True)
    w = rng.standard_normal((3, 4))
    (g * g * gpugrad.tensor(w, device=device)).sum().backward()
    (t * t * torch.tensor(w)).sum().backward()
    assert np.array_equal(to_numpy(g.grad), to_numpy(t.grad))  # 2(gx) == gx + gx exactly


def test_square_by_mul_higher_order(device):
    x = gpugrad.tensor(rng.standard_normal(6), device=device, requires_grad=True)
    assert gradcheck(lambda x: x * x, (x,))
    assert gradgradcheck(lambda x: x * x, (x,))
    (g,) = gpugrad.autograd.grad((x * x).sum(), x, create_graph=True)
    (gg,) = gpugrad.autograd.grad(g.sum(), x)
    assert np.array_equal(to_numpy(gg), np.full(6, 2.0))


# ---- the fast recorders build the general path's node ------------------------------------------
FAST = {
    "add": lambda x, y: x + y, "sub": lambda x, y: x - y, "rsub": lambda x, y: 1.5 - x,
    "mul": lambda x, y: x * y, "square": lambda x, y: x * x, "mul_scalar": lambda x, y: x * 2.5,
    "rmul": lambda x, y: 3 * y, "add_scalar": lambda x, y: x + 1,
    "tanh": lambda x, y: x.tanh(), "sigmoid": lambda x, y: x.sigmoid(),
    "exp": lambda x, y: x.exp(), "log": lambda x, y: y.log(), "sign": lambda x, y: x.sign(),
    "relu": lambda x, y: x.relu(), "sqrt": lambda x, y: y.sqrt(),
    "mm": lambda x, y: x @ y.mT, "mv": lambda x, y: x @ y[1], "vm": lambda x, y: y[0] @ x.mT,
    "dot": lambda x, y: x[0] @ y[2], "bmm": lambda x, y: x.reshape(2, 3, 2) @ y.reshape(2, 2, 3),
    "neg": lambda x, y: -x, "sum": lambda x, y: x.sum() * y.sum(),
    "sum_dim": lambda x, y: x.sum(1, keepdim=True) * y, "sum_0": lambda x, y: x.sum(0) * y[0],
    "log_softmax": lambda x, y: x.log_softmax(1) * y,
    "log_softmax_0": lambda x, y: y.log_softmax(0),
}


def _node(out):
    """What the engine and the backward read of every node of ``out``'s graph (walked from
    ``out``, in a fixed order), and of ``out`` itself."""
    summaries, seen, stack = [], set(), [out.grad_fn]
    while stack:
        n = stack.pop()
        if n is None or id(n) in seen or type(n).__name__ == "AccumulateGrad":
            continue
        seen.add(id(n))
        saved = [None if s is None else (s.output_nr, s.version, s.tensor is None)
                 for s in (n._saved or [])]
        attrs = {k: getattr(n, k) for k in ("alpha", "scalars", "square", "ndims", "meta", "dim")
                 if hasattr(n, k)}
        summaries.append((type(n).__name__, n.needs_input_grad, tuple(n._arg_positions),
                          n._n_args, [(type(f).__name__, nr) for f, nr in n.next_functions],
                          list(n._input_meta), list(n._output_meta), saved, attrs))
        stack.extend(f for f, _ in n.next_functions)
    return summaries, out._requires_grad, out._output_nr


@pytest.mark.parametrize("grad_y", [True, False], ids=["both", "x_only"])
@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_recording_builds_the_general_node(name, grad_y):
    """Anomaly mode takes the general path (forward, then _record): the fast one must make
    the same node, and the same gradients."""
    a, b = rng.standard_normal((3, 4)), rng.uniform(0.5, 2.0, (3, 4))
    results = []
    for general in (False, True):
        x = gpugrad.tensor(a, requires_grad=True)
        y = gpugrad.tensor(b, requires_grad=grad_y)
        with gpugrad.autograd.set_detect_anomaly(general):
            out = FAST[name](x, y)
            if out.grad_fn is None:  # made of y alone, which does not require grad
                results.append(None)
                continue
            node = _node(out)
            out.backward(gpugrad.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape)))
        results.append((node, to_numpy(x.grad) if x.grad is not None else None,
                        to_numpy(y.grad) if y.grad is not None else None))
    if results[0] is None or results[1] is None:
        assert results == [None, None] and not grad_y
        return
    (fast, gx, gy), (slow, hx, hy) = results
    assert fast == slow
    for u, v in ((gx, hx), (gy, hy)):
        assert (u is None) == (v is None)
        if u is not None:
            assert np.array_equal(u, v)


# ---- relu's backward on NumPy ----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_numpy_has_the_kernels_bits(dtype):
    """The bit-mask backward of relu (gpugrad/_kernels.py) against the kernel's twin, on every
    kind of value of g and y."""
    from gpugrad._kernels import _relu_backward_numpy, kernels as K
    special = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-300, 2.5, -3.0]
    g = np.array([a for a in special for _ in special], dtype=dtype)
    y = np.array([b for _ in special for b in special], dtype=dtype)
    g = np.concatenate([g, rng.standard_normal(1000).astype(dtype)])
    y = np.concatenate([y, rng.standard_normal(1000).astype(dtype)])
    ints = np.int32 if dtype == np.float32 else np.int64
    twin = K.relu_backward.twin(np.dtype(dtype).type, g, y)
    assert np.array_equal(_relu_backward_numpy(g, y).view(ints), twin.view(ints))
    assert np.array_equal(K.relu_backward(g, y).view(ints), twin.view(ints))  # the path taken


def test_relu_gradient_matches_torch(device):
    torch = torch_or_skip()
    a = rng.standard_normal((64, 33))
    a[0, :4] = [0.0, -0.0, np.inf, -np.inf]
    w = rng.standard_normal((64, 33))
    g, t = _pair(a, device, requires_grad=True)
    (g.relu() * gpugrad.tensor(w, device=device)).sum().backward()
    (t.relu() * torch.tensor(w)).sum().backward()
    assert np.array_equal(to_numpy(g.grad), to_numpy(t.grad))


FAST_BROADCAST = {
    "bias_add": lambda x, b: x + b, "bias_radd": lambda x, b: b + x,
    "bias_sub": lambda x, b: x - b, "bias_rsub": lambda x, b: b - x,
    "bias_mul": lambda x, b: x * b, "bias_rmul": lambda x, b: b * x,
}


@pytest.mark.parametrize("grad_b", [True, False], ids=["both", "x_only"])
@pytest.mark.parametrize("name", sorted(FAST_BROADCAST))
def test_fast_recording_of_a_trailing_broadcast_builds_the_general_node(name, grad_b):
    a, bias = rng.standard_normal((5, 3, 4)), rng.standard_normal(4)
    results = []
    for general in (False, True):
        x = gpugrad.tensor(a, requires_grad=True)
        b = gpugrad.tensor(bias, requires_grad=grad_b)
        with gpugrad.autograd.set_detect_anomaly(general):
            out = FAST_BROADCAST[name](x, b)
            node = _node(out)
            out.backward(gpugrad.tensor(np.linspace(-1, 1, 60).reshape(5, 3, 4)))
        results.append((node, to_numpy(out), to_numpy(x.grad),
                        None if b.grad is None else to_numpy(b.grad)))
    (fast, fo, fx, fb), (slow, so, sx, sb) = results
    assert fast == slow and np.array_equal(fo, so) and np.array_equal(fx, sx)
    assert (fb is None) == (sb is None) and (fb is None or np.array_equal(fb, sb))


def test_non_trailing_broadcasts_keep_the_general_path_and_its_errors():
    x = gpugrad.ones(3, 4)
    assert (x + gpugrad.ones(3, 1)).shape == (3, 4)  # broadcast, not trailing: forward does it
    with pytest.raises(RuntimeError, match="must match the size"):
        x + gpugrad.ones(3)


# ---- backward on arrays (Function._backward_arrays) gives the general path's gradients ---------
LEAN_CASES = dict(FAST, **{
    "bias": lambda x, y: x + y[0], "rbias": lambda x, y: y[0] + x, "sub_bias": lambda x, y: x - y[0],
    "rsub_t": lambda x, y: y[0] - x, "mul_bias": lambda x, y: x * y[0],
    "mul_f64": lambda x, y: x * y.double(), "mul_np_scalar": lambda x, y: x * np.float64(2.5),
    "zero_d": lambda x, y: (x.sum() * 2.0 + y.sum()).tanh() * 3 - x[0, 0],
    "chain": lambda x, y: ((x * 1.01 + y).tanh()).sigmoid() * (x - y).exp(),
    "reuse": lambda x, y: x.tanh() + x.tanh() * x + x,
})


@pytest.mark.parametrize("grad_y", [True, False], ids=["both", "x_only"])
@pytest.mark.parametrize("name", sorted(LEAN_CASES))
def test_backward_on_arrays_matches_the_general_path(device, monkeypatch, name, grad_y):
    from gpugrad.autograd import engine
    a = rng.standard_normal((3, 4))
    b = rng.uniform(0.5, 2.0, (3, 4))
    grads = []
    for lean in (True, False):
        monkeypatch.setattr(engine, "_LEAN", lean)
        x = gpugrad.tensor(a, device=device, requires_grad=True)
        y = gpugrad.tensor(b, device=device, requires_grad=grad_y)
        out = LEAN_CASES[name](x, y)
        if out.requires_grad:  # (a program of y alone has nothing to differentiate here)
            out.backward(gpugrad.ones_like(out) * 0.5)
        grads.append([None if t.grad is None else (to_numpy(t.grad), t.grad.dtype,
                                                   t.grad._version.value) for t in (x, y)])
    for lean_g, general_g in zip(*grads):
        if general_g is None:
            assert lean_g is None
            continue
        assert np.array_equal(lean_g[0], general_g[0])  # same bits
        assert lean_g[1:] == general_g[1:]


def test_backward_on_arrays_keeps_the_inplace_error():
    x = gpugrad.tensor(rng.standard_normal(5), requires_grad=True)
    y = x.tanh()
    z = y * 2.0
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_backward_on_arrays_freed_graph_raises_the_general_error():
    x = gpugrad.tensor(rng.standard_normal(5), requires_grad=True)
    y = x.exp().sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()


def test_hooks_see_tensors_and_their_results_count(device):
    x = gpugrad.tensor(rng.standard_normal(4), device=device, requires_grad=True)
    y = x.tanh()
    seen = []
    y.register_hook(lambda g: seen.append(g) or g * 2)
    (y * 3.0).sum().backward()
    assert isinstance(seen[0], gpugrad.Tensor)
    expect = 6.0 * (1 - np.tanh(to_numpy(x)) ** 2)
    assert_close(x.grad, expect)


# ---- log_softmax in row blocks on NumPy --------------------------------------------------------
def _log_softmax_ref(a):
    shifted = a - a.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# (rows, C) and (.., C) above the blocking threshold: many rows a block, one row a block (C
# over the block size), a partial last block, 3-D
BLOCKED_SHAPES = [(300, 1000), (3, 70001), (70001, 3), (3, 50, 1000)]


@pytest.mark.parametrize("shape", BLOCKED_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_log_softmax_blocked_is_the_whole_array_expression(shape, dtype):
    """On NumPy, log_softmax of a large array and its backward run in blocks of rows: the
    values are bit for bit those of the whole-array expressions, infinities and NaN too."""
    from gpugrad.ops import reduction
    a = (rng.standard_normal(shape) * 5).astype(dtype)
    a.flat[::977], a.flat[5::1231], a.flat[7::3001] = np.inf, -np.inf, np.nan
    assert reduction._row_blocks(a, a.ndim - 1) is not None  # the blocked path is taken
    w = rng.standard_normal(shape).astype(dtype)
    x = gpugrad.tensor(a, device="cpu", requires_grad=True)
    with np.errstate(all="ignore"):
        y = x.log_softmax(-1)
        (y * gpugrad.tensor(w, device="cpu")).sum().backward()
        ry = _log_softmax_ref(a)
        rg = w - np.exp(ry) * w.sum(axis=-1, keepdims=True)
    assert y.dtype == x.dtype and np.array_equal(to_numpy(y), ry, equal_nan=True)
    assert np.array_equal(to_numpy(x.grad), rg, equal_nan=True)


def test_log_softmax_blocked_with_a_broadcast_gradient():
    """``log_softmax(x).sum().backward()`` hands the backward a broadcast (stride 0) view."""
    a = rng.standard_normal((400, 500)).astype(np.float32)
    x = gpugrad.tensor(a, device="cpu", requires_grad=True)
    x.log_softmax(1).sum().backward()
    y = _log_softmax_ref(a)
    assert np.array_equal(to_numpy(x.grad), 1 - np.exp(y) * np.float32(500))


def test_log_softmax_large_matches_torch(device):
    torch = torch_or_skip()
    a = rng.standard_normal((256, 1024)).astype(np.float32) * 4
    w = rng.standard_normal((256, 1024)).astype(np.float32)
    g, t = _pair(a, device, requires_grad=True)
    for x, m in ((g, gpugrad), (t, torch)):
        y = x.log_softmax(-1)
        (y * m.tensor(w, device=x.device)).sum().backward()
        if m is gpugrad:
            gy = y
        else:
            assert_close(gy, y, rtol=1e-5, atol=1e-5)
    assert_close(g.grad, t.grad, rtol=1e-5, atol=1e-5)
    # other dims (and non-contiguous arrays) keep the whole-array path: the same values
    assert_close(g.detach().log_softmax(0), t.detach().log_softmax(0), rtol=1e-5, atol=1e-5)
    assert_close(g.detach().mT.log_softmax(1), t.detach().mT.log_softmax(1), rtol=1e-5,
                 atol=1e-5)


def test_log_softmax_of_a_0d_tensor(device):
    """NumPy gives 0-d results as scalars: the backward on arrays cannot write into one (a
    property-test program found it)."""
    torch = torch_or_skip()
    x = gpugrad.tensor(0.3, device=device, requires_grad=True)
    y = gpugrad.log_softmax(x, dim=0)
    (y.tanh() * 2.0).backward()
    tx = torch.tensor(0.3, dtype=torch.float64 if x.dtype == gpugrad.float64 else torch.float32,
                      requires_grad=True)
    (torch.log_softmax(tx, dim=0).tanh() * 2.0).backward()
    assert_close(y, torch.log_softmax(tx, dim=0).detach())
    assert_close(x.grad, tx.grad)
