// Fused optimizer updates: each optimizer's update of one parameter is ONE of these kernels
// (see README.md for the format). The arithmetic follows torch.optim's single-tensor
// implementations operation by operation (the same roundings in the same order), so that
// parameter trajectories agree with torch's to the last bits in float64.
//
// In place: gpugrad.optim runs a kernel with each `NAME_out` output bound to the very array of
// the input `NAME` (on CuPy the same array object is passed as input and as output, which CuPy
// does not copy; on NumPy the twin's results are copied back). A kernel therefore reads all of
// its inputs first, into locals, and assigns its outputs only in its last statements, from
// locals: no input is read after an output is written (tests/test_optim.py checks this).
//
// Hyper-parameters arrive as scalars of the parameter's dtype; numbers that torch computes in
// Python (bias corrections, 1 - beta, the decoupled decay factor) are computed on the host in
// double, as torch does, and passed ready. The `_capturable_` kernels are the exception: with
// capturable=True the step count lives in device memory (so that a CUDA graph replay reads the
// current count, not a constant of the capture) and they compute the bias corrections. Flags are scalars that are 0 or 1: `?:` on a scalar
// picks one branch for the whole launch.
//
// g: the gradient, p: the parameter. maximize != 0 ascends (the gradient is negated first).
// lerp(a, b, w) is written as torch's CPU lerp computes it: a + w (b - a) for w < 0.5, else
// b - (b - a) (1 - w).

// kernel: sgd_step
// in: p, g, scalar lr, scalar weight_decay, scalar maximize
// out: p_out
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T p_new = p - lr * d;
p_out = p_new;

// kernel: sgd_momentum_step
// in: p, g, buf, scalar lr, scalar weight_decay, scalar momentum, scalar keep, scalar nesterov, scalar maximize, scalar first
// out: p_out, buf_out
// keep = 1 - dampening. On the first step the buffer is the gradient itself (not dampened),
// as in torch.
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T b = first != 0 ? d : buf * momentum + keep * d;
T step = nesterov != 0 ? d + momentum * b : b;
T p_new = p - lr * step;
buf_out = b;
p_out = p_new;

// kernel: adam_step
// in: p, g, m, v, scalar lr, scalar w1, scalar beta2, scalar w2, scalar eps, scalar weight_decay, scalar decay, scalar step_size, scalar bc2_sqrt, scalar maximize
// out: p_out, m_out, v_out
// Adam (weight_decay: L2 added to the gradient, decay = 1) and AdamW (weight_decay = 0, decay =
// 1 - lr * wd: the parameter shrinks before the update). w1 = 1 - beta1, w2 = 1 - beta2,
// step_size = lr / (1 - beta1**t), bc2_sqrt = sqrt(1 - beta2**t).
T d = maximize != 0 ? -g : g;
T q = decay != 1 ? p * decay : p;
d = weight_decay != 0 ? d + weight_decay * q : d;
T m_new = w1 < T(0.5) ? m + w1 * (d - m) : d - (d - m) * (T(1) - w1);
T v_new = v * beta2 + w2 * (d * d);
T denom = sqrt(v_new) / bc2_sqrt + eps;
T p_new = q - step_size * (m_new / denom);
m_out = m_new;
v_out = v_new;
p_out = p_new;

// kernel: adam_amsgrad_step
// in: p, g, m, v, vmax, scalar lr, scalar w1, scalar beta2, scalar w2, scalar eps, scalar weight_decay, scalar decay, scalar step_size, scalar bc2_sqrt, scalar maximize
// out: p_out, m_out, v_out, vmax_out
// adam_step keeping the running maximum of v, which the denominator uses instead.
T d = maximize != 0 ? -g : g;
T q = decay != 1 ? p * decay : p;
d = weight_decay != 0 ? d + weight_decay * q : d;
T m_new = w1 < T(0.5) ? m + w1 * (d - m) : d - (d - m) * (T(1) - w1);
T v_new = v * beta2 + w2 * (d * d);
T vmax_new = fmax(vmax, v_new);
T denom = sqrt(vmax_new) / bc2_sqrt + eps;
T p_new = q - step_size * (m_new / denom);
m_out = m_new;
v_out = v_new;
vmax_out = vmax_new;
p_out = p_new;

// kernel: adam_capturable_step
// in: p, g, m, v, step, scalar lr, scalar w1, scalar beta2, scalar w2, scalar eps, scalar weight_decay, scalar decay, scalar log_beta1, scalar log_beta2, scalar maximize
// out: p_out, m_out, v_out
// adam_step for capturable=True: step is the step count t (a 0-d array in device memory,
// already incremented, broadcast) and the bias corrections are computed here, 1 - beta**t as
// -expm1(t * log(beta)), log(beta) computed on the host in double: a few ulps of T even where
// beta**t is close to 1 (1 - beta2**t at the first steps), where T(1) - pow(beta, t) would
// lose most of its digits in float32. beta = 0 passes log_beta = -inf (bias correction 1).
T d = maximize != 0 ? -g : g;
T q = decay != 1 ? p * decay : p;
d = weight_decay != 0 ? d + weight_decay * q : d;
T m_new = w1 < T(0.5) ? m + w1 * (d - m) : d - (d - m) * (T(1) - w1);
T v_new = v * beta2 + w2 * (d * d);
T step_size = lr / -expm1(step * log_beta1);
T bc2_sqrt = sqrt(-expm1(step * log_beta2));
T denom = sqrt(v_new) / bc2_sqrt + eps;
T p_new = q - step_size * (m_new / denom);
m_out = m_new;
v_out = v_new;
p_out = p_new;

// kernel: adam_amsgrad_capturable_step
// in: p, g, m, v, vmax, step, scalar lr, scalar w1, scalar beta2, scalar w2, scalar eps, scalar weight_decay, scalar decay, scalar log_beta1, scalar log_beta2, scalar maximize
// out: p_out, m_out, v_out, vmax_out
// adam_amsgrad_step for capturable=True (see adam_capturable_step).
T d = maximize != 0 ? -g : g;
T q = decay != 1 ? p * decay : p;
d = weight_decay != 0 ? d + weight_decay * q : d;
T m_new = w1 < T(0.5) ? m + w1 * (d - m) : d - (d - m) * (T(1) - w1);
T v_new = v * beta2 + w2 * (d * d);
T vmax_new = fmax(vmax, v_new);
T step_size = lr / -expm1(step * log_beta1);
T bc2_sqrt = sqrt(-expm1(step * log_beta2));
T denom = sqrt(vmax_new) / bc2_sqrt + eps;
T p_new = q - step_size * (m_new / denom);
m_out = m_new;
v_out = v_new;
vmax_out = vmax_new;
p_out = p_new;

// kernel: rmsprop_step
// in: p, g, sq, scalar lr, scalar alpha, scalar w, scalar eps, scalar weight_decay, scalar maximize
// out: p_out, sq_out
// w = 1 - alpha; sq is the running average of the squared gradient.
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T sq_new = sq * alpha + w * (d * d);
T avg = sqrt(sq_new) + eps;
T p_new = p - lr * (d / avg);
sq_out = sq_new;
p_out = p_new;

// kernel: rmsprop_centered_step
// in: p, g, sq, ga, scalar lr, scalar alpha, scalar w, scalar eps, scalar weight_decay, scalar maximize
// out: p_out, sq_out, ga_out
// Centered: the variance estimate sq - ga**2, ga the running average of the gradient.
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T sq_new = sq * alpha + w * (d * d);
T ga_new = w < T(0.5) ? ga + w * (d - ga) : d - (d - ga) * (T(1) - w);
T avg = sqrt(sq_new - ga_new * ga_new) + eps;
T p_new = p - lr * (d / avg);
sq_out = sq_new;
ga_out = ga_new;
p_out = p_new;

// kernel: rmsprop_momentum_step
// in: p, g, sq, buf, scalar lr, scalar alpha, scalar w, scalar eps, scalar weight_decay, scalar maximize, scalar momentum
// out: p_out, sq_out, buf_out
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T sq_new = sq * alpha + w * (d * d);
T avg = sqrt(sq_new) + eps;
T b = buf * momentum + d / avg;
T p_new = p - lr * b;
sq_out = sq_new;
buf_out = b;
p_out = p_new;

// kernel: rmsprop_centered_momentum_step
// in: p, g, sq, ga, buf, scalar lr, scalar alpha, scalar w, scalar eps, scalar weight_decay, scalar maximize, scalar momentum
// out: p_out, sq_out, ga_out, buf_out
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T sq_new = sq * alpha + w * (d * d);
T ga_new = w < T(0.5) ? ga + w * (d - ga) : d - (d - ga) * (T(1) - w);
T avg = sqrt(sq_new - ga_new * ga_new) + eps;
T b = buf * momentum + d / avg;
T p_new = p - lr * b;
sq_out = sq_new;
ga_out = ga_new;
buf_out = b;
p_out = p_new;

// kernel: adagrad_step
// in: p, g, s, scalar clr, scalar eps, scalar weight_decay, scalar maximize
// out: p_out, s_out
// clr = lr / (1 + (t - 1) lr_decay); s is the running sum of squared gradients.
T d = maximize != 0 ? -g : g;
d = weight_decay != 0 ? d + weight_decay * p : d;
T s_new = s + d * d;
T std = sqrt(s_new) + eps;
T p_new = p - clr * (d / std);
s_out = s_new;
p_out = p_new;
