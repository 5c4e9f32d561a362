"""TensorBoard and MLflow tracking, read back by their own readers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec import track, train
from fcspec.check import check_file
from fcspec.cli import main
from fcspec.errors import FcspecError

IRIS = ROOT / "specs" / "iris.fc"


def _history(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_scalars_histograms_and_hparams(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    out, logdir = tmp_path / "run", tmp_path / "tb"
    r = CliRunner().invoke(
        main,
        ["run", str(IRIS), "--out", str(out), "--epochs", "4", "-q", "--tensorboard", str(logdir)],
    )
    assert r.exit_code == 0, r.output
    acc = event_accumulator.EventAccumulator(
        str(logdir), size_guidance={"histograms": 0, "scalars": 0}
    )
    acc.Reload()
    tags = acc.Tags()
    history = _history(out)
    # the scalars carry metrics.jsonl's names and values, step = epoch
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        events = acc.Scalars(key)
        assert [e.step for e in events] == [1, 2, 3, 4]
        np.testing.assert_allclose([e.value for e in events], [h[key] for h in history], rtol=1e-6)
    assert "layers/hidden.weight.norm" in tags["scalars"]
    for name in ("hidden.weight", "hidden.bias", "out.weight", "out.weight.grad"):
        assert name in tags["histograms"]
    h = acc.Histograms("hidden.weight")[-1].histogram_value
    w = np.load(out / "weights.npz")["hidden.weight"]
    assert h.num == w.size and h.min == pytest.approx(float(w.min()), rel=1e-6)
    hp = acc.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in hp and "_hparams_/session_start_info" in hp
    start = hp["_hparams_/session_start_info"]
    assert b"optimizer.lr" in start and b"train.batch" in start


def test_mlflow_params_metrics_and_artifacts(tmp_path, monkeypatch):
    tracking = pytest.importorskip("mlflow.tracking")
    monkeypatch.chdir(tmp_path)  # MLflow keeps a SQLite store's artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    spec = check_file(str(IRIS)).spec
    summary = train.run(spec, out_dir=out, epochs=3, quiet=True, callbacks=[track.MLflow(uri)])
    client = tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("Iris")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["optimizer.kind"] == "adam" and float(p["optimizer.lr"]) == 0.01
    assert p["train.batch"] == "16" and p["model.hidden.units"] == "16"
    history = _history(out)
    for key in ("train_loss", "val_accuracy", "lr"):
        got = client.get_metric_history(run.info.run_id, key)
        assert sorted(m.step for m in got) == [1, 2, 3]
        by_step = {m.step: m.value for m in got}
        np.testing.assert_allclose([by_step[s] for s in (1, 2, 3)], [h[key] for h in history])
    if "test_accuracy" in summary:
        assert run.data.metrics["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"iris.fc", "weights.npz", "summary.json", "metrics.jsonl", "Iris.onnx"} <= names


def test_mlflow_from_the_cli_and_a_failed_run(tmp_path, monkeypatch):
    tracking = pytest.importorskip("mlflow.tracking")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["run", str(IRIS), "--epochs", "2", "-q", "--mlflow", uri])
    assert r.exit_code == 0, r.output
    client = tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("Iris")
    assert [x.info.status for x in client.search_runs([exp.experiment_id])] == ["FINISHED"]
    # a diverging run is ended as FAILED, not left RUNNING
    bad = tmp_path / "bad.fc"
    bad.write_text(IRIS.read_text().replace("adam(lr = 0.01)", "sgd(lr = 1e30)"))
    r = CliRunner().invoke(
        main, ["run", str(bad), "--epochs", "2", "-q", "--mlflow", uri, "--out", "bad"]
    )
    assert r.exit_code == 1 and "diverged" in r.output
    statuses = sorted(x.info.status for x in client.search_runs([exp.experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]


def test_missing_extra_is_a_one_line_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(FcspecError) as e:
        track.TensorBoard("tb")
    assert "pip install -e '.[track]'" in str(e.value)
    r = CliRunner().invoke(main, ["run", str(IRIS), "--tensorboard", "tb", "-q"])
    assert (
        r.exit_code == 1 and "pip install -e '.[track]'" in r.output and "Traceback" not in r.output
    )
