"""Text -> AST.  The Lark parser is built once; the tree -> AST step is mechanical.

Syntax errors become one located `SpecError` with a human sentence ("expected
`=` after `epochs`"), never a token dump.  Comments are kept (for `fcspec fmt`).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast
from .errors import Diagnostic, Span, SpecError, closest

SECTIONS = ("model", "loss", "optimizer", "schedule", "regularize", "data", "train", "sweep")


def grammar_text() -> str:
    """The grammar: from the installed package, or from the source tree's grammar/."""
    try:
        return resources.files("fcspec.grammar").joinpath("fcspec.lark").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError):  # running from a checkout, not installed
        return (Path(__file__).resolve().parent.parent / "grammar" / "fcspec.lark").read_text(
            "utf-8"
        )


class _Comments:
    def __init__(self) -> None:
        self.items: list[Token] = []

    def __call__(self, token: Token) -> Token:
        self.items.append(token)
        return token


_comments = _Comments()


def _cache_file(text: str) -> str | bool:
    """Where Lark keeps the grammar's LALR tables: building them is most of `fcspec
    check`'s time (0.13 of 0.18 s).  The file is a pickle, so it lives in the user's own
    cache folder (`$XDG_CACHE_HOME/fcspec`, like Python's bytecode cache beside the
    code), never in a shared temp folder; named by the grammar's and Lark's versions.
    False (no cache) when that folder cannot be made."""
    import hashlib
    import os

    import lark

    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    folder = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "fcspec"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return str(folder / f"grammar-{digest}-lark-{lark.__version__}.pickle")


@lru_cache(maxsize=1)
def _parser() -> Lark:
    text = grammar_text()
    return Lark(
        text,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=False,
        lexer_callbacks={"COMMENT": _comments},
        cache=_cache_file(text),
    )


def parse(text: str, file: str = "<string>") -> ast.Program:
    """Parse `.fc` source into an AST; raise `SpecError` on a syntax error."""
    parser = _parser()
    _comments.items = []
    try:
        tree = parser.parse(text, on_error=_keyword_as_name(text))
    except UnexpectedInput as e:
        raise SpecError([_syntax_diagnostic(e, text, file)], text) from None
    too_deep = _too_deep(tree, file)
    if too_deep is not None:
        raise SpecError([too_deep], text)
    comments = tuple(ast.Comment(str(t), t.line, t.column) for t in _comments.items)
    return dataclasses.replace(_ToAst(file).transform(tree), comments=comments)


def _keyword_as_name(text: str):
    """An on_error hook: a section word used as a setting name (`train = ...`) is a NAME.

    So is one that starts a sweep path (`optimizer.lr = ...`, `train.batch = ...`).

    LALR merges the states after a value, so after `normalize = standard` the
    contextual lexer also expects the section keywords and lexes `train` in
    `data { normalize = standard  train = dataset("digits") }` as the keyword.
    When the parser then refuses it but would take a name, and `=` follows,
    feed it as the NAME it is and go on.  A keyword not followed by `=` keeps
    its error (e.g. a missing `}` before the next section).
    """

    def handle(e: UnexpectedInput) -> bool:
        tok = getattr(e, "token", None)
        if not isinstance(e, UnexpectedToken) or tok is None or str(tok) not in SECTIONS:
            return False
        rest = text[tok.end_pos :].lstrip()
        if not (rest.startswith(".") or rest.startswith("=")) or rest.startswith("=="):
            return False
        try:
            if "NAME" not in e.interactive_parser.accepts():
                return False
        except Exception:  # noqa: BLE001 - accepts() replays the parser; on any trouble keep the error
            return False
        e.interactive_parser.feed_token(Token.new_borrow_pos("NAME", str(tok), tok))
        return True

    return handle


MAX_NESTING = 32  # values nested deeper than this are surely not a spec


def _too_deep(tree, file: str) -> Diagnostic | None:
    """A located error for values nested past MAX_NESTING, else None.

    The LALR parser itself is iterative, but the tree -> AST step, the checker
    and fmt all recurse over values: `[[[[...]]]]` a few thousand deep would end
    in a RecursionError.  This walk uses its own stack.
    """
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        if node.data in ("list", "tuple", "call"):
            depth += 1
            if depth > MAX_NESTING:
                return Diagnostic(
                    "error",
                    f"values nested more than {MAX_NESTING} deep",
                    _span(file, node.meta),
                    "is this the right file?",
                )
        stack.extend((child, depth) for child in node.children)
    return None


# ---------------------------------------------------------------------------
# tree -> AST


def _span(file: str, meta) -> Span:
    return Span(file, meta.line, meta.column, meta.end_line, meta.end_column)


def _tok_span(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


def _number(text: str) -> int | float:
    if any(c in text for c in ".eE"):
        return float(text)
    if len(text) > 4000:  # int() refuses over 4300 digits (CVE-2020-10735); the checker reports inf
        return float(text)
    return int(text)


def _unescape(s: str) -> str:
    body = s[1:-1]
    out, i = [], 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


@v_args(meta=True)
class _ToAst(Transformer):
    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _keyword_span(self, meta, keyword: str) -> Span:
        return Span(self.file, meta.line, meta.column, meta.line, meta.column + len(keyword))

    def start(self, meta, sections):
        return ast.Program(tuple(sections), (), self.file)

    def model(self, meta, children):
        name, *body = children
        return ast.ModelSection(
            str(name), tuple(body), _span(self.file, meta), self._keyword_span(meta, "model")
        )

    def input(self, meta, children):
        return ast.Input(children[0], _span(self.file, meta))

    def chain(self, meta, children):
        if isinstance(children[0], Token):
            name, *calls = children
            return ast.Chain(
                str(name), tuple(calls), _span(self.file, meta), _tok_span(self.file, name)
            )
        return ast.Chain(None, tuple(children), _span(self.file, meta))

    def _call_section(self, keyword, meta, children):
        return ast.CallSection(
            keyword, tuple(children), _span(self.file, meta), self._keyword_span(meta, keyword)
        )

    def loss(self, meta, children):
        return self._call_section("loss", meta, children)

    def optimizer(self, meta, children):
        return self._call_section("optimizer", meta, children)

    def schedule(self, meta, children):
        return self._call_section("schedule", meta, children)

    def regularize(self, meta, children):
        return self._call_section("regularize", meta, children)

    def data(self, meta, children):
        return ast.BlockSection(
            "data", tuple(children), _span(self.file, meta), self._keyword_span(meta, "data")
        )

    def train(self, meta, children):
        return ast.BlockSection(
            "train", tuple(children), _span(self.file, meta), self._keyword_span(meta, "train")
        )

    def sweep(self, meta, children):
        return ast.BlockSection(
            "sweep", tuple(children), _span(self.file, meta), self._keyword_span(meta, "sweep")
        )

    def search(self, meta, children):
        path, value = children
        return ast.Search(path, value, _span(self.file, meta))

    def path(self, meta, children):
        return tuple(ast.Name(str(t), _tok_span(self.file, t)) for t in children)

    def assign(self, meta, children):
        name, value = children
        return ast.Assign(str(name), value, _span(self.file, meta), _tok_span(self.file, name))

    def call(self, meta, children):
        name, *args = children
        # `relu` and `relu()` are the same call; remember which was written for fmt.
        parens = meta.end_column != name.end_column or meta.end_line != name.end_line
        return ast.Call(
            str(name), tuple(args), parens, _span(self.file, meta), _tok_span(self.file, name)
        )

    def arg(self, meta, children):
        if len(children) == 2:
            return ast.Arg(str(children[0]), children[1], _span(self.file, meta))
        return ast.Arg(None, children[0], _span(self.file, meta))

    def number(self, meta, children):
        tok = children[0]
        return ast.Number(_number(str(tok)), str(tok), _tok_span(self.file, tok))

    def string(self, meta, children):
        tok = children[0]
        return ast.String(_unescape(str(tok)), _tok_span(self.file, tok))

    def list(self, meta, children):
        return ast.List(tuple(children), _span(self.file, meta))

    def tuple(self, meta, children):
        return ast.Tuple(tuple(children), _span(self.file, meta))


# ---------------------------------------------------------------------------
# Syntax errors in words

_TERMINAL_WORDS = {
    "NAME": "a name",
    "NUMBER": "a number",
    "STRING": "a string",
    "$END": "end of file",
}


def _describe_expected(parser: Lark, names: set[str]) -> list[str]:
    words = set()
    by_name = {t.name: t for t in parser.terminals}
    for n in names:
        if n in _TERMINAL_WORDS:
            words.add(_TERMINAL_WORDS[n])
        elif n in by_name and by_name[n].pattern.type == "str":
            words.add(f"`{by_name[n].pattern.value}`")
        else:
            words.add(n.lower())
    value_starts = {"`(`", "`[`", "a name", "a number", "a string"}
    if value_starts <= words:
        words = (words - value_starts) | {"a value"}
    return sorted(words, key=lambda w: (not w.startswith("`"), w))


def _describe_found(tok: Token | None) -> str:
    if tok is None or tok.type == "$END":
        return "end of file"
    if tok.type == "NAME":
        return f"name `{tok}`"
    if tok.type == "NUMBER":
        return f"number `{tok}`"
    if tok.type == "STRING":
        return f"string {tok}"
    return f"`{tok}`"


def _open_block(text: str, upto: int) -> tuple[str, int] | None:
    """The innermost `{` still open before offset `upto`: (section keyword, line)."""
    stack: list[tuple[str, int]] = []
    line, i, word, last_word = 1, 0, "", ""
    while i < min(upto, len(text)):
        c = text[i]
        if c == "#":
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        if c == '"':
            i += 1
            while i < len(text) and text[i] not in '"\n':
                i += 2 if text[i] == "\\" else 1
        elif c == "\n":
            line += 1
        elif c == "{":
            stack.append((last_word, line))
        elif c == "}" and stack:
            stack.pop()
        if c.isalnum() or c == "_":
            word += c
        elif word:
            last_word = word if word in ("model", "data", "train", "sweep") else last_word
            word = ""
        i += 1
    return stack[-1] if stack else None


def _syntax_diagnostic(e: UnexpectedInput, text: str, file: str) -> Diagnostic:
    parser = _parser()
    line = getattr(e, "line", 1) or 1
    col = getattr(e, "column", 1) or 1
    if line < 1:  # Lark reports -1 at end of input
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    span = Span(file, line, col, line, col + 1)
    hint = None

    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if ch == '"':
            return Diagnostic(
                "error",
                'unterminated string: a string must close with `"` on the same line',
                span,
                None,
            )
        if ch == ":":
            return Diagnostic(
                "error", "unexpected character `:`", span, "settings are written `name = value`"
            )
        if ch == "'":
            return Diagnostic(
                "error", "unexpected character `'`", span, 'strings use double quotes: "digits"'
            )
        shown = repr(ch)[1:-1] if not ch.isprintable() or ch.isspace() else ch
        return Diagnostic(
            "error",
            f"unexpected character `{shown}`",
            span,
            "names are letters, digits and `_`; comments start with `#`",
        )

    tok = getattr(e, "token", None)
    expected = set(getattr(e, "expected", set()) or set())
    interactive = getattr(e, "interactive_parser", None)
    if interactive is not None:  # what the parser state really accepts, not LALR's loose set
        try:
            expected = set(interactive.accepts()) or expected
        except Exception:  # accepts() replays the parser; never let it hide the real error
            pass
    if isinstance(e, UnexpectedEOF) or (tok is not None and tok.type == "$END"):
        opened = _open_block(text, len(text))
        if opened:
            kw, opened_line = opened
            what = f"the `{kw}` block" if kw else "a block"
            return Diagnostic(
                "error",
                f"unexpected end of file: {what} opened at line {opened_line} is not closed",
                span,
                "add the missing `}`",
            )
        return Diagnostic(
            "error",
            "unexpected end of file",
            span,
            f"expected {' or '.join(_describe_expected(parser, expected)[:6])}",
        )

    assert isinstance(e, UnexpectedToken)
    tok_span = Span(
        file,
        tok.line,
        tok.column,
        tok.end_line or tok.line,
        tok.end_column or tok.column + len(str(tok)),
    )
    found = _describe_found(tok)
    words = _describe_expected(parser, expected)
    section_keywords = {k.upper() for k in SECTIONS}
    if expected and expected <= section_keywords | {"$END"}:
        message = f"expected a section ({', '.join(SECTIONS)}), found {found}"
        if tok.type == "NAME":
            close = closest(str(tok), SECTIONS)
            if close:
                hint = f"did you mean `{close}`?"
        if tok.type == "RBRACE":
            hint = "this `}` closes no block"
        return Diagnostic("error", message, tok_span, hint)
    if "RBRACE" in expected and str(tok) in SECTIONS and tok.type != "NAME":
        opened = _open_block(text, tok.start_pos)
        what = (
            f"the `{opened[0]}` block opened at line {opened[1]}"
            if opened and opened[0]
            else "the block"
        )
        return Diagnostic(
            "error",
            f"expected `}}` to close {what}, found `{tok}`",
            tok_span,
            "add the missing `}`",
        )
    if (
        "EQUAL" in expected
        and "LPAR" in expected
        and tok.type in ("NUMBER", "STRING", "LSQB", "LPAR")
    ):
        prev = _previous_name(text, tok)
        message = (
            f"expected `=` after `{prev}`, found {found}"
            if prev
            else f"expected `=`, found {found}"
        )
        return Diagnostic("error", message, tok_span, f"write `{prev} = {tok}`" if prev else None)
    if tok.type == "EQUAL" and "EQUAL" not in expected:
        opened = _open_block(text, tok.start_pos)
        if opened is None or opened[0] == "model":
            hint = "one layer per `name = ...`: chain layers with `->`"
    if len(words) > 6:
        words = words[:6] + ["..."]
    message = (
        f"expected {', '.join(words[:-1]) + ' or ' + words[-1] if len(words) > 1 else words[0]}, "
        f"found {found}"
        if words
        else f"unexpected {found}"
    )
    return Diagnostic("error", message, tok_span, hint)


def _previous_name(text: str, tok: Token) -> str | None:
    before = text[: tok.start_pos].rstrip()
    j = len(before)
    while j > 0 and (before[j - 1].isalnum() or before[j - 1] == "_"):
        j -= 1
    word = before[j:]
    return word or None
