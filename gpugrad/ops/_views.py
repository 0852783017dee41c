"""Views: tensors that share memory (and the version counter) with a base tensor.

A view remembers its root ``_base`` and the chain of view ops that makes it from the base
(``_view_chain``: ``(fn, args)`` steps, replayable on any tensor of the base's shape). That
chain is what lets an in-place write through a view give correct gradients to both:

- the base's history becomes ``CopySlices(old base, new values)`` (see ``inplace.py``);
- every view's history is regenerated from the base by replaying its chain. A view whose
  shared version moved since its history was last set is *stale* and is refreshed before an
  op records it (``refresh_if_stale``), as torch regenerates a view's ``grad_fn``.
"""
from __future__ import annotations

from .._tensor import Tensor, _refresh_view, _replay


def _root(a):
    while getattr(a, "base", None) is not None:
        a = a.base
    return a


def shares_memory(a, b) -> bool:
    """Whether array ``a`` is a view into the same allocation as array ``b``."""
    return _root(a) is _root(b)


def as_view(out: Tensor, src: Tensor, fn, *args, multi_output: bool = False) -> Tensor:
    """Mark ``out = fn(src, *args)`` as a view of ``src``'s base when it shares its memory."""
    if out is src or not shares_memory(out._data, src._data):
        return out
    out._base = src._base if src._base is not None else src
    out._version = src._version
    out._view_chain = src._view_chain + ((fn, args),)
    out._view_stamp = src._version.value
    if multi_output or src._multi_view:
        out._multi_view = True
    return out


replay = _replay
refresh_if_stale = _refresh_view
