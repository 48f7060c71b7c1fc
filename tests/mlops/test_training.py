"""Candidates and the pipeline built from the config: grids, the allow-list, imbalance handling, both tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from include.mlops import packaging, training
from include.mlops.config import CONFIG_DIR, ConfigError, load_config


def test_grids_expand_into_named_candidates(config):
    specs = training.expand_candidates(config)
    assert [s.name for s in specs] == [
        "logistic_regression",
        "random_forest",
        "lightgbm__learning_rate=0.05",
        "lightgbm__learning_rate=0.1",
    ]
    assert specs[3].params == {"n_estimators": 150, "max_depth": 3, "n_jobs": 1, "learning_rate": 0.1}


def _with_model(**model) -> dict:
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"].update(model)
    return raw


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"candidates": [{"name": "hgb", "estimator": "HistGradientBoosting"}]},
            "HistGradientBoosting is refused: the pinned skl2onnx cannot convert",
        ),
        ({"candidates": [{"name": "svm", "estimator": "SVC"}]}, "'SVC' is not one of the estimators that convert"),
        ({"candidates": [{"name": "r", "estimator": "Ridge"}]}, "Ridge is not a classification estimator"),
        ({"primary_metric": "rmse"}, "primary_metric for classification must be one of"),
        (
            {"candidates": [{"name": "g", "estimator": "GradientBoosting", "grid": {"max_depth": list(range(13))}}]},
            "13 combinations; at most 12",
        ),
        (
            {"candidates": [{"name": "a", "estimator": "RandomForest"}, {"name": "a", "estimator": "ExtraTrees"}]},
            "candidate names used more than once",
        ),
    ],
)
def test_the_allow_list_and_its_messages(tmp_path, model, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_with_model(**model)))
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_the_pipeline_learns_the_demo_and_is_one_sklearn_pipeline(config, splits):
    spec = next(s for s in training.expand_candidates(config) if s.estimator == "LightGBM")
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    assert [name for name, _ in pipeline.steps] == ["features", "model"]
    metrics = training.evaluate(pipeline, config, splits["test"])
    assert metrics["roc_auc"] > 0.8 and metrics["average_precision"] > 0.2
    one_hot = pipeline.named_steps["features"].named_transformers_["categorical"].named_steps["one_hot"]
    assert one_hot.handle_unknown == "ignore"


def test_unknown_categories_and_missing_values_are_handled_at_prediction(config, splits):
    spec = training.expand_candidates(config)[0]
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    odd = splits["test"].head(3).copy()
    odd["merchant_category"] = ["crypto", None, "grocery"]
    odd["distance_from_home_km"] = [np.nan, 1.0, 2.0]
    assert np.isfinite(training.scores(pipeline, config, odd)).all()


def test_balanced_weights_raise_recall_of_the_rare_class(config, splits):
    unweighted = config.model_copy(update={"model": config.model.model_copy(update={"class_weight": "none"})})
    spec = training.CandidateSpec("lr", "LogisticRegression", {"max_iter": 2000})
    recall = {}
    for name, variant in (("balanced", config), ("none", unweighted)):
        pipeline = training.fit(training.build_pipeline(variant, spec), variant, splits["train"])
        recall[name] = training.evaluate(pipeline, variant, splits["test"])["recall"]
    assert recall["balanced"] > recall["none"]


def test_gradient_boosting_gets_sample_weights_since_it_has_no_class_weight(config, splits):
    spec = training.CandidateSpec("gb", "GradientBoosting", {"n_estimators": 20})
    pipeline = training.build_pipeline(config, spec)
    assert "class_weight" not in pipeline.named_steps["model"].get_params()
    fitted = training.fit(pipeline, config, splits["train"])
    assert training.evaluate(fitted, config, splits["test"])["recall"] > 0.3


def test_an_unknown_parameter_names_the_candidate(config):
    with pytest.raises(ValueError, match="candidate 'lr': LogisticRegression has no parameter"):
        training.build_pipeline(config, training.CandidateSpec("lr", "LogisticRegression", {"depth": 3}))


def test_fitting_does_not_depend_on_row_order(config, splits):
    spec = training.CandidateSpec("rf", "RandomForest", {"n_estimators": 30})
    first = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    shuffled = splits["train"].sample(frac=1.0, random_state=7)
    second = training.fit(training.build_pipeline(config, spec), config, shuffled)
    np.testing.assert_array_equal(
        training.scores(first, config, splits["test"]), training.scores(second, config, splits["test"])
    )


def test_regression_works_too(tmp_path, splits):
    """Distance from home as the target: far mostly means abroad, which the features say."""
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["dataset"].update(task="regression", target="distance_from_home_km", target_classes=[])
    raw["dataset"]["features"] = [f for f in raw["dataset"]["features"] if f["name"] != "distance_from_home_km"]
    raw["model"].update(
        primary_metric="rmse",
        class_weight="none",
        candidates=[
            {"name": "ridge", "estimator": "Ridge"},
            {"name": "trees", "estimator": "ExtraTrees", "params": {"n_estimators": 30, "min_samples_leaf": 20}},
        ],
    )
    raw["gate"]["floors"] = {"r2": 0.0}
    path = tmp_path / "regression.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(str(path))
    labelled = {name: frame.dropna(subset=["distance_from_home_km"]) for name, frame in splits.items()}
    results = {}
    for spec in training.expand_candidates(config):
        pipeline = training.fit(training.build_pipeline(config, spec), config, labelled["train"])
        results[spec.name] = training.evaluate(pipeline, config, labelled["test"])
        predicted = training.scores(pipeline, config, labelled["test"])
        truth = labelled["test"]["distance_from_home_km"].to_numpy()
        assert results[spec.name]["rmse"] == pytest.approx(np.sqrt(np.mean((predicted - truth) ** 2)))
    assert set(results["ridge"]) == {"rmse", "mae", "r2"}
    assert results["trees"]["r2"] > 0.1, results
    assert not training.higher_is_better(config, "rmse")


def test_only_linear_models_scale_their_inputs(config):
    """Trees gain nothing from scaling, and it would cost their ONNX form its exactness (float32 vs float64)."""

    def numeric_steps(estimator: str) -> list[str]:
        pipeline = training.build_pipeline(config, training.CandidateSpec("c", estimator, {}))
        numeric = dict((name, steps) for name, steps, _ in pipeline.named_steps["features"].transformers)["numeric"]
        return [name for name, _ in numeric.steps]

    assert numeric_steps("LogisticRegression") == ["impute", "scale"]
    assert numeric_steps("RandomForest") == numeric_steps("GradientBoosting") == ["impute"]


def test_a_split_with_one_class_is_named_with_its_counts(config, splits):
    assert training.split_problem(config, splits) is None
    one_class = {**splits, "valid": splits["valid"][splits["valid"]["is_fraud"] == 0]}
    problem = training.split_problem(config, one_class)
    assert problem.startswith(f"the valid split has {len(one_class['valid'])} row(s) of class 0 and no other class")
    assert "history_days" in problem


def _open_categories(config, max_categories: int):
    """The demo config with merchant_category as an open set keeping `max_categories` values."""
    features = [
        f.model_copy(update={"allowed": None, "max_categories": max_categories}) if f.name == "merchant_category" else f
        for f in config.dataset.features
    ]
    return config.model_copy(update={"dataset": config.dataset.model_copy(update={"features": features})})


def test_an_open_categorical_keeps_its_most_frequent_values_and_the_rest_is_one_other(config, splits):
    opened = _open_categories(config, 3)
    spec = training.CandidateSpec("rf", "RandomForest", {"n_estimators": 20, "max_depth": 6})
    pipeline = training.fit(training.build_pipeline(opened, spec), opened, splits["train"])
    one_hot = pipeline.named_steps["features"].named_transformers_["categorical"].named_steps["one_hot"]
    ranked = splits["train"]["merchant_category"].value_counts()
    assert list(one_hot.categories_[0]) == sorted(ranked.index[:3])
    assert list(one_hot.categories_[1]) == sorted(splits["train"]["channel"].unique())  # a closed set keeps all

    rare = ranked.index[-1]
    rows = splits["test"].head(50)
    as_rare, as_unseen = rows.assign(merchant_category=rare), rows.assign(merchant_category="space_travel")
    np.testing.assert_array_equal(
        training.scores(pipeline, opened, as_rare), training.scores(pipeline, opened, as_unseen)
    )
    onnx_bytes = packaging.to_onnx(pipeline, opened)
    assert packaging.onnx_categories(onnx_bytes)["merchant_category"] == sorted(ranked.index[:3])
    assert packaging.check_parity(pipeline, onnx_bytes, opened, pd.concat([splits["test"], as_unseen])).passed


def test_a_categorical_of_a_thousand_levels_trains_converts_and_stays_small(config, splits):
    """Merchant ids: 1,500 levels in the rows, the 1,000 most frequent kept (the most the config allows)."""
    opened = _open_categories(config, 1000)
    rng = np.random.default_rng(5)
    merchants = {
        name: frame.head(3000).assign(
            merchant_category=[f"m{n:05d}" for n in rng.integers(0, 1500, min(3000, len(frame)))]
        )
        for name, frame in splits.items()
    }
    spec = training.CandidateSpec("rf", "RandomForest", {"n_estimators": 10, "max_depth": 8})
    pipeline = training.fit(training.build_pipeline(opened, spec), opened, merchants["train"])
    onnx_bytes = packaging.to_onnx(pipeline, opened)
    assert len(packaging.onnx_categories(onnx_bytes)["merchant_category"]) == 1000
    assert len(onnx_bytes) < 2_000_000
    assert packaging.check_parity(pipeline, onnx_bytes, opened, merchants["test"]).passed


BOOSTING = ("LightGBM", "XGBoost")


@pytest.mark.parametrize("estimator", BOOSTING)
def test_boosting_candidates_are_seeded_quiet_and_repeatable(config, splits, estimator, capfd):
    spec = training.CandidateSpec("b", estimator, {"n_estimators": 30, "max_depth": 3})
    first = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    assert first.named_steps["model"].get_params()["random_state"] == config.model.random_seed
    shuffled = splits["train"].sample(frac=1.0, random_state=7)
    one_thread = training.CandidateSpec("b", estimator, {**spec.params, "n_jobs": 1})
    second = training.fit(training.build_pipeline(config, one_thread), config, shuffled)
    np.testing.assert_array_equal(
        training.scores(first, config, splits["test"]), training.scores(second, config, splits["test"])
    )
    logged = capfd.readouterr()
    assert "[LightGBM]" not in logged.out + logged.err and "WARNING" not in logged.out + logged.err


@pytest.mark.parametrize("estimator", BOOSTING)
def test_balanced_boosting_raises_recall_of_the_rare_class(config, splits, estimator):
    """LightGBM weighs classes with its own class_weight; XGBoost has none and gets balanced sample weights."""
    unweighted = config.model_copy(update={"model": config.model.model_copy(update={"class_weight": "none"})})
    spec = training.CandidateSpec("b", estimator, {"n_estimators": 30, "max_depth": 3})
    assert ("class_weight" in training.build_pipeline(config, spec).named_steps["model"].get_params()) == (
        estimator == "LightGBM"
    )
    recall = {}
    for name, variant in (("balanced", config), ("none", unweighted)):
        pipeline = training.fit(training.build_pipeline(variant, spec), variant, splits["train"])
        recall[name] = training.evaluate(pipeline, variant, splits["test"])["recall"]
    assert recall["balanced"] > recall["none"] + 0.2, recall


def test_xgboost_takes_its_keyword_parameters_and_refuses_a_misspelt_one(config):
    model = training.build_pipeline(config, training.CandidateSpec("x", "XGBoost", {"subsample": 0.8})).named_steps
    assert model["model"].get_params()["subsample"] == 0.8
    with pytest.raises(ValueError, match=r"candidate 'x': XGBoost has no parameter\(s\) \['n_estimator'\]"):
        training.build_pipeline(config, training.CandidateSpec("x", "XGBoost", {"n_estimator": 10}))


@pytest.mark.parametrize(
    "labels",
    [np.array([3, 5, 9]), np.array(["card_present", "online", "phone"], dtype=object)],
    ids=["integers", "text"],
)
def test_the_xgboost_classifier_answers_in_the_labels_it_was_fitted_on(labels):
    from include.mlops.boosting import XGBoostClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 3))
    y = labels[np.digitize(X[:, 0], [-0.4, 0.4])]
    model = XGBoostClassifier(n_estimators=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.classes_, labels)
    assert np.mean(model.predict(X) == y) > 0.9
    np.testing.assert_array_equal(model.predict(X), labels[model.predict_proba(X).argmax(axis=1)])
    # Fitted again on other labels (as many: XGBoost itself cannot refit to another number of classes).
    others = labels[::-1].copy()
    np.testing.assert_array_equal(model.fit(X, others[np.digitize(X[:, 1], [-0.4, 0.4])]).classes_, labels)
    assert np.mean(model.predict(X) == others[np.digitize(X[:, 1], [-0.4, 0.4])]) > 0.9
