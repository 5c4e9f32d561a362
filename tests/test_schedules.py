"""schedules.py's own behaviour: rates against semantics.md's closed forms, state round trips,
refusals, explain's text, and Keras-style early stopping.  The comparison with
torch.optim.lr_scheduler (exact floats) is test_schedules_torch.py."""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np
import pytest

from fcspec import catalog, ir, schedules
from fcspec.errors import SpecError, TrainingError

EPOCHS = 40
BASE = 0.1

# (our kind and options, torch's class name and keywords, the closed form of semantics.md)
CASES = [
    ("constant", {}, None, {}, lambda b, e: b),
    (
        "step",
        {"step_size": 3, "gamma": 0.7},
        "StepLR",
        {"step_size": 3, "gamma": 0.7},
        lambda b, e: b * 0.7 ** (e // 3),
    ),
    ("step", {"step_size": 1}, "StepLR", {"step_size": 1}, lambda b, e: b * 0.1**e),
    (
        "multistep",
        {"milestones": [5, 12, 30], "gamma": 0.3},
        "MultiStepLR",
        {"milestones": [5, 12, 30], "gamma": 0.3},
        lambda b, e: b * 0.3 ** bisect_right([5, 12, 30], e),
    ),
    (
        "multistep",
        {"milestones": [2, 3, 9]},  # adjacent milestones (the language refuses repeated ones)
        "MultiStepLR",
        {"milestones": [2, 3, 9]},
        lambda b, e: b * 0.1 ** bisect_right([2, 3, 9], e),
    ),
    (
        "exponential",
        {"gamma": 0.93},
        "ExponentialLR",
        {"gamma": 0.93},
        lambda b, e: b * 0.93**e,
    ),
    (
        "cosine",
        {"t_max": 15, "eta_min": 0.001},
        "CosineAnnealingLR",
        {"T_max": 15, "eta_min": 0.001},
        lambda b, e: 0.001 + (b - 0.001) * (1 + math.cos(math.pi * e / 15)) / 2,
    ),
    (
        "cosine",
        {"t_max": 40},
        "CosineAnnealingLR",
        {"T_max": 40},
        lambda b, e: b * (1 + math.cos(math.pi * e / 40)) / 2,
    ),
    (
        "cosine",
        {"t_max": 1},
        "CosineAnnealingLR",
        {"T_max": 1},
        lambda b, e: b * (1 + math.cos(math.pi * e)) / 2,
    ),
    (
        "polynomial",
        {"total_iters": 25, "power": 1.7},
        "PolynomialLR",
        {"total_iters": 25, "power": 1.7},
        lambda b, e: b * (1 - min(25, e) / 25) ** 1.7,
    ),
    ("polynomial", {}, "PolynomialLR", {}, lambda b, e: b * (1 - min(5, e) / 5)),
]
IDS = [k + "-" + "-".join(f"{n}={v}" for n, v in o.items()) for k, o, *_ in CASES]


def our_rates(kind, options, epochs=EPOCHS, metrics=None, monitor="val_loss", base=BASE):
    sched = schedules.make_schedule(ir.Schedule(kind, dict(options)), base)
    out = []
    for e in range(epochs):
        out.append(sched.lr)
        sched.step({monitor: metrics[e], "train_loss": 0.0} if metrics is not None else {})
    return out


@pytest.mark.parametrize(("kind", "options", "cls", "kwargs", "closed"), CASES, ids=IDS)
def test_rates_follow_the_documented_closed_form(kind, options, cls, kwargs, closed):
    """A second oracle: semantics.md's formulas, which differ from torch's recursion only by round-off."""
    for e, lr in enumerate(our_rates(kind, options)):
        assert lr == pytest.approx(closed(BASE, e), rel=1e-12, abs=1e-15), e


PLATEAU_METRICS = [
    1.0,
    0.9,
    0.9,
    0.95,
    0.91,
    0.905,
    0.8,
    0.8,
    0.8,
    0.8,
    0.8,
    0.79999,
    0.5,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.6,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.2,
    0.1,
    0.1,
    0.1,
    0.1,
    0.1,
    0.1,
    0.1,
    float("nan"),
    0.1,
    0.1,
]
ACCURACY = [
    0.5,
    0.6,
    0.6,
    0.62,
    0.61,
    0.7,
    0.7,
    0.7,
    0.705,
    0.7,
    0.9,
    0.9,
    0.9,
    0.9,
    0.9,
    0.9,
    0.91,
    0.9,
    0.9,
    0.9,
    0.9,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.95,
    0.96,
    0.96,
    0.96,
    0.96,
    0.96,
    0.96,
    0.96,
    0.96,
    0.96,
]

PLATEAU_CASES = [
    ({"patience": 2}, PLATEAU_METRICS),
    ({"patience": 0, "factor": 0.5}, PLATEAU_METRICS),
    ({"patience": 1, "cooldown": 2, "factor": 0.5}, PLATEAU_METRICS),
    ({"patience": 1, "threshold": 0.05, "threshold_mode": "abs"}, PLATEAU_METRICS),
    ({"patience": 1, "threshold": 0.1, "threshold_mode": "rel"}, PLATEAU_METRICS),
    ({"patience": 0, "factor": 0.5, "min_lr": 0.02}, PLATEAU_METRICS),
    (
        {"patience": 0, "factor": 0.9, "eps": 0.005},
        PLATEAU_METRICS,
    ),  # steps below eps are skipped
    ({"mode": "max", "patience": 2}, ACCURACY),
    (
        {
            "mode": "max",
            "patience": 1,
            "threshold": 0.01,
            "threshold_mode": "abs",
            "cooldown": 1,
        },
        ACCURACY,
    ),
]


def test_plateau_mode_follows_the_monitor_when_unset():
    sched = schedules.make_schedule(ir.Schedule("plateau", {"monitor": "val_accuracy"}), BASE)
    assert sched.mode == "max"
    assert schedules.lr_table(ir.Schedule("plateau", {"monitor": "val_loss"}), BASE, 5) is None


def test_plateau_without_its_metric_is_a_training_error():
    sched = schedules.make_schedule(ir.Schedule("plateau", {"monitor": "val_loss"}), BASE)
    with pytest.raises(TrainingError, match="monitors val_loss.*it has: train_loss"):
        sched.step({"train_loss": 1.0})


@pytest.mark.parametrize(
    ("kind", "options", "metrics"),
    [(k, o, None) for k, o, *_ in CASES]
    + [("plateau", {"monitor": "val_loss", **o}, m) for o, m in PLATEAU_CASES],
)
def test_state_dict_round_trip_continues_exactly(kind, options, metrics, tmp_path):
    straight = our_rates(kind, options, metrics=metrics)
    s = ir.Schedule(kind, dict(options))
    first = schedules.make_schedule(s, BASE)
    feed = (lambda e: {"val_loss": metrics[e]}) if metrics is not None else (lambda e: {})
    got = []
    for e in range(17):
        got.append(first.lr)
        first.step(feed(e))
    np.savez(tmp_path / "s.npz", **first.state_dict())
    with np.load(tmp_path / "s.npz", allow_pickle=False) as f:
        saved = dict(f)
    second = schedules.make_schedule(s, BASE)
    second.load_state_dict(saved)
    for e in range(17, EPOCHS):
        got.append(second.lr)
        second.step(feed(e))
    assert got == straight


def test_load_state_dict_rejects_another_schedule():
    cos = schedules.make_schedule(ir.Schedule("cosine", {"t_max": 5}), BASE)
    step = schedules.make_schedule(ir.Schedule("step", {"step_size": 2}), BASE)
    with pytest.raises(TrainingError, match="cosine schedule state, the spec uses step"):
        step.load_state_dict(cos.state_dict())
    plateau = schedules.make_schedule(ir.Schedule("plateau", {"monitor": "val_loss"}), BASE)
    d = plateau.state_dict()
    del d["best"]
    with pytest.raises(TrainingError, match="lacks 'best'"):
        plateau.load_state_dict(d)


@pytest.mark.parametrize(
    ("kind", "options", "message"),
    [
        ("step", {"step_size": 0}, "step: step_size must be >= 1, got 0"),
        ("step", {"step_size": 2.5}, "step_size must be a whole number"),
        ("multistep", {"milestones": [3, 2]}, "milestones must be strictly increasing"),
        ("step", {}, "step needs step_size"),
        ("cosine", {}, "cosine needs t_max"),
        ("polynomial", {"total_iters": 0}, "total_iters must be >= 1"),
        ("plateau", {"monitor": "val_loss", "factor": 1.0}, "factor must be in"),
        ("plateau", {}, "plateau needs monitor"),
        ("plateau", {"monitor": "val_f1"}, "monitor must be one of val_loss"),
        (
            "exponential",
            {"gamma": 0.9, "step_size": 3},
            "exponential has no option 'step_size'",
        ),
        ("onecycle", {}, "unknown schedule 'onecycle'"),
    ],
)
def test_bad_options_are_spec_errors(kind, options, message):
    with pytest.raises(SpecError, match=message):
        schedules.make_schedule(ir.Schedule(kind, options), BASE)


@pytest.mark.parametrize(
    ("kind", "options", "text"),
    [
        ("constant", {}, "lr = 0.1 every epoch"),
        ("step", {"step_size": 10, "gamma": 0.5}, "lr = 0.1 * 0.5^floor(e / 10)"),
        ("multistep", {"milestones": [30, 60]}, "milestones [30, 60]"),
        ("exponential", {"gamma": 0.95}, "lr = 0.1 * 0.95^e"),
        ("cosine", {"t_max": 50}, "lr = 0.1 * (1 + cos(pi * e / 50)) / 2"),
        (
            "cosine",
            {"t_max": 50, "eta_min": 1e-4},
            "lr = 0.0001 + (0.1 - 0.0001) * (1 + cos(pi * e / 50)) / 2",
        ),
        ("polynomial", {"total_iters": 8, "power": 2.0}, "(1 - min(e, 8) / 8)^2"),
        (
            "plateau",
            {"monitor": "val_accuracy", "patience": 3, "factor": 0.5},
            "val_accuracy improves when it is above best * (1 + 0.0001)",
        ),
    ],
)
def test_describe_fills_in_the_numbers(kind, options, text):
    out = schedules.describe(ir.Schedule(kind, options), 0.1)
    assert out.startswith(kind + "(")
    assert text in out, out


# ---------------------------------------------------------------------------
# Early stopping


def stop_epoch(values, monitor="val_loss", **kw):
    """Feed values as epochs 1, 2, ...; the epoch training stops after, or None."""
    es = schedules.EarlyStopping(ir.EarlyStop(monitor=monitor, **kw))
    for epoch, v in enumerate(values, start=1):
        if es.update(epoch, {monitor: v, "train_loss": 0.0}):
            return epoch, es
    return None, es


def test_stops_after_patience_epochs_without_improvement():
    epoch, es = stop_epoch([1.0, 0.9, 0.95, 0.92, 0.91, 0.5], patience=3)
    assert epoch == 5  # epochs 3, 4, 5 did not beat 0.9
    assert (es.best, es.best_epoch, es.stopped_epoch) == (0.9, 2, 5)


def test_an_improvement_resets_the_count():
    epoch, es = stop_epoch([1.0, 1.1, 1.2, 0.8, 0.9, 0.95, 0.99], patience=3)
    assert epoch == 7 and es.best_epoch == 4


def test_min_delta_must_be_exceeded():
    # 0.99 and 0.985 are better than 1.0 but not by more than 0.02
    epoch, es = stop_epoch([1.0, 0.99, 0.985, 0.5], patience=2, min_delta=0.02)
    assert epoch == 3 and es.best == 1.0 and es.best_epoch == 1
    epoch, es = stop_epoch([1.0, 0.97, 0.94, 0.91], patience=1, min_delta=0.02)
    assert epoch is None and es.best_epoch == 4


def test_mode_max_for_accuracy():
    epoch, es = stop_epoch(
        [0.5, 0.7, 0.69, 0.7, 0.71], monitor="val_accuracy", mode="max", patience=2
    )
    assert epoch == 4 and es.best == 0.7 and es.best_epoch == 2


def test_patience_zero_stops_at_the_first_worse_epoch_but_never_the_first():
    nan = float("nan")
    epoch, _ = stop_epoch([nan, nan], patience=0)
    assert (
        epoch == 2
    )  # the first NaN did not improve either, but Keras never stops on the first epoch
    epoch, es = stop_epoch([1.0, 0.5, 0.6], patience=0)
    assert epoch == 3 and es.best_epoch == 2


def test_nan_never_improves():
    epoch, es = stop_epoch([1.0, float("nan"), float("nan")], patience=2)
    assert epoch == 3 and es.best == 1.0 and es.best_epoch == 1


def test_improved_flag_marks_the_epoch_to_keep():
    es = schedules.EarlyStopping(ir.EarlyStop(patience=5, restore_best=True))
    flags = []
    for epoch, v in enumerate([3.0, 2.0, 2.5, 1.0, 1.0], start=1):
        es.update(epoch, {"val_loss": v})
        flags.append(es.improved)
    assert flags == [True, True, False, True, False]
    assert es.restore_best and es.best_epoch == 4


def test_missing_metric_is_a_training_error():
    es = schedules.EarlyStopping(ir.EarlyStop(monitor="val_accuracy", mode="max"))
    with pytest.raises(TrainingError, match="val_accuracy.*it has: train_loss, val_loss"):
        es.update(1, {"val_loss": 1.0, "train_loss": 1.0})


def test_early_stopping_state_round_trip(tmp_path):
    values = [1.0, 0.9, 0.95, 0.97, 0.85, 0.9, 0.9, 0.9, 0.9]
    straight, _ = stop_epoch(values, patience=3)
    es = schedules.EarlyStopping(ir.EarlyStop(patience=3))
    for epoch, v in enumerate(values[:4], start=1):
        assert not es.update(epoch, {"val_loss": v})
    np.savez(tmp_path / "es.npz", **es.state_dict())
    with np.load(tmp_path / "es.npz", allow_pickle=False) as f:
        saved = dict(f)
    again = schedules.EarlyStopping(ir.EarlyStop(patience=3))
    again.load_state_dict(saved)
    assert (again.best, again.best_epoch, again.wait) == (0.9, 2, 2)
    stopped = None
    for epoch, v in enumerate(values[4:], start=5):
        if again.update(epoch, {"val_loss": v}):
            stopped = epoch
            break
    assert stopped == straight == 8
    fresh = schedules.EarlyStopping(ir.EarlyStop(patience=3))
    fresh.load_state_dict(schedules.EarlyStopping(ir.EarlyStop(patience=3)).state_dict())
    assert fresh.best is None and fresh.best_epoch is None
    other = schedules.EarlyStopping(ir.EarlyStop(monitor="train_loss"))
    with pytest.raises(TrainingError, match="monitored val_loss"):
        other.load_state_dict(saved)


def test_every_schedule_of_the_catalog_has_cases():
    """A new schedule row is tested here (and against torch) only through CASES (plateau,
    which follows a metric, through PLATEAU_CASES): name it there."""
    assert {c[0] for c in CASES} | {"plateau"} == set(catalog.SCHEDULES)
    assert PLATEAU_CASES
