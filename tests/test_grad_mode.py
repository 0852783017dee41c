"""Grad modes: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode`` as
context managers and decorators, nesting, exceptions, generators, and thread-locality.

Every test takes ``lib`` and runs on gpugrad and on PyTorch (the reference, skipped when not
installed) with the same fixed expectations.
"""
from __future__ import annotations

import threading

import pytest

import gpugrad
from helpers import torch_or_skip


def records(lib) -> bool:
    """Whether an op on a tensor that requires grad is recorded right now."""
    x = lib.tensor([1.0], requires_grad=True)
    y = x * 2
    assert y.requires_grad == (y.grad_fn is not None)
    return y.requires_grad


# ---- no_grad ---------------------------------------------------------------------------------
def test_no_grad_context(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    with lib.no_grad():
        assert not lib.is_grad_enabled()
        y = x * 2
        z = y.exp().sum()
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert not z.requires_grad
    assert lib.is_grad_enabled()
    assert (x * 2).requires_grad


def test_no_grad_keeps_requires_grad_of_new_leaves(lib):
    with lib.no_grad():
        w = lib.tensor([1.0], requires_grad=True)
    assert w.requires_grad and w.is_leaf


def test_no_grad_result_cannot_backward(lib):
    x = lib.tensor(1.0, requires_grad=True)
    with lib.no_grad():
        y = x * 2
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


@pytest.mark.parametrize("form", ["call", "bare"])
def test_no_grad_decorator(lib, form):
    def f(x):
        """doc of f"""
        return x * 2, lib.is_grad_enabled()

    g = lib.no_grad()(f) if form == "call" else lib.no_grad(f)
    y, enabled = g(lib.tensor([1.0], requires_grad=True))
    assert not enabled and not y.requires_grad
    assert g.__name__ == "f" and g.__doc__ == "doc of f"
    assert lib.is_grad_enabled()


def test_no_grad_decorator_syntax(lib):
    @lib.no_grad
    def bare(x):
        return x * 2

    @lib.no_grad()
    def called(x):
        return x * 2

    x = lib.tensor([1.0], requires_grad=True)
    assert not bare(x).requires_grad and not called(x).requires_grad
    assert records(lib)


def test_no_grad_method_decorator(lib):
    class Model:
        factor = 3.0

        @lib.no_grad()
        def predict(self, x):
            return x * self.factor

    y = Model().predict(lib.tensor([1.0], requires_grad=True))
    assert not y.requires_grad and y.tolist() == [3.0]


# ---- enable_grad -----------------------------------------------------------------------------
def test_enable_grad_inside_no_grad(lib):
    x = lib.tensor([1.0], requires_grad=True)
    with lib.no_grad():
        with lib.enable_grad():
            assert lib.is_grad_enabled()
            y = x * 2
        assert not lib.is_grad_enabled()
        z = x * 2
    assert y.requires_grad and y.grad_fn is not None
    assert not z.requires_grad
    y.backward()
    assert x.grad.tolist() == [2.0]


def test_enable_grad_decorator(lib):
    @lib.enable_grad()
    def called(x):
        return x * 2

    @lib.enable_grad
    def bare(x):
        return x * 3

    x = lib.tensor([1.0], requires_grad=True)
    with lib.no_grad():
        a, b = called(x), bare(x)
        assert not lib.is_grad_enabled()
    assert a.requires_grad and b.requires_grad


# ---- set_grad_enabled ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", [False, True])
def test_set_grad_enabled_context(lib, mode):
    with lib.set_grad_enabled(mode):
        assert lib.is_grad_enabled() is mode
        assert records(lib) is mode
    assert lib.is_grad_enabled()


def test_set_grad_enabled_true_inside_no_grad(lib):
    with lib.no_grad():
        with lib.set_grad_enabled(True):
            assert records(lib)
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled()


def test_set_grad_enabled_as_plain_call(lib):
    try:
        lib.set_grad_enabled(False)
        assert not lib.is_grad_enabled()
        assert not records(lib)
        lib.set_grad_enabled(True)
        assert lib.is_grad_enabled() and records(lib)
    finally:
        lib.set_grad_enabled(True)


def test_set_grad_enabled_decorator(lib):
    @lib.set_grad_enabled(False)
    def off(x):
        return x * 2, lib.is_grad_enabled()

    assert lib.is_grad_enabled()  # decorating does not switch the mode
    y, enabled = off(lib.tensor([1.0], requires_grad=True))
    assert not enabled and not y.requires_grad
    assert lib.is_grad_enabled()
    y, enabled = off(lib.tensor([1.0], requires_grad=True))  # reusable
    assert not enabled and lib.is_grad_enabled()


def test_set_grad_enabled_decorator_enables(lib):
    @lib.set_grad_enabled(True)
    def on(x):
        return x * 2

    with lib.no_grad():
        y = on(lib.tensor([1.0], requires_grad=True))
        assert not lib.is_grad_enabled()
    assert y.requires_grad


# ---- inference_mode --------------------------------------------------------------------------
def test_inference_mode_context(lib):
    x = lib.tensor([1.0, 2.0], requires_grad=True)
    assert not lib.is_inference_mode_enabled()
    with lib.inference_mode():
        assert lib.is_inference_mode_enabled()
        assert not lib.is_grad_enabled()
        y = x * 2
        z = y.sum()
    assert not y.requires_grad and y.grad_fn is None
    assert not z.requires_grad
    assert y.tolist() == [2.0, 4.0]
    assert not lib.is_inference_mode_enabled() and lib.is_grad_enabled()


def test_inference_mode_false_leaves_inference_and_records(lib):
    with lib.inference_mode(False):
        assert not lib.is_inference_mode_enabled()
        assert records(lib)
    with lib.inference_mode():
        with lib.inference_mode(False):
            assert not lib.is_inference_mode_enabled()
            assert lib.is_grad_enabled() and records(lib)
        assert lib.is_inference_mode_enabled() and not lib.is_grad_enabled()
    with lib.no_grad():
        with lib.inference_mode(False):  # torch turns recording on here too
            assert lib.is_grad_enabled()
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled() and not lib.is_inference_mode_enabled()


@pytest.mark.parametrize("form", ["call", "bare", "true"])
def test_inference_mode_decorator(lib, form):
    def f(x):
        return x * 2, lib.is_inference_mode_enabled()

    if form == "call":
        g = lib.inference_mode()(f)
    elif form == "true":
        g = lib.inference_mode(True)(f)
    else:
        g = lib.inference_mode(f)
    y, inference = g(lib.tensor([1.0], requires_grad=True))
    assert inference and not y.requires_grad
    assert g.__name__ == "f"
    assert not lib.is_inference_mode_enabled() and lib.is_grad_enabled()


def test_inference_mode_decorator_syntax(lib):
    @lib.inference_mode
    def bare(x):
        return x * 2

    @lib.inference_mode()
    def called(x):
        return x * 2

    x = lib.tensor([1.0], requires_grad=True)
    assert not bare(x).requires_grad and not called(x).requires_grad
    assert records(lib)


# ---- nesting and exceptions ------------------------------------------------------------------
def test_nesting_restores_each_level(lib):
    states = []
    with lib.no_grad():
        states.append(lib.is_grad_enabled())
        with lib.enable_grad():
            states.append(lib.is_grad_enabled())
            with lib.set_grad_enabled(False):
                states.append(lib.is_grad_enabled())
                with lib.inference_mode():
                    states.append(lib.is_grad_enabled())
                states.append(lib.is_grad_enabled())
            states.append(lib.is_grad_enabled())
        states.append(lib.is_grad_enabled())
    states.append(lib.is_grad_enabled())
    assert states == [False, True, False, False, False, True, False, True]


def test_no_grad_inside_no_grad_restores_to_disabled(lib):
    with lib.no_grad():
        with lib.no_grad():
            pass
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled()


@pytest.mark.parametrize("mode", ["no_grad", "enable_grad", "set_grad_enabled",
                                  "inference_mode"])
def test_mode_restored_after_exception(lib, mode):
    make = {"no_grad": lambda: lib.no_grad(), "enable_grad": lambda: lib.enable_grad(),
            "set_grad_enabled": lambda: lib.set_grad_enabled(False),
            "inference_mode": lambda: lib.inference_mode()}[mode]
    with pytest.raises(ValueError, match="boom"):
        with make():
            raise ValueError("boom")
    assert lib.is_grad_enabled() and not lib.is_inference_mode_enabled()
    with lib.no_grad():
        with pytest.raises(ValueError, match="boom"):
            with lib.enable_grad():
                raise ValueError("boom")
        assert not lib.is_grad_enabled()  # back to the enclosing no_grad, not to True
    assert lib.is_grad_enabled()


def test_decorator_restores_after_exception(lib):
    @lib.no_grad()
    def fails():
        raise KeyError("inside")

    with pytest.raises(KeyError):
        fails()
    assert lib.is_grad_enabled()


def test_exception_does_not_leak_through_decorator_reuse(lib):
    calls = []

    @lib.no_grad()
    def f(n):
        calls.append(lib.is_grad_enabled())
        if n:
            with lib.enable_grad():
                calls.append(lib.is_grad_enabled())
                f(n - 1)  # re-entrant use of the same decorated function
                calls.append(lib.is_grad_enabled())
        return n

    f(2)
    assert calls == [False, True, False, True, False, True, True]
    assert lib.is_grad_enabled()


# ---- generators ------------------------------------------------------------------------------
@pytest.mark.parametrize("decorator", ["no_grad", "inference_mode"])
def test_generator_function_decorator(lib, decorator):
    # also: the generator's end must reach the caller as StopIteration (not RuntimeError)
    deco = getattr(lib, decorator)()

    @deco
    def gen(x):
        for k in range(3):
            got = yield (x * k, lib.is_grad_enabled())
            assert got == k

    x = lib.tensor([1.0], requires_grad=True)
    it = gen(x)
    y, enabled = next(it)
    k = 0
    while True:
        assert not enabled and not y.requires_grad
        # between steps the caller's mode is untouched
        assert lib.is_grad_enabled() and records(lib)
        try:
            y, enabled = it.send(k)
        except StopIteration:
            break
        k += 1
    assert k == 2
    assert lib.is_grad_enabled()


def test_generator_decorator_throw_and_close(lib):
    seen = []

    @lib.no_grad()
    def gen():
        try:
            yield 1
        except KeyError:
            seen.append(("caught", lib.is_grad_enabled()))
            yield 2
        finally:
            seen.append(("finally", lib.is_grad_enabled()))

    it = gen()
    assert next(it) == 1
    assert it.throw(KeyError("k")) == 2
    assert lib.is_grad_enabled()
    it.close()
    assert seen == [("caught", False), ("finally", False)]
    assert lib.is_grad_enabled()


def test_enable_grad_generator_inside_no_grad(lib):
    @lib.enable_grad()
    def gen(x):
        yield x * 2
        yield x * 3

    x = lib.tensor([1.0], requires_grad=True)
    with lib.no_grad():
        outs = list(gen(x))
        assert not lib.is_grad_enabled()
    assert all(o.requires_grad for o in outs)


# ---- threads ---------------------------------------------------------------------------------
def _in_threads(*targets):
    errors = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)
        return run

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    if errors:
        raise errors[0]


def test_no_grad_is_thread_local(lib):
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def quiet():
        with lib.no_grad():
            barrier.wait()  # 1: no_grad is active here while the other thread works
            results["quiet"] = (lib.is_grad_enabled(), records(lib))
            barrier.wait()  # 2

    def busy():
        barrier.wait()  # 1
        results["busy"] = (lib.is_grad_enabled(), records(lib))
        barrier.wait()  # 2

    _in_threads(quiet, busy)
    assert results == {"quiet": (False, False), "busy": (True, True)}
    assert lib.is_grad_enabled()


def test_enable_grad_in_one_thread_does_not_leak(lib):
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def enabler():
        with lib.no_grad():
            with lib.enable_grad():
                barrier.wait()
                results["enabler"] = lib.is_grad_enabled()
                barrier.wait()

    def disabled():
        with lib.no_grad():
            barrier.wait()
            results["disabled"] = (lib.is_grad_enabled(), records(lib))
            barrier.wait()

    _in_threads(enabler, disabled)
    assert results == {"enabler": True, "disabled": (False, False)}


def test_set_grad_enabled_call_is_thread_local(lib):
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def switcher():
        lib.set_grad_enabled(False)
        barrier.wait()
        results["switcher"] = lib.is_grad_enabled()
        barrier.wait()
        lib.set_grad_enabled(True)

    def other():
        barrier.wait()
        results["other"] = lib.is_grad_enabled()
        barrier.wait()

    _in_threads(switcher, other)
    assert results == {"switcher": False, "other": True}
    assert lib.is_grad_enabled()


def test_new_thread_starts_with_grad_enabled(lib):
    results = {}

    def child():
        results["child"] = (lib.is_grad_enabled(), lib.is_inference_mode_enabled())

    with lib.inference_mode():
        _in_threads(child)
    assert results["child"] == (True, False)


def test_inference_mode_is_thread_local(lib):
    barrier = threading.Barrier(2, timeout=10)
    results = {}

    def inside():
        with lib.inference_mode():
            barrier.wait()
            results["inside"] = lib.is_inference_mode_enabled()
            barrier.wait()

    def outside():
        barrier.wait()
        results["outside"] = (lib.is_inference_mode_enabled(), records(lib))
        barrier.wait()

    _in_threads(inside, outside)
    assert results == {"inside": True, "outside": (False, True)}


# ---- interaction with the engine -------------------------------------------------------------
def test_backward_restores_grad_mode(lib):
    x = lib.tensor(2.0, requires_grad=True)
    y = x ** 2
    with lib.no_grad():
        y.backward()
        assert not lib.is_grad_enabled()
    assert lib.is_grad_enabled()
    assert x.grad.item() == 4.0


def test_grad_mode_during_backward_follows_create_graph(lib):
    modes = []
    x = lib.tensor(2.0, requires_grad=True)
    y = x * x
    y.register_hook(lambda g: modes.append(lib.is_grad_enabled()))
    lib.autograd.grad(y, x, retain_graph=True)
    lib.autograd.grad(y, x, create_graph=True)
    assert modes == [False, True]
    assert lib.is_grad_enabled()


def test_generator_decorator_passes_return_value(lib):
    @lib.no_grad()
    def gen():
        yield 1
        return "done"

    def delegate():
        result = yield from gen()
        return result

    it = delegate()
    assert next(it) == 1
    with pytest.raises(StopIteration) as info:
        next(it)
    assert info.value.value == "done"
