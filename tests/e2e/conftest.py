"""The whole system on a real scheduler, shared by the end-to-end tests: the local stack with one process per
Airflow component, CeleryExecutor on Postgres and Redis, serving two models side by side.

`e2e` starts what `make run` starts (devstack/stack.py) once for the e2e tests, the way compose runs
Airflow: an api-server, a scheduler, a dag-processor, a triggerer and a Celery worker, each a process group of
its own, all stopped when the last e2e test is done. Its two models are the demo (scaled down) and the shipped
breast cancer config, whose CSV drops the stack writes where the test's copy of the config points, and whose
challengers wait for a person's approval.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from mlflow.entities.model_registry import ModelVersion

from devstack import demo
from devstack import stack as local_stack
from devstack.airflow_api import AirflowAPI
from devstack.processes import free_port
from devstack.supervisor import Supervisor
from include.mlops import registry
from include.mlops.config import CONFIG_DIR, PipelineConfig
from include.mlops.naming import training_dag_id
from tests.e2e import approvals, browser, faults
from tests.fixtures.services import (
    REDIS_HOST,
    REDIS_PORT,
    postgres_database,
    postgres_unreachable_reason,
    redis_unreachable_reason,
)

# Small, so that a run takes a couple of minutes: a 5-day training window of 4,000 transactions a day (about 1 %
# fraud in the changed world: some 30 frauds in a test split).
TRAINING_DAYS = 5
ROWS_PER_DAY = 4000
# The world changed this many days ago: the first champion learns the days before, and the drift-triggered run
# collects its whole window again (5 days, ending at the 2-day collection lag): all of it the changed world.
DAYS_SINCE_CHANGE = TRAINING_DAYS + 2
APPROVAL_TIMEOUT = 60  # seconds
DEMO = "fraud_detector"
BREAST_CANCER = "breast_cancer_classifier"


def changed_since() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS_SINCE_CHANGE)


def _configs(folder: Path) -> Path:
    """The demo config, scaled down and without the gate's floors (a 5-day window of simulated days can score
    below them on some dates, and then no model would be served; the floors are the DAG tests' business), and
    the breast cancer config with its drops in the test's folder."""
    configs = folder / "configs"
    configs.mkdir()
    demo = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    demo["gate"]["floors"] = {}
    demo["training"]["window_days"] = TRAINING_DAYS
    demo["drift"]["min_rows"] = 300
    # Every run here trains the demo's cheaper candidates only: its random forest (150 trees of depth 12) was the
    # slowest to fit, convert and log in each of the package's demo runs, and the library's tests cover forests.
    demo["model"]["candidates"] = _without_forests(demo["model"]["candidates"])
    (configs / "fraud_demo.yaml").write_text(yaml.safe_dump(demo))
    cancer = yaml.safe_load((CONFIG_DIR / "breast_cancer.yaml").read_text())
    cancer["source"]["path"] = str(folder / "breast_cancer_drops")
    # A person approves each of its challengers (in the UI test, and through the REST API in the loop's), and a
    # retrained model as good as the champion passes the gate, so that every run asks; an unanswered one is
    # rejected after a short while.
    cancer["gate"] |= {
        "approval": "required",
        "min_improvement": 0.0,
        "approval_timeout_hours": APPROVAL_TIMEOUT / 3600,
    }
    # Its four runs here train the cheap candidates only (the forest of 200 trees is the slowest to fit and log).
    cancer["model"]["candidates"] = _without_forests(cancer["model"]["candidates"])
    (configs / "breast_cancer.yaml").write_text(yaml.safe_dump(cancer))
    return configs


def _without_forests(candidates: list[dict]) -> list[dict]:
    return [c for c in candidates if c["estimator"] != "RandomForest"]


@dataclass(frozen=True)
class E2E:
    stack: local_stack.Stack
    folder: Path
    said: list[str]

    def config(self, model: str) -> PipelineConfig:
        return next(c for c in self.stack.configs if c.name == model)

    def logs(self, lines: int = 40) -> str:
        return logs_of(self.folder, lines)

    def mlflow(self) -> mlflow.MlflowClient:
        # The registry too: a test process may have pointed MLflow's default registry at a server of its own.
        return mlflow.MlflowClient(self.stack.urls["MLflow"], registry_uri=self.stack.urls["MLflow"])


@pytest.fixture(scope="package")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    for reason in (postgres_unreachable_reason(), redis_unreachable_reason()):
        if reason:
            pytest.skip(reason)
    folder = tmp_path_factory.mktemp("e2e")
    said: list[str] = []
    # Faults injected into task runs (tests/e2e/faults.py) by a cluster policy that every Airflow process of
    # the stack loads; it does nothing until a test writes a plan.
    airflow_config = folder / "state" / "airflow" / "config"
    airflow_config.mkdir(parents=True)
    (airflow_config / "airflow_local_settings.py").write_text("from tests.e2e.faults import task_policy\n")
    (folder / "faults").mkdir()
    with postgres_database() as airflow_db:
        options = local_stack.StackOptions(
            state=folder / "state",
            ports={name: free_port() for name in local_stack.DEFAULT_PORTS},
            airflow_db_url=airflow_db,
            executor="CeleryExecutor",
            celery_broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
            source=local_stack.SourceHistory(
                days=TRAINING_DAYS + DAYS_SINCE_CHANGE + 3, rows_per_day=ROWS_PER_DAY, drifted_since=changed_since()
            ),
            config_dir=_configs(folder),
            # No scheduled runs: every run here is started by a test or by a drift monitor, so that a nightly or
            # hourly run cannot hold back (max_active_runs=1) the one under test.
            env={
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                faults.PLAN_ENV: str(folder / "faults" / "plan.json"),
            },
        )
        supervisor = Supervisor(say=said.append)
        try:
            yield E2E(local_stack.start(options, supervisor, said.append), folder, said)
        finally:
            supervisor.stop_all()


@pytest.fixture
def champions(e2e: E2E) -> dict[str, ModelVersion]:
    """Each model's champion. A model without one is trained first (a test file run on its own, or in another
    order than the package's, where the drift loop trains both): the demo on the days before its world changed,
    the breast cancer model with its challenger approved by admin through the REST API, as a reviewer would."""
    client = e2e.mlflow()
    missing = [m for m in (DEMO, BREAST_CANCER) if registry.version_by_alias(client, m, registry.CHAMPION) is None]
    if missing:
        confs = {
            DEMO: {"reason": "manual", "history_days": TRAINING_DAYS},
            BREAST_CANCER: {"reason": "manual", "history_days": e2e.config(BREAST_CANCER).training.window_days},
        }
        as_of = {DEMO: dt.datetime.combine(changed_since(), dt.time(), dt.UTC)}
        api = e2e.stack.airflow_api()
        try:
            dag_ids = {training_dag_id(m): m for m in missing}
            api.wait_for_dags(set(dag_ids))
            for dag_id in api.paused_dag_ids() & set(dag_ids):
                api.unpause(dag_id)
            runs = {dag_id: api.trigger(dag_id, confs[m], logical_date=as_of.get(m)) for dag_id, m in dag_ids.items()}
            if BREAST_CANCER in missing:
                cancer_dag = training_dag_id(BREAST_CANCER)
                approvals.review(e2e.stack, cancer_dag, runs[cancer_dag], "Approve")
            states = demo.follow(api, runs, e2e.said.append, 900)
        finally:
            api.close()
        assert set(states.values()) == {"success"}, f"training the missing champions: {states}\n{e2e.logs()}"
    return {m: registry.version_by_alias(client, m, registry.CHAMPION) for m in (DEMO, BREAST_CANCER)}


EditConfig = Callable[[str, Callable[[dict[str, Any]], None]], None]


@pytest.fixture
def edit_config(e2e: E2E) -> Iterator[EditConfig]:
    """`edit_config(model, change)` changes the model's config file (`change` edits its parsed YAML in place);
    afterwards every edited file is written back as it was, and the test waits until the dag-processor has parsed
    the model's training DAG again with the tasks it had before (a rollout mode or the approval changes them), so
    that the next test finds the stack as this one did."""
    originals: dict[str, tuple[Path, str, set[str]]] = {}
    api = e2e.stack.airflow_api()

    def edit(model: str, change: Callable[[dict[str, Any]], None]) -> None:
        path = Path(e2e.config(model).path)
        if model not in originals:
            originals[model] = (path, path.read_text(), dag_tasks(api, training_dag_id(model)))
        raw = yaml.safe_load(path.read_text())
        change(raw)
        path.write_text(yaml.safe_dump(raw))

    try:
        yield edit
        for model, (path, text, tasks) in originals.items():
            path.write_text(text)
            wait_for_tasks(api, training_dag_id(model), lambda parsed, tasks=tasks: parsed == tasks)
    finally:
        for path, text, _ in originals.values():
            path.write_text(text)
        api.close()


def dag_tasks(api: AirflowAPI, dag_id: str) -> set[str]:
    """The DAG's task ids, as the dag-processor last parsed it."""
    return {t["task_id"] for t in api.request("GET", f"/api/v2/dags/{dag_id}/tasks")["tasks"]}


def wait_for_tasks(api: AirflowAPI, dag_id: str, ready: Callable[[set[str]], bool], timeout: float = 180) -> None:
    """Until the DAG's tasks (as the dag-processor last parsed it, after a config change) satisfy `ready`."""
    deadline = time.monotonic() + timeout
    while not ready(tasks := dag_tasks(api, dag_id)):
        assert time.monotonic() < deadline, f"{dag_id} was not parsed again in {timeout:.0f} s: {sorted(tasks)}"
        time.sleep(3)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's Chromium for the browser tests, installed with apt-get on a machine that lacks it (CI's clean
    one)."""
    if reason := browser.chromium_missing_reason():
        pytest.skip(reason)
    return browser.CHROMIUM


def logs_of(folder: Path, lines: int = 40) -> str:
    parts = []
    for log in sorted((folder / "state" / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)
