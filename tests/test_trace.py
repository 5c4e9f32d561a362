"""`fcspec trace`: the traced step is the real one, its gradient checks pass, and a wrong
backward is caught by them."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import ROOT
from fcspec import ops, trace, train
from fcspec.check import check_file
from fcspec.cli import main


def _spec(name: str):
    return check_file(str(ROOT / "specs" / name)).spec


def test_digits_trace_explains_one_step_with_passing_checks():
    r = CliRunner().invoke(main, ["trace", str(ROOT / "specs" / "digits.fc")])
    assert r.exit_code == 0, r.output
    out = r.output
    # every layer's tensor, the loss with its formula, every gradient with its formula
    for name in ("fc1", "relu_1", "dropout_1", "fc2", "relu_2", "fc3"):
        assert f"  {name} " in out
    assert "(softmax(z) - 0.9 onehot(y) - 0.01) / 32" in out  # label_smoothing 0.1, batch 32
    assert "dL/dfc1.weight  [256, 64]   = g^T x" in out
    assert "g * (y > 0)" in out
    assert "p = p - lr / (1 - 0.9^t) * m / (sqrt(v / (1 - 0.999^t)) + 1e-08)" in out
    assert "FAIL" not in out
    assert "gradient check: 12 gradients" in out and "all ok" in out


def test_trace_uses_the_training_step_numbers():
    """The traced gradients are bit for bit Network.backward's on the same batch and masks,
    and the optimizer's new value is what the optimizer wrote."""
    from fcspec import interpreter, losses

    spec = _spec("digits.fc")
    t = trace.trace(spec, checks=2)
    r = trace._Replay(spec, None, None)
    rows = next(r.batches())[2]
    assert list(rows[:8]) == t["rows"]
    xb, yb = r.take(rows)
    net = interpreter.Network(spec.model, rng=np.random.default_rng([spec.train.seed, 1]))
    out = net.forward(xb, True, np.random.default_rng([spec.train.seed, 2]))
    value, g = losses.make_loss(spec.loss).value_and_grad(out, yb)
    net.backward(g)
    assert t["loss"]["value"] == pytest.approx(value, rel=0, abs=0)
    by_name = {row["param"]: row for row in t["backward"] if "param" in row}
    assert set(by_name) == set(net.grads)
    for name, grad in net.grads.items():
        assert by_name[name]["values"] == [float(v) for v in grad.ravel()[:4]]
        assert by_name[name]["norm"] == pytest.approx(np.linalg.norm(grad.astype(np.float64)))
    o = t["optimizer"]
    j = tuple(o["index"])
    assert o["p"] == float(net.params[o["param"]][j])
    assert o["g"] == float(net.grads[o["param"]][j])
    # the float64 worked example ends at the float32 step's value, to float32 round-off
    worked = float(o["worked"][-1].rsplit("= ", 1)[1])
    assert worked == pytest.approx(o["p_new"], rel=1e-5)


def test_step_k_continues_from_the_trained_weights(tmp_path):
    """Step K is reached by real steps: the first step of epoch 2 starts from the weights
    `fcspec run --epochs 1` saves (iris: 120 rows, batch 16, 8 steps an epoch)."""
    spec = _spec("iris.fc")
    t = trace.trace(spec, step=9, checks=2)
    assert (t["epoch"], t["step_in_epoch"], t["steps_per_epoch"]) == (2, 1, 8)
    train.run(spec, out_dir=tmp_path, epochs=1, quiet=True)
    w = np.load(tmp_path / "weights.npz")
    o = t["optimizer"]
    assert o["p"] == float(w[o["param"]][tuple(o["index"])])
    assert o["t"] == 9


def test_sigmoid_with_bce_shows_a_minus_y(tmp_path):
    spec = _spec("logistic.fc")
    t = trace.trace(spec, batch=8)
    rows = [row for row in t["backward"] if row["name"] == "dL/dout"]
    assert rows and rows[0]["fused"].startswith("(A - y) / 8")
    assert t["check"]["ok"]
    assert "sgd" == t["optimizer"]["kind"]
    assert t["optimizer"]["worked"][-1].startswith("p = ")


def test_json_output_is_for_tools():
    r = CliRunner().invoke(
        main, ["trace", str(ROOT / "specs" / "iris.fc"), "--json", "--batch", "5"]
    )
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["batch"] == 5 and d["check"]["ok"]
    assert [f["name"] for f in d["forward"]] == ["x", "hidden", "relu_1", "out"]
    assert d["forward"][1]["shape"] == [5, 16]
    for row in d["backward"]:
        assert {"name", "shape", "values", "formula", "check"} <= set(row)


def test_a_wrong_backward_is_reported_as_fail(monkeypatch):
    """relu's backward forgetting its mask: the checks below it fail, the command exits 1."""
    good = ops.OPS["relu"]

    def wrong(c, x, y, gy, need_gx):
        return gy.copy() if need_gx else None

    monkeypatch.setitem(ops.OPS, "relu", replace(good, backward=wrong))
    t = trace.trace(_spec("digits.fc"))
    assert not t["check"]["ok"]
    verdict = {row["name"]: row["check"]["ok"] for row in t["backward"]}
    assert verdict["dL/dfc3"] and verdict["dL/dfc3.weight"]  # above the wrong op: fine
    assert not verdict["dL/dfc2"] and not verdict["dL/dfc1.weight"]
    r = CliRunner().invoke(main, ["trace", str(ROOT / "specs" / "digits.fc")])
    assert r.exit_code == 1
    assert "FAIL" in r.output and "a gradient check failed" in r.output


def test_trace_with_regularization_and_clipping(tmp_path):
    src = (ROOT / "specs" / "iris.fc").read_text()
    src = src.replace(
        "loss      cross_entropy", "loss      cross_entropy\nregularize l2(0.01) + l1(0.001)"
    )
    src = src.replace("seed    = 0", "seed    = 0\n    clip_grad_norm = 0.05")
    p = tmp_path / "iris_reg.fc"
    p.write_text(src)
    res = check_file(str(p))
    assert not res.errors, res.diagnostics
    t = trace.trace(res.spec, base_dir=ROOT / "specs")
    assert t["check"]["ok"]
    assert t["regularize"]["formula"].startswith("dL/dW += 0.02 W + 0.001 sign(W)")
    assert t["clip"]["scaled"] and t["clip"]["norm"] > 0.05
