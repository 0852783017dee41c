"""``gpugrad.nn``: neural-network building blocks. So far the functional activations
(``gpugrad.nn.functional``); modules, layers and losses build on them."""
from . import functional  # noqa: F401
