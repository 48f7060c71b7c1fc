"""The test harness: an isolated Airflow environment, and real servers on free loopback ports.

Airflow reads its configuration when first imported, so the environment is set here, at import time of the
root conftest, before any test module can import Airflow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="mlops-test-airflow-"))

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__API__BASE_URL": "http://airflow.test",
        # One BentoML model store for the session: the deploy task saves into it, test services load from it.
        # BentoML fixes its store on first use in a process, so it is chosen here, before anything imports it.
        "BENTOML_HOME": str(AIRFLOW_HOME / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
    }
)
# Airflow puts the plugins folder on sys.path in its own processes; DAGs import `mlops_airflow` from there.
sys.path.insert(0, str(REPO_ROOT / "plugins"))

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.lakefs",
    "tests.fixtures.airflow",
    "tests.fixtures.serving",
    "tests.fixtures.notifications",
]


# `make test` runs on two workers (pytest-xdist). The longest tests go first, so that neither starts last: the e2e
# package (one stack for all its tests), then `make run`'s. The drift loop opens the package: it trains the first
# champions (the other e2e tests take theirs from the `champions` fixture, which then has nothing to train).
LONGEST_FIRST = [
    REPO_ROOT / "tests" / "e2e" / "test_drift_retraining_loop.py",
    REPO_ROOT / "tests" / "e2e",
    REPO_ROOT / "tests" / "devstack" / "test_make_run.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        places = [n for n, path in enumerate(LONGEST_FIRST) if path == item.path or path in item.path.parents]
        return places[0] if places else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the files' own order otherwise


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Each test file goes to one worker whole, as its tests share module fixtures and run in order, and the e2e
    package's files go together, as they share one stack; in collection order. (xdist's own `loadgroup` cannot
    group them under pytest 9, whose node ids it no longer changes.)

    Files do queue up on the e2e worker behind its last e2e tests; do not hold them back. An xdist worker runs its
    last queued test only once it is sent another or told to stop: with the e2e worker sent nothing more, the
    fault matrix waited 15 minutes for the other worker to finish everything."""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tests/e2e" if path.startswith("tests/e2e/") else path

    config.option.loadscopereorder = False
    return ByFile(config, log)
