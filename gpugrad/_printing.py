"""Formatting of tensors exactly as PyTorch prints them.

``format_tensor`` reproduces the output of ``repr(torch_tensor)`` for a host
``numpy.ndarray``: precision, scientific-notation choice, summarization with
``...``, line wrapping, nested indentation and the trailing ``key=value``
suffixes.  The rules mirror ``torch/_tensor_str.py`` (including its quirks,
since the goal is byte-for-byte identical output).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import numpy as np

__all__ = ["format_tensor", "set_printoptions", "get_printoptions", "printoptions"]

_PROFILES = {
    "default": dict(precision=4, threshold=1000, edgeitems=3, linewidth=80),
    "short": dict(precision=2, threshold=1000, edgeitems=2, linewidth=80),
    "full": dict(precision=4, threshold=math.inf, edgeitems=3, linewidth=80),
}

_DTYPE_PREFIX = "dtype=gpugrad."

# Module-global print options (torch keeps them global too).
_OPTS: dict[str, Any] = dict(_PROFILES["default"], sci_mode=None)


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None) -> None:
    """Set the global options used by :func:`format_tensor` (same meaning as torch).

    Args:
        precision: digits after the decimal point for floats (default 4).
        threshold: element count above which tensors are summarized (default 1000).
        edgeitems: items kept at each end of a summarized dimension (default 3).
        linewidth: characters per line used for wrapping (default 80).
        profile: ``"default"``, ``"short"`` or ``"full"``; applied first, then
            overridden by any of the explicit arguments.
        sci_mode: ``True``/``False`` forces scientific notation on/off; ``None``
            (also what every call without it resets to, as in torch) lets the
            formatter decide from the data.
    """
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"unknown print profile {profile!r}; expected one of {sorted(_PROFILES)}")
        _OPTS.update(_PROFILES[profile])
    for key, value in (("precision", precision), ("threshold", threshold),
                       ("edgeitems", edgeitems), ("linewidth", linewidth)):
        if value is not None:
            _OPTS[key] = value
    _OPTS["sci_mode"] = sci_mode


def get_printoptions() -> dict[str, Any]:
    """Return a copy of the current print options, usable as ``set_printoptions(**opts)``."""
    return dict(_OPTS)


@contextlib.contextmanager
def printoptions(**kwargs) -> Iterator[None]:
    """Context manager that temporarily applies ``set_printoptions(**kwargs)``."""
    old = get_printoptions()
    set_printoptions(**kwargs)
    try:
        yield
    finally:
        set_printoptions(**old)


class _Formatter:
    """Decides one common style and width for every element of a tensor."""

    def __init__(self, values: np.ndarray):
        self.floating = values.dtype.kind == "f"
        self.int_mode, self.sci_mode, self.width = True, False, 1
        flat = values.ravel()
        if not self.floating:
            self.width = max([1] + [len(str(v)) for v in flat.tolist()])
            return
        vals = flat[np.isfinite(flat) & (flat != 0)]
        if vals.size == 0:  # only zeros / nan / inf: keep the defaults
            return
        mags = np.abs(vals.astype(np.float64))  # float64 so float16 cannot overflow
        lo, hi = float(mags.min()), float(mags.max())  # Python floats: hi / lo -> inf, no warning
        self.int_mode = bool(np.all(vals == np.ceil(vals)))
        forced = _OPTS["sci_mode"]
        self.sci_mode = (hi / lo > 1000.0 or hi > 1.0e8 or lo < 1.0e-4) if forced is None else forced
        p = _OPTS["precision"]
        if self.sci_mode:
            widths = (len(f"{v:.{p}e}") for v in vals.tolist())
        elif self.int_mode:  # +1 for the trailing "." marking a float
            widths = (len(f"{v:.0f}") + 1 for v in vals.tolist())
        else:
            widths = (len(f"{v:.{p}f}") for v in vals.tolist())
        # Zeros and non-finite values are not measured (torch does the same),
        # so e.g. "-inf" may stick out of the column.
        self.width = max(self.width, *widths)

    def format(self, v) -> str:
        """Format one Python scalar, right-aligned to the common width."""
        p = _OPTS["precision"]
        if not self.floating:
            s = str(v)
        elif self.sci_mode:
            s = f"{v:.{p}e}"
        elif self.int_mode:
            s = f"{v:.0f}" + ("" if math.isinf(v) or math.isnan(v) else ".")
        else:
            s = f"{v:.{p}f}"
        return s.rjust(self.width)


def _summarized_values(a: np.ndarray, e: int) -> np.ndarray:
    """The elements that will actually be shown once ``a`` is summarized (flat)."""
    if a.ndim <= 1:
        # Note: with e == 0, a[-0:] is the whole vector -- a torch quirk we keep.
        return np.concatenate((a[:e], a[-e:])) if a.ndim and len(a) > 2 * e else a.ravel()
    if not e:
        return a.ravel()[:0]
    rows = list(a[:e]) + list(a[-e:]) if len(a) > 2 * e else list(a)
    return np.concatenate([_summarized_values(r, e) for r in rows])


def _body(a: np.ndarray, indent: int, summarize: bool, fmt: _Formatter) -> str:
    """Nested ``[...]`` text for ``a``; ``indent`` is the column of its ``[``."""
    e = _OPTS["edgeitems"]
    if a.ndim == 0:
        return fmt.format(a.item())
    if a.ndim == 1:
        if summarize and not e:
            data = ["..."]
        elif summarize and len(a) > 2 * e:
            data = ([fmt.format(v) for v in a[:e].tolist()] + [" ..."]
                    + [fmt.format(v) for v in a[-e:].tolist()])
        else:
            data = [fmt.format(v) for v in a.tolist()]
        per_line = max(1, (_OPTS["linewidth"] - indent) // (fmt.width + 2))  # +2 for ", "
        lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
        return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
    if summarize and len(a) > 2 * e:
        slices = ([_body(a[i], indent + 1, summarize, fmt) for i in range(e)] + ["..."]
                  + [_body(a[i], indent + 1, summarize, fmt) for i in range(len(a) - e, len(a))])
    else:
        slices = [_body(x, indent + 1, summarize, fmt) for x in a]
    # Blocks of a k-D tensor are separated by k-1 newlines (blank lines for k > 2).
    return "[" + ("," + "\n" * (a.ndim - 1) + " " * (indent + 1)).join(slices) + "]"


def _add_suffixes(text: str, suffixes: list[str], indent: int) -> str:
    """Append ``, suffix`` pieces, wrapping to a new line when one would overflow."""
    parts = [text]
    # torch's off-by-some measure of the last line (+2 when there is no newline); kept verbatim.
    last_len = len(text) - text.rfind("\n") + 1
    for suffix in suffixes:
        # Measure "dtype=gpugrad.X" as torch's "dtype=torch.X" so line breaks land
        # exactly where torch puts them (torch's +2 slack keeps us within linewidth).
        size = len(suffix)
        if suffix.startswith(_DTYPE_PREFIX):
            size -= len("gpugrad.") - len("torch.")
        if last_len + size + 2 > _OPTS["linewidth"]:
            parts.append(",\n" + " " * indent + suffix)
            last_len = indent + size
        else:
            parts.append(", " + suffix)
            last_len += size + 2
    return "".join(parts) + ")"


def format_tensor(array, *, dtype_name: str, is_default_dtype: bool, device: str | None,
                  suffixes: list[str], prefix: str = "tensor(") -> str:
    """Return the text ``repr(torch.tensor(array))`` would give, with ``gpugrad.`` dtypes.

    Args:
        array: host ``numpy.ndarray`` holding the tensor's data.
        dtype_name: dtype name without module, e.g. ``"float64"``.
        is_default_dtype: True when torch would omit ``dtype=`` (default float,
            int64, bool).  Empty tensors show the dtype unless it is the default
            *float* dtype, as torch does.
        device: ``None`` for CPU, else e.g. ``"cuda:0"`` (printed as ``device='cuda:0'``).
        suffixes: further formatted pieces (``"requires_grad=True"``,
            ``"grad_fn=<AddBackward0>"``), appended after device and dtype.
        prefix: text before the data; its length sets the continuation indent.
    """
    a = np.asarray(array)
    if a.dtype.kind == "c":
        raise NotImplementedError("complex tensors are not supported by format_tensor")
    indent = len(prefix)
    extra = [] if device is None else [f"device='{device}'"]
    dtype_suffix = _DTYPE_PREFIX + dtype_name
    if a.size == 0:
        if a.ndim != 1:  # like NumPy, show the shape unless it is (0,)
            extra.append(f"size={tuple(a.shape)}")
        # No elements to infer the dtype from, so even int64/bool are named.
        if not is_default_dtype or dtype_name in ("int64", "bool"):
            extra.append(dtype_suffix)
        body = "[]"
    else:
        if not _OPTS["edgeitems"]:  # nothing of the data is visible, so give the shape
            extra.append(f"size={tuple(a.shape)}")
        if not is_default_dtype:
            extra.append(dtype_suffix)
        summarize = a.size > _OPTS["threshold"]
        fmt = _Formatter(_summarized_values(a, _OPTS["edgeitems"]) if summarize else a)
        body = _body(a, indent, summarize, fmt)
    return _add_suffixes(prefix + body, extra + list(suffixes), indent)
