"""The inference log: rows match what was answered (SQLite, Postgres); an unavailable database costs rows, not
answers, and writing resumes when it is back; its writer process (without a service): a clean stop loses no row,
rows beyond the capacity are dropped and counted, a killed writer is replaced and what it held is counted."""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import signal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from devstack.processes import free_port
from include.mlops import monitoring, operations_store
from include.serving import schema
from include.serving.inference_log import InferenceLog, LoggedRequest
from tests.fixtures.serving import Service
from tests.serving.conftest import logged_rows, records_of, wait_for


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dropped(service: Service) -> float:
    return service.metrics().get(("mlops_inference_log_dropped_total", (("model", "fraud_detector"),)), 0.0)


def _assert_logged_as_answered(url: str, records: list[dict[str, Any]], answer: dict[str, Any]) -> None:
    rows = wait_for(lambda: logged_rows(url, answer["request_id"]), what="the inference log rows")
    assert len(rows) == len(records)
    for index, (row, record, prediction) in enumerate(zip(rows, records, answer["predictions"], strict=True)):
        assert row["record_index"] == index
        assert row["record_id"] == record["transaction_id"]
        assert (row["model_name"], row["model_version"]) == ("fraud_detector", answer["model_version"])
        assert _json(row["inputs"]) == {k: v for k, v in record.items() if k != "transaction_id"}
        assert row["label"] == str(prediction["label"])
        assert _json(row["probabilities"]) == prediction["probabilities"]
        assert row["value"] is None
        predicted_at = row["predicted_at"]
        if isinstance(predicted_at, str):  # SQLite keeps UTC as text
            predicted_at = dt.datetime.fromisoformat(predicted_at).replace(tzinfo=dt.UTC)
        assert abs(predicted_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_every_prediction_is_logged_as_answered(service, config, splits):
    records = records_of(splits["test"].iloc[:50], config.dataset)
    records[3]["distance_from_home_km"] = None
    response = service.predict(records)
    assert response.status_code == 200
    _assert_logged_as_answered(service.env["MLOPS_INFERENCE_LOG_URL"], records, response.json())
    _assert_read_back_for_drift(service.env["MLOPS_INFERENCE_LOG_URL"], records, response.json(), config)


def test_batched_predictions_are_logged_one_request_each(service, config, splits):
    (record,) = records_of(splits["test"].iloc[:1], config.dataset)
    response = service.predict([record])
    (answer,) = httpx.post(f"{service.url}/predict_batched", json={"records": [record]}, timeout=30).json()
    rows = wait_for(lambda: logged_rows(service.env["MLOPS_INFERENCE_LOG_URL"], answer["request_id"]))
    assert [(r["record_index"], r["record_id"], r["label"]) for r in rows] == [
        (0, record["transaction_id"], str(response.json()["predictions"][0]["label"]))
    ]


@pytest.mark.postgres
def test_the_log_on_postgres(start_service, empty_postgres_url, config, splits):
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=empty_postgres_url)
    records = records_of(splits["test"].iloc[:20], config.dataset)
    answer = service.predict(records).json()
    _assert_logged_as_answered(empty_postgres_url, records, answer)
    engine = sa.create_engine(empty_postgres_url)
    with engine.connect() as connection:
        columns = {c["name"]: str(c["type"]) for c in sa.inspect(connection).get_columns("inference_log")}
        indexes = {i["name"] for i in sa.inspect(connection).get_indexes("inference_log")}
    engine.dispose()
    assert (columns["predicted_at"], columns["inputs"], columns["value"]) == ("TIMESTAMP", "JSONB", "DOUBLE PRECISION")
    assert "ix_inference_log_model_predicted_at" in indexes
    assert _dropped(service) == 0
    _assert_read_back_for_drift(empty_postgres_url, records, answer, config)


def _assert_read_back_for_drift(url: str, records, answer, config) -> None:
    """What drift_monitor reads of the window is what was sent and answered."""
    engine = sa.create_engine(url)
    now = dt.datetime.now(dt.UTC)
    window = monitoring.read_live_window(engine, "fraud_detector", now - dt.timedelta(minutes=5), now, config.dataset)
    engine.dispose()
    mine = window.frame[window.frame["record_id"].isin([r["transaction_id"] for r in records])]
    assert window.malformed == 0 and len(mine) == len(records)
    assert mine["prediction"].tolist() == [str(p["label"]) for p in answer["predictions"]]
    assert mine["amount"].tolist() == [r["amount"] for r in records]


def test_an_unavailable_database_costs_log_rows_not_answers(start_service, tmp_path, config, splits):
    # The database's folder is a file for now (a read-only folder would not stop root): SQLite cannot open it.
    folder = tmp_path / "log"
    folder.write_text("not a folder")
    url = f"sqlite:///{folder / 'log.db'}"
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=url)
    records = records_of(splits["test"].iloc[:10], config.dataset)

    for _ in range(3):
        assert service.predict(records).status_code == 200
    wait_for(lambda: _dropped(service) >= 30, what="30 dropped rows")
    assert "inference log unavailable, dropping rows until it is back" in service.log()

    folder.unlink()
    folder.mkdir()
    answer = service.predict(records).json()
    _assert_logged_as_answered(url, records, answer)
    assert "inference log is writable again" in service.log()
    assert "Traceback" not in service.log()


def test_an_unreachable_postgres_costs_log_rows_not_answers(start_service, config, splits):
    url = f"postgresql+psycopg2://nobody@127.0.0.1:{free_port()}/nothing"
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=url)
    records = records_of(splits["test"].iloc[:5], config.dataset)
    assert service.predict(records).status_code == 200
    wait_for(lambda: _dropped(service) >= 5, what="5 dropped rows")


# The log's writer process, without a service: rows are handed over as the service hands them.


@pytest.fixture
def record_model(config):
    return schema.record_model(config.dataset)


def _requests(record_model, config, splits, count: int, records_each: int = 1) -> list[LoggedRequest]:
    rows = records_of(splits["test"].iloc[: count * records_each], config.dataset)
    now = dt.datetime.now(dt.UTC)
    prediction = {"label": 0, "probabilities": {"0": 0.75, "1": 0.25}}
    return [
        LoggedRequest(
            f"{i:032x}",
            "fraud_detector",
            "1",
            now,
            [record_model.model_validate(r) for r in rows[i * records_each : (i + 1) * records_each]],
            [prediction] * records_each,
        )
        for i in range(count)
    ]


class _Counts:
    def __init__(self) -> None:
        self.dropped: collections.Counter[str] = collections.Counter()
        self.restarts = 0

    def drop(self, model: str, rows: int) -> None:
        self.dropped[model] += rows

    def restart(self) -> None:
        self.restarts += 1


def _row_count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM inference_log")).scalar_one()
    except sa.exc.OperationalError:  # no table yet
        return 0
    finally:
        engine.dispose()


def test_a_clean_stop_writes_every_row_handed_over(tmp_path, record_model, config, splits):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    counts = _Counts()
    log = InferenceLog(url, {"fraud_detector": "transaction_id"}, counts.drop, counts.restart)
    log.start()
    requests = _requests(record_model, config, splits, 1200)
    for request in requests:
        log.submit(request)
    log.stop(timeout=60)
    assert _row_count(url) == 1200 and not counts.dropped and counts.restarts == 0
    (row,) = logged_rows(url, requests[7].request_id)
    assert row["record_id"] == requests[7].records[0].transaction_id
    assert _json(row["inputs"])["amount"] == requests[7].records[0].amount


def test_rows_beyond_the_capacity_are_dropped_and_counted_at_once(tmp_path, record_model, config, splits):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    counts = _Counts()
    log = InferenceLog(url, {"fraud_detector": "transaction_id"}, counts.drop, counts.restart, capacity=10)
    log.start()
    # One request of 11 records is over the capacity whatever the writer has done; 10 of 1 record fit.
    (too_many,) = _requests(record_model, config, splits, 1, records_each=11)
    log.submit(too_many)
    assert counts.dropped == {"fraud_detector": 11}
    for request in _requests(record_model, config, splits, 10):
        log.submit(request)
    log.stop(timeout=60)
    assert _row_count(url) == 10 and counts.dropped == {"fraud_detector": 11}


def test_a_killed_writer_is_replaced_and_its_unreported_rows_are_counted(tmp_path, record_model, config, splits):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    counts = _Counts()
    log = InferenceLog(url, {"fraud_detector": "transaction_id"}, counts.drop, counts.restart)
    log.start()
    first = log.writer_pid
    os.kill(first, signal.SIGSTOP)  # handed-over rows wait, unreported, in the stopped writer's queue
    for request in _requests(record_model, config, splits, 30):
        log.submit(request)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: counts.restarts == 1, what="a new writer")
    assert log.writer_pid != first
    assert counts.dropped == {"fraud_detector": 30}
    later = _requests(record_model, config, splits, 5)
    for request in later:
        log.submit(request)
    log.stop(timeout=60)
    assert [len(logged_rows(url, r.request_id)) for r in later] == [1] * 5
    assert counts.dropped == {"fraud_detector": 30}


def test_a_store_migrated_by_newer_code_still_gets_every_row(tmp_path, record_model, config, splits):
    """A rolling upgrade migrates the store before the older replicas stop: their rows still fit (migrations add),
    and dropping them would lose what they serve."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    engine = sa.create_engine(url)
    operations_store.upgrade(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE inference_log ADD COLUMN tenant TEXT")
        connection.execute(sa.text(f"UPDATE {operations_store.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    counts = _Counts()
    log = InferenceLog(url, {"fraud_detector": "transaction_id"}, counts.drop, counts.restart)
    log.start()
    for request in _requests(record_model, config, splits, 50):
        log.submit(request)
    log.stop(timeout=60)
    assert _row_count(url) == 50 and not counts.dropped and counts.restarts == 0
