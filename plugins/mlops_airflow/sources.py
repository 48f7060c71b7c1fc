"""Turn a pipeline config's `source` into a fetch function, resolving Airflow connections on the way.

The library's sources (include/mlops/sources.py) take URLs, credentials and header values; which Airflow
connection holds them is this module's business.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException
from airflow.sdk.log import mask_secret


def sqlalchemy_url(conn_id: str) -> str:
    """The SQLAlchemy URL of an Airflow database connection (sqlite, postgres, mysql, ...)."""
    connection = BaseHook.get_connection(conn_id)
    hook = connection.get_hook()
    if not hasattr(hook, "get_uri") or not hasattr(hook, "get_sqlalchemy_engine"):
        raise ValueError(f"Airflow connection {conn_id!r} (type {connection.conn_type!r}) is not a SQL database")
    # DbApiHook.get_uri() is the SQLAlchemy form (sqlite:///path, postgresql://...), unlike Connection.get_uri().
    return hook.get_uri()


def connection_field(conn_id: str, field: str) -> str:
    """A field of an Airflow connection: `password`, `login`, `host` or `extra.<key>`; LookupError names what
    is missing (AirflowNotFoundException names neither the header nor the field)."""
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise LookupError(f"there is no Airflow connection {conn_id!r}") from None
    if field.startswith("extra."):
        value = connection.extra_dejson.get(field.removeprefix("extra."))
    else:
        value = getattr(connection, field)
    if value is None or value == "":
        raise LookupError(f"Airflow connection {conn_id!r} has no {field}")
    return str(value)


def fetcher(config, as_of: dt.datetime, source=None, columns: list[str] | None = None) -> Callable:
    """`fetch(start, end) -> Fetched` for `source` (default `config.source`): the rows whose event time is in
    [start, end), only `columns` of them (and the event time) when given, in one frame."""
    from include.mlops import sources

    read = reader(config, as_of, source, columns)
    return lambda start, end: sources.gathered(read(start, end))


def reader(config, as_of: dt.datetime, source=None, columns: list[str] | None = None) -> Callable:
    """`read(start, end) -> Iterator[Fetched]` for `source` (default `config.source`): the rows whose event time is
    in [start, end), a piece at a time (a SQL round trip, an HTTP page, a CSV file, a slice of a Parquet file),
    only `columns` of them (and the event time) when given."""
    from include.mlops import sources
    from include.mlops.config import Secret

    source = source or config.source
    event_time = config.dataset.event_time_column
    if source.kind == "sql":
        url = source.url or sqlalchemy_url(source.connection_id)
        return lambda start, end: sources.sql_pieces(source, url, start, end, event_time, as_of, columns)
    if source.kind == "http":
        headers = sources.header_values(source.headers, connection_field)
        for name, value in source.headers.items():
            if isinstance(value, Secret):
                # Airflow masks a connection's password and extra in task logs, not its login or host, nor an
                # environment variable.
                mask_secret(headers[name].removeprefix(value.prefix))
        auth = None
        if source.connection_id:
            connection = BaseHook.get_connection(source.connection_id)
            auth = (connection.login, connection.password) if connection.login else None
        return lambda start, end: sources.http_pieces(
            source, start, end, event_time, headers=headers, auth=auth, columns=columns
        )
    s3_client = None
    if source.path.startswith("s3://") and source.connection_id:
        # Credentials (and a MinIO endpoint, in the connection's extra) from Airflow; without a connection the
        # library uses s3_endpoint_url and the environment's credentials.
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        s3_client = S3Hook(aws_conn_id=source.connection_id).get_conn()
    return lambda start, end: sources.file_pieces(source, start, end, event_time, s3_client=s3_client, columns=columns)


def labels(config, as_of: dt.datetime, start: dt.datetime, end: dt.datetime):
    """The id and label of the source's rows in [start, end) (and their event time), as of `as_of`: what the
    checks join predictions with. Only those columns are kept as the source is read, so that a week of wide rows
    costs their labels' memory (a million rows' whole window had taken a batch check to 1.9 GB)."""
    dataset = config.dataset
    return fetcher(config, as_of, columns=[dataset.id_column, dataset.target])(start, end).rows
