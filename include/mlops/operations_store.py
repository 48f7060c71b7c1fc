"""The operations store: the tables the model service and the pipeline keep in one database (the service's
MLOPS_INFERENCE_LOG_URL, Airflow's connection `inference_log_db`; SQLite locally, Postgres in compose and on
Kubernetes), and their schema's migrations.

    inference_log   every prediction the service made (include/serving/inference_log.py writes it,
                    include/mlops/monitoring.py and rollouts.py read it)
    drift_history   one row per drift check, of live traffic (drift_monitor) or of a batch run
                    (batch_scoring) (include/mlops/monitoring.py)
    batch_runs      one row per batch run that merged predictions, found no input, or failed
                    (include/mlops/batch_runs.py)
    alias_history   every move of a model's champion and challenger aliases (include/mlops/alias_history.py)
    rollouts        each shadow or canary rollout and its last check (include/mlops/rollouts.py)

The schema is brought to the newest revision by Alembic (include/mlops/migrations/; the version is kept in
table `mlops_alembic_version`, apart from Airflow's and MLflow's `alembic_version`), once where the stack
starts: `python -m include.mlops.operations_store upgrade` (the URL in MLOPS_INFERENCE_LOG_URL) in compose's
airflow-init and the Helm chart's Job, `upgrade(engine)` in the local stack and in the model service's log
writer. A database made before Alembic (the tables, each created on first use, no version table) is taken
over by the first revision without losing a row.

A change to a table here needs a new revision in include/mlops/migrations/versions/: the test that compares
the two (tests/mlops/test_operations_store.py) fails until the revision brings a database to what is here.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "mlops_alembic_version"
URL_VARIABLE = "MLOPS_INFERENCE_LOG_URL"
UPGRADE_COMMAND = "python -m include.mlops.operations_store upgrade"

# none_as_null: a regression row has SQL NULL probabilities, not the JSON text "null".
JSON_COLUMN = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
ID_COLUMN_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

metadata = sa.MetaData()

# The service's predictions, one row per record of a request (include/serving/inference_log.py describes each
# column).
inference_log = sa.Table(
    "inference_log",
    metadata,
    sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(32), nullable=False),
    sa.Column("record_index", sa.Integer, nullable=False),
    sa.Column("record_id", sa.Text, nullable=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=False),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("inputs", JSON_COLUMN, nullable=False),
    sa.Column("label", sa.Text, nullable=True),
    sa.Column("probabilities", JSON_COLUMN, nullable=True),
    sa.Column("value", sa.Double, nullable=True),
    # Which model made the row: the champion, or a challenger in a shadow or canary rollout.
    sa.Column("role", sa.Text, nullable=False, server_default="champion"),
    # Whether the prediction was the answer the client got (a shadow scoring is not; nor is a failed one).
    sa.Column("served", sa.Boolean, nullable=False, server_default=sa.true()),
    # The scoring raised (the row has no prediction): the first line of the error.
    sa.Column("error", sa.Text, nullable=True),
    # The model's time for the request the row belongs to (the same for each of its records), in milliseconds.
    sa.Column("latency_ms", sa.Double, nullable=True),
    # Every read is one model's window.
    sa.Index("ix_inference_log_model_predicted_at", "model_name", "predicted_at"),
)

# One row per drift check: what it measured and what it decided, and why. The cool-down counts from the last row
# that decided to retrain, online or batch.
drift_history = sa.Table(
    "drift_history",
    metadata,
    sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
    sa.Column("airflow_run_id", sa.Text, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("malformed_rows", sa.Integer, nullable=False),
    sa.Column("drift_share", sa.Double, nullable=True),
    sa.Column("drifted_columns", JSON_COLUMN, nullable=True),
    sa.Column("prediction_drift_score", sa.Double, nullable=True),
    sa.Column("labelled_rows", sa.Integer, nullable=False),
    sa.Column("live_score", sa.Double, nullable=True),
    sa.Column("champion_score", sa.Double, nullable=True),
    sa.Column("retrain", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("report_uri", sa.Text, nullable=True),
    # What was checked: `online` (drift_monitor, the inference log) or `batch` (a batch run's scored rows).
    sa.Column("source", sa.Text, nullable=False, server_default="online"),
    # The label-free estimate of the primary metric (with its band) and of accuracy (performance_estimate.py);
    # none without a calibrator.
    sa.Column("estimated_score", sa.Double, nullable=True),
    sa.Column("estimated_score_low", sa.Double, nullable=True),
    sa.Column("estimated_score_high", sa.Double, nullable=True),
    sa.Column("estimated_accuracy", sa.Double, nullable=True),
    sa.Index("ix_drift_history_model_window", "model_name", "window_end"),
)

# One row per batch run that finished: it merged predictions (`merged`), found no input (`empty`), or failed
# (`failed`). A retried or cleared run rewrites its own row (model_name, airflow_run_id).
batch_runs = sa.Table(
    "batch_runs",
    metadata,
    sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_version", sa.Text, nullable=True),  # none: a run that failed before resolving its champion
    sa.Column("airflow_dag_id", sa.Text, nullable=False),
    sa.Column("airflow_run_id", sa.Text, nullable=False),
    # The input's key: its interval, the content hash of the arrived file(s), or the lakeFS commit and prefix read
    # (none: a run that failed before it read its input).
    sa.Column("key", sa.Text, nullable=True),
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("rows_scored", sa.Integer, nullable=False),
    sa.Column("rows_quarantined", sa.Integer, nullable=False),
    sa.Column("lakefs_repository", sa.Text, nullable=False),
    sa.Column("lakefs_commit", sa.Text, nullable=True),  # none: nothing merged
    # The batch's drift check, once it has run (none: no verdict, or no live score).
    sa.Column("drift_share", sa.Double, nullable=True),
    sa.Column("live_score", sa.Double, nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("model_name", "airflow_run_id", name="uq_batch_runs_model_run"),
    sa.Index("ix_batch_runs_model_finished_at", "model_name", "finished_at"),
)

# Append-only: one row per move of an alias.
alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("alias", sa.Text, nullable=False),
    sa.Column("from_version", sa.Text, nullable=True),  # none: the alias was not set before
    sa.Column("to_version", sa.Text, nullable=False),
    sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    # What started the run that moved it (its `reason` param: manual, nightly, drift, ...), and who: the
    # Airflow run, or the user who approved or rolled back.
    sa.Column("trigger", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("airflow_dag_id", sa.Text, nullable=False),
    sa.Column("airflow_run_id", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Index("ix_alias_history_model_moved_at", "model_name", "moved_at"),
)

# One row per rollout the pipeline started: its state, and the figures of its last check (for the MLOps page).
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("challenger_version", sa.Text, nullable=False),
    sa.Column("champion_version", sa.Text, nullable=False),
    sa.Column("mode", sa.Text, nullable=False),
    sa.Column("share", sa.Double, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    # running, promoted or rolled_back
    sa.Column("state", sa.Text, nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("figures", JSON_COLUMN, nullable=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("airflow_dag_id", sa.Text, nullable=False),
    sa.Column("airflow_run_id", sa.Text, nullable=False),
    sa.Index("ix_rollouts_model_started_at", "model_name", "started_at"),
)


class SchemaNotCurrent(RuntimeError):
    """The database is not at the schema this code was written for."""


class SchemaAhead(SchemaNotCurrent):
    """The database is at a revision this code does not know: newer code migrated it."""


def alembic_config(connection: sa.Connection):
    """Alembic's configuration for the migrations of this store, run on `connection` (no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at; None before the first upgrade."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def upgrade(engine: sa.Engine) -> str:
    """Bring the database to the newest schema; returns its revision. Safe when several processes start at once:
    they take turns, and those after the first find nothing to do. SchemaAhead when newer code has migrated the
    database past this code's newest revision (there is nothing this code may do to it)."""
    from alembic import command

    with engine.connect() as connection:
        _lock_for_migration(connection)
        _refuse_if_ahead(engine, current_revision(connection))
        command.upgrade(alembic_config(connection), "head")
        revision = current_revision(connection)
        connection.commit()
    return revision


def _lock_for_migration(connection: sa.Connection) -> None:
    """Hold the database's lock for migrations until the transaction ends (the migration runs inside it: DDL is
    transactional on Postgres and on SQLite)."""
    if connection.dialect.name == "postgresql":
        # A key of this store's own, so that no other application's advisory locks wait on it.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": VERSION_TABLE})
    elif connection.dialect.name == "sqlite":
        # The write lock now, not at the first write: a second process waits here (its busy timeout) instead of
        # failing on a table the first one has just made.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _refuse_if_ahead(engine: sa.Engine, found: str | None) -> None:
    from alembic.script import ScriptDirectory

    known = {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}
    if found is not None and found not in known:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaAhead(
            f"the operations store at {where} is at schema revision {found}, which this code does not know (its "
            f"newest is {head_revision()}): newer code migrated it; run that code here too"
        )


def check(engine: sa.Engine) -> None:
    """Raise SchemaNotCurrent, saying what to run, unless the database is at the newest schema (SchemaAhead when
    it is past it)."""
    with engine.connect() as connection:
        found = current_revision(connection)
    _refuse_if_ahead(engine, found)
    wanted = head_revision()
    if found != wanted:
        where = engine.url.render_as_string(hide_password=True)
        state = "has no operations store schema" if found is None else f"is at schema revision {found}"
        raise SchemaNotCurrent(
            f"the operations store at {where} {state}, not {wanted}: run `{UPGRADE_COMMAND}` with {URL_VARIABLE} "
            "set to its URL (compose's airflow-init, the Helm chart's Job and the local stack do so at start)"
        )


def engine(url: str, **options: Any) -> sa.Engine:
    """An engine for the store at `url` (`options`: SQLAlchemy's), once its schema is checked to be the newest
    (SchemaNotCurrent if not)."""
    found = sa.create_engine(url, **options)
    try:
        check(found)
    except Exception:
        found.dispose()
        raise
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.mlops.operations_store",
        description=f"The operations store's schema, in the database at ${URL_VARIABLE}.",
    )
    parser.add_argument("command", choices=["upgrade"], help="bring the schema to the newest revision")
    parser.parse_args(argv)
    url = os.environ.get(URL_VARIABLE)
    if not url:
        print(f"{URL_VARIABLE} is not set: the SQLAlchemy URL of the operations store's database", file=sys.stderr)
        return 2
    store = sa.create_engine(url)
    try:
        revision = upgrade(store)
    finally:
        store.dispose()
    print(f"operations store at {store.url.render_as_string(hide_password=True)}: schema revision {revision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
