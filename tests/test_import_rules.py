"""`make lint`'s import rules (pyproject.toml, [tool.importlinter]) hold on the repository, and an import that breaks
one fails them, naming the import: checked on a copy of the code with such imports added."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LINT_IMPORTS = REPO_ROOT / ".venv" / "bin" / "lint-imports"


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{root / 'plugins'}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def code_copy(tmp_path: Path) -> Path:
    """The packages the rules are about, and the rules, in a folder of the test's own."""
    for folder in ("include", "devstack", "dags", "plugins/mlops_airflow"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_repository_keeps_every_import_rule():
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "named"),
    [
        ("include/mlops/probe.py", "from airflow.sdk import BaseHook", "include.mlops.probe -> airflow (l.1)"),
        ("plugins/mlops_airflow/probe.py", "import dags.ml_training", "mlops_airflow.probe -> dags.ml_training"),
        ("include/mlops/probe.py", "from include.serving import schema", "include.mlops.probe -> include.serving"),
        # The image leaves devstack out: what it carries fails to import it.
        ("include/serving/probe.py", "from devstack import demo", "include.serving.probe -> devstack"),
        ("include/bootstrap/probe.py", "from devstack import services", "include.bootstrap.probe -> devstack"),
        ("plugins/mlops_airflow/probe.py", "from devstack import page_seed", "mlops_airflow.probe -> devstack"),
        ("devstack/probe.py", "from mlops_airflow import pipelines", "devstack.probe -> mlops_airflow"),
        ("devstack/probe.py", "import dags.ml_training", "devstack.probe -> dags.ml_training"),
        # A task module used as a library by another (rollback once took deploy from training_model).
        (
            "plugins/mlops_airflow/rollback.py",
            "from mlops_airflow.training_model import deploy_model",
            "mlops_airflow.rollback -> mlops_airflow.training_model",
        ),
    ],
)
def test_an_import_against_the_rules_fails_naming_it(code_copy: Path, module: str, line: str, named: str):
    (code_copy / module).write_text(line + "\n")
    result = _lint_imports(code_copy)
    assert result.returncode != 0
    assert named in result.stdout, result.stdout[-3000:]
