"""The one op table: layer op name -> forward, backward and ONNX emitter.

Both backends read `OPS`.  The NumPy interpreter calls `forward` / `backward`;
`onnx_export.py` calls `onnx`.  Adding an activation means adding one row here:
its forward, the derivative written right beside it, and the ONNX nodes.

The formulas are PyTorch's CPU kernels (`torch.nn.functional`), operation for
operation where that matters for float32 round-off (e.g. sigmoid is
`1 / (1 + exp(-x))`, elu uses `expm1`, softplus has PyTorch's threshold).

Calling convention (kept allocation-free for the training hot path):

- `forward(c, x) -> y`: `c` is the layer's `Context` (attrs, parameter views,
  cached buffers).  The result is usually a buffer owned by `c` and is
  overwritten by the next call; `flatten` and inactive `dropout` return a view
  of / `x` itself.
- `backward(c, x, y, gy, need_gx) -> gx | None`: `x`, `y` are the input and
  output of the matching forward, `gy` the gradient of the output.  It
  OVERWRITES the parameter gradients in `c.g` and returns the gradient of the
  input when `need_gx` (the interpreter skips it below the first layer with
  parameters, as autograd does for an input that does not require grad).
- `onnx(g, layer, x) -> str`: the builder protocol of docs/architecture.md.

Every op works in the dtype of its input, so tests can run them in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import ir, kernels


class Buffers:
    """Named work arrays kept between steps, reallocated only when the shape or dtype changes.

    The one mechanism behind every allocation-free hot path: op contexts,
    losses and the interpreter's scratch all take their arrays from one of these.
    """

    __slots__ = ("_arrays",)

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        b = self._arrays.get(name)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = self._arrays[name] = np.empty(shape, dtype)
        return b

    def filled(
        self, name: str, shape: tuple[int, ...], value: float, dtype: Any = np.float32
    ) -> np.ndarray:
        """Like `get`, but holding `value` everywhere: filled when allocated, so never write into it."""
        b = self._arrays.get(name)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = self._arrays[name] = np.full(shape, value, dtype)
        return b


class Context:
    """Per-layer state for one batch size: parameter/gradient views and scratch buffers.

    Buffers are cached by name and reallocated only when the shape or dtype
    changes, so a training loop at a fixed batch size allocates nothing.
    """

    __slots__ = ("_bufs", "attrs", "below", "g", "layer", "p", "rng", "training")

    def __init__(
        self,
        layer: ir.Layer,
        params: dict[str, np.ndarray] | None = None,
        grads: dict[str, np.ndarray] | None = None,
    ):
        self.layer = layer
        self.attrs = layer.attrs
        self.p = params if params is not None else {}  # "weight" -> array
        self.g = grads if grads is not None else {}  # same keys, same shapes
        self.training = False
        self.rng: np.random.Generator | None = None
        # The context of the layer below (set by the interpreter): a fused activation
        # adds that linear's bias and writes its gradient (FUSIONS).
        self.below: Context | None = None
        self._bufs = Buffers()

    def buf(self, name: str, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
        return self._bufs.get(name, shape, dtype)

    def filled(
        self, name: str, shape: tuple[int, ...], value: float, dtype: Any = np.float32
    ) -> np.ndarray:
        return self._bufs.filled(name, shape, value, dtype)


@dataclass(frozen=True, slots=True)
class Op:
    name: str
    forward: Callable[[Context, np.ndarray], np.ndarray]
    backward: Callable[..., np.ndarray | None]
    onnx: Callable[[Any, ir.Layer, str], str]
    # What `forward` and `backward` compute, as `fcspec trace` prints it: x is the
    # input, y the output, g = dL/dy; `grads` maps "x" and each parameter to dL/d(it).
    formula: str = ""
    grads: tuple[tuple[str, str], ...] = ()


OPS: dict[str, Op] = {}


def _row(name: str, forward, backward, onnx, *, formula: str, grads: dict[str, str]) -> None:
    OPS[name] = Op(name, forward, backward, onnx, formula, tuple(grads.items()))


def _f32(value: float) -> np.ndarray:
    return np.array(value, dtype=np.float32)


# ---------------------------------------------------------------------------
# linear: y = x W^T + b, W is [out, in] (PyTorch layout, ONNX Gemm transB=1)


def _linear_matmul(c: Context, x):
    """x W^T into the layer's buffer, without the bias (a fused activation adds it)."""
    w = c.p["weight"]
    y = c.buf("y", (x.shape[0], w.shape[0]), x.dtype)
    np.matmul(x, w.T, out=y)
    return y


def _linear_forward(c: Context, x):
    y = _linear_matmul(c, x)
    b = c.p.get("bias")
    if b is not None:
        np.add(y, b, out=y)
    return y


def _linear_weight_and_input_grads(c: Context, x, gy, need_gx):
    """linear's backward without the bias gradient (a fused activation computes it)."""
    if x.shape[0] == 1:
        # Batch 1 (stochastic GD): the weight gradient is an outer product.  OpenBLAS
        # takes 112 us for that K = 1 matmul at 128 x 784 against 26 us for the
        # broadcast multiply, and each entry is one product either way: same bits.
        np.multiply(gy.T, x, out=c.g["weight"])
    else:
        np.matmul(gy.T, x, out=c.g["weight"])
    if not need_gx:
        return None
    gx = c.buf("gx", x.shape, x.dtype)
    np.matmul(gy, c.p["weight"], out=gx)
    return gx


def bias_grad_into(gy, gb) -> None:
    """The bias gradient, the column sums of gy, added row after row in order.

    np.add.reduce(axis=0) adds one row at a time (no pairwise tree across rows), a
    fixed order the compiled kernels repeat exactly (kernels.py), so a run is the
    same bit for bit with or without them.  (A BLAS product with ones was 3x faster
    here, 5 against 16 us at batch 256, but its order is BLAS's own.)
    """
    np.add.reduce(gy, axis=0, out=gb)


def _linear_backward(c: Context, x, y, gy, need_gx):
    gb = c.g.get("bias")
    if gb is not None:
        bias_grad_into(gy, gb)
    return _linear_weight_and_input_grads(c, x, gy, need_gx)


def _linear_onnx(g, layer: ir.Layer, x: str) -> str:
    inputs = [x, g.param(layer, "weight")]
    if "bias" in layer.params:  # Gemm without C when bias = false
        inputs.append(g.param(layer, "bias"))
    return g.node("Gemm", inputs, transB=1)


_row(
    "linear",
    _linear_forward,
    _linear_backward,
    _linear_onnx,
    formula="y = x W^T + b",
    grads={"weight": "g^T x", "bias": "sum over rows of g", "x": "g W"},
)


# ---------------------------------------------------------------------------
# flatten: x.view(N, -1); no copy either way


def _flatten_forward(c: Context, x):
    return x.reshape(x.shape[0], -1)


def _flatten_backward(c: Context, x, y, gy, need_gx):
    return gy.reshape(x.shape) if need_gx else None


def _flatten_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Flatten", [x], axis=1)


_row(
    "flatten",
    _flatten_forward,
    _flatten_backward,
    _flatten_onnx,
    formula="y = reshape(x, [N, -1])",
    grads={"x": "reshape(g, x's shape)"},
)


# ---------------------------------------------------------------------------
# dropout: inverted dropout while training (PyTorch: noise = bernoulli(1 - p) / (1 - p),
# y = x * noise), the identity otherwise.  The mask comes from c.rng.


def _dropout_forward(c: Context, x):
    p = c.attrs["p"]
    if not c.training or p == 0:
        return x  # backward recognises `y is x`
    if c.rng is None:
        raise ValueError("dropout in training mode needs a random generator")
    u = c.buf("u", x.shape, np.float32)
    c.rng.random(out=u, dtype=np.float32)
    keep = c.buf("keep", x.shape, np.bool_)
    np.greater_equal(u, p, out=keep)  # P(keep) = 1 - p
    noise = c.buf("noise", x.shape, x.dtype)
    np.divide(keep, 1.0 - p, out=noise, casting="unsafe")
    y = c.buf("y", x.shape, x.dtype)
    np.multiply(x, noise, out=y)
    return y


def _dropout_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    if y is x:
        return gy
    gx = c.buf("gx", x.shape, x.dtype)
    np.multiply(gy, c.buf("noise", x.shape, x.dtype), out=gx)
    return gx


def _dropout_onnx(g, layer: ir.Layer, x: str) -> str:
    return x  # no inference effect


_row(
    "dropout",
    _dropout_forward,
    _dropout_backward,
    _dropout_onnx,
    formula="y = x * mask / (1 - p) while training, mask ~ bernoulli(1 - p); y = x otherwise",
    grads={"x": "g * mask / (1 - p) (g itself outside training)"},
)


# ---------------------------------------------------------------------------
# relu: max(x, 0); PyTorch's backward masks with the result (y > 0)


def _relu_forward(c: Context, x):
    y = c.buf("y", x.shape, x.dtype)
    # Against an array of zeros NumPy takes its SIMD loop: 3x faster than the scalar 0, same values.
    np.maximum(x, c.filled("zeros", x.shape, 0.0, x.dtype), out=y)
    return y


def _relu_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    m = c.buf("m", x.shape, np.bool_)
    np.greater(y, 0, out=m)
    gx = c.buf("gx", x.shape, x.dtype)
    np.multiply(gy, m, out=gx)
    return gx


def _relu_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Relu", [x])


_row(
    "relu",
    _relu_forward,
    _relu_backward,
    _relu_onnx,
    formula="y = max(x, 0)",
    grads={"x": "g * (y > 0)"},
)


# ---------------------------------------------------------------------------
# leaky_relu(negative_slope): x > 0 ? x : x * slope (slope may be any real)


def _leaky_relu_forward(c: Context, x):
    m = c.buf("m", x.shape, np.bool_)
    np.greater(x, 0, out=m)
    y = c.buf("y", x.shape, x.dtype)
    np.multiply(x, c.attrs["negative_slope"], out=y)
    np.copyto(y, x, where=m)
    return y


def _leaky_relu_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    m = c.buf("m", x.shape, np.bool_)
    np.greater(x, 0, out=m)
    gx = c.buf("gx", x.shape, x.dtype)
    np.multiply(gy, c.attrs["negative_slope"], out=gx)
    np.copyto(gx, gy, where=m)
    return gx


def _leaky_relu_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("LeakyRelu", [x], alpha=float(layer.attrs["negative_slope"]))


_row(
    "leaky_relu",
    _leaky_relu_forward,
    _leaky_relu_backward,
    _leaky_relu_onnx,
    formula="y = x if x > 0 else slope * x",
    grads={"x": "g * (1 if x > 0 else slope)"},
)


# ---------------------------------------------------------------------------
# elu(alpha) and selu share PyTorch's elu kernel:
#   forward  scale * (x > 0 ? x : alpha * expm1(x))
#   backward x > 0 ? g * scale : g * scale * alpha * exp(x)

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def _elu_forward_impl(c: Context, x, alpha: float, scale: float):
    m = c.buf("m", x.shape, np.bool_)
    np.greater(x, 0, out=m)
    y = c.buf("y", x.shape, x.dtype)
    np.minimum(x, 0, out=y)  # exp only of non-positive values: no overflow
    np.expm1(y, out=y)
    np.multiply(y, alpha, out=y)
    np.copyto(y, x, where=m)
    if scale != 1.0:
        np.multiply(y, scale, out=y)
    return y


def _elu_backward_impl(c: Context, x, gy, alpha: float, scale: float):
    m = c.buf("m", x.shape, np.bool_)
    np.greater(x, 0, out=m)
    gx = c.buf("gx", x.shape, x.dtype)
    np.minimum(x, 0, out=gx)
    np.exp(gx, out=gx)
    np.multiply(gx, scale * alpha, out=gx)
    np.multiply(gx, gy, out=gx)
    if scale != 1.0:
        t = c.buf("t", x.shape, x.dtype)
        np.multiply(gy, scale, out=t)
        np.copyto(gx, t, where=m)
    else:
        np.copyto(gx, gy, where=m)
    return gx


def _elu_forward(c: Context, x):
    return _elu_forward_impl(c, x, c.attrs["alpha"], 1.0)


def _elu_backward(c: Context, x, y, gy, need_gx):
    return _elu_backward_impl(c, x, gy, c.attrs["alpha"], 1.0) if need_gx else None


def _elu_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Elu", [x], alpha=float(layer.attrs["alpha"]))


_row(
    "elu",
    _elu_forward,
    _elu_backward,
    _elu_onnx,
    formula="y = x if x > 0 else alpha (e^x - 1)",
    grads={"x": "g * (1 if x > 0 else alpha e^x)"},
)


def _selu_forward(c: Context, x):
    return _elu_forward_impl(c, x, SELU_ALPHA, SELU_SCALE)


def _selu_backward(c: Context, x, y, gy, need_gx):
    return _elu_backward_impl(c, x, gy, SELU_ALPHA, SELU_SCALE) if need_gx else None


def _selu_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Selu", [x])  # ONNX's default alpha/gamma are these constants in float32


_row(
    "selu",
    _selu_forward,
    _selu_backward,
    _selu_onnx,
    formula="y = scale (x if x > 0 else alpha (e^x - 1))",
    grads={"x": "g * scale (1 if x > 0 else alpha e^x)"},
)


# ---------------------------------------------------------------------------
# sigmoid: 1 / (1 + exp(-x)) as PyTorch's CPU kernel; backward g * (1 - y) * y


def _sigmoid_into(x, y):
    np.negative(x, out=y)
    with np.errstate(over="ignore"):  # exp(-x) = inf for x < -88 gives the right 0
        np.exp(y, out=y)
    np.add(y, 1, out=y)
    np.reciprocal(y, out=y)
    return y


def _sigmoid_forward(c: Context, x):
    return _sigmoid_into(x, c.buf("y", x.shape, x.dtype))


def _sigmoid_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    gx = c.buf("gx", x.shape, x.dtype)
    np.subtract(1, y, out=gx)
    np.multiply(gx, y, out=gx)
    np.multiply(gx, gy, out=gx)
    return gx


def _sigmoid_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Sigmoid", [x])


_row(
    "sigmoid",
    _sigmoid_forward,
    _sigmoid_backward,
    _sigmoid_onnx,
    formula="y = 1 / (1 + e^-x)",
    grads={"x": "g * y (1 - y)"},
)


# ---------------------------------------------------------------------------
# tanh; backward g * (1 - y^2)


def _tanh_forward(c: Context, x):
    y = c.buf("y", x.shape, x.dtype)
    np.tanh(x, out=y)
    return y


def _tanh_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    gx = c.buf("gx", x.shape, x.dtype)
    np.multiply(y, y, out=gx)
    np.subtract(1, gx, out=gx)
    np.multiply(gx, gy, out=gx)
    return gx


def _tanh_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Tanh", [x])


_row(
    "tanh",
    _tanh_forward,
    _tanh_backward,
    _tanh_onnx,
    formula="y = tanh(x)",
    grads={"x": "g * (1 - y^2)"},
)


# ---------------------------------------------------------------------------
# gelu(approximate = "none" | "tanh")
#
# NumPy has no erf.  `erf_into` is Abramowitz & Stegun 7.1.26 (absolute error
# <= 1.5e-7, about one float32 ulp of 1), the very polynomial PyTorch's
# vectorized CPU erf evaluates (ATen/cpu/vec/vec256/vec256_float.h), so the
# interpreter and torch agree to float32 round-off.

_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)
_SQRT1_2 = 1.0 / math.sqrt(2.0)
_GELU_PDF = 1.0 / math.sqrt(2.0 * math.pi)  # PyTorch's kBeta = M_2_SQRTPI * M_SQRT1_2 * 0.5
_TANH_BETA = math.sqrt(2.0 / math.pi)  # M_SQRT2 * M_2_SQRTPI * 0.5
_TANH_KAPPA = 0.044715


def erf_into(x, out, t, r):
    """erf(x) into `out`, using the scratch arrays `t` and `r` (all of x's shape)."""
    a1, a2, a3, a4, a5 = _ERF_A
    np.abs(x, out=t)
    np.multiply(t, _ERF_P, out=t)
    np.add(t, 1, out=t)
    np.reciprocal(t, out=t)  # t = 1 / (1 + p |x|)
    np.multiply(t, a5, out=r)  # Horner: r = (((a5 t + a4) t + a3) t + a2) t + a1
    for a in (a4, a3, a2):
        np.add(r, a, out=r)
        np.multiply(r, t, out=r)
    np.add(r, a1, out=r)
    np.multiply(r, t, out=r)
    np.multiply(x, x, out=out)
    np.negative(out, out=out)
    np.exp(out, out=out)
    np.multiply(out, r, out=out)
    np.subtract(1, out, out=out)  # erf(|x|) = 1 - t r exp(-x^2)
    np.copysign(out, x, out=out)
    return out


def erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return erf_into(x, np.empty_like(x), np.empty_like(x), np.empty_like(x))


def _gelu_forward(c: Context, x):
    y = c.buf("y", x.shape, x.dtype)
    t = c.buf("t", x.shape, x.dtype)
    if c.attrs["approximate"] == "tanh":
        # 0.5 x (1 + tanh(beta (x + kappa x^3)))
        np.multiply(x, x, out=t)
        np.multiply(t, x, out=t)
        np.multiply(t, _TANH_KAPPA, out=t)
        np.add(t, x, out=t)
        np.multiply(t, _TANH_BETA, out=t)
        np.tanh(t, out=t)
    else:
        # 0.5 x (1 + erf(x / sqrt 2))
        h = c.buf("h", x.shape, x.dtype)
        np.multiply(x, _SQRT1_2, out=h)
        erf_into(h, t, y, c.buf("r", x.shape, x.dtype))
    np.add(t, 1, out=t)
    np.multiply(x, 0.5, out=y)
    np.multiply(y, t, out=y)
    return y


def _gelu_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    gx = c.buf("gx", x.shape, x.dtype)
    t = c.buf("t", x.shape, x.dtype)
    s = c.buf("s", x.shape, x.dtype)
    if c.attrs["approximate"] == "tanh":
        # d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) beta (1 + 3 kappa x^2)
        np.multiply(x, x, out=s)  # s = x^2
        np.multiply(s, x, out=t)
        np.multiply(t, _TANH_KAPPA, out=t)
        np.add(t, x, out=t)
        np.multiply(t, _TANH_BETA, out=t)
        np.tanh(t, out=t)  # t = th
        np.multiply(s, 3 * _TANH_KAPPA, out=s)
        np.add(s, 1, out=s)
        np.multiply(s, _TANH_BETA, out=s)  # s = beta (1 + 3 kappa x^2)
        np.multiply(t, t, out=gx)
        np.subtract(1, gx, out=gx)
        np.multiply(gx, s, out=gx)
        np.multiply(gx, x, out=gx)
        np.multiply(gx, 0.5, out=gx)  # right derivative
        np.add(t, 1, out=t)
        np.multiply(t, 0.5, out=t)  # left derivative
        np.add(gx, t, out=gx)
    else:
        # d/dx = cdf + x pdf,  cdf = 0.5 (1 + erf(x / sqrt 2)),  pdf = exp(-x^2 / 2) / sqrt(2 pi)
        np.multiply(x, _SQRT1_2, out=s)
        erf_into(s, t, gx, c.buf("r", x.shape, x.dtype))
        np.add(t, 1, out=t)
        np.multiply(t, 0.5, out=t)  # t = cdf
        np.multiply(x, x, out=gx)
        np.multiply(gx, -0.5, out=gx)
        np.exp(gx, out=gx)
        np.multiply(gx, _GELU_PDF, out=gx)
        np.multiply(gx, x, out=gx)
        np.add(gx, t, out=gx)
    np.multiply(gx, gy, out=gx)
    return gx


def _gelu_onnx(g, layer: ir.Layer, x: str) -> str:
    approximate = layer.attrs["approximate"]
    if g.opset >= 20:
        return g.node("Gelu", [x], approximate=approximate)
    if approximate == "tanh":
        x3 = g.node("Mul", [g.node("Mul", [x, x]), x])
        inner = g.node("Add", [x, g.node("Mul", [x3, g.const(_f32(_TANH_KAPPA))])])
        th = g.node("Tanh", [g.node("Mul", [inner, g.const(_f32(_TANH_BETA))])])
    else:
        th = g.node("Erf", [g.node("Mul", [x, g.const(_f32(_SQRT1_2))])])
    half_x = g.node("Mul", [x, g.const(_f32(0.5))])
    return g.node("Mul", [half_x, g.node("Add", [th, g.const(_f32(1.0))])])


_row(
    "gelu",
    _gelu_forward,
    _gelu_backward,
    _gelu_onnx,
    formula="y = x Phi(x) (tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))))",
    grads={
        "x": "g * (Phi(x) + x phi(x)), phi the normal density (tanh approximation: its derivative)"
    },
)


# ---------------------------------------------------------------------------
# silu: x / (1 + exp(-x)); backward g * s * (1 + x (1 - s)), s = sigmoid(x)


def _silu_forward(c: Context, x):
    y = c.buf("y", x.shape, x.dtype)
    _sigmoid_into(x, y)
    np.multiply(y, x, out=y)
    return y


def _silu_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    s = _sigmoid_into(x, c.buf("s", x.shape, x.dtype))
    gx = c.buf("gx", x.shape, x.dtype)
    np.subtract(1, s, out=gx)
    np.multiply(gx, x, out=gx)
    np.add(gx, 1, out=gx)
    np.multiply(gx, s, out=gx)
    np.multiply(gx, gy, out=gx)
    return gx


def _silu_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


_row(
    "silu",
    _silu_forward,
    _silu_backward,
    _silu_onnx,
    formula="y = x sigmoid(x)",
    grads={"x": "g * s (1 + x (1 - s)), s = sigmoid(x)"},
)


# ---------------------------------------------------------------------------
# softplus(beta, threshold): x beta > threshold ? x : log1p(exp(beta x)) / beta
# backward: x beta > threshold ? g : g z / (z + 1), z = exp(beta x)


def _softplus_forward(c: Context, x):
    beta, threshold = c.attrs["beta"], c.attrs["threshold"]
    m = c.buf("m", x.shape, np.bool_)
    y = c.buf("y", x.shape, x.dtype)
    np.multiply(x, beta, out=y)
    np.greater(y, threshold, out=m)
    np.minimum(y, threshold, out=y)  # the linear region is replaced below; avoid exp overflow
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    np.log1p(y, out=y)
    if beta != 1:
        np.divide(y, beta, out=y)
    np.copyto(y, x, where=m)
    return y


def _softplus_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    beta, threshold = c.attrs["beta"], c.attrs["threshold"]
    m = c.buf("m", x.shape, np.bool_)
    gx = c.buf("gx", x.shape, x.dtype)
    t = c.buf("t", x.shape, x.dtype)
    np.multiply(x, beta, out=gx)
    np.greater(gx, threshold, out=m)
    np.minimum(gx, threshold, out=gx)
    with np.errstate(over="ignore", invalid="ignore"):
        np.exp(gx, out=gx)  # z
        np.add(gx, 1, out=t)
        np.divide(gx, t, out=gx)  # z / (z + 1)
    np.multiply(gx, gy, out=gx)
    np.copyto(gx, gy, where=m)
    return gx


def _softplus_onnx(g, layer: ir.Layer, x: str) -> str:
    # ONNX Softplus is log(1 + exp(x)) without PyTorch's threshold.  Above the
    # threshold t the two differ by log1p(exp(-beta x)) / beta < exp(-t) / beta,
    # below float32's resolution of x when exp(-t) <= t * 2^-24 (t >= ~15, so the
    # default 20): then plain Softplus agrees.  A smaller, user-set threshold
    # changes the function, so it is written out with Where.
    beta = float(layer.attrs["beta"])
    threshold = float(layer.attrs["threshold"])
    scaled_x = x if beta == 1.0 else g.node("Mul", [x, g.const(_f32(beta))])
    y = g.node("Softplus", [scaled_x])
    if beta != 1.0:
        y = g.node("Div", [y, g.const(_f32(beta))])
    if math.exp(-threshold) > threshold * 2.0**-24:
        above = g.node("Greater", [scaled_x, g.const(_f32(threshold))])
        y = g.node("Where", [above, x, y])
    return y


_row(
    "softplus",
    _softplus_forward,
    _softplus_backward,
    _softplus_onnx,
    formula="y = log(1 + e^(beta x)) / beta, y = x where beta x > threshold",
    grads={"x": "g * sigmoid(beta x) (g where beta x > threshold)"},
)


# ---------------------------------------------------------------------------
# softmax over the last axis: exp(x - max) / sum; backward y (g - sum(g y))


def _softmax_forward(c: Context, x):
    red = x.shape[:-1] + (1,)
    s = c.buf("s", red, x.dtype)
    y = c.buf("y", x.shape, x.dtype)
    np.maximum.reduce(x, axis=-1, keepdims=True, out=s)
    np.subtract(x, s, out=y)
    np.exp(y, out=y)
    np.add.reduce(y, axis=-1, keepdims=True, out=s)
    np.divide(y, s, out=y)
    return y


def _softmax_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    s = c.buf("s", x.shape[:-1] + (1,), x.dtype)
    gx = c.buf("gx", x.shape, x.dtype)
    np.multiply(gy, y, out=gx)
    np.add.reduce(gx, axis=-1, keepdims=True, out=s)
    np.subtract(gy, s, out=gx)
    np.multiply(gx, y, out=gx)
    return gx


def _softmax_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("Softmax", [x], axis=-1)


_row(
    "softmax",
    _softmax_forward,
    _softmax_backward,
    _softmax_onnx,
    formula="y = e^(x - max x) / sum e^(x - max x) over the last axis",
    grads={"x": "y * (g - sum(g * y))"},
)


# ---------------------------------------------------------------------------
# log_softmax over the last axis: (x - max) - log(sum(exp(x - max)));
# backward g - exp(y) sum(g)


def log_softmax_into(x, y, s, t):
    """log_softmax(x) into `y`; `s` is a [..., 1] and `t` an x-shaped scratch array."""
    np.maximum.reduce(x, axis=-1, keepdims=True, out=s)
    np.subtract(x, s, out=y)
    np.exp(y, out=t)
    np.add.reduce(t, axis=-1, keepdims=True, out=s)
    np.log(s, out=s)
    np.subtract(y, s, out=y)
    return y


def _log_softmax_forward(c: Context, x):
    return log_softmax_into(
        x,
        c.buf("y", x.shape, x.dtype),
        c.buf("s", x.shape[:-1] + (1,), x.dtype),
        c.buf("t", x.shape, x.dtype),
    )


def _log_softmax_backward(c: Context, x, y, gy, need_gx):
    if not need_gx:
        return None
    s = c.buf("s", x.shape[:-1] + (1,), x.dtype)
    gx = c.buf("gx", x.shape, x.dtype)
    np.add.reduce(gy, axis=-1, keepdims=True, out=s)
    np.exp(y, out=gx)
    np.multiply(gx, s, out=gx)
    np.subtract(gy, gx, out=gx)
    return gx


def _log_softmax_onnx(g, layer: ir.Layer, x: str) -> str:
    return g.node("LogSoftmax", [x], axis=-1)


_row(
    "log_softmax",
    _log_softmax_forward,
    _log_softmax_backward,
    _log_softmax_onnx,
    formula="y = x - max x - log sum e^(x - max x) over the last axis",
    grads={"x": "g - e^y * sum(g)"},
)


# ---------------------------------------------------------------------------
# Fusions: a linear with a bias followed by relu, leaky_relu, sigmoid or tanh.
#
# When the interpreter trains with the compiled kernels (kernels.available()),
# `fused_plan` swaps such a pair for two rows of FUSIONS: the linear keeps only
# its GEMMs, and the activation adds the bias in the same pass as itself and,
# backward, computes its derivative times g together with the bias gradient (one
# pass instead of three).  Every value is bit for bit that of the two rows above
# (tests/test_kernels.py): the kernels repeat their float32 operations in order.
# exp and tanh stay NumPy's (a compiled exp is libm's, not NumPy's SIMD one, and
# differs in the last bit), so sigmoid's forward fuses the passes around exp and
# tanh's forward is the two NumPy calls.  Any other dtype (the float64 gradient
# checks) runs the rows as written.


def _fusion(act: str, forward_kernel, backward_kernel) -> Op:
    base = OPS[act]

    def forward(c: Context, x):
        b = c.below.p["bias"]
        if x.dtype != np.float32:
            np.add(x, b, out=x)
            return base.forward(c, x)
        y = c.buf("y", x.shape, x.dtype)
        forward_kernel(c, x, b, y)
        return y

    def backward(c: Context, x, y, gy, need_gx):
        gb = c.below.g["bias"]
        if x.dtype != np.float32 or gy.dtype != np.float32:
            gx = base.backward(c, x, y, gy, True)
            bias_grad_into(gx, gb)
            return gx
        gx = c.buf("gx", x.shape, x.dtype)
        backward_kernel(c, x, y, gy, gx, gb)
        return gx

    return Op(act, forward, backward, base.onnx, base.formula, base.grads)


def _sigmoid_fused_forward(c: Context, x, b, y):
    kernels.get("bias_negate")(x, b, y)  # x += b, y = -x
    with np.errstate(over="ignore"):
        np.exp(y, out=y)
    kernels.get("reciprocal_1p")(y)  # y = 1 / (y + 1)


def _tanh_fused_forward(c: Context, x, b, y):
    np.add(x, b, out=x)
    np.tanh(x, out=y)


def _slope(c: Context):
    return np.float32(c.attrs["negative_slope"])  # what np.multiply(x, slope) rounds it to


#: activation op -> the row that also adds (and differentiates) the linear's bias below it
FUSIONS: dict[str, Op] = {
    "relu": _fusion(
        "relu",
        lambda c, x, b, y: kernels.get("bias_relu")(x, b, y),
        lambda c, x, y, gy, gx, gb: kernels.get("relu_backward_bias")(y, gy, gx, gb),
    ),
    "leaky_relu": _fusion(
        "leaky_relu",
        lambda c, x, b, y: kernels.get("bias_leaky_relu")(x, b, _slope(c), y),
        lambda c, x, y, gy, gx, gb: kernels.get("leaky_relu_backward_bias")(
            x, gy, _slope(c), gx, gb
        ),
    ),
    "sigmoid": _fusion(
        "sigmoid",
        _sigmoid_fused_forward,
        lambda c, x, y, gy, gx, gb: kernels.get("sigmoid_backward_bias")(y, gy, gx, gb),
    ),
    "tanh": _fusion(
        "tanh",
        _tanh_fused_forward,
        lambda c, x, y, gy, gx, gb: kernels.get("tanh_backward_bias")(y, gy, gx, gb),
    ),
}


def _linear_backward_kernel(c: Context, x, y, gy, need_gx):
    gb = c.g.get("bias")
    if gb is not None:
        if gy.dtype == np.float32:
            kernels.get("colsum")(gy, gb)  # np.add.reduce(gy, axis=0)'s order
        else:
            bias_grad_into(gy, gb)
    return _linear_weight_and_input_grads(c, x, gy, need_gx)


_LINEAR = OPS["linear"]
# linear whose bias the fused activation above adds and differentiates
_LINEAR_WITHOUT_BIAS = Op(
    "linear",
    _linear_matmul,
    lambda c, x, y, gy, need_gx: _linear_weight_and_input_grads(c, x, gy, need_gx),
    _LINEAR.onnx,
    _LINEAR.formula,
    _LINEAR.grads,
)
# linear with no fusable activation above: its bias gradient as a compiled column sum
_LINEAR_KERNEL_BIAS = Op(
    "linear", _linear_forward, _linear_backward_kernel, _LINEAR.onnx, _LINEAR.formula, _LINEAR.grads
)


def fused_plan(layers) -> list[Op]:
    """The op of each layer when training with the compiled kernels (see FUSIONS)."""
    plan = [OPS[layer.op] for layer in layers]
    for i, layer in enumerate(layers):
        if layer.op != "linear" or "bias" not in layer.params:
            continue
        above = layers[i + 1].op if i + 1 < len(layers) else None
        if above in FUSIONS:
            plan[i], plan[i + 1] = _LINEAR_WITHOUT_BIAS, FUSIONS[above]
        else:
            plan[i] = _LINEAR_KERNEL_BIAS
    return plan
