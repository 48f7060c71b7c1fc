"""A batch arrival: the message that says a file of rows is ready to be scored by a model.

It travels on a Redis pub/sub channel of its own per model, where an Airflow AssetWatcher
(`MessageQueueTrigger(scheme="redis+pubsub")`) turns it into an asset event whose DAG run reads it back. The message
is JSON: `{"path": "...", "model": "..."}`.

Redis pub/sub stores nothing: a message published while no triggerer is subscribed is gone, and `publish`
returns how many subscribers received it (0 says so). The Redis provider's trigger (4.7.1) also takes one message
and ends; the triggerer starts it again about 2 s later. A message close behind another is lost too: one that
came in the same poll is dropped with the subscription, one in the gap has nobody to hear it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CHANNEL_PREFIX = "mlops.batch-arrivals."


class ArrivalError(ValueError):
    """A batch arrival message, or the asset event carrying it, is not what this module writes."""


class Publisher(Protocol):
    """What `publish` needs of a Redis client (`redis.Redis`)."""

    def publish(self, channel: str, message: str) -> int: ...


@dataclass(frozen=True)
class BatchArrival:
    path: str
    model: str

    def to_message(self) -> str:
        return json.dumps({"path": self.path, "model": self.model}, sort_keys=True)


def arrival_channel(model: str) -> str:
    """The channel a model's arrivals are published on: one per model, so that an arrival starts only its own
    model's DAG (watchers with the same trigger arguments share one trigger, and each event goes to all of
    their assets)."""
    if not model or any(c.isspace() for c in model):
        raise ArrivalError(f"model name {model!r} cannot name a channel: it is empty or holds white space")
    return CHANNEL_PREFIX + model


def parse_message(data: str | bytes) -> BatchArrival:
    """The arrival a message carries; `ArrivalError` names what is missing or malformed."""
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ArrivalError(f"batch arrival message is not JSON ({error}): {_excerpt(data)}") from None
    if not isinstance(body, dict):
        raise ArrivalError(f"batch arrival message is not a JSON object: {_excerpt(data)}")
    missing = [key for key in ("path", "model") if not isinstance(body.get(key), str) or not body[key]]
    if missing:
        raise ArrivalError(f"batch arrival message lacks a non-empty string {', '.join(missing)}: {_excerpt(data)}")
    return BatchArrival(path=body["path"], model=body["model"])


def arrival_from_event_extra(extra: Mapping[str, Any]) -> BatchArrival:
    """The arrival behind one asset event made by the watcher: Airflow stores the trigger's event as
    `extra["payload"]`, and the Redis trigger's event is the pub/sub message (`channel`, `data`, ...)."""
    payload = extra.get("payload")
    if not isinstance(payload, Mapping) or "data" not in payload:
        raise ArrivalError(
            f"asset event extra has no Redis message under 'payload' (was it made by the arrival watcher?): {extra!r}"
        )
    return parse_message(payload["data"])


def require_file(arrival: BatchArrival, model: str) -> Path:
    """The arrival's file, checked before anything is read or written: it is for `model` and exists."""
    if arrival.model != model:
        raise ArrivalError(f"batch arrival for model {arrival.model!r} reached model {model!r}: {arrival.path}")
    path = Path(arrival.path)
    if not path.is_file():
        raise FileNotFoundError(f"batch arrival for model {model!r} names {arrival.path}, which is not a file")
    return path


def publish(client: Publisher, arrival: BatchArrival) -> int:
    """Publish `arrival` on its model's channel; returns how many subscribers received it (0: nobody listened,
    and the message is lost)."""
    return int(client.publish(arrival_channel(arrival.model), arrival.to_message()))


def _excerpt(data: str | bytes, chars: int = 200) -> str:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return repr(text[:chars])
