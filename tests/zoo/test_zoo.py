"""The dataset zoo through the library, as ml_training runs it, and the real model service.

For each public dataset of tests/zoo/datasets.py: its rows are stored as its source keeps them; a draft of its
config from that source agrees with the reviewed config in tests/zoo/configs on what the data is; collection
asks the source for one day at a time and validation accepts every day with every row exactly once; the
candidates train on the split, the gate takes the best as a first model above the floors, its ONNX form passes
the parity gate, and one model service serving the whole zoo answers a test row of each with the labels as the
data holds them, as the ONNX model offline does.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from include.mlops import classes, deployment, infer_config, packaging, registry, training
from include.mlops.config import PipelineConfig, load_config
from include.mlops.datasets import split_rows
from include.mlops.event_times import read_event_times
from include.mlops.tracking import CandidateResult
from include.mlops.validation import validate_batch
from tests.fixtures.serving import Service, service_launcher
from tests.zoo import sources
from tests.zoo.datasets import ZOO, ZooDataset

TARGETS = {
    "credit_risk": "Status",
    "diamond_cut": "cut",
    "penguins": "species",
    "titanic": "survived",
    "sacramento": "price",
    "card_default": "default",
    "hotel_rates": "avg_price_per_room",
    "attrition": "Attrition",
    "diabetes": "target",
}
ANSWERED_ROWS = 25
# What the note and README report: one row per dataset, written when the module ends.
RESULTS: list[dict] = []


@pytest.fixture(scope="module")
def api(monkeypatch_module) -> Iterator[sources.ZooApi]:
    monkeypatch_module.setenv(sources.API_KEY_VARIABLE, sources.API_KEY)
    with sources.zoo_api() as running:
        yield running


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def zoo_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One model service for every model of the zoo, serving none until each test switches its model in."""
    with service_launcher(tmp_path_factory) as start:
        yield start(expect_model=False, configs=tuple(d.config_path for d in ZOO))


@pytest.fixture(scope="module", autouse=True)
def report_results() -> Iterator[None]:
    yield
    if RESULTS:
        table = pd.DataFrame(RESULTS).to_string(index=False)
        print("\n" + table)
        if folder := os.environ.get("MLOPS_TEST_OUTPUT"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            (Path(folder) / "zoo.json").write_text(json.dumps(RESULTS, indent=2))


def _stored(dataset: ZooDataset, rows: pd.DataFrame, folder: Path, api: sources.ZooApi) -> tuple[str, dict]:
    """Write the rows where the dataset's source keeps them; returns what to draft from and the source's place."""
    if dataset.source in ("csv", "parquet"):
        path = sources.write_files(rows, folder / dataset.name, dataset.source)
        return path, {"path": path}
    if dataset.source == "sqlite":
        url = sources.write_sqlite(rows, folder / f"{dataset.name}.db", dataset.name)
        return url, {"url": url}
    reviewed = yaml.safe_load(dataset.config_path.read_text())
    time_column = reviewed["dataset"]["event_time_column"]
    url = api.add(dataset.name, rows, time_column, reviewed["source"]["format"])
    return f"{url}?start=1970-01-01T00:00:00Z&end=2100-01-01T00:00:00Z&limit=100000", {"url": url}


def _config(dataset: ZooDataset, place: dict, folder: Path) -> PipelineConfig:
    """The reviewed config, its source pointed at where the rows were written."""
    raw = yaml.safe_load(dataset.config_path.read_text())
    raw["source"].update(place)
    path = folder / f"{dataset.name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _draft_agrees(dataset: ZooDataset, drafted_from: str, config: PipelineConfig, folder: Path) -> None:
    """A draft from the stored rows says what the reviewed config says of the data (the review may change
    ranges, metrics, candidates and the source's settings, not what the columns are)."""
    args = [drafted_from, "--target", TARGETS[dataset.name], "--name", dataset.name, "--id-column", "id"]
    if dataset.source == "sqlite":
        args += ["--table", dataset.name]
    if dataset.source == "http":
        args += ["--header", f"X-Api-Key: {sources.API_KEY}"]
    out = folder / f"{dataset.name}.draft.yaml"
    assert infer_config.main([*args, "-o", str(out)]) == 0
    drafted, reviewed = load_config(out).dataset, config.dataset
    assert drafted.model_dump(exclude={"features"}) == reviewed.model_dump(exclude={"features"})
    assert [(f.name, f.type, f.allowed) for f in drafted.features] == [
        (f.name, f.type, f.allowed) for f in reviewed.features
    ]


def _collected(config: PipelineConfig, days: tuple[dt.date, ...]) -> tuple[pd.DataFrame, int]:
    """Every day asked for one at a time, as collection does, and validated; the valid rows and the rows the
    sources left out (outside their day)."""
    from mlops_airflow.sources import fetcher

    fetch = fetcher(config, dt.datetime.now(dt.UTC))
    valid, left_out = [], 0
    for day in days:
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        end = start + dt.timedelta(days=1)
        fetched = fetch(start, end)
        left_out += fetched.outside_interval
        result = validate_batch(fetched.rows, config.dataset, config.validation, start, end, str(day))
        assert result.report.accepted, result.report.summary()
        assert result.report.rows_quarantined == 0, result.report.summary()
        valid.append(result.valid)
    return pd.concat(valid, ignore_index=True), left_out


def _in_days(rows: pd.DataFrame, config: PipelineConfig, days: tuple[dt.date, ...]) -> pd.DataFrame:
    times = read_event_times(rows[config.dataset.event_time_column]).times
    first, past = pd.Timestamp(days[0], tz="UTC"), pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1)
    return rows[(times >= first) & (times < past)]


def _trained(config: PipelineConfig, splits: dict[str, pd.DataFrame]):
    """Every candidate fitted and scored; the gate's pick and its decision as a first model."""
    results, fitted = [], {}
    for spec in training.expand_candidates(config):
        began = time.perf_counter()
        pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
        seconds = time.perf_counter() - began
        valid = training.evaluate(pipeline, config, splits["valid"])
        test = training.evaluate(pipeline, config, splits["test"])
        results.append(CandidateResult(spec.name, spec.estimator, "", "", valid, test, seconds))
        fitted[spec.name] = pipeline
    best = registry.best_candidate(config, results)
    return fitted[best.candidate], best, registry.decide(config, best, None, None, [])


@pytest.mark.parametrize("dataset", ZOO, ids=[d.name for d in ZOO])
def test_a_public_dataset_is_collected_trained_gated_packaged_and_served(dataset, tmp_path, api, zoo_service):
    began = time.perf_counter()
    rows = dataset.rows()
    drafted_from, place = _stored(dataset, rows, tmp_path, api)
    config = _config(dataset, place, tmp_path)
    _draft_agrees(dataset, drafted_from, config, tmp_path)

    collected, left_out = _collected(config, dataset.days)
    expected = _in_days(rows, config, dataset.days)
    assert sorted(collected[config.dataset.id_column]) == sorted(expected["id"])  # every row once, in its day
    labelled = collected.dropna(subset=[config.dataset.target])
    splits = split_rows(labelled, config.dataset, config.split)
    assert training.split_problem(config, splits) is None

    pipeline, best, decision = _trained(config, splits)
    assert decision.promote, decision.summary()
    onnx_bytes = packaging.to_onnx(pipeline, config)
    parity = packaging.check_parity(pipeline, onnx_bytes, config, splits["test"])
    assert parity.passed, parity.summary()

    tag = deployment.save_to_model_store(onnx_bytes, config, "1", {"zoo": dataset.name})
    assert zoo_service.admin("POST", {"tag": tag}, model=config.name).status_code == 200
    test_rows = splits["test"].head(ANSWERED_ROWS)
    answer = zoo_service.predict(deployment.records_of(test_rows, config.dataset), model=config.name)
    assert answer.status_code == 200, answer.text
    served = answer.json()["predictions"]
    offline = deployment.offline_predictions(onnx_bytes, config, test_rows)
    for got, want in zip(served, offline, strict=True):
        if "value" in want:
            assert got["value"] == pytest.approx(want["value"], rel=1e-6)
        else:
            assert got["label"] == want["label"] and got["probabilities"] == pytest.approx(want["probabilities"])
    if config.dataset.task == "classification":
        assert {type(p["label"]) for p in served} == {type(config.dataset.target_classes[0])}
        assert {p["label"] for p in served} <= set(config.dataset.target_classes)
        assert set(served[0]["probabilities"]) <= {classes.text_of(c) for c in config.dataset.target_classes}

    metric = config.model.primary_metric
    RESULTS.append(
        {
            "dataset": dataset.name,
            "source": dataset.source,
            "rows": len(collected),
            "left_out_by_source": left_out,
            "task": config.dataset.task
            + (f" ({len(config.dataset.target_classes)} classes)" if config.dataset.target_classes else ""),
            "best": f"{best.candidate} ({best.estimator})",
            "test_metric": f"{metric} {best.test[metric]:.3f}",
            "parity": parity.max_probability_difference
            if parity.max_probability_difference is not None
            else parity.max_relative_error,
            "seconds": round(time.perf_counter() - began, 1),
        }
    )


def test_every_reviewed_config_is_a_dataset_of_the_zoo():
    assert sorted(p.stem for p in ZOO[0].config_path.parent.glob("*.yaml")) == sorted(d.name for d in ZOO)
