"""The alias history: every move of champion and challenger kept, once per move even when a task is retried,
as one chain from version to version, on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt

import pytest

from include.mlops.alias_history import AliasMove, moved_from, moves, record_move

T0 = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)


def _move(alias: str, from_version: str | None, to_version: str, run: str, minutes: int, **changes) -> AliasMove:
    fields = {
        "model_name": "fraud",
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "cause": "gate",
        "trigger": "nightly",
        "actor": f"airflow run {run}",
        "airflow_dag_id": "ml_training__fraud",
        "airflow_run_id": run,
        "detail": f"v{to_version} won the gate",
        "moved_at": T0 + dt.timedelta(minutes=minutes),
    }
    return AliasMove(**{**fields, **changes})


def test_moves_are_kept_in_order_per_model_and_a_retry_writes_none_twice(history_engine):
    engine = history_engine
    assert moves(engine, "fraud") == []
    written = [
        _move("challenger", None, "1", "r1", 0),
        _move("champion", None, "1", "r1", 1),
        _move("challenger", "1", "2", "r2", 60),
        _move("champion", "1", "2", "r2", 61, trigger="drift"),
        _move("champion", "2", "1", "rb", 90, cause="rollback", actor="admin", detail="v2 misbehaves"),
    ]
    assert [record_move(engine, m) for m in written] == [True] * 5
    # The retried tasks of run r2: nothing new.
    assert record_move(engine, _move("champion", "1", "2", "r2", 75)) is False
    assert record_move(engine, _move("other", None, "9", "x", 5, model_name="churn")) is True

    kept = moves(engine, "fraud")
    assert kept == written
    assert kept[3].moved_at == T0 + dt.timedelta(minutes=61) and kept[3].moved_at.tzinfo is not None
    assert [m.to_version for m in moves(engine, "churn")] == ["9"]


def test_a_retried_move_takes_its_origin_from_the_history(history_engine):
    engine = history_engine
    record_move(engine, _move("champion", None, "1", "r1", 0))
    record_move(engine, _move("champion", "1", "2", "r2", 60))
    # A first move: the alias points nowhere yet.
    assert moved_from(engine, "fraud", "challenger", None, "1") is None
    # Where the alias points before the move.
    assert moved_from(engine, "fraud", "champion", "2", "3") == "2"
    # The first try moved champion to 3 and died before its row: the chain continues from the last row.
    assert moved_from(engine, "fraud", "champion", "3", "3") == "2"


def test_a_move_without_a_known_cause_is_refused():
    with pytest.raises(ValueError, match="alias move cause 'whim' is not one of gate, approval, rollback"):
        _move("champion", "1", "2", "r", 0, cause="whim")
