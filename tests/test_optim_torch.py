"""optim.py against torch.optim: every optimizer and option to float32 round-off, torch's
defaults, gradient clipping.  The optimizers' own behaviour is tested in test_optim.py."""

from __future__ import annotations

import numpy as np
import pytest
from test_optim import CASES, IDS, SIZES, N, lr_at, problem, run_fcspec

from fcspec import catalog, ir, optim

torch = pytest.importorskip("torch")

# each optimizer's torch.optim class, from its catalog row (`torch.optim.Adam`)
TORCH = {kind: catalog.TORCH[kind].rsplit(".", 1)[1] for kind in catalog.OPTIMIZERS}


def run_torch(kind, opts, theta, grads):
    chunks = np.split(theta, np.cumsum(SIZES)[:-1])
    params = [torch.nn.Parameter(torch.from_numpy(c.copy())) for c in chunks]
    opt = getattr(torch.optim, TORCH[kind])(params, foreach=False, **opts)
    for i, g in enumerate(grads):
        for p, c in zip(params, np.split(g, np.cumsum(SIZES)[:-1])):
            p.grad = torch.from_numpy(c.copy())
        for group in opt.param_groups:
            group["lr"] = lr_at(opts, i)
        opt.step()
    return torch.cat([p.detach() for p in params]).numpy()


@pytest.mark.parametrize(("kind", "opts"), CASES, ids=IDS)
def test_matches_torch_to_float32_roundoff(kind, opts):
    """20 steps of random gradients with the rate dropping midway, as torch.optim (foreach=False)."""
    theta, grads = problem()
    ours, theirs = (
        run_fcspec(kind, opts, theta, grads),
        run_torch(kind, opts, theta, grads),
    )
    assert not np.array_equal(ours, theta)  # the run moved the parameters
    # Parameters are N(0, 1) (|theta| < 4), so atol 1e-6 is a few float32 ulps at
    # their scale.  torch fuses its multiply-adds (one rounding) where fcspec rounds
    # twice, and torch's vectorized sqrt is off by one ulp for about a sixth of its
    # inputs: both stay at float32 round-off.
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_defaults_are_torchs():
    """An IR that leaves options out gets torch.optim's defaults (from the catalog)."""
    for kind, cls in TORCH.items():
        opt = optim.make_optimizer(ir.Optimizer(kind, {"lr": 0.01}), N)
        torch_defaults = getattr(torch.optim, cls)(
            [torch.zeros(1, requires_grad=True)], lr=0.01
        ).defaults
        for name, value in opt.options.items():
            assert torch_defaults[name] == value, (kind, name)


@pytest.mark.parametrize("max_norm", [0.5, 5.0, 1e6])
def test_clip_grad_norm_matches_torch(max_norm):
    _, grads = problem(5)
    g = grads[0] * np.float32(0.01)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in SIZES]
    for p, c in zip(params, np.split(g, np.cumsum(SIZES)[:-1])):
        p.grad = torch.from_numpy(c.copy())
    want = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    ours = g.copy()
    got = optim.clip_grad_norm(ours, max_norm)
    assert got == pytest.approx(want, rel=1e-6)
    np.testing.assert_allclose(
        ours, torch.cat([p.grad for p in params]).numpy(), rtol=1e-6, atol=1e-9
    )
    if max_norm > got:
        np.testing.assert_array_equal(ours, g)  # below the limit nothing moves
    else:
        assert np.linalg.norm(ours.astype(np.float64)) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_non_finite_spreads_like_torch():
    g = np.array([1.0, np.nan, 2.0], np.float32)
    t = torch.from_numpy(g.copy()).requires_grad_()
    t.grad = torch.from_numpy(g.copy())
    want = float(torch.nn.utils.clip_grad_norm_([t], 1.0))
    got = optim.clip_grad_norm(g, 1.0)
    assert np.isnan(got) and np.isnan(want)
    assert np.isnan(g).all() and torch.isnan(t.grad).all()
