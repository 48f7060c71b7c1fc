"""The operations store as Airflow's tasks and the MLOps page reach it: through the connection `inference_log_db`."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from mlops_airflow.sources import sqlalchemy_url

if TYPE_CHECKING:
    import sqlalchemy as sa

CONNECTION_ID = "inference_log_db"


def engine() -> sa.Engine:
    """The operations store (the inference log, the drift, alias and rollout histories). A task fails here,
    saying what to run, when the stack's start did not bring its schema to the newest revision."""
    from include.mlops import operations_store

    return operations_store.engine(sqlalchemy_url(CONNECTION_ID))


def page_engine() -> sa.Engine:
    """The store for the MLOps page: one engine (and connection pool) per database for the life of the
    api-server, once its schema is found at the newest revision; until then SchemaNotCurrent, saying what to run
    (checked again at the next request)."""
    return _checked(sqlalchemy_url(CONNECTION_ID))


@cache  # a refusal raises, and is not cached
def _checked(url: str) -> sa.Engine:
    from include.mlops import operations_store

    return operations_store.engine(url, pool_pre_ping=True)
