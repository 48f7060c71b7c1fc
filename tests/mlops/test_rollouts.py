"""The rollout check's figures, read from an inference log as the service writes it, and its verdicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pandas as pd
import pytest
import sqlalchemy as sa

from include.mlops import rollouts
from include.mlops.operations_store import inference_log

START = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
MODEL = "fraud_detector"


def _log(engine: sa.Engine, requests: int, disagree_every: int = 0, errors: int = 0, challenger_ms: float = 2.0):
    """`requests` one-record requests answered by the champion (v1) and shadow-scored by the challenger (v2):
    every `disagree_every`-th record gets another class from the challenger; the first `errors` requests' challenger
    scorings raised."""
    rng = random.Random(4)
    rows = []
    for index in range(requests):
        moment = START + dt.timedelta(seconds=index)
        label = "1" if rng.random() < 0.3 else "0"
        other = label if not disagree_every or index % disagree_every else {"0": "1", "1": "0"}[label]
        base = {
            "request_id": f"r{index:05d}",
            "record_index": 0,
            "record_id": f"tx-{index}",
            "model_name": MODEL,
            "predicted_at": moment,
            "inputs": {},
            "value": None,
            "error": None,
        }
        probability = 0.9 if label == "1" else 0.1
        rows.append(
            base
            | {
                "model_version": "1",
                "role": "champion",
                "served": True,
                "label": label,
                "probabilities": {"0": 1 - probability, "1": probability},
                "latency_ms": 1.0,
            }
        )
        failed = index < errors
        rows.append(
            base
            | {
                "model_version": "2",
                "role": "challenger",
                "served": False,
                "label": None if failed else other,
                "probabilities": None if failed else {"0": 0.2, "1": 0.2} | {other: 0.8},
                "error": "Got invalid dimensions" if failed else None,
                "latency_ms": challenger_ms,
            }
        )
    with engine.begin() as connection:
        connection.execute(inference_log.insert(), rows)


def _config(config, **rollout):
    settings = {"mode": "shadow", "min_rows": 100, "min_hours": 0.0, **rollout}
    return config.model_copy(update={"rollout": config.rollout.model_validate(settings)})


def test_figures_of_a_shadow_rollout_and_its_promotion(history_engine, config):
    _log(history_engine, 300, disagree_every=20)
    figures = rollouts.compare(history_engine, config, "2", START, START + dt.timedelta(hours=2))
    assert figures.pairs == 300
    assert figures.agreement == pytest.approx(1 - 15 / 300)
    assert figures.challenger_scorings == 300 and figures.challenger_errors == 0
    assert figures.champion_p99_ms == 1.0 and figures.challenger_p99_ms == 2.0 and figures.latency_ratio == 2.0
    assert figures.prediction_drift is not None and figures.prediction_drift["drifted"] is False
    judgement = rollouts.judge(figures, _config(config))
    assert judgement.verdict == "promote", judgement
    assert "agreement 0.950 on 300 records in 2.00 h" in judgement.reason


@pytest.mark.parametrize(
    ("logged", "rollout", "verdict", "reason"),
    [
        ({"disagree_every": 2}, {}, "rollback", "agreement 0.500 below 0.9"),
        (
            {"disagree_every": 2},
            {"criteria": {"min_agreement": 0.4}},
            "rollback",
            "predictions drift from the champion",
        ),
        (
            {"disagree_every": 2},
            {"criteria": {"min_agreement": 0.4, "rollback_on_prediction_drift": False}},
            "promote",
            "agreement 0.500",
        ),
        ({"errors": 10}, {"min_rows": 10_000}, "rollback", "error rate 0.033 above 0.01 (10 of 300 scorings raised)"),
        ({"errors": 2}, {}, "promote", "error rate 0.007"),
        ({"challenger_ms": 5.0}, {}, "rollback", "p99 model time 5.000 ms is 5.00x the champion's (at most 2.0x)"),
        ({}, {"min_rows": 1000}, "wait", "300 of 1000 records scored by both, 2.00 of 0.0 h"),
        ({}, {"min_hours": 3.0}, "wait", "300 of 100 records scored by both, 2.00 of 3.0 h"),
        ({}, {"min_rows": 1000, "max_hours": 2.0}, "rollback", "no verdict within 2.0 h"),
    ],
)
def test_verdicts(history_engine, config, logged, rollout, verdict, reason):
    _log(history_engine, 300, **logged)
    figures = rollouts.compare(history_engine, config, "2", START, START + dt.timedelta(hours=2))
    judgement = rollouts.judge(figures, _config(config, **rollout))
    assert judgement.verdict == verdict and reason in judgement.reason, judgement


def test_the_live_metric_once_labels_arrive(history_engine, config):
    """Labels of the rollout's records: the challenger (which disagrees on every 4th) scores worse on them than the
    champion, whose predictions are the labels here."""
    _log(history_engine, 300, disagree_every=4)
    ids = [f"tx-{i}" for i in range(300)]
    with history_engine.connect() as connection:
        query = sa.select(inference_log.c.record_id, inference_log.c.label).where(inference_log.c.role == "champion")
        truth = {record_id: int(label) for record_id, label in connection.execute(query)}
    labels = pd.DataFrame({"transaction_id": ids, "is_fraud": [truth[i] for i in ids]})
    lenient = _config(config, criteria={"min_agreement": 0.5, "rollback_on_prediction_drift": False})
    figures = rollouts.compare(history_engine, lenient, "2", START, START + dt.timedelta(hours=2), labels)
    assert figures.labelled_pairs == 300
    assert figures.champion_live_score > figures.challenger_live_score
    judgement = rollouts.judge(figures, lenient)
    assert judgement.verdict == "rollback" and "labelled records" in judgement.reason, judgement
    forgiving = _config(
        config, criteria={"min_agreement": 0.5, "rollback_on_prediction_drift": False, "max_live_metric_drop": 1}
    )
    assert rollouts.judge(figures, forgiving).verdict == "promote"

    # Too few labels yet: no live score, a note that says why, and the verdict comes from the rest.
    few = rollouts.compare(history_engine, lenient, "2", START, START + dt.timedelta(hours=2), labels.head(10))
    assert (few.labelled_pairs, few.champion_live_score, few.challenger_live_score) == (10, None, None)
    needed = lenient.drift.min_labelled_rows
    assert f"live metric: 10 live rows have labels, {needed} needed" in few.notes, few.notes


def test_nothing_logged_waits_and_other_versions_do_not_count(history_engine, config):
    _log(history_engine, 300)
    figures = rollouts.compare(history_engine, config, "3", START, START + dt.timedelta(minutes=5))
    assert (figures.pairs, figures.challenger_scorings, figures.agreement) == (0, 0, None)
    assert rollouts.judge(figures, _config(config)).verdict == "wait"
    later = rollouts.compare(
        history_engine, config, "2", START + dt.timedelta(seconds=200), START + dt.timedelta(hours=1)
    )
    assert later.pairs == 100


def test_the_rollouts_table_keeps_one_row_per_run_and_its_end(history_engine, config):
    row = {
        "model_name": MODEL,
        "challenger_version": "2",
        "champion_version": "1",
        "mode": "canary",
        "share": 0.1,
        "started_at": START,
        "airflow_dag_id": "ml_training__fraud_detector",
        "airflow_run_id": "manual__1",
    }
    first = rollouts.record_start(history_engine, row)
    assert rollouts.record_start(history_engine, row) == first  # a retried task
    assert rollouts.running(history_engine, MODEL)["challenger_version"] == "2"
    _log(history_engine, 150)
    figures = rollouts.compare(history_engine, config, "2", START, START + dt.timedelta(hours=1))
    judgement = rollouts.judge(figures, _config(config))
    rollouts.record_check(history_engine, first, figures, judgement, START + dt.timedelta(hours=1))
    rollouts.record_end(history_engine, first, rollouts.ROLLED_BACK, "agreement too low", START + dt.timedelta(hours=1))
    assert rollouts.running(history_engine, MODEL) is None
    (kept,) = rollouts.history(history_engine, MODEL)
    assert kept["state"] == "rolled_back" and kept["figures"]["pairs"] == 150 and kept["started_at"] == START
    assert dataclasses.asdict(figures)["pairs"] == 150
