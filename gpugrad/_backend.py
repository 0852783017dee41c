"""Devices: whether CUDA is usable, the default device, and the array module of each.

A tensor's data is a ``numpy.ndarray`` on ``cpu`` and a ``cupy.ndarray`` on ``cuda:N``.
CuPy is imported lazily, once, and silently: ``import gpugrad`` never needs CuPy or a GPU.
"""
from __future__ import annotations

import os
import threading

import numpy as np

__all__ = ["device", "cuda_available", "default_device", "array_module", "device_of_array",
           "to_device", "cupy_or_none"]

_lock = threading.Lock()
_cupy = None
_cupy_checked = False


def cupy_or_none():
    """CuPy if it imports and sees at least one CUDA device, else None (checked once)."""
    global _cupy, _cupy_checked
    if _cupy_checked:
        return _cupy
    with _lock:
        if not _cupy_checked:
            try:
                import cupy

                # is_available() is silent and fast (~0.2 ms) when no GPU is present.
                _cupy = cupy if cupy.is_available() else None
            except Exception:  # ImportError, or a broken CUDA install: either way, no CUDA
                _cupy = None
            if _cupy is not None:  # first use of CUDA: count the pool's peak from here on
                from . import _cuda_memory
                _cuda_memory.install(_cupy)
            _cupy_checked = True
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and reports at least one CUDA device."""
    return cupy_or_none() is not None


class device:
    """A device, as in torch: ``device('cpu')``, ``device('cuda')``, ``device('cuda:1')``,
    ``device('cuda', 1)``. Equal devices compare and hash equal."""

    __slots__ = ("type", "index")

    def __init__(self, type, index: int | None = None) -> None:  # noqa: A002 - torch's name
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, int) and not isinstance(type, bool):
            type, index = "cuda", type
        elif isinstance(type, str):
            name, sep, idx = type.partition(":")
            if sep:
                if index is not None:
                    raise ValueError(f"device(): type {type!r} already has an index; "
                                     f"do not pass index={index} too")
                if not idx.isdigit():
                    raise ValueError(f"device(): invalid device string {type!r}; "
                                     f"expected 'cpu', 'cuda' or 'cuda:N'")
                index = int(idx)
            type = name
        else:
            raise TypeError(f"device(): expected a string, an int or a device, got {type!r}")
        if type not in ("cpu", "cuda"):
            raise ValueError(f"device(): unknown device type {type!r}; gpugrad supports "
                             f"'cpu' and 'cuda' (e.g. 'cuda:0')")
        if type == "cpu" and index not in (None, 0):
            raise ValueError(f"device(): cpu has no index {index}")
        self.type = type
        self.index = None if type == "cpu" else index

    def __repr__(self) -> str:
        if self.index is None:
            return f"device(type={self.type!r})"
        return f"device(type={self.type!r}, index={self.index})"

    def __str__(self) -> str:
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except ValueError:  # not a device string: unequal, not an error
                return False
        return isinstance(other, device) and self.type == other.type and self.index == other.index

    def __hash__(self) -> int:
        # Equal to its string form, so the hash must be too: hash(device('cpu')) == hash('cpu').
        return hash(str(self))


CPU = device("cpu")
_cuda_devices: dict[int, device] = {}


def cuda_device(index: int) -> device:
    """The canonical ``device('cuda', index)`` object (cached: tensors share it)."""
    d = _cuda_devices.get(index)
    if d is None:
        d = _cuda_devices[index] = device("cuda", index)
    return d


def _require_cuda(what: str):
    cp = cupy_or_none()
    if cp is None:
        raise RuntimeError(
            f"{what}: CUDA is not available (CuPy is not installed or sees no GPU). "
            "Install gpugrad[cuda12] or gpugrad[cuda13] on a CUDA machine, or use device='cpu' "
            "(set GPUGRAD_DEVICE=cpu to make it the default).")
    return cp


def canonical_device(d) -> device:
    """Resolve a user's device argument to a concrete device (``'cuda'`` becomes ``cuda:N``)."""
    if d is None:
        return default_device()
    if d.__class__ is not device:
        d = device(d)
    if d.type == "cpu":
        return CPU
    cp = _require_cuda(f"device {str(d)!r}")
    index = cp.cuda.runtime.getDevice() if d.index is None else d.index
    count = cp.cuda.runtime.getDeviceCount()
    if index >= count:
        raise RuntimeError(f"device 'cuda:{index}' does not exist: {count} CUDA device(s) visible")
    return cuda_device(index)


_default: device | None = None


def default_device() -> device:
    """``GPUGRAD_DEVICE`` if set (``cpu`` or ``cuda[:N]``), else ``cuda`` when usable, else ``cpu``."""
    global _default
    if _default is None:
        env = os.environ.get("GPUGRAD_DEVICE", "").strip()
        if env:
            try:
                _default = canonical_device(env)
            except (ValueError, TypeError) as e:
                raise RuntimeError(f"GPUGRAD_DEVICE={env!r} is not a valid device: {e}") from None
        else:
            _default = canonical_device("cuda") if cuda_available() else CPU
    return _default


def set_default_device(d) -> None:
    """Make ``d`` the device of new tensors (like torch.set_default_device); None resets it."""
    global _default
    _default = None if d is None else canonical_device(d)


def array_module(d: device):
    """numpy for cpu, cupy for cuda."""
    return np if d.type == "cpu" else _require_cuda(str(d))


def device_of_array(a) -> device:
    """The device an array lives on."""
    if isinstance(a, np.ndarray):
        return CPU
    return cuda_device(a.device.id)


def as_cupy(a):
    """A CuPy view of a device array from any library (``__cuda_array_interface__``: torch,
    Numba, JAX); a CuPy array is returned as it is."""
    cp = _require_cuda("cuda")
    return a if isinstance(a, cp.ndarray) else cp.asarray(a)


def to_device(a, d: device, copy: bool = False):
    """Move (or copy) an array to device ``d``; no copy when it is already there unless asked."""
    if d.type == "cpu":
        if isinstance(a, np.ndarray):
            return a.copy() if copy else a
        return a.get()
    cp = _require_cuda(str(d))
    if not isinstance(a, np.ndarray) and a.device.id == d.index:
        return a.copy() if copy else a
    with cp.cuda.Device(d.index):
        return cp.array(a, copy=True)
