"""Event times as users store them, read as UTC instants: the one reading the sources and validation share.

A column holds its times in one of these forms:

- timestamps: a native type (Parquet's, a database's, pandas' datetimes);
- ISO 8601 text, as pandas reads it (`format="ISO8601"`): `2026-11-14`, `2026-11-14 00:00:00`,
  `2026-11-14T00:00:00.123456Z`, `2026-11-14T01:00:00+01:00` (a space or `T`, any fraction, with or
  without a zone; also the basic form `20261114` and a bare year `2026`);
- epoch numbers, as numbers or as numeric text that is not ISO 8601 (a CSV's or a JSON string's
  `1794528000`): seconds or milliseconds since 1970-01-01 UTC, told apart by magnitude, value by value:
  below 10^11 seconds, from 10^11 milliseconds (10^11 ms is 1973-03-03; 10^11 s would be the year 5138, and
  pandas holds times up to 2262). Epochs in microseconds, and in milliseconds before March 1973, cannot be
  told apart this way: store those as text or timestamps.

A time without a zone (a naive timestamp, ISO text without `Z` or an offset) is UTC.

A column's form is the one most of its values have (a tie goes to the form listed first). A value of another
form (epoch numbers among ISO text, milliseconds among seconds) or of none (`14/11/2026`) is not read: it
comes back as NaT, and validation quarantines its row under the column's name. A value always reads as the
same instant, whatever else its column holds, so the sources (which see one file or one API answer at a
time) and validation (which sees a day) never read one value as two different times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

TIMESTAMPS = "timestamps"
ISO_TEXT = "ISO 8601 text"
EPOCH_SECONDS = "epoch seconds"
EPOCH_MILLISECONDS = "epoch milliseconds"
# In the order that breaks a tie between forms; a value's form is its index here (-1: none).
_FORMS = (TIMESTAMPS, ISO_TEXT, EPOCH_SECONDS, EPOCH_MILLISECONDS)
_NONE, _ISO, _SECONDS, _MILLISECONDS = -1, 1, 2, 3

# The smallest magnitude read as milliseconds (1973-03-03T09:46:40Z); below it, seconds.
MILLISECONDS_FROM = 10**11
# What a datetime64[ns] holds, in microseconds since the epoch.
_MICROS = (pd.Timestamp.min.value // 1000 + 1, pd.Timestamp.max.value // 1000)


@dataclass(frozen=True)
class EventTimes:
    """A column's values as UTC instants (NaT where missing or not read), and the column's form."""

    times: pd.Series
    form: str | None  # None when no value is a time


def read_event_times(values: pd.Series) -> EventTimes:
    """`values` (any dtype) as UTC datetimes, by the rules of this module's docstring."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return EventTimes(pd.to_datetime(values, utc=True), TIMESTAMPS if values.notna().any() else None)
    utc = np.full(len(values), np.datetime64("NaT"), dtype="datetime64[ns]")
    forms = np.full(len(values), _NONE, dtype=np.int8)
    numbers = np.full(len(values), np.nan)
    if pd.api.types.is_bool_dtype(values):  # true and false are no times
        return EventTimes(_utc_series(utc, values.index), None)
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = _as_text(values)
        iso = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").to_numpy(dtype="datetime64[ns]")
        read = ~np.isnat(iso)
        utc[read] = iso[read]
        forms[read] = _ISO
        # Only what is not ISO text is tried as a number: parsing text as numbers is slow when it is not.
        rest = ~read & text.notna().to_numpy()
        numbers[rest] = pd.to_numeric(text[rest], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    magnitude = np.abs(numbers)
    forms[magnitude < MILLISECONDS_FROM] = _SECONDS
    forms[(magnitude >= MILLISECONDS_FROM) & np.isfinite(magnitude)] = _MILLISECONDS
    for unit, scale in ((_SECONDS, 10**6), (_MILLISECONDS, 10**3)):
        utc[forms == unit] = _from_epoch(numbers[forms == unit] * scale)

    counts = np.bincount(forms[forms != _NONE], minlength=len(_FORMS))
    if not counts.any():
        return EventTimes(_utc_series(utc, values.index), None)
    form = int(counts.argmax())  # the first of the most common
    utc[forms != form] = np.datetime64("NaT")
    return EventTimes(_utc_series(utc, values.index), _FORMS[form])


def _utc_series(utc: np.ndarray, index: pd.Index) -> pd.Series:
    return pd.Series(utc, index=index).dt.tz_localize("UTC")


def _as_text(values: pd.Series) -> pd.Series:
    """Python strings (None for missing): other objects, such as a JSON column's numbers, by their str()."""
    if values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return values
    return pd.Series(values.astype("string[pyarrow]").to_numpy(dtype=object, na_value=None), index=values.index)


def _from_epoch(micros: np.ndarray) -> np.ndarray:
    """Microseconds since the epoch as datetime64[ns]; NaT beyond what datetime64[ns] holds."""
    # Whole microseconds first: float seconds times 1e6 carry noise below the microsecond.
    micros = np.round(micros)
    utc = np.full(len(micros), np.datetime64("NaT"), dtype="datetime64[ns]")
    readable = (micros >= _MICROS[0]) & (micros <= _MICROS[1])
    utc[readable] = micros[readable].astype("int64").astype("datetime64[us]").astype("datetime64[ns]")
    return utc
