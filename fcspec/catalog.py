"""Every name the language knows, one row each: options, defaults, ranges, and what it means.

This is the one place a layer, loss, optimizer, schedule or data source is
declared.  `check.py` validates calls against the rows; `resolve` fills
defaults and checks a row's options for the checker and both backends; the
backends take their tables from the rows (a loss's task and expected model
output, a layer's output, an optimizer's state vectors, a source's files);
`explain` and `docs/language.md` describe them.  The implementations live
beside their kind (ops.py, losses.py, optim.py, schedules.py, data.py), keyed
by the row's name; tests/test_tables.py checks that every row has one and
every implementation a row.  Defaults are PyTorch's (torch.nn, torch.optim,
torch.optim.lr_scheduler) so a spec means what the equivalent PyTorch
program means.

Imports nothing but the standard library: `fcspec check` stays fast.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # marks an option without a default


@dataclass(frozen=True)
class Opt:
    kind: str  # int, float, bool, str, choice, floats, ints, pair, names, source, number_or_source, int_or_full
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    choices: tuple[str, ...] = ()
    doc: str = ""
    # A None default the checker fills in from elsewhere in the spec (a schedule's t_max from
    # the epochs, a monitor from the data); a backend must be handed a value.
    derived: bool = False
    torch: str = ""  # a `data` or `train` setting's PyTorch counterpart (editor hovers)

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Problem:
    """What is wrong with a call's options: the option it is about (None: the call), why, a hint."""

    key: str | None
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Sig:
    """A callable name: its options in order, which may be given positionally, and a line of doc.

    `rules(options)` checks what involves several options (and may fill options derived
    from others); it yields `Problem`s.  `resolve` runs it for the checker and the backends.
    """

    opts: dict[str, Opt] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    doc: str = ""
    rules: Callable[[dict[str, Any]], Iterable[Problem]] | None = None
    # The PyTorch equivalent.  For a layer, loss, optimizer or schedule, the call that
    # `fcspec export --torch [--train]` writes (see `torch_call`): `{option}` is the
    # option's value, `[...]` is left out when an option inside it is unset, `{options}`
    # are all options as keywords; a function of the options where a template cannot say
    # it; text without a call (a schedule that needs no scheduler) writes nothing.  For
    # the rest, what a PyTorch user would write instead (editor hovers).
    torch: str | Callable[[Mapping[str, Any]], str] = ""


# What a model's output means.  A layer's row names what it outputs; "same" passes its
# input's meaning through (dropout is the identity at inference).
OUTPUTS = ("values", "probabilities", "class_probabilities", "log_probabilities", "same")


@dataclass(frozen=True)
class Layer(Sig):
    output: str = "values"  # one of OUTPUTS


@dataclass(frozen=True)
class Loss(Sig):
    """A loss: the task it trains (which fixes the targets' type), the model output it takes
    (`logits`, `probabilities`, `log_probabilities` or `values`), its formula for `explain`
    (`mean` reads `sum` under reduction = sum), and what the checker says about models
    that end otherwise: `hint` adds to the error when the model does not end in the layer
    that makes what it takes; `after[output]` is (severity, message, hint) for a model
    whose output is `output` (`{loss}` and `{last}` name the loss and the last layer)."""

    task: str = ""
    takes: str = "logits"
    formula: str = ""
    hint: str = ""
    after: dict[str, tuple[str, str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Optimizer(Sig):
    """An optimizer: `state(options)` names the float32 vectors of parameter size it keeps
    (torch.optim's state keys)."""

    state: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda options: ()


@dataclass(frozen=True)
class Source(Sig):
    """A data source: `files` are its options that name files (relative to the spec's folder)."""

    files: tuple[str, ...] = ()


# ---- range checks: each returns a complaint or None -------------------------


def _rule(doc: str, test: Callable[[Any], bool], complaint: str | None = None):
    """A range check that returns what is wrong (or None) and documents itself as `doc`."""

    def check(v: Any) -> str | None:
        return None if test(v) else (complaint or f"must be {doc}")

    check.doc = doc  # type: ignore[attr-defined]
    return check


def gt(lo: float):
    return _rule(f"> {lo:g}", lambda v: v > lo)


def ge(lo: float):
    return _rule(f">= {lo:g}", lambda v: v >= lo)


def in_closed_open(lo: float, hi: float):
    return _rule(f"in [{lo:g}, {hi:g})", lambda v: lo <= v < hi)


def in_closed(lo: float, hi: float):
    return _rule(f"in [{lo:g}, {hi:g}]", lambda v: lo <= v <= hi)


def in_open(lo: float, hi: float):
    return _rule(f"in ({lo:g}, {hi:g})", lambda v: lo < v < hi)


_betas = _rule(
    "two numbers in [0, 1)", lambda v: all(0 <= b < 1 for b in v), "must both be in [0, 1)"
)
_weights = _rule(
    "one number >= 0 per class", lambda v: all(w >= 0 for w in v), "class weights must be >= 0"
)


def _milestones_ok(v: tuple[int, ...]) -> bool:
    return bool(v) and all(m >= 1 for m in v) and list(v) == sorted(set(v))


_milestones = _rule(
    "strictly increasing epochs >= 1",
    _milestones_ok,
    "must be strictly increasing epochs, each >= 1",
)


# ---- layers ------------------------------------------------------------------

INITS = ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "zeros")

LAYERS: dict[str, Layer] = {
    "linear": Layer(
        {
            "units": Opt("int", check=ge(1), doc="output features"),
            "bias": Opt("bool", True, doc="learn an additive bias"),
            "init": Opt(
                "choice",
                "default",
                choices=INITS,
                doc="weight init; `default` is nn.Linear's U(-1/sqrt(in), 1/sqrt(in)) for weight "
                "and bias, the others leave the bias at zero",
            ),
        },
        ("units",),
        "fully connected: y = x W^T + b, W of shape [units, in]",
        torch="nn.Linear",
    ),
    "flatten": Layer(
        doc="reshape one sample to one dimension, like x.view(x.size(0), -1)", torch="nn.Flatten()"
    ),
    "dropout": Layer(
        {"p": Opt("float", 0.5, in_closed_open(0, 1), doc="probability of zeroing")},
        ("p",),
        "inverted dropout while training, identity at inference",
        output="same",
        torch="nn.Dropout(p={p})",
    ),
    "relu": Layer(doc="max(x, 0)", torch="nn.ReLU()"),
    "leaky_relu": Layer(
        {"negative_slope": Opt("float", 0.01, ge(0))},
        ("negative_slope",),
        "x if x > 0 else negative_slope * x",
        torch="nn.LeakyReLU(negative_slope={negative_slope})",
    ),
    "elu": Layer(
        {"alpha": Opt("float", 1.0, gt(0))},
        ("alpha",),
        "x if x > 0 else alpha (e^x - 1)",
        torch="nn.ELU(alpha={alpha})",
    ),
    "selu": Layer(
        doc="scale (x if x > 0 else alpha (e^x - 1)), PyTorch's constants", torch="nn.SELU()"
    ),
    "sigmoid": Layer(doc="1 / (1 + e^-x)", output="probabilities", torch="nn.Sigmoid()"),
    "tanh": Layer(doc="hyperbolic tangent", torch="nn.Tanh()"),
    "gelu": Layer(
        {"approximate": Opt("choice", "none", choices=("none", "tanh"))},
        ("approximate",),
        "x Phi(x); `tanh` uses the tanh approximation",
        torch="nn.GELU(approximate={approximate})",
    ),
    "silu": Layer(doc="x sigmoid(x) (swish)", torch="nn.SiLU()"),
    "softplus": Layer(
        {"beta": Opt("float", 1.0, gt(0)), "threshold": Opt("float", 20.0, gt(0))},
        ("beta",),
        "log(1 + e^(beta x)) / beta, linear above threshold",
        torch="nn.Softplus(beta={beta}, threshold={threshold})",
    ),
    "softmax": Layer(
        doc="probabilities over the last axis",
        output="class_probabilities",
        torch="nn.Softmax(dim=-1)",
    ),
    "log_softmax": Layer(
        doc="log-probabilities over the last axis",
        output="log_probabilities",
        torch="nn.LogSoftmax(dim=-1)",
    ),
}

ACTIVATIONS = tuple(k for k in LAYERS if k not in ("linear", "flatten", "dropout"))

# ---- losses ------------------------------------------------------------------

_REDUCTION = Opt("choice", "mean", choices=("mean", "sum"), doc="mean over the batch, or sum")

_TWICE = (
    "warning",
    "the model ends in `{last}` and `{loss}` applies log-softmax itself: softmax is applied twice",
    "remove the final `softmax` (train on logits); for probabilities at inference, "
    "export with `--probabilities`",
)
_AGAIN = (
    "warning",
    "the model ends in `{last}`; `{loss}` applies log-softmax again",
    "use `loss nll`, which takes log-probabilities",
)
_REGRESSION_AFTER = (
    "warning",
    "a regression loss (`{loss}`) after `{last}`",
    "for classification use `cross_entropy` on logits",
)
_NOT_CLASSES = {"class_probabilities": _REGRESSION_AFTER, "log_probabilities": _REGRESSION_AFTER}


def _kl_div_torch(o: Mapping[str, Any]) -> str:
    """fcspec's kl_div mean is PyTorch's `batchmean` (sum over classes, mean over samples)."""
    return f"nn.KLDivLoss(reduction={'batchmean' if o['reduction'] == 'mean' else 'sum'!r})"


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(
        {
            "label_smoothing": Opt("float", 0.0, in_closed(0, 1)),
            "weight": Opt("floats", None, _weights, doc="one weight per class"),
            "reduction": _REDUCTION,
        },
        doc="logits and class ids; applies log-softmax itself",
        task="classification",
        takes="logits",
        formula="l_n = -w[y_n] log_softmax(x_n)[y_n]; mean = sum(l_n) / sum(w[y_n])",
        after={
            "class_probabilities": _TWICE,
            "log_probabilities": _AGAIN,
            "probabilities": (
                "warning",
                "`{loss}` takes logits, but the model ends in `{last}`",
                "remove the final `{last}`",
            ),
        },
        torch="nn.CrossEntropyLoss(reduction={reduction}[, label_smoothing={label_smoothing}][, weight=torch.tensor({weight})])",
    ),
    "nll": Loss(
        {"weight": Opt("floats", None, _weights), "reduction": _REDUCTION},
        doc="log-probabilities (after log_softmax) and class ids",
        task="classification",
        takes="log_probabilities",
        formula="l_n = -w[y_n] x_n[y_n] (x = log-probabilities); mean = sum(l_n) / sum(w[y_n])",
        hint=", or use `cross_entropy` on logits",
        torch="nn.NLLLoss(reduction={reduction}[, weight=torch.tensor({weight})])",
    ),
    "mse": Loss(
        {"reduction": _REDUCTION},
        doc="mean squared error",
        task="regression",
        takes="values",
        formula="mean((x - y)^2)",
        after=_NOT_CLASSES,
        torch="nn.MSELoss(reduction={reduction})",
    ),
    "mae": Loss(
        {"reduction": _REDUCTION},
        doc="mean absolute error (alias l1)",
        task="regression",
        takes="values",
        formula="mean(|x - y|)",
        after=_NOT_CLASSES,
        torch="nn.L1Loss(reduction={reduction})",
    ),
    "huber": Loss(
        {"delta": Opt("float", 1.0, gt(0)), "reduction": _REDUCTION},
        ("delta",),
        "squared below delta, linear above",
        task="regression",
        takes="values",
        formula="0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta), d = x - y; mean",
        after=_NOT_CLASSES,
        torch="nn.HuberLoss(delta={delta}, reduction={reduction})",
    ),
    "bce": Loss(
        {"reduction": _REDUCTION},
        doc="binary cross-entropy on probabilities (after sigmoid)",
        task="binary",
        takes="probabilities",
        formula="-[y log x + (1 - y) log(1 - x)], each log clamped to >= -100; mean",
        hint=", or use `bce_with_logits` on logits (more stable)",
        torch="nn.BCELoss(reduction={reduction})",
    ),
    "bce_with_logits": Loss(
        {"reduction": _REDUCTION},
        doc="binary cross-entropy on logits (stable)",
        task="binary",
        takes="logits",
        formula="max(x, 0) - x y + log(1 + exp(-|x|)); mean",
        after={
            "probabilities": (
                "error",
                "`{loss}` applies the sigmoid itself, but the model already ends in `{last}`",
                "remove the final `{last}`, or use `bce`",
            )
        },
        torch="nn.BCEWithLogitsLoss(reduction={reduction})",
    ),
    "kl_div": Loss(
        {"reduction": _REDUCTION},
        doc="KL divergence: log-probabilities against target probabilities, batchmean",
        task="distribution",
        takes="log_probabilities",
        formula="sum(y (log y - x)) / N  (x = log-probabilities; PyTorch's batchmean)",
        torch=_kl_div_torch,
    ),
}
LOSS_ALIASES = {
    "l1": "mae",
    "crossentropy": "cross_entropy",
    "nll_loss": "nll",
    "mean_squared_error": "mse",
}

TASKS = {name: row.task for name, row in LOSSES.items()}  # loss -> task
# What a loss takes, in words (messages and docs).
TAKES_WORDS = {
    "logits": "logits",
    "probabilities": "probabilities",
    "log_probabilities": "log-probabilities",
    "values": "values",
}


def producer(takes: str) -> str | None:
    """The one layer whose output is what a loss takes (sigmoid for probabilities), if any."""
    names = [name for name, row in LAYERS.items() if row.output == takes]
    return names[0] if len(names) == 1 else None


def model_output(layers: Iterable[Any]) -> tuple[str, Any]:
    """(what the model's output means, the layer that decides it) for IR layers: the
    output of the last layer that does not pass its input's meaning through."""
    layers = list(layers)
    for layer in reversed(layers):
        out = LAYERS[layer.op].output if layer.op in LAYERS else "values"
        if out != "same":
            return out, layer
    return "values", (layers[-1] if layers else None)


def output_kind(task: str, layers: Iterable[Any]) -> str:
    """What an exported model's output is called: values (regression), probabilities,
    log_probabilities or logits."""
    if task == "regression":
        return "values"
    out, _ = model_output(layers)
    if out in ("probabilities", "class_probabilities"):
        return "probabilities"
    return out if out == "log_probabilities" else "logits"


# ---- optimizers --------------------------------------------------------------

_WD = Opt("float", 0.0, ge(0), doc="L2 penalty added to the gradient (PyTorch's weight_decay)")


def _nesterov(o: dict[str, Any]) -> Iterable[Problem]:
    if o["nesterov"] and (o["momentum"] <= 0 or o["dampening"] != 0):
        yield Problem(
            "nesterov",
            "nesterov momentum needs `momentum` > 0 and `dampening` = 0 (PyTorch's rule)",
            "set `momentum = 0.9`" if o["momentum"] <= 0 else "remove `dampening`",
        )


def _adam_state(o: Mapping[str, Any]) -> tuple[str, ...]:
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if o["amsgrad"] else ())


OPTIMIZERS: dict[str, Optimizer] = {
    "sgd": Optimizer(
        {
            "lr": Opt("float", 1e-3, gt(0), doc="learning rate"),
            "momentum": Opt("float", 0.0, ge(0)),
            "dampening": Opt("float", 0.0, ge(0)),
            "nesterov": Opt("bool", False),
            "weight_decay": _WD,
        },
        ("lr",),
        "stochastic gradient descent; batch size picks batch, mini-batch or stochastic",
        rules=_nesterov,
        # torch keeps no buffer without momentum; with it, the first step copies the gradient
        state=lambda o: ("momentum_buffer",) if o["momentum"] != 0 else (),
        torch="torch.optim.SGD(model.parameters(), {options})",
    ),
    "adam": Optimizer(
        {
            "lr": Opt("float", 1e-3, gt(0)),
            "betas": Opt("pair", (0.9, 0.999), _betas),
            "eps": Opt("float", 1e-8, ge(0)),
            "weight_decay": _WD,
            "amsgrad": Opt("bool", False),
        },
        ("lr",),
        "Adam (Kingma and Ba, 2014)",
        state=_adam_state,
        torch="torch.optim.Adam(model.parameters(), {options})",
    ),
    "adamw": Optimizer(
        {
            "lr": Opt("float", 1e-3, gt(0)),
            "betas": Opt("pair", (0.9, 0.999), _betas),
            "eps": Opt("float", 1e-8, ge(0)),
            "weight_decay": Opt("float", 0.01, ge(0), doc="decoupled decay"),
            "amsgrad": Opt("bool", False),
        },
        ("lr",),
        "Adam with decoupled weight decay (Loshchilov and Hutter)",
        state=_adam_state,
        torch="torch.optim.AdamW(model.parameters(), {options})",
    ),
    "rmsprop": Optimizer(
        {
            "lr": Opt("float", 1e-2, gt(0)),
            "alpha": Opt("float", 0.99, ge(0)),
            "eps": Opt("float", 1e-8, ge(0)),
            "weight_decay": _WD,
            "momentum": Opt("float", 0.0, ge(0)),
            "centered": Opt("bool", False),
        },
        ("lr",),
        "RMSprop (Hinton); eps outside the square root, as PyTorch",
        state=lambda o: (
            ("square_avg",)
            + (("momentum_buffer",) if o["momentum"] > 0 else ())
            + (("grad_avg",) if o["centered"] else ())
        ),
        torch="torch.optim.RMSprop(model.parameters(), {options})",
    ),
    "adagrad": Optimizer(
        {
            "lr": Opt("float", 1e-2, gt(0)),
            "lr_decay": Opt("float", 0.0, ge(0)),
            "weight_decay": _WD,
            "initial_accumulator_value": Opt("float", 0.0, ge(0)),
            "eps": Opt("float", 1e-10, ge(0)),
        },
        ("lr",),
        "Adagrad (Duchi et al.)",
        state=lambda o: ("sum",),
        torch="torch.optim.Adagrad(model.parameters(), {options})",
    ),
}

# ---- schedules ---------------------------------------------------------------

MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy", "val_mae", "val_rmse")


def mode_of(monitor: str) -> str:
    """The direction a monitored metric improves in: up for accuracies, down for the rest."""
    return "max" if monitor.endswith("accuracy") else "min"


def _mode_follows_monitor(o: dict[str, Any]) -> Iterable[Problem]:
    if o.get("mode") is None and isinstance(o.get("monitor"), str):
        o["mode"] = mode_of(o["monitor"])
    return ()


_GAMMA = Opt("float", 0.1, gt(0), doc="multiplicative factor")

SCHEDULES: dict[str, Sig] = {
    "constant": Sig(
        doc="the optimizer's lr throughout", torch="no scheduler: the optimizer's lr throughout"
    ),
    "step": Sig(
        {"step_size": Opt("int", check=ge(1)), "gamma": _GAMMA},
        ("step_size",),
        "lr * gamma^floor(epoch / step_size)",
        torch="torch.optim.lr_scheduler.StepLR(optimizer, step_size={step_size}, gamma={gamma})",
    ),
    "multistep": Sig(
        {"milestones": Opt("ints", check=_milestones), "gamma": _GAMMA},
        ("milestones",),
        "lr * gamma^(milestones passed)",
        torch="torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones={milestones}, gamma={gamma})",
    ),
    "exponential": Sig(
        {"gamma": Opt("float", check=gt(0))},
        ("gamma",),
        "lr * gamma^epoch",
        torch="torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma={gamma})",
    ),
    "cosine": Sig(
        {
            "t_max": Opt("int", None, ge(1), doc="defaults to the training epochs", derived=True),
            "eta_min": Opt("float", 0.0, ge(0)),
        },
        ("t_max",),
        "eta_min + (lr - eta_min)(1 + cos(pi epoch / t_max)) / 2",
        torch="torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max={t_max}, eta_min={eta_min})",
    ),
    "polynomial": Sig(
        {"total_iters": Opt("int", 5, ge(1)), "power": Opt("float", 1.0, gt(0))},
        ("total_iters",),
        "lr (1 - min(epoch, total_iters) / total_iters)^power",
        torch="torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters={total_iters}, power={power})",
    ),
    "plateau": Sig(
        {
            "monitor": Opt(
                "choice",
                None,
                choices=MONITORS,
                doc="val_loss when there is validation data, else train_loss",
                derived=True,
            ),
            "mode": Opt(
                "choice",
                None,
                choices=("min", "max"),
                doc="from the monitor: max for accuracy",
                derived=True,
            ),
            "factor": Opt("float", 0.1, in_open(0, 1)),
            "patience": Opt("int", 10, ge(0)),
            "threshold": Opt("float", 1e-4, ge(0)),
            "threshold_mode": Opt("choice", "rel", choices=("rel", "abs")),
            "cooldown": Opt("int", 0, ge(0)),
            "min_lr": Opt("float", 0.0, ge(0)),
            "eps": Opt("float", 1e-8, ge(0)),
        },
        (),
        "ReduceLROnPlateau: lr * factor when the monitored metric stops improving",
        rules=_mode_follows_monitor,
        torch="torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode={mode}, factor={factor}, patience={patience}, threshold={threshold}, threshold_mode={threshold_mode}, cooldown={cooldown}, min_lr={min_lr}, eps={eps})",
    ),
}
SCHEDULE_ALIASES = {"steplr": "step", "cosine_annealing": "cosine", "reduce_on_plateau": "plateau"}

REGULARIZERS: dict[str, Sig] = {
    "l1": Sig(
        {"strength": Opt("float", check=ge(0))},
        ("strength",),
        "adds strength * sum(abs(W)) over linear weights",
        torch="loss = loss + strength * sum(l.weight.abs().sum() for l in linears)",
    ),
    "l2": Sig(
        {"strength": Opt("float", check=ge(0))},
        ("strength",),
        "adds strength * sum(W^2) over linear weights",
        torch="loss = loss + strength * sum((l.weight ** 2).sum() for l in linears)",
    ),
}

# ---- data --------------------------------------------------------------------

EMBEDDED = ("digits", "iris", "breast_cancer", "diabetes", "penguins")  # in fcspec/datasets/
# The 2-D playground sets, generated from a seed (fcspec/playground.py): name -> default n, noise
PLAYGROUND = {
    "moons": (300, 0.1),
    "circles": (300, 0.05),
    "spirals": (400, 0.05),
    "xor": (300, 0.05),
}
DATASETS = EMBEDDED + tuple(PLAYGROUND)

# Options every table reader takes (csv, parquet, the tabular embedded data sets).
_TABLE_OPTS = {
    "columns": Opt(
        "columns", None, doc="keep only these feature columns (names or 0-based indices)"
    ),
    "drop": Opt("columns", (), doc="leave these columns out (names or indices)"),
    "categorical": Opt(
        "columns", (), doc="read these number-coded columns as categories (one-hot encoded)"
    ),
    "missing": Opt(
        "choice",
        "mean",
        choices=("mean", "median", "most_frequent", "zero", "error"),
        doc="what a missing number becomes (training rows' statistic); categories take the "
        "most frequent value; `error` refuses missing cells",
    ),
    "unknown": Opt(
        "choice",
        "ignore",
        choices=("ignore", "error"),
        doc="a category unseen in training: all zeros, or an error",
    ),
}

SOURCES: dict[str, Source] = {
    "npz": Source(
        {"path": Opt("str"), "x": Opt("str", "x"), "y": Opt("str", "y")},
        ("path",),
        "NumPy .npz with arrays x and y",
        files=("path",),
        torch="numpy.load(path)[x], numpy.load(path)[y]",
    ),
    "csv": Source(
        {
            "path": Opt("str", doc=".csv, or compressed: .gz .bz2 .xz .zst by the name"),
            "target": Opt("name_or_index", doc="the label column: a name or a 0-based index"),
            "header": Opt("bool", True, doc="the first row names the columns"),
            "delimiter": Opt(
                "delimiter",
                "auto",
                doc="one character; `auto` sniffs comma, tab, semicolon, pipe and whitespace",
            ),
            **_TABLE_OPTS,
        },
        ("path",),
        "a text table read by pyarrow; numeric columns, categories one-hot, missing cells imputed",
        files=("path",),
        torch="pandas.read_csv(path); y = df.pop(target); a ColumnTransformer of SimpleImputer, OneHotEncoder(handle_unknown='ignore') and a LabelEncoder for the classes",
    ),
    "parquet": Source(
        {
            "path": Opt("str"),
            "target": Opt("name_or_index", doc="the label column: a name or a 0-based index"),
            **_TABLE_OPTS,
        },
        ("path",),
        "an Apache Parquet file, read by pyarrow; the same encoding as csv",
        files=("path",),
        torch="pandas.read_parquet(path), then as csv",
    ),
    "idx": Source(
        {"images": Opt("str"), "labels": Opt("str")},
        ("images", "labels"),
        "the MNIST IDX format, gzipped or not",
        files=("images", "labels"),
        torch="torchvision's MNIST IDX reader",
    ),
    "mnist": Source(
        {"split": Opt("choice", "train", choices=("train", "test"))},
        ("split",),
        "MNIST, from $FCSPEC_DATA/mnist, the cache, or downloaded once",
        torch="torchvision.datasets.MNIST(root, train=(split == 'train'))",
    ),
    "dataset": Source(
        {
            "name": Opt("choice", choices=DATASETS),
            "target": Opt(
                "name_or_index", None, doc="tables only (penguins): the label column [species]"
            ),
            **_TABLE_OPTS,
            "n": Opt(
                "int", None, ge(2), doc="playground sets only: points [default: 300, spirals 400]"
            ),
            "noise": Opt(
                "float",
                None,
                ge(0),
                doc="playground sets only: Gaussian noise's std [default: moons 0.1, others 0.05]",
            ),
            "seed": Opt("int", None, ge(0), doc="playground sets only: the generator's seed [0]"),
        },
        ("name",),
        "a small embedded data set (`penguins` is a raw table: strings, missing cells), or a "
        "generated 2-D playground set (moons, circles, spirals, xor)",
        torch="sklearn.datasets.load_<name>()",
    ),
}
TABULAR_SOURCES = ("csv", "parquet")
TABULAR_DATASETS = {"penguins": ("penguins.csv", "species")}  # file in fcspec/datasets, target

DATA_KEYS: dict[str, Opt] = {
    "train": Opt(
        "source",
        None,
        doc="training data; leave it out when the data comes from Python (`Model.fit(X, y)`)",
        torch="the training Dataset",
    ),
    "test": Opt(
        "number_or_source",
        None,
        doc="test data, evaluated after training: a source, or a "
        "fraction of train held out before validation",
        torch="a Dataset, or torch.utils.data.random_split(train, ...) with a seeded generator",
    ),
    "validate": Opt(
        "number_or_source",
        None,
        doc="a fraction of train (0 < f < 1) or a source",
        torch="a Dataset, or torch.utils.data.random_split(train, ...) with a seeded generator",
    ),
    "scale": Opt("float", 1.0, gt(0), doc="inputs are divided by this", torch="x = x / scale"),
    "normalize": Opt(
        "choice",
        "none",
        choices=("none", "standard", "minmax"),
        doc="per feature, statistics from the training split (one-hot columns stay 0/1)",
        torch="sklearn.preprocessing.StandardScaler / MinMaxScaler fitted on train",
    ),
    "normalize_target": Opt(
        "choice",
        "none",
        choices=("none", "standard"),
        doc="regression: train on the standardized target; every figure, eval, predict and "
        "the ONNX output stay in the target's units",
        torch="sklearn.compose.TransformedTargetRegressor(transformer=StandardScaler())",
    ),
    "statistics": Opt(
        "str",
        None,
        doc="a saved preprocess.npz (scale, shift, divisor) used as it is instead of "
        "`scale`/`normalize`: the preprocessing of an imported model",
        torch="torchvision.transforms.Normalize(mean, std) with fixed, saved values",
    ),
}

TRAIN_KEYS: dict[str, Opt] = {
    "epochs": Opt("int", 10, ge(1), torch="for epoch in range(epochs): ..."),
    "batch": Opt(
        "int_or_full",
        32,
        ge(1),
        doc="1 = stochastic GD, N = mini-batch, full = batch GD",
        torch="torch.utils.data.DataLoader(batch_size=batch)",
    ),
    "shuffle": Opt(
        "bool",
        True,
        doc="a new seeded order every epoch",
        torch="torch.utils.data.DataLoader(shuffle=shuffle)",
    ),
    "seed": Opt(
        "int", 0, ge(0), doc="same seed, same result, bit for bit", torch="torch.manual_seed(seed)"
    ),
    "clip_grad_norm": Opt(
        "float",
        None,
        gt(0),
        doc="clip the global gradient norm",
        torch="torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=...)",
    ),
    "metrics": Opt(
        "names",
        None,
        doc="accuracy (classifiers), mae and rmse (regression)",
        derived=True,
        torch="Keras' metrics=[...], computed every epoch",
    ),
}

EARLY_STOP = Sig(
    {
        "monitor": Opt("choice", "val_loss", choices=MONITORS),
        "patience": Opt("int", 5, ge(0)),
        "min_delta": Opt("float", 0.0, ge(0)),
        "mode": Opt(
            "choice",
            None,
            choices=("min", "max"),
            doc="from the monitor: max for accuracy",
            derived=True,
        ),
        "restore_best": Opt("bool", False, doc="end with the best epoch's weights"),
    },
    (),
    "stop when the monitored metric has not improved for `patience` epochs",
    rules=_mode_follows_monitor,
    torch="keras.callbacks.EarlyStopping",  # PyTorch has none; Keras' keywords match
)

METRICS = {
    "classification": ("accuracy",),
    "binary": ("accuracy",),
    "regression": ("mae", "rmse"),
    "distribution": (),
}


# ---- what each name is in PyTorch (editor hovers, export --torch) ------------
# Read off the rows' `torch`: a call template's hover is its callable (`torch.nn.LeakyReLU`,
# keywords renamed in TORCH_KEYWORDS where PyTorch's differ), or the whole call when it
# holds no option (`torch.nn.Softmax(dim=-1)`); the other rows' text as it is.


def _torch_name(row: Sig) -> str:
    call = row.torch(_defaults(row)) if callable(row.torch) else row.torch
    call = "torch." + call if call.startswith("nn.") else call
    head, paren, args = call.partition("(")
    return head if not paren or "{" in args or args == ")" else call


def _defaults(row: Sig) -> dict[str, Any]:
    return {k: o.default for k, o in row.opts.items() if not o.required}


_CALLS = {**LAYERS, **LOSSES, **OPTIMIZERS, **SCHEDULES}
TORCH: dict[str, str] = {
    **{n: _torch_name(r) for n, r in _CALLS.items() if r.torch},
    **{n: str(r.torch) for n, r in {**REGULARIZERS, **SOURCES}.items() if r.torch},
    "early_stop": str(EARLY_STOP.torch),
    **{f"data.{k}": o.torch for k, o in DATA_KEYS.items() if o.torch},
    **{f"train.{k}": o.torch for k, o in TRAIN_KEYS.items() if o.torch},
}


def _torch_value(v: Any) -> str:
    return repr(list(v) if isinstance(v, tuple) else v)


def torch_call(row: Sig, options: Mapping[str, Any]) -> str | None:
    """The PyTorch call a layer's, loss's, optimizer's or schedule's row writes for these
    options (over the row's defaults), or None when it writes none.  `{options}` keeps
    each value's own repr (betas as a tuple), `{name}` writes a sequence as a list."""
    o = {**_defaults(row), **options}
    if callable(row.torch):
        return row.torch(o)
    if "(" not in row.torch:
        return None

    def fill(text: str) -> str:
        return re.sub(r"\{(\w+)\}", lambda m: _torch_value(o[m.group(1)]), text)

    def optional(m: re.Match) -> str:
        names = re.findall(r"\{(\w+)\}", m.group(1))
        return fill(m.group(1)) if all(o.get(n) not in (None, 0, False) for n in names) else ""

    text = row.torch.replace("{options}", ", ".join(f"{k}={v!r}" for k, v in options.items()))
    return fill(re.sub(r"\[([^\]]*)\]", optional, text))


TORCH_KEYWORDS: dict[tuple[str, str], str] = {
    ("linear", "units"): "out_features",
    ("linear", "init"): "torch.nn.init.<init>_(layer.weight), torch.nn.init.zeros_(layer.bias)",
    ("cosine", "t_max"): "T_max",
    ("plateau", "monitor"): "scheduler.step(<monitor>) after each epoch",
    ("early_stop", "restore_best"): "restore_best_weights",
}


def torch_equivalent(name: str, option: str | None = None) -> str | None:
    """The PyTorch spelling of a name, or of one of its options (`torch.optim.Adam(betas=...)`)."""
    base = TORCH.get(name)
    if base is None or option is None:
        return base
    keyword = TORCH_KEYWORDS.get((name, option), option)
    if not keyword.isidentifier():  # a sentence, not a keyword
        return keyword
    if not base.replace(".", "").replace("_", "").isalnum():  # not a plain callable
        return base
    return f"{base}({keyword}=...)"


# What an option means, where its row has no doc of its own (editor hovers).  Keyed by the
# option's name where it means the same everywhere, by `owner.option` where it does not.
OPTION_DOCS: dict[str, str] = {
    "lr": "learning rate",
    "momentum": "momentum factor: the velocity is momentum * v + g",
    "dampening": "dampening for momentum: v = momentum * v + (1 - dampening) * g",
    "nesterov": "Nesterov momentum: step along g + momentum * v",
    "betas": "decay rates of the running averages of the gradient and of its square",
    "eps": "added to the denominator for numerical stability",
    "amsgrad": "AMSGrad: divide by the running maximum of the squared-gradient average",
    "rmsprop.alpha": "smoothing constant of the squared-gradient average",
    "centered": "divide by the estimated variance of the gradient, not its second moment",
    "lr_decay": "lr / (1 + (step - 1) * lr_decay)",
    "initial_accumulator_value": "the starting sum of squared gradients",
    "negative_slope": "the slope for x < 0",
    "elu.alpha": "the value approached for large negative x is -alpha",
    "approximate": "`none`: exact x Phi(x) with erf; `tanh`: the tanh approximation",
    "beta": "sharpness: larger beta is closer to relu",
    "softplus.threshold": "above beta x > threshold the output is x (linear, for stability)",
    "label_smoothing": "mix the one-hot target with the uniform distribution by this much",
    "weight": "one weight per class",
    "delta": "where the loss turns from squared to linear",
    "step_size": "epochs between two decays",
    "milestones": "the epochs after which lr is multiplied by gamma",
    "exponential.gamma": "the factor the lr is multiplied by every epoch",
    "eta_min": "the lowest lr, reached at t_max",
    "total_iters": "epochs until the lr reaches zero",
    "power": "the polynomial's power",
    "factor": "the lr is multiplied by this when the metric stalls",
    "plateau.patience": "epochs without improvement before the lr is reduced",
    "plateau.threshold": "the least change that counts as an improvement",
    "threshold_mode": "`rel`: change relative to the best value; `abs`: absolute",
    "cooldown": "epochs to wait after a reduction before watching again",
    "min_lr": "the lr is never reduced below this",
    "plateau.eps": "a reduction smaller than this is skipped",
    "strength": "the coefficient of the penalty",
    "path": "a file path, relative to the spec's folder",
    "npz.x": "the name of the inputs array in the .npz",
    "npz.y": "the name of the targets array in the .npz",
    "images": "the IDX images file (e.g. train-images-idx3-ubyte.gz)",
    "labels": "the IDX labels file",
    "split": "which MNIST split: the 60,000 training or the 10,000 test images",
    "name": "which embedded data set",
    "epochs": "passes over the training data",
    "monitor": "the metric watched, computed every epoch",
    "early_stop.patience": "epochs without improvement before stopping",
    "min_delta": "the least change that counts as an improvement",
}


def option_doc(owner: str, key: str, opt: Opt) -> str:
    """What option `key` of `owner` means: its row's doc, else the shared meaning of its name."""
    return opt.doc or OPTION_DOCS.get(f"{owner}.{key}") or OPTION_DOCS.get(key, "")


# ---- resolve: defaults, types, ranges and rules, for the checker and the backends -----

KIND_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "choice": "one of",
    "floats": "a list of numbers",
    "ints": "a list of whole numbers",
    "pair": "a pair of numbers like (0.9, 0.999)",
    "source": "a data source such as "
    + ", ".join(f"{name}(...)" for name in list(SOURCES)[:-1])
    + f" or {list(SOURCES)[-1]}(...)",
    "number_or_source": "a fraction such as 0.1, or a data source",
    "int_or_full": "a whole number or `full`",
    "names": "a list of names like [accuracy]",
    "name_or_index": 'a column name such as "species" or a 0-based index',
    "columns": 'a list of column names or indices like ["year", 0]',
    "delimiter": 'auto or one character such as ";" or "\\t"',
}


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _of_kind(opt: Opt, v: Any) -> bool:
    """Whether `v` is a value of the option's kind (what the checker's conversion makes)."""
    k = opt.kind
    if k == "int":
        return _is_int(v)
    if k == "float":
        return _is_number(v)
    if k == "bool":
        return isinstance(v, bool) or getattr(getattr(v, "dtype", None), "kind", "") == "b"
    if k == "str":
        return isinstance(v, str)
    if k == "choice":
        return isinstance(v, str) and v in opt.choices
    if k in ("floats", "pair"):
        ok = isinstance(v, (tuple, list)) and all(_is_number(x) for x in v)
        return ok and (k == "floats" or len(v) == 2)
    if k == "ints":
        return isinstance(v, (tuple, list)) and all(_is_int(x) for x in v)
    if k == "names":
        return isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v)
    if k == "int_or_full":
        return v is None or _is_int(v)
    return True  # data sources: only the checker builds them


def rules(sig: Sig, options: dict[str, Any]) -> list[Problem]:
    """The row's own rules over complete options (may fill options derived from others)."""
    return list(sig.rules(options)) if sig.rules is not None else []


def resolve(sig: Sig, given: Mapping[str, Any], what: str) -> tuple[dict[str, Any], list[Problem]]:
    """`given` over the row's defaults, in the row's order, and everything wrong with it:
    unknown or missing options, values of the wrong kind or out of range, the row's rules,
    and derived options nobody filled in.

    The backends call this for the IR they are handed (so a hand-built IR may omit
    defaults, and a bad one fails before training); the checker converts and
    range-checks each value at its own span, then runs the same `rules`.
    """
    problems: list[Problem] = []
    for key in given:
        if key not in sig.opts:
            hint = f"its options: {', '.join(sig.opts) or 'none'}"
            problems.append(Problem(key, f"{what} has no option {key!r}", hint))
    out: dict[str, Any] = {}
    for key, opt in sig.opts.items():
        if key in given:
            v = given[key]
        elif opt.required:
            problems.append(Problem(key, f"{what} needs {key}"))
            continue
        else:
            v = opt.default
        out[key] = v
        if v is None and opt.default is None:
            continue  # an optional value left out
        if not _of_kind(opt, v):
            words = KIND_WORDS[opt.kind]
            if opt.kind == "choice":
                words = "one of " + ", ".join(opt.choices)
            problems.append(Problem(key, f"{what}: {key} must be {words}, got {v!r}"))
            continue
        complaint = opt.check(v) if opt.check is not None else None
        if complaint:
            problems.append(Problem(key, f"{what}: {key} {complaint}, got {v!r}"))
    if not problems:
        problems += rules(sig, out)
    for key, opt in sig.opts.items():
        if opt.derived and key in out and out[key] is None and not problems:
            problems.append(Problem(key, f"{what} needs {key}"))
    return out, problems


# ---- the reference tables of docs/language.md ----------------------------------


def default_text(opt: Opt) -> str:
    if opt.required:
        return "required"
    v = opt.default
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if v == ():
        return "`[]`"
    if isinstance(v, tuple):
        return "`(" + ", ".join(f"{x:g}" for x in v) + ")`"
    if isinstance(v, float):
        return f"`{v:g}`"
    return f"`{v}`"


def range_text(opt: Opt) -> str:
    if opt.kind == "choice":
        return " \\| ".join(f"`{c}`" for c in opt.choices)
    if opt.check is not None:
        return opt.check.doc  # type: ignore[attr-defined]
    return {
        "bool": "`true` \\| `false`",
        "str": "string",
        "floats": "list of numbers",
        "names": "list of names",
        "source": "data source",
        "number_or_source": "fraction or source",
        "pair": "two numbers",
        "name_or_index": "string or index",
        "columns": "list of names or indices",
        "delimiter": "`auto` \\| one character",
    }.get(opt.kind, opt.kind)


def markdown_tables() -> str:
    """The generated part of docs/language.md: every name, option, default and range."""
    out: list[str] = []

    def table(title: str, sigs: dict[str, Sig]) -> None:
        out.append(f"### {title}\n")
        out.append("| name | options (positional first) | default | range | meaning |")
        out.append("|---|---|---|---|---|")
        for name, sig in sigs.items():
            if not sig.opts:
                out.append(f"| `{name}` | - | | | {sig.doc} |")
                continue
            for i, (key, opt) in enumerate(sig.opts.items()):
                pos = " (positional)" if key in sig.positional else ""
                first = f"`{name}`" if i == 0 else ""
                doc = sig.doc if i == 0 else ""
                extra = f" {opt.doc}" if opt.doc else ""
                out.append(
                    f"| {first} | `{key}`{pos} | {default_text(opt)} | {range_text(opt)} |"
                    f" {doc}{(' - ' if doc and extra else '')}{extra.strip()} |"
                )
        out.append("")

    def keys(title: str, opts: dict[str, Opt]) -> None:
        out.append(f"### {title}\n")
        out.append("| setting | default | range | meaning |")
        out.append("|---|---|---|---|")
        for key, opt in opts.items():
            out.append(f"| `{key}` | {default_text(opt)} | {range_text(opt)} | {opt.doc} |")
        out.append("")

    table("Layers and activations", LAYERS)
    table("Losses", LOSSES)
    out.append("Aliases: " + ", ".join(f"`{a}` = `{b}`" for a, b in LOSS_ALIASES.items()) + "\n")
    table("Optimizers", OPTIMIZERS)
    table("Schedules", SCHEDULES)
    out.append(
        "Aliases: " + ", ".join(f"`{a}` = `{b}`" for a, b in SCHEDULE_ALIASES.items()) + "\n"
    )
    table("Regularizers", REGULARIZERS)
    table("Data sources", SOURCES)
    keys("The `data` section", DATA_KEYS)
    keys("The `train` section", TRAIN_KEYS)
    table("`early_stop(...)` in the `train` section", {"early_stop": EARLY_STOP})
    return "\n".join(out)
