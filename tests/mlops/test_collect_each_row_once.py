"""Every row is collected exactly once, in its own interval, across consecutive intervals, whatever the form its
event time is stored in: SQL (SQLite and Postgres, each `event_time_type`), files (CSV, Parquet) and HTTP.

The rows sit where intervals meet: exactly at midnight, a microsecond before it, at noon, and at a time with
a fraction; the intervals are whole UTC days (as the pipeline collects) and odd ones that end mid-second.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone

import pandas as pd
import pytest
import sqlalchemy as sa

from include.demo_sources import simulator
from include.mlops import sources
from include.mlops.config import FileSource, HttpSource, SqlSource, load_config
from include.mlops.sources import SourceError
from include.mlops.validation import validate_batch
from tests.mlops.fake_api import FakeApi, Reply

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRST_DAY = datetime(2026, 11, 13, tzinfo=UTC)
DAYS = [(FIRST_DAY + timedelta(days=n), FIRST_DAY + timedelta(days=n + 1)) for n in range(4)]
MOMENTS = [
    moment
    for start, end in DAYS
    for moment in (start, end - timedelta(microseconds=1), start + timedelta(hours=12), start + timedelta(
        hours=12, minutes=34, seconds=56, microseconds=789012))
]  # fmt: skip
IDS = [f"r{n:02d}" for n in range(len(MOMENTS))]
# Intervals that end mid-second, and one boundary exactly on noon's rows.
ODD_BOUNDS = [FIRST_DAY + timedelta(hours=6, minutes=13, seconds=17, microseconds=123457) * n for n in range(16)]
ODD = [*zip(ODD_BOUNDS, ODD_BOUNDS[1:], strict=False), (ODD_BOUNDS[-1], DAYS[-1][1])]
NOON = [(FIRST_DAY, FIRST_DAY + timedelta(hours=12)), (FIRST_DAY + timedelta(hours=12), DAYS[-1][1])]


def _floor(moment: datetime, step: timedelta) -> datetime:
    return EPOCH + (moment - EPOCH) // step * step


def _ms_z(moment: datetime) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


# How a form writes a moment, and the precision it keeps (the stored instant is the moment rounded down).
TEXT_FORMS: dict[str, tuple[Callable[[datetime], str], timedelta]] = {
    "no_fraction": (lambda m: f"{m:%Y-%m-%d %H:%M:%S}", timedelta(seconds=1)),  # 2026-11-14 00:00:00
    "six_digit_fraction": (lambda m: f"{m:%Y-%m-%d %H:%M:%S.%f}", timedelta(microseconds=1)),
    "t_and_z": (_ms_z, timedelta(milliseconds=1)),  # 2026-11-14T00:00:00.000Z
    "utc_offset": (lambda m: m.isoformat(sep=" "), timedelta(microseconds=1)),  # 2026-11-14 00:00:00+00:00
    "date_only": (lambda m: f"{m:%Y-%m-%d}", timedelta(days=1)),
}
EPOCH_FORMS: dict[str, tuple[Callable[[datetime], int], timedelta]] = {
    "epoch_seconds": (lambda m: (m - EPOCH) // timedelta(seconds=1), timedelta(seconds=1)),
    "epoch_milliseconds": (lambda m: (m - EPOCH) // timedelta(milliseconds=1), timedelta(milliseconds=1)),
}


def _mixed(moment: datetime) -> str:
    """Every row in another of the text forms: the separators, fractions and zones side by side."""
    forms = list(TEXT_FORMS.values())
    write, _ = forms[MOMENTS.index(moment) % len(forms)]
    return write(moment)


def _mixed_instant(moment: datetime) -> datetime:
    _, precision = list(TEXT_FORMS.values())[MOMENTS.index(moment) % len(TEXT_FORMS)]
    return _floor(moment, precision)


def _expected(instants: list[datetime], start: datetime, end: datetime) -> list[str]:
    return sorted(i for i, t in zip(IDS, instants, strict=True) if start <= t < end)


def _collect_each(
    fetch: Callable[[datetime, datetime], sources.Fetched], instants: list[datetime], intervals: list
) -> list[int]:
    """Fetch the intervals one by one; assert each gives exactly its rows; return the counts left out."""
    seen, left_out = [], []
    for start, end in intervals:
        fetched = fetch(start, end)
        ids = sorted(fetched.rows["id"])
        assert ids == _expected(instants, start, end), (start, end)
        seen += ids
        left_out.append(fetched.outside_interval)
    assert sorted(seen) == IDS  # every row exactly once
    return left_out


# --- SQL ---

# column -> (event_time_type, stored values, stored instants), for SQLite and Postgres.
_SQLITE_COLUMNS = {
    **{
        name: ("text", [write(m) for m in MOMENTS], [_floor(m, precision) for m in MOMENTS])
        for name, (write, precision) in TEXT_FORMS.items()
    },
    "mixed_text": ("text", [_mixed(m) for m in MOMENTS], [_mixed_instant(m) for m in MOMENTS]),
    **{
        name: (name, [write(m) for m in MOMENTS], [_floor(m, precision) for m in MOMENTS])
        for name, (write, precision) in EPOCH_FORMS.items()
    },
}
_POSTGRES_COLUMNS = {
    "tz": ("timestamp", MOMENTS, MOMENTS),
    "naive": ("timestamp", [m.replace(tzinfo=None) for m in MOMENTS], MOMENTS),
    "mixed_text": _SQLITE_COLUMNS["mixed_text"],
    "mixed_text_icu": _SQLITE_COLUMNS["mixed_text"],  # ICU sorts punctuation unlike byte order
    "no_fraction": _SQLITE_COLUMNS["no_fraction"],
    "epoch_seconds": _SQLITE_COLUMNS["epoch_seconds"],
    "epoch_milliseconds": _SQLITE_COLUMNS["epoch_milliseconds"],
}
COLUMNS = {"sqlite": _SQLITE_COLUMNS, "postgres": _POSTGRES_COLUMNS}
SQL_TYPES = {
    "sqlite": {"text": "TEXT", "epoch_seconds": "INTEGER", "epoch_milliseconds": "INTEGER"},
    "postgres": {"text": "text", "epoch_seconds": "bigint", "epoch_milliseconds": "bigint", "tz": "timestamptz",
                 "naive": "timestamp", "mixed_text_icu": 'text COLLATE "en-x-icu"'},
}  # fmt: skip


def _fill(url: str, database: str) -> None:
    """A table `event_times(id, <one column per form>)` holding MOMENTS."""
    columns, types = COLUMNS[database], SQL_TYPES[database]
    declared = ", ".join(f"{c} {types.get(c) or types[time_type]}" for c, (time_type, _, _) in columns.items())
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS event_times")
        conn.exec_driver_sql(f"CREATE TABLE event_times (id text PRIMARY KEY, {declared})")
        names = ["id", *columns]
        values = zip(IDS, *(v for _, v, _ in columns.values()), strict=True)
        rows = [dict(zip(names, row, strict=True)) for row in values]
        conn.execute(sa.text(f"INSERT INTO event_times VALUES ({', '.join(':' + n for n in names)})"), rows)
    engine.dispose()


@pytest.fixture(scope="module")
def database_url(request, tmp_path_factory) -> Callable[[str], str]:
    """The URL of a database (sqlite or postgres) whose table `event_times` is filled, filled on first use."""
    urls = {}

    def url(database: str) -> str:
        if database not in urls:
            urls[database] = (
                f"sqlite:///{tmp_path_factory.mktemp('forms') / 'events.db'}"
                if database == "sqlite"
                else request.getfixturevalue("postgres_url")
            )
            _fill(urls[database], database)
        return urls[database]

    return url


def _sql_fetch(url: str, column: str, time_type: str) -> Callable:
    source = SqlSource(
        kind="sql",
        url=url,
        event_time_type=time_type,
        query=f"SELECT id, {column} AS event_time FROM event_times WHERE {column} >= :start AND {column} < :end",
    )
    return lambda start, end: sources.fetch_sql(source, url, start, end, "event_time")


CASES = [
    pytest.param(database, column, id=f"{database}-{column}", marks=[pytest.mark.postgres] * (database == "postgres"))
    for database, columns in COLUMNS.items()
    for column in columns
]


@pytest.mark.parametrize(("database", "column"), CASES)
def test_sql_collects_each_row_once_in_its_own_day_and_the_query_returns_no_other(database_url, database, column):
    time_type, _, instants = COLUMNS[database][column]
    left_out = _collect_each(_sql_fetch(database_url(database), column, time_type), instants, DAYS)
    assert left_out == [0] * len(DAYS)  # day bounds are exact, in every form


@pytest.mark.parametrize(("database", "column"), CASES)
def test_sql_collects_each_row_once_across_intervals_that_end_mid_second(database_url, database, column):
    time_type, _, instants = COLUMNS[database][column]
    fetch = _sql_fetch(database_url(database), column, time_type)
    left_out = _collect_each(fetch, instants, ODD)
    _collect_each(fetch, instants, NOON)
    if time_type != "text":
        assert sum(left_out) == 0  # timestamps and epoch numbers are bound exactly
    if column.startswith("mixed_text"):
        # Text bounds are whole seconds with a space below and a `T` above: what they let through of the same
        # day is left out, counted, and collected in its own interval.
        assert sum(left_out) > 0


def test_a_row_at_midnight_stored_without_a_fraction_is_not_collected_the_day_before(tmp_path):
    """The new user's table: `2026-11-14 00:00:00` came back for the 13th as well as for the 14th."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id text, event_time text)")
        conn.exec_driver_sql("INSERT INTO t VALUES ('midnight', '2026-11-14 00:00:00')")
    engine.dispose()
    fetch = _sql_fetch_from(url, "SELECT id, event_time FROM t WHERE event_time >= :start AND event_time < :end")
    day_before = fetch(datetime(2026, 11, 13, tzinfo=UTC), datetime(2026, 11, 14, tzinfo=UTC))
    own_day = fetch(datetime(2026, 11, 14, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC))
    assert (len(day_before.rows), day_before.outside_interval) == (0, 0)
    assert own_day.rows["id"].tolist() == ["midnight"]


def _offset_table(tmp_path) -> tuple[str, list[datetime]]:
    """SQLite text times with offsets, to the millisecond, midnight's at -05:00 (19:00 the day before), the
    millisecond before it at +01:00 (00:59:59.999 the day after); and their instants."""
    zones = [timezone(timedelta(hours=hours)) for hours in (-5, 1, 1, -5)]  # by MOMENTS' place in their day
    instants = [_floor(m, timedelta(milliseconds=1)) for m in MOMENTS]
    texts = [t.astimezone(zones[n % 4]).isoformat(timespec="milliseconds") for n, t in enumerate(instants)]
    url = f"sqlite:///{tmp_path / 'offsets.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id text, event_time text)")
        conn.execute(
            sa.text("INSERT INTO t VALUES (:id, :t)"), [{"id": i, "t": t} for i, t in zip(IDS, texts, strict=True)]
        )
    engine.dispose()
    return url, instants


def test_text_with_non_utc_offsets_compared_as_text_misses_rows_near_midnight_and_counts_them(tmp_path):
    """The limit of text comparison (include/mlops/sources.py): 2026-11-14T00:59:59.999+01:00 is on the 13th,
    sorts with the 14th, comes back for the 14th and is left out there."""
    url, instants = _offset_table(tmp_path)
    fetch = _sql_fetch_from(url, "SELECT id, event_time FROM t WHERE event_time >= :start AND event_time < :end")
    fetched = [fetch(*day) for day in DAYS]
    # The 4 midnights and the 4 milliseconds before one are not collected on their day; 6 of them come back on
    # the day before or after (the other 2 on a day not asked for) and are left out there, and counted.
    assert sum(f.outside_interval for f in fetched) == 6
    assert sum(len(f.rows) for f in fetched) == len(IDS) - 8


def test_text_with_non_utc_offsets_compared_as_sqlite_datetime_gives_each_row_once(tmp_path):
    url, instants = _offset_table(tmp_path)
    query = "SELECT id, event_time FROM t WHERE datetime(event_time) >= :start AND datetime(event_time) < :end"
    assert _collect_each(_sql_fetch_from(url, query), instants, DAYS) == [0] * len(DAYS)


def test_the_new_users_days_all_pass_validation_with_no_row_allowed_to_fail(tmp_path):
    """The demo's tables with text times without fractions and a transaction at each midnight: every day is
    collected whole, and validation with `max_invalid_row_fraction: 0` passes each."""
    url = f"sqlite:///{tmp_path / 'tx.db'}"
    simulator.write_days(url, date(2026, 11, 13), 3, 200, seed=4)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE transactions SET event_time = substr(event_time, 1, 19)")
        for day in ("2026-11-14", "2026-11-15"):
            conn.exec_driver_sql(
                f"UPDATE transactions SET event_time = '{day} 00:00:00' WHERE transaction_id = (SELECT "
                f"transaction_id FROM transactions WHERE event_time >= '{day}' ORDER BY event_time LIMIT 1)"
            )
    engine.dispose()
    config = load_config("fraud_demo.yaml")
    strict = config.validation.model_copy(update={"max_invalid_row_fraction": 0.0})
    collected = []
    for day in range(3):
        start = datetime(2026, 11, 13 + day, tzinfo=UTC)
        end = start + timedelta(days=1)
        fetched = sources.fetch_sql(config.source, url, start, end, "event_time", as_of=end + timedelta(days=3))
        report = validate_batch(fetched.rows, config.dataset, strict, start, end, f"day {day}").report
        assert (report.status, fetched.outside_interval) == ("passed", 0), report.summary()
        collected += fetched.rows["transaction_id"].tolist()
    assert len(collected) == len(set(collected)) == 600
    assert "2026-11-14 00:00:00" in set(_column(url, "event_time"))


def _column(url: str, name: str) -> list:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        values = [row[0] for row in conn.exec_driver_sql(f"SELECT {name} FROM transactions")]
    engine.dispose()
    return values


def _sql_fetch_from(url: str, query: str) -> Callable:
    source = SqlSource(kind="sql", url=url, query=query)
    return lambda start, end: sources.fetch_sql(source, url, start, end, "event_time")


def test_rows_the_query_returns_outside_the_interval_are_left_out_and_counted_never_quarantined(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id text, event_time text)")
        conn.exec_driver_sql(
            "INSERT INTO t VALUES ('in', '2026-11-14 08:00:00'), ('before', '2026-11-13 23:59:59.999999'), "
            "('at_end', '2026-11-15T00:00:00Z'), ('unreadable', '14/11/2026')"
        )
    engine.dispose()
    # A query that does not filter at all.
    fetch = _sql_fetch_from(url, "SELECT id, event_time FROM t WHERE :start IS NOT NULL AND :end IS NOT NULL")
    with caplog.at_level("INFO", logger="include.mlops.sources"):
        fetched = fetch(datetime(2026, 11, 14, tzinfo=UTC), datetime(2026, 11, 15, tzinfo=UTC))
    assert fetched.rows["id"].tolist() == ["in", "unreadable"]  # validation quarantines the unreadable one
    assert fetched.outside_interval == 2
    assert "2 row(s) outside [2026-11-14T00:00:00+00:00, 2026-11-15T00:00:00+00:00) left out" in caplog.text
    assert "2026-11-13 23:59:59.999999" in caplog.text  # examples of what was left out


def test_sql_as_of_counts_no_fact_later_than_it_in_any_text_form(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = sa.create_engine(url)
    facts = {
        "space, before": "2026-11-14 11:59:59.999999",
        "T, before": "2026-11-14T11:59:59Z",
        "space, at": "2026-11-14 12:00:00",
        "T, at": "2026-11-14T12:00:00.000Z",
        "space, after": "2026-11-14 12:00:00.000001",
        "day before": "2026-11-13",
    }
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE facts (id text, known_at text)")
        conn.execute(sa.text("INSERT INTO facts VALUES (:id, :t)"), [{"id": k, "t": v} for k, v in facts.items()])
    engine.dispose()
    source = SqlSource(
        kind="sql",
        url=url,
        query="SELECT id, :start AS event_time FROM facts WHERE known_at < :as_of AND :end IS NOT NULL",
    )
    start = datetime(2026, 11, 14, tzinfo=UTC)
    as_of = datetime(2026, 11, 14, 12, tzinfo=UTC)
    rows = sources.fetch_sql(source, url, start, start + timedelta(days=1), "event_time", as_of=as_of).rows
    # No fact at or after :as_of; of its own day, those written with a T are left out too (module docstring).
    assert sorted(rows["id"]) == ["day before", "space, before"]


def test_sql_bounds_by_event_time_type():
    noon = datetime(2026, 11, 14, 12, tzinfo=UTC)
    fraction = datetime(2026, 11, 14, 12, 30, 15, 250000, tzinfo=UTC)
    midnight = datetime(2026, 11, 14, tzinfo=UTC)
    assert [sources.sql_time(m, "text") for m in (midnight, noon, fraction)] == [
        "2026-11-14",
        "2026-11-14 12:00",
        "2026-11-14 12:30:15",
    ]
    assert [sources.sql_time(m, "text", round_up=True) for m in (midnight, noon, fraction)] == [
        "2026-11-14",
        "2026-11-14T12:00",
        "2026-11-14T12:30:16",
    ]
    assert sources.sql_time(midnight - timedelta(microseconds=1), "text", round_up=True) == "2026-11-14"
    assert sources.sql_time(midnight, "epoch_seconds") == 1794614400
    assert sources.sql_time(fraction, "epoch_milliseconds") == 1794659415250
    assert sources.sql_time(midnight + timedelta(microseconds=1), "epoch_seconds") == 1794614400.000001
    assert sources.sql_time(noon, "timestamp") == noon


def test_sqlite_has_no_timestamp_type(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    with pytest.raises(SourceError, match="SQLite has no timestamp type; set source.event_time_type to text"):
        _sql_fetch(url, "t", "timestamp")(*DAYS[0])


# --- files ---


def _file_forms() -> dict[str, tuple[pd.Series, list[datetime]]]:
    """name -> (an event_time column holding MOMENTS, its instants)."""
    naive = pd.Series(pd.to_datetime([m.replace(tzinfo=None) for m in MOMENTS]))
    return {
        "csv naive text": (pd.Series([f"{m:%Y-%m-%d %H:%M:%S.%f}" for m in MOMENTS]), MOMENTS),
        "csv T and Z": (
            pd.Series([_ms_z(m) for m in MOMENTS]),
            [_floor(m, timedelta(milliseconds=1)) for m in MOMENTS],
        ),
        "csv epoch seconds": (
            pd.Series([EPOCH_FORMS["epoch_seconds"][0](m) for m in MOMENTS]),
            [_floor(m, timedelta(seconds=1)) for m in MOMENTS],
        ),
        "csv epoch milliseconds": (
            pd.Series([EPOCH_FORMS["epoch_milliseconds"][0](m) for m in MOMENTS]),
            [_floor(m, timedelta(milliseconds=1)) for m in MOMENTS],
        ),
        "csv fractional epoch seconds": (pd.Series([(m - EPOCH) / timedelta(seconds=1) for m in MOMENTS]), MOMENTS),
        "parquet naive timestamps": (naive, MOMENTS),
        "parquet aware timestamps": (naive.dt.tz_localize("UTC").dt.tz_convert("America/New_York"), MOMENTS),
    }


@pytest.mark.parametrize("form", list(_file_forms()))
def test_files_each_row_once_in_its_own_day(tmp_path, form):
    times, instants = _file_forms()[form]
    fmt = form.split()[0]
    # Two files, each with rows of every day: odd rows in one, even in the other.
    for part in (0, 1):
        frame = pd.DataFrame({"id": IDS[part::2], "event_time": times[part::2].reset_index(drop=True)})
        path = tmp_path / f"part-{part}.{fmt}"
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    source = FileSource(kind="files", path=str(tmp_path), format=fmt, pattern=f"*.{fmt}")
    left_out = _collect_each(lambda s, e: sources.fetch_files(source, s, e, "event_time"), instants, DAYS)
    assert left_out == [len(IDS) - len(_expected(instants, *day)) for day in DAYS]


# --- HTTP ---


@pytest.fixture(scope="module")
def api():
    server = FakeApi()
    yield server
    server.close()


@pytest.mark.parametrize(
    "form",
    ["T and Z", "epoch milliseconds", "epoch seconds as text"],
)
def test_http_each_row_once_in_its_own_day(api, form):
    write, precision = {
        "T and Z": (_ms_z, timedelta(milliseconds=1)),
        "epoch milliseconds": (EPOCH_FORMS["epoch_milliseconds"][0], timedelta(milliseconds=1)),
        "epoch seconds as text": (lambda m: str(EPOCH_FORMS["epoch_seconds"][0](m)), timedelta(seconds=1)),
    }[form]
    # The API answers every record whatever interval is asked for: the source keeps the interval's.
    records = [{"id": i, "event_time": write(m)} for i, m in zip(IDS, MOMENTS, strict=True)]
    url = api.route(f"/{form.replace(' ', '-')}", lambda hit: Reply(body=records))
    source = HttpSource(kind="http", url=url)
    instants = [_floor(m, precision) for m in MOMENTS]
    left_out = _collect_each(lambda s, e: sources.fetch_http(source, s, e, "event_time"), instants, DAYS)
    assert left_out == [len(IDS) - len(_expected(instants, *day)) for day in DAYS]
