"""Index checks that read indices on the host step aside inside a CUDA graph capture.

cross_entropy/nll_loss, embedding, one_hot (with num_classes), gather, index_select and
friends check their indices' bounds with one host read: a capture cannot do that (and a
replay would not redo it). While ``gpugrad._capture.cuda_capturing`` is set they must compute
the same results without any host read; outside a capture the checks stay. The flag is set by
hand here, so the CPU runs the very code a CUDA capture runs.
"""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
from gpugrad import _capture
from gpugrad.nn import functional as F
from helpers import to_numpy

rng = np.random.default_rng(3)


@pytest.fixture
def capturing(monkeypatch):
    """The capture flag on, and every host read of indices an error."""
    def no_host_read(*args, **kwargs):
        raise AssertionError("an index check read the indices on the host during a capture")

    import gpugrad.nn._losses as losses
    import gpugrad.nn.functional as functional
    import gpugrad.ops.indexing as indexing
    for module in (losses, functional, indexing):
        monkeypatch.setattr(module, "host_minmax", no_host_read)
    monkeypatch.setattr(_capture, "cuda_capturing", True)


def _cases():
    logits = rng.standard_normal((6, 4))
    target = np.array([0, 3, 1, -100, 2, 3])
    weight = rng.uniform(0.5, 2.0, 4)
    table = rng.standard_normal((5, 3))
    idx = np.array([[0, 4], [2, 2]])
    src = rng.standard_normal((3, 4))
    g_idx = np.array([[0, 1, 2, 0], [2, 2, 1, 0]])
    return {
        "cross_entropy": (lambda x: F.cross_entropy(x, gpugrad.tensor(target)), logits),
        "nll_loss_weight": (lambda x: F.nll_loss(x.log_softmax(1), gpugrad.tensor(target),
                                                 weight=gpugrad.tensor(weight)), logits),
        "embedding": (lambda w: F.embedding(gpugrad.tensor(idx), w).sum(), table),
        "gather": (lambda x: x.gather(0, gpugrad.tensor(g_idx)).sum(), src),
        "index_select": (lambda x: x.index_select(1, gpugrad.tensor([3, 0, 3])).sum(), src),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_index_checks_skip_the_host_read_while_capturing(name, request):
    fn, data = CASES[name]
    x = gpugrad.tensor(data, requires_grad=True)
    eager = fn(x)
    eager.backward()
    expected = (to_numpy(eager), to_numpy(x.grad))
    request.getfixturevalue("capturing")
    y = gpugrad.tensor(data, requires_grad=True)
    out = fn(y)
    out.backward()
    assert np.allclose(to_numpy(out), expected[0], rtol=1e-12, atol=0)
    assert np.allclose(to_numpy(y.grad), expected[1], rtol=1e-12, atol=0)


def test_one_hot_with_num_classes_while_capturing(capturing):
    out = F.one_hot(gpugrad.tensor([2, 0, 1]), 3)
    assert np.array_equal(to_numpy(out), np.eye(3, dtype=np.int64)[[2, 0, 1]])


def test_one_hot_inferring_num_classes_still_reads_the_host(capturing):
    with pytest.raises(AssertionError, match="host"):
        F.one_hot(gpugrad.tensor([2, 0, 1]))


@pytest.mark.parametrize("call", [
    lambda: F.cross_entropy(gpugrad.zeros(2, 3), gpugrad.tensor([0, 3])),
    lambda: F.embedding(gpugrad.tensor([5]), gpugrad.zeros(5, 2)),
    lambda: gpugrad.zeros(2, 3).gather(1, gpugrad.tensor([[0, 3]])),
    lambda: F.one_hot(gpugrad.tensor([3]), 3),
], ids=["cross_entropy", "embedding", "gather", "one_hot"])
def test_eager_calls_keep_the_bounds_checks(call):
    with pytest.raises((IndexError, RuntimeError), match="out of (bounds|range)|smaller than"):
        call()
