"""The interpreter against PyTorch: every op, every loss, a whole MNIST-sized network.
The interpreter's own contracts, which need no torch, are in test_interpreter.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_interpreter import act, flatten, linear, mnist_model

from fcspec import ir
from fcspec.interpreter import Network
from fcspec.losses import make_loss
from fcspec.ops import OPS, Context


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


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
