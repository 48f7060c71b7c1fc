"""Where the tasks find MLflow: connection `mlflow_default`, else MLFLOW_TRACKING_URI, else a clear error."""

from __future__ import annotations

import json

import pytest

from mlops_airflow.mlflow_tracking import client, tracking_uri, ui_url


def test_the_connection_comes_first(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:1")
    conn = {"conn_type": "http", "host": "127.0.0.1", "port": 5000, "schema": "http"}
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_a_host_with_a_scheme_is_kept(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "host": "https://mlflow.example"})
    )
    assert tracking_uri() == "https://mlflow.example"


def test_the_environment_when_there_is_no_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri() == "http://127.0.0.1:5999"


def test_neither_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="MLflow is not configured: define Airflow connection 'mlflow_default'"):
        tracking_uri()


def test_the_client_talks_to_the_server(mlflow_server, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert client().search_experiments()  # the Default experiment, from the real server


def test_links_use_the_ui_url_when_the_workers_reach_mlflow_elsewhere(monkeypatch):
    # In compose the workers talk to http://mlflow:5000, which a browser cannot open.
    conn = {
        "conn_type": "http",
        "host": "mlflow",
        "port": 5000,
        "extra": json.dumps({"ui_url": "http://localhost:5000/"}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    assert (tracking_uri(), ui_url()) == ("http://mlflow:5000", "http://localhost:5000")

    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn | {"extra": json.dumps({"ui_url": ""})}))
    assert ui_url() == "http://mlflow:5000"
