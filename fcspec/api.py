"""The Python API: a checked spec as a `Model` that trains, predicts, evaluates and exports.

    import fcspec
    model = fcspec.load("specs/digits.fc").fit()      # the spec's own data
    model.evaluate()                                  # {"accuracy": 0.98, "loss": ...}
    model.fit(X, y)                                   # or NumPy arrays / a DataFrame
    model.predict(X), model.predict_proba(X), model.params["fc1.weight"]

Everything goes through the same modules as the CLI (check, data, train,
onnx_export), so a `Model` gives the same located `FcspecError`s, the same run
folder and checkpoints, and the same numbers as `fcspec run`.  docs/python.md
is the user's guide.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ir
from .errors import DataError, FcspecError, SpecError

SPEC_FILE = "spec.fc"  # the spec's text, saved in the run folder so it can be reloaded
SCHEMA_FILE = "schema.json"  # a table's fitted schema (fcspec.tabular), as fcspec run writes it


class FcspecWarning(UserWarning):
    """A checker warning about a spec (the CLI prints these on stderr)."""


def load(path: str | os.PathLike, *, overrides: Mapping[str, Any] | None = None) -> Model:
    """Read and check a `.fc` file; `overrides` change settings first (see `fcspec.overrides`)."""
    from .check import read_source

    path = str(path)
    return loads(read_source(path), path=path, overrides=overrides)


def loads(
    text: str, *, path: str = "<string>", overrides: Mapping[str, Any] | None = None
) -> Model:
    """Check spec source text (errors are located at `path`, line and column)."""
    from . import overrides as fover
    from .check import check_source

    if overrides:
        text = fover.apply(text, overrides, path)
    result = check_source(text, path)
    if result.errors:
        raise SpecError(result.diagnostics, result.source)
    for w in result.warnings:
        warnings.warn(w.render(result.source), FcspecWarning, stacklevel=3)
    return Model(result.spec, text)


def load_run(folder: str | os.PathLike) -> Model:
    """The trained model of a run folder (written by `fit`, `save` or `fcspec run`)."""
    from . import io as fio
    from .check import read_source

    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such run folder")
    spec_file = folder / SPEC_FILE
    if spec_file.exists():
        model = loads(read_source(spec_file), path=str(spec_file))
    else:  # a run folder of an older fcspec: the spec it names, if unchanged
        model = _spec_of_summary(folder)
    weights = folder / "weights.npz"
    if not weights.exists() and (folder / "weights.safetensors").exists():
        weights = folder / "weights.safetensors"  # a folder holding PyTorch's weights only
    if not weights.exists():
        raise DataError(f"{folder}: no weights.npz (did the run finish an epoch?)")
    model.spec = ir.resolve_from_params(model.spec, fio.weights_shapes(weights, "weights"))
    params = fio.load_params(weights, model.spec.model, "weights")  # headers judged first
    model._set_trained(params, _load_preprocess(model.spec, folder))
    metrics = folder / "metrics.jsonl"
    if metrics.exists():
        model.history = _read_jsonl(metrics)
    summary = folder / "summary.json"
    if summary.exists():
        model.summary = _read_json(summary)
    model._set_schema(_load_schema(folder))
    model.labels = fio.load_labels(folder) if model.labels is None else model.labels
    model.run_dir = folder
    return model


def _spec_of_summary(folder: Path) -> Model:
    summary = folder / "summary.json"
    if not summary.exists():
        raise DataError(f"{folder}: neither {SPEC_FILE} nor summary.json, so no spec to load")
    s = _read_json(summary)
    model = load(s.get("spec", ""))
    if s.get("spec_sha256") not in (None, model.spec.sha256):
        raise DataError(
            f"{folder} was trained from another version of {s.get('spec')} (its meaning changed)"
        )
    return model


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it: {e}") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it: {e}") from None


def _load_preprocess(spec: ir.Spec, folder: Path):
    from . import data

    path = folder / "preprocess.npz"
    if path.exists():
        return data.Preprocess.load(path, spec.model.input_shape)
    return data.Preprocess.identity(spec.model.input_shape, spec.data.scale if spec.data else 1.0)


def _load_schema(folder: Path):
    """The table schema a run folder holds (schema.json), or None."""
    from .tabular import read_schema

    return read_schema(folder / SCHEMA_FILE)


# ---------------------------------------------------------------------------
# Inputs from Python: arrays, lists, DataFrames.


def _is_frame(x: Any) -> bool:
    # Without importing pandas (an optional extra): its objects name their module.
    return type(x).__module__.startswith("pandas") and hasattr(x, "columns")


def is_table(x: Any) -> bool:
    """A pandas or polars DataFrame or a pyarrow Table: rows of named columns, which
    `fit` reads with the rules of a spec's csv(...) source (fcspec.tabular).  Decided
    by the object's module, so nothing is imported to ask."""
    mod = type(x).__module__
    if mod.startswith(("pandas", "polars")):
        return hasattr(x, "columns")
    return mod.startswith("pyarrow") and hasattr(x, "column_names")


def _table(x: Any):
    from . import tabular

    return tabular.to_table(x)


def _target_column(y: Any) -> tuple[Any, str | None]:
    """(y as one pyarrow column, its name): a Series, a one-column frame, an array, a list."""
    import pyarrow as pa

    from . import tabular

    mod = type(y).__module__
    if mod.startswith("pyarrow") and not hasattr(y, "column_names"):
        col = y if isinstance(y, pa.ChunkedArray) else pa.chunked_array([y])
        return col, None
    if mod.startswith("polars") and not hasattr(y, "columns"):  # a polars Series
        return pa.chunked_array([y.to_arrow()]), y.name or None
    t = tabular.to_table(y if mod.startswith(("pandas", "polars", "pyarrow")) else np.asarray(y))
    if t.num_columns != 1:
        raise DataError(f"y has {t.num_columns} columns; a table X takes one target column")
    if is_table(y):
        return t.column(0), t.column_names[0]
    name = getattr(y, "name", None)
    return t.column(0), (name if isinstance(name, str) else None)


def _frame_array(x: Any, where: str) -> tuple[np.ndarray, list[str]]:
    names = [str(c) for c in x.columns]
    bad = [str(c) for c, t in x.dtypes.items() if t.kind not in "biuf"]
    if bad:
        raise DataError(
            f"{where}: column {bad[0]!r} is not numeric ({x.dtypes[bad[0]]})",
            hint="encode categories first, e.g. with scikit-learn's OneHotEncoder",
        )
    return x.to_numpy(), names


def _targets_array(y: Any) -> np.ndarray:
    if hasattr(y, "to_numpy"):  # a pandas Series or DataFrame
        y = y.to_numpy()
    return np.asarray(y)


# ---------------------------------------------------------------------------


class Model:
    """A checked spec, and after `fit` (or `load_run`) its trained weights.

    Attributes: `spec` (the IR), `source` (the spec's text), `history` (one dict
    per epoch, the rows of metrics.jsonl), `summary` (summary.json of the last
    fit), `run_dir` (where the last fit wrote), `labels` (the class labels
    given to `fit`, when they were not 0..C-1), `schema` (a `tabular.Schema`
    when the model was trained on a table: a DataFrame, a pyarrow Table or a
    spec's csv / parquet source) and `encoding` (what encoding the last table
    given to `predict` / `evaluate` did: `{"imputed": {column: cells},
    "unseen": {column: cells}}`).
    """

    def __init__(self, spec: ir.Spec, source: str | None = None):
        self.spec = spec
        self.source = source if source is not None else (spec.source or None)
        self.history: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.run_dir: Path | None = None
        self.labels: np.ndarray | None = None
        self.feature_names: list[str] | None = None
        self.schema = None
        self.encoding: dict[str, dict[str, int]] | None = None
        self._params: dict[str, np.ndarray] | None = None
        self._preprocess = None
        self._net = None

    def __repr__(self) -> str:
        state = "trained" if self._params is not None else "untrained"
        return (
            f"<fcspec.Model {self.spec.name}: {self.spec.model.num_params:,} parameters, "
            f"{self.spec.task}, {state}>"
        )

    @classmethod
    def from_weights(
        cls, spec: ir.Spec, weights: str | os.PathLike, source: str | None = None
    ) -> Model:
        """A trained model from `spec` and a weights file (see `load_weights`)."""
        return cls(spec, source).load_weights(weights)

    def load_weights(self, weights: str | os.PathLike) -> Model:
        """Take trained weights from `weights`: fcspec's `.npz`, or a `.safetensors` file
        (PyTorch's `safetensors.torch.save_file(model.state_dict(), path)` with the spec's
        layer names), judged by their headers before they are read; `preprocess.npz` and
        `labels.json` beside the file are used.  Returns the model."""
        from . import io as fio

        shapes = fio.weights_shapes(weights, "weights")
        self.spec = ir.resolve_from_params(self.spec, shapes)  # `input auto`: the run's widths
        folder = Path(weights).parent
        # weights stamped for another spec are refused
        params = fio.load_params(weights, self.spec.model, "weights", spec=self.spec)
        self._set_trained(params, _load_preprocess(self.spec, folder))
        self.labels = None
        self._set_schema(_load_schema(folder))
        self.labels = fio.load_labels(folder) if self.labels is None else self.labels
        return self

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trained(self) -> bool:
        return self._params is not None

    # -- training -------------------------------------------------------------

    def fit(
        self,
        X: Any = None,
        y: Any = None,
        *,
        epochs: int | None = None,
        seed: int | None = None,
        out: str | os.PathLike | None = None,
        callbacks: Sequence[Any] = (),
        verbose: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        resume: str | os.PathLike | None = None,
        init: str | os.PathLike | None = None,
        plot: bool = False,
    ) -> Model:
        """Train and return the model itself.

        Without `X`, on the data the spec names (as `fcspec run`); with `X` and
        `y` (arrays, lists or a pandas DataFrame / Series), on those rows, the
        spec's `validate` fraction held out of them unless `validation_data`
        gives the rows (its `test` is then unused).  `epochs` / `seed` override
        the spec's; `out` is the run folder (default runs/<name>/, as the CLI);
        `resume` continues from a checkpoint, `init` starts from weights.
        Each callback may define `on_train_begin(state)`,
        `on_epoch_end(state, row)` (return True to stop) and
        `on_train_end(state, summary)`.  `verbose=False` prints nothing.
        """
        from dataclasses import replace

        from . import data as fdata
        from . import io as fio
        from . import train

        spec = self.spec
        if seed is not None and not isinstance(seed, bool) and isinstance(seed, int) and seed >= 0:
            spec = replace(spec, train=replace(spec.train, seed=seed))  # the split reads it
        prepared = None
        labels = None
        names = None
        if X is not None and is_table(X):
            if y is None:
                raise DataError("fit(X, y): y is missing (the targets for X)")
            target, tname = _target_column(y)
            validation = None
            if validation_data is not None:
                xv, yv = validation_data
                validation = (_table(xv), _target_column(yv)[0])
            prepared = fdata.prepare_table(
                spec, _table(X), target, target_name=tname, validation=validation
            )
        elif X is not None:
            if y is None:
                raise DataError("fit(X, y): y is missing (the targets for X)")
            x, names = self._inputs(X, "X", fitting=True)
            labels, ids = self._encode_targets(_targets_array(y))
            validation = None
            if validation_data is not None:
                xv, yv = validation_data
                validation = (self._inputs(xv, "validation X")[0], self._ids(yv, labels))
            prepared = fdata.prepare_arrays(spec, x, ids, validation=validation)
        elif y is not None:
            raise DataError("fit(y=...) without X: pass both, or neither for the spec's data")
        summary = train.run(
            spec,
            out_dir=out,
            epochs=epochs,
            seed=seed,
            init=init,
            resume=resume,
            quiet=not verbose,
            plot=plot,
            prepared=prepared,
            callbacks=callbacks,
        )
        folder = train.output_dir(spec, out, resume)
        self.run_dir = folder
        self.summary = summary
        weights = folder / "weights.npz"
        if not weights.exists():  # zero epochs: nothing was trained
            raise FcspecError(f"{folder}: the run wrote no weights (epochs = 0?)")
        shapes = fio.weights_shapes(weights, "weights")
        self.spec = ir.resolve_from_params(self.spec, shapes)  # `input auto`: the data's widths
        spec = ir.resolve_from_params(spec, shapes)
        pre = prepared.preprocess if prepared is not None else _load_preprocess(spec, folder)
        self._set_trained(fio.load_params(weights, spec.model, "weights"), pre)
        metrics = folder / "metrics.jsonl"
        self.history = _read_jsonl(metrics) if metrics.exists() else []
        self.feature_names = names
        # a table's schema (fitted here, or by the spec's own csv source: its schema.json)
        self.labels = None
        self._set_schema(prepared.schema if prepared is not None else _load_schema(folder))
        self.labels = labels if self.labels is None else self.labels
        if self.source is not None:
            fio.atomic_write_text(folder / SPEC_FILE, self.source)
        fio.save_labels(folder, labels)
        return self

    def _set_trained(self, params: Mapping[str, np.ndarray], preprocess) -> None:
        from . import interpreter

        net = interpreter.Network(self.spec.model, rng=np.random.default_rng(0))
        net.load_params(params)  # checks names and shapes
        self._net = net
        self._params = net.state_dict()
        self._preprocess = preprocess

    def _set_schema(self, schema) -> None:
        """Take a fitted table schema: its columns name the inputs, its classes the labels."""
        self.schema = schema
        if schema is None:
            return
        if schema.columns:
            self.feature_names = [c.name for c in schema.columns]
        t = schema.target
        if t is not None and t.kind == "classes" and not t.identity:
            self.labels = np.asarray(t.classes)

    def _table_inputs(self, X: Any, where: str) -> np.ndarray:
        """Raw rows for a model trained on a table, encoded by its schema: columns found by
        name (extra ones ignored, a missing one an error naming it), imputed, one-hot,
        unseen categories all zeros (counted in `self.encoding`)."""
        from . import tabular

        cols = self.schema.columns
        if is_table(X):
            table = _table(X)
        else:  # an array: its columns are the schema's, in order (as the ONNX graph's input)
            x = np.asarray(X.to_numpy() if hasattr(X, "to_numpy") else X)
            if x.ndim == 1:
                x = x[None, :]
            if x.ndim != 2 or x.shape[1] != len(cols):
                raise DataError(
                    f"{where}: an array of shape {list(x.shape)} for a model trained on a "
                    f"table of {len(cols)} columns",
                    hint="pass a DataFrame with the columns "
                    + ", ".join(repr(c.name) for c in cols),
                )
            table = tabular.to_table(x, [c.name for c in cols])
        x, report = tabular.encode(self.schema, table, where=where, line_offset=0)
        self.encoding = report
        unseen = report["unseen"]
        if unseen:
            warnings.warn(
                f"{where}: {tabular.summary({'unseen': unseen}, self.schema)[0]}",
                FcspecWarning,
                stacklevel=5,  # the caller of predict / predict_proba / evaluate
            )
        return x

    def _inputs(self, X: Any, where: str, fitting: bool = False) -> tuple[np.ndarray, list | None]:
        names = None
        if not fitting and self.schema is not None and self.schema.columns:
            return self._table_inputs(X, where), self.feature_names
        if _is_frame(X):
            X, names = _frame_array(X, where)
            if not fitting and self.feature_names is not None and names != self.feature_names:
                raise DataError(
                    f"{where}: the columns {names} differ from those the model was fitted "
                    f"on, {self.feature_names}"
                )
        elif hasattr(X, "to_numpy"):
            X = X.to_numpy()
        x = np.asarray(X)
        if x.dtype == object:
            try:
                x = x.astype(np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{where}: the values are not all numbers") from None
        return x, names

    def _encode_targets(self, y: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(labels or None, what the loss takes): class labels as given become class ids."""
        task = self.spec.task
        if task not in ("classification", "binary"):
            return None, y
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        width = self.spec.classes if task == "classification" else 2
        if y.dtype.kind in "biu" or (y.dtype.kind == "f" and np.all(np.isfinite(y))):
            if y.dtype.kind != "f" or np.all(y == np.round(y)):
                if y.size and y.min() >= 0 and y.max() < width:
                    return None, y  # already class ids 0..C-1
            elif task == "binary":
                return None, y  # probabilities as targets: bce takes them
        try:
            labels = np.unique(y)
        except TypeError:
            raise DataError("y: the labels cannot be sorted (mixed types?)") from None
        if len(labels) != width:
            raise DataError(
                f"y has {len(labels)} distinct labels but model {self.spec.name} has "
                f"{width} classes",
                hint="the last linear layer's units must equal the number of classes",
            )
        return labels, np.searchsorted(labels, y)

    def _ids(self, y: Any, labels: np.ndarray | None) -> np.ndarray:
        """Targets for rows besides the training rows, with the training rows' labels."""
        y = _targets_array(y)
        if labels is None or self.spec.task not in ("classification", "binary"):
            return y
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        ids = np.searchsorted(labels, y)
        ids = np.clip(ids, 0, len(labels) - 1)
        unknown = labels[ids] != y
        if np.any(unknown):
            raise DataError(f"y: label {y[np.flatnonzero(unknown)[0]]!r} was not seen in training")
        return ids

    # -- inference ------------------------------------------------------------

    def _require_trained(self) -> None:
        if self._params is None:
            raise FcspecError(
                f"model {self.spec.name} is not trained yet",
                hint="call fit() first, or fcspec.load_run(folder) for a trained one",
            )

    def output(self, X: Any, *, rowwise: bool = False) -> np.ndarray:
        """The network's raw output for raw inputs `X` (float32 [N, *output]): logits,
        probabilities or values, whatever the last layer gives.

        `rowwise=True` runs one row at a time (slower): BLAS's float32 matrix
        product rounds a row differently depending on where it sits in a batch (by
        about one ulp), so only then is each row's output independent of the other
        rows, as scikit-learn's invariance checks demand."""
        from . import data as fdata
        from .train import EVAL_BATCH

        self._require_trained()
        x, _ = self._inputs(X, "X")
        x = fdata.as_inputs(self.spec, x, where="X")
        out = self._net.predict(self._preprocess.apply(x), 1 if rowwise else EVAL_BATCH)
        scaling = fdata.target_scaling(self.schema)  # normalize_target: back in y's units
        return out if scaling is None else fdata.unscale_target(out, scaling)

    def predict(self, X: Any, *, rowwise: bool = False) -> np.ndarray:
        """Class labels (as given to `fit`) for a classifier, else the output values."""
        from .onnx_export import output_kind
        from .runtime import classes_of

        out = self.output(X, rowwise=rowwise)
        if self.spec.task not in ("classification", "binary"):
            return out
        if self.spec.task == "classification":
            ids = out.reshape(len(out), -1).argmax(axis=-1)
        else:
            ids = classes_of(out, "binary", output_kind(self.spec))
        return ids if self.labels is None else self.labels[ids]

    def predict_proba(self, X: Any, *, rowwise: bool = False) -> np.ndarray:
        """Class probabilities, float32 [N, classes] (a binary model: the columns 1 - p, p);
        the same numbers as the ONNX export's probability output."""
        from .runtime import _np_probabilities

        if self.spec.task not in ("classification", "binary"):
            raise FcspecError(f"model {self.spec.name} is a {self.spec.task} model: no classes")
        p = _np_probabilities(self.spec, self.output(X, rowwise=rowwise))
        if self.spec.task == "binary":
            p = p.reshape(len(p), 1)
            p = np.concatenate([np.float32(1) - p, p], axis=1)
        return p

    def evaluate(self, X: Any = None, y: Any = None) -> dict[str, Any]:
        """Loss and metrics: on `X`, `y` when given, else on the spec's test data (its
        validation split, else its training set, when it has none), as `fcspec eval`."""
        from . import train

        self._require_trained()
        if X is None:
            if y is not None:
                raise DataError("evaluate(y=...) without X: pass both, or neither")
            return train.evaluate(self.spec, self._params)
        from . import data as fdata
        from . import losses

        if self.schema is not None and self.schema.target is not None:
            from . import tabular

            ids = tabular.encode_target(self.schema, _target_column(y)[0], where="y", line_offset=0)
        else:
            ids = self._ids(y, self.labels)
        yy = fdata.as_targets(self.spec, ids, where="y")
        out = self.output(X)
        if len(out) != len(yy):
            raise DataError(f"X has {len(out)} rows but y has {len(yy)}; they must match")
        m = train._eval_metrics(
            self.spec.task, self.spec.loss.kind, losses.make_loss(self.spec.loss), out, yy, "x"
        )
        result: dict[str, Any] = {"split": "given", "rows": len(out)}
        result.update({k.split("_", 1)[1]: v for k, v in m.items()})
        return result

    # -- weights and files ----------------------------------------------------

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Copies of the weights: `{"fc1.weight": [out, in], "fc1.bias": [out], ...}`,
        PyTorch's `state_dict` keys and layouts (`torch.from_numpy` loads them)."""
        self._require_trained()
        return {k: v.copy() for k, v in self._params.items()}

    @property
    def preprocess(self):
        """The fitted input preprocessing (`data.Preprocess`), after training."""
        self._require_trained()
        return self._preprocess

    def onnx(self, *, probabilities: bool = False, labels: bool = False, opset: int | None = None):
        """The ONNX `ModelProto` (preprocessing baked in).  `labels=True` (a classifier):
        the outputs `label` and `probabilities`, as scikit-learn converters give them."""
        from . import onnx_export

        self._require_trained()
        kwargs = {} if opset is None else {"opset": opset}
        model = onnx_export.export(
            self.spec,
            self._params,
            self._preprocess,
            probabilities=probabilities or labels,
            source=self.source,
            class_names=None if self.labels is None else list(self.labels),
            schema=self.schema,
            **kwargs,
        )
        if labels:
            classes = self.labels
            if classes is None:
                classes = np.arange(self.spec.classes if self.spec.task == "classification" else 2)
            model = onnx_export.with_labels(model, self.spec, classes)
        return model

    def export_onnx(
        self,
        path: str | os.PathLike | None = None,
        *,
        probabilities: bool = False,
        labels: bool = False,
        opset: int | None = None,
    ) -> Path:
        """Write the ONNX graph (default: <run folder>/<name>.onnx) and return its path."""
        from . import onnx_export

        if path is None:
            folder = self.run_dir if self.run_dir is not None else onnx_export.run_dir(self.spec)
            path = Path(folder) / f"{self.spec.name}.onnx"
        model = self.onnx(probabilities=probabilities, labels=labels, opset=opset)
        return onnx_export.save(model, path)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write a run folder `load_run` reads back: spec.fc, weights.npz, preprocess.npz,
        metrics.jsonl (the history), schema.json (a table's fitted schema) and, when the
        labels are not 0..C-1, labels.json."""
        from . import io as fio

        self._require_trained()
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise FcspecError(f"cannot create {folder}: {e.strerror or e}") from None
        if self.source is not None:
            fio.atomic_write_text(folder / SPEC_FILE, self.source)
        fio.save_npz(folder / "weights.npz", self._params)
        self._preprocess.save(folder / "preprocess.npz")
        fio.atomic_write_jsonl(folder / "metrics.jsonl", self.history)
        if self.schema is not None:
            fio.atomic_write_text(folder / SCHEMA_FILE, self.schema.to_json())
        elif (folder / SCHEMA_FILE).exists():
            (folder / SCHEMA_FILE).unlink()  # an earlier model's schema must not describe this one
        if self.summary is not None:
            fio.atomic_write_json(folder / "summary.json", self.summary)
        fio.save_labels(folder, self.labels)
        return folder
