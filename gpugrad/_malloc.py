"""Keep NumPy's large temporaries off fresh pages: glibc malloc's mmap and trim thresholds.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB at start) with its own
``mmap`` and returns it to the system on free; and it gives the top of the heap back once
more than ``M_TRIM_THRESHOLD`` of it is free. A training step allocates and frees arrays of
the same sizes over and over (gradients, ``lr * p.grad``, activations): each becomes a fresh
mapping whose pages fault in on first touch -- ~440 minor faults per W1-small step, ~1.5 ms
of a 3.5 ms step on our CPU machines, more than its matrix products. glibc raises both
thresholds by itself once a large block has been freed (up to 32 MiB / 64 MiB: any process
that has freed a 32 MiB array runs so; importing torch does it), which is why the same step
can be fast or slow depending on what ran before it.

gpugrad sets those values at import, so every run starts in glibc's settled state: arrays
below 32 MiB come from the heap and are reused; at most 64 MiB of free heap is kept. Set
``GPUGRAD_MALLOC_TUNING=0`` to leave malloc as it is; malloc settings given in the
environment (``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES=glibc.malloc...``, ...) are left
alone too. Not glibc (macOS, musl, Windows): nothing to do.
"""
from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["tune"]

# glibc's mallopt parameters (malloc.h) and the values its own dynamic rule ends at on 64-bit
# systems (DEFAULT_MMAP_THRESHOLD_MAX, and twice that for trimming).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20

# A user who tuned malloc through the environment keeps their values.
_USER_TUNING = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                "MALLOC_MMAP_MAX_")

#: What tune() did: None before it ran, else a short reason.
status = None


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a glibc system
        return False


def tune(environ=os.environ, libc_loader=None) -> bool:
    """Set glibc's mmap and trim thresholds (see the module docstring); True when set.
    ``libc_loader`` (tests) returns an object with ``mallopt``."""
    global status
    if environ.get("GPUGRAD_MALLOC_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        status = "off (GPUGRAD_MALLOC_TUNING=0)"
        return False
    if any(k in environ for k in _USER_TUNING) or "malloc" in environ.get("GLIBC_TUNABLES", ""):
        status = "left to the environment's malloc settings"
        return False
    if libc_loader is None:
        if platform.system() != "Linux" or not _glibc():
            status = "not glibc"
            return False
        libc_loader = lambda: ctypes.CDLL("libc.so.6")  # noqa: E731
    try:
        libc = libc_loader()
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError) as e:  # no such library or symbol: leave malloc alone
        status = f"not set ({e})"
        return False
    status = "set" if ok else "refused by mallopt"
    return ok
