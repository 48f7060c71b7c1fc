"""Candidates, the sklearn pipeline built from the config's feature types, fitting and metrics.

Every candidate is one sklearn `Pipeline`: a `ColumnTransformer` (numeric and boolean columns imputed, and
scaled for linear models; categorical columns one-hot encoded with unknown categories ignored) followed by the
estimator, so that the whole thing converts to ONNX in one piece. Seeds come from the config, and rows are
sorted by id before fitting, so that the same snapshot always gives the same model.
"""

from __future__ import annotations

import importlib
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.class_weight import compute_sample_weight

from include.mlops.config import ESTIMATORS, METRICS, Dataset, PipelineConfig

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
        steps = [("impute", SimpleImputer(strategy="median"))]
        # Scaling helps linear models only. Before trees it would cost exactness: sklearn scales in float64 and
        # ONNX in float32, and a value that lands on the other side of a split threshold changes a prediction.
        if spec.estimator in SCALE_SENSITIVE:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        # Missing categories arrive as MISSING_CATEGORY (see features_of), not NaN: skl2onnx converts a string
        # imputer only for string missing values, and ONNX string tensors have no NaN.
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
    values = frame[dataset.target]
    return (
        values.astype("int64").to_numpy() if dataset.task == "classification" else values.astype("float64").to_numpy()
    )


def split_problem(config: PipelineConfig, splits: dict[str, pd.DataFrame]) -> str | None:
    """Why these splits cannot train and evaluate a classifier, or None: each needs at least two classes (a
    model cannot learn one, and average precision and ROC AUC are undefined on one)."""
    if config.dataset.task != "classification":
        return None
    for name, frame in splits.items():
        counts = frame[config.dataset.target].value_counts()
        if len(counts) < 2:
            found = ", ".join(f"{n} row(s) of class {c}" for c, n in counts.items()) or "no labelled rows"
            return (
                f"the {name} split has {found} and no other class: too little data to train and compare models; "
                "collect more days (param history_days) or widen training.window_days"
            )
    return None


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
    fit_params = {}
    estimator = pipeline.named_steps["model"]
    wants_balance = config.model.class_weight == "balanced" and dataset.task == "classification"
    if wants_balance and "class_weight" not in estimator.get_params():
        fit_params["model__sample_weight"] = compute_sample_weight("balanced", y)
    return pipeline.fit(X, y, **fit_params)


def scores(pipeline: Pipeline, config: PipelineConfig, frame: pd.DataFrame) -> np.ndarray:
    """The positive class's probability (binary), all class probabilities (multi-class), or predicted values."""
    X = features_of(frame, config.dataset)
    if config.dataset.task == "regression":
        return pipeline.predict(X)
    probabilities = pipeline.predict_proba(X)
    return probabilities[:, 1] if probabilities.shape[1] == 2 else probabilities


def evaluate(pipeline: Pipeline, config: PipelineConfig, frame: pd.DataFrame) -> dict[str, float]:
    """The task's metrics of `pipeline` on `frame` (every metric in config.METRICS, plus a few to read)."""
    X = features_of(frame, config.dataset)
    labels = None if config.dataset.task == "regression" else pipeline.predict(X)
    classes = None if labels is None else pipeline.classes_
    return metrics_of(config, target_of(frame, config.dataset), scores(pipeline, config, frame), labels, classes)


def metrics_of(
    config: PipelineConfig,
    y: np.ndarray,
    predicted: np.ndarray,
    labels: np.ndarray | None = None,
    classes: np.ndarray | None = None,
) -> dict[str, float]:
    """The task's metrics from true values `y` and what a model gave: `predicted` as `scores` returns it, and
    for classification the predicted `labels` and the model's `classes` (in its probability order)."""
    from sklearn import metrics

    if config.dataset.task == "regression":
        return {
            "rmse": float(math.sqrt(metrics.mean_squared_error(y, predicted))),
            "mae": float(metrics.mean_absolute_error(y, predicted)),
            "r2": float(metrics.r2_score(y, predicted)),
        }
    binary = predicted.ndim == 1
    average = "binary" if binary else "macro"
    result = {
        "f1": float(metrics.f1_score(y, labels, average=average, zero_division=0)),
        "precision": float(metrics.precision_score(y, labels, average=average, zero_division=0)),
        "recall": float(metrics.recall_score(y, labels, average=average, zero_division=0)),
        "log_loss": float(metrics.log_loss(y, predicted, labels=classes)),
        "predicted_positive_rate": float(np.mean(labels == classes[-1])),
    }
    if len(np.unique(y)) > 1:
        result["roc_auc"] = float(metrics.roc_auc_score(y, predicted, multi_class="ovr" if not binary else "raise"))
        result["average_precision"] = float(
            metrics.average_precision_score(y, predicted)
            if binary
            else metrics.average_precision_score(pd.get_dummies(y).to_numpy(), predicted)
        )
    return result


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
