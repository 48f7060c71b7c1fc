"""Where MLflow is: connection `mlflow_default` (host, port, schema = http/https; extra `ui_url` where a browser
finds its UI, when that is not the host the workers use, as in compose), or MLFLOW_TRACKING_URI."""

from __future__ import annotations

import os

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

CONNECTION_ID = "mlflow_default"


def tracking_uri(conn_id: str = CONNECTION_ID) -> str:
    try:
        connection = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        if uri := os.environ.get("MLFLOW_TRACKING_URI"):
            return uri
        raise ValueError(
            f"MLflow is not configured: define Airflow connection {conn_id!r} (host, port) or set MLFLOW_TRACKING_URI"
        ) from None
    host = (connection.host or "").rstrip("/")
    if not host:
        raise ValueError(f"Airflow connection {conn_id!r} has no host (the MLflow server)")
    if "://" not in host:
        host = f"{connection.schema or 'http'}://{host}"
    return f"{host}:{connection.port}" if connection.port else host


def ui_url(conn_id: str = CONNECTION_ID) -> str:
    """The MLflow UI's address for links a user opens (the **MLflow run** button): the connection's `ui_url`,
    else the tracking URI."""
    try:
        extra = BaseHook.get_connection(conn_id).extra_dejson
    except AirflowNotFoundException:
        extra = {}
    return str(extra.get("ui_url") or tracking_uri(conn_id)).rstrip("/")


def client(conn_id: str = CONNECTION_ID, timeout: float = 10):
    """An MlflowClient for the tracking server, checked to answer within `timeout` seconds, with the fluent API
    pointed at it too."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from include.mlops.tracking import check_reachable

    uri = tracking_uri(conn_id)
    check_reachable(uri, timeout=timeout)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)
