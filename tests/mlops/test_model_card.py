"""The model card on data this project did not write: penguins (three text species, two categorical features with
missing values), credit risk (text binary labels, a 'yes'/'no' column read as a boolean feature) and diabetes
(regression, numbers only), each fitted, converted to ONNX and gated as the pipeline does. The demo's card, as a
training run registers it, is checked in tests/dags/test_ml_training_model.py."""

from __future__ import annotations

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score

from include.mlops import model_card, packaging, registry, training
from include.mlops.config import ConfigError, load_config
from include.mlops.datasets import split_rows
from include.mlops.tracking import CandidateResult
from include.mlops.validation import validate_batch
from tests.fixtures.champions import zoo_config
from tests.zoo.datasets import DAYS, ZOO

INTENDED_USE = "Tell the three penguin species of the Palmer archipelago apart from measurements.\nNot for other birds."


@dataclasses.dataclass(frozen=True)
class Trained:
    config: object
    pipeline: object
    splits: dict[str, pd.DataFrame]
    decision: registry.GateDecision
    parity: dict[str, str]


def _train(config, rows: pd.DataFrame, estimator: str, params: dict, champion: dict | None = None) -> Trained:
    """Fit on the train split, judge on test, convert to ONNX and check parity, and gate: as ml_training does."""
    splits = split_rows(rows.dropna(subset=[config.dataset.target]), config.dataset, config.split)
    spec = training.CandidateSpec(estimator.lower(), estimator, params)
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    result = CandidateResult(
        spec.name,
        estimator,
        "0" * 32,
        "models:/m-0",
        training.evaluate(pipeline, config, splits["valid"]),
        training.evaluate(pipeline, config, splits["test"]),
        0.0,
    )
    decision = registry.decide(config, result, champion and "1", champion, [])
    report = packaging.check_parity(pipeline, packaging.to_onnx(pipeline, config), config, splits["test"])
    return Trained(config, pipeline, splits, dataclasses.replace(decision, version="2"), report.as_tags())


def _data(trained: Trained) -> model_card.TrainingData:
    target = trained.config.dataset.target
    counts = {
        name: {str(k): int(v) for k, v in frame[target].value_counts().items()}
        for name, frame in trained.splits.items()
        if trained.config.dataset.task == "classification"
    }
    return model_card.TrainingData(
        "mlops",
        "c" * 64,
        "d" * 64,
        "2026-10-14",
        "2026-11-14",
        {n: len(f) for n, f in trained.splits.items()},
        counts,
        "hash",
    )


@pytest.fixture(scope="module")
def penguins(tmp_path_factory) -> Trained:
    config = zoo_config(tmp_path_factory.mktemp("penguins"), "penguins", "penguins_card")
    # 15 rows: the test split's islands fall on both sides of it (Torgersen has fewer).
    model = config.model.model_copy(update={"intended_use": INTENDED_USE, "min_slice_rows": 15})
    config = config.model_copy(update={"model": model})
    rows = next(z for z in ZOO if z.name == "penguins").rows()
    return _train(config, rows, "LogisticRegression", {"max_iter": 2000})


@pytest.fixture(scope="module")
def credit_risk(tmp_path_factory) -> Trained:
    config = zoo_config(tmp_path_factory.mktemp("credit_risk"), "credit_risk", "credit_risk_card")
    # As collection stores them: validated, so that Records' 'yes'/'no' text is a boolean column.
    start = dt.datetime.combine(DAYS[0], dt.time(), dt.UTC)
    end = dt.datetime.combine(DAYS[-1] + dt.timedelta(days=1), dt.time(), dt.UTC)
    raw = next(z for z in ZOO if z.name == "credit_risk").rows()
    rows = validate_batch(raw, config.dataset, config.validation, start, end, "card").valid
    return _train(config, rows, "LogisticRegression", {"max_iter": 5000})


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory) -> Trained:
    config = zoo_config(tmp_path_factory.mktemp("diabetes"), "diabetes", "diabetes_card")
    rows = next(z for z in ZOO if z.name == "diabetes").rows()
    champion = _train(config, rows, "Ridge", {"alpha": 1000.0})
    return _train(config, rows, "Ridge", {"alpha": 1.0}, champion=champion.decision.challenger_test)


def test_each_slice_of_a_categorical_feature_has_its_rows_and_metrics_or_too_few_rows(penguins):
    test = penguins.splits["test"]
    predicted = model_card.predictions(penguins.pipeline, penguins.config, test)
    found = model_card.slices(penguins.config, test, predicted)
    assert [s.feature for s in found] == ["island"] * test["island"].nunique() + ["sex"] * (
        test["sex"].nunique() + int(test["sex"].isna().any())
    )
    islands = {s.value: s for s in found if s.feature == "island"}
    assert {value: s.rows for value, s in islands.items()} == test["island"].value_counts().to_dict()
    small = [s for s in found if s.rows < 15]
    assert small and all(s.metrics is None for s in small)  # too few rows: no metric
    measured = [s for s in islands.values() if s.metrics is not None]
    assert measured
    for s in measured:
        rows = test[test["island"] == s.value]
        truth = training.target_of(rows, penguins.config.dataset)
        expected = f1_score(
            truth,
            penguins.pipeline.predict(training.features_of(rows, penguins.config.dataset)),
            average="macro",
            zero_division=0,
        )
        assert s.metrics["f1"] == pytest.approx(expected)
    if test["sex"].isna().any():
        assert any(s.value == model_card.MISSING for s in found if s.feature == "sex")


def test_a_boolean_feature_is_sliced_into_true_false_and_missing(credit_risk):
    config = credit_risk.config
    test = credit_risk.splits["test"].copy()
    assert test["Records"].dtype == "boolean" and not test["Records"].isna().any()
    # The data has no missing Records: a few test rows lose theirs, as a nullable feature's would.
    test.loc[test.index[:5], "Records"] = pd.NA
    predicted = model_card.predictions(credit_risk.pipeline, config, test)
    records = [s for s in model_card.slices(config, test, predicted) if s.feature == "Records"]
    given = test["Records"].dropna()
    assert [(s.value, s.rows) for s in records] == [
        ("false", int((~given).sum())),
        ("true", int(given.sum())),
        (model_card.MISSING, 5),
    ]
    assert records[2].metrics is None  # 5 rows: too few
    for s in records[:2]:
        assert s.rows >= config.model.min_slice_rows
        rows = test[test["Records"].eq(s.value == "true").fillna(False).astype(bool)]
        expected = training.evaluate(credit_risk.pipeline, config, rows)
        assert s.metrics == pytest.approx({name: expected[name] for name in s.metrics})
    card = model_card.render(config, credit_risk.pipeline, test, _data(credit_risk), credit_risk.decision, {})
    assert "**Records**" in card and f"| true | {records[1].rows} | " in card
    assert f"| {model_card.MISSING} | 5 | too few rows |" in card


def test_the_confusion_matrix_is_in_the_datas_own_labels(penguins):
    test = penguins.splits["test"]
    predicted = model_card.predictions(penguins.pipeline, penguins.config, test)
    names, matrix = model_card.confusion(penguins.config, predicted)
    assert names == ["Adelie", "Chinstrap", "Gentoo"]
    assert np.sum(matrix) == len(test)
    labels = penguins.pipeline.predict(training.features_of(test, penguins.config.dataset))
    assert np.trace(matrix) == int((labels == test["species"].to_numpy()).sum())
    assert [sum(row) for row in matrix] == [int((test["species"] == n).sum()) for n in names]


def test_permutation_importance_ranks_the_measurements_above_the_year(penguins):
    found = model_card.importances(penguins.pipeline, penguins.config, penguins.splits["test"])
    assert sorted(i.feature for i in found) == sorted(f.name for f in penguins.config.dataset.features)
    assert [i.mean for i in found] == sorted((i.mean for i in found), reverse=True)
    by_name = {i.feature: i.mean for i in found}
    assert found[0].mean > 0.05 and by_name["year"] < found[0].mean


def test_the_card_of_a_classifier(penguins):
    test = penguins.splits["test"]
    card = model_card.render(
        penguins.config, penguins.pipeline, test, _data(penguins), penguins.decision, penguins.parity
    )
    metadata, body = model_card.split_front_matter(card)
    assert metadata["library_name"] == "sklearn" and "tabular-classification" in metadata["tags"]
    (result,) = metadata["model-index"][0]["results"]
    metrics = {m["type"]: m["value"] for m in result["metrics"]}
    assert metrics["f1"] == round(penguins.decision.challenger_test["f1"], 6)
    assert result["dataset"]["name"] == "penguins"

    assert body.startswith("# Model card: penguins_card v2")
    assert f"- intended use: {' '.join(INTENDED_USE.split())}" in body
    assert "- owner: not stated" in body
    assert f"On the {len(test)} rows of the test split." in body
    assert "| true \\ predicted | Adelie | Chinstrap | Gentoo |" in body
    torgersen = int((test["island"] == "Torgersen").sum())
    assert torgersen < 15 and f"| Torgersen | {torgersen} | too few rows |" in body
    train_adelie = int((penguins.splits["train"]["species"] == "Adelie").sum())
    assert f"| `Adelie` | {train_adelie} |" in body  # the class balance
    assert "## Permutation importance" in body and "| `bill_length_mm` |" in body
    assert f"verdict: **passed**, on {len(test)} test rows" in body
    assert "**promote**: first model" in body


def test_the_card_of_a_regressor_summarises_its_residuals_and_compares_it_with_the_champion(diabetes):
    test = diabetes.splits["test"]
    card = model_card.render(
        diabetes.config, diabetes.pipeline, test, _data(diabetes), diabetes.decision, diabetes.parity
    )
    metadata, body = model_card.split_front_matter(card)
    assert "tabular-regression" in metadata["tags"]
    assert "No categorical or boolean feature: no slices." in body
    predicted = diabetes.pipeline.predict(training.features_of(test, diabetes.config.dataset))
    bias = float(np.mean(test["target"].to_numpy() - predicted))
    assert f"| mean (bias) | {bias:.4f} |" in body
    assert "| metric | this version | champion v1 |" in body
    rmse = diabetes.decision.challenger_test["rmse"]
    assert f"| rmse | {rmse:.4f} | {diabetes.decision.champion_test['rmse']:.4f} |" in body
    assert "largest relative error" in body and "intended use: not stated" in body


def test_a_slice_needs_at_least_one_row(tmp_path):
    path = zoo_config(tmp_path, "penguins", "penguins_card").path
    raw = yaml.safe_load(open(path))
    raw["model"]["min_slice_rows"] = 0
    open(path, "w").write(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"model\.min_slice_rows: Input should be greater than or equal to 1"):
        load_config(path)
