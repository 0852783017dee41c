// Activations: the forward of each composite activation, and the backward of every activation,
// each one elementwise kernel (see README.md for the format). gy is the incoming gradient,
// gx the gradient of the input; x is the forward's input, y its output.
//
// NumPy evaluates both branches of `?:`: keep the branch that is not taken finite.

// kernel: sigmoid
// in: x
// out: y
// Stable on both tails: exp of a non-positive number only.
T e = exp(-fabs(x));
y = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);

// kernel: sigmoid_backward
// in: gy, y
// out: gx
gx = gy * y * (1 - y);

// kernel: tanh_backward
// in: gy, y
// out: gx
gx = gy * (1 - y * y);

// kernel: relu_backward
// in: gy, y
// out: gx
// As torch's threshold_backward: zero where the output is not positive (a NaN gradient too).
gx = y > 0 ? gy : T(0);

// kernel: leaky_relu
// in: x, scalar slope
// out: y
y = x > 0 ? x : x * slope;

// kernel: leaky_relu_backward
// in: gy, x, scalar slope
// out: gx
gx = x > 0 ? gy : gy * slope;

// kernel: elu
// in: x, scalar alpha
// out: y
// neg is x where x <= 0 (NaN too) and 0 elsewhere, so that expm1 never overflows.
T neg = x > 0 ? T(0) : x;
y = x > 0 ? x : alpha * expm1(neg);

// kernel: elu_backward
// in: gy, x, scalar alpha
// out: gx
// d/dx alpha * (exp(x) - 1) = alpha * exp(x), from x rather than from the output y: one array
// less to read, and the forward need not keep y.
T neg = x > 0 ? T(0) : x;
gx = x > 0 ? gy : gy * alpha * exp(neg);

// kernel: gelu
// in: x
// out: y
// x * Phi(x), Phi the standard normal CDF; 0.7071... = 1/sqrt(2).
y = T(0.5) * x * (1 + erf(x * T(0.7071067811865476)));

// kernel: gelu_backward
// in: gy, x
// out: gx
// Phi(x) + x * phi(x); 0.3989... = 1/sqrt(2 pi).
T cdf = T(0.5) * (1 + erf(x * T(0.7071067811865476)));
T pdf = exp(T(-0.5) * x * x) * T(0.3989422804014327);
gx = gy * (cdf + x * pdf);

// kernel: gelu_tanh
// in: x
// out: y
// The tanh approximation; 0.7978... = sqrt(2/pi).
T inner = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
y = T(0.5) * x * (1 + tanh(inner));

// kernel: gelu_tanh_backward
// in: gy, x
// out: gx
// 0.134145 = 3 * 0.044715, the derivative of the cubic term.
T k = T(0.7978845608028654);
T t = tanh(k * (x + T(0.044715) * x * x * x));
gx = gy * (T(0.5) * (1 + t) + T(0.5) * x * (1 - t * t) * k * (1 + T(0.134145) * x * x));

// kernel: silu
// in: x
// out: y
// x * sigmoid(x), the sigmoid computed as in `sigmoid`.
T e = exp(-fabs(x));
T s = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
y = x * s;

// kernel: silu_backward
// in: gy, x
// out: gx
T e = exp(-fabs(x));
T s = x >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
gx = gy * s * (1 + x * (1 - s));

// kernel: softplus
// in: x, scalar beta, scalar threshold
// out: y
// log(1 + exp(z)) / beta with z = beta * x, written as max(z, 0) + log1p(exp(-|z|)) so that
// exp never overflows; linear above the threshold, as torch.
T z = x * beta;
y = z > threshold ? x : (fmax(z, T(0)) + log1p(exp(-fabs(z)))) / beta;

// kernel: softplus_backward
// in: gy, x, scalar beta, scalar threshold
// out: gx
// sigmoid(beta * x), or 1 above the threshold.
T z = x * beta;
T e = exp(-fabs(z));
T s = z >= 0 ? T(1) / (T(1) + e) : e / (T(1) + e);
gx = z > threshold ? gy : gy * s;

// kernel: logsigmoid
// in: x
// out: y
// log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)): exp of a non-positive number only.
y = fmin(x, T(0)) - log1p(exp(-fabs(x)));

// kernel: logsigmoid_backward
// in: gy, x
// out: gx
// sigmoid(-x), computed as in `sigmoid`.
T e = exp(-fabs(x));
gx = gy * (x >= 0 ? e / (T(1) + e) : T(1) / (T(1) + e));
