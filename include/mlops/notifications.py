"""What people are told (config `notify`): one message per event of a model, with links to the evidence.

The events are config.EVENTS. A message says which model and version, what happened and why, and links to the
Airflow run, the MLOps page and the MLflow model version. It is rendered here as plain text, as a
Slack-compatible webhook payload and as an email body; sending it is Airflow's part (plugins/mlops_airflow/
notify.py), which also makes sure each (DAG run, event, destination) is sent once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from include.mlops.config import EVENTS, EmailDestination, PipelineConfig, WebhookDestination

MAX_KEY_LENGTH = 250
SENT_PREFIX = "mlops_notified."
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
    key = f"{SENT_PREFIX}{dag_id}.{run_id}.{event}.{destination}"
    if len(key) > MAX_KEY_LENGTH:
        key = f"{SENT_PREFIX}{hashlib.sha256(key.encode()).hexdigest()}"
    return key


@dataclass(frozen=True)
class SentRecord:
    """What the record of a sent message holds (as JSON): the model, the DAG run that sent it, and when. The key
    cannot give the run back: ids may hold dots, and a long key is a digest."""

    model: str
    dag_id: str
    run_id: str
    sent_at: dt.datetime

    def to_json(self) -> str:
        return json.dumps(
            {"model": self.model, "dag_id": self.dag_id, "run_id": self.run_id, "sent_at": self.sent_at.isoformat()}
        )

    @classmethod
    def from_json(cls, text: str) -> SentRecord:
        try:
            found = json.loads(text)
            return cls(found["model"], found["dag_id"], found["run_id"], dt.datetime.fromisoformat(found["sent_at"]))
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"not a record of a sent message ({exc!r}): {text!r}") from exc


def expired_records(
    records: Mapping[str, SentRecord],
    retention_days: Mapping[str, float],
    other_days: float,
    now: dt.datetime,
    run_is_active: Callable[[str, str], bool],
) -> list[str]:
    """The keys of `records` older than the retention of their model (`retention_days` by model name;
    `other_days` for a model of no config) whose DAG run is over. A run still queued or running (`run_is_active`)
    may retry a task that sent: its records stay, whatever their age, or the retry would tell again."""
    expired = []
    for key, record in records.items():
        days = retention_days.get(record.model, other_days)
        if record.sent_at < now - dt.timedelta(days=days) and not run_is_active(record.dag_id, record.run_id):
            expired.append(key)
    return expired


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
