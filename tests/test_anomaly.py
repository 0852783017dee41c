"""Anomaly mode: detect_anomaly / set_detect_anomaly / is_anomaly_enabled, NaN (and inf) in
backward raising torch's error, and the forward traceback of the failing node."""
from __future__ import annotations

import warnings

import pytest

import gpugrad
from gpugrad.autograd import anomaly_mode, function


@pytest.fixture(autouse=True)
def _anomaly_off_after():
    yield
    gpugrad.autograd.set_detect_anomaly(False)


def _quiet(mod):
    """detect_anomaly() warns on entry (as torch); the tests do not need to see it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return mod.autograd.detect_anomaly()


def _nan_backward(lib):
    x = lib.tensor([1.0, 0.0], requires_grad=True)
    y = (x / x).sum()  # d/dy of x/y at 0: -x/y^2 = nan
    return y


def test_nan_in_backward_raises_like_torch(lib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _quiet(lib):
            y = _nan_backward(lib)
            with pytest.raises(RuntimeError) as e:
                y.backward()
    assert str(e.value) == "Function 'DivBackward0' returned nan values in its 1th output."


def test_without_anomaly_mode_nan_passes_silently(lib):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = _nan_backward(lib)
        y.backward()  # no error: anomaly mode is off


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's 0/0 in the forward
def test_error_shows_where_the_forward_ran(device):
    with _quiet(gpugrad):
        x = gpugrad.tensor([1.0, 0.0], requires_grad=True, device=device)
        y = (x / x).sum()  # THE-FORWARD-LINE
        with pytest.warns(UserWarning, match="Error detected in DivBackward0") as rec:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # numpy's divide warnings
                with pytest.raises(RuntimeError, match="returned nan values") as e:
                    y.backward()
    text = "".join(str(w.message) for w in rec if "Error detected" in str(w.message))
    assert "Traceback of forward call that caused the error" in text
    assert "test_anomaly.py" in text and "THE-FORWARD-LINE" in text
    assert "gpugrad/ops" not in text  # gpugrad's own frames are left out
    notes = "".join(getattr(e.value, "__notes__", []))
    assert "THE-FORWARD-LINE" in notes
    div = y.grad_fn.next_functions[0][0]  # SumBackward0 -> DivBackward0
    assert div.name() == "DivBackward0"
    assert "THE-FORWARD-LINE" in "".join(div.metadata["traceback_"])


def test_custom_function_nan_and_exception(lib):
    class BadGrad(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    class Raising(lib.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise ValueError("boom in backward")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with _quiet(lib):
            x = lib.tensor([1.0, 2.0], requires_grad=True)
            with pytest.raises(RuntimeError,
                               match=r"Function 'BadGradBackward' returned nan values in its "
                                     r"0th output\."):
                BadGrad.apply(x).sum().backward()
            with pytest.raises(ValueError, match="boom in backward"):
                Raising.apply(x).sum().backward()


def test_backward_error_warns_with_forward_trace(device):
    class Raising(gpugrad.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            raise ValueError("boom")

    with _quiet(gpugrad):
        x = gpugrad.ones(2, requires_grad=True, device=device)
        y = Raising.apply(x).sum()  # RAISING-FORWARD
        with pytest.warns(UserWarning, match="Error detected in RaisingBackward") as rec:
            with pytest.raises(ValueError, match="boom"):
                y.backward()
    assert any("RAISING-FORWARD" in str(w.message) for w in rec)


def test_inf_in_backward_is_reported_too(device):
    # sqrt'(0) = inf: torch only checks nan; gpugrad reports inf as well (issue 5)
    with _quiet(gpugrad):
        x = gpugrad.zeros(2, requires_grad=True, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(RuntimeError, match="Function 'SqrtBackward0' returned inf "
                                                   "values in its 0th output."):
                x.sqrt().sum().backward()


def test_check_nan_false_keeps_tracebacks_only(device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with gpugrad.autograd.detect_anomaly(check_nan=False):
            assert not anomaly_mode.is_anomaly_check_nan_enabled()
            y = _nan_backward(_Lib(device))
            assert "traceback_" in y.grad_fn.metadata
            y.backward()  # no error


class _Lib:
    def __init__(self, device):
        self.device = device

    def tensor(self, data, **kw):
        return gpugrad.tensor(data, device=self.device, **kw)


def test_set_detect_anomaly_and_is_anomaly_enabled(lib):
    ad = lib.autograd
    ad.is_anomaly_enabled = lib.is_anomaly_enabled  # torch has it at the top level only
    assert not ad.is_anomaly_enabled()
    ad.set_detect_anomaly(True)
    assert ad.is_anomaly_enabled()
    ad.set_detect_anomaly(False)
    assert not ad.is_anomaly_enabled()
    with ad.set_detect_anomaly(True):
        assert ad.is_anomaly_enabled()
    assert not ad.is_anomaly_enabled()
    with _quiet(lib):
        assert ad.is_anomaly_enabled()
        with ad.set_detect_anomaly(False):
            assert not ad.is_anomaly_enabled()
        assert ad.is_anomaly_enabled()
    assert not ad.is_anomaly_enabled()


def test_detect_anomaly_as_decorator():
    # (torch's detect_anomaly is a context manager only; gpugrad's decorates too, as no_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        @gpugrad.autograd.detect_anomaly()
        def inside():
            return gpugrad.autograd.is_anomaly_enabled()

        @gpugrad.autograd.set_detect_anomaly(True)
        def inside2():
            return gpugrad.is_anomaly_enabled()

    assert not gpugrad.autograd.is_anomaly_enabled()
    assert inside() and inside() and inside2()
    assert not gpugrad.autograd.is_anomaly_enabled()


def test_detect_anomaly_warns_on_entry(lib):
    with pytest.warns(UserWarning, match="Anomaly Detection has been enabled"):
        with lib.autograd.detect_anomaly():
            pass


def test_off_means_no_recording_cost(device):
    """When off, Function.apply links nodes with the plain routine (nothing recorded)."""
    plain = function._record
    with _quiet(gpugrad):
        assert function._record is not plain
        y = gpugrad.ones(2, requires_grad=True, device=device) * 2
        assert "traceback_" in y.grad_fn.metadata
    assert function._record is plain
    y = gpugrad.ones(2, requires_grad=True, device=device) * 2
    assert y.grad_fn._metadata is None  # not even the metadata dict was made
