"""Registers this project's operator extra links with Airflow, so the UI can show them for serialized DAGs."""

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow.links import DriftReportLink, LakeFSCommitLink, MLflowRunLink, ServiceDocsLink


class MLOpsPlugin(AirflowPlugin):
    name = "mlops"
    operator_extra_links = [LakeFSCommitLink(), MLflowRunLink(), ServiceDocsLink(), DriftReportLink()]
