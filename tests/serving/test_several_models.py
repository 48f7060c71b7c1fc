"""One service, several models: a route per model typed by its own schema, readiness, metrics and the inference
log per model, and one model switched under load while the others answer on, untouched.

The service serves four configs: the demo (fraud_detector), a regression on the demo's data
(amount_estimator), the shipped breast cancer config (breast_cancer_classifier), and a model with nothing in
the store yet (waiting_model).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from include.demo_sources import breast_cancer
from include.mlops import monitoring, packaging, training
from include.mlops.config import CONFIG_DIR, PipelineConfig, load_config
from include.mlops.datasets import split_rows
from tests.fixtures.serving import DEMO_CONFIG, InProcessService, Service, in_process_service, service_launcher
from tests.serving.conftest import offline_predictions, records_of, save_model, wait_for
from tests.serving.test_regression import _regression_config

BREAST_CANCER = "breast_cancer_classifier"


@dataclass(frozen=True)
class Model:
    config: PipelineConfig
    onnx: dict[str, bytes]  # by version
    test: pd.DataFrame


def _fitted(config: PipelineConfig, train: pd.DataFrame, *specs: training.CandidateSpec) -> dict[str, bytes]:
    """ONNX models of `specs` fitted on `train`, saved to the store as versions 1, 2, ..."""
    models = {}
    for version, spec in enumerate(specs, start=1):
        models[str(version)] = packaging.to_onnx(
            training.fit(training.build_pipeline(config, spec), config, train), config
        )
        save_model(config, str(version), models[str(version)])
    return models


def _waiting_config(folder: Path) -> Path:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    raw["model"]["registered_name"], raw["dataset"]["name"] = "waiting_model", "waiting_data"
    path = folder / "waiting.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def models(stored_models, config, splits, tmp_path_factory) -> dict[str, Model]:
    folder = tmp_path_factory.mktemp("configs")
    regression_path, regression = _regression_config(folder)
    cancer = load_config(CONFIG_DIR / "breast_cancer.yaml")
    rows = breast_cancer.samples().assign(event_time=pd.Timestamp("2026-03-01", tz="UTC"))
    cancer_splits = split_rows(rows, cancer.dataset, cancer.split)
    return {
        "fraud_detector": Model(config, stored_models.onnx, splits["test"]),
        "amount_estimator": Model(
            regression,
            _fitted(
                regression, splits["train"], training.CandidateSpec("gb", "GradientBoosting", {"n_estimators": 20})
            ),
            splits["test"],
        ),
        BREAST_CANCER: Model(
            cancer,
            _fitted(
                cancer,
                cancer_splits["train"],
                training.CandidateSpec("lr", "LogisticRegression", {"max_iter": 5000}),
                training.CandidateSpec("gb", "GradientBoosting", {"n_estimators": 20, "max_depth": 2}),
            ),
            cancer_splits["test"],
        ),
        "waiting_model": Model(load_config(_waiting_config(folder)), {}, splits["test"]),
    }


@pytest.fixture(scope="module")
def service(models, tmp_path_factory) -> Iterator[Service]:
    """Four models, v1 of each of the three that have one; two workers, so that switches are followed."""
    database = tmp_path_factory.mktemp("inference-log") / "log.db"
    paths = (DEMO_CONFIG, Path(models["amount_estimator"].config.path), CONFIG_DIR / "breast_cancer.yaml")
    with service_launcher(tmp_path_factory) as start:
        yield start(
            configs=(*paths, Path(models["waiting_model"].config.path)),
            MLOPS_MODEL_TAG=",".join(f"{name}:v1" for name, m in models.items() if m.onnx),
            MLOPS_INFERENCE_LOG_URL=f"sqlite:///{database}",
            MLOPS_SERVING_WORKERS="2",
        )


@pytest.fixture(scope="module")
def in_process_models(models, tmp_path_factory) -> Iterator[InProcessService]:
    """The same four models, in a service made by `create_service` in this process."""
    paths = (DEMO_CONFIG, Path(models["amount_estimator"].config.path), CONFIG_DIR / "breast_cancer.yaml")
    with in_process_service(
        tmp_path_factory,
        configs=(*paths, Path(models["waiting_model"].config.path)),
        model_tags=tuple(f"{name}:v1" for name, m in models.items() if m.onnx),
    ) as service:
        yield service


def _records(model: Model, rows: int) -> list[dict[str, Any]]:
    return records_of(model.test.iloc[:rows], model.config.dataset)


def _served(model: Model, predictions: list[dict[str, Any]], version: str, rows: int) -> None:
    """`predictions` are what `version` of `model` predicts offline for its first `rows` test rows."""
    offline = offline_predictions(model.onnx[version], model.test.iloc[:rows], model.config.dataset)
    if model.config.dataset.task == "regression":
        assert [p["value"] for p in predictions] == offline[0].reshape(-1).astype(np.float64).tolist()
    else:
        assert [p["label"] for p in predictions] == offline[0].tolist()
        served = [[p["probabilities"][k] for k in sorted(p["probabilities"])] for p in predictions]
        assert np.array_equal(np.array(served), offline[1].astype(np.float64))


def test_each_model_answers_on_its_own_route_with_its_own_model(in_process_models, models):
    for name, model in models.items():
        if not model.onnx:
            continue
        response = in_process_models.predict(_records(model, 50), model=name)
        assert response.status_code == 200, (name, response.text)
        answer = response.json()
        assert (answer["model_name"], answer["model_version"]) == (name, "1")
        _served(model, answer["predictions"], "1", 50)
        (batched,) = in_process_models.client.post(
            f"/models/{name}/predict_batched", json={"records": _records(model, 1)}
        ).json()
        assert batched["model_name"] == name
    # The short routes belong to a deployment of one model only.
    assert in_process_models.predict(_records(models["fraud_detector"], 1)).status_code == 404


def test_the_openapi_document_types_each_route_by_its_model(in_process_models, models):
    document = in_process_models.client.get("/docs.json").json()
    schemas = document["components"]["schemas"]
    for name, record in [("fraud_detector", "RecordFraudDetector"), (BREAST_CANCER, "RecordBreastCancerClassifier")]:
        assert f"/models/{name}/predict" in document["paths"]
        features = {f.name for f in models[name].config.dataset.features}
        assert features <= set(schemas[record]["properties"]), name
    assert "mean_radius" not in schemas["RecordFraudDetector"]["properties"]


def test_an_unknown_model_is_404_naming_the_models_there_are(in_process_models):
    for path in ("/models/nope/predict", "/models/nope/predict_batched", "/models/nope/readyz"):
        response = in_process_models.client.post(path, json={"records": [{}]})
        assert response.status_code == 404, response.text
        known = "amount_estimator, breast_cancer_classifier, fraud_detector, waiting_model"
        assert response.json()["error"] == f"no model 'nope' on this service; its models are: {known}"


def test_a_record_of_one_model_sent_to_another_is_422_naming_the_fields(in_process_models, models):
    cancer_record = _records(models[BREAST_CANCER], 1)
    response = in_process_models.predict(cancer_record, model="fraud_detector")
    assert response.status_code == 422, response.text
    problems = response.json()["problems"]
    # The fraud model's ten features are missing; the first of the cancer record's thirty follow, then a count.
    assert problems[:2] == ["records[0].amount: field is missing", "records[0].merchant_category: field is missing"]
    assert "records[0].mean_radius: unknown field" in problems
    assert problems[-1] == "... and 21 more problem(s)"
    fraud_record = _records(models["fraud_detector"], 1)
    assert in_process_models.predict(fraud_record, model=BREAST_CANCER).json()["problems"][0] == (
        "records[0].mean_radius: field is missing"
    )


def test_readiness_is_per_model(in_process_models, models):
    for name in ("fraud_detector", "amount_estimator", BREAST_CANCER):
        assert in_process_models.client.get(f"/models/{name}/readyz").json() == {"model": name, "ready": True}
    waiting = in_process_models.client.get("/models/waiting_model/readyz")
    assert waiting.status_code == 503 and waiting.json() == {"model": "waiting_model", "ready": False}
    refused = in_process_models.predict(_records(models["fraud_detector"], 1), model="waiting_model")
    assert refused.status_code == 503 and "waiting_model has no model loaded yet" in refused.text
    # The service as a whole is ready: it answers for the models it has.
    assert in_process_models.client.get("/readyz").status_code == 200
    listed = {s["model"]: s["serving"] for s in in_process_models.admin_list()}
    assert listed["waiting_model"] is None and listed[BREAST_CANCER]["tag"] == f"{BREAST_CANCER}:v1"


def test_metrics_and_the_inference_log_are_kept_by_model(service, models):
    def predictions_of(model: str) -> float:
        return sum(
            value
            for (name, labels), value in service.metrics().items()
            if name == "mlops_predictions_total" and dict(labels)["model"] == model
        )

    before = {name: predictions_of(name) for name in models}
    sent = {"fraud_detector": 7, "amount_estimator": 3, BREAST_CANCER: 5}
    started = dt.datetime.now(dt.UTC)
    for name, rows in sent.items():
        assert service.predict(_records(models[name], rows), model=name).status_code == 200
    assert {name: predictions_of(name) - before[name] for name in sent} == sent
    routes = {dict(labels).get("endpoint") for (name, labels), _ in service.metrics().items()}
    assert f"/models/{BREAST_CANCER}/predict" in routes  # BentoML's request metrics are by route: by model

    engine = sa.create_engine(service.env["MLOPS_INFERENCE_LOG_URL"])
    end = started + dt.timedelta(minutes=5)

    def logged(name: str) -> int:
        return monitoring.count_logged(engine, name, started, end)

    wait_for(lambda: all(logged(name) >= rows for name, rows in sent.items()), what="every model's log rows")
    window = monitoring.read_live_window(engine, BREAST_CANCER, started, end, models[BREAST_CANCER].config.dataset)
    assert len(window.frame) >= 5 and window.malformed == 0
    assert set(window.frame["model_version"]) == {"1"} and "mean_radius" in window.frame
    assert logged("waiting_model") == 0
    # Nothing dropped, and said so for every model (a series at 0, not a missing one).
    dropped = {
        dict(labels)["model"]: value
        for (name, labels), value in service.metrics().items()
        if name == "mlops_inference_log_dropped_total"
    }
    assert dropped == dict.fromkeys(models, 0.0)


@dataclass
class Load:
    model: str
    versions: Counter
    failed: list[str]


def _hammer(url: str, model: str, records: list[dict], stop: threading.Event, load: Load) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.is_set():
            try:
                response = client.post(f"/models/{model}/predict", json={"records": records})
            except httpx.HTTPError as exc:
                load.failed.append(repr(exc))
                continue
            if response.status_code != 200:
                load.failed.append(f"{response.status_code} {response.text[:200]}")
            else:
                load.versions[response.json()["model_version"]] += 1


@pytest.mark.slow
def test_switching_one_model_under_load_leaves_the_others_untouched(service, models):
    """Breast cancer is switched v1 -> v2 -> v1 -> v2 while clients load every model's route: no request of any
    model fails, the others answer with their v1 throughout, and every worker ends on breast cancer's v2."""
    loads = {name: Load(name, Counter(), []) for name in ("fraud_detector", "amount_estimator", BREAST_CANCER)}
    stop = threading.Event()
    clients = [
        threading.Thread(target=_hammer, args=(service.url, name, _records(models[name], 1), stop, load))
        for name, load in loads.items()
        for _ in range(2)
    ]
    for client in clients:
        client.start()
    try:
        for version in ("2", "1", "2"):
            stop.wait(2.0)
            switched = service.admin("POST", {"tag": f"{BREAST_CANCER}:v{version}"}, model=BREAST_CANCER)
            assert switched.status_code == 200, switched.text
        stop.wait(3.0)
    finally:
        stop.set()
        for client in clients:
            client.join()

    for name, load in loads.items():
        assert not load.failed, f"{name}: {len(load.failed)} failed, e.g. {load.failed[:3]}"
        assert sum(load.versions.values()) > 50, (name, load.versions)
    assert set(loads["fraud_detector"].versions) == {"1"} and set(loads["amount_estimator"].versions) == {"1"}
    assert set(loads[BREAST_CANCER].versions) == {"1", "2"}
    # Every worker followed: new connections land on either worker, and all answer with v2.
    for _ in range(20):
        answer = service.predict(_records(models[BREAST_CANCER], 3), model=BREAST_CANCER).json()
        assert answer["model_version"] == "2"
        _served(models[BREAST_CANCER], answer["predictions"], "2", 3)
    assert service.serving("fraud_detector")["tag"] == "fraud_detector:v1"
    assert not service.pointer("fraud_detector").exists()  # never switched: nothing written for it
    assert "Traceback" not in service.log()
