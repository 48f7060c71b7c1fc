"""Airflow's LocalExecutor with the libraries the tasks import preloaded before it forks its workers, whose task
processes are forked in turn (mlops_airflow.preload says why). `make run` uses it:
`[core] executor = mlops_airflow.executors.LocalExecutor`. The class keeps Airflow's name: Airflow tells a local
deployment from a production one by the executor's class name."""

from __future__ import annotations

from airflow.executors import local_executor

from mlops_airflow.preload import preload


class LocalExecutor(local_executor.LocalExecutor):
    def start(self) -> None:
        preload()
        super().start()
