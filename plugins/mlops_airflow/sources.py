"""Turn a pipeline config's `source` into a fetch function, resolving Airflow connections on the way.

The library's sources (include/mlops/sources.py) take URLs and credentials; which Airflow connection holds
them is this module's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from airflow.sdk import BaseHook


def sqlalchemy_url(conn_id: str) -> str:
    """The SQLAlchemy URL of an Airflow database connection (sqlite, postgres, mysql, ...)."""
    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
    if not hasattr(hook, "get_uri") or not hasattr(hook, "get_sqlalchemy_engine"):
        raise ValueError(f"Airflow connection {conn_id!r} (type {connection.conn_type!r}) is not a SQL database")
    # DbApiHook.get_uri() is the SQLAlchemy form (sqlite:///path, postgresql://...), unlike Connection.get_uri().
    return hook.get_uri()


def fetcher(config, as_of: dt.datetime) -> Callable:
    """`fetch(start, end) -> Fetched` for `config.source`: the rows whose event time is in [start, end)."""
    from include.mlops import sources

    source = config.source
    event_time = config.dataset.event_time_column
    if source.kind == "sql":
        url = source.url or sqlalchemy_url(source.connection_id)
        return lambda start, end: sources.fetch_sql(source, url, start, end, event_time, as_of)
    if source.kind == "http":
        auth = None
        if source.connection_id:
            connection = BaseHook.get_connection(source.connection_id)
            auth = (connection.login, connection.password) if connection.login else None
        return lambda start, end: sources.fetch_http(source, start, end, event_time, auth=auth)
    s3_client = None
    if source.path.startswith("s3://") and source.connection_id:
        # Credentials (and a MinIO endpoint, in the connection's extra) from Airflow; without a connection the
        # library uses s3_endpoint_url and the environment's credentials.
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3_client = S3Hook(aws_conn_id=source.connection_id).get_conn()
    return lambda start, end: sources.fetch_files(source, start, end, event_time, s3_client=s3_client)
