"""The IR: what will run.  Built by `check.py` from the AST, read by every backend.

Everything is resolved here: PyTorch's defaults are filled in, every layer has a
stable name, an input and output shape and the shapes of its parameters.  The
backends never look at the source text or guess a default.

Options of losses, optimizers and schedules live in plain dicts whose keys are
exactly PyTorch's keyword arguments (`lr`, `betas`, `label_smoothing`, ...), all
present, so a backend reads `opt.options["momentum"]` without a fallback.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from .errors import Span

Shape = tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Layer:
    name: str  # "fc1" as written, or a generated one such as "relu_1"
    op: str  # a key of ops.OPS: linear, flatten, dropout, relu, ...
    attrs: dict[str, Any]  # resolved options, e.g. linear: units, bias, init
    in_shape: Shape  # one sample, no batch dimension
    out_shape: Shape
    params: dict[str, Shape]  # linear: {"weight": (out, in), "bias": (out,)}
    span: Span | None = field(default=None, compare=False)

    @property
    def num_params(self) -> int:
        return sum(math.prod(s) for s in self.params.values())


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    span: Span | None = field(default=None, compare=False)

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def num_params(self) -> int:
        return sum(layer.num_params for layer in self.layers)

    def param_shapes(self) -> dict[str, Shape]:
        """`{"fc1.weight": (128, 784), "fc1.bias": (128,), ...}` in layer order."""
        return {f"{l.name}.{k}": s for l in self.layers for k, s in l.params.items()}


@dataclass(frozen=True, slots=True)
class Loss:
    kind: str  # cross_entropy, nll, mse, mae, huber, bce, bce_with_logits, kl_div
    options: dict[str, Any]  # reduction, label_smoothing, weight, delta (by kind)
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Optimizer:
    kind: str  # sgd, adam, adamw, rmsprop, adagrad
    options: dict[str, Any]  # lr and every other torch.optim keyword, resolved
    span: Span | None = field(default=None, compare=False)

    @property
    def lr(self) -> float:
        return self.options["lr"]


@dataclass(frozen=True, slots=True)
class Schedule:
    kind: str  # constant, step, multistep, exponential, cosine, polynomial, plateau
    options: dict[str, Any]
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Regularize:
    l1: float = 0.0  # adds l1 * sum(|W|) over linear weights (not biases)
    l2: float = 0.0  # adds l2 * sum(W^2)
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DataSource:
    kind: str  # npz, csv, idx, mnist, dataset
    args: dict[str, Any]  # npz: path, x, y; csv: path, target; idx: images, labels;
    #                       mnist: split; dataset: name.  Paths as written.
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Data:
    train: DataSource | None
    test: float | DataSource | None = None  # a source, or a fraction of train held out first
    validate: float | DataSource | None = None  # a fraction of train, or a source
    scale: float = 1.0  # inputs are divided by this
    normalize: str = "none"  # none | standard | minmax, statistics from train only
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class EarlyStop:
    monitor: str = "val_loss"  # val_loss, val_accuracy, train_loss, ...
    patience: int = 5
    min_delta: float = 0.0
    mode: str = "min"  # min for losses, max for accuracies
    restore_best: bool = False  # Keras' restore_best_weights
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Train:
    epochs: int = 10
    batch: int | None = 32  # None = the full training set (batch gradient descent)
    shuffle: bool = True
    seed: int = 0
    early_stop: EarlyStop | None = None
    clip_grad_norm: float | None = None
    metrics: tuple[str, ...] = ()
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Spec:
    name: str  # the model's name
    path: str  # the .fc file as given
    sha256: (
        str  # of the canonical IR (the meaning, not the bytes): checkpoints and exports record it
    )
    task: str  # classification | binary | regression | distribution (from the loss)
    model: Model
    loss: Loss
    optimizer: Optimizer
    schedule: Schedule
    regularize: Regularize
    data: Data | None
    train: Train
    # The text the checker compiled (the exported graph's doc string); not part of the meaning.
    source: str = field(default="", compare=False, repr=False)

    @property
    def classes(self) -> int | None:
        """Number of classes of a classifier (1 for binary), else None."""
        if self.task == "classification":
            return self.model.output_shape[-1]
        if self.task == "binary":
            return 1
        return None


# ---------------------------------------------------------------------------
# Canonical JSON: stable key order, no spans, tuples as lists.


def to_data(obj: Any) -> Any:
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            if f.name == "span" or (isinstance(obj, Spec) and f.name in ("path", "source")):
                continue
            out[f.name] = to_data(getattr(obj, f.name))
        if isinstance(obj, Layer):
            out["num_params"] = obj.num_params
        if isinstance(obj, Model):
            out["num_params"] = obj.num_params
        return out
    if isinstance(obj, dict):
        return {str(k): to_data(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    return obj


def semantic_hash(spec: Spec) -> str:
    """sha256 of the canonical JSON without the hash itself: equal for equal meaning."""
    data = to_data(spec)
    data.pop("sha256", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def to_json(spec: Spec) -> str:
    return json.dumps(to_data(spec), indent=2, sort_keys=True) + "\n"
