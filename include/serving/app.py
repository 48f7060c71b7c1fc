"""`create_service(settings)`: the BentoML service of the models of a config folder, made for given settings.

The service class is made here, by a function, so that a test can make one for a config folder and settings of
its own, in its own process (`service.to_asgi()` under a test client); include/serving/service.py, the module
`bentoml serve` and the Bento import, makes it from the environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import bentoml

from include.mlops.config import ConfigError, PipelineConfig, load_folder
from include.serving import admin, request_gate
from include.serving.model_server import ModelServer
from include.serving.routes import ModelSchema, max_body_bytes, prediction_api, prediction_routes
from include.serving.settings import Settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "mlops_serving"


def create_service(
    settings: Settings, on_worker_start: Callable[[], None] | None = None, metrics_registry: Any = None
) -> bentoml.Service:
    """The service of every pipeline config in `settings.config_dir` (one that does not load is left out, with the
    reason logged; none to serve is a ConfigError). `on_worker_start` runs in each worker before its models load;
    `metrics_registry`: where the service's own Prometheus metrics go (default: prometheus_client's)."""
    schemas = {name: ModelSchema.of(config, settings.max_records) for name, config in served_configs(settings).items()}
    routes = prediction_routes(schemas)
    # The instance of this worker, once BentoML has made it (the admin API and the gate ask it).
    instances: list[ModelServer] = []

    def __init__(self: ModelServer) -> None:
        if on_worker_start is not None:
            on_worker_start()
        ModelServer.__init__(self, settings, schemas, metrics_registry)
        instances[:] = [self]

    def current() -> ModelServer:
        return instances[0]

    namespace: dict[str, Any] = {"__init__": __init__, "__doc__": ModelServer.__doc__, "__module__": __name__}
    namespace.update(prediction_api(route, schemas[route.model]) for route in routes.values())
    # Per-request costs that buy nothing by default, measured on a one-record prediction (benchmarks/serving.py):
    # OpenTelemetry spans, which go nowhere unless BENTOML_CONFIG configures a tracing exporter (~40 % of the
    # CPU), and an access log line, which the inference log, BentoML's request metrics and the gate's "refused"
    # lines already cover (~15 %). A BENTOML_CONFIG that sets `tracing` or `logging.access` for the service wins.
    config = {
        "workers": settings.workers,
        "traffic": {"timeout": 60},
        "tracing": {"excluded_urls": list(routes)},
        "logging": {"access": {"enabled": False}},
    }
    service = bentoml.service(name=SERVICE_NAME, **config)(type("ModelService", (ModelServer,), namespace))
    service.mount_asgi_app(admin.admin_api(settings.admin_token, current), path="/admin")
    service.add_asgi_middleware(
        request_gate.RequestGate,
        routes={path: (route.model, route.request) for path, route in routes.items()},
        models=list(schemas),
        max_body_bytes=max_body_bytes(settings.max_records),
        ready=lambda model: current().ready(model),
        admin=("/admin/", admin.authorizes(settings.admin_token), admin.TOKEN_REQUIRED),
    )
    return service


def served_configs(settings: Settings) -> dict[str, PipelineConfig]:
    folder = load_folder(settings.config_dir)
    for error in folder.errors:
        logger.error("not served: %s", error)
    if not folder.configs:
        raise ConfigError(f"{settings.config_dir}: no pipeline config to serve")
    return {config.name: config for config in folder.configs}
