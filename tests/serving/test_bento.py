"""The Bento: `bentoml build -f include/serving/bentofile.yaml` from the repository root, then served."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from devstack.processes import free_port, start_process, wait_until_healthy
from devstack.services import REPO_ROOT, venv_bin
from tests.fixtures.serving import ADMIN_TOKEN
from tests.serving.conftest import records_of


@pytest.mark.slow
def test_the_bento_builds_offline_and_serves(stored_models, tmp_path, config, splits):
    from bentoml._internal.bento import BentoStore

    env = {**os.environ, "BENTOML_HOME": str(stored_models.home), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = venv_bin("bentoml")
    built = subprocess.run(
        [bentoml, "build", "-f", "include/serving/bentofile.yaml", "-o", "tag"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")

    listed = subprocess.run([bentoml, "list", "-o", "json"], env=env, capture_output=True, text=True, check=True)
    assert tag in {bento["tag"] for bento in json.loads(listed.stdout)}
    bento = BentoStore(str(stored_models.home / "bentos")).get(tag)
    assert bento.info.service == "include.serving.service:ModelService"
    src = Path(bento.path_of("src"))
    sources = {p.relative_to(src).as_posix() for p in src.rglob("*.*")}
    assert {"include/serving/service.py", "include/mlops/config.py", "include/config/fraud_demo.yaml"} <= sources

    # Served from the Bento (not from the repository), it finds everything it imports.
    port = free_port()
    serve_env = {**env, "MLOPS_MODEL_TAG": "fraud_detector:v1", "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN}
    serve_env["MLOPS_SERVING_STATE_DIR"] = str(tmp_path / "state")
    serve_env.pop("PYTHONPATH", None)
    process = start_process(
        "bento",
        [bentoml, "serve", tag, "--host", "127.0.0.1", "--port", str(port)],
        tmp_path / "bento.log",
        env=serve_env,
        cwd=tmp_path,
        url=f"http://127.0.0.1:{port}",
    )
    try:
        wait_until_healthy(process, f"{process.url}/readyz", timeout=120)
        records = records_of(splits["test"].iloc[:3], config.dataset)
        # The Bento carries every shipped config: the demo model answers on its own route.
        route = f"{process.url}/models/fraud_detector/predict"
        answer = httpx.post(route, json={"records": records}, timeout=30).json()
        assert answer["model_version"] == "1" and len(answer["predictions"]) == 3
    finally:
        process.stop()
