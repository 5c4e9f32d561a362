"""The sweep block: parsing, fmt, checking and writing a trial's spec (no Optuna needed).

Bad sweep blocks have golden messages with the other bad specs (tests/bad/sweep_*.fc).
"""

from __future__ import annotations

import pytest

from fcspec import ir
from fcspec.check import check_source, compile_source
from fcspec.fmt import format_source
from fcspec.sweep.apply import trial_source, value_source
from fcspec.syntax import parse

BASE = """\
# digits, searched
model Digits {
    input [64]
    hidden = linear(128) -> relu  # the hidden layer
    drop = dropout(0.2)
    out = linear(10)
}
loss cross_entropy
optimizer sgd(0.1)  # the rate
regularize l1(1e-5)
data { train = dataset("digits")  validate = 0.2 }
"""

SWEEP = """
# what to search
sweep {
    optimizer.lr = log_uniform(1e-4, 1e-1)  # log scale
    optimizer.momentum = uniform(0, 0.95)
    train.batch = choice(32, 64, full)
    hidden.units = int_uniform(16, 256, step = 16)
    drop.p = uniform(0.0, 0.5)
    out.bias = choice(true, false)
    data.normalize = choice(none, standard)
    regularize.l2 = log_uniform(1e-6, 1e-3)
    loss.label_smoothing = uniform(0, 0.2)
    trials = 12
    sampler = random
    monitor = val_accuracy
    pruner = median(startup = 2, warmup = 3)
}
"""


def test_sweep_block_parses_with_spans_for_every_path_word():
    program = parse(BASE + SWEEP, "s.fc")
    sweep = program.sections[-1]
    assert sweep.keyword == "sweep"
    search = sweep.body[3]
    assert search.dotted == "hidden.units"
    layer, option = search.path
    # the layer name is a reference (the language server goes to its definition from here)
    assert (layer.text, layer.span.line, layer.span.col, layer.span.end_col) == (
        "hidden",
        18,
        5,
        11,
    )
    assert (option.text, option.span.col) == ("units", 12)


def test_fmt_round_trips_the_block_and_keeps_its_comments():
    text = BASE + SWEEP.replace("optimizer.lr = ", "optimizer.lr   =   ")
    out = format_source(text)
    assert format_source(out) == out
    assert "    optimizer.lr = log_uniform(1e-4, 1e-1)  # log scale\n" in out
    assert "# what to search\nsweep {\n" in out
    assert "    pruner = median(startup = 2, warmup = 3)\n}\n" in out


def test_check_builds_the_sweep_and_run_ignores_it():
    result = check_source(BASE + SWEEP, "s.fc")
    assert result.errors == [], [d.render() for d in result.errors]
    sw = result.sweep
    assert [p.path for p in sw.params][:4] == [
        "optimizer.lr",
        "optimizer.momentum",
        "train.batch",
        "hidden.units",
    ]
    lr, _, batch, units = sw.params[:4]
    assert (lr.distribution, lr.low, lr.high, lr.log) == ("log_uniform", 1e-4, 1e-1, True)
    assert batch.choices == ("32", "64", "full")
    assert units.grid_values() == list(range(16, 257, 16))
    assert (sw.trials, sw.sampler, sw.monitor, sw.direction) == (
        12,
        "random",
        "val_accuracy",
        "maximize",
    )
    assert (sw.pruner, sw.pruner_options) == ("median", {"startup": 2, "warmup": 3})
    # The training spec is the same with or without the block (same IR, same hash).
    plain = compile_source(BASE, "s.fc")
    assert ir.to_json(result.spec) == ir.to_json(plain)


def test_defaults_follow_the_data():
    sw = check_source(BASE + "sweep { optimizer.lr = log_uniform(1e-3, 1e-1) }").sweep
    assert (sw.trials, sw.sampler, sw.monitor, sw.direction, sw.pruner) == (
        20,
        "tpe",
        "val_loss",
        "minimize",
        "none",
    )
    assert sw.seed == 0


def test_a_grid_runs_its_size():
    text = (
        BASE
        + "sweep { train.batch = choice(32, 64)  hidden.units = int_uniform(16, 48, step = 16)  sampler = grid }"
    )
    sw = check_source(text).sweep
    assert sw.trials == 6
    assert sw.grid() == {"train.batch": ["32", "64"], "hidden.units": [16, 32, 48]}


def test_a_trial_spec_has_the_values_written_in_and_no_sweep_block():
    result = check_source(BASE + SWEEP, "s.fc")
    drawn = {
        "optimizer.lr": 0.0031622776,
        "optimizer.momentum": 0.9,
        "train.batch": "full",
        "hidden.units": 64,
        "drop.p": 0.123456,
        "out.bias": "false",
        "data.normalize": "standard",
        "regularize.l2": 1e-4,
        "loss.label_smoothing": 0.05,
    }
    values = {p.path: value_source(p, drawn[p.path]) for p in result.sweep.params}
    text = trial_source(BASE + SWEEP, result.sweep, values, "# trial 3\n")
    assert "sweep" not in text and "what to search" not in text
    assert format_source(text) == text
    for line in (
        "# trial 3\n# digits, searched\n",
        "    hidden = linear(64) -> relu  # the hidden layer\n",
        "    drop = dropout(0.1235)\n",
        "    out = linear(10, bias = false)\n",
        "loss cross_entropy(label_smoothing = 0.05)\n",
        "optimizer sgd(0.003162, momentum = 0.9)  # the rate\n",
        "regularize l1(1e-5) + l2(0.0001)\n",
        "    normalize = standard\n",
        "train {\n    batch = full\n}\n",
    ):
        assert line in text, (line, text)
    spec = compile_source(text)
    assert spec.optimizer.options["lr"] == 0.003162
    assert spec.train.batch is None and spec.regularize.l2 == 1e-4
    assert spec.model.layers[0].attrs["units"] == 64


def test_a_written_setting_is_replaced_in_place():
    text = (
        BASE
        + "train {\n    epochs = 3  # short\n    batch = 32\n}\nsweep { train.batch = choice(16, 64) }\n"
    )
    result = check_source(text)
    out = trial_source(text, result.sweep, {"train.batch": "64"})
    assert "train {\n    epochs = 3  # short\n    batch = 64\n}\n" in out


@pytest.mark.parametrize(
    ("value", "text"),
    [(0.12345678, "0.1235"), (1.5e-05, "1.5e-05"), (0.9999999, "0.9999999")],
)
def test_drawn_numbers_are_short_but_stay_inside_the_range(value, text):
    sweep = check_source(BASE + "sweep { drop.p = uniform(0.1, 0.9999999) }").sweep
    if value < 0.1:
        sweep = check_source(BASE + "sweep { optimizer.lr = log_uniform(1e-5, 1e-1) }").sweep
    assert value_source(sweep.params[0], value) == text
