"""Requests the SDKs cannot produce: refused with 400 (or 404/405) and lakeFS's `{"message": ...}` body.

Raw HTTP is used here, and only here, because the clients validate what they send.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.contract


@pytest.fixture
def api(lakefs_server):
    with httpx.Client(
        base_url=f"{lakefs_server.url}/api/v1", auth=(lakefs_server.access_key_id, lakefs_server.secret_access_key)
    ) as client:
        yield client


def _refused(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["message"]
    assert isinstance(message, str) and message
    return message


def test_malformed_json_body(api, lakefs_repo):
    response = api.post(
        f"/repositories/{lakefs_repo.id}/branches",
        content=b'{"name": "x", "source": ',
        headers={"Content-Type": "application/json"},
    )
    assert "body" in _refused(response)


def test_missing_required_fields(api, lakefs_repo):
    assert "source" in _refused(api.post(f"/repositories/{lakefs_repo.id}/branches", json={"name": "x"}))
    assert "message" in _refused(api.post(f"/repositories/{lakefs_repo.id}/branches/main/commits", json={}))
    assert "storage_namespace" in _refused(api.post("/repositories", json={"name": "some-repo"}))
    _refused(api.post(f"/repositories/{lakefs_repo.id}/tags", json={"id": "v1"}))


def test_fields_of_the_wrong_type(api, lakefs_repo):
    response = api.post(f"/repositories/{lakefs_repo.id}/branches/main/commits", json={"message": 42})
    assert "message" in _refused(response)
    response = api.post(
        f"/repositories/{lakefs_repo.id}/branches/main/commits", json={"message": "m", "metadata": {"k": 1}}
    )
    assert "metadata" in _refused(response)


def test_a_json_body_of_another_content_type(api, lakefs_repo):
    response = api.post(
        f"/repositories/{lakefs_repo.id}/branches",
        content=b"name=x&source=main",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(response)


def test_missing_required_query_parameter(api, lakefs_repo):
    assert "path" in _refused(api.get(f"/repositories/{lakefs_repo.id}/refs/main/objects/stat"))


def test_invalid_query_parameter(api, lakefs_repo):
    assert "amount" in _refused(api.get(f"/repositories/{lakefs_repo.id}/branches", params={"amount": "many"}))


def test_unsupported_if_none_match(api, lakefs_repo):
    response = api.post(
        f"/repositories/{lakefs_repo.id}/branches/main/objects",
        params={"path": "a.txt"},
        content=b"x",
        headers={"Content-Type": "application/octet-stream", "If-None-Match": '"some-etag"'},
    )
    assert "If-None-Match" in _refused(response)


def test_multipart_without_content(api, lakefs_repo):
    response = api.post(
        f"/repositories/{lakefs_repo.id}/branches/main/objects",
        params={"path": "a.txt"},
        files={"not-content": ("a.txt", b"x")},
    )
    assert "content" in _refused(response)


def test_unknown_endpoint_and_method(api):
    _refused(api.get("/no/such/endpoint"), 404)
    assert api.patch("/repositories").status_code in (404, 405)
