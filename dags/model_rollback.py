"""
### model_rollback__&lt;model&gt;

Puts an earlier version of one model back in service, on demand (the **Rollback** button of the MLOps page,
or Trigger with param `version`).

1. **choose_version**: param `version`, by default the previous champion. Refused, with the champion left as
   it is, when that version does not exist, serves already, or never passed ONNX parity (so was never
   deployable); finds the training snapshot it was trained on.
2. **deploy_version**: the same deployment as ml_training's: the version's ONNX model into the BentoML model
   store, a Bento, the model's route on the running service switched to it without downtime, and a smoke test
   on its own test split; the model that served before is put back on failure.
3. **move_champion**: `champion` moves to the version (the one it leaves keeps `previous-champion`), and the
   alias history records the move as a rollback by the user who triggered the run.

The drift monitor watches the rolled-back version against the reference stored when it was first promoted.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Param, dag

from include.mlops.naming import rollback_dag_id
from mlops_airflow import notify, pipelines
from mlops_airflow.rollback import choose_version, deploy_version, move_champion


def model_rollback(config) -> None:
    """The rollback DAG of one pipeline config."""
    model, config_file = config.name, config.path

    @dag(
        dag_id=rollback_dag_id(model),
        schedule=None,
        catchup=False,
        max_active_runs=1,
        doc_md=f"{__doc__}\n**This DAG**: model `{model}`, config `{config_file}`.",
        tags=["ml", "deployment", "rollback", model],
        default_args={"owner": "mlops", "retries": 2, "retry_delay": dt.timedelta(seconds=30)},
        on_failure_callback=notify.on_run_failed(config),
        params={
            "version": Param(
                None,
                type=["null", "string"],
                description="The MLflow model version to serve again; empty: the previous champion.",
            ),
        },
    )
    def pipeline():
        target = choose_version(config_file)
        move_champion(config_file, target, deploy_version(config_file, target))

    pipeline()


for pipeline_config in pipelines.to_build(rollback_dag_id):
    model_rollback(pipeline_config)
