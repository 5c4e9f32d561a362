"""The training loop: determinism, resume, refusals, divergence, artifacts, io.

Numbers are checked against oracles: a second run, a run resumed from a
checkpoint, the loss recomputed on the data with the interpreter, a run
stopped at the best epoch.  Specs are real `.fc` sources compiled by the front
end; `write_spec` is shared with test_interrupt.py and test_train_torch.py.
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fcspec import data, ir, train
from fcspec import io as fio
from fcspec.check import load_spec
from fcspec.errors import DataError, FcspecError, TrainingError

DIGITS = """
model Digits {{
    input [64]
    fc1 = linear({hidden}) -> relu
    {dropout}
    fc2 = linear(10)
}}
loss cross_entropy
optimizer {optimizer}
schedule {schedule}
data {{ train = dataset("digits")  validate = 0.2  scale = 16 }}
train {{ epochs = {epochs}  batch = {batch}  shuffle = {shuffle}  seed = {seed}  {extra} }}
"""


def write_spec(
    folder: Path,
    *,
    name: str = "digits.fc",
    hidden: int = 16,
    dropout: str = "",
    optimizer: str = "sgd(lr = 0.1, momentum = 0.9)",
    schedule: str = "step(step_size = 2, gamma = 0.5)",
    epochs: int = 4,
    batch: str = "32",
    shuffle: str = "true",
    seed: int = 0,
    extra: str = "",
) -> Path:
    """A digits classifier spec written to `folder/name`; returns its path."""
    path = Path(folder) / name
    path.write_text(
        DIGITS.format(
            hidden=hidden,
            dropout=dropout,
            optimizer=optimizer,
            schedule=schedule,
            epochs=epochs,
            batch=batch,
            shuffle=shuffle,
            seed=seed,
            extra=extra,
        )
    )
    return path


def weights(path: Path) -> dict[str, np.ndarray]:
    return fio.load_npz(path, "weights")


def assert_same_weights(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == np.float32
        assert np.array_equal(a[k], b[k]), k


def metrics(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def strip_time(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# ---------------------------------------------------------------------------
# io


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "f.txt"
    fio.atomic_write_text(p, "old")
    fio.atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    fio.atomic_write_bytes(p, b"good")

    def boom(*a):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        fio.atomic_write_bytes(p, b"bad")
    assert p.read_bytes() == b"good"
    assert sorted(os.listdir(tmp_path)) == ["f.bin"]


def test_save_and_load_npz_round_trip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "fc1.weight": rng.standard_normal((3, 4)).astype(np.float32),
        "fc1.bias": np.array([np.nan, np.inf, -0.0], np.float32),
        "step": np.array(7),
    }
    fio.save_npz(tmp_path / "a.npz", arrays)
    back = fio.load_npz(tmp_path / "a.npz")
    assert sorted(back) == sorted(arrays)
    for k in arrays:
        assert back[k].dtype == arrays[k].dtype
        assert arrays[k].tobytes() == back[k].tobytes()


@pytest.mark.parametrize(
    "content,needle",
    [
        (None, "not found"),
        (b"garbage that is not a zip", "not a valid .npz file (not a zip archive)"),
        ("truncated", "not a valid .npz"),
        ("pickled", "Python objects"),
    ],
)
def test_load_npz_failures_are_data_errors_naming_the_file(tmp_path, content, needle):
    p = tmp_path / "w.npz"
    if content == "truncated":
        fio.save_npz(p, {"a": np.zeros(100)})
        p.write_bytes(p.read_bytes()[:60])
    elif content == "pickled":
        np.savez(p, a=np.array([{"x": 1}], dtype=object))
    elif content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError) as e:
        fio.load_npz(p, "weights")
    assert str(p) in str(e.value) and needle in str(e.value)


# ---------------------------------------------------------------------------
# checkpoint encoding


def test_sumsq_flags_exactly_the_non_finite_vectors():
    big = np.full(1000, 3e38, np.float32)  # finite, but its float32 sum of squares overflows
    assert math.isfinite(train._sumsq(big))
    assert train._sumsq(big) == pytest.approx(1000 * 3e38**2, rel=1e-6)
    for bad in (np.inf, -np.inf, np.nan):
        v = np.ones(1000, np.float32)
        v[517] = bad
        assert not math.isfinite(train._sumsq(v))
        big[3] = bad
        assert not math.isfinite(train._sumsq(big))
        big[3] = 3e38


def test_state_packing_round_trips_types_and_bits():
    state = {
        "kind": np.array("adam"),
        "step": np.array(3, np.int64),
        "m": np.arange(5, dtype=np.float32) / 3,
        "lr": 0.1 / 3,
        "best": float("inf"),
        "nested": {"betas": (0.9, 0.999), 1: [np.float32(0.5), None, True, "x"]},
    }
    arrays: dict = {}
    packed = train._pack(state, "optimizer", arrays)
    buf = fio.npz_bytes(arrays)
    import io as _io

    with np.load(_io.BytesIO(buf), allow_pickle=False) as z:
        loaded = {k: z[k] for k in z.files}
    back = train._unpack(json.loads(json.dumps(packed)), loaded)
    assert back["lr"] == state["lr"] and back["best"] == float("inf")
    assert back["nested"]["betas"] == (0.9, 0.999)
    assert back["nested"][1][0].dtype == np.float32 and back["nested"][1][1:] == [None, True, "x"]
    assert back["m"].tobytes() == state["m"].tobytes() and str(back["kind"]) == "adam"


def test_rng_state_round_trip_continues_the_same_stream():
    rng = np.random.default_rng(123)
    rng.permutation(10)
    rng.random()  # leaves a buffered half word in some generators: the state must carry it
    again = train._rng_from_array(train._rng_to_array(rng))
    assert np.array_equal(rng.permutation(1000), again.permutation(1000))
    assert rng.integers(0, 2**63, 8).tolist() == again.integers(0, 2**63, 8).tolist()


# ---------------------------------------------------------------------------
# determinism and resume


def test_same_seed_gives_identical_weights_and_metrics(tmp_path):
    spec = load_spec(write_spec(tmp_path, dropout="drop = dropout(0.2)", epochs=2))
    train.run(spec, out_dir=tmp_path / "a", quiet=True)
    train.run(spec, out_dir=tmp_path / "b", quiet=True)
    assert_same_weights(weights(tmp_path / "a/weights.npz"), weights(tmp_path / "b/weights.npz"))
    assert strip_time(metrics(tmp_path / "a")) == strip_time(metrics(tmp_path / "b"))
    train.run(spec, out_dir=tmp_path / "c", seed=1, quiet=True)
    other = weights(tmp_path / "c/weights.npz")
    assert not np.array_equal(
        other["fc1.weight"], weights(tmp_path / "a/weights.npz")["fc1.weight"]
    )


RESUME_CASES = {
    "sgd_step_dropout": dict(dropout="drop = dropout(0.2)"),
    "adam_cosine": dict(optimizer="adam(lr = 0.01)", schedule="cosine(t_max = 3)"),
    "plateau_noshuffle": dict(
        optimizer="sgd(lr = 0.05)",
        schedule="plateau(patience = 0, factor = 0.5)",
        shuffle="false",
        batch="50",
    ),
    "early_stop_fullbatch": dict(
        optimizer="rmsprop(lr = 0.01)",
        batch="full",
        extra="early_stop(monitor = val_loss, patience = 10, restore_best = true)",
    ),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_ends_bit_for_bit_where_an_uninterrupted_run_ends(tmp_path, case):
    spec = load_spec(write_spec(tmp_path, **RESUME_CASES[case]))
    full = train.run(spec, out_dir=tmp_path / "full", quiet=True)
    train.run(spec, out_dir=tmp_path / "part", epochs=2, quiet=True)
    assert json.loads((tmp_path / "part/summary.json").read_text())["epochs"] == 2
    resumed = train.run(spec, resume=tmp_path / "part/checkpoint.npz", quiet=True)
    assert_same_weights(
        weights(tmp_path / "full/weights.npz"), weights(tmp_path / "part/weights.npz")
    )
    assert strip_time(metrics(tmp_path / "full")) == strip_time(metrics(tmp_path / "part"))
    drop = {"seconds"}
    assert {k: v for k, v in full.items() if k not in drop} == {
        k: v for k, v in resumed.items() if k not in drop
    }


COMPACT_SPEC = """
model M {{
    input [64]
    fc1 = linear(16) -> relu
    fc2 = linear(10)
}}
loss cross_entropy
optimizer adam(lr = 0.01)
data {{ train = npz("{file}")  validate = 0.2  scale = 16  normalize = {normalize} }}
train {{ epochs = 2  batch = {batch}  shuffle = {shuffle}  seed = 3 }}
"""


@pytest.mark.parametrize(
    "batch,shuffle,normalize",
    [
        ("32", "true", "standard"),
        ("50", "false", "minmax"),
        ("full", "true", "none"),
        ("full", "false", "none"),
    ],
)
def test_byte_samples_train_exactly_like_their_float32_copy(tmp_path, batch, shuffle, normalize):
    # digits are bytes: the training split keeps them so and converts each batch as it is
    # taken (a quarter of the memory); the same data stored as float32 takes the other path.
    x, y = data.load_source(ir.DataSource("dataset", {"name": "digits"}), Path("."))
    assert x.dtype == np.uint8
    np.savez(tmp_path / "u8.npz", x=x, y=y)
    np.savez(tmp_path / "f32.npz", x=x.astype(np.float32), y=y)
    runs = {}
    for name in ("u8", "f32"):
        path = tmp_path / f"{name}.fc"
        path.write_text(
            COMPACT_SPEC.format(
                file=f"{name}.npz", normalize=normalize, batch=batch, shuffle=shuffle
            )
        )
        spec = load_spec(path)
        prepared = data.prepare(spec)
        assert (prepared.train.pre is not None) == (name == "u8")
        train.run(spec, out_dir=tmp_path / name, quiet=True)
        runs[name] = prepared
    assert runs["u8"].train.samples.dtype == np.uint8
    np.testing.assert_array_equal(runs["u8"].train.x, runs["f32"].train.x)
    np.testing.assert_array_equal(runs["u8"].val.x, runs["f32"].val.x)
    assert_same_weights(weights(tmp_path / "u8/weights.npz"), weights(tmp_path / "f32/weights.npz"))
    assert strip_time(metrics(tmp_path / "u8")) == strip_time(metrics(tmp_path / "f32"))


def test_compact_split_rows_are_the_preprocessed_rows(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (37, 6), dtype=np.uint8)
    pre = data.Preprocess.fit(x, scale=255.0, normalize="standard")
    split = data.Split(x, np.zeros(37, np.int64), pre)
    dense = pre.apply(x)
    assert split.x.dtype == np.float32 and np.array_equal(split.x, dense)
    out = np.empty((10, 6), np.float32)
    idx = np.array([36, 0, 5, 5, 17, 2, 30, 1, 9, 11])
    assert split.rows(idx, out) is out and np.array_equal(out, dense[idx])
    assert np.array_equal(split.rows(idx[:3], out[:3]), dense[idx[:3]])  # a short last batch
    assert np.array_equal(split.rows(slice(4, 14), out), dense[4:14])
    assert split.dense().pre is None and np.array_equal(split.dense().samples, dense)


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    train.run(spec, out_dir=tmp_path / "run", quiet=True)
    changed = load_spec(write_spec(tmp_path, name="other.fc", epochs=3, hidden=17))
    with pytest.raises(TrainingError, match="another spec"):
        train.run(changed, resume=tmp_path / "run/checkpoint.npz", quiet=True)


def test_resuming_a_finished_run_says_there_is_nothing_to_do(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=2))
    first = train.run(spec, out_dir=tmp_path / "run", quiet=True)
    before = (tmp_path / "run/weights.npz").read_bytes()
    said: list[str] = []
    again = train.run(spec, resume=tmp_path / "run", echo=said.append)  # a run folder works too
    assert any("nothing to do" in s for s in said)
    assert again == first
    assert (tmp_path / "run/weights.npz").read_bytes() == before


def test_resume_refuses_garbage_and_missing_checkpoints(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=2))
    with pytest.raises(DataError, match="not found"):
        train.run(spec, resume=tmp_path / "nope.npz", quiet=True)
    fio.save_npz(tmp_path / "w.npz", {"fc1.weight": np.zeros((16, 64), np.float32)})
    with pytest.raises(DataError, match="not an fcspec checkpoint"):
        train.run(spec, resume=tmp_path / "w.npz", quiet=True)


@pytest.mark.parametrize("damage", ["meta_key", "rng", "optimizer_state"])
def test_damaged_checkpoint_is_a_data_error(tmp_path, damage):
    spec = load_spec(write_spec(tmp_path, epochs=2))
    train.run(spec, out_dir=tmp_path / "run", epochs=1, quiet=True)
    ck = fio.load_npz(tmp_path / "run/checkpoint.npz")
    if damage == "meta_key":
        meta = json.loads(str(ck["meta"][()]))
        del meta["n_train"]
        ck["meta"] = np.array(json.dumps(meta))
    elif damage == "rng":
        del ck["rng/shuffle"]
    else:
        key = next(k for k in ck if k.startswith("optimizer/momentum"))
        ck[key] = ck[key][:5]
    fio.save_npz(tmp_path / "run/checkpoint.npz", ck)
    with pytest.raises(FcspecError, match="checkpoint"):
        train.run(spec, resume=tmp_path / "run", quiet=True)


# ---------------------------------------------------------------------------
# what a run writes


def test_metrics_and_summary_match_the_loss_recomputed_on_the_data(tmp_path, monkeypatch):
    """With an optimizer that does not move them, the weights stay the initial ones, so
    every reported figure can be
    recomputed from the data: the train loss (batch-size weighted mean of batch
    losses over a last, smaller batch), the val loss and accuracy, the test ones."""
    from fcspec import data, interpreter, losses, optim

    src = write_spec(
        tmp_path,
        optimizer="sgd(lr = 0.1)",
        schedule="constant",
        batch="100",
        shuffle="false",
        epochs=2,
    )
    text = src.read_text().replace("validate = 0.2", 'validate = 0.2  test = dataset("digits")')
    src.write_text(text)
    spec = load_spec(src)
    # lr = 0 is refused by the checker and the optimizers alike (catalog.resolve): freeze the step
    monkeypatch.setattr(optim.SGD, "_update", lambda self, theta, grad, lr: None)
    summary = train.run(spec, out_dir=tmp_path / "run", quiet=True)
    rows = metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2]
    prep = data.prepare(spec, tmp_path)
    net = interpreter.Network(spec.model)
    net.load_params(weights(tmp_path / "run/weights.npz"))
    loss = losses.make_loss(spec.loss)
    for part, split in (("train", prep.train), ("val", prep.val), ("test", prep.test)):
        out = net.predict(split.x, 256)
        acc = float(np.mean(out.argmax(1) == split.y))
        figures = rows[-1] if part != "test" else summary
        assert figures[f"{part}_loss"] == pytest.approx(float(loss.value(out, split.y)), rel=1e-5)
        assert figures[f"{part}_accuracy"] == pytest.approx(acc, abs=1e-12)
    for r in rows:
        assert r["lr"] == 0.1 and r["seconds"] > 0
        assert set(r) == {
            "epoch",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "lr",
            "seconds",
        }
    assert summary == json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["epochs"] == 2 and summary["num_params"] == spec.model.num_params
    assert summary["stopped_early"] is False and summary["best_epoch"] in (1, 2)
    assert summary["seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    assert sorted(os.listdir(tmp_path / "run")) == [
        ".fcspec.lock",  # the run folder's lock (its holder's pid), no temporaries
        "checkpoint.npz",
        "layers.jsonl",
        "metrics.jsonl",
        "preprocess.npz",
        "summary.json",
        "weights.npz",
    ] + (["weights.safetensors"] if fio.has_safetensors() else [])
    # evaluate() reports the same test figures from the saved weights
    ev = train.evaluate(spec, tmp_path / "run/weights.npz", base_dir=tmp_path)
    assert ev["split"] == "test"
    assert ev["test_loss"] == summary["test_loss"]
    assert ev["accuracy"] == summary["test_accuracy"]


TASKS = {
    "regression": ("diabetes", "h = linear(8) -> tanh  out = linear(1)", "mse"),
    "binary_probabilities": ("breast_cancer", "out = linear(1) -> sigmoid", "bce"),
    "binary_logits": ("breast_cancer", "out = linear(1)", "bce_with_logits"),
}


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_figures_match_recomputation(tmp_path, monkeypatch, task):
    """Regression reports mae / rmse, binary tasks accuracy at p = 0.5 (logit 0)."""
    from fcspec import data, interpreter, losses, optim

    name, layers, loss_kind = TASKS[task]
    (tmp_path / "t.fc").write_text(
        f"model T {{ input [{10 if name == 'diabetes' else 30}]  {layers} }}\n"
        f"loss {loss_kind}\noptimizer sgd(lr = 0.1)\n"
        f'data {{ train = dataset("{name}")  validate = 0.25  normalize = standard }}\n'
        "train { epochs = 1  batch = 64  shuffle = false }\n"
    )
    spec = load_spec(tmp_path / "t.fc")
    monkeypatch.setattr(optim.SGD, "_update", lambda self, theta, grad, lr: None)  # frozen
    train.run(spec, out_dir=tmp_path / "run", quiet=True)
    (row,) = metrics(tmp_path / "run")
    prep = data.prepare(spec, tmp_path)
    net = interpreter.Network(spec.model)
    net.load_params(weights(tmp_path / "run/weights.npz"))
    loss = losses.make_loss(spec.loss)
    out, y = net.predict(prep.val.x).astype(np.float64), prep.val.y.astype(np.float64)
    assert row["train_loss"] == pytest.approx(
        loss.value(net.predict(prep.train.x), prep.train.y), rel=1e-5
    )
    assert row["val_loss"] == pytest.approx(
        loss.value(out.astype(np.float32), prep.val.y), rel=1e-6
    )
    if task == "regression":
        assert "val_accuracy" not in row and "train_accuracy" not in row
        assert row["val_mae"] == pytest.approx(np.abs(out - y).mean(), rel=1e-9)
        assert row["val_rmse"] == pytest.approx(np.sqrt(((out - y) ** 2).mean()), rel=1e-9)
    else:
        threshold = 0.5 if loss_kind == "bce" else 0.0
        assert row["val_accuracy"] == np.mean((out > threshold) == (y > 0.5))
        assert 0 <= row["train_accuracy"] <= 1 and "val_mae" not in row


def test_weights_are_a_torch_state_dict_layout(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    train.run(spec, out_dir=tmp_path / "run", quiet=True)
    w = weights(tmp_path / "run/weights.npz")
    assert {k: v.shape for k, v in w.items()} == spec.model.param_shapes()


def test_plain_progress_line_per_epoch(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=2))
    lines: list[str] = []
    train.run(spec, out_dir=tmp_path / "run", echo=lines.append)
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1/2  train_loss ")
    for word in ("val_loss", "val_accuracy", "lr"):
        assert f"  {word} " in lines[1]
    assert lines[1].endswith("s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour differs")
def test_a_terminal_gets_a_progress_bar(tmp_path):
    from conftest import run_on_terminal

    spec_path = write_spec(tmp_path, epochs=2)
    code, text = run_on_terminal(  # `fcspec run` on a 120-column terminal
        [sys.executable, "-m", "fcspec.cli", "run", str(spec_path), "--out", str(tmp_path / "run")]
    )
    assert code == 0, text
    assert "100%" in text and "step/s" in text and "acc=" in text and "lr=" in text
    assert "epoch 1/2  train_loss" in text and "epoch 2/2  train_loss" in text


def test_quiet_prints_nothing(tmp_path, capsys):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    train.run(spec, out_dir=tmp_path / "run", quiet=True)
    assert capsys.readouterr() == ("", "")


def test_init_weights_are_used_and_shape_checked(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    train.run(spec, out_dir=tmp_path / "a", seed=5, epochs=0, quiet=True)  # the initial weights
    start = weights(tmp_path / "a/weights.npz")
    train.run(spec, out_dir=tmp_path / "b", init=tmp_path / "a/weights.npz", epochs=0, quiet=True)
    assert_same_weights(start, weights(tmp_path / "b/weights.npz"))
    # training from them (same seed for the batches) is the seed-5 run from scratch
    train.run(spec, out_dir=tmp_path / "c", init=tmp_path / "a/weights.npz", seed=5, quiet=True)
    train.run(spec, out_dir=tmp_path / "d", seed=5, quiet=True)
    assert_same_weights(weights(tmp_path / "c/weights.npz"), weights(tmp_path / "d/weights.npz"))
    assert not np.array_equal(
        weights(tmp_path / "c/weights.npz")["fc1.weight"], start["fc1.weight"]
    )
    bad = dict(start)
    bad["fc1.weight"] = np.zeros((16, 63), np.float32)
    fio.save_npz(tmp_path / "bad.npz", bad)
    with pytest.raises(FcspecError):
        train.run(spec, out_dir=tmp_path / "e", init=tmp_path / "bad.npz", quiet=True)


def test_restore_best_keeps_the_best_epochs_weights(tmp_path):
    # min_delta 100: no epoch after the first counts as an improvement, so with
    # patience 2 the run stops after epoch 3 and restores epoch 1's weights.
    es = "early_stop(monitor = val_loss, patience = 2, min_delta = 100, restore_best = true)"
    spec = load_spec(write_spec(tmp_path, epochs=10, extra=es))
    s = train.run(spec, out_dir=tmp_path / "es", quiet=True)
    assert s["stopped_early"] is True and s["epochs"] == 3 and s["best_epoch"] == 1
    train.run(spec, out_dir=tmp_path / "one", epochs=1, quiet=True)
    assert_same_weights(weights(tmp_path / "one/weights.npz"), weights(tmp_path / "es/weights.npz"))
    said: list[str] = []
    train.run(spec, resume=tmp_path / "es", echo=said.append)
    assert any("nothing to do" in x for x in said)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    spec = load_spec(write_spec(tmp_path, epochs=2))
    train.run(spec, out_dir=tmp_path / "run", quiet=True, plot=True)
    assert (tmp_path / "run/curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(FcspecError) as e:
        train.run(spec, out_dir=tmp_path / "run", quiet=True, plot=True)
    assert "pip install -e '.[plot]'" in str(e.value)  # works from a source checkout
    assert not (tmp_path / "run").exists()  # refused before training, not after it


def test_memory_estimate_refuses_what_cannot_fit(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, epochs=1, hidden=4096))
    monkeypatch.setattr(data, "available_memory", lambda: 10_000_000)
    est = train.estimate_memory(spec, 32)
    # at least theta + grad + Adam-free sgd momentum buffer for ~300k parameters
    assert est["total"] > 3 * 4 * spec.model.num_params
    with pytest.raises(TrainingError, match="needs about"):
        train.run(spec, out_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------
# divergence


def test_divergence_stops_with_a_diagnosis_and_keeps_the_previous_files(tmp_path):
    good = load_spec(write_spec(tmp_path, epochs=1))
    train.run(good, out_dir=tmp_path / "run", quiet=True)
    before = {f: (tmp_path / "run" / f).read_bytes() for f in ("weights.npz", "checkpoint.npz")}
    # linear least squares with a step far beyond 2 / lambda_max: the error grows
    # geometrically until float32 overflows, within the first epoch
    (tmp_path / "bad.fc").write_text(
        "model Reg { input [10]  out = linear(1) }\nloss mse\noptimizer sgd(lr = 1e6)\n"
        'data { train = dataset("diabetes")  normalize = standard }\n'
        "train { epochs = 3  batch = 32 }\n"
    )
    bad = load_spec(tmp_path / "bad.fc")
    with pytest.raises(TrainingError) as e:
        train.run(bad, out_dir=tmp_path / "run", quiet=True)
    msg = str(e.value)
    assert "diverged at epoch 1, step" in msg and "non-finite" in msg
    assert "lr 1e+06" in msg and "gradient norm" in msg
    assert "lower the learning rate or set clip_grad_norm" in msg
    assert "out.weight" in msg or "out.bias" in msg or "loss" in msg
    for f, b in before.items():
        assert (tmp_path / "run" / f).read_bytes() == b, f


def test_huge_input_diverges_in_the_loss_without_writing_weights(tmp_path):
    x = np.full((20, 4), 3e38, np.float32)
    y = np.ones((20, 1), np.float32)
    np.savez(tmp_path / "huge.npz", x=x, y=y)
    (tmp_path / "reg.fc").write_text(
        "model Reg { input [4]  out = linear(1) }\nloss mse\noptimizer sgd(lr = 0.1)\n"
        'data { train = npz("huge.npz", x = "x", y = "y") }\ntrain { epochs = 2  batch = 5 }\n'
    )
    spec = load_spec(tmp_path / "reg.fc")
    with pytest.raises(TrainingError, match="diverged at epoch 1, step 1"):
        train.run(spec, out_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run/weights.npz").exists()
    assert not (tmp_path / "run/checkpoint.npz").exists()


# ---------------------------------------------------------------------------
# end to end


def test_digits_reaches_95_percent_test_accuracy(tmp_path):
    d = np.load(Path(train.__file__).parent / "datasets/digits.npz")
    perm = np.random.default_rng(0).permutation(len(d["y"]))
    tr, te = perm[:1400], perm[1400:]
    np.savez(tmp_path / "tr.npz", x=d["x"][tr], y=d["y"][tr])
    np.savez(tmp_path / "te.npz", x=d["x"][te], y=d["y"][te])
    (tmp_path / "digits.fc").write_text(
        "model D { input [64]  h = linear(32) -> relu  out = linear(10) }\n"
        "loss cross_entropy\noptimizer adam(lr = 0.01)\n"
        'data { train = npz("tr.npz", x = "x", y = "y")  test = npz("te.npz", x = "x", y = "y")\n'
        "       normalize = standard }\ntrain { epochs = 20  batch = 32  seed = 0 }\n"
    )
    s = train.run(load_spec(tmp_path / "digits.fc"), out_dir=tmp_path / "run", quiet=True)
    assert s["epochs"] == 20 and s["test_accuracy"] >= 0.95


# ---------------------------------------------------------------------------
# The run's entry points for other code: prepared data and callbacks


class StopAtEpoch2:
    """A callback that records what it saw and stops training after epoch 2."""

    def __init__(self):
        self.seen: list[tuple] = []

    def on_train_begin(self, state):
        self.seen.append(("begin", state.epoch, len(state.history), state.out))

    def on_epoch_end(self, state, row):
        assert row is state.history[-1] and row["epoch"] == state.epoch
        assert row["lr"] == state.lr
        # params and grads are the live arrays, PyTorch's names and layouts
        assert state.params["fc1.weight"].shape == (16, 64)
        assert state.grads["fc1.weight"].shape == (16, 64)
        assert np.any(state.grads["fc1.weight"] != 0)
        self.seen.append(("epoch", state.epoch, dict(row)))
        return state.epoch == 2

    def on_train_end(self, state, summary):
        self.seen.append(("end", state.epoch, summary))


def test_callback_stops_training_and_prepared_data_is_used(tmp_path, monkeypatch):
    spec = load_spec(write_spec(tmp_path, epochs=5))
    prepared = data.prepare(spec)

    def no_prepare(*args, **kwargs):
        raise AssertionError("train.run called data.prepare although data was handed to it")

    monkeypatch.setattr(data, "prepare", no_prepare)
    cb = StopAtEpoch2()
    partial = SimpleNamespace(on_epoch_end=lambda state, row: None)  # any subset of the hooks
    summary = train.run(
        spec,
        out_dir=tmp_path / "run",
        quiet=True,
        prepared=prepared,
        callbacks=[cb, partial],
    )
    monkeypatch.undo()

    assert [s[0] for s in cb.seen] == ["begin", "epoch", "epoch", "end"]
    assert cb.seen[0][1:] == (0, 0, tmp_path / "run")
    assert summary["epochs"] == 2 and summary["stopped_by_callback"] is True
    assert summary["stopped_early"] is False and cb.seen[-1][2] is summary
    rows = metrics(tmp_path / "run")
    assert strip_time(rows) == strip_time([cb.seen[1][2], cb.seen[2][2]])
    # the data handed in is the data the spec names: the same run as without it
    full = train.run(spec, out_dir=tmp_path / "full", epochs=2, quiet=True)
    assert strip_time(metrics(tmp_path / "full")) == strip_time(rows)
    assert_same_weights(
        weights(tmp_path / "run" / "weights.npz"), weights(tmp_path / "full" / "weights.npz")
    )
    assert full["stopped_by_callback"] is False
    # the stop is recorded like early stopping: resuming has nothing left to do
    again = train.run(spec, resume=tmp_path / "run", quiet=True)
    assert again == summary


def test_prepared_data_without_a_data_section(tmp_path):
    spec = load_spec(write_spec(tmp_path, epochs=1))
    prepared = data.prepare(spec)
    bare = replace(spec, data=None)  # e.g. a model built in Python, trained on arrays
    summary = train.run(bare, out_dir=tmp_path / "run", quiet=True, prepared=prepared)
    assert summary["epochs"] == 1 and math.isfinite(summary["val_loss"])
