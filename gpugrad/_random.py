"""Random number generation: one generator per device, seeded together by ``manual_seed``.

CPU draws come from NumPy's PCG64 ``Generator``; CUDA draws from CuPy's ``RandomState``
on the device. The same seed gives the same numbers on the same device (the two devices'
streams differ, as torch's CPU and CUDA streams do).
"""
from __future__ import annotations

import numpy as np

from . import _backend

__all__ = ["manual_seed", "seed", "initial_seed", "generator_for", "Generator"]

_initial_seed = 0x5EED
_cpu = np.random.Generator(np.random.PCG64(_initial_seed))
_cuda: dict = {}


class Generator:
    """Returned by ``manual_seed``: names the seed, like torch.Generator."""

    def __init__(self, seed_value: int) -> None:
        self._seed = seed_value

    def initial_seed(self) -> int:
        """The seed this generator was last seeded with."""
        return self._seed

    def manual_seed(self, seed_value: int) -> "Generator":
        """Reseed every device's generator."""
        return manual_seed(seed_value)

    def __repr__(self) -> str:
        return f"<gpugrad.Generator seed={self._seed}>"


def manual_seed(seed_value: int) -> Generator:
    """Seed the generators of all devices (CPU now, CUDA when first used)."""
    global _cpu, _initial_seed
    seed_value = int(seed_value)
    if seed_value < 0:
        seed_value &= (1 << 64) - 1  # torch accepts negatives by wrapping
    _initial_seed = seed_value
    _cpu = np.random.Generator(np.random.PCG64(seed_value))
    _cuda.clear()
    return Generator(seed_value)


def seed() -> int:
    """Seed from a non-deterministic source and return the seed."""
    s = int(np.random.SeedSequence().entropy % (1 << 63))
    manual_seed(s)
    return s


def initial_seed() -> int:
    """The seed last given to ``manual_seed``."""
    return _initial_seed


def generator_for(device):
    """The generator of ``device``: a NumPy Generator, or a CuPy RandomState."""
    if device.type == "cpu":
        return _cpu
    gen = _cuda.get(device.index)
    if gen is None:
        cp = _backend.array_module(device)
        with cp.cuda.Device(device.index):
            gen = _cuda[device.index] = cp.random.RandomState(_initial_seed)
    return gen


def uniform(device, shape, dtype):
    """Uniform [0, 1) samples."""
    g = generator_for(device)
    if device.type == "cpu":
        if dtype.np in (np.float32, np.float64):
            return g.random(shape, dtype=dtype.np)
        return g.random(shape).astype(dtype.np)
    return g.random_sample(shape, dtype=dtype.np if dtype.np != np.float16 else np.float32) \
        .astype(dtype.np, copy=False)


def normal(device, shape, dtype):
    """Standard normal samples."""
    g = generator_for(device)
    if device.type == "cpu":
        if dtype.np in (np.float32, np.float64):
            return g.standard_normal(shape, dtype=dtype.np)
        return g.standard_normal(shape).astype(dtype.np)
    return g.standard_normal(shape, dtype=dtype.np if dtype.np != np.float16 else np.float32) \
        .astype(dtype.np, copy=False)


def integers(device, low, high, shape, dtype):
    """Uniform integers in [low, high)."""
    g = generator_for(device)
    if device.type == "cpu":
        return g.integers(low, high, size=shape, dtype=np.int64).astype(dtype.np, copy=False)
    return g.randint(low, high, size=shape, dtype=np.int64).astype(dtype.np, copy=False)
