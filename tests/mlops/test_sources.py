"""include/mlops/sources.py against real servers: SQLite and Postgres, a local HTTP API, folders and moto S3."""

from __future__ import annotations

import functools
import io
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import boto3
import pandas as pd
import pytest

from devstack.processes import free_port
from include.demo_sources import simulator
from include.mlops import sources
from include.mlops.config import FileSource, HttpPagination, HttpSource, Secret, SqlSource, load_config
from include.mlops.sources import SourceError
from tests.mlops.fake_api import FakeApi, Hit, Reply

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 2, tzinfo=UTC)


def _records() -> list[dict]:
    """24 rows inside [START, END), two just outside, and three whose event time is odd but must be kept."""
    rows = [
        {"id": f"r{h:02d}", "event_time": (START + timedelta(hours=h, minutes=30)).isoformat(), "amount": h * 1.5}
        for h in range(24)
    ]
    rows.insert(3, {"id": "before", "event_time": "2024-02-29T23:59:59.999999Z", "amount": 1.0})
    rows.insert(9, {"id": "at_end", "event_time": "2024-03-02T00:00:00+00:00", "amount": 2.0})
    rows.insert(14, {"id": "garbled", "event_time": "yesterday-ish", "amount": 3.0})  # unparseable: kept
    rows.insert(19, {"id": "naive_start", "event_time": "2024-03-01 00:00:00", "amount": 4.0})  # UTC: start is in
    rows.insert(24, {"id": "cet", "event_time": "2024-03-02T00:30:00+01:00", "amount": 5.0})  # 23:30 UTC: in
    return rows


RECORDS = _records()
IN_INTERVAL = [r["id"] for r in RECORDS if r["id"] not in ("before", "at_end")]


# --- SQL ---

TRANSACTIONS_DAY = date(2024, 1, 2)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], name="database"
)
def _database(request, tmp_path_factory) -> tuple[str, pd.DataFrame]:
    """A database the simulator filled with 2024-01-01..03, and the transactions it wrote for 2024-01-02."""
    url = (
        f"sqlite:///{tmp_path_factory.mktemp('sql') / 'transactions.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    simulator.write_days(url, date(2024, 1, 1), 3, 500, seed=11)
    return url, simulator.generate_day(TRANSACTIONS_DAY, 500, seed=11).transactions


def _demo_source() -> SqlSource:
    return load_config("fraud_demo.yaml").source


def test_sql_returns_exactly_the_rows_of_the_interval_in_order(database):
    url, day = database
    start = datetime(2024, 1, 2, tzinfo=UTC)
    rows = sources.fetch_sql(
        _demo_source(), url, start, start + timedelta(days=1), "event_time", as_of=start + timedelta(days=3)
    ).rows
    assert rows["transaction_id"].tolist() == day["transaction_id"].tolist()
    assert rows.columns.tolist() == load_config("fraud_demo.yaml").dataset.columns


def test_sql_interval_bounds_are_start_inclusive_end_exclusive_to_the_microsecond(database):
    url, day = database
    start, end = day["event_time"].iloc[100].to_pydatetime(), day["event_time"].iloc[200].to_pydatetime()
    assert start.microsecond and end.microsecond  # the bounds are not whole seconds
    rows = sources.fetch_sql(_demo_source(), url, start, end, "event_time", as_of=end).rows
    assert rows["transaction_id"].tolist() == day["transaction_id"].iloc[100:200].tolist()


def test_sql_binds_a_non_utc_interval_as_the_same_instant(database):
    url, day = database
    start = datetime(2024, 1, 2, 1, tzinfo=timezone(timedelta(hours=1)))  # midnight UTC
    rows = sources.fetch_sql(_demo_source(), url, start, start + timedelta(days=1), "event_time", as_of=start).rows
    assert len(rows) == len(day)


def test_sql_times_come_back_as_stored_text_in_sqlite_and_utc_timestamps_in_postgres(database):
    url, day = database
    start = datetime(2024, 1, 2, tzinfo=UTC)
    rows = sources.fetch_sql(_demo_source(), url, start, start + timedelta(days=1), "event_time", as_of=start).rows
    if url.startswith("sqlite"):
        assert rows["event_time"].tolist() == sources.sql_timestamps(day["event_time"], "sqlite")
    else:
        assert str(rows["event_time"].dtype) == "datetime64[ns, UTC]"
        assert rows["event_time"].tolist() == day["event_time"].tolist()


def test_sql_reads_in_chunks_and_joins_them(database, monkeypatch):
    url, day = database
    monkeypatch.setattr(sources, "PIECE_ROWS", 64)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = sources.fetch_sql(_demo_source(), url, start, start + timedelta(days=3), "event_time", as_of=start).rows
    assert len(rows) == 1500
    assert rows.index.tolist() == list(range(1500))
    assert rows["transaction_id"].iloc[500:1000].tolist() == day["transaction_id"].tolist()


def test_sql_pieces_hold_a_piece_of_rows_each(database, monkeypatch):
    url, _ = database
    monkeypatch.setattr(sources, "PIECE_ROWS", 64)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    interval = (_demo_source(), url, start, start + timedelta(days=3), "event_time", start)
    pieces = [piece.rows for piece in sources.sql_pieces(*interval)]
    assert len(pieces) == 24 and max(len(p) for p in pieces) == 64  # 1,500 rows
    assert pd.concat(pieces, ignore_index=True).equals(sources.fetch_sql(*interval).rows)


def test_sql_keeps_only_the_columns_asked_for_and_the_event_time(database, monkeypatch):
    url, _ = database
    monkeypatch.setattr(sources, "PIECE_ROWS", 64)  # kept chunk by chunk
    start = datetime(2024, 1, 1, tzinfo=UTC)
    fetch = functools.partial(sources.fetch_sql, _demo_source(), url, start, start + timedelta(days=3), "event_time")
    whole, labels = fetch(as_of=start).rows, fetch(as_of=start, columns=["is_fraud", "transaction_id", "nowhere"]).rows
    assert labels.columns.tolist() == ["transaction_id", "event_time", "is_fraud"]  # in the query's order
    assert labels.equals(whole[labels.columns.tolist()])


def test_sql_empty_interval_gives_the_query_columns(database):
    url, _ = database
    start = datetime(2030, 1, 1, tzinfo=UTC)
    rows = sources.fetch_sql(_demo_source(), url, start, start + timedelta(days=1), "event_time", as_of=start).rows
    assert rows.empty
    assert rows.columns.tolist() == load_config("fraud_demo.yaml").dataset.columns


def test_sql_without_as_of_in_the_query_needs_none(database):
    url, day = database
    source = SqlSource(
        kind="sql",
        url=url,
        query="SELECT transaction_id, event_time FROM transactions WHERE event_time >= :start AND "
        "event_time < :end ORDER BY event_time, transaction_id",
    )
    interval = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)
    rows = sources.fetch_sql(source, url, *interval, "event_time").rows
    assert rows["transaction_id"].tolist() == day["transaction_id"].tolist()


def test_sql_query_using_as_of_without_one_is_an_error(database):
    url, _ = database
    with pytest.raises(SourceError, match="uses :as_of, and no as_of time was given"):
        sources.fetch_sql(_demo_source(), url, START, END, "event_time")


def test_sql_error_names_the_query_and_the_database_without_its_password(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    source = SqlSource(kind="sql", url=url, query="SELECT * FROM nowhere\nWHERE t >= :start AND t < :end")
    named = r"query 'SELECT \* FROM nowhere' on sqlite:///.*empty.db failed \(source.event_time_type text\): .*nowhere"
    with pytest.raises(SourceError, match=named):
        sources.fetch_sql(source, url, START, END, "t")
    secret_url = "postgresql+psycopg2://reader:s3cret@127.0.0.1:1/none"
    with pytest.raises(SourceError) as caught:
        sources.fetch_sql(source, secret_url, START, END, "t")
    assert "reader:***@127.0.0.1:1/none" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_naive_interval_bounds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no time zone"):
        sources.fetch_sql(_demo_source(), f"sqlite:///{tmp_path / 'x.db'}", datetime(2024, 1, 1), END, "event_time")


def test_the_simulators_sqlite_text_has_six_fraction_digits_and_other_databases_get_datetimes():
    moments = [datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 7, tzinfo=UTC)]
    column = pd.Series(pd.to_datetime(moments + [None], utc=True))
    texts = ["2024-01-02 03:04:05.000000", "2024-01-02 03:04:05.000007"]
    assert sources.sql_timestamps(column, "sqlite") == [*texts, None]
    assert sources.sql_timestamps(column, "postgresql") == [*moments, None]


# --- HTTP ---


@pytest.fixture(scope="module")
def _server():
    server = FakeApi()
    yield server
    server.close()


@pytest.fixture
def api(_server):
    _server.reset()
    return _server


def _http(url: str, **settings) -> HttpSource:
    settings.setdefault("backoff_seconds", 0.01)
    return HttpSource(kind="http", url=url, **settings)


def _fetch(source: HttpSource, **kwargs) -> pd.DataFrame:
    return sources.fetch_http(source, START, END, "event_time", **kwargs).rows


def _pages(size_of: str, first: int = 0):
    def route(hit: Hit) -> Reply:
        size = int(hit.query["limit"])
        at = int(hit.query.get(size_of, first)) - first
        at = at * size if size_of == "page" else at
        return Reply(body={"data": {"items": RECORDS[at : at + size]}})

    return route


def _cursor_pages(hit: Hit) -> Reply:
    size, at = int(hit.query["limit"]), int(hit.query.get("cursor", "0"))
    body = {"items": RECORDS[at : at + size], "meta": {}}
    if at + size < len(RECORDS):
        body["meta"]["next"] = str(at + size)
    return Reply(body=body)


def test_http_one_page_sends_the_interval_and_keeps_only_its_rows(api):
    url = api.route("/tx", lambda hit: Reply(body=RECORDS))
    rows = _fetch(_http(url))
    assert rows["id"].tolist() == IN_INTERVAL
    assert rows["amount"].tolist() == [r["amount"] for r in RECORDS if r["id"] in IN_INTERVAL]
    assert [hit.query for hit in api.hits] == [{"start": START.isoformat(), "end": END.isoformat()}]


def test_http_keeps_only_the_columns_asked_for_and_the_event_time(api):
    url = api.route("/tx", _pages("offset"))
    paging = HttpPagination(style="offset", page_size=7)
    rows = _fetch(_http(url, records_path="data.items", pagination=paging), columns=["id"])
    assert rows.columns.tolist() == ["id", "event_time"] and rows["id"].tolist() == IN_INTERVAL


@pytest.mark.parametrize(
    ("style", "route", "records_path", "expected_requests"),
    [
        ("page", _pages("page", first=1), "data.items", 6),  # 5 pages of up to 7 records, then an empty one
        ("offset", _pages("offset"), "data.items", 6),
        ("cursor", _cursor_pages, "items", 5),  # the last page has no cursor
    ],
)
def test_http_pagination(api, style, route, records_path, expected_requests):
    url = api.route("/tx", route)
    paging = HttpPagination(style=style, page_size=7, cursor_path="meta.next")
    rows = _fetch(_http(url, records_path=records_path, pagination=paging))
    assert rows["id"].tolist() == IN_INTERVAL
    assert len(api.hits) == expected_requests
    assert all(hit.query["limit"] == "7" and hit.query["start"] == START.isoformat() for hit in api.hits)
    if style == "page":
        assert [hit.query["page"] for hit in api.hits] == ["1", "2", "3", "4", "5", "6"]
    if style == "offset":
        assert [hit.query["offset"] for hit in api.hits] == ["0", "7", "14", "21", "28", "29"]
    if style == "cursor":
        assert [hit.query.get("cursor") for hit in api.hits] == [None, "7", "14", "21", "28"]


def test_http_csv_pages(api):
    def route(hit: Hit) -> Reply:
        page = int(hit.query["p"])
        return Reply(
            body=pd.DataFrame(RECORDS[page * 10 : page * 10 + 10], columns=["id", "event_time", "amount"]).to_csv(
                index=False
            )
        )

    url = api.route("/export.csv", route)
    paging = HttpPagination(style="page", page_param="p", first_page=0, page_size=10)
    rows = _fetch(_http(url, format="csv", pagination=paging))
    assert rows["id"].tolist() == IN_INTERVAL
    assert len(api.hits) == 4  # 29 records: pages 0-2, then a page with the header only


def test_http_csv_empty_body_is_no_rows(api):
    url = api.route("/export.csv", lambda hit: Reply(body=""))
    assert _fetch(_http(url, format="csv")).empty


def test_http_sends_headers_basic_auth_and_keeps_the_urls_own_query(api):
    url = api.route("/v2/tx", lambda hit: Reply(body={"items": RECORDS[:3]}))
    source = _http(url + "?api_version=2", records_path="items", headers={"X-Client": "mlops"})
    _fetch(source, auth=("reader", "pw"))
    (hit,) = api.hits
    assert hit.headers["x-client"] == "mlops"
    assert hit.headers["authorization"] == "Basic cmVhZGVyOnB3"  # reader:pw
    assert hit.query == {"api_version": "2", "start": START.isoformat(), "end": END.isoformat()}


def _guarded(expected: str) -> Callable[[Hit], Reply]:
    """Records for a request whose Authorization header is `expected`; 401 otherwise."""
    return lambda hit: Reply(body=RECORDS) if hit.headers.get("authorization") == expected else Reply(401, "no")


def test_http_header_from_an_environment_variable(api, monkeypatch):
    monkeypatch.setenv("TEST_API_TOKEN", "t0k3n")
    url = api.route("/tx", _guarded("Bearer t0k3n"))
    source = _http(url, headers={"Authorization": Secret(env="TEST_API_TOKEN", prefix="Bearer ")})
    assert _fetch(source)["id"].tolist() == IN_INTERVAL


def test_http_header_from_a_connection_through_the_callers_lookup(api):
    url = api.route("/tx", _guarded("Token pw-9"))
    source = _http(url, headers={"Authorization": Secret(connection="vendor", prefix="Token ")})
    fields = {("vendor", "password"): "pw-9"}
    headers = sources.header_values(source.headers, lambda conn_id, field: fields[conn_id, field])
    assert _fetch(source, headers=headers)["id"].tolist() == IN_INTERVAL


def _no_such_field(conn_id: str, field: str) -> str:
    raise LookupError(f"{conn_id!r} has no {field}")


@pytest.mark.parametrize(
    ("secret", "lookup", "named"),
    [
        (
            Secret(env="NO_SUCH_VARIABLE_9"),
            None,
            "headers.Authorization: the environment variable 'NO_SUCH_VARIABLE_9'",
        ),
        (Secret(connection="vendor"), None, "headers.Authorization: its value is in connection 'vendor', and no"),
        (
            Secret(connection="vendor", field="extra.key"),
            _no_such_field,
            "headers.Authorization: 'vendor' has no extra.key",
        ),
    ],
    ids=["missing variable", "no lookup", "lookup fails"],
)
def test_a_header_secret_that_cannot_be_found_names_the_header_and_where_it_was_looked_for(secret, lookup, named):
    with pytest.raises(SourceError, match=re.escape(named)):
        sources.header_values({"Authorization": secret, "Accept": "text/csv"}, lookup)


def test_a_header_secret_is_in_no_log_and_no_error(api, monkeypatch, caplog):
    monkeypatch.setenv("TEST_API_TOKEN", "t0k3n-never-shown")
    url = api.route("/tx", lambda hit: Reply(403, "forbidden"))
    source = _http(url, headers={"Authorization": Secret(env="TEST_API_TOKEN", prefix="Bearer ")})
    with caplog.at_level("DEBUG"), pytest.raises(SourceError) as caught:
        _fetch(source)
    assert "HTTP 403" in str(caught.value)
    assert "t0k3n-never-shown" not in str(caught.value) and "t0k3n-never-shown" not in caplog.text


def test_http_503_then_200_is_retried(api):
    answers = iter([Reply(503, "busy"), Reply(body=RECORDS)])
    url = api.route("/tx", lambda hit: next(answers))
    assert _fetch(_http(url, max_retries=2))["id"].tolist() == IN_INTERVAL
    assert len(api.hits) == 2


def test_http_429_waits_as_long_as_retry_after_says(api):
    answers = iter([Reply(429, "slow down", headers={"Retry-After": "1"}), Reply(body=RECORDS)])
    url = api.route("/tx", lambda hit: next(answers))
    began = time.monotonic()
    rows = _fetch(_http(url, max_retries=1, backoff_seconds=0))
    assert time.monotonic() - began >= 1.0
    assert rows["id"].tolist() == IN_INTERVAL


def test_http_404_is_not_retried(api):
    url = api.route("/tx", lambda hit: Reply(404, "no such export"))
    with pytest.raises(SourceError, match=r"GET http://127\.0\.0\.1:\d+/tx\?start=.*: HTTP 404 Not Found, not retried"):
        _fetch(_http(url, max_retries=3))
    assert len(api.hits) == 1


def test_http_retries_exhausted_names_url_status_and_attempts(api):
    url = api.route("/tx", lambda hit: Reply(500, "oops"))
    with pytest.raises(SourceError, match=rf"GET {url}: gave up after 3 attempts; .* HTTP 500 Internal Server Error"):
        _fetch(_http(url, max_retries=2))
    assert len(api.hits) == 3


def test_http_hanging_endpoint_times_out_and_is_retried(api):
    url = api.route("/tx", lambda hit: Reply(body=RECORDS, delay=5))
    began = time.monotonic()
    with pytest.raises(SourceError, match=rf"GET {url}: gave up after 2 attempts; .*ReadTimeout"):
        _fetch(_http(url, timeout_seconds=0.3, max_retries=1, backoff_seconds=0))
    assert time.monotonic() - began < 3
    assert len(api.hits) == 2


def test_http_connection_refused_is_retried_then_named():
    url = f"http://127.0.0.1:{free_port()}/tx"
    with pytest.raises(SourceError, match=rf"GET {url}: gave up after 2 attempts; .*ConnectError"):
        _fetch(_http(url, max_retries=1))


def test_http_body_that_is_not_json_names_url_and_path(api):
    url = api.route("/tx", lambda hit: Reply(body="<html>maintenance</html>"))
    with pytest.raises(SourceError, match=r"GET http://.*/tx\?.*: the body is not JSON \(records_path 'data.items'\)"):
        _fetch(_http(url, records_path="data.items"))


def test_http_missing_records_path_names_url_and_path(api):
    url = api.route("/tx", lambda hit: Reply(body={"data": {"rows": []}}))
    with pytest.raises(SourceError, match=r"GET http://.*/tx\?.*: records_path 'data.items' is not in the JSON body"):
        _fetch(_http(url, records_path="data.items"))


def test_http_records_that_are_not_a_list_of_objects(api):
    url = api.route("/tx", lambda hit: Reply(body={"data": "none"}))
    with pytest.raises(SourceError, match="records_path 'data' does not hold a list of objects"):
        _fetch(_http(url, records_path="data"))


def test_http_hitting_max_pages_is_an_error_naming_it(api):
    url = api.route("/tx", lambda hit: Reply(body={"items": RECORDS[:2], "next_cursor": "again"}))
    source = _http(url, records_path="items", pagination=HttpPagination(style="cursor", max_pages=3))
    with pytest.raises(SourceError, match=rf"{url}: still more pages after pagination.max_pages=3"):
        _fetch(source)
    assert len(api.hits) == 3


def test_http_records_without_the_event_time_column(api):
    url = api.route("/tx", lambda hit: Reply(body=[{"id": 1, "ts": "2024-03-01"}]))
    with pytest.raises(SourceError, match=r"has no event-time column 'event_time' \(columns: \['id', 'ts'\]\)"):
        _fetch(_http(url))


# --- files ---


def _frame(ids: list[str], times: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": ids, "event_time": times, "amount": [float(i) for i in range(len(ids))]})


FILES = {  # path -> rows; each file mixes rows inside and outside the interval
    "2024/03/a.csv": _frame(
        ["a1", "a_before", "a2"], ["2024-03-01T01:00:00Z", "2024-02-28T12:00:00Z", "2024-03-01T02:00:00Z"]
    ),
    "2024/03/sub/b.csv": _frame(["b1", "b_bad_time"], ["2024-03-01T23:59:59.999999Z", "not a time"]),
    "z.csv": _frame(["z_end", "z1"], ["2024-03-02T00:00:00Z", "2024-03-01T00:00:00Z"]),
}
FILE_IDS = ["a1", "a2", "b1", "b_bad_time", "z1"]


def _write_tree(folder, fmt: str) -> None:
    for name, frame in FILES.items():
        path = folder / name.replace(".csv", f".{fmt}")
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(path, index=False) if fmt == "csv" else _as_times(frame).to_parquet(path)
    (folder / "notes.txt").write_text("not data")


def _as_times(frame: pd.DataFrame) -> pd.DataFrame:
    """Parquet keeps real timestamps; the unparseable one becomes missing (NaT), which is kept too."""
    return frame.assign(event_time=pd.to_datetime(frame["event_time"], utc=True, errors="coerce", format="ISO8601"))


def _files(path: str, fmt: str, **settings) -> FileSource:
    return FileSource(kind="files", path=path, format=fmt, pattern=f"**/*.{fmt}", **settings)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_in_a_folder_in_path_order_within_the_interval(tmp_path, fmt):
    _write_tree(tmp_path, fmt)
    rows = sources.fetch_files(_files(str(tmp_path), fmt), START, END, "event_time").rows
    assert rows["id"].tolist() == FILE_IDS
    assert rows.index.tolist() == list(range(len(FILE_IDS)))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_keep_only_the_columns_asked_for_and_the_event_time(tmp_path, fmt):
    _write_tree(tmp_path, fmt)
    columns = ["amount", "id", "nowhere"]
    rows = sources.fetch_files(_files(str(tmp_path), fmt), START, END, "event_time", columns=columns).rows
    assert rows.columns.tolist() == ["id", "event_time", "amount"] and rows["id"].tolist() == FILE_IDS
    assert rows["amount"].tolist() == [0.0, 2.0, 0.0, 1.0, 1.0]


def test_files_a_parquet_file_is_read_a_piece_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_ROWS", 2)
    _write_tree(tmp_path, "parquet")
    source = _files(str(tmp_path), "parquet")
    pieces = list(sources.file_pieces(source, START, END, "event_time"))
    # a.parquet's 3 rows in two pieces (one row outside the interval), b's 2 in one, z's 2 in one
    assert [len(p.rows) for p in pieces] == [1, 1, 2, 1] and sum(p.outside_interval for p in pieces) == 2
    whole = sources.fetch_files(source, START, END, "event_time")
    assert whole.rows["id"].tolist() == FILE_IDS and whole.outside_interval == 2
    assert pd.concat([p.rows for p in pieces], ignore_index=True).equals(whole.rows)


def test_parquet_pieces_keep_the_types_and_the_columns_of_an_empty_file(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "PIECE_ROWS", 2)
    frame = pd.DataFrame(
        {
            "id": pd.Series(["a", None, "c"], dtype="string"),
            "kind": pd.Categorical(["x", "y", "x"]),
            "at": pd.to_datetime(["2024-03-01"] * 3, utc=True),
        },
        index=[7, 8, 9],
    )
    frame.to_parquet(tmp_path / "f.parquet")
    frame.iloc[:0].to_parquet(tmp_path / "empty.parquet")
    pieces = list(sources.parquet_pieces(tmp_path / "f.parquet"))
    assert [len(p) for p in pieces] == [2, 1] and pd.concat(pieces).equals(pd.read_parquet(tmp_path / "f.parquet"))
    [empty] = sources.parquet_pieces(tmp_path / "empty.parquet", columns=["at", "id", "nowhere"])
    assert empty.empty and empty.columns.tolist() == ["id", "at"] and str(empty["at"].dtype) == "datetime64[ns, UTC]"


def test_files_pattern_stays_in_its_folder(tmp_path):
    _write_tree(tmp_path, "csv")
    source = FileSource(kind="files", path=str(tmp_path), format="csv", pattern="2024/*/*.csv")
    assert sources.fetch_files(source, START, END, "event_time").rows["id"].tolist() == ["a1", "a2"]


def test_files_parquet_naive_times_are_utc(tmp_path):
    frame = _frame(["in", "out"], ["2024-03-01T00:00:00", "2024-03-02T00:00:00"])
    frame.assign(event_time=pd.to_datetime(frame["event_time"])).to_parquet(tmp_path / "naive.parquet")
    assert sources.fetch_files(_files(str(tmp_path), "parquet"), START, END, "event_time").rows["id"].tolist() == ["in"]


def test_files_none_matching_is_an_empty_frame_without_columns(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    rows = sources.fetch_files(_files(str(tmp_path), "csv"), START, END, "event_time").rows
    assert rows.empty and rows.columns.empty


def test_files_none_in_the_interval_keep_their_columns(tmp_path):
    _frame(["old"], ["2020-01-01T00:00:00Z"]).to_csv(tmp_path / "old.csv", index=False)
    rows = sources.fetch_files(_files(str(tmp_path), "csv"), START, END, "event_time").rows
    assert rows.empty and rows.columns.tolist() == ["id", "event_time", "amount"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_a_garbage_file_is_named(tmp_path, fmt):
    _write_tree(tmp_path, fmt)
    (tmp_path / "2024" / f"broken.{fmt}").write_bytes(b"\x00\xff\xfe\x00garbage\n\xff,\x00\n")
    with pytest.raises(SourceError, match=rf"{tmp_path}/2024/broken\.{fmt}: cannot be read as {fmt}"):
        sources.fetch_files(_files(str(tmp_path), fmt), START, END, "event_time")


def test_files_missing_folder_is_named(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path / 'nope'}: no such folder"):
        sources.fetch_files(_files(str(tmp_path / "nope"), "csv"), START, END, "event_time")


@pytest.fixture
def bucket(moto_s3) -> str:
    """A fresh bucket on moto_server."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    _s3(moto_s3).create_bucket(Bucket=name)
    return name


def _s3(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )


def _upload_tree(client, bucket: str, prefix: str, fmt: str) -> None:
    for name, frame in FILES.items():
        data = io.BytesIO()
        frame.to_csv(data, index=False) if fmt == "csv" else _as_times(frame).to_parquet(data)
        client.put_object(Bucket=bucket, Key=f"{prefix}/{name.replace('.csv', '.' + fmt)}", Body=data.getvalue())
    client.put_object(Bucket=bucket, Key=f"{prefix}/readme.txt", Body=b"not data")
    # Shares the prefix's first letters but is another folder: must not be read.
    client.put_object(Bucket=bucket, Key=f"{prefix}-old/x.{fmt}", Body=b"\x00 never read")


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_files_on_s3_in_key_order_within_the_interval(moto_s3, bucket, fmt):
    client = _s3(moto_s3)
    _upload_tree(client, bucket, "exports", fmt)
    rows = sources.fetch_files(_files(f"s3://{bucket}/exports", fmt), START, END, "event_time", s3_client=client).rows
    assert rows["id"].tolist() == FILE_IDS


def test_files_on_s3_with_the_endpoint_from_the_config_and_credentials_from_the_environment(
    moto_s3, bucket, monkeypatch
):
    _upload_tree(_s3(moto_s3), bucket, "exports", "csv")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "env",
        "AWS_SECRET_ACCESS_KEY": "env",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    source = _files(f"s3://{bucket}/exports/", "csv", s3_endpoint_url=moto_s3)
    assert sources.fetch_files(source, START, END, "event_time").rows["id"].tolist() == FILE_IDS


def test_files_a_garbage_object_on_s3_is_named(moto_s3, bucket):
    client = _s3(moto_s3)
    _upload_tree(client, bucket, "exports", "parquet")
    client.put_object(Bucket=bucket, Key="exports/2024/03/c.parquet", Body=b"PAR1 but not really")
    with pytest.raises(SourceError, match=rf"s3://{bucket}/exports/2024/03/c\.parquet: cannot be read as parquet"):
        sources.fetch_files(_files(f"s3://{bucket}/exports", "parquet"), START, END, "event_time", s3_client=client)


def test_files_a_missing_bucket_is_named(moto_s3):
    with pytest.raises(SourceError, match="s3://no-such-bucket/x: cannot be listed or read: .*NoSuchBucket"):
        sources.fetch_files(_files("s3://no-such-bucket/x", "csv"), START, END, "event_time", s3_client=_s3(moto_s3))
