"""``gpugrad.nn.functional``: activations and softmax under torch.nn.functional's names."""
from __future__ import annotations

from ..ops import (elu, gelu, leaky_relu, log_softmax, relu, sigmoid, silu, softmax,  # noqa
                   softplus, tanh)
from ..ops.pad import pad  # noqa: F401

__all__ = ["elu", "gelu", "leaky_relu", "log_softmax", "pad", "relu", "sigmoid", "silu",
           "softmax", "softplus", "tanh"]
