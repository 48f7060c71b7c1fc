"""include/mlops/event_times.py: every stored form of a time reads as its UTC instant, one form per column."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.mlops.event_times import (
    EPOCH_MILLISECONDS,
    EPOCH_SECONDS,
    ISO_TEXT,
    MILLISECONDS_FROM,
    TIMESTAMPS,
    read_event_times,
)

MIDNIGHT = pd.Timestamp("2026-11-14", tz="UTC")
SECONDS = 1794614400  # MIDNIGHT since the epoch
BEFORE = MIDNIGHT - pd.Timedelta(microseconds=1)


def _read(values: list, dtype=None) -> tuple[list, str | None]:
    read = read_event_times(pd.Series(values, dtype=dtype))
    return read.times.tolist(), read.form


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-14",
        "2026-11-14 00:00:00",
        "2026-11-14T00:00:00",
        "2026-11-14 00:00:00.000000",
        "2026-11-14T00:00:00.000Z",
        "2026-11-14T00:00:00+00:00",
        "2026-11-14 01:30:00+01:30",
        "2026-11-13T19:00:00-05:00",
        " 2026-11-14T00:00:00Z ",
    ],
)
def test_iso_text_in_any_form_is_its_instant(text):
    assert _read([text]) == ([MIDNIGHT], ISO_TEXT)


def test_a_microsecond_before_midnight_stays_on_its_day_in_every_form():
    forms = ["2026-11-13 23:59:59.999999", "2026-11-13T23:59:59.999999Z", SECONDS - 0.000001, "1794614399.999999"]
    assert [_read([value])[0] for value in forms] == [[BEFORE]] * 4


@pytest.mark.parametrize(
    ("values", "form"),
    [
        ([SECONDS, SECONDS + 60], EPOCH_SECONDS),
        ([SECONDS * 1000, SECONDS * 1000 + 60_000], EPOCH_MILLISECONDS),
        ([str(SECONDS), str(SECONDS + 60)], EPOCH_SECONDS),  # digit text, as a CSV or JSON string gives it
        ([f"{SECONDS * 1000}", f"{SECONDS * 1000 + 60_000}"], EPOCH_MILLISECONDS),
        ([float(SECONDS), SECONDS + 60.0], EPOCH_SECONDS),
        ([SECONDS, None], EPOCH_SECONDS),  # a missing value makes the column float
    ],
)
def test_epoch_numbers_and_digit_text_in_seconds_or_milliseconds(values, form):
    times, read_form = _read(values)
    assert read_form == form
    assert times[0] == MIDNIGHT
    assert pd.isna(times[1]) if values[1] is None else times[1] == MIDNIGHT + pd.Timedelta(minutes=1)


def test_the_unit_is_told_by_magnitude_at_ten_to_the_eleven():
    assert _read([9_000_000_000])[0] == [pd.Timestamp("2255-03-14 16:00:00", tz="UTC")]  # seconds
    assert pd.isna(_read([MILLISECONDS_FROM - 1])[0][0])  # seconds in the year 5138: beyond datetime64[ns]
    assert _read([MILLISECONDS_FROM])[0] == [pd.Timestamp("1973-03-03 09:46:40", tz="UTC")]  # milliseconds


def test_native_timestamps_naive_ones_as_utc():
    naive = pd.Series(pd.to_datetime(["2026-11-14 00:00:00", None]))
    aware = pd.Series(pd.to_datetime(["2026-11-14 01:00:00"]).tz_localize("Europe/Berlin"))
    assert read_event_times(naive).times.tolist()[0] == MIDNIGHT
    assert read_event_times(naive).form == TIMESTAMPS
    assert read_event_times(aware).times.tolist() == [MIDNIGHT]
    assert str(read_event_times(aware).times.dtype) == "datetime64[ns, UTC]"


def test_python_objects_of_several_kinds_read_by_their_text():
    values = [dt.datetime(2026, 11, 14), dt.date(2026, 11, 14), MIDNIGHT, "2026-11-14"]
    assert _read(values, dtype=object) == ([MIDNIGHT] * 4, ISO_TEXT)


@pytest.mark.parametrize(
    ("values", "form", "unread"),
    [
        # Most values ISO text, some epoch numbers (JSON numbers, or digit text).
        (["2026-11-14 00:00:00", "2026-11-14 00:00:01", SECONDS, str(SECONDS)], ISO_TEXT, [2, 3]),
        # Most epoch numbers, one ISO text.
        ([str(SECONDS), str(SECONDS + 1), "2026-11-14 00:00:00"], EPOCH_SECONDS, [2]),
        # Milliseconds among seconds.
        ([SECONDS, SECONDS + 1, SECONDS * 1000], EPOCH_SECONDS, [2]),
        # Day-first dates, words, booleans: no form at all.
        (["2026-11-14", "14/11/2026", "yesterday", "True"], ISO_TEXT, [1, 2, 3]),
        # A tie goes to the form listed first in the module's docstring.
        (["2026-11-14", SECONDS], ISO_TEXT, [1]),
    ],
)
def test_values_of_another_form_than_the_columns_are_not_read(values, form, unread):
    times, read_form = _read(values, dtype=object)
    assert read_form == form
    assert [i for i, t in enumerate(times) if pd.isna(t)] == unread


def test_a_value_reads_as_the_same_instant_whatever_its_neighbours():
    value = "2026-11-14T00:00:00Z"
    among_text = _read([value, "2026-11-15"], dtype=object)[0][0]
    among_garbage = _read([value, "n/a", "n/a"], dtype=object)[0][0]
    alone = _read([value])[0][0]
    assert among_text == among_garbage == alone == MIDNIGHT


@pytest.mark.parametrize(
    "values",
    [
        [True, False],
        [None, None],
        ["", "  "],
        [np.inf, -np.inf],
        [1e20, -1e20],  # beyond what datetime64[ns] holds
        ["9" * 400],
    ],
    ids=["booleans", "nulls", "blanks", "infinities", "out of range", "too long"],
)
def test_what_is_no_time_is_nat_never_an_error(values):
    times, _ = _read(values)
    assert all(pd.isna(t) for t in times)


def test_an_empty_column():
    assert _read([], dtype=object) == ([], None)
