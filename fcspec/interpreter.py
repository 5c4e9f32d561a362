"""The NumPy interpreter: parameter initialization, forward and backward over the IR.

`Network` keeps every parameter in ONE flat float32 vector `theta` and every
gradient in one flat vector `grad` with the same layout (the order of
`ir.Model.param_shapes()`), so optimizers, gradient clipping and checkpoints
work on a single array.  `params` / `grads` are dicts of named views into them
("fc1.weight", PyTorch's `state_dict` keys and layout).

The layer arithmetic lives in the op table (`ops.OPS`); this module only walks
the layers.  Activation and gradient buffers are allocated once per batch size
and reused, so a training step at a fixed batch size allocates nothing big.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from . import catalog, ir, kernels
from .errors import DataError, TrainingError
from .ops import OPS, Buffers, Context, fused_plan

# Batch sizes whose buffers are kept: training uses two (the batch and the last,
# smaller one), evaluation and predict a few more.
_MAX_CACHED_BATCH_SIZES = 6


def init_params(model: ir.Model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh float32 parameters, keys in `model.param_shapes()` order.

    `default` is PyTorch's `nn.Linear.reset_parameters`: weight and bias both
    ~ U(-1/sqrt(in), 1/sqrt(in)).  The other inits are the `torch.nn.init`
    functions with their defaults (gain 1 for xavier; a = 0, mode fan_in,
    nonlinearity leaky_relu, i.e. gain sqrt(2), for kaiming); with any
    non-default init the BIAS IS ZERO (the usual companion of those schemes).
    Draws happen layer by layer, weight before bias, from `rng`.
    """
    out: dict[str, np.ndarray] = {}
    for layer in model.layers:
        if not layer.params:
            continue
        init = layer.attrs.get("init", "default")
        if init not in catalog.INITS:
            raise TrainingError(f"layer {layer.name!r}: unknown init {init!r}")
        for key, shape in layer.params.items():
            name = f"{layer.name}.{key}"
            if key == "weight":
                out[name] = _init_weight(init, shape, rng)
            elif init == "default":
                fan_in = layer.params["weight"][1]
                bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                out[name] = rng.uniform(-bound, bound, size=shape).astype(np.float32)
            else:
                out[name] = np.zeros(shape, np.float32)
    return out


def _init_weight(init: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    fan_out, fan_in = shape
    if init == "zeros":
        return np.zeros(shape, np.float32)
    if init == "default":  # kaiming_uniform(a = sqrt(5)) reduces to this bound
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    if init.startswith("xavier"):
        std = math.sqrt(2.0 / (fan_in + fan_out))
    else:  # kaiming, fan_in mode, gain sqrt(2)
        std = math.sqrt(2.0) / math.sqrt(fan_in) if fan_in > 0 else 0.0
    if init.endswith("uniform"):
        bound = math.sqrt(3.0) * std
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return (rng.standard_normal(size=shape) * std).astype(np.float32)


class Network:
    """A model's parameters plus forward / backward over a batch.

    `forward` returns a buffer owned by the network that the next `forward`
    overwrites: copy it to keep it.  `backward` uses the inputs and outputs of
    the last `forward` and OVERWRITES `grad`.
    """

    def __init__(
        self,
        model: ir.Model,
        params: dict[str, np.ndarray] | None = None,
        rng: np.random.Generator | None = None,
    ):
        self.model = model
        self.rng = rng if rng is not None else np.random.default_rng()
        shapes = model.param_shapes()
        total = sum(math.prod(s) for s in shapes.values())
        self.theta = np.zeros(total, np.float32)
        self.grad = np.zeros(total, np.float32)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.offsets: dict[str, tuple[int, int]] = {}  # name -> (start, stop) in theta
        start = 0
        for name, shape in shapes.items():
            stop = start + math.prod(shape)
            self.params[name] = self.theta[start:stop].reshape(shape)
            self.grads[name] = self.grad[start:stop].reshape(shape)
            self.offsets[name] = (start, stop)
            start = stop
        # Per layer: {"weight": view} dicts shared by every Context.
        self._layer_params = [
            {k: self.params[f"{l.name}.{k}"] for k in l.params} for l in model.layers
        ]
        self._layer_grads = [
            {k: self.grads[f"{l.name}.{k}"] for k in l.params} for l in model.layers
        ]
        #: names of the weights `regularize` applies to (linear weights, not biases)
        self.weight_names = tuple(
            f"{l.name}.weight" for l in model.layers if l.op == "linear" and "weight" in l.params
        )
        missing = [l.op for l in model.layers if l.op not in OPS]
        if missing:
            raise TrainingError(f"the interpreter has no op {missing[0]!r}")
        self._ops = [OPS[l.op] for l in model.layers]
        self._train_ops: list | None = None  # _ops, or the fused plan with the kernels
        self._last_ops = self._ops
        # The input gradient of a layer is needed only if some layer below it has parameters.
        self._need_gx = []
        below = False
        for layer in model.layers:
            self._need_gx.append(below)
            below = below or bool(layer.params)
        self._contexts: OrderedDict[int, list[Context]] = OrderedDict()
        self._last: list[Context] | None = None
        n = len(model.layers)
        self._xs: list[np.ndarray | None] = [None] * n
        self._ys: list[np.ndarray | None] = [None] * n
        self._scratch = Buffers()
        self.load_params(params if params is not None else init_params(model, self.rng))

    # -- parameters ---------------------------------------------------------

    def load_params(self, d) -> None:
        """Copy named arrays (a dict or an open npz) into `theta`, checking names and shapes."""
        keys = set(d.keys())
        expected = self.params.keys()
        missing = [k for k in expected if k not in keys]
        unexpected = sorted(k for k in keys if k not in expected)
        if missing:
            raise DataError(
                f"parameter {missing[0]!r} is missing (expected keys: {', '.join(expected)})"
            )
        if unexpected:
            raise DataError(
                f"unexpected parameter {unexpected[0]!r} (expected keys: {', '.join(expected)})"
            )
        arrays = {}
        for name, view in self.params.items():
            a = np.asarray(d[name])
            if a.shape != view.shape:
                raise DataError(
                    f"parameter {name!r}: expected shape {list(view.shape)}, found {list(a.shape)}"
                )
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise DataError(f"parameter {name!r}: expected numbers, found dtype {a.dtype}")
            arrays[name] = a
        for name, a in arrays.items():  # only after every check, so a bad file changes nothing
            np.copyto(self.params[name], a, casting="unsafe")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, PyTorch's keys and layout (what weights.npz holds)."""
        return {k: v.copy() for k, v in self.params.items()}

    def scratch(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A float32 work array kept between steps (used by `losses.regularization`)."""
        return self._scratch.get(name, shape)

    # -- forward / backward -------------------------------------------------

    def _contexts_for(self, n: int) -> list[Context]:
        ctxs = self._contexts.get(n)
        if ctxs is None:
            ctxs = [
                Context(l, p, g)
                for l, p, g in zip(self.model.layers, self._layer_params, self._layer_grads)
            ]
            for lower, upper in zip(ctxs, ctxs[1:]):
                upper.below = lower  # a fused activation reads the linear's bias below it
            self._contexts[n] = ctxs
            if len(self._contexts) > _MAX_CACHED_BATCH_SIZES:
                self._contexts.popitem(last=False)
        else:
            self._contexts.move_to_end(n)
        return ctxs

    def forward(
        self, x: np.ndarray, training: bool = False, rng: np.random.Generator | None = None
    ) -> np.ndarray:
        """The output for a batch `x` of shape [N, *input_shape] (float32)."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        if x.shape[1:] != tuple(self.model.input_shape):
            raise DataError(
                f"input batch has sample shape {list(x.shape[1:])}, "
                f"the model expects {list(self.model.input_shape)}"
            )
        ctxs = self._contexts_for(x.shape[0])
        rng = rng if rng is not None else self.rng
        xs, ys = self._xs, self._ys
        ops = self._training_ops() if training else self._ops
        for i, (op, c) in enumerate(zip(ops, ctxs)):
            c.training = training
            c.rng = rng
            xs[i] = x
            x = op.forward(c, x)
            ys[i] = x
        self._last = ctxs
        self._last_ops = ops
        return x

    def _training_ops(self) -> list:
        """The ops training runs: the compiled fusions of ops.FUSIONS when numba is there
        (imported here, on the first training step, never for inference), else `_ops`;
        the same values either way."""
        if self._train_ops is None:
            self._train_ops = fused_plan(self.model.layers) if kernels.available() else self._ops
        return self._train_ops

    def backward(self, grad_out: np.ndarray) -> None:
        """Fill `grad` (overwriting it) from the gradient of the last forward's output."""
        if self._last is None:
            raise TrainingError("backward called before forward")
        n = len(self._ops)
        if n == 0:
            return
        g = np.asarray(grad_out)
        if g.shape != self._ys[-1].shape:
            raise TrainingError(
                f"output gradient has shape {list(g.shape)}, the output {list(self._ys[-1].shape)}"
            )
        if g.dtype != np.float32:
            g = g.astype(np.float32)
        ctxs, xs, ys, ops, need = self._last, self._xs, self._ys, self._last_ops, self._need_gx
        for i in range(n - 1, -1, -1):
            g = ops[i].backward(ctxs[i], xs[i], ys[i], g, need[i])
            if not need[i]:
                break  # nothing below has parameters

    def layer_outputs(self) -> list[np.ndarray]:
        """Every layer's output of the last `forward`, in layer order (buffers the next
        `forward` overwrites: copy what you keep)."""
        if self._last is None:
            raise TrainingError("layer_outputs called before forward")
        return list(self._ys)

    def predict(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Inference over a large array, in chunks; returns a new float32 array."""
        x = np.asarray(x)
        n = x.shape[0]
        out = np.empty((n,) + tuple(self.model.output_shape), np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out[start:stop] = self.forward(x[start:stop], training=False)
        return out
