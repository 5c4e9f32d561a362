"""What a study says, as files: results.csv, best.fc and sweep.png in the sweep folder.

Everything is read from the study's database, so `fcspec sweep SPEC --show`
writes the same files at any time, also while the sweep runs elsewhere.
"""

from __future__ import annotations

import csv
import io as _io
import math
from pathlib import Path
from typing import Any

from .. import io as fio
from .apply import trial_source
from .space import Sweep

COLUMNS = ("trial", "state", "epochs", "seconds")


def trial_folder(out: Path, number: int) -> Path:
    return out / f"trial_{number:04d}"


def rows(study, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial: its number, state, monitor value, epochs, seconds and values."""
    out = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        if state == "fail" and t.user_attrs.get("interrupted"):
            state = "interrupted"  # run again: its values were queued as a new trial
        values = t.user_attrs.get("values") or {k: str(v) for k, v in t.params.items()}
        value = t.value if t.value is not None else t.user_attrs.get("value")
        row = {
            "trial": t.number,
            "state": state,
            sweep.monitor: value,
            "epochs": t.user_attrs.get("epochs"),
            "seconds": t.user_attrs.get("seconds"),
        }
        row.update({p.path: values.get(p.path) for p in sweep.params})
        out.append(row)
    return out


def write_csv(path: Path, table: list[dict[str, Any]], sweep: Sweep) -> None:
    header = ["trial", "state", sweep.monitor, "epochs", "seconds"] + [p.path for p in sweep.params]
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in table:
        cells = []
        for k in header:
            v = r.get(k)
            if v is None:
                cells.append("")
            elif isinstance(v, float):
                cells.append(f"{v:.2f}" if k == "seconds" else repr(v))
            else:
                cells.append(str(v))
        w.writerow(cells)
    fio.atomic_write_text(path, buf.getvalue())


def best(table: list[dict[str, Any]], sweep: Sweep) -> dict[str, Any] | None:
    done = [
        r
        for r in table
        if r["state"] == "complete"
        and r[sweep.monitor] is not None
        and math.isfinite(r[sweep.monitor])
    ]
    if not done:
        return None
    sign = -1 if sweep.direction == "maximize" else 1
    return min(done, key=lambda r: (sign * r[sweep.monitor], r["trial"]))


def best_source(source: str, spec_path: str, sweep: Sweep, row: dict[str, Any], out: Path) -> str:
    values = {p.path: row[p.path] for p in sweep.params}
    header = (
        f"# The best trial of the sweep of {spec_path}: trial {row['trial']} "
        f"({trial_folder(out, row['trial'])}/),\n"
        f"# {sweep.monitor} {row[sweep.monitor]:.6g} after {row['epochs']} epochs.\n"
    )
    return trial_source(source, sweep, values, header)


def table_text(table: list[dict[str, Any]], sweep: Sweep, limit: int = 10) -> str:
    """The best `limit` finished trials as an aligned text table, best first."""
    sign = -1 if sweep.direction == "maximize" else 1
    done = [r for r in table if r[sweep.monitor] is not None and r["state"] != "running"]
    done.sort(key=lambda r: (sign * r[sweep.monitor], r["trial"]))
    header = ["trial", "state", sweep.monitor, "epochs", "seconds"] + [p.path for p in sweep.params]
    lines = [header]
    for r in done[:limit]:
        lines.append(
            [
                str(r["trial"]),
                r["state"],
                f"{r[sweep.monitor]:.4f}",
                str(r["epochs"] if r["epochs"] is not None else ""),
                f"{r['seconds']:.1f}" if r["seconds"] is not None else "",
            ]
            + [str(r[p.path]) for p in sweep.params]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(
            c.rjust(w) if i in (0, 2, 3, 4) else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths))
        ).rstrip()
        for line in lines
    )


def _x(p, row: dict[str, Any]) -> float:
    """Where a trial sits on a parameter's axis: its value, or a choice's position."""
    v = str(row[p.path])
    if p.distribution == "choice":
        if v not in p.choices:
            return math.nan
        # spread the trials of one choice a little, so equal values do not hide each other
        return p.choices.index(v) + ((row["trial"] * 0.618) % 1 - 0.5) * 0.3
    return float(v)


def plot(path: Path, table: list[dict[str, Any]], sweep: Sweep) -> None:
    """The monitor against each swept value: one panel per parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in table if r[sweep.monitor] is not None and math.isfinite(r[sweep.monitor])]
    top = best(table, sweep)
    n = len(sweep.params)
    cols = min(n, 3)
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, p in zip(axes.flat, sweep.params):
        if p.distribution == "choice":
            ax.set_xticks(range(len(p.choices)), p.choices)
            ax.set_xlim(-0.5, len(p.choices) - 0.5)
        elif p.log:
            ax.set_xscale("log")
        for state, style in (
            ("complete", {"color": "tab:blue", "label": "complete"}),
            ("pruned", {"facecolors": "none", "edgecolors": "tab:gray", "label": "pruned"}),
        ):
            pts = [r for r in shown if r["state"] == state]
            if pts:
                ax.scatter([_x(p, r) for r in pts], [r[sweep.monitor] for r in pts], s=28, **style)
        if top is not None:
            ax.scatter(
                [_x(p, top)], [top[sweep.monitor]], marker="*", s=180, color="tab:red", label="best"
            )
        ys = [r[sweep.monitor] for r in shown]
        if ys and min(ys) > 0 and max(ys) / min(ys) > 30:
            ax.set_yscale("log")  # a few diverging trials would flatten the rest
        ax.set_xlabel(p.path)
        ax.set_ylabel(sweep.monitor)
        ax.grid(alpha=0.3)
    if axes.flat[0].get_legend_handles_labels()[0]:
        axes.flat[0].legend(fontsize=8)
    word = "lower" if sweep.direction == "minimize" else "higher"
    fig.suptitle(f"{sweep.monitor} of {len(shown)} trials ({word} is better)")
    fig.tight_layout()
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    fio.atomic_write_bytes(path, buf.getvalue())


def write_all(study, sweep: Sweep, source: str, spec_path: str, out: Path, with_plot: bool):
    """results.csv and best.fc (and sweep.png); returns (table, best row or None)."""
    table = rows(study, sweep)
    write_csv(out / "results.csv", table, sweep)
    top = best(table, sweep)
    if top is not None:
        fio.atomic_write_text(out / "best.fc", best_source(source, spec_path, sweep, top, out))
    if with_plot and table:
        plot(out / "sweep.png", table, sweep)
    return table, top
