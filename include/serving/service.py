"""The BentoML service that serves every model of the config folder, logs every prediction, and switches each
model live, without touching the others.

    bentoml serve include.serving.service:ModelService --host 127.0.0.1 --port 3000

Environment (read when the module is imported, i.e. in every worker):

    MLOPS_CONFIG_DIR         the pipeline configs, one model per `*.yaml` (default include/config/), as Airflow
                             reads them. Each model's request schema is generated from its `dataset.features`.
                             A file that does not load (or names the model or dataset of another) is left out,
                             with the reason logged; the others are served.
    BENTOML_HOME             the BentoML model store models are loaded from (default ~/bentoml).
    MLOPS_MODEL_TAG          models to serve at start when their pointer names none, e.g. `fraud_detector:v3`
                             (several: comma-separated; each tag applies to the model it names).
    MLFLOW_TRACKING_URI      for a model with neither: `<model>:v<version>`, the version MLflow's `champion`
                             alias of the model points to.
    MLOPS_SERVING_STATE_DIR  where `models/<model>.json` (the pointer to the model a route serves) is kept; it is
                             written atomically on every switch and read first at start, so a restarted service
                             serves what it served before (default $BENTOML_HOME/serving).
    MLOPS_ADMIN_TOKEN        the bearer token of the admin API; without it every admin call is refused (401).
    MLOPS_INFERENCE_LOG_URL  SQLAlchemy URL of the inference log database (SQLite locally, Postgres in compose);
                             unset, predictions are not logged. Table: include/mlops/monitoring.py.
    MLOPS_DRIFT_METRICS_SECONDS  how often the drift gauges are read from the drift history (default 30).
    MLOPS_MAX_RECORDS        most records per predict request (default 1000).
    MLOPS_SERVING_WORKERS    worker processes (default 1; each runs onnxruntime on one thread).

Endpoints, for each model <m> (the OpenAPI document, generated from the configs, is at /docs.json and browsable
at /):

    POST /models/<m>/predict   {"records": [{<feature>: value, ...}, ...]} (1 to MLOPS_MAX_RECORDS records)
                               -> 200 {"model_name", "model_version", "request_id",
                                       "predictions": [{"label": 0, "probabilities": {"0": 0.98, "1": 0.02}}, ...]}
                                  (regression: [{"value": 1.23}, ...]), one per record, in order.
    POST /models/<m>/predict_batched  {"records": [<one record>]} -> 200 [{"model_name", "model_version",
                               "request_id", "label", "probabilities"}] (or "value"). For clients that send one
                               record per call: BentoML's adaptive batching merges concurrent calls into one
                               onnxruntime run; a call it expects to wait over 1 s is shed with 503 (retry it).
    GET  /models/<m>/readyz    200 while <m> serves a model, 503 before.
    POST /predict, /predict_batched   the same, when the service has exactly one model.
    Refused (include/serving/gate.py), logged as one line, never with a traceback: 404 for a model the service
    does not have (naming the ones it has), 422 {"error": "records[3].amount: value is not a finite number",
    "problems": [...]} naming every problem by record index and field (at most 20), 400 for a body that is not
    JSON, 413 beyond the body limit, 415 for a non-JSON content type, 503 while <m> has no model loaded.
    GET  /readyz /livez /healthz   readiness (200 once any model is loaded), liveness (always 200)
    GET  /metrics          BentoML's metrics (by route, so by model), and mlops_predictions_total{model,
                           model_version, predicted_class} (regression: predicted_class="value"),
                           mlops_inference_log_dropped_total{model}, mlops_model_switches_total{model, outcome}
                           (switched, followed, not_found, rejected); from each drift monitor's last check of each
                           model version (with an inference log): mlops_drift_share, mlops_drift_live_score{metric},
                           mlops_drift_retraining_requested, mlops_drift_last_check_timestamp_seconds, all by
                           model and model_version.
    GET  /admin/models     (Authorization: Bearer $MLOPS_ADMIN_TOKEN) -> what each model serves
    GET  /admin/models/<m> -> {"model", "serving": {"tag", "model_name", "model_version", "labels" (the lineage
                           labels of the model store entry), "loaded_at"} or null}; 404 for an unknown model
    POST /admin/models/<m> {"tag": "<m>:v4"} -> {"tag", "model_version", "previous_tag"}; 401 without the token,
                           404 for a tag not in the store, 422 (naming why) for a tag of another model or a model
                           that does not load, does not fit the config, or fails on a sample record; the old model
                           keeps serving.

Rollouts: a switch builds the new onnxruntime session beside the old one, checks it, writes the model's pointer
and then swaps one reference, so requests in flight finish on the old model and none fails; the other models are
not touched. The switch happens in the worker that received the call; every other worker checks the pointers'
mtimes once a second in a background thread and switches to what they name (include/serving/rollout.py).
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import bentoml
import pydantic_core
from bentoml.exceptions import ServiceUnavailable
from fastapi import Depends, FastAPI, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from include.mlops.config import CONFIG_DIR, ConfigError, PipelineConfig, load_folder
from include.mlops.deployment import model_store_tag
from include.serving import gate, schema
from include.serving.drift_metrics import DriftMetrics
from include.serving.inference_log import InferenceLog, LoggedRequest
from include.serving.models import ModelNotFound, ModelRejected, ServedModel
from include.serving.rollout import ModelSlot, champion_version

logger = logging.getLogger(__name__)
# BentoML's worker logging leaves the root at WARNING; switches and refused requests are worth an INFO line.
logging.getLogger("include.serving").setLevel(logging.INFO)

POINTER_CHECK_SECONDS = 1.0
# Room for 4 KiB per record (long unknown categories included) and the envelope.
_BODY_BYTES_PER_RECORD = 4096
_BODY_BYTES_BASE = 65536


@dataclass(frozen=True)
class Settings:
    config_dir: Path
    max_records: int
    workers: int
    state_dir: Path
    model_tags: tuple[str, ...]
    tracking_uri: str | None
    admin_token: str | None
    inference_log_url: str | None
    drift_metrics_seconds: float

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        bentoml_home = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        return cls(
            config_dir=Path(env.get("MLOPS_CONFIG_DIR") or CONFIG_DIR),
            max_records=int(env.get("MLOPS_MAX_RECORDS") or 1000),
            workers=int(env.get("MLOPS_SERVING_WORKERS") or 1),
            state_dir=Path(env.get("MLOPS_SERVING_STATE_DIR") or bentoml_home / "serving"),
            model_tags=tuple(t.strip() for t in (env.get("MLOPS_MODEL_TAG") or "").split(",") if t.strip()),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            admin_token=env.get("MLOPS_ADMIN_TOKEN") or None,
            inference_log_url=env.get("MLOPS_INFERENCE_LOG_URL") or None,
            drift_metrics_seconds=float(env.get("MLOPS_DRIFT_METRICS_SECONDS") or 30),
        )


class _GatedInput(bentoml.IODescriptor):
    """A request body that the gate has validated already (see include/serving/gate.py)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request, serde):
        body = gate.validated(request.scope)
        return body if isinstance(body, cls) else await super().from_http_request(request, serde)


@dataclass(frozen=True)
class ModelSchema:
    """One model's request and answer types, generated from its config (named after it in /docs.json)."""

    config: PipelineConfig
    record: type[BaseModel]
    predict_request: type[BaseModel]
    batched_request: type[BaseModel]
    predict_response: type[BaseModel]
    batched_prediction: type[BaseModel]

    @classmethod
    def of(cls, config: PipelineConfig, max_records: int) -> ModelSchema:
        suffix = "".join(part.capitalize() for part in config.name.split("_"))
        record = schema.record_model(config.dataset, f"Record{suffix}")
        return cls(
            config,
            record,
            schema.request_model(record, max_records, _GatedInput, f"PredictRequest{suffix}"),
            schema.request_model(record, 1, _GatedInput, f"BatchedRequest{suffix}"),
            *schema.response_models(config.dataset.task, suffix),
        )


def _served_configs(settings: Settings) -> dict[str, PipelineConfig]:
    folder = load_folder(settings.config_dir)
    for error in folder.errors:
        logger.error("not served: %s", error)
    if not folder.configs:
        raise ConfigError(f"{settings.config_dir}: no pipeline config to serve")
    return {config.name: config for config in folder.configs}


SETTINGS = Settings.from_env(os.environ)
SCHEMAS = {name: ModelSchema.of(config, SETTINGS.max_records) for name, config in _served_configs(SETTINGS).items()}


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
            Counter("mlops_predictions", "Predictions served", ["model", "model_version", "predicted_class"]),
            Counter("mlops_inference_log_dropped", "Predictions not written to the inference log", ["model"]),
            Counter("mlops_model_switches", "Model switches by outcome", ["model", "outcome"]),
        )


class ModelInfo(BaseModel):
    tag: str
    model_name: str
    model_version: str
    labels: dict[str, str] = Field(description="the lineage labels of the model store entry")
    loaded_at: dt.datetime


class ModelStatus(BaseModel):
    model: str = Field(description="the model (its config's model.registered_name)")
    serving: ModelInfo | None = Field(description="what its routes serve; null before a model is switched to")


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="a model in the BentoML model store", examples=["fraud_detector:v4"])


class SwitchResult(BaseModel):
    tag: str
    model_version: str
    previous_tag: str | None


admin = FastAPI(title="Model admin", description="What each model serves, and switching it (bearer token).")
_bearer = HTTPBearer(auto_error=False, description="MLOPS_ADMIN_TOKEN")


def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    given = credentials.credentials.encode() if credentials else b""
    expected = (SETTINGS.admin_token or "").encode()
    # compare_digest takes as long whatever matches, so the token cannot be guessed byte by byte from timings.
    if not expected or not hmac.compare_digest(given, expected):
        raise HTTPException(401, "a valid admin bearer token is required", headers={"WWW-Authenticate": "Bearer"})


def _prediction_routes() -> dict[str, tuple[str, type[BaseModel], bool]]:
    """Every prediction path: (its model, its request model, whether it is the batched path)."""
    routes = {}
    for name, model in SCHEMAS.items():
        routes[f"/models/{name}/predict"] = (name, model.predict_request, False)
        routes[f"/models/{name}/predict_batched"] = (name, model.batched_request, True)
    if len(SCHEMAS) == 1:  # a deployment of one model keeps its short routes
        ((name, model),) = SCHEMAS.items()
        routes["/predict"] = (name, model.predict_request, False)
        routes["/predict_batched"] = (name, model.batched_request, True)
    return routes


PREDICTION_ROUTES = _prediction_routes()
# Per-request costs that buy nothing by default, measured on a one-record prediction (benchmarks/serving.py):
# OpenTelemetry spans, which go nowhere unless BENTOML_CONFIG configures a tracing exporter (~40 % of the CPU),
# and an access log line, which the inference log, BentoML's request metrics and the gate's "refused" lines
# already cover (~15 %). A BENTOML_CONFIG that sets `tracing` or `logging.access` for the service wins.
SERVICE_CONFIG = {
    "workers": SETTINGS.workers,
    "traffic": {"timeout": 60},
    "tracing": {"excluded_urls": list(PREDICTION_ROUTES)},
    "logging": {"access": {"enabled": False}},
}


class ModelService:
    """Predictions of every model of the config folder (each the MLflow champion of its model, as an ONNX model
    from the BentoML store), one route per model."""

    def __init__(self) -> None:
        _end_with_the_arbiter()
        self.metrics = Metrics.create()
        # The predictions counter's child per (model, version, class): `labels()` is looked up once, not per request.
        self._predictions: dict[tuple[str, str, str], Any] = {}
        self.slots = {name: ModelSlot(s.config, s.record, SETTINGS.state_dir) for name, s in SCHEMAS.items()}
        for slot in self.slots.values():
            # Exposed as 0 from the start: a labelled counter has no series until its first increment, and a
            # dashboard or alert on it would read "no data" where it means "nothing lost".
            self.metrics.inference_log_dropped.labels(slot.name)
            slot.start(self._startup_tags(slot))
        self.log = None
        if SETTINGS.inference_log_url:
            id_columns = {name: slot.config.dataset.id_column for name, slot in self.slots.items()}
            self.log = InferenceLog(SETTINGS.inference_log_url, id_columns, self._dropped)
            self.log.start()
        self._stopping = threading.Event()
        if SETTINGS.inference_log_url:
            metrics = {name: slot.config.model.primary_metric for name, slot in self.slots.items()}
            drift = DriftMetrics(SETTINGS.inference_log_url, metrics)
            follow = functools.partial(drift.follow, self._stopping, SETTINGS.drift_metrics_seconds)
            threading.Thread(target=follow, name="drift-metrics", daemon=True).start()
        threading.Thread(target=self._follow_pointers, name="model-pointers", daemon=True).start()

    async def __is_ready__(self) -> bool:
        return any(slot.served is not None for slot in self.slots.values())

    async def predict_records(self, model: str, records: list[BaseModel]) -> Response:
        slot, served = self._serving(model)
        request_id = _request_id()
        predictions = served.predict(schema.feeds(records, slot.config.dataset))
        self._account(slot, served, request_id, records, predictions)
        # The answer of SCHEMAS[model].predict_response (its fields, in order; the predictions are plain ints,
        # strings and floats), serialised here by pydantic's serializer: building the response model and having
        # BentoML dump it and send it in chunks cost ~5 % of a one-record request's throughput
        # (benchmarks/serving.py).
        answer = {
            "model_name": served.name,
            "model_version": served.version,
            "request_id": request_id,
            "predictions": predictions,
        }
        return Response(pydantic_core.to_json(answer), media_type="application/json")

    async def predict_batch(self, model: str, records: list[BaseModel]) -> list[BaseModel]:
        slot, served = self._serving(model)
        predictions = served.predict(schema.feeds(records, slot.config.dataset))
        answers = []
        for record, prediction in zip(records, predictions, strict=True):
            request_id = _request_id()
            self._account(slot, served, request_id, [record], [prediction])
            answers.append(
                SCHEMAS[model].batched_prediction(
                    model_name=served.name, model_version=served.version, request_id=request_id, **prediction
                )
            )
        return answers

    @admin.get("/models", dependencies=[Depends(require_admin)])
    def served_models(self) -> list[ModelStatus]:
        """What every model's routes serve, with the lineage labels of the model store entries."""
        return [self._status(slot) for slot in self.slots.values()]

    @admin.get(
        "/models/{model}", dependencies=[Depends(require_admin)], responses={404: {"description": "no such model"}}
    )
    def served_model(self, model: str) -> ModelStatus:
        """What one model's routes serve, with the lineage labels of its model store entry."""
        return self._status(self._slot(model))

    @admin.post(
        "/models/{model}",
        dependencies=[Depends(require_admin)],
        responses={
            404: {"description": "no such model, or the tag is not in the model store"},
            422: {"description": "the tag is another model's, or the model cannot serve"},
        },
    )
    def switch_model(self, model: str, body: SwitchRequest) -> SwitchResult:
        """Load the model `tag` from the store, check it, and switch every worker's route of `model` to it without
        downtime; the other models are not touched."""
        slot = self._slot(model)
        try:
            served, previous = slot.switch(body.tag)
        except ModelNotFound as exc:
            self.metrics.model_switches.labels(model, "not_found").inc()
            raise HTTPException(404, str(exc)) from None
        except ModelRejected as exc:
            self.metrics.model_switches.labels(model, "rejected").inc()
            raise HTTPException(422, str(exc)) from None
        self.metrics.model_switches.labels(model, "switched").inc()
        return SwitchResult(tag=served.tag, model_version=served.version, previous_tag=previous)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stopping.set()
        if self.log:
            self.log.stop()

    def _slot(self, model: str) -> ModelSlot:
        if model not in self.slots:
            raise HTTPException(404, f"no model {model!r} on this service; its models are: {', '.join(self.slots)}")
        return self.slots[model]

    def _status(self, slot: ModelSlot) -> ModelStatus:
        served = slot.served
        info = None
        if served is not None:
            info = ModelInfo(
                tag=served.tag,
                model_name=served.name,
                model_version=served.version,
                labels=dict(served.labels),
                loaded_at=served.loaded_at,
            )
        return ModelStatus(model=slot.name, serving=info)

    def _serving(self, model: str) -> tuple[ModelSlot, ServedModel]:
        slot = self.slots[model]
        served = slot.served
        # The gate answers 503 before a model is loaded; this guards calls that do not pass it.
        if served is None:
            raise ServiceUnavailable(f"{model} has no model loaded yet")
        return slot, served

    def _account(
        self, slot: ModelSlot, served: ServedModel, request_id: str, records: list[BaseModel], predictions: list[dict]
    ) -> None:
        classes = collections.Counter(str(p.get("label", "value")) for p in predictions)
        for predicted_class, count in classes.items():
            key = (slot.name, served.version, predicted_class)
            counter = self._predictions.get(key)
            if counter is None:
                counter = self._predictions[key] = self.metrics.predictions.labels(*key)
            counter.inc(count)
        if self.log:
            now = dt.datetime.now(dt.UTC)
            self.log.submit(LoggedRequest(request_id, slot.name, served.version, now, records, predictions))

    def _dropped(self, model: str, rows: int) -> None:
        self.metrics.inference_log_dropped.labels(model).inc(rows)

    def _startup_tags(self, slot: ModelSlot) -> Iterator[tuple[str, str]]:
        if tag := slot.pointer.read():
            yield str(slot.pointer.path), tag
        for tag in SETTINGS.model_tags:
            if tag.partition(":")[0].lower() == slot.name:
                yield "MLOPS_MODEL_TAG", tag
        # Asked only when nothing before it loads: importing and asking MLflow costs seconds.
        if SETTINGS.tracking_uri and (version := champion_version(SETTINGS.tracking_uri, slot.name)):
            yield "the MLflow champion", model_store_tag(slot.config, version)

    def _follow_pointers(self) -> None:
        """Switch to the models other workers switched to: the pointers' mtimes are checked once a second."""
        while not self._stopping.wait(POINTER_CHECK_SECONDS):
            for slot in self.slots.values():
                try:
                    if slot.follow_pointer():
                        self.metrics.model_switches.labels(slot.name, "followed").inc()
                except Exception:  # a bad moment (a full disk, a vanished folder) must not end the watching
                    logger.exception("%s: checking the model pointer failed; checking again in a second", slot.name)


def _prediction_api(path: str, model: str, batched: bool) -> tuple[str, Any]:
    """The BentoML API method of one prediction route, typed by its model's schema."""
    model_schema = SCHEMAS[model]
    if batched:

        async def predict(self, records: list[BaseModel]) -> list[BaseModel]:
            return await self.predict_batch(model, records)

        predict.__doc__ = f"Predict one {model} record per call; concurrent calls are merged into one model run."
        predict.__annotations__["return"] = list[model_schema.batched_prediction]  # BentoML's output spec
        options = {
            "input_spec": model_schema.batched_request,
            "batchable": True,
            "max_batch_size": 64,
            # BentoML's dispatcher answers 503 for a call it expects to wait longer than this (load shedding); at
            # 200 ms a one-core server shed ~0.3 % of calls at concurrency 8-32 (benchmarks/serving.py).
            "max_latency_ms": 1000,
        }
    else:

        async def predict(self, records: list[BaseModel]) -> BaseModel:
            return await self.predict_records(model, records)

        predict.__doc__ = (
            f"Predict each {model} record; the answer names the model version that did, and the request id it is "
            "logged by."
        )
        predict.__annotations__["return"] = model_schema.predict_response  # BentoML's output spec
        options = {"input_spec": model_schema.predict_request}
    predict.__name__ = path.strip("/").replace("/", "_")
    return predict.__name__, bentoml.api(route=path, **options)(predict)


for _path, (_model, _request, _batched) in PREDICTION_ROUTES.items():
    setattr(ModelService, *_prediction_api(_path, _model, _batched))

ModelService = bentoml.asgi_app(admin, path="/admin")(
    bentoml.service(name="mlops_serving", **SERVICE_CONFIG)(ModelService)
)


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


def _request_id() -> str:
    """32 random hex digits (as uuid4().hex was, at a quarter of its cost)."""
    return os.urandom(16).hex()


def _model_ready(model: str) -> bool:
    return bentoml.get_current_service().slots[model].served is not None


ModelService.add_asgi_middleware(
    gate.RequestGate,
    routes={path: (model, request) for path, (model, request, _) in PREDICTION_ROUTES.items()},
    models=list(SCHEMAS),
    max_body_bytes=_BODY_BYTES_BASE + _BODY_BYTES_PER_RECORD * SETTINGS.max_records,
    ready=_model_ready,
)
