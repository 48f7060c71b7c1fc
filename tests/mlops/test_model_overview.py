"""The page's data of one model, built from a real MLflow server and a history database seeded the way the
pipelines write them."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from devstack import page_seed
from include.mlops import model_overview, monitoring, tracking
from include.mlops.config import load_config

LAKEFS_UI = "http://lakefs.example"


def links(mlflow_url: str, lakefs_ui: str | None = LAKEFS_UI) -> model_overview.Links:
    return model_overview.Links(mlflow_url, lakefs_ui, lambda dag, run: f"http://airflow.example/dags/{dag}/runs/{run}")


@pytest.fixture
def seeded(mlflow_server, tmp_path):
    model = f"overview_{uuid.uuid4().hex[:8]}"
    [path] = page_seed.write_configs(tmp_path / "configs", [model])
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    client = MlflowClient(mlflow_server.url)
    versions = page_seed.seed_model(client, engine, model, versions=3, checks=30)
    return load_config(path), client, engine, versions


def test_the_overview_has_each_alias_with_its_gate_parity_and_lineage(seeded, mlflow_server):
    config, client, engine, versions = seeded
    overview = model_overview.build(client, engine, config, links(mlflow_server.url))
    assert overview.problems == ()
    assert [(v.alias, v.version) for v in overview.versions] == [
        ("champion", "2"),
        ("challenger", "3"),
        ("previous-champion", "1"),
    ]
    champion = overview.versions[0]
    assert champion.gate["decision"] == "promote" and champion.gate["champion_version"] == "1"
    assert champion.parity == {
        "parity": "passed",
        "parity_rows": "114",
        "label_agreement": "1.000000",
        "max_probability_difference": "1.2e-07",
    }
    seeded_champion = versions[1]
    experiment = client.get_experiment_by_name(config.name).experiment_id
    assert champion.lakefs_commit.url == f"{LAKEFS_UI}/repositories/mlops/commits/{seeded_champion.lakefs_commit}"
    assert champion.mlflow_run.url == tracking.run_url(mlflow_server.url, experiment, seeded_champion.run_id)
    assert champion.airflow_run.url.endswith(f"/runs/{seeded_champion.airflow_run_id}")
    assert champion.bento_tag == "mlops_service:v2def" and overview.versions[1].bento_tag is None
    assert [(m.alias, m.to_version) for m in overview.moves][:2] == [("challenger", "3"), ("champion", "2")]


def test_the_checks_come_oldest_first_with_report_links_and_the_newest_are_listed_first(seeded, mlflow_server):
    config, client, engine, _ = seeded
    overview = model_overview.build(client, engine, config, links(mlflow_server.url))
    ends = [c.window_end for c in overview.checks]
    assert len(ends) == 30 and ends == sorted(ends)
    assert overview.recent_checks[0] == overview.checks[-1] and len(overview.recent_checks) == 10
    newest = monitoring.history(engine, config.name)[-1]
    experiment = client.get_experiment_by_name(config.name).experiment_id
    assert overview.checks[-1].report_url == tracking.artifact_url(mlflow_server.url, experiment, newest["report_uri"])
    assert overview.drift_threshold == page_seed.DRIFT_THRESHOLD


def test_without_mlflow_the_history_is_still_shown_and_without_lakefs_a_commit_has_no_link(seeded, mlflow_server):
    config, client, engine, _ = seeded
    without = model_overview.build(None, engine, config, links(mlflow_server.url))
    assert without.versions == () and len(without.checks) == 30 and without.checks[-1].report_url is None
    no_lakefs = model_overview.build(client, engine, config, links(mlflow_server.url, lakefs_ui=None))
    assert no_lakefs.versions[0].lakefs_commit.url is None and no_lakefs.versions[0].lakefs_commit.text


def test_history_can_be_limited_to_the_newest_checks(seeded):
    config, _, engine, _ = seeded
    everything = monitoring.history(engine, config.name)
    assert monitoring.history(engine, config.name, last=5) == everything[-5:]


def test_the_training_run_of_an_airflow_run_is_found_by_its_tag(seeded):
    config, client, _, versions = seeded
    experiment = client.get_experiment_by_name(config.name).experiment_id
    assert (
        tracking.training_run(client, experiment, versions[0].airflow_run_id).info.run_id == versions[0].training_run_id
    )
    assert tracking.training_run(client, experiment, "manual__never") is None
    with pytest.raises(ValueError, match="runs:/"):
        tracking.artifact_url("http://m", "1", "s3://bucket/report.html")


@pytest.mark.parametrize(
    ("update", "said"),
    [
        ({}, "is_fraud: 0, 1 (positive)"),
        ({"target_classes": ["bad", "good"], "positive_class": "bad"}, "is_fraud: bad (positive), good"),
        ({"target_classes": [False, True]}, "is_fraud: false, true (positive)"),
        ({"target_classes": ["Fair", "Good", "Ideal"]}, "is_fraud: Fair, Good, Ideal"),
        ({"task": "regression", "target_classes": []}, "is_fraud (regression)"),
    ],
)
def test_the_page_says_what_a_model_predicts_in_the_datas_own_labels(update, said):
    config = load_config("fraud_demo.yaml")
    changed = config.model_copy(update={"dataset": config.dataset.model_copy(update=update)})
    assert model_overview.predicts(changed) == said


def test_the_last_batch_runs_come_newest_first_with_their_commits(mlflow_server, tmp_path):
    model = f"overview_{uuid.uuid4().hex[:8]}"
    [path] = page_seed.write_configs(tmp_path / "configs", [model])
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'history.db'}")
    client = MlflowClient(mlflow_server.url)
    page_seed.seed_model(client, engine, model, versions=2, checks=0, batches=12)
    overview = model_overview.build(client, engine, load_config(path), links(mlflow_server.url))

    runs = overview.batch_runs
    assert [r.airflow_run.text for r in runs] == [page_seed.batch_run_id(i) for i in range(11, 1, -1)]
    newest, empty = runs[0], runs[6]
    assert (newest.state, newest.version, newest.rows_scored, newest.rows_quarantined) == ("merged", "1", 1011, 2)
    assert newest.lakefs_commit.url == f"{LAKEFS_UI}/repositories/mlops/commits/{'11' + 'ba7c4' * 12 + '00'}"
    assert newest.airflow_run.url.endswith(f"/runs/{page_seed.batch_run_id(11)}")
    assert (empty.state, empty.lakefs_commit, empty.drift_share) == ("empty", None, None)
    assert {c.source for c in overview.checks} == {"batch"} and len(overview.checks) == 11
    assert not overview.batch_configured  # the config has no batch section: the runs are shown all the same
