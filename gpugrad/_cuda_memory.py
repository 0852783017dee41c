"""Memory statistics on CuPy's default memory pool, and the peak that CuPy does not keep.

``memory_allocated`` is the pool's ``used_bytes`` (bytes in live arrays, rounded to CuPy's
512-byte blocks), ``memory_reserved`` its ``total_bytes`` (held from the device, cached
blocks included). CuPy keeps no peak, so gpugrad puts a small counting allocator in front of
the pool, once, when CUDA is first found usable (``_backend.cupy_or_none``): every CuPy
allocation goes through ``_tracking_malloc``, which calls the pool and then records the
pool's ``used_bytes`` if it is a new maximum for the device. In-use bytes only grow at an
allocation, so this is the exact peak, temporaries inside an op included.

Why this design: sampling at ``Tensor._make`` would tax every op, CPU ones too, and miss
the temporaries made inside an op; a ``cupy.cuda.MemoryHook`` sees the same events but is
thread-local (it must be entered with ``with`` in every thread) and calls Python on frees
as well. The allocator costs one Python call and one counter read per CuPy allocation, on
the GPU path only: +0.22 us per allocation (timeit of the installed wrapper around C-level
stand-ins for CuPy's calls, on a 2-core CI-class host), against 8-14 us of host time per
CuPy op on the lent H100: about 2%. ``used_bytes`` is an atomic counter in
CuPy 14; older CuPy sums the live blocks, so there the cost grows with the number of live
arrays. If the process already set its own allocator (for example one shared with PyTorch),
gpugrad leaves it in place: the peak is then not tracked, and ``max_memory_allocated``
reports the current usage.
"""
from __future__ import annotations

__all__ = ["install", "installed", "peak", "reset_peak"]

_peaks: list = []          # per device index: the highest used_bytes seen at an allocation
_tracking_malloc = None    # the installed allocator (None: not installed)
_pool = None


def install(cp) -> bool:
    """Put the counting allocator in front of CuPy's default pool (once). Never raises:
    without it only the peak statistics are lost."""
    global _tracking_malloc, _pool
    if _tracking_malloc is not None:
        return True
    try:
        pool = cp.get_default_memory_pool()
        if cp.cuda.get_allocator() != pool.malloc:
            return False  # someone else's allocator: leave it alone
        n = cp.cuda.runtime.getDeviceCount()
        peaks = _peaks  # the closure and reset_peak share this one list
        malloc, used = pool.malloc, pool.used_bytes

        def tracking_malloc(size):
            mem = malloc(size)
            u = used()
            d = mem.device_id
            if u > peaks[d]:
                peaks[d] = u
            return mem

        peaks[:] = [0] * n
        cp.cuda.set_allocator(tracking_malloc)
    except Exception:  # e.g. inside cupy.cuda.using_allocator(): no peak tracking
        return False
    _tracking_malloc, _pool = tracking_malloc, pool
    return True


def installed(cp) -> bool:
    """True while gpugrad's counting allocator is CuPy's current allocator."""
    return _tracking_malloc is not None and cp.cuda.get_allocator() is _tracking_malloc


def peak(cp, index: int, current: int) -> int:
    """The peak of in-use bytes on device ``index`` (``current`` when not tracked)."""
    if not installed(cp) or index >= len(_peaks):
        return current
    return max(_peaks[index], current)


def reset_peak(index: int, current: int) -> None:
    """Restart peak tracking of device ``index`` from ``current`` in-use bytes."""
    if index < len(_peaks):
        _peaks[index] = current
