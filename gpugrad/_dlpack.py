"""``gpugrad.from_dlpack``: a tensor sharing memory with any DLPack producer.

Producers are torch tensors, NumPy and CuPy arrays, JAX arrays, gpugrad tensors, ... (any
object with ``__dlpack__`` and ``__dlpack_device__``), or a legacy ``"dltensor"`` capsule.
The consumer is NumPy for CPU data and CuPy for CUDA data, so nothing is copied: writes
through either side show in the other. The export side is ``Tensor.__dlpack__`` /
``__dlpack_device__`` (and ``__cuda_array_interface__`` on CUDA tensors) in ``_tensor.py``.
"""
from __future__ import annotations

import ctypes

import numpy as np

from . import _backend, _dtypes
from ._tensor import Tensor

__all__ = ["from_dlpack"]

# DLDeviceType codes (dlpack.h)
_CPU, _CUDA, _CUDA_HOST, _CUDA_MANAGED = 1, 2, 3, 13
_NAMES = {1: "CPU", 2: "CUDA", 3: "CUDA host (pinned)", 4: "OpenCL", 7: "Vulkan", 8: "Metal",
          9: "VPI", 10: "ROCm", 11: "ROCm host", 13: "CUDA managed", 14: "oneAPI"}


def from_dlpack(ext_tensor) -> Tensor:
    """A tensor sharing memory with ``ext_tensor`` (an object with ``__dlpack__``, such as a
    torch tensor or a NumPy/CuPy array, or a DLPack capsule), without copying.

    CPU data gives a CPU tensor; CUDA data a tensor on the same ``cuda:N`` (this needs CuPy).
    The result does not require grad, like torch.from_dlpack."""
    if _is_capsule(ext_tensor):
        ext_tensor = _Capsule(ext_tensor)
    elif not hasattr(ext_tensor, "__dlpack__"):
        raise TypeError(f"from_dlpack(): expected an object with __dlpack__ (a tensor or array "
                        f"from torch, NumPy, CuPy, JAX, ...) or a DLPack capsule, got "
                        f"{type(ext_tensor).__name__}")
    if hasattr(ext_tensor, "__dlpack_device__"):
        kind, index = ext_tensor.__dlpack_device__()
        kind, index = int(kind), int(index)
    else:  # a producer from before DLPack's device query: assume host memory
        kind, index = _CPU, 0
    if kind in (_CPU, _CUDA_HOST):  # pinned host memory is host memory: NumPy reads it
        try:
            array = np.from_dlpack(ext_tensor)
        except (TypeError, BufferError, RuntimeError, ValueError) as e:
            raise _unsupported(ext_tensor, e) from e
        if isinstance(ext_tensor, _Capsule) and not array.flags.writeable:
            array = _writeable(array)
    elif kind in (_CUDA, _CUDA_MANAGED):
        cp = _backend._require_cuda("from_dlpack() of CUDA data")
        _backend.canonical_device(_backend.cuda_device(index))  # a clear error for a bad index
        try:
            with cp.cuda.Device(index):
                array = cp.from_dlpack(ext_tensor)
        except (TypeError, BufferError, ValueError) as e:
            raise _unsupported(ext_tensor, e) from e
    else:
        raise RuntimeError(
            f"from_dlpack(): the data lives on a {_NAMES.get(kind, f'type-{kind}')} device "
            f"(DLPack device {kind}, index {index}); gpugrad tensors live on the CPU or a CUDA "
            "device. Copy it to one of them first (e.g. with the producer's .cpu()).")
    try:
        _dtypes.from_numpy_dtype(array.dtype)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:
        raise TypeError(f"from_dlpack(): {e}") from None
    return Tensor._make(array)


def _unsupported(obj, e) -> TypeError:
    reason = str(e).rstrip(". ")
    hint = ("gpugrad supports float16/32/64, int8/16/32/64, uint8 and bool: convert the data "
            "first (e.g. with the producer's .float())") if "dtype" in reason.lower() else \
        ("a producer may refuse to share its memory (torch: tensors that require grad): pass "
         "a detached tensor (t.detach())")
    return TypeError(f"from_dlpack(): cannot import {type(obj).__name__} data: {reason}. {hint}.")


# ---- legacy capsules ---------------------------------------------------------------------------
def _is_capsule(obj) -> bool:
    return type(obj).__name__ == "PyCapsule"


class _Capsule:
    """A capsule behind the ``__dlpack__`` protocol, so that NumPy and CuPy (which want a
    producer object, not a capsule) can consume it. Its device is read from the DLTensor."""

    def __init__(self, capsule) -> None:
        self.capsule = capsule
        self.device = _capsule_device(capsule)

    def __dlpack__(self, **_):
        return self.capsule

    def __dlpack_device__(self):
        return self.device


class _WriteableView:
    """Owner of a writeable view of ``array``'s memory (it keeps ``array`` alive)."""

    def __init__(self, array) -> None:
        self.array = array
        iface = dict(array.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface


def _writeable(array):
    # NumPy makes arrays from legacy capsules read-only, since DLPack before 1.0 cannot say
    # whether the producer allows writes; torch treats them as writeable, and so do we.
    return np.asarray(_WriteableView(array))


_api = ctypes.pythonapi
_api.PyCapsule_GetName.restype = ctypes.c_char_p
_api.PyCapsule_GetName.argtypes = [ctypes.py_object]
_api.PyCapsule_GetPointer.restype = ctypes.c_void_p
_api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]


def _capsule_device(capsule) -> tuple:
    """(device type, index) of a DLPack capsule, read without consuming it."""
    name = _api.PyCapsule_GetName(capsule)
    if name not in (b"dltensor", b"dltensor_versioned"):
        raise TypeError(f"from_dlpack(): the capsule is named {name!r}, not 'dltensor': it was "
                        "already consumed (a DLPack capsule can be imported only once) or is "
                        "not a DLPack capsule")
    ptr = _api.PyCapsule_GetPointer(capsule, name)
    # DLManagedTensor starts with its DLTensor; DLManagedTensorVersioned has a version,
    # manager_ctx, deleter and flags (8 bytes each) first. DLTensor: void* data, then
    # DLDevice {int32 device_type; int32 device_id}.
    offset = 0 if name == b"dltensor" else 32
    device = (ctypes.c_int32 * 2).from_address(ptr + offset + ctypes.sizeof(ctypes.c_void_p))
    return int(device[0]), int(device[1])
