"""The float32 matmul precision: one setting behind ``gpugrad.set_float32_matmul_precision``
and ``gpugrad.backends.cuda.matmul.allow_tf32``, and how it reaches the two CUDA matmul paths.

The state is the precision string (torch's three values); ``tf32`` caches whether it allows
TF32 ("high" and "medium" do, as in torch on CUDA) so that the matmul paths pay one global
read to check it:

- eager CuPy matmul (``ops/linalg.py``): CuPy takes a float32 GEMM's compute type from a
  process-wide table (``cupy._core._routines_linalg.set_compute_type``, private; it reads
  ``CUPY_TF32`` once, at the first float32 matmul, when nothing has set it). ``sync_cupy``
  writes the table; it runs when the flag changes (if CuPy is already in use) and, failing
  that, before the next CuPy matmul (``cupy_mode is not tf32``). gpugrad's flag, not
  ``CUPY_TF32``, then decides; since the table is CuPy's own, plain ``cupy.matmul`` calls in
  the same process follow it too.
- captured matmul (``_cublas.py``): gpugrad's cuBLAS handle gets the math mode
  ``TF32_TENSOR_OP_MATH`` or ``DEFAULT_MATH`` when the handle is next used and the flag has
  changed. A CUDA graph keeps the mode it was captured with (as torch's do).

On NumPy (CPU) the setting has no effect, as torch's has none on CPU matmuls.
"""
from __future__ import annotations

import warnings

__all__ = ["PRECISIONS", "precision", "tf32", "set_precision", "set_tf32", "sync_cupy"]

PRECISIONS = ("highest", "high", "medium")

precision = "highest"  # torch's default: full fp32
tf32 = False  # precision != "highest"; read by the matmul paths on every call
# The TF32 setting last written into CuPy's table (None: not yet written). The eager matmul
# path compares it with ``tf32`` by identity, so both are only ever True, False or None.
cupy_mode = None


def set_precision(value) -> None:
    """Set the precision string (torch's checks and messages), and apply it."""
    global precision, tf32
    if not isinstance(value, str):
        raise RuntimeError(f"set_float32_matmul_precision expects a str, but got "
                           f"{type(value).__name__}")
    if value not in PRECISIONS:
        # torch warns and leaves the setting unchanged (it does not raise)
        warnings.warn(f"{value} is not one of 'highest', 'high', or 'medium'; the current "
                      "set_float32_matmul_precision call has no effect.", UserWarning,
                      stacklevel=3)
        return
    precision = value
    tf32 = value != "highest"
    _apply_now()


def set_tf32(value) -> None:
    """``allow_tf32 = value``: True is precision "high", False "highest" (torch's rule)."""
    if value is not True and value is not False:  # torch accepts a Python bool only
        raise RuntimeError(f"set_allow_tf32_cublas expects a bool, but got "
                           f"{type(value).__name__}")
    set_precision("high" if value else "highest")


def _apply_now() -> None:
    """Write the setting into CuPy's table now if gpugrad already uses CuPy (so that other
    CuPy matmuls of the process agree at once); else the next CuPy matmul does it."""
    from .. import _backend
    cp = _backend._cupy if _backend._cupy_checked else None  # never import CuPy from here
    if cp is not None and cupy_mode is not tf32:
        try:
            sync_cupy(cp)
        except Exception:  # noqa: BLE001 - no usable device now: the next matmul retries
            pass


def sync_cupy(cp) -> None:
    """Make CuPy's float32 matmuls use TF32 or not, as ``tf32`` says (on the current
    device; a device without TF32, compute capability < 8.0, gets full fp32 as in torch)."""
    global cupy_mode
    want = tf32
    if want and int(cp.cuda.Device().compute_capability) < 80:
        mode_tf32 = False
    else:
        mode_tf32 = want
    _set_cupy_compute_type(cp, mode_tf32)
    cupy_mode = want


_warned = False


def _cupy_linalg():
    """CuPy's private matmul module, which holds the compute-type table (a function, so
    that tests can put a stand-in in its place)."""
    from cupy._core import _routines_linalg
    return _routines_linalg


def _set_cupy_compute_type(cp, use_tf32: bool) -> None:
    """The one use of CuPy's private compute-type API. If a CuPy release moves it, warn once
    and leave CuPy's own default (full fp32 unless ``CUPY_TF32=1``): the flag only allows
    a faster, less precise product, so ignoring it never gives wrong results."""
    global _warned
    try:
        linalg = _cupy_linalg()
        set_compute_type = linalg.set_compute_type
        mode = linalg.COMPUTE_TYPE_TF32 if use_tf32 else linalg.COMPUTE_TYPE_DEFAULT
    except (ImportError, AttributeError) as e:
        if not _warned:
            _warned = True
            warnings.warn(
                f"gpugrad could not switch CuPy {getattr(cp, '__version__', '?')}'s matmul "
                f"precision ({type(e).__name__}: {e}): CuPy no longer has "
                "cupy._core._routines_linalg.set_compute_type / COMPUTE_TYPE_TF32. Eager "
                "float32 matmuls keep CuPy's default (full fp32; TF32 with CUPY_TF32=1 in the "
                "environment before the first matmul); hint: install a CuPy version that has "
                "them, or report this to gpugrad", RuntimeWarning, stacklevel=4)
        return
    set_compute_type("f", mode)  # float32 (and complex64, which shares CuPy's entry)
