"""Losses and regularizers: gradients against central finite differences (float64),
values against direct NumPy transcriptions of the formulas, and the error cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import numerical_gradient
from fcspec import catalog, ir
from fcspec.errors import DataError
from fcspec.interpreter import Network
from fcspec.losses import make_loss, regularization

DEFAULTS = {
    "cross_entropy": {"label_smoothing": 0.0, "weight": None, "reduction": "mean"},
    "nll": {"weight": None, "reduction": "mean"},
    "mse": {"reduction": "mean"},
    "mae": {"reduction": "mean"},
    "huber": {"delta": 1.0, "reduction": "mean"},
    "bce": {"reduction": "mean"},
    "bce_with_logits": {"reduction": "mean"},
    "kl_div": {"reduction": "mean"},
}
W4 = (0.5, 2.0, 1.0, 0.25)

CASES = [
    ("cross_entropy", {}),
    ("cross_entropy", {"reduction": "sum"}),
    ("cross_entropy", {"label_smoothing": 0.1}),
    ("cross_entropy", {"weight": W4}),
    ("cross_entropy", {"weight": W4, "label_smoothing": 0.2}),
    ("cross_entropy", {"weight": W4, "label_smoothing": 0.2, "reduction": "sum"}),
    ("nll", {}),
    ("nll", {"reduction": "sum"}),
    ("nll", {"weight": W4}),
    ("mse", {}),
    ("mse", {"reduction": "sum"}),
    ("mae", {}),
    ("mae", {"reduction": "sum"}),
    ("huber", {}),
    ("huber", {"delta": 0.3}),
    ("huber", {"delta": 0.3, "reduction": "sum"}),
    ("bce", {}),
    ("bce", {"reduction": "sum"}),
    ("bce_with_logits", {}),
    ("bce_with_logits", {"reduction": "sum"}),
    ("kl_div", {}),
    ("kl_div", {"reduction": "sum"}),
]


def loss_ir(kind, **options):
    return ir.Loss(kind, {**DEFAULTS[kind], **options})


def case_id(case):
    kind, opts = case
    return "-".join([kind] + [f"{k}={v}" for k, v in opts.items()])


def log_softmax(x):
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def sample(kind, n=6, c=4, seed=0, dtype=np.float64):
    """A model output and a target in the formats of docs/architecture.md."""
    rng = np.random.default_rng(seed)
    if kind in ("cross_entropy", "nll"):
        x = rng.standard_normal((n, c)) * 2
        if kind == "nll":
            x = log_softmax(x)
        y = rng.integers(0, c, n)
        y[:c] = np.arange(c)  # every class appears
        return x.astype(dtype), y
    if kind in ("bce", "bce_with_logits"):
        x = rng.standard_normal((n, 1)) * 2
        if kind == "bce":
            x = 1 / (1 + np.exp(-x))
        y = np.r_[[0.0, 1.0] * (n // 2)][:, None]
        y[0] = 0.3  # soft targets are legal too
        return x.astype(dtype), y.astype(dtype)
    if kind == "kl_div":
        x = log_softmax(rng.standard_normal((n, c)))
        y = rng.random((n, c))
        y[0, 1] = 0.0  # 0 log 0 = 0
        y /= y.sum(axis=1, keepdims=True)
        return x.astype(dtype), y.astype(dtype)
    x = rng.standard_normal((n, 3))
    y = rng.standard_normal((n, 3))
    d = x - y
    x += np.where(np.abs(np.abs(d) - 0.3) < 0.02, 0.05, 0)  # away from huber's joint
    return x.astype(dtype), y.astype(dtype)


def reference(kind, options, x, y):
    """The formulas of docs/semantics.md, written out plainly in float64."""
    x = x.astype(np.float64)
    red = options["reduction"]
    if kind in ("cross_entropy", "nll"):
        _n, c = x.shape
        w = np.ones(c) if options["weight"] is None else np.asarray(options["weight"], float)
        logp = log_softmax(x) if kind == "cross_entropy" else x
        eps = options.get("label_smoothing", 0.0)
        target = (1 - eps) * np.eye(c)[y] + eps / c
        per = -(target * w * logp).sum(axis=1)  # weighted smoothed nll of each sample
        return per.sum() / (w[y].sum() if red == "mean" else 1)
    if kind == "kl_div":
        y = y.astype(np.float64)
        pw = np.where(y > 0, y * (np.log(np.where(y > 0, y, 1)) - x), 0)
        return pw.sum() / (x.shape[0] if red == "mean" else 1)
    d = x - y
    pw = {
        "mse": lambda: d**2,
        "mae": lambda: np.abs(d),
        "huber": lambda: np.where(
            np.abs(d) < options.get("delta", 1), 0.5 * d**2,
            options.get("delta", 1) * (np.abs(d) - 0.5 * options.get("delta", 1))),
        "bce": lambda: -(y * np.maximum(np.log(x), -100) + (1 - y) * np.maximum(np.log(1 - x), -100)),
        "bce_with_logits": lambda: np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x))),
    }[kind]()  # fmt: skip
    return pw.sum() / (pw.size if red == "mean" else 1)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_gradient_matches_finite_differences(case):
    kind, opts = case
    loss = make_loss(loss_ir(kind, **opts))
    x, y = sample(kind)
    _value, g = loss.value_and_grad(x, y)
    g = g.copy()
    assert g.shape == x.shape and g.dtype == np.float64
    num = numerical_gradient(lambda: loss.value(x, y), x)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_value_matches_the_written_formula(case):
    kind, opts = case
    options = {**DEFAULTS[kind], **opts}
    loss = make_loss(ir.Loss(kind, options))
    x, y = sample(kind, dtype=np.float32)
    value, g = loss.value_and_grad(x, y)
    assert isinstance(value, float)
    assert g.dtype == np.float32 and g.shape == x.shape
    assert loss.value(x, y) == value
    assert value == pytest.approx(reference(kind, options, x, y), rel=1e-6, abs=1e-7)


def test_sum_is_mean_times_the_divisor():
    x, y = sample("cross_entropy")
    mean = make_loss(loss_ir("cross_entropy", weight=W4)).value(x, y)
    total = make_loss(loss_ir("cross_entropy", weight=W4, reduction="sum")).value(x, y)
    assert total == pytest.approx(mean * np.asarray(W4)[y].sum(), rel=1e-12)


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_n():
    """The fused form of docs/semantics.md, unweighted."""
    x, y = sample("cross_entropy")
    _, g = make_loss(loss_ir("cross_entropy")).value_and_grad(x, y)
    p = np.exp(log_softmax(x))
    np.testing.assert_allclose(g, (p - np.eye(4)[y]) / len(y), rtol=1e-12, atol=1e-15)


def test_bce_clamps_logs_at_minus_100():
    loss = make_loss(loss_ir("bce"))
    x = np.array([[0.0], [1.0]], np.float32)
    y = np.array([[1.0], [0.0]], np.float32)
    value, g = loss.value_and_grad(x, y)
    assert value == pytest.approx(100.0)
    assert np.isfinite(g).all()


def test_bce_with_logits_is_stable_for_huge_logits():
    loss = make_loss(loss_ir("bce_with_logits"))
    x = np.array([[1000.0], [-1000.0]], np.float32)
    y = np.array([[0.0], [1.0]], np.float32)
    value, g = loss.value_and_grad(x, y)
    assert value == pytest.approx(1000.0)
    np.testing.assert_allclose(g, [[0.5], [-0.5]])


def test_all_zero_class_weights_give_nan_like_pytorch():
    x, y = sample("cross_entropy")
    for kind in ("cross_entropy", "nll"):
        value, g = make_loss(loss_ir(kind, weight=(0.0, 0.0, 0.0, 0.0))).value_and_grad(x, y)
        assert math.isnan(value) and np.isnan(g).any()


@pytest.mark.parametrize(
    "kind, x, y, message",
    [
        ("cross_entropy", np.zeros((3, 4)), np.array([0, 1, 4]), "class id 4 outside 0..3"),
        ("cross_entropy", np.zeros((3, 4)), np.array([0, -1, 2]), "class id -1"),
        ("nll", np.zeros((3, 4)), np.zeros((3, 1), np.int64), "class ids of shape [3]"),
        ("cross_entropy", np.zeros((3, 4)), np.array([0.5, 1, 2]), "must be integers"),
        ("mse", np.zeros((3, 2)), np.zeros((3, 1)), "does not match"),
        ("bce", np.zeros((3, 1)), np.zeros(3), "does not match"),
    ],
)
def test_bad_targets_are_data_errors(kind, x, y, message):
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace(".", r"\.")):
        make_loss(loss_ir(kind)).value_and_grad(x, y)


def test_class_weight_of_the_wrong_length_is_a_data_error():
    x, y = sample("cross_entropy")
    with pytest.raises(DataError, match="3 entries for 4 classes"):
        make_loss(loss_ir("cross_entropy", weight=(1.0, 1.0, 1.0))).value(x, y)


def test_float_class_ids_that_are_integers_are_accepted():
    x, y = sample("cross_entropy")
    loss = make_loss(loss_ir("cross_entropy"))
    assert loss.value(x, y.astype(np.float32)) == loss.value(x, y)


# ---------------------------------------------------------------------------
# regularize


class _Net64:
    """The part of Network that `regularization` uses, in float64 for finite differences."""

    def __init__(self, params):
        self.params = params
        self.grads = {k: np.zeros_like(v) for k, v in params.items()}
        self.weight_names = tuple(k for k in params if k.endswith(".weight"))

    def scratch(self, name, shape):
        return np.empty(shape)


@pytest.mark.parametrize("l1, l2", [(0.0, 0.01), (0.003, 0.0), (0.003, 0.01)])
def test_regularization_gradient_matches_finite_differences(l1, l2):
    rng = np.random.default_rng(0)
    params = {"fc1.weight": rng.standard_normal((4, 3)), "fc1.bias": rng.standard_normal(4),
              "fc2.weight": rng.standard_normal((2, 4))}  # fmt: skip
    net = _Net64(params)
    reg = ir.Regularize(l1=l1, l2=l2)
    for v in net.grads.values():
        v[...] = 0.5  # it ADDS to what backward wrote
    penalty = regularization(net, reg)
    want = sum(l1 * np.abs(params[k]).sum() + l2 * (params[k] ** 2).sum() for k in net.weight_names)
    assert penalty == pytest.approx(want, rel=1e-12)
    for name, p in params.items():
        num = numerical_gradient(lambda: regularization(_Net64(params), reg), p)
        np.testing.assert_allclose(net.grads[name] - 0.5, num, rtol=1e-6, atol=1e-9, err_msg=name)
        if name.endswith(".bias"):
            assert (net.grads[name] == 0.5).all()  # biases are not regularized


def test_regularization_on_a_network_touches_weights_only():
    layers = (
        ir.Layer("fc1", "linear", {"units": 3, "bias": True, "init": "default"}, (5,), (3,),
                 {"weight": (3, 5), "bias": (3,)}),
        ir.Layer("relu_1", "relu", {}, (3,), (3,), {}),
        ir.Layer("fc2", "linear", {"units": 2, "bias": True, "init": "default"}, (3,), (2,),
                 {"weight": (2, 3), "bias": (2,)}),
    )  # fmt: skip
    net = Network(ir.Model("m", (5,), layers), rng=np.random.default_rng(0))
    net.grad[:] = 0
    penalty = regularization(net, ir.Regularize(l2=0.1))
    w1, w2 = net.params["fc1.weight"], net.params["fc2.weight"]
    assert penalty == pytest.approx(0.1 * ((w1**2).sum() + (w2**2).sum()), rel=1e-6)
    np.testing.assert_allclose(net.grads["fc1.weight"], 0.2 * w1, rtol=1e-6)
    assert (net.grads["fc1.bias"] == 0).all() and (net.grads["fc2.bias"] == 0).all()
    assert regularization(net, ir.Regularize()) == 0.0


def test_every_loss_of_the_catalog_has_cases():
    """A new loss row is tested here (and against torch) only through CASES: name it there."""
    assert {c[0] for c in CASES} == set(catalog.LOSSES)
