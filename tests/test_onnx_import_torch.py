"""`fcspec import` of models written by `torch.onnx.export` (the TorchScript-based exporter
and the dynamo one), checked against PyTorch's own outputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from fcspec import check, interpreter, onnx_import  # noqa: E402
from fcspec.cli import main  # noqa: E402


class Named(torch.nn.Module):
    """A module with named nn.Linear attributes and its own input normalization."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.linspace(-1, 1, 6).reshape(1, 2, 3))
        self.register_buffer("std", torch.linspace(0.5, 2, 6).reshape(1, 2, 3))
        self.fc1 = torch.nn.Linear(6, 16)
        self.fc2 = torch.nn.Linear(16, 8)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = ((x - self.mean) / self.std).flatten(1)
        x = torch.nn.functional.gelu(self.fc1(x))
        x = torch.nn.functional.elu(self.fc2(x), alpha=0.5)
        return self.head(x)


def _sequential():
    return torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(6, 16),
        torch.nn.SiLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(16, 8),
        torch.nn.LeakyReLU(0.1),
        torch.nn.Linear(8, 8),
        torch.nn.Tanh(),
        torch.nn.Linear(8, 3),
        torch.nn.LogSoftmax(dim=-1),
    )


def _export(module, path, opset: int, dynamo: bool) -> None:
    torch.manual_seed(0)
    module.eval()
    x = torch.randn(4, 1, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch")
            torch.onnx.export(
                module,
                (x,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=({0: batch},),
                verbose=False,
            )
        else:
            torch.onnx.export(
                module,
                (x,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                opset_version=opset,
                dynamo=False,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            )


CASES = [(kind, opset, False) for kind in ("sequential", "named") for opset in (17, 18, 19, 20)]
CASES += [("sequential", 17, True), ("named", 20, True)]


@pytest.mark.parametrize("kind,opset,dynamo", CASES)
def test_torch_exports_import_and_match_torch(tmp_path, kind, opset, dynamo):
    torch.manual_seed(1)
    module = _sequential() if kind == "sequential" else Named()
    path = tmp_path / "m.onnx"
    _export(module, path, opset, dynamo)
    result = onnx_import.import_model(onnx_import.read_model(path), source=str(path))
    spec = check.compile_source(result.text)
    ops = [l.op for l in spec.model.layers]
    if kind == "sequential":
        assert ops[:3] == ["flatten", "linear", "silu"] and ops[-1] == "log_softmax"
        assert spec.loss.kind == "nll"
    else:
        assert [l.name for l in spec.model.layers if l.op == "linear"] == ["fc1", "fc2", "head"]
        assert result.preprocess is not None  # the module's (x - mean) / std
        state = module.state_dict()
        for name in ("fc1", "fc2", "head"):
            np.testing.assert_array_equal(result.params[f"{name}.weight"], state[f"{name}.weight"])
    x = np.random.default_rng(2).standard_normal((7, 1, 2, 3)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    xin = x if result.preprocess is None else result.preprocess.apply(x)
    got = interpreter.Network(spec.model, result.params).predict(xin)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_torch_model_imports_and_fine_tunes(tmp_path, monkeypatch):
    torch.manual_seed(3)
    module = Named()
    _export(module, tmp_path / "net.onnx", 17, False)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((120, 1, 2, 3)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, y=rng.integers(0, 3, 120))
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    r = cli.invoke(main, ["import", "net.onnx", "--out", "imp", "--data", "train.npz"])
    assert r.exit_code == 0, r.output
    for args in (
        ["eval", "imp/net.fc", "--weights", "imp/weights.npz"],
        ["verify", "imp/net.fc", "--weights", "imp/weights.npz"],
        ["run", "imp/net.fc", "--init", "imp/weights.npz", "--epochs", "1", "-q", "--out", "t"],
    ):
        r = cli.invoke(main, args)
        assert r.exit_code == 0, (args, r.output)
    tuned = np.load(tmp_path / "t" / "weights.npz")
    assert sorted(tuned.files) == sorted(
        f"{n}.{k}" for n in ("fc1", "fc2", "head") for k in ("weight", "bias")
    )
