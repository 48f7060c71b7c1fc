"""Which model each route serves: one slot per model, the pointer file every worker follows, the champion, and
a challenger on trial beside it (a shadow or canary rollout).

Each model of the service has a slot: what it serves (a `ServedModel`), a lock, and a pointer file
`models/<model>.json` in the state folder naming the tag it serves. A switch loads and checks the new model beside
the served one, writes the pointer atomically (a temporary file renamed over it, so a reader sees the old pointer
or the new one, never half of one) and then swaps one reference: requests in flight finish on the old model.
Every worker watches the pointers' mtimes and follows them, and a restarted service reads them first. Switches of
one model in different workers are serialised by an exclusive lock on `models/<model>.lock`, so the last pointer
written is what every worker ends up on. A switch of one model never touches another model's slot.

A rollout loads a challenger beside the served model (the champion) and records it in the same pointer file, so
that every worker follows it and a restarted service resumes it. In `shadow` mode the champion answers and the
challenger scores the same records off the request path; in `canary` mode the challenger answers a share of
the requests (sticky by a key the client sends, salted per rollout) and the champion scores those off the path.
One rollout per model at a time; switching the model (to the challenger: a promotion) ends it.

With an object store (MLOPS_MODEL_STORE_URL, include/mlops/object_store.py) the service runs as replicas that
share nothing on disk: the pointers are objects in the store, which every replica's workers poll (by ETag), and
a tag a replica does not have is pulled from the store, checked against its SHA-256, and put into the replica's
own model store before it is loaded. A corrupted object is refused and the served model stays.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from include.mlops import deployment, object_store
from include.mlops.config import PipelineConfig
from include.mlops.object_store import ObjectNotFound, ObjectStore, ObjectStoreError
from include.serving.models import ModelNotFound, ModelRejected, ServedModel, load_model, version_of

logger = logging.getLogger(__name__)

POINTER_FOLDER = "models"
# In the object store the pointers sit beside the published models (include/mlops/object_store.py).
POINTER_FOLDER_IN_STORE = "pointers"
CHAMPION_ALIAS = "champion"
Role = Literal["champion", "challenger"]
ROLLOUT_MODES = ("shadow", "canary")


class RolloutRefused(RuntimeError):
    """A rollout cannot start now (another is on, or nothing serves to compare with): HTTP 409."""


@dataclass(frozen=True)
class RolloutPlan:
    """What a rollout is, as the pointer file records it."""

    tag: str
    mode: Literal["shadow", "canary"]
    share: float  # of requests the challenger answers (canary); 0 in a shadow rollout
    started_at: str  # ISO 8601, UTC; also the salt of the canary's sticky keys

    @classmethod
    def of(cls, content: Any) -> RolloutPlan | None:
        if not isinstance(content, dict):
            return None
        try:
            return cls(str(content["tag"]), content["mode"], float(content["share"]), str(content["started_at"]))
        except (KeyError, TypeError, ValueError):
            logger.warning("ignoring an unreadable rollout in a model pointer: %r", content)
            return None


@dataclass(frozen=True)
class Rollout:
    """A rollout on this worker: its plan and the loaded challenger."""

    plan: RolloutPlan
    challenger: ServedModel

    def answered_by_challenger(self, key: str | None) -> bool:
        """Whether the challenger answers this request: never in shadow mode; in canary mode for `share` of the
        keys (the same key always lands on the same side within one rollout), or at random without a key."""
        if self.plan.mode != "canary":
            return False
        if key is None:
            return random.random() < self.plan.share
        digest = hashlib.blake2b(f"{self.plan.started_at}|{key}".encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64 < self.plan.share


def _pointer_content(tag: str, previous_tag: str | None, rollout: RolloutPlan | None) -> dict[str, Any]:
    return {
        "tag": tag,
        "previous_tag": previous_tag,
        "switched_at": dt.datetime.now(dt.UTC).isoformat(),
        "rollout": asdict(rollout) if rollout else None,
    }


def _pointer_state(content: Any, where: str) -> tuple[str | None, RolloutPlan | None]:
    try:
        return content["tag"], RolloutPlan.of(content.get("rollout"))
    except (KeyError, TypeError, AttributeError) as exc:
        logger.warning("ignoring the unreadable model pointer %s: %s", where, exc)
        return None, None


@contextmanager
def _exclusive(lock_path: Path) -> Generator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ModelPointer:
    """The pointer in the state folder, shared by the workers of one service."""

    state_dir: Path
    model: str

    @property
    def path(self) -> Path:
        return self.state_dir / POINTER_FOLDER / f"{self.model}.json"

    @property
    def where(self) -> str:
        return str(self.path)

    def revision(self) -> int | None:
        """When the pointer last changed (None when there is none): one stat, cheap enough to ask every second."""
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def read(self) -> str | None:
        """The tag the pointer names, or None when there is no (readable) pointer."""
        return self.read_state()[0]

    def read_state(self) -> tuple[str | None, RolloutPlan | None]:
        """The tag the pointer names and the rollout it records (None, None when there is no readable pointer)."""
        try:
            content = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as exc:
            logger.warning("ignoring the unreadable model pointer %s: %s", self.path, exc)
            return None, None
        return _pointer_state(content, self.where)

    def write(self, tag: str, previous_tag: str | None, rollout: RolloutPlan | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.path.parent, prefix=f".{self.model}.", delete=False) as tmp:
            json.dump(_pointer_content(tag, previous_tag, rollout), tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp.name, self.path)

    def switching(self):
        """Held while a worker switches this model, so that two switches do not interleave across workers."""
        return _exclusive(self.path.with_suffix(".lock"))


@dataclass(frozen=True)
class StoredModelPointer:
    """The pointer in the object store, shared by every replica of the service (and each one's workers).

    An object store write replaces the whole object, so a reader sees the old pointer or the new one. Switches
    within a replica are serialised by a lock file in its state folder; across replicas the last pointer written
    wins, and every replica ends up on it."""

    store: ObjectStore
    state_dir: Path
    model: str

    @property
    def key(self) -> str:
        return self.store.key(POINTER_FOLDER_IN_STORE, f"{self.model}.json")

    @property
    def where(self) -> str:
        return f"s3://{self.store.bucket}/{self.key}"

    def revision(self) -> str | None:
        """The pointer object's ETag (None when there is none); raises ObjectStoreError while the store is down."""
        return self.store.revision(self.key)

    def read(self) -> str | None:
        return self.read_state()[0]

    def read_state(self) -> tuple[str | None, RolloutPlan | None]:
        try:
            content = self.store.get_json(self.key)
        except ObjectNotFound:
            return None, None
        except (ObjectStoreError, ValueError) as exc:
            logger.warning("cannot read the model pointer %s: %s", self.where, exc)
            return None, None
        return _pointer_state(content, self.where)

    def write(self, tag: str, previous_tag: str | None, rollout: RolloutPlan | None = None) -> None:
        self.store.put_json(self.key, _pointer_content(tag, previous_tag, rollout))

    def switching(self):
        return _exclusive(self.state_dir / POINTER_FOLDER / f"{self.model}.lock")


class ModelSlot:
    """One model's place in the service: the model its routes serve, a challenger on trial beside it, and
    switching either without downtime."""

    def __init__(
        self, config: PipelineConfig, record: type[BaseModel], state_dir: Path, store: ObjectStore | None = None
    ) -> None:
        self.config = config
        self.record = record
        self.state_dir = state_dir
        # With an object store, models are pulled from it and the pointer is shared by every replica there.
        self.store = store
        self.pointer: ModelPointer | StoredModelPointer = (
            ModelPointer(state_dir, config.name) if store is None else StoredModelPointer(store, state_dir, config.name)
        )
        self.served: ServedModel | None = None
        self.rollout: Rollout | None = None
        self._lock = threading.Lock()
        try:
            self._pointer_revision = self.pointer.revision()
        except ObjectStoreError as exc:
            logger.warning("%s: the model pointer cannot be read yet: %s", config.name, exc)
            self._pointer_revision = None

    @property
    def name(self) -> str:
        return self.config.name

    def start(self, candidates: Iterable[tuple[str, str]]) -> None:
        """Serve the first of `candidates` ((where it was named, tag), in order of preference) that loads, and
        resume the rollout the pointer records."""
        for source, tag in candidates:
            try:
                self.served = self._load(tag)
            except (ModelNotFound, ModelRejected) as exc:
                logger.warning("%s: cannot serve %s (from %s): %s", self.name, tag, source, exc)
                continue
            logger.info("%s: serving %s (from %s)", self.name, self.served.tag, source)
            break
        else:
            logger.warning(
                "%s: no model to serve until one is switched to (POST /admin/models/%s)", self.name, self.name
            )
            return
        tag, plan = self.pointer.read_state()
        if plan is not None and tag == self.served.tag:
            self.rollout = self._resume(plan)

    def switch(self, tag: str) -> tuple[ServedModel, str | None]:
        """Load and check `tag` beside the served model, point every worker at it, then swap. Returns the new
        model and the tag served before; raises ModelNotFound or ModelRejected with the old model serving.
        A rollout on ends: its challenger is what now serves (a promotion, without loading it again), or the
        comparison it made no longer holds."""
        with self._lock, self.pointer.switching():
            previous = self.served.tag if self.served else None
            rollout = self.rollout
            promoted = rollout is not None and rollout.challenger.tag == tag
            served = rollout.challenger if promoted else self._load(tag)
            self.pointer.write(served.tag, previous)
            self._pointer_revision = self.pointer.revision()
            self.served, self.rollout = served, None
        if rollout is not None:
            outcome = "promoted" if promoted else f"ended by the switch to {served.tag}"
            logger.info("%s: the %s rollout of %s %s", self.name, rollout.plan.mode, rollout.plan.tag, outcome)
        logger.info("%s: switched from %s to %s", self.name, previous, served.tag)
        return served, previous

    def start_rollout(self, tag: str, mode: str, share: float) -> Rollout:
        """Load and check the challenger `tag` beside the served model and record the rollout in the pointer.
        Raises RolloutRefused (one is on already, or nothing serves), ModelNotFound or ModelRejected; the
        served model is untouched either way."""
        if mode not in ROLLOUT_MODES:
            raise ModelRejected(f"mode {mode!r}: a rollout is one of {', '.join(ROLLOUT_MODES)}")
        if mode == "canary" and not 0 < share < 1:
            raise ModelRejected(f"share {share}: a canary's share of requests must be above 0 and below 1")
        with self._lock, self.pointer.switching():
            self._follow(*self.pointer.read_state())  # another worker may have started one a moment ago
            if self.rollout is not None:
                plan = self.rollout.plan
                raise RolloutRefused(
                    f"a {plan.mode} rollout of {plan.tag} is on since {plan.started_at}; end it "
                    f"(DELETE /admin/models/{self.name}/rollout) or promote it before starting another"
                )
            if self.served is None:
                raise RolloutRefused(
                    f"{self.name} serves no model yet: there is no champion to compare a challenger with"
                )
            if tag == self.served.tag:
                raise ModelRejected(f"{tag} is the model {self.name} serves already, not a challenger")
            challenger = self._load(tag)
            plan = RolloutPlan(tag, mode, share if mode == "canary" else 0.0, dt.datetime.now(dt.UTC).isoformat())
            self.pointer.write(self.served.tag, self.served.tag, plan)
            self._pointer_revision = self.pointer.revision()
            self.rollout = Rollout(plan, challenger)
        logger.info("%s: %s rollout of %s beside %s started", self.name, mode, tag, self.served.tag)
        return self.rollout

    def end_rollout(self) -> RolloutPlan | None:
        """Unload the challenger and record that no rollout is on; returns the rollout that ended (None: none)."""
        with self._lock, self.pointer.switching():
            tag, recorded = self.pointer.read_state()
            self._follow(tag, recorded)
            # The recorded one counts too: its challenger may no longer load, but the pointer must forget it.
            ended = self.rollout.plan if self.rollout else recorded
            if ended is None:
                return None
            current = self.served.tag if self.served else tag
            if current is not None:
                self.pointer.write(current, current)
                self._pointer_revision = self.pointer.revision()
            self.rollout = None
        logger.info("%s: the %s rollout of %s ended; %s serves alone", self.name, ended.mode, ended.tag, current)
        return ended

    def follow_pointer(self) -> bool:
        """Switch to the model (and rollout) another worker switched to, when the pointer changed; True when
        anything changed."""
        if self.pointer.revision() == self._pointer_revision:
            return False
        with self._lock, self.pointer.switching():
            self._pointer_revision = self.pointer.revision()
            return self._follow(*self.pointer.read_state())

    def _follow(self, tag: str | None, plan: RolloutPlan | None) -> bool:
        changed = False
        current = self.served.tag if self.served else None
        if tag is not None and tag != current:
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
            changed = True
        if (self.rollout.plan if self.rollout else None) != plan:
            self.rollout = None if plan is None else self._resume(plan)
            changed = True
        return changed

    def _resume(self, plan: RolloutPlan) -> Rollout | None:
        """The recorded rollout with its challenger loaded again, or None (logged) when it no longer loads."""
        try:
            rollout = Rollout(plan, self._load(plan.tag))
        except (ModelNotFound, ModelRejected) as exc:
            logger.error(
                "%s: the recorded %s rollout of %s cannot be resumed, its challenger does not load: %s",
                self.name,
                plan.mode,
                plan.tag,
                exc,
            )
            return None
        logger.info("%s: %s rollout of %s (since %s) resumed", self.name, plan.mode, plan.tag, plan.started_at)
        return rollout

    def _load(self, tag: str) -> ServedModel:
        # A tag names its model before the colon; BentoML keeps names in lower case.
        if tag.partition(":")[0].lower() != self.name:
            raise ModelRejected(f"{tag} is not a model of {self.name} (its tags are {self.name}:v<version>)")
        try:
            return load_model(tag, self.config, self.record)
        except ModelNotFound:
            if self.store is None:
                raise
        self._pull(tag)
        return load_model(tag, self.config, self.record)

    def _pull(self, tag: str) -> None:
        """Put the published model `tag` into this replica's model store, once its checksum matched; raises
        ModelNotFound (not published, or the store does not answer) or ModelRejected (a corrupted object)."""
        assert self.store is not None
        # One worker pulls; the others find it in the model store when they get the lock.
        with _exclusive(self.state_dir / "pulls" / f"{tag.replace(':', '_')}.lock"):
            try:
                load_model(tag, self.config, self.record)
                return
            except ModelNotFound:
                pass
            try:
                onnx_bytes, published = object_store.fetch(self.store, tag)
            except ObjectNotFound as exc:
                raise ModelNotFound(
                    f"{tag} is not in the BentoML model store nor published in {self.store.url}"
                ) from exc
            except object_store.ChecksumMismatch as exc:
                raise ModelRejected(f"{tag} refused: {exc}") from exc
            except ObjectStoreError as exc:
                raise ModelNotFound(f"{tag} cannot be pulled: {exc}") from exc
            try:
                deployment.save_to_model_store(onnx_bytes, self.config, version_of(tag), published.lineage)
            except deployment.DeploymentError as exc:  # the local store has another model under the tag
                raise ModelRejected(f"{tag} refused: {exc}") from exc
        logger.info(
            "%s: pulled %s (%d bytes, sha256 %s) from %s",
            self.name,
            tag,
            published.size,
            published.sha256,
            self.store.url,
        )


def champion_version(tracking_uri: str, registered_name: str) -> str | None:
    """The version the `champion` alias of `registered_name` points to in MLflow, or None (with the reason
    logged) when there is no such alias or MLflow does not answer."""
    # Fail in seconds rather than after MLflow's default minutes of retries: the service starts either way.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    from mlflow import MlflowClient

    try:
        # The registry too: without it MLflow takes MLFLOW_REGISTRY_URI from the environment, wherever that points.
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        version = client.get_model_version_by_alias(registered_name, CHAMPION_ALIAS)
    except Exception as exc:  # MlflowException, or a connection error from below it
        logger.warning("no %s version of %s from MLflow at %s: %s", CHAMPION_ALIAS, registered_name, tracking_uri, exc)
        return None
    return str(version.version)
