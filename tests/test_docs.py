"""The docs that are generated from code stay in step with it."""

from __future__ import annotations

import re

from conftest import ROOT
from fcspec.catalog import markdown_tables

BEGIN, END = "<!-- catalog:begin -->", "<!-- catalog:end -->"


def test_language_reference_tables_are_current(request):
    path = ROOT / "docs" / "language.md"
    text = path.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    fresh = "\n" + markdown_tables() + "\n"
    if request.config.getoption("--update-golden"):
        path.write_text(text[:start] + fresh + text[stop:])
        return
    assert text[start:stop] == fresh, "docs/language.md is stale: run pytest --update-golden"


def test_readme_states_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert "fcspec run specs/digits.fc" in readme
    blocks = re.findall(r"```\n(.*?)```", readme, re.S)
    assert any("pip install -e ." in b and "fcspec run specs/digits.fc" in b for b in blocks)
    assert any("pip install -e '.[dev" in b and "python -m pytest" in b for b in blocks)
    # .ci/run runs the README's test command
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()
