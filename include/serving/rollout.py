"""Which model to serve: the pointer file every worker follows, and the champion in MLflow.

`current_model.json` in the state folder names the model the service serves. A switch writes it atomically
(a temporary file renamed over it), so a reader sees the old pointer or the new one, never half of one. Every
worker watches its mtime and follows it, and a restarted service reads it first. Switches of different workers
are serialised by an exclusive lock on `switch.lock` beside it, so the last pointer written is the model that
every worker ends up on.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

POINTER_FILE = "current_model.json"
LOCK_FILE = "switch.lock"
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class ModelPointer:
    state_dir: Path

    @property
    def path(self) -> Path:
        return self.state_dir / POINTER_FILE

    def mtime_ns(self) -> int | None:
        """When the pointer last changed (None when there is none): one stat, cheap enough to ask every second."""
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def read(self) -> str | None:
        """The tag the pointer names, or None when there is no (readable) pointer."""
        try:
            return json.loads(self.path.read_text())["tag"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring the unreadable model pointer %s: %s", self.path, exc)
            return None

    def write(self, tag: str, previous_tag: str | None) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        content = {"tag": tag, "previous_tag": previous_tag, "switched_at": dt.datetime.now(dt.UTC).isoformat()}
        with tempfile.NamedTemporaryFile("w", dir=self.state_dir, prefix=".current_model.", delete=False) as tmp:
            json.dump(content, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, self.path)

    @contextmanager
    def switching(self) -> Generator[None]:
        """Held while a worker switches models, so that two switches do not interleave across workers."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def champion_version(tracking_uri: str, registered_name: str) -> str | None:
    """The version the `champion` alias of `registered_name` points to in MLflow, or None (with the reason
    logged) when there is no such alias or MLflow does not answer."""
    # Fail in seconds rather than after MLflow's default minutes of retries: the service starts either way.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    try:
        version = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(registered_name, CHAMPION_ALIAS)
    except Exception as exc:  # MlflowException, or a connection error from below it
        logger.warning("no %s version of %s from MLflow at %s: %s", CHAMPION_ALIAS, registered_name, tracking_uri, exc)
        return None
    return str(version.version)
