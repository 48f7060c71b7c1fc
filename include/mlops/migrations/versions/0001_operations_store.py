"""The operations store's four tables, as the code before Alembic made them.

That code created each table on its first use (so a database of it may hold any of the four), and gave an
inference_log of the release before rollouts the columns role, served, error and latency_ms at the service's
start. This revision does both, and nothing to a table already as it should be: on a database of that code it
takes over every row; on an empty one it creates the tables.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

JSON_COLUMN = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
ID_COLUMN_TYPE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _id() -> sa.Column:
    return sa.Column("id", ID_COLUMN_TYPE, primary_key=True, autoincrement=True)


def _inference_log_rollout_columns() -> list[sa.Column]:
    """The columns inference_log gained with rollouts; the rows of an earlier release take the defaults, which is
    what they were: the champion's served answers."""
    return [
        sa.Column("role", sa.Text, nullable=False, server_default="champion"),
        sa.Column("served", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("latency_ms", sa.Double, nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "inference_log",
        _id(),
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
        *_inference_log_rollout_columns(),
        if_not_exists=True,
    )
    present = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("inference_log")}
    for column in _inference_log_rollout_columns():
        if column.name not in present:
            op.add_column("inference_log", column)
    # The index of the releases before 2 December 2026, replaced by the one per model below.
    op.drop_index("ix_inference_log_predicted_at", table_name="inference_log", if_exists=True)
    op.create_index(
        "ix_inference_log_model_predicted_at", "inference_log", ["model_name", "predicted_at"], if_not_exists=True
    )

    op.create_table(
        "drift_history",
        _id(),
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
        if_not_exists=True,
    )
    op.create_index("ix_drift_history_model_window", "drift_history", ["model_name", "window_end"], if_not_exists=True)

    op.create_table(
        "alias_history",
        _id(),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("alias", sa.Text, nullable=False),
        sa.Column("from_version", sa.Text, nullable=True),
        sa.Column("to_version", sa.Text, nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("trigger", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("airflow_dag_id", sa.Text, nullable=False),
        sa.Column("airflow_run_id", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_alias_history_model_moved_at", "alias_history", ["model_name", "moved_at"], if_not_exists=True)

    op.create_table(
        "rollouts",
        _id(),
        sa.Column("model_name", sa.Text, nullable=False),
        sa.Column("challenger_version", sa.Text, nullable=False),
        sa.Column("champion_version", sa.Text, nullable=False),
        sa.Column("mode", sa.Text, nullable=False),
        sa.Column("share", sa.Double, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("figures", JSON_COLUMN, nullable=True),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("airflow_dag_id", sa.Text, nullable=False),
        sa.Column("airflow_run_id", sa.Text, nullable=False),
        if_not_exists=True,
    )
    op.create_index("ix_rollouts_model_started_at", "rollouts", ["model_name", "started_at"], if_not_exists=True)


def downgrade() -> None:
    for table in ("rollouts", "alias_history", "drift_history", "inference_log"):
        op.drop_table(table)
