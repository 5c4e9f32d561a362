"""ONNX details: shapes on every edge, --fixed-batch, verify --opset, predict --task for
foreign models, and a predict that never imports onnx."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from conftest import SPECS
from fcspec import check, interpreter, onnx_export, runtime
from fcspec.cli import main


def _random_export(path, **kwargs):
    spec = check.load_spec(path)
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    pre = None
    if spec.data is not None and spec.data.normalize != "none":
        from fcspec import data

        shape = spec.model.input_shape
        pre = data.Preprocess(
            np.float32(spec.data.scale),
            np.full(shape, 0.5, np.float32),
            np.full(shape, 2.0, np.float32),
            spec.data.normalize,
        )
    return spec, params, onnx_export.export(spec, params, pre, **kwargs)


# Specs whose input width comes from their data (`input auto`, tables) need a run first.
FIXED = [p for p in SPECS if "input auto" not in p.read_text()]


@pytest.mark.parametrize("path", FIXED, ids=lambda p: p.stem)
def test_every_edge_of_an_export_has_a_shape(path):
    spec, _, model = _random_export(path)
    shapes = {v.name: v for v in [*model.graph.value_info, *model.graph.output]}
    for node in model.graph.node:
        for out in node.output:
            assert out in shapes, f"{node.name}: {out} has no shape"
            dims = shapes[out].type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch"
            assert all(d.dim_value > 0 for d in dims[1:]), (node.name, dims)


def test_fixed_batch_exports_a_static_batch_and_predict_pads_the_last(tmp_path):
    spec, params, dynamic = _random_export(SPECS[0])
    _, _, fixed = _random_export(SPECS[0], fixed_batch=4)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    onnx.save(dynamic, tmp_path / "dynamic.onnx")
    onnx.save(fixed, tmp_path / "fixed.onnx")
    x = np.random.default_rng(0).random((10, *spec.model.input_shape), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    runtime.predict(tmp_path / "dynamic.onnx", tmp_path / "x.npz", output=tmp_path / "a.npz")
    runtime.predict(tmp_path / "fixed.onnx", tmp_path / "x.npz", output=tmp_path / "b.npz")
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert b["output"].shape[0] == 10
    np.testing.assert_allclose(a["output"], b["output"], rtol=1e-6, atol=1e-6)


def test_verify_takes_an_opset(tmp_path, in_root):
    spec, params, _ = _random_export("specs/digits.fc")
    np.savez(tmp_path / "weights.npz", **params)
    from fcspec import data

    data.Preprocess(
        np.float32(16),
        np.full(spec.model.input_shape, 0.5, np.float32),
        np.full(spec.model.input_shape, 2.0, np.float32),
        "standard",
    ).save(tmp_path / "preprocess.npz")
    r = CliRunner().invoke(
        main,
        ["verify", "specs/digits.fc", "--weights", str(tmp_path / "weights.npz"), "--opset", "20"],
    )
    assert r.exit_code == 0, r.output
    assert "opset 20" in r.output
    r = CliRunner().invoke(
        main,
        ["verify", "specs/digits.fc", "--weights", str(tmp_path / "weights.npz"), "--opset", "3"],
    )
    assert r.exit_code == 1 and "unsupported ONNX opset 3" in r.output


def test_predict_scores_a_foreign_classifier_with_task(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_iris(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(x, y)
    x = x.astype(np.float32)
    onnx.save(to_onnx(est, x[:1], options={"zipmap": False}), tmp_path / "iris.onnx")
    np.savez(tmp_path / "iris.npz", x=x, y=y)
    cli = CliRunner()
    r = cli.invoke(main, ["predict", str(tmp_path / "iris.onnx"), str(tmp_path / "iris.npz")])
    assert r.exit_code == 0, r.output
    assert "accuracy" not in r.output and "--task classification" in r.output
    r = cli.invoke(
        main,
        [
            "predict",
            str(tmp_path / "iris.onnx"),
            str(tmp_path / "iris.npz"),
            "--task",
            "classification",
        ],
    )
    assert r.exit_code == 0, r.output
    accuracy = float(r.output.split("accuracy")[1].split()[0])
    assert accuracy == pytest.approx(est.score(x, y))


def test_predict_never_imports_onnx(tmp_path):
    _, _, model = _random_export(SPECS[0])
    onnx.save(model, tmp_path / "m.onnx")
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]]
    np.savez(tmp_path / "x.npz", x=np.ones((3, *shape), np.float32))
    code = (
        "import sys\n"
        "from fcspec.cli import main\n"
        f"main(['predict', {str(tmp_path / 'm.onnx')!r}, {str(tmp_path / 'x.npz')!r}, "
        f"'--output', {str(tmp_path / 'p.npz')!r}], standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m == 'onnx' or m.startswith('onnx.')))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "p.npz").exists()


def _meta(path) -> dict:
    return {p.key: p.value for p in onnx.load(path).metadata_props}


def test_a_classifiers_metadata_names_its_classes(tmp_path):
    """Every classifier export says its classes in output order: ids for a spec's own labels,
    the user's labels for a model the Python API fitted on them (predict then writes those)."""
    import json

    import fcspec

    for path in FIXED:
        spec, _, model = _random_export(path)
        meta = {p.key: p.value for p in model.metadata_props}
        if spec.task == "classification":
            assert json.loads(meta["class_names"]) == list(range(spec.classes)), path.name
        elif spec.task == "binary":
            assert json.loads(meta["class_names"]) == [0, 1], path.name
        else:
            assert "class_names" not in meta, path.name
    # the user's own labels: the Python API's run folder (labels.json), then `fcspec export`
    from fcspec import data

    with np.load(data.importlib.resources.files("fcspec.datasets") / "digits.npz") as f:
        x, y = f["x"][:400], f["y"][:400]
    names = np.array(list("jihgfedcba"))  # sorted: a..j, the model's output order
    spec = tmp_path / "small.fc"
    spec.write_text(
        "model Small { input [64]  fc1 = linear(16) -> relu  fc2 = linear(10) }\n"
        "loss cross_entropy\noptimizer adam(lr = 0.01)\n"
        'data { train = dataset("digits")  normalize = standard }\n'
        "train { epochs = 2  batch = 64  seed = 0 }\n"
    )
    m = fcspec.load(spec).fit(x, names[y], out=tmp_path / "r", verbose=False)
    api_path = m.export_onnx(tmp_path / "api.onnx")
    assert json.loads(_meta(api_path)["class_names"]) == list("abcdefghij")
    r = CliRunner().invoke(
        main,
        ["export", str(spec), "--onnx", "--weights", str(tmp_path / "r" / "weights.npz"),
         "-o", str(tmp_path / "cli.onnx")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert json.loads(_meta(tmp_path / "cli.onnx")["class_names"]) == list("abcdefghij")
    np.savez(tmp_path / "x.npz", x=x)
    r = CliRunner().invoke(
        main, ["predict", str(tmp_path / "cli.onnx"), str(tmp_path / "x.npz"),
               "--output", str(tmp_path / "p.csv")]
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    written = [line.rsplit(",", 1)[1] for line in (tmp_path / "p.csv").read_text().splitlines()]
    assert written[0] == "class" and written[1:] == list(m.predict(x))


def test_verify_a_regression_trained_on_a_scaled_target(tmp_path):
    """normalize_target on an array source: the graph answers in the target's units, and
    verify compares it with the interpreter's output mapped back the same way."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=(x @ [1.0, 2.0, 3.0] * 100 + 500).astype(np.float32))
    (tmp_path / "n.fc").write_text(
        "model N { input [3]  h = linear(8) -> relu  out = linear(1) }\nloss mse\n"
        'optimizer adam(lr = 0.01)\ndata { train = npz("d.npz")  normalize_target = standard }\n'
        "train { epochs = 2  batch = 32  seed = 0 }\n"
    )
    cli = CliRunner()
    spec, out = str(tmp_path / "n.fc"), str(tmp_path / "run")
    assert cli.invoke(main, ["run", spec, "--out", out, "-q"]).exit_code == 0
    r = cli.invoke(main, ["verify", spec, "--weights", str(tmp_path / "run" / "weights.npz")])
    assert r.exit_code == 0 and "ok:" in r.output, r.output
    assert "(std * max(1, |z|) + |mean|)" in r.output

    # the looser bound still sees a graph whose mean or std is off by 0.1%
    import dataclasses

    fspec = check.load_spec(spec)
    params, pre, wpath = onnx_export.load_weights(fspec, str(tmp_path / "run" / "weights.npz"))
    schema = onnx_export.load_schema(wpath)
    t = schema.target
    assert runtime.verify(fspec, params, pre, schema=schema)["ok"]
    for nudge in ({"mean": t.mean * 1.001}, {"std": t.std * 1.001}):
        wrong = dataclasses.replace(schema, target=dataclasses.replace(t, **nudge))
        model = onnx_export.export(fspec, params, pre, schema=wrong)
        assert not runtime.verify(fspec, params, pre, schema=schema, model=model)["ok"], nudge
