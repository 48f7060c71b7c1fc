"""What every record we write elsewhere (lakeFS commits, MLflow tags) says about the Airflow run behind it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import Context

from include.mlops.failures import run_url

# lakeFS's UI shows metadata keys of this form as a clickable link named "Airflow".
LAKEFS_UI_LINK_KEY = "::lakefs::Airflow::url[url:ui]"


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The Airflow UI page of a DAG run, at the address this deployment serves its UI at ([api] base_url)."""
    from airflow.configuration import conf

    return run_url(conf.get("api", "base_url", fallback="http://localhost:8080"), dag_id, run_id)


def model_card_page_url(model: str, version: str) -> str:
    """The MLOps page's view of a version's model card (the plugin's app is mounted at /mlops)."""
    from airflow.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return f"{base}/mlops/models/{model}/versions/{version}/card"


def run_interval_end(context: Context) -> dt.datetime:
    """Where the run's data interval ends: the scheduled interval's end, or, for a run triggered without a
    logical date (Airflow 3's manual runs), the time it was triggered for."""
    end = context.get("data_interval_end") or context["dag_run"].run_after
    # A plain datetime: pendulum's, shifted by a timedelta, no longer compares with aware datetimes.
    return dt.datetime.fromtimestamp(end.timestamp(), tz=dt.UTC)


def airflow_run_metadata(context: Context) -> dict[str, str]:
    """dag_id, run_id, logical date, task_id and the run's URL, as string metadata."""
    ti: Any = context["ti"]
    dag_run: Any = context["dag_run"]
    logical_date = dag_run.logical_date or dag_run.run_after
    return {
        "airflow_dag_id": ti.dag_id,
        "airflow_run_id": ti.run_id,
        "airflow_logical_date": logical_date.isoformat() if logical_date else "",
        "airflow_task_id": ti.task_id,
        "airflow_try_number": str(ti.try_number),
        "airflow_run_url": airflow_run_url(ti.dag_id, ti.run_id),
        LAKEFS_UI_LINK_KEY: airflow_run_url(ti.dag_id, ti.run_id),
    }


def retry_marker(stamp: dict[str, str]) -> dict[str, str]:
    """The part of `airflow_run_metadata` that every try of one task in one run shares."""
    return {key: stamp[key] for key in ("airflow_dag_id", "airflow_run_id", "airflow_task_id")}
