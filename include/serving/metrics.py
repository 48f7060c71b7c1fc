"""The model service's own Prometheus metrics (BentoML adds its request metrics beside them on /metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metrics:
    predictions: Any
    inference_log_dropped: Any
    inference_log_writer_restarts: Any
    model_switches: Any
    model_seconds: Any
    scoring_errors: Any
    rollout_comparisons: Any
    shadow_dropped: Any
    unseen_categories: Any

    @classmethod
    def create(cls, registry: Any = None) -> Metrics:
        """The metrics, in `registry` (default: prometheus_client's, which BentoML's /metrics shows)."""
        # Imported here, in the worker, where BentoML has set PROMETHEUS_MULTIPROC_DIR: the counters of all
        # workers then add up on /metrics.
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = REGISTRY if registry is None else registry
        by_model_role = ["model", "model_version", "role"]
        return cls(
            Counter(
                "mlops_predictions",
                "Predictions served",
                ["model", "model_version", "role", "predicted_class"],
                registry=registry,
            ),
            Counter(
                "mlops_inference_log_dropped",
                "Predictions not written to the inference log",
                ["model"],
                registry=registry,
            ),
            Counter(
                "mlops_inference_log_writer_restarts",
                "Inference log writer processes that died and were replaced",
                registry=registry,
            ),
            Counter("mlops_model_switches", "Model switches by outcome", ["model", "outcome"], registry=registry),
            Histogram(
                "mlops_model_duration_seconds",
                "The model's time per scoring (one request, or one batch), answered or scored off the request path",
                by_model_role,
                buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                registry=registry,
            ),
            Counter(
                "mlops_scoring_errors",
                "Scorings that raised (a challenger's: the champion answered)",
                by_model_role,
                registry=registry,
            ),
            Counter(
                "mlops_rollout_comparisons",
                "Records both models of a rollout scored, by whether they agreed",
                ["model", "challenger_version", "agreement"],
                registry=registry,
            ),
            Counter(
                "mlops_shadow_dropped",
                "Records not scored off the request path (queue full)",
                ["model"],
                registry=registry,
            ),
            Counter(
                "mlops_unseen_categories",
                "Answered records whose categorical feature held a value the model's encoding does not know",
                ["model", "model_version", "feature"],
                registry=registry,
            ),
        )
