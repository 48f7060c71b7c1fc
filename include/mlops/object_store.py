"""Models travel through the object store: the deploy task publishes, every model service replica pulls.

With `MLOPS_MODEL_STORE_URL=s3://<bucket>/<prefix>` (MinIO in compose, moto in tests, any S3 in production),
no volume is shared between the Airflow workers and the service. `MLOPS_MODEL_STORE_ENDPOINT_URL` points the
client at an S3-compatible server (MinIO) without changing where other S3 clients of the process go; unset,
boto3 decides (AWS_ENDPOINT_URL, or AWS). Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY, a profile, or the pod's role).

    <prefix>/models/<model>/<sha256>.onnx   the ONNX model, content-addressed: its key is its SHA-256
    <prefix>/tags/<model>/v<version>.json   what a tag names: {"tag", "key", "sha256", "size", "lineage",
                                            "published_at"}; a tag names one model for good
    <prefix>/pointers/<model>.json          what the service's replicas serve (include/serving/rollout.py)

A replica that is told to serve a tag it does not have reads the tag's record, downloads the object, and keeps
it only when its SHA-256 matches the key's (a corrupted or truncated object is refused: the old model serves
on); it then puts the model into its own BentoML model store (a local cache) with the same lineage labels the
worker's has.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STORE_URL_ENV = "MLOPS_MODEL_STORE_URL"
ENDPOINT_URL_ENV = "MLOPS_MODEL_STORE_ENDPOINT_URL"
# Each thread's S3 client, by the endpoint it was made for.
_clients = threading.local()


class ObjectStoreError(RuntimeError):
    """The object store cannot be reached, or refused a request; the message names the store and the key."""


class ObjectNotFound(ObjectStoreError):
    """No object under the key."""


class ChecksumMismatch(ObjectStoreError):
    """A downloaded model is not the one its key names (corrupted or truncated)."""


@dataclass(frozen=True)
class PublishedModel:
    tag: str
    key: str
    sha256: str
    size: int
    lineage: Mapping[str, str]


@dataclass(frozen=True)
class ObjectStore:
    """A bucket and a key prefix in an S3-compatible object store, at `endpoint_url` when one is given (otherwise
    `MLOPS_MODEL_STORE_ENDPOINT_URL`, else boto3's choice)."""

    bucket: str
    prefix: str
    endpoint_url: str | None = None

    @classmethod
    def from_url(cls, url: str, endpoint_url: str | None = None) -> ObjectStore:
        """`s3://<bucket>[/<prefix>]`; anything else raises ValueError naming what is wrong."""
        scheme, _, rest = url.partition("://")
        if scheme != "s3" or not rest:
            raise ValueError(f"{STORE_URL_ENV}={url!r}: expected s3://<bucket>[/<prefix>]")
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ValueError(f"{STORE_URL_ENV}={url!r}: the bucket is missing (s3://<bucket>[/<prefix>])")
        return cls(bucket, prefix.strip("/"), endpoint_url)

    @classmethod
    def from_environment(cls, env: Mapping[str, str] = os.environ) -> ObjectStore | None:
        """The store `MLOPS_MODEL_STORE_URL` names; None when it is unset (models stay in the local store)."""
        url = env.get(STORE_URL_ENV, "").strip()
        return cls.from_url(url) if url else None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def get(self, key: str) -> bytes:
        try:
            return self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            raise self._error("reading", key, exc) from exc

    def put(self, key: str, body: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        except Exception as exc:
            raise self._error("writing", key, exc) from exc

    def revision(self, key: str) -> str | None:
        """The object's ETag (it changes with every write), or None when there is no object."""
        try:
            return self._client().head_object(Bucket=self.bucket, Key=key)["ETag"]
        except Exception as exc:
            error = self._error("reading", key, exc)
            if isinstance(error, ObjectNotFound):
                return None
            raise error from exc

    def keys(self, prefix: str) -> list[str]:
        """The keys under `prefix` (a key prefix within the bucket), in key order."""
        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            return [entry["Key"] for page in pages for entry in page.get("Contents", [])]
        except Exception as exc:
            raise self._error("listing", prefix, exc) from exc

    def delete(self, keys: list[str]) -> None:
        for first in range(0, len(keys), 1000):  # at most 1,000 keys a request
            batch = keys[first : first + 1000]
            try:
                answer = self._client().delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
            except Exception as exc:
                raise self._error("deleting", batch[0], exc) from exc
            if errors := answer.get("Errors"):
                shown = ", ".join(f"{e['Key']} ({e.get('Code')})" for e in errors[:5])
                raise ObjectStoreError(f"deleting from s3://{self.bucket} at {self.endpoint} failed: {shown}")

    @property
    def endpoint(self) -> str:
        """Where requests go, for messages."""
        return self._endpoint_url() or os.environ.get("AWS_ENDPOINT_URL") or "AWS S3"

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key))

    def put_json(self, key: str, content: Any) -> None:
        self.put(key, json.dumps(content, indent=1).encode(), "application/json")

    def _client(self):
        # One client per thread, as boto3 advises, and kept: making one costs ~150 ms of CPU, and the service's
        # workers ask for the pointers every second.
        endpoint = self._endpoint_url()
        cached = getattr(_clients, "s3", None)
        if cached is not None and cached[0] == endpoint:
            return cached[1]
        import boto3
        from botocore.config import Config

        # Seconds, not minutes, when the store is down: a deploy fails and says so, a replica keeps serving.
        config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"})
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        _clients.s3 = (endpoint, client)
        return client

    def _endpoint_url(self) -> str | None:
        return self.endpoint_url or os.environ.get(ENDPOINT_URL_ENV) or None

    def _error(self, doing: str, key: str, exc: Exception) -> ObjectStoreError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        where = f"s3://{self.bucket}/{key}"
        if code in ("NoSuchKey", "404", "NotFound"):
            return ObjectNotFound(f"{where} does not exist")
        return ObjectStoreError(f"{doing} {where} at {self.endpoint} failed: {type(exc).__name__}: {exc}")


def tag_key(store: ObjectStore, tag: str) -> str:
    name, _, version = tag.partition(":")
    return store.key("tags", name, f"{version}.json")


def publish(store: ObjectStore, tag: str, onnx_bytes: bytes, lineage: Mapping[str, str]) -> PublishedModel:
    """Upload the model under its content address and record what `tag` names. Publishing the same model again
    is a no-op; another model under a published tag is refused (ObjectStoreError), as in the model store."""
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    name = tag.partition(":")[0]
    published = PublishedModel(tag, store.key("models", name, f"{digest}.onnx"), digest, len(onnx_bytes), lineage)
    try:
        existing = store.get_json(tag_key(store, tag))
    except ObjectNotFound:
        existing = None
    if existing is not None:
        if existing.get("sha256") == digest:
            return published
        raise ObjectStoreError(
            f"{tag} is published in {store.url} already as another model (sha256 {existing.get('sha256')}, "
            f"this one {digest}): a tag names one model for good"
        )
    store.put(published.key, onnx_bytes)
    record = {
        "tag": tag,
        "key": published.key,
        "sha256": digest,
        "size": len(onnx_bytes),
        "lineage": dict(lineage),
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    store.put_json(tag_key(store, tag), record)
    return published


def fetch(store: ObjectStore, tag: str) -> tuple[bytes, PublishedModel]:
    """The model `tag` names, checked against its SHA-256. Raises ObjectNotFound (not published),
    ChecksumMismatch (a corrupted or truncated object) or ObjectStoreError (the store does not answer)."""
    record = store.get_json(tag_key(store, tag))
    published = PublishedModel(tag, record["key"], record["sha256"], int(record["size"]), record.get("lineage", {}))
    body = store.get(published.key)
    got = hashlib.sha256(body).hexdigest()
    if got != published.sha256 or not published.key.endswith(f"{published.sha256}.onnx"):
        raise ChecksumMismatch(
            f"s3://{store.bucket}/{published.key} is not the model {tag} names: sha256 {got} ({len(body)} bytes), "
            f"expected {published.sha256} ({published.size} bytes)"
        )
    return body, published
