"""What people are told (config `notify`): one message per event of a model, with links to the evidence.

The events are config.EVENTS. A message says which model and version, what happened and why, and links to the
Airflow run, the MLOps page and the MLflow model version. It is rendered here as plain text, as a
Slack-compatible webhook payload and as an email body; sending it is Airflow's part (plugins/mlops_airflow/
notify.py), which also makes sure each (DAG run, event, destination) is sent once.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Callable
from dataclasses import dataclass

from include.mlops.config import EVENTS, EmailDestination, PipelineConfig, WebhookDestination

MAX_KEY_LENGTH = 250
# What each event says happened, as a subject line: `{model}` and `{version}` are filled in.
_HEADLINES = {
    "retraining_requested": "{model}: retraining requested",
    "gate_rejected": "{model}: v{version} rejected by the gate",
    "approval_waiting": "{model}: v{version} waits for approval",
    "promoted": "{model}: v{version} is the champion",
    "rollout_verdict": "{model}: rollout of v{version} judged",
    "rolled_back": "{model}: rolled back to v{version}",
    "run_failed": "{model}: a run failed",
}


@dataclass(frozen=True)
class Links:
    """Where a reader goes next. `mlflow_version` is empty when the event concerns no model version."""

    airflow_run: str
    mlops_page: str
    mlflow_version: str = ""

    def named(self) -> dict[str, str]:
        found = {
            "Airflow run": self.airflow_run,
            "MLOps page": self.mlops_page,
            "MLflow model version": self.mlflow_version,
        }
        return {name: url for name, url in found.items() if url}


@dataclass(frozen=True)
class Message:
    event: str
    model: str
    version: str | None
    subject: str
    why: str
    links: Links

    def text(self) -> str:
        """The message as plain text (mrkdwn links for Slack-compatible receivers)."""
        links = " | ".join(f"<{url}|{name}>" for name, url in self.links.named().items())
        return f"{self.subject}\n{self.why}\n{links}"

    def webhook_payload(self) -> dict:
        """Slack-compatible JSON: `text` for every receiver, `blocks` for those that draw them."""
        links = " | ".join(f"<{url}|{name}>" for name, url in self.links.named().items())
        return {
            "text": self.text(),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": self.subject[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": self.why}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": links}]},
            ],
        }

    def email_html(self) -> str:
        links = "".join(
            f'<li><a href="{html.escape(url)}">{html.escape(name)}</a></li>' for name, url in self.links.named().items()
        )
        return f"<p>{html.escape(self.why)}</p><ul>{links}</ul>"


def message(event: str, model: str, version: str | None, why: str, links: Links) -> Message:
    """The message of `event` about `version` of `model` (none: the event is about no version, a failed run
    before registration or a retraining request)."""
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; the events are: {', '.join(EVENTS)}")
    subject = _HEADLINES[event].format(model=model, version=version or "?")
    if version is None:
        subject = subject.replace(" v?", "")
    return Message(event, model, version, subject, why, links)


def destinations_for(config: PipelineConfig, event: str) -> list[tuple[int, EmailDestination | WebhookDestination]]:
    """The config's destinations told of `event`, with their index in `notify` (part of the sent-once key)."""
    return [(index, destination) for index, destination in enumerate(config.notify) if event in destination.events]


def sent_key(dag_id: str, run_id: str, event: str, destination: int) -> str:
    """The key that records a (DAG run, event, destination) as told; a digest where the ids are too long for an
    Airflow Variable's key (250 characters)."""
    key = f"mlops_notified.{dag_id}.{run_id}.{event}.{destination}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"mlops_notified.{hashlib.sha256(key.encode()).hexdigest()}"
    return key


def deliver_once(
    key: str, send: Callable[[], None], was_sent: Callable[[str], bool], record: Callable[[str], None]
) -> bool:
    """Send unless `key` was recorded as sent; record it once `send` returned. True if it was sent now.

    Recording after sending means a worker killed between the two sends it again on the retry: told twice is
    better than never for an approval waiting or a failed run. A failed `send` records nothing and raises."""
    if was_sent(key):
        return False
    send()
    record(key)
    return True
