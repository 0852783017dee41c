"""Tests for gpugrad._printing: output must match repr() of the equivalent torch tensor.

Tests marked with ``_torch()`` skip when torch is not importable; the
hard-coded expectations (copied from torch's output) always run.
"""

import math

import numpy as np
import pytest

from gpugrad import _printing
from gpugrad._printing import format_tensor, get_printoptions, printoptions, set_printoptions

try:
    from hypothesis import given, settings, strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None

DEFAULT_DTYPES = ("float32", "int64", "bool")


def _torch():
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _reset_printoptions():
    """Every test starts and ends with default options, in gpugrad and (if present) torch."""
    set_printoptions(profile="default")
    yield
    set_printoptions(profile="default")
    try:
        import torch
    except ImportError:
        return
    torch.set_printoptions(profile="default")


def ours(arr, *, requires_grad=False, grad_fn=False, device=None):
    arr = np.asarray(arr)
    name = str(arr.dtype)
    suffixes = ["grad_fn=<AddBackward0>"] if grad_fn else ["requires_grad=True"] if requires_grad else []
    return format_tensor(arr, dtype_name=name, is_default_dtype=name in DEFAULT_DTYPES,
                         device=device, suffixes=suffixes)


def theirs(arr, *, requires_grad=False, grad_fn=False):
    torch = _torch()
    t = torch.from_numpy(np.array(arr, copy=True))
    if requires_grad or grad_fn:
        t.requires_grad_()
    if grad_fn:
        t = t + 0  # gives grad_fn=<AddBackward0>
    return repr(t).replace("torch.", "gpugrad.")


def check(arr, **kw):
    expected = theirs(arr, **kw)
    if kw.get("grad_fn"):
        arr = arr + np.zeros((), arr.dtype)  # same "+ 0" as torch did (turns -0. into 0.)
    assert ours(arr, **kw) == expected


# --------------------------------------------------------------------------- cases
rng = np.random.default_rng(1234)
nan, inf = math.nan, math.inf
FLOATS = ("float32", "float64", "float16")
INTS = ("int64", "int32", "int16", "int8", "uint8")

VALUE_CASES = {
    "scalar_int_valued": 2.0,
    "scalar_frac": 3.14159,
    "scalar_neg_zero": -0.0,
    "scalar_nan": nan,
    "scalar_inf": -inf,
    "scalar_tiny": 1e-7,
    "scalar_huge": 3e9,
    "vec_int_valued": [1.0, 2.0, -3.0, 100.0],
    "vec_frac": [0.1, -2.5, 3.25],
    "vec_neg_zero": [-0.0, 0.0, 1.0],
    "vec_neg_zero_frac": [-0.0, 0.5],
    "vec_all_zero": [0.0, 0.0, -0.0],
    "vec_nan_inf": [1.0, nan, inf, -inf, -0.0],
    "vec_nan_inf_frac": [1.5, nan, inf, -inf],
    "vec_only_nonfinite": [nan, inf, -inf],
    "vec_sci_tiny": [1e-5, 1.0, -inf],
    "vec_sci_ratio": [1.0, 1001.0, 2.5],
    "vec_sci_ratio_int": [1.0, 2000.0],
    "vec_sci_big": [1e9, 2e9],
    "vec_no_sci_ratio_1000": [1.0, 1000.0],
    "vec_mixed_mag": [1e-10, 1e10, -3.3, 0.0, nan],
    "vec_rounding_up": [9.99996, 0.5],
    "mat_int_valued": [[1.0, 2.0], [30.0, -4.0]],
    "mat_mixed": [[1e-3, 2.0], [3e4, -4.0]],
    "cube": np.arange(24.0).reshape(2, 3, 4),
    "cube_frac": np.arange(24.0).reshape(2, 3, 4) / 7,
    "hyper": np.arange(48.0).reshape(2, 2, 3, 4) - 20,
    "hyper_frac": (np.arange(48.0).reshape(2, 2, 3, 4) - 20) / 3,
    "wide_row": np.linspace(0, 1, 30),
    "wide_row_neg": -np.linspace(0, 100, 45),
    "wide_row_sci": np.logspace(-6, 6, 25),
    "wide_mat": np.linspace(-5, 5, 60).reshape(3, 20),
    "wide_cube": np.linspace(-5, 5, 84).reshape(2, 2, 21),
    "single_column": np.arange(7.0).reshape(7, 1),
    "big_1d": np.arange(2000.0),
    "big_1d_frac": np.arange(1500.0) / 9,
    "big_2d": np.arange(3000.0).reshape(60, 50) / 7,
    "big_3d": np.arange(2400.0).reshape(12, 10, 20) - 1200.5,
    "big_4d": np.arange(1296.0).reshape(6, 6, 6, 6),
    "big_narrow": np.arange(2002.0).reshape(1001, 2),
    "big_unsummarizable": np.arange(1024.0).reshape(2, 2, 2, 2, 2, 2, 2, 2, 2, 2),
    "exactly_threshold": np.arange(1000.0),
}
for _scale in (1e-6, 1e-3, 1.0, 1e3, 1e6, 1e9):
    VALUE_CASES[f"randn_{_scale:g}_1d"] = rng.standard_normal(17) * _scale
    VALUE_CASES[f"randn_{_scale:g}_2d"] = rng.standard_normal((5, 7)) * _scale
    VALUE_CASES[f"randn_{_scale:g}_3d"] = rng.standard_normal((2, 3, 4)) * _scale
VALUE_CASES["randn_big"] = rng.standard_normal((40, 40))
VALUE_CASES["randn_with_nan"] = np.where(rng.random(20) < 0.2, np.nan, rng.standard_normal(20))

INT_CASES = {
    "scalar": 7,
    "scalar_neg": -12,
    "vec": [1, -20, 300],
    "mat": [[1, 2], [3, 4]],
    "cube": np.arange(24).reshape(2, 3, 4) - 5,
    "hyper": np.arange(120).reshape(2, 3, 4, 5),
    "wide": np.arange(0, 100, 3),
    "big": np.arange(1200),
    "big_2d": np.arange(2000).reshape(40, 50),
    "extremes": [np.iinfo(np.int64).min, np.iinfo(np.int64).max],
}

BOOL_CASES = {
    "scalar": True,
    "vec": [True, False, True],
    "mat": [[True, False], [False, True]],
    "cube": np.arange(24).reshape(2, 3, 4) % 3 == 0,
    "wide": np.arange(40) % 2 == 0,
    "big": np.arange(1500) % 3 == 0,
}

EMPTY_SHAPES = [(0,), (0, 3), (3, 0), (2, 0, 4), (0, 0)]
ALL_DTYPES = FLOATS + INTS + ("bool",)


def _as(data, dt):
    with np.errstate(over="ignore"):  # huge values overflow to inf in float16: fine
        return np.asarray(data).astype(dt)


@pytest.mark.parametrize("name", list(VALUE_CASES))
def test_floats_match_torch(name):
    for dt in FLOATS if not name.startswith("big") else ("float32",):  # big ones are slow in torch
        check(_as(VALUE_CASES[name], dt))


@pytest.mark.parametrize("name", list(INT_CASES))
def test_ints_match_torch(name):
    for dt in INTS if name != "extremes" else ("int64",):
        data = np.asarray(INT_CASES[name])
        check(_as(np.abs(data) % 256 if dt == "uint8" else data, dt))


@pytest.mark.parametrize("name", list(BOOL_CASES))
def test_bools_match_torch(name):
    check(np.asarray(BOOL_CASES[name], dtype=bool))


@pytest.mark.parametrize("dt", ALL_DTYPES)
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
def test_empty_match_torch(shape, dt):
    check(np.zeros(shape, dtype=dt))


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("kind", ["requires_grad", "grad_fn"])
@pytest.mark.parametrize("name", ["scalar_frac", "vec_frac", "wide_row", "cube_frac", "big_2d",
                                  "randn_1e+06_2d", "vec_nan_inf"])
def test_autograd_suffixes_match_torch(name, kind, dt):
    with np.errstate(over="ignore"):
        arr = np.asarray(VALUE_CASES[name], dtype=dt)
    check(arr, **{kind: True})


@pytest.mark.parametrize("kind", ["requires_grad", "grad_fn"])
def test_empty_with_autograd_suffix_match_torch(kind):
    check(np.zeros((0, 3), dtype=np.float64), **{kind: True})


@pytest.mark.parametrize("dt", ["float32", "float64", "int32"])
def test_suffix_wrapping_near_linewidth_matches_torch(dt):
    # Sweep row lengths so the last line ends on both sides of column 80, with
    # and without a newline in the body, to pin down torch's suffix wrapping rule.
    for k in range(1, 12):
        for rows in (1, 2):
            arr = (np.arange(rows * k) * 7 + 100).astype(dt).reshape(rows, k)
            for kind in ({}, {"requires_grad": True}, {"grad_fn": True}):
                if dt == "int32" and kind:
                    continue  # integer tensors cannot require grad
                check(arr if rows == 2 else arr[0], **kind)


OPTION_CASES = [
    dict(precision=2),
    dict(precision=8),
    dict(precision=0),
    dict(profile="short"),
    dict(profile="full"),
    dict(sci_mode=True),
    dict(sci_mode=False),
    dict(linewidth=40),
    dict(linewidth=200),
    dict(threshold=5),
    dict(threshold=5, edgeitems=1),
    dict(threshold=5, edgeitems=0),
    dict(edgeitems=0),
    dict(profile="short", precision=6),
]
OPTION_ARRAYS = {
    "frac": np.asarray(VALUE_CASES["randn_1_2d"], dtype=np.float32),
    "ints_f": np.arange(12.0).reshape(3, 4),
    "sci": np.asarray(VALUE_CASES["vec_mixed_mag"]),
    "zeros": np.zeros(4),
    "big": np.arange(1200.0).reshape(30, 40) / 3,
    "big1d": np.arange(1200) - 600,
    "cube": np.arange(60).reshape(3, 4, 5) % 2 == 0,
    "empty": np.zeros((0, 2)),
}


@pytest.mark.parametrize("opts", OPTION_CASES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_printoptions_match_torch(opts):
    torch = _torch()
    torch.set_printoptions(**opts)
    set_printoptions(**opts)
    for arr in OPTION_ARRAYS.values():
        check(arr)
        check(arr[..., :1])


if given is not None:
    _dtypes = st.sampled_from([np.dtype(d) for d in ALL_DTYPES])
    _shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)

    @settings(max_examples=40, deadline=None, database=None)
    @given(hnp.arrays(_dtypes, _shapes))
    def test_hypothesis_arrays_match_torch(arr):
        _torch()
        check(arr)

    @settings(max_examples=25, deadline=None, database=None)
    @given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
                      elements=st.floats(-1e12, 1e12, allow_nan=False, width=64)),
           st.sampled_from([1e-9, 1e-3, 1.0, 1e4]))
    def test_hypothesis_scaled_floats_match_torch(arr, scale):
        _torch()
        check(arr * scale)
        check((arr * scale).astype(np.float32))

    @settings(max_examples=15, deadline=None, database=None)
    @given(st.integers(0, 10), st.integers(20, 120), st.integers(1, 6))
    def test_hypothesis_options_match_torch(precision, linewidth, edgeitems):
        torch = _torch()
        opts = dict(precision=precision, linewidth=linewidth, edgeitems=edgeitems, threshold=50)
        torch.set_printoptions(**opts)
        set_printoptions(**opts)
        check(np.asarray(VALUE_CASES["big_3d"], dtype=np.float32)[:, :5, :])
        check(np.asarray(VALUE_CASES["randn_1e+06_2d"]))


# ------------------------------------------------------- torch-free expectations
# Strings copied from torch 2.x repr() output (with torch. -> gpugrad.).
HARD_CODED = [
    (np.float32(2.0), "tensor(2.)"),
    (np.array(7, dtype=np.int16), "tensor(7, dtype=gpugrad.int16)"),
    (np.array([1.0, -0.0, nan, inf, -inf], np.float32), "tensor([1., -0., nan, inf, -inf])"),
    (np.array([1e-5, 1.0, -inf], np.float32), "tensor([1.0000e-05, 1.0000e+00,       -inf])"),
    (np.array([[1, 2], [3, 4]], np.int32), "tensor([[1, 2],\n        [3, 4]], dtype=gpugrad.int32)"),
    (np.array([True, False]), "tensor([ True, False])"),
    (np.zeros((0, 3), np.int64), "tensor([], size=(0, 3), dtype=gpugrad.int64)"),
    (np.zeros(0, np.float32), "tensor([])"),
    (np.zeros(0, np.float16), "tensor([], dtype=gpugrad.float16)"),
    (np.array([0.1, 2.5], np.float16), "tensor([0.1000, 2.5000], dtype=gpugrad.float16)"),
    (np.arange(1200), "tensor([   0,    1,    2,  ..., 1197, 1198, 1199])"),
    (np.arange(24.0, dtype=np.float32).reshape(2, 3, 4),
     "tensor([[[ 0.,  1.,  2.,  3.],\n"
     "         [ 4.,  5.,  6.,  7.],\n"
     "         [ 8.,  9., 10., 11.]],\n"
     "\n"
     "        [[12., 13., 14., 15.],\n"
     "         [16., 17., 18., 19.],\n"
     "         [20., 21., 22., 23.]]])"),
    (np.linspace(0, 1, 30, dtype=np.float32),
     "tensor([0.0000, 0.0345, 0.0690, 0.1034, 0.1379, 0.1724, 0.2069, 0.2414, 0.2759,\n"
     "        0.3103, 0.3448, 0.3793, 0.4138, 0.4483, 0.4828, 0.5172, 0.5517, 0.5862,\n"
     "        0.6207, 0.6552, 0.6897, 0.7241, 0.7586, 0.7931, 0.8276, 0.8621, 0.8966,\n"
     "        0.9310, 0.9655, 1.0000])"),
]


@pytest.mark.parametrize("arr,expected", HARD_CODED, ids=range(len(HARD_CODED)))
def test_hard_coded(arr, expected):
    assert ours(arr) == expected


def test_hard_coded_grad_fn():
    arr = np.arange(3.0, dtype=np.float32)
    assert ours(arr, grad_fn=True) == "tensor([0., 1., 2.], grad_fn=<AddBackward0>)"


def test_device_and_suffix_order():
    got = format_tensor(np.array([1.0, 2.0]), dtype_name="float64", is_default_dtype=False,
                        device="cuda:0", suffixes=["requires_grad=True"])
    assert got == "tensor([1., 2.], device='cuda:0', dtype=gpugrad.float64, requires_grad=True)"


def test_suffixes_wrap_onto_new_line():
    arr = np.arange(9.0, dtype=np.float32) + 0.5
    got = format_tensor(arr, dtype_name="float32", is_default_dtype=True, device="cuda:0",
                        suffixes=["grad_fn=<AddBackward0>"])
    assert got == ("tensor([0.5000, 1.5000, 2.5000, 3.5000, 4.5000, 5.5000, 6.5000, 7.5000, 8.5000],\n"
                   "       device='cuda:0', grad_fn=<AddBackward0>)")


def test_custom_prefix_sets_indent():
    got = format_tensor(np.eye(2, dtype=np.float32), dtype_name="float32", is_default_dtype=True,
                        device=None, suffixes=[], prefix="Parameter(")
    assert got == "Parameter([[1., 0.],\n           [0., 1.]])"


def test_set_printoptions_profiles_and_reset():
    set_printoptions(profile="short")
    assert get_printoptions() == dict(precision=2, threshold=1000, edgeitems=2, linewidth=80, sci_mode=None)
    assert ours(np.array([1.12345], np.float32)) == "tensor([1.12])"
    set_printoptions(profile="full")
    assert get_printoptions()["threshold"] == math.inf
    set_printoptions(threshold=5)
    assert ours(np.arange(10)) == "tensor([0, 1, 2,  ..., 7, 8, 9])"
    set_printoptions(profile="default")
    assert ours(np.arange(10)) == "tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])"
    with printoptions(sci_mode=True, precision=1):
        assert ours(np.array([1.0, 2.0], np.float32)) == "tensor([1.0e+00, 2.0e+00])"
    assert ours(np.array([1.0, 2.0], np.float32)) == "tensor([1., 2.])"
    with pytest.raises(ValueError):
        set_printoptions(profile="nope")


def test_public_names_documented():
    for name in _printing.__all__:
        assert getattr(_printing, name).__doc__
