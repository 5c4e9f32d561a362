"""The AST: what was written, with a source span on every node.

No judgement lives here: `syntax.py` builds these mechanically from Lark's tree,
`check.py` decides what they mean, `fmt.py` prints them back canonically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import Span


@dataclass(frozen=True, slots=True)
class Number:
    value: int | float
    text: str  # as written, so `1e-3` formats back as `1e-3`
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Call:
    """`relu`, `linear(128)`, `sgd(lr = 0.1)`; a bare name is a call without parentheses."""

    name: str
    args: tuple[Arg, ...]
    parens: bool  # written with parentheses
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class List:
    items: tuple[Value, ...]
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Tuple:
    items: tuple[Value, ...]
    span: Span = field(compare=False)


Value = Number | String | Call | List | Tuple


@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None  # None for a positional argument
    value: Value
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Comment:
    text: str  # including the leading '#'
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Input:
    shape: Value
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Chain:
    """`fc1 = linear(128) -> relu`: the name belongs to the first layer."""

    name: str | None
    calls: tuple[Call, ...]
    span: Span = field(compare=False)
    name_span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Assign:
    name: str
    value: Value
    span: Span = field(compare=False)
    name_span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Name:
    """One word of a sweep path, with its own span (a layer name there is a reference)."""

    text: str
    span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class Search:
    """`optimizer.lr = log_uniform(1e-4, 1e-1)` in a sweep block: what to vary and how."""

    path: tuple[Name, ...]  # `hidden.units` -> (hidden, units)
    value: Value  # the distribution, a call such as choice(32, 64)
    span: Span = field(compare=False)

    @property
    def dotted(self) -> str:
        return ".".join(n.text for n in self.path)


@dataclass(frozen=True, slots=True)
class ModelSection:
    name: str
    body: tuple[Input | Chain, ...]
    span: Span = field(compare=False)
    keyword_span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class CallSection:
    """`loss ...`, `optimizer ...`, `schedule ...`, `regularize a + b`."""

    keyword: str
    calls: tuple[Call, ...]
    span: Span = field(compare=False)
    keyword_span: Span = field(compare=False)


@dataclass(frozen=True, slots=True)
class BlockSection:
    """`data { ... }`, `train { ... }` and `sweep { ... }` (the only one with `Search`es)."""

    keyword: str
    body: tuple[Assign | Call | Search, ...]
    span: Span = field(compare=False)
    keyword_span: Span = field(compare=False)


Section = ModelSection | CallSection | BlockSection


@dataclass(frozen=True, slots=True)
class Program:
    sections: tuple[Section, ...]
    comments: tuple[Comment, ...]
    file: str
