"""The MLOps page in the Airflow UI: every model's champion, challenger and previous champion, their lineage and
model cards, the alias and drift history, the last runs of its DAGs, approvals waiting, its last training run that
failed (unless one succeeded since) with why, and a Rollback button; and a tab on each DAG run saying what that run
did to the models.

A FastAPI app mounted by the plugin at /mlops (mlops_plugin.py). Airflow does not guard plugin apps, so every
route here carries Airflow's own authorization dependencies: the caller's JWT (Bearer header, or the UI's
`_token` cookie) checked by Airflow's auth manager. Reading needs the plugins view and read access to DAG runs
(the lines of a failed task's log need read access to its DAG's task logs as well); a rollback needs the right
to trigger a run of the model's rollback DAG.

    GET  /mlops/                             the page (every configured model)
    GET  /mlops/runs/{dag_id}/{run_id}       the DAG-run tab
    GET  /mlops/models/{model}/versions/{version}/card   a version's model card, rendered
    POST /mlops/models/{model}/rollback      form field `version` (empty: the previous champion); 303 to the page

What needs no Airflow is built by include/mlops/model_overview.py and drawn by include/mlops/drift_chart.py;
here are the Airflow parts: connections, the metadata DB (runs, approvals), the task logs (through Airflow's own
log reader, as the REST API reads them), the trigger, the templates.
"""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

import sqlalchemy as sa
from airflow.api_fastapi.auth.managers.models.resource_details import AccessView, DagAccessEntity, DagDetails
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag, requires_access_view
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from include.mlops import failures
from include.mlops.naming import model_dag_ids, rollback_dag_id, rollout_dag_id, training_dag_id
from mlops_airflow import operations_store, pipelines
from mlops_airflow.approval import APPROVAL_TASK
from mlops_airflow.run_context import airflow_run_url

LAST_RUNS = 5
# How long the page waits for MLflow's health check before showing every model without it.
MLFLOW_TIMEOUT_SECONDS = 3

app = FastAPI(title="MLOps", docs_url=None, redoc_url=None, openapi_url=None)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")


def _may_read(request: Request, user: GetUserDep) -> None:
    requires_access_view(AccessView.PLUGINS)(request, user)
    requires_access_dag("GET", DagAccessEntity.RUN)(request, user)


def _may_roll_back(request: Request, model: str, user: GetUserDep) -> None:
    requires_access_view(AccessView.PLUGINS)(request, user)
    requires_access_dag("POST", DagAccessEntity.RUN, param_dag_id=rollback_dag_id(model))(request, user)


@dataclass(frozen=True)
class DagRunRow:
    dag_id: str
    run_id: str
    state: str
    run_type: str
    start: dt.datetime | None
    end: dt.datetime | None
    triggered_by: str | None
    url: str


@dataclass(frozen=True)
class Approval:
    dag_id: str
    run_id: str
    subject: str
    since: dt.datetime | None
    url: str


@dataclass(frozen=True)
class FailedRun:
    """A model's newest finished training run, when it failed."""

    dag_id: str
    run_id: str
    url: str
    end: dt.datetime | None
    tasks: tuple[failures.FailedTask, ...]  # the first failures.SHOWN_TASKS that failed
    more_tasks: int
    logs_readable: bool  # False: the user may not read the DAG's task logs, so no line of them is shown


@app.get("/", response_class=HTMLResponse, dependencies=[Depends(_may_read)])
def page(request: Request, user: GetUserDep, session: SessionDep, triggered: str = "", run: str = "") -> HTMLResponse:
    from airflow.api_fastapi.app import get_auth_manager

    folder = pipelines.configs()
    readable = get_auth_manager().get_authorized_dag_ids(user=user, method="GET", session=session)
    models = [config.name for config in folder.configs]
    dag_ids = {config.name: model_dag_ids(config) for config in folder.configs}
    runs = _last_runs(session, [d for m in models for d in dag_ids[m] if d in readable])
    asking = [d for m in models for d in (training_dag_id(m), rollout_dag_id(m)) if d in readable]
    approvals = _approvals(session, asking)
    failed, log_problems = _failed_trainings(
        session, user, [training_dag_id(m) for m in models if training_dag_id(m) in readable]
    )
    overviews, problems = _overviews(folder.configs)
    from include.mlops import drift_chart

    charts = {o.name: Markup(drift_chart.svg(o.checks, o.drift_threshold, o.metric)) for o in overviews}
    notice = None
    if triggered and run:
        notice = {"dag_id": triggered, "run_id": run, "url": airflow_run_url(triggered, run)}
    return templates.TemplateResponse(
        request,
        "mlops_page.html",
        {
            "overviews": overviews,
            "charts": charts,
            "runs": {m: [r for r in runs if r.dag_id in dag_ids[m]] for m in models},
            "approvals": {m: [a for a in approvals if a.dag_id == training_dag_id(m)] for m in models},
            "failed": {m: next((f for f in failed if f.dag_id == training_dag_id(m)), None) for m in models},
            "dag_ids": dag_ids,
            "config_errors": [str(error) for error in folder.errors],
            "problems": problems + log_problems,
            "notice": notice,
            "required_actions_url": _ui_url("/required_actions"),
            "user": user.get_name(),
        },
    )


@app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse, dependencies=[Depends(_may_read)])
def run_tab(request: Request, dag_id: str, run_id: str) -> HTMLResponse:
    """What one DAG run did to the models: the alias moves it recorded and, for a training run, its gate."""
    from include.mlops import alias_history, tracking

    model = next((c for c in pipelines.configs().configs if dag_id in model_dag_ids(c)), None)
    context: dict[str, Any] = {"dag_id": dag_id, "run_id": run_id, "model": model and model.name, "problems": []}
    if model is not None:
        try:
            moves = alias_history.moves(operations_store.page_engine(), model.name)
            context["moves"] = [m for m in moves if m.airflow_run_id == run_id and m.airflow_dag_id == dag_id]
        except Exception as exc:
            context["problems"].append(f"inference log database: {exc}")
        if dag_id == training_dag_id(model.name):
            try:
                context["gate"] = _gate_of_run(model.name, run_id, tracking)
            except Exception as exc:
                context["problems"].append(f"MLflow: {exc}")
    return templates.TemplateResponse(request, "mlops_run.html", context)


@app.get("/models/{model}/versions/{version}/card", response_class=HTMLResponse, dependencies=[Depends(_may_read)])
def model_card(request: Request, model: str, version: str) -> HTMLResponse:
    """A version's model card (`model_card.md` of its MLflow run, named by its tag `model_card_uri`), its Markdown
    rendered without the HTML it might hold, its front matter (the card's metadata) as YAML."""
    import yaml
    from markdown_it import MarkdownIt
    from mlflow.exceptions import MlflowException

    from include.mlops import model_card as cards
    from include.mlops import tracking

    if model not in {c.name for c in pipelines.configs().configs}:
        raise HTTPException(404, f"no model {model!r} is configured")
    if not version.isdigit():
        raise HTTPException(400, f"version must be a model version number, not {version!r}")
    try:
        client, mlflow_ui = _mlflow()
    except Exception as exc:
        raise HTTPException(503, f"MLflow: {exc}") from None
    try:
        found = client.get_model_version(model, version)
    except MlflowException:
        raise HTTPException(404, f"{model} has no version {version}") from None
    uri = (found.tags or {}).get(cards.CARD_TAG)
    if not uri:
        raise HTTPException(404, f"{model} v{version} has no model card (it was registered without one)")
    metadata, body = cards.split_front_matter(cards.load(client, uri))
    experiment = client.get_run(found.run_id).info.experiment_id
    context = {
        "model": model,
        "version": version,
        "card": Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(body)),
        "metadata": yaml.safe_dump(metadata, sort_keys=False) if metadata else "",
        "artifact_url": tracking.artifact_url(mlflow_ui, experiment, uri),
    }
    return templates.TemplateResponse(request, "mlops_card.html", context)


@app.post("/models/{model}/rollback", dependencies=[Depends(_may_roll_back)])
def rollback(
    request: Request, model: str, user: GetUserDep, session: SessionDep, version: Annotated[str, Form()] = ""
) -> RedirectResponse:
    """Trigger `model_rollback__<model>` as the signed-in user, with conf {"version": ...} or {} (the previous
    champion), and go back to the page, which names the new run."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound
    from airflow.utils.types import DagRunTriggeredByType

    _same_origin(request)
    if model not in {c.name for c in pipelines.configs().configs}:
        raise HTTPException(404, f"no model {model!r} is configured")
    version = version.strip()
    if version and not version.isdigit():
        raise HTTPException(400, f"version must be a model version number, not {version!r}")
    dag_id = rollback_dag_id(model)
    try:
        dag_run = trigger_dag(
            dag_id,
            triggered_by=DagRunTriggeredByType.UI,
            triggering_user_name=user.get_name(),
            conf={"version": version} if version else {},
            session=session,
        )
    except DagNotFound:
        raise HTTPException(404, f"DAG {dag_id} does not exist (not parsed yet?): nothing was triggered") from None
    session.commit()
    query = urlencode({"triggered": dag_id, "run": dag_run.run_id})
    # root_path: where the plugin mounted this app (/mlops).
    return RedirectResponse(f"{request.scope.get('root_path', '')}/?{query}#{model}", status_code=303)


def _last_runs(session, dag_ids: list[str]) -> list[DagRunRow]:
    """The last LAST_RUNS runs of each DAG, newest first, in one query."""
    from airflow.models.dagrun import DagRun

    if not dag_ids:
        return []
    newest = sa.func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc()).label("n")
    ranked = sa.select(DagRun.id, newest).where(DagRun.dag_id.in_(dag_ids)).subquery()
    query = (
        sa.select(DagRun)
        .join(ranked, ranked.c.id == DagRun.id)
        .where(ranked.c.n <= LAST_RUNS)
        .order_by(DagRun.run_after.desc())
    )
    return [
        DagRunRow(
            dag_id=r.dag_id,
            run_id=r.run_id,
            state=str(r.state),
            run_type=str(r.run_type),
            start=r.start_date,
            end=r.end_date,
            triggered_by=r.triggering_user_name,
            url=airflow_run_url(r.dag_id, r.run_id),
        )
        for r in session.scalars(query)
    ]


def _approvals(session, dag_ids: list[str]) -> list[Approval]:
    """Challengers waiting for a person: `approve_deployment` awaiting input (with its HITL question)."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState

    if not dag_ids:
        return []
    query = (
        sa.select(TaskInstance.dag_id, TaskInstance.run_id, HITLDetail.subject, HITLDetail.created_at)
        .outerjoin(HITLDetail, HITLDetail.ti_id == TaskInstance.id)
        .where(
            TaskInstance.dag_id.in_(dag_ids),
            TaskInstance.task_id == APPROVAL_TASK,
            TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
        )
        .order_by(TaskInstance.start_date.desc())
    )
    return [
        Approval(
            dag_id=row.dag_id,
            run_id=row.run_id,
            subject=row.subject or "approve the challenger",
            since=row.created_at,
            url=f"{airflow_run_url(row.dag_id, row.run_id)}/tasks/{APPROVAL_TASK}/required_actions",
        )
        for row in session.execute(query)
    ]


def _failed_trainings(session, user, dag_ids: list[str]) -> tuple[list[FailedRun], list[str]]:
    """Each training DAG's newest finished run when it failed, with its failed tasks and the first lines of
    their errors; and the task logs that could not be read. A failure that a later successful run has made good
    is not shown (the last runs table still lists it): what is left is what a person has to act on."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import DagRunState, TaskInstanceState

    if not dag_ids:
        return [], []
    finished = (DagRunState.SUCCESS, DagRunState.FAILED)
    newest = sa.func.row_number().over(partition_by=DagRun.dag_id, order_by=DagRun.run_after.desc()).label("n")
    ranked = sa.select(DagRun.id, newest).where(DagRun.dag_id.in_(dag_ids), DagRun.state.in_(finished)).subquery()
    query = sa.select(DagRun).join(ranked, ranked.c.id == DagRun.id).where(ranked.c.n == 1)
    found, problems = [], []
    for run in session.scalars(query.where(DagRun.state == DagRunState.FAILED)):
        instances = session.scalars(
            sa.select(TaskInstance)
            .where(
                TaskInstance.dag_id == run.dag_id,
                TaskInstance.run_id == run.run_id,
                TaskInstance.state == TaskInstanceState.FAILED,
            )
            .order_by(TaskInstance.end_date, TaskInstance.map_index)
        ).all()
        readable = get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_LOGS, details=DagDetails(id=run.dag_id), user=user
        )
        tasks = [_failed_task(ti, readable, problems) for ti in instances[: failures.SHOWN_TASKS]]
        found.append(
            FailedRun(
                dag_id=run.dag_id,
                run_id=run.run_id,
                url=airflow_run_url(run.dag_id, run.run_id),
                end=run.end_date,
                tasks=tuple(tasks),
                more_tasks=max(0, len(instances) - failures.SHOWN_TASKS),
                logs_readable=readable,
            )
        )
    return found, problems


def _failed_task(ti, logs_readable: bool, problems: list[str]) -> failures.FailedTask:
    """A failed task instance with why its last try failed, from its log, read as the REST API's log endpoint
    reads it (local file, log server or remote store, as this deployment's logging says)."""
    from airflow.utils.log.log_reader import TaskLogReader

    error = None
    if logs_readable:
        try:
            lines, _ = TaskLogReader().read_log_chunks(ti, ti.try_number, {})
            error = failures.task_error(line.model_dump() for line in lines)
        except Exception as exc:  # a log store that does not answer must not take the page down
            problems.append(f"the log of {ti.dag_id} {ti.task_id} could not be read: {exc}")
    log_url = failures.task_log_url(_airflow_ui(), ti.dag_id, ti.run_id, ti.task_id, ti.map_index, ti.try_number)
    return failures.FailedTask(ti.task_id, ti.map_index, ti.rendered_map_index, ti.try_number, error, log_url)


def _overviews(configs) -> tuple[list, list[str]]:
    """Each model's overview from MLflow and the history tables, the models side by side."""
    from include.mlops import model_overview

    problems: list[str] = []
    links = model_overview.Links(mlflow_ui="", lakefs_ui=_lakefs_ui(), airflow_run=airflow_run_url)
    client, engine = None, None
    try:
        engine = operations_store.page_engine()
    except Exception as exc:
        problems.append(f"operations store: {exc}")
    try:
        client, mlflow_ui = _mlflow()
        links = model_overview.Links(mlflow_ui=mlflow_ui, lakefs_ui=links.lakefs_ui, airflow_run=airflow_run_url)
    except Exception as exc:
        problems.append(f"MLflow: {exc}")
    with ThreadPoolExecutor(max_workers=max(1, len(configs))) as pool:
        overviews = list(pool.map(lambda c: model_overview.build(client, engine, c, links), configs))
    return overviews, problems


def _mlflow():
    from mlops_airflow import mlflow_tracking

    return mlflow_tracking.client(timeout=MLFLOW_TIMEOUT_SECONDS), mlflow_tracking.ui_url()


def _gate_of_run(model: str, run_id: str, tracking) -> dict[str, Any] | None:
    """The gate's decision of a training run, as its MLflow training run's tags hold it."""
    from include.mlops.model_overview import GATE_TAGS

    client, mlflow_ui = _mlflow()
    experiment = client.get_experiment_by_name(model)
    if experiment is None:
        return None
    found = tracking.training_run(client, experiment.experiment_id, run_id)
    if found is None:
        return None
    tags = found.data.tags
    return {
        "run_url": tracking.run_url(mlflow_ui, experiment.experiment_id, found.info.run_id),
        "challenger_version": tags.get("challenger_version"),
        **{key: tags[f"gate_{key}"] for key in GATE_TAGS if tags.get(f"gate_{key}")},
    }


def _lakefs_ui() -> str | None:
    from mlops_airflow.lakefs_hook import LakeFSConnectionError, LakeFSHook

    try:
        return LakeFSHook().ui_url
    except LakeFSConnectionError:
        return None


def _ui_url(path: str) -> str:
    return _airflow_ui() + path


def _airflow_ui() -> str:
    from airflow.configuration import conf

    return conf.get("api", "base_url", fallback="").rstrip("/")


def _same_origin(request: Request) -> None:
    """A form posted from another site is refused (the UI's cookie is SameSite=Lax already; this says so)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, f"cross-site request from {origin} refused")
