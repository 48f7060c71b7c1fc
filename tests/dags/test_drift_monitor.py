"""drift_monitor in real DAG runs: a champion deployed by ml_training, live traffic through the real model
service into its inference log, Evidently, MLflow and the lakeFS-compatible server.

The module trains and deploys one champion (an ml_training run) and every test watches it. Checks run for the
window that holds the traffic a test just sent; a test that needs later hours replays the logged rows of the
served window at those hours (the rows the service wrote, moved in time), since it cannot wait for them.
"""

from __future__ import annotations

import datetime as dt
import time
import types
import uuid
from collections.abc import Iterator

import mlflow
import pytest
import sqlalchemy as sa
import yaml
from mlflow.tracking import MlflowClient

from include.demo_sources import simulator
from include.mlops import deployment, monitoring, operations_store, registry
from include.mlops.config import CONFIG_DIR, load_config
from include.mlops.naming import training_dag_id
from tests.dags.conftest import (
    ROWS_PER_DAY,
    TEST_CANDIDATES,
    monitor_dag,
    set_stack_connections,
    states,
    the_config,
    training_dag,
    xcom,
)
from tests.fixtures.notifications import notify_section, receiving
from tests.fixtures.serving import service_launcher

pytestmark = pytest.mark.usefixtures("airflow_db")

SEED = 11
TRAINED_UNTIL = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
LIVE_ROWS = 400  # per check; the test config needs 300
DRIFTED = simulator.Drift(amount_scale=3.0, shift_share=0.6)


@pytest.fixture(scope="module")
def watched(tmp_path_factory, lakefs_server, mlflow_server, airflow_db) -> Iterator[types.SimpleNamespace]:
    """A champion trained and deployed by ml_training, served by a model service that logs its predictions to
    the database behind `inference_log_db`."""
    import lakefs

    home = tmp_path_factory.mktemp("drift-monitor")
    source_url = f"sqlite:///{home / 'transactions.db'}"
    simulator.write_days(source_url, dt.date(2026, 3, 1), 9, ROWS_PER_DAY, seed=SEED)
    log_path = home / "inference_log.db"
    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"].update({"registered_name": f"fraud_{uuid.uuid4().hex[:8]}", "candidates": TEST_CANDIDATES})
    raw["drift"].update({"min_rows": 300, "window_hours": 2, "min_labelled_rows": 150})
    raw["notify"] = notify_section(("retraining_requested",))
    (home / "configs").mkdir()
    config_path = home / "configs" / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)

    repo_name = f"test-{uuid.uuid4().hex[:12]}"
    repo = lakefs.Repository(repo_name, client=lakefs_server.client())
    repo.create(f"local://{repo_name}", default_branch="main")
    with service_launcher(tmp_path_factory) as start, pytest.MonkeyPatch.context() as env, receiving(env) as told:
        service = start(expect_model=False, configs=(config_path,), MLOPS_INFERENCE_LOG_URL=f"sqlite:///{log_path}")
        set_stack_connections(
            env, lakefs_server, repo_name, home / "transactions.db", log_path, mlflow_server.url, service.url
        )
        env.setenv("MLOPS_CONFIG_DIR", str(config_path.parent))
        training = training_dag(config).test(logical_date=TRAINED_UNTIL, run_conf={"history_days": 3})
        assert training.state == "success"
        client = MlflowClient(mlflow_server.url, registry_uri=mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        champion = client.get_model_version_by_alias(config.model.registered_name, registry.CHAMPION)
        yield types.SimpleNamespace(
            config=config,
            service=service,
            engine=sa.create_engine(f"sqlite:///{log_path}"),
            source_url=source_url,
            client=client,
            champion=champion,
            told=told,
        )
    repo.delete()


@pytest.fixture
def fresh(watched) -> types.SimpleNamespace:
    """An empty inference log and drift history, and no training run left over from an earlier test."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    operations_store.upgrade(watched.engine)
    with watched.engine.begin() as connection:
        connection.execute(sa.delete(monitoring.inference_log))
        connection.execute(sa.delete(monitoring.drift_history))
    with create_session() as session:
        training = training_dag_id(watched.config.name)
        session.query(DagRun).filter(DagRun.dag_id == training, DagRun.run_id.like("drift__%")).delete()
        # Checks of an hour an earlier test checked have its run id: they are to tell again.
        session.execute(sa.text("DELETE FROM variable WHERE key LIKE 'mlops_notified.%'"))
    watched.told.clear()
    return watched


def send(watched, day: dt.date, rows: int = LIVE_ROWS, world: simulator.Drift = simulator.NO_DRIFT) -> None:
    """`rows` transactions of `day` through the service's /predict, with their ids; waits until they are logged."""
    transactions = simulator.generate_day(day, ROWS_PER_DAY, SEED, world).transactions.head(rows)
    records = deployment.records_of(transactions, watched.config.dataset, with_id=True)
    before = _logged(watched)
    for batch in range(0, len(records), 100):
        response = watched.service.predict(records[batch : batch + 100])
        assert response.status_code == 200, response.text
    for _ in range(100):
        if _logged(watched) == before + len(records):
            return
        time.sleep(0.1)
    raise AssertionError(f"the service logged {_logged(watched) - before} of {len(records)} predictions")


def _logged(watched) -> int:
    with watched.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(monitoring.inference_log)).scalar_one()


def replay(watched, served: dt.datetime, hours: int) -> None:
    """Copy the predictions logged in the hour from `served` to `hours` later: the traffic of a served hour, seen
    again at another hour."""
    log = monitoring.inference_log
    within = log.c.predicted_at.between(served, served + dt.timedelta(hours=1))
    with watched.engine.begin() as connection:
        rows = [dict(r._mapping) for r in connection.execute(sa.select(log).where(within))]
        for row in rows:
            row.pop("id")
            row["predicted_at"] = row["predicted_at"] + dt.timedelta(hours=hours)
        connection.execute(log.insert(), rows)


def this_hour() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)


def check(hour: dt.datetime):
    """The drift_monitor run at the end of the hour from `hour`; its window is the 2 hours before that.

    (Airflow 3's cron schedules run at the logical date, and their data interval ends there.)"""
    return monitor_dag().test(logical_date=hour + dt.timedelta(hours=1))


def drift_runs() -> list:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        training = training_dag_id(the_config().name)
        runs = session.query(DagRun).filter(DagRun.dag_id == training, DagRun.run_id.like("drift__%")).all()
        session.expunge_all()
        return runs


def finish(training_runs) -> None:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        for run in training_runs:
            session.query(DagRun).filter(DagRun.id == run.id).update({"state": "success"})


def test_the_champion_has_a_reference_sample_with_its_predictions(watched):
    uri = watched.champion.tags["drift_reference"]
    assert uri.startswith("lakefs://") and f"/reference/{watched.config.model.registered_name}/" in uri
    _, commit, path = uri.removeprefix("lakefs://").split("/", 2)
    from include.mlops import lakefs_repository
    from mlops_airflow.lakefs_hook import LakeFSHook

    repo = LakeFSHook().get_repository()
    reference = lakefs_repository.read_parquet(repo, commit, path)
    assert 0 < len(reference) <= watched.config.drift.reference_rows
    assert set(reference[monitoring.PREDICTION_COLUMN]) <= {"0", "1"}
    assert path in {o.path for o in lakefs_repository.list_objects(repo, "main", "reference/")}  # merged on promotion


def test_traffic_like_the_training_data_gives_no_trigger_and_malformed_rows_are_left_out(fresh):
    hour = this_hour()
    send(fresh, dt.date(2026, 3, 10))
    bad = {"inputs": {"amount": "lots"}, "label": "0", "probabilities": {"0": 1.0, "1": 0.0}}
    with fresh.engine.begin() as connection:
        connection.execute(
            monitoring.inference_log.insert(),
            [
                {
                    "request_id": "corrupt",
                    "record_index": i,
                    "model_name": fresh.config.model.registered_name,
                    "model_version": fresh.champion.version,
                    "predicted_at": dt.datetime.now(dt.UTC),
                    **bad,
                }
                for i in range(3)
            ],
        )

    dag_run = check(hour)

    assert dag_run.state == "success"
    assert states(dag_run) == {
        "wait_for_traffic": "success",
        "check_drift": "success",
        "decide_retraining": "success",
        "trigger_ml_training": "skipped",
    }
    measured = xcom(dag_run, "check_drift")
    assert (measured["rows"], measured["malformed_rows"]) == (LIVE_ROWS, 3)
    assert measured["drift_share"] < fresh.config.drift.threshold
    assert measured["labelled_rows"] == 0 and measured["live_score"] is None  # March's labels: out of the lookback
    [row] = monitoring.history(fresh.engine, fresh.config.model.registered_name)
    assert not row["retrain"] and row["reason"].startswith("no drift")
    assert row["malformed_rows"] == 3 and row["model_version"] == fresh.champion.version
    assert drift_runs() == []
    # Without labels, the champion's calibrator estimates its score on the window's rows.
    assert row["estimated_score_low"] <= row["estimated_score"] <= row["estimated_score_high"]
    assert row["estimated_score"] == measured["estimated_score"] and 0.5 < row["estimated_accuracy"] <= 1

    # The report and the figures are in the champion's monitoring run, one step per check.
    link = xcom(dag_run, "check_drift", "_link_DriftReportLink")
    assert "/artifacts/drift_reports/" in link
    run_id = measured["report_uri"].removeprefix("runs:/").split("/", 1)[0]
    html = fresh.client.download_artifacts(run_id, measured["report_uri"].split("/", 2)[2])
    report = open(html).read()
    assert report.lstrip().lower().startswith("<!doctype html>") and "customer_tenure_days" in report
    [estimated] = fresh.client.get_metric_history(run_id, "estimated_average_precision")
    assert estimated.value == pytest.approx(measured["estimated_score"])
    [share] = fresh.client.get_metric_history(run_id, "drift_share")
    assert share.value == pytest.approx(measured["drift_share"]) and share.step == int(hour.timestamp() // 3600) + 1
    assert fresh.client.get_run(run_id).data.tags["model_version"] == fresh.champion.version


def test_data_drift_triggers_one_training_run_and_then_the_cool_down_holds(fresh):
    hour = this_hour()
    send(fresh, dt.date(2026, 3, 10), world=DRIFTED)

    first = check(hour)

    assert states(first)["trigger_ml_training"] == "success"
    measured = xcom(first, "check_drift")
    [triggered] = drift_runs()
    assert triggered.conf == {
        "reason": "drift",
        "drift_share": measured["drift_share"],
        "drifted_columns": measured["drifted_columns"],
        "report_uri": measured["report_uri"],
        "model_version": fresh.champion.version,
        "history_days": fresh.config.training.window_days,
    }
    assert measured["drift_share"] >= fresh.config.drift.threshold
    assert {"amount", "merchant_category"} <= set(measured["drifted_columns"])
    requested = f"{fresh.config.name}: retraining requested"
    assert fresh.told.subjects() == fresh.told.headers() == [requested]
    assert (
        "data drift" in fresh.told.posts[0]["text"]
        and f"/versions/{fresh.champion.version}" in fresh.told.posts[0]["text"]
    )

    # The training run finishes; the drift goes on for the next day: no new run inside the 24 h cool-down ...
    finish([triggered])
    for later in (1, 23):
        replay(fresh, hour, later)
        dag_run = check(hour + dt.timedelta(hours=later))
        assert states(dag_run)["trigger_ml_training"] == "skipped"
    assert len(drift_runs()) == 1 and fresh.told.headers() == [requested]  # the cool-down requests nothing
    reasons = [row["reason"] for row in monitoring.history(fresh.engine, fresh.config.model.registered_name)]
    assert reasons[0].startswith("data drift") and all(r.startswith("cool-down until") for r in reasons[1:]), reasons

    # ... and one more once it is over.
    replay(fresh, hour, 25)
    assert states(check(hour + dt.timedelta(hours=25)))["trigger_ml_training"] == "success"
    assert len(drift_runs()) == 2 and fresh.told.subjects() == fresh.told.headers() == [requested] * 2


def test_drift_while_training_is_active_triggers_nothing(fresh):
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run_id = f"drift__manual_{uuid.uuid4().hex[:6]}"  # queued: no scheduler runs it here
    trigger_dag(
        training_dag_id(fresh.config.name),
        triggered_by=DagRunTriggeredByType.TEST,
        run_id=run_id,
        conf={"reason": "manual"},
    )
    hour = this_hour()
    send(fresh, dt.date(2026, 3, 10), world=DRIFTED)

    dag_run = check(hour)

    assert states(dag_run)["trigger_ml_training"] == "skipped"
    assert len(drift_runs()) == 1
    [row] = monitoring.history(fresh.engine, fresh.config.model.registered_name)
    assert row["reason"].startswith("training already active; would retrain for data drift"), row["reason"]


def test_too_few_rows_skips_the_run_without_a_verdict(fresh):
    hour = this_hour()
    send(fresh, dt.date(2026, 3, 10), rows=50)
    replay(fresh, hour, -72)

    dag_run = check(hour - dt.timedelta(hours=72))  # a window that is over: waiting cannot help

    assert dag_run.state == "success"
    assert states(dag_run) == {
        "wait_for_traffic": "skipped",
        "check_drift": "skipped",
        "decide_retraining": "skipped",
        "trigger_ml_training": "skipped",
    }
    [row] = monitoring.history(fresh.engine, fresh.config.model.registered_name)
    assert row["reason"] == "too few rows: 50 in the window, 300 needed" and row["drift_share"] is None


def test_concept_drift_with_stable_features_triggers_through_the_performance_path(fresh):
    hour = this_hour()
    day = (hour - dt.timedelta(days=2)).date()  # its labels have arrived by now
    changed = simulator.Drift(concept_drift=True)
    simulator.write_days(fresh.source_url, day, 1, ROWS_PER_DAY, seed=SEED, drift=changed)
    send(fresh, day, rows=ROWS_PER_DAY, world=changed)

    dag_run = check(hour)

    measured = xcom(dag_run, "check_drift")
    assert measured["drift_share"] < fresh.config.drift.threshold, measured["drifted_columns"]
    assert measured["labelled_rows"] >= fresh.config.drift.min_labelled_rows
    assert measured["champion_score"] - measured["live_score"] >= fresh.config.drift.max_performance_drop
    # The label-free estimate cannot see concept drift: the probabilities, and so the estimate, stay as they were.
    assert measured["estimated_score_low"] > measured["live_score"], measured
    assert states(dag_run)["trigger_ml_training"] == "success"
    [row] = monitoring.history(fresh.engine, fresh.config.model.registered_name)
    assert row["retrain"] and row["reason"].startswith("performance drop: average_precision"), row["reason"]
