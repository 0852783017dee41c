"""NumPy/CuPy differences that need more than ``xp = xp_of(a)``.

- ``scatter_add``: ``numpy.add.at`` on the CPU; ``cupyx.scatter_add`` on CUDA, which uses
  CUDA's ``atomicAdd`` and so refuses int64, int8/16, uint8 and bool arrays (it accepts int32,
  uint32, uint64, float16/32/64). torch accumulates into all of them (``index_put_`` with
  ``accumulate=True`` on a LongTensor is a common way to count), so those dtypes go through
  a supported one: int64 as uint64 (two's complement addition is the same bit pattern), the
  narrow ones through int32 and back (the wrap-around and, for bool, the "any" of NumPy).
- ``host_minmax``: the (min, max) of an index array as Python ints with ONE device-to-host
  copy (two ``int(a.min())``/``int(a.max())`` calls are two synchronisations on CUDA).

Everything here runs on the CPU; the CuPy branch is exercised on the CPU by passing NumPy
stand-ins (``xp``/``scatter``) in tests/test_cupy_compat.py.
"""
from __future__ import annotations

import numpy as np

__all__ = ["scatter_add", "host_minmax"]

_ndarray = np.ndarray
# the dtypes cupyx.scatter_add accepts (cupy/_core/_routines_indexing.pyx, _scatter_op_single)
ATOMIC_ADD_DTYPES = frozenset(np.dtype(t) for t in (np.int32, np.uint32, np.uint64,
                                                     np.float16, np.float32, np.float64))


def scatter_add(out, idx, values) -> None:
    """``out[idx] += values`` in place, repeated positions in ``idx`` all adding up (NumPy's
    ``add.at``), for NumPy and CuPy arrays of any numeric or bool dtype."""
    if out.__class__ is _ndarray:
        np.add.at(out, idx, values)
        return
    import cupy
    import cupyx
    _scatter_add_via(cupy, cupyx.scatter_add, out, idx, values)


def _scatter_add_via(xp, scatter, out, idx, values) -> None:
    """The CuPy path of ``scatter_add`` with the array module and ``cupyx.scatter_add``
    passed in (so that tests can run it with NumPy stand-ins)."""
    dt = out.dtype
    if dt in ATOMIC_ADD_DTYPES:
        scatter(out, idx, values)
    elif dt == np.int64:
        # the same bits as uint64 additions (mod 2**64): a view, no copy of ``out``
        v = xp.asarray(values, dtype=np.int64).view(np.uint64)
        scatter(out.view(np.uint64), idx, v)
    elif dt.kind in "biu" and dt.itemsize < 4:
        tmp = out.astype(np.int32)
        scatter(tmp, idx, xp.asarray(values).astype(np.int32))
        out[...] = tmp.astype(dt)  # int8/16, uint8 wrap as NumPy's add.at; bool: any
    else:
        raise TypeError(f"scatter_add: accumulating into a {dt} array is not supported on "
                        "CUDA (use a float or int32/int64 tensor)")


def host_minmax(a) -> tuple:
    """``(int(a.min()), int(a.max()))`` of a non-empty integer array, with one host transfer
    on CUDA (one synchronisation instead of two)."""
    if a.__class__ is _ndarray:
        return int(a.min()), int(a.max())
    import cupy
    lo, hi = cupy.stack((a.min(), a.max())).tolist()
    return int(lo), int(hi)
