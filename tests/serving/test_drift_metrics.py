"""The drift monitor's last check of each model version, on the service's /metrics (read from the drift history),
labelled by model: another model's checks are not this service's to show, nor a batch run's check (not live
traffic)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from include.mlops import monitoring, operations_store
from tests.serving.conftest import drift_check_row, wait_for

WINDOW_END = dt.datetime(2026, 3, 10, 13, tzinfo=dt.UTC)
MODEL = (("model", "fraud_detector"),)


def _check(run_id: str, version: str | None, hours: int, **figures) -> dict:
    return drift_check_row(run_id, version, WINDOW_END + dt.timedelta(hours=hours), **figures)


def test_the_last_check_of_each_version_is_on_metrics(service):
    engine = sa.create_engine(service.env["MLOPS_INFERENCE_LOG_URL"])
    operations_store.upgrade(engine)  # as the stack's start does (the service may not have yet)
    monitoring.record_check(engine, _check("a", "1", 0, drift_share=0.1, live_score=0.61, labelled_rows=300))
    monitoring.record_check(engine, _check("b", "1", 1, drift_share=0.4, retrain=True, reason="data drift: ..."))
    monitoring.record_check(engine, _check("c", "2", 1, drift_share=0.0))
    monitoring.record_check(engine, _check("d", None, 2, rows=3, reason="too few rows: 3 in the window"))
    monitoring.record_check(engine, {**_check("e", "1", 3, drift_share=0.9), "model_name": "another_model"})
    batch = _check("f", "1", 4, drift_share=0.8, live_score=0.2, labelled_rows=900, retrain=True, reason="data drift")
    monitoring.record_check(engine, {**batch, "source": monitoring.BATCH})

    def gauges():
        metrics = service.metrics()
        share = metrics.get(("mlops_drift_share", (*MODEL, ("model_version", "2"))))
        return metrics if share is not None else None

    metrics = wait_for(gauges, what="the drift gauges")
    assert metrics[("mlops_drift_share", (*MODEL, ("model_version", "1")))] == 0.4  # the latest check of v1
    assert metrics[("mlops_drift_share", (*MODEL, ("model_version", "2")))] == 0.0
    assert metrics[("mlops_drift_retraining_requested", (*MODEL, ("model_version", "1")))] == 1.0
    assert metrics[("mlops_drift_retraining_requested", (*MODEL, ("model_version", "2")))] == 0.0
    last = metrics[("mlops_drift_last_check_timestamp_seconds", (*MODEL, ("model_version", "1")))]
    assert last == (WINDOW_END + dt.timedelta(hours=1)).timestamp()
    # v1's latest check had no live score: the gauge shows the latest one measured.
    live = ("mlops_drift_live_score", (("metric", "average_precision"), *MODEL, ("model_version", "1")))
    assert metrics[live] == 0.61
    assert not [key for key in metrics if ("model", "another_model") in key[1]]
