"""Batch runs watched like online traffic: drift_history says which traffic a check judged (`source`: `online`,
every row before this revision, or `batch`), and the new table batch_runs keeps one row per batch run.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID_COLUMN_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Every row so far is a check of drift_monitor: the default says so (SQLite and Postgres add a NOT NULL
    # column with a default in place).
    op.add_column("drift_history", sa.Column("source", sa.Text, nullable=False, server_default="online"))

    op.create_table(
        "batch_runs",
        sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("model_version", sa.Text, nullable=False),
        sa.Column("airflow_dag_id", sa.Text, nullable=False),
        sa.Column("airflow_run_id", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("rows_scored", sa.Integer, nullable=False),
        sa.Column("rows_quarantined", sa.Integer, nullable=False),
        sa.Column("lakefs_repository", sa.Text, nullable=False),
        sa.Column("lakefs_commit", sa.Text, nullable=True),
        sa.Column("drift_share", sa.Double, nullable=True),
        sa.Column("live_score", sa.Double, nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model_name", "airflow_run_id", name="uq_batch_runs_model_run"),
    )
    op.create_index("ix_batch_runs_model_finished_at", "batch_runs", ["model_name", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_runs_model_finished_at", table_name="batch_runs")
    op.drop_table("batch_runs")
    with op.batch_alter_table("drift_history") as table:  # SQLite drops a column by copying the table
        table.drop_column("source")
