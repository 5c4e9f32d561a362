"""Fused optimizer updates: one pass over the parameters instead of one NumPy pass per operation.

optim.py writes each torch.optim rule as a sequence of `out=` ufuncs: Adam is a
dozen passes over every parameter vector, each single-threaded and memory-bound
(200-350 us a step for MNIST's 109k parameters, a third of a batch-32 step).
These kernels do the same float32 operations, in the same order, on each entry
in turn, so the result is bit for bit the NumPy path's (tests/test_kernels.py
checks that), which keeps PyTorch parity and run-to-run reproducibility as they
were: an entry's value never depends on how the work was split.

They are compiled by numba (the `fast` extra) when it is installed; without it,
or with FCSPEC_KERNELS=numpy in the environment, `available()` is False and
optim.py keeps its NumPy code.  numba is imported on the first training step,
never by `fcspec check`, and its compilation is cached on disk (the first run
on a machine pays about a second).

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
    import numba
    import numpy as np

    jit = numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")

    @jit
    def adam(theta, grad, m, v, vmax, decay, wd, lerp_w, lerp_big, b2, one_minus_b2,
             neg_step, bc2_sqrt, eps, decoupled, coupled, amsgrad):  # fmt: skip
        # optim.Adam._update, entry by entry, in its operation order
        for i in range(theta.size):
            p = theta[i]
            g = grad[i]
            if decoupled:
                p = p * decay
            elif coupled:
                g = p * wd + g
            mi = m[i]
            diff = g - mi
            if lerp_big:
                mi = diff * lerp_w + g
            else:
                mi = diff * lerp_w + mi
            m[i] = mi
            s = g * one_minus_b2
            vi = s * g + v[i] * b2
            v[i] = vi
            if amsgrad:
                x = vmax[i]
                if not (x != x) and not (x > vi):
                    x = vi
                vmax[i] = x
                vi = x
            denom = np.sqrt(vi)
            denom = denom / bc2_sqrt
            denom = denom + eps
            upd = mi * neg_step
            upd = upd / denom
            theta[i] = p + upd

    @jit
    def sgd(theta, grad, buf, wd, coupled, has_momentum, momentum, first, damp1, damp_is_one,
            nesterov, neg_lr):  # fmt: skip
        # optim.SGD._update, entry by entry
        for i in range(theta.size):
            p = theta[i]
            g = grad[i]
            if coupled:
                g = p * wd + g
            if has_momentum:
                if first:
                    b = g
                else:
                    b = buf[i] * momentum
                    if damp_is_one:
                        b = g + b
                    else:
                        b = g * damp1 + b
                buf[i] = b
                if nesterov:
                    g = b * momentum + g
                else:
                    g = b
            theta[i] = g * neg_lr + p

    return {"adam": adam, "sgd": sgd}
