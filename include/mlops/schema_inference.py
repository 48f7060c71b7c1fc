"""What a sample of a dataset shows, column by column, and the rules that turn it into a config's dataset section
(include/mlops/infer_config.py writes the config).

Each column is profiled as the source's reader gave it (numbers, booleans, text, times); from the profiles come the
target's task and classes, the id and event-time candidates, and each feature's type, range and categories, or the
reason a column is no feature. Every rule's threshold is a constant below, with why it is what it is.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from include.mlops.config import MAX_CATEGORIES

# A text column with more values than this, most of them distinct, is an id or free text, not a category.
FEW_VALUES = 20
# A text column is not a feature when more than this share of its values are distinct (an id, free text).
MOSTLY_UNIQUE_SHARE = 0.5
# Whole-number targets with at most this many values are class labels; more, or fractions, make a regression.
MAX_INTEGER_CLASSES = 20
# Epoch numbers from 2000-01-01 to 2100-01-01, in seconds; milliseconds are a thousand times these.
_EPOCH_SECONDS = (946_684_800, 4_102_444_800)
_ISO_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?)?", re.IGNORECASE
)
# A zone after a time of day (a date's own "-30" is not one).
_ZONE = r"[T ]\d{2}:\d{2}.*(?:Z|[+-]\d{2}(?::?\d{2})?)$"
_TIME_WORDS = {"time", "timestamp", "date", "datetime", "ts", "at", "created", "updated", "when", "epoch"}
_ID_WORDS = {"id", "uuid", "guid", "key"}
# Two-valued text that validation reads as booleans (include/mlops/validation.py), by pair.
_BOOLEAN_PAIRS = [{"true", "false"}, {"yes", "no"}, {"y", "n"}, {"t", "f"}]
_NO_WRAP = 1_000_000


Kind = Literal["number", "boolean", "text", "time", "nested", "empty"]
TimeForm = Literal["timestamp", "text", "epoch_seconds", "epoch_milliseconds"]
Label = bool | int | str


class DraftError(ValueError):
    """The sample cannot give a config: the message says what is missing or wrong."""


@dataclass(frozen=True)
class Column:
    """What the sample shows of one column: its kind, and its non-null values read as that kind (numbers as
    float64, booleans as bool, text as str, times as read)."""

    name: str
    kind: Kind
    values: pd.Series
    missing: int
    time_form: TimeForm | None = None

    @property
    def rows(self) -> int:
        return len(self.values) + self.missing

    @cached_property
    def counts(self) -> pd.Series:
        """Each value's count, most frequent first (ties in value order, so a draft is the same every time)."""
        counts = self.values.value_counts(sort=False).sort_index()
        return counts.sort_values(ascending=False, kind="stable")

    @property
    def distinct(self) -> int:
        return len(self.counts)

    @property
    def whole(self) -> bool:
        return self.kind == "number" and bool((self.values % 1 == 0).all())


@dataclass(frozen=True)
class Target:
    column: Column
    task: Literal["classification", "regression"]
    # Classification: each label in the data's own kind, with its count, in sort order.
    classes: dict[Label, int]

    @property
    def positive_class(self) -> Label | None:
        """Binary: the rarer class (the greater label in sort order on a tie, as scikit-learn's default)."""
        if len(self.classes) != 2:
            return None
        return min(reversed(list(self.classes)), key=lambda label: self.classes[label])


@dataclass(frozen=True)
class FeatureDraft:
    """One line of `features`, the comment above it, and the reason when the column is left out (commented)."""

    entry: dict[str, Any]
    seen: str
    left_out: str | None = None


def profile(name: str, raw: pd.Series) -> Column:
    """The kind of a column, from its non-null values as the source's reader gave them."""
    present = raw.dropna()
    missing = len(raw) - len(present)
    if present.empty:
        return Column(name, "empty", present, missing)
    if pd.api.types.is_bool_dtype(present) or _every(present, (bool, np.bool_)):
        return Column(name, "boolean", present.astype(bool), missing)
    if pd.api.types.is_datetime64_any_dtype(present) or _every(present, (dt.date,)):
        return Column(name, "time", present, missing, "timestamp")
    if pd.api.types.is_numeric_dtype(present):
        numbers = present.astype("float64")
        return Column(name, "number", numbers, missing, _epoch_form(name, numbers))
    if present.map(lambda v: isinstance(v, dict | list)).any():
        return Column(name, "nested", present, missing)
    text = present.astype(str)
    stripped = text.str.strip()
    if (
        stripped.str.fullmatch(_ISO_TIME).all()
        and pd.to_datetime(stripped, format="ISO8601", errors="coerce").notna().all()
    ):
        return Column(name, "time", text, missing, "text")
    return Column(name, "text", text, missing)


def loose_bound(value: float) -> float:
    """Ten times `value`, rounded away from zero to 1, 2 or 5 times a power of ten (0 stays 0)."""
    if value == 0:
        return 0
    magnitude = 10 * abs(value)
    power = 10.0 ** math.floor(math.log10(magnitude))
    step = next(m for m in (1, 2, 5, 10) if m * power >= magnitude * (1 - 1e-9))
    bound = float(f"{step * power:.12g}")  # 5 * 0.01 is 0.05, not 0.05000000000000001
    return math.copysign(bound, value)


def infer_target(column: Column) -> Target:
    """Classification for text, booleans and whole numbers with few values; regression for other numbers."""
    if column.kind in ("empty", "time", "nested"):
        what = {"empty": "no value", "time": "times", "nested": "nested JSON values"}[column.kind]
        raise DraftError(
            f"target {column.name!r} holds {what} in the {column.rows:,} rows read: not something to predict"
        )
    if column.kind == "number" and not (column.whole and column.distinct <= MAX_INTEGER_CLASSES):
        if column.distinct < 2:
            raise DraftError(
                f"target {column.name!r} has one value only ({show(column.values.iloc[0])}) in the rows read"
            )
        return Target(column, "regression", {})
    as_label = {"boolean": bool, "number": int, "text": str}[column.kind]
    classes = {as_label(label): int(count) for label, count in sorted(column.counts.items())}
    if len(classes) < 2:
        raise DraftError(
            f"target {column.name!r} has one class only in the {column.rows:,} rows read ({show(next(iter(classes)))} "
            f"{column.values.size:,} times): a classifier needs two or more; read more rows or another target"
        )
    return Target(column, "classification", classes)


def id_candidates(columns: list[Column]) -> list[Column]:
    """Columns complete and unique in the sample, of text or whole numbers; those named like an id first."""
    unique = [
        c
        for c in columns
        if (c.kind == "text" or c.whole) and c.time_form is None and c.missing == 0 and c.distinct == c.rows
    ]
    return sorted(unique, key=lambda c: not named_like_id(c.name))


def event_time_candidates(columns: list[Column]) -> list[Column]:
    """Columns of times the pipeline reads: complete ones first, then those named like a time, times before epoch
    numbers, and finer ones (more distinct values) first."""
    times = [c for c in columns if c.time_form is not None]
    return sorted(
        times,
        key=lambda c: (
            c.missing > 0,
            not _named_like_time(c.name),
            c.time_form.startswith("epoch"),
            -c.distinct,
        ),
    )


def draft_feature(column: Column) -> FeatureDraft:
    """The feature a column makes, by the rules in this module's constants, or why it makes none."""
    seen = describe(column)
    entry: dict[str, Any] = {"name": column.name}
    if column.kind in ("empty", "nested", "time") or column.time_form is not None:
        reason = {
            "empty": "every value is missing in the rows read",
            "nested": "nested JSON values (objects or lists) are not a feature type: flatten them in the export",
        }.get(column.kind, "times are not a feature type: derive a number from them in the export if they matter")
        return FeatureDraft(entry, seen, reason)
    nullable = {"nullable": True} if column.missing else {}
    if column.kind == "boolean" or _boolean_pair(column):
        entry |= {"type": "boolean", **nullable}
    elif column.kind == "number":
        entry |= {"type": "numeric", **nullable}
        entry |= {"min": plain(loose_bound(min(column.values.min(), 0)))}
        entry |= {"max": plain(loose_bound(max(column.values.max(), 0)))}
        if column.whole and named_like_id(column.name):
            return FeatureDraft(entry, seen, "a number named like an id names things, it does not measure them")
        if _running_number(column):
            return FeatureDraft(
                entry, seen, "a running number (each value once, no gaps): a row number, not a measurement"
            )
    else:
        entry |= {"type": "categorical", **nullable}
        if column.distinct > FEW_VALUES and column.distinct > MOSTLY_UNIQUE_SHARE * len(column.values):
            return FeatureDraft(entry, seen, "mostly unique values: an identifier or free text, not a category")
        if column.distinct > MAX_CATEGORIES:
            reason = f"more values than the {MAX_CATEGORIES} categories a feature may keep"
            return FeatureDraft(entry, seen, reason)
        # No `allowed`: a sample cannot show every value a category takes (modeldata's Ames houses: 4 roof
        # materials in 2,000 sales, 8 in all 2,930), and in a closed set an unforeseen one is quarantined.
    if column.distinct == 1:
        return FeatureDraft(entry, seen, "one value in every row read: nothing to learn from")
    return FeatureDraft(entry, seen)


# --- what a column holds, in words ---


def describe(column: Column) -> str:
    """What the rows read hold in a column, in a few words: counts, a range or examples."""
    if column.kind == "empty":
        seen = "no value"
    elif column.time_form is not None:
        times = as_times(column)
        first = column.values.iloc[0]
        example = show(plain(first) if column.kind == "number" else first)
        seen = f"{time_form_name(column)}, e.g. {example}; {times.min():%Y-%m-%d} to {times.max():%Y-%m-%d}"
    elif column.kind == "number" and _boolean_pair(column):
        seen = ", ".join(f"{value:.0f} {count:,}" for value, count in column.counts.items())
    elif column.kind == "number":
        low, high = column.values.min(), column.values.max()
        seen = f"{number_text(low)} to {number_text(high)}" + ("" if column.whole else " (with fractions)")
    elif column.kind == "nested":
        seen = f"e.g. {show(column.values.iloc[0])}"
    else:
        listed = column.distinct if column.distinct <= 8 else 6
        shown = ", ".join(f"{show(value)} {count:,}" for value, count in column.counts.head(listed).items())
        more = f", and {column.distinct - listed:,} more" if column.distinct > listed else ""
        seen = f"{column.distinct:,} value{'s' if column.distinct > 1 else ''}: {shown}{more}"
    missing = f"; {column.missing:,} of {column.rows:,} missing" if column.missing else ""
    return seen + missing


def time_form_name(column: Column) -> str:
    """How a column of times holds them, and whether they carry a zone (the pipeline reads none as UTC)."""
    if column.time_form == "text":
        zoned = column.values.str.strip().str.contains(_ZONE, case=False).all()
        return "ISO 8601 text" + ("" if zoned else " without a zone (read as UTC)")
    if column.time_form == "timestamp":
        zoned = getattr(column.values.dtype, "tz", None) is not None
        return "a timestamp type" + ("" if zoned else " without a zone (read as UTC)")
    return {"epoch_seconds": "epoch seconds", "epoch_milliseconds": "epoch milliseconds"}[column.time_form]


def as_times(column: Column) -> pd.Series:
    """A column of times (any time_form) as UTC timestamps."""
    if column.time_form in ("epoch_seconds", "epoch_milliseconds"):
        return pd.to_datetime(column.values, unit="s" if column.time_form == "epoch_seconds" else "ms", utc=True)
    if column.time_form == "text":
        return pd.to_datetime(column.values.str.strip(), format="ISO8601", utc=True)
    return pd.to_datetime(column.values, utc=True)


def named_like_id(name: str) -> bool:
    """Whether a column's name ends in id, uuid, guid or key (`customer_id`, `customerId`, `ID`)."""
    words = _words(name)
    return bool(words) and words[-1] in _ID_WORDS


def flow(value: Any) -> str:
    """`value` as YAML on one line (quoted where YAML would read it otherwise: 'no', '1', 'a: b')."""
    return yaml.safe_dump(
        [value], default_flow_style=True, width=_NO_WRAP, sort_keys=False, allow_unicode=True
    ).strip()[1:-1]


def show(value: Any) -> str:
    """A value as it would be written in YAML (so text that looks like a number or a boolean shows its quotes)."""
    value = value.item() if isinstance(value, np.generic) else value
    text = flow(value if isinstance(value, bool | int | float | str) else str(value))
    return text if len(text) <= 40 else text[:37] + "..."


def plain(value: float) -> int | float:
    """A whole number as an int (YAML then writes 500, not 500.0)."""
    return int(value) if float(value).is_integer() else float(value)


def number_text(value: float) -> str:
    return f"{plain(value):,}" if float(value).is_integer() else f"{value:.6g}"


# --- helpers ---


def _every(values: pd.Series, kinds: tuple[type, ...]) -> bool:
    return values.dtype == object and bool(values.map(lambda v: isinstance(v, kinds)).all())


def _words(name: str) -> list[str]:
    """The words of a column name, in snake_case, camelCase or CAPS: `createdAt` -> created, at."""
    return [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)]


def _named_like_time(name: str) -> bool:
    """`created_at`, `eventTime`, `timestamp_utc`, `date_of_sale`, `ts`."""
    words = _words(name)
    return bool(words) and (words[-1] in _TIME_WORDS or words[0] in {"time", "timestamp", "date", "datetime"})


def _epoch_form(name: str, numbers: pd.Series) -> TimeForm | None:
    """Epoch seconds or milliseconds: numbers in a plausible range, in a column named like a time (many ids and
    amounts fall in the epoch range too)."""
    if not _named_like_time(name):
        return None
    low, high = numbers.min(), numbers.max()
    for form, scale in (("epoch_seconds", 1), ("epoch_milliseconds", 1000)):
        if _EPOCH_SECONDS[0] * scale <= low and high < _EPOCH_SECONDS[1] * scale:
            return form
    return None


def _running_number(column: Column) -> bool:
    """Whole numbers, each once and without gaps, in more rows than a small set has values: a row number."""
    span = column.values.max() - column.values.min() + 1 if column.kind == "number" else 0
    return column.whole and column.rows > FEW_VALUES and column.distinct == column.rows == span


def _boolean_pair(column: Column) -> bool:
    """Numbers 0 and 1, or text of one pair validation reads as booleans, and nothing else."""
    if column.kind == "number":
        return set(column.counts.index) == {0.0, 1.0}
    if column.kind != "text":
        return False
    values = set(column.values.str.strip().str.lower().unique())
    return any(values == pair for pair in _BOOLEAN_PAIRS)
