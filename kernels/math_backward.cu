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

// kernel: rpow_zero_backward
// in: gy, b, scalar log_zero
// out: gb
// 0 ** b: as torch, 0 where b >= 0, else gy * (0**b * log(0)) = gy * -inf (log_zero is -inf,
// passed in: the kernel language has no infinity literal).
gb = b >= 0 ? T(0) : gy * log_zero;

// kernel: mul_backward
// in: gy, a, b
// out: ga, gb
// y = a * b, both gradients in one launch.
ga = gy * b;
gb = gy * a;

// kernel: where_backward
// in: gy, bool c
// out: ga, gb
// y = where(c, a, b): gy goes to a where c holds, to b elsewhere (zeros, not gy * 0, as torch).
ga = c ? gy : T(0);
gb = c ? T(0) : gy;

// kernel: lerp
// in: a, b, w
// out: y
// a + w (b - a), in torch's two forms: exact at w == 0 and at w == 1.
T d = b - a;
y = fabs(w) < T(0.5) ? a + w * d : b - d * (1 - w);

// kernel: lerp_scalar
// in: a, b, scalar w
// out: y
T d = b - a;
y = fabs(w) < T(0.5) ? a + w * d : b - d * (1 - w);

// kernel: lerp_backward
// in: gy, a, b, w
// out: ga, gb, gw
// The three gradients of lerp(a, b, w) in one launch.
ga = gy * (1 - w);
gb = gy * w;
gw = gy * (b - a);

// kernel: lerp_scalar_backward
// in: gy, scalar w
// out: ga, gb
// The gradients of lerp(a, b, w) for a number w.
ga = gy * (1 - w);
gb = gy * w;

// kernel: remainder_backward
// in: gy, a, b
// out: gb
// y = a - b * floor(a / b): the gradient of the divisor b (a's is gy itself).
gb = -gy * floor(a / b);

// kernel: rremainder_backward
// in: gy, b, scalar a
// out: gb
// remainder_backward for a number a.
gb = -gy * floor(a / b);

// kernel: clamp_tensor
// in: x, lo, hi
// out: y
// clamp with tensor bounds, as torch: min(max(x, lo), hi), so hi where lo > hi; a NaN in x or
// in a bound gives NaN.
T m = x < lo ? lo : x;
y = isnan(lo) || isnan(hi) ? lo + hi : (hi < m ? hi : m);

// kernel: clamp_min_tensor
// in: x, lo
// out: y
y = isnan(lo) ? lo : (x < lo ? lo : x);

// kernel: clamp_max_tensor
// in: x, hi
// out: y
y = isnan(hi) ? hi : (x > hi ? hi : x);

// kernel: clamp_tensor_backward
// in: gy, x, lo, hi
// out: gx, glo, ghi
// torch's clamp_backward_min_max: x gets gy inside [lo, hi] (ties included), lo below it when
// lo < hi, hi above it or wherever hi < lo (the output is hi there).
gx = x >= lo && x <= hi ? gy : T(0);
glo = x < lo && lo < hi ? gy : T(0);
ghi = x > hi || hi < lo ? gy : T(0);

// kernel: clamp_min_tensor_backward
// in: gy, x, lo
// out: gx, glo
gx = x >= lo ? gy : T(0);
glo = x < lo ? gy : T(0);

// kernel: clamp_max_tensor_backward
// in: gy, x, hi
// out: gx, ghi
gx = x <= hi ? gy : T(0);
ghi = x > hi ? gy : T(0);
