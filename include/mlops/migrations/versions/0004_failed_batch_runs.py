"""Failed batch runs in batch_runs: a run that failed has a row too (state `failed`), whose model version and key
are empty when it failed before it knew them (before its champion was resolved, or its input read).

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = ("model_version", "key")


def upgrade() -> None:
    with op.batch_alter_table("batch_runs") as table:  # SQLite changes a column by copying the table
        for name in COLUMNS:
            table.alter_column(name, existing_type=sa.Text, nullable=True)


def downgrade() -> None:
    # The code before this revision knows no failed runs: those without a version or a key cannot stay.
    rows = sa.table("batch_runs", *(sa.column(name) for name in COLUMNS))
    op.execute(sa.delete(rows).where(sa.or_(*(rows.c[name].is_(None) for name in COLUMNS))))
    with op.batch_alter_table("batch_runs") as table:
        for name in COLUMNS:
            table.alter_column(name, existing_type=sa.Text, nullable=False)
