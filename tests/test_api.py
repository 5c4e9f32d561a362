"""The Python API (`import fcspec`): load, fit, predict, evaluate, params, save, export.

Oracles: the CLI's own run of the same spec (bit-identical weights), the
interpreter recomputing the loss, onnxruntime running the export, PyTorch
loading `params` into nn.Linear, and a second process showing what
`import fcspec` loads.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import fcspec
from conftest import ROOT
from fcspec import overrides as fover
from fcspec.cli import main
from fcspec.errors import DataError, FcspecError, SpecError

SMALL = """
model Small {
    input [64]
    fc1 = linear(16) -> relu
    fc2 = linear(10)
}
loss cross_entropy
optimizer adam(lr = 0.01)
data { train = dataset("digits")  test = 0.2  validate = 0.1  normalize = standard }
train { epochs = 3  batch = 64  seed = 0 }
"""


def digits(n: int | None = None):
    """The embedded digits set as arrays (what a notebook would pass to fit)."""
    from fcspec import data

    with np.load(data.importlib.resources.files("fcspec.datasets") / "digits.npz") as f:
        x, y = f["x"], f["y"]
    return (x, y) if n is None else (x[:n], y[:n])


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.fc"
    path.write_text(SMALL)
    return path


# ---- load / loads ------------------------------------------------------------------------------


def test_import_fcspec_is_light_and_loads_the_api_on_first_use():
    code = (
        "import sys, fcspec; light = 'numpy' not in sys.modules and 'fcspec.api' not in sys.modules;"
        "fcspec.load; print(light, 'fcspec.api' in sys.modules, 'sklearn' in sys.modules,"
        " 'pandas' in sys.modules, 'onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True", "False", "False", "False"]
    assert "load" in dir(fcspec)
    with pytest.raises(AttributeError):
        fcspec.no_such_name  # noqa: B018


def test_spec_errors_are_the_located_errors_the_cli_prints(tmp_path):
    bad = ROOT / "tests" / "bad" / "batch_zero.fc"
    with pytest.raises(SpecError) as e:
        fcspec.load(bad)
    r = CliRunner().invoke(main, ["check", str(bad)])
    assert str(e.value).splitlines()[:-1] == r.output.splitlines()[:-1]  # the same diagnostics
    assert str(e.value).startswith(f"{bad}:")
    with pytest.raises(SpecError) as e:
        fcspec.loads("model M { input [4]  fc = linear(0) }\nloss mse")
    assert str(e.value).startswith("<string>:1:")
    with pytest.raises(SpecError) as e:
        fcspec.load(tmp_path / "missing.fc")
    assert "no such file" in str(e.value)


def test_loads_gives_the_checked_spec():
    m = fcspec.loads(SMALL)
    assert isinstance(m, fcspec.Model) and m.name == "Small" and not m.trained
    assert m.spec.model.param_shapes()["fc1.weight"] == (16, 64)
    with pytest.raises(FcspecError, match="not trained"):
        m.predict(np.zeros((1, 64)))


# ---- fit on the spec's data: the CLI's run --------------------------------------------------------


def test_fit_is_fcspec_run(small, tmp_path):
    m = fcspec.load(small).fit(out=tmp_path / "api", verbose=False)
    assert m is not None and m.trained and m.run_dir == tmp_path / "api"
    r = CliRunner().invoke(main, ["run", str(small), "--out", str(tmp_path / "cli"), "-q"])
    assert r.exit_code == 0, r.output
    a = np.load(tmp_path / "api" / "weights.npz")
    b = np.load(tmp_path / "cli" / "weights.npz")
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
    rows = [
        json.loads(line) for line in (tmp_path / "api" / "metrics.jsonl").read_text().splitlines()
    ]
    assert m.history == rows and [h["epoch"] for h in m.history] == [1, 2, 3]
    for f in ("checkpoint.npz", "preprocess.npz", "summary.json", "spec.fc"):
        assert (tmp_path / "api" / f).exists()
    # evaluate() without data is `fcspec eval`
    ev = m.evaluate()
    r = CliRunner().invoke(
        main, ["eval", str(small), "--weights", str(tmp_path / "cli" / "weights.npz")]
    )
    assert f"accuracy   {ev['accuracy']:.6g}" in r.output and ev["split"] == "test"
    assert ev["accuracy"] == m.summary["test_accuracy"]


def test_verbose_prints_epochs_and_quiet_prints_nothing(small, tmp_path, capfd):
    fcspec.load(small).fit(epochs=1, out=tmp_path / "a")
    assert "epoch 1/1" in capfd.readouterr().err
    fcspec.load(small).fit(epochs=1, out=tmp_path / "b", verbose=False)
    assert capfd.readouterr() == ("", "")


def test_fit_resumes_a_run_and_ends_where_an_uninterrupted_one_does(small, tmp_path):
    whole = fcspec.load(small).fit(out=tmp_path / "whole", verbose=False)
    part = fcspec.load(small).fit(epochs=2, out=tmp_path / "part", verbose=False)
    assert len(part.history) == 2
    done = fcspec.load(small).fit(resume=tmp_path / "part", verbose=False)
    assert [h["epoch"] for h in done.history] == [1, 2, 3]
    for k, v in whole.params.items():
        assert np.array_equal(done.params[k], v)


# ---- fit on arrays ----------------------------------------------------------------------------


def test_fit_on_arrays_with_string_labels(small, tmp_path):
    x, y = digits()
    names = np.array(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    labels = names[y]
    m = fcspec.load(small).fit(x[:1400], labels[:1400], epochs=5, out=tmp_path / "r", verbose=False)
    pred = m.predict(x[1400:])
    assert pred.dtype.kind in "UO" and set(pred) <= set(names)
    proba = m.predict_proba(x[1400:])
    assert proba.shape == (len(pred), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(np.sort(names)[proba.argmax(axis=1)], pred)  # columns in label order
    ev = m.evaluate(x[1400:], labels[1400:])
    assert ev["rows"] == len(pred)
    assert ev["accuracy"] == pytest.approx(np.mean(pred == labels[1400:]))
    assert ev["accuracy"] > 0.85
    # the loss, recomputed: mean cross-entropy of the predicted probabilities
    ids = np.searchsorted(np.sort(names), labels[1400:])
    want = -np.mean(np.log(proba[np.arange(len(ids)), ids].astype(np.float64)))
    assert ev["loss"] == pytest.approx(want, rel=1e-4)
    # the spec's validate fraction was held out of the given rows
    assert "val_accuracy" in m.history[-1]
    with pytest.raises(DataError, match="not seen in training"):
        m.evaluate(x[:3], np.array(["zero", "one", "eleven"]))


def test_fit_checks_the_arrays(small):
    m = fcspec.load(small)
    x, y = digits(100)
    with pytest.raises(DataError, match="y is missing"):
        m.fit(x, verbose=False)
    with pytest.raises(DataError, match="64"):
        m.fit(x[:, :10], y, verbose=False)
    with pytest.raises(DataError, match="3 distinct labels"):
        m.fit(x, y % 3 + 20, verbose=False)
    bad = x.astype(float)
    bad[5, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        m.fit(bad, y, verbose=False)


def test_dataframes_keep_their_column_names(tmp_path):
    pd = pytest.importorskip("pandas")
    spec = """
    model T { input [2]  h = linear(8) -> relu  out = linear(2) }
    loss cross_entropy
    optimizer adam(lr = 0.05)
    data { normalize = standard }
    train { epochs = 20  batch = 16 }
    """
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=200), "b": rng.normal(size=200)})
    y = pd.Series(np.where(df.a + df.b > 0, "yes", "no"))
    m = fcspec.loads(spec).fit(df, y, out=tmp_path / "r", verbose=False)
    assert m.feature_names == ["a", "b"]
    assert np.mean(m.predict(df) == y.to_numpy()) > 0.9
    # columns are found by name (as the fitted schema has them), not by position
    assert np.array_equal(m.predict_proba(df[["b", "a"]].assign(id=1)), m.predict_proba(df))
    with pytest.raises(DataError, match="no feature column named 'a'"):
        m.predict(df[["b"]])
    # text cells make `a` a categorical column: one-hot, far wider than `input [2]`
    with pytest.raises(DataError, match=r"model's input is \[2\]"):
        m.fit(df.assign(a=df.a.round(1).astype(str)), y, verbose=False)


# ---- callbacks -------------------------------------------------------------------------------


def test_callbacks_see_every_epoch_and_can_stop(small, tmp_path):
    seen = []

    class Recorder:
        def on_train_begin(self, state):
            seen.append(("begin", state.epoch, state.spec.name, state.out))

        def on_epoch_end(self, state, row):
            assert state.history[-1] is row and state.epoch == row["epoch"]
            assert state.params["fc1.weight"].shape == (16, 64)
            assert state.grads["fc1.weight"].shape == (16, 64) and np.any(state.grads["fc1.weight"])
            assert state.lr == row["lr"]
            seen.append(("epoch", row["epoch"]))
            return row["epoch"] == 2  # stop after the second epoch

        def on_train_end(self, state, summary):
            seen.append(("end", summary["epochs"]))

    class OnlyEpochs:  # every hook is optional
        def on_epoch_end(self, state, row):
            seen.append(("other", row["epoch"]))

    m = fcspec.load(small).fit(
        epochs=10, out=tmp_path / "r", callbacks=[Recorder(), OnlyEpochs()], verbose=False
    )
    assert seen == [
        ("begin", 0, "Small", tmp_path / "r"),
        ("epoch", 1),
        ("other", 1),
        ("epoch", 2),
        ("other", 2),
        ("end", 2),
    ]
    assert len(m.history) == 2 and m.summary["stopped_by_callback"]
    # the weights of the last epoch are what the model holds and the folder has
    w = np.load(tmp_path / "r" / "weights.npz")
    assert all(np.array_equal(w[k], v) for k, v in m.params.items())


# ---- params, save, load_run, export ------------------------------------------------------------


def test_params_are_pytorch_state_dict(small, tmp_path):
    torch = pytest.importorskip("torch")
    m = fcspec.load(small).fit(out=tmp_path / "r", verbose=False)
    net = torch.nn.Sequential()
    net.add_module("fc1", torch.nn.Linear(64, 16))
    net.add_module("relu", torch.nn.ReLU())
    net.add_module("fc2", torch.nn.Linear(16, 10))
    net.load_state_dict({k: torch.from_numpy(v) for k, v in m.params.items()})
    x, _ = digits(50)
    with torch.no_grad():
        want = net(torch.from_numpy(m.preprocess.apply(x))).numpy()
    np.testing.assert_allclose(m.output(x), want, rtol=1e-5, atol=1e-5)
    # params are copies: poking at them changes nothing
    p = m.params
    p["fc1.weight"][:] = 0
    assert np.any(m.params["fc1.weight"])


def test_save_and_load_run_round_trip(small, tmp_path):
    x, y = digits(600)
    labels = np.array(list("abcdefghij"))[y]
    m = fcspec.load(small).fit(x, labels, out=tmp_path / "r", verbose=False)
    m.save(tmp_path / "saved")
    for folder in (tmp_path / "r", tmp_path / "saved"):
        back = fcspec.load_run(folder)
        assert back.spec.sha256 == m.spec.sha256
        assert np.array_equal(back.predict(x), m.predict(x))
        assert np.array_equal(back.predict_proba(x), m.predict_proba(x))
        assert back.history == m.history
    # a CLI run folder loads too (the spec it names)
    r = CliRunner().invoke(main, ["run", str(small), "--out", str(tmp_path / "cli"), "-q"])
    assert r.exit_code == 0
    (tmp_path / "cli" / "spec.fc").unlink()
    back = fcspec.load_run(tmp_path / "cli")
    assert (
        back.evaluate()["accuracy"]
        == json.loads((tmp_path / "cli/summary.json").read_text())["test_accuracy"]
    )
    with pytest.raises(DataError, match="no such run folder"):
        fcspec.load_run(tmp_path / "nope")


def test_export_onnx_agrees_with_predict(small, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, y = digits(600)
    labels = np.array(list("abcdefghij"))[y]
    m = fcspec.load(small).fit(x, labels, out=tmp_path / "r", verbose=False)
    path = m.export_onnx(tmp_path / "m.onnx", labels=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    label, proba = sess.run(None, {"input": x.astype(np.float32)})
    assert np.array_equal(label.astype(str), m.predict(x).astype(str))
    np.testing.assert_allclose(proba, m.predict_proba(x), rtol=1e-5, atol=1e-6)
    plain = m.export_onnx()  # next to the run's weights, as `fcspec export`
    assert plain == tmp_path / "r" / "Small.onnx"
    out = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.astype(np.float32)}
    )[0]
    np.testing.assert_allclose(out, m.output(x), rtol=1e-5, atol=1e-5)


def test_binary_and_regression_models(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 3))
    binary = fcspec.loads(
        "model B { input [3]  h = linear(8) -> tanh  out = linear(1) }\n"
        "loss bce_with_logits\noptimizer adam(lr = 0.05)\ntrain { epochs = 30  batch = 32 }"
    )
    yb = np.where(x[:, 0] - x[:, 1] > 0, "pos", "neg")
    binary.fit(x, yb, out=tmp_path / "b", verbose=False)
    p = binary.predict_proba(x)
    assert p.shape == (300, 2) and np.mean(binary.predict(x) == yb) > 0.9
    assert np.array_equal(np.array(["neg", "pos"])[p.argmax(axis=1)], binary.predict(x))
    sess = ort.InferenceSession(
        binary.onnx(labels=True).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    label, proba = sess.run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(proba, p, rtol=1e-5, atol=1e-6)
    assert np.array_equal(label.astype(str), binary.predict(x))
    reg = fcspec.loads(
        "model R { input [3]  h = linear(16) -> relu  out = linear(1) }\n"
        "loss mse\noptimizer adam(lr = 0.02)\ntrain { epochs = 40  batch = 32 }"
    )
    yr = x @ np.array([1.0, -2.0, 0.5]) + 3
    reg.fit(x, yr, out=tmp_path / "r", verbose=False)
    assert reg.predict(x).shape == (300, 1)
    ev = reg.evaluate(x, yr)
    assert ev["rmse"] == pytest.approx(np.sqrt(np.mean((reg.predict(x)[:, 0] - yr) ** 2)), rel=1e-5)
    assert ev["rmse"] < 0.5
    with pytest.raises(FcspecError, match="regression"):
        reg.predict_proba(x)


# ---- overrides ---------------------------------------------------------------------------------


def test_overrides_edit_the_spec_and_are_checked():
    text = (ROOT / "specs" / "digits.fc").read_text()
    m = fcspec.loads(
        text,
        overrides={
            "optimizer.lr": 0.01,
            "train.batch": "full",
            "train.epochs": 4,
            "fc1.units": 32,
            "model.fc2.bias": False,
            "model.input": [64],
            "model.outputs": 10,
            "schedule": "step(step_size = 2)",
            "loss.label_smoothing": None,
            "regularize.l2": 1e-4,
            "train.early_stop.patience": 2,
            "data.validate": 0.2,
        },
    )
    s = m.spec
    assert s.optimizer.options["lr"] == 0.01 and s.train.batch is None and s.train.epochs == 4
    assert s.model.param_shapes()["fc1.weight"] == (32, 64)
    assert s.schedule.kind == "step" and s.loss.options["label_smoothing"] == 0.0
    assert s.regularize.l2 == 1e-4 and s.train.early_stop.patience == 2
    assert s.data.validate == 0.2
    # the text is still the spec's, comments kept
    assert "# logits: cross_entropy applies log-softmax" in m.source
    assert fcspec.loads(m.source).spec.sha256 == s.sha256
    # a bad value: the checker's located error on the rewritten line
    with pytest.raises(SpecError) as e:
        fcspec.loads(text, path="digits.fc", overrides={"optimizer.lr": -1.0})
    assert "digits.fc:" in str(e.value) and "adam(lr = -1.0)" in str(e.value)
    with pytest.raises(FcspecError, match="no option 'lrr'"):
        fcspec.loads(text, overrides={"optimizer.lrr": 0.1})
    assert "bias" not in next(l for l in m.spec.model.layers if l.name == "fc2").params
    with pytest.raises(FcspecError, match="no section or layer"):
        fcspec.loads(text, overrides={"optimiser.lr": 0.1})
    assert fover.value_source("data/x.csv") == '"data/x.csv"'
    assert fover.value_source((0.9, 0.99)) == "(0.9, 0.99)"
    assert fover.value_source(True) == "true"
