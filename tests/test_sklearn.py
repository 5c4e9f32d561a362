"""fcspec.sklearn: scikit-learn's own estimator checks, and the tools people use the estimators with.

Oracles: scikit-learn's `parametrize_with_checks` (its API contract),
`accuracy_score` / `r2_score`, onnxruntime running `export_onnx`, and
`clone` / GridSearchCV / cross_val_score / Pipeline doing what they do with any
scikit-learn estimator.  Small `epochs` keep the checks quick.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

pytest.importorskip("sklearn")
pd = pytest.importorskip("pandas")

from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_iris, make_regression
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import ROOT
from fcspec.errors import FcspecError, SpecError
from fcspec.sklearn import EXPECTED_FAILED_CHECKS, FcspecClassifier, FcspecRegressor


@parametrize_with_checks(
    [FcspecClassifier(epochs=20), FcspecRegressor(epochs=20)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_at_most_two_documented_exceptions():
    assert len(EXPECTED_FAILED_CHECKS) <= 2
    doc = (ROOT / "docs" / "python.md").read_text()
    for name in EXPECTED_FAILED_CHECKS:
        assert name in doc


def iris():
    x, y = load_iris(return_X_y=True)
    return x, np.array(["setosa", "versicolor", "virginica"])[y]


# ---- parameters ----------------------------------------------------------------------------------


def test_params_clone_and_set_params():
    clf = FcspecClassifier(epochs=5, lr=0.01, overrides={"optimizer.betas": (0.8, 0.99)})
    p = clf.get_params()
    assert p["epochs"] == 5 and p["lr"] == 0.01 and p["spec"] is None and p["batch"] is None
    c = clone(clf)
    assert c is not clf and c.get_params() == p
    assert c.set_params(batch=16, lr=0.02) is c and c.batch == 16 and clf.batch is None
    x, y = iris()
    c.fit(x, y)
    s = c.model_.spec
    assert s.optimizer.options["lr"] == 0.02 and s.train.batch == 16 and s.train.epochs == 5
    assert s.optimizer.options["betas"] == (0.8, 0.99)
    assert c.n_features_in_ == 4 and list(c.classes_) == ["setosa", "versicolor", "virginica"]
    assert len(c.history_) == 5
    # unfitted clones stay unfitted
    with pytest.raises(NotFittedError):
        clone(c).predict(x)


def test_named_parameters_win_over_overrides_and_none_keeps_the_spec():
    x, y = iris()
    c = FcspecClassifier(
        spec=ROOT / "specs" / "iris.fc", epochs=3, overrides={"train.epochs": 50, "hidden.units": 8}
    ).fit(x, y)
    s = c.model_.spec
    assert s.train.epochs == 3  # the named parameter wins
    assert s.model.param_shapes()["hidden.weight"] == (8, 4)  # the override applies
    assert s.optimizer.options["lr"] == 0.01 and s.train.batch == 16  # the spec's own values
    # widths come from the data: the spec's [4] -> 3 classes works on 2 features and 2 classes
    c2 = FcspecClassifier(spec=ROOT / "specs" / "iris.fc", epochs=2).fit(x[:100, :2], y[:100])
    assert c2.model_.spec.model.input_shape == (2,) and c2.model_.spec.model.output_shape == (2,)


def test_bad_settings_are_fcspec_errors_at_fit():
    x, y = iris()
    with pytest.raises(SpecError, match="lr"):
        FcspecClassifier(lr=-1.0, epochs=1).fit(x, y)
    with pytest.raises(FcspecError, match="no option"):
        FcspecClassifier(overrides={"optimizer.momentum": 0.9}, epochs=1).fit(x, y)  # adam
    with pytest.raises(FcspecError, match="regression"):
        FcspecClassifier(spec=ROOT / "specs" / "diabetes.fc", epochs=1).fit(x, y)
    c = FcspecClassifier(overrides={"optimizer": "sgd(lr = 0.1, momentum = 0.9)"}, epochs=2)
    assert c.fit(x, y).model_.spec.optimizer.kind == "sgd"


# ---- model selection --------------------------------------------------------------------------------


def test_grid_search_over_lr_and_batch_alike_with_one_or_two_jobs():
    x, y = iris()

    def search(n_jobs: int) -> GridSearchCV:
        return GridSearchCV(
            FcspecClassifier(epochs=15),
            {"lr": [1e-3, 1e-2], "batch": [16, 64]},
            cv=StratifiedKFold(3, shuffle=True, random_state=0),
            n_jobs=n_jobs,
        ).fit(x, y)

    one, two = search(1), search(2)
    assert set(two.best_params_) == {"lr", "batch"}
    assert len(two.cv_results_["mean_test_score"]) == 4
    # the same seed gives the same weights in another process: the same scores
    assert np.array_equal(one.cv_results_["mean_test_score"], two.cv_results_["mean_test_score"])
    assert two.best_score_ > 0.85
    assert two.best_estimator_.score(x, y) > 0.85


def test_cross_val_score_and_pickle():
    x, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    reg = FcspecRegressor(epochs=40, lr=0.01)
    scores = cross_val_score(reg, x, y / y.std(), cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.9
    fitted = reg.fit(x, y / y.std())
    back = pickle.loads(pickle.dumps(fitted))
    assert np.array_equal(back.predict(x), fitted.predict(x))


def test_pipeline_with_a_column_transformer():
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "income": rng.normal(50, 15, n),
            "city": rng.choice(["Oslo", "Lima", "Pune"], n),
        }
    )
    y = np.where((df.city == "Oslo") | (df.income > 60), "buys", "skips")
    pipe = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("num", StandardScaler(), ["age", "income"]),
                        ("cat", OneHotEncoder(), ["city"]),
                    ]
                ),
            ),
            ("net", FcspecClassifier(epochs=30, lr=0.01)),
        ]
    )
    pipe.fit(df, y)
    assert pipe.named_steps["net"].n_features_in_ == 5
    assert pipe.score(df, y) > 0.9
    assert cross_val_score(pipe, df, y, cv=3).mean() > 0.85
    # a DataFrame straight into the estimator keeps its column names
    net = FcspecClassifier(epochs=5).fit(df[["age", "income"]], y)
    assert list(net.feature_names_in_) == ["age", "income"]


def test_multioutput_regression():
    x, y = make_regression(n_samples=200, n_features=4, n_targets=2, noise=1.0, random_state=1)
    reg = FcspecRegressor(epochs=60, lr=0.01).fit(x, y / y.std(axis=0))
    assert reg.predict(x).shape == (200, 2) and reg.predict(x).dtype == np.float64
    assert reg.score(x, y / y.std(axis=0)) > 0.9


# ---- ONNX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["strings", "ints", "binary"])
def test_export_onnx_has_label_and_probability_outputs(labels, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, y = iris()
    if labels == "ints":
        y = np.searchsorted(np.unique(y), y) * 10 + 5  # 5, 15, 25
    if labels == "binary":
        x, y = x[50:], y[50:]
    clf = FcspecClassifier(epochs=20, lr=0.01).fit(x, y)
    path = clf.export_onnx(tmp_path / "clf.onnx")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["label", "probabilities"]
    label, proba = sess.run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(proba, clf.predict_proba(x), rtol=1e-5, atol=1e-6)
    want = clf.predict(x)
    got = label.astype(str) if labels == "strings" else label
    assert np.array_equal(got, want)


def test_binary_spec_with_bce(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    spec = """
    model B { input [2]  h = linear(8) -> relu  out = linear(1) }
    loss bce_with_logits
    optimizer adam(lr = 0.05)
    data { normalize = standard }
    train { epochs = 30  batch = 16 }
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    y = np.where(x[:, 0] > x[:, 1], "a", "b")
    clf = FcspecClassifier(spec=spec).fit(x, y)
    assert clf.model_.spec.task == "binary" and clf.score(x, y) > 0.9
    p = clf.predict_proba(x)
    assert p.shape == (200, 2)
    sess = ort.InferenceSession(
        str(clf.export_onnx(tmp_path / "b.onnx")), providers=["CPUExecutionProvider"]
    )
    label, proba = sess.run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(proba, p, rtol=1e-5, atol=1e-6)
    assert np.array_equal(label.astype(str), clf.predict(x))


def test_regressor_export_matches_predict(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    x, y = make_regression(n_samples=100, n_features=3, random_state=0)
    reg = FcspecRegressor(epochs=5).fit(x, y / y.std())
    sess = ort.InferenceSession(
        str(reg.export_onnx(tmp_path / "r.onnx")), providers=["CPUExecutionProvider"]
    )
    out = sess.run(None, {"input": x.astype(np.float32)})[0]
    np.testing.assert_allclose(out[:, 0], reg.predict(x), rtol=1e-5, atol=1e-5)


# The target, GridSearchCV on the digits at >= 95% cross-validated accuracy, is an
# example of docs/python.md, run (and asserted) by tests/test_python_docs.py.
