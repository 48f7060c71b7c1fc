"""The zoo's rows written where a team would keep them: files in a folder, a SQLite table, or behind a small
HTTP API on a loopback port that pages its answers and wants an API key."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Generator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pandas as pd

API_KEY_VARIABLE = "ZOO_API_KEY"
API_KEY = "zoo-key-not-a-secret"
PAGE_SIZE = 500


class ZooApi:
    """GET /<dataset>?start=<ISO>&end=<ISO>&page=<n>&limit=<n> with `X-Api-Key`: the rows whose time is in
    [start, end), a page at a time, as JSON `{"data": [...]}` or as CSV; 401 without the key."""

    def __init__(self) -> None:
        self.datasets: dict[str, tuple[pd.DataFrame, str, str]] = {}
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def add(self, name: str, rows: pd.DataFrame, time_column: str, format: str) -> str:
        self.datasets[name] = (rows, time_column, format)
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def answer(self, path: str, query: dict[str, str], key: str | None) -> tuple[int, str, bytes]:
        self.requests += 1
        if key != API_KEY:
            return 401, "application/json", b'{"error": "a valid X-Api-Key header is required"}'
        rows, time_column, format = self.datasets[path.strip("/")]
        times = pd.to_datetime(rows[time_column], utc=True, format="ISO8601")
        start, end = pd.Timestamp(query["start"]), pd.Timestamp(query["end"])
        selected = rows[(times >= start) & (times < end)]
        page, limit = int(query.get("page", 1)), int(query.get("limit", PAGE_SIZE))
        chunk = selected.iloc[(page - 1) * limit : page * limit]
        if format == "csv":
            return 200, "text/csv", chunk.to_csv(index=False).encode()
        records = json.loads(chunk.to_json(orient="records", date_format="iso"))
        body = {"data": records, "page": page, "pages": math.ceil(len(selected) / limit)}
        return 200, "application/json", json.dumps(body).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(api: ZooApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            status, kind, body = api.answer(url.path, dict(parse_qsl(url.query)), self.headers.get("X-Api-Key"))
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    return Handler


@contextmanager
def zoo_api() -> Generator[ZooApi]:
    api = ZooApi()
    try:
        yield api
    finally:
        api.close()


def write_files(rows: pd.DataFrame, folder: Path, format: str) -> str:
    """The rows as one file of `format` in `folder` (made); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    if format == "csv":
        rows.to_csv(folder / "export.csv", index=False)
    else:
        rows.to_parquet(folder / "export.parquet", index=False)
    return str(folder)


def write_sqlite(rows: pd.DataFrame, path: Path, table: str) -> str:
    """The rows as table `table` of a SQLite file; returns its SQLAlchemy URL."""
    with sqlite3.connect(path) as connection:
        rows.to_sql(table, connection, index=False, if_exists="replace")
    return f"sqlite:///{path}"
