"""DataFrames with categories and missing cells in the Python API and the estimators.

The data: palmerpenguins (tests/data/penguins.csv, the file `dataset("penguins")`
embeds): species names, islands and sexes as text, NA cells, read with pandas
as a notebook would.  The oracles: `fcspec run specs/penguins.fc` on the same
training rows (the same schema, the same encoded matrix, the same weights bit
for bit), pandas' own mean / mode / sorted categories, and onnxruntime running
the exported raw-row graph.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import fcspec
from conftest import ROOT
from fcspec import data as fdata
from fcspec import tabular
from fcspec.cli import main
from fcspec.errors import DataError

pd = pytest.importorskip(
    "pandas", reason="pandas is in the sklearn extra: pip install -e '.[sklearn]'"
)

PENGUINS = ROOT / "tests" / "data" / "penguins.csv"
SPEC = ROOT / "specs" / "penguins.fc"
EPOCHS = 30  # specs/penguins.fc trains 100; 30 reach the same accuracy in a third of the time
COLUMNS = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex"]


@pytest.fixture(scope="module")
def penguins():
    return pd.read_csv(PENGUINS)


@pytest.fixture(scope="module")
def split(penguins):
    """The training rows of `fcspec run specs/penguins.fc` (its `test = 0.2`), in its order."""
    train, test = fdata.split_indices(len(penguins), 0.2, 0)
    return train, test


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    r = CliRunner().invoke(
        main, ["run", str(SPEC), "--epochs", str(EPOCHS), "--out", str(out), "-q"]
    )
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def fitted(penguins, split, tmp_path_factory):
    """specs/penguins.fc fitted from Python on the run's training rows (pandas: NaN, str)."""
    train, _ = split
    rows = penguins.iloc[train]
    out = tmp_path_factory.mktemp("api") / "run"
    model = fcspec.load(SPEC).fit(
        rows.drop(columns=["species", "year"]), rows.species, epochs=EPOCHS, out=out, verbose=False
    )
    return model


def xy(df):
    return df.drop(columns=["species", "year"]), df.species


# ---- the same as fcspec run ------------------------------------------------------------------


def test_a_dataframe_fits_the_schema_fcspec_run_fits(fitted, cli_run, penguins, split):
    s = fitted.schema
    saved = tabular.Schema.from_json((cli_run / "schema.json").read_text())
    assert s.differences(saved) == [] and s == saved
    assert [c.name for c in s.columns] == COLUMNS
    assert fitted.spec.model.input_shape == (9,)  # `input auto`: 4 numbers + 3 islands + 2 sexes
    # pandas as the oracle: training rows' means and modes, sorted categories, classes
    rows = penguins.iloc[split[0]]
    by = {c.name: c for c in s.columns}
    for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"):
        assert by[name].kind == "numeric" and by[name].fill == pytest.approx(rows[name].mean())
    assert by["island"].categories == tuple(sorted(rows.island.dropna().unique()))
    assert by["sex"].categories == ("female", "male") and by["sex"].fill == rows.sex.mode()[0]
    assert s.target.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert list(fitted.labels) == ["Adelie", "Chinstrap", "Gentoo"]


def test_a_dataframe_trains_the_matrix_and_weights_of_fcspec_run(fitted, cli_run, penguins, split):
    spec = fcspec.load(SPEC).spec
    run = fdata.prepare(spec)
    x, y = xy(penguins.iloc[split[0]])
    api = fdata.prepare_table(spec, tabular.to_table(x), tabular.to_table(y).column(0))
    assert np.array_equal(api.train.x, run.train.x) and np.array_equal(api.train.y, run.train.y)
    assert np.array_equal(api.preprocess.shift, run.preprocess.shift)
    assert np.array_equal(api.preprocess.divisor, run.preprocess.divisor)
    cli = np.load(cli_run / "weights.npz")
    assert sorted(cli) == sorted(fitted.params)
    assert all(np.array_equal(cli[k], fitted.params[k]) for k in cli)  # bit for bit
    # the run folder's own model predicts the DataFrame with the class names
    again = fcspec.load_run(cli_run)
    assert np.array_equal(again.predict(penguins), fitted.predict(penguins))


def test_predictions_are_class_names_and_evaluate_scores_them(fitted, penguins, split):
    x, y = xy(penguins.iloc[split[1]])
    pred = fitted.predict(x)
    assert pred.dtype.kind == "U" and set(pred) <= {"Adelie", "Chinstrap", "Gentoo"}
    ev = fitted.evaluate(x, y)
    assert ev["rows"] == len(x) and ev["accuracy"] == pytest.approx(np.mean(pred == y.to_numpy()))
    assert ev["accuracy"] >= 0.95
    p = fitted.predict_proba(x)
    assert p.shape == (len(x), 3) and np.allclose(p.sum(axis=1), 1, atol=1e-6)
    assert np.array_equal(fitted.labels[p.argmax(axis=1)], pred)
    assert fitted.encoding["imputed"].get("sex", 0) == x.sex.isna().sum()


# ---- columns by name, missing cells, unseen categories ---------------------------------------


def test_columns_are_found_by_name_and_a_missing_one_is_named(fitted, penguins):
    x, _ = xy(penguins)
    shuffled = x[x.columns[::-1]].assign(id=np.arange(len(x)), species="?")  # extras ignored
    assert np.array_equal(fitted.predict_proba(shuffled), fitted.predict_proba(x))
    with pytest.raises(DataError, match="no feature column named 'sex'"):
        fitted.predict(x.drop(columns=["sex"]))


def test_missing_cells_take_the_training_fill_and_unseen_categories_are_zeros(fitted, penguins):
    x, _ = xy(penguins)
    by = {c.name: c for c in fitted.schema.columns}
    row = x.iloc[[0]].copy()
    row["bill_length_mm"], row["sex"] = np.nan, None
    filled = row.assign(bill_length_mm=by["bill_length_mm"].fill, sex=by["sex"].fill)
    got = fitted.predict_proba(row)
    assert fitted.encoding == {"imputed": {"bill_length_mm": 1, "sex": 1}, "unseen": {}}
    assert np.array_equal(got, fitted.predict_proba(filled))
    odd = x.iloc[:3].assign(island=["Atlantis", "Dream", "Atlantis"])
    with pytest.warns(fcspec.FcspecWarning, match=r"2 cells hold categories unseen in training"):
        fitted.predict(odd)
    assert fitted.encoding["unseen"] == {"island": 2}
    enc, _ = tabular.encode(fitted.schema, tabular.to_table(odd))
    assert enc[0, :3].tolist() == [0, 0, 0] and enc[1, :3].tolist() == [0, 1, 0]  # all zeros


def test_pyarrow_and_polars_tables_are_the_same_rows(fitted, penguins):
    import pyarrow as pa

    x, _ = xy(penguins)
    want = fitted.predict_proba(x)
    assert np.array_equal(fitted.predict_proba(pa.Table.from_pandas(x)), want)
    pl = pytest.importorskip("polars")
    assert np.array_equal(fitted.predict_proba(pl.from_pandas(x)), want)


# ---- save, load_run, ONNX ----------------------------------------------------------------------


def test_save_and_load_run_keep_the_schema(fitted, penguins, tmp_path):
    folder = fitted.save(tmp_path / "saved")
    assert tabular.Schema.from_json((folder / "schema.json").read_text()) == fitted.schema
    back = fcspec.load_run(folder)
    assert back.schema == fitted.schema and list(back.labels) == list(fitted.labels)
    assert np.array_equal(back.predict(penguins), fitted.predict(penguins))


def onnx_feeds(df, schema):
    """The raw-row graph's inputs from pandas, by hand: strings ("" missing) and floats (NaN)."""
    feeds = {}
    for c in schema.columns:
        col = df[c.name]
        if c.kind == "categorical":
            v = np.array(["" if pd.isna(s) else str(s) for s in col], dtype=object)
        else:
            v = col.to_numpy(np.float32)
        feeds[c.name] = v.reshape(-1, 1)
    return feeds


def test_the_onnx_export_takes_raw_rows_and_agrees_under_onnxruntime(fitted, penguins, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, _ = xy(penguins)
    x = pd.concat([x, x.iloc[:2].assign(island="Atlantis")])  # an unseen category: all zeros
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fcspec.FcspecWarning)
        proba, pred = fitted.predict_proba(x), fitted.predict(x)
    path = fitted.export_onnx(tmp_path / "penguins.onnx", labels=True)
    sess = ort.InferenceSession(str(path))
    assert [i.name for i in sess.get_inputs()] == COLUMNS
    label, probabilities = sess.run(["label", "probabilities"], onnx_feeds(x, fitted.schema))
    np.testing.assert_allclose(probabilities, proba, atol=1e-6)
    assert list(label) == list(pred)
    # without labels: fcspec export's graph, the class names as its `class` output
    plain = ort.InferenceSession(
        str(fitted.export_onnx(tmp_path / "plain.onnx", probabilities=True))
    )
    out, names = plain.run(["output", "class"], onnx_feeds(x, fitted.schema))
    np.testing.assert_allclose(out, proba, atol=1e-6)
    assert list(names) == list(pred)


# ---- fit's other inputs and errors ------------------------------------------------------------


def test_validation_data_and_a_validate_fraction_fit_on_the_training_rows_only(penguins, tmp_path):
    x, y = xy(penguins)
    spec = fcspec.load(SPEC, overrides={"data.validate": 0.25, "train.epochs": 3})
    spec.fit(x, y, out=tmp_path / "a", verbose=False)
    train, _ = fdata.split_indices(len(x), 0.25, 0, where="X")
    mean = x.iloc[train].bill_length_mm.mean()
    assert spec.schema.columns[1].fill == pytest.approx(mean)
    assert "val_accuracy" in spec.history[-1]
    a, b = np.split(np.random.default_rng(0).permutation(len(x)), [250])  # the file is sorted
    m = fcspec.load(SPEC, overrides={"train.epochs": 3})
    m.fit(
        x.iloc[a],
        y.iloc[a],
        validation_data=(x.iloc[b], y.iloc[b]),
        out=tmp_path / "b",
        verbose=False,
    )
    assert m.schema.columns[1].fill == pytest.approx(x.iloc[a].bill_length_mm.mean())
    assert m.history[-1]["val_accuracy"] >= 0
    with pytest.raises(DataError, match="label 'Chinstrap' is not one of the training classes"):
        m.fit(x[:250], y[:250], validation_data=(x[250:], y[250:]), verbose=False)
    with pytest.raises(DataError, match="X has 344 rows but y has 10"):
        fcspec.load(SPEC).fit(x, y[:10], verbose=False)


def test_a_regression_target_from_a_dataframe(penguins, tmp_path):
    df = penguins.dropna(subset=["body_mass_g"])
    spec = """
    model Mass { input auto  h = linear(16) -> relu  out = linear(1) }
    loss mse
    optimizer adam(lr = 0.01)
    data { normalize = standard  normalize_target = standard  validate = 0.2 }
    train { epochs = 40  batch = 32 }
    """
    x, y = df.drop(columns=["body_mass_g"]), df.body_mass_g
    m = fcspec.loads(spec).fit(x, y, out=tmp_path / "mass", verbose=False)
    pred = m.predict(x)[:, 0]  # in grams: the target's scaling is undone
    r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 0.8 and m.evaluate(x, y)["rows"] == len(x)


def test_numpy_fits_import_neither_pandas_nor_pyarrow():
    code = (
        "import sys, numpy as np, fcspec\n"
        "rng = np.random.default_rng(0); x = rng.normal(size=(60, 3)); y = (x[:, 0] > 0).astype(int)\n"
        "spec = 'model M { input [3]  out = linear(2) }\\nloss cross_entropy\\noptimizer adam(lr = 0.1)\\n"
        "train { epochs = 2 }'\n"
        "import tempfile\n"
        "m = fcspec.loads(spec).fit(x, y, out=tempfile.mkdtemp(), verbose=False); m.predict(x)\n"
        "print('pandas' in sys.modules, 'pyarrow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


# ---- scikit-learn ------------------------------------------------------------------------------


def test_the_classifier_takes_the_raw_dataframe(penguins, split, tmp_path):
    pytest.importorskip("sklearn")
    ort = pytest.importorskip("onnxruntime")
    from fcspec.sklearn import FcspecClassifier

    train, test = split
    x, y = xy(penguins)
    clf = FcspecClassifier(spec=str(SPEC), epochs=EPOCHS).fit(x.iloc[train], y.iloc[train])
    assert list(clf.feature_names_in_) == COLUMNS and clf.n_features_in_ == 6
    assert list(clf.classes_) == ["Adelie", "Chinstrap", "Gentoo"]
    assert clf.model_.spec.model.input_shape == (9,)
    assert clf.score(x.iloc[test], y.iloc[test]) >= 0.95
    proba = clf.predict_proba(x)
    assert proba.dtype == np.float64
    sess = ort.InferenceSession(str(clf.export_onnx(tmp_path / "clf.onnx")))
    label, probabilities = sess.run(["label", "probabilities"], onnx_feeds(x, clf.model_.schema))
    np.testing.assert_allclose(probabilities, proba, atol=1e-6)
    assert list(label) == list(clf.predict(x))
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(x.rename(columns={"sex": "gender"}))


def test_the_classifier_in_a_pipeline_and_cross_val_score(penguins):
    pytest.importorskip("sklearn")
    from sklearn.compose import ColumnTransformer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import Pipeline

    from fcspec.sklearn import FcspecClassifier

    x, y = penguins.drop(columns=["species"]), penguins.species
    drop_year = ColumnTransformer(
        [("year", "drop", ["year"])], remainder="passthrough", verbose_feature_names_out=False
    ).set_output(transform="pandas")  # the strings and NaN cells pass through as they are
    pipe = Pipeline([("columns", drop_year), ("net", FcspecClassifier(epochs=20, lr=0.01))])
    scores = cross_val_score(pipe, x, y, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    assert scores.shape == (3,) and scores.mean() >= 0.95
    pipe.fit(x, y)
    assert list(pipe.named_steps["net"].feature_names_in_) == COLUMNS


def test_the_regressor_takes_a_dataframe(penguins):
    pytest.importorskip("sklearn")
    from fcspec.sklearn import FcspecRegressor

    df = penguins.dropna(subset=["body_mass_g"])
    x, y = df.drop(columns=["body_mass_g"]), df.body_mass_g / 1000
    reg = FcspecRegressor(epochs=40, lr=0.01).fit(x, y)
    assert reg.n_features_in_ == 7 and reg.predict(x).shape == (len(x),)
    assert reg.score(x, y) > 0.8


def test_schema_json_is_plain_readable_json(fitted):
    d = json.loads((fitted.run_dir / "schema.json").read_text())
    assert [c["name"] for c in d["columns"]] == COLUMNS and d["width"] == 9


def test_the_labelled_graph_keeps_only_what_its_outputs_need(fitted):
    onnx = pytest.importorskip("onnx")
    g = fitted.onnx(labels=True).graph
    assert [o.name for o in g.output] == ["label", "probabilities"]
    produced = {o for n in g.node for o in n.output}
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    assert produced <= used  # no dead node (the plain graph's `class` lookup is gone)
    assert "class" not in produced and not any("class.names" in t.name for t in g.initializer)
    onnx.checker.check_model(fitted.onnx(labels=True), full_check=True)


def test_the_spec_sources_missing_and_unknown_options_apply_to_a_dataframe(penguins, tmp_path):
    x, y = xy(penguins)
    text = SPEC.read_text().replace(
        'dataset("penguins", drop = ["year"])',
        'dataset("penguins", drop = ["year"], missing = median, unknown = error)',
    )
    m = fcspec.loads(text, overrides={"train.epochs": 2}).fit(
        x, y, out=tmp_path / "m", verbose=False
    )
    assert m.schema.missing == "median" and m.schema.unknown == "error"
    assert m.schema.columns[1].fill == pytest.approx(x.bill_length_mm.median())
    with pytest.raises(DataError, match="category 'Atlantis' was not in the training rows"):
        m.predict(x.iloc[:3].assign(island="Atlantis"))


def test_fcspec_predict_scores_the_raw_file_with_the_graph_of_a_dataframe_model(
    fitted, penguins, tmp_path
):
    pytest.importorskip("onnxruntime")
    path = fitted.export_onnx(tmp_path / "penguins.onnx")
    out = tmp_path / "pred.csv"
    r = CliRunner().invoke(main, ["predict", str(path), str(PENGUINS), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "sex 11" in r.output  # the raw file's NA cells, imputed by the graph
    got = pd.read_csv(out)["class"]
    assert list(got) == list(fitted.predict(penguins))
    acc = float(r.output.split("accuracy")[1].split()[0])
    assert acc == pytest.approx(np.mean(got == penguins.species))
