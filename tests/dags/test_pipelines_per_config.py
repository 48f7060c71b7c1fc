"""Three DAGs per config file: every model its own training, drift and rollback DAG, built from the config folder;
a broken or colliding file is an import error naming the file and key while the other models' DAGs load; a
task's process builds only its own DAG."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from include.mlops.config import CONFIG_DIR, load_folder
from include.mlops.naming import (
    batch_scoring_dag_id,
    model_dag_ids,
    monitor_dag_id,
    rollback_dag_id,
    training_dag_id,
)
from tests.conftest import REPO_ROOT

SHIPPED = {"fraud_detector", "breast_cancer_classifier"}


def _parse(config_dir: Path | None = None, dag_id: str | None = None) -> dict:
    """The dags folder parsed in a fresh interpreter, as the dag-processor (or, with `dag_id`, a task's process)
    parses it: the DAG ids, their files, the import errors, and how each drift DAG's trigger is set."""
    code = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
triggers = {d: t.trigger_dag_id for d, dag in bag.dags.items() for t in dag.tasks if t.task_id == "trigger_ml_training"}
print(json.dumps({"dags": {d: dag.fileloc for d, dag in bag.dags.items()}, "errors": bag.import_errors,
                  "triggers": triggers}))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "plugins")])}
    env.pop("MLOPS_CONFIG_DIR", None)
    if config_dir is not None:
        env["MLOPS_CONFIG_DIR"] = str(config_dir)
    if dag_id is not None:  # what Airflow's task runner sets before it parses the file of the task's DAG
        env["_AIRFLOW_PARSING_CONTEXT_DAG_ID"] = dag_id
        env["_AIRFLOW_PARSING_CONTEXT_TASK_ID"] = "collect"
    command = [sys.executable, "-c", code, str(REPO_ROOT / "dags")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _config(folder: Path, name: str, model: str, dataset: str, **changes) -> Path:
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"]["registered_name"], raw["dataset"]["name"] = model, dataset
    for key, value in changes.items():
        if "__" in key:
            section, field = key.split("__")
            raw[section][field] = value
        else:  # a whole section
            raw[key] = value
    path = folder / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_every_shipped_config_has_its_dags_and_its_drift_dag_triggers_its_own_training():
    parsed = _parse()
    shipped = load_folder(CONFIG_DIR).configs
    assert {c.name for c in shipped} == SHIPPED
    expected = {dag_id for c in shipped for dag_id in model_dag_ids(c)} | {"lakefs_housekeeping"}
    assert batch_scoring_dag_id("fraud_detector") in expected  # the demo scores each night's transactions
    assert set(parsed["dags"]) == expected
    assert parsed["errors"] == {}
    # A model's drift checks, hourly and of each batch, trigger its own training only.
    watching = {monitor_dag_id(c.name): c.name for c in shipped}
    watching |= {batch_scoring_dag_id(c.name): c.name for c in shipped if c.batch is not None}
    assert parsed["triggers"] == {dag_id: training_dag_id(model) for dag_id, model in watching.items()}


def test_a_broken_file_is_an_import_error_naming_it_and_the_other_models_load(tmp_path: Path):
    _config(tmp_path, "good.yaml", "good_model", "good_data")
    (tmp_path / "not_yaml.yaml").write_text("dataset: [")
    _config(tmp_path, "bad_key.yaml", "bad_model", "bad_data", gate__min_improvement=-1)
    _config(tmp_path, "twin_a.yaml", "twin", "twin_a_data")
    _config(tmp_path, "twin_b.yaml", "twin", "twin_b_data")

    parsed = _parse(tmp_path)

    assert sorted(parsed["dags"]) == [
        "batch_scoring__good_model",  # the demo config's batch section
        "drift_monitor__good_model",
        "lakefs_housekeeping",
        "ml_training__good_model",
        "model_rollback__good_model",
        "model_rollout__good_model",
    ]
    (check_file, error), *others = parsed["errors"].items()
    assert others == [] and check_file.endswith("pipeline_configs.py")
    assert "4 pipeline config(s)" in error
    assert f"{tmp_path / 'not_yaml.yaml'}: not valid YAML" in error
    assert f"{tmp_path / 'bad_key.yaml'}: gate.min_improvement: Input should be greater than or equal to 0" in error
    assert f"{tmp_path / 'twin_a.yaml'}: model.registered_name: 'twin' is also the model.registered_name of" in error
    assert f"{tmp_path / 'twin_b.yaml'}: model.registered_name: 'twin' is also" in error


def test_an_empty_config_folder_says_so(tmp_path: Path):
    parsed = _parse(tmp_path)
    assert set(parsed["dags"]) == {"lakefs_housekeeping"}
    assert "holds no pipeline config (*.yaml): there is no model to train" in next(iter(parsed["errors"].values()))


@pytest.mark.parametrize(
    "dag_id",
    [training_dag_id("breast_cancer_classifier"), monitor_dag_id("fraud_detector"), rollback_dag_id("fraud_detector")],
)
def test_a_tasks_process_builds_only_its_own_dag(dag_id: str):
    # (The DagBag parses every file; a task's process parses only its DAG's file, and that builds one DAG.)
    assert set(_parse(dag_id=dag_id)["dags"]) - {"lakefs_housekeeping"} == {dag_id}


@pytest.mark.usefixtures("airflow_db", "lakefs_connection", "mlflow_connection", "inference_log_db")
def test_a_model_whose_source_does_not_answer_fails_its_own_run_only(
    tmp_path: Path, transactions_db: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
):
    from devstack.processes import free_port
    from include.mlops import lakefs_repository
    from mlops_airflow.lakefs_hook import LakeFSHook
    from tests.dags.conftest import TEST_CANDIDATES, load_dag

    suffix = uuid.uuid4().hex[:8]
    working, silent = f"fraud_{suffix}", f"silent_{suffix}"
    _config(tmp_path, "working.yaml", working, f"transactions_{suffix}", model__candidates=TEST_CANDIDATES)
    nobody = f"http://127.0.0.1:{free_port()}/rows"  # a port no one listens on
    source = {"kind": "http", "url": nobody, "max_retries": 0}
    _config(tmp_path, "silent.yaml", silent, f"silent_{suffix}", source=source, model__candidates=TEST_CANDIDATES)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(tmp_path))
    when, conf = dt.datetime(2026, 3, 10, tzinfo=dt.UTC), {"history_days": 1, "promote": False}

    dag = load_dag("ml_training", training_dag_id(silent))
    dag.get_task("collect").retries = 0  # its two retries 30 s apart would end the same way
    failed = dag.test(logical_date=when, run_conf=conf)
    assert failed.state == "failed"
    assert failed.get_task_instance("collect").state == "failed"
    assert f"GET {nobody}: gave up after 1 attempts; the last one failed with ConnectError" in capfd.readouterr().out
    succeeded = load_dag("ml_training", training_dag_id(working)).test(logical_date=when, run_conf=conf)
    assert succeeded.state == "success"
    main = {o.path.split("/")[1] for o in lakefs_repository.list_objects(LakeFSHook().get_repository(), "main", "raw/")}
    assert f"transactions_{suffix}" in main and f"silent_{suffix}" not in main
