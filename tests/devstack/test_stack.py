"""The local stack's pieces that need no servers: the demo source's history, credentials, Airflow's settings."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import stat
import threading
from pathlib import Path

import pandas as pd
import pytest
from cryptography.fernet import Fernet

from devstack import services
from devstack.airflow_api import TRANSIENT_TRIES, AirflowAPI, AirflowAPIError, TaskState, progress_line
from devstack.processes import StartupError
from devstack.stack import (
    DEMO_SEED,
    SourceHistory,
    StackOptions,
    _airflow_components_env,
    local_credentials,
    seed_transactions,
    upgrade_operations_store,
)
from include.demo_sources import simulator
from include.mlops import operations_store


def test_the_source_holds_the_normal_world_until_the_change_and_the_changed_world_after(tmp_path: Path):
    today = dt.datetime.now(dt.UTC).date()
    path = tmp_path / "tx.db"
    seed_transactions(path, SourceHistory(days=4, rows_per_day=300, drifted_since=today - dt.timedelta(days=1)))

    written = pd.read_sql_table("transactions", f"sqlite:///{path}")
    for back, world in [(3, simulator.NO_DRIFT), (2, simulator.NO_DRIFT), (1, simulator.DEMO_WORLD_CHANGE),
                        (0, simulator.DEMO_WORLD_CHANGE)]:  # fmt: skip
        day = today - dt.timedelta(days=back)
        expected = simulator.generate_day(day, 300, DEMO_SEED, world).transactions
        got = written[written["transaction_id"].str.contains(f"-{day:%Y%m%d}-")].sort_values("transaction_id")
        assert got["merchant_category"].tolist() == expected["merchant_category"].tolist(), (day, world)
    assert len(written) == 4 * 300


def test_without_a_change_every_day_is_the_normal_world(tmp_path: Path):
    today = dt.datetime.now(dt.UTC).date()
    path = tmp_path / "tx.db"
    seed_transactions(path, SourceHistory(days=2, rows_per_day=100))
    written = pd.read_sql_table("transactions", f"sqlite:///{path}").sort_values("transaction_id")
    expected = simulator.generate_day(today, 100, DEMO_SEED).transactions
    assert written.tail(100)["amount"].tolist() == pytest.approx(expected["amount"].tolist())


def test_the_operations_store_is_brought_to_its_schema_before_the_stack_uses_it(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'serving' / 'inference_log.db'}"
    (tmp_path / "serving").mkdir()
    assert upgrade_operations_store(url) == operations_store.head_revision()
    operations_store.engine(url).dispose()  # refused unless at the newest schema
    assert upgrade_operations_store(url) == operations_store.head_revision()  # a restart of the stack


def test_credentials_are_made_once_kept_private_and_completed_when_a_key_is_new(tmp_path: Path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"airflow_admin_password": "chosen-before"}))

    first = local_credentials(path)
    assert first["airflow_admin_password"] == "chosen-before"
    assert {"lakefs_access_key_id", "airflow_jwt_secret", "airflow_fernet_key", "serving_admin_token"} <= set(first)
    Fernet(first["airflow_fernet_key"])  # a valid key, or this raises
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_credentials(path) == first


def test_every_airflow_component_gets_the_same_secrets_and_celery_its_own_queue(tmp_path: Path):
    credentials = local_credentials(tmp_path / "credentials.json")
    ports = {"AIRFLOW_PORT": 8123}
    options = StackOptions(
        state=tmp_path,
        ports=ports,
        airflow_db_url="postgresql+psycopg2://postgres@127.0.0.1:5432/airflow",
        executor="CeleryExecutor",
        celery_broker_url="redis://127.0.0.1:6379/0",
    )
    env = _airflow_components_env(options, credentials)
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == credentials["airflow_jwt_secret"]
    assert env["AIRFLOW__CORE__FERNET_KEY"] == credentials["airflow_fernet_key"]
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql://postgres@127.0.0.1:5432/airflow"
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == "mlops-8123"

    with pytest.raises(ValueError, match="CeleryExecutor needs celery_broker_url"):
        _airflow_components_env(StackOptions(state=tmp_path, ports=ports, executor="CeleryExecutor"), credentials)


def test_no_airflow_component_starts_a_log_server_that_listens_on_every_address(tmp_path: Path):
    """`airflow serve-logs` binds 0.0.0.0 and :: (host "" in Airflow's code); the stack's components all run on
    one machine and the api-server reads the task logs from its log folder. make run's test checks the sockets of
    the LocalExecutor stack; the Celery worker is checked here."""
    credentials = local_credentials(tmp_path / "credentials.json")
    options = StackOptions(
        state=tmp_path,
        ports={"AIRFLOW_PORT": 8123},
        airflow_db_url="postgresql+psycopg2://postgres@127.0.0.1:5432/airflow",
        executor="CeleryExecutor",
        celery_broker_url="redis://127.0.0.1:6379/0",
    )
    components = services.airflow_components(_airflow_components_env(options, credentials))
    by_name = {" ".join(c[:2]) if c[0] == "celery" else c[0]: c for c in components}
    assert set(by_name) == {"api-server", "scheduler", "dag-processor", "triggerer", "celery worker"}
    for name in ("scheduler", "triggerer", "celery worker"):
        assert "--skip-serve-logs" in by_name[name], by_name[name]


def test_progress_names_what_runs_and_what_failed():
    tasks = [
        TaskState("collect", "success"),
        TaskState("train_candidate", "running"),
        TaskState("train_candidate", "running"),
        TaskState("gate", None),
        TaskState("record_rejection", "skipped"),
        TaskState("validate", "failed"),
    ]
    assert progress_line(tasks) == "2/6 tasks done, running: train_candidate, failed: validate"


def test_a_real_lakefs_keeps_its_metadata_and_objects_under_the_state_folder_on_loopback(tmp_path: Path):
    config = services.real_lakefs_config(tmp_path / "lakefs-real", 8123, "s3cr3t")
    assert config["listen_address"] == "127.0.0.1:8123"
    assert config["database"] == {"type": "local", "local": {"path": str(tmp_path / "lakefs-real" / "metadata")}}
    assert config["blockstore"] == {"type": "local", "local": {"path": str(tmp_path / "lakefs-real" / "data")}}
    assert config["auth"]["encrypt"]["secret_key"] == "s3cr3t" and config["stats"]["enabled"] is False


def test_a_lakefs_set_up_with_other_keys_is_named_before_anything_runs(lakefs_server):
    # A lakeFS that was set up already (the compatible server is set up from its command line) is checked, not
    # set up again: its own keys pass, others are refused with what to do.
    keys = services.LakeFSCredentials(lakefs_server.access_key_id, lakefs_server.secret_access_key)
    services.ensure_lakefs_setup(lakefs_server.url, keys)
    wrong = services.LakeFSCredentials("AKIAWRONGWRONGWRONG", "not-the-secret")
    with pytest.raises(StartupError, match="does not accept the access key AKIAWRONGWRONGWRONG from credentials.json"):
        services.ensure_lakefs_setup(lakefs_server.url, wrong)


def test_airflows_metadata_database_is_the_stacks_choice(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")  # the test session's own
    url = "postgresql+psycopg2://postgres@127.0.0.1/airflow"
    assert services.airflow_env(tmp_path, 8123, database_url=url)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == url
    sqlite = services.airflow_env(tmp_path, 8123)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert sqlite == f"sqlite:///{tmp_path}/airflow.db"


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Airflow's REST API as a busy SQLite database makes it answer: 500 for the first `failures` calls."""

    failures = 0
    calls: list[str] = []

    def do_POST(self) -> None:
        self._answer({"access_token": "t"} if self.path == "/auth/token" else {"dag_run_id": "r"})

    def do_PATCH(self) -> None:
        self._answer({"is_paused": False})

    def _answer(self, body: dict) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/auth/token":
            type(self).calls.append(self.path)
        failing = self.path != "/auth/token" and len(type(self).calls) <= type(self).failures
        payload = json.dumps({"detail": {"reason": "Database error"}} if failing else body).encode()
        self.send_response(500 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (TRANSIENT_TRIES, False)])
def test_a_5xx_from_airflow_is_tried_again_a_bounded_number_of_times(monkeypatch, failures: int, succeeds: bool):
    monkeypatch.setattr("devstack.airflow_api.TRANSIENT_PAUSE_SECONDS", 0.01)
    _Flaky.failures, _Flaky.calls = failures, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = AirflowAPI(f"http://127.0.0.1:{server.server_port}", "admin", "x")
        if succeeds:
            api.unpause("drift_monitor__fraud_detector")
        else:
            with pytest.raises(AirflowAPIError, match="PATCH /api/v2/dags/d: HTTP 500.*Database error"):
                api.unpause("d")
        assert len(_Flaky.calls) == (failures + 1 if succeeds else TRANSIENT_TRIES)
    finally:
        server.shutdown()
