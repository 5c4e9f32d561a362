"""The training loop: batches, steps, metrics, checkpoints, resume, signals, progress.

`run(spec, ...)` drives the pieces other modules own (interpreter, losses,
optim, schedules, data) the way a PyTorch training script does, and writes a
run folder:

    weights.npz      `NAME.weight` [out, in] / `NAME.bias`: a torch state_dict
    weights.safetensors  the same, when the safetensors package (the interop extra) is installed
    preprocess.npz   the preprocessing statistics (from data.py)
    checkpoint.npz   everything needed to continue bit for bit (see below)
    metrics.jsonl    one JSON object per finished epoch
    summary.json     the outcome of the run
    curves.png       with plot=True

Every file is written atomically (fcspec.io), the checkpoint after every
epoch, so a run killed at any moment leaves the previous epoch's files intact.

Random streams (documented so a PyTorch program can replay a run):

    shuffle   np.random.default_rng(seed): before each epoch `perm = rng.permutation(n_train)`;
              batch k is the rows `perm[k * batch : (k + 1) * batch]` (the last one smaller).
              Without shuffle, batch k is rows `k * batch : (k + 1) * batch` in file order.
    init      np.random.default_rng([seed, 1]), given to interpreter.Network.
    dropout   np.random.default_rng([seed, 2]), given to every training forward pass.

Per step: forward, loss value and gradient, backward, regularization, gradient
clipping (if set), optimizer step with the schedule's current lr.  After each
epoch: validation metrics, schedule step, early stopping, checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from . import catalog, interpreter, ir, losses, optim, schedules
from . import data as fdata
from . import io as fio
from .describe import format_bytes
from .errors import DataError, FcspecError, TrainingError
from .layerstats import LayerStats

CHECKPOINT_FORMAT = 1
SCHEMA_FILE = "schema.json"  # the fitted table schema / target scaling (tabular.Schema)
HISTORY_TAIL = 8  # epochs of history a checkpoint keeps (metrics.jsonl keeps them all)
RUN_FILES = (
    "weights.npz",
    "preprocess.npz",
    "checkpoint.npz",
    "metrics.jsonl",
    "summary.json",
    "curves.png",
    "layers.jsonl",
    SCHEMA_FILE,
)
EVAL_BATCH = 1024  # rows per forward pass when evaluating (bounds memory, not results)


class Interrupted(FcspecError):
    """SIGINT / SIGTERM / SIGHUP stopped a run; a consistent checkpoint was written.

    The CLI prints the message and exits with `exit_code` (130 for SIGINT,
    143 for SIGTERM, 129 for SIGHUP: the shell's 128 + signal number convention).
    """

    def __init__(self, message: str, *, exit_code: int, epoch: int, checkpoint: str):
        super().__init__(message)
        self.exit_code = exit_code
        self.epoch = epoch
        self.checkpoint = checkpoint


# ---------------------------------------------------------------------------
# Checkpoint encoding: state dicts of optimizers and schedules are nested
# dicts / lists of arrays and scalars.  Arrays go into the .npz as they are
# (bit exact); the structure and plain scalars go into one JSON string (Python
# floats print with repr, which round-trips exactly; NaN / inf are allowed).


def _pack(obj: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {"__array__": prefix}
    if isinstance(obj, np.generic):  # keep the numpy dtype (a float32 stays float32)
        arrays[prefix] = np.asarray(obj)
        return {"__scalar__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _pack(v, f"{prefix}/{k}", arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_pack(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_pack(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in a checkpoint")


def _unpack(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]].copy()
        if "__scalar__" in obj:
            return arrays[obj["__scalar__"]][()]
        if "__dict__" in obj:
            return {k: _unpack(v, arrays) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unpack(v, arrays) for v in obj["__tuple__"])
        raise KeyError(f"unknown checkpoint node {sorted(obj)}")
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def _rng_to_array(rng: np.random.Generator) -> np.ndarray:
    """A PCG64 state as uint64 words: state hi/lo, inc hi/lo, has_uint32, uinteger."""
    st = rng.bit_generator.state
    if st["bit_generator"] != "PCG64":
        raise TypeError(f"unsupported bit generator {st['bit_generator']}")
    mask = (1 << 64) - 1
    s, inc = st["state"]["state"], st["state"]["inc"]
    return np.array(
        [s >> 64, s & mask, inc >> 64, inc & mask, st["has_uint32"], st["uinteger"]],
        dtype=np.uint64,
    )


def _rng_from_array(a: np.ndarray) -> np.random.Generator:
    w = [int(v) for v in a]
    rng = np.random.Generator(np.random.PCG64())
    rng.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": (w[0] << 64) | w[1], "inc": (w[2] << 64) | w[3]},
        "has_uint32": w[4],
        "uinteger": w[5],
    }
    return rng


def _weights_arrays(net) -> dict[str, np.ndarray]:
    # copies: the views into theta change with the next step
    return {k: np.array(v, dtype=np.float32, copy=True) for k, v in net.params.items()}


# ---------------------------------------------------------------------------
# Small pieces of the loop.


def estimate_memory(spec: ir.Spec, batch: int, eval_batch: int = EVAL_BATCH) -> dict[str, int]:
    """Bytes the loop will allocate beyond the loaded data, by kind (an estimate).

    Parameters and gradients, optimizer state, a best-weights copy, the batch
    buffers, and activations kept for backward (about two arrays per layer:
    the output and its gradient), for a training batch and an evaluation batch.
    """
    p = spec.model.num_params
    slots = len(optim.make_state_names(spec.optimizer))  # its float32 vectors of parameter size
    es = spec.train.early_stop
    best_copy = 1 if es is not None and es.restore_best else 0
    params = 4 * p * (2 + best_copy)  # theta, grad (+ best theta)
    optimizer = 4 * p * (slots + 4)  # + optim.py's scratch: two float32 and one float64 vector
    sample_in = math.prod(spec.model.input_shape)
    widths = sum(math.prod(l.out_shape) for l in spec.model.layers)
    buffers = 4 * batch * (sample_in + max(1, math.prod(spec.model.output_shape)))
    activations = 4 * 2 * max(batch, eval_batch) * (sample_in + widths)
    return {
        "parameters": params,
        "optimizer": optimizer,
        "buffers": buffers,
        "activations": activations,
        "total": params + optimizer + buffers + activations,
    }


def _check_memory(spec: ir.Spec, batch: int) -> None:
    est = estimate_memory(spec, batch)
    avail = fdata.available_memory()
    if avail is not None and est["total"] > avail:
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in est.items() if k != "total")
        raise TrainingError(
            f"training {spec.name} needs about {format_bytes(est['total'])} ({parts}) "
            f"but only {format_bytes(avail)} is available",
            hint="use a smaller batch or a smaller model",
        )


def _eval_metrics(
    task: str, loss_kind: str, loss_fn, out: np.ndarray, y: np.ndarray, prefix: str, scaling=None
):
    """Loss and the task's figures for outputs `out` against targets `y`.  With a target
    `scaling` (normalize_target), the loss is of the scaled target the model learns and
    mae / rmse are in the target's own units."""
    m = {f"{prefix}_loss": float(loss_fn.value(out, y))}
    if scaling is not None:
        out, y = fdata.unscale_target(out, scaling), fdata.unscale_target(y, scaling)
    if task == "classification":
        m[f"{prefix}_accuracy"] = float(np.mean(np.argmax(out, axis=-1) == y))
    elif task == "binary":
        m[f"{prefix}_accuracy"] = float(np.mean(_binary_pred(loss_kind, out) == (y > 0.5)))
    elif task == "regression":
        d = out.astype(np.float64) - y.astype(np.float64)
        m[f"{prefix}_mae"] = float(np.mean(np.abs(d)))
        m[f"{prefix}_rmse"] = float(np.sqrt(np.mean(d * d)))
    return m


def _binary_pred(loss_kind: str, out: np.ndarray) -> np.ndarray:
    # a loss on logits (bce_with_logits) thresholds at 0 = sigmoid^-1(0.5), on probabilities at 0.5
    return out > (0.0 if catalog.LOSSES[loss_kind].takes == "logits" else 0.5)


def _batch_correct(task: str, loss_kind: str, out: np.ndarray, y: np.ndarray) -> int:
    if task == "classification":
        return int(np.count_nonzero(np.argmax(out, axis=-1) == y))
    if task == "binary":
        return int(np.count_nonzero(_binary_pred(loss_kind, out) == (y > 0.5)))
    return 0


def _sumsq(v: np.ndarray) -> float:
    """sum(v * v), +inf or NaN exactly when some entry of v is not finite.

    The float32 BLAS dot is the fast path (a NaN or inf entry always shows in
    it); only when it overflows is the sum redone in float64, where float32
    squares cannot overflow, so a large but finite vector is not called
    non-finite.  (einsum casts in small blocks: no float64 copy of v.)
    """
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is the expected signal
        s = float(np.dot(v, v))
    if math.isfinite(s):
        return s
    return float(np.einsum("i,i->", v, v, dtype=np.float64))


def _first_nonfinite(arrays: dict[str, np.ndarray]) -> str | None:
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            return name
    return None


def _largest(arrays: dict[str, np.ndarray]) -> str:
    best, name = -1.0, "?"
    for k, a in arrays.items():
        if a.size:
            m = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else math.inf
            if m > best:
                best, name = m, k
    return f"{name} (max |w| {best:.3g})"


class _SignalCatcher:
    """Turns SIGINT / SIGTERM / SIGHUP into a flag the loop checks after every step.

    The handlers only set a flag, so a signal never lands in the middle of a
    step or a checkpoint write.  A second SIGINT falls back to Python's default
    (KeyboardInterrupt) so a stuck run can still be stopped.
    """

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        self.signum = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            # SIGHUP: the terminal closed (an ssh session dropped); like SIGTERM, checkpoint
            for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
                if s is not None:
                    self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


class _Progress:
    """A tqdm bar on a TTY, one plain line per epoch otherwise, nothing when quiet."""

    def __init__(
        self, quiet: bool, echo: Callable[[str], None] | None, total_steps: int, done: int
    ):
        self.quiet = quiet
        self.echo = echo or (lambda s: print(s, file=sys.stderr, flush=True))
        self.bar = None
        self._shown = 0.0
        if not quiet and echo is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=done,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

    def message(self, text: str) -> None:
        if self.quiet:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            self.echo(text)

    def step(
        self,
        epoch: int,
        total_epochs: int,
        loss_sum: float,
        seen: int,
        correct: int | None,
        lr: float,
    ) -> None:
        """One step done; on a terminal, the epoch's running loss (and accuracy) in the bar."""
        if self.bar is None:
            return
        now = time.monotonic()
        if now - self._shown >= 0.5:  # formatting every step would cost more than small steps
            self._shown = now
            post = {"epoch": f"{epoch}/{total_epochs}", "loss": f"{loss_sum / seen:.4g}"}
            if correct is not None:
                post["acc"] = f"{correct / seen:.4f}"
            post["lr"] = f"{lr:.3g}"
            self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def epoch(self, m: dict[str, Any], total_epochs: int) -> None:
        if self.quiet:
            return
        parts = [f"epoch {m['epoch']}/{total_epochs}", f"train_loss {m['train_loss']:.4f}"]
        for k in ("train_accuracy", "val_loss", "val_accuracy", "val_mae", "val_rmse"):
            if k in m:
                parts.append(f"{k} {m[k]:.4f}")
        parts.append(f"lr {m['lr']:.4g}")
        parts.append(f"{m['seconds']:.1f}s")
        line = "  ".join(parts)
        if self.bar is None:
            self.echo(line)
            return
        # The bar keeps a short live summary (the ETA is tqdm's own); the full
        # line of every finished epoch stays printed above it.
        self.bar.write(line, file=sys.stderr)
        post = {"epoch": f"{m['epoch']}/{total_epochs}", "loss": f"{m['train_loss']:.4g}"}
        acc = m.get("val_accuracy", m.get("train_accuracy"))
        if acc is not None:
            post["acc"] = f"{acc:.4f}"
        post["lr"] = f"{m['lr']:.3g}"
        self.bar.set_postfix(post, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ---------------------------------------------------------------------------
# The run.


def _resolve_checkpoint(resume: str | os.PathLike) -> Path:
    p = Path(resume)
    return p / "checkpoint.npz" if p.is_dir() else p


def _load_checkpoint(path: Path, spec: ir.Spec) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    # The record first (it says whose checkpoint this is), then the arrays, judged by
    # their headers against the spec's shapes before their data is read.
    where = f"checkpoint {path}"
    record = fio.read_npz(path, "checkpoint", ["meta"], judge=fio.expect_shapes({}, where))
    if "meta" not in record:
        raise DataError(f"{path} is not an fcspec checkpoint (no 'meta' entry)")
    if record["meta"].shape != () or record["meta"].dtype.kind != "U":
        raise DataError(f"checkpoint {path} is damaged: 'meta' is not one JSON text")
    from .schema import check_record

    try:
        meta = json.loads(str(record["meta"][()]))
    except (ValueError, TypeError, RecursionError) as e:  # RecursionError: nesting thousands deep
        raise DataError(f"checkpoint {path} is damaged: {type(e).__name__}: {e}") from None
    if isinstance(meta, dict) and meta.get("format") != CHECKPOINT_FORMAT:
        raise DataError(
            f"checkpoint {path} has format {meta.get('format')!r}, "
            f"this fcspec reads format {CHECKPOINT_FORMAT}"
        )
    try:
        check_record(meta)
    except DataError as e:
        raise DataError(f"checkpoint {path} is damaged: {e.diagnostic.message}") from None
    if meta.get("spec_sha256") != spec.sha256:
        raise TrainingError(
            f"checkpoint {path} was written for another spec "
            f"({meta.get('spec_name')!r}, sha256 {str(meta.get('spec_sha256'))[:12]}...) "
            f"than {spec.path} (sha256 {spec.sha256[:12]}...)",
            hint="resume with the unchanged .fc file, or start a new run without --resume",
        )
    expected = {f"weights/{k}": v for k, v in spec.model.param_shapes().items()}
    expected["best_theta"] = (spec.model.num_params,)
    arrays = fio.load_npz(
        path, "checkpoint", judge=fio.expect_shapes(expected, where, f"model {spec.name}")
    )
    return meta, arrays


def check_schema(path: Path, schema, what: str) -> None:
    """The schema saved beside weights (`path`) must be the one the data gives now."""
    from .tabular import Schema

    if not path.exists():
        return  # weights from before schemas, or copied without theirs: nothing to compare
    saved = Schema.from_json(path.read_text(), str(path))
    if schema is None:
        raise DataError(f"{what}: {path} describes a table, but the spec's data is not one")
    diff = saved.differences(schema)
    if diff:
        raise DataError(
            f"{what}: the data changed since training: {'; '.join(diff[:3])}",
            hint=f"{path} holds the schema the weights were trained with; retrain, or restore the data",
        )


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    n = len(prefix)
    return {k[n:]: v for k, v in arrays.items() if k.startswith(prefix)}


def output_dir(
    spec: ir.Spec, out_dir: str | os.PathLike | None = None, resume: str | os.PathLike | None = None
) -> Path:
    """Where `run` writes: `out_dir`, else the resumed checkpoint's folder, else runs/<name>/."""
    if out_dir is not None:
        return Path(out_dir)
    if resume is not None:
        return _resolve_checkpoint(resume).parent
    return Path("runs") / spec.name


# ---------------------------------------------------------------------------
# The run's state and its callbacks.
#
# The contract other code (the Python API, sweeps, trackers) builds on:
#
#   run(spec, ..., prepared=None, callbacks=())
#       `prepared` (a data.Prepared) is used as the run's data instead of
#       calling data.prepare(spec); `callbacks` are objects with any of:
#   on_train_begin(state)
#       before the first epoch (after a resume, with the resumed history).
#   on_epoch_end(state, row) -> bool | None
#       after each finished epoch, before its files are written; `row` is the
#       epoch's metrics.jsonl record (do not modify it).  Returning True stops
#       training cleanly after this epoch, recorded like early stopping
#       (`stopped_by_callback` in summary.json and the checkpoint).
#   on_train_end(state, summary)
#       after summary.json is written.
#
#   `state` is the RunState: `spec`, `epoch` (the epoch being trained, or just
#   finished), `history` (the rows so far), `params` (name -> ndarray view of
#   the weights, PyTorch keys and layouts), `grads` (the same for the last
#   step's gradients), `out` (the run folder), `lr` (the epoch's rate).
#   Callbacks read it; changing the weights in place is allowed (e.g. pruning
#   them), anything else is not.

CALLBACK_HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")


class Diverged(Exception):
    """Raised by `Step` when the loss or the gradient stops being finite (the run explains it)."""

    def __init__(self, what: str, where: str, gnorm: float):
        super().__init__(what)
        self.what, self.where, self.gnorm = what, where, gnorm


class Step:
    """One training step as `run` takes it: forward (dropout active), loss value and gradient,
    backward, regularization, the finiteness checks, gradient clipping, the optimizer step.

    `step(xb, yb, lr)` returns the batch's loss (regularization included) and keeps the
    model's output in `out` and the gradient norm in `gnorm`.  It raises `Diverged`
    before updating anything when the loss or the gradient is not finite.
    """

    def __init__(self, spec: ir.Spec, net, loss_fn, opt, dropout_rng: np.random.Generator):
        self.net, self.loss_fn, self.opt, self.rng = net, loss_fn, opt, dropout_rng
        self.reg = spec.regularize
        self.max_norm = spec.train.clip_grad_norm
        self.out: np.ndarray | None = None
        self.gnorm = 0.0

    def __call__(self, xb: np.ndarray, yb: np.ndarray, lr: float) -> float:
        net = self.net
        out = net.forward(xb, True, self.rng)
        value, g_out = self.loss_fn.value_and_grad(out, yb)
        net.backward(g_out)  # overwrites net.grad
        value = float(value) + float(losses.regularization(net, self.reg))
        if not math.isfinite(value):
            where = f"loss {value}; largest weights {_largest(net.params)}"
            raise Diverged("the loss", where, self.gnorm)
        # One pass gives the norm and the finiteness check at once.
        self.gnorm = gnorm = math.sqrt(_sumsq(net.grad))
        if not math.isfinite(gnorm):
            raise Diverged("the gradient", f"gradient of {_first_nonfinite(net.grads)}", gnorm)
        if self.max_norm is not None:
            optim.clip_grad_norm(net.grad, self.max_norm)
        self.opt.step(net.theta, net.grad, lr)
        self.out = out
        return value


class Batches:
    """The batch stream: each epoch's batches of the training split, in a given order.

    Batches are gathered into (and converted in) buffers kept for the whole run
    (np.take(mode="clip") writes straight into them; the default mode would build
    a dataset-sized temporary first).  Full-batch descent reads every row every
    step, so its split is converted once.
    """

    def __init__(self, split: fdata.Split, batch: int, shuffle: bool):
        self.n = n = len(split)
        self.batch = batch
        self.split = split.dense() if batch >= n else split
        self.x_buf = self.y_buf = None
        if batch < n and (shuffle or split.pre is not None):
            self.x_buf = np.empty((batch,) + split.samples.shape[1:], dtype=np.float32)
            self.y_buf = np.empty((batch,) + split.y.shape[1:], dtype=split.y.dtype)

    def epoch(self, order: np.ndarray | None):
        """(rows done, batch size, inputs, targets) per batch; `order` None: file order."""
        split, n, batch, x_buf, y_buf = self.split, self.n, self.batch, self.x_buf, self.y_buf
        for s in range(0, n, batch):
            e = min(s + batch, n)
            b = e - s
            if order is None:
                xb = split.rows(
                    slice(s, e), None if x_buf is None or split.pre is None else x_buf[:b]
                )
                yield e, b, xb, split.y[s:e]
            elif x_buf is None:  # one batch of the whole set, permuted
                yield e, b, split.x[order], split.y[order]
            else:
                idx = order[s:e]
                xb = split.rows(idx, x_buf[:b])
                yield e, b, xb, np.take(split.y, idx, axis=0, out=y_buf[:b], mode="clip")


class RunState:
    """Everything one run holds, in one object: what callbacks see and what a checkpoint stores."""

    def __init__(self, spec: ir.Spec, out: Path, seed: int, total_epochs: int, prepared, init=None):
        self.spec, self.out, self.seed, self.total_epochs = spec, out, seed, total_epochs
        self.prepared = prepared
        self.scaling = fdata.target_scaling(prepared.schema)  # normalize_target: (mean, std)
        self.n = n = len(prepared.train)
        if n == 0:
            raise DataError("the training set is empty")
        self.batch = n if spec.train.batch is None else min(int(spec.train.batch), n)
        _check_memory(spec, self.batch)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrainingError(f"cannot create the run folder {out}: {e}") from None
        self.net = interpreter.Network(spec.model, rng=np.random.default_rng([seed, 1]))
        if init is not None:
            try:
                self.net.load_params(fio.load_params(init, spec.model, "weights"))
            except DataError as e:
                raise DataError(
                    f"--init {init}: {e.diagnostic.message}", hint=e.diagnostic.hint
                ) from None
        self.loss_fn = losses.make_loss(spec.loss)
        self.opt = optim.make_optimizer(spec.optimizer, self.net.theta.size)
        self.sched = schedules.make_schedule(spec.schedule, spec.optimizer.lr)
        es = spec.train.early_stop
        self.stopper = schedules.EarlyStopping(es) if es is not None else None
        self.shuffle_rng = np.random.default_rng(seed)
        self.dropout_rng = np.random.default_rng([seed, 2])
        self.history: list[dict[str, Any]] = []
        self.seconds_total = 0.0  # of every epoch trained, also before a resume
        self.metrics_synced = False  # metrics.jsonl holds exactly `history`
        self.epoch = 0  # the epoch being trained, or the last one finished
        self.lr = float(self.sched.lr)  # the rate of `epoch`
        self.best_theta: np.ndarray | None = None
        self.best_epoch: int | None = None
        self.stopped_early = False
        self.stopped_by_callback = False
        self.ckpt_path = out / "checkpoint.npz"
        self.ckpt_written = False
        self.spec_epochs = spec.train.epochs  # the .fc file's, before --epochs (run sets it)

    @functools.cached_property
    def data_sha256(self) -> str:
        """A fingerprint of the training and validation rows, so --resume notices data
        replaced by other values of the same size (a row count alone would not)."""
        return data_fingerprint(self.prepared)

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self.net.params

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return self.net.grads

    @property
    def stopped(self) -> bool:
        return self.stopped_early or self.stopped_by_callback

    # -- resume and checkpoints --------------------------------------------

    def resume(self, path: Path, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Continue where the checkpoint at `path` ends (its weights, optimizer, schedule,
        early stopping, random streams and history)."""
        if meta.get("n_train") != self.n:
            raise TrainingError(
                f"checkpoint {path} was trained on {meta.get('n_train')} rows, "
                f"the data now has {self.n}",
                hint="the data files changed since the checkpoint",
            )
        if meta.get("data_sha256", self.data_sha256) != self.data_sha256:
            raise TrainingError(
                f"checkpoint {path} was trained on other data: the training rows have the "
                f"same count ({self.n}) but different values (data sha256 "
                f"{meta['data_sha256'][:12]}... then, {self.data_sha256[:12]}... now)",
                hint="resume with the data the run started on, or start a new run without --resume",
            )
        self.net.load_params(_prefixed(arrays, "weights/"))
        try:
            self.opt.load_state_dict(_unpack(meta["optimizer"], arrays))
            self.sched.load_state_dict(_unpack(meta["schedule"], arrays))
            if self.stopper is not None and meta.get("early_stop") is not None:
                self.stopper.load_state_dict(_unpack(meta["early_stop"], arrays))
            self.shuffle_rng = _rng_from_array(arrays["rng/shuffle"])
            self.dropout_rng = _rng_from_array(arrays["rng/dropout"])
            self.history = _full_history(path.parent / "metrics.jsonl", meta["history"])
            self.seconds_total = float(
                meta.get("seconds_total", sum(m["seconds"] for m in self.history))
            )
            self.epoch = int(meta["epoch"])
            self.lr = float(self.sched.lr)
            self.best_epoch = meta.get("best_epoch")
            if "best_theta" in arrays:
                self.best_theta = arrays["best_theta"].astype(np.float32, copy=True)
                if self.best_theta.shape != self.net.theta.shape:
                    raise ValueError(f"best_theta has shape {self.best_theta.shape}")
        except (KeyError, TypeError, ValueError, IndexError) as e:
            # written by fcspec itself, so this means damage or a foreign file
            raise DataError(f"checkpoint {path} is damaged: {type(e).__name__}: {e}") from None
        self.ckpt_written = path.resolve() == self.ckpt_path.resolve()

    def checkpoint_bytes(self) -> bytes:
        """The checkpoint of the state as it is (after `epoch`), as .npz bytes."""
        arrays: dict[str, np.ndarray] = {
            f"weights/{k}": v for k, v in _weights_arrays(self.net).items()
        }
        spec, stopper = self.spec, self.stopper
        m = {
            "format": CHECKPOINT_FORMAT,
            "spec_name": spec.name,
            "spec_path": str(spec.path),
            "spec_sha256": spec.sha256,
            "epoch": self.epoch,
            "seed": self.seed,
            "n_train": self.n,
            "data_sha256": self.data_sha256,
            "stopped_early": self.stopped_early,
            "stopped_by_callback": self.stopped_by_callback,
            "best_epoch": self.best_epoch,
            # The last few epochs only: the checkpoint is rewritten every epoch, so a full
            # history would make each write longer than the last.  metrics.jsonl has it all.
            "history": self.history[-HISTORY_TAIL:],
            "seconds_total": self.seconds_total,
            "optimizer": _pack(self.opt.state_dict(), "optimizer", arrays),
            "schedule": _pack(self.sched.state_dict(), "schedule", arrays),
            "early_stop": _pack(stopper.state_dict(), "early_stop", arrays) if stopper else None,
        }
        arrays["rng/shuffle"] = _rng_to_array(self.shuffle_rng)
        arrays["rng/dropout"] = _rng_to_array(self.dropout_rng)
        if self.best_theta is not None:
            arrays["best_theta"] = self.best_theta
        arrays["meta"] = np.array(json.dumps(m, sort_keys=True))
        return fio.npz_bytes(arrays)

    def write_epoch_files(self) -> None:
        """weights.npz, checkpoint.npz and metrics.jsonl of the finished epoch, each atomically."""
        _save_weights(self)
        fio.atomic_write_bytes(self.ckpt_path, self.checkpoint_bytes())
        self.ckpt_written = True
        metrics = self.out / "metrics.jsonl"
        if self.metrics_synced:
            fio.append_jsonl(metrics, self.history[-1])  # one line an epoch: constant cost
        else:
            # Once per run: whatever an older run or an interrupted epoch left is replaced.
            fio.atomic_write_jsonl(metrics, self.history)
            self.metrics_synced = True

    # -- the two ways an epoch ends early ------------------------------------

    def diverged(self, d: Diverged, step: int) -> TrainingError:
        if self.ckpt_written:
            kept = f"{self.ckpt_path} and weights.npz still hold epoch {self.epoch - 1}"
        else:
            kept = "no epoch finished, so no weights or checkpoint were written"
        return TrainingError(
            f"training diverged at epoch {self.epoch}, step {step}: {d.what} became non-finite "
            f"({d.where}); lr {self.lr:.4g}, gradient norm {d.gnorm:.4g}. Nothing of this epoch "
            f"was saved: {kept}",
            hint="lower the learning rate or set clip_grad_norm in the train block",
        )

    def interrupted(self, signum: int, start_ckpt: bytes) -> Interrupted:
        # The current epoch is incomplete: its steps are dropped, and the checkpoint
        # of the last finished epoch (or of the start state) is what resume uses.
        if not self.ckpt_written:
            fio.atomic_write_bytes(self.ckpt_path, start_ckpt)
        # --epochs must come along: without it the resumed run would stop at the spec's epochs
        more = f" --epochs {self.total_epochs}" if self.total_epochs != self.spec_epochs else ""
        return Interrupted(
            f"interrupted at epoch {self.epoch}; resume with: "
            f"fcspec run {self.spec.path} --resume {self.ckpt_path}{more}",
            exit_code=128 + int(signum),
            epoch=self.epoch,
            checkpoint=str(self.ckpt_path),
        )


def data_fingerprint(prepared) -> str:
    """sha256 of the training (and validation) samples and targets as the run sees them."""
    h = hashlib.sha256()
    for split in (prepared.train, prepared.val):
        if split is None:
            continue
        for a in (split.samples, split.y):
            if a is not None:
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a)
    return h.hexdigest()


def _full_history(metrics: Path, tail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checkpoint's last epochs, preceded by the earlier ones from metrics.jsonl.

    The earlier rows are used only when they are exactly epochs 1, 2, ... up to the
    tail's first; otherwise (the file is gone or damaged) the history starts at the
    tail, which only shortens the curves, never changes the training.
    """
    first = tail[0]["epoch"] if tail else 1
    if first == 1:
        return list(tail)
    from .schema import check_history

    try:
        text = fio.read_bytes(metrics, limit=1 << 30).decode("utf-8")
        rows = [json.loads(line) for line in text.split("\n")[:-1]]  # a torn last line: dropped
        earlier = [r for r in rows if isinstance(r, dict) and r.get("epoch", first) < first]
        check_history(earlier, first - 1)
    except (FcspecError, ValueError, RecursionError):
        return list(tail)
    if [r["epoch"] for r in earlier] != list(range(1, first)):
        return list(tail)
    return earlier + list(tail)


def _save_weights(state) -> None:
    """weights.npz, stamped with the spec it was trained for (export and eval check it)."""
    fio.save_weights(state.out, _weights_arrays(state.net), stamp=fio.weights_stamp(state.spec))


def _callbacks(callbacks, hook: str, *args) -> list[Any]:
    """Call `hook` on every callback that has it; their results in order."""
    results = []
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if fn is not None:
            results.append(fn(*args))
    return results


# ---------------------------------------------------------------------------
# The run.


def _train_epoch(state: RunState, step: Step, batches: Batches, sig, progress) -> dict[str, Any]:
    """The epoch `state.epoch` over every batch; its row with the training figures."""
    spec, net, n = state.spec, state.net, state.n
    task, loss_kind = spec.task, spec.loss.kind
    classifier = task in ("classification", "binary")
    epoch, total, lr = state.epoch, state.total_epochs, state.lr
    order = state.shuffle_rng.permutation(n) if spec.train.shuffle else None
    loss_sum, correct, k = 0.0, 0, 0
    step.gnorm = 0.0
    for k, (e, b, xb, yb) in enumerate(batches.epoch(order), start=1):
        try:
            value = step(xb, yb, lr)
        except Diverged as d:
            raise state.diverged(d, k) from None
        loss_sum += value * b
        correct += _batch_correct(task, loss_kind, step.out, yb)
        progress.step(epoch, total, loss_sum, e, correct if classifier else None, lr)
        if sig.signum is not None:
            break
    # Finite gradients and a finite rate keep the weights finite except by overflow;
    # a weight that overflowed makes the next step's loss non-finite (caught above),
    # so the weights need checking only once, before anything is written.
    if not math.isfinite(_sumsq(net.theta)):
        where = f"weights of {_first_nonfinite(net.params)}"
        raise state.diverged(Diverged("the weights", where, step.gnorm), k)
    row: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / n, "lr": lr}
    if classifier:
        row["train_accuracy"] = correct / n
    return row


def _end_epoch(state: RunState, row: dict[str, Any], t0: float, callbacks, progress) -> None:
    """After an epoch: validation figures, the schedule's step, early stopping, the
    callbacks, then the epoch's files (checkpoint included) and its progress line."""
    spec, net, epoch = state.spec, state.net, state.epoch
    val = state.prepared.val
    if val is not None and len(val):
        vout = net.predict(val.x, EVAL_BATCH)
        row.update(
            _eval_metrics(
                spec.task, spec.loss.kind, state.loss_fn, vout, val.y, "val", state.scaling
            )
        )
    state.sched.step(row)
    es = spec.train.early_stop
    if state.stopper is not None:
        state.stopped_early = bool(state.stopper.update(epoch, row))
        if getattr(state.stopper, "best_epoch", None) == epoch:
            state.best_epoch = epoch
            if es.restore_best:
                state.best_theta = net.theta.copy()
    row["seconds"] = time.perf_counter() - t0
    state.history.append(row)
    state.seconds_total += row["seconds"]
    if any(r is True for r in _callbacks(callbacks, "on_epoch_end", state, row)):
        state.stopped_by_callback = True
    state.write_epoch_files()
    progress.epoch(row, state.total_epochs)
    if state.stopped_early:
        progress.message(
            f"early stopping after epoch {epoch} "
            f"({es.monitor} did not improve for {es.patience} epochs)"
        )
    elif state.stopped_by_callback:
        progress.message(f"stopped by a callback after epoch {epoch}")


def _open_resume(
    spec: ir.Spec, resume, seed: int | None
) -> tuple[Path | None, dict | None, dict | None, int | None]:
    """(checkpoint path, its record, its arrays, the seed) of `resume`; Nones without one."""
    if resume is None:
        return None, None, None, seed
    path = _resolve_checkpoint(resume)
    meta, arrays = _load_checkpoint(path, spec)
    if seed is not None and seed != meta["seed"]:
        raise TrainingError(
            f"--seed {seed} differs from the checkpoint's seed {meta['seed']}",
            hint="drop --seed when resuming",
        )
    return path, meta, arrays, meta["seed"]


def _nothing_to_do(path: Path, meta: dict, total_epochs: int, out: Path, quiet: bool, echo):
    if meta.get("stopped_early"):
        why = "stopped early"
    elif meta.get("stopped_by_callback"):
        why = "was stopped by a callback"
    else:
        why = f"finished {meta['epoch']} epochs"
    msg = f"nothing to do: checkpoint {path} already {why} (of {total_epochs})"
    if not quiet:
        (echo or (lambda s: print(s, file=sys.stderr)))(msg)
    summary_path = Path(out) / "summary.json"
    if summary_path.exists():
        try:
            return json.loads(summary_path.read_text())
        except (OSError, ValueError):
            pass
    return {"epochs": meta["epoch"], "nothing_to_do": True}


def run(
    spec: ir.Spec,
    *,
    out_dir: str | os.PathLike | None = None,
    epochs: int | None = None,
    seed: int | None = None,
    init: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    quiet: bool = False,
    plot: bool = False,
    base_dir: str | os.PathLike | None = None,
    echo: Callable[[str], None] | None = None,
    prepared: fdata.Prepared | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train `spec` and write the run folder; return the summary (also in summary.json).

    `epochs` and `seed` override the spec's `train` block.  `init` starts from
    a weights `.npz`; `resume` continues from a checkpoint (file or run folder)
    up to the total number of epochs, ending bit for bit where an
    uninterrupted run ends.  `prepared` (a `data.Prepared`) is the data to
    train on instead of `data.prepare(spec)`; `callbacks` follow the contract
    above (`on_train_begin`, `on_epoch_end`, `on_train_end`).  Raises
    `TrainingError` on divergence and `Interrupted` on SIGINT / SIGTERM (after
    writing a consistent checkpoint).
    """
    if init is not None and resume is not None:
        raise TrainingError(
            "--init and --resume cannot be combined",
            hint="a checkpoint already holds the weights to continue from",
        )
    if prepared is None and (spec.data is None or spec.data.train is None):
        raise TrainingError(
            f"{spec.path}: the spec has no training data", hint="add a data { train = ... } block"
        )
    if plot:
        from . import plot as fplot

        fplot.pyplot()  # before training: a missing matplotlib must not cost a whole run
    ckpt_in, meta, ck_arrays, seed = _open_resume(spec, resume, seed)
    total_epochs = int(epochs if epochs is not None else spec.train.epochs)
    seed = int(seed if seed is not None else spec.train.seed)
    if total_epochs < 0:
        raise TrainingError(f"epochs must be >= 0, not {total_epochs}")
    if seed < 0:
        raise TrainingError(f"seed must be >= 0, not {seed}")
    if seed != spec.train.seed:  # data.py reads the seed (validation split) from the spec
        spec = replace(spec, train=replace(spec.train, seed=seed))
    spec_epochs = spec.train.epochs
    spec = ir.with_epochs(spec, total_epochs)  # cosine's default t_max follows --epochs
    out = output_dir(spec, out_dir, ckpt_in)
    if meta is not None and (
        meta["epoch"] >= total_epochs
        or meta.get("stopped_early")
        or meta.get("stopped_by_callback")
    ):
        return _nothing_to_do(ckpt_in, meta, total_epochs, out, quiet, echo)

    if prepared is None:
        base = Path(base_dir) if base_dir is not None else None  # None: the spec's folder
        prepared = fdata.prepare(spec, base)
    spec = prepared.spec or spec  # `input auto` / `linear(outputs)` resolved from the data
    if meta is not None:
        check_schema(out / SCHEMA_FILE, prepared.schema, f"checkpoint {ckpt_in}")
    if not quiet:
        for warning in fdata.data_warnings(spec, prepared.train.y):
            (echo or (lambda s: print(s, file=sys.stderr)))(f"warning: {warning}")
    state = RunState(spec, out, seed, total_epochs, prepared, init)
    state.spec_epochs = spec_epochs
    # One run per folder: a second one would mix its files with this one's.
    with fio.folder_lock(out, "run folder"):
        fio.remove_run_temps(out, RUN_FILES)  # left by a killed run; no one else writes here
        return _train_locked(state, spec, meta, ckpt_in, ck_arrays, quiet, echo, plot, callbacks)


def _train_locked(state, spec, meta, ckpt_in, ck_arrays, quiet, echo, plot, callbacks):
    """The run once its folder is locked: resume, the epochs, the final files."""
    prepared, total_epochs, out = state.prepared, state.total_epochs, state.out
    if not quiet:
        for note in prepared.notes:
            (echo or (lambda s: print(s, file=sys.stderr, flush=True)))(note)
    if meta is not None:
        state.resume(ckpt_in, meta, ck_arrays)
    if prepared.preprocess is not None:
        prepared.preprocess.save(out / "preprocess.npz")
    if prepared.schema is not None:
        fio.atomic_write_text(out / SCHEMA_FILE, prepared.schema.to_json())
    elif (out / SCHEMA_FILE).exists():
        (out / SCHEMA_FILE).unlink()  # an older run's schema must not describe this one
    # The state a resume would start from, kept in memory (not written: an
    # older run's files in `out` stay until this run finishes its first epoch).
    start_ckpt = state.checkpoint_bytes()

    # layers.jsonl (per-layer norms, dead units) is part of every run folder
    callbacks = (LayerStats(), *callbacks)
    batches = Batches(prepared.train, state.batch, spec.train.shuffle)
    step = Step(spec, state.net, state.loss_fn, state.opt, state.dropout_rng)
    steps_per_epoch = -(-state.n // state.batch)
    progress = _Progress(quiet, echo, total_epochs * steps_per_epoch, state.epoch * steps_per_epoch)
    _callbacks(callbacks, "on_train_begin", state)
    try:
        # Overflow in a diverging run is detected and explained below; numpy's
        # RuntimeWarnings would only print noise ahead of the diagnosis.
        with _SignalCatcher() as sig, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for epoch in range(state.epoch + 1, total_epochs + 1):
                state.epoch = epoch
                if sig.signum is not None:  # arrived during the last epoch's bookkeeping
                    raise state.interrupted(sig.signum, start_ckpt)
                t0 = time.perf_counter()
                state.lr = float(state.sched.lr)
                row = _train_epoch(state, step, batches, sig, progress)
                if sig.signum is not None:
                    raise state.interrupted(sig.signum, start_ckpt)
                _end_epoch(state, row, t0, callbacks, progress)
                if state.stopped:
                    break
    finally:
        progress.close()
    return _finish(state, plot, callbacks)


def _finish(state: RunState, plot: bool, callbacks) -> dict[str, Any]:
    """The final weights (the best epoch's when early stopping restores them), summary.json
    with the test figures, the plot."""
    es = state.spec.train.early_stop
    restored = state.stopped_early and es.restore_best and state.best_theta is not None
    if restored:
        state.net.theta[...] = state.best_theta
    _save_weights(state)
    summary = _summary(state, state.best_epoch if restored else None)
    fio.atomic_write_json(state.out / "summary.json", summary)
    if plot and state.history:  # before the callbacks' end, so a tracker can log the pictures
        from . import plot as fplot

        fplot.pictures(state.out, state.spec, state.net, state.prepared)
    _callbacks(callbacks, "on_train_end", state, summary)
    return summary


def _summary(state: RunState, restored_epoch: int | None = None) -> dict:
    """The run's figures: of the last epoch, or of `restored_epoch` when its weights were
    restored (the figures must describe the weights that were saved)."""
    spec, history = state.spec, state.history
    last = history[-1] if history else {}
    if restored_epoch is not None:
        last = next((m for m in history if m["epoch"] == restored_epoch), last)
    s: dict[str, Any] = {
        "name": spec.name,
        "spec": str(spec.path),
        "spec_sha256": spec.sha256,
        "epochs": history[-1]["epoch"] if history else 0,
        "weights_epoch": last.get("epoch", 0),  # the epoch whose weights weights.npz holds
        "num_params": int(spec.model.num_params),
        "stopped_early": state.stopped_early,
        "stopped_by_callback": state.stopped_by_callback,
        # the sum of the epochs' times, so a resumed run reports its whole training time
        "seconds": float(state.seconds_total),
    }
    for k, v in last.items():
        if k not in ("epoch", "seconds"):
            s[k] = v
    best_epoch = state.best_epoch
    if best_epoch is None and history:
        key = "val_loss" if "val_loss" in last else "train_loss"
        finite = [m for m in history if math.isfinite(m[key])]
        if finite:
            best_epoch = min(finite, key=lambda m: m[key])["epoch"]
    s["best_epoch"] = best_epoch
    test = state.prepared.test
    if test is not None and len(test):
        tout = state.net.predict(test.x, EVAL_BATCH)
        s.update(
            _eval_metrics(
                spec.task, spec.loss.kind, state.loss_fn, tout, test.y, "test", state.scaling
            )
        )
    return s


def evaluate(
    spec: ir.Spec,
    weights_path: str | os.PathLike | Mapping[str, np.ndarray],
    base_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Loss and task figures of saved weights on the spec's test data.

    Falls back to the validation split, then to the training set, when the
    spec has no test data; the result's `split` says which one was used.
    """
    if spec.data is None or spec.data.train is None:
        raise TrainingError(f"{spec.path}: the spec has no data to evaluate on")
    base = Path(base_dir) if base_dir is not None else None  # None: data.py uses the spec's folder
    prepared = fdata.prepare(spec, base)
    spec = prepared.spec or spec
    if not isinstance(weights_path, Mapping):  # a weights file: its run's schema must match
        check_schema(
            Path(weights_path).parent / SCHEMA_FILE, prepared.schema, f"weights {weights_path}"
        )
    scaling = fdata.target_scaling(prepared.schema)
    net = interpreter.Network(spec.model, rng=np.random.default_rng(0))
    if isinstance(weights_path, Mapping):  # the weights themselves (the Python API)
        net.load_params(weights_path)
    else:
        net.load_params(fio.load_params(weights_path, spec.model, "weights", spec=spec))
    loss_fn = losses.make_loss(spec.loss)
    for split_name, split in (
        ("test", prepared.test),
        ("val", prepared.val),
        ("train", prepared.train),
    ):
        if split is not None and len(split):
            out = net.predict(split.x, EVAL_BATCH)
            m = _eval_metrics(spec.task, spec.loss.kind, loss_fn, out, split.y, split_name, scaling)
            result: dict[str, Any] = {"split": split_name, "rows": len(split)}
            # plain names (loss, accuracy, ...) plus the prefixed ones
            result.update({k.split("_", 1)[1]: v for k, v in m.items()})
            result.update(m)
            return result
    raise DataError(f"{spec.path}: no rows to evaluate on")
