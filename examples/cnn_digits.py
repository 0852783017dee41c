"""Train a small convolutional network on scikit-learn's bundled digits (8x8 images of the
digits 0-9, no download) to >= 97% test accuracy, with gpugrad on the GPU (or the CPU).

A plain PyTorch training script with `import gpugrad as torch` in place of `import torch`:
Conv2d/BatchNorm2d/MaxPool2d, CrossEntropyLoss, Adam with a cosine schedule, a DataLoader
and a checkpoint saved with `gpugrad.save`. The data, the command line, the training loop
and the checkpoint check, which mlp_digits.py shares, are in _digits.py next to this file.

    python examples/cnn_digits.py            # full run (~98-99% test accuracy)
    python examples/cnn_digits.py --quick    # a few epochs, for CI
"""
from __future__ import annotations

import os
import sys

import gpugrad as torch
from gpugrad import nn
from gpugrad.utils.data import DataLoader, TensorDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # _digits.py, wherever run from
from _digits import digits, finish, fit, parse_args  # noqa: E402


def main(argv=None) -> float:
    """Train, print the test accuracy, and return it."""
    args, epochs, device = parse_args(__doc__.splitlines()[0], argv,
                                      quick_epochs=4, full_epochs=20)

    torch.manual_seed(args.seed)
    X_train, y_train, X_test, y_test = digits(device, args.seed, image=True)  # N, 1, 8, 8
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=32, shuffle=True,
                        generator=args.seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),                                                   # 16 x 4 x 4
        nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                                   # 32 x 2 x 2
        nn.Flatten(),
        nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(64, 10),
    ).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           T_max=epochs * len(loader))

    fit(model, loader, loss_fn, optimizer, scheduler, epochs, X_test, y_test,
        desc=f"CNN on digits ({device})")
    return finish(model, "cnn_digits", epochs, X_test, y_test)


if __name__ == "__main__":
    main()
