"""Settings changed from Python: `{"optimizer.lr": 0.01, "train.batch": 64}` applied to a spec's text.

An override edits the AST (what was written), and the result is formatted
back to source (`fmt.py`) and checked like any spec, so a bad value gets the
checker's own located error, shown on the rewritten line.  Paths:

    loss | optimizer | schedule              the whole call: "sgd(lr = 0.1)"
    loss.OPT | optimizer.OPT | schedule.OPT  one option of that call (named or positional)
    regularize.l1 | regularize.l2            the strength (None removes the term)
    data.KEY | train.KEY                     a setting of the block: "train.batch": 64
    train.early_stop.OPT                     an option of early_stop(...)
    model.input                              the input shape: [64] or (64,)
    model.outputs                            the units of the last linear layer
    LAYER.OPT or model.LAYER.OPT             an option of the layer's call: "fc1.units": 32

Values are Python numbers, bools, tuples / lists, or strings.  A string that
reads as fcspec source (`"standard"`, `"sgd(lr = 0.1)"`, `'"data.csv"'`) is
used as written; any other string becomes a string literal.  `None` removes
the setting, so its default applies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from . import ast, catalog
from .errors import FcspecError, Span, SpecError

CALL_SECTIONS = {
    "loss": catalog.LOSSES,
    "optimizer": catalog.OPTIMIZERS,
    "schedule": catalog.SCHEDULES,
}
BLOCKS = {"data": catalog.DATA_KEYS, "train": catalog.TRAIN_KEYS}


def apply(text: str, overrides: Mapping[str, Any] | None, file: str = "<string>") -> str:
    """`text` with every override applied, as canonical source (unchanged text without any)."""
    if not overrides:
        return text
    from .fmt import format_program
    from .syntax import parse

    program = parse(text, file)
    for key, value in overrides.items():
        if not isinstance(key, str) or not key:
            raise FcspecError(f"override {key!r}: a path such as 'optimizer.lr' is expected")
        program = _apply_one(program, key, value)
    return format_program(program)


def value_source(value: Any) -> str:
    """fcspec source text for a Python value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FcspecError(f"{value!r} is not a number fcspec can write")
        return repr(value)
    if hasattr(value, "item") and getattr(value, "shape", None) == ():  # a NumPy scalar
        return value_source(value.item())
    if isinstance(value, tuple):
        inner = ", ".join(value_source(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(value_source(v) for v in value) + "]"
    if isinstance(value, str):
        try:
            _parse_value(value)
            return value
        except SpecError:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise FcspecError(f"{value!r} ({type(value).__name__}) cannot be written in a spec")


def _parse_value(text: str) -> ast.Value:
    from .syntax import parse

    program = parse(f"train {{ v = {text} }}", "<override>")
    (section,) = program.sections
    (stmt,) = section.body
    return stmt.value


def _value(key: str, value: Any) -> ast.Value:
    text = value_source(value)
    try:
        return _parse_value(text)
    except SpecError:
        raise FcspecError(f"override {key!r}: {text!r} is not a value fcspec can read") from None


PATHS_HINT = (
    "override paths: loss / optimizer / schedule [.OPTION], regularize.l1 / .l2, data.KEY, "
    "train.KEY, train.early_stop.OPTION, model.input, model.outputs, LAYER.OPTION"
)


def _unknown(key: str, why: str) -> FcspecError:
    return FcspecError(f"override {key!r}: {why}", hint=PATHS_HINT)


def _apply_one(program: ast.Program, key: str, value: Any) -> ast.Program:
    head, _, rest = key.partition(".")
    if head in CALL_SECTIONS or head == "regularize":
        return _call_section(program, key, head, rest, value)
    if head in BLOCKS:
        return _block(program, key, head, rest, value)
    if head == "model":
        return _model(program, key, rest, value)
    if rest and head in _layer_names(program):  # LAYER.OPTION, as a sweep block writes it
        return _model(program, key, key, value)
    raise _unknown(key, f"no section or layer named {head!r}")


def _layer_names(program: ast.Program) -> list[str]:
    return [
        stmt.name
        for s in program.sections
        if isinstance(s, ast.ModelSection)
        for stmt in s.body
        if isinstance(stmt, ast.Chain) and stmt.name
    ]


def _sections(program: ast.Program, keyword: str) -> list[int]:
    def kw(s) -> str:
        return "model" if isinstance(s, ast.ModelSection) else s.keyword

    return [i for i, s in enumerate(program.sections) if kw(s) == keyword]


def _replace_section(program: ast.Program, i: int | None, section) -> ast.Program:
    sections = list(program.sections)
    if i is None:
        sections.append(section)
    elif section is None:
        del sections[i]
    else:
        sections[i] = section
    return dataclasses.replace(program, sections=tuple(sections))


def _end_span(program: ast.Program) -> Span:
    # Sections added by an override go after everything (comments stay where they were).
    last = max((s.span.end_line for s in program.sections), default=0)
    return Span(program.file, last + 1, 1, last + 1, 1)


def _set_arg(call: ast.Call, sig: catalog.Sig | None, name: str, value: ast.Value | None, key: str):
    """`call` with option `name` set to `value` (None removes it)."""
    if sig is not None and name not in sig.opts:
        known = ", ".join(sig.opts) or "no options"
        raise _unknown(key, f"`{call.name}` has no option {name!r} (it takes {known})")
    positional = list(sig.positional) if sig is not None else []
    args = list(call.args)
    found = None
    pos = 0
    for j, a in enumerate(args):
        if a.name is None:
            if pos < len(positional) and positional[pos] == name:
                found = j
            pos += 1
        elif a.name == name:
            found = j
    if found is not None:
        if value is None:
            if args[found].name is None and found != len(args) - 1:
                # removing a positional in the middle would shift the others: name them
                args = [_named(a, positional, k) for k, a in enumerate(args)]
            del args[found]
        else:
            args[found] = dataclasses.replace(args[found], value=value)
    elif value is not None:
        args.append(ast.Arg(name, value, call.span))
    return dataclasses.replace(call, args=tuple(args), parens=bool(args) or call.parens)


def _named(a: ast.Arg, positional: list[str], k: int) -> ast.Arg:
    return (
        a
        if a.name is not None or k >= len(positional)
        else dataclasses.replace(a, name=positional[k])
    )


def _call_section(program, key, head, rest, value):
    idx = _sections(program, head)
    i = idx[0] if idx else None
    section = program.sections[i] if i is not None else None
    if head == "regularize":
        if rest not in catalog.REGULARIZERS:
            raise _unknown(key, "regularize takes l1 or l2")
        calls = [c for c in (section.calls if section else ()) if c.name != rest]
        if value is not None:
            strength = _value(key, value)
            span = section.span if section else _end_span(program)
            calls.append(ast.Call(rest, (ast.Arg(None, strength, span),), True, span, span))
        if not calls:
            return _replace_section(program, i, None) if i is not None else program
        if section is None:
            span = _end_span(program)
            return _replace_section(
                program, None, ast.CallSection("regularize", tuple(calls), span, span)
            )
        return _replace_section(program, i, dataclasses.replace(section, calls=tuple(calls)))
    if not rest:  # the whole call
        if value is None:
            return _replace_section(program, i, None) if i is not None else program
        call = _value(key, value)
        if not isinstance(call, ast.Call):
            raise _unknown(key, f"{head} takes a call such as `adam(lr = 0.001)`")
        if section is None:
            span = _end_span(program)
            return _replace_section(program, None, ast.CallSection(head, (call,), span, span))
        return _replace_section(program, i, dataclasses.replace(section, calls=(call,)))
    if section is None:
        raise _unknown(
            key, f"the spec has no {head} section to set {rest!r} in; set {head!r} first"
        )
    (call,) = section.calls[:1]
    table = CALL_SECTIONS[head]
    name = catalog.SCHEDULE_ALIASES.get(call.name, call.name) if head == "schedule" else call.name
    new = _set_arg(call, table.get(name), rest, None if value is None else _value(key, value), key)
    return _replace_section(program, i, dataclasses.replace(section, calls=(new,)))


def _block(program, key, head, rest, value):
    name, _, sub = rest.partition(".")
    idx = _sections(program, head)
    i = idx[0] if idx else None
    section = program.sections[i] if i is not None else None
    body = list(section.body) if section else []
    span = section.span if section else _end_span(program)
    if head == "train" and name == "early_stop":
        j = next(
            (k for k, s in enumerate(body) if isinstance(s, ast.Call) and s.name == name), None
        )
        if not sub:
            new = None if value is None else _value(key, value)
            if new is not None and not (isinstance(new, ast.Call) and new.name == name):
                raise _unknown(key, "early_stop takes a call such as `early_stop(patience = 5)`")
        else:
            base = body[j] if j is not None else ast.Call(name, (), True, span, span)
            new = _set_arg(
                base, catalog.EARLY_STOP, sub, None if value is None else _value(key, value), key
            )
    else:
        if name not in BLOCKS[head] or sub:
            known = ", ".join(BLOCKS[head])
            raise _unknown(key, f"the {head} section has no setting {rest!r} (it has {known})")
        j = next(
            (k for k, s in enumerate(body) if isinstance(s, ast.Assign) and s.name == name), None
        )
        new = None
        if value is not None:
            stmt_span = (
                body[j].span
                if j is not None
                else Span(span.file, span.end_line, 1, span.end_line, 1)
            )
            new = ast.Assign(name, _value(key, value), stmt_span, stmt_span)
    if j is not None:
        if new is None:
            del body[j]
        else:
            body[j] = new
    elif new is not None:
        body.append(new)
    if section is None:
        if not body:
            return program
        return _replace_section(program, None, ast.BlockSection(head, tuple(body), span, span))
    return _replace_section(program, i, dataclasses.replace(section, body=tuple(body)))


def _model(program, key, rest, value):
    idx = _sections(program, "model")
    if not idx:
        raise _unknown(key, "the spec has no model section")
    i = idx[0]
    section = program.sections[i]
    body = list(section.body)
    layer, _, opt = rest.partition(".")
    if layer == "input" and not opt:
        if value is None:
            raise _unknown(key, "the model's input cannot be removed")
        j = next((k for k, s in enumerate(body) if isinstance(s, ast.Input)), None)
        shape = _value(key, value)
        if j is None:
            body.insert(0, ast.Input(shape, section.span))
        else:
            body[j] = dataclasses.replace(body[j], shape=shape)
        return _replace_section(program, i, dataclasses.replace(section, body=tuple(body)))
    if layer == "outputs" and not opt:
        # the width of the output: the last linear layer's units (like `linear(outputs)`)
        found = [
            (k, c)
            for k, s in enumerate(body)
            if isinstance(s, ast.Chain)
            for c, call in enumerate(s.calls)
            if call.name == "linear"
        ]
        if not found or value is None:
            raise _unknown(key, "the model has no linear layer to set the outputs of")
        k, c = found[-1]
        chain = body[k]
        call = _set_arg(chain.calls[c], catalog.LAYERS["linear"], "units", _value(key, value), key)
        calls = list(chain.calls)
        calls[c] = call
        body[k] = dataclasses.replace(chain, calls=tuple(calls))
        return _replace_section(program, i, dataclasses.replace(section, body=tuple(body)))
    j = next((k for k, s in enumerate(body) if isinstance(s, ast.Chain) and s.name == layer), None)
    if j is None or not opt:
        names = ", ".join(s.name for s in body if isinstance(s, ast.Chain) and s.name)
        raise _unknown(key, f"no layer named {layer!r} (named layers: {names or 'none'})")
    chain = body[j]
    first = chain.calls[0]
    new = _set_arg(
        first,
        catalog.LAYERS.get(first.name),
        opt,
        None if value is None else _value(key, value),
        key,
    )
    body[j] = dataclasses.replace(chain, calls=(new, *chain.calls[1:]))
    return _replace_section(program, i, dataclasses.replace(section, body=tuple(body)))
