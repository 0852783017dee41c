"""A small end-to-end gpugrad run: fit y = sin(x) with a 1-32-1 tanh MLP.

It uses only the core of gpugrad (tensor factories, ``@``, ``tanh``, ``mean``, ``backward``,
``no_grad`` and in-place updates) and plain SGD written by hand, on the default device
(CUDA when usable, else the CPU; ``GPUGRAD_DEVICE`` or ``--device`` override it). It prints
the loss as it trains, the final gradient norm of each parameter, and the mean time per
training step, measured with the device synchronized.

    python benchmarks/demo.py                  # default device, 500 steps
    python benchmarks/demo.py --device cpu --steps 200
"""
from __future__ import annotations

import argparse
import math
import time

import gpugrad


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500, help="SGD steps (default 500)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: gpugrad's default device)")
    p.add_argument("--batch", type=int, default=256, help="points per step (default 256)")
    p.add_argument("--hidden", type=int, default=32, help="hidden units (default 32)")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.steps < 1:
        raise SystemExit("--steps must be at least 1")
    device = gpugrad.device(args.device) if args.device else gpugrad.get_default_device()
    gpugrad.manual_seed(args.seed)

    # Data: a fixed batch of x drawn uniformly from [-pi, pi], as a column; target sin(x).
    x = (gpugrad.rand(args.batch, 1, device=device) * 2 - 1) * math.pi
    y = x.sin()

    # Parameters: N(0, 1/fan_in) weights, small random biases.
    h = args.hidden
    w1 = gpugrad.randn(1, h, device=device).requires_grad_()
    b1 = (gpugrad.randn(h, device=device) * 0.1).requires_grad_()
    w2 = (gpugrad.randn(h, 1, device=device) / math.sqrt(h)).requires_grad_()
    b2 = gpugrad.zeros(1, device=device, requires_grad=True)
    params = {"w1": w1, "b1": b1, "w2": w2, "b2": b2}

    def step() -> gpugrad.Tensor:
        pred = (x @ w1 + b1).tanh() @ w2 + b2
        loss = ((pred - y) ** 2).mean()
        loss.backward()
        with gpugrad.no_grad():
            for p in params.values():
                p -= args.lr * p.grad
        return loss

    print(f"gpugrad {gpugrad.__version__} on {device}: fit sin(x), 1-{h}-1 tanh MLP, "
          f"batch {args.batch}, lr {args.lr}, {args.steps} steps")

    every = max(1, args.steps // 10)
    elapsed = 0.0
    for i in range(1, args.steps + 1):
        for p in params.values():
            p.grad = None
        gpugrad.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        gpugrad.cuda.synchronize()
        if i > 1:  # the first step pays for warm-up (kernel compiles, allocator): not timed
            elapsed += time.perf_counter() - t0
        if i == 1 or i % every == 0 or i == args.steps:
            print(f"step {i:5d}  loss {loss.item():.6f}")  # .item() syncs: kept out of timing

    print("gradient norms of the last step:")
    for name, p in params.items():
        print(f"  {name:3s} {str(tuple(p.shape)):9s} |grad| = {p.grad.norm().item():.6f}")
    if args.steps > 1:
        print(f"mean time per step: {elapsed / (args.steps - 1) * 1e3:.3f} ms over "
              f"{args.steps - 1} steps (forward + backward + SGD update, device synchronized, "
              f"first step excluded)")


if __name__ == "__main__":
    main()
