"""gpugrad.save / gpugrad.load: round trips of tensors, containers, model and optimizer
state dicts; the safetensors layout (PyTorch reads gpugrad's files and the other way round);
atomic writes under injected failures; map_location; clear errors on bad files."""
from __future__ import annotations

import io
import math
import os
import pathlib
from collections import Counter, OrderedDict

import numpy as np
import pytest

import gpugrad
from gpugrad import nn, serialization
from helpers import to_numpy, torch_or_skip

DTYPES = ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"]


def _same(a, b):
    assert isinstance(b, gpugrad.Tensor)
    assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
    assert np.array_equal(to_numpy(a), to_numpy(b), equal_nan=a.is_floating_point())


@pytest.mark.parametrize("dtype", DTYPES)
def test_tensor_round_trip(dtype, device, tmp_path):
    rng = np.random.default_rng(0)
    for shape in [(3, 4), (), (0, 2), (2, 1, 3)]:
        a = (rng.standard_normal(shape) * 50).astype(dtype)
        t = gpugrad.tensor(a, device=device)
        path = tmp_path / f"t{len(shape)}.gg"
        gpugrad.save(t, path)
        _same(t, gpugrad.load(path))


def test_non_contiguous_and_requires_grad(device, tmp_path):
    base = gpugrad.arange(12.0, device=device).reshape(3, 4)
    w = gpugrad.ones(2, 2, device=device, requires_grad=True)
    p = nn.Parameter(gpugrad.zeros(3, device=device))
    gpugrad.save({"t": base.t(), "w": w, "p": p}, tmp_path / "x")
    out = gpugrad.load(tmp_path / "x")
    _same(base.t().contiguous(), out["t"])
    assert out["w"].requires_grad and out["w"].is_leaf and not out["t"].requires_grad
    assert isinstance(out["p"], nn.Parameter) and out["p"].requires_grad


def test_nested_containers_and_plain_values(device, tmp_path):
    t = gpugrad.tensor([1.5, -2.0], device=device)
    obj = {
        "a": [1, 2.5, "three", None, True, False, (4, [5, {"six": 6}])],
        7: {"nested": {(1, "x"): t, None: -0.0, 1.5: math.inf}},
        "tensors": (t, gpugrad.tensor([1, 2], device=device)),
        "od": OrderedDict([("z", 1), ("y", 2)]),
        "counter": Counter([3, 3, 5]),
        "nan": math.nan,
        "big": 2 ** 62,
        "np": np.float32(0.25),
        "dtype": gpugrad.float16,
        "empty": {"list": [], "dict": {}, "tuple": ()},
    }
    gpugrad.save(obj, tmp_path / "nested")
    out = gpugrad.load(tmp_path / "nested")
    assert out["a"] == [1, 2.5, "three", None, True, False, (4, [5, {"six": 6}])]
    assert type(out["a"][1]) is float and type(out["a"][0]) is int and out["a"][4] is True
    inner = out[7]["nested"]
    _same(t, inner[(1, "x")])
    assert math.copysign(1, inner[None]) == -1 and inner[1.5] == math.inf
    assert isinstance(out["tensors"], tuple)
    assert out["tensors"][0] is inner[(1, "x")]  # one tensor saved twice loads as one
    _same(gpugrad.tensor([1, 2], device=device), out["tensors"][1])
    assert type(out["od"]) is OrderedDict and list(out["od"]) == ["z", "y"]
    assert out["counter"] == Counter({3: 2, 5: 1}) and type(out["counter"]) is Counter
    assert math.isnan(out["nan"]) and out["big"] == 2 ** 62 and out["np"] == 0.25
    assert out["dtype"] is gpugrad.float16
    assert out["empty"] == {"list": [], "dict": {}, "tuple": ()}


def test_unsupported_objects_are_refused_with_their_path(tmp_path):
    with pytest.raises(TypeError, match=r"type object at 'a\.0'.*no pickled"):
        gpugrad.save({"a": [object()]}, tmp_path / "x")
    with pytest.raises(TypeError, match="dict key of type frozenset"):
        gpugrad.save({frozenset(): 1}, tmp_path / "x")
    assert not os.listdir(tmp_path)


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_model_and_optimizer_checkpoint_resumes_exactly(device, tmp_path):
    gpugrad.manual_seed(0)
    x = gpugrad.randn(16, 4, device=device)
    y = gpugrad.randn(16, 3, device=device)

    def train(model, opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()

    model = _model().to(device)
    opt = gpugrad.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    sched = gpugrad.optim.lr_scheduler.MultiStepLR(opt, milestones=[4, 5, 5], gamma=0.5)

    def train_and_schedule(model, opt, sched, steps):
        for _ in range(steps):
            train(model, opt, 1)
            sched.step()

    train_and_schedule(model, opt, sched, 3)
    gpugrad.save({"model": model.state_dict(), "optim": opt.state_dict(),
                  "sched": sched.state_dict(), "epoch": 3}, tmp_path / "ckpt.gg")
    ck = gpugrad.load(tmp_path / "ckpt.gg")
    assert ck["epoch"] == 3 and set(ck["optim"]["state"]) == {0, 1, 2, 3}
    assert ck["optim"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert ck["sched"]["milestones"] == Counter({4: 1, 5: 2})
    model2 = _model().to(device)
    model2.load_state_dict(ck["model"])
    opt2 = gpugrad.optim.Adam(model2.parameters(), lr=0.5)
    opt2.load_state_dict(ck["optim"])
    sched2 = gpugrad.optim.lr_scheduler.MultiStepLR(opt2, milestones=[1], gamma=0.9)
    sched2.load_state_dict(ck["sched"])
    train_and_schedule(model, opt, sched, 4)
    train_and_schedule(model2, opt2, sched2, 4)
    assert sched2.get_last_lr() == sched.get_last_lr() == [0.01 * 0.5 ** 3]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert np.array_equal(to_numpy(a), to_numpy(b))


def test_torch_loads_a_gpugrad_state_dict_and_back(tmp_path):
    torch = torch_or_skip()
    from safetensors.torch import load_file, save_file

    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    ours = _model()
    gpugrad.save(ours.state_dict(), tmp_path / "ours.safetensors")
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    theirs.load_state_dict(load_file(str(tmp_path / "ours.safetensors")), strict=True)
    with torch.no_grad():
        expect = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(to_numpy(ours(gpugrad.tensor(x))), expect, rtol=1e-6, atol=1e-6)

    # the other way round: a torch model saved with safetensors loads into gpugrad's
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    save_file(theirs.state_dict(), str(tmp_path / "theirs.safetensors"))
    loaded = gpugrad.load(tmp_path / "theirs.safetensors")
    assert sorted(loaded) == sorted(theirs.state_dict())  # safetensors reorders entries
    ours = _model()
    ours.load_state_dict(loaded)
    with torch.no_grad():
        expect = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(to_numpy(ours(gpugrad.tensor(x))), expect, rtol=1e-6, atol=1e-6)


def test_plain_safetensors_file_loads_as_dict(tmp_path):
    from safetensors.numpy import save_file
    save_file({"b": np.ones(2, np.float32), "a": np.arange(3)}, str(tmp_path / "plain"))
    out = gpugrad.load(tmp_path / "plain", map_location="cpu")
    assert sorted(out) == ["a", "b"] and out["a"].dtype == gpugrad.int64


def test_atomic_write_survives_a_failure_mid_save(tmp_path, monkeypatch):
    path = tmp_path / "model.gg"
    gpugrad.save({"w": gpugrad.ones(3)}, path)
    before = path.read_bytes()

    def torn_write(fh, data):
        fh.write(data[: len(data) // 2])  # half the bytes reach the disk, then a crash
        raise OSError("disk full (injected)")

    monkeypatch.setattr(serialization, "_write_all", torn_write)
    with pytest.raises(OSError, match="injected"):
        gpugrad.save({"w": gpugrad.zeros(1000)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.gg"]  # no temporary file left behind
    _same(gpugrad.ones(3), gpugrad.load(path)["w"])

    monkeypatch.undo()

    def failing_replace(src, dst):
        raise OSError("rename failed (injected)")

    monkeypatch.setattr(serialization.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        gpugrad.save({"w": gpugrad.zeros(5)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["model.gg"]


def test_file_objects_and_path_likes(device, tmp_path):
    t = gpugrad.arange(6.0, device=device)
    buf = io.BytesIO()
    gpugrad.save([t, 3], buf)
    buf.seek(0)
    out = gpugrad.load(buf)
    _same(t, out[0])
    assert out[1] == 3
    gpugrad.save(t, str(tmp_path / "s"))
    _same(t, gpugrad.load(pathlib.Path(tmp_path / "s")))
    with open(tmp_path / "s", "rb") as fh:
        _same(t, gpugrad.load(fh))


def test_map_location(device, tmp_path):
    t = gpugrad.arange(3.0, device=device)
    gpugrad.save({"t": t}, tmp_path / "m")
    for loc in ["cpu", gpugrad.device("cpu"), {device: "cpu"}]:
        out = gpugrad.load(tmp_path / "m", map_location=loc)["t"]
        assert out.device == gpugrad.device("cpu")
        np.testing.assert_array_equal(to_numpy(out), [0.0, 1.0, 2.0])
    seen = []

    def mapper(tensor, location):
        seen.append(location)
        return tensor * 2

    out = gpugrad.load(tmp_path / "m", map_location=mapper)["t"]
    assert seen == [str(t.device)] and to_numpy(out).tolist() == [0.0, 2.0, 4.0]


def test_map_location_cuda_without_cuda_is_a_clear_error(tmp_path):
    if gpugrad.cuda.is_available():
        pytest.skip("CUDA is available")
    gpugrad.save({"t": gpugrad.ones(2)}, tmp_path / "m")
    with pytest.raises(RuntimeError, match=r"'t'.*cannot be loaded onto cuda.*map_location='cpu'"):
        gpugrad.load(tmp_path / "m", map_location="cuda")


@pytest.mark.gpu
def test_cuda_tensors_load_back_onto_cuda_or_cpu(tmp_path):
    t = gpugrad.arange(4.0, device="cuda")
    gpugrad.save(t, tmp_path / "c")
    _same(t, gpugrad.load(tmp_path / "c"))
    out = gpugrad.load(tmp_path / "c", map_location="cpu")
    assert out.device.type == "cpu" and to_numpy(out).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_truncated_and_foreign_files_give_clear_errors(tmp_path):
    path = tmp_path / "good.gg"
    gpugrad.save({"w": gpugrad.ones(100), "n": 1}, path)
    data = path.read_bytes()
    cases = {
        "truncated_body": (data[:-10], "truncated"),
        "truncated_header": (data[:40], "truncated"),
        "tiny": (data[:3], "truncated"),
        "empty": (b"", "truncated"),
        "text": (b"hello, this is not a model at all\n" * 4, "not a gpugrad/safetensors file"),
        "zip": (b"PK\x03\x04" + b"\x00" * 60, "pickle/zip file"),
        "pickle": (b"\x80\x04\x95" + b"\x00" * 60, "pickle/zip file"),
        "json": (len(b"[1, 2]").to_bytes(8, "little") + b"[1, 2]", "header is not JSON"),
    }
    for name, (content, message) in cases.items():
        bad = tmp_path / name
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            gpugrad.load(bad)
        assert str(bad) in str(info.value), name


def test_torch_save_file_is_refused_with_a_hint(tmp_path):
    torch = torch_or_skip()
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(ValueError, match=r"model\.pt.*pickle/zip.*safetensors\.torch\.save_file"):
        gpugrad.load(tmp_path / "model.pt")
