"""The bad-batch corpus: each malformed batch gets its exact outcome, and good variants pass.

Batches are built from the demo config's schema (include/config/fraud_demo.yaml); each case changes one thing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from include.mlops.config import Validation, load_config
from include.mlops.validation import FAILED_CHECKS_COLUMN, validate_batch, validate_for_scoring

CONFIG = load_config("fraud_demo.yaml")
DATASET = CONFIG.dataset
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
END = START + dt.timedelta(days=1)
ROWS = 1000
RULES = Validation(empty_batch="fail", max_invalid_row_fraction=0.01, sample_rows=3)


def good_batch(rows: int = ROWS) -> pd.DataFrame:
    """Valid rows as a SQL source returns them (timestamps as text, booleans as 0/1)."""
    rng = np.random.default_rng(1)
    seconds = rng.integers(0, 86_400, rows)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{i:06d}" for i in range(rows)],
            "event_time": (pd.Timestamp(START) + pd.to_timedelta(seconds, unit="s")).strftime("%Y-%m-%d %H:%M:%S"),
            "amount": rng.gamma(2.0, 40.0, rows).round(2),
            "merchant_category": rng.choice(["grocery", "travel", "gaming"], rows),
            "channel": rng.choice(["in_store", "online"], rows),
            "country": rng.choice(["DE", "FR"], rows),
            "hour": seconds // 3600,
            "customer_tenure_days": rng.integers(0, 3000, rows),
            "device": rng.choice(["ios", "pos_terminal"], rows),
            "distance_from_home_km": np.where(rng.random(rows) < 0.1, np.nan, rng.exponential(20, rows)),
            "transactions_last_24h": rng.integers(0, 12, rows),
            "is_international": rng.integers(0, 2, rows),
            "is_fraud": rng.choice([0, 1, None], rows, p=[0.9, 0.02, 0.08]),
        }
    )


def _set(column: str, rows: list[int], value) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[rows, column] = value
        return frame

    return change


# name -> (how the batch is broken, expected status, expected {(level, check, column): failing rows})
CORPUS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, dict[tuple, int]]] = {
    "missing column": (lambda f: f.drop(columns=["amount"]), "failed", {("batch", "missing_column", "amount"): 0}),
    "missing target": (lambda f: f.drop(columns=["is_fraud"]), "failed", {("batch", "missing_column", "is_fraud"): 0}),
    "missing id column": (
        lambda f: f.drop(columns=["transaction_id"]),
        "failed",
        {("batch", "missing_column", "transaction_id"): 0},
    ),
    "extra column": (lambda f: f.assign(cvv="123"), "failed", {("batch", "extra_column", "cvv"): 0}),
    "wrong type throughout": (
        lambda f: f.assign(amount="twelve"),
        "failed",
        {("batch", "wrong_type", "amount"): ROWS},
    ),
    "an all-null column": (lambda f: f.assign(channel=None), "failed", {("batch", "all_null", "channel"): ROWS}),
    "a few values of the wrong type": (
        _set("amount", [3, 4, 5], "n/a"),
        "passed_with_quarantine",
        {("row", "type", "amount"): 3},
    ),
    "out-of-range values": (
        _set("hour", [7, 8], 25),
        "passed_with_quarantine",
        {("row", "range", "hour"): 2},
    ),
    "negative amount": (_set("amount", [9], -10.0), "passed_with_quarantine", {("row", "range", "amount"): 1}),
    "infinite amount": (_set("amount", [11], float("inf")), "passed_with_quarantine", {("row", "type", "amount"): 1}),
    "an unseen category": (
        _set("merchant_category", [1, 2, 3, 4], "crypto"),
        "passed_with_quarantine",
        {("row", "category", "merchant_category"): 4},
    ),
    "duplicate ids": (
        _set("transaction_id", [10, 20], "tx-000001"),
        "passed_with_quarantine",
        {("row", "duplicate_id", "transaction_id"): 2},
    ),
    "nulls where none are allowed": (
        _set("device", [5, 6], None),
        "passed_with_quarantine",
        {("row", "null", "device"): 2},
    ),
    "a null id": (_set("transaction_id", [12], None), "passed_with_quarantine", {("row", "null", "transaction_id"): 1}),
    "timestamps outside the interval": (
        _set("event_time", [0, 1], "2026-03-05 10:00:00"),
        "passed_with_quarantine",
        {("row", "outside_interval", "event_time"): 2},
    ),
    "unreadable timestamps": (
        _set("event_time", [2], "yesterday-ish"),
        "passed_with_quarantine",
        {("row", "type", "event_time"): 1},
    ),
    "epoch numbers among ISO text": (
        _set("event_time", [2, 3], 1772323200),  # 2026-03-01T00:00:00Z, in the interval, but of another form
        "passed_with_quarantine",
        {("row", "type", "event_time"): 2},
    ),
    "a day-first date": (
        _set("event_time", [6], "01/03/2026"),
        "passed_with_quarantine",
        {("row", "type", "event_time"): 1},
    ),
    "a boolean that is not one": (
        _set("is_international", [3], "maybe"),
        "passed_with_quarantine",
        {("row", "type", "is_international"): 1},
    ),
    "a label outside the classes": (
        _set("is_fraud", [4], 7),
        "passed_with_quarantine",
        {("row", "class", "is_fraud"): 1},
    ),
    "a label that is text": (
        _set("is_fraud", [5], "yes"),
        "passed_with_quarantine",
        {("row", "type", "is_fraud"): 1},
    ),
    "too many bad rows": (
        _set("amount", list(range(50)), -1.0),
        "failed",
        {("row", "range", "amount"): 50, ("batch", "invalid_share", None): 50},
    ),
    "every row outside the interval": (
        lambda f: f.assign(event_time="2026-02-01 00:00:00"),
        "failed",
        {("row", "outside_interval", "event_time"): ROWS, ("batch", "invalid_share", None): ROWS},
    ),
    "an empty batch": (lambda f: f.iloc[0:0], "failed", {("batch", "empty_batch", None): 0}),
    "an empty batch without columns": (lambda f: pd.DataFrame(), "failed", {("batch", "empty_batch", None): 0}),
}


@pytest.mark.parametrize("case", CORPUS, ids=list(CORPUS))
def test_bad_batch(case: str):
    break_batch, status, expected = CORPUS[case]
    batch = break_batch(good_batch())
    result = validate_batch(batch, DATASET, RULES, START, END, "raw/transactions/date=2026-03-01")
    report = result.report

    assert report.status == status, report.summary()
    found = {(f.level, f.check, f.column): f.rows for f in report.failures}
    assert found == expected, report.summary()

    assert report.rows_in == len(batch)
    assert report.rows_valid + report.rows_quarantined == (
        report.rows_in if report.accepted else report.rows_quarantined
    )
    assert len(result.valid) == report.rows_valid
    assert len(result.quarantined) == report.rows_quarantined
    if report.rows_quarantined:
        assert result.quarantined[FAILED_CHECKS_COLUMN].notna().all()
    # the report names the batch, and each failed check with its column
    summary = report.summary()
    assert "raw/transactions/date=2026-03-01" in summary
    for _, check, column in found:
        assert repr(check) in summary and (column is None or repr(column) in summary)


def test_quarantined_rows_keep_their_values_and_say_which_checks_failed():
    batch = _set("amount", [3], -4.0)(_set("merchant_category", [3, 8], "crypto")(good_batch()))
    result = validate_batch(batch, DATASET, RULES, START, END, "b")
    quarantined = result.quarantined.set_index("transaction_id")
    assert quarantined.loc["tx-000003", FAILED_CHECKS_COLUMN] == "range:amount;category:merchant_category"
    assert quarantined.loc["tx-000003", "amount"] == "-4.0"
    assert quarantined.loc["tx-000008", FAILED_CHECKS_COLUMN] == "category:merchant_category"
    assert sorted(result.valid["transaction_id"]) == sorted(set(batch["transaction_id"]) - {"tx-000003", "tx-000008"})


def test_samples_in_the_report_show_the_offending_rows():
    batch = _set("country", [1, 2, 3, 4, 5], "XX")(good_batch())
    failure = validate_batch(batch, DATASET, RULES, START, END, "b").report.failures[0]
    assert len(failure.sample) == RULES.sample_rows
    assert {row["country"] for row in failure.sample} == {"XX"}


def test_a_good_batch_passes_with_canonical_types():
    result = validate_batch(good_batch(), DATASET, RULES, START, END, "b")
    assert result.report.status == "passed" and result.report.failures == []
    valid = result.valid
    assert list(valid.columns) == DATASET.columns
    assert str(valid["event_time"].dtype) == "datetime64[ns, UTC]"
    assert valid["amount"].dtype == "float64"
    assert str(valid["is_international"].dtype) == "boolean"
    assert str(valid["is_fraud"].dtype) == "Int64"
    assert valid["is_fraud"].isna().sum() > 0  # labels not yet known are kept


@pytest.mark.parametrize(
    "variant",
    [
        lambda f: f[list(reversed(f.columns))],  # another column order
        lambda f: f.astype(str).replace({"nan": None, "None": None}),  # everything as text, as CSV and APIs give it
        lambda f: f.assign(is_international=f["is_international"].map({0: "false", 1: "true"})),
        lambda f: f.assign(event_time=pd.to_datetime(f["event_time"], utc=True)),  # real timestamps
        lambda f: f.assign(event_time=pd.to_datetime(f["event_time"])),  # naive ones, UTC
        lambda f: f.assign(event_time=_epoch(f["event_time"]) // 1000),
        lambda f: f.assign(event_time=_epoch(f["event_time"])),
        lambda f: f.assign(event_time=(_epoch(f["event_time"]) // 1000).astype(str)),  # as a CSV's text
        lambda f: f.assign(event_time=pd.to_datetime(f["event_time"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    ],
    ids=[
        "column order",
        "all text",
        "boolean words",
        "timestamps",
        "naive timestamps",
        "epoch seconds",
        "epoch milliseconds",
        "epoch seconds as text",
        "ISO with T and Z",
    ],
)
def test_good_variants_pass(variant):
    result = validate_batch(variant(good_batch()), DATASET, RULES, START, END, "b")
    assert result.report.status == "passed", result.report.summary()
    assert len(result.valid) == ROWS


def _epoch(text: pd.Series) -> pd.Series:
    """Milliseconds since the epoch."""
    return (pd.to_datetime(text, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)


def test_event_times_of_another_form_are_quarantined_and_the_report_says_which_form_the_column_has():
    batch = _set("event_time", [2, 3], 1772323200)(_set("event_time", [6], "01/03/2026")(good_batch()))
    result = validate_batch(batch, DATASET, RULES, START, END, "raw/transactions/date=2026-03-01")
    (failure,) = result.report.failures
    assert (failure.check, failure.column, failure.level, failure.rows) == ("type", "event_time", "row", 3)
    assert "the column's form, ISO 8601 text" in failure.detail
    assert [row["event_time"] for row in failure.sample] == [1772323200, 1772323200, "01/03/2026"]
    quarantined = result.quarantined.set_index("transaction_id")
    assert quarantined.loc[["tx-000002", "tx-000006"], "event_time"].tolist() == ["1772323200", "01/03/2026"]
    assert set(quarantined[FAILED_CHECKS_COLUMN]) == {"type:event_time"}
    assert len(result.valid) == ROWS - 3


def test_a_column_of_no_time_at_all_rejects_the_batch_naming_the_forms_it_may_have():
    batch = good_batch().assign(event_time="01/03/2026")
    (failure,) = validate_batch(batch, DATASET, RULES, START, END, "b").report.failures
    assert (failure.check, failure.column, failure.level) == ("wrong_type", "event_time", "batch")
    assert "ISO 8601 text, epoch seconds or milliseconds, or timestamps" in failure.detail


@pytest.mark.parametrize("empty", [good_batch().iloc[0:0], pd.DataFrame()], ids=["with columns", "without"])
def test_an_empty_batch_may_be_skipped_by_policy(empty: pd.DataFrame):
    rules = RULES.model_copy(update={"empty_batch": "skip"})
    report = validate_batch(empty, DATASET, rules, START, END, "b").report
    assert (report.status, report.accepted) == ("empty", False)


def test_the_quarantine_threshold_is_inclusive():
    rules = RULES.model_copy(update={"max_invalid_row_fraction": 0.01})
    at_limit = _set("amount", list(range(10)), -1.0)(good_batch())  # 10 of 1000 = 1 %
    assert validate_batch(at_limit, DATASET, rules, START, END, "b").report.status == "passed_with_quarantine"
    over = _set("amount", list(range(11)), -1.0)(good_batch())
    assert validate_batch(over, DATASET, rules, START, END, "b").report.status == "failed"


def test_ignored_columns_are_dropped_and_others_still_reject_the_batch():
    dataset = DATASET.model_copy(update={"ignored_columns": ["note", "row_number"]})
    batch = good_batch().assign(note="called twice", row_number=range(ROWS))
    result = validate_batch(batch, dataset, RULES, START, END, "b")
    assert result.report.status == "passed" and list(result.valid.columns) == DATASET.columns
    assert validate_batch(good_batch(), dataset, RULES, START, END, "b").report.status == "passed"  # may be absent
    (failure,) = validate_batch(batch.assign(cvv="1"), dataset, RULES, START, END, "b").report.failures
    assert (failure.check, failure.column) == ("extra_column", "cvv") and "dataset.ignored_columns" in failure.detail


def test_rows_to_score_need_no_label_nor_event_time_and_fail_row_by_row():
    """Batch scoring's check: the target and event time may be absent, other columns are left out, a column of
    bad values fails its rows (not the batch), and no share of bad rows fails the batch."""
    batch = good_batch(20).drop(columns=["is_fraud", "event_time"]).assign(note="partner's column")
    batch["is_international"] = batch["is_international"].astype(object)
    batch.loc[:9, "is_international"] = "maybe"  # half the rows: validate_batch would fail the batch
    batch.loc[12, "channel"] = None  # not nullable

    checked = validate_for_scoring(batch, DATASET, RULES, "chunk 0")

    assert checked.report.status == "passed_with_quarantine"
    assert {(f.level, f.check, f.column, f.rows) for f in checked.report.failures} == {
        ("row", "type", "is_international", 10),
        ("row", "null", "channel", 1),
    }
    assert list(checked.valid.columns) == [DATASET.id_column, *(f.name for f in DATASET.features)]
    assert checked.valid["transaction_id"].tolist() == [f"tx-{i:06d}" for i in (10, 11, 13, 14, 15, 16, 17, 18, 19)]
    assert checked.valid["is_international"].dtype == "boolean"
    assert checked.quarantined[FAILED_CHECKS_COLUMN].tolist() == ["type:is_international"] * 10 + ["null:channel"]

    without_id = validate_for_scoring(batch.drop(columns=["transaction_id"]), DATASET, RULES, "chunk 1")
    assert without_id.report.status == "failed" and without_id.report.rows_quarantined == 20
    assert without_id.report.failures[0].detail == "missing column(s): 'transaction_id' (id)"
    assert validate_for_scoring(batch.head(0), DATASET, RULES, "chunk 2").report.status == "empty"
