"""Per-layer statistics recorded while training (layers.jsonl) and the pictures drawn from them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec import data, interpreter, layerstats, plot, train
from fcspec.check import check_file
from fcspec.cli import main

DIGITS = ROOT / "specs" / "digits.fc"


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits") / "run"
    spec = check_file(str(DIGITS)).spec
    train.run(spec, out_dir=out, epochs=3, quiet=True)
    return spec, out


def test_layer_statistics_are_recorded_every_epoch(digits_run):
    spec, out = digits_run
    rows = layerstats.read(out / "layers.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    w = np.load(out / "weights.npz")
    for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc3.weight"):
        assert rows[-1][f"{name}.norm"] == pytest.approx(np.linalg.norm(w[name].astype(np.float64)))
        assert rows[-1][f"{name}.grad_norm"] > 0
    # dead units: recomputed from the saved weights on the probe batch (first 512 rows)
    prepared = data.prepare(spec)
    net = interpreter.Network(spec.model, params=dict(w))
    probe = prepared.train.dense().x[: layerstats.PROBE_ROWS]
    net.forward(probe)
    outs = net.layer_outputs()
    for i, layer in enumerate(spec.model.layers):
        if layer.op == "relu":
            dead = 1.0 - (outs[i] > 0).any(axis=0).mean()
            assert rows[-1][f"{layer.name}.dead"] == pytest.approx(dead)
    # metrics.jsonl keeps exactly its keys
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert set(first) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "seconds",
    }


def test_resume_continues_layers_jsonl(tmp_path):
    spec = check_file(str(ROOT / "specs" / "iris.fc")).spec
    out = tmp_path / "run"
    train.run(spec, out_dir=out, epochs=2, quiet=True)
    train.run(spec, out_dir=out, epochs=4, quiet=True, resume=out)
    assert [r["epoch"] for r in layerstats.read(out / "layers.jsonl")] == [1, 2, 3, 4]


def test_fcspec_plot_of_a_finished_and_a_running_run(digits_run, tmp_path):
    pytest.importorskip("matplotlib")
    image = pytest.importorskip("matplotlib.image")
    _, out = digits_run
    r = CliRunner().invoke(main, ["plot", str(out)])
    assert r.exit_code == 0, r.output
    curves = image.imread(out / "curves.png")
    assert curves.shape[0] > 600 and curves.shape[1] > 1200  # two rows of three panels
    tiles = image.imread(out / "weights.png")  # digits are 8x8 images: fc1's rows as tiles
    assert tiles.shape[0] > 300
    # a running run: metrics so far, no summary yet
    running = tmp_path / "running"
    shutil.copytree(out, running)
    (running / "summary.json").unlink()
    (running / "curves.png").unlink()
    r = CliRunner().invoke(main, ["plot", str(running)])
    assert r.exit_code == 0, r.output
    assert (running / "curves.png").is_file()
    assert plot.run_info(running)["finished"] is False
    r = CliRunner().invoke(main, ["plot", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "metrics.jsonl" in r.output


def test_image_inputs_are_recognised():
    assert plot.image_shape(check_file(str(DIGITS)).spec) == (8, 8)
    assert plot.image_shape(check_file(str(ROOT / "specs" / "mnist.fc")).spec) == (28, 28)
    assert plot.image_shape(check_file(str(ROOT / "specs" / "iris.fc")).spec) is None
