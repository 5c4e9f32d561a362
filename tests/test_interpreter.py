"""The interpreter's own contracts, without torch: init distributions, the flat parameter
layout, load_params errors, predict, dropout, and a whole network's backward pass against
finite differences.  The comparisons with PyTorch are in test_interpreter_torch.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcspec import ir
from fcspec.errors import DataError
from fcspec.interpreter import Network, init_params
from fcspec.losses import make_loss


def linear(name, n_in, units, bias=True, init="default"):
    params = {"weight": (units, n_in), **({"bias": (units,)} if bias else {})}
    attrs = {"units": units, "bias": bias, "init": init}
    return ir.Layer(name, "linear", attrs, (n_in,), (units,), params)


def act(op, shape, i=1, **attrs):
    return ir.Layer(f"{op}_{i}", op, attrs, tuple(shape), tuple(shape), {})


def flatten(shape):
    return ir.Layer("flatten_1", "flatten", {}, tuple(shape), (math.prod(shape),), {})


def mnist_model(extra=()):
    """784-128-64-10 with ReLU, as the MNIST example of docs/language.md."""
    layers = (
        flatten((1, 28, 28)),
        linear("fc1", 784, 128), act("relu", (128,), 1), *extra,
        linear("fc2", 128, 64), act("relu", (64,), 2),
        linear("fc3", 64, 10),
    )  # fmt: skip
    return ir.Model("FullyConnectedNet", (1, 28, 28), layers)


# ---------------------------------------------------------------------------
# The interpreter's own contracts.


def test_default_init_is_nn_linear_uniform_bounds():
    model = ir.Model("m", (400,), (linear("fc1", 400, 300), linear("fc2", 300, 2)))
    p = init_params(model, np.random.default_rng(0))
    assert list(p) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    for name, fan_in in [("fc1", 400), ("fc2", 300)]:
        bound = 1 / math.sqrt(fan_in)
        for k in ("weight", "bias"):
            a = p[f"{name}.{k}"]
            assert a.dtype == np.float32
            assert np.abs(a).max() <= bound
    w = p["fc1.weight"]  # 120000 draws of U(-b, b): extremes near b, std b / sqrt(3)
    b = 1 / 20
    assert w.max() > 0.999 * b and w.min() < -0.999 * b
    assert w.std() == pytest.approx(b / math.sqrt(3), rel=0.01)
    assert abs(w.mean()) < 0.01 * b


@pytest.mark.parametrize(
    "init, std",
    [("xavier_uniform", math.sqrt(2 / 700)), ("xavier_normal", math.sqrt(2 / 700)),
     ("kaiming_uniform", math.sqrt(2 / 400)), ("kaiming_normal", math.sqrt(2 / 400)),
     ("zeros", 0.0)],
)  # fmt: skip
def test_other_inits_have_torch_init_spreads_and_zero_bias(init, std):
    model = ir.Model("m", (400,), (linear("fc1", 400, 300, init=init),))
    p = init_params(model, np.random.default_rng(0))
    w = p["fc1.weight"]
    assert w.std() == pytest.approx(std, rel=0.01, abs=1e-12)
    if init.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3) * std * (1 + 1e-6)
    assert (p["fc1.bias"] == 0).all()


def test_params_and_grads_are_views_of_flat_vectors():
    net = Network(mnist_model(), rng=np.random.default_rng(0))
    assert (
        net.theta.dtype == np.float32
        and net.theta.size == 784 * 128 + 128 + 128 * 64 + 64 + 64 * 10 + 10
    )
    assert list(net.params) == list(mnist_model().param_shapes())
    for k in net.params:
        assert np.shares_memory(net.params[k], net.theta)
        assert np.shares_memory(net.grads[k], net.grad)
    net.theta[:] = 0
    assert (net.params["fc2.bias"] == 0).all()
    start, stop = net.offsets["fc1.bias"]
    assert stop - start == 128 and start == 784 * 128


def test_same_rng_same_weights_and_state_dict_round_trip():
    a = Network(mnist_model(), rng=np.random.default_rng(7))
    b = Network(mnist_model(), rng=np.random.default_rng(7))
    assert np.array_equal(a.theta, b.theta)
    c = Network(mnist_model(), params=a.state_dict())
    assert np.array_equal(a.theta, c.theta)


def test_load_params_names_the_bad_key():
    net = Network(mnist_model(), rng=np.random.default_rng(0))
    good = net.state_dict()
    before = net.theta.copy()
    bad = {**good, "fc2.weight": np.zeros((64, 127), np.float32), "fc3.bias": np.ones(10)}
    with pytest.raises(
        DataError, match=r"'fc2.weight': expected shape \[64, 128\], found \[64, 127\]"
    ):
        net.load_params(bad)
    assert np.array_equal(net.theta, before)  # nothing half-loaded
    with pytest.raises(DataError, match="'fc3.bias' is missing"):
        net.load_params({k: v for k, v in good.items() if k != "fc3.bias"})
    with pytest.raises(DataError, match="unexpected parameter 'fc4.weight'"):
        net.load_params({**good, "fc4.weight": np.zeros((1, 1))})
    with pytest.raises(DataError, match="expected numbers"):
        net.load_params({**good, "fc3.bias": np.array(["a"] * 10)})


def test_forward_rejects_a_batch_of_the_wrong_sample_shape():
    net = Network(mnist_model(), rng=np.random.default_rng(0))
    with pytest.raises(DataError, match=r"sample shape \[784\], the model expects \[1, 28, 28\]"):
        net.forward(np.zeros((3, 784), np.float32))


def test_predict_equals_forward_and_backward_overwrites():
    net = Network(mnist_model(), rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((1000, 1, 28, 28), dtype=np.float32)
    full = net.forward(x).copy()
    pred = net.predict(x, batch_size=300)  # 300, 300, 300, 100
    np.testing.assert_allclose(pred, full, rtol=1e-5, atol=1e-6)
    g = np.random.default_rng(2).standard_normal((64, 10)).astype(np.float32)
    net.forward(x[:64])
    net.backward(g)
    first = net.grad.copy()
    net.forward(x[:64])
    net.backward(g)
    assert np.array_equal(net.grad, first)  # overwritten, not accumulated


def test_training_step_reuses_buffers():
    net = Network(mnist_model((act("dropout", (128,), 1, p=0.5),)), rng=np.random.default_rng(0))
    x = np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32)
    out1 = net.forward(x, training=True)
    out2 = net.forward(x, training=True)
    assert out1 is out2  # the same buffer: no allocation per step
    eval_out = net.forward(x).copy()
    a = net.forward(x, training=True, rng=np.random.default_rng(3)).copy()
    b = net.forward(x, training=True, rng=np.random.default_rng(3)).copy()
    assert np.array_equal(a, b) and not np.allclose(a, eval_out)  # the mask comes from the rng


def test_networks_without_parameters_run_forward_and_backward():
    for layers in [(), (act("softmax", (4,)),), (act("relu", (4,)), act("log_softmax", (4,), 2))]:
        net = Network(ir.Model("m", (4,), layers))
        assert net.theta.size == 0
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        out = net.forward(x)
        assert out.shape == (3, 4)
        net.backward(np.ones_like(out))  # nothing to fill, and nothing breaks
        np.testing.assert_allclose(net.predict(x, batch_size=2), out)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_a_whole_networks_gradient_matches_finite_differences(loss):
    """Backward through linear, tanh, sigmoid, leaky_relu and the loss, against central
    differences of the loss the same network computes, in float64 arithmetic on the
    float32 weights (a step of 1e-3 on a smooth network: truncation error ~1e-6)."""
    layers = (
        linear("fc1", 6, 7), act("tanh", (7,), 1),
        linear("fc2", 7, 5), act("sigmoid", (5,), 2),
        linear("fc3", 5, 4), act("leaky_relu", (4,), 3, negative_slope=0.1),
        linear("out", 4, 3),
    )  # fmt: skip
    net = Network(ir.Model("m", (6,), layers), rng=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 6)).astype(np.float32)
    if loss == "cross_entropy":
        y = rng.integers(0, 3, 9)
        fn = make_loss(
            ir.Loss("cross_entropy", {"reduction": "mean", "label_smoothing": 0.0, "weight": None})
        )
    else:
        y = rng.standard_normal((9, 3)).astype(np.float32)
        fn = make_loss(ir.Loss("mse", {"reduction": "mean"}))
    out = net.forward(x, training=True)
    value, g = fn.value_and_grad(out, y)
    net.backward(g)
    analytic = net.grad.astype(np.float64).copy()

    def loss_at(theta64):
        # the same network in float64: the float32 interpreter's rounding (~1e-7) would
        # swamp a finite difference, so its weights are evaluated exactly instead
        h = x.astype(np.float64)
        params = {k: theta64[a:b].reshape(net.params[k].shape) for k, (a, b) in net.offsets.items()}
        for layer in layers:
            if layer.op == "linear":
                h = h @ params[f"{layer.name}.weight"].T + params[f"{layer.name}.bias"]
            elif layer.op == "tanh":
                h = np.tanh(h)
            elif layer.op == "sigmoid":
                h = 1 / (1 + np.exp(-h))
            else:
                h = np.where(h > 0, h, 0.1 * h)
        if loss == "mse":
            return float(np.mean((h - y) ** 2))
        z = h - h.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    theta = net.theta.astype(np.float64)
    assert loss_at(theta) == pytest.approx(float(value), rel=1e-5)  # the same function
    eps = 1e-3
    numeric = np.empty_like(theta)
    for i in range(theta.size):
        up, down = theta.copy(), theta.copy()
        up[i] += eps
        down[i] -= eps
        numeric[i] = (loss_at(up) - loss_at(down)) / (2 * eps)
    scale = np.abs(numeric).max()
    assert np.abs(analytic - numeric).max() <= 1e-4 * scale
