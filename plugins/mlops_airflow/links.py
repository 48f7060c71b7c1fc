"""Operator extra links: buttons on a task in the Airflow UI that open what the task produced elsewhere.

In Airflow 3 the worker computes each link when the task ends and stores it as an XCom; the operator leaves
the target URL under the link's `source_key` while it runs, and the link hands it on.
"""

from __future__ import annotations

from typing import ClassVar

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom


class _StoredUrlLink(BaseOperatorLink):
    """A link whose URL the task pushed as an XCom under `source_key`; empty (no button) when it did not."""

    source_key: ClassVar[str]

    def get_link(self, operator, *, ti_key) -> str:
        url = XCom.get_value(ti_key=ti_key, key=self.source_key)
        return url if isinstance(url, str) else ""


class LakeFSCommitLink(_StoredUrlLink):
    """Opens the commit the task made (or read) in the lakeFS UI."""

    name = "lakeFS"
    source_key = "lakefs_commit_url"


class MLflowRunLink(_StoredUrlLink):
    """Opens the MLflow run the task logged to."""

    name = "MLflow run"
    source_key = "mlflow_run_url"


class ServiceDocsLink(_StoredUrlLink):
    """Opens the API docs of the model service the task deployed to."""

    name = "Service API docs"
    source_key = "service_docs_url"


class DriftReportLink(_StoredUrlLink):
    """Opens the drift report (Evidently's HTML) the check produced."""

    name = "Drift report"
    source_key = "drift_report_url"
