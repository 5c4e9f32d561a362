"""fcspec beside scikit-learn on raw tables: the same split, the same network.

For each real file in tests/data (their sources and licences: tests/data/README.md),
fcspec trains `input auto -> linear(32) -> relu -> linear(outputs)` with Adam
(lr 0.01), batch 32, 100 epochs, `normalize = standard` from the raw file, and
scikit-learn trains `MLPClassifier` / `MLPRegressor(hidden_layer_sizes=(32,))` with
the same optimizer settings in a `Pipeline`: `SimpleImputer` (mean for numbers, most
frequent for categories), `OneHotEncoder(handle_unknown="ignore")` and
`StandardScaler` for the numeric columns, the regression target standardized
(`TransformedTargetRegressor`, as fcspec's `normalize_target = standard`).  Both
train on the same rows and are scored on the same held-out 20 %: fcspec's test
split, which is scikit-learn's `train_test_split(test_size=0.2, random_state=0)`.

    python benchmarks/tabular_accuracy.py                        # print the table
    python benchmarks/tabular_accuracy.py --write docs/training.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py, also when imported
from common import replace_section  # noqa: E402

DATA = ROOT / "tests" / "data"
BEGIN, END = "<!-- tabular:begin -->", "<!-- tabular:end -->"

# (name, reader call, loss, target, pandas read options)
CASES = [
    (
        "penguins species",
        'csv("penguins.csv", target = "species", drop = ["year"])',
        "cross_entropy",
        "species",
        {"drop": ["year"]},
    ),
    (
        "penguins body mass (g)",
        'csv("penguins.csv", target = "body_mass_g", drop = ["year"])',
        "mse",
        "body_mass_g",
        {"drop": ["year"]},
    ),
    (
        "digits (header-less .csv.gz)",
        'csv("digits.csv.gz", target = 64, header = false)',
        "cross_entropy",
        64,
        {"header": None},
    ),
    (
        "anes96 vote (tab-separated)",
        'csv("anes96.csv", target = "vote")',
        "cross_entropy",
        "vote",
        {"sep": "\t"},
    ),
]

EPOCHS, BATCH, LR, HIDDEN, SEED, TEST = 100, 32, 0.01, 32, 0, 0.2


def spec_text(call: str, loss: str) -> str:
    target = "\n    normalize_target = standard" if loss == "mse" else ""
    return f"""model Table {{
    input auto
    hidden = linear({HIDDEN}) -> relu
    out    = linear(outputs)
}}
loss      {loss}
optimizer adam(lr = {LR})
data {{
    train     = {call}
    test      = {TEST}
    normalize = standard{target}
}}
train {{ epochs = {EPOCHS}  batch = {BATCH}  seed = {SEED} }}
"""


def run_fcspec(call: str, loss: str) -> tuple[float, float]:
    from fcspec import train
    from fcspec.check import compile_source

    with tempfile.TemporaryDirectory() as tmp:
        path = DATA / "_bench.fc"  # paths in the spec are relative to its folder
        spec = compile_source(spec_text(call, loss), str(path))
        t0 = time.perf_counter()
        s = train.run(spec, out_dir=Path(tmp) / "run", quiet=True, base_dir=DATA)
        took = time.perf_counter() - t0
    return (s["test_accuracy"] if loss != "mse" else s["test_mae"]), took


def run_sklearn(target, loss: str, opts: dict) -> tuple[float, float]:
    import pandas as pd
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from fcspec.data import split_indices

    name = next(c for c in CASES if c[3] == target and c[2] == loss)[1]
    path = DATA / name.split('"')[1]
    df = pd.read_csv(
        path, sep=opts.get("sep", None), engine="python", header=opts.get("header", "infer")
    )
    df.columns = [str(c).strip().strip("'") for c in df.columns]
    df = df.drop(columns=opts.get("drop", []))
    target = str(target)
    df = df[df[target].notna()].reset_index(drop=True)  # as fcspec: rows without a target left out
    y = df.pop(target)
    tr, te = split_indices(len(df), TEST, SEED, name="test")
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
    categorical = [c for c in df.columns if c not in numeric]
    pre = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore"),
                ),
                categorical,
            ),
        ]
    )
    common = dict(
        hidden_layer_sizes=(HIDDEN,),
        solver="adam",
        learning_rate_init=LR,
        batch_size=BATCH,
        max_iter=EPOCHS,
        alpha=0.0,
        random_state=SEED,
        n_iter_no_change=EPOCHS,  # no early stop: the same 100 epochs
        tol=0.0,
    )
    if loss == "mse":
        model = TransformedTargetRegressor(MLPRegressor(**common), transformer=StandardScaler())
    else:
        model = MLPClassifier(**common)
    pipe = Pipeline([("pre", pre), ("mlp", model)])
    t0 = time.perf_counter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 100 epochs is the budget
        pipe.fit(df.iloc[tr], y.iloc[tr])
    took = time.perf_counter() - t0
    pred = pipe.predict(df.iloc[te])
    truth = y.iloc[te].to_numpy()
    if loss == "mse":
        return float(np.mean(np.abs(pred - truth))), took
    return float(np.mean(pred == truth)), took


def table(rows: list[tuple]) -> str:
    lines = [
        "`python benchmarks/tabular_accuracy.py` (held-out 20 %, seed 0; "
        f"{HIDDEN} hidden units, Adam lr {LR}, batch {BATCH}, {EPOCHS} epochs, no weight decay):",
        "",
        "| data (tests/data) | metric | fcspec | scikit-learn Pipeline + MLP | difference |",
        "|---|---|---|---|---|",
    ]
    for name, metric, ours, theirs in rows:
        if metric == "accuracy":
            lines.append(
                f"| {name} | accuracy | {ours:.1%} | {theirs:.1%} | {100 * (ours - theirs):+.1f} points |"
            )
        else:
            lines.append(
                f"| {name} | {metric} | {ours:.1f} | {theirs:.1f} | {100 * (ours - theirs) / theirs:+.1f} % |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", type=Path, help="replace the marked section of this markdown file")
    ap.add_argument("--only", help="run only the cases whose name contains this")
    args = ap.parse_args(argv)
    rows = []
    for name, call, loss, target, opts in CASES:
        if args.only and args.only not in name:
            continue
        ours, _ = run_fcspec(call, loss)
        theirs, _ = run_sklearn(target, loss, opts)
        rows.append((name, "accuracy" if loss != "mse" else "test MAE", ours, theirs))
        print(f"{name}: fcspec {ours:.4g}  scikit-learn {theirs:.4g}", file=sys.stderr)
    text = table(rows)
    print(text, end="")
    if args.write:
        replace_section(args.write, text, BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
