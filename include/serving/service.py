"""The BentoML service that serves every model of the config folder, logs every prediction, and switches each
model live, without touching the others.

    bentoml serve include.serving.service:ModelService --host 127.0.0.1 --port 3000

The service is made by include/serving/app.py (`create_service`) from the settings this module reads from the
environment (include/serving/settings.py), when it is imported, i.e. in the arbiter and in every worker. A
setting that is not valid (a config folder that does not exist, a number that is not one) stops the start with
an error naming it.

Environment:

    MLOPS_CONFIG_DIR         the pipeline configs, one model per `*.yaml` (default include/config/), as Airflow
                             reads them. Each model's request schema is generated from its `dataset.features`.
                             A file that does not load (or names the model or dataset of another) is left out,
                             with the reason logged; the others are served.
    BENTOML_HOME             the BentoML model store models are loaded from (default ~/bentoml).
    MLOPS_MODEL_TAG          models to serve at start when their pointer names none, e.g. `fraud_detector:v3`
                             (several: comma-separated; each tag applies to the model it names).
    MLFLOW_TRACKING_URI      for a model with neither: `<model>:v<version>`, the version MLflow's `champion`
                             alias of the model points to.
    MLOPS_SERVING_STATE_DIR  where `models/<model>.json` (the pointer to the model a route serves) is kept; it is
                             written atomically on every switch and read first at start, so a restarted service
                             serves what it served before (default $BENTOML_HOME/serving).
    MLOPS_MODEL_STORE_URL    s3://<bucket>/<prefix>: models come from the object store, where the deploy task
                             publishes them (include/mlops/object_store.py), and the pointers live there, shared
                             by every replica; BENTOML_HOME is then a local cache. MLOPS_MODEL_STORE_ENDPOINT_URL
                             names an S3-compatible server (MinIO); credentials: boto3's chain (AWS_ACCESS_KEY_ID,
                             AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, or the pod's role).
    MLOPS_POINTER_CHECK_SECONDS  how often each worker checks each model's pointer for a switch made elsewhere
                             (default 1; with an object store each check is a HEAD request: 50 models, 4
                             replicas of 2 workers make 400 a second at 1, 80 at 5).
    MLOPS_ADMIN_TOKEN        the bearer token of the admin API; without it every admin call is refused (401).
    MLOPS_INFERENCE_LOG_URL  SQLAlchemy URL of the inference log database (SQLite locally, Postgres in compose);
                             unset, predictions are not logged. Table: include/mlops/operations_store.py.
    MLOPS_DRIFT_METRICS_SECONDS  how often the drift gauges are read from the drift history (default 30).
    MLOPS_MAX_RECORDS        most records per predict request (default 1000).
    MLOPS_SERVING_WORKERS    worker processes (default 1; each runs onnxruntime on one thread).

Endpoints, for each model <m> (the OpenAPI document, generated from the configs, is at /docs.json and browsable
at /):

    POST /models/<m>/predict   {"records": [{<feature>: value, ...}, ...]} (1 to MLOPS_MAX_RECORDS records)
                               -> 200 {"model_name", "model_version", "request_id", "role",
                                       "predictions": [{"label": 0, "probabilities": {"0": 0.98, "1": 0.02}}, ...]}
                                  (regression: [{"value": 1.23}, ...]), one per record, in order. "role" says
                                  which model answered: champion, or challenger during a canary rollout. Header
                                  X-Rollout-Key: requests with the same key get the same side of a canary.
    POST /models/<m>/predict_batched  {"records": [<one record>]} -> 200 [{"model_name", "model_version",
                               "request_id", "label", "probabilities"}] (or "value"). For clients that send one
                               record per call: BentoML's adaptive batching merges concurrent calls into one
                               onnxruntime run; a call it expects to wait over 1 s is shed with 503 (retry it).
    GET  /models/<m>/readyz    200 while <m> serves a model, 503 before.
    POST /predict, /predict_batched   the same, when the service has exactly one model.
    Refused (include/serving/request_gate.py), logged as one line, never with a traceback: 404 for a model the service
    does not have (naming the ones it has), 422 {"error": "records[3].amount: value is not a finite number",
    "problems": [...]} naming every problem by record index and field (at most 20), 400 for a body that is not
    JSON, 413 beyond the body limit, 415 for a non-JSON content type, 503 while <m> has no model loaded.
    GET  /readyz /livez /healthz   readiness (200 once any model is loaded), liveness (always 200)
    GET  /metrics          BentoML's metrics (by route, so by model), and mlops_predictions_total{model,
                           model_version, role, predicted_class} (regression: predicted_class="value"),
                           mlops_model_duration_seconds{model, model_version, role} (histogram: the model's time
                           per scoring, answered or off the request path), mlops_scoring_errors_total{model,
                           model_version, role}, mlops_rollout_comparisons_total{model, challenger_version,
                           agreement}, mlops_shadow_dropped_total{model},
                           mlops_unseen_categories_total{model, model_version, feature} (answered records whose
                           category the model's encoding does not know: it counts as one "other"),
                           mlops_inference_log_dropped_total{model}, mlops_inference_log_writer_restarts_total (the
                           inference log's writer process died and was replaced: include/serving/inference_log.py),
                           mlops_model_switches_total{model, outcome}
                           (switched, followed, not_found, rejected); from each drift monitor's last check of each
                           model version (with an inference log): mlops_drift_share, mlops_drift_live_score{metric},
                           mlops_drift_retraining_requested, mlops_drift_last_check_timestamp_seconds, all by
                           model and model_version.
    GET  /admin/models     (Authorization: Bearer $MLOPS_ADMIN_TOKEN) -> what each model serves
    GET  /admin/models/<m> -> {"model", "serving": {"tag", "model_name", "model_version", "labels" (the lineage
                           labels of the model store entry), "loaded_at"} or null}; 404 for an unknown model
    POST /admin/models/<m> {"tag": "<m>:v4"} -> {"tag", "model_version", "previous_tag"}; 401 without the token,
                           404 for a tag not in the store, 422 (naming why) for a tag of another model or a model
                           that does not load, does not fit the config, or fails on a sample record; the old model
                           keeps serving.
    POST /admin/models/<m>/rollout {"tag": "<m>:v5", "mode": "shadow" | "canary", "share": 0.1 (canary)} -> the
                           model's status with "rollout"; 409 while a rollout of <m> is on or <m> serves nothing,
                           422 for a bad mode or share, or a challenger that does not load (the champion serves on).
    DELETE /admin/models/<m>/rollout   ends it: the challenger is unloaded. Promotion is a switch to its tag.

Rollouts: a switch builds the new onnxruntime session beside the old one, checks it, writes the model's pointer
and then swaps one reference, so requests in flight finish on the old model and none fails; the other models are
not touched. The switch happens in the worker that received the call; every other worker checks the pointers'
mtimes (or ETags) every MLOPS_POINTER_CHECK_SECONDS in a background thread and switches to what they name
(include/serving/rollout.py).
"""

from __future__ import annotations

import logging
import os

from include.serving.app import create_service
from include.serving.model_server import end_with_the_arbiter
from include.serving.settings import Settings

# BentoML's worker logging leaves the root at WARNING; switches and refused requests are worth an INFO line.
logging.getLogger("include.serving").setLevel(logging.INFO)

ModelService = create_service(Settings.from_env(os.environ), on_worker_start=end_with_the_arbiter)
