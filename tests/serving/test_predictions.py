"""Predictions: parity with the offline ONNX model and adaptive batching in the real service process; bad input,
metrics, docs and the admin token in the service made by `create_service` in this process (`in_process`)."""

from __future__ import annotations

import collections
import json
import logging
import math
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import hypothesis
import numpy as np
import pytest
import schemathesis

from tests.fixtures.serving import ADMIN_TOKEN
from tests.serving.conftest import offline_predictions, records_of


def _assert_equal_to_offline(predictions: list[dict[str, Any]], offline: list[np.ndarray]) -> None:
    labels, probabilities = offline
    assert [p["label"] for p in predictions] == labels.tolist()
    served = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in predictions])
    # Exactly: float32 values travel as the doubles that hold them.
    assert np.array_equal(served, probabilities.astype(np.float64))


def test_predictions_equal_the_offline_onnx_predictions_on_the_test_split(service, stored_models, config, splits):
    frame = splits["test"]
    records = records_of(frame, config.dataset)
    predictions, request_ids = [], set()
    for start in range(0, len(records), 1000):
        response = service.predict(records[start : start + 1000])
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["model_name"], answer["model_version"]) == ("fraud_detector", "1")
        assert len(answer["request_id"]) == 32
        request_ids.add(answer["request_id"])
        predictions += answer["predictions"]
    assert len(request_ids) == 2
    _assert_equal_to_offline(predictions, offline_predictions(stored_models.onnx["1"], frame, config.dataset))


def test_the_batched_path_answers_each_record_as_offline(service, stored_models, config, splits):
    frame = splits["test"].iloc[:200]
    records = records_of(frame, config.dataset)

    def one(client: httpx.Client, record: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/predict_batched", json={"records": [record]})
        assert response.status_code == 200, response.text
        (answer,) = response.json()
        return answer

    # Concurrent calls, so that BentoML merges them into shared model runs.
    limits = httpx.Limits(max_connections=16)
    with httpx.Client(base_url=service.url, timeout=30, limits=limits) as client, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda record: one(client, record), records))
    assert {a["model_version"] for a in answers} == {"1"} and len({a["request_id"] for a in answers}) == 200
    _assert_equal_to_offline(answers, offline_predictions(stored_models.onnx["1"], frame, config.dataset))
    batch_sizes = service.metrics()
    merged = sum(v for (name, _), v in batch_sizes.items() if name == "bentoml_service_adaptive_batch_size_sum")
    runs = sum(v for (name, _), v in batch_sizes.items() if name == "bentoml_service_adaptive_batch_size_count")
    assert runs < merged, "no two calls were ever merged into one run"


def _good_record(config, splits) -> dict[str, Any]:
    return records_of(splits["test"].iloc[:1], config.dataset)[0]


def _bad_bodies(record: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(what, JSON body, the problem the answer must name)."""
    without_amount = {k: v for k, v in record.items() if k != "amount"}
    return [
        ("empty list", {"records": []}, "records: at least one record is required"),
        ("over the limit", {"records": [record] * 1001}, "records: at most 1000 record(s) per request, got 1001"),
        ("NaN", {"records": [record, {**record, "amount": math.nan}]}, "records[1].amount: value is not a finite"),
        ("infinity", {"records": [{**record, "hour": math.inf}]}, "records[0].hour: value is not a finite number"),
        ("unknown field", {"records": [{**record, "customer_id": "c1"}]}, "records[0].customer_id: unknown field"),
        ("missing field", {"records": [record, record, without_amount]}, "records[2].amount: field is missing"),
        ("number as text", {"records": [{**record, "amount": "12.5"}]}, "records[0].amount: expected a number"),
        ("bool as number", {"records": [{**record, "is_international": 1}]}, "records[0].is_international: expected"),
        ("category as number", {"records": [{**record, "channel": 3}]}, "records[0].channel: expected a string"),
        ("null, not nullable", {"records": [{**record, "amount": None}]}, "records[0].amount: null is not allowed"),
        ("no records", {"rows": [record]}, "records: field is missing"),
        ("not an object", [record], 'body: expected an object {"records": [...]}'),
    ]


def _no_traceback(caplog: pytest.LogCaptureFixture) -> bool:
    return all(record.exc_info is None for record in caplog.records)


def test_bad_input_is_refused_naming_the_record_and_field_without_a_traceback(in_process, config, splits, caplog):
    caplog.set_level(logging.INFO, logger="include.serving")
    record = _good_record(config, splits)
    for what, body, problem in _bad_bodies(record):
        for route in ("/predict", "/predict_batched"):
            records = body.get("records") if isinstance(body, dict) else None
            if route == "/predict_batched" and isinstance(records, list) and len(records) > 1:
                problem = f"records: at most 1 record(s) per request, got {len(records)}"
            # NaN and Infinity are not JSON, but Python's json (and many clients) write them.
            content = json.dumps(body).encode()
            response = in_process.client.post(route, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 422, (what, route, response.text)
            answer = response.json()
            assert any(p.startswith(problem) for p in answer["problems"]), (what, route, answer)
            assert answer["error"].startswith(answer["problems"][0])
    refusal = "refused POST /predict (422): records[1].amount: value is not a finite number"
    assert any(message.startswith(refusal) for message in caplog.messages), caplog.messages
    assert _no_traceback(caplog)


def test_malformed_bodies_are_refused_too(in_process, caplog):
    cases = [
        (b"{not json", "application/json", 400, "body: not valid JSON"),
        (b"", "application/json", 400, "body: not valid JSON"),
        (b"records=1", "application/x-www-form-urlencoded", 415, "body: send JSON"),
        (b"x" * 5_000_000, "application/json", 413, "body: larger than"),
    ]
    for content, media_type, status, problem in cases:
        response = in_process.client.post("/predict", content=content, headers={"Content-Type": media_type})
        assert response.status_code == status and response.json()["problems"][0].startswith(problem)
    assert _no_traceback(caplog)


def test_a_nullable_feature_takes_null(in_process, config, splits):
    record = _good_record(config, splits)
    response = in_process.predict([{**record, "distance_from_home_km": None}, {**record, "transaction_id": None}])
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 2


def test_unknown_categories_are_served_and_counted_by_feature(in_process, config, splits):
    def unseen() -> dict[str, float]:
        return {
            feature: in_process.metric(
                "mlops_unseen_categories_total", model="fraud_detector", model_version="1", feature=feature
            )
            for feature in ("country", "merchant_category", "channel")
        }

    record = _good_record(config, splits)
    before = unseen()
    odd = [{**record, "country": "ZZ"}, {**record, "country": "XX", "merchant_category": "space_travel"}, record]
    odd.append({**odd[1], "country": "ZZ"})
    response = in_process.predict(odd)
    assert response.status_code == 200, response.text
    # Two values the model never saw are the same "other" to it.
    first, second, _, third = response.json()["predictions"]
    assert second == third and first["probabilities"] != third["probabilities"]
    after = unseen()
    assert after["country"] - before.get("country", 0) == 3
    assert after["merchant_category"] - before.get("merchant_category", 0) == 2
    assert after.get("channel", 0) == before.get("channel", 0)


def test_predictions_are_counted_by_model_version_and_class(in_process, config, splits):
    def counts() -> dict[str, float]:
        return {
            predicted_class: in_process.metric(
                "mlops_predictions_total",
                model="fraud_detector",
                model_version="1",
                role="champion",
                predicted_class=predicted_class,
            )
            for predicted_class in ("0", "1")
        }

    before = counts()
    answer = in_process.predict(records_of(splits["valid"].iloc[:300], config.dataset)).json()
    after = counts()
    served = [str(p["label"]) for p in answer["predictions"]]
    for predicted_class in ("0", "1"):
        assert after.get(predicted_class, 0) - before.get(predicted_class, 0) == served.count(predicted_class)
    assert 0 < served.count("1") < 300, "the sample should hold both classes"


def test_readiness_and_liveness(in_process):
    for probe in ("/readyz", "/livez", "/healthz", "/models/fraud_detector/readyz"):
        assert in_process.client.get(probe).status_code == 200


def test_the_openapi_document_describes_the_endpoints(in_process):
    document = in_process.client.get("/docs.json").json()
    routes = {
        "/predict",
        "/predict_batched",
        "/models/fraud_detector/predict",
        "/models/fraud_detector/predict_batched",
    }
    assert routes | {"/admin/models", "/admin/models/{model}"} <= set(document["paths"])
    assert {"get", "post"} <= set(document["paths"]["/admin/models/{model}"])
    record = document["components"]["schemas"]["RecordFraudDetector"]
    assert record["additionalProperties"] is False
    assert {"amount", "channel", "is_international", "transaction_id"} <= set(record["properties"])
    answer = document["paths"]["/predict"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"model_name", "model_version", "request_id", "predictions"} <= set(answer["properties"])
    assert in_process.client.get("/").status_code == 200


def _random_json(rng: random.Random, depth: int = 0) -> Any:
    kinds = ["null", "bool", "int", "float", "string"] + (["list", "object"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "list":
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    if kind == "object":
        return {rng.choice(["records", "amount", "x", ""]): _random_json(rng, depth + 1) for _ in range(3)}
    return {
        "null": None,
        "bool": rng.random() < 0.5,
        "int": rng.choice([0, -1, 2**63, 10**400 // 10**399]),
        "float": rng.choice([0.5, -1e308, 1e-320, math.nan, math.inf]),
        "string": rng.choice(["", "ios", "\u0000", "é" * 50, "1e3"]),
    }[kind]


def _mutated(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    mutated = dict(record)
    for _ in range(rng.randint(1, 3)):
        action, field = rng.random(), rng.choice(list(record))
        if action < 0.2:
            mutated.pop(field, None)
        elif action < 0.3:
            mutated[f"extra_{rng.randint(0, 9)}"] = _random_json(rng)
        else:
            mutated[field] = _random_json(rng)
    return mutated


def test_fuzzed_bodies_never_cause_a_server_error(in_process, config, splits, caplog):
    """Seeded random JSON bodies and mutated records, shapes the OpenAPI document does not describe (the
    schemathesis test below covers those it does): every answer is 200 or 4xx, never a 5xx."""
    rng = random.Random(20260201)
    record = _good_record(config, splits)
    statuses = []
    for i in range(400):
        if i % 4 == 0:
            body = _random_json(rng)
        else:
            body = {"records": [_mutated(record, rng) for _ in range(rng.randint(1, 3))]}
        route = rng.choice(["/predict", "/predict_batched"])
        headers = {"Content-Type": "application/json"}
        response = in_process.client.post(route, content=json.dumps(body), headers=headers)
        assert response.status_code < 500, (route, body, response.text)
        statuses.append(response.status_code)
    assert {200, 422} <= set(statuses)
    assert _no_traceback(caplog)


@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN + "x"])
def test_admin_calls_need_the_token(in_process, token):
    assert in_process.admin("GET", token=token).status_code == 401
    assert in_process.admin("POST", {"tag": "fraud_detector:v2"}, token=token).status_code == 401
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    assert in_process.client.get("/admin/models", headers=headers).status_code == 401
    assert in_process.admin("GET").json()["serving"]["tag"] == "fraud_detector:v1"


@pytest.mark.parametrize("route", ["/predict", "/predict_batched"])
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_bodies_generated_from_the_openapi_document_never_cause_a_server_error(service, route, mode):
    """Schemathesis generates bodies from the service's own /docs.json: valid ones (positive mode) must be
    answered 200, invalid ones (negative mode) with a 4xx."""
    # Over HTTP: schemathesis' ASGI client would start the app's lifespan again, a second service instance.
    operation = schemathesis.openapi.from_url(f"{service.url}/docs.json")[route]["POST"]
    answered = collections.Counter()

    # (schemathesis' pytest plugin does not run under this pytest; its strategies do, with hypothesis.)
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def never_a_server_error(case):
        response = case.call(timeout=30)
        assert response.status_code < 500, (case.body, response.text)
        # BentoML's document does not mark the body required, so a "valid" case may come without one.
        if mode == schemathesis.GenerationMode.POSITIVE and not isinstance(case.body, dict):
            assert response.status_code == 400 and "body: not valid JSON" in response.text, response.text
            return
        answered[response.status_code] += 1

    never_a_server_error()
    if mode == schemathesis.GenerationMode.POSITIVE:
        assert set(answered) == {200}, answered
    else:
        assert set(answered) <= {400, 413, 415, 422} and answered[422] > 0, answered
    assert "Traceback" not in service.log()
