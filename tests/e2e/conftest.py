"""The whole system on a real scheduler: the local stack with one process per Airflow component on Postgres.

`e2e_stack` starts what `make run` starts (include/devstack/stack.py), but the way compose runs Airflow: an
api-server, a scheduler, a dag-processor and a triggerer (plus a Celery worker for CeleryExecutor), each a
process group of its own, all stopped when the `with` block ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from include.devstack import stack as devstack
from include.devstack.processes import free_port
from include.devstack.supervisor import Supervisor
from include.mlops.config import CONFIG_DIR
from tests.fixtures.services import REDIS_HOST, REDIS_PORT, postgres_database

# Small, so that a run takes a couple of minutes: a 5-day training window of 4,000 transactions a day (about 1 %
# fraud in the changed world: some 30 frauds in a test split).
TRAINING_DAYS = 5
ROWS_PER_DAY = 4000
# The world changed this many days ago: the first champion learns the days before, and the drift-triggered run
# collects its whole window again (5 days, ending at the 2-day collection lag): all of it the changed world.
DAYS_SINCE_CHANGE = TRAINING_DAYS + 2


def e2e_config(folder: Path) -> Path:
    """The demo config, scaled down, without the gate's floors (a 5-day window of simulated days can score
    below them on some dates, and then no model would be served; the floors are the DAG tests' business)."""
    config = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    config["gate"]["floors"] = {}
    config["training"]["window_days"] = TRAINING_DAYS
    config["drift"]["min_rows"] = 300
    path = folder / "e2e_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def changed_since() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=DAYS_SINCE_CHANGE)


@contextmanager
def e2e_stack(folder: Path, executor: str, monkeypatch: pytest.MonkeyPatch) -> Generator[devstack.Stack]:
    config = e2e_config(folder)
    # The test process reads the same config as the stack (demo.live_records, demo.drift_loop).
    monkeypatch.setenv("MLOPS_CONFIG", str(config))
    lines: list[str] = []
    with postgres_database() as airflow_db:
        options = devstack.StackOptions(
            state=folder / "state",
            ports={name: free_port() for name in devstack.DEFAULT_PORTS},
            airflow_db_url=airflow_db,
            executor=executor,
            celery_broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/0" if executor == "CeleryExecutor" else None,
            standalone=False,
            source=devstack.SourceHistory(
                days=TRAINING_DAYS + DAYS_SINCE_CHANGE + 3, rows_per_day=ROWS_PER_DAY, drifted_since=changed_since()
            ),
            # No scheduled runs: every run here is started by the test or by drift_monitor, so that a nightly or
            # hourly run cannot hold back (max_active_runs=1) the one under test.
            env={"MLOPS_CONFIG": str(config), "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"},
        )
        supervisor = Supervisor(say=lines.append)
        try:
            yield devstack.start(options, supervisor, lines.append)
        finally:
            supervisor.stop_all()


def logs_of(folder: Path, lines: int = 40) -> str:
    parts = []
    for log in sorted((folder / "state" / "logs").glob("*.log")):
        parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(parts)
