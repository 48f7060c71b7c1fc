"""Every move of a model's `champion` and `challenger` aliases, kept for good (`previous-champion` follows
`champion` and needs no rows of its own).

MLflow keeps only where an alias points now (mlflow#2169, #6180): who moved `champion` from which version to
which, when and why, is lost at the next move. This table of the operations store
(include/mlops/operations_store.py), beside the drift history, is append-only: one row per move, written by
the task that moved the alias.

A retried task writes its move once: a row is the same move when model, alias, target version and Airflow
run are the same. The version an alias moved from is read before the move; a retry that finds the alias
already moved (its first try died between the move and the row) takes it from the last recorded move of that
alias, so the history stays one unbroken chain.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, get_args

import sqlalchemy as sa

from include.mlops.monitoring import as_utc
from include.mlops.operations_store import alias_history

# Why an alias moved: the gate promoted or registered a challenger, a person approved one, a rollback put an
# older version back, a shadow or canary rollout's check promoted its challenger (or kept the champion: a row
# from and to the same version, whose detail says why the challenger was rolled back).
Cause = Literal["gate", "approval", "rollback", "rollout"]
CAUSES: tuple[Cause, ...] = get_args(Cause)


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    alias: str
    from_version: str | None
    to_version: str
    cause: Cause
    trigger: str
    actor: str
    airflow_dag_id: str
    airflow_run_id: str
    detail: str = ""
    moved_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"alias move cause {self.cause!r} is not one of {', '.join(CAUSES)}")


def record_move(engine: sa.Engine, move: AliasMove) -> bool:
    """Append `move`, unless this run already recorded it (a retry). Returns whether a row was written."""
    table = alias_history.c
    same = sa.select(table.id).where(
        table.model_name == move.model_name,
        table.alias == move.alias,
        table.to_version == move.to_version,
        table.airflow_run_id == move.airflow_run_id,
    )
    with engine.begin() as connection:
        if connection.execute(same).first() is not None:
            return False
        connection.execute(alias_history.insert(), [_row(move)])
    return True


def moved_from(engine: sa.Engine, model_name: str, alias: str, current: str | None, to_version: str) -> str | None:
    """The version `alias` moves away from: where it points now (`current`, read before the move), or, when it
    points at `to_version` already (a retried move), the target of its last recorded move before that."""
    if current is not None and current != to_version:
        return current
    earlier = [m for m in moves(engine, model_name) if m.alias == alias and m.to_version != to_version]
    return earlier[-1].to_version if earlier else None


def moves(engine: sa.Engine, model_name: str) -> list[AliasMove]:
    """Every recorded move of `model_name`'s aliases, oldest first."""
    table = alias_history.c
    query = sa.select(alias_history).where(table.model_name == model_name).order_by(table.moved_at, table.id)
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return [
        AliasMove(**{**{k: v for k, v in row.items() if k != "id"}, "moved_at": as_utc(row["moved_at"])})
        for row in rows
    ]


def _row(move: AliasMove) -> dict:
    return {name: getattr(move, name) for name in AliasMove.__dataclass_fields__}
