"""The label-free estimate on data it was not fitted on, with no shift: the band must hold the realised score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from include.mlops import classes, monitoring, performance_estimate, training
from include.mlops.config import PipelineConfig
from tests.fixtures.champions import zoo_config
from tests.zoo.datasets import ZOO


def _window(config: PipelineConfig, pipeline, frame: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Rows as the inference log keeps them: {class text: probability} and the predicted label as text."""
    probabilities = training.scores(pipeline, config, frame)
    texts = [classes.text_of(c) for c in pipeline.classes_]
    rows = [dict(zip(texts, p, strict=True)) for p in probabilities.tolist()]
    return rows, [classes.text_of(p) for p in pipeline.predict(training.features_of(frame, config.dataset))]


def _fitted(config: PipelineConfig, train: pd.DataFrame, estimator: str, params: dict):
    spec = training.CandidateSpec(estimator.lower(), estimator, params)
    return training.fit(training.build_pipeline(config, spec), config, train)


def _realised(config: PipelineConfig, pipeline, frame: pd.DataFrame) -> dict[str, float]:
    right = pipeline.predict(training.features_of(frame, config.dataset)) == training.target_of(frame, config.dataset)
    return training.evaluate(pipeline, config, frame) | {"accuracy": float(np.mean(right))}


@pytest.fixture(scope="module")
def penguins(tmp_path_factory):
    """Penguins (three text species) dealt into train, calibration and held-out thirds by a fixed shuffle."""
    config = zoo_config(tmp_path_factory.mktemp("penguins"), "penguins", "penguins_estimate")
    rows = next(z for z in ZOO if z.name == "penguins").rows().dropna(subset=[config.dataset.target])
    rows = rows.sample(frac=1, random_state=7).reset_index(drop=True)
    third = len(rows) // 3
    train, valid, held_out = rows[:third], rows[third : 2 * third], rows[2 * third :]
    pipeline = _fitted(config, train, "LogisticRegression", {"C": 0.05, "max_iter": 5000})
    return config, pipeline, valid, held_out


def test_penguins_estimate_brackets_the_realised_score(penguins):
    config, pipeline, valid, held_out = penguins
    calibrator = performance_estimate.of_pipeline(config, pipeline, valid)
    assert isinstance(calibrator, performance_estimate.Calibrator)
    assert calibrator.classes == ("Adelie", "Chinstrap", "Gentoo")

    estimated = performance_estimate.estimate(config, calibrator, *_window(config, pipeline, held_out))
    realised = _realised(config, pipeline, held_out)
    assert estimated.rows == len(held_out)
    assert estimated.low <= realised["f1"] <= estimated.high, (estimated, realised)
    assert estimated.low < estimated.score < estimated.high
    assert abs(estimated.accuracy - realised["accuracy"]) < 0.05


def test_the_calibrator_is_plain_json_and_calibrates_alike_after_the_trip(penguins):
    config, pipeline, valid, held_out = penguins
    calibrator = performance_estimate.of_pipeline(config, pipeline, valid)
    text = json.dumps(calibrator.to_dict())
    again = performance_estimate.from_dict(json.loads(text))
    probabilities = training.scores(pipeline, config, held_out)
    calibrated = again.calibrate(probabilities)
    assert np.allclose(calibrated, calibrator.calibrate(probabilities))
    assert np.allclose(calibrated.sum(axis=1), 1)


def test_too_few_rows_of_a_class_give_no_calibrator_and_say_which(penguins):
    config, pipeline, valid, _ = penguins
    few = pd.concat([valid[valid["species"] != "Chinstrap"], valid[valid["species"] == "Chinstrap"][:3]])
    found = performance_estimate.of_pipeline(config, pipeline, few)
    assert isinstance(found, performance_estimate.NoCalibrator)
    assert "Chinstrap (3 of" in found.reason and f"needs {performance_estimate.MIN_CLASS_ROWS}" in found.reason
    assert performance_estimate.from_dict(found.to_dict()) == found


@pytest.fixture(scope="module")
def demo_model(config, splits):
    """One fit for every metric below: the model does not depend on the primary metric."""
    return _fitted(config, splits["train"], "LogisticRegression", {"C": 1.0, "max_iter": 5000})


@pytest.mark.parametrize("metric", ["average_precision", "f1", "log_loss"])
def test_the_demo_estimate_brackets_the_realised_score(config, splits, demo_model, metric):
    config = config.model_copy(update={"model": config.model.model_copy(update={"primary_metric": metric})})
    calibrator = performance_estimate.of_pipeline(config, demo_model, splits["valid"])
    estimated = performance_estimate.estimate(config, calibrator, *_window(config, demo_model, splits["test"]))
    realised = _realised(config, demo_model, splits["test"])
    assert estimated.low <= realised[metric] <= estimated.high, (estimated, realised[metric])
    assert abs(estimated.accuracy - realised["accuracy"]) < 0.02


def test_regression_has_no_calibrator(tmp_path):
    config = zoo_config(tmp_path, "diabetes", "diabetes_estimate")
    found = performance_estimate.fit_calibrator(config, np.zeros(50), np.zeros((50, 1)), [0])
    assert isinstance(found, performance_estimate.NoCalibrator) and "regression" in found.reason


def test_a_window_of_a_version_without_calibrator_has_no_estimate_and_says_why(penguins):
    config, pipeline, _, held_out = penguins
    probabilities, predictions = _window(config, pipeline, held_out)
    window = pd.DataFrame({"probabilities": probabilities, monitoring.PREDICTION_COLUMN: predictions})
    reason = performance_estimate.load(None, {}).reason
    assert "no calibrator (tag calibrator)" in reason
    found = monitoring.estimated_performance(config, window, performance_estimate.NoCalibrator(reason))
    assert (found.score, found.accuracy, found.note) == (None, None, reason)
    assert found.figures(config.model.primary_metric) == {}
