"""The MLOps page (GET /mlops/) on a real `airflow api-server` and a real MLflow server, with 3 models.

Each model has three registered versions (previous champion, champion, challenger) with their lineage, gate and
parity tags and their training runs, its alias history, `--checks` drift checks (1,000 by default) in the
history database (SQLite, as `make run` has it), and runs of its three DAGs (stand-ins with the real ids,
serialized by `airflow dags reserialize`, triggered through the REST API). The page is requested `--requests`
times, one at a time, as the admin; the first request (which imports the page's libraries) is reported apart.
Target (issue 14): the page answers in < 500 ms.

    .venv/bin/python -m benchmarks.mlops_page [--models 3] [--checks 1000] [--requests 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

from benchmarks.report import publish
from devstack import page_seed, services
from devstack.airflow_api import AirflowAPI
from devstack.processes import free_port
from include.mlops.naming import monitor_dag_id, rollback_dag_id, training_dag_id

TARGET_MS = 500
RUNS_PER_DAG = 3


def stand_in_dags(folder: Path, models: list[str]) -> None:
    """One small DAG per id the page reads runs of: the page needs their runs, not their work."""
    dag_ids = [f(m) for m in models for f in (training_dag_id, monitor_dag_id, rollback_dag_id)]
    folder.mkdir()
    (folder / "stand_ins.py").write_text(
        textwrap.dedent(
            f"""
            from airflow.providers.standard.operators.empty import EmptyOperator
            from airflow.sdk import DAG

            for dag_id in {dag_ids!r}:
                with DAG(dag_id, schedule=None) as dag:
                    EmptyOperator(task_id="work")
                globals()[dag_id] = dag
            """
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()

    import sqlalchemy as sa
    from mlflow.tracking import MlflowClient

    models = [f"bench_model_{i}" for i in range(1, args.models + 1)]
    with tempfile.TemporaryDirectory(prefix="mlops-page-bench-") as tmp:
        root = Path(tmp)
        logs = root / "logs"
        logs.mkdir()
        mlflow = services.start_mlflow(root / "mlflow", free_port(), logs)
        api_server = None
        try:
            page_seed.write_configs(root / "configs", models)
            history_db = root / "history.db"
            engine = sa.create_engine(f"sqlite:///{history_db}")
            client = MlflowClient(mlflow.url)
            started = time.perf_counter()
            for model in models:
                page_seed.seed_model(client, engine, model, versions=3, checks=args.checks)
            print(f"seeded {len(models)} models x {args.checks} checks in {time.perf_counter() - started:.0f} s")

            home = root / "airflow"
            stand_in_dags(root / "dags", models)
            services.write_airflow_password(home, "admin", "admin")
            port = free_port()
            host, mlflow_port = mlflow.url.removeprefix("http://").split(":")
            env = services.airflow_env(
                home,
                port,
                extra={
                    "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
                    "AIRFLOW__API__WORKERS": "1",
                    "MLOPS_CONFIG_DIR": str(root / "configs"),
                    "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps({"conn_type": "http", "host": host, "port": mlflow_port}),
                    "AIRFLOW_CONN_INFERENCE_LOG_DB": json.dumps({"conn_type": "sqlite", "host": str(history_db)}),
                    "AIRFLOW_CONN_LAKEFS_DEFAULT": json.dumps({"conn_type": "lakefs", "host": "http://127.0.0.1:1"}),
                },
                database_url=f"sqlite:///{home}/airflow.db",
            )
            for command in (["db", "migrate"], ["dags", "reserialize"]):
                subprocess.run([services.venv_bin("airflow"), *command], env=env, check=True, capture_output=True)
            api_server = services.start_airflow_component(["api-server"], env, logs)
            api = AirflowAPI(api_server.url, "admin", "admin")
            for model in models:
                for dag_id in (training_dag_id(model), monitor_dag_id(model), rollback_dag_id(model)):
                    for _ in range(RUNS_PER_DAG):
                        api.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None})
            api.close()

            login = httpx.post(f"{api_server.url}/auth/token", json={"username": "admin", "password": "admin"})
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            with httpx.Client(base_url=api_server.url, headers=headers, timeout=60) as http:
                page = http.get("/mlops/")
                assert page.status_code == 200 and all(f'id="{m}"' in page.text for m in models), page.text[:500]
                assert page.text.count('<circle class="check') == len(models) * args.checks
                first, size = page.elapsed.total_seconds() * 1000, len(page.content)
                timings = [_timed(http) for _ in range(args.requests)]
        finally:
            if api_server is not None:
                api_server.stop()
            mlflow.stop()

    median = statistics.median(timings)
    p95 = statistics.quantiles(timings, n=20)[-1]
    rows = [
        {
            "models": len(models),
            "drift checks per model": args.checks,
            "requests": len(timings),
            "first request (ms)": first,
            "median (ms)": median,
            "p95 (ms)": p95,
            "max (ms)": max(timings),
            "page size (KiB)": size / 1024,
        }
    ]
    verdict = "PASS" if p95 < TARGET_MS else "MISS"
    publish("mlops_page", rows, {"target": f"p95 < {TARGET_MS} ms: {verdict}", "cpus": os.cpu_count()})


def _timed(http: httpx.Client) -> float:
    started = time.perf_counter()
    response = http.get("/mlops/")
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed


if __name__ == "__main__":
    main()
