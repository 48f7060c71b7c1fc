"""The files compose mounts from deploy/, checked by the tools that read them where those run here (promtool,
psql, MLflow), and otherwise against what compose passes beside them (lakeFS, Grafana: no binary here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import yaml

from devstack import services
from devstack.processes import free_port, start_process
from include.mlops.config import CONFIG_DIR, load_config
from tests.compose import stack
from tests.compose.tools import debian_binary
from tests.conftest import REPO_ROOT
from tests.fixtures.services import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, postgres_database

DEPLOY = REPO_ROOT / "deploy"


@pytest.fixture(scope="module")
def compose() -> dict:
    return stack.load()


def mount_target(service: dict, source: str) -> str:
    """Where a service mounts `source` (a path relative to the repository)."""
    for volume in service.get("volumes") or []:
        host, target, *_ = str(volume).split(":")
        if host == f"./{source}":
            return target
    raise AssertionError(f"{source} is not mounted")


# --- Prometheus ---------------------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(debian_binary("promtool", "prometheus")), *args], capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_prometheus_config():
    """`check config` also checks the rule files the config names (alerts.yml, beside it)."""
    result = promtool("check", "config", str(DEPLOY / "prometheus/prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_config(tmp_path: Path):
    broken = tmp_path / "prometheus.yml"
    broken.write_text(
        (DEPLOY / "prometheus/prometheus.yml").read_text().replace("scrape_interval: 15s", "scrape_interval: often")
    )
    # A copy elsewhere does not have alerts.yml beside it: only the interval is to blame here.
    shutil.copy(DEPLOY / "prometheus/alerts.yml", tmp_path)
    result = promtool("check", "config", str(broken))
    assert result.returncode != 0 and "often" in result.stdout + result.stderr


def test_promtool_accepts_the_alerting_rules():
    result = promtool("check", "rules", str(DEPLOY / "prometheus/alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerting_rules_pass_their_unit_tests():
    """alerts_test.yml: each alert fires on the series that should raise it, with the model and version in its
    text, and stays silent on the healthy ones (no errors, no drops, a retired version's old gauges)."""
    result = promtool("test", "rules", str(DEPLOY / "prometheus/alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path):
    """The two checks above can fail: an expression that does not parse is refused, naming it."""
    rules = (DEPLOY / "prometheus/alerts.yml").read_text()
    assert 'up{job="model-service"} == 0' in rules
    broken = tmp_path / "alerts.yml"
    broken.write_text(rules.replace('up{job="model-service"} == 0', 'up{job="model-service" == 0'))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0 and "ModelServiceDown" in result.stdout + result.stderr


def test_every_alert_says_how_bad_and_what_it_is_about():
    """Prometheus accepts a rule without these; a reader of the /alerts page needs them: a wait (`for`), a
    severity, and a summary and description that name the model (or the instance, for the service itself)."""
    (group,) = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"]
    names = [rule["alert"] for rule in group["rules"]]
    assert len(names) == len(set(names)) and "ModelServiceDown" in names
    tested = yaml.safe_load((DEPLOY / "prometheus/alerts_test.yml").read_text())
    assert tested["rule_files"] == ["alerts.yml"]
    fired = {alert["alertname"] for test in tested["tests"] for alert in test["alert_rule_test"] if alert["exp_alerts"]}
    assert fired == set(names), "every alert has a unit test in which it fires"
    for rule in group["rules"]:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]
        subject = "$labels.instance" if rule["alert"] == "ModelServiceDown" else "$labels.model"
        assert all(subject in text for text in rule["annotations"].values()), rule["alert"]


def test_prometheus_scrapes_the_model_service_where_compose_runs_it(compose):
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "model-service"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target,) = [target for static in job["static_configs"] for target in static["targets"]]
    host, port = target.split(":")
    service = compose["services"][host]
    assert int(port) in stack.container_ports(service)
    assert f"--port={port}" in service["command"] or port == service["command"][service["command"].index("--port") + 1]
    prometheus = compose["services"]["prometheus"]
    assert mount_target(prometheus, "deploy/prometheus/prometheus.yml") == "/etc/prometheus/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_prometheus_loads_the_alerting_rules_mounted_beside_its_config(compose):
    """rule_files is relative, so it is read from the config's folder: compose must mount alerts.yml into the same
    folder as prometheus.yml (in the repository they already sit side by side, which promtool checks)."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    prometheus = compose["services"]["prometheus"]
    config_target = mount_target(prometheus, "deploy/prometheus/prometheus.yml")
    rules_target = mount_target(prometheus, "deploy/prometheus/alerts.yml")
    assert rules_target == str(Path(config_target).parent / "alerts.yml")
    assert "alerts.yml" in promtool("check", "config", str(DEPLOY / "prometheus/prometheus.yml")).stdout


# --- Alertmanager --------------------------------------------------------------------------------------------

ALERTMANAGER = "prometheus-alertmanager"  # Debian's name of the alertmanager binary and its package


def test_amtool_accepts_the_alertmanager_config():
    amtool = debian_binary("amtool", ALERTMANAGER)
    result = subprocess.run(
        [str(amtool), "check-config", str(DEPLOY / "alertmanager/alertmanager.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_alertmanager_with_its_config_and_the_webhook_url_as_a_secret(compose):
    alertmanager = compose["services"]["alertmanager"]
    assert mount_target(alertmanager, "deploy/alertmanager/alertmanager.yml") == "/etc/alertmanager/alertmanager.yml"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in alertmanager["command"]
    (secret,) = alertmanager["secrets"]
    assert compose["secrets"][secret] == {"environment": "ALERTMANAGER_WEBHOOK_URL"}
    settings = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
    assert {c["api_url_file"] for r in settings["receivers"] for c in r["slack_configs"]} == {f"/run/secrets/{secret}"}
    prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    (targets,) = [c["targets"] for a in prometheus["alerting"]["alertmanagers"] for c in a["static_configs"]]
    assert targets == ["alertmanager:9093"] and "9093" in str(alertmanager["healthcheck"]["test"])


def test_a_firing_rule_reaches_the_webhook_through_alertmanager(tmp_path: Path, monkeypatch):
    """Debian's Prometheus on prometheus.yml and alerts.yml, the model service's target on a port nobody listens
    on and ModelServiceDown's `for` cut to nothing; Debian's alertmanager on alertmanager.yml, its webhook URL file
    naming a local receiver and its group wait cut to a second: the alert arrives there as Slack-compatible JSON."""
    from tests.compose.tools import start_debian_server
    from tests.fixtures.notifications import receiving

    with receiving(monkeypatch) as received:
        (tmp_path / "webhook_url").write_text(received.webhook_url)
        settings = yaml.safe_load((DEPLOY / "alertmanager/alertmanager.yml").read_text())
        settings["route"]["group_wait"] = "1s"
        for receiver in settings["receivers"]:
            for slack in receiver["slack_configs"]:
                slack["api_url_file"] = str(tmp_path / "webhook_url")
        alertmanager = start_debian_server(
            ALERTMANAGER,
            ALERTMANAGER,
            settings,
            tmp_path / "am",
            "--storage.path",
            "--cluster.listen-address=",
            share=True,
        )
        try:
            rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
            (down,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "ModelServiceDown"]
            down["for"] = "0s"
            (tmp_path / "prom").mkdir()
            (tmp_path / "prom" / "alerts.yml").write_text(yaml.safe_dump(rules))
            prometheus = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
            prometheus["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
            (job,) = prometheus["scrape_configs"]
            job["static_configs"] = [{"targets": [f"127.0.0.1:{free_port()}"]}]
            alerting = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]
            alerting["targets"] = [alertmanager.url.removeprefix("http://")]
            server = start_debian_server(
                "prometheus", "prometheus", prometheus, tmp_path / "prom", "--storage.tsdb.path"
            )
            try:
                deadline = time.monotonic() + 60
                while not received.posts and time.monotonic() < deadline:
                    time.sleep(0.5)
            finally:
                server.stop()
        finally:
            alertmanager.stop()
    (post,) = received.posts
    (attachment,) = post["attachments"]
    assert attachment["title"].startswith("[FIRING] ModelServiceDown"), attachment
    assert "is down" in attachment["text"] and "for 2 minutes" in attachment["text"]


# --- Grafana -------------------------------------------------------------------------------------------------


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboards(compose):
    grafana = compose["services"]["grafana"]
    assert mount_target(grafana, "deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    datasources = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and url.port == 9090
    assert url.port in stack.container_ports(compose["services"][url.hostname])
    providers = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/mlops.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == mount_target(grafana, "deploy/grafana/dashboards")
    dashboards = sorted((DEPLOY / "grafana/dashboards").glob("*.json"))
    assert dashboards
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path.name
        # A row is a heading without a query; a collapsed one holds its panels.
        for panel in [inner for top in dashboard["panels"] for inner in [top, *top.get("panels", [])]]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
            assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel["title"]


# --- lakeFS ----------------------------------------------------------------------------------------------------


def test_the_lakefs_config_keeps_metadata_in_postgres_and_objects_in_minio(compose):
    lakefs = compose["services"]["lakefs"]
    target = mount_target(lakefs, "deploy/lakefs/lakefs.yaml")
    assert lakefs["command"] == ["run", "--config", target]
    config = yaml.safe_load((DEPLOY / "lakefs/lakefs.yaml").read_text())
    env = stack.environment(lakefs)
    assert config["database"]["type"] == "postgres"
    connection = urlsplit(stack.interpolate(env["LAKEFS_DATABASE_POSTGRES_CONNECTION_STRING"], stack.example_env()))
    assert (connection.scheme, connection.hostname, connection.port) == ("postgres", "postgres", 5432)
    assert connection.path.lstrip("/") in compose["services"]["postgres"]["environment"]["MLOPS_DATABASES"].split()
    assert config["blockstore"]["type"] == "s3"
    s3 = config["blockstore"]["s3"]
    endpoint = urlsplit(s3["endpoint"])
    assert endpoint.hostname in compose["services"] and endpoint.port == 9000
    assert s3["force_path_style"] is True
    # The secrets lakeFS needs come from compose (LAKEFS_<key path>), never from the file.
    for key in (
        "LAKEFS_AUTH_ENCRYPT_SECRET_KEY",
        "LAKEFS_BLOCKSTORE_S3_CREDENTIALS_ACCESS_KEY_ID",
        "LAKEFS_BLOCKSTORE_S3_CREDENTIALS_SECRET_ACCESS_KEY",
        "LAKEFS_INSTALLATION_ACCESS_KEY_ID",
        "LAKEFS_INSTALLATION_SECRET_ACCESS_KEY",
    ):
        assert env[key].startswith("${"), key
    assert "secret" not in json.dumps(config).lower() and "credentials" not in s3
    # The bucket of the repository's storage namespace is one minio-init creates, and the admin lakeFS sets up
    # is the one Airflow's connection logs in as.
    init_env = stack.environment(compose["services"]["airflow-init"])
    assert init_env["LAKEFS_STORAGE_NAMESPACE"].startswith("s3://${LAKEFS_BUCKET}/")
    assert "minio/${LAKEFS_BUCKET}" in compose["services"]["minio-init"]["command"]
    dotenv = stack.generated_env()
    for lakefs_key, airflow_key in (
        ("LAKEFS_INSTALLATION_ACCESS_KEY_ID", "LAKEFS_ACCESS_KEY_ID"),
        ("LAKEFS_INSTALLATION_SECRET_ACCESS_KEY", "LAKEFS_SECRET_ACCESS_KEY"),
    ):
        assert stack.interpolate(env[lakefs_key], dotenv) == stack.interpolate(init_env[airflow_key], dotenv)


# --- Postgres ----------------------------------------------------------------------------------------------------


def test_every_database_compose_connects_to_is_created(compose):
    created = set(compose["services"]["postgres"]["environment"]["MLOPS_DATABASES"].split())
    postgres = compose["services"]["postgres"]
    assert mount_target(postgres, "deploy/postgres/init-databases.sh").startswith("/docker-entrypoint-initdb.d/")
    assert os.access(DEPLOY / "postgres/init-databases.sh", os.X_OK), "the image runs only executable .sh files"
    named = set()
    for text in stack.strings(compose["services"]):
        for url in text.split():
            if "@postgres:5432/" in url:
                named.add(urlsplit(url.strip("\"'")).path.lstrip("/").split("?")[0])
    assert named == created, f"connected to {sorted(named)}, created {sorted(created)}"


@pytest.mark.postgres
def test_the_init_script_creates_the_databases_and_can_run_again():
    if not shutil.which("psql"):
        pytest.skip("psql (Debian's postgresql-client) is not installed")
    names = [f"mlops_compose_{uuid.uuid4().hex[:8]}_{suffix}" for suffix in ("mlflow", "lakefs")]
    env = {
        **os.environ,
        "POSTGRES_USER": POSTGRES_USER,
        "PGHOST": POSTGRES_HOST,
        "PGPORT": str(POSTGRES_PORT),
        "MLOPS_DATABASES": " ".join(names),
    }
    script = str(DEPLOY / "postgres/init-databases.sh")
    try:
        first = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        assert first.returncode == 0, first.stderr
        assert all(f"created {name}" in first.stdout for name in names)
        again = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and again.stdout == "", again.stderr
        listed = subprocess.run(
            [
                "psql",
                "--username",
                POSTGRES_USER,
                "--dbname",
                "postgres",
                "-tA",
                "-c",
                "SELECT datname FROM pg_database",
            ],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.split()
        assert set(names) <= set(listed)
        bad = subprocess.run([script], env={**env, "MLOPS_DATABASES": "Robert'); DROP"}, capture_output=True, text=True)
        assert bad.returncode == 1 and "is not a plain lower-case name" in bad.stderr
    finally:
        for name in names:
            subprocess.run(
                [
                    "psql",
                    "--username",
                    POSTGRES_USER,
                    "--dbname",
                    "postgres",
                    "-c",
                    f'DROP DATABASE IF EXISTS "{name}"',
                ],
                env=env,
                capture_output=True,
            )


# --- MLflow ------------------------------------------------------------------------------------------------------


def test_mlflow_answers_airflow_by_its_service_name_and_refuses_other_hosts(compose, tmp_path: Path, monkeypatch):
    """`mlflow server` with compose's MLFLOW_SERVER_ALLOWED_HOSTS: the Host header Airflow's workers send
    (mlflow:5000) passes MLflow's DNS-rebinding guard; a foreign one does not."""
    env = stack.environment(compose["services"]["mlflow"])
    monkeypatch.setenv("MLFLOW_SERVER_ALLOWED_HOSTS", env["MLFLOW_SERVER_ALLOWED_HOSTS"])
    port = free_port()
    server = services.start_mlflow(tmp_path / "mlflow", port, tmp_path / "logs")
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(url, headers={"Host": "mlflow:5000"}, timeout=30).status_code == 200
        assert httpx.get(url, headers={"Host": "attacker.example"}, timeout=30).status_code == 403
    finally:
        server.stop()


# --- The demo's transactions simulator ------------------------------------------------------------------------


@pytest.mark.postgres
def test_the_simulator_command_fills_the_transactions_database_and_turns_healthy(compose, tmp_path: Path):
    """The demo service's own bash script and health check, run here against a test database (its hourly loop
    is stopped once the first write is in)."""
    simulator = compose["services"]["transactions-simulator"]
    script = stack.interpolate(simulator["command"][2], {})
    health = stack.interpolate(simulator["healthcheck"]["test"][1], {})
    marker = Path("/tmp/simulated")
    assert marker.as_posix() in script and not marker.exists(), "another run of the simulator is using /tmp/simulated"
    with postgres_database() as url:
        # `python` is the project's, as in the image.
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
        env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO_ROOT), "TRANSACTIONS_URL": url}
        process = start_process("simulator", ["bash", "-c", script], tmp_path / "simulator.log", env=env, cwd=REPO_ROOT)
        try:
            deadline = time.monotonic() + 240
            while not marker.exists() and process.is_running() and time.monotonic() < deadline:
                time.sleep(0.5)
            assert process.is_running(), f"the simulator exited:\n{process.log_tail()}"
            assert subprocess.run(["bash", "-c", health]).returncode == 0, "the health check fails after a write"
        finally:
            process.stop()
            marker.unlink(missing_ok=True)
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            days = connection.execute(sa.text("SELECT count(DISTINCT CAST(event_time AS date)) FROM transactions"))
            rows = connection.execute(sa.text("SELECT count(*) FROM transactions"))
            assert (days.scalar(), rows.scalar()) == (35, 35 * 2000)
        engine.dispose()
    assert subprocess.run(["bash", "-c", health]).returncode != 0, "healthy without a write"


def test_the_breast_cancer_exports_land_where_the_shipped_config_and_the_workers_look(compose, tmp_path: Path):
    """The demo service's own script and health check, run here into a test folder (its hourly loop is stopped
    once the first write is in); the folder it writes is the one the shipped config's relative path names under
    the image's project root, on the volume the Airflow workers mount."""
    exports = compose["services"]["breast-cancer-exports"]
    folder = Path(stack.environment(exports)["DROPS_FOLDER"])
    config = load_config(CONFIG_DIR / "breast_cancer.yaml")
    assert Path(config.source.path).relative_to(REPO_ROOT) == folder.relative_to("/opt/airflow")
    volume = next(v for v in exports["volumes"] if v.endswith(":/opt/airflow/.local/source"))
    assert f"{volume}:ro" in compose["services"]["airflow-worker"]["volumes"]
    assert folder.is_relative_to("/opt/airflow/.local/source")

    script = stack.interpolate(exports["command"][2], {})
    health = stack.interpolate(exports["healthcheck"]["test"][1], {})
    marker = Path("/tmp/exported")
    assert marker.as_posix() in script and not marker.exists(), "another run of the exports is using /tmp/exported"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO_ROOT), "DROPS_FOLDER": str(tmp_path / "drops")}
    process = start_process("exports", ["bash", "-c", script], tmp_path / "exports.log", env=env, cwd=REPO_ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and process.is_running() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert process.is_running(), f"the exports exited:\n{process.log_tail()}"
        assert subprocess.run(["bash", "-c", health]).returncode == 0, "the health check fails after a write"
    finally:
        process.stop()
        marker.unlink(missing_ok=True)
    assert len(list((tmp_path / "drops").glob("date=*.csv"))) == 35
    assert subprocess.run(["bash", "-c", health]).returncode != 0, "healthy without a write"


# --- airflow-init -----------------------------------------------------------------------------------------------


def test_airflow_init_migrates_sets_the_admin_password_and_imports_the_connections(compose, tmp_path: Path):
    """airflow-init's own script and environment (with a .env as `make env` writes it), run here on a metadata
    database and an operations store of its own: SQLite in place of compose's Postgres, the rest as compose passes
    it."""
    init = compose["services"]["airflow-init"]
    dotenv = stack.generated_env()
    env = {key: stack.interpolate(value, dotenv) for key, value in stack.environment(init).items()}
    assert env["MLOPS_INFERENCE_LOG_URL"].endswith("@postgres:5432/inference_log")
    home = tmp_path / "airflow"
    env.update(
        {
            "MLOPS_INFERENCE_LOG_URL": f"sqlite:///{tmp_path / 'operations.db'}",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO_ROOT),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        }
    )
    (tmp_path / "auth").mkdir()
    script = stack.interpolate(init["command"][2], {}).replace("/opt/airflow/", f"{REPO_ROOT}/")
    result = subprocess.run(["bash", "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    connections = yaml.safe_load((REPO_ROOT / "airflow_settings.yaml").read_text())["airflow"]["connections"]
    assert f"imported {len(connections)} connections" in result.stdout
    assert f"operations store at sqlite:///{tmp_path / 'operations.db'}: schema revision" in result.stdout
    passwords = tmp_path / "auth" / "passwords.json"
    assert json.loads(passwords.read_text()) == {dotenv["AIRFLOW_ADMIN_USER"]: dotenv["AIRFLOW_ADMIN_PASSWORD"]}
    assert passwords.stat().st_mode & 0o077 == 0

    def connection(conn_id: str) -> dict:
        got = subprocess.run(
            [services.venv_bin("airflow"), "connections", "get", conn_id, "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert got.returncode == 0, got.stderr[-2000:]
        return json.loads(got.stdout)[0]

    lakefs = connection("lakefs_default")
    assert (lakefs["host"], int(lakefs["port"]), lakefs["login"]) == ("lakefs", 8000, dotenv["LAKEFS_ACCESS_KEY_ID"])
    assert lakefs["extra_dejson"]["storage_namespace"] == f"s3://{dotenv['LAKEFS_BUCKET']}/mlops"
    assert lakefs["is_encrypted"] == "True", "stored encrypted with the Fernet key from .env"
    inference_log = connection("inference_log_db")
    assert (inference_log["conn_type"], inference_log["host"], inference_log["schema"]) == (
        "postgres",
        "postgres",
        "inference_log",
    )
