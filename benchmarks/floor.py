"""The floor: W1's training step written by hand on the array module (NumPy on a CPU, CuPy on
a GPU), with no autograd at all. It does the same arithmetic as the autograd peers (the same
matrix products, ReLU masks, log-softmax and SGD update), so "gpugrad / floor" is what the
engine itself costs over the array library it runs on (issue 7: W1 medium and large within
10% of it on a CPU)."""
from __future__ import annotations


class FloorMLP:
    """W1's model and batch as arrays of ``xp``, with a hand-derived backward."""

    def __init__(self, xp, params, x, onehot, lr: float = 0.01) -> None:
        self.xp, self.lr = xp, lr
        self.params = [xp.asarray(p).copy() for p in params]
        self.x, self.onehot = xp.asarray(x), xp.asarray(onehot)
        # Each row of the target weighs its log-softmax by its sum (1 for one-hot rows).
        self.row_weight = self.onehot.sum(axis=1, keepdims=True)

    def _forward(self):
        xp = self.xp
        acts = [self.x]  # the input of each layer
        h = self.x
        last = len(self.params) // 2 - 1
        for i in range(0, len(self.params), 2):
            h = h @ self.params[i]
            h += self.params[i + 1]
            if i // 2 < last:
                xp.maximum(h, 0, out=h)
                acts.append(h)
        shifted = h - h.max(axis=1, keepdims=True)
        log_sm = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        return acts, log_sm

    def loss(self):
        """The loss as a 0-d array (no update)."""
        _, log_sm = self._forward()
        return -(log_sm * self.onehot).sum() / self.x.shape[0]

    def step(self):
        """One SGD step; returns the loss before the update (a 0-d array)."""
        xp = self.xp
        acts, log_sm = self._forward()
        batch = self.x.shape[0]
        loss = -(log_sm * self.onehot).sum() / batch
        # d loss / d logits = (softmax * row_weight - onehot) / batch
        g = xp.exp(log_sm)
        g *= self.row_weight
        g -= self.onehot
        g /= batch
        for i in range(len(self.params) - 2, -1, -2):
            a = acts[i // 2]
            gw = a.T @ g
            gb = g.sum(axis=0)
            if i:  # the gradient of the layer's input, through the ReLU that made it
                g = g @ self.params[i].T
                g *= a > 0
            self.params[i] -= self.lr * gw
            self.params[i + 1] -= self.lr * gb
        return loss
