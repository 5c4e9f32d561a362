"""benchmarks/load_speed.py and benchmarks/tabular_accuracy.py run and report what they claim.

No timing is asserted: the load benchmark is smoke-run on a small file; the
accuracy comparison is run for real on the penguins, where fcspec and
scikit-learn's Pipeline must agree within a few points.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA

BENCH = ROOT / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the shared MNIST files",
)
def test_load_speed_smoke_run(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\nkept\n")
    env = dict(os.environ, FCSPEC_DATA=str(SHARED_DATA))
    r = subprocess.run(
        [
            sys.executable,
            str(BENCH / "load_speed.py"),
            "--csv",
            str(tmp_path / "m.csv"),
            "--rows",
            "300",
            "--rounds",
            "1",
            "--readers",
            "fcspec,pandas",
            "--write",
            str(doc),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert text.startswith("# Performance\n\nkept\n") and "<!-- load:begin -->" in text
    rows = [
        ln for ln in text.splitlines() if ln.startswith("| fcspec") or ln.startswith("| pandas")
    ]
    assert len(rows) == 2 and "300 rows" in text
    assert (tmp_path / "m.csv").read_text().splitlines()[0].startswith("label,pixel0,pixel1")


def test_penguins_accuracy_beside_scikit_learn():
    pytest.importorskip("sklearn")
    bench = load("tabular_accuracy")
    name, call, loss, target, opts = bench.CASES[0]
    ours, _ = bench.run_fcspec(call, loss)
    theirs, _ = bench.run_sklearn(target, loss, opts)
    assert ours > 0.9 and abs(ours - theirs) <= 0.05, (ours, theirs)
