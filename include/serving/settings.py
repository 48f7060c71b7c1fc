"""The model service's settings: read from the environment in one place (`Settings.from_env`), checked when made.

The variables and what they mean are listed in include/serving/service.py, the module `bentoml serve` imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from include.mlops.config import CONFIG_DIR, ConfigError
from include.mlops.object_store import ObjectStore


@dataclass(frozen=True)
class Settings:
    config_dir: Path
    state_dir: Path
    max_records: int = 1000
    workers: int = 1
    model_tags: tuple[str, ...] = ()
    tracking_uri: str | None = None
    admin_token: str | None = None
    inference_log_url: str | None = None
    drift_metrics_seconds: float = 30.0
    model_store: ObjectStore | None = None
    pointer_check_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not self.config_dir.is_dir():
            raise ConfigError(f"MLOPS_CONFIG_DIR: {self.config_dir} is not a folder of pipeline configs")
        for name, value in (
            ("MLOPS_MAX_RECORDS", self.max_records),
            ("MLOPS_SERVING_WORKERS", self.workers),
            ("MLOPS_DRIFT_METRICS_SECONDS", self.drift_metrics_seconds),
            ("MLOPS_POINTER_CHECK_SECONDS", self.pointer_check_seconds),
        ):
            if not value > 0:
                raise ConfigError(f"{name}: must be above 0, got {value}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        bentoml_home = Path(env.get("BENTOML_HOME") or Path.home() / "bentoml")
        return cls(
            config_dir=Path(env.get("MLOPS_CONFIG_DIR") or CONFIG_DIR),
            state_dir=Path(env.get("MLOPS_SERVING_STATE_DIR") or bentoml_home / "serving"),
            max_records=_number(env, "MLOPS_MAX_RECORDS", int, 1000),
            workers=_number(env, "MLOPS_SERVING_WORKERS", int, 1),
            model_tags=tuple(t.strip() for t in (env.get("MLOPS_MODEL_TAG") or "").split(",") if t.strip()),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            admin_token=env.get("MLOPS_ADMIN_TOKEN") or None,
            inference_log_url=env.get("MLOPS_INFERENCE_LOG_URL") or None,
            drift_metrics_seconds=_number(env, "MLOPS_DRIFT_METRICS_SECONDS", float, 30.0),
            model_store=ObjectStore.from_environment(env),
            pointer_check_seconds=_number(env, "MLOPS_POINTER_CHECK_SECONDS", float, 1.0),
        )


def _number(env: Mapping[str, str], name: str, kind: type[int] | type[float], default: float) -> Any:
    text = env.get(name) or ""
    if not text:
        return default
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{name}: {text!r} is not {'a whole number' if kind is int else 'a number'}") from None
