"""The compiled kernels themselves (numba), imported only by kernels._load.

kernels.py says what they are for and why each is bit for bit the NumPy path's.
They are module-level functions, not closures: numba's disk cache keys a function
on its closure's pickled values, and closures holding another compiled function
never matched their cache entries, so two kernels were compiled again in every
process (0.7 s of each run's start).  They are plain loops for the same reason
(the start of a run): see the backward kernels' comment.
"""

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


# The backward kernels write gx and add each entry into gb in the same loop: per
# column, rows are added from row 0 on, np.add.reduce(gx, axis=0)'s order.  They
# are written as plain loops (no slice assignment, no call of another kernel):
# numba compiles such a function in about half the time, and the first run on a
# machine compiles every kernel it uses.


@jit
def relu_backward_bias(y, gy, gx, gb):
    one, zero = np.float32(1), np.float32(0)
    n, m = gy.shape
    for j in range(m):
        gb[j] = zero  # np.add.reduce starts from 0: 0 + -0.0 is +0.0
    for i in range(n):
        for j in range(m):
            g = gy[i, j] * (one if y[i, j] > zero else zero)  # gy * (y > 0)
            gx[i, j] = g
            gb[j] = gb[j] + g


@jit
def leaky_relu_backward_bias(z, gy, slope, gx, gb):
    zero = np.float32(0)
    n, m = gy.shape
    for j in range(m):
        gb[j] = zero
    for i in range(n):
        for j in range(m):
            g = gy[i, j]
            g = g if z[i, j] > zero else g * slope
            gx[i, j] = g
            gb[j] = gb[j] + g


@jit
def sigmoid_backward_bias(y, gy, gx, gb):
    one, zero = np.float32(1), np.float32(0)
    n, m = gy.shape
    for j in range(m):
        gb[j] = zero
    for i in range(n):
        for j in range(m):
            s = y[i, j]
            g = ((one - s) * s) * gy[i, j]
            gx[i, j] = g
            gb[j] = gb[j] + g


@jit
def tanh_backward_bias(y, gy, gx, gb):
    one, zero = np.float32(1), np.float32(0)
    n, m = gy.shape
    for j in range(m):
        gb[j] = zero
    for i in range(n):
        for j in range(m):
            t = y[i, j]
            g = (one - t * t) * gy[i, j]
            gx[i, j] = g
            gb[j] = gb[j] + g


@jit
def colsum(g, gb):
    # a bias gradient with no activation above (the output layer): np.add.reduce(axis=0)
    zero = np.float32(0)
    n, m = g.shape
    for j in range(m):
        gb[j] = zero
    for i in range(n):
        for j in range(m):
            gb[j] = gb[j] + g[i, j]


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
