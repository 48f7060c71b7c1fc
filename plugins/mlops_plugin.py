"""Registers this project's Airflow UI parts: the operator extra links (for serialized DAGs), and the MLOps page
(plugins/mlops_airflow/mlops_page.py) at /mlops, shown in the UI's navigation and as a tab on every DAG run."""

from airflow.plugins_manager import AirflowPlugin

from mlops_airflow.links import DriftReportLink, LakeFSCommitLink, MLflowRunLink, ServiceDocsLink

URL_PREFIX = "/mlops"


class MLOpsPageApp:
    """The page's FastAPI app, imported at its first request. Every process that loads plugins (each task does,
    for their macros) would otherwise import FastAPI and Airflow's API security with it, ~1 s."""

    async def __call__(self, scope, receive, send) -> None:
        from mlops_airflow.mlops_page import app

        await app(scope, receive, send)


class MLOpsPlugin(AirflowPlugin):
    name = "mlops"
    operator_extra_links = [LakeFSCommitLink(), MLflowRunLink(), ServiceDocsLink(), DriftReportLink()]
    fastapi_apps = [{"app": MLOpsPageApp(), "url_prefix": URL_PREFIX, "name": "MLOps page"}]
    external_views = [
        # Shown inside the UI, in an iframe at /plugin/mlops (without a url_route, Airflow 3.3.2 renders the entry
        # as a button that opens nothing). The iframe's sandbox blocks new tabs and confirm(): the page's
        # templates/mlops_base.html hands those to the UI's window.
        {"name": "MLOps", "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "mlops", "nav_top_level": True},
        {
            "name": "MLOps",
            "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "mlops-run",
        },
    ]
