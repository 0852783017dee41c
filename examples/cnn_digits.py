"""Train a small convolutional network on scikit-learn's bundled digits (8x8 images of the
digits 0-9, no download) to >= 97% test accuracy, with gpugrad on the GPU (or the CPU).

A plain PyTorch training script with `import gpugrad as torch` in place of `import torch`:
Conv2d/BatchNorm2d/MaxPool2d, CrossEntropyLoss, Adam with a cosine schedule, a DataLoader
and a checkpoint saved with `gpugrad.save`.

    python examples/cnn_digits.py            # full run (~98-99% test accuracy)
    python examples/cnn_digits.py --quick    # a few epochs, for CI
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import gpugrad as torch
from gpugrad import nn
from gpugrad.utils.data import DataLoader, TensorDataset


def digits(device, seed=0):
    """Train and test tensors: pixels scaled to [0, 1], 25% of the images held out."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=seed)
    X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)  # N, C, H, W
    return [torch.tensor(a, device=device) for a in (X_train, y_train, X_test, y_test)]


def accuracy(model, X, y) -> float:
    """The fraction of ``X`` that ``model`` classifies as ``y``."""
    model.eval()
    with torch.no_grad():
        pred = model(X).argmax(dim=1)
    model.train()
    return (pred == y).float().mean().item()


def main(argv=None) -> float:
    """Train, print the test accuracy, and return it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few epochs (CI)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: gpugrad's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (4 if args.quick else 20)
    device = torch.device(args.device) if args.device else torch.get_default_device()

    torch.manual_seed(args.seed)
    X_train, y_train, X_test, y_test = digits(device, args.seed)
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

    bar = tqdm(range(epochs), desc=f"CNN on digits ({device})", unit="epoch",
               disable=None, file=sys.stdout)
    for _ in bar:
        total, count = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
            count += len(yb)
        bar.set_postfix(loss=f"{total / count:.4f}",
                        test_acc=f"{accuracy(model, X_test, y_test):.4f}")
    bar.close()

    acc = accuracy(model, X_test, y_test)
    # a checkpoint round trip: the reloaded model classifies the same way
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn_digits.safetensors")
        torch.save(model.state_dict(), path)
        model.load_state_dict(torch.load(path))
    assert accuracy(model, X_test, y_test) == acc
    print(f"test accuracy: {acc:.4f} ({len(y_test)} held-out images, {epochs} epochs)")
    return acc


if __name__ == "__main__":
    main()
