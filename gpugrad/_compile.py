"""``gpugrad.compile(fn)``: run a whole step (forward, backward, optimizer update) as one CUDA
graph after a warm-up, with a bounded cache of captures keyed by the inputs' signature.

How a call goes, per input signature (shapes, dtypes, devices, requires_grad; see
``_capture.signature``):

1. the first ``warmup`` calls run ``fn`` eagerly (on CUDA on gpugrad's capture stream:
   kernels compile, the memory pool is primed, the optimizer creates its state);
2. the next call copies the data inputs into static buffers and captures ``fn`` on them
   into one CUDA graph, then replays it once to run this call;
3. every later call copies its inputs into the static buffers and replays the graph: no
   Python of ``fn`` runs, no op is dispatched.

Outputs, as with ``torch.cuda.make_graphed_callables`` and torch's CUDA-graph trees: the
tensors returned are the graph's **static outputs**, detached, and the same objects on every
call: the next call overwrites them. Clone what you keep (``loss.clone()``), or read it
(``loss.item()``) before the next call. Warm-up calls return fresh (detached) tensors.

What must hold for the replay to equal eager execution:

- Tensors that require grad (parameters) are used by identity, not copied: pass the same
  ones on every call (or close over them). Their ``.data`` may be changed in place between
  calls (``load_state_dict``, ``copy_``), never replaced by new arrays.
- Create the optimizer before the first call; its state is made during the warm-up (so at
  least one warm-up call is needed on CUDA: ``warmup >= 1``). ``optimizer.zero_grad()``
  inside ``fn`` is fine with either ``set_to_none``: the gradient buffers then belong to the
  graph, and after a call ``p.grad`` holds that call's gradients (overwritten by the next).
  Do not set ``p.grad`` to None or to another tensor outside ``fn`` between calls expecting
  the graph to see it.
- Python values are constants of the capture: a learning rate changed by a scheduler, a
  Python ``if`` on data, and host-side counters keep their capture-time values on CUDA.
  Optimizers: SGD (with or without momentum) is exact. Adam, AdamW and RMSprop must be
  constructed with ``capturable=True`` (torch's argument): their step count then lives on
  the parameter's device and Adam's bias corrections are computed there, so replays equal
  eager steps. With ``capturable=False`` (the default) their ``step()`` raises at capture on
  CUDA, as torch's does (the count would be frozen; it is not switched on silently, since
  the count would have to move to the device outside the graph). Adagrad is exact with
  ``lr_decay=0`` and raises at capture otherwise (its decay uses a host count; torch's
  Adagrad has no ``capturable``). On the CPU every optimizer runs eagerly and is exact.
- No host synchronisation inside ``fn`` (``.item()``, ``print(t)``, ``bool(t)``, ...): it
  raises ``gpugrad.CaptureSyncError`` at capture.

Fusion (``fuse=True``, the default): every run of ``fn`` here (warm-up, capture, and the CPU
stand-in's calls) turns each maximal chain of elementwise ops into one generated kernel
forward and one backward (``_lazy``, with the kernels of ``_fusion``): an elementwise op
returns a pending tensor, and the chain is computed when a non-elementwise op (a matmul, a
reduction other than a full sum, ...) or the caller reads it, or when ``fn`` returns. Results
equal the unfused ones within float tolerance; ``fuse=False`` runs every op as eager code does.
On NumPy, chains of fewer than ``_lazy.NUMPY_MIN_ELEMENTS`` (2**18) elements run eagerly: a
region's Python costs more than the passes it saves there. In-place writes behave as in eager
code (the chains that read the tensor are computed first; InplaceError where eager raises it);
a write that goes around gpugrad's in-place ops (an optimizer step) to an input a chain still
needs raises InplaceError, naming the tensor and the chain.

On the CPU the same API runs ``fn`` eagerly every call, through the same cache, static
buffers, static outputs and capture flag (so host synchronisation raises there too): the
results equal those of the CUDA path, and those of ``fn`` itself. One difference cannot be
hidden: there ``fn``'s Python runs on every call, so its Python side effects (appending to
a list, reading a changed learning rate) happen on the CPU but not on CUDA replays. And
array-level host reads inside ops that never pass through a Tensor method go unnoticed on the
CPU but fail the CUDA capture, with an error that says so. (The index checks of
``cross_entropy``/``nll_loss``, ``embedding``, ``gather`` and the like read indices on the
host in eager calls only: inside a capture they step aside, as torch checks on the device;
``one_hot`` without ``num_classes`` still must read them.)
"""
from __future__ import annotations

import functools

from . import _backend, _capture, _lazy
from .backends import _precision
from ._capture import CaptureSyncError, describe, flatten

__all__ = ["compile", "CompiledFunction", "CaptureSyncError"]


class _Entry:
    """One signature's state: warm-up count, recorder, static inputs."""

    __slots__ = ("recorder", "runs", "static")

    def __init__(self, recorder) -> None:
        self.recorder, self.runs = recorder, 0
        self.static = None  # the static input tensors, in flatten() order, once captured

    def release(self) -> None:
        self.recorder.release()
        self.static = None


def _device_of(tensors):
    return tensors[0].device if tensors else _backend.default_device()


def _detached(out):
    return _capture.map_tensors(lambda t: t.detach(), out)


class CompiledFunction:
    """What ``gpugrad.compile(fn)`` returns: call it as ``fn``. ``stats`` counts calls,
    warm-up runs, captures, replays and evictions; ``signatures()`` lists the cached input
    signatures; ``reset()`` frees every capture (call it after changing a captured constant,
    such as the learning rate)."""

    def __init__(self, fn, warmup: int, cache_size: int, recapture: bool,
                 fuse: bool = True) -> None:
        if not callable(fn):
            raise TypeError(f"gpugrad.compile: expected a callable, got {type(fn).__name__}")
        if not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"gpugrad.compile: warmup must be an int >= 0, got {warmup!r}")
        self.fn, self.warmup, self.recapture, self.fuse = fn, warmup, recapture, bool(fuse)
        self._name = f"gpugrad.compile({getattr(fn, '__qualname__', type(fn).__name__)})"
        self._cache = _capture.LRUCache(cache_size)
        self._first = None
        self.stats = {"calls": 0, "warmup": 0, "captures": 0, "replays": 0}
        functools.update_wrapper(self, fn, updated=())

    def signatures(self) -> list:
        """The cached input signatures, least recently used first."""
        return self._cache.keys()

    @property
    def evictions(self) -> int:
        """How many captures the bounded cache has evicted (and freed)."""
        return self._cache.evictions

    def reset(self) -> None:
        """Free every capture; the next calls warm up and capture again."""
        self._cache.clear()
        self._first = None

    def __call__(self, *args, **kwargs):
        self.stats["calls"] += 1
        sig, tensors = flatten(args, kwargs)
        # A capture keeps the matmul precision it was made with (as torch's graphs do): a
        # changed TF32 setting is another signature (recaptured, or refused with recapture=False)
        sig += (("tf32", _precision.tf32),)
        e = self._cache.get(sig)
        if e is None:
            if self._first is not None and not self.recapture:
                raise RuntimeError(
                    f"{self._name}: called with inputs {describe(sig)}, but it was compiled "
                    f"for {describe(self._first)} and recapture=False. Pass inputs of the same "
                    "shapes, dtypes, devices and requires_grad (the same parameters), or "
                    "compile with recapture=True (the default).")
            e = _Entry(_capture.recorder_for(_device_of(tensors), self._name))
            if self.warmup == 0 and not e.recorder.runs_on_capture:
                raise ValueError(f"{self._name}: warmup=0 cannot capture on CUDA: at least one "
                                 "eager call must compile the kernels and create the "
                                 "optimizer's state first; use warmup >= 1")
            self._cache.put(sig, e)
            if self._first is None:
                self._first = sig
        if e.runs < self.warmup:
            e.runs += 1
            self.stats["warmup"] += 1
            return _detached(e.recorder.warmup(lambda: self._run(args, kwargs)))
        rec = e.recorder
        if e.static is None:
            static = _capture.make_static((args, kwargs))
            run = self._run

            def body():
                return _detached(run(*static))

            try:
                out = rec.capture(body)
            except BaseException:
                self._cache.pop(sig)
                if self._first == sig:
                    self._first = None
                raise
            e.static = _capture.tensors_of(static)
            self.stats["captures"] += 1
            if not rec.runs_on_capture:  # a CUDA capture computed nothing: run this call
                rec.replay()
            return out
        _capture.copy_inputs(e.static, tensors)
        rec.replay()
        self.stats["replays"] += 1
        return rec.result

    def _run(self, args, kwargs):
        """``fn(*args, **kwargs)``, its elementwise chains fused when ``fuse`` (the lazy ops
        of ``_lazy``; every chain is computed before this returns)."""
        if not self.fuse:
            return self.fn(*args, **kwargs)
        with _lazy.fusing():
            return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self._name}: {len(self._cache)} cached signature(s), {self.stats}>"


def compile(model=None, *, warmup: int = 2, cache_size: int = 8, recapture: bool = True,
            disable: bool = False, fuse: bool = True, **torch_options):
    """Capture ``model`` (a function or Module doing a whole step) into a CUDA graph after
    ``warmup`` eager calls, and replay it on later calls (see the module docstring).

    Args:
        model: the callable; ``gpugrad.compile(warmup=3)`` returns a decorator.
        warmup: eager calls per input signature before capturing (>= 1 on CUDA).
        cache_size: captures kept, one per input signature; the least recently used is
            evicted (its graph and memory freed) beyond that.
        recapture: False makes a call with another signature than the first raise.
        disable: return ``model`` unchanged (as torch.compile(disable=True)).
        fuse: fuse each maximal chain of elementwise ops (forward and backward) into one
            generated kernel (``_lazy``, ``_fusion``); False runs every op as eager code does.
        torch_options: torch.compile's ``mode``, ``fullgraph``, ``dynamic``, ``backend``,
            ``options`` are accepted for source compatibility and have no effect, except
            ``mode='max-autotune-no-cudagraphs'``, which returns ``model`` unchanged.
    """
    unknown = set(torch_options) - {"mode", "fullgraph", "dynamic", "backend", "options"}
    if unknown:
        raise TypeError(f"gpugrad.compile() got unexpected keyword argument(s) "
                        f"{sorted(unknown)}")
    if model is None:
        return lambda m: compile(m, warmup=warmup, cache_size=cache_size, recapture=recapture,
                                 disable=disable, fuse=fuse, **torch_options)
    if disable or torch_options.get("mode") == "max-autotune-no-cudagraphs":
        return model
    return CompiledFunction(model, warmup, cache_size, recapture, fuse)
