"""Tables as people have them: real CSV files from PyPI packages (tests/data/README.md),
every csv(...) option, every trap, and the encoding checked against NumPy / pandas."""

from __future__ import annotations

import bz2
import lzma
import shutil
import sys

import numpy as np
import pytest

from conftest import ROOT
from fcspec import data, ir, tabular
from fcspec.check import check_source, compile_source
from fcspec.errors import DataError

DATA = ROOT / "tests" / "data"
PENGUINS = DATA / "penguins.csv"


def spec_text(train: str, *, loss="cross_entropy", extra="", model=None) -> str:
    model = model or "input auto\n    h = linear(16) -> relu\n    out = linear(outputs)"
    return (
        f"model T {{\n    {model}\n}}\nloss {loss}\noptimizer adam(lr = 0.01)\n"
        f"data {{\n    train = {train}\n    {extra}\n}}\ntrain {{ epochs = 2  batch = 32  seed = 0 }}\n"
    )


def prepare(tmp_path, train: str, **kw):
    spec = compile_source(spec_text(train, **kw), str(tmp_path / "t.fc"))
    return data.prepare(spec, tmp_path)


def message(e) -> str:
    return str(e.value)


@pytest.fixture
def files(tmp_path):
    for f in DATA.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


# ---------------------------------------------------------------------------
# The penguins, raw


def test_penguins_raw_file_encodes_like_pandas(files):
    import pandas as pd

    p = prepare(files, 'csv("penguins.csv", target = "species", drop = ["year"])')
    s = p.schema
    assert [c.name for c in s.columns] == [
        "island",
        "bill_length_mm",
        "bill_depth_mm",
        "flipper_length_mm",
        "body_mass_g",
        "sex",
    ]
    assert s.columns[0].categories == ("Biscoe", "Dream", "Torgersen")  # sorted
    assert s.columns[5].categories == ("female", "male")
    assert s.target.classes == ("Adelie", "Chinstrap", "Gentoo")
    assert p.spec.model.input_shape == (9,) and p.spec.model.output_shape == (3,)
    assert any("imputed 19 cells in 5 columns" in n for n in p.notes), p.notes
    # the oracle: pandas on the same file, the training rows of the same split
    df = pd.read_csv(PENGUINS)
    rows = np.arange(len(df))
    tr, _ = data.split_indices(len(df), 0.0 + 1e-9, 0) if False else (rows, None)
    mean = df["bill_length_mm"].mean()
    assert s.columns[1].fill == pytest.approx(mean)
    assert s.columns[5].fill == df["sex"].mode()[0]
    x, report = tabular.encode(s, tabular.read_csv(PENGUINS).drop_columns(["species", "year"]))
    assert report["imputed"] == {
        "bill_length_mm": 2,
        "bill_depth_mm": 2,
        "flipper_length_mm": 2,
        "body_mass_g": 2,
        "sex": 11,
    }
    onehot = pd.get_dummies(df["island"]).to_numpy(np.float32)
    np.testing.assert_array_equal(x[:, 0:3], onehot)
    filled = df["bill_length_mm"].fillna(mean).to_numpy(np.float32)
    np.testing.assert_array_equal(x[:, 3], filled)
    y = pd.Categorical(df["species"], categories=sorted(df["species"].unique())).codes
    np.testing.assert_array_equal(p.train.y, y[: len(p.train.y)])
    assert tr is rows


def test_imputation_is_fitted_on_the_training_rows_only(files):
    p = prepare(
        files,
        'csv("penguins.csv", target = "species", missing = median)',
        extra="test = 0.3",
    )
    import pandas as pd

    df = pd.read_csv(PENGUINS)
    tr, _ = data.split_indices(len(df), 0.3, 0, name="test")
    assert p.schema.columns[1].fill == pytest.approx(df["bill_length_mm"].iloc[tr].median())
    assert p.schema.columns[1].fill != pytest.approx(df["bill_length_mm"].median())


@pytest.mark.parametrize(
    "how,expect",
    [("zero", lambda v: 0.0), ("most_frequent", lambda v: v.mode().min()), ("mean", np.mean)],
)
def test_missing_strategies(files, how, expect):
    import pandas as pd

    p = prepare(files, f'csv("penguins.csv", target = "species", missing = {how})')
    v = pd.read_csv(PENGUINS)["flipper_length_mm"].dropna()
    assert p.schema.columns[3].fill == pytest.approx(float(expect(v)))


def test_missing_error_names_line_and_column(files):
    with pytest.raises(DataError) as e:
        prepare(files, 'csv("penguins.csv", target = "species", missing = error)')
    assert "penguins.csv: line 5, column 'bill_length_mm': missing cell" in message(e)


def test_unseen_categories_are_zeros_or_refused(files):
    (files / "more.csv").write_text(
        "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
        "Adelie,Atlantis,39.1,18.7,181,3750,male,2007\n"
        "Gentoo,Biscoe,NA,15,220,5000,,2009\n"
    )
    p = prepare(
        files,
        'csv("penguins.csv", target = "species")',
        extra='test = csv("more.csv", target = "species")',
    )
    assert any("1 cells hold categories unseen in training" in n for n in p.notes), p.notes
    np.testing.assert_array_equal(p.test.x[0, :3], 0)  # one-hot stays 0/1 under normalize none
    np.testing.assert_array_equal(p.test.y, [0, 2])
    with pytest.raises(DataError) as e:
        prepare(
            files,
            'csv("penguins.csv", target = "species", unknown = error)',
            extra='test = csv("more.csv", target = "species")',
        )
    assert "line 2, column 'island': category 'Atlantis' was not in the training rows" in message(e)


def test_categorical_forces_number_codes_and_columns_selects(files):
    p = prepare(
        files,
        'csv("penguins.csv", target = "species", columns = ["island", "year"], categorical = ["year"])',
    )
    assert [(c.name, c.kind) for c in p.schema.columns] == [
        ("island", "categorical"),
        ("year", "categorical"),
    ]
    assert p.schema.columns[1].categories == ("2007", "2008", "2009")
    assert p.spec.model.input_shape == (6,)


def test_standard_normalize_leaves_one_hot_columns(files):
    p = prepare(files, 'csv("penguins.csv", target = "species")', extra="normalize = standard")
    mask = p.schema.numeric_mask()
    assert (p.preprocess.shift[~mask] == 0).all() and (p.preprocess.divisor[~mask] == 1).all()
    assert np.allclose(p.train.x[:, mask].mean(axis=0), 0, atol=1e-4)


# ---------------------------------------------------------------------------
# Delimiters, headers, compression


def test_delimiters_are_sniffed(files):
    tsv = tabular.read_csv(files / "anes96.csv")  # tab-separated, quoted names
    assert tsv.num_columns == 10 and tsv.column_names[-1] == "vote"
    semi = tabular.read_csv(files / "modechoice.csv")
    assert semi.column_names[:3] == ["individual", "mode", "choice"] and semi.num_rows == 840
    ws = tabular.read_csv(files / "linnerud_exercise.csv")
    assert ws.column_names == ["Chins", "Situps", "Jumps"] and ws.num_rows == 20
    raw = tabular.read_csv(files / "diabetes_data_raw.csv.gz", header=False)
    assert raw.num_columns == 10 and raw.column_names[0] == "0" and raw.num_rows == 442


def test_single_column_with_another_delimiter_is_refused(files):
    with pytest.raises(DataError) as e:
        tabular.read_csv(files / "anes96.csv", delimiter=",")
    assert "reads as one column" in message(e)
    assert 'tab-separated? use `delimiter = "\\t"` or leave it `auto`' in message(e)


def test_header_less_file_and_target_by_index(files):
    with pytest.raises(DataError) as e:
        prepare(files, 'csv("digits.csv.gz", target = 64)')
    assert "the header row is all numbers" in message(e)
    assert "is this file header-less? use `header = false`" in message(e)
    p = prepare(files, 'csv("digits.csv.gz", target = 64, header = false)')
    assert p.spec.model.input_shape == (64,) and p.spec.model.output_shape == (10,)
    assert len(p.train) == 1797
    assert p.schema.target.identity
    p2 = prepare(files, 'csv("digits.csv.gz", target = -1, header = false)')
    np.testing.assert_array_equal(p.train.y, p2.train.y)


@pytest.mark.parametrize("suffix", ["bz2", "xz", "zst"])
def test_compression_by_file_name(files, suffix):
    raw = PENGUINS.read_bytes()
    if suffix == "bz2":
        packed = bz2.compress(raw)
    elif suffix == "xz":
        packed = lzma.compress(raw)
    else:
        import pyarrow as pa

        with pa.output_stream(str(files / "p.csv.zst"), compression="zstd") as f:
            f.write(raw)
        packed = (files / "p.csv.zst").read_bytes()
    (files / f"p.csv.{suffix}").write_bytes(packed)
    a = tabular.read_csv(files / f"p.csv.{suffix}")
    assert a.equals(tabular.read_csv(PENGUINS))


def test_traps_duplicate_names_and_missing_target(files):
    (files / "dup.csv").write_text("a,b,a\n1,2,3\n")
    with pytest.raises(DataError) as e:
        tabular.read_csv(files / "dup.csv")
    assert "columns 0 and 2 are both named 'a'" in message(e)
    with pytest.raises(DataError) as e:
        prepare(files, 'csv("penguins.csv", target = "Species")')
    assert "no target column named 'Species'; the columns are 'species', 'island'" in message(e)
    assert "did you mean 'species'?" in message(e)
    assert "t.fc:9:" in message(e)  # located at the source in the spec
    with pytest.raises(DataError, match="out of range"):
        prepare(files, 'csv("penguins.csv", target = 8)')


def test_parquet_reads_like_the_csv(files):
    import pyarrow.parquet as pq

    pq.write_table(tabular.read_csv(PENGUINS), files / "p.parquet")
    a = prepare(files, 'parquet("p.parquet", target = "species", drop = ["year"])')
    b = prepare(files, 'csv("penguins.csv", target = "species", drop = ["year"])')
    assert a.schema == b.schema
    np.testing.assert_array_equal(a.train.x, b.train.x)


def test_to_table_takes_dataframes_and_arrays():
    import pandas as pd

    df = pd.read_csv(PENGUINS)
    t = tabular.to_table(df)
    feats, name = tabular.select(t, target="species", drop=["year"])
    s = tabular.fit(feats, t.column(name), target_name=name, task="classification")
    x, _ = tabular.encode(s, feats)
    file_t = tabular.read_csv(PENGUINS)
    f2, _ = tabular.select(file_t, target="species", drop=["year"])
    x2, _ = tabular.encode(
        tabular.fit(f2, file_t.column("species"), target_name="species", task="classification"), f2
    )
    np.testing.assert_array_equal(x, x2)
    arr = tabular.to_table(np.array([[1.0, np.nan], [3.0, 4.0]]))
    assert arr.column_names == ["0", "1"] and arr.column(1).null_count == 1


# ---------------------------------------------------------------------------
# Labels and targets


@pytest.mark.parametrize(
    "labels,classes",
    [(["b", "a", "c", "a"], ("a", "b", "c")), ([3, 1, 2, 1], (1, 2, 3)), ([1, -1, -1, 1], (-1, 1))],
)
def test_class_labels_map_to_sorted_indices(tmp_path, labels, classes):
    rows = "\n".join(f"{i},{lab}" for i, lab in enumerate(labels * 5))
    (tmp_path / "l.csv").write_text("x,label\n" + rows + "\n")
    p = prepare(tmp_path, 'csv("l.csv", target = "label")')
    assert p.schema.target.classes == classes
    assert p.spec.model.output_shape == (len(classes),)
    ids = [classes.index(v) for v in labels * 5]
    np.testing.assert_array_equal(p.train.y, ids)
    assert tabular.class_names(p.schema, p.train.y[:4]) == (labels * 5)[:4]


def test_binary_labels_minus_one_one_become_zero_one(tmp_path):
    (tmp_path / "b.csv").write_text("x,y\n1,-1\n2,1\n3,1\n4,-1\n")
    p = prepare(
        tmp_path,
        'csv("b.csv", target = "y")',
        loss="bce_with_logits",
        model="input auto\n    out = linear(outputs)",
    )
    assert p.spec.model.output_shape == (1,)
    np.testing.assert_array_equal(p.train.y[:, 0], [0, 1, 1, 0])


def test_regression_target_scaling_in_target_units(files, tmp_path):
    from fcspec import train

    text = spec_text(
        'csv("penguins.csv", target = "body_mass_g", drop = ["year"])',
        loss="mse",
        extra="test = 0.2\n    normalize = standard\n    normalize_target = standard",
    )
    (files / "r.fc").write_text(text)
    spec = compile_source(text, str(files / "r.fc"))
    p = data.prepare(spec, files)
    assert any("left out 2 rows whose target is missing" in n for n in p.notes)
    mean, std = p.schema.target.mean, p.schema.target.std
    assert 4000 < mean < 4400 and 700 < std < 900  # grams
    assert abs(float(p.train.y.mean())) < 1e-5
    summary = train.run(spec, out_dir=tmp_path / "run", quiet=True, base_dir=files)
    from fcspec import interpreter
    from fcspec.io import load_npz

    net = interpreter.Network(p.spec.model, load_npz(tmp_path / "run" / "weights.npz"))
    pred = net.predict(p.test.x) * np.float32(std) + np.float32(mean)
    truth = p.test.y * np.float32(std) + np.float32(mean)
    assert summary["test_mae"] == pytest.approx(float(np.mean(np.abs(pred - truth))), rel=1e-5)
    assert summary["test_mae"] > 50  # grams, not standardized units
    assert (tmp_path / "run" / "schema.json").exists()


def test_text_target_for_regression_is_refused(files):
    with pytest.raises(DataError, match="holds text .*regression loss needs numbers"):
        prepare(files, 'csv("penguins.csv", target = "species")', loss="mse")


# ---------------------------------------------------------------------------
# The language: check reads no data


def test_check_reports_widths_from_the_data():
    r = check_source(spec_text('csv("nowhere.csv", target = "y")'))
    assert not r.errors and r.spec.model.pending and r.spec.model.auto == ("input", "outputs")
    bad = check_source(
        spec_text(
            'dataset("iris")', model="input auto\n    h = linear(outputs)\n    out = linear(3)"
        )
    )
    assert [d.message for d in bad.errors] == [
        "`outputs` is the width of the last `linear` layer only"
    ]
    both = check_source(spec_text('csv("x.csv", target = "y", columns = ["a"], drop = ["b"])'))
    assert [d.message for d in both.errors] == ["give `columns` or `drop`, not both"]
    opts = check_source(spec_text('dataset("iris", drop = ["a"])'))
    assert "applies to the table data sets (penguins)" in opts.errors[0].message


def test_every_source_accepts_auto_widths(tmp_path):
    p = prepare(tmp_path, 'dataset("digits")')
    assert p.spec.model.input_shape == (64,) and p.spec.model.output_shape == (10,)
    ir_text = ir.to_json(p.spec)
    assert '"units": 10' in ir_text


def test_schema_json_round_trips(files):
    p = prepare(files, 'csv("penguins.csv", target = "species")')
    text = p.schema.to_json()
    assert "pickle" not in text and '"Adelie"' in text
    assert tabular.Schema.from_json(text) == p.schema
    with pytest.raises(DataError, match="not a valid fcspec schema"):
        tabular.Schema.from_json('{"format": 1, "columns": [{"name": 1}]}')


# ---------------------------------------------------------------------------
# The schema in the ONNX graph; predict on raw files


def trained(files, tmp_path, train: str, **kw):
    """(resolved spec, run folder, exported model path) after a short real run."""
    from fcspec import onnx_export
    from fcspec import train as ftrain

    text = spec_text(train, **kw)
    (files / "t.fc").write_text(text)
    spec = compile_source(text, str(files / "t.fc"))
    run = tmp_path / "run"
    ftrain.run(spec, out_dir=run, quiet=True, base_dir=files)
    path = onnx_export.export_file(spec, tmp_path / "m.onnx", run / "weights.npz")
    return data.prepare(spec, files), run, path


def interpreter_out(prepared, run, table):
    from fcspec import interpreter
    from fcspec.io import load_npz

    x, _ = tabular.encode(prepared.schema, table)
    net = interpreter.Network(prepared.spec.model, load_npz(run / "weights.npz"))
    return net.predict(prepared.preprocess.apply(x))


def test_table_graph_runs_raw_rows_and_names_classes(files, tmp_path):
    from fcspec import runtime

    p, run, path = trained(
        files, tmp_path, 'csv("penguins.csv", target = "species")', extra="normalize = standard"
    )
    sess = runtime.session(path)
    assert [i.name for i in sess.get_inputs()][:2] == ["island", "bill_length_mm"]
    assert [o.name for o in sess.get_outputs()] == ["output", "class"]
    # raw rows as a user has them: a missing number, a missing and an unseen category
    (files / "new.csv").write_text(
        "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
        "Dream,46.5,17.9,192,3500,female,2007\n"
        "Biscoe,NA,15.0,220,5000,,2009\n"
        "Atlantis,39.1,18.7,181,3750,male,2008\n"
    )
    r = runtime.predict(path, files / "new.csv", output=tmp_path / "pred.csv")
    assert r["unseen"] == {"island": 1} and r["imputed"] == {"bill_length_mm": 1, "sex": 1}
    assert "accuracy" not in r  # no species column
    ours = interpreter_out(p, run, runtime.read_raw(files / "new.csv", p.schema))
    lines = (tmp_path / "pred.csv").read_text().splitlines()
    assert lines[0] == "output_0,output_1,output_2,class"
    names = tabular.class_names(p.schema, ours.argmax(axis=1))
    assert [ln.split(",")[-1] for ln in lines[1:]] == names
    got = np.array([[float(v) for v in ln.split(",")[:3]] for ln in lines[1:]])
    np.testing.assert_allclose(got, ours, rtol=1e-4, atol=1e-5)
    whole = runtime.predict(path, files / "penguins.csv")
    table = runtime.read_raw(files / "penguins.csv", p.schema)
    truth = tabular.encode_target(p.schema, table.column("species"))
    ids = interpreter_out(p, run, table).argmax(axis=1)
    assert (
        whole["accuracy"] == pytest.approx(float(np.mean(ids == truth))) and whole["accuracy"] > 0.5
    )
    assert runtime.verify(
        p.spec, dict(np.load(run / "weights.npz")), p.preprocess, schema=p.schema
    )["ok"]


def test_unknown_error_is_refused_by_predict(files, tmp_path):
    from fcspec import runtime

    _, _, path = trained(
        files, tmp_path, 'csv("penguins.csv", target = "species", unknown = error)'
    )
    (files / "odd.csv").write_text(
        "island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
        "Atlantis,39.1,18.7,181,3750,male,2008\n"
    )
    with pytest.raises(DataError, match="line 2, column 'island': category 'Atlantis'"):
        runtime.predict(path, files / "odd.csv")


def test_numeric_table_keeps_the_single_input(files, tmp_path):
    from fcspec import runtime

    p, run, path = trained(files, tmp_path, 'csv("digits.csv.gz", target = 64, header = false)')
    sess = runtime.session(path)
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("input", ["batch", 64])]
    assert [o.name for o in sess.get_outputs()] == ["output"]  # labels are 0..9 already
    r = runtime.predict(path, files / "digits.csv.gz", target="64")
    assert r["accuracy"] > 0.5


def test_number_labels_come_back_as_numbers(tmp_path):
    from fcspec import runtime

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    lab = np.where(x[:, 0] > 0, 3, 1) + (x[:, 1] > 0)  # labels 1, 2, 3, 4
    (tmp_path / "n.csv").write_text(
        "a,b,y\n" + "".join(f"{u},{v},{w}\n" for (u, v), w in zip(x, lab))
    )
    p, run, path = trained(tmp_path, tmp_path, 'csv("n.csv", target = "y")')
    sess = runtime.session(path)
    assert [(o.name, o.type) for o in sess.get_outputs()] == [
        ("output", "tensor(float)"),
        ("class", "tensor(int64)"),
    ]
    feed = {"input": x[:5].astype(np.float32)}
    out, cls = sess.run(None, feed)
    assert set(cls.tolist()) <= {1, 2, 3, 4}
    assert cls.tolist() == [p.schema.target.classes[i] for i in out.argmax(axis=1)]


def test_regression_graph_outputs_target_units(files, tmp_path):
    from fcspec import runtime

    p, run, path = trained(
        files,
        tmp_path,
        'csv("penguins.csv", target = "body_mass_g", drop = ["year"])',
        loss="mse",
        extra="normalize = standard\n    normalize_target = standard",
    )
    table = runtime.read_raw(files / "penguins.csv", p.schema)
    ours = interpreter_out(p, run, table) * np.float32(p.schema.target.std) + np.float32(
        p.schema.target.mean
    )
    r = runtime.predict(path, files / "penguins.csv", output=tmp_path / "pred.npz")
    with np.load(tmp_path / "pred.npz") as z:
        np.testing.assert_allclose(z["output"], ours, rtol=1e-4, atol=1e-2)
    assert r["mae"] > 50  # grams


# ---------------------------------------------------------------------------
# Malformed rows, located by their line in the file (through `fcspec run`)


def run_cli(*args: str):
    from click.testing import CliRunner

    from fcspec.cli import main

    return CliRunner().invoke(main, list(args))


def bad_rows_spec(tmp_path, train: str, test: str | None = None):
    rows = ["x1,x2,color,label"] + [
        f"{i / 10},{i % 7},{'red' if i % 3 else 'blue'},{'ab'[i % 2]}" for i in range(40)
    ]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    extra = f'test = csv("{test}", target = "label")' if test else ""
    path = tmp_path / "t.fc"
    path.write_text(spec_text(f'csv("{train}", target = "label")', extra=extra))
    return path, rows


@pytest.mark.parametrize("cells", ["0.5,3,red,a,extra", "0.5,3"])
def test_a_row_with_too_many_or_few_cells_names_its_line(tmp_path, monkeypatch, cells):
    # small blocks, so the row is found by pyarrow's threaded reader in a later block;
    # a blank line and a quoted line break before it: lines, not records, are counted
    monkeypatch.setattr(tabular, "BLOCK_BYTES", 1 << 8)
    serial, real = [], tabular._serial_error
    monkeypatch.setattr(tabular, "_serial_error", lambda *a: serial.append(1) or real(*a))
    _, rows = bad_rows_spec(tmp_path, "train.csv")
    lines = rows[:30] + ["", '0.1,2,"dark\nred",a'] + rows[30:35] + [cells] + rows[35:]
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "t.fc"
    spec.write_text(spec_text('csv("ragged.csv", target = "label")'))
    r = run_cli("run", str(spec), "--out", str(tmp_path / "run"), "-q")
    line = 30 + 1 + 2 + 5 + 1  # the header is line 1
    assert (tmp_path / "ragged.csv").read_text().splitlines()[line - 1] == cells
    got = len(cells.split(","))
    assert r.exit_code == 1 and serial == [1], r.output  # the threaded read counted no rows
    assert r.output == (
        f"{spec}:9:13: error: {tmp_path / 'ragged.csv'}:{line}: a row has {got} cells "
        f"but the header has 4: {cells!r}\n"
    )


def test_a_word_in_a_numeric_column_of_the_test_file_names_its_line(tmp_path):
    spec, rows = bad_rows_spec(tmp_path, "train.csv", "test.csv")
    test = rows[:12] + ["0.5,oops,red,a"] + rows[12:20]
    (tmp_path / "test.csv").write_text("\n".join(test) + "\n")
    r = run_cli("run", str(spec), "--out", str(tmp_path / "run"), "-q")
    assert r.exit_code == 1, r.output
    assert r.output == (
        f"{spec}:10:12: error: {tmp_path / 'test.csv'}:13: column 'x2': 'oops' is not a number\n"
    )
    assert not (tmp_path / "run" / "weights.npz").exists()


def test_header_less_rows_are_counted_from_the_first_line(tmp_path):
    (tmp_path / "h.csv").write_text("1,2,0\n3,4,1\n5,6\n7,8,1\n")
    with pytest.raises(DataError) as e:
        tabular.read_csv(tmp_path / "h.csv", header=False)
    assert message(e) == (
        f"error: {tmp_path / 'h.csv'}:3: a row has 2 cells but the first row has 3: '5,6'"
    )


# ---------------------------------------------------------------------------
# `unknown = error` on every path that encodes a table: run, eval, predict (CLI)

ODD_PENGUIN = (
    "species,island,bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g,sex,year\n"
    "Adelie,Biscoe,39.1,18.7,181,3750,male,2007\n"
    "Adelie,Atlantis,39.1,18.7,181,3750,male,2007\n"
)
ATLANTIS = "line 3, column 'island': category 'Atlantis' was not in the training rows"


def penguins_spec(files, unknown: bool, test: str = "test.csv"):
    opt = ", unknown = error" if unknown else ""
    spec = files / "u.fc"
    spec.write_text(
        spec_text(
            f'csv("penguins.csv", target = "species", drop = ["year"]{opt})',
            extra=f'test = csv("{test}", target = "species")',
        )
    )
    return spec


def test_unknown_error_stops_fcspec_run_at_the_test_file(files, tmp_path):
    (files / "test.csv").write_text(ODD_PENGUIN)
    r = run_cli("run", str(penguins_spec(files, True)), "--out", str(tmp_path / "a"), "-q")
    assert r.exit_code == 1 and f"{files / 'test.csv'}: {ATLANTIS}" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "a" / "weights.npz").exists()
    r = run_cli("run", str(penguins_spec(files, False)), "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output  # without it: all zeros, and the run says so
    assert "1 cells hold categories unseen in training, encoded as all zeros (island 1)" in r.output


def test_unknown_error_stops_fcspec_eval(files, tmp_path):
    (files / "test.csv").write_text(ODD_PENGUIN.rsplit("\n", 2)[0] + "\n")  # Biscoe only
    spec = penguins_spec(files, True)
    assert run_cli("run", str(spec), "--out", str(tmp_path / "a"), "-q").exit_code == 0
    weights = str(tmp_path / "a" / "weights.npz")
    assert run_cli("eval", str(spec), "--weights", weights).exit_code == 0
    (files / "test.csv").write_text(ODD_PENGUIN)  # the test file gains an unseen island
    r = run_cli("eval", str(spec), "--weights", weights)
    assert r.exit_code == 1 and f"{files / 'test.csv'}: {ATLANTIS}" in r.output, r.output


@pytest.mark.parametrize("unknown", [True, False])
def test_unknown_error_stops_fcspec_predict_on_a_raw_csv(files, tmp_path, unknown):
    opt = ", unknown = error" if unknown else ""
    _, _, model = trained(files, tmp_path, f'csv("penguins.csv", target = "species"{opt})')
    (files / "odd.csv").write_text(ODD_PENGUIN)
    out = tmp_path / "pred.csv"
    r = run_cli("predict", str(model), str(files / "odd.csv"), "--output", str(out))
    if unknown:
        assert r.exit_code == 1 and f"{files / 'odd.csv'}: {ATLANTIS}" in r.output, r.output
        assert not out.exists()
    else:
        assert r.exit_code == 0 and "unseen categories (all zeros)" in r.output, r.output
        assert out.exists()


# ---------------------------------------------------------------------------
# Long loads show progress on a terminal, and only there


def big_csv(tmp_path) -> tuple[str, int]:
    rows = ["a,b,label"] + [f"{i % 97},{i % 13},{i % 2}" for i in range(20000)]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "t.fc").write_text(
        spec_text('csv("big.csv", target = "label")', model="input auto\n    out = linear(outputs)")
    )
    return str(tmp_path / "t.fc"), (tmp_path / "big.csv").stat().st_size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour differs")
def test_a_terminal_gets_a_progress_bar_while_a_large_file_is_read(tmp_path):
    from conftest import run_on_terminal

    spec, size = big_csv(tmp_path)
    threshold = size // 2  # the file counts as large (PROGRESS_BYTES is 50 MB)
    code = (
        "import sys\nfrom fcspec import tabular\n"
        f"tabular.PROGRESS_BYTES = {threshold}\n"
        "from fcspec.cli import main\n"
        f"sys.argv = ['fcspec', 'run', {spec!r}, '--epochs', '1', '--out', {str(tmp_path / 'run')!r}]\n"
        "main()\n"
    )
    status, text = run_on_terminal([sys.executable, "-c", code])
    assert status == 0, text
    # tqdm's bar over the file's bytes: its name, a percentage and the size in kB
    assert "reading big.csv:" in text and "%|" in text, text
    assert f"/{size / 1000:.0f}k" in text, text


def test_no_progress_bar_without_a_terminal(tmp_path, monkeypatch):
    spec, size = big_csv(tmp_path)
    monkeypatch.setattr(tabular, "PROGRESS_BYTES", size // 2)
    r = run_cli("run", spec, "--epochs", "1", "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    assert "reading big.csv" not in r.output and "epoch 1/1" in r.output


def test_unknown_error_stops_the_python_api_predict_of_a_cli_run(files, tmp_path):
    # fit(DataFrame) in the API is tested in test_api_tables.py; here the run folder of
    # `fcspec run` (its schema.json) loaded with fcspec.load_run
    pd = pytest.importorskip("pandas")
    import warnings

    import fcspec
    from fcspec.api import FcspecWarning

    (files / "test.csv").write_text(ODD_PENGUIN.rsplit("\n", 2)[0] + "\n")  # Biscoe only
    (files / "odd.csv").write_text(ODD_PENGUIN)
    odd = pd.read_csv(files / "odd.csv").drop(columns=["species", "year"])
    for unknown, run in ((True, tmp_path / "a"), (False, tmp_path / "b")):
        spec = penguins_spec(files, unknown)
        assert run_cli("run", str(spec), "--out", str(run), "-q").exit_code == 0
        model = fcspec.load_run(run)
        if unknown:
            with pytest.raises(DataError, match="column 'island': category 'Atlantis' was not"):
                model.predict(odd)
        else:
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                labels = model.predict(odd)
            assert len(labels) == 2 and set(labels) <= {"Adelie", "Chinstrap", "Gentoo"}
            assert any(
                issubclass(w.category, FcspecWarning)
                and "categories unseen in training, encoded as all zeros (island 1)"
                in str(w.message)
                for w in seen
            ), [str(w.message) for w in seen]
