"""Demo data: card transactions and their fraud labels, the way a card issuer's database would hold them.

Writes the tables the demo config's query reads (include/config/fraud_demo.yaml):

    transactions(transaction_id PK, event_time, customer_id, amount, merchant_category, channel, country, hour,
                 customer_tenure_days, device, distance_from_home_km, transactions_last_24h, is_international)
    transaction_labels(transaction_id PK, is_fraud 0/1, labelled_at)

Fraud is rare (about 2 %) and driven by plausible signals, with noise: large amounts, night hours, online and
digital goods or gaming, abroad and far from home, many transactions in the last 24 hours, new customers.
Labels arrive later: legitimate transactions within hours, fraud after hours up to two days (a chargeback),
and a small share never. `seed` and the day fully determine the day's rows, ids included, and writing a day
replaces that day's rows, so writing it again changes nothing.

`Drift` makes the world change: data drift (larger amounts, traffic moved to other categories, countries and
channels, merchant categories the config does not know) and concept drift (fraud moves to daytime in-store
purchases of normal amounts while every feature's distribution stays as it was).

Timestamps are UTC, written by `sources.sql_timestamps` (text with six fraction digits in SQLite, timestamptz
in Postgres), the forms the demo config's source reads by default.

    python -m include.demo_sources.simulator --url sqlite:///tx.db --start 2024-01-01 --days 30 --rows-per-day 5000
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import sqlalchemy as sa

from include.mlops.sources import default_event_time_type, sql_time, sql_timestamps

# The demo config's allowed values, with the share of traffic (or of card holders) each gets.
MERCHANT_CATEGORIES = {
    "grocery": 0.25,
    "restaurants": 0.15,
    "fuel": 0.10,
    "electronics": 0.06,
    "travel": 0.04,
    "fashion": 0.10,
    "gaming": 0.05,
    "digital_goods": 0.07,
    "health": 0.08,
    "utilities": 0.10,
}
CHANNELS = ("in_store", "online", "mobile_app")
COUNTRIES = {"DE": 0.30, "FR": 0.15, "NL": 0.10, "ES": 0.10, "IT": 0.10, "PL": 0.08, "GB": 0.10, "US": 0.04,
             "BR": 0.02, "NG": 0.01}  # fmt: skip

_CATEGORY_NAMES = tuple(MERCHANT_CATEGORIES)
_COUNTRY_NAMES = tuple(COUNTRIES)
# Typical amount (EUR) and channel mix (in_store, online, mobile_app) per merchant category.
_MEDIAN_AMOUNT = np.array([35, 30, 55, 250, 400, 80, 40, 20, 40, 90], dtype=float)
_CHANNEL_MIX = np.array(
    [[0.85, 0.10, 0.05], [0.80, 0.05, 0.15], [0.95, 0.02, 0.03], [0.45, 0.40, 0.15], [0.15, 0.60, 0.25],
     [0.50, 0.35, 0.15], [0.05, 0.55, 0.40], [0.00, 0.60, 0.40], [0.80, 0.10, 0.10], [0.30, 0.50, 0.20]]
)  # fmt: skip
# Each country's offset from UTC (winter time): `hour` is the local hour where the card was used.
_UTC_OFFSET_HOURS = np.array([1, 1, 1, 1, 1, 1, 0, -5, -3, 1])
# Traffic per UTC hour: quiet at night, busy from late morning to evening.
_HOURLY_TRAFFIC = np.array([2, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 7, 8, 8, 7, 7, 7, 7, 7, 6, 5, 4, 3, 2], dtype=float)
_CUSTOMERS = 50_000
_MAX_AMOUNT = 50_000.0
_MAX_DISTANCE_KM = 20_000.0

# Fraud risk (log-odds) of the normal world and of the concept-drifted one; the intercepts give ~2 % fraud.
_CATEGORY_RISK = np.array([-0.6, -0.3, -0.2, 0.8, 0.5, 0.0, 1.0, 1.2, -0.4, -0.8])
_NEW_CATEGORY_RISK = 1.0
_CHANNEL_RISK = np.array([0.0, 0.9, 0.4])
_INTERCEPT = -6.9
_DRIFTED_INTERCEPT = -13.5
_LABEL_NOISE = 0.6
_LABELS_NEVER_ARRIVING = 0.015


@dataclass(frozen=True)
class Drift:
    """How the simulated world differs from the one the demo model learns on. The default is no drift.

    amount_scale: every amount is multiplied by this (and kept within the config's 50,000).
    shift_share: this share of transactions is moved to other merchant categories, countries and channels.
    new_categories: merchant categories outside the config's allowed list (e.g. "crypto"), which take
        `new_category_share` of the traffic.
    concept_drift: fraud moves from night, online, abroad and large amounts to daytime in-store purchases of
        normal amounts; the features' distributions stay as they were, only who commits fraud changes.
    """

    amount_scale: float = 1.0
    shift_share: float = 0.0
    new_categories: tuple[str, ...] = ()
    new_category_share: float = 0.05
    concept_drift: bool = False

    def __post_init__(self) -> None:
        if not self.amount_scale > 0:
            raise ValueError(f"amount_scale must be above 0, not {self.amount_scale}")
        for name in ("shift_share", "new_category_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, not {getattr(self, name)}")
        known = [c for c in self.new_categories if c in MERCHANT_CATEGORIES]
        if known:
            raise ValueError(f"new_categories must be categories the config does not allow; {known} are allowed")


NO_DRIFT = Drift()
# The change `make run ARGS=--demo-drift` plays: data drift (60 % of traffic moved to other categories,
# countries and channels) and concept drift (fraud moves to daytime in-store purchases of usual amounts), so
# that the champion both sees a changed world and misjudges it. Amounts stay: the new fraud pattern is about
# usual amounts, and scaling them would leave almost no fraud to learn from.
DEMO_WORLD_CHANGE = Drift(shift_share=0.6, concept_drift=True)


class Day(NamedTuple):
    """One day's transactions (ordered by event time) and the labels that will ever arrive for them."""

    transactions: pd.DataFrame
    labels: pd.DataFrame


class WriteCounts(NamedTuple):
    transactions: int
    labels: int


def generate_day(day: date, rows: int, seed: int, drift: Drift = NO_DRIFT) -> Day:
    """The transactions of one UTC day and their labels; the same arguments always give the same frames."""
    # Separate streams, so that a drift knob changes only what it is about: concept drift leaves every feature
    # exactly as it was, and data drift leaves the label draws alone.
    feature_rng, drift_rng, label_rng = (np.random.default_rng([seed, day.toordinal(), part]) for part in range(3))
    draws = _shift(drift_rng, _draws(feature_rng, rows, seed), drift.shift_share)
    transactions = _add_new_categories(drift_rng, _features(feature_rng, draws, day, drift.amount_scale), drift)
    prefix = f"tx-{seed}-{day:%Y%m%d}-"
    transactions.insert(0, "transaction_id", [f"{prefix}{i:07d}" for i in range(rows)])
    log_odds = _drifted_fraud_log_odds(transactions) if drift.concept_drift else _fraud_log_odds(transactions)
    noisy = log_odds + label_rng.normal(0, _LABEL_NOISE, rows)
    is_fraud = label_rng.random(rows) < 1 / (1 + np.exp(-noisy))
    return Day(transactions, _labels(label_rng, transactions, is_fraud))


def live_records(
    start: date, seed: int, rows_per_day: int, drift: Drift = NO_DRIFT, days: int | None = None
) -> Iterator[dict[str, Any]]:
    """The transactions of `days` days from `start` (without end when None) one by one, as JSON-ready dicts.

    They are the very transactions `write_days` writes for those days, so a prediction on a live record can
    later be joined with its label by `transaction_id`.
    """
    day = start
    while days is None or day < start + timedelta(days=days):
        frame = generate_day(day, rows_per_day, seed, drift).transactions
        frame = frame.assign(event_time=frame["event_time"].map(datetime.isoformat))
        yield from frame.astype(object).where(frame.notna(), None).to_dict("records")
        day += timedelta(days=1)


def create_tables(engine: sa.Engine) -> tuple[sa.Table, sa.Table]:
    """The two tables (created when missing)."""
    metadata = sa.MetaData()
    # SQLite keeps times as text by the sources convention; a DATETIME column there would only add a processor.
    timestamp = sa.DateTime(timezone=True).with_variant(sa.Text(), "sqlite")
    transactions = sa.Table(
        "transactions",
        metadata,
        sa.Column("transaction_id", sa.Text, primary_key=True),
        sa.Column("event_time", timestamp, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("amount", sa.Double, nullable=False),
        sa.Column("merchant_category", sa.Text, nullable=False),
        sa.Column("channel", sa.Text, nullable=False),
        sa.Column("country", sa.Text, nullable=False),
        sa.Column("hour", sa.Integer, nullable=False),
        sa.Column("customer_tenure_days", sa.Integer, nullable=False),
        sa.Column("device", sa.Text, nullable=False),
        sa.Column("distance_from_home_km", sa.Double, nullable=True),
        sa.Column("transactions_last_24h", sa.Integer, nullable=False),
        sa.Column("is_international", sa.Boolean, nullable=False),
        # Serves the interval's range scan and its ORDER BY event_time, transaction_id without a sort.
        sa.Index("ix_transactions_event_time", "event_time", "transaction_id"),
    )
    labels = sa.Table(
        "transaction_labels",
        metadata,
        sa.Column("transaction_id", sa.Text, primary_key=True),
        sa.Column("is_fraud", sa.Integer, nullable=False),
        sa.Column("labelled_at", timestamp, nullable=False),
    )
    metadata.create_all(engine)
    return transactions, labels


def write_days(url: str, start: date, days: int, rows_per_day: int, seed: int, drift: Drift = NO_DRIFT) -> WriteCounts:
    """Write `days` days from `start` to the database at `url`, replacing those days' rows, in one transaction."""
    engine = sa.create_engine(url)
    written = WriteCounts(0, 0)
    try:
        transactions, labels = create_tables(engine)
        with engine.begin() as conn:
            for offset in range(days):
                day = start + timedelta(days=offset)
                _delete_day(conn, transactions, labels, day)
                generated = generate_day(day, rows_per_day, seed, drift)
                _insert(conn, transactions, generated.transactions)
                _insert(conn, labels, generated.labels)
                written = WriteCounts(written.transactions + rows_per_day, written.labels + len(generated.labels))
    finally:
        engine.dispose()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.demo_sources.simulator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of the database to write to")
    parser.add_argument("--start", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=1)
    parser.add_argument("--rows-per-day", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amount-scale", type=float, default=1.0)
    parser.add_argument("--shift-share", type=float, default=0.0)
    parser.add_argument("--new-category", action="append", default=[], help="a merchant category to add")
    parser.add_argument("--concept-drift", action="store_true")
    args = parser.parse_args(argv)
    try:
        drift = Drift(
            amount_scale=args.amount_scale,
            shift_share=args.shift_share,
            new_categories=tuple(args.new_category),
            concept_drift=args.concept_drift,
        )
    except ValueError as exc:
        parser.error(str(exc))
    counts = write_days(args.url, args.start, args.days, args.rows_per_day, args.seed, drift)
    print(f"wrote {counts.transactions} transactions and {counts.labels} labels from {args.start} ({args.days} days)")
    return 0


# --- generation ---


@cache
def _card_holders(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's home country (index) and phone (ios or android): the same every day for a seed."""
    rng = np.random.default_rng([seed, 0, 9])  # no day has ordinal 0: a stream of its own
    home = rng.choice(len(_COUNTRY_NAMES), size=_CUSTOMERS, p=list(COUNTRIES.values()))
    phone = np.where(rng.random(_CUSTOMERS) < 0.45, "ios", "android").astype(object)
    return home, phone


def _draws(rng: np.random.Generator, rows: int, seed: int) -> dict[str, np.ndarray]:
    """Who pays where: customer, merchant category, channel and country, as indices."""
    home_of, phone_of = _card_holders(seed)
    customer = rng.integers(0, _CUSTOMERS, rows)
    category = rng.choice(len(_CATEGORY_NAMES), size=rows, p=list(MERCHANT_CATEGORIES.values()))
    channel = _pick(rng, _CHANNEL_MIX[category])
    home = home_of[customer]
    country = home.copy()
    abroad = np.flatnonzero(rng.random(rows) < np.array([0.04, 0.15, 0.08])[channel])
    # Abroad means any other country, the busier ones more often.
    elsewhere = np.tile(np.array(list(COUNTRIES.values())), (len(abroad), 1))
    elsewhere[np.arange(len(abroad)), home[abroad]] = 0
    country[abroad] = _pick(rng, elsewhere / elsewhere.sum(axis=1, keepdims=True))
    return {"customer": customer, "home": home, "phone": phone_of[customer], "category": category,
            "channel": channel, "country": country}  # fmt: skip


def _shift(rng: np.random.Generator, draws: dict[str, np.ndarray], share: float) -> dict[str, np.ndarray]:
    """Move `share` of the traffic to the usually rare categories and countries, and to mobile."""
    if not share:
        return draws
    rows = len(draws["category"])
    moved = rng.random(rows) < share
    shifted = dict(draws)
    for key, shares in (("category", MERCHANT_CATEGORIES), ("country", COUNTRIES)):
        rare_first = 1 / np.array(list(shares.values()))
        shifted[key] = np.where(moved, rng.choice(len(shares), size=rows, p=rare_first / rare_first.sum()), draws[key])
    shifted["channel"] = np.where(moved, rng.choice(len(CHANNELS), size=rows, p=[0.1, 0.3, 0.6]), draws["channel"])
    return shifted


def _features(rng: np.random.Generator, draws: dict[str, np.ndarray], day: date, amount_scale: float) -> pd.DataFrame:
    rows = len(draws["category"])
    category, channel, country = draws["category"], draws["channel"], draws["country"]
    # Rows are independent draws, so pairing them with sorted times keeps every row random and the day ordered.
    utc_hour = np.sort(rng.choice(24, size=rows, p=_HOURLY_TRAFFIC / _HOURLY_TRAFFIC.sum()) + rng.random(rows))
    event_time = pd.Timestamp(day, tz=UTC) + pd.to_timedelta((utc_hour * 3_600_000_000).astype("int64"), unit="us")
    amount = rng.lognormal(np.log(_MEDIAN_AMOUNT[category]), 0.9) * amount_scale
    is_international = country != draws["home"]
    distance = np.where(is_international, rng.lognormal(np.log(900), 0.8, rows), rng.lognormal(np.log(8), 1.1, rows))
    # Card-present payments always know where they happen; online ones often do not.
    located = rng.random(rows) >= np.array([0.0, 0.6, 0.2])[channel]
    # Tenure and velocity are drawn per transaction: only home country and phone are kept per customer.
    tenure = np.where(rng.random(rows) < 0.08, rng.exponential(25, rows), rng.lognormal(np.log(1100), 0.7, rows))
    velocity = rng.poisson(np.where(rng.random(rows) < 0.03, 14.0, 2.5))
    desktop = (channel == 1) & (rng.random(rows) < 0.6)
    return pd.DataFrame(
        {
            "event_time": event_time,
            "customer_id": [f"c{c:05d}" for c in draws["customer"]],
            "amount": np.clip(np.round(amount, 2), 0.01, _MAX_AMOUNT),
            "merchant_category": np.array(_CATEGORY_NAMES, dtype=object)[category],
            "channel": np.array(CHANNELS, dtype=object)[channel],
            "country": np.array(_COUNTRY_NAMES, dtype=object)[country],
            "hour": (event_time.hour.to_numpy() + _UTC_OFFSET_HOURS[country]) % 24,
            "customer_tenure_days": np.clip(tenure, 0, 20_000).astype("int64"),
            "device": np.where(channel == 0, "pos_terminal", np.where(desktop, "desktop", draws["phone"])),
            "distance_from_home_km": np.where(located, np.clip(np.round(distance, 1), 0, _MAX_DISTANCE_KM), np.nan),
            "transactions_last_24h": np.clip(velocity, 0, 500).astype("int64"),
            "is_international": is_international,
        }
    )


def _add_new_categories(rng: np.random.Generator, transactions: pd.DataFrame, drift: Drift) -> pd.DataFrame:
    if not drift.new_categories:
        return transactions
    rows = len(transactions)
    new = rng.random(rows) < drift.new_category_share
    names = np.array(drift.new_categories, dtype=object)[rng.integers(0, len(drift.new_categories), rows)]
    return transactions.assign(merchant_category=np.where(new, names, transactions["merchant_category"]))


def _fraud_log_odds(t: pd.DataFrame) -> np.ndarray:
    """Fraudsters cash out fast: large amounts, at night, online, on resellable goods, abroad, on new cards."""
    category_risk = t["merchant_category"].map(dict(zip(_CATEGORY_NAMES, _CATEGORY_RISK, strict=True)))
    return (
        _INTERCEPT
        + 0.8 * np.log(t["amount"].to_numpy() / 60).clip(-2, None)
        + 1.8 * (t["hour"].to_numpy() < 6)
        + category_risk.fillna(_NEW_CATEGORY_RISK).to_numpy()
        + _CHANNEL_RISK[_index(t["channel"], CHANNELS)]
        + 1.0 * t["is_international"].to_numpy()
        + 0.4 * np.log1p(t["distance_from_home_km"].fillna(0).to_numpy() / 50)
        + 0.8 * np.log1p(t["transactions_last_24h"].to_numpy())
        + 1.5 * (t["customer_tenure_days"].to_numpy() < 30)
    )


def _drifted_fraud_log_odds(t: pd.DataFrame) -> np.ndarray:
    """The new pattern: skimmed cards used in shops by day, for amounts that look like the category's usual.

    As learnable as the normal world's (the true log-odds rank frauds with average precision ~0.28 against
    ~0.26), so that a model retrained on the changed world can earn its promotion past the gate's floors."""
    typical = t["merchant_category"].map(dict(zip(_CATEGORY_NAMES, _MEDIAN_AMOUNT, strict=True))).fillna(50)
    hour = t["hour"].to_numpy()
    return (
        _DRIFTED_INTERCEPT
        + 4.5 * ((hour >= 10) & (hour <= 16))
        + 3.6 * (t["channel"].to_numpy() == "in_store")
        + 2.4 * t["merchant_category"].isin(["grocery", "fuel", "fashion", "health"]).to_numpy()
        - 2.7 * np.abs(np.log(t["amount"].to_numpy() / typical.to_numpy()))
        - 3.0 * t["is_international"].to_numpy()
        + 2.4 * (t["customer_tenure_days"].to_numpy() > 365)
    )


def _labels(rng: np.random.Generator, transactions: pd.DataFrame, is_fraud: np.ndarray) -> pd.DataFrame:
    """Legitimate payments are confirmed within hours; fraud is reported after hours up to two days."""
    rows = len(transactions)
    delay_hours = np.where(is_fraud, rng.uniform(2, 48, rows), 1 / 60 + rng.exponential(1.5, rows))
    arrives = rng.random(rows) >= _LABELS_NEVER_ARRIVING
    labelled_at = transactions["event_time"] + pd.to_timedelta((delay_hours * 3_600_000_000).astype("int64"), unit="us")
    labels = pd.DataFrame(
        {
            "transaction_id": transactions["transaction_id"],
            "is_fraud": is_fraud.astype("int64"),
            "labelled_at": labelled_at,
        }
    )
    return labels.loc[arrives].reset_index(drop=True)


def _pick(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One index per row of a (rows x choices) probability matrix."""
    cumulative = probabilities.cumsum(axis=1)
    picked = (rng.random((len(probabilities), 1)) * cumulative[:, -1:] > cumulative).sum(axis=1)
    return np.minimum(picked, probabilities.shape[1] - 1)


def _index(values: pd.Series, names: tuple[str, ...]) -> np.ndarray:
    return values.map({name: i for i, name in enumerate(names)}).to_numpy(dtype="int64")


# --- writing ---


def _delete_day(conn: sa.Connection, transactions: sa.Table, labels: sa.Table, day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    stored_as = default_event_time_type(conn.dialect.name)
    in_day = (transactions.c.event_time >= sql_time(start, stored_as)) & (
        transactions.c.event_time < sql_time(start + timedelta(days=1), stored_as, round_up=True)
    )
    day_ids = sa.select(transactions.c.transaction_id).where(in_day)
    conn.execute(sa.delete(labels).where(labels.c.transaction_id.in_(day_ids)))
    conn.execute(sa.delete(transactions).where(in_day))


def _insert(conn: sa.Connection, table: sa.Table, frame: pd.DataFrame) -> None:
    if frame.empty:  # executemany with no rows is an error in SQLAlchemy
        return
    names = [column.name for column in table.columns]
    rows = list(zip(*(_plain_values(frame[name], conn.dialect.name) for name in names), strict=True))
    if conn.dialect.paramstyle == "qmark":
        # SQLite: the driver's own executemany is C code, several times faster than SQLAlchemy's dict per row.
        marks = ", ".join("?" * len(names))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({marks})", rows)
    else:
        conn.execute(sa.insert(table), [dict(zip(names, row, strict=True)) for row in rows])


def _plain_values(values: pd.Series, dialect: str) -> list[Any]:
    """Python values, as drivers want them: no numpy scalars, and None (not NaN) for missing."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return sql_timestamps(values, dialect)
    if values.hasnans:
        return values.astype(object).where(values.notna(), None).tolist()
    return values.tolist()


if __name__ == "__main__":
    raise SystemExit(main())
