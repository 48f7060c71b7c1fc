"""The demo data simulator: deterministic, within the demo config, learnable, and drifting when asked to."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from scipy.stats import ks_2samp
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from include.demo_sources import simulator
from include.demo_sources.simulator import Drift, generate_day, write_days
from include.mlops import sources
from include.mlops.config import load_config

CONFIG = load_config("fraud_demo.yaml")
FEATURES = [f.name for f in CONFIG.dataset.features]
CATEGORICAL = [f.name for f in CONFIG.dataset.features if f.type == "categorical"]
NUMERIC = [name for name in FEATURES if name not in CATEGORICAL]
DAY = date(2024, 5, 1)
REPO_ROOT = Path(__file__).resolve().parents[2]


def _labelled(start: date, days: int, rows: int, seed: int, drift: Drift = simulator.NO_DRIFT) -> pd.DataFrame:
    """Transactions of `days` days joined with the labels that arrive for them."""
    generated = [generate_day(start + timedelta(days=i), rows, seed, drift) for i in range(days)]
    transactions = pd.concat([g.transactions for g in generated], ignore_index=True)
    labels = pd.concat([g.labels for g in generated], ignore_index=True)
    return transactions.merge(labels, on="transaction_id")


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    """30,000 transactions of an undrifted month to train on."""
    return _labelled(DAY, 3, 10_000, seed=1)


@pytest.fixture(scope="module")
def model(history):
    """The kind of model the pipeline trains: one-hot categories and GradientBoosting."""
    encode = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL),
            ("numbers", SimpleImputer(strategy="constant", fill_value=-1), NUMERIC),
        ]
    )
    return make_pipeline(encode, GradientBoostingClassifier(random_state=0)).fit(history[FEATURES], history["is_fraud"])


def _auc(model, frame: pd.DataFrame) -> float:
    return roc_auc_score(frame["is_fraud"], model.predict_proba(frame[FEATURES])[:, 1])


def test_same_seed_and_day_give_the_same_rows_and_ids():
    first, again = generate_day(DAY, 2000, seed=3), generate_day(DAY, 2000, seed=3)
    pd.testing.assert_frame_equal(first.transactions, again.transactions)
    pd.testing.assert_frame_equal(first.labels, again.labels)
    assert first.transactions["transaction_id"].iloc[0] == "tx-3-20240501-0000000"
    assert first.transactions["transaction_id"].is_unique


def test_other_seeds_and_days_give_other_rows():
    base = generate_day(DAY, 2000, seed=3).transactions
    for other in (generate_day(DAY, 2000, seed=4).transactions, generate_day(DAY + timedelta(1), 2000, 3).transactions):
        assert not set(other["transaction_id"]) & set(base["transaction_id"])
        assert not np.allclose(other["amount"], base["amount"])


def test_a_day_is_in_time_order_within_the_day():
    transactions = generate_day(DAY, 5000, seed=3).transactions
    times = transactions["event_time"]
    assert times.is_monotonic_increasing
    assert times.min() >= pd.Timestamp(DAY, tz=UTC) and times.max() < pd.Timestamp(DAY + timedelta(1), tz=UTC)
    assert (times.dt.hour.value_counts().sort_index().loc[[12, 13]].min()) > 4 * times.dt.hour.value_counts().loc[3]


def test_values_keep_the_demo_configs_constraints(history):
    for feature in CONFIG.dataset.features:
        values = history[feature.name]
        if feature.nullable:
            assert 0.05 < values.isna().mean() < 0.5, feature.name  # sometimes missing, mostly not
        else:
            assert values.notna().all(), feature.name
        values = values.dropna()
        if feature.min is not None:
            assert values.between(feature.min, feature.max).all(), feature.name
        if feature.allowed is not None:
            assert set(values) == set(feature.allowed), feature.name  # every allowed value occurs, nothing else
        if feature.type == "boolean":
            assert values.dtype == bool and 0.02 < values.mean() < 0.2
    assert set(history["is_fraud"]) == {0, 1}
    assert history["amount"].max() > 1000 and history["hour"].nunique() == 24


def test_fraud_base_rate_is_realistic(history):
    assert 0.01 <= history["is_fraud"].mean() <= 0.03
    drifted = _labelled(DAY, 2, 10_000, seed=1, drift=Drift(concept_drift=True))
    assert 0.01 <= drifted["is_fraud"].mean() <= 0.03


def test_labels_arrive_later_fraud_latest_and_some_never():
    days = [generate_day(DAY + timedelta(i), 10_000, seed=5) for i in range(2)]
    transactions = pd.concat([d.transactions for d in days])
    labelled = transactions.merge(pd.concat([d.labels for d in days]), on="transaction_id")
    delay = labelled["labelled_at"] - labelled["event_time"]
    assert (delay > pd.Timedelta(0)).all()
    fraud, legit = delay[labelled["is_fraud"] == 1], delay[labelled["is_fraud"] == 0]
    assert legit.median() < pd.Timedelta(hours=2) < pd.Timedelta(hours=12) < fraud.median()
    assert fraud.max() <= pd.Timedelta(hours=48)
    assert 0.005 < 1 - len(labelled) / len(transactions) < 0.03


def test_writing_a_day_again_leaves_the_same_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'tx.db'}"
    counts = write_days(url, DAY, 2, 300, seed=2)
    first = _tables(url)
    assert counts == simulator.WriteCounts(600, len(first["transaction_labels"]))
    assert write_days(url, DAY, 2, 300, seed=2) == counts
    assert _tables(url) == first
    # Another seed for the second day replaces that day's rows and labels, and leaves the first day alone.
    write_days(url, DAY + timedelta(1), 1, 100, seed=9)
    tables = _tables(url)
    assert len(tables["transactions"]) == 400
    assert {row[0].split("-")[1] for row in tables["transactions"]} == {"2", "9"}
    assert {row[0] for row in tables["transaction_labels"]} <= {row[0] for row in tables["transactions"]}


def _tables(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        tables = {
            name: [tuple(row) for row in conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY transaction_id")]
            for name in ("transactions", "transaction_labels")
        }
    engine.dispose()
    return tables


@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_demo_query_returns_the_intervals_rows_with_the_labels_known_as_of(database, request, tmp_path):
    url = f"sqlite:///{tmp_path / 'tx.db'}" if database == "sqlite" else request.getfixturevalue("postgres_url")
    start = date(2024, 6, 1)  # test_sources fills 2024-01 of the shared Postgres database
    write_days(url, start, 3, 400, seed=7)
    interval = datetime(2024, 6, 2, tzinfo=UTC), datetime(2024, 6, 3, tzinfo=UTC)
    as_of = datetime(2024, 6, 3, 12, tzinfo=UTC)  # some of the day's fraud labels are still to come
    rows = sources.fetch_sql(CONFIG.source, url, *interval, CONFIG.dataset.event_time_column, as_of=as_of).rows

    expected = generate_day(date(2024, 6, 2), 400, seed=7)
    known = expected.labels[expected.labels["labelled_at"] < as_of].set_index("transaction_id")["is_fraud"]
    assert rows["transaction_id"].tolist() == expected.transactions["transaction_id"].tolist()
    pd.testing.assert_series_equal(
        rows["is_fraud"], rows["transaction_id"].map(known), check_names=False, check_dtype=False
    )
    assert 0 < rows["is_fraud"].isna().sum() < 30
    for column in ("amount", "merchant_category", "hour", "transactions_last_24h"):
        assert rows[column].tolist() == expected.transactions[column].tolist(), column
    pd.testing.assert_series_equal(
        rows["distance_from_home_km"], expected.transactions["distance_from_home_km"], check_names=False
    )


def test_amount_scale_multiplies_amounts_within_the_configs_maximum():
    base = generate_day(DAY, 20_000, seed=1).transactions["amount"]
    scaled = generate_day(DAY, 20_000, seed=1, drift=Drift(amount_scale=3)).transactions["amount"]
    assert 2.9 < scaled.median() / base.median() < 3.1
    assert ks_2samp(base, scaled).statistic > 0.3
    assert scaled.max() <= CONFIG.dataset.feature("amount").max


def test_shift_share_moves_traffic_to_other_categories_countries_and_channels():
    base = generate_day(DAY, 20_000, seed=1).transactions
    shifted = generate_day(DAY, 20_000, seed=1, drift=Drift(shift_share=0.5)).transactions
    for column in ("merchant_category", "country", "channel"):
        assert _total_variation(base[column], shifted[column]) > 0.15, column
        assert set(shifted[column]) <= set(CONFIG.dataset.feature(column).allowed), column


def _total_variation(a: pd.Series, b: pd.Series) -> float:
    shares = pd.concat([a.value_counts(normalize=True), b.value_counts(normalize=True)], axis=1).fillna(0)
    return float((shares.iloc[:, 0] - shares.iloc[:, 1]).abs().sum() / 2)


def test_new_categories_appear_outside_the_allowed_list():
    drifted = generate_day(DAY, 20_000, seed=1, drift=Drift(new_categories=("crypto",))).transactions
    assert "crypto" not in CONFIG.dataset.feature("merchant_category").allowed
    assert 0.04 < (drifted["merchant_category"] == "crypto").mean() < 0.06


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"amount_scale": 0}, "amount_scale must be above 0"),
        ({"shift_share": 1.5}, "shift_share must be between 0 and 1"),
        ({"new_categories": ("grocery", "crypto")}, r"\['grocery'\] are allowed"),
    ],
)
def test_drift_knobs_are_checked(knobs, message):
    with pytest.raises(ValueError, match=message):
        Drift(**knobs)


def test_the_model_learns_the_fraud_pattern(model):
    auc = _auc(model, _labelled(DAY + timedelta(30), 2, 10_000, seed=2))
    assert 0.85 <= auc <= 0.95


def test_concept_drift_keeps_the_features_and_breaks_the_model(model):
    later = DAY + timedelta(30)
    undrifted = _labelled(later, 2, 10_000, seed=2)
    drifted = _labelled(later, 2, 10_000, seed=3, drift=Drift(concept_drift=True))
    for column in NUMERIC:
        statistic = ks_2samp(undrifted[column].dropna(), drifted[column].dropna()).statistic
        assert statistic < 0.03, column
    for column in CATEGORICAL:
        assert _total_variation(undrifted[column], drifted[column]) < 0.02, column
    assert _auc(model, undrifted) - _auc(model, drifted) > 0.3


def test_live_records_are_the_written_transactions_as_json():
    records = list(simulator.live_records(DAY, seed=4, rows_per_day=50, days=2))
    expected = pd.concat([generate_day(DAY + timedelta(i), 50, seed=4).transactions for i in range(2)])
    assert [r["transaction_id"] for r in records] == expected["transaction_id"].tolist()
    assert set(records[0]) == {"transaction_id", "event_time", "customer_id", *FEATURES}
    assert records[0]["event_time"] == expected["event_time"].iloc[0].isoformat()
    assert any(r["distance_from_home_km"] is None for r in records)
    assert json.loads(json.dumps(records)) == records
    endless = simulator.live_records(DAY, seed=4, rows_per_day=10)
    assert len([next(endless) for _ in range(25)]) == 25


def test_cli_writes_days_with_drift(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'tx.db'}"
    argv = ["--url", url, "--start", "2024-05-01", "--days", "2", "--rows-per-day", "500", "--seed", "3"]
    assert simulator.main([*argv, "--new-category", "crypto", "--amount-scale", "2"]) == 0
    assert "wrote 1000 transactions and" in capsys.readouterr().out
    categories = {row[4] for row in _tables(url)["transactions"]}
    assert "crypto" in categories
    with pytest.raises(SystemExit):
        simulator.main([*argv, "--new-category", "grocery"])
