"""AST -> canonical source text (`fcspec fmt`).

Canonical means: one statement a line, four-space indents, `name = value` with
single spaces, `a -> b` chains, one blank line between blocks, numbers and
names as written.  Comments stay where they were: a comment on its own line
stays above the statement that follows it, a comment at the end of a line stays
at the end of that statement's line.  Formatting never changes the meaning:
`fcspec ir` of the output equals that of the input (a tested property).
"""

from __future__ import annotations

from . import ast
from .syntax import parse

INDENT = "    "


def format_source(text: str, file: str = "<string>") -> str:
    return format_program(parse(text, file))


def value_text(v: ast.Value) -> str:
    if isinstance(v, ast.Number):
        return v.text
    if isinstance(v, ast.String):
        body = (
            v.value.replace("\\", "\\\\")
            .replace('"', '\\"')
            .replace("\n", "\\n")
            .replace("\t", "\\t")
        )
        return f'"{body}"'
    if isinstance(v, ast.Call):
        if not v.args:
            return f"{v.name}()" if v.parens else v.name
        return f"{v.name}({', '.join(_arg_text(a) for a in v.args)})"
    if isinstance(v, ast.List):
        return "[" + ", ".join(value_text(i) for i in v.items) + "]"
    if len(v.items) == 1:
        return f"({value_text(v.items[0])},)"
    return "(" + ", ".join(value_text(i) for i in v.items) + ")"


def _arg_text(a: ast.Arg) -> str:
    return f"{a.name} = {value_text(a.value)}" if a.name else value_text(a.value)


def _first_line(node) -> int:
    return node.span.line


def _last_line(node) -> int:
    return node.span.end_line


class _Printer:
    def __init__(self, program: ast.Program):
        self.comments = sorted(program.comments, key=lambda c: (c.line, c.col))
        self.i = 0  # next comment not yet printed
        self.lines: list[str] = []

    def leading(self, before_line: int, indent: str) -> None:
        """Print every comment that sits on a line before `before_line`."""
        while self.i < len(self.comments) and self.comments[self.i].line < before_line:
            self.lines.append(indent + self.comments[self.i].text.rstrip())
            self.i += 1

    def trailing(self, line: int) -> str:
        """The comments on `line` (after the statement), joined, for the end of the printed line."""
        parts = []
        while self.i < len(self.comments) and self.comments[self.i].line == line:
            parts.append(self.comments[self.i].text.rstrip())
            self.i += 1
        return ("  " + " ".join(parts)) if parts else ""

    def statement(self, text: str, node, indent: str, next_start: int | None) -> None:
        self.leading(_first_line(node), indent)
        # A trailing comment belongs to this statement only if the next statement starts on a later line.
        end = _last_line(node)
        tail = self.trailing(end) if next_start is None or next_start > end else ""
        self.lines.append(indent + text + tail)

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")


def _stmt_text(stmt) -> str:
    if isinstance(stmt, ast.Input):
        return f"input {value_text(stmt.shape)}"
    if isinstance(stmt, ast.Chain):
        chain = " -> ".join(value_text(c) for c in stmt.calls)
        return f"{stmt.name} = {chain}" if stmt.name else chain
    if isinstance(stmt, ast.Assign):
        return f"{stmt.name} = {value_text(stmt.value)}"
    if isinstance(stmt, ast.Search):
        return f"{stmt.dotted} = {value_text(stmt.value)}"
    return value_text(stmt)


def format_program(program: ast.Program) -> str:
    p = _Printer(program)
    sections = program.sections
    for k, section in enumerate(sections):
        prev = sections[k - 1] if k else None
        one_liner = isinstance(section, ast.CallSection)
        # One-line sections written together stay together; blocks get a blank line around them.
        if prev is not None and not (
            one_liner
            and isinstance(prev, ast.CallSection)
            and section.span.line - prev.span.end_line <= 1
        ):
            p.blank()
        if isinstance(section, ast.CallSection):
            text = f"{section.keyword} " + " + ".join(value_text(c) for c in section.calls)
            nxt = sections[k + 1].span.line if k + 1 < len(sections) else None
            p.statement(text, section, "", nxt)
            continue
        header = (
            f"model {section.name} {{"
            if isinstance(section, ast.ModelSection)
            else f"{section.keyword} {{"
        )
        p.leading(section.span.line, "")
        body = section.body
        first_body_line = body[0].span.line if body else section.span.end_line
        # A comment on the header line (after `{`) stays there when the body starts below it.
        tail = p.trailing(section.span.line) if first_body_line > section.span.line else ""
        p.lines.append(header + tail)
        for j, stmt in enumerate(body):
            if j:
                # keep one blank line where the author left one before the statement or its comments
                prev_end = body[j - 1].span.end_line
                pending = [c.line for c in p.comments[p.i :] if prev_end < c.line < stmt.span.line]
                if min(pending + [stmt.span.line]) - prev_end > 1:
                    p.blank()
            nxt = body[j + 1].span.line if j + 1 < len(body) else section.span.end_line
            p.statement(_stmt_text(stmt), stmt, INDENT, nxt)
        p.leading(section.span.end_line, INDENT)
        p.lines.append("}" + p.trailing(section.span.end_line))
    p.leading(10**9, "")
    while p.lines and p.lines[-1] == "":
        p.lines.pop()
    return "\n".join(p.lines) + "\n" if p.lines else ""
