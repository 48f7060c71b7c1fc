"""Candidates, the sklearn pipeline built from the config's feature types, fitting and metrics.

Every candidate is one sklearn `Pipeline`: a `ColumnTransformer` (numeric and boolean columns imputed, and
scaled for linear models; categorical columns one-hot encoded) followed by the estimator, so that the whole
thing converts to ONNX in one piece. The one-hot encoding keeps the categories `learned_categories` picks from
the training rows; any other value, unseen or rare, is encoded as all zeros: one "other". Seeds come from the
config, and rows are sorted by id before fitting, so that the same snapshot always gives the same model.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from include.mlops import classes
from include.mlops.config import ESTIMATORS, METRICS, Dataset, PipelineConfig

logger = logging.getLogger(__name__)

MISSING_CATEGORY = "__missing__"
SCALE_SENSITIVE = {"LogisticRegression", "Ridge"}
# What every candidate of a family gets unless its params say otherwise. LightGBM prints its settings and
# warnings on every fit unless told not to, and only its deterministic mode (which wants a fixed histogram
# layout, force_col_wise) promises the same trees whatever the number of threads.
FAMILY_DEFAULTS = {"LightGBM": {"verbose": -1, "deterministic": True, "force_col_wise": True}}


@dataclass(frozen=True)
class CandidateSpec:
    """One estimator with one set of parameters: a config candidate, or one point of its grid."""

    name: str
    estimator: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "estimator": self.estimator, "params": self.params}


def expand_candidates(config: PipelineConfig) -> list[CandidateSpec]:
    """Every candidate of the config, with each grid point as a candidate of its own (in a stable order)."""
    specs = []
    for candidate in config.model.candidates:
        keys = sorted(candidate.grid)
        for values in itertools.product(*(candidate.grid[k] for k in keys)):
            point = dict(zip(keys, values, strict=True))
            suffix = "".join(f"__{k}={v}" for k, v in point.items())
            specs.append(CandidateSpec(candidate.name + suffix, candidate.estimator, {**candidate.params, **point}))
    return specs


def build_pipeline(config: PipelineConfig, spec: CandidateSpec) -> Pipeline:
    dataset = config.dataset
    numeric = [f.name for f in dataset.features if f.type in ("numeric", "boolean")]
    categorical = [f.name for f in dataset.features if f.type == "categorical"]
    transformers = []
    # A transformer whose column list is empty makes the ONNX conversion fail: leave it out.
    if numeric:
        # keep_empty_features: a nullable column with no value in the training rows stays an input (imputed as
        # 0) instead of vanishing from the model, whose ONNX form must take every feature.
        steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
        # Scaling helps linear models only. Before trees it would cost exactness: sklearn scales in float64 and
        # ONNX in float32, and a value that lands on the other side of a split threshold changes a prediction.
        if spec.estimator in SCALE_SENSITIVE:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        # Missing categories arrive as MISSING_CATEGORY (see features_of), not NaN: skl2onnx converts a string
        # imputer only for string missing values, and ONNX string tensors have no NaN. The categories are set in
        # `fit` (learned_categories): sklearn's own max_categories/min_frequency make "infrequent" columns, which
        # skl2onnx cannot convert for unseen values.
        categories = Pipeline([("one_hot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))])
        transformers.append(("categorical", categories, categorical))
    features = ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
    return Pipeline([("features", features), ("model", _estimator(config, spec))])


def features_of(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """The model's input columns, in config order, as the pipeline (and its ONNX form) expects them:
    numbers and booleans as float64 (NaN when missing), categories as text (MISSING_CATEGORY when missing)."""
    columns = {}
    for feature in dataset.features:
        values = frame[feature.name]
        if feature.type == "categorical":
            columns[feature.name] = values.astype(object).where(values.notna(), MISSING_CATEGORY).astype(str)
        else:
            columns[feature.name] = pd.to_numeric(values.astype("Float64"), errors="coerce").astype("float64")
    return pd.DataFrame(columns, index=frame.index)


def target_of(frame: pd.DataFrame, dataset: Dataset) -> np.ndarray:
    """The target as a model is fitted and scored on it: class labels as `classes.for_training` gives them, or
    regression values as float64."""
    values = frame[dataset.target]
    if dataset.task == "classification":
        return classes.for_training(values, dataset)
    return values.astype("float64").to_numpy()


_MORE_DATA = "collect more days (param history_days) or widen training.window_days"


def split_problem(config: PipelineConfig, splits: dict[str, pd.DataFrame]) -> str | None:
    """Why these splits cannot train and evaluate a classifier, or None: each needs at least two classes (a
    model cannot learn one, and average precision and ROC AUC are undefined on one), and a class the valid or
    test split holds must be in the train split (a model cannot predict a class it never saw)."""
    dataset = config.dataset
    if dataset.task != "classification":
        return None
    counts = {name: frame[dataset.target].value_counts() for name, frame in splits.items()}
    for name, found in counts.items():
        if len(found) < 2:
            rows = ", ".join(f"{n} row(s) of class {classes.text_of(c)}" for c, n in found.items())
            return (
                f"the {name} split has {rows or 'no labelled rows'} and no other class: too little data to train "
                f"and compare models; {_MORE_DATA}"
            )
    trained = set(counts.get("train", pd.Series(dtype="int64")).index)
    for name, found in counts.items():
        if unseen := [c for c in found.index if c not in trained]:
            rows = ", ".join(f"{found[c]} row(s) of class {classes.text_of(c)}" for c in unseen)
            return f"the {name} split has {rows}, and the train split has none to learn from; {_MORE_DATA}"
    return None


def learned_categories(features: pd.DataFrame, dataset: Dataset) -> list[list[str]]:
    """Per categorical feature (in config order), the categories its one-hot encoding keeps, from training rows
    as `features_of` gives them: every value a closed set (`allowed`) shows, or the `max_categories` most frequent
    values of an open set (ties broken by value, so the same rows keep the same ones). Each is logged with the
    share of rows the kept categories cover."""
    kept = []
    for feature in dataset.features:
        if feature.type != "categorical":
            continue
        counts = features[feature.name].value_counts()
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if feature.allowed is None:
            ranked = ranked[: feature.max_categories]
        kept.append(sorted(value for value, _ in ranked))
        covered = sum(n for _, n in ranked) / max(len(features), 1)
        logger.info(
            "%s: %d distinct value(s) in the training rows, %d kept as categories (%.1f %% of rows); any other "
            "value counts as one 'other'",
            feature.name,
            len(counts),
            len(ranked),
            100 * covered,
        )
    return kept


def ordered(frame: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Rows sorted by id: fitting does not depend on the order files were read in."""
    return frame.sort_values(dataset.id_column, kind="stable").reset_index(drop=True)


def fit(pipeline: Pipeline, config: PipelineConfig, frame: pd.DataFrame) -> Pipeline:
    """Fit on `frame` (a training split); estimators without `class_weight` get balanced sample weights."""
    dataset = config.dataset
    if frame.empty:
        raise ValueError("the training split has no rows")
    rows = ordered(frame, dataset)
    X, y = features_of(rows, dataset), target_of(rows, dataset)
    if any(f.type == "categorical" for f in dataset.features):
        pipeline.set_params(features__categorical__one_hot__categories=learned_categories(X, dataset))
    fit_params = {}
    estimator = pipeline.named_steps["model"]
    wants_balance = config.model.class_weight == "balanced" and dataset.task == "classification"
    if wants_balance and "class_weight" not in estimator.get_params():
        fit_params["model__sample_weight"] = compute_sample_weight("balanced", y)
    return pipeline.fit(X, y, **fit_params)


def scores(pipeline: Pipeline, config: PipelineConfig, frame: pd.DataFrame) -> np.ndarray:
    """Each class's probability, a column per class in `pipeline.classes_` order; or the predicted values."""
    X = features_of(frame, config.dataset)
    return pipeline.predict(X) if config.dataset.task == "regression" else pipeline.predict_proba(X)


def evaluate(pipeline: Pipeline, config: PipelineConfig, frame: pd.DataFrame) -> dict[str, float]:
    """The task's metrics of `pipeline` on `frame` (every metric in config.METRICS, plus a few to read)."""
    X = features_of(frame, config.dataset)
    y = target_of(frame, config.dataset)
    if config.dataset.task == "regression":
        return metrics_of(config, y, pipeline.predict(X))
    return metrics_of(config, y, pipeline.predict_proba(X), pipeline.predict(X), pipeline.classes_)


def metrics_of(
    config: PipelineConfig,
    y: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray | None = None,
    model_classes: np.ndarray | None = None,
    names: Collection[str] | None = None,
) -> dict[str, float]:
    """The task's metrics from true values `y` (as `target_of` gives them) and what a model gave: predicted
    values; or for classification each class's probability (a column per class of `model_classes`, in that
    order) and the predicted `labels`. `names`: only these (default: every one; the model card scores a model
    dozens of times, and each metric costs milliseconds of input checks).

    Two classes: F1, precision, recall, ROC AUC and average precision are about the positive class
    (`classes.positive_class`). More: F1, precision and recall are macro averages, ROC AUC and average precision
    the mean over the classes `y` holds of each class against the rest.
    """
    from sklearn import metrics

    if config.dataset.task == "regression":
        measures = {
            "rmse": lambda: math.sqrt(metrics.mean_squared_error(y, predicted)),
            "mae": lambda: metrics.mean_absolute_error(y, predicted),
            "r2": lambda: metrics.r2_score(y, predicted),
        }
        return {name: float(measure()) for name, measure in measures.items() if names is None or name in names}
    model_classes = np.asarray(model_classes)
    measures = {"log_loss": lambda: metrics.log_loss(y, predicted, labels=model_classes)}
    if len(model_classes) == 2:
        positive = classes.positive_class(config.dataset, model_classes)
        is_positive = y == positive
        column = predicted[:, list(model_classes).index(positive)]
        kept = {"average": "binary", "pos_label": positive, "zero_division": 0}
        measures["predicted_positive_rate"] = lambda: np.mean(labels == positive)
        one_vs_rest = [(is_positive, column)]
    else:
        kept = {"average": "macro", "zero_division": 0}
        one_vs_rest = [(y == c, predicted[:, i]) for i, c in enumerate(model_classes) if (y == c).any()]
    measures |= {
        "f1": lambda: metrics.f1_score(y, labels, **kept),
        "precision": lambda: metrics.precision_score(y, labels, **kept),
        "recall": lambda: metrics.recall_score(y, labels, **kept),
    }
    # A class against the rest is measurable only where both occur.
    measurable = [(truth, score) for truth, score in one_vs_rest if 0 < truth.sum() < len(truth)]
    if measurable:
        measures["roc_auc"] = lambda: np.mean([metrics.roc_auc_score(t, s) for t, s in measurable])
        measures["average_precision"] = lambda: np.mean([metrics.average_precision_score(t, s) for t, s in measurable])
    return {name: float(measure()) for name, measure in measures.items() if names is None or name in names}


def boosting_library(estimator) -> str | None:
    """`lightgbm` or `xgboost` when `estimator` is one of their models (or derives from one), else None."""
    packages = {cls.__module__.partition(".")[0] for cls in type(estimator).__mro__}
    return next((library for library in ("lightgbm", "xgboost") if library in packages), None)


def higher_is_better(config: PipelineConfig, metric: str) -> bool:
    return METRICS[config.dataset.task][metric]


def _estimator(config: PipelineConfig, spec: CandidateSpec):
    module, _, name = ESTIMATORS[config.dataset.task][spec.estimator].rpartition(".")
    estimator_class = getattr(importlib.import_module(module), name)
    # Not the constructor's signature: XGBoost's takes nearly every parameter through **kwargs.
    accepted = estimator_class().get_params()
    if unknown := sorted(set(spec.params) - set(accepted)):
        raise ValueError(f"candidate {spec.name!r}: {spec.estimator} has no parameter(s) {unknown}")
    params = {**FAMILY_DEFAULTS.get(spec.estimator, {}), **spec.params}
    if "random_state" in accepted:
        params.setdefault("random_state", config.model.random_seed)
    if config.model.class_weight == "balanced" and "class_weight" in accepted:
        params.setdefault("class_weight", "balanced")
    return estimator_class(**params)
