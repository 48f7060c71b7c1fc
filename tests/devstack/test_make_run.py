"""`make run` as a user runs it: the stack comes up on loopback with this project loaded, serving the demo and a
team's own data side by side, and Ctrl-C stops all.

This runs the same entry point as `make run` (`python -m devstack`) with a temporary state directory
and free ports, so it does not collide with a stack the developer has running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml

from devstack.processes import group_alive
from include.mlops.config import CONFIG_DIR, load_config
from include.mlops.naming import model_dag_ids, training_dag_id
from mlops_airflow import preload
from tests.conftest import REPO_ROOT


def _get(url: str, token: str | None = None, auth: tuple[str, str] | None = None) -> dict | str:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if auth:
        import base64

        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read().decode()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return body


def _airflow_token(base_url: str, password: str) -> str:
    request = urllib.request.Request(
        f"{base_url}/auth/token",
        data=json.dumps({"username": "admin", "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["access_token"]


def _own_data(folder: Path) -> Path:
    """A team's own config, written from the README alone: its daily CSV exports (the breast cancer samples,
    under a dataset name the local stack knows nothing of) in a folder of its own."""
    from include.demo_sources import breast_cancer

    drops = folder / "exports"
    breast_cancer.write_drops(drops, dt.datetime.now(dt.UTC).date(), 35, seed=5)
    config = yaml.safe_load((CONFIG_DIR / "breast_cancer.yaml").read_text())
    config["dataset"]["name"] = "cell_samples"
    config["model"]["registered_name"] = "cell_classifier"
    config["source"]["path"] = str(drops)
    path = folder / "cells.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_make_run_with_two_configs_trains_and_serves_both_and_ctrl_c_stops_it(tmp_path: Path):
    state_dir = tmp_path / "state"
    # The demo config on a 3-day window (quick), without the gate's floors: the simulated days change with the
    # date, and three of them can score below the floors (AP 0.09-0.35 over 8 dates), so that no model would be
    # deployed. The floors are the DAG tests' business.
    config = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    config["gate"]["floors"] = {}
    config["training"]["window_days"] = 3
    # Nor its random forest, the slowest candidate to fit, convert and log: the candidates are training's business.
    config["model"]["candidates"] = [c for c in config["model"]["candidates"] if c["estimator"] != "RandomForest"]
    demo_path = tmp_path / "demo_without_floors.yaml"
    demo_path.write_text(yaml.safe_dump(config))
    own_path = _own_data(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MLOPS_CONFIG"))}
    stack = subprocess.Popen(
        [
            *(sys.executable, "-m", "devstack", "--state-dir", str(state_dir), "--free-ports"),
            *("--config", str(demo_path), "--config", str(own_path)),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    server_groups: list[int] = []
    try:
        # make run starts the servers, trains and deploys the first champion of each model (their training DAGs
        # on the real scheduler, started through the REST API), and prints where everything is.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "Ready; Ctrl-C stops everything" in line:
                break
        output = "\n".join(lines)
        assert "Ready" in output, f"the stack did not come up:\n{output}\n{_logs(state_dir)}"
        server_groups = [child.pid for child in psutil.Process(stack.pid).children()]
        # Its task processes fork from a scheduler that has imported the tasks' libraries (mlops_airflow.preload).
        scheduler_log = (state_dir / "logs" / "airflow-scheduler.log").read_text(errors="replace")
        assert f"preloaded {len(preload.LIBRARIES)} libraries" in scheduler_log, scheduler_log[-3000:]
        _nothing_listens_beyond_loopback(stack.pid)

        urls = dict(
            re.findall(r"\[make run\] (lakeFS|MLflow UI|Model API|Airflow UI)\s+(http://127\.0\.0\.1:\d+)", output)
        )
        credentials = json.loads((state_dir / "credentials.json").read_text())
        assert f"(login: admin / {credentials['airflow_admin_password']})" in output
        assert "Models      cell_classifier, fraud_detector" in output

        keys = (credentials["lakefs_access_key_id"], credentials["lakefs_secret_access_key"])
        assert _get(f"{urls['lakeFS']}/api/v1/user", auth=keys)["user"]["id"]
        assert _get(f"{urls['MLflow UI']}/health") == "OK"

        token = _airflow_token(urls["Airflow UI"], credentials["airflow_admin_password"])
        dags = {d["dag_id"]: d for d in _get(f"{urls['Airflow UI']}/api/v2/dags", token)["dags"]}
        models = ("fraud_detector", "cell_classifier")
        configs = [load_config(path) for path in (demo_path, own_path)]
        expected = {dag_id for c in configs for dag_id in model_dag_ids(c)} | {"lakefs_housekeeping"}
        assert set(dags) == expected
        assert [d for d in expected if dags[d]["is_paused"]] == [], "make run unpauses every DAG"
        assert _get(f"{urls['Airflow UI']}/api/v2/importErrors", token)["total_entries"] == 0
        plugins = {p["name"] for p in _get(f"{urls['Airflow UI']}/api/v2/plugins", token)["plugins"]}
        assert "mlops" in plugins
        assert f"[make run] MLOps page   {urls['Airflow UI']}/mlops/" in output
        page = _get(f"{urls['Airflow UI']}/mlops/", token)
        assert all(f'data-model="{model}"' in page for model in models), page[:2000]
        connection = _get(f"{urls['Airflow UI']}/api/v2/connections/lakefs_default", token)
        assert (connection["login"], f"http://127.0.0.1:{connection['port']}") == (keys[0], urls["lakeFS"])

        # Each model's first champion: its training DAG ran with progress shown, collected its training window
        # and deployed; the prediction shown is of a row of that model's own training data.
        runs = {}
        for model, days in (("fraud_detector", 3), ("cell_classifier", 30)):
            [run] = _get(f"{urls['Airflow UI']}/api/v2/dags/{training_dag_id(model)}/dagRuns", token)["dag_runs"]
            assert run["state"] == "success" and run["conf"] == {"reason": "manual", "history_days": days}
            runs[model] = run["dag_run_id"]
            progress = re.findall(rf"{training_dag_id(model)}: (\d+)/\d+ tasks done", output)
            assert len(set(progress)) >= 3, f"no progress shown for {model}"
            route = f"POST {urls['Model API']}/models/{model}/predict"
            assert f"A prediction of {model} (its API: {route}):" in output, output
            # The record is shown as JSON the route takes, to copy into one's own request.
            shown = output.split(f"A prediction of {model} (its API: {route}):\n[make run]   ", 1)[1].split("\n")[0]
            (record,) = json.loads(shown)["records"]
            assert set(record) >= {f.name for f in next(c for c in configs if c.name == model).dataset.features}
            shown = re.search(rf"-> {model} v(\d+): \{{'label': [01], 'probabilities'", output)
            assert shown, output
        lakefs_objects = _get(f"{urls['lakeFS']}/api/v1/repositories/mlops/refs/main/objects/ls?prefix=raw/", auth=keys)
        datasets = Counter(o["path"].split("/")[1] for o in lakefs_objects["results"])
        assert datasets == {"transactions": 3, "cell_samples": 30}
        lineage = r"trained on lakeFS commit [0-9a-f]{12}, MLflow run [0-9a-f]{32}, Airflow run (\S+)"
        assert sorted(re.findall(lineage, output)) == sorted(runs.values())
        _task_logs_are_read_from_the_local_folder(urls["Airflow UI"], token, runs["fraud_detector"], state_dir)
        _the_champion_serves_and_comes_back_when_killed(stack.pid, urls["Model API"], state_dir, demo_path)
        _no_secret_is_in_a_log(state_dir, credentials)
    finally:
        stack.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            rest, _ = stack.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # The servers run in sessions of their own: killing the stack's group alone would orphan them.
            for group in [stack.pid, *server_groups]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            rest, _ = stack.communicate()
        lines.extend(rest.splitlines())

    output = "\n".join(lines)
    assert stack.returncode == 0, output
    stopped = dict(re.findall(r"stopping ([\w-]+) \(pid (\d+)\)", output))
    airflow = {"airflow-api-server", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
    assert set(stopped) == {"lakefs", "mlflow", "serving", *airflow}, output
    stopped = [int(pid) for pid in stopped.values()]
    time.sleep(1)
    assert [pid for pid in stopped if group_alive(pid)] == [], "process groups left running"


def _nothing_listens_beyond_loopback(stack_pid: int) -> None:
    """No process of the stack (the make run process and all its descendants) accepts connections from other
    machines: every listening socket is on 127.0.0.1 or ::1."""
    stack = psutil.Process(stack_pid)
    listening, exposed = [], []
    for process in [stack, *stack.children(recursive=True)]:
        try:
            name = process.name()
            connections = process.net_connections("inet")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # a short-lived child that ended between the listing and the reading
        for connection in connections:
            if connection.status == psutil.CONN_LISTEN:
                address = f"{connection.laddr.ip}:{connection.laddr.port}"
                listening.append(address)
                if connection.laddr.ip not in ("127.0.0.1", "::1"):
                    exposed.append(f"{name} (pid {process.pid}) on {address}")
    assert listening, "no listening socket found: the check would pass for nothing"
    assert exposed == [], f"listening beyond loopback: {'; '.join(exposed)} (all listening: {', '.join(listening)})"


def _task_logs_are_read_from_the_local_folder(airflow_url: str, token: str, run_id: str, state_dir: Path) -> None:
    """With no log server (`--skip-serve-logs`), the REST API reads a finished task's log from the log folder that
    the task wrote it to, on this machine."""
    dag_id = training_dag_id("fraud_detector")
    run_path = f"{airflow_url}/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}"
    instances = _get(f"{run_path}/taskInstances", token)["task_instances"]
    done = [ti for ti in instances if ti["state"] == "success" and ti["try_number"] >= 1]
    assert done, instances
    log_folder = str(state_dir / "airflow" / "logs")
    for ti in done:
        query = f"full_content=true&map_index={ti['map_index']}"
        url = f"{run_path}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}?{query}"
        events = [str(line.get("event", "")) for line in _get(url, token)["content"]]
        start, end = events.index("::group::Log message source details"), events.index("::endgroup::")
        sources, body = events[start + 1 : end], events[end + 1 :]
        assert sources and all(source.startswith(log_folder) for source in sources), (ti["task_id"], sources)
        assert body, f"{ti['task_id']}: the log is empty: {events}"


def _no_secret_is_in_a_log(state_dir: Path, credentials: dict[str, str]) -> None:
    """The generated secrets are in credentials.json (and the configs that must hold them), never in a log: the
    task logs of both trainings, the servers' logs."""
    secrets = {name: value for name, value in credentials.items() if name != "lakefs_access_key_id"}  # an id
    logs = [path for path in state_dir.rglob("*.log") if path.is_file()]
    assert any("dag_id=" in str(path) for path in logs) and len(logs) > 20, logs
    for path in logs:
        text = path.read_text(errors="replace")
        leaked = [name for name, value in secrets.items() if value in text]
        assert leaked == [], f"{path} holds {leaked}"


def _the_champion_serves_and_comes_back_when_killed(
    stack_pid: int, serving_url: str, state_dir: Path, config_path: Path
) -> None:
    import httpx
    import pandas as pd

    from include.mlops import deployment
    from include.mlops.config import load_config

    config = load_config(str(config_path))
    rows = pd.read_sql_table("transactions", f"sqlite:///{state_dir / 'source' / 'transactions.db'}").head(5)
    records = deployment.records_of(rows, config.dataset)
    route = f"{serving_url}/models/{config.name}/predict"
    answer = httpx.post(route, json={"records": records}, timeout=30).json()
    assert answer["model_name"] == config.name and len(answer["predictions"]) == 5
    served = answer["model_version"]

    def serving_process() -> psutil.Process:
        # BentoML's process renames itself (circusd); it is the stack's child that listens on the port.
        port = urllib.parse.urlparse(serving_url).port
        (process,) = [
            child
            for child in psutil.Process(stack_pid).children()
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp"))
        ]
        return process

    serving = serving_process()
    os.killpg(serving.pid, signal.SIGKILL)
    serving.wait(timeout=30)  # gone once the stack has reaped it; until then it may still answer
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{serving_url}/models/{config.name}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert serving_process().pid != serving.pid
    again = httpx.post(route, json={"records": records}, timeout=30).json()
    assert again["model_version"] == served and again["predictions"] == answer["predictions"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--config", "nowhere.yaml"], "--config nowhere.yaml: no such file"),
        (["--config", "include/config/fraud_demo.yaml", "--config", "{tmp}/fraud_demo.yaml"], "also named"),
        (["--config", "include/config/breast_cancer.yaml", "--demo-drift"], "--demo-drift plays the demo model's"),
        (["--history-days", "0"], "--history-days must be between 1 and 366"),
    ],
)
def test_make_run_refuses_wrong_arguments_before_starting_anything(tmp_path: Path, arguments: list[str], message: str):
    (tmp_path / "fraud_demo.yaml").write_text((CONFIG_DIR / "fraud_demo.yaml").read_text())
    command = [sys.executable, "-m", "devstack", "--state-dir", str(tmp_path / "state"), "--free-ports"]
    result = subprocess.run(
        [*command, *(a.format(tmp=tmp_path) for a in arguments)], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "state" / "logs").exists(), "nothing is started"


def _logs(state: Path) -> str:
    parts = []
    for log in sorted((state / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)
