"""Models through the object store: two service replicas that share no disk (each an empty model store of its
own) pull what the pointer in the store names, follow a redeploy under load without losing a request, and
refuse a corrupted object while the old model serves on. The store is `moto_server` (real S3 over HTTP).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import httpx
import pytest

from include.mlops import deployment, object_store
from include.mlops.object_store import ObjectStore, ObjectStoreError
from tests.fixtures.serving import ADMIN_TOKEN, Service, service_launcher
from tests.serving.conftest import LINEAGE, records_of, wait_for

MODEL = "fraud_detector"
BUCKET = "mlops-models"
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def store(moto_s3: str) -> Iterator[ObjectStore]:
    """The bucket, with this process's S3 client pointed at moto (publishing runs here, as in a worker)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**S3_ENV, "MLOPS_MODEL_STORE_ENDPOINT_URL": moto_s3}.items():
            patch.setenv(key, value)
        boto3.session.Session().client("s3", endpoint_url=moto_s3).create_bucket(Bucket=BUCKET)
        yield ObjectStore(BUCKET, "serving")


@dataclass(frozen=True)
class Replicas:
    a: Service
    b: Service


@pytest.fixture(scope="module")
def replicas(store: ObjectStore, stored_models, moto_s3: str, tmp_path_factory) -> Iterator[Replicas]:
    object_store.publish(store, f"{MODEL}:v1", stored_models.onnx["1"], {**LINEAGE, "mlflow_version": "1"})
    env = {
        **S3_ENV,
        "MLOPS_MODEL_STORE_ENDPOINT_URL": moto_s3,
        "MLOPS_MODEL_STORE_URL": store.url,
        "MLOPS_MODEL_TAG": f"{MODEL}:v1",
        "MLOPS_POINTER_CHECK_SECONDS": "0.5",
    }
    with service_launcher(tmp_path_factory) as start:
        yield Replicas(start(own_model_store=True, **env), start(own_model_store=True, **env))


def _version(service: Service, record: dict) -> str:
    response = service.predict([record])
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_replicas_pull_the_published_model_and_follow_a_redeploy_under_load_without_losing_a_request(
    replicas, store, stored_models, config, splits
):
    records = records_of(splits["test"].iloc[:50], config.dataset)
    for replica in (replicas.a, replicas.b):
        serving = replica.serving()
        assert (serving["tag"], serving["labels"]["lakefs_commit"]) == (f"{MODEL}:v1", LINEAGE["lakefs_commit"])
        assert f"pulled {MODEL}:v1" in replica.log()

    outcomes: Counter = Counter()
    versions: dict[str, list[str]] = {"a": [], "b": []}
    stop = threading.Event()

    def client(name: str, replica: Service) -> None:
        with httpx.Client(base_url=replica.url, timeout=30) as http:
            index = 0
            while not stop.is_set():
                try:
                    response = http.post("/predict", json={"records": [records[index % len(records)]]})
                    outcomes[response.status_code] += 1
                    if response.status_code == 200:
                        versions[name].append(response.json()["model_version"])
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                index += 1

    threads = [threading.Thread(target=client, args=item) for item in (("a", replicas.a), ("b", replicas.b))]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        # The deploy task's two steps: publish, then ask one replica (the one the load balancer picked) to switch.
        object_store.publish(store, f"{MODEL}:v2", stored_models.onnx["2"], {**LINEAGE, "mlflow_version": "2"})
        switched = replicas.a.admin("POST", {"tag": f"{MODEL}:v2"})
        assert switched.status_code == 200, switched.text
        switched_at = time.monotonic()
        # The other replica follows the pointer in the store.
        wait_for(lambda: versions["b"] and versions["b"][-1] == "2", timeout=30, what="replica b on v2")
        followed_after = time.monotonic() - switched_at
        time.sleep(1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert set(outcomes) == {200} and outcomes[200] > 100, outcomes
    print(f"redeploy across 2 replicas: {dict(outcomes)} answers; replica b on v2 {followed_after:.1f} s after a")
    for name in ("a", "b"):
        seen = versions[name]
        assert seen[0] == "1" and seen[-1] == "2", (name, Counter(seen))
        # No flapping: once a replica answered with v2 it never went back.
        assert "1" not in seen[seen.index("2") :], name
    pointer = store.get_json(store.key("pointers", f"{MODEL}.json"))
    assert (pointer["tag"], pointer["previous_tag"]) == (f"{MODEL}:v2", f"{MODEL}:v1")


def test_a_corrupted_model_object_is_refused_and_the_old_model_serves_on(
    replicas, store, stored_models, config, splits
):
    (record,) = records_of(splits["test"].iloc[:1], config.dataset)
    served = {_version(replicas.a, record), _version(replicas.b, record)}
    assert len(served) == 1
    (before,) = served
    # v4 is published, then its object is truncated in the store (a failed copy, a bad disk).
    published = object_store.publish(store, f"{MODEL}:v4", stored_models.onnx["1"], {**LINEAGE, "mlflow_version": "4"})
    store.put(published.key, stored_models.onnx["1"][:1000])

    refused = replicas.a.admin("POST", {"tag": f"{MODEL}:v4"})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert f"{MODEL}:v4 refused" in detail and published.sha256 in detail and "(1000 bytes)" in detail, detail
    assert _version(replicas.a, record) == before

    # A pointer naming it (as a replica that pulled it before the damage would write): the other replica logs why
    # and keeps serving.
    pointer_key = store.key("pointers", f"{MODEL}.json")
    pointer = store.get_json(pointer_key)
    store.put_json(pointer_key, {**pointer, "tag": f"{MODEL}:v4", "previous_tag": pointer["tag"]})
    wait_for(
        lambda: f"the pointer names {MODEL}:v4, which cannot be served" in replicas.b.log(),
        timeout=30,
        what="replica b's refusal",
    )
    assert "expected " + published.sha256 in replicas.b.log()
    assert _version(replicas.b, record) == before and _version(replicas.a, record) == before
    store.put_json(pointer_key, pointer)  # put back for the tests after this one


def test_publishing_is_idempotent_and_a_tag_names_one_model_for_good(store, stored_models):
    tag = f"{MODEL}:v7"
    first = object_store.publish(store, tag, stored_models.onnx["1"], LINEAGE)
    again = object_store.publish(store, tag, stored_models.onnx["1"], LINEAGE)
    assert first.key == again.key == store.key("models", MODEL, f"{first.sha256}.onnx")
    body, published = object_store.fetch(store, tag)
    assert body == stored_models.onnx["1"] and published.lineage == LINEAGE
    with pytest.raises(ObjectStoreError, match=f"{tag} is published in s3://{BUCKET}/serving already as another"):
        object_store.publish(store, tag, stored_models.onnx["2"], LINEAGE)
    with pytest.raises(object_store.ObjectNotFound, match="does not exist"):
        object_store.fetch(store, f"{MODEL}:v99")


def test_an_unreachable_store_fails_in_seconds_naming_where(stored_models, monkeypatch):
    from devstack.processes import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("MLOPS_MODEL_STORE_ENDPOINT_URL", endpoint)
    started = time.monotonic()
    with pytest.raises(ObjectStoreError, match=f"s3://{BUCKET}/serving/tags/{MODEL}/v1.json at {endpoint}"):
        object_store.publish(ObjectStore(BUCKET, "serving"), f"{MODEL}:v1", stored_models.onnx["1"], LINEAGE)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/var/models", "expected s3://<bucket>"),
        ("gs://bucket/models", "expected s3://<bucket>"),
        ("s3://", "expected s3://<bucket>"),
        ("s3:///models", "the bucket is missing"),
    ],
)
def test_a_bad_store_url_is_refused_naming_the_setting(url, message):
    with pytest.raises(ValueError, match=f"MLOPS_MODEL_STORE_URL={url!r}.*{message}".replace("(", r"\(")):
        ObjectStore.from_url(url)
    assert ObjectStore.from_url("s3://models/a/b/").key("x.json") == "a/b/x.json"


def test_a_deploy_smoke_test_through_another_replica_waits_for_it_to_follow(
    replicas, store, stored_models, config, splits
):
    """Behind one address the deploy task's switch and its smoke test may reach different replicas: the smoke
    test waits (up to deployment.CONVERGENCE_SECONDS) for the answers to come from the new model."""
    frame = splits["test"].iloc[:5]
    records = deployment.records_of(frame, config.dataset)
    on_a, on_b = (deployment.ServingEndpoint(r.url, ADMIN_TOKEN, MODEL) for r in (replicas.a, replicas.b))
    target = f"{MODEL}:v1" if on_a.current_model()["tag"] != f"{MODEL}:v1" else f"{MODEL}:v2"
    version = target.rpartition(":v")[2]
    on_a.switch_to(target)
    started = time.monotonic()
    deployment.smoke_test(
        on_b, target, records, deployment.offline_predictions(stored_models.onnx[version], config, frame)
    )
    print(f"replica b answered with {target} {time.monotonic() - started:.1f} s after a switched")
    assert on_b.current_model()["tag"] == target
