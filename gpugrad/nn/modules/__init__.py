"""The layers and losses of ``gpugrad.nn``, one file per family."""
from __future__ import annotations

from .activation import (ELU, GELU, Hardtanh, LeakyReLU, LogSigmoid, LogSoftmax,  # noqa
                         PReLU, ReLU, ReLU6, SiLU, Sigmoid, Softmax, Softmin, Softplus, Tanh)
from .container import ModuleDict, ModuleList, Sequential  # noqa: F401
from .conv import Conv1d, Conv2d, ConvTranspose2d  # noqa: F401
from .linear import Bilinear, Flatten, Identity, Linear, Unflatten  # noqa: F401
from .loss import (BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, HuberLoss, KLDivLoss,  # noqa
                   L1Loss, MSELoss, NLLLoss, SmoothL1Loss)
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm  # noqa: F401
from .pooling import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d,  # noqa
                      MaxPool1d, MaxPool2d)
from .sparse import Dropout, Dropout1d, Dropout2d, Embedding  # noqa: F401

__all__ = [n for n in dir() if not n.startswith("_") and n[0].isupper()]
