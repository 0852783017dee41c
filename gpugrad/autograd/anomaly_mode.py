"""Anomaly mode: ``detect_anomaly()`` / ``set_detect_anomaly(True)``, as in torch.

While it is on:

- every recorded Function application keeps the stack of the user code that ran its
  forward (``grad_fn.metadata["traceback_"]``, a list of formatted frames, as torch);
- the reverse pass checks each node's results: a node that returns NaN (or inf) raises
  ``RuntimeError: Function 'DivBackward0' returned nan values in its 0th output.``, and any
  error raised in a node's backward comes with a ``UserWarning`` (and, on Python 3.11+, a note
  on the exception) showing the traceback of the forward call that made the node.

Zero cost when off: the stack is recorded by swapping ``function._record`` (the routine that
links a Function application into the graph) for a wrapper while the mode is on, so apply's
hot path has nothing to check; the engine reads the flag once per backward pass.
The mode is global (all threads), as torch's.
"""
from __future__ import annotations

import os
import traceback
import warnings

from . import function as _function
from .grad_mode import _DecoratorContextManager

__all__ = ["detect_anomaly", "set_detect_anomaly", "is_anomaly_enabled",
           "is_anomaly_check_nan_enabled"]


class _Mode:
    enabled = False
    check_nan = True


_mode = _Mode()
_plain_record = None  # function._record while the recording wrapper is installed


def is_anomaly_enabled() -> bool:
    """True while anomaly detection is on."""
    return _mode.enabled


def is_anomaly_check_nan_enabled() -> bool:
    """True when anomaly detection also checks backward results for NaN / inf."""
    return _mode.check_nan


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_frames():
    """The current stack without gpugrad's own frames (the op wrappers, apply, this module):
    what is left shows where in user code the forward ran."""
    frames = traceback.extract_stack()
    user = [f for f in frames if not os.path.abspath(f.filename).startswith(_PACKAGE_DIR)]
    return traceback.format_list(user or frames)


def _record_with_stack(ctx, *args):
    ctx.metadata["traceback_"] = _user_frames()
    return _plain_record(ctx, *args)


def _set(enabled: bool, check_nan: bool) -> None:
    global _plain_record
    _mode.enabled, _mode.check_nan = bool(enabled), bool(check_nan)
    if enabled and _plain_record is None:
        _plain_record = _function._record
        _function._record = _record_with_stack
    elif not enabled and _plain_record is not None:
        _function._record = _plain_record
        _plain_record = None


_WARNING = ("Anomaly Detection has been enabled. This mode will increase the runtime and "
            "should only be enabled for debugging.")


class detect_anomaly(_DecoratorContextManager):
    """Context manager (and decorator) that turns anomaly detection on inside it::

        with gpugrad.autograd.detect_anomaly():
            loss = model(x)
            loss.backward()   # a NaN made in backward raises, naming the node and where
                              # its forward ran

    ``check_nan=False`` keeps the forward tracebacks but skips the NaN / inf checks.
    """

    def __init__(self, check_nan: bool = True) -> None:
        self.check_nan = check_nan
        warnings.warn(_WARNING, UserWarning, stacklevel=2)

    def clone(self):
        """A fresh instance with the same arguments (no second warning)."""
        c = type(self).__new__(type(self))
        c.check_nan = self.check_nan
        return c

    def __enter__(self) -> None:
        self._prev = (_mode.enabled, _mode.check_nan)
        _set(True, self.check_nan)

    def __exit__(self, *exc) -> None:
        _set(*self._prev)


class set_detect_anomaly(_DecoratorContextManager):
    """Turn anomaly detection on or off: at once as a plain call
    (``set_detect_anomaly(True)``), or for a ``with`` block / decorated function."""

    def __init__(self, mode: bool, check_nan: bool = True) -> None:
        self._prev = (_mode.enabled, _mode.check_nan)
        self.mode, self.check_nan = bool(mode), bool(check_nan)
        _set(self.mode, self.check_nan)

    def __call__(self, func):
        _set(*self._prev)  # as a decorator it must not switch at decoration time
        return super().__call__(func)

    def clone(self):
        """A fresh switch with the same mode."""
        prev = (_mode.enabled, _mode.check_nan)
        c = type(self)(self.mode, self.check_nan)
        c._prev = prev
        _set(*prev)
        return c

    def __enter__(self) -> None:
        _set(self.mode, self.check_nan)

    def __exit__(self, *exc) -> None:
        _set(*self._prev)


# ---- used by the engine while the mode is on ---------------------------------------------------
def forward_trace(node) -> str:
    """The recorded forward stack of ``node`` ('' if it was made while the mode was off)."""
    meta = node._metadata
    frames = meta.get("traceback_") if meta else None
    return "".join(frames) if frames else ""


def _explain(node, err: BaseException) -> None:
    trace = forward_trace(node)
    if not trace:
        msg = (f"Error detected in {node.name()}. No forward pass information available. "
               "Enable detect anomaly during forward pass for more information.")
    else:
        msg = (f"Error detected in {node.name()}. Traceback of forward call that caused the "
               f"error:\n{trace}")
    warnings.warn(msg, UserWarning, stacklevel=4)
    if hasattr(err, "add_note"):  # Python 3.11+: the stack also travels with the exception
        err.add_note(msg)


def _has(g, kind: str) -> bool:
    """True if the gradient's array holds a nan (``kind='nan'``) or an inf."""
    from .. import _backend
    a = g._data
    if a.dtype.kind not in "fc":
        return False
    xp = _backend.array_module(g.device)
    return bool((xp.isnan(a) if kind == "nan" else xp.isinf(a)).any())


def run_node(node, incoming):
    """``node._apply(incoming)`` with anomaly checks: errors get the forward traceback, NaN
    or inf results raise."""
    try:
        out = node._apply(incoming)
        if _mode.check_nan:
            # nan first (as torch, which checks only nan), then inf, over all outputs
            for kind in ("nan", "inf"):
                for i, g in enumerate(out):
                    if g is not None and hasattr(g, "_data") and _has(g, kind):
                        raise RuntimeError(f"Function '{node.name()}' returned {kind} values "
                                           f"in its {i}th output.")
    except Exception as e:
        _explain(node, e)
        raise
    return out
