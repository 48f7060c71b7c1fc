"""The pinned environment: what requirements.txt promises is what is installed, compiled, and it works together."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", line):
            pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return pins


def test_installed_versions_match_the_pins():
    pins = _pins(REPO_ROOT / "requirements.txt") | _pins(REPO_ROOT / "requirements-dev.txt")
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong[name] = (version, "not installed")
            continue
        if installed != version:
            wrong[name] = (version, installed)
    assert wrong == {}


def test_the_key_pins_are_the_ones_the_design_needs():
    pins = _pins(REPO_ROOT / "requirements.txt")
    assert pins["apache-airflow"] == "3.3.2"
    for provider in ("standard", "amazon", "postgres", "celery"):
        assert f"apache-airflow-providers-{provider}" in pins
    assert int(pins["pandas"].split(".")[0]) == 2  # evidently 0.7 does not import with pandas 3
    assert tuple(int(p) for p in pins["bentoml"].split(".")[:2]) >= (1, 4)
    assert "lakefs-client" not in pins  # frozen and deprecated; lakefs + lakefs-sdk instead
    assert "xgboost" not in pins  # xgboost-cpu: the same package without 125 MB of CUDA libraries
    for name in (
        "lakefs",
        "lakefs-sdk",
        "mlflow",
        "scikit-learn",
        "onnx",
        "skl2onnx",
        "onnxruntime",
        "lightgbm",
        "xgboost-cpu",
        "onnxmltools",
        "evidently",
        "boto3",
        "pandera",
        "asyncpg",
        "psycopg2-binary",
    ):
        assert name in pins, name


def test_the_libraries_import_together():
    modules = "airflow.sdk mlflow lakefs lakefs_sdk sklearn pandas onnx skl2onnx onnxruntime bentoml evidently boto3"
    modules += " pandera lightgbm xgboost onnxmltools"
    code = "import " + ", ".join(modules.split())
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_site_packages_are_compiled_to_bytecode():
    """Installed with --compile-bytecode: under PYTHONDONTWRITEBYTECODE=1 nothing would compile them later."""
    import airflow

    package = Path(airflow.__file__).parent
    sources = list((package / "models").glob("*.py"))
    compiled = list((package / "models" / "__pycache__").glob("*.pyc"))
    assert sources and len(compiled) >= len(sources)


def test_a_second_install_has_nothing_to_do():
    """`make -q install` exits 0 when the venv is up to date: a second `make test` reinstalls nothing."""
    result = subprocess.run(["make", "-q", "install"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.redis
def test_celery_reaches_the_redis_broker(redis_url):
    """The pinned Celery provider talks to Redis (what CeleryExecutor workers need)."""
    env = {**os.environ, "AIRFLOW__CELERY__BROKER_URL": redis_url, "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor"}
    code = (
        "from airflow.providers.celery.executors.celery_executor_utils import app\n"
        "with app.connection_for_write() as conn:\n"
        "    conn.ensure_connection(max_retries=1)\n"
        "    print(conn.as_uri())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "redis://" in result.stdout
