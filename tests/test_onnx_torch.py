"""The ONNX export against PyTorch as a third oracle: the equivalent `nn.Sequential` agrees
with onnxruntime on every op case, and `torch.onnx.export` of the same network builds the
same graph.  The rest of the exporter's tests, which need no torch, are in test_onnx.py."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from test_onnx import (
    CASES,
    act,
    case_id,
    close,
    make_spec,
    mnist_like,
    op_spec,
    op_types,
    ort_run,
    random_params,
)

from fcspec import ir, onnx_export, torch_export


def torch_module(torch, layer: ir.Layer):
    """The layer as torch.nn builds it from its catalog row's `torch` call (what
    `fcspec export --torch` writes): torch then computes it, independently of fcspec."""
    return eval(torch_export._layer_module(layer), {"nn": torch.nn, "torch": torch})


def torch_sequential(torch, spec: ir.Spec, params):
    """The equivalent nn.Sequential, named after the layers: fcspec's weights load as its state_dict."""
    from collections import OrderedDict

    seq = torch.nn.Sequential(
        OrderedDict((l.name, torch_module(torch, l)) for l in spec.model.layers)
    )
    seq.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()}, strict=True)
    return seq.eval()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_torch_sequential_agrees_with_onnxruntime(case):
    torch = pytest.importorskip("torch")
    spec = op_spec(*case)
    params = random_params(spec)
    x = np.random.default_rng(4).standard_normal((16, *spec.model.input_shape)).astype(np.float32)
    with torch.no_grad():
        want = torch_sequential(torch, spec, params)(torch.from_numpy(x)).numpy()
    assert close(ort_run(onnx_export.export(spec, params), x), want)


@pytest.mark.filterwarnings(
    "ignore::DeprecationWarning"
)  # torch's TorchScript exporter announces its end
@pytest.mark.parametrize("act_op", ["relu", "gelu"])
def test_torch_onnx_export_runs_like_ours(act_op, tmp_path):
    torch = pytest.importorskip("torch")
    spec = mnist_like()
    layers = [
        l
        if l.op != "relu"
        else act(
            l.name, act_op, l.in_shape, **({"approximate": "none"} if act_op == "gelu" else {})
        )
        for l in spec.model.layers
    ]
    spec = make_spec(layers, (1, 4, 4), name="MnistLike")
    params = random_params(spec, std=0.5)
    seq = torch_sequential(torch, spec, params)
    buf = io.BytesIO()
    torch.onnx.export(
        seq,
        (torch.zeros(2, 1, 4, 4),),
        buf,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["output"],
        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
    )
    theirs = onnx.load_from_string(buf.getvalue())
    ours = onnx_export.export(spec, params, opset=17)
    x = np.random.default_rng(6).standard_normal((11, 1, 4, 4)).astype(np.float32)
    with torch.no_grad():
        want = seq(torch.from_numpy(x)).numpy()
    assert close(ort_run(theirs, x), want)
    assert close(ort_run(ours, x), want)
    if act_op == "relu":
        # the same graph, node for node
        assert (
            op_types(ours)
            == op_types(theirs)
            == ["Flatten", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
        )
    else:
        # both expand Gelu into Erf at opset 17 (torch with Div by sqrt 2, we Mul by 1/sqrt 2)
        assert "Erf" in op_types(ours) and "Erf" in op_types(theirs)
        assert op_types(ours).count("Gemm") == op_types(theirs).count("Gemm") == 3
