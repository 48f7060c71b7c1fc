"""Which model a route serves: at start (pointer, MLOPS_MODEL_TAG, MLflow champion), and switched over the admin
API, with no failed request while several workers switch under load."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
import yaml

from devstack.processes import free_port
from include.mlops import deployment
from include.mlops.config import CONFIG_DIR, load_config
from tests.fixtures.serving import ADMIN_TOKEN, Service
from tests.serving.conftest import records_of, save_model, wait_for


def _version(service: Service, record) -> str:
    response = service.predict([record])
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def _switches(service: Service) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in service.metrics().items()
        if name == "mlops_model_switches_total" and dict(labels)["model"] == "fraud_detector"
    }


def test_unknown_tags_and_broken_models_are_refused_and_the_old_model_keeps_serving(in_process, config, splits):
    (record,) = records_of(splits["test"].iloc[:1], config.dataset)

    def switches(outcome: str) -> float:
        return in_process.metric("mlops_model_switches_total", model="fraud_detector", outcome=outcome)

    before = {outcome: switches(outcome) for outcome in ("not_found", "rejected")}

    missing = in_process.admin("POST", {"tag": "fraud_detector:v99"})
    assert missing.status_code == 404 and "fraud_detector:v99 is not in the BentoML model store" in missing.text
    broken = in_process.admin("POST", {"tag": "fraud_detector:v3"})
    assert broken.status_code == 422 and "onnxruntime cannot load model.onnx" in broken.json()["detail"]
    malformed = in_process.admin("POST", {"tag": "fraud_detector:not a version!"})
    assert malformed.status_code == 422 and "not a valid BentoML tag" in malformed.json()["detail"]
    another = in_process.admin("POST", {"tag": "amount_estimator:v1"})
    assert another.status_code == 422 and "is not a model of fraud_detector" in another.json()["detail"]
    assert in_process.admin("POST", {"model": "fraud_detector:v2"}).status_code == 422
    unknown = in_process.admin("POST", {"tag": "nope:v1"}, model="nope")
    assert unknown.status_code == 404 and "no model 'nope' on this service" in unknown.json()["detail"]

    assert in_process.predict([record]).json()["model_version"] == "1"
    assert in_process.admin("GET").json()["serving"]["tag"] == "fraud_detector:v1"
    assert not (in_process.settings.state_dir / "models" / "fraud_detector.json").exists()
    assert switches("not_found") - before["not_found"] == 1
    assert switches("rejected") - before["rejected"] == 3


def test_not_ready_without_a_model_then_switched_and_restarted_on_the_pointer(start_service, config, splits):
    (record,) = records_of(splits["test"].iloc[:1], config.dataset)
    service = start_service(expect_model=False)
    assert httpx.get(f"{service.url}/readyz").status_code == 503
    assert httpx.get(f"{service.url}/livez").status_code == 200
    refused = service.predict([record])
    assert refused.status_code == 503 and "fraud_detector has no model loaded yet" in refused.json()["error"]
    assert httpx.get(f"{service.url}/models/fraud_detector/readyz").status_code == 503
    assert service.serving() is None
    # Refusals are exposed at 0 from the start: an alert on their increase sees the first one.
    assert _switches(service) == {"not_found": 0, "rejected": 0}

    switched = service.admin("POST", {"tag": "fraud_detector:v2"})
    assert switched.json() == {"tag": "fraud_detector:v2", "model_version": "2", "previous_tag": None}
    assert httpx.get(f"{service.url}/readyz").status_code == 200
    assert httpx.get(f"{service.url}/models/fraud_detector/readyz").status_code == 200
    assert _version(service, record) == "2"
    served = service.serving()
    assert served["labels"]["mlflow_version"] == "2" and served["labels"]["lakefs_commit"] == "c" * 64

    back = service.admin("POST", {"tag": "fraud_detector:v1"}).json()
    assert back == {"tag": "fraud_detector:v1", "model_version": "1", "previous_tag": "fraud_detector:v2"}
    pointer = json.loads(service.pointer().read_text())
    assert (pointer["tag"], pointer["previous_tag"]) == ("fraud_detector:v1", "fraud_detector:v2")
    assert not [p for p in service.pointer().parent.iterdir() if p.name.startswith(".")], "temporary files"
    assert "Traceback" not in service.log()

    service.process.stop()
    # The pointer wins over MLOPS_MODEL_TAG: a restarted service serves what it served before.
    restarted = start_service(state_dir=service.state_dir, MLOPS_MODEL_TAG="fraud_detector:v2")
    assert _version(restarted, record) == "1"


@dataclass(frozen=True)
class Answer:
    sent: float
    received: float
    status: int
    version: str | None


def _load(url: str, record, stop: threading.Event, answers: list[Answer]) -> None:
    """One client sending predictions back to back until `stop`; every outcome is kept, errors too."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.post("/predict", json={"records": [record]})
                version = response.json().get("model_version") if response.status_code == 200 else None
                answers.append(Answer(sent, time.monotonic(), response.status_code, version))
            except httpx.HTTPError as exc:
                answers.append(Answer(sent, time.monotonic(), 0, repr(exc)))


SWITCH_EVERY = 6.0
# How long every worker may take to follow a switch; the rest of SWITCH_EVERY is the window checked.
FOLLOW_SECONDS = 3.0


@pytest.mark.slow
def test_switching_under_load_fails_no_request_and_every_worker_follows(start_service, config, splits):
    (record,) = records_of(splits["test"].iloc[:1], config.dataset)
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1", MLOPS_SERVING_WORKERS="2")
    answers: list[Answer] = []
    stop = threading.Event()
    clients = [threading.Thread(target=_load, args=(service.url, record, stop, answers)) for _ in range(6)]
    for client in clients:
        client.start()
    # (the version switched to, when the switch was asked for, when it was answered)
    switches = [("1", 0.0, time.monotonic())]
    try:
        for version in ("2", "1", "2"):
            time.sleep(SWITCH_EVERY)
            asked = time.monotonic()
            response = service.admin("POST", {"tag": f"fraud_detector:v{version}"})
            assert response.status_code == 200, response.text
            switches.append((version, asked, time.monotonic()))
        time.sleep(SWITCH_EVERY)
    finally:
        stopped = time.monotonic()
        stop.set()
        for client in clients:
            client.join()

    failed = [a for a in answers if a.status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed, e.g. {failed[:3]}"
    assert len(answers) > 500
    # Between two switches, once every worker has had time to follow (its one-second pointer check and a model
    # load, slow on a busy 2-core machine), every answer comes from the model switched to, up to the next switch.
    ends = [asked for _, asked, _ in switches[1:]] + [stopped]
    for (version, _, done), until in zip(switches, ends, strict=True):
        settled = {a.version for a in answers if done + FOLLOW_SECONDS < a.sent and a.received < until}
        assert settled == {version}, (version, settled, until - done)
    # Every worker ended on the last model: new connections land on either worker.
    for _ in range(30):
        assert httpx.post(f"{service.url}/predict", json={"records": [record]}).json()["model_version"] == "2"
    outcomes = _switches(service)
    assert outcomes["switched"] == 3 and outcomes["followed"] == 3, outcomes
    assert "Traceback" not in service.log()


def test_the_champion_in_mlflow_is_served_when_nothing_else_names_a_model(
    start_service, stored_models, mlflow_server, tmp_path
):
    from mlflow import MlflowClient

    # A registered model of the test's own, so no other test's champion is in the way.
    name = f"fraud_{uuid.uuid4().hex[:8]}"
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"]["registered_name"] = name
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(str(config_path))
    save_model(config, "2", stored_models.onnx["2"])
    client = MlflowClient(mlflow_server.url)
    client.create_registered_model(name)
    for _ in range(2):
        client.create_model_version(name, source="s3://mlops-test/model")
    client.set_registered_model_alias(name, "champion", "2")

    service = start_service(configs=(config_path,), MLFLOW_TRACKING_URI=mlflow_server.url)
    served = service.serving(name)
    assert (served["tag"], served["model_version"]) == (f"{name}:v2", "2")


def test_without_a_champion_the_service_waits_not_ready(start_service):
    # Nothing listens at this tracking URI: MLflow does not answer, and the service starts anyway.
    service = start_service(expect_model=False, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert httpx.get(f"{service.url}/readyz").status_code == 503
    wait_for(lambda: "no model to serve" in service.log(), what="the log to say why")


def test_a_rollout_whose_smoke_test_fails_puts_the_previous_model_back(start_service, stored_models, config, splits):
    """deployment.roll_out against the real service: v2 is switched to, answers unlike the offline predictions
    it is checked against (v1's), and v1 serves again; a model the service refuses changes nothing."""
    frame = splits["test"].iloc[:50]
    records = deployment.records_of(frame, config.dataset)
    service = start_service(MLOPS_MODEL_TAG="fraud_detector:v1")
    endpoint = deployment.ServingEndpoint(service.url, ADMIN_TOKEN, "fraud_detector")
    v1_offline = deployment.offline_predictions(stored_models.onnx["1"], config, frame)
    v2_offline = deployment.offline_predictions(stored_models.onnx["2"], config, frame)

    with pytest.raises(deployment.DeploymentError, match=r"smoke test: record \d+ got .* fraud_detector:v1 again"):
        deployment.roll_out(endpoint, "fraud_detector:v2", records, v1_offline)
    assert endpoint.current_model()["tag"] == "fraud_detector:v1"
    with pytest.raises(deployment.DeploymentError, match="answered 422.*onnxruntime cannot load"):
        deployment.roll_out(endpoint, "fraud_detector:v3", records, v1_offline)
    assert endpoint.predict(records[:1])["model_version"] == "1"

    assert deployment.roll_out(endpoint, "fraud_detector:v2", records, v2_offline) == "fraud_detector:v1"
    assert endpoint.current_model()["tag"] == "fraud_detector:v2"
    with pytest.raises(deployment.ServiceUnreachable, match="cannot be reached"):
        deployment.roll_out(deployment.ServingEndpoint(f"http://127.0.0.1:{free_port()}", "x", "a"), "a:v1", [], [])
