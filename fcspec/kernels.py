"""Fused kernels: one compiled pass where the NumPy path makes several.

The optimizer updates (below), linear's bias add fused with the activation
after it and the backward of that pair (ops.py's FUSIONS), softmax-cross-entropy
(losses.CrossEntropy) and the batch gather with its preprocessing (data.Split.rows).

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

    # -- linear's bias + activation (ops.FUSIONS) --------------------------------
    # Forward: x is linear's x W^T, [N, M] (C order); the kernel adds the bias in
    # place (x becomes the pre-activation z the activation's backward may read) and
    # writes the activation into y.  Backward: gx = the activation's derivative times
    # gy, and gb = the column sums of gx in the same pass, rows added in order
    # (np.add.reduce(gx, axis=0): from 0, one row at a time).

    @jit
    def bias_relu(x, b, y):
        zero = np.float32(0)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                z = x[i, j] + b[j]
                x[i, j] = z
                # np.maximum(z, zeros): z when z > 0 or z is NaN, else +0 (also for z = -0)
                y[i, j] = z if (z > zero or z != z) else zero

    @jit
    def bias_leaky_relu(x, b, slope, y):
        zero = np.float32(0)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                z = x[i, j] + b[j]
                x[i, j] = z
                y[i, j] = z if z > zero else z * slope

    @jit
    def bias_negate(x, b, y):
        # sigmoid's first pass: z = x + b, y = -z (NumPy's exp follows, then reciprocal_1p)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                z = x[i, j] + b[j]
                x[i, j] = z
                y[i, j] = -z

    @jit
    def reciprocal_1p(y):
        one = np.float32(1)
        for i in range(y.shape[0]):
            for j in range(y.shape[1]):
                y[i, j] = one / (y[i, j] + one)

    @jit
    def _colsum_row(gb, gxi):
        for j in range(gb.shape[0]):
            gb[j] = gb[j] + gxi[j]

    @jit
    def relu_backward_bias(y, gy, gx, gb):
        one, zero = np.float32(1), np.float32(0)
        gb[:] = zero  # np.add.reduce starts from 0: 0 + -0.0 is +0.0
        for i in range(gy.shape[0]):
            for j in range(gy.shape[1]):
                gx[i, j] = gy[i, j] * (one if y[i, j] > zero else zero)  # gy * (y > 0)
            _colsum_row(gb, gx[i])

    @jit
    def leaky_relu_backward_bias(z, gy, slope, gx, gb):
        zero = np.float32(0)
        gb[:] = zero  # np.add.reduce starts from 0: 0 + -0.0 is +0.0
        for i in range(gy.shape[0]):
            for j in range(gy.shape[1]):
                g = gy[i, j]
                gx[i, j] = g if z[i, j] > zero else g * slope
            _colsum_row(gb, gx[i])

    @jit
    def sigmoid_backward_bias(y, gy, gx, gb):
        one, zero = np.float32(1), np.float32(0)
        gb[:] = zero  # np.add.reduce starts from 0: 0 + -0.0 is +0.0
        for i in range(gy.shape[0]):
            for j in range(gy.shape[1]):
                s = y[i, j]
                gx[i, j] = ((one - s) * s) * gy[i, j]
            _colsum_row(gb, gx[i])

    @jit
    def tanh_backward_bias(y, gy, gx, gb):
        one, zero = np.float32(1), np.float32(0)
        gb[:] = zero  # np.add.reduce starts from 0: 0 + -0.0 is +0.0
        for i in range(gy.shape[0]):
            for j in range(gy.shape[1]):
                t = y[i, j]
                gx[i, j] = (one - t * t) * gy[i, j]
            _colsum_row(gb, gx[i])

    @jit
    def colsum(g, gb):
        # a bias gradient with no activation above (the output layer): np.add.reduce(axis=0)
        gb[:] = np.float32(0)
        for i in range(g.shape[0]):
            _colsum_row(gb, g[i])

    # -- softmax-cross-entropy (losses.CrossEntropy, no class weights) ------------
    # NumPy's exp, the BLAS row sums and NumPy's log run between the two kernels, and
    # the loss value's float64 sums stay NumPy's (pairwise) too: the kernels fuse the
    # passes around them.

    @jit
    def ce_shift(x, m, t):
        # m = the row maxima as np.maximum.reduce takes them down a transposed copy: NaN
        # propagates, and of two equal values the later wins (-0 against +0: SIMD max)
        for i in range(x.shape[0]):
            mx = x[i, 0]
            for j in range(1, x.shape[1]):
                v = x[i, j]
                if mx == mx and not (v < mx):  # once NaN, the maximum stays NaN
                    mx = v
            m[i, 0] = mx
            for j in range(x.shape[1]):
                t[i, j] = x[i, j] - mx

    @jit
    def ce_grad(e, s, t, y, picked, target, smooth, has_smooth, denom, divide):
        # picked = t[rows, y]; g = e / s in place, then g[rows, y] -= target, g -= smooth,
        # g /= denom: per entry the NumPy path's operations in its order
        for i in range(e.shape[0]):
            k = y[i]
            picked[i] = t[i, k]
            si = s[i, 0]
            for j in range(e.shape[1]):
                g = e[i, j] / si
                if j == k:
                    g = g - target
                if has_smooth:
                    g = g - smooth
                if divide:
                    g = g / denom
                e[i, j] = g

    # -- the batch gather with its preprocessing (data.Split.rows) ----------------
    # np.take(raw, idx, axis=0, mode="clip") into a byte buffer, then Preprocess.
    # apply_into's float32 divide, subtract and divide, in one pass over the batch:
    # small integers convert to float32 exactly, and x / 1 is x, so the one formula
    # covers scale = 1 (NumPy's plain conversion) too.

    @jit
    def gather_preprocess(raw, idx, scale, shift, divisor, shifts, divides, out):
        last = raw.shape[0] - 1
        for r in range(idx.shape[0]):
            k = idx[r]
            if k < 0:
                k = 0
            elif k > last:
                k = last
            for j in range(raw.shape[1]):
                v = np.float32(raw[k, j]) / scale
                if shifts:
                    v = v - shift[j]
                if divides:
                    v = v / divisor[j]
                out[r, j] = v

    return {
        "ce_shift": ce_shift,
        "ce_grad": ce_grad,
        "gather_preprocess": gather_preprocess,
        "adam": adam,
        "sgd": sgd,
        "bias_relu": bias_relu,
        "bias_leaky_relu": bias_leaky_relu,
        "bias_negate": bias_negate,
        "reciprocal_1p": reciprocal_1p,
        "relu_backward_bias": relu_backward_bias,
        "leaky_relu_backward_bias": leaky_relu_backward_bias,
        "sigmoid_backward_bias": sigmoid_backward_bias,
        "tanh_backward_bias": tanh_backward_bias,
        "colsum": colsum,
    }
