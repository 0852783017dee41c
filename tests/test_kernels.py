"""The raw elementwise kernels of ``kernels/`` and their NumPy twins (``gpugrad._kernels``).

- the parser: good definitions, and every error path as a ``KernelSourceError`` that names
  the kernel, the file and the line;
- every kernel's NumPy twin against a reference written independently here in NumPy (float64
  math), in float32 and float64, on special values (0, -0, negatives, inf, nan);
- dtypes (float16 computed in float32, promotion, bool masks), numbers and 0-d arrays;
- the CuPy path on CPU through a stand-in ``cupy`` module: built lazily, once, compile
  errors translated; and, marked ``gpu``, every CuPy kernel against its twin on a device;
- the CUDA source CuPy would compile for every kernel, compiled with ``nvcc`` (when present:
  catches CUDA syntax errors in ``kernels/`` on machines without a GPU);
- "one launch": the backward of every elementwise op and activation, and the forward of the
  composite activations, is one kernel call (or one primitive array op) whose inputs are the
  op's saved arrays and whose outputs are the returned gradients;
- every fused backward Function is differentiable (gradcheck / gradgradcheck in float64).
"""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

import gpugrad
from gpugrad import _kernels
from gpugrad._kernels import KernelSourceError, kernels as K, parse_source
from gpugrad.autograd import gradcheck, gradgradcheck
from gpugrad.autograd.function import Function
from gpugrad.ops import elementwise as E
from gpugrad.ops import fused
from helpers import torch_or_skip


# ---- the parser ---------------------------------------------------------------------------------
GOOD = """\
// A file comment before the first kernel.

// kernel: scaled_tanh_backward
// in: gy, y, scalar k
// out: gx
// The doc line.
T one = T(1);
gx = gy * k * (one - y * y);

// kernel: split
// in: a, bool m
// out: p, q
p = m ? a : T(0);
q = !m ? -a : T(0.5) * a;
"""


def test_parse_good_definitions():
    a, b = parse_source(GOOD, "f.cu", "kernels/f.cu")
    assert (a.name, a.line, a.body_line, a.relname) == ("scaled_tanh_backward", 3, 7,
                                                        "kernels/f.cu")
    assert a.inputs == [("gy", False), ("y", False), ("k", True)] and a.outputs == ["gx"]
    assert a.doc == ["The doc line."]
    assert a.in_params == "T gy, T y, T k" and a.out_params == "T gx"
    assert a.cuda_operation.startswith('#line 7 "kernels/f.cu"\n')
    assert b.inputs == [("a", False), ("m", False)] and b.masks == {"m"}
    assert b.in_params == "T a, bool m" and b.out_params == "T p, T q"
    ks = _kernels.KernelSet([a, b])
    gy, y = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    np.testing.assert_allclose(ks.scaled_tanh_backward(gy, y, 3.0), gy * 3 * (1 - y * y))
    p, q = ks.split(np.array([1.0, 2.0, 4.0], np.float32), np.array([True, False, True]))
    assert p.dtype == np.float32 and q.dtype == np.float32
    np.testing.assert_array_equal(p, [1, 0, 4])
    np.testing.assert_array_equal(q, [0.5, -2, 2])
    with pytest.raises(TypeError, match="must be a bool array"):
        ks.split(np.ones(2), np.ones(2))
    assert "scaled_tanh_backward" in ks and len(ks) == 2 and ks["split"] is ks.split


def _body(body, header="// kernel: k\n// in: x, scalar s\n// out: y\n"):
    return header + body


# (source, message fragment, line of the error); the kernel is "k" unless the header fails
BAD = [
    (_body("y = x $ 2;\n"), "unexpected character '$'", 4),
    (_body("y = (x + 1;\n"), "expected ')'", 4),
    (_body("const y = x;\n"), "only locals of type T", 4),
    (_body("3 = x;\n"), "expected a statement", 4),
    (_body("y x;\n"), "expected '=' after 'y'", 4),
    (_body("y = x\n"), "expected ';' after the expression, found 'end of kernel'", 4),
    (_body("y = x * 2f;\n"), "invalid literal '2f'", 4),
    (_body("y = T(x, x);\n"), "T(...) takes one argument", 4),
    (_body("y = frobnicate(x);\n"), "unknown function 'frobnicate'", 4),
    (_body("y = pow(x);\n"), "pow() takes 2 argument(s), got 1", 4),
    (_body("y = x * ;\n"), "expected an expression", 4),
    (_body("y = x * 0.5;\n"), "float literal 0.5 must be written T(0.5)", 4),
    (_body("T a = y;\ny = a;\n"), "output 'y' is read before it is assigned", 4),
    (_body("y = x + z;\n"), "unknown name 'z'", 4),
    (_body("y = x * (1 / 2);\n"), "integer division", 4),
    (_body("T exp = x;\ny = exp;\n"), "'exp' is a reserved name", 4),
    (_body("T a = x;\nT a = x;\ny = a;\n"), "'a' is already declared", 5),
    (_body("x = s;\ny = x;\n"), "input 'x' cannot be assigned", 4),
    (_body("a = x;\ny = a;\n"), "assignment to undeclared 'a'", 4),
    (_body("T a = x;\n", "// kernel: k\n// in: x\n// out: y, z\n"), "never assigned", 1),
    (_body("", "// kernel: k\n// in: x\n// out: y\n// only a comment\n"), "empty body", 1),
    ("// kernel: 9k\n// in: x\n// out: y\ny = x;\n", "invalid kernel name '9k'", 1),
    (_body("y = x;\n") + "\n" + _body("y = x;\n"), "defined twice in this file", 6),
    ("y = x;\n" + _body("y = x;\n"), "code before the first", 1),
    ("// kernel: k\n// in: x\n// in: z\n// out: y\ny = x;\n", "a second `// in:` line", 3),
    ("// kernel: k\n// in: x\n// out: y\n// out: z\ny = x;\n", "a second `// out:` line", 4),
    ("// kernel: k\n// in: x, half h\n// out: y\ny = x;\n", "bad input 'half h'", 2),
    ("// kernel: k\n// in: x, i\n// out: y\ny = x;\n", "'i' cannot name a parameter", 2),
    ("// kernel: k\n// in: x, x\n// out: y\ny = x;\n", "listed twice", 2),
    ("// kernel: k\n// in: x\ny = x;\n", "no `// out:` line", 1),
    ("// kernel: k\n// in: scalar s, bool m\n// out: y\ny = s;\n", "no floating point array", 1),
]


@pytest.mark.parametrize("source, message, line", BAD,
                         ids=[re.sub(r"\W+", "_", m)[:40] for _, m, _ in BAD])
def test_parse_errors_name_kernel_file_and_line(source, message, line):
    with pytest.raises(KernelSourceError) as info:
        parse_source(source, "/x/kernels/bad.cu", "kernels/bad.cu")
    e = info.value
    assert message in str(e)
    assert e.file == "/x/kernels/bad.cu" and e.line == line
    assert str(e).startswith(f"/x/kernels/bad.cu:{line}: ")
    if "kernel name" not in message and "before the first" not in message:
        assert e.kernel == "k" and "kernel 'k': " in str(e)


def test_load_errors(tmp_path):
    with pytest.raises(KernelSourceError, match="does not exist"):
        _kernels.load(tmp_path / "missing")
    (tmp_path / "a.cu").write_text(_body("y = x;\n"))
    (tmp_path / "b.cu").write_text("\n" + _body("y = -x;\n"))
    with pytest.raises(KernelSourceError) as info:
        _kernels.load(tmp_path)
    e = info.value
    assert e.kernel == "k" and e.line == 2 and str(e.file).endswith("b.cu")
    assert f"also defined at {tmp_path / 'a.cu'}:1" in str(e)


def test_shipped_table_parses_with_unique_names():
    table = _kernels.load(_kernels.KERNELS_DIR)
    assert table.names() == K.names() and len(K) >= 50
    for k in K:
        d = k.definition
        assert d.file.parent == _kernels.KERNELS_DIR
        assert repr(k).startswith(f"<gpugrad kernel {k.name}(")


# ---- the twins against independent NumPy references ---------------------------------------------
def _sig(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # another formula than the kernel's


_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])
_K0 = math.sqrt(2 / math.pi)


def _gelu_tanh_d(x):
    t = np.tanh(_K0 * (x + 0.044715 * x ** 3))
    return 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * _K0 * (1 + 3 * 0.044715 * x ** 2)


def _lerp(a, b, w):
    return np.where(np.abs(w) < 0.5, a + w * (b - a), b - (b - a) * (1 - w))


_where = np.where
# name -> (reference over float64 arrays and numbers, [scalar argument sets])
REF = {
    "sigmoid": (lambda x: _sig(x), [()]),
    "sigmoid_backward": (lambda gy, y: gy * y * (1 - y), [()]),
    "tanh_backward": (lambda gy, y: gy * (1 - y ** 2), [()]),
    "relu_backward": (lambda gy, y: _where(y > 0, gy, 0.0), [()]),
    "leaky_relu": (lambda x, s: _where(x > 0, x, s * x), [(0.01,), (-0.3,)]),
    "leaky_relu_backward": (lambda gy, x, s: _where(x > 0, gy, s * gy), [(0.01,), (2.0,)]),
    "elu": (lambda x, a: _where(x > 0, x, a * np.expm1(np.minimum(x, 0))), [(1.0,), (0.3,)]),
    "elu_backward": (lambda gy, x, a: _where(x > 0, gy, gy * a * np.exp(np.minimum(x, 0))),
                     [(1.0,), (2.5,)]),
    "gelu": (lambda x: x * 0.5 * _erfc(-x / math.sqrt(2)), [()]),
    "gelu_backward": (lambda gy, x: gy * (0.5 * _erfc(-x / math.sqrt(2))
                                          + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
                      [()]),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + np.tanh(_K0 * (x + 0.044715 * x ** 3))), [()]),
    "gelu_tanh_backward": (lambda gy, x: gy * _gelu_tanh_d(x), [()]),
    "silu": (lambda x: x * _sig(x), [()]),
    "silu_backward": (lambda gy, x: gy * (_sig(x) + x * _sig(x) * (1 - _sig(x))), [()]),
    "softplus": (lambda x, b, t: _where(b * x > t, x, np.logaddexp(0, b * x) / b),
                 [(1.0, 20.0), (2.0, 3.0), (0.5, 1.0)]),
    "softplus_backward": (lambda gy, x, b, t: _where(b * x > t, gy, gy * _sig(b * x)),
                          [(1.0, 20.0), (2.0, 3.0)]),
    "exp_backward": (lambda gy, y: gy * y, [()]),
    "expm1_backward": (lambda gy, y: gy * (1 + y), [()]),
    "log_backward": (lambda gy, x: gy / x, [()]),
    "log2_backward": (lambda gy, x: gy / x / math.log(2), [()]),
    "log10_backward": (lambda gy, x: gy / x / math.log(10), [()]),
    "log1p_backward": (lambda gy, x: gy / (1 + x), [()]),
    "sqrt_backward": (lambda gy, y: 0.5 * gy / y, [()]),
    "rsqrt_backward": (lambda gy, y: -0.5 * gy * y ** 3, [()]),
    "sin_backward": (lambda gy, x: gy * np.cos(x), [()]),
    "cos_backward": (lambda gy, x: -gy * np.sin(x), [()]),
    "tan_backward": (lambda gy, y: gy * (1 + y ** 2), [()]),
    "reciprocal_backward": (lambda gy, y: -gy * y ** 2, [()]),
    "erf_backward": (lambda gy, x: gy * 2 / math.sqrt(math.pi) * np.exp(-x ** 2), [()]),
    "abs_backward": (lambda gy, x: gy * np.sign(x), [()]),
    "clamp_backward": (lambda gy, x, lo, hi: _where((x >= lo) & (x <= hi), gy, 0.0),
                       [(-0.5, 0.7), (-math.inf, 1.0), (0.0, math.inf), (1.0, -1.0)]),
    "pow_scalar_backward": (lambda gy, x, p: gy * p * x ** (p - 1), [(2.0,), (3.0,), (0.5,),
                                                                     (-1.5,)]),
    "rpow_backward": (lambda gy, y, lb: gy * y * lb, [(math.log(2.5),), (math.nan,)]),
    "rpow_zero_backward": (lambda gy, b, lz: _where(b >= 0, 0.0, gy * lz), [(-math.inf,)]),
    "pow_backward": (lambda gy, a, b, y: (_where(b == 0, 0.0, gy * b * a ** (b - 1)),
                                          _where((a == 0) & (b >= 0), 0.0, gy * y * np.log(a))),
                     [()]),
    "pow_backward_base": (lambda gy, a, b: _where(b == 0, 0.0, gy * b * a ** (b - 1)), [()]),
    "pow_backward_exponent": (lambda gy, a, b, y: _where((a == 0) & (b >= 0), 0.0,
                                                         gy * y * np.log(a)), [()]),
    "div_backward": (lambda gy, a, b: (gy / b, -gy * a / b ** 2), [()]),
    "div_backward_divisor": (lambda gy, a, b: -gy * a / b ** 2, [()]),
    "rdiv_backward": (lambda gy, b, a: -gy * a / b ** 2, [(1.5,), (-3.0,)]),
    "maximum_backward": (lambda gy, a, b: (_where(a == b, gy / 2, _where(a > b, gy, 0.0)),
                                           _where(a == b, gy / 2, _where(b > a, gy, 0.0))),
                         [()]),
    "minimum_backward": (lambda gy, a, b: (_where(a == b, gy / 2, _where(a < b, gy, 0.0)),
                                           _where(a == b, gy / 2, _where(b < a, gy, 0.0))),
                         [()]),
    "mul_backward": (lambda gy, a, b: (gy * b, gy * a), [()]),
    "where_backward": (lambda gy, c: (_where(c, gy, 0.0), _where(c, 0.0, gy)), [()]),
    "lerp": (_lerp, [()]),
    "lerp_scalar": (_lerp, [(0.3,), (0.75,), (-0.6,), (1.0,)]),
    "lerp_backward": (lambda gy, a, b, w: (gy * (1 - w), gy * w, gy * (b - a)), [()]),
    "lerp_scalar_backward": (lambda gy, w: (gy * (1 - w), gy * w), [(0.3,), (-2.0,)]),
    "logsigmoid": (lambda x: -np.logaddexp(0, -x), [()]),
    "logsigmoid_backward": (lambda gy, x: gy * _sig(-x), [()]),
    "clamp_tensor": (lambda x, lo, hi: _where(np.isnan(lo) | np.isnan(hi), np.nan,
                                              np.minimum(np.maximum(x, lo), hi)), [()]),
    "clamp_min_tensor": (lambda x, lo: np.maximum(x, lo), [()]),
    "clamp_max_tensor": (lambda x, hi: np.minimum(x, hi), [()]),
    "clamp_tensor_backward": (lambda gy, x, lo, hi: (
        _where((x >= lo) & (x <= hi), gy, 0.0), _where((x < lo) & (lo < hi), gy, 0.0),
        _where((x > hi) | (hi < lo), gy, 0.0)), [()]),
    "clamp_min_tensor_backward": (lambda gy, x, lo: (_where(x >= lo, gy, 0.0),
                                                     _where(x < lo, gy, 0.0)), [()]),
    "clamp_max_tensor_backward": (lambda gy, x, hi: (_where(x <= hi, gy, 0.0),
                                                     _where(x > hi, gy, 0.0)), [()]),
    # floor of a quotient jumps: computed in the kernel's dtype (``native``)
    "remainder_backward": (lambda gy, a, b: -gy * np.floor(a / b), [()], "native"),
    "rremainder_backward": (lambda gy, b, a: -gy * np.floor(a / b), [(5.0,), (-2.5,)],
                            "native"),
}
# The kernels of this family (kernels/optim.cu, the optimizers', is tested in test_optim.py).
FILES = ("kernels/activations.cu", "kernels/math_backward.cu")

SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3, -1e-6, 7.5, -9.0, 30.0,
                    -30.0, np.inf, -np.inf, np.nan])
N = 96


def _inputs(kernel, dtype, seed=0):
    """Arrays for every array input of ``kernel``: special values and random ones, each input
    in its own order (so that every special value meets many others), cast to ``dtype``."""
    rng = np.random.default_rng(seed)
    out = []
    for name, scalar in kernel.definition.inputs:
        if scalar:
            continue
        if name in kernel.definition.masks:
            out.append(rng.random(N) < 0.5)
            continue
        v = np.concatenate([SPECIAL, rng.normal(0, 2, N - len(SPECIAL))])
        out.append(rng.permutation(v).astype(dtype))
    return out


def _call_args(kernel, arrays, numbers):
    arrays, numbers = list(arrays), list(numbers)
    return [numbers.pop(0) if scalar else arrays.pop(0)
            for _, scalar in kernel.definition.inputs]


def test_every_kernel_has_a_reference():
    mine = [k.name for k in K if k.definition.relname in FILES]
    assert sorted(REF) == sorted(mine), "write a reference for each new kernel"


TOL = {np.float32: dict(rtol=2e-5, atol=1e-6), np.float64: dict(rtol=1e-10, atol=1e-12)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(REF))
def test_twin_matches_independent_reference(name, dtype):
    kernel = K[name]
    ref, scalar_sets, *native = REF[name]
    for numbers in scalar_sets:
        arrays = _inputs(kernel, dtype)
        with np.errstate(all="ignore"):
            got = kernel(*_call_args(kernel, arrays, numbers))
            # the reference: float64 math on the same (rounded) inputs
            wide = [a if a.dtype == np.bool_ or native else a.astype(np.float64)
                    for a in arrays]
            want = ref(*_call_args(kernel, wide, [float(dtype(n)) for n in numbers]))
        got = got if isinstance(got, tuple) else (got,)
        want = want if isinstance(want, tuple) else (want,)
        assert len(got) == len(kernel.definition.outputs) == len(want)
        for out_name, g, w in zip(kernel.definition.outputs, got, want):
            assert g.dtype == dtype and g.shape == (N,)
            w = np.asarray(w, dtype=np.float64).astype(dtype)
            bad = ~np.isclose(g, w, equal_nan=True, **TOL[dtype])
            assert not bad.any(), (
                f"{name}{numbers} output {out_name} ({np.dtype(dtype).name}): at inputs "
                f"{[a[bad][:4] for a in arrays]} got {g[bad][:4]}, expected {w[bad][:4]}")


# ---- dtypes, numbers, shapes (NumPy) ------------------------------------------------------------
def test_float16_is_computed_in_float32_and_rounded_once():
    x = np.array([-3.0, -0.5, 0.0, 0.7, 2.0], np.float16)
    y = K.gelu(x)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, K.gelu(x.astype(np.float32)).astype(np.float16))
    gx = K.gelu_backward(np.ones(5, np.float16), x)
    assert gx.dtype == np.float16


def test_mixed_and_integer_dtypes_promote_as_numpy():
    a32, a64 = np.ones(3, np.float32), np.ones(3, np.float64)
    assert K.mul_backward(a32, a64, a32)[0].dtype == np.float64
    assert K.tanh_backward(np.ones(3, np.int64), a32).dtype == np.float64
    assert K.tanh_backward(np.ones(3, np.int8), np.ones(3, np.int8)).dtype == np.float32
    with pytest.raises(TypeError, match="kernel tanh_backward: floating point arrays expected"):
        K.tanh_backward(np.ones(3, np.complex64), a32)


def test_scalar_inputs_are_cast_to_T():
    x = np.array([-1.0, 2.0], np.float32)
    for s in (0.1, np.float64(0.1), 1):
        y = K.leaky_relu(x, s)
        assert y.dtype == np.float32
        np.testing.assert_array_equal(y, [np.float32(-1) * np.float32(s), 2])


def test_shapes_broadcast_and_0d_arrays():
    gy = np.array(2.0)  # 0-d
    y = np.array([[0.5], [0.25]])
    gx = K.tanh_backward(gy, y)
    assert gx.shape == (2, 1)
    np.testing.assert_allclose(gx, 2 * (1 - y * y))
    assert K.sigmoid(np.array(0.0)).shape == ()
    # an output that depends on some inputs only still has the broadcast shape, and is new
    gy = np.ones((2, 3))
    ga, gb = K.lerp_scalar_backward(gy, 0.25)
    assert ga.shape == gb.shape == (2, 3) and ga is not gy and gb is not gy
    g1, g2 = K.where_backward(np.ones(3), np.array([[True], [False]]))
    assert g1.shape == g2.shape == (2, 3)


def test_wrong_arguments():
    with pytest.raises(TypeError, match=r"kernel tanh_backward takes 2 arguments \(T gy, T y\)"):
        K.tanh_backward(np.ones(2))
    with pytest.raises(TypeError, match="must be a NumPy or CuPy array, not list"):
        K.tanh_backward([1.0], np.ones(1))


# ---- the CuPy path, on CPU through a stand-in cupy module ---------------------------------------
class _DeviceArray:
    """Stands in for a cupy.ndarray: a NumPy array behind ``__cuda_array_interface__``, with
    a made-up device address (``data.ptr``: 256-aligned plus ``offset`` bytes)."""

    _next = 1 << 20

    def __init__(self, a, offset=0, contiguous=None):
        self.a = np.asarray(a)
        _DeviceArray._next += 256 * (1 + self.a.nbytes // 256)
        self.data = types.SimpleNamespace(ptr=_DeviceArray._next + offset)
        c = self.a.flags.c_contiguous if contiguous is None else contiguous
        self.flags = types.SimpleNamespace(c_contiguous=c)

    dtype = property(lambda self: self.a.dtype)
    shape = property(lambda self: self.a.shape)
    size = property(lambda self: self.a.size)
    nbytes = property(lambda self: self.a.nbytes)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.a.shape, "typestr": self.a.dtype.str, "data": (0, False),
                "version": 3}

    def astype(self, dtype):
        return _DeviceArray(self.a.astype(dtype))

    def __setitem__(self, key, value):
        self.a[key] = value.a if isinstance(value, _DeviceArray) else value


def _host(args):
    return [a.a if isinstance(a, _DeviceArray) else a for a in args]


def _fake_cupy(monkeypatch, fail=False):
    """Install a ``cupy`` whose ElementwiseKernel and RawKernel record how they are built and
    called and run the kernel's twin on the host; returns the list of kernels built."""
    built = []

    class CompileException(Exception):
        def get_message(self):
            return 'kernels/math_backward.cu(17): error: identifier "yy" is undefined'

    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name):
            self.spec = (in_params, out_params, operation, name)
            self.calls = []
            built.append(self)

        def __call__(self, *args):
            if fail:
                raise CompileException("compilation failed")
            self.calls.append(tuple(a.dtype for a in args if isinstance(a, _DeviceArray)))
            kernel = K[self.spec[3]]
            nin = len(kernel.definition.inputs)
            host = _host(args)
            out = kernel.twin(host[kernel._floats[0]].dtype.type, *host[:nin])
            out = out if isinstance(out, tuple) else (out,)
            if len(args) > nin:  # outputs given
                for o, v in zip(args[nin:], out):
                    o.a[...] = v
                return args[nin] if len(out) == 1 else args[nin:]
            out = tuple(_DeviceArray(np.broadcast_to(o, np.broadcast_shapes(
                *(h.shape for h in host[:nin] if isinstance(h, np.ndarray)))).copy())
                for o in out)
            return out[0] if len(out) == 1 else out

    class RawKernel:
        def __init__(self, code, name):
            self.code, self.name = code, name
            self.launches = []
            built.append(self)

        def __call__(self, grid, block, params):
            if fail:
                raise CompileException("compilation failed")
            m = re.fullmatch(r"gpugrad_vec_(\w+)_(float32|float64)", self.name)
            kernel = K[m.group(1)]
            nin = len(kernel.definition.inputs)
            self.launches.append((grid, block, params))
            host = _host(params[:nin])
            out = kernel.twin(np.dtype(m.group(2)).type, *host)
            out = out if isinstance(out, tuple) else (out,)
            for o, v in zip(params[nin:-1], out):
                o.a[...] = v

    cupy = types.ModuleType("cupy")
    cupy.ElementwiseKernel = ElementwiseKernel
    cupy.RawKernel = RawKernel
    cupy.empty = lambda shape, dtype: _DeviceArray(np.empty(shape, dtype))
    cuda = types.ModuleType("cupy.cuda")
    cuda.Device = lambda: types.SimpleNamespace(attributes={"MultiProcessorCount": 4})
    compiler = types.ModuleType("cupy.cuda.compiler")
    compiler.CompileException = CompileException
    cupy.cuda, cuda.compiler = cuda, compiler
    for name, mod in (("cupy", cupy), ("cupy.cuda", cuda), ("cupy.cuda.compiler", compiler)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(_kernels, "_CompileException", None)
    monkeypatch.setattr(_kernels, "_max_blocks", None)
    return built


def test_cupy_kernel_is_built_lazily_once_and_called_per_dtype(monkeypatch):
    built = _fake_cupy(monkeypatch)
    kernel = _kernels.Kernel(K.tanh_backward.definition)  # a fresh one: nothing built yet
    d = kernel.definition
    assert built == []
    y = np.array([0.5, -0.25])
    for dt in (np.float32, np.float64, np.float32, np.float16):
        out = kernel(_DeviceArray(np.ones(2, dt)), _DeviceArray(y.astype(dt)))
        assert isinstance(out, _DeviceArray) and out.dtype == dt
        np.testing.assert_allclose(out.a, 1 - y * y, rtol=1e-3)
    assert len(built) == 1, "one ElementwiseKernel per kernel (CuPy compiles it per dtype)"
    assert built[0].spec == ("T gy, T y", "T gx", d.cuda_operation, "tanh_backward")
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    # float16 arrives as float32 (computed in float32, rounded once after)
    assert built[0].calls == [(f32, f32), (f64, f64), (f32, f32), (f32, f32)]
    # numbers and masks pass through as they are; several outputs come back as a tuple
    ga, gb = _kernels.Kernel(K.where_backward.definition)(
        _DeviceArray(np.ones(3, np.float32)), _DeviceArray(np.array([True, False, True])))
    np.testing.assert_array_equal(ga.a, [1, 0, 1])
    assert built[1].spec[0] == "T gy, bool c"
    assert _kernels.Kernel(K.leaky_relu.definition)(_DeviceArray(np.array([-2.0])), 0.5).a == -1


def test_cupy_compile_error_names_kernel_file_and_line(monkeypatch):
    _fake_cupy(monkeypatch, fail=True)
    kernel = _kernels.Kernel(K.exp_backward.definition)
    with pytest.raises(KernelSourceError) as info:
        kernel(_DeviceArray(np.ones(2)), _DeviceArray(np.ones(2)))
    e, d = info.value, K.exp_backward.definition
    assert (e.kernel, e.file, e.line) == ("exp_backward", d.file, d.line)
    msg = str(e)
    assert msg.startswith(f"{d.file}:{d.line}: kernel 'exp_backward': CUDA compilation failed")
    assert 'kernels/math_backward.cu(17): error: identifier "yy" is undefined' in msg
    assert type(e.__cause__).__name__ == "CompileException"


# ---- out=: the outputs written into given arrays ------------------------------------------------
_FLAGS = {"maximize", "nesterov", "first"}


def _numbers(kernel):
    """A valid set of numbers for the kernel's scalar inputs."""
    if kernel.name in REF:
        return list(REF[kernel.name][1][0])
    return [0.0 if n in _FLAGS else 0.3 for n, s in kernel.definition.inputs if s]


def _as_tuple(v):
    return v if isinstance(v, tuple) else (v,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16],
                         ids=["float32", "float64", "float16"])
def test_out_writes_every_kernel_into_the_given_arrays(dtype):
    """For every kernel: kernel(*args, out=bufs) returns bufs, holding exactly the values of
    kernel(*args) (the same arithmetic in another order of writing)."""
    for kernel in K:
        arrays = [a if a.dtype == bool else np.abs(a) + 0.25 for a in _inputs(kernel, dtype)]
        args = _call_args(kernel, arrays, _numbers(kernel))
        with np.errstate(all="ignore"):
            want = _as_tuple(kernel(*args))
            bufs = tuple(np.full(w.shape, 7, w.dtype) for w in want)
            got = kernel(*args, out=bufs if len(bufs) > 1 else bufs[0])
        assert all(g is b for g, b in zip(_as_tuple(got), bufs)), kernel.name
        for b, w in zip(bufs, want):
            np.testing.assert_array_equal(b, w, err_msg=kernel.name)


def test_out_broadcasts_and_accepts_a_bare_array_for_one_output():
    gy, y = np.array(2.0), np.array([[0.5], [0.25]])
    o = np.empty((2, 1))
    assert K.tanh_backward(gy, y, out=o) is o
    np.testing.assert_array_equal(o, K.tanh_backward(gy, y))
    ga, gb = np.empty((2, 3)), np.empty((2, 3))
    assert K.lerp_scalar_backward(np.ones((2, 3)), 0.25, out=(ga, gb)) == (ga, gb)
    np.testing.assert_array_equal(ga, 0.75)
    np.testing.assert_array_equal(gb, 0.25)
    g1, g2 = np.empty((2, 3)), np.empty((2, 3))
    K.where_backward(np.ones(3), np.array([[True], [False]]), out=(g1, g2))
    np.testing.assert_array_equal(g1, [[1, 1, 1], [0, 0, 0]])


def test_out_errors():
    x = np.ones(3)
    with pytest.raises(TypeError, match=r"kernel mul_backward: out must be a tuple of 2 arrays "
                                        r"\(T ga, T gb\), got 1"):
        K.mul_backward(x, x, x, out=(np.empty(3),))
    with pytest.raises(TypeError, match="out must be a tuple of 2 arrays"):
        K.mul_backward(x, x, x, out=np.empty(3))
    with pytest.raises(ValueError, match=r"out 'gx' has shape \(2,\), expected \(3,\)"):
        K.tanh_backward(x, x, out=(np.empty(2),))
    with pytest.raises(TypeError, match="out 'gx' has dtype float32, expected float64"):
        K.tanh_backward(x, x, out=(np.empty(3, np.float32),))
    with pytest.raises(TypeError, match="out 'gx' must be a NumPy array like the inputs"):
        K.tanh_backward(x, x, out=(_DeviceArray(np.empty(3)),))
    buf = np.empty(3)
    with pytest.raises(ValueError, match="the out arrays overlap each other"):
        K.mul_backward(x, x, x, out=(buf, buf))


# A kernel whose outputs, written into its inputs as the twin goes, would read overwritten
# inputs: the Kernel must notice and compute into new arrays first.
SWAP = """\
// kernel: swap
// in: a, b
// out: a_out, b_out
a_out = b;
b_out = a;

// kernel: early
// in: x, y
// out: x_out, y_out
T t = x * y;
x_out = t;
y_out = y - x;
"""


def test_in_place_outputs_equal_fresh_ones_whatever_the_aliasing():
    swap, early = (_kernels.Kernel(d) for d in parse_source(SWAP, "s.cu", "kernels/s.cu"))
    a, b = np.arange(4.0), np.arange(4.0) + 10
    assert swap(a, b, out=(a, b)) == (a, b)
    np.testing.assert_array_equal(a, [10, 11, 12, 13])
    np.testing.assert_array_equal(b, [0, 1, 2, 3])
    for which in [(0, None), (None, 1), (1, 0), (0, 1)]:
        x, y = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
        want = early(x.copy(), y.copy())
        ins = (x, y)
        out = tuple(ins[w] if w is not None else np.empty(3) for w in which)
        early(x, y, out=out)
        for o, w in zip(out, want):
            np.testing.assert_array_equal(o, w, err_msg=str(which))
    # a partial overlap (a shifted view of an input) is computed before it is written
    x = np.arange(6.0)
    want = K.exp_backward(x[1:], x[:-1])
    K.exp_backward(x[1:], x[:-1], out=(x[:-1],))
    np.testing.assert_array_equal(x[:-1], want)


def test_every_kernel_with_each_output_written_into_each_input():
    """Whatever input an output is bound to (in place where the analysis allows it, through
    new arrays where not), the outputs hold the kernel's values."""
    for kernel in K:
        d = kernel.definition
        floats = [i for i, (n, s) in enumerate(d.inputs) if not s and n not in d.masks]
        base = [a if a.dtype == bool else np.abs(a) + 0.25 for a in _inputs(kernel, np.float64)]
        args0 = _call_args(kernel, base, _numbers(kernel))
        with np.errstate(all="ignore"):
            want = _as_tuple(kernel(*args0))
        for k in range(len(d.outputs)):
            for j in floats:
                args = [a.copy() if isinstance(a, np.ndarray) else a for a in args0]
                out = tuple(args[j] if o == k else np.empty(N) for o in range(len(d.outputs)))
                with np.errstate(all="ignore"):
                    kernel(*args, out=out)
                for o, w in zip(out, want):
                    np.testing.assert_array_equal(
                        o, w, err_msg=f"{kernel.name}: {d.outputs[k]} into {d.inputs[j][0]}")

def test_in_place_analysis_of_the_shipped_kernels():
    """The twin of every optimizer kernel writes its outputs into its inputs as it goes
    (no temporary per output); div_backward may write ga into gy but not into b."""
    for k in K:
        d = k.definition
        if d.relname.endswith("optim.cu"):
            assert k._inplace_ok(tuple(o[:-4] for o in d.outputs)), k.name
    assert K.div_backward._inplace_ok(("gy", "a"))
    assert not K.div_backward._inplace_ok(("b", None))


def _peak(fn):
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_out_makes_no_temporary_for_the_results():
    """NumPy reports its buffers to tracemalloc: in place, an optimizer step allocates only
    what its expressions need (sgd: lr * g), and no array per output."""
    n = 1 << 18
    nbytes = n * 8
    p, g = np.ones(n), np.full(n, 0.5)
    assert _peak(lambda: K.sgd_step(p, g, 0.1, 0.0, 0.0, out=(p,))) < 1.5 * nbytes
    np.testing.assert_array_equal(p, 0.95)
    rng = np.random.default_rng(0)
    args = [rng.random(n) + 0.1 for _ in range(4)] + [0.1, 0.1, 0.999, 0.001, 1e-8, 0.0, 1.0,
                                                      0.1, 0.5, 0.0]
    want = K.adam_step(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    fresh = _peak(lambda: K.adam_step(*args))
    inplace = _peak(lambda: K.adam_step(*args, out=(args[0], args[2], args[3])))
    # the peak is at p's update: m_new, v_new (now in m, v) no longer add to it
    assert inplace < fresh - 1.5 * nbytes, (inplace / nbytes, fresh / nbytes)
    for got, w in zip((args[0], args[2], args[3]), want):
        np.testing.assert_array_equal(got, w)


# ---- the vectorized CUDA kernel: which path runs, on CPU through the stand-in cupy ----------------
BIG = _kernels.VECTORIZE_MIN_SIZE + 3  # odd: the vector loop and the scalar tail both run


def _dev(n=BIG, dtype=np.float32, offset=0, fill=0.5, **kw):
    return _DeviceArray(np.full(n, fill, dtype), offset=offset, **kw)


def _paths(built):
    """(ElementwiseKernel launches, RawKernel launches) so far."""
    return (sum(len(k.calls) for k in built if hasattr(k, "calls")),
            sum(len(k.launches) for k in built if hasattr(k, "launches")))


def test_vectorized_kernel_is_chosen_for_large_contiguous_aligned_arrays(monkeypatch):
    built = _fake_cupy(monkeypatch)
    kernel = _kernels.Kernel(K.leaky_relu_backward.definition)
    gx = kernel(_dev(), _dev(fill=-1.0), 0.25)
    assert _paths(built) == (0, 1)
    raw, = built
    assert raw.name == "gpugrad_vec_leaky_relu_backward_float32"
    assert raw.code == _kernels.raw_source(kernel.definition, np.float32)
    grid, block, params = raw.launches[0]
    n4 = BIG // 4
    assert block == (256,) and grid == (min(-(-n4 // 256), 8 * 4),)
    assert type(params[2]) is np.float32 and params[2] == 0.25  # a scalar: a T argument
    assert type(params[-1]) is np.int64 and params[-1] == BIG
    assert params[3] is gx and gx.shape == (BIG,) and gx.dtype == np.float32
    np.testing.assert_array_equal(gx.a, 0.125)
    kernel(_dev(), _dev(), 1.0)
    kernel(_dev(dtype=np.float64), _dev(dtype=np.float64), 1.0)  # double2
    assert [k.name for k in built] == ["gpugrad_vec_leaky_relu_backward_float32",
                                       "gpugrad_vec_leaky_relu_backward_float64"]
    out = kernel(_dev(dtype=np.float16), _dev(dtype=np.float16), 1.0)  # computed in float32
    assert out.dtype == np.float16 and len(built) == 2 and _paths(built) == (0, 4)


@pytest.mark.parametrize("case", ["small", "broadcast", "misaligned", "misaligned_out",
                                  "strided", "partial_overlap", "float16_out"])
def test_elementwise_kernel_where_vectorized_cannot(monkeypatch, case):
    built = _fake_cupy(monkeypatch)
    kernel = _kernels.Kernel(K.mul_backward.definition)
    gy, a, b = _dev(fill=2.0), _dev(fill=3.0), _dev(fill=5.0)
    out = None
    if case == "small":
        gy, a, b = (_dev(n=_kernels.VECTORIZE_MIN_SIZE - 1, fill=v) for v in (2.0, 3.0, 5.0))
    elif case == "broadcast":
        gy = _DeviceArray(np.float32(2.0))
    elif case == "misaligned":
        a = _dev(fill=3.0, offset=4)
    elif case == "misaligned_out":
        out = (_dev(offset=8), _dev())
    elif case == "strided":
        b = _dev(fill=5.0, contiguous=False)
    elif case == "partial_overlap":
        out = (_dev(), _dev())
        out[0].data.ptr = a.data.ptr + 16
    elif case == "float16_out":
        gy, a, b = (_dev(fill=v, dtype=np.float16) for v in (2.0, 3.0, 5.0))
        out = (_dev(dtype=np.float16), _dev(dtype=np.float16))
    res = kernel(gy, a, b, out=out)
    expect = (0, 1) if case == "float16_out" else (1, 0)
    if case == "float16_out":
        assert res == out
    assert _paths(built) == expect
    ga, gb = res
    np.testing.assert_array_equal(ga.a, 10.0)
    np.testing.assert_array_equal(gb.a, 6.0)


def test_vectorized_kernel_in_place_and_with_masks(monkeypatch):
    built = _fake_cupy(monkeypatch)
    p, g = _dev(fill=1.0), _dev(fill=0.5)
    res = _kernels.Kernel(K.sgd_step.definition)(p, g, 0.1, 0.0, 0.0, out=(p,))
    assert res is p and _paths(built) == (0, 1)
    assert built[0].launches[0][2][-2] is p  # the output is the input itself
    np.testing.assert_allclose(p.a, np.float32(1) - np.float32(0.1) * np.float32(0.5))
    c = _DeviceArray(np.arange(BIG) % 3 == 0)
    ga, gb = _kernels.Kernel(K.where_backward.definition)(_dev(fill=2.0), c)
    assert _paths(built) == (0, 2)
    np.testing.assert_array_equal(ga.a, np.where(c.a, 2.0, 0.0))


def test_out_on_cupy_goes_to_the_elementwise_kernel(monkeypatch):
    built = _fake_cupy(monkeypatch)
    kernel = _kernels.Kernel(K.mul_backward.definition)
    x = _dev(n=10, fill=3.0)
    ga, gb = _dev(n=10), _dev(n=10)
    assert kernel(x, x, x, out=(ga, gb)) == (ga, gb)
    assert len(built[0].calls[0]) == 5  # three inputs, two outputs
    np.testing.assert_array_equal(ga.a, 9.0)
    with pytest.raises(TypeError, match="out 'ga' must be a CuPy array like the inputs"):
        kernel(x, x, x, out=(np.empty(10, np.float32), gb))


def test_vectorized_compile_error_names_kernel_file_and_line(monkeypatch):
    _fake_cupy(monkeypatch, fail=True)
    kernel = _kernels.Kernel(K.exp_backward.definition)
    with pytest.raises(KernelSourceError) as info:
        kernel(_dev(), _dev())
    assert (info.value.kernel, info.value.line) == ("exp_backward", kernel.definition.line)
    assert "vectorized RawKernel" in str(info.value)


def test_raw_source_shape():
    src = _kernels.raw_source(K.lerp_scalar_backward.definition, np.float32)
    assert 'extern "C" __global__ void gpugrad_vec_lerp_scalar_backward_float32(' \
           "const float4* gy_p, const T w, float4* ga_p, float4* gb_p, const long long _n)" in src
    d = K.lerp_scalar_backward.definition
    assert f'#line {d.body_line} "{d.relname}"' in src and src.count("body(") == 6
    assert "for (long long _j = _nv * 4 + _tid; _j < _n; _j += _stride)" in src
    src64 = _kernels.raw_source(d, np.float64)
    assert "const double2* gy_p" in src64 and "typedef double T;" in src64


def test_bandwidth_hook_returns_none_without_a_gpu(monkeypatch):
    from gpugrad import _kernel_bench
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy fails
    assert _kernel_bench.kernel_bandwidth("tanh_backward") is None
    assert _kernel_bench.bandwidth_table() is None
    gone = types.ModuleType("cupy")
    gone.is_available = lambda: False
    monkeypatch.setitem(sys.modules, "cupy", gone)
    assert _kernel_bench.kernel_bandwidth(K.tanh_backward, n=16) is None

# ---- on a GPU: every CuPy kernel against its twin -----------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cupy_kernels_match_their_twins(dtype):
    import cupy
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    problems = []
    for kernel in K:
        rng = np.random.default_rng(1)
        arrays = []
        for name, scalar in kernel.definition.inputs:
            if name in kernel.definition.masks:
                arrays.append(rng.random(4096) < 0.5)
            elif not scalar:
                arrays.append(rng.normal(0, 2, 4096).astype(dtype))
        numbers = REF[kernel.name][1][0] if kernel.name in REF else \
            [0.5] * (len(kernel.definition.inputs) - len(arrays))
        with np.errstate(all="ignore"):
            want = kernel(*_call_args(kernel, arrays, numbers))
        got = kernel(*_call_args(kernel, [cupy.asarray(a) for a in arrays], numbers))
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        for o, g, w in zip(kernel.definition.outputs, got, want):
            g = cupy.asnumpy(g)
            assert g.dtype == dtype
            if not np.allclose(g, w, equal_nan=True, **tol):
                problems.append(f"{kernel.name}.{o}: max abs diff {np.nanmax(np.abs(g - w))}")
    assert not problems, "\n".join(problems)


def _gpu_case(kernel, dtype, n, rng):
    """(host args, device args) for ``kernel``: arrays of ``n`` elements (positive values,
    so that every kernel's domain holds) and its numbers."""
    import cupy
    arrays = []
    for name, scalar in kernel.definition.inputs:
        if name in kernel.definition.masks:
            arrays.append(rng.random(n) < 0.5)
        elif not scalar:
            arrays.append((np.abs(rng.normal(0, 2, n)) + 0.25).astype(dtype))
    host = _call_args(kernel, arrays, _numbers(kernel))
    return host, [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in host]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_vectorized_kernels_match_their_twins_with_a_tail(dtype):
    """Every kernel's vectorized RawKernel (odd sizes: the scalar tail runs), fresh outputs and
    in place for the optimizer kernels, against the NumPy twin."""
    import cupy
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    rng = np.random.default_rng(2)
    problems = []
    for n in (_kernels.VECTORIZE_MIN_SIZE + 1, _kernels.VECTORIZE_MIN_SIZE + 3):
        for kernel in K:
            host, dev = _gpu_case(kernel, dtype, n, rng)
            assert kernel._vectorizable(dev, None), kernel.name
            with np.errstate(all="ignore"):
                want = _as_tuple(kernel(*host))
            runs = [("new", _as_tuple(kernel(*dev)))]
            d = kernel.definition
            if d.relname.endswith("optim.cu"):  # and in place, as the optimizers run them
                names = [nm for nm, _ in d.inputs]
                outs = tuple(dev[names.index(o[:-4])] for o in d.outputs)
                assert kernel._vectorizable(dev, outs)
                got = _as_tuple(kernel(*dev, out=outs))
                assert all(g is o for g, o in zip(got, outs))
                runs.append(("in place", got))
            for how, got in runs:
                for o, g, w in zip(d.outputs, got, want):
                    g = cupy.asnumpy(g)
                    if not np.allclose(g, w, equal_nan=True, **tol):
                        problems.append(f"{kernel.name}.{o} n={n} {how}: max abs diff "
                                        f"{np.nanmax(np.abs(g - w))}")
    assert not problems, "\n".join(problems)


@pytest.mark.gpu
def test_misaligned_arrays_fall_back_to_the_elementwise_kernel():
    """A view starting 4 bytes into its buffer cannot be loaded as float4: the Kernel takes
    the ElementwiseKernel, with the same results as the twin."""
    import cupy
    rng = np.random.default_rng(3)
    n = _kernels.VECTORIZE_MIN_SIZE + 5
    for kernel in (K.tanh_backward, K.div_backward, K.adam_step, K.where_backward):
        host, dev = _gpu_case(kernel, np.float32, n + 1, rng)
        host = [a[1:] if isinstance(a, np.ndarray) else a for a in host]
        dev = [a[1:] if isinstance(a, cupy.ndarray) else a for a in dev]
        assert not kernel._vectorizable(dev, None)
        want = _as_tuple(kernel(*host))
        got = _as_tuple(kernel(*dev))
        outs = tuple(cupy.empty(n + 1, cupy.float32)[1:] for _ in got)
        assert not kernel._vectorizable(
            [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in host], outs)
        into = _as_tuple(kernel(*dev, out=outs))
        for g, i, w in zip(got, into, want):
            np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(cupy.asnumpy(i), w, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_kernel_bandwidth_hook_on_gpu():
    from gpugrad._kernel_bench import kernel_bandwidth
    r = kernel_bandwidth("tanh_backward", n=1 << 22, repeat=3)
    assert r["kernel"] == "tanh_backward" and r["bytes"] == 3 * 4 * (1 << 22)
    for key in ("copy_gbps", "elementwise_gbps", "vectorized_gbps"):
        assert r[key] > 0

# ---- nvcc: the CUDA source CuPy would compile, on machines without a GPU ------------------------
def cuda_source(defs) -> str:
    """One CUDA file with every kernel wrapped as cupy.ElementwiseKernel wraps it: ``T``
    typedef'd (float: ``extern "C"`` under the kernel's own name, as CuPy names it; double:
    in a namespace), each input read per element into a ``const`` local, each output a
    reference, the body after its ``#line`` directive (so messages point into kernels/)."""
    lines = []
    for ctype in ("float", "double"):
        lines += [f'#line 1 "<wrapper {ctype}>"', f"namespace gpugrad_{ctype} {{",
                  f"typedef {ctype} T;", "}"]
        for d in defs:
            params, reads = [], []
            for n, scalar in d.inputs:
                t = "bool" if n in d.masks else "T"
                if scalar:
                    params.append(f"const T {n}")
                else:
                    params.append(f"const {t}* _raw_{n}")
                    reads.append(f"    const {t} {n} = _raw_{n}[i];")
            for n in d.outputs:
                params.append(f"T* _raw_{n}")
                reads.append(f"    T &{n} = _raw_{n}[i];")
            head = (f'extern "C" __global__ void {d.name}' if ctype == "float" else
                    f"namespace gpugrad_double {{ __global__ void {d.name}")
            lines += [f'#line 1 "<wrapper of {d.name}>"',
                      "namespace gpugrad_float {}" if ctype == "float" else "",
                      f"using gpugrad_{ctype}::T;" if ctype == "float" else "",
                      f"{head}({', '.join(params)}, long long _n) {{",
                      "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;"
                      " i < _n; i += (long long)blockDim.x * gridDim.x) {",
                      *reads, d.cuda_operation, f'#line 1 "<wrapper of {d.name}, end>"',
                      "  }", "}" + ("}" if ctype == "double" else "")]
    return "\n".join(lines) + "\n"


def raw_cuda_source(defs) -> str:
    """One CUDA file with the vectorized RawKernel of every kernel, float32 and float64."""
    return "".join(_kernels.raw_source(d, dt) for dt in (np.float32, np.float64) for d in defs)


def nvcc_errors(defs, tmp_path, source=cuda_source) -> list:
    """Compile ``source(defs)`` with one nvcc call; each error as 'kernel NAME
    (FILE:LINE): message'."""
    src = tmp_path / "kernels_check.cu"
    src.write_text(source(defs))
    proc = subprocess.run(["nvcc", "--ptx", "-o", str(tmp_path / "out.ptx"), str(src)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return []
    where = {}
    for d in defs:
        where.setdefault(d.relname, []).append(d)
    errors = []
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"^(.*?)\((\d+)\): (?:catastrophic )?error: (.*)$", line)
        if not m:
            continue
        file, no, msg = m.group(1), int(m.group(2)), m.group(3)
        w = re.match(r"<(?:vectorized )?wrapper of (\w+)", file)
        if w:
            errors.append(f"kernel {w.group(1)} (its CuPy wrapper): {msg}")
            continue
        owners = [d for d in where.get(file, []) if d.body_line <= no]
        name = max(owners, key=lambda d: d.body_line).name if owners else "?"
        errors.append(f"kernel {name} ({file}:{no}): {msg}")
    return errors or [f"nvcc failed:\n{proc.stderr}"]


_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


def _both_sources(defs) -> str:
    return cuda_source(defs) + raw_cuda_source(defs)


@_nvcc
def test_every_kernel_compiles_with_nvcc(tmp_path):
    """Every kernel as CuPy's ElementwiseKernel wraps it, and its vectorized RawKernel source
    (float32 and float64), in one nvcc call (the extern "C" names stay unique; each
    vectorized source is in its own namespace)."""
    errors = nvcc_errors([k.definition for k in K], tmp_path, _both_sources)
    assert not errors, "\n".join(errors)


@_nvcc
def test_nvcc_check_of_the_vectorized_source_names_the_broken_kernel_and_line(tmp_path):
    bad, good = parse_source(GOOD, "x.cu", "kernels/x.cu")
    bad.body = bad.body.replace("(one - y * y)", "(one - y * )")
    errors = nvcc_errors([good, bad], tmp_path, raw_cuda_source)
    assert errors and all(e.startswith("kernel scaled_tanh_backward (kernels/x.cu:8): ")
                          for e in errors), errors


@_nvcc
def test_nvcc_check_names_the_broken_kernel_and_line(tmp_path):
    bad, good = parse_source(GOOD, "x.cu", "kernels/x.cu")
    bad.body = bad.body.replace("(one - y * y)", "(one - y * )")  # past the parser
    errors = nvcc_errors([good, bad], tmp_path)
    assert errors and all(e.startswith("kernel scaled_tanh_backward (kernels/x.cu:8): ")
                          for e in errors), errors


# ---- one launch ---------------------------------------------------------------------------------
class _Launches:
    """What ran while installed: kernels of ``kernels/`` (``Kernel.__call__``) and primitive
    ops (top-level ``Function.apply`` of a Function that is not a fused kernel), each with
    its array inputs and its outputs; kernels run inside an op (its forward) are counted in
    ``nested`` only."""

    def __init__(self, monkeypatch):
        self.kernels, self.ops, self.nested, self.depth = [], [], [], 0
        call, apply = _kernels.Kernel.__call__, Function.apply.__func__
        launches = self

        def kernel_call(kernel, *args, **kwargs):
            launches.depth += 1
            try:
                out = call(kernel, *args, **kwargs)
            finally:
                launches.depth -= 1
            rec = (kernel.name, args, out if isinstance(out, tuple) else (out,))
            (launches.kernels if launches.depth == 0 else launches.nested).append(rec)
            return out

        def function_apply(cls, *args, **kwargs):
            if issubclass(cls, fused.KernelFunction):  # its kernel is what counts
                return apply(cls, *args, **kwargs)
            launches.depth += 1
            try:
                out = apply(cls, *args, **kwargs)
            finally:
                launches.depth -= 1
            if launches.depth == 0:
                outs = out if isinstance(out, tuple) else (out,)
                launches.ops.append((cls.__name__, [a._data for a in args
                                                    if isinstance(a, gpugrad.Tensor)],
                                     tuple(o._data for o in outs)))
            return out

        monkeypatch.setattr(_kernels.Kernel, "__call__", kernel_call)
        monkeypatch.setattr(Function, "apply", classmethod(function_apply))

    def outputs(self):
        return [o for _, _, outs in self.kernels + self.ops for o in outs]

    def inputs(self):
        return [a for _, args, _ in self.kernels + self.ops for a in args
                if isinstance(a, np.ndarray)]


def _t(shape=(4, 3), low=0.2, high=2.0, grad=True, seed=0):
    rng = np.random.default_rng(seed)
    return gpugrad.tensor(rng.uniform(low, high, shape).astype(np.float32), requires_grad=grad)


def _mask():
    return gpugrad.tensor(np.array([[True, False, True]] * 4))


M = _mask


F = gpugrad.nn.functional
X, Y, W = (lambda: _t(seed=1)), (lambda: _t(seed=2)), (lambda: _t(low=0, high=1, seed=3))
NG = (lambda: _t(seed=4, grad=False))
# name -> (fn of the inputs, input makers, what backward launches: "kernel" (one kernel of
# kernels/), "op" (one primitive array op) or "none" (the gradient passed on as it is))
BACKWARD = {
    "exp": (gpugrad.exp, [X], "kernel"), "expm1": (gpugrad.expm1, [X], "kernel"),
    "log": (gpugrad.log, [X], "kernel"), "log2": (gpugrad.log2, [X], "kernel"),
    "log10": (gpugrad.log10, [X], "kernel"), "log1p": (gpugrad.log1p, [X], "kernel"),
    "sqrt": (gpugrad.sqrt, [X], "kernel"), "rsqrt": (gpugrad.rsqrt, [X], "kernel"),
    "abs": (gpugrad.abs, [X], "kernel"), "sin": (gpugrad.sin, [X], "kernel"),
    "cos": (gpugrad.cos, [X], "kernel"), "tan": (gpugrad.tan, [X], "kernel"),
    "tanh": (gpugrad.tanh, [X], "kernel"), "sigmoid": (gpugrad.sigmoid, [X], "kernel"),
    "reciprocal": (gpugrad.reciprocal, [X], "kernel"), "erf": (gpugrad.erf, [X], "kernel"),
    "relu": (gpugrad.relu, [X], "kernel"), "silu": (F.silu, [X], "kernel"),
    "square": (gpugrad.square, [X], "kernel"),
    "gelu": (F.gelu, [X], "kernel"),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [X], "kernel"),
    "elu": (lambda x: F.elu(x, 0.7), [X], "kernel"),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), [X], "kernel"),
    "softplus": (lambda x: F.softplus(x, beta=2.0, threshold=3.0), [X], "kernel"),
    "logsigmoid": (E.logsigmoid, [X], "kernel"),
    "clamp": (lambda x: x.clamp(0.5, 1.5), [X], "kernel"),
    "clamp_min": (lambda x: x.clamp(min=0.5), [X], "kernel"),
    "hardtanh": (lambda x: F.hardtanh(x, 0.3, 1.2), [X], "kernel"),
    "relu6": (F.relu6, [X], "kernel"),
    "clamp_tensors": (lambda x, lo, hi: x.clamp(lo, hi), [X, W, Y], "kernel"),
    "clamp_tensor_min": (lambda x, lo: x.clamp(min=lo), [X, W], "kernel"),
    "clamp_tensor_max": (lambda x, hi: gpugrad.clamp(x, max=hi), [X, W], "kernel"),
    "pow_scalar": (lambda x: x ** 2.5, [X], "kernel"),
    "pow_zero": (lambda x: x ** 0, [X], "op"),
    "rpow": (lambda x: 2.0 ** x, [X], "kernel"),
    "rpow_zero_base": (lambda x: 0.0 ** x, [lambda: _t(low=-1, high=1)], "kernel"),
    "pow_tensors": (lambda x, y: x ** y, [X, Y], "kernel"),
    "pow_base_only": (lambda x, y: x ** y, [X, NG], "kernel"),
    "pow_exponent_only": (lambda x, y: x ** y, [NG, Y], "kernel"),
    "div": (lambda x, y: x / y, [X, Y], "kernel"),
    "div_dividend_only": (lambda x, y: x / y, [X, NG], "op"),
    "div_divisor_only": (lambda x, y: x / y, [NG, Y], "kernel"),
    "div_scalar": (lambda x: x / 3.0, [X], "op"),
    "rdiv": (lambda x: 3.0 / x, [X], "kernel"),
    "mul": (lambda x, y: x * y, [X, Y], "kernel"),
    "mul_one_side": (lambda x, y: x * y, [X, NG], "op"),
    "mul_scalar": (lambda x: x * 3.0, [X], "op"),
    "add": (lambda x, y: x + y, [X, Y], "none"),
    "add_alpha": (lambda x, y: gpugrad.add(x, y, alpha=2.5), [X, Y], "op"),
    "sub": (lambda x, y: x - y, [X, Y], "op"),
    "sub_alpha": (lambda x, y: gpugrad.sub(x, y, alpha=2.5), [X, Y], "op"),
    "neg": (lambda x: -x, [X], "op"),
    "maximum": (gpugrad.maximum, [X, Y], "kernel"),
    "minimum": (gpugrad.minimum, [X, Y], "kernel"),
    "where": (gpugrad.where, [M, X, Y], "kernel"),
    "where_scalar": (lambda m, x: gpugrad.where(m, x, 0.0), [M, X], "op"),
    "lerp": (gpugrad.lerp, [X, Y, W], "kernel"),
    "lerp_scalar": (lambda x, y: gpugrad.lerp(x, y, 0.3), [X, Y], "kernel"),
    "lerp_scalar_start_only": (lambda x, y: gpugrad.lerp(x, y, 0.3), [X, NG], "op"),
    "remainder": (lambda x, y: x % y, [X, Y], "kernel"),
    "rremainder": (lambda x: 5.0 % x, [X], "kernel"),
    "remainder_scalar": (lambda x: x % 0.7, [X], "none"),
}


@pytest.mark.parametrize("create_graph", [False, True], ids=["backward", "create_graph"])
@pytest.mark.parametrize("name", sorted(BACKWARD))
def test_backward_is_one_launch(name, create_graph, monkeypatch):
    """The op's backward node runs exactly one kernel of kernels/ (or one primitive op, or
    none), reading only arrays that existed before (the incoming gradient, the op's inputs
    and output), and returns that launch's outputs as the gradients: nothing is computed
    before it to feed it, nor after it from its result."""
    fn, makers, kind = BACKWARD[name]
    inputs = [m() for m in makers]
    out = fn(*inputs)
    node = out.grad_fn
    assert node is not None
    g = gpugrad.tensor(np.random.default_rng(9).uniform(-1, 1, out.shape).astype(np.float32))
    known = [g._data, out._data] + [t._data for t in inputs]
    launches = _Launches(monkeypatch)
    with gpugrad.set_grad_enabled(create_graph):
        grads = node._apply([g])
    n_kernels, n_ops = len(launches.kernels), len(launches.ops)
    expect = {"kernel": (1, 0), "op": (0, 1), "none": (0, 0)}[kind]
    assert (n_kernels, n_ops) == expect, (
        f"{name}: backward ran kernels {[k[0] for k in launches.kernels]} and ops "
        f"{[o[0] for o in launches.ops]}, expected {kind}")
    for a in launches.inputs():
        assert any(a is k for k in known), f"{name}: a launch read an array made in backward"
    made = launches.outputs()
    got = [gr for gr in grads if gr is not None]
    assert got, f"{name}: no gradient"
    for gr in got:
        assert any(gr._data is o for o in made + [g._data]), \
            f"{name}: a gradient is not the output of the launch"
    assert out.grad_fn is node  # nothing else recorded on the forward graph


def test_each_case_is_one_node():
    """The cases above are single ops: their output's node points at the inputs' leaves
    (so the launch counted is the whole backward of the op, not of a part of it)."""
    for name, (fn, makers, _) in BACKWARD.items():
        inputs = [m() for m in makers]
        node = fn(*inputs).grad_fn
        for nxt, _ in node.next_functions:
            assert nxt is None or type(nxt).__name__ == "AccumulateGrad", \
                f"{name} is made of several nodes: {node.name()} <- {nxt.name()}"


FORWARD = {
    "sigmoid": (gpugrad.sigmoid, [X]), "silu": (F.silu, [X]), "gelu": (F.gelu, [X]),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [X]),
    "elu": (F.elu, [X]), "leaky_relu": (F.leaky_relu, [X]),
    "softplus": (lambda x: F.softplus(x, beta=0.5), [X]),
    "logsigmoid": (E.logsigmoid, [X]),
    "lerp": (gpugrad.lerp, [X, Y, W]), "lerp_scalar": (lambda x, y: gpugrad.lerp(x, y, .7), [X, Y]),
    "clamp_tensors": (lambda x, lo, hi: x.clamp(lo, hi), [X, W, Y]),
}


@pytest.mark.gpu
def test_relu_backward_is_its_kernel_on_cuda(monkeypatch):
    x = gpugrad.tensor(np.linspace(-3, 3, 4096, dtype=np.float32), device="cuda",
                       requires_grad=True)
    out = x.relu()
    g = gpugrad.ones(4096, device="cuda")
    launches = _Launches(monkeypatch)
    grads = out.grad_fn._apply([g])
    ran = launches.kernels + launches.nested
    assert [k[0] for k in ran] == ["relu_backward"]
    assert grads[0]._data is ran[0][2][0]


@pytest.mark.gpu
@pytest.mark.parametrize("n", [16, 1 << 16])
def test_sigmoid_forward_is_one_kernel_on_cuda(n, monkeypatch):
    x = gpugrad.tensor(np.linspace(-9, 9, n, dtype=np.float32), device="cuda")
    launches = _Launches(monkeypatch)
    out = gpugrad.sigmoid(x)
    ran = launches.kernels + launches.nested
    assert [k[0] for k in ran] == ["sigmoid"]
    assert ran[0][2][0] is out._data


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "recording"])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_composite_forward_is_one_kernel(name, grad, monkeypatch):
    fn, makers = FORWARD[name]
    inputs = [m() for m in makers]
    for t in inputs:
        t.requires_grad_(grad)
    launches = _Launches(monkeypatch)
    out = fn(*inputs)
    ran = launches.kernels + launches.nested
    assert len(ran) == 1, f"{name}: forward ran kernels {[k[0] for k in ran]}"
    assert len(launches.ops) == 1, f"{name}: ops {[o[0] for o in launches.ops]}, expected one"
    assert any(out._data is o for o in ran[0][2]), f"{name}: the output is not the kernel's"
    for a in ran[0][1]:
        if isinstance(a, np.ndarray):
            assert any(a is t._data for t in inputs), f"{name}: the kernel read a temporary"


# ---- every fused backward is a differentiable Function ------------------------------------------
FUSED = sorted((c for c in vars(fused).values()
                if isinstance(c, type) and issubclass(c, fused.KernelFunction) and c.kernel),
               key=lambda c: c.__name__)
POSITIVE = {"a", "x", "y", "b", "lo", "hi"}  # where the kernel's domain needs it (below)
NEEDS_POSITIVE = {"pow_backward", "pow_backward_base", "pow_backward_exponent",
                  "pow_scalar_backward", "log_backward", "log2_backward", "log10_backward",
                  "log1p_backward", "sqrt_backward", "rpow_zero_backward"}


def _fused_inputs(cls, seed=0):
    """float64 tensors requiring grad (values of either sign, |v| in [0.3, 1.7], away from
    every kink; positive where the kernel's domain needs it), masks, and numbers."""
    d = K[cls.kernel].definition
    rng = np.random.default_rng(seed)
    numbers = list(REF[cls.kernel][1][0])
    args = []
    for name, scalar in d.inputs:
        if scalar:
            args.append(numbers.pop(0))
        elif name in d.masks:
            args.append(gpugrad.tensor(rng.random((3, 4)) < 0.5))
        else:
            v = rng.uniform(0.3, 1.7, (3, 4))
            if not (cls.kernel in NEEDS_POSITIVE and name in POSITIVE):
                v *= rng.choice([-1.0, 1.0], (3, 4))
            args.append(gpugrad.tensor(v, requires_grad=True))
    return args


def test_every_fused_kernel_function_is_listed():
    names = {c.kernel for c in FUSED}
    backward_kernels = {k.name for k in K if k.name.endswith("_backward")
                        and k.definition.relname in FILES}
    assert backward_kernels <= names, f"no Function for {sorted(backward_kernels - names)}"


@pytest.mark.parametrize("cls", FUSED, ids=lambda c: c.__name__)
def test_fused_backward_functions_are_differentiable(cls):
    args = _fused_inputs(cls)

    def fn(*a):
        return cls.apply(*a)
    assert gradcheck(fn, args)
    assert gradgradcheck(fn, args)
    # and the fast path without recording gives the same values as apply
    with gpugrad.no_grad():
        fast = cls.call(*args)
    slow = cls.apply(*args)
    for f, s in zip(fast if isinstance(fast, tuple) else (fast,),
                    slow if isinstance(slow, tuple) else (slow,)):
        np.testing.assert_array_equal(f.numpy(), s.detach().numpy())


# ---- the ops built on the new kernels, against torch --------------------------------------------
def _both(fn, *arrays, grad=True):
    """fn on gpugrad and on torch from the same float64 arrays: (values, grads) of each."""
    torch = torch_or_skip()
    res = []
    for mod, make in ((gpugrad, gpugrad.tensor), (torch, torch.tensor)):
        ts = [make(a, requires_grad=grad and a.dtype.kind == "f") for a in arrays]
        out = fn(mod, *ts)
        gs = []
        if grad:
            out.backward(make(np.linspace(-1, 1, out.numel()).reshape(tuple(out.shape))))
            gs = [None if t.grad is None else t.grad.numpy() for t in ts]
        res.append((out.detach().numpy(), gs))
    return res


def _same(a, b):
    (va, ga), (vb, gb) = a, b
    np.testing.assert_allclose(va, vb, rtol=1e-12, atol=0, equal_nan=True)
    for x, y in zip(ga, gb):
        if x is None or y is None:
            assert x is None and y is None
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=0, equal_nan=True)


def test_clamp_with_tensor_bounds_matches_torch_at_ties_crossed_bounds_and_nan():
    x = np.array([1.0, 2.0, 3.0, np.nan, 0.5, 1.0, -4.0, 5.0])
    lo = np.array([1.0, 1.0, 4.0, 0.0, 2.0, 3.0, -5.0, np.nan])
    hi = np.array([0.5, 3.0, 5.0, 2.0, 2.0, 2.0, -4.0, 6.0])
    _same(*_both(lambda m, a, b, c: m.clamp(a, b, c), x, lo, hi))
    _same(*_both(lambda m, a, b: m.clamp(a, min=b), x, lo))
    _same(*_both(lambda m, a, c: m.clamp(a, max=c), x, hi))
    # a number beside a tensor bound (torch refuses the mix; gpugrad takes it as a tensor)
    mixed = gpugrad.clamp(gpugrad.tensor(x), gpugrad.tensor(lo), 2.0).numpy()
    full = gpugrad.clamp(gpugrad.tensor(x), gpugrad.tensor(lo), gpugrad.full((8,), 2.0))
    np.testing.assert_array_equal(mixed, full.numpy())
    _same(*_both(lambda m, a, b: a.clamp(min=b[:1]), x.reshape(2, 4), lo[:1]))  # broadcast


def test_logsigmoid_matches_torch_on_both_tails():
    x = np.array([-800.0, -30.0, -1.0, -0.0, 0.0, 1e-8, 2.0, 40.0, 800.0, np.inf, -np.inf])
    _same(*_both(lambda m, a: (E.logsigmoid(a) if m is gpugrad
                               else m.nn.functional.logsigmoid(a)), x))


def test_where_and_pow_zero_base_and_lerp_match_torch():
    c = np.array([True, False, True, False])
    x, y = np.array([1.0, -2.0, 3.0, 0.5]), np.array([4.0, 0.25, -1.0, 2.0])
    _same(*_both(lambda m, cc, a, b: m.where(cc, a, b) * m.tensor([1.0, np.nan, 2.0, np.inf]),
                 c, x, y))
    _same(*_both(lambda m, a: 0.0 ** a, np.array([-1.0, 0.0, 2.0, 0.5])))
    w = np.array([0.0, 1.0, 0.3, 0.75])
    _same(*_both(lambda m, a, b, ww: m.lerp(a, b, ww), x, y, w))
    for s in (0.0, 1.0, 0.3, 0.8):
        _same(*_both(lambda m, a, b: m.lerp(a, b, s), x, y))


def test_float16_through_the_fused_ops():
    """float16 works: computed in float32 by the kernels, results and gradients float16."""
    torch = torch_or_skip()
    v = np.array([-3.0, -0.5, 0.25, 1.5, 4.0], np.float16)
    for name, fn in (("gelu", lambda m, t: m.nn.functional.gelu(t)),
                     ("silu", lambda m, t: m.nn.functional.silu(t)),
                     ("softplus", lambda m, t: m.nn.functional.softplus(t)),
                     ("tanh", lambda m, t: m.tanh(t)), ("sigmoid", lambda m, t: m.sigmoid(t)),
                     ("pow", lambda m, t: t ** 3), ("div", lambda m, t: t / (t * t + 1)),
                     ("clamp", lambda m, t: t.clamp(-1, 1))):
        out = []
        for mod in (gpugrad, torch):
            t = mod.tensor(v, requires_grad=True)
            y = fn(mod, t)
            y.sum().backward()
            assert str(y.dtype).endswith("float16") and str(t.grad.dtype).endswith("float16")
            out.append((y.detach().numpy().astype(np.float32),
                        t.grad.numpy().astype(np.float32)))
        (ya, ga), (yb, gb) = out
        np.testing.assert_allclose(ya, yb, rtol=2e-3, atol=2e-3, err_msg=name)
        np.testing.assert_allclose(ga, gb, rtol=4e-3, atol=4e-3, err_msg=name)
