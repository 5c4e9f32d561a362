"""The fused optimizer kernels (fcspec/kernels.py) against optim.py's NumPy path: bit for bit.

Both paths run the same float32 operations in the same order, so every entry
must agree exactly after many steps, for every option the kernels handle; the
NumPy path itself is checked against torch.optim in test_optim*.py.  Without
numba (or with FCSPEC_KERNELS=numpy) the NumPy path runs: tested here too.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

import fcspec
from fcspec import data as fdata
from fcspec import ir, kernels, losses, ops, optim
from fcspec.interpreter import Network

pytest.importorskip("numba", reason="the fused kernels need numba (pip install -e '.[fast]')")

SIZE = 1031  # not a multiple of any vector width


def _run(cls, options, use_kernels: bool, monkeypatch, steps=25, seed=0, **kw):
    monkeypatch.setattr(kernels, "available", lambda: use_kernels)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(SIZE).astype(np.float32)
    opt = cls(options, SIZE, **kw)
    for t in range(steps):
        grad = (rng.standard_normal(SIZE) * (1 + t % 3)).astype(np.float32)
        grad[t % SIZE] = 0.0
        lr = 0.01 * (0.9**t)  # a schedule changes lr between steps
        opt.step(theta, grad, lr)
    return theta, opt.state_dict()


def _same(monkeypatch, cls, options, **kw):
    a, sa = _run(cls, options, True, monkeypatch, **kw)
    b, sb = _run(cls, options, False, monkeypatch, **kw)
    assert a.tobytes() == b.tobytes()
    for k in sa:
        assert np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes(), k


@pytest.mark.parametrize(
    "weight_decay,amsgrad,decoupled,betas",
    list(itertools.product([0.0, 0.01], [False, True], [False, True], [(0.9, 0.999), (0.3, 0.99)])),
)
def test_adam_kernel_is_the_numpy_update_bit_for_bit(
    monkeypatch, weight_decay, amsgrad, decoupled, betas
):
    options = {"betas": betas, "eps": 1e-8, "weight_decay": weight_decay, "amsgrad": amsgrad}
    _same(monkeypatch, optim.AdamW if decoupled else optim.Adam, options)


@pytest.mark.parametrize(
    "momentum,dampening,nesterov,weight_decay",
    [
        (0.0, 0.0, False, 0.0),
        (0.0, 0.0, False, 1e-3),
        (0.9, 0.0, False, 0.0),
        (0.9, 0.0, True, 0.0),
        (0.9, 0.1, False, 1e-2),
        (0.5, 0.0, True, 1.0),
    ],
)
def test_sgd_kernel_is_the_numpy_update_bit_for_bit(
    monkeypatch, momentum, dampening, nesterov, weight_decay
):
    options = {
        "momentum": momentum,
        "dampening": dampening,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
    }
    _same(monkeypatch, optim.SGD, options)


def test_nan_and_inf_propagate_as_in_numpy(monkeypatch):
    """A non-finite gradient entry reaches the same entries either way (train.py reports it)."""
    outs = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        theta = np.ones(8, np.float32)
        grad = np.array([np.nan, np.inf, -np.inf, 0, 1, -1, 1e30, 1e-30], np.float32)
        opt = optim.Adam({"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                          "amsgrad": True}, 8)  # fmt: skip
        with np.errstate(all="ignore"):
            opt.step(theta, grad, 1e-3)
            opt.step(theta, np.ones(8, np.float32), 1e-3)
        outs.append(theta.tobytes())
    assert outs[0] == outs[1]


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("FCSPEC_KERNELS", "numpy")
    monkeypatch.setattr(kernels, "_TRIED", False)
    monkeypatch.setattr(kernels, "_KERNELS", None)
    assert not kernels.available()
    monkeypatch.delenv("FCSPEC_KERNELS")
    monkeypatch.setattr(kernels, "_TRIED", False)
    assert kernels.available()


def _block_numba(monkeypatch) -> None:
    """Make `import numba` fail, as where it is not installed, and forget the kernels."""
    import builtins

    real_import = builtins.__import__

    def no_numba(name, *a, **kw):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    # kernels_numba imports numba: loaded once already, it must be imported afresh
    monkeypatch.delitem(sys.modules, "fcspec.kernels_numba", raising=False)
    monkeypatch.delattr(fcspec, "kernels_numba", raising=False)
    monkeypatch.setattr(kernels, "_TRIED", False)
    monkeypatch.setattr(kernels, "_KERNELS", None)


def test_without_numba_the_numpy_path_runs(monkeypatch):
    _block_numba(monkeypatch)
    assert not kernels.available()
    theta = np.ones(4, np.float32)
    opt = optim.SGD({"momentum": 0.9, "dampening": 0.0, "nesterov": False,
                     "weight_decay": 0.0}, 4)  # fmt: skip
    opt.step(theta, np.full(4, 2, np.float32), 0.5)
    assert theta.tolist() == [0.0, 0.0, 0.0, 0.0]


# ---------------------------------------------------------------------------
# linear's bias + activation (ops.FUSIONS), forward and backward


def _bits_equal(a, b) -> bool:
    """Bit for bit, NaN where NaN (its payload is the CPU's, not the code's)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return np.array_equal(nan_a, nan_b) and a[~nan_a].tobytes() == b[~nan_b].tobytes()


def _linear_layer(name, n_in, units, bias=True):
    params = {"weight": (units, n_in), **({"bias": (units,)} if bias else {})}
    attrs = {"units": units, "bias": bias, "init": "default"}
    return ir.Layer(name, "linear", attrs, (n_in,), (units,), params)


def _act_layer(op, n, i, **attrs):
    return ir.Layer(f"{op}_{i}", op, attrs, (n,), (n,), {})


ACTS = [("relu", {}), ("leaky_relu", {"negative_slope": 0.01}),
        ("leaky_relu", {"negative_slope": -1.7}), ("sigmoid", {}), ("tanh", {})]  # fmt: skip
SHAPES = [(1, 1), (1, 31), (7, 9), (32, 128), (257, 64)]


def _special(a, rng):
    """Random entries replaced by 0, -0, +-inf and NaN."""
    a = a.copy()
    for v in (0.0, -0.0, np.inf, -np.inf, np.nan):
        a.flat[rng.integers(0, a.size, max(1, a.size // 50))] = v
    return a


@pytest.mark.parametrize("act,attrs", ACTS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("special", [False, True])
def test_fused_bias_activation_is_the_two_numpy_rows_bit_for_bit(act, attrs, shape, special):
    n, m = shape
    rng = np.random.default_rng(n * 1000 + m)
    lin = ops.Context(_linear_layer("fc", 3, m), {"bias": None}, {"bias": np.zeros(m, np.float32)})
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    gy = rng.standard_normal(shape).astype(np.float32)
    if special:
        x, b, gy = _special(x, rng), _special(b, rng), _special(gy, rng)
    lin.p["bias"] = b
    fused, plain = (
        ops.Context(_act_layer(act, m, 1, **attrs)),
        ops.Context(_act_layer(act, m, 1, **attrs)),
    )
    fused.below = lin
    with np.errstate(all="ignore"):
        xf = x.copy()
        yf = ops.FUSIONS[act].forward(fused, xf)
        xp = x.copy()
        np.add(xp, b, out=xp)  # linear's bias add, then the activation's own row
        yp = ops.OPS[act].forward(plain, xp)
        assert _bits_equal(xf, xp) and _bits_equal(yf, yp)
        gxf = ops.FUSIONS[act].backward(fused, xf, yf, gy, True).copy()
        gbf = lin.g["bias"].copy()
        gxp = ops.OPS[act].backward(plain, xp, yp, gy, True)
        gbp = np.add.reduce(gxp, axis=0)
    assert _bits_equal(gxf, gxp)
    assert _bits_equal(gbf, gbp)


def test_bias_gradient_is_numpys_column_sum_bit_for_bit():
    """The output layer's bias gradient (no activation above): kernels.colsum."""
    for n, m in SHAPES + [(0, 4)]:
        rng = np.random.default_rng(n + m)
        g = (
            _special(rng.standard_normal((n, m)).astype(np.float32), rng)
            if n
            else np.zeros((0, m), np.float32)
        )
        gb = np.full(m, 7, np.float32)
        with np.errstate(all="ignore"):
            kernels.get("colsum")(g, gb)
            assert _bits_equal(gb, np.add.reduce(g, axis=0))


def _model(act, attrs, widths=(13, 31, 9, 5)):
    layers, i = [], 0
    for a, b in zip(widths, widths[1:]):
        i += 1
        layers.append(_linear_layer(f"fc{i}", a, b))
        if i < len(widths) - 1:
            layers.append(_act_layer(act, b, i, **attrs))
    return ir.Model("M", (widths[0],), tuple(layers))


@pytest.mark.parametrize("act,attrs", ACTS)
@pytest.mark.parametrize("n", [1, 7, 64])
def test_training_step_with_fusions_is_the_numpy_step_bit_for_bit(monkeypatch, act, attrs, n):
    """The whole network's forward, layer outputs and gradient, kernels on and off."""
    runs = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        net = Network(_model(act, attrs), rng=np.random.default_rng(0))
        rng = np.random.default_rng(1)
        for _ in range(2):  # buffers reused by the second step
            x = rng.standard_normal((n, 13)).astype(np.float32)
            out = net.forward(x, training=True)
            net.backward(rng.standard_normal(out.shape).astype(np.float32))
        fused = [op in ops.FUSIONS.values() for op in net._last_ops]
        runs.append((net.grad.tobytes(), [y.tobytes() for y in net.layer_outputs()], fused))
    assert runs[0][0] == runs[1][0] and runs[0][1] == runs[1][1]
    assert any(runs[0][2]) and not any(runs[1][2])  # the kernels did run, and only with them on


# ---------------------------------------------------------------------------
# softmax-cross-entropy (losses.CrossEntropy with kernels.ce_shift / ce_grad)


@pytest.mark.parametrize("n,c", [(1, 1), (1, 10), (7, 3), (32, 10), (257, 17)])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1}, {"reduction": "sum"}])
@pytest.mark.parametrize("special", [False, True])
def test_cross_entropy_kernels_are_the_numpy_loss_bit_for_bit(monkeypatch, n, c, options, special):
    rng = np.random.default_rng(n * 100 + c)
    x = (rng.standard_normal((n, c)) * 5).astype(np.float32)
    if special:  # ties and signed zeros in the row maxima, a row of one value
        x[:, : c // 2] = np.round(x[:, : c // 2])
        x[0, :] = -0.0
        x.flat[rng.integers(0, x.size, max(1, x.size // 10))] = 0.0
    y = rng.integers(0, c, n).astype(np.int64 if n % 2 else np.uint8)
    calls, real_get = [], kernels.get
    monkeypatch.setattr(kernels, "get", lambda name: calls.append(name) or real_get(name))
    results = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        loss = losses.make_loss(ir.Loss("cross_entropy", options))
        value, g = loss.value_and_grad(x, y)
        results.append((value, g.tobytes(), loss._buf("t", (n, c)).tobytes()))
    assert results[0] == results[1]
    assert calls == ["ce_shift", "ce_grad"]  # the kernels ran, and only with them on


def test_cross_entropy_kernels_propagate_nan_as_numpy(monkeypatch):
    x = np.array([[np.nan, 1, 2], [1, np.nan, 0], [np.inf, 0, 1], [3, 2, 1]], np.float32)
    y = np.array([0, 2, 1, 0])
    results = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        loss = losses.make_loss(ir.Loss("cross_entropy", {}))
        with np.errstate(all="ignore"):
            value, g = loss.value_and_grad(x, y)
        results.append((value, g.copy()))
    assert np.isnan(results[0][0]) and np.isnan(results[1][0])
    assert _bits_equal(results[0][1], results[1][1])


# ---------------------------------------------------------------------------
# the batch gather with its preprocessing (data.Split.rows with kernels.gather_preprocess)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("shape,batch", [((1,), 1), ((7,), 5), ((1, 28, 28), 32), ((3, 5), 257)])
@pytest.mark.parametrize(
    "scale,normalize", [(1.0, False), (255.0, False), (255.0, True), (3.0, True)]
)
def test_gather_kernel_is_the_numpy_gather_and_preprocessing_bit_for_bit(
    monkeypatch, dtype, shape, batch, scale, normalize
):
    rng = np.random.default_rng(batch)
    info = np.iinfo(dtype)
    samples = rng.integers(info.min, int(info.max) + 1, (300,) + shape).astype(dtype)
    if normalize:
        pre = fdata.Preprocess.fit(samples, scale=scale, normalize="standard")
        assert pre._shifts and pre._divides
    else:
        pre = fdata.Preprocess.identity(shape, scale)
    idx = rng.permutation(300)[:batch]
    calls, real_get = [], kernels.get
    monkeypatch.setattr(kernels, "get", lambda name: calls.append(name) or real_get(name))
    outs = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        split = fdata.Split(samples, np.zeros(300, np.int64), pre)
        out = np.full((batch,) + shape, np.nan, np.float32)
        assert split.rows(idx, out) is out
        outs.append(out.tobytes())
    assert outs[0] == outs[1]
    assert calls == ["gather_preprocess"]  # the kernel ran, and only with it on


def test_gather_kernel_feeds_the_training_loop(monkeypatch):
    """train.Batches over a compact split: the same batches with the kernel and without."""
    from fcspec import train

    rng = np.random.default_rng(3)
    samples = rng.integers(0, 256, (103, 4, 5)).astype(np.uint8)
    pre = fdata.Preprocess.fit(samples, scale=255.0, normalize="standard")
    split = fdata.Split(samples, rng.integers(0, 10, 103), pre)
    order = rng.permutation(103)
    epochs = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        batches = train.Batches(split, 16, shuffle=True)
        epochs.append([(e, b, xb.tobytes(), yb.tobytes()) for e, b, xb, yb in batches.epoch(order)])
    assert epochs[0] == epochs[1] and len(epochs[0]) == 7


def _training_step_bytes(n=9):
    """One MNIST-shaped step through every kernel's call site: gather, fused layers, loss."""
    rng = np.random.default_rng(5)
    samples = rng.integers(0, 256, (40, 12)).astype(np.uint8)
    split = fdata.Split(samples, rng.integers(0, 5, 40), fdata.Preprocess.identity((12,), 255.0))
    xb = split.rows(rng.permutation(40)[:n], np.empty((n, 12), np.float32))
    layers = (_linear_layer("fc1", 12, 8), _act_layer("relu", 8, 1), _linear_layer("fc2", 8, 5))
    net = Network(ir.Model("M", (12,), layers), rng=np.random.default_rng(0))
    loss = losses.make_loss(ir.Loss("cross_entropy", {}))
    value, g = loss.value_and_grad(net.forward(xb, training=True), split.y[:n])
    net.backward(g)
    fused = any(op in ops.FUSIONS.values() for op in net._last_ops)
    return xb.tobytes(), value, net.grad.tobytes(), fused


def test_without_numba_training_falls_back_to_the_same_numpy_values(monkeypatch):
    with_kernels = _training_step_bytes()
    assert with_kernels[3]
    _block_numba(monkeypatch)
    without = _training_step_bytes()
    assert not without[3] and not kernels.available()
    assert without[:3] == with_kernels[:3]


def test_fcspec_kernels_numpy_switches_every_kernel_off(monkeypatch):
    with_kernels = _training_step_bytes()
    monkeypatch.setenv("FCSPEC_KERNELS", "numpy")
    monkeypatch.setattr(kernels, "_TRIED", False)
    monkeypatch.setattr(kernels, "_KERNELS", None)
    monkeypatch.setattr(kernels, "get", None)  # any kernel call would fail
    without = _training_step_bytes()
    assert not without[3]
    assert without[:3] == with_kernels[:3]
