"""`fcspec sweep`: Optuna studies whose trials run on Dask, locally and on a LocalCluster.

Small trials (the embedded digits, a few epochs, a few units) so the whole file
takes seconds of training; most of its time is starting worker processes.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec.check import compile_source
from fcspec.cli import main
from fcspec.fmt import format_source

optuna = pytest.importorskip("optuna")
distributed = pytest.importorskip("distributed")

SPEC = """\
model Tiny {
    input [64]
    hidden = linear(16) -> relu
    out = linear(10)
}
loss cross_entropy
optimizer adam(lr = 1e-3)
data { train = dataset("digits")  validate = 0.2  normalize = standard }
train { epochs = EPOCHS  batch = 64 }

sweep {
    optimizer.lr = log_uniform(1e-3, 1e-1)
    hidden.units = choice(8, 16)
    trials = TRIALS
    sampler = random
    PRUNER
}
"""


def write_spec(folder: Path, *, epochs=3, trials=4, pruner="") -> Path:
    path = folder / "tiny.fc"
    text = SPEC.replace("EPOCHS", str(epochs)).replace("TRIALS", str(trials))
    path.write_text(text.replace("PRUNER", pruner))
    return path


def sweep(*args: str):
    r = CliRunner().invoke(main, ["sweep", *args])
    assert "Traceback" not in r.output, r.output
    return r


def read_results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cluster():
    """A real Dask cluster of two single-threaded worker processes, on 127.0.0.1 only."""
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as c:
        yield c.scheduler_address


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """A 4-trial sweep on 2 local worker processes (fcspec's own LocalCluster)."""
    folder = tmp_path_factory.mktemp("local")
    spec = write_spec(folder)
    r = sweep(str(spec), "--workers", "2", "--out", str(folder / "sweep"))
    assert r.exit_code == 0, r.output
    return spec, folder / "sweep", r.output


def test_local_sweep_writes_every_trial_and_the_tables(local_sweep):
    spec, out, output = local_sweep
    rows = read_results(out)
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0]) == [
        "trial",
        "state",
        "val_loss",
        "epochs",
        "seconds",
        "optimizer.lr",
        "hidden.units",
    ]
    assert {r["state"] for r in rows} == {"complete"}
    for r in rows:
        folder = out / f"trial_{int(r['trial']):04d}"
        # the trial's own spec (values written in, no sweep block) and the usual run files
        text = (folder / "spec.fc").read_text()
        assert "sweep" not in text.split("\n", 1)[1]
        trial_spec = compile_source(text)
        assert trial_spec.optimizer.options["lr"] == float(r["optimizer.lr"])
        assert trial_spec.model.layers[0].attrs["units"] == int(r["hidden.units"])
        for name in ("weights.npz", "checkpoint.npz", "metrics.jsonl", "preprocess.npz"):
            assert (folder / name).is_file()
        summary = json.loads((folder / "summary.json").read_text())
        assert float(r["val_loss"]) == summary["val_loss"]  # the monitor after the last epoch
        assert int(r["epochs"]) == summary["epochs"] == 3
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "[4/4] trial" in output and "best: trial" in output


def test_best_fc_is_formatted_and_trains_to_its_reported_figure(local_sweep, tmp_path):
    spec, out, _ = local_sweep
    rows = read_results(out)
    top = min(rows, key=lambda r: float(r["val_loss"]))
    best = (out / "best.fc").read_text()
    assert format_source(best) == best
    assert f"trial {top['trial']}" in best.splitlines()[0]
    # One BLAS thread, as the workers train: then the figure is reproduced bit for bit
    # (several BLAS threads may sum in another order: float32 round-off).
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        r = CliRunner().invoke(main, ["run", str(out / "best.fc"), "--out", str(tmp_path), "-q"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["val_loss"] == float(top["val_loss"])  # same values, same seed


def test_rerunning_a_finished_sweep_runs_nothing_and_more_trials_extend_it(local_sweep):
    spec, out, _ = local_sweep
    before = (out / "trial_0000" / "summary.json").stat().st_mtime_ns
    r = sweep(str(spec), "--workers", "1", "--out", str(out))
    assert r.exit_code == 0 and "nothing to do: 4 of 4 trials" in r.output
    r = sweep(str(spec), "--workers", "1", "--out", str(out), "--trials", "5")
    assert r.exit_code == 0 and "resuming: 4 of 5 trials done, 1 to run" in r.output
    assert [row["trial"] for row in read_results(out)] == ["0", "1", "2", "3", "4"]
    assert (out / "trial_0000" / "summary.json").stat().st_mtime_ns == before
    r = sweep(str(spec), "--out", str(out), "--show")
    assert r.exit_code == 0 and "5 trials in the study" in r.output


def test_a_changed_search_is_not_mixed_into_an_old_study(local_sweep, tmp_path):
    spec, out, _ = local_sweep
    changed = tmp_path / "tiny.fc"
    changed.write_text(spec.read_text().replace("choice(8, 16)", "choice(8, 32)"))
    r = sweep(str(changed), "--out", str(out))
    assert r.exit_code == 1 and "a sweep of a different search" in r.output


def test_a_dask_cluster_runs_the_same_trials_to_the_same_results(local_sweep, cluster, tmp_path):
    spec, local_out, _ = local_sweep
    out = tmp_path / "dask"
    r = sweep(str(spec), "--dask", cluster, "--out", str(out), "--trials", "4")
    assert r.exit_code == 0, r.output
    ours = read_results(out)
    theirs = read_results(local_out)[:4]
    keys = ("trial", "state", "val_loss", "epochs", "optimizer.lr", "hidden.units")
    # a trial's result depends only on its values and the seed, not on where it ran
    assert [[r[k] for k in keys] for r in ours] == [[r[k] for k in keys] for r in theirs]


def test_a_grid_runs_every_combination_once(cluster, tmp_path):
    text = write_spec(tmp_path, epochs=1).read_text()
    text = text.replace("log_uniform(1e-3, 1e-1)", "choice(0.01, 0.03)").replace(
        "sampler = random", "sampler = grid"
    )
    spec = tmp_path / "grid.fc"
    spec.write_text(text.replace("trials = 4\n", ""))
    r = sweep(str(spec), "--dask", cluster, "--out", str(tmp_path / "grid"))
    assert r.exit_code == 0, r.output
    rows = read_results(tmp_path / "grid")
    assert sorted((r["optimizer.lr"], r["hidden.units"]) for r in rows) == [
        ("0.01", "16"),
        ("0.01", "8"),
        ("0.03", "16"),
        ("0.03", "8"),
    ]
    r = sweep(str(spec), "--dask", cluster, "--out", str(tmp_path / "grid"))
    assert "nothing to do: 4 of 4 trials" in r.output


def _subprocess_sweep(spec: Path, out: Path, cluster: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fcspec.cli",
            "sweep",
            str(spec),
            "--dask",
            cluster,
            "--out",
            str(out),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, so the kill reaches only it
        cwd=ROOT,
    )


def _wait_for_complete(
    out: Path, n: int, proc: subprocess.Popen, timeout: float = 120, states=("complete",)
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "results.csv").exists():
            if sum(r["state"] in states for r in read_results(out)) >= n:
                return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} trials finished in {timeout} s")


def test_ctrl_c_and_sigkill_lose_only_the_trials_in_flight(cluster, tmp_path):
    # 12 trials: on a fast machine the pruned ones take a tenth of a second each, and the second
    # sweep must still be running when it is killed
    spec = write_spec(tmp_path, epochs=12, trials=12, pruner="pruner = median(startup = 2)")
    out = tmp_path / "sweep"

    first = _subprocess_sweep(spec, out, cluster)
    _wait_for_complete(out, 1, first)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    output = first.communicate(timeout=60)[0]
    assert first.returncode == 130, output
    assert "interrupted:" in output and "Resume with the same command" in output
    rows = read_results(out)
    interrupted = [r for r in rows if r["state"] == "interrupted"]
    assert interrupted, rows  # a trial was in flight, and is queued again

    second = _subprocess_sweep(spec, out, cluster)
    done = ("complete", "pruned")  # with the pruner most trials end pruned
    _wait_for_complete(out, 1 + sum(r["state"] in done for r in rows), second, states=done)
    os.killpg(second.pid, signal.SIGKILL)  # no chance to clean up: trials stay RUNNING
    second.wait(timeout=30)
    done_before = {
        r["trial"]: (out / f"trial_{int(r['trial']):04d}" / "summary.json").stat().st_mtime_ns
        for r in read_results(out)
        if r["state"] in ("complete", "pruned")
    }

    r = sweep(str(spec), "--dask", cluster, "--out", str(out))
    assert r.exit_code == 0, r.output
    final = read_results(out)
    finished = [r for r in final if r["state"] in ("complete", "pruned", "fail")]
    assert len(finished) == 12
    for trial, mtime in done_before.items():  # not run again
        path = out / f"trial_{int(trial):04d}" / "summary.json"
        assert path.stat().st_mtime_ns == mtime
    # every interrupted trial's values ran again in a later trial
    # (compared as numbers: results.csv may print a trial left RUNNING by SIGKILL in full precision)
    key = lambda r: (f"{float(r['optimizer.lr']):.4g}", r["hidden.units"])
    values = {key(r) for r in finished}
    for r in final:
        # a trial killed before its last suggestion never ran and has incomplete values
        if r["state"] == "interrupted" and r["optimizer.lr"] and r["hidden.units"]:
            assert key(r) in values


def test_pruning_stops_a_trial_that_falls_behind_through_the_epoch_callback(tmp_path):
    """Two good trials finished; a trial with a tiny rate is pruned after its warm-up epoch."""
    from fcspec.sweep.worker import run_trial

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="Tiny", storage=url)
    for _ in range(2):  # finished trials whose val_loss was 0.5 after every epoch
        t = study.ask()
        for epoch in range(1, 11):
            t.report(0.5, epoch)
        study.tell(t, 0.5)
    trial = study.ask()
    text = write_spec(tmp_path, epochs=10).read_text().split("sweep {")[0]
    task = {
        "number": trial.number,
        "text": text.replace("adam(lr = 1e-3)", "adam(lr = 1e-6)"),
        "path": str(tmp_path / "trial.fc"),
        "base_dir": str(tmp_path),
        "monitor": "val_loss",
        "pruner": "median",
        "storage": url,
        "study": "Tiny",
        "trial_id": trial._trial_id,
        "startup": 2,
        "warmup": 2,
    }
    result = run_trial(task)
    assert result["state"] == "pruned", result.get("error")
    assert result["epochs"] == 2  # the first epoch it may be pruned at (warmup = 2)
    assert study.trials[-1].intermediate_values.keys() == {1, 2}
    history = [json.loads(line) for line in result["files"]["metrics.jsonl"].decode().splitlines()]
    assert len(history) == 2 and history[-1]["val_loss"] > 0.5
    # the same task without a pruner trains every epoch
    result = run_trial({**task, "pruner": "none"})
    assert (result["state"], result["epochs"]) == ("complete", 10)


def test_without_the_sweep_extra_the_command_says_what_to_install(tmp_path, monkeypatch):
    spec = write_spec(tmp_path)
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` now raises ImportError
    r = sweep(str(spec), "--out", str(tmp_path / "s"))
    assert r.exit_code == 1
    assert "pip install -e '.[sweep]'" in r.output and "optuna is not installed" in r.output
    # everything else still works, the sweep block included
    r = CliRunner().invoke(main, ["check", str(spec)])
    assert r.exit_code == 0 and "a sweep of 2 values, 4 trials" in r.output
    r = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run"), "-q"])
    assert r.exit_code == 0, r.output


def test_check_does_not_import_optuna_or_dask():
    code = (
        "import sys; from fcspec.check import check_file; "
        "assert check_file('specs/digits_sweep.fc').sweep is not None; "
        "print(sorted(m for m in ('optuna', 'distributed', 'dask', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
