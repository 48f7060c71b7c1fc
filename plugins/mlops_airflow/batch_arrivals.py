"""A model's batch arrivals as an Airflow asset: a DAG scheduled on it is started by each arrival message.

The asset's watcher runs in the triggerer: the Redis provider's trigger subscribes to the model's channel and
each message becomes an asset event whose `extra["payload"]` is the message; the run reads it from its context's
`triggering_asset_events` (`arrivals_of_run`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher

from include.mlops.batch_arrival import BatchArrival, arrival_channel, arrival_from_event_extra

REDIS_CONN_ID = "redis_default"
# The Redis trigger sleeps this long whenever its channel has nothing, so it bounds the delay from publish to
# event; the provider's default (60 s) makes a batch wait a minute. Messages are buffered in the subscription
# while it sleeps.
POLL_SECONDS = 1.0


def arrival_asset_name(model: str) -> str:
    return f"batch_arrivals__{model}"


def arrival_asset(model: str, redis_conn_id: str = REDIS_CONN_ID, poll_seconds: float = POLL_SECONDS) -> Asset:
    """The asset of `model`'s batch arrivals, watched on its Redis channel."""
    trigger = MessageQueueTrigger(
        scheme="redis+pubsub",
        channels=[arrival_channel(model)],
        redis_conn_id=redis_conn_id,
        poll_interval=poll_seconds,
    )
    name = arrival_asset_name(model)
    return Asset(name, watchers=[AssetWatcher(name=f"{name}__redis", trigger=trigger)])


def arrivals_of_run(triggering_asset_events: Mapping[Any, Sequence[Any]], model: str) -> list[BatchArrival]:
    """The arrivals that started this run, oldest first: a run consumes every event of its asset since the
    previous asset-triggered run, so arrivals close together may share one run."""
    events = triggering_asset_events[Asset(arrival_asset_name(model))]
    return [arrival_from_event_extra(event.extra) for event in events]
