"""Every name the language knows, with its options, defaults and ranges.

This is the one place a layer, loss, optimizer, schedule or data source is
declared for the front end: `check.py` validates calls against it, `explain`
and `docs/language.md` describe it.  Defaults are PyTorch's (torch.nn,
torch.optim, torch.optim.lr_scheduler) so a spec means what the equivalent
PyTorch program means.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

REQUIRED = object()  # marks an option without a default


@dataclass(frozen=True)
class Opt:
    kind: str  # int, float, bool, str, choice, floats, ints, pair, source, number_or_source, int_or_full
    default: Any = REQUIRED
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    choices: tuple[str, ...] = ()
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Sig:
    """A callable name: its options in order, which may be given positionally, and a line of doc."""

    opts: dict[str, Opt] = field(default_factory=dict)
    positional: tuple[str, ...] = ()
    doc: str = ""


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

LAYERS: dict[str, Sig] = {
    "linear": Sig(
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
    ),
    "flatten": Sig(doc="reshape one sample to one dimension, like x.view(x.size(0), -1)"),
    "dropout": Sig(
        {"p": Opt("float", 0.5, in_closed_open(0, 1), doc="probability of zeroing")},
        ("p",),
        "inverted dropout while training, identity at inference",
    ),
    "relu": Sig(doc="max(x, 0)"),
    "leaky_relu": Sig(
        {"negative_slope": Opt("float", 0.01, ge(0))},
        ("negative_slope",),
        "x if x > 0 else negative_slope * x",
    ),
    "elu": Sig({"alpha": Opt("float", 1.0, gt(0))}, ("alpha",), "x if x > 0 else alpha (e^x - 1)"),
    "selu": Sig(doc="scale (x if x > 0 else alpha (e^x - 1)), PyTorch's constants"),
    "sigmoid": Sig(doc="1 / (1 + e^-x)"),
    "tanh": Sig(doc="hyperbolic tangent"),
    "gelu": Sig(
        {"approximate": Opt("choice", "none", choices=("none", "tanh"))},
        ("approximate",),
        "x Phi(x); `tanh` uses the tanh approximation",
    ),
    "silu": Sig(doc="x sigmoid(x) (swish)"),
    "softplus": Sig(
        {"beta": Opt("float", 1.0, gt(0)), "threshold": Opt("float", 20.0, gt(0))},
        ("beta",),
        "log(1 + e^(beta x)) / beta, linear above threshold",
    ),
    "softmax": Sig(doc="probabilities over the last axis"),
    "log_softmax": Sig(doc="log-probabilities over the last axis"),
}

ACTIVATIONS = tuple(k for k in LAYERS if k not in ("linear", "flatten", "dropout"))

# ---- losses ------------------------------------------------------------------

_REDUCTION = Opt("choice", "mean", choices=("mean", "sum"), doc="mean over the batch, or sum")

LOSSES: dict[str, Sig] = {
    "cross_entropy": Sig(
        {
            "label_smoothing": Opt("float", 0.0, in_closed(0, 1)),
            "weight": Opt("floats", None, _weights, doc="one weight per class"),
            "reduction": _REDUCTION,
        },
        doc="logits and class ids; applies log-softmax itself",
    ),
    "nll": Sig(
        {"weight": Opt("floats", None, _weights), "reduction": _REDUCTION},
        doc="log-probabilities (after log_softmax) and class ids",
    ),
    "mse": Sig({"reduction": _REDUCTION}, doc="mean squared error"),
    "mae": Sig({"reduction": _REDUCTION}, doc="mean absolute error (alias l1)"),
    "huber": Sig(
        {"delta": Opt("float", 1.0, gt(0)), "reduction": _REDUCTION},
        ("delta",),
        "squared below delta, linear above",
    ),
    "bce": Sig(
        {"reduction": _REDUCTION}, doc="binary cross-entropy on probabilities (after sigmoid)"
    ),
    "bce_with_logits": Sig(
        {"reduction": _REDUCTION}, doc="binary cross-entropy on logits (stable)"
    ),
    "kl_div": Sig(
        {"reduction": _REDUCTION},
        doc="KL divergence: log-probabilities against target probabilities, batchmean",
    ),
}
LOSS_ALIASES = {
    "l1": "mae",
    "crossentropy": "cross_entropy",
    "nll_loss": "nll",
    "mean_squared_error": "mse",
}

TASKS = {
    "cross_entropy": "classification",
    "nll": "classification",
    "bce": "binary",
    "bce_with_logits": "binary",
    "mse": "regression",
    "mae": "regression",
    "huber": "regression",
    "kl_div": "distribution",
}

# ---- optimizers --------------------------------------------------------------

_LR = Opt("float", check=gt(0), doc="learning rate")
_WD = Opt("float", 0.0, ge(0), doc="L2 penalty added to the gradient (PyTorch's weight_decay)")

OPTIMIZERS: dict[str, Sig] = {
    "sgd": Sig(
        {
            "lr": Opt("float", 1e-3, gt(0), doc="learning rate"),
            "momentum": Opt("float", 0.0, ge(0)),
            "dampening": Opt("float", 0.0, ge(0)),
            "nesterov": Opt("bool", False),
            "weight_decay": _WD,
        },
        ("lr",),
        "stochastic gradient descent; batch size picks batch, mini-batch or stochastic",
    ),
    "adam": Sig(
        {
            "lr": Opt("float", 1e-3, gt(0)),
            "betas": Opt("pair", (0.9, 0.999), _betas),
            "eps": Opt("float", 1e-8, ge(0)),
            "weight_decay": _WD,
            "amsgrad": Opt("bool", False),
        },
        ("lr",),
        "Adam (Kingma and Ba, 2014)",
    ),
    "adamw": Sig(
        {
            "lr": Opt("float", 1e-3, gt(0)),
            "betas": Opt("pair", (0.9, 0.999), _betas),
            "eps": Opt("float", 1e-8, ge(0)),
            "weight_decay": Opt("float", 0.01, ge(0), doc="decoupled decay"),
            "amsgrad": Opt("bool", False),
        },
        ("lr",),
        "Adam with decoupled weight decay (Loshchilov and Hutter)",
    ),
    "rmsprop": Sig(
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
    ),
    "adagrad": Sig(
        {
            "lr": Opt("float", 1e-2, gt(0)),
            "lr_decay": Opt("float", 0.0, ge(0)),
            "weight_decay": _WD,
            "initial_accumulator_value": Opt("float", 0.0, ge(0)),
            "eps": Opt("float", 1e-10, ge(0)),
        },
        ("lr",),
        "Adagrad (Duchi et al.)",
    ),
}

# ---- schedules ---------------------------------------------------------------

MONITORS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy", "val_mae", "val_rmse")

_GAMMA = Opt("float", 0.1, gt(0), doc="multiplicative factor")

SCHEDULES: dict[str, Sig] = {
    "constant": Sig(doc="the optimizer's lr throughout"),
    "step": Sig(
        {"step_size": Opt("int", check=ge(1)), "gamma": _GAMMA},
        ("step_size",),
        "lr * gamma^floor(epoch / step_size)",
    ),
    "multistep": Sig(
        {"milestones": Opt("ints", check=_milestones), "gamma": _GAMMA},
        ("milestones",),
        "lr * gamma^(milestones passed)",
    ),
    "exponential": Sig({"gamma": Opt("float", check=gt(0))}, ("gamma",), "lr * gamma^epoch"),
    "cosine": Sig(
        {
            "t_max": Opt("int", None, ge(1), doc="defaults to the training epochs"),
            "eta_min": Opt("float", 0.0, ge(0)),
        },
        ("t_max",),
        "eta_min + (lr - eta_min)(1 + cos(pi epoch / t_max)) / 2",
    ),
    "polynomial": Sig(
        {"total_iters": Opt("int", 5, ge(1)), "power": Opt("float", 1.0, gt(0))},
        ("total_iters",),
        "lr (1 - min(epoch, total_iters) / total_iters)^power",
    ),
    "plateau": Sig(
        {
            "monitor": Opt(
                "choice",
                None,
                choices=MONITORS,
                doc="val_loss when there is validation data, else train_loss",
            ),
            "mode": Opt(
                "choice", None, choices=("min", "max"), doc="from the monitor: max for accuracy"
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
    ),
}
SCHEDULE_ALIASES = {"steplr": "step", "cosine_annealing": "cosine", "reduce_on_plateau": "plateau"}

REGULARIZERS: dict[str, Sig] = {
    "l1": Sig(
        {"strength": Opt("float", check=ge(0))},
        ("strength",),
        "adds strength * sum(abs(W)) over linear weights",
    ),
    "l2": Sig(
        {"strength": Opt("float", check=ge(0))},
        ("strength",),
        "adds strength * sum(W^2) over linear weights",
    ),
}

# ---- data --------------------------------------------------------------------

DATASETS = ("digits", "iris", "breast_cancer", "diabetes", "penguins")

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

SOURCES: dict[str, Sig] = {
    "npz": Sig(
        {"path": Opt("str"), "x": Opt("str", "x"), "y": Opt("str", "y")},
        ("path",),
        "NumPy .npz with arrays x and y",
    ),
    "csv": Sig(
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
    ),
    "parquet": Sig(
        {
            "path": Opt("str"),
            "target": Opt("name_or_index", doc="the label column: a name or a 0-based index"),
            **_TABLE_OPTS,
        },
        ("path",),
        "an Apache Parquet file, read by pyarrow; the same encoding as csv",
    ),
    "idx": Sig(
        {"images": Opt("str"), "labels": Opt("str")},
        ("images", "labels"),
        "the MNIST IDX format, gzipped or not",
    ),
    "mnist": Sig(
        {"split": Opt("choice", "train", choices=("train", "test"))},
        ("split",),
        "MNIST, from $FCSPEC_DATA/mnist, the cache, or downloaded once",
    ),
    "dataset": Sig(
        {
            "name": Opt("choice", choices=DATASETS),
            "target": Opt(
                "name_or_index", None, doc="tables only (penguins): the label column [species]"
            ),
            **_TABLE_OPTS,
        },
        ("name",),
        "a small embedded data set; `penguins` is a raw table (strings, missing cells)",
    ),
}
TABULAR_SOURCES = ("csv", "parquet")
TABULAR_DATASETS = {"penguins": ("penguins.csv", "species")}  # file in fcspec/datasets, target

DATA_KEYS: dict[str, Opt] = {
    "train": Opt(
        "source",
        None,
        doc="training data; leave it out when the data comes from Python (`Model.fit(X, y)`)",
    ),
    "test": Opt(
        "number_or_source",
        None,
        doc="test data, evaluated after training: a source, or a "
        "fraction of train held out before validation",
    ),
    "validate": Opt("number_or_source", None, doc="a fraction of train (0 < f < 1) or a source"),
    "scale": Opt("float", 1.0, gt(0), doc="inputs are divided by this"),
    "normalize": Opt(
        "choice",
        "none",
        choices=("none", "standard", "minmax"),
        doc="per feature, statistics from the training split (one-hot columns stay 0/1)",
    ),
    "normalize_target": Opt(
        "choice",
        "none",
        choices=("none", "standard"),
        doc="regression: train on the standardized target; every figure, eval, predict and "
        "the ONNX output stay in the target's units",
    ),
}

TRAIN_KEYS: dict[str, Opt] = {
    "epochs": Opt("int", 10, ge(1)),
    "batch": Opt(
        "int_or_full", 32, ge(1), doc="1 = stochastic GD, N = mini-batch, full = batch GD"
    ),
    "shuffle": Opt("bool", True, doc="a new seeded order every epoch"),
    "seed": Opt("int", 0, ge(0), doc="same seed, same result, bit for bit"),
    "clip_grad_norm": Opt("float", None, gt(0), doc="clip the global gradient norm"),
    "metrics": Opt("names", None, doc="accuracy (classifiers), mae and rmse (regression)"),
}

EARLY_STOP = Sig(
    {
        "monitor": Opt("choice", "val_loss", choices=MONITORS),
        "patience": Opt("int", 5, ge(0)),
        "min_delta": Opt("float", 0.0, ge(0)),
        "mode": Opt(
            "choice", None, choices=("min", "max"), doc="from the monitor: max for accuracy"
        ),
        "restore_best": Opt("bool", False, doc="end with the best epoch's weights"),
    },
    (),
    "stop when the monitored metric has not improved for `patience` epochs",
)

METRICS = {
    "classification": ("accuracy",),
    "binary": ("accuracy",),
    "regression": ("mae", "rmse"),
    "distribution": (),
}


# ---- what each name is in PyTorch (editor hovers) -----------------------------
# A callable whose keywords are the options (renamed in TORCH_KEYWORDS where PyTorch's
# keyword differs), or the few lines a PyTorch program writes when no one callable does it.

TORCH: dict[str, str] = {
    # layers
    "linear": "torch.nn.Linear",
    "flatten": "torch.nn.Flatten",
    "dropout": "torch.nn.Dropout",
    "relu": "torch.nn.ReLU",
    "leaky_relu": "torch.nn.LeakyReLU",
    "elu": "torch.nn.ELU",
    "selu": "torch.nn.SELU",
    "sigmoid": "torch.nn.Sigmoid",
    "tanh": "torch.nn.Tanh",
    "gelu": "torch.nn.GELU",
    "silu": "torch.nn.SiLU",
    "softplus": "torch.nn.Softplus",
    "softmax": "torch.nn.Softmax(dim=-1)",
    "log_softmax": "torch.nn.LogSoftmax(dim=-1)",
    # losses
    "cross_entropy": "torch.nn.CrossEntropyLoss",
    "nll": "torch.nn.NLLLoss",
    "mse": "torch.nn.MSELoss",
    "mae": "torch.nn.L1Loss",
    "huber": "torch.nn.HuberLoss",
    "bce": "torch.nn.BCELoss",
    "bce_with_logits": "torch.nn.BCEWithLogitsLoss",
    "kl_div": "torch.nn.KLDivLoss(reduction='batchmean')",
    # optimizers
    "sgd": "torch.optim.SGD",
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "rmsprop": "torch.optim.RMSprop",
    "adagrad": "torch.optim.Adagrad",
    # schedules, stepped once per epoch
    "constant": "no scheduler: the optimizer's lr throughout",
    "step": "torch.optim.lr_scheduler.StepLR",
    "multistep": "torch.optim.lr_scheduler.MultiStepLR",
    "exponential": "torch.optim.lr_scheduler.ExponentialLR",
    "cosine": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "polynomial": "torch.optim.lr_scheduler.PolynomialLR",
    "plateau": "torch.optim.lr_scheduler.ReduceLROnPlateau",
    # regularizers: PyTorch has none built in, the program adds the term to the loss
    "l1": "loss = loss + strength * sum(l.weight.abs().sum() for l in linears)",
    "l2": "loss = loss + strength * sum((l.weight ** 2).sum() for l in linears)",
    # data sources
    "npz": "numpy.load(path)[x], numpy.load(path)[y]",
    "csv": "pandas.read_csv(path); y = df.pop(target); a ColumnTransformer of SimpleImputer, "
    "OneHotEncoder(handle_unknown='ignore') and a LabelEncoder for the classes",
    "parquet": "pandas.read_parquet(path), then as csv",
    "idx": "torchvision's MNIST IDX reader",
    "mnist": "torchvision.datasets.MNIST(root, train=(split == 'train'))",
    "dataset": "sklearn.datasets.load_<name>()",
    "early_stop": "keras.callbacks.EarlyStopping",  # PyTorch has none; Keras' keywords match
    # the data and train blocks
    "data.train": "the training Dataset",
    "data.test": "a Dataset, or torch.utils.data.random_split(train, ...) with a seeded generator",
    "data.validate": "a Dataset, or torch.utils.data.random_split(train, ...) with a seeded generator",
    "data.scale": "x = x / scale",
    "data.normalize": "sklearn.preprocessing.StandardScaler / MinMaxScaler fitted on train",
    "data.normalize_target": "sklearn.compose.TransformedTargetRegressor(transformer=StandardScaler())",
    "train.epochs": "for epoch in range(epochs): ...",
    "train.batch": "torch.utils.data.DataLoader(batch_size=batch)",
    "train.shuffle": "torch.utils.data.DataLoader(shuffle=shuffle)",
    "train.seed": "torch.manual_seed(seed)",
    "train.clip_grad_norm": "torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=...)",
    "train.metrics": "Keras' metrics=[...], computed every epoch",
}

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
