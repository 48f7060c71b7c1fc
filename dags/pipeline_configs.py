"""The check of the pipeline configs: no DAG of its own, an import error in the Airflow UI when a config is
left out.

The DAG files of the models (ml_training.py, drift_monitor.py, model_rollout.py, model_rollback.py,
batch_scoring.py) build each config file's DAGs and skip a file that does not load or that names the model or
dataset of another file, so that one broken file never takes the other models' DAGs down. This file raises for
those files instead, so that the dag-processor records an import error whose message names each file and key
(Airflow keeps import errors per DAG file: raised in a DAG file, the error would hide every DAG of that file).
"""

from mlops_airflow import pipelines

pipelines.check()
