"""Train a multi-layer perceptron on scikit-learn's bundled digits (8x8 images of the digits
0-9, no download) to >= 97% test accuracy, with gpugrad on the GPU (or the CPU).

This is a plain PyTorch training script with `import gpugrad as torch` in place of
`import torch`: nn.Sequential, CrossEntropyLoss, AdamW with a OneCycleLR schedule, a
DataLoader, gradient clipping, and a checkpoint saved with torch.save-style `gpugrad.save`.
The data, the command line, the training loop and the checkpoint check, which cnn_digits.py
shares, are in _digits.py next to this file.

    python examples/mlp_digits.py            # full run (~97-99% test accuracy)
    python examples/mlp_digits.py --quick    # a few epochs, for CI
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
                                      quick_epochs=6, full_epochs=40)

    torch.manual_seed(args.seed)
    X_train, y_train, X_test, y_test = digits(device, args.seed)
    loader = DataLoader(TensorDataset(X_train, y_train), batch_size=32, shuffle=True,
                        generator=args.seed)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(128, 64), nn.ReLU(),
        nn.Linear(64, 10),
    ).to(device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-2, epochs=epochs,
                                                    steps_per_epoch=len(loader))

    fit(model, loader, loss_fn, optimizer, scheduler, epochs, X_test, y_test,
        desc=f"MLP on digits ({device})", max_norm=5.0)
    return finish(model, "mlp_digits", epochs, X_test, y_test)


if __name__ == "__main__":
    main()
