"""Checks every collected batch must pass before it may reach `main`, and the quarantine of what fails.

Two levels, as the config's `validation` section sets them:
- batch-level failures (a missing or unexpected column, a column that is empty or of the wrong type
  throughout, an empty batch, too many bad rows) reject the whole batch;
- row-level failures (a null where none is allowed, a value of the wrong type, out of range, an unknown
  category, a duplicate id, an event time outside the interval) move those rows to quarantine, as long as
  their share stays within `max_invalid_row_fraction`.

The checks are plain vectorised pandas: a million rows take well under a second per check.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from include.mlops import classes
from include.mlops.config import Dataset, Feature, Validation
from include.mlops.event_times import read_event_times

FAILED_CHECKS_COLUMN = "_failed_checks"
_TIME_FORMS = "ISO 8601 text, epoch seconds or milliseconds, or timestamps"
_TRUE = {"true", "1", "yes", "t", "y", "1.0"}
_FALSE = {"false", "0", "no", "f", "n", "0.0"}

Status = Literal["passed", "passed_with_quarantine", "failed", "empty"]


@dataclass(frozen=True)
class CheckFailure:
    """One failed check: what, where, how many rows, and a few of them."""

    check: str
    column: str | None
    level: Literal["row", "batch"]
    rows: int
    detail: str
    sample: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationReport:
    batch: str
    rows_in: int
    rows_valid: int
    rows_quarantined: int
    status: Status
    failures: list[CheckFailure]

    @property
    def accepted(self) -> bool:
        return self.status in ("passed", "passed_with_quarantine")

    def summary(self) -> str:
        """One paragraph naming the batch, and for each failure the column, the check and the count."""
        head = (
            f"{self.batch}: {self.status} ({self.rows_in} rows in, {self.rows_valid} valid, "
            f"{self.rows_quarantined} quarantined)"
        )
        lines = [head] + [
            f"- {f.level} check {f.check!r}"
            + (f" on column {f.column!r}" if f.column else "")
            + (f": {f.rows} row(s)" if f.rows else "")
            + f" - {f.detail}"
            for f in self.failures
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        return cls(**{**data, "failures": [CheckFailure(**f) for f in data["failures"]]})


@dataclass(frozen=True)
class ValidatedBatch:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    report: ValidationReport


def validate_batch(
    frame: pd.DataFrame,
    dataset: Dataset,
    rules: Validation,
    start: dt.datetime,
    end: dt.datetime,
    batch: str,
) -> ValidatedBatch:
    """Check `frame` (as collected, any dtypes) against `dataset`'s schema and the interval [start, end).

    Returns the valid rows with canonical types and column order, the quarantined rows (every value as text,
    plus the names of the checks each row failed), and the report.
    """
    rows_in = len(frame)
    # A source with nothing to say may not even name its columns (an empty API page, no matching file).
    failures = _schema_failures(frame, dataset) if len(frame.columns) else []
    if rows_in == 0:
        failures.append(CheckFailure("empty_batch", None, "batch", 0, f"no rows in [{start}, {end})"))
        status: Status = "empty" if rules.empty_batch == "skip" and len(failures) == 1 else "failed"
        return _result(frame, dataset, batch, rows_in, status, failures)
    if failures:  # columns missing or unexpected: nothing below can be trusted
        return _result(frame, dataset, batch, rows_in, "failed", failures)

    typed, bad, time_form = _coerce(frame, dataset)
    row_failures: dict[str, pd.Series] = {}

    for column, unparseable in bad.items():
        if unparseable.all():
            detail = f"no value is a valid {_kind(dataset, column)}" + (
                f" ({_TIME_FORMS})" if column == dataset.event_time_column else ""
            )
            failures.append(
                CheckFailure("wrong_type", column, "batch", rows_in, detail, _sample(frame, unparseable, rules))
            )
        else:
            _add(row_failures, f"type:{column}", unparseable)
    for column, nullable in _nullability(dataset).items():
        missing = typed[column].isna()
        if column in bad:
            missing &= ~bad[column]
        if nullable or not missing.any():
            continue
        if missing.all():
            failures.append(CheckFailure("all_null", column, "batch", rows_in, "every value is null"))
        else:
            _add(row_failures, f"null:{column}", missing)
    for feature in dataset.features:
        _add(row_failures, f"range:{feature.name}", _out_of_range(typed[feature.name], feature))
        _add(row_failures, f"category:{feature.name}", _unknown_category(typed[feature.name], feature))
    if dataset.target_classes:
        labels = typed[dataset.target]
        _add(row_failures, f"class:{dataset.target}", labels.notna() & ~labels.isin(dataset.target_classes))
    _add(row_failures, f"duplicate_id:{dataset.id_column}", typed[dataset.id_column].duplicated(keep="first"))
    times = typed[dataset.event_time_column]
    _add(
        row_failures,
        f"outside_interval:{dataset.event_time_column}",
        times.notna() & ((times < pd.Timestamp(start)) | (times >= pd.Timestamp(end))),
    )

    for name, mask in row_failures.items():
        check, column = name.split(":", 1)
        detail = _describe(check, column, dataset, start, end, time_form)
        failures.append(CheckFailure(check, column, "row", int(mask.sum()), detail, _sample(frame, mask, rules)))

    invalid = np.zeros(rows_in, dtype=bool)
    for mask in row_failures.values():
        invalid |= mask.to_numpy()
    invalid_share = invalid.mean()
    if invalid_share > rules.max_invalid_row_fraction:
        failures.append(
            CheckFailure(
                "invalid_share",
                None,
                "batch",
                int(invalid.sum()),
                f"{invalid_share:.2%} of rows fail row-level checks; at most "
                f"{rules.max_invalid_row_fraction:.2%} may be quarantined",
            )
        )
    if any(f.level == "batch" for f in failures):
        return _result(frame, dataset, batch, rows_in, "failed", failures, row_failures)

    quarantined = _quarantine(frame, row_failures, invalid)
    valid = typed.loc[~invalid, dataset.columns].reset_index(drop=True)
    status = "passed_with_quarantine" if invalid.any() else "passed"
    report = ValidationReport(batch, rows_in, len(valid), len(quarantined), status, failures)
    return ValidatedBatch(valid, quarantined, report)


def validate_for_scoring(
    frame: pd.DataFrame, dataset: Dataset, rules: Validation, batch: str, seen_ids: Collection[str] = ()
) -> ValidatedBatch:
    """Check rows to be scored (batch scoring's input) against the model's schema, row by row.

    The id column and every feature are required; the target and the event time are not (rows to score have no
    label yet, and no interval to fall in), and other columns are left out unchecked. Each row is checked as
    `validate_batch` checks it: the type of each value, nulls where the config allows none, ranges, unknown
    categories of a closed set, and ids seen earlier in the batch: earlier in `frame`, or among `seen_ids` (the
    ids, as `ids_as_text` gives them, of an earlier part of the same input, which keeps their first row). A
    missing column fails the whole batch (every row quarantined). There is no share of invalid rows above which
    the batch fails: the caller decides what a failure means. The valid rows have the id and the features, with
    canonical types.
    """
    columns = [dataset.id_column, *(f.name for f in dataset.features)]
    rows_in = len(frame)
    if missing := [c for c in columns if c not in frame.columns]:
        named = ", ".join(f"{c!r}" + (" (id)" if c == dataset.id_column else "") for c in missing)
        failure = CheckFailure("missing_column", ", ".join(missing), "batch", rows_in, f"missing column(s): {named}")
        quarantined = _as_text(frame).reset_index(drop=True)
        quarantined[FAILED_CHECKS_COLUMN] = pd.Series("batch", index=range(rows_in), dtype="string")
        report = ValidationReport(batch, rows_in, 0, rows_in, "failed", [failure])
        return ValidatedBatch(pd.DataFrame(columns=columns), quarantined, report)
    if rows_in == 0:
        report = ValidationReport(batch, 0, 0, 0, "empty", [])
        return ValidatedBatch(pd.DataFrame(columns=columns), _as_text(frame[columns]), report)

    typed, bad, _ = _coerce(frame, dataset, columns)
    row_failures: dict[str, pd.Series] = {}
    for column, unparseable in bad.items():
        _add(row_failures, f"type:{column}", unparseable)
    nullability = _nullability(dataset)
    for column in columns:
        missing_values = typed[column].isna()
        if column in bad:
            missing_values &= ~bad[column]
        if not nullability[column]:
            _add(row_failures, f"null:{column}", missing_values)
    for feature in dataset.features:
        _add(row_failures, f"range:{feature.name}", _out_of_range(typed[feature.name], feature))
        _add(row_failures, f"category:{feature.name}", _unknown_category(typed[feature.name], feature))
    ids = typed[dataset.id_column]
    repeated = ids.duplicated(keep="first") | ids.isin(list(seen_ids))
    _add(row_failures, f"duplicate_id:{dataset.id_column}", ids.notna() & repeated)

    failures = []
    for name, mask in row_failures.items():
        check, column = name.split(":", 1)
        detail = _describe(check, column, dataset, dt.datetime.min, dt.datetime.max, None)
        failures.append(CheckFailure(check, column, "row", int(mask.sum()), detail, _sample(frame, mask, rules)))
    invalid = np.zeros(rows_in, dtype=bool)
    for mask in row_failures.values():
        invalid |= mask.to_numpy()
    quarantined = _quarantine(frame, row_failures, invalid)
    valid = typed.loc[~invalid, columns].reset_index(drop=True)
    status: Status = "passed_with_quarantine" if invalid.any() else "passed"
    return ValidatedBatch(
        valid, quarantined, ValidationReport(batch, rows_in, len(valid), len(quarantined), status, failures)
    )


def _schema_failures(frame: pd.DataFrame, dataset: Dataset) -> list[CheckFailure]:
    expected, present = dataset.columns, list(frame.columns)
    failures = []
    if missing := [c for c in expected if c not in present]:
        role = {dataset.id_column: "id", dataset.event_time_column: "event time", dataset.target: "target"}
        named = ", ".join(f"{c!r}" + (f" ({role[c]})" if c in role else "") for c in missing)
        failures.append(CheckFailure("missing_column", ", ".join(missing), "batch", 0, f"missing column(s): {named}"))
    if extra := [c for c in present if c not in expected and c not in dataset.ignored_columns]:
        failures.append(
            CheckFailure(
                "extra_column",
                ", ".join(map(str, extra)),
                "batch",
                0,
                f"unexpected column(s): {extra} (name them in dataset.ignored_columns if the model is not to use them)",
            )
        )
    return failures


def _coerce(
    frame: pd.DataFrame, dataset: Dataset, columns: list[str] | None = None
) -> tuple[pd.DataFrame, dict[str, pd.Series], str | None]:
    """Canonical dtypes of `columns` (default: every column of the dataset); per column, the rows whose non-null
    value could not be read as its type; and the form of the event times (include/mlops/event_times.py)."""
    typed = pd.DataFrame(index=frame.index)
    bad: dict[str, pd.Series] = {}
    time_form = None
    for column in dataset.columns if columns is None else columns:
        raw = frame[column]
        kind = _kind(dataset, column)
        if kind == "numeric":
            values = pd.to_numeric(raw, errors="coerce").astype("float64")
            values[np.isinf(values)] = np.nan  # inf is not a measurement: a type failure below
        elif kind == "label":
            values = read_target(raw, dataset)
        elif kind == "boolean":
            values = _to_boolean(raw)
        elif kind == "timestamp":
            event_times = read_event_times(raw)
            values, time_form = event_times.times, event_times.form
        else:
            values = _to_text(raw)
        # A value that was given (not null, not blank) but did not parse is a type failure, not a null.
        candidates = np.flatnonzero(values.isna().to_numpy() & raw.notna().to_numpy())
        given = (raw.iloc[candidates].astype(str).str.strip() != "").to_numpy()
        if given.any():
            unparseable = np.zeros(len(raw), dtype=bool)
            unparseable[candidates[given]] = True
            bad[column] = pd.Series(unparseable, index=raw.index)
        typed[column] = values
    return typed, bad, time_form


def _kind(dataset: Dataset, column: str) -> str:
    if column == dataset.event_time_column:
        return "timestamp"
    if column == dataset.id_column:
        return "text"
    if column == dataset.target:
        return "numeric" if dataset.task == "regression" else "label"
    feature = dataset.feature(column)
    return {"numeric": "numeric", "boolean": "boolean", "categorical": "text"}[feature.type]


def ids_as_text(raw: pd.Series) -> pd.Series:
    """Ids as the checks compare them: text, nulls kept."""
    return _to_text(raw)


def _to_text(raw: pd.Series) -> pd.Series:
    # Arrow-backed strings: converting a million values is ~20x faster than pandas' object-backed "string".
    return raw.astype("string[pyarrow]")


def read_target(raw: pd.Series, dataset: Dataset) -> pd.Series:
    """Class labels of the kind `target_classes` are (null where a value is not of that kind): whole numbers
    (1.0 from a CSV is 1; 1.5 or 'yes' is not), booleans (true/false, yes/no, 1/0 as `_to_boolean` reads them) or
    text; regression values as numbers."""
    if dataset.task == "regression":
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    kind = classes.kind_of(dataset)
    if kind == "boolean":
        return _to_boolean(raw)
    if kind == "text":
        return _to_text(raw)
    numbers = pd.to_numeric(raw, errors="coerce")
    return numbers.where(numbers % 1 == 0).astype("Int64")


def _to_boolean(raw: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(raw):
        return raw.astype("boolean")
    if pd.api.types.is_numeric_dtype(raw):
        numbers = raw.astype("float64")
        result = pd.Series(pd.NA, index=raw.index, dtype="boolean")
        result[numbers == 1] = True
        result[numbers == 0] = False
        return result
    text = _to_text(raw).str.strip().str.lower()
    result = pd.Series(pd.NA, index=raw.index, dtype="boolean")
    result[text.isin(_TRUE)] = True
    result[text.isin(_FALSE)] = False
    return result


def _nullability(dataset: Dataset) -> dict[str, bool]:
    nullable = {dataset.id_column: False, dataset.event_time_column: False, dataset.target: dataset.target_nullable}
    nullable.update({f.name: f.nullable for f in dataset.features})
    return nullable


def _out_of_range(values: pd.Series, feature: Feature) -> pd.Series:
    if feature.type != "numeric":
        return pd.Series(False, index=values.index)
    low = values < feature.min if feature.min is not None else False
    high = values > feature.max if feature.max is not None else False
    return (low | high) & values.notna()


def _unknown_category(values: pd.Series, feature: Feature) -> pd.Series:
    if feature.type != "categorical" or feature.allowed is None:
        return pd.Series(False, index=values.index)
    return values.notna() & ~values.isin(feature.allowed)


def _describe(
    check: str, column: str, dataset: Dataset, start: dt.datetime, end: dt.datetime, time_form: str | None
) -> str:
    if check == "type" and column == dataset.event_time_column:
        return f"value is not a time in the column's form, {time_form} (one form per column: {_TIME_FORMS})"
    if check == "type":
        return f"value is not a valid {_kind(dataset, column)}"
    if check == "null":
        return "null where the config does not allow it"
    if check == "range":
        feature = dataset.feature(column)
        return f"value outside [{feature.min}, {feature.max}]"
    if check == "category":
        return f"value not among the allowed {dataset.feature(column).allowed}"
    if check == "class":
        return f"label not among target_classes {dataset.target_classes}"
    if check == "duplicate_id":
        return "id seen earlier in the batch (the first is kept)"
    return f"event time outside the interval [{start.isoformat()}, {end.isoformat()})"


def _add(failures: dict[str, pd.Series], name: str, mask: pd.Series | bool) -> None:
    if isinstance(mask, pd.Series) and mask.any():
        failures[name] = pd.Series(mask.to_numpy(dtype=bool, na_value=False), index=mask.index)


def _sample(frame: pd.DataFrame, mask: pd.Series, rules: Validation) -> list[dict[str, Any]]:
    rows = frame.loc[mask.to_numpy()].head(rules.sample_rows)
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value as text (nulls kept): quarantined rows may hold anything, and Parquet needs one type."""
    return pd.DataFrame({str(c): frame[c].map(lambda v: None if _plain(v) is None else str(v)) for c in frame.columns})


def _quarantine(frame: pd.DataFrame, row_failures: dict[str, pd.Series], invalid: np.ndarray) -> pd.DataFrame:
    rows = _as_text(frame.loc[invalid]).reset_index(drop=True)
    checks = [";".join(name for name, mask in row_failures.items() if mask.iloc[i]) for i in np.flatnonzero(invalid)]
    rows[FAILED_CHECKS_COLUMN] = pd.Series(checks, dtype="string")
    return rows


def _result(
    frame: pd.DataFrame,
    dataset: Dataset,
    batch: str,
    rows_in: int,
    status: Status,
    failures: list[CheckFailure],
    row_failures: dict[str, pd.Series] | None = None,
) -> ValidatedBatch:
    """A batch that is not accepted: all of it goes to quarantine, nothing is valid."""
    quarantined = _as_text(frame).reset_index(drop=True)
    checks = pd.Series("batch", index=range(rows_in), dtype="string")
    for name, mask in (row_failures or {}).items():
        checks[mask.to_numpy()] = checks[mask.to_numpy()] + ";" + name
    quarantined[FAILED_CHECKS_COLUMN] = checks
    empty = pd.DataFrame(columns=dataset.columns)
    report = ValidationReport(batch, rows_in, 0, rows_in if status == "failed" else 0, status, failures)
    return ValidatedBatch(empty, quarantined if status == "failed" else quarantined.iloc[0:0], report)
