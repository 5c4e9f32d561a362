"""Fused kernels: one compiled pass where the NumPy path makes several.

The optimizer updates, linear's bias add fused with the activation after it and
the backward of that pair (ops.py's FUSIONS), softmax-cross-entropy
(losses.CrossEntropy) and the batch gather with its preprocessing
(data.Split.rows); their code is kernels_numba.py, this module loads it.

optim.py writes each torch.optim rule as a sequence of `out=` ufuncs: Adam is a
dozen passes over every parameter vector, each single-threaded and memory-bound
(200-350 us a step for MNIST's 109k parameters, a third of a batch-32 step).
These kernels do the same float32 operations, in the same order, on each entry
in turn, so the result is bit for bit the NumPy path's (tests/test_kernels.py
checks that), which keeps PyTorch parity and run-to-run reproducibility as they
were: an entry's value never depends on how the work was split.  What a kernel
cannot reproduce stays with NumPy: exp, log and tanh (NumPy's own SIMD
approximations, not libm's, so a compiled exp would differ in the last bit) and
the BLAS products; the kernels fuse the passes around them.  Reductions across
rows (bias gradients) run serially in row order, the order of the NumPy path's
np.add.reduce(axis=0), so no thread count or split changes a bit.

They are compiled by numba (the `fast` extra) when it is installed; without it,
or with FCSPEC_KERNELS=numpy in the environment, `available()` is False and
optim.py keeps its NumPy code.  numba is imported on the first training step,
never by `fcspec check`, and its compilation is cached on disk (the first run
on a machine compiles the kernels it uses: 1.4-1.9 s, docs/performance.md).

Every scalar reaches a kernel as a NumPy float32, and the kernels hold no
numeric literal, so no operation is promoted to float64.
"""

from __future__ import annotations

import os
from typing import Any

_KERNELS: dict[str, Any] | None = None
_TRIED = False


def available() -> bool:
    """Whether the compiled kernels can be used (numba importable, not switched off)."""
    return _load() is not None


def get(name: str):
    k = _load()
    assert k is not None, "kernels.get() without kernels.available()"
    return k[name]


def _load() -> dict[str, Any] | None:
    global _KERNELS, _TRIED
    if not _TRIED:
        _TRIED = True
        if os.environ.get("FCSPEC_KERNELS", "").lower() != "numpy":
            try:
                _KERNELS = _compile()
            except ImportError:
                _KERNELS = None
    return _KERNELS


def _compile() -> dict[str, Any]:
    """Every compiled function of kernels_numba, by name (compiled at its first call)."""
    from numba.core.dispatcher import Dispatcher

    from fcspec import kernels_numba

    return {n: f for n, f in vars(kernels_numba).items() if isinstance(f, Dispatcher)}
