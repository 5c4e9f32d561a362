"""`fcspec sweep`: the driver.  Optuna decides what to try, Dask runs the trials.

The driver owns the study (in a database: SQLite in the sweep folder by default,
any SQLAlchemy URL such as postgresql://... for several machines).  It asks
Optuna for a trial, writes the trial's spec to DIR/trial_NNNN/spec.fc, and
submits the training to a Dask cluster: a LocalCluster of K single-threaded
worker processes on this machine, or the cluster at --dask ADDRESS.  When a
trial returns, its run files are written into its folder, the result is told
to the study, and results.csv and best.fc are rewritten.

Resuming is the database's job: the same command loads the study
(`load_if_exists`) and runs only the trials still missing.  A trial is done
once it is complete, pruned or failed (diverged); trials that were running
when the driver stopped (Ctrl-C, SIGTERM, or a SIGKILL that left them RUNNING
in the database) are marked failed and interrupted and their values are queued
again (`enqueue_trial`), so a stopped sweep loses only the trials in flight.
One driver per sweep folder at a time (a lock file says so).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import io as fio
from ..errors import FcspecError
from ..train import _SignalCatcher
from . import report
from .apply import trial_source, value_source
from .space import Param, Sweep

INSTALL = "pip install -e '.[sweep]'"


class SweepInterrupted(FcspecError):
    """Ctrl-C / SIGTERM stopped the sweep; the trials in flight are queued again."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def _imports():
    """optuna and distributed, or the one-line error that names the extra to install."""
    try:
        import distributed
        import optuna
    except ImportError as e:
        raise FcspecError(
            f"`fcspec sweep` needs Optuna and Dask ({e.name} is not installed)",
            hint=INSTALL,
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna, distributed


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Lock:
    """An exclusive lock on the sweep folder while a driver runs (POSIX flock)."""

    def __init__(self, folder: Path):
        self.path = folder / "sweep.lock"
        self.fd: int | None = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no lock, one driver at a time is up to the user
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise FcspecError(
                f"another `fcspec sweep` is running on {self.path.parent}/",
                hint="wait for it, or watch it with `fcspec sweep SPEC --show`",
            ) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
        return False


def _suggest(trial, p: Param):
    if p.distribution == "choice":
        return trial.suggest_categorical(p.path, list(p.choices))
    if p.integer:
        return trial.suggest_int(p.path, int(p.low), int(p.high), step=p.step or 1, log=p.log)
    return trial.suggest_float(p.path, p.low, p.high, log=p.log)


def _sampler(optuna, sweep: Sweep, seed: int):
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # constant_liar: trials running in parallel count as bad guesses, so K workers
    # do not all try the same promising point.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(optuna, sweep: Sweep):
    if sweep.pruner == "median":
        o = sweep.pruner_options
        return optuna.pruners.MedianPruner(
            n_startup_trials=o["startup"], n_warmup_steps=o["warmup"]
        )
    return optuna.pruners.NopPruner()


def _definition(spec, sweep: Sweep) -> dict[str, Any]:
    return {"spec_sha256": spec.sha256, **sweep.definition()}


def _open_study(optuna, name: str, url: str, spec, sweep: Sweep, out: Path, create: bool):
    """Create or load the study; refuse one made for a different search."""
    from optuna.exceptions import StorageInternalError

    try:
        if create:
            storage = optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
            study = optuna.create_study(
                study_name=name,
                storage=storage,
                direction=sweep.direction,
                load_if_exists=True,
                pruner=_pruner(optuna, sweep),
            )
        else:
            study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        raise FcspecError(
            f"no sweep has run in {out}/ yet (no study `{name}` in {url})",
            hint="start it with `fcspec sweep SPEC`",
        ) from None
    except (StorageInternalError, ImportError, ValueError) as e:
        raise FcspecError(f"cannot open the study database {url}: {e}") from None
    want = _definition(spec, sweep)
    have = study.user_attrs.get("fcspec")
    if have is None and create:
        study.set_user_attr("fcspec", want)
    elif have is not None and have != want:
        raise FcspecError(
            f"{out}/ holds a sweep of a different search: the spec or its sweep block changed "
            f"since it started",
            hint="use --out for a new sweep folder (or remove the old one)",
        )
    return study


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite: wait for a lock rather than fail when a worker reports at the same moment.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _recover(optuna, study, names: list[str]) -> int:
    """Trials left RUNNING by a driver that died: mark them interrupted and queue their
    values again (`names`: the sweep's parameters, each a suggestion of every trial)."""
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if not all(n in t.params for n in names):
            # killed between `ask` and the last suggestion: it never ran, and its values
            # are incomplete, so there is nothing to run again (a new trial takes its place)
            continue
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        n += 1
    return n


def _enqueue_grid(optuna, study, sweep: Sweep) -> None:
    """A grid is every combination once, queued in a seeded order: what is not in the study yet.

    (Optuna's GridSampler would do the same, but it ends a study with `study.stop()`,
    which only works inside `study.optimize`, not with the ask-and-tell this driver uses.)
    """
    import itertools
    import random

    grid = sweep.grid()
    keys = list(grid)
    taken = {
        tuple(t.params.get(k) for k in keys)
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get("interrupted")
    }
    points = [p for p in itertools.product(*grid.values()) if p not in taken]
    random.Random(sweep.seed).shuffle(points)
    for point in points:
        study.enqueue_trial(dict(zip(keys, point)))


def _done(optuna, study) -> int:
    S = optuna.trial.TrialState
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (S.COMPLETE, S.PRUNED)
        or (t.state == S.FAIL and not t.user_attrs.get("interrupted"))
    )


def sweep(
    path: str,
    *,
    trials: int | None = None,
    workers: int | None = None,
    dask: str | None = None,
    storage: str | None = None,
    out: str | os.PathLike | None = None,
    show: bool = False,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume, or with show=True only report) the sweep of the spec at `path`."""
    from ..check import check_file
    from ..errors import SpecError

    say = echo or (lambda s: print(s, file=sys.stderr, flush=True))
    result = check_file(path)
    if result.errors:
        raise SpecError(result.diagnostics, result.source)
    for w in result.warnings:
        say(w.render(result.source))
    spec, sw, source = result.spec, result.sweep, result.source
    if sw is None:
        raise FcspecError(
            f"{path} has no sweep block",
            hint="add one, e.g. `sweep { optimizer.lr = log_uniform(1e-4, 1e-1)  trials = 20 }`",
        )
    optuna, distributed = _imports()
    folder = Path(out) if out is not None else Path("sweeps") / spec.name
    url = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    # Named after the sweep folder: in a database several sweeps share, each folder is one study.
    name = folder.resolve().name
    target = trials if trials is not None else sw.trials
    if sw.sampler == "grid":  # each combination once, so never more trials than the grid has
        target = min(target, math.prod(len(v) for v in sw.grid().values()))

    if show:
        if storage is None and not (folder / "study.db").exists():
            raise FcspecError(
                f"no sweep has run in {folder}/ yet", hint=f"start it: fcspec sweep {path}"
            )
        study = _open_study(optuna, name, url, spec, sw, folder, create=False)
        table, top = report.write_all(study, sw, source, path, folder, with_plot=True)
        return {"table": table, "best": top, "out": folder, "ran": 0, "target": target, "sweep": sw}

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FcspecError(f"cannot create the sweep folder {folder}: {e.strerror or e}") from None
    with _Lock(folder):
        study = _open_study(optuna, name, url, spec, sw, folder, create=True)
        requeued = _recover(optuna, study, [p.path for p in sw.params])
        if requeued:
            say(f"{requeued} trial{'s' if requeued > 1 else ''} interrupted earlier will run again")
        done = _done(optuna, study)
        remaining = max(0, target - done)
        if remaining == 0:
            say(f"nothing to do: {done} of {target} trials are done in {folder}/")
            table, top = report.write_all(study, sw, source, path, folder, with_plot=True)
            return {
                "table": table,
                "best": top,
                "out": folder,
                "ran": 0,
                "target": target,
                "sweep": sw,
            }
        if done:
            say(f"resuming: {done} of {target} trials done, {remaining} to run")
        # A new seed per resumption: the sampler does not repeat the first run's draws.
        study.sampler = _sampler(optuna, sw, sw.seed + len(study.get_trials(deepcopy=False)))
        if sw.sampler == "grid":
            _enqueue_grid(optuna, study, sw)
        ran = _drive(
            optuna, distributed, study, spec, sw, source, path, folder, url,
            remaining, target, done, workers, dask, say, echo is None,
        )  # fmt: skip
        table, top = report.write_all(study, sw, source, path, folder, with_plot=True)
    return {"table": table, "best": top, "out": folder, "ran": ran, "target": target, "sweep": sw}


def _cluster(distributed, workers: int | None, dask: str | None, say):
    """(client, cluster or None): the given cluster, or K local single-threaded processes."""
    if dask is not None:
        try:
            client = distributed.Client(dask, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise FcspecError(f"cannot reach the Dask scheduler at {dask}: {e}") from None
        _check_workers(client, dask)
        return client, None
    from .worker import BLAS_ENV

    k = workers or default_workers()
    # Ignored signals stay ignored in the spawned workers: Ctrl-C reaches the driver
    # only, which stops the trials itself instead of the workers dying mid-write.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        with warnings.catch_warnings():
            # another program's dashboard on :8787 only moves the HTTP server to a free port
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = distributed.LocalCluster(
                n_workers=k,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.ERROR,
                env=dict(BLAS_ENV),
            )
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    return distributed.Client(cluster), cluster


def _check_workers(client, address: str) -> None:
    """Every worker must import this fcspec: say so now, not once per failed trial."""
    import importlib.metadata

    from .. import __version__

    # A standard-library function, so even a machine without fcspec can run it.  The
    # scheduler unpickles the tasks too, so it needs fcspec as much as the workers.
    found = client.run(importlib.metadata.version, "fcspec", on_error="return")
    try:
        found["the scheduler"] = client.run_on_scheduler(importlib.metadata.version, "fcspec")
    except Exception as e:  # noqa: BLE001 - PackageNotFoundError, raised over there
        found["the scheduler"] = e
    bad = {w: v for w, v in found.items() if v != __version__}
    if bad:
        worker, got = next(iter(bad.items()))
        what = f"has fcspec {got}" if isinstance(got, str) else "cannot import fcspec"
        raise FcspecError(
            f"the Dask cluster at {address} cannot run the trials: {worker} {what} "
            f"(this is fcspec {__version__})",
            hint=f"on the scheduler and every worker: pip install 'fcspec[sweep]=={__version__}'",
        )


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _drive(
    optuna, distributed, study, spec, sw, source, path, folder, url,
    remaining, target, done, workers, dask, say, tty_ok,
) -> int:  # fmt: skip
    from .worker import run_trial

    S = optuna.trial.TrialState
    client, cluster = _cluster(distributed, workers, dask, say)
    base_dir = str(Path(path).resolve().parent)
    inflight: dict[Any, Any] = {}  # future -> optuna Trial
    launched = finished = broken = 0
    bar = None
    if tty_ok and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=target, initial=done, unit="trial", file=sys.stderr, dynamic_ncols=True)

    def line(text: str) -> None:
        if bar is not None:
            bar.write(text, file=sys.stderr)
        else:
            say(text)

    def slots() -> int:
        return max(1, sum(client.nthreads().values()))

    def launch() -> None:
        nonlocal launched
        trial = study.ask()
        values = {p.path: value_source(p, _suggest(trial, p)) for p in sw.params}
        trial.set_user_attr("values", values)
        where = report.trial_folder(folder, trial.number)
        header = f"# Trial {trial.number} of the sweep of {path} ({folder}/).\n"
        text = trial_source(source, sw, values, header)
        where.mkdir(parents=True, exist_ok=True)
        fio.atomic_write_text(where / "spec.fc", text)
        task = {
            "number": trial.number,
            "text": text,
            "path": str(where / "spec.fc"),
            "base_dir": base_dir,
            "monitor": sw.monitor,
            "pruner": sw.pruner,
            "storage": url,
            "study": study.study_name,
            "trial_id": trial._trial_id,
            **sw.pruner_options,
        }
        key = f"fcspec-trial-{trial.number}-{uuid.uuid4().hex[:8]}"
        inflight[client.submit(run_trial, task, key=key, pure=False)] = trial
        launched += 1

    def finish(fut, trial) -> None:
        nonlocal finished, broken
        try:
            res = fut.result()
        except Exception as e:  # noqa: BLE001 - the worker died (KilledWorker), or cannot run it
            # Not the trial's outcome: it is queued again, like an interrupted one; a cluster
            # that fails every trial stops the sweep instead of cycling through the queue.
            error = f"{type(e).__name__}: {e}"
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("error", error)
            study.tell(trial, state=S.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            line(f"trial {trial.number} could not run on the cluster ({_last_line(error)})")
            broken += 1
            if broken >= 3:
                raise FcspecError(
                    f"{broken} trials in a row could not run on the cluster: {_last_line(error)}",
                    hint="check the Dask workers' logs; the trials are queued for the next run",
                ) from None
            return
        broken = 0
        where = report.trial_folder(folder, trial.number)
        for name, data in res.get("files", {}).items():
            fio.atomic_write_bytes(where / name, data)
        if res.get("error"):
            fio.atomic_write_text(where / "error.txt", res["error"].rstrip() + "\n")
        for k in ("epochs", "seconds", "host", "error"):
            if res.get(k) is not None:
                trial.set_user_attr(k, res[k])
        value = res.get("value")
        state = res["state"]
        if state == "complete" and value is not None and math.isfinite(value):
            study.tell(trial, value)
        elif state == "pruned":
            study.tell(trial, state=S.PRUNED)
        else:
            if value is not None:
                trial.set_user_attr("value", value)
            study.tell(trial, state=S.FAIL)
            state = "fail"
        finished += 1
        shown = f"{sw.monitor} {value:.4f}" if value is not None and math.isfinite(value) else ""
        values = trial.user_attrs.get("values", {})
        extra = f"  ({_last_line(res['error'])})" if state == "fail" and res.get("error") else ""
        line(
            f"[{done + finished}/{target}] trial {trial.number} {state}  {shown}  "
            f"{res.get('epochs', 0)} epochs  {res.get('seconds', 0):.1f} s  "
            + " ".join(f"{k}={v}" for k, v in values.items())
            + extra
        )
        if bar is not None:
            bar.update(1)
        report.write_all(study, sw, source, path, folder, with_plot=False)

    try:
        # SIGINT / SIGTERM only set a flag (the loop's own catcher): no half-written results.
        with _SignalCatcher() as stop:
            while launched < remaining and len(inflight) < slots():
                launch()
            while inflight and stop.signum is None:
                try:  # wake up twice a second to notice a signal
                    ready = distributed.wait(
                        list(inflight), timeout=0.5, return_when="FIRST_COMPLETED"
                    )
                except TimeoutError:
                    continue
                for fut in ready.done:
                    finish(fut, inflight.pop(fut))
                    if launched < remaining and stop.signum is None:
                        launch()
            if stop.signum is not None:
                n = _interrupt(optuna, study, inflight)
                report.write_all(study, sw, source, path, folder, with_plot=True)
                raise SweepInterrupted(
                    f"interrupted: {done + finished} of {target} trials done; "
                    f"{n} in flight will run again. Resume with the same command",
                    exit_code=128 + int(stop.signum),
                )
    finally:
        if bar is not None:
            bar.close()
        client.close()
        if cluster is not None:
            cluster.close()
    return finished


def _last_line(error: str) -> str:
    """What went wrong, in one line: a message's first line, a traceback's last."""
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines[0].startswith("Traceback") else lines[0]


def _interrupt(optuna, study, inflight) -> int:
    """Stop the trials in flight: cancel, mark interrupted, queue their values again."""
    for fut, trial in inflight.items():
        fut.cancel()
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    return len(inflight)
