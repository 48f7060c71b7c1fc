"""The MLOps page on a real `airflow api-server` (one for the module), a real MLflow server and a real history
database: what it shows per model, the per-run tab, the Rollback button, and who may see and do what.

The api-server shares the session's metadata DB (SQLite), where this module writes the DAGs the page reads runs
of (small stand-ins with the real ids), their runs, a challenger awaiting approval and failed training runs,
through Airflow's ORM; the failed tasks' logs are real ones (tests/mlops/task_logs/) in the api-server's log folder.
The connections are read by the api-server from that DB (MLflow, the history database) and from the
environment (lakeFS), as a deployment has them.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import textwrap
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import httpx
import jwt
import pytest
import sqlalchemy as sa
from mlflow.tracking import MlflowClient

from devstack import demo, page_seed, services
from devstack.airflow_api import AirflowAPI
from devstack.processes import free_port
from include.mlops import alias_history, model_card, monitoring, operations_store
from include.mlops.naming import batch_scoring_dag_id, monitor_dag_id, rollback_dag_id, training_dag_id

ALPHA, BETA, GAMMA = "page_alpha", "page_beta", "page_gamma"  # gamma: nothing trained, no rollback DAG
MODELS = [ALPHA, BETA, GAMMA]
LAKEFS_UI = "http://lakefs.example:8000"
JWT_SECRET = "mlops-page-test-secret-" + "0123456789abcdef" * 4
PASSWORDS = {"admin": "admin-pw", "viewer": "viewer-pw", "nobody": "nobody-pw"}
TASK_LOGS = Path(__file__).parents[1] / "mlops" / "task_logs"
# A training run of ALPHA that failed before its runs that succeeded (made good since), and BETA's last one.
ALPHA_FAILED, BETA_FAILED = "manual__2026-10-31T02:00:00+00:00", "manual__2026-11-04T02:00:00+00:00"

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, mlflow_server, airflow_db) -> dict:
    """Configs, MLflow versions and runs, alias and drift history, DAGs, runs and an approval waiting."""
    root = tmp_path_factory.mktemp("mlops-page")
    page_seed.write_configs(root / "configs", MODELS)
    history_url = f"sqlite:///{root / 'history.db'}"
    engine = sa.create_engine(history_url)
    client = MlflowClient(mlflow_server.url)
    versions = {
        ALPHA: page_seed.seed_model(client, engine, ALPHA, versions=3, checks=48, batches=12),
        BETA: page_seed.seed_model(client, engine, BETA, versions=1, checks=0),
    }
    _write_connections(mlflow_server.url, history_url)
    runs = _write_dags_and_runs(root / "dags", root / "logs")
    return {"root": root, "engine": engine, "client": client, "versions": versions, "runs": runs}


def _write_connections(mlflow_url: str, history_url: str) -> None:
    """In the metadata DB, as airflow_settings.yaml puts them there."""
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    address = urlparse(mlflow_url)
    with create_session() as session:
        for conn_id in ("mlflow_default", "inference_log_db"):
            session.execute(sa.delete(Connection).where(Connection.conn_id == conn_id))
        session.add(Connection(conn_id="mlflow_default", conn_type="http", host=address.hostname, port=address.port))
        session.add(
            Connection(conn_id="inference_log_db", conn_type="sqlite", host=history_url.removeprefix("sqlite:///"))
        )


def _write_dags_and_runs(folder: Path, log_folder: Path) -> dict:
    """Stand-in DAGs with the models' DAG ids (no rollback DAG for GAMMA), parsed into the metadata DB as the
    dag-processor would; three training runs of ALPHA (the last waiting at approve_deployment) after one that
    failed, a drift run; a failed training run of BETA, whose two candidates failed."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType

    folder.mkdir()
    dag_ids = [training_dag_id(m) for m in MODELS] + [monitor_dag_id(m) for m in MODELS]
    dag_ids += [rollback_dag_id(ALPHA), rollback_dag_id(BETA)]
    (folder / "page_dags.py").write_text(
        textwrap.dedent(
            f"""
            from airflow.providers.standard.operators.empty import EmptyOperator
            from airflow.providers.standard.operators.python import PythonOperator
            from airflow.sdk import DAG

            for dag_id in {dag_ids!r}:
                with DAG(dag_id, schedule=None, is_paused_upon_creation=False) as dag:
                    if dag_id.startswith("ml_training"):
                        EmptyOperator(task_id="validate")
                        PythonOperator.partial(task_id="train_candidate", python_callable=print).expand(
                            op_args=[["logreg"], ["forest"]]
                        )
                        EmptyOperator(task_id="approve_deployment")
                    else:
                        EmptyOperator(task_id="work")
                globals()[dag_id] = dag
            """
        )
    )
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(folder))
    assert not bag.import_errors, bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    trigger_dag(training_dag_id(ALPHA), triggered_by=DagRunTriggeredByType.TEST, run_id=ALPHA_FAILED, conf={})
    _fail(training_dag_id(ALPHA), ALPHA_FAILED, [("validate", -1, None, "validate_rejected_batches.jsonl")], log_folder)
    runs = {}
    for n, state in ((1, DagRunState.SUCCESS), (2, DagRunState.SUCCESS), (3, DagRunState.RUNNING)):
        run_id = page_seed.training_run_id(n)
        trigger_dag(training_dag_id(ALPHA), triggered_by=DagRunTriggeredByType.TEST, run_id=run_id, conf={})
        runs[n] = run_id
        with create_session() as session:
            session.execute(
                sa.text("UPDATE dag_run SET state = :state, start_date = :start WHERE dag_id = :dag AND run_id = :run"),
                {
                    "state": state.value,
                    "start": dt.datetime(2026, 11, n, 2, tzinfo=dt.UTC),
                    "dag": training_dag_id(ALPHA),
                    "run": run_id,
                },
            )
    trigger_dag(monitor_dag_id(ALPHA), triggered_by=DagRunTriggeredByType.TEST, run_id="drift_check_1", conf={})
    trigger_dag(training_dag_id(BETA), triggered_by=DagRunTriggeredByType.TEST, run_id=BETA_FAILED, conf={})
    candidates = [
        ("train_candidate", 0, "logreg", "train_candidate_failed_to_fit.jsonl"),
        ("train_candidate", 1, "forest", "train_candidate_killed.jsonl"),
    ]
    _fail(training_dag_id(BETA), BETA_FAILED, candidates, log_folder)
    with create_session() as session:
        waiting = session.scalars(
            sa.select(TaskInstance).where(
                TaskInstance.dag_id == training_dag_id(ALPHA),
                TaskInstance.run_id == runs[3],
                TaskInstance.task_id == "approve_deployment",
            )
        ).one()
        waiting.state = TaskInstanceState.AWAITING_INPUT
        session.add(
            HITLDetail(ti_id=waiting.id, options=["Approve", "Reject"], subject=f"Deploy {ALPHA} v3?", params={})
        )
    return runs


def _fail(dag_id: str, run_id: str, failed: list[tuple[str, int, str | None, str]], log_folder: Path) -> None:
    """The run failed in the tasks `failed` names (task id, map index, the UI's name of the mapped instance, log),
    each after one try that wrote the log named, at the path Airflow's own log handler gives it."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.log.file_task_handler import FileTaskHandler
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    with create_session() as session:
        run = session.scalars(sa.select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        run.state = DagRunState.FAILED
        for task_id, map_index, map_name, log in failed:
            ti = session.scalars(
                sa.select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.run_id == run_id,
                    TaskInstance.task_id == task_id,
                    TaskInstance.map_index == map_index,
                )
            ).one()
            ti.state, ti.try_number, ti._rendered_map_index = TaskInstanceState.FAILED, 1, map_name
            path = log_folder / FileTaskHandler(str(log_folder))._render_filename(ti, 1, session=session)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text((TASK_LOGS / log).read_text())


@pytest.fixture(scope="module")
def api_server(seeded, tmp_path_factory, service_logs) -> str:
    """`airflow api-server` on the session's metadata DB with three users: admin, viewer, and one without a
    role (SimpleAuthManager's only way to a user without DAG access)."""
    home = tmp_path_factory.mktemp("api-server-home")
    (home / "passwords.json").write_text(json.dumps(PASSWORDS))
    port = free_port()
    env = services.airflow_env(
        home,
        port,
        extra={
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer,nobody:",
            "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            "AIRFLOW__API__WORKERS": "1",
            "MLOPS_CONFIG_DIR": str(seeded["root"] / "configs"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(seeded["root"] / "logs"),
            "AIRFLOW_CONN_LAKEFS_DEFAULT": json.dumps(
                {"conn_type": "lakefs", "host": "http://lakefs.internal:8000", "extra": {"ui_url": LAKEFS_UI}}
            ),
        },
        database_url=os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
    )
    for name in ("AIRFLOW_CONN_MLFLOW_DEFAULT", "AIRFLOW_CONN_INFERENCE_LOG_DB", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)  # the api-server must find them in the metadata DB
    process = services.start_airflow_component(["api-server"], env, service_logs, timeout=180)
    try:
        yield process.url
    finally:
        process.stop()


def token(base: str, user: str) -> str:
    response = httpx.post(f"{base}/auth/token", json={"username": user, "password": PASSWORDS[user]}, timeout=30)
    assert response.status_code in (200, 201), response.text
    return response.json()["access_token"]


@pytest.fixture(scope="module")
def admin(api_server) -> httpx.Client:
    with httpx.Client(
        base_url=api_server, headers={"Authorization": f"Bearer {token(api_server, 'admin')}"}, timeout=60
    ) as client:
        yield client


@pytest.fixture(scope="module")
def page(admin) -> str:
    response = admin.get("/mlops/")
    assert response.status_code == 200, response.text[:2000]
    return response.text


def section(html: str, model: str) -> str:
    """The page's part about `model`."""
    match = re.search(rf'<section class="model" id="{model}".*?</section>', html, re.S)
    assert match, f"no section for {model}"
    return match.group(0)


def test_the_page_lists_every_configured_model_with_its_aliases_and_their_gate_and_parity(page, seeded):
    assert [m for m in re.findall(r'<section class="model" id="(\w+)"', page)] == MODELS
    alpha = section(page, ALPHA)
    cards = dict(re.findall(r'data-alias="([\w-]+)" data-version="(\d+)"', alpha))
    assert cards == {"champion": "2", "challenger": "3", "previous-champion": "1"}
    challenger = alpha[alpha.index('data-alias="challenger"') :]
    assert 'class="badge reject">reject' in challenger and "not better than the champion" in challenger
    assert "roc_auc 0.953000" in challenger and "vs v2 0.952000" in challenger
    assert 'class="badge passed">passed' in challenger and "label agreement 1.000000" in challenger
    assert "mlops_service:v2def" in alpha and "page_alpha:v2abc" in alpha
    assert dict(re.findall(r'data-alias="([\w-]+)" data-version="(\d+)"', section(page, BETA))) == {
        "champion": "1",
        "challenger": "1",
    }
    assert "No version has an alias yet" in section(page, GAMMA)
    assert "predicts malignant: 0, 1 (positive)" in alpha  # in the data's own labels (model_overview.predicts)


def test_each_version_links_its_lakefs_commit_mlflow_run_and_airflow_run(page, seeded, mlflow_server):
    alpha = section(page, ALPHA)
    champion = seeded["versions"][ALPHA][1]
    experiment = seeded["client"].get_experiment_by_name(ALPHA).experiment_id
    hrefs = re.findall(r'href="([^"]+)"', alpha[alpha.index('data-alias="champion"') :])
    assert f"{LAKEFS_UI}/repositories/mlops/commits/{champion.lakefs_commit}" in hrefs
    assert f"{mlflow_server.url}/#/experiments/{experiment}/runs/{champion.run_id}" in hrefs
    run_link = f"/dags/{training_dag_id(ALPHA)}/runs/{champion.airflow_run_id.replace(':', '%3A').replace('+', '%2B')}"
    assert any(h.endswith(run_link) for h in hrefs), hrefs


def test_each_models_rollouts_are_listed_with_their_last_check(page):
    alpha = section(page, ALPHA)
    (row,) = re.findall(r'<tr data-rollout-state="(\w+)" data-version="(\d+)">', alpha)
    assert row == ("rolled_back", "3")
    rollout = alpha[alpha.index("data-rollout-state") :]
    assert "canary 10%" in rollout and "0.810" in rollout and "1 / 641" in rollout
    assert "agreement 0.810 below 0.9" in rollout
    assert "No shadow or canary rollout yet (this config's rollout.mode is direct)" in section(page, BETA)


def test_the_alias_history_is_listed_newest_first(page):
    rows = re.findall(r"<td>([\w-]+)</td>\s*<td>(?:v(\d+)|–) → v(\d+)</td>", section(page, ALPHA))
    assert rows == [
        ("challenger", "2", "3"),
        ("champion", "1", "2"),
        ("challenger", "1", "2"),
        ("champion", "", "1"),
        ("challenger", "", "1"),
    ]


def test_the_drift_chart_has_a_point_per_check_the_threshold_and_links_to_the_reports(page, seeded, mlflow_server):
    alpha = section(page, ALPHA)
    history = monitoring.history(seeded["engine"], ALPHA)
    points = re.findall(r'<circle class="check[^"]*"[^>]*data-window-end="([^"]+)"', alpha)
    assert points == [row["window_end"].replace(tzinfo=dt.UTC).isoformat() for row in history]
    assert len(re.findall(r'<circle class="check retrain"', alpha)) == sum(r["retrain"] for r in history) > 0
    assert re.search(r'<line class="threshold"[^>]*data-threshold="0.3"', alpha)
    assert '<polyline class="live-score"' in alpha or '<circle class="live-score"' in alpha
    # The label-free estimate beside it: a line in its band, and in the table.
    assert '<polyline class="estimated-score"' in alpha and '<polygon class="estimated-band"' in alpha
    newest = history[-1]
    assert f'<td class="estimated">{newest["estimated_score"]:.4f} ' in alpha
    experiment = seeded["client"].get_experiment_by_name(ALPHA).experiment_id
    run_id, _, path = newest["report_uri"].removeprefix("runs:/").partition("/")
    report = f"{mlflow_server.url}/#/experiments/{experiment}/runs/{run_id}/artifacts/{path}"
    assert f'<a class="report" href="{report}"' in alpha
    assert f'<a href="{report}" target="_blank"' in alpha  # its dot in the chart


def test_the_last_batch_runs_are_listed_with_their_commits_and_the_checks_name_their_source(page):
    alpha = section(page, ALPHA)
    rows = re.findall(r'<tr data-batch-state="(\w+)" data-run-id="([^"]+)">(.*?)</tr>', alpha, re.S)
    assert [run_id for _, run_id, _ in rows] == [page_seed.batch_run_id(i) for i in range(11, 1, -1)]  # the last 10
    assert [state for state, _, _ in rows] == ["merged"] * 6 + ["empty"] + ["merged"] * 3
    newest = html.unescape(rows[0][2])
    commit = "11" + "ba7c4" * 12 + "00"
    assert f'href="{LAKEFS_UI}/repositories/mlops/commits/{commit}"' in newest and f"mlops@{commit[:12]}" in newest
    assert "<td>v2</td>" in newest and "<td>1011</td><td>2</td>" in newest and "0.9410" in newest
    assert "50%" in newest and "20261102T190000Z_20261102T230000Z" in newest
    assert f"/dags/{batch_scoring_dag_id(ALPHA)}/runs/" in newest
    empty = html.unescape(rows[6][2])
    assert '<td class="lakefs mono"><span class="muted">–</span></td>' in empty
    # The newest batch run's check is among the newest checks, named as such; every batch check is a hollow dot.
    assert re.search(r'<tr data-source="batch"><td>2026-11-02 23:00</td><td>batch</td>', alpha)
    assert len(re.findall(r'<circle class="check batch"[^>]*data-source="batch"', alpha)) == 11
    assert re.search(r'<polyline class="drift-share batch"', alpha)
    assert "Batch runs" not in section(page, BETA)


def test_a_model_without_drift_history_shows_the_empty_state(page):
    for model in (BETA, GAMMA):
        part = section(page, model)
        assert "No drift check yet" in part and "<svg" not in part


def test_the_last_runs_and_the_approval_waiting_are_shown(page, seeded):
    alpha = section(page, ALPHA)
    runs = re.findall(r'<tr data-dag-id="([\w]+)">.*?>([^<]+)</a>', alpha, re.S)
    newest_first = [(monitor_dag_id(ALPHA), "drift_check_1")]
    newest_first += [(training_dag_id(ALPHA), seeded["runs"][n]) for n in (3, 2, 1)]
    newest_first += [(training_dag_id(ALPHA), ALPHA_FAILED)]
    assert runs == newest_first
    approval = re.search(r'<div class="notice approval" data-run-id="([^"]+)">(.*?)</div>', alpha, re.S)
    assert approval and approval.group(1) == seeded["runs"][3]
    assert f"Deploy {ALPHA} v3?" in approval.group(2)
    assert "/tasks/approve_deployment/required_actions" in approval.group(2)
    assert "No run of" in section(page, GAMMA)


def test_a_models_last_training_run_that_failed_shows_its_failed_tasks_why_and_their_logs(page, api_server):
    beta = section(page, BETA)
    failed = html.unescape(beta[beta.index('class="problem failed-run"') : beta.index("<h3>Versions</h3>")])
    assert f'data-run-id="{BETA_FAILED}"' in failed
    assert re.findall(r'data-task-id="(\w+)" data-map-index="(\d+)"', failed) == [
        ("train_candidate", "0"),
        ("train_candidate", "1"),
    ]
    assert "train_candidate (map index 0, logreg)" in failed and "train_candidate (map index 1, forest)" in failed
    assert (
        "AirflowFailException: candidate logreg (LogisticRegression) failed to fit: The 'C' parameter of "
        "LogisticRegression must be a float in the range (0.0, inf]. Got -1.0 instead." in failed
    )
    assert "Process terminated by signal. Likely out of memory error (OOM)." in failed
    run = f"{api_server}/dags/{training_dag_id(BETA)}/runs/{quote(BETA_FAILED, safe='')}"
    links = re.findall(r'<a class="task-log" href="([^"]+)" target="_top">', failed)
    assert links == [f"{run}/tasks/train_candidate/mapped/{i}?try_number=1" for i in (0, 1)]
    assert f'href="{run}" target="_top"' in failed


def test_a_failed_training_run_made_good_by_a_later_success_is_only_listed(page):
    assert "failed-run" not in section(page, ALPHA) and "failed-run" not in section(page, GAMMA)
    assert ALPHA_FAILED in section(page, ALPHA)  # in the last runs


def test_make_run_explains_a_failed_run_through_the_rest_api(api_server):
    """What `make run` prints for a model whose first training failed, from the same runs and logs."""
    api = AirflowAPI(api_server, "admin", PASSWORDS["admin"])
    try:
        validate = demo.what_failed(api, training_dag_id(ALPHA), ALPHA_FAILED)
        candidates = demo.what_failed(api, training_dag_id(BETA), BETA_FAILED)
    finally:
        api.close()
    run = f"{api_server}/dags/{training_dag_id(ALPHA)}/runs/{quote(ALPHA_FAILED, safe='')}"
    assert validate[0] == "  validate failed:"
    assert validate[1].startswith("    AirflowFailException: 30 batch(es) rejected, kept in quarantine on branch")
    assert validate[4:] == [
        "    - batch check 'invalid_share': 16 row(s) - 100.00% of rows fail row-level checks; at most 10.00% may "
        "be quarantined",
        "    (87 more lines in the log)",
        f"    log: {run}/tasks/validate?try_number=1",
    ]
    assert [line for line in candidates if not line.startswith("    ")] == [
        "  train_candidate (map index 0, logreg) failed:",
        "  train_candidate (map index 1, forest) failed:",
    ]
    assert "    AirflowFailException: candidate logreg (LogisticRegression) failed to fit: " in candidates[1]


def test_the_run_tab_shows_the_moves_and_the_gate_of_a_training_run(admin, seeded):
    run_id = seeded["runs"][2]
    response = admin.get(f"/mlops/runs/{training_dag_id(ALPHA)}/{run_id}")
    assert response.status_code == 200
    html = response.text
    moves = re.findall(r"<td>([\w-]+)</td>\s*<td>(?:v(\d+)|–) → v(\d+)</td>", html)
    assert sorted(moves) == [("challenger", "1", "2"), ("champion", "1", "2")]
    assert 'class="badge promote">promote' in html and "registered as</th><td>v2" in html
    parent = seeded["versions"][ALPHA][1].training_run_id
    assert re.search(rf'href="[^"]+/runs/{parent}"', html)


CARD = """---
library_name: sklearn
tags: [sklearn, tabular-classification]
---

# Model card: page_alpha v2

| metric | value |
|---|---|
| roc_auc | 0.9520 |

<script>alert("a card is Markdown, not a page")</script>
"""


def test_a_versions_model_card_is_linked_from_its_version_and_shown_rendered(admin, seeded, mlflow_server):
    champion = seeded["versions"][ALPHA][1]
    uri = model_card.store(seeded["client"], ALPHA, champion.version, champion.run_id, CARD)
    alpha = section(admin.get("/mlops/").text, ALPHA)
    # champion, challenger, previous champion: only the champion has a card. The link stays in the page's frame.
    links = re.findall(r'<dd class="model-card-link">(.*?)</dd>', alpha)
    href = f"models/{ALPHA}/versions/{champion.version}/card"
    assert links == [f'<a href="{href}">read it</a>', *['<span class="muted">not written</span>'] * 2]

    shown = admin.get(f"/mlops/{href}")
    assert shown.status_code == 200, shown.text[:2000]
    assert "<h1>Model card: page_alpha v2</h1>" in shown.text and "<td>0.9520</td>" in shown.text
    assert "<script>alert" not in shown.text and "&lt;script&gt;alert" in shown.text
    assert "library_name: sklearn" in shown.text  # the front matter, as metadata
    experiment = seeded["client"].get_experiment_by_name(ALPHA).experiment_id
    run_id, _, path = uri.removeprefix("runs:/").partition("/")
    assert f'href="{mlflow_server.url}/#/experiments/{experiment}/runs/{run_id}/artifacts/{path}"' in shown.text

    challenger = seeded["versions"][ALPHA][2].version
    without = admin.get(f"/mlops/models/{ALPHA}/versions/{challenger}/card")
    assert without.status_code == 404 and "registered without one" in without.text
    assert admin.get(f"/mlops/models/{ALPHA}/versions/99/card").status_code == 404
    assert admin.get(f"/mlops/models/{ALPHA}/versions/two/card").status_code == 400
    assert admin.get("/mlops/models/no_such_model/versions/1/card").status_code == 404


def test_the_run_tab_of_other_runs_is_an_empty_friendly_state(admin):
    drift = admin.get(f"/mlops/runs/{monitor_dag_id(ALPHA)}/drift_check_1")
    assert drift.status_code == 200 and "This run moved no alias" in drift.text and "Gate" not in drift.text
    other = admin.get("/mlops/runs/lakefs_housekeeping/scheduled__2026-11-01T00:00:00+00:00")
    assert other.status_code == 200 and "belongs to no configured model" in other.text


def test_rollback_triggers_the_models_rollback_dag_as_the_signed_in_user(admin, api_server):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType

    response = admin.post(f"/mlops/models/{ALPHA}/rollback", data={"version": "1"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    location = urlparse(response.headers["location"])
    assert location.path == "/mlops/"
    query = parse_qs(location.query)
    assert query["triggered"] == [rollback_dag_id(ALPHA)]
    with create_session() as session:
        run = session.scalars(
            sa.select(DagRun).where(DagRun.dag_id == rollback_dag_id(ALPHA), DagRun.run_id == query["run"][0])
        ).one()
        assert (run.conf, run.triggering_user_name, run.triggered_by) == (
            {"version": "1"},
            "admin",
            DagRunTriggeredByType.UI,
        )
    notice = admin.get(response.headers["location"]).text
    assert re.search(
        rf'id="notice">Triggered <strong>{rollback_dag_id(ALPHA)}</strong>:\s*<a href="[^"]+/dags/'
        rf"{rollback_dag_id(ALPHA)}/runs/",
        notice,
    )

    default = admin.post(f"/mlops/models/{BETA}/rollback", data={"version": ""}, follow_redirects=False)
    assert default.status_code == 303
    with create_session() as session:
        run = session.scalars(sa.select(DagRun).where(DagRun.dag_id == rollback_dag_id(BETA))).one()
        assert run.conf == {} and run.triggering_user_name == "admin"


def test_rollback_of_a_model_without_its_rollback_dag_is_a_404_naming_it(admin):
    response = admin.post(f"/mlops/models/{GAMMA}/rollback", data={"version": ""}, follow_redirects=False)
    assert response.status_code == 404 and rollback_dag_id(GAMMA) in response.text
    assert admin.post("/mlops/models/no_such_model/rollback", data={}).status_code == 404
    assert admin.post(f"/mlops/models/{ALPHA}/rollback", data={"version": "v1; drop"}).status_code == 400


def test_a_viewer_sees_the_page_but_may_not_roll_back(api_server):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    headers = {"Authorization": f"Bearer {token(api_server, 'viewer')}"}
    assert httpx.get(f"{api_server}/mlops/", headers=headers, timeout=60).status_code == 200
    with create_session() as session:
        before = session.scalar(sa.select(sa.func.count()).where(DagRun.dag_id == rollback_dag_id(ALPHA)))
    refused = httpx.post(f"{api_server}/mlops/models/{ALPHA}/rollback", data={"version": "1"}, headers=headers)
    assert refused.status_code == 403
    with create_session() as session:
        assert session.scalar(sa.select(sa.func.count()).where(DagRun.dag_id == rollback_dag_id(ALPHA))) == before


def test_a_user_without_dag_access_gets_403_and_no_data(api_server):
    headers = {"Authorization": f"Bearer {token(api_server, 'nobody')}"}
    for path in ("/mlops/", f"/mlops/runs/{training_dag_id(ALPHA)}/x"):
        response = httpx.get(f"{api_server}{path}", headers=headers, timeout=60)
        assert response.status_code == 403 and ALPHA not in response.text
    refused = httpx.post(f"{api_server}/mlops/models/{ALPHA}/rollback", data={}, headers=headers)
    assert refused.status_code == 403


def test_no_expired_or_garbage_tokens_are_refused_and_bearer_and_cookie_both_work(api_server):
    url = f"{api_server}/mlops/"
    assert httpx.get(url).status_code == 401
    garbage = httpx.get(url, headers={"Authorization": "Bearer not-a-jwt"})
    assert garbage.status_code == 403 and "Invalid JWT token" in garbage.text
    real = token(api_server, "admin")
    claims = jwt.decode(real, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret", algorithm="HS512")
    assert httpx.get(url, headers={"Authorization": f"Bearer {forged}"}).status_code == 403
    old = int(dt.datetime.now(dt.UTC).timestamp()) - 7200
    expired = jwt.encode({**claims, "iat": old, "nbf": old, "exp": old + 60}, JWT_SECRET, algorithm="HS512")
    assert httpx.get(url, headers={"Authorization": f"Bearer {expired}"}).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {real}"}, timeout=60).status_code == 200
    assert httpx.get(url, cookies={"_token": real}, timeout=60).status_code == 200
    # A Bearer header wins over the cookie: a garbage header is refused even with a good cookie.
    assert httpx.get(url, headers={"Authorization": "Bearer x"}, cookies={"_token": real}).status_code == 403


def test_the_plugin_is_listed_with_its_page_and_its_run_tab(admin):
    plugins = admin.get("/api/v2/plugins").json()["plugins"]
    [mlops] = [p for p in plugins if p["name"] == "mlops"]
    views = {v["destination"]: v for v in mlops["external_views"]}
    assert views["nav"]["href"] == "/mlops/" and views["nav"]["url_route"] == "mlops"
    assert views["dag_run"]["href"] == "/mlops/runs/{DAG_ID}/{RUN_ID}" and views["dag_run"]["url_route"]
    assert [app["url_prefix"] for app in mlops["fastapi_apps"]] == ["/mlops"]
    assert len(mlops["operator_extra_links"]) == 4


def test_alias_history_rows_written_after_the_first_page_show_up(admin, seeded):
    """The page reads the history on every request (nothing is cached between requests)."""
    alias_history.record_move(
        seeded["engine"],
        alias_history.AliasMove(
            ALPHA,
            "champion",
            "2",
            "1",
            "rollback",
            "manual",
            "admin",
            rollback_dag_id(ALPHA),
            "manual__late",
            "v2 misbehaves",
            moved_at=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        ),
    )
    first = re.search(r"<td>([\w-]+)</td>\s*<td>(?:v(\d+)|–) → v(\d+)</td>", section(admin.get("/mlops/").text, ALPHA))
    assert first.groups() == ("champion", "2", "1")


def test_an_operations_store_without_its_schema_is_named_with_the_command_that_upgrades_it(
    admin, seeded, mlflow_server, tmp_path
):
    """Not a database error per model ("no such table"): the page says once what to run, and shows what MLflow
    knows."""
    _write_connections(mlflow_server.url, f"sqlite:///{tmp_path / 'never_upgraded.db'}")
    try:
        response = admin.get("/mlops/")
    finally:
        _write_connections(mlflow_server.url, seeded["engine"].url.render_as_string())
    assert response.status_code == 200
    problems = [html.unescape(p) for p in re.findall(r'<div class="problem">(.*?)</div>', response.text, re.S)]
    assert len(problems) == 1 and operations_store.UPGRADE_COMMAND in problems[0], problems
    assert "never_upgraded.db has no operations store schema" in problems[0], problems
    cards = dict(re.findall(r'data-alias="([\w-]+)" data-version="(\d+)"', section(response.text, ALPHA)))
    assert cards == {"champion": "2", "challenger": "3", "previous-champion": "1"}
