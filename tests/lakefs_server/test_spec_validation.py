"""The validating proxy itself: it must notice an answer that breaks lakeFS's API document."""

from __future__ import annotations

import json
import threading
from collections.abc import Generator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.fixtures.lakefs import spec_missing_reason, spec_path
from tests.lakefs_server.validating_proxy import ValidatingProxy

pytestmark = pytest.mark.contract


@contextmanager
def fake_lakefs(answer: dict[str, Any]) -> Generator[str]:
    """An upstream that answers every GET with `answer` as JSON."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def proxy_to(upstream: str, checked: bool) -> Generator[ValidatingProxy]:
    proxy = ValidatingProxy(upstream, spec_path() if checked else None).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_an_answer_that_breaks_the_document_is_recorded():
    if reason := spec_missing_reason():
        pytest.skip(reason)
    incomplete_repository = {"id": "some-repo", "default_branch": "main"}  # no creation_date, storage_namespace
    with fake_lakefs(incomplete_repository) as upstream, proxy_to(upstream, checked=True) as proxy:
        answer = httpx.get(f"{proxy.url}/api/v1/repositories/some-repo", auth=("key", "secret"))
        assert answer.json() == incomplete_repository  # forwarded unchanged
        assert len(proxy.violations) == 1
        assert "creation_date" in str(proxy.violations[0])
        valid = {**incomplete_repository, "creation_date": 1, "storage_namespace": "local://some-repo"}
    with fake_lakefs(valid) as upstream, proxy_to(upstream, checked=True) as proxy:
        httpx.get(f"{proxy.url}/api/v1/repositories/some-repo", auth=("key", "secret"))
        assert proxy.violations == []


def test_without_the_document_calls_are_forwarded_unchecked():
    with fake_lakefs({"anything": True}) as upstream, proxy_to(upstream, checked=False) as proxy:
        assert httpx.get(f"{proxy.url}/api/v1/repositories/x").json() == {"anything": True}
        assert proxy.violations == []
