"""`fcspec lsp`: a Language Server Protocol server over stdio (pygls).

Thin: every answer comes from `check.check_text` (diagnostics, exactly what
`fcspec check` says, and its "did you mean" hints as quick fixes), `editing` (hover, completion, symbols, definition) or
`fmt` (formatting).  This module only converts positions and shapes messages.

Positions: fcspec counts lines by "\\n" and columns in code points (Lark's
rule); LSP counts lines at "\\n", "\\r\\n" or "\\r" and columns in the
negotiated encoding (UTF-16 unless the client offers UTF-32 or UTF-8).  Both
sides go through offsets into the text, so a `\\f`, a lone `\\r` or an emoji
cannot shift a range.  Documents are synced whole (specs are a page of text),
which keeps the server's copy byte-identical to the client's.
"""

from __future__ import annotations

import bisect
import logging
import re
from urllib.parse import unquote, urlparse

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from . import __version__, editing
from .check import check_text
from .errors import FcspecError, Span

log = logging.getLogger(__name__)


class Positions:
    """Offsets into a text <-> LSP positions, in the client's position encoding."""

    _BREAK = re.compile(r"\r\n|\r|\n")

    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.starts = [0] + [m.end() for m in self._BREAK.finditer(text)]
        self.encoding = encoding

    def _units(self, s: str) -> int:
        if self.encoding == "utf-32":
            return len(s)
        if self.encoding == "utf-8":
            return len(s.encode("utf-8", "surrogatepass"))
        return len(s.encode("utf-16-le", "surrogatepass")) // 2

    def position(self, offset: int) -> types.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        # an offset between the \r and \n of one line break belongs to the line before it
        return types.Position(line, self._units(self.text[self.starts[line] : offset]))

    def offset(self, pos: types.Position) -> int:
        if pos.line >= len(self.starts):
            return len(self.text)
        start = self.starts[pos.line]
        end = self.starts[pos.line + 1] if pos.line + 1 < len(self.starts) else len(self.text)
        line = self._BREAK.sub("", self.text[start:end])
        units = 0
        for i, ch in enumerate(line):
            if units >= pos.character:
                return start + i
            units += self._units(ch)
        return start + len(line)

    def range(self, start: int, end: int) -> types.Range:
        return types.Range(self.position(start), self.position(end))

    def span_range(self, span: Span) -> types.Range:
        return self.range(*editing.Lines(self.text).span_offsets(span))


def _path(uri: str) -> str:
    """The file a `file://` URI names (data paths are relative to it), else `<string>`."""
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return "<string>"
    return unquote(parsed.path)


def diagnostics(text: str, uri: str, encoding: str = "utf-16") -> list[types.Diagnostic]:
    """`fcspec check`'s diagnostics for the document, as LSP diagnostics."""
    return diagnostics_for(check_text(text, _path(uri)).diagnostics, text, encoding)


def diagnostics_for(found, text: str, encoding: str = "utf-16") -> list[types.Diagnostic]:
    pos = Positions(text, encoding)
    out = []
    for d in found:
        rng = pos.span_range(d.span) if d.span else pos.range(0, 0)
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        severity = (
            types.DiagnosticSeverity.Error
            if d.severity == "error"
            else types.DiagnosticSeverity.Warning
        )
        out.append(types.Diagnostic(rng, message, severity=severity, source="fcspec"))
    return out


_KINDS = {
    "section": types.CompletionItemKind.Module,
    "layer": types.CompletionItemKind.Class,
    "activation": types.CompletionItemKind.Function,
    "loss": types.CompletionItemKind.Function,
    "optimizer": types.CompletionItemKind.Function,
    "schedule": types.CompletionItemKind.Function,
    "regularizer": types.CompletionItemKind.Function,
    "source": types.CompletionItemKind.Constructor,
    "option": types.CompletionItemKind.Property,
    "setting": types.CompletionItemKind.Field,
    "value": types.CompletionItemKind.EnumMember,
    "keyword": types.CompletionItemKind.Keyword,
}


def completion(text: str, offset: int, encoding: str = "utf-16") -> types.CompletionList:
    items, start = editing.complete(text, offset)
    pos = Positions(text, encoding)
    rng = pos.range(start, offset)
    out = []
    for it in items:
        out.append(
            types.CompletionItem(
                label=it.label,
                kind=_KINDS.get(it.kind),
                detail=it.detail or None,
                documentation=types.MarkupContent(types.MarkupKind.Markdown, it.doc)
                if it.doc
                else None,
                text_edit=types.TextEdit(rng, it.insert or it.label),
                insert_text_format=types.InsertTextFormat.Snippet
                if it.snippet
                else types.InsertTextFormat.PlainText,
                filter_text=it.label,
            )
        )
    return types.CompletionList(is_incomplete=False, items=out)


def hover(text: str, offset: int, encoding: str = "utf-16") -> types.Hover | None:
    h = editing.hover(text, offset)
    if h is None:
        return None
    return types.Hover(
        types.MarkupContent(types.MarkupKind.Markdown, h.markdown),
        Positions(text, encoding).range(h.start, h.end),
    )


def formatting(text: str, uri: str, encoding: str = "utf-16") -> list[types.TextEdit] | None:
    """One edit that replaces the document with `fcspec fmt`'s output; None when it cannot parse."""
    from .fmt import format_source

    try:
        out = format_source(text, _path(uri))
    except FcspecError:  # a syntax error: the diagnostics already say where
        return None
    if out == text:
        return []
    return [types.TextEdit(Positions(text, encoding).range(0, len(text)), out)]


def document_symbols(text: str, encoding: str = "utf-16") -> list[types.DocumentSymbol]:
    pos = Positions(text, encoding)

    def convert(s: editing.Symbol) -> types.DocumentSymbol:
        return types.DocumentSymbol(
            name=s.name,
            detail=s.detail or None,
            kind=types.SymbolKind.Module if s.kind == "section" else types.SymbolKind.Field,
            range=pos.range(s.start, s.end),
            selection_range=pos.range(s.select_start, s.select_end),
            children=[convert(c) for c in s.children],
        )

    return [convert(s) for s in editing.symbols(text)]


def definition(text: str, uri: str, offset: int, encoding: str = "utf-16") -> types.Location | None:
    found = editing.definition(text, offset)
    if found is None:
        return None
    return types.Location(uri, Positions(text, encoding).range(*found))


_DID_YOU_MEAN = re.compile(r"did you mean `([A-Za-z_][A-Za-z0-9_]*)`\?")
_WORD = re.compile(r'"[^"\n]*"|[A-Za-z_][A-Za-z0-9_]*')


def quick_fixes(
    text: str, uri: str, start: int, end: int, encoding: str = "utf-16"
) -> list[types.CodeAction]:
    """ "Did you mean `relu`?" as an edit, for the diagnostics that touch [start, end]."""
    pos = Positions(text, encoding)
    lines = editing.Lines(text)
    out = []
    for d in check_text(text, _path(uri)).diagnostics:
        m = _DID_YOU_MEAN.search(d.hint or "")
        if m is None or d.span is None:
            continue
        a, b = lines.span_offsets(d.span)
        word = _WORD.match(text, a, b) if a <= end and start <= b else None
        if word is None:  # the range starts with the misspelt word (`rleu`, `"digts"`, `foo = 1`)
            continue
        new = f'"{m.group(1)}"' if word.group().startswith('"') else m.group(1)
        edit = types.TextEdit(pos.range(word.start(), word.end()), new)
        out.append(
            types.CodeAction(
                title=f"Change `{word.group()}` to `{new}`",
                kind=types.CodeActionKind.QuickFix,
                diagnostics=diagnostics_for([d], text, encoding),
                edit=types.WorkspaceEdit(changes={uri: [edit]}),
                is_preferred=True,
            )
        )
    return out


# ---------------------------------------------------------------------------
# the server


def build_server() -> LanguageServer:
    server = LanguageServer(
        "fcspec", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Full
    )

    def encoding() -> str:
        enc = server.workspace.position_encoding
        return str(getattr(enc, "value", enc) or "utf-16")

    def doc(uri: str):
        return server.workspace.get_text_document(uri)

    def offset(uri: str, position: types.Position) -> tuple[str, int]:
        text = doc(uri).source
        return text, Positions(text, encoding()).offset(position)

    def publish(uri: str) -> None:
        document = doc(uri)
        server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(
                uri=uri,
                version=document.version,
                diagnostics=diagnostics(document.source, uri, encoding()),
            )
        )

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(params: types.DidOpenTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(params: types.DidChangeTextDocumentParams) -> None:
        publish(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(params: types.DidSaveTextDocumentParams) -> None:
        publish(params.text_document.uri)  # a data file may have appeared on disk

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(params: types.DidCloseTextDocumentParams) -> None:
        server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
        )

    @server.feature(types.TEXT_DOCUMENT_HOVER)
    def on_hover(params: types.HoverParams) -> types.Hover | None:
        text, off = offset(params.text_document.uri, params.position)
        return hover(text, off, encoding())

    @server.feature(
        types.TEXT_DOCUMENT_COMPLETION,
        types.CompletionOptions(trigger_characters=["(", ",", "=", ">", "[", '"']),
    )
    def on_completion(params: types.CompletionParams) -> types.CompletionList:
        text, off = offset(params.text_document.uri, params.position)
        return completion(text, off, encoding())

    @server.feature(types.TEXT_DOCUMENT_FORMATTING)
    def on_formatting(params: types.DocumentFormattingParams) -> list[types.TextEdit] | None:
        uri = params.text_document.uri
        return formatting(doc(uri).source, uri, encoding())

    @server.feature(types.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
    def on_symbols(params: types.DocumentSymbolParams) -> list[types.DocumentSymbol]:
        return document_symbols(doc(params.text_document.uri).source, encoding())

    @server.feature(
        types.TEXT_DOCUMENT_CODE_ACTION,
        types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.QuickFix]),
    )
    def on_code_action(params: types.CodeActionParams) -> list[types.CodeAction]:
        uri = params.text_document.uri
        text = doc(uri).source
        pos = Positions(text, encoding())
        start, end = pos.offset(params.range.start), pos.offset(params.range.end)
        return quick_fixes(text, uri, start, end, encoding())

    @server.feature(types.TEXT_DOCUMENT_DEFINITION)
    def on_definition(params: types.DefinitionParams) -> types.Location | None:
        uri = params.text_document.uri
        text, off = offset(uri, params.position)
        return definition(text, uri, off, encoding())

    return server


def serve() -> None:
    """Speak LSP on stdin/stdout until the client says exit."""
    build_server().start_io()
