"""What the digits examples (mlp_digits.py, cnn_digits.py) share: the data, the command line,
the training loop with its progress bar, the accuracy and a checkpoint round trip.

Each example keeps its model, loss, optimizer and schedule in its own file; this module holds
only the parts that are the same for both, written as a plain PyTorch script would.
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


def digits(device, seed=0, image=False):
    """Train and test tensors: pixels scaled to [0, 1], 25% of the images held out.

    With ``image=True`` the pixels come as ``N, C, H, W`` = ``N, 1, 8, 8`` (for convolutions),
    otherwise as ``N, 64``.
    """
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y,
                                                        random_state=seed)
    if image:
        X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    return [torch.tensor(a, device=device) for a in (X_train, y_train, X_test, y_test)]


def accuracy(model, X, y) -> float:
    """The fraction of ``X`` that ``model`` classifies as ``y``."""
    model.eval()
    with torch.no_grad():
        pred = model(X).argmax(dim=1)
    model.train()
    return (pred == y).float().mean().item()


def parse_args(description, argv, quick_epochs, full_epochs):
    """The examples' command line: returns ``(args, epochs, device)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="a few epochs (CI)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: gpugrad's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs or (quick_epochs if args.quick else full_epochs)
    device = torch.device(args.device) if args.device else torch.get_default_device()
    return args, epochs, device


def fit(model, loader, loss_fn, optimizer, scheduler, epochs, X_test, y_test, desc,
        max_norm=None):
    """Train ``epochs`` epochs (the scheduler steps once per batch), showing the mean training
    loss and the test accuracy after each epoch; ``max_norm`` clips the gradient norm."""
    bar = tqdm(range(epochs), desc=desc, unit="epoch", disable=None, file=sys.stdout)
    for _ in bar:
        total, count = 0.0, 0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if max_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=max_norm)
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(yb)
            count += len(yb)
        bar.set_postfix(loss=f"{total / count:.4f}",
                        test_acc=f"{accuracy(model, X_test, y_test):.4f}")
    bar.close()


def finish(model, name, epochs, X_test, y_test) -> float:
    """Check a checkpoint round trip (the reloaded model classifies the same way), print the
    test accuracy and return it."""
    acc = accuracy(model, X_test, y_test)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.safetensors")
        torch.save(model.state_dict(), path)
        model.load_state_dict(torch.load(path))
    assert accuracy(model, X_test, y_test) == acc
    print(f"test accuracy: {acc:.4f} ({len(y_test)} held-out images, {epochs} epochs)")
    return acc
