"""Training runs in MLflow: one parent run per DAG run, one child run per candidate, with full lineage.

Each child run logs its parameters and metrics in batches, the fitted pipeline with its signature and an input
example, the train/valid/test splits as dataset inputs whose source is the lakeFS commit they were read at, and
the lineage tags (lakeFS repository/branch/commit, Airflow dag_id/run_id, code version), and for a classifier
the calibrator of its validation probabilities (`calibrator.json`, include/mlops/performance_estimate.py). Runs
are found again by their tags, so a retried task continues the run its first try made instead of starting a
second one.

Models are logged (and the champion loaded) through MLflow's fluent API: the caller points `mlflow`'s tracking
and registry URIs at the same server as the client it passes (plugins' `mlflow_tracking.client()` does).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from include.mlops import performance_estimate, training
from include.mlops.config import PipelineConfig
from include.mlops.lineage import LakeFSDatasetSource, code_version

ROLE_TAG = "mlops.role"
CANDIDATE_TAG = "mlops.candidate"
PARENT_TAG = "mlflow.parentRunId"
MODEL_NAME = "model"


class MLflowUnavailable(RuntimeError):
    """The tracking server cannot be reached."""


@dataclass(frozen=True)
class CandidateResult:
    candidate: str
    estimator: str
    run_id: str
    # MLflow 3 keeps a logged model apart from its run's artifacts: `models:/<model id>`.
    model_uri: str
    valid: dict[str, float]
    test: dict[str, float]
    fit_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def quiet_skops() -> Generator[None]:
    """skops looks up ~1,160 names in every loaded module on first use; Airflow's deprecated modules answer
    each with a FutureWarning, which would flood the task log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def load_sklearn_model(model_uri: str):
    """An sklearn model logged by `train_candidate` (skops format)."""
    import mlflow.sklearn

    with quiet_skops():
        return mlflow.sklearn.load_model(model_uri)


def check_reachable(tracking_uri: str, timeout: float = 10) -> None:
    """Fail with one sentence when the tracking server does not answer its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    url = tracking_uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise MLflowUnavailable(f"MLflow at {tracking_uri} cannot be reached ({reason}); nothing was logged or changed")


def lineage_tags(
    repository: str, branch: str, commit: str, source_commit: str, airflow: Mapping[str, str]
) -> dict[str, str]:
    return {
        "lakefs_repository": repository,
        "lakefs_branch": branch,
        "lakefs_commit": commit,
        "lakefs_source_commit": source_commit,
        "code_version": code_version(),
        **{k: v for k, v in airflow.items() if k.startswith("airflow_")},
    }


def experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def parent_run(client: MlflowClient, experiment: str, run_name: str, tags: Mapping[str, str]) -> str:
    """The training run of this DAG run (made on first call, found again on later ones)."""
    existing = training_run(client, experiment, tags["airflow_run_id"])
    if existing is not None:
        return existing.info.run_id
    run = client.create_run(experiment, run_name=run_name, tags={**tags, ROLE_TAG: "training"})
    return run.info.run_id


def training_run(client: MlflowClient, experiment: str, airflow_run_id: str):
    """The training run (the parent of the candidates) of the Airflow run `airflow_run_id`, or None."""
    existing = _runs_tagged(client, experiment, {ROLE_TAG: "training", "airflow_run_id": airflow_run_id})
    return existing[0] if existing else None


def train_candidate(
    client: MlflowClient,
    config: PipelineConfig,
    spec: training.CandidateSpec,
    splits: Mapping[str, pd.DataFrame],
    split_uris: Mapping[str, str],
    parent_run_id: str,
    tags: Mapping[str, str],
) -> CandidateResult:
    """Fit `spec` on the train split, score it on valid and test, and log it all as a child run."""
    parent = client.get_run(parent_run_id)
    experiment = parent.info.experiment_id
    finished = _runs_tagged(client, experiment, {PARENT_TAG: parent_run_id, CANDIDATE_TAG: spec.name}, "FINISHED")
    if finished:  # an earlier try logged everything; its result stands
        return _result_of(finished[0], spec)

    run = client.create_run(
        experiment,
        run_name=spec.name,
        tags={**tags, PARENT_TAG: parent_run_id, ROLE_TAG: "candidate", CANDIDATE_TAG: spec.name},
    )
    run_id = run.info.run_id
    try:
        pipeline = training.build_pipeline(config, spec)
        began = time.perf_counter()
        training.fit(pipeline, config, splits["train"])
        fit_seconds = time.perf_counter() - began
        valid = training.evaluate(pipeline, config, splits["valid"])
        test = training.evaluate(pipeline, config, splits["test"])
        params = {"estimator": spec.estimator, **spec.params, **_effective_params(pipeline)}
        now = int(time.time() * 1000)
        metrics = [Metric(f"valid_{k}", v, now, 0) for k, v in valid.items()]
        metrics += [Metric(f"test_{k}", v, now, 0) for k, v in test.items()]
        metrics.append(Metric("fit_seconds", fit_seconds, now, 0))
        client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, _param_value(v)) for k, v in sorted(params.items())],
            tags=[RunTag("primary_metric", config.model.primary_metric)],
        )
        model_uri = _log_model_and_data(run_id, config, pipeline, splits, split_uris)
        client.log_dict(run_id, {"candidate": spec.to_dict(), "valid": valid, "test": test}, "metrics.json")
        if config.dataset.task == "classification":
            # Fitted here, where the valid split and the fitted pipeline are at hand (an isotonic fit and a small
            # artifact per candidate), so that the challenger, whichever it is, carries one (performance_estimate.py).
            calibrator = performance_estimate.of_pipeline(config, pipeline, splits["valid"])
            client.log_dict(run_id, calibrator.to_dict(), performance_estimate.ARTIFACT)
    except BaseException:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id, status="FINISHED")
    return CandidateResult(spec.name, spec.estimator, run_id, model_uri, valid, test, fit_seconds)


ONNX_MODEL_NAME = "onnx_model"


def log_onnx(run_id: str, onnx_bytes: bytes, parity_report: Mapping) -> str:
    """Log the ONNX form (`mlflow.onnx`) and its parity report to the candidate's run; returns the model URI."""
    import mlflow.onnx
    import onnx

    with mlflow.start_run(run_id=run_id):
        mlflow.log_dict(dict(parity_report), "parity_report.json")
        model = mlflow.onnx.log_model(
            onnx.load_from_string(onnx_bytes),
            name=ONNX_MODEL_NAME,
            pip_requirements=_requirements("onnx", "onnxruntime"),
            save_as_external_data=False,
        )
    return model.model_uri


def monitoring_run(client: MlflowClient, experiment: str, model_name: str, version: str) -> str:
    """The monitoring run of one model version (made on the first check, found again on later ones)."""
    tags = {ROLE_TAG: "monitoring", "model_name": model_name, "model_version": version}
    existing = _runs_tagged(client, experiment, tags)
    if existing:
        return existing[0].info.run_id
    return client.create_run(experiment, run_name=f"monitoring-{model_name}-v{version}", tags=tags).info.run_id


def log_drift_check(
    client: MlflowClient,
    run_id: str,
    step: int,
    figures: Mapping[str, float],
    report_html: str | None = None,
    report_path: str | None = None,
) -> None:
    """One check as step `step` of the monitoring run (all figures in one call), and its HTML report as the
    artifact `report_path` when there is one."""
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in figures.items()])
    if report_html is not None and report_path is not None:
        client.log_text(run_id, report_html, report_path)


def load_onnx(model_uri: str) -> bytes:
    import mlflow.onnx

    return mlflow.onnx.load_model(model_uri).SerializeToString()


def run_url(tracking_uri: str, experiment: str, run_id: str) -> str:
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"


def artifact_url(tracking_uri: str, experiment: str, artifact_uri: str) -> str:
    """The MLflow UI page of an artifact given as `runs:/<run id>/<path>` (a drift report's `report_uri`)."""
    if not artifact_uri.startswith("runs:/"):
        raise ValueError(f"{artifact_uri!r} is not a runs:/<run id>/<path> URI")
    run_id, _, path = artifact_uri.removeprefix("runs:/").partition("/")
    return f"{run_url(tracking_uri, experiment, run_id)}/artifacts/{path}"


def _log_model_and_data(
    run_id: str,
    config: PipelineConfig,
    pipeline,
    splits: Mapping[str, pd.DataFrame],
    split_uris: Mapping[str, str],
) -> str:
    from mlflow.models import infer_signature

    dataset = config.dataset
    example = training.features_of(splits["valid"].head(5), dataset)
    signature = infer_signature(example, training.scores(pipeline, config, splits["valid"].head(5)))
    with quiet_skops(), mlflow.start_run(run_id=run_id):
        import skops.io

        # skops, not pickle: loading the model runs no arbitrary code; the types it may build are listed here.
        trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
        model = mlflow.sklearn.log_model(
            pipeline,
            name=MODEL_NAME,
            signature=signature,
            input_example=example,
            serialization_format="skops",
            skops_trusted_types=trusted,
            pip_requirements=_model_requirements(pipeline),
        )
        for name, frame in splits.items():
            log_input(_dataset_input(dataset, name, frame, split_uris[name]), context=_CONTEXTS.get(name, name))
    return model.model_uri


def log_input(dataset, context: str, tries: int = 3) -> None:
    """`mlflow.log_input` into the active run, tried again when another run created the same dataset at the same
    moment. The tracking server gets or creates a dataset in two steps, so candidates of one training run logging
    the same split at once can both try to create it, and one fails on the unique constraint (seen on SQLite in the
    e2e runs, whose candidates start within milliseconds of each other); the next try finds it."""
    from mlflow.exceptions import MlflowException

    for attempt in range(1, tries + 1):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            if attempt == tries or not _lost_a_create_race(exc):
                raise
            time.sleep(0.2 * attempt)


def _lost_a_create_race(exc: Exception) -> bool:
    message = str(exc)
    return "UNIQUE constraint failed: datasets" in message or (
        "duplicate key value violates unique constraint" in message and "datasets" in message
    )


_CONTEXTS = {"train": "training"}


def _dataset_input(dataset, split: str, frame: pd.DataFrame, uri: str):
    """A dataset input that points at the lakeFS object instead of carrying a profile of the data.

    `mlflow.data.from_pandas` infers its schema value by value over the whole frame (4.5 s for 140,000 rows,
    three times per candidate); the schema of a few rows and a digest of the immutable lakeFS URI say the same
    at a thousandth of the cost.
    """
    import hashlib

    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.models import infer_signature

    schema = infer_signature(frame.head(100)[dataset.columns]).inputs
    digest = hashlib.sha256(f"{uri}#{len(frame)}".encode()).hexdigest()[:16]
    return MetaDataset(LakeFSDatasetSource(uri), name=f"{dataset.name}_{split}", digest=digest, schema=schema)


# The distributions that install a boosting library, the project's first (xgboost-cpu: the CPU-only wheel).
_BOOSTING_DISTRIBUTIONS = {"lightgbm": ("lightgbm",), "xgboost": ("xgboost-cpu", "xgboost")}


def _model_requirements(pipeline) -> list[str]:
    """What loading the pipeline needs, pinned as installed. Given explicitly because MLflow's own inference
    of requirements reloads the model in a subprocess: 4 s per model, against 0.05 s."""
    library = training.boosting_library(pipeline.named_steps["model"])
    installed = [name for name in _BOOSTING_DISTRIBUTIONS.get(library, ()) if _installed(name)]
    return _requirements("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas", *installed[:1])


def _installed(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def _requirements(*names: str) -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in names]


def _effective_params(pipeline) -> dict[str, object]:
    """The estimator's own settings that matter for repeating the fit (seed, class weights)."""
    params = pipeline.named_steps["model"].get_params()
    return {f"model_{k}": params[k] for k in ("random_state", "class_weight") if k in params}


def _param_value(value: object) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def _runs_tagged(client: MlflowClient, experiment: str, tags: Mapping[str, str], status: str | None = None):
    clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    return client.search_runs([experiment], " and ".join(clauses), order_by=["attributes.start_time DESC"])


def _result_of(run, spec: training.CandidateSpec) -> CandidateResult:
    metrics = run.data.metrics
    return CandidateResult(
        spec.name,
        spec.estimator,
        run.info.run_id,
        f"models:/{run.outputs.model_outputs[0].model_id}",
        {k.removeprefix("valid_"): v for k, v in metrics.items() if k.startswith("valid_")},
        {k.removeprefix("test_"): v for k, v in metrics.items() if k.startswith("test_")},
        metrics.get("fit_seconds", 0.0),
    )
