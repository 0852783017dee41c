"""gpugrad: define-by-run automatic differentiation with PyTorch's API, on CuPy or NumPy.

``import gpugrad as torch`` runs PyTorch-style tensor code: tensors live on the GPU as CuPy
arrays when CUDA is usable (else on the CPU as NumPy arrays), operations are recorded, and
``backward()`` runs the reverse pass.
"""
from __future__ import annotations

from . import _malloc
_malloc.tune()  # first: the arrays made while importing already benefit
from . import _backend, _dtypes  # noqa: E402
from ._backend import device, set_default_device
from ._dtypes import (bool, can_cast, double, dtype, float, float16, float32, float64,  # noqa: A004
                      get_default_dtype, half, int, int8, int16, int32, int64, long,
                      promote_types, result_type, set_default_dtype, short, uint8)
from ._tensor import Size, Tensor
from . import autograd
from .autograd import (Function, enable_grad, inference_mode, is_grad_enabled,  # noqa: F401
                       is_inference_mode_enabled, no_grad, set_grad_enabled)
from .autograd.anomaly_mode import (is_anomaly_check_nan_enabled,  # noqa: F401
                                    is_anomaly_enabled)
from .ops import *  # noqa: F401,F403
from .ops import __all__ as _ops_all
from ._factories import *  # noqa: F401,F403
from ._factories import __all__ as _factories_all
from ._factories import asarray  # noqa: F401
from ._random import initial_seed, manual_seed, seed  # noqa: F401
from ._dlpack import from_dlpack  # noqa: F401
from ._printing import set_printoptions  # noqa: F401
from . import cuda, nn  # noqa: F401
from . import func, utils  # noqa: F401
from . import optim  # noqa: F401,E402
from .serialization import load, save  # noqa: F401,E402
from ._compile import compile  # noqa: F401,E402,A004 - torch.compile
from ._capture import CaptureSyncError  # noqa: F401,E402
from . import backends  # noqa: F401,E402
from .backends import _precision  # noqa: E402

__version__ = "0.1.0"


def is_tensor(obj) -> bool:
    """True if ``obj`` is a gpugrad Tensor."""
    return isinstance(obj, Tensor)


def numel(input: Tensor) -> int:
    """The number of elements of ``input``."""
    return input.numel()


def get_default_device() -> device:
    """The device new tensors are created on."""
    return _backend.default_device()


def set_float32_matmul_precision(precision: str) -> None:
    """Set how float32 matrix products compute inside, as torch does: "highest" (full fp32,
    the default), "high" or "medium" (both allow TF32 on CUDA, like
    ``gpugrad.backends.cuda.matmul.allow_tf32 = True``). The result stays float32. Another
    string warns and changes nothing; a non-string raises. No effect on CPU (NumPy)."""
    _precision.set_precision(precision)


def get_float32_matmul_precision() -> str:
    """The float32 matmul precision: "highest", "high" or "medium" (see
    ``set_float32_matmul_precision``)."""
    return _precision.precision


def is_floating_point(input: Tensor) -> bool:
    """True for float tensors."""
    return input.is_floating_point()


__all__ = sorted(set(_ops_all) | set(_factories_all) | {
    "Tensor", "Size", "device", "dtype", "autograd", "cuda", "nn", "Function", "no_grad",
    "enable_grad", "set_grad_enabled", "inference_mode", "is_grad_enabled", "manual_seed",
    "is_tensor", "numel", "get_default_dtype", "set_default_dtype", "get_default_device",
    "set_default_device", "float16", "float32", "float64", "half", "float", "double", "int8",
    "int16", "int32", "int64", "short", "int", "long", "uint8", "bool", "promote_types",
    "result_type", "can_cast", "set_printoptions", "optim", "save", "load", "compile",
    "CaptureSyncError", "backends", "set_float32_matmul_precision",
    "get_float32_matmul_precision"})
del _ops_all, _factories_all, _dtypes
