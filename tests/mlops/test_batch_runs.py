"""The batch runs table: one row per run, rewritten by a retry or a re-run of the same run, the newest listed
first; on SQLite and Postgres (the history_engine fixture)."""

from __future__ import annotations

import datetime as dt

import pytest

from include.mlops import batch_runs

T0 = dt.datetime(2026, 12, 1, 3, tzinfo=dt.UTC)


def run(run_id: str, days: int, **changes) -> dict:
    return {
        "model_name": "fraud",
        "model_version": "3",
        "airflow_dag_id": "batch_scoring__fraud",
        "airflow_run_id": run_id,
        "key": f"2026120{days}T030000Z_2026120{days + 1}T030000Z",
        "state": batch_runs.MERGED,
        "rows_scored": 1500,
        "rows_quarantined": 7,
        "lakefs_repository": "mlops",
        "lakefs_commit": "c" * 64,
        "finished_at": T0 + dt.timedelta(days=days),
        **changes,
    }


def test_each_run_has_one_row_a_retry_rewrites_it_and_the_newest_come_first(history_engine):
    engine = history_engine
    batch_runs.record(engine, run("scheduled__1", 1))
    batch_runs.record(engine, run("scheduled__2", 2, state=batch_runs.EMPTY, rows_scored=0, lakefs_commit=None))
    assert batch_runs.record_drift(engine, "fraud", "scheduled__1", 0.4, 0.91)
    assert not batch_runs.record_drift(engine, "fraud", "never_ran", 0.4, None)
    # The run cleared and run again: its row is rewritten, its drift figures kept until its check gives others.
    batch_runs.record(engine, run("scheduled__1", 1, rows_scored=1499, finished_at=T0 + dt.timedelta(days=3)))

    rows = batch_runs.recent(engine, "fraud", last=10)
    assert [(r["airflow_run_id"], r["state"], r["rows_scored"]) for r in rows] == [
        ("scheduled__1", "merged", 1499),
        ("scheduled__2", "empty", 0),
    ]
    assert (rows[0]["drift_share"], rows[0]["live_score"]) == (0.4, 0.91)
    assert rows[0]["finished_at"] == T0 + dt.timedelta(days=3) and rows[1]["lakefs_commit"] is None
    assert [r["airflow_run_id"] for r in batch_runs.recent(engine, "fraud", last=1)] == ["scheduled__1"]
    assert batch_runs.recent(engine, "another_model", last=10) == []


def test_a_failed_run_has_a_row_with_what_it_knew_and_keeps_what_it_merged(history_engine):
    engine = history_engine
    failed_at = T0 + dt.timedelta(days=5)
    # Failed before resolving its champion, after reading its input, and after merging (its drift check failed).
    batch_runs.record_failed(engine, "fraud", "batch_scoring__fraud", "manual__1", None, None, "mlops", T0)
    batch_runs.record_failed(engine, "fraud", "batch_scoring__fraud", "manual__2", "3", "k2", "mlops", T0)
    batch_runs.record(engine, run("scheduled__3", 3))
    batch_runs.record_failed(engine, "fraud", "batch_scoring__fraud", "scheduled__3", "3", "k3", "mlops", failed_at)
    # A retry of the failed task's run records it again: still one row.
    batch_runs.record_failed(engine, "fraud", "batch_scoring__fraud", "manual__2", "3", "k2", "mlops", T0)

    rows = {r["airflow_run_id"]: r for r in batch_runs.recent(engine, "fraud", last=10)}
    assert len(rows) == 3 and {r["state"] for r in rows.values()} == {batch_runs.FAILED}
    assert [rows["manual__1"][c] for c in ("model_version", "key", "rows_scored", "lakefs_commit")] == [
        None,
        None,
        0,
        None,
    ]
    assert (rows["manual__2"]["model_version"], rows["manual__2"]["key"]) == ("3", "k2")
    merged = rows["scheduled__3"]
    assert (merged["rows_scored"], merged["lakefs_commit"], merged["key"]) == (1500, "c" * 64, run("x", 3)["key"])
    assert merged["finished_at"] == failed_at


def test_a_state_other_than_merged_or_empty_is_refused(history_engine):
    with pytest.raises(
        ValueError, match="batch run state 'failed': expected 'merged' or 'empty' \\(or record_failed\\)"
    ):
        batch_runs.record(history_engine, run("x", 1, state="failed"))
    assert batch_runs.recent(history_engine, "fraud", last=10) == []
