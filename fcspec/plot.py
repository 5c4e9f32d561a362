"""Pictures of a run: its curves, the first layer's weights as images, the decision boundary.

- `curves(run_dir)` -> curves.png: loss and metric with validation, the
  learning rate, per-layer weight and gradient norms and the fraction of dead
  ReLU units per epoch (from metrics.jsonl and layers.jsonl, so it works on a
  finished run and on one still running);
- `first_layer_weights` -> weights.png, for image inputs: each unit's weight
  row shown as an image;
- `decision_boundary` -> boundary.png, for a classifier of a 2-D input.

matplotlib is imported lazily (the `plot` extra), with the Agg backend, so
plotting needs no display and never opens a window.  Every PNG is written
atomically (fcspec.io).
"""

from __future__ import annotations

import io as _io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import io as fio
from . import ir
from .errors import FcspecError


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise FcspecError(
            "plotting needs matplotlib, which is not installed",
            hint="pip install -e '.[plot]' in fcspec's source checkout (or: pip install matplotlib)",
        ) from None
    return plt


def save(fig, path: Path) -> None:
    plt = pyplot()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    fio.atomic_write_bytes(path, buf.getvalue())


def _raw(pre, x: np.ndarray) -> np.ndarray:
    """Preprocessed inputs back in the data's own units (inverting (x / scale - shift) / divisor)."""
    return (x.astype(np.float64) * pre.divisor + pre.shift) * float(pre.scale)


def class_scores(spec: ir.Spec, out: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(predicted class, probability of class 1 for a two-class model, else None)."""
    if spec.task == "binary":
        p = out[:, 0].astype(np.float64)
        if spec.loss.kind == "bce_with_logits":
            p = 1 / (1 + np.exp(-p))
        return (p > 0.5).astype(np.int64), p
    z = out.astype(np.float64)
    if spec.loss.kind == "nll":  # log-probabilities
        prob = np.exp(z)
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        prob = e / e.sum(axis=1, keepdims=True)
    return prob.argmax(axis=1), (prob[:, 1] if prob.shape[1] == 2 else None)


def draws_boundary(spec: ir.Spec) -> bool:
    return tuple(spec.model.input_shape) == (2,) and spec.task in ("classification", "binary")


def decision_boundary(path: Path, spec: ir.Spec, net, train, pre, title: str = "") -> None:
    """The model's classes over the plane of a 2-D input, with the training points."""
    plt = pyplot()
    x = _raw(pre, train.x)
    y = np.asarray(train.y).reshape(len(x), -1)[:, 0]
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * (hi - lo) + 1e-9
    gx, gy = np.meshgrid(
        np.linspace(lo[0] - pad[0], hi[0] + pad[0], 300),
        np.linspace(lo[1] - pad[1], hi[1] + pad[1], 300),
    )
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    cls, p1 = class_scores(spec, net.predict(pre.apply(grid)))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if p1 is not None:  # two classes: the probability of class 1, the 0.5 line drawn
        cs = ax.contourf(
            gx, gy, p1.reshape(gx.shape), levels=np.linspace(0, 1, 21), cmap="RdBu_r", alpha=0.6
        )
        ax.contour(gx, gy, p1.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1.2)
        fig.colorbar(cs, ax=ax, label="P(class 1)", fraction=0.046, pad=0.04)
    else:
        k = int(max(cls.max(), y.max())) + 1
        ax.contourf(
            gx, gy, cls.reshape(gx.shape), levels=np.arange(k + 1) - 0.5, cmap="tab10", alpha=0.35
        )
    classes = np.unique(y)
    for c in classes:
        m = y == c
        color = ("#053061", "#67001f")[int(c)] if p1 is not None and c in (0, 1) else None
        ax.scatter(
            x[m, 0],
            x[m, 1],
            s=12,
            edgecolors="white",
            linewidths=0.4,
            c=color,
            label=f"class {int(c)}",
        )
    acc = float(np.mean(class_scores(spec, net.predict(train.x))[0] == y))
    ax.set_title(
        title
        or f"{spec.name} ({Path(spec.path).name}): decision boundary\ntrain accuracy {acc:.1%}",
        fontsize=10,
    )
    ax.set_xlabel("x[0]")
    ax.set_ylabel("x[1]")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    fig.tight_layout()
    save(fig, path)


# ---------------------------------------------------------------------------
# The training curves of a run folder.


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and "epoch" in r:
            xs.append(r["epoch"])
            ys.append(float(v))
    return xs, ys


def _layer_keys(rows: list[dict[str, Any]], suffix: str) -> list[str]:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k.endswith(suffix) and k not in keys:
                keys.append(k)
    return keys


def _epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def run_info(run_dir: Path) -> dict[str, Any]:
    """What a run folder says about itself: the spec's name and path, whether it finished."""
    info: dict[str, Any] = {"name": run_dir.name, "spec": None, "finished": False}
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            s = json.loads(summary.read_text())
            info.update(name=s.get("name", info["name"]), spec=s.get("spec"), finished=True)
            info["summary"] = s
        except (OSError, ValueError):
            pass
    ckpt = run_dir / "checkpoint.npz"
    if info["spec"] is None and ckpt.is_file():
        try:
            meta = json.loads(str(fio.load_npz(ckpt, "checkpoint")["meta"][()]))
            info.update(name=meta.get("spec_name", info["name"]), spec=meta.get("spec_path"))
        except (FcspecError, KeyError, ValueError):
            pass
    return info


def curves(run_dir: Path, path: Path | None = None, spec: ir.Spec | None = None) -> Path:
    """curves.png of a run folder (finished or still running): loss, metric, learning rate,
    per-layer weight and gradient norms, dead ReLUs.  Reads metrics.jsonl and layers.jsonl."""
    from .layerstats import FILE, read

    run_dir = Path(run_dir)
    history = read(run_dir / "metrics.jsonl")
    if not history:
        raise FcspecError(f"{run_dir}: no metrics.jsonl rows yet (no epoch has finished)")
    layers = read(run_dir / FILE)
    info = run_info(run_dir)
    name = spec.name if spec is not None else info["name"]
    where = str(spec.path) if spec is not None else info["spec"]
    plt = pyplot()
    metric = next(
        (
            k
            for k in ("accuracy", "mae", "rmse")
            if any(f"train_{k}" in r or f"val_{k}" in r for r in history)
        ),
        None,
    )
    panels = ["loss"] + ([metric] if metric else []) + ["lr"]
    weight_keys = _layer_keys(layers, ".weight.norm")
    if weight_keys:
        panels += ["weights", "grads"]
    dead_keys = _layer_keys(layers, ".dead")
    if dead_keys:
        panels.append("dead")
    ncols = 3
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[len(panels) :]:
        ax.axis("off")
    last = history[-1]
    state = "finished" if info["finished"] else "running"
    title = f"{name}" + (f" ({where})" if where else "") + f": {state}, epoch {last.get('epoch')}"
    s = info.get("summary") or {}
    figures = [
        f"{k} {s[k]:.4g}"
        for k in ("test_accuracy", "test_loss", "test_mae")
        if isinstance(s.get(k), (int, float))
    ]
    if figures:
        title += "  |  " + "  ".join(figures)
    fig.suptitle(title, fontsize=12)
    for ax, panel in zip(flat, panels):
        if panel in ("loss", metric):
            for split, style in (("train", "-"), ("val", "--")):
                xs, ys = _series(history, f"{split}_{panel}")
                if xs:
                    ax.plot(
                        xs,
                        ys,
                        style,
                        marker="." if len(xs) < 40 else None,
                        label=f"{split}_{panel}",
                    )
            ax.set_title(panel)
            ax.legend(fontsize=8)
            if panel == "loss" and all(v > 0 for v in _series(history, "train_loss")[1]):
                ax.set_yscale("log")
        elif panel == "lr":
            xs, ys = _series(history, "lr")
            ax.plot(xs, ys, color="tab:purple", marker="." if len(xs) < 40 else None)
            ax.set_title("learning rate (schedule)")
            if ys and min(ys) > 0 and max(ys) / min(ys) > 20:
                ax.set_yscale("log")
        elif panel in ("weights", "grads"):
            suffix = ".weight.norm" if panel == "weights" else ".weight.grad_norm"
            for k in weight_keys:
                layer = k[: -len(".weight.norm")]
                xs, ys = _series(layers, layer + suffix)
                ax.plot(xs, ys, label=layer)
            ax.set_title(
                "weight norm per layer"
                if panel == "weights"
                else "gradient norm per layer (last step)"
            )
            if panel == "grads":
                ax.set_yscale("log")
            ax.legend(fontsize=8)
        elif panel == "dead":
            for k in dead_keys:
                xs, ys = _series(layers, k)
                ax.plot(xs, ys, label=k[: -len(".dead")])
            ax.set_ylim(-0.02, 1.02)
            ax.set_title("dead ReLU units (fraction)")
            ax.legend(fontsize=8)
        _epoch_axis(ax)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    target = Path(path) if path is not None else run_dir / "curves.png"
    save(fig, target)
    return target


def image_shape(spec: ir.Spec) -> tuple[int, int] | None:
    """(height, width) when the inputs are images: a sample of 2+ dimensions, or a flat one
    from an image source (MNIST, IDX, the 8x8 digits) whose length is a square."""
    shape = tuple(spec.model.input_shape)
    if len(shape) >= 2:
        return shape[-2], shape[-1]
    src = spec.data.train if spec.data is not None else None
    image_source = src is not None and (
        src.kind in ("mnist", "idx") or (src.kind == "dataset" and src.args.get("name") == "digits")
    )
    side = math.isqrt(shape[0]) if shape else 0
    if image_source and side * side == shape[0] and side >= 4:
        return side, side
    return None


def first_layer_weights(
    path: Path, spec: ir.Spec, params: dict[str, np.ndarray], count: int = 32
) -> Path | None:
    """The first linear layer's weight rows as images (one tile per unit): what each unit
    looks for in the input.  None when the inputs are not images."""
    hw = image_shape(spec)
    first = next((l for l in spec.model.layers if l.op == "linear"), None)
    if hw is None or first is None:
        return None
    w = np.asarray(params[f"{first.name}.weight"], np.float64)
    h, wd = hw
    if w.shape[1] % (h * wd):
        return None
    k = min(count, w.shape[0])
    plt = pyplot()
    cols = min(8, k)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.6), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            tile = w[i].reshape(-1, h, wd).mean(axis=0)  # channels averaged
            m = float(np.abs(tile).max()) or 1.0
            ax.imshow(tile, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
            ax.set_title(str(i), fontsize=7)
    fig.suptitle(
        f"{spec.name}: {first.name}.weight, first {k} of {w.shape[0]} units (red +, blue -)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    save(fig, path)
    return path


def pictures(run_dir: Path, spec: ir.Spec, net, prepared) -> list[Path]:
    """Every picture that applies to a run: curves.png, weights.png for image inputs,
    boundary.png for a classifier of a 2-D input."""
    run_dir = Path(run_dir)
    made = [curves(run_dir, spec=spec)]
    tiles = first_layer_weights(run_dir / "weights.png", spec, net.params)
    if tiles is not None:
        made.append(tiles)
    if draws_boundary(spec) and prepared is not None:
        path = run_dir / "boundary.png"
        decision_boundary(path, spec, net, prepared.train, prepared.preprocess)
        made.append(path)
    return made


def plot_run(run_dir: str | Path) -> list[Path]:
    """`fcspec plot RUN_DIR`: the pictures of a finished or running run.  curves.png needs
    only the run's files; weights.png and boundary.png also need its spec (the path the
    run recorded) and weights.npz, and are skipped when those are gone."""
    from . import data as fdata
    from . import interpreter
    from .check import check_file

    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FcspecError(
            f"{run_dir}: not a run folder, or no epoch has finished (no metrics.jsonl)"
        )
    info = run_info(run_dir)
    spec = None
    if info["spec"] and Path(info["spec"]).is_file():
        result = check_file(info["spec"])
        spec = result.spec if not result.errors else None
    weights = run_dir / "weights.npz"
    if spec is None or not weights.is_file():
        return [curves(run_dir)]
    net = interpreter.Network(spec.model, params=fio.load_npz(weights, "weights"))
    prepared = fdata.prepare(spec) if draws_boundary(spec) else None
    return pictures(run_dir, spec, net, prepared)
