"""A real HTTP server on a free loopback port whose answers each test scripts, path by path.

Every request is recorded (path, query, headers) so that tests can count attempts and check what was sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass
class Hit:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: Any = b""  # bytes or str as they are; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (cut short when the server closes)


Route = Callable[[Hit], Reply]


class FakeApi:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, path: str, route: Route) -> str:
        """Answer requests for `path` with `route`; returns the path's URL."""
        self.routes[path] = route
        return self.url + path

    def hits_on(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    def reset(self) -> None:
        self.routes.clear()
        self.hits.clear()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(self, hit: Hit) -> Reply:
        self.hits.append(hit)
        route = self.routes.get(hit.path)
        reply = route(hit) if route else Reply(404, {"message": f"no route {hit.path}"})
        if reply.delay:
            self._closing.wait(reply.delay)
        return reply


def _handler_for(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            hit = Hit(parts.path, dict(parse_qsl(parts.query)), {k.lower(): v for k, v in self.headers.items()})
            reply = api.answer(hit)
            if isinstance(reply.body, bytes | str):
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                content_type = "text/plain"
            else:
                body, content_type = json.dumps(reply.body).encode(), "application/json"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.headers.get("Content-Type", content_type))
                for name, value in reply.headers.items():
                    if name != "Content-Type":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout tests)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
