"""``gpugrad.save`` / ``gpugrad.load``: tensors, state dicts and nested containers in a safe
file format, with no pickled code.

A file is a standard safetensors file (https://github.com/huggingface/safetensors):

- every tensor is one safetensors entry (host copy, contiguous, its own dtype and shape);
- the object's structure and its plain values (dict, list, tuple, None, bool, int, float,
  str) are JSON in the file's metadata (key ``gpugrad``), with each tensor replaced by a
  reference to its entry (plus its device, ``requires_grad`` and whether it was an
  ``nn.Parameter``).

A model's ``state_dict()`` (a flat dict of names to tensors) keeps its names as the entry
names, so the file is exactly what ``safetensors.torch.save_file(model.state_dict())`` would
write: ``safetensors.torch.load_file(path)`` + ``load_state_dict`` loads it into the same
PyTorch model, and ``gpugrad.load`` reads files that torch wrote that way (any safetensors
file without gpugrad metadata loads as a dict of names to tensors).

Saving to a path is atomic: the bytes go to a temporary file in the same directory, which is
flushed, synced and then renamed over the target (``os.replace``), so a crash mid-save leaves
either the old file or the new one, never a torn one.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import Counter, OrderedDict

import numpy as np

from . import _backend, _dtypes
from ._tensor import Tensor

__all__ = ["save", "load"]

_FORMAT = "1"  # the version of the metadata layout
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


class _Encoder:
    """The JSON structure of an object, and the host arrays of its tensors by entry name."""

    def __init__(self, obj) -> None:
        self.arrays: dict = {}
        self._names: dict = {}  # id(tensor) -> entry name: a tensor saved twice is one entry
        self._keep: list = []  # keeps ids valid while encoding
        flat = isinstance(obj, dict) and obj and all(
            isinstance(k, str) and k and isinstance(v, Tensor) for k, v in obj.items())
        self._flat = flat
        self.structure = self.encode(obj, "")

    def name_for(self, t, path: str) -> str:
        name = path.lstrip(".") or "tensor"
        if name in self.arrays:
            n = 1
            while f"{name}#{n}" in self.arrays:
                n += 1
            name = f"{name}#{n}"
        return name

    def encode(self, obj, path: str):
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (int, float)) and type(obj) in (int, float):
            return obj
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, Tensor):
            return self.tensor(obj, path)
        if isinstance(obj, np.ndarray):
            name = self.name_for(obj, path)
            self.arrays[name] = _contiguous(obj)
            return {"ndarray": name}
        if isinstance(obj, _dtypes.dtype):
            return {"dtype": str(obj).rpartition(".")[2]}
        if isinstance(obj, _backend.device):
            return {"device": str(obj)}
        if isinstance(obj, Counter):
            return {"counter": [[self.encode(k, f"{path}.{k}"), v] for k, v in obj.items()]}
        if isinstance(obj, dict):
            tag = "odict" if isinstance(obj, OrderedDict) else "dict"
            items = []
            for k, v in obj.items():
                if not (k is None or isinstance(k, (bool, int, float, str, tuple))):
                    raise TypeError(f"gpugrad.save: cannot save a dict key of type "
                                    f"{type(k).__name__} at {_where(path)}: keys must be "
                                    f"strings, numbers, bools, None or tuples of them")
                sub = k if self._flat and not path else f"{path}.{k}"
                items.append([self.encode(k, path), self.encode(v, sub)])
            return {tag: items}
        if isinstance(obj, (list, tuple)) and type(obj) in (list, tuple):
            return {type(obj).__name__: [self.encode(v, f"{path}.{i}")
                                         for i, v in enumerate(obj)]}
        raise TypeError(f"gpugrad.save: cannot save an object of type {type(obj).__name__} at "
                        f"{_where(path)}: gpugrad saves tensors, numbers, strings, bools, None "
                        f"and dicts/lists/tuples of them (no pickled objects); save its "
                        f"state_dict() instead")

    def tensor(self, t: Tensor, path: str) -> dict:
        name = self._names.get(id(t))
        if name is None:
            name = self.name_for(t, path)
            self._names[id(t)] = name
            self._keep.append(t)
            self.arrays[name] = _contiguous(_backend.to_device(t._data, _backend.CPU))
        node = {"tensor": name}
        if t.device.type != "cpu":
            node["device"] = str(t.device)
        if t.requires_grad:
            node["requires_grad"] = True
        if type(t).__name__ == "Parameter":
            node["parameter"] = True
        return node


def _contiguous(a: np.ndarray) -> np.ndarray:
    # not np.ascontiguousarray: it turns 0-d arrays into 1-d ones
    return a if a.flags.c_contiguous else a.copy(order="C")


def _where(path: str) -> str:
    return "the top level" if not path else f"'{path.lstrip('.')}'"


def save(obj, f) -> None:
    """Save ``obj`` (a tensor, a state dict, or dicts/lists/tuples of tensors, numbers,
    strings, bools and None) to ``f``: a path (written atomically) or a binary file object.

    The file is a safetensors file; see this module's docstring for the layout."""
    from safetensors.numpy import save as st_save

    enc = _Encoder(obj)
    metadata = {"format": "pt", "gpugrad": json.dumps(enc.structure, separators=(",", ":")),
                "gpugrad_format": _FORMAT}
    data = st_save(enc.arrays, metadata=metadata)
    if hasattr(f, "write"):
        f.write(data)
        return
    _atomic_write(os.fspath(f), data)


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            _write_all(fh, data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _write_all(fh, data: bytes) -> None:
    fh.write(data)


def _file_mode(path: str) -> int:
    """The mode a plain ``open(path, 'wb')`` would give: the old file's, else 0o666 & ~umask
    (mkstemp makes its file 0o600)."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


# ---- load ---------------------------------------------------------------------------------
def _read(f) -> tuple[bytes, str]:
    if hasattr(f, "read"):
        return f.read(), getattr(f, "name", None) or f"<{type(f).__name__}>"
    path = os.fspath(f)
    with open(path, "rb") as fh:
        return fh.read(), path


def _bad(name: str, why: str) -> ValueError:
    return ValueError(f"gpugrad.load: {name!r} {why}")


def _header(data: bytes, name: str) -> dict:
    if data[:2] == b"PK" or data[:1] == b"\x80":
        raise _bad(name, "is a pickle/zip file (torch.save's format?), not a safetensors file: "
                         "gpugrad.load reads only safetensors files, which cannot run code. "
                         "Convert it with torch: safetensors.torch.save_file(torch.load(f), out)")
    if len(data) < 8:
        raise _bad(name, f"is not a gpugrad/safetensors file, or is truncated: {len(data)} "
                         f"bytes, less than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER:
        raise _bad(name, "is not a gpugrad/safetensors file (its first 8 bytes are not a "
                         "safetensors header length)")
    if 8 + n > len(data):
        raise _bad(name, f"is truncated (or not a safetensors file): its header needs {8 + n} "
                         f"bytes, the file has {len(data)}")
    try:
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError
    except ValueError:
        raise _bad(name, "is not a gpugrad/safetensors file (its header is not JSON)") from None
    end = 0
    for k, v in header.items():
        if k != "__metadata__":
            try:
                end = max(end, int(v["data_offsets"][1]))
            except (TypeError, KeyError, IndexError, ValueError):
                raise _bad(name, f"has a malformed header entry {k!r}") from None
    if 8 + n + end != len(data):
        raise _bad(name, f"is truncated or corrupt: its header describes {8 + n + end} bytes, "
                         f"the file has {len(data)}")
    return header


class _Decoder:
    def __init__(self, arrays: dict, map_location, name: str) -> None:
        self.arrays, self.map_location, self.name = arrays, map_location, name
        self._made: dict = {}

    def decode(self, node):
        if not isinstance(node, dict):
            return node
        (tag, value), *rest = node.items()
        if tag == "tensor":
            return self.tensor(node)
        if tag == "dict" or tag == "odict":
            items = [(self.key(k), self.decode(v)) for k, v in value]
            return OrderedDict(items) if tag == "odict" else dict(items)
        if tag == "list":
            return [self.decode(v) for v in value]
        if tag == "tuple":
            return tuple(self.decode(v) for v in value)
        if tag == "counter":
            return Counter({self.key(k): v for k, v in value})
        if tag == "ndarray":
            return self.arrays[value]
        if tag == "dtype":
            return _dtypes.as_dtype(value)
        if tag == "device":
            return _backend.device(value)
        raise _bad(self.name, f"has an unknown structure node {tag!r} (written by a newer "
                              f"gpugrad?)")

    def key(self, k):
        v = self.decode(k)
        return tuple(v) if isinstance(v, list) else v

    def tensor(self, node: dict):
        name = node["tensor"]
        made = self._made.get(name)
        if made is not None:
            return made
        if name not in self.arrays:
            raise _bad(self.name, f"refers to a tensor {name!r} that it does not contain")
        saved = node.get("device", "cpu")
        t = _to_tensor(self.arrays[name], self.target(saved, name), saved, self.map_location)
        if node.get("parameter"):
            from .nn.parameter import Parameter
            t = Parameter(t, requires_grad=node.get("requires_grad", False))
        elif node.get("requires_grad"):
            t.requires_grad_(True)
        self._made[name] = t
        return t

    def target(self, saved: str, name: str):
        m = self.map_location
        if callable(m) and not isinstance(m, (str, _backend.device)):
            return None  # the callable decides (see _to_tensor)
        if isinstance(m, dict):
            m = m.get(saved, saved)
        if m is None:
            m = saved
        try:
            return _backend.canonical_device(m)
        except RuntimeError as e:
            raise RuntimeError(f"gpugrad.load: tensor {name!r} of {self.name!r} was saved on "
                               f"{saved} and cannot be loaded onto {m} ({e}); pass "
                               f"map_location='cpu' to load it onto the CPU") from None


def _to_tensor(array, device, saved: str, map_location) -> Tensor:
    t = Tensor._make(array)
    if device is None:  # a callable map_location: (cpu tensor, saved location) -> tensor
        out = map_location(t, saved)
        return t if out is None else out
    if device.type != "cpu":
        t = Tensor._make(_backend.to_device(array, device))
    return t


def load(f, map_location=None, weights_only: bool = True, mmap=None):
    """Load an object saved by ``gpugrad.save`` from ``f`` (a path or a binary file object).

    ``map_location``: where tensors go: ``None`` (the device they were saved from), a device
    (``'cpu'``, ``'cuda'``, ``gpugrad.device``), a dict from saved to target device names
    (``{'cuda:1': 'cuda:0'}``), or a callable ``(cpu_tensor, saved_location) -> tensor``.
    A safetensors file written by another library loads as a dict of names to tensors.
    Loading never runs code from the file (``weights_only`` is accepted for torch
    compatibility; it is always true)."""
    data, name = _read(f)
    header = _header(data, name)
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load
    try:
        arrays = st_load(data)
    except SafetensorError as e:
        raise _bad(name, f"is not a valid safetensors file: {e}") from None
    meta = header.get("__metadata__") or {}
    dec = _Decoder(arrays, map_location, name)
    if "gpugrad" not in meta:  # a plain safetensors file: entries in file order
        order = [k for k in header if k != "__metadata__"]
        order.sort(key=lambda k: header[k]["data_offsets"][0])
        return {k: dec.tensor({"tensor": k}) for k in order}
    if meta.get("gpugrad_format", _FORMAT) != _FORMAT:
        raise _bad(name, f"was written in gpugrad format {meta.get('gpugrad_format')!r}; this "
                         f"gpugrad reads format {_FORMAT}: upgrade gpugrad")
    try:
        structure = json.loads(meta["gpugrad"])
    except ValueError:
        raise _bad(name, "has corrupt gpugrad metadata (not JSON)") from None
    return dec.decode(structure)
