"""`make run` as a user runs it: the stack comes up on loopback with this project loaded, and Ctrl-C stops all.

This runs the same entry point as `make run` (`python -m include.devstack`) with a temporary state directory
and free ports, so it does not collide with a stack the developer has running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest
import yaml

from include.devstack.processes import group_alive
from include.mlops.config import CONFIG_DIR
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


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


def test_make_run_starts_the_stack_and_ctrl_c_stops_it(tmp_path: Path):
    state_dir = tmp_path / "state"
    # The demo config without the gate's floors: the simulated days change with the date, and three of them
    # (all this test trains on, to be quick) can score below the floors (AP 0.09-0.35 over 8 dates), so that
    # no model would be deployed. The floors are the DAG tests' business.
    config = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    config["gate"]["floors"] = {}
    config_path = tmp_path / "demo_without_floors.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"MLOPS_CONFIG": str(config_path)}
    stack = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "include.devstack",
            "--state-dir",
            str(state_dir),
            "--free-ports",
            # Three days (all this test trains on, to be quick) instead of the demo's thirty.
            "--history-days",
            "3",
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
        # make run starts the servers, trains and deploys the first champion (ml_training on the real
        # scheduler, started through the REST API), and prints where everything is.
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

        urls = dict(
            re.findall(r"\[make run\] (lakeFS|MLflow UI|Model API|Airflow UI)\s+(http://127\.0\.0\.1:\d+)", output)
        )
        credentials = json.loads((state_dir / "credentials.json").read_text())
        assert f"(login: admin / {credentials['airflow_admin_password']})" in output

        keys = (credentials["lakefs_access_key_id"], credentials["lakefs_secret_access_key"])
        assert _get(f"{urls['lakeFS']}/api/v1/user", auth=keys)["user"]["id"]
        assert _get(f"{urls['MLflow UI']}/health") == "OK"

        token = _airflow_token(urls["Airflow UI"], credentials["airflow_admin_password"])
        dags = {d["dag_id"]: d for d in _get(f"{urls['Airflow UI']}/api/v2/dags", token)["dags"]}
        dag_files = {p.stem for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_")}
        assert dag_files <= set(dags)
        assert [d for d in dag_files if dags[d]["is_paused"]] == [], "make run unpauses every DAG"
        assert _get(f"{urls['Airflow UI']}/api/v2/importErrors", token)["total_entries"] == 0
        plugins = {p["name"] for p in _get(f"{urls['Airflow UI']}/api/v2/plugins", token)["plugins"]}
        assert "mlops" in plugins
        connection = _get(f"{urls['Airflow UI']}/api/v2/connections/lakefs_default", token)
        assert (connection["login"], f"http://127.0.0.1:{connection['port']}") == (keys[0], urls["lakeFS"])

        # The first champion: ml_training ran with progress shown, collected three days and deployed its model.
        [run] = _get(f"{urls['Airflow UI']}/api/v2/dags/ml_training/dagRuns", token)["dag_runs"]
        assert run["state"] == "success" and run["conf"] == {"reason": "manual", "history_days": 3}
        assert len(set(re.findall(r"ml_training: (\d+)/\d+ tasks done", output))) >= 3, "no progress shown"
        lakefs_objects = _get(f"{urls['lakeFS']}/api/v1/repositories/mlops/refs/main/objects/ls?prefix=raw/", auth=keys)
        assert len(lakefs_objects["results"]) == 3
        served = re.search(r"-> fraud_detector v(\d+): \{'label': [01], 'probabilities'", output)
        assert served, output
        lineage = r"trained on lakeFS commit [0-9a-f]{12}, MLflow run [0-9a-f]{32}, Airflow run (\S+)"
        assert re.search(lineage, output).group(1) == run["dag_run_id"]
        _the_champion_serves_and_comes_back_when_killed(stack.pid, urls["Model API"], state_dir, config_path)
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
    stopped = [int(pid) for pid in re.findall(r"stopping \w+ \(pid (\d+)\)", output)]
    assert len(stopped) == 4, output
    time.sleep(1)
    assert [pid for pid in stopped if group_alive(pid)] == [], "process groups left running"


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
    answer = httpx.post(f"{serving_url}/predict", json={"records": records}, timeout=30).json()
    assert answer["model_name"] == config.model.registered_name and len(answer["predictions"]) == 5
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
            if httpx.get(f"{serving_url}/readyz", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(1)
    assert serving_process().pid != serving.pid
    again = httpx.post(f"{serving_url}/predict", json={"records": records}, timeout=30).json()
    assert again["model_version"] == served and again["predictions"] == answer["predictions"]


def _logs(state: Path) -> str:
    parts = []
    for log in sorted((state / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:]))
    return "\n".join(parts)
