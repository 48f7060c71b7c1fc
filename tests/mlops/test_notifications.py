"""The messages of each event, and the sent-once record (sending itself is tested in tests/dags/test_notify.py
and in the DAG runs)."""

from __future__ import annotations

import datetime as dt

import pytest

from include.mlops import notifications
from include.mlops.config import EVENTS

LINKS = notifications.Links(
    "http://airflow:8080/dags/ml_training__fraud/runs/manual__1",
    "http://airflow:8080/mlops/",
    "http://mlflow:5000/#/models/fraud/versions/3",
)


@pytest.mark.parametrize("event", EVENTS)
def test_every_event_says_which_model_what_and_why_and_links_the_evidence(event: str):
    message = notifications.message(event, "fraud", "3", "because of the test", LINKS)
    assert message.subject.startswith("fraud: ")
    assert ("v3" in message.subject) == (event not in ("retraining_requested", "run_failed"))
    payload = message.webhook_payload()
    for url in (LINKS.airflow_run, LINKS.mlops_page, LINKS.mlflow_version):
        assert url in payload["text"] and url in message.email_html()
    assert "because of the test" in payload["text"] and payload["blocks"][0]["text"]["text"] == message.subject


def test_a_message_about_no_version_names_none_and_has_no_mlflow_link():
    links = notifications.Links(LINKS.airflow_run, LINKS.mlops_page)
    message = notifications.message("run_failed", "fraud", None, "collect failed", links)
    assert message.subject == "fraud: a run failed" and "MLflow" not in message.text()


def test_an_unknown_event_is_refused_naming_it():
    with pytest.raises(ValueError, match="unknown event 'drift'"):
        notifications.message("drift", "fraud", "1", "", LINKS)


def test_the_email_body_escapes_what_it_quotes():
    message = notifications.message("gate_rejected", "fraud", "2", "f1 <0.5 & falling", LINKS)
    assert "f1 &lt;0.5 &amp; falling" in message.email_html()


def test_a_key_is_sent_once_and_a_failed_send_is_not_recorded():
    recorded: set[str] = set()
    sent: list[str] = []
    key = notifications.sent_key("ml_training__fraud", "manual__1", "promoted", 0)

    def refuse():
        raise ConnectionError("no route")

    with pytest.raises(ConnectionError):
        notifications.deliver_once(key, refuse, recorded.__contains__, recorded.add)
    assert not recorded
    for _ in range(3):  # the task's retries
        notifications.deliver_once(key, lambda: sent.append(key), recorded.__contains__, recorded.add)
    assert sent == [key] and recorded == {key}


def test_long_ids_give_a_key_an_airflow_variable_takes():
    key = notifications.sent_key("d" * 200, "r" * 250, "promoted", 0)
    assert len(key) <= notifications.MAX_KEY_LENGTH
    assert key != notifications.sent_key("d" * 200, "r" * 251, "promoted", 0)


def test_a_record_expires_after_its_models_retention_once_its_run_is_over():
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def sent(model: str, run_id: str, days_ago: float) -> notifications.SentRecord:
        record = notifications.SentRecord(model, "ml_training__x", run_id, now - dt.timedelta(days=days_ago))
        assert notifications.SentRecord.from_json(record.to_json()) == record
        return record

    records = {
        "old": sent("fraud", "manual__1", 8),
        "kept longer": sent("churn", "manual__2", 8),
        "fresh": sent("fraud", "manual__3", 6),
        "running": sent("fraud", "manual__4", 100),
        "config gone": sent("removed", "manual__5", 31),
    }
    active = {("ml_training__x", "manual__4")}
    expired = notifications.expired_records(
        records, {"fraud": 7, "churn": 30}, 30, now, lambda dag_id, run_id: (dag_id, run_id) in active
    )
    assert expired == ["old", "config gone"]


def test_a_value_that_is_not_a_record_is_refused_quoting_it():
    with pytest.raises(ValueError, match="not a record of a sent message .*'2026-12-01T00:00:00'"):
        notifications.SentRecord.from_json("2026-12-01T00:00:00")
