"""The bad-input audit: every refusal through the real CLI is one readable message.

What is checked here and not elsewhere (the library-level cases live in
test_data.py, test_train.py, test_onnx.py and test_interrupt.py):

* each refusal of `fcspec run / export / predict / eval` on hostile files ends
  in exit 1, one `error:` line (plus an optional source line and hint), and no
  traceback -- in-process with CliRunner, and for a sample through a real
  `python -m fcspec.cli` subprocess;
* a model the checker allows but memory does not is refused by `fcspec run`
  with an estimate before anything big is allocated (the child's peak RSS is
  measured);
* safe loading: every `np.load` in fcspec/ passes allow_pickle=False, pickled
  object arrays are refused for data, weights and checkpoints, and ONNX files
  are checked before they run;
* atomic outputs: a crash in `os.replace` while fcspec writes (run, fmt -w,
  export, predict --output) keeps the previous file and leaves no temporary.
"""

from __future__ import annotations

import ast
import errno
import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec.cli import main

MODEL = "model M { input [4]  h = linear(8) -> relu  out = linear(3) }"


def write_spec(
    folder: Path,
    source: str,
    *,
    extra: str = "",
    model: str = MODEL,
    loss: str = "cross_entropy",
    name: str = "s.fc",
    train: str = "epochs = 1  batch = 8",
) -> str:
    (folder / name).write_text(
        f"{model}\nloss {loss}\noptimizer sgd(lr = 0.1)\n"
        f"data {{ train = {source}  {extra} }}\ntrain {{ {train} }}\n"
    )
    return name


def cli(folder: Path, *args: str):
    """Run the CLI in `folder`; any exception but SystemExit is a bug (it would be a traceback)."""
    assert Path.cwd() == folder  # the `folder` fixture made it the working directory
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"uncaught {type(result.exception).__name__}: {result.exception}"
    )
    return result


def assert_one_clean_error(result, *needles: str) -> None:
    """Exit 1 and one readable error: a single `error:` line, its optional source excerpt and hint."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    err = result.stderr
    assert "Traceback" not in result.output
    lines = [l for l in err.splitlines() if l.strip()]
    assert sum("error:" in l for l in lines) == 1, err
    assert len(lines) <= 6, err  # message, source line, caret, hint, "1 error" at most
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A scratch folder with a small classification data set, as the working directory."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    np.savez(tmp_path / "good.npz", x=x, y=y)
    return tmp_path


# ---- refusals of bad data files through `fcspec run` ---------------------------------------


def _truncated_npz(d: Path) -> str:
    (d / "bad.npz").write_bytes((d / "good.npz").read_bytes()[:300])
    return 'npz("bad.npz")'


def _truncated_idx(d: Path) -> str:
    rng = np.random.default_rng(1)
    images = (
        struct.pack(">HBBIII", 0, 8, 3, 10, 2, 2)
        + (rng.random((10, 2, 2)) * 255).astype(np.uint8).tobytes()
    )
    labels = struct.pack(">HBBI", 0, 8, 1, 10) + rng.integers(0, 3, 10).astype(np.uint8).tobytes()
    (d / "images.gz").write_bytes(gzip.compress(images)[:-20])
    (d / "labels.gz").write_bytes(gzip.compress(labels))
    return 'idx("images.gz", "labels.gz")'


def _csv_not_numeric(d: Path) -> str:
    (d / "bad.csv").write_text("a,b,c,d,label\n1,2,x,4,0\n1,2,3,4,1\n")
    return 'csv("bad.csv", target = "label")'


def _npz(d: Path, **arrays) -> str:
    with np.load(d / "good.npz") as z:
        base = {"x": z["x"], "y": z["y"]}
    base.update(arrays)
    np.savez(d / "bad.npz", **base)
    return 'npz("bad.npz")'


def _nan_inputs(d: Path) -> str:
    with np.load(d / "good.npz") as z:
        x = z["x"].copy()
    x[3, 2] = np.nan
    return _npz(d, x=x)


BAD_DATA = {
    "missing file": (lambda d: 'npz("missing.npz")', ["missing.npz", "no such file"]),
    "truncated npz": (_truncated_npz, ["bad.npz", "not a valid .npz"]),
    "truncated gzip idx": (_truncated_idx, ["images.gz", "truncated"]),
    # a text cell makes its column a category (one-hot, 2 values): the width no longer fits
    "text column in csv": (_csv_not_numeric, ["bad.csv", "each sample has shape [5]", "[4]"]),
    "NaN in inputs": (_nan_inputs, ["NaN", "row 3"]),
    "label out of range": (lambda d: _npz(d, y=np.full(40, 7)), ["outside [0, 3)"]),
    "float labels for a classifier": (
        lambda d: _npz(d, y=np.full(40, 0.5)),
        ["not a whole number"],
    ),
    "width mismatch": (lambda d: _npz(d, x=np.zeros((40, 5), np.float32)), ["[5]", "[4]"]),
    "empty data": (
        lambda d: _npz(d, x=np.zeros((0, 4), np.float32), y=np.zeros(0, np.int64)),
        ["empty"],
    ),
    "pickled object array": (
        lambda d: _npz(d, x=np.array([{"a": 1}] * 40, dtype=object)),
        ["allow_pickle"],
    ),
    "rows and labels differ": (lambda d: _npz(d, y=np.zeros(39, np.int64)), ["39"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_run_refuses_bad_data_with_one_located_message(folder, case):
    make, needles = BAD_DATA[case]
    spec = write_spec(folder, make(folder))
    result = cli(folder, "run", spec, "--out", "run", "-q")
    assert_one_clean_error(result, "s.fc:4:", *needles)  # located at the data source in the spec
    assert not (folder / "run" / "weights.npz").exists()


def test_run_refuses_too_few_rows_for_validate(folder):
    spec = write_spec(
        folder,
        _npz(folder, x=np.zeros((1, 4), np.float32), y=np.zeros(1, np.int64)),
        extra="validate = 0.2",
    )
    assert_one_clean_error(
        cli(folder, "run", spec, "--out", "run", "-q"), "too few rows", "validate = 0.2"
    )


# ---- refusals of weights, checkpoints and models ---------------------------------------


@pytest.fixture
def trained(folder):
    """A finished run of s.fc in run/ (a second and tiny spec)."""
    spec = write_spec(folder, 'npz("good.npz")')
    assert cli(folder, "run", spec, "--out", "run", "-q").exit_code == 0
    return folder


def test_export_without_weights(folder):
    spec = write_spec(folder, 'npz("good.npz")')
    assert_one_clean_error(
        cli(folder, "export", spec, "--onnx"), "no trained weights", "fcspec run"
    )
    assert_one_clean_error(
        cli(folder, "export", spec, "--onnx", "--weights", "nowhere.npz"),
        "not found",
        "nowhere.npz",
    )


@pytest.mark.parametrize(
    "content", [b"hello, not a model", b"PK\x03\x04" + bytes(100), b"\x08\x07" * 50]
)
def test_predict_on_a_non_onnx_file(folder, content):
    (folder / "model.onnx").write_bytes(content)
    assert_one_clean_error(
        cli(folder, "predict", "model.onnx", "good.npz"), "model.onnx", "not a valid ONNX model"
    )
    assert_one_clean_error(
        cli(folder, "predict", "good.npz", "good.npz"), "good.npz", "not a valid ONNX model"
    )


def _identity_model(path: Path, dims, elem=None) -> None:
    import onnx
    from onnx import TensorProto, helper

    elem = TensorProto.FLOAT if elem is None else elem
    x = helper.make_tensor_value_info("x", elem, dims)
    y = helper.make_tensor_value_info("y", elem, dims)
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)  # valid ONNX: only its fit to the data is wrong
    onnx.save(model, path)


@pytest.mark.parametrize("case", ["rank 4", "string input", "int64 input"])
def test_predict_checks_a_valid_onnx_model_against_the_data_before_running(folder, case):
    """The dtype cases once escaped as onnxruntime's InvalidArgument (a traceback)."""
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto

    dims, elem, needle = {
        "rank 4": (["N", 3, 5, 7], None, "expects [3, 5, 7]"),
        "string input": (["N", 4], TensorProto.STRING, "tensor(string)"),
        "int64 input": (["N", 4], TensorProto.INT64, "tensor(int64)"),
    }[case]
    _identity_model(folder / "m.onnx", dims, elem)
    assert_one_clean_error(cli(folder, "predict", "m.onnx", "good.npz"), needle)


def test_predict_runs_a_fixed_batch_model_in_full_batches(folder):
    """A model with a static batch (export --fixed-batch) once failed inside onnxruntime;
    predict now feeds it full batches, the last one padded."""
    pytest.importorskip("onnxruntime")
    _identity_model(folder / "m.onnx", [2, 4])
    r = cli(folder, "predict", "m.onnx", "good.npz", "--output", "p.npz")
    assert r.exit_code == 0, r.output
    with np.load(folder / "good.npz") as g, np.load(folder / "p.npz") as p:
        np.testing.assert_array_equal(p["output"], g["x"].astype(np.float32))


def test_eval_with_wrong_shape_weights(trained):
    with np.load(trained / "run" / "weights.npz") as z:
        weights = {k: z[k] for k in z.files}
    weights["h.weight"] = np.zeros((8, 5), np.float32)
    np.savez(trained / "wrong.npz", **weights)
    assert_one_clean_error(
        cli(trained, "eval", "s.fc", "--weights", "wrong.npz"), "h.weight", "[8, 4]", "[8, 5]"
    )
    del weights["out.bias"]
    np.savez(trained / "missing.npz", **weights)
    assert_one_clean_error(cli(trained, "eval", "s.fc", "--weights", "missing.npz"), "out.bias")


def test_resume_with_another_specs_checkpoint(trained):
    other = write_spec(
        trained,
        'npz("good.npz")',
        name="other.fc",
        model="model M { input [4]  h = linear(9) -> relu  out = linear(3) }",
    )
    assert cli(trained, "run", other, "--out", "other", "-q").exit_code == 0
    before = (trained / "run" / "checkpoint.npz").read_bytes()
    result = cli(trained, "run", "s.fc", "--resume", "other/checkpoint.npz", "--out", "run", "-q")
    assert_one_clean_error(result, "another spec", "--resume")
    assert (trained / "run" / "checkpoint.npz").read_bytes() == before


@pytest.mark.parametrize(
    "content", [b"PK\x03\x04" + bytes(range(256)) * 2, b"", b"\x93NUMPY garbage"]
)
def test_init_with_a_corrupted_npz(folder, content):
    spec = write_spec(folder, 'npz("good.npz")')
    (folder / "init.npz").write_bytes(content)
    assert_one_clean_error(
        cli(folder, "run", spec, "--init", "init.npz", "--out", "run", "-q"), "init.npz"
    )
    assert not (folder / "run" / "weights.npz").exists()


# ---- the real entry point: no traceback on stderr ------------------------------------------


def _subprocess(folder: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = (
        [sys.executable, "-m", "fcspec.cli", *args]
        if code is None
        else [sys.executable, "-c", code, *args]
    )
    return subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, timeout=120)


def test_real_cli_process_prints_one_message_and_exits_1(trained):
    (trained / "junk.onnx").write_bytes(b"junk")
    (trained / "init.npz").write_bytes(b"PK\x03\x04" + bytes(60))
    _nan_inputs(trained)
    write_spec(trained, 'npz("bad.npz")', name="nan.fc")
    for args, needle in [
        (("run", "nan.fc", "--out", "nan", "-q"), "NaN"),
        (("run", "s.fc", "--init", "init.npz", "--out", "x", "-q"), "init.npz"),
        (("predict", "junk.onnx", "good.npz"), "not a valid ONNX model"),
        (("export", "s.fc", "--onnx", "--weights", "none.npz"), "not found"),
    ]:
        proc = _subprocess(trained, *args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and needle in proc.stderr, (args, proc.stderr)
        assert sum("error:" in l for l in proc.stderr.splitlines()) == 1, proc.stderr


# ---- resource sanity ------------------------------------------------------------------------

# ru_maxrss would count the forked pytest parent's memory (Linux keeps it across exec);
# VmHWM is the child's own high-water mark.
_PEAK_RSS = """\
import sys
from fcspec.cli import main
try:
    main(sys.argv[1:])
finally:
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    print(f"peak-rss-kib {hwm}", file=sys.stderr)
"""


@pytest.mark.skipif(
    not Path("/proc/meminfo").exists(), reason="needs /proc/meminfo for the estimate"
)
def test_a_model_memory_cannot_hold_is_refused_before_allocating(folder):
    # 40000 x 50000 = 2e9 weights: under the checker's 2**31 limit, but theta, grad and Adam's state
    # need over 60 GB; two rows of data are enough to get past the data checks.
    np.savez(
        folder / "wide.npz", x=np.zeros((2, 40000), np.float32), y=np.zeros((2, 50000), np.float32)
    )
    (folder / "big.fc").write_text(
        "model Big { input [40000]  out = linear(50000) }\nloss mse\noptimizer adam\n"
        'data { train = npz("wide.npz") }\ntrain { epochs = 1  batch = 2 }\n'
    )
    assert cli(folder, "check", "big.fc").exit_code == 0  # statically fine
    proc = _subprocess(folder, "run", "big.fc", "--out", "run", "-q", code=_PEAK_RSS)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "needs about" in proc.stderr and " GB " in proc.stderr and "available" in proc.stderr, (
        proc.stderr
    )
    peak_kib = int(proc.stderr.rsplit("peak-rss-kib", 1)[1])
    assert peak_kib < 1_000_000, f"peak RSS {peak_kib} KiB: the refusal came after allocating"
    assert not (folder / "run" / "weights.npz").exists()


# ---- safe loading ---------------------------------------------------------------------------


def _loader_calls(tree: ast.AST):
    """Every call of np.load / numpy.load / np.lib.format.read_array in a module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            dotted = ast.unparse(node.func)
            if dotted in ("np.load", "numpy.load") or dotted.endswith("read_array"):
                yield node, dotted


def test_every_np_load_in_fcspec_refuses_pickles():
    calls = 0
    for path in sorted((ROOT / "fcspec").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node, dotted in _loader_calls(tree):
            calls += 1
            kw = {k.arg: k.value for k in node.keywords}
            assert (
                "allow_pickle" in kw
                and isinstance(kw["allow_pickle"], ast.Constant)
                and kw["allow_pickle"].value is False
            ), f"{path.name}:{node.lineno}: {dotted} without allow_pickle=False"
        for node in ast.walk(tree):  # and nothing unpickles by another road
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + (
                    [node.module] if isinstance(node, ast.ImportFrom) else []
                )
                assert not any(
                    n and n.split(".")[0] in ("pickle", "dill", "joblib") for n in names
                ), path
    assert calls >= 1  # io.read_npz, the one .npz reader: the scan sees it


def _pickled_weights(path: Path) -> None:
    np.savez(
        path,
        **{
            "h.weight": np.array([object(), object()], dtype=object),
            "out.bias": np.zeros(3, np.float32),
        },
    )


def test_pickled_object_arrays_are_refused_for_weights_and_checkpoints(trained, monkeypatch):
    _pickled_weights(trained / "evil.npz")
    # if anything unpickled, this would run: it must never be called
    monkeypatch.setattr("pickle.loads", lambda *a, **k: pytest.fail("unpickled"))
    for args, role in [
        (("run", "s.fc", "--init", "evil.npz", "--out", "x", "-q"), "weights"),
        (("eval", "s.fc", "--weights", "evil.npz"), "weights"),
        (("export", "s.fc", "--onnx", "--weights", "evil.npz", "-o", "m.onnx"), ""),
        (("run", "s.fc", "--resume", "evil.npz", "--out", "run", "-q"), "checkpoint"),
    ]:
        assert_one_clean_error(cli(trained, *args), "evil.npz", role)
    assert not (trained / "m.onnx").exists()


# ---- atomic outputs ---------------------------------------------------------------------------


def _crash_replace(monkeypatch):
    def crash(src, dst, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", crash)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".fcspec.lock"  # the run lock names its holder: not an output
    }


def test_a_crash_while_writing_keeps_every_previous_file(trained, monkeypatch):
    """`os.replace` failing (a full disk) in run, fmt -w, export and predict --output."""
    assert (
        cli(
            trained, "export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "m.onnx"
        ).exit_code
        == 0
    )
    assert cli(trained, "predict", "m.onnx", "good.npz", "--output", "pred.npz").exit_code == 0
    (trained / "ugly.fc").write_text((trained / "s.fc").read_text().replace("  ", "      "))
    before = _snapshot(trained)
    _crash_replace(monkeypatch)
    for args in [
        ("run", "s.fc", "--out", "run", "--epochs", "2", "-q"),
        ("fmt", "--write", "ugly.fc"),
        ("export", "s.fc", "--onnx", "--weights", "run/weights.npz", "-o", "m.onnx"),
        ("predict", "m.onnx", "good.npz", "--output", "pred.npz"),
    ]:
        result = cli(trained, *args)
        assert_one_clean_error(result, "No space left on device")
        after = _snapshot(trained)
        assert after == before, (
            args,
            sorted(set(after) ^ set(before)),
        )  # no temporary left, nothing changed
