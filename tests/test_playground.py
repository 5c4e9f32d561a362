"""The 2-D playground sets: scikit-learn's layout, seeded, checked, and a moons spec trains."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec import playground
from fcspec.check import check_source
from fcspec.cli import main

sklearn_datasets = pytest.importorskip("sklearn.datasets")
stats = pytest.importorskip("scipy.stats")


def _rows(x):
    return x[np.lexsort(x.T[::-1])]


@pytest.mark.parametrize("n", [7, 200])
def test_without_noise_the_points_are_sklearns(n):
    x, y = playground.generate("moons", n, 0.0, seed=3)
    xs, ys = sklearn_datasets.make_moons(n, shuffle=False)
    for c in (0, 1):
        np.testing.assert_allclose(_rows(x[y == c]), _rows(xs[ys == c]), atol=1e-12)
    x, y = playground.generate("circles", n, 0.0, seed=3)
    xs, ys = sklearn_datasets.make_circles(n, shuffle=False, factor=playground.CIRCLES_FACTOR)
    for c in (0, 1):
        np.testing.assert_allclose(_rows(x[y == c]), _rows(xs[ys == c]), atol=1e-12)


@pytest.mark.parametrize("name", ["moons", "circles"])
def test_with_noise_the_distribution_is_sklearns(name):
    n, noise = 4000, 0.1
    x, y = playground.generate(name, n, noise, seed=0)
    make = {
        "moons": sklearn_datasets.make_moons,
        "circles": lambda *a, **k: sklearn_datasets.make_circles(
            *a, factor=playground.CIRCLES_FACTOR, **k
        ),
    }[name]
    xs, ys = make(n, noise=noise, random_state=0)
    assert np.bincount(y).tolist() == np.bincount(ys).tolist()
    for c in (0, 1):
        for d in (0, 1):  # two-sample KS per class and coordinate: the same distribution
            assert stats.ks_2samp(x[y == c, d], xs[ys == c, d]).pvalue > 1e-3
        # the noise itself: the spread around the clean curve is `noise`
    clean, _ = playground.generate(name, n, 0.0, seed=0)
    assert np.std(x - clean) == pytest.approx(noise, rel=0.05)


def test_spirals_and_xor():
    x, y = playground.generate("xor", 500, 0.0, seed=1)
    assert x.shape == (500, 2) and np.abs(x).max() <= 1
    assert ((x[:, 0] * x[:, 1] < 0) == (y == 1)).all()
    x, y = playground.generate("spirals", 400, 0.0, seed=1)
    r = np.hypot(x[:, 0], x[:, 1])
    assert np.bincount(y).tolist() == [200, 200] and r.max() < 1
    # the second spiral is the first turned by pi
    np.testing.assert_allclose(_rows(x[y == 1]), _rows(-x[y == 0]), atol=1e-12)


def test_seeded_and_deterministic():
    a = playground.generate("moons", 50, 0.2, seed=5)
    b = playground.generate("moons", 50, 0.2, seed=5)
    c = playground.generate("moons", 50, 0.2, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


SPEC = """
model M {{ input [2]  out = linear(2) }}
loss cross_entropy
optimizer sgd(lr = 0.1)
data {{ train = {source} }}
"""


def test_defaults_are_resolved_into_the_ir():
    r = check_source(SPEC.format(source='dataset("circles")'), "m.fc")
    assert not r.errors
    assert r.spec.data.train.args == {"name": "circles", "n": 300, "noise": 0.05, "seed": 0}
    r = check_source(SPEC.format(source='dataset("digits")'), "m.fc")
    assert r.spec.data.train.args == {"name": "digits"}  # the embedded sets' IR is unchanged


@pytest.mark.parametrize(
    "source, message",
    [
        ('dataset("digits", noise = 0.1)', "`noise` applies to the generated playground sets"),
        ('dataset("moons", n = 1)', "`n` must be >= 2"),
        ('dataset("xor", noise = -1)', "`noise` must be >= 0"),
    ],
)
def test_bad_options_are_located_errors(source, message):
    r = check_source(SPEC.format(source=source), "m.fc")
    assert r.errors
    text = r.errors[0].render(SPEC.format(source=source))
    assert message in text and "m.fc:5:" in text


def test_the_moons_spec_trains(tmp_path):
    out = tmp_path / "run"
    args = ["run", str(ROOT / "specs" / "moons.fc"), "--out", str(out), "-q", "--plot"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_accuracy"] >= 0.95
    # --plot draws the decision boundary of a 2-D input: both classes' colours fill the plane
    img = pytest.importorskip("matplotlib.image").imread(out / "boundary.png")
    assert img.shape[:2] == (500, 550)
    rgb = img[60:440, 80:440, :3]
    reddish = (rgb[..., 0] > rgb[..., 2] + 0.2).mean()
    bluish = (rgb[..., 2] > rgb[..., 0] + 0.2).mean()
    assert reddish > 0.2 and bluish > 0.2
