"""The ONNX form of each candidate predicts like the sklearn pipeline, and the parity gate catches it when not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import packaging, training
from include.mlops.config import CONFIG_DIR, PipelineConfig, load_config

ESTIMATORS = {
    "LogisticRegression": {"max_iter": 500},
    "RandomForest": {"n_estimators": 30, "max_depth": 8},
    "ExtraTrees": {"n_estimators": 30, "max_depth": 8},
    "GradientBoosting": {"n_estimators": 40, "max_depth": 3},
    "LightGBM": {"n_estimators": 40, "max_depth": 3},
    "XGBoost": {"n_estimators": 40, "max_depth": 3},
}
BOOSTING = ("LightGBM", "XGBoost")


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


def _demo_as(tmp_path, target: str, task: str, target_classes: list) -> PipelineConfig:
    """The demo's config predicting `target`, one of its columns, from the others."""
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["dataset"].update(task=task, target=target, target_classes=target_classes)
    raw["dataset"]["features"] = [f for f in raw["dataset"]["features"] if f["name"] != target]
    primary = "rmse" if task == "regression" else "average_precision"
    raw["model"].update(
        primary_metric=primary, class_weight="none", candidates=[{"name": "g", "estimator": "GradientBoosting"}]
    )
    raw["gate"]["floors"] = {}
    path = tmp_path / f"{target}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(str(path))


@pytest.mark.parametrize("estimator", ["GradientBoosting", *BOOSTING])
def test_regression_converts_with_parity(tmp_path, splits, estimator):
    config = _demo_as(tmp_path, "distance_from_home_km", "regression", [])
    labelled = {name: frame.dropna(subset=["distance_from_home_km"]) for name, frame in splits.items()}
    pipeline = _fit(config, labelled, estimator, {"n_estimators": 40})
    report = packaging.check_parity(pipeline, packaging.to_onnx(pipeline, config), config, labelled["test"])
    assert report.passed and report.max_relative_error < report.tolerance.max_relative_error, report.summary()
    assert [o.name for o in packaging.session(packaging.to_onnx(pipeline, config)).get_outputs()] == ["variable"]


# Text labels as the pipeline gives them to `fit` (an object array of str): the fraud flag, and the channel of
# a transaction (three classes) told from its other columns.
TEXT_TARGETS = {
    "binary": ("is_fraud", {0: "genuine", 1: "fraud"}),
    "multi-class": ("channel", None),
}


@pytest.mark.parametrize("estimator", BOOSTING)
@pytest.mark.parametrize("kind", TEXT_TARGETS)
def test_boosting_on_text_labels_converts_with_parity(tmp_path, splits, estimator, kind):
    target, names = TEXT_TARGETS[kind]
    texts = {n: f.assign(**{target: f[target].astype(object).replace(names or {})}) for n, f in splits.items()}
    classes = sorted(texts["train"][target].unique())
    config = _demo_as(tmp_path, target, "classification", classes)
    spec = training.CandidateSpec("boosting", estimator, {"n_estimators": 30, "max_depth": 3})
    rows = training.ordered(texts["train"], config.dataset)
    labels = rows[target].to_numpy(dtype=object)
    pipeline = training.build_pipeline(config, spec).fit(training.features_of(rows, config.dataset), labels)

    assert list(pipeline.classes_) == classes
    assert set(pipeline.predict(training.features_of(texts["test"], config.dataset))) <= set(classes)
    onnx_bytes = packaging.to_onnx(pipeline, config)
    report = packaging.check_parity(pipeline, onnx_bytes, config, texts["test"])
    assert report.passed and report.label_agreement == 1.0, report.summary()
    assert report.tolerance.family == estimator
    labels_out, probabilities = packaging.session(onnx_bytes).run(
        None, packaging.onnx_feeds(training.features_of(texts["test"].head(5), config.dataset), config.dataset)
    )
    assert set(labels_out) <= set(classes) and probabilities.shape == (5, len(classes))


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
    assert (
        not report.passed and report.max_probability_difference > packaging.SKLEARN_TOLERANCE.max_probability_difference
    )


def _thresholds_moved(onnx_bytes: bytes, factor: float) -> bytes:
    """The ONNX model with every split threshold of its tree ensemble multiplied by `factor`: what a converter
    that wrote the thresholds wrong would hand over."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    (trees,) = [node for node in model.graph.node if node.op_type == "TreeEnsembleClassifier"]
    (thresholds,) = [attribute for attribute in trees.attribute if attribute.name == "nodes_values"]
    moved = [value * factor for value in thresholds.floats]
    del thresholds.floats[:]
    thresholds.floats.extend(moved)
    return model.SerializeToString()


def test_a_lightgbm_model_whose_onnx_form_is_off_beyond_its_tolerance_is_refused(config, splits):
    pipeline = _fit(config, splits, "LightGBM", {"n_estimators": 40, "max_depth": 3})
    onnx_bytes = packaging.to_onnx(pipeline, config)
    assert packaging.check_parity(pipeline, onnx_bytes, config, splits["test"]).passed

    report = packaging.check_parity(pipeline, _thresholds_moved(onnx_bytes, 1.01), config, splits["test"])

    tolerance = packaging.BOOSTING_TOLERANCES["lightgbm"]
    assert (
        report.tolerance == tolerance
        and tolerance.max_probability_difference > packaging.SKLEARN_TOLERANCE.max_probability_difference
    )
    assert not report.passed and report.max_probability_difference > tolerance.max_probability_difference
    assert report.summary().startswith(f"parity FAILED on {len(splits['test'])} test rows against LightGBM's tolerance")
    assert f"(limit {tolerance.max_probability_difference:g})" in report.summary()
    assert report.to_dict()["tolerance"]["family"] == "LightGBM" and report.as_tags()["onnx_parity"] == "failed"


def test_each_family_has_its_tolerance(config):
    def tolerance(estimator: str) -> packaging.ParityTolerance:
        spec = training.CandidateSpec("c", estimator, {})
        return packaging.tolerance_for(training.build_pipeline(config, spec).named_steps["model"])

    assert {e: tolerance(e).family for e in ESTIMATORS} == {
        "LogisticRegression": "scikit-learn",
        "RandomForest": "scikit-learn",
        "ExtraTrees": "scikit-learn",
        "GradientBoosting": "scikit-learn",
        "LightGBM": "LightGBM",
        "XGBoost": "XGBoost",
    }
    assert tolerance("GradientBoosting") == packaging.ParityTolerance("scikit-learn", 0.999, 1e-4, 1e-5)
