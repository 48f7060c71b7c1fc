"""The ONNX form of each candidate predicts like the sklearn pipeline, and the parity gate catches it when not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import packaging, training
from include.mlops.config import CONFIG_DIR, load_config

ESTIMATORS = {
    "LogisticRegression": {"max_iter": 500},
    "RandomForest": {"n_estimators": 30, "max_depth": 8},
    "ExtraTrees": {"n_estimators": 30, "max_depth": 8},
    "GradientBoosting": {"n_estimators": 40, "max_depth": 3},
}


def _fit(config, splits, estimator: str, params: dict, train: pd.DataFrame | None = None):
    spec = training.CandidateSpec(estimator.lower(), estimator, params)
    return training.fit(training.build_pipeline(config, spec), config, splits["train"] if train is None else train)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_allowed_classifier_converts_with_parity(config, splits, estimator):
    pipeline = _fit(config, splits, estimator, ESTIMATORS[estimator])
    onnx_bytes = packaging.to_onnx(pipeline, config)
    report = packaging.check_parity(pipeline, onnx_bytes, config, splits["test"])
    assert report.passed, report.summary()
    assert report.rows == len(splits["test"]) and report.label_agreement == 1.0
    assert report.max_probability_difference < 1e-6
    outputs = [o.name for o in packaging.session(onnx_bytes).get_outputs()]
    inputs = [i.name for i in packaging.session(onnx_bytes).get_inputs()]
    assert outputs == ["label", "probabilities"] and inputs == [f.name for f in config.dataset.features]
    assert report.as_tags()["onnx_parity"] == "passed"


def test_regression_converts_with_parity(tmp_path, splits):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["dataset"].update(task="regression", target="distance_from_home_km", target_classes=[])
    raw["dataset"]["features"] = [f for f in raw["dataset"]["features"] if f["name"] != "distance_from_home_km"]
    raw["model"].update(
        primary_metric="rmse", class_weight="none", candidates=[{"name": "g", "estimator": "GradientBoosting"}]
    )
    raw["gate"]["floors"] = {}
    path = tmp_path / "regression.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(str(path))
    labelled = {name: frame.dropna(subset=["distance_from_home_km"]) for name, frame in splits.items()}
    pipeline = _fit(config, labelled, "GradientBoosting", {"n_estimators": 40})
    report = packaging.check_parity(pipeline, packaging.to_onnx(pipeline, config), config, labelled["test"])
    assert report.passed and report.max_relative_error < 1e-5, report.summary()
    assert [o.name for o in packaging.session(packaging.to_onnx(pipeline, config)).get_outputs()] == ["variable"]


def test_a_model_that_predicts_otherwise_fails_parity_and_lists_the_rows(config, splits):
    pipeline = _fit(config, splits, "GradientBoosting", {"n_estimators": 40})
    shuffled = splits["train"].assign(is_fraud=np.random.default_rng(1).permutation(splits["train"]["is_fraud"]))
    other = _fit(config, splits, "GradientBoosting", {"n_estimators": 40}, train=shuffled)
    report = packaging.check_parity(pipeline, packaging.to_onnx(other, config), config, splits["test"])
    assert not report.passed
    assert report.summary().startswith("parity FAILED")
    assert report.max_probability_difference > 1e-2
    if report.label_agreement < 1:
        assert len(report.differing_rows) == round((1 - report.label_agreement) * report.rows)
        assert set(report.differing_rows[0]) == {
            "id",
            "sklearn_label",
            "onnx_label",
            "sklearn_probabilities",
            "onnx_probabilities",
        }
    with pytest.raises(packaging.ParityFailed, match="parity FAILED"):
        raise packaging.ParityFailed(report)


def test_parity_catches_a_scaler_before_trees(config, splits):
    """Why `build_pipeline` scales for linear models only: sklearn scales in float64 and ONNX in float32, and
    rows whose scaled value lands on the other side of a split threshold change their probabilities."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = _fit(config, splits, "RandomForest", {"n_estimators": 60, "max_depth": 12})
    features = pipeline.named_steps["features"]
    numeric_columns = dict((name, cols) for name, _, cols in features.transformers)["numeric"]
    scaled = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    features.transformers = [
        ("numeric", scaled, numeric_columns) if name == "numeric" else (name, step, cols)
        for name, step, cols in features.transformers
    ]
    pipeline = training.fit(pipeline, config, splits["train"])
    report = packaging.check_parity(pipeline, packaging.to_onnx(pipeline, config), config, splits["test"])
    assert not report.passed and report.max_probability_difference > packaging.MAX_PROBABILITY_DIFFERENCE
