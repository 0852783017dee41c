"""Tensor: one array (NumPy or CuPy) plus its autograd metadata.

The arithmetic and math methods (``x + y``, ``x.sum()``, ...) are attached by ``gpugrad.ops``,
which implements each as a ``Function``; this module holds what every tensor has: its data,
``requires_grad``, ``grad``, ``grad_fn``, the version counter it shares with its views,
conversions, and the entry points into the engine (``backward``, hooks).
"""
from __future__ import annotations

import warnings
import weakref

import numpy as np

from . import _backend, _dtypes
from ._capture import check_sync as _check_sync  # host syncs raise inside a capture
from ._dtypes import from_numpy_dtype
from .autograd import function as _function_module
from .autograd import engine as _engine_module
from .autograd import grad_mode
from .autograd.graph import AccumulateGrad, add_hook

__all__ = ["Tensor", "Size"]

_state = grad_mode.state
_ndarray = np.ndarray
_generic = np.generic


class Size(tuple):
    """A tensor's shape: a tuple of ints that prints as ``gpugrad.Size([2, 3])``."""

    __slots__ = ()

    def numel(self) -> int:
        """The number of elements of a tensor of this shape."""
        n = 1
        for s in self:
            n *= s
        return n

    def __repr__(self) -> str:
        return f"gpugrad.Size({list(self)})"

    def __getitem__(self, item):
        r = tuple.__getitem__(self, item)
        return Size(r) if isinstance(item, slice) else r

    def __add__(self, other):
        return Size(tuple.__add__(self, tuple(other)))


class _Version:
    """The version counter shared by a tensor and its views; in-place ops bump it."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0


def _as_array(data):
    # NumPy turns 0-d results into scalars; tensors always hold arrays.
    if isinstance(data, _generic):
        return np.asarray(data)
    return data


class Tensor:
    """A multi-dimensional array on a device, recorded for automatic differentiation.

    Build tensors with ``gpugrad.tensor(data)`` and the other factories; the legacy
    constructor ``gpugrad.Tensor(data)`` / ``gpugrad.Tensor(2, 3)`` makes float32 tensors.
    """

    __slots__ = ("_data", "_version", "__weakref__", "__dict__")

    # Defaults of the autograd metadata: most tensors never set them, and a tensor is made
    # for every op result, so they live on the class rather than in each instance.
    _requires_grad = False
    grad_fn = None
    _output_nr = 0
    _grad = None
    _base = None
    _hooks = None
    _grad_acc = None
    _retains_grad = False
    # Views (see ops/_views.py): how this tensor is made from its _base, and the shared
    # version at which its grad_fn was last set from the base.
    _view_chain = ()
    _view_stamp = 0
    _multi_view = False

    # NumPy defers to Tensor's reflected operators (ndarray * tensor -> Tensor.__rmul__).
    __array_priority__ = 1000

    def __init__(self, *args, device=None) -> None:
        from ._factories import _legacy_array
        _init(self, _legacy_array(args, _dtypes.float32, device, "Tensor"))

    @staticmethod
    def _make(data, requires_grad: bool = False) -> "Tensor":
        """Wrap an array without copying (internal fast path)."""
        t = _new(Tensor)
        t._data = data if data.__class__ is _ndarray else _as_array(data)
        t._version = _Version()
        if requires_grad:
            t._requires_grad = True
        return t

    # ---- what a tensor is ----------------------------------------------------------------
    @property
    def data(self) -> "Tensor":
        """The same data as a tensor outside the graph (changes to it are not tracked)."""
        t = Tensor._make(self._data)
        return t

    @data.setter
    def data(self, value: "Tensor") -> None:
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data must be set to a Tensor, got {type(value).__name__}")
        if self._requires_grad and value._data.dtype.kind != "f":
            raise RuntimeError(f"data set to a tensor that requires gradients must be floating "
                               f"point (got {value.dtype}); convert it first, e.g. .float()")
        self._data = value._data

    @property
    def shape(self) -> Size:
        """The size of each dimension, as a ``gpugrad.Size``."""
        return Size(self._data.shape)

    def size(self, dim: int | None = None):
        """The shape, or the size of dimension ``dim``."""
        if dim is None:
            return Size(self._data.shape)
        return self._data.shape[_wrap_dim(dim, self._data.ndim, "size")]

    def dim(self) -> int:
        """The number of dimensions."""
        return self._data.ndim

    ndimension = dim

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return self._data.ndim

    def numel(self) -> int:
        """The number of elements."""
        return self._data.size

    nelement = numel

    def element_size(self) -> int:
        """Bytes per element."""
        return self._data.itemsize

    @property
    def dtype(self) -> _dtypes.dtype:
        """The element type, e.g. ``gpugrad.float32``."""
        return from_numpy_dtype(self._data.dtype)

    @property
    def device(self) -> _backend.device:
        """Where the data lives: ``device(type='cpu')`` or ``device(type='cuda', index=0)``."""
        return _backend.device_of_array(self._data)

    @property
    def is_cuda(self) -> bool:
        """True for tensors on a CUDA device."""
        return not isinstance(self._data, _ndarray)

    def is_floating_point(self) -> bool:
        """True for float16/32/64 tensors."""
        return self._data.dtype.kind == "f"

    def is_contiguous(self) -> bool:
        """True when the data is laid out in row-major order without gaps."""
        return bool(self._data.flags.c_contiguous)

    def stride(self, dim: int | None = None):
        """Strides in elements (not bytes), as in torch."""
        item = self._data.itemsize
        strides = tuple(s // item for s in self._data.strides)
        return strides if dim is None else strides[_wrap_dim(dim, self._data.ndim, "stride")]

    # ---- autograd metadata -----------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        """Whether gradients are computed for this tensor."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        """Set ``requires_grad`` on a leaf tensor, in place; returns self."""
        requires_grad = bool(requires_grad)
        if self.grad_fn is not None:
            if requires_grad:
                return self
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().")
        if requires_grad and self._data.dtype.kind != "f":
            raise RuntimeError(
                f"only Tensors of floating point dtype can require gradients (got {self.dtype}); "
                "convert first, e.g. x.float().requires_grad_()")
        self._requires_grad = requires_grad
        return self

    @property
    def is_leaf(self) -> bool:
        """True for tensors not produced by a recorded operation (their grad accumulates)."""
        return self.grad_fn is None

    @property
    def output_nr(self) -> int:
        """Which output of its ``grad_fn`` this tensor is."""
        return self._output_nr

    @property
    def grad(self) -> "Tensor | None":
        """The accumulated gradient (None until a backward pass reaches this leaf)."""
        if self.grad_fn is not None and not self._retains_grad and self._grad is None:
            warnings.warn(
                "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. "
                "Its .grad attribute won't be populated during autograd.backward(). If you "
                "indeed want the gradient for a non-leaf Tensor, use .retain_grad() on the "
                "non-leaf Tensor.", UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value: "Tensor | None") -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got "
                                f"{type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise RuntimeError(f"assigned grad has data of a different size: "
                                   f"{list(value.shape)} vs the tensor's {list(self.shape)}")
            if value._data.dtype != self._data.dtype:
                raise RuntimeError(f"assigned grad has data of a different type: "
                                   f"{value.dtype} vs the tensor's {self.dtype}")
            if value.device != self.device:
                raise RuntimeError(f"assigned grad has data located on a different device: "
                                   f"{value.device} vs the tensor's {self.device}")
        self._grad = value

    @grad.deleter
    def grad(self) -> None:
        self._grad = None

    @property
    def retains_grad(self) -> bool:
        """True for a non-leaf tensor whose ``.grad`` is kept (see ``retain_grad``)."""
        return self._retains_grad

    def retain_grad(self) -> None:
        """Keep ``.grad`` for this non-leaf tensor during backward (no-op on leaves)."""
        if not self._requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is None or self._retains_grad:
            return
        node = self.grad_fn
        if node._retain is None:
            node._retain = {}
        node._retain[self._output_nr] = weakref.ref(self)
        self._retains_grad = True

    def register_hook(self, hook):
        """``hook(grad)`` runs when the gradient w.r.t. this tensor is computed; it may return
        a replacement. Returns a handle with ``.remove()``."""
        if not self._requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        if self.grad_fn is not None:
            return self.grad_fn._register_tensor_hook(self._output_nr, hook)
        self._hooks, handle = add_hook(self._hooks, hook)
        return handle

    def _grad_accumulator(self) -> AccumulateGrad:
        """The leaf's AccumulateGrad node, made on first use and shared while alive."""
        acc = self._grad_acc() if self._grad_acc is not None else None
        if acc is None:
            acc = AccumulateGrad(self)
            self._grad_acc = weakref.ref(acc)
        return acc

    def _grad_accumulator_if_exists(self):
        return self._grad_acc() if self._grad_acc is not None else None

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None) -> None:
        """Accumulate the gradient of this tensor w.r.t. the graph leaves into their ``.grad``.

        ``gradient`` is required unless the tensor has one element."""
        from .autograd import backward
        backward(self, gradient, retain_graph, create_graph, inputs=inputs)

    def detach(self) -> "Tensor":
        """A new tensor sharing this data (and version counter) but outside the graph."""
        t = Tensor._make(self._data)
        t._version = self._version
        return t

    def detach_(self) -> "Tensor":
        """Make this tensor a leaf that does not require grad, in place."""
        if self._base is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead.")
        self.grad_fn = None
        self._requires_grad = False
        self._output_nr = 0
        return self

    def _alias(self) -> "Tensor":
        """A second tensor over the same data and version counter (no autograd history)."""
        t = Tensor._make(self._data)
        t._version = self._version
        t._base = self._base if self._base is not None else self
        t._view_chain = self._view_chain
        t._view_stamp = self._version.value
        return t

    # ---- conversions -----------------------------------------------------------------------
    def item(self):
        """The single value of a one-element tensor, as a Python number."""
        _check_sync("Tensor.item()")
        if self._data.size != 1:
            raise RuntimeError(f"a Tensor with {self._data.size} elements cannot be converted to "
                               "Scalar; use .tolist() for all values")
        return self._data.item()

    def tolist(self):
        """The data as (nested) Python lists of numbers."""
        _check_sync("Tensor.tolist()")
        return self._data.tolist()

    def numpy(self, *, force: bool = False) -> np.ndarray:
        """The data as a NumPy array, sharing memory (CPU tensors that do not require grad).

        ``force=True`` detaches and copies to the host as needed."""
        _check_sync("Tensor.numpy()")
        if force:
            return _backend.to_device(self._data, _backend.CPU)
        if self._requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        if not isinstance(self._data, _ndarray):
            raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use "
                            "Tensor.cpu() to copy the tensor to host memory first.")
        return self._data

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        if dtype is not None and a.dtype != dtype:
            if copy is False:
                raise ValueError(f"Unable to avoid copy while creating an array as requested: "
                                 f"the tensor is {self.dtype}, not {np.dtype(dtype)}")
            return a.astype(dtype)
        return a.copy() if copy else a

    # ---- interop without copies: DLPack and the CUDA array interface ------------------------
    # Import side: gpugrad.from_dlpack (_dlpack.py).
    def __dlpack__(self, stream=None, *, max_version=None, dl_device=None, copy=None):
        """The data as a DLPack capsule for another library (torch.from_dlpack,
        np.from_dlpack, cupy.from_dlpack, ...), sharing memory. ``stream`` (CUDA data): the
        consumer's stream, which the export orders after the work queued so far."""
        if self._requires_grad:
            raise BufferError("Can't export tensors that require gradient, use "
                              "tensor.detach()")
        # Pass on only what the consumer gave, so that an older NumPy/CuPy without the newer
        # keywords still answers (consumers retry without max_version on a TypeError).
        kwargs = {}
        if stream is not None:
            kwargs["stream"] = stream
        if max_version is not None:
            kwargs["max_version"] = max_version
        if dl_device is not None:
            kwargs["dl_device"] = dl_device
        if copy is not None:
            kwargs["copy"] = copy
        return self._data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple:
        """(DLPack device type, index): ``(1, 0)`` on the CPU, ``(2, N)`` on ``cuda:N``."""
        return self._data.__dlpack_device__()

    @property
    def __cuda_array_interface__(self) -> dict:
        """The CUDA array interface of a CUDA tensor (for CuPy, Numba, ...), sharing memory.
        CPU tensors have none: AttributeError, so ``hasattr`` is False, as in torch."""
        if isinstance(self._data, _ndarray):
            raise AttributeError(
                f"Can't get __cuda_array_interface__ on non-CUDA tensor type: {self.type()} "
                "If CUDA data is required use tensor.cuda() to copy tensor to device memory.")
        if self._requires_grad:
            raise RuntimeError(
                "Can't get __cuda_array_interface__ on Variable that requires grad. If "
                "gradients aren't required, use var.detach() to get Variable that doesn't "
                "require grad.")
        return self._data.__cuda_array_interface__

    def cpu(self) -> "Tensor":
        """This tensor on the CPU (self if already there)."""
        _check_sync("Tensor.cpu()")
        return self.to("cpu")

    def cuda(self, device=None) -> "Tensor":
        """This tensor on a CUDA device (``cuda`` = the current one)."""
        return self.to("cuda" if device is None else _backend.device(
            device if not isinstance(device, int) else f"cuda:{device}"))

    def to(self, *args, **kwargs) -> "Tensor":
        """Convert dtype and/or device: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``,
        ``to(other_tensor)``; ``copy=True`` always copies. Differentiable."""
        dev, dt, copy = _parse_to(args, kwargs)
        from .ops.conversion import to_copy
        return to_copy(self, dev, dt, copy)

    def type(self, dtype=None):
        """Without an argument, the legacy type name (e.g. ``'gpugrad.FloatTensor'``)."""
        if dtype is None:
            legacy = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                      "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte",
                      "bool": "Bool"}[self.dtype.name]
            prefix = "gpugrad.cuda." if self.is_cuda else "gpugrad."
            return f"{prefix}{legacy}Tensor"
        legacy = getattr(dtype, "_dtype", None)  # a legacy class: x.type(gpugrad.DoubleTensor)
        if legacy is None and isinstance(dtype, str) and dtype.endswith("Tensor"):
            legacy = _LEGACY_TYPES.get(dtype.rpartition(".")[2])  # 'torch.DoubleTensor'
        return self.to(legacy if legacy is not None else _dtypes.as_dtype(dtype))

    def float(self) -> "Tensor":
        """Convert to float32."""
        return self.to(_dtypes.float32)

    def double(self) -> "Tensor":
        """Convert to float64."""
        return self.to(_dtypes.float64)

    def half(self) -> "Tensor":
        """Convert to float16."""
        return self.to(_dtypes.float16)

    def long(self) -> "Tensor":
        """Convert to int64."""
        return self.to(_dtypes.int64)

    def int(self) -> "Tensor":
        """Convert to int32."""
        return self.to(_dtypes.int32)

    def short(self) -> "Tensor":
        """Convert to int16."""
        return self.to(_dtypes.int16)

    def bool(self) -> "Tensor":
        """Convert to bool."""
        return self.to(_dtypes.bool)

    def byte(self) -> "Tensor":
        """Convert to uint8."""
        return self.to(_dtypes.uint8)

    # ---- legacy "new_*" constructors (same dtype and device as self) -----------------------
    def new(self, *args) -> "Tensor":
        """Legacy: a tensor of this dtype and device from data, or uninitialized of a shape."""
        from ._factories import _legacy_array
        return Tensor._make(_legacy_array(args, self.dtype, self.device, "Tensor.new"))

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False) -> "Tensor":
        """``gpugrad.tensor(data)`` with this tensor's dtype and device as defaults."""
        from ._factories import tensor
        return tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                      requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False) -> "Tensor":
        """Zeros of ``size`` with this tensor's dtype and device as defaults."""
        from ._factories import zeros
        return zeros(*size, dtype=dtype or self.dtype, device=device or self.device,
                     requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False) -> "Tensor":
        """Ones of ``size`` with this tensor's dtype and device as defaults."""
        from ._factories import ones
        return ones(*size, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None,
                 requires_grad=False) -> "Tensor":
        """``fill_value`` everywhere, with this tensor's dtype and device as defaults."""
        from ._factories import full
        return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False) -> "Tensor":
        """Uninitialized data of ``size`` with this tensor's dtype and device as defaults."""
        from ._factories import empty
        return empty(*size, dtype=dtype or self.dtype, device=device or self.device,
                     requires_grad=requires_grad)

    # ---- Python protocol -------------------------------------------------------------------
    def __repr__(self, *, tensor_contents=None) -> str:
        _check_sync("printing a Tensor (repr/str/print)")
        from ._printing import format_tensor
        suffixes = []
        if self.grad_fn is not None:
            suffixes.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self._requires_grad:
            suffixes.append("requires_grad=True")
        dt = self.dtype
        is_default = dt in (_dtypes.get_default_dtype(), _dtypes.int64, _dtypes.bool)
        dev = None if isinstance(self._data, _ndarray) else str(self.device)
        return format_tensor(_backend.to_device(self._data, _backend.CPU), dtype_name=dt.name,
                             is_default_dtype=is_default, device=dev, suffixes=suffixes)

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        # torch formats a 0-d tensor as its Python number, even with an empty spec:
        # f"{x}" prints "2.0" for tensor(2., requires_grad=True) (the seed tutorials rely on it).
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __len__(self) -> int:
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    def __bool__(self) -> bool:
        _check_sync("bool(Tensor) (an `if`/`while` on a tensor)")
        if self._data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with more than one value is ambiguous "
                               f"(shape {list(self.shape)}); use .any() or .all()")
        return bool(self._data.item())

    def __float__(self) -> float:
        return float(self._scalar())

    def __int__(self) -> int:
        return int(self._scalar())

    def _scalar(self):
        # float()/int() raise ValueError for several elements, as in torch (item() raises
        # RuntimeError).
        _check_sync("float(Tensor)/int(Tensor)")
        if self._data.size != 1:
            raise ValueError(f"only one element tensors can be converted to Python scalars "
                             f"(got {self._data.size} elements, shape {list(self.shape)})")
        return self._data.item()

    def __index__(self) -> int:
        if self._data.dtype.kind not in "iub" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an "
                            "index")
        return int(self.item())

    def __complex__(self) -> complex:
        return complex(self.item())

    __hash__ = object.__hash__

    def __reduce_ex__(self, protocol):
        return (_rebuild, (_backend.to_device(self._data, _backend.CPU), str(self.device),
                           self._requires_grad))


_new = object.__new__
_LEGACY_TYPES = {"FloatTensor": _dtypes.float32, "DoubleTensor": _dtypes.float64,
                 "HalfTensor": _dtypes.float16, "LongTensor": _dtypes.int64,
                 "IntTensor": _dtypes.int32, "ShortTensor": _dtypes.int16,
                 "CharTensor": _dtypes.int8, "ByteTensor": _dtypes.uint8,
                 "BoolTensor": _dtypes.bool}


def _init(t: Tensor, data) -> None:
    t._data = data
    t._version = _Version()


def _rebuild(array, device, requires_grad):
    t = Tensor._make(_backend.to_device(array, _backend.canonical_device(device)))
    t._requires_grad = requires_grad
    return t


def _wrap_dim(dim: int, ndim: int, op: str) -> int:
    """Normalize a possibly negative dim, with torch's error when out of range."""
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{op}: Dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {dim})")
    return dim + n if dim < 0 else dim


def _parse_to(args, kwargs):
    """Parse the overloads of ``Tensor.to`` into (device or None, dtype or None, copy)."""
    dev = kwargs.pop("device", None)
    dt = kwargs.pop("dtype", None)
    copy = bool(kwargs.pop("copy", False))
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    for a in args:
        if isinstance(a, Tensor):
            dev, dt = a.device, a.dtype
        elif isinstance(a, _dtypes.dtype) or (isinstance(a, type) and a in (float, int, bool)):
            dt = a
        elif isinstance(a, (str, _backend.device, int)) and not isinstance(a, bool):
            if isinstance(a, str) and a.removeprefix("gpugrad.").removeprefix("torch.") in \
                    _dtypes._NAMES:
                dt = a
            else:
                dev = a
        elif isinstance(a, bool):
            copy = copy or a  # legacy positional non_blocking/copy flags
        else:
            raise TypeError(f"to() received an invalid argument {a!r}; expected a dtype, a "
                            "device or a tensor")
    return (None if dev is None else _backend.canonical_device(dev),
            None if dt is None else _dtypes.as_dtype(dt), copy)


def _edge(t: Tensor):
    """The graph edge a tensor input contributes: its grad_fn, its accumulator, or nothing."""
    if t.grad_fn is not None:
        return (t.grad_fn, t._output_nr)
    if t._requires_grad:
        return (t._grad_accumulator(), 0)
    return (None, 0)


def _check_same_device(fn, args, positions) -> None:
    """Raise a clear error when the tensor arguments of ``fn`` live on different devices."""
    first = args[positions[0]]._data
    cls = first.__class__
    if cls is _ndarray and all(args[i]._data.__class__ is _ndarray for i in positions):
        return
    devices = [args[i].device for i in positions]
    for p, d in zip(positions[1:], devices[1:]):
        if d != devices[0]:
            name = getattr(fn, "_op_name", None) or fn.__name__
            raise RuntimeError(
                f"{name}: expected all tensors to be on the same device, but found at least two "
                f"devices, {devices[0]} (argument {positions[0]}) and {d} (argument {p}). Move "
                f"them to one device first, e.g. with .to({str(devices[0])!r}).")


def _replay(t: Tensor, chain) -> Tensor:
    """Apply a view chain (``(fn, args)`` steps) to ``t``; recorded when grad mode is on."""
    for fn, args in chain:
        t = fn(t, *args)
    return t


def _refresh_view(t: Tensor) -> None:
    """Regenerate a stale view's history from its base (an in-place op changed the base's
    history since the view's was set), as torch regenerates a view's grad_fn."""
    if t._view_stamp == t._version.value or not _state.enabled:
        return
    base = t._base
    if base.grad_fn is not None or base._requires_grad:
        v = _replay(base, t._view_chain)
        t.grad_fn, t._output_nr, t._requires_grad = v.grad_fn, v._output_nr, v._requires_grad
    t._view_stamp = t._version.value


# function.py is imported before this module exists; hand it what its hot path needs.
_function_module._Tensor = Tensor
_function_module._check_same_device = _check_same_device
_function_module._edge_of = _edge
_function_module._refresh_view = _refresh_view
_engine_module._make = Tensor._make


def _zeros_like_meta(meta) -> Tensor:
    shape, dtype, device = meta
    xp = _backend.array_module(device)
    return Tensor._make(xp.zeros(shape, dtype=dtype.np))
