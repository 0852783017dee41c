"""gpugrad.utils.data against torch.utils.data: the same batches (values, dtypes, structure)
for the same datasets and options; reproducible shuffling; samplers, splits, errors."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

import gpugrad
from gpugrad.utils import data as gdata
from helpers import to_numpy, torch_or_skip

Point = namedtuple("Point", ["x", "y"])


def _same_structure(ours, theirs, torch, where="batch"):
    """Equal values, dtypes and container types (a gpugrad tensor stands for a torch one)."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, gpugrad.Tensor), f"{where}: {type(ours).__name__}"
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1], where
        assert tuple(ours.shape) == tuple(theirs.shape), where
        np.testing.assert_array_equal(to_numpy(ours), theirs.numpy(), err_msg=where)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for k in theirs:
            _same_structure(ours[k], theirs[k], torch, f"{where}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), \
            f"{where}: {type(ours).__name__} vs {type(theirs).__name__}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _same_structure(a, b, torch, f"{where}[{i}]")
    else:
        assert ours == theirs and type(ours) is type(theirs), where


class Pairs:
    """A map-style dataset of mixed samples, defined once for both libraries."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = np.arange(3, dtype=np.float32) + i
        return {"x": x, "label": i % 3, "weight": 0.5 * i, "name": f"s{i}",
                "flag": i % 2 == 0, "pt": Point(np.int64(i), [i, -i])}


@pytest.mark.parametrize("batch_size,drop_last", [(4, False), (4, True), (1, False),
                                                  (10, False), (3, True)])
def test_tensor_dataset_batches_match_torch(batch_size, drop_last, device):
    torch = torch_or_skip()
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    y = np.arange(10)
    ours = gdata.DataLoader(gdata.TensorDataset(gpugrad.tensor(x, device=device),
                                                gpugrad.tensor(y, device=device)),
                            batch_size=batch_size, drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
        batch_size=batch_size, drop_last=drop_last)
    assert len(ours) == len(theirs)
    got, expect = list(ours), list(theirs)
    assert len(got) == len(expect)
    _same_structure(got, expect, torch)
    assert all(t.device == gpugrad.device(device) for b in got for t in b)


def test_mixed_samples_collate_like_torch():
    torch = torch_or_skip()
    ours = list(gdata.DataLoader(Pairs(7), batch_size=3))
    theirs = list(torch.utils.data.DataLoader(Pairs(7), batch_size=3))
    _same_structure(ours, theirs, torch)


@pytest.mark.parametrize("batch", [
    [1, 2, 3], [1.5, 2.0], [True, False], ["a", "b"], [(1, 2.0), (3, 4.0)],
    [[1, 2], [3, 4]], [np.int32(3), np.int32(4)], [np.ones((2, 2)), np.zeros((2, 2))],
    [{"a": (1, [2.0])}, {"a": (3, [4.0])}], [Point(1, 2.0), Point(3, 4.0)],
], ids=lambda b: type(b[0]).__name__)
def test_default_collate_matches_torch(batch):
    torch = torch_or_skip()
    from torch.utils.data import default_collate
    _same_structure(gdata.default_collate(batch), default_collate(batch), torch)


def test_default_collate_stacks_tensors_and_checks_sizes(device):
    torch = torch_or_skip()
    ts = [gpugrad.tensor([[1.0, 2.0]], device=device), gpugrad.tensor([[3.0, 4.0]], device=device)]
    out = gdata.default_collate(ts)
    expect = torch.utils.data.default_collate([torch.tensor([[1.0, 2.0]]),
                                               torch.tensor([[3.0, 4.0]])])
    _same_structure(out, expect, torch)
    with pytest.raises(RuntimeError, match="equal size"):
        gdata.default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="found object"):
        gdata.default_collate([object()])


def _epochs(loader, n=3):
    return [[b[1].tolist() for b in loader] for _ in range(n)]


def test_shuffle_is_a_reproducible_permutation_each_epoch(device):
    ds = gdata.TensorDataset(gpugrad.zeros(23, 2, device=device),
                             gpugrad.arange(23, device=device))
    a = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True, generator=7))
    b = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True, generator=7))
    c = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True, generator=8))
    assert a == b and a != c
    for epoch in a:
        assert [len(x) for x in epoch] == [5, 5, 5, 5, 3]
        assert sorted(sum(epoch, [])) == list(range(23))
    assert a[0] != a[1]  # a new permutation each epoch
    # a numpy Generator, or gpugrad's global seed, works as well
    g = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True,
                                 generator=np.random.default_rng(3)), 1)
    assert sorted(sum(g[0], [])) == list(range(23))
    gpugrad.manual_seed(11)
    d = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True))
    gpugrad.manual_seed(11)
    e = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True))
    assert d == e
    dropped = _epochs(gdata.DataLoader(ds, batch_size=5, shuffle=True, drop_last=True), 1)
    assert [len(x) for x in dropped[0]] == [5, 5, 5, 5]


def test_collate_fn_sampler_batch_sampler_and_no_batching():
    torch = torch_or_skip()
    ds = list(range(10))

    def collate(b):
        return sum(b)

    for kw in [dict(batch_size=3, collate_fn=collate),
               dict(batch_size=None),
               dict(sampler=[9, 0, 4, 4], batch_size=2),
               dict(batch_sampler=[[1, 2], [7], [3, 3, 3]])]:
        ours = list(gdata.DataLoader(ds, **kw))
        theirs = list(torch.utils.data.DataLoader(ds, **kw))
        _same_structure(ours, theirs, torch, str(kw))
    assert len(gdata.DataLoader(ds, batch_sampler=[[1, 2], [7]])) == 2
    with pytest.raises(ValueError, match="mutually exclusive with shuffle"):
        gdata.DataLoader(ds, sampler=[1], shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        gdata.DataLoader(ds, batch_sampler=[[1]], batch_size=2)
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        gdata.DataLoader(ds, batch_size=0)
    with pytest.warns(UserWarning, match="num_workers is ignored"):
        assert len(list(gdata.DataLoader(ds, batch_size=4, num_workers=2))) == 3


def test_iterable_dataset_batches_match_torch():
    torch = torch_or_skip()

    def make(base):
        class Stream(base):
            def __iter__(self):
                return iter([(i, float(i) / 2) for i in range(7)])

            def __len__(self):
                return 7
        return Stream()

    for kw in [dict(batch_size=3), dict(batch_size=3, drop_last=True), dict(batch_size=None)]:
        ours = gdata.DataLoader(make(gdata.IterableDataset), **kw)
        theirs = torch.utils.data.DataLoader(make(torch.utils.data.IterableDataset), **kw)
        _same_structure(list(ours), list(theirs), torch, str(kw))
        assert len(ours) == len(theirs)
    with pytest.raises(ValueError, match="IterableDataset"):
        gdata.DataLoader(make(gdata.IterableDataset), shuffle=True)


def test_datasets_subset_concat_and_random_split():
    torch = torch_or_skip()
    with pytest.raises(ValueError, match="Size mismatch"):
        gdata.TensorDataset(gpugrad.zeros(3), gpugrad.zeros(4))
    ds = gdata.TensorDataset(gpugrad.arange(10))
    cat = ds + gdata.Subset(ds, [9, 8])
    assert len(cat) == 12 and cat[10][0].item() == 9 and cat[-1][0].item() == 8
    for lengths in [[3, 7], [0.3, 0.7], [0.5, 0.25, 0.25], [0.33, 0.33, 0.34]]:
        ours = gdata.random_split(ds, lengths, generator=1)
        theirs = torch.utils.data.random_split(range(10), lengths,
                                               generator=torch.Generator().manual_seed(1))
        assert [len(s) for s in ours] == [len(s) for s in theirs], lengths
        assert sorted(i for s in ours for i in s.indices) == list(range(10))
    assert gdata.random_split(ds, [4, 6], generator=5)[0].indices == \
        gdata.random_split(ds, [4, 6], generator=5)[0].indices
    with pytest.raises(ValueError, match="Sum of input lengths"):
        gdata.random_split(ds, [3, 3])
