"""Airflow's Celery configuration, plus the libraries the tasks import preloaded in the worker before its pool
forks (mlops_airflow.preload says why). Set `[celery] celery_config_options` to
`mlops_airflow.celery_config.CELERY_CONFIG`."""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import worker_init

from mlops_airflow.preload import preload

CELERY_CONFIG = DEFAULT_CELERY_CONFIG


@worker_init.connect
def _preload_libraries(**_) -> None:
    preload()
