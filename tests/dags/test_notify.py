"""Notifications sent from a task: once per DAG run also when the sending task is retried after sending, and a
destination that cannot be reached fails nothing (logged, and counted in Airflow's metrics). The events of the
pipelines' own runs are asserted in their DAG tests (test_ml_training_model.py, test_drift_monitor.py)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from devstack.processes import free_port
from tests.fixtures.notifications import SMTP_CONNECTION, WEBHOOK_CONNECTION, notify_section

pytestmark = pytest.mark.usefixtures("airflow_db")


def _telling_dag(config, fail_first_try: bool):
    """A DAG whose one task tells of `gate_rejected` and then, on its first try, fails."""
    from airflow.sdk import dag, task

    from mlops_airflow import notify

    @dag(
        dag_id=f"notify_{config.name}_{'retried' if fail_first_try else 'once'}",
        schedule=None,
        default_args={"retries": 1, "retry_delay": dt.timedelta(0)},
    )
    def telling():
        @task
        def send(**context) -> None:
            notify.tell(config, "gate_rejected", context, why="worse than the champion", version="7")
            if fail_first_try and context["ti"].try_number == 1:
                raise RuntimeError("failed after telling: the retry must not tell again")

        send()

    return telling()


def test_a_task_retried_after_telling_tells_once(write_config, notification_receivers, run_dag):
    config = write_config(notify=notify_section(("gate_rejected", "promoted")))
    dag_run = run_dag(_telling_dag(config, fail_first_try=True))
    assert dag_run.state == "success" and dag_run.get_task_instance("send").try_number == 2
    told = [f"{config.name}: v7 rejected by the gate"]
    assert notification_receivers.subjects() == notification_receivers.headers() == told
    assert "worse than the champion" in notification_receivers.posts[0]["text"]


def test_destinations_that_cannot_be_reached_fail_nothing_and_are_counted(write_config, run_dag, monkeypatch, caplog):
    from airflow.sdk._shared.observability.metrics import stats
    from airflow.sdk._shared.observability.metrics.otel_logger import SafeOtelLogger
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    nobody = free_port()
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": nobody, "extra": json.dumps({"disable_ssl": True})}
    monkeypatch.setenv(f"AIRFLOW_CONN_{SMTP_CONNECTION.upper()}", json.dumps(smtp))
    webhook = {"conn_type": "http", "host": f"http://127.0.0.1:{nobody}/hook"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{WEBHOOK_CONNECTION.upper()}", json.dumps(webhook))
    config = write_config(notify=notify_section(("gate_rejected",)))

    # Airflow's OpenTelemetry metrics, read in memory instead of exported ([metrics] otel_on in a deployment).
    reader = InMemoryMetricReader()
    before = stats._factory, stats._export_legacy_names
    stats.initialize(factory=lambda: SafeOtelLogger(MeterProvider(metric_readers=[reader])), export_legacy_names=False)
    try:
        dag_run = run_dag(_telling_dag(config, fail_first_try=False))
    finally:
        stats.initialize(factory=before[0], export_legacy_names=before[1])

    assert dag_run.state == "success" and dag_run.get_task_instance("send").try_number == 1
    out = caplog.text
    assert f"Could not tell {config.name} destination 0 (email) of gate_rejected" in out
    assert f"Could not tell {config.name} destination 1 (webhook) of gate_rejected" in out
    counted = {
        tuple(sorted(point.attributes.items())): point.value
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name.endswith("mlops.notification_failures")
        for point in metric.data.data_points
    }
    assert counted == {
        (("event", "gate_rejected"), ("kind", "email")): 1,
        (("event", "gate_rejected"), ("kind", "webhook")): 1,
    }
