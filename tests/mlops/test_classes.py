"""Class labels of every kind through training, metrics, ONNX and the answers: text, booleans and integers, two
classes or more, on scikit-learn's bundled iris and breast cancer data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import datasets as sklearn_datasets
from sklearn import metrics

from include.mlops import classes, deployment, packaging, registry, training
from include.mlops.config import CONFIG_DIR, load_config
from include.mlops.datasets import split_rows
from include.mlops.tracking import CandidateResult
from include.mlops.validation import validate_batch

START, END = pd.Timestamp("2026-11-14", tz="UTC"), pd.Timestamp("2026-11-15", tz="UTC")


def _config(tmp_path, frame: pd.DataFrame, target_classes: list, positive_class=None, primary_metric="f1"):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["dataset"] = {
        "name": "labels",
        "id_column": "id",
        "event_time_column": "at",
        "target": "label",
        "task": "classification",
        "target_classes": target_classes,
        "positive_class": positive_class,
        "features": [{"name": c, "type": "numeric"} for c in frame.columns if c not in ("id", "at", "label")],
    }
    raw["model"].update(
        primary_metric=primary_metric,
        candidates=[{"name": "logistic_regression", "estimator": "LogisticRegression", "params": {"max_iter": 3000}}],
    )
    raw["gate"]["floors"] = {}
    path = tmp_path / "labels.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _rows(features: pd.DataFrame, labels) -> pd.DataFrame:
    columns = {c.replace(" (cm)", "").replace(" ", "_"): features[c] for c in features.columns}
    frame = pd.DataFrame(columns).assign(label=labels)
    seconds = np.arange(len(frame)) * (86_400 // len(frame))
    return frame.assign(id=[f"r{i}" for i in range(len(frame))], at=START + pd.to_timedelta(seconds, unit="s"))


def _splits(config, rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    validated = validate_batch(rows, config.dataset, config.validation, START, END, "t")
    assert validated.report.status == "passed", validated.report.summary()
    return split_rows(validated.valid, config.dataset, config.split)


@pytest.fixture(scope="module")
def iris() -> pd.DataFrame:
    """Iris with its species as text, the way the data is published."""
    bunch = sklearn_datasets.load_iris(as_frame=True)
    return _rows(bunch.data, bunch.target_names[bunch.target])


@pytest.fixture(scope="module")
def cancer() -> pd.DataFrame:
    """Breast cancer with the diagnosis as a boolean `malignant` (sklearn's target is 1 = benign)."""
    bunch = sklearn_datasets.load_breast_cancer(as_frame=True)
    return _rows(bunch.data.iloc[:, :10], bunch.target == 0)


def test_the_helpers_keep_each_kind_apart(tmp_path, cancer):
    config = _config(tmp_path, cancer, [False, True])
    assert classes.kind_of(config.dataset) == "boolean"
    assert classes.for_training(pd.Series([True, False]), config.dataset).tolist() == [1, 0]
    assert [classes.label_of(v, config.dataset) for v in (np.int64(1), 0)] == [True, False]
    with pytest.raises(ValueError, match="2 is not a boolean label"):
        classes.label_of(2, config.dataset)
    assert [classes.text_of(v) for v in (True, np.bool_(False), np.int64(3), "Ideal")] == [
        "true",
        "false",
        "3",
        "Ideal",
    ]
    assert classes.positive_class(config.dataset, np.array([0, 1])) == 1  # true, as the model was trained on it


def test_text_labels_train_convert_and_answer_as_the_data_holds_them(tmp_path, iris):
    config = _config(tmp_path, iris, ["setosa", "versicolor", "virginica"])
    splits = _splits(config, iris)
    spec = training.expand_candidates(config)[0]
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    assert list(pipeline.classes_) == ["setosa", "versicolor", "virginica"]

    test = splits["test"]
    scored = training.evaluate(pipeline, config, test)
    probabilities = pipeline.predict_proba(training.features_of(test, config.dataset))
    y = test["label"].astype(str).to_numpy()
    assert scored["roc_auc"] == pytest.approx(metrics.roc_auc_score(y, probabilities, multi_class="ovr"))
    assert scored["f1"] == pytest.approx(
        metrics.f1_score(y, pipeline.predict(training.features_of(test, config.dataset)), average="macro")
    )
    assert scored["average_precision"] > 0.9 and "predicted_positive_rate" not in scored

    onnx_bytes = packaging.to_onnx(pipeline, config)
    assert packaging.onnx_classes(onnx_bytes) == ["setosa", "versicolor", "virginica"]
    assert packaging.check_parity(pipeline, onnx_bytes, config, test).passed
    answers = deployment.offline_predictions(onnx_bytes, config, test)
    assert {a["label"] for a in answers} <= {"setosa", "versicolor", "virginica"}
    assert set(answers[0]["probabilities"]) == {"setosa", "versicolor", "virginica"}
    agreement = np.mean([a["label"] == truth for a, truth in zip(answers, test["label"], strict=True)])
    assert agreement > 0.85


def test_boolean_labels_are_answered_as_booleans_with_the_positive_class_true(tmp_path, cancer):
    config = _config(tmp_path, cancer, [False, True], primary_metric="average_precision")
    splits = _splits(config, cancer)
    pipeline = training.fit(
        training.build_pipeline(config, training.expand_candidates(config)[0]), config, splits["train"]
    )
    test = splits["test"]
    scored = training.evaluate(pipeline, config, test)
    malignant = pipeline.predict_proba(training.features_of(test, config.dataset))[:, 1]
    assert scored["average_precision"] == pytest.approx(metrics.average_precision_score(test["label"], malignant))

    onnx_bytes = packaging.to_onnx(pipeline, config)
    assert packaging.onnx_classes(onnx_bytes) == [0, 1]  # ONNX has no boolean class labels
    answers = deployment.offline_predictions(onnx_bytes, config, test)
    assert {type(a["label"]) for a in answers} == {bool}
    assert set(answers[0]["probabilities"]) == {"false", "true"}
    assert np.mean([a["label"] == truth for a, truth in zip(answers, test["label"], strict=True)]) > 0.85


def test_the_positive_class_decides_what_the_binary_metrics_are_about(tmp_path, cancer):
    """The same model scored for `benign` and for `malignant`: average precision follows the positive class."""
    text_labels = cancer.assign(label=cancer["label"].map({True: "malignant", False: "benign"}))
    by_default = _config(tmp_path, text_labels, ["benign", "malignant"])
    benign = _config(tmp_path, text_labels, ["benign", "malignant"], positive_class="benign")
    splits = _splits(by_default, text_labels)
    pipeline = training.fit(
        training.build_pipeline(by_default, training.expand_candidates(by_default)[0]), by_default, splits["train"]
    )
    test = splits["test"]
    probabilities = pipeline.predict_proba(training.features_of(test, by_default.dataset))
    for config, positive, column in ((by_default, "malignant", 1), (benign, "benign", 0)):
        scored = training.evaluate(pipeline, config, test)
        truth = test["label"] == positive
        assert scored["average_precision"] == pytest.approx(
            metrics.average_precision_score(truth, probabilities[:, column])
        )
        assert scored["recall"] == pytest.approx(
            metrics.recall_score(
                test["label"], pipeline.predict(training.features_of(test, config.dataset)), pos_label=positive
            )
        )
    assert training.evaluate(pipeline, benign, test)["average_precision"] != pytest.approx(
        training.evaluate(pipeline, by_default, test)["average_precision"]
    )


def test_a_multi_class_score_is_the_mean_over_the_classes_the_rows_hold(tmp_path, iris):
    config = _config(tmp_path, iris, ["setosa", "versicolor", "virginica"])
    model_classes = np.array(["setosa", "versicolor", "virginica"])
    y = np.array(["setosa", "setosa", "versicolor", "versicolor"])  # no virginica among these rows
    probabilities = np.array([[0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    labels = model_classes[probabilities.argmax(axis=1)]
    scored = training.metrics_of(config, y, probabilities, labels, model_classes)
    setosa = metrics.roc_auc_score(y == "setosa", probabilities[:, 0])
    versicolor = metrics.roc_auc_score(y == "versicolor", probabilities[:, 1])
    assert scored["roc_auc"] == pytest.approx((setosa + versicolor) / 2)
    assert scored["log_loss"] == pytest.approx(metrics.log_loss(y, probabilities, labels=model_classes))


def test_a_label_outside_target_classes_is_quarantined_and_named(tmp_path, iris):
    config = _config(tmp_path, iris, ["setosa", "versicolor", "virginica"])
    rows = iris.copy()
    rows.loc[[3, 70], "label"] = ["Setosa", "unknown"]
    result = validate_batch(
        rows, config.dataset, config.validation.model_copy(update={"max_invalid_row_fraction": 0.05}), START, END, "t"
    )
    (failure,) = [f for f in result.report.failures if f.check == "class"]
    assert failure.rows == 2 and "not among target_classes ['setosa', 'versicolor', 'virginica']" in failure.detail
    assert sorted(result.quarantined["label"]) == ["Setosa", "unknown"] and len(result.valid) == len(rows) - 2


@pytest.mark.parametrize(
    ("written", "read"),
    [
        (pd.Series([True, False, None], dtype="boolean"), [True, False, pd.NA]),
        (pd.Series(["yes", "no", ""]), [True, False, pd.NA]),
        (pd.Series([1.0, 0.0, np.nan]), [True, False, pd.NA]),
    ],
)
def test_boolean_labels_are_read_from_what_sources_give(tmp_path, cancer, written, read):
    config = _config(tmp_path, cancer, [False, True])
    rows = cancer.head(3).assign(label=written.to_numpy())
    result = validate_batch(rows, config.dataset, config.validation, START, END, "t")
    assert result.report.status == "passed" and result.valid["label"].tolist() == read


def test_a_class_only_the_test_split_holds_is_named(tmp_path, iris):
    config = _config(tmp_path, iris, ["setosa", "versicolor", "virginica"])
    splits = _splits(config, iris)
    without = {**splits, "train": splits["train"][splits["train"]["label"] != "virginica"]}
    problem = training.split_problem(config, without)
    assert problem.startswith("the valid split has") and "of class virginica, and the train split has none" in problem
    assert "history_days" in problem


def test_the_gate_and_its_floors_judge_a_multi_class_model_by_its_macro_metrics(tmp_path, iris):
    config = _config(tmp_path, iris, ["setosa", "versicolor", "virginica"])
    splits = _splits(config, iris)
    spec = training.expand_candidates(config)[0]
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    scored = {name: training.evaluate(pipeline, config, splits[name]) for name in ("valid", "test")}
    result = CandidateResult(spec.name, spec.estimator, "run", "models:/m", scored["valid"], scored["test"], 0.1)

    def judged(floors: dict, champion: dict | None = None):
        gated = config.model_copy(update={"gate": config.gate.model_copy(update={"floors": floors})})
        return registry.decide(gated, result, None if champion is None else "1", champion, [])

    assert judged({"roc_auc": 0.9, "log_loss": 1.0}).promote
    # log_loss's floor is a ceiling: iris is easy, but no model's log loss is that small.
    refused = judged({"log_loss": 1e-6, "average_precision": 0.5})
    assert not refused.promote and list(refused.floors_failed) == ["log_loss"] and "log_loss" in refused.reason
    better = {**scored["test"], "f1": scored["test"]["f1"] + 0.01}
    assert not judged({}, champion=better).promote  # macro F1, the primary metric, below the champion's
