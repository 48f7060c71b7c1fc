"""How each server of the no-Docker stack starts: used by `make run` and by the test harness alike.

Every function starts one server on 127.0.0.1, waits until it answers, and returns the running process; the
caller stops it with `ManagedProcess.stop()` (the whole process group).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from devstack.processes import ManagedProcess, StartupError, start_process, wait_until_healthy
from include.bootstrap.airflow_settings import venv_bin

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class LakeFSCredentials:
    access_key_id: str
    secret_access_key: str


def start_lakefs_server(
    data_dir: Path, port: int, credentials: LakeFSCredentials, log_dir: Path, timeout: float = 60
) -> ManagedProcess:
    """The project's lakeFS-compatible server (devstack/lakefs_server) on `port`."""
    url = f"http://127.0.0.1:{port}"
    process = start_process(
        "lakefs",
        [
            sys.executable,
            "-m",
            "devstack.lakefs_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--access-key-id",
            credentials.access_key_id,
            "--secret-access-key",
            credentials.secret_access_key,
        ],
        log_dir / "lakefs.log",
        env=os.environ.copy(),
        cwd=REPO_ROOT,
        url=url,
    )
    _wait_or_stop(process, f"{url}/api/v1/healthcheck", timeout)
    return process


def real_lakefs_config(data_dir: Path, port: int, encrypt_secret: str) -> dict:
    """A single-machine lakeFS: metadata in its local KV store, objects on the local disk, under `data_dir`."""
    return {
        "listen_address": f"127.0.0.1:{port}",
        "database": {"type": "local", "local": {"path": str(data_dir / "metadata")}},
        "blockstore": {"type": "local", "local": {"path": str(data_dir / "data")}},
        "auth": {"encrypt": {"secret_key": encrypt_secret}},
        "stats": {"enabled": False},  # lakeFS reports usage to its makers unless told not to
    }


def start_real_lakefs(
    binary: str,
    data_dir: Path,
    port: int,
    credentials: LakeFSCredentials,
    encrypt_secret: str,
    log_dir: Path,
    timeout: float = 60,
) -> ManagedProcess:
    """A real lakeFS (`lakefs run`) on `port`, set up on first start with `credentials` as the admin's keys."""
    import yaml

    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "lakefs.yaml"
    config.write_text(yaml.safe_dump(real_lakefs_config(data_dir, port, encrypt_secret)))
    url = f"http://127.0.0.1:{port}"
    process = start_process("lakefs", [binary, "run", "--config", str(config)], log_dir / "lakefs.log", url=url)
    _wait_or_stop(process, f"{url}/api/v1/healthcheck", timeout)
    try:
        ensure_lakefs_setup(url, credentials)
    except BaseException:
        process.stop()
        raise
    return process


def ensure_lakefs_setup(url: str, credentials: LakeFSCredentials) -> None:
    """Set up a new lakeFS installation with these admin keys, and check that they are the keys it knows."""
    import httpx

    api = f"{url}/api/v1"
    if httpx.get(f"{api}/setup_lakefs", timeout=10).json().get("state") == "not_initialized":
        key = {"access_key_id": credentials.access_key_id, "secret_access_key": credentials.secret_access_key}
        response = httpx.post(f"{api}/setup_lakefs", json={"username": "admin", "key": key}, timeout=30)
        if response.status_code >= 400:
            raise StartupError(f"setting up lakeFS at {url} failed: HTTP {response.status_code} {response.text}")
    auth = (credentials.access_key_id, credentials.secret_access_key)
    if httpx.get(f"{api}/user", auth=auth, timeout=10).status_code != 200:
        raise StartupError(
            f"lakeFS at {url} does not accept the access key {credentials.access_key_id} from credentials.json: it "
            "was set up with other keys. Put its keys in credentials.json, or start from an empty data folder."
        )


def mlflow_command(port: int, backend_store_uri: str, artifacts_dir: Path) -> list[str]:
    return [
        venv_bin("mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # The default (several workers) costs ~2.3 GB of memory for no gain on a laptop.
        "--workers",
        "1",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts_dir),
    ]


def start_mlflow(
    state_dir: Path, port: int, log_dir: Path, backend_store_uri: str | None = None, timeout: float = 120
) -> ManagedProcess:
    """`mlflow server` with a SQLite backend under `state_dir` (or `backend_store_uri`) and local artifacts."""
    state_dir.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{state_dir / 'mlflow.db'}"
    env = os.environ.copy()
    # The job runner serves MLflow's GenAI features; it forks seven consumers this project never uses.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    url = f"http://127.0.0.1:{port}"
    process = start_process(
        "mlflow",
        mlflow_command(port, backend, state_dir / "artifacts"),
        log_dir / "mlflow.log",
        env=env,
        cwd=state_dir,
        url=url,
    )
    _wait_or_stop(process, f"{url}/health", timeout)
    return process


def airflow_env(
    airflow_home: Path, api_port: int, extra: dict[str, str] | None = None, database_url: str | None = None
) -> dict[str, str]:
    """The environment every Airflow process of the local stack runs with; the metadata database is
    `database_url`, else AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, else SQLite under `airflow_home`."""
    base_url = f"http://127.0.0.1:{api_port}"
    env = os.environ.copy()
    database = database_url or env.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN") or f"sqlite:///{airflow_home}/airflow.db"
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # The local stack is for watching the pipelines run: schedules are on from the start.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
            # LocalExecutor pre-forks `parallelism` workers (32 by default, ~1.4 GB); a laptop needs few.
            "AIRFLOW__CORE__PARALLELISM": env.get("AIRFLOW__CORE__PARALLELISM", "4"),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")])),
            # Whatever a component starts by name (`airflow`, `mlflow`, ...) is this environment's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        }
    )
    env.update(extra or {})
    return env


def write_airflow_password(airflow_home: Path, username: str, password: str) -> None:
    """Fix the SimpleAuthManager password (it would otherwise generate one and print it in its log)."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    path = airflow_home / "passwords.json"
    path.write_text(json.dumps({username: password}))
    path.chmod(0o600)


def airflow_components(env: dict[str, str]) -> list[list[str]]:
    """The `airflow` commands of a deployment with one process per component (compose's shape), for the
    executor `env` names.

    None starts a log server (`--skip-serve-logs`): Airflow binds it to every address (0.0.0.0 and ::, on the
    fixed ports 8793 and 8794), which would show task logs to the network. All components of this stack run on
    one machine and write into one log folder, from which the api-server reads the logs itself."""
    components = [
        ["api-server"],
        ["scheduler", "--skip-serve-logs"],
        ["dag-processor"],
        ["triggerer", "--skip-serve-logs"],
    ]
    if env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor":
        # Only this stack's queue: other stacks may share the broker.
        queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
        components.append(["celery", "worker", "--queues", queue, "--skip-serve-logs"])
    return components


def start_airflow_component(
    arguments: list[str], env: dict[str, str], log_dir: Path, timeout: float = 240
) -> ManagedProcess:
    """One Airflow component (`airflow api-server`, `airflow scheduler`, ...) in a process group of its own. The
    api-server is waited for until healthy; the others report their health through it (/api/v2/monitor/health)."""
    name = "-".join(arguments[:2]) if arguments[0] == "celery" else arguments[0]
    url = env["AIRFLOW__API__BASE_URL"] if name == "api-server" else ""
    process = start_process(
        f"airflow-{name}", [venv_bin("airflow"), *arguments], log_dir / f"airflow-{name}.log", env=env, url=url
    )
    if url:
        _wait_or_stop(process, f"{url}/api/v2/monitor/health", timeout)
    return process


def _wait_or_stop(process: ManagedProcess, health_url: str, timeout: float) -> None:
    try:
        wait_until_healthy(process, health_url, timeout)
    except BaseException:
        process.stop()
        raise


def start_serving(
    port: int, log_dir: Path, env: dict[str, str], expect_model: bool = True, timeout: float = 120
) -> ManagedProcess:
    """The model service (`bentoml serve include.serving.service:ModelService`) on `port`.

    `env` adds the service's settings (BENTOML_HOME, MLOPS_MODEL_TAG, MLOPS_ADMIN_TOKEN, ...; see
    include/serving/service.py) to this process's environment. Waits for /readyz when a model is expected to
    load at start, otherwise only for /livez (the service then answers, but is not ready).
    """
    url = f"http://127.0.0.1:{port}"
    full_env = os.environ.copy()
    # BentoML reports usage to its makers unless told not to; nothing of the stack leaves the machine.
    full_env["BENTOML_DO_NOT_TRACK"] = "True"
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), full_env.get("PYTHONPATH", "")]))
    full_env.update(env)
    command = [venv_bin("bentoml"), "serve", "include.serving.service:ModelService"]
    process = start_process(
        "serving",
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        log_dir / "serving.log",
        env=full_env,
        cwd=REPO_ROOT,
        url=url,
    )
    _wait_or_stop(process, f"{url}/readyz" if expect_model else f"{url}/livez", timeout)
    return process
