"""Announce a batch of rows to a model: publish its arrival on the model's Redis channel, where the triggerer's
watcher turns it into an asset event that starts the model's DAG scheduled on it.

    python -m include.mlops.publish_batch --model fraud_detector --path exports/2026-12-07.csv [--redis-url URL]

Redis pub/sub keeps nothing: if no triggerer listens on the channel right now (Airflow is down, the DAG is
paused, or the watcher is between two messages), the message is lost. This exits 1 and says so; publish again.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from include.mlops.batch_arrival import ArrivalError, BatchArrival, arrival_channel, publish

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.mlops.publish_batch", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the model whose DAG scores the batch")
    parser.add_argument("--path", required=True, type=Path, help="the batch's file, as the Airflow tasks see it")
    default_url = os.environ.get("MLOPS_REDIS_URL", DEFAULT_REDIS_URL)
    parser.add_argument("--redis-url", default=default_url, help=f"default: $MLOPS_REDIS_URL or {DEFAULT_REDIS_URL}")
    args = parser.parse_args(argv)

    import redis

    # Absolute: the task that reads it runs in another working directory. Not checked here: a missing file is
    # the run's to report, so that it is seen in Airflow beside the runs that worked.
    arrival = BatchArrival(path=str(args.path.absolute()), model=args.model)
    try:
        channel = arrival_channel(arrival.model)
        client = redis.Redis.from_url(args.redis_url)
        try:
            receivers = publish(client, arrival)
        finally:
            client.close()
    except ArrivalError as error:
        print(f"publish_batch: {error}", file=sys.stderr)
        return 2
    except redis.RedisError as error:
        print(f"publish_batch: Redis at {args.redis_url} refused the message: {error}", file=sys.stderr)
        return 1
    if receivers == 0:
        print(
            f"publish_batch: nobody listens on {channel}, so the arrival of {arrival.path} is lost: is the triggerer "
            f"running, and the DAG scheduled on it unpaused? (Right after a message the watcher needs ~2 s to "
            "listen again.)",
            file=sys.stderr,
        )
        return 1
    print(f"published the arrival of {arrival.path} on {channel} ({receivers} listening)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
