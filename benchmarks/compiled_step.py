"""What compiling the whole training step would buy: a measurement, not a feature.

docs/performance.md says fcspec misses "fcspec/JAX <= 1.5" at batch 32 because JAX
runs the whole epoch as one compiled program while fcspec dispatches some 30 NumPy
and kernel calls a step from Python.  This script measures that claim: the same
training (784-128-64-10 ReLU, mean cross-entropy, torch's SGD with momentum or
Adam, the same batches) as ONE numba function per epoch, the GEMMs called from compiled code
(numba's np.dot: scipy's BLAS), and times it beside fcspec and JAX in alternating
rounds.  It is not fcspec's path and keeps none of its promises (exp and log are
libm's, not NumPy's, so the bits differ; the network and optimizer are fixed):
tests/test_benchmarks.py checks three of its steps against fcspec's to float32
round-off, so the figure is the real work.

    FCSPEC_DATA=... python benchmarks/compiled_step.py --batches 32,64,128,256 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")


@jit
def _bias_relu(h, b):
    zero = np.float32(0)
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            z = h[i, j] + b[j]
            h[i, j] = z if z > zero else zero


@jit
def _relu_grad_colsum(g, h, gb):
    zero = np.float32(0)
    for j in range(gb.shape[0]):
        gb[j] = zero
    for i in range(g.shape[0]):
        for j in range(g.shape[1]):
            v = g[i, j] if h[i, j] > zero else zero
            g[i, j] = v
            gb[j] = gb[j] + v


@jit
def _sgd(p, g, buf, first, momentum, neg_lr):
    pf, gf, bf = p.ravel(), g.ravel(), buf.ravel()
    for i in range(pf.size):
        b = gf[i] if first else bf[i] * momentum + gf[i]
        bf[i] = b
        pf[i] = b * neg_lr + pf[i]


@jit
def _adam(p, g, m, v, b1, b2, neg_step, bc2_sqrt, eps):
    pf, gf, mf, vf = p.ravel(), g.ravel(), m.ravel(), v.ravel()
    w = np.float32(1) - b1
    for i in range(pf.size):
        gi = gf[i]
        mi = (gi - mf[i]) * w + mf[i]  # torch's lerp for a weight < 0.5
        mf[i] = mi
        vi = vf[i] * b2 + (np.float32(1) - b2) * gi * gi
        vf[i] = vi
        pf[i] = pf[i] + (mi * neg_step) / (np.sqrt(vi) / bc2_sqrt + eps)


@jit
def _update(adam, p, g, m, v, first, momentum, neg_lr, b1, b2, neg_step, bc2_sqrt, eps):
    if adam:
        _adam(p, g, m, v, b1, b2, neg_step, bc2_sqrt, eps)
    else:
        _sgd(p, g, m, first, momentum, neg_lr)


@jit
def step(raw, y, idx, scale, w1, b1, w2, b2, w3, b3, gw1, gb1, gw2, gb2, gw3, gb3,
         m1, mb1, m2, mb2, m3, mb3, v1, vb1, v2, vb2, v3, vb3, t, adam, momentum, lr,
         x, h1, h2, o):  # fmt: skip
    """One step (SGD with momentum, or Adam) on the rows `idx` of `raw` (uint8, one row a
    sample), the `t`-th of the run; returns the loss."""
    nb = idx.shape[0]
    for r in range(nb):
        k = idx[r]
        for j in range(raw.shape[1]):
            x[r, j] = np.float32(raw[k, j]) / scale
    np.dot(x, w1.T, h1)
    _bias_relu(h1, b1)
    np.dot(h1, w2.T, h2)
    _bias_relu(h2, b2)
    np.dot(h2, w3.T, o)
    loss = 0.0
    for j in range(gb3.shape[0]):
        gb3[j] = np.float32(0)
    for r in range(nb):  # softmax cross-entropy: o becomes (softmax - one-hot) / nb
        mx = o[r, 0] + b3[0]
        for j in range(o.shape[1]):
            o[r, j] = o[r, j] + b3[j]
            mx = max(mx, o[r, j])
        s = np.float32(0)
        for j in range(o.shape[1]):
            e = np.exp(o[r, j] - mx)
            o[r, j] = e
            s += e
        k = y[r]
        loss += np.log(s) - np.log(o[r, k])
        for j in range(o.shape[1]):
            v = o[r, j] / s
            if j == k:
                v -= np.float32(1)
            v /= np.float32(nb)
            o[r, j] = v
            gb3[j] = gb3[j] + v
    np.dot(o.T, h2, gw3)
    g2 = np.dot(o, w3)
    _relu_grad_colsum(g2, h2, gb2)
    np.dot(g2.T, h1, gw2)
    g1 = np.dot(g2, w2)
    _relu_grad_colsum(g1, h1, gb1)
    np.dot(g1.T, x, gw1)
    # torch.optim.Adam's defaults (betas 0.9, 0.999, eps 1e-8); its bias corrections in
    # float64, as torch computes them from the step count
    beta1, beta2 = 0.9, 0.999
    neg_step = np.float32(-lr / (1.0 - beta1**t))
    bc2_sqrt = np.float32((1.0 - beta2**t) ** 0.5)
    f1, f2, eps, neg_lr = np.float32(beta1), np.float32(beta2), np.float32(1e-8), np.float32(-lr)
    first = t == 1
    _update(adam, w1, gw1, m1, v1, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    _update(adam, b1, gb1, mb1, vb1, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    _update(adam, w2, gw2, m2, v2, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    _update(adam, b2, gb2, mb2, vb2, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    _update(adam, w3, gw3, m3, v3, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    _update(adam, b3, gb3, mb3, vb3, first, momentum, neg_lr, f1, f2, neg_step, bc2_sqrt, eps)
    return loss / nb


@jit
def epoch(raw, y, order, batch, scale, params, grads, bufs, sqs, steps, adam, momentum, lr,
          x, h1, h2, o):  # fmt: skip
    """Every batch of `order`, a short last one included; the mean loss of the epoch."""
    n = order.shape[0]
    total = 0.0
    yb = np.empty(batch, np.int64)
    for s in range(0, n, batch):
        nb = min(batch, n - s)
        idx = order[s : s + nb]
        for r in range(nb):
            yb[r] = y[idx[r]]
        w1, b1, w2, b2, w3, b3 = params
        gw1, gb1, gw2, gb2, gw3, gb3 = grads
        m1, mb1, m2, mb2, m3, mb3 = bufs
        v1, vb1, v2, vb2, v3, vb3 = sqs
        steps[0] += 1
        total += nb * step(raw, yb, idx, scale, w1, b1, w2, b2, w3, b3,
                           gw1, gb1, gw2, gb2, gw3, gb3, m1, mb1, m2, mb2, m3, mb3,
                           v1, vb1, v2, vb2, v3, vb3, steps[0], adam, momentum, lr,
                           x[:nb], h1[:nb], h2[:nb], o[:nb])  # fmt: skip
    return total / n


class CompiledStep:
    """SGD (lr 0.01, momentum 0.9) or Adam (lr 1e-3, torch's defaults), train_speed.py's
    two, on uint8 rows `raw` [n, 784] / 255, from `params` (fcspec's names: fc1.weight,
    fc1.bias, ...), permutations from `seed` as train.py."""

    def __init__(
        self, raw: np.ndarray, y: np.ndarray, params: dict, batch: int, seed: int,
        optimizer: str = "sgd",
    ):  # fmt: skip
        self.adam = optimizer == "adam"
        self.lr = 1e-3 if self.adam else 0.01
        self.raw = np.ascontiguousarray(raw.reshape(len(raw), -1))
        self.y = y.astype(np.int64)
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        names = [f"fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")]
        self.params = tuple(np.array(params[k], np.float32) for k in names)
        self.grads = tuple(np.empty_like(p) for p in self.params)
        self.bufs = tuple(np.zeros_like(p) for p in self.params)  # momentum, or Adam's m
        self.sqs = tuple(np.zeros_like(p) for p in self.params)  # Adam's v
        self.steps = np.zeros(1, np.int64)
        d1, d2, d3 = (self.params[i].shape[0] for i in (0, 2, 4))
        f32 = np.float32
        self.x = np.empty((batch, self.raw.shape[1]), f32)
        self.h1, self.h2, self.o = (np.empty((batch, d), f32) for d in (d1, d2, d3))

    def run(self, order: np.ndarray) -> float:
        return epoch(self.raw, self.y, order.astype(np.int64), self.batch, np.float32(255),
                     self.params, self.grads, self.bufs, self.sqs, self.steps, self.adam,
                     np.float32(0.9), self.lr, self.x, self.h1, self.h2, self.o)  # fmt: skip

    def epoch(self) -> float:
        return self.run(self.rng.permutation(len(self.raw)))


def main(argv: list[str] | None = None) -> int:
    import train_speed as ts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="32,128")
    ap.add_argument("--optimizers", default="sgd,adam")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--network", choices=sorted(ts.NETWORKS), default="784-128-64-10")
    args = ap.parse_args(argv)
    ts.set_network(args.network)
    try:
        import jax  # noqa: F401
    except ImportError:
        print("compiled_step.py times JAX beside it: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    from fcspec import interpreter

    load = os.getloadavg()[0]
    print(f"{args.network}; 1-minute load average {load:.2f}; medians of {args.rounds} rounds\n")
    print("| cell | fcspec s/epoch | JAX s/epoch | compiled step s/epoch | fcspec/JAX (paired) "
          "| compiled step/JAX (paired) |\n|---|---|---|---|---|---|")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        cases = [(o, int(b)) for o in args.optimizers.split(",") for b in args.batches.split(",")]
        for optimizer, batch in cases:
            cell = ts.Cell(optimizer, batch, 0)
            net = interpreter.Network(cell.spec.model, rng=np.random.default_rng([0, 1]))
            comp = CompiledStep(
                cell.data.train.samples, cell.data.train.y, net.params, batch, 0, optimizer
            )
            comp.run(np.arange(2 * batch))  # untimed: loads or compiles
            times: dict[str, list[float]] = {"fcspec": [], "jax": [], "compiled": []}
            for r in range(args.rounds):
                for name in ("fcspec", "jax", "compiled")[r % 3 :] + ("fcspec", "jax", "compiled")[
                    : r % 3
                ]:
                    if name == "compiled":
                        t0 = ts.time.perf_counter()
                        comp.epoch()
                        times[name].append(ts.time.perf_counter() - t0)
                    else:
                        run = ts.run_fcspec if name == "fcspec" else ts.run_jax
                        times[name] += run(cell, 1, tmp)
            med = {k: statistics.median(v) for k, v in times.items()}
            pf = statistics.median(a / b for a, b in zip(times["fcspec"], times["jax"]))
            pc = statistics.median(a / b for a, b in zip(times["compiled"], times["jax"]))
            print(f"| {optimizer}, batch {batch} | {med['fcspec']:.3f} | {med['jax']:.3f} | "
                  f"{med['compiled']:.3f} | {pf:.2f} | {pc:.2f} |", flush=True)  # fmt: skip
    print(f"\n1-minute load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
