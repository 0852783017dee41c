"""``gpugrad.backends``: torch.backends' switches that gpugrad honours.

- ``gpugrad.backends.cuda.matmul.allow_tf32``: float32 matrix products on CUDA may use
  TF32 tensor cores (default False, as in torch); one setting with
  ``gpugrad.set_float32_matmul_precision`` / ``get_float32_matmul_precision``.
- ``gpugrad.backends.cudnn.allow_tf32``: accepted for torch code that sets it; gpugrad does
  not use cuDNN, so it has no effect.

On the CPU (NumPy) none of them changes anything, as torch's do not change CPU matmuls.
"""
from __future__ import annotations

from . import cuda, cudnn

__all__ = ["cuda", "cudnn"]
