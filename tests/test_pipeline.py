"""End to end through the real CLI: every spec trains, exports, verifies three ways
(interpreter, onnxruntime, onnx.reference) and predicts the interpreter's classes.
Plus the accuracy claims of the docs, on the real data sets.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT, SHARED_DATA, SPECS
from fcspec import data, interpreter
from fcspec.check import load_spec
from fcspec.cli import main

HAVE_MNIST = (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(autouse=True)
def _mnist_from_shared(monkeypatch, tmp_path):
    monkeypatch.setenv("FCSPEC_DATA", str(SHARED_DATA))
    monkeypatch.setenv(
        "XDG_CACHE_HOME", str(tmp_path / "cache")
    )  # never download into the real cache
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", "http://127.0.0.1:9/")


def fcspec(*args: str):
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def _raw_inputs(spec):
    """Raw rows of the spec's training source (what an ONNX export takes), with labels."""
    return data.load_source(spec.data.train, ROOT / "specs")


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_trains_exports_verifies_and_predicts(path, tmp_path, monkeypatch):
    spec = load_spec(path)
    if spec.data.train.kind == "mnist" and not HAVE_MNIST:
        pytest.skip("needs the shared MNIST files")
    out = tmp_path / "run"
    fcspec("run", str(path), "--out", str(out), "--epochs", "1", "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and np.isfinite(summary["train_loss"])
    weights = out / "weights.npz"

    onnx_path = tmp_path / "model.onnx"
    fcspec("export", str(path), "--onnx", "--weights", str(weights), "-o", str(onnx_path))
    verified = fcspec("verify", str(path), "--weights", str(weights))
    assert "ok:" in verified

    if data.is_tabular(spec.data.train):
        _predict_raw_table(spec, out, onnx_path, tmp_path)
        return
    # predict (onnxruntime, preprocessing baked in) == the interpreter on preprocessed inputs
    x, y = _raw_inputs(spec)
    x, y = x[:2000], y[:2000]
    data_file = tmp_path / "rows.npz"
    np.savez(data_file, x=x, y=y)
    pred_file = tmp_path / "pred.npz"
    fcspec("predict", str(onnx_path), str(data_file), "--output", str(pred_file))
    with np.load(pred_file, allow_pickle=False) as pred:
        onnx_out = pred["output"]
        onnx_classes = pred["class"] if "class" in pred else None
    net = interpreter.Network(spec.model)
    with np.load(weights, allow_pickle=False) as w:
        net.load_params(dict(w))
    pre = data.Preprocess.load(out / "preprocess.npz")
    ours = net.predict(pre.apply(data.as_inputs(spec, x)))
    np.testing.assert_allclose(onnx_out, ours, rtol=1e-4, atol=1e-5)
    if spec.task == "classification":
        top2 = np.sort(ours, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 1e-4  # ties may round either way
        assert np.array_equal(onnx_classes[clear], ours.argmax(axis=1)[clear])


def _predict_raw_table(spec, out, onnx_path, tmp_path):
    """predict on the raw table file writes the interpreter's class names."""
    import csv

    from fcspec import tabular

    prepared = data.prepare(spec)
    spec = prepared.spec
    raw_path, _ = data._table_path(spec.data.train, ROOT / "specs")
    pred = tmp_path / "pred.csv"
    shown = fcspec("predict", str(onnx_path), str(raw_path), "--output", str(pred))
    assert "missing cells imputed" in shown and "accuracy" in shown
    net = interpreter.Network(spec.model)
    with np.load(out / "weights.npz", allow_pickle=False) as w:
        net.load_params(dict(w))
    table = tabular.read_csv(raw_path)
    x, _ = tabular.encode(prepared.schema, table)
    ours = net.predict(prepared.preprocess.apply(x))
    names = tabular.class_names(prepared.schema, ours.argmax(axis=1))
    with open(pred, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == [str(n) for n in names]
    got = np.array([[float(r[f"output_{j}"]) for j in range(ours.shape[1])] for r in rows])
    np.testing.assert_allclose(got, ours, rtol=1e-4, atol=1e-5)


def test_eval_reports_the_run_test_figures(tmp_path):
    out = tmp_path / "run"
    fcspec("run", str(ROOT / "specs" / "iris.fc"), "--out", str(out), "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    text = fcspec("eval", str(ROOT / "specs" / "iris.fc"), "--weights", str(out / "weights.npz"))
    assert "split" in text and "accuracy" in text
    if "val_accuracy" in summary:
        acc = float(text.split("accuracy")[1].split()[0])
        assert acc == pytest.approx(summary["val_accuracy"], abs=1e-9)


def test_digits_main_job_reaches_97_percent(tmp_path):
    """README's main job: `fcspec run specs/digits.fc`, >= 97% on its held-out test split."""
    out = tmp_path / "run"
    fcspec("run", str(ROOT / "specs" / "digits.fc"), "--out", str(out), "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.97, summary


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the shared MNIST files")
def test_mnist_784_128_64_10_adam_reaches_97_5_percent(tmp_path):
    """The classic tutorial network: Adam lr 1e-3, 5 epochs, batch 64, x / 255, real MNIST test set."""
    out = tmp_path / "run"
    fcspec("run", str(ROOT / "specs" / "mnist_adam.fc"), "--out", str(out), "--quiet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 5
    assert summary["test_accuracy"] >= 0.975, summary


def test_outputs_get_the_usual_file_mode(tmp_path):
    """Atomic writes go through mkstemp (0600); the files must end up as a plain open() makes them."""
    import os

    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        fcspec(
            "run", str(ROOT / "specs" / "iris.fc"), "--out", str(out), "--epochs", "1", "--quiet"
        )
        fcspec(
            "export",
            str(ROOT / "specs" / "iris.fc"),
            "--onnx",
            "--weights",
            str(out / "weights.npz"),
        )
    finally:
        os.umask(old)
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f


def test_run_ends_with_the_figures_and_where_the_files_are(tmp_path):
    out = tmp_path / "run"
    text = fcspec("run", str(ROOT / "specs" / "digits.fc"), "--out", str(out), "--epochs", "2")
    last = text.strip().splitlines()[-2:]
    summary = json.loads((out / "summary.json").read_text())
    assert last[0].startswith(f"test_accuracy {summary['test_accuracy']:.2%}")
    assert last[1].startswith(f"saved {out}/ (weights.npz") and "after 2 epochs" in last[1]


@pytest.mark.skipif(not HAVE_MNIST, reason="needs the shared MNIST files")
def test_predict_reads_mnist_idx_files_with_labels(tmp_path):
    """predict over MNIST's own files (IDX, gzipped) reports the accuracy eval computes."""
    spec_path = str(ROOT / "specs" / "mnist_adam.fc")
    out = tmp_path / "run"
    fcspec("run", spec_path, "--out", str(out), "--epochs", "1", "--quiet")
    fcspec(
        "export",
        spec_path,
        "--onnx",
        "--weights",
        str(out / "weights.npz"),
        "-o",
        str(tmp_path / "m.onnx"),
    )
    mnist = SHARED_DATA / "mnist"
    text = fcspec(
        "predict",
        str(tmp_path / "m.onnx"),
        str(mnist / "t10k-images-idx3-ubyte.gz"),
        "--labels",
        str(mnist / "t10k-labels-idx1-ubyte.gz"),
    )
    summary = json.loads((out / "summary.json").read_text())
    assert text.startswith("10,000 rows")
    acc = float(text.split("accuracy")[1].split()[0])
    assert acc == pytest.approx(summary["test_accuracy"], abs=2e-4)  # ties may round either way
