"""`make run`: the whole stack on this machine, without Docker, until Ctrl-C.

Starts lakeFS (the project's compatible server, or the real one at LAKEFS_ENDPOINT), `mlflow server`, the
BentoML model service and `airflow standalone` with this project's DAGs, plugins and airflow_settings.yaml, all
on 127.0.0.1; trains and deploys a first champion with `ml_training`, showing its progress; prints where
everything is and a prediction of the served model with its lineage; and plays live card transactions to the
service, which `drift_monitor` checks every hour. With --demo-drift the world changes and the terminal follows
drift_monitor retraining the model by itself. Ctrl-C (or SIGTERM) stops every process group it started. State
and logs live under `.local/` so that a second run finds the data of the first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from include.devstack import airflow_settings, demo, services
from include.devstack.airflow_api import AirflowAPIError
from include.devstack.processes import StartupError, free_port, tree_pss_bytes
from include.devstack.stack import DEFAULT_PORTS, DEMO_SEED, PortInUse, SourceHistory, Stack, StackOptions, start
from include.devstack.supervisor import ServerFailed, Supervisor

# --demo-drift replays history: the world changed this many days ago, and the first champion is trained as of
# that day. The run drift_monitor starts collects its whole training window (the demo config's 30 days, ending
# at the 2-day collection lag), so it learns from the changed world only. (A window half old, half changed
# scores AP ~0.08-0.11: neither world is learned, and the gate's floor of 0.15 keeps the champion.)
DEMO_DAYS_SINCE_CHANGE = 32
# The first champion's run collects this many days (the demo config trains on a 30-day window).
FIRST_RUN_DAYS = 30


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--state-dir", type=Path, default=services.REPO_ROOT / ".local", help="default: .local/")
    parser.add_argument(
        "--free-ports", action="store_true", help="pick free ports instead of 8000/5000/8080/3000 (and env overrides)"
    )
    parser.add_argument(
        "--demo-drift",
        action="store_true",
        help="after the first champion is served, change the world and watch drift_monitor retrain by itself",
    )
    parser.add_argument(
        "--history-days",
        type=int,
        default=FIRST_RUN_DAYS,
        help=f"days the first ml_training run collects (default {FIRST_RUN_DAYS})",
    )
    args = parser.parse_args(argv)
    if not 1 <= args.history_days <= 366:
        parser.error(f"--history-days must be between 1 and 366, not {args.history_days}")

    state: Path = args.state_dir.resolve()
    ports = {
        name: free_port() if args.free_ports else int(os.environ.get(name, port))
        for name, port in DEFAULT_PORTS.items()
    }
    today = dt.datetime.now(dt.UTC).date()
    changed_since = today - dt.timedelta(days=DEMO_DAYS_SINCE_CHANGE) if args.demo_drift else None
    # The collected days end two days back (labels arrive late): a few days more than collected are simulated.
    days = args.history_days + 5 + (DEMO_DAYS_SINCE_CHANGE if args.demo_drift else 0)
    source = SourceHistory(days=days, drifted_since=changed_since)

    # Ctrl-C (SIGINT) and SIGTERM (from a test or a supervisor) both stop the stack. SIGINT is set explicitly:
    # a process started in the background by a shell (`nohup ... &`) inherits SIGINT ignored, and Python then
    # leaves it ignored.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)

    supervisor = Supervisor(say=_say)
    traffic: demo.Traffic | None = None
    try:
        stack = start(StackOptions(state=state, ports=ports, source=source), supervisor, _say)
        api = stack.airflow_api()
        api.wait_for_dags({p.stem for p in (services.REPO_ROOT / "dags").glob("*.py")})
        for dag_id in sorted(api.dag_ids()):
            api.unpause(dag_id)
        token = stack.credentials["serving_admin_token"]
        traffic = demo.Traffic(stack.urls["Serving"], source.rows_per_day, DEMO_SEED)

        # The first champion learns the world before the change (in the demo, as of the day it changed).
        as_of = dt.datetime.combine(changed_since, dt.time(), dt.UTC) if changed_since else None
        conf = {"reason": "manual", "history_days": args.history_days}
        _, outcome = demo.train(api, _say, conf, logical_date=as_of)
        champion = demo.served_model(stack.urls["Serving"], token)
        if champion is None:
            _say(f"no model is served: ml_training ended {outcome}; see its tasks in the Airflow UI")
        traffic.start()
        _show_where_everything_is(stack, champion, state)

        if args.demo_drift and champion is not None:
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
        subprocess.CalledProcessError,
    ) as exc:
        _say(f"make run failed: {exc}")
        return 1
    finally:
        if traffic is not None:
            traffic.stop()
        supervisor.stop_all()
        _say("stopped.")


def _show_where_everything_is(stack: Stack, champion: demo.ServedModel | None, state: Path) -> None:
    urls = stack.urls
    login = f"admin / {stack.credentials['airflow_admin_password']}"
    lines = [
        f"Airflow UI   {urls['Airflow']}   (login: {login})",
        f"MLflow UI    {urls['MLflow']}",
        f"lakeFS       {urls['lakeFS']}   (access key {stack.lakefs_keys[0]}; keys in {state / 'credentials.json'})",
        f"Model API    {urls['Serving']}   (docs at /, metrics at /metrics)",
    ]
    if champion is not None:
        record = demo.live_records(dt.datetime.now(dt.UTC).date(), 50, DEMO_SEED, changed=False)[0]
        answer = demo.predict(urls["Serving"], [record])
        prediction = answer["predictions"][0]
        labels = champion.labels
        lines += [
            "A prediction of the served champion:",
            f'  POST {urls["Serving"]}/predict  {{"records": [{{"amount": {record["amount"]:.2f}, '
            f'"merchant_category": "{record["merchant_category"]}", ...}}]}}',
            f"  -> {answer['model_name']} v{answer['model_version']}: {prediction}",
            f"  trained on lakeFS commit {labels.get('lakefs_commit', '?')[:12]}, "
            f"MLflow run {labels.get('mlflow_run_id', '?')}, Airflow run {labels.get('airflow_run_id', '?')}",
        ]
    for line in lines:
        _say(line)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _say(message: str) -> None:
    print(f"[make run] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
