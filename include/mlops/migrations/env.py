"""Alembic's environment for the operations store's migrations. They run on the connection that
include.mlops.operations_store hands over, inside its transaction (which holds the lock for migrations)."""

from alembic import context

from include.mlops.operations_store import UPGRADE_COMMAND, VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError(f"the operations store's migrations run on a database connection: use `{UPGRADE_COMMAND}`")
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
