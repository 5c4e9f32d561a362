"""Human views of the IR: the `show` layer table and the `explain` walk-through.

Both read only the IR (and, for explain, the optimizer's and schedule's own
descriptions), so what they print is what will run.
"""

from __future__ import annotations

import math

from . import catalog, ir

MAX_LR_ROWS = 10_000


def _shape(s: tuple[int, ...]) -> str:
    # 0 is a width `input auto` / `linear(outputs)` leaves to the data
    return "[" + ", ".join(str(d) if d else "?" for d in s) + "]"


def _count(layer_or_model) -> str:
    shapes = (
        layer_or_model.params.values()
        if isinstance(layer_or_model, ir.Layer)
        else layer_or_model.param_shapes().values()
    )
    if any(0 in s for s in shapes):
        return "?"
    return f"{layer_or_model.num_params:,}"


def data_note(spec: ir.Spec, note: str | None) -> list[str]:
    """The line saying which widths come from the data, and what they are."""
    if not spec.model.auto:
        return []
    what = " and ".join(spec.model.auto)
    if spec.model.pending:
        return [f"{what} from the data (not read{': ' + note if note else ''})"]
    return [f"{what} from the data{': ' + note if note else ''}"]


def format_bytes(n: float) -> str:
    """A byte count for people: `124 B`, `198.54 KB`, `3.74 MB` (units of 1024), the one
    formatter of every size fcspec prints."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def show(spec: ir.Spec, note: str | None = None) -> str:
    """A layer table like Keras' `model.summary()`; `note` says what the data resolved."""
    rows = [("Layer (op)", "Output shape", "Param #")]
    rows.append(("input", _shape(spec.model.input_shape), "0"))
    for layer in spec.model.layers:
        rows.append((f"{layer.name} ({layer.op})", _shape(layer.out_shape), _count(layer)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    widths[0] = max(widths[0], 28)
    widths[1] = max(widths[1], 14)
    widths[2] = max(widths[2], 9)
    total_width = sum(widths) + 4

    def line(r):
        return f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}".rstrip()

    n = spec.model.num_params
    out = [
        f"Model: {spec.name}  ({spec.path})",
        "=" * total_width,
        line(rows[0]),
        "-" * total_width,
    ]
    out += [line(r) for r in rows[1:]]
    out.append("=" * total_width)
    if spec.model.pending:
        out.append("Total params: from the data")
    else:
        out.append(f"Total params: {n:,} ({format_bytes(n * 4)} as float32)")
        out.append(f"Trainable params: {n:,}")
    out.append(
        f"Loss: {spec.loss.kind} ({spec.task})   Optimizer: {spec.optimizer.kind}"
        f"(lr = {spec.optimizer.lr:g})"
    )
    out += data_note(spec, note)
    return "\n".join(out) + "\n"


def _value(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_value(i) for i in v) + ")"
    if isinstance(v, str):
        return v
    return str(v)


def _options(options: dict) -> str:
    return ", ".join(f"{k} = {_value(v)}" for k, v in options.items())


def explain(spec: ir.Spec, note: str | None = None) -> str:
    """Every resolved default, the optimizer's update rule and the learning rate per epoch."""
    from . import optim, schedules  # the numerics modules describe their own rules

    out: list[str] = [f"{spec.name}  ({spec.path})", ""]
    m = spec.model
    out.append(
        f"Model: input {_shape(m.input_shape)}, {len(m.layers)} layers, {_count(m)} parameters"
    )
    out += ["  " + line for line in data_note(spec, note)]
    for layer in m.layers:
        attrs = f"({_options(layer.attrs)})" if layer.attrs else ""
        line = f"  {layer.name} = {layer.op}{attrs}: {_shape(layer.in_shape)} -> {_shape(layer.out_shape)}"
        out.append(line)
        if layer.op == "linear":
            fan_in = layer.in_shape[0]
            init = layer.attrs["init"]
            if not fan_in:
                out.append(
                    f"      weight {_shape(layer.params['weight'])} ~ {init} (fan-in from the data)"
                )
            elif init == "default":
                bound = 1 / math.sqrt(fan_in)
                out.append(
                    f"      weight {_shape(layer.params['weight'])} and bias ~ U(-{bound:.4g}, {bound:.4g})"
                    f"  (nn.Linear's default: 1/sqrt(in), in = {fan_in})"
                )
            else:
                out.append(f"      weight {_shape(layer.params['weight'])} ~ {init}, bias = 0")
        elif layer.op == "dropout":
            out.append(
                f"      training: x * mask / (1 - {layer.attrs['p']:g}); inference: identity"
            )
        elif layer.op in catalog.LAYERS:
            out.append(f"      {catalog.LAYERS[layer.op].doc}")
    out.append("")
    out.append(f"Loss: {spec.loss.kind}({_options(spec.loss.options)})   task: {spec.task}")
    formula = catalog.LOSSES[spec.loss.kind].formula
    if spec.loss.options.get("reduction") == "sum":
        formula = formula.replace("mean", "sum")
    out.append(f"  {formula}")
    if spec.regularize.l1 or spec.regularize.l2:
        terms = []
        if spec.regularize.l1:
            terms.append(f"{spec.regularize.l1:g} * sum(|W|)")
        if spec.regularize.l2:
            terms.append(f"{spec.regularize.l2:g} * sum(W^2)")
        out.append(f"  + {' + '.join(terms)} over every linear weight (not biases)")
    out.append("")
    out.append("Optimizer:")
    out += ["  " + l for l in optim.describe(spec.optimizer).splitlines()]
    out.append("")
    s = spec.schedule
    epochs = spec.train.epochs
    out.append("Schedule (stepped after each epoch):")
    out += ["  " + l for l in schedules.describe(s).splitlines()]
    # Stepping the schedule costs one step an epoch: list at most MAX_LR_ROWS epochs.
    table = schedules.lr_table(s, spec.optimizer.lr, min(epochs, MAX_LR_ROWS))
    if table is not None:
        shown = list(enumerate(table, start=1))
        if len(shown) > 24:
            shown = shown[:12] + [None] + shown[-6:]
        if epochs > MAX_LR_ROWS:
            shown.append(None)
        out.append("  learning rate per epoch:")
        for item in shown:
            out.append("    ..." if item is None else f"    epoch {item[0]:>4}: {item[1]:.6g}")
    out.append("")
    d = spec.data
    if d is None:
        out.append("Data: none (fcspec run needs a `data` section)")
    else:
        out.append("Data:")
        out.append(f"  train = {d.train.kind}({_options(d.train.args)})")
        if isinstance(d.test, float):
            out.append(
                f"  test = {d.test:g}: a seeded random {d.test:.0%} of train is held out for testing"
            )
        elif d.test is not None:
            out.append(f"  test = {d.test.kind}({_options(d.test.args)})")
        if isinstance(d.validate, float):
            out.append(
                f"  validate = {d.validate:g}: a seeded random {d.validate:.0%} of train is held out"
            )
        elif d.validate is not None:
            out.append(f"  validate = {d.validate.kind}({_options(d.validate.args)})")
        if d.statistics is not None:
            out.append(f"  inputs: (x / scale - shift) / divisor, saved in {d.statistics}")
        out.append(
            f"  inputs: x / {d.scale:g}"
            + {
                "none": "",
                "standard": ", then (x - mean) / std per feature, from the training split",
                "minmax": ", then (x - min) / (max - min) per feature, from the training split",
            }[d.normalize]
        )
        if d.normalize_target == "standard":
            out.append(
                "  target: trained as (y - mean) / std from the training split; every figure, "
                "eval, predict and the ONNX output are in the target's own units"
            )
    out.append("")
    t = spec.train
    batch = (
        "full (batch gradient descent: one step per epoch)"
        if t.batch is None
        else (
            "1 (stochastic gradient descent: one step per sample)"
            if t.batch == 1
            else f"{t.batch} (mini-batch gradient descent)"
        )
    )
    out.append("Train:")
    out.append(f"  epochs = {t.epochs}, batch = {batch}")
    out.append(
        f"  shuffle = {_value(t.shuffle)} (seed {t.seed}: the same seed gives the same weights, bit for bit)"
    )
    if t.clip_grad_norm is not None:
        out.append(
            f"  clip_grad_norm = {t.clip_grad_norm:g}: gradients scaled so their global norm is at most that"
        )
    if t.early_stop is not None:
        e = t.early_stop
        out.append(
            f"  early_stop: stop when {e.monitor} has not improved ({e.mode}, by more than "
            f"{e.min_delta:g}) for {e.patience} epochs; restore_best = {_value(e.restore_best)}"
        )
    out.append(f"  metrics = [{', '.join(t.metrics)}]")
    return "\n".join(out) + "\n"
