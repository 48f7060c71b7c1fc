"""The retraining decision: every reason it gives, on the demo config (average precision, higher is better)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from include.demo_sources import simulator
from include.mlops import classes, deployment, monitoring, operations_store, validation
from include.mlops.config import CONFIG_DIR, ConfigError, load_config

NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
DRIFTED = monitoring.DriftCheck(rows=800, drift_share=0.5, drifted_columns=("amount", "country"))


def decide(config, check, last_drift_run=None, training_active=False):
    return monitoring.decide(config, check, NOW, last_drift_run, training_active)


def test_the_demo_config_sets_the_drift_section(config):
    assert (config.drift.min_rows, config.drift.threshold, config.drift.cooldown_hours) == (500, 0.3, 24)


def test_data_drift_at_the_threshold_retrains_and_names_the_columns(config):
    decision = decide(config, monitoring.DriftCheck(rows=500, drift_share=0.3, drifted_columns=("amount",)))
    assert decision.retrain and decision.reason.startswith("data drift: 30% of features drifted")
    assert decision.reason.endswith(": amount")


def test_below_the_threshold_is_no_drift(config):
    decision = decide(config, monitoring.DriftCheck(rows=5000, drift_share=0.2))
    assert not decision.retrain and decision.reason == "no drift: 20% of features drifted"


def test_too_few_rows_gives_no_verdict_whatever_the_figures(config):
    decision = decide(config, monitoring.DriftCheck(rows=499, drift_share=1.0))
    assert not decision.retrain and decision.reason == "too few rows: 499 in the window, 500 needed"


def test_a_performance_drop_retrains_with_stable_features(config):
    check = monitoring.DriftCheck(rows=800, drift_share=0.0, live_score=0.30, champion_score=0.40)
    decision = decide(config, check)
    assert decision.retrain and decision.reason.startswith("performance drop: average_precision 0.3000 live")
    small = monitoring.DriftCheck(rows=800, drift_share=0.0, live_score=0.37, champion_score=0.40)
    assert not decide(config, small).retrain
    better = monitoring.DriftCheck(rows=800, drift_share=0.0, live_score=0.45, champion_score=0.40)
    assert monitoring.performance_drop(config, better) == pytest.approx(-0.05)


def test_an_estimated_drop_retrains_only_when_the_config_bounds_it_and_under_the_cool_down(config):
    check = monitoring.DriftCheck(rows=800, drift_share=0.0, champion_score=0.40, estimated_score=0.30)
    unbounded = decide(config, check)
    assert config.drift.max_estimated_drop is None and not unbounded.retrain
    bounded = config.model_copy(update={"drift": config.drift.model_copy(update={"max_estimated_drop": 0.08})})
    decision = decide(bounded, check)
    assert decision.retrain and decision.reason == (
        "estimated performance drop: average_precision 0.3000 estimated without labels vs 0.4000 for the champion "
        "(0.1000 worse, limit 0.08)"
    )
    within = monitoring.DriftCheck(rows=800, drift_share=0.0, champion_score=0.40, estimated_score=0.33)
    assert not decide(bounded, within).retrain
    cooling = decide(bounded, check, last_drift_run=NOW - dt.timedelta(hours=1))
    assert not cooling.retrain and "would retrain for estimated performance drop" in cooling.reason


def test_a_lower_is_better_metric_drops_when_it_rises(tmp_path):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"]["primary_metric"] = "log_loss"
    raw["gate"]["floors"] = {}
    path = tmp_path / "log_loss.yaml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(str(path))
    worse = monitoring.DriftCheck(rows=800, drift_share=0.0, live_score=0.30, champion_score=0.20)
    assert monitoring.performance_drop(config, worse) == pytest.approx(0.10) and decide(config, worse).retrain
    better = monitoring.DriftCheck(rows=800, drift_share=0.0, live_score=0.10, champion_score=0.20)
    assert not decide(config, better).retrain


def test_the_cool_down_holds_back_a_second_drift_run(config):
    inside = decide(config, DRIFTED, last_drift_run=NOW - dt.timedelta(hours=23))
    assert not inside.retrain and inside.reason.startswith("cool-down until 2026-03-10 13:00 UTC; would retrain for")
    assert decide(config, DRIFTED, last_drift_run=NOW - dt.timedelta(hours=24)).retrain


def test_an_active_training_run_holds_back_a_trigger(config):
    decision = decide(config, DRIFTED, training_active=True)
    assert not decision.retrain and decision.reason.startswith("training already active; would retrain for data drift")


@pytest.mark.parametrize(
    ("key", "value"),
    [("threshold", 0), ("threshold", 1.5), ("min_rows", 0), ("cooldown_hours", -1), ("max_performance_drop", 0)],
)
def test_bad_drift_settings_are_refused_naming_the_key(tmp_path, key, value):
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["drift"][key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"drift\.{key}"):
        load_config(str(path))


def _traffic(days: range, rows: int, world: simulator.Drift = simulator.NO_DRIFT) -> pd.DataFrame:
    frames = [simulator.generate_day(dt.date(2026, 3, 1) + dt.timedelta(d), rows, 7, world).transactions for d in days]
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _traffic(range(0, 5), 1000)


def test_traffic_like_the_reference_does_not_drift(config, reference):
    report = monitoring.measure_drift(reference, _traffic(range(10, 11), 800), config.dataset)
    assert report.drift_share < config.drift.threshold, report.features
    assert [c.column for c in report.features] == [f.name for f in config.dataset.features]
    assert report.prediction is None and "<html" in report.html.lower()
    check = monitoring.DriftCheck(rows=800, drift_share=report.drift_share, drifted_columns=report.drifted_columns)
    assert not decide(config, check).retrain


def test_injected_data_drift_is_measured_and_retrains(config, reference):
    world = simulator.Drift(amount_scale=3.0, shift_share=0.6, new_categories=("crypto",), new_category_share=0.2)
    report = monitoring.measure_drift(reference, _traffic(range(10, 11), 800, world), config.dataset)
    assert {"amount", "merchant_category"} <= set(report.drifted_columns), report.features
    assert report.drift_share >= config.drift.threshold
    check = monitoring.DriftCheck(rows=800, drift_share=report.drift_share, drifted_columns=report.drifted_columns)
    assert decide(config, check).retrain


def test_concept_drift_leaves_the_features_alone(config, reference):
    current = _traffic(range(10, 11), 800, simulator.Drift(concept_drift=True))
    report = monitoring.measure_drift(reference, current, config.dataset)
    assert report.drift_share < config.drift.threshold, report.features


def test_prediction_drift_is_reported_apart_from_the_features(config, reference):
    current = _traffic(range(10, 11), 800)
    labelled_reference = reference.assign(prediction=(reference.index % 50 == 0).astype(int).astype(str))
    labelled_current = current.assign(prediction=(current.index % 3 == 0).astype(int).astype(str))
    report = monitoring.measure_drift(labelled_reference, labelled_current, config.dataset)
    assert report.prediction is not None and report.prediction.drifted
    assert report.drift_share < config.drift.threshold


def _logged(record_id: str, inputs, label: str | None = "0", at: dt.datetime = NOW) -> dict:
    return {
        "request_id": "r" * 32,
        "record_index": 0,
        "record_id": record_id,
        "model_name": "fraud_detector",
        "model_version": "3",
        "predicted_at": at,
        "inputs": inputs,
        "label": label,
        "probabilities": None if label is None else {"0": 0.9, "1": 0.1},
        "value": None,
    }


def _read_back(tmp_path, rows: list[dict], config) -> monitoring.LiveWindow:
    """`rows` written to an inference log on SQLite, read back as the window around NOW."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    operations_store.upgrade(engine)
    with engine.begin() as connection:
        connection.execute(monitoring.inference_log.insert(), rows)
    window = (NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1))
    return monitoring.read_live_window(engine, "fraud_detector", *window, config.dataset)


def test_the_live_window_leaves_out_and_counts_malformed_rows(config, tmp_path):
    good = deployment.records_of(_traffic(range(10, 11), 3), config.dataset)
    rows = [
        _logged("a", good[0]),
        _logged("b", good[1], at=NOW - dt.timedelta(hours=2)),  # before the window
        _logged("c", good[2], at=NOW + dt.timedelta(hours=1)),  # the window's end is open
        _logged("d", {**good[0], "amount": "12.5"}),
        _logged("e", {k: v for k, v in good[0].items() if k != "country"}),
        _logged("f", ["not", "a", "record"]),
        _logged("g", good[0], label=None),
        _logged("h", {**good[0], "is_international": 1}),
        {**_logged("i", good[0]), "model_name": "another_model"},  # another model's traffic
    ]
    window = _read_back(tmp_path, rows, config)
    assert window.frame["record_id"].tolist() == ["a"] and window.malformed == 5
    assert window.frame.loc[0, "amount"] == good[0]["amount"] and window.frame.loc[0, "prediction"] == "0"
    assert window.problems == (
        "inference_log id 4: amount is '12.5', not a finite number",
        "inference_log id 5: country is missing",
        "inference_log id 6: inputs is list, not a record",
        "inference_log id 7: it has no prediction",
        "inference_log id 8: is_international is 1, not true or false",
    )


def test_a_row_of_a_classifier_without_probabilities_is_malformed(config, tmp_path):
    [record] = deployment.records_of(_traffic(range(10, 11), 1), config.dataset)
    window = _read_back(tmp_path, [{**_logged("a", record), "probabilities": None}], config)
    assert window.frame.empty and window.problems == ("inference_log id 1: it has no class probabilities",)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    window = (NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1))
    assert monitoring.count_logged(engine, "fraud_detector", *window) == 1
    assert monitoring.count_logged(engine, "another_model", *window) == 0


def test_the_reference_sample_is_bounded_and_the_same_for_the_same_split(config):
    split = _traffic(range(0, 8), 1000).sample(frac=1, random_state=3)  # row order must not matter
    sample = monitoring.sample_reference(split, config)
    assert len(sample) == config.drift.reference_rows
    again = monitoring.sample_reference(split.sample(frac=1, random_state=4), config)
    assert sample[config.dataset.id_column].tolist() == again[config.dataset.id_column].tolist()
    small = split.head(100)
    assert len(monitoring.sample_reference(small, config)) == 100


def _live(frame: pd.DataFrame, fraud_probability) -> pd.DataFrame:
    probabilities = [{"0": 1 - p, "1": p} for p in fraud_probability]
    return pd.DataFrame(
        {
            "record_id": frame["transaction_id"].astype(str),
            monitoring.PREDICTION_COLUMN: [str(int(p >= 0.5)) for p in fraud_probability],
            "probabilities": probabilities,
        }
    )


def test_live_performance_scores_the_rows_whose_labels_arrived(config):
    day = simulator.generate_day(dt.date(2026, 3, 10), 2000, 7)
    labels = day.transactions[["transaction_id"]].merge(day.labels, on="transaction_id", how="left")
    truth = labels["is_fraud"]
    perfect = _live(day.transactions, truth.fillna(0).to_numpy(dtype=float))
    performance = monitoring.live_performance(config, perfect, labels)
    assert performance.labelled_rows == truth.notna().sum() and performance.score == pytest.approx(1.0)

    inverted = _live(day.transactions, 1 - truth.fillna(0).to_numpy(dtype=float))
    assert monitoring.live_performance(config, inverted, labels).score < 0.1

    no_labels = labels.assign(is_fraud=None)
    nothing = monitoring.live_performance(config, perfect, no_labels)
    assert nothing.score is None and nothing.note == f"0 live rows have labels, {config.drift.min_labelled_rows} needed"

    all_legit = labels.assign(is_fraud=0)
    assert monitoring.live_performance(config, perfect, all_legit).note.endswith("are all of one class")

    nothing_read = monitoring.live_performance(config, perfect, pd.DataFrame())  # no file in the lookback
    assert (nothing_read.labelled_rows, nothing_read.score) == (0, None)
    assert nothing_read.note == "the source's rows have no transaction_id and is_fraud"


def test_the_drift_history_keeps_one_row_per_check_and_the_last_retraining(history_engine):
    engine = history_engine
    assert monitoring.last_retraining(engine, "fraud") is None

    def row(run_id: str, hours: int, retrain: bool) -> dict:
        end = NOW + dt.timedelta(hours=hours)
        return {
            "airflow_run_id": run_id,
            "model_name": "fraud",
            "model_version": "2",
            "window_start": end - dt.timedelta(hours=1),
            "window_end": end,
            "rows": 800,
            "malformed_rows": 0,
            "drifted_columns": ["amount"],
            "labelled_rows": 0,
            "retrain": retrain,
            "reason": "data drift" if retrain else "no drift",
        }

    monitoring.record_check(engine, row("a", 0, True))
    monitoring.record_check(engine, row("b", 1, False))
    monitoring.record_check(engine, row("b", 1, False))  # a retried check replaces its row
    rows = monitoring.history(engine, "fraud")
    assert [r["airflow_run_id"] for r in rows] == ["a", "b"] and rows[0]["drifted_columns"] == ["amount"]
    assert monitoring.last_retraining(engine, "fraud") == NOW
    assert monitoring.last_retraining(engine, "another_model") is None
    # A check retried after it recorded "retrain" (and died before triggering) is not cooled down by itself.
    monitoring.record_check(engine, row("c", 2, True))
    assert monitoring.last_retraining(engine, "fraud") == NOW + dt.timedelta(hours=2)
    assert monitoring.last_retraining(engine, "fraud", other_than_run="c") == NOW
    # A batch run's check may share its run id with an hourly check: each keeps its row, and one cool-down
    # counts both.
    monitoring.record_check(engine, {**row("c", 3, True), "source": monitoring.BATCH})
    assert [(r["airflow_run_id"], r["source"]) for r in monitoring.history(engine, "fraud")][-2:] == [
        ("c", "online"),
        ("c", "batch"),
    ]
    assert monitoring.last_retraining(engine, "fraud") == NOW + dt.timedelta(hours=3)
    assert monitoring.last_retraining(engine, "fraud", other_than_run="c") == NOW + dt.timedelta(hours=3)
    batch_retry = monitoring.last_retraining(engine, "fraud", other_than_run="c", source=monitoring.BATCH)
    assert batch_retry == NOW + dt.timedelta(hours=2)


def test_a_day_of_drifted_hours_retrains_once_and_again_after_the_cool_down(config):
    last, retrained = None, []
    for hour in range(25):
        now = NOW + dt.timedelta(hours=hour)
        if monitoring.decide(config, DRIFTED, now, last, training_active=False).retrain:
            last = now
            retrained.append(hour)
    assert retrained == [0, 24]


def test_the_window_is_read_as_row_by_row_checks_would_read_it(config, tmp_path):
    """The column-wise read keeps exactly the rows (and values) the one-row check keeps."""
    records = deployment.records_of(_traffic(range(10, 11), 300), config.dataset)
    assert any(r["distance_from_home_km"] is None for r in records)  # nulls of a nullable feature
    records[5]["amount"] = 12  # an integer is a number
    records[6]["amount"] = True  # a boolean is not
    records[7]["hour"] = float("nan")
    records[8]["channel"] = None  # not nullable
    rows = [_logged(str(i), record) for i, record in enumerate(records)]
    window = _read_back(tmp_path, rows, config)

    assert window.malformed == 3 and [p.split(": ", 1)[1] for p in window.problems] == [
        "amount is True, not a finite number",
        "hour is nan, not a finite number",
        "channel is null",
    ]
    kept = [r for i, r in enumerate(records) if i not in (6, 7, 8)]
    assert window.frame["record_id"].tolist() == [str(i) for i in range(300) if i not in (6, 7, 8)]
    for feature in config.dataset.features:
        expected = pd.Series([r[feature.name] for r in kept], name=feature.name, dtype=object)
        got = window.frame[feature.name].astype(object).where(window.frame[feature.name].notna(), None)
        assert got.tolist() == expected.where(expected.notna(), None).tolist(), feature.name


def test_a_checks_figures_name_what_was_measured(config, reference):
    report = monitoring.measure_drift(reference, _traffic(range(10, 11), 800), config.dataset)
    performance = monitoring.LivePerformance(labelled_rows=250, score=0.42, note="")
    figures = monitoring.check_figures(config, 800, 3, report, performance)
    assert {k: figures[k] for k in ("rows", "malformed_rows", "labelled_rows", "live_average_precision")} == {
        "rows": 800,
        "malformed_rows": 3,
        "labelled_rows": 250,
        "live_average_precision": 0.42,
    }
    assert figures["drift_share"] == report.drift_share and figures["drifted_columns"] == len(report.drifted_columns)
    assert {k.removeprefix("drift_score.") for k in figures if k.startswith("drift_score.")} == {
        f.name for f in config.dataset.features
    }
    no_verdict = monitoring.check_figures(config, 12, 0, None, monitoring.LivePerformance(0, None, "none"))
    assert no_verdict == {"rows": 12, "malformed_rows": 0, "labelled_rows": 0}


def _zoo_config(name: str):
    from tests.zoo.datasets import CONFIGS

    return load_config(CONFIGS / f"{name}.yaml")


@pytest.mark.parametrize(
    ("name", "target", "source_labels", "positive"),
    [
        # modeldata's credit data: 'bad'/'good' text, the positive class 'bad' (not the default 'good').
        ("credit_risk", "Status", ["bad", "good", "good", "bad", "good"] * 60, "bad"),
        # carData's Titanic: survival as booleans, as a Parquet source or a database hands them over, or as a
        # CSV's words.
        ("titanic", "survived", [True, False, False, True, False] * 60, True),
        ("titanic", "survived", ["yes", "no", "no", "yes", "no"] * 60, True),
    ],
)
def test_the_live_score_reads_labels_of_any_kind_as_the_source_holds_them(name, target, source_labels, positive):
    config = _zoo_config(name)
    config = config.model_copy(update={"drift": config.drift.model_copy(update={"min_labelled_rows": 100})})
    ids = [f"r{n}" for n in range(len(source_labels))]
    source = pd.DataFrame({"id": ids, target: source_labels})
    truth = validation.read_target(source[target], config.dataset).tolist()
    keys = [classes.text_of(c) for c in config.dataset.target_classes]
    other = dict(zip(config.dataset.target_classes, reversed(config.dataset.target_classes), strict=True))

    def live(right: bool) -> pd.DataFrame:
        predicted = [label if right else other[label] for label in truth]
        return pd.DataFrame(
            {
                "record_id": ids,
                monitoring.PREDICTION_COLUMN: [classes.text_of(p) for p in predicted],
                "probabilities": [{k: (0.9 if k == classes.text_of(p) else 0.1) for k in keys} for p in predicted],
            }
        )

    right = monitoring.live_performance(config, live(True), source)
    assert right.labelled_rows == len(ids) and right.score == pytest.approx(1.0)
    wrong = monitoring.live_performance(config, live(False), source)
    assert wrong.score == pytest.approx(0.0)
    assert classes.positive_label(config.dataset) == positive
