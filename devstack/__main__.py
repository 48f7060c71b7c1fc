"""`make run`: the whole stack on this machine, without Docker, until Ctrl-C.

Starts lakeFS (the project's compatible server, or the real one at LAKEFS_ENDPOINT), `mlflow server`, the
BentoML model service and Airflow (api-server, scheduler, dag-processor and triggerer, LocalExecutor on
SQLite) with this project's DAGs, plugins and airflow_settings.yaml, all on 127.0.0.1, for the models of the
chosen pipeline configs (every file of include/config/, or `--config` files); trains and deploys a first
champion of each model, showing their progress; prints where everything is and, for each model, its route and
a prediction of rows of its own training data, with its lineage; and plays live card transactions to the demo
model, which its drift monitor checks every hour. With --demo-drift the demo's world changes and the terminal
follows its drift monitor retraining it by itself. Ctrl-C (or SIGTERM) stops every process group it started.
State and logs live under `.local/` so that a second run finds the data of the first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack import demo, services
from devstack.airflow_api import AirflowAPIError
from devstack.processes import StartupError, free_port, tree_pss_bytes
from devstack.stack import DEFAULT_PORTS, DEMO_SEED, PortInUse, SourceHistory, Stack, StackOptions, start
from devstack.supervisor import ServerFailed, Supervisor
from include.bootstrap import airflow_settings
from include.mlops.config import CONFIG_DIR, ConfigError, PipelineConfig, load_folder
from include.mlops.naming import model_dag_ids, training_dag_id

# --demo-drift replays history: the world changed this many days ago, and the demo's first champion is trained
# as of that day. The run its drift monitor starts collects its whole training window (the demo config's 30
# days, ending at the 2-day collection lag), so it learns from the changed world only. (A window half old, half
# changed scores AP ~0.08-0.11: neither world is learned, and the gate's floor of 0.15 keeps the champion.)
DEMO_DAYS_SINCE_CHANGE = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=services.REPO_ROOT / ".local", help="default: .local/")
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        default=[],
        help="a pipeline config (one model); repeat for several. Default: every *.yaml in include/config/ "
        "(or MLOPS_CONFIG_DIR)",
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of 8000/5000/8080/3000 (and env overrides)"
    )
    parser.add_argument(
        "--demo-drift",
        action="store_true",
        help="after the demo model is served, change its world and watch its drift monitor retrain it by itself",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=None,
        help="days each model's first training run collects (default: its training.window_days)",
    )
    args = parser.parse_args(argv)
    if args.history_days is not None and not 1 <= args.history_days <= 366:
        parser.error(f"--history-days must be between 1 and 366, not {args.history_days}")

    state: Path = args.state_dir.resolve()
    try:
        config_dir = _config_folder(args.config, state)
        has_demo = any(demo.is_demo(c) for c in load_folder(config_dir).configs)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.demo_drift and not has_demo:
        parser.error(
            "--demo-drift plays the demo model's drift: include the demo config (include/config/fraud_demo.yaml)"
        )
    ports = {
        name: free_port() if args.free_ports else int(os.environ.get(name, port))
        for name, port in DEFAULT_PORTS.items()
    }
    today = dt.datetime.now(dt.UTC).date()
    changed_since = today - dt.timedelta(days=DEMO_DAYS_SINCE_CHANGE) if args.demo_drift else None
    # The collected days end two days back (labels arrive late): a few days more than collected are simulated.
    days = (args.history_days or 30) + 5 + (DEMO_DAYS_SINCE_CHANGE if args.demo_drift else 0)
    source = SourceHistory(days=days, drifted_since=changed_since)

    # Ctrl-C (SIGINT) and SIGTERM (from a test or a supervisor) both stop the stack. SIGINT is set explicitly:
    # a process started in the background by a shell (`nohup ... &`) inherits SIGINT ignored, and Python then
    # leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    supervisor = Supervisor(say=_say)
    traffic: demo.Traffic | None = None
    try:
        stack = start(StackOptions(state=state, ports=ports, source=source, config_dir=config_dir), supervisor, _say)
        the_demo = next((c for c in stack.configs if demo.is_demo(c)), None)
        api = stack.airflow_api()
        dag_ids = {"lakefs_housekeeping"}
        dag_ids |= {dag_id for c in stack.configs for dag_id in model_dag_ids(c)}
        api.wait_for_dags(dag_ids)
        for dag_id in sorted(api.paused_dag_ids()):
            api.unpause(dag_id)
        token = stack.credentials["serving_admin_token"]

        # Each model's first champion learns its whole training window; the demo's, with --demo-drift, the world
        # before the change (as of the day it changed).
        confs = {
            c.name: {"reason": "manual", "history_days": args.history_days or c.training.window_days}
            for c in stack.configs
        }
        as_of = {the_demo.name: dt.datetime.combine(changed_since, dt.time(), dt.UTC)} if changed_since else None
        runs = demo.train(api, _say, confs, logical_dates=as_of)
        champions = {c.name: demo.served_model(stack.urls["Serving"], token, c.name) for c in stack.configs}
        for model, run in runs.items():
            if champions[model] is None and run.state == "failed":
                _say(f"{model}: no model is served: {training_dag_id(model)} run {run.run_id} failed:")
                for line in demo.what_failed(api, training_dag_id(model), run.run_id):
                    _say(line)
            elif champions[model] is None:
                _say(f"{model}: no model is served: {training_dag_id(model)} ended {run.state}; see the Airflow UI")
        if the_demo is not None:
            traffic = demo.Traffic(stack.urls["Serving"], the_demo, source.rows_per_day, DEMO_SEED)
            traffic.start()
        _show_where_everything_is(stack, champions, state)

        if args.demo_drift and champions[the_demo.name] is not None:
            demo.drift_loop(api, traffic, stack.urls["Serving"], token, f"sqlite:///{stack.inference_log_db}", _say)
        memory = tree_pss_bytes(os.getpid()) / 2**30
        _say(f"The stack uses {memory:.1f} GiB of memory (PSS). Logs and state in {state}.")
        _say("Ready; Ctrl-C stops everything.")
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
        AirflowAPIError,
        ConfigError,
        subprocess.CalledProcessError,
    ) as exc:
        _say(f"make run failed: {exc}")
        return 1
    finally:
        if traffic is not None:
            traffic.stop()
        supervisor.stop_all()
        _say("stopped.")


def _config_folder(chosen: list[Path], state: Path) -> Path:
    """The folder of configs Airflow and the model service read: MLOPS_CONFIG_DIR or include/config/, or, for
    `--config` files, a folder of links to them under the state folder (made anew at each start)."""
    if not chosen:
        return Path(os.environ.get("MLOPS_CONFIG_DIR") or CONFIG_DIR).resolve()
    folder = state / "config"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.yaml"):
        old.unlink()
    for path in chosen:
        target = path.resolve()
        if not target.is_file():
            raise ConfigError(f"--config {path}: no such file")
        link = folder / target.name
        if link.exists():
            raise ConfigError(f"--config {path}: another --config file is also named {target.name}; rename one")
        link.symlink_to(target)
    return folder


def _show_where_everything_is(stack: Stack, champions: dict[str, demo.ServedModel | None], state: Path) -> None:
    urls = stack.urls
    login = f"admin / {stack.credentials['airflow_admin_password']}"
    lines = [
        f"Airflow UI   {urls['Airflow']}   (login: {login})",
        f"MLOps page   {urls['Airflow']}/mlops/   (every model: what serves, its history, approvals, rollback)",
        f"MLflow UI    {urls['MLflow']}",
        f"lakeFS       {urls['lakeFS']}   (access key {stack.lakefs_keys[0]}; keys in {state / 'credentials.json'})",
        f"Model API    {urls['Serving']}   (docs at /, metrics at /metrics)",
    ]
    for config in stack.configs:
        champion = champions[config.name]
        if champion is not None:
            lines += _prediction_lines(stack, config, champion)
    for line in lines:
        _say(line)


def _prediction_lines(stack: Stack, config: PipelineConfig, champion: demo.ServedModel) -> list[str]:
    """A prediction of the model's champion on a row of its own training data, with where that model came from."""
    url = f"{stack.urls['Serving']}/models/{config.name}/predict"
    try:
        records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, champion.labels, config)
        answer = demo.predict(stack.urls["Serving"], config.name, records)
    except Exception as exc:  # a sample that cannot be shown must not stop a stack that runs
        return [f"{config.name}: POST {url}  (no sample prediction: {exc})"]
    labels = champion.labels
    return [
        f"A prediction of {config.name} (its API: POST {url}):",
        # JSON as the route takes it, to copy into a request of one's own.
        f"  {json.dumps({'records': records[:1]})}",
        f"  -> {answer['model_name']} v{answer['model_version']}: {answer['predictions'][0]}",
        f"  trained on lakeFS commit {labels.get('lakefs_commit', '?')[:12]}, "
        f"MLflow run {labels.get('mlflow_run_id', '?')}, Airflow run {labels.get('airflow_run_id', '?')}",
    ]


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
