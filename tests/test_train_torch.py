"""The whole training loop against PyTorch.

The same spec trained 3 epochs by `train.run` and by the equivalent torch
program -- same initial weights (torch's, passed with `init`), same data (what
`data.prepare` gives the trainer), same batches (the permutation stream that
train.py documents) -- ends with the same weights to float32 round-off.
The torch side is built from the IR's options, which are torch's keywords.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fcspec import data, train
from fcspec import io as fio
from fcspec.check import load_spec

sys.path.insert(0, str(Path(__file__).parent))
from test_train import weights

CLASSIFIER = """
model Digits {{ input [64]  fc1 = linear(16) -> relu  fc2 = linear(10) }}
loss cross_entropy
optimizer {optimizer}
schedule {schedule}
data {{ train = dataset("digits")  scale = 16 }}
train {{ epochs = 3  batch = {batch}  shuffle = {shuffle}  seed = 3 }}
"""

REGRESSOR = """
model Diabetes {{ input [10]  hidden = linear(16) -> tanh  out = linear(1) }}
loss mse
optimizer {optimizer}
schedule {schedule}
data {{ train = dataset("diabetes")  normalize = standard }}
train {{ epochs = 3  batch = {batch}  shuffle = {shuffle}  seed = 3 }}
"""

CASES = {
    "ce_sgd_momentum_steplr": (
        CLASSIFIER,
        "sgd(lr = 0.05, momentum = 0.9)",
        "step(step_size = 1, gamma = 0.5)",
        "32",
        "true",
    ),
    "ce_adam": (CLASSIFIER, "adam(lr = 0.01)", "constant", "32", "true"),
    "ce_adam_no_shuffle_ragged": (CLASSIFIER, "adam(lr = 0.01)", "constant", "100", "false"),
    "mse_sgd_momentum_steplr": (
        REGRESSOR,
        "sgd(lr = 0.001, momentum = 0.9)",
        "step(step_size = 2, gamma = 0.1)",
        "32",
        "true",
    ),
    "mse_adam": (REGRESSOR, "adam(lr = 0.01)", "constant", "32", "true"),
}

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}
LOSSES = {"cross_entropy": torch.nn.CrossEntropyLoss, "mse": torch.nn.MSELoss}


class TorchNet(torch.nn.Module):
    """The spec's layers as attributes named like the IR's, so state_dict keys match."""

    def __init__(self, model):
        super().__init__()
        self.order = []
        for layer in model.layers:
            if layer.op == "linear":
                mod = torch.nn.Linear(
                    layer.in_shape[0], layer.attrs["units"], bias=layer.attrs["bias"]
                )
            else:
                mod = ACTIVATIONS[layer.op]()
            setattr(self, layer.name, mod)
            self.order.append(layer.name)

    def forward(self, x):
        for name in self.order:
            x = getattr(self, name)(x)
        return x


def torch_train(spec, x: np.ndarray, y: np.ndarray, net: TorchNet) -> None:
    opt = OPTIMIZERS[spec.optimizer.kind](net.parameters(), **spec.optimizer.options)
    sched = (
        torch.optim.lr_scheduler.StepLR(opt, **spec.schedule.options)
        if spec.schedule.kind == "step"
        else None
    )
    loss_fn = LOSSES[spec.loss.kind](
        **{k: v for k, v in spec.loss.options.items() if v is not None}
    )
    n, batch = len(x), spec.train.batch or len(x)
    rng = np.random.default_rng(spec.train.seed)  # train.py's documented shuffle stream
    for _ in range(spec.train.epochs):
        order = rng.permutation(n) if spec.train.shuffle else np.arange(n)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            opt.zero_grad()
            loss = loss_fn(net(torch.from_numpy(x[idx])), torch.from_numpy(y[idx]))
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("case", sorted(CASES))
def test_three_epochs_match_torch(tmp_path, case):
    template, optimizer, schedule, batch, shuffle = CASES[case]
    (tmp_path / "spec.fc").write_text(
        template.format(optimizer=optimizer, schedule=schedule, batch=batch, shuffle=shuffle)
    )
    spec = load_spec(tmp_path / "spec.fc")
    torch.manual_seed(0)
    net = TorchNet(spec.model)
    fio.save_npz(
        tmp_path / "init.npz", {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    )

    train.run(spec, out_dir=tmp_path / "run", init=tmp_path / "init.npz", quiet=True)

    prep = data.prepare(spec, tmp_path)
    torch_train(spec, prep.train.x, prep.train.y, net)
    ours = weights(tmp_path / "run/weights.npz")
    theirs = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert sorted(ours) == sorted(theirs)
    moved = 0.0
    start = fio.load_npz(tmp_path / "init.npz")
    for k in ours:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=0, atol=1e-5, err_msg=k)
        moved = max(moved, float(np.abs(ours[k] - start[k]).max()))
    assert moved > 1e-2  # the comparison is about real training, not the initial weights
