"""AST -> IR, with every judgement about meaning.

One pass collects all errors and warnings (not just the first), each located
at the source it is about; `compile_source` raises them together as one
`SpecError`.  Nothing here reads data files: `fcspec check` is static.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import ast, catalog, ir
from .catalog import Opt, Sig
from .errors import Diagnostic, Span, SpecError, closest
from .syntax import parse

_GENERATED = ("n", "noise", "seed")  # the options of the generated playground data sets

MAX_SPEC_BYTES = 1 << 20  # a .fc file is a page of text; anything bigger is surely not one


@dataclass
class Result:
    """What checking a file gives: the IR (when there were no errors) and every diagnostic."""

    spec: ir.Spec | None
    diagnostics: list[Diagnostic]
    source: str | None
    sweep: Any = None  # a sweep.space.Sweep when the spec has a valid sweep block

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "warning"]


def read_source(path: str | Path) -> str:
    """The text of a spec file; any unreadable input becomes one located SpecError."""
    p = Path(path)
    name = str(path)

    def fail(message: str, hint: str | None = None) -> SpecError:
        return SpecError([Diagnostic("error", message, Span(name, 1, 1, 1, 1), hint)])

    from .files import file_problem, read_limited  # no NumPy: check stays light

    problem = file_problem(p)
    if problem == "is a folder, not a file":
        raise fail("is a directory, not a .fc file")
    if problem is not None:
        raise fail(problem)

    try:
        too_big = _too_big(name, p.stat().st_size)
        if too_big:
            raise SpecError([too_big])
        with open(p, "rb") as f:
            raw = read_limited(f, MAX_SPEC_BYTES)  # at most the limit + 1: st_size is not trusted
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as e:
        raise fail(f"cannot read the file: {e.strerror or e}") from None
    if len(raw) > MAX_SPEC_BYTES:  # it grew while being read
        raise SpecError([_too_big(name, len(raw))])
    if b"\x00" in raw:
        raise SpecError([_binary(name)])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise SpecError(
            [
                Diagnostic(
                    "error",
                    f"the file is not UTF-8 text (byte 0x{raw[e.start]:02x})",
                    Span(name, line, col, line, col + 1),
                    "save the spec as UTF-8",
                )
            ]
        ) from None
    if text.startswith("\ufeff"):  # a BOM some editors write: harmless, drop it
        text = text[1:]
    return text


def _too_big(name: str, size: int) -> Diagnostic | None:
    if size <= MAX_SPEC_BYTES:
        return None
    return Diagnostic(
        "error",
        f"file is {size / 1e6:.1f} MB; a .fc spec is text of at most {MAX_SPEC_BYTES // 1024} KB",
        Span(name, 1, 1, 1, 1),
        "is this the right file?",
    )


def _binary(name: str) -> Diagnostic:
    return Diagnostic(
        "error",
        "this is a binary file, not a .fc spec (it contains NUL bytes)",
        Span(name, 1, 1, 1, 1),
    )


def check_text(text: str, path: str = "<string>") -> Result:
    """What `check_file` says of a file holding `text`: an editor's buffer, saved or not."""
    problem = _too_big(path, len(text.encode("utf-8", "surrogatepass"))) or (
        _binary(path) if "\x00" in text else None
    )
    if problem:
        return Result(None, [problem], None)
    if text.startswith(
        "\ufeff"
    ):  # a BOM: blank it rather than drop it, so columns stay the editor's
        text = " " + text[1:]
    return check_source(text, path)


def model_of(program: ast.Program) -> ir.Model | None:
    """The checked model alone (an editor's shapes while other sections are still broken)."""
    section = next((s for s in program.sections if isinstance(s, ast.ModelSection)), None)
    return _Checker(program, program.file).model(section) if section else None


def check_file(path: str | Path) -> Result:
    try:
        text = read_source(path)
    except SpecError as e:
        return Result(None, e.diagnostics, None)
    return check_source(text, str(path))


def check_source(text: str, path: str = "<string>") -> Result:
    try:
        program = parse(text, path)
    except SpecError as e:
        return Result(None, e.diagnostics, text)
    checker = _Checker(program, path)
    spec = checker.run()
    errors = [d for d in checker.diagnostics if d.severity == "error"]
    if errors or spec is None:
        return Result(None, checker.diagnostics, text)
    return Result(dataclasses.replace(spec, source=text), checker.diagnostics, text, checker.sweep)


def compile_source(text: str, path: str = "<string>") -> ir.Spec:
    """Source text -> IR, or a SpecError carrying every error (warnings are dropped)."""
    result = check_source(text, path)
    if result.errors:
        raise SpecError(result.errors, result.source)
    assert result.spec is not None
    return result.spec


def load_spec(path: str | Path) -> ir.Spec:
    """A `.fc` file -> IR, or a SpecError carrying every error."""
    result = check_file(path)
    if result.errors:
        raise SpecError(result.errors, result.source)
    assert result.spec is not None
    return result.spec


# ---------------------------------------------------------------------------


def _did_you_mean(name: str, options) -> str | None:
    close = closest(name, options)
    return f"did you mean `{close}`?" if close else None


def _describe(value: ast.Value) -> str:
    if isinstance(value, ast.Number):
        return f"number {value.text}"
    if isinstance(value, ast.String):
        return f'string "{value.value}"'
    if isinstance(value, ast.Call):
        return f"`{value.name}`" if not value.parens else f"call `{value.name}(...)`"
    if isinstance(value, ast.List):
        return "a list"
    return "a tuple"


class _Invalid(Exception):
    """A value that could not be converted; already reported."""


class _Checker:
    def __init__(self, program: ast.Program, path: str):
        self.program = program
        self.path = path
        self.diagnostics: list[Diagnostic] = []
        self.layer_calls: dict[str, ast.Call] = {}  # every layer's name -> its call, for sweeps
        self.sweep = None
        self._auto: list[str] = []  # widths the data gives: "input", "outputs"

    # ---- reporting -------------------------------------------------------
    def error(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic("error", message, span, hint))

    def warn(self, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic("warning", message, span, hint))

    def _end_span(self) -> Span:
        secs = self.program.sections
        if secs:
            s = secs[-1].span
            return Span(self.path, s.end_line, s.end_col, s.end_line, s.end_col + 1)
        return Span(self.path, 1, 1, 1, 2)

    # ---- values ----------------------------------------------------------
    def convert(self, opt: Opt, value: ast.Value, what: str) -> Any:
        """Convert an AST value to the option's type and check its range; report and raise _Invalid."""
        kind = opt.kind

        def bad(expected: str | None = None, hint: str | None = None):
            exp = expected or catalog.KIND_WORDS[kind]
            if kind == "choice" and not expected:
                exp = "one of " + ", ".join(opt.choices)
            self.error(f"{what} must be {exp}, not {_describe(value)}", value.span, hint)
            raise _Invalid

        if kind == "int":
            if not isinstance(value, ast.Number):
                bad()
            if not isinstance(value.value, int):
                if float(value.value).is_integer():
                    out = int(value.value)
                else:
                    bad()
            else:
                out = value.value
        elif kind == "float":
            if not isinstance(value, ast.Number):
                bad()
            out = float(value.value)
            if not math.isfinite(out):
                bad("a finite number")
        elif kind == "bool":
            if not (
                isinstance(value, ast.Call) and not value.parens and value.name in ("true", "false")
            ):
                bad()
            out = value.name == "true"
        elif kind == "str":
            if not isinstance(value, ast.String):
                hint = (
                    f'write it in double quotes: "{value.name}"'
                    if isinstance(value, ast.Call)
                    else None
                )
                bad(hint=hint)
            out = value.value
        elif kind == "choice":
            if isinstance(value, ast.Call) and not value.parens:
                out = value.name
            elif isinstance(value, ast.String):
                out = value.value
            else:
                bad()
            if out not in opt.choices:
                self.error(
                    f"{what} must be one of {', '.join(opt.choices)}, not `{out}`",
                    value.span,
                    _did_you_mean(out, opt.choices),
                )
                raise _Invalid
        elif kind in ("floats", "ints"):
            if not isinstance(value, (ast.List, ast.Tuple)):
                bad()
            items = []
            for item in value.items:
                sub = Opt("int" if kind == "ints" else "float")
                items.append(self.convert(sub, item, f"each item of {what}"))
            out = tuple(items)
        elif kind == "pair":
            if not isinstance(value, (ast.List, ast.Tuple)) or len(value.items) != 2:
                bad()
            out = tuple(
                self.convert(Opt("float"), item, f"each item of {what}") for item in value.items
            )
        elif kind == "names":
            if not isinstance(value, ast.List) or not all(
                isinstance(i, ast.Call) and not i.parens for i in value.items
            ):
                bad()
            out = tuple(i.name for i in value.items)
        elif kind == "name_or_index":
            if isinstance(value, ast.String):
                out = value.value
            elif isinstance(value, ast.Number) and isinstance(value.value, int):
                out = value.value
            else:
                bad()
        elif kind == "columns":
            if not isinstance(value, ast.List):
                bad()
            out = tuple(
                self.convert(Opt("name_or_index"), i, f"each item of {what}") for i in value.items
            )
        elif kind == "delimiter":
            if isinstance(value, ast.Call) and not value.parens and value.name == "auto":
                out = "auto"
            elif isinstance(value, ast.String) and len(value.value) == 1:
                out = value.value
            else:
                bad()
        elif kind == "int_or_full":
            if isinstance(value, ast.Call) and not value.parens and value.name == "full":
                return None
            if not isinstance(value, ast.Number):
                bad()
            return self.convert(Opt("int", check=opt.check), value, what)
        else:  # pragma: no cover - catalog kinds are fixed
            raise AssertionError(kind)
        if opt.check is not None:
            problem = opt.check(out)
            if problem:
                self.error(
                    f"{what} {problem}, got {value.text if isinstance(value, ast.Number) else out}",
                    value.span,
                )
                raise _Invalid
        return out

    def bind(
        self, call: ast.Call, sig: Sig, what: str, defaults: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Span]] | None:
        """Match a call's arguments to a signature; fill defaults (`defaults` over the row's:
        those the rest of the spec decides) and apply the row's rules.  None when anything
        was wrong."""
        values: dict[str, Any] = {}
        spans: dict[str, Span] = {}
        ok = True
        names = list(sig.opts)
        positional_done = False
        for i, arg in enumerate(call.args):
            if arg.name is None:
                if positional_done:
                    self.error(
                        "a positional argument cannot follow a named one",
                        arg.span,
                        f"name it: `{sig.positional[i] if i < len(sig.positional) else 'name'} = ...`",
                    )
                    ok = False
                    continue
                if i >= len(sig.positional):
                    if not sig.opts:
                        self.error(f"{what} takes no arguments", arg.span)
                    elif not sig.positional:
                        self.error(
                            f"{what} takes only named arguments ({', '.join(names)})",
                            arg.span,
                            f"write `{names[0]} = ...`",
                        )
                    else:
                        n = len(sig.positional)
                        self.error(
                            f"{what} takes {n} positional argument{'s' if n > 1 else ''} "
                            f"({', '.join(sig.positional)}), got more",
                            arg.span,
                            "name the others: "
                            + ", ".join(f"`{k} = ...`" for k in names if k not in sig.positional),
                        )
                    ok = False
                    continue
                key = sig.positional[i]
            else:
                positional_done = True
                key = arg.name
                if key not in sig.opts:
                    if not sig.opts:
                        self.error(f"{what} takes no arguments", arg.span)
                    else:
                        hint = _did_you_mean(key, names) or f"{what} takes {', '.join(names)}"
                        self.error(f"unknown option `{key}` for {what}", arg.span, hint)
                    ok = False
                    continue
            if key in values or key in spans:
                self.error(f"`{key}` is given twice", arg.span)
                ok = False
                continue
            try:
                values[key] = self.convert(sig.opts[key], arg.value, f"`{key}`")
                spans[key] = arg.value.span
            except _Invalid:
                spans[key] = arg.value.span
                ok = False
        for key, opt in sig.opts.items():
            if key not in spans:
                if opt.required:
                    self.error(
                        f"{what} needs `{key}`",
                        call.span,
                        f"write `{call.name}({key} = ...)`"
                        if key not in sig.positional
                        else f"for example `{call.name}({_example(opt)})`",
                    )
                    ok = False
                else:
                    values[key] = (defaults or {}).get(key, opt.default)
        if not ok:
            return None
        # Catalog order, whatever order they were written in: explain and the IR read the same.
        values = {k: values[k] for k in sig.opts if k in values}
        problems = catalog.rules(sig, values)
        for p in problems:
            self.error(p.message, spans.get(p.key, call.span), p.hint)
        return None if problems else (values, spans)

    # ---- sections --------------------------------------------------------
    def run(self) -> ir.Spec | None:
        if not self.program.sections:
            self.error(
                "the spec is empty",
                Span(self.path, 1, 1, 1, 1),
                "a spec needs at least a model, a loss and an optimizer, e.g. "
                "`model Net { input [4]  out = linear(3) }  loss cross_entropy  optimizer adam`",
            )
            return None
        seen: dict[str, ast.Section] = {}
        for section in self.program.sections:
            kw = section.keyword if not isinstance(section, ast.ModelSection) else "model"
            if kw in seen:
                self.error(
                    f"duplicate `{kw}` section (the first is at line {seen[kw].span.line})",
                    section.keyword_span,
                    "join the terms with `+`: `regularize l1(...) + l2(...)`"
                    if kw == "regularize"
                    else None,
                )
                continue
            seen[kw] = section

        model = self.model(seen.get("model"))  # type: ignore[arg-type]
        loss, task = self.loss(seen.get("loss"), model)  # type: ignore[arg-type]
        optimizer = self.optimizer(seen.get("optimizer"))  # type: ignore[arg-type]
        reg = self.regularize(seen.get("regularize"))  # type: ignore[arg-type]
        data = self.data(seen.get("data"))  # type: ignore[arg-type]
        train = self.train(seen.get("train"), task, data)  # type: ignore[arg-type]
        schedule = self.schedule(seen.get("schedule"), train, data)  # type: ignore[arg-type]
        self.cross_checks(optimizer, reg)
        if "sweep" in seen:  # `fcspec run` ignores the block, but it is checked all the same
            from .sweep.space import SweepChecker

            checker = SweepChecker(self, seen, task, data, train)
            self.sweep = checker.run(seen["sweep"])  # type: ignore[arg-type]
        if None in (model, loss, optimizer, reg, train, schedule) or data is False:
            return None
        spec = ir.Spec(
            name=model.name,
            path=self.path,
            sha256="",
            task=task,
            model=model,
            loss=loss,
            optimizer=optimizer,
            schedule=schedule,
            regularize=reg,
            data=data,
            train=train,
        )
        # The hash is of the meaning (canonical IR), not the bytes: reformatting a spec or editing
        # its comments keeps its checkpoints and exports valid.
        return dataclasses.replace(spec, sha256=ir.semantic_hash(spec))

    def lookup(
        self, call: ast.Call, table: dict[str, Sig], aliases: dict[str, str], what: str, plural: str
    ) -> tuple[str, Sig] | None:
        """(canonical name, signature) of a loss / optimizer / schedule call, or report it unknown."""
        kind = aliases.get(call.name, call.name)
        sig = table.get(kind)
        if sig is None:
            hint = _did_you_mean(call.name, list(table) + list(aliases))
            self.error(
                f"unknown {what} `{call.name}`",
                call.name_span,
                hint or f"{plural}: " + ", ".join(table),
            )
            return None
        return kind, sig

    def _single_call(self, section: ast.CallSection) -> ast.Call | None:
        if len(section.calls) > 1:
            self.error(
                f"`{section.keyword}` takes one {section.keyword}, got {len(section.calls)}",
                section.calls[1].span,
            )
            return None
        return section.calls[0]

    # ---- model -----------------------------------------------------------
    def model(self, section: ast.ModelSection | None) -> ir.Model | None:
        if section is None:
            self.error(
                "no `model` section",
                self._end_span(),
                "declare one: `model Net { input [784]  out = linear(10) }`",
            )
            return None
        ok = True
        inputs = [s for s in section.body if isinstance(s, ast.Input)]
        shape: tuple[int, ...] | None = None
        if not inputs:
            self.error(
                f"model `{section.name}` has no `input`",
                section.keyword_span,
                "start the model with the shape of one sample, e.g. `input [784]`",
            )
            ok = False
        else:
            if section.body[0] is not inputs[0]:
                self.error("`input` must come first in the model", inputs[0].span)
                ok = False
            for extra in inputs[1:]:
                self.error(
                    f"the model has two `input`s (the first is at line {inputs[0].span.line})",
                    extra.span,
                )
                ok = False
            shape = self.input_shape(inputs[0])
            ok = ok and shape is not None

        # One entry per layer: (name or None, call, name span).
        entries: list[tuple[str | None, ast.Call, Span | None]] = []
        for stmt in section.body:
            if isinstance(stmt, ast.Chain):
                for i, call in enumerate(stmt.calls):
                    entries.append(
                        (stmt.name if i == 0 else None, call, stmt.name_span if i == 0 else None)
                    )
        if not entries:
            self.error(
                f"model `{section.name}` has no layers",
                section.keyword_span,
                "add layers after `input`, e.g. `out = linear(10)`",
            )
            return None

        first_use: dict[str, Span] = {}
        for name, _, span in entries:
            if name is None:
                continue
            if name in first_use:
                self.error(
                    f"duplicate layer name `{name}` (first used at line {first_use[name].line})",
                    span,
                )
                ok = False
            else:
                first_use[name] = span  # type: ignore[assignment]
            if name in catalog.LAYERS or name in ("true", "false", "full"):
                self.warn(
                    f"layer named `{name}`, like an op",
                    span,
                    "pick a descriptive name such as `fc1`",
                )

        names = self._layer_names(entries)
        self.layer_calls = {name: call for name, (_, call, _) in zip(names, entries)}
        layers: list[ir.Layer] = []
        current = shape
        last_linear = max(
            (i for i, (_, c, _s) in enumerate(entries) if c.name == "linear"), default=-1
        )
        for i, ((_written, call, _), name) in enumerate(zip(entries, names)):
            sig = catalog.LAYERS.get(call.name)
            if sig is None:
                self.unknown_layer(call)
                ok = False
                current = None
                continue
            from_data = call.name == "linear" and self._takes_outputs(call, i == last_linear)
            if from_data is None:
                ok = False
                current = None
                continue
            if from_data:
                call = dataclasses.replace(call, args=from_data)
            bound = self.bind(call, sig, f"`{call.name}`")
            if bound is not None and from_data:
                bound[0]["units"] = ir.OUTPUTS
            if bound is None:
                ok = False
                current = None
                continue
            attrs, _spans = bound
            if current is None:  # an earlier problem: don't pile up shape errors
                continue
            layer = self.layer(name, call, attrs, current)
            if layer is None:
                ok = False
                current = None
                continue
            layers.append(layer)
            current = layer.out_shape
        if not ok:
            return None
        if not any(l.params for l in layers):
            self.error(
                f"model `{section.name}` has nothing to train (no `linear` layer)",
                section.keyword_span,
                "add a layer such as `out = linear(10)`",
            )
            return None
        return ir.Model(
            section.name,
            shape,  # type: ignore[arg-type]
            tuple(layers),
            section.span,
            auto=tuple(self._auto),
        )

    def _takes_outputs(self, call: ast.Call, last: bool):
        """For `linear(outputs)`: its arguments with a stand-in width (units is then set to
        ir.OUTPUTS); False for a written width; None (reported) when misplaced."""
        for j, arg in enumerate(call.args):
            v = arg.value
            is_units = arg.name == "units" or (arg.name is None and j == 0)
            if is_units and isinstance(v, ast.Call) and not v.parens and v.name == ir.OUTPUTS:
                if not last:
                    self.error(
                        "`outputs` is the width of the last `linear` layer only",
                        v.span,
                        "give this layer a number of units, e.g. `linear(32)`",
                    )
                    return None
                self._auto.append("outputs")
                args = list(call.args)
                args[j] = dataclasses.replace(arg, value=ast.Number(1, "1", v.span))
                return tuple(args)
        return False

    def input_shape(self, node: ast.Input) -> tuple[int, ...] | None:
        value = node.shape
        if isinstance(value, ast.Call) and not value.parens and value.name == "auto":
            self._auto.append("input")
            return (0,)  # from the data: ir.resolve fills it in
        if isinstance(value, ast.Number):  # `input 784` means [784]
            value = ast.List((value,), value.span)
        if not isinstance(value, ast.List) or not value.items:
            self.error("`input` must be a shape like [784] or [1, 28, 28]", value.span)
            return None
        dims = []
        for item in value.items:
            if (
                not isinstance(item, ast.Number)
                or not isinstance(item.value, int)
                or item.value < 1
            ):
                self.error("each dimension of `input` must be a whole number >= 1", item.span)
                return None
            dims.append(item.value)
        if math.prod(dims) > 2**31:
            self.error(
                f"`input` has {math.prod(dims):,} features per sample; that cannot fit in memory",
                value.span,
            )
            return None
        return tuple(dims)

    def _layer_names(self, entries) -> list[str]:
        """Written names, and stable generated ones (`linear_1`, `relu_2`) for the rest."""
        taken = {name for name, _, _ in entries if name}
        counts: dict[str, int] = {}
        out = []
        for name, call, _ in entries:
            if name:
                out.append(name)
                continue
            while True:
                counts[call.name] = counts.get(call.name, 0) + 1
                candidate = f"{call.name}_{counts[call.name]}"
                if candidate not in taken:
                    break
            taken.add(candidate)
            out.append(candidate)
        return out

    def unknown_layer(self, call: ast.Call) -> None:
        name = call.name
        if name in catalog.LOSSES or name in catalog.LOSS_ALIASES:
            hint = f"`{name}` is a loss: write `loss {name}` outside the model"
        elif name in catalog.OPTIMIZERS:
            hint = f"`{name}` is an optimizer: write `optimizer {name}(...)` outside the model"
        elif name == "input":
            hint = "`input` must be followed by a shape, e.g. `input [784]`"
        elif name in ("dense", "fc", "fully_connected"):
            hint = "a fully connected layer is `linear(units)`"
        else:
            hint = _did_you_mean(name, catalog.LAYERS) or "layers: " + ", ".join(catalog.LAYERS)
        self.error(f"unknown layer or activation `{name}`", call.name_span, hint)

    def layer(
        self, name: str, call: ast.Call, attrs: dict, in_shape: tuple[int, ...]
    ) -> ir.Layer | None:
        op = call.name
        params: dict[str, tuple[int, ...]] = {}
        out_shape = in_shape
        if op == "flatten":
            out_shape = (math.prod(in_shape),)
        elif op == "linear":
            if len(in_shape) != 1:
                dims = ", ".join(map(str, in_shape))
                self.error(
                    f"`linear` takes a flat sample, but its input has shape [{dims}]",
                    call.span,
                    f"add `flatten` before it (giving [{math.prod(in_shape)}])",
                )
                return None
            units = 0 if attrs["units"] == ir.OUTPUTS else attrs["units"]
            params["weight"] = (units, in_shape[0])
            if attrs["bias"]:
                params["bias"] = (units,)
            out_shape = (units,)
            if units * in_shape[0] > 2**31:
                self.error(
                    f"`linear({units})` on {in_shape[0]} inputs has {units * in_shape[0]:,} weights "
                    "(over 8 GB in float32)",
                    call.span,
                )
                return None
        return ir.Layer(name, op, dict(attrs), in_shape, out_shape, params, call.span)

    # ---- loss ------------------------------------------------------------
    def loss(self, section: ast.CallSection | None, model: ir.Model | None):
        if section is None:
            self.error(
                "no `loss` section",
                self._end_span(),
                "add one, e.g. `loss cross_entropy` (classification) or `loss mse` (regression)",
            )
            return None, None
        call = self._single_call(section)
        if call is None:
            return None, None
        known = self.lookup(call, catalog.LOSSES, catalog.LOSS_ALIASES, "loss", "losses")
        if known is None:
            return None, None
        kind, sig = known
        bound = self.bind(call, sig, f"`{call.name}`")
        if bound is None:
            return None, catalog.TASKS[kind]
        options, spans = bound
        task = catalog.TASKS[kind]
        loss = ir.Loss(kind, options, call.span)
        if model is not None:
            self.loss_versus_model(loss, call, model, spans)
        return loss, task

    def loss_versus_model(self, loss: ir.Loss, call: ast.Call, model: ir.Model, spans) -> None:
        """The loss row's expectations against what the model's last layer outputs."""
        kind = loss.kind
        row = catalog.LOSSES[kind]
        produced, last = catalog.model_output(model.layers)
        out = model.output_shape
        where = call.name_span
        if len(out) != 1:
            self.error(
                f"`{kind}` needs a flat model output, but the model ends with shape "
                f"[{', '.join(map(str, out))}]",
                where,
                "add `flatten` and a `linear` layer",
            )
            return
        width = out[0]
        if row.task == "classification" and "outputs" not in model.auto:
            if width < 2:
                self.error(
                    f"`{kind}` needs at least 2 classes, but the model has {width} output",
                    where,
                    "for a yes/no target use `bce_with_logits` (or `bce` after a final `sigmoid`)",
                )
            if loss.options.get("weight") is not None and len(loss.options["weight"]) != width:
                self.error(
                    f"`weight` has {len(loss.options['weight'])} entries but the model has "
                    f"{width} classes",
                    spans.get("weight", where),
                )
        needs = catalog.producer(row.takes)  # the layer that makes what the loss takes, if one
        if needs is not None and produced != row.takes:
            self.error(
                f"`{kind}` takes {catalog.TAKES_WORDS[row.takes]}, but the model does not end "
                f"in `{needs}`",
                where,
                f"end the model with `{needs}`{row.hint}",
            )
        elif produced in row.after:
            severity, message, hint = row.after[produced]
            text = message.format(loss=kind, last=last.op)
            hint = hint.format(loss=kind, last=last.op)
            if severity == "error":
                self.error(text, where, hint)
            else:
                self.warn(text, last.span or where, hint)

    # ---- optimizer, schedule, regularize -----------------------------------
    def optimizer(self, section: ast.CallSection | None) -> ir.Optimizer | None:
        if section is None:
            self.error(
                "no `optimizer` section",
                self._end_span(),
                "add one, e.g. `optimizer sgd(lr = 0.01, momentum = 0.9)` or `optimizer adam`",
            )
            return None
        call = self._single_call(section)
        if call is None:
            return None
        known = self.lookup(call, catalog.OPTIMIZERS, {}, "optimizer", "optimizers")
        if known is None:
            return None
        _, sig = known
        bound = self.bind(call, sig, f"`{call.name}`")
        if bound is None:
            return None
        return ir.Optimizer(call.name, bound[0], call.span)

    def schedule(
        self, section: ast.CallSection | None, train: ir.Train | None, data
    ) -> ir.Schedule | None:
        if section is None:
            return ir.Schedule("constant", {}, None)
        call = self._single_call(section)
        if call is None:
            return None
        known = self.lookup(
            call, catalog.SCHEDULES, catalog.SCHEDULE_ALIASES, "schedule", "schedules"
        )
        if known is None:
            return None
        kind, sig = known
        # What the rest of the spec decides: cosine's period, the plateau's metric.
        has_val = bool(data) and data.validate is not None
        decided = {
            "t_max": train.epochs if train else 1,
            "monitor": "val_loss" if has_val else "train_loss",
        }
        bound = self.bind(call, sig, f"`{call.name}`", decided)
        if bound is None:
            return None
        options, spans = bound
        monitor = options.get("monitor")
        if (
            kind == "plateau"
            and monitor.startswith("val_")
            and data is not None
            and data is not False
            and not has_val
        ):
            self.error(
                f"the schedule monitors `{monitor}` but the data has no validation set",
                spans.get("monitor", call.span),
                "add `validate = 0.1` to the data section",
            )
            return None
        # cosine's t_max left to the epochs: `--epochs N` resolves it again (ir.with_epochs)
        from_epochs = ("t_max",) if kind == "cosine" and "t_max" not in spans else ()
        return ir.Schedule(kind, options, call.span, from_epochs)

    def regularize(self, section: ast.CallSection | None) -> ir.Regularize | None:
        if section is None:
            return ir.Regularize()
        values: dict[str, float] = {}
        ok = True
        for call in section.calls:
            sig = catalog.REGULARIZERS.get(call.name)
            if sig is None:
                self.error(
                    f"unknown regularizer `{call.name}`",
                    call.name_span,
                    _did_you_mean(call.name, catalog.REGULARIZERS) or "regularizers: l1(a), l2(a)",
                )
                ok = False
                continue
            if call.name in values:
                self.error(f"`{call.name}` appears twice in `regularize`", call.span)
                ok = False
                continue
            bound = self.bind(call, sig, f"`{call.name}`")
            if bound is None:
                ok = False
                continue
            values[call.name] = bound[0]["strength"]
        if not ok:
            return None
        return ir.Regularize(values.get("l1", 0.0), values.get("l2", 0.0), section.span)

    # ---- data --------------------------------------------------------------
    def _block(
        self, section: ast.BlockSection, keys: dict[str, Opt], extra_calls=()
    ) -> tuple[dict, dict]:
        """Assignments of a block, checked for unknown and duplicate keys. Returns (values, spans)."""
        values: dict[str, ast.Value] = {}
        spans: dict[str, Span] = {}
        for stmt in section.body:
            if isinstance(stmt, ast.Call):
                if stmt.name in extra_calls:
                    continue
                if stmt.name in keys:
                    self.error(
                        f"`{stmt.name}` needs a value", stmt.span, f"write `{stmt.name} = ...`"
                    )
                else:
                    self.error(
                        f"unexpected `{stmt.name}` in the `{section.keyword}` section",
                        stmt.span,
                        f"settings are `name = value`; the {section.keyword} section takes "
                        + ", ".join(list(keys) + list(extra_calls)),
                    )
                continue
            if stmt.name not in keys:
                hint = _did_you_mean(stmt.name, list(keys) + list(extra_calls))
                self.error(
                    f"unknown setting `{stmt.name}` in the `{section.keyword}` section",
                    stmt.name_span,
                    hint or f"the {section.keyword} section takes " + ", ".join(keys),
                )
                continue
            if stmt.name in values:
                self.error(
                    f"`{stmt.name}` is set twice (first at line {spans[stmt.name].line})",
                    stmt.name_span,
                )
                continue
            values[stmt.name] = stmt.value
            spans[stmt.name] = stmt.name_span
        return values, spans

    def data(self, section: ast.BlockSection | None) -> ir.Data | None | bool:
        """The data section; None when absent, False when it had errors."""
        if section is None:
            return None
        values, spans = self._block(section, catalog.DATA_KEYS)
        ok = True
        out: dict[str, Any] = {}
        for key, opt in catalog.DATA_KEYS.items():
            if key not in values:
                if opt.required:
                    self.error(
                        "the data section needs `train = ...`",
                        section.keyword_span,
                        'for example `train = dataset("digits")`',
                    )
                    ok = False
                else:
                    out[key] = opt.default
                continue
            value = values[key]
            try:
                if opt.kind == "source":
                    out[key] = self.source(value, key)
                elif opt.kind == "number_or_source":
                    if isinstance(value, ast.Number):
                        frac = float(value.value)
                        if not 0 <= frac < 1:
                            self.error(
                                f"`{key}` is the fraction of train held out and must be in [0, 1), "
                                f"got {value.text}",
                                value.span,
                            )
                            raise _Invalid
                        out[key] = frac or None
                    else:
                        out[key] = self.source(value, key)
                else:
                    out[key] = self.convert(opt, value, f"`{key}`")
            except _Invalid:
                ok = False
        if not ok:
            return False
        if out.get("statistics") is not None:
            for key in ("scale", "normalize"):
                if key in values:
                    self.error(
                        f"`{key}` and `statistics` cannot be combined: the statistics file "
                        "already holds the whole preprocessing",
                        spans.get(key) if isinstance(spans, dict) else section.span,
                        f"remove `{key}`, or remove `statistics` to fit it on the training split",
                    )
                    return False
            base = Path(self.path).parent
            if self.path != "<string>" and not (base / out["statistics"]).exists():
                self.warn(
                    f"statistics file `{out['statistics']}` not found (paths are relative to "
                    "the spec's folder)",
                    spans.get("statistics") if isinstance(spans, dict) else section.span,
                )
        return ir.Data(span=section.span, **out)

    def source(self, value: ast.Value, key: str) -> ir.DataSource:
        if not isinstance(value, ast.Call) or value.name not in catalog.SOURCES:
            hint = None
            if isinstance(value, ast.Call):
                hint = _did_you_mean(value.name, catalog.SOURCES)
            if isinstance(value, ast.String):
                hint = f'wrap the path in a reader: npz("{value.value}") or csv("{value.value}", target = ...)'
            self.error(
                f"`{key}` must be a data source ({', '.join(catalog.SOURCES)}), "
                f"not {_describe(value)}",
                value.span,
                hint,
            )
            raise _Invalid
        row = catalog.SOURCES[value.name]
        bound = self.bind(value, row, f"`{value.name}`")
        if bound is None:
            raise _Invalid
        args, spans = bound
        if value.name == "dataset" and not self._dataset_args(args, spans, value.span):
            raise _Invalid
        if value.name == "dataset" and args.get("name") not in catalog.TABULAR_DATASETS:
            # table options only mean something for the tabular sets; the array sets keep
            # the IR (and hash) they always had
            for opt in list(args):
                if opt == "name" or (args["name"] in catalog.PLAYGROUND and opt in _GENERATED):
                    continue
                if opt in spans:
                    tables = ", ".join(catalog.TABULAR_DATASETS)
                    self.error(
                        f"`{opt}` applies to the table data sets ({tables}), not to "
                        f'dataset("{args["name"]}")',
                        spans[opt],
                    )
                    raise _Invalid
                del args[opt]
        if args.get("columns") is not None and args.get("drop"):
            self.error("give `columns` or `drop`, not both", spans.get("drop", value.span))
            raise _Invalid
        if value.name == "mnist" and key == "train" and args["split"] == "test":
            self.warn("training on MNIST's test split", value.span, 'use `mnist(split = "train")`')
        base = Path(self.path).parent
        for arg in row.files:
            if args.get(arg) and self.path != "<string>" and not (base / args[arg]).exists():
                self.warn(
                    f"data file `{args[arg]}` not found (paths are relative to the spec's folder)",
                    spans[arg],
                )
        return ir.DataSource(value.name, args, value.span)

    def _dataset_args(self, args: dict[str, Any], spans: dict[str, Span], span: Span) -> bool:
        """Resolve `dataset(...)` in place: a playground set gets its n, noise and seed;
        an embedded set takes none of them (so its IR is just the name)."""
        generated = _GENERATED
        name = args["name"]
        if name in catalog.PLAYGROUND:
            n, noise = catalog.PLAYGROUND[name]
            for k, default in zip(generated, (n, noise, 0)):
                if args.get(k) is None:
                    args[k] = default
            args["noise"] = float(args["noise"])
            return True
        given = [k for k in generated if args.get(k) is not None]
        for k in given:
            self.error(
                f"`{k}` applies to the generated playground sets, not to the embedded "
                f'dataset("{name}")',
                spans.get(k, span),
                "playground sets: " + ", ".join(catalog.PLAYGROUND),
            )
        for k in generated:
            args.pop(k, None)
        return not given

    # ---- train -------------------------------------------------------------
    def train(self, section: ast.BlockSection | None, task: str | None, data) -> ir.Train | None:
        metrics_default = catalog.METRICS.get(task or "", ())
        if section is None:
            return ir.Train(metrics=metrics_default)
        values, spans = self._block(section, catalog.TRAIN_KEYS, extra_calls=("early_stop",))
        ok = True
        out: dict[str, Any] = {}
        for key, opt in catalog.TRAIN_KEYS.items():
            if key not in values:
                out[key] = opt.default
                continue
            try:
                out[key] = self.convert(opt, values[key], f"`{key}`")
            except _Invalid:
                ok = False
        if ok and out["metrics"] is not None and task is not None:
            allowed = catalog.METRICS[task]
            for m, item in zip(out["metrics"], values["metrics"].items):
                if m not in allowed:
                    self.error(
                        f"unknown metric `{m}` for a {task} model",
                        item.span,
                        ("metrics here: " + ", ".join(allowed)) if allowed else "no metrics apply",
                    )
                    ok = False
        if out.get("metrics") is None:
            out["metrics"] = metrics_default
        has_val = bool(data) and data.validate is not None
        early = [s for s in section.body if isinstance(s, ast.Call) and s.name == "early_stop"]
        out["early_stop"] = None
        for extra in early[1:]:
            self.error("`early_stop` is given twice", extra.span)
            ok = False
        if early:
            call = early[0]
            bound = self.bind(call, catalog.EARLY_STOP, "`early_stop`")
            if bound is None:
                ok = False
            else:
                es, es_spans = bound
                monitor = es["monitor"]
                if (
                    monitor.startswith("val_")
                    and data is not None
                    and data is not False
                    and not has_val
                ):
                    self.error(
                        f"`early_stop` monitors `{monitor}` but the data has no validation set",
                        es_spans.get("monitor", call.span),
                        "add `validate = 0.1` to the data section, or monitor `train_loss`",
                    )
                    ok = False
                if monitor.endswith(("accuracy",)) and task in ("regression", "distribution"):
                    self.error(
                        f"a {task} model has no accuracy to monitor",
                        es_spans.get("monitor", call.span),
                        "monitor `val_loss`",
                    )
                    ok = False
                if monitor.endswith(("mae", "rmse")) and task != "regression":
                    self.error(
                        f"`{monitor}` is a regression metric", es_spans.get("monitor", call.span)
                    )
                    ok = False
                out["early_stop"] = ir.EarlyStop(span=call.span, **es)
        if not ok:
            return None
        return ir.Train(span=section.span, **out)

    def cross_checks(self, optimizer: ir.Optimizer | None, reg: ir.Regularize | None) -> None:
        if (
            optimizer
            and reg
            and reg.l2 > 0
            and optimizer.options.get("weight_decay", 0) > 0
            and optimizer.kind != "adamw"
        ):
            self.warn(
                "both `regularize l2(...)` and the optimizer's `weight_decay` penalize large weights",
                reg.span,
                "keep one of them (weight_decay also decays biases)",
            )


def _example(opt: Opt) -> str:
    return {
        "int": "10",
        "float": "0.1",
        "str": '"file"',
        "ints": "[30, 60]",
        "choice": f'"{opt.choices[0]}"' if opt.choices else "...",
    }.get(opt.kind, "...")
