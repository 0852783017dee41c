"""Interop without copies: DLPack both ways, ``__array__`` on CPU tensors and
``__cuda_array_interface__`` on CUDA ones, with NumPy, torch and CuPy.

"Without copies" is checked by writing through one side and reading the other. CPU round trips
always run (they use ``device='cpu'`` explicitly: host memory is what NumPy and CPU torch
share); the ``gpu``-marked ones need CUDA (CuPy and torch CUDA).
"""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from helpers import torch_or_skip

CUDA = gpugrad.cuda.is_available()
DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def _cpu(data, **kw):
    return gpugrad.tensor(data, device="cpu", **kw)


# ---- NumPy -------------------------------------------------------------------------------------
def test_numpy_from_dlpack_shares_memory():
    x = _cpu([1.0, 2.0, 3.0])
    a = np.from_dlpack(x)
    assert a.dtype == np.float32 and a.flags.writeable
    a[0] = 10.0
    x.mul_(2)
    assert x.tolist() == [20.0, 4.0, 6.0] and a.tolist() == [20.0, 4.0, 6.0]
    assert x.__dlpack_device__() == (1, 0)


def test_numpy_asarray_shares_memory_and_np_array_copies():
    x = _cpu([[1.0, 2.0], [3.0, 4.0]])
    a = np.asarray(x)
    a[0, 0] = 7.0
    assert x[0, 0].item() == 7.0
    c = np.array(x)  # np.array copies by default, as with torch
    c[0, 1] = -1.0
    assert x[0, 1].item() == 2.0
    d = np.asarray(x, dtype=np.float64)  # another dtype: a converted copy
    assert d.dtype == np.float64 and d.tolist() == [[7.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ValueError, match="copy"):
        np.array(x, dtype=np.float64, copy=False)
    t = x.t()  # a strided view keeps its strides
    at = np.asarray(t)
    assert at.tolist() == [[7.0, 3.0], [2.0, 4.0]] and np.shares_memory(at, a)


def test_numpy_array_of_tensor_that_requires_grad_is_refused_like_torch():
    x = _cpu([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"requires grad.*detach\(\)\.numpy\(\)"):
        np.asarray(x)
    with pytest.raises(BufferError, match="detach"):
        np.from_dlpack(x)
    assert np.asarray(x.detach()).tolist() == [1.0, 2.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_from_dlpack_numpy_every_dtype(dtype):
    a = (np.arange(6) % 2 == 0) if dtype == "bool" else np.arange(6).astype(dtype)
    a = a.reshape(2, 3)
    t = gpugrad.from_dlpack(a)
    assert t.dtype == getattr(gpugrad, dtype) and t.device == "cpu" and t.shape == (2, 3)
    assert not t.requires_grad and t.is_leaf
    if dtype != "bool":
        a[1, 2] = 5
        assert t[1, 2].item() == 5  # shared
    back = np.from_dlpack(t)
    assert back.dtype == a.dtype and np.shares_memory(back, a)


def test_from_dlpack_of_a_gpugrad_tensor_shares_memory():
    x = _cpu([1.0, 2.0, 3.0], requires_grad=True)
    y = gpugrad.from_dlpack(x.detach())
    assert not y.requires_grad and y.device == x.device
    y.add_(1)
    assert x.tolist() == [2.0, 3.0, 4.0]


def test_from_dlpack_empty_and_zero_dim():
    e = gpugrad.from_dlpack(np.zeros((0, 3), dtype=np.float32))
    assert e.shape == (0, 3) and e.numel() == 0
    s = gpugrad.from_dlpack(np.array(2.5))
    assert s.shape == () and s.item() == 2.5 and s.dtype == gpugrad.float64


def test_from_dlpack_errors_are_clear():
    with pytest.raises(TypeError, match="expected an object with __dlpack__.*got list"):
        gpugrad.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="complex64"):
        gpugrad.from_dlpack(np.zeros(2, dtype=np.complex64))

    class OnOpenCL:
        def __dlpack__(self, **kw):
            raise AssertionError("not asked for data")

        def __dlpack_device__(self):
            return (4, 0)
    with pytest.raises(RuntimeError, match=r"OpenCL device.*CPU or a CUDA device"):
        gpugrad.from_dlpack(OnOpenCL())


@pytest.mark.skipif(CUDA, reason="checks the behaviour without CUDA")
def test_from_dlpack_of_cuda_data_without_cuda_is_a_clear_error():
    class OnCuda:
        def __dlpack__(self, **kw):
            raise AssertionError("not asked for data")

        def __dlpack_device__(self):
            return (2, 0)
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        gpugrad.from_dlpack(OnCuda())


def test_cpu_tensor_has_no_cuda_array_interface_like_torch():
    x = _cpu([1.0])
    assert not hasattr(x, "__cuda_array_interface__")
    with pytest.raises(AttributeError, match=r"non-CUDA tensor.*tensor\.cuda\(\)"):
        x.__cuda_array_interface__
    torch = torch_or_skip()
    assert hasattr(x, "__cuda_array_interface__") == hasattr(torch.ones(1),
                                                              "__cuda_array_interface__")


# ---- torch (CPU) -------------------------------------------------------------------------------
def test_torch_from_dlpack_shares_memory_both_ways():
    torch = torch_or_skip()
    x = _cpu([1.0, 2.0, 3.0])
    t = torch.from_dlpack(x)
    assert t.dtype == torch.float32 and t.device.type == "cpu"
    t[0] = 10.0
    x.add_(1)
    assert x.tolist() == [11.0, 3.0, 4.0] and t.tolist() == [11.0, 3.0, 4.0]

    u = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    g = gpugrad.from_dlpack(u)
    assert g.dtype == gpugrad.float64 and g.shape == (2, 3)
    u[1, 1] = -5.0
    g[0, 0] = 9.0  # a write through gpugrad (a recorded in-place op) shows in torch
    assert g.tolist() == [[9.0, 1.0, 2.0], [3.0, -5.0, 5.0]] == u.tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_round_trip_every_dtype(dtype):
    torch = torch_or_skip()
    t = (torch.arange(4) % 2 == 0) if dtype == "bool" else torch.arange(4).to(
        getattr(torch, dtype))
    g = gpugrad.from_dlpack(t)
    assert g.dtype == getattr(gpugrad, dtype) and g.tolist() == t.tolist()
    back = torch.from_dlpack(g)
    assert back.dtype == t.dtype and back.data_ptr() == t.data_ptr()


def test_torch_strided_views_keep_their_layout():
    torch = torch_or_skip()
    u = torch.arange(12.0).reshape(3, 4)
    v = u.t()[1:, ::2]  # non-contiguous
    g = gpugrad.from_dlpack(v)
    assert g.tolist() == v.tolist()
    u[2, 1] = -7.0  # v[i, j] is u.t()[1 + i, 2 * j], that is u[2 * j, 1 + i]
    assert g[0, 1].item() == -7.0
    w = torch.from_dlpack(gpugrad.from_dlpack(torch.arange(6.0).reshape(2, 3)).t())
    assert w.shape == (3, 2) and w.stride() == (1, 3)


def test_torch_capsules_legacy_and_versioned():
    torch = torch_or_skip()
    t = torch.ones(3)
    g = gpugrad.from_dlpack(torch.utils.dlpack.to_dlpack(t))  # a legacy "dltensor" capsule
    g.mul_(3)  # writeable, as torch treats it
    assert t.tolist() == [3.0, 3.0, 3.0]
    u = torch.zeros(2, dtype=torch.int64)
    h = gpugrad.from_dlpack(u.__dlpack__(max_version=(1, 0)))  # "dltensor_versioned"
    u[1] = 4
    assert h.tolist() == [0, 4] and h.dtype == gpugrad.int64
    cap = torch.utils.dlpack.to_dlpack(t)
    gpugrad.from_dlpack(cap)
    with pytest.raises(TypeError, match="already consumed"):
        gpugrad.from_dlpack(cap)


def test_torch_refusals_are_clear():
    torch = torch_or_skip()
    with pytest.raises(TypeError, match=r"from_dlpack\(\).*detach"):
        gpugrad.from_dlpack(torch.ones(2, requires_grad=True))
    with pytest.raises(TypeError, match="dtype"):
        gpugrad.from_dlpack(torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(BufferError, match="detach"):  # torch's own message, both ways
        torch.from_dlpack(_cpu([1.0], requires_grad=True))


def test_gradients_flow_through_shared_memory_tensors():
    torch = torch_or_skip()
    w = torch.tensor([1.0, 2.0])
    g = gpugrad.from_dlpack(w).requires_grad_()
    (g * g).sum().backward()
    assert g.grad.tolist() == [2.0, 4.0]


# ---- on a GPU: CuPy and torch CUDA -------------------------------------------------------------
@pytest.mark.gpu
def test_gpu_cupy_round_trips_share_memory():
    import cupy
    a = cupy.arange(6, dtype=cupy.float32).reshape(2, 3)
    g = gpugrad.from_dlpack(a)
    assert g.is_cuda and g.device == "cuda:0" and g.dtype == gpugrad.float32
    a[0, 0] = 42.0
    assert g[0, 0].item() == 42.0
    b = cupy.from_dlpack(g)
    g.add_(1)
    assert float(b[0, 0]) == 43.0 and b.data.ptr == a.data.ptr
    c = cupy.asarray(g)  # __cuda_array_interface__
    assert c.data.ptr == a.data.ptr and g.__dlpack_device__() == (2, 0)
    iface = g.__cuda_array_interface__
    assert iface["shape"] == (2, 3) and iface["typestr"] == "<f4"
    with pytest.raises(TypeError, match=r"can't convert cuda:0 device type tensor to numpy"):
        np.asarray(g)
    with pytest.raises(RuntimeError, match="requires grad"):
        g.detach().clone().requires_grad_().__cuda_array_interface__


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_cupy_every_dtype(dtype):
    import cupy
    a = cupy.arange(4).astype(dtype)
    g = gpugrad.from_dlpack(a)
    assert g.dtype == getattr(gpugrad, dtype) and g.tolist() == a.tolist()
    assert cupy.from_dlpack(g).data.ptr == a.data.ptr


@pytest.mark.gpu
def test_gpu_torch_cuda_round_trips_share_memory():
    torch = torch_or_skip()
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    t = torch.arange(6.0, device="cuda").reshape(2, 3)
    g = gpugrad.from_dlpack(t)
    assert g.is_cuda and g.device == f"cuda:{t.device.index}"
    t[1, 2] = -1.0
    assert g[1, 2].item() == -1.0
    back = torch.from_dlpack(g)
    g.mul_(2)
    torch.cuda.synchronize()
    assert back.data_ptr() == t.data_ptr() and back[1, 2].item() == -2.0
    via_cai = torch.as_tensor(g.detach(), device="cuda")  # __cuda_array_interface__
    assert via_cai.data_ptr() == t.data_ptr()
    x = gpugrad.from_dlpack(t.t())  # strided
    assert x.tolist() == t.t().tolist()
    cap = gpugrad.from_dlpack(torch.utils.dlpack.to_dlpack(t))  # a legacy capsule of CUDA data
    assert cap.is_cuda and cap.__cuda_array_interface__["data"][0] == t.data_ptr()


@pytest.mark.gpu
def test_gpu_from_dlpack_on_a_side_stream():
    import cupy
    s = gpugrad.cuda.Stream()
    with gpugrad.cuda.stream(s):
        x = gpugrad.ones(1 << 20, device="cuda") * 3
        a = cupy.from_dlpack(x)  # ordered after x's kernel on the consumer's stream
        assert float(a.sum()) == 3 * (1 << 20)


@pytest.mark.gpu
def test_gpu_tensor_from_a_torch_cuda_tensor_copies_it():
    # gpugrad.tensor(<torch CUDA tensor>) goes through __cuda_array_interface__ (viewed by
    # CuPy: torch's dtype objects are not NumPy dtypes) and copies, as torch.tensor does.
    torch = torch_or_skip()
    if not torch.cuda.is_available():
        pytest.skip("this torch build has no CUDA")
    t = torch.arange(6.0, device="cuda").reshape(2, 3)
    g = gpugrad.tensor(t, device="cuda")
    assert g.dtype == gpugrad.float32 and g.shape == (2, 3) and g.tolist() == t.tolist()
    t[0, 0] = 7.0
    assert g[0, 0].item() == 0.0  # a copy
    h = gpugrad.tensor(t, device="cpu", dtype=gpugrad.float64)  # device to host
    assert h.device == "cpu" and h.tolist() == t.tolist()
