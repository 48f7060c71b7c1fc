"""The prediction routes: each model's request and answer types, generated from its config, and the BentoML API
method of each route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bentoml
from pydantic import BaseModel, ConfigDict

from include.mlops.config import PipelineConfig
from include.serving import request_gate, schema

# A client's key for a canary: requests with the same key are answered by the same model during one rollout.
ROLLOUT_KEY_HEADER = "x-rollout-key"
# Room for 4 KiB per record (long unknown categories included) and the envelope.
_BODY_BYTES_PER_RECORD = 4096
_BODY_BYTES_BASE = 65536


def max_body_bytes(max_records: int) -> int:
    return _BODY_BYTES_BASE + _BODY_BYTES_PER_RECORD * max_records


class GatedInput(bentoml.IODescriptor):
    """A request body that the request gate has validated already (see include/serving/request_gate.py)."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    async def from_http_request(cls, request, serde):
        body = request_gate.validated(request.scope)
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
            schema.request_model(record, max_records, GatedInput, f"PredictRequest{suffix}"),
            schema.request_model(record, 1, GatedInput, f"BatchedRequest{suffix}"),
            *schema.response_models(config.dataset, suffix),
        )


@dataclass(frozen=True)
class Route:
    path: str
    model: str
    batched: bool
    request: type[BaseModel]


def prediction_routes(schemas: dict[str, ModelSchema]) -> dict[str, Route]:
    """Every prediction route by path: /models/<m>/predict and /models/<m>/predict_batched for each model, and
    /predict and /predict_batched too when there is one model (a deployment of one model keeps its short
    routes)."""
    routes = {}
    for name, model in schemas.items():
        routes[f"/models/{name}/predict"] = Route(f"/models/{name}/predict", name, False, model.predict_request)
        routes[f"/models/{name}/predict_batched"] = Route(
            f"/models/{name}/predict_batched", name, True, model.batched_request
        )
    if len(schemas) == 1:
        ((name, model),) = schemas.items()
        routes["/predict"] = Route("/predict", name, False, model.predict_request)
        routes["/predict_batched"] = Route("/predict_batched", name, True, model.batched_request)
    return routes


def prediction_api(route: Route, model_schema: ModelSchema) -> tuple[str, Any]:
    """The method name and the BentoML API method of one prediction route, typed by its model's schema."""
    model = route.model
    if route.batched:

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
    predict.__name__ = route.path.strip("/").replace("/", "_")
    return predict.__name__, bentoml.api(route=route.path, **options)(predict)
