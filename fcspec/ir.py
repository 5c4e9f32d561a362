"""The IR: what will run.  Built by `check.py` from the AST, read by every backend.

Everything is resolved here: PyTorch's defaults are filled in, every layer has a
stable name, an input and output shape and the shapes of its parameters.  The
backends never look at the source text or guess a default.

Options of losses, optimizers and schedules live in plain dicts whose keys are
exactly PyTorch's keyword arguments (`lr`, `betas`, `label_smoothing`, ...), all
present, so a backend reads `opt.options["momentum"]` without a fallback.
"""

from __future__ import annotations

import dataclasses
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


# `input auto` and `linear(outputs)` leave widths to the data: until `resolve` fills them
# in, an unknown width is 0 in every shape and the layer's `units` attribute is OUTPUTS.
OUTPUTS = "outputs"


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    input_shape: Shape
    layers: tuple[Layer, ...]
    span: Span | None = field(default=None, compare=False)
    auto: tuple[str, ...] = ()  # "input" and/or "outputs": widths taken from the data

    @property
    def pending(self) -> bool:
        """Some width still comes from the data (see `resolve`)."""
        return bool(self.auto) and (
            0 in self.input_shape or any(l.attrs.get("units") == OUTPUTS for l in self.layers)
        )

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
    # options the checker defaulted to the spec's epochs (cosine's t_max): a run of
    # another length (--epochs N) resolves them again, see `with_epochs`
    from_epochs: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class Regularize:
    l1: float = 0.0  # adds l1 * sum(|W|) over linear weights (not biases)
    l2: float = 0.0  # adds l2 * sum(W^2)
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DataSource:
    kind: str  # npz, csv, parquet, idx, mnist, dataset
    args: dict[str, Any]  # npz: path, x, y; csv / parquet: path, target and the table options
    #                       (catalog.SOURCES); idx: images, labels; mnist: split; dataset: name.
    #                       Paths as written.
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Data:
    train: DataSource | None
    test: float | DataSource | None = None  # a source, or a fraction of train held out first
    validate: float | DataSource | None = None  # a fraction of train, or a source
    scale: float = 1.0  # inputs are divided by this
    normalize: str = "none"  # none | standard | minmax, statistics from train only
    normalize_target: str = "none"  # none | standard (regression), statistics from train only
    statistics: str | None = None  # a preprocess.npz used as it is (relative to the spec)
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


def resolve(spec: Spec, input_width: int | None, outputs: int | None) -> Spec:
    """`spec` with `input auto` and `linear(outputs)` replaced by the data's widths.

    Shapes and parameter shapes are recomputed layer by layer; the spec's hash stays
    the one of the text as written (a checkpoint or an export of the same spec and
    the same data resolves to the same widths, and the schema saved beside the
    weights says which)."""
    import dataclasses
    import math as _math

    m = spec.model
    if not m.pending:
        return spec
    shape = m.input_shape
    if "input" in m.auto:
        if input_width is None or input_width < 1:
            raise ValueError("input auto needs the data's width")
        shape = (int(input_width),)
    layers = []
    cur = shape
    for layer in m.layers:
        attrs, params, out = dict(layer.attrs), {}, cur
        if layer.op == "linear":
            units = attrs["units"]
            if units == OUTPUTS:
                if outputs is None or outputs < 1:
                    raise ValueError("linear(outputs) needs the data's number of outputs")
                units = attrs["units"] = int(outputs)
            params["weight"] = (units, cur[0])
            if attrs.get("bias", True):
                params["bias"] = (units,)
            out = (units,)
        elif layer.op == "flatten":
            out = (_math.prod(cur),)
        layers.append(
            dataclasses.replace(layer, attrs=attrs, in_shape=cur, out_shape=out, params=params)
        )
        cur = out
    model = dataclasses.replace(m, input_shape=shape, layers=tuple(layers))
    return dataclasses.replace(spec, model=model)


def resolve_from_params(spec: Spec, params: dict) -> Spec:
    """`resolve` with the widths read off trained weights (export, verify, eval): `params`
    maps names to arrays or to their shapes (`io.weights_shapes`, read from headers)."""
    m = spec.model
    if not m.pending:
        return spec
    linears = [l for l in m.layers if l.op == "linear"]
    width = outputs = None
    try:
        if "input" in m.auto and linears:
            width = int(_shape(params[f"{linears[0].name}.weight"])[1])
        for l in linears:
            if l.attrs.get("units") == OUTPUTS:
                outputs = int(_shape(params[f"{l.name}.weight"])[0])
    except (KeyError, AttributeError, IndexError, TypeError):
        return spec  # the weights' own check reports what is missing
    return resolve(spec, width, outputs)


def _shape(v: Any) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple) else tuple(v.shape)


# ---------------------------------------------------------------------------
# Canonical JSON: stable key order, no spans, tuples as lists.


_OMITTED_AT_DEFAULT = ("auto", "normalize_target", "statistics")


def to_data(obj: Any) -> Any:
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            if f.name in ("span", "from_epochs") or (
                isinstance(obj, Spec) and f.name in ("path", "source")
            ):
                continue
            if f.name in _OMITTED_AT_DEFAULT and getattr(obj, f.name) == f.default:
                continue  # settings added later: older specs keep their hash (and checkpoints)
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


def with_epochs(spec: Spec, epochs: int) -> Spec:
    """`spec` trained for `epochs` epochs (`--epochs N`): the train block's epochs and
    every schedule option that defaulted to them (cosine's t_max) follow.  The hash
    stays: it names the file, and a checkpoint of the run must still match it."""
    epochs = int(epochs)
    if spec.train is None or spec.train.epochs == epochs:
        return spec
    sched = spec.schedule
    if sched is not None and sched.from_epochs:
        options = dict(sched.options) | {k: epochs for k in sched.from_epochs}
        sched = dataclasses.replace(sched, options=options)
    return dataclasses.replace(
        spec, train=dataclasses.replace(spec.train, epochs=epochs), schedule=sched
    )


def semantic_hash(spec: Spec) -> str:
    """sha256 of the canonical JSON without the hash itself: equal for equal meaning."""
    data = to_data(spec)
    data.pop("sha256", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def to_json(spec: Spec) -> str:
    return json.dumps(to_data(spec), indent=2, sort_keys=True) + "\n"
