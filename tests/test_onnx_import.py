"""`fcspec import`: ONNX MLPs from skl2onnx and from fcspec itself become specs and weights.

The PyTorch producers (torch.onnx.export, both exporters) are in
test_onnx_import_torch.py, so this file runs without torch.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from fcspec import check, data, interpreter, onnx_export, onnx_import, runtime
from fcspec.cli import main

ALL_ACTIVATIONS = """
model All {
  input [2, 3]
  flatten
  fc1 = linear(16) -> relu
  a = linear(16) -> leaky_relu(0.2)
  b = linear(16) -> elu(0.5)
  linear(16) -> selu -> dropout(0.3)
  linear(16) -> sigmoid
  linear(16, bias = false) -> tanh
  linear(16) -> gelu
  linear(16) -> gelu("tanh")
  linear(16) -> silu
  linear(16) -> softplus
  linear(16) -> softplus(2)
  linear(16) -> softplus(0.5, threshold = 3)
  out = linear(5) -> log_softmax
}
loss nll
optimizer sgd(lr = 0.1)
data { train = dataset("iris")  scale = 255  normalize = standard }
"""


def _graph_and_meta(model: onnx.ModelProto) -> tuple[str, dict[str, str]]:
    """What a round trip must keep: the graph, and the metadata but the spec's path and hash."""
    meta = {
        p.key: p.value for p in model.metadata_props if p.key not in ("spec_path", "spec_sha256")
    }
    return onnx.printer.to_text(model.graph), meta


@pytest.mark.parametrize("opset", [17, 20])
def test_fcspec_export_round_trips_to_the_same_graph(opset):
    spec = check.compile_source(ALL_ACTIVATIONS)
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    pre = data.Preprocess(
        np.float32(255),
        rng.random((2, 3), dtype=np.float32),
        (rng.random((2, 3)) + 0.5).astype(np.float32),
        "standard",
    )
    model = onnx_export.export(spec, params, pre, opset=opset)
    result = onnx_import.import_model(model, source="all.onnx")
    again = check.compile_source(result.text)
    assert [(l.name, l.op, l.attrs) for l in again.model.layers] == [
        (l.name, l.op, l.attrs) for l in spec.model.layers if l.op != "dropout"
    ]
    assert result.params.keys() == params.keys()
    for k, v in params.items():
        np.testing.assert_array_equal(result.params[k], v)
    back = onnx_export.export(again, result.params, result.preprocess, opset=opset)
    assert _graph_and_meta(back) == _graph_and_meta(model)


def test_probabilities_export_round_trips_through_the_flag():
    src = "model M { input [4]  h = linear(8) -> tanh  out = linear(3) }\nloss cross_entropy\noptimizer sgd(lr = 0.1)\n"
    spec = check.compile_source(src)
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    model = onnx_export.export(spec, params, probabilities=True)
    result = onnx_import.import_model(model, source="m.onnx")
    assert "export with --probabilities" in " ".join(result.notes)
    back = onnx_export.export(
        check.compile_source(result.text), result.params, result.preprocess, probabilities=True
    )
    assert _graph_and_meta(back) == _graph_and_meta(model)


def _sklearn(kind: str):
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "classifier":
        x, y = load_iris(return_X_y=True)
        est = make_pipeline(
            StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0)
        )
    elif kind == "binary":
        x, y = load_breast_cancer(return_X_y=True)
        est = MLPClassifier(
            hidden_layer_sizes=(8, 4), activation="tanh", max_iter=50, random_state=0
        )
    else:
        x, y = load_diabetes(return_X_y=True)
        est = MLPRegressor(hidden_layer_sizes=(8,), max_iter=200, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x, y)
    x = x.astype(np.float32)
    return est, to_onnx(est, x[:1], target_opset=17), x, y


@pytest.mark.parametrize("kind", ["classifier", "binary", "regressor"])
def test_sklearn_mlps_import_and_match_sklearn(kind):
    est, model, x, y = _sklearn(kind)
    result = onnx_import.import_model(model, source=f"{kind}.onnx")
    spec = check.compile_source(result.text)
    xin = x if result.preprocess is None else result.preprocess.apply(x)
    out = interpreter.Network(spec.model, result.params).predict(xin)
    if kind == "classifier":
        assert result.task == "classification" and spec.loss.kind == "cross_entropy"
        assert result.preprocess is not None  # the StandardScaler
        z = np.exp(out - out.max(axis=1, keepdims=True))
        np.testing.assert_allclose(z / z.sum(1, keepdims=True), est.predict_proba(x), atol=1e-5)
    elif kind == "binary":
        assert result.task == "binary" and spec.loss.kind == "bce"
        np.testing.assert_allclose(out[:, 0], est.predict_proba(x)[:, 1], atol=1e-5)
    else:
        assert result.task == "regression" and spec.loss.kind == "mse"
        np.testing.assert_allclose(out[:, 0], est.predict(x), rtol=1e-5, atol=1e-3)


def _conv_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "conv.weight")
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="conv1"),
        helper.make_node("Flatten", ["c"], ["output"], name="flat"),
    ]
    graph = helper.make_graph(
        nodes,
        "Conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 5, 5])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 18])],
        initializer=[w],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_inexpressible_nodes_are_refused_by_name_and_op(tmp_path, golden):
    path = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), path)
    r = CliRunner().invoke(main, ["import", str(path), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1
    golden("import/conv.err", r.output.replace(str(tmp_path), "TMP"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_bias_after_an_activation_is_refused():
    spec = check.compile_source(
        "model M { input [4]  linear(3) -> relu }\nloss mse\noptimizer sgd(lr = 0.1)\n"
    )
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    model = onnx_export.export(spec, params)
    model.graph.initializer.append(numpy_helper.from_array(np.ones(3, np.float32), "c"))
    relu = model.graph.node[-1]
    relu.output[0] = "r"
    model.graph.node.append(helper.make_node("Add", ["r", "c"], ["output"], name="late/Add"))
    with pytest.raises(onnx_import.ImportRefused, match=r"node 'late/Add' \(Add\)"):
        onnx_import.import_model(model, source="m.onnx")


def test_sklearn_import_evaluates_and_fine_tunes_from_the_cli(tmp_path, monkeypatch):
    est, model, x, y = _sklearn("classifier")
    onnx.save(model, tmp_path / "iris.onnx")
    np.savez(tmp_path / "iris.npz", x=x, y=y.astype(np.int64))
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    r = cli.invoke(main, ["import", "iris.onnx", "--out", "imp", "--data", "iris.npz"])
    assert r.exit_code == 0, r.output
    spec_path = "imp/iris.fc"
    text = (tmp_path / spec_path).read_text()
    assert 'train = npz("../iris.npz")' in text and 'statistics = "preprocess.npz"' in text
    assert cli.invoke(main, ["check", spec_path]).exit_code == 0
    r = cli.invoke(main, ["eval", spec_path, "--weights", "imp/weights.npz"])
    assert r.exit_code == 0, r.output
    accuracy = float(r.output.split("accuracy")[1].split()[0])
    # the validation split (a seeded 10% of train) scored by the imported weights is what
    # scikit-learn scores on the same rows
    _, va = data.split_indices(len(x), 0.1, 0)
    assert accuracy == pytest.approx(est.score(x[va], y[va]))
    r = cli.invoke(main, ["verify", spec_path, "--weights", "imp/weights.npz"])
    assert r.exit_code == 0, r.output
    r = cli.invoke(
        main,
        ["run", spec_path, "--init", "imp/weights.npz", "--epochs", "1", "--out", "tuned", "-q"],
    )
    assert r.exit_code == 0, r.output
    tuned = np.load(tmp_path / "tuned" / "weights.npz")
    start = np.load(tmp_path / "imp" / "weights.npz")
    assert tuned.files == start.files
    assert any(not np.array_equal(tuned[k], start[k]) for k in start.files)
    # the statistics were used as they are, not refitted
    saved = data.Preprocess.load(tmp_path / "tuned" / "preprocess.npz")
    np.testing.assert_array_equal(
        saved.shift, data.Preprocess.load(tmp_path / "imp" / "preprocess.npz").shift
    )
    r = cli.invoke(main, ["export", spec_path, "--onnx", "--weights", "tuned/weights.npz"])
    assert r.exit_code == 0, r.output


def test_statistics_cannot_be_combined_with_normalize():
    result = check.check_source(
        "model M { input [4]  linear(3) }\nloss cross_entropy\noptimizer sgd(lr = 0.1)\n"
        'data { train = dataset("iris")  normalize = standard  statistics = "p.npz" }\n'
    )
    assert any("cannot be combined" in d.message for d in result.errors)


def test_import_confirms_itself_against_onnxruntime():
    est, model, x, y = _sklearn("regressor")
    result = onnx_import.import_model(model, source="r.onnx")
    spec = check.compile_source(result.text)
    sess = runtime.session(model.SerializeToString())
    got = sess.run(None, {sess.get_inputs()[0].name: x[:32]})[0]
    want = interpreter.Network(spec.model, result.params).predict(x[:32])
    np.testing.assert_allclose(want, got.reshape(want.shape), rtol=1e-5, atol=1e-4)
