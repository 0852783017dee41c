"""Effective memory bandwidth of the kernels of ``kernels/`` on CuPy, against a plain copy.

An elementwise kernel is bound by memory: its figure of merit is the bytes it reads and writes
(every array input and every output, once) per second, as a fraction of what a device-to-device
copy moves per second on the same device (``cudaMemcpyAsync``: read + write, the ceiling).
Each kernel is timed on both CuPy paths of ``gpugrad._kernels.Kernel``: the
``cupy.ElementwiseKernel`` and the vectorized grid-stride RawKernel (float4 / double2 loads),
with outputs preallocated, so that only the kernel is timed (CUDA events around ``repeat``
back-to-back launches after ``warmup`` ones, which also compile).

Without CuPy or without a GPU every function returns None: the benchmark suite can call them
unconditionally. Used by ``benchmarks`` (wired by the lead)::

    from gpugrad._kernel_bench import kernel_bandwidth, bandwidth_table, format_table
    rows = bandwidth_table(n=1 << 26)          # every kernel, float32; None on CPU
    if rows is not None:
        print(format_table(rows))
"""
from __future__ import annotations

import numpy as np

from ._kernels import Kernel, kernels

__all__ = ["kernel_bandwidth", "bandwidth_table", "format_table"]

_FLAGS = {"maximize", "nesterov", "first"}  # 0/1 switches of kernels/optim.cu


def _cupy():
    """CuPy when it is installed and sees a device, else None."""
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.is_available() else None
    except Exception:  # noqa: BLE001 - a broken driver reads as "no GPU"
        return None


def _timed(cupy, fn, repeat: int, warmup: int) -> float:
    """Milliseconds per call of ``fn`` on the current stream (CUDA events)."""
    for _ in range(warmup):
        fn()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop) / repeat


def kernel_bandwidth(kernel, n: int = 1 << 26, dtype="float32", repeat: int = 20,
                     warmup: int = 3, numbers=None):
    """Bandwidth of one kernel (a ``Kernel`` or its name) on ``n``-element arrays of ``dtype``.

    Returns None without a GPU, else a dict: ``kernel``, ``n``, ``dtype``, ``bytes`` (read +
    written per launch), ``copy_ms``/``copy_gbps`` (a device-to-device copy of ``n``
    elements: its bytes read + written per second), and for ``elementwise`` and
    ``vectorized``: ``*_ms``, ``*_gbps`` and ``*_frac`` (the fraction of the copy's
    bandwidth). ``numbers``: the kernel's scalar inputs (defaults: 0 for the optimizers'
    flags, 0.5 otherwise)."""
    cupy = _cupy()
    if cupy is None:
        return None
    k = kernel if isinstance(kernel, Kernel) else kernels[kernel]
    d = k.definition
    dtype = np.dtype(dtype)
    rng = cupy.random.default_rng(0)
    numbers = list(numbers) if numbers is not None else \
        [0.0 if name in _FLAGS else 0.5 for name, s in d.inputs if s]
    args = []
    for name, scalar in d.inputs:
        if scalar:
            args.append(numbers.pop(0))
        elif name in d.masks:
            args.append(rng.random(n, dtype=np.float32) < 0.5)
        else:  # in [0.5, 1.5): inside every kernel's domain
            args.append((rng.random(n, dtype=np.float64) + 0.5).astype(dtype))
    args, _ = k._dtypes(args)
    outs = tuple(cupy.empty(n, dtype) for _ in d.outputs)
    nbytes = sum(a.nbytes for a in args if isinstance(a, cupy.ndarray)) + \
        sum(o.nbytes for o in outs)

    src, dst = cupy.empty(n, dtype), cupy.empty(n, dtype)
    stream = cupy.cuda.get_current_stream()
    copy_ms = _timed(cupy, lambda: dst.data.copy_from_device_async(src.data, src.nbytes,
                                                                   stream), repeat, warmup)
    copy_gbps = 2 * src.nbytes / copy_ms / 1e6
    row = {"kernel": k.name, "n": n, "dtype": dtype.name, "bytes": nbytes,
           "copy_ms": copy_ms, "copy_gbps": copy_gbps}
    paths = {"elementwise": lambda: k._launch_elementwise(args, outs)}
    if k._vectorizable(args, outs):
        paths["vectorized"] = lambda: k._launch_vectorized(args, outs)
    for path in ("elementwise", "vectorized"):
        if path not in paths:
            row.update({f"{path}_ms": None, f"{path}_gbps": None, f"{path}_frac": None})
            continue
        ms = _timed(cupy, paths[path], repeat, warmup)
        gbps = nbytes / ms / 1e6
        row.update({f"{path}_ms": ms, f"{path}_gbps": gbps, f"{path}_frac": gbps / copy_gbps})
    return row


def bandwidth_table(names=None, n: int = 1 << 26, dtype="float32", repeat: int = 20,
                    warmup: int = 3):
    """``kernel_bandwidth`` of every kernel (or of ``names``): a list of rows; None without
    a GPU."""
    if _cupy() is None:
        return None
    names = kernels.names() if names is None else list(names)
    return [kernel_bandwidth(name, n, dtype, repeat, warmup) for name in names]


def format_table(rows) -> str:
    """The rows of ``bandwidth_table`` as a text table (GB/s and % of the copy)."""
    lines = [f"{'kernel':34} {'MB':>7} {'copy GB/s':>10} {'elementwise':>17} "
             f"{'vectorized':>17}"]
    for r in rows:
        def cell(path):
            g, f = r[f"{path}_gbps"], r[f"{path}_frac"]
            return f"{'-':>17}" if g is None else f"{g:9.0f} ({100 * f:4.0f}%)"
        lines.append(f"{r['kernel']:34} {r['bytes'] / 1e6:7.0f} {r['copy_gbps']:10.0f} "
                     f"{cell('elementwise')} {cell('vectorized')}")
    return "\n".join(lines)
