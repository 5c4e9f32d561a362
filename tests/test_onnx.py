"""ONNX export, predict and verify, checked against independent oracles.

Oracles: the NumPy interpreter (fcspec's own forward), onnxruntime,
`onnx.reference.ReferenceEvaluator`; PyTorch (an equivalent `nn.Sequential` and
`torch.onnx.export`) in test_onnx_torch.py.  No stored numbers: every expectation
is computed by another implementation.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
from pathlib import Path

import numpy as np
import onnx
import pytest

from fcspec import data, interpreter, ir, onnx_export, ops, runtime
from fcspec.errors import DataError, FcspecError

ROOT = Path(__file__).resolve().parents[1]
TOL = runtime.TOLERANCE
LOSS_OF_TASK = {
    "classification": "cross_entropy",
    "binary": "bce_with_logits",
    "regression": "mse",
    "distribution": "kl_div",
}


# ---------------------------------------------------------------------------
# Hand-built IR (the checker has its own tests; these keep ours independent of it).


def act(name: str, op: str, shape: tuple[int, ...], **attrs) -> ir.Layer:
    return ir.Layer(name, op, attrs, shape, shape, {})


def linear(name: str, n_in: int, n_out: int, bias: bool = True) -> ir.Layer:
    params = {"weight": (n_out, n_in)} | ({"bias": (n_out,)} if bias else {})
    return ir.Layer(
        name, "linear", {"units": n_out, "bias": bias, "init": "default"}, (n_in,), (n_out,), params
    )


def flatten(name: str, shape: tuple[int, ...]) -> ir.Layer:
    return ir.Layer(name, "flatten", {}, shape, (int(np.prod(shape)),), {})


def make_spec(layers, input_shape, task="classification", data_=None, name="Net") -> ir.Spec:
    model = ir.Model(name, tuple(input_shape), tuple(layers))
    return ir.Spec(
        name=name,
        path=f"{name}.fc",
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        task=task,
        model=model,
        loss=ir.Loss(LOSS_OF_TASK[task], {"reduction": "mean"}),
        optimizer=ir.Optimizer("sgd", {"lr": 0.1}),
        schedule=ir.Schedule("constant", {}),
        regularize=ir.Regularize(),
        data=data_,
        train=ir.Train(),
    )


def random_params(spec: ir.Spec, seed: int = 0, std: float = 1.0) -> dict[str, np.ndarray]:
    # N(0, 1) weights rather than PyTorch's small init: pre-activations then
    # reach every region of every activation (softplus' threshold, elu's tail).
    rng = np.random.default_rng(seed)
    return {
        k: (std * rng.standard_normal(s)).astype(np.float32)
        for k, s in spec.model.param_shapes().items()
    }


# One small model per op and per interesting option; every row of ops.OPS must appear.
OP_CASES: dict[str, list[dict]] = {
    "linear": [{"bias": True}, {"bias": False}],
    "flatten": [{}],
    "dropout": [{"p": 0.5}],
    "relu": [{}],
    "leaky_relu": [{"negative_slope": 0.01}, {"negative_slope": 0.2}],
    "elu": [{"alpha": 1.0}, {"alpha": 0.5}],
    "selu": [{}],
    "sigmoid": [{}],
    "tanh": [{}],
    "silu": [{}],
    "gelu": [{"approximate": "none"}, {"approximate": "tanh"}],
    "softplus": [
        {"beta": 1.0, "threshold": 20.0},
        {"beta": 2.0, "threshold": 20.0},
        {"beta": 1.0, "threshold": 2.0},
    ],
    "softmax": [{}],
    "log_softmax": [{}],
}
CASES = [(op, attrs) for op, rows in OP_CASES.items() for attrs in rows]


def op_spec(op: str, attrs: dict) -> ir.Spec:
    """input [6] -> fc1 -> <op> -> fc2 -> [3]; flatten and linear get their own shapes."""
    if op == "linear":
        layers = [
            linear("fc1", 6, 8, bias=attrs["bias"]),
            act("relu_1", "relu", (8,)),
            linear("fc2", 8, 3, attrs["bias"]),
        ]
        return make_spec(layers, (6,), name="OpLinear")
    if op == "flatten":
        return make_spec(
            [flatten("flatten_1", (2, 3)), linear("fc1", 6, 3)], (2, 3), name="OpFlatten"
        )
    layers = [linear("fc1", 6, 8), act(f"{op}_1", op, (8,), **attrs), linear("fc2", 8, 3)]
    return make_spec(layers, (6,), name=f"Op_{op}")


def case_id(case):
    op, attrs = case
    return op + "".join(f"-{k}={v}" for k, v in attrs.items())


def test_every_op_of_the_table_has_a_case():
    assert set(OP_CASES) == set(ops.OPS), "add a case to OP_CASES for every new op"


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_op_matches_interpreter_in_onnxruntime_and_reference(case, opset):
    op, attrs = case
    spec = op_spec(op, attrs)
    params = random_params(spec)
    report = runtime.verify(spec, params, None, n=16, rng=1, opset=opset)
    assert set(report["runs"]) == {
        "onnxruntime/batch_1",
        "onnxruntime/batch_16",
        "reference/batch_1",
        "reference/batch_16",
    }
    assert report["ok"], report
    assert report["error"] <= TOL


def test_verify_reports_a_wrong_model():
    spec = op_spec("tanh", {})
    params = random_params(spec)
    good = runtime.verify(spec, params, n=8, rng=0)
    assert good["ok"] and "ok:" in runtime.format_verify(good)
    # the same graph with one weight nudged by 1e-3: every runtime must now disagree
    wrong = onnx_export.export(spec, params | {"fc2.bias": params["fc2.bias"] + np.float32(1e-3)})
    bad = runtime.verify(spec, params, n=8, rng=0, model=wrong)
    assert not bad["ok"] and bad["max_abs"] == pytest.approx(1e-3, rel=1e-2)
    assert all(c["error"] > TOL for c in bad["runs"].values())
    assert runtime.format_verify(bad).splitlines()[-1].startswith("FAILED")


def op_types(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_gelu_is_native_from_opset_20_and_expanded_before():
    spec = op_spec("gelu", {"approximate": "none"})
    params = random_params(spec)
    assert "Gelu" in op_types(onnx_export.export(spec, params, opset=20))
    old = op_types(onnx_export.export(spec, params, opset=17))
    assert "Gelu" not in old and "Erf" in old


def test_dropout_leaves_no_node():
    spec = op_spec("dropout", {"p": 0.5})
    assert op_types(onnx_export.export(spec, random_params(spec))) == ["Gemm", "Gemm"]


# ---------------------------------------------------------------------------
# The graph: batch dimension, preprocessing, probabilities, metadata.


def mnist_like(task="classification", data_=None, input_shape=(1, 4, 4), classes=5) -> ir.Spec:
    n = int(np.prod(input_shape))
    layers = [
        flatten("flatten_1", input_shape),
        linear("fc1", n, 12),
        act("relu_1", "relu", (12,)),
        linear("fc2", 12, 8),
        act("relu_2", "relu", (8,)),
        linear("fc3", 8, classes),
    ]
    return make_spec(layers, input_shape, task=task, data_=data_, name="MnistLike")


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return runtime.session(model).run(None, {"input": np.asarray(x, np.float32)})[0]


def close(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= TOL * np.maximum(1.0, np.abs(b))))


def test_batch_1_and_batch_n_through_one_model():
    spec = mnist_like()
    params = random_params(spec, std=0.5)
    model = onnx_export.export(spec, params)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 4, 4]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    x = np.random.default_rng(3).standard_normal((7, 1, 4, 4)).astype(np.float32)
    sess = runtime.session(model)
    whole = sess.run(None, {"input": x})[0]
    one_by_one = np.concatenate([sess.run(None, {"input": x[i : i + 1]})[0] for i in range(7)])
    want = interpreter.Network(spec.model, params).predict(x)
    assert whole.shape == (7, 5)
    assert close(whole, want) and close(one_by_one, want)


def test_node_names_follow_the_layers():
    spec = mnist_like()
    model = onnx_export.export(spec, random_params(spec))
    assert [n.name for n in model.graph.node] == [
        "flatten_1/Flatten",
        "fc1/Gemm",
        "relu_1/Relu",
        "fc2/Gemm",
        "relu_2/Relu",
        "fc3/Gemm",
    ]
    assert model.graph.node[-1].output[0] == "output"
    assert {t.name for t in model.graph.initializer} == set(spec.model.param_shapes())


def raw_images(n=40, seed=5):
    # raw "pixels" 0..255 with per-feature offsets, so standardization matters
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 1, 4, 4)) * rng.uniform(0.2, 1.0, (1, 1, 4, 4))).astype(
        np.float32
    )


@pytest.mark.parametrize("normalize", ["standard", "minmax"])
def test_normalization_is_baked_in(normalize):
    d = ir.Data(None, scale=255.0, normalize=normalize)
    spec = mnist_like(data_=d)
    params = random_params(spec, std=0.5)
    x = raw_images()
    pre = data.Preprocess.fit(x, scale=255.0, normalize=normalize)
    model = onnx_export.export(spec, params, pre)
    assert op_types(model)[:3] == ["Div", "Sub", "Div"]
    want = interpreter.Network(spec.model, params).predict(pre.apply(x))
    assert close(ort_run(model, x), want)
    assert runtime.verify(spec, params, pre, n=8, rng=0)["ok"]
    # without the statistics, the export refuses instead of silently skipping them
    with pytest.raises(DataError, match="preprocess"):
        onnx_export.export(spec, params, None)


def test_scale_only_adds_one_div_and_identity_adds_nothing():
    spec = mnist_like(data_=ir.Data(None, scale=255.0))
    params = random_params(spec, std=0.5)
    x = raw_images()
    for pre in (None, data.Preprocess.identity((1, 4, 4), 255.0)):
        model = onnx_export.export(spec, params, pre)
        assert op_types(model)[:2] == ["Div", "Flatten"]
        want = interpreter.Network(spec.model, params).predict(x / np.float32(255.0))
        assert close(ort_run(model, x), want)
    plain = mnist_like()
    assert (
        op_types(onnx_export.export(plain, params, data.Preprocess.identity((1, 4, 4))))[0]
        == "Flatten"
    )


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_probabilities_flag():
    x = np.random.default_rng(0).standard_normal((9, 1, 4, 4)).astype(np.float32)
    # classification with logits: a Softmax at the end
    spec = mnist_like()
    params = random_params(spec, std=0.5)
    logits = ort_run(onnx_export.export(spec, params), x)
    probs_model = onnx_export.export(spec, params, probabilities=True)
    assert op_types(probs_model)[-1] == "Softmax"
    probs = ort_run(probs_model, x)
    assert close(probs, softmax(logits.astype(np.float64)))
    assert close(probs.sum(axis=1), np.ones(9))
    meta = {p.key: p.value for p in probs_model.metadata_props}
    assert meta["output"] == "probabilities"
    assert onnx_export.probabilities_note(spec) is None
    assert runtime.verify(spec, params, n=8, rng=0, probabilities=True)["ok"]
    # binary with a logit: a Sigmoid
    bspec = mnist_like(task="binary", classes=1)
    bparams = random_params(bspec, std=0.5)
    blogit = ort_run(onnx_export.export(bspec, bparams), x)
    bmodel = onnx_export.export(bspec, bparams, probabilities=True)
    assert op_types(bmodel)[-1] == "Sigmoid"
    assert close(ort_run(bmodel, x), 1 / (1 + np.exp(-blogit.astype(np.float64))))


def test_probabilities_when_already_probabilities_or_log_probabilities():
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    sm = op_spec("softmax", {})
    sm = make_spec(
        list(sm.model.layers[:1]) + [act("sm", "softmax", (8,))], (6,), name="EndsInSoftmax"
    )
    params = random_params(sm)
    plain, flagged = (
        onnx_export.export(sm, params),
        onnx_export.export(sm, params, probabilities=True),
    )
    assert op_types(plain) == op_types(flagged) == ["Gemm", "Softmax"]
    assert "already" in onnx_export.probabilities_note(sm)
    ls = make_spec([linear("fc1", 6, 4), act("ls", "log_softmax", (4,))], (6,), name="LogProbs")
    lparams = random_params(ls)
    logp = ort_run(onnx_export.export(ls, lparams), x)
    flagged = onnx_export.export(ls, lparams, probabilities=True)
    assert op_types(flagged)[-1] == "Exp"
    assert close(ort_run(flagged, x), np.exp(logp.astype(np.float64)))
    reg = make_spec([linear("fc1", 6, 2)], (6,), task="regression", name="Reg")
    with pytest.raises(FcspecError, match="regression"):
        onnx_export.export(reg, random_params(reg), probabilities=True)


def test_metadata_opset_ir_version_and_full_check():
    spec = mnist_like()
    for opset in (17, 18, 19, 20, 21, onnx_export.MAX_OPSET):
        model = onnx_export.export(
            spec, random_params(spec), opset=opset, source="model MnistLike {}\n"
        )
        onnx.checker.check_model(model, full_check=True)
        assert [(o.domain, o.version) for o in model.opset_import] == [("", opset)]
        assert model.ir_version == onnx_export.IR_VERSION_FOR_OPSET[opset]
        assert model.ir_version == onnx.helper.find_min_ir_version_for(
            [onnx.helper.make_opsetid("", opset)]
        )
    meta = {p.key: p.value for p in model.metadata_props}
    from fcspec import __version__

    assert meta["fcspec_version"] == __version__
    assert meta["spec_sha256"] == spec.sha256 and meta["spec_name"] == "MnistLike"
    assert (
        meta["task"] == "classification" and meta["classes"] == "5" and meta["output"] == "logits"
    )
    assert model.producer_name == "fcspec"
    assert model.graph.doc_string == "model MnistLike {}\n"


def test_out_of_range_opset_and_bad_weights_are_clear_errors():
    spec = mnist_like()
    params = random_params(spec)
    for bad in (16, onnx_export.MAX_OPSET + 1, "17"):
        with pytest.raises(FcspecError, match="opset"):
            onnx_export.export(spec, params, opset=bad)
    missing = {k: v for k, v in params.items() if k != "fc2.bias"}
    with pytest.raises(DataError, match="missing fc2.bias"):
        onnx_export.export(spec, missing)
    with pytest.raises(DataError, match="unexpected fc9.weight"):
        onnx_export.export(spec, params | {"fc9.weight": np.zeros((2, 2), np.float32)})
    with pytest.raises(DataError, match=r"fc1.weight has shape \[16, 12\]"):
        onnx_export.export(spec, params | {"fc1.weight": params["fc1.weight"].T})
    with pytest.raises(DataError, match="NaN"):
        onnx_export.export(spec, params | {"fc3.bias": np.full(5, np.nan, np.float32)})


def test_graph_text_strips_weights_but_keeps_the_graph():
    spec = mnist_like(data_=ir.Data(None, scale=255.0))
    params = random_params(spec)
    text = onnx_export.graph_text(onnx_export.export(spec, params))
    gelu = op_spec("gelu", {"approximate": "none"})
    gelu_text = onnx_export.graph_text(onnx_export.export(gelu, random_params(gelu), opset=17))
    assert (
        "Erf" in gelu_text and "0.70710677" in gelu_text
    )  # the expansion's constant is graph logic
    assert '"fc1.weight"' in text and "float[12,16]" in text and "Gemm" in text
    # no weight value appears in the text; the tiny scale constant does
    for name in ("fc1.weight", "fc3.bias"):  # fc3.bias is tiny (5 values) but trained
        assert repr(float(params[name].flat[0]))[:8] not in text
    assert "255" in text
    assert "fcspec_version" not in text and spec.sha256 not in text
    assert len(text) < 3000
    assert text == onnx_export.graph_text(onnx_export.export(spec, params))


# ---------------------------------------------------------------------------
# Files: export_file, save, predict.


def test_export_file_needs_weights_and_uses_the_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = mnist_like(data_=ir.Data(None, scale=255.0, normalize="standard"))
    with pytest.raises(FcspecError) as e:
        onnx_export.export_file(spec)
    assert "fcspec run" in str(e.value) and "--weights" in str(e.value)
    run = tmp_path / "runs" / spec.name
    run.mkdir(parents=True)
    params = random_params(spec, std=0.5)
    np.savez(run / "weights.npz", **params)
    x = raw_images()
    pre = data.Preprocess.fit(x, scale=255.0, normalize="standard")
    pre.save(run / "preprocess.npz")
    path = onnx_export.export_file(spec)
    assert path == Path("runs") / spec.name / f"{spec.name}.onnx"
    assert sorted(p.name for p in run.iterdir()) == [
        "MnistLike.onnx",
        "preprocess.npz",
        "weights.npz",
    ]
    want = interpreter.Network(spec.model, params).predict(pre.apply(x))
    assert close(ort_run(onnx.load(path), x), want)
    # explicit weights of another model: names and shapes are checked
    other = tmp_path / "other.npz"
    np.savez(other, **(params | {"fc1.weight": np.zeros((3, 16), np.float32)}))
    with pytest.raises(DataError, match="fc1.weight"):
        onnx_export.export_file(spec, tmp_path / "o.onnx", weights=other)
    with pytest.raises(DataError, match="not found"):
        onnx_export.export_file(spec, tmp_path / "o.onnx", weights=tmp_path / "nope.npz")


def test_save_is_atomic_and_checks(tmp_path):
    spec = mnist_like()
    model = onnx_export.export(spec, random_params(spec))
    out = onnx_export.save(model, tmp_path / "sub" / "m.onnx")
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary left behind
    assert onnx.load(out) == model
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[1].input[1] = "no_such_value"
    with pytest.raises(FcspecError, match="invalid"):
        onnx_export.save(broken, tmp_path / "b.onnx")
    assert not (tmp_path / "b.onnx").exists()


IRIS = ROOT / "fcspec" / "datasets" / "iris.npz"


def iris_model(tmp_path, task="classification", probabilities=False):
    with np.load(IRIS) as z:
        x, y = z["x"].astype(np.float32), z["y"]
    classes = {"classification": 3, "binary": 1, "regression": 1}[task]
    spec = make_spec(
        [linear("fc1", 4, 10), act("tanh_1", "tanh", (10,)), linear("fc2", 10, classes)],
        (4,),
        task=task,
        name="Iris",
    )
    params = random_params(spec, seed=2, std=0.7)
    path = onnx_export.save(
        onnx_export.export(spec, params, probabilities=probabilities), tmp_path / "iris.onnx"
    )
    return spec, params, path, x, y


def test_predict_npz_with_accuracy_and_outputs(tmp_path):
    spec, params, path, x, y = iris_model(tmp_path)
    want = interpreter.Network(spec.model, params).predict(x)
    result = runtime.predict(path, IRIS, output=tmp_path / "pred.npz", batch=32)
    assert result["rows"] == 150 and result["output_shape"] == [150, 3]
    assert result["accuracy"] == pytest.approx(np.mean(want.argmax(1) == y))
    with np.load(tmp_path / "pred.npz") as z:
        assert sorted(z.files) == ["class", "output"]
        assert close(z["output"], want)
        assert np.array_equal(z["class"], z["output"].argmax(1))


def test_predict_csv_in_and_out(tmp_path):
    spec, params, path, x, y = iris_model(tmp_path)
    src = tmp_path / "iris.csv"
    with open(src, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "c", "d", "label"])
        for row, label in zip(x, y):
            w.writerow([repr(float(v)) for v in row] + [int(label)])
    want = interpreter.Network(spec.model, params).predict(x)
    result = runtime.predict(path, src, target="label", output=tmp_path / "pred.csv")
    assert result["accuracy"] == pytest.approx(np.mean(want.argmax(1) == y))
    rows = list(csv.reader(io.StringIO((tmp_path / "pred.csv").read_text())))
    assert rows[0] == ["output_0", "output_1", "output_2", "class"]
    got = np.array([[float(v) for v in r[:3]] for r in rows[1:]], np.float32)
    assert close(got, want)
    assert [int(r[3]) for r in rows[1:]] == list(want.argmax(1))
    # no labels: no accuracy
    unl = tmp_path / "unlabeled.npz"
    np.savez(unl, x=x)
    assert "accuracy" not in runtime.predict(path, unl)


def test_predict_binary_thresholds_and_regression_errors(tmp_path):
    spec, params, path, x, y = iris_model(tmp_path, task="binary")
    yb = (y == 0).astype(np.float32)
    f = tmp_path / "bin.npz"
    np.savez(f, x=x, y=yb)
    logit = interpreter.Network(spec.model, params).predict(x)[:, 0]
    assert runtime.predict(path, f)["accuracy"] == pytest.approx(np.mean((logit > 0) == yb))
    _, _, ppath, _, _ = iris_model(tmp_path, task="binary", probabilities=True)
    assert runtime.predict(ppath, f)["accuracy"] == pytest.approx(np.mean((logit > 0) == yb))
    rspec, rparams, rpath, _, _ = iris_model(tmp_path, task="regression")
    r = tmp_path / "reg.npz"
    np.savez(r, x=x, y=y.astype(np.float32))
    out = interpreter.Network(rspec.model, rparams).predict(x)[:, 0].astype(np.float64)
    res = runtime.predict(rpath, r)
    assert "accuracy" not in res
    assert res["mse"] == pytest.approx(np.mean((out - y) ** 2), rel=1e-5)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncated"])
def test_bad_onnx_file_is_a_clear_error(tmp_path, content):
    _, _, good, _, _ = iris_model(tmp_path)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(good.read_bytes()[:200] if content == "truncated" else content)
    with pytest.raises(FcspecError, match="bad.onnx"):
        runtime.predict(bad, IRIS)
    with pytest.raises(FcspecError, match="not found"):
        runtime.predict(tmp_path / "missing.onnx", IRIS)


def test_input_width_mismatch_is_a_clear_error(tmp_path):
    _, _, path, x, _ = iris_model(tmp_path)
    wide = tmp_path / "wide.npz"
    np.savez(wide, x=np.hstack([x, x[:, :1]]))
    with pytest.raises(FcspecError, match=r"\[5\] \(5 values\).*expects \[4\]"):
        runtime.predict(path, wide)
    # flat rows of the right size are reshaped ([N, 16] for a [1, 4, 4] model)
    spec = mnist_like(classes=3)
    params = random_params(spec, std=0.5)
    mpath = onnx_export.save(onnx_export.export(spec, params), tmp_path / "m.onnx")
    flat = tmp_path / "flat.npz"
    xs = np.random.default_rng(1).standard_normal((6, 16)).astype(np.float32)
    np.savez(flat, x=xs)
    runtime.predict(mpath, flat, output=tmp_path / "o.npz")
    with np.load(tmp_path / "o.npz") as z:
        assert close(
            z["output"], interpreter.Network(spec.model, params).predict(xs.reshape(6, 1, 4, 4))
        )


def test_spec_from_the_front_end_exports_with_its_source(tmp_path):
    check = pytest.importorskip("fcspec.check")
    text = (
        "model Small {\n    input [1, 2, 3]\n    flatten\n    fc1 = linear(8) -> gelu\n"
        "    drop = dropout(0.3)\n    fc2 = linear(3)\n}\nloss cross_entropy\noptimizer sgd(lr = 0.1)\n"
        'data { train = dataset("iris")  scale = 2 }\n'
    )
    src = tmp_path / "small.fc"
    src.write_text(text)
    spec = check.load_spec(src)
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    model = onnx_export.export(spec, params)
    assert model.graph.doc_string == text
    assert op_types(model)[:2] == ["Div", "Flatten"]
    assert runtime.verify(spec, params, None, n=5, rng=0)["ok"]


SPECS = sorted((ROOT / "specs").glob("*.fc"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_golden_onnx_graph(path, in_root, golden):
    """Every shipped spec's graph as text (weights stripped); --update-golden rewrites."""
    check = pytest.importorskip("fcspec.check")
    spec = check.load_spec(path.relative_to(ROOT))
    schema = None
    if data.is_tabular(spec.data.train):  # widths, encoding and statistics from the table
        p = data.prepare(spec)
        spec, schema = p.spec, p.schema
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    pre = p.preprocess if schema is not None else None
    if schema is None and spec.data is not None and spec.data.normalize != "none":
        # statistics of stand-in data: their values are stripped, the nodes they need are not
        raw = np.random.default_rng(1).uniform(0, 2, (32, *spec.model.input_shape))
        pre = data.Preprocess.fit(raw, scale=spec.data.scale, normalize=spec.data.normalize)
    model = onnx_export.export(spec, params, pre, schema=schema)
    golden(f"{path.stem}.onnx.txt", onnx_export.graph_text(model))


# ---------------------------------------------------------------------------
# The benchmark's file surgery (the timing itself is run by hand).


def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "inference_speed", ROOT / "benchmarks" / "inference_speed.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_replaces_only_its_section(tmp_path):
    bench = load_benchmark()
    doc = tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\nintro\n\n<!-- training:begin -->\ntraining table\n<!-- training:end -->\n\n"
        f"{bench.BEGIN}\nold figures\n{bench.END}\n\ntail\n"
    )
    bench.write_section(doc, "new figures")
    text = doc.read_text()
    assert "old figures" not in text and "new figures" in text
    assert "training table" in text and text.endswith("tail\n") and text.count(bench.BEGIN) == 1
    fresh = tmp_path / "fresh.md"
    bench.write_section(fresh, "first")
    assert fresh.read_text().count(bench.END) == 1
