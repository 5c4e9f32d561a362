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


@pytest.mark.slow
def test_every_python_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "docs_python"}
    for i, code in enumerate(blocks()):
        try:
            exec(compile(code, f"docs/python.md block {i + 1}", "exec"), namespace)
        except Exception as e:  # name the block that failed
            raise AssertionError(f"docs/python.md block {i + 1} failed: {e!r}\n{code}") from e
    assert (tmp_path / "runs" / "Digits" / "weights.npz").exists()
