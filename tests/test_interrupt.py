"""Signals: SIGINT / SIGTERM leave a consistent checkpoint and say how to resume;
SIGKILL at any moment leaves the previous checkpoint loadable.

In-process tests raise the signal from inside a training step (exact timing,
so resume can be compared bit for bit with an uninterrupted run); subprocess
tests signal a real training process from outside.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fcspec import io as fio
from fcspec import losses, train
from fcspec.check import load_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_train import assert_same_weights, metrics, strip_time, weights, write_spec

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")


def checkpoint_meta(path: Path) -> dict:
    arrays = fio.load_npz(path, "checkpoint")
    return json.loads(str(arrays["meta"][()]))


def signal_at_step(monkeypatch, signum: int, step: int) -> None:
    """Make the `step`-th loss evaluation of the run send `signum` to this process."""
    real = losses.make_loss
    calls = {"n": 0}

    def make_loss(spec_loss):
        loss = real(spec_loss)
        inner = loss.value_and_grad

        def value_and_grad(out, target):
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), signum)
            return inner(out, target)

        loss.value_and_grad = value_and_grad
        return loss

    monkeypatch.setattr(losses, "make_loss", make_loss)


# digits: 1437 training rows, batch 32 -> 45 steps an epoch
@pytest.mark.parametrize(
    "signum,code,step",
    [
        (signal.SIGINT, 130, 100),  # in epoch 3: checkpoint of epoch 2
        (signal.SIGTERM, 143, 10),  # in epoch 1: the start state is written
    ],
)
def test_signal_in_process_checkpoints_and_resumes_exactly(
    tmp_path, monkeypatch, signum, code, step
):
    spec = load_spec(write_spec(tmp_path, dropout="drop = dropout(0.2)", epochs=4))
    train.run(spec, out_dir=tmp_path / "full", quiet=True)
    # what the process had before (a shell's background job starts with SIGINT ignored)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with monkeypatch.context() as m:
        signal_at_step(m, signum, step)
        with pytest.raises(train.Interrupted) as e:
            train.run(spec, out_dir=tmp_path / "cut", quiet=True)
    done = (step - 1) // 45
    err = e.value
    assert err.exit_code == code and err.epoch == done + 1
    ckpt = tmp_path / "cut/checkpoint.npz"
    assert (
        f"interrupted at epoch {done + 1}; resume with: fcspec run {spec.path} --resume {ckpt}"
        in str(err)
    )
    assert checkpoint_meta(ckpt)["epoch"] == done
    # our handlers are gone again: the process's own are back
    assert {s: signal.getsignal(s) for s in before} == before
    train.run(spec, resume=ckpt, quiet=True)
    assert_same_weights(
        weights(tmp_path / "full/weights.npz"), weights(tmp_path / "cut/weights.npz")
    )
    assert strip_time(metrics(tmp_path / "full")) == strip_time(metrics(tmp_path / "cut"))


def _start(tmp_path: Path, spec_path: Path, out: Path, resume: str | None = None):
    """`fcspec run` in a real process, the way a user starts it."""
    args = [sys.executable, "-m", "fcspec.cli", "run", str(spec_path), "--out", str(out)]
    if resume is not None:
        args += ["--resume", resume]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_epochs(proc, out: Path, n: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        f = out / "metrics.jsonl"
        if f.exists() and len(f.read_text().splitlines()) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.returncode}\n{proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no {n} epochs within {timeout}s")


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_a_training_process(tmp_path, signum, code):
    spec_path = write_spec(tmp_path, epochs=100000)
    out = tmp_path / "run"
    proc = _start(tmp_path, spec_path, out)
    try:
        _wait_for_epochs(proc, out, 2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "interrupted at epoch" in err
    assert f"resume with: fcspec run {spec_path} --resume {out / 'checkpoint.npz'}" in err
    assert "Traceback" not in err
    meta = checkpoint_meta(out / "checkpoint.npz")
    # the checkpoint keeps the last epochs of the history (metrics.jsonl keeps them all)
    assert meta["epoch"] >= 2 and meta["history"][-1]["epoch"] == meta["epoch"]
    assert len(metrics(out)) in (meta["epoch"], meta["epoch"] + 1)
    # the run goes on from there
    spec = load_spec(spec_path)
    s = train.run(spec, resume=out / "checkpoint.npz", epochs=meta["epoch"] + 1, quiet=True)
    assert s["epochs"] == meta["epoch"] + 1
    assert [r["epoch"] for r in metrics(out)] == list(range(1, meta["epoch"] + 2))


def test_sigkill_at_random_moments_leaves_a_loadable_checkpoint(tmp_path):
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    spec_path = write_spec(tmp_path, epochs=100000)
    spec = load_spec(spec_path)
    out = tmp_path / "run"
    last = 0
    for round_ in range(3):
        resume = str(out / "checkpoint.npz") if round_ else None
        proc = _start(tmp_path, spec_path, out, resume)
        try:
            _wait_for_epochs(proc, out, last + 1)
            time.sleep(rnd.uniform(0.0, 0.3))
            proc.kill()
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        where = f"(random seed {seed}, round {round_})"
        meta = checkpoint_meta(out / "checkpoint.npz")
        assert meta["epoch"] >= last and meta["spec_sha256"] == spec.sha256, where
        w = weights(out / "weights.npz")
        assert all(np.isfinite(a).all() for a in w.values()), where
        assert len(metrics(out)) in (meta["epoch"], meta["epoch"] - 1), where
        last = meta["epoch"]
    s = train.run(spec, resume=out / "checkpoint.npz", epochs=last + 1, quiet=True)
    assert s["epochs"] == last + 1
