"""Fixtures for the serving tests: real models in a temporary BentoML model store, and real service processes.

The models are fitted on the demo splits (tests/mlops/conftest.py), converted with `packaging.to_onnx` and
saved with `deployment.save_to_model_store`, as the pipeline does: v1 a gradient boosting model, v2 a logistic
regression (its predictions differ, so answers show which one served), v3 a store entry whose model.onnx is
not an ONNX model.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from include.mlops import deployment, packaging, training
from include.serving.models import new_session
from tests.fixtures.serving import InProcessService, Service, StartService, in_process_service, service_launcher
from tests.mlops import conftest as mlops_fixtures

# The demo config and its splits, shared with the model tests.
config = mlops_fixtures.config
splits = mlops_fixtures.splits

LINEAGE = {"mlflow_run_id": "0123456789abcdef", "lakefs_commit": "c" * 64}


@dataclass(frozen=True)
class StoredModels:
    home: Path
    onnx: dict[str, bytes]

    def tag(self, version: str) -> str:
        return f"fraud_detector:v{version}"


@pytest.fixture(scope="session")
def stored_models(config, splits, tmp_path_factory: pytest.TempPathFactory) -> StoredModels:
    """fraud_detector v1 (GradientBoosting), v2 (LogisticRegression), v3 (a corrupted model.onnx)."""
    candidates = {
        "1": training.CandidateSpec("gb", "GradientBoosting", {"n_estimators": 25, "max_depth": 3}),
        "2": training.CandidateSpec("lr", "LogisticRegression", {"C": 1.0, "max_iter": 500}),
    }
    onnx = {
        version: packaging.to_onnx(training.fit(training.build_pipeline(config, spec), config, splits["train"]), config)
        for version, spec in candidates.items()
    }
    onnx["3"] = b"this is not an ONNX model"
    models = StoredModels(Path(os.environ["BENTOML_HOME"]), onnx)
    for version, model in onnx.items():
        save_model(config, version, model)
    return models


def save_model(config, version: str, onnx_bytes: bytes) -> str:
    """`deployment.save_to_model_store` into the session's store (BENTOML_HOME), as the pipeline saves a model."""
    return deployment.save_to_model_store(onnx_bytes, config, version, {**LINEAGE, "mlflow_version": version})


@pytest.fixture
def start_service(stored_models: StoredModels, start_model_service: StartService) -> StartService:
    """Starts services of the test's own on the test models (keyword arguments are environment variables)."""
    return start_model_service


@pytest.fixture(scope="session")
def service(stored_models: StoredModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the tests that do not switch models: v1, inference log on SQLite (drift gauges read every
    second)."""
    database = tmp_path_factory.mktemp("inference-log") / "log.db"
    with service_launcher(tmp_path_factory) as start:
        yield start(
            MLOPS_MODEL_TAG="fraud_detector:v1",
            MLOPS_INFERENCE_LOG_URL=f"sqlite:///{database}",
            MLOPS_DRIFT_METRICS_SECONDS="1",
        )


def records_of(frame: pd.DataFrame, dataset, with_id: bool = True) -> list[dict[str, Any]]:
    """Rows as the JSON records a client sends, with the id (so that logged rows can be joined)."""
    return deployment.records_of(frame, dataset, with_id)


def offline_predictions(onnx_bytes: bytes, frame: pd.DataFrame, dataset) -> list[np.ndarray]:
    """What the ONNX model predicts for `frame` offline, through training.features_of and packaging.onnx_feeds."""
    feeds = packaging.onnx_feeds(training.features_of(frame, dataset), dataset)
    return new_session(onnx_bytes).run(None, feeds)


def logged_rows(url: str, request_id: str) -> list[dict[str, Any]]:
    """The inference log rows of one request, by record index (none while the table is not there)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            query = sa.text("SELECT * FROM inference_log WHERE request_id = :id ORDER BY record_index")
            return [dict(row._mapping) for row in connection.execute(query, {"id": request_id})]
    except sa.exc.DBAPIError:  # the table is not there yet
        return []
    finally:
        engine.dispose()


def wait_for(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def drift_check_row(run_id: str, version: str | None, end: dt.datetime, **figures) -> dict:
    """One row of drift_monitor's history, as `monitoring.record_check` takes it: a one-hour window ending at
    `end`, 800 rows, no verdict unless `figures` say otherwise."""
    return {
        "airflow_run_id": run_id,
        "model_name": "fraud_detector",
        "model_version": version,
        "window_start": end - dt.timedelta(hours=1),
        "window_end": end,
        "rows": 800,
        "malformed_rows": 0,
        "labelled_rows": 0,
        "retrain": False,
        "reason": "no drift",
        **figures,
    }


@pytest.fixture(scope="module")
def in_process(stored_models: StoredModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessService]:
    """The service of the demo config made by `create_service` and run in this process: v1, no inference log."""
    with in_process_service(tmp_path_factory, model_tags=("fraud_detector:v1",)) as service:
        yield service
