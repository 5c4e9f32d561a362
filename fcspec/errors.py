"""fcspec's one error root, and the located diagnostics it carries.

Every failure a user can provoke (a bad spec, a bad data file, a diverging run)
is raised as an `FcspecError`.  The CLI prints `str(error)` and exits 1, so a
Python traceback on a user's screen always means a bug in fcspec.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A region of source text: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str  # "error" or "warning"
    message: str
    span: Span | None = None
    hint: str | None = None

    def render(self, source: str | None = None) -> str:
        """`FILE:LINE:COL: error: message`, then the source line, a caret and the hint."""
        where = f"{self.span}: " if self.span else ""
        out = [f"{where}{self.severity}: {self.message}"]
        if self.span and source is not None:
            # Lark counts lines by "\n" only; splitlines() would also split at \r, \f, \u2028...
            lines = source.split("\n")
            if 1 <= self.span.line <= len(lines) and lines[self.span.line - 1].strip():
                text = lines[self.span.line - 1].rstrip("\r").expandtabs(1)
                if len(text) > 200:  # keep enormous lines readable
                    start = max(0, self.span.col - 60)
                    text = text[start : start + 160]
                    col = self.span.col - start
                else:
                    col = self.span.col
                width = 1
                if self.span.end_line == self.span.line:
                    width = max(1, min(self.span.end_col - self.span.col, len(text) - col + 1))
                out.append(f"  {text}")
                out.append("  " + " " * (col - 1) + "^" + "~" * (width - 1))
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return "\n".join(out)


class FcspecError(Exception):
    """Base of every error fcspec reports to a user."""

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic("error", message, span, hint)

    def __str__(self) -> str:
        return self.diagnostic.render()


class SpecError(FcspecError):
    """One or more errors in a `.fc` file, each located, rendered with the source."""

    def __init__(self, diagnostics: list[Diagnostic], source: str | None = None):
        self.diagnostics = list(diagnostics)
        self.source = source
        first = self.diagnostics[0]
        super().__init__(first.message, first.span, first.hint)

    def __str__(self) -> str:
        errors = [d for d in self.diagnostics if d.severity == "error"]
        body = "\n".join(d.render(self.source) for d in self.diagnostics)
        n = len(errors)
        return f"{body}\n{n} error{'s' if n != 1 else ''}"


class DataError(FcspecError):
    """A data or weights file that is missing, malformed or does not fit the spec."""


class TrainingError(FcspecError):
    """A run that cannot go on: divergence, a checkpoint of another spec, ..."""
