"""airflow_settings.yaml: Astro's format, `${VAR:-default}` filled from the environment, loaded into Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devstack import services
from include.bootstrap import airflow_settings
from tests.conftest import REPO_ROOT

ENV = {
    "LAKEFS_ACCESS_KEY_ID": "AKIATEST",
    "LAKEFS_SECRET_ACCESS_KEY": "s3cret",
    "LAKEFS_PORT": "18000",
    "TRANSACTIONS_DB_PATH": "/data/transactions.db",
    "INFERENCE_LOG_DB_PATH": "/data/inference_log.db",
    "MLOPS_ADMIN_TOKEN": "admin-token",
}


def test_the_project_file_loads_with_values_from_the_environment():
    settings = airflow_settings.load(REPO_ROOT / "airflow_settings.yaml", ENV)
    lakefs = settings.connection("lakefs_default")
    assert (lakefs.login, lakefs.password, lakefs.port, lakefs.host) == ("AKIATEST", "s3cret", 18000, "127.0.0.1")
    # ui_url empty: the hook then links to conn_host (compose sets where a browser finds lakeFS).
    assert lakefs.extra == {"repository": "mlops", "storage_namespace": "local://mlops", "ui_url": ""}
    assert settings.connection("mlflow_default").port == 5000
    assert settings.connection("transactions_db").host == "/data/transactions.db"
    assert settings.connection("inference_log_db").host == "/data/inference_log.db"
    assert (settings.connection("serving_default").port, settings.connection("serving_default").password) == (
        3000,
        "admin-token",
    )


def test_a_missing_variable_is_named(tmp_path: Path):
    with pytest.raises(airflow_settings.SettingsError, match="LAKEFS_SECRET_ACCESS_KEY is not set"):
        airflow_settings.load(
            REPO_ROOT / "airflow_settings.yaml",
            {k: "x" for k in ENV if k not in {"LAKEFS_SECRET_ACCESS_KEY", "LAKEFS_PORT"}},
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("airflow: [1, 2", "cannot be read as YAML"),
        ("airflow:\n  connections:\n    - conn_type: http\n", r"connections\[0\] needs 'conn_id'"),
        ("airflow:\n  connections:\n    - conn_id: a\n", r"connections\[0\] needs 'conn_type'"),
        ("airflow:\n  connections:\n    - {conn_id: a, conn_type: http, conn_port: eighty}\n", "not a number"),
        ("airflow:\n  connections:\n    - {conn_id: a, conn_type: http, conn_extra: '{bad'}\n", "not valid JSON"),
        ("airflow:\n  pools:\n    - pool_name: p\n", r"pools\[0\] needs 'pool_slot'"),
        ("airflow:\n  variables:\n    - variable_value: v\n", r"variables\[0\] needs 'variable_name'"),
        ("airflow: just a string\n", "'airflow' must be a mapping"),
    ],
)
def test_malformed_files_name_the_key(tmp_path: Path, text: str, message: str):
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(text)
    with pytest.raises(airflow_settings.SettingsError, match=message) as error:
        airflow_settings.load(path, {})
    assert str(path) in str(error.value)


def test_connections_as_environment_variables_parse_in_airflow():
    from airflow.sdk import Connection

    env = airflow_settings.load(REPO_ROOT / "airflow_settings.yaml", ENV).as_environment()
    conn = Connection.from_json(env["AIRFLOW_CONN_LAKEFS_DEFAULT"], conn_id="lakefs_default")
    assert (conn.host, conn.port, conn.login, conn.password, conn.schema) == (
        "127.0.0.1",
        18000,
        "AKIATEST",
        "s3cret",
        "http",
    )
    assert conn.extra_dejson["repository"] == "mlops"


def test_import_writes_connections_variables_and_pools_into_airflow(airflow_db, tmp_path: Path):
    path = tmp_path / "airflow_settings.yaml"
    path.write_text(
        (REPO_ROOT / "airflow_settings.yaml")
        .read_text()
        .replace(
            "variables: []", "variables:\n    - variable_name: greeting\n      variable_value: hello ${WHO:-world}\n"
        )
        .replace("pools: []", "pools:\n    - pool_name: training\n      pool_slot: 2\n      pool_description: fits\n")
    )
    settings = airflow_settings.load(path, ENV)
    env = os.environ.copy()
    airflow_settings.import_into_airflow(settings, services.venv_bin("airflow"), env)

    def airflow(*args: str) -> str:
        result = subprocess.run([services.venv_bin("airflow"), *args], env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    connection = json.loads(airflow("connections", "get", "lakefs_default", "-o", "json"))[0]
    assert (connection["login"], int(connection["port"])) == ("AKIATEST", 18000)
    assert airflow("variables", "get", "greeting").strip() == "hello world"
    pools = json.loads(airflow("pools", "get", "training", "-o", "json"))
    assert int(pools[0]["slots"]) == 2


def test_the_sql_connections_are_sqlite_files_by_default_and_postgres_when_told(monkeypatch: pytest.MonkeyPatch):
    """make run leaves *_DB_TYPE unset (SQLite files); compose sets postgres and the server's fields."""
    from mlops_airflow.sources import sqlalchemy_url

    settings = airflow_settings.load(REPO_ROOT / "airflow_settings.yaml", ENV)
    assert settings.connection("transactions_db").as_airflow_json() == {
        "conn_type": "sqlite",
        "host": "/data/transactions.db",
    }
    postgres = {
        "INFERENCE_LOG_DB_TYPE": "postgres",
        "INFERENCE_LOG_DB_PATH": "db.internal",
        "INFERENCE_LOG_DB_PORT": "5433",
        "INFERENCE_LOG_DB_NAME": "inference_log",
        "INFERENCE_LOG_DB_USER": "mlops",
        "INFERENCE_LOG_DB_PASSWORD": "s3cret",
    }
    env = airflow_settings.load(REPO_ROOT / "airflow_settings.yaml", {**ENV, **postgres}).as_environment()
    monkeypatch.setenv("AIRFLOW_CONN_INFERENCE_LOG_DB", env["AIRFLOW_CONN_INFERENCE_LOG_DB"])
    assert sqlalchemy_url("inference_log_db").endswith("://mlops:s3cret@db.internal:5433/inference_log")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "include.bootstrap.airflow_settings", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_command_imports_the_file_as_compose_airflow_init_runs_it(airflow_db):
    env = {**os.environ, **ENV, "MLOPS_ADMIN_TOKEN": "token-from-the-environment"}
    result = run_cli(str(REPO_ROOT / "airflow_settings.yaml"), env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    connections = yaml.safe_load((REPO_ROOT / "airflow_settings.yaml").read_text())["airflow"]["connections"]
    assert f"imported {len(connections)} connections, 0 variables and 0 pools" in result.stdout
    got = subprocess.run(
        [services.venv_bin("airflow"), "connections", "get", "serving_default", "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert json.loads(got.stdout)[0]["password"] == "token-from-the-environment"


def test_the_command_names_a_missing_variable_and_fails():
    env = {k: v for k, v in {**os.environ, **ENV}.items() if k != "LAKEFS_SECRET_ACCESS_KEY"}
    result = run_cli(str(REPO_ROOT / "airflow_settings.yaml"), env=env)
    assert result.returncode == 1
    assert "LAKEFS_SECRET_ACCESS_KEY is not set" in result.stderr
