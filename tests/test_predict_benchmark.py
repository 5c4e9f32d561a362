"""benchmarks/inference_speed.py --predict runs both commands and writes only its section.

No timing is asserted: the figures belong to the benchmark (docs/performance.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_DATA


@pytest.mark.skipif(
    not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="needs the shared MNIST files",
)
def test_predict_benchmark_smoke_run(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Performance\n\n<!-- inference:begin -->\nkept\n<!-- inference:end -->\n")
    env = dict(os.environ, FCSPEC_DATA=str(SHARED_DATA))
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "inference_speed.py")]
        + ["--predict", "--rounds", "1", "--write", str(doc)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    text = doc.read_text()
    assert "<!-- inference:begin -->\nkept\n<!-- inference:end -->" in text
    section = text[text.index("<!-- predict:begin -->") : text.index("<!-- predict:end -->")]
    rows = re.findall(r"\| (fcspec predict|plain onnxruntime) \| ([\d.]+) s \|", section)
    assert [name for name, _ in rows] == ["fcspec predict", "plain onnxruntime"]
    ratio = float(re.search(r"Ratio of the medians: \*\*([\d.]+)x\*\*", section).group(1))
    fc, plain = (float(t) for _, t in rows)
    # the table rounds seconds to 3 decimals and the ratio to 2: allow exactly that rounding
    rounding = 0.005 + (fc / plain) * (0.0005 / fc + 0.0005 / plain)
    assert ratio == pytest.approx(fc / plain, abs=rounding + 1e-9)
