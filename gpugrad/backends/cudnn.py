"""``gpugrad.backends.cudnn``: torch.backends.cudnn's TF32 flag, for code written for torch.

gpugrad computes convolutions as im2col plus a matmul (``nn/functional.py``) and never calls
cuDNN, so ``allow_tf32`` (default True, as torch's) changes nothing: a convolution's matmul
follows ``gpugrad.backends.cuda.matmul.allow_tf32`` like every other float32 matmul. It is a
plain module attribute so that ``torch.backends.cudnn.allow_tf32 = True`` runs unchanged.
"""
from __future__ import annotations

__all__ = ["allow_tf32"]

#: torch.backends.cudnn.allow_tf32: no effect in gpugrad (no cuDNN); kept for torch code.
allow_tf32 = True
