"""The interpreter against PyTorch (every op, every loss, a whole MNIST-sized network)
plus the interpreter's own contracts: init distributions, the flat parameter
layout, load_params errors, predict, dropout.  Tests needing torch ask for the
`torch` fixture, so the rest runs without it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fcspec import ir
from fcspec.errors import DataError
from fcspec.interpreter import Network, init_params
from fcspec.losses import make_loss
from fcspec.ops import OPS, Context


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


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


def close(ours, theirs, tol=1e-5):
    """Equal to float32 round-off: max error relative to the largest magnitude."""
    theirs = np.asarray(theirs, np.float64)
    ours = np.asarray(ours, np.float64)
    assert ours.shape == theirs.shape
    scale = max(float(np.abs(theirs).max()), 1e-30)
    err = float(np.abs(ours - theirs).max())
    assert err <= tol * scale, f"max error {err:.3g} vs scale {scale:.3g}"


# ---------------------------------------------------------------------------
# Every op against torch.nn.functional, forward and backward, float32.

TORCH_OPS = [
    ("relu", {}, lambda F, x: F.relu(x)),
    ("leaky_relu", {"negative_slope": 0.01}, lambda F, x: F.leaky_relu(x, 0.01)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda F, x: F.leaky_relu(x, 0.2)),
    ("elu", {"alpha": 1.0}, lambda F, x: F.elu(x, 1.0)),
    ("elu", {"alpha": 0.7}, lambda F, x: F.elu(x, 0.7)),
    ("selu", {}, lambda F, x: F.selu(x)),
    ("sigmoid", {}, lambda F, x: F.sigmoid(x)),
    ("tanh", {}, lambda F, x: F.tanh(x)),
    ("gelu", {"approximate": "none"}, lambda F, x: F.gelu(x)),
    ("gelu", {"approximate": "tanh"}, lambda F, x: F.gelu(x, approximate="tanh")),
    ("silu", {}, lambda F, x: F.silu(x)),
    ("softplus", {"beta": 1.0, "threshold": 20.0}, lambda F, x: F.softplus(x)),
    ("softplus", {"beta": 2.0, "threshold": 5.0}, lambda F, x: F.softplus(x, 2.0, 5.0)),
    ("softmax", {}, lambda F, x: F.softmax(x, dim=-1)),
    ("log_softmax", {}, lambda F, x: F.log_softmax(x, dim=-1)),
]


@pytest.mark.parametrize(
    "op, attrs, fn", TORCH_OPS, ids=lambda v: str(v) if isinstance(v, str) else None
)
def test_activation_matches_torch(torch, op, attrs, fn):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((33, 40)) * 4).astype(np.float32)
    x[0, :6] = [0.0, -0.0, 30.0, -30.0, 100.0, -100.0]  # edges: zero, saturation, thresholds
    gy = rng.standard_normal(x.shape).astype(np.float32)
    layer = act(op, (40,), **attrs)
    c = Context(layer)
    y = OPS[op].forward(c, x)
    gx = OPS[op].backward(c, x, y, gy, True)
    tx = torch.tensor(x, requires_grad=True)
    ty = fn(torch.nn.functional, tx)
    ty.backward(torch.tensor(gy))
    close(y, ty.detach().numpy(), 2e-6)
    close(gx, tx.grad.numpy(), 2e-6)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_and_flatten_match_torch(torch, bias):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((17, 2, 3, 4)).astype(np.float32)
    fl, lin = flatten((2, 3, 4)), linear("fc", 24, 5, bias=bias)
    p = {k: rng.standard_normal(s).astype(np.float32) for k, s in lin.params.items()}
    g = {k: np.empty(s, np.float32) for k, s in lin.params.items()}
    cf, cl = Context(fl), Context(lin, p, g)
    h = OPS["flatten"].forward(cf, x)
    y = OPS["linear"].forward(cl, h)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx = OPS["flatten"].backward(cf, x, h, OPS["linear"].backward(cl, h, y, gy, True), True)
    tx = torch.tensor(x, requires_grad=True)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    ty = torch.nn.functional.linear(tx.flatten(1), tp["weight"], tp.get("bias"))
    ty.backward(torch.tensor(gy))
    close(y, ty.detach().numpy())
    close(gx, tx.grad.numpy())
    for k in p:
        close(g[k], tp[k].grad.numpy())


def test_dropout_is_torchs_formula_with_our_mask(torch):
    x = np.random.default_rng(2).standard_normal((50, 30)).astype(np.float32)
    c = Context(act("dropout", (30,), p=0.3))
    c.training, c.rng = True, np.random.default_rng(0)
    y = OPS["dropout"].forward(c, x).copy()
    keep = y != 0
    # torch's _dropout_impl: noise = bernoulli(1 - p) / (1 - p); input * noise
    noise = torch.tensor(keep.astype(np.float32)).div_(1 - 0.3)
    close(y, (torch.tensor(x) * noise).numpy(), 0)
    gx = OPS["dropout"].backward(c, x, y, np.ones_like(x), True)
    close(gx, noise.numpy(), 0)


# ---------------------------------------------------------------------------
# Every loss and option against torch.nn.functional.

W4 = (0.5, 2.0, 1.0, 0.25)
LOSS_CASES = [
    ("cross_entropy", {}),
    ("cross_entropy", {"label_smoothing": 0.1}),
    ("cross_entropy", {"weight": W4}),
    ("cross_entropy", {"weight": W4, "label_smoothing": 0.2}),
    ("cross_entropy", {"reduction": "sum", "label_smoothing": 0.1}),
    ("cross_entropy", {"reduction": "sum", "weight": W4}),
    ("nll", {}),
    ("nll", {"weight": W4}),
    ("nll", {"reduction": "sum"}),
    ("mse", {}),
    ("mse", {"reduction": "sum"}),
    ("mae", {}),
    ("mae", {"reduction": "sum"}),
    ("huber", {"delta": 1.0}),
    ("huber", {"delta": 0.25}),
    ("huber", {"delta": 0.25, "reduction": "sum"}),
    ("bce", {}),
    ("bce", {"reduction": "sum"}),
    ("bce_with_logits", {}),
    ("bce_with_logits", {"reduction": "sum"}),
    ("kl_div", {}),
    ("kl_div", {"reduction": "sum"}),
]


def _torch_loss(torch, kind, o, x, y):
    F = torch.nn.functional
    red = o.get("reduction", "mean")
    w = None if o.get("weight") is None else torch.tensor(o["weight"], dtype=torch.float32)
    if kind == "cross_entropy":
        return F.cross_entropy(
            x, y, weight=w, reduction=red, label_smoothing=o.get("label_smoothing", 0.0)
        )
    if kind == "nll":
        return F.nll_loss(x, y, weight=w, reduction=red)
    if kind == "huber":
        return F.huber_loss(x, y, reduction=red, delta=o["delta"])
    if kind == "kl_div":
        return F.kl_div(x, y, reduction="batchmean" if red == "mean" else "sum")
    fn = {"mse": F.mse_loss, "mae": F.l1_loss, "bce": F.binary_cross_entropy,
          "bce_with_logits": F.binary_cross_entropy_with_logits}[kind]  # fmt: skip
    return fn(x, y, reduction=red)


def _loss_sample(kind, rng, n=64, c=4):
    if kind in ("cross_entropy", "nll"):
        x = (rng.standard_normal((n, c)) * 3).astype(np.float32)
        if kind == "nll":
            x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        return x.astype(np.float32), rng.integers(0, c, n).astype(np.int64)
    if kind in ("bce", "bce_with_logits"):
        x = (rng.standard_normal((n, 1)) * 3).astype(np.float32)
        if kind == "bce":
            x = (1 / (1 + np.exp(-x))).astype(np.float32)
        return x, rng.integers(0, 2, (n, 1)).astype(np.float32)
    if kind == "kl_div":
        x = rng.standard_normal((n, c))
        x = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)
        y = rng.random((n, c))
        y[:3, 0] = 0
        return x, (y / y.sum(axis=1, keepdims=True)).astype(np.float32)
    return (rng.standard_normal((n, 3)).astype(np.float32),
            rng.standard_normal((n, 3)).astype(np.float32))  # fmt: skip


@pytest.mark.parametrize("kind, opts", LOSS_CASES, ids=lambda v: str(v))
def test_loss_matches_torch(torch, kind, opts):
    defaults = {"reduction": "mean", "weight": None, "label_smoothing": 0.0, "delta": 1.0}
    options = {**defaults, **opts}
    x, y = _loss_sample(kind, np.random.default_rng(3))
    # make_loss fills the catalog's defaults itself
    value, g = make_loss(ir.Loss(kind, dict(opts))).value_and_grad(x, y)
    tx = torch.tensor(x, requires_grad=True)
    tl = _torch_loss(torch, kind, options, tx, torch.tensor(y))
    tl.backward()
    assert value == pytest.approx(tl.item(), rel=2e-6, abs=1e-7)
    close(g, tx.grad.numpy(), 2e-6)


# ---------------------------------------------------------------------------
# Whole networks against torch, same weights.


def _torch_forward(torch, model, params, x):
    """The same network written as a PyTorch user would, from the IR."""
    F = torch.nn.functional
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(x)
    for layer in model.layers:
        a = layer.attrs
        if layer.op == "linear":
            h = F.linear(h, tp[f"{layer.name}.weight"], tp.get(f"{layer.name}.bias"))
        elif layer.op == "flatten":
            h = h.flatten(1)
        elif layer.op == "dropout":
            h = F.dropout(h, a["p"], training=False)
        else:
            fn = getattr(F, layer.op)
            kw = {k: v for k, v in a.items()}
            h = fn(h, dim=-1) if layer.op in ("softmax", "log_softmax") else fn(h, **kw)
    return h, tp


def test_mnist_network_forward_backward_match_torch(torch):
    model = mnist_model()
    rng = np.random.default_rng(0)
    net = Network(model, rng=rng)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64)
    loss = make_loss(
        ir.Loss("cross_entropy", {"reduction": "mean", "weight": None, "label_smoothing": 0.0})
    )
    out = net.forward(x, training=True)
    value, g = loss.value_and_grad(out, y)
    net.backward(g)
    th, tp = _torch_forward(torch, model, net.params, x)
    tl = torch.nn.functional.cross_entropy(th, torch.tensor(y))
    tl.backward()
    close(out, th.detach().numpy())
    assert value == pytest.approx(tl.item(), rel=1e-6)
    for k, t in tp.items():
        close(net.grads[k], t.grad.numpy(), 2e-5)


def test_mixed_network_matches_torch(torch):
    """Every activation inside one network, an input with two axes, no-bias layers."""
    acts = [("leaky_relu", {"negative_slope": 0.1}), ("elu", {"alpha": 1.0}), ("selu", {}),
            ("sigmoid", {}), ("tanh", {}), ("gelu", {"approximate": "none"}),
            ("gelu", {"approximate": "tanh"}), ("silu", {}),
            ("softplus", {"beta": 1.5, "threshold": 20.0}), ("dropout", {"p": 0.5})]  # fmt: skip
    layers = [act("relu", (3, 4), 0), flatten((3, 4))]
    n = 12
    for i, (op, attrs) in enumerate(acts):
        layers.append(linear(f"fc{i}", n, 9, bias=i % 3 != 0))
        layers.append(act(op, (9,), i, **attrs))
        n = 9
    layers += [linear("out", 9, 5), act("log_softmax", (5,))]
    model = ir.Model("mixed", (3, 4), tuple(layers))
    rng = np.random.default_rng(5)
    net = Network(model, rng=rng)
    x = rng.standard_normal((20, 3, 4)).astype(np.float32)
    y = rng.integers(0, 5, 20)
    out = net.forward(x)  # inference: dropout is the identity
    _, g = make_loss(ir.Loss("nll", {"reduction": "mean", "weight": None})).value_and_grad(out, y)
    net.backward(g)
    th, tp = _torch_forward(torch, model, net.params, x)
    torch.nn.functional.nll_loss(th, torch.tensor(y)).backward()
    close(out, th.detach().numpy())
    for k, t in tp.items():
        close(net.grads[k], t.grad.numpy(), 2e-5)


# ---------------------------------------------------------------------------
# The interpreter's own contracts (no torch needed).


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
