"""Every nn layer against PyTorch's on the same inputs and weights (values, gradients of the
inputs and of the parameters, running statistics, reprs), and gradcheck in float64 of every
functional op behind them (conv with stride/padding/dilation/groups, pools, norms)."""
from __future__ import annotations

import numpy as np
import pytest

import gpugrad
import gpugrad.nn as nn
import gpugrad.nn.functional as F
from gpugrad.autograd import gradcheck, gradgradcheck
from helpers import assert_close, to_numpy, torch_or_skip

RNG = np.random.default_rng(1234)


def _rand(*shape):
    return RNG.standard_normal(shape)


def _pair(name: str, *args, **kwargs):
    """The same layer built by torch and by gpugrad (float64), with torch's weights copied
    into gpugrad's through NumPy."""
    torch = torch_or_skip()
    tmod = getattr(torch.nn, name)(*args, **kwargs).double()
    gmod = getattr(nn, name)(*args, **kwargs).double()
    gmod.load_state_dict({k: v.detach().numpy().copy() for k, v in tmod.state_dict().items()})
    return tmod, gmod


def _run_both(tmod, gmod, inputs, device, grad_inputs=True):
    """Forward both on the same inputs, backward the same upstream gradient; return
    (torch out, gpugrad out, torch inputs, gpugrad inputs)."""
    torch = torch_or_skip()
    tx = [torch.tensor(a, requires_grad=grad_inputs and a.dtype.kind == "f") for a in inputs]
    gx = [gpugrad.tensor(a, device=device, requires_grad=grad_inputs and a.dtype.kind == "f")
          for a in inputs]
    ty, gy = tmod(*tx), gmod(*gx)
    go = _rand(*ty.shape)
    (ty * torch.tensor(go)).sum().backward()
    (gy * gpugrad.tensor(go, device=device)).sum().backward()
    return ty, gy, tx, gx


def _check_same(tmod, gmod, inputs, device, rtol=1e-9, atol=1e-10):
    ty, gy, tx, gx = _run_both(tmod, gmod, inputs, device)
    assert_close(gy, ty, rtol, atol, "output")
    for i, (a, b) in enumerate(zip(gx, tx)):
        if b.requires_grad:
            assert_close(a.grad, b.grad, rtol, atol, f"grad of input {i}")
    tparams = dict(tmod.named_parameters())
    gparams = dict(gmod.named_parameters())
    assert list(gparams) == list(tparams)
    for name, p in gparams.items():
        assert_close(p.grad, tparams[name].grad, rtol, atol, f"grad of {name}")
    tbuf = dict(tmod.named_buffers())
    for name, b in gmod.named_buffers():
        assert_close(b, tbuf[name], rtol, atol, f"buffer {name}")
    return gy


LAYERS = [
    # (name, args, kwargs, input shapes)
    ("Linear", (3, 4), {}, [(5, 3)]),
    ("Linear", (3, 4), {"bias": False}, [(2, 5, 3)]),
    ("Bilinear", (3, 2, 4), {}, [(5, 3), (5, 2)]),
    ("Conv1d", (4, 6, 3), {"stride": 2, "padding": 1}, [(2, 4, 9)]),
    ("Conv1d", (4, 6, 3), {"padding": "same", "dilation": 2, "groups": 2}, [(2, 4, 8)]),
    ("Conv2d", (3, 5, 3), {}, [(2, 3, 6, 7)]),
    ("Conv2d", (4, 6, (3, 2)), {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2),
                                "groups": 2}, [(2, 4, 7, 6)]),
    ("Conv2d", (3, 4, 4), {"padding": "same"}, [(1, 3, 6, 5)]),
    ("Conv2d", (3, 4, 3), {"padding": "valid", "stride": 3}, [(1, 3, 8, 8)]),
    ("Conv2d", (4, 4, 3), {"groups": 4, "bias": False, "padding": 1}, [(2, 4, 5, 5)]),
    ("Conv2d", (3, 5, 3), {"padding": 1}, [(3, 6, 6)]),  # unbatched
    ("Conv2d", (3, 4, 3), {"padding": (1, 2), "padding_mode": "reflect"}, [(2, 3, 6, 7)]),
    ("Conv2d", (3, 4, (3, 2)), {"padding": "same", "padding_mode": "replicate",
                                "dilation": (1, 2)}, [(1, 3, 5, 6)]),
    ("Conv2d", (2, 4, 3), {"padding": 2, "stride": 2, "padding_mode": "circular"},
     [(2, 2, 5, 6)]),
    ("Conv1d", (2, 3, 3), {"padding": 1, "padding_mode": "circular"}, [(2, 2, 7)]),
    ("ConvTranspose2d", (4, 6, 3), {"stride": 2, "padding": 1, "output_padding": 1},
     [(2, 4, 4, 5)]),
    ("ConvTranspose2d", (4, 6, (3, 2)), {"stride": (2, 3), "groups": 2, "dilation": (2, 1)},
     [(2, 4, 3, 4)]),
    ("ConvTranspose2d", (2, 3, 2), {"stride": 2, "output_padding": 1, "padding": 0,
                                    "bias": False}, [(1, 2, 3, 3)]),
    ("MaxPool2d", (2,), {}, [(2, 3, 6, 7)]),
    ("MaxPool2d", (3,), {"stride": 2, "padding": 1}, [(2, 2, 7, 6)]),
    ("MaxPool2d", (3,), {"stride": 1, "padding": 1, "dilation": 2}, [(1, 2, 7, 7)]),
    ("MaxPool2d", (3,), {"stride": 2, "ceil_mode": True}, [(1, 2, 8, 7)]),
    ("MaxPool2d", ((2, 3),), {"stride": (1, 2)}, [(3, 5, 7)]),  # unbatched
    ("AvgPool2d", (2,), {}, [(2, 3, 6, 7)]),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1}, [(2, 2, 7, 6)]),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False},
     [(2, 2, 7, 6)]),
    ("AvgPool2d", (2,), {"divisor_override": 3}, [(1, 2, 4, 4)]),
    ("AvgPool2d", (3,), {"stride": 2, "ceil_mode": True}, [(2, 2, 6, 8)]),
    ("AvgPool2d", (3,), {"stride": 2, "padding": 1, "ceil_mode": True}, [(1, 2, 6, 7)]),
    ("AvgPool2d", (2,), {"stride": 3, "padding": 1, "ceil_mode": True,
                         "count_include_pad": False}, [(1, 2, 7, 5)]),
    ("AdaptiveAvgPool2d", ((2, 3),), {}, [(2, 3, 5, 7)]),
    ("AdaptiveAvgPool2d", (1,), {}, [(2, 3, 4, 4)]),
    ("AdaptiveAvgPool2d", ((3, None),), {}, [(1, 2, 7, 5)]),
    ("BatchNorm1d", (4,), {}, [(6, 4)]),
    ("BatchNorm1d", (4,), {"momentum": None}, [(3, 4, 5)]),
    ("BatchNorm2d", (3,), {}, [(2, 3, 4, 5)]),
    ("BatchNorm2d", (3,), {"affine": False, "track_running_stats": False}, [(2, 3, 4, 5)]),
    ("BatchNorm2d", (3,), {"momentum": 0.3, "eps": 1e-3}, [(2, 3, 2, 2)]),
    ("LayerNorm", (5,), {}, [(3, 5)]),
    ("LayerNorm", ((3, 5),), {"eps": 1e-3}, [(2, 3, 5)]),
    ("LayerNorm", (4,), {"elementwise_affine": False}, [(2, 3, 4)]),
    ("LayerNorm", (4,), {"bias": False}, [(2, 4)]),
    ("GroupNorm", (2, 4), {}, [(3, 4, 5)]),
    ("GroupNorm", (3, 6), {"affine": False}, [(2, 6, 2, 3)]),
    ("Flatten", (), {}, [(2, 3, 4)]),
    ("Flatten", (0, 1), {}, [(2, 3, 4)]),
    ("Unflatten", (1, (2, 3)), {}, [(4, 6)]),
    ("Identity", (), {}, [(2, 3)]),
    ("ReLU", (), {}, [(3, 4)]),
    ("LeakyReLU", (0.2,), {}, [(3, 4)]),
    ("GELU", (), {}, [(3, 4)]),
    ("GELU", ("tanh",), {}, [(3, 4)]),
    ("SiLU", (), {}, [(3, 4)]),
    ("Tanh", (), {}, [(3, 4)]),
    ("Sigmoid", (), {}, [(3, 4)]),
    ("Softmax", (1,), {}, [(3, 4)]),
    ("LogSoftmax", (-1,), {}, [(2, 3, 4)]),
    ("ELU", (0.5,), {}, [(3, 4)]),
    ("Softplus", (2.0, 1.0), {}, [(3, 4)]),
    ("MaxPool1d", (3,), {"stride": 2, "padding": 1}, [(2, 3, 9)]),
    ("MaxPool1d", (2,), {}, [(3, 8)]),
    ("AvgPool1d", (3,), {"stride": 2, "padding": 1, "count_include_pad": False},
     [(2, 3, 9)]),
    ("AdaptiveAvgPool1d", (4,), {}, [(2, 3, 9)]),
    ("PReLU", (), {}, [(3, 4)]),
    ("PReLU", (3,), {"init": 0.1}, [(2, 3, 4, 2)]),
    ("LogSigmoid", (), {}, [(3, 4)]),
    ("Softmin", (1,), {}, [(3, 4)]),
]


def _id(case):
    name, args, kwargs, _ = case
    return f"{name}{args}{kwargs or ''}".replace(" ", "")


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's performance note
@pytest.mark.parametrize("case", LAYERS, ids=[_id(c) for c in LAYERS])
def test_layer_matches_torch(case, device):
    name, args, kwargs, shapes = case
    tmod, gmod = _pair(name, *args, **kwargs)
    assert repr(gmod) == repr(tmod)
    _check_same(tmod, gmod, [_rand(*s) for s in shapes], device)


@pytest.mark.parametrize("name,args,shape", [
    ("BatchNorm2d", (3,), (2, 3, 4, 5)), ("BatchNorm1d", (4,), (5, 4, 3))])
def test_batchnorm_running_stats_and_eval(name, args, shape, device):
    tmod, gmod = _pair(name, *args)
    for _ in range(3):  # several training steps update the running stats
        _check_same(tmod, gmod, [_rand(*shape) * 2 + 1], device)
    assert int(gmod.num_batches_tracked.item()) == 3
    tmod.eval(), gmod.eval()
    assert not gmod.training
    _check_same(tmod, gmod, [_rand(*shape)], device)


def test_batchnorm_eval_without_running_stats_uses_batch(device):
    tmod, gmod = _pair("BatchNorm2d", 2, track_running_stats=False)
    tmod.eval(), gmod.eval()
    _check_same(tmod, gmod, [_rand(3, 2, 2, 2)], device)


def test_batchnorm_single_value_per_channel_raises(device):
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(gpugrad.ones(1, 3, device=device))


def test_embedding_matches_torch(device):
    torch = torch_or_skip()
    tmod, gmod = _pair("Embedding", 7, 3, padding_idx=2)
    assert repr(gmod) == repr(tmod) == "Embedding(7, 3, padding_idx=2)"
    assert not gmod.weight[2].any()  # the padding row starts at zero
    idx = np.array([[0, 2, 5], [5, 5, 1]])
    ty, gy, _, _ = _run_both(tmod, gmod, [idx], device, grad_inputs=False)
    assert_close(gy, ty, 1e-12, 1e-12)
    assert_close(gmod.weight.grad, tmod.weight.grad, 1e-12, 1e-12)
    assert not gmod.weight.grad[2].any()  # no gradient into the padding row
    # max_norm renormalizes the looked-up rows in place, as torch
    tm, gm = _pair("Embedding", 5, 4, max_norm=1.0)
    i = np.array([0, 3, 3])
    tm(torch.tensor(i)), gm(gpugrad.tensor(i, device=device))
    assert_close(gm.weight, tm.weight, 1e-6, 1e-7)


def test_embedding_scale_grad_by_freq_matches_torch(device):
    torch_or_skip()
    tmod, gmod = _pair("Embedding", 6, 3, padding_idx=1, scale_grad_by_freq=True)
    assert repr(gmod) == repr(tmod)
    idx = np.array([[0, 4, 4], [4, 1, 3], [0, 5, 1]])  # 4 three times, 0 and 1 twice
    ty, gy, _, _ = _run_both(tmod, gmod, [idx], device, grad_inputs=False)
    assert_close(gy, ty, 1e-12, 1e-12)
    assert_close(gmod.weight.grad, tmod.weight.grad, 1e-12, 1e-12)
    # The scaled "gradient" is a heuristic, not the derivative (so no gradcheck of the
    # embedding itself); the map it computes, cotangent -> weight gradient, is linear, and
    # create_graph differentiates that map exactly (torch's double backward drops the scale).
    w = gpugrad.randn(6, 3, dtype=gpugrad.float64, device=device, requires_grad=True)
    i = gpugrad.tensor(idx, device=device)

    def weight_grad(g):
        with gpugrad.enable_grad():  # gradcheck evaluates under no_grad; this needs a graph
            out = F.embedding(i, w, padding_idx=1, scale_grad_by_freq=True)
            return gpugrad.autograd.grad(out, w, g, create_graph=True)[0]
    g = gpugrad.randn(3, 3, 3, dtype=gpugrad.float64, device=device, requires_grad=True)
    assert gradcheck(weight_grad, (g,))


def test_embedding_errors(device):
    emb = nn.Embedding(4, 2)
    with pytest.raises(IndexError, match="index out of range"):
        emb(gpugrad.tensor([4], device=device))
    with pytest.raises(RuntimeError, match="Long, Int"):
        emb(gpugrad.tensor([1.0], device=device))


def test_dropout(device):
    gpugrad.manual_seed(0)
    x = gpugrad.ones(200, 50, device=device, requires_grad=True)
    drop = nn.Dropout(0.3)
    y = drop(x)
    kept = to_numpy(y) != 0
    assert 0.65 < kept.mean() < 0.75  # ~70% kept
    np.testing.assert_allclose(to_numpy(y)[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), to_numpy(y), rtol=1e-6)  # grad is the mask
    gpugrad.manual_seed(0)
    assert (to_numpy(nn.Dropout(0.3)(x)) == to_numpy(y)).all()  # seeded: reproducible
    drop.eval()
    assert drop(x) is x
    assert not F.dropout(x, 1.0).any()
    assert repr(drop) == "Dropout(p=0.3, inplace=False)"
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_channel_dropout(device):
    gpugrad.manual_seed(0)
    x = gpugrad.ones(4, 50, 3, 3, device=device, requires_grad=True)
    y = nn.Dropout2d(0.4)(x)
    a = to_numpy(y)
    per_channel = a.reshape(4, 50, 9)
    assert ((per_channel == 0).all(-1) | (per_channel == 1 / 0.6).all(-1)).all()  # whole channels
    assert 0.45 < (per_channel[..., 0] != 0).mean() < 0.75
    y.sum().backward()
    np.testing.assert_allclose(to_numpy(x.grad), a)
    z = nn.Dropout1d(0.5)(gpugrad.ones(3, 20, 4, device=device))
    assert ((to_numpy(z) == 0).all(-1) | (to_numpy(z) == 2).all(-1)).all()
    with pytest.raises(RuntimeError, match="3D or 4D"):
        F.dropout2d(gpugrad.ones(2, 3, device=device))
    assert repr(nn.Dropout2d(0.2)) == "Dropout2d(p=0.2, inplace=False)"


def test_sequential_modulelist_moduledict(device):
    torch = torch_or_skip()
    for lib in (torch, gpugrad):
        lib.manual_seed(0)
    build = {}
    for lib in (torch, gpugrad):
        n = lib.nn
        seq = n.Sequential(n.Conv2d(1, 2, 3), n.ReLU(), n.MaxPool2d(2), n.Flatten(),
                           n.Sequential(n.Linear(8, 4), n.Dropout(0.1)))
        lst = n.ModuleList([n.Linear(2, 2) for _ in range(3)] + [n.ReLU()])
        dct = n.ModuleDict({"act": n.GELU(), "proj": n.Linear(2, 3)})
        build[lib.__name__] = (seq, lst, dct)
    for t, g in zip(build["torch"], build["gpugrad"]):
        assert repr(g) == repr(t)
    seq = build["gpugrad"][0]
    assert len(seq) == 5 and isinstance(seq[-1], nn.Sequential) and isinstance(seq[1], nn.ReLU)
    sub = seq[1:3]
    assert isinstance(sub, nn.Sequential) and list(sub._modules) == ["1", "2"]
    seq.append(nn.Identity())
    assert len(seq) == 6 and list(seq._modules)[-1] == "5"
    out = seq(gpugrad.randn(2, 1, 6, 6, device=device))
    assert out.shape == (2, 4)
    lst = build["gpugrad"][1]
    assert len(lst) == 4 and len(list(lst.parameters())) == 6
    lst.append(nn.Tanh())
    assert isinstance(lst[-1], nn.Tanh) and len(lst[1:3]) == 2
    dct = build["gpugrad"][2]
    assert list(dct.keys()) == ["act", "proj"] and "proj" in dct
    assert [k for k, _ in dct.named_parameters()] == ["proj.weight", "proj.bias"]
    with pytest.raises(IndexError):
        seq[10]


# ---- gradcheck (float64) of the functional ops ---------------------------------------------------
def _g(*shape, device, grad=True):
    return gpugrad.tensor(_rand(*shape), dtype=gpugrad.float64, device=device,
                          requires_grad=grad)


@pytest.mark.parametrize("kw,groups", [
    ({}, 1), ({"stride": 2, "padding": 1}, 1), ({"dilation": 2, "padding": (2, 1)}, 1),
    ({"padding": "same"}, 2),
    ({"stride": (2, 1), "dilation": (1, 2)}, 2)])
def test_gradcheck_conv2d(kw, groups, device):
    x = _g(1, 4, 5, 5, device=device)
    w = _g(2, 4 // groups, 3, 2, device=device)
    b = _g(2, device=device)
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, groups=groups, **kw), (x, w, b))


def test_gradgradcheck_conv2d_and_conv_transpose2d(device):
    x, w = _g(1, 2, 4, 4, device=device), _g(2, 2, 2, 2, device=device)
    assert gradgradcheck(lambda x, w: F.conv2d(x, w, stride=2, padding=1), (x, w))
    wt = _g(2, 3, 2, 2, device=device)
    assert gradgradcheck(lambda x, w: F.conv_transpose2d(x, w, stride=2), (x, wt))


def test_gradcheck_conv1d(device):
    x, w, b = _g(2, 2, 7, device=device), _g(4, 1, 3, device=device), _g(4, device=device)
    assert gradcheck(lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=2, dilation=2,
                                              groups=2), (x, w, b))


def test_gradcheck_conv_transpose2d(device):
    x = _g(1, 4, 3, 3, device=device)
    w = _g(4, 1, 3, 2, device=device)
    b = _g(2, device=device)
    assert gradcheck(lambda x, w, b: F.conv_transpose2d(
        x, w, b, stride=2, padding=1, output_padding=1, groups=2, dilation=(1, 2)), (x, w, b))


def test_gradcheck_unfold_fold(device):
    x = _g(1, 2, 4, 5, device=device)
    assert gradcheck(lambda x: F.unfold(x, (2, 3), dilation=1, padding=1, stride=(2, 1)), (x,))
    cols = _g(1, 2 * 4, 9, device=device)
    assert gradcheck(lambda c: F.fold(c, (4, 4), 2), (cols,))
    cols = _g(1, 2 * 4, 9, device=device)
    assert gradcheck(lambda c: F.fold(c, (4, 4), 2, padding=1, stride=2), (cols,))


def test_unfold_fold_match_torch(device):
    torch = torch_or_skip()
    x = _rand(2, 3, 5, 6)
    kw = dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 2), stride=(2, 1))
    got = F.unfold(gpugrad.tensor(x, device=device), **kw)
    want = torch.nn.functional.unfold(torch.tensor(x), **kw)
    assert_close(got, want, 1e-12, 1e-12)
    assert_close(F.fold(got, (5, 6), **kw), torch.nn.functional.fold(want, (5, 6), **kw),
                 1e-12, 1e-12)


def test_gradcheck_pools(device):
    x = _g(1, 2, 5, 6, device=device)
    assert gradcheck(lambda x: F.max_pool2d(x, 3, 2, 1), (x,))
    assert gradgradcheck(lambda x: F.max_pool2d(x, 2, 1), (x,))  # overlapping windows
    assert gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), (x,))
    assert gradcheck(lambda x: F.avg_pool2d(x, 3, 2, 1, ceil_mode=True), (x,))
    assert gradcheck(lambda x: F.adaptive_avg_pool2d(x, (2, 4)), (x,))


def test_max_pool2d_return_indices(device):
    torch = torch_or_skip()
    x = _rand(2, 2, 5, 7)
    out, idx = F.max_pool2d(gpugrad.tensor(x, device=device), 3, 2, 1, return_indices=True)
    tout, tidx = torch.nn.functional.max_pool2d(torch.tensor(x), 3, 2, 1, return_indices=True)
    assert_close(out, tout, 0, 0)
    assert (to_numpy(idx) == tidx.numpy()).all() and idx.dtype == gpugrad.int64
    assert not idx.requires_grad


def test_gradcheck_norms(device):
    x = _g(3, 4, 2, device=device)
    w, b = _g(4, device=device), _g(4, device=device)
    rm = gpugrad.zeros(4, dtype=gpugrad.float64, device=device)
    rv = gpugrad.ones(4, dtype=gpugrad.float64, device=device)
    assert gradcheck(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (x, w, b))
    assert gradcheck(lambda x, w, b: F.batch_norm(x, rm, rv, w, b, training=False), (x, w, b))
    assert gradcheck(lambda x, w, b: F.group_norm(x, 2, w, b), (x, w, b))
    lw, lb = _g(4, 2, device=device), _g(4, 2, device=device)
    assert gradcheck(lambda x, w, b: F.layer_norm(x, (4, 2), w, b), (x, lw, lb))
    assert gradgradcheck(lambda x, w: F.layer_norm(x, (2,), w[0]), (x, lw))


def test_gradcheck_linear_bilinear_embedding(device):
    x, w, b = _g(3, 4, device=device), _g(2, 4, device=device), _g(2, device=device)
    assert gradcheck(F.linear, (x, w, b))
    x1, x2, wb = _g(2, 3, device=device), _g(2, 2, device=device), _g(4, 3, 2, device=device)
    assert gradcheck(F.bilinear, (x1, x2, wb, _g(4, device=device)))
    emb = _g(5, 3, device=device)
    idx = gpugrad.tensor([[0, 4, 4], [1, 0, 2]], device=device)
    # (padding_idx is excluded: torch defines its row's gradient as zero, not the derivative)
    assert gradcheck(lambda e: F.embedding(idx, e), (emb,))
    assert gradgradcheck(lambda e: F.embedding(idx, e) ** 2, (emb,))


def test_gradcheck_activations_and_normalize(device):
    x = _g(3, 4, device=device)
    for fn in (lambda x: F.relu(x), lambda x: F.leaky_relu(x, 0.2), F.gelu, F.silu, F.elu,
               lambda x: F.softplus(x, 2.0), lambda x: F.softmax(x, 1),
               lambda x: F.log_softmax(x, 0), lambda x: F.normalize(x, dim=1),
               F.logsigmoid, lambda x: F.cosine_similarity(x, x * 2 + 1)):
        assert gradcheck(fn, (x,))


def test_functional_inplace_activations(device):
    x = gpugrad.tensor([-1.0, 2.0], device=device)
    y = F.relu(x, inplace=True)
    assert y is x and x.tolist() == [0.0, 2.0]
    z = gpugrad.tensor([-1.0, 2.0], device=device)
    assert F.leaky_relu(z, 0.5, inplace=True) is z and z.tolist() == [-0.5, 2.0]


def test_one_hot_and_normalize(device):
    torch = torch_or_skip()
    t = np.array([[0, 3], [2, 1]])
    oh = F.one_hot(gpugrad.tensor(t, device=device), 5)
    assert oh.dtype == gpugrad.int64
    assert (to_numpy(oh) == torch.nn.functional.one_hot(torch.tensor(t), 5).numpy()).all()
    assert F.one_hot(gpugrad.tensor([0, 2], device=device)).shape == (2, 3)
    with pytest.raises(RuntimeError, match="smaller than num_classes"):
        F.one_hot(gpugrad.tensor([3], device=device), 2)
    x = _rand(3, 4)
    assert_close(F.normalize(gpugrad.tensor(x, device=device), p=1, dim=0),
                 torch.nn.functional.normalize(torch.tensor(x), p=1, dim=0), 1e-12, 1e-12)


def test_conv_errors(device):
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="to have 3 channels, but got 2"):
        conv(gpugrad.ones(1, 2, 5, 5, device=device))
    with pytest.raises(RuntimeError, match="3D .*or 4D"):
        conv(gpugrad.ones(5, 5, device=device))
    with pytest.raises(ValueError, match="not supported for strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(RuntimeError, match="smaller than the kernel"):
        conv(gpugrad.ones(1, 3, 2, 2, device=device))


def test_conv_is_vectorized_no_position_loop(device):
    # a larger input costs no more Python: the same number of recorded ops, and it runs fast
    import time
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = gpugrad.randn(4, 8, 32, 32, device=device, requires_grad=True)
    t0 = time.perf_counter()
    y = conv(x)
    y.sum().backward()
    assert time.perf_counter() - t0 < 2.0
    assert y.shape == (4, 16, 32, 32) and x.grad.shape == x.shape


def test_gradcheck_dropout(device):
    x = _g(4, 5, device=device)

    def fn(x):
        gpugrad.manual_seed(0)  # the same mask on every evaluation
        return F.dropout(x, 0.4)

    assert gradcheck(fn, (x,))


def test_conv_transpose2d_output_size(device):
    torch = torch_or_skip()
    tmod, gmod = _pair("ConvTranspose2d", 2, 3, 3, stride=2, padding=1)
    x = _rand(1, 2, 4, 4)
    for size in ([7, 7], [8, 8], [1, 3, 8, 7]):
        want = tmod(torch.tensor(x), output_size=size)
        got = gmod(gpugrad.tensor(x, device=device), output_size=size)
        assert_close(got, want, 1e-10, 1e-12)
