"""The BentoML service that serves the pipeline's ONNX model, logs every prediction, and switches models live.

    bentoml serve include.serving.service:ModelService --host 127.0.0.1 --port 3000

Environment (read when the module is imported, i.e. in every worker):

    MLOPS_CONFIG             the pipeline config (a path, or a file name in include/config/; default
                             fraud_demo.yaml). The request schema is generated from its `dataset.features`.
    BENTOML_HOME             the BentoML model store models are loaded from (default ~/bentoml).
    MLOPS_MODEL_TAG          the model to serve at start, e.g. `fraud_detector:v3`, when there is no pointer.
    MLFLOW_TRACKING_URI      without a pointer or MLOPS_MODEL_TAG: serve `<model.registered_name>:v<version>`,
                             the version MLflow's `champion` alias points to.
    MLOPS_SERVING_STATE_DIR  where `current_model.json` (the pointer to the served model) is kept; it is
                             written atomically on every switch and read first at start, so a restarted service
                             serves what it served before (default $BENTOML_HOME/serving).
    MLOPS_ADMIN_TOKEN        the bearer token of the admin API; without it every admin call is refused (401).
    MLOPS_INFERENCE_LOG_URL  SQLAlchemy URL of the inference log database (SQLite locally, Postgres in compose);
                             unset, predictions are not logged. Table: include/mlops/monitoring.py.
    MLOPS_DRIFT_METRICS_SECONDS  how often the drift gauges are read from the drift history (default 30).
    MLOPS_MAX_RECORDS        most records per /predict request (default 1000).
    MLOPS_SERVING_WORKERS    worker processes (default 1; each runs onnxruntime on one thread).

The model to serve at start is, in this order: the pointer's, MLOPS_MODEL_TAG's, the MLflow champion. When
none loads, the service starts but is not ready (/readyz answers 503) until a model is switched to.

Endpoints (the OpenAPI document, generated from the config, is at /docs.json and browsable at /):

    POST /predict          {"records": [{<feature>: value, ...}, ...]} (1 to MLOPS_MAX_RECORDS records)
                           -> 200 {"model_name", "model_version", "request_id",
                                   "predictions": [{"label": 0, "probabilities": {"0": 0.98, "1": 0.02}}, ...]}
                              (regression: [{"value": 1.23}, ...]), one per record, in order.
    POST /predict_batched  {"records": [<one record>]} -> 200 [{"model_name", "model_version", "request_id",
                           "label", "probabilities"}] (or "value"). For clients that send one record per call:
                           BentoML's adaptive batching merges concurrent calls into one onnxruntime run;
                           a call it expects to wait over 1 s is shed with 503 (retry it).
    Bad input to either: 400 {"error": "records[3].amount: value is not a finite number", "problems": [...]}
    naming every problem by record index and field (at most 20), 413 beyond the body limit, 415 for non-JSON,
    503 while no model is loaded; logged as one line, never with a traceback (include/serving/gate.py).
    GET  /readyz /livez /healthz   readiness (200 once a model is loaded), liveness (always 200)
    GET  /metrics          BentoML's metrics, and mlops_predictions_total{model_version, predicted_class}
                           (regression: predicted_class="value"), mlops_inference_log_dropped_total,
                           mlops_model_switches_total{outcome} (switched, followed, not_found, rejected);
                           from drift_monitor's last check of each model version (with an inference log):
                           mlops_drift_share, mlops_drift_live_score{metric}, mlops_drift_retraining_requested,
                           mlops_drift_last_check_timestamp_seconds, all by model_version.
    GET  /admin/model      (Authorization: Bearer $MLOPS_ADMIN_TOKEN) -> {"tag", "model_name", "model_version",
                           "labels" (the lineage labels of the model store entry), "loaded_at"}
    POST /admin/model      {"tag": "fraud_detector:v4"} -> {"tag", "model_version", "previous_tag"}; 401 without
                           the token, 404 for a tag not in the store, 422 (naming why) for a model that does not
                           load, does not fit the config, or fails on a sample record; the old model keeps serving.

Rollouts: a switch builds the new onnxruntime session beside the old one, checks it, writes the pointer and
then swaps one reference, so requests in flight finish on the old model and none fails. The switch happens in
the worker that received the call; every other worker checks the pointer's mtime once a second in a background
thread and switches to what it names (include/serving/rollout.py).
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import hmac
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import ServiceUnavailable
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from include.mlops.config import load_config
from include.mlops.deployment import model_store_tag
from include.serving import gate, schema
from include.serving.drift_metrics import DriftMetrics
from include.serving.inference_log import InferenceLog, LoggedRequest
from include.serving.models import ModelNotFound, ModelRejected, ServedModel, load_model
from include.serving.rollout import ModelPointer, champion_version

logger = logging.getLogger(__name__)
# BentoML's worker logging leaves the root at WARNING; switches and refused requests are worth an INFO line.
logging.getLogger("include.serving").setLevel(logging.INFO)

POINTER_CHECK_SECONDS = 1.0
# Room for 4 KiB per record (long unknown categories included) and the envelope.
_BODY_BYTES_PER_RECORD = 4096
_BODY_BYTES_BASE = 65536


@dataclass(frozen=True)
class Settings:
    max_records: int
    workers: int
    state_dir: Path
    model_tag: str | None
    tracking_uri: str | None
    admin_token: str | None
    inference_log_url: str | None
    drift_metrics_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        bentoml_home = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        return cls(
            max_records=int(env.get("MLOPS_MAX_RECORDS") or 1000),
            workers=int(env.get("MLOPS_SERVING_WORKERS") or 1),
            state_dir=Path(env.get("MLOPS_SERVING_STATE_DIR") or bentoml_home / "serving"),
            model_tag=env.get("MLOPS_MODEL_TAG") or None,
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            admin_token=env.get("MLOPS_ADMIN_TOKEN") or None,
            inference_log_url=env.get("MLOPS_INFERENCE_LOG_URL") or None,
            drift_metrics_seconds=float(env.get("MLOPS_DRIFT_METRICS_SECONDS") or 30),
        )


CONFIG = load_config()
SETTINGS = Settings.from_env(os.environ)
Record = schema.record_model(CONFIG.dataset)


class _GatedInput(bentoml.IODescriptor):
    """A request body that the gate has validated already (see include/serving/gate.py)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request, serde):
        body = gate.validated(request.scope)
        return body if isinstance(body, cls) else await super().from_http_request(request, serde)


PredictRequest = schema.request_model(Record, SETTINGS.max_records, _GatedInput, "PredictRequest")
BatchedRequest = schema.request_model(Record, 1, _GatedInput, "BatchedRequest")
PredictResponse, BatchedPrediction = schema.response_models(CONFIG.dataset.task)


@dataclass(frozen=True)
class Metrics:
    predictions: Any
    inference_log_dropped: Any
    model_switches: Any

    @classmethod
    def create(cls) -> Metrics:
        # Made in the worker, where BentoML has set PROMETHEUS_MULTIPROC_DIR: the counters of all workers then
        # add up on /metrics.
        from prometheus_client import Counter

        return cls(
            Counter("mlops_predictions", "Predictions served", ["model_version", "predicted_class"]),
            Counter("mlops_inference_log_dropped", "Predictions not written to the inference log"),
            Counter("mlops_model_switches", "Model switches by outcome", ["outcome"]),
        )


class ModelInfo(BaseModel):
    tag: str
    model_name: str
    model_version: str
    labels: dict[str, str] = Field(description="the lineage labels of the model store entry")
    loaded_at: dt.datetime


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="a model in the BentoML model store", examples=["fraud_detector:v4"])


class SwitchResult(BaseModel):
    tag: str
    model_version: str
    previous_tag: str | None


admin = FastAPI(title="Model admin", description="Which model is served, and switching it (bearer token).")
_bearer = HTTPBearer(auto_error=False, description="MLOPS_ADMIN_TOKEN")


def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    given = credentials.credentials.encode() if credentials else b""
    expected = (SETTINGS.admin_token or "").encode()
    # compare_digest takes as long whatever matches, so the token cannot be guessed byte by byte from timings.
    if not expected or not hmac.compare_digest(given, expected):
        raise HTTPException(401, "a valid admin bearer token is required", headers={"WWW-Authenticate": "Bearer"})


# Per-request costs that buy nothing by default, measured on a one-record prediction (benchmarks/serving.py):
# OpenTelemetry spans, which go nowhere unless BENTOML_CONFIG configures a tracing exporter (~40 % of the CPU),
# and an access log line, which the inference log, BentoML's request metrics and the gate's "refused" lines
# already cover (~15 %). A BENTOML_CONFIG that sets `tracing` or `logging.access` for the service wins.
PREDICTION_ROUTES = {"/predict": PredictRequest, "/predict_batched": BatchedRequest}
SERVICE_CONFIG = {
    "workers": SETTINGS.workers,
    "traffic": {"timeout": 60},
    "tracing": {"excluded_urls": list(PREDICTION_ROUTES)},
    "logging": {"access": {"enabled": False}},
}


@bentoml.asgi_app(admin, path="/admin")
@bentoml.service(name="mlops_serving", **SERVICE_CONFIG)
class ModelService:
    """Predictions of the pipeline's model (the MLflow champion, as an ONNX model from the BentoML store)."""

    def __init__(self) -> None:
        _end_with_the_arbiter()
        self.metrics = Metrics.create()
        self.pointer = ModelPointer(SETTINGS.state_dir)
        self._switch_lock = threading.Lock()
        self._pointer_mtime = self.pointer.mtime_ns()
        self.served: ServedModel | None = self._startup_model()
        self.log = (
            InferenceLog(SETTINGS.inference_log_url, CONFIG.dataset.id_column, self.metrics.inference_log_dropped.inc)
            if SETTINGS.inference_log_url
            else None
        )
        if self.log:
            self.log.start()
        self._stopping = threading.Event()
        if SETTINGS.inference_log_url:
            drift = DriftMetrics(SETTINGS.inference_log_url, CONFIG.model.registered_name, CONFIG.model.primary_metric)
            follow = functools.partial(drift.follow, self._stopping, SETTINGS.drift_metrics_seconds)
            threading.Thread(target=follow, name="drift-metrics", daemon=True).start()
        threading.Thread(target=self._follow_pointer, name="model-pointer", daemon=True).start()

    async def __is_ready__(self) -> bool:
        return self.served is not None

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=PredictResponse)
    async def predict(self, records: list[BaseModel]) -> BaseModel:
        """Predict each record; the answer names the model version that did, and the request id it is logged by."""
        served = self._serving()
        request_id = uuid.uuid4().hex
        predictions = served.predict(schema.feeds(records, CONFIG.dataset))
        self._account(served, request_id, records, predictions)
        return PredictResponse(
            model_name=served.name, model_version=served.version, request_id=request_id, predictions=predictions
        )

    @bentoml.api(
        route="/predict_batched",
        input_spec=BatchedRequest,
        batchable=True,
        max_batch_size=64,
        # BentoML's dispatcher answers 503 for a call it expects to wait longer than this (load shedding); at
        # 200 ms a one-core server shed ~0.3 % of calls at concurrency 8-32 (benchmarks/serving.py).
        max_latency_ms=1000,
    )
    async def predict_batched(self, records: list[BaseModel]) -> list[BatchedPrediction]:
        """Predict one record per call; concurrent calls are merged into one model run (adaptive batching)."""
        served = self._serving()
        predictions = served.predict(schema.feeds(records, CONFIG.dataset))
        answers = []
        for record, prediction in zip(records, predictions, strict=True):
            request_id = uuid.uuid4().hex
            self._account(served, request_id, [record], [prediction])
            answers.append(
                BatchedPrediction(
                    model_name=served.name, model_version=served.version, request_id=request_id, **prediction
                )
            )
        return answers

    @admin.get("/model", dependencies=[Depends(require_admin)], responses={404: {"description": "no model yet"}})
    def served_model(self) -> ModelInfo:
        """The model being served, with the lineage labels of its model store entry."""
        served = self.served
        if served is None:
            raise HTTPException(404, "no model is loaded yet")
        return ModelInfo(
            tag=served.tag,
            model_name=served.name,
            model_version=served.version,
            labels=dict(served.labels),
            loaded_at=served.loaded_at,
        )

    @admin.post(
        "/model",
        dependencies=[Depends(require_admin)],
        responses={404: {"description": "not in the model store"}, 422: {"description": "the model cannot serve"}},
    )
    def switch_model(self, body: SwitchRequest) -> SwitchResult:
        """Load the model `tag` from the store, check it, and switch every worker to it without downtime."""
        try:
            return self.switch(body.tag)
        except ModelNotFound as exc:
            self.metrics.model_switches.labels("not_found").inc()
            raise HTTPException(404, str(exc)) from None
        except ModelRejected as exc:
            self.metrics.model_switches.labels("rejected").inc()
            raise HTTPException(422, str(exc)) from None

    def switch(self, tag: str) -> SwitchResult:
        """Load and check `tag` beside the served model, point every worker at it, then swap."""
        with self._switch_lock, self.pointer.switching():
            previous = self.served.tag if self.served else None
            served = load_model(tag, CONFIG, Record)
            self.pointer.write(served.tag, previous)
            self._pointer_mtime = self.pointer.mtime_ns()
            self.served = served
        self.metrics.model_switches.labels("switched").inc()
        logger.info("switched from %s to %s", previous, served.tag)
        return SwitchResult(tag=served.tag, model_version=served.version, previous_tag=previous)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stopping.set()
        if self.log:
            self.log.stop()

    def _serving(self) -> ServedModel:
        # The gate answers 503 before a model is loaded; this guards calls that do not pass it.
        if self.served is None:
            raise ServiceUnavailable("no model is loaded yet")
        return self.served

    def _account(
        self, served: ServedModel, request_id: str, records: list[BaseModel], predictions: list[dict[str, Any]]
    ) -> None:
        classes = collections.Counter(str(p.get("label", "value")) for p in predictions)
        for predicted_class, count in classes.items():
            self.metrics.predictions.labels(served.version, predicted_class).inc(count)
        if self.log:
            self.log.submit(
                LoggedRequest(request_id, served.name, served.version, dt.datetime.now(dt.UTC), records, predictions)
            )

    def _startup_model(self) -> ServedModel | None:
        for source, tag in self._startup_tags():
            try:
                served = load_model(tag, CONFIG, Record)
            except (ModelNotFound, ModelRejected) as exc:
                logger.warning("cannot serve %s (from %s): %s", tag, source, exc)
                continue
            logger.info("serving %s (from %s)", served.tag, source)
            return served
        logger.warning("no model to serve: not ready until one is switched to with POST /admin/model")
        return None

    def _startup_tags(self) -> Iterator[tuple[str, str]]:
        if tag := self.pointer.read():
            yield str(self.pointer.path), tag
        if SETTINGS.model_tag:
            yield "MLOPS_MODEL_TAG", SETTINGS.model_tag
        # Asked only when nothing before it loads: importing and asking MLflow costs seconds.
        if SETTINGS.tracking_uri and (version := champion_version(SETTINGS.tracking_uri, CONFIG.model.registered_name)):
            yield "the MLflow champion", model_store_tag(CONFIG, version)

    def _follow_pointer(self) -> None:
        """Switch to the model another worker switched to: the pointer's mtime is checked once a second."""
        while not self._stopping.wait(POINTER_CHECK_SECONDS):
            try:
                self._check_pointer()
            except Exception:  # a bad moment (a full disk, a vanished folder) must not end the watching
                logger.exception("checking the model pointer failed; checking again in a second")

    def _check_pointer(self) -> None:
        if self.pointer.mtime_ns() == self._pointer_mtime:
            return
        with self._switch_lock, self.pointer.switching():
            self._pointer_mtime = self.pointer.mtime_ns()
            tag = self.pointer.read()
            current = self.served.tag if self.served else None
            if tag is None or tag == current:
                return
            try:
                self.served = load_model(tag, CONFIG, Record)
            except (ModelNotFound, ModelRejected) as exc:
                logger.error("the pointer names %s, which cannot be served; still serving %s: %s", tag, current, exc)
                return
        self.metrics.model_switches.labels("followed").inc()
        logger.info("followed the pointer from %s to %s", current, tag)


def _end_with_the_arbiter() -> None:
    """Have this worker sent SIGTERM when the process that started it (BentoML's arbiter) dies.

    Workers run in sessions of their own and hold the listening socket: after a crash of the arbiter (an OOM
    kill, say) an orphaned worker would keep the port, so a restarted service could not bind it, and would keep
    answering with whatever model it had.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    arbiter = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != arbiter:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _model_loaded() -> bool:
    return bentoml.get_current_service().served is not None


ModelService.add_asgi_middleware(
    gate.RequestGate,
    routes=PREDICTION_ROUTES,
    max_body_bytes=_BODY_BYTES_BASE + _BODY_BYTES_PER_RECORD * SETTINGS.max_records,
    ready=_model_loaded,
)
