"""Where the model service is: connection `serving_default` (host, port, schema; password = its admin token)."""

from __future__ import annotations

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

CONNECTION_ID = "serving_default"


def endpoint(conn_id: str = CONNECTION_ID):
    from include.mlops.deployment import ServingEndpoint

    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ValueError(
            f"Airflow connection {conn_id!r} is not defined: it names the model service (host, port) and holds "
            "its admin token as the password"
        ) from None
    if not connection.host or not connection.password:
        raise ValueError(f"Airflow connection {conn_id!r} needs the service's host and its admin token (password)")
    host = connection.host if "://" in connection.host else f"{connection.schema or 'http'}://{connection.host}"
    url = f"{host}:{connection.port}" if connection.port else host
    return ServingEndpoint(url, connection.password)
