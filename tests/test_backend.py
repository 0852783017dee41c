"""Devices: parsing, equality, the default device (GPUGRAD_DEVICE), CUDA detection without
CuPy, transfers, and the error for ops that mix devices.

Environment behaviour is checked in subprocesses (the default device is resolved once per
process). Mixing devices is checked on CPU-only machines with an array that reports itself on
``cuda:0``, which drives the real check in ``gpugrad._tensor._check_same_device``; the
``gpu``-marked tests do the same with real CUDA tensors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gpugrad
from gpugrad import _backend
from helpers import torch_or_skip

REPO = Path(__file__).resolve().parents[1]
CUDA = gpugrad.cuda.is_available()
needs_no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour without CUDA")


# ============================================================================================
# gpugrad.device
# ============================================================================================
@pytest.mark.parametrize("args,type_,index,text,rep", [
    (("cpu",), "cpu", None, "cpu", "device(type='cpu')"),
    (("cuda",), "cuda", None, "cuda", "device(type='cuda')"),
    (("cuda:0",), "cuda", 0, "cuda:0", "device(type='cuda', index=0)"),
    (("cuda:1",), "cuda", 1, "cuda:1", "device(type='cuda', index=1)"),
    (("cuda", 1), "cuda", 1, "cuda:1", "device(type='cuda', index=1)"),
    (("cuda", 0), "cuda", 0, "cuda:0", "device(type='cuda', index=0)"),
    (("cuda:12",), "cuda", 12, "cuda:12", "device(type='cuda', index=12)"),
])
def test_device_parsing(args, type_, index, text, rep):
    d = gpugrad.device(*args)
    assert d.type == type_ and d.index == index
    assert str(d) == text and repr(d) == rep
    assert gpugrad.device(d) == d  # a device is accepted too
    torch = torch_or_skip()
    t = torch.device(*args)
    assert (t.type, t.index, str(t), repr(t)) == (d.type, d.index, str(d), repr(d))


def test_device_from_int_is_cuda():
    assert gpugrad.device(1) == gpugrad.device("cuda", 1)


def test_device_equality_and_hash():
    assert gpugrad.device("cuda:1") == gpugrad.device("cuda", 1)
    assert gpugrad.device("cpu") != gpugrad.device("cuda")
    assert gpugrad.device("cuda") != gpugrad.device("cuda:0")  # as in torch: no index != 0
    assert gpugrad.device("cuda:0") != gpugrad.device("cuda:1")
    assert len({gpugrad.device("cuda:1"), gpugrad.device("cuda", 1), gpugrad.device("cpu")}) == 2
    # gpugrad also compares with strings (torch 2.13 returns False here), consistently hashed
    assert gpugrad.device("cpu") == "cpu" and "cpu" == gpugrad.device("cpu")
    assert gpugrad.device("cuda:1") == "cuda:1" and gpugrad.device("cuda", 1) != "cuda:0"
    assert gpugrad.device("cpu") != "cuda"
    assert hash(gpugrad.device("cuda:1")) == hash("cuda:1")
    assert gpugrad.device("cpu") in {"cpu"}
    # comparing with anything else is False, never an error
    assert gpugrad.device("cpu") != "gpu" and not gpugrad.device("cpu") == "nonsense:x"
    assert gpugrad.device("cpu") != 0 and gpugrad.device("cpu") != None  # noqa: E711


def test_device_pickles():
    import pickle
    d = gpugrad.device("cuda:3")
    assert pickle.loads(pickle.dumps(d)) == d


@pytest.mark.parametrize("bad", ["gpu", "CPU", "cuda:x", "cuda:-1", "cuda:", "cuda:1:2", "",
                                 " cuda", "mps", "cpu:1"], ids=lambda v: f"str={v!r}")
def test_bad_device_strings(bad):
    with pytest.raises(ValueError) as info:
        gpugrad.device(bad)
    assert repr(bad) in str(info.value) or "cpu has no index" in str(info.value)
    assert "cpu" in str(info.value)  # says what is accepted (or what is wrong with cpu)
    with pytest.raises(ValueError):
        gpugrad.zeros(2, device=bad)


def test_bad_device_arguments():
    with pytest.raises(ValueError, match="already has an index"):
        gpugrad.device("cuda:1", 1)
    with pytest.raises(ValueError, match="cpu has no index"):
        gpugrad.device("cpu", 1)
    with pytest.raises(TypeError, match="expected a string, an int or a device"):
        gpugrad.device(1.5)
    with pytest.raises(TypeError):
        gpugrad.device(None)


def test_cpu_index_zero_is_cpu():
    assert gpugrad.device("cpu:0") == gpugrad.device("cpu")
    assert gpugrad.device("cpu", 0).index is None


# ============================================================================================
# gpugrad.cuda and the default device
# ============================================================================================
def test_cuda_queries_never_raise():
    avail = gpugrad.cuda.is_available()
    assert avail is True or avail is False
    n = gpugrad.cuda.device_count()
    assert isinstance(n, int) and n >= 0 and (n > 0) == avail
    gpugrad.cuda.synchronize()  # a no-op without CUDA
    gpugrad.cuda.manual_seed(0)
    gpugrad.cuda.manual_seed_all(0)


def test_default_device(device):
    d = gpugrad.get_default_device()
    assert isinstance(d, gpugrad.device) and d == gpugrad.device(device)
    assert gpugrad.ones(1).device == d
    assert gpugrad.tensor([1.0]).device == d
    if os.environ.get("GPUGRAD_DEVICE", "").strip() == "cpu" or not CUDA:
        assert d.type == "cpu"


def test_set_default_device():
    before = gpugrad.get_default_device()
    try:
        gpugrad.set_default_device("cpu")
        assert gpugrad.ones(1).device == "cpu"
        with pytest.raises(ValueError):
            gpugrad.set_default_device("gpu")
    finally:
        gpugrad.set_default_device(before)
    assert gpugrad.get_default_device() == before


def test_explicit_cpu_device(device):
    for t in (gpugrad.ones(2, device="cpu"), gpugrad.tensor([1.0], device="cpu"),
              gpugrad.arange(3, device=gpugrad.device("cpu")),
              gpugrad.randn(2, device="cpu"), gpugrad.eye(2, device="cpu")):
        assert t.device == gpugrad.device("cpu") and not t.is_cuda
        assert isinstance(t._data, np.ndarray)


@needs_no_cuda
@pytest.mark.parametrize("make", [
    lambda: gpugrad.ones(2, device="cuda"),
    lambda: gpugrad.tensor([1.0], device="cuda:0"),
    lambda: gpugrad.ones(2).to("cuda"),
    lambda: gpugrad.ones(2).cuda(),
    lambda: gpugrad.ones(2).to(gpugrad.device("cuda", 0)),
    lambda: gpugrad.cuda.current_device(),
], ids=["zeros", "tensor", "to", "cuda()", "to-device", "current_device"])
def test_cuda_without_cuda_is_a_clear_error(make):
    with pytest.raises(RuntimeError, match="CUDA is not available") as info:
        make()
    assert "device='cpu'" in str(info.value) or "GPUGRAD_DEVICE" in str(info.value)


# ---- subprocesses: the environment decides the default device -------------------------------
PROBE = """
import json
result = {}
import gpugrad
result['cupy_imported_by_import'] = 'cupy' in sys.modules and sys.modules['cupy'] is not None
result['available'] = gpugrad.cuda.is_available()
result['count'] = gpugrad.cuda.device_count()
try:
    t = gpugrad.ones(2) * 2 + gpugrad.tensor([1.0, 2.0])
    result['device'] = str(t.device)
    result['values'] = t.tolist()
    result['default'] = str(gpugrad.get_default_device())
except Exception as e:
    result['error'] = type(e).__name__
    result['message'] = str(e)
result['explicit_cpu'] = str(gpugrad.ones(1, device='cpu').device)
print(json.dumps(result))
"""

# name -> (GPUGRAD_DEVICE or None, whether `import cupy` is made to fail)
PROBES = {
    "unset-no-cupy": (None, True),
    "unset": (None, False),
    "cpu-no-cupy": ("cpu", True),
    "cpu": ("cpu", False),
    "cuda-no-cupy": ("cuda", True),
    "cuda": ("cuda", False),
    "bogus": ("bogus", True),
    "cuda:x": ("cuda:x", True),
}


@pytest.fixture(scope="module")
def probes() -> dict:
    """Run PROBE in a fresh interpreter per configuration (all at once: they are slow to
    start) with this checkout on PYTHONPATH; each prints a JSON object, returned by name."""
    procs = {}
    for name, (value, block_cupy) in PROBES.items():
        environ = {k: v for k, v in os.environ.items() if k != "GPUGRAD_DEVICE"}
        environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        if value is not None:
            environ["GPUGRAD_DEVICE"] = value
        prelude = "import sys\n"
        if block_cupy:  # `import cupy` raises ImportError, as on a machine without CuPy
            prelude += "sys.modules['cupy'] = None\n"
        procs[name] = subprocess.Popen([sys.executable, "-c", prelude + PROBE], env=environ,
                                       cwd=str(REPO), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {err}"  # `import gpugrad` never fails
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def test_import_without_cupy_gives_cpu_tensors(probes):
    r = probes["unset-no-cupy"]
    assert r["available"] is False and r["count"] == 0
    assert "error" not in r, r
    assert r["device"] == "cpu" and r["default"] == "cpu"
    assert r["values"] == [3.0, 4.0]


def test_import_does_not_import_cupy(probes):
    # CuPy is imported lazily, on first need: with GPUGRAD_DEVICE=cpu, never
    assert probes["cpu"]["cupy_imported_by_import"] is False
    r = probes["unset"]
    assert r["available"] is CUDA and r["device"] == ("cuda:0" if CUDA else "cpu")


@pytest.mark.parametrize("name", ["cpu-no-cupy", "cpu"])
def test_env_cpu_forces_cpu(name, probes):
    r = probes[name]
    assert "error" not in r, r
    assert r["device"] == "cpu" and r["default"] == "cpu" and r["values"] == [3.0, 4.0]


@pytest.mark.parametrize("name", ["cuda-no-cupy", "cuda"])
def test_env_cuda_without_cuda_is_a_clear_error(name, probes):
    if CUDA and not name.endswith("no-cupy"):
        pytest.skip("CUDA is available here: GPUGRAD_DEVICE=cuda works")
    r = probes[name]
    assert r.get("error") == "RuntimeError", r  # `import gpugrad` itself succeeded
    assert "CUDA is not available" in r["message"]
    assert "GPUGRAD_DEVICE=cpu" in r["message"]  # says how to get going
    assert r["explicit_cpu"] == "cpu"  # an explicit device still works


@pytest.mark.gpu
def test_env_cuda_with_cuda(probes):
    r = probes["cuda"]
    assert "error" not in r, r
    assert r["device"] == "cuda:0" and r["values"] == [3.0, 4.0]


@pytest.mark.parametrize("name", ["bogus", "cuda:x"], ids=lambda v: f"env={v}")
def test_env_bogus_is_a_clear_error(name, probes):
    r = probes[name]
    assert r.get("error") == "RuntimeError", r
    assert "GPUGRAD_DEVICE" in r["message"] and repr(name) in r["message"]
    assert "'cpu'" in r["message"] and "'cuda'" in r["message"]  # says what is valid
    assert r["explicit_cpu"] == "cpu"


# ============================================================================================
# ops on tensors of two devices
# ============================================================================================
class FakeCudaArray(np.ndarray):
    """A NumPy array that ``device_of_array`` (patched by the ``fake_cuda`` fixture) reports
    on ``cuda:0``: it lets a CPU-only machine reach the mixed-device check."""


@pytest.fixture
def fake_cuda(monkeypatch):
    real = _backend.device_of_array

    def device_of_array(a):
        return _backend.cuda_device(0) if isinstance(a, FakeCudaArray) else real(a)

    monkeypatch.setattr(_backend, "device_of_array", device_of_array)

    def make(values, requires_grad=False):
        arr = np.asarray(values, dtype=np.float32).view(FakeCudaArray)
        t = gpugrad.Tensor._make(arr)
        return t.requires_grad_(requires_grad)

    return make


def test_fake_cuda_tensor_reports_cuda(fake_cuda):
    f = fake_cuda([1.0, 2.0])
    assert f.device == gpugrad.device("cuda:0") and f.device.type == "cuda"


MIXED_OPS = [
    ("Add", lambda a, b: a + b),
    ("Sub", lambda a, b: a - b),
    ("Mul", lambda a, b: a * b),
    ("Div", lambda a, b: a / b),
    ("Pow", lambda a, b: a ** b),
    ("Maximum", lambda a, b: gpugrad.maximum(a, b)),
    ("Mm", lambda a, b: a @ b),
    ("Dot", lambda a, b: gpugrad.dot(a.reshape(4), b.reshape(4))),
    ("Add", lambda a, b: gpugrad.add(a, b, alpha=2)),
]


@pytest.mark.parametrize("name,op", MIXED_OPS, ids=[f"{n}-{i}" for i, (n, _) in
                                                    enumerate(MIXED_OPS)])
@pytest.mark.parametrize("cpu_first", [True, False], ids=["cpu-cuda", "cuda-cpu"])
def test_mixing_devices_names_op_and_devices(name, op, cpu_first, fake_cuda):
    c = gpugrad.tensor([[1.0, 2.0], [3.0, 4.0]], device="cpu", requires_grad=True)
    f = fake_cuda([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    a, b = (c, f) if cpu_first else (f, c)
    first, second = ("cpu", "cuda:0") if cpu_first else ("cuda:0", "cpu")
    with pytest.raises(RuntimeError) as info:
        op(a, b)
    msg = str(info.value)
    assert msg.startswith(f"{name}:"), msg  # names the op
    assert "expected all tensors to be on the same device" in msg
    assert f"{first} (argument 0) and {second} (argument 1)" in msg  # names both devices
    assert c.grad is None and c.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_mixing_devices_in_place_leaves_tensor_unchanged(fake_cuda):
    c = gpugrad.tensor([1.0, 2.0], device="cpu")
    f = fake_cuda([5.0, 5.0])
    with pytest.raises(RuntimeError, match=r"Add: .*cpu .* and cuda:0"):
        c.add_(f)
    with pytest.raises(RuntimeError, match=r"Mul: .*cpu .* and cuda:0"):
        c *= f
    assert c.tolist() == [1.0, 2.0] and c._version.value == 0


def test_mixing_devices_in_a_custom_function(fake_cuda):
    class Combine(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale, y):
            raise AssertionError("forward must not run on mixed devices")

        @staticmethod
        def backward(ctx, g):
            return g, None, g

    c = gpugrad.ones(2, device="cpu", requires_grad=True)
    f = fake_cuda([1.0, 1.0])
    with pytest.raises(RuntimeError, match=r"Combine: .*cpu \(argument 0\) and cuda:0 "
                                           r"\(argument 2\)"):
        Combine.apply(c, 3.0, f)


def test_check_same_device_directly(fake_cuda):
    from gpugrad._tensor import _check_same_device
    c = gpugrad.ones(2, device="cpu")
    f = fake_cuda([1.0, 1.0])

    def my_op():
        pass

    _check_same_device(my_op, (c, 2.0, c), [0, 2])  # same device: fine
    _check_same_device(my_op, (f, f), [0, 1])
    with pytest.raises(RuntimeError, match=r"^my_op: .*cuda:0 \(argument 1\) and cpu "
                                           r"\(argument 2\)"):
        _check_same_device(my_op, (2.0, f, c), [1, 2])
    my_op._op_name = "nice_name"
    with pytest.raises(RuntimeError, match=r"^nice_name: .*\.to\('cpu'\)"):
        _check_same_device(my_op, (c, f), [0, 1])


def test_same_device_ops_are_fine(device):
    a = gpugrad.ones(2, device=device, requires_grad=True)
    b = gpugrad.ones(2, device=device)
    (a * b + a).sum().backward()
    assert a.grad.device == a.device and a.grad.tolist() == [2.0, 2.0]
    assert (a * 2.0).device == a.device  # Python scalars have no device


# ============================================================================================
# real CUDA
# ============================================================================================
@pytest.mark.gpu
def test_mixing_devices_real_cuda():
    c = gpugrad.ones(2, device="cpu", requires_grad=True)
    g = gpugrad.ones(2, device="cuda", requires_grad=True)
    with pytest.raises(RuntimeError, match=r"^Add: .*cpu \(argument 0\) and cuda:0 "
                                           r"\(argument 1\)"):
        c + g
    with pytest.raises(RuntimeError, match=r"^Mul: .*cuda:0 \(argument 0\) and cpu"):
        g * c
    assert c.grad is None and g.grad is None


@pytest.mark.gpu
def test_cuda_tensors_and_transfers():
    g = gpugrad.tensor([1.0, 2.0], device="cuda", requires_grad=True)
    assert g.is_cuda and g.device == gpugrad.device("cuda:0") and g.device.index == 0
    assert "device='cuda:0'" in repr(g)
    assert g.type() == "gpugrad.cuda.FloatTensor"
    c = g.cpu()
    assert c.device == "cpu" and c.tolist() == [1.0, 2.0]
    (c * 3).sum().backward()  # the gradient flows back across the transfer
    assert g.grad.device == g.device and g.grad.tolist() == [3.0, 3.0]
    back = c.detach().cuda()
    assert back.device == g.device and back.tolist() == [1.0, 2.0]
    assert c.detach().to("cuda:0").is_cuda
    with pytest.raises(TypeError, match=r"Tensor\.cpu\(\)"):
        g.detach().numpy()
    gpugrad.cuda.synchronize()
    assert gpugrad.cuda.current_device() == 0
