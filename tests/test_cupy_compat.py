"""CuPy compatibility on a machine without a GPU.

Two kinds of checks: the CuPy branches of ``gpugrad/ops/_compat.py`` run with NumPy stand-ins
that refuse what CuPy refuses (``cupyx.scatter_add`` takes only the dtypes of CUDA's
``atomicAdd``), and a scan of the sources for NumPy-only calls that break on CuPy arrays
(``np.add.at``, ``.flags.writeable``, ``xp.lib``, ...) outside the places that guard them.
On a GPU machine the same ops run on CUDA through the ``device`` fixture.
"""
from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import gpugrad
from gpugrad.ops import _compat
from helpers import assert_close, to_numpy, torch_or_skip

SRC = pathlib.Path(gpugrad.__file__).parent


# ---- scatter_add: the CuPy path with a NumPy stand-in for cupyx.scatter_add ---------------------
def _fake_cupyx_scatter_add(out, idx, values):
    """numpy.add.at restricted to the dtypes cupyx.scatter_add accepts (atomicAdd's)."""
    if out.dtype not in _compat.ATOMIC_ADD_DTYPES:
        raise TypeError("scatter_add only supports int32, float16, float32, float64, uint32, "
                        "uint64, as data type")
    np.add.at(out, idx, values)


def _via(out, idx, values):
    _compat._scatter_add_via(np, _fake_cupyx_scatter_add, out, idx, values)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int16", "int8", "uint8", "bool", "float16",
                                   "float32", "float64"])
def test_scatter_add_cuda_path_matches_numpy_add_at(dtype):
    rng = np.random.default_rng(0)
    if dtype == "bool":
        base = rng.random((5, 3)) < 0.3
        vals = rng.random((7, 3)) < 0.5
    else:
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        hi = 100 if info is None else min(info.max, 1000)
        lo = 0 if info is None or info.min == 0 else -hi
        base = rng.integers(lo, hi, (5, 3)).astype(dtype)
        vals = rng.integers(lo, hi, (7, 3)).astype(dtype)
    idx = np.array([0, 4, 0, 2, 4, 4, 1])  # repeated positions must all add up
    expected = base.copy()
    np.add.at(expected, idx, vals)
    out = base.copy()
    _via(out, idx, vals)
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_scatter_add_cuda_path_int64_wraps_and_negative():
    big = np.iinfo(np.int64).max
    out = np.array([big, -5, 0], dtype=np.int64)
    expected = out.copy()
    idx = (np.array([0, 1, 1, 2]),)
    vals = np.array([1, -7, 3, -1], dtype=np.int64)
    with np.errstate(over="ignore"):
        np.add.at(expected, idx, vals)
    _via(out, idx, vals)
    np.testing.assert_array_equal(out, expected)  # wraps to int64.min like NumPy


def test_scatter_add_cuda_path_writes_through_a_view_and_takes_scalars():
    full = np.zeros((4, 6), dtype=np.int64)
    view = full[:, ::2]  # not contiguous: the int64 path must write into ``full``
    _via(view, (np.array([0, 0, 3]), np.array([1, 1, 2])), 2)
    expected = np.zeros((4, 6), dtype=np.int64)
    expected[0, 2] = 4
    expected[3, 4] = 2
    np.testing.assert_array_equal(full, expected)
    small = np.zeros(3, dtype=np.int8)
    _via(small[::-1], np.array([0, 0]), 100)  # 200 wraps to -56, as NumPy's add.at
    np.testing.assert_array_equal(small, np.array([0, 0, -56], dtype=np.int8))


def test_scatter_add_cpu_is_numpy_add_at():
    out = np.zeros(3)
    _compat.scatter_add(out, np.array([2, 2, 0]), np.array([1.0, 2.0, 5.0]))
    np.testing.assert_array_equal(out, [5.0, 0.0, 3.0])


def test_host_minmax():
    assert _compat.host_minmax(np.array([[3, -2], [7, 0]])) == (-2, 7)
    lo, hi = _compat.host_minmax(np.array([5], dtype=np.int32))
    assert (lo, hi) == (5, 5) and type(lo) is int and type(hi) is int


# ---- ops that accumulate into integer tensors (cupyx.scatter_add refuses int64) ---------------
def test_index_put_accumulate_int64_counts(device):
    counts = gpugrad.zeros(4, dtype=gpugrad.int64, device=device)
    idx = gpugrad.tensor([1, 3, 1, 1, 0], device=device)
    counts.index_put_((idx,), gpugrad.ones(5, dtype=gpugrad.int64, device=device),
                      accumulate=True)
    assert counts.tolist() == [1, 3, 0, 1]


def test_index_add_and_scatter_add_int64(device):
    x = gpugrad.zeros(3, 2, dtype=gpugrad.int64, device=device)
    src = gpugrad.tensor([[1, 2], [3, 4], [5, 6]], device=device)
    out = x.index_add(0, gpugrad.tensor([2, 0, 2], device=device), src)
    assert out.tolist() == [[3, 4], [0, 0], [6, 8]]
    out = x.scatter_add(0, gpugrad.tensor([[0, 1], [0, 1], [2, 1]], device=device), src)
    assert out.tolist() == [[4, 0], [0, 12], [5, 0]]


def test_index_put_accumulate_bool_and_uint8(device):
    b = gpugrad.zeros(3, dtype=gpugrad.bool, device=device)
    b.index_put_((gpugrad.tensor([0, 0, 2], device=device),),
                 gpugrad.tensor([True, False, True], device=device), accumulate=True)
    assert b.tolist() == [True, False, True]
    u = gpugrad.zeros(2, dtype=gpugrad.uint8, device=device)
    u.index_put_((gpugrad.tensor([1, 1], device=device),),
                 gpugrad.tensor([200, 100], dtype=gpugrad.uint8, device=device),
                 accumulate=True)
    assert u.tolist() == [0, 44]  # 300 wraps mod 256, as torch


def test_masked_scatter_0d_matches_torch(device):
    torch = torch_or_skip()
    for mask in (True, False):
        x = gpugrad.tensor(1.0, device=device, requires_grad=True)
        s = gpugrad.tensor([5.0, 6.0], device=device, requires_grad=True)
        y = x.masked_scatter(gpugrad.tensor(mask, device=device), s)
        y.backward()
        xt = torch.tensor(1.0, requires_grad=True)
        st = torch.tensor([5.0, 6.0], requires_grad=True)
        yt = xt.masked_scatter(torch.tensor(mask), st)
        yt.backward()
        assert_close(y, yt)
        assert_close(x.grad, xt.grad)
        assert_close(s.grad, st.grad)


def test_label_smoothing_mean_keeps_torch_values(device):
    torch = torch_or_skip()
    logits = np.random.default_rng(1).standard_normal((5, 4))
    target = [0, 3, -100, 2, 3]
    w = [0.5, 1.0, 2.0, 1.5]
    for weight in (None, w):
        x = gpugrad.tensor(logits, device=device, requires_grad=True)
        loss = gpugrad.nn.functional.cross_entropy(
            x, gpugrad.tensor(target, device=device), label_smoothing=0.2,
            weight=None if weight is None else gpugrad.tensor(weight, device=device,
                                                              dtype=gpugrad.float64))
        loss.backward()
        xt = torch.tensor(logits, requires_grad=True)
        lt = torch.nn.functional.cross_entropy(
            xt, torch.tensor(target), label_smoothing=0.2,
            weight=None if weight is None else torch.tensor(weight, dtype=torch.float64))
        lt.backward()
        assert_close(loss, lt, rtol=1e-12, atol=1e-12)
        assert_close(x.grad, xt.grad, rtol=1e-12, atol=1e-12)
        assert to_numpy(loss).dtype == np.float64


def test_bounds_errors_still_raise(device):
    f = gpugrad.nn.functional
    with pytest.raises(IndexError, match="Target 4 is out of bounds"):
        f.nll_loss(gpugrad.zeros(2, 4, device=device), gpugrad.tensor([1, 4], device=device))
    with pytest.raises(IndexError, match="got min -1, max 2"):
        f.embedding(gpugrad.tensor([-1, 2], device=device), gpugrad.zeros(5, 3, device=device))
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        f.one_hot(gpugrad.tensor([0, 3], device=device), 3)
    with pytest.raises(RuntimeError, match="non-negative"):
        f.one_hot(gpugrad.tensor([0, -3], device=device))
    assert f.one_hot(gpugrad.tensor([2, 0], device=device)).tolist() == [[0, 0, 1], [1, 0, 0]]
    assert f.one_hot(gpugrad.zeros(0, dtype=gpugrad.int64, device=device)).shape == (0, 0)
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        f.binary_cross_entropy(gpugrad.tensor([0.5, 1.5], device=device),
                               gpugrad.tensor([0.0, 1.0], device=device))


# ---- source scan: NumPy-only calls on arrays that may be CuPy's ------------------------------
# (pattern, why it breaks on CuPy, files allowed to use it: the use there is NumPy-only)
_RULES = [
    (r"np\.add\.at\(|\.at\(out", "CuPy ufuncs have no .at: use ops._compat.scatter_add",
     {"ops/_compat.py"}),
    (r"cupyx\.scatter_add\(", "refuses int64/int8/int16/uint8/bool: use ops._compat.scatter_add",
     {"ops/_compat.py"}),
    (r"\.flags\.writeable", "cupy.ndarray.flags has no 'writeable' (AttributeError)",
     # _dlpack: the NumPy branch only; triangular: behind getattr(flags, 'writeable', True)
     {"_dlpack.py", "ops/triangular.py"}),
    (r"\bxp\.lib\b", "cupy.lib may not be loaded by `import cupy`: import it by name", set()),
    (r"np\.lib\.stride_tricks", "NumPy's as_strided makes a NumPy array out of a CuPy one's "
     "pointer", {"ops/shape.py", "ops/nn_ops.py"}),  # both: only on the `xp is np` path
    (r"sliding_window_view", "not in CuPy", set()),
]


def _sources():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "_kernel_bench.py":
            continue
        yield rel, path.read_text(encoding="utf-8")


@pytest.mark.parametrize("pattern,why,allowed", _RULES, ids=[r[0] for r in _RULES])
def test_no_numpy_only_calls_outside_allow_list(pattern, why, allowed):
    bad = []
    for rel, text in _sources():
        if rel in allowed:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                bad.append(f"{rel}:{n}: {line.strip()}")
    assert not bad, f"{why}:\n" + "\n".join(bad)


def test_scan_catches_a_planted_use():
    # the scan is not vacuous: each pattern matches the use it forbids
    samples = ["np.add.at(out, i, v)", "cupyx.scatter_add(a, i, v)", "if a.flags.writeable:",
               "xp.lib.stride_tricks.as_strided", "np.lib.stride_tricks.as_strided(a)",
               "np.lib.stride_tricks.sliding_window_view(a, 3)"]
    for (pattern, _, _), sample in zip(_RULES, samples):
        assert re.search(pattern, sample), (pattern, sample)
