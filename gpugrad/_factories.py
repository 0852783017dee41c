"""Tensor factories with torch's signatures: ``tensor``, ``zeros``, ``arange``, ``randn``, ...

Every factory takes ``dtype=``, ``device=`` and ``requires_grad=``; ``device=None`` means the
default device (``GPUGRAD_DEVICE``, else CUDA when usable, else CPU).
"""
from __future__ import annotations

import builtins
import math
import numbers

import numpy as np

from . import _backend, _cuda_errors, _dtypes, _random
from ._tensor import Size, Tensor

__all__ = ["tensor", "as_tensor", "from_numpy", "zeros", "ones", "full", "empty", "zeros_like",
           "ones_like", "full_like", "empty_like", "rand_like", "randn_like", "randint_like",
           "arange", "linspace", "logspace", "eye", "rand", "randn", "randint", "randperm",
           "FloatTensor", "DoubleTensor", "HalfTensor", "LongTensor", "IntTensor",
           "BoolTensor", "ByteTensor", "scalar_tensor"]


def _finish(array, requires_grad: bool) -> Tensor:
    t = Tensor._make(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def _dtype_or(dtype, default):
    return default if dtype is None else _dtypes.as_dtype(dtype)


def _shape(size, op: str) -> tuple:
    """torch's size arguments: ``f(2, 3)``, ``f((2, 3))``, ``f([2, 3])``, ``f(size=(2, 3))``."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    out = []
    for s in size:
        if isinstance(s, Tensor):
            s = s.item()
        if not isinstance(s, (numbers.Integral, np.integer)) or isinstance(s, bool):
            raise TypeError(f"{op}(): size must be a tuple of ints, but got an element of type "
                            f"{type(s).__name__} ({s!r})")
        if s < 0:
            raise RuntimeError(f"{op}(): Trying to create tensor with negative dimension {s}: "
                               f"{list(size)}")
        out.append(int(s))
    return tuple(out)


def _size_from(size, kw_size, op):
    if kw_size is not None:
        if size:
            raise TypeError(f"{op}(): pass the size either positionally or as size=, not both")
        size = (kw_size,)
    return _shape(size, op)


def _infer_dtype(data) -> _dtypes.dtype:
    """The dtype torch.tensor infers: float -> default float, int -> int64, bool -> bool."""
    kinds = set()

    def walk(x):
        if isinstance(x, Tensor):
            kinds.add(x.dtype)
        elif isinstance(x, (np.ndarray, np.generic)):
            kinds.add(_dtypes.from_numpy_dtype(x.dtype))
        elif isinstance(x, (bool, np.bool_)):
            kinds.add(_dtypes.bool)
        elif isinstance(x, numbers.Integral):
            kinds.add(_dtypes.int64)
        elif isinstance(x, numbers.Real):
            kinds.add(_dtypes.get_default_dtype())
        elif isinstance(x, (list, tuple)):
            for e in x:
                walk(e)
        elif hasattr(x, "__cuda_array_interface__"):
            kinds.add(_dtypes.from_numpy_dtype(np.dtype(x.dtype)))
        else:
            raise TypeError(f"Could not infer dtype of {type(x).__name__}")

    walk(data)
    if not kinds:
        return _dtypes.get_default_dtype()
    out = None
    for k in kinds:
        out = k if out is None else _dtypes.promote_types(out, k)
    return out


def _to_host_nested(data):
    """Replace tensors inside nested lists by their values, for np.array."""
    if isinstance(data, Tensor):
        return _backend.to_device(data._data, _backend.CPU)
    if isinstance(data, (list, tuple)):
        return [_to_host_nested(x) for x in data]
    return data


def _array_from(data, dtype, device, copy: bool, op: str):
    """An array on ``device`` holding ``data``, copied unless ``copy`` is False and possible."""
    dev = _backend.canonical_device(device)
    if isinstance(data, Tensor):
        arr = data._data
        dt = _dtype_or(dtype, data.dtype)
    elif isinstance(data, np.ndarray) or hasattr(data, "__cuda_array_interface__"):
        # a foreign device array (a torch CUDA tensor, ...) is viewed through CuPy first: its
        # .dtype need not be a NumPy dtype, and to_device handles NumPy and CuPy arrays only
        arr = data if isinstance(data, np.ndarray) else _backend.as_cupy(data)
        dt = _dtype_or(dtype, _dtypes.from_numpy_dtype(np.dtype(arr.dtype)))
    else:
        dt = _dtype_or(dtype, None) or _infer_dtype(data)
        try:
            arr = np.array(_to_host_nested(data), dtype=dt.np)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{op}(): could not build a tensor from {type(data).__name__}: {e}. "
                             "Nested sequences must be rectangular and hold numbers.") from None
        copy = False  # already a fresh array
    out = _backend.to_device(arr, dev)
    if out is not arr:
        copy = False
    if out.dtype != dt.np:
        out = out.astype(dt.np)
        copy = False
    return out.copy() if copy else out


def tensor(data, *, dtype=None, device=None, requires_grad: bool = False,
           pin_memory: bool = False) -> Tensor:
    """A new leaf tensor holding a copy of ``data`` (nested lists, numbers, arrays, tensors)."""
    return _finish(_array_from(data, dtype, device, True, "tensor"), requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like ``tensor`` but shares memory with ``data`` when dtype and device already match."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype) if (device or dtype) else data
    return Tensor._make(_array_from(data, dtype, device, False, "as_tensor"))


asarray = as_tensor


def from_numpy(ndarray: np.ndarray) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array (changes show in both)."""
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"expected np.ndarray (got {type(ndarray).__name__})")
    _dtypes.from_numpy_dtype(ndarray.dtype)  # clear error for unsupported dtypes
    return Tensor._make(ndarray)


def scalar_tensor(s, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A 0-d tensor holding ``s`` (default float dtype)."""
    return tensor(s, dtype=dtype or _dtypes.get_default_dtype(), device=device,
                  requires_grad=requires_grad)


def _filled(op, size, fill, dtype, device, requires_grad, default=None):
    dev = _backend.canonical_device(device)
    dt = _dtype_or(dtype, default or _dtypes.get_default_dtype())
    xp = _backend.array_module(dev)
    if dev.type == "cuda":
        with xp.cuda.Device(dev.index):
            arr = _make_filled(xp, size, fill, dt)
    else:
        arr = _make_filled(xp, size, fill, dt)
    return _finish(arr, requires_grad)


def _make_filled(xp, size, fill, dt):
    if fill is None:
        return xp.empty(size, dtype=dt.np)
    if fill == 0:
        return xp.zeros(size, dtype=dt.np)
    if fill == 1:
        return xp.ones(size, dtype=dt.np)
    return xp.full(size, fill, dtype=dt.np)


def zeros(*size, out=None, dtype=None, device=None, requires_grad=False, layout=None,
          **kw) -> Tensor:
    """A tensor of zeros of the given size."""
    return _filled("zeros", _size_from(size, kw.pop("size", None), "zeros"), 0, dtype, device,
                   requires_grad)


def ones(*size, out=None, dtype=None, device=None, requires_grad=False, layout=None,
         **kw) -> Tensor:
    """A tensor of ones of the given size."""
    return _filled("ones", _size_from(size, kw.pop("size", None), "ones"), 1, dtype, device,
                   requires_grad)


def empty(*size, out=None, dtype=None, device=None, requires_grad=False, layout=None,
          memory_format=None, **kw) -> Tensor:
    """An uninitialized tensor of the given size."""
    return _filled("empty", _size_from(size, kw.pop("size", None), "empty"), None, dtype, device,
                   requires_grad)


def full(size, fill_value, *, out=None, dtype=None, device=None, requires_grad=False,
         layout=None) -> Tensor:
    """A tensor of ``size`` filled with ``fill_value`` (dtype inferred from it, as torch)."""
    if isinstance(fill_value, Tensor):
        fill_value = fill_value.item()
    default = _infer_dtype(fill_value)
    return _filled("full", _shape((size,) if isinstance(size, int) else tuple(size), "full"),
                   fill_value, dtype, device, requires_grad, default)


def _like(input: Tensor, dtype, device):
    return (input.shape, _dtype_or(dtype, input.dtype),
            input.device if device is None else device)


def zeros_like(input: Tensor, *, dtype=None, device=None, requires_grad=False,
               layout=None, memory_format=None) -> Tensor:
    """Zeros with the shape (and by default dtype and device) of ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return zeros(shape, dtype=dt, device=dev, requires_grad=requires_grad)


def ones_like(input: Tensor, *, dtype=None, device=None, requires_grad=False,
              layout=None, memory_format=None) -> Tensor:
    """Ones with the shape (and by default dtype and device) of ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return ones(shape, dtype=dt, device=dev, requires_grad=requires_grad)


def empty_like(input: Tensor, *, dtype=None, device=None, requires_grad=False,
               layout=None, memory_format=None) -> Tensor:
    """Uninitialized data with the shape (and by default dtype and device) of ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return empty(shape, dtype=dt, device=dev, requires_grad=requires_grad)


def full_like(input: Tensor, fill_value, *, dtype=None, device=None, requires_grad=False,
              layout=None, memory_format=None) -> Tensor:
    """``fill_value`` with the shape (and by default dtype and device) of ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return full(shape, fill_value, dtype=dt, device=dev, requires_grad=requires_grad)


def rand_like(input: Tensor, *, dtype=None, device=None, requires_grad=False, **_) -> Tensor:
    """Uniform [0, 1) samples shaped like ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return rand(shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randn_like(input: Tensor, *, dtype=None, device=None, requires_grad=False, **_) -> Tensor:
    """Standard normal samples shaped like ``input``."""
    shape, dt, dev = _like(input, dtype, device)
    return randn(shape, dtype=dt, device=dev, requires_grad=requires_grad)


def randint_like(input: Tensor, low=0, high=None, *, dtype=None, device=None,
                 requires_grad=False) -> Tensor:
    """Random integers in [low, high) shaped like ``input``."""
    if high is None:
        low, high = 0, low
    shape, dt, dev = _like(input, dtype, device)
    return randint(low, high, shape, dtype=dt, device=dev, requires_grad=requires_grad)


def _check_float(dt, op):
    if not dt.is_floating_point:
        raise RuntimeError(f"{op}(): expected a floating point dtype, got {dt}; use randint for "
                           "integers")


def rand(*size, generator=None, out=None, dtype=None, device=None, requires_grad=False,
         **kw) -> Tensor:
    """Uniform samples in [0, 1)."""
    shape = _size_from(size, kw.pop("size", None), "rand")
    dev = _backend.canonical_device(device)
    dt = _dtype_or(dtype, _dtypes.get_default_dtype())
    _check_float(dt, "rand")
    return _finish(_random.uniform(dev, shape, dt), requires_grad)


def randn(*size, generator=None, out=None, dtype=None, device=None, requires_grad=False,
          **kw) -> Tensor:
    """Standard normal samples."""
    shape = _size_from(size, kw.pop("size", None), "randn")
    dev = _backend.canonical_device(device)
    dt = _dtype_or(dtype, _dtypes.get_default_dtype())
    _check_float(dt, "randn")
    return _finish(_random.normal(dev, shape, dt), requires_grad)


def randint(*args, size=None, generator=None, dtype=None, device=None,
            requires_grad=False) -> Tensor:
    """``randint(high, size)`` or ``randint(low, high, size)``: integers in [low, high)."""
    args = list(args)
    if size is None and args and isinstance(args[-1], (tuple, list)):
        size = args.pop()
    if size is None:
        raise TypeError("randint() missing required argument 'size' (a tuple of ints)")
    if len(args) == 1:
        low, high = 0, args[0]
    elif len(args) == 2:
        low, high = args
    else:
        raise TypeError("randint() takes (high, size) or (low, high, size)")
    if high <= low:
        raise RuntimeError(f"randint(): random_ expects 'from' to be less than 'to', but got "
                           f"from={low} >= to={high}")
    dev = _backend.canonical_device(device)
    dt = _dtype_or(dtype, _dtypes.int64)
    return _finish(_random.integers(dev, int(low), int(high), _shape(tuple(size), "randint"),
                                    dt), requires_grad)


def randperm(n: int, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A random permutation of 0..n-1."""
    dev = _backend.canonical_device(device)
    keys = _random.uniform(dev, (n,), _dtypes.float64)
    xp = _backend.array_module(dev)
    return _finish(xp.argsort(keys).astype(_dtype_or(dtype, _dtypes.int64).np), requires_grad)


def arange(start=0, end=None, step=1, *, out=None, dtype=None, device=None,
           requires_grad=False, layout=None) -> Tensor:
    """Values from ``start`` to ``end`` (exclusive) by ``step``; int64 unless a bound is
    a float."""
    if end is None:
        start, end = 0, start
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    start, end, step = vals
    if step == 0:
        raise RuntimeError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(f"arange(): upper bound and larger bound inconsistent with step sign "
                           f"(start={start}, end={end}, step={step})")
    is_float = builtins.any(isinstance(v, float) for v in vals)
    dt = _dtype_or(dtype, _dtypes.get_default_dtype() if is_float else _dtypes.int64)
    n = builtins.max(0, math.ceil((end - start) / step))
    dev = _backend.canonical_device(device)
    xp = _backend.array_module(dev)
    # start + i*step computed in float64 (or int64) then cast, like torch
    if dt.is_floating_point or is_float:
        arr = (start + xp.arange(n, dtype=np.float64) * step).astype(dt.np)
    else:
        arr = (start + xp.arange(n, dtype=np.int64) * step).astype(dt.np)
    return _finish(arr, requires_grad)


def linspace(start, end, steps, *, out=None, dtype=None, device=None,
             requires_grad=False, layout=None) -> Tensor:
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    if steps < 0:
        raise RuntimeError("linspace(): number of steps must be non-negative")
    dt = _dtype_or(dtype, _dtypes.get_default_dtype())
    dev = _backend.canonical_device(device)
    xp = _backend.array_module(dev)
    return _finish(xp.linspace(float(start), float(end), int(steps)).astype(dt.np),
                   requires_grad)


def logspace(start, end, steps, base=10.0, *, dtype=None, device=None,
             requires_grad=False) -> Tensor:
    """``base ** linspace(start, end, steps)``."""
    dt = _dtype_or(dtype, _dtypes.get_default_dtype())
    dev = _backend.canonical_device(device)
    xp = _backend.array_module(dev)
    return _finish(xp.logspace(float(start), float(end), int(steps), base=base).astype(dt.np),
                   requires_grad)


def eye(n: int, m: int | None = None, *, out=None, dtype=None, device=None,
        requires_grad=False, layout=None) -> Tensor:
    """An ``n x m`` matrix with ones on the diagonal."""
    dt = _dtype_or(dtype, _dtypes.get_default_dtype())
    dev = _backend.canonical_device(device)
    xp = _backend.array_module(dev)
    return _finish(xp.eye(n, n if m is None else m, dtype=dt.np), requires_grad)


# ---- legacy constructors: Tensor(data), FloatTensor([1, 2]), Tensor(2, 3) -------------------
def _legacy_array(args, dtype, device, op):
    """The array of a legacy constructor call: from data, or uninitialized of a shape."""
    if not args:  # torch.Tensor() is an empty 1-D tensor
        args = (0,)
    if len(args) == 1 and not isinstance(args[0], (numbers.Integral, np.integer, Size)):
        data = args[0]
        if isinstance(data, Tensor):
            return _array_from(data, dtype, device or data.device, False, op)
        return _array_from(data, dtype, device, True, op)
    shape = _shape(args, op)
    return _filled(op, shape, None, dtype, device, False)._data


class _LegacyType(type):
    """``isinstance(t, gpugrad.FloatTensor)`` is True for float32 tensors."""

    def __instancecheck__(cls, obj):
        return isinstance(obj, Tensor) and obj.dtype is cls._dtype


def _legacy(name, dt):
    def __new__(cls, *args, device=None):
        return Tensor._make(_legacy_array(args, dt, device, name))
    return _LegacyType(name, (), {"__new__": __new__, "_dtype": dt,
                                  "__doc__": f"Legacy constructor of {dt} tensors."})


FloatTensor = _legacy("FloatTensor", _dtypes.float32)
DoubleTensor = _legacy("DoubleTensor", _dtypes.float64)
HalfTensor = _legacy("HalfTensor", _dtypes.float16)
LongTensor = _legacy("LongTensor", _dtypes.int64)
IntTensor = _legacy("IntTensor", _dtypes.int32)
BoolTensor = _legacy("BoolTensor", _dtypes.bool)
ByteTensor = _legacy("ByteTensor", _dtypes.uint8)


# CUDA failures while making arrays (out of memory, ...) become gpugrad's clear errors, naming
# the factory. Rebinding the module's names also guards the calls between factories.
def _guard_factories() -> None:
    g = globals()
    for name in [n for n in __all__ if callable(g[n]) and not isinstance(g[n], type)] + \
            ["_legacy_array"]:
        g[name] = _cuda_errors.guard(g[name])


_guard_factories()
