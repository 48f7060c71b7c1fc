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
    MLOPS_MODEL_STORE_URL    s3://<bucket>/<prefix>: models come from the object store, where the deploy task
                             publishes them (include/mlops/object_store.py), and the pointers live there, shared
                             by every replica; BENTOML_HOME is then a local cache. MLOPS_MODEL_STORE_ENDPOINT_URL
                             names an S3-compatible server (MinIO); credentials: boto3's chain (AWS_ACCESS_KEY_ID,
                             AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or the pod's role).
    MLOPS_POINTER_CHECK_SECONDS  how often each worker checks each model's pointer for a switch made elsewhere
                             (default 1; with an object store each check is a HEAD request: 50 models, 4
                             replicas of 2 workers make 400 a second at 1, 80 at 5).
    MLOPS_ADMIN_TOKEN        the bearer token of the admin API; without it every admin call is refused (401).
    MLOPS_INFERENCE_LOG_URL  SQLAlchemy URL of the inference log database (SQLite locally, Postgres in compose);
                             unset, predictions are not logged. Table: include/mlops/monitoring.py.
    MLOPS_DRIFT_METRICS_SECONDS  how often the drift gauges are read from the drift history (default 30).
    MLOPS_MAX_RECORDS        most records per predict request (default 1000).
    MLOPS_SERVING_WORKERS    worker processes (default 1; each runs onnxruntime on one thread).

Endpoints, for each model <m> (the OpenAPI document, generated from the configs, is at /docs.json and browsable
at /):

    POST /models/<m>/predict   {"records": [{<feature>: value, ...}, ...]} (1 to MLOPS_MAX_RECORDS records)
                               -> 200 {"model_name", "model_version", "request_id", "role",
                                       "predictions": [{"label": 0, "probabilities": {"0": 0.98, "1": 0.02}}, ...]}
                                  (regression: [{"value": 1.23}, ...]), one per record, in order. "role" says
                                  which model answered: champion, or challenger during a canary rollout. Header
                                  X-Rollout-Key: requests with the same key get the same side of a canary.
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
                           model_version, role, predicted_class} (regression: predicted_class="value"),
                           mlops_model_duration_seconds{model, model_version, role} (histogram: the model's time
                           per scoring, answered or off the request path), mlops_scoring_errors_total{model,
                           model_version, role}, mlops_rollout_comparisons_total{model, challenger_version,
                           agreement}, mlops_shadow_dropped_total{model},
                           mlops_unseen_categories_total{model, model_version, feature} (answered records whose
                           category the model's encoding does not know: it counts as one "other"),
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
    POST /admin/models/<m>/rollout {"tag": "<m>:v5", "mode": "shadow" | "canary", "share": 0.1 (canary)} -> the
                           model's status with "rollout"; 409 while a rollout of <m> is on or <m> serves nothing,
                           422 for a bad mode or share, or a challenger that does not load (the champion serves on).
    DELETE /admin/models/<m>/rollout   ends it: the challenger is unloaded. Promotion is a switch to its tag.

Rollouts: a switch builds the new onnxruntime session beside the old one, checks it, writes the model's pointer
and then swaps one reference, so requests in flight finish on the old model and none fails; the other models are
not touched. The switch happens in the worker that received the call; every other worker checks the pointers'
mtimes (or ETags) every MLOPS_POINTER_CHECK_SECONDS in a background thread and switches to what they name
(include/serving/rollout.py).
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
import time
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

from include.mlops.classes import text_of
from include.mlops.config import CONFIG_DIR, ConfigError, PipelineConfig, load_folder
from include.mlops.deployment import model_store_tag
from include.mlops.object_store import ObjectStore, ObjectStoreError
from include.mlops.rollouts import same_answer
from include.serving import gate, schema
from include.serving.drift_metrics import DriftMetrics
from include.serving.inference_log import InferenceLog, LoggedRequest
from include.serving.models import ModelNotFound, ModelRejected, ServedModel, first_line
from include.serving.rollout import ModelSlot, Role, RolloutPlan, RolloutRefused, champion_version
from include.serving.shadow import ShadowJob, ShadowScorer

logger = logging.getLogger(__name__)
# BentoML's worker logging leaves the root at WARNING; switches and refused requests are worth an INFO line.
logging.getLogger("include.serving").setLevel(logging.INFO)

# A client's key for a canary: requests with the same key are answered by the same model during one rollout.
ROLLOUT_KEY_HEADER = "x-rollout-key"
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
    model_store: ObjectStore | None
    pointer_check_seconds: float

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
            model_store=ObjectStore.from_environment(env),
            pointer_check_seconds=float(env.get("MLOPS_POINTER_CHECK_SECONDS") or 1),
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
            *schema.response_models(config.dataset, suffix),
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
    model_seconds: Any
    scoring_errors: Any
    rollout_comparisons: Any
    shadow_dropped: Any
    unseen_categories: Any

    @classmethod
    def create(cls) -> Metrics:
        # Made in the worker, where BentoML has set PROMETHEUS_MULTIPROC_DIR: the counters of all workers then
        # add up on /metrics.
        from prometheus_client import Counter, Histogram

        by_model_role = ["model", "model_version", "role"]
        return cls(
            Counter("mlops_predictions", "Predictions served", ["model", "model_version", "role", "predicted_class"]),
            Counter("mlops_inference_log_dropped", "Predictions not written to the inference log", ["model"]),
            Counter("mlops_model_switches", "Model switches by outcome", ["model", "outcome"]),
            Histogram(
                "mlops_model_duration_seconds",
                "The model's time per scoring (one request, or one batch), answered or scored off the request path",
                by_model_role,
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            ),
            Counter(
                "mlops_scoring_errors", "Scorings that raised (a challenger's: the champion answered)", by_model_role
            ),
            Counter(
                "mlops_rollout_comparisons",
                "Records both models of a rollout scored, by whether they agreed",
                ["model", "challenger_version", "agreement"],
            ),
            Counter("mlops_shadow_dropped", "Records not scored off the request path (queue full)", ["model"]),
            Counter(
                "mlops_unseen_categories",
                "Answered records whose categorical feature held a value the model's encoding does not know",
                ["model", "model_version", "feature"],
            ),
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
    rollout: RolloutInfo | None = Field(default=None, description="the challenger on trial beside it, if any")


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="a model in the BentoML model store", examples=["fraud_detector:v4"])


class SwitchResult(BaseModel):
    tag: str
    model_version: str
    previous_tag: str | None


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tag: str = Field(description="the challenger, a model in the BentoML model store", examples=["fraud_detector:v5"])
    mode: str = Field(description="shadow or canary", examples=["shadow"])
    share: float | None = Field(
        default=None, description="canary: the share of requests the challenger answers, above 0 and below 1"
    )


class RolloutInfo(BaseModel):
    tag: str = Field(description="the challenger")
    model_version: str
    mode: str
    share: float = Field(description="of requests the challenger answers (0 in a shadow rollout)")
    started_at: str
    loaded: bool = Field(description="false when the recorded challenger no longer loads (the rollout is void)")


admin = FastAPI(title="Model admin", description="What each model serves, and switching it (bearer token).")
_bearer = HTTPBearer(auto_error=False, description="MLOPS_ADMIN_TOKEN")


_TOKEN_REQUIRED = "a valid admin bearer token is required"


def _valid_token(given: str) -> bool:
    expected = (SETTINGS.admin_token or "").encode()
    # compare_digest takes as long whatever matches, so the token cannot be guessed byte by byte from timings.
    return bool(expected) and hmac.compare_digest(given.encode(errors="replace"), expected)


def _authorized(authorization: str) -> bool:
    """Whether an Authorization header carries the admin token (the gate asks before any admin call is read)."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and _valid_token(token.strip())


def require_admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    if not _valid_token(credentials.credentials if credentials else ""):
        raise HTTPException(401, _TOKEN_REQUIRED, headers={"WWW-Authenticate": "Bearer"})


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


@dataclass(frozen=True)
class _Scored:
    """An answer: the model that gave it, in which role, and its predictions."""

    model: ServedModel
    role: Role
    predictions: list[dict[str, Any]]


class ModelService:
    """Predictions of every model of the config folder (each the MLflow champion of its model, as an ONNX model
    from the BentoML store), one route per model."""

    def __init__(self) -> None:
        _end_with_the_arbiter()
        self.metrics = Metrics.create()
        # The predictions counter's child per (model, version, role, class), and the model time histogram's per
        # (model, version, role): `labels()` is looked up once, not per request.
        self._predictions: dict[tuple[str, str, str, str], Any] = {}
        self._model_seconds: dict[tuple[str, str, str], Any] = {}
        self.slots = {
            name: ModelSlot(s.config, s.record, SETTINGS.state_dir, SETTINGS.model_store) for name, s in SCHEMAS.items()
        }
        for slot in self.slots.values():
            # Exposed as 0 from the start: a labelled counter has no series until its first increment, and a
            # dashboard or alert on it would read "no data" where it means "nothing lost".
            self.metrics.inference_log_dropped.labels(slot.name)
            self.metrics.shadow_dropped.labels(slot.name)
            for refused in ("not_found", "rejected"):
                self.metrics.model_switches.labels(slot.name, refused)
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
        self.shadow = ShadowScorer(self._shadow_scored, self._shadow_dropped)

    async def __is_ready__(self) -> bool:
        return any(slot.served is not None for slot in self.slots.values())

    async def predict_records(self, model: str, records: list[BaseModel], key: str | None) -> Response:
        request_id = _request_id()
        scored = self._score(self.slots[model], records, [(request_id, 0, len(records))], key)
        # The answer of SCHEMAS[model].predict_response (its fields, in order; the predictions are plain ints,
        # strings and floats), serialised here by pydantic's serializer: building the response model and having
        # BentoML dump it and send it in chunks cost ~5 % of a one-record request's throughput
        # (benchmarks/serving.py).
        answer = {
            "model_name": scored.model.name,
            "model_version": scored.model.version,
            "request_id": request_id,
            "role": scored.role,
            "predictions": scored.predictions,
        }
        return Response(pydantic_core.to_json(answer), media_type="application/json")

    async def predict_batch(self, model: str, records: list[BaseModel]) -> list[BaseModel]:
        # BentoML merged concurrent one-record calls into `records`: a canary routes the merged batch as a whole
        # (the calls' headers are not passed on, so there is no sticky key here).
        request_ids = [_request_id() for _ in records]
        scored = self._score(self.slots[model], records, [(r, i, i + 1) for i, r in enumerate(request_ids)], None)
        served = scored.model
        return [
            SCHEMAS[model].batched_prediction(
                model_name=served.name, model_version=served.version, request_id=request_id, role=scored.role, **p
            )
            for request_id, p in zip(request_ids, scored.predictions, strict=True)
        ]

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

    @admin.post(
        "/models/{model}/rollout",
        dependencies=[Depends(require_admin)],
        responses={
            404: {"description": "no such model, or the tag is not in the model store"},
            409: {"description": "a rollout of this model is on already, or it serves no champion yet"},
            422: {"description": "a bad mode or share, or a challenger that cannot serve (the champion is untouched)"},
        },
    )
    def start_rollout(self, model: str, body: RolloutRequest) -> ModelStatus:
        """Load the challenger `tag` beside the model's champion, in `shadow` mode (it scores every request off
        the request path; the champion answers) or `canary` mode (it answers `share` of the requests). One
        rollout per model; it is recorded, so a restarted service resumes it."""
        slot = self._slot(model)
        try:
            slot.start_rollout(body.tag, body.mode, 0.0 if body.share is None else body.share)
        except RolloutRefused as exc:
            raise HTTPException(409, str(exc)) from None
        except ModelNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except ModelRejected as exc:
            raise HTTPException(422, str(exc)) from None
        return self._status(slot)

    @admin.delete("/models/{model}/rollout", dependencies=[Depends(require_admin)])
    def end_rollout(self, model: str) -> ModelStatus:
        """End the model's rollout, if one is on: the challenger is unloaded and the champion serves alone. To
        promote the challenger instead, switch the model to its tag (POST /admin/models/{model})."""
        slot = self._slot(model)
        slot.end_rollout()
        return self._status(slot)

    @bentoml.on_shutdown
    def _shutdown(self) -> None:
        self._stopping.set()
        self.shadow.stop()
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
        rollout = slot.rollout
        plan: RolloutPlan | None = rollout.plan if rollout else slot.pointer.read_state()[1]
        on_trial = None
        if plan is not None:
            on_trial = RolloutInfo(
                tag=plan.tag,
                model_version=plan.tag.rpartition(":v")[2],
                mode=plan.mode,
                share=plan.share,
                started_at=plan.started_at,
                loaded=rollout is not None,
            )
        return ModelStatus(model=slot.name, serving=info, rollout=on_trial)

    def _score(
        self, slot: ModelSlot, records: list[BaseModel], requests: list[tuple[str, int, int]], key: str | None
    ) -> _Scored:
        """The answer to `records`, from the champion or (canary) the challenger; during a rollout the other
        model scores them off the request path. A challenger that raises is logged and the champion answers."""
        champion = slot.served
        # The gate answers 503 before a model is loaded; this guards calls that do not pass it.
        if champion is None:
            raise ServiceUnavailable(f"{slot.name} has no model loaded yet")
        rollout = slot.rollout
        feeds = schema.feeds(records, slot.config.dataset)
        model, role, other, other_role = champion, "champion", None, "challenger"
        if rollout is not None:
            if rollout.answered_by_challenger(key):
                model, role, other, other_role = rollout.challenger, "challenger", champion, "champion"
            elif rollout.plan.mode == "shadow":
                other = rollout.challenger
        started = time.perf_counter()
        try:
            predictions = model.predict(feeds)
        except Exception as exc:
            if role == "champion":
                raise
            # A canary's failure is the rollout's finding, not the client's problem: logged, and the champion
            # answers in its place.
            failed_ms = (time.perf_counter() - started) * 1000
            self._scored(slot.name, model, role, records, requests, None, first_line(exc), failed_ms, served=False)
            model, role, other = champion, "champion", None
            started = time.perf_counter()
            predictions = model.predict(feeds)
        latency_ms = (time.perf_counter() - started) * 1000
        self._scored(slot.name, model, role, records, requests, predictions, None, latency_ms, served=True)
        if other is not None:
            job = ShadowJob(slot.name, other, other_role, feeds, records, requests, predictions, model.version)
            self.shadow.submit(job)
        return _Scored(model, role, predictions)

    def _scored(
        self,
        model_name: str,
        model: ServedModel,
        role: Role,
        records: list[BaseModel],
        requests: list[tuple[str, int, int]],
        predictions: list[dict] | None,
        error: str | None,
        latency_ms: float,
        served: bool,
    ) -> None:
        """Count a scoring in the metrics and write its rows to the inference log."""
        timing = (model_name, model.version, role)
        histogram = self._model_seconds.get(timing)
        if histogram is None:
            histogram = self._model_seconds[timing] = self.metrics.model_seconds.labels(*timing)
        histogram.observe(latency_ms / 1000)
        if error is not None:
            self.metrics.scoring_errors.labels(*timing).inc()
        elif served and predictions is not None:
            self._count_unseen(model_name, model, records)
            classes = collections.Counter(text_of(p["label"]) if "label" in p else "value" for p in predictions)
            for predicted_class, count in classes.items():
                key = (*timing, predicted_class)
                counter = self._predictions.get(key)
                if counter is None:
                    counter = self._predictions[key] = self.metrics.predictions.labels(*key)
                counter.inc(count)
        if self.log:
            now = dt.datetime.now(dt.UTC)
            for request_id, first, past in requests:
                rows = predictions[first:past] if predictions is not None else []
                self.log.submit(
                    LoggedRequest(
                        request_id,
                        model_name,
                        model.version,
                        now,
                        records[first:past],
                        rows,
                        role=role,
                        served=served,
                        error=error,
                        latency_ms=latency_ms,
                    )
                )

    def _count_unseen(self, model_name: str, model: ServedModel, records: list[BaseModel]) -> None:
        for feature, known in model.categories.items():
            values = (getattr(record, feature) for record in records)
            unseen = sum(1 for value in values if value is not None and value not in known)
            if unseen:
                self.metrics.unseen_categories.labels(model_name, model.version, feature).inc(unseen)

    def _shadow_scored(self, job: ShadowJob, predictions: list[dict] | None, error: str | None, ms: float) -> None:
        self._scored(job.model_name, job.model, job.role, job.records, job.requests, predictions, error, ms, False)
        if predictions is None:
            return
        if job.role == "challenger":
            champion, challenger, version = job.answered, predictions, job.model.version
        else:
            champion, challenger, version = predictions, job.answered, job.answered_version
        tolerance = self.slots[job.model_name].config.rollout.criteria.value_tolerance
        agreed = sum(same_answer(a, b, tolerance) for a, b in zip(champion, challenger, strict=True))
        comparisons = self.metrics.rollout_comparisons
        if agreed:
            comparisons.labels(job.model_name, version, "agree").inc(agreed)
        if len(predictions) > agreed:
            comparisons.labels(job.model_name, version, "disagree").inc(len(predictions) - agreed)

    def _shadow_dropped(self, model: str, records: int) -> None:
        self.metrics.shadow_dropped.labels(model).inc(records)

    def _dropped(self, model: str, rows: int) -> None:
        self.metrics.inference_log_dropped.labels(model).inc(rows)

    def _startup_tags(self, slot: ModelSlot) -> Iterator[tuple[str, str]]:
        if tag := slot.pointer.read():
            yield slot.pointer.where, tag
        for tag in SETTINGS.model_tags:
            if tag.partition(":")[0].lower() == slot.name:
                yield "MLOPS_MODEL_TAG", tag
        # Asked only when nothing before it loads: importing and asking MLflow costs seconds.
        if SETTINGS.tracking_uri and (version := champion_version(SETTINGS.tracking_uri, slot.name)):
            yield "the MLflow champion", model_store_tag(slot.config, version)

    def _follow_pointers(self) -> None:
        """Switch to the models other workers (or replicas) switched to: each pointer is checked every
        MLOPS_POINTER_CHECK_SECONDS (a stat, or an object store HEAD)."""
        unreachable: set[str] = set()  # logged once while the object store is down, and once when it is back
        while not self._stopping.wait(SETTINGS.pointer_check_seconds):
            for slot in self.slots.values():
                try:
                    if slot.follow_pointer():
                        self.metrics.model_switches.labels(slot.name, "followed").inc()
                except ObjectStoreError as exc:
                    if slot.name not in unreachable:
                        logger.warning("%s: the model pointer cannot be read, still serving: %s", slot.name, exc)
                        unreachable.add(slot.name)
                    continue
                except Exception:  # a bad moment (a full disk, a vanished folder) must not end the watching
                    logger.exception("%s: checking the model pointer failed; checking again", slot.name)
                if slot.name in unreachable:
                    logger.warning("%s: the model pointer can be read again", slot.name)
                    unreachable.discard(slot.name)


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

        async def predict(self, records: list[BaseModel], ctx: bentoml.Context) -> BaseModel:
            return await self.predict_records(model, records, ctx.request.headers.get(ROLLOUT_KEY_HEADER))

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
    admin=("/admin/", _authorized, _TOKEN_REQUIRED),
)
