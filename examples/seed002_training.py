"""The training loop of seed 002 ("PyTorch 自动微分 mechanism", section 7.1) on gpugrad.

The seed fits y = 2x + 1 with nn.Sequential(Linear(1, 10), ReLU, Linear(10, 1)), MSELoss and
a hand-written SGD step, printing the loss every 10 epochs. This script runs that loop
unchanged with `import gpugrad as torch`, then checks it against two references on the same
data and the same initial weights:

- the same loop written with `torch.optim.SGD` (gpugrad.optim): the very same losses, since
  the fused SGD kernel computes `p - lr * g` as the hand-written step does;
- the loop in PyTorch itself (when installed): the same printed losses, to 4 decimals.

    python examples/seed002_training.py
"""
from __future__ import annotations

import argparse

import numpy as np

import gpugrad as torch

LEARNING_RATE = 0.01
EPOCHS = 100


def make_model(lib):
    """The seed's network."""
    return lib.nn.Sequential(
        lib.nn.Linear(1, 10),
        lib.nn.ReLU(),
        lib.nn.Linear(10, 1),
    )


def seed_loop(lib, model, x_train, y_train, use_optimizer=False, log=print) -> list:
    """Seed 002's loop (optionally with an SGD optimizer instead of the manual update);
    returns the printed losses."""
    loss_fn = lib.nn.MSELoss()
    optimizer = lib.optim.SGD(model.parameters(), lr=LEARNING_RATE) if use_optimizer else None
    printed = []
    for epoch in range(EPOCHS):
        y_pred = model(x_train)
        loss = loss_fn(y_pred, y_train)
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad()
        else:
            with lib.no_grad():
                for param in model.parameters():
                    param -= LEARNING_RATE * param.grad
            model.zero_grad()
        if (epoch + 1) % 10 == 0:
            line = f"Epoch [{epoch+1}/100], Loss: {loss.item():.4f}"
            printed.append(line)
            log(line)
    return printed


def main(argv=None) -> dict:
    """Run the loop and its references; return the printed lines of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: gpugrad's)")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else torch.get_default_device()

    # the seed's data: x ~ N(0, 1), y = 2x + 1 + noise, drawn once and shared by every run
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((100, 1)).astype(np.float32)
    y = (2 * x + 1 + rng.standard_normal((100, 1)) * 0.1).astype(np.float32)
    torch.manual_seed(args.seed)
    model = make_model(torch).to(device)
    init = {k: v.cpu().numpy().copy() for k, v in model.state_dict().items()}

    print("gpugrad, the seed's loop:")
    x_train, y_train = torch.tensor(x, device=device), torch.tensor(y, device=device)
    runs = {"gpugrad": seed_loop(torch, model, x_train, y_train)}

    again = make_model(torch).to(device)
    again.load_state_dict({k: torch.tensor(v, device=device) for k, v in init.items()})
    runs["gpugrad.optim.SGD"] = seed_loop(torch, again, x_train, y_train, use_optimizer=True,
                                          log=lambda line: None)
    assert runs["gpugrad.optim.SGD"] == runs["gpugrad"], runs
    print("gpugrad.optim.SGD: the same losses")

    try:
        import torch as real_torch
    except ImportError:
        print("PyTorch is not installed: no comparison with it")
        return runs
    reference = make_model(real_torch)
    reference.load_state_dict({k: real_torch.from_numpy(v) for k, v in init.items()})
    runs["torch"] = seed_loop(real_torch, reference, real_torch.from_numpy(x),
                              real_torch.from_numpy(y), log=lambda line: None)
    ours = [float(line.rsplit(" ", 1)[1]) for line in runs["gpugrad"]]
    theirs = [float(line.rsplit(" ", 1)[1]) for line in runs["torch"]]
    # printed to 4 decimals: a float32 difference may flip the last digit
    assert np.allclose(ours, theirs, rtol=0, atol=1.5e-4), (ours, theirs)
    print(f"PyTorch {real_torch.__version__}, same data and initial weights: the same printed "
          f"losses (final {theirs[-1]:.4f})")
    return runs


if __name__ == "__main__":
    main()
