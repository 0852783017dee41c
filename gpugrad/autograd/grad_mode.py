"""Grad modes: ``no_grad``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``.

The switch is thread-local, as in torch: a ``no_grad`` block in one thread does not stop
recording in another. Each mode works as a context manager and as a decorator.
"""
from __future__ import annotations

import functools
import inspect
import threading

__all__ = ["no_grad", "enable_grad", "set_grad_enabled", "inference_mode",
           "is_grad_enabled", "is_inference_mode_enabled"]


class _State(threading.local):
    # Class attributes are the defaults each new thread starts with.
    enabled = True
    inference = False


state = _State()


def is_grad_enabled() -> bool:
    """True when operations on tensors that require grad are recorded (this thread)."""
    return state.enabled


def is_inference_mode_enabled() -> bool:
    """True inside an ``inference_mode()`` block (this thread)."""
    return state.inference


class _DecoratorContextManager:
    """Base for grad-mode switches usable as ``with mode():`` and as ``@mode()`` / ``@mode``."""

    def __call__(self, func):
        if inspect.isclass(func):
            raise TypeError(f"{type(self).__name__} cannot decorate a class; decorate its methods")
        if inspect.isgeneratorfunction(func):
            @functools.wraps(func)
            def generator(*args, **kwargs):
                gen = func(*args, **kwargs)
                try:
                    with self.clone():
                        response = gen.send(None)
                    while True:
                        try:
                            request = yield response
                        except GeneratorExit:
                            with self.clone():  # its finally blocks run in the mode too
                                gen.close()
                            raise
                        except BaseException as exc:  # forward throw() into the generator
                            with self.clone():
                                response = gen.throw(exc)
                        else:
                            with self.clone():
                                response = gen.send(request)
                except StopIteration as stop:  # the generator is done: so are we
                    return stop.value
            return generator

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self.clone():
                return func(*args, **kwargs)
        return wrapper

    def clone(self):
        """A fresh instance with the same arguments (each use needs its own saved state)."""
        return type(self)()


class no_grad(_DecoratorContextManager):
    """Disable recording: results of operations inside do not require grad.

    Also usable as ``@no_grad()`` or ``@no_grad`` on a function."""

    def __new__(cls, func=None):
        if func is None or not callable(func):
            return super().__new__(cls)
        return cls()(func)  # bare @no_grad

    def __enter__(self) -> None:
        self._prev = state.enabled
        state.enabled = False

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev


class enable_grad(_DecoratorContextManager):
    """Enable recording inside a ``no_grad`` region (context manager or decorator)."""

    def __new__(cls, func=None):
        if func is None or not callable(func):
            return super().__new__(cls)
        return cls()(func)

    def __enter__(self) -> None:
        self._prev = state.enabled
        state.enabled = True

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev


class set_grad_enabled(_DecoratorContextManager):
    """Set recording on or off. Takes effect at once (like torch, it also works as a plain
    call ``set_grad_enabled(False)``), and restores the previous mode on leaving a ``with``."""

    def __init__(self, mode: bool) -> None:
        self._prev = state.enabled
        self.mode = bool(mode)
        state.enabled = self.mode

    def __call__(self, func):
        state.enabled = self._prev  # as a decorator it must not switch at decoration time
        return super().__call__(func)

    def __enter__(self) -> None:
        state.enabled = self.mode

    def __exit__(self, *exc) -> None:
        state.enabled = self._prev

    def clone(self):
        """A fresh switch with the same mode."""
        prev = state.enabled
        c = type(self)(self.mode)
        c._prev = prev
        state.enabled = prev
        return c


class inference_mode(_DecoratorContextManager):
    """Like ``no_grad`` but marks the region as inference: no recording at all.

    ``inference_mode(False)`` leaves inference mode and turns recording on, as in torch."""

    def __new__(cls, mode=True):
        if callable(mode) and not isinstance(mode, bool):
            return cls()(mode)  # bare @inference_mode
        return super().__new__(cls)

    def __init__(self, mode: bool = True) -> None:
        self.mode = bool(mode)

    def __enter__(self) -> None:
        self._prev = (state.enabled, state.inference)
        state.enabled = not self.mode
        state.inference = self.mode

    def __exit__(self, *exc) -> None:
        state.enabled, state.inference = self._prev

    def clone(self):
        """A fresh region with the same mode."""
        return type(self)(self.mode)
