"""``gpugrad.cuda``: CUDA device queries (safe to call on machines without CUDA)."""
from __future__ import annotations

from . import _backend

__all__ = ["is_available", "device_count", "current_device", "synchronize", "manual_seed"]


def is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _backend.cuda_available()


def device_count() -> int:
    """The number of visible CUDA devices (0 without CUDA)."""
    cp = _backend.cupy_or_none()
    return 0 if cp is None else cp.cuda.runtime.getDeviceCount()


def current_device() -> int:
    """The index of the current CUDA device."""
    cp = _backend._require_cuda("gpugrad.cuda.current_device()")
    return cp.cuda.runtime.getDevice()


def synchronize(device=None) -> None:
    """Wait for all work queued on the device to finish (no-op without CUDA)."""
    cp = _backend.cupy_or_none()
    if cp is None:
        return
    if device is None:
        cp.cuda.runtime.deviceSynchronize()
        return
    d = _backend.canonical_device(device)
    with cp.cuda.Device(d.index):
        cp.cuda.runtime.deviceSynchronize()


def manual_seed(seed: int) -> None:
    """Seed the CUDA generators (same as gpugrad.manual_seed, which seeds every device)."""
    from ._random import manual_seed as seed_all
    seed_all(seed)


manual_seed_all = manual_seed
