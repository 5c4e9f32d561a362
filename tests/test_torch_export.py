"""`fcspec export --torch`: the generated source, without torch (test_torch_export_torch.py runs it)."""

from __future__ import annotations

import ast

import pytest
from click.testing import CliRunner

from conftest import SPECS
from fcspec import check, torch_export
from fcspec.cli import main


def test_the_mnist_module_reads_as_written(golden, in_root):
    spec = check.load_spec("specs/mnist.fc")
    golden("torch/mnist.py.txt", torch_export.module_source(spec, "mnist"))


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_gives_valid_python(path):
    spec = check.load_spec(path)
    for text in (torch_export.module_source(spec), torch_export.training_source(spec, "x.fc")):
        ast.parse(text)


def test_the_cli_writes_both_files_and_refuses_mixed_formats(tmp_path, in_root):
    cli = CliRunner()
    out = tmp_path / "net.py"
    r = cli.invoke(main, ["export", "specs/digits.fc", "--torch", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "class Digits(nn.Module):" in out.read_text()
    script = tmp_path / "train_net.py"
    r = cli.invoke(main, ["export", "specs/digits.fc", "--torch", "--train", "-o", str(script)])
    assert r.exit_code == 0, r.output
    text = script.read_text()
    assert "torch.optim.Adam(" in text and "CosineAnnealingLR" in text
    assert "nn.CrossEntropyLoss(reduction='mean', label_smoothing=0.1)" in text
    for args in (["--onnx", "--torch"], [], ["--onnx", "--train"]):
        r = cli.invoke(main, ["export", "specs/digits.fc", *args])
        assert r.exit_code == 2, (args, r.output)


def test_a_layer_named_like_a_module_method_is_refused():
    spec = check.compile_source(
        "model M { input [4]  forward = linear(3) }\nloss mse\noptimizer sgd(lr = 0.1)\n"
    )
    with pytest.raises(Exception, match="shadow nn.Module.forward"):
        torch_export.module_source(spec)
