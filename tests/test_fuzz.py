"""Fuzzing the front end and the static CLI: no input may crash fcspec.

Three families of inputs, all driven by hypothesis:

* mutations of the real specs in specs/*.fc -- deleted, inserted, duplicated or
  swapped characters and tokens, truncation at any byte, random bytes (invalid
  UTF-8, NUL, a BOM) -- through `check_source` (text), `check_file` (bytes on
  disk), `fmt` and the CLI.  Every input either checks or gives located
  diagnostics / an `FcspecError`; any other exception is a bug.
* VALID specs generated from fcspec/catalog.py (layers, activations and their
  options, a loss that fits the model's ending, optimizers, schedules, data and
  train blocks with in-range options): they check clean, `fmt` is idempotent and
  keeps the IR, and a few are built into an interpreter `Network` and run forward.
* the CLI commands check, show, ir, fmt and explain over mutated specs: exit code
  0 or 1, never an uncaught exception or a traceback.

Budget: the default run of this file takes well under 60 s on 2 cores.  For a
longer campaign (20x the examples) set FCSPEC_FUZZ=long:

    FCSPEC_FUZZ=long /work/venv/bin/python -m pytest tests/test_fuzz.py

A failure prints the smallest input hypothesis found (and stores it in
.hypothesis/ so the next run replays it first).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conftest import SPECS
from fcspec import catalog, ir
from fcspec.check import check_file, check_source, compile_source
from fcspec.cli import main
from fcspec.errors import FcspecError, SpecError
from fcspec.fmt import format_source

# ---- budget ----------------------------------------------------------------------

LONG = os.environ.get("FCSPEC_FUZZ", "") == "long"
SCALE = 20 if LONG else 1

settings.register_profile(
    "fcspec-fuzz",
    deadline=None,  # a slow example is not a bug here; the suite's total time is the budget
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
    print_blob=True,
)
_BASE = settings.get_profile("fcspec-fuzz")


def budget(n: int) -> settings:
    """`n` examples by default, 20 * n with FCSPEC_FUZZ=long (without touching the global profile)."""
    return settings(_BASE, max_examples=n * SCALE)


SPEC_TEXTS = [p.read_text("utf-8") for p in SPECS]

# Pieces of the language (and near misses) to splice into the specs.
TOKENS = [
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    "=",
    "->",
    ",",
    "+",
    "-",
    ".",
    "#",
    '"',
    "\\",
    ":",
    "'",
    ";",
    "*",
    "\n",
    " ",
    "\t",
    "\r",
    "\f",
    "\u00e9",
    "\u2028",
    "\ufeff",
    "\x00",
    "\x7f",
    *catalog.LAYERS,
    *catalog.LOSSES,
    *catalog.OPTIMIZERS,
    *catalog.SCHEDULES,
    *catalog.SOURCES,
    *catalog.DATA_KEYS,
    *catalog.TRAIN_KEYS,
    *catalog.DATASETS,
    *catalog.MONITORS,
    "model",
    "loss",
    "optimizer",
    "schedule",
    "regularize",
    "data",
    "train",
    "input",
    "early_stop",
    "l1",
    "l2",
    "true",
    "false",
    "full",
    "units",
    "bias",
    "init",
    "lr",
    "betas",
    "weight",
    "p",
    "fc1",
    "fc1",
    "out",
    "x",
    "y",
    "_",
    "0",
    "1",
    "-1",
    "2",
    "10",
    "0.5",
    "1e-3",
    "1e300",
    "1e999",
    "-0",
    "+1",
    ".5",
    "1.",
    "1e",
    "0x10",
    "nan",
    "99999999999999999999",
    "9" * 5000,
    '"x"',
    '""',
    '"digits"',
    '"train"',
    '"a\\"b"',
    '"/dev/zero"',
    '"../../etc/passwd"',
    "[" * 40,
    "(" * 40,
    "[1, 2]",
    "(0.9, 0.999)",
    "[]",
    "()",
]

_TOKEN_RE = re.compile(
    r'[A-Za-z_]\w*|[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|"[^"\n]*"|->|#[^\n]*|\S'
)


@st.composite
def mutated_text(draw) -> str:
    """A real spec with 1-4 character- or token-level edits."""
    text = draw(st.sampled_from(SPEC_TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        kind = draw(
            st.sampled_from(
                [
                    "delete",
                    "insert",
                    "insert_text",
                    "duplicate",
                    "truncate",
                    "token_delete",
                    "token_replace",
                    "token_duplicate",
                    "token_swap",
                ]
            )
        )
        tokens = list(_TOKEN_RE.finditer(text))
        if kind.startswith("token") and not tokens:
            kind = "insert"
        if kind == "delete":
            i = draw(st.integers(0, n))
            j = draw(st.integers(i, min(n, i + 40)))
            text = text[:i] + text[j:]
        elif kind == "insert":
            i = draw(st.integers(0, n))
            text = text[:i] + draw(st.sampled_from(TOKENS)) + text[i:]
        elif kind == "insert_text":
            i = draw(st.integers(0, n))
            text = text[:i] + draw(st.text(max_size=8)) + text[i:]
        elif kind == "duplicate":
            i = draw(st.integers(0, n))
            j = draw(st.integers(i, n))
            k = draw(st.integers(0, n))
            text = text[:k] + text[i:j] + text[k:]
        elif kind == "truncate":
            text = text[: draw(st.integers(0, n))]
        else:
            m = tokens[draw(st.integers(0, len(tokens) - 1))]
            a, b = m.span()
            if kind == "token_delete":
                text = text[:a] + text[b:]
            elif kind == "token_replace":
                text = text[:a] + draw(st.sampled_from(TOKENS)) + text[b:]
            elif kind == "token_duplicate":
                text = text[:b] + " " + m.group() + text[b:]
            else:  # swap with another token
                m2 = tokens[draw(st.integers(0, len(tokens) - 1))]
                (a, b), (c, d) = sorted([m.span(), m2.span()])
                if b <= c:
                    text = text[:a] + text[c:d] + text[b:c] + text[a:b] + text[d:]
    return text


@st.composite
def mutated_bytes(draw) -> bytes:
    """A real spec's bytes with byte-level damage: invalid UTF-8, NUL, a BOM, truncation, noise."""
    raw = draw(st.sampled_from(SPEC_TEXTS)).encode("utf-8")
    if draw(st.booleans()):
        raw = draw(mutated_text()).encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(1, 3))):
        n = len(raw)
        i = draw(st.integers(0, n))
        kind = draw(st.sampled_from(["noise", "piece", "truncate", "bom", "overwrite"]))
        if kind == "noise":
            raw = raw[:i] + draw(st.binary(min_size=1, max_size=6)) + raw[i:]
        elif kind == "piece":
            piece = draw(
                st.sampled_from(
                    [
                        b"\xff",
                        b"\xc3",
                        b"\xe2\x82",
                        b"\xed\xa0\x80",
                        b"\x00",
                        b"\xef\xbb\xbf",
                        b"\xc3\xa9",
                        b"\r\n",
                    ]
                )
            )
            raw = raw[:i] + piece + raw[i:]
        elif kind == "truncate":
            raw = raw[:i]
        elif kind == "bom":
            raw = b"\xef\xbb\xbf" + raw
        else:
            raw = raw[:i] + bytes([draw(st.integers(0, 255))]) + raw[i + 1 :]
    return raw


# ---- the properties every diagnostic must have ------------------------------------


def assert_well_formed(result, line_count: int | None) -> None:
    """Errors are located inside the file, render without raising, and exclude a spec."""
    for d in result.diagnostics:
        assert d.severity in ("error", "warning"), d
        assert d.message, d
        if d.severity == "error":
            assert d.span is not None, d
        if d.span is not None:
            assert d.span.line >= 1 and d.span.col >= 1, d
            if line_count is not None:
                assert d.span.line <= line_count + 1, (d, line_count)
        assert isinstance(d.render(result.source), str)
        assert isinstance(d.render(None), str)
    if result.errors:
        assert result.spec is None
        str(SpecError(result.diagnostics, result.source))  # what the CLI prints
    else:
        assert result.spec is not None
        assert ir.to_json(result.spec)


def assert_fmt_behaves(text: str, result) -> None:
    """fmt raises only FcspecError; what it prints is a fixpoint and means the same."""
    try:
        once = format_source(text, "fuzz.fc")
    except FcspecError:
        return
    assert format_source(once, "fuzz.fc") == once
    if result.spec is not None:
        assert ir.to_json(compile_source(once, "fuzz.fc")) == ir.to_json(result.spec)


# ---- mutated specs: text, bytes on disk ----------------------------------------------


@budget(300)
@given(mutated_text())
def test_mutated_text_checks_or_gives_located_diagnostics(text):
    result = check_source(text, "fuzz.fc")  # any non-FcspecError exception fails the test as it is
    assert_well_formed(result, text.count("\n") + 1)
    try:
        spec = compile_source(text, "fuzz.fc")
    except SpecError as e:
        assert result.errors and str(e)
    else:
        assert result.spec is not None and spec.sha256 == result.spec.sha256
    assert_fmt_behaves(text, result)


@pytest.fixture(scope="module")
def scratch_dir():
    with tempfile.TemporaryDirectory(prefix="fcspec-fuzz-") as d:
        yield Path(d)


@budget(200)
@given(raw=mutated_bytes())
def test_mutated_bytes_on_disk_check_or_give_located_diagnostics(scratch_dir, raw):
    path = scratch_dir / "fuzz.fc"
    path.write_bytes(raw)
    result = check_file(path)
    assert_well_formed(result, raw.count(b"\n") + 1)
    if result.source is not None:
        assert_fmt_behaves(result.source, result)


def test_deep_nesting_and_enormous_numbers_are_located_errors():
    """Found by this file: both once escaped as RecursionError / ValueError from the parser."""
    base = (Path(SPECS[0]).parent / "iris.fc").read_text("utf-8")
    for bad, needle in [
        (base.replace("input [4]", "input " + "[" * 3000 + "4" + "]" * 3000), "nested more than"),
        (
            base.replace("adam(lr = 0.01)", "adam(lr = " + "f(" * 3000 + "1" + ")" * 3000 + ")"),
            "nested more than",
        ),
        (base.replace("input [4]", "input " + "(1," * 3000 + "4" + ")" * 3000), "nested more than"),
        (base.replace("linear(16)", "linear(" + "9" * 5000 + ")"), "whole number"),
    ]:
        result = check_source(bad, "deep.fc")
        assert result.spec is None
        assert any(needle in d.message for d in result.errors), [d.message for d in result.errors]
        assert_well_formed(result, bad.count("\n") + 1)
        if needle.startswith("nested"):
            with pytest.raises(SpecError):
                format_source(bad, "deep.fc")
        else:
            assert_fmt_behaves(bad, result)
    # nesting that is merely deep-ish still gets an ordinary (type) error, not the nesting one
    ok_depth = base.replace("input [4]", "input " + "[" * 10 + "4" + "]" * 10)
    assert not any("nested" in d.message for d in check_source(ok_depth).errors)


# ---- valid specs generated from the catalog ------------------------------------------

FLOATS = [0.0, 1e-8, 1e-4, 0.001, 0.01, 0.1, 0.25, 0.5, 0.9, 0.99, 1.0, 2.0, 20.0]
INTS = [0, 1, 2, 3, 5, 10, 100]
SEPARATORS = [" ", "\n", "\n\n", "  # note\n", "\n    ", "\t"]


def _candidates(opt: catalog.Opt) -> list[str]:
    """Source texts of values that are in range for `opt` (judged by the catalog's own check)."""
    ok = lambda v: opt.check is None or opt.check(v) is None  # noqa: E731
    if opt.kind == "int":
        return [str(v) for v in INTS if ok(v)]
    if opt.kind == "float":
        return [repr(v) for v in FLOATS if ok(v)]
    if opt.kind == "bool":
        return ["true", "false"]
    if opt.kind == "choice":
        return list(opt.choices) + [f'"{c}"' for c in opt.choices]
    if opt.kind == "pair":
        pairs = [(a, b) for a in (0.0, 0.5, 0.9) for b in (0.9, 0.99, 0.999)]
        return [f"({a}, {b})" for a, b in pairs if ok((a, b))] + ["[0.8, 0.9]"]
    return []  # floats / ints / str / sources: built by hand where they are used


@st.composite
def call_text(
    draw, name: str, sig: catalog.Sig, skip=(), fixed: dict[str, str] | None = None
) -> str:
    """`name(opts...)` with a random subset of in-range options, sometimes positional."""
    fixed = dict(fixed or {})
    args: list[str] = []
    for key, opt in sig.opts.items():
        if key in skip:
            continue
        if key in fixed:
            value = fixed.pop(key)
        else:
            cands = _candidates(opt)
            if not cands or not (opt.required or draw(st.booleans())):
                continue
            value = draw(st.sampled_from(cands))
        positional = (
            key in sig.positional
            and len(args) == sig.positional.index(key)
            and all("=" not in a for a in args)
            and draw(st.booleans())
        )
        args.append(value if positional else f"{key} = {value}")
    if not args and draw(st.booleans()):
        return name
    return f"{name}({', '.join(args)})"


def _activation(draw) -> str:
    name = draw(st.sampled_from(catalog.ACTIVATIONS + ("dropout",)))
    if name in ("softmax", "log_softmax"):
        name = "relu"  # keep the last-layer rules to the ending below
    return draw(call_text(name, catalog.LAYERS[name]))


@st.composite
def valid_spec(draw) -> tuple[str, dict]:
    """A spec that must check clean, and what it was built from (for the forward test)."""
    sep = lambda: draw(st.sampled_from(SEPARATORS))  # noqa: E731
    dims = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3))
    body = [f"input [{', '.join(map(str, dims))}]"]
    if len(dims) > 1 or draw(st.booleans()):
        body.append("flatten")
    names = iter(f"h{i}" for i in range(100))
    for _ in range(draw(st.integers(0, 3))):
        chain = [
            draw(
                call_text(
                    "linear",
                    catalog.LAYERS["linear"],
                    fixed={"units": str(draw(st.integers(1, 12)))},
                )
            )
        ]
        chain += [_activation(draw) for _ in range(draw(st.integers(0, 2)))]
        if draw(st.booleans()):
            chain[0] = f"{next(names)} = {chain[0]}"
        body.append(" -> ".join(chain))
    loss = draw(st.sampled_from(list(catalog.LOSSES) + list(catalog.LOSS_ALIASES)))
    kind = catalog.LOSS_ALIASES.get(loss, loss)
    task = catalog.TASKS[kind]
    width = (
        1
        if task == "binary"
        else draw(st.integers(2, 6))
        if task in ("classification", "distribution")
        else draw(st.integers(1, 4))
    )
    ending = {"nll": " -> log_softmax", "kl_div": " -> log_softmax", "bce": " -> sigmoid"}.get(
        kind, ""
    )
    body.append(f"out = linear({width}){ending}")
    fixed = {}
    if "weight" in catalog.LOSSES[kind].opts and draw(st.booleans()):
        fixed["weight"] = (
            "["
            + ", ".join(draw(st.sampled_from(["0.5", "1", "2.0", "0"])) for _ in range(width))
            + "]"
        )
    loss_text = draw(call_text(loss, catalog.LOSSES[kind], fixed=fixed))

    opt_name = draw(st.sampled_from(list(catalog.OPTIMIZERS)))
    opt_fixed, opt_skip = {}, ()
    if opt_name == "sgd":
        if draw(st.booleans()):  # PyTorch: nesterov needs momentum > 0 and no dampening
            opt_fixed = {"nesterov": "true", "momentum": draw(st.sampled_from(["0.5", "0.9"]))}
            opt_skip = ("dampening",)
        else:
            opt_skip = ("nesterov",)
    optimizer = draw(
        call_text(opt_name, catalog.OPTIMIZERS[opt_name], skip=opt_skip, fixed=opt_fixed)
    )

    has_data = draw(st.booleans())
    validate = has_data and draw(st.booleans())
    sections = [
        "model Net {" + sep() + sep().join(body) + sep() + "}",
        f"loss {loss_text}",
        f"optimizer {optimizer}",
    ]

    if draw(st.booleans()):
        sched = draw(st.sampled_from(list(catalog.SCHEDULES) + list(catalog.SCHEDULE_ALIASES)))
        skind = catalog.SCHEDULE_ALIASES.get(sched, sched)
        sfixed = {}
        if skind == "multistep":
            ms = sorted(draw(st.sets(st.integers(1, 30), min_size=1, max_size=4)))
            sfixed["milestones"] = "[" + ", ".join(map(str, ms)) + "]"
        if skind == "plateau":
            monitor = "val_loss" if validate else "train_loss"
            sfixed["monitor"] = draw(
                st.sampled_from([monitor, f'"{monitor}"'])
            )  # bare, like early_stop's
        sections.append(
            "schedule " + draw(call_text(sched, catalog.SCHEDULES[skind], fixed=sfixed))
        )
    if draw(st.booleans()):
        terms = draw(st.lists(st.sampled_from(["l1", "l2"]), min_size=1, max_size=2, unique=True))
        sections.append(
            "regularize "
            + " + ".join(f"{t}({draw(st.sampled_from(['0', '1e-5', '0.001']))})" for t in terms)
        )
    if has_data:
        lines = [f'train = dataset("{draw(st.sampled_from(catalog.DATASETS))}")']
        if draw(st.booleans()):
            lines.append(f"test = {draw(st.sampled_from(['0.2', '0.1', '0']))}")
        if validate:
            lines.append(f"validate = {draw(st.sampled_from(['0.2', '0.1', '0.5']))}")
        if draw(st.booleans()):
            lines.append(f"scale = {draw(st.sampled_from(['255', '16.0', '1']))}")
        if draw(st.booleans()):
            lines.append(f"normalize = {draw(st.sampled_from(['none', 'standard', 'minmax']))}")
        sections.append("data {" + sep() + sep().join(draw(st.permutations(lines))) + sep() + "}")
    if draw(st.booleans()):
        lines = []
        for key in draw(
            st.lists(
                st.sampled_from(
                    ["epochs", "batch", "shuffle", "seed", "clip_grad_norm", "metrics"]
                ),
                unique=True,
            )
        ):
            value = {
                "epochs": str(draw(st.integers(1, 60))),
                "batch": draw(st.sampled_from(["full", "1", "32", "64"])),
                "shuffle": draw(st.sampled_from(["true", "false"])),
                "seed": str(draw(st.integers(0, 2**31))),
                "clip_grad_norm": draw(st.sampled_from(["1.0", "0.5", "5"])),
                "metrics": "["
                + ", ".join(
                    draw(st.lists(st.sampled_from(catalog.METRICS[task]), unique=True))
                    if catalog.METRICS[task]
                    else []
                )
                + "]",
            }[key]
            lines.append(f"{key} = {value}")
        if draw(st.booleans()):
            monitors = (
                ["train_loss"]
                + (["val_loss"] if validate else [])
                + (
                    ["val_accuracy", "train_accuracy"]
                    if validate and task in ("classification", "binary")
                    else []
                )
                + (["val_mae", "val_rmse"] if validate and task == "regression" else [])
            )
            lines.append(
                draw(
                    call_text(
                        "early_stop",
                        catalog.EARLY_STOP,
                        fixed={"monitor": draw(st.sampled_from(monitors))},
                    )
                )
            )
        sections.append("train {" + sep() + sep().join(draw(st.permutations(lines))) + sep() + "}")
    text = (
        ("# generated\n" if draw(st.booleans()) else "")
        + sep().join(draw(st.permutations(sections)))
        + "\n"
    )
    return text, {"dims": dims, "task": task, "width": width}


@budget(200)
@given(valid_spec())
def test_generated_valid_specs_check_clean_and_fmt_keeps_them(case):
    text, _ = case
    result = check_source(text, "gen.fc")
    assert result.spec is not None, [d.render(text) for d in result.errors]
    assert_well_formed(result, text.count("\n") + 1)
    once = format_source(text, "gen.fc")
    assert format_source(once, "gen.fc") == once
    assert ir.to_json(compile_source(once, "gen.fc")) == ir.to_json(result.spec)
    assert once.count("#") == text.count("#")


@budget(15)
@given(valid_spec(), st.integers(1, 5), st.booleans())
def test_generated_specs_build_and_run_forward(case, batch, training):
    from fcspec import interpreter

    text, info = case
    spec = compile_source(text, "gen.fc")
    rng = np.random.default_rng(0)
    net = interpreter.Network(spec.model, rng=rng)
    assert net.theta.size == spec.model.num_params
    x = rng.standard_normal((batch, *spec.model.input_shape)).astype(np.float32)
    out = net.forward(x, training=training, rng=np.random.default_rng(1))
    assert out.shape == (batch, *spec.model.output_shape)
    assert spec.model.output_shape == (info["width"],)
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))


# ---- the CLI over mutated specs --------------------------------------------------------

COMMANDS = ["check", "show", "ir", "fmt", "explain"]


@budget(120)
@given(text=mutated_text(), command=st.sampled_from(COMMANDS))
def test_cli_never_shows_a_traceback(scratch_dir, text, command):
    path = scratch_dir / "cli.fc"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    if command == "explain":
        # Known issue (reported): explain lists the lr of EVERY epoch, so `epochs = 1e300`
        # never returns.  Keep the fuzzer away from it rather than hang the suite.
        result = check_source(text)
        assume(result.spec is None or result.spec.train.epochs <= 10_000)
    res = CliRunner().invoke(main, [command, str(path)], catch_exceptions=True)
    assert res.exception is None or isinstance(res.exception, SystemExit), (
        f"{type(res.exception).__name__}: {res.exception}"
    )
    assert res.exit_code in (0, 1), (res.exit_code, res.output)
    assert "Traceback" not in res.output


@pytest.mark.parametrize(
    "block",
    [
        'data { normalize = standard  train = dataset("iris") }',
        'data { test = dataset("iris")\n  train = dataset("iris") }',
        'data { validate = 0.2  normalize = none  train = dataset("iris")  scale = 2 }',
    ],
)
def test_train_setting_after_a_value_is_a_name_not_the_section_keyword(block):
    """Found by the generator above: LALR's merged lookaheads made the lexer read `train` after a
    value as the `train` section keyword, so `data { normalize = standard  train = ... }` failed."""
    text = (
        f"model N {{ input [4]  out = linear(3) }}\nloss cross_entropy\noptimizer adam\n{block}\n"
    )
    spec = compile_source(text)
    assert spec.data.train == ir.DataSource("dataset", {"name": "iris"})
    once = format_source(text)
    assert ir.to_json(compile_source(once)) == ir.to_json(spec)


def test_a_missing_brace_before_a_section_still_says_so():
    text = (
        'model N { input [4]  out = linear(3) }\nloss mse\noptimizer adam\ndata { train = dataset("iris")\n'
        "train { epochs = 1 }\n"
    )
    (err,) = check_source(text).errors
    assert "expected `}` to close the `data` block" in err.message and err.span.line == 5
