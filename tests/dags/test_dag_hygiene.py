"""Every DAG file imports cleanly, fast, without heavy libraries, and states what a reviewer needs to see."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DAG_FILES = sorted(p for p in (REPO_ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
# The check of the pipeline configs: a file in dags/ that builds no DAG (see test_pipelines_per_config.py).
CONFIG_CHECK = REPO_ROOT / "dags" / "pipeline_configs.py"
HEAVY_LIBRARIES = ["mlflow", "sklearn", "pandas", "onnx", "onnxruntime", "bentoml", "evidently", "lakefs", "pyarrow"]


@pytest.fixture(scope="module")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO_ROOT / "dags"))


def test_the_dags_folder_holds_dags():
    assert DAG_FILES, "dags/ has no DAG files"


def test_no_import_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert dag_bag.dags, "the DagBag found no DAG"


def test_each_file_but_the_config_check_defines_a_dag(dag_bag):
    files_with_dags = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert files_with_dags == {p.name for p in DAG_FILES if p != CONFIG_CHECK}


@pytest.mark.parametrize("path", [p for p in DAG_FILES if p != CONFIG_CHECK], ids=lambda p: p.name)
def test_schedule_is_explicit(path: Path):
    """The schedule is written in the file (Airflow 3's default, None, is easy to get by accident)."""
    calls = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Call)]
    dag_calls = [c for c in calls if getattr(c.func, "id", getattr(c.func, "attr", None)) in {"dag", "DAG"}]
    assert dag_calls, f"{path.name}: no @dag(...) or DAG(...) call"
    for call in dag_calls:
        assert "schedule" in {k.arg for k in call.keywords}, f"{path.name}: DAG without an explicit schedule="


def test_dag_settings(dag_bag):
    for dag_id, dag in dag_bag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md and dag.doc_md.strip(), f"{dag_id}: no doc_md"
        for task in dag.tasks:
            assert task.owner not in ("", "airflow"), f"{dag_id}.{task.task_id}: owner is the default {task.owner!r}"
            assert task.retries >= 2, f"{dag_id}.{task.task_id}: retries={task.retries} (at least 2)"


@pytest.fixture(scope="module")
def new_modules() -> dict[str, list[str]]:
    """The modules each DAG file adds on import (`_import_profiles`), all files measured at once."""
    return _import_profiles(DAG_FILES)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library(path: Path, new_modules):
    """The dag-processor parses every DAG file again and again: a heavy import at module level is paid each time.
    (How long a file takes to import is a figure for benchmarks, not a timed test.)"""
    heavy = sorted(m for m in new_modules[str(path)] if m in HEAVY_LIBRARIES)
    assert heavy == [], f"{path.name} imports heavy libraries at module level: {heavy}"


def test_the_heavy_import_check_can_fail(tmp_path: Path):
    """The check above would see a DAG file that imports pandas at the top."""
    bad = tmp_path / "heavy_dag.py"
    bad.write_text("import pandas\n")
    assert "pandas" in _import_profiles([bad])[str(bad)]


def _import_profiles(paths: list[Path]) -> dict[str, list[str]]:
    """Import each of `paths` in a fresh interpreter after Airflow itself; report the modules each added.

    One interpreter imports Airflow once, then forks a child per file: each file starts from the same modules,
    as a fresh interpreter would, without paying Airflow's import (seconds) once per file."""
    code = f"""
import json, os, sys, importlib.util
import airflow.sdk  # Airflow's own import cost is not the DAG file's
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator  # noqa: F401
before = set(sys.modules)
for path in {[str(p) for p in paths]!r}:
    child = os.fork()
    if child == 0:
        spec = importlib.util.spec_from_file_location("dag_under_test", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(json.dumps({{"path": path, "new_modules": sorted(set(sys.modules) - before)}}), flush=True)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    if status != 0:
        sys.exit(f"importing {{path}} failed")
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    profiles = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"path"')]
    return {profile["path"]: profile["new_modules"] for profile in profiles}
