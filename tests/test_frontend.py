"""The front end: grammar, checker, IR, fmt and the static CLI commands.

Golden files: tests/golden/<spec>.ir.json and <spec>.show.txt for every spec,
tests/golden/errors/<name>.txt for every bad (and warned) spec.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT, SPECS
from fcspec import catalog, ir
from fcspec.check import check_file, check_source, compile_source
from fcspec.cli import main
from fcspec.errors import SpecError
from fcspec.fmt import format_source

BAD = sorted((ROOT / "tests" / "bad").glob("*.fc"))
WARN = sorted((ROOT / "tests" / "warn").glob("*.fc"))


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ---- the example specs ----------------------------------------------------------


def test_there_are_specs():
    assert len(SPECS) >= 7


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_checks_clean(path, in_root):
    result = check_file(path.relative_to(ROOT))
    assert result.diagnostics == []
    assert result.spec is not None


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_ir_and_show(path, in_root, golden):
    rel = str(path.relative_to(ROOT))
    r = cli("ir", rel)
    assert r.exit_code == 0
    golden(f"{path.stem}.ir.json", r.output)
    r = cli("show", rel)
    assert r.exit_code == 0
    golden(f"{path.stem}.show.txt", r.output)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_specs_are_formatted_and_fmt_keeps_meaning(path):
    text = path.read_text()
    out = format_source(text, str(path))
    assert format_source(out, str(path)) == out
    assert ir.to_json(compile_source(out, str(path))) == ir.to_json(compile_source(text, str(path)))
    # comments survive formatting
    assert [l.strip() for l in text.splitlines() if l.strip().startswith("#")] == [
        l.strip() for l in out.splitlines() if l.strip().startswith("#")
    ]


# ---- bad specs: one mistake each, exact messages --------------------------------


def test_bad_corpus_is_large():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_error(path, in_root, golden):
    r = CliRunner().invoke(main, ["check", str(path.relative_to(ROOT))])
    assert r.exit_code == 1, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert "Traceback" not in r.output
    first = r.output.splitlines()[0]
    assert re.match(r"tests/bad/\w+\.fc:\d+:\d+: error: ", first), first
    golden(f"errors/{path.stem}.txt", r.output)


@pytest.mark.parametrize("path", WARN, ids=lambda p: p.stem)
def test_warning_spec(path, in_root, golden):
    r = CliRunner().invoke(main, ["check", str(path.relative_to(ROOT))])
    assert r.exit_code == 0
    assert ": warning: " in r.output and ": error: " not in r.output
    golden(f"errors/{path.stem}.txt", r.output)


def test_many_errors_are_all_reported():
    result = check_file(ROOT / "tests" / "bad" / "many_errors.fc")
    assert len(result.errors) >= 6
    lines = {d.span.line for d in result.errors}
    assert len(lines) >= 3


def test_every_error_is_located():
    for path in BAD:
        for d in check_file(path).errors:
            assert d.span is not None and d.span.line >= 1 and d.span.col >= 1, (path, d)


def test_missing_file_and_directory(tmp_path):
    r = CliRunner().invoke(main, ["check", str(tmp_path / "nope.fc")])
    assert r.exit_code == 1 and "no such file" in r.output
    r = CliRunner().invoke(main, ["show", str(tmp_path)])
    assert r.exit_code != 0 and "Traceback" not in r.output


def test_enormous_file_is_refused(tmp_path):
    p = tmp_path / "big.fc"
    p.write_text("# " + "x" * (2 << 20))
    r = CliRunner().invoke(main, ["check", str(p)])
    assert r.exit_code == 1 and "MB" in r.output


def test_enormous_layer_is_refused():
    with pytest.raises(SpecError, match="cannot fit|weights"):
        compile_source(
            "model M { input [100000] out = linear(100000000) }\nloss mse\noptimizer sgd"
        )


# ---- the language sketch: its examples check and mean what it says --------------

SKETCH_MNIST = (ROOT / "specs" / "mnist.fc").read_text()


def test_sketch_mnist_means_what_it_says():
    spec = compile_source(SKETCH_MNIST, "mnist.fc")
    assert spec.model.input_shape == (1, 28, 28)
    ops = [(l.name, l.op) for l in spec.model.layers]
    assert ops == [
        ("flatten_1", "flatten"),
        ("fc1", "linear"),
        ("relu_1", "relu"),
        ("fc2", "linear"),
        ("relu_2", "relu"),
        ("fc3", "linear"),
    ]
    assert spec.model.param_shapes() == {
        "fc1.weight": (128, 784),
        "fc1.bias": (128,),
        "fc2.weight": (64, 128),
        "fc2.bias": (64,),
        "fc3.weight": (10, 64),
        "fc3.bias": (10,),
    }
    assert spec.model.num_params == 109_386
    assert spec.loss.kind == "cross_entropy" and spec.task == "classification"
    assert spec.optimizer.options == {
        "lr": 0.01,
        "momentum": 0.9,
        "dampening": 0.0,
        "nesterov": False,
        "weight_decay": 0.0,
    }
    assert spec.schedule.kind == "step" and spec.schedule.options == {"step_size": 2, "gamma": 0.1}
    assert spec.data.train.kind == "mnist" and spec.data.train.args == {"split": "train"}
    assert spec.data.scale == 255.0
    assert (spec.train.epochs, spec.train.batch, spec.train.shuffle, spec.train.seed) == (
        5,
        64,
        True,
        0,
    )


BASE = "model M {{ input [784]  {body} }}\nloss {loss}\noptimizer {opt}\n{rest}\n"


def _c(body="out = linear(10)", loss="cross_entropy", opt="sgd", rest=""):
    return compile_source(BASE.format(body=body, loss=loss, opt=opt, rest=rest))


@pytest.mark.parametrize(
    "line,kind,expected",
    [
        (
            "sgd(lr = 0.1, momentum = 0.9, nesterov = true, weight_decay = 5e-4)",
            "sgd",
            {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "dampening": 0.0},
        ),
        (
            "adam(lr = 1e-3, betas = (0.9, 0.999), eps = 1e-8)",
            "adam",
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False},
        ),
        (
            "adamw(lr = 1e-3, weight_decay = 0.01)",
            "adamw",
            {
                "lr": 1e-3,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.01,
                "amsgrad": False,
            },
        ),
        (
            "rmsprop(lr = 0.01, alpha = 0.99, momentum = 0, centered = false)",
            "rmsprop",
            {
                "lr": 0.01,
                "alpha": 0.99,
                "eps": 1e-8,
                "weight_decay": 0.0,
                "momentum": 0.0,
                "centered": False,
            },
        ),
        (
            "adagrad(lr = 0.01, lr_decay = 0)",
            "adagrad",
            {
                "lr": 0.01,
                "lr_decay": 0.0,
                "weight_decay": 0.0,
                "initial_accumulator_value": 0.0,
                "eps": 1e-10,
            },
        ),
        (
            "adamw",
            "adamw",
            {
                "lr": 1e-3,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.01,
                "amsgrad": False,
            },
        ),
        (
            "sgd",
            "sgd",
            {"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
        ),
    ],
)
def test_sketch_optimizers(line, kind, expected):
    spec = _c(opt=line)
    assert spec.optimizer.kind == kind and spec.optimizer.options == expected


@pytest.mark.parametrize(
    "line,kind,expected",
    [
        ("step(step_size = 10, gamma = 0.5)", "step", {"step_size": 10, "gamma": 0.5}),
        (
            "multistep(milestones = [30, 60], gamma = 0.1)",
            "multistep",
            {"milestones": (30, 60), "gamma": 0.1},
        ),
        ("exponential(gamma = 0.95)", "exponential", {"gamma": 0.95}),
        ("cosine(t_max = 50, eta_min = 0)", "cosine", {"t_max": 50, "eta_min": 0.0}),
        ("cosine", "cosine", {"t_max": 10, "eta_min": 0.0}),  # t_max defaults to the epochs
        ("polynomial", "polynomial", {"total_iters": 5, "power": 1.0}),
    ],
)
def test_sketch_schedules(line, kind, expected):
    spec = _c(rest=f"schedule {line}")
    assert spec.schedule.kind == kind and spec.schedule.options == expected


def test_sketch_regularize_and_defaults():
    assert _c(rest="regularize l2(1e-4)").regularize == ir.Regularize(0.0, 1e-4)
    assert _c(rest="regularize l1(1e-5) + l2(1e-4)").regularize == ir.Regularize(1e-5, 1e-4)
    spec = _c()
    assert spec.schedule.kind == "constant" and spec.regularize == ir.Regularize()
    assert spec.train == ir.Train(metrics=("accuracy",))


@pytest.mark.parametrize(
    "loss,options",
    [
        (
            "cross_entropy(label_smoothing = 0.1, weight = [1, 1, 1, 1, 1, 1, 1, 1, 1, 2])",
            {"label_smoothing": 0.1, "weight": (1.0,) * 9 + (2.0,), "reduction": "mean"},
        ),
        ("mse(reduction = sum)", {"reduction": "sum"}),
        ("l1", {"reduction": "mean"}),
        ("huber(delta = 1.0)", {"delta": 1.0, "reduction": "mean"}),
    ],
)
def test_sketch_losses(loss, options):
    spec = _c(loss=loss)
    assert spec.loss.options == options
    assert spec.loss.kind == {"l1": "mae"}.get(loss.split("(")[0], loss.split("(")[0])


def test_sketch_data_and_train_blocks():
    spec = _c(
        rest="""
data {
    train    = npz("train.npz", x = "x", y = "y")   # paths relative to the .fc file
    test     = csv("test.csv", target = "label")
    validate = 0.1                                   # hold out 10% of train
    normalize = standard                             # per-feature, from train statistics
}
train {
    epochs  = 50
    batch   = 32
    shuffle = true
    seed    = 0                 # same seed, same result, bit for bit
    early_stop(monitor = val_loss, patience = 5)
    clip_grad_norm = 1.0
    metrics = [accuracy]
}"""
    )
    d = spec.data
    assert d.train == ir.DataSource("npz", {"path": "train.npz", "x": "x", "y": "y"})
    assert d.test.kind == "csv"
    assert d.test.args == {
        "path": "test.csv",
        "target": "label",
        **{
            k: o.default
            for k, o in catalog.SOURCES["csv"].opts.items()
            if k not in ("path", "target")
        },
    }
    assert d.validate == 0.1 and d.normalize == "standard"
    t = spec.train
    assert (t.epochs, t.batch, t.shuffle, t.seed, t.clip_grad_norm, t.metrics) == (
        50,
        32,
        True,
        0,
        1.0,
        ("accuracy",),
    )
    assert t.early_stop == ir.EarlyStop("val_loss", 5, 0.0, "min", False)


def test_sketch_logistic_and_regression_examples():
    logistic = compile_source("""
model Logistic {
    input [30]
    out = linear(1) -> sigmoid
}
loss bce
optimizer sgd(lr = 0.1)
data { train = dataset("breast_cancer")  validate = 0.2  normalize = standard }
train { epochs = 100  batch = full  seed = 0 }
""")
    assert (
        logistic.task == "binary"
        and logistic.train.batch is None
        and logistic.model.num_params == 31
    )
    assert logistic.data.validate == 0.2
    diabetes = compile_source((ROOT / "specs" / "diabetes.fc").read_text())
    assert diabetes.task == "regression" and diabetes.regularize.l2 == 1e-4
    assert [l.op for l in diabetes.model.layers] == ["linear", "tanh", "linear"]


def test_layers_and_generated_names():
    spec = _c(
        body="linear(32) -> leaky_relu(0.2) -> dropout(0.5) linear(16) -> gelu(approximate = tanh) "
        "-> elu -> softplus(beta = 2) linear(10)"
    )
    names = [l.name for l in spec.model.layers]
    assert names == [
        "linear_1",
        "leaky_relu_1",
        "dropout_1",
        "linear_2",
        "gelu_1",
        "elu_1",
        "softplus_1",
        "linear_3",
    ]
    attrs = {l.name: l.attrs for l in spec.model.layers}
    assert attrs["leaky_relu_1"] == {"negative_slope": 0.2}
    assert attrs["dropout_1"] == {"p": 0.5}
    assert attrs["gelu_1"] == {"approximate": "tanh"}
    assert attrs["softplus_1"] == {"beta": 2.0, "threshold": 20.0}
    # generated names skip the ones a user took
    spec = _c(body="linear_1 = linear(5) linear(10)")
    assert [l.name for l in spec.model.layers] == ["linear_1", "linear_2"]


def test_bias_false_and_init():
    spec = _c(body="out = linear(10, bias = false, init = xavier_uniform)")
    layer = spec.model.layers[0]
    assert layer.params == {"weight": (10, 784)} and layer.attrs["init"] == "xavier_uniform"


def test_hash_ignores_layout_and_comments():
    a = compile_source(SKETCH_MNIST)
    b = compile_source(format_source("# another comment\n" + SKETCH_MNIST))
    assert a.sha256 == b.sha256
    c = compile_source(SKETCH_MNIST.replace("lr = 0.01", "lr = 0.02"))
    assert c.sha256 != a.sha256


# ---- CLI -------------------------------------------------------------------------


def test_cli_check_all_specs(in_root):
    r = cli("check", *[str(p.relative_to(ROOT)) for p in SPECS])
    assert r.exit_code == 0 and r.output.count(": ok (") == len(SPECS)


def test_cli_version_and_help():
    r = cli("--version")
    assert r.exit_code == 0 and "fcspec, version" in r.output
    r = cli("--help")
    assert r.exit_code == 0 and "fcspec run specs/digits.fc" in r.output
    for command in (
        "check",
        "show",
        "fmt",
        "ir",
        "explain",
        "run",
        "eval",
        "export",
        "import",
        "predict",
        "verify",
    ):
        r = cli(command, "--help")
        assert r.exit_code == 0 and "Usage:" in r.output, command


def test_cli_fmt_check_and_write(tmp_path):
    messy = tmp_path / "messy.fc"
    messy.write_text(
        "model M{input [4] out=linear(3)}  # tiny\nloss   cross_entropy optimizer adam(lr=1e-3)\n"
    )
    r = CliRunner().invoke(main, ["fmt", "--check", str(messy)])
    assert r.exit_code == 1 and "would reformat" in r.output
    before = cli("ir", str(messy)).output
    r = cli("fmt", "--write", str(messy))
    assert r.exit_code == 0
    assert messy.read_text() == (
        "model M {\n    input [4]\n    out = linear(3)\n}  # tiny\n\n"
        "loss cross_entropy\noptimizer adam(lr = 1e-3)\n"
    )
    assert cli("fmt", "--check", str(messy)).exit_code == 0
    assert cli("ir", str(messy)).output == before


def test_cli_ir_is_canonical_json(in_root):
    r = cli("ir", "specs/digits.fc")
    data = json.loads(r.output)
    assert list(data) == sorted(data)
    assert data["model"]["num_params"] == 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10


def test_cli_explain(in_root):
    r = cli("explain", "specs/mnist.fc")
    assert r.exit_code == 0, r.output
    out = r.output
    assert "dampening = 0" in out and "U(-0.03571, 0.03571)" in out
    # StepLR(step_size=2, gamma=0.1) from lr 0.01: epochs 1-2 0.01, 3-4 0.001, 5 0.0001
    rates = re.findall(r"epoch +(\d+): ([0-9.e-]+)", out)
    assert [int(e) for e, _ in rates] == [1, 2, 3, 4, 5]
    assert [float(v) for _, v in rates] == pytest.approx([0.01, 0.01, 0.001, 0.001, 0.0001])


def test_check_reads_no_data(tmp_path, monkeypatch):
    # mnist() with an empty data folder and no network: check is static, so still fine.
    monkeypatch.setenv("FCSPEC_DATA", str(tmp_path))
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", "http://127.0.0.1:9/")
    assert cli("check", str(ROOT / "specs" / "mnist.fc")).exit_code == 0


def test_check_does_not_import_numpy_onnx_or_training():
    # `fcspec check` stays under 0.3 s: lark and the standard library only (numpy alone
    # would cost about 0.1 s of start-up)
    heavy = ("onnx", "onnxruntime", "fcspec.train", "fcspec.interpreter", "numba", "numpy")
    code = (
        "import sys; from fcspec.cli import main\n"
        "sys.argv=['fcspec','check','specs/digits.fc']\n"
        "try: main()\nexcept SystemExit: pass\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert out.strip().endswith("[]"), out


# ---- property: formatting is idempotent and keeps the IR ---------------------------

ACTS = [
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "silu",
    "selu",
    "elu(alpha = 0.5)",
    "leaky_relu(0.1)",
    "softplus",
    "dropout(0.25)",
    "gelu(approximate = tanh)",
]
SEPARATORS = [" ", "\n", "\n\n", "  # a comment\n", "\n    ", "\t"]


@st.composite
def specs(draw):
    sep = lambda: draw(st.sampled_from(SEPARATORS))  # noqa: E731
    dims = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    body = [f"input [{', '.join(map(str, dims))}]"]
    if len(dims) > 1:
        body.append("flatten")
    for i in range(draw(st.integers(0, 3))):
        units = draw(st.integers(1, 16))
        chain = f"linear({units}{', bias = false' if draw(st.booleans()) else ''})"
        for _ in range(draw(st.integers(0, 2))):
            chain += " -> " + draw(st.sampled_from(ACTS))
        if draw(st.booleans()):
            chain = f"h{i} = " + chain
        body.append(chain)
    family = draw(st.sampled_from(["ce", "bce", "mse", "nll"]))
    out_units = draw(st.integers(2, 5))
    ending, loss = {
        "ce": (
            f"out = linear({out_units})",
            draw(
                st.sampled_from(
                    [
                        "cross_entropy",
                        "cross_entropy(label_smoothing = 0.1)",
                        "cross_entropy(reduction = sum)",
                    ]
                )
            ),
        ),
        "bce": ("out = linear(1) -> sigmoid", "bce"),
        "mse": (
            f"out = linear({out_units})",
            draw(st.sampled_from(["mse", "mae", "huber(delta = 2.0)"])),
        ),
        "nll": (f"out = linear({out_units}) -> log_softmax", "nll"),
    }[family]
    body.append(ending)
    model = "model Net {" + sep() + sep().join(body) + sep() + "}"
    opt = draw(
        st.sampled_from(
            [
                "sgd(lr = 0.1, momentum = 0.9)",
                "adam",
                "adamw(lr = 3e-4)",
                "rmsprop(centered = true)",
                "adagrad(lr_decay = 0.01)",
            ]
        )
    )
    sections = [model, f"loss {loss}", f"optimizer {opt}"]
    if draw(st.booleans()):
        sections.append(
            "schedule "
            + draw(
                st.sampled_from(
                    ["step(step_size = 3)", "cosine", "exponential(0.9)", "multistep([2, 5])"]
                )
            )
        )
    if draw(st.booleans()):
        sections.append("regularize l1(1e-5) + l2(1e-4)")
    if draw(st.booleans()):
        sections.append(
            "data {" + sep() + f'train = dataset("iris"){sep()}validate = 0.2' + sep() + "}"
        )
    if draw(st.booleans()):
        sections.append(
            "train {"
            + sep()
            + f"epochs = {draw(st.integers(1, 50))}{sep()}batch = "
            + draw(st.sampled_from(["full", "1", "32"]))
            + sep()
            + "}"
        )
    order = draw(st.permutations(sections))
    return ("# header comment\n" if draw(st.booleans()) else "") + sep().join(order) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_fmt_is_idempotent_and_keeps_the_ir(text):
    result = check_source(text)
    assert result.spec is not None, [d.render(text) for d in result.errors]
    once = format_source(text)
    assert format_source(once) == once
    assert ir.to_json(compile_source(once)) == ir.to_json(result.spec)
    assert once.count("#") == text.count("#")


def test_did_you_mean_prefers_the_fewest_edits():
    """A swapped pair of letters is one edit: `adma` means `adam`, though difflib's ratio
    alone ranks `adamax` first; with no name near enough there is no guess."""
    from fcspec.errors import closest

    assert closest("adma", ["adamax", "adam", "adamw", "sgd"]) == "adam"
    assert closest("adamx", ["adamax", "adam", "adamw"]) in ("adamax", "adamw")
    assert closest("rmsporp", list(catalog.OPTIMIZERS)) == "rmsprop"
    assert closest("zzz", list(catalog.OPTIMIZERS)) is None
    text = "model M { input [2]  out = linear(2) }\nloss cross_entropy\noptimizer adma(lr = 0.1)\n"
    hints = [d.hint for d in check_source(text).errors]
    assert "did you mean `adam`?" in hints, hints
