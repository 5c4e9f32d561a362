"""torch.optim's update rules over one flat float32 parameter vector.

This module owns the optimizers (sgd, adam, adamw, rmsprop, adagrad), their
state for checkpoints, gradient-norm clipping and the readable statement of
each update rule for `fcspec explain`.

The interpreter keeps every parameter in one flat float32 vector `theta` and
every gradient in one vector `grad` of the same size.  `Optimizer.step(theta,
grad, lr)` updates `theta` in place and only reads `grad`; the learning rate
is an argument because the schedule changes it between epochs.  Weight decay
applies to every entry (biases too), like torch's default single param group.

Float32 fidelity.  The formulas are those of the design notes (semantics.md)
in the operation order of torch.optim's single-tensor (non-foreach) functions
(torch 2.13), with every Python scalar rounded to float32 where torch's
kernels round it (the "opmath" type of float32 is float32), so a run matches
torch to float32 round-off (tests/test_optim_torch.py: rtol 1e-6 over 20 steps).
torch's vectorized CPU kernels evaluate `add(x, alpha=a)`, `lerp` and
`addcmul` as fused multiply-adds, rounding once; `_axpy` rounds twice (a
float32 multiply, then a float32 add), so an entry can differ from torch's in
its last bit.  Emulating the single rounding in float64 made the SGD step
3.7 times slower (93 against 25 microseconds for MNIST's 109k parameters),
a third of a training step at batch 32, for differences below float32
round-off.  Where alpha is 1 the two agree exactly (x * 1 is exact).

No per-step allocation: state and scratch vectors are allocated once at
construction, and every step works through `out=` ufuncs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import catalog, ir, kernels
from .errors import Diagnostic, SpecError, TrainingError

F32 = np.float32
F64 = np.float64


# ---------------------------------------------------------------------------
# torch's fused kernels, emulated

# The one elementwise square root of the adaptive optimizers.  A module-level
# name so that tests can swap in torch's own sqrt and check that everything
# else (operation order, float32 scalars, fused multiply-adds) is bit-exact.
_sqrt = np.sqrt


def _axpy(x: np.ndarray, alpha: Any, y: np.ndarray, out: np.ndarray, w: np.ndarray) -> None:
    """`out = x * alpha + y` in float32 (torch's fused kernels round once; see above).

    `alpha` is a float32 scalar or vector; `w` is float32 scratch of the vectors' size.
    `out` may alias `x` or `y`.
    """
    if isinstance(alpha, np.floating) and alpha == 1:
        np.add(x, y, out=out)
        return
    np.multiply(x, alpha, out=w)
    np.add(w, y, out=out)


def _lerp(
    start: np.ndarray, end: np.ndarray, weight: float, diff: np.ndarray, w: np.ndarray
) -> None:
    """torch's `start.lerp_(end, weight)`: start + weight (end - start), in place; `diff` is f32 scratch.

    torch picks the form by the weight's size so that weight 1 returns `end`
    exactly: `end - (1 - weight)(end - start)` for weights of at least 0.5.
    """
    wt = F32(weight)
    np.subtract(end, start, out=diff)
    if abs(wt) < 0.5:
        _axpy(diff, wt, start, start, w)
    else:
        _axpy(diff, wt - F32(1), end, start, w)


# ---------------------------------------------------------------------------
# The optimizers


def _n(x: Any) -> str:
    """A number as `fcspec explain` prints it in an update rule."""
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_n(v) for v in x) + ")"
    return f"{x:g}" if isinstance(x, float) else str(x)


# The implementation of each catalog row (catalog.OPTIMIZERS), by the row's name.
_KINDS: dict[str, type[Optimizer]] = {}


def implements(cls: type[Optimizer]) -> type[Optimizer]:
    """Register `cls` as the implementation of the catalog's optimizer `cls.kind`."""
    _KINDS[cls.kind] = cls
    return cls


class Optimizer:
    """One flat parameter vector's torch.optim state and its update rule.

    The state vectors (`buffers`, allocated here, zeros) are those the catalog's row
    names for the options; subclasses implement `_update(theta, grad, lr)`.  `t` counts the steps taken
    (torch's `state["step"]`): it is 1 during the first update.
    """

    kind = ""

    def __init__(self, options: Mapping[str, Any], size: int):
        self.options = dict(options)
        self.size = int(size)
        self.buffers: tuple[str, ...] = catalog.OPTIMIZERS[self.kind].state(self.options)
        self.t = 0
        self.state: dict[str, np.ndarray] = {
            name: np.zeros(self.size, F32) for name in self.buffers
        }
        # scratch: the decayed gradient and three more float32 vectors
        self._g = np.empty(self.size, F32)
        self._s = np.empty(self.size, F32)
        self._u = np.empty(self.size, F32)
        self._w = np.empty(self.size, F32)

    def step(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update `theta` in place from `grad` (read, not modified) at learning rate `lr`."""
        if (
            theta.shape != (self.size,)
            or grad.shape != (self.size,)
            or theta.dtype != F32
            or grad.dtype != F32
        ):
            raise TrainingError(
                f"{self.kind} was built for {self.size} float32 parameters, got theta "
                f"{theta.dtype}{list(theta.shape)} and grad {grad.dtype}{list(grad.shape)}"
            )
        self.t += 1
        self._update(theta, grad, float(lr))

    def _update(self, theta: np.ndarray, grad: np.ndarray, lr: float) -> None:
        raise NotImplementedError

    # True where weight_decay is not the L2 term `g = g + wd * p` (AdamW decays p itself)
    decoupled_decay = False

    @classmethod
    def rule(cls, o: Mapping[str, Any]) -> list[str]:
        """`_update` as `fcspec explain` prints it, with the resolved options `o` filled in:
        one statement a line, after the L2 term (which `describe` adds).  Every subclass
        writes its own (tests/test_tables.py checks)."""
        return [f"    p = p - lr * <{(cls.__doc__ or cls.kind).splitlines()[0]}>"]

    def _with_decay(self, theta: np.ndarray, grad: np.ndarray, weight_decay: float) -> np.ndarray:
        """torch's `grad = grad.add(param, alpha=weight_decay)`, into scratch; `grad` itself without decay."""
        if weight_decay == 0:
            return grad
        _axpy(theta, F32(weight_decay), grad, self._g, self._w)
        return self._g

    # -- checkpoints -------------------------------------------------------

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything a resumed run needs to continue bit for bit: arrays and 0-d arrays only."""
        d = {"kind": np.array(self.kind), "step": np.array(self.t, np.int64)}
        d.update({name: buf.copy() for name, buf in self.state.items()})
        return d

    def load_state_dict(self, d: Mapping[str, np.ndarray]) -> None:
        kind = str(np.asarray(d["kind"])) if "kind" in d else "no"
        if kind != self.kind:
            raise TrainingError(
                f"the checkpoint holds {kind} optimizer state, the spec uses {self.kind}"
            )
        for name in ("step", *self.buffers):
            if name not in d:
                raise TrainingError(f"the checkpoint's {self.kind} state lacks {name!r}")
            if name != "step" and np.shape(d[name]) != (self.size,):
                raise TrainingError(
                    f"the checkpoint's {self.kind} state {name!r} has shape {list(np.shape(d[name]))}, "
                    f"the model has {self.size} parameters"
                )
        self.t = int(np.asarray(d["step"]))
        for name in self.buffers:
            np.copyto(self.state[name], np.asarray(d[name]), casting="same_kind")


@implements
class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, nesterov, weight_decay."""

    kind = "sgd"

    @classmethod
    def rule(cls, o):
        mu, tau, lines = o["momentum"], o["dampening"], []
        if mu != 0:
            damped = "g" if tau == 0 else f"{_n(1 - tau)} * g"
            lines.append(f"    b = g  (t = 1);  b = {_n(mu)} * b + {damped}  (t > 1)")
            lines.append(f"    g = g + {_n(mu)} * b" if o["nesterov"] else "    g = b")
        return lines + ["    p = p - lr * g"]

    def __init__(self, options: Mapping[str, Any], size: int):
        self.momentum = float(options["momentum"])
        self.dampening = float(options["dampening"])
        self.nesterov = bool(options["nesterov"])
        self.weight_decay = float(options["weight_decay"])
        super().__init__(options, size)

    def _update(self, theta, grad, lr):
        if kernels.available():
            kernels.get("sgd")(
                theta,
                grad,
                self.state.get("momentum_buffer", self._u),
                F32(self.weight_decay),
                self.weight_decay != 0,
                self.momentum != 0,
                F32(self.momentum),
                self.t == 1,
                F32(1 - self.dampening),
                F32(1 - self.dampening) == 1,
                self.nesterov,
                F32(-lr),
            )
            return
        g = self._with_decay(theta, grad, self.weight_decay)
        if self.momentum != 0:
            buf = self.state["momentum_buffer"]
            if self.t == 1:
                np.copyto(buf, g)
            else:
                np.multiply(buf, F32(self.momentum), out=buf)
                _axpy(g, F32(1 - self.dampening), buf, buf, self._w)
            if self.nesterov:
                _axpy(buf, F32(self.momentum), g, self._g, self._w)
                g = self._g
            else:
                g = buf
        _axpy(g, F32(-lr), theta, theta, self._w)


@implements
class Adam(Optimizer):
    """torch.optim.Adam and, as AdamW (`decoupled_decay`), torch.optim.AdamW; amsgrad either way."""

    kind = "adam"

    @classmethod
    def rule(cls, o):
        b1, b2 = (float(b) for b in o["betas"])
        lines = []
        if cls.decoupled_decay and o["weight_decay"] != 0:
            lines.append(
                f"    p = p * (1 - lr * {_n(o['weight_decay'])})   (decoupled weight decay)"
            )
        lines.append(f"    m = {_n(b1)} * m + {_n(1 - b1)} * g")
        lines.append(f"    v = {_n(b2)} * v + {_n(1 - b2)} * g^2")
        v = "v"
        if o["amsgrad"]:
            lines.append("    v_max = max(v_max, v)   (amsgrad)")
            v = "v_max"
        lines.append(
            f"    p = p - lr / (1 - {_n(b1)}^t) * m / (sqrt({v} / (1 - {_n(b2)}^t)) + {_n(o['eps'])})"
        )
        return lines

    def __init__(self, options: Mapping[str, Any], size: int):
        self.beta1, self.beta2 = (float(b) for b in options["betas"])
        self.eps = float(options["eps"])
        self.weight_decay = float(options["weight_decay"])
        self.amsgrad = bool(options["amsgrad"])
        super().__init__(options, size)

    def _update(self, theta, grad, lr):
        m, v = self.state["exp_avg"], self.state["exp_avg_sq"]
        if kernels.available() and _sqrt is np.sqrt:
            self._fused(theta, grad, lr, m, v)
            return
        g = grad
        if self.weight_decay != 0:
            if self.decoupled_decay:
                np.multiply(theta, F32(1 - lr * self.weight_decay), out=theta)
            else:
                g = self._with_decay(theta, grad, self.weight_decay)
        _lerp(m, g, 1 - self.beta1, self._s, self._w)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2): fma(value * g, g, v)
        np.multiply(v, F32(self.beta2), out=v)
        np.multiply(g, F32(1 - self.beta2), out=self._s)
        _axpy(self._s, g, v, v, self._w)

        step = float(self.t)  # torch keeps step as a float32 tensor and reads it with .item()
        bias_correction1 = 1 - self.beta1**step
        bias_correction2 = 1 - self.beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if self.amsgrad:
            vmax = self.state["max_exp_avg_sq"]
            np.maximum(vmax, v, out=vmax)
            v = vmax
        denom = self._s
        _sqrt(v, out=denom)
        np.divide(denom, F32(bias_correction2_sqrt), out=denom)
        np.add(denom, F32(self.eps), out=denom)
        # param.addcdiv_(exp_avg, denom, value=-step_size): param + (value * exp_avg) / denom
        upd = self._g  # the decayed gradient is spent by now
        np.multiply(m, F32(-step_size), out=upd)
        np.divide(upd, denom, out=upd)
        np.add(theta, upd, out=theta)

    def _fused(self, theta, grad, lr, m, v):
        """The same update as below in one pass (kernels.py; bit for bit the same result)."""
        step = float(self.t)
        wt = F32(1 - self.beta1)
        big = abs(wt) >= 0.5
        kernels.get("adam")(
            theta,
            grad,
            m,
            v,
            self.state.get("max_exp_avg_sq", self._u),
            F32(1 - lr * self.weight_decay),
            F32(self.weight_decay),
            wt - F32(1) if big else wt,
            big,
            F32(self.beta2),
            F32(1 - self.beta2),
            F32(-(lr / (1 - self.beta1**step))),
            F32((1 - self.beta2**step) ** 0.5),
            F32(self.eps),
            self.decoupled_decay and self.weight_decay != 0,
            not self.decoupled_decay and self.weight_decay != 0,
            self.amsgrad,
        )


@implements
class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay."""

    kind = "adamw"
    decoupled_decay = True


@implements
class RMSprop(Optimizer):
    """torch.optim.RMSprop: alpha, eps (outside the square root), weight_decay, momentum, centered."""

    kind = "rmsprop"

    @classmethod
    def rule(cls, o):
        a, mom = o["alpha"], o["momentum"]
        lines = [f"    v = {_n(a)} * v + {_n(1 - a)} * g^2"]
        den = "sqrt(v)"
        if o["centered"]:
            lines.append(f"    gm = {_n(a)} * gm + {_n(1 - a)} * g   (centered)")
            den = "sqrt(v - gm^2)"
        if mom > 0:
            lines.append(f"    b = {_n(mom)} * b + g / ({den} + {_n(o['eps'])})")
            return lines + ["    p = p - lr * b"]
        return lines + [f"    p = p - lr * g / ({den} + {_n(o['eps'])})"]

    def __init__(self, options: Mapping[str, Any], size: int):
        self.alpha = float(options["alpha"])
        self.eps = float(options["eps"])
        self.weight_decay = float(options["weight_decay"])
        self.momentum = float(options["momentum"])
        self.centered = bool(options["centered"])
        super().__init__(options, size)

    def _update(self, theta, grad, lr):
        g = self._with_decay(theta, grad, self.weight_decay)
        sq = self.state["square_avg"]
        np.multiply(sq, F32(self.alpha), out=sq)
        np.multiply(g, F32(1 - self.alpha), out=self._s)
        _axpy(self._s, g, sq, sq, self._w)
        avg = self._s
        if self.centered:
            ga = self.state["grad_avg"]
            _lerp(ga, g, 1 - self.alpha, self._s, self._w)
            # square_avg.addcmul(grad_avg, grad_avg, value=-1): fma(-grad_avg, grad_avg, square_avg)
            np.negative(ga, out=avg)
            _axpy(avg, ga, sq, avg, self._w)
            _sqrt(avg, out=avg)
        else:
            _sqrt(sq, out=avg)
        np.add(avg, F32(self.eps), out=avg)
        if self.momentum > 0:
            buf = self.state["momentum_buffer"]
            np.multiply(buf, F32(self.momentum), out=buf)
            # buf.addcdiv_(grad, avg): buf + grad / avg; then param.add_(buf, alpha=-lr)
            np.divide(g, avg, out=avg)
            np.add(buf, avg, out=buf)
            _axpy(buf, F32(-lr), theta, theta, self._w)
        else:
            # param.addcdiv_(grad, avg, value=-lr): param + (-lr * grad) / avg
            upd = self._u
            np.multiply(g, F32(-lr), out=upd)
            np.divide(upd, avg, out=upd)
            np.add(theta, upd, out=theta)


@implements
class Adagrad(Optimizer):
    """torch.optim.Adagrad: lr_decay, weight_decay, initial_accumulator_value, eps."""

    kind = "adagrad"

    @classmethod
    def rule(cls, o):
        clr = f"lr / (1 + (t - 1) * {_n(o['lr_decay'])})" if o["lr_decay"] != 0 else "lr"
        return [
            f"    s = s + g^2   (s starts at {_n(o['initial_accumulator_value'])})",
            f"    p = p - {clr} * g / (sqrt(s) + {_n(o['eps'])})",
        ]

    def __init__(self, options: Mapping[str, Any], size: int):
        self.lr_decay = float(options["lr_decay"])
        self.weight_decay = float(options["weight_decay"])
        self.initial_accumulator_value = float(options["initial_accumulator_value"])
        self.eps = float(options["eps"])
        super().__init__(options, size)
        self.state["sum"].fill(F32(self.initial_accumulator_value))

    def _update(self, theta, grad, lr):
        g = self._with_decay(theta, grad, self.weight_decay)
        clr = lr / (1 + (float(self.t) - 1) * self.lr_decay)
        s = self.state["sum"]
        _axpy(g, g, s, s, self._w)  # state_sum.addcmul_(grad, grad, value=1)
        std = self._s
        _sqrt(s, out=std)
        np.add(std, F32(self.eps), out=std)
        # param.addcdiv_(grad, std, value=-clr)
        upd = self._u
        np.multiply(g, F32(-clr), out=upd)
        np.divide(upd, std, out=upd)
        np.add(theta, upd, out=theta)


def resolved_options(opt: ir.Optimizer) -> dict[str, Any]:
    """The IR's options over the catalog's (torch's) defaults, checked by the catalog's row
    (kinds, ranges, the nesterov rule), so a hand-built IR may omit defaults and a bad one
    fails before training."""
    row = catalog.OPTIMIZERS.get(opt.kind)
    if row is None or opt.kind not in _KINDS:
        raise _spec_error(
            opt, f"unknown optimizer {opt.kind!r}", f"use one of: {', '.join(_KINDS)}"
        )
    options, problems = catalog.resolve(row, opt.options, opt.kind)
    if problems:
        raise _spec_error(opt, problems[0].message, problems[0].hint)
    return options


def _spec_error(opt: ir.Optimizer, message: str, hint: str | None = None) -> SpecError:
    return SpecError([Diagnostic("error", message, opt.span, hint)])


def make_state_names(opt: ir.Optimizer) -> tuple[str, ...]:
    """The state vectors `opt` keeps, one float32 entry per parameter each (the catalog's row)."""
    return catalog.OPTIMIZERS[opt.kind].state(resolved_options(opt))


def make_optimizer(opt: ir.Optimizer, size: int) -> Optimizer:
    """The optimizer `opt` describes, for a flat parameter vector of `size` float32 entries."""
    options = resolved_options(opt)
    return _KINDS[opt.kind](options, size)


# ---------------------------------------------------------------------------
# Gradient clipping


def clip_grad_norm(grad: np.ndarray, max_norm: float) -> float:
    """torch.nn.utils.clip_grad_norm_ on the flat gradient, in place; returns the norm before clipping.

    The 2-norm is accumulated in float64 and rounded to float32 (torch rounds
    per tensor and then takes the norm of the norms; both are float32
    round-off from the true norm).  The scale `max_norm / (norm + 1e-6)` is
    float32 arithmetic as in torch, applied when it is below 1; a NaN norm
    makes every gradient NaN, as in torch, so the trainer sees the divergence.
    """
    # einsum casts in small buffers: float64 accuracy without a float64 copy of the gradient
    total = F32(math.sqrt(float(np.einsum("i,i->", grad, grad, dtype=F64))))
    coef = F32(max_norm) / (total + F32(1e-6))
    if coef < 1 or np.isnan(coef):
        np.multiply(grad, coef, out=grad)
    return float(total)


# ---------------------------------------------------------------------------
# Readable update rules for `fcspec explain`


def describe(opt: ir.Optimizer) -> str:
    """The update rule with the resolved numbers filled in, one statement a line."""
    o = resolved_options(opt)
    head = f"{opt.kind}(" + ", ".join(f"{k} = {_n(v)}" for k, v in o.items()) + ")"
    lines = [
        head,
        (
            f"  each step t = 1, 2, ... with gradient g of every parameter p (biases too), "
            f"lr = {_n(o['lr'])} unless the schedule changes it:"
        ),
    ]
    cls = _KINDS[opt.kind]
    if not cls.decoupled_decay and o["weight_decay"] != 0:
        lines.append(f"    g = g + {_n(o['weight_decay'])} * p")
    return "\n".join(lines + cls.rule(o))
