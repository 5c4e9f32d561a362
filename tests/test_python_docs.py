"""docs/python.md: every ```python block runs, in order, in one namespace.

The blocks run from a temporary folder holding a copy of specs/, so the run
folders they write (runs/...) land there; their own asserts are the checks.
"""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import ROOT

DOC = ROOT / "docs" / "python.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def test_the_guide_has_the_issues_examples():
    text = "\n".join(blocks())
    assert 'fcspec.load("specs/digits.fc").fit(' in text and ".evaluate()" in text
    for name in ("GridSearchCV", "cross_val_score", "ColumnTransformer", "load_run", "export_onnx"):
        assert name in text


def run_blocks(tmp_path, monkeypatch, numbered) -> dict:
    """Run `numbered` ((index, code) pairs) in one namespace, from a folder holding a copy
    of specs/ and of the palmerpenguins file the DataFrame examples read."""
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "tests" / "data" / "penguins.csv", tmp_path / "penguins.csv")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_python"}
    for i, code in numbered:
        try:
            exec(compile(code, f"docs/python.md block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"docs/python.md block {i + 1} failed: {e!r}\n{code}") from e
    return namespace


@pytest.mark.slow
def test_every_python_example_runs(tmp_path, monkeypatch):
    run_blocks(tmp_path, monkeypatch, enumerate(blocks()))
    assert (tmp_path / "runs" / "Digits" / "weights.npz").exists()


def test_the_dataframe_examples_run(tmp_path, monkeypatch):
    """The DataFrame section on its own (it imports what it uses): fast enough for every run."""
    section = DOC.read_text(encoding="utf-8").split("## A DataFrame with text columns")[1]
    section = section.split("\n## ")[0]
    numbered = [(i, b) for i, b in enumerate(blocks()) if b in section]
    assert len(numbered) == 3
    ns = run_blocks(tmp_path, monkeypatch, numbered)
    import fcspec

    with pytest.warns(fcspec.FcspecWarning, match="2 cells hold categories unseen"):
        ns["pm"].predict(ns["odd"])
    assert ns["pm"].encoding == {"imputed": {"sex": 2}, "unseen": {"island": 2}}
    assert list(ns["pm"].predict(ns["X"].iloc[[0, 200, 300]])) == ["Adelie", "Gentoo", "Chinstrap"]
    assert (tmp_path / "runs" / "penguins-python" / "schema.json").exists()
