"""Grad-mode switches as decorators of generator functions (and bare, without parentheses), against PyTorch.

Each scenario runs once with ``torch`` and once with ``backprop_gpu`` and records what the mode was
at every point; the two logs must agree.
"""
import pytest

import backprop_gpu as bg

torch = pytest.importorskip("torch")


def _yield_points(lib, make_switch, outside):
    """The mode at each yield point inside a decorated generator and, between next() calls, outside it."""
    @make_switch(lib)
    def gen():
        for i in range(3):
            yield lib.is_grad_enabled()

    log = []
    with lib.set_grad_enabled(outside):
        for inside in gen():
            log.append((inside, lib.is_grad_enabled()))
        log.append(("after", lib.is_grad_enabled()))
    return log


#: decorator factory and the mode it sets
SWITCHES = {
    "no_grad()": (lambda lib: lib.no_grad(), False),
    "enable_grad()": (lambda lib: lib.enable_grad(), True),
    "set_grad_enabled(False)": (lambda lib: lib.set_grad_enabled(False), False),
    "set_grad_enabled(True)": (lambda lib: lib.set_grad_enabled(True), True),
    "bare no_grad": (lambda lib: lib.no_grad, False),
    "bare enable_grad": (lambda lib: lib.enable_grad, True),
}


@pytest.mark.parametrize("switch", list(SWITCHES))
@pytest.mark.parametrize("outside", [True, False])
def test_the_mode_holds_inside_the_generator_and_not_between_yields(switch, outside):
    make, mode = SWITCHES[switch]
    want = _yield_points(torch, make, outside)
    got = _yield_points(bg, make, outside)
    assert got == want
    assert len(got) == 4 and {inside for inside, _ in got[:3]} == {mode}
    assert all(between == outside for _, between in got)


def _send_throw_close(lib):
    log = []

    @lib.no_grad()
    def gen():
        try:
            for i in range(5):
                try:
                    x = yield i
                    log.append(("sent", x, lib.is_grad_enabled()))
                except ValueError as e:
                    log.append(("caught", str(e), lib.is_grad_enabled()))
        finally:
            log.append(("finally", lib.is_grad_enabled()))

    g = gen()
    log.append(("first", next(g), lib.is_grad_enabled()))
    log.append(("reply", g.send("a"), lib.is_grad_enabled()))
    log.append(("reply", g.throw(ValueError("one")), lib.is_grad_enabled()))
    log.append(("reply", g.throw(ValueError("two")), lib.is_grad_enabled()))  # a second throw reaches the body too
    log.append(("reply", g.send("b"), lib.is_grad_enabled()))
    g.close()  # the body's finally runs under the decorator's mode
    log.append(("closed", lib.is_grad_enabled()))
    return log


def test_send_throw_and_close_run_the_body_under_the_mode():
    want = _send_throw_close(torch)
    assert _send_throw_close(bg) == want
    assert ("finally", False) in want and ("caught", "two", False) in want


def _return_and_raise(lib):
    log = []

    @lib.no_grad()
    def inner():
        yield lib.is_grad_enabled()
        return "done"

    def outer():
        result = yield from inner()
        log.append(("returned", result, lib.is_grad_enabled()))

    log += [("yielded", v, lib.is_grad_enabled()) for v in outer()]

    @lib.no_grad()
    def failing():
        yield 1
        raise KeyError("body")

    g = failing()
    next(g)
    with pytest.raises(KeyError, match="body"):
        next(g)
    log.append(("after raise", lib.is_grad_enabled()))
    return log


def test_return_value_and_errors_of_the_body():
    assert _return_and_raise(bg) == _return_and_raise(torch)


def _interleaved(lib):
    """Two decorated generators advanced in turn: each sees its own mode, the caller keeps its own."""
    @lib.no_grad()
    def off():
        while True:
            yield lib.is_grad_enabled()

    @lib.enable_grad()
    def on():
        while True:
            yield lib.is_grad_enabled()

    a, b, log = off(), on(), []
    with lib.no_grad():
        for _ in range(2):
            log += [next(a), lib.is_grad_enabled(), next(b), lib.is_grad_enabled()]
    return log


def test_interleaved_generators():
    assert _interleaved(bg) == _interleaved(torch)


def test_ops_inside_a_no_grad_generator_are_not_recorded():
    x = bg.tensor([1.0, 2.0], requires_grad=True)

    @bg.no_grad()
    def gen():
        yield x * 2
        yield x + 1

    outs = list(gen())
    assert [o.requires_grad for o in outs] == [False, False]
    assert (x * 3).requires_grad  # recording is back on afterwards


def test_bare_decorator_on_a_function_and_bad_arguments():
    @bg.no_grad
    def f(t):
        return t * 2, bg.is_grad_enabled()

    y, mode = f(bg.tensor([1.0], requires_grad=True))
    assert not y.requires_grad and mode is False and bg.is_grad_enabled()
    assert f.__name__ == "f"
    with pytest.raises(TypeError, match="no_grad.*got 5"):
        bg.no_grad(5)
