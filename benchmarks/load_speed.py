"""Load time and peak memory of fcspec's table reader beside pandas and polars.

The file is MNIST's training set as people meet it on the web (Kaggle's
`mnist_train.csv`): a header `label,pixel0,...,pixel783` and 60,000 rows of
integers, about 110 MB.  It is written once into /tmp from the IDX files
(`$FCSPEC_DATA/mnist` or /work/shared/data/mnist) and never committed.

Each reader runs in its own fresh Python process (so one reader's allocations do
not inflate another's), the readers alternating round by round (so a busy spell of
a shared machine hits them all); the table gives the median wall time, CPU time and
the process's peak resident memory (`ru_maxrss`, which includes the interpreter
and the imported libraries, identical accounting for every reader):

    fcspec     fcspec.data.load_source(csv(..., target = "label")): pyarrow's reader,
               the schema fitted, the feature matrix and the labels built:
               everything a spec's `csv(...)` does before training
    fcspec-1   the same on one thread (pyarrow.set_cpu_count(1))
    pandas     pandas.read_csv(path) (a DataFrame only; its C parser has one thread)
    polars     polars.read_csv(path) (a DataFrame only)
    polars-1   the same on one thread (POLARS_MAX_THREADS=1)

Threads: pyarrow's CSV reader and polars parse blocks of the file in parallel on
their thread pools (one thread per CPU); pandas' C parser is single-threaded.  The
`-1` rows give pyarrow and polars pandas' single thread, the like-for-like comparison.

    python benchmarks/load_speed.py                       # print the table
    python benchmarks/load_speed.py --write docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported
from common import machine_line, replace_section  # noqa: E402

BEGIN, END = "<!-- load:begin -->", "<!-- load:end -->"
READERS = ("fcspec", "fcspec-1", "pandas", "polars", "polars-1")
THREADS = {"fcspec": "all", "fcspec-1": "1", "pandas": "1", "polars": "all", "polars-1": "1"}
DEFAULT_CSV = Path("/tmp/fcspec-bench/mnist_train.csv")


def mnist_dir() -> Path:
    for cand in (
        os.environ.get("FCSPEC_DATA"),
        os.environ.get("FCSPEC_SHARED_DATA"),
        "/work/shared/data",
    ):
        if cand and (Path(cand) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(cand) / "mnist"
    raise SystemExit("MNIST not found: set FCSPEC_DATA to a folder holding mnist/")


def write_csv(path: Path, rows: int | None = None) -> Path:
    """MNIST's training set as a Kaggle-style CSV (written once; `rows` for a smaller one)."""
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    from fcspec.data import read_idx

    d = mnist_dir()
    x = read_idx(d / "train-images-idx3-ubyte.gz").reshape(60000, -1)
    y = read_idx(d / "train-labels-idx1-ubyte.gz")
    if rows is not None:
        x, y = x[:rows], y[:rows]
    cols = {"label": pa.array(y.astype(np.int64))}
    cols.update({f"pixel{j}": pa.array(x[:, j].astype(np.int64)) for j in range(x.shape[1])})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:  # the header unquoted, as Kaggle's file has it
        f.write((",".join(cols) + "\n").encode())
        pcsv.write_csv(
            pa.table(cols), f, pcsv.WriteOptions(include_header=False, quoting_style="none")
        )
    tmp.replace(path)
    return path


def child(reader: str, path: str) -> None:
    """One load in this process; prints seconds, peak RSS and what was read as JSON."""
    if reader == "fcspec-1":
        import pyarrow

        pyarrow.set_cpu_count(1)
    t0 = time.perf_counter()
    if reader in ("fcspec", "fcspec-1"):
        from fcspec import data, ir

        x, y = data.load_source(ir.DataSource("csv", {"path": path, "target": "label"}), Path("."))
        shape = list(x.shape)
    elif reader == "pandas":
        import pandas as pd

        shape = list(pd.read_csv(path).shape)
    elif reader in ("polars", "polars-1"):
        import polars as pl

        shape = list(pl.read_csv(path).shape)
    else:
        raise SystemExit(f"unknown reader {reader}")
    seconds = time.perf_counter() - t0
    use = resource.getrusage(resource.RUSAGE_SELF)
    peak = use.ru_maxrss * 1024  # Linux reports KiB
    cpu = use.ru_utime + use.ru_stime  # includes the imports, as the peak does
    print(
        json.dumps({"reader": reader, "seconds": seconds, "cpu": cpu, "peak": peak, "shape": shape})
    )


def run_child(reader: str, path: Path) -> dict:
    env = dict(os.environ)
    if reader == "polars-1":
        env["POLARS_MAX_THREADS"] = "1"  # read when polars is imported
    out = subprocess.run(
        [sys.executable, __file__, "--child", reader, str(path)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(readers: list[str], path: Path, rounds: int) -> list[dict]:
    runs: dict[str, list[dict]] = {r: [] for r in readers}
    for _ in range(rounds):  # alternating, so a busy spell of the machine hits every reader
        for reader in readers:
            runs[reader].append(run_child(reader, path))
    return [
        {
            "reader": reader,
            "seconds": statistics.median(r["seconds"] for r in rs),
            "cpu": statistics.median(r["cpu"] for r in rs),
            "peak": statistics.median(r["peak"] for r in rs),
            "shape": rs[0]["shape"],
        }
        for reader, rs in runs.items()
    ]


def versions() -> str:
    import pandas
    import polars
    import pyarrow

    return (
        f"pyarrow {pyarrow.__version__}, pandas {pandas.__version__}, polars {polars.__version__}"
    )


def table(results: list[dict], path: Path, rounds: int, load_start: float | None) -> str:
    size = path.stat().st_size / 1e6
    cpus = os.cpu_count()
    lines = [
        f"`python benchmarks/load_speed.py` on `{path.name}` ({size:.0f} MB, "
        f"{results[0]['shape'][0]:,} rows; median of {rounds} fresh processes each, the readers "
        "alternating). Machine: "
        + machine_line(
            "threads as in the table",
            {"pyarrow": "pyarrow", "pandas": "pandas", "polars": "polars"},
            load_start,
        ),
        "",
        "| reader | what it returns | threads | wall seconds | CPU seconds | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    what = {
        "fcspec": "the encoded features [N, 784] (uint8, compact) + labels, schema fitted",
        "pandas": "`pandas.read_csv`: a DataFrame",
        "polars": "`polars.read_csv`: a DataFrame",
    }
    for r in results:
        name = r["reader"]
        threads = cpus if THREADS[name] == "all" else 1
        lines.append(
            f"| {name} | {what[name.removesuffix('-1')]} | {threads} | {r['seconds']:.2f} "
            f"| {r['cpu']:.2f} | {r['peak'] / 1e9:.2f} GB |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--csv", type=Path, default=DEFAULT_CSV, help="the MNIST CSV (written if absent)"
    )
    ap.add_argument(
        "--rows", type=int, help="write only this many rows (a smaller file, for tests)"
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readers", default=",".join(READERS))
    ap.add_argument("--write", type=Path, help="replace the marked section of this markdown file")
    ap.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    path = write_csv(args.csv, args.rows)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = measure(args.readers.split(","), path, args.rounds)
    text = table(results, path, args.rounds, load_start)
    print(text, end="")
    if args.write:
        replace_section(args.write, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
