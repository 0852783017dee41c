"""TF32 for float32 matmuls: torch's API (``gpugrad.backends.cuda.matmul.allow_tf32``,
``set_float32_matmul_precision``), and how the setting reaches CuPy's compute type (eager)
and the cuBLAS handle's math mode (captured). The switches are tested on the CPU with
stand-ins; the ``gpu`` tests check the numbers on a device."""
from __future__ import annotations

import json
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

import gpugrad
from gpugrad import _backend, _cublas
from gpugrad.backends import _precision
from gpugrad.ops import linalg

matmul_flags = gpugrad.backends.cuda.matmul


@pytest.fixture(autouse=True)
def restore_precision(monkeypatch):
    """Each test starts at torch's default ("highest") and leaves it there; CuPy is told
    again at the next real matmul (``cupy_mode`` None)."""
    monkeypatch.setattr(_precision, "precision", "highest")
    monkeypatch.setattr(_precision, "tf32", False)
    monkeypatch.setattr(_precision, "cupy_mode", None)
    monkeypatch.setattr(_precision, "_warned", False)
    yield


# ---- the API, with torch's rules ----------------------------------------------------------
def test_defaults_are_torchs():
    assert gpugrad.get_float32_matmul_precision() == "highest"
    assert matmul_flags.allow_tf32 is False
    assert gpugrad.backends.cudnn.allow_tf32 is True
    for name in ("set_float32_matmul_precision", "get_float32_matmul_precision", "backends"):
        assert name in gpugrad.__all__


def test_allow_tf32_and_precision_are_one_setting():
    matmul_flags.allow_tf32 = True
    assert gpugrad.get_float32_matmul_precision() == "high" and _precision.tf32 is True
    matmul_flags.allow_tf32 = False
    assert gpugrad.get_float32_matmul_precision() == "highest" and _precision.tf32 is False
    for p, tf32 in (("medium", True), ("high", True), ("highest", False)):
        gpugrad.set_float32_matmul_precision(p)
        assert gpugrad.get_float32_matmul_precision() == p
        assert matmul_flags.allow_tf32 is tf32
    gpugrad.set_float32_matmul_precision("medium")
    matmul_flags.allow_tf32 = True  # torch's legacy rule: True always means "high"
    assert gpugrad.get_float32_matmul_precision() == "high"


def test_bad_values_are_refused_as_torch_refuses_them():
    gpugrad.set_float32_matmul_precision("high")
    with pytest.warns(UserWarning, match="is not one of 'highest', 'high', or 'medium'"):
        gpugrad.set_float32_matmul_precision("HIGH")  # case matters; no effect
    assert gpugrad.get_float32_matmul_precision() == "high"
    with pytest.raises(RuntimeError, match="expects a str, but got int"):
        gpugrad.set_float32_matmul_precision(1)
    for bad in (1, 0, "yes", None, 1.0):
        with pytest.raises(RuntimeError, match="expects a bool"):
            matmul_flags.allow_tf32 = bad
    assert matmul_flags.allow_tf32 is True
    with pytest.raises(AttributeError, match="Unknown attribute"):
        matmul_flags.allow_tf16 = True
    with pytest.raises(AttributeError, match="Unknown attribute"):
        matmul_flags.allow_tf16  # noqa: B018
    assert "allow_tf32=True" in repr(matmul_flags)


def test_cudnn_flag_is_a_plain_flag(monkeypatch):
    monkeypatch.setattr(gpugrad.backends.cudnn, "allow_tf32", True)
    gpugrad.backends.cudnn.allow_tf32 = False  # as torch code does; no effect on matmuls
    assert gpugrad.backends.cudnn.allow_tf32 is False and matmul_flags.allow_tf32 is False


# Sequences that torch (2.x, including the releases that refuse to mix the legacy and the
# new fp32_precision API) accepts; each is run in a fresh torch process, since its setting
# is process-wide.
_SEQUENCES = {
    "allow_true": [("allow", True)],
    "allow_true_false": [("allow", True), ("allow", False)],
    "highest": [("set", "highest")],
    "high": [("set", "high")],
    "medium": [("set", "medium")],
    "high_highest": [("set", "high"), ("set", "highest")],
    "allow_then_medium": [("allow", True), ("set", "medium")],
    "allow_then_highest": [("allow", True), ("set", "highest")],
    "invalid": [("set", "high"), ("set", "fast")],
    "bad_bool": [("allow", 1)],
    "bad_str": [("set", 2)],
}

_PROGRAM = r"""
import json, sys, warnings
import {mod} as lib
seqs, reset = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {{}}
for name, steps in seqs.items():
    if reset == "set":
        lib.set_float32_matmul_precision("highest")
    elif reset == "allow":
        lib.backends.cuda.matmul.allow_tf32 = False
    got = []
    for op, value in steps:
        try:
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                if op == "allow":
                    lib.backends.cuda.matmul.allow_tf32 = value
                else:
                    lib.set_float32_matmul_precision(value)
            got.append(["warn" if any(issubclass(x.category, UserWarning) for x in w)
                        else "ok"])
        except Exception as e:
            got.append([type(e).__name__])
    got.append([lib.get_float32_matmul_precision(), lib.backends.cuda.matmul.allow_tf32])
    out[name] = got
print(json.dumps(out))
"""


def _readings(mod: str, seqs: dict, reset: str | None) -> dict:
    """Each sequence's outcomes and final readings, in a fresh ``mod`` process; ``reset``
    (None, "set", "allow") is how the setting goes back to "highest" between sequences."""
    run = subprocess.run([sys.executable, "-c", _PROGRAM.format(mod=mod), json.dumps(seqs),
                          json.dumps(reset)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a few torch processes
def test_same_readings_as_torch():
    pytest.importorskip("torch")
    # Recent torch refuses to read a setting made by a mix of allow_tf32 and
    # set_float32_matmul_precision, so the reset between two sequences uses the API of both,
    # and a sequence that mixes them runs alone in its process.
    uses = {name: {op for op, _ in steps} for name, steps in _SEQUENCES.items()}
    want = {}
    for api, reset in (("set", "set"), ("allow", "allow")):
        want.update(_readings("torch", {n: s for n, s in _SEQUENCES.items()
                                        if uses[n] == {api}}, reset))
    for name in (n for n in _SEQUENCES if len(uses[n]) > 1):
        want.update(_readings("torch", {name: _SEQUENCES[name]}, None))
    assert sorted(want) == sorted(_SEQUENCES)
    got = _readings("gpugrad", _SEQUENCES, "set")
    assert got == want
    # what the sequences mean, so that a change in torch is seen for what it is
    assert want["allow_true"][-1] == ["high", True]
    assert want["medium"][-1] == ["medium", True]
    assert want["allow_then_highest"][-1] == ["highest", False]
    assert want["invalid"][1] == ["warn"] and want["invalid"][-1] == ["high", True]
    assert want["bad_bool"][0] == ["RuntimeError"]


# ---- eager CuPy: the compute type, on a stand-in ------------------------------------------
class _FakeLinalg:
    """cupy._core._routines_linalg's compute-type table, recording each write."""
    COMPUTE_TYPE_DEFAULT, COMPUTE_TYPE_TF32 = 1, 7

    def __init__(self):
        self.calls = []

    def set_compute_type(self, dtype, compute_type):
        self.calls.append((np.dtype(dtype), compute_type))


def _fake_cupy(cc="90"):
    """The bits of CuPy that the TF32 switch and the eager matmul path touch."""
    device = types.SimpleNamespace(compute_capability=cc)
    return types.SimpleNamespace(matmul=np.matmul,
                                 cuda=types.SimpleNamespace(Device=lambda: device))


@pytest.fixture
def fake_linalg(monkeypatch):
    fake = _FakeLinalg()
    monkeypatch.setattr(_precision, "_cupy_linalg", lambda: fake)
    return fake


def test_eager_matmul_tells_cupy_when_the_flag_changed(monkeypatch, fake_linalg):
    cp = _fake_cupy()
    monkeypatch.setattr(linalg, "xp_of", lambda a: cp)  # the CuPy branch of Matmul.forward
    monkeypatch.setattr(_backend, "_cupy_checked", False)  # CuPy not yet in use: deferred
    a = gpugrad.ones(2, 3)
    b = gpugrad.ones(3, 4)
    f32 = np.dtype(np.float32)
    (a @ b)
    assert fake_linalg.calls == [(f32, 1)]  # full fp32 written once, whatever CUPY_TF32 says
    (a @ b)
    assert len(fake_linalg.calls) == 1  # unchanged flag: no call
    matmul_flags.allow_tf32 = True  # flipped after CuPy import, no environment variable
    assert len(fake_linalg.calls) == 1  # deferred to the next matmul
    out = a @ b
    assert fake_linalg.calls[-1] == (f32, 7) and len(fake_linalg.calls) == 2
    np.testing.assert_array_equal(out.numpy(), np.full((2, 4), 3, np.float32))
    gpugrad.set_float32_matmul_precision("medium")  # still TF32: nothing to tell
    (a @ b)
    assert len(fake_linalg.calls) == 2
    gpugrad.set_float32_matmul_precision("highest")
    (a @ b)
    assert fake_linalg.calls[-1] == (f32, 1) and len(fake_linalg.calls) == 3


def test_flag_change_applies_at_once_when_cupy_is_in_use(monkeypatch, fake_linalg):
    monkeypatch.setattr(_backend, "_cupy", _fake_cupy())
    monkeypatch.setattr(_backend, "_cupy_checked", True)
    matmul_flags.allow_tf32 = True
    assert fake_linalg.calls == [(np.dtype(np.float32), 7)] and _precision.cupy_mode is True
    matmul_flags.allow_tf32 = False
    assert fake_linalg.calls[-1][1] == 1 and _precision.cupy_mode is False


def test_no_tf32_before_ampere(fake_linalg):
    matmul_flags.allow_tf32 = True
    _precision.sync_cupy(_fake_cupy(cc="75"))  # torch, too, computes full fp32 there
    assert fake_linalg.calls == [(np.dtype(np.float32), 1)] and _precision.cupy_mode is True


def test_a_moved_cupy_api_warns_once_and_matmuls_still_run(monkeypatch):
    def moved():
        raise ImportError("No module named 'cupy._core._routines_linalg'")

    monkeypatch.setattr(_precision, "_cupy_linalg", moved)
    cp = _fake_cupy()
    monkeypatch.setattr(linalg, "xp_of", lambda a: cp)
    monkeypatch.setattr(_backend, "_cupy_checked", False)
    matmul_flags.allow_tf32 = True
    a = gpugrad.ones(2, 2)
    with pytest.warns(RuntimeWarning, match="could not switch CuPy.*set_compute_type"):
        out = a @ a
    np.testing.assert_array_equal(out.numpy(), np.full((2, 2), 2, np.float32))
    matmul_flags.allow_tf32 = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        (a @ a)


def test_numpy_matmul_ignores_the_flag(fake_linalg):
    rng = np.random.default_rng(0)
    x = gpugrad.tensor(rng.standard_normal((8, 64)).astype(np.float32), device="cpu")
    y = gpugrad.tensor(rng.standard_normal((64, 8)).astype(np.float32), device="cpu")
    full = (x @ y).numpy()
    matmul_flags.allow_tf32 = True
    np.testing.assert_array_equal((x @ y).numpy(), full)
    assert fake_linalg.calls == [] and _precision.cupy_mode is None


# ---- captured: the cuBLAS handle's math mode, on a fake ------------------------------------
class _FakeBindings:
    """nvmath.bindings.cublas's handle calls and a host GEMM, logging each call in order."""

    class Operation:
        N, T = 0, 1

    class Math:
        DEFAULT_MATH, TF32_TENSOR_OP_MATH = 0, 3

    def __init__(self):
        self.log = []

    def create(self):
        self.log.append("create")
        return 42

    def set_workspace(self, h, ptr, size):
        self.log.append("workspace")

    def set_stream(self, h, stream):
        self.log.append(("stream", stream))

    def set_math_mode(self, h, mode):
        assert h == 42
        self.log.append(("math", mode))

    def sgemm(self, h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
        # contiguous row-major operands only (what this test passes): C^T = B^T A^T
        self.log.append("sgemm")
        view = _FakeBindings._view
        b, a = view(A, k, m, np.float32), view(B, n, k, np.float32)
        view(C, n, m, np.float32)[...] = a @ b  # (n x k)(k x m) read row-major

    @staticmethod
    def _view(ptr, rows, cols, dt):
        import ctypes
        buf = (ctypes.c_char * (rows * cols * 4)).from_address(ptr)
        return np.frombuffer(buf, dt).reshape(rows, cols)


def _fake_cp_for_handles():
    stream = types.SimpleNamespace(ptr=7)
    return types.SimpleNamespace(
        empty=lambda n, dtype: types.SimpleNamespace(data=types.SimpleNamespace(ptr=1 << 20)),
        uint8=np.uint8,
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDevice=lambda: 0),
                                   get_current_stream=lambda: stream))


@pytest.fixture
def fake_blas(monkeypatch):
    fake = _FakeBindings()
    monkeypatch.setattr(_cublas, "_nv", fake)
    monkeypatch.setattr(_cublas, "_handles", {})
    return fake


def test_handle_math_mode_follows_the_flag(fake_blas):
    cp = _fake_cp_for_handles()
    fake_blas.log.clear()
    _cublas.prepare(cp)  # before a capture: handle, stream and the current math mode
    assert fake_blas.log == ["create", "workspace", ("stream", 7), ("math", 0)]
    _cublas._handle(cp)
    assert len(fake_blas.log) == 4  # unchanged flag: one identity check, no call
    matmul_flags.allow_tf32 = True
    _cublas._handle(cp)
    assert fake_blas.log[-1] == ("math", 3) and len(fake_blas.log) == 5
    gpugrad.set_float32_matmul_precision("medium")
    _cublas._handle(cp)
    assert len(fake_blas.log) == 5
    gpugrad.set_float32_matmul_precision("highest")
    _cublas._handle(cp)
    assert fake_blas.log[-1] == ("math", 0)


def test_mode_is_set_before_the_gemm_it_governs(fake_blas):
    cp = _fake_cp_for_handles()
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    matmul_flags.allow_tf32 = True
    out = _cublas._matmul(a, b, np, fake_blas, lambda: _cublas._handle(cp),
                          lambda x: x.ctypes.data)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-6)
    assert fake_blas.log.index(("math", 3)) < fake_blas.log.index("sgemm")


# ---- on a GPU: the numbers --------------------------------------------------------------
def _operands(device):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((256, 2048)).astype(np.float32)
    b = rng.standard_normal((2048, 256)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    return gpugrad.tensor(a, device=device), gpugrad.tensor(b, device=device), exact


def _rel_error(got, exact):
    return float(np.abs(got.astype(np.float64) - exact).max() / np.abs(exact).max())


# TF32 keeps 10 of float32's 23 explicit mantissa bits: each input is off by up to 2^-11
# relative, and a 2048-long dot product of normal numbers ends ~1e-4..1e-3 off, relative to
# the largest entry; full fp32 ends ~1e-6 off.
_FP32_MAX, _TF32_MIN, _TF32_MAX = 2e-5, 5e-5, 5e-3


@pytest.mark.gpu
def test_gpu_eager_matmul_rounds_to_tf32_only_when_allowed():
    x, y, exact = _operands("cuda")
    full = (x @ y).cpu().numpy()
    assert _rel_error(full, exact) < _FP32_MAX
    matmul_flags.allow_tf32 = True
    tf32 = (x @ y).cpu().numpy()
    if gpugrad.cuda.get_device_capability()[0] < 8:
        pytest.skip("no TF32 before compute capability 8.0 (full fp32 there, as torch)")
    assert _TF32_MIN < _rel_error(tf32, exact) < _TF32_MAX
    matmul_flags.allow_tf32 = False
    np.testing.assert_array_equal((x @ y).cpu().numpy(), full)


@pytest.mark.gpu
def test_gpu_captured_matmul_rounds_to_tf32_only_when_allowed():
    if not _cublas.available():
        pytest.skip("nvmath-python is not installed")
    x, y, exact = _operands("cuda")

    def product(a, b):
        return a @ b

    full = gpugrad.compile(product)
    for _ in range(4):  # warm-up calls, then the capture and a replay
        got = full(x, y).cpu().numpy()
    assert _rel_error(got, exact) < _FP32_MAX
    matmul_flags.allow_tf32 = True
    if gpugrad.cuda.get_device_capability()[0] < 8:
        pytest.skip("no TF32 before compute capability 8.0")
    tf32 = gpugrad.compile(product)  # a new capture takes the flag; full's keeps fp32
    for _ in range(4):
        got_tf32 = tf32(x, y).cpu().numpy()
    assert _TF32_MIN < _rel_error(got_tf32, exact) < _TF32_MAX
    np.testing.assert_array_equal(full(x, y).cpu().numpy(), got)
    # the direct call on gpugrad's handle, outside a capture, follows the flag too
    assert _TF32_MIN < _rel_error(_cublas.matmul(x._data, y._data).get(), exact) < _TF32_MAX
    matmul_flags.allow_tf32 = False
    assert _rel_error(_cublas.matmul(x._data, y._data).get(), exact) < _FP32_MAX
