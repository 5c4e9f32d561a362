"""IR -> readable PyTorch source: `fcspec export SPEC --torch [--train]`.

Two generated files, both plain Python a PyTorch user can read and change:

- the module (`module_source`): an `nn.Module` whose attributes are the spec's
  layer names, so `load_state_dict` takes fcspec's `weights.npz` as it is; the
  preprocessing as (non-persistent) buffers; `from_run(folder)` to load a run
  folder (weights.safetensors or weights.npz, and preprocess.npz);
- with `--train`, the training script (`training_source`): the module plus the
  spec's loss, optimizer, schedule, batches and seed written out in PyTorch,
  following the random streams train.py documents (the data section is read by
  fcspec, so both see the same rows).

Nothing here imports torch: the text is generated from the IR alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import __version__, catalog, ir
from .errors import FcspecError

# linear's `init` as torch.nn.init calls (fcspec's formulas: xavier with gain 1, kaiming
# with fan_in and the ReLU gain); `default` is nn.Linear's own reset_parameters.
_INITS = {
    "xavier_uniform": "nn.init.xavier_uniform_(self.{n}.weight)",
    "xavier_normal": "nn.init.xavier_normal_(self.{n}.weight)",
    "kaiming_uniform": "nn.init.kaiming_uniform_(self.{n}.weight, nonlinearity='relu')",
    "kaiming_normal": "nn.init.kaiming_normal_(self.{n}.weight, nonlinearity='relu')",
    "zeros": "nn.init.zeros_(self.{n}.weight)",
}


def class_name(spec: ir.Spec) -> str:
    return spec.name if spec.name[:1].isupper() else spec.name[:1].upper() + spec.name[1:]


def _layer_module(layer: ir.Layer) -> str:
    if layer.op == "linear":
        bias = "" if layer.attrs.get("bias", True) else ", bias=False"
        return f"nn.Linear({layer.in_shape[0]}, {layer.attrs['units']}{bias})"
    code = _torch_call(catalog.LAYERS, layer.op, layer.attrs)
    if code is None:
        raise FcspecError(f"layer {layer.name}: op {layer.op!r} has no PyTorch equivalent here")
    return code


# Names a layer attribute must not take: nn.Module's own and the generated class's.
_RESERVED = {
    "forward",
    "network",
    "preprocess",
    "scale",
    "shift",
    "divisor",
    "from_run",
    "load_preprocess",
    "train",
    "eval",
    "training",
    "parameters",
    "named_parameters",
    "state_dict",
    "load_state_dict",
    "to",
    "cpu",
    "cuda",
    "float",
    "double",
    "half",
    "apply",
    "modules",
    "children",
    "buffers",
    "zero_grad",
    "type",
    "register_buffer",
    "requires_grad_",
}


def _module_body(spec: ir.Spec) -> list[str]:
    """The class definition (no imports)."""
    name = class_name(spec)
    clash = [l.name for l in spec.model.layers if l.name in _RESERVED]
    if clash:
        raise FcspecError(
            f"layer {clash[0]!r} would shadow nn.Module.{clash[0]} in the PyTorch module",
            hint="rename the layer in the spec",
        )
    shape = list(spec.model.input_shape)
    d = spec.data
    scale = float(d.scale) if d is not None else 1.0
    lines = [
        f"class {name}(nn.Module):",
        f'    """{spec.name} from {Path(str(spec.path)).name}: input {shape} -> output '
        f"{list(spec.model.output_shape)}.",
        "",
        "    Attributes are the spec's layer names: `load_state_dict` takes fcspec's",
        "    weights.npz as it is.  `forward` takes raw inputs, as the data files hold",
        "    them, and applies the preprocessing fcspec trained with first.",
        '    """',
        "",
        "    def __init__(self):",
        "        super().__init__()",
        "        # Preprocessing (x / scale - shift) / divisor, as fcspec's data section; the",
        "        # statistics come from preprocess.npz (from_run / load_preprocess).  Buffers, not",
        "        # parameters, and non-persistent, so state_dict holds exactly fcspec's weights.",
        f'        self.register_buffer("scale", torch.tensor({scale!r}), persistent=False)',
        f'        self.register_buffer("shift", torch.zeros({shape}), persistent=False)',
        f'        self.register_buffer("divisor", torch.ones({shape}), persistent=False)',
    ]
    for layer in spec.model.layers:
        lines.append(f"        self.{layer.name} = {_layer_module(layer)}")
    inits = [
        (l.name, l.attrs.get("init", "default"))
        for l in spec.model.layers
        if l.op == "linear" and l.attrs.get("init", "default") != "default"
    ]
    for n, kind in inits:
        lines.append(f"        {_INITS[kind].format(n=n)}")
        if any(l.name == n and l.attrs.get("bias", True) for l in spec.model.layers):
            lines.append(f"        nn.init.zeros_(self.{n}.bias)")
    lines += [
        "",
        "    def preprocess(self, x: torch.Tensor) -> torch.Tensor:",
        "        return (x / self.scale - self.shift) / self.divisor",
        "",
        "    def network(self, x: torch.Tensor) -> torch.Tensor:",
        '        """The layers alone, on preprocessed inputs (what training feeds)."""',
    ]
    lines += [f"        x = self.{l.name}(x)" for l in spec.model.layers]
    lines += [
        "        return x",
        "",
        "    def forward(self, x: torch.Tensor) -> torch.Tensor:",
        "        return self.network(self.preprocess(x))",
        "",
        "    def load_preprocess(self, path) -> None:",
        '        """scale, shift and divisor from a preprocess.npz that `fcspec run` wrote."""',
        "        with np.load(path, allow_pickle=False) as f:",
        '            for key in ("scale", "shift", "divisor"):',
        "                value = torch.from_numpy(np.asarray(f[key], np.float32))",
        "                getattr(self, key).copy_(value.reshape(getattr(self, key).shape))",
        "",
        "    @classmethod",
        f'    def from_run(cls, folder="runs/{spec.name}") -> "{name}":',
        '        """The trained model of an fcspec run folder, ready for inference (eval mode)."""',
        "        folder = Path(folder)",
        "        model = cls()",
        '        if (folder / "weights.safetensors").exists():',
        "            from safetensors.torch import load_file",
        "",
        '            state = load_file(folder / "weights.safetensors")',
        "        else:",
        '            with np.load(folder / "weights.npz", allow_pickle=False) as f:',
        "                state = {k: torch.from_numpy(f[k]) for k in f.files}",
        "        model.load_state_dict(state)",
        '        if (folder / "preprocess.npz").exists():',
        '            model.load_preprocess(folder / "preprocess.npz")',
        "        return model.eval()",
    ]
    return lines


def _header(spec: ir.Spec, what: str, usage: list[str]) -> list[str]:
    return [
        f'"""{spec.name}: {what} (generated by fcspec {__version__} from {spec.path}).',
        "",
        *usage,
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]


def module_source(spec: ir.Spec, module: str | None = None) -> str:
    """A standalone Python module defining the spec's network as an `nn.Module`;
    `module` is its import name, for the usage line."""
    name = class_name(spec)
    usage = [
        f"    from {module or spec.name.lower()} import {name}",
        f'    model = {name}.from_run("runs/{spec.name}")   # weights + preprocessing of a run',
        "    with torch.no_grad():",
        "        out = model(torch.from_numpy(x))            # raw inputs, as in the data files",
    ]
    lines = _header(spec, "the network as a PyTorch module", usage)
    lines += [
        "from pathlib import Path",
        "",
        "import numpy as np",
        "import torch",
        "from torch import nn",
        "",
        "",
    ]
    lines += _module_body(spec)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# The training script.


# The loss, optimizer and schedule lines are their catalog rows' `torch` calls.


def _loss_code(spec: ir.Spec) -> str:
    o = {k: v for k, v in spec.loss.options.items() if v is not None}
    code = _torch_call(catalog.LOSSES, spec.loss.kind, o)
    if code is None:
        raise FcspecError(f"loss {spec.loss.kind!r} has no PyTorch equivalent here")
    return code


def _optimizer_code(spec: ir.Spec) -> str:
    code = _torch_call(catalog.OPTIMIZERS, spec.optimizer.kind, dict(spec.optimizer.options))
    if code is None:
        raise FcspecError(f"optimizer {spec.optimizer.kind!r} has no PyTorch equivalent here")
    return code


def _schedule_code(spec: ir.Spec) -> str | None:
    """The scheduler line, or None (constant: no scheduler)."""
    from . import schedules

    if spec.schedule.kind not in catalog.SCHEDULES:
        raise FcspecError(f"schedule {spec.schedule.kind!r} has no PyTorch equivalent here")
    return _torch_call(
        catalog.SCHEDULES, spec.schedule.kind, schedules.resolved_options(spec.schedule)
    )


def _torch_call(table, kind: str, options) -> str | None:
    """The catalog row's PyTorch call for these options, or None (no row, or no call)."""
    row = table.get(kind)
    return catalog.torch_call(row, options) if row is not None else None


def training_source(spec: ir.Spec, spec_path: str | None = None, script: str = "train.py") -> str:
    """A script that trains the spec in PyTorch the way `fcspec run` does.  `spec_path` is
    the spec's path relative to the script's folder (the script finds it from there)."""
    t = spec.train
    name = class_name(spec)
    path = spec_path or str(spec.path)
    usage = [
        f"    python {script} [--init weights.npz] [--epochs N] [--out runs/{spec.name}-torch]",
        "",
        "The data section (files, splits, preprocessing) is read by fcspec, so this script",
        "trains on exactly the rows `fcspec run` trains on; everything else is PyTorch:",
        "the loss, optimizer and schedule below are the spec's, with torch's keywords.",
        "Batches follow fcspec's documented stream: np.random.default_rng(seed) draws one",
        "permutation per epoch.  The initial weights and dropout masks come from torch's",
        "generator (torch.manual_seed(seed)); --init starts from given weights instead.",
    ]
    lines = _header(spec, "trained in PyTorch as `fcspec run` trains it", usage)
    lines += [
        "import argparse",
        "import math",
        "from pathlib import Path",
        "",
        "import numpy as np",
        "import torch",
        "from torch import nn",
        "",
        f"SPEC = Path(__file__).resolve().parent / {path!r}",
        f"EPOCHS = {t.epochs}",
        f"BATCH = {t.batch!r}  # None: the whole training set (batch gradient descent)",
        f"SHUFFLE = {t.shuffle!r}",
        f"SEED = {t.seed}",
        f"CLIP_GRAD_NORM = {t.clip_grad_norm!r}",
        f"L1, L2 = {spec.regularize.l1!r}, {spec.regularize.l2!r}  # regularize: added to the loss, weights only",
        f"TASK = {spec.task!r}",
        "",
        "",
    ]
    lines += _module_body(spec)
    es = t.early_stop
    sched = _schedule_code(spec)
    plateau = spec.schedule.kind == "plateau"
    monitor = None
    if plateau:
        from . import schedules

        monitor = schedules.resolved_options(spec.schedule)["monitor"]
    linear_names = [l.name for l in spec.model.layers if l.op == "linear"]
    lines += [
        "",
        "",
        "def load_data():",
        '    """Training and validation splits as fcspec prepares them (preprocessed: the model\'s',
        '    own preprocessing is then the identity while training)."""',
        "    from fcspec import data",
        "    from fcspec.check import load_spec",
        "",
        "    prepared = data.prepare(load_spec(SPEC))",
        "    train = (prepared.train.x, prepared.train.y)",
        "    val = (prepared.val.x, prepared.val.y) if prepared.val is not None else None",
        "    return train, val, prepared.preprocess",
        "",
        "",
        "def metrics(model, loss_fn, x, y) -> dict:",
        "    model.eval()",
        "    with torch.no_grad():",
        "        out = model.network(torch.from_numpy(x))",
        "        m = {'loss': float(loss_fn(out, torch.from_numpy(y)))}",
        "        if TASK == 'classification':",
        "            m['accuracy'] = float((out.argmax(-1) == torch.from_numpy(y)).float().mean())",
        "    model.train()",
        "    return m",
        "",
        "",
        "def regularization(model):",
        "    if not (L1 or L2):",
        "        return 0.0",
        f"    weights = [{', '.join(f'model.{n}.weight' for n in linear_names)}]",
        "    return L1 * sum(w.abs().sum() for w in weights) + L2 * sum((w * w).sum() for w in weights)",
        "",
        "",
        "def main(argv=None):",
        "    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])",
        "    ap.add_argument('--init', help='start from these weights (.npz, as fcspec writes them)')",
        "    ap.add_argument('--epochs', type=int, default=EPOCHS)",
        f"    ap.add_argument('--out', default='runs/{spec.name}-torch')",
        "    args = ap.parse_args(argv)",
        "",
        "    torch.manual_seed(SEED)",
        f"    model = {name}()",
        "    if args.init:",
        "        with np.load(args.init, allow_pickle=False) as f:",
        "            model.load_state_dict({k: torch.from_numpy(f[k]) for k in f.files})",
        "    (x, y), val, preprocess = load_data()",
        f"    loss_fn = {_loss_code(spec)}",
        f"    optimizer = {_optimizer_code(spec)}",
        f"    scheduler = {sched}" if sched else "    scheduler = None",
        "    rng = np.random.default_rng(SEED)  # fcspec's shuffle stream",
        "    n = len(x)",
        "    batch = n if BATCH is None else min(BATCH, n)",
    ]
    if es is not None:
        lines += [
            f"    best, bad, best_state = None, 0, None  # early_stop(monitor={es.monitor!r}, patience={es.patience})",
        ]
    lines += [
        "    model.train()",
        "    for epoch in range(1, args.epochs + 1):",
        "        order = rng.permutation(n) if SHUFFLE else np.arange(n)",
        "        total, correct = 0.0, 0",
        "        for start in range(0, n, batch):",
        "            idx = order[start : start + batch]",
        "            xb, yb = torch.from_numpy(x[idx]), torch.from_numpy(y[idx])",
        "            optimizer.zero_grad()",
        "            out = model.network(xb)",
        "            loss = loss_fn(out, yb) + regularization(model)",
        "            loss.backward()",
        "            if CLIP_GRAD_NORM is not None:",
        "                nn.utils.clip_grad_norm_(model.parameters(), CLIP_GRAD_NORM)",
        "            optimizer.step()",
        "            total += loss.item() * len(idx)",
        "            if TASK == 'classification':",
        "                correct += int((out.argmax(-1) == yb).sum())",
        "        m = {'epoch': epoch, 'train_loss': total / n, 'lr': optimizer.param_groups[0]['lr']}",
        "        if TASK == 'classification':",
        "            m['train_accuracy'] = correct / n",
        "        if val is not None and len(val[0]):",
        "            m.update({f'val_{k}': v for k, v in metrics(model, loss_fn, *val).items()})",
        "        print('  '.join(f'{k} {v:.4g}' if isinstance(v, float) else f'{k} {v}' for k, v in m.items()))",
    ]
    if plateau:
        lines.append(f"        scheduler.step(m[{monitor!r}])")
    elif sched:
        lines.append("        scheduler.step()")
    if es is not None:
        sign = "-" if es.mode == "min" else ""
        lines += [
            f"        score = {sign}m[{es.monitor!r}]  # larger is better",
            f"        if best is None or score > best + {es.min_delta!r}:",
            "            best, bad = score, 0",
            "            best_state = {k: v.clone() for k, v in model.state_dict().items()}",
            "        else:",
            "            bad += 1",
            f"            if bad >= {es.patience}:",
            "                print(f'early stopping after epoch {epoch}')",
        ]
        if es.restore_best:
            lines.append("                model.load_state_dict(best_state)")
        lines.append("                break")
    lines += [
        "    out = Path(args.out)",
        "    out.mkdir(parents=True, exist_ok=True)",
        "    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}",
        "    np.savez(out / 'weights.npz', **state)  # fcspec eval / export read this",
        "    if preprocess is not None:",
        "        preprocess.save(out / 'preprocess.npz')",
        "    print(f'saved {out}/weights.npz')",
        "    return model",
        "",
        "",
        "if __name__ == '__main__':",
        "    main()",
    ]
    return "\n".join(lines) + "\n"


def write(path: str | os.PathLike, text: str) -> Path:
    from .io import atomic_write_text

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as e:
        raise FcspecError(f"cannot write {path}: {e.strerror or e}") from None
    return path
