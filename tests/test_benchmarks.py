"""benchmarks/train_speed.py still runs end to end and reports what it claims.

No timing is asserted (the machines are noisy and timing belongs to the
benchmark itself): these are smoke runs at the smallest settings, checking
that every engine ran, that the ratios are computed from the figures shown and
that --write touches only its own section.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SHARED_DATA

SCRIPT = ROOT / "benchmarks" / "train_speed.py"
needs_mnist = pytest.mark.skipif(
    not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file(),
    reason="needs the shared MNIST files",
)


def load_train_speed():
    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, FCSPEC_DATA=str(SHARED_DATA))
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_paired_ratio_is_the_median_of_per_round_ratios():
    ts = load_train_speed()
    # round medians 2/1, 3/1 (median of 2, 4, 3), 10/2: ratios 2, 3, 5
    assert ts.paired_ratio([[2.0], [2.0, 4.0, 3.0], [10.0]], [[1.0], [1.0], [2.0]]) == 3.0
    assert ts.paired_ratio([[1.0], []], [[2.0], [1.0]]) == 0.5  # a round one engine skipped
    assert ts.paired_ratio([], []) is None


def table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\| ((?:sgd|adam), batch \d+) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
    return rows


@needs_mnist
def test_training_table_smoke_run(tmp_path):
    pytest.importorskip("torch")  # the parity extra: the table's other engine
    doc = tmp_path / "performance.md"
    doc.write_text(
        "# Performance\n\nintro\n\n<!-- inference:begin -->\nkept\n<!-- inference:end -->\n"
    )
    r = run_script(
        "--batches",
        "256",
        "--optimizers",
        "sgd",
        "--rounds",
        "2",
        "--no-sklearn",
        "--no-jax",  # its compilation is slow on a busy machine; tested alone below
        "--no-memory",
        "--check-repeats",
        "0",
        "--first-epoch-repeats",
        "1",
        "--write",
        str(doc),
    )
    assert r.returncode == 0, r.stderr
    if importlib.util.find_spec("numba"):  # the first epoch's compilation, in new processes
        m = re.search(r"a new process: ([\d.]+) s with numba's cache empty .* ([\d.]+) s with it "
                      r"filled", r.stdout)  # fmt: skip
        assert m, r.stdout
        cold, warm = float(m.group(1)), float(m.group(2))
        assert cold > warm > 0  # compiling costs more than loading the cached machine code
    rows = table_rows(r.stdout)
    assert list(rows) == ["sgd, batch 256"]
    head = next(line for line in r.stdout.splitlines() if line.startswith("| cell |"))
    cols = [c.strip() for c in head.strip("|").split("|")][1:]
    row = dict(zip(cols, rows["sgd, batch 256"]))
    fcspec, torch_s = float(row["fcspec s/epoch"]), float(row["torch s/epoch"])
    assert fcspec > 0 and torch_s > 0 and float(row["floor s/epoch"]) > 0
    # the column of medians and its ratio agree; the verdict follows the paired ratio
    assert abs(float(row["ratio of medians"]) - fcspec / torch_s) < 0.01
    paired = float(row["fcspec/torch (paired)"])
    assert row["<= 0.6?"] == ("yes" if paired <= 0.6 else "**no**")
    text = doc.read_text()
    assert (
        "kept" in text and text.count("<!-- training:begin -->") == 1 and "sgd, batch 256" in text
    )


@needs_mnist
def test_breakdown_smoke_run():
    r = run_script("--breakdown", "--batches", "256", "--optimizers", "adam", "--rounds", "1")
    assert r.returncode == 0, r.stderr
    rows = table_rows(r.stdout)
    assert list(rows) == ["adam, batch 256"]
    values = [float(v) for v in rows["adam, batch 256"]]
    assert len(values) == 9 and all(v > 0 for v in values)


def fcspec_reference(ts, optimizer: str, batch: int):
    """fcspec's side of the checks below: train_speed's spec, a network (seeded 3), its loss
    and optimizer, which each benchmark loop must follow step by step."""
    import numpy as np

    from fcspec import interpreter, losses, optim

    spec = ts.make_spec(optimizer, batch, 0)
    net = interpreter.Network(spec.model, rng=np.random.default_rng(3))
    return (
        spec,
        net,
        losses.make_loss(spec.loss),
        optim.make_optimizer(spec.optimizer, net.theta.size),
    )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_hand_written_loop_computes_fcspecs_training_step(optimizer):
    """The reference loop is timed beside fcspec, so it must do the same work: from the same
    parameters and batches, its losses, correct counts and parameters follow fcspec's
    interpreter and optimizers (to float32 round-off: its Adam folds the bias corrections)."""
    import numpy as np

    from fcspec import train

    ts = load_train_speed()
    spec, net, loss_fn, opt = fcspec_reference(ts, optimizer, 32)
    fcspec_step = train.Step(spec, net, loss_fn, opt, np.random.default_rng(5))  # train.run's
    hand = ts.HandLoop(optimizer, theta=net.theta)
    rng = np.random.default_rng(4)
    x = rng.random((100, 784), dtype=np.float32)
    y = rng.integers(0, 10, 100).astype(np.uint8)  # MNIST stores its labels as bytes
    for step, idx in enumerate(
        [rng.permutation(100)[:32], rng.permutation(100)[:32], np.arange(68, 100)]
    ):
        loss = fcspec_step(x[idx].reshape(-1, 1, 28, 28), y[idx], float(spec.optimizer.lr))
        correct = int((fcspec_step.out.argmax(1) == y[idx]).sum())
        before = hand.theta.copy()
        hand_loss, hand_correct = hand.step(x, y, idx)
        assert hand_loss == pytest.approx(loss, rel=1e-5), step
        assert hand_correct == correct, step
        np.testing.assert_allclose(hand.grad, net.grad, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(hand.theta, net.theta, rtol=1e-5, atol=1e-6)
        assert np.abs(hand.theta - before).max() > 1e-4  # a real step, not a no-op on both sides


def test_jax_gemms_compute_the_floors_products():
    """The JAX GEMMs column times the floor's eight products, not something cheaper."""
    pytest.importorskip(
        "jax", reason="the JAX column needs the bench extra (pip install -e '.[bench]')"
    )
    import numpy as np

    ts = load_train_speed()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import jax_loop

    jg = jax_loop.JaxGemms(ts.SIZES, [7, 7, 7, 3], seed=0)  # a short last batch too
    w1, w2, w3 = (np.asarray(w) for w in jg.w)
    # the scan's last step took its batch at the last offset: its products are the result
    got = jg._epoch(jg._first, jg.offsets, jg.x, *jg.w, *jg.gh)
    off = int(jg.offsets[-1])
    assert off == 14  # the offsets move: no step is loop-invariant
    x, g1, g2, g3 = (np.asarray(a)[off : off + 7] for a in (jg.x, *jg.gh))
    h1 = x @ w1.T
    h2 = h1 @ w2.T
    want = [h2 @ w3.T, g3.T @ h2, g3 @ w3, g2.T @ h1, g2 @ w2, g1.T @ x]
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-4, atol=2e-3)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_jax_loop_trains_what_fcspec_trains(optimizer):
    """The JAX column computes the same thing as fcspec: from fcspec's initial weights and the same
    batches, three steps give the same parameters to float32 round-off (atol 1e-5: one Adam step
    moves an entry by about lr = 1e-3 whatever its gradient, so round-off in a tiny gradient shows)."""
    pytest.importorskip(
        "jax", reason="the JAX column needs the bench extra (pip install -e '.[bench]')"
    )
    import jax.numpy as jnp

    ts = load_train_speed()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import jax_loop

    spec, net, loss_fn, opt = fcspec_reference(ts, optimizer, 20)
    rng = np.random.default_rng(1)
    x = rng.random((60, 784), dtype=np.float32)
    y = rng.integers(0, 10, 60)
    loop = jax_loop.JaxLoop(x, y, ts.SIZES, optimizer, batch=20, seed=0)
    params = [(jnp.asarray(net.params[f"fc{i}.weight"]), jnp.asarray(net.params[f"fc{i}.bias"]))
              for i in (1, 2, 3)]  # fmt: skip
    loop.carry = (params, loop.carry[1], loop.carry[2])
    order = np.arange(60, dtype=np.int32)
    loop.carry, _ = loop._run(loop.carry, order)
    lr = float(spec.optimizer.lr)
    for s in range(0, 60, 20):
        out = net.forward(x[s : s + 20].reshape(20, 1, 28, 28), training=True)
        _, dout = loss_fn.value_and_grad(out, y[s : s + 20])
        net.backward(dout)
        opt.step(net.theta, net.grad, lr)
    for i, (w, b) in enumerate(loop.carry[0], start=1):
        np.testing.assert_allclose(np.asarray(w), net.params[f"fc{i}.weight"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(b), net.params[f"fc{i}.bias"], rtol=1e-4, atol=1e-5)


def test_kernel_speed_smoke_run(capsys):
    """benchmarks/kernel_speed.py: every kernel timed beside its NumPy calls (same bits checked)."""
    pytest.importorskip("numba", reason="the kernels need numba")
    spec = importlib.util.spec_from_file_location(
        "kernel_speed", ROOT / "benchmarks" / "kernel_speed.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--number", "2", "--repeat", "1"]) == 0
    table = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("| ") and "us" not in line.split("|")[2]
    ]
    assert len(table) == 12  # 4 relu rows, cross-entropy and the gather, at batch 32 and 256
    for line in table:
        kernel_us, numpy_us, ratio = (float(c) for c in line.strip("|").split("|")[1:])
        assert (
            kernel_us > 0
            and numpy_us > 0
            # the printed ratio comes from the unrounded times: allow the rounding of all three
            and ratio == pytest.approx(numpy_us / kernel_us, rel=0.25, abs=0.01)
        )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_compiled_step_trains_what_fcspec_trains(optimizer):
    """benchmarks/compiled_step.py (the whole step as one numba function) does fcspec's
    work: from fcspec's weights and the same batches (a short last one too), three steps
    give the same losses and parameters to float32 round-off."""
    pytest.importorskip("numba", reason="the compiled step needs numba (the fast extra)")
    pytest.importorskip("scipy", reason="numba's np.dot calls scipy's BLAS (the sklearn extra)")
    import numpy as np

    ts = load_train_speed()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import compiled_step

    spec, net, loss_fn, opt = fcspec_reference(ts, optimizer, 20)
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (50, 1, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 50)
    comp = compiled_step.CompiledStep(raw, y, net.params, batch=20, seed=0, optimizer=optimizer)
    order = rng.permutation(50)
    got_loss = comp.run(order)
    want_loss = 0.0
    lr = float(spec.optimizer.lr)
    for s in range(0, 50, 20):
        idx = order[s : s + 20]
        out = net.forward(raw[idx].astype(np.float32) / np.float32(255), training=True)
        value, dout = loss_fn.value_and_grad(out, y[idx])
        want_loss += float(value) * len(idx)
        net.backward(dout)
        opt.step(net.theta, net.grad, lr)
    assert got_loss == pytest.approx(want_loss / 50, rel=1e-5)
    names = [f"fc{i}.{k}" for i in (1, 2, 3) for k in ("weight", "bias")]
    for name, p in zip(names, comp.params):
        np.testing.assert_allclose(p, net.params[name], rtol=1e-4, atol=1e-6)
