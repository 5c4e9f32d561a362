"""The fused optimizer kernels (fcspec/kernels.py) against optim.py's NumPy path: bit for bit.

Both paths run the same float32 operations in the same order, so every entry
must agree exactly after many steps, for every option the kernels handle; the
NumPy path itself is checked against torch.optim in test_optim*.py.  Without
numba (or with FCSPEC_KERNELS=numpy) the NumPy path runs: tested here too.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from fcspec import kernels, optim

pytest.importorskip("numba", reason="the fused kernels need numba (pip install -e '.[fast]')")

SIZE = 1031  # not a multiple of any vector width


def _run(cls, options, use_kernels: bool, monkeypatch, steps=25, seed=0, **kw):
    monkeypatch.setattr(kernels, "available", lambda: use_kernels)
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(SIZE).astype(np.float32)
    opt = cls(options, SIZE, **kw)
    for t in range(steps):
        grad = (rng.standard_normal(SIZE) * (1 + t % 3)).astype(np.float32)
        grad[t % SIZE] = 0.0
        lr = 0.01 * (0.9**t)  # a schedule changes lr between steps
        opt.step(theta, grad, lr)
    return theta, opt.state_dict()


def _same(monkeypatch, cls, options, **kw):
    a, sa = _run(cls, options, True, monkeypatch, **kw)
    b, sb = _run(cls, options, False, monkeypatch, **kw)
    assert a.tobytes() == b.tobytes()
    for k in sa:
        assert np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes(), k


@pytest.mark.parametrize(
    "weight_decay,amsgrad,decoupled,betas",
    list(itertools.product([0.0, 0.01], [False, True], [False, True], [(0.9, 0.999), (0.3, 0.99)])),
)
def test_adam_kernel_is_the_numpy_update_bit_for_bit(
    monkeypatch, weight_decay, amsgrad, decoupled, betas
):
    options = {"betas": betas, "eps": 1e-8, "weight_decay": weight_decay, "amsgrad": amsgrad}
    _same(monkeypatch, optim.Adam, options, decoupled=decoupled)


@pytest.mark.parametrize(
    "momentum,dampening,nesterov,weight_decay",
    [
        (0.0, 0.0, False, 0.0),
        (0.0, 0.0, False, 1e-3),
        (0.9, 0.0, False, 0.0),
        (0.9, 0.0, True, 0.0),
        (0.9, 0.1, False, 1e-2),
        (0.5, 0.0, True, 1.0),
    ],
)
def test_sgd_kernel_is_the_numpy_update_bit_for_bit(
    monkeypatch, momentum, dampening, nesterov, weight_decay
):
    options = {
        "momentum": momentum,
        "dampening": dampening,
        "nesterov": nesterov,
        "weight_decay": weight_decay,
    }
    _same(monkeypatch, optim.SGD, options)


def test_nan_and_inf_propagate_as_in_numpy(monkeypatch):
    """A non-finite gradient entry reaches the same entries either way (train.py reports it)."""
    outs = []
    for use in (True, False):
        monkeypatch.setattr(kernels, "available", lambda use=use: use)
        theta = np.ones(8, np.float32)
        grad = np.array([np.nan, np.inf, -np.inf, 0, 1, -1, 1e30, 1e-30], np.float32)
        opt = optim.Adam({"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                          "amsgrad": True}, 8)  # fmt: skip
        with np.errstate(all="ignore"):
            opt.step(theta, grad, 1e-3)
            opt.step(theta, np.ones(8, np.float32), 1e-3)
        outs.append(theta.tobytes())
    assert outs[0] == outs[1]


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("FCSPEC_KERNELS", "numpy")
    monkeypatch.setattr(kernels, "_TRIED", False)
    monkeypatch.setattr(kernels, "_KERNELS", None)
    assert not kernels.available()
    monkeypatch.delenv("FCSPEC_KERNELS")
    monkeypatch.setattr(kernels, "_TRIED", False)
    assert kernels.available()


def test_without_numba_the_numpy_path_runs(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_numba(name, *a, **kw):
        if name == "numba" or name.startswith("numba."):
            raise ImportError("No module named 'numba'")
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_numba)
    monkeypatch.setattr(kernels, "_TRIED", False)
    monkeypatch.setattr(kernels, "_KERNELS", None)
    assert not kernels.available()
    theta = np.ones(4, np.float32)
    opt = optim.SGD({"momentum": 0.9, "dampening": 0.0, "nesterov": False,
                     "weight_decay": 0.0}, 4)  # fmt: skip
    opt.step(theta, np.full(4, 2, np.float32), 0.5)
    assert theta.tolist() == [0.0, 0.0, 0.0, 0.0]
