"""Batch arrival messages: what a DAG run reads back from the asset event the Redis watcher made, and the clear
errors for a message or a file that is not what it should be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.mlops.batch_arrival import (
    ArrivalError,
    BatchArrival,
    arrival_channel,
    arrival_from_event_extra,
    parse_message,
    require_file,
)


def _extra(data: str) -> dict:
    """An asset event's extra as Airflow 3.3 stores it for the Redis trigger's event (seen on a real triggerer)."""
    message = {"type": "message", "pattern": None, "channel": arrival_channel("churn"), "data": data}
    return {"from_trigger": True, "payload": message}


def test_an_arrival_survives_the_trip_through_a_message_and_an_asset_event():
    arrival = BatchArrival(path="/data/in/2026-12-07.csv", model="churn")
    assert arrival_from_event_extra(_extra(arrival.to_message())) == arrival
    assert parse_message(arrival.to_message().encode()) == arrival


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"model": "churn"}), "lacks a non-empty string path"),
        (json.dumps({"path": "", "model": 3}), "lacks a non-empty string path, model"),
    ],
)
def test_a_malformed_message_is_refused_naming_what_is_wrong(data: str, named: str):
    with pytest.raises(ArrivalError, match=named):
        arrival_from_event_extra(_extra(data))


def test_an_event_not_made_by_the_watcher_is_refused_with_its_extra():
    with pytest.raises(ArrivalError, match="no Redis message under 'payload'.*'rows': 10"):
        arrival_from_event_extra({"rows": 10})


def test_the_file_is_checked_before_use_and_a_missing_one_is_named(tmp_path: Path):
    present = tmp_path / "batch.csv"
    present.write_text("id\n1\n")
    assert require_file(BatchArrival(str(present), "churn"), "churn") == present

    missing = tmp_path / "never-written.csv"
    with pytest.raises(FileNotFoundError, match=f"model 'churn' names {missing}, which is not a file"):
        require_file(BatchArrival(str(missing), "churn"), "churn")
    with pytest.raises(ArrivalError, match="for model 'fraud' reached model 'churn'"):
        require_file(BatchArrival(str(present), "fraud"), "churn")


def test_each_model_has_its_own_channel_and_a_name_that_cannot_be_one_is_refused():
    assert arrival_channel("churn") != arrival_channel("fraud")
    with pytest.raises(ArrivalError, match="cannot name a channel"):
        arrival_channel("my model")
