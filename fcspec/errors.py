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


def closest(name: str, choices) -> str | None:
    """The choice a misspelt `name` most likely means, or None: among difflib's close
    matches, the fewest edits, counting a swap of neighbours as one (`adma` is `adam`,
    not `adamax`, which difflib's similarity ratio alone prefers)."""
    import difflib

    near = difflib.get_close_matches(name, list(choices), n=5, cutoff=0.6)
    return min(near, key=lambda c: _edits(name, c)) if near else None


def _edits(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and
    transpositions of adjacent characters."""
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]
