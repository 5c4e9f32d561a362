"""The table schema baked into an ONNX graph: raw rows in, class names out.

`export` calls these when a model was trained on a table (`tabular.Schema`):

- `emit_inputs`: a model with categorical columns takes **one input per column**, named
  after the column, shaped [batch, 1]: float for numeric columns (NaN = missing),
  string for categorical ones ("" or NA / N/A / NaN / null / None / ? = missing).
  Numbers are imputed with `Where(IsNaN(x), fill, x)`; categories become indices with
  `ai.onnx.ml.LabelEncoder` (missing spellings map to the fill's index, unseen values
  to -1) and one-hot floats with `Equal` against 0..k-1 and `Cast` (-1 gives all
  zeros).  The pieces are concatenated in the schema's order: exactly the float32
  features `tabular.encode` gives the interpreter.  A table of numbers only keeps the
  single `input` [batch, width] (columns in the schema's order), imputed the same way.
- `emit_outputs`: a regression model's output is mapped back to the target's units
  (`* std + mean`); a classifier whose labels are not 0..k-1 gets a second output
  `class` [batch] holding the label (string, or the number it was) by `ArgMax` (or
  the binary threshold) and `Gather` from the sorted class list.

Only `LabelEncoder` is outside the default ONNX domain; docs/onnx.md says which
runtimes run it.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .tabular import MISSING_TOKENS, Schema

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 2  # LabelEncoder-2: keys_strings -> values_int64s with default_int64
CLASS_NAME = "class"


def per_column(schema: Schema | None) -> bool:
    """The model takes one input per column (it has categorical columns)."""
    return schema is not None and schema.categorical


def input_names(schema: Schema) -> list[str]:
    """The graph input of each column: its name (`input` and `output` get `_column`)."""
    return [c.name + "_column" if c.name in ("input", "output") else c.name for c in schema.columns]


def _fill(schema: Schema) -> np.ndarray:
    return np.array([c.fill for c in schema.columns], np.float32)


def emit_inputs(g, schema: Schema, input_name: str) -> tuple[list, str]:
    """(graph inputs, the encoded float [batch, width] value) for a table model."""
    g.scope = "schema"
    if not per_column(schema):
        # numbers only: today's single input; missing cells (NaN) take the training fill
        fill = g.const(_fill(schema), "schema.fill")
        nan = g.node("IsNaN", [input_name])
        x = g.node("Where", [nan, fill, input_name])
        vi = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", schema.width])
        return [vi], g.rename(x, "imputed")
    inputs, parts = [], []
    names = input_names(schema)
    g._taken.update(names)
    for c, name in zip(schema.columns, names):
        if c.kind == "numeric":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1]))
            nan = g.node("IsNaN", [name])
            parts.append(g.node("Where", [nan, g.const(np.float32(c.fill)), name]))
            continue
        inputs.append(helper.make_tensor_value_info(name, TensorProto.STRING, ["batch", 1]))
        cats = list(c.categories)
        keys = cats + [t for t in MISSING_TOKENS if t not in cats]
        values = list(range(len(cats))) + [cats.index(c.fill)] * (len(keys) - len(cats))
        out = g.fresh(f"schema/{c.name}/LabelEncoder")
        g.nodes.append(
            helper.make_node(
                "LabelEncoder",
                [name],
                [out],
                name=out,
                domain=ML_DOMAIN,
                keys_strings=keys,
                values_int64s=values,
                default_int64=-1,
            )
        )
        hot = g.node("Equal", [out, g.const(np.arange(len(cats), dtype=np.int64))])
        parts.append(g.node("Cast", [hot], to=TensorProto.FLOAT))
    x = g.node("Concat", parts, axis=1) if len(parts) > 1 else parts[0]
    return inputs, g.rename(x, "encoded")


def emit_outputs(g, spec, schema: Schema | None, x: str, kind: str) -> tuple[str, list]:
    """(the scores value, extra graph outputs): target units for regression, class names."""
    t = schema.target if schema is not None else None
    if t is None:
        return x, []
    if t.mean is not None:
        g.scope = "target"
        x = g.node("Mul", [x, g.const(np.float32(t.std), "target.std")])
        x = g.node("Add", [x, g.const(np.float32(t.mean), "target.mean")])
        return x, []
    if t.kind != "classes" or t.identity:
        return x, []
    g.scope = CLASS_NAME
    if spec.task == "binary":
        threshold = np.float32(0.5 if kind == "probabilities" else 0.0)
        first = g.node("Squeeze", [x, g.const(np.array([1], np.int64))])
        ids = g.node("Cast", [g.node("Greater", [first, g.const(threshold)])], to=TensorProto.INT64)
    else:
        ids = g.node("ArgMax", [x], axis=1, keepdims=0)
    labels, elem = _labels(t.classes)
    table = g.fresh("class.names")
    g.initializers[table] = numpy_helper.from_array(labels, table)
    name = g.node("Gather", [table, ids], axis=0)
    g.rename(name, CLASS_NAME)
    return x, [helper.make_tensor_value_info(CLASS_NAME, elem, ["batch"])]


def _labels(classes) -> tuple[np.ndarray, int]:
    if all(isinstance(c, str) for c in classes):
        return np.array(list(classes), dtype=object), TensorProto.STRING
    if all(isinstance(c, int) for c in classes):
        return np.array(classes, np.int64), TensorProto.INT64
    return np.array(classes, np.float64), TensorProto.DOUBLE


def feeds(schema: Schema, features, input_name: str = "input") -> dict[str, np.ndarray]:
    """The graph's inputs for a pyarrow Table of raw columns (found by name)."""
    import pyarrow as pa

    from .tabular import _as_text, _name

    names = features.column_names
    if not per_column(schema):
        x = np.empty((features.num_rows, schema.width), np.float32)
        for j, c in enumerate(schema.columns):
            col = features.column(_name(names, c.name, "data", "feature"))
            x[:, j] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return {input_name: x}
    out = {}
    for c, key in zip(schema.columns, input_names(schema)):
        col = features.column(_name(names, c.name, "data", "feature"))
        if c.kind == "numeric":
            v = col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
        else:
            cells = _as_text(col).to_pylist()
            v = np.array(["" if v is None else v for v in cells], dtype=object)
        out[key] = v.reshape(-1, 1)
    return out
