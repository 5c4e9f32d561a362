"""IR + weights -> ONNX `ModelProto`: the inference graph fcspec hands to other runtimes.

This module owns building the graph; running it (predict, verify, onnxruntime
sessions) is `fcspec/runtime.py`.

- `GraphBuilder`, the builder protocol the op table's emitters write into
  (`g.opset`, `g.node`, `g.param`, `g.const`; see docs/architecture.md);
- `export` / `export_file` / `save`: the graph `input -> preprocessing -> layers
  -> [probabilities] -> output`, opset and IR version pinned, metadata recorded,
  checked with `onnx.checker` (full check) before anything is written;
- `output_kind`: what the model's output means, read from the catalog's rows;
- `graph_text`: the readable text of a graph for golden files.

Layer-specific knowledge lives in `ops.OPS[op].onnx`, never here: this module
only wires layers together.  docs/onnx.md describes the graph for users.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import __version__, catalog, data, ir
from .errors import DataError, FcspecError
from .io import atomic_write_bytes, load_labels, load_params, refuse_overwrite, weights_shapes

# Opset 17 is the default because it is the newest opset that every runtime a user
# is likely to meet still accepts (onnxruntime >= 1.13, TensorRT 8.6, OpenVINO
# 2022.3, onnx.js forks); the only fcspec op it lacks natively is Gelu (opset 20),
# whose emitter writes the exact Erf expansion instead.
DEFAULT_OPSET = 17
MIN_OPSET = 17

# The IR version each opset needs, written out rather than taken from
# `onnx.helper.make_model`, whose default follows the installed onnx package: a
# model must not change (or stop loading in an older runtime) because someone
# upgraded onnx.  Values are the minimal IR version of each opset (onnx's
# VERSION_TABLE).
IR_VERSION_FOR_OPSET = {
    17: 8,
    18: 8,
    19: 9,
    20: 9,
    21: 10,
    22: 10,
    23: 11,
    24: 12,
    25: 13,
    26: 13,
    27: 13,
    28: 14,
}
# The newest opset this installation can write: known to us and to onnx.
MAX_OPSET = min(max(IR_VERSION_FOR_OPSET), onnx.defs.onnx_opset_version())

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"

_HINT_TRAIN = "train first with `fcspec run FILE`, or pass --weights"


# ---------------------------------------------------------------------------
# The builder the emitters write into.


class GraphBuilder:
    """Collects nodes and initializers; names values after the layer being emitted.

    `scope` is set by `export` to the current layer's name before its emitter runs,
    so every node and constant reads as `fc1/Gemm`, `gelu_1/const` in the graph.
    """

    def __init__(self, opset: int, params: Mapping[str, np.ndarray]):
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, TensorProto] = {}
        self.scope = "graph"
        self._params = params
        self._taken: set[str] = {INPUT_NAME, OUTPUT_NAME}

    def fresh(self, base: str) -> str:
        """A value name not used before: `base`, else `base_2`, `base_3`, ..."""
        name, i = base, 1
        while name in self._taken:
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def node(self, op_type: str, inputs: list[str] | tuple[str, ...], **attrs: Any) -> str:
        """Add one node (default domain, one output) and return its output's name."""
        out = self.fresh(f"{self.scope}/{op_type}")
        clean = {k: _attr_value(v) for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **clean))
        return out

    def param(self, layer: ir.Layer, kind: str) -> str:
        """The initializer holding `<layer>.<kind>` (PyTorch layout), added once."""
        name = f"{layer.name}.{kind}"
        if name not in self.initializers:
            if name not in self._params:
                raise DataError(f"weights have no {name!r}", hint=_HINT_TRAIN)
            array = np.ascontiguousarray(self._params[name], dtype=np.float32)
            self.initializers[name] = numpy_helper.from_array(array, name)
            self._taken.add(name)
        return name

    def const(self, array: Any, name: str | None = None) -> str:
        """A constant initializer.  Floats become float32 and integers int64, the
        only element types fcspec's graphs use (Reshape shapes, Gemm scalars)."""
        array = np.asarray(array)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iub":
            array = array.astype(np.int64)
        else:
            raise TypeError(f"GraphBuilder.const: unsupported dtype {array.dtype}")
        out = self.fresh(name or f"{self.scope}/const")
        self.initializers[out] = numpy_helper.from_array(np.ascontiguousarray(array), out)
        return out

    def rename(self, old: str, new: str) -> str:
        """Give the value `old` (produced by a node here) the name `new`; returns the
        name actually used.  Values that are graph inputs or initializers keep theirs."""
        if old in self.initializers or old == INPUT_NAME:
            return old
        if new != OUTPUT_NAME:
            if new in self._taken:
                return old
            self._taken.add(new)
        for node in self.nodes:
            for i, v in enumerate(node.output):
                if v == old:
                    node.output[i] = new
            for i, v in enumerate(node.input):
                if v == old:
                    node.input[i] = new
        return new


def _attr_value(v: Any) -> Any:
    # helper.make_node picks the attribute type from the Python type: NumPy
    # scalars would otherwise be refused, and a float attribute (alpha) given as
    # a NumPy float must stay a float.
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------
# Export.


def check_opset(opset: int) -> int:
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise FcspecError(
            f"unsupported ONNX opset {opset!r}",
            hint=f"fcspec writes opsets {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})",
        )
    return opset


def check_params(
    model: ir.Model, params: Mapping[str, Any], where: str = "weights"
) -> dict[str, np.ndarray]:
    """The weights as float32 arrays, after checking names and shapes against the IR."""
    expected = model.param_shapes()
    missing = [k for k in expected if k not in params]
    extra = sorted(k for k in params if k not in expected)
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if extra:
            parts.append("unexpected " + ", ".join(extra))
        raise DataError(
            f"{where} do not match model {model.name}: " + "; ".join(parts),
            hint="were they trained from another spec? " + _HINT_TRAIN,
        )
    out = {}
    for k, shape in expected.items():
        a = np.asarray(params[k])
        if tuple(a.shape) != tuple(shape):
            raise DataError(
                f"{where}: {k} has shape {list(a.shape)}, model {model.name} needs {list(shape)}",
                hint="were they trained from another spec? " + _HINT_TRAIN,
            )
        if a.dtype.kind not in "fiu":
            raise DataError(f"{where}: {k} has dtype {a.dtype}, expected floating point")
        a = a.astype(np.float32)
        if not np.all(np.isfinite(a)):
            raise DataError(f"{where}: {k} contains NaN or infinity (did training diverge?)")
        out[k] = a
    return out


def preprocessing(spec: ir.Spec, preprocess: data.Preprocess | None = None) -> data.Preprocess:
    """The preprocessing the graph bakes in: `preprocess` (fitted by training, saved as
    preprocess.npz) checked against the model's input, or without one, what the spec
    alone determines (its `scale`)."""
    shape = spec.model.input_shape
    if preprocess is None and spec.data is not None and spec.data.statistics is not None:
        preprocess = data.Preprocess.load(
            Path(spec.path).parent / spec.data.statistics, spec.model.input_shape
        )
    if preprocess is None:
        d = spec.data
        if d is not None and d.normalize != "none":
            raise DataError(
                f"spec {spec.name} normalizes its inputs ({d.normalize}) but no preprocessing "
                "statistics were given",
                hint="they are saved as preprocess.npz beside weights.npz by `fcspec run FILE`",
            )
        one = np.ones((), np.float32)
        return data.Preprocess(np.float32(d.scale if d is not None else 1.0), one * 0, one)

    def fit(name: str, default: float) -> np.ndarray:
        v = getattr(preprocess, name, None)
        a = np.asarray(default if v is None else v, dtype=np.float32)
        if a.ndim == 0 or a.size == 1:
            return a.reshape(())
        if name != "scale" and a.size == math.prod(shape):
            # Statistics may be stored flat ([784]) for an input of [1, 28, 28].
            return a.reshape(shape)
        raise DataError(
            f"preprocessing {name} has {a.size} values, model {spec.name} takes samples of "
            f"shape {list(shape)} ({math.prod(shape)} values)"
        )

    scale, shift, divisor = fit("scale", 1.0), fit("shift", 0.0), fit("divisor", 1.0)
    for name, a in (("scale", scale), ("divisor", divisor)):
        if not np.all(np.isfinite(a)) or np.any(a == 0):
            raise DataError(f"preprocessing {name} must be finite and non-zero")
    if not np.all(np.isfinite(shift)):
        raise DataError("preprocessing shift must be finite")
    normalize = getattr(preprocess, "normalize", None) or (
        spec.data.normalize if spec.data else "none"
    )
    return data.Preprocess(np.float32(scale), shift, divisor, str(normalize))


def _emit_preprocess(g: GraphBuilder, x: str, pre: data.Preprocess) -> str:
    # data.Preprocess.apply_into's operations in its order, and only the nodes that change
    # something: a model without preprocessing starts directly with its first layer.
    g.scope = "preprocess"
    if not np.all(pre.scale == 1):
        x = g.node("Div", [x, g.const(pre.scale, "preprocess.scale")])
    if not np.all(pre.shift == 0):
        x = g.node("Sub", [x, g.const(pre.shift, "preprocess.shift")])
    if not np.all(pre.divisor == 1):
        x = g.node("Div", [x, g.const(pre.divisor, "preprocess.divisor")])
    return g.rename(x, "preprocessed")


def output_kind(spec: ir.Spec) -> str:
    """What the model's output means: logits, probabilities, log_probabilities or values
    (from the catalog's layer rows)."""
    return catalog.output_kind(spec.task, spec.model.layers)


def probabilities_note(spec: ir.Spec) -> str | None:
    """Why `probabilities=True` adds nothing (or cannot apply), else None."""
    if spec.task == "regression":
        return f"model {spec.name} is a regression model: it has no class probabilities"
    if output_kind(spec) == "probabilities":
        _, last = catalog.model_output(spec.model.layers)
        return f"model {spec.name} already ends in {last.op}: its output is already probabilities"
    return None


def _emit_probabilities(g: GraphBuilder, spec: ir.Spec, x: str) -> tuple[str, str]:
    kind = output_kind(spec)
    if spec.task == "regression":
        raise FcspecError(
            f"--probabilities applies to classifiers; {spec.name} is a regression model",
            hint="export without --probabilities",
        )
    g.scope = "probabilities"
    if kind == "probabilities":
        return x, kind
    if kind == "log_probabilities":
        return g.node("Exp", [x]), "probabilities"
    if spec.task == "binary":
        return g.node("Sigmoid", [x]), "probabilities"
    return g.node("Softmax", [x], axis=-1), "probabilities"


def export(
    spec: ir.Spec,
    params: Mapping[str, np.ndarray],
    preprocess: data.Preprocess | None = None,
    *,
    opset: int = DEFAULT_OPSET,
    probabilities: bool = False,
    source: str | None = None,
    schema=None,
    fixed_batch: int | None = None,
    class_names: Sequence[Any] | None = None,
) -> onnx.ModelProto:
    """The inference graph of `spec` with `params` baked in, checked.

    A classifier's metadata names its classes in output order (`class_names`, JSON):
    the given ones (labels.json of a run the Python API trained on its own labels), the
    schema's (a table's class column), else the class ids 0..C-1.

    `schema` (a `tabular.Schema`, saved as schema.json by training on a table) is
    baked in as well: imputation, one-hot encoding, the target's units and class
    names (fcspec/onnx_tabular.py).
    `preprocess` (a `data.Preprocess`) is baked in as the first nodes, so the
    model takes raw inputs, as the data files hold them.  `source` is the spec's
    text for the graph's doc string (by default `spec.source`, the text the
    checker compiled).
    """
    from . import (
        onnx_tabular,
        ops,  # the op table, imported late: it imports the IR helpers itself
    )

    check_opset(opset)
    spec = ir.resolve_from_params(spec, params) if spec.model.pending else spec
    weights = check_params(spec.model, params)
    if schema is not None:
        check_schema_fits(spec, schema)
    pre = preprocessing(spec, preprocess)

    g = GraphBuilder(opset, weights)
    table = schema is not None and bool(schema.columns)
    graph_inputs = None
    x = INPUT_NAME
    if table:
        graph_inputs, x = onnx_tabular.emit_inputs(g, schema, INPUT_NAME)
    x = _emit_preprocess(g, x, pre)
    for layer in spec.model.layers:
        row = ops.OPS.get(layer.op)
        if row is None:
            raise FcspecError(f"layer {layer.name}: op {layer.op!r} has no ONNX emitter")
        g.scope = layer.name
        y = row.onnx(g, layer, x)
        # Name each layer's result after the layer: the graph then reads like the spec.
        x = g.rename(y, layer.name) if y != x else x
    kind = output_kind(spec)
    if probabilities:
        x, kind = _emit_probabilities(g, spec, x)
    x, extra_outputs = onnx_tabular.emit_outputs(g, spec, schema, x, kind)

    if x == INPUT_NAME or x in g.initializers or x not in {o for n in g.nodes for o in n.output}:
        g.scope = "output"
        x = g.node("Identity", [x])  # an empty model: the output still needs a node
    g.rename(x, OUTPUT_NAME)

    if fixed_batch is not None and (
        not isinstance(fixed_batch, int) or isinstance(fixed_batch, bool) or fixed_batch < 1
    ):
        raise FcspecError(f"--fixed-batch must be a positive integer, got {fixed_batch!r}")
    # A named dynamic batch by default; a fixed one for runtimes that need static shapes
    # (NNAPI, CoreML): predict then pads the last batch.
    batch: list[Any] = [BATCH_DIM if fixed_batch is None else fixed_batch]
    inp = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, batch + list(spec.model.input_shape)
    )
    out = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, batch + list(spec.model.output_shape)
    )
    graph = helper.make_graph(
        g.nodes,
        spec.name,
        graph_inputs or [inp],
        [out, *extra_outputs],
        initializer=list(g.initializers.values()),
        doc_string=spec.source if source is None else source,
    )
    opsets = [helper.make_opsetid("", opset)]
    if any(n.domain == onnx_tabular.ML_DOMAIN for n in g.nodes):
        opsets.append(helper.make_opsetid(onnx_tabular.ML_DOMAIN, onnx_tabular.ML_OPSET))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=IR_VERSION_FOR_OPSET[opset],
        producer_name="fcspec",
        producer_version=__version__,
        doc_string=f"{spec.name}: fully connected network exported by fcspec",
    )
    meta = {
        "fcspec_version": __version__,
        "spec_name": spec.name,
        "spec_path": str(spec.path),
        "spec_sha256": spec.sha256,
        "task": spec.task,
        "output": kind,
        "input_shape": json.dumps(list(spec.model.input_shape)),
        "output_shape": json.dumps(list(spec.model.output_shape)),
        "preprocess": json.dumps(
            {
                "normalize": pre.normalize,
                **{
                    k: (v.item() if v.size == 1 else f"per-feature {list(v.shape)}")
                    for k, v in (
                        ("scale", pre.scale),
                        ("shift", pre.shift),
                        ("divisor", pre.divisor),
                    )
                },
            }
        ),
    }
    if spec.classes is not None:
        meta["classes"] = str(spec.classes)
        meta["class_names"] = json.dumps(_class_names(spec, schema, class_names))
    if schema is not None:
        # the whole fitted schema: predict reads raw files by it, column by column
        meta["schema"] = json.dumps(schema.to_dict(), separators=(",", ":"))
        src = spec.data.train if spec.data is not None else None
        args = src.args if isinstance(src, ir.DataSource) else {}
        # how the training file was read: predict reads raw files the same way by default
        meta["reader"] = json.dumps(
            {"header": bool(args.get("header", True)), "delimiter": args.get("delimiter", "auto")}
        )
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
        # Every edge gets its shape in the file (value_info), as onnx's strict shape
        # inference computes it: viewers (Netron) and runtimes that plan memory from
        # static shapes read them; an inconsistency here is an emitter bug.
        model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise FcspecError(f"the exported graph of {spec.name} is invalid: {e}") from None
    return model


def _class_names(spec: ir.Spec, schema, given: Sequence[Any] | None) -> list:
    """The classes of a classifier in output order, as JSON values (str, int or float)."""
    from . import tabular

    count = 2 if spec.task == "binary" else int(spec.classes or 0)
    names = list(given) if given is not None else tabular.class_names(schema, np.arange(count))
    if len(names) != count:
        raise FcspecError(
            f"{spec.name} has {count} classes but {len(names)} class names were given"
        )
    return [v.item() if isinstance(v, np.generic) else v for v in names]


def save(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Check `model` and write it atomically (temporary file, fsync, os.replace)."""
    path = Path(path)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise FcspecError(f"refusing to write an invalid ONNX model to {path}: {e}") from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, model.SerializeToString())
    except OSError as e:
        raise FcspecError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def run_dir(spec: ir.Spec) -> Path:
    """Where `fcspec run` keeps a spec's artifacts: runs/<name>/ under the current folder."""
    return Path("runs") / spec.name


def load_weights(
    spec: ir.Spec, weights: str | os.PathLike | None = None
) -> tuple[dict[str, np.ndarray], Any, Path]:
    """(params, preprocess, weights path) for `spec`: `weights` or runs/<name>/weights.npz,
    with `preprocess.npz` beside it when present."""
    if weights is None:
        path = run_dir(spec) / "weights.npz"
        if not path.exists():
            raise FcspecError(
                f"no trained weights for {spec.name} (looked for {path})", hint=_HINT_TRAIN
            )
    else:
        path = Path(weights)
        if not path.exists():
            raise DataError(f"weights file not found: {path}", hint=_HINT_TRAIN)
    if spec.model.pending:  # `input auto` / `linear(outputs)`: widths from the weights
        spec = ir.resolve_from_params(spec, weights_shapes(path, "weights"))
    params = load_params(path, spec.model, "weights", spec=spec)
    pre_path = path.parent / "preprocess.npz"
    preprocess = None
    if pre_path.exists():
        preprocess = data.Preprocess.load(pre_path)
    return params, preprocess, path


def check_schema_fits(spec: ir.Spec, schema) -> None:
    """A saved schema must describe this model's input and output widths."""
    width = math.prod(spec.model.input_shape)
    if schema.columns and schema.width != width:
        raise DataError(
            f"the schema encodes {schema.width} features but model {spec.name} takes {width}",
            hint="schema.json and weights.npz come from different runs; retrain",
        )
    t = schema.target
    outputs = spec.model.output_shape[-1]
    if t is not None and t.kind == "classes" and spec.task == "classification":
        if len(t.classes) > outputs:
            raise DataError(
                f"the schema names {len(t.classes)} classes but model {spec.name} has {outputs} outputs",
                hint="schema.json and weights.npz come from different runs; retrain",
            )


def load_schema(weights_path: str | os.PathLike):
    """The `tabular.Schema` saved beside the weights (schema.json), or None."""
    from .tabular import read_schema

    return read_schema(Path(weights_path).parent / "schema.json")


def export_file(
    spec: ir.Spec,
    out: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    probabilities: bool = False,
    fixed_batch: int | None = None,
) -> Path:
    """Export `spec` with its trained weights to `out` (default runs/<name>/<name>.onnx)."""
    params, preprocess, wpath = load_weights(spec, weights)
    schema = load_schema(wpath)
    labels = load_labels(wpath.parent)  # the Python API's own labels, when it trained there
    target = Path(out) if out is not None else wpath.parent / f"{spec.name}.onnx"
    refuse_overwrite(
        target,
        {"weights": wpath, "preprocessing": wpath.parent / "preprocess.npz", "spec": spec.path},
    )
    model = export(
        spec,
        params,
        preprocess,
        opset=opset,
        probabilities=probabilities,
        schema=schema,
        fixed_batch=fixed_batch,
        class_names=None if labels is None else list(labels),
    )
    return save(model, target)


def graph_text(model: onnx.ModelProto) -> str:
    """`onnx.printer.to_text` of `model` with the initializers' data stripped.

    Shapes stay visible (`<float[128,784] "fc1.weight" = []>`), values do not:
    a 64x64 weight would print as 43 KB of digits, and trained numbers do not
    belong in a golden file.  What stays is graph logic: the constants emitters
    add (`gelu_1/const`: 1/sqrt(2), ...) and the input scale, when small.
    Data statistics (`preprocess.shift` / `divisor`) are stripped like weights.
    The fcspec version (`producer_version`, metadata `fcspec_version`) and the
    spec hash are dropped: goldens survive a release, and a change to a spec's
    training or data sections (which changes its hash, not its graph).
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        logic = "/" in t.name or t.name == "preprocess.scale"  # see GraphBuilder.const's names
        if not logic or math.prod(t.dims) > 16:
            for f in ("raw_data", "float_data", "int64_data", "int32_data", "double_data"):
                t.ClearField(f)
            t.data_location = TensorProto.EXTERNAL
    m.ClearField("producer_version")
    keep = [p for p in m.metadata_props if p.key not in ("fcspec_version", "spec_sha256")]
    del m.metadata_props[:]
    m.metadata_props.extend(keep)
    return onnx.printer.to_text(m).rstrip() + "\n"


# ---------------------------------------------------------------------------
# A classifier graph as scikit-learn converters (skl2onnx) shape it.

LABEL_NAME = "label"
PROBABILITIES_NAME = "probabilities"


def with_labels(model: onnx.ModelProto, spec: ir.Spec, labels: np.ndarray) -> onnx.ModelProto:
    """`model` (exported with `probabilities=True`) with two outputs, skl2onnx's pair:
    `label` ([N], the class labels as the user gave them: numbers or strings) and
    `probabilities` ([N, classes] float; a binary model's one sigmoid becomes the two
    columns `1 - p, p`, as predict_proba has them).  The label is the argmax of the
    probabilities, so the two agree exactly."""
    if spec.task not in ("classification", "binary"):
        raise FcspecError(f"model {spec.name} is not a classifier: it has no labels to export")
    labels = np.asarray(labels)
    if labels.dtype.kind in "UO":
        labels = labels.astype(object)  # ONNX string tensors come from object arrays
    elif labels.dtype.kind in "biu":
        labels = labels.astype(np.int64)
    elif labels.dtype.kind == "f":
        labels = labels.astype(np.float32)
    else:
        raise FcspecError(f"labels of type {labels.dtype} cannot be stored in an ONNX graph")
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    raw = "probabilities/model" if spec.task == "binary" else PROBABILITIES_NAME
    for n in g.node:
        n.output[:] = [raw if o == OUTPUT_NAME else o for o in n.output]
        n.input[:] = [raw if i == OUTPUT_NAME else i for i in n.input]
    new_nodes = []
    if spec.task == "binary":
        one = numpy_helper.from_array(np.ones((), np.float32), "probabilities/one")
        g.initializer.append(one)
        new_nodes.append(
            helper.make_node(
                "Sub", [one.name, raw], ["probabilities/negative"], name="probabilities/Sub"
            )
        )
        new_nodes.append(
            helper.make_node(
                "Concat",
                ["probabilities/negative", raw],
                [PROBABILITIES_NAME],
                name="probabilities/Concat",
                axis=1,
            )
        )
    table = numpy_helper.from_array(labels, "label/classes")
    g.initializer.append(table)
    new_nodes.append(
        helper.make_node(
            "ArgMax", [PROBABILITIES_NAME], ["label/index"], name="label/ArgMax", axis=1, keepdims=0
        )
    )
    new_nodes.append(
        helper.make_node("Gather", [table.name, "label/index"], [LABEL_NAME], name="label/Gather")
    )
    g.node.extend(new_nodes)
    width = len(labels)
    del g.output[:]
    g.output.extend(
        [
            helper.make_tensor_value_info(LABEL_NAME, table.data_type, [BATCH_DIM]),
            helper.make_tensor_value_info(
                PROBABILITIES_NAME, TensorProto.FLOAT, [BATCH_DIM, width]
            ),
        ]
    )
    _drop_unused(g)  # a table model's `class` output: `label` takes its place
    props = {p.key: p.value for p in m.metadata_props}
    props["output"] = "label, probabilities"
    props["class_names"] = json.dumps(
        [str(v) if labels.dtype == object else v.item() for v in labels]
    )
    del m.metadata_props[:]
    helper.set_model_props(m, props)
    try:
        onnx.checker.check_model(m, full_check=True)
    except onnx.checker.ValidationError as e:
        raise FcspecError(f"the labelled graph of {spec.name} is invalid: {e}") from None
    return m


def _drop_unused(g) -> None:
    """Remove the nodes and initializers no graph output depends on (nodes are in
    topological order, so one backward pass finds them)."""
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(g.node):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    if len(keep) != len(g.node):
        del g.node[:]
        g.node.extend(reversed(keep))
    inits = [t for t in g.initializer if t.name in needed]
    if len(inits) != len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(inits)
