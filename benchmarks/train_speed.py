"""Training speed: fcspec versus PyTorch CPU eager (and scikit-learn when installed).

The issue "Performance: train faster than PyTorch CPU, close to the GEMM floor"
asks for this table.  Everything is MNIST (the real 60000 x 784 training set,
scaled by 1/255), the 784-128-64-10 ReLU network, cross_entropy, seeded
shuffling, float32, for batch 32 / 64 / 128 / 256 with SGD (lr 0.01,
momentum 0.9) and with Adam (lr 1e-3).  Engines:

- fcspec run   `fcspec.train.run(spec, epochs=E, quiet=True, prepared=...)` on a spec
               compiled by `fcspec.check.compile_source`: the real training path.  The
               seconds are the per-epoch `seconds` train.run records itself (the loop
               over the batches, without data loading or checkpoint writing).  MNIST is
               decoded once (`fcspec.data.prepare`) and handed to every round as
               `prepared`, so rounds do not pay the 1 s decode.
- fcspec loop  train.run's own batch stream and step (`train.Batches`, `train.Step`:
               forward, loss, backward, finiteness checks, optimizer step) without the
               rest of its epoch: what the per-epoch bookkeeping of train.run (accuracy
               count, progress, validation) costs is the difference between the two.
- numpy by hand  the issue's "carefully written float32 NumPy loop" (numpy_loop.py):
               this one network written out by hand for speed, over the float32 data
               torch reads.  Not a goal but its yardstick: hand/torch is how far NumPy
               itself gets here, fcspec/hand what the general interpreter adds.
- torch        the equivalent nn.Sequential with torch.optim.SGD / Adam (defaults,
               as a user writes them), over float32 tensors sharing memory with one
               float32 copy of the scaled data (a TensorDataset program's layout;
               fcspec itself keeps MNIST's bytes and converts each batch as it
               gathers it), the same batch indices (the same permutation
               stream as train.py), loss.item() and the correct count per step as a
               tutorial loop keeps them.  torch.set_num_threads(THREADS).
- sklearn      MLPClassifier.partial_fit once per epoch, when scikit-learn is
               installed (an optional column; it runs fewer rounds).
- floor        the 8 GEMMs of one epoch at exactly the training shapes (forward 3,
               backward 5: three weight gradients and the input gradients of fc3
               and fc2, which fc1 does not need), with NumPy float32 and out= buffers.
               Its seconds are the GEMM floor; its GFLOP/s is NumPy's throughput.
- torch GEMMs  the same GEMMs through torch.matmul (torch's BLAS and threads).
- JAX GEMMs    the same GEMMs through XLA (one jitted lax.scan over the epoch's
               batches, as JAX trains), when JAX is installed.

Engines run in alternating rounds inside one process (round r runs every engine
for E epochs, in a rotated order), so a slow spell of the machine hits all of them
alike.  Seconds per epoch are medians over all measured epochs; the ratios the
goals are judged on are paired: the median over rounds of the ratio within a
round, since the machines are shared and a slow spell lasts longer than a round.

Memory (each measurement in a fresh subprocess, so nothing else is resident):
resident size once the data is loaded versus the peak during one epoch of
training (the peak counter is reset after loading via /proc/self/clear_refs, so
the transient of decoding MNIST does not count).  fcspec's compiled kernels are
loaded by an untimed epoch on 512 rows before that, and their code's resident size is its own
column: library code, a fixed cost per process, as torch's libraries are.  And the wall time of
`fcspec check specs/mnist.fc` (a subprocess, median of several).

    python benchmarks/train_speed.py                     # print the tables
    python benchmarks/train_speed.py --quick             # a smoke run (about a minute)
    python benchmarks/train_speed.py --write docs/performance.md
    python benchmarks/train_speed.py --assert-goals      # exit 1 when a goal is missed
    python benchmarks/train_speed.py --profile           # cProfile of fcspec's step
    python benchmarks/train_speed.py --unset-openblas-env  # re-exec without OPENBLAS_CORETYPE / _L2_SIZE

`--write` replaces only the section between `<!-- training:begin -->` and
`<!-- training:end -->` (other benchmarks own other sections of that file).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_REMOVED_ENV = "FCSPEC_BENCH_REMOVED_OPENBLAS_ENV"  # what --unset-openblas-env took out


def _arg_value(argv: list[str], name: str, default: str) -> str:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def _prepare_process(argv: list[str]) -> None:
    """Environment work that must happen before NumPy is imported.

    OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE and its thread count
    when it is loaded, so unsetting them means starting a new interpreter, and
    the thread count has to be in the environment before `import numpy`.
    """
    if "--unset-openblas-env" in argv and any(v in os.environ for v in OPENBLAS_VARS):
        env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARS}
        env[_REMOVED_ENV] = " ".join(
            f"{k}={os.environ[k]}" for k in OPENBLAS_VARS if k in os.environ
        )
        os.execve(sys.executable, [sys.executable, str(Path(__file__).resolve()), *argv], env)
    threads = _arg_value(argv, "--threads", "2")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    if not os.environ.get("FCSPEC_DATA"):
        # The shared data folder (never copied into the repo): beside the checkout.
        for cand in (REPO.parent / "shared" / "data",):
            if (cand / "mnist").is_dir():
                os.environ["FCSPEC_DATA"] = str(cand)
                break


if __name__ == "__main__":
    _prepare_process(sys.argv[1:])

import numpy as np  # noqa: E402  (after the environment set-up above)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported
from common import machine_line, replace_section, user_env  # noqa: E402
from numpy_loop import HandLoop  # noqa: E402

BEGIN = "<!-- training:begin -->"
LIBRARIES = {"torch": "torch", "scikit-learn": "sklearn"}  # versions in the Machine line
END = "<!-- training:end -->"
LARGE_BEGIN = "<!-- training-large:begin -->"  # the --network 784-800-800-10 table
LARGE_END = "<!-- training-large:end -->"
BATCHES = (32, 64, 128, 256)
OPTIMIZERS = {  # name -> (fcspec spec text, torch constructor)
    "sgd": "sgd(lr = 0.01, momentum = 0.9)",
    "adam": "adam(lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8)",
}
SIZES = (784, 128, 64, 10)
GOAL_RATIO = 0.6  # fcspec / torch epoch time, every cell
GOAL_FLOOR = 1.6  # fcspec / GEMM floor at batch 256
GOAL_MEMORY_MB = 50.0  # training's addition to the resident data
GOAL_CHECK_S = 0.3  # `fcspec check specs/mnist.fc`
WARMUP_STEPS = 3  # untimed steps before torch's (and the bare loop's) first timed epoch

NETWORKS = {  # --network: the issue's tutorial MLP, and Simard et al. (2003)'s larger one
    "784-128-64-10": (784, 128, 64, 10),
    "784-800-800-10": (784, 800, 800, 10),
}
GOAL_JAX = 1.5  # fcspec / JAX epoch time, every cell
GOAL_LARGE = 1.0  # on 784-800-800-10: fcspec at or under both torch and JAX
GOAL_FIRST_EPOCH_S = 2.0  # first-epoch extra (compilation) of fcspec and of the kernels


def set_network(name: str) -> None:
    """Make `name` the network every engine trains (the module-level SIZES they all read)."""
    global SIZES
    SIZES = NETWORKS[name]


def _model_lines() -> str:
    layers = [
        f"    fc{i} = linear({w})" + (" -> relu" if i < len(SIZES) - 1 else "")
        for i, w in enumerate(SIZES[1:], start=1)
    ]
    return "\n".join(layers)


SPEC_TEMPLATE = """\
# written by benchmarks/train_speed.py: the MNIST network of the table
model FullyConnectedNet {{
    input [1, 28, 28]
    flatten
{model}
}}

loss      cross_entropy
optimizer {optimizer}

data {{
    train = mnist(split = "train")
    scale = 255
}}

train {{
    epochs  = 1
    batch   = {batch}
    shuffle = true
    seed    = {seed}
}}
"""


def make_spec(optimizer: str, batch: int, seed: int):
    from fcspec import check

    text = SPEC_TEMPLATE.format(
        model=_model_lines(), optimizer=OPTIMIZERS[optimizer], batch=batch, seed=seed
    )
    return check.compile_source(
        text, str(REPO / "benchmarks" / f"train_speed_{optimizer}_{batch}.fc")
    )


# ---------------------------------------------------------------------------
# Data: decoded once, handed to every fcspec round and shared with torch.

_PREPARED: dict = {}


def prepared_data(spec):
    """fcspec.data.prepare(spec), computed once per data section (train.run takes it as
    `prepared`; it never writes into it)."""
    from fcspec import data as fdata

    key = repr(spec.data)
    if key not in _PREPARED:
        _PREPARED[key] = fdata.prepare(spec)
    return _PREPARED[key]


def dense_x(cell) -> np.ndarray:
    """The float32 preprocessed training samples torch and sklearn read, built once per data section
    (fcspec keeps MNIST's bytes and converts each batch as it is taken)."""
    key = ("dense", repr(cell.spec.data))
    if key not in _PREPARED:
        _PREPARED[key] = cell.data.train.x
    return _PREPARED[key]


# ---------------------------------------------------------------------------
# Engines.  Each `run_*(cell, epochs)` trains a fresh model for `epochs` epochs
# and returns the seconds of each epoch.


def batch_sizes(n: int, batch: int) -> list[int]:
    return [min(batch, n - s) for s in range(0, n, batch)]


def flops_per_epoch(n: int) -> int:
    """Multiply-adds x 2 of the 8 GEMMs per batch, summed over an epoch (independent of the batch)."""
    mats = sum(a * b for a, b in zip(SIZES, SIZES[1:]))  # 784*128 + 128*64 + 64*10
    input_grads = sum(a * b for a, b in zip(SIZES[1:-1], SIZES[2:]))  # every dx but fc1's
    return n * 2 * (2 * mats + input_grads)


class Cell:
    def __init__(self, optimizer: str, batch: int, seed: int):
        self.optimizer, self.batch, self.seed = optimizer, batch, seed
        self.spec = make_spec(optimizer, batch, seed)
        self.data = prepared_data(self.spec)

    @property
    def label(self) -> str:
        return f"{self.optimizer} b{self.batch}"


def run_fcspec(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    from fcspec import train

    out = Path(tempfile.mkdtemp(dir=tmp))
    train.run(cell.spec, out_dir=out, epochs=epochs, quiet=True, prepared=cell.data)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [float(m["seconds"]) for m in history]


def run_fcspec_numpy(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    """`fcspec` with the compiled kernels switched off (what FCSPEC_KERNELS=numpy or a
    missing numba runs), in the same process, so its ratio to `fcspec` is paired."""
    from fcspec import kernels

    saved = kernels._KERNELS, kernels._TRIED
    kernels._KERNELS, kernels._TRIED = None, True  # available() is False
    try:
        return run_fcspec(cell, epochs, tmp)
    finally:
        kernels._KERNELS, kernels._TRIED = saved


def run_fcspec_loop(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    """train.run's own batch stream and step (`train.Batches`, `train.Step`: forward, loss,
    backward, the finiteness checks, optimizer step) without the rest of its epoch."""
    from fcspec import interpreter, losses, optim, train

    spec, seed = cell.spec, cell.seed
    n, batch = len(cell.data.train), cell.batch
    net = interpreter.Network(spec.model, rng=np.random.default_rng([seed, 1]))
    loss_fn = losses.make_loss(spec.loss)
    opt = optim.make_optimizer(spec.optimizer, net.theta.size)
    step = train.Step(spec, net, loss_fn, opt, np.random.default_rng([seed, 2]))
    batches = train.Batches(cell.data.train, batch, shuffle=True)
    rng = np.random.default_rng(seed)
    lr = float(spec.optimizer.lr)
    warmup = batches.epoch(np.arange(n))
    for _ in range(WARMUP_STEPS):  # untimed, as for torch
        _, _, xb, yb = next(warmup)
        step(xb, yb, lr)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for _, _, xb, yb in batches.epoch(rng.permutation(n)):
            step(xb, yb, lr)
        times.append(time.perf_counter() - t0)
    return times


def run_numpy_hand(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    """The issue's "carefully written float32 NumPy loop" (numpy_loop.py), over the float32
    data torch reads, the same batch indices, with the loss and correct count per step."""
    x, y = dense_x(cell).reshape(len(cell.data.train), -1), cell.data.train.y
    n, batch = x.shape[0], cell.batch
    loop = HandLoop(cell.optimizer, seed=cell.seed)
    rng = np.random.default_rng(cell.seed)
    for s in range(0, WARMUP_STEPS * batch, batch):  # untimed, as for torch
        loop.step(x, y, np.arange(s, s + batch))
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = rng.permutation(n)
        for s in range(0, n, batch):
            loop.step(x, y, order[s : s + batch])
        times.append(time.perf_counter() - t0)
    return times


def run_torch(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(cell.seed)
    layers: list = [torch.nn.Flatten()]
    for i, (a, b) in enumerate(zip(SIZES, SIZES[1:])):
        layers += [torch.nn.Linear(a, b)] + ([torch.nn.ReLU()] if i < len(SIZES) - 2 else [])
    model = torch.nn.Sequential(*layers)
    if cell.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    # from_numpy shares the arrays: no copy of the data set
    xt = torch.from_numpy(dense_x(cell))
    yt = torch.from_numpy(cell.data.train.y)
    n, batch = xt.shape[0], cell.batch
    rng = np.random.default_rng(cell.seed)

    def step(idx):
        xb, yb = xt.index_select(0, idx), yt.index_select(0, idx)
        out = model(xb)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item() * idx.shape[0], int((out.argmax(1) == yb).sum())

    # Untimed first steps: autograd's and the allocator's first-call costs are not per-epoch costs.
    for s in range(0, WARMUP_STEPS * batch, batch):
        step(torch.arange(s, s + batch))
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        order = torch.from_numpy(rng.permutation(n))
        loss_sum, correct = 0.0, 0
        for s in range(0, n, batch):
            loss_b, correct_b = step(order[s : s + batch])
            loss_sum += loss_b
            correct += correct_b
        times.append(time.perf_counter() - t0)
    return times


def run_sklearn(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    import warnings

    from sklearn.neural_network import MLPClassifier

    x = dense_x(cell).reshape(len(cell.data.train), -1)  # a view, float32 kept by sklearn
    y = cell.data.train.y
    common = dict(
        hidden_layer_sizes=(128, 64),
        activation="relu",
        alpha=0.0,
        batch_size=cell.batch,
        shuffle=True,
        random_state=cell.seed,
        max_iter=1,
    )
    if cell.optimizer == "sgd":
        clf = MLPClassifier(
            solver="sgd", learning_rate_init=0.01, momentum=0.9, nesterovs_momentum=False, **common
        )
    else:
        clf = MLPClassifier(
            solver="adam", learning_rate_init=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-8, **common
        )
    classes = np.arange(10)
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            t0 = time.perf_counter()
            clf.partial_fit(x, y, classes=classes)
            times.append(time.perf_counter() - t0)
    return times


def run_jax(cell: Cell, epochs: int, tmp: Path) -> list[float]:
    """JAX: one `jax.jit`-compiled `lax.scan` over each epoch (jax_loop.py), the same network,
    optimizer formulas and permutation stream.  Compilation happens in an untimed warm-up (once per
    process and shape) and is recorded in JAX_COMPILE, reported apart."""
    from jax_loop import JaxLoop

    x = dense_x(cell).reshape(len(cell.data.train), -1)
    loop = JaxLoop(x, cell.data.train.y, SIZES, cell.optimizer, cell.batch, cell.seed)
    JAX_COMPILE.setdefault(cell.label, loop.warm_up())
    return [loop.epoch() for _ in range(epochs)]


JAX_COMPILE: dict[str, float] = {}  # cell label -> seconds of the first warm-up (compilation)


class GemmFloor:
    """The matmuls of one epoch at the training shapes, into preallocated outputs;
    with `torch`, the same arrays as tensors (shared memory) through torch.matmul."""

    def __init__(self, n: int, batch: int, seed: int, torch: bool = False):
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.sizes = batch_sizes(n, batch)
        d0, d1, d2, d3 = SIZES  # both networks of NETWORKS have three linear layers
        self.x = rng.random((batch, d0), dtype=f32)
        self.w = [rng.standard_normal((o, i), dtype=f32) for i, o in zip(SIZES, SIZES[1:])]
        self.h = [np.empty((batch, d), f32) for d in (d1, d2, d3)]  # layer outputs
        self.gh = [rng.standard_normal((batch, d), dtype=f32) for d in (d1, d2, d3)]  # their grads
        self.gw = [np.empty_like(w) for w in self.w]
        self.gx = [np.empty((batch, d), f32) for d in (d1, d2)]  # dx of fc2, fc3
        self.mm = np.matmul
        if torch:
            import torch as th

            self.mm = th.matmul
            t = th.from_numpy
            self.x = t(self.x)
            for name in ("w", "h", "gh", "gw", "gx"):
                setattr(self, name, [t(a) for a in getattr(self, name)])

    def epoch(self) -> None:
        mm = self.mm
        x, (w1, w2, w3), (h1, h2, h3) = self.x, self.w, self.h
        (g1, g2, g3), (gw1, gw2, gw3), (gx2, gx3) = self.gh, self.gw, self.gx
        for b in self.sizes:
            mm(x[:b], w1.T, out=h1[:b])
            mm(h1[:b], w2.T, out=h2[:b])
            mm(h2[:b], w3.T, out=h3[:b])
            mm(g3[:b].T, h2[:b], out=gw3)
            mm(g3[:b], w3, out=gx3[:b])
            mm(g2[:b].T, h1[:b], out=gw2)
            mm(g2[:b], w2, out=gx2[:b])
            mm(g1[:b].T, x[:b], out=gw1)


def run_floor_factory(n: int, torch: bool = False, make=None):
    """Time whole epochs of a floor: GemmFloor (NumPy's BLAS, or torch's with `torch`), or
    what `make(batch, seed)` builds (anything with `epoch()`), one per batch size and seed."""
    make = make or (lambda batch, seed: GemmFloor(n, batch, seed, torch=torch))
    floors: dict[tuple[int, int], Any] = {}

    def run_floor(cell: Cell, epochs: int, tmp: Path) -> list[float]:
        key = (cell.batch, cell.seed)
        if key not in floors:
            floors[key] = make(cell.batch, cell.seed)
        f = floors[key]
        times = []
        for _ in range(epochs):
            t0 = time.perf_counter()
            f.epoch()
            times.append(time.perf_counter() - t0)
        return times

    return run_floor


def run_jax_gemms_factory(n: int):
    """The floor's GEMMs through XLA (jax_loop.JaxGemms): JAX's GEMMs, not NumPy's BLAS."""
    from jax_loop import JaxGemms

    return run_floor_factory(
        n, make=lambda batch, seed: JaxGemms(SIZES, batch_sizes(n, batch), seed)
    )


def run_floor_one_thread_factory(n: int):
    """The same GEMMs with NumPy's BLAS limited to one thread (threadpoolctl): on a busy
    machine two BLAS threads can lose more to waiting for each other than they gain."""
    from threadpoolctl import threadpool_limits

    run_floor = run_floor_factory(n)

    def run_floor_1(cell: Cell, epochs: int, tmp: Path) -> list[float]:
        with threadpool_limits(1, "blas"):
            return run_floor(cell, epochs, tmp)

    return run_floor_1


def engines(args) -> dict:
    out = {"fcspec": run_fcspec}
    if not args.no_numpy_path:
        from fcspec import kernels

        if kernels.available():
            out["fcspec NumPy path"] = run_fcspec_numpy
        else:
            print("numba is not installed: fcspec runs its NumPy path only", file=sys.stderr)
    if not args.no_loop:
        out["fcspec loop"] = run_fcspec_loop
    if not args.no_hand:
        out["numpy by hand"] = run_numpy_hand
    try:
        import torch

        torch.set_num_threads(args.threads)
        out["torch"] = run_torch
    except ImportError:
        print("torch is not installed: no PyTorch column", file=sys.stderr)
    if not args.no_sklearn:
        try:
            import sklearn  # noqa: F401

            out["sklearn"] = run_sklearn
        except ImportError:
            pass
    if not args.no_jax:
        try:
            import jax  # noqa: F401

            out["jax"] = run_jax
        except ImportError:
            print(
                "JAX is not installed (pip install -e '.[bench]'): no JAX column", file=sys.stderr
            )
    return out


def measure(
    cells: list[Cell],
    runs: dict,
    rounds: int,
    epochs: int,
    sk_rounds: int,
    tmp: Path,
    log,
    settle: float,
) -> dict:
    """{cell label: {engine: [[epoch seconds of round 0], [round 1], ...]}} from alternating rounds.

    Rounds are kept apart so that ratios can be taken within a round: two engines
    measured seconds apart see the same machine, which the medians over a whole
    cell (minutes apart) do not guarantee here."""
    results: dict[str, dict[str, list[list[float]]]] = {}
    names = list(runs)
    for cell in cells:
        res = results.setdefault(cell.label, {k: [] for k in names})
        t_cell = time.perf_counter()
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:  # rotate who goes first
                if name == "sklearn" and r >= sk_rounds:
                    continue
                # A pause first: OpenBLAS and OpenMP worker threads spin-wait for a while after
                # their last job, and would otherwise take cores from the next engine.
                time.sleep(settle)
                res[name].append(runs[name](cell, epochs, tmp))
        meds = "  ".join(f"{k} {statistics.median(flat(v)):.3f}s" for k, v in res.items() if v)
        log(f"[{cell.label}] {meds}  ({time.perf_counter() - t_cell:.0f} s)")
    return results


def flat(rounds: list[list[float]]) -> list[float]:
    return [t for r in rounds for t in r]


def paired_ratio(a: list[list[float]], b: list[list[float]]) -> float | None:
    """Median over the rounds both engines ran of (a's median epoch / b's median epoch)."""
    ratios = [statistics.median(x) / statistics.median(y) for x, y in zip(a, b) if x and y]
    return statistics.median(ratios) if ratios else None


# ---------------------------------------------------------------------------
# Memory and `fcspec check`, each in a fresh process.


def _status() -> dict[str, int]:
    """VmRSS / VmHWM from /proc/self/status in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(engine: str, optimizer: str, batch: int, seed: int) -> dict:
    """Runs in the subprocess: resident size with the data loaded, then the peak over one epoch."""
    # everything train.run imports lazily, so module code is not counted as training memory
    from fcspec import interpreter, io, losses, optim, schedules, train  # noqa: F401

    if engine == "torch":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    cell = Cell(optimizer, batch, seed)  # loads (and keeps) the data
    x = dense_x(cell) if engine == "torch" else cell.data.train.samples  # what each engine reads
    data_mb = (x.nbytes + cell.data.train.y.nbytes) / 1e6
    code = 0
    if engine == "fcspec":
        # The compiled kernels are library code too (numba, LLVM and the machine code it
        # loads from its cache: a fixed cost per process, like torch's own libraries), so
        # one untimed epoch loads them first; their resident size is reported apart.
        # The warm-up trains on 512 of the rows, so its buffers are a few hundred KB.
        from fcspec import data as fdata

        before = _status()["VmRSS"]
        few = fdata.prepare_arrays(
            cell.spec, cell.data.train.samples[:512], cell.data.train.y[:512]
        )
        with tempfile.TemporaryDirectory() as tmp:
            train.run(cell.spec, out_dir=tmp, epochs=1, quiet=True, prepared=few)
        del few
        code = _status()["VmRSS"] - before
    loaded = _status()["VmRSS"]
    reset = _reset_peak()
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "torch":
            run_torch(cell, 1, Path(tmp))
        else:
            train.run(cell.spec, out_dir=tmp, epochs=1, quiet=True, prepared=cell.data)
    st = _status()
    return {
        "engine": engine,
        "optimizer": optimizer,
        "batch": batch,
        "data_mb": data_mb,
        "loaded_mb": loaded / 1e6,
        "peak_mb": st["VmHWM"] / 1e6,
        "added_mb": (st["VmHWM"] - loaded) / 1e6,
        "code_mb": code / 1e6,
        "peak_reset": reset,
    }


def measure_memory(cases: list[tuple[str, str, int]], seed: int, log) -> list[dict]:
    rows = []
    for engine, optimizer, batch in cases:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-child",
            f"{engine},{optimizer},{batch}",
            "--seed",
            str(seed),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if p.returncode != 0:
            log(f"memory measurement {engine} {optimizer} b{batch} failed:\n{p.stderr.strip()}")
            continue
        row = json.loads(p.stdout.strip().splitlines()[-1])
        log(
            f"[memory {engine} {optimizer} b{batch}] data loaded {row['loaded_mb']:.0f} MB, "
            f"training adds {row['added_mb']:.1f} MB"
        )
        rows.append(row)
    return rows


_CHECK_PROBE = """\
import sys
from fcspec import cli
sys.argv = ["fcspec", "check", sys.argv[1]]
try:
    cli.main()
except SystemExit:
    pass
heavy = ("onnx", "onnxruntime", "torch", "matplotlib", "tqdm", "lark")
print("\\nMODULES " + " ".join(m for m in heavy if m in sys.modules))
"""


FIRST_ROWS = 2048  # the first-epoch probe trains on this many MNIST rows


def first_epoch_child(optimizer: str, batch: int, seed: int) -> dict:
    """In a fresh process: one short epoch, whose first run loads (or compiles) the kernels,
    against the best of three more; the difference is what the first epoch pays."""
    from fcspec import data as fdata
    from fcspec import train

    cell = Cell(optimizer, batch, seed)
    few = fdata.prepare_arrays(
        cell.spec, cell.data.train.samples[:FIRST_ROWS], cell.data.train.y[:FIRST_ROWS]
    )

    def one() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            train.run(cell.spec, out_dir=tmp, epochs=1, quiet=True, prepared=few)
            return time.perf_counter() - t0

    first = one()
    return {"first_s": first, "extra_s": first - min(one() for _ in range(3))}


def measure_first_epoch(optimizer: str, batch: int, repeats: int, seed: int) -> dict:
    """The first epoch's extra seconds in a new process, with numba's cache empty (the
    first run on a machine: every kernel the run uses is compiled) and then filled (every
    later run: numba imported, the machine code loaded), medians of `repeats` pairs; each
    pair has its own NUMBA_CACHE_DIR."""
    cold, warm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "NUMBA_CACHE_DIR": cache}
            for into in (cold, warm):
                p = subprocess.run(
                    [sys.executable, __file__, "--first-child", f"{optimizer},{batch}",
                     "--seed", str(seed)],
                    capture_output=True, text=True, env=env, check=True,
                )  # fmt: skip
                into.append(json.loads(p.stdout.splitlines()[-1])["extra_s"])
    return {
        "cell": f"{optimizer} b{batch}",
        "cold_s": statistics.median(cold),
        "warm_s": statistics.median(warm),
        "cold_all": cold,
        "repeats": repeats,
    }


def measure_check(spec_path: Path, repeats: int) -> dict:
    """Wall time of `fcspec check SPEC` (the installed command), and what it imports."""
    exe = Path(sys.executable).parent / "fcspec"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fcspec.cli"]
    times, ok = [], True
    env = user_env()  # with the bytecode cache, as a user's install runs
    subprocess.run(cmd + ["check", str(spec_path)], capture_output=True, env=env)  # fills it
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = subprocess.run(cmd + ["check", str(spec_path)], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t0)
        ok = ok and p.returncode == 0
    p = subprocess.run(
        [sys.executable, "-c", _CHECK_PROBE, str(spec_path)], capture_output=True, text=True
    )
    mods = ""
    for line in p.stdout.splitlines():
        if line.startswith("MODULES"):
            mods = line[len("MODULES") :].strip()
    # Python's own start-up, for scale: the part of the time fcspec cannot remove
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"])
    bare = time.perf_counter() - t0
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "ok": ok,
        "imports": mods,
        "python_startup_s": bare,
        "command": " ".join(cmd[-1:] + ["check"]),
    }


# ---------------------------------------------------------------------------
# Environment.


def blas_info() -> dict:
    """OpenBLAS core type, threads and build of NumPy's BLAS (threadpoolctl when installed)."""
    info: dict = {}
    try:
        from threadpoolctl import threadpool_info

        for p in threadpool_info():
            if p.get("internal_api") == "openblas" and "numpy" in p.get("filepath", ""):
                info.update(
                    core=p.get("architecture"),
                    threads=p.get("num_threads"),
                    version=p.get("version"),
                    source="threadpoolctl",
                )
                break
    except ImportError:
        pass
    if not info:
        # No threadpoolctl: ask NumPy's bundled OpenBLAS directly (scipy-openblas symbol names).
        import ctypes

        with open("/proc/self/maps") as f:
            libs = sorted(
                {ln.split()[-1] for ln in f if "openblas" in ln and ln.rstrip().endswith(".so")}
            )
        for lib_path in libs:
            try:
                lib = ctypes.CDLL(lib_path)
            except OSError:
                continue
            for prefix in ("scipy_openblas_", "openblas_"):
                for suffix in ("64_", ""):
                    core = getattr(lib, f"{prefix}get_corename{suffix}", None)
                    nth = getattr(lib, f"{prefix}get_num_threads{suffix}", None)
                    if core is not None and nth is not None:
                        core.restype = ctypes.c_char_p
                        info.update(
                            core=core().decode(), threads=int(nth()), source="OpenBLAS via ctypes"
                        )
                        break
                if info:
                    break
            if info:
                break
    if not info:
        info["source"] = "unknown (numpy.show_config() for the build)"
    info["env"] = {v: os.environ[v] for v in OPENBLAS_VARS if v in os.environ}
    info["removed_env"] = os.environ.get(_REMOVED_ENV, "")
    return info


def blas_line(info: dict) -> str:
    s = (
        f"NumPy's BLAS: OpenBLAS core {info.get('core', '?')}, {info.get('threads', '?')} threads "
        f"({info['source']})"
    )
    if info["env"]:
        s += "; set: " + ", ".join(f"{k}={v}" for k, v in info["env"].items())
    else:
        s += "; OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset"
    if info["removed_env"]:
        s += f" (removed by --unset-openblas-env: {info['removed_env']})"
    return s


# ---------------------------------------------------------------------------
# Report.


def med(v: list[float]) -> float | None:
    return statistics.median(v) if v else None


def fmt_s(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def speed_table(cells: list[Cell], results: dict, n: int) -> tuple[str, list[dict]]:
    gflop = flops_per_epoch(n) / 1e9
    have = {k for r in results.values() for k, v in r.items() if v}
    head = ["cell", "fcspec s/epoch"]
    if "fcspec loop" in have:
        head.append("fcspec loop s/epoch")
    if "fcspec NumPy path" in have:
        head += ["fcspec NumPy path s/epoch", "kernels/NumPy path (paired)"]
    head += ["torch s/epoch", "fcspec/torch (paired)", f"<= {GOAL_RATIO}?", "ratio of medians"]
    if "numpy by hand" in have:
        head += ["numpy by hand s/epoch", "hand/torch (paired)", "fcspec/hand (paired)"]
    if "sklearn" in have:
        head.append("sklearn s/epoch")
    if "jax" in have:
        head += ["JAX s/epoch", "fcspec/JAX (paired)", f"<= {GOAL_JAX}?", "JAX compile s"]
    head += ["fcspec GFLOP/s", "numpy GEMM GFLOP/s", "floor s/epoch", "fcspec/floor (paired)"]
    if "torch GEMMs" in have:
        head.append("torch GEMMs s/epoch")
    if "JAX GEMMs" in have:
        head += ["JAX GEMMs s/epoch", "JAX GEMMs/floor (paired)"]
    if "floor 1 thread" in have:
        head.append("floor 1 thread s/epoch")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = []
    ratio_s = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    for cell in cells:
        r = results[cell.label]
        fr, tr, flr = r.get("fcspec", []), r.get("torch", []), r.get("floor", [])
        f, t, fl = med(flat(fr)), med(flat(tr)), med(flat(flr))
        ratio = paired_ratio(fr, tr)
        row = {
            "cell": cell.label,
            "optimizer": cell.optimizer,
            "batch": cell.batch,
            "fcspec": f,
            "fcspec_loop": med(flat(r.get("fcspec loop", []))),
            "fcspec_numpy": med(flat(r.get("fcspec NumPy path", []))),
            "kernels_ratio": paired_ratio(fr, r.get("fcspec NumPy path", [])),
            "torch": t,
            "ratio": ratio,
            "ratio_of_medians": f / t if f and t else None,
            "sklearn": med(flat(r.get("sklearn", []))),
            "floor": fl,
            "floor_ratio": paired_ratio(fr, flr),
            "hand": med(flat(r.get("numpy by hand", []))),
            "hand_ratio": paired_ratio(r.get("numpy by hand", []), tr),
            "fcspec_hand_ratio": paired_ratio(fr, r.get("numpy by hand", [])),
            "hand_floor_ratio": paired_ratio(r.get("numpy by hand", []), flr),
            "floor1": med(flat(r.get("floor 1 thread", []))),
            "torch_floor": med(flat(r.get("torch GEMMs", []))),
            "jax_floor": med(flat(r.get("JAX GEMMs", []))),
            "jax_floor_ratio": paired_ratio(r.get("JAX GEMMs", []), flr),
            "jax": med(flat(r.get("jax", []))),
            "jax_ratio": paired_ratio(fr, r.get("jax", [])),
            "jax_compile": JAX_COMPILE.get(cell.label),
        }
        rows.append(row)
        cells_out = [f"{cell.optimizer}, batch {cell.batch}", fmt_s(f)]
        if "fcspec loop" in have:
            cells_out.append(fmt_s(row["fcspec_loop"]))
        if "fcspec NumPy path" in have:
            cells_out += [fmt_s(row["fcspec_numpy"]), ratio_s(row["kernels_ratio"])]
        cells_out += [
            fmt_s(t),
            ratio_s(ratio),
            "-" if ratio is None else ("yes" if ratio <= GOAL_RATIO else "**no**"),
            ratio_s(row["ratio_of_medians"]),
        ]
        if "numpy by hand" in have:
            cells_out += [
                fmt_s(row["hand"]),
                ratio_s(row["hand_ratio"]),
                ratio_s(row["fcspec_hand_ratio"]),
            ]
        if "sklearn" in have:
            cells_out.append(fmt_s(row["sklearn"]))
        if "jax" in have:
            jr = row["jax_ratio"]
            cells_out += [
                fmt_s(row["jax"]),
                ratio_s(jr),
                "-" if jr is None else ("yes" if jr <= GOAL_JAX else "**no**"),
                "-" if row["jax_compile"] is None else f"{row['jax_compile']:.1f}",
            ]
        cells_out += [
            "-" if not f else f"{gflop / f:.1f}",
            "-" if not fl else f"{gflop / fl:.1f}",
            fmt_s(fl),
            ratio_s(row["floor_ratio"]),
        ]
        if "torch GEMMs" in have:
            cells_out.append(fmt_s(row["torch_floor"]))
        if "JAX GEMMs" in have:
            cells_out += [fmt_s(row["jax_floor"]), ratio_s(row["jax_floor_ratio"])]
        if "floor 1 thread" in have:
            cells_out.append(fmt_s(row["floor1"]))
        lines.append("| " + " | ".join(cells_out) + " |")
    return "\n".join(lines), rows


def memory_table(rows: list[dict]) -> str:
    lines = [
        "| engine | cell | data (x, y) MB | compiled kernels' code MB | resident with data MB | "
        f"peak in training MB | training adds MB | <= {GOAL_MEMORY_MB:.0f}? |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "yes" if r["added_mb"] <= GOAL_MEMORY_MB else "**no**"
        if r["engine"] != "fcspec":
            ok = "(no goal)"
        code = f"{r['code_mb']:.0f}" if r.get("code_mb") else "-"
        lines.append(
            f"| {r['engine']} | {r['optimizer']}, batch {r['batch']} | {r['data_mb']:.0f} | "
            f"{code} | {r['loaded_mb']:.0f} | {r['peak_mb']:.0f} | {r['added_mb']:.1f} | {ok} |"
        )
    return "\n".join(lines)


def goals(
    rows: list[dict], mem: list[dict], chk: dict | None, first: dict | None = None
) -> list[tuple[str, bool | None, str]]:
    out = []
    ratios = [(r["cell"], r["ratio"]) for r in rows if r["ratio"] is not None]
    if ratios:
        worst = max(ratios, key=lambda t: t[1])
        out.append(
            (
                f"fcspec/torch <= {GOAL_RATIO} in every cell",
                all(v <= GOAL_RATIO for _, v in ratios),
                f"worst {worst[1]:.2f} ({worst[0]}), {sum(v <= GOAL_RATIO for _, v in ratios)} "
                f"of {len(ratios)} cells met",
            )
        )
    hand = [(r["cell"], r["hand_ratio"]) for r in rows if r["hand_ratio"] is not None]
    if hand:  # not a goal of fcspec's: how far NumPy itself gets, for reading the one above
        worst = max(hand, key=lambda t: t[1])
        out.append(
            (
                f"(reference, no goal) the hand-written NumPy loop: hand/torch <= {GOAL_RATIO}",
                None,
                f"worst {worst[1]:.2f} ({worst[0]}), {sum(v <= GOAL_RATIO for _, v in hand)} "
                f"of {len(hand)} cells",
            )
        )
    jx = [(r["cell"], r["jax_ratio"]) for r in rows if r["jax_ratio"] is not None]
    if jx:
        worst = max(jx, key=lambda t: t[1])
        out.append(
            (
                f"fcspec/JAX <= {GOAL_JAX} in every cell",
                all(v <= GOAL_JAX for _, v in jx),
                f"worst {worst[1]:.2f} ({worst[0]}), {sum(v <= GOAL_JAX for _, v in jx)} "
                f"of {len(jx)} cells met",
            )
        )
    if SIZES != NETWORKS["784-128-64-10"]:
        both = [
            (r["cell"], max(r["ratio"], r["jax_ratio"] or 0))
            for r in rows
            if r["ratio"] is not None
        ]
        if both:
            out.append(
                (
                    f"on {'-'.join(map(str, SIZES))}: fcspec at or under both torch and JAX",
                    all(v <= GOAL_LARGE for _, v in both),
                    ", ".join(f"{c}: {v:.2f}" for c, v in both),
                )
            )
    fl = [(r["cell"], r["floor_ratio"]) for r in rows if r["batch"] == 256 and r["floor_ratio"]]
    if fl:
        out.append(
            (
                f"fcspec <= {GOAL_FLOOR} x the GEMM floor at batch 256",
                all(v <= GOAL_FLOOR for _, v in fl),
                ", ".join(f"{c}: {v:.2f}" for c, v in fl),
            )
        )
    hfl = [
        (r["cell"], r["hand_floor_ratio"])
        for r in rows
        if r["batch"] == 256 and r["hand_floor_ratio"]
    ]
    if hfl:
        out.append(
            (
                "(reference, no goal) the hand-written NumPy loop over the GEMM floor at batch 256",
                None,
                ", ".join(f"{c}: {v:.2f}" for c, v in hfl),
            )
        )
    fm = [r for r in mem if r["engine"] == "fcspec"]
    if fm:
        worst = max(fm, key=lambda r: r["added_mb"])
        out.append(
            (
                f"training adds <= {GOAL_MEMORY_MB:.0f} MB to the resident data",
                all(r["added_mb"] <= GOAL_MEMORY_MB for r in fm),
                f"worst {worst['added_mb']:.1f} MB ({worst['optimizer']}, batch {worst['batch']})",
            )
        )
    if first is not None:
        out.append(
            (
                f"the first epoch's extra time (compiling the kernels) < {GOAL_FIRST_EPOCH_S:.0f} s",
                first["cold_s"] < GOAL_FIRST_EPOCH_S,
                f"{first['cell']}, a new process: {first['cold_s']:.2f} s with numba's cache empty "
                f"(the first run on a machine; runs {', '.join(f'{v:.2f}' for v in first['cold_all'])}), "
                f"{first['warm_s']:.2f} s with it filled (every later run); medians of "
                f"{first['repeats']}",
            )
        )
    if chk is not None:
        out.append(
            (
                f"`fcspec check specs/mnist.fc` < {GOAL_CHECK_S} s",
                chk["ok"] and chk["median_s"] < GOAL_CHECK_S,
                f"median {chk['median_s']:.3f} s (Python alone starts in {chk['python_startup_s']:.3f} s); "
                f"imports: {chk['imports'] or 'none of onnx/onnxruntime/torch/matplotlib/tqdm/lark'}"
                + ("" if chk["ok"] else "; the command FAILED"),
            )
        )
    return out


def write_section(path: Path, body: str) -> None:
    """Replace this benchmark's section of the doc (between its markers)."""
    replace_section(path, body, BEGIN, END)


# ---------------------------------------------------------------------------
# Breakdown: what each part of the step adds to the GEMM floor, in place.

BREAKDOWN_BEGIN = "<!-- breakdown:begin -->"
BREAKDOWN_END = "<!-- breakdown:end -->"
STAGES = (
    ("floor", "the 8 GEMMs alone (the floor)"),
    ("fixed batch", "forward, loss and backward on one batch gathered once"),
    ("+ gather", "the same with each step's batch gathered (and converted) from the data set"),
    ("+ optimizer", "the same plus the optimizer step: fcspec's bare training step"),
    ("gather alone", "only the batch gathering"),
    ("optimizer alone", "only the optimizer steps"),
)


def breakdown_epochs(cell: Cell):
    """One epoch function per stage, sharing one network, loss and optimizer."""
    from fcspec import interpreter, losses, optim

    split, y = cell.data.train, cell.data.train.y
    n, batch = len(split), cell.batch
    net = interpreter.Network(cell.spec.model, rng=np.random.default_rng([cell.seed, 1]))
    loss_fn = losses.make_loss(cell.spec.loss)
    opt = optim.make_optimizer(cell.spec.optimizer, net.theta.size)
    lr = float(cell.spec.optimizer.lr)
    x_buf = np.empty((batch,) + split.samples.shape[1:], np.float32)
    y_buf = np.empty(batch, y.dtype)
    rng = np.random.default_rng(cell.seed)
    starts = range(0, n - batch + 1, batch)  # full batches only: every stage does the same steps
    floor = GemmFloor(len(starts) * batch, batch, cell.seed)

    def epoch(gather: bool, compute: bool, step: bool) -> float:
        order = rng.permutation(n)
        xb, yb = split.rows(order[:batch], x_buf), np.take(y, order[:batch], out=y_buf, mode="clip")
        t0 = time.perf_counter()
        for s in starts:
            if gather:
                idx = order[s : s + batch]
                xb, yb = split.rows(idx, x_buf), np.take(y, idx, out=y_buf, mode="clip")
            if compute:
                _, g = loss_fn.value_and_grad(net.forward(xb, True), yb)
                net.backward(g)
            if step:
                opt.step(net.theta, net.grad, lr)
        return time.perf_counter() - t0

    def floor_epoch() -> float:
        t0 = time.perf_counter()
        floor.epoch()
        return time.perf_counter() - t0

    fns = {
        "floor": floor_epoch,
        "fixed batch": lambda: epoch(False, True, False),
        "+ gather": lambda: epoch(True, True, False),
        "+ optimizer": lambda: epoch(True, True, True),
        "gather alone": lambda: epoch(True, False, False),
        "optimizer alone": lambda: epoch(False, False, True),
    }
    return fns, len(starts)


def breakdown(cells: list[Cell], rounds: int, settle: float, log) -> str:
    """A table: each stage's epoch over the floor's epoch of the same round (median over rounds)."""
    lines = [
        "| cell | "
        + " | ".join(f"{name} us/step" for name, _ in STAGES)
        + " | "
        + " | ".join(f"{name} / floor" for name, _ in STAGES[1:4])
        + " |",
        "|" + "---|" * (1 + len(STAGES) + 3),
    ]
    for cell in cells:
        fns, steps = breakdown_epochs(cell)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(rounds):
            names = list(fns)
            k = r % len(names)
            for name in names[k:] + names[:k]:
                time.sleep(settle)
                times[name].append(fns[name]())
        us = {k: statistics.median(v) / steps * 1e6 for k, v in times.items()}
        ratio = {
            k: paired_ratio([[t] for t in times[k]], [[t] for t in times["floor"]]) for k in times
        }
        log(f"[breakdown {cell.label}] " + "  ".join(f"{k} {v:.0f} us" for k, v in us.items()))
        lines.append(
            f"| {cell.optimizer}, batch {cell.batch} | "
            + " | ".join(f"{us[name]:.0f}" for name, _ in STAGES)
            + " | "
            + " | ".join(f"{ratio[name]:.2f}" for name, _ in STAGES[1:4])
            + " |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Profile: where one epoch of fcspec's training goes.


def profile(cells: list[Cell], top: int, tmp: Path) -> None:
    import cProfile
    import pstats

    for cell in cells:
        run_fcspec(cell, 1, tmp)  # warm: imports and first allocations
        pr = cProfile.Profile()
        pr.enable()
        secs = run_fcspec(cell, 1, tmp)
        pr.disable()
        print(
            f"\n## cProfile of one fcspec epoch, {cell.label} ({secs[0]:.2f} s inside train.run; "
            "cProfile's per-call overhead inflates the Python share, more so at small batches)\n"
        )
        st = pstats.Stats(pr)
        st.sort_stats("tottime").print_stats(top)


# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=1, help="epochs per engine per round (default 1)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=7,
        help="alternating rounds per cell (default 7); ratios are taken within a round",
    )
    ap.add_argument(
        "--sklearn-rounds", type=int, default=1, help="rounds that include scikit-learn"
    )
    ap.add_argument(
        "--batches", default=",".join(map(str, BATCHES)), help="comma-separated batch sizes"
    )
    ap.add_argument("--optimizers", default="sgd,adam", help="comma-separated: sgd, adam")
    ap.add_argument(
        "--threads",
        type=int,
        default=2,
        help="threads: torch.set_num_threads and NumPy's BLAS (OPENBLAS_NUM_THREADS / "
        "OMP_NUM_THREADS unless already set)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--settle",
        type=float,
        default=0.25,
        help="seconds of pause before each engine's round (idle spinning BLAS threads)",
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="1 epoch x 1 round, no sklearn, fewer check repeats (a smoke run)",
    )
    ap.add_argument(
        "--network",
        default="784-128-64-10",
        choices=list(NETWORKS),
        help="the MLP every engine trains (784-800-800-10: Simard et al. 2003, where GEMMs "
        "dominate); each network has its own section with --write",
    )
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX column (jax_loop.py)")
    ap.add_argument("--no-loop", action="store_true", help="skip the 'fcspec loop' column")
    ap.add_argument(
        "--no-numpy-path",
        action="store_true",
        help="skip the 'fcspec NumPy path' column (fcspec with its compiled kernels off)",
    )
    ap.add_argument(
        "--no-hand",
        action="store_true",
        help="skip the 'numpy by hand' column (numpy_loop.py, the issue's reference loop)",
    )
    ap.add_argument(
        "--no-sklearn", action="store_true", help="skip scikit-learn even when installed"
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--check-repeats", type=int, default=7, help="runs of `fcspec check` (median)")
    ap.add_argument("--write", type=Path, help="replace the training section of this markdown file")
    ap.add_argument("--assert-goals", action="store_true", help="exit 1 when a goal is missed")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing: cProfile one fcspec epoch per cell (use --batches / --optimizers)",
    )
    ap.add_argument("--profile-top", type=int, default=25)
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="instead of the engines: what gathering, the loss and backward, and the optimizer "
        "each add to the GEMM floor (its own section with --write)",
    )
    ap.add_argument(
        "--unset-openblas-env",
        action="store_true",
        help="re-exec without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (which can slow NumPy)",
    )
    ap.add_argument(
        "--first-epoch-repeats",
        type=int,
        default=3,
        help="fresh processes timing the first epoch's kernel compilation/loading (0 skips)",
    )
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    ap.add_argument("--first-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.first_child:
        optimizer, batch = args.first_child.split(",")
        print(json.dumps(first_epoch_child(optimizer, int(batch), args.seed)))
        return 0

    if args.memory_child:
        engine, optimizer, batch = args.memory_child.split(",")
        print(json.dumps(memory_child(engine, optimizer, int(batch), args.seed)))
        return 0

    set_network(args.network)
    large = args.network != "784-128-64-10"
    if large:  # numpy_loop.py is written for the tutorial network alone
        args.no_hand = True
    if args.quick:
        args.epochs, args.rounds, args.no_sklearn = 1, 1, True
        args.check_repeats = min(args.check_repeats, 3)
        args.first_epoch_repeats = min(args.first_epoch_repeats, 1)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731  progress goes to stderr
    batches = [int(b) for b in args.batches.split(",")]
    optimizers = [o.strip() for o in args.optimizers.split(",")]
    for o in optimizers:
        if o not in OPTIMIZERS:
            ap.error(f"unknown optimizer {o!r} (choose from {', '.join(OPTIMIZERS)})")

    from fcspec.errors import FcspecError

    t_all = time.perf_counter()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        cells = [Cell(o, b, args.seed) for o in optimizers for b in batches]
    except FcspecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = len(cells[0].data.train)
    info = blas_info()
    log(blas_line(info))

    if args.breakdown:
        table = breakdown(cells, args.rounds, args.settle, log)
        cmd = "python benchmarks/train_speed.py " + " ".join(shlex.quote(a) for a in argv)
        body = "\n".join(
            [
                "## Where fcspec's training step goes",
                "",
                "Each column adds one part of the step, timed in place on MNIST in alternating rounds "
                f"(medians of {args.rounds} round(s), {date.today().isoformat()}); the ratios are paired "
                "with the floor's epoch of the same round. Full batches only.",
                "",
                *[f"- **{name}**: {what}" for name, what in STAGES],
                "",
                table,
                "",
                f"Machine: {machine_line(args.threads, LIBRARIES, load_start)}.",
                "",
                f"Reproduce: `{cmd.strip()}`",
            ]
        )
        print(body)
        if args.write:
            replace_section(args.write, body, BREAKDOWN_BEGIN, BREAKDOWN_END)
            print(f"\nwrote the breakdown section of {args.write}", file=sys.stderr)
        return 0

    with tempfile.TemporaryDirectory(prefix="fcspec-train-speed-") as tmp_s:
        tmp = Path(tmp_s)
        if args.profile:
            profile(cells, args.profile_top, tmp)
            return 0
        runs = engines(args)
        runs["floor"] = run_floor_factory(n)
        if "torch" in runs:  # torch's own GEMMs at the same shapes: what its epoch cannot go below
            runs["torch GEMMs"] = run_floor_factory(n, torch=True)
        if "jax" in runs:  # and JAX's: are XLA's GEMMs faster than NumPy's BLAS here?
            runs["JAX GEMMs"] = run_jax_gemms_factory(n)
        if args.threads > 1:
            try:
                runs["floor 1 thread"] = run_floor_one_thread_factory(n)
            except ImportError:  # threadpoolctl is optional
                pass
        log(f"engines: {', '.join(runs)}; {args.rounds} rounds x {args.epochs} epochs per cell")
        results = measure(
            cells, runs, args.rounds, args.epochs, args.sklearn_rounds, tmp, log, args.settle
        )

    mem: list[dict] = []
    if not args.no_memory:
        cases = [("fcspec", o, b) for o in optimizers for b in sorted({min(batches), max(batches)})]
        if "torch" in runs:
            cases.append(("torch", optimizers[-1], max(batches)))
        mem = measure_memory(cases, args.seed, log)
    chk = (
        measure_check(REPO / "specs" / "mnist.fc", args.check_repeats)
        if args.check_repeats > 0
        else None
    )

    first = None
    if args.first_epoch_repeats > 0:
        from fcspec import kernels

        if kernels.available():
            log("first epoch: kernels compiled (empty numba cache) and loaded (filled)")
            first = measure_first_epoch("adam", 32, args.first_epoch_repeats, args.seed)

    table, rows = speed_table(cells, results, n)
    goal_list = goals(rows, mem, chk, first)
    cmd = "python benchmarks/train_speed.py " + " ".join(shlex.quote(a) for a in argv)
    sk_note = (
        f" scikit-learn ran {min(args.sklearn_rounds, args.rounds)} round(s) per cell "
        "(float32 input, its own shuffling)."
        if any(r["sklearn"] for r in rows)
        else ""
    )
    body = "\n".join(
        [
            f"## Training{' the larger network' if large else ''}: fcspec versus PyTorch CPU "
            "eager and JAX",
            "",
            f"MNIST ({n} x 784, scaled by 1/255), {args.network} ReLU, cross_entropy, shuffled, float32; "
            "SGD is lr 0.01 with momentum 0.9, Adam lr 1e-3. "
            f"Seconds per epoch are medians over {args.rounds} alternating round(s) of {args.epochs} epoch(s) "
            f"per engine ({date.today().isoformat()}). **fcspec** is `fcspec.train.run` (its own per-epoch "
            "`seconds`: the batch loop, not data loading or checkpoints), with its compiled kernels "
            "(fcspec/kernels.py, numba); **fcspec NumPy path** is the same run with the kernels switched "
            "off (as FCSPEC_KERNELS=numpy), and **kernels/NumPy path** their paired ratio; "
            "**fcspec loop** is train.run's own "
            "batch stream and step (`train.Batches`, `train.Step`: forward, loss, backward, finiteness "
            "checks, optimizer) alone, so the gap between the two is the rest of train.run's epoch "
            "(accuracy count, progress); **torch** is an eager loop over a float32 copy of the scaled "
            "data (fcspec keeps MNIST's bytes and converts each batch as it gathers it) with the same batch "
            f"indices and torch.optim's defaults, after {WARMUP_STEPS} untimed warm-up steps."
            + sk_note
            + " The **floor** is NumPy float32 running only "
            f"the 8 GEMMs of each batch at the same shapes ({flops_per_epoch(n) / 1e9:.2f} GFLOP per epoch); "
            "fcspec's GFLOP/s is that count over its epoch time. **fcspec/torch (paired)** is the median "
            "over rounds of the ratio within a round (the two engines ran seconds apart, so a slow spell of "
            "this shared machine hits both); the goals are judged on it. **ratio of medians** divides the "
            "two columns instead. **numpy by hand** is the issue's reference, a float32 NumPy loop written "
            "for this one network and nothing else (benchmarks/numpy_loop.py, checked against fcspec's "
            "step by the tests), over the same float32 data as torch: **hand/torch** is how far NumPy "
            "itself gets, **fcspec/hand** what the general interpreter costs on top. **floor 1 thread** "
            "runs the same GEMMs with NumPy's BLAS limited to one thread, **torch GEMMs** with torch.matmul "
            "(its BLAS, its threads): the part of torch's epoch no engine's overhead can explain; "
            "**JAX GEMMs** runs them through XLA as JAX trains (one jitted `lax.scan` over the "
            "epoch's batches, the eight products each step), "
            "and **JAX GEMMs/floor** below 1 means XLA's GEMMs beat NumPy's BLAS at these "
            "shapes, a margin no NumPy engine can make up. "
            "**JAX** is one `jax.jit`-compiled `lax.scan` over each epoch's full batches (XLA fuses "
            "each step; no Python per step; benchmarks/jax_loop.py), the same network, formulas and "
            "batch indices; its compilation is an untimed warm-up, reported as **JAX compile s**.",
            "",
            table,
            "",
            "Memory (one epoch in a fresh process; the peak counter is reset once the data is loaded, so "
            "decoding MNIST does not count). Library code is not training memory: fcspec's modules "
            "are imported and, for fcspec, an untimed epoch on 512 rows first loads the compiled kernels "
            "(numba, LLVM and their cached machine code), whose resident size is the "
            "**compiled kernels' code** column, paid once per process (0 with FCSPEC_KERNELS=numpy "
            "or without numba):",
            "",
            memory_table(mem) if mem else "(not measured)",
            "",
            "Goals of the issue:",
            "",
            *[
                f"- {'met' if ok else 'note' if ok is None else '**missed**'}: {what} ({detail})"
                for what, ok, detail in goal_list
            ],
            "",
            f"Machine: {machine_line(args.threads, LIBRARIES, load_start)}.  ",
            blas_line(info) + ".",
            "",
            f"Reproduce: `{cmd.strip()}` (whole run {time.perf_counter() - t_all:.0f} s)",
        ]
    )
    print(body)
    if args.write:
        if large:
            replace_section(args.write, body, LARGE_BEGIN, LARGE_END)
        else:
            write_section(args.write, body)
        print(f"\nwrote the training section of {args.write}", file=sys.stderr)
    missed = [what for what, ok, _ in goal_list if ok is False]
    if args.assert_goals and missed:
        print("goals missed: " + "; ".join(missed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
