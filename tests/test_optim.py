"""optim.py's own behaviour: state round trips, refusals, no per-step allocation, clipping,
the update rules explain prints.  The comparison with torch.optim is test_optim_torch.py."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fcspec import catalog, ir, optim
from fcspec.errors import SpecError, TrainingError

# A flat vector split like a small model's parameters (weight, bias, weight),
# so torch sees several tensors in one param group, as it would for a model.
SIZES = (600, 30, 373)
N = sum(SIZES)
STEPS = 20

CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3, "weight_decay": 5e-4}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3}),
    ("adam", {"lr": 1e-2}),
    ("adam", {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("adam", {"lr": 1e-2, "weight_decay": 0.1}),
    ("adam", {"lr": 1e-2, "amsgrad": True}),
    ("adam", {"lr": 1e-2, "amsgrad": True, "weight_decay": 0.1}),
    (
        "adam",
        {"lr": 1e-2, "betas": (0.3, 0.9)},
    ),  # lerp weight >= 0.5 takes torch's other branch
    ("adamw", {"lr": 1e-2}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1, "amsgrad": True}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.0}),
    ("rmsprop", {"lr": 1e-2}),
    ("rmsprop", {"lr": 1e-2, "alpha": 0.9, "weight_decay": 0.01}),
    ("rmsprop", {"lr": 1e-2, "centered": True}),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.9}),
    (
        "rmsprop",
        {
            "lr": 1e-2,
            "centered": True,
            "momentum": 0.5,
            "weight_decay": 0.01,
            "eps": 1e-6,
        },
    ),
    ("adagrad", {"lr": 0.1}),
    ("adagrad", {"lr": 0.1, "lr_decay": 0.05}),
    ("adagrad", {"lr": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-6}),
    (
        "adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.01,
            "weight_decay": 0.01,
            "initial_accumulator_value": 0.5,
        },
    ),
]
IDS = [k + "-" + "-".join(f"{n}={v}" for n, v in o.items()) for k, o in CASES]


def problem(seed: int = 0):
    """Random float32 parameters, STEPS gradients (a few exact zeros) and a rate that drops midway."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal(N).astype(np.float32)
    grads = []
    for _ in range(STEPS):
        g = (rng.standard_normal(N) * rng.choice([0.01, 1.0, 10.0], N)).astype(np.float32)
        g[rng.integers(0, N, 20)] = 0.0
        grads.append(g)
    return theta, grads


def lr_at(opts: dict, step: int) -> float:
    base = opts["lr"]
    return base if step < STEPS // 2 else base * 0.3


def run_fcspec(kind, opts, theta, grads):
    opt = optim.make_optimizer(ir.Optimizer(kind, dict(opts)), N)
    th = theta.copy()
    for i, g in enumerate(grads):
        opt.step(th, g, lr_at(opts, i))
    return th


@pytest.mark.parametrize(("kind", "opts"), CASES, ids=IDS)
def test_state_dict_round_trip_continues_bit_for_bit(kind, opts, tmp_path):
    theta, grads = problem(2)
    straight = run_fcspec(kind, opts, theta, grads)

    first = optim.make_optimizer(ir.Optimizer(kind, dict(opts)), N)
    th = theta.copy()
    for i in range(STEPS // 2 + 1):  # stop just after the rate changed
        first.step(th, grads[i], lr_at(opts, i))
    np.savez(tmp_path / "opt.npz", **first.state_dict())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        saved = dict(f)
    second = optim.make_optimizer(ir.Optimizer(kind, dict(opts)), N)
    second.load_state_dict(saved)
    assert second.t == STEPS // 2 + 1
    for i in range(STEPS // 2 + 1, STEPS):
        second.step(th, grads[i], lr_at(opts, i))
    np.testing.assert_array_equal(th, straight)


def test_state_dict_is_a_copy():
    opt = optim.make_optimizer(ir.Optimizer("adam", {"lr": 0.1}), 4)
    th, g = np.ones(4, np.float32), np.ones(4, np.float32)
    opt.step(th, g, 0.1)
    d = opt.state_dict()
    opt.step(th, g, 0.1)
    assert not np.array_equal(d["exp_avg"], opt.state["exp_avg"])
    assert int(d["step"]) == 1


def test_load_state_dict_rejects_another_optimizer_or_size():
    adam = optim.make_optimizer(ir.Optimizer("adam", {"lr": 0.1}), 10)
    sgd = optim.make_optimizer(ir.Optimizer("sgd", {"lr": 0.1, "momentum": 0.9}), 10)
    with pytest.raises(TrainingError, match="adam optimizer state, the spec uses sgd"):
        sgd.load_state_dict(adam.state_dict())
    small = optim.make_optimizer(ir.Optimizer("adam", {"lr": 0.1}), 5)
    with pytest.raises(TrainingError, match="10 parameters|5 parameters"):
        small.load_state_dict(adam.state_dict())
    d = adam.state_dict()
    del d["exp_avg_sq"]
    with pytest.raises(TrainingError, match="lacks 'exp_avg_sq'"):
        adam.load_state_dict(d)


def test_grad_is_read_not_written():
    theta, grads = problem(3)
    for kind, opts in CASES:
        g = grads[0].copy()
        opt = optim.make_optimizer(ir.Optimizer(kind, dict(opts)), N)
        th = theta.copy()
        opt.step(th, g, opts["lr"])
        opt.step(th, g, opts["lr"])
        np.testing.assert_array_equal(g, grads[0], err_msg=f"{kind} {opts}")


def test_step_allocates_no_parameter_sized_memory():
    # NumPy's casting loops use fixed 8192-element buffers (~130 KB): allowed;
    # a temporary of the parameters' size (4 MB here) is not.
    n = 1_000_000
    theta, g = np.ones(n, np.float32), np.full(n, 0.5, np.float32)
    for kind, opts in CASES:
        opt = optim.make_optimizer(ir.Optimizer(kind, dict(opts)), n)
        opt.step(theta, g, 0.01)  # the first step may set state up
        tracemalloc.start()
        opt.step(theta, g, 0.01)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 4 * n // 20, f"{kind} {opts}: a step allocated {peak} bytes"


def test_wrong_vector_is_a_training_error():
    opt = optim.make_optimizer(ir.Optimizer("sgd", {"lr": 0.1}), 3)
    with pytest.raises(TrainingError, match="3 float32 parameters"):
        opt.step(np.zeros(4, np.float32), np.zeros(4, np.float32), 0.1)
    with pytest.raises(TrainingError):
        opt.step(np.zeros(3, np.float64), np.zeros(3, np.float32), 0.1)


@pytest.mark.parametrize(
    ("kind", "opts", "message"),
    [
        (
            "sgd",
            {"lr": 0.1, "nesterov": True},
            "nesterov momentum needs `momentum` > 0",
        ),
        (
            "sgd",
            {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True},
            "dampening` = 0",
        ),
        ("sgd", {"lr": -0.1}, "sgd: lr must be > 0, got -0.1"),
        ("sgd", {"lr": 0.0}, "sgd: lr must be > 0, got 0.0"),
        ("adam", {"lr": 0.1, "betas": (0.9, 1.0)}, "betas must both be in"),
        ("rmsprop", {"lr": 0.1, "momentum": float("nan")}, "momentum must be a number"),
        ("sgd", {"lr": 0.1, "nesterov": "yes"}, "nesterov must be true or false"),
        ("adam", {"lr": 0.1, "momentum": 0.9}, "adam has no option 'momentum'"),
        ("lbfgs", {"lr": 0.1}, "unknown optimizer 'lbfgs'"),
    ],
)
def test_bad_options_are_spec_errors(kind, opts, message):
    with pytest.raises(SpecError, match=message):
        optim.make_optimizer(ir.Optimizer(kind, opts), 3)


# ---------------------------------------------------------------------------
# clip_grad_norm


@pytest.mark.parametrize("max_norm", [0.5, 5.0, 1e6])
def test_clip_grad_norm_scales_to_the_limit(max_norm):
    """The norm (float64 oracle) is returned; above the limit the gradient is scaled to it."""
    _, grads = problem(5)
    g = grads[0] * np.float32(0.01)
    ours = g.copy()
    got = optim.clip_grad_norm(ours, max_norm)
    assert got == pytest.approx(float(np.linalg.norm(g.astype(np.float64))), rel=1e-6)
    if max_norm > got:
        np.testing.assert_array_equal(ours, g)  # below the limit nothing moves
    else:
        np.testing.assert_allclose(ours, g * np.float32(max_norm / (got + 1e-6)), rtol=1e-6)
        assert np.linalg.norm(ours.astype(np.float64)) == pytest.approx(max_norm, rel=1e-5)


def test_clip_grad_norm_spreads_a_nan_to_every_entry():
    g = np.array([1.0, np.nan, 2.0], np.float32)
    assert np.isnan(optim.clip_grad_norm(g, 1.0)) and np.isnan(g).all()


# ---------------------------------------------------------------------------
# describe


@pytest.mark.parametrize(
    ("kind", "opts", "lines"),
    [
        (
            "sgd",
            {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
            [
                "g = g + 0.0005 * p",
                "b = 0.9 * b + g  (t > 1)",
                "g = g + 0.9 * b",
                "p = p - lr * g",
            ],
        ),
        (
            "sgd",
            {"lr": 0.1, "momentum": 0.9, "dampening": 0.25},
            ["b = 0.9 * b + 0.75 * g  (t > 1)", "g = b"],
        ),
        ("sgd", {"lr": 0.1}, ["p = p - lr * g"]),
        (
            "adam",
            {"lr": 1e-3, "amsgrad": True},
            [
                "m = 0.9 * m + 0.1 * g",
                "v_max = max(v_max, v)",
                "(1 - 0.999^t)",
                "+ 1e-08",
            ],
        ),
        ("adamw", {"lr": 1e-3}, ["p = p * (1 - lr * 0.01)"]),
        (
            "rmsprop",
            {"lr": 0.01, "centered": True, "momentum": 0.9},
            [
                "gm = 0.99 * gm + 0.01 * g",
                "b = 0.9 * b + g / (sqrt(v - gm^2) + 1e-08)",
                "p = p - lr * b",
            ],
        ),
        (
            "adagrad",
            {"lr": 0.01, "lr_decay": 0.1, "initial_accumulator_value": 0.5},
            ["s starts at 0.5", "lr / (1 + (t - 1) * 0.1)"],
        ),
    ],
)
def test_describe_fills_in_the_numbers(kind, opts, lines):
    text = optim.describe(ir.Optimizer(kind, opts))
    assert text.startswith(kind + "(")
    for line in lines:
        assert line in text, f"{line!r} not in\n{text}"
    if kind == "sgd" and "weight_decay" not in opts:
        assert "g = g +" not in text  # no decay, no decay line


def test_every_optimizer_of_the_catalog_has_cases():
    """A new optimizer row is tested here (and against torch) only through CASES: name it there."""
    assert {c[0] for c in CASES} == set(catalog.OPTIMIZERS)
