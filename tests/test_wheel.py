"""The wheel carries ``kernels/``: build it, install it into a fresh virtualenv, and check from
outside the checkout that the installed gpugrad finds every kernel source and parses them.

Offline, as CI runs it: ``pip wheel --no-build-isolation`` with the setuptools of the running
Python (70.1 or later builds wheels by itself; older ones need the ``wheel`` package), and
``pip install --no-index --no-deps``. The virtualenv sees NumPy (a link to the running one)
and nothing else of this environment: not the checkout, not another installed gpugrad.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _can_build_wheels() -> str | None:
    """None, or why this Python cannot build a wheel offline."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed"
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:
        return (f"setuptools {setuptools.__version__} needs the `wheel` package to build "
                f"wheels (or setuptools>=70.1, which the `test` extra asks for)")
    return None


def _run(cmd, cwd, env):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


CHECK = r"""
import json, sys, sysconfig
from pathlib import Path
import numpy as np
import gpugrad
from gpugrad import _kernels
from gpugrad._kernels_dir import KERNELS_DIR
site = Path(sysconfig.get_paths()["purelib"]).resolve()
table = _kernels.load(KERNELS_DIR)
gx = table.tanh_backward(np.ones(2), np.array([0.5, 0.0]))
print(json.dumps({
    "prefix": sys.prefix, "package": str(Path(gpugrad.__file__).resolve().parent),
    "site": str(site), "kernels_dir": str(KERNELS_DIR.resolve()),
    "files": sorted(p.name for p in KERNELS_DIR.iterdir()),
    "kernels": table.names(), "shipped_kernels": _kernels.kernels.names(),
    "gx": gx.tolist()}))
"""


def test_wheel_ships_every_kernel_source(tmp_path):
    why = _can_build_wheels()
    if why:
        pytest.skip(why)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONNOUSERSITE="1")
    # a copy of what the wheel is built from: no build/ or egg-info of the checkout's in it
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("gpugrad", "kernels"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation",
          "-q", "-w", dist], tmp_path, env)
    wheels = list(dist.glob("gpugrad-*.whl"))
    assert len(wheels) == 1, wheels

    # a fresh virtualenv that sees only NumPy (linked from this Python) besides the wheel
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    py = venv / "bin" / "python"
    if not py.exists():
        py = venv / "Scripts" / "python.exe"
    site = Path(_run([py, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], tmp_path, env).strip())
    import numpy
    deps = tmp_path / "deps"
    deps.mkdir()
    np_dir = Path(numpy.__file__).resolve().parent
    for d in (np_dir, np_dir.parent / "numpy.libs"):
        if d.exists():
            (deps / d.name).symlink_to(d, target_is_directory=True)
    (site / "numpy_link.pth").write_text(f"{deps}\n")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
          "-q", wheels[0]], tmp_path, env)

    # from outside the checkout (cwd is tmp_path; -I ignores PYTHONPATH and the cwd)
    out = json.loads(_run([py, "-I", "-c", CHECK], tmp_path, env).strip().splitlines()[-1])
    site = Path(out["site"])
    assert Path(out["package"]) == site / "gpugrad", out["package"]
    assert Path(out["kernels_dir"]) == site / "gpugrad" / "kernels", out["kernels_dir"]
    assert not Path(out["kernels_dir"]).is_relative_to(ROOT)
    sources = sorted(p.name for p in (ROOT / "kernels").iterdir()
                     if p.suffix in (".cu", ".cuh", ".h", ".md"))
    missing = sorted(set(sources) - set(out["files"]))
    assert not missing, f"kernels/ files missing from the wheel: {missing}"
    assert any(name.endswith(".cu") for name in sources)
    from gpugrad._kernels import kernels
    assert out["kernels"] == out["shipped_kernels"] == kernels.names()
    assert out["gx"] == [0.75, 1.0]
