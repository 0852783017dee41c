// The backward of the elementwise math ops, each one kernel (see README.md for the format).
// gy is the incoming gradient; x the forward's input, y its output; a and b its two operands.
//
// NumPy evaluates both branches of `?:`: keep the branch that is not taken finite.

// kernel: exp_backward
// in: gy, y
// out: gx
gx = gy * y;

// kernel: expm1_backward
// in: gy, y
// out: gx
gx = gy * (y + 1);

// kernel: log_backward
// in: gy, x
// out: gx
gx = gy / x;

// kernel: log2_backward
// in: gy, x
// out: gx
// 0.6931... = log(2)
gx = gy / (x * T(0.6931471805599453));

// kernel: log10_backward
// in: gy, x
// out: gx
// 2.3025... = log(10)
gx = gy / (x * T(2.302585092994046));

// kernel: log1p_backward
// in: gy, x
// out: gx
gx = gy / (x + 1);

// kernel: sqrt_backward
// in: gy, y
// out: gx
gx = gy / (2 * y);

// kernel: rsqrt_backward
// in: gy, y
// out: gx
// d/dx x**-0.5 = -0.5 * x**-1.5 = -0.5 * y**3
gx = T(-0.5) * gy * y * y * y;

// kernel: sin_backward
// in: gy, x
// out: gx
gx = gy * cos(x);

// kernel: cos_backward
// in: gy, x
// out: gx
gx = -gy * sin(x);

// kernel: tan_backward
// in: gy, y
// out: gx
gx = gy * (1 + y * y);

// kernel: reciprocal_backward
// in: gy, y
// out: gx
gx = -gy * y * y;

// kernel: erf_backward
// in: gy, x
// out: gx
// 1.1283... = 2/sqrt(pi)
gx = gy * T(1.1283791670955126) * exp(-x * x);

// kernel: abs_backward
// in: gy, x
// out: gx
// gy * sign(x), with sign(0) = 0 and sign(NaN) = NaN as NumPy's and torch's sign.
gx = x > 0 ? gy : (x < 0 ? -gy : gy * x);

// kernel: clamp_backward
// in: gy, x, scalar lo, scalar hi
// out: gx
// A missing bound is passed as -inf / inf. NaN inputs get no gradient.
gx = x >= lo && x <= hi ? gy : T(0);

// kernel: pow_scalar_backward
// in: gy, x, scalar p
// out: gx
// x ** p for a number p != 0 (p == 0 has gradient 0, handled by the caller).
gx = gy * p * pow(x, p - 1);

// kernel: rpow_backward
// in: gy, y, scalar log_base
// out: gx
// base ** x for a number base > 0 (log_base = log(base); NaN for base < 0).
gx = gy * y * log_base;

// kernel: pow_backward
// in: gy, a, b, y
// out: ga, gb
// a ** b, both tensors. As torch: the gradient of a is 0 where b == 0 (also at a == 0), and
// the gradient of b is 0 where a == 0 and b >= 0.
ga = b == 0 ? T(0) : gy * b * pow(a, b - 1);
gb = a == 0 && b >= 0 ? T(0) : gy * y * log(a);

// kernel: pow_backward_base
// in: gy, a, b
// out: ga
// pow_backward's ga alone (the exponent needs no gradient).
ga = b == 0 ? T(0) : gy * b * pow(a, b - 1);

// kernel: pow_backward_exponent
// in: gy, a, b, y
// out: gb
// pow_backward's gb alone (the base needs no gradient).
gb = a == 0 && b >= 0 ? T(0) : gy * y * log(a);

// kernel: div_backward
// in: gy, a, b
// out: ga, gb
// y = a / b: ga = gy / b, gb = -gy * a / b**2. From a and b, not y, as torch: the quotient may
// be modified in place after the division without invalidating its backward.
T q = gy / b;
ga = q;
gb = -q * a / b;

// kernel: div_backward_divisor
// in: gy, a, b
// out: gb
// div_backward's gb alone (a tensor that needs no gradient divided by b).
gb = -(gy / b) * a / b;

// kernel: rdiv_backward
// in: gy, b, scalar a
// out: gb
// The gradient of a number a divided by the tensor b.
gb = -(gy / b) * a / b;

// kernel: maximum_backward
// in: gy, a, b
// out: ga, gb
// Ties share the gradient equally, as in torch; NaN gets none.
T tie = gy * T(0.5);
ga = a == b ? tie : (a > b ? gy : T(0));
gb = a == b ? tie : (b > a ? gy : T(0));

// kernel: minimum_backward
// in: gy, a, b
// out: ga, gb
T tie = gy * T(0.5);
ga = a == b ? tie : (a < b ? gy : T(0));
gb = a == b ? tie : (b < a ? gy : T(0));
