"""Running exported models: onnxruntime sessions, `predict` and `verify`.

The graph itself is built by `fcspec/onnx_export.py`; this module only runs it:

- `session`: an onnxruntime CPU session, any unreadable model an `FcspecError`;
- `predict`: a saved model run by onnxruntime over a data file, in batches;
- `verify`: the NumPy interpreter, onnxruntime and `onnx.reference` compared on
  the same raw inputs at batch 1 and batch N.
"""

from __future__ import annotations

import csv
import dataclasses
import io as _stdio
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import data, ir
from .errors import DataError, FcspecError
from .io import atomic_write_text, read_bytes, refuse_overwrite, save_npz
from .onnx_trust import check_trusted

if TYPE_CHECKING:
    import onnx

# `import onnx` costs about a second (most of `fcspec predict`'s time on 10,000 rows), and
# predict never needs it: onnxruntime reads the file itself.  So this module imports onnx
# and the exporter only inside `verify`; benchmarks/inference_speed.py --predict measures
# predict against a plain onnxruntime script.
INPUT_NAME = "input"  # onnx_export.INPUT_NAME, without importing the exporter
OUTPUT_NAME = "output"  # onnx_export.OUTPUT_NAME

# verify's tolerance: an element passes when |onnx - numpy| <= TOLERANCE * max(1, |numpy|),
# i.e. within 1e-5 absolute or 1e-5 relative, whichever is looser.  float32 has a
# 6e-8 unit round-off; the difference between runtimes comes from summation order
# in Gemm (784 terms: ~1e-6 relative at worst) and from exp/log/erf/tanh
# implementations (a few ulp), so 1e-5 leaves an order of magnitude of headroom
# while any real error (a transposed weight, a missing bias, a wrong slope) is
# orders of magnitude larger.
TOLERANCE = 1e-5

# Default rows per onnxruntime call in `predict`: large enough to amortize the
# call overhead, small enough that a 784-wide batch stays a few MB.
PREDICT_BATCH = 4096
MAX_ONNX_BYTES = 2**31  # protobuf's own limit for one serialized model
TASKS = ("classification", "binary", "regression")  # what predict can score


def _ort():
    import onnxruntime as ort

    return ort


def session(model: str | os.PathLike | bytes | onnx.ModelProto, what: str = "the model"):
    """An onnxruntime CPU session; any unreadable model is an `FcspecError`."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto
        src: Any = model.SerializeToString()
        what = "the exported model"
    elif isinstance(model, bytes):
        src = model
    else:
        path = Path(model)
        what = str(path)
        src = read_bytes(path, "ONNX model", limit=MAX_ONNX_BYTES)
        if not src:
            raise DataError(f"{path} is empty, not an ONNX model")
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"{what} is not a valid ONNX model onnxruntime can run: {first}",
            hint="export one with `fcspec export FILE`",
        ) from None


def model_metadata(sess, what: Any) -> dict[str, str]:
    """The model's metadata_props; text that is not UTF-8 (a damaged or foreign file) is a
    `DataError`, not pybind's UnicodeDecodeError."""
    try:
        return dict(sess.get_modelmeta().custom_metadata_map)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{what}: the model's metadata is not UTF-8 text (byte 0x{e.object[e.start]:02x})",
            hint="export the model again with `fcspec export FILE`",
        ) from None


def _fit_input(x: np.ndarray, dims: list[Any], source: str) -> np.ndarray:
    """`x` shaped [N, *dims], reshaping flat rows (csv) when the sizes agree."""
    want = [d for d in dims[1:]]
    x = np.asarray(x)
    if x.ndim == 0:
        raise DataError(f"{source}: expected an array of samples, got a scalar")
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: inputs have dtype {x.dtype}, expected numbers")
    # NaN, infinity and values beyond float32 are refused as `run` refuses them
    if any(not isinstance(d, int) for d in want):
        return data.finite_float32(x, source)  # not an fcspec model: let onnxruntime judge
    if list(x.shape[1:]) == want:
        return data.finite_float32(x, source)
    if x.ndim >= 1 and math.prod(x.shape[1:]) == math.prod(want):
        return data.finite_float32(x.reshape((x.shape[0], *want)), source)
    n_have = math.prod(x.shape[1:])
    raise DataError(
        f"{source}: each sample has shape {list(x.shape[1:])} ({n_have} values), "
        f"the model expects {want} ({math.prod(want)} values)",
        hint="is this the data the model was trained on? (for csv, name the label column with --target)",
    )


def _output_shape(sess, meta: Mapping[str, str]) -> tuple[int, ...]:
    """One sample's output shape: from fcspec's metadata, else from the graph."""
    try:
        shape = json.loads(meta.get("output_shape", "null"))
        if isinstance(shape, list) and all(isinstance(d, int) for d in shape):
            return tuple(shape)
    except ValueError:
        pass
    return tuple(d if isinstance(d, int) else 1 for d in _score_output(sess).shape[1:])


def _score_output(sess):
    """The output predict reads: the first float tensor (a foreign classifier may list an
    int64 label first, as skl2onnx does), else the first."""
    outs = sess.get_outputs()
    return next((o for o in outs if o.type == "tensor(float)"), outs[0])


def _run_batches(sess, x: np.ndarray, batch: int) -> np.ndarray:
    inp, out = sess.get_inputs()[0], _score_output(sess)
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    if fixed is not None:
        batch = fixed  # an --fixed-batch export: full batches only, the last one padded
    parts = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        rows = len(xb)
        if fixed is not None and rows < fixed:
            xb = np.concatenate([xb, np.zeros((fixed - rows, *xb.shape[1:]), xb.dtype)])
        parts.append(sess.run([out.name], {inp.name: xb})[0][:rows])
    if not parts:
        out_dims = out.shape[1:]
        return np.zeros((0, *[d if isinstance(d, int) else 0 for d in out_dims]), np.float32)
    return np.concatenate(parts, axis=0)


def classes_of(output: np.ndarray, task: str, kind: str) -> np.ndarray | None:
    """Predicted class ids (int64 [N]) of a classifier's output, else None."""
    if task == "classification" or (task == "distribution" and output.ndim == 2):
        return output.argmax(axis=-1).astype(np.int64)
    if task == "binary":
        threshold = 0.5 if kind == "probabilities" else 0.0  # logits: sigmoid(0) = 0.5
        return (output.reshape(len(output), -1)[:, 0] > threshold).astype(np.int64)
    return None


def _write_predictions(path: Path, output: np.ndarray, classes: np.ndarray | None) -> None:
    suffix = path.suffix.lower()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            arrays = {"output": output}
            if classes is not None:
                c = np.asarray(classes)
                arrays["class"] = c.astype(str) if c.dtype.kind == "O" else c
            save_npz(path, arrays)
        elif suffix == ".csv":
            flat = output.reshape(len(output), -1)
            buf = _stdio.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(
                [f"output_{j}" for j in range(flat.shape[1])]
                + (["class"] if classes is not None else [])
            )
            for i, row in enumerate(flat):
                # repr-exact floats: the csv reads back to the same float32 values
                cells = [repr(float(v)) for v in row]
                if classes is not None:
                    c = classes[i]
                    cells.append(str(int(c)) if isinstance(c, (int, np.integer)) else str(c))
                w.writerow(cells)
            atomic_write_text(path, buf.getvalue())
        else:
            raise FcspecError(
                f"cannot write predictions to {path}", hint="use a .npz or .csv file name"
            )
    except OSError as e:
        raise FcspecError(f"cannot write {path}: {e.strerror or e}") from None


def predict(
    model_path: str | os.PathLike,
    data_path: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    batch: int | None = None,
    target: str | None = None,
    labels: str | os.PathLike | None = None,
    trust_model: bool = False,
    task: str | None = None,
) -> dict[str, Any]:
    """Run an exported model over a data file (npz, csv, IDX images with an optional `labels` file)
    with onnxruntime.  `task` says what the outputs are for a model whose metadata does not
    (one not exported by fcspec): classification, binary or regression.

    Returns `{"rows", "output_shape", "task", "output_kind", "output_path"}` plus
    `accuracy` (classifiers) or `mse` and `mae` (regression) when the data has labels.
    """
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise FcspecError(f"batch must be a positive integer, got {batch!r}")
    if output is not None:
        refuse_overwrite(output, {"model": model_path, "data": data_path, "labels file": labels})
    if task is not None and task not in TASKS:
        raise FcspecError(f"unknown task {task!r}", hint=f"one of {', '.join(TASKS)}")
    src = read_bytes(model_path, "ONNX model", limit=MAX_ONNX_BYTES)
    if not src:
        raise DataError(f"{model_path} is empty, not an ONNX model")
    if not trust_model:
        check_trusted(src, model_path)
    sess = session(src, what=str(model_path))
    meta = model_metadata(sess, model_path)
    if meta.get("schema"):
        return _predict_table(sess, meta, model_path, data_path, output, batch, target)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise DataError(f"{model_path} has {len(inputs)} inputs; fcspec models have one")
    if inputs[0].type != "tensor(float)":
        # onnxruntime would fail inside run() with its own exception type
        raise DataError(
            f"{model_path} takes {inputs[0].type} inputs; fcspec models take tensor(float)",
            hint="export one with `fcspec export FILE`",
        )
    task = task or meta.get("task", "")
    kind = meta.get("output", "")
    x, y = data.load_file(data_path, target=target, labels=labels)
    x = _fit_input(np.asarray(x), list(inputs[0].shape), str(data_path))
    if y is not None and len(y) != len(x):
        raise DataError(f"{data_path}: {len(x)} samples but {len(y)} labels")
    if y is not None and task in ("classification", "binary", "regression"):
        # the labels pass the checks `run` applies (class ids in range, 0/1, finite values)
        # before the model runs: a wrong label must not become a plausible accuracy
        out_shape = _output_shape(sess, meta)
        y = data.check_targets(
            task,
            y,
            out_shape,
            int(meta["classes"]) if meta.get("classes", "").isdigit() else math.prod(out_shape),
            where=f"{labels or data_path}: labels",
            loss="a binary classifier",
        )
    try:
        out = _run_batches(sess, x, batch or PREDICT_BATCH)
    except Exception as e:  # noqa: BLE001 - onnxruntime's InvalidArgument/Fail/...: a model that is not ours
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"onnxruntime cannot run {model_path} on {data_path}: {first}",
            hint="export the model with `fcspec export FILE`",
        ) from None
    classes = classes_of(out, task, kind)
    result: dict[str, Any] = {
        "rows": int(len(x)),
        "output_shape": list(out.shape),
        "task": task or None,
        "output_kind": kind or None,
        "output_path": None,
    }
    if y is not None and len(x) and task in ("classification", "binary", "regression"):
        if task == "classification":
            result["accuracy"] = float(np.mean(classes == y))
        elif task == "binary":
            result["accuracy"] = float(np.mean(classes == (y.reshape(len(y), -1)[:, 0] > 0.5)))
        else:
            diff = out.reshape(len(out), -1).astype(np.float64) - y.reshape(len(y), -1).astype(
                np.float64
            )
            result["mse"] = float(np.mean(diff**2))
            result["mae"] = float(np.mean(np.abs(diff)))
    if y is not None and len(x) and not task:
        result["note"] = (
            "the model does not say what its outputs are (no fcspec metadata): "
            "pass --task classification (or binary, regression) for a score"
        )
    if output is not None:
        _write_predictions(Path(output), out, _named(classes, meta))
        result["output_path"] = str(output)
    return result


def _named(ids: np.ndarray | None, meta: Mapping[str, str]) -> np.ndarray | None:
    """Class ids as the classes the model's metadata names (`class_names`: the user's own
    labels), or the ids themselves when it names none or names them 0..C-1."""
    if ids is None:
        return None
    try:
        names = json.loads(meta.get("class_names", "null"))
    except ValueError:
        return ids  # a damaged entry: the ids are still right
    if not isinstance(names, list) or names == list(range(len(names))):
        return ids
    if len(ids) and int(ids.max()) >= len(names):
        return ids
    kind = object if any(isinstance(v, str) for v in names) else None
    return np.asarray(names, dtype=kind)[ids]


def read_raw(path: str | os.PathLike, schema, reader: dict | None = None):
    """A raw table file (csv by any name, or .parquet) read by the schema's column kinds;
    `reader` holds the training source's `header` and `delimiter`."""
    from . import tabular

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        table = tabular.read_parquet(path)
        cats = [
            c.name
            for c in schema.columns
            if c.kind == "categorical" and c.name in table.column_names
        ]
        return tabular._with_text(table, cats, str(path))
    reader = reader or {}
    return tabular.read_csv(
        path,
        header=bool(reader.get("header", True)),
        delimiter=reader.get("delimiter", "auto"),
        text_columns=[c.name for c in schema.columns if c.kind == "categorical"],
        number_columns=[c.name for c in schema.columns if c.kind == "numeric"],
    )


def _predict_table(sess, meta, model_path, data_path, output, batch, target) -> dict[str, Any]:
    """predict for a model with a baked-in table schema: the raw file read by column name."""
    from . import onnx_tabular, tabular

    schema = tabular.Schema.from_json(meta["schema"], f"{model_path} (its schema)")
    try:
        reader = json.loads(meta.get("reader", "{}"))
    except ValueError:
        reader = {}
    table = read_raw(data_path, schema, reader)
    where = str(data_path)
    _, report = tabular.encode(schema, table, where=where)  # the rules: unknown, missing
    feeds = onnx_tabular.feeds(schema, table, INPUT_NAME)
    n = table.num_rows
    step = batch or PREDICT_BATCH
    names = [o.name for o in sess.get_outputs()]
    outs: list[list[np.ndarray]] = [[] for _ in names]
    try:
        for i in range(0, n, step):
            got = sess.run(None, {k: v[i : i + step] for k, v in feeds.items()})
            for j, a in enumerate(got):
                outs[j].append(a)
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"onnxruntime cannot run {model_path} on {data_path}: {first}") from None
    arrays = {k: np.concatenate(v) if v else np.zeros((0,)) for k, v in zip(names, outs)}
    out = arrays[OUTPUT_NAME]
    task, kind = meta.get("task", ""), meta.get("output", "")
    ids = classes_of(out, task, kind)
    labels = arrays.get(onnx_tabular.CLASS_NAME)
    if labels is None and ids is not None:
        labels = np.asarray(tabular.class_names(schema, ids), dtype=object)
    result: dict[str, Any] = {
        "rows": int(n),
        "output_shape": list(out.shape),
        "task": task or None,
        "output_kind": kind or None,
        "output_path": None,
        "unseen": report["unseen"],
        "imputed": report["imputed"],
    }
    t = schema.target
    tname = target if target is not None else (t.name if t is not None else None)
    if tname is not None and tname in table.column_names and n:
        col = table.column(tname)
        has = ~col.is_null().to_numpy(zero_copy_only=False)  # rows without a target: not scored
        result["scored_rows"] = int(has.sum())
        col = col.filter(has)
        if ids is not None and t is not None and t.kind == "classes":
            truth = tabular.encode_target(schema, col, where=where)
            result["accuracy"] = float(np.mean(ids[has] == truth))
        elif task == "regression":
            y = col.cast("double").to_numpy(zero_copy_only=False)
            diff = out.reshape(n, -1)[has, 0].astype(np.float64) - y
            result["mse"] = float(np.mean(diff**2))
            result["mae"] = float(np.mean(np.abs(diff)))
    elif target is not None:
        tabular._name(table.column_names, target, where, "target")  # raises: not there
    if output is not None:
        _write_predictions(Path(output), out, labels)
        result["output_path"] = str(output)
    return result


# ---------------------------------------------------------------------------
# verify: three independent evaluations of the same raw inputs.


def _np_probabilities(spec: ir.Spec, y: np.ndarray) -> np.ndarray:
    # Mirrors _emit_probabilities with the textbook float32 formulas.
    from .onnx_export import output_kind

    kind = output_kind(spec)
    if kind == "probabilities":
        return y
    if kind == "log_probabilities":
        return np.exp(y)
    if spec.task == "binary":
        return (1 / (1 + np.exp(-y))).astype(np.float32)
    z = np.exp(y - y.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _compare(got: np.ndarray, want: np.ndarray, scaling=None) -> dict[str, float]:
    """Largest differences; `error` is |got - want| / max(1, |want|). With `scaling` (the
    target's (mean, std), normalize_target) the graph computes z * std + mean in float32, so a
    small output can be the difference of two large terms; the error is then relative to
    those terms, std * max(1, |z|) + |mean|, not to their small difference."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    if got.shape != want.shape:
        raise FcspecError(
            f"verify: ONNX output shape {list(got.shape)} != interpreter's {list(want.shape)}"
        )
    d = np.abs(got - want)
    bad_nan = np.isnan(got) != np.isnan(want)
    d = np.where(np.isnan(got) & np.isnan(want), 0.0, d)
    d = np.where(bad_nan, np.inf, d)
    rel = d / np.maximum(np.abs(want), np.finfo(np.float32).tiny)
    size = np.maximum(1.0, np.abs(want))
    if scaling is not None:
        mean, std = (float(v) for v in scaling)
        z = np.abs(want - mean) / std
        size = np.maximum(size, std * np.maximum(1.0, z) + abs(mean))
    err = d / size
    return {
        "max_abs": float(d.max(initial=0.0)),
        "max_rel": float(rel.max(initial=0.0)),
        "error": float(err.max(initial=0.0)),
    }


def verify(
    spec: ir.Spec,
    params: Mapping[str, np.ndarray],
    preprocess: data.Preprocess | None = None,
    *,
    n: int = 64,
    rng: np.random.Generator | int | None = None,
    opset: int | None = None,
    probabilities: bool = False,
    model: onnx.ModelProto | None = None,
    schema=None,
) -> dict[str, Any]:
    """Compare the NumPy interpreter, onnxruntime and onnx.reference on raw inputs.

    With a table `schema`, the raw inputs are columns (numbers with NaN cells,
    categories with missing and unseen ones), encoded for the interpreter by
    `tabular.encode` and fed to the graph column by column; the `class` output must
    name the interpreter's classes exactly.

    Inputs are drawn as standard normals *after* preprocessing and mapped back to
    raw units, so every activation sees both signs whatever the scale.  Each ONNX
    runtime is run at batch 1 (the first sample) and at batch `n`.  The result
    holds `max_abs`, `max_rel`, `error` (the max of |d| / max(1, |numpy|)) per
    runtime and batch, and `ok = error <= TOLERANCE` overall; the caller exits
    non-zero when not ok.
    """
    from onnx.reference import ReferenceEvaluator

    from . import interpreter
    from .onnx_export import (
        DEFAULT_OPSET,
        check_opset,
        check_params,
        export,
        output_kind,
        preprocessing,
    )

    opset = DEFAULT_OPSET if opset is None else check_opset(opset)

    if not isinstance(n, int) or n < 1:
        raise FcspecError(f"verify needs n >= 1 samples, got {n!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    spec = ir.resolve_from_params(spec, params)
    weights = check_params(spec.model, params)
    pre = preprocessing(spec, preprocess)
    if model is None:
        model = export(
            spec, weights, preprocess, opset=opset, probabilities=probabilities, schema=schema
        )
    else:
        probabilities = probabilities or (
            dict((p.key, p.value) for p in model.metadata_props).get("output") == "probabilities"
            and output_kind(spec) != "probabilities"
        )

    shape = spec.model.input_shape
    z = rng.standard_normal((n, *shape)).astype(np.float32)
    raw = ((z * pre.divisor + pre.shift) * pre.scale).astype(np.float32)

    net = interpreter.Network(spec.model, weights)
    # data.py's own preprocessing (what training fed the network) against the baked-in nodes
    x = pre.apply_into(raw, np.empty(raw.shape, np.float32))
    want = np.asarray(net.predict(x), np.float32)
    if probabilities:
        want = _np_probabilities(spec, want)

    if schema is not None and schema.columns:
        return _verify_table(spec, weights, pre, schema, model, n, rng, opset, probabilities)
    scaling = data.target_scaling(schema)
    if scaling is not None:  # normalize_target: the graph answers in the target's units
        want = data.unscale_target(want, scaling)
    sess = session(model)
    ref = ReferenceEvaluator(model)
    runs = {
        "onnxruntime": lambda xb: sess.run(None, {INPUT_NAME: xb})[0],
        "reference": lambda xb: ref.run(None, {INPUT_NAME: xb})[0],
    }
    result: dict[str, Any] = {"n": n, "opset": opset, "tolerance": TOLERANCE, "runs": {}}
    result["scaled_target"] = scaling is not None
    worst = {"max_abs": 0.0, "max_rel": 0.0, "error": 0.0}
    for name, run in runs.items():
        for label, xb, wb in (("batch_1", raw[:1], want[:1]), (f"batch_{n}", raw, want)):
            try:
                got = run(xb)
            except FcspecError:
                raise
            except Exception as e:
                raise FcspecError(f"verify: {name} failed on the exported model: {e}") from None
            c = _compare(got, wb, scaling)
            result["runs"][f"{name}/{label}"] = c
            worst = {k: max(worst[k], c[k]) for k in worst}
    result.update(worst)
    result["ok"] = bool(worst["error"] <= TOLERANCE)
    return result


def _raw_table(schema, pre: data.Preprocess, n: int, rng: np.random.Generator):
    """n raw rows for a table schema: numbers around the training statistics with a NaN
    every few cells, categories with missing ("") and unseen ("?unseen") cells."""
    import pyarrow as pa

    cols, j = {}, 0
    shift = np.broadcast_to(pre.shift, (len(schema.numeric_mask()),))
    divisor = np.broadcast_to(pre.divisor, shift.shape)
    for c in schema.columns:
        if c.kind == "numeric":
            v = (rng.standard_normal(n) * divisor[j] + shift[j]) * pre.scale
            v[rng.random(n) < 0.15] = np.nan
            cols[c.name] = pa.array(v.astype(np.float32).astype(np.float64), from_pandas=True)
        else:
            pick = rng.integers(0, len(c.categories) + 2, n)
            vals = [
                c.categories[k]
                if k < len(c.categories)
                else (None if k == len(c.categories) else "?unseen")
                for k in pick
            ]
            cols[c.name] = pa.array(vals, pa.string())
        j += c.width
    return pa.table(cols)


def _verify_table(spec, weights, pre, schema, model, n, rng, opset, probabilities):
    from onnx.reference import ReferenceEvaluator

    from . import interpreter, onnx_tabular, tabular
    from .onnx_export import output_kind

    table = _raw_table(schema, pre, n, rng)
    x, _ = tabular.encode(dataclasses.replace(schema, unknown="ignore", missing="mean"), table)
    x = pre.apply_into(x, np.empty(x.shape, np.float32))
    want = np.asarray(interpreter.Network(spec.model, weights).predict(x), np.float32)
    if probabilities:
        want = _np_probabilities(spec, want)
    scaling = data.target_scaling(schema)
    if scaling is not None:
        want = data.unscale_target(want, scaling)
    feeds = onnx_tabular.feeds(schema, table, INPUT_NAME)
    names = [o.name for o in model.graph.output]
    sess = session(model)
    ref = ReferenceEvaluator(model)
    result: dict[str, Any] = {"n": n, "opset": opset, "tolerance": TOLERANCE, "runs": {}}
    result["scaled_target"] = scaling is not None
    worst = {"max_abs": 0.0, "max_rel": 0.0, "error": 0.0}
    class_ok = True
    for name, run in (("onnxruntime", sess.run), ("reference", ref.run)):
        for label, rows in (("batch_1", slice(0, 1)), (f"batch_{n}", slice(0, n))):
            try:
                got = run(None, {k: v[rows] for k, v in feeds.items()})
            except Exception as e:  # noqa: BLE001 - the runtimes' own error types
                raise FcspecError(f"verify: {name} failed on the exported model: {e}") from None
            c = _compare(got[0], want[rows], scaling)
            result["runs"][f"{name}/{label}"] = c
            worst = {k: max(worst[k], c[k]) for k in worst}
            if onnx_tabular.CLASS_NAME in names:
                labels = got[names.index(onnx_tabular.CLASS_NAME)]
                ids = classes_of(want[rows], spec.task, output_kind(spec))
                expect = tabular.class_names(schema, ids)
                class_ok = class_ok and [str(v) for v in labels] == [str(v) for v in expect]
    result.update(worst)
    result["classes_agree"] = class_ok
    result["ok"] = bool(worst["error"] <= TOLERANCE and class_ok)
    return result


def format_verify(result: dict[str, Any]) -> str:
    """verify's result as the lines `fcspec verify` prints."""
    lines = [f"{'run':<24} {'max abs':>10} {'max rel':>10} {'error':>10}"]
    for name, c in result["runs"].items():
        lines.append(f"{name:<24} {c['max_abs']:>10.3g} {c['max_rel']:>10.3g} {c['error']:>10.3g}")
    if "classes_agree" in result:
        lines.append(f"class names agree: {'yes' if result['classes_agree'] else 'NO'}")
    verdict = "ok" if result["ok"] else "FAILED"
    size = (
        "(std * max(1, |z|) + |mean|)"  # normalize_target: relative to the terms summed
        if result.get("scaled_target")
        else "max(1, |numpy|)"
    )
    lines.append(
        f"{verdict}: largest |onnx - numpy| / {size} = {result['error']:.3g} "
        f"(tolerance {result['tolerance']:g}, opset {result['opset']}, {result['n']} samples)"
    )
    return "\n".join(lines)
