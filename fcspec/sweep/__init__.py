"""Hyperparameter sweeps: the `sweep { ... }` block and `fcspec sweep`.

    space.py    check the block: paths, distributions, settings -> a `Sweep` (no optuna)
    apply.py    a trial's values -> the trial's own spec text (the sweep block removed)
    worker.py   train one trial wherever it runs (a Dask worker), pruning per epoch
    study.py    the driver: the Optuna study, the Dask cluster, resume, results
    report.py   results.csv, best.fc and the plot, from the study

Only space.py and apply.py are imported by `fcspec check`; Optuna and Dask are
imported lazily by the driver and the worker.
"""
