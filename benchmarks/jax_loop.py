"""The JAX reference of train_speed.py: one epoch as a `jax.jit`-compiled `lax.scan`.

This is the strongest CPU reference found for the MNIST MLP: XLA fuses each
step's elementwise work into the GEMMs' neighbours, and no Python runs per
step.  The network (ReLU MLP of any widths), the loss (mean cross-entropy over
logits), the optimizers (torch.optim's SGD with momentum and Adam, in torch's
formulas) and the batches (the same permutation stream as train.py: one
`rng.permutation(n)` per epoch, a short last batch when the batch does not
divide n) are those of the other columns.

The full batches of an epoch run inside one `lax.scan`; a short last batch is
one more call of the jitted step (its own compilation, done in the first
epoch).  `epoch()` blocks until the result is ready, so its time is the real
work.  The first epoch pays XLA's compilation: `JaxLoop.compile_seconds` holds
it, and train_speed.py reports it apart from the per-epoch figures.

Imported only when JAX is installed (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_platforms", "cpu")


def init_params(sizes: tuple[int, ...], seed: int) -> list[tuple[jnp.ndarray, jnp.ndarray]]:
    """nn.Linear's default init, U(-1/sqrt(in), 1/sqrt(in)) for weight [out, in] and bias."""
    rng = np.random.default_rng(seed)
    params = []
    for i, o in zip(sizes, sizes[1:]):
        bound = 1.0 / np.sqrt(i)
        w = rng.uniform(-bound, bound, (o, i)).astype(np.float32)
        b = rng.uniform(-bound, bound, (o,)).astype(np.float32)
        params.append((jnp.asarray(w), jnp.asarray(b)))
    return params


def _loss(params, xb, yb):
    h = xb
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w.T + b)
    w, b = params[-1]
    logits = h @ w.T + b
    logp = jax.nn.log_softmax(logits)
    nll = -jnp.take_along_axis(logp, yb[:, None], axis=1)[:, 0]
    correct = jnp.sum(jnp.argmax(logits, axis=1) == yb)
    return jnp.mean(nll), correct


def _sgd(momentum: float, lr: float):
    def init(params):
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    def update(params, state, grads, t):
        # torch.optim.SGD: buf = momentum * buf + g (buf = g at the first step); p -= lr * buf
        first = t == 1
        state = jax.tree_util.tree_map(
            lambda buf, g: jnp.where(first, g, momentum * buf + g), state, grads
        )
        params = jax.tree_util.tree_map(lambda p, buf: p - lr * buf, params, state)
        return params, state

    return init, update


def _adam(lr: float, b1: float, b2: float, eps: float):
    def init(params):
        z = jax.tree_util.tree_map(jnp.zeros_like, params)
        return (z, z)

    def update(params, state, grads, t):
        m, v = state
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        tf = t.astype(jnp.float32)
        bc1 = 1 - b1**tf
        bc2 = 1 - b2**tf
        params = jax.tree_util.tree_map(
            lambda p, m, v: p - (lr / bc1) * m / (jnp.sqrt(v) / jnp.sqrt(bc2) + eps), params, m, v
        )
        return params, (m, v)

    return init, update


OPTIMIZERS = {
    "sgd": lambda: _sgd(momentum=0.9, lr=0.01),
    "adam": lambda: _adam(lr=1e-3, b1=0.9, b2=0.999, eps=1e-8),
}


_COMPILED: dict[str, tuple] = {}


def _compiled(optimizer: str):
    """The jitted epoch scan and single step for `optimizer`, built once per process: the data
    are arguments, not constants, so every fresh model of the same shapes reuses XLA's
    compilation (jax.jit caches by shapes)."""
    if optimizer not in _COMPILED:
        _, update = OPTIMIZERS[optimizer]()

        def step(carry, idx, x, y):
            params, state, t = carry
            xb, yb = jnp.take(x, idx, axis=0), jnp.take(y, idx, axis=0)
            (loss, correct), grads = jax.value_and_grad(_loss, has_aux=True)(params, xb, yb)
            t = t + 1
            params, state = update(params, state, grads, t)
            return (params, state, t), (loss, correct)

        def scan_epoch(carry, idx, x, y):
            return jax.lax.scan(lambda c, i: step(c, i, x, y), carry, idx)

        _COMPILED[optimizer] = (jax.jit(scan_epoch), jax.jit(step))
    return _COMPILED[optimizer]


class JaxLoop:
    """Train the MLP `sizes` with `optimizer` ("sgd" | "adam") on (x [n, in] float32, y [n] int)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, sizes, optimizer: str, batch: int, seed: int):
        self.x = jnp.asarray(x.reshape(len(x), -1))
        self.y = jnp.asarray(y.astype(np.int32))
        self.n, self.batch = len(x), batch
        self.rng = np.random.default_rng(seed)
        init, _ = OPTIMIZERS[optimizer]()
        params = init_params(tuple(sizes), seed)
        self.carry = (params, init(params), jnp.int32(0))
        self._scan, self._step = _compiled(optimizer)
        self.compile_seconds: float | None = None
        self.last_loss = float("nan")

    def _run(self, carry, order: np.ndarray):
        full = self.n // self.batch * self.batch
        idx = jnp.asarray(order[:full].reshape(-1, self.batch))
        carry, (loss, _) = self._scan(carry, idx, self.x, self.y)
        if full < self.n:
            carry, _ = self._step(carry, jnp.asarray(order[full:]), self.x, self.y)
        jax.block_until_ready(carry)
        return carry, loss

    def epoch(self) -> float:
        """One epoch (the same permutation stream as train.py); returns its seconds."""
        t0 = time.perf_counter()
        order = self.rng.permutation(self.n).astype(np.int32)
        self.carry, loss = self._run(self.carry, order)
        seconds = time.perf_counter() - t0
        self.last_loss = float(jnp.mean(loss))
        return seconds

    def warm_up(self) -> float:
        """Compile (or find compiled) the scan and the short-batch step at the real shapes, on the
        initial state without keeping the result, so the measured epochs start from the untouched
        weights.  Returns the seconds: XLA's compilation the first time in a process."""
        t0 = time.perf_counter()
        self._run(self.carry, np.zeros(self.n, np.int32))
        self.compile_seconds = time.perf_counter() - t0
        return self.compile_seconds


class JaxGemms:
    """The 8 GEMMs of train_speed.py's floor (GemmFloor) at the same shapes, through XLA,
    run as JAX runs training: the full batches of an epoch in one jitted `lax.scan` (no
    Python per step), a short last batch as one more call.  Each step slices its batch
    input and output gradients from pools of random rows at a moving offset, so no
    product is loop-invariant (XLA would hoist it out of the loop), and the products are
    the loop's carry, so none is dead code.  With the floor, it says whether XLA's GEMMs
    are faster than NumPy's BLAS at these shapes (then no NumPy engine can reach JAX)."""

    POOL = 4096  # rows of the random pools the batches are sliced from

    def __init__(self, sizes: tuple[int, ...], batch_sizes: list[int], seed: int):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        d0, d1, d2, d3 = sizes
        self.batch, self.sizes = batch_sizes[0], batch_sizes
        pool = max(self.POOL, self.batch)
        self.x = jnp.asarray(rng.random((pool, d0), dtype=f32))
        self.w = [
            jnp.asarray(rng.standard_normal((o, i), dtype=f32)) for i, o in zip(sizes, sizes[1:])
        ]
        self.gh = [jnp.asarray(rng.standard_normal((pool, d), dtype=f32)) for d in (d1, d2, d3)]
        full = sum(1 for b in batch_sizes if b == self.batch)
        self.offsets = jnp.asarray(
            (np.arange(full) * self.batch) % (pool - self.batch + 1), dtype=jnp.int32
        )
        self.short = [b for b in batch_sizes if b != self.batch]

        def products(x, w1, w2, w3, g1, g2, g3):
            h1 = x @ w1.T
            h2 = h1 @ w2.T
            return h2 @ w3.T, g3.T @ h2, g3 @ w3, g2.T @ h1, g2 @ w2, g1.T @ x

        self._products = jax.jit(products)

        def epoch(carry, offsets, xp, w1, w2, w3, g1p, g2p, g3p):
            b = self.batch

            def step(carry, off):
                take = lambda a: jax.lax.dynamic_slice_in_dim(a, off, b)  # noqa: E731
                return products(take(xp), w1, w2, w3, take(g1p), take(g2p), take(g3p)), None

            return jax.lax.scan(step, carry, offsets)[0]

        self._epoch = jax.jit(epoch)
        # the carry's first value: the products of the first batch
        self._first = self._products(
            self.x[: self.batch], *self.w, *(g[: self.batch] for g in self.gh)
        )
        self.epoch()  # untimed: compiles the scan and the short batch's program

    def epoch(self) -> None:
        out = self._epoch(self._first, self.offsets, self.x, *self.w, *self.gh)
        for b in self.short:
            out = self._products(self.x[:b], *self.w, *(g[:b] for g in self.gh))
        jax.block_until_ready(out)
