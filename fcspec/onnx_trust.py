"""What `fcspec predict` runs: graphs of straight-line ops, read without `import onnx`.

An ONNX file is a program.  A `Loop` of 1e15 iterations, a `Range` or `ConstantOfShape`
sized by a tensor's value, or a local function can take any time or memory, so `predict`
runs only graphs whose every node is one of the op types below: what fcspec's exporter
writes, and what `fcspec import` reads from PyTorch's and skl2onnx's MLP exports (with
skl2onnx's label tail).  Each of them costs time and memory bounded by the sizes of its
inputs and of the file, so such a graph ends.  Anything else (another op type or domain,
a subgraph, a local function) is refused unless the user passes `--trust-model`.

The check walks the protobuf wire format itself (ModelProto.graph -> GraphProto.node ->
NodeProto.op_type / domain / attribute): `import onnx` costs about a second, most of a
short `predict`, and this walk skips the weights by their length, so it reads a
100 MB model in microseconds.  Field numbers are onnx.proto3's, which ONNX never renumbers.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import DataError

# Every op type fcspec's exporter writes (tests/test_hostile.py scans the emitters, so a
# new one must be added here).
EXPORTED_OPS = frozenset(
    {
        "Add", "Div", "Elu", "Erf", "Exp", "Flatten", "Gelu", "Gemm", "Greater", "Identity",
        "LeakyRelu", "LogSoftmax", "Mul", "Relu", "Selu", "Sigmoid", "Softmax", "Softplus",
        "Sub", "Tanh", "Where",
        # tabular graphs (onnx_tabular.py): imputation, one-hot, class names
        "ArgMax", "Cast", "Concat", "Equal", "Gather", "IsNaN", "Squeeze",
    }
)  # fmt: skip
# What `fcspec import` reads in foreign MLPs (onnx_import.py's docstring) beyond the above:
# MatMul + Add layers, Reshape to [batch, features], constants, dropout, and the elementwise
# expansions exporters write for gelu, silu and softplus.
IMPORTED_OPS = frozenset({"MatMul", "Reshape", "Constant", "Dropout", "Log", "Neg", "Pow"})
TRUSTED_OPS = EXPORTED_OPS | IMPORTED_OPS
# ai.onnx.ml: fcspec's tabular graphs map categories to codes and codes to names
# (LabelEncoder); skl2onnx's classifiers scale inputs and pick their label with
# Scaler, ArrayFeatureExtractor and ZipMap.
TRUSTED_ML_OPS = frozenset({"LabelEncoder", "Scaler", "ArrayFeatureExtractor", "ZipMap"})

# onnx.proto3 field numbers
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE = 1
_NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 4, 5, 7
_ATTR_G, _ATTR_GRAPHS = 6, 11


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, i: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= end or shift > 63:
            raise _Malformed
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, (start, end)) of each length-delimited field in buf[start:end];
    other wire types are skipped."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _varint(buf, i, end)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = _varint(buf, i, end)
            if i + n > end:
                raise _Malformed
            yield number, (i, i + n)
            i += n
        else:  # groups (3, 4) are not in onnx.proto; 6, 7 do not exist
            raise _Malformed
    if i != end:
        raise _Malformed


def graph_nodes(model: bytes) -> tuple[list[tuple[str, str, bool]], int]:
    """The top-level graph's nodes of a serialized model as (domain, op type, has a
    subgraph), and the number of local functions.  Raises `ValueError` when the bytes
    are not a protobuf message."""
    buf = memoryview(model)
    nodes: list[tuple[str, str, bool]] = []
    functions = 0
    try:
        for number, (a, b) in _fields(buf, 0, len(buf)):
            if number == _MODEL_FUNCTIONS:
                functions += 1
            elif number == _MODEL_GRAPH:  # repeated occurrences merge: read them all
                for gnum, (na, nb) in _fields(buf, a, b):
                    if gnum == _GRAPH_NODE:
                        nodes.append(_node(buf, na, nb))
    except _Malformed:
        raise ValueError("not a protobuf message (truncated or damaged)") from None
    return nodes, functions


def _node(buf: memoryview, a: int, b: int) -> tuple[str, str, bool]:
    op = domain = ""
    subgraph = False
    for number, (s, e) in _fields(buf, a, b):
        if number == _NODE_OP_TYPE:
            op = bytes(buf[s:e]).decode("utf-8", "replace")
        elif number == _NODE_DOMAIN:
            domain = bytes(buf[s:e]).decode("utf-8", "replace")
        elif number == _NODE_ATTRIBUTE:
            subgraph |= any(n in (_ATTR_G, _ATTR_GRAPHS) for n, _ in _fields(buf, s, e))
    return domain, op, subgraph


def untrusted_parts(model: bytes | Any) -> list[str]:
    """What in a serialized model (or an `onnx.ModelProto`) is outside the trusted set:
    other op types or domains, subgraphs (Loop, If, Scan bodies), local functions."""
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    nodes, functions = graph_nodes(model)
    found: set[str] = set()
    for domain, op, subgraph in nodes:
        if domain == "ai.onnx.ml":
            trusted = op in TRUSTED_ML_OPS
        else:
            trusted = domain in ("", "ai.onnx") and op in TRUSTED_OPS
        if not trusted:
            found.add(f"{domain + '.' if domain else ''}{op or '(a node with no op type)'}")
        if subgraph:
            found.add(f"a subgraph in {op}")
    if functions:
        found.add(f"{functions} local functions")
    return sorted(found)


def check_trusted(src: bytes, what: str | os.PathLike) -> None:
    """Refuse (`DataError`) a serialized model whose graph holds anything outside the
    trusted set."""
    try:
        parts = untrusted_parts(src)
    except ValueError as e:
        raise DataError(f"{what} is not a valid ONNX model: {e}") from None
    if parts:
        shown = ", ".join(parts[:6]) + (", ..." if len(parts) > 6 else "")
        raise DataError(
            f"{what} holds what fcspec never exports ({shown}); predict runs only graphs "
            "of the ops fcspec exports or imports, as another graph may run without end",
            hint="export the model with `fcspec export FILE`, or pass --trust-model "
            "if you trust this file",
        )
