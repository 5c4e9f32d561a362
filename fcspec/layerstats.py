"""Per-epoch statistics of every layer, recorded during training into `layers.jsonl`.

`train.run` always runs a `LayerStats` callback (first, before the caller's),
so every run folder holds the pictures' raw material (`fcspec plot` draws it):
one JSON object per finished epoch beside `metrics.jsonl`, whose keys stay
as they were:

    {"epoch": 3,
     "fc1.weight.norm": 12.1, "fc1.weight.grad_norm": 0.031, "fc1.bias.norm": ...,
     "relu_1.dead": 0.04, ...}

- `<param>.norm`: the 2-norm of the parameter after the epoch;
- `<param>.grad_norm`: the 2-norm of its gradient in the epoch's last step
  (regularization included, before clipping: what the optimizer was given
  unless `clip_grad_norm` scaled it);
- `<relu layer>.dead`: the fraction of the layer's units that output 0 for
  every row of a probe batch (the first `PROBE_ROWS` training rows, in
  inference mode): units that no longer learn.

A resumed run keeps the rows of the epochs its checkpoint holds.  The cost is
one inference pass over the probe batch and one pass over the parameters per
epoch.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from . import io as fio

PROBE_ROWS = 512
FILE = "layers.jsonl"


def _norm(a: np.ndarray) -> float:
    v = a.ravel()
    return math.sqrt(float(np.dot(v.astype(np.float64), v.astype(np.float64))))


def read(path) -> list[dict[str, Any]]:
    """The rows of a `layers.jsonl` (or `metrics.jsonl`); [] when absent. A partly written
    last line (a file being replaced) is skipped."""
    rows = []
    try:
        text = open(path, encoding="utf-8").read()
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


class LayerStats:
    """The callback that writes `layers.jsonl` (see the module doc)."""

    def __init__(self, probe_rows: int = PROBE_ROWS):
        self.probe_rows = probe_rows
        self.rows: list[dict[str, Any]] = []
        self.probe: np.ndarray | None = None

    def on_train_begin(self, state) -> None:
        # a resumed run continues the file of the epochs it resumes from
        self.rows = [r for r in read(state.out / FILE) if r.get("epoch", 0) <= state.epoch]
        train = state.prepared.train
        k = min(self.probe_rows, len(train))
        self.relus = [i for i, l in enumerate(state.spec.model.layers) if l.op == "relu"]
        if self.relus and k:
            buf = np.empty((k,) + train.samples.shape[1:], np.float32)
            self.probe = np.array(train.rows(slice(0, k), buf), np.float32, copy=True)

    def stats(self, state) -> dict[str, Any]:
        row: dict[str, Any] = {"epoch": state.epoch}
        for name, p in state.params.items():
            row[f"{name}.norm"] = _norm(p)
            row[f"{name}.grad_norm"] = _norm(state.grads[name])
        if self.probe is not None:
            net = state.net
            net.forward(self.probe, training=False)
            outputs = net.layer_outputs()
            for i in self.relus:
                alive = (outputs[i] > 0).any(axis=0)
                row[f"{state.spec.model.layers[i].name}.dead"] = float(1.0 - alive.mean())
        return row

    def on_epoch_end(self, state, row) -> None:
        self.rows.append(self.stats(state))
        fio.atomic_write_jsonl(state.out / FILE, self.rows)
