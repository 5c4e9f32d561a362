"""One trial, wherever it runs: a LocalCluster process or a Dask worker on another machine.

`run_trial(task)` gets everything as plain data (the trial's spec text, where
its data lives, how to prune), trains in a temporary folder with one BLAS
thread, and returns the run's files as bytes: the driver writes them into the
sweep folder, so workers need no shared disk.  The result depends only on the
spec text (the drawn values and the seed), not on the machine.

With a pruner the worker reports the monitor after every epoch to the study's
database and stops when Optuna says the trial is behind (`should_prune`), through
the training loop's `on_epoch_end` callback.  Without one it never touches the
database.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

BLAS_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def pin_threads() -> None:
    """One BLAS thread per trial: K trials on K cores, not K x K threads fighting."""
    for k, v in BLAS_ENV.items():
        os.environ.setdefault(k, v)  # for libraries loaded from now on
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables above still hold for new processes
        return
    threadpool_limits(limits=1)  # for the BLAS NumPy has loaded already


class Pruning:
    """The training callback that reports to Optuna and asks whether to stop."""

    def __init__(self, task: dict[str, Any]):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = optuna.pruners.MedianPruner(
            n_startup_trials=task["startup"], n_warmup_steps=task["warmup"]
        )
        study = optuna.load_study(study_name=task["study"], storage=task["storage"], pruner=pruner)
        self.trial = optuna.trial.Trial(study, task["trial_id"])
        self.monitor = task["monitor"]
        self.pruned = False

    def on_epoch_end(self, state, row: dict[str, Any]) -> bool | None:
        value = row.get(self.monitor)
        if value is None or not math.isfinite(value):
            return None
        self.trial.report(float(value), int(row["epoch"]))
        if self.trial.should_prune():
            self.pruned = True
            return True  # stop training: the trial is behind the median
        return None


def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """Train one trial; return its state, monitor value, epochs, seconds and files."""
    from .. import train
    from ..check import compile_source
    from ..errors import FcspecError

    t0 = time.perf_counter()
    pin_threads()
    out: dict[str, Any] = {
        "number": task["number"],
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "value": None,
        "epochs": 0,
        "error": None,
    }
    with tempfile.TemporaryDirectory(prefix=f"fcspec-trial-{task['number']}-") as tmp:
        try:
            spec = compile_source(task["text"], task["path"])
            pruning = Pruning(task) if task.get("pruner") == "median" else None
            summary = train.run(
                spec,
                out_dir=tmp,
                quiet=True,
                base_dir=task["base_dir"],
                callbacks=(pruning,) if pruning is not None else (),
            )
            out["value"] = summary.get(task["monitor"])
            out["epochs"] = summary.get("epochs", 0)
            out["state"] = "pruned" if pruning is not None and pruning.pruned else "complete"
        except FcspecError as e:  # divergence, bad data: the trial's outcome, not a crash
            out["state"], out["error"] = "fail", str(e)
        except Exception:  # noqa: BLE001 - a bug in fcspec: report it, keep the sweep going
            out["state"], out["error"] = "fail", traceback.format_exc(limit=8)
        out["files"] = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    out["seconds"] = time.perf_counter() - t0
    return out
