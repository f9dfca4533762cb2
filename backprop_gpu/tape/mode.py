"""Grad mode and anomaly mode: per-thread switches the tape reads once per op."""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading


class _State(threading.local):
    # class attributes are each thread's defaults: plain attribute reads, no getattr fallback
    grad = True
    anomaly = False
    #: autocast's input hook ``cast(op_name, inputs) -> inputs``, or None (set by backprop_gpu.amp)
    cast = None
    #: grad on, anomaly off and no autocast, the common case (one attribute read per op instead of three)
    plain = True

    def set(self, grad=None, anomaly=None):
        if grad is not None:
            self.grad = grad
        if anomaly is not None:
            self.anomaly = anomaly
        self.plain = self.grad and not self.anomaly and self.cast is None

    def set_cast(self, cast):
        """Install (or, with None, remove) autocast's input hook; returns the previous one."""
        prev, self.cast = self.cast, cast
        self.plain = self.grad and not self.anomaly and cast is None
        return prev


state = _State()


def is_grad_enabled() -> bool:
    """Whether ops are currently recorded on the tape."""
    return state.grad


def set_grad(mode: bool) -> bool:
    """Turn recording on or off for this thread; returns the previous mode."""
    prev = state.grad
    state.set(grad=bool(mode))
    return prev


class _ModeSwitch(contextlib.ContextDecorator):
    """A context manager that is also a decorator, for plain functions and generators alike."""

    def _recreate_cm(self):
        # a fresh instance per decorated call: the saved previous mode must not be shared
        # between recursive calls or threads (ContextDecorator reuses ``self`` by default)
        return self._copy()

    def _copy(self):
        return type(self)()

    def __call__(self, func):
        if not inspect.isgeneratorfunction(func):
            return super().__call__(func)

        @functools.wraps(func)
        def generator(*args, **kwargs):
            # The mode holds whenever the generator body runs (each send, throw and the final close)
            # and the caller's mode holds between yields, as torch's _DecoratorContextManager does.
            gen = func(*args, **kwargs)
            try:
                with self._copy():
                    response = gen.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with self._copy():  # the body's finally blocks run under the mode too
                            gen.close()
                        raise
                    except BaseException as e:  # noqa: BLE001 - thrown at us: passed on to the body
                        with self._copy():
                            response = gen.throw(e)
                    else:
                        with self._copy():
                            response = gen.send(request)
            except StopIteration as stop:  # the body returned: so do we, with its value
                return stop.value
        return generator


class _GradMode(_ModeSwitch):
    mode = True

    def __enter__(self):
        self._prev = set_grad(self.mode)
        return self

    def __exit__(self, *exc):
        set_grad(self._prev)
        return False


class _NoParamGradMode(_GradMode):
    """A grad switch that also decorates without parentheses (``@no_grad`` as well as ``@no_grad()``), as in PyTorch."""

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        if not callable(orig_func):
            raise TypeError(f"{cls.__name__}() takes no arguments (or, as a bare decorator, the function to "
                            f"decorate); got {orig_func!r}")
        return cls()(orig_func)


class no_grad(_NoParamGradMode):
    """Context manager and decorator (functions and generators) that stops recording ops, as in PyTorch."""

    mode = False


class enable_grad(_NoParamGradMode):
    """Context manager and decorator (functions and generators) that turns recording back on inside ``no_grad``."""

    mode = True


class set_grad_enabled(_GradMode):
    """``set_grad_enabled(mode)``: recording on or off, as a call, a context manager or a decorator."""

    def __init__(self, mode: bool):
        self.mode = bool(mode)
        self._prev = set_grad(self.mode)  # a plain call takes effect at once, as in PyTorch

    def _copy(self):
        obj = object.__new__(type(self))
        obj.mode = self.mode
        return obj

    def __call__(self, func):
        set_grad(self._prev)  # as a decorator it changes nothing until the function runs
        del self._prev
        return super().__call__(func)

    def __enter__(self):
        if not hasattr(self, "_prev"):
            self._prev = set_grad(self.mode)
        return self

    def __exit__(self, *exc):
        set_grad(self._prev)
        del self._prev
        return False


def is_anomaly_enabled() -> bool:
    """Whether anomaly detection (:class:`detect_anomaly`) is on."""
    return state.anomaly


class detect_anomaly(_ModeSwitch):
    """Raise ``FloatingPointError`` at the first op whose output or gradient holds NaN/Inf.

    Costs a full scan of every op's output, so it is off by default.
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    def _copy(self):
        return type(self)(self.enabled)

    def __enter__(self):
        self._prev = state.anomaly
        state.set(anomaly=self.enabled)
        return self

    def __exit__(self, *exc):
        state.set(anomaly=self._prev)
        return False


def set_detect_anomaly(enabled: bool) -> None:
    """Turn anomaly detection on or off globally (for this thread)."""
    state.set(anomaly=bool(enabled))


__all__ = ["is_grad_enabled", "no_grad", "enable_grad", "set_grad_enabled", "is_anomaly_enabled",
           "detect_anomaly", "set_detect_anomaly"]
