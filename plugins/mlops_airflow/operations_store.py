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
    api-server."""
    return _pooled(sqlalchemy_url(CONNECTION_ID))


@cache
def _pooled(url: str) -> sa.Engine:
    import sqlalchemy as sa

    return sa.create_engine(url, pool_pre_ping=True)
