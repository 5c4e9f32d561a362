"""Every loss of docs/semantics: value and gradient with respect to the model output.

`make_loss(ir.Loss)` returns a `Loss` with `value(out, target) -> float` and
`value_and_grad(out, target) -> (float, grad_out)`.  The formulas are
PyTorch's (`torch.nn.functional.*`, reduction `mean` unless `sum`); targets are
those of docs/architecture.md:

    cross_entropy, nll      int class ids [N]
    bce, bce_with_logits    float32 [N, 1] of 0/1
    mse, mae, huber         float32 [N, k] (the output's shape)
    kl_div                  float32 [N, C] probabilities

The loss always sees the model output as is: `nll` and `kl_div` expect
log-probabilities (a model ending in `log_softmax`), `bce` probabilities.
`grad_out` is a buffer owned by the loss, overwritten by the next call.

Also here: `regularization(net, reg)`, fcspec's own `regularize` l1 / l2 terms.
Scalar values are accumulated in float64 (PyTorch's CPU reductions accumulate
in double too); gradients are float32.
"""

from __future__ import annotations

import math

import numpy as np

from . import catalog, ir, kernels
from .errors import DataError, TrainingError
from .ops import Buffers


def _floats(a) -> np.ndarray:
    """float32 unless already float64 (the finite-difference tests run in float64)."""
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float32)


# The implementation of each catalog row (catalog.LOSSES), by the row's name.
LOSSES: dict[str, type[Loss]] = {}


def implements(cls: type[Loss]) -> type[Loss]:
    """Register `cls` as the implementation of the catalog's loss `cls.kind`."""
    LOSSES[cls.kind] = cls
    return cls


class Loss:
    """Base: options parsing, target checks and the gradient buffer."""

    kind = ""
    # What the loss computes and its gradient with respect to the model output
    # (z, or A for probabilities), as `fcspec trace` prints them; {D} is the
    # divisor of the reduction (`divisor`).  `fused`: last layer op -> the
    # gradient through that layer, where its derivative cancels.
    formula = ""
    grad_formula = ""
    fused: dict[str, str] = {}

    def __init__(self, options: dict):
        self.options = dict(options)
        self.reduction = options.get("reduction", "mean")
        if self.reduction not in ("mean", "sum", "batchmean"):
            raise TrainingError(f"{self.kind}: unknown reduction {self.reduction!r}")
        self._bufs = Buffers()
        self._row_index = np.arange(0)

    def _rows(self, n: int) -> np.ndarray:
        """arange(n), kept: the row index of the per-sample gathers."""
        if self._row_index.shape[0] != n:
            self._row_index = np.arange(n)
        return self._row_index

    def _buf(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        return self._bufs.get(name, shape, dtype)

    def value(self, out: np.ndarray, target: np.ndarray) -> float:
        return self._compute(*self._check(out, target), want_grad=False)[0]

    def value_and_grad(self, out: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
        return self._compute(*self._check(out, target), want_grad=True)

    def _check(self, out, target):
        out = _floats(out)
        target = np.asarray(target, dtype=out.dtype)
        if target.shape != out.shape:
            raise DataError(
                f"{self.kind}: target shape {list(target.shape)} does not match "
                f"the model output {list(out.shape)}"
            )
        return out, target

    def _compute(self, out, target, want_grad):  # pragma: no cover - abstract
        raise NotImplementedError

    def _scale(self, numel: int) -> float:
        """The divisor of a `mean` over `numel` elements (1 for `sum`)."""
        return float(numel) if self.reduction == "mean" and numel else 1.0

    def divisor(self, out: np.ndarray, target: np.ndarray) -> float:
        """What the summed loss is divided by for this batch (1 for `sum`)."""
        return self._scale(np.asarray(out).size)

    def texts(self, out: np.ndarray, target: np.ndarray) -> dict[str, str]:
        """The formula, gradient and fused-gradient texts with this batch's divisor filled in."""
        d = self.divisor(out, target)
        return {
            "formula": _fill(self.formula, d),
            "grad": _fill(self.grad_formula, d),
            **{f"fused:{op}": _fill(t, d) for op, t in self.fused.items()},
        }


def _fill(text: str, divisor: float) -> str:
    if divisor == 1.0:
        return text.replace(" / {D}", "")
    return text.replace("{D}", f"{divisor:g}")


# ---------------------------------------------------------------------------
# Classification: class-id targets.


class _ClassLoss(Loss):
    def __init__(self, options: dict):
        super().__init__(options)
        w = options.get("weight")
        self.weight = None if w is None else np.asarray(w, dtype=np.float32)

    def _check(self, out, target):
        out = _floats(out)
        target = np.asarray(target)
        if out.ndim != 2:
            raise DataError(f"{self.kind}: expects outputs [N, classes], got {list(out.shape)}")
        n, c = out.shape
        if target.shape != (n,):
            raise DataError(
                f"{self.kind}: expects class ids of shape [{n}], got {list(target.shape)}"
            )
        if target.dtype.kind not in "iu":  # np.issubdtype costs 2 us a step
            if target.size and not np.all(np.mod(target, 1) == 0):
                raise DataError(f"{self.kind}: class ids must be integers")
            target = target.astype(np.int64)
        if target.size and (target.min() < 0 or target.max() >= c):
            bad = target[(target < 0) | (target >= c)][0]
            raise DataError(f"{self.kind}: class id {int(bad)} outside 0..{c - 1}")
        if self.weight is not None and self.weight.shape != (c,):
            raise DataError(
                f"{self.kind}: class weight has {self.weight.size} entries for {c} classes"
            )
        return out, target

    def divisor(self, out, target) -> float:
        return self._denominator(np.asarray(target, dtype=np.int64))

    def _denominator(self, target) -> float:
        """PyTorch's mean: divided by N, or by sum(w[y_n]) with class weights."""
        if self.reduction != "mean":
            return 1.0
        if self.weight is None:
            return float(max(target.shape[0], 1))
        return float(self.weight[target].sum(dtype=np.float64))


@implements
class CrossEntropy(_ClassLoss):
    """Logits and class ids; optional class `weight` and `label_smoothing` e.

    loss = (1 - e) nll(log_softmax(x), y; w) + e / C * smooth,
    smooth_n = -sum_c w_c log_softmax(x)_nc, both reduced by the same divisor
    (PyTorch's cross_entropy_loss_label_smoothing).  Gradient (fused):
    (softmax(x) * ((1 - e) w_y + e/C sum w) - (1 - e) w_y onehot - e/C w) / D.
    """

    kind = "cross_entropy"
    formula = "L = sum_n -log softmax(z)[n, y_n] / {D}"
    grad_formula = "(softmax(z) - onehot(y)) / {D}"

    def __init__(self, options: dict):
        super().__init__(options)
        self.eps = float(options.get("label_smoothing", 0.0) or 0.0)

    def texts(self, out, target) -> dict[str, str]:
        d = self.divisor(out, target)
        e, c = self.eps, np.shape(out)[-1]
        if self.weight is not None:
            f = "L = sum_n w_y (-log softmax(z)[n, y_n]) / {D}"
            g = "(softmax(z) w_y - w_y onehot(y)) / {D}"
            if e:
                f = (
                    f"L = sum_n ({1 - e:g} w_y (-log softmax(z)[n, y_n]) "
                    f"+ {e / c:g} sum_c w_c (-log softmax(z)[n, c])) / {{D}}"
                )
                g = (
                    f"(softmax(z) ({1 - e:g} w_y + {e / c:g} sum w) - {1 - e:g} w_y onehot(y) "
                    f"- {e / c:g} w) / {{D}}"
                )
        elif e:
            f = (
                f"L = sum_n ({1 - e:g} (-log softmax(z)[n, y_n]) "
                f"+ {e / c:g} sum_c -log softmax(z)[n, c]) / {{D}}"
            )
            g = f"(softmax(z) - {1 - e:g} onehot(y) - {e / c:g}) / {{D}}"
        else:
            f, g = self.formula, self.grad_formula
        return {"formula": _fill(f, d), "grad": _fill(g, d)}

    def _compute(self, x, y, want_grad):
        n, c = x.shape
        rows = self._rows(n)
        m = self._buf("m", (n, 1), x.dtype)
        t = self._buf("t", (n, c), x.dtype)  # x - max
        e = self._buf("e", (n, c), x.dtype)  # exp(x - max), then softmax
        s = self._buf("s", (n, 1), x.dtype)
        lse = self._buf("lse", (n, 1), x.dtype)  # log sum exp(x - max), per row
        w = None if self.weight is None else self.weight.astype(x.dtype)
        eps = self.eps
        denom = self._denominator(y)
        # Training's value and gradient without class weights: the compiled kernels
        # (kernels.ce_shift, ce_grad) around the same exp, BLAS sums and log, bit for
        # bit this NumPy code; numba is imported by the first training step.
        fused = want_grad and w is None and x.dtype == np.float32 and kernels.available()
        if fused:
            kernels.get("ce_shift")(x, m, t)
        else:
            # Row maxima and row sums over a few classes: NumPy reduces a short last axis
            # one row at a time (12 us at 256 x 10), so the maxima are taken down the
            # columns of a transposed copy and the sums are a matrix-vector product with
            # ones (3 us each).
            xt = self._buf("xt", (c, n), x.dtype)
            np.copyto(xt, x.T)
            np.maximum.reduce(xt, axis=0, out=m[:, 0])
            np.subtract(x, m, out=t)
        np.exp(t, out=e)
        np.matmul(e, self._bufs.filled("ones", (c, 1), 1.0, x.dtype), out=s)
        np.log(s, out=lse)
        if fused:
            picked = self._buf("picked", (n,), x.dtype)
            kernels.get("ce_grad")(
                e, s, t, y, picked, np.float32(1.0 - eps), np.float32(eps / c), eps != 0,
                np.float32(denom), denom != 1.0,
            )  # fmt: skip
        else:
            picked = t[rows, y]  # log_softmax(x)[n, y_n] = picked - lse
        if w is None:
            lse_sum = float(np.add.reduce(lse, axis=None, dtype=np.float64))
            nll = lse_sum - float(np.add.reduce(picked, dtype=np.float64))
        else:
            wy = w[y].astype(np.float64)
            nll = float((wy * (lse[:, 0] - picked)).sum())
        total = (1.0 - eps) * nll
        if eps:
            if w is None:  # -sum_c log_softmax = C lse - sum_c t
                smooth = c * lse_sum - float(np.add.reduce(t, axis=None, dtype=np.float64))
            else:
                wsum = float(w.sum(dtype=np.float64))
                smooth = float((wsum * lse[:, 0].astype(np.float64) - (t @ w)).sum())
            total += eps / c * smooth
        value = total / denom if denom else math.nan  # all-zero class weights: PyTorch's nan
        if not want_grad:
            return value, None
        if fused:
            return value, e  # the gradient, written by ce_grad
        g = e
        np.divide(e, s, out=g)  # softmax
        if w is None:
            g[rows, y] -= 1.0 - eps
            if eps:
                np.subtract(g, eps / c, out=g)
        else:
            coef = (1.0 - eps) * w[y] + eps / c * float(w.sum(dtype=np.float64))
            np.multiply(g, coef[:, None], out=g)
            g[rows, y] -= (1.0 - eps) * w[y]
            if eps:
                np.subtract(g, (eps / c) * w, out=g)
        if denom != 1.0:
            if denom:
                np.divide(g, denom, out=g)
            else:
                g.fill(math.nan)
        return value, g


@implements
class NLL(_ClassLoss):
    """Log-probabilities and class ids: -w[y_n] x[n, y_n], mean = sum / sum(w[y_n])."""

    kind = "nll"
    formula = "L = sum_n -w_y z[n, y_n] / {D}"
    grad_formula = "-w_y onehot(y) / {D}"
    fused = {"log_softmax": "(w_y softmax(x) - w_y onehot(y)) / {D}"}

    def texts(self, out, target) -> dict[str, str]:
        t = super().texts(out, target)
        if self.weight is None:  # w_y = 1
            t = {k: v.replace("w_y ", "") for k, v in t.items()}
        return t

    def _compute(self, x, y, want_grad):
        n = x.shape[0]
        rows = self._rows(n)
        wy = np.ones(n, x.dtype) if self.weight is None else self.weight.astype(x.dtype)[y]
        denom = self._denominator(y)
        if not denom:  # all-zero class weights: PyTorch's nan
            g = self._buf("g", x.shape, x.dtype)
            g.fill(math.nan)
            return math.nan, g if want_grad else None
        value = -float((wy.astype(np.float64) * x[rows, y]).sum()) / denom
        if not want_grad:
            return value, None
        g = self._buf("g", x.shape, x.dtype)
        g.fill(0)
        g[rows, y] = -wy / denom
        return value, g


# ---------------------------------------------------------------------------
# Regression: elementwise against a target of the output's shape.


@implements
class MSE(Loss):
    """mean((x - y)^2); gradient 2 (x - y) / numel."""

    kind = "mse"
    formula = "L = sum (z - y)^2 / {D}"
    grad_formula = "2 (z - y) / {D}"

    def _compute(self, x, y, want_grad):
        d = self._buf("d", x.shape, x.dtype)
        np.subtract(x, y, out=d)
        k = self._scale(d.size)
        value = float(np.square(d, out=self._buf("t", x.shape, x.dtype)).sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        np.multiply(d, 2.0 / k, out=d)
        return value, d


@implements
class MAE(Loss):
    """mean(|x - y|); gradient sign(x - y) / numel (0 where equal, as PyTorch)."""

    kind = "mae"
    formula = "L = sum |z - y| / {D}"
    grad_formula = "sign(z - y) / {D}"

    def _compute(self, x, y, want_grad):
        d = self._buf("d", x.shape, x.dtype)
        np.subtract(x, y, out=d)
        k = self._scale(d.size)
        value = float(np.abs(d, out=self._buf("t", x.shape, x.dtype)).sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        np.sign(d, out=d)
        if k != 1.0:
            np.divide(d, k, out=d)
        return value, d


@implements
class Huber(Loss):
    """0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta); gradient clip(d, -delta, delta)."""

    kind = "huber"
    formula = "L = sum (0.5 d^2 if |d| < delta else delta (|d| - 0.5 delta)) / {D}, d = z - y"
    grad_formula = "clip(z - y, -delta, delta) / {D}"

    def __init__(self, options: dict):
        super().__init__(options)
        self.delta = float(options["delta"])  # > 0: catalog.resolve checked it

    def _compute(self, x, y, want_grad):
        delta = self.delta
        d = self._buf("d", x.shape, x.dtype)
        a = self._buf("a", x.shape, x.dtype)
        q = self._buf("q", x.shape, x.dtype)
        small = self._buf("small", x.shape, np.bool_)
        np.subtract(x, y, out=d)
        np.abs(d, out=a)
        np.less(a, delta, out=small)
        np.multiply(d, d, out=q)
        np.multiply(q, 0.5, out=q)
        np.subtract(a, 0.5 * delta, out=a)
        np.multiply(a, delta, out=a)
        np.copyto(a, q, where=small)
        k = self._scale(d.size)
        value = float(a.sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        np.clip(d, -delta, delta, out=d)
        if k != 1.0:
            np.divide(d, k, out=d)
        return value, d


# ---------------------------------------------------------------------------
# Binary: one output, 0/1 targets.


@implements
class BCE(Loss):
    """Probabilities: (y - 1) max(log1p(-x), -100) - y max(log x, -100);
    gradient (x - y) / max(x (1 - x), 1e-12) (PyTorch's formulas, mean over elements)."""

    kind = "bce"
    formula = "L = sum -(y log A + (1 - y) log(1 - A)) / {D}, logs clamped at -100"
    grad_formula = "(A - y) / max(A (1 - A), 1e-12) / {D}"
    fused = {"sigmoid": "(A - y) / {D}: the sigmoid's A (1 - A) cancels"}

    def _compute(self, x, y, want_grad):
        a = self._buf("a", x.shape, x.dtype)
        b = self._buf("b", x.shape, x.dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            np.negative(x, out=a)
            np.log1p(a, out=a)
            np.log(x, out=b)
        np.maximum(a, -100.0, out=a)
        np.maximum(b, -100.0, out=b)
        np.multiply(a, y - 1, out=a)
        np.multiply(b, y, out=b)
        np.subtract(a, b, out=a)
        k = self._scale(x.size)
        value = float(a.sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        g = self._buf("g", x.shape, x.dtype)
        np.subtract(1, x, out=a)
        np.multiply(a, x, out=a)
        np.maximum(a, 1e-12, out=a)
        np.subtract(x, y, out=g)
        np.divide(g, a, out=g)
        if k != 1.0:
            np.divide(g, k, out=g)
        return value, g


@implements
class BCEWithLogits(Loss):
    """Logits: max(x, 0) - x y + log1p(exp(-|x|)); gradient (sigmoid(x) - y) / numel."""

    kind = "bce_with_logits"
    formula = "L = sum (max(z, 0) - z y + log(1 + e^-|z|)) / {D}"
    grad_formula = "(sigmoid(z) - y) / {D}"

    def _compute(self, x, y, want_grad):
        a = self._buf("a", x.shape, x.dtype)
        b = self._buf("b", x.shape, x.dtype)
        np.abs(x, out=a)
        np.negative(a, out=a)
        np.exp(a, out=a)
        np.log1p(a, out=a)
        np.maximum(x, 0, out=b)
        np.add(a, b, out=a)
        np.multiply(x, y, out=b)
        np.subtract(a, b, out=a)
        k = self._scale(x.size)
        value = float(a.sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        g = self._buf("g", x.shape, x.dtype)
        np.negative(x, out=g)
        with np.errstate(over="ignore"):
            np.exp(g, out=g)
        np.add(g, 1, out=g)
        np.reciprocal(g, out=g)  # sigmoid, as PyTorch's kernel
        np.subtract(g, y, out=g)
        if k != 1.0:
            np.divide(g, k, out=g)
        return value, g


# ---------------------------------------------------------------------------
# Distribution: log-probabilities against target probabilities.


@implements
class KLDiv(Loss):
    """Pointwise y (log y - x) (0 where y = 0), reduced as sum / N (`batchmean`) or sum.
    Gradient -y / N."""

    kind = "kl_div"
    formula = "L = sum y (log y - z) / {D}"
    grad_formula = "-y / {D}"

    def divisor(self, out, target) -> float:
        n = np.shape(out)[0] if np.ndim(out) else 1
        return float(max(n, 1)) if self.reduction in ("mean", "batchmean") else 1.0

    def _compute(self, x, y, want_grad):
        a = self._buf("a", x.shape, x.dtype)
        pos = self._buf("pos", x.shape, np.bool_)
        np.greater(y, 0, out=pos)
        a.fill(0)
        np.log(y, out=a, where=pos)
        np.subtract(a, x, out=a)
        np.multiply(a, y, out=a)
        np.logical_not(pos, out=pos)
        np.copyto(a, 0, where=pos)  # xlogy: y == 0 contributes 0
        n = x.shape[0] if x.ndim else 1
        k = float(max(n, 1)) if self.reduction in ("mean", "batchmean") else 1.0
        value = float(a.sum(dtype=np.float64)) / k
        if not want_grad:
            return value, None
        g = self._buf("g", x.shape, x.dtype)
        np.divide(y, -k, out=g)
        return value, g


def make_loss(loss: ir.Loss) -> Loss:
    kind = catalog.LOSS_ALIASES.get(loss.kind, loss.kind)
    cls = LOSSES.get(kind)
    if cls is None:
        raise TrainingError(f"unknown loss {loss.kind!r}")
    options, problems = catalog.resolve(catalog.LOSSES[kind], loss.options, kind)
    if problems:
        raise TrainingError(problems[0].message, hint=problems[0].hint)
    return cls(options)


# ---------------------------------------------------------------------------
# fcspec's `regularize` terms.


def regularization(net, reg: ir.Regularize | None) -> float:
    """The penalty l1 * sum|W| + l2 * sum W^2 over linear weights (not biases).

    ADDS its gradient (l1 sign(W) + 2 l2 W) into `net.grad`, so call it after
    `net.backward` (which overwrites the gradient).
    """
    if reg is None or (not reg.l1 and not reg.l2):
        return 0.0
    l1, l2 = float(reg.l1), float(reg.l2)
    total = 0.0
    for name in net.weight_names:
        w, g = net.params[name], net.grads[name]
        t = net.scratch("regularize", w.shape)
        if l2:
            total += l2 * float(np.dot(w.ravel(), w.ravel()))
            np.multiply(w, np.float32(2.0 * l2), out=t)
            np.add(g, t, out=g)
        if l1:
            np.abs(w, out=t)
            total += l1 * float(t.sum(dtype=np.float64))
            np.sign(w, out=t)
            np.multiply(t, np.float32(l1), out=t)
            np.add(g, t, out=g)
    return total
