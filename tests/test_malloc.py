"""gpugrad._malloc: glibc's mmap/trim thresholds set at import, unless told not to."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpugrad import _malloc


class _FakeLibc:
    def __init__(self, answer=1):
        self.calls, self.answer = [], answer

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return self.answer


def test_sets_both_thresholds():
    libc = _FakeLibc()
    assert _malloc.tune({}, lambda: libc) is True
    assert libc.calls == [(_malloc.M_MMAP_THRESHOLD, 32 << 20),
                          (_malloc.M_TRIM_THRESHOLD, 64 << 20)]
    assert _malloc.status == "set"


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_env_turns_it_off(value):
    libc = _FakeLibc()
    assert _malloc.tune({"GPUGRAD_MALLOC_TUNING": value}, lambda: libc) is False
    assert libc.calls == [] and "off" in _malloc.status


@pytest.mark.parametrize("env", [{"MALLOC_MMAP_THRESHOLD_": "131072"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}])
def test_the_environments_malloc_settings_win(env):
    libc = _FakeLibc()
    assert _malloc.tune(env, lambda: libc) is False
    assert libc.calls == [] and "environment" in _malloc.status


def test_refused_or_missing_is_not_an_error():
    assert _malloc.tune({}, lambda: _FakeLibc(answer=0)) is False
    assert _malloc.status == "refused by mallopt"

    def missing():
        raise OSError("libc.so.6: cannot open shared object file")
    assert _malloc.tune({}, missing) is False
    assert _malloc.status.startswith("not set")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc is Linux's")
def test_import_sets_it_on_glibc_and_env_keeps_it_off():
    code = "import gpugrad, os; print(gpugrad._malloc.status)"
    env = dict(os.environ)
    on = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    env["GPUGRAD_MALLOC_TUNING"] = "0"
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    assert on.stdout.strip() in ("set", "not glibc")
    assert off.stdout.strip().startswith("off")
