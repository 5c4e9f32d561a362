"""`fcspec lsp` driven as an editor drives it: a subprocess speaking JSON-RPC over stdio.

pytest-lsp starts `python -m fcspec.cli lsp --stdio` (VS Code's command line),
plays the client (with VS Code's capabilities, and checks every answer against
them), and the tests ask what an editor asks.  Diagnostics are compared with `check_file`'s own, converted here
with the plain rule for "\\n"-only ASCII text (line - 1, column - 1, clamped to the
line), so the server's position conversion is checked, not reused.
"""

from __future__ import annotations

import asyncio
import sys

import pytest

pytest.importorskip("pygls")
pytest_lsp = pytest.importorskip("pytest_lsp")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from lsprotocol import types  # noqa: E402
from pygls.protocol import default_converter  # noqa: E402
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities  # noqa: E402
from pytest_lsp.client import DEFAULT_CLIENT_FEATURES, register_lsp_features  # noqa: E402
from test_fuzz import TOKENS, mutated_text  # noqa: E402  (the front end's fuzzing strategies)

from conftest import ROOT, SPECS  # noqa: E402
from fcspec import catalog  # noqa: E402
from fcspec.check import check_file  # noqa: E402
from fcspec.errors import Span  # noqa: E402
from fcspec.fmt import format_source  # noqa: E402
from fcspec.syntax import SECTIONS  # noqa: E402

BAD = sorted((ROOT / "tests" / "bad").glob("*.fc"))
WARN = sorted((ROOT / "tests" / "warn").glob("*.fc"))


def _is_text(path) -> bool:
    try:
        path.read_bytes().decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# Bad specs an editor cannot hand over as they are: their bytes are not UTF-8, so the client
# decodes them its own way before the server sees any text (check's errors are about the bytes).
NOT_TEXT = {p.stem for p in BAD if not _is_text(p)}


ON_SERVER = pytest.mark.asyncio(loop_scope="module")  # the tests that talk to the one server


def make_client() -> LanguageClient:
    """pytest-lsp's test client, recording every publishDiagnostics by (uri, version)."""
    client = LanguageClient(converter_factory=default_converter)
    client.published = {}

    def published(client: LanguageClient, params: types.PublishDiagnosticsParams) -> None:
        client.diagnostics[params.uri] = params.diagnostics
        client.published[(params.uri, params.version)] = params.diagnostics

    register_lsp_features(
        client, {**DEFAULT_CLIENT_FEATURES, types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS: published}
    )
    return client


@pytest_lsp.fixture(
    config=ClientServerConfig(
        server_command=[sys.executable, "-m", "fcspec.cli", "lsp", "--stdio"],
        client_factory=make_client,
    ),
    scope="module",
)
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=client_capabilities("visual-studio-code"),
            root_uri=ROOT.as_uri(),
        )
    )
    yield
    await lsp_client.shutdown_session()


_version = 0


async def publish_after(client: LanguageClient, uri: str, send) -> list[types.Diagnostic]:
    """Call `send()` and return the diagnostics the server publishes for `uri` at `_version`."""
    send()
    for _ in range(6000):  # up to a minute on a loaded machine; normally a few ms
        if (uri, _version) in client.published:
            return list(client.published[(uri, _version)])
        await asyncio.sleep(0.01)
    raise AssertionError(f"no diagnostics published for {uri} version {_version}")


async def open_doc(client: LanguageClient, uri: str, text: str) -> list[types.Diagnostic]:
    """Open (or re-open) a document and return the diagnostics the server publishes for it."""
    global _version
    _version += 1
    item = types.TextDocumentItem(uri, "fcspec", _version, text)
    return await publish_after(
        client,
        uri,
        lambda: client.text_document_did_open(types.DidOpenTextDocumentParams(item)),
    )


def close_doc(client: LanguageClient, uri: str) -> None:
    client.text_document_did_close(
        types.DidCloseTextDocumentParams(types.TextDocumentIdentifier(uri))
    )


def expected(path) -> list[tuple]:
    """check_file's diagnostics as (severity, message, range) in LSP terms."""
    text = path.read_text("utf-8")
    assert text.isascii() and "\r" not in text and "\f" not in text
    lines = text.split("\n")

    def pos(line: int, col: int) -> tuple[int, int]:
        if line > len(lines):
            return len(lines) - 1, len(lines[-1])
        return line - 1, min(col - 1, len(lines[line - 1]))

    out = []
    for d in check_file(path).diagnostics:
        severity = 1 if d.severity == "error" else 2
        message = d.message + (f"\nhint: {d.hint}" if d.hint else "")
        out.append(
            (severity, message, pos(d.span.line, d.span.col) + pos(d.span.end_line, d.span.end_col))
        )
    return out


def got(diags: list[types.Diagnostic]) -> list[tuple]:
    return [
        (
            int(d.severity),
            d.message,
            (d.range.start.line, d.range.start.character, d.range.end.line, d.range.end.character),
        )
        for d in diags
    ]


@ON_SERVER
async def test_specs_have_no_diagnostics(client):
    for path in SPECS:
        assert await open_doc(client, path.as_uri(), path.read_text("utf-8")) == [], path.name
        close_doc(client, path.as_uri())


@ON_SERVER
async def test_bad_and_warned_specs_show_what_check_shows(client):
    assert NOT_TEXT == {"non_utf8", "binary"}
    compared = 0
    for path in BAD + WARN:
        if path.stem in NOT_TEXT:
            continue
        diags = await open_doc(client, path.as_uri(), path.read_text("utf-8"))
        want = expected(path)
        assert want, path.name
        assert got(diags) == want, path.name
        assert all(d.source == "fcspec" for d in diags)
        close_doc(client, path.as_uri())
        compared += 1
    assert compared == len(BAD) + len(WARN) - len(NOT_TEXT)


@ON_SERVER
async def test_diagnostics_follow_every_change(client):
    uri = (ROOT / "specs" / "scratch_change.fc").as_uri()
    text = (ROOT / "specs" / "iris.fc").read_text()
    assert await open_doc(client, uri, text) == []
    global _version
    _version += 1
    change = types.DidChangeTextDocumentParams(
        types.VersionedTextDocumentIdentifier(version=_version, uri=uri),
        [types.TextDocumentContentChangeWholeDocument(text.replace("adam", "adma"))],
    )
    diags = await publish_after(client, uri, lambda: client.text_document_did_change(change))
    (d,) = diags
    assert d.message == "unknown optimizer `adma`\nhint: did you mean `adam`?"
    line = text[: text.index("adam")].count("\n")
    assert d.range.start.line == line
    assert d.range.end.character - d.range.start.character == 4
    close_doc(client, uri)


@ON_SERVER
async def test_ranges_are_in_utf16_units(client):
    # An emoji is two UTF-16 units: the error after it must start two units later.
    text = "model M { input [4]  out = linear(3) }  # \U0001f600\nloss mse optimizer adm"
    diags = await open_doc(client, "untitled:emoji", text)
    (d,) = diags
    assert d.message.startswith("unknown optimizer `adm`")
    assert (d.range.start.line, d.range.start.character) == (1, 19)
    # ... and on the same line, after an emoji in a string
    text = (
        "model M { input [4]  out = linear(3) }  loss mse  optimizer adam\n"
        'data { train = npz("\U0001f600.npz")  foo = 1 }'
    )
    (d,) = await open_doc(client, "untitled:emoji2", text)
    assert d.message.startswith("unknown setting `foo`")
    prefix = text.split("\n")[1].split("foo")[0]
    assert len(prefix) == 29 and (d.range.start.line, d.range.start.character) == (1, 30)
    assert d.range.end.character == 33


async def hover_at(client, uri: str, text: str, needle: str, k: int = 1) -> str:
    offset = text.index(needle) + k
    line = text[:offset].count("\n")
    col = offset - (text.rfind("\n", 0, offset) + 1)
    h = await client.text_document_hover_async(
        types.HoverParams(types.TextDocumentIdentifier(uri), types.Position(line, col))
    )
    assert h is not None, needle
    return h.contents.value


@ON_SERVER
async def test_hover(client):
    path = ROOT / "specs" / "digits.fc"
    text = path.read_text()
    uri = path.as_uri()
    await open_doc(client, uri, text)
    fc1 = await hover_at(client, uri, text, "fc1 =")
    assert "[64] -> [256]" in fc1 and "16,640 parameters" in fc1
    assert "torch.nn.Linear(64, 256, bias=True)" in fc1
    smoothing = await hover_at(client, uri, text, "label_smoothing", 3)
    assert "default: `0`" in smoothing and "in [0, 1]" in smoothing
    assert "torch.nn.CrossEntropyLoss(label_smoothing=...)" in smoothing
    assert catalog.OPTION_DOCS["label_smoothing"] in smoothing
    loss = await hover_at(client, uri, text, "loss      cross_entropy", 12)
    assert "formula: `l_n = -w[y_n] log_softmax(x_n)[y_n]" in loss  # the catalog's formula
    adam = await hover_at(client, uri, text, "adam")
    assert "torch.optim.Adam" in adam and catalog.OPTIMIZERS["adam"].doc in adam
    lr = await hover_at(client, uri, text, "1e-3")
    assert "learning rate" in lr and "`0.001`" in lr
    close_doc(client, uri)


async def complete(client, text: str) -> dict[str, types.CompletionItem]:
    uri = "untitled:complete"
    await open_doc(client, uri, text)
    lines = text.split("\n")
    result = await client.text_document_completion_async(
        types.CompletionParams(
            types.TextDocumentIdentifier(uri), types.Position(len(lines) - 1, len(lines[-1]))
        )
    )
    close_doc(client, uri)
    return {item.label: item for item in result.items}


@ON_SERVER
async def test_completion(client):
    model = "model Net {\n    input [4]\n    fc1 = linear(8) -> "
    assert set(await complete(client, model)) == set(catalog.LAYERS)
    items = await complete(client, "model Net {\n    input [4]\n    fc1 = linear(8, ")
    assert set(items) == {"bias", "init"}
    assert items["bias"].detail == "bias = true"
    items = await complete(client, "optimizer adam(lr = 0.1, ")
    assert set(items) == set(catalog.OPTIMIZERS["adam"].opts) - {"lr"}
    assert items["betas"].detail == "betas = (0.9, 0.999)"
    assert set(await complete(client, "loss ")) == set(catalog.LOSSES)
    assert set(await complete(client, "loss cross_entropy\noptimizer ")) == set(catalog.OPTIMIZERS)
    assert set(await complete(client, "schedule ")) == set(catalog.SCHEDULES)
    assert set(await complete(client, "data {\n    train = ")) == set(catalog.SOURCES)
    assert set(await complete(client, "")) == set(SECTIONS)
    items = await complete(client, 'data {\n    train = dataset("')
    assert {f'"{d}"' for d in catalog.DATASETS} <= set(items)
    edit = items['"iris"'].text_edit  # replaces the `"` typed so far, not inserts after it
    assert edit.range.start.character == len("    train = dataset(")


@ON_SERVER
async def test_formatting(client):
    uri = "untitled:fmt"
    text = "model Net{input [4] out=linear(3)}  # the net\nloss   cross_entropy optimizer adam\n"
    await open_doc(client, uri, text)
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(
            types.TextDocumentIdentifier(uri), types.FormattingOptions(4, True)
        )
    )
    (edit,) = edits
    assert edit.new_text == format_source(text)
    assert (edit.range.start.line, edit.range.start.character) == (0, 0)
    assert (edit.range.end.line, edit.range.end.character) == (2, 0)
    # a text that does not parse: no edits, the diagnostics say why
    await open_doc(client, uri, "model Net {")
    assert (
        await client.text_document_formatting_async(
            types.DocumentFormattingParams(
                types.TextDocumentIdentifier(uri), types.FormattingOptions(4, True)
            )
        )
        is None
    )
    close_doc(client, uri)


@ON_SERVER
async def test_document_symbols_are_sections_and_layers(client):
    path = ROOT / "specs" / "digits.fc"
    uri = path.as_uri()
    await open_doc(client, uri, path.read_text())
    symbols = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(types.TextDocumentIdentifier(uri))
    )
    assert [s.name for s in symbols] == ["model", "loss", "optimizer", "schedule", "data", "train"]
    layers = [c.name for c in symbols[0].children]
    # the IR's layer names, as `fcspec show` prints them
    assert layers == ["fc1", "relu_1", "dropout_1", "fc2", "relu_2", "fc3"]
    assert symbols[0].detail == "Digits"
    close_doc(client, uri)


SWEEP = (
    "\nsweep {\n    fc2.units = choice(64, 128)\n    optimizer.lr = log_uniform(1e-4, 1e-1)\n}\n"
)


def position(text: str, offset: int) -> types.Position:
    return types.Position(text[:offset].count("\n"), offset - (text.rfind("\n", 0, offset) + 1))


@ON_SERVER
async def test_a_sweep_block_names_layers_and_sections(client):
    text = (ROOT / "specs" / "digits.fc").read_text() + SWEEP
    uri = (ROOT / "specs" / "scratch_sweep.fc").as_uri()
    assert await open_doc(client, uri, text) == []  # the sweep block checks clean
    doc = types.TextDocumentIdentifier(uri)
    # go to definition: `fc2` -> `fc2 = linear(128)`, `optimizer` -> its `adam`
    loc = await client.text_document_definition_async(
        types.DefinitionParams(doc, position(text, text.index("fc2.units") + 1))
    )
    target = text.index("fc2 =")
    assert (loc.range.start, loc.range.end) == (position(text, target), position(text, target + 3))
    loc = await client.text_document_definition_async(
        types.DefinitionParams(doc, position(text, text.index("optimizer.lr") + 1))
    )
    assert loc.range.start == position(text, text.index("adam"))
    # hover: the layer a path names, and the option it sweeps
    fc2 = await hover_at(client, uri, text, "fc2.units")
    assert "[256] -> [128]" in fc2 and "32,896 parameters" in fc2
    units = await hover_at(client, uri, text, "fc2.units", 5)
    assert catalog.LAYERS["linear"].opts["units"].doc in units
    assert "torch.nn.Linear(out_features=...)" in units
    close_doc(client, uri)
    # completion: a path's options, then the distributions
    base = (ROOT / "specs" / "digits.fc").read_text()
    assert set(await complete(client, base + "\nsweep {\n    fc2.")) == set(
        catalog.LAYERS["linear"].opts
    )
    assert set(await complete(client, base + "\nsweep {\n    optimizer.")) == set(
        catalog.OPTIMIZERS["adam"].opts
    )
    assert "log_uniform" in await complete(client, base + "\nsweep {\n    fc2.units = ")


@ON_SERVER
async def test_did_you_mean_hints_are_quick_fixes(client):
    uri = "untitled:fixes"
    text = "model M { input [4]  out = linear(3) -> tahn }\nloss mse\noptimizer adma\n"
    await open_doc(client, uri, text)
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            types.TextDocumentIdentifier(uri),
            types.Range(types.Position(0, 0), types.Position(3, 0)),
            types.CodeActionContext(diagnostics=[]),
        )
    )
    fixes = {a.title: a.edit.changes[uri] for a in actions}
    assert set(fixes) == {"Change `tahn` to `tanh`", "Change `adma` to `adam`"}
    (edit,) = fixes["Change `adma` to `adam`"]
    assert (edit.range.start, edit.range.end) == (types.Position(2, 10), types.Position(2, 14))
    fixed = text.replace("tahn", "tanh").replace("adma", "adam")
    assert await open_doc(client, uri, fixed) == []  # applying both leaves nothing to fix
    close_doc(client, uri)


# ---- never crash: fuzzed documents ----------------------------------------------------

# Every request an editor makes, at offsets all over the text: the server answers each one
# (a result or null), never an LSP error, whatever the text.


def _offsets(text: str, draw_ints) -> list[int]:
    return sorted({0, len(text), *draw_ints})


@settings(
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=st.one_of(
        mutated_text(),
        st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join),
        st.text(max_size=40),
    ),
    data=st.data(),
)
def test_every_feature_answers_on_fuzzed_text_in_process(text, data):
    from fcspec import lsp

    offsets = _offsets(text, data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    for encoding in ("utf-16", "utf-32"):
        lsp.diagnostics(text, "file:///tmp/fuzz.fc", encoding)
    lsp.formatting(text, "untitled:fuzz")
    lsp.document_symbols(text)
    lsp.quick_fixes(text, "untitled:fuzz", 0, len(text))
    for off in offsets:
        lsp.completion(text, off)
        lsp.hover(text, off)
        lsp.definition(text, "untitled:fuzz", off)


@ON_SERVER
@settings(
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=mutated_text(), data=st.data())
async def test_every_request_answers_on_fuzzed_specs_through_the_server(client, text, data):
    uri = "untitled:fuzz"
    await open_doc(client, uri, text)
    doc = types.TextDocumentIdentifier(uri)
    lines = text.split("\n")
    for off in _offsets(text, data.draw(st.lists(st.integers(0, len(text)), max_size=3))):
        line = text[:off].count("\n")
        # a client counts columns in UTF-16 units; past the end of a line is legal too
        col = data.draw(st.integers(0, len(lines[line]) + 2))
        pos = types.Position(line, col)
        await client.text_document_hover_async(types.HoverParams(doc, pos))
        await client.text_document_completion_async(types.CompletionParams(doc, pos))
        await client.text_document_definition_async(types.DefinitionParams(doc, pos))
        await client.text_document_code_action_async(
            types.CodeActionParams(doc, types.Range(pos, pos), types.CodeActionContext([]))
        )
    await client.text_document_document_symbol_async(types.DocumentSymbolParams(doc))
    await client.text_document_formatting_async(
        types.DocumentFormattingParams(doc, types.FormattingOptions(4, True))
    )
    close_doc(client, uri)


def test_positions_follow_lsp_lines_and_utf16():
    from fcspec.lsp import Positions

    # LSP breaks lines at \n, \r\n and \r (not at \f or \u2028); columns count UTF-16 units
    text = "a\fb\r\nc\rd\u2028e\n\U0001f600f"
    pos = Positions(text)
    assert pos.position(text.index("b")) == types.Position(0, 2)
    assert pos.position(text.index("c")) == types.Position(1, 0)
    assert pos.position(text.index("e")) == types.Position(2, 2)
    assert pos.position(text.index("f")) == types.Position(3, 2)
    assert Positions(text, "utf-32").position(text.index("f")) == types.Position(3, 1)
    assert Positions(text, "utf-8").position(text.index("f")) == types.Position(3, 4)
    for i in range(len(text) + 1):
        if text[i - 1 : i + 1] != "\r\n":  # the middle of a line break has no position
            assert pos.offset(pos.position(i)) == i
    # a Lark span (lines at \n only, 1-based code-point columns) lands on the same text
    span = Span("x", 2, 5, 2, 6)  # the `e`: line 2, column 5 for Lark ("c\\rd\\u2028e")
    start = pos.span_range(span).start
    assert pos.offset(start) == text.index("e")


def test_every_catalog_name_has_a_pytorch_equivalent():
    names = [
        *catalog.LAYERS,
        *catalog.LOSSES,
        *catalog.OPTIMIZERS,
        *catalog.SCHEDULES,
        *catalog.REGULARIZERS,
        *catalog.SOURCES,
        "early_stop",
        *(f"data.{k}" for k in catalog.DATA_KEYS),
        *(f"train.{k}" for k in catalog.TRAIN_KEYS),
    ]
    assert sorted(names) == sorted(catalog.TORCH)


def test_every_option_has_a_meaning_for_its_hover():
    tables = {
        **catalog.LAYERS,
        **catalog.LOSSES,
        **catalog.OPTIMIZERS,
        **catalog.SCHEDULES,
        **catalog.REGULARIZERS,
        **catalog.SOURCES,
        "early_stop": catalog.EARLY_STOP,
    }
    missing = [(n, k) for n, sig in tables.items() for k, o in sig.opts.items()]
    missing += [("data", k) for k in catalog.DATA_KEYS] + [("train", k) for k in catalog.TRAIN_KEYS]
    blocks = {"data": catalog.DATA_KEYS, "train": catalog.TRAIN_KEYS}
    opts = {n: (blocks[n] if n in blocks else tables[n].opts) for n, _ in missing}
    assert [(n, k) for n, k in missing if not catalog.option_doc(n, k, opts[n][k])] == []


def test_without_pygls_lsp_names_the_extra():
    import subprocess

    code = "import sys; sys.modules['pygls'] = None; from fcspec.cli import main; main(['lsp'])"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "pip install -e '.[lsp]'" in r.stderr and "Traceback" not in r.stderr
