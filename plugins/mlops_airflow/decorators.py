"""TaskFlow decorators with buttons: `@lakefs_task` ("lakeFS") and `@mlflow_task` ("MLflow run", and "lakeFS",
"Service API docs" and "Drift report" where the task points them somewhere).

Inside such a task, `show_lakefs_commit(...)` or `show_mlflow_run(...)` points the button at what the task made.
"""

from __future__ import annotations

from collections.abc import Callable

from airflow.providers.standard.decorators.python import _PythonDecoratedOperator
from airflow.sdk import get_current_context
from airflow.sdk.bases.decorator import task_decorator_factory

from mlops_airflow.lakefs_hook import LakeFSHook
from mlops_airflow.links import DriftReportLink, LakeFSCommitLink, MLflowRunLink, ServiceDocsLink


class _LakeFSPythonOperator(_PythonDecoratedOperator):
    custom_operator_name = "@lakefs_task"
    operator_extra_links = (LakeFSCommitLink(),)


class _MLflowPythonOperator(_PythonDecoratedOperator):
    custom_operator_name = "@mlflow_task"
    operator_extra_links = (MLflowRunLink(), LakeFSCommitLink(), ServiceDocsLink(), DriftReportLink())


def lakefs_task(python_callable: Callable | None = None, multiple_outputs: bool | None = None, **kwargs):
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_LakeFSPythonOperator,
        **kwargs,
    )


def mlflow_task(python_callable: Callable | None = None, multiple_outputs: bool | None = None, **kwargs):
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=multiple_outputs,
        decorated_operator_class=_MLflowPythonOperator,
        **kwargs,
    )


def show_lakefs_commit(repository: str, commit_id: str, hook: LakeFSHook | None = None) -> None:
    """Point the running task's "lakeFS" button at `commit_id`."""
    url = (hook or LakeFSHook()).commit_url(repository, commit_id)
    get_current_context()["ti"].xcom_push(key=LakeFSCommitLink.source_key, value=url)


def show_mlflow_run(url: str) -> None:
    """Point the running task's "MLflow run" button at `url`."""
    get_current_context()["ti"].xcom_push(key=MLflowRunLink.source_key, value=url)


def show_service_docs(url: str) -> None:
    """Point the running task's "Service API docs" button at `url`."""
    get_current_context()["ti"].xcom_push(key=ServiceDocsLink.source_key, value=url)


def show_drift_report(url: str) -> None:
    """Point the running task's "Drift report" button at `url`."""
    get_current_context()["ti"].xcom_push(key=DriftReportLink.source_key, value=url)
