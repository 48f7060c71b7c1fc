"""The pipelines of this deployment: one per config file in the config folder, each with its own pair of DAGs.

`MLOPS_CONFIG_DIR` names the folder (default include/config/); every `*.yaml` in it is one model. The DAG files
loop over `to_build()`; a task's process builds only its own DAG (Airflow's parsing context names it). A file
that does not load, or that names the model or dataset of another, is left out of the DAG files, and
dags/pipeline_configs.py reports it as an import error naming the file and the key, so that one broken file
never takes the other models' DAGs down.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from airflow.sdk import get_parsing_context

from include.mlops.config import CONFIG_DIR, ConfigError, ConfigFolder, PipelineConfig, load_config, load_folder

CONFIG_DIR_SETTING = "MLOPS_CONFIG_DIR"


def config_folder() -> Path:
    return Path(os.environ.get(CONFIG_DIR_SETTING) or CONFIG_DIR)


def configs() -> ConfigFolder:
    return load_folder(config_folder())


def to_build(dag_id_of: Callable[[str], str]) -> list[PipelineConfig]:
    """The configs whose DAG (named by `dag_id_of(model)`) this parse builds: every one when the dag-processor
    parses the file, only the running task's when a worker does."""
    wanted = get_parsing_context().dag_id
    return [config for config in configs().configs if wanted is None or dag_id_of(config.name) == wanted]


def check() -> None:
    """Raise one ConfigError naming every config file that is left out, and why."""
    folder = configs()
    if folder.errors:
        left_out = len(folder.errors)
        raise ConfigError(
            f"{left_out} pipeline config(s) in {folder.folder} left out (their DAGs are not built; the other "
            "models' are):\n" + "\n".join(str(error) for error in folder.errors)
        )
    if not folder.configs:
        raise ConfigError(f"{folder.folder} holds no pipeline config (*.yaml): there is no model to train")


def load(config_file: str) -> PipelineConfig:
    """The config a task's DAG was built from (tasks take its file as their `config_file` argument)."""
    return load_config(config_file)
