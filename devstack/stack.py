"""The local stack: lakeFS, MLflow, the model service, the demo source and Airflow, started on 127.0.0.1.

Airflow runs as one process per component (api-server, scheduler, dag-processor, triggerer and, for
CeleryExecutor, a worker), the way compose runs them: `make run` on SQLite with LocalExecutor, the end-to-end
tests and the pipeline benchmark on Postgres. Every server is a process group of its own, started and stopped
through one `Supervisor`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from devstack import demo, services
from devstack.airflow_api import AirflowAPI
from devstack.processes import ManagedProcess
from devstack.supervisor import Supervisor
from include.bootstrap import airflow_settings
from include.mlops.config import CONFIG_DIR, ConfigError, ConfigFolder, PipelineConfig, load_folder
from include.mlops.publish_batch import DEFAULT_REDIS_URL

DEFAULT_PORTS = {"LAKEFS_PORT": 8000, "MLFLOW_PORT": 5000, "AIRFLOW_PORT": 8080, "SERVING_PORT": 3000}
# Enough history for the demo config's 30-day training window, ending today.
DEMO_HISTORY_DAYS = 35
DEMO_ROWS_PER_DAY = 2000
DEMO_SEED = 42
# The executor class each executor name runs as: LocalExecutor's forks its workers (and they the task processes)
# after importing the tasks' libraries (plugins/mlops_airflow/preload.py). CeleryExecutor's workers preload
# through the Celery configuration instead (AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS below).
PRELOADING_EXECUTORS = {"LocalExecutor": "mlops_airflow.executors.LocalExecutor"}


class PortInUse(RuntimeError):
    pass


@dataclass(frozen=True)
class SourceHistory:
    """The demo source's simulated days, ending today; from `drifted_since` on, the world has changed."""

    days: int = DEMO_HISTORY_DAYS
    rows_per_day: int = DEMO_ROWS_PER_DAY
    drifted_since: dt.date | None = None


@dataclass(frozen=True)
class StackOptions:
    state: Path
    ports: dict[str, int]
    # None: SQLite under `state` (make run). A Postgres URL puts Airflow's metadata there.
    airflow_db_url: str | None = None
    executor: str = "LocalExecutor"
    # CeleryExecutor's broker; each stack sends its tasks to a queue of its own on it.
    celery_broker_url: str | None = None
    # Where batch arrivals are announced (Airflow's connection `redis_default`; include.mlops.publish_batch's default).
    redis_url: str = field(default_factory=lambda: os.environ.get("MLOPS_REDIS_URL", DEFAULT_REDIS_URL))
    source: SourceHistory = field(default_factory=SourceHistory)
    # The pipeline configs (one model per file) that Airflow and the model service both read.
    config_dir: Path = CONFIG_DIR
    # Added to every server's environment.
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Stack:
    urls: dict[str, str]
    credentials: dict[str, str]
    lakefs_keys: tuple[str, str]
    inference_log_db: Path
    airflow_env: dict[str, str]
    # The models of the stack: the configs of `StackOptions.config_dir` that load.
    configs: tuple[PipelineConfig, ...]

    def airflow_api(self) -> AirflowAPI:
        return AirflowAPI(self.urls["Airflow"], "admin", self.credentials["airflow_admin_password"])


def start(options: StackOptions, supervisor: Supervisor, say: Callable[[str], None]) -> Stack:
    """Start every server of the stack under `supervisor`; returns where they are. The caller stops them with
    `supervisor.stop_all()`, also when this raises half-way."""
    state, ports = options.state, options.ports
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    credentials = local_credentials(state / "credentials.json")
    folder = pipeline_configs(options.config_dir, say)
    options_env = {**options.env, "MLOPS_CONFIG_DIR": str(options.config_dir)}
    base_env = {**os.environ, **options_env}

    lakefs = _lakefs(state, ports["LAKEFS_PORT"], credentials, logs, supervisor)
    say(f"lakeFS      {lakefs['url']}")
    check_port_free("MLFLOW_PORT", ports["MLFLOW_PORT"])
    mlflow = supervisor.start("mlflow", lambda: services.start_mlflow(state / "mlflow", ports["MLFLOW_PORT"], logs))
    say(f"MLflow      {mlflow.url}")

    # The deploy task (in Airflow) saves models into this store and the service loads them from it.
    bentoml_home = {"BENTOML_HOME": str(state / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    # The service writes its predictions here; drift_monitor reads them and keeps its drift history beside.
    inference_log_db = state / "serving" / "inference_log.db"
    serving_env = {
        **options_env,
        **bentoml_home,
        "MLOPS_ADMIN_TOKEN": credentials["serving_admin_token"],
        "MLOPS_SERVING_STATE_DIR": str(state / "serving"),
        "MLOPS_INFERENCE_LOG_URL": f"sqlite:///{inference_log_db}",
        "MLFLOW_TRACKING_URI": mlflow.url,
    }
    check_port_free("SERVING_PORT", ports["SERVING_PORT"])
    (state / "serving").mkdir(exist_ok=True)
    revision = upgrade_operations_store(serving_env["MLOPS_INFERENCE_LOG_URL"])
    say(f"Store       {inference_log_db} (operations store, schema revision {revision})")
    # Restarted when it exits: it comes back serving the model its pointer file names.
    serving = supervisor.start(
        "serving",
        lambda: services.start_serving(ports["SERVING_PORT"], logs, serving_env, expect_model=False),
        restart=True,
    )
    say(f"Serving     {serving.url}  (API docs at /; no model until ml_training deploys one)")

    source_db = state / "source" / "transactions.db"
    seed_demo_sources(folder.configs, source_db, options.source, say)

    settings_env = {
        **base_env,
        "TRANSACTIONS_DB_PATH": str(source_db),
        "INFERENCE_LOG_DB_PATH": str(inference_log_db),
        "LAKEFS_HOST": lakefs["host"],
        "LAKEFS_PORT": str(lakefs["port"]),
        "LAKEFS_ACCESS_KEY_ID": lakefs["access_key_id"],
        "LAKEFS_SECRET_ACCESS_KEY": lakefs["secret_access_key"],
        "MLFLOW_PORT": str(ports["MLFLOW_PORT"]),
        "SERVING_PORT": str(ports["SERVING_PORT"]),
        "MLOPS_ADMIN_TOKEN": credentials["serving_admin_token"],
    }
    settings = airflow_settings.load(services.REPO_ROOT / "airflow_settings.yaml", settings_env)
    check_port_free("AIRFLOW_PORT", ports["AIRFLOW_PORT"])
    airflow_home = state / "airflow"
    env = services.airflow_env(
        airflow_home, ports["AIRFLOW_PORT"], {**options_env, **bentoml_home}, database_url=options.airflow_db_url
    )
    env.update(_airflow_components_env(options, credentials))
    services.write_airflow_password(airflow_home, "admin", credentials["airflow_admin_password"])
    say("Airflow     migrating the metadata database and loading airflow_settings.yaml ...")
    _run_airflow(["db", "migrate"], env, logs / "airflow-setup.log")
    airflow_settings.import_into_airflow(settings, services.venv_bin("airflow"), env)
    say(f"Airflow     starting its components ({options.executor}; takes 15-45 s) ...")
    for component in services.airflow_components(env):
        process = supervisor.start(
            f"airflow-{component[0]}", lambda c=component: services.start_airflow_component(c, env, logs)
        )
        if component[0] == "api-server":
            airflow = process
    say(f"Airflow     {airflow.url}  (login: admin / {credentials['airflow_admin_password']})")
    return Stack(
        urls={"lakeFS": lakefs["url"], "MLflow": mlflow.url, "Serving": serving.url, "Airflow": airflow.url},
        credentials=credentials,
        lakefs_keys=(lakefs["access_key_id"], lakefs["secret_access_key"]),
        inference_log_db=inference_log_db,
        airflow_env=env,
        configs=folder.configs,
    )


def upgrade_operations_store(url: str) -> str:
    """The operations store's schema brought to the newest revision before the service and Airflow's tasks use
    it, as compose's airflow-init and the Helm chart's Job do; returns the revision."""
    import sqlalchemy as sa

    from include.mlops import operations_store

    engine = sa.create_engine(url)
    try:
        return operations_store.upgrade(engine)
    finally:
        engine.dispose()


def pipeline_configs(folder: Path, say: Callable[[str], None]) -> ConfigFolder:
    """The configs of `folder`; a file left out is named with why, and none at all stops the stack."""
    configs = load_folder(folder)
    for error in configs.errors:
        say(f"left out: {error}")
    if not configs.configs:
        raise ConfigError(f"{folder}: no pipeline config that loads; there is no model to train")
    say(f"Models      {', '.join(c.name for c in configs.configs)} (configs in {folder})")
    return configs


def seed_demo_sources(
    configs: tuple[PipelineConfig, ...], source_db: Path, history: SourceHistory, say: Callable[[str], None]
) -> None:
    """The data of the shipped demo datasets among `configs`: the simulator's card transactions (behind the
    connection the demo config reads) and the breast cancer CSV drops. Any other model's source is its own."""
    from include.demo_sources import breast_cancer

    if any(demo.is_demo(config) for config in configs):
        say(f"Source      simulating {history.days} days of card transactions into {source_db} ...")
        seed_transactions(source_db, history)
    for config in configs:
        if breast_cancer.is_shipped(config):
            folder = Path(config.source.path)
            end = dt.datetime.now(dt.UTC).date()
            files = breast_cancer.write_drops(folder, end, breast_cancer.DEFAULT_DAYS, breast_cancer.DEFAULT_SEED)
            say(f"Source      {len(files)} days of breast cancer measurements as CSV files in {folder}")


def _airflow_components_env(options: StackOptions, credentials: dict[str, str]) -> dict[str, str]:
    """What the Airflow processes of one stack must agree on: the JWT secret the api-server signs task tokens
    with, the Fernet key connections are encrypted with, the metadata DB and the executor."""
    redis = urllib.parse.urlsplit(options.redis_url)
    redis_connection = {"conn_type": "redis", "host": redis.hostname, "port": redis.port or 6379}
    if redis.password:
        redis_connection["password"] = urllib.parse.unquote(redis.password)
    env = {
        "AIRFLOW__API_AUTH__JWT_SECRET": credentials["airflow_jwt_secret"],
        "AIRFLOW__CORE__FERNET_KEY": credentials["airflow_fernet_key"],
        "AIRFLOW__CORE__EXECUTOR": PRELOADING_EXECUTORS.get(options.executor, options.executor),
        # Each config's batch arrivals are watched by the triggerer on this Redis (`batch.arrivals`).
        "AIRFLOW_CONN_REDIS_DEFAULT": json.dumps(redis_connection),
    }
    if options.executor == "CeleryExecutor":
        if not options.celery_broker_url or not options.airflow_db_url:
            raise ValueError("CeleryExecutor needs celery_broker_url and a Postgres airflow_db_url")
        queue = f"mlops-{options.ports['AIRFLOW_PORT']}"
        env |= {
            "AIRFLOW__CELERY__BROKER_URL": options.celery_broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + options.airflow_db_url.replace("+psycopg2", ""),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "mlops_airflow.celery_config.CELERY_CONFIG",
        }
    return env


def check_port_free(name: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} on 127.0.0.1 is in use; set {name}=<another port>, or pass ARGS=--free-ports"
            ) from None


def _lakefs(state: Path, port: int, credentials: dict[str, str], logs: Path, supervisor: Supervisor) -> dict[str, str]:
    """The lakeFS at LAKEFS_ENDPOINT when that is set; else a real lakeFS started here when a `lakefs` binary is
    on PATH; else the project's lakeFS-compatible server."""
    if endpoint := os.environ.get("LAKEFS_ENDPOINT"):
        host_port = endpoint.split("://", 1)[-1].rstrip("/").removesuffix("/api/v1")
        host, _, endpoint_port = host_port.partition(":")
        return {
            "url": endpoint,
            "host": host,
            "port": endpoint_port or "80",
            "access_key_id": os.environ["LAKEFS_ACCESS_KEY_ID"],
            "secret_access_key": os.environ["LAKEFS_SECRET_ACCESS_KEY"],
        }
    check_port_free("LAKEFS_PORT", port)
    keys = services.LakeFSCredentials(credentials["lakefs_access_key_id"], credentials["lakefs_secret_access_key"])
    binary = shutil.which("lakefs")

    def start_lakefs() -> ManagedProcess:
        if binary:
            secret = credentials["lakefs_encrypt_secret"]
            return services.start_real_lakefs(binary, state / "lakefs-real", port, keys, secret, logs)
        return services.start_lakefs_server(state / "lakefs", port, keys, logs)

    server = supervisor.start("lakefs", start_lakefs)
    return {
        "url": server.url,
        "host": "127.0.0.1",
        "port": str(port),
        "access_key_id": keys.access_key_id,
        "secret_access_key": keys.secret_access_key,
    }


def seed_transactions(path: Path, history: SourceHistory) -> None:
    """The demo source: the simulator's transactions up to today (rewriting a day gives the same rows)."""
    from include.demo_sources import simulator

    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=history.days - 1)
    changed = history.drifted_since
    normal_days = history.days if changed is None else max(0, (changed - first_day).days)
    if normal_days:
        simulator.write_days(url, first_day, normal_days, history.rows_per_day, DEMO_SEED)
    if normal_days < history.days:
        start = first_day + dt.timedelta(days=normal_days)
        changed_world = simulator.DEMO_WORLD_CHANGE
        simulator.write_days(url, start, history.days - normal_days, history.rows_per_day, DEMO_SEED, changed_world)


def local_credentials(path: Path) -> dict[str, str]:
    """Random credentials for this machine's stack, made on first use and kept (never committed); a key added
    by a later version of the stack is made then."""
    import base64

    makers = {
        "lakefs_access_key_id": lambda: "AKIA" + secrets.token_hex(8).upper(),
        "lakefs_secret_access_key": lambda: secrets.token_hex(20),  # hex: a leading "-" would read as an option
        "airflow_admin_password": lambda: secrets.token_urlsafe(12),
        "serving_admin_token": lambda: secrets.token_urlsafe(24),
        "airflow_jwt_secret": lambda: secrets.token_urlsafe(32),
        "airflow_fernet_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        "lakefs_encrypt_secret": lambda: secrets.token_hex(32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    credentials = json.loads(path.read_text()) if path.exists() else {}
    missing = {key: make() for key, make in makers.items() if key not in credentials}
    if missing:
        credentials.update(missing)
        path.write_text(json.dumps(credentials, indent=2))
        path.chmod(0o600)
    return credentials


def _run_airflow(arguments: list[str], env: dict[str, str], log_path: Path) -> None:
    with open(log_path, "ab") as log:
        subprocess.run([services.venv_bin("airflow"), *arguments], env=env, stdout=log, stderr=log, check=True)
