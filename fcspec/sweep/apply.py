"""A trial's values -> the trial's own spec: the source with those values written in.

The edit is made on the text, at the spans the checker recorded, so the trial's
spec keeps the author's comments and layout; the sweep block is removed (a
trial is a plain spec that `fcspec run` trains), and the result is formatted
canonically by fmt.py.  An option the spec does not write yet is added to its
call (`adam` -> `adam(lr = 0.003)`) or block (`train { ... batch = 64 }`).
"""

from __future__ import annotations

import math
from typing import Any

from .. import ast
from ..fmt import format_source, value_text
from .space import Param, Sweep


def value_source(param: Param, value: Any) -> str:
    """A drawn value as the spec writes it.

    Numbers are written with 4 significant digits (readable in best.fc); the
    trial trains on the value as written, so results.csv reports that value.
    """
    if param.distribution == "choice":
        return str(value)
    if param.integer:
        return str(int(value))
    v = float(value)
    short = f"{v:.4g}"
    if math.isfinite(v) and param.low <= float(short) <= param.high:
        return short
    return repr(v)


def _offsets(text: str):
    starts = [0]
    for i, c in enumerate(text):
        if c == "\n":
            starts.append(i + 1)
    return lambda line, col: starts[line - 1] + col - 1


def trial_source(text: str, sweep: Sweep, values: dict[str, str], header: str = "") -> str:
    """The spec `text` with each path set to `values[path]` (source text), sweep block removed."""
    at = _offsets(text)
    edits: list[tuple[int, int, str]] = []
    calls: dict[int, tuple[ast.Call, dict[str, tuple[int | None, str]]]] = {}
    blocks: dict[str, tuple[Any, list[tuple[str, str]]]] = {}
    new_terms: list[str] = []
    for param in sweep.params:
        t = param.target
        new = values[param.path]
        if t.section in ("optimizer", "loss", "schedule", "layer"):
            calls.setdefault(id(t.call), (t.call, {}))[1][t.key] = (t.positional, new)
        elif t.section == "regularize":
            if t.call is not None:
                calls.setdefault(id(t.call), (t.call, {}))[1]["strength"] = (0, new)
            else:
                new_terms.append(f"{t.key}({new})")
        else:  # data / train settings
            existing = None
            if t.block is not None:
                existing = next(
                    (s for s in t.block.body if isinstance(s, ast.Assign) and s.name == t.key),
                    None,
                )
            if existing is not None:
                v = existing.value.span
                edits.append((at(v.line, v.col), at(v.end_line, v.end_col), new))
            else:
                blocks.setdefault(t.section, (t.block, []))[1].append((t.key, new))

    for call, changes in calls.values():
        s = call.span
        edits.append((at(s.line, s.col), at(s.end_line, s.end_col), _call_text(call, changes)))
    for section, (block, settings) in blocks.items():
        lines = "".join(f"\n    {k} = {v}" for k, v in settings)
        if block is None:
            edits.append((len(text), len(text), f"\n{section} {{{lines}\n}}\n"))
        else:  # just before the block's closing brace
            end = at(block.span.end_line, block.span.end_col) - 1
            edits.append((end, end, lines + "\n"))
    if new_terms:
        reg = next((p.target.block for p in sweep.params if p.target.section == "regularize"), None)
        if reg is None:
            edits.append((len(text), len(text), "\nregularize " + " + ".join(new_terms) + "\n"))
        else:
            end = at(reg.span.end_line, reg.span.end_col)
            edits.append((end, end, "".join(" + " + t for t in new_terms)))
    # The block goes, with the comment lines right above it (they are about the search).
    s = sweep.span
    lines = text.split("\n")
    first = s.line
    while first > 1 and lines[first - 2].strip().startswith("#"):
        first -= 1
    start = at(first, 1) if first < s.line else at(s.line, s.col)
    edits.append((start, at(s.end_line, s.end_col), ""))

    out = text
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        out = out[:start] + new + out[end:]
    return format_source(header + out)


def _call_text(call: ast.Call, changes: dict[str, tuple[int | None, str]]) -> str:
    """The call with some arguments replaced (positional or named) or added by name."""
    parts, done = [], set()
    for i, arg in enumerate(call.args):
        text = value_text(arg.value)
        for key, (pos, new) in changes.items():
            if arg.name == key or (arg.name is None and pos == i):
                text = new
                done.add(key)
        parts.append(f"{arg.name} = {text}" if arg.name else text)
    parts += [f"{k} = {new}" for k, (_, new) in changes.items() if k not in done]
    return f"{call.name}({', '.join(parts)})"
