"""The op table: every backward against central finite differences, shapes, buffers.

Ops run in the dtype of their input, so the checks run in float64 where a
finite difference is accurate to ~1e-9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import numerical_gradient
from fcspec import catalog, ir
from fcspec.ops import OPS, Context, erf

ARCH_OPS = set(catalog.LAYERS)  # every layer of the catalog has its row and its cases


def make_layer(op, attrs=None, in_shape=(5,), units=None, bias=True):
    """A hand-built IR layer (the checker resolves these in real use)."""
    attrs = dict(attrs or {})
    params = {}
    out_shape = in_shape
    if op == "linear":
        attrs.setdefault("units", units)
        attrs.setdefault("bias", bias)
        attrs.setdefault("init", "default")
        params = {"weight": (units, in_shape[0])}
        if bias:
            params["bias"] = (units,)
        out_shape = (units,)
    elif op == "flatten":
        out_shape = (math.prod(in_shape),)
    return ir.Layer(f"{op}_1", op, attrs, tuple(in_shape), tuple(out_shape), params)


# (op, attrs, sample shape, extra): every row of OPS appears, with each option.
CASES = [
    ("linear", {}, (5,), {"units": 4}),
    ("linear", {}, (5,), {"units": 3, "bias": False}),
    ("flatten", {}, (2, 3), {}),
    ("dropout", {"p": 0.4}, (6,), {}),
    ("dropout", {"p": 0.0}, (6,), {}),
    ("relu", {}, (6,), {}),
    ("relu", {}, (2, 3), {}),
    ("leaky_relu", {"negative_slope": 0.01}, (6,), {}),
    ("leaky_relu", {"negative_slope": 0.3}, (6,), {}),
    ("elu", {"alpha": 1.0}, (6,), {}),
    ("elu", {"alpha": 0.5}, (6,), {}),
    ("selu", {}, (6,), {}),
    ("sigmoid", {}, (6,), {}),
    ("tanh", {}, (6,), {}),
    ("gelu", {"approximate": "none"}, (6,), {}),
    ("gelu", {"approximate": "tanh"}, (6,), {}),
    ("silu", {}, (6,), {}),
    ("softplus", {"beta": 1.0, "threshold": 20.0}, (6,), {}),
    ("softplus", {"beta": 2.0, "threshold": 1.0}, (6,), {}),  # both branches used
    ("softmax", {}, (5,), {}),
    ("softmax", {}, (2, 4), {}),  # last axis of a 2-D sample
    ("log_softmax", {}, (5,), {}),
]


def case_id(case):
    op, attrs, shape, extra = case
    return f"{op}-{'-'.join(f'{k}={v}' for k, v in {**attrs, **extra}.items())}-{shape}"


def test_every_architecture_op_has_a_row():
    assert set(OPS) == ARCH_OPS
    assert {c[0] for c in CASES} == ARCH_OPS


def _setup(case, dtype=np.float64, n=4, seed=0):
    op, attrs, shape, extra = case
    layer = make_layer(op, attrs, shape, **extra)
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in layer.params.items()}
    grads = {k: np.full(s, np.nan, dtype) for k, s in layer.params.items()}
    x = rng.standard_normal((n,) + shape).astype(dtype) * 2
    x += np.where(x >= 0, 0.01, -0.01)  # keep away from the kinks of relu & co at 0
    return layer, params, grads, x


def _run(layer, params, x, training=False, seed=123):
    """Forward with a fresh context; dropout's mask is the same for the same seed."""
    c = Context(layer, params)
    c.training = training
    c.rng = np.random.default_rng(seed)
    return OPS[layer.op].forward(c, x).copy()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_matches_finite_differences(case):
    layer, params, grads, x = _setup(case)
    op = OPS[layer.op]
    training = layer.op == "dropout"
    c = Context(layer, params, grads)
    c.training, c.rng = training, np.random.default_rng(123)
    y = op.forward(c, x)
    assert y.shape == (x.shape[0],) + layer.out_shape
    r = np.random.default_rng(1).standard_normal(y.shape)  # loss = sum(r * y)
    gx = op.backward(c, x, y, r, True)
    assert gx.shape == x.shape

    def loss(x_, params_):
        return float((r * _run(layer, params_, x_, training)).sum())

    num = numerical_gradient(lambda: loss(x, params), x)
    np.testing.assert_allclose(gx, num, rtol=1e-5, atol=2e-6)
    for k, p in params.items():
        num_p = numerical_gradient(lambda: loss(x, params), p)
        np.testing.assert_allclose(grads[k], num_p, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float32_in_float32_out_and_buffers_reused(case):
    layer, params, grads, x = _setup(case, dtype=np.float32)
    op = OPS[layer.op]
    c = Context(layer, params, grads)
    y1 = op.forward(c, x)
    assert y1.dtype == np.float32
    assert y1.shape == (x.shape[0],) + layer.out_shape
    g = np.ones_like(y1)
    gx1 = op.backward(c, x, y1, g, True)
    assert gx1.dtype == np.float32 and gx1.shape == x.shape
    y2 = op.forward(c, x)  # same batch size: the same output buffer, no new allocation
    gx2 = op.backward(c, x, y2, g, True)
    assert y2 is y1 or np.shares_memory(y2, x)
    assert gx2 is gx1 or np.shares_memory(gx2, g)
    for k in grads:
        assert np.isfinite(grads[k]).all()  # overwritten, the NaN sentinels are gone


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_backward_without_input_gradient(case):
    layer, params, grads, x = _setup(case)
    op = OPS[layer.op]
    c = Context(layer, params, grads)
    y = op.forward(c, x)
    assert op.backward(c, x, y, np.ones_like(y), False) is None
    for k in grads:  # parameter gradients are still written
        assert np.isfinite(grads[k]).all()


def test_dropout_is_inverted_and_identity_at_inference():
    layer = make_layer("dropout", {"p": 0.25}, (1000,))
    x = np.ones((20, 1000), np.float32)
    c = Context(layer)
    assert OPS["dropout"].forward(c, x) is x  # not training
    c.training, c.rng = True, np.random.default_rng(0)
    y = OPS["dropout"].forward(c, x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert abs(kept.mean() - 0.75) < 0.01  # 20000 draws: ~0.003 standard deviation
    assert abs(y.mean() - 1.0) < 0.02  # inverted: expectation preserved


def test_activations_match_closed_forms():
    x = np.linspace(-30, 30, 601)
    ref = {
        "relu": np.maximum(x, 0),
        "sigmoid": 1 / (1 + np.exp(-x)),
        "tanh": np.tanh(x),
        "silu": x / (1 + np.exp(-x)),
        "elu": np.where(x > 0, x, np.expm1(x)),
        "selu": 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
        "softplus": np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))),
        "gelu": np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]),
    }
    attrs = {"elu": {"alpha": 1.0}, "softplus": {"beta": 1.0, "threshold": 20.0},
             "gelu": {"approximate": "none"}}  # fmt: skip
    for name, want in ref.items():
        layer = make_layer(name, attrs.get(name), (601,))
        got = OPS[name].forward(Context(layer), x[None, :])[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=3e-7 * np.abs(x).max(), err_msg=name)


def test_sigmoid_and_softplus_do_not_warn_on_extremes():
    x = np.array([[-1000.0, -100, 0, 100, 1000]], np.float32)
    with np.errstate(over="raise", divide="raise", invalid="raise"):  # numpy's defaults warn
        for name, attrs in [("sigmoid", {}), ("silu", {}),
                            ("softplus", {"beta": 1.0, "threshold": 20.0})]:  # fmt: skip
            layer = make_layer(name, attrs, (5,))
            c = Context(layer)
            y = OPS[name].forward(c, x)
            assert np.isfinite(y).all(), name
            assert np.isfinite(OPS[name].backward(c, x, y, np.ones_like(y), True)).all()


def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log():
    x = np.random.default_rng(0).standard_normal((7, 10)).astype(np.float32) * 30
    p = OPS["softmax"].forward(Context(make_layer("softmax", {}, (10,))), x)
    lp = OPS["log_softmax"].forward(Context(make_layer("log_softmax", {}, (10,))), x)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.exp(lp), p, rtol=1e-5, atol=1e-30)


def test_erf_within_abramowitz_stegun_bound():
    x = np.linspace(-6, 6, 2001)
    want = np.array([math.erf(v) for v in x])
    assert np.abs(erf(x) - want).max() < 1.5e-7


class _Recorder:
    """A minimal builder of the docs/architecture.md protocol that records nodes."""

    def __init__(self, opset):
        self.opset = opset
        self.nodes = []
        self.consts = []

    def node(self, op_type, inputs, **attrs):
        name = f"v{len(self.nodes)}"
        self.nodes.append((op_type, list(inputs), attrs))
        return name

    def param(self, layer, key):
        return f"{layer.name}.{key}"

    def const(self, array):
        self.consts.append(np.asarray(array))
        return f"c{len(self.consts) - 1}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("opset", [17, 20])
def test_onnx_emitters_follow_the_builder_protocol(case, opset):
    layer, *_ = _setup(case)
    g = _Recorder(opset)
    out = OPS[layer.op].onnx(g, layer, "x")
    assert isinstance(out, str)
    if layer.op == "dropout":
        assert out == "x" and not g.nodes
        return
    assert g.nodes and out == f"v{len(g.nodes) - 1}"
    for c in g.consts:
        assert c.dtype == np.float32
    kinds = [n[0] for n in g.nodes]
    if layer.op == "linear":
        assert g.nodes == [("Gemm", ["x", *(f"{layer.name}.{k}" for k in layer.params)],
                            {"transB": 1})]  # fmt: skip
    if layer.op == "gelu":
        assert ("Gelu" in kinds) == (opset >= 20)
        assert ("Erf" in kinds) == (opset < 20 and layer.attrs["approximate"] == "none")
    if layer.op == "softplus":
        assert kinds.count("Softplus") == 1
        assert ("Div" in kinds) == (layer.attrs["beta"] != 1)


def test_linear_weight_gradient_at_batch_1_is_the_matmul_bit_for_bit():
    """Batch 1 takes a broadcast multiply instead of a K = 1 matmul: the same numbers, to the bit."""

    layer = ir.Layer(
        "fc",
        "linear",
        {"units": 128, "bias": True, "init": "default"},
        (784,),
        (128,),
        {"weight": (128, 784), "bias": (128,)},
    )
    rng = np.random.default_rng(0)
    p = {
        "weight": rng.standard_normal((128, 784)).astype(np.float32),
        "bias": rng.standard_normal(128).astype(np.float32),
    }
    g = {"weight": np.empty((128, 784), np.float32), "bias": np.empty(128, np.float32)}
    c = Context(layer, p, g)
    x = rng.standard_normal((1, 784)).astype(np.float32)
    gy = rng.standard_normal((1, 128)).astype(np.float32)
    OPS["linear"].backward(c, x, None, gy, False)
    np.testing.assert_array_equal(g["weight"], np.matmul(gy.T, x))
    np.testing.assert_array_equal(g["bias"], gy[0])
