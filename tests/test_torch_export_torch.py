"""`fcspec export --torch`: the generated PyTorch module and training script, run by torch 2.13.

The module takes fcspec's weights as they are and computes what the interpreter
computes; the training script, from the same initial weights and batches, ends
one epoch where `fcspec run` ends (the parity tolerance of test_train_torch.py).
Also: the safetensors file PyTorch writes is read by `--init` and `--weights`.
"""

from __future__ import annotations

import importlib.util
import itertools

import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from fcspec import check, data, interpreter, torch_export, train  # noqa: E402
from fcspec import io as fio  # noqa: E402
from fcspec.cli import main  # noqa: E402

_count = itertools.count()

EVERY_LAYER = """
model Every {
  input [2, 3]
  flatten
  fc1 = linear(16, init = xavier_uniform) -> relu
  a = linear(16) -> leaky_relu(0.2) -> dropout(0.3)
  b = linear(16, init = kaiming_normal) -> elu(0.5)
  linear(16) -> selu
  linear(16, bias = false) -> sigmoid
  linear(16) -> tanh
  linear(16) -> gelu
  linear(16) -> gelu("tanh")
  linear(16) -> silu
  linear(16) -> softplus(0.5, threshold = 3)
  linear(16) -> softmax
  out = linear(5) -> log_softmax
}
loss nll
optimizer sgd(lr = 0.1)
data { train = dataset("iris")  scale = 255  normalize = standard }
"""


def load_generated(path):
    name = f"generated_{next(_count)}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_module_takes_fcspecs_weights_and_matches_the_interpreter(tmp_path):
    spec = check.compile_source(EVERY_LAYER)
    path = torch_export.write(tmp_path / "every.py", torch_export.module_source(spec))
    mod = load_generated(path)
    torch.manual_seed(0)
    model = mod.Every()
    params = interpreter.init_params(spec.model, np.random.default_rng(0))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in params.items()})  # strict
    rng = np.random.default_rng(1)
    pre = data.Preprocess(
        np.float32(255),
        rng.random((2, 3), dtype=np.float32),
        (rng.random((2, 3)) + 0.5).astype(np.float32),
        "standard",
    )
    pre.save(tmp_path / "preprocess.npz")
    model.load_preprocess(tmp_path / "preprocess.npz")
    model.eval()
    raw = (rng.standard_normal((9, 2, 3)) * 100 + 100).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(raw)).numpy()
    want = interpreter.Network(spec.model, params).predict(pre.apply(raw))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the init options are torch.nn.init's: xavier's bound, kaiming's std, biases at zero
    assert float(model.fc1.bias.detach().abs().max()) == 0.0
    assert float(model.fc1.weight.detach().abs().max()) <= (6 / (6 + 16)) ** 0.5


SMALL = """
model Digits {{ input [64]  fc1 = linear(32) -> relu  fc2 = linear(10) }}
loss cross_entropy(label_smoothing = 0.1)
optimizer {optimizer}
schedule {schedule}
{regularize}
data {{ train = dataset("digits")  validate = 0.2  scale = 16 }}
train {{ epochs = 1  batch = 32  seed = 5  {extra} }}
"""

REGRESSION = """
model Diabetes {{ input [10]  hidden = linear(16) -> tanh  out = linear(1) }}
loss huber(0.5)
optimizer {optimizer}
schedule {schedule}
{regularize}
data {{ train = dataset("diabetes")  validate = 0.1  normalize = standard }}
train {{ epochs = 1  batch = 16  seed = 2  {extra} }}
"""

PARITY = {
    "ce_adam_steplr": (SMALL, "adam(lr = 0.01)", "step(step_size = 1, gamma = 0.5)", "", ""),
    "ce_sgd_nesterov_l2": (
        SMALL,
        "sgd(lr = 0.05, momentum = 0.9, nesterov = true)",
        "constant",
        "regularize l2(1e-3)",
        "",
    ),
    "huber_adamw_clip": (
        REGRESSION,
        "adamw(lr = 0.01)",
        "constant",
        "",
        "clip_grad_norm = 0.5",
    ),
}


@pytest.mark.parametrize("case", sorted(PARITY))
def test_the_training_script_ends_an_epoch_where_fcspec_run_ends(tmp_path, case):
    template, optimizer, schedule, regularize, extra = PARITY[case]
    text = template.format(
        optimizer=optimizer, schedule=schedule, regularize=regularize, extra=extra
    )
    (tmp_path / "spec.fc").write_text(text)
    spec = check.load_spec(tmp_path / "spec.fc")
    script = torch_export.write(
        tmp_path / "train_spec.py", torch_export.training_source(spec, "spec.fc")
    )
    mod = load_generated(script)
    torch.manual_seed(0)
    start = {
        k: v.detach().numpy().copy() for k, v in getattr(mod, spec.name)().state_dict().items()
    }
    fio.save_npz(tmp_path / "init.npz", start)

    train.run(spec, out_dir=tmp_path / "fcspec", init=tmp_path / "init.npz", quiet=True)
    mod.main(["--init", str(tmp_path / "init.npz"), "--out", str(tmp_path / "torch")])

    ours = fio.load_npz(tmp_path / "fcspec" / "weights.npz")
    theirs = fio.load_npz(tmp_path / "torch" / "weights.npz")
    assert sorted(ours) == sorted(theirs)
    moved = 0.0
    for k in ours:
        np.testing.assert_allclose(theirs[k], ours[k], rtol=0, atol=1e-5, err_msg=k)
        moved = max(moved, float(np.abs(ours[k] - start[k]).max()))
    assert moved > 1e-3  # real training happened


def test_from_run_loads_a_run_folder_and_torch_safetensors_go_back_in(tmp_path):
    (tmp_path / "spec.fc").write_text(
        SMALL.format(optimizer="adam(lr = 0.01)", schedule="constant", regularize="", extra="")
    )
    spec = check.load_spec(tmp_path / "spec.fc")
    train.run(spec, out_dir=tmp_path / "run", quiet=True)
    r = CliRunner().invoke(
        main, ["export", str(tmp_path / "spec.fc"), "--torch", "-o", str(tmp_path / "digits.py")]
    )
    assert r.exit_code == 0, r.output
    mod = load_generated(tmp_path / "digits.py")
    model = mod.Digits.from_run(tmp_path / "run")
    params = fio.load_npz(tmp_path / "run" / "weights.npz")
    pre = data.Preprocess.load(tmp_path / "run" / "preprocess.npz")
    raw = np.random.default_rng(0).integers(0, 17, (20, 64)).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(raw)).numpy()
    want = interpreter.Network(spec.model, params).predict(pre.apply(raw))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    # PyTorch's own safetensors file, with the spec's names, is read without torch's help
    from safetensors.torch import save_file

    with torch.no_grad():
        model.fc2.weight.mul_(0.5)
    save_file(model.state_dict(), tmp_path / "torch.safetensors")
    loaded = fio.load_weights_file(tmp_path / "torch.safetensors")
    np.testing.assert_array_equal(loaded["fc2.weight"], model.fc2.weight.detach().numpy())
    a = train.evaluate(spec, tmp_path / "torch.safetensors")
    assert a["loss"] != train.evaluate(spec, tmp_path / "run" / "weights.npz")["loss"]
    train.run(spec, out_dir=tmp_path / "tuned", init=tmp_path / "torch.safetensors", quiet=True)
    assert (tmp_path / "tuned" / "weights.safetensors").exists()


# options beyond the defaults, so every `[...]` part and required option of a row is written
_SAMPLES = {
    "cross_entropy": [{"label_smoothing": 0.1, "weight": (1.0, 2.0, 0.5)}],
    "nll": [{"weight": (1.0, 2.0, 0.5)}],
    "huber": [{"delta": 2.0}],
    "step": [{"step_size": 3}],
    "multistep": [{"milestones": (2, 5)}],
    "exponential": [{"gamma": 0.9}],
    "cosine": [{"t_max": 7}],
    "plateau": [{"monitor": "val_accuracy"}],
}


def _calls():
    from fcspec import catalog

    for what, table in (
        ("loss", catalog.LOSSES),
        ("optimizer", catalog.OPTIMIZERS),
        ("schedule", catalog.SCHEDULES),
    ):
        for name, row in table.items():
            for given in _SAMPLES.get(name, [{}]) + (
                [{"reduction": "sum"}] if what == "loss" else []
            ):
                options, problems = catalog.resolve(row, given, name)
                assert problems == [], (name, problems)
                yield what, name, options, catalog.torch_call(row, options)


@pytest.mark.parametrize("case", list(_calls()), ids=lambda c: f"{c[1]}-{sorted(c[2].items())}")
def test_each_rows_torch_call_builds_its_torch_object(case):
    """The catalog rows' `torch` calls (what `export --torch --train` writes) are real torch
    constructors, with each option landing on torch's attribute of that name."""
    what, name, options, code = case
    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    if code is None:  # constant: no scheduler
        assert (what, name) == ("schedule", "constant")
        return
    made = eval(code, {"torch": torch, "nn": torch.nn, "model": model, "optimizer": optimizer})
    if what == "optimizer":
        for k, v in options.items():
            got = made.defaults[k]
            assert (tuple(got) if isinstance(v, tuple) else got) == v, (name, k)
    elif what == "loss":
        torch_reduction = {"kl_div": {"mean": "batchmean"}}.get(name, {})
        want = torch_reduction.get(options["reduction"], options["reduction"])
        assert made.reduction == want
        for k in ("label_smoothing", "delta"):
            if k in options:
                assert getattr(made, k) == options[k]
        if options.get("weight") is not None:
            assert made.weight.tolist() == list(options["weight"])
    else:
        assert isinstance(
            made, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        )
        if name == "plateau":
            assert made.mode == options["mode"] == "max" and made.patience == options["patience"]
        if name == "cosine":
            assert made.T_max == 7
        if name == "multistep":
            assert sorted(made.milestones) == [2, 5]
