"""The `sweep { ... }` block: which options vary, how, and how the search runs.

    sweep {
        optimizer.lr = log_uniform(1e-4, 1e-1)   # section.option
        hidden.units = choice(64, 128, 256)      # layer.option, by the layer's name
        trials  = 20
        sampler = tpe                            # tpe | random | grid
        monitor = val_loss                       # minimized; accuracies maximized
        pruner  = median                         # none | median(startup = 5, warmup = 0)
    }

`check(...)` is called by check.py's checker with its own reporting and value
conversion, so a bad path or range reads like every other error (located, with
a did-you-mean).  The result is a `Sweep`: plain data that knows where each
value goes in the spec (apply.py) and how Optuna should draw it (study.py).
Nothing here imports Optuna: `fcspec check` stays light.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from .. import ast, catalog
from ..catalog import Opt, Sig, ge
from ..check import _Invalid as _Reported
from ..errors import Span

DISTRIBUTIONS = {
    "uniform": "uniform(low, high)",
    "log_uniform": "log_uniform(low, high)",
    "int_uniform": "int_uniform(low, high, step = 1)",
    "choice": "choice(a, b, ...)",
}

SETTINGS: dict[str, Opt] = {
    "trials": Opt("int", 20, ge(1), doc="trials to finish (a grid: its size)"),
    "sampler": Opt(
        "choice",
        "tpe",
        choices=("tpe", "random", "grid"),
        doc="Optuna's TPESampler, RandomSampler or GridSampler",
    ),
    "monitor": Opt(
        "choice",
        None,
        choices=catalog.MONITORS,
        doc="the figure compared: its value after the last epoch; val_loss when there is "
        "validation data, else train_loss",
    ),
    "mode": Opt("choice", None, choices=("min", "max"), doc="from the monitor: max for accuracy"),
    "seed": Opt("int", None, ge(0), doc="the sampler's seed; defaults to the train seed"),
}

PRUNERS: dict[str, Sig] = {
    "none": Sig(doc="every trial runs all its epochs"),
    "median": Sig(
        {
            "startup": Opt("int", 5, ge(0), doc="trials finished before any is pruned"),
            "warmup": Opt("int", 0, ge(0), doc="epochs of each trial before it may be pruned"),
        },
        (),
        "Optuna's MedianPruner: stop a trial whose monitor after an epoch is worse than the "
        "median of earlier trials at that epoch",
    ),
}

# Sections whose single call's options can be swept, and the tables that know them.
_CALL_SECTIONS = {
    "optimizer": (catalog.OPTIMIZERS, {}),
    "loss": (catalog.LOSSES, catalog.LOSS_ALIASES),
    "schedule": (catalog.SCHEDULES, catalog.SCHEDULE_ALIASES),
}
_SWEEPABLE = {"int", "float", "bool", "choice", "int_or_full"}
_NOT_SWEEPABLE_DATA = {
    "validate": "it would change the validation set the trials are compared on",
    "test": "it would change the test set",
    "train": "it is the data itself",
}
_KIND_NAMES = {
    "pair": "a pair of numbers",
    "floats": "a list of numbers",
    "ints": "a list of whole numbers",
    "names": "a list of names",
    "str": "a string",
    "source": "a data source",
    "number_or_source": "a fraction or a data source",
}


@dataclass(frozen=True)
class Target:
    """Where a swept value goes in the spec's text (see apply.py)."""

    section: str  # optimizer | loss | schedule | regularize | data | train | layer
    key: str  # the option or setting
    call: ast.Call | None = None  # the call that takes the option (None: not written yet)
    positional: int | None = None  # the option's positional index in that call's signature
    block: ast.BlockSection | ast.CallSection | None = None  # data / train / regularize section
    layer: str | None = None  # a layer target's name


@dataclass(frozen=True)
class Param:
    path: str  # "optimizer.lr"
    distribution: str  # uniform | log_uniform | int_uniform | choice
    integer: bool = False  # drawn as a whole number
    low: float | None = None
    high: float | None = None
    step: int | None = None  # int_uniform's step
    choices: tuple[str, ...] = ()  # choice: each value as written (`64`, `full`, `standard`)
    target: Target | None = field(default=None, compare=False)
    span: Span | None = field(default=None, compare=False)

    @property
    def log(self) -> bool:
        return self.distribution == "log_uniform"

    def grid_values(self) -> list | None:
        """The finite set of values (a choice's texts, an int range), or None if continuous."""
        if self.distribution == "choice":
            return list(self.choices)
        if self.distribution == "int_uniform":
            return list(range(int(self.low), int(self.high) + 1, self.step or 1))
        return None

    def describe(self) -> str:
        if self.distribution == "choice":
            return f"choice({', '.join(self.choices)})"
        step = f", step = {self.step}" if self.step not in (None, 1) else ""
        return f"{self.distribution}({self.low:g}, {self.high:g}{step})"


@dataclass(frozen=True)
class Sweep:
    params: tuple[Param, ...]
    trials: int
    sampler: str  # tpe | random | grid
    monitor: str
    direction: str  # minimize | maximize
    pruner: str  # none | median
    pruner_options: dict[str, Any]
    seed: int
    span: Span | None = field(default=None, compare=False)

    def grid(self) -> dict[str, list]:
        return {p.path: p.grid_values() for p in self.params}

    def definition(self) -> dict[str, Any]:
        """What a study's results depend on (not trials, sampler or pruner, which may change
        when a sweep is resumed): the parameters and what is compared."""
        return {
            "params": [[p.path, p.describe()] for p in self.params],
            "monitor": self.monitor,
            "direction": self.direction,
        }


def _did_you_mean(name: str, options) -> str | None:
    close = difflib.get_close_matches(name, list(options), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


def _path_span(search: ast.Search) -> Span:
    a, b = search.path[0].span, search.path[-1].span
    return Span(a.file, a.line, a.col, b.end_line, b.end_col)


class _Invalid(Exception):
    """Reported already."""


class SweepChecker:
    """Checks one sweep block with the main checker's reporting (`checker.error`, ...)."""

    def __init__(self, checker, seen: dict[str, ast.Section], task: str | None, data, train):
        self.c = checker
        self.seen = seen
        self.task = task
        self.data = data  # ir.Data, None (no data section) or False (it had errors)
        self.train = train

    # ---- paths -------------------------------------------------------------
    def target(self, search: ast.Search) -> tuple[Target, Opt, str] | None:
        """(where the value goes, the option's type and range, how to name it) or None."""
        parts = search.path
        dotted = search.dotted
        if len(parts) != 2:
            self.c.error(
                f"a sweep path is `section.option` or `layer.option`, not `{dotted}`",
                _path_span(search),
                "for example `optimizer.lr`, `train.batch` or `fc1.units`",
            )
            return None
        head, key = parts
        layers: dict[str, ast.Call] = getattr(self.c, "layer_calls", {})
        if head.text in _CALL_SECTIONS:
            section = self.seen.get(head.text)
            if section is None:
                if head.text == "schedule":
                    self.c.error(
                        f"`{dotted}`: the spec has no `schedule` section to sweep",
                        head.span,
                        "write the schedule first, e.g. `schedule step(step_size = 10)`",
                    )
                return None  # a missing loss or optimizer is reported by the main check
            call = section.calls[0]
            table, aliases = _CALL_SECTIONS[head.text]
            sig = table.get(aliases.get(call.name, call.name))
            if sig is None:
                return None  # unknown name: reported already
            owner = f"`{call.name}`"
            target = Target(head.text, key.text, call, self._position(sig, key.text))
            return self._option(sig.opts, key, owner, "option", dotted, target)
        if head.text in layers:
            call = layers[head.text]
            sig = catalog.LAYERS.get(call.name)
            if sig is None:
                return None
            if not sig.opts:
                self.c.error(
                    f"layer `{head.text}` ({call.name}) has no options to sweep",
                    head.span,
                    "name the layer that has them, e.g. `fc1 = linear(128)` for `fc1.units`",
                )
                return None
            owner = f"layer `{head.text}` ({call.name})"
            target = Target("layer", key.text, call, self._position(sig, key.text), layer=head.text)
            return self._option(sig.opts, key, owner, "option", dotted, target)
        if head.text == "regularize":
            section = self.seen.get("regularize")
            if key.text not in catalog.REGULARIZERS:
                self.c.error(
                    f"`regularize` has no term `{key.text}`",
                    key.span,
                    _did_you_mean(key.text, catalog.REGULARIZERS)
                    or "sweep `regularize.l1` or `regularize.l2` (the strength)",
                )
                return None
            call = None
            if section is not None:
                call = next((c for c in section.calls if c.name == key.text), None)
            opt = catalog.REGULARIZERS[key.text].opts["strength"]
            return Target("regularize", key.text, call, 0, block=section), opt, f"`{dotted}`"
        if head.text in ("train", "data"):
            keys = catalog.TRAIN_KEYS if head.text == "train" else catalog.DATA_KEYS
            if head.text == "data" and key.text in _NOT_SWEEPABLE_DATA:
                self.c.error(
                    f"`{dotted}` cannot be swept: {_NOT_SWEEPABLE_DATA[key.text]}",
                    key.span,
                    "sweep `data.normalize` or `data.scale`, or the model and training",
                )
                return None
            if head.text == "data" and self.seen.get("data") is None:
                return None  # no data: reported by the main check when it matters
            target = Target(head.text, key.text, block=self.seen.get(head.text))
            return self._option(keys, key, f"the `{head.text}` section", "setting", dotted, target)
        sections = ["optimizer", "loss", "schedule", "regularize", "data", "train"]
        hint = _did_you_mean(head.text, sections + list(layers))
        self.c.error(
            f"unknown sweep path `{dotted}`: `{head.text}` is neither a section "
            f"({', '.join(sections)}) nor a layer of the model",
            head.span,
            hint or ("layers: " + ", ".join(layers) if layers else None),
        )
        return None

    @staticmethod
    def _position(sig: Sig, key: str) -> int | None:
        return sig.positional.index(key) if key in sig.positional else None

    def _option(self, opts: dict[str, Opt], key: ast.Name, owner: str, word: str, dotted, target):
        opt = opts.get(key.text)
        if opt is None:
            self.c.error(
                f"{owner} has no {word} `{key.text}`",
                key.span,
                _did_you_mean(key.text, opts) or f"{owner} takes " + ", ".join(opts),
            )
            return None
        if opt.kind not in _SWEEPABLE:
            self.c.error(
                f"`{dotted}` cannot be swept: it is {_KIND_NAMES.get(opt.kind, opt.kind)}",
                key.span,
                "sweep options that are one number, true/false or a name",
            )
            return None
        return target, opt, f"`{dotted}`"

    # ---- distributions -------------------------------------------------------
    def param(self, search: ast.Search) -> Param | None:
        found = self.target(search)
        if found is None:
            return None
        target, opt, what = found
        value = search.value
        if not (isinstance(value, ast.Call) and value.parens and value.name in DISTRIBUTIONS):
            if isinstance(value, ast.Call) and value.name not in DISTRIBUTIONS:
                hint = _did_you_mean(value.name, DISTRIBUTIONS)
            else:
                hint = None
            self.c.error(
                f"{what} needs a distribution: {', '.join(DISTRIBUTIONS.values())}; "
                f"not {_describe(value)}",
                value.span,
                hint or "to fix a value, write it in the spec itself instead",
            )
            return None
        try:
            if value.name == "choice":
                return self.choice(search, value, opt, target, what)
            return self.range(search, value, opt, target, what)
        except _Invalid:
            return None

    def choice(self, search, call: ast.Call, opt: Opt, target, what) -> Param:
        if not call.args:
            self.c.error(f"`choice` for {what} needs values", call.span, "e.g. choice(32, 64)")
            raise _Invalid
        from ..fmt import value_text

        texts: list[str] = []
        seen_values: dict[Any, Span] = {}
        for arg in call.args:
            if arg.name is not None:
                self.c.error("`choice` takes values, not named arguments", arg.span)
                raise _Invalid
            try:
                v = self.c.convert(opt, arg.value, f"each choice of {what}")
            except _Reported:
                raise _Invalid from None
            if v in seen_values:
                self.c.error(f"{what} lists `{value_text(arg.value)}` twice", arg.value.span)
                raise _Invalid
            seen_values[v] = arg.value.span
            texts.append(value_text(arg.value))
        if len(texts) == 1:
            self.c.warn(
                f"{what} is a choice of one value, so it does not vary",
                call.span,
                "write the value in the spec, or add more choices",
            )
        return Param(
            search.dotted,
            "choice",
            choices=tuple(texts),
            target=target,
            span=search.span,
        )

    def range(self, search, call: ast.Call, opt: Opt, target, what) -> Param:
        name = call.name
        integer = opt.kind in ("int", "int_or_full")
        if opt.kind in ("bool", "choice"):
            options = "true, false" if opt.kind == "bool" else ", ".join(opt.choices)
            self.c.error(
                f"{what} is one of {options}: it takes `choice(...)`, not `{name}`",
                call.name_span,
                f"for example choice({options.split(', ')[0]}, {options.split(', ')[1]})",
            )
            raise _Invalid
        if name == "uniform" and integer:
            self.c.error(
                f"{what} is a whole number: `uniform` draws fractions",
                call.name_span,
                "use int_uniform(low, high), log_uniform(low, high) or choice(...)",
            )
            raise _Invalid
        if name == "int_uniform" and not integer:
            self.c.error(
                f"{what} is a number with fractions: `int_uniform` draws whole numbers",
                call.name_span,
                "use uniform(low, high) or log_uniform(low, high)",
            )
            raise _Invalid
        positional = [a for a in call.args if a.name is None]
        named = {a.name: a for a in call.args if a.name is not None}
        allowed = {"step"} if name == "int_uniform" else set()
        for key, arg in named.items():
            if key not in allowed:
                self.c.error(
                    f"unknown option `{key}` for `{name}`",
                    arg.span,
                    f"write {DISTRIBUTIONS[name]}",
                )
                raise _Invalid
        if len(positional) != 2 or any(a.name is not None for a in call.args[:2]):
            self.c.error(
                f"`{name}` takes two bounds: {DISTRIBUTIONS[name]}, got {len(positional)}",
                call.span,
            )
            raise _Invalid
        bound = Opt("int" if integer else "float", check=opt.check)
        try:
            low = self.c.convert(bound, positional[0].value, f"the lower bound of {what}")
            high = self.c.convert(bound, positional[1].value, f"the upper bound of {what}")
        except _Reported:
            raise _Invalid from None
        if not low < high:
            self.c.error(
                f"the bounds of {what} must increase, got ({low:g}, {high:g})",
                call.span,
                "write the smaller one first",
            )
            raise _Invalid
        if name == "log_uniform" and low <= 0:
            self.c.error(
                f"`log_uniform` needs a lower bound > 0, got {low:g}",
                positional[0].value.span,
                "use uniform(...) for a range that starts at 0",
            )
            raise _Invalid
        step = None
        if "step" in named:
            try:
                step = self.c.convert(Opt("int", check=ge(1)), named["step"].value, "`step`")
            except _Reported:
                raise _Invalid from None
        return Param(
            search.dotted,
            name,
            integer=integer,
            low=low,
            high=high,
            step=step,
            target=target,
            span=search.span,
        )

    # ---- the settings --------------------------------------------------------
    def run(self, section: ast.BlockSection) -> Sweep | None:
        ok = True
        params: list[Param] = []
        first: dict[str, Span] = {}
        settings: dict[str, ast.Assign] = {}
        for stmt in section.body:
            if isinstance(stmt, ast.Search):
                if stmt.dotted in first:
                    self.c.error(
                        f"`{stmt.dotted}` is swept twice (first at line {first[stmt.dotted].line})",
                        _path_span(stmt),
                    )
                    ok = False
                    continue
                first[stmt.dotted] = stmt.span
                p = self.param(stmt)
                if p is None:
                    ok = False
                else:
                    params.append(p)
            elif isinstance(stmt, ast.Assign):
                names = list(SETTINGS) + ["pruner"]
                if stmt.name not in names:
                    self.c.error(
                        f"unknown setting `{stmt.name}` in the `sweep` section",
                        stmt.name_span,
                        _did_you_mean(stmt.name, names)
                        or "the sweep section takes path = distribution lines "
                        "(optimizer.lr = log_uniform(1e-4, 1e-1)) and "
                        + ", ".join(names),
                    )
                    ok = False
                elif stmt.name in settings:
                    self.c.error(
                        f"`{stmt.name}` is set twice (first at line "
                        f"{settings[stmt.name].span.line})",
                        stmt.name_span,
                    )
                    ok = False
                else:
                    settings[stmt.name] = stmt
            else:  # a bare call
                self.c.error(
                    f"unexpected `{stmt.name}` in the `sweep` section",
                    stmt.span,
                    "write `path = distribution`, e.g. `optimizer.lr = log_uniform(1e-4, 1e-1)`",
                )
                ok = False
        if not params and ok:
            self.c.error(
                "the sweep block varies nothing",
                section.keyword_span,
                "add a line such as `optimizer.lr = log_uniform(1e-4, 1e-1)`",
            )
            ok = False

        values: dict[str, Any] = {}
        monitor_value = settings["monitor"].value if "monitor" in settings else None
        if isinstance(monitor_value, ast.Call) and monitor_value.name.startswith("test_"):
            self.c.error(
                f"the sweep must not choose by `{monitor_value.name}`: picking values on the "
                "test set makes its figure an overestimate",
                monitor_value.span,
                "monitor `val_" + monitor_value.name[5:] + "` (the test set reports at the end)",
            )
            ok = False
            del settings["monitor"]
        for key, opt in SETTINGS.items():
            if key in settings:
                try:
                    values[key] = self.c.convert(opt, settings[key].value, f"`{key}`")
                except _Reported:
                    ok = False
                    values[key] = opt.default
            else:
                values[key] = opt.default
        pruner, pruner_options = self.pruner(settings.get("pruner"))
        if pruner is None:
            ok = False
        monitor, direction = self.monitor(values, settings)
        if monitor is None:
            ok = False
        trials = values["trials"]
        if values["sampler"] == "grid" and ok:
            size = 1
            for p in params:
                grid = p.grid_values()
                if grid is None:
                    self.c.error(
                        f"the grid sampler needs a finite set of values, but `{p.path}` is "
                        f"{p.distribution}",
                        p.span,
                        "use choice(...) or int_uniform(...), or `sampler = tpe`",
                    )
                    ok = False
                else:
                    size *= len(grid)
            if ok:
                if "trials" in settings and trials > size:
                    self.c.warn(
                        f"the grid has {size} points, so {size} trials run, not {trials}",
                        settings["trials"].value.span,
                    )
                trials = min(trials, size) if "trials" in settings else size
        if not ok:
            return None
        seed = values["seed"]
        if seed is None:
            seed = self.train.seed if self.train else 0
        return Sweep(
            tuple(params),
            trials,
            values["sampler"],
            monitor,
            direction,
            pruner,
            pruner_options,
            seed,
            section.span,
        )

    def pruner(self, stmt: ast.Assign | None) -> tuple[str | None, dict]:
        if stmt is None:
            return "none", {}
        value = stmt.value
        if not isinstance(value, ast.Call) or value.name not in PRUNERS:
            name = value.name if isinstance(value, ast.Call) else None
            self.c.error(
                f"`pruner` must be one of {', '.join(PRUNERS)}, not {_describe(value)}",
                value.span,
                (_did_you_mean(name, PRUNERS) if name else None)
                or "for example `pruner = median(startup = 5, warmup = 10)`",
            )
            return None, {}
        bound = self.c.bind(value, PRUNERS[value.name], f"`{value.name}`")
        if bound is None:
            return None, {}
        return value.name, bound[0]

    def monitor(self, values: dict, settings: dict) -> tuple[str | None, str]:
        has_val = bool(self.data) and self.data.validate is not None
        monitor = values["monitor"] or ("val_loss" if has_val else "train_loss")
        where = settings["monitor"].value.span if "monitor" in settings else None
        problem = hint = None
        if monitor.startswith("val_") and self.data is not False and not has_val:
            problem = f"the sweep monitors `{monitor}` but the data has no validation set"
            hint = "add `validate = 0.1` to the data section: trials are compared on held-out data"
        elif monitor.endswith("accuracy") and self.task in ("regression", "distribution"):
            problem = f"a {self.task} model has no accuracy to monitor"
            hint = "monitor `val_loss`"
        elif monitor.endswith(("mae", "rmse")) and self.task not in ("regression", None):
            problem = f"`{monitor}` is a regression metric, and this is a {self.task} model"
            hint = "monitor `val_loss` or `val_accuracy`"
        if problem:
            self.c.error(problem, where or self._section_span(), hint)
            return None, "minimize"
        if monitor.startswith("train_") and self.data and not has_val:
            self.c.warn(
                f"the sweep compares trials by `{monitor}`, which rewards overfitting",
                where or self._section_span(),
                "add `validate = 0.1` to the data section and monitor `val_loss`",
            )
        mode = values["mode"] or ("max" if monitor.endswith("accuracy") else "min")
        return monitor, "maximize" if mode == "max" else "minimize"

    def _section_span(self) -> Span | None:
        sweep = self.seen.get("sweep")
        return sweep.keyword_span if sweep is not None else None


def _describe(value: ast.Value) -> str:
    if isinstance(value, ast.Number):
        return f"number {value.text}"
    if isinstance(value, ast.String):
        return f'string "{value.value}"'
    if isinstance(value, ast.Call):
        return f"`{value.name}`" if not value.parens else f"`{value.name}(...)`"
    return "a list" if isinstance(value, ast.List) else "a tuple"


def float_text(v: float) -> str:
    """A drawn number as the trial's spec writes it: 4 significant digits, or exact if needed."""
    if math.isfinite(v) and v != 0:
        short = f"{v:.4g}"
        return short
    return repr(float(v))
