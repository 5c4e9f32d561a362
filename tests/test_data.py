"""fcspec.data: every reader on real files, every DataError provoked and its
message checked, the validation split and the train-only preprocessing.

Fixture files are written into tmp_path by the tests themselves (a tiny IDX
writer lives below); real MNIST is read from /work/shared/data through
FCSPEC_DATA.  Nothing here writes outside tmp_path or touches the user's cache.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA as SHARED  # noqa: E402
from fcspec import data, ir
from fcspec.errors import DataError, Span

HAVE_MNIST = (SHARED / "mnist" / "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    # Never read or fill the user's real cache, never reach a real mirror.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FCSPEC_DATA", raising=False)
    monkeypatch.setenv("FCSPEC_MNIST_MIRRORS", "http://127.0.0.1:9/")


# ---------------------------------------------------------------------------
# Helpers: hand-built IR (the front end is not needed here) and an IDX writer.


def make_spec(
    input_shape=(4,),
    outputs=3,
    task="classification",
    loss="cross_entropy",
    *,
    train=None,
    test=None,
    validate=None,
    scale=1.0,
    normalize="none",
    seed=0,
    path="",
    out_shape=None,
):
    input_shape = tuple(input_shape)
    layers = []
    flat = math.prod(input_shape)
    if len(input_shape) > 1:
        layers.append(ir.Layer("flatten_1", "flatten", {}, input_shape, (flat,), {}))
    out_shape = tuple(out_shape) if out_shape is not None else (outputs,)
    units = math.prod(out_shape)
    layers.append(
        ir.Layer(
            "fc",
            "linear",
            {"units": units, "bias": True, "init": "default"},
            (flat,),
            out_shape,
            {"weight": (units, flat), "bias": (units,)},
        )
    )
    return ir.Spec(
        name="M",
        path=path,
        sha256="0" * 64,
        task=task,
        model=ir.Model("M", input_shape, tuple(layers)),
        loss=ir.Loss(loss, {"reduction": "mean"}),
        optimizer=ir.Optimizer("sgd", {"lr": 0.1}),
        schedule=ir.Schedule("constant", {}),
        regularize=ir.Regularize(),
        data=ir.Data(train=train, test=test, validate=validate, scale=scale, normalize=normalize),
        train=ir.Train(seed=seed),
    )


def npz_src(path, **kw):
    return ir.DataSource("npz", {"path": str(path), "x": "x", "y": "y", **kw})


IDX_CODES = {
    np.dtype("u1"): 0x08,
    np.dtype("i1"): 0x09,
    np.dtype("i2"): 0x0B,
    np.dtype("i4"): 0x0C,
    np.dtype("f4"): 0x0D,
    np.dtype("f8"): 0x0E,
}


def idx_bytes(a: np.ndarray) -> bytes:
    a = np.asarray(a)
    code = IDX_CODES[a.dtype.newbyteorder("=")]
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    raw = idx_bytes(a)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def message(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", "i2", "i4", "f4", "f8"])
def test_idx_round_trip_every_type_code(tmp_path, dtype, gz):
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(5, 3, 2)) * 50).astype(dtype)
    name = "a.idx.gz" if gz else "a.idx"  # the name says nothing: magic bytes decide
    got = data.read_idx(write_idx(tmp_path / name, a, gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, a)


def test_idx_source_images_and_labels(tmp_path):
    x = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)
    y = np.array([1, 0, 2, 1], np.uint8)
    write_idx(tmp_path / "img", x, gz=True)
    write_idx(tmp_path / "lab", y)
    src = ir.DataSource("idx", {"images": "img", "labels": "lab"})
    gx, gy = data.load_source(src, tmp_path)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_idx_errors_name_the_file_and_problem(tmp_path):
    good = idx_bytes(np.zeros((3, 2, 2), np.uint8))
    cases = {
        "missing": (None, "no such file"),
        "magic": (b"PK\x03\x04" + good[4:], "not an IDX file"),
        "header": (good[:6], "truncated IDX header"),
        "body": (good[:-3], "truncated"),
        "extra": (good + b"\0\0", "more data than the header"),
        "gzcut": (gzip.compress(good)[:-12], "corrupt or truncated gzip"),
    }
    for name, (content, problem) in cases.items():
        p = tmp_path / name
        if content is not None:
            p.write_bytes(content)
        with pytest.raises(DataError) as e:
            data.read_idx(p)
        assert str(p) in message(e) and problem in message(e), name
    gzbody = tmp_path / "gzbody"
    gzbody.write_bytes(gzip.compress(good[:-5]))  # a valid gzip of a cut IDX file
    with pytest.raises(DataError, match="holds only"):
        data.read_idx(gzbody)


def test_idx_images_and_labels_swapped(tmp_path):
    write_idx(tmp_path / "img", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "lab", np.zeros(3, np.uint8))
    src = ir.DataSource("idx", {"images": "lab", "labels": "img"})
    with pytest.raises(DataError, match="swapped") as e:
        data.load_source(src, tmp_path)
    assert "lab" in message(e)


# ---------------------------------------------------------------------------
# Real MNIST


@pytest.mark.skipif(not HAVE_MNIST, reason="needs /work/shared/data/mnist")
def test_mnist_source_real_files(monkeypatch):
    monkeypatch.setenv("FCSPEC_DATA", str(SHARED))
    x, y = data.load_source(ir.DataSource("mnist", {"split": "train"}), Path("."))
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and y.tolist()[:5] == [5, 0, 4, 1, 9]
    xt, yt = data.load_source(ir.DataSource("mnist", {"split": "test"}), Path("."))
    assert xt.shape == (10000, 28, 28) and yt.shape == (10000,)
    assert set(np.unique(yt)) == set(range(10)) and xt.max() == 255


@pytest.mark.skipif(not HAVE_MNIST, reason="needs /work/shared/data/mnist")
def test_prepare_mnist_reshapes_to_channels_and_scales(monkeypatch):
    monkeypatch.setenv("FCSPEC_DATA", str(SHARED))
    spec = make_spec(
        (1, 28, 28),
        10,
        train=ir.DataSource("mnist", {"split": "test"}),  # the small split keeps the test fast
        validate=0.1,
        scale=255.0,
    )
    p = data.prepare(spec, Path("."))
    assert p.train.samples.dtype == np.uint8  # kept as bytes, converted batch by batch
    assert p.train.x.shape == (9000, 1, 28, 28) and p.train.x.dtype == np.float32
    assert p.val.x.shape == (1000, 1, 28, 28) and p.val.y.dtype == np.int64
    assert p.train.x.min() == 0.0 and p.train.x.max() == 1.0
    raw, labels = data.load_source(ir.DataSource("mnist", {"split": "test"}), Path("."))
    tr, va = data.split_indices(10000, 0.1, 0)
    np.testing.assert_array_equal(p.train.x[:, 0], raw[tr].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(p.val.y, labels[va])


# ---------------------------------------------------------------------------
# npz


def test_npz_custom_keys(tmp_path):
    x = np.arange(12.0).reshape(4, 3)
    y = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", feats=x, labels=y, other=np.ones(2))
    gx, gy = data.load_source(npz_src("d.npz", x="feats", y="labels"), tmp_path)
    np.testing.assert_array_equal(gx, x)
    np.testing.assert_array_equal(gy, y)


def test_npz_wrong_keys_lists_present(tmp_path):
    np.savez(tmp_path / "d.npz", features=np.ones((2, 2)), target=np.ones(2))
    with pytest.raises(DataError) as e:
        data.load_source(npz_src("d.npz"), tmp_path)
    m = message(e)
    assert "d.npz" in m and "no array named 'x'" in m and "'features'" in m and "'target'" in m
    np.savez(tmp_path / "e.npz", x=np.ones((2, 2)))
    with pytest.raises(DataError, match="no array named 'y'.*'x'"):
        data.load_source(npz_src("e.npz"), tmp_path)


def test_npz_unreadable_files(tmp_path):
    np.savez(tmp_path / "ok.npz", x=np.ones((50, 20)), y=np.ones(50))
    whole = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    np.save(tmp_path / "single.npy", np.ones(3))
    (tmp_path / "single.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.ones(2))
    cases = {
        "missing.npz": "no such file",
        "cut.npz": "not a valid .npz file",
        "text.npz": "not a valid .npz file",
        "single.npz": "single-array .npy file",
        "obj.npz": "array 'x' cannot be read",
    }
    for name, problem in cases.items():
        with pytest.raises(DataError) as e:
            data.load_source(npz_src(name), tmp_path)
        assert name in message(e) and problem in message(e), (name, message(e))
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DataError, match="not a file"):
        data.load_source(npz_src("dir.npz"), tmp_path)


def test_npz_corrupt_member(tmp_path):
    x = np.arange(4000, dtype=np.float64).reshape(1000, 4)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(1000))
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    i = raw.index(x[500].tobytes())  # stored uncompressed: flip a data byte, the CRC catches it
    raw[i] ^= 0xFF
    (tmp_path / "d.npz").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.npz: array 'x' is corrupt"):
        data.load_source(npz_src("d.npz"), tmp_path)


# ---------------------------------------------------------------------------
# CSV


def test_csv_target_by_name_other_columns_are_features(tmp_path):
    (tmp_path / "t.csv").write_text("a,label,b\n1,0,2.5\n3,2,-4e1\n\n")
    x, y = data.load_source(ir.DataSource("csv", {"path": "t.csv", "target": "label"}), tmp_path)
    np.testing.assert_array_equal(x, [[1, 2.5], [3, -40]])
    np.testing.assert_array_equal(y, [0, 2])
    x2, y2 = data.read_csv(tmp_path / "t.csv")  # no target: unlabeled prediction data
    assert x2.shape == (2, 3) and y2 is None


def test_csv_errors(tmp_path):
    files = {
        "empty.csv": ("", "label", "empty file"),
        "header.csv": ("a,label\n", "label", "no data rows"),
        "ragged.csv": ("a,label\n1,0\n1,2,3\n", "label", "a row has 3 cells but the header has 2"),
        "target.csv": (
            "a,b\n1,2\n",
            "label",
            "no target column named 'label'; the columns are 'a', 'b'",
        ),
    }
    for name, (text, target, problem) in files.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as e:
            data.load_source(ir.DataSource("csv", {"path": name, "target": target}), tmp_path)
        assert name in message(e) and problem in message(e), (name, message(e))
    # the numbers-only reader (prediction files of numeric models) names the cell
    (tmp_path / "cell.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'oops' is not a number"):
        data.read_csv(tmp_path / "cell.csv", "label")
    (tmp_path / "bin.csv").write_bytes(b"a,b\n\xff\xfe,\x81garbage\n")
    with pytest.raises(DataError, match=r"bin\.csv: column 'a' is not UTF-8 text"):
        data.read_csv(tmp_path / "bin.csv")


# ---------------------------------------------------------------------------
# Embedded data sets


@pytest.mark.parametrize(
    "name,rows,width",
    [("digits", 1797, 64), ("iris", 150, 4), ("breast_cancer", 569, 30), ("diabetes", 442, 10)],
)
def test_embedded_datasets(name, rows, width):
    x, y = data.load_source(ir.DataSource("dataset", {"name": name}), Path("/nonexistent"))
    assert x.shape == (rows, width) and y.shape == (rows,)


def test_unknown_dataset():
    with pytest.raises(DataError, match="'mnist2' is not embedded.*'iris'"):
        data.load_source(ir.DataSource("dataset", {"name": "mnist2"}), Path("."))


def test_errors_point_at_the_fc_line(tmp_path):
    span = Span("net.fc", 12, 13, 12, 40)
    src = ir.DataSource("npz", {"path": "nope.npz", "x": "x", "y": "y"}, span)
    with pytest.raises(DataError) as e:
        data.load_source(src, tmp_path)
    assert message(e).startswith("net.fc:12:13: error:") and "nope.npz: no such file" in message(e)


# ---------------------------------------------------------------------------
# Resource sanity


def test_memory_estimate_refuses_before_reading(tmp_path, monkeypatch):
    write_idx(tmp_path / "img", np.zeros((1000, 28, 28), np.uint8))
    np.savez(tmp_path / "d.npz", x=np.zeros((1000, 100)), y=np.zeros(1000))
    monkeypatch.setattr(data, "available_memory", lambda: 2_000_000)
    with pytest.raises(DataError) as e:
        data.read_idx(tmp_path / "img")
    # 784000 bytes stored + 3136000 for the float32 copy
    assert (
        "img" in message(e)
        and "about 3.74 MB" in message(e)
        and "only 1.91 MB is available" in message(e)
    )
    monkeypatch.setattr(data, "available_memory", lambda: 1_000_000)
    # 800000 bytes of float64 + 400000 for the float32 copy
    with pytest.raises(
        DataError, match=r"d\.npz: array 'x' .*about 1.14 MB of memory, but only 976.56 KB"
    ):
        data.load_source(npz_src("d.npz"), tmp_path)


def test_memory_check_falls_back_without_meminfo(tmp_path, monkeypatch):
    assert data.available_memory() is None or data.available_memory() > 0
    monkeypatch.setattr(data, "MEMINFO", str(tmp_path / "no-meminfo"))
    assert data.available_memory() is None
    data.check_memory(10**15, "anything")  # unknown memory: no refusal


def test_format_bytes():
    from fcspec.describe import format_bytes  # the one formatter of sizes

    assert format_bytes(512) == "512 B"
    assert format_bytes(3_136_000) == "2.99 MB"
    assert format_bytes(47_040_016_000) == "43.81 GB"


# ---------------------------------------------------------------------------
# prepare: shapes, types and checks by task


def save(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return npz_src(name)


def test_flat_rows_reshaped_to_input_shape():
    spec = make_spec((1, 8, 8), 10, train=ir.DataSource("dataset", {"name": "digits"}), scale=16.0)
    p = data.prepare(spec, Path("."))
    raw, _ = data.load_source(ir.DataSource("dataset", {"name": "digits"}), Path("."))
    assert p.train.x.shape == (1797, 1, 8, 8) and p.train.x.dtype == np.float32
    np.testing.assert_array_equal(
        p.train.x.reshape(1797, 64), raw.astype(np.float32) / np.float32(16)
    )
    assert p.train.y.dtype == np.int64 and p.val is None and p.test is None


def test_width_mismatch_says_both(tmp_path):
    spec = make_spec((5,), 3, train=ir.DataSource("dataset", {"name": "iris"}))
    with pytest.raises(DataError) as e:
        data.prepare(spec, tmp_path)
    m = message(e)
    assert "iris" in m and "shape [4] (4 values)" in m and "input is [5] (5 values)" in m


def test_nan_and_inf_inputs(tmp_path):
    x = np.ones((6, 2))
    x[3, 1] = np.nan
    x[4, 0] = np.inf
    x[4, 1] = 1e300  # finite in float64, infinite in float32
    src = save(tmp_path, x=x, y=np.zeros(6, int))
    with pytest.raises(DataError) as e:
        data.prepare(make_spec((2,), 2, train=src), tmp_path)
    assert "d.npz" in message(
        e
    ) and "3 NaN or infinite input values in 2 samples (first in row 3" in message(e)


def test_class_labels_checked(tmp_path):
    x = np.zeros((4, 2))
    cases = [
        (np.array([0, 1, 3, 5]), "label 3 in row 2 is outside [0, 3) (2 such labels"),
        (np.array([0, -1, 1, 1]), "label -1 in row 1 is outside [0, 3)"),
        (np.array([0.0, 1.0, 1.5, 2.0]), "label 1.5 in row 2 is not a whole number"),
        (np.array([0.0, np.nan, 1.0, 2.0]), "label nan in row 1 is not a whole number"),
        (np.eye(4, 3), "targets have shape [4, 3], but a classifier takes one class id"),
        (np.array(["a", "b", "c", "d"]), "are not numbers"),
    ]
    for y, problem in cases:
        src = save(tmp_path, x=x, y=y)
        with pytest.raises(DataError) as e:
            data.prepare(make_spec((2,), 3, train=src), tmp_path)
        assert "d.npz" in message(e) and problem in message(e), (y, message(e))
    # whole-number floats (as every CSV label is) and [N, 1] columns are class ids
    src = save(tmp_path, x=x, y=np.array([[0.0], [2.0], [1.0], [1.0]]))
    p = data.prepare(make_spec((2,), 3, train=src), tmp_path)
    assert p.train.y.dtype == np.int64 and p.train.y.tolist() == [0, 2, 1, 1]


def test_binary_targets(tmp_path):
    x = np.zeros((3, 2))
    spec = lambda src: make_spec((2,), 1, "binary", "bce", train=src)
    p = data.prepare(spec(save(tmp_path, x=x, y=np.array([0, 1, 1]))), tmp_path)
    assert p.train.y.dtype == np.float32 and p.train.y.shape == (3, 1)
    with pytest.raises(DataError, match=r"target 2 in row 1 is outside \[0, 1\]"):
        data.prepare(spec(save(tmp_path, x=x, y=np.array([0, 2, 1]))), tmp_path)


def test_regression_targets(tmp_path):
    x = np.zeros((3, 2))
    p = data.prepare(
        make_spec((2,), 1, "regression", "mse", train=save(tmp_path, x=x, y=np.arange(3.0))),
        tmp_path,
    )
    assert p.train.y.shape == (3, 1) and p.train.y.dtype == np.float32
    p = data.prepare(
        make_spec((2,), 2, "regression", "mse", train=save(tmp_path, x=x, y=np.ones((3, 2)))),
        tmp_path,
    )
    assert p.train.y.shape == (3, 2)
    with pytest.raises(DataError, match=r"each target has shape \[\] but the model outputs \[2\]"):
        data.prepare(
            make_spec((2,), 2, "regression", "mse", train=save(tmp_path, x=x, y=np.ones(3))),
            tmp_path,
        )
    with pytest.raises(DataError, match=r"1 NaN or infinite targets \(first in row 2"):
        y = np.array([1.0, 2.0, np.inf])
        data.prepare(
            make_spec((2,), 1, "regression", "mse", train=save(tmp_path, x=x, y=y)), tmp_path
        )


def test_distribution_targets(tmp_path):
    x = np.zeros((2, 2))
    good = np.array([[0.25, 0.75], [1.0, 0.0]])
    p = data.prepare(
        make_spec((2,), 2, "distribution", "kl_div", train=save(tmp_path, x=x, y=good)), tmp_path
    )
    assert p.train.y.dtype == np.float32 and p.train.y.shape == (2, 2)
    with pytest.raises(
        DataError, match="target row 1 is not a probability distribution.*sums to 1.5"
    ):
        y = np.array([[0.5, 0.5], [1.0, 0.5]])
        data.prepare(
            make_spec((2,), 2, "distribution", "kl_div", train=save(tmp_path, x=x, y=y)), tmp_path
        )


def test_row_count_mismatch_and_empty(tmp_path):
    with pytest.raises(DataError, match=r"d\.npz: 4 samples but 3 targets"):
        data.prepare(
            make_spec((2,), 2, train=save(tmp_path, x=np.zeros((4, 2)), y=np.zeros(3))), tmp_path
        )
    with pytest.raises(DataError, match=r"d\.npz: empty data"):
        data.prepare(
            make_spec((2,), 2, train=save(tmp_path, x=np.zeros((0, 2)), y=np.zeros(0))), tmp_path
        )


def test_training_needs_targets(tmp_path):
    (tmp_path / "u.csv").write_text("a,b\n1,2\n")
    spec = make_spec((2,), 2, train=ir.DataSource("csv", {"path": "u.csv", "target": None}))
    with pytest.raises(DataError, match=r"u\.csv.*no targets"):
        data.prepare(spec, tmp_path)


def test_no_data_section():
    spec = make_spec()
    spec = ir.Spec(**{**{f: getattr(spec, f) for f in spec.__slots__}, "data": None})
    with pytest.raises(DataError, match="no training data"):
        data.prepare(spec)


def test_paths_relative_to_the_spec_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    src = save(tmp_path / "sub", x=np.ones((2, 2)), y=np.zeros(2, int))
    spec = make_spec((2,), 2, train=src, path=str(tmp_path / "sub" / "net.fc"))
    assert len(data.prepare(spec).train) == 2  # base_dir defaults to the .fc file's folder


# ---------------------------------------------------------------------------
# Validation split


def test_validation_split_is_seeded_and_sized_like_sklearn(tmp_path):
    n = 103
    x = np.arange(n * 2, dtype=np.float64).reshape(n, 2)
    src = save(tmp_path, x=x, y=np.arange(n) % 3)
    a = data.prepare(make_spec((2,), 3, train=src, validate=0.2, seed=7), tmp_path)
    b = data.prepare(make_spec((2,), 3, train=src, validate=0.2, seed=7), tmp_path)
    c = data.prepare(make_spec((2,), 3, train=src, validate=0.2, seed=8), tmp_path)
    assert len(a.val) == math.ceil(0.2 * n) == 21 and len(a.train) == n - 21
    np.testing.assert_array_equal(a.train.x, b.train.x)
    np.testing.assert_array_equal(a.val.y, b.val.y)
    assert not np.array_equal(a.val.x, c.val.x)
    rows_t = a.train.x[:, 0] / 2
    rows_v = a.val.x[:, 0] / 2
    assert sorted(np.concatenate([rows_t, rows_v]).tolist()) == list(range(n))
    np.testing.assert_array_equal(a.val.y, (rows_v % 3).astype(np.int64))  # x and y stay paired
    # sklearn's ShuffleSplit: RandomState(seed).permutation, the first ceil(n*f) held out
    perm = np.random.RandomState(7).permutation(n)
    np.testing.assert_array_equal(rows_v, perm[:21])
    np.testing.assert_array_equal(rows_t, perm[21:])


def test_validation_split_too_few_rows(tmp_path):
    src = save(tmp_path, x=np.ones((1, 2)), y=np.zeros(1, int))
    with pytest.raises(DataError, match=r"too few rows for validate = 0.5: 1 rows leave 0"):
        data.prepare(make_spec((2,), 2, train=src, validate=0.5), tmp_path)
    with pytest.raises(DataError, match="strictly between 0 and 1"):
        data.split_indices(10, 1.0, 0)


def test_validation_and_test_sources(tmp_path):
    tr = save(tmp_path, "tr.npz", x=np.ones((5, 2)), y=np.zeros(5, int))
    va = save(tmp_path, "va.npz", x=np.ones((3, 2)), y=np.ones(3, int))
    te = save(tmp_path, "te.npz", x=np.ones((2, 2)), y=np.array([0, 5]))
    with pytest.raises(DataError, match=r"te\.npz: label 5 in row 1"):
        data.prepare(make_spec((2,), 2, train=tr, validate=va, test=te), tmp_path)
    te = save(tmp_path, "te.npz", x=np.ones((2, 2)), y=np.array([0, 1]))
    p = data.prepare(make_spec((2,), 2, train=tr, validate=va, test=te), tmp_path)
    assert (len(p.train), len(p.val), len(p.test)) == (5, 3, 2)


# ---------------------------------------------------------------------------
# Preprocessing: statistics from the training split only


def test_standard_statistics_from_train_only(tmp_path):
    rng = np.random.default_rng(1)
    n = 200
    x = rng.normal(size=(n, 3)) * [1.0, 5.0, 0.0] + [0.0, 10.0, 4.0]  # third feature constant
    tr, va = data.split_indices(n, 0.25, 3)
    x[va] += 1000.0  # the held-out rows would move every statistic a lot
    src = save(tmp_path, x=x, y=np.zeros(n, int))
    te = save(tmp_path, "te.npz", x=x[:7] * 100, y=np.zeros(7, int))
    spec = make_spec(
        (3,), 2, train=src, test=te, validate=0.25, scale=2.0, normalize="standard", seed=3
    )
    p = data.prepare(spec, tmp_path)
    xs = x[tr].astype(np.float32) / np.float32(2)
    np.testing.assert_allclose(p.preprocess.shift, xs.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(
        p.preprocess.divisor[:2], xs.astype(np.float64).std(0)[:2], rtol=1e-6
    )
    assert p.preprocess.divisor[2] == 1.0  # std 0 -> 1
    full = x.astype(np.float32) / np.float32(2)
    assert (np.abs(p.preprocess.shift - full.mean(0)) > 100).all()  # the whole file would differ
    np.testing.assert_allclose(p.train.x.mean(0)[:2], 0, atol=1e-4)
    np.testing.assert_allclose(p.train.x.std(0)[:2], 1, atol=1e-4)
    assert abs(p.val.x[:, 0].mean()) > 1e-3  # validation rows use train statistics
    expect = (x[va].astype(np.float32) / np.float32(2) - p.preprocess.shift) / p.preprocess.divisor
    np.testing.assert_array_equal(p.val.x, expect)
    np.testing.assert_array_equal(p.test.x, p.preprocess.apply(x[:7] * 100))


def test_minmax_statistics(tmp_path):
    x = np.array([[0.0, 5.0, 1.0], [10.0, 7.0, 1.0], [4.0, 6.0, 1.0]])
    src = save(tmp_path, x=x, y=np.zeros(3, int))
    p = data.prepare(make_spec((3,), 2, train=src, normalize="minmax"), tmp_path)
    np.testing.assert_array_equal(p.preprocess.shift, [0, 5, 1])
    np.testing.assert_array_equal(p.preprocess.divisor, [10, 2, 1])
    np.testing.assert_allclose(p.train.x, [[0, 0, 0], [1, 1, 0], [0.4, 0.5, 0]], rtol=1e-6)


def test_preprocess_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    pre = data.Preprocess.fit(rng.normal(size=(20, 1, 2, 3)) * 50, scale=255, normalize="standard")
    pre.save(tmp_path / "preprocess.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["preprocess.npz"]  # no temp file left
    back = data.Preprocess.load(tmp_path / "preprocess.npz", input_shape=(1, 2, 3))
    assert back.normalize == "standard" and back.scale == np.float32(255)
    np.testing.assert_array_equal(back.shift, pre.shift)
    np.testing.assert_array_equal(back.divisor, pre.divisor)
    x = rng.normal(size=(4, 6))  # flat rows are reshaped
    np.testing.assert_array_equal(back.apply(x), pre.apply(x.reshape(4, 1, 2, 3)))
    assert data.Preprocess.identity((3,)).is_identity and not back.is_identity


def test_preprocess_load_errors(tmp_path):
    np.savez(tmp_path / "keys.npz", scale=np.float32(1), shift=np.zeros(3))
    np.savez(tmp_path / "shape.npz", scale=np.float32(1), shift=np.zeros(3), divisor=np.ones(2))
    np.savez(tmp_path / "zero.npz", scale=np.float32(1), shift=np.zeros(3), divisor=np.zeros(3))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    cases = {
        "keys.npz": "no array named 'divisor'; the file holds 'scale', 'shift'",
        "shape.npz": "'shift' has shape [3] but 'divisor' [2]",
        "zero.npz": "'divisor' contains zeros",
        "junk.npz": "not a valid .npz file",
        "gone.npz": "no such file",
    }
    for name, problem in cases.items():
        with pytest.raises(DataError) as e:
            data.Preprocess.load(tmp_path / name)
        assert name in message(e) and problem in message(e), (name, message(e))
    data.Preprocess.identity((3,)).save(tmp_path / "p.npz")
    with pytest.raises(DataError, match=r"samples of shape \[3\], but the model's input is \[4\]"):
        data.Preprocess.load(tmp_path / "p.npz", input_shape=(4,))


def test_preprocess_matches_onnxruntime_bit_for_bit():
    # The exporter bakes in Div, Sub, Div: the interpreter must see the same bits.
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    x = (rng.random((64, 5)) * 255).astype(np.float32)
    pre = data.Preprocess.fit(x[:40], scale=255, normalize="standard")
    inits = [
        numpy_helper.from_array(np.asarray(pre.scale, np.float32), "scale"),
        numpy_helper.from_array(pre.shift, "shift"),
        numpy_helper.from_array(pre.divisor, "divisor"),
    ]
    nodes = [
        helper.make_node("Div", ["x", "scale"], ["a"]),
        helper.make_node("Sub", ["a", "shift"], ["b"]),
        helper.make_node("Div", ["b", "divisor"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pre",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"x": x})[0]
    np.testing.assert_array_equal(pre.apply(x), got)


# ---------------------------------------------------------------------------
# load_file (fcspec predict DATA)


def test_load_file_formats(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((3, 2)))
    x, y = data.load_file(tmp_path / "a.npz")
    assert x.shape == (3, 2) and y is None
    np.savez(tmp_path / "b.npz", x=np.ones((3, 2)), y=np.arange(3))
    assert data.load_file(tmp_path / "b.npz")[1].tolist() == [0, 1, 2]
    (tmp_path / "c.csv").write_text("f1,f2,t\n1,2,1\n3,4,0\n")
    x, y = data.load_file(tmp_path / "c.csv", target="t")
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [1, 0]
    assert data.load_file(tmp_path / "c.csv")[0].shape == (2, 3)
    write_idx(tmp_path / "imgs-idx3-ubyte.gz", np.zeros((3, 2, 2), np.uint8), gz=True)
    write_idx(tmp_path / "labs-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    x, y = data.load_file(tmp_path / "imgs-idx3-ubyte.gz", labels="labs-idx1-ubyte")  # a sibling
    assert x.shape == (3, 2, 2) and y.tolist() == [1, 2, 3]
    assert data.load_file(tmp_path / "imgs-idx3-ubyte.gz")[1] is None


def test_load_file_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt: unknown data format"):
        data.load_file(tmp_path / "notes.txt")
    with pytest.raises(DataError, match=r"missing\.npz: no such file"):
        data.load_file(tmp_path / "missing.npz")
    np.savez(tmp_path / "xy.npz", x=np.ones((3, 2)), y=np.ones(4))
    with pytest.raises(DataError, match=r"xy\.npz: 3 samples but 4 targets"):
        data.load_file(tmp_path / "xy.npz")
    np.savez(tmp_path / "noy.npz", feats=np.ones((3, 2)))
    with pytest.raises(DataError, match=r"noy\.npz: no array named 'x'; the file holds 'feats'"):
        data.load_file(tmp_path / "noy.npz")
    with pytest.raises(DataError, match="labels= only applies to IDX"):
        data.load_file(tmp_path / "xy.npz", labels="l")


def test_inputs_for_prediction_use_the_same_checks():
    spec = make_spec((1, 2, 2), 3)
    got = data.as_inputs(spec, np.arange(8, dtype=np.uint8).reshape(2, 4), where="p.npz")
    assert got.shape == (2, 1, 2, 2) and got.dtype == np.float32
    with pytest.raises(DataError, match=r"p\.npz: each sample has shape \[3\]"):
        data.as_inputs(spec, np.zeros((2, 3)), where="p.npz")


# ---------------------------------------------------------------------------
# Through the real front end: a .fc file naming files beside it


def test_prepare_from_a_spec_file(tmp_path):
    check = pytest.importorskip("fcspec.check")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 3))
    y = rng.integers(0, 4, size=40)
    np.savez(tmp_path / "train.npz", feats=x, labels=y)
    lines = ["f0,f1,f2,label"] + [",".join(map(str, [*r, c])) for r, c in zip(x[:6], y[:6])]
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "net.fc").write_text(
        "model Net {\n    input [3]\n    out = linear(4)\n}\n"
        "loss cross_entropy\noptimizer sgd(lr = 0.1)\n"
        'data {\n    train = npz("train.npz", x = "feats", y = "labels")\n'
        '    test = csv("test.csv", target = "label")\n'
        "    validate = 0.25\n    normalize = minmax\n}\n"
    )
    spec = check.load_spec(tmp_path / "net.fc")
    p = data.prepare(spec, tmp_path)
    assert (len(p.train), len(p.val), len(p.test)) == (30, 10, 6)
    np.testing.assert_array_equal(p.test.y, y[:6])
    np.testing.assert_allclose(p.test.x, p.preprocess.apply(x[:6]), rtol=1e-6)
    (tmp_path / "train.npz").unlink()
    with pytest.raises(DataError) as e:
        data.prepare(spec, tmp_path)
    assert "net.fc:8:13: error:" in message(e) and "train.npz: no such file" in message(e)
