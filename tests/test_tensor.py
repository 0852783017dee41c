"""Tensor basics: factories, dtypes and promotion, attributes, conversions, repr, protocols.

Every tensor is made with ``device=device`` so the suite runs unchanged on CUDA; where
PyTorch is installed the same calls are made with torch (on the CPU) as the reference.
"""
from __future__ import annotations

import copy
import itertools
import pickle
import re

import numpy as np
import pytest

import gpugrad
from helpers import assert_close, to_numpy, torch_or_skip

DTYPE_NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
               "float64"]


def on_cpu(device) -> bool:
    return gpugrad.device(device).type == "cpu"


def tname(dt) -> str:
    """A torch or gpugrad dtype as its bare name ('float32')."""
    return str(dt).replace("torch.", "").replace("gpugrad.", "")


def strip_device(text: str, device) -> str:
    """A gpugrad repr without its device suffix, to compare with torch's CPU repr."""
    return text.replace(f", device='{gpugrad.device(device)}'", "").replace(
        f"device='{gpugrad.device(device)}', ", "")


# ============================================================================================
# factories
# ============================================================================================
TENSOR_DATA = [
    pytest.param(1.5, id="float"),
    pytest.param(3, id="int"),
    pytest.param(True, id="bool"),
    pytest.param([1, 2, 3], id="ints"),
    pytest.param([1.0, 2, 3], id="mixed-float-int"),
    pytest.param([True, 2], id="mixed-bool-int"),
    pytest.param([True, 2.5], id="mixed-bool-float"),
    pytest.param([[1, 2], [3, 4]], id="nested"),
    pytest.param(((1.5,), (2.5,)), id="tuples"),
    pytest.param([], id="empty"),
    pytest.param([[]], id="empty-nested"),
    pytest.param(np.array([1.0, 2.0]), id="np-float64"),
    pytest.param(np.array([1, 2], dtype=np.int32), id="np-int32"),
    pytest.param(np.array([[1, 0]], dtype=np.bool_), id="np-bool"),
    pytest.param(np.float64(2.5), id="np-float64-scalar"),
    pytest.param(np.int16(7), id="np-int16-scalar"),
    pytest.param(np.array(3.0, dtype=np.float16), id="np-0d-half"),
]


@pytest.mark.parametrize("data", TENSOR_DATA)
def test_tensor_infers_dtype_and_values_like_torch(data, device):
    torch = torch_or_skip()
    t = gpugrad.tensor(data, device=device)
    r = torch.tensor(data)
    assert tname(t.dtype) == tname(r.dtype)
    assert tuple(t.shape) == tuple(r.shape)
    assert t.tolist() == r.tolist()
    assert t.device == gpugrad.device(device)
    assert t.is_leaf and not t.requires_grad and t.grad_fn is None


def test_tensor_dtype_inference_literal(device):
    assert gpugrad.tensor(2.0, device=device).dtype is gpugrad.float32
    assert gpugrad.tensor([1.5, 2.5], device=device).dtype is gpugrad.float32
    assert gpugrad.tensor(2, device=device).dtype is gpugrad.int64
    assert gpugrad.tensor([True, False], device=device).dtype is gpugrad.bool
    assert gpugrad.tensor(np.array([1.0, 2.0]), device=device).dtype is gpugrad.float64
    assert gpugrad.tensor(np.array([1, 2], dtype=np.int32), device=device).dtype is gpugrad.int32


@pytest.mark.parametrize("data", [[1, 2], [1.5, -2.5], [True, False]], ids=str)
@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_tensor_with_explicit_dtype_like_torch(data, dtype, device):
    if dtype == "uint8" and min(data) < 0:
        data = [abs(v) for v in data]  # negative -> uint8 is not portable (C UB for floats)
    torch = torch_or_skip()
    t = gpugrad.tensor(data, dtype=getattr(gpugrad, dtype), device=device)
    r = torch.tensor(data, dtype=getattr(torch, dtype))
    assert t.dtype is getattr(gpugrad, dtype)
    assert t.tolist() == r.tolist()


@pytest.mark.parametrize("pytype,expected", [(float, "float64"), (int, "int64"), (bool, "bool")])
def test_python_types_as_dtype_like_torch(pytype, expected, device):
    # torch maps the Python type float to float64 (not to the default float32).
    t = gpugrad.tensor([1, 0], dtype=pytype, device=device)
    assert t.dtype.name == expected
    assert gpugrad.zeros(2, dtype=pytype, device=device).dtype.name == expected
    assert gpugrad.ones(2, device=device).to(pytype).dtype.name == expected
    torch = torch_or_skip()
    assert tname(torch.tensor([1, 0], dtype=pytype).dtype) == expected
    assert tname(torch.zeros(2, dtype=pytype).dtype) == expected


def test_tensor_copies_its_data(device):
    a = np.array([1.0, 2.0, 3.0])
    t = gpugrad.tensor(a, device=device)
    a[0] = 100.0
    assert t.tolist() == [1.0, 2.0, 3.0]
    src = gpugrad.tensor([1.0, 2.0], device=device)
    t2 = gpugrad.tensor(src, device=device)
    t2.add_(1)
    assert src.tolist() == [1.0, 2.0]


def test_tensor_of_tensors(device):
    parts = [gpugrad.tensor(1.0, device=device), gpugrad.tensor(2.0, device=device)]
    t = gpugrad.tensor(parts, device=device)
    assert t.tolist() == [1.0, 2.0] and t.dtype is gpugrad.float32


def test_tensor_requires_grad(device):
    t = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    assert t.requires_grad and t.is_leaf and t.grad is None
    with pytest.raises(RuntimeError, match="floating point"):
        gpugrad.tensor([1, 2], requires_grad=True, device=device)


@pytest.mark.parametrize("bad,err,torch_err", [
    ([[1, 2], [3]], ValueError, ValueError), ("abc", TypeError, TypeError),
    ([1, "a"], (TypeError, ValueError), (TypeError, ValueError)),
    (object(), TypeError, RuntimeError),  # gpugrad: TypeError, the type is the problem
], ids=["ragged", "str", "mixed-str", "object"])
def test_tensor_bad_data_raises(bad, err, torch_err, device):
    with pytest.raises(err):
        gpugrad.tensor(bad, device=device)
    torch = torch_or_skip()
    with pytest.raises(torch_err):
        torch.tensor(bad)


def test_as_tensor_shares_memory_with_numpy(device):
    a = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    t = gpugrad.as_tensor(a, device=device)
    assert t.dtype is gpugrad.float32 and t.tolist() == [1.0, 2.0, 3.0]
    a[0] = 7.0
    if on_cpu(device):
        assert t.tolist()[0] == 7.0  # same memory
    else:
        assert t.tolist()[0] == 1.0  # copied to the GPU
    # a dtype change always copies
    b = np.array([1.0, 2.0])
    t64 = gpugrad.as_tensor(b, dtype=gpugrad.float32, device=device)
    b[0] = 9.0
    assert t64.dtype is gpugrad.float32 and t64.tolist() == [1.0, 2.0]


def test_as_tensor_of_a_tensor_is_the_tensor(device):
    t = gpugrad.ones(2, device=device)
    assert gpugrad.as_tensor(t) is t
    d = gpugrad.as_tensor(t, dtype=gpugrad.float64)
    assert d.dtype is gpugrad.float64 and d is not t
    assert gpugrad.as_tensor([1, 2], device=device).dtype is gpugrad.int64


def test_from_numpy_shares_memory_both_ways():
    a = np.arange(6, dtype=np.float64).reshape(2, 3)
    t = gpugrad.from_numpy(a)
    assert t.device == gpugrad.device("cpu")
    assert t.dtype is gpugrad.float64 and t.shape == (2, 3)
    a[0, 0] = -1.0
    assert t.tolist()[0][0] == -1.0
    t.mul_(2)
    assert a[1, 2] == 10.0
    assert t.numpy() is a or np.shares_memory(t.numpy(), a)


@pytest.mark.parametrize("np_dtype", [np.float16, np.float32, np.float64, np.int8, np.int16,
                                      np.int32, np.int64, np.uint8, np.bool_])
def test_from_numpy_keeps_dtype(np_dtype):
    a = np.zeros(3, dtype=np_dtype)
    t = gpugrad.from_numpy(a)
    assert t.dtype.np == np.dtype(np_dtype)
    torch = torch_or_skip()
    assert tname(torch.from_numpy(a).dtype) == t.dtype.name


def test_from_numpy_errors():
    with pytest.raises(TypeError, match="np.ndarray"):
        gpugrad.from_numpy([1, 2])
    with pytest.raises(TypeError, match="complex"):  # gpugrad has no complex dtypes yet
        gpugrad.from_numpy(np.zeros(2, dtype=np.complex64))


# ---- zeros / ones / full / empty with every way of giving a size ----------------------------
SIZE_FORMS = [
    pytest.param(lambda f, **kw: f(2, 3, **kw), id="varargs"),
    pytest.param(lambda f, **kw: f((2, 3), **kw), id="tuple"),
    pytest.param(lambda f, **kw: f([2, 3], **kw), id="list"),
    pytest.param(lambda f, **kw: f(size=(2, 3), **kw), id="size-kw"),
    pytest.param(lambda f, **kw: f(gpugrad.Size([2, 3]), **kw), id="Size"),
]


@pytest.mark.parametrize("form", SIZE_FORMS)
@pytest.mark.parametrize("name,value", [("zeros", 0.0), ("ones", 1.0), ("empty", None),
                                        ("rand", None), ("randn", None)])
def test_size_forms(form, name, value, device):
    t = form(getattr(gpugrad, name), device=device)
    assert t.shape == (2, 3) and t.shape == gpugrad.Size([2, 3])
    assert t.dtype is gpugrad.float32
    assert t.device == gpugrad.device(device)
    if value is not None:
        assert (to_numpy(t) == value).all()
    if name == "rand":
        v = to_numpy(t)
        assert ((v >= 0) & (v < 1)).all()


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_zero_dim_and_empty_sizes(name, device):
    f = getattr(gpugrad, name)
    assert f((), device=device).shape == ()
    assert f(size=(), device=device).dim() == 0
    assert f(0, device=device).shape == (0,)
    assert f(3, 0, device=device).numel() == 0


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_bad_sizes_raise(name, device):
    f = getattr(gpugrad, name)
    with pytest.raises(RuntimeError, match="negative dimension"):
        f(2, -1, device=device)
    with pytest.raises(TypeError, match="size"):
        f(2.5, device=device)
    with pytest.raises(TypeError, match="size"):
        f(2, size=(2,), device=device)


@pytest.mark.parametrize("dtype", DTYPE_NAMES)
def test_zeros_ones_dtypes(dtype, device):
    dt = getattr(gpugrad, dtype)
    z = gpugrad.zeros(2, dtype=dt, device=device)
    o = gpugrad.ones((2,), dtype=dt, device=device)
    assert z.dtype is dt and o.dtype is dt
    assert (to_numpy(z) == 0).all() and (to_numpy(o) == 1).all()


def test_factories_requires_grad(device):
    for f in (gpugrad.zeros, gpugrad.ones, gpugrad.empty, gpugrad.rand, gpugrad.randn):
        t = f(2, requires_grad=True, device=device)
        assert t.requires_grad and t.is_leaf


@pytest.mark.parametrize("fill", [7, 1.5, True, -2, 0.0], ids=repr)
@pytest.mark.parametrize("size", [(2, 3), [4], 3, ()], ids=str)
def test_full_like_torch(fill, size, device):
    t = gpugrad.full(size, fill, device=device)
    torch = torch_or_skip()
    r = torch.full(size if not isinstance(size, int) else (size,), fill)
    assert tname(t.dtype) == tname(r.dtype)
    assert t.tolist() == r.tolist()


def test_full_with_dtype(device):
    t = gpugrad.full((2,), 2.7, dtype=gpugrad.int32, device=device)
    assert t.dtype is gpugrad.int32 and t.tolist() == [2, 2]
    assert gpugrad.full((1,), gpugrad.tensor(3.0), device=device).tolist() == [3.0]


LIKE_FACTORIES = {
    "zeros_like": lambda m, x, **kw: m.zeros_like(x, **kw),
    "ones_like": lambda m, x, **kw: m.ones_like(x, **kw),
    "empty_like": lambda m, x, **kw: m.empty_like(x, **kw),
    "full_like": lambda m, x, **kw: m.full_like(x, 2.5, **kw),
    "rand_like": lambda m, x, **kw: m.rand_like(x, **kw),
    "randn_like": lambda m, x, **kw: m.randn_like(x, **kw),
}


@pytest.mark.parametrize("name", list(LIKE_FACTORIES))
@pytest.mark.parametrize("src_dtype", ["float32", "float64", "float16"])
def test_like_factories_keep_shape_dtype_device(name, src_dtype, device):
    f = LIKE_FACTORIES[name]
    x = gpugrad.ones(2, 3, dtype=getattr(gpugrad, src_dtype), device=device,
                     requires_grad=True)
    t = f(gpugrad, x)
    assert t.shape == (2, 3) and t.dtype is x.dtype and t.device == x.device
    assert not t.requires_grad and t.is_leaf  # *_like never copies requires_grad
    t2 = f(gpugrad, x, dtype=gpugrad.float64, requires_grad=True)
    assert t2.dtype is gpugrad.float64 and t2.requires_grad


def test_like_factories_values_like_torch(device):
    torch = torch_or_skip()
    for dt in ("int32", "int64", "bool", "float32"):
        x = gpugrad.ones(2, 2, dtype=getattr(gpugrad, dt), device=device)
        r = torch.ones(2, 2, dtype=getattr(torch, dt))
        for name in ("zeros_like", "ones_like", "full_like"):
            a = LIKE_FACTORIES[name](gpugrad, x)
            b = LIKE_FACTORIES[name](torch, r)
            assert tname(a.dtype) == tname(b.dtype), (name, dt)
            assert a.tolist() == b.tolist(), (name, dt)


def test_randint_like(device):
    x = gpugrad.zeros(50, dtype=gpugrad.int32, device=device)
    t = gpugrad.randint_like(x, 3)
    assert t.dtype is gpugrad.int32 and t.shape == (50,)
    v = to_numpy(t)
    assert v.min() >= 0 and v.max() < 3
    v = to_numpy(gpugrad.randint_like(x, 5, 8))
    assert v.min() >= 5 and v.max() < 8


# ---- arange / linspace / eye ---------------------------------------------------------------
ARANGE_CASES = [
    ((5,), {}), ((0,), {}), ((2, 7), {}), ((0, 10, 3), {}), ((5, 0, -1), {}), ((10, 0, -3), {}),
    ((-3, 3, 2), {}), ((1, -1, -0.5), {}), ((0.0, 1.0, 0.25), {}), ((0, 1, 0.1), {}),
    ((1, 2.5, 0.3), {}), ((3.5,), {}), ((4.0,), {}), ((0, 5), {"dtype": "float64"}),
    ((0, 5, 2), {"dtype": "int32"}), ((0.5, 4), {"dtype": "int64"}), ((2, -2.5, -1.5), {}),
    ((-1.5, 2), {}),
]


@pytest.mark.parametrize("args,kw", ARANGE_CASES, ids=[str(c) for c in ARANGE_CASES])
def test_arange_like_torch(args, kw, device):
    torch = torch_or_skip()
    t = gpugrad.arange(*args, device=device,
                       **{k: getattr(gpugrad, v) for k, v in kw.items()})
    r = torch.arange(*args, **{k: getattr(torch, v) for k, v in kw.items()})
    assert tname(t.dtype) == tname(r.dtype)
    assert t.shape == tuple(r.shape)
    assert_close(t, r, rtol=1e-6, atol=1e-6)


def test_arange_dtype_inference_literal(device):
    assert gpugrad.arange(5, device=device).dtype is gpugrad.int64
    assert gpugrad.arange(5, device=device).tolist() == [0, 1, 2, 3, 4]
    assert gpugrad.arange(1.0, 4, device=device).dtype is gpugrad.float32
    assert gpugrad.arange(0, 1, 0.5, device=device).tolist() == [0.0, 0.5]
    assert gpugrad.arange(3, 0, -1, device=device).tolist() == [3, 2, 1]
    assert gpugrad.arange(gpugrad.tensor(3), device=device).tolist() == [0, 1, 2]
    t = gpugrad.arange(3.0, requires_grad=True, device=device)
    assert t.requires_grad and t.is_leaf


@pytest.mark.parametrize("args,match", [((0, 5, 0), "nonzero"), ((5, 0), "step sign"),
                                        ((0, 5, -1), "step sign")])
def test_arange_errors(args, match, device):
    with pytest.raises(RuntimeError, match=match):
        gpugrad.arange(*args, device=device)
    torch = torch_or_skip()
    with pytest.raises(RuntimeError):
        torch.arange(*args)


LINSPACE_CASES = [((0, 1, 5), {}), ((3, 10), {"steps": 5}), ((-1, 1, 1), {}), ((-1, 1, 0), {}),
                  ((0, 10, 5), {"dtype": "int64"}), ((1.5, -2.5, 9), {}),
                  ((0, 1, 4), {"dtype": "float64"})]


@pytest.mark.parametrize("args,kw", LINSPACE_CASES, ids=[str(c) for c in LINSPACE_CASES])
def test_linspace_like_torch(args, kw, device):
    torch = torch_or_skip()
    conv = lambda m: {k: (getattr(m, v) if k == "dtype" else v) for k, v in kw.items()}  # noqa
    t = gpugrad.linspace(*args, device=device, **conv(gpugrad))
    r = torch.linspace(*args, **conv(torch))
    assert tname(t.dtype) == tname(r.dtype)
    assert_close(t, r, rtol=1e-6, atol=1e-6)


def test_linspace_literal(device):
    t = gpugrad.linspace(0, 1, 5, device=device)
    assert t.dtype is gpugrad.float32
    assert t.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]


@pytest.mark.parametrize("args,kw", [((3,), {}), ((2, 3), {}), ((3, 2), {}), ((1,), {}),
                                     ((0,), {}), ((2,), {"dtype": "int64"}),
                                     ((2, 2), {"dtype": "bool"})], ids=str)
def test_eye(args, kw, device):
    dt = {k: getattr(gpugrad, v) for k, v in kw.items()}
    t = gpugrad.eye(*args, device=device, **dt)
    n = args[0]
    m = args[1] if len(args) > 1 else n
    assert t.shape == (n, m)
    assert t.dtype is dt.get("dtype", gpugrad.float32)
    assert (to_numpy(t) == np.eye(n, m)).all()
    torch = torch_or_skip()
    r = torch.eye(*args, **{k: getattr(torch, v) for k, v in kw.items()})
    assert t.tolist() == r.tolist() and tname(t.dtype) == tname(r.dtype)


# ---- random ----------------------------------------------------------------------------------
def test_rand_randn_dtypes_and_ranges(device):
    gpugrad.manual_seed(0)
    u = gpugrad.rand(1000, device=device)
    n = gpugrad.randn(1000, device=device)
    assert u.dtype is gpugrad.float32 and n.dtype is gpugrad.float32
    uv, nv = to_numpy(u), to_numpy(n)
    assert uv.min() >= 0 and uv.max() < 1 and 0.4 < uv.mean() < 0.6
    assert abs(nv.mean()) < 0.2 and 0.8 < nv.std() < 1.2
    for dt in (gpugrad.float16, gpugrad.float64):
        assert gpugrad.rand(3, dtype=dt, device=device).dtype is dt
        assert gpugrad.randn(3, dtype=dt, device=device).dtype is dt
    with pytest.raises(RuntimeError, match="floating point"):
        gpugrad.rand(2, dtype=gpugrad.int64, device=device)
    with pytest.raises(RuntimeError, match="floating point"):
        gpugrad.randn(2, dtype=gpugrad.int32, device=device)


@pytest.mark.parametrize("call,low,high,shape", [
    (lambda **kw: gpugrad.randint(5, (200,), **kw), 0, 5, (200,)),
    (lambda **kw: gpugrad.randint(3, 6, (20, 10), **kw), 3, 6, (20, 10)),
    (lambda **kw: gpugrad.randint(-2, 2, [50], **kw), -2, 2, (50,)),
    (lambda **kw: gpugrad.randint(4, size=(100,), **kw), 0, 4, (100,)),
    (lambda **kw: gpugrad.randint(1, 3, size=(2, 50), **kw), 1, 3, (2, 50)),
    (lambda **kw: gpugrad.randint(0, 1, (3,), **kw), 0, 1, (3,)),
], ids=["high-size", "low-high-size", "negative", "high-size-kw", "low-high-size-kw", "single"])
def test_randint_signatures(call, low, high, shape, device):
    gpugrad.manual_seed(1)
    t = call(device=device)
    assert t.dtype is gpugrad.int64 and t.shape == shape
    v = to_numpy(t)
    assert v.min() >= low and v.max() < high
    if v.size >= 100:
        assert set(np.unique(v)) == set(range(low, high))  # every value shows up
    assert call(device=device, dtype=gpugrad.int32).dtype is gpugrad.int32


def test_randint_errors(device):
    with pytest.raises(TypeError, match="size"):
        gpugrad.randint(3, device=device)
    with pytest.raises(RuntimeError, match="from"):
        gpugrad.randint(3, 1, (2,), device=device)
    with pytest.raises(RuntimeError, match="from"):
        gpugrad.randint(0, (2,), device=device)


@pytest.mark.parametrize("name,args", [("rand", (3, 4)), ("randn", ((3, 4),)),
                                       ("randint", (0, 100, (3, 4))), ("randperm", (12,))])
def test_manual_seed_reproducible(name, args, device):
    f = getattr(gpugrad, name)
    gpugrad.manual_seed(1234)
    a = to_numpy(f(*args, device=device))
    b = to_numpy(f(*args, device=device))
    gpugrad.manual_seed(1234)
    a2 = to_numpy(f(*args, device=device))
    b2 = to_numpy(f(*args, device=device))
    gpugrad.manual_seed(4321)
    c = to_numpy(f(*args, device=device))
    np.testing.assert_array_equal(a, a2)  # same seed, same values
    np.testing.assert_array_equal(b, b2)  # ... and the same stream afterwards
    assert not np.array_equal(a, b)  # the stream advances
    assert not np.array_equal(a, c)  # another seed, other values


def test_manual_seed_returns_generator_and_initial_seed():
    g = gpugrad.manual_seed(77)
    assert g.initial_seed() == 77 and gpugrad.initial_seed() == 77
    gpugrad.manual_seed(0)


def test_randperm(device):
    gpugrad.manual_seed(3)
    p = gpugrad.randperm(20, device=device)
    assert p.dtype is gpugrad.int64
    assert sorted(p.tolist()) == list(range(20))


# ---- legacy constructors ------------------------------------------------------------------
def test_legacy_tensor_from_data(device):
    t = gpugrad.Tensor([2])
    assert t.dtype is gpugrad.float32 and t.tolist() == [2.0] and t.shape == (1,)
    assert gpugrad.Tensor([2, 3]).tolist() == [2.0, 3.0]
    assert gpugrad.Tensor((2, 3)).tolist() == [2.0, 3.0]  # a tuple is data, as in torch
    assert gpugrad.Tensor(np.array([1, 2])).dtype is gpugrad.float32
    assert gpugrad.Tensor([1.5], device=device).device == gpugrad.device(device)


def test_legacy_tensor_from_shape(device):
    t = gpugrad.Tensor(2, 3)
    assert t.shape == (2, 3) and t.dtype is gpugrad.float32
    assert gpugrad.Tensor(4).shape == (4,)
    assert gpugrad.Tensor(gpugrad.Size([2, 3])).shape == (2, 3)  # a Size is a shape
    assert gpugrad.Tensor(2, 3, device=device).device == gpugrad.device(device)
    e = gpugrad.Tensor()
    assert e.shape == (0,) and e.dtype is gpugrad.float32
    with pytest.raises(RuntimeError, match="negative dimension"):
        gpugrad.Tensor(-1)


def test_legacy_constructors_like_torch():
    torch = torch_or_skip()
    for call in (lambda m: m.Tensor([2]), lambda m: m.Tensor(), lambda m: m.Tensor([[1, 2]]),
                 lambda m: m.FloatTensor([[1, 2], [3, 4]]), lambda m: m.LongTensor([1, 2]),
                 lambda m: m.DoubleTensor([1, 2]), lambda m: m.IntTensor([1.5, -2.5]),
                 lambda m: m.BoolTensor([1, 0]), lambda m: m.ByteTensor([1, 2]),
                 lambda m: m.HalfTensor([0.5])):
        a, b = call(gpugrad), call(torch)
        assert tname(a.dtype) == tname(b.dtype)
        assert a.tolist() == b.tolist()
        assert strip_device(repr(a), a.device) == repr(b).replace("torch.", "gpugrad.")
    for call in (lambda m: m.Tensor(2, 3), lambda m: m.LongTensor(3),
                 lambda m: m.Tensor(m.Size([2, 3]))):
        a, b = call(gpugrad), call(torch)
        assert tuple(a.shape) == tuple(b.shape) and tname(a.dtype) == tname(b.dtype)


def test_float_tensor_and_isinstance():
    t = gpugrad.FloatTensor([[1, 2], [3, 4]])
    assert t.dtype is gpugrad.float32 and t.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert isinstance(t, gpugrad.Tensor)
    assert isinstance(t, gpugrad.FloatTensor)
    assert not isinstance(t, gpugrad.LongTensor)
    assert isinstance(gpugrad.tensor([1]), gpugrad.LongTensor)
    assert isinstance(gpugrad.tensor([1.0], dtype=gpugrad.float64), gpugrad.DoubleTensor)
    assert not isinstance(gpugrad.tensor([1.0]), gpugrad.DoubleTensor)
    assert not isinstance([1.0], gpugrad.FloatTensor)
    assert type(t) is gpugrad.Tensor
    assert gpugrad.is_tensor(t) and not gpugrad.is_tensor(np.ones(1))


def test_new_constructors(device):
    x = gpugrad.ones(2, dtype=gpugrad.float64, device=device)
    assert x.new_zeros(3).dtype is gpugrad.float64 and x.new_zeros(3).tolist() == [0, 0, 0]
    assert x.new_ones((2, 2)).shape == (2, 2)
    assert x.new_full((2,), 4).tolist() == [4.0, 4.0]
    assert x.new_empty(5).shape == (5,)
    n = x.new_tensor([1, 2])
    assert n.dtype is gpugrad.float64 and n.device == x.device
    assert x.new([1, 2]).dtype is gpugrad.float64
    assert x.new(2, 3).shape == (2, 3)


# ============================================================================================
# dtypes
# ============================================================================================
@pytest.mark.parametrize("alias,name", [("float16", "float16"), ("half", "float16"),
                                        ("float32", "float32"), ("float", "float32"),
                                        ("float64", "float64"), ("double", "float64"),
                                        ("int16", "int16"), ("short", "int16"),
                                        ("int32", "int32"), ("int", "int32"),
                                        ("int64", "int64"), ("long", "int64"),
                                        ("bool", "bool"), ("uint8", "uint8"), ("int8", "int8")])
def test_dtype_aliases(alias, name):
    d = getattr(gpugrad, alias)
    assert d is getattr(gpugrad, name)
    assert d.name == name and repr(d) == f"gpugrad.{name}" and str(d) == f"gpugrad.{name}"
    assert isinstance(d, gpugrad.dtype)
    torch = torch_or_skip()
    assert str(getattr(torch, alias)) == f"torch.{name}"
    t = getattr(torch, alias)
    assert d.is_floating_point == t.is_floating_point
    assert d.is_signed == t.is_signed
    assert d.itemsize == t.itemsize


def test_dtype_equality_and_pickle():
    assert gpugrad.float32 == gpugrad.float and gpugrad.float32 != gpugrad.float64
    assert pickle.loads(pickle.dumps(gpugrad.float64)) is gpugrad.float64
    assert len({gpugrad.float, gpugrad.float32, gpugrad.double}) == 2


def test_default_dtype():
    assert gpugrad.get_default_dtype() is gpugrad.float32
    gpugrad.set_default_dtype(gpugrad.float64)
    try:
        assert gpugrad.tensor(1.5).dtype is gpugrad.float64
        assert gpugrad.zeros(2).dtype is gpugrad.float64
        assert gpugrad.tensor(1).dtype is gpugrad.int64
    finally:
        gpugrad.set_default_dtype(gpugrad.float32)
    assert gpugrad.tensor(1.5).dtype is gpugrad.float32
    with pytest.raises(TypeError, match="floating"):
        gpugrad.set_default_dtype(gpugrad.int64)


@pytest.mark.parametrize("a,b", list(itertools.product(DTYPE_NAMES, DTYPE_NAMES)))
def test_promote_types_like_torch(a, b):
    torch = torch_or_skip()
    got = gpugrad.promote_types(getattr(gpugrad, a), getattr(gpugrad, b))
    want = torch.promote_types(getattr(torch, a), getattr(torch, b))
    assert got.name == tname(want)


def test_promote_types_literal():
    assert gpugrad.promote_types(gpugrad.int64, gpugrad.float16) is gpugrad.float16
    assert gpugrad.promote_types(gpugrad.uint8, gpugrad.int8) is gpugrad.int16
    assert gpugrad.promote_types(gpugrad.bool, gpugrad.int32) is gpugrad.int32
    assert gpugrad.promote_types(gpugrad.float16, gpugrad.float32) is gpugrad.float32


def _operand(mod, kind, dtype):
    if kind == "dim":
        return mod.ones(2, dtype=getattr(mod, dtype))
    if kind == "zero":
        return mod.ones((), dtype=getattr(mod, dtype))
    return {"bool": True, "int": 3, "float": 2.5}[dtype]


OPERANDS = ([("dim", d) for d in DTYPE_NAMES] + [("zero", d) for d in DTYPE_NAMES]
            + [("scalar", s) for s in ("bool", "int", "float")])


@pytest.mark.parametrize("a", OPERANDS, ids=lambda o: f"{o[0]}-{o[1]}")
def test_result_type_like_torch(a):
    torch = torch_or_skip()
    for b in OPERANDS:
        if a[0] == "scalar" and b[0] == "scalar":
            continue  # torch.result_type needs a tensor
        got = gpugrad.result_type(_operand(gpugrad, *a), _operand(gpugrad, *b))
        want = torch.result_type(_operand(torch, *a), _operand(torch, *b))
        assert got.name == tname(want), (a, b)


def test_result_type_literal():
    f16 = gpugrad.ones(2, dtype=gpugrad.float16)
    assert gpugrad.result_type(f16, 2.5) is gpugrad.float16  # scalar never widens
    assert gpugrad.result_type(gpugrad.ones(2, dtype=gpugrad.int32), 2.5) is gpugrad.float32
    assert gpugrad.result_type(gpugrad.ones(2, dtype=gpugrad.int32),
                               gpugrad.tensor(5)) is gpugrad.int32  # 0-d of same category
    assert gpugrad.result_type(gpugrad.ones(2, dtype=gpugrad.int32),
                               gpugrad.tensor(5.0, dtype=gpugrad.float64)) is gpugrad.float64


def test_binary_op_result_dtype_like_torch(device):
    torch = torch_or_skip()
    for a, b in itertools.product(["int32", "int64", "float16", "float32", "float64", "bool"],
                                  repeat=2):
        x = gpugrad.ones(2, dtype=getattr(gpugrad, a), device=device)
        y = gpugrad.ones(2, dtype=getattr(gpugrad, b), device=device)
        tx, ty = torch.ones(2, dtype=getattr(torch, a)), torch.ones(2, dtype=getattr(torch, b))
        assert tname((x * y).dtype) == tname((tx * ty).dtype), (a, b)
        assert tname((x + 1.5).dtype) == tname((tx + 1.5).dtype), a


# ============================================================================================
# attributes
# ============================================================================================
def test_shape_size_dim_numel(device):
    t = gpugrad.zeros(2, 3, 4, device=device)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, gpugrad.Size)
    assert t.size() == gpugrad.Size([2, 3, 4]) and isinstance(t.size(), tuple)
    assert repr(t.size()) == "gpugrad.Size([2, 3, 4])"
    assert t.size(0) == 2 and t.size(-1) == 4 and t.size(1) == 3
    assert t.dim() == 3 and t.ndim == 3 and t.ndimension() == 3
    assert t.numel() == 24 and t.nelement() == 24 and gpugrad.numel(t) == 24
    assert t.shape.numel() == 24
    with pytest.raises(IndexError, match="Dimension out of range"):
        t.size(3)
    with pytest.raises(IndexError, match="Dimension out of range"):
        t.size(-4)
    s = gpugrad.tensor(1.0, device=device)
    assert s.shape == () and s.dim() == 0 and s.numel() == 1
    assert s.size() == gpugrad.Size([])


def test_size_matches_torch():
    torch = torch_or_skip()
    assert repr(gpugrad.zeros(2, 3).shape) == repr(torch.zeros(2, 3).shape).replace(
        "torch.", "gpugrad.")
    assert repr(gpugrad.tensor(1.0).shape) == repr(torch.tensor(1.0).shape).replace(
        "torch.", "gpugrad.")
    s = gpugrad.Size([2, 3, 4])
    assert s[1:] == (3, 4) and isinstance(s[1:], gpugrad.Size)
    assert isinstance(s + (5,), gpugrad.Size) and s + (5,) == (2, 3, 4, 5)


def test_dtype_device_attributes(device):
    t = gpugrad.ones(2, dtype=gpugrad.float64, device=device)
    assert t.dtype is gpugrad.float64
    assert t.device == gpugrad.device(device)
    assert isinstance(t.device, gpugrad.device)
    assert t.is_cuda == (not on_cpu(device))
    assert t.is_floating_point() and not gpugrad.ones(1, dtype=gpugrad.int64).is_floating_point()
    assert t.element_size() == 8


def test_T(device):
    m = gpugrad.tensor([[1.0, 2.0, 3.0]], device=device)
    assert m.T.shape == (3, 1) and m.T.tolist() == [[1.0], [2.0], [3.0]]
    v = gpugrad.tensor([1.0, 2.0], device=device)
    assert v.T.tolist() == [1.0, 2.0]
    x = gpugrad.ones(2, 3, requires_grad=True, device=device)
    (x.T * gpugrad.arange(3.0, device=device).reshape(3, 1)).sum().backward()
    assert x.grad.tolist() == [[0.0, 1.0, 2.0], [0.0, 1.0, 2.0]]


def test_item(device):
    assert gpugrad.tensor(2.5, device=device).item() == 2.5
    assert isinstance(gpugrad.tensor(2.5, device=device).item(), float)
    v = gpugrad.tensor([[3]], device=device).item()
    assert v == 3 and isinstance(v, int)
    b = gpugrad.tensor([True], device=device).item()
    assert b is True
    assert gpugrad.tensor(1.5, requires_grad=True, device=device).item() == 1.5
    with pytest.raises(RuntimeError, match="2 elements cannot be converted to Scalar"):
        gpugrad.tensor([1.0, 2.0], device=device).item()
    with pytest.raises(RuntimeError, match="0 elements"):
        gpugrad.zeros(0, device=device).item()


def test_tolist(device):
    torch = torch_or_skip()
    for data in ([[1, 2], [3, 4]], 2.5, [[1.5], [-2.0]], [True, False], [], 7):
        a = gpugrad.tensor(data, device=device).tolist()
        b = torch.tensor(data).tolist()
        assert a == b and type(a) is type(b)
        if isinstance(a, list) and a and not isinstance(a[0], list):
            assert type(a[0]) is type(b[0])


def test_numpy_shares_memory(device):
    t = gpugrad.tensor([1.0, 2.0, 3.0], device=device)
    if not on_cpu(device):
        with pytest.raises(TypeError, match=r"Tensor\.cpu\(\)"):
            t.numpy()
        n = t.cpu().numpy()
        assert n.tolist() == [1.0, 2.0, 3.0]
        return
    n = t.numpy()
    assert isinstance(n, np.ndarray) and n.dtype == np.float32
    n[0] = 10.0
    assert t.tolist()[0] == 10.0
    t.add_(1)
    assert n[1] == 3.0
    assert np.asarray(t).tolist() == [11.0, 3.0, 4.0]


def test_numpy_requires_grad_error(device):
    t = gpugrad.ones(2, requires_grad=True, device=device)
    with pytest.raises(RuntimeError) as info:
        t.numpy()
    msg = "Can't call numpy() on Tensor that requires grad. Use tensor.detach().numpy() instead."
    assert str(info.value) == msg
    torch = torch_or_skip()
    with pytest.raises(RuntimeError) as tinfo:
        torch.ones(2, requires_grad=True).numpy()
    assert str(tinfo.value) == msg  # the same text as torch's
    assert t.detach().cpu().numpy().tolist() == [1.0, 1.0]
    assert t.numpy(force=True).tolist() == [1.0, 1.0]


def test_data_get(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    d = x.data
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    d.mul_(3)  # writes through, untracked
    assert x.tolist() == [3.0, 6.0] and x.requires_grad and x.is_leaf
    y = x * 2
    assert y.data.grad_fn is None and y.data.tolist() == [6.0, 12.0]


def test_data_set(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    x.data = gpugrad.tensor([5.0, 6.0, 7.0], device=device)  # torch allows a new shape
    assert x.tolist() == [5.0, 6.0, 7.0] and x.requires_grad and x.shape == (3,)
    (x * x).sum().backward()
    assert x.grad.tolist() == [10.0, 12.0, 14.0]
    with pytest.raises(TypeError, match="Tensor"):
        x.data = [1.0, 2.0]
    with pytest.raises(RuntimeError, match="floating point"):
        x.data = gpugrad.tensor([1, 2], device=device)
    assert x.tolist() == [5.0, 6.0, 7.0]  # failed sets leave it unchanged
    n = gpugrad.tensor([1.0], device=device)
    n.data = gpugrad.tensor([1, 2], device=device)  # fine without requires_grad
    assert n.dtype is gpugrad.int64


def test_grad_get_set(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    assert x.grad is None
    x.grad = gpugrad.tensor([0.5, 0.25], device=device)
    assert x.grad.tolist() == [0.5, 0.25]
    (x * 2).sum().backward()  # accumulates onto the assigned grad
    assert x.grad.tolist() == [2.5, 2.25]
    x.grad = None
    assert x.grad is None
    x.grad = gpugrad.zeros(2, device=device)
    del x.grad
    assert x.grad is None


def test_grad_set_errors(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    with pytest.raises(RuntimeError, match="size"):
        x.grad = gpugrad.ones(3, device=device)
    with pytest.raises(RuntimeError, match="type"):
        x.grad = gpugrad.ones(2, dtype=gpugrad.float64, device=device)
    with pytest.raises(TypeError, match="Tensor or None"):
        x.grad = [1.0, 1.0]
    assert x.grad is None  # nothing half-set
    torch = torch_or_skip()
    tx = torch.ones(2, requires_grad=True)
    for bad, err in ((torch.ones(3), RuntimeError), (torch.ones(2, dtype=torch.float64),
                                                     RuntimeError), ([1.0, 1.0], TypeError)):
        with pytest.raises(err):
            tx.grad = bad


def test_non_leaf_grad_warns(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    y = x * 2
    with pytest.warns(UserWarning, match="not a leaf"):
        assert y.grad is None
    y.retain_grad()
    y.sum().backward()
    assert y.grad.tolist() == [1.0, 1.0]


def test_requires_grad_property_and_method(device):
    x = gpugrad.ones(2, device=device)
    assert x.requires_grad is False
    assert x.requires_grad_() is x and x.requires_grad is True
    x.requires_grad_(False)
    assert not x.requires_grad
    x.requires_grad = True
    assert x.requires_grad and x.is_leaf
    for dt in (gpugrad.float16, gpugrad.float64):
        assert gpugrad.ones(1, dtype=dt, device=device).requires_grad_().requires_grad


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool", "uint8"])
def test_requires_grad_on_non_float_raises(dtype, device):
    t = gpugrad.ones(2, dtype=getattr(gpugrad, dtype), device=device)
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require "
                                           "gradients"):
        t.requires_grad_()
    with pytest.raises(RuntimeError, match="floating point"):
        t.requires_grad = True
    assert not t.requires_grad
    t.requires_grad_(False)  # turning it off is always fine
    torch = torch_or_skip()
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ones(2, dtype=getattr(torch, dtype)).requires_grad_()


def test_requires_grad_on_non_leaf(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    y = x * 2
    assert y.requires_grad_() is y  # setting True on a non-leaf is a no-op
    with pytest.raises(RuntimeError, match="only change requires_grad flags of leaf variables"):
        y.requires_grad_(False)
    with pytest.raises(RuntimeError, match="leaf"):
        y.requires_grad = False
    assert y.requires_grad
    torch = torch_or_skip()
    with pytest.raises(RuntimeError, match="leaf variables"):
        (torch.ones(2, requires_grad=True) * 2).requires_grad_(False)


def test_is_leaf_and_grad_fn(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    c = gpugrad.ones(2, device=device)
    assert x.is_leaf and x.grad_fn is None and c.is_leaf
    y = x + c
    assert not y.is_leaf and y.requires_grad
    assert y.grad_fn.name() == "AddBackward0"
    assert type(y.grad_fn).__name__ == "AddBackward0"
    acc, nr = y.grad_fn.next_functions[0]
    assert nr == 0 and acc.variable is x  # x's AccumulateGrad
    assert y.grad_fn.next_functions[1][0] is None  # c needs no gradient
    z = c * 2
    assert z.is_leaf and z.grad_fn is None and not z.requires_grad
    with gpugrad.no_grad():
        w = x * 2
    assert w.is_leaf and not w.requires_grad
    assert (x * 2).grad_fn.name() == "MulBackward0"
    assert x.sum().grad_fn.name() == "SumBackward0"


def test_detach(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.is_leaf and d.grad_fn is None
    assert d.tolist() == [2.0, 4.0]
    d.zero_()  # shares memory with y
    assert y.tolist() == [0.0, 0.0]
    xd = x.detach()
    xd.add_(1)
    assert x.tolist() == [2.0, 3.0]
    # the detached value is a constant in later graphs
    z = (x * x.detach()).sum()
    z.backward()
    assert x.grad.tolist() == [2.0, 3.0]


def test_detach_in_place(device):
    x = gpugrad.ones(2, requires_grad=True, device=device)
    y = x * 3
    assert y.detach_() is y
    assert not y.requires_grad and y.is_leaf and y.grad_fn is None
    assert y.tolist() == [3.0, 3.0]
    x.detach_()
    assert not x.requires_grad


def test_clone_grad_flows(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    c = x.clone()
    assert c.grad_fn.name() == "CloneBackward0" and not c.is_leaf
    c2 = c.detach()
    c2.zero_()  # a clone owns its memory
    assert x.tolist() == [1.0, 2.0]
    (x.clone() * gpugrad.tensor([3.0, 4.0], device=device)).sum().backward()
    assert x.grad.tolist() == [3.0, 4.0]
    n = gpugrad.ones(2, device=device).clone()
    assert n.grad_fn is None and not n.requires_grad
    i = gpugrad.tensor([1, 2], device=device).clone()
    assert i.dtype is gpugrad.int64


def test_contiguous(device):
    x = gpugrad.arange(6.0, device=device).reshape(2, 3).requires_grad_()
    assert x.is_contiguous() and x.contiguous() is x
    t = x.T
    assert not t.is_contiguous()
    c = t.contiguous()
    assert c.is_contiguous() and c.tolist() == t.tolist()
    (c * gpugrad.arange(6.0, device=device).reshape(3, 2)).sum().backward()
    assert x.grad.tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]


CONVERSIONS = [("float", "float32"), ("double", "float64"), ("half", "float16"),
               ("long", "int64"), ("int", "int32"), ("short", "int16"), ("bool", "bool"),
               ("byte", "uint8")]


@pytest.mark.parametrize("method,dtype", CONVERSIONS)
def test_dtype_conversion_methods(method, dtype, device):
    data = [-1.5, 0.0, 2.7]
    t = getattr(gpugrad.tensor(data, device=device), method)()
    assert t.dtype is getattr(gpugrad, dtype)
    assert t.device == gpugrad.device(device)
    torch = torch_or_skip()
    r = getattr(torch.tensor(data), method)() if method != "byte" else \
        torch.tensor([0.0, 2.7]).byte()
    if method == "byte":
        t = gpugrad.tensor([0.0, 2.7], device=device).byte()
    assert t.tolist() == r.tolist()


def test_conversion_same_dtype_returns_self(device):
    x = gpugrad.ones(2, device=device)
    assert x.float() is x and x.to(gpugrad.float32) is x and x.to(device) is x
    y = x.to(gpugrad.float32, copy=True)
    assert y is not x and y.tolist() == x.tolist()


def test_to_dtype_is_differentiable(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    d = x.to(gpugrad.float64)
    assert d.dtype is gpugrad.float64 and d.grad_fn.name() == "ToCopyBackward0"
    (d * d).sum().backward()
    assert x.grad.dtype is gpugrad.float32 and x.grad.tolist() == [2.0, 4.0]
    h = x.half()
    assert h.requires_grad
    i = x.long()  # an integer copy leaves the graph
    assert i.dtype is gpugrad.int64 and not i.requires_grad and i.grad_fn is None


def test_to_overloads(device):
    x = gpugrad.tensor([1.5, 2.5], device=device)
    assert x.to(dtype=gpugrad.float64).dtype is gpugrad.float64
    assert x.to(device).device == gpugrad.device(device)
    assert x.to(gpugrad.device(device)).device == gpugrad.device(device)
    assert x.to(device=device, dtype=gpugrad.float16).dtype is gpugrad.float16
    y = x.to(device, gpugrad.float64)
    assert y.dtype is gpugrad.float64 and y.device == gpugrad.device(device)
    other = gpugrad.tensor([1], dtype=gpugrad.int32, device=device)
    z = x.to(other)
    assert z.dtype is gpugrad.int32 and z.device == other.device and z.tolist() == [1, 2]
    assert x.to("float64").dtype is gpugrad.float64
    with pytest.raises(TypeError):
        x.to(1.5)
    with pytest.raises(TypeError, match="unexpected keyword"):
        x.to(gpugrad.float64, bogus=True)


def test_cpu(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    c = x.cpu()
    assert c.device == gpugrad.device("cpu") and c.tolist() == [1.0, 2.0]
    if on_cpu(device):
        assert c is x
    else:
        (c * 2).sum().backward()  # the copy to the host is differentiable
        assert x.grad.device == x.device and x.grad.tolist() == [2.0, 2.0]


def test_type(device):
    x = gpugrad.ones(2, device=device)
    prefix = "gpugrad." if on_cpu(device) else "gpugrad.cuda."
    assert x.type() == prefix + "FloatTensor"
    assert x.long().type() == prefix + "LongTensor"
    assert x.double().type() == prefix + "DoubleTensor"
    assert x.bool().type() == prefix + "BoolTensor"
    assert x.type(gpugrad.float64).dtype is gpugrad.float64
    assert x.type("torch.IntTensor").dtype is gpugrad.int32
    assert x.type("gpugrad.DoubleTensor").dtype is gpugrad.float64
    assert x.type(gpugrad.LongTensor).dtype is gpugrad.int64
    torch = torch_or_skip()
    t = torch.ones(2)
    assert t.type() == "torch.FloatTensor" and t.long().type() == "torch.LongTensor"
    assert t.type("torch.IntTensor").dtype == torch.int32
    assert t.type(torch.LongTensor).dtype == torch.int64


# ============================================================================================
# repr
# ============================================================================================
REPR_CASES = {
    "vector": lambda m, d: m.tensor([1.0, 2.0], device=d),
    "matrix": lambda m, d: m.tensor([[1.5, 2.0], [3.0, 4.0]], device=d),
    "requires_grad": lambda m, d: m.tensor([1.0, 2.0], requires_grad=True, device=d),
    "AddBackward0": lambda m, d: m.tensor([1.0, 2.0], requires_grad=True, device=d) + 1,
    "MulBackward0": lambda m, d: m.tensor([1.0, 2.0], requires_grad=True, device=d) * 3,
    "SumBackward0": lambda m, d: m.tensor([1.0, 2.0], requires_grad=True, device=d).sum(),
    "PowBackward0": lambda m, d: m.tensor([[1.0, 2.0]], requires_grad=True, device=d) ** 2,
    "0d-float": lambda m, d: m.tensor(3.5, device=d),
    "0d-whole": lambda m, d: m.tensor(3.0, device=d),
    "0d-int": lambda m, d: m.tensor(3, device=d),
    "0d-bool": lambda m, d: m.tensor(False, device=d),
    "0d-requires_grad": lambda m, d: m.tensor(2.0, requires_grad=True, device=d),
    "0d-float64": lambda m, d: m.tensor(2.25, dtype=m.float64, device=d),
    "int": lambda m, d: m.tensor([1, -20, 300], device=d),
    "int32": lambda m, d: m.tensor([1, 2], dtype=m.int32, device=d),
    "uint8": lambda m, d: m.tensor([1, 2], dtype=m.uint8, device=d),
    "int-matrix": lambda m, d: m.arange(6, device=d).reshape(2, 3),
    "bool": lambda m, d: m.tensor([True, False], device=d),
    "bool-matrix": lambda m, d: m.tensor([[True], [False]], device=d),
    "float64": lambda m, d: m.tensor([1.0, 2.5], dtype=m.float64, device=d),
    "float64-rg": lambda m, d: m.tensor([1.0, 2.5], dtype=m.float64, requires_grad=True,
                                        device=d),
    "float64-grad_fn": lambda m, d: m.tensor([1.0], dtype=m.float64, requires_grad=True,
                                             device=d) * 2,
    "float16": lambda m, d: m.tensor([0.5, 2.0], dtype=m.float16, device=d),
    "empty": lambda m, d: m.zeros(0, device=d),
    "empty-2d": lambda m, d: m.zeros(2, 0, device=d),
    "empty-int": lambda m, d: m.zeros(0, dtype=m.int64, device=d),
    "empty-float64": lambda m, d: m.zeros(0, dtype=m.float64, device=d),
    "sci": lambda m, d: m.tensor([1e10, 1.0], device=d),
    "small": lambda m, d: m.tensor([1e-5, 1.0], device=d),
    "negative": lambda m, d: m.tensor([-1.0, 0.5, 100.25], device=d),
    "nan-inf": lambda m, d: m.tensor([float("nan"), float("inf"), -float("inf"), 1.0], device=d),
    "3d": lambda m, d: m.arange(12.0, device=d).reshape(2, 2, 3),
    "long-row": lambda m, d: m.arange(20.0, device=d) / 3,
    "summarized": lambda m, d: m.arange(2000, device=d),
    "summarized-2d": lambda m, d: m.ones(100, 100, device=d),
    "arange-float": lambda m, d: m.arange(5, dtype=m.float32, device=d),
    "eye": lambda m, d: m.eye(3, device=d),
    "w-grad": lambda m, d: m.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]] * 3, device=d),
    "detached": lambda m, d: (m.tensor([1.0], requires_grad=True, device=d) * 2).detach(),
}


@pytest.mark.parametrize("case", list(REPR_CASES))
def test_repr_matches_torch(case, device):
    torch = torch_or_skip()
    got = repr(REPR_CASES[case](gpugrad, device))
    want = repr(REPR_CASES[case](torch, "cpu")).replace("torch.", "gpugrad.")
    assert strip_device(got, device) == want
    assert str(REPR_CASES[case](gpugrad, device)) == got
    if not on_cpu(device):
        assert f"device='{gpugrad.device(device)}'" in got


@pytest.mark.parametrize("text,make", [
    ("tensor([1., 2.], requires_grad=True)",
     lambda d: gpugrad.tensor([1.0, 2.0], requires_grad=True, device=d)),
    ("tensor([2., 3.], grad_fn=<AddBackward0>)",
     lambda d: gpugrad.tensor([1.0, 2.0], requires_grad=True, device=d) + 1),
    ("tensor(3.5000)", lambda d: gpugrad.tensor(3.5, device=d)),
    ("tensor(3)", lambda d: gpugrad.tensor(3, device=d)),
    ("tensor([ True, False])", lambda d: gpugrad.tensor([True, False], device=d)),
    ("tensor([1., 2.], dtype=gpugrad.float64)",
     lambda d: gpugrad.tensor([1.0, 2.0], dtype=gpugrad.float64, device=d)),
    ("tensor([1, 2], dtype=gpugrad.int32)",
     lambda d: gpugrad.tensor([1, 2], dtype=gpugrad.int32, device=d)),
    ("tensor([[1., 2.],\n        [3., 4.]])",
     lambda d: gpugrad.tensor([[1.0, 2.0], [3.0, 4.0]], device=d)),
    ("tensor([], size=(2, 0))", lambda d: gpugrad.zeros(2, 0, device=d)),
])
def test_repr_literal(text, make, device):
    assert strip_device(repr(make(device)), device) == text


def test_format(device):
    x = gpugrad.tensor(2.0, requires_grad=True, device=device)
    assert f"{x}" == "2.0"  # a 0-d tensor formats as its number, as in torch
    assert f"{x:.3f}" == "2.000"
    assert f"{gpugrad.tensor(3, device=device)}" == "3"
    v = gpugrad.tensor([1.0, 2.0], device=device)
    assert strip_device(f"{v}", device) == "tensor([1., 2.])"
    torch = torch_or_skip()
    assert f"{torch.tensor(2.0, requires_grad=True)}" == "2.0"
    assert f"{torch.tensor(3)}" == "3"


# ============================================================================================
# Python protocol: len, iter, bool, float, int, index, hash, pickle
# ============================================================================================
def test_len_and_iter(device):
    t = gpugrad.tensor([[1, 2], [3, 4], [5, 6]], device=device)
    assert len(t) == 3
    rows = list(t)
    assert len(rows) == 3 and all(isinstance(r, gpugrad.Tensor) for r in rows)
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4], [5, 6]]
    assert [x.item() for x in gpugrad.tensor([7.0, 8.0], device=device)] == [7.0, 8.0]
    assert len(gpugrad.zeros(0, 3, device=device)) == 0
    s = gpugrad.tensor(1.0, device=device)
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(s)
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(s)


def test_iter_rows_are_differentiable(device):
    x = gpugrad.tensor([1.0, 2.0, 3.0], requires_grad=True, device=device)
    total = sum(v * v for v in x)
    total.backward()
    assert x.grad.tolist() == [2.0, 4.0, 6.0]


def test_bool(device):
    assert bool(gpugrad.tensor([1.0], device=device)) is True
    assert bool(gpugrad.tensor(0.0, device=device)) is False
    assert bool(gpugrad.tensor([[True]], device=device)) is True
    assert not gpugrad.tensor(0, device=device)
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is "
                                           "ambiguous"):
        bool(gpugrad.tensor([1.0, 2.0], device=device))
    with pytest.raises(RuntimeError, match="ambiguous"):
        if gpugrad.zeros(0, device=device):
            pass
    x = gpugrad.tensor(3.0, requires_grad=True, device=device)
    assert (x > 2) and not (x < 2)  # comparisons in control flow


def test_float_int_conversions(device):
    assert float(gpugrad.tensor([[2.5]], device=device)) == 2.5
    assert float(gpugrad.tensor(3, device=device)) == 3.0
    assert int(gpugrad.tensor(2.7, device=device)) == 2
    assert int(gpugrad.tensor(-2.7, device=device)) == -2
    assert int(gpugrad.tensor([True], device=device)) == 1
    assert float(gpugrad.tensor(1.5, requires_grad=True, device=device)) == 1.5
    assert complex(gpugrad.tensor(1.5, device=device)) == 1.5 + 0j
    for conv in (float, int):
        with pytest.raises(ValueError, match="only one element tensors can be converted to "
                                             "Python scalars"):
            conv(gpugrad.tensor([1.0, 2.0], device=device))
    torch = torch_or_skip()
    for conv in (float, int):
        with pytest.raises(ValueError, match="only one element tensors"):
            conv(torch.tensor([1.0, 2.0]))


def test_index_conversion(device):
    items = ["a", "b", "c", "d"]
    assert items[gpugrad.tensor(1, device=device)] == "b"
    assert items[gpugrad.tensor([2], device=device)] == "c"
    assert items[gpugrad.tensor(1, dtype=gpugrad.int32, device=device)] == "b"
    assert list(range(gpugrad.tensor(3, device=device))) == [0, 1, 2]
    assert "abcdef"[gpugrad.tensor(1, device=device):gpugrad.tensor(3, device=device)] == "bc"
    assert hex(gpugrad.tensor(255, device=device)) == "0xff"
    for bad in (gpugrad.tensor(1.0, device=device), gpugrad.tensor([1, 2], device=device)):
        with pytest.raises(TypeError, match="only integer tensors of a single element can be "
                                            "converted to an index"):
            items[bad]
    torch = torch_or_skip()
    with pytest.raises(TypeError, match="only integer tensors of a single element"):
        items[torch.tensor(1.0)]


def test_hash_by_identity(device):
    a = gpugrad.ones(2, device=device)
    b = gpugrad.ones(2, device=device)
    s = {a, b}
    assert len(s) == 2 and a in s and b in s
    assert gpugrad.ones(2, device=device) not in s
    d = {a: "a", b: "b"}
    assert d[a] == "a" and d[b] == "b"
    assert hash(a) == object.__hash__(a) and hash(a) != hash(b)
    x = gpugrad.ones(1, requires_grad=True, device=device)
    params = {x: 0}
    (x * 2).sum().backward()
    assert params[x] == 0  # mutating grad does not change the hash
    y = x * 3
    assert y in {y} and x not in {y}


@pytest.mark.parametrize("case", ["float", "int32", "bool", "0d", "rg", "float64-2d", "empty"])
def test_pickle_round_trip(case, device):
    make = {
        "float": lambda: gpugrad.tensor([1.5, -2.0], device=device),
        "int32": lambda: gpugrad.tensor([[1, 2]], dtype=gpugrad.int32, device=device),
        "bool": lambda: gpugrad.tensor([True, False], device=device),
        "0d": lambda: gpugrad.tensor(3.25, device=device),
        "rg": lambda: gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device),
        "float64-2d": lambda: gpugrad.arange(6, dtype=gpugrad.float64, device=device)
        .reshape(2, 3),
        "empty": lambda: gpugrad.zeros(0, 2, device=device),
    }[case]
    t = make()
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        r = pickle.loads(pickle.dumps(t, protocol=protocol))
        assert isinstance(r, gpugrad.Tensor)
        assert r.dtype is t.dtype and r.shape == t.shape and r.device == t.device
        assert r.tolist() == t.tolist()
        assert r.requires_grad == t.requires_grad and r.is_leaf
    c = copy.deepcopy(t)
    assert c is not t and c.tolist() == t.tolist() and c.requires_grad == t.requires_grad
    before = t.tolist()
    c.detach().fill_(1)
    assert t.tolist() == before  # the copy owns its memory


def test_pickled_tensor_still_differentiates(device):
    x = pickle.loads(pickle.dumps(gpugrad.tensor([1.0, 3.0], requires_grad=True, device=device)))
    (x * x).sum().backward()
    assert x.grad.tolist() == [2.0, 6.0]


def test_is_tensor_and_numel_functions(device):
    t = gpugrad.zeros(3, 2, device=device)
    assert gpugrad.is_tensor(t) and not gpugrad.is_tensor([1])
    assert gpugrad.numel(t) == 6
    assert gpugrad.is_floating_point(t)


def test_repr_of_tensor_is_not_affected_by_grad(device):
    x = gpugrad.tensor([1.0, 2.0], requires_grad=True, device=device)
    (x * 2).sum().backward()
    assert re.fullmatch(r"tensor\(\[1\., 2\.\](, device='cuda:\d+')?, requires_grad=True\)",
                        repr(x))
    assert strip_device(repr(x.grad), device) == "tensor([2., 2.])"
