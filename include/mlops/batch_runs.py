"""The batch runs of each model, as the MLOps page lists them: table `batch_runs` of the operations store
(include/mlops/operations_store.py).

A run writes its row when it merges its predictions (`merged`) or finds no input (`empty`), and its drift check
adds the drift share and live score to it later. A run that fails is marked `failed` once its tasks are done
(`record_failed`), with what it knew: its model version and key when it got that far, and the rows it merged when
it failed after merging (its outputs or drift check). The row is the run's own (model_name, airflow_run_id): a
retried task, or the run cleared and run again for the same interval, rewrites it and adds none.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from include.mlops.monitoring import as_utc
from include.mlops.operations_store import batch_runs

MERGED, EMPTY, FAILED = "merged", "empty", "failed"
State = Literal["merged", "empty", "failed"]
_KEYS = ("model_name", "airflow_run_id")


def record(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Write the run's row (every column but `id`; the drift figures may be left out), replacing the row a
    try before it wrote (its drift figures kept unless `row` gives them)."""
    if row["state"] not in (MERGED, EMPTY):
        raise ValueError(f"batch run state {row['state']!r}: expected {MERGED!r} or {EMPTY!r} (or record_failed)")
    _upsert(engine, row, [name for name in row if name not in _KEYS])


def record_failed(
    engine: sa.Engine,
    model_name: str,
    airflow_dag_id: str,
    airflow_run_id: str,
    model_version: str | None,
    key: str | None,
    lakefs_repository: str,
    finished_at: dt.datetime,
) -> None:
    """Mark the run `failed`: a new row with what it knew (`model_version` and `key` None when it failed before
    knowing them; no rows scored), or the row it wrote before failing (merged, then its outputs or drift check
    failed), its figures and commit kept."""
    row = {
        "model_name": model_name,
        "model_version": model_version,
        "airflow_dag_id": airflow_dag_id,
        "airflow_run_id": airflow_run_id,
        "key": key,
        "state": FAILED,
        "rows_scored": 0,
        "rows_quarantined": 0,
        "lakefs_repository": lakefs_repository,
        "lakefs_commit": None,
        "finished_at": finished_at,
    }
    _upsert(engine, row, ["state", "finished_at"])


def _upsert(engine: sa.Engine, row: dict[str, Any], changed: list[str]) -> None:
    """Insert `row`, or update the columns `changed` of the run's row when it has one."""
    dialects = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
    if engine.dialect.name not in dialects:
        raise ValueError(f"the operations store on {engine.dialect.name} is not supported (SQLite or Postgres)")
    insert = dialects[engine.dialect.name](batch_runs).values(**row)
    updated = {name: insert.excluded[name] for name in changed}
    with engine.begin() as connection:
        connection.execute(insert.on_conflict_do_update(index_elements=list(_KEYS), set_=updated))


def record_drift(
    engine: sa.Engine, model_name: str, airflow_run_id: str, drift_share: float | None, live_score: float | None
) -> bool:
    """Add the drift check's figures to the run's row; False when the run has no row."""
    query = (
        sa.update(batch_runs)
        .where(batch_runs.c.model_name == model_name, batch_runs.c.airflow_run_id == airflow_run_id)
        .values(drift_share=drift_share, live_score=live_score)
    )
    with engine.begin() as connection:
        return connection.execute(query).rowcount > 0


def recent(engine: sa.Engine, model_name: str, last: int) -> list[dict[str, Any]]:
    """The `last` newest batch runs of `model_name`, newest first (`finished_at` as an aware UTC time)."""
    query = (
        sa.select(batch_runs)
        .where(batch_runs.c.model_name == model_name)
        .order_by(batch_runs.c.finished_at.desc(), batch_runs.c.id.desc())
        .limit(last)
    )
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    return [{**row, "finished_at": as_utc(row["finished_at"])} for row in rows]
