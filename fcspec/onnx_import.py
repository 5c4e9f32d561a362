"""ONNX MLP -> `.fc` spec + `weights.npz` (+ `preprocess.npz`): `fcspec import`.

The reverse of `onnx_export`.  A graph is read as a chain from its one input
to the chosen output:

    [preprocessing]   Div / Mul / Sub / Add by constants before the first layer
                      (fcspec's own `scale`, `normalize`), and skl2onnx's Scaler
    layers            Gemm, MatMul (+ Add of a constant: the bias), Flatten,
                      Reshape to [batch, features], the language's activations
                      (also as the multi-node expansions exporters write for
                      gelu, silu and softplus), Dropout, Softmax / LogSoftmax
    no-ops            Identity, Cast to float, Reshape of a flat sample to itself
    [tail]            a final Softmax / Sigmoid (kept out of the spec: it is what
                      `export --probabilities` adds), skl2onnx's binary [1 - p, p]

Nodes that do not lead to the chosen output (skl2onnx's label: ArgMax,
ArrayFeatureExtractor, ZipMap, ...) are left out.  Anything else on the path is
refused, naming the node and its op type.

Every group of activation nodes is confirmed numerically against the op table
(`ops.OPS`) before it is accepted, and the whole import is confirmed at the
end: onnxruntime on the original model and the interpreter on the imported
spec must agree within verify's tolerance, or nothing is written.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import DataError, FcspecError

TASKS = ("classification", "binary", "regression")

# Elementwise op types an activation's expansion may use (gelu's Erf form,
# silu's Sigmoid * x, softplus with beta and threshold, ...).
_ELEMENTWISE = {
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Greater",
    "Where",
    "Exp",
    "Log",
    "Neg",
}
_SINGLE_ACTIVATIONS = {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Selu": "selu",
    "LeakyRelu": "leaky_relu",
    "Elu": "elu",
    "Gelu": "gelu",
    "Softplus": "softplus",
    "Softmax": "softmax",
    "LogSoftmax": "log_softmax",
}
_SUPPORTED = (
    "fcspec imports fully connected networks: Gemm, MatMul + Add, Flatten, Reshape to "
    "[batch, features], Relu, LeakyRelu, Elu, Selu, Sigmoid, Tanh, Gelu, Softplus, silu "
    "(x * Sigmoid(x)), Dropout, Softmax, LogSoftmax, and Sub/Div/Mul by constants before "
    "the first layer"
)
_MAX_REGION = 16  # nodes one activation's expansion may take


class ImportRefused(DataError):
    """A model fcspec cannot express (the node and op type are in the message)."""


@dataclass
class _Layer:
    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    weight: np.ndarray | None = None  # [out, in], PyTorch layout
    bias: np.ndarray | None = None
    out_shape: tuple[int, ...] = ()


@dataclass
class Imported:
    """The result of reading a model: the spec's text and what goes beside it."""

    name: str
    text: str
    params: dict[str, np.ndarray]
    preprocess: Any  # data.Preprocess or None
    notes: list[str]
    task: str


# ---------------------------------------------------------------------------
# Reading the graph.


def read_model(path: str | os.PathLike):
    """The ModelProto in `path`; a missing, empty or unreadable file is a `DataError`."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise DataError(f"ONNX model not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an ONNX model")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty, not an ONNX model")
    try:
        model = onnx.load(str(path))  # weights in external data files beside it are read too
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise DataError(f"{path} is not an ONNX model: {type(e).__name__}: {e}") from None
    if not model.graph.node:
        raise DataError(f"{path} is not an ONNX model (it holds no graph)")
    return model


def _node_label(node, index: int) -> str:
    return (
        f"node {node.name!r} ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"
    )


class _Graph:
    """Constants, producers and consumers of one ONNX graph, and the walk state."""

    def __init__(self, model, source: str):
        from onnx import numpy_helper

        self.source = source
        g = model.graph
        self.consts: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in g.initializer
        }
        self.index = {id(n): i for i, n in enumerate(g.node)}
        self.nodes = []
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                self.consts[n.output[0]] = _constant_value(n)
            else:
                self.nodes.append(n)
        self.producer = {o: n for n in self.nodes for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def label(self, node) -> str:
        return _node_label(node, self.index.get(id(node), -1))

    def refuse(self, node, why: str | None = None):
        what = why or f"op {node.op_type} has no fcspec equivalent"
        raise ImportRefused(f"{self.source}: {self.label(node)}: {what}", hint=_SUPPORTED)

    def const(self, name: str) -> np.ndarray | None:
        return self.consts.get(name)

    def live(self, output: str) -> set[int]:
        """ids of the nodes the value `output` depends on."""
        seen: set[int] = set()
        stack = [output]
        while stack:
            v = stack.pop()
            n = self.producer.get(v)
            if n is None or id(n) in seen:
                continue
            seen.add(id(n))
            stack.extend(i for i in n.input if i)
        return seen


def _constant_value(node) -> np.ndarray:
    from onnx import helper, numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.asarray(helper.get_attribute_value(a))
    raise ImportRefused(f"Constant node {node.name!r} has no tensor value")


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _choose_output(model, g: _Graph, want: str | None) -> tuple[str, list[str]]:
    """The value to import up to, and notes on the outputs left out."""
    from onnx import TensorProto

    outs = list(model.graph.output)
    names = [o.name for o in outs]
    if want is not None:
        if want not in names:
            raise DataError(f"{g.source}: no output named {want!r} (outputs: {', '.join(names)})")
        return want, []
    floats = [
        o.name
        for o in outs
        if o.type.WhichOneof("value") == "tensor_type"
        and o.type.tensor_type.elem_type in (TensorProto.FLOAT, TensorProto.DOUBLE)
    ]
    if floats:
        chosen = floats[0]
    else:
        # skl2onnx's ZipMap turns the probabilities into a list of dicts: take its input.
        zipmaps = [n for n in g.nodes if n.op_type == "ZipMap"]
        if not zipmaps:
            raise DataError(
                f"{g.source}: no floating-point output to import (outputs: {', '.join(names)})"
            )
        chosen = zipmaps[0].input[0]
    left = [n for n in names if n != chosen]
    notes = [f"outputs left out: {', '.join(left)} (fcspec computes classes from the scores)"]
    return chosen, notes if left else []


def _input(model, g: _Graph) -> tuple[str, tuple[int, ...], list[str]]:
    from onnx import TensorProto

    inputs = [i for i in model.graph.input if i.name not in g.consts]
    if len(inputs) != 1:
        raise DataError(
            f"{g.source}: the model has {len(inputs)} inputs "
            f"({', '.join(i.name for i in inputs)}); fcspec models take one"
        )
    inp = inputs[0]
    tt = inp.type.tensor_type
    if inp.type.WhichOneof("value") != "tensor_type" or tt.elem_type not in (
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
    ):
        raise DataError(f"{g.source}: input {inp.name!r} is not a floating-point tensor")
    dims = list(tt.shape.dim)
    if len(dims) < 2:
        raise DataError(
            f"{g.source}: input {inp.name!r} has rank {len(dims)}; fcspec needs [batch, features...]"
        )
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise DataError(
                f"{g.source}: input {inp.name!r} has a dynamic dimension ({d.dim_param or '?'}) "
                "besides the batch; fcspec needs fixed sample shapes"
            )
        shape.append(int(d.dim_value))
    notes = []
    if dims[0].HasField("dim_value"):
        notes.append(
            f"the source model's batch size is fixed at {dims[0].dim_value}; "
            "fcspec's export makes it dynamic"
        )
    return inp.name, tuple(shape), notes


# ---------------------------------------------------------------------------
# The walk: one step consumes a node (or a group of nodes) after the current value.


class _Walk:
    def __init__(self, g: _Graph, x: str, in_shape: tuple[int, ...], target: str):
        self.g = g
        self.x = x
        self.in_shape = in_shape
        self.shape = in_shape  # of one sample, after the layers so far
        self.target = target
        self.live = g.live(target)
        self.layers: list[_Layer] = []
        self.pre: list[tuple[str, np.ndarray, Any]] = []  # (op, constant, node)
        self.tail: list[str] = []  # dropped final nodes: "softmax", "sigmoid", "pair"
        self.notes: list[str] = []
        self.values: list[str] = []  # the value after each layer, for the final comparison

    def live_consumers(self, v: str) -> list:
        return [n for n in self.g.consumers.get(v, []) if id(n) in self.live]

    def other_input(self, node, x: str) -> tuple[int, np.ndarray | None]:
        """(position, constant) of the input of `node` that is not `x`."""
        for i, name in enumerate(node.input):
            if name != x:
                return i, self.g.const(name)
        return -1, None

    def run(self) -> None:
        while self.x != self.target:
            users = self.live_consumers(self.x)
            if not users:
                raise DataError(f"{self.g.source}: the output does not depend on the input")
            if len(users) == 1:
                self.step(users[0])
            else:
                self.region(users)

    # -- one node -------------------------------------------------------------

    def advance(self, node) -> None:
        self.x = node.output[0]

    def add(self, layer: _Layer, value: str) -> None:
        self.layers.append(layer)
        self.values.append(value)
        self.x = value

    def step(self, node) -> None:
        g, op = self.g, node.op_type
        if node.domain not in ("", "ai.onnx"):
            if node.domain == "ai.onnx.ml" and op == "Scaler":
                return self.scaler(node)
            g.refuse(node, f"op {node.domain}.{op} has no fcspec equivalent")
        a = _attrs(node)
        if op in ("Identity",) or (op == "Cast" and a.get("to") in (1, 11)):
            return self.advance(node)
        if op == "Dropout":
            ratio = a.get("ratio", 0.5)
            if len(node.input) > 1 and node.input[1]:
                c = g.const(node.input[1])
                ratio = 0.5 if c is None else float(c)
            return self.add(
                _Layer("dropout", {"p": float(ratio)}, out_shape=self.shape), node.output[0]
            )
        if op == "Gemm":
            return self.gemm(node, a)
        if op == "MatMul":
            return self.matmul(node)
        if op in ("Add", "Sub", "Mul", "Div"):
            return self.arith(node)
        if op == "Flatten":
            if a.get("axis", 1) != 1:
                g.refuse(node, f"Flatten(axis = {a.get('axis')}) keeps more than the batch axis")
            return self.flatten(node)
        if op == "Reshape":
            shape = g.const(node.input[1])
            n = math.prod(self.shape)
            if shape is None or shape.ndim != 1 or len(shape) != 2 or shape[1] not in (n, -1):
                g.refuse(node, "only a Reshape to [batch, features] (a flatten) is supported")
            if shape[0] not in (-1, 0) and shape[1] == -1:
                g.refuse(node, "only a Reshape to [batch, features] (a flatten) is supported")
            return self.flatten(node)
        if op in _SINGLE_ACTIVATIONS:
            return self.activation(node, a)
        g.refuse(node)

    def flatten(self, node) -> None:
        if len(self.shape) > 1:
            self.shape = (math.prod(self.shape),)
            return self.add(_Layer("flatten", out_shape=self.shape), node.output[0])
        self.advance(node)

    def _needs_flat(self, node) -> int:
        if len(self.shape) != 1:
            self.g.refuse(
                node, f"a linear layer needs a flat sample, this one has shape {list(self.shape)}"
            )
        return self.shape[0]

    def gemm(self, node, a: dict[str, Any]) -> None:
        g = self.g
        n_in = self._needs_flat(node)
        if node.input[0] != self.x or a.get("transA", 0):
            g.refuse(node, "only Gemm(x, W, b) with x as its first, untransposed input")
        w = g.const(node.input[1])
        if w is None:
            g.refuse(node, "its weight is not a constant")
        w = np.asarray(w, np.float32)
        w = w if a.get("transB", 0) else w.T  # -> [out, in]
        if w.ndim != 2 or w.shape[1] != n_in:
            g.refuse(node, f"weight of shape {list(w.shape)} does not take {n_in} inputs")
        alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
        if alpha != 1.0:
            w = (w * np.float32(alpha)).astype(np.float32)
        b = None
        if len(node.input) > 2 and node.input[2]:
            b = g.const(node.input[2])
            if b is None:
                g.refuse(node, "its bias is not a constant")
            b = self._bias(node, b, w.shape[0])
            if beta != 1.0:
                b = (b * np.float32(beta)).astype(np.float32)
        self.linear(node, w, b)

    def matmul(self, node) -> None:
        g = self.g
        n_in = self._needs_flat(node)
        if node.input[0] != self.x:
            g.refuse(node, "only MatMul(x, W) with the weight second")
        w = g.const(node.input[1])
        if w is None or w.ndim != 2 or w.shape[0] != n_in:
            g.refuse(node, f"needs a constant weight of shape [{n_in}, units]")
        self.linear(node, np.asarray(w, np.float32).T.copy(), None)

    def _bias(self, node, b: np.ndarray, units: int) -> np.ndarray:
        b = np.asarray(b, np.float32)
        if b.size == 1:
            return np.full(units, b.reshape(()), np.float32)
        if b.size != units or (b.ndim == 2 and b.shape[0] != 1) or b.ndim > 2:
            self.g.refuse(node, f"bias of shape {list(b.shape)} for {units} units")
        return b.reshape(units).astype(np.float32)

    def linear(self, node, w: np.ndarray, b: np.ndarray | None) -> None:
        self.shape = (int(w.shape[0]),)
        layer = _Layer(
            "linear",
            {"units": int(w.shape[0])},
            name=_param_layer_name(node.input[1]),
            weight=np.ascontiguousarray(w, np.float32),
            bias=b,
            out_shape=self.shape,
        )
        self.add(layer, node.output[0])

    def arith(self, node) -> None:
        g, op = self.g, node.op_type
        pos, c = self.other_input(node, self.x)
        if c is None:
            g.refuse(node, f"{op} of two computed values (only constants are supported)")
        last = self.layers[-1] if self.layers else None
        # MatMul + Add: the bias of the linear layer just read.
        if op == "Add" and last is not None and last.op == "linear" and last.bias is None:
            last.bias = self._bias(node, c, last.weight.shape[0])
            self.values[-1] = node.output[0]
            return self.advance(node)
        if any(l.op == "linear" for l in self.layers):
            if self._scaling(node, self.x):  # the start of an expansion: softplus' x * beta
                return self.region([node])
            g.refuse(node, f"{op} by a constant after the first layer has no fcspec equivalent")
        if op in ("Sub", "Div") and pos == 0:
            g.refuse(node, f"{op} of a constant by the input has no fcspec equivalent")
        self.pre.append((op, np.asarray(c, np.float64), node))
        self.advance(node)

    def scaler(self, node) -> None:
        # skl2onnx's StandardScaler: y = (x - offset) * scale
        a = _attrs(node)
        self.pre.append(("Sub", np.asarray(a.get("offset", [0.0]), np.float64), node))
        self.pre.append(("Mul", np.asarray(a.get("scale", [1.0]), np.float64), node))
        self.advance(node)

    def activation(self, node, a: dict[str, Any]) -> None:
        g, op = self.g, node.op_type
        name = _SINGLE_ACTIVATIONS[op]
        attrs: dict[str, Any] = {}
        if op == "LeakyRelu":
            attrs["negative_slope"] = float(a.get("alpha", 0.01))
        elif op == "Elu":
            attrs["alpha"] = float(a.get("alpha", 1.0))
        elif op == "Gelu":
            attrs["approximate"] = a.get("approximate", b"none")
            if isinstance(attrs["approximate"], bytes):
                attrs["approximate"] = attrs["approximate"].decode()
        elif op == "Softplus":
            attrs = {"beta": 1.0, "threshold": 20.0}  # see ops._softplus_onnx: the same function
        elif op == "Selu":
            for k, want in (
                ("alpha", 1.67326319217681884765625),
                ("gamma", 1.05070102214813232421875),
            ):
                if not math.isclose(float(a.get(k, want)), want, rel_tol=1e-6):
                    g.refuse(
                        node, f"Selu with {k} = {a[k]} (fcspec's selu has PyTorch's constants)"
                    )
        elif op in ("Softmax", "LogSoftmax"):
            axis = a.get("axis", -1)
            if axis not in (-1, len(self.shape)):
                g.refuse(node, f"{op}(axis = {axis}) is not over the last axis")
        self.add(_Layer(name, attrs, out_shape=self.shape), node.output[0])

    # -- a group of nodes: an activation written out --------------------------

    def region(self, users) -> None:
        """The nodes between the current value and the next value every path passes through,
        read as one activation (gelu's Erf form, silu's x * Sigmoid(x), ...)."""
        g = self.g
        if self._is_pair(users):
            return self.binary_pair(users)
        inside: list = []
        made = {self.x}
        while True:
            open_ = [
                v
                for v in made
                if v == self.target or any(c not in inside for c in self.live_consumers(v))
            ]
            if len(open_) == 1 and open_[0] != self.x:
                break
            pending = [c for v in open_ for c in self.live_consumers(v) if c not in inside]
            ready = [n for n in pending if all(i in made or i in g.consts for i in n.input if i)]
            if not ready or len(inside) >= _MAX_REGION:
                g.refuse(pending[0], "these nodes do not form an activation fcspec has")
            n = ready[0]
            if n.op_type not in _ELEMENTWISE or n.domain not in ("", "ai.onnx"):
                g.refuse(n)
            inside.append(n)
            made.update(n.output)
        out = open_[0]
        # Trailing scalings belong to the expansion (torch writes gelu's 0.5 last), and so
        # does the Softplus between softplus' Mul and Div by beta.
        while out != self.target:
            nxt = self.live_consumers(out)
            if len(nxt) != 1 or not (
                self._scaling(nxt[0], out)
                or (nxt[0].op_type == "Softplus" and [n.op_type for n in inside] == ["Mul"])
            ):
                break
            inside.append(nxt[0])
            out = nxt[0].output[0]
        self.expansion(inside, out)

    def _scaling(self, node, x: str) -> bool:
        """Is `node` x + c, x - c, x * c or x / c with a scalar constant c?"""
        if node.op_type not in ("Add", "Sub", "Mul", "Div") or node.domain not in ("", "ai.onnx"):
            return False
        pos, c = self.other_input(node, x)
        return c is not None and np.size(c) == 1 and (pos == 1 or node.op_type in ("Add", "Mul"))

    def _is_pair(self, users) -> bool:
        # skl2onnx's binary classifier: p -> Concat(Sub(1, p), p): the class pair.
        ops = sorted(n.op_type for n in users)
        return ops == ["Concat", "Sub"] and _last_op(self.layers) == "sigmoid"

    def binary_pair(self, users) -> None:
        concat = next(n for n in users if n.op_type == "Concat")
        if concat.output[0] != self.target:
            self.g.refuse(concat, "a [1 - p, p] pair before the end of the model")
        self.tail.append("pair")
        self.x = self.target

    def expansion(self, nodes, out: str) -> None:
        g = self.g
        types = {n.op_type for n in nodes}
        if types <= {"Sigmoid", "Mul"} and len(nodes) == 2:
            op, attrs = "silu", {}
        elif "Erf" in types:
            op, attrs = "gelu", {"approximate": "none"}
        elif "Tanh" in types:
            op, attrs = "gelu", {"approximate": "tanh"}
        elif "Softplus" in types:
            beta = next((c for n in nodes if n.op_type == "Mul" and (c := _scalar(g, n))), 1.0)
            threshold = next(
                (c for n in nodes if n.op_type == "Greater" and (c := _scalar(g, n))), 20.0
            )
            op, attrs = "softplus", {"beta": beta, "threshold": threshold}
        else:
            kinds = ", ".join(n.op_type for n in nodes)
            g.refuse(nodes[0], f"the nodes {kinds} do not form an activation fcspec has")
        _confirm(g, nodes, self.x, out, op, attrs)
        self.add(_Layer(op, attrs, out_shape=self.shape), out)


def _scalar(g: _Graph, node) -> float | None:
    for i in node.input:
        c = g.const(i)
        if c is not None and np.size(c) == 1:
            return float(np.asarray(c).reshape(()))
    return None


def _confirm(g: _Graph, nodes, x: str, out: str, op: str, attrs: dict) -> None:
    """Check numerically that `nodes` (from x to out) compute fcspec's `op(attrs)`."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from . import ir, ops

    used = {i for n in nodes for i in n.input if i in g.consts}
    graph = helper.make_graph(
        list(nodes),
        "region",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.asarray(g.consts[k]).astype(np.float32), k) for k in used
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    probe = np.linspace(-8, 8, 161, dtype=np.float32).reshape(1, -1)
    try:
        got = ReferenceEvaluator(model).run(None, {x: probe})[0]
    except Exception as e:  # noqa: BLE001 - the reference's own errors: not an activation
        g.refuse(nodes[0], f"cannot evaluate these nodes as an activation ({e})")
    layer = ir.Layer("probe", op, attrs, (probe.shape[1],), (probe.shape[1],), {})
    want = ops.OPS[op].forward(ops.Context(layer), probe.copy())
    err = np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)))
    if not err <= 1e-5:
        g.refuse(
            nodes[0],
            f"the nodes {', '.join(n.op_type for n in nodes)} look like {op} but compute "
            f"something else (largest difference {err:.3g})",
        )


def _param_layer_name(initializer: str) -> str | None:
    """`fc1.weight` -> `fc1`, `encoder.0.weight` -> `encoder_0`; None when no name fits."""
    base = re.sub(r"\.(weight|bias)$", "", initializer)
    base = re.sub(r"[^A-Za-z0-9_]", "_", base).strip("_")
    if not base or not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", base):
        return None
    if base in ("coefficient", "weight", "W", "B") or re.match(r"^(coefficient|onnx__|val_)", base):
        return None  # exporters' generic names: fcspec's generated ones read better
    return base


# ---------------------------------------------------------------------------
# Preprocessing: the Div / Sub / Div of fcspec's data section, from the nodes read.


def _preprocess(w: _Walk, normalize: str = "imported"):
    """`normalize` only names where the statistics came from (fcspec's metadata says)."""
    from .data import Preprocess

    if not w.pre:
        return None
    shape = w.in_shape
    scale, shift, divisor = 1.0, np.zeros(shape), np.ones(shape)
    stage = 0  # 0: scale next, 1: shift next, 2: divisor next, 3: done
    for op, c, node in w.pre:
        c = _broadcast(w.g, node, c, shape)
        if op in ("Div", "Mul"):
            value = c if op == "Div" else 1.0 / c
            if stage == 0 and np.all(value == value.flat[0]):
                scale, stage = float(value.flat[0]), 1
            elif stage <= 2:
                divisor, stage = value, 3
            else:
                w.g.refuse(node, "a second division after the normalization")
        else:
            if stage > 1:
                w.g.refuse(node, "a shift after the division has no fcspec equivalent")
            shift, stage = (c if op == "Sub" else -c), 2
    if any(op == "Mul" for op, _, _ in w.pre):
        w.notes.append("Mul by c is read as Div by 1/c (float32 round-off)")
    pre = Preprocess(
        np.float32(scale),
        np.asarray(shift, np.float32).reshape(shape),
        np.asarray(divisor, np.float32).reshape(shape),
        normalize,
    )
    if not np.all(np.isfinite(pre.divisor)) or np.any(pre.divisor == 0):
        raise DataError(f"{w.g.source}: the input preprocessing divides by zero")
    return pre


def _broadcast(g: _Graph, node, c: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    n = math.prod(shape)
    c = np.asarray(c, np.float64)
    if c.size == 1:
        return np.full(shape, c.reshape(()))
    if c.size == n:  # [n], [1, n], [1, *shape], [*shape]: per feature, in Flatten's order
        return c.reshape(shape)
    try:
        return np.broadcast_to(c.reshape(c.shape[1:] if c.ndim > len(shape) else c.shape), shape)
    except ValueError:
        g.refuse(node, f"constant of shape {list(c.shape)} does not fit samples of {list(shape)}")
    raise AssertionError


# ---------------------------------------------------------------------------
# From the layers to a spec.


def _task(w: _Walk, meta: dict[str, str], task: str | None, skl_classifier: bool) -> str:
    if task is not None:
        if task not in TASKS:
            raise FcspecError(f"unknown task {task!r}", hint=f"one of {', '.join(TASKS)}")
        return task
    last = _last_op(w.layers)
    if meta.get("task") in TASKS:
        return meta["task"]
    if last in ("softmax", "log_softmax") or skl_classifier:
        return "binary" if w.shape == (1,) or "pair" in w.tail else "classification"
    if last == "sigmoid" and w.shape == (1,):
        return "binary"
    if w.shape == (1,):
        w.notes.append(
            "one output and no final activation: imported as regression (--task to change)"
        )
        return "regression"
    w.notes.append(
        f"{w.shape[0]} outputs and no final activation: imported as a classifier on logits "
        "(pass --task regression if they are values)"
    )
    return "classification"


def _last_op(layers: list[_Layer]) -> str | None:
    real = [l.op for l in layers if l.op != "dropout"]
    return real[-1] if real else None


def _drop_final(w: _Walk, task: str) -> None:
    """A classifier's final Softmax is what `export --probabilities` adds: the spec keeps
    the logits, so its loss is cross_entropy, as in training.  (A binary model's final
    Sigmoid stays: bce takes probabilities.)"""
    last = _last_op(w.layers)
    if task == "classification" and last == "softmax":
        i = max(i for i, l in enumerate(w.layers) if l.op == last)
        if all(l.op == "dropout" for l in w.layers[i + 1 :]):
            del w.layers[i:]
            del w.values[i:]
            w.tail.insert(0, last)
            w.notes.append(
                f"the model ends in {last.capitalize()}: the spec keeps the logits "
                "(export with --probabilities to get it back)"
            )


def _loss(task: str, last: str | None) -> str:
    if task == "classification":
        return "nll" if last == "log_softmax" else "cross_entropy"
    if task == "binary":
        return "bce" if last == "sigmoid" else "bce_with_logits"
    return "mse"


def _num(v: float) -> str:
    # ONNX attributes are float32: print the shortest text that reads back as the same float32.
    r = str(np.float32(v)) if float(np.float32(v)) == float(v) else repr(float(v))
    return r[:-2] if r.endswith(".0") else r


def _layer_text(l: _Layer) -> str:
    if l.op == "linear":
        return f"linear({l.attrs['units']}" + (", bias = false)" if l.bias is None else ")")
    if l.op == "dropout":
        return f"dropout({_num(l.attrs['p'])})"
    if l.op == "leaky_relu":
        return f"leaky_relu({_num(l.attrs['negative_slope'])})"
    if l.op == "elu":
        return f"elu({_num(l.attrs['alpha'])})" if l.attrs["alpha"] != 1.0 else "elu"
    if l.op == "gelu":
        return 'gelu("tanh")' if l.attrs["approximate"] == "tanh" else "gelu"
    if l.op == "softplus":
        b, t = l.attrs["beta"], l.attrs["threshold"]
        args = ([_num(b)] if b != 1.0 else []) + ([f"threshold = {_num(t)}"] if t != 20.0 else [])
        return f"softplus({', '.join(args)})" if args else "softplus"
    return l.op


def _name_layers(layers: list[_Layer]) -> None:
    seen: set[str] = set()
    for l in layers:
        if l.name is not None and (l.name in seen or l.op != "linear"):
            l.name = None
        if l.name is not None:
            seen.add(l.name)


def _identifier(text: str, fallback: str = "Imported") -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_")
    if not s:
        return fallback
    return s if re.match(r"^[A-Za-z]", s) else f"Model_{s}"


def _spec_text(
    name: str,
    w: _Walk,
    task: str,
    source: str,
    producer: str,
    opset: int,
    pre,
    data: str | None,
    target: str | None,
) -> str:
    lines = [f"# Imported by fcspec {__version__} from {source} ({producer}, opset {opset})."]
    lines += [f"# Note: {n}." for n in w.notes]
    lines += ["", f"model {name} {{"]
    lines.append(f"    input [{', '.join(str(d) for d in w.in_shape)}]")
    for l in w.layers:
        lines.append(f"    {l.name} = {_layer_text(l)}" if l.name else f"    {_layer_text(l)}")
    lines.append("}")
    lines.append("")
    lines.append(f"loss      {_loss(task, _last_op(w.layers))}")
    lines.append(
        "optimizer adam(lr = 1e-3)   # for fine-tuning: ONNX does not record how the model was trained"
    )
    pre_line = (
        '    statistics = "preprocess.npz"   # the model\'s own input preprocessing, as imported'
    )
    if data is not None:
        reader = f'csv("{data}", target = "{target}")' if target is not None else f'npz("{data}")'
        lines += ["", "data {", f"    train = {reader}", "    validate = 0.1"]
        if pre is not None:
            lines.append(pre_line)
        lines.append("}")
    else:
        lines += [
            "",
            "# To evaluate (fcspec eval) or fine-tune (fcspec run --init weights.npz), add your data:",
            "# data {",
            '#     train = npz("train.npz")',
            "#     validate = 0.1",
        ]
        if pre is not None:
            lines.append("# " + pre_line)
        lines.append("# }")
    return "\n".join(lines) + "\n"


def import_model(
    model,
    *,
    source: str = "<model>",
    name: str | None = None,
    task: str | None = None,
    output: str | None = None,
    data: str | None = None,
    target: str | None = None,
) -> Imported:
    """Read `model` (a ModelProto) into a spec's text, its weights and preprocessing.

    Raises `ImportRefused` naming the first node fcspec cannot express.  The
    result is confirmed: onnxruntime on `model` and the interpreter on the spec
    agree within `runtime.TOLERANCE`.
    """
    from . import check

    g = _Graph(model, source)
    target_value, notes = _choose_output(model, g, output)
    x, in_shape, in_notes = _input(model, g)
    w = _Walk(g, x, in_shape, target_value)
    w.notes += notes + in_notes
    w.run()
    meta = {p.key: p.value for p in model.metadata_props}
    skl = any(
        n.op_type in ("ZipMap", "ArgMax") for n in g.nodes
    ) and model.producer_name.startswith("skl2onnx")
    task = _task(w, meta, task, skl)
    _drop_final(w, task)
    if "pair" in w.tail:
        w.notes.append(
            "skl2onnx's [1 - p, p] pair is left out: the output is p, the probability of class 1"
        )
    if not any(l.op == "linear" for l in w.layers):
        raise ImportRefused(f"{source}: the model has no Gemm or MatMul layer to import")
    _name_layers(w.layers)
    try:
        normalize = str(json.loads(meta.get("preprocess", "{}")).get("normalize", "imported"))
    except (ValueError, AttributeError):
        normalize = "imported"
    pre = _preprocess(w, normalize)
    name = _identifier(name or meta.get("spec_name") or Path(source).stem)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    producer = (
        " ".join(p for p in (model.producer_name, model.producer_version) if p)
        or "unknown producer"
    )
    text = _spec_text(name, w, task, Path(source).name, producer, opset, pre, data, target)
    spec = check.compile_source(text, f"<import of {source}>")
    params = _params(spec, w.layers)
    _confirm_import(model, spec, params, pre, w, source)
    return Imported(name, text, params, pre, w.notes, task)


def _params(spec, layers: list[_Layer]) -> dict[str, np.ndarray]:
    """Weights under the names the checker gave the linear layers, in order."""
    names = [l.name for l in spec.model.layers if l.op == "linear"]
    read = [l for l in layers if l.op == "linear"]
    params = {}
    for n, l in zip(names, read, strict=True):
        params[f"{n}.weight"] = l.weight
        if l.bias is not None:
            params[f"{n}.bias"] = l.bias
    return params


def _confirm_import(model, spec, params, pre, w: _Walk, source: str) -> None:
    """onnxruntime on the original model versus the interpreter on the imported spec."""
    from onnx import TensorProto, helper

    from . import interpreter, runtime

    m = type(model)()
    m.CopyFrom(model)
    # Compare at the last value the spec computes (before a dropped Softmax, pair, ...).
    value = w.values[len(w.layers) - 1]
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info(value, TensorProto.FLOAT, None))
    sess = runtime.session(m.SerializeToString())
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, *w.in_shape)).astype(np.float32)
    raw = z if pre is None else ((z * pre.divisor + pre.shift) * pre.scale).astype(np.float32)
    inp = sess.get_inputs()[0]
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None
    feed_dtype = np.float64 if inp.type == "tensor(double)" else np.float32
    if fixed:
        got = np.concatenate(
            [
                sess.run(None, {inp.name: raw[i : i + fixed].astype(feed_dtype)})[0]
                for i in range(0, 16, fixed)
                if i + fixed <= 16
            ]
        )
        raw = raw[: len(got)]
    else:
        got = sess.run(None, {inp.name: raw.astype(feed_dtype)})[0]
    x = raw if pre is None else pre.apply(raw)
    want = interpreter.Network(spec.model, params).predict(x)
    got = np.asarray(got, np.float32).reshape(want.shape)
    err = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want)), initial=0.0))
    if not err <= runtime.TOLERANCE:
        raise ImportRefused(
            f"{source}: the imported spec computes something else than the model "
            f"(largest difference {err:.3g}, tolerance {runtime.TOLERANCE:g})",
            hint="please report this model: fcspec misread one of its nodes",
        )


def write(result: Imported, out_dir: str | os.PathLike) -> dict[str, Path]:
    """DIR/<name>.fc, DIR/weights.npz and (with preprocessing) DIR/preprocess.npz, atomically."""
    from .io import atomic_write_text, save_npz

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"spec": out / f"{result.name}.fc", "weights": out / "weights.npz"}
        save_npz(paths["weights"], result.params)
        if result.preprocess is not None:
            paths["preprocess"] = out / "preprocess.npz"
            result.preprocess.save(paths["preprocess"])
        atomic_write_text(paths["spec"], result.text)
    except OSError as e:
        raise FcspecError(f"cannot write to {out}: {e.strerror or e}") from None
    return paths


def import_file(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    **kwargs: Any,
) -> tuple[Imported, dict[str, Path]]:
    """`fcspec import`: read `path`, write the spec, weights and preprocessing into `out_dir`."""
    result = import_model(read_model(path), source=str(path), **kwargs)
    return result, write(result, out_dir)


def summary_json(result: Imported) -> str:  # for scripts: what was read
    return json.dumps({"name": result.name, "task": result.task, "notes": result.notes})
