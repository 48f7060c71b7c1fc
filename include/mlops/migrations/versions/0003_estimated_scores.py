"""Label-free estimates in the drift history: each check's estimated primary metric, its band and the estimated
accuracy (include/mlops/performance_estimate.py); empty for the checks before this revision, and for a version
without a calibrator.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("estimated_score", "estimated_score_low", "estimated_score_high", "estimated_accuracy")


def upgrade() -> None:
    for name in COLUMNS:
        op.add_column("drift_history", sa.Column(name, sa.Double, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("drift_history") as table:  # SQLite drops a column by copying the table
        for name in reversed(COLUMNS):
            table.drop_column(name)
