"""`python -m include.mlops.publish_batch` against the real Redis: the arrival reaches a subscriber of the model's
channel as the watcher reads it, and a message nobody hears is reported as lost."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from devstack.processes import free_port
from include.mlops.batch_arrival import BatchArrival, arrival_channel, parse_message
from tests.conftest import REPO_ROOT
from tests.fixtures.services import REDIS_HOST, REDIS_PORT

pytestmark = pytest.mark.redis
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"


def _publish_batch(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "include.mlops.publish_batch", "--redis-url", REDIS_URL, *args]
    return subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_the_arrival_reaches_a_subscriber_of_the_models_channel_with_an_absolute_path(tmp_path: Path):
    model = f"publish_test_{secrets.token_hex(4)}"
    client = redis.Redis(REDIS_HOST, REDIS_PORT)
    subscription = client.pubsub()
    subscription.subscribe(arrival_channel(model))
    try:
        assert subscription.get_message(timeout=5)["type"] == "subscribe"
        done = _publish_batch("--model", model, "--path", "exports/day.csv")
        assert done.returncode == 0, done.stderr
        message = subscription.get_message(timeout=5)
    finally:
        subscription.close()
        client.close()
    assert message["channel"].decode() == arrival_channel(model)
    assert parse_message(message["data"]) == BatchArrival(str(REPO_ROOT / "exports" / "day.csv"), model)
    assert "1 listening" in done.stdout


def test_a_message_nobody_hears_is_reported_lost():
    model = f"publish_test_{secrets.token_hex(4)}"
    done = _publish_batch("--model", model, "--path", "/data/day.csv")
    assert done.returncode == 1
    assert f"nobody listens on {arrival_channel(model)}" in done.stderr and "/data/day.csv is lost" in done.stderr


def test_a_model_name_that_cannot_be_a_channel_is_refused():
    done = _publish_batch("--model", "my model", "--path", "/data/day.csv")
    assert done.returncode == 2 and "cannot name a channel" in done.stderr


def test_an_unreachable_redis_is_named():
    unused = f"redis://127.0.0.1:{free_port()}/0"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [
        sys.executable,
        "-m",
        "include.mlops.publish_batch",
        "--redis-url",
        unused,
        "--model",
        "m",
        "--path",
        "x",
    ]
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"Redis at {unused} refused the message" in done.stderr
