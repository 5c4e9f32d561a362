"""scikit-learn estimators: `FcspecClassifier` and `FcspecRegressor`.

    from fcspec.sklearn import FcspecClassifier
    clf = FcspecClassifier(epochs=30, lr=1e-3).fit(X_train, y_train)
    clf.score(X_test, y_test)

Each `fit` builds a spec (yours, or a default two-hidden-layer ReLU network
trained with Adam), sets its input width and output units from the data (as
`input auto` / `linear(outputs)` would), applies `overrides` and then the
named parameters (`epochs`, `batch`, `lr`, `seed`; None keeps the spec's own
value), and trains it with `fcspec.Model.fit`: the same checker, data checks,
NumPy trainer and numbers as `fcspec run`.  The estimators pass
scikit-learn's own `check_estimator` (tests/test_sklearn.py; the exceptions
are listed in `EXPECTED_FAILED_CHECKS` with their reasons).  docs/python.md
is the user's guide.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import (
        check_consistent_length,
        check_is_fitted,
        column_or_1d,
        validate_data,
    )
except ImportError:  # the optional extra: one clear line, no traceback of sklearn's absence
    raise ImportError("fcspec.sklearn needs scikit-learn: pip install -e '.[sklearn]'") from None

from . import api
from . import io as fio
from .errors import FcspecError

DEFAULT_SPEC = """\
# fcspec's default network for scikit-learn: two hidden ReLU layers, Adam.
model {name} {{
    input [{inputs}]
    hidden1 = linear(100) -> relu
    hidden2 = linear(100) -> relu
    out     = linear({outputs})
}}

loss      {loss}
optimizer adam(lr = 1e-3)

data {{
    normalize = standard           # fitted on each fit's training rows
}}

train {{
    epochs = 50
    batch  = 32
    seed   = 0
}}
"""

# scikit-learn checks the estimators fail, and why (at most two; see docs/python.md).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


class _FcspecEstimator(BaseEstimator):
    """What both estimators share: building the spec, fitting the Model, the run folder."""

    _loss = "mse"
    _kind = "regressor"

    def __init__(
        self,
        spec: str | os.PathLike | None = None,
        *,
        epochs: int | None = None,
        batch: int | str | None = None,
        lr: float | None = None,
        seed: int | None = None,
        overrides: dict[str, Any] | None = None,
        out: str | os.PathLike | None = None,
        verbose: bool = False,
    ):
        self.spec = spec
        self.epochs = epochs
        self.batch = batch
        self.lr = lr
        self.seed = seed
        self.overrides = overrides
        self.out = out
        self.verbose = verbose

    # -- the spec -----------------------------------------------------------------

    def _source(self) -> tuple[str, str]:
        """(spec text, the path its errors point at)."""
        spec = self.spec
        if spec is None:
            name = "MLP"
            # the widths are placeholders: fit sets them from the data
            text = DEFAULT_SPEC.format(name=name, inputs=1, outputs=2, loss=self._loss)
            return text, f"<{type(self).__name__} default spec>"
        if isinstance(spec, os.PathLike) or (
            isinstance(spec, str) and "\n" not in spec and "{" not in spec
        ):
            from .check import read_source

            return read_source(spec), str(spec)
        if isinstance(spec, str):
            return spec, "<spec>"
        raise TypeError(f"spec must be a path, spec text or None, not {type(spec).__name__}")

    def _settings(self) -> dict[str, Any]:
        """`overrides`, then the named parameters (which win), None meaning the spec's value."""
        settings = dict(self.overrides or {})
        for key, value in (
            ("train.epochs", self.epochs),
            ("train.batch", self.batch),
            ("optimizer.lr", self.lr),
            ("train.seed", self.seed),
        ):
            if value is not None:
                settings[key] = value
        return settings

    def _build(self, inputs: int | None, outputs_for_task) -> api.Model:
        """The spec with the data's widths; `inputs` None (a table): `input auto`, the
        width the fitted schema's encoding gives."""
        text, path = self._source()
        settings = self._settings()
        task = api.loads(text, path=path, overrides=settings).spec.task
        widths = {
            "model.input": "auto" if inputs is None else [inputs],
            "model.outputs": outputs_for_task(task),
        }
        return api.loads(text, path=path, overrides={**settings, **widths})

    def _fit_inputs(self, X, y, **checks):
        """(X, y, the input width or None): a DataFrame / pyarrow Table stays a table
        (categories and missing cells are encoded by `fcspec.tabular`, fitted on the
        training rows; the width is the encoding's), anything else is checked into a
        numeric array as usual."""
        if api.is_table(X):
            validate_data(self, X, skip_check_array=True)  # n_features_in_, feature_names_in_
            y = np.asarray(y.to_numpy() if hasattr(y, "to_numpy") else y)
            if not checks.get("multi_output"):
                y = column_or_1d(y, warn=True)
            check_consistent_length(X, y)
            return X, y, None
        X, y = validate_data(self, X, y, **checks)
        return X, y, X.shape[1]

    def _predict_inputs(self, X):
        """X for the fitted model: a table stays one when the model was fitted on a table
        (columns found by name), else the usual checked array."""
        if self.model_.schema is None:
            return validate_data(self, X, reset=False)
        if api.is_table(X):
            validate_data(self, X, reset=False, skip_check_array=True)
            return X
        # an array for a table model: its columns are the table's, in order (strings, NaN)
        return validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)

    def _fit_model(self, model: api.Model, X: np.ndarray, y: np.ndarray) -> api.Model:
        if self.out is not None:
            return model.fit(X, y, out=self.out, verbose=bool(self.verbose))
        # No run folder asked for: train in a temporary one, removed afterwards (the
        # weights and history stay in memory, in model_).
        folder = tempfile.mkdtemp(prefix="fcspec-")
        try:
            with fio.scratch():  # deleted right after: no need to fsync every epoch's files
                return model.fit(X, y, out=Path(folder) / "run", verbose=bool(self.verbose))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -- after fit ------------------------------------------------------------------

    @property
    def history_(self) -> list[dict[str, Any]]:
        """One dict per epoch (metrics.jsonl's rows) of the last fit."""
        check_is_fitted(self)
        return self.model_.history

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write the fitted network as ONNX, the preprocessing baked in (see subclasses)."""
        check_is_fitted(self)
        return self.model_.export_onnx(path, labels=self._kind == "classifier")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # the same seed gives the same weights, bit for bit
        return tags


class FcspecClassifier(ClassifierMixin, _FcspecEstimator):
    """A classifier trained by fcspec.

    Parameters: `spec` (a .fc path, spec text, or None for the default network),
    `epochs`, `batch` (an int or "full"), `lr`, `seed` (None: the spec's values),
    `overrides` (spec paths such as {"optimizer": "sgd(lr = 0.1)",
    "model.hidden1.units": 64}), `out` (a run folder to keep; None: a temporary
    one), `verbose` (print each epoch).

    Attributes after fit: `classes_`, `n_features_in_`, `feature_names_in_`
    (a DataFrame's columns), `model_` (the trained `fcspec.Model`), `history_`.
    `export_onnx(path)` writes a graph with the outputs `label` (as `predict`)
    and `probabilities` (as `predict_proba`).
    """

    _loss = "cross_entropy"
    _kind = "classifier"

    def fit(self, X, y):
        X, y, inputs = self._fit_inputs(X, y)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y; it has one class, "
                f"{self.classes_[0]!r}"
            )
        k = len(self.classes_)

        def outputs(task: str) -> int:
            if task == "binary":
                if k != 2:
                    raise FcspecError(f"the spec's loss is binary (bce) but y has {k} classes")
                return 1
            if task != "classification":
                raise FcspecError(
                    f"the spec is a {task} model; a classifier needs a classification loss "
                    "(cross_entropy, nll, bce, bce_with_logits)"
                )
            return k

        ids = np.searchsorted(self.classes_, y)
        model = self._build(inputs, outputs)
        self.model_ = self._fit_model(model, X, ids)
        self.model_.labels = self.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._predict_inputs(X)
        return self.model_.predict_proba(X, rowwise=True).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before fit
        return self.classes_[np.argmax(proba, axis=1)]


class FcspecRegressor(RegressorMixin, _FcspecEstimator):
    """A regressor trained by fcspec (one output per target column of y).

    Parameters and attributes as `FcspecClassifier` (without `classes_`); the
    default network's loss is mse.  `export_onnx(path)` writes a graph whose
    output `output` is `predict`'s values, shape [N, outputs].
    """

    _loss = "mse"
    _kind = "regressor"

    def fit(self, X, y):
        X, y, inputs = self._fit_inputs(X, y, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        width = 1 if y.ndim == 1 else y.shape[1]

        def outputs(task: str) -> int:
            if task != "regression":
                raise FcspecError(
                    f"the spec is a {task} model; a regressor needs a regression loss "
                    "(mse, mae, huber)"
                )
            return width

        model = self._build(inputs, outputs)
        self.model_ = self._fit_model(model, X, y.astype(np.float64))
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._predict_inputs(X)
        out = self.model_.output(X, rowwise=True).astype(np.float64)
        return out.reshape(len(out)) if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
