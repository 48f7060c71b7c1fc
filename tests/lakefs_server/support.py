"""Helpers shared by the lakeFS contract tests: error bodies and a webhook receiver on a loopback port."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import lakefs
import lakefs_sdk


def message_of(error: Exception) -> str:
    """The `message` of lakeFS's error body, from a high-level or an SDK exception."""
    if isinstance(error, lakefs.exceptions.ServerException):
        return str(error.body.get("message", ""))
    if isinstance(error, lakefs_sdk.ApiException):
        return str(json.loads(error.body or "{}").get("message", ""))
    raise TypeError(f"not a lakeFS error: {error!r}")


@dataclass
class WebhookReceiver:
    """Answers POST /ok with 200, /fail with 500, /slow after `slow_seconds`; keeps every event received."""

    url: str
    events: list[dict[str, Any]] = field(default_factory=list)
    slow_seconds: float = 3.0


@contextmanager
def webhook_receiver() -> Generator[WebhookReceiver]:
    receiver: WebhookReceiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            receiver.events.append({"path": self.path, **json.loads(self.rfile.read(length) or b"{}")})
            if self.path.startswith("/slow"):
                time.sleep(receiver.slow_seconds)
            status = 500 if self.path.startswith("/fail") else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = WebhookReceiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
