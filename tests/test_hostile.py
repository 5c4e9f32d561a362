"""Round two of the reliability audit: each failure a hostile pass found, provoked
through the real CLI (click's CliRunner in-process, a subprocess where a signal,
a hang or the peak memory is the point).

Every test here failed before its fix: a traceback, a hang, a silent wrong
result or a damaged file.  The helpers (`cli`, `assert_one_clean_error`, the
`folder` and `trained` fixtures) are test_reliability.py's.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import struct
import sys
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import test_reliability as rel
from test_reliability import _PEAK_RSS, _subprocess, assert_one_clean_error, cli, write_spec

from conftest import ROOT, SPECS

folder, trained = rel.folder, rel.trained  # the fixtures, by the names the tests ask for

posix = pytest.mark.skipif(os.name != "posix", reason="POSIX files and signals")


@contextlib.contextmanager
def no_hang(seconds: int = 30):
    """Fail (instead of blocking the suite forever) when the body does not return."""

    def fire(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def export_model(folder: Path) -> None:
    args = ("export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "m.onnx")
    assert cli(folder, *args).exit_code == 0


# ---- a flipped byte in an .npz member's header ---------------------------------------------


def flip_shape_byte(path: Path) -> None:
    """Damage the shape tuple in the header of an npz's first member: numpy's parser then
    raised tokenize.TokenError (a traceback).  The archive is rebuilt, so the CRC is right
    and only the header is wrong."""
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    first = next(iter(members))
    data = bytearray(members[first])
    close = data.index(b")", data.index(b"'shape': ("))
    data[close] = ord("(")  # the shape tuple never closes: numpy's tokenizer hits the end
    members[first] = bytes(data)
    with zipfile.ZipFile(path, "w") as zf:
        for name, d in members.items():
            zf.writestr(name, d)


def test_a_flipped_byte_in_an_npz_header_is_one_clean_error(trained):
    export_model(trained)
    for name in ("data.npz", "w.npz", "ck.npz"):
        src = {"data.npz": "good.npz", "w.npz": "run/weights.npz", "ck.npz": "run/checkpoint.npz"}
        (trained / name).write_bytes((trained / src[name]).read_bytes())
        flip_shape_byte(trained / name)
    write_spec(trained, 'npz("data.npz")', name="bad.fc")
    for args, needle in [
        (("run", "bad.fc", "--out", "r", "-q"), "data.npz"),
        (("eval", "s.fc", "--weights", "w.npz"), "w.npz"),
        (("run", "s.fc", "--init", "w.npz", "--out", "r", "-q"), "w.npz"),
        (("run", "s.fc", "--resume", "ck.npz", "--out", "r", "-q"), "ck.npz"),
        (("predict", "m.onnx", "data.npz"), "data.npz"),
    ]:
        assert_one_clean_error(cli(trained, *args), needle, "damaged header")
    # export and verify read preprocess.npz beside the weights
    flip_shape_byte(trained / "run" / "preprocess.npz")
    for args in (
        ("export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "x.onnx"),
        ("verify", "s.fc", "--weights", "run/weights.npz"),
    ):
        assert_one_clean_error(cli(trained, *args), "preprocess.npz", "damaged header")


# ---- IDX with more dimensions than an array can have -----------------------------------------


def test_an_idx_file_announcing_100_dimensions_is_refused(trained):
    export_model(trained)
    (trained / "images").write_bytes(
        struct.pack(">HBB", 0, 8, 100) + struct.pack(">100I", *[1] * 100)
    )
    assert_one_clean_error(cli(trained, "predict", "m.onnx", "images"), "100 dimensions")
    write_spec(trained, 'idx("images", "images")', name="idx.fc")
    assert_one_clean_error(cli(trained, "run", "idx.fc", "--out", "r", "-q"), "100 dimensions")


# ---- ONNX metadata that is not UTF-8 ---------------------------------------------------------


def test_onnx_metadata_that_is_not_utf8_is_refused(trained):
    import onnx

    export_model(trained)
    m = onnx.load(trained / "m.onnx")
    onnx.helper.set_model_props(m, {**{p.key: p.value for p in m.metadata_props}, "note": "ZZZZZZ"})
    raw = m.SerializeToString().replace(b"ZZZZZZ", b"\xff\xfe\xfd\xff\xfe\xfd")
    (trained / "bad.onnx").write_bytes(raw)
    assert_one_clean_error(cli(trained, "predict", "bad.onnx", "good.npz"), "not UTF-8")


# ---- checkpoint records with the wrong types --------------------------------------------------


def rewrite_meta(path: Path, out: Path, change) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"][()]))
    arrays["meta"] = np.array(change(meta))
    np.savez(out, **arrays)


def _deep(meta):
    text = json.dumps({**meta, "optimizer": "DEEP"})
    return text.replace('"DEEP"', "[" * 100_000 + "0" + "]" * 100_000)


CHECKPOINT_DAMAGE = {
    "epoch as text": (lambda m: json.dumps({**m, "epoch": "2"}), "'epoch'"),
    "negative epoch": (lambda m: json.dumps({**m, "epoch": -3}), "'epoch'"),
    "a list, not a record": (lambda m: json.dumps([m]), "not a record"),
    "history of strings": (lambda m: json.dumps({**m, "history": ["x"]}), "'history'"),
    "history records without epochs": (
        lambda m: json.dumps({**m, "history": [{"loss": 1.0}]}),
        "'history'",
    ),
    "deep nesting": (_deep, "damaged"),
    "unknown state node": (lambda m: json.dumps({**m, "optimizer": {"x": 1}}), "'optimizer'"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_DAMAGE))
def test_a_checkpoint_record_of_the_wrong_shape_is_refused(trained, case):
    change, needle = CHECKPOINT_DAMAGE[case]
    rewrite_meta(trained / "run" / "checkpoint.npz", trained / "ck.npz", change)
    result = cli(trained, "run", "s.fc", "--resume", "ck.npz", "--out", "r", "--epochs", "3", "-q")
    assert_one_clean_error(result, "ck.npz", "damaged", needle)
    assert not (trained / "r").exists()


# ---- paths that are not regular files: FIFOs and devices -----------------------------------


@posix
def test_a_fifo_on_the_command_line_is_refused_not_waited_on(trained):
    export_model(trained)
    os.mkfifo(trained / "pipe")
    for args in [
        ("check", "pipe"),
        ("fmt", "pipe"),
        ("show", "pipe"),
        ("predict", "pipe", "good.npz"),
        ("predict", "m.onnx", "pipe"),
        ("eval", "s.fc", "--weights", "pipe"),
        ("export", "s.fc", "--onnx", "--weights", "pipe", "-o", "x.onnx"),
        ("verify", "s.fc", "--weights", "pipe"),
        ("run", "s.fc", "--init", "pipe", "--out", "r", "-q"),
        ("run", "s.fc", "--resume", "pipe", "--out", "r", "-q"),
    ]:
        with no_hang():
            result = cli(trained, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "FIFO" in result.stderr and "Traceback" not in result.output, (args, result.stderr)


@posix
@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_is_refused_not_read_without_end(trained):
    export_model(trained)
    for args in [("check", "/dev/zero"), ("predict", "/dev/zero", "good.npz")]:
        with no_hang():
            result = cli(trained, *args)
        assert result.exit_code == 1 and "character device" in result.stderr, result.output


# ---- weights claiming far more than they hold ------------------------------------------------


def _claiming_npz(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """An .npz whose members are zeros of `shapes`, deflated: a few hundred KB on disk."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, shape in shapes.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": "<f4", "fortran_order": False, "shape": shape}
                )
                chunk = bytes(1 << 20)
                left = int(np.prod(shape)) * 4
                while left:
                    f.write(chunk[: min(left, len(chunk))])
                    left -= min(left, len(chunk))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's VmHWM")
def test_weights_claiming_hundreds_of_mb_are_refused_before_reading(trained):
    # h.weight should be [8, 4]: this one holds [8, 8388608] (256 MiB of float32 zeros)
    _claiming_npz(
        trained / "huge.npz",
        {"h.weight": (8, 1 << 23), "h.bias": (8,), "out.weight": (3, 8), "out.bias": (3,)},
    )
    assert (trained / "huge.npz").stat().st_size < 2_000_000
    proc = _subprocess(trained, "eval", "s.fc", "--weights", "huge.npz", code=_PEAK_RSS)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "h.weight has shape [8, 8388608]" in proc.stderr and "[8, 4]" in proc.stderr
    peak_kib = int(proc.stderr.rsplit("peak-rss-kib", 1)[1])
    assert peak_kib < 200_000, f"peak RSS {peak_kib} KiB: the weights were read before the check"


# ---- outputs that are inputs ----------------------------------------------------------------


def test_an_output_that_is_an_input_is_refused(trained):
    export_model(trained)
    os.symlink("good.npz", trained / "alias.npz")
    keep = {p: (trained / p).read_bytes() for p in ("good.npz", "m.onnx", "s.fc")}
    weights = (trained / "run" / "weights.npz").read_bytes()
    for args, role in [
        (("predict", "m.onnx", "good.npz", "--output", "good.npz"), "data"),
        (("predict", "m.onnx", "good.npz", "--output", "alias.npz"), "data"),
        (("predict", "m.onnx", "good.npz", "--output", "m.onnx"), "model"),
        (
            ("export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "run/weights.npz"),
            "weights",
        ),
        (("export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "s.fc"), "spec"),
    ]:
        assert_one_clean_error(cli(trained, *args), "would destroy the " + role)
    assert {p: (trained / p).read_bytes() for p in keep} == keep
    assert (trained / "run" / "weights.npz").read_bytes() == weights


# ---- fmt --write through symlinks and hard links, keeping the mode -------------------------


@posix
def test_fmt_write_rewrites_the_real_file_and_keeps_links_and_mode(folder):
    ugly = (
        "model M {   input [4]\n   out = linear(3) }\nloss cross_entropy\noptimizer sgd(lr=0.1)\n"
    )
    real = folder / "real.fc"
    real.write_text(ugly)
    os.chmod(real, 0o600)
    os.symlink("real.fc", folder / "link.fc")
    os.link(real, folder / "hard.fc")
    result = cli(folder, "fmt", "--write", "link.fc")
    assert result.exit_code == 0, result.output
    assert (folder / "link.fc").is_symlink()  # still a link ...
    text = real.read_text()
    assert text != ugly and text == cli(folder, "fmt", "real.fc").output  # ... to a formatted file
    assert (folder / "hard.fc").read_text() == text  # the other hard link sees it too
    assert os.stat(real).st_ino == os.stat(folder / "hard.fc").st_ino
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600  # not widened to 0644
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    os.unlink(folder / "hard.fc")  # a file with one link is rewritten atomically, mode kept
    real.write_text(ugly)
    assert cli(folder, "fmt", "--write", "real.fc").exit_code == 0
    assert real.read_text() == text and stat.S_IMODE(os.stat(real).st_mode) == 0o600


# ---- stale temporaries and SIGHUP -------------------------------------------------------------


def test_stale_temporaries_of_killed_writes_are_removed(trained):
    """What a SIGKILL between mkstemp and os.replace leaves is removed by the next write."""
    run = trained / "run"
    old = time.time() - 3600
    # In a run folder, which `run` locks, no one else can be writing: every temporary of
    # a run file goes, but not one of a file fcspec does not write there.
    temps = [run / ".weights.npz.k1ll3d00.tmp", run / ".checkpoint.npz.wr1t1ng0.tmp"]
    other = run / ".notes.txt.k1ll3d00.tmp"
    for p in (*temps, other):
        p.write_bytes(b"partial")
    os.utime(temps[0], (old, old))
    assert cli(trained, "run", "s.fc", "--out", "run", "-q").exit_code == 0
    assert not any(p.exists() for p in temps) and other.exists()
    # Elsewhere (predict --output), only temporaries too old to be a write in progress.
    export_model(trained)
    stale, fresh = trained / ".pred.npz.k1ll3d00.tmp", trained / ".pred.npz.wr1t1ng0.tmp"
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"partial")
    os.utime(stale, (old, old))
    assert cli(trained, "predict", "m.onnx", "good.npz", "--output", "pred.npz").exit_code == 0
    assert not stale.exists() and fresh.exists()


@posix
def test_sighup_checkpoints_like_sigterm(tmp_path):
    import subprocess

    sys.path.insert(0, str(Path(__file__).parent))
    from test_interrupt import _start, _wait_for_epochs, checkpoint_meta
    from test_train import write_spec as digits_spec

    spec_path = digits_spec(tmp_path, epochs=100000)
    out = tmp_path / "run"
    proc = _start(tmp_path, spec_path, out)
    try:
        _wait_for_epochs(proc, out, 2)
        proc.send_signal(signal.SIGHUP)
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 129, err
    assert "interrupted at epoch" in err and "resume with:" in err and "Traceback" not in err
    assert checkpoint_meta(out / "checkpoint.npz")["epoch"] >= 2


# ---- wrong values in messages ----------------------------------------------------------------


def test_messages_report_the_values_in_the_data(folder):
    with np.load(folder / "good.npz") as z:
        x = z["x"]
    np.savez(folder / "lab.npz", x=x, y=np.full(40, 1e20))
    write_spec(folder, 'npz("lab.npz")', name="lab.fc")
    assert_one_clean_error(cli(folder, "run", "lab.fc", "--out", "r", "-q"), "label 1e+20 in row 0")
    # scale = 1e-45 overflows float32 inputs: a data error, not "diverged, lower the learning rate"
    write_spec(folder, 'npz("good.npz")', extra="scale = 1e-45", name="tiny.fc")
    result = cli(folder, "run", "tiny.fc", "--out", "r", "-q")
    assert_one_clean_error(result, "scale = 1e-45", "overflow")
    assert "learning rate" not in result.stderr


def test_no_numpy_runtime_warning_reaches_the_user(folder):
    """Regression targets of 1e300 overflowed float32 with a RuntimeWarning and trained on inf."""
    with np.load(folder / "good.npz") as z:
        x = z["x"]
    np.savez(folder / "reg.npz", x=x, y=np.full(40, 1e300))
    write_spec(
        folder,
        'npz("reg.npz")',
        name="reg.fc",
        loss="mse",
        model="model M { input [4]  out = linear(1) }",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = cli(folder, "run", "reg.fc", "--out", "r", "-q")
    assert_one_clean_error(result, "reg.npz", "NaN or infinite targets", "3.4e38")


# ---- the shipped specs, --plot, the forgotten output layer -----------------------------------


def test_every_shipped_spec_trains_into_its_own_run_folder():
    from fcspec import train
    from fcspec.check import load_spec

    folders = {}
    for path in SPECS:
        where = train.output_dir(load_spec(path))
        assert where not in folders, f"{path.name} and {folders.get(where)} both write to {where}"
        folders[where] = path.name


def test_plot_without_matplotlib_is_refused_before_training(folder, monkeypatch):
    spec = write_spec(folder, 'npz("good.npz")')
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    result = cli(folder, "run", spec, "--out", "run", "--plot")
    assert_one_clean_error(result, "matplotlib", "pip install -e '.[plot]'")
    assert not (folder / "run").exists()  # not a whole run first


def test_a_forgotten_output_layer_is_warned_about(folder):
    spec = write_spec(folder, 'npz("good.npz")', model="model M { input [4]  h = linear(256) }")
    result = cli(folder, "run", spec, "--out", "run")
    assert result.exit_code == 0, result.output
    assert "warning: the model has 256 outputs but the labels use only 3 classes" in result.stderr
    ok = cli(folder, "run", write_spec(folder, 'npz("good.npz")', name="ok.fc"), "--out", "ok")
    assert "warning" not in ok.stderr


# ---- inside the run: lock, bounded checkpoint, data fingerprint, spec stamp ------------------


def test_a_second_run_into_a_locked_folder_is_refused(trained):
    from fcspec import io as fio

    with fio.folder_lock(trained / "run", "run folder"):  # as if another run held it
        result = cli(trained, "run", "s.fc", "--out", "run", "-q")
    assert_one_clean_error(result, "run", "in use by another fcspec run", f"pid {os.getpid()}")
    assert cli(trained, "run", "s.fc", "--out", "run", "-q").exit_code == 0  # released


def _metrics(folder: Path) -> list[dict]:
    return [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]


def test_the_checkpoint_keeps_a_bounded_history_and_resume_restores_the_whole(folder):
    from fcspec import train

    spec = write_spec(folder, 'npz("good.npz")', train="epochs = 12  batch = 8")
    assert cli(folder, "run", spec, "--out", "run", "-q").exit_code == 0
    with np.load(folder / "run" / "checkpoint.npz") as z:
        meta = json.loads(str(z["meta"][()]))
    assert [m["epoch"] for m in meta["history"]] == list(range(13 - train.HISTORY_TAIL, 13))
    assert cli(folder, "run", spec, "--resume", "run", "--epochs", "15", "-q").exit_code == 0
    rows = _metrics(folder / "run")
    assert [r["epoch"] for r in rows] == list(range(1, 16))  # the epochs before the tail too
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert summary["seconds"] == pytest.approx(sum(r["seconds"] for r in rows))


def test_resume_on_other_data_of_the_same_size_is_refused(folder):
    spec = write_spec(folder, 'npz("data.npz")', train="epochs = 2  batch = 8")
    (folder / "data.npz").write_bytes((folder / "good.npz").read_bytes())
    assert cli(folder, "run", spec, "--out", "run", "-q").exit_code == 0
    with np.load(folder / "good.npz") as z:
        np.savez(folder / "data.npz", x=z["x"][::-1], y=z["y"][::-1])  # same rows, shuffled
    result = cli(folder, "run", spec, "--resume", "run", "--epochs", "3", "-q")
    assert_one_clean_error(result, "other data", "same count (40)")


def test_weights_of_another_spec_are_refused_by_export_eval_and_verify(trained):
    # same layers, another optimizer: the mnist.fc / mnist_adam.fc case
    text = (trained / "s.fc").read_text().replace("sgd(lr = 0.1)", "adam(lr = 0.01)")
    (trained / "other.fc").write_text(text)
    for args in [
        ("export", "other.fc", "--onnx", "--weights", "run/weights.npz", "-o", "o.onnx"),
        ("eval", "other.fc", "--weights", "run/weights.npz"),
        ("verify", "other.fc", "--weights", "run/weights.npz"),
    ]:
        assert_one_clean_error(cli(trained, *args), "trained for spec", "s.fc", "not for other.fc")
    assert not (trained / "o.onnx").exists()
    assert cli(trained, "eval", "s.fc", "--weights", "run/weights.npz").exit_code == 0
    with np.load(trained / "run" / "weights.npz") as z:  # still a plain state_dict
        assert sorted(z.files) == ["h.bias", "h.weight", "out.bias", "out.weight"]


def test_restore_best_reports_the_figures_of_the_saved_weights(folder):
    spec = "best.fc"
    (folder / spec).write_text(
        "model M { input [4]  h = linear(8) -> relu  out = linear(3) }\nloss cross_entropy\n"
        "optimizer sgd(lr = 3.0)\n"  # a rate that overshoots, so val_loss soon gets worse
        'data { train = npz("good.npz")  validate = 0.25 }\n'
        "train { epochs = 30  batch = 4  early_stop(patience = 2, restore_best = true) }\n"
    )
    assert cli(folder, "run", spec, "--out", "run", "-q").exit_code == 0, spec
    summary = json.loads((folder / "run" / "summary.json").read_text())
    assert summary["stopped_early"] and summary["weights_epoch"] < summary["epochs"]
    # eval of the saved weights on the validation split (no test split) is the oracle
    result = cli(folder, "eval", spec, "--weights", "run/weights.npz")
    assert result.exit_code == 0 and "val split" in result.output
    loss = float(next(l for l in result.output.splitlines() if "loss" in l).split()[-1])
    assert summary["val_loss"] == pytest.approx(loss, rel=1e-5)


def test_epochs_rescales_cosines_default_t_max_and_the_resume_hint_keeps_it(folder, monkeypatch):
    torch = pytest.importorskip("torch")
    spec = "cos.fc"
    (folder / spec).write_text(
        "model M { input [4]  h = linear(8) -> relu  out = linear(3) }\nloss cross_entropy\n"
        'optimizer sgd(lr = 0.1)\nschedule cosine\ndata { train = npz("good.npz") }\n'
        "train { epochs = 60  batch = 8 }\n"
    )
    assert cli(folder, "run", spec, "--out", "run", "--epochs", "10", "-q").exit_code == 0
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    want = []
    for _ in range(10):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert [r["lr"] for r in _metrics(folder / "run")] == pytest.approx(want, rel=1e-12)
    assert "cosine(t_max = 10," in cli(folder, "explain", spec, "--epochs", "10").output
    assert "cosine(t_max = 60," in cli(folder, "explain", spec).output
    # interrupted: the hint must carry --epochs, or the resumed run ends at 60
    sys.path.insert(0, str(Path(__file__).parent))
    from test_interrupt import signal_at_step

    signal_at_step(monkeypatch, signal.SIGINT, 7)  # 5 steps an epoch: in epoch 2
    result = cli(folder, "run", spec, "--out", "cut", "--epochs", "10", "-q")
    assert result.exit_code == 130
    assert "--resume cut/checkpoint.npz --epochs 10" in result.stderr, result.stderr


# ---- predict and eval apply run's checks ------------------------------------------------------


def test_predict_refuses_what_run_refuses(trained):
    export_model(trained)
    with np.load(trained / "good.npz") as z:
        x, y = z["x"], z["y"]
    nan = x.copy()
    nan[2, 1] = np.nan
    cases = {
        "nan.npz": ({"x": nan, "y": y}, "NaN or infinite input"),
        "huge.npz": ({"x": x.astype(np.float64) * 1e300, "y": y}, "3.4e38"),
        "frac.npz": ({"x": x, "y": np.full(40, 0.7)}, "not a whole number"),
        "nanlab.npz": ({"x": x, "y": np.full(40, np.nan)}, "not a whole number"),
        "neg.npz": ({"x": x, "y": np.full(40, -1)}, "outside [0, 3)"),
        "big.npz": ({"x": x, "y": np.full(40, 99)}, "outside [0, 3)"),
        "onehot.npz": ({"x": x, "y": np.eye(3)[y]}, "one class id"),
        "strings.npz": ({"x": x, "y": np.array(["cat"] * 40)}, "not numbers"),
    }
    for name, (arrays, needle) in cases.items():
        np.savez(trained / name, **arrays)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert_one_clean_error(cli(trained, "predict", "m.onnx", name), name, needle)


def test_eval_refuses_non_finite_weights(trained):
    with np.load(trained / "run" / "weights.npz") as z:
        w = {k: z[k] for k in z.files}
    w["h.weight"][0, 0] = np.nan
    np.savez(trained / "nan.npz", **w)
    assert_one_clean_error(cli(trained, "eval", "s.fc", "--weights", "nan.npz"), "NaN or infinity")


def test_a_csv_is_sized_before_it_is_read(folder, monkeypatch):
    from fcspec import data

    rows = "\n".join(f"{i},{i},{i},{i},{i % 3}" for i in range(40))
    (folder / "d.csv").write_text("a,b,c,d,label\n" + rows + "\n")
    write_spec(folder, 'csv("d.csv", target = "label")', name="csv.fc")
    size = (folder / "d.csv").stat().st_size
    # reading costs up to 4x the file (data.CSV_BYTES_PER_BYTE): it does not fit in 2x
    monkeypatch.setattr(data, "available_memory", lambda: 2 * size)
    result = cli(folder, "run", "csv.fc", "--out", "r", "-q")
    assert_one_clean_error(result, "d.csv", "needs about", "available")


# ---- what predict trusts ----------------------------------------------------------------------


def _loop_model(path: Path, trips: int) -> None:
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["N", 4])],
    )  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["trips"], value=helper.make_tensor("t", TensorProto.INT64, [], [trips])),
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [True])),
        helper.make_node("Loop", ["trips", "cond", "input"], ["output"], body=body),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes,
        "forever",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_predict_refuses_a_graph_fcspec_cannot_export(folder):
    _loop_model(folder / "loop.onnx", 10**15)  # would never return
    with no_hang(60):
        result = cli(folder, "predict", "loop.onnx", "good.npz")
    assert_one_clean_error(result, "loop.onnx", "Loop", "never exports", "--trust-model")
    _loop_model(folder / "short.onnx", 3)  # a user who trusts a file can still run it
    result = cli(folder, "predict", "short.onnx", "good.npz", "--trust-model")
    assert result.exit_code == 0 and "40 rows" in result.output, result.output


def _shipped_specs_with_random_weights():
    """(path, spec, params, preprocess) of every shipped spec, with random weights and
    preprocessing statistics of random samples (table specs get 7 inputs, 3 classes)."""
    from fcspec import data, ir
    from fcspec.check import load_spec

    rng = np.random.default_rng(0)
    for path in SPECS:
        spec = load_spec(path)
        if spec.model.pending:  # `input auto`, `linear(outputs)`: widths a table would give
            spec = ir.resolve(spec, 7, 3)
        params = {
            k: rng.standard_normal(s).astype(np.float32)
            for k, s in spec.model.param_shapes().items()
        }
        sample = rng.standard_normal((8, *spec.model.input_shape))
        pre = data.Preprocess.fit(sample, scale=spec.data.scale, normalize=spec.data.normalize)
        yield path, spec, params, pre


def test_every_op_fcspec_exports_is_trusted_by_predict():
    """A scan of the emitters' op types, and the shipped specs exported with random weights."""
    import re

    from fcspec import onnx_export, onnx_trust

    emitted = set()
    for path in (ROOT / "fcspec").rglob("*.py"):
        emitted |= set(re.findall(r'\.node\(\s*"([A-Za-z]+)"', path.read_text("utf-8")))
    assert emitted and emitted <= onnx_trust.EXPORTED_OPS, emitted - onnx_trust.EXPORTED_OPS
    for path, spec, params, pre in _shipped_specs_with_random_weights():
        for probabilities in (False, True) if spec.classes or spec.task == "binary" else (False,):
            model = onnx_export.export(spec, params, pre, probabilities=probabilities)
            assert onnx_trust.untrusted_parts(model) == [], path.name


def test_the_trust_check_reads_the_wire_format_like_onnx(tmp_path):
    """onnx_trust walks the protobuf bytes itself (predict must not import onnx): it must
    see exactly the nodes `onnx.load` sees, and a damaged file is a clean refusal."""
    import onnx
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    from fcspec import onnx_export, onnx_trust

    def onnx_view(model):
        nodes = [
            (n.domain, n.op_type, any(a.type in (a.GRAPH, a.GRAPHS) for a in n.attribute))
            for n in model.graph.node
        ]
        return nodes, len(model.functions)

    rng = np.random.default_rng(0)
    models = [
        onnx_export.export(s, p, pre) for _, s, p, pre in _shipped_specs_with_random_weights()
    ]
    x = rng.standard_normal((40, 3)).astype(np.float32)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=20).fit(x, np.arange(40) % 3)
    models.append(to_onnx(est, x[:1]))  # ai.onnx.ml nodes, ZipMap, a float and a label output
    _loop_model(tmp_path / "loop.onnx", 3)
    models.append(onnx.load(tmp_path / "loop.onnx"))  # a subgraph
    fn = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17, "local" : 1]>
        g (float[N] x) => (float[N] y) { y = local.twice(x) }
        <domain: "local", opset_import: ["" : 17]>
        twice (a) => (b) { b = Add(a, a) }"""
    )
    models.append(fn)  # a local function
    for model in models:
        src = model.SerializeToString()
        assert onnx_trust.graph_nodes(src) == onnx_view(model)
    assert onnx_trust.untrusted_parts(models[-2]) == ["Loop", "a subgraph in Loop"]
    assert onnx_trust.untrusted_parts(models[-1]) == ["1 local functions", "local.twice"]
    assert onnx_trust.untrusted_parts(models[-3]) == []  # skl2onnx's classifier is trusted
    src = models[0].SerializeToString()
    for cut in range(1, len(src), max(1, len(src) // 300)):  # every damage is a ValueError
        try:
            onnx_trust.graph_nodes(src[:cut])
        except ValueError:
            pass
    with pytest.raises(ValueError):
        onnx_trust.graph_nodes(b"\x3a\xff\xff\xff\xff\x0f")  # a graph longer than the file
