"""safetensors in and out: the run folder's weights.safetensors, --init and --weights.

The file PyTorch writes (`safetensors.torch.save_file(model.state_dict())`) is tested in
test_torch_export_torch.py; here the files come from safetensors' NumPy API.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import load_file, save_file

from fcspec import io as fio
from fcspec import train
from fcspec.check import load_spec
from fcspec.cli import main
from fcspec.errors import DataError

SPEC = """
model Digits {
    input [64]
    fc1 = linear(16) -> relu
    fc2 = linear(10)
}
loss cross_entropy
optimizer sgd(lr = 0.1, momentum = 0.9)
data { train = dataset("digits")  test = 0.2  scale = 16 }
train { epochs = 1  batch = 64  seed = 0 }
"""


@pytest.fixture
def spec_path(tmp_path):
    p = tmp_path / "digits.fc"
    p.write_text(SPEC)
    return p


def test_the_run_folder_holds_the_same_weights_as_safetensors(tmp_path, spec_path):
    train.run(load_spec(spec_path), out_dir=tmp_path / "run", quiet=True)
    npz = fio.load_npz(tmp_path / "run" / "weights.npz")
    st = load_file(tmp_path / "run" / "weights.safetensors")
    assert sorted(st) == sorted(npz) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    for k in npz:
        assert st[k].dtype == np.float32
        np.testing.assert_array_equal(st[k], npz[k])


def test_eval_and_init_accept_safetensors(tmp_path, spec_path):
    train.run(load_spec(spec_path), out_dir=tmp_path / "run", quiet=True)
    spec = load_spec(spec_path)
    a = train.evaluate(spec, tmp_path / "run" / "weights.npz")
    b = train.evaluate(spec, tmp_path / "run" / "weights.safetensors")
    assert a == b
    # --init from safetensors starts where --init from the npz starts: the same run
    train.run(spec, out_dir=tmp_path / "x", init=tmp_path / "run" / "weights.npz", quiet=True)
    train.run(
        spec, out_dir=tmp_path / "y", init=tmp_path / "run" / "weights.safetensors", quiet=True
    )
    x, y = fio.load_npz(tmp_path / "x/weights.npz"), fio.load_npz(tmp_path / "y/weights.npz")
    for k in x:
        np.testing.assert_array_equal(x[k], y[k])


def test_export_reads_safetensors_weights(tmp_path, spec_path):
    train.run(load_spec(spec_path), out_dir=tmp_path / "run", quiet=True)
    r = CliRunner().invoke(
        main,
        [
            "verify",
            str(spec_path),
            "--weights",
            str(tmp_path / "run" / "weights.safetensors"),
        ],
    )
    assert r.exit_code == 0, r.output


def test_wrong_names_and_broken_files_are_data_errors(tmp_path, spec_path):
    spec = load_spec(spec_path)
    bad = tmp_path / "other.safetensors"
    save_file({"layer.weight": np.zeros((16, 64), np.float32)}, bad)
    with pytest.raises(DataError, match="fc1.weight"):
        train.evaluate(spec, bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError, match=r"junk.safetensors: not a valid .safetensors file"):
        fio.load_weights_file(junk)
    r = CliRunner().invoke(main, ["eval", str(spec_path), "--weights", str(junk)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_without_the_package_a_one_line_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(fio, "_safetensors_numpy", lambda: None)
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"x")
    with pytest.raises(DataError, match="needs the safetensors package") as e:
        fio.load_weights_file(p)
    assert "[interop]" in str(e.value)
    fio.save_weights(tmp_path, {"a": np.zeros(2, np.float32)})  # npz only, no error
    assert (tmp_path / "weights.npz").exists() and not (tmp_path / "weights.safetensors").exists()


def test_the_python_api_loads_safetensors_and_judges_them_first(tmp_path, spec_path):
    import fcspec

    out = tmp_path / "run"
    train.run(load_spec(spec_path), out_dir=out, quiet=True)
    npz = fcspec.load_run(out)
    model = fcspec.load(spec_path).load_weights(out / "weights.safetensors")
    x = np.random.default_rng(0).random((5, 64), dtype=np.float32) * 16
    assert np.array_equal(model.output(x), npz.output(x))
    # a folder with PyTorch's file only (e.g. copied from a torch project)
    only = tmp_path / "only"
    only.mkdir()
    (only / "spec.fc").write_text(SPEC)
    (only / "weights.safetensors").write_bytes((out / "weights.safetensors").read_bytes())
    assert np.array_equal(fcspec.load_run(only).params["fc1.weight"], npz.params["fc1.weight"])
    # shapes are judged from the header: a wrong one is refused before the data is read
    arrays = load_file(out / "weights.safetensors")
    arrays["fc1.weight"] = np.zeros((16, 65), np.float32)
    save_file(arrays, tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match=r"fc1.weight has shape \[16, 65\]"):
        fcspec.load(spec_path).load_weights(tmp_path / "bad.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((out / "weights.safetensors").read_bytes()[:100])
    with pytest.raises(DataError, match="not a valid .safetensors file"):
        fcspec.load(spec_path).load_weights(tmp_path / "cut.safetensors")
