"""Sending the messages of include/mlops/notifications.py to the config's `notify` destinations, through
Airflow's notifiers: the SMTP provider's SmtpNotifier for email, WebhookNotifier (below) for Slack-compatible
webhooks. Secrets stay in Airflow connections.

Once per (DAG run, event, destination), also across task retries: a task's XComs are cleared when it is retried,
so the record of what was sent is an Airflow Variable per sent message (`mlops_notified.<dag>.<run>.<event>.<n>`),
written by the task once the destination accepted the message. Only the task where an event becomes known sends
it, and a task's tries run one after another, so two writers never race for a key. lakefs_housekeeping
deletes the records of runs that are over once they are older than the model's `branches.retention_days`
(`forget_expired`).

A destination that cannot be reached does not fail the task: the failure is logged and counted in Airflow's
metric `mlops.notification_failures` (StatsD or OpenTelemetry, when [metrics] turns one on), and the message is
not recorded as sent, so a retry of the task (for another reason) tries it again.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import Any

from airflow.sdk import BaseNotifier, Context, Variable

from include.mlops import notifications
from include.mlops.config import EmailDestination, PipelineConfig

log = logging.getLogger(__name__)
FAILURE_METRIC = "mlops.notification_failures"
SENT_METRIC = "mlops.notifications_sent"
TIMEOUT_SECONDS = 10


class WebhookNotifier(BaseNotifier):
    """POSTs `payload` as JSON to the URL of HTTP connection `http_conn_id` (its host; basic auth from its login
    and password when set). Any answer other than 2xx is a failure."""

    def __init__(self, *, http_conn_id: str, payload: dict, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id
        self.payload = payload

    def notify(self, context: Context) -> None:
        from airflow.providers.http.hooks.http import HttpHook

        hook = HttpHook(method="POST", http_conn_id=self.http_conn_id)
        hook.run(json=self.payload, extra_options={"timeout": TIMEOUT_SECONDS, "check_response": True})


def notifier_for(destination, message: notifications.Message) -> BaseNotifier:
    if isinstance(destination, EmailDestination):
        from airflow.configuration import conf
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier
        from airflow.sdk import BaseHook

        # Given, not left to the notifier: it would render its fields again with the DAG's template environment,
        # which a DAG callback's context may lack.
        extra = BaseHook.get_connection(destination.connection_id).extra_dejson
        return SmtpNotifier(
            to=destination.to,
            from_email=extra.get("from_email") or conf.get("email", "from_email", fallback=None),
            subject=message.subject,
            html_content=message.email_html(),
            smtp_conn_id=destination.connection_id,
        )
    return WebhookNotifier(http_conn_id=destination.connection_id, payload=message.webhook_payload())


def tell(
    config: PipelineConfig,
    event: str,
    context: Context,
    *,
    why: str,
    version: str | int | None = None,
    once: bool = True,
) -> list[str]:
    """Tell the config's destinations of `event` that are not told yet in this DAG run (`once` off: tell them
    without looking, for the DAG's failure callback, which runs once per failed run and outside any task). Returns
    the keys of the messages sent now. Never raises for a destination: a failure is logged and counted."""
    destinations = notifications.destinations_for(config, event)
    if not destinations:
        return []
    # "dag" and "run_id" are in every context, a DAG callback's minimal one too.
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    version = None if version is None else str(version)
    message = notifications.message(event, config.name, version, why, _links(config.name, version, dag_id, run_id))
    sent = []
    for index, destination in destinations:
        key = notifications.sent_key(dag_id, run_id, event, index)
        try:
            # Called directly, not through __call__: that would render the message as a Jinja template.
            notifier = notifier_for(destination, message)
            if once:
                record = functools.partial(_record, model=config.name, dag_id=dag_id, run_id=run_id)
                told = notifications.deliver_once(key, functools.partial(notifier.notify, context), _was_sent, record)
            else:
                notifier.notify(context)
                told = True
            if told:
                sent.append(key)
                _count(SENT_METRIC, event, destination.kind)
        except Exception as exc:
            log.warning(
                "Could not tell %s destination %d (%s) of %s: %s", config.name, index, destination.kind, event, exc
            )
            _count(FAILURE_METRIC, event, destination.kind)
    return sent


def on_run_failed(config: PipelineConfig):
    """A DAG's on_failure_callback: tells the config's destinations of `run_failed`. It runs where Airflow runs
    DAG callbacks (the dag-processor), once per failed run: a cleared run that fails again is told again."""

    def callback(context: Context) -> None:
        failed: Any = context.get("ti")  # the task whose failure failed the run, when Airflow names one
        why = f"{context['dag'].dag_id} run {context['run_id']} failed"
        why += f" at task {failed.task_id} (try {failed.try_number})" if failed is not None else ""
        tell(config, "run_failed", context, why=f"{why}: {context.get('reason') or 'task_failure'}.", once=False)

    return callback


def _links(model: str, version: str | None, dag_id: str, run_id: str) -> notifications.Links:
    from airflow.configuration import conf

    from mlops_airflow import mlflow_tracking
    from mlops_airflow.run_context import airflow_run_url

    mlflow_version = ""
    if version is not None:
        try:
            mlflow_version = f"{mlflow_tracking.ui_url()}/#/models/{model}/versions/{version}"
        except ValueError:  # MLflow is not configured: the message goes out without that link
            pass
    ui = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    return notifications.Links(airflow_run_url(dag_id, run_id), f"{ui}/mlops/", mlflow_version)


def _was_sent(key: str) -> bool:
    return Variable.get(key, default=None) is not None


def _record(key: str, *, model: str, dag_id: str, run_id: str) -> None:
    record = notifications.SentRecord(model, dag_id, run_id, dt.datetime.now(dt.UTC))
    Variable.set(key, record.to_json(), description="a notification sent (config notify)")


def forget_expired(retention_days: dict[str, float], other_days: float) -> list[str]:
    """Delete the records of sent messages that `notifications.expired_records` finds expired (`retention_days`
    by model, `other_days` for a model of no config), from a task; returns their keys. A record that cannot be
    read is logged and kept."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    records = {}
    for key in Variable.keys(prefix=notifications.SENT_PREFIX):
        try:
            records[key] = notifications.SentRecord.from_json(Variable.get(key))
        except ValueError as exc:
            log.warning("Keeping Variable %s: %s", key, exc)

    def run_is_active(dag_id: str, run_id: str) -> bool:
        return RuntimeTaskInstance.get_dr_count(dag_id, run_ids=[run_id], states=["queued", "running"]) > 0

    now = dt.datetime.now(dt.UTC)
    expired = notifications.expired_records(records, retention_days, other_days, now, run_is_active)
    for key in expired:
        Variable.delete(key)
    return expired


def _count(metric: str, event: str, kind: str) -> None:
    from airflow.sdk.observability.stats import Stats

    Stats.incr(metric, tags={"event": event, "kind": kind})
