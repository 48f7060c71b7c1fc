"""Which model each route serves: one slot per model, the pointer file every worker follows, and the champion.

Each model of the service has a slot: what it serves (a `ServedModel`), a lock, and a pointer file
`models/<model>.json` in the state folder naming the tag it serves. A switch loads and checks the new model beside
the served one, writes the pointer atomically (a temporary file renamed over it, so a reader sees the old pointer
or the new one, never half of one) and then swaps one reference: requests in flight finish on the old model.
Every worker watches the pointers' mtimes and follows them, and a restarted service reads them first. Switches of
one model in different workers are serialised by an exclusive lock on `models/<model>.lock`, so the last pointer
written is what every worker ends up on. A switch of one model never touches another model's slot.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from include.mlops.config import PipelineConfig
from include.serving.models import ModelNotFound, ModelRejected, ServedModel, load_model

logger = logging.getLogger(__name__)

POINTER_FOLDER = "models"
CHAMPION_ALIAS = "champion"


@dataclass(frozen=True)
class ModelPointer:
    state_dir: Path
    model: str

    @property
    def path(self) -> Path:
        return self.state_dir / POINTER_FOLDER / f"{self.model}.json"

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        content = {"tag": tag, "previous_tag": previous_tag, "switched_at": dt.datetime.now(dt.UTC).isoformat()}
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.model}.", delete=False) as tmp:
            json.dump(content, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, self.path)

    @contextmanager
    def switching(self) -> Generator[None]:
        """Held while a worker switches this model, so that two switches do not interleave across workers."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


class ModelSlot:
    """One model's place in the service: the model its routes serve, and switching it without downtime."""

    def __init__(self, config: PipelineConfig, record: type[BaseModel], state_dir: Path) -> None:
        self.config = config
        self.record = record
        self.pointer = ModelPointer(state_dir, config.name)
        self.served: ServedModel | None = None
        self._lock = threading.Lock()
        self._pointer_mtime = self.pointer.mtime_ns()

    @property
    def name(self) -> str:
        return self.config.name

    def start(self, candidates: Iterable[tuple[str, str]]) -> None:
        """Serve the first of `candidates` ((where it was named, tag), in order of preference) that loads."""
        for source, tag in candidates:
            try:
                self.served = self._load(tag)
            except (ModelNotFound, ModelRejected) as exc:
                logger.warning("%s: cannot serve %s (from %s): %s", self.name, tag, source, exc)
                continue
            logger.info("%s: serving %s (from %s)", self.name, self.served.tag, source)
            return
        logger.warning("%s: no model to serve until one is switched to (POST /admin/models/%s)", self.name, self.name)

    def switch(self, tag: str) -> tuple[ServedModel, str | None]:
        """Load and check `tag` beside the served model, point every worker at it, then swap. Returns the new
        model and the tag served before; raises ModelNotFound or ModelRejected with the old model serving."""
        with self._lock, self.pointer.switching():
            previous = self.served.tag if self.served else None
            served = self._load(tag)
            self.pointer.write(served.tag, previous)
            self._pointer_mtime = self.pointer.mtime_ns()
            self.served = served
        logger.info("%s: switched from %s to %s", self.name, previous, served.tag)
        return served, previous

    def follow_pointer(self) -> bool:
        """Switch to the model another worker switched to, when the pointer changed; True when it switched."""
        if self.pointer.mtime_ns() == self._pointer_mtime:
            return False
        with self._lock, self.pointer.switching():
            self._pointer_mtime = self.pointer.mtime_ns()
            tag = self.pointer.read()
            current = self.served.tag if self.served else None
            if tag is None or tag == current:
                return False
            try:
                self.served = self._load(tag)
            except (ModelNotFound, ModelRejected) as exc:
                logger.error(
                    "%s: the pointer names %s, which cannot be served; still serving %s: %s",
                    self.name,
                    tag,
                    current,
                    exc,
                )
                return False
        logger.info("%s: followed the pointer from %s to %s", self.name, current, tag)
        return True

    def _load(self, tag: str) -> ServedModel:
        # A tag names its model before the colon; BentoML keeps names in lower case.
        if tag.partition(":")[0].lower() != self.name:
            raise ModelRejected(f"{tag} is not a model of {self.name} (its tags are {self.name}:v<version>)")
        return load_model(tag, self.config, self.record)


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
