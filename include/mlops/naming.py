"""Names that tie the parts together: each model's DAG ids and lakeFS run branches. Light on purpose: DAG files
import it at parse time.

Every model (one config file) has its own DAGs and its own lakeFS run branches, named after the model
(`model.registered_name`), so that several models run side by side in one Airflow without their runs, whose ids
are often the same (`scheduled__2026-12-02T02:00:00+00:00`), sharing a branch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from include.mlops.config import PipelineConfig

RUN_BRANCH_PREFIX = "run-"
_NOT_IN_A_BRANCH_NAME = re.compile(r"[^A-Za-z0-9_-]+")


def training_dag_id(model: str) -> str:
    return f"ml_training__{model}"


def monitor_dag_id(model: str) -> str:
    return f"drift_monitor__{model}"


def rollout_dag_id(model: str) -> str:
    return f"model_rollout__{model}"


def rollback_dag_id(model: str) -> str:
    return f"model_rollback__{model}"


def batch_scoring_dag_id(model: str) -> str:
    return f"batch_scoring__{model}"


def model_dag_ids(config: PipelineConfig) -> tuple[str, ...]:
    """Every DAG one pipeline config builds (batch scoring with a `batch:` section only)."""
    model = config.name
    built = training_dag_id(model), monitor_dag_id(model), rollback_dag_id(model), rollout_dag_id(model)
    return (*built, batch_scoring_dag_id(model)) if config.batch is not None else built


def run_key(run_id: str) -> str:
    """An Airflow run id as a path segment and branch name part: what lakeFS refuses (`:` and `+` from the
    timestamps) turned into `-`. lakeFS branch names match `^\\w[-\\w]*$`."""
    cleaned = _NOT_IN_A_BRANCH_NAME.sub("-", run_id).strip("-")
    if not cleaned:
        raise ValueError(f"run id {run_id!r} has nothing usable in a branch name")
    return cleaned


def run_branch_prefix(model: str) -> str:
    """What every run branch of `model` starts with. Model names hold no `-`, so no model's prefix is the start
    of another's (`run-fraud-` and `run-fraud_v2-`)."""
    return f"{RUN_BRANCH_PREFIX}{model}-"


def run_branch_name(model: str, run_id: str) -> str:
    """The lakeFS branch of a training run of `model`: `run-<model>-<run id>`."""
    return run_branch_prefix(model) + run_key(run_id)


def batch_branch_name(model: str, run_id: str) -> str:
    """The lakeFS branch of a batch scoring run of `model`: `run-<model>-batch-<run id>`. Apart from its training
    runs' (their ids are often the same, `scheduled__...`), and still one of the model's run branches, which
    lakefs_housekeeping deletes after `branches.retention_days`."""
    return f"{run_branch_prefix(model)}batch-{run_key(run_id)}"


def lakefs_uri(repository: str, ref: str, path: str = "") -> str:
    return f"lakefs://{repository}/{ref}/{path}"


def parse_lakefs_uri(uri: str) -> tuple[str, str, str]:
    """The repository, ref and path of `lakefs://<repository>/<ref>/<path>` (the path may be empty)."""
    if not uri.startswith("lakefs://"):
        raise ValueError(f"{uri!r} is not a lakefs:// URI: lakefs://<repository>/<ref>/<path>")
    repository, _, rest = uri.removeprefix("lakefs://").partition("/")
    ref, _, path = rest.partition("/")
    if not repository or not ref:
        raise ValueError(f"{uri!r} needs a repository and a ref: lakefs://<repository>/<ref>/<path>")
    return repository, ref, path
