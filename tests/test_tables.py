"""The tables agree: every catalog name has its implementation, and every implementation its name.

The catalog (fcspec/catalog.py) declares each layer, loss, optimizer, schedule
and data source once; the implementations live beside their kind (ops.OPS,
losses.LOSSES, optim's and schedules' kinds, data.READERS, the embedded data
sets) keyed by the row's name.  `disagreements()` lists everything that does not
match, so adding a name without its implementation (or the reverse) fails here,
never in a user's run.
"""

from __future__ import annotations

import importlib.resources
import re

import numpy as np
import pytest

from conftest import ROOT
from fcspec import catalog, data, ir, losses, ops, optim, playground, schedules


def _both(what: str, rows, impls) -> list[str]:
    out = [f"{what} {n!r} has a catalog row but no implementation" for n in rows if n not in impls]
    out += [f"{what} {n!r} is implemented but has no catalog row" for n in impls if n not in rows]
    return out


def _embedded_datasets() -> set[str]:
    files = [f.name for f in importlib.resources.files("fcspec.datasets").iterdir()]
    arrays = {f[: -len(".npz")] for f in files if f.endswith(".npz")}
    tables = {name for name, (file, _) in catalog.TABULAR_DATASETS.items() if file in files}
    return arrays | tables


def _torch_calls() -> list[str]:
    """Every layer, loss, optimizer and schedule row writes a PyTorch call for its defaults,
    and each `{option}` in its template is one of its options."""
    out = []
    tables = {
        "layer": catalog.LAYERS,
        "loss": catalog.LOSSES,
        "optimizer": catalog.OPTIMIZERS,
        "schedule": catalog.SCHEDULES,
    }
    for what, table in tables.items():
        for name, row in table.items():
            if not row.torch:
                out.append(f"{what} {name!r} has no PyTorch equivalent (its row's `torch`)")
                continue
            if callable(row.torch):
                continue
            unknown = set(re.findall(r"\{(\w+)\}", row.torch)) - set(row.opts) - {"options"}
            if unknown:
                out.append(f"{what} {name!r}: `torch` names {sorted(unknown)}, not options")
    return out


def disagreements() -> list[str]:
    out = _both("layer", catalog.LAYERS, ops.OPS)
    out += _both("loss", catalog.LOSSES, losses.LOSSES)
    out += _both("optimizer", catalog.OPTIMIZERS, optim._KINDS)
    out += _both("schedule", catalog.SCHEDULES, schedules._KINDS)
    out += _both("data source", catalog.SOURCES, data.READERS)
    out += _both("embedded data set", catalog.EMBEDDED, _embedded_datasets())
    out += _both("playground data set", catalog.PLAYGROUND, playground.LAYOUTS)
    # `fcspec export --torch [--train]` writes each row's `torch` call
    out += _torch_calls()
    for name, cls in optim._KINDS.items():
        if cls.rule.__func__ is optim.Optimizer.rule.__func__:
            out.append(f"optimizer {name!r}: its class has no `rule` (fcspec explain prints it)")
    for name, op in ops.OPS.items():
        for part in ("forward", "backward", "onnx"):
            if not callable(getattr(op, part, None)):
                out.append(f"op {name!r} has no {part}")
    for name, row in catalog.LAYERS.items():
        if row.output not in catalog.OUTPUTS:
            out.append(f"layer {name!r}: output {row.output!r} is not one of {catalog.OUTPUTS}")
    for name, row in catalog.LOSSES.items():
        if row.task not in catalog.METRICS:
            out.append(f"loss {name!r}: task {row.task!r} is not one of {list(catalog.METRICS)}")
        if row.takes not in catalog.TAKES_WORDS:
            out.append(
                f"loss {name!r}: takes {row.takes!r}, not one of {list(catalog.TAKES_WORDS)}"
            )
        if row.takes in ("probabilities", "log_probabilities") and not catalog.producer(row.takes):
            out.append(f"loss {name!r}: no single layer outputs the {row.takes} it takes")
        if not row.formula:
            out.append(f"loss {name!r} has no formula (fcspec explain prints it)")
        for output, (severity, _message, _hint) in row.after.items():
            if output not in catalog.OUTPUTS or severity not in ("error", "warning"):
                out.append(f"loss {name!r}: bad `after` entry {output!r}: {severity!r}")
    for alias, name in catalog.LOSS_ALIASES.items():
        if name not in catalog.LOSSES:
            out.append(f"loss alias {alias!r} names no loss")
    for alias, name in catalog.SCHEDULE_ALIASES.items():
        if name not in catalog.SCHEDULES:
            out.append(f"schedule alias {alias!r} names no schedule")
    for name, row in catalog.SOURCES.items():
        out += [
            f"source {name!r}: file option {f!r} is not an option"
            for f in row.files
            if f not in row.opts
        ]
    tables = (
        catalog.LAYERS,
        catalog.LOSSES,
        catalog.OPTIMIZERS,
        catalog.SCHEDULES,
        catalog.SOURCES,
    )
    for table in tables:
        out += [f"{name!r} has no doc line" for name, row in table.items() if not row.doc]
    return out


def test_the_tables_agree():
    assert disagreements() == []


def test_every_name_has_its_doc_entry():
    doc = (ROOT / "docs" / "language.md").read_text()
    for table in (
        catalog.LAYERS,
        catalog.LOSSES,
        catalog.OPTIMIZERS,
        catalog.SCHEDULES,
        catalog.SOURCES,
    ):
        for name in table:
            assert f"| `{name}` |" in doc, name


@pytest.mark.parametrize(
    ("table", "name", "row"),
    [
        ("LAYERS", "swish2", catalog.Layer(doc="x sigmoid(2x)")),
        (
            "LOSSES",
            "poisson",
            catalog.Loss(doc="Poisson", task="regression", takes="values", formula="x"),
        ),
        ("OPTIMIZERS", "lion", catalog.Optimizer(doc="Lion")),
        ("SCHEDULES", "onecycle", catalog.Sig(doc="one cycle")),
        ("SOURCES", "parquet2", catalog.Source(doc="Parquet")),
    ],
)
def test_a_name_without_its_implementation_is_caught(monkeypatch, table, name, row):
    monkeypatch.setitem(getattr(catalog, table), name, row)
    assert any(repr(name) in d and "no implementation" in d for d in disagreements())


def test_an_implementation_without_its_name_is_caught(monkeypatch):
    monkeypatch.setitem(data.READERS, "feather", lambda args, base: None)
    assert any("'feather' is implemented but has no catalog row" in d for d in disagreements())


def _option_cases(row: catalog.Optimizer) -> list[dict]:
    """The defaults, and each state-changing switch on (momentum for those that have it)."""
    cases: list[dict] = [{}]
    extra = {"momentum": 0.9} if "momentum" in row.opts else {}
    if extra:
        cases.append(dict(extra))
    for key, opt in row.opts.items():
        if opt.kind == "bool":
            cases.append({**extra, key: True})
    return cases


@pytest.mark.parametrize("name", list(catalog.OPTIMIZERS))
def test_optimizer_rows_name_the_state_their_implementation_uses(name):
    """Each state vector the row names is allocated, used by the update (it moves from its
    start), and checkpointed; an implementation reaching for an unnamed one fails its step."""
    row = catalog.OPTIMIZERS[name]
    rng = np.random.default_rng(0)
    for case in _option_cases(row):
        spec = ir.Optimizer(name, {"lr": 0.01, **case})
        opt = optim.make_optimizer(spec, 7)
        start = {k: v.copy() for k, v in opt.state.items()}
        theta = rng.standard_normal(7).astype(np.float32)
        for _ in range(3):
            opt.step(theta, rng.standard_normal(7).astype(np.float32), 0.01)
        names = row.state(optim.resolved_options(spec))
        assert tuple(opt.state) == names, case
        assert len(optim.make_state_names(spec)) == len(names)
        for k in names:
            assert not np.array_equal(opt.state[k], start[k]), (case, k)
        assert set(names) <= set(opt.state_dict()), case


def test_resolve_fills_defaults_and_reports_every_kind_of_problem():
    sgd = catalog.OPTIMIZERS["sgd"]
    options, problems = catalog.resolve(sgd, {"lr": 0.1}, "sgd")
    assert problems == [] and list(options) == list(sgd.opts) and options["momentum"] == 0.0
    _, problems = catalog.resolve(sgd, {"lr": 0, "betas": (0.9, 0.99)}, "sgd")
    assert [p.key for p in problems] == ["betas", "lr"]
    _, problems = catalog.resolve(sgd, {"lr": 0.1, "nesterov": True}, "sgd")
    assert [p.key for p in problems] == ["nesterov"]  # the row's own rule
    plateau = catalog.SCHEDULES["plateau"]
    options, problems = catalog.resolve(plateau, {"monitor": "val_accuracy"}, "plateau")
    assert problems == [] and options["mode"] == "max"  # mode follows the monitor
    _, problems = catalog.resolve(plateau, {}, "plateau")
    assert [p.message for p in problems] == ["plateau needs monitor"]
    _, problems = catalog.resolve(catalog.SCHEDULES["cosine"], {}, "cosine")
    assert [p.message for p in problems] == ["cosine needs t_max"]
