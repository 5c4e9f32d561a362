"""The 2-D playground data sets: `dataset("moons" | "circles" | "spirals" | "xor")`.

Generated, not stored: each is a pure function of (n, noise, seed), drawn from
`np.random.default_rng(seed)`, two classes (ids 0 and 1), float64 points
`[n, 2]`.  Every set draws in the same order: first the shuffle
(`rng.permutation(n)`, except for xor, whose points are random already), then
the Gaussian noise `rng.normal(scale=noise, size=(n, 2))` added to the points.

    moons    scikit-learn's make_moons: two interleaving half circles,
             n // 2 points on the upper one (class 0), the rest on the lower one
    circles  scikit-learn's make_circles(factor = 0.5): n // 2 points evenly on the
             unit circle (class 0), the rest on the circle of radius 0.5 (class 1)
    spirals  TensorFlow Playground's two spirals: point i of n_c has radius i / n_c
             and angle 1.75 * 2 pi * i / n_c, the second class turned by pi
    xor      points uniform in [-1, 1]^2, class 1 where the signs of the two
             coordinates differ (the noise moves points after labelling, so it
             blurs the boundary)

The same seed gives the same points on every machine (NumPy's PCG64 and its
normal sampler are stable across releases).  The generators follow
scikit-learn's point layout, not its random stream (RandomState), so points
agree with sklearn's as sets without noise and in distribution with it.
"""

from __future__ import annotations

import numpy as np

from .catalog import PLAYGROUND as SETS  # name -> (default n, default noise)  # noqa: F401

CIRCLES_FACTOR = 0.5


def _moons(n: int) -> tuple[np.ndarray, np.ndarray]:
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, np.pi, n_out)
    t_in = np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.cos(t_out), 1 - np.cos(t_in)])
    y = np.concatenate([np.sin(t_out), 1 - np.sin(t_in) - 0.5])
    return np.stack([x, y], axis=1), np.repeat([0, 1], [n_out, n_in])


def _circles(n: int) -> tuple[np.ndarray, np.ndarray]:
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    x = np.concatenate([np.cos(t_out), CIRCLES_FACTOR * np.cos(t_in)])
    y = np.concatenate([np.sin(t_out), CIRCLES_FACTOR * np.sin(t_in)])
    return np.stack([x, y], axis=1), np.repeat([0, 1], [n_out, n_in])


def _spirals(n: int) -> tuple[np.ndarray, np.ndarray]:
    parts, labels = [], []
    for c, m in enumerate((n // 2, n - n // 2)):
        i = np.arange(m) / max(m, 1)
        angle = 1.75 * 2 * np.pi * i + c * np.pi
        parts.append(np.stack([i * np.sin(angle), i * np.cos(angle)], axis=1))
        labels.append(np.full(m, c))
    return np.concatenate(parts), np.concatenate(labels)


# The clean layouts of the sets in point order (xor's points are drawn, so it has none).
LAYOUTS = {"moons": _moons, "circles": _circles, "spirals": _spirals, "xor": None}


def generate(name: str, n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(points float64 [n, 2], class ids int64 [n]) of playground set `name`."""
    rng = np.random.default_rng(seed)
    layout = LAYOUTS[name]
    if layout is None:  # xor
        x = rng.uniform(-1.0, 1.0, size=(n, 2))
        y = (x[:, 0] * x[:, 1] < 0).astype(np.int64)
    else:
        x, y = layout(n)
        order = rng.permutation(n)
        x, y = x[order], y[order].astype(np.int64)
    if noise:
        x = x + rng.normal(scale=noise, size=x.shape)
    return x, y
