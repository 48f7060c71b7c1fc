"""The last drift check of live traffic of each version of each model on the service's /metrics, for Prometheus and
Grafana (a batch run's checks, source `batch` in the history, are on the MLOps page, not here).

Each model's drift monitor writes one row per check to the drift history, in the inference log's database
(include/mlops/monitoring.py); every worker reads the latest row per model and version every few seconds and
sets gauges (labelled `model`, `model_version`) that Prometheus scrapes with the service's other metrics. In
BentoML's multiprocess mode the gauges use `mostrecent`, so /metrics shows one value per model version however
many workers there are.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from include.mlops.monitoring import ONLINE, as_utc, drift_history

logger = logging.getLogger(__name__)


class DriftMetrics:
    def __init__(self, url: str, primary_metrics: Mapping[str, str], registry: Any = None):
        """`primary_metrics`: each model's primary metric (the `metric` label of its live score); `registry`: where
        the gauges go (default: prometheus_client's)."""
        # Made in the worker, where BentoML has set PROMETHEUS_MULTIPROC_DIR (see metrics.Metrics).
        from prometheus_client import REGISTRY, Gauge

        registry = REGISTRY if registry is None else registry

        self._engine = sa.create_engine(url, pool_pre_ping=True)
        self._metrics = dict(primary_metrics)

        def gauge(name: str, description: str, *labels: str) -> Gauge:
            labelnames = ["model", "model_version", *labels]
            return Gauge(name, description, labelnames, multiprocess_mode="mostrecent", registry=registry)

        self.drift_share = gauge("mlops_drift_share", "Share of features drifted in the last drift check")
        self.live_score = gauge("mlops_drift_live_score", "Primary metric on labelled live rows, last check", "metric")
        self.retraining = gauge("mlops_drift_retraining_requested", "1 when the last drift check asked to retrain")
        self.checked = gauge("mlops_drift_last_check_timestamp_seconds", "End of the window of the last drift check")
        self._failing = False

    def refresh(self) -> None:
        """Set the gauges from the latest check of each version (none before drift_monitor's first check); the
        live score from the latest check that had labelled rows enough to give one."""
        with self._engine.connect() as connection:
            if not sa.inspect(connection).has_table(drift_history.name):
                return
            checks = self._latest(connection)
            scored = self._latest(connection, drift_history.c.live_score.is_not(None))
        for row in checks:
            labels = (row.model_name, row.model_version)
            if row.drift_share is not None:
                self.drift_share.labels(*labels).set(row.drift_share)
            self.retraining.labels(*labels).set(1 if row.retrain else 0)
            self.checked.labels(*labels).set(as_utc(row.window_end).timestamp())
        for row in scored:
            self.live_score.labels(row.model_name, row.model_version, self._metrics[row.model_name]).set(row.live_score)

    def _latest(self, connection: sa.Connection, *conditions) -> list:
        """The latest check of live traffic per version of each of the service's models (of those meeting
        `conditions`)."""
        history = drift_history.c
        served = (history.model_name.in_(list(self._metrics)), history.model_version.is_not(None))
        latest = (
            sa.select(sa.func.max(history.id).label("id"))
            .where(*served, history.source == ONLINE, *conditions)
            .group_by(history.model_name, history.model_version)
            .subquery()
        )
        return connection.execute(sa.select(drift_history).join(latest, history.id == latest.c.id)).all()

    def follow(self, stopping: threading.Event, seconds: float) -> None:
        """Refresh every `seconds` until `stopping` is set; a database that is away only pauses the gauges."""
        while True:
            try:
                self.refresh()
                if self._failing:
                    logger.warning("drift history is readable again")
                self._failing = False
            except sa.exc.SQLAlchemyError as exc:
                if not self._failing:
                    logger.warning("cannot read the drift history; drift gauges keep their values: %s", exc)
                self._failing = True
            if stopping.wait(seconds):
                return
