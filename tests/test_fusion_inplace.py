"""In-place writes inside fused code (``gpugrad._lazy``) do what they do to eager code.

A fused region's backward recomputes its chain from the region's inputs, where the eager ops
save what their backward reads (often their result: exp, tanh, sigmoid). The fused path
matches eager exactly, checked here against eager code in every combination of:

- chains: exp, tanh, sigmoid, mul (and the other ops' saving rules: sin, log, div, sqrt,
  relu, pow, where);
- the tensor written: a non-leaf copy of an input leaf (``x.clone()``), an intermediate
  before the op, the op's result followed by more ops, the chain's output, and the op's
  result as the output;
- the write: a recorded ``mul_`` (a lazy op itself), ``zero_``, ``add_`` under no_grad (a
  direct write), ``t[0] = 3.0`` (a view), ``t[1:].mul_(2)`` (through a view);
- when: while the chain is pending, or after it was computed;

each giving the same gradients, or the same InplaceError with the same message (the tensor
described as eager describes it, and the eager node that saved it). Also: an output no
gradient reaches (its ops do not run, as in eager; an input only it reads gets no gradient),
a second backward with retain_graph (after the one-kernel backward too), create_graph, the
compiled step, a ``.data`` write, writes that go around gpugrad's in-place ops (an
optimizer's update): InplaceError naming the tensor and the chain; and the bookkeeping
(check_inplace wrapped only while fusing, watched nodes forgotten).
"""
from __future__ import annotations

import pytest

import gpugrad
from gpugrad import _lazy, optim
from gpugrad.autograd import InplaceError
from helpers import assert_close

pytestmark = pytest.mark.usefixtures("fusion_state")  # tests/conftest.py

CHAINS = {
    "exp": lambda u, w: u.exp(),
    "tanh": lambda u, w: u.tanh(),
    "sigmoid": lambda u, w: u.sigmoid(),
    "mul": lambda u, w: u * w,
}
MORE_CHAINS = {
    "sin": lambda u, w: u.sin(),
    "log": lambda u, w: (u * u + 1).log(),
    "div": lambda u, w: u / (w * w + 1),
    "sqrt": lambda u, w: (u * u + 1).sqrt(),
    "relu": lambda u, w: u.relu(),
    "pow": lambda u, w: u ** 3,
    "where": lambda u, w: gpugrad.where(w > 0, u, w * 2),
    "square": lambda u, w: u * u,
}


def _no_grad_add(t):
    with gpugrad.no_grad():
        t.add_(1)


WRITES = {
    "mul_": lambda t: t.mul_(2),
    "zero_": lambda t: t.zero_(),
    "no_grad_add_": _no_grad_add,
    "setitem": lambda t: t.__setitem__(0, 3.0),
    "view_mul_": lambda t: t[1:].mul_(2),
}


def _leaves(device):
    x = gpugrad.tensor([0.5, -1.0, 2.0], device=device, requires_grad=True)
    w = gpugrad.tensor([1.5, 0.5, -2.0], device=device, requires_grad=True)
    return x, w


def _step(chain, target, write, computed, x, w):
    """A forward with an in-place write of ``target`` before the backward."""
    h = x.clone()               # (a) a non-leaf copy of the input leaf: an input of the chain
    u = h * 1.5 + 0.1           # (b) an intermediate before the op
    v = chain(u, w)             # (b) the op's result, followed by more ops
    y = v * 2                   # (c) the output
    out = v if target == "result_out" else y
    if computed:
        out.grad_fn  # noqa: B018  (reading the history computes the chain)
    write({"copy": h, "before": u, "result": v, "output": y, "result_out": v}[target])
    out.sum().backward()


def _outcome(fused, *args, device):
    """("ok", gradients) or (error type, message) of one run, eager or fused."""
    x, w = _leaves(device)
    try:
        if fused:
            with _lazy.fusing():
                _step(*args, x, w)
        else:
            _step(*args, x, w)
    except RuntimeError as e:
        return type(e), str(e)
    return "ok", (x.grad, w.grad)


def _assert_same(eager, fused):
    assert eager[0] == fused[0], (eager, fused)
    if eager[0] == "ok":
        for ge, gf in zip(eager[1], fused[1]):
            if ge is None:
                assert gf is None
            else:
                assert_close(gf, ge, rtol=1e-6, atol=1e-6)
    else:
        assert eager[0] is InplaceError
        # the same tensor, described as eager describes it, and the same node
        assert fused[1].split(", is at version")[0] == eager[1].split(", is at version")[0]
        assert fused[1].split("used by")[-1] == eager[1].split("used by")[-1]


@pytest.mark.parametrize("computed", [False, True], ids=["pending", "computed"])
@pytest.mark.parametrize("write", sorted(WRITES))
@pytest.mark.parametrize("target", ["copy", "before", "result", "output", "result_out"])
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_in_place_write_before_backward_as_eager(chain, target, write, computed, device):
    args = (CHAINS[chain], target, WRITES[write], computed)
    eager = _outcome(False, *args, device=device)
    fused = _outcome(True, *args, device=device)
    _assert_same(eager, fused)
    assert _lazy.stats["regions"] >= 1  # (the fused run did fuse)


def test_the_matrix_has_both_outcomes(device):
    # the cases above are not all errors, nor all fine: eager's rules are exercised
    seen = {}
    for chain in CHAINS:
        for target in ["copy", "result", "result_out"]:
            seen[(chain, target)] = _outcome(False, CHAINS[chain], target, WRITES["mul_"],
                                             False, device=device)[0]
    assert seen[("exp", "copy")] == "ok"            # exp saved its result, not its input
    assert seen[("exp", "result")] is InplaceError  # ... which was written
    assert seen[("mul", "copy")] == "ok"            # u = h * 1.5 + 0.1 saved nothing of h
    assert seen[("mul", "result_out")] == "ok"      # mul saves its arguments only
    assert seen[("tanh", "result_out")] is InplaceError


@pytest.mark.parametrize("computed", [False, True], ids=["pending", "computed"])
@pytest.mark.parametrize("target", ["copy", "before", "result", "output"])
@pytest.mark.parametrize("chain", sorted(MORE_CHAINS))
def test_other_ops_save_as_eager(chain, target, computed, device):
    args = (MORE_CHAINS[chain], target, WRITES["mul_"], computed)
    _assert_same(_outcome(False, *args, device=device), _outcome(True, *args, device=device))


def test_output_without_gradient_runs_no_check(device):
    # eager does not run the ops only an output without gradient needs (nor unpack what
    # they saved); the fused node, which has that output, does not check them either
    def f(x, fused):
        a = x.exp()          # saves a
        b = (x * 3).sin()    # another output of the same region
        a.mul_(2)
        b.sum().backward()

    x, xe = _leaves(device)[0], _leaves(device)[0]
    with _lazy.fusing():
        f(x, True)
    f(xe, False)
    assert_close(x.grad, xe.grad)


def test_second_backward_after_a_write_raises_as_eager(device):
    def f(x):
        v = (x * 1.5).tanh()
        loss = (v * 2).sum()
        loss.backward(retain_graph=True)
        v.add_(1)
        loss.backward()

    for fused in (False, True):
        x = _leaves(device)[0]
        with pytest.raises(InplaceError, match="output 0 of TanhBackward0"):
            if fused:
                with _lazy.fusing():
                    f(x)
            else:
                f(x)


@pytest.mark.parametrize("target", ["copy", "result"])
def test_create_graph_as_eager(target, device):
    def f(x, fused):
        h = x.clone()
        v = (h * 1.5).exp()
        (v if target == "result" else h).mul_(2)
        (g,) = gpugrad.autograd.grad((v * v).sum(), x, create_graph=True)
        g.sum().backward()
        return g

    outcomes = []
    for fused in (False, True):
        x = _leaves(device)[0]
        try:
            if fused:
                with _lazy.fusing():
                    g = f(x, True)
            else:
                g = f(x, False)
            outcomes.append(("ok", (g, x.grad)))
        except RuntimeError as e:
            outcomes.append((type(e), str(e)))
    _assert_same(*outcomes)


@pytest.mark.parametrize("target", ["copy", "result", "output"])
@pytest.mark.parametrize("chain", ["exp", "mul"])
def test_compiled_step_as_eager(chain, target, device):
    def step(x, w):
        x.grad = w.grad = None
        _step(CHAINS[chain], target, WRITES["mul_"], False, x, w)
        return x.grad.clone()

    x, w = _leaves(device)
    eager = _outcome(False, CHAINS[chain], target, WRITES["mul_"], False, device=device)
    compiled = gpugrad.compile(step, warmup=1)
    for _ in range(3):  # warm-up, capture (the CPU stand-in: eager calls), replays
        if eager[0] == "ok":
            compiled(x, w)
            _assert_same(eager, ("ok", (x.grad, w.grad)))
        else:
            with pytest.raises(InplaceError) as info:
                compiled(x, w)
            _assert_same(eager, (info.type, str(info.value)))


def test_data_write_keeps_the_read_values(device):
    # .data shares the memory but not the version counter: eager's exp kept its result, so
    # its gradient is the old one; the fused node, which reads its input, gets a copy
    def f(x, flush):
        h = x.clone()
        v = h.exp()
        if flush:
            v.grad_fn  # noqa: B018
        h.data.mul_(2)
        v.sum().backward()
        return v.detach()

    for flush in (False, True):
        x, xe = _leaves(device)[0], _leaves(device)[0]
        with _lazy.fusing():
            v = f(x, flush)
        ve = f(xe, flush)
        assert_close(v, ve)
        assert_close(x.grad, xe.grad)


def test_write_around_the_in_place_ops_names_the_chain(device):
    # An optimizer writes the parameters' arrays itself: a fused node that still needs the
    # old values for its backward cannot have them (eager's exp kept its result): it says so
    p, _ = _leaves(device)
    p.grad = gpugrad.ones(3, device=device)
    opt = optim.SGD([p], lr=0.5)
    with _lazy.fusing():
        v = (p * 1.5).exp()
        v.grad_fn  # noqa: B018  (computed)
        opt.step()
        p.grad = None
    with pytest.raises(InplaceError, match=r"fused elementwise chain \(mul, exp\).*"
                                           r"optimizer step.*fuse=False") as info:
        v.sum().backward()
    assert str(info.value).startswith("one of the variables needed for gradient computation "
                                      "has been modified by an inplace operation: "
                                      "[float32 [3]], which is a leaf tensor")


def test_check_inplace_is_wrapped_only_while_fusing(device):
    from gpugrad.ops import inplace
    original = inplace.check_inplace
    with _lazy.fusing():
        assert inplace.check_inplace is not original
        with _lazy.fusing():  # nested
            pass
        assert inplace.check_inplace is not original
    assert inplace.check_inplace is original


def test_watched_nodes_are_forgotten_after_backward(device):
    x, w = _leaves(device)
    m = gpugrad.ones(3, 2, device=device)
    with _lazy.fusing():
        for _ in range(200):
            ((x * w).exp() @ m).sum().backward()  # the engine runs (and releases) the node
    entries = sum(len(e) for d in (_lazy._watched, _lazy._watched_memory) for e in d.values())
    assert entries <= _lazy._SWEEP_AT + 8  # swept as it goes: no leak in a long block
    _lazy._sweep()
    for t in (x, w):  # (entries of other tests' graphs may still be alive)
        assert id(t._version) not in _lazy._watched
        assert id(_lazy._root(t._data)) not in _lazy._watched_memory


def test_input_only_an_unreached_output_reads_gets_no_gradient(device):
    x, w = _leaves(device)
    with _lazy.fusing():
        a = x.exp()            # an output of the region no gradient reaches
        loss = (w * 3).sum()   # the same region
        loss.backward()
    assert a is not None and x.grad is None  # as eager: x is not in the loss's graph
    assert_close(w.grad, gpugrad.full((3,), 3.0, device=device))


def test_one_kernel_backward_retained_then_a_write_then_again(device):
    # loss.backward(retain_graph=True) of a pending loss runs the one-kernel backward and
    # keeps the node; a later write of its input under no_grad gives the node a copy (eager's
    # tanh kept its result): the second backward accumulates the same gradient, as eager's
    grads = []
    for fused in (False, True):
        x = _leaves(device)[0]
        with _lazy.fusing() if fused else gpugrad.enable_grad():
            loss = (x * 1.5).tanh().sum()
            loss.backward(retain_graph=True)
            with gpugrad.no_grad():
                x.add_(1)
            loss.backward()
        grads.append(x.grad)
    assert _lazy.stats["fast_backwards"] == 1
    assert_close(grads[1], grads[0])


def test_write_after_fusing_ended_names_the_chain(device):
    # Outside fusing() the in-place ops are not watched (eager code pays nothing): a fused
    # node that still needs the old input says so in its backward (eager's exp kept its
    # result, and would not raise); inside gpugrad.compile the step's backward runs within
    x = _leaves(device)[0]
    with _lazy.fusing():
        h = x.clone()
        v = h.exp()
    h.mul_(2)
    with pytest.raises(InplaceError, match=r"output 0 of MulBackward0.*fused elementwise "
                                           r"chain \(exp\)"):
        v.sum().backward()
