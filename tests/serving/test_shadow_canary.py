"""Shadow and canary rollouts on the real service: a challenger loaded beside the champion over the admin API,
both models' predictions in the inference log by request id, the canary's share and sticky keys, a failing
challenger (the client gets the champion's answer; the failure is logged), bad rollouts refused with the
champion untouched, and a restart that resumes the recorded rollout."""

from __future__ import annotations

import collections
import json
from typing import Any

import httpx
import onnx
import pytest
import sqlalchemy as sa

from tests.fixtures.serving import ADMIN_TOKEN, Service
from tests.serving.conftest import offline_predictions, records_of, save_model, wait_for

MODEL = "fraud_detector"
HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _rollout(service: Service, method: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(method, f"{service.url}/admin/models/{MODEL}/rollout", json=body, headers=HEADERS, timeout=60)


def _status(service: Service) -> dict[str, Any]:
    response = service.admin("GET")
    assert response.status_code == 200, response.text
    return response.json()


def _rows(url: str) -> list[dict[str, Any]]:
    """Every logged row, oldest first (none while the writer has not created the table yet)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT * FROM inference_log ORDER BY id")
            return [dict(row._mapping) for row in connection.execute(query)]
    except sa.exc.OperationalError:
        return []
    finally:
        engine.dispose()


def _metric(service: Service, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in service.metrics().items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    )


@pytest.fixture(scope="module")
def fixed_batch_model(config, stored_models) -> str:
    """fraud_detector v4: v2 exported with a batch dimension fixed at 1 (a real export mistake). It loads and
    passes the service's one-record check, and raises on every request of two or more records."""
    model = onnx.load_from_string(stored_models.onnx["2"])
    for graph_input in model.graph.input:
        graph_input.type.tensor_type.shape.dim[0].dim_value = 1
    return save_model(config, "4", model.SerializeToString())


def test_a_shadow_challenger_scores_every_request_off_the_path_and_a_restart_resumes_it(
    start_service, stored_models, config, splits, tmp_path
):
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=log_url)
    records = records_of(splits["test"].iloc[:40], config.dataset)

    started = _rollout(service, "POST", {"tag": "fraud_detector:v2", "mode": "shadow"})
    assert started.status_code == 200, started.text
    assert started.json()["rollout"] | {"started_at": "-"} == {
        "tag": "fraud_detector:v2",
        "model_version": "2",
        "mode": "shadow",
        "share": 0.0,
        "started_at": "-",
        "loaded": True,
    }
    assert json.loads(service.pointer().read_text())["rollout"]["tag"] == "fraud_detector:v2"
    second = _rollout(service, "POST", {"tag": "fraud_detector:v2", "mode": "canary", "share": 0.5})
    assert second.status_code == 409 and "a shadow rollout of fraud_detector:v2 is on since" in second.text

    answers = []
    for first in range(0, 40, 4):
        response = service.predict(records[first : first + 4])
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert {(a["model_version"], a["role"]) for a in answers} == {("1", "champion")}

    # Both models' predictions of every record, by request id: the champion's answered, the challenger's not.
    request_ids = {a["request_id"] for a in answers}
    wait_for(lambda: len(_rows(log_url)) >= 80, timeout=30, what="both models' rows")
    rows = [r for r in _rows(log_url) if r["request_id"] in request_ids]
    by_role = collections.defaultdict(list)
    for row in rows:
        by_role[(row["role"], row["model_version"], bool(row["served"]))].append(row)
    assert {key: len(found) for key, found in by_role.items()} == {
        ("champion", "1", True): 40,
        ("challenger", "2", False): 40,
    }
    assert all(r["error"] is None and r["latency_ms"] > 0 for r in rows)
    labels, _ = offline_predictions(stored_models.onnx["2"], splits["test"].iloc[:40], config.dataset)
    shadow = sorted(by_role[("challenger", "2", False)], key=lambda r: r["id"])
    assert [int(r["label"]) for r in shadow] == [int(label) for label in labels]
    # The inputs are kept once, in the answer's row; the shadow's row names the same record.
    answers = {(r["request_id"], r["record_index"]): r for r in by_role[("champion", "1", True)]}
    for row in shadow:
        answer = answers[(row["request_id"], row["record_index"])]
        assert json.loads(row["inputs"]) == {} and row["record_id"] == answer["record_id"] is not None
        assert json.loads(answer["inputs"])["amount"] is not None
    compared = _metric(service, "mlops_rollout_comparisons_total", model=MODEL, challenger_version="2")
    assert compared == 40
    assert _metric(service, "mlops_model_duration_seconds_count", role="challenger", model_version="2") == 10

    # A restart resumes the recorded rollout: the challenger scores the new requests too.
    service.process.stop()
    service = start_service(
        state_dir=service.state_dir, MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=log_url
    )
    assert _status(service)["rollout"]["tag"] == "fraud_detector:v2" and _status(service)["rollout"]["loaded"]
    after_restart = service.predict(records[:3]).json()
    wait_for(
        lambda: [r for r in _rows(log_url) if r["request_id"] == after_restart["request_id"]][5:],
        what="both models' rows after the restart",
    )

    # Promotion: switching to the challenger ends the rollout, and it answers.
    promoted = service.admin("POST", {"tag": "fraud_detector:v2"})
    assert promoted.status_code == 200, promoted.text
    status = _status(service)
    assert status["serving"]["tag"] == "fraud_detector:v2" and status["rollout"] is None
    assert json.loads(service.pointer().read_text())["rollout"] is None
    assert service.predict(records[:1]).json()["model_version"] == "2"


def test_a_canary_answers_its_share_by_sticky_key_and_a_failing_challenger_costs_no_answer(
    start_service, stored_models, fixed_batch_model, config, splits, tmp_path
):
    log_url = f"sqlite:///{tmp_path / 'log.db'}"
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_INFERENCE_LOG_URL=log_url)
    records = records_of(splits["test"].iloc[:200], config.dataset)

    # Refused, with the champion untouched and nothing recorded.
    refusals = {
        "share 0": ({"tag": "fraud_detector:v2", "mode": "canary", "share": 0}, 422, "above 0 and below 1"),
        "share 1.5": ({"tag": "fraud_detector:v2", "mode": "canary", "share": 1.5}, 422, "above 0 and below 1"),
        "no share": ({"tag": "fraud_detector:v2", "mode": "canary"}, 422, "above 0 and below 1"),
        "mode": ({"tag": "fraud_detector:v2", "mode": "blue_green"}, 422, "one of shadow, canary"),
        "broken challenger": ({"tag": "fraud_detector:v3", "mode": "shadow"}, 422, "onnxruntime cannot load"),
        "the champion": ({"tag": "fraud_detector:v1", "mode": "shadow"}, 422, "serves already, not a challenger"),
        "missing": ({"tag": "fraud_detector:v99", "mode": "shadow"}, 404, "not in the BentoML model store"),
        "another model": ({"tag": "amount_estimator:v1", "mode": "shadow"}, 422, "is not a model of fraud_detector"),
    }
    for what, (body, status, message) in refusals.items():
        refused = _rollout(service, "POST", body)
        assert refused.status_code == status and message in refused.text, (what, refused.text)
        assert _status(service)["rollout"] is None and _status(service)["serving"]["tag"] == "fraud_detector:v1"
    assert not service.pointer().exists()

    assert _rollout(service, "POST", {"tag": "fraud_detector:v2", "mode": "canary", "share": 0.3}).status_code == 200
    versions = {}
    for index, record in enumerate(records):
        key = f"customer-{index}"
        first = service.predict([record], headers={"X-Rollout-Key": key}).json()
        again = service.predict([record], headers={"X-Rollout-Key": key}).json()
        assert first["model_version"] == again["model_version"], key  # sticky
        assert first["role"] == {"1": "champion", "2": "challenger"}[first["model_version"]]
        versions[key] = first["model_version"]
    share = sum(v == "2" for v in versions.values()) / len(versions)
    assert 0.2 <= share <= 0.4, share
    # The champion scored the challenger's records off the path: the pairs the rollout check compares.
    answered = 2 * len(records)
    wait_for(lambda: sum(r["served"] for r in _rows(log_url)) >= answered, timeout=30, what="every answer logged")
    canary_ids = {r["request_id"] for r in _rows(log_url) if r["role"] == "challenger" and r["served"]}
    assert len(canary_ids) >= 0.2 * answered
    wait_for(
        lambda: {r["request_id"] for r in _rows(log_url) if r["role"] == "champion" and not r["served"]} >= canary_ids,
        what="the champion's scorings of the canary's requests",
    )

    ended = _rollout(service, "DELETE")
    assert ended.status_code == 200 and ended.json()["rollout"] is None
    assert {service.predict([r]).json()["model_version"] for r in records[:20]} == {"1"}
    assert _rollout(service, "DELETE").status_code == 200  # ending none is no error (a retried task)

    # A challenger that raises on every request of two records: each client still gets the champion's answer,
    # and the failure is in the log beside it.
    assert _rollout(service, "POST", {"tag": fixed_batch_model, "mode": "canary", "share": 0.99}).status_code == 200
    failed_ids = []
    for first in range(0, 40, 2):
        response = service.predict(records[first : first + 2], headers={"X-Rollout-Key": f"k{first}"})
        assert response.status_code == 200, response.text
        failed_ids.append(response.json()["request_id"])
    answers_v4 = {service.predict(records[:2]).json()["model_version"] for _ in range(5)}
    assert answers_v4 == {"1"}

    # The failed scoring's rows are queued before the champion's answer, so once every answer is logged so is
    # every failure. A key lands on the champion's side with a chance of 1 %: those requests have no failure.
    def answered() -> list[dict[str, Any]]:
        return [r for r in _rows(log_url) if r["request_id"] in set(failed_ids) and r["role"] == "champion"]

    wait_for(lambda: len(answered()) >= 40, timeout=60, what="every answer logged")
    assert all(r["served"] and r["label"] is not None for r in answered())
    errors = [r for r in _rows(log_url) if r["request_id"] in set(failed_ids) and r["role"] == "challenger"]
    failed_requests = collections.Counter(r["request_id"] for r in errors)
    assert len(failed_requests) >= 15 and set(failed_requests.values()) == {2}, failed_requests
    assert all(not r["served"] and r["label"] is None for r in errors)
    assert all("Got invalid dimensions" in r["error"] or "dimension" in r["error"] for r in errors), errors[0]
    failures = _metric(service, "mlops_scoring_errors_total", model=MODEL, model_version="4", role="challenger")
    assert failures >= len(failed_requests)
