"""Pictures of a run: the decision boundary of a 2-D model.

matplotlib is imported lazily (the `plot` extra), with the Agg backend, so
plotting needs no display and never opens a window.  Every PNG is written
atomically (fcspec.io).
"""

from __future__ import annotations

import io as _io
from pathlib import Path

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
            hint="pip install -e '.[plot]'",
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
