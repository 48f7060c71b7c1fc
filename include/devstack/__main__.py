"""`make run`: the whole stack on this machine, without Docker, until Ctrl-C.

Starts lakeFS (the project's compatible server, or the real one at LAKEFS_ENDPOINT), `mlflow server`, the
BentoML model service and `airflow standalone` with this project's DAGs, plugins and airflow_settings.yaml,
all on 127.0.0.1; prints
where everything is; and on Ctrl-C (or SIGTERM) stops every process group it started. State and logs live
under `.local/` so that a second run finds the data of the first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from include.devstack import airflow_settings, services
from include.devstack.processes import StartupError, free_port
from include.devstack.supervisor import ServerFailed, Supervisor

DEFAULT_PORTS = {"LAKEFS_PORT": 8000, "MLFLOW_PORT": 5000, "AIRFLOW_PORT": 8080, "SERVING_PORT": 3000}
# Enough history for the demo config's 30-day training window, ending today.
DEMO_HISTORY_DAYS = 35
DEMO_ROWS_PER_DAY = 2000
DEMO_SEED = 42


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=services.REPO_ROOT / ".local", help="default: .local/")
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of 8000/5000/8080/3000 (and env overrides)"
    )
    args = parser.parse_args(argv)

    state: Path = args.state_dir.resolve()
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    credentials = _local_credentials(state / "credentials.json")
    ports = {
        name: free_port() if args.free_ports else int(os.environ.get(name, port))
        for name, port in DEFAULT_PORTS.items()
    }

    # Ctrl-C (SIGINT) and SIGTERM (from a test or a supervisor) both stop the stack. SIGINT is set explicitly:
    # a process started in the background by a shell (`nohup ... &`) inherits SIGINT ignored, and Python then
    # leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    supervisor = Supervisor(say=_say)
    try:
        lakefs = _lakefs(state, ports["LAKEFS_PORT"], credentials, logs, supervisor)
        _say(f"lakeFS      {lakefs['url']}")
        _check_port_free("MLFLOW_PORT", ports["MLFLOW_PORT"])
        mlflow = supervisor.start("mlflow", lambda: services.start_mlflow(state / "mlflow", ports["MLFLOW_PORT"], logs))
        _say(f"MLflow      {mlflow.url}")

        # The deploy task (in Airflow) saves models into this store and the service loads them from it.
        bentoml_home = {"BENTOML_HOME": str(state / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
        # The service writes its predictions here; drift_monitor reads them and keeps its drift history beside.
        inference_log_db = state / "serving" / "inference_log.db"
        serving_env = {
            **bentoml_home,
            "MLOPS_ADMIN_TOKEN": credentials["serving_admin_token"],
            "MLOPS_SERVING_STATE_DIR": str(state / "serving"),
            "MLOPS_INFERENCE_LOG_URL": f"sqlite:///{inference_log_db}",
            "MLFLOW_TRACKING_URI": mlflow.url,
        }
        _check_port_free("SERVING_PORT", ports["SERVING_PORT"])
        (state / "serving").mkdir(exist_ok=True)
        # Restarted when it exits: it comes back serving the model its pointer file names.
        serving = supervisor.start(
            "serving",
            lambda: services.start_serving(ports["SERVING_PORT"], logs, serving_env, expect_model=False),
            restart=True,
        )
        _say(f"Serving     {serving.url}  (API docs at /; no model until ml_training deploys one)")

        source_db = state / "source" / "transactions.db"
        _say(f"Source      simulating {DEMO_HISTORY_DAYS} days of card transactions into {source_db} ...")
        _seed_transactions(source_db)

        settings_env = {
            **os.environ,
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
        _check_port_free("AIRFLOW_PORT", ports["AIRFLOW_PORT"])
        airflow_home = state / "airflow"
        env = services.airflow_env(airflow_home, ports["AIRFLOW_PORT"], bentoml_home)
        services.write_airflow_password(airflow_home, "admin", credentials["airflow_admin_password"])
        _say("Airflow     migrating the metadata database and loading airflow_settings.yaml ...")
        _run_airflow(["db", "migrate"], env, logs / "airflow-setup.log")
        airflow_settings.import_into_airflow(settings, services.venv_bin("airflow"), env)
        _say("Airflow     starting (takes 15-45 s) ...")
        airflow = supervisor.start("airflow", lambda: services.start_airflow_standalone(env, logs))
        _say(f"Airflow     {airflow.url}  (login: admin / {credentials['airflow_admin_password']})")
        _say(f"Logs and state in {state}. Ready; Ctrl-C stops everything.")
        while True:
            time.sleep(1.0)
            supervisor.check()
    except KeyboardInterrupt:
        return 0
    except (
        StartupError,
        ServerFailed,
        airflow_settings.SettingsError,
        PortInUse,
        subprocess.CalledProcessError,
    ) as exc:
        _say(f"make run failed: {exc}")
        return 1
    finally:
        supervisor.stop_all()
        _say("stopped.")


class PortInUse(RuntimeError):
    pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _check_port_free(name: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} on 127.0.0.1 is in use; set {name}=<another port>, or pass ARGS=--free-ports"
            ) from None


def _lakefs(state: Path, port: int, credentials: dict[str, str], logs: Path, supervisor: Supervisor) -> dict[str, str]:
    """A real lakeFS when LAKEFS_ENDPOINT is set, the project's compatible server otherwise."""
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
    _check_port_free("LAKEFS_PORT", port)
    keys = services.LakeFSCredentials(credentials["lakefs_access_key_id"], credentials["lakefs_secret_access_key"])
    server = supervisor.start("lakefs", lambda: services.start_lakefs_server(state / "lakefs", port, keys, logs))
    return {
        "url": server.url,
        "host": "127.0.0.1",
        "port": str(port),
        "access_key_id": keys.access_key_id,
        "secret_access_key": keys.secret_access_key,
    }


def _seed_transactions(path: Path) -> None:
    """The demo source: the simulator's transactions up to today (rewriting a day gives the same rows)."""
    from include.devstack import simulator

    path.parent.mkdir(parents=True, exist_ok=True)
    first_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DEMO_HISTORY_DAYS - 1)
    simulator.write_days(f"sqlite:///{path}", first_day, DEMO_HISTORY_DAYS, DEMO_ROWS_PER_DAY, DEMO_SEED)


def _local_credentials(path: Path) -> dict[str, str]:
    """Random credentials for this machine's stack, made on first use and kept (never committed); a key added
    by a later version of the stack is made then."""
    makers = {
        "lakefs_access_key_id": lambda: "AKIA" + secrets.token_hex(8).upper(),
        "lakefs_secret_access_key": lambda: secrets.token_hex(20),  # hex: a leading "-" would read as an option
        "airflow_admin_password": lambda: secrets.token_urlsafe(12),
        "serving_admin_token": lambda: secrets.token_urlsafe(24),
    }
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


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
