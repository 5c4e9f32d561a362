"""What an editor asks about `.fc` text, answered as plain functions of (text, offset).

`fcspec/lsp.py` turns these answers into the Language Server Protocol; keeping
them here, free of any LSP library, means they are tested directly and fuzzed
cheaply.  Everything must work on broken, half-typed text, so nothing here needs
a successful parse: a tolerant scan over the grammar's own terminals follows the
sections, statements and calls and says, for any offset, where it is (which
section, which call, which option).  What the catalog knows about that place is
the answer.  Shapes and parameter counts come from checking the model section
alone, so they survive errors elsewhere in the file.

Offsets are indexes into the text (code points).  `Lines` converts between them
and Lark's 1-based line/column, which counts lines by "\\n" only.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import lru_cache

from . import catalog, describe, ir
from .catalog import Opt, Sig
from .errors import FcspecError, Span

SECTION_DOCS = {
    "model": "the network: `input [shape]`, then layers chained with `->`",
    "loss": "the loss the optimizer minimizes, e.g. `loss cross_entropy`",
    "optimizer": "the update rule, e.g. `optimizer adam(lr = 1e-3)`",
    "schedule": "the learning rate per epoch, e.g. `schedule cosine` (default: constant)",
    "regularize": "penalties added to the loss, e.g. `regularize l2(1e-4)`",
    "data": "where the samples come from, held-out splits and preprocessing",
    "train": "the loop: epochs, batch size, shuffling, seed, early stopping, metrics",
    "sweep": "a hyperparameter search for `fcspec sweep` (`fcspec run` ignores it): "
    "`path = distribution` lines and the search's settings",
}

# The snippet each section starts as when completed at the top level.
SECTION_SNIPPETS = {
    "model": "model ${1:Net} {\n    input [${2:784}]\n    ${3:out} = linear(${4:10})\n}",
    "loss": "loss ${1:cross_entropy}",
    "optimizer": "optimizer ${1:adam}(lr = ${2:1e-3})",
    "schedule": "schedule ${1:cosine}",
    "regularize": "regularize l2(${1:1e-4})",
    "data": 'data {\n    train = dataset("${1:digits}")\n    validate = ${2:0.1}\n}',
    "train": "train {\n    epochs = ${1:10}\n    batch = ${2:32}\n}",
    "sweep": "sweep {\n    optimizer.lr = log_uniform(${1:1e-4}, ${2:1e-1})\n    trials = ${3:20}\n}",
}

# Which catalog table the calls of each one-call section come from.
CALL_TABLES = {
    "loss": (catalog.LOSSES, catalog.LOSS_ALIASES),
    "optimizer": (catalog.OPTIMIZERS, {}),
    "schedule": (catalog.SCHEDULES, catalog.SCHEDULE_ALIASES),
    "regularize": (catalog.REGULARIZERS, {}),
}
BLOCK_KEYS = {"data": catalog.DATA_KEYS, "train": catalog.TRAIN_KEYS}


# ---------------------------------------------------------------------------
# positions


class Lines:
    """Lark's (line, column), both 1-based, lines split at "\\n" only -> offsets."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def offset(self, line: int, col: int) -> int:
        """The offset of a 1-based (line, col), clamped into the text and into its line."""
        if line < 1:
            return 0
        if line > len(self.starts):
            return len(self.text)
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return start + min(max(col - 1, 0), end - start)

    def span_offsets(self, span: Span) -> tuple[int, int]:
        a = self.offset(span.line, span.col)
        return a, max(a, self.offset(span.end_line, span.end_col))


# ---------------------------------------------------------------------------
# tokens: the grammar's terminals, never failing


@dataclass(frozen=True, slots=True)
class Tok:
    kind: str  # NAME, NUMBER, STRING, COMMENT, PUNCT, ERROR
    text: str
    start: int
    end: int


@lru_cache(maxsize=1)
def _token_re() -> re.Pattern:
    from .syntax import _parser  # the grammar's own patterns, so the scan cannot drift from it

    terms = {t.name: t.pattern for t in _parser().terminals}
    punct = sorted(
        {p.value for p in terms.values() if p.type == "str" and not p.value.isidentifier()} | {"."},
        key=len,
        reverse=True,
    )
    parts = [
        f"(?P<COMMENT>{terms['COMMENT'].to_regexp()})",
        f"(?P<STRING>{terms['STRING'].to_regexp()})",
        '(?P<OPENSTRING>"[^"\\n]*)',  # still being typed: a string to the end of the line
        f"(?P<NUMBER>{terms['NUMBER'].to_regexp()})",
        f"(?P<NAME>{terms['NAME'].to_regexp()})",
        "(?P<PUNCT>" + "|".join(re.escape(p) for p in punct) + ")",
        r"(?P<WS>[ \t\f\r\n]+)",
        r"(?P<ERROR>.)",
    ]
    return re.compile("|".join(parts), re.DOTALL)


def tokens(text: str) -> list[Tok]:
    out = []
    for m in _token_re().finditer(text):
        kind = m.lastgroup
        if kind == "WS":
            continue
        out.append(Tok("STRING" if kind == "OPENSTRING" else kind, m.group(), m.start(), m.end()))
    return out


# ---------------------------------------------------------------------------
# the scan: where the text stands at an offset


@dataclass(slots=True)
class Frame:
    """An open `(` or `[`: a call's arguments, a tuple or a list."""

    kind: str  # call, list, tuple
    name: str | None = None  # the call's name as written
    sig: Sig | None = None  # its signature, when known
    owner: str | None = None  # the catalog name of that signature (an alias resolved)
    index: int = 0  # which argument
    arg: str | None = None  # the argument's name once `name =` was written
    expect: str = "arg"  # arg (an argument starts), value (after `=`), after (a value was read)
    pending: Tok | None = None  # a NAME just read as an argument: a name or a bare value
    given: set[str] = field(default_factory=set)  # options written so far


@dataclass(slots=True)
class SectionInfo:
    keyword: Tok
    end: int
    name: Tok | None = None  # the model's name
    calls: list[Tok] = field(default_factory=list)  # a one-call section's callees


@dataclass(slots=True)
class LayerInfo:
    call: Tok  # the layer's op name
    end: int  # end of the call (after its `)`)
    chain_name: Tok | None  # the `fc1` of `fc1 = linear(8) -> relu`, on the first call only


SECTION_WORDS = frozenset(SECTION_DOCS)


class Scan:
    """A forward scan of the tokens before `stop`, tolerant of anything.

    Its state at the end says what may come next: `section` (None at the top
    level), `mode` (what the section expects next, see `_statement`), `frames`
    (the open calls and brackets) and `key` (a block setting whose value is being
    written).  On the way it collects the sections, the model's layers, and
    the names used as layer references.
    """

    def __init__(self, text: str, stop: int | None = None):
        self.text = text
        self.toks = [
            t for t in tokens(text) if t.kind != "COMMENT" and (stop is None or t.start < stop)
        ]
        self.section: str | None = None
        self.mode = "top"
        self.key: str | None = None
        self.keys_given: set[str] = set()
        self.frames: list[Frame] = []
        self.pending: Tok | None = None  # the last NAME whose role the next token decides
        self.chain_name: Tok | None = None
        self.sections: list[SectionInfo] = []
        self.layers: list[LayerInfo] = []
        self.refs: list[Tok] = []
        self.path_head: Tok | None = None  # the `hidden` of `hidden.units` being written
        for tok in self.toks:
            if self.frames:
                self._in_frame(tok)
            else:
                self._statement(tok)
        if self.section == "model" and self.mode == "name_or_layer" and self.pending:
            self._layer(self.pending, self.pending.end)
        if self.sections:
            self.sections[-1].end = max(self.sections[-1].end, len(text) if stop is None else stop)

    @property
    def frame(self) -> Frame | None:
        return self.frames[-1] if self.frames else None

    # ---- helpers -----------------------------------------------------------
    def _open_call(self, name: Tok) -> None:
        sig, owner = _sig_for(self.section, name.text)
        self.frames.append(Frame("call", name.text, sig, owner))

    def _layer(self, call: Tok, end: int) -> None:
        self.layers.append(LayerInfo(call, end, self.chain_name))
        self.chain_name = None

    def _close_section(self, end: int) -> None:
        if self.sections and self.section is not None:
            self.sections[-1].end = end
        self.section, self.mode, self.key, self.pending = None, "top", None, None

    def _start_section(self, tok: Tok) -> None:
        self._close_section(tok.start)
        self.section = tok.text
        self.sections.append(SectionInfo(tok, tok.end))
        self.keys_given = set()
        self.mode = {"model": "model_name"}.get(tok.text, "callee")
        if tok.text not in CALL_TABLES and tok.text != "model":
            self.mode = "brace"  # data, train, sweep: `{ settings }`

    # ---- inside ( ... ) and [ ... ] ----------------------------------------
    def _in_frame(self, tok: Tok) -> None:
        f, t = self.frames[-1], tok.text
        if t in (")", "]"):
            self.frames.pop()
            if self.frames:
                self.frames[-1].expect = "after"
            elif self.section == "model":
                if f.kind == "call" and self.layers:
                    self.layers[-1].end = tok.end
                self.mode = "after_layer"
            elif self.section in CALL_TABLES:
                self.mode = "done"
            elif self.section is not None:
                self.mode = "key"
            return
        if t in ("{", "}"):  # unbalanced: drop the open calls and read the brace as a statement
            self.frames.clear()
            self._statement(tok)
            return
        if t == ",":
            if f.arg is None and f.sig is not None and f.index < len(f.sig.positional):
                f.given.add(f.sig.positional[f.index])
            f.index, f.arg, f.expect, f.pending = f.index + 1, None, "arg", None
        elif t == "=":
            if f.pending is not None and f.expect == "after":
                f.arg = f.pending.text
                f.given.add(f.arg)
            f.expect, f.pending = "value", None
        elif t == "(":
            if f.pending is not None and f.expect == "after":
                sig, owner = _sig_for(self.section, f.pending.text)
                self.frames.append(Frame("call", f.pending.text, sig, owner))
            else:
                self.frames.append(Frame("tuple"))
            f.expect, f.pending = "after", None
        elif t == "[":
            self.frames.append(Frame("list"))
            f.expect, f.pending = "after", None
        else:
            f.pending = tok if tok.kind == "NAME" and f.expect in ("arg", "value") else None
            if f.pending is not None and f.expect == "value":
                f.pending = None  # `monitor = val_loss`: a bare value, not an option's name
            f.expect = "after"

    # ---- statements ----------------------------------------------------------
    def _statement(self, tok: Tok) -> None:
        t, mode = tok.text, self.mode
        if t == "}":
            if self.section is not None:
                if self.section == "model" and mode == "name_or_layer" and self.pending:
                    self._layer(self.pending, self.pending.end)
                self._close_section(tok.end)
            return
        if tok.kind == "NAME" and mode in ("top", "done", "called") and t in SECTION_WORDS:
            self._start_section(tok)
            return
        if self.section == "model":
            self._model(tok)
        elif self.section in CALL_TABLES:
            self._call_section(tok)
        elif self.section is not None:
            self._block(tok)
        # else: stray text at the top level; wait for a section word

    def _model(self, tok: Tok) -> None:
        t, mode = tok.text, self.mode
        if mode in ("model_name", "brace"):
            if t == "{":
                self.mode = "stmt"
            elif tok.kind == "NAME" and mode == "model_name":
                self.sections[-1].name = tok
                self.mode = "brace"
        elif mode == "input":
            if t == "[":
                self.frames.append(Frame("list"))
            else:
                self.mode = "after_layer"
        elif tok.kind == "NAME" and mode in ("stmt", "after_layer", "name_or_layer", "layer"):
            if mode == "name_or_layer" and self.pending:  # `relu`, then a new statement
                self._layer(self.pending, self.pending.end)
            if t == "input" and mode != "layer":
                self.mode, self.pending = "input", None
            else:
                self.mode, self.pending = "name_or_layer", tok
        elif t == "=" and mode == "name_or_layer" and self.pending:
            self.chain_name, self.pending, self.mode = self.pending, None, "layer"
        elif t == "->":
            if mode == "name_or_layer" and self.pending:
                self._layer(self.pending, self.pending.end)
            self.mode, self.pending = "layer", None
        elif t == "(" and mode == "name_or_layer" and self.pending:
            self._layer(self.pending, tok.end)
            self._open_call(self.pending)
            self.pending = None
        elif t in ("(", "["):
            self.frames.append(Frame("tuple" if t == "(" else "list"))

    def _call_section(self, tok: Tok) -> None:
        t = tok.text
        if tok.kind == "NAME" and self.mode == "callee":
            self.mode, self.pending = "called", tok
            self.sections[-1].calls.append(tok)
        elif t == "(" and self.mode == "called" and self.pending:
            self._open_call(self.pending)
            self.pending = None
        elif t == "+":
            self.mode = "callee"
        elif t in ("(", "["):
            self.frames.append(Frame("tuple" if t == "(" else "list"))

    def _block(self, tok: Tok) -> None:
        t, mode = tok.text, self.mode
        if mode == "brace":
            if t == "{":
                self.mode = "key"
        elif tok.kind == "NAME" and mode == "path":
            self.mode, self.pending = "key_named", tok  # the option of `hidden.units`
        elif tok.kind == "NAME" and mode in ("key", "key_named", "value_named"):
            self.mode, self.pending, self.key, self.path_head = "key_named", tok, None, None
        elif t == "." and mode == "key_named" and self.pending:
            self.refs.append(self.pending)  # `hidden.units`: a layer's name, then its option
            self.path_head = self.pending
            self.mode = "path"
        elif t == "=" and mode == "key_named" and self.pending:
            head = f"{self.path_head.text}." if self.path_head else ""
            self.key, self.mode, self.pending = head + self.pending.text, "value", None
            self.keys_given.add(self.key)
        elif t == "(" and mode in ("key_named", "value_named") and self.pending:
            if mode == "key_named":
                self.keys_given.add(self.pending.text)  # `early_stop(...)`
            self._open_call(self.pending)
            self.pending = None
        elif mode == "value":
            if tok.kind == "NAME":
                self.mode, self.pending = "value_named", tok
            elif t in ("(", "["):
                self.frames.append(Frame("tuple" if t == "(" else "list"))
            else:
                self.mode = "key"


def _sig_for(section: str | None, name: str) -> tuple[Sig | None, str]:
    """The signature of a call written in `section`, and its catalog name."""
    if section == "model":
        return catalog.LAYERS.get(name), name
    if section in CALL_TABLES:
        table, aliases = CALL_TABLES[section]
        kind = aliases.get(name, name)
        return table.get(kind), kind
    if section == "data":
        return catalog.SOURCES.get(name), name
    if section == "train" and name == "early_stop":
        return catalog.EARLY_STOP, name
    if section == "sweep":
        return _sweep().PRUNERS.get(name), name
    return None, name


def _sweep():
    """The sweep block's tables (fcspec/sweep/space.py; imports no Optuna)."""
    from .sweep import space

    return space


def _path_options(s: Scan, head: str) -> tuple[str, dict[str, Opt]] | None:
    """What `head.` may be followed by in a sweep: (owner, options) of a layer or a section."""
    for li in s.layers:
        if li.chain_name is not None and li.chain_name.text == head:
            sig = catalog.LAYERS.get(li.call.text)
            return (li.call.text, sig.opts) if sig else None
    if head in BLOCK_KEYS:
        return head, BLOCK_KEYS[head]
    if head in CALL_TABLES:
        written = [sec for sec in s.sections if sec.keyword.text == head and sec.calls]
        if written:
            sig, owner = _sig_for(head, written[0].calls[0].text)
            return (owner, sig.opts) if sig else None
    return None


def token_index(toks: list[Tok], offset: int) -> int | None:
    """The token that holds `offset`, or a word that ends right at it (being typed)."""
    i = bisect.bisect_right([t.start for t in toks], offset) - 1
    if i < 0 or offset > toks[i].end:
        return None
    if offset == toks[i].end and toks[i].kind != "NAME":
        return i + 1 if i + 1 < len(toks) and toks[i + 1].start == offset else None
    return i


# ---------------------------------------------------------------------------
# the model, checked alone


def model_ir(text: str, s: Scan | None = None) -> ir.Model | None:
    """The model section's IR, from the model's text alone (every other byte blanked)."""
    from .check import model_of
    from .syntax import parse

    s = s or Scan(text)
    models = [sec for sec in s.sections if sec.keyword.text == "model"]
    if not models:
        return None
    a, b = models[0].keyword.start, models[0].end
    # Blank everything else but keep the newlines: positions in the model stay the same.
    blank = re.sub(r"[^\n]", " ", text)
    try:
        return model_of(parse(blank[:a] + text[a:b] + blank[b:]))
    except FcspecError:
        return None


# ---------------------------------------------------------------------------
# completion


@dataclass(frozen=True, slots=True)
class Item:
    label: str
    kind: str  # section, layer, activation, loss, optimizer, schedule, regularizer, source,
    #            option, setting, value, keyword
    detail: str = ""
    doc: str = ""
    insert: str | None = None  # text to insert (a snippet when it holds `$`), else the label
    snippet: bool = False


def _sig_items(table: dict[str, Sig], kind: str) -> list[Item]:
    out = []
    for name, sig in table.items():
        kind_here = kind
        if table is catalog.LAYERS:
            kind_here = "activation" if name in catalog.ACTIVATIONS else "layer"
        out.append(Item(name, kind_here, _signature(name, sig), sig_markdown(name, sig)))
    return out


def _signature(name: str, sig: Sig) -> str:
    if not sig.opts:
        return name
    parts = []
    for key, opt in sig.opts.items():
        parts.append(key if opt.required else f"{key} = {_plain(catalog.default_text(opt))}")
    return f"{name}({', '.join(parts)})"


def _plain(md: str) -> str:
    return md.replace("`", "").replace("\\|", "|")


def _value_items(opt: Opt, quote: bool = False) -> list[Item]:
    if opt.kind == "choice":
        return [
            Item(
                f'"{c}"' if quote else c,
                "value",
                f"default {opt.default}" if c == opt.default else "",
            )
            for c in opt.choices
        ]
    if opt.kind == "bool":
        return [Item("true", "value"), Item("false", "value")]
    if opt.kind == "int_or_full":
        return [Item("full", "value", "the whole training set in one batch (batch GD)")]
    return []


def _source_items() -> list[Item]:
    out = []
    for name, sig in catalog.SOURCES.items():
        if name == "dataset":
            insert = 'dataset("${1|' + ",".join(catalog.DATASETS) + '|}")'
        elif sig.positional:
            args = ", ".join(
                f'"${{{i + 1}:{k}}}"' if sig.opts[k].kind == "str" else f"${{{i + 1}}}"
                for i, k in enumerate(sig.positional)
            )
            insert = f"{name}({args})"
        else:
            insert = f"{name}($1)"
        out.append(
            Item(name, "source", _signature(name, sig), sig_markdown(name, sig), insert, True)
        )
    return out


def complete(text: str, offset: int) -> tuple[list[Item], int]:
    """What may be written at `offset`, and where the word it replaces starts."""
    stop = offset
    for t in tokens(text[:offset]):
        if t.end == offset and t.kind in ("NAME", "NUMBER", "STRING"):
            closed = t.kind != "STRING" or (len(t.text) > 1 and t.text.endswith('"'))
            if not closed or t.kind != "STRING":
                stop = t.start  # a word being typed: complete it from the state before it
    return _complete_at(Scan(text, stop)), stop


def _option_item(owner: str, key: str, opt: Opt) -> Item:
    default = "required" if opt.required else _plain(catalog.default_text(opt))
    return Item(key, "option", f"{key} = {default}", option_markdown(owner, key, opt), f"{key} = ")


def _complete_at(s: Scan) -> list[Item]:
    f = s.frame
    if f is not None:
        if f.kind == "list" and s.section == "train" and s.key == "metrics" and len(s.frames) == 1:
            return [
                Item(m, "value") for m in sorted({m for v in catalog.METRICS.values() for m in v})
            ]
        if f.kind != "call" or f.sig is None:
            return []
        sig, quote = f.sig, f.name == "dataset"  # dataset names are strings: dataset("digits")
        if f.expect == "value" and f.arg in sig.opts:
            return _value_items(sig.opts[f.arg], quote)
        if f.expect != "arg":
            return []
        items = []
        if f.index < len(sig.positional):
            items += _value_items(sig.opts[sig.positional[f.index]], quote)
        owner = f.owner or f.name or ""
        return items + [_option_item(owner, k, o) for k, o in sig.opts.items() if k not in f.given]
    sec, mode = s.section, s.mode
    sections = [
        Item(k, "section", SECTION_DOCS[k], "", SECTION_SNIPPETS[k], True) for k in SECTION_DOCS
    ]
    if sec is None or mode in ("top", "done"):
        return sections
    if sec == "model":
        if mode == "layer":
            return _sig_items(catalog.LAYERS, "layer")
        if mode in ("stmt", "after_layer", "name_or_layer"):
            shape = Item("input", "keyword", "the shape of one sample", "", "input [$1]", True)
            return [shape] + _sig_items(catalog.LAYERS, "layer")
        return []
    if sec in CALL_TABLES:
        if mode == "callee":
            return _sig_items(CALL_TABLES[sec][0], "regularizer" if sec == "regularize" else sec)
        return sections if mode == "called" else []
    if sec == "sweep":
        return _complete_sweep(s)
    keys = BLOCK_KEYS.get(sec)
    if keys is None:
        return []
    if mode in ("key", "key_named", "value_named"):
        items = [
            Item(
                k,
                "setting",
                f"{k} = {_plain(catalog.default_text(o))}",
                option_markdown(sec, k, o),
                f"{k} = ",
            )
            for k, o in keys.items()
            if k not in s.keys_given
        ]
        if sec == "train" and "early_stop" not in s.keys_given:
            sig = catalog.EARLY_STOP
            items.append(
                Item(
                    "early_stop",
                    "option",
                    _signature("early_stop", sig),
                    sig_markdown("early_stop", sig),
                    "early_stop(monitor = ${1:val_loss}, patience = ${2:5})",
                    True,
                )
            )
        return items
    if mode == "value" and s.key in keys:
        opt = keys[s.key]
        if opt.kind in ("source", "number_or_source"):
            return _source_items()
        return _value_items(opt)
    return []


def _complete_sweep(s: Scan) -> list[Item]:
    space = _sweep()
    if s.mode == "path" and s.path_head is not None:
        found = _path_options(s, s.path_head.text)
        if found is None:
            return []
        owner, opts = found
        owner_md = owner if s.path_head.text not in BLOCK_KEYS else s.path_head.text
        return [
            Item(
                k,
                "option",
                f"{k} = {_plain(catalog.default_text(o))}",
                option_markdown(owner_md, k, o),
            )
            for k, o in opts.items()
        ]
    if s.mode == "value" and s.key is not None:
        if "." in s.key:
            return [
                Item(name, "value", text, "", _snippet(text), True)
                for name, text in space.DISTRIBUTIONS.items()
            ]
        if s.key == "pruner":
            return [
                Item(n, "value", _signature(n, sig), sig.doc) for n, sig in space.PRUNERS.items()
            ]
        opt = space.SETTINGS.get(s.key)
        return _value_items(opt) if opt else []
    if s.mode not in ("key", "key_named", "value_named"):
        return []
    items = [
        Item(k, "setting", f"{k} = {_plain(catalog.default_text(o))}", o.doc, f"{k} = ")
        for k, o in {**space.SETTINGS, "pruner": Opt("choice", "none")}.items()
        if k not in s.keys_given
    ]
    heads = [li.chain_name.text for li in s.layers if li.chain_name is not None]
    heads += [sec.keyword.text for sec in s.sections if sec.keyword.text in CALL_TABLES]
    heads += list(BLOCK_KEYS)
    return items + [
        Item(h, "keyword", "a layer's or a section's options", "", f"{h}.") for h in heads
    ]


def _snippet(signature: str) -> str:
    """`uniform(low, high)` -> `uniform(${1:low}, ${2:high})`."""
    name, _, args = signature.partition("(")
    parts = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    return f"{name}(" + ", ".join(f"${{{i + 1}:{a}}}" for i, a in enumerate(parts)) + ")"


# ---------------------------------------------------------------------------
# hover


def sig_markdown(name: str, sig: Sig) -> str:
    """A catalog name: its doc, a loss's task and formula, its PyTorch spelling, its options."""
    out = [sig.doc] if sig.doc else []
    if name in catalog.LOSSES:
        out.append(f"task: {catalog.TASKS[name]}")
        # the loss row's formula (issue 11 moves it there from describe's table)
        formula = getattr(sig, "formula", "") or getattr(describe, "LOSS_FORMULAS", {}).get(name)
        if formula:
            out.append(f"formula: `{formula}`")
    torch = catalog.torch_equivalent(name)
    if torch:
        out.append(f"PyTorch: `{torch}`")
    return "\n\n".join(out + [_options_table(name, sig)] if sig.opts else out)


def _options_table(owner: str, sig: Sig) -> str:
    rows = ["| option | default | range | meaning |", "|---|---|---|---|"]
    for key, opt in sig.opts.items():
        pos = " (positional)" if key in sig.positional else ""
        rows.append(
            f"| `{key}`{pos} | {catalog.default_text(opt)} | {catalog.range_text(opt)} "
            f"| {catalog.option_doc(owner, key, opt)} |"
        )
    return "\n".join(rows)


def option_markdown(owner: str, key: str, opt: Opt) -> str:
    """An option's meaning, default, range and PyTorch spelling."""
    doc = catalog.option_doc(owner, key, opt)
    out = [doc] if doc else []
    out.append(
        f"default: {catalog.default_text(opt)} · range: {catalog.range_text(opt).replace(chr(92), '')}"
    )
    if owner in BLOCK_KEYS:  # a `data` or `train` setting
        torch = catalog.TORCH.get(f"{owner}.{key}")
    else:
        torch = catalog.torch_equivalent(owner, key)
    if torch:
        out.append(f"PyTorch: `{torch}`")
    return "\n\n".join(out)


def _shape(s: tuple[int, ...]) -> str:
    return "[" + ", ".join(map(str, s)) + "]"


def layer_markdown(layer: ir.Layer) -> str:
    params = ", ".join(f"{k} {_shape(v)}" for k, v in layer.params.items())
    head = f"**`{layer.name}`** `{layer.op}`: {_shape(layer.in_shape)} -> {_shape(layer.out_shape)}"
    count = f"{layer.num_params:,} parameters" + (f" ({params})" if params else "")
    out = [head, count]
    sig = catalog.LAYERS.get(layer.op)
    if sig and sig.doc:
        out.append(sig.doc)
    torch = catalog.TORCH.get(layer.op)
    if torch and layer.op == "linear":
        torch = f"{torch}({layer.in_shape[0]}, {layer.attrs['units']}, bias={layer.attrs['bias']})"
    if torch:
        out.append(f"PyTorch: `{torch}`")
    return "\n\n".join(out)


@dataclass(frozen=True, slots=True)
class Hover:
    markdown: str
    start: int
    end: int


def hover(text: str, offset: int) -> Hover | None:
    toks = [t for t in tokens(text) if t.kind != "COMMENT"]
    i = token_index(toks, offset)
    if i is None:
        return None
    tok = toks[i]
    nxt = toks[i + 1].text if i + 1 < len(toks) else ""
    md = _hover_md(text, Scan(text, tok.start), tok, nxt)
    return Hover(md, tok.start, tok.end) if md else None


def _layer_at(text: str, offset: int, name: str | None = None) -> ir.Layer | None:
    model = model_ir(text)
    if model is None:
        return None
    lines = Lines(text)
    for layer in model.layers:
        if name is not None:
            if layer.name == name:
                return layer
            continue
        if layer.span is not None:
            a, b = lines.span_offsets(layer.span)
            if a <= offset < b:
                return layer
    return None


def _hover_md(text: str, w: Scan, tok: Tok, nxt: str) -> str | None:
    f = w.frame
    if tok.kind == "NAME" and f is None and w.mode in ("top", "done", "called"):
        if tok.text in SECTION_DOCS:
            return f"**`{tok.text}`** section\n\n{SECTION_DOCS[tok.text]}"
    if f is not None and f.kind == "call" and f.sig is not None:
        sig, owner = f.sig, f.owner or f.name or ""
        if tok.kind == "NAME" and f.expect == "arg" and nxt == "=" and tok.text in sig.opts:
            return f"**`{tok.text}`** option of `{f.name}`\n\n" + option_markdown(
                owner, tok.text, sig.opts[tok.text]
            )
        key = f.arg
        if key is None and f.expect in ("arg", "value") and f.index < len(sig.positional):
            key = sig.positional[f.index]
        if key in sig.opts and f.expect in ("arg", "value") and nxt != "(":
            return f"**`{key}`** of `{f.name}` = `{tok.text}`\n\n" + option_markdown(
                owner, key, sig.opts[key]
            )
        return None
    if f is not None:
        return None
    sec = w.section
    keys = BLOCK_KEYS.get(sec or "")
    if keys is not None and w.mode == "value" and w.key in keys:
        if tok.text in catalog.SOURCES and nxt == "(":
            return f"**`{tok.text}`** data source\n\n" + sig_markdown(
                tok.text, catalog.SOURCES[tok.text]
            )
        opt = keys[w.key]
        return f"**`{w.key}`** = `{tok.text}`\n\n" + option_markdown(sec, w.key, opt)
    if tok.kind != "NAME":
        return None
    if sec == "model":
        if w.mode in ("stmt", "after_layer", "name_or_layer") and tok.text == "input":
            model = model_ir(text)
            shape = f" {_shape(model.input_shape)}" if model else ""
            return f"**`input`**{shape}: the shape of one sample, without the batch dimension"
        if nxt == "=" and w.mode in ("stmt", "after_layer", "name_or_layer"):
            layer = _layer_at(text, tok.start, name=tok.text)
            return layer_markdown(layer) if layer else f"**`{tok.text}`**: a layer's name"
        if tok.text in catalog.LAYERS:
            layer = _layer_at(text, tok.start)
            sig = catalog.LAYERS[tok.text]
            if layer is not None and layer.op == tok.text:
                return layer_markdown(layer) + (
                    "\n\n" + _options_table(tok.text, sig) if sig.opts else ""
                )
            return f"**`{tok.text}`**\n\n" + sig_markdown(tok.text, catalog.LAYERS[tok.text])
        return None
    if sec in CALL_TABLES and w.mode == "callee":
        sig, kind = _sig_for(sec, tok.text)
        if sig is not None:
            alias = f" (= `{kind}`)" if kind != tok.text else ""
            return f"**`{tok.text}`**{alias} {sec}\n\n" + sig_markdown(kind, sig)
        return None
    if sec == "sweep":
        return _sweep_md(text, w, tok, nxt)
    if keys is None:
        return None
    if w.mode in ("key", "key_named", "value_named"):
        if tok.text in keys:
            return f"**`{tok.text}`** ({sec} setting)\n\n" + option_markdown(
                sec, tok.text, keys[tok.text]
            )
        if sec == "train" and tok.text == "early_stop":
            return "**`early_stop`**\n\n" + sig_markdown("early_stop", catalog.EARLY_STOP)
    return None


def _sweep_md(text: str, w: Scan, tok: Tok, nxt: str) -> str | None:
    """A sweep line: the layer or section a path names, its option, a setting, a distribution."""
    space = _sweep()
    if w.mode == "path" and w.path_head is not None:  # the `units` of `hidden.units`
        found = _path_options(w, w.path_head.text)
        if found is not None and tok.text in found[1]:
            owner, opts = found
            return f"**`{w.path_head.text}.{tok.text}`**\n\n" + option_markdown(
                owner, tok.text, opts[tok.text]
            )
        return None
    if w.mode in ("key", "key_named", "value_named") and tok.kind == "NAME":
        if nxt == ".":
            if tok.text in SECTION_DOCS:
                return f"**`{tok.text}`** section\n\n{SECTION_DOCS[tok.text]}"
            layer = _layer_at(text, tok.start, name=tok.text)
            return layer_markdown(layer) if layer else None
        if tok.text in space.SETTINGS:
            return f"**`{tok.text}`** (sweep setting)\n\n" + option_markdown(
                "sweep", tok.text, space.SETTINGS[tok.text]
            )
        if tok.text == "pruner":
            rows = [f"- `{n}`: {sig.doc}" for n, sig in space.PRUNERS.items()]
            return "**`pruner`**: stops trials that fall behind, per epoch\n\n" + "\n".join(rows)
    if w.mode == "value" and tok.text in space.DISTRIBUTIONS:
        return f"**`{space.DISTRIBUTIONS[tok.text]}`**: a distribution Optuna samples"
    if w.mode == "value" and tok.text in space.PRUNERS:
        return f"**`{tok.text}`** pruner\n\n" + sig_markdown(tok.text, space.PRUNERS[tok.text])
    return None


# ---------------------------------------------------------------------------
# symbols and definitions


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    detail: str
    kind: str  # section, layer
    start: int
    end: int
    select_start: int
    select_end: int
    children: tuple[Symbol, ...] = ()


def symbols(text: str) -> list[Symbol]:
    s = Scan(text)
    model = model_ir(text, s)
    lines = Lines(text)
    by_start = {}
    if model is not None:
        for layer in model.layers:
            if layer.span is not None:
                by_start[lines.span_offsets(layer.span)[0]] = layer
    out = []
    for sec in s.sections:
        kw = sec.keyword
        children: list[Symbol] = []
        detail = ""
        if kw.text == "model":
            detail = sec.name.text if sec.name else ""
            for li in s.layers:
                if not (kw.start <= li.call.start < sec.end):
                    continue
                layer = by_start.get(li.call.start)
                name = (
                    layer.name if layer else (li.chain_name.text if li.chain_name else li.call.text)
                )
                d = li.call.text
                if layer is not None:
                    d = f"{layer.op} -> {_shape(layer.out_shape)}, {layer.num_params:,} parameters"
                sel = li.chain_name or li.call
                start = li.chain_name.start if li.chain_name else li.call.start
                children.append(
                    Symbol(name, d, "layer", start, max(li.end, sel.end), sel.start, sel.end)
                )
        elif sec.calls:
            detail = " + ".join(c.text for c in sec.calls)
        out.append(
            Symbol(
                kw.text,
                detail,
                "section",
                kw.start,
                max(sec.end, kw.end),
                kw.start,
                kw.end,
                tuple(children),
            )
        )
    return out


def definition(text: str, offset: int) -> tuple[int, int] | None:
    """Where the layer named at `offset` is declared: the `fc1` of `fc1 = linear(...)`."""
    toks = tokens(text)
    i = token_index(toks, offset)
    if i is None or toks[i].kind != "NAME":
        return None
    tok = toks[i]
    s = Scan(text)
    declared = [li.chain_name for li in s.layers if li.chain_name is not None]
    if not any(r.start == tok.start for r in s.refs + declared):
        return None
    first = next((d for d in declared if d.text == tok.text), None)
    if first is None:  # `optimizer.lr`: the section the path names
        sec = next((sec for sec in s.sections if sec.keyword.text == tok.text), None)
        first = (sec.calls[0] if sec.calls else sec.keyword) if sec else None
    return (first.start, first.end) if first else None
