"""The VS Code extension in editors/vscode/: its manifest, and its TextMate grammar.

The grammar is generated from the catalog (make_grammar.py) and tested by
vscode-tmgrammar-test (npm) on the annotated samples in editors/vscode/tests/,
where each `#   ^^^ scope` line asserts the scope of the columns above it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import pytest

from conftest import ROOT

VSCODE = ROOT / "editors" / "vscode"
GRAMMAR = VSCODE / "syntaxes" / "fc.tmLanguage.json"


def _make_grammar():
    spec = importlib.util.spec_from_file_location("make_grammar", VSCODE / "make_grammar.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_grammar_is_current_with_the_catalog(request):
    fresh = _make_grammar().text()
    if request.config.getoption("--update-golden"):
        GRAMMAR.write_text(fresh, encoding="utf-8")
        return
    assert GRAMMAR.read_text("utf-8") == fresh, (
        "editors/vscode/syntaxes/fc.tmLanguage.json is stale: "
        "run python editors/vscode/make_grammar.py (or pytest --update-golden)"
    )


def test_manifest_starts_the_server_for_fc_files():
    manifest = json.loads((VSCODE / "package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    assert language["extensions"] == [".fc"]
    assert (VSCODE / language["configuration"]).is_file()
    (grammar,) = manifest["contributes"]["grammars"]
    assert (VSCODE / grammar["path"]).resolve() == GRAMMAR
    assert json.loads(GRAMMAR.read_text())["scopeName"] == grammar["scopeName"]
    assert "vscode-languageclient" in manifest["dependencies"]
    extension = (VSCODE / manifest["main"]).read_text()
    default = manifest["contributes"]["configuration"]["properties"]["fcspec.server.command"]
    assert default["default"] == ["fcspec", "lsp"] and "TransportKind.stdio" in extension
    json.loads((VSCODE / "language-configuration.json").read_text())


def _tmgrammar_test() -> str | None:
    for candidate in (
        VSCODE / ".tools" / "node_modules" / ".bin" / "vscode-tmgrammar-test",
        VSCODE / "node_modules" / ".bin" / "vscode-tmgrammar-test",
    ):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("vscode-tmgrammar-test")


def test_grammar_passes_its_annotated_samples():
    tool = _tmgrammar_test()
    if tool is None:
        pytest.skip(
            "vscode-tmgrammar-test is not installed (npm install --prefix editors/vscode/.tools "
            "vscode-tmgrammar-test@0.1.3; .ci/run does it when npm is there)"
        )
    samples = sorted((VSCODE / "tests").glob("*.test.fc"))
    assert len(samples) >= 3
    r = subprocess.run(
        [tool, "-g", str(GRAMMAR), *map(str, samples)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=VSCODE,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("run successfuly") == len(samples), r.stdout


def test_extension_script_parses():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    r = subprocess.run(
        [node, "--check", str(VSCODE / "extension.js")], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
