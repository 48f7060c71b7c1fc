"""Preloading the libraries of the task processes (mlops_airflow.preload), in a fresh interpreter each. That the e2e
stack's Celery worker preloads them all is checked there (tests/e2e/test_airflow_ui.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def _preload(libraries: str, path: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    code = (
        "import json, sys; from mlops_airflow.preload import preload; "
        f"preload({libraries}); print(json.dumps(sorted(sys.modules)))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{REPO_ROOT}:{REPO_ROOT / 'plugins'}:{path}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_library_that_fails_is_left_to_its_task_and_one_that_starts_a_thread_is_refused(tmp_path: Path):
    missing = _preload("('json', 'no_such_library')")
    assert missing.returncode == 0, missing.stderr
    assert "not preloaded: no_such_library (ModuleNotFoundError" in missing.stderr
    (tmp_path / "starts_a_thread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(30,), name='poller', daemon=True).start()\n"
    )
    threaded = _preload("('starts_a_thread',)", tmp_path)
    assert threaded.returncode == 1
    assert "a preloaded library started threads (['poller'])" in threaded.stderr
