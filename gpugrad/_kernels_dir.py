"""Where the CUDA C sources of ``kernels/`` are, installed or not.

A wheel installs the repository's top-level ``kernels/`` folder as ``gpugrad/kernels/``
(see ``pyproject.toml``); a source checkout or an editable install has it beside the package.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["KERNELS_DIR"]

_here = Path(__file__).resolve().parent
KERNELS_DIR = _here / "kernels" if (_here / "kernels").is_dir() else _here.parent / "kernels"
