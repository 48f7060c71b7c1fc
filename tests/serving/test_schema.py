"""The request schema generated from the config, and records -> ONNX inputs, without a server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic_core
import pytest
from pydantic import BaseModel, ValidationError

from include.mlops import packaging, training
from include.mlops.config import load_config
from include.serving import schema
from tests.serving.conftest import records_of


@pytest.fixture(scope="module")
def request_model(config):
    return schema.request_model(schema.record_model(config.dataset), 3, schema.StrictModel, "PredictRequest")


def test_feeds_of_json_records_equal_the_offline_feeds_on_the_whole_test_split(config, splits):
    dataset = config.dataset
    frame = splits["test"]
    record = schema.record_model(dataset)
    # Through JSON text, as a client sends them: numbers must survive it exactly.
    records = [record.model_validate_json(json.dumps(r)) for r in records_of(frame, dataset)]

    served = schema.feeds(records, dataset)
    offline = packaging.onnx_feeds(training.features_of(frame, dataset), dataset)

    assert served.keys() == offline.keys()
    for name, column in offline.items():
        assert served[name].dtype == column.dtype and served[name].shape == column.shape
        assert np.array_equal(served[name], column, equal_nan=column.dtype != object), name


def test_nulls_become_nan_and_the_missing_category(config):
    dataset = config.dataset.model_copy(
        update={"features": [f.model_copy(update={"nullable": True}) for f in config.dataset.features]}
    )
    record = schema.record_model(dataset)
    feeds = schema.feeds([record.model_validate({f.name: None for f in dataset.features})], dataset)
    assert np.isnan(feeds["amount"][0, 0]) and np.isnan(feeds["is_international"][0, 0])
    assert feeds["channel"][0, 0] == training.MISSING_CATEGORY


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "body: not valid JSON"),
        (b"[]", 'body: expected an object {"records": [...]}, got a list'),
        (b'{"records": []}', "records: at least one record is required"),
        (b'{"records": {}}', "records: expected a list of records, got an object"),
        (b'{"records": [1]}', "records[0]: expected an object of features, got a number"),
        (b'{"records": [], "extra": 1}', "extra: unknown field"),
        # Keys that are empty or not plain names are quoted, so that the location still names them.
        (b'{"records": [], "": 1}', 'body[""]: unknown field'),
        (b'{"records": [{"my field": 1}]}', 'records[0]["my field"]: unknown field'),
        (b'{"records": [{"": 1}]}', 'records[0][""]: unknown field'),
    ],
)
def test_problems_name_where_and_what(request_model, body, expected):
    with pytest.raises(ValidationError) as raised:
        request_model.model_validate_json(body)
    assert any(p.startswith(expected) for p in schema.problems(raised.value)), schema.problems(raised.value)


def test_problems_of_a_record(request_model, config):
    good = schema.sample_record(schema.record_model(config.dataset), config.dataset).model_dump()
    bad = {**good, "amount": "12", "is_international": 1, "device": None, "colour": "red"}
    del bad["hour"]
    body = json.dumps({"records": [good, bad]})
    with pytest.raises(ValidationError) as raised:
        request_model.model_validate_json(body)
    assert set(schema.problems(raised.value)) == {
        "records[1].amount: expected a number, got a string",
        "records[1].is_international: expected true or false, got a number",
        "records[1].device: null is not allowed (the feature is not nullable)",
        "records[1].colour: unknown field",
        "records[1].hour: field is missing",
    }


def test_many_problems_are_cut_short(request_model):
    with pytest.raises(ValidationError) as raised:
        request_model.model_validate_json(json.dumps({"records": [{}, {}, {}]}))
    listed = schema.problems(raised.value)
    assert len(listed) == schema.MAX_LISTED_PROBLEMS + 1 and listed[-1].startswith("... and 10 more")


def test_unknown_categories_and_out_of_range_numbers_are_accepted(config):
    record = schema.record_model(config.dataset)
    sample = schema.sample_record(record, config.dataset).model_dump()
    assert record.model_validate({**sample, "channel": "carrier_pigeon", "amount": 1e9})


def test_a_regression_config_answers_values(config):
    regression = config.dataset.model_copy(update={"task": "regression", "target_classes": []})
    answer, batched = schema.response_models(regression)
    assert set(answer.model_fields["predictions"].annotation.__args__[0].model_fields) == {"value"}
    assert {"value", "model_version", "request_id"} <= set(batched.model_fields)


@pytest.mark.parametrize(
    ("target_classes", "label", "refused"),
    [
        ([0, 1], 1, 2),
        ([False, True], True, "true"),
        (["bad", "good"], "bad", "Bad"),
        (["Fair", "Good", "Ideal"], "Ideal", 2),
    ],
)
def test_a_classifier_answers_one_of_its_classes_as_the_data_holds_them(config, target_classes, label, refused):
    dataset = config.dataset.model_copy(update={"target_classes": target_classes})
    _, batched = schema.response_models(dataset, "Zoo")
    answer = {"model_name": "m", "model_version": "1", "request_id": "r", "role": "champion"}
    prediction = batched.model_validate({**answer, "label": label, "probabilities": {"a": 1.0}})
    assert prediction.label == label and type(prediction.label) is type(label)
    sent = json.loads(pydantic_core.to_json(prediction.model_dump()))["label"]
    assert sent == label and type(sent) is type(label)
    with pytest.raises(ValidationError):
        batched.model_validate({**answer, "label": refused, "probabilities": {}})
    documented = batched.model_json_schema()["properties"]["label"]
    assert documented["enum"] == target_classes


def test_the_demo_config_makes_a_documented_schema():
    config = load_config("fraud_demo.yaml")
    record = schema.record_model(config.dataset)
    properties = record.model_json_schema()["properties"]
    assert "known categories: in_store, online, mobile_app" in properties["channel"]["description"]
    assert issubclass(record, BaseModel) and record.model_json_schema()["additionalProperties"] is False


def test_the_bento_includes_every_module_of_the_project_the_service_imports():
    """A module the service comes to import (directly or through include.mlops) must be in the Bento's include
    list, or the built Bento fails to start: tests/serving/test_bento.py proves that in minutes, this in seconds."""
    import fnmatch
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO_ROOT

    code = (
        "import json, sys, include.serving.service; "
        "print(json.dumps([getattr(m, '__file__', None) for m in list(sys.modules.values())]))"
    )
    imported = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    project = {
        str(Path(f).relative_to(REPO_ROOT))
        for f in json.loads(imported.stdout)
        if f and Path(f).is_relative_to(REPO_ROOT / "include")
    }
    patterns = yaml.safe_load((REPO_ROOT / "include" / "serving" / "bentofile.yaml").read_text())["include"]
    missing = sorted(f for f in project if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns))
    assert "include/serving/service.py" in project
    assert missing == [], f"add to include/serving/bentofile.yaml's include: {missing}"
