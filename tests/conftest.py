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
]


def pytest_collection_modifyitems(config, items) -> None:
    """The e2e tests share one stack (tests/e2e/conftest.py): under `make test`'s two workers (pytest-xdist,
    `--dist loadgroup`) they go to one worker together, which starts the stack once, while the other worker runs
    the rest."""
    e2e = REPO_ROOT / "tests" / "e2e"
    for item in items:
        if e2e in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("e2e_stack"))
