"""One worker's model service: its models' slots, scoring, metrics and the inference log.

`ModelServer` holds what a worker serves; include/serving/app.py makes the BentoML service class of it, with a
prediction API method per route, for a given `Settings`.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import bentoml
import pydantic_core
from bentoml.exceptions import ServiceUnavailable
from pydantic import BaseModel
from starlette.responses import Response

from include.mlops.classes import text_of
from include.mlops.deployment import model_store_tag
from include.mlops.object_store import ObjectStoreError
from include.mlops.rollouts import same_answer
from include.serving import schema
from include.serving.drift_metrics import DriftMetrics
from include.serving.errors import first_line
from include.serving.inference_log import InferenceLog, LoggedRequest
from include.serving.metrics import Metrics
from include.serving.models import ServedModel
from include.serving.rollout import ModelSlot, Role, champion_version
from include.serving.routes import ModelSchema
from include.serving.settings import Settings
from include.serving.shadow import ShadowJob, ShadowScorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Scored:
    """An answer: the model that gave it, in which role, and its predictions."""

    model: ServedModel
    role: Role
    predictions: list[dict[str, Any]]


class ModelServer:
    """Predictions of every model of the config folder (each the MLflow champion of its model, as an ONNX model
    from the BentoML store), one route per model."""

    def __init__(self, settings: Settings, schemas: Mapping[str, ModelSchema], metrics_registry: Any = None) -> None:
        """`metrics_registry`: where the Prometheus metrics go (default: prometheus_client's, shown on /metrics)."""
        self.settings = settings
        self.schemas = dict(schemas)
        self.metrics = Metrics.create(metrics_registry)
        # The predictions counter's child per (model, version, role, class), and the model time histogram's per
        # (model, version, role): `labels()` is looked up once, not per request.
        self._predictions: dict[tuple[str, str, str, str], Any] = {}
        self._model_seconds: dict[tuple[str, str, str], Any] = {}
        self.slots = {
            name: ModelSlot(s.config, s.record, settings.state_dir, settings.model_store) for name, s in schemas.items()
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
        if settings.inference_log_url:
            id_columns = {name: slot.config.dataset.id_column for name, slot in self.slots.items()}
            self.log = InferenceLog(
                settings.inference_log_url, id_columns, self._dropped, self.metrics.inference_log_writer_restarts.inc
            )
            self.log.start()
        self._stopping = threading.Event()
        if settings.inference_log_url:
            metrics = {name: slot.config.model.primary_metric for name, slot in self.slots.items()}
            drift = DriftMetrics(settings.inference_log_url, metrics, metrics_registry)
            follow = functools.partial(drift.follow, self._stopping, settings.drift_metrics_seconds)
            threading.Thread(target=follow, name="drift-metrics", daemon=True).start()
        threading.Thread(target=self._follow_pointers, name="model-pointers", daemon=True).start()
        self.shadow = ShadowScorer(self._shadow_scored, self._shadow_dropped)

    async def __is_ready__(self) -> bool:
        return any(slot.served is not None for slot in self.slots.values())

    def ready(self, model: str) -> bool:
        """Whether `model` serves a model."""
        return self.slots[model].served is not None

    async def predict_records(self, model: str, records: list[BaseModel], key: str | None) -> Response:
        request_id = _request_id()
        scored = self._score(self.slots[model], records, [(request_id, 0, len(records))], key)
        # The answer of the model's predict_response (its fields, in order; the predictions are plain ints,
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
        prediction = self.schemas[model].batched_prediction
        return [
            prediction(
                model_name=served.name, model_version=served.version, request_id=request_id, role=scored.role, **p
            )
            for request_id, p in zip(request_ids, scored.predictions, strict=True)
        ]

    def count_switch(self, model: str, outcome: str) -> None:
        self.metrics.model_switches.labels(model, outcome).inc()

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop the background work; the inference log writes every row handed to it first."""
        self._stopping.set()
        self.shadow.stop()
        if self.log:
            self.log.stop()

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
        for tag in self.settings.model_tags:
            if tag.partition(":")[0].lower() == slot.name:
                yield "MLOPS_MODEL_TAG", tag
        # Asked only when nothing before it loads: importing and asking MLflow costs seconds.
        if self.settings.tracking_uri and (version := champion_version(self.settings.tracking_uri, slot.name)):
            yield "the MLflow champion", model_store_tag(slot.config, version)

    def _follow_pointers(self) -> None:
        """Switch to the models other workers (or replicas) switched to: each pointer is checked every
        MLOPS_POINTER_CHECK_SECONDS (a stat, or an object store HEAD)."""
        unreachable: set[str] = set()  # logged once while the object store is down, and once when it is back
        while not self._stopping.wait(self.settings.pointer_check_seconds):
            for slot in self.slots.values():
                try:
                    if slot.follow_pointer():
                        self.count_switch(slot.name, "followed")
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


def end_with_the_arbiter() -> None:
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
