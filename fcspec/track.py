"""Experiment tracking: TensorBoard event files and MLflow runs, as training callbacks.

    fcspec run specs/digits.fc --tensorboard runs/tb     # then: tensorboard --logdir runs/tb
    fcspec run specs/digits.fc --mlflow sqlite:///mlflow.db

or from Python, `train.run(spec, callbacks=[TensorBoard("runs/tb"), MLflow("sqlite:///mlflow.db")])`.

`TensorBoard(logdir)` writes, through tensorboardX (no torch, no TensorFlow):
every number of a `metrics.jsonl` row as a scalar under the same name
(`train_loss`, `val_accuracy`, `lr`, ...), the per-layer statistics of
`layers.jsonl` as scalars under `layers/`, a histogram of every parameter
(`fc1.weight`) and of its last-step gradient (`fc1.weight.grad`) per epoch,
and the resolved spec's hyperparameters (TensorBoard's HParams tab) with the
final figures.

`MLflow(uri)` logs to an MLflow tracking store (`sqlite:///mlflow.db` works
offline; a `file:` folder or an `http://` server too): the resolved spec as
parameters (`optimizer.lr`, `train.batch`, `model.fc1.units`, ...), every
metric per epoch (step = epoch), and at the end the test figures, the spec
file, weights.npz, summary.json, metrics.jsonl, layers.jsonl, the pictures of
`--plot` and an ONNX
export of the final model (`onnx=False` skips it).  A run that fails or is
interrupted is ended with status FAILED / KILLED by `close`.

Both need the `track` extra; without it they fail at construction with a
one-line hint.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import ir
from .errors import FcspecError

HINT = "pip install -e '.[track]'"


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FcspecError(
            f"{what} needs {module.split('.')[0]}, which is not installed", hint=HINT
        ) from None


def hyperparameters(spec: ir.Spec) -> dict[str, Any]:
    """The resolved spec flattened to `section.key` -> a number, bool or string."""
    data = ir.to_data(spec)
    flat: dict[str, Any] = {"name": spec.name, "task": spec.task}

    def walk(prefix: str, v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, (list, tuple)):
            flat[prefix] = ",".join(str(x) for x in v)
        elif v is None:
            flat[prefix] = "none"
        else:
            flat[prefix] = v

    model = data.pop("model")
    for layer in model["layers"]:
        for k, v in layer["attrs"].items():
            walk(f"model.{layer['name']}.{k}", v)
        flat[f"model.{layer['name']}.op"] = layer["op"]
    flat["model.input"] = ",".join(str(d) for d in model["input_shape"])
    flat["model.num_params"] = model["num_params"]
    for section in ("loss", "optimizer", "schedule"):
        sec = data.get(section) or {}
        flat[f"{section}.kind"] = sec.get("kind")
        walk(section, sec.get("options", {}))
    walk("regularize", data.get("regularize") or {})
    walk("data", data.get("data") or {})
    walk("train", data.get("train") or {})
    return {k: v for k, v in flat.items() if k}


def _numbers(row: dict[str, Any]):
    for k, v in row.items():
        if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool):
            if math.isfinite(v):
                yield k, float(v)


def _layer_row(state) -> dict[str, Any]:
    from .layerstats import FILE, read

    rows = read(state.out / FILE)
    return rows[-1] if rows and rows[-1].get("epoch") == state.epoch else {}


class TensorBoard:
    """Write the run to TensorBoard event files in `logdir` (see the module doc)."""

    def __init__(self, logdir: str | Path, histograms: bool = True):
        self._tbx = _need("tensorboardX", "--tensorboard")
        self.logdir = Path(logdir)
        self.histograms = histograms
        self.writer = None

    def on_train_begin(self, state) -> None:
        self.writer = self._tbx.SummaryWriter(str(self.logdir))
        self.hparams = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in hyperparameters(state.spec).items()
        }

    def on_epoch_end(self, state, row) -> None:
        w, epoch = self.writer, state.epoch
        for k, v in _numbers(row):
            w.add_scalar(k, v, epoch)
        for k, v in _numbers(_layer_row(state)):
            w.add_scalar(f"layers/{k}", v, epoch)
        if self.histograms:
            for name, p in state.params.items():
                w.add_histogram(name, np.asarray(p, np.float64), epoch)
                w.add_histogram(f"{name}.grad", np.asarray(state.grads[name], np.float64), epoch)
        w.flush()

    def on_train_end(self, state, summary) -> None:
        from tensorboardX.summary import hparams

        final = {f"hparam/{k}": v for k, v in _numbers(summary) if k != "seconds"}
        exp, ssi, sei = hparams(self.hparams, final)
        fw = self.writer._get_file_writer()
        for s in (exp, ssi, sei):
            fw.add_summary(s)
        for k, v in final.items():
            self.writer.add_scalar(k, v, state.epoch)
        self.close()

    def close(self, status: str = "FINISHED") -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflow:
    """Log the run to the MLflow tracking store at `uri` (see the module doc)."""

    def __init__(
        self,
        uri: str,
        experiment: str | None = None,
        run_name: str | None = None,
        onnx: bool = True,
    ):
        self._tracking = _need("mlflow.tracking", "--mlflow")
        self.uri, self.experiment, self.run_name, self.onnx = uri, experiment, run_name, onnx
        self.client = None
        self.run_id: str | None = None

    def on_train_begin(self, state) -> None:
        from mlflow.entities import Param

        self.client = client = self._tracking.MlflowClient(tracking_uri=self.uri)
        name = self.experiment or state.spec.name
        exp = client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(name)
        run = client.create_run(
            exp_id,
            run_name=self.run_name or state.out.name,
            tags={"fcspec.spec": str(state.spec.path), "fcspec.sha256": state.spec.sha256},
        )
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in hyperparameters(state.spec).items()]
        params.append(Param("train.seed_used", str(state.seed)))
        params.append(Param("train.epochs_total", str(state.total_epochs)))
        for i in range(0, len(params), 100):  # the store's limit per batch
            client.log_batch(self.run_id, params=params[i : i + 100])

    def _metrics(self, row: dict[str, Any], step: int):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        return [Metric(k.replace("/", "."), v, now, step) for k, v in _numbers(row)]

    def on_epoch_end(self, state, row) -> None:
        metrics = self._metrics(row, state.epoch)
        metrics += self._metrics(
            {f"layers.{k}": v for k, v in _layer_row(state).items()}, state.epoch
        )
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def on_train_end(self, state, summary) -> None:
        final = {k: v for k, v in summary.items() if k.startswith("test_")}
        if final:
            self.client.log_batch(self.run_id, metrics=self._metrics(final, state.epoch))
        out = state.out
        files = [Path(state.spec.path)] if state.spec.path else []
        files += [out / f for f in ("weights.npz", "summary.json", "metrics.jsonl", "layers.jsonl")]
        files += [out / f for f in ("curves.png", "weights.png", "boundary.png")]  # --plot's
        if self.onnx:
            from . import onnx_export

            files.append(Path(onnx_export.export_file(state.spec, None, out / "weights.npz")))
        for f in files:
            if f.is_file():
                self.client.log_artifact(self.run_id, str(f))
        self.close()

    def close(self, status: str = "FINISHED") -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
            self.run_id = None
