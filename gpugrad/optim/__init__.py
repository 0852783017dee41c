"""``gpugrad.optim``: optimizers with torch's names and behaviour (param groups, state dicts,
closures) and ``lr_scheduler``. Each optimizer updates each parameter with ONE fused kernel
of ``kernels/optim.cu`` (a CuPy kernel on the GPU, its NumPy twin on the CPU)."""
from . import lr_scheduler  # noqa: F401
from .adagrad import Adagrad
from .adam import Adam
from .adamw import AdamW
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "lr_scheduler"]
