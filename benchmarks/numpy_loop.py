"""The issue's reference point: a float32 NumPy training loop written by hand for one network.

The performance issue quotes "a carefully written float32 NumPy loop" at 0.45-0.7
times PyTorch's epoch time.  This is that loop for the benchmark's network
(784-128-64-10 ReLU, cross-entropy, SGD with momentum or Adam), written the way a
NumPy expert would for speed and for nothing else: no IR, no op table, no checks,
every buffer preallocated, every ufunc `out=`, the fused softmax-cross-entropy
gradient, one flat parameter vector so the optimizer is a few vector passes, and
the tricks fcspec's profiling found (ReLU against an array of zeros, bias
gradients and the softmax row sums as matrix-vector products with ones).  Where
fcspec keeps torch's operation order in the optimizers, this loop takes the
cheapest equal formula (Adam's bias corrections folded into the step size and
epsilon: one pass fewer).

Its epoch time, measured beside fcspec's and torch's, separates what the
interpreter costs (fcspec loop / this loop) from what NumPy itself costs (this
loop / torch).  It is checked against fcspec's interpreter and optimizers
(tests/test_benchmarks.py), so it measures the real computation.
"""

from __future__ import annotations

import math

import numpy as np

SIZES = (784, 128, 64, 10)
F32 = np.float32


def param_shapes() -> list[tuple[int, ...]]:
    """PyTorch's state_dict order and layout (fcspec's flat `theta` has the same order)."""
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in zip(SIZES, SIZES[1:]):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


class HandLoop:
    """`step(x, y, idx)`: gather the batch `x[idx]`, `y[idx]` (float32 rows of 784, class ids),
    one training step; returns (mean loss, correct count) as a tutorial loop reports them.
    The optimizers are the benchmark's: SGD with momentum 0.9, Adam with (0.9, 0.999), 1e-8."""

    def __init__(
        self,
        optimizer: str,
        theta: np.ndarray | None = None,
        seed: int = 0,
        lr: float | None = None,
    ):
        shapes = param_shapes()
        total = sum(math.prod(s) for s in shapes)
        self.theta = np.empty(total, F32)
        self.grad = np.empty(total, F32)
        views, gviews, at = [], [], 0
        for s in shapes:
            k = math.prod(s)
            views.append(self.theta[at : at + k].reshape(s))
            gviews.append(self.grad[at : at + k].reshape(s))
            at += k
        if theta is not None:
            np.copyto(self.theta, theta)
        else:  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias
            rng = np.random.default_rng(seed)
            for j, s in enumerate(shapes):
                bound = 1 / math.sqrt(shapes[j - j % 2][1])
                views[j][...] = rng.uniform(-bound, bound, s)
        self.p, self.g = views, gviews
        self.optimizer = optimizer
        self.lr = lr if lr is not None else (0.01 if optimizer == "sgd" else 1e-3)
        self.t = 0
        self._w = np.empty(total, F32)
        if optimizer == "sgd":
            self._mom = np.zeros(total, F32)
        elif optimizer == "adam":
            self._m, self._v, self._d = (np.zeros(total, F32) for _ in range(3))
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}")
        self._bufs: dict[int, dict[str, np.ndarray]] = {}  # per batch size

    def _buffers(self, b: int, label_dtype: np.dtype) -> dict[str, np.ndarray]:
        if b not in self._bufs or self._bufs[b]["y"].dtype != label_dtype:
            e = lambda *s: np.empty(s, F32)  # noqa: E731
            h1, h2, c = SIZES[1:]
            self._bufs[b] = dict(
                x=e(b, SIZES[0]),
                y=np.empty(b, label_dtype),
                h1=e(b, h1),
                h2=e(b, h2),
                z=e(b, c),
                zt=e(c, b),
                m=e(b),
                s=e(b, 1),
                g1=e(b, h1),
                g2=e(b, h2),
                k1=np.empty((b, h1), np.bool_),
                k2=np.empty((b, h2), np.bool_),
                zero1=np.zeros((b, h1), F32),
                zero2=np.zeros((b, h2), F32),
                ones=np.ones(b, F32),
                ones_c=np.ones((c, 1), F32),
                rows=np.arange(b),
            )
        return self._bufs[b]

    def step(self, x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> tuple[float, int]:
        b = idx.shape[0]
        B = self._buffers(b, y.dtype)
        mm = np.matmul
        W1, b1, W2, b2, W3, b3 = self.p
        gW1, gb1, gW2, gb2, gW3, gb3 = self.g
        xb = np.take(x, idx, axis=0, out=B["x"], mode="clip")
        yb = np.take(y, idx, out=B["y"], mode="clip")
        h1, h2, z, rows = B["h1"], B["h2"], B["z"], B["rows"]
        mm(xb, W1.T, out=h1)
        np.add(h1, b1, out=h1)
        np.maximum(h1, B["zero1"], out=h1)
        mm(h1, W2.T, out=h2)
        np.add(h2, b2, out=h2)
        np.maximum(h2, B["zero2"], out=h2)
        mm(h2, W3.T, out=z)
        np.add(z, b3, out=z)
        # softmax cross-entropy: row max down the columns of a transposed copy, row sums as a GEMV
        zt, m, s = B["zt"], B["m"], B["s"]
        np.copyto(zt, z.T)
        np.maximum.reduce(zt, axis=0, out=m)
        correct = int(
            np.count_nonzero(z[rows, yb] >= m)
        )  # the label's logit is the row's max (argmax
        # would pick the first of tied maxima; float logits practically never tie)
        np.subtract(z, m[:, None], out=z)
        picked = z[rows, yb]
        np.exp(z, out=z)
        mm(z, B["ones_c"], out=s)
        loss = (float(np.log(s).sum()) - float(picked.sum())) / b
        p = z
        np.divide(p, s, out=p)
        p[rows, yb] -= 1
        np.multiply(p, F32(1 / b), out=p)  # d loss / d logits = (softmax - onehot) / b
        # backward; fc1 needs no input gradient
        mm(p.T, h2, out=gW3)
        mm(B["ones"], p, out=gb3)
        g2 = mm(p, W3, out=B["g2"])
        np.multiply(g2, np.greater(h2, 0, out=B["k2"]), out=g2)
        mm(g2.T, h1, out=gW2)
        mm(B["ones"], g2, out=gb2)
        g1 = mm(g2, W2, out=B["g1"])
        np.multiply(g1, np.greater(h1, 0, out=B["k1"]), out=g1)
        mm(g1.T, xb, out=gW1)
        mm(B["ones"], g1, out=gb1)
        self._update()
        return loss, correct

    def _update(self) -> None:
        self.t += 1
        theta, grad, w = self.theta, self.grad, self._w
        if self.optimizer == "sgd":  # torch.optim.SGD(momentum 0.9): buf = 0.9 buf + g; p -= lr buf
            mom = self._mom
            if self.t == 1:
                np.copyto(mom, grad)
            else:
                np.multiply(mom, F32(0.9), out=mom)
                np.add(mom, grad, out=mom)
            np.multiply(mom, F32(-self.lr), out=w)
            np.add(theta, w, out=theta)
            return
        # Adam (0.9, 0.999, 1e-8): p -= lr/bc1 m / (sqrt(v)/sqrt(bc2) + eps), written as
        # p -= (lr sqrt(bc2)/bc1) m / (sqrt(v) + eps sqrt(bc2))
        b1, b2, eps = 0.9, 0.999, 1e-8
        m, v, d = self._m, self._v, self._d
        bc1, bc2_sqrt = 1 - b1**self.t, math.sqrt(1 - b2**self.t)
        np.multiply(grad, F32(1 - b1), out=w)
        np.multiply(m, F32(b1), out=m)
        np.add(m, w, out=m)
        np.multiply(grad, grad, out=w)
        np.multiply(w, F32(1 - b2), out=w)
        np.multiply(v, F32(b2), out=v)
        np.add(v, w, out=v)
        np.sqrt(v, out=d)
        np.add(d, F32(eps * bc2_sqrt), out=d)
        np.divide(m, d, out=w)
        np.multiply(w, F32(-self.lr * bc2_sqrt / bc1), out=w)
        np.add(theta, w, out=theta)
