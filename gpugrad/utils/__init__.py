"""``gpugrad.utils``, as ``torch.utils``: ``checkpoint`` (activation checkpointing) and
``data``. Submodules load on first use, so ``import gpugrad`` stays light."""
from __future__ import annotations

import importlib

__all__ = ["checkpoint", "data"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
