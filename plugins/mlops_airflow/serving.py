"""Where the model service is: connection `serving_default` (host, port, schema; password = its admin token;
extra `ui_url` where a browser finds it, when that is not the host the workers use, as in compose)."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

CONNECTION_ID = "serving_default"


def _connection(conn_id: str):
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ValueError(
            f"Airflow connection {conn_id!r} is not defined: it names the model service (host, port) and holds "
            "its admin token as the password"
        ) from None
    if not connection.host or not connection.password:
        raise ValueError(f"Airflow connection {conn_id!r} needs the service's host and its admin token (password)")
    return connection


def _url(connection) -> str:
    host = connection.host if "://" in connection.host else f"{connection.schema or 'http'}://{connection.host}"
    return f"{host}:{connection.port}" if connection.port else host


def endpoint(model: str, conn_id: str = CONNECTION_ID):
    """`model`'s routes on the model service."""
    from include.mlops.deployment import ServingEndpoint

    connection = _connection(conn_id)
    return ServingEndpoint(_url(connection), connection.password, model)


def docs_url(conn_id: str = CONNECTION_ID) -> str:
    """The service's API docs (BentoML serves them at its root) for the **Service API docs** button."""
    connection = _connection(conn_id)
    return str(connection.extra_dejson.get("ui_url") or _url(connection)).rstrip("/") + "/"
