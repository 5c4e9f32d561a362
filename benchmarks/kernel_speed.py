"""Each fused kernel of fcspec/kernels.py against the NumPy calls it replaces.

One process, the op-table and loss calls themselves (ops.FUSIONS against linear's
bias add and the activation's row, CrossEntropy with and without its kernels,
data.Split.rows with and without the gather kernel), best of `--repeat` x
`--number` calls each, so a busy machine inflates both sides less than a whole
epoch.  Before timing, every pair is checked to give the same bits.

    python benchmarks/kernel_speed.py [--number 300] [--repeat 15]

With `--steps`, whole training steps instead (train.Step over train.Batches on
MNIST 784-128-64-10, benchmarks/train_speed.py's cells): kernels on and off in
alternating blocks of `--number` steps, `--repeat` rounds after one warm-up
round, the median per-step time of each side and the median of the per-round
ratios (needs MNIST: FCSPEC_DATA).
"""

from __future__ import annotations

import argparse
import os
import sys
import timeit

import numpy as np

from fcspec import data as fdata
from fcspec import ir, kernels, losses, ops


def best_us(f, number: int, repeat: int) -> float:
    return min(timeit.repeat(f, number=number, repeat=repeat)) / number * 1e6


def _linear(m: int) -> ir.Layer:
    attrs = {"units": m, "bias": True, "init": "default"}
    return ir.Layer("fc", "linear", attrs, (3,), (m,), {"weight": (m, 3), "bias": (m,)})


def _switch(on: bool, loaded) -> None:
    kernels._KERNELS, kernels._TRIED = (loaded if on else None), True


def _relu_case(n: int, m: int, rng, number: int, repeat: int) -> list[tuple[str, float, float]]:
    x = rng.standard_normal((n, m)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    gy = rng.standard_normal((n, m)).astype(np.float32)
    lin = ops.Context(_linear(m), {"bias": b}, {"bias": np.zeros(m, np.float32)})
    act = ir.Layer("relu_1", "relu", {}, (m,), (m,), {})
    fused, plain = ops.Context(act), ops.Context(act)
    fused.below = lin
    f_op, p_op = ops.FUSIONS["relu"], ops.OPS["relu"]

    def fused_forward():
        return f_op.forward(fused, x)

    def numpy_forward():
        np.add(x, b, out=x)
        return p_op.forward(plain, x)

    x0 = x.copy()
    y = fused_forward()  # x += b in place on both sides: check from the same start
    fused_bits = (x.tobytes(), y.tobytes())
    x[:] = x0
    numpy_forward()
    assert (x.tobytes(), plain.buf("y", x.shape).tobytes()) == fused_bits

    def fused_backward():
        f_op.backward(fused, x, y, gy, True)

    def numpy_backward():
        ops.bias_grad_into(p_op.backward(plain, x, y, gy, True), lin.g["bias"])

    return [
        (f"bias + relu forward, batch {n} x {m}",
         best_us(fused_forward, number, repeat), best_us(numpy_forward, number, repeat)),
        (f"relu backward + bias gradient, batch {n} x {m}",
         best_us(fused_backward, number, repeat), best_us(numpy_backward, number, repeat)),
    ]  # fmt: skip


def _on_and_off(call, number: int, repeat: int, loaded) -> list[float]:
    """[kernel us, NumPy us] of `call`, after checking both give the same bits."""
    timed, got = [], []
    for on in (True, False):
        _switch(on, loaded)
        got.append(call())
        timed.append(best_us(call, number, repeat))
    _switch(True, loaded)
    assert got[0] == got[1]
    return timed


def rows(number: int, repeat: int, batches=(32, 256)) -> list[tuple[str, float, float]]:
    """(part, kernel us, NumPy us) per part and batch size."""
    if not kernels.available():
        sys.exit("numba is not installed (pip install -e '.[fast]') or FCSPEC_KERNELS=numpy")
    loaded = kernels._KERNELS
    rng = np.random.default_rng(0)
    out = []
    samples = rng.integers(0, 256, (60000, 784)).astype(np.uint8)
    split = fdata.Split(
        samples, np.zeros(60000, np.int64), fdata.Preprocess.identity((784,), 255.0)
    )
    for n in batches:
        for m in (128, 64):
            out += _relu_case(n, m, rng, number, repeat)
        z = (rng.standard_normal((n, 10)) * 3).astype(np.float32)
        t = rng.integers(0, 10, n)
        ce = losses.make_loss(ir.Loss("cross_entropy", {}))
        us = _on_and_off(lambda: ce.value_and_grad(z, t)[1].tobytes(), number, repeat, loaded)  # noqa: B023
        out.append((f"cross-entropy value and gradient, batch {n} x 10", *us))
        idx = rng.permutation(60000)[:n]
        buf = np.empty((n, 784), np.float32)
        call = lambda: split.rows(idx, buf).tobytes()  # noqa: B023, E731
        out.append((f"gather + scale of 784 bytes a row, batch {n}",
                    *_on_and_off(call, max(1, number // 3), repeat, loaded)))  # fmt: skip
    return out


def steps(number: int, repeat: int, batches=(32, 256), optimizers=("sgd", "adam")) -> list[str]:
    """Per cell: step, gather alone and forward + loss + backward on a fixed batch, kernels
    on against off in alternating blocks (one line per cell)."""
    import importlib.util
    import statistics
    import time
    from pathlib import Path

    from fcspec import interpreter, optim, train

    path = Path(__file__).with_name("train_speed.py")
    spec = importlib.util.spec_from_file_location("train_speed", path)
    ts = importlib.util.module_from_spec(spec)
    sys.modules["train_speed"] = ts
    spec.loader.exec_module(ts)
    if not kernels.available():
        sys.exit("numba is not installed (pip install -e '.[fast]') or FCSPEC_KERNELS=numpy")
    loaded = kernels._KERNELS
    lines = []
    for opt_name in optimizers:
        for batch in batches:
            cell = ts.Cell(opt_name, batch, 0)
            n, lr = len(cell.data.train), float(cell.spec.optimizer.lr)
            order = np.random.default_rng(0).permutation(n)
            sides = {}
            for on in (True, False):
                _switch(on, loaded)
                net = interpreter.Network(cell.spec.model, rng=np.random.default_rng([0, 1]))
                loss_fn = losses.make_loss(cell.spec.loss)
                opt = optim.make_optimizer(cell.spec.optimizer, net.theta.size)
                step = train.Step(cell.spec, net, loss_fn, opt, np.random.default_rng([0, 2]))
                batches_ = train.Batches(cell.data.train, batch, shuffle=True)
                stream = (b for _ in iter(int, 1) for b in batches_.epoch(order))
                sides[on] = (net, loss_fn, step, stream)
            times = {part: {True: [], False: []} for part in ("step", "gather", "fwd+loss+bwd")}
            for r in range(repeat + 1):  # round 0 warms up (compilation, buffers)
                for on in (True, False) if r % 2 else (False, True):
                    _switch(on, loaded)
                    net, loss_fn, step, stream = sides[on]
                    t0 = time.perf_counter()
                    for _ in range(number):
                        _, b, xb, yb = next(stream)
                        if b == batch:
                            step(xb, yb, lr)
                    t1 = time.perf_counter()
                    for _ in range(number):
                        next(stream)
                    t2 = time.perf_counter()
                    _, _, xb, yb = next(stream)
                    xb, yb = xb.copy(), yb.copy()
                    t3 = time.perf_counter()
                    for _ in range(number):
                        _, g = loss_fn.value_and_grad(net.forward(xb, True, step.rng), yb)
                        net.backward(g)
                    t4 = time.perf_counter()
                    if r:
                        for part, t in zip(times, (t1 - t0, t2 - t1, t4 - t3)):
                            times[part][on].append(t / number * 1e6)
            _switch(True, loaded)
            parts = []
            for part, v in times.items():
                ratio = statistics.median(a / b for a, b in zip(v[True], v[False]))
                parts.append(
                    f"{part} {statistics.median(v[True]):.0f} us with kernels, "
                    f"{statistics.median(v[False]):.0f} us without, paired {ratio:.2f}"
                )
            lines.append(f"{opt_name} b{batch}: " + "; ".join(parts))
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--number", type=int, default=300, help="calls per timing (default 300)")
    ap.add_argument("--repeat", type=int, default=15, help="timings, the best kept (default 15)")
    ap.add_argument(
        "--steps",
        action="store_true",
        help="whole training steps on MNIST instead, kernels on and off in alternating blocks "
        "of --number steps, --repeat rounds (try --number 200 --repeat 7)",
    )
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    if args.steps:
        print(f"1-minute load average {load:.2f}; {args.repeat} rounds of {args.number} steps")
        for line in steps(args.number, args.repeat):
            print(line, flush=True)
        print(f"1-minute load average at the end {os.getloadavg()[0]:.2f}")
        return 0
    print(f"1-minute load average {load:.2f}; best of {args.repeat} x {args.number} calls\n")
    print("| part | kernel us | NumPy us | NumPy / kernel |\n|---|---|---|---|")
    for part, k, p in rows(args.number, args.repeat):
        print(f"| {part} | {k:.1f} | {p:.1f} | {p / k:.2f} |")
    print(f"\n1-minute load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
