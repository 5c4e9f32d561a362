"""torch.optim.lr_scheduler's schedules, stepped once per epoch, and early stopping.

This module owns how the learning rate moves between epochs (constant, step,
multistep, exponential, cosine, polynomial, plateau), the epoch-by-epoch table
and rule text `fcspec explain` prints, and Keras-style early stopping.  Each
has a `state_dict()` of arrays and 0-d arrays (npz-ready) so a resumed run
continues exactly.

Protocol (torch's, with the scheduler stepped after each epoch): `schedule.lr`
is the rate for the coming epoch; after the epoch the trainer calls
`schedule.step(metrics)` (only plateau reads the metrics).

Recursive or closed form.  torch's `step()` computes each rate from the
previous one (the "chainable" `get_lr`): StepLR multiplies by gamma at each
multiple of step_size, ExponentialLR multiplies by gamma every epoch,
CosineAnnealingLR scales `lr - eta_min` by a ratio of cosines, PolynomialLR
by a ratio of powers.  The closed forms of semantics.md (`base * gamma^e`,
...) agree to within 4e-16 relative but not bit for bit: over 40 epochs with
base 0.1, the closed form differs from torch's float in 13 (step, gamma 0.7,
step_size 3), 21 (exponential 0.93), 20 (cosine, t_max 15) and 15
(polynomial, power 1.7) epochs; multistep agrees everywhere.  So this module
runs torch's recursions, operation for operation, in Python floats, and its
rates equal torch's exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import catalog, ir
from .errors import Diagnostic, SpecError, TrainingError


def _spec_error(s: ir.Schedule, message: str, hint: str | None = None) -> SpecError:
    return SpecError([Diagnostic("error", message, s.span, hint)])


def resolved_options(s: ir.Schedule) -> dict[str, Any]:
    """The IR's options over the catalog's (torch's) defaults, checked by the catalog's row
    (kinds, ranges; a plateau's mode follows its monitor), so a hand-built IR may omit
    defaults and a bad one fails before training."""
    kind = catalog.SCHEDULE_ALIASES.get(s.kind, s.kind)
    row = catalog.SCHEDULES.get(kind)
    if row is None or kind not in _KINDS:
        raise _spec_error(s, f"unknown schedule {s.kind!r}", f"use one of: {', '.join(_KINDS)}")
    options, problems = catalog.resolve(row, s.options, kind)
    if problems:
        raise _spec_error(s, problems[0].message, problems[0].hint)
    return options


# ---------------------------------------------------------------------------
# Schedules


# The implementation of each catalog row (catalog.SCHEDULES), by the row's name.
_KINDS: dict[str, type[Schedule]] = {}


def implements(cls: type[Schedule]) -> type[Schedule]:
    """Register `cls` as the implementation of the catalog's schedule `cls.kind`."""
    _KINDS[cls.kind] = cls
    return cls


class Schedule:
    """The rate for the coming epoch (`lr`), moved by `step()` after each epoch.

    `epoch` is torch's `last_epoch`: the number of epochs finished.  Subclasses
    implement `_next(lr, epoch)`, torch's `get_lr` for that epoch.
    """

    kind = "constant"

    def __init__(self, options: Mapping[str, Any], base_lr: float):
        self.options = dict(options)
        self.base_lr = float(base_lr)
        self.epoch = 0
        self.lr = self._initial()

    def _initial(self) -> float:
        """torch's constructor calls step() once in 'initial' mode; it leaves the rate alone except multistep's."""
        return self.base_lr

    def _next(self, lr: float, epoch: int) -> float:
        return lr

    def step(self, metrics: Mapping[str, float] | None = None) -> None:
        """The epoch just finished: move to the rate of the next one."""
        self.epoch += 1
        self.lr = self._next(self.lr, self.epoch)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "kind": np.array(self.kind),
            "lr": np.array(self.lr, np.float64),
            "epoch": np.array(self.epoch, np.int64),
        }

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        kind = str(np.asarray(d["kind"])) if "kind" in d else "no"
        if kind != self.kind:
            raise TrainingError(
                f"the checkpoint holds {kind} schedule state, the spec uses {self.kind}"
            )
        missing = [k for k in self.state_dict() if k not in d]
        if missing:
            raise TrainingError(f"the checkpoint's {self.kind} schedule state lacks {missing[0]!r}")
        self.lr = float(np.asarray(d["lr"]))
        self.epoch = int(np.asarray(d["epoch"]))


@implements
class Constant(Schedule):
    kind = "constant"


@implements
class Step(Schedule):
    """StepLR: times gamma at every multiple of step_size."""

    kind = "step"

    def _next(self, lr, epoch):
        step_size, gamma = self.options["step_size"], self.options["gamma"]
        if epoch == 0 or epoch % step_size != 0:
            return lr
        return lr * gamma


@implements
class MultiStep(Schedule):
    """MultiStepLR: times gamma at each milestone (gamma^k for a milestone listed k times)."""

    kind = "multistep"

    def __init__(self, options, base_lr):
        self._milestones = Counter(int(m) for m in options["milestones"])
        super().__init__(options, base_lr)

    def _initial(self):
        return self._next(self.base_lr, 0)  # torch's initial step applies a milestone at epoch 0

    def _next(self, lr, epoch):
        if epoch not in self._milestones:
            return lr
        return lr * self.options["gamma"] ** self._milestones[epoch]


@implements
class Exponential(Schedule):
    """ExponentialLR: times gamma every epoch."""

    kind = "exponential"

    def _next(self, lr, epoch):
        return lr * self.options["gamma"]


@implements
class Cosine(Schedule):
    """CosineAnnealingLR (no restarts: past t_max the cosine climbs back, as in torch)."""

    kind = "cosine"

    def _next(self, lr, epoch):
        t_max, eta_min = self.options["t_max"], self.options["eta_min"]
        if (epoch - 1 - t_max) % (2 * t_max) == 0:
            # the trough: the ratio below would divide by 1 + cos(pi) = 0
            return lr + (self.base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        return (1 + math.cos(math.pi * epoch / t_max)) / (
            1 + math.cos(math.pi * (epoch - 1) / t_max)
        ) * (lr - eta_min) + eta_min


@implements
class Polynomial(Schedule):
    """PolynomialLR: (1 - e / total_iters)^power of the base, constant (0) after total_iters."""

    kind = "polynomial"

    def _next(self, lr, epoch):
        total, power = self.options["total_iters"], self.options["power"]
        if epoch > total:
            return lr
        decay = ((1.0 - epoch / total) / (1.0 - (epoch - 1) / total)) ** power
        return lr * decay


@implements
class Plateau(Schedule):
    """ReduceLROnPlateau: times factor after more than `patience` epochs without improvement."""

    kind = "plateau"

    def __init__(self, options, base_lr):
        super().__init__(options, base_lr)
        o = self.options
        self.monitor = o["monitor"]
        self.mode = o["mode"]
        self.best = math.inf if self.mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a: float, best: float) -> bool:
        threshold, rel = self.options["threshold"], self.options["threshold_mode"] == "rel"
        if self.mode == "min":
            return a < best * (1.0 - threshold) if rel else a < best - threshold
        return a > best * (threshold + 1.0) if rel else a > best + threshold

    def step(self, metrics: Mapping[str, float] | None = None) -> None:
        if metrics is None or self.monitor not in metrics:
            have = ", ".join(sorted(metrics or {})) or "none"
            raise TrainingError(
                f"the plateau schedule monitors {self.monitor}, which this run does not "
                f"measure (it has: {have})"
            )
        current = float(metrics[self.monitor])
        self.epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in cooldown do not count
        if self.num_bad_epochs > self.options["patience"]:
            new_lr = max(self.lr * self.options["factor"], self.options["min_lr"])
            if self.lr - new_lr > self.options["eps"]:  # torch ignores changes smaller than eps
                self.lr = new_lr
            self.cooldown_counter = self.options["cooldown"]
            self.num_bad_epochs = 0

    def state_dict(self):
        d = super().state_dict()
        d.update(
            best=np.array(self.best, np.float64),
            num_bad_epochs=np.array(self.num_bad_epochs, np.int64),
            cooldown_counter=np.array(self.cooldown_counter, np.int64),
        )
        return d

    def load_state_dict(self, d):
        super().load_state_dict(d)
        self.best = float(np.asarray(d["best"]))
        self.num_bad_epochs = int(np.asarray(d["num_bad_epochs"]))
        self.cooldown_counter = int(np.asarray(d["cooldown_counter"]))


def make_schedule(s: ir.Schedule, base_lr: float) -> Schedule:
    """The schedule `s` describes, starting from the optimizer's rate `base_lr`."""
    kind = catalog.SCHEDULE_ALIASES.get(s.kind, s.kind)
    options = resolved_options(s)
    return _KINDS[kind](options, base_lr)


def lr_table(s: ir.Schedule, base_lr: float, epochs: int) -> list[float] | None:
    """The rate of each epoch 1..epochs, exactly as training will use it; None for plateau (data-driven)."""
    sched = make_schedule(s, base_lr)
    if sched.kind == "plateau":
        return None
    out = []
    for _ in range(epochs):
        out.append(sched.lr)
        sched.step()
    return out


def _n(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def describe(s: ir.Schedule, base_lr: float | None = None) -> str:
    """The schedule's rule with its numbers, `e` counting finished epochs (the first epoch has e = 0)."""
    kind = catalog.SCHEDULE_ALIASES.get(s.kind, s.kind)
    o = resolved_options(s)
    base = _n(float(base_lr)) if base_lr is not None else "lr0"
    head = (
        f"{kind}("
        + ", ".join(
            f"{k} = {_n(v) if not isinstance(v, (list, tuple)) else list(v)}" for k, v in o.items()
        )
        + ")"
    )
    if kind == "constant":
        rule = f"lr = {base} every epoch"
    elif kind == "step":
        rule = f"lr = {base} * {_n(o['gamma'])}^floor(e / {o['step_size']})"
    elif kind == "multistep":
        rule = (
            f"lr = {base} * {_n(o['gamma'])}^(number of milestones <= e), "
            f"milestones {list(o['milestones'])}"
        )
    elif kind == "exponential":
        rule = f"lr = {base} * {_n(o['gamma'])}^e"
    elif kind == "cosine":
        eta = _n(o["eta_min"])
        wave = f"(1 + cos(pi * e / {o['t_max']})) / 2"
        rule = (
            f"lr = {eta} + ({base} - {eta}) * {wave}" if o["eta_min"] else f"lr = {base} * {wave}"
        )
        rule += f"   (lowest at e = {o['t_max']}; rises again after, as in PyTorch)"
    elif kind == "polynomial":
        rule = (
            f"lr = {base} * (1 - min(e, {o['total_iters']}) / {o['total_iters']})^{_n(o['power'])}"
            f"   (0 from epoch {o['total_iters'] + 1} on)"
        )
    else:  # plateau
        better = {
            ("min", "rel"): f"below best * (1 - {_n(o['threshold'])})",
            ("min", "abs"): f"below best - {_n(o['threshold'])}",
            ("max", "rel"): f"above best * (1 + {_n(o['threshold'])})",
            ("max", "abs"): f"above best + {_n(o['threshold'])}",
        }[(o["mode"], o["threshold_mode"])]
        rule = (
            f"lr starts at {base}; after each epoch, {o['monitor']} improves when it is {better}; "
            f"after more than {o['patience']} epochs without improvement lr = max(lr * {_n(o['factor'])}, "
            f"{_n(o['min_lr'])})"
            + (f", then {o['cooldown']} epochs of cooldown" if o["cooldown"] else "")
            + " (depends on the run: no table)"
        )
    return f"{head}\n  {rule}"


# ---------------------------------------------------------------------------
# Early stopping


class EarlyStopping:
    """Keras' EarlyStopping: stop when `monitor` has not improved for `patience` epochs.

    An epoch improves on the best so far when its value beats it by more than
    `min_delta` (below `best - min_delta` in mode min, above `best +
    min_delta` in mode max); the first value always counts.  After each epoch
    `update(epoch, metrics)` returns True to stop: when `patience` epochs in a
    row brought no improvement.  `best_epoch` is the epoch of the best value
    (the trainer keeps those weights when `restore_best` is set) and `improved`
    says whether the last update set it.  Unlike Keras, a NaN value is never
    an improvement (Keras would keep a first NaN as the best).
    """

    def __init__(self, es: ir.EarlyStop):
        self.monitor = es.monitor
        self.patience = int(es.patience)
        self.min_delta = abs(float(es.min_delta))
        options, problems = catalog.resolve(
            catalog.EARLY_STOP,
            {"monitor": es.monitor, "mode": es.mode or None, "patience": es.patience},
            "early_stop",
        )
        if problems:
            raise SpecError([Diagnostic("error", problems[0].message, es.span, problems[0].hint)])
        self.mode = options["mode"]
        self.restore_best = bool(es.restore_best)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.updates = 0
        self.stopped_epoch: int | None = None
        self.improved = False

    def _is_improvement(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value + self.min_delta < self.best
        return value - self.min_delta > self.best

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record the epoch just finished; True means stop training now."""
        if self.monitor not in metrics:
            have = ", ".join(sorted(metrics)) or "none"
            raise TrainingError(
                f"early stopping monitors {self.monitor}, which this run does not measure "
                f"(it has: {have})"
            )
        value = float(metrics[self.monitor])
        self.updates += 1
        self.wait += 1
        self.improved = self._is_improvement(value)
        if self.improved:
            self.best, self.best_epoch, self.wait = value, int(epoch), 0
            return False
        # Keras never stops on the first epoch (its `epoch > 0`)
        if self.wait >= self.patience and self.updates > 1:
            self.stopped_epoch = int(epoch)
            return True
        return False

    def state_dict(self) -> dict[str, np.ndarray]:
        # None is stored as NaN / -1: npz holds arrays only
        return {
            "monitor": np.array(self.monitor),
            "best": np.array(np.nan if self.best is None else self.best, np.float64),
            "best_epoch": np.array(-1 if self.best_epoch is None else self.best_epoch, np.int64),
            "wait": np.array(self.wait, np.int64),
            "updates": np.array(self.updates, np.int64),
            "stopped_epoch": np.array(
                -1 if self.stopped_epoch is None else self.stopped_epoch, np.int64
            ),
        }

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        missing = [k for k in self.state_dict() if k not in d]
        if missing:
            raise TrainingError(f"the checkpoint's early-stopping state lacks {missing[0]!r}")
        if str(np.asarray(d["monitor"])) != self.monitor:
            raise TrainingError(
                f"the checkpoint's early stopping monitored {np.asarray(d['monitor'])}, "
                f"the spec monitors {self.monitor}"
            )
        best = float(np.asarray(d["best"]))
        self.best = None if math.isnan(best) else best
        be = int(np.asarray(d["best_epoch"]))
        self.best_epoch = None if be < 0 else be
        self.wait = int(np.asarray(d["wait"]))
        self.updates = int(np.asarray(d["updates"]))
        se = int(np.asarray(d["stopped_epoch"]))
        self.stopped_epoch = None if se < 0 else se
        self.improved = False
