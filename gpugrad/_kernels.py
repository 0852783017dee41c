"""The elementwise kernels of ``kernels/*.cu``: one definition, two executables.

Each kernel is written once, as a tiny elementwise body in CUDA C::

    // kernel: tanh_backward
    // in: gy, y
    // out: gx
    gx = gy * (1 - y * y);

From that one definition gpugrad derives

- the CUDA kernel: ``cupy.ElementwiseKernel("T gy, T y", "T gx", body, "tanh_backward")``,
  built on first use (CuPy is imported only then) and compiled by CuPy once per dtype;
- its NumPy twin: the body parsed (a tokenizer and a precedence-climbing parser) and
  translated into a Python function over NumPy arrays (``?:`` becomes ``xp.where``, ``exp``
  ``xp.exp``, ``T(...)`` a cast to the kernel's dtype), compiled once with ``compile()``.

- a vectorized CUDA kernel (``raw_source``): a grid-stride ``cupy.RawKernel`` that loads and
  stores 16 bytes per array per thread (float4 / double2) and runs the same body per element,
  with a scalar tail; used on CuPy for large contiguous, aligned, same-shape float32/float64
  arrays (an ElementwiseKernel moves ~56% of copy bandwidth on an H100, this ~93%).

``kernels.tanh_backward(gy, y)`` runs whichever fits its arrays and returns the output array
(a tuple for several outputs), in the dtype of the inputs (float16 is computed in float32 on
both devices, as torch does, and rounded once at the end). ``out=(buf,)`` writes into given
arrays instead (the twin then computes each output's last operation straight into its array);
an output may be an input, in place, when the kernel's text reads all its inputs before it
writes any output (see ``Kernel``).

The language of a body: statements ``T name = expr;`` (a local) and ``name = expr;`` (an
output or a local); expressions of + - * /, unary - + !, comparisons, && ||, ``c ? a : b``,
integer literals, ``T(...)`` casts, and the functions of ``_FUNCTIONS``. A float literal must
be written ``T(0.5)`` (a bare ``0.5`` is double in CUDA C, which would make a float32 kernel
compute in float64 and differ from its twin). NumPy evaluates both branches of a ternary:
keep the branch that is not taken finite (``exp(x > 0 ? T(0) : x)``), as the shipped kernels
do. ``in:`` lists arrays and, marked ``scalar``, numbers passed as T (``in: gy, x, scalar
slope``), or, marked ``bool``, boolean mask arrays (``in: gy, bool c``), which are read as
they are (the kernel's T comes from its other arrays). Anything else is a
``KernelSourceError`` naming the kernel, the file and the line.
"""
from __future__ import annotations

import keyword
import math
import re
import threading
from pathlib import Path

import numpy as np

from ._kernels_dir import KERNELS_DIR

__all__ = ["KernelSourceError", "Kernel", "KernelSet", "KernelDef", "load", "parse_file",
           "parse_source", "kernels", "erf", "raw_source", "raw_kernel_name",
           "VECTORIZE_MIN_SIZE"]


class KernelSourceError(RuntimeError):
    """A kernel of ``kernels/`` does not parse, or does not compile (CuPy's compiler log is in
    the message); names the kernel, the file and the line."""

    def __init__(self, message: str, kernel: str | None = None, file=None,
                 line: int | None = None) -> None:
        self.kernel, self.file, self.line, self.reason = kernel, file, line, message
        where = f"{file}:{line}: " if file is not None and line is not None else \
            (f"{file}: " if file is not None else "")
        what = f"kernel {kernel!r}: " if kernel else ""
        super().__init__(f"{where}{what}{message}")


# ---- the language -----------------------------------------------------------------------------
# name -> (Python callable in the twin's namespace, arity, result kind). The CUDA side needs no
# table: the body is compiled as written.
_FUNCTIONS = {
    "exp": ("xp.exp", 1, "T"), "exp2": ("xp.exp2", 1, "T"), "expm1": ("xp.expm1", 1, "T"),
    "log": ("xp.log", 1, "T"), "log2": ("xp.log2", 1, "T"), "log10": ("xp.log10", 1, "T"),
    "log1p": ("xp.log1p", 1, "T"), "sqrt": ("xp.sqrt", 1, "T"), "rsqrt": ("_rsqrt", 1, "T"),
    "cbrt": ("xp.cbrt", 1, "T"), "sin": ("xp.sin", 1, "T"), "cos": ("xp.cos", 1, "T"),
    "tan": ("xp.tan", 1, "T"), "asin": ("xp.arcsin", 1, "T"), "acos": ("xp.arccos", 1, "T"),
    "atan": ("xp.arctan", 1, "T"), "sinh": ("xp.sinh", 1, "T"), "cosh": ("xp.cosh", 1, "T"),
    "tanh": ("xp.tanh", 1, "T"), "asinh": ("xp.arcsinh", 1, "T"),
    "acosh": ("xp.arccosh", 1, "T"), "atanh": ("xp.arctanh", 1, "T"),
    "fabs": ("xp.abs", 1, "T"), "abs": ("xp.abs", 1, "T"), "floor": ("xp.floor", 1, "T"),
    "ceil": ("xp.ceil", 1, "T"), "trunc": ("xp.trunc", 1, "T"), "rint": ("xp.rint", 1, "T"),
    "erf": ("_erf", 1, "T"),
    "pow": ("xp.power", 2, "T"), "atan2": ("xp.arctan2", 2, "T"),
    "hypot": ("xp.hypot", 2, "T"), "copysign": ("xp.copysign", 2, "T"),
    # CUDA's max/min on floating point are fmax/fmin: a NaN operand yields the other one.
    "fmax": ("xp.fmax", 2, "T"), "max": ("xp.fmax", 2, "T"),
    "fmin": ("xp.fmin", 2, "T"), "min": ("xp.fmin", 2, "T"),
    "signbit": ("xp.signbit", 1, "bool"), "isnan": ("xp.isnan", 1, "bool"),
    "isinf": ("xp.isinf", 1, "bool"), "isfinite": ("xp.isfinite", 1, "bool"),
}

_BINARY = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4,
           "+": 5, "-": 5, "*": 6, "/": 6}
_ARITH = {"+", "-", "*", "/"}

_C_KEYWORDS = {
    "auto", "bool", "break", "case", "char", "const", "continue", "default", "do", "double",
    "else", "enum", "extern", "float", "for", "goto", "if", "int", "long", "register",
    "return", "short", "signed", "sizeof", "static", "struct", "switch", "typedef", "union",
    "unsigned", "void", "volatile", "while", "true", "false", "half", "float16", "class",
    "template", "typename", "namespace", "new", "delete", "this", "operator", "private",
    "public", "protected", "virtual", "inline", "T",
}
# `i` is CuPy's loop index; `xp` is NumPy in the twin; `_...` names are gpugrad's.
_RESERVED = {"i", "xp"} | _C_KEYWORDS | set(keyword.kwlist) | set(_FUNCTIONS)

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[fF]?)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op>&&|\|\||==|!=|<=|>=|[-+*/<>!?:=;(),])
""", re.VERBOSE | re.DOTALL)


class _Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line

    def __repr__(self):
        return f"{self.text!r}@{self.line}"


def _tokenize(text: str, first_line: int, err):
    toks = []
    pos, line = 0, first_line
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            err(f"unexpected character {text[pos]!r}", line)
        kind = m.lastgroup
        if kind not in ("ws", "comment"):
            toks.append(_Tok(kind, m.group(), line))
        line += m.group().count("\n")
        pos = m.end()
    toks.append(_Tok("end", "end of kernel", line))
    return toks


# AST nodes are tuples: ("num", text, is_int), ("name", id), ("unary", op, e),
# ("bin", op, l, r), ("cond", c, a, b), ("call", fn, [args]), ("cast", e).
class _Parser:
    """Precedence climbing over the tokens of one kernel body."""

    def __init__(self, toks, err):
        self.toks, self.pos, self.err = toks, 0, err

    def peek(self, k=0):
        return self.toks[min(self.pos + k, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.pos]
        self.pos += 1
        return t

    def expect(self, text):
        t = self.next()
        if t.text != text:
            self.err(f"expected {text!r}, found {t.text!r}", t.line)
        return t

    def statements(self):
        out = []
        while self.peek().kind != "end":
            out.append(self.statement())
        return out

    def statement(self):
        t = self.peek()
        decl = False
        if t.text == "const":
            self.next()
            t = self.peek()
            if t.text != "T":
                self.err(f"only locals of type T can be declared, found {t.text!r}", t.line)
        if t.text == "T" and self.peek(1).kind == "name":
            self.next()
            decl = True
        name = self.next()
        if name.kind != "name":
            self.err(f"expected a statement `name = expression;`, found {name.text!r}",
                     name.line)
        eq = self.next()
        if eq.text != "=":
            self.err(f"expected '=' after {name.text!r}, found {eq.text!r} (a statement is "
                     f"`name = expression;` or `T name = expression;`)", eq.line)
        e = self.expr()
        semi = self.next()
        if semi.text != ";":
            self.err(f"expected ';' after the expression, found {semi.text!r}", semi.line)
        return ("decl" if decl else "assign", name.text, e, name.line)

    def expr(self):
        cond = self.binary(1)
        if self.peek().text == "?":
            self.next()
            a = self.expr()
            self.expect(":")
            b = self.expr()
            return ("cond", cond, a, b)
        return cond

    def binary(self, min_prec):
        left = self.unary()
        while True:
            t = self.peek()
            prec = _BINARY.get(t.text) if t.kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.next()
            right = self.binary(prec + 1)  # left-associative
            left = ("bin", t.text, left, right)

    def unary(self):
        t = self.peek()
        if t.kind == "op" and t.text in ("-", "+", "!"):
            self.next()
            return ("unary", t.text, self.unary())
        return self.primary()

    def primary(self):
        t = self.next()
        if t.kind == "num":
            text = t.text.rstrip("fF")
            is_int = not any(c in text for c in ".eE")
            if t.text[-1] in "fF" and is_int:
                self.err(f"invalid literal {t.text!r}", t.line)
            return ("num", text, is_int, t.line)
        if t.kind == "name":
            if self.peek().text == "(":
                self.next()
                args = []
                if self.peek().text != ")":
                    args.append(self.expr())
                    while self.peek().text == ",":
                        self.next()
                        args.append(self.expr())
                self.expect(")")
                if t.text == "T":
                    if len(args) != 1:
                        self.err(f"T(...) takes one argument, got {len(args)}", t.line)
                    return ("cast", args[0], t.line)
                if t.text not in _FUNCTIONS:
                    self.err(f"unknown function {t.text!r} (known: "
                             f"{', '.join(sorted(_FUNCTIONS))})", t.line)
                arity = _FUNCTIONS[t.text][1]
                if len(args) != arity:
                    self.err(f"{t.text}() takes {arity} argument(s), got {len(args)}", t.line)
                return ("call", t.text, args, t.line)
            return ("name", t.text, t.line)
        if t.text == "(":
            e = self.expr()
            self.expect(")")
            return e
        self.err(f"expected an expression, found {t.text!r}", t.line)


# ---- the twin: Python source from the AST --------------------------------------------------------
class _Translator:
    """Python source for the NumPy twin, with a kind for each expression (``int``: integer
    literals and their arithmetic, ``bool``: comparisons, ``T``: the kernel's float type),
    whether it is uniform (made of scalars and literals only: a Python value, so that ``?:``
    on it is a Python conditional), and the array inputs it depends on."""

    def __init__(self, kdef, err):
        self.k, self.err = kdef, err
        self.env = {}  # name -> (kind, uniform, deps) of what it holds now
        self.constants = {}  # literal text of a T(...) -> the twin's local name for it
        for name, scalar in kdef.inputs:
            self.env[name] = ("bool" if name in kdef.masks else "T", scalar,
                              frozenset() if scalar else frozenset([name]))

    def lit(self, node):
        """The float text of a literal, or of a negated literal, else None."""
        if node[0] == "num":
            return node[1] if not node[2] else node[1] + ".0"
        if node[0] == "unary" and node[1] in "-+":
            inner = self.lit(node[2])
            return None if inner is None else (node[1] + inner).lstrip("+")
        return None

    def constant(self, lit: str) -> str:
        """The twin's name for ``T(lit)``: a 0-d array of T, made once per dtype (see
        ``_constant``), bound at the top of the twin. NumPy 2 takes ~1 us longer per ufunc
        call to convert a Python float (weak-scalar promotion) than to read a 0-d array of
        the right dtype: on the small arrays of eager code that is a third of the call."""
        name = self.constants.get(lit)
        if name is None:
            name = self.constants[lit] = f"_k{len(self.constants)}"
        return name

    def emit(self, node):
        """-> (python source, kind, uniform, deps); deps: the arrays a value depends on
        (None: unknown shape, when a uniform ``?:`` picks between different arrays)."""
        tag = node[0]
        if tag == "num":
            if not node[2]:
                self.err(f"float literal {node[1]} must be written T({node[1]}): a bare float "
                         f"literal is a double in CUDA C, so the kernel would compute in "
                         f"float64 for float32 inputs", node[3])
            return node[1], "int", True, frozenset()
        if tag == "name":
            name = node[1]
            if name not in self.env:
                if name in self.k.outputs:
                    self.err(f"output {name!r} is read before it is assigned", node[2])
                self.err(f"unknown name {name!r}", node[2])
            kind, uniform, deps = self.env[name]
            return name, kind, uniform, deps
        if tag == "cast":
            lit = self.lit(node[1])
            if lit is not None:
                return self.constant(lit), "T", True, frozenset()
            src, _, uniform, deps = self.emit(node[1])
            return f"_T({src})", "T", uniform, deps
        if tag == "unary":
            src, kind, uniform, deps = self.emit(node[2])
            if node[1] == "!":
                return f"xp.logical_not({src})", "bool", uniform, deps
            if kind == "bool":  # C negates the int 0/1; NumPy refuses -bool
                src, kind = f"_T({src})", "T"
            return (f"(-{src})" if node[1] == "-" else src), kind, uniform, deps
        if tag == "bin":
            op = node[1]
            ls, lk, lu, ld = self.emit(node[2])
            rs, rk, ru, rd = self.emit(node[3])
            deps = None if ld is None or rd is None else ld | rd
            uniform = lu and ru
            if op in _ARITH:
                # An int literal beside a T is a T in C (1 - y*y): bind it as a constant
                if lk == "int" and rk == "T" and self.lit(node[2]) is not None:
                    ls, lk = self.constant(self.lit(node[2])), "T"
                elif rk == "int" and lk == "T" and self.lit(node[3]) is not None:
                    rs, rk = self.constant(self.lit(node[3])), "T"
                if op == "/" and lk != "T" and rk != "T":
                    self.err("integer division (C truncates it, Python does not): make one "
                             "side a T, e.g. T(1) / 2", self.line_of(node))
                if lk == "bool" and rk != "T":
                    ls = f"_T({ls})"
                if rk == "bool" and lk != "T":
                    rs = f"_T({rs})"
                kind = "T" if "T" in (lk, rk) or "bool" in (lk, rk) else "int"
                return f"({ls} {op} {rs})", kind, uniform, deps
            if op == "&&":
                return f"xp.logical_and({ls}, {rs})", "bool", uniform, deps
            if op == "||":
                return f"xp.logical_or({ls}, {rs})", "bool", uniform, deps
            return f"({ls} {op} {rs})", "bool", uniform, deps  # comparisons
        if tag == "cond":
            cs, _, cu, cd = self.emit(node[1])
            as_, ak, au, ad = self.emit(node[2])
            bs, bk, bu, bd = self.emit(node[3])
            kind = "T" if "T" in (ak, bk) else ("int" if "int" in (ak, bk) else "bool")
            if cu:  # a Python conditional: only the chosen branch is computed
                deps = ad if ad == bd else None
                return f"({as_} if {cs} else {bs})", kind, au and bu, deps
            deps = None if None in (cd, ad, bd) else cd | ad | bd
            return f"xp.where({cs}, {as_}, {bs})", kind, False, deps
        if tag == "call":
            fn, args = node[1], node[2]
            parts = [self.emit(a) for a in args]
            deps = frozenset()
            for p in parts:
                deps = None if deps is None or p[3] is None else deps | p[3]
            srcs = ", ".join(p[0] for p in parts)
            return (f"{_FUNCTIONS[fn][0]}({srcs})", _FUNCTIONS[fn][2],
                    all(p[2] for p in parts), deps)
        raise AssertionError(tag)

    @staticmethod
    def line_of(node):
        for part in node[1:]:
            if isinstance(part, tuple):
                return _Translator.line_of(part)
        return node[-1] if isinstance(node[-1], int) else None

    # ---- writing into output buffers ---------------------------------------------------
    def ref(self, node, refs):
        """The array inputs a twin value may BE (the same object, not a new array): bare
        names, ``T(...)`` of them and the branches of a uniform ``?:``; every other
        expression makes a new array."""
        tag = node[0]
        if tag == "name":
            return refs.get(node[1], frozenset())
        if tag == "cast" or (tag == "unary" and node[1] == "+"):
            return self.ref(node[1] if tag == "cast" else node[2], refs)
        if tag == "cond" and self.emit(node[1])[2]:
            return self.ref(node[2], refs) | self.ref(node[3], refs)
        return frozenset()

    def reads(self, node, refs):
        """The array inputs an expression reads, directly or through locals that are them."""
        tag = node[0]
        if tag == "name":
            return refs.get(node[1], frozenset())
        out = frozenset()
        for part in node[1:]:
            if isinstance(part, tuple):
                out |= self.reads(part, refs)
            elif isinstance(part, list):
                for a in part:
                    out |= self.reads(a, refs)
        return out

    def into(self, node, target) -> list:
        """Statements computing ``node`` straight into the array ``target``: the outermost
        operation of the expression as a ufunc with ``out=`` (no temporary for the result),
        else ``target[...] = value`` (``xp.where``, erf, bool results)."""
        tag = node[0]
        if tag == "bin" and node[1] in _ARITH:
            ls, lk, lu, _ = self.emit(node[2])
            rs, rk, ru, _ = self.emit(node[3])
            if not (lu and ru):
                if lk == "bool":
                    ls = f"_T({ls})"
                if rk == "bool":
                    rs = f"_T({rs})"
                return [f"{_UFUNCS[node[1]]}({ls}, {rs}, out={target})"]
        elif tag == "unary" and node[1] == "-":
            src, kind, uniform, _ = self.emit(node[2])
            if not uniform:
                return [f"xp.negative({_T_of(src, kind)}, out={target})"]
        elif tag == "call" and _FUNCTIONS[node[1]][0].startswith("xp.") \
                and _FUNCTIONS[node[1]][2] == "T":
            parts = [self.emit(a) for a in node[2]]
            if not all(p[2] for p in parts):
                srcs = ", ".join(p[0] for p in parts)
                return [f"{_FUNCTIONS[node[1]][0]}({srcs}, out={target})"]
        elif tag == "cond" and self.emit(node[1])[2] and not self.emit(node)[2]:
            cs = self.emit(node[1])[0]
            return ([f"if {cs}:"] + ["    " + x for x in self.into(node[2], target)] +
                    ["else:"] + ["    " + x for x in self.into(node[3], target)])
        return [f"{target}[...] = {self.emit(node)[0]}"]

    def function(self, statements) -> tuple[str, tuple]:
        """The twin's source: ``def NAME(_T, *inputs, _out=None)``; without ``_out`` it returns
        new arrays, with ``_out`` (a tuple of arrays, one per output) it writes each output's
        final value into its array and returns ``_out``. Also sets ``self.steps``: for each
        statement of the ``_out`` variant, (index of the output it writes or None, the array
        inputs it reads), from which the Kernel decides whether an output may be an input."""
        k = self.k
        inputs = {n for n, _ in k.inputs}
        lines = [f"def {k.name}(_T, {', '.join(n for n, _ in k.inputs)}, _out=None):",
                 f"    # {k.relname}:{k.line}", "    if _out is None:"]
        # The _out variant: each output's last assignment writes its buffer; when that is
        # `out = local` and the local is assigned once, the local's own statement writes the
        # buffer instead (no temporary, no copy), and the local then names the buffer.
        last = {}
        count = {}
        for idx, (tag, name, e, line) in enumerate(statements):
            count[name] = count.get(name, 0) + 1
            if name in k.outputs:
                last[name] = idx
        retarget = {}
        for o, idx in last.items():
            e = statements[idx][2]
            if e[0] == "name" and e[1] not in inputs and e[1] not in k.outputs \
                    and count.get(e[1]) == 1 and e[1] not in retarget:
                retarget[e[1]] = o
        into = [f"    {', '.join('_o_' + o for o in k.outputs)}"
                f"{',' if len(k.outputs) == 1 else ''} = _out"]
        refs = {n: frozenset([n]) for n, s in k.inputs if not s}
        self.steps = []
        locals_ = set()
        assigned = set()
        for idx, (tag, name, e, line) in enumerate(statements):
            if tag == "decl":
                if name.startswith("_") or name in _RESERVED:
                    self.err(f"{name!r} is a reserved name", line)
                if name in inputs or name in k.outputs or name in locals_:
                    self.err(f"{name!r} is already declared", line)
            else:
                if name in inputs:
                    self.err(f"input {name!r} cannot be assigned", line)
                if name not in k.outputs and name not in locals_:
                    self.err(f"assignment to undeclared {name!r} (declare a local as "
                             f"`T {name} = ...;`, or list it in `// out:`)", line)
            src, kind, uniform, deps = self.emit(e)
            read = self.reads(e, refs)
            if tag == "decl":
                locals_.add(name)
            if kind == "bool":  # stored in a T: 0 or 1, as in C
                src = f"_T({src})"
            if name in k.outputs:
                assigned.add(name)
            lines.append(f"        {name} = {src}")
            target = None
            if name in retarget:
                target = retarget[name]
            elif name in k.outputs and last[name] == idx and \
                    not (e[0] == "name" and retarget.get(e[1]) == name):
                target = name
            if target is None:
                into.append(f"    {name} = {src}")
                refs[name] = self.ref(e, refs)
                self.steps.append((None, read))
            else:
                buf = "_o_" + target
                if uniform:  # a number: the name keeps it (a Python value for `?:`)
                    into += [f"    {name} = {src}", f"    {buf}[...] = {name}"]
                else:
                    into += ["    " + x for x in self.into(e, buf)] + [f"    {name} = {buf}"]
                refs[name] = frozenset()
                self.steps.append((k.outputs.index(target), read))
            self.env[name] = ("T", uniform, deps)
        missing = [o for o in k.outputs if o not in assigned]
        if missing:
            self.err(f"output(s) {', '.join(missing)} never assigned", k.line)
        arrays = frozenset(n for n, s in k.inputs if not s)
        # An output whose value depends on every array input has the broadcast shape already.
        full = tuple(self.env[o][2] == arrays for o in k.outputs)
        lines.append(f"        return {', '.join(k.outputs)}")
        lines += into + ["    return _out"]
        lines[2:2] = [f"    {name} = _constant(_T, {lit})" for lit, name in self.constants.items()]
        return "\n".join(lines) + "\n", full


_UFUNCS = {"+": "xp.add", "-": "xp.subtract", "*": "xp.multiply", "/": "xp.divide"}


def _T_of(src, kind):
    return f"_T({src})" if kind == "bool" else src


# ---- definitions ----------------------------------------------------------------------------------
class KernelDef:
    """One parsed kernel: its name, inputs ``[(name, is_scalar)]`` (``masks``: the names of
    the boolean arrays among them), outputs, the CUDA body as
    written, where it is (``file``, ``line`` of its header, ``body_line``), and its twin's
    Python source."""

    def __init__(self, name, file, line, relname):
        self.name, self.file, self.line, self.relname = name, file, line, relname
        self.inputs, self.outputs, self.doc = [], [], []
        self.masks = set()
        self.body, self.body_line = "", line
        self.python_source = ""
        self.full_shape = ()
        self.write_steps = ()  # see _Translator.function

    @property
    def in_params(self) -> str:
        return ", ".join(f"{'bool' if n in self.masks else 'T'} {n}" for n, _ in self.inputs)

    @property
    def out_params(self) -> str:
        return ", ".join(f"T {n}" for n in self.outputs)

    @property
    def cuda_operation(self) -> str:
        # The #line directive makes NVRTC's messages point into kernels/*.cu.
        return f'#line {self.body_line} "{self.relname}"\n{self.body}'

    def __repr__(self):
        return f"<kernel {self.name} ({self.relname}:{self.line})>"


_HEADER = re.compile(r"^\s*//\s*(kernel|in|out)\s*:(.*)$")


def parse_source(text: str, file="<string>", relname=None) -> list[KernelDef]:
    """Parse the text of one ``.cu`` file into kernel definitions."""
    relname = relname or str(file)
    defs: list[KernelDef] = []
    cur = None
    body: list[str] = []

    def err(msg, line, kernel=None):
        raise KernelSourceError(msg, kernel if kernel is not None else
                                (cur.name if cur else None), file, line)

    def close():
        if cur is None:
            return
        while body and not body[-1].strip():
            body.pop()
        if not cur.outputs:
            err("no `// out:` line", cur.line)
        if not any(not s and n not in cur.masks for n, s in cur.inputs):
            err("no floating point array input in `// in:` (the kernel's dtype T comes from "
                "its arrays, `bool` masks aside)", cur.line)
        cur.body = "\n".join(body)
        _compile_def(cur, file)
        defs.append(cur)

    for no, raw in enumerate(text.splitlines(), 1):
        m = _HEADER.match(raw)
        if m and m.group(1) == "kernel":
            close()
            body = []
            name = m.group(2).strip()
            if not re.fullmatch(r"[A-Za-z]\w*", name):
                raise KernelSourceError(f"invalid kernel name {name!r}", None, file, no)
            if any(d.name == name for d in defs):
                raise KernelSourceError("defined twice in this file", name, file, no)
            cur = KernelDef(name, file, no, relname)
            continue
        if cur is None:
            if raw.strip() and not raw.strip().startswith("//"):
                err("code before the first `// kernel: NAME` header", no)
            continue
        if not body and m:  # in: / out: lines of the header
            items = [s.strip() for s in m.group(2).split(",") if s.strip()]
            if m.group(1) == "in":
                if cur.inputs:
                    err("a second `// in:` line", no)
                for item in items:
                    words = item.split()
                    if len(words) == 2 and words[0] == "scalar":
                        cur.inputs.append((words[1], True))
                    elif len(words) == 2 and words[0] == "bool":
                        cur.inputs.append((words[1], False))
                        cur.masks.add(words[1])
                    elif len(words) == 1:
                        cur.inputs.append((words[0], False))
                    else:
                        err(f"bad input {item!r} (write `name`, `scalar name` or "
                            f"`bool name`)", no)
            else:
                if cur.outputs:
                    err("a second `// out:` line", no)
                cur.outputs = items
            for n in items:
                n = n.split()[-1]
                if not re.fullmatch(r"[A-Za-z]\w*", n) or n in _RESERVED:
                    err(f"{n!r} cannot name a parameter (reserved or not an identifier)", no)
            names = [n for n, _ in cur.inputs] + cur.outputs
            if len(set(names)) != len(names):
                err("a parameter is listed twice", no)
            continue
        if not body and raw.strip().startswith("//"):
            cur.doc.append(raw.strip()[2:].strip())
            continue
        if not body:
            if not raw.strip():
                continue
            cur.body_line = no
        body.append(raw)
    close()
    return defs


def _compile_def(kdef: KernelDef, file) -> None:
    def err(msg, line):
        raise KernelSourceError(msg, kdef.name, file, line)

    statements = _Parser(_tokenize(kdef.body, kdef.body_line, err), err).statements()
    if not statements:
        err("empty body", kdef.line)
    translator = _Translator(kdef, err)
    src, full = translator.function(statements)
    kdef.python_source = src
    kdef.full_shape = full
    kdef.write_steps = tuple(translator.steps)


def parse_file(path) -> list[KernelDef]:
    """Parse one ``.cu`` file of kernels."""
    path = Path(path)
    return parse_source(path.read_text(encoding="utf-8"), path,
                        f"{path.parent.name}/{path.name}")


# ---- erf for the twins (NumPy has none) -----------------------------------------------------------
# erf(x) for |x| <= 1: its Maclaurin series, erf(x) = x + x * S(x*x) with
# S(z) = 2/sqrt(pi) * sum((-z)**n / (n! (2n + 1))) - 1 (18 terms reach 1e-17 at |x| = 1). As in
# glibc, x is exact and S (|S| <= 0.16) carries all rounding errors. Coefficients rounded from
# exact values, highest power first.
_ERF_SERIES = (
    -9.063970842808673e-17, 1.6342614095367152e-15, -2.7835162072109215e-14,
    4.4632242632864775e-13, -6.7113668551641105e-12, 9.422759064650411e-11,
    -1.2290555301717928e-09, 1.4807192815879218e-08, -1.6365844691234924e-07,
    1.6462114365889248e-06, -1.492565035840625e-05, 0.00012055332981789664,
    -0.0008548327023450853, 0.005223977625442188, -0.026866170645131252,
    0.11283791670955126, -0.37612638903183754, 0.1283791670955126)
# For |x| > 1, erf = 1 - erfc with W. J. Cody's rational approximations of erfc ("Rational
# Chebyshev approximations for the error function", Math. Comp. 23, 1969; his CALERF in
# netlib's specfun). (numerator, denominator) coefficient pairs, highest power first.
_ERFC_MID = np.array([  # erfc(y) = exp(-y*y) * R(y) for y <= 4
    (2.15311535474403846e-8, 1.0), (5.64188496988670089e-1, 1.57449261107098347e01),
    (8.88314979438837594e00, 1.17693950891312499e02),
    (6.61191906371416295e01, 5.37181101862009858e02),
    (2.98635138197400131e02, 1.62138957456669019e03),
    (8.81952221241769090e02, 3.29079923573345963e03),
    (1.71204761263407058e03, 4.36261909014324716e03),
    (2.05107837782607147e03, 3.43936767414372164e03),
    (1.23033935479799725e03, 1.23033935480374942e03)])
_ERFC_BIG = np.array([  # erfc(y) = exp(-y*y) * (1/sqrt(pi) - w * R(w)) / y, w = y**-2
    (1.63153871373020978e-2, 1.0), (3.05326634961232344e-1, 2.56852019228982242e00),
    (3.60344899949804439e-1, 1.87295284992346047e00),
    (1.25781726111229246e-1, 5.27905102951428412e-1),
    (1.60837851487422766e-2, 6.05183413124413191e-2),
    (6.58749161529837803e-4, 2.33520497626869185e-3)])
_SQRPI = 5.6418958354775628695e-1  # 1/sqrt(pi)


def _series(x):
    z = x * x
    acc = z * _ERF_SERIES[0]
    for c in _ERF_SERIES[1:-1]:
        acc += c
        acc *= z
    acc += _ERF_SERIES[-1]
    acc *= x
    acc += x
    return acc


def _ratio(v, table):
    """numerator(v) / denominator(v), both by Horner's rule at once (columns of ``table``)."""
    acc = np.empty((v.size, 2))
    acc[:] = table[0]
    col = v[:, None]
    for row in table[1:]:
        acc *= col
        acc += row
    return acc[:, 0] / acc[:, 1]


def _erfc_tail(y, r):
    """exp(-y*y) * r, with y*y split into an exact part and a small rest (Cody's way of
    keeping the exponential's full accuracy)."""
    ysq = np.trunc(y * 16.0) / 16.0
    return np.exp(-ysq * ysq) * np.exp((ysq - y) * (y + ysq)) * r


def erf(x):
    """The error function on NumPy arrays (or numbers), vectorized; within about 1 ulp in
    float64 (tests/test_kernels.py measures it); other dtypes are computed in float64 and
    rounded once."""
    if not isinstance(x, np.ndarray):
        if isinstance(x, np.generic):
            return x.dtype.type(math.erf(float(x)))
        return math.erf(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    a = x.astype(np.float64).ravel()
    y = np.abs(a)
    small = y <= 1.0
    n_small = np.count_nonzero(small)
    if n_small == a.size:  # all in one interval: no indexing
        return _series(a).reshape(x.shape).astype(dtype, copy=False)
    out = np.empty_like(a)
    if n_small:
        out[small] = _series(a[small])
    big = y > 4.0
    n_big = np.count_nonzero(big)
    mid = ~(small | big)  # NaN included: it stays NaN
    if a.size - n_small - n_big:
        v = y[mid]
        out[mid] = (0.5 - _erfc_tail(v, _ratio(v, _ERFC_MID))) + 0.5
    if n_big:
        v = y[big]
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            w = 1.0 / (v * v)
            r = (_SQRPI - w * _ratio(w, _ERFC_BIG)) / v
            # erfc(26.543) is below the smallest double: erf is 1 (inf too)
            out[big] = (0.5 - np.where(v >= 26.543, 0.0, _erfc_tail(v, r))) + 0.5
    np.copysign(out, a, out=out, where=~small)
    return out.reshape(x.shape).astype(dtype, copy=False)


def _rsqrt(x):
    return 1 / np.sqrt(x)


_CONSTANTS: dict = {}


def _constant(T, value):
    """``value`` as a 0-d array of scalar type ``T`` (cached): a twin's ``T(literal)``."""
    key = (T, value)
    c = _CONSTANTS.get(key)
    if c is None:
        with np.errstate(all="ignore"):  # T(1e30) of a half is inf, as in CUDA
            c = _CONSTANTS[key] = np.array(value, dtype=T)
    return c


_TWIN_GLOBALS = {"xp": np, "_erf": erf, "_rsqrt": _rsqrt, "_constant": _constant,
                 "__builtins__": {}}


# ---- hand-written NumPy paths ---------------------------------------------------------------
# A kernel's twin is generated from its CUDA text, branches and all. Where that costs several
# times a formula NumPy runs well, the kernel takes a hand-written function for the common
# case of its eager calls (float32/float64 arrays of one shape, no out=: Kernel._run_fast);
# it returns a fresh array of that dtype and shape, or None to leave the call to the twin.
# tests/test_lean_paths.py checks them (relu's against its twin's bits, sigmoid's against
# torch and the exact values at the extremes).
_SIGMOID_DIRECT_MIN = 4096  # below this, the host cost of errstate outweighs the passes saved
_ZERO_ONE: dict = {}  # dtype -> (0, 1) as 0-d arrays: NumPy converts a Python number slower


_expit = []  # [SciPy's expit, or None without SciPy]: imported on first use (~0.4 s)


def _scipy_expit():
    """``scipy.special.expit`` when SciPy is installed, else None."""
    if not _expit:
        try:
            from scipy.special import expit
        except ImportError:  # SciPy is optional
            expit = None
        _expit.append(expit)
    return _expit[0]


def _sigmoid_numpy(x):
    """sigmoid (kernels/activations.cu). With SciPy installed, its ``expit``: one C pass,
    stable, within 1.4e-7 relative of exact in float32 and torch's values at the extremes
    (0 below -88.7, 1 above; one ufunc call, where the formulas below take four to seven:
    on a small array each call costs ~1 us). Without SciPy: the twin, exp(-|x|) then a
    ``np.where`` over both branches (nine ufunc calls), costs ~4x these formulas written as
    in-place ufunc passes:

    - large arrays: torch's own CPU formula, 1 / (1 + exp(-x)), four passes over one buffer.
      It flushes x < -88.7 (float32) to 0 exactly as torch's CPU kernel does (exp overflows
      to inf), so the overflow warning is silenced -- with ``np.errstate``, whose entry costs
      as much as the passes themselves on a small array;
    - small arrays: exp(min(x, 0)) / (1 + exp(-|x|)): the kernel's own stable formula without
      the branch (both exponents are <= 0: nothing overflows, nothing to silence).
    Both are within 2.5e-7 (float32) / 5e-16 (float64) relative of the exact value, as torch
    (tests/test_lean_paths.py compares them). 0-d arrays (to which ufuncs give scalars) are
    left to the twin."""
    if not x.ndim:
        return None
    expit = _expit[0] if _expit else _scipy_expit()
    if expit is not None:
        return expit(x)
    if x.size >= _SIGMOID_DIRECT_MIN:
        with np.errstate(over="ignore"):
            e = np.negative(x)
            np.exp(e, out=e)
            e += 1
            return np.reciprocal(e, out=e)
    c = _ZERO_ONE.get(x.dtype)
    if c is None:
        c = _ZERO_ONE[x.dtype] = (np.zeros((), x.dtype), np.ones((), x.dtype))
    num = np.minimum(x, c[0])
    np.exp(num, out=num)  # e**x where x < 0, else 1
    den = np.abs(x)
    np.negative(den, out=den)
    np.exp(den, out=den)
    np.add(den, c[1], out=den)
    return np.divide(num, den, out=num)


_BIT_VIEWS = {np.dtype(np.float32): np.dtype(np.int32),  # a float's int of its width
              np.dtype(np.float64): np.dtype(np.int64)}


def _relu_backward_numpy(gy, y):
    """``y > 0 ? gy : 0`` (kernels/activations.cu, relu_backward): the float bits of ``gy``
    ANDed with an all-ones/all-zeros mask of ``y > 0``. The twin's ``np.where`` over a
    data-dependent mask mispredicts a branch per element and runs ~4x slower; this gives the
    same bits (NaN and -0.0 of ``gy`` kept where ``y > 0``, +0.0 elsewhere)."""
    ints = _BIT_VIEWS[gy.dtype]
    mask = np.negative(np.greater(y, 0), dtype=ints)  # -1 (every bit set) where y > 0, else 0
    out = np.empty_like(gy)
    np.bitwise_and(gy.view(ints), mask, out=out.view(ints))
    return out


_NUMPY_PATHS = {"sigmoid": _sigmoid_numpy, "relu_backward": _relu_backward_numpy}


# ---- the arrays -----------------------------------------------------------------------------------
_ndarray = np.ndarray
_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
_CompileException = None  # cupy.cuda.compiler.CompileException, once CuPy is imported

# ---- the vectorized CUDA kernel ------------------------------------------------------------------
# dtype -> (C type, vector type of 16 bytes, elements per vector)
_VECTOR_TYPES = {_F32: ("float", "float4", 4), _F64: ("double", "double2", 2)}
#: Arrays of at least this many elements take the vectorized RawKernel on CuPy. Below it a
#: launch is bound by its fixed cost, which is the same for both kernels.
VECTORIZE_MIN_SIZE = 1 << 16
_BLOCK = 256  # threads per block of the vectorized kernel
_max_blocks = None  # 8 blocks of _BLOCK threads per multiprocessor fill an H100 (2048 threads)


def raw_kernel_name(kdef: KernelDef, dtype) -> str:
    """The ``extern "C"`` name of a kernel's vectorized RawKernel for ``dtype``."""
    return f"gpugrad_vec_{kdef.name}_{np.dtype(dtype).name}"


def raw_source(kdef: KernelDef, dtype) -> str:
    """CUDA C source of the vectorized RawKernel of ``kdef`` for ``dtype`` (float32: float4,
    float64: double2): a grid-stride loop in which each thread loads one 16-byte vector of
    every array input, runs the kernel's body once per element (the body is a device function
    whose parameters are the inputs by value and the outputs by reference, exactly as in the
    ElementwiseKernel), and stores one vector of every output; then a scalar loop for the last
    ``n % 4`` (or ``n % 2``) elements. Scalars are kernel arguments of type T, bool masks are
    read element by element. Arguments: the inputs in order (arrays as pointers), the outputs,
    then ``long long n``. Every input of a vector is loaded before any output is stored, so an
    output may be the very array of an input (in place). All arrays must be C-contiguous, of
    ``n`` elements, the float ones 16-byte aligned: ``Kernel`` checks this before choosing it.
    Self-contained (its own namespace): sources of several kernels can be compiled as one."""
    dtype = np.dtype(dtype)
    ctype, vtype, width = _VECTOR_TYPES[dtype]
    name = raw_kernel_name(kdef, dtype)
    comps = "xyzw"[:width]
    params, kparams, loads, decls, stores = [], [], [], [], []
    lane = [[] for _ in comps]  # the arguments of the body's call for each lane
    tail = []
    for n, scalar in kdef.inputs:
        if scalar:
            params.append(f"const T {n}")
            kparams.append(f"const T {n}")
            for c in range(width):
                lane[c].append(n)
            tail.append(n)
        elif n in kdef.masks:
            params.append(f"const bool {n}")
            kparams.append(f"const bool* {n}_p")
            for c in range(width):
                lane[c].append(f"{n}_p[_v * {width} + {c}]")
            tail.append(f"{n}_p[_j]")
        else:
            params.append(f"const T {n}")
            kparams.append(f"const {vtype}* {n}_p")
            loads.append(f"    const {vtype} {n}_v = {n}_p[_v];")
            for c, comp in enumerate(comps):
                lane[c].append(f"{n}_v.{comp}")
            tail.append(f"reinterpret_cast<const T*>({n}_p)[_j]")
    for n in kdef.outputs:
        params.append(f"T &{n}")
        kparams.append(f"{vtype}* {n}_p")
        decls.append(f"    {vtype} {n}_v;")
        stores.append(f"    {n}_p[_v] = {n}_v;")
        for c, comp in enumerate(comps):
            lane[c].append(f"{n}_v.{comp}")
        tail.append(f"reinterpret_cast<T*>({n}_p)[_j]")
    wrapper = f'#line 1 "<vectorized wrapper of {kdef.name}>"'
    lines = [wrapper, f"namespace {name}_ns {{", f"typedef {ctype} T;",
             f"__device__ __forceinline__ void body({', '.join(params)}) {{",
             kdef.cuda_operation, f'#line 1 "<vectorized wrapper of {kdef.name}, end>"', "}",
             f'extern "C" __global__ void {name}({", ".join(kparams)}, const long long _n) {{',
             f"  const long long _nv = _n / {width};",
             "  const long long _stride = (long long)blockDim.x * gridDim.x;",
             "  const long long _tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;",
             "  for (long long _v = _tid; _v < _nv; _v += _stride) {",
             *loads, *decls, *(f"    body({', '.join(a)});" for a in lane), *stores,
             "  }",
             f"  for (long long _j = _nv * {width} + _tid; _j < _n; _j += _stride) {{",
             f"    body({', '.join(tail)});",
             "  }", "}", "}"]
    return "\n".join(lines) + "\n"


def _may_overlap(x, y) -> bool:
    """``numpy.may_share_memory``, skipped for views of two different base arrays that hold
    their own memory (NumPy points every view at the array that owns the memory): such
    memory never overlaps, and that check costs two attribute reads."""
    bx, by = x.base, y.base
    bx = x if bx is None else bx
    by = y if by is None else by
    if bx is not by and bx.__class__ is _ndarray and by.__class__ is _ndarray and \
            bx.base is None and by.base is None:
        return False
    return np.may_share_memory(x, y)


# ---- a callable kernel ----------------------------------------------------------------------------
class Kernel:
    """A kernel of ``kernels/``, callable on NumPy or CuPy arrays (and numbers for its scalar
    inputs); returns its output array, or a tuple of them.

    ``out=`` (a tuple of arrays, one per output; a bare array for a one-output kernel) writes
    the outputs into those arrays and returns them. Each must have the broadcast shape of the
    inputs and the result dtype, on the inputs' device. An output may be one of the inputs
    (the very same array: in place) when the kernel's text reads every input before it writes
    any output (kernels/optim.cu is written so); other overlaps between outputs and inputs are
    computed into new arrays first, then copied (correct, one temporary more).

    On CuPy, float32 and float64 arrays that are all C-contiguous, of one shape (no
    broadcasting), 16-byte aligned and of at least ``VECTORIZE_MIN_SIZE`` elements take a
    vectorized RawKernel (``raw_source``); everything else the ElementwiseKernel."""

    def __init__(self, kdef: KernelDef) -> None:
        self.definition = kdef
        self.name = kdef.name
        self.__name__ = kdef.name
        self.__doc__ = "\n".join(kdef.doc) or None
        self._nin = len(kdef.inputs)
        self._nout = len(kdef.outputs)
        self._arrays = tuple(i for i, (_, s) in enumerate(kdef.inputs) if not s)
        self._scalars = tuple(i for i, (_, s) in enumerate(kdef.inputs) if s)
        # the arrays that set T, and the boolean masks, read as they are
        self._floats = tuple(i for i in self._arrays if kdef.inputs[i][0] not in kdef.masks)
        self._masks = tuple(i for i in self._arrays if kdef.inputs[i][0] in kdef.masks)
        self._single = len(kdef.outputs) == 1
        self._full_shape = kdef.full_shape
        # the eager fast path of __call__ (no masks to check): arrays and the index of the rest
        self._fast = bool(self._arrays) and not self._masks
        self._rest = self._arrays[1:]
        ns = dict(_TWIN_GLOBALS)
        exec(compile(kdef.python_source, f"<twin of {kdef.relname}:{kdef.line}>", "exec"), ns)
        self.twin = ns[kdef.name]
        self._numpy_path = _NUMPY_PATHS.get(kdef.name)  # see _sigmoid_numpy's section
        self._cupy = None
        self._vec = {}  # dtype -> cupy.RawKernel
        self._inplace = {}  # which output is which input -> may the twin write in place
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        d = self.definition
        return f"<gpugrad kernel {self.name}({d.in_params}) -> ({d.out_params}) at " \
               f"{d.relname}:{d.line}>"

    def __call__(self, *args, out=None):
        # fast path, the common eager case: NumPy arrays of one float32/float64 dtype and one
        # shape, no out=; skips dtype resolution and broadcasting, returns what _run_numpy does
        if out is None and self._fast and len(args) == self._nin:
            a = args[self._arrays[0]]
            if a.__class__ is _ndarray:
                dt = a.dtype
                if dt is _F32 or dt is _F64:
                    shape = a.shape
                    for i in self._rest:
                        b = args[i]
                        if b.__class__ is not _ndarray or b.dtype is not dt or b.shape != shape:
                            break
                    else:
                        return self._run_fast(args, dt, shape)
        if len(args) != self._nin:
            raise TypeError(f"kernel {self.name} takes {self._nin} arguments "
                            f"({self.definition.in_params}), got {len(args)}")
        if out is not None and out.__class__ is not tuple:
            if not self._single or not hasattr(out, "shape"):
                raise TypeError(f"kernel {self.name}: out must be a tuple of {self._nout} "
                                f"arrays ({self.definition.out_params}), got "
                                f"{type(out).__name__}")
            out = (out,)
        first = args[self._arrays[0]]
        if first.__class__ is _ndarray or isinstance(first, _ndarray):
            return self._run_numpy(args, out)
        if hasattr(first, "__cuda_array_interface__"):
            return self._run_cupy(args, out)
        name = self.definition.inputs[self._arrays[0]][0]
        raise TypeError(f"kernel {self.name}: argument {name!r} must be a NumPy or CuPy array, "
                        f"not {type(first).__name__}")

    # ---- dtypes ----------------------------------------------------------------------------
    def _dtypes(self, args):
        """(args with every array in one compute dtype, the result dtype)."""
        for i in self._masks:
            if args[i].dtype != np.bool_:
                raise TypeError(f"kernel {self.name}: argument {self.definition.inputs[i][0]!r} "
                                f"must be a bool array, got {args[i].dtype}")
        arrays = self._floats
        dt = args[arrays[0]].dtype
        for i in arrays[1:]:
            if args[i].dtype != dt:
                break
        else:
            if dt is _F32 or dt is _F64:
                return args, dt
        result = np.result_type(*(args[i].dtype for i in arrays))
        if result.kind != "f":
            if result.kind in "biu":  # as NumPy would: int8 -> float32, int64 -> float64
                result = np.result_type(result, _F32)
            else:
                raise TypeError(f"kernel {self.name}: floating point arrays expected, got "
                                f"{', '.join(str(args[i].dtype) for i in arrays)}")
        compute = _F32 if result.itemsize < 4 else result
        args = list(args)
        for i in arrays:
            if args[i].dtype != compute:
                args[i] = args[i].astype(compute)
        return args, result

    # ---- out= ------------------------------------------------------------------------------
    def _check_out(self, out, args, result, numpy):
        if len(out) != self._nout:
            raise TypeError(f"kernel {self.name}: out must be a tuple of {self._nout} arrays "
                            f"({self.definition.out_params}), got {len(out)}")
        shape = args[self._arrays[0]].shape
        for i in self._arrays[1:]:
            if args[i].shape != shape:
                shape = np.broadcast_shapes(*(args[i].shape for i in self._arrays))
                break
        for k, o in enumerate(out):
            if (o.__class__ is _ndarray or isinstance(o, _ndarray)) != numpy or \
                    not hasattr(o, "shape"):
                raise TypeError(f"kernel {self.name}: out {self.definition.outputs[k]!r} must "
                                f"be a {'NumPy' if numpy else 'CuPy'} array like the inputs, "
                                f"not {type(o).__name__}")
            if o.shape != shape:
                raise ValueError(f"kernel {self.name}: out {self.definition.outputs[k]!r} has "
                                 f"shape {tuple(o.shape)}, expected {tuple(shape)} (the "
                                 f"broadcast shape of the inputs)")
            if o.dtype is not result and o.dtype != result:
                raise TypeError(f"kernel {self.name}: out {self.definition.outputs[k]!r} has "
                                f"dtype {o.dtype}, expected {result} (the result dtype of the "
                                f"inputs); hint: cast the inputs or pass an out of that dtype")

    def _aliases(self, args, out):
        """For each output, the name of the input it is (the same array), None if none; or
        None as a whole when an output overlaps an input partially. Outputs must not overlap
        each other."""
        inputs = self.definition.inputs
        alias = []
        for k, o in enumerate(out):
            which = None
            for i in self._arrays:
                a = args[i]
                if o is a:
                    which = inputs[i][0]
                elif _may_overlap(o, a):
                    if o.ctypes.data == a.ctypes.data and o.strides == a.strides and \
                            o.shape == a.shape and o.dtype == a.dtype:
                        which = inputs[i][0]
                    else:
                        return None
            for o2 in out[:k]:
                if o is o2 or _may_overlap(o, o2):
                    raise ValueError(f"kernel {self.name}: the out arrays overlap each other")
            alias.append(which)
        return tuple(alias)

    def _inplace_ok(self, alias) -> bool:
        """Whether the twin may write its outputs into these arrays as it goes: no statement
        after an output's write reads the input that output is (directly or through a
        local that is that input)."""
        ok = self._inplace.get(alias)
        if ok is None:
            steps = self.definition.write_steps
            ok = True
            for s, (k, _) in enumerate(steps):
                x = None if k is None else alias[k]
                if x is not None and any(x in reads for _, reads in steps[s + 1:]):
                    ok = False
                    break
            self._inplace[alias] = ok
        return ok

    # ---- NumPy ----------------------------------------------------------------------------
    def _run_numpy(self, args, out=None):
        args, result = self._dtypes(args)
        compute = args[self._floats[0]].dtype
        T = compute.type
        if self._scalars:
            args = list(args)
            for i in self._scalars:
                args[i] = T(args[i])
        if out is not None:
            return self._numpy_into(args, out, compute, result)
        out = self.twin(T, *args)
        if self._single:
            return self._finish(out, 0, args, compute, result, ())
        done = []
        for k, v in enumerate(out):
            done.append(self._finish(v, k, args, compute, result, done))
        return tuple(done)

    def _run_fast(self, args, dt, shape):
        """_run_numpy for arrays of one float dtype ``dt`` and one ``shape``: the twin's outputs
        as they are when they already are fresh arrays of that shape and dtype."""
        if self._numpy_path is not None:
            out = self._numpy_path(*args)
            if out is not None:
                return out
        T = dt.type
        if self._scalars:
            args = list(args)
            for i in self._scalars:
                args[i] = T(args[i])
        out = self.twin(T, *args)
        if self._single:
            if out.__class__ is _ndarray and out.dtype is dt and out.shape == shape:
                for i in self._arrays:
                    if out is args[i]:
                        return out.copy()
                return out
            return self._finish(out, 0, args, dt, dt, ())
        done = []
        for k, v in enumerate(out):
            done.append(self._finish(v, k, args, dt, dt, done))
        return tuple(done)

    def _numpy_into(self, args, out, compute, result):
        self._check_out(out, args, result, True)
        T = compute.type
        if (self._numpy_path is not None and self._single and result is compute
                and (compute is _F32 or compute is _F64)):
            # the values a call without out= gives (its hand-written path), written into out
            shape = out[0].shape
            if all(args[i].shape == shape for i in self._arrays):
                v = self._numpy_path(*args)
                if v is not None:
                    np.copyto(out[0], v)
                    return out[0]
        # float16: computed in float32 and rounded once, at the end (below)
        if result is compute or result == compute:
            alias = self._aliases(args, out)
            if alias is not None and self._inplace_ok(alias):
                self.twin(T, *args, out)
                return out[0] if self._single else out
        values = self.twin(T, *args)
        if self._single:
            values = (values,)
        # a value that is (or overlaps) an out array must be read before any is written
        values = [v.copy() if isinstance(v, _ndarray) and
                  any(_may_overlap(v, o) for o in out) else v for v in values]
        for o, v in zip(out, values):
            np.copyto(o, v, casting="same_kind")
        return out[0] if self._single else out

    def _finish(self, v, k, args, compute, result, others):
        """An output as a fresh array of the broadcast shape and the result dtype."""
        if v.__class__ is not _ndarray:
            v = np.asarray(v, dtype=compute)
        if not self._full_shape[k]:
            shape = np.broadcast_shapes(*(args[i].shape for i in self._arrays))
            if v.shape != shape:
                v = np.array(np.broadcast_to(v, shape))
        if v.dtype != result:
            v = v.astype(result)
        for i in self._arrays:
            if v is args[i]:
                return v.copy()
        for o in others:
            if v is o:
                return v.copy()
        return v

    # ---- CuPy ------------------------------------------------------------------------------
    def _build(self):
        """The ElementwiseKernel (one per kernel: CuPy compiles it once per dtype)."""
        global _CompileException
        with self._lock:
            if self._cupy is None:
                import cupy
                from cupy.cuda import compiler

                _CompileException = compiler.CompileException
                d = self.definition
                self._cupy = cupy.ElementwiseKernel(d.in_params, d.out_params,
                                                    d.cuda_operation, d.name)
        return self._cupy

    def _build_vec(self, dtype):
        """The vectorized RawKernel for ``dtype`` (built on first use, compiled by CuPy on
        its first launch)."""
        global _CompileException, _max_blocks
        with self._lock:
            kern = self._vec.get(dtype)
            if kern is None:
                import cupy
                from cupy.cuda import compiler

                _CompileException = compiler.CompileException
                if _max_blocks is None:
                    try:
                        sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
                    except Exception:  # noqa: BLE001 - a stand-in module, an odd device
                        sms = 132
                    _max_blocks = 8 * int(sms)
                kern = self._vec[dtype] = cupy.RawKernel(
                    raw_source(self.definition, dtype), raw_kernel_name(self.definition, dtype))
        return kern

    def _vectorizable(self, args, out) -> bool:
        """Whether the vectorized RawKernel can run these arrays (see the class doc)."""
        first = args[self._floats[0]]
        if first.dtype not in _VECTOR_TYPES or first.size < VECTORIZE_MIN_SIZE:
            return False
        shape = first.shape
        arrays = [args[i] for i in self._arrays]
        for a in arrays:
            if a.shape != shape or not a.flags.c_contiguous:
                return False
        for i in self._floats:
            if args[i].data.ptr % 16:
                return False
        if out is not None:
            spans = [(a.data.ptr, a.data.ptr + a.nbytes) for a in arrays]
            for o in out:
                if o.shape != shape or not o.flags.c_contiguous or o.data.ptr % 16:
                    return False
                lo, hi = o.data.ptr, o.data.ptr + o.nbytes
                for a_lo, a_hi in spans:  # the same array, or no overlap at all
                    if a_lo != lo and a_lo < hi and lo < a_hi:
                        return False
        return True

    def _launch_vectorized(self, args, out):
        """Run the vectorized RawKernel into ``out`` (new arrays when None); -> the outputs."""
        first = args[self._floats[0]]
        dtype = first.dtype
        kern = self._vec.get(dtype) or self._build_vec(dtype)
        if out is None:
            import cupy
            out = tuple(cupy.empty(first.shape, dtype) for _ in range(self._nout))
        n = first.size
        width = _VECTOR_TYPES[dtype][2]
        blocks = max(1, min(-(-(n // width) // _BLOCK), _max_blocks))
        T = dtype.type
        params = [T(a) if i in self._scalars else a for i, a in enumerate(args)]
        params += out
        params.append(np.int64(n))
        kern((blocks,), (_BLOCK,), tuple(params))
        return out

    def _launch_elementwise(self, args, out):
        """Run the ElementwiseKernel into ``out`` (new arrays when None); -> the outputs."""
        kern = self._cupy or self._build()
        res = kern(*args) if out is None else kern(*args, *out)
        if out is not None:
            return out
        return (res,) if self._single else res

    def _run_cupy(self, args, out=None):
        args, result = self._dtypes(args)
        half = result.itemsize < 4  # float16: computed in float32, rounded once after
        if out is not None:
            self._check_out(out, args, result, False)
        into = None if half else out
        try:
            if self._vectorizable(args, into):
                res = self._launch_vectorized(args, into)
            else:
                res = self._launch_elementwise(args, into)
        except Exception as e:
            if _CompileException is not None and isinstance(e, _CompileException):
                raise compile_error(self.definition, e) from e
            raise
        if half:
            if out is None:
                res = tuple(r.astype(result) for r in res)
            else:
                for o, r in zip(out, res):
                    o[...] = r
                res = out
        return res[0] if self._single else res


def compile_error(kdef: KernelDef, exc) -> KernelSourceError:
    """CuPy's CompileException for a kernel as a KernelSourceError with the compiler log."""
    log = exc.get_message() if hasattr(exc, "get_message") else str(exc)
    return KernelSourceError(
        f"CUDA compilation failed (CuPy ElementwiseKernel or gpugrad's vectorized RawKernel, "
        f"NVRTC); the compiler's messages "
        f"refer to lines of {kdef.relname}:\n{log}", kdef.name, kdef.file, kdef.line)


class KernelSet:
    """The kernels of one directory, as attributes (``kernels.tanh_backward``)."""

    def __init__(self, defs, directory=None) -> None:
        self.directory = directory
        self._kernels = {}
        for d in defs:
            k = Kernel(d)
            self._kernels[d.name] = k
            setattr(self, d.name, k)

    def __getitem__(self, name: str) -> Kernel:
        return self._kernels[name]

    def __iter__(self):
        return iter(self._kernels.values())

    def __len__(self) -> int:
        return len(self._kernels)

    def __contains__(self, name) -> bool:
        return name in self._kernels

    def names(self) -> list:
        return list(self._kernels)

    def __repr__(self) -> str:
        return f"<KernelSet of {len(self)} kernels from {self.directory}>"


def load(directory) -> KernelSet:
    """Parse every ``*.cu`` file of ``directory`` (names must be unique across files)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise KernelSourceError(f"kernel directory {directory} does not exist (a broken "
                                f"install? reinstall gpugrad)")
    defs, where = [], {}
    for path in sorted(directory.glob("*.cu")):
        for d in parse_file(path):
            if d.name in where:
                raise KernelSourceError(f"also defined at {where[d.name]}", d.name, d.file,
                                        d.line)
            where[d.name] = f"{d.file}:{d.line}"
            defs.append(d)
    return KernelSet(defs, directory)


kernels = load(KERNELS_DIR)
