"""Hostile input to a service of two models: every operation of its OpenAPI document fuzzed with schemathesis (both
generation modes), the admin API with the right, a wrong and no token, and oversized bodies.

The service serves the demo model (fraud_detector:v1) and the shipped breast cancer config (a logistic
regression saved as breast_cancer_classifier:v7001, a version no other test uses, nor a prefix of one: BentoML
resolves a missing version to the one version that starts with it), so it has no short /predict
routes: those are fuzzed on the one-model `service` in test_predictions.py, and sent oversized bodies here.

Schemathesis generates each case from the service's own /docs.json (its pytest plugin does not run under this
pytest; its strategies do, with hypothesis); the cases are sent with requests, with the Authorization header the
test chooses. Checked on every answer: no status >= 500, and every 4xx names what is wrong (the record and field,
the body, the parameter or tag given, or the limit). Each table of statuses is printed (`-rP`).
"""

from __future__ import annotations

import collections
import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hypothesis
import pandas as pd
import pytest
import requests
import schemathesis

from devstack.memory import TreeMemory
from include.mlops import packaging, training
from include.mlops.config import CONFIG_DIR, load_config
from include.mlops.datasets import split_rows
from include.serving.routes import max_body_bytes
from tests.fixtures.serving import ADMIN_TOKEN, DEMO_CONFIG, Service, service_launcher
from tests.serving.conftest import records_of, save_model

FRAUD, CANCER = "fraud_detector", "breast_cancer_classifier"
CANCER_CONFIG = CONFIG_DIR / "breast_cancer.yaml"
CANCER_TAG = f"{CANCER}:v7001"
MAX_RECORDS = 1000  # MLOPS_MAX_RECORDS's default
BODY_LIMIT = max_body_bytes(MAX_RECORDS)
MODES = list(schemathesis.GenerationMode)
# Cases per operation and generation mode: enough for hypothesis to reach every kind of bad body the schema
# allows (it shrinks towards the simplest ones) within the suite's time budget.
PREDICTION_CASES = 40
ADMIN_CASES = 25
REFUSED_ADMIN_CASES = 8
OTHER_CASES = 5
# A problem the prediction gate names: `records[3].amount: ...`, `records: ...`, `body: ...`, `body[""]: ...`,
# `extra: unknown field`; `path '/admin/models/\\n': ...` (a control character in the path).
_GATE_PROBLEM = re.compile(r'^(([\w-]+)(\[\d+\]|\.[\w-]+|\["(?:[^"\\]|\\.)*"\])*|path .+): \S')


@pytest.fixture(scope="module")
def two_models(stored_models, tmp_path_factory) -> Iterator[Service]:
    cancer = load_config(CANCER_CONFIG)
    rows = _cancer_rows()
    spec = training.CandidateSpec("lr", "LogisticRegression", {"max_iter": 5000})
    fitted = training.fit(
        training.build_pipeline(cancer, spec), cancer, split_rows(rows, cancer.dataset, cancer.split)["train"]
    )
    save_model(cancer, "7001", packaging.to_onnx(fitted, cancer))
    with service_launcher(tmp_path_factory) as start:
        yield start(configs=(DEMO_CONFIG, CANCER_CONFIG), MLOPS_MODEL_TAG=f"{FRAUD}:v1,{CANCER_TAG}")


def _cancer_rows() -> pd.DataFrame:
    from include.demo_sources import breast_cancer

    return breast_cancer.samples().assign(event_time=pd.Timestamp("2026-03-01", tz="UTC"))


def _state(service: Service) -> dict[str, Any]:
    """What each model serves and has on trial, by the admin API and by its pointer file."""
    state = {}
    for status in service.admin_list():
        pointer = service.pointer(status["model"])
        state[status["model"]] = (
            (status["serving"] or {}).get("tag"),
            (status["rollout"] or {}).get("tag"),
            json.loads(pointer.read_text())["tag"] if pointer.exists() else None,
        )
    return state


def _restore(service: Service, before: dict[str, Any]) -> None:
    """Put back what a valid admin call the fuzzer generated changed: the served tag, and no rollout."""
    for model, (tag, rollout, _) in before.items():
        if rollout is None:
            assert service.admin("DELETE", model=f"{model}/rollout").status_code == 200
        if (service.serving(model) or {}).get("tag") != tag:
            assert service.admin("POST", {"tag": tag}, model=model).status_code == 200


def _values(case) -> set[str]:
    """What a case gave that an answer may name: path parameters, body fields and their values (as given, and as
    Python's repr shows them)."""
    given: list[Any] = list((case.path_parameters or {}).values())
    if isinstance(case.body, dict):
        given += list(case.body) + list(case.body.values())
    named = set()
    for value in given:
        if isinstance(value, str) and value:
            named |= {value, repr(value)[1:-1]}
        elif isinstance(value, int | float) and not isinstance(value, bool):
            named.add(str(value))
    return named


def _names_what_is_wrong(case, response: requests.Response) -> bool:
    """Whether a 4xx answer names what is wrong: a field, the body, a parameter or value given, or the limit."""
    try:
        answer = response.json()
    except ValueError:
        return False
    if isinstance(answer, dict) and "problems" in answer:  # the prediction gate
        problems = answer["problems"]
        if response.status_code == 413:
            return problems == [f"body: larger than {BODY_LIMIT} bytes"]
        return bool(problems) and all(_GATE_PROBLEM.match(p) or p.startswith("...") for p in problems)
    detail = answer.get("detail") if isinstance(answer, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors: each with its location, ending in the field
        return bool(detail) and all(
            isinstance(e, dict) and e.get("loc") and e["loc"][0] in ("body", "path", "query", "header") and e.get("msg")
            for e in detail
        )
    if response.status_code == 401:
        return detail == "a valid admin bearer token is required"
    if isinstance(detail, str):
        return any(name in detail for name in _values(case) | {"body", "tag", "mode", "share", "rollout"})
    return False


Check = Callable[[Any, requests.Response], None]


def _fuzz(
    service: Service,
    operation,
    mode: schemathesis.GenerationMode,
    examples: int,
    token: str | None,
    check: Check | None = None,
) -> collections.Counter:
    """Send `examples` cases of `operation` generated in `mode`, with `token` as the bearer token (none: no
    Authorization header); every answer below 500 and every 4xx naming what is wrong. Returns the statuses."""
    statuses: collections.Counter = collections.Counter()
    session = requests.Session()

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking: a failure shows its case
    )
    def send(case) -> None:
        kwargs = case.as_transport_kwargs(base_url=service.url)
        headers = {k: v for k, v in kwargs.pop("headers").items() if k.lower() != "authorization"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        response = session.request(**kwargs, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        what = (operation.method.upper(), operation.path, case.path_parameters, case.body, response.text[:500])
        assert response.status_code < 500, what
        if 400 <= response.status_code < 500:
            assert _names_what_is_wrong(case, response), what
        if check is not None:
            check(case, response)

    try:
        send()
    except hypothesis.errors.Unsatisfiable:
        # Nothing to make invalid (negative mode of an operation without parameters or body): no case.
        assert mode == schemathesis.GenerationMode.NEGATIVE and not statuses, (operation.path, statuses)
    finally:
        session.close()
    return statuses


def _operations(service: Service) -> dict[tuple[str, str], Any]:
    schema = schemathesis.openapi.from_url(f"{service.url}/docs.json")
    return {(op.method.upper(), op.path): op for op in (result.ok() for result in schema.get_all_operations())}


def _print_table(title: str, rows: dict[tuple[str, ...], collections.Counter]) -> None:
    print(f"\n{title}")
    for key, statuses in rows.items():
        print(f"  {' '.join(key):70} {sum(statuses.values()):4} cases  {dict(sorted(statuses.items()))}")
    total = sum((c for c in rows.values()), collections.Counter())
    print(f"  total {sum(total.values())} cases  {dict(sorted(total.items()))}")


def test_every_route_of_both_models_fuzzed_from_the_openapi_document(two_models):
    """Every operation outside /admin, in both modes: prediction routes answer valid bodies 200 and invalid ones
    400/413/415/422 naming the record and field; the probes and /metrics answer 200."""
    operations = _operations(two_models)
    predictions = {k for k in operations if k[1].startswith("/models/")}
    assert predictions == {
        ("POST", f"/models/{m}/{r}") for m in (FRAUD, CANCER) for r in ("predict", "predict_batched")
    }
    table = {}
    for (method, path), operation in operations.items():
        if path.startswith("/admin"):
            continue
        for mode in MODES:
            examples = PREDICTION_CASES if (method, path) in predictions else OTHER_CASES
            statuses = _fuzz(two_models, operation, mode, examples, token=None)
            table[(method, path, str(mode))] = statuses
            if (method, path) not in predictions:  # GET without parameters: nothing to make invalid
                assert set(statuses) == ({200} if mode == schemathesis.GenerationMode.POSITIVE else set()), statuses
            elif mode == schemathesis.GenerationMode.POSITIVE:
                # BentoML's document does not mark the body required, so a "valid" case may come without one: 400.
                assert set(statuses) <= {200, 400} and statuses[200] > statuses[400], (path, statuses)
            else:
                assert set(statuses) <= {400, 413, 415, 422} and statuses[422] > 0, (path, statuses)
    _print_table("fuzzed routes (operation, mode): statuses", table)
    assert {(FRAUD, "1"), (CANCER, "7001")} == {(m, s["model_version"]) for m, s in _served(two_models).items()}
    assert "Traceback" not in two_models.log()


def _served(service: Service) -> dict[str, dict[str, Any]]:
    return {s["model"]: s["serving"] for s in service.admin_list()}


def test_the_admin_api_fuzzed_with_the_token_changes_nothing_but_valid_switches(two_models):
    """Every admin operation, both modes, with the right token: no 5xx, every 4xx names the parameter, field or
    tag, and afterwards (checked after every case) each model serves what it served, with no rollout, its
    pointer unchanged. A valid switch or rollout the fuzzer generates is counted and undone at once."""
    operations = {k: op for k, op in _operations(two_models).items() if k[1].startswith("/admin")}
    assert set(operations) == {
        ("GET", "/admin/models"),
        ("GET", "/admin/models/{model}"),
        ("POST", "/admin/models/{model}"),
        ("POST", "/admin/models/{model}/rollout"),
        ("DELETE", "/admin/models/{model}/rollout"),
    }
    # Switched to what they serve, as a deploy does, so that each has a pointer to keep.
    for model, tag in ((FRAUD, f"{FRAUD}:v1"), (CANCER, CANCER_TAG)):
        assert two_models.admin("POST", {"tag": tag}, model=model).status_code == 200
    before = _state(two_models)
    assert before == {FRAUD: (f"{FRAUD}:v1", None, f"{FRAUD}:v1"), CANCER: (CANCER_TAG, None, CANCER_TAG)}
    changes: collections.Counter = collections.Counter()

    def unchanged(case, response: requests.Response) -> None:
        if case.method.upper() == "GET":
            return
        after = _state(two_models)
        if after != before:
            # Only a call the service accepted may change anything; it is undone before the next case.
            assert response.status_code == 200, (case.method, case.path, case.body, response.text, after)
            changes[f"{case.method.upper()} {case.path} {response.status_code}"] += 1
            _restore(two_models, before)
            assert _state(two_models) == before

    table = {}
    for (method, path), operation in operations.items():
        for mode in MODES:
            table[(method, path, str(mode))] = _fuzz(two_models, operation, mode, ADMIN_CASES, ADMIN_TOKEN, unchanged)
    _print_table("admin API with the token (operation, mode): statuses", table)
    print(f"  valid changes generated and undone: {dict(changes) or 'none'}")
    assert _state(two_models) == before
    total = sum(table.values(), collections.Counter())
    assert {200, 404, 422} <= set(total), total
    assert "Traceback" not in two_models.log()


@pytest.mark.parametrize("token", [None, "wrong-token", ADMIN_TOKEN + "x"], ids=["missing", "wrong", "longer"])
def test_every_admin_operation_without_the_right_token_is_401_and_changes_nothing(two_models, token):
    operations = {k: op for k, op in _operations(two_models).items() if k[1].startswith("/admin")}
    before = _state(two_models)
    table = {}
    for (method, path), operation in operations.items():
        for mode in MODES:
            statuses = _fuzz(two_models, operation, mode, REFUSED_ADMIN_CASES, token)
            table[(method, path, str(mode))] = statuses
            assert set(statuses) == {401}, (method, path, mode, statuses)
    # A switch to a tag that is in the store, and a rollout of one: refused just the same.
    for model, tag in ((FRAUD, f"{FRAUD}:v2"), (CANCER, CANCER_TAG)):
        assert two_models.admin("POST", {"tag": tag}, token=token, model=model).status_code == 401
        rollout = {"tag": tag, "mode": "shadow"}
        assert two_models.admin("POST", rollout, token=token, model=f"{model}/rollout").status_code == 401
    _print_table(f"admin API, {token or 'no'} token (operation, mode): statuses", table)
    assert _state(two_models) == before


def test_a_model_named_like_the_docs_needs_the_token_before_its_body_is_read_and_the_docs_stay_open(two_models):
    """The gate's 401 comes before anything reads the body: FastAPI parses a body before it checks the token, so
    a body that is not JSON would be 422 had the call reached it. Only the admin API's own docs pages are open,
    not every admin path ending like one (`/admin/models/docs`: the routes of a model named docs)."""
    for path in ("/admin/models/docs", "/admin/models/redoc", "/admin/models/openapi.json"):
        refused = httpx.post(
            two_models.url + path, content=b"not JSON", headers={"Content-Type": "application/json"}, timeout=30
        )
        assert (refused.status_code, refused.json()) == (401, {"detail": "a valid admin bearer token is required"})
    for page in ("/admin/docs", "/admin/redoc", "/admin/openapi.json"):
        assert httpx.get(two_models.url + page, timeout=30).status_code == 200, page


# -- Oversized bodies ---------------------------------------------------------------------------------------------


def oversized_bodies(record: dict[str, Any]) -> dict[str, bytes]:
    """A 50 MB body (one record whose category is 50 MB long), 100,000 real records (~25 MB), and 100,000 records
    small enough that the body fits under the byte limit (empty objects)."""
    big = json.dumps({"records": [{**record, "channel": "x" * 50_000_000}]}).encode()
    many = json.dumps({"records": [record] * 100_000}).encode()
    small = json.dumps({"records": [{}] * 100_000}).encode()
    assert len(big) > 50_000_000 and len(many) > BODY_LIMIT > len(small)
    return {"50 MB": big, "100,000 records": many, "100,000 empty records": small}


# The bound on the tree's growth while an oversized body is refused. The gate stops reading a body as soon as it
# passes the limit (4,161,536 bytes by default) and parses at most that much, so growth is a few MB of buffers
# and of a parsed 4 MB body (measured ~20 MB at most, benchmarks/serving.py `serving_hostile_input`); a 50 MB
# body read whole would cost at least twice its size (the chunks and their join): 100 MB.
GROWTH_BOUND = 100 * 2**20


def _record(frame: pd.DataFrame, dataset) -> dict[str, Any]:
    """A record of `frame` without its id (the inference log tests find their rows by id on the shared service)."""
    return records_of(frame.iloc[:1], dataset, with_id=False)[0]


@pytest.mark.parametrize("route", ["/predict", "/predict_batched"])
def test_oversized_bodies_to_the_short_routes_are_refused_with_bounded_memory(service, config, splits, route):
    _refused_with_bounded_memory(service, route, _record(splits["test"], config.dataset))


def test_oversized_bodies_to_a_model_route_are_refused_with_bounded_memory(two_models, config, splits):
    cancer = load_config(CANCER_CONFIG)
    _refused_with_bounded_memory(two_models, f"/models/{CANCER}/predict", _record(_cancer_rows(), cancer.dataset))
    _refused_with_bounded_memory(
        two_models, f"/models/{FRAUD}/predict_batched", _record(splits["test"], config.dataset)
    )


def _refused_with_bounded_memory(service: Service, route: str, record: dict[str, Any]) -> None:
    most = 1 if route.endswith("_batched") else MAX_RECORDS
    expected = {
        "50 MB": (413, f"body: larger than {BODY_LIMIT} bytes"),
        "100,000 records": (413, f"body: larger than {BODY_LIMIT} bytes"),
        "100,000 empty records": (422, f"records: at most {most} record(s) per request, got 100000"),
    }
    memory = TreeMemory(service.process.pid)
    rest = memory.rss()
    with memory, httpx.Client(timeout=60) as client:
        for what, body in oversized_bodies(record).items():
            started = time.monotonic()
            response = client.post(service.url + route, content=body, headers={"Content-Type": "application/json"})
            seconds = time.monotonic() - started
            status, problem = expected[what]
            assert (response.status_code, response.json()["problems"]) == (status, [problem]), (what, response.text)
            print(f"{route}: {what} ({len(body):,} bytes) -> {status} in {seconds:.2f} s: {problem}")
        time.sleep(0.05)
    peak = memory.peak
    print(f"{route}: RSS at rest {rest / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB (+{(peak - rest) / 2**20:.1f})")
    assert peak - rest < GROWTH_BOUND, (rest, peak)
    # Still serving.
    assert httpx.post(service.url + route, json={"records": [record]}, timeout=30).status_code == 200
    assert "Traceback" not in service.log()
