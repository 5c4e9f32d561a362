"""IR + weights -> ONNX `ModelProto`; predict and verify with onnxruntime.

This module owns the inference graph fcspec hands to other runtimes:

- `GraphBuilder`, the builder protocol the op table's emitters write into
  (`g.opset`, `g.node`, `g.param`, `g.const`; see docs/architecture.md);
- `export` / `export_file` / `save`: the graph `input -> preprocessing -> layers
  -> [probabilities] -> output`, opset and IR version pinned, metadata recorded,
  checked with `onnx.checker` (full check) before anything is written;
- `predict`: a saved model run by onnxruntime over a data file, in batches;
- `verify`: the NumPy interpreter, onnxruntime and `onnx.reference` compared on
  the same raw inputs at batch 1 and batch N;
- `graph_text`: the readable text of a graph for golden files.

Layer-specific knowledge lives in `ops.OPS[op].onnx`, never here: this module
only wires layers together.  docs/onnx.md describes the graph for users.
"""

from __future__ import annotations

import csv
import io as _stdio
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from . import __version__, ir
from .errors import DataError, FcspecError
from .io import atomic_write_bytes, atomic_write_text, load_npz, save_npz

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

# verify's tolerance: an element passes when |onnx - numpy| <= TOLERANCE * max(1, |numpy|),
# i.e. within 1e-5 absolute or 1e-5 relative, whichever is looser.  float32 has a
# 6e-8 unit round-off; the difference between runtimes comes from summation order
# in Gemm (784 terms: ~1e-6 relative at worst) and from exp/log/erf/tanh
# implementations (a few ulp), so 1e-5 leaves an order of magnitude of headroom
# while any real error (a transposed weight, a missing bias, a wrong slope) is
# orders of magnitude larger.
TOLERANCE = 1e-5

INPUT_NAME = "input"
OUTPUT_NAME = "output"
BATCH_DIM = "batch"

# Default rows per onnxruntime call in `predict`: large enough to amortize the
# call overhead, small enough that a 784-wide batch stays a few MB.
PREDICT_BATCH = 4096

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


@dataclass(frozen=True)
class _Pre:
    """Preprocessing as three float32 arrays broadcastable to one sample."""

    scale: np.ndarray
    shift: np.ndarray
    divisor: np.ndarray

    @property
    def is_identity(self) -> bool:
        return bool(
            np.all(self.scale == 1) and np.all(self.shift == 0) and np.all(self.divisor == 1)
        )


def _preprocess_arrays(spec: ir.Spec, preprocess: Any) -> _Pre:
    """Read `scale`, `shift`, `divisor` from a `data.Preprocess` (or anything with
    those attributes); without one, derive what the spec alone determines."""
    shape = spec.model.input_shape
    if preprocess is None:
        d = spec.data
        if d is not None and d.normalize != "none":
            raise DataError(
                f"spec {spec.name} normalizes its inputs ({d.normalize}) but no preprocessing "
                "statistics were given",
                hint="they are saved as preprocess.npz beside weights.npz by `fcspec run FILE`",
            )
        scale = d.scale if d is not None else 1.0
        one = np.ones((), np.float32)
        return _Pre(np.asarray(scale, np.float32), one * 0, one)

    def fit(name: str, default: float) -> np.ndarray:
        v = getattr(preprocess, name, None)
        a = np.asarray(default if v is None else v, dtype=np.float32)
        if a.ndim == 0 or a.size == 1:
            return a.reshape(())
        if a.size == math.prod(shape):
            # Statistics may be stored flat ([784]) for an input of [1, 28, 28].
            return a.reshape(shape)
        raise DataError(
            f"preprocessing {name} has {a.size} values, model {spec.name} takes samples of "
            f"shape {list(shape)} ({math.prod(shape)} values)"
        )

    pre = _Pre(fit("scale", 1.0), fit("shift", 0.0), fit("divisor", 1.0))
    for name in ("scale", "divisor"):
        a = getattr(pre, name)
        if not np.all(np.isfinite(a)) or np.any(a == 0):
            raise DataError(f"preprocessing {name} must be finite and non-zero")
    if not np.all(np.isfinite(pre.shift)):
        raise DataError("preprocessing shift must be finite")
    return pre


def apply_preprocess(pre: _Pre, x: np.ndarray) -> np.ndarray:
    """The NumPy twin of the baked-in nodes, same operations in the same order."""
    x = np.asarray(x, np.float32)
    if not np.all(pre.scale == 1):
        x = x / pre.scale
    if not np.all(pre.shift == 0):
        x = x - pre.shift
    if not np.all(pre.divisor == 1):
        x = x / pre.divisor
    return x


def _emit_preprocess(g: GraphBuilder, x: str, pre: _Pre) -> str:
    # Only the nodes that change something: a model without preprocessing starts
    # directly with its first layer.
    g.scope = "preprocess"
    if not np.all(pre.scale == 1):
        x = g.node("Div", [x, g.const(pre.scale, "preprocess.scale")])
    if not np.all(pre.shift == 0):
        x = g.node("Sub", [x, g.const(pre.shift, "preprocess.shift")])
    if not np.all(pre.divisor == 1):
        x = g.node("Div", [x, g.const(pre.divisor, "preprocess.divisor")])
    return g.rename(x, "preprocessed")


_INERT = {"dropout"}  # no effect at inference


def output_kind(spec: ir.Spec) -> str:
    """What the model's output means: logits, probabilities, log_probabilities or values."""
    if spec.task == "regression":
        return "values"
    ops_ = [l.op for l in spec.model.layers if l.op not in _INERT]
    last = ops_[-1] if ops_ else None
    if last in ("softmax", "sigmoid"):
        return "probabilities"
    if last == "log_softmax":
        return "log_probabilities"
    return "logits"


def probabilities_note(spec: ir.Spec) -> str | None:
    """Why `probabilities=True` adds nothing (or cannot apply), else None."""
    kind = output_kind(spec)
    if spec.task == "regression":
        return f"model {spec.name} is a regression model: it has no class probabilities"
    if kind == "probabilities":
        last = [l for l in spec.model.layers if l.op not in _INERT][-1]
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


def _source_text(spec: ir.Spec, source: str | None) -> str:
    if source is not None:
        return source
    text = getattr(spec, "source", None)
    if isinstance(text, str):
        return text
    # The IR records the file and a hash: use the file only if it still says the
    # same thing (the hash of its bytes, or of its meaning as the checker computes it).
    try:
        raw = Path(spec.path).read_bytes()
        text = raw.decode("utf-8").removeprefix("\ufeff")  # the checker drops a BOM too
    except (OSError, TypeError, ValueError):
        return ""
    import hashlib

    if hashlib.sha256(raw).hexdigest() == spec.sha256:
        return text
    try:
        from . import check

        if check.compile_source(text, spec.path).sha256 == spec.sha256:
            return text
    except Exception:  # an edited or broken file is simply not the source any more
        pass
    return ""


def export(
    spec: ir.Spec,
    params: Mapping[str, np.ndarray],
    preprocess: Any = None,
    *,
    opset: int = DEFAULT_OPSET,
    probabilities: bool = False,
    source: str | None = None,
) -> onnx.ModelProto:
    """The inference graph of `spec` with `params` baked in, checked.

    `preprocess` (a `data.Preprocess`) is baked in as the first nodes, so the
    model takes raw inputs, as the data files hold them.  `source` is the spec's
    text for the graph's doc string (read from `spec.path` when omitted and the
    file still has the recorded hash).
    """
    from . import ops  # the op table, imported late: it imports the IR helpers itself

    check_opset(opset)
    weights = check_params(spec.model, params)
    pre = _preprocess_arrays(spec, preprocess)

    g = GraphBuilder(opset, weights)
    x = _emit_preprocess(g, INPUT_NAME, pre)
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

    if x == INPUT_NAME or x in g.initializers or x not in {o for n in g.nodes for o in n.output}:
        g.scope = "output"
        x = g.node("Identity", [x])  # an empty model: the output still needs a node
    g.rename(x, OUTPUT_NAME)

    batch: list[Any] = [BATCH_DIM]
    inp = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, batch + list(spec.model.input_shape)
    )
    out = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, batch + list(spec.model.output_shape)
    )
    graph = helper.make_graph(
        g.nodes,
        spec.name,
        [inp],
        [out],
        initializer=list(g.initializers.values()),
        doc_string=_source_text(spec, source),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
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
                "normalize": str(
                    getattr(preprocess, "normalize", None)
                    or (spec.data.normalize if spec.data else "none")
                ),
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
    helper.set_model_props(model, meta)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:  # an emitter bug, but say where
        raise FcspecError(f"the exported graph of {spec.name} is invalid: {e}") from None
    return model


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
    params = check_params(spec.model, load_npz(path, "weights"), where=f"weights {path}")
    pre_path = path.parent / "preprocess.npz"
    preprocess = None
    if pre_path.exists():
        from . import data

        preprocess = data.Preprocess.load(pre_path)
    return params, preprocess, path


def export_file(
    spec: ir.Spec,
    out: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    opset: int = DEFAULT_OPSET,
    probabilities: bool = False,
) -> Path:
    """Export `spec` with its trained weights to `out` (default runs/<name>/<name>.onnx)."""
    params, preprocess, wpath = load_weights(spec, weights)
    model = export(spec, params, preprocess, opset=opset, probabilities=probabilities)
    target = Path(out) if out is not None else wpath.parent / f"{spec.name}.onnx"
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
# onnxruntime.


def _ort():
    import onnxruntime as ort

    return ort


def session(model: str | os.PathLike | bytes | onnx.ModelProto):
    """An onnxruntime CPU session; any unreadable model is an `FcspecError`."""
    ort = _ort()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # onnxruntime's own warnings are not the user's business
    if isinstance(model, onnx.ModelProto):
        src: Any = model.SerializeToString()
        what = "the exported model"
    elif isinstance(model, bytes):
        src, what = model, "the model"
    else:
        path = Path(model)
        what = str(path)
        if not path.exists():
            raise DataError(f"ONNX model not found: {path}")
        if path.is_dir():
            raise DataError(f"{path} is a folder, not an ONNX model")
        src = path.read_bytes()
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


def _fit_input(x: np.ndarray, dims: list[Any], source: str) -> np.ndarray:
    """`x` shaped [N, *dims], reshaping flat rows (csv) when the sizes agree."""
    want = [d for d in dims[1:]]
    if any(not isinstance(d, int) for d in want):
        return x.astype(np.float32, copy=False)  # not an fcspec model: let onnxruntime judge
    x = np.asarray(x)
    if x.ndim == 0:
        raise DataError(f"{source}: expected an array of samples, got a scalar")
    if x.dtype.kind not in "fiub":
        raise DataError(f"{source}: inputs have dtype {x.dtype}, expected numbers")
    if list(x.shape[1:]) == want:
        return x.astype(np.float32, copy=False)
    if x.ndim >= 1 and math.prod(x.shape[1:]) == math.prod(want):
        return x.reshape((x.shape[0], *want)).astype(np.float32, copy=False)
    n_have = math.prod(x.shape[1:])
    raise DataError(
        f"{source}: each sample has shape {list(x.shape[1:])} ({n_have} values), "
        f"the model expects {want} ({math.prod(want)} values)",
        hint="is this the data the model was trained on? (for csv, name the label column with --target)",
    )


def _run_batches(sess, x: np.ndarray, batch: int) -> np.ndarray:
    name = sess.get_inputs()[0].name
    parts = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    if not parts:
        out_dims = sess.get_outputs()[0].shape[1:]
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
                arrays["class"] = classes
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
                    cells.append(str(int(classes[i])))
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
) -> dict[str, Any]:
    """Run an exported model over a data file (npz, csv, IDX images with an optional `labels` file)
    with onnxruntime.

    Returns `{"rows", "output_shape", "task", "output_kind", "output_path"}` plus
    `accuracy` (classifiers) or `mse` and `mae` (regression) when the data has labels.
    """
    from . import data

    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise FcspecError(f"batch must be a positive integer, got {batch!r}")
    sess = session(model_path)
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise DataError(f"{model_path} has {len(inputs)} inputs; fcspec models have one")
    if inputs[0].type != "tensor(float)":
        # onnxruntime would fail inside run() with its own exception type
        raise DataError(
            f"{model_path} takes {inputs[0].type} inputs; fcspec models take tensor(float)",
            hint="export one with `fcspec export FILE`",
        )
    meta = sess.get_modelmeta().custom_metadata_map
    task = meta.get("task", "")
    kind = meta.get("output", "")
    x, y = data.load_file(data_path, target=target, labels=labels)
    x = _fit_input(np.asarray(x), list(inputs[0].shape), str(data_path))
    if y is not None and len(y) != len(x):
        raise DataError(f"{data_path}: {len(x)} samples but {len(y)} labels")
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
    if y is not None and len(x):
        y = np.asarray(y)
        if classes is not None and task in ("classification", "binary"):
            labels = y.reshape(len(y), -1)[:, 0] if task == "binary" else y.reshape(len(y))
            result["accuracy"] = float(np.mean(classes == labels.astype(np.int64)))
        elif task == "regression":
            diff = out.reshape(len(out), -1).astype(np.float64) - y.reshape(len(y), -1).astype(
                np.float64
            )
            result["mse"] = float(np.mean(diff**2))
            result["mae"] = float(np.mean(np.abs(diff)))
    if output is not None:
        _write_predictions(Path(output), out, classes)
        result["output_path"] = str(output)
    return result


# ---------------------------------------------------------------------------
# verify: three independent evaluations of the same raw inputs.


def _np_probabilities(spec: ir.Spec, y: np.ndarray) -> np.ndarray:
    # Mirrors _emit_probabilities with the textbook float32 formulas.
    kind = output_kind(spec)
    if kind == "probabilities":
        return y
    if kind == "log_probabilities":
        return np.exp(y)
    if spec.task == "binary":
        return (1 / (1 + np.exp(-y))).astype(np.float32)
    z = np.exp(y - y.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def _compare(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
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
    err = d / np.maximum(1.0, np.abs(want))
    return {
        "max_abs": float(d.max(initial=0.0)),
        "max_rel": float(rel.max(initial=0.0)),
        "error": float(err.max(initial=0.0)),
    }


def verify(
    spec: ir.Spec,
    params: Mapping[str, np.ndarray],
    preprocess: Any = None,
    *,
    n: int = 64,
    rng: np.random.Generator | int | None = None,
    opset: int = DEFAULT_OPSET,
    probabilities: bool = False,
    model: onnx.ModelProto | None = None,
) -> dict[str, Any]:
    """Compare the NumPy interpreter, onnxruntime and onnx.reference on raw inputs.

    Inputs are drawn as standard normals *after* preprocessing and mapped back to
    raw units, so every activation sees both signs whatever the scale.  Each ONNX
    runtime is run at batch 1 (the first sample) and at batch `n`.  The result
    holds `max_abs`, `max_rel`, `error` (the max of |d| / max(1, |numpy|)) per
    runtime and batch, and `ok = error <= TOLERANCE` overall; the caller exits
    non-zero when not ok.
    """
    from onnx.reference import ReferenceEvaluator

    from . import interpreter

    if not isinstance(n, int) or n < 1:
        raise FcspecError(f"verify needs n >= 1 samples, got {n!r}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    weights = check_params(spec.model, params)
    pre = _preprocess_arrays(spec, preprocess)
    if model is None:
        model = export(spec, weights, preprocess, opset=opset, probabilities=probabilities)
    else:
        probabilities = probabilities or (
            dict((p.key, p.value) for p in model.metadata_props).get("output") == "probabilities"
            and output_kind(spec) != "probabilities"
        )

    shape = spec.model.input_shape
    z = rng.standard_normal((n, *shape)).astype(np.float32)
    raw = ((z * pre.divisor + pre.shift) * pre.scale).astype(np.float32)

    net = interpreter.Network(spec.model, weights)
    want = np.asarray(net.predict(_preprocess_for_interpreter(preprocess, pre, raw)), np.float32)
    if probabilities:
        want = _np_probabilities(spec, want)

    sess = session(model)
    ref = ReferenceEvaluator(model)
    runs = {
        "onnxruntime": lambda xb: sess.run(None, {INPUT_NAME: xb})[0],
        "reference": lambda xb: ref.run(None, {INPUT_NAME: xb})[0],
    }
    result: dict[str, Any] = {"n": n, "opset": opset, "tolerance": TOLERANCE, "runs": {}}
    worst = {"max_abs": 0.0, "max_rel": 0.0, "error": 0.0}
    for name, run in runs.items():
        for label, xb, wb in (("batch_1", raw[:1], want[:1]), (f"batch_{n}", raw, want)):
            try:
                got = run(xb)
            except FcspecError:
                raise
            except Exception as e:
                raise FcspecError(f"verify: {name} failed on the exported model: {e}") from None
            c = _compare(got, wb)
            result["runs"][f"{name}/{label}"] = c
            worst = {k: max(worst[k], c[k]) for k in worst}
    result.update(worst)
    result["ok"] = bool(worst["error"] <= TOLERANCE)
    return result


def format_verify(result: dict[str, Any]) -> str:
    """verify's result as the lines `fcspec verify` prints."""
    lines = [f"{'run':<24} {'max abs':>10} {'max rel':>10} {'error':>10}"]
    for name, c in result["runs"].items():
        lines.append(f"{name:<24} {c['max_abs']:>10.3g} {c['max_rel']:>10.3g} {c['error']:>10.3g}")
    verdict = "ok" if result["ok"] else "FAILED"
    lines.append(
        f"{verdict}: largest |onnx - numpy| / max(1, |numpy|) = {result['error']:.3g} "
        f"(tolerance {result['tolerance']:g}, opset {result['opset']}, {result['n']} samples)"
    )
    return "\n".join(lines)


def _preprocess_for_interpreter(preprocess: Any, pre: _Pre, raw: np.ndarray) -> np.ndarray:
    # Prefer data.py's own implementation: the point is to check the baked-in
    # nodes against what training actually fed the network.
    apply = getattr(preprocess, "apply", None)
    if callable(apply):
        return np.asarray(apply(raw), np.float32).reshape(raw.shape)
    return apply_preprocess(pre, raw)
