"""`fcspec trace`: one real training step, explained layer by layer.

The step is the one `fcspec run` takes: the same data, the same seeded
shuffle, init and dropout streams, and the op table's own forward and backward
functions (`ops.OPS`) applied to the network's own parameter and gradient
vectors, so the numbers printed are the numbers training uses.  Step K is
reached by taking the K - 1 real steps before it.

For every layer the trace records the output tensor (name, shape, the first
values) and, going back, the gradient of every tensor with the formula the op
table and the loss class state for it (`Op.formula` / `Op.grads`,
`Loss.texts`).  Each gradient is then checked against central finite
differences of the loss, re-evaluated in float64 with the same dropout masks,
at a few entries of each tensor (the largest and some random ones).  Finally
the optimizer's update of one parameter entry is shown with its numbers.

`trace(spec)` returns a JSON-ready dict; `format_text` renders it for a
terminal or a notebook.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import ir
from .errors import DataError, TrainingError

H = 1e-6  # central-difference step, float64
TOLERANCE = 1e-3  # max relative error of a passing gradient check
SHOWN = 4  # values printed per tensor


def _values(a: np.ndarray, k: int = SHOWN) -> list[float]:
    return [float(v) for v in np.asarray(a).ravel()[:k]]


def _tensor(name: str, a: np.ndarray, **extra) -> dict[str, Any]:
    a = np.asarray(a)
    d = {
        "name": name,
        "shape": list(a.shape),
        "values": _values(a),
        "norm": float(np.linalg.norm(a.astype(np.float64).ravel())),
    }
    d.update(extra)
    return d


# ---------------------------------------------------------------------------
# The replay: the training loop's batches and streams, up to the traced step.


class _Replay:
    """The state of `train.run` at the start of a given step (same seeds, same order)."""

    def __init__(self, spec: ir.Spec, batch: int | None, base_dir: Path | None):
        from . import data as fdata
        from . import interpreter, losses, optim, schedules

        self.spec = spec
        prepared = fdata.prepare(spec, base_dir)
        self.train, self.val = prepared.train, prepared.val
        self.preprocess = prepared.preprocess
        n = len(self.train)
        if n == 0:
            raise DataError("the training set is empty")
        want = batch if batch is not None else spec.train.batch
        self.batch = n if want is None else min(int(want), n)
        self.n = n
        seed = spec.train.seed
        self.net = interpreter.Network(spec.model, rng=np.random.default_rng([seed, 1]))
        self.loss_fn = losses.make_loss(spec.loss)
        self.opt = optim.make_optimizer(spec.optimizer, self.net.theta.size)
        self.sched = schedules.make_schedule(spec.schedule, spec.optimizer.lr)
        self.shuffle_rng = np.random.default_rng(seed)
        self.dropout_rng = np.random.default_rng([seed, 2])
        self._step = None

    def batches(self):
        """(epoch, step in epoch, rows) forever, in the training loop's order."""
        epoch = 0
        while True:
            epoch += 1
            order = self.shuffle_rng.permutation(self.n) if self.spec.train.shuffle else None
            for k, s in enumerate(range(0, self.n, self.batch), start=1):
                e = min(s + self.batch, self.n)
                rows = np.arange(s, e) if order is None else order[s:e]
                yield epoch, k, rows
            yield epoch, 0, None  # the epoch's end

    def take(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = self.train.rows(rows, np.empty((len(rows),) + self.train.samples.shape[1:], np.float32))
        return np.array(x, np.float32, copy=True), self.train.y[rows]

    def step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, int]:
        """One ordinary training step, train.run's own: (loss, correctly classified rows)."""
        from .train import Diverged, Step, _batch_correct

        if self._step is None:
            self._step = Step(self.spec, self.net, self.loss_fn, self.opt, self.dropout_rng)
        try:
            value = self._step(xb, yb, float(self.sched.lr))
        except Diverged as d:
            raise TrainingError(
                f"training diverged before the traced step: {d.what} became non-finite ({d.where})"
            ) from None
        return value, _batch_correct(self.spec.task, self.spec.loss.kind, self._step.out, yb)

    def end_epoch(self, epoch: int, loss_sum: float, correct: int) -> None:
        """The schedule's epoch step, with the metrics train.run gives it (a plateau
        schedule monitors one of them)."""
        from .train import EVAL_BATCH, _eval_metrics

        spec = self.spec
        m: dict[str, Any] = {"epoch": epoch, "train_loss": loss_sum / self.n, "lr": self.sched.lr}
        if spec.task in ("classification", "binary"):
            m["train_accuracy"] = correct / self.n
        if self.val is not None and len(self.val):
            out = self.net.predict(self.val.x, EVAL_BATCH)
            m.update(_eval_metrics(spec.task, spec.loss.kind, self.loss_fn, out, self.val.y, "val"))
        self.sched.step(m)


# ---------------------------------------------------------------------------
# The float64 re-evaluation for the finite-difference check.


class _Float64:
    """The loss as a function of any layer's input or parameters, in float64.

    Dropout reuses the masks of the traced float32 step, so the function
    differentiated is the one the step's backward differentiated.
    """

    def __init__(self, spec: ir.Spec, net, xb, yb, masks: dict[int, np.ndarray]):
        from . import losses
        from .ops import Context

        self.spec = spec
        self.layers = spec.model.layers
        self.params = {k: v.astype(np.float64) for k, v in net.params.items()}
        self.weight_names = net.weight_names
        self.ctxs = [
            Context(l, {k: self.params[f"{l.name}.{k}"] for k in l.params}) for l in self.layers
        ]
        self.masks = {i: m.astype(np.float64) for i, m in masks.items()}
        self.loss = losses.make_loss(spec.loss)
        self.y = yb
        # the inputs of every layer (and the output, last) at the unperturbed point
        self.inputs = [xb.astype(np.float64)]
        h = self.inputs[0]
        for i in range(len(self.layers)):
            h = self._layer(i, h).copy()
            self.inputs.append(h)

    def _layer(self, i: int, h: np.ndarray) -> np.ndarray:
        from .ops import OPS

        layer = self.layers[i]
        if layer.op == "dropout":
            m = self.masks.get(i)
            return h if m is None else h * m
        return OPS[layer.op].forward(self.ctxs[i], h)

    def _reg(self) -> float:
        reg = self.spec.regularize
        if reg is None:
            return 0.0
        total = 0.0
        for name in self.weight_names:
            w = self.params[name]
            total += float(reg.l2) * float(np.sum(w * w)) + float(reg.l1) * float(np.sum(np.abs(w)))
        return total

    def loss_from(self, i: int, h: np.ndarray) -> float:
        """The loss when `h` is the input of layer i (i = number of layers: the output)."""
        for j in range(i, len(self.layers)):
            h = self._layer(j, h)
        return float(self.loss.value(h, self.y)) + self._reg()

    def check(self, analytic: np.ndarray, f, x: np.ndarray, entries: int, seed: int) -> dict:
        """Central differences of `f()` in the entries of float64 `x` (moved in place and
        restored) against `analytic`, at the largest entries and some random ones."""
        a = np.asarray(analytic, np.float64)
        flat = np.abs(a).ravel()
        k = min(entries, flat.size)
        top = np.argsort(-flat, kind="stable")[: (k + 1) // 2]
        rest = np.setdiff1d(np.arange(flat.size), top)
        rng = np.random.default_rng(seed)
        picked = np.concatenate(
            [top, rng.choice(rest, size=min(k - len(top), rest.size), replace=False)]
        )
        scale = max(float(flat.max()) if flat.size else 0.0, 1e-30)
        worst, worst_at = 0.0, None
        xf = x.reshape(-1)
        for j in picked:
            j = int(j)
            x0 = xf[j]
            xf[j] = x0 + H
            up = f()
            xf[j] = x0 - H
            down = f()
            xf[j] = x0
            num = (up - down) / (2 * H)
            an = float(a.ravel()[j])
            # Relative to the entry, but never to less than a thousandth of the tensor's
            # largest entry: float32 round-off of a near-zero entry is not a wrong formula.
            err = abs(an - num) / max(abs(an), abs(num), 1e-3 * scale)
            if err > worst or worst_at is None:
                worst, worst_at = err, (j, an, num)
        j, an, num = worst_at if worst_at else (0, 0.0, 0.0)
        return {
            "entries": int(len(picked)),
            "max_rel_err": worst,
            "ok": bool(worst <= TOLERANCE),
            "worst": {
                "index": [int(v) for v in np.unravel_index(j, a.shape)] if a.size else [],
                "analytic": an,
                "numeric": num,
            },
        }


# ---------------------------------------------------------------------------
# The traced step.


def trace(
    spec: ir.Spec,
    *,
    batch: int | None = None,
    step: int = 1,
    checks: int = 12,
    base_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Take training steps 1 .. `step` of `spec` and explain the last one (see the module doc)."""
    from . import losses, optim
    from .ops import OPS, Context

    if step < 1:
        raise TrainingError(f"--step must be >= 1, not {step}")
    if spec.data is None or spec.data.train is None:
        raise TrainingError(
            f"{spec.path}: the spec has no training data", hint="add a data { train = ... } block"
        )
    r = _Replay(spec, batch, Path(base_dir) if base_dir is not None else None)
    net, loss_fn = r.net, r.loss_fn
    done, loss_sum, correct = 0, 0.0, 0
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch, k, rows in r.batches():
            if rows is None:
                r.end_epoch(epoch, loss_sum, correct)
                loss_sum, correct = 0.0, 0
                continue
            if done + 1 == step:
                at = (epoch, k)  # the traced step's epoch and place in it
                break
            xb, yb = r.take(rows)
            value, c = r.step(xb, yb)
            loss_sum += value * len(rows)
            correct += c
            done += 1
    xb, yb = r.take(rows)
    lr = float(r.sched.lr)
    layers = spec.model.layers
    result: dict[str, Any] = {
        "spec": spec.name,
        "path": str(spec.path),
        "step": step,
        "epoch": at[0],
        "step_in_epoch": at[1],
        "steps_per_epoch": -(-r.n // r.batch),
        "batch": len(rows),
        "train_rows": r.n,
        "shuffle": bool(spec.train.shuffle),
        "seed": spec.train.seed,
        "lr": lr,
        "rows": [int(i) for i in rows[:8]],
    }

    # -- forward: the op table on the network's own parameter views ----------
    ctxs = []
    for layer in layers:
        p = {key: net.params[f"{layer.name}.{key}"] for key in layer.params}
        g = {key: net.grads[f"{layer.name}.{key}"] for key in layer.params}
        c = Context(layer, p, g)
        c.training, c.rng = True, r.dropout_rng
        ctxs.append(c)
    xs, ys = [], []
    h = xb
    forward = [_tensor("x", xb, layer="input", op="input", formula="the preprocessed batch")]
    for layer, c in zip(layers, ctxs):
        xs.append(h)
        h = OPS[layer.op].forward(c, h)
        ys.append(h)
        forward.append(
            _tensor(layer.name, h, layer=layer.name, op=layer.op, formula=OPS[layer.op].formula)
        )
    masks = {
        i: ctxs[i].buf("noise", xs[i].shape, xs[i].dtype).copy()
        for i, l in enumerate(layers)
        if l.op == "dropout" and ys[i] is not xs[i]
    }
    result["forward"] = forward

    # -- loss ------------------------------------------------------------------
    out = ys[-1] if ys else xb
    value, g_out = loss_fn.value_and_grad(out, yb)
    g_out = np.array(g_out, copy=True)
    texts = loss_fn.texts(out, yb)
    result["loss"] = {
        "kind": spec.loss.kind,
        "options": {k: v for k, v in spec.loss.options.items()},
        "value": float(value),
        "formula": texts["formula"],
        "targets": [float(v) for v in np.asarray(yb).ravel()[:SHOWN]],
    }

    # -- backward --------------------------------------------------------------
    need = []
    below = False
    for layer in layers:
        need.append(below)
        below = below or bool(layer.params)
    last = layers[-1].name if layers else "x"
    backward: list[dict[str, Any]] = [
        _tensor(f"dL/d{last}", g_out, layer="loss", formula=texts["grad"], of=len(layers) - 1)
    ]
    grads_of_outputs: dict[int, np.ndarray] = {len(layers) - 1: g_out}  # layer i -> dL/dy_i
    g = g_out
    fused = {k[len("fused:") :]: v for k, v in texts.items() if k.startswith("fused:")}
    for i in range(len(layers) - 1, -1, -1):
        layer, op = layers[i], OPS[layers[i].op]
        gx = op.backward(ctxs[i], xs[i], ys[i], g, need[i])
        below_name = layers[i - 1].name if i > 0 else "x"
        for key, text in op.grads:
            if key == "x":
                if gx is None:
                    continue
                note = fused.get(layer.op) if i == len(layers) - 1 else None
                row = _tensor(
                    f"dL/d{below_name}", gx, layer=layer.name, op=layer.op, formula=text, of=i - 1
                )
                if note:
                    row["fused"] = note
                backward.append(row)
                grads_of_outputs[i - 1] = np.array(gx, copy=True)
            else:
                name = f"{layer.name}.{key}"
                if name in net.grads:
                    backward.append(
                        _tensor(
                            f"dL/d{name}",
                            net.grads[name],
                            layer=layer.name,
                            op=layer.op,
                            formula=text,
                            param=name,
                        )
                    )
        if gx is None:
            break
        g = gx
    reg_value = float(losses.regularization(net, spec.regularize))
    if reg_value or (spec.regularize and (spec.regularize.l1 or spec.regularize.l2)):
        rg = spec.regularize
        terms = []
        if rg.l2:
            terms.append(f"{2 * rg.l2:g} W")
        if rg.l1:
            terms.append(f"{rg.l1:g} sign(W)")
        result["regularize"] = {
            "value": reg_value,
            "formula": "dL/dW += " + " + ".join(terms) + " for every linear weight W",
        }
        for row in backward:  # the parameter gradients now include the penalty
            if row.get("param") in net.weight_names:
                row.update(_tensor(row["name"], net.grads[row["param"]]))
    result["loss"]["total"] = float(value) + reg_value
    result["backward"] = backward

    # -- the finite-difference check ------------------------------------------
    f64 = _Float64(spec, net, xb, yb, masks)
    worst = 0.0
    for n_row, row in enumerate(backward):
        if "param" in row:
            name = row["param"]
            i = next(j for j, l in enumerate(layers) if name.startswith(l.name + "."))
            x64 = f64.params[name]
            chk = f64.check(
                net.grads[name], lambda i=i: f64.loss_from(i, f64.inputs[i]), x64, checks, n_row
            )
        else:
            i = row["of"]  # the gradient of layer i's output = the input of layer i + 1
            x64 = f64.inputs[i + 1].copy()
            chk = f64.check(
                grads_of_outputs[i],
                lambda i=i, x64=x64: f64.loss_from(i + 1, x64),
                x64,
                checks,
                n_row,
            )
        row["check"] = chk
        worst = max(worst, chk["max_rel_err"])
    ok = all(row["check"]["ok"] for row in backward)
    result["check"] = {
        "ok": ok,
        "max_rel_err": worst,
        "tolerance": TOLERANCE,
        "h": H,
        "entries_per_tensor": checks,
        "tensors": len(backward),
    }

    # -- gradient clipping and the optimizer step --------------------------------
    gnorm = math.sqrt(float(np.dot(net.grad.astype(np.float64), net.grad.astype(np.float64))))
    result["grad_norm"] = gnorm
    if spec.train.clip_grad_norm is not None:
        before = optim.clip_grad_norm(net.grad, spec.train.clip_grad_norm)
        result["clip"] = {
            "max_norm": spec.train.clip_grad_norm,
            "norm": before,
            "scaled": bool(before > spec.train.clip_grad_norm),
        }
    result["optimizer"] = _optimizer_step(spec, r.opt, net, lr)
    return result


def _optimizer_step(spec: ir.Spec, opt, net, lr: float) -> dict[str, Any]:
    """Take the real step; report it for the entry with the largest gradient."""
    from . import optim

    j = int(np.argmax(np.abs(net.grad))) if net.grad.size else 0
    name, index = _entry_name(net, j)
    before = {k: float(v[j]) for k, v in opt.state.items()}
    p0, g = float(net.theta[j]), float(net.grad[j])
    opt.step(net.theta, net.grad, lr)
    after = {k: float(v[j]) for k, v in opt.state.items()}
    p1 = float(net.theta[j])
    o = optim.resolved_options(spec.optimizer)
    return {
        "kind": spec.optimizer.kind,
        "rule": optim.describe(spec.optimizer).splitlines(),
        "t": int(opt.t),
        "lr": lr,
        "param": name,
        "index": index,
        "p": p0,
        "g": g,
        "state_before": before,
        "state_after": after,
        "p_new": p1,
        "worked": _worked(spec.optimizer.kind, o, opt.t, lr, p0, g, before),
    }


def _entry_name(net, j: int) -> tuple[str, list[int]]:
    for name, (start, stop) in net.offsets.items():
        if start <= j < stop:
            return name, [int(v) for v in np.unravel_index(j - start, net.params[name].shape)]
    return "?", []


def _n(v: float) -> str:
    return f"{v + 0.0:.6g}"  # + 0.0: no "-0"


def _o(v: float) -> str:
    """A number as an operand: negative ones in parentheses."""
    return f"({_n(v)})" if v < 0 else _n(v)


def _worked(kind: str, o: dict, t: int, lr: float, p: float, g: float, st: dict) -> list[str]:
    """The update rule with this entry's numbers, in float64 (fcspec's step is float32)."""
    lines = []
    wd = float(o.get("weight_decay", 0.0))
    if kind == "sgd":
        if wd:
            lines.append(f"g = {_n(g)} + {wd:g} * {_o(p)} = {_n(g + wd * p)}")
            g = g + wd * p
        mu, tau = float(o["momentum"]), float(o["dampening"])
        if mu:
            b0 = st.get("momentum_buffer", 0.0)
            b = g if t == 1 else mu * b0 + (1 - tau) * g
            lines.append(
                f"b = g = {_n(b)}"
                if t == 1
                else f"b = {mu:g} * {_o(b0)} + {1 - tau:g} * {_o(g)} = {_n(b)}"
            )
            if o["nesterov"]:
                lines.append(f"g = {_n(g)} + {mu:g} * {_o(b)} = {_n(g + mu * b)}")
                g = g + mu * b
            else:
                g = b
        lines.append(f"p = {_n(p)} - {lr:g} * {_o(g)} = {_n(p - lr * g)}")
    elif kind in ("adam", "adamw"):
        b1, b2 = (float(b) for b in o["betas"])
        eps = float(o["eps"])
        if wd and kind == "adamw":
            lines.append(f"p = {_n(p)} * (1 - {lr:g} * {wd:g}) = {_n(p * (1 - lr * wd))}")
            p = p * (1 - lr * wd)
        elif wd:
            lines.append(f"g = {_n(g)} + {wd:g} * {_o(p)} = {_n(g + wd * p)}")
            g = g + wd * p
        m0, v0 = st.get("exp_avg", 0.0), st.get("exp_avg_sq", 0.0)
        m = b1 * m0 + (1 - b1) * g
        v = b2 * v0 + (1 - b2) * g * g
        lines.append(f"m = {b1:g} * {_o(m0)} + {1 - b1:g} * {_o(g)} = {_n(m)}")
        lines.append(f"v = {b2:g} * {_n(v0)} + {1 - b2:g} * {_o(g)}^2 = {_n(v)}")
        if o["amsgrad"]:
            vm = max(st.get("max_exp_avg_sq", 0.0), v)
            lines.append(f"v_max = max({_n(st.get('max_exp_avg_sq', 0.0))}, {_n(v)}) = {_n(vm)}")
            v = vm
        new = p - lr / (1 - b1**t) * m / (math.sqrt(v / (1 - b2**t)) + eps)
        lines.append(
            f"p = {_n(p)} - {lr:g} / (1 - {b1:g}^{t}) * {_o(m)} / "
            f"(sqrt({_n(v)} / (1 - {b2:g}^{t})) + {eps:g}) = {_n(new)}"
        )
    return lines


# ---------------------------------------------------------------------------
# Text


def _vals(values: list[float], shape: list[int]) -> str:
    more = ", ..." if math.prod(shape) > len(values) else ""
    return "[" + ", ".join(f"{v + 0.0:.4g}" for v in values) + more + "]"


def _shape(shape: list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _check_text(c: dict) -> str:
    return f"{c['max_rel_err']:.1e} {'ok' if c['ok'] else 'FAIL'}"


def format_text(t: dict[str, Any]) -> str:
    """The trace as plain text: the forward pass, the loss, the backward pass with each
    gradient's formula and check, and the optimizer's update of one entry."""
    out: list[str] = []
    add = out.append
    order = "shuffled with seed {}".format(t["seed"]) if t["shuffle"] else "in file order"
    add(
        f"trace of {t['spec']} ({t['path']}): training step {t['step']} = epoch {t['epoch']}, "
        f"batch {t['step_in_epoch']} of {t['steps_per_epoch']}"
    )
    add(
        f"batch: {t['batch']} of the {t['train_rows']:,} training rows ({order}), "
        f"rows {', '.join(map(str, t['rows']))}{', ...' if t['batch'] > len(t['rows']) else ''}; "
        f"lr {t['lr']:g}"
    )
    add("values: the first entries of each tensor (row-major); |.| its 2-norm")
    add("")
    add("forward")
    w = max(len(r["name"]) for r in t["forward"] + t["backward"]) + 2
    for r in t["forward"]:
        head = f"  {r['name']:<{w}}{r['op']:<12}{_shape(r['shape']):<12}"
        add(f"{head}{r['formula']}")
        add(f"  {'':<{w}}{'':<12}{'':<12}{_vals(r['values'], r['shape'])}  |.| {r['norm']:.4g}")
    lo = t["loss"]
    opts = ", ".join(f"{k} = {v}" for k, v in lo["options"].items() if v not in (None, 0.0, "mean"))
    add("")
    add(f"loss {lo['kind']}{f'({opts})' if opts else ''} = {lo['value']:.6g}")
    add(f"  {lo['formula']}")
    add(f"  targets y: {_vals(lo['targets'], [t['batch']])}")
    if "regularize" in t:
        add(f"  + regularize {t['regularize']['value']:.6g} = {lo['total']:.6g}")
    add("")
    add(
        f"backward (g = dL/d(output of the layer); checked at {t['check']['entries_per_tensor']} entries each)"
    )
    current = None
    for r in t["backward"]:
        if r.get("layer") != current:
            current = r.get("layer")
            if current != "loss":
                add(f"  {current} ({r['op']})")
        indent = "  " if current == "loss" else "    "
        add(f"{indent}{r['name']:<{w}}{_shape(r['shape']):<12}= {r['formula']}")
        add(
            f"{indent}{'':<{w}}{'':<12}  {_vals(r['values'], r['shape'])}  |.| {r['norm']:.4g}"
            f"   finite differences: {_check_text(r['check'])}"
        )
        if r.get("fused"):
            add(f"{indent}{'':<{w}}{'':<12}  together with the loss: {r['fused']}")
    if "regularize" in t:
        add(f"  regularize: {t['regularize']['formula']} (included above)")
    add("")
    add(f"gradient norm {t['grad_norm']:.6g}")
    if "clip" in t:
        c = t["clip"]
        add(
            f"clip_grad_norm {c['max_norm']:g}: "
            + ("scaled down" if c["scaled"] else "below the limit, unchanged")
        )
    o = t["optimizer"]
    add("")
    add(f"optimizer step t = {o['t']}, lr {o['lr']:g}")
    for line in o["rule"]:
        add(f"  {line}")
    idx = ", ".join(map(str, o["index"]))
    add(f"  one entry, {o['param']}[{idx}] (the largest |g|): p = {_n(o['p'])}, g = {_n(o['g'])}")
    for line in o["worked"]:
        add(f"    {line}")
    for k in o["state_before"]:
        add(f"    {k}: {_n(o['state_before'][k])} -> {_n(o['state_after'][k])}")
    add(f"    fcspec's float32 step: p = {_n(o['p'])} -> {_n(o['p_new'])}")
    c = t["check"]
    add("")
    verdict = "all ok" if c["ok"] else "FAILED"
    add(
        f"gradient check: {c['tensors']} gradients, central differences in float64 (h = {c['h']:g}): "
        f"{verdict}, max relative error {c['max_rel_err']:.1e} (tolerance {c['tolerance']:g})"
    )
    return "\n".join(out) + "\n"
