"""nn.Module and nn.Parameter: registration, traversal, modes, zero_grad, conversions,
state_dict round trips and errors, hooks, reprs equal to torch's."""
from __future__ import annotations

import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import gpugrad
import gpugrad.nn as nn
from helpers import assert_close, to_numpy, torch_or_skip


def net_class(lib):
    """A small model class on ``lib`` (gpugrad or torch) with a parameter, a buffer, a
    non-persistent buffer and children."""

    class Net(lib.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = lib.nn
            self.fc1 = n.Linear(3, 4)
            self.act = n.ReLU()
            self.block = n.Sequential(n.Linear(4, 4), n.Tanh())
            self.scale = n.Parameter(lib.ones(4))
            self.register_buffer("steps", lib.zeros(1))
            self.register_buffer("cache", lib.zeros(2), persistent=False)

        def forward(self, x):
            return self.block(self.act(self.fc1(x))) * self.scale

    return Net


Net = net_class(gpugrad)


def test_parameter_basics(device):
    p = nn.Parameter(gpugrad.tensor([1.0, 2.0], device=device))
    assert isinstance(p, gpugrad.Tensor) and p.requires_grad and p.is_leaf
    assert repr(p) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    q = nn.Parameter(gpugrad.ones(2, device=device), requires_grad=False)
    assert not q.requires_grad
    y = p * 2
    assert type(y) is gpugrad.Tensor and y.grad_fn is not None
    c = copy.deepcopy(p)
    assert isinstance(c, nn.Parameter) and c.tolist() == p.tolist() and c._data is not p._data
    r = pickle.loads(pickle.dumps(p))
    assert isinstance(r, nn.Parameter) and r.requires_grad and r.tolist() == [1.0, 2.0]
    assert nn.Parameter().shape == (0,)
    torch = torch_or_skip()
    assert repr(p) == repr(torch.nn.Parameter(torch.tensor([1.0, 2.0])))


def test_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["scale", "fc1.weight", "fc1.bias", "block.0.weight", "block.0.bias"]
    assert [n for n, _ in net.named_buffers()] == ["steps", "cache"]
    assert [n for n, _ in net.named_children()] == ["fc1", "act", "block"]
    assert [n for n, _ in net.named_modules()] == ["", "fc1", "act", "block", "block.0",
                                                   "block.1"]
    assert len(list(net.modules())) == 6 and len(list(net.children())) == 3
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in net.named_parameters(prefix="m")][0] == "m.scale"
    assert net.get_submodule("block.0") is net.block[0]
    assert net.get_parameter("block.0.bias") is net.block[0].bias
    assert net.get_buffer("steps") is net.steps
    torch = torch_or_skip()
    tnet = net_class(torch)()
    assert names == [n for n, _ in tnet.named_parameters()]
    assert list(net.state_dict()) == list(tnet.state_dict())  # same keys, same order


def test_setattr_rules():
    m = nn.Module()
    m.w = nn.Parameter(gpugrad.ones(2))
    assert "w" in m._parameters and "w" not in m.__dict__
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'w'"):
        m.w = gpugrad.ones(2)
    m.w = None
    assert m.w is None and list(m.parameters()) == []
    m.sub = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="child module 'sub'"):
        m.sub = 3
    m.register_buffer("b", gpugrad.zeros(1))
    m.b = gpugrad.ones(1)
    assert m._buffers["b"].tolist() == [1.0]
    with pytest.raises(TypeError, match="as buffer 'b'"):
        m.b = 1.0
    with pytest.raises(KeyError, match="already exists"):
        m.register_parameter("training", None)
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", None)
    del m.sub
    assert "sub" not in m._modules
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'nope'"):
        m.nope

    class Early(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(gpugrad.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("y", _nonleaf_parameter())
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


def _nonleaf_parameter():
    p = nn.Parameter(gpugrad.ones(1))
    p.grad_fn = (p * 2).grad_fn  # a Parameter made part of a graph: refused as torch does
    return p


def test_shared_parameters_counted_once():
    lin = nn.Linear(2, 2)
    seq = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(list(seq.named_parameters(remove_duplicate=False))) == 4


def test_train_eval_and_requires_grad():
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(), nn.Sequential(nn.BatchNorm1d(2)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net and not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="boolean"):
        net.train("yes")
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_zero_grad(device):
    net = nn.Linear(3, 2).to(device)
    net(gpugrad.ones(1, 3, device=device)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_to_and_dtype_conversions(device):
    net = Net()
    ids = [id(p) for p in net.parameters()]
    net(gpugrad.ones(2, 3)).sum().backward()
    net.double()
    assert all(p.dtype == gpugrad.float64 for p in net.parameters())
    assert all(p.grad.dtype == gpugrad.float64 for p in net.parameters())
    assert net.steps.dtype == gpugrad.float64
    assert [id(p) for p in net.parameters()] == ids  # the same Parameter objects
    net.to(gpugrad.float32)
    assert net.fc1.weight.dtype == gpugrad.float32
    net.to(device)
    assert all(p.device == gpugrad.device(device) for p in net.parameters())
    assert net.cpu() is net and net.fc1.weight.device == gpugrad.device("cpu")
    bn = nn.BatchNorm1d(2).double()
    assert bn.num_batches_tracked.dtype == gpugrad.int64  # integers keep their dtype
    with pytest.raises(TypeError, match="floating point"):
        net.to(gpugrad.int64)
    assert net.float().fc1.weight.dtype == gpugrad.float32


@pytest.mark.gpu
def test_cuda_round_trip():
    net = Net().cuda()
    assert net.fc1.weight.is_cuda and net.steps.is_cuda
    out = net(gpugrad.ones(2, 3, device="cuda"))
    out.sum().backward()
    assert net.fc1.weight.grad.is_cuda
    net.cpu()
    assert not net.fc1.weight.is_cuda and not net.fc1.weight.grad.is_cuda


def test_apply_initialises():
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    seen = []

    def init(m):
        seen.append(type(m).__name__)
        if isinstance(m, nn.Linear):
            nn.init.constant_(m.weight, 0.5)

    assert net.apply(init) is net
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]  # children first
    assert (to_numpy(net[2].weight) == 0.5).all()


def test_state_dict_round_trip(device):
    a, b = Net().to(device), Net().to(device)
    sd = a.state_dict()
    assert list(sd) == ["scale", "steps", "fc1.weight", "fc1.bias", "block.0.weight",
                        "block.0.bias"]  # "cache" is not persistent
    assert not any(t.requires_grad for t in sd.values())
    assert sd["fc1.weight"]._data is a.fc1.weight._data  # shares memory, like torch
    res = b.load_state_dict(sd)
    assert res.missing_keys == [] and res.unexpected_keys == []
    assert repr(res) == "<All keys matched successfully>"
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert_close(p, q, 0, 0, n)
    assert b.fc1.weight._data is not a.fc1.weight._data  # copied, not aliased
    x = gpugrad.randn(2, 3, device=device)
    assert_close(a(x), b(x), 0, 0)
    keep = a.state_dict(keep_vars=True)
    assert keep["fc1.weight"] is a.fc1.weight


def test_load_state_dict_errors_leave_module_unchanged():
    net = Net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {k: v * 0 + 7 for k, v in net.state_dict().items()}
    del sd["fc1.bias"]
    sd["extra"] = gpugrad.ones(1)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert msg.startswith("Error(s) in loading state_dict for Net:\n\t")
    assert 'Missing key(s) in state_dict: "fc1.bias". ' in msg
    assert 'Unexpected key(s) in state_dict: "extra". ' in msg
    for k, v in net.state_dict().items():  # nothing was half-loaded
        assert_close(v, before[k], 0, 0, k)
    bad = dict(net.state_dict())
    bad["fc1.weight"] = gpugrad.ones(3, 4)
    with pytest.raises(RuntimeError, match=r"size mismatch for fc1.weight: copying a param "
                       r"with shape gpugrad.Size\(\[3, 4\]\) from checkpoint, the shape in "
                       r"current model is gpugrad.Size\(\[4, 3\]\)"):
        net.load_state_dict(bad, strict=False)
    res = net.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["fc1.bias"] and res.unexpected_keys == ["extra"]
    assert (to_numpy(net.fc1.weight) == 7).all()
    assert_close(net.fc1.bias, before["fc1.bias"], 0, 0)


def test_load_state_dict_error_message_matches_torch():
    torch = torch_or_skip()
    msgs = []
    for lib in (torch, gpugrad):
        lin = lib.nn.Linear(2, 3)
        sd = {"weight": lib.ones(3, 2), "foo": lib.ones(1)}
        with pytest.raises(RuntimeError) as info:
            lin.load_state_dict(sd)
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1]


def test_load_from_torch_state_dict():
    torch = torch_or_skip()
    torch.manual_seed(0)
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(8, 3))
    gnet = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    assert list(gnet.state_dict()) == list(tnet.state_dict())
    gnet.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    tnet.eval(), gnet.eval()
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert_close(gnet(gpugrad.tensor(x)), tnet(torch.tensor(x)), 1e-5, 1e-6)


def test_deepcopy_and_pickle_model(device):
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.Linear(4, 1)))
    net.to(device)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert repr(clone) == repr(net)
        assert all(isinstance(p, nn.Parameter) for p in clone.parameters())
        for (n, p), (_, q) in zip(net.named_parameters(), clone.named_parameters()):
            assert_close(p, q, 0, 0, n)
            assert p._data is not q._data
        for (n, b), (_, c) in zip(net.named_buffers(), clone.named_buffers()):
            assert_close(b, c, 0, 0, n)
        x = gpugrad.randn(2, 3, device=device)
        clone(x).sum().backward()
        assert clone[0].weight.grad is not None and net[0].weight.grad is None


def test_load_state_dict_assign():
    lin = nn.Linear(2, 2)
    w = nn.Parameter(gpugrad.ones(2, 2))
    lin.load_state_dict({"weight": w.detach(), "bias": gpugrad.zeros(2)}, assign=True)
    assert isinstance(lin.weight, nn.Parameter) and lin.weight.requires_grad
    assert (to_numpy(lin.weight) == 1).all()


def test_forward_hooks(device):
    lin = nn.Linear(2, 2).to(device)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: calls.append(("pre", m)) or
                                       (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: calls.append(("post", out.shape)))
    x = gpugrad.ones(1, 2, device=device)
    out = lin(x)
    assert calls == [("pre", lin), ("post", gpugrad.Size([1, 2]))]
    assert_close(out, lin.bias.unsqueeze(0), 0, 0)  # the pre-hook zeroed the input
    h1.remove(), h2.remove()
    h1.remove()  # removing twice is harmless
    calls.clear()
    lin(x)
    assert calls == []
    with lin.register_forward_hook(lambda m, a, o: o * 0 + 5):
        assert (to_numpy(lin(x)) == 5).all()
    assert not (to_numpy(lin(x)) == 5).all()
    order = []
    lin.register_forward_hook(lambda *a: order.append(1))
    lin.register_forward_hook(lambda *a: order.append(0), prepend=True)
    lin(x)
    assert order == [0, 1]


def test_repr_matches_torch():
    torch = torch_or_skip()

    def build(n):
        return n.Sequential(OrderedDict([
            ("conv", n.Conv2d(1, 4, 3, stride=2, padding=1, bias=False)),
            ("bn", n.BatchNorm2d(4)), ("act", n.LeakyReLU(0.1, inplace=True)),
            ("pool", n.MaxPool2d(2)), ("apool", n.AdaptiveAvgPool2d((1, 1))),
            ("flat", n.Flatten()), ("drop", n.Dropout(0.25)),
            ("heads", n.ModuleList([n.Linear(4, 2), n.Linear(4, 2), n.Linear(4, 3)])),
            ("d", n.ModuleDict({"a": n.Identity(), "b": n.Softmax(dim=1)})),
            ("ln", n.LayerNorm((2, 3))), ("gn", n.GroupNorm(2, 4)), ("emb", n.Embedding(3, 2)),
            ("ct", n.ConvTranspose2d(2, 3, 2, stride=2, output_padding=1)),
            ("c1", n.Conv1d(2, 2, 3, padding="same", groups=2, dilation=2)),
            ("bil", n.Bilinear(2, 3, 4, bias=False)), ("uf", n.Unflatten(1, (2, 2))),
            ("ap", n.AvgPool2d(3, 1, 1)), ("elu", n.ELU()), ("sp", n.Softplus()),
            ("gelu", n.GELU()), ("silu", n.SiLU()), ("ce", n.CrossEntropyLoss()),
        ]))

    assert repr(build(nn)) == repr(build(torch.nn))
    seed = "Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n)"
    assert repr(nn.Sequential(nn.Linear(2, 3))) == seed
    assert repr(nn.Module()) == "Module()"


def test_torch_style_cnn_script_trains_like_torch(device):
    """A PyTorch MNIST-style model and loop, run by both libraries from the same weights:
    the losses and the parameters agree step by step (float64, manual SGD)."""
    torch = torch_or_skip()

    def model_class(lib):
        F = lib.nn.functional

        class CNN(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = lib.nn.Conv2d(1, 4, 3, 1)
                self.bn = lib.nn.BatchNorm2d(4)
                self.conv2 = lib.nn.Conv2d(4, 6, 3, 1, padding=1)
                self.fc1 = lib.nn.Linear(6 * 3 * 3, 10)
                self.fc2 = lib.nn.Linear(10, 5)

            def forward(self, x):
                x = F.relu(self.bn(self.conv1(x)))
                x = F.max_pool2d(F.gelu(self.conv2(x)), 2)
                x = lib.flatten(x, 1)
                x = F.dropout(F.relu(self.fc1(x)), 0.0, self.training)
                return F.log_softmax(self.fc2(x), dim=1)

        return CNN

    tnet = model_class(torch)().double()
    gnet = model_class(gpugrad)().double().to(device)
    gnet.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    rng = np.random.default_rng(0)
    for step in range(3):
        x = rng.standard_normal((8, 1, 8, 8))
        t = rng.integers(0, 5, 8)
        losses = []
        for lib, net, dev in ((torch, tnet, "cpu"), (gpugrad, gnet, device)):
            net.train()
            net.zero_grad()
            loss = lib.nn.functional.nll_loss(net(lib.tensor(x, device=dev)),
                                              lib.tensor(t, device=dev))
            loss.backward()
            with lib.no_grad():
                for p in net.parameters():
                    p -= 0.1 * p.grad
            losses.append(loss.item())
        assert losses[1] == pytest.approx(losses[0], rel=1e-10), step
    tsd = tnet.state_dict()
    for k, v in gnet.state_dict().items():
        assert_close(v, tsd[k], 1e-9, 1e-11, k)
    gnet.eval(), tnet.eval()
    x = rng.standard_normal((2, 1, 8, 8))
    assert_close(gnet(gpugrad.tensor(x, device=device)), tnet(torch.tensor(x)), 1e-9, 1e-11)
