"""Serving speed: in-process onnxruntime against sklearn, the BentoML service against `mlflow models serve` and a
bare FastAPI + onnxruntime server, with and without the inference log, with one model loaded and with several,
and the memory each model adds.

Side by side in one run, on the same GradientBoosting pipeline (`SERVED`: the demo config's candidate when
these figures were first measured) fitted on simulated demo data:

1. In process: sklearn `predict_proba` and onnxruntime (one thread, as the service runs it) on one row and on
   a 1,000-row batch. Targets: onnxruntime >= 10x faster on one row, >= 1x on the batch.
2. Over HTTP, one record per request at concurrency 1, 8 and 32: the BentoML service serving a config folder
   that holds only the demo config (/models/fraud_detector/predict, and the adaptive batching path
   /predict_batched), `mlflow models serve` of the sklearn model (logged to a temporary MLflow SQLite store,
   `--env-manager local`), and FastAPI + onnxruntime on uvicorn with no validation, metrics or logging (the
   floor). Targets: BentoML >= 2x mlflow serve, >= 0.7x the bare server, p99 <= 20 ms at concurrency 8.
3. The inference log's cost: BentoML with MLOPS_INFERENCE_LOG_URL set (SQLite) against unset. Target: at most
   10 % less throughput.
4. Several models on one service, at concurrency 8 and 32: a service of 3 models (the demo config and two
   copies of it under other `model.registered_name` and `dataset.name`, each its own ONNX model fitted on
   another sample) with the load on the demo model's route, and spread over the three routes at once, against
   the service of the demo model alone (log on in both). Target: >= 0.8x the 1-model service's throughput.
   The 1-model services, the 3-model service and the bare server are measured in turns, round by round.
5. Memory per model: the PSS of the service's process tree with 1, 3 and 6 models loaded, each service alone
   and warmed up on all its routes; reported as MiB per extra model (table `serving_memory`).
6. Rollouts, at concurrency 1, 8 and 32 on one service of the demo model (log on): the champion alone, beside
   a shadow challenger (the demo model fitted on another sample, which scores every request in the service's
   background thread), and with a canary answering 10 % of the requests (the champion scores those off the
   path). The rollouts are started and ended over the admin API between measurements, the three in turns
   round by round (in another order each round); /metrics says how many records the model off the path
   scored and how many it dropped. Target: shadow p99 <= 1.10x the champion alone's (table
   `serving_rollout`).

7. Hostile input (`--only-hostile` alone): the RSS of the service's process tree (arbiter and worker, sampled
   every 5 ms with psutil) while oversized bodies are refused, against its RSS at rest: a 50 MB body, 100,000
   real records (~30 MB), 100,000 empty records (400 KB: under the byte limit, over MLOPS_MAX_RECORDS) to
   /predict, /predict_batched and /models/<model>/predict, a 50 MB admin call without the token, and a valid
   1,000-record request for comparison (table `serving_hostile_input`).

Each server runs with one worker. When the machine allows it, the servers are pinned to one core and the load
generator (aiohttp, in this process) to another, and the generator's own CPU use is reported: a figure is
only the server's if the generator had CPU to spare.

    .venv/bin/python -m benchmarks.serving [--rows N] [--seconds S] [--rounds R] [--rollout-rounds R]
                                           [--only-rollouts] [--only-hostile]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.report import median_seconds, publish
from benchmarks.training_overhead import demo_splits

# The pipeline served: the demo's gradient boosting candidate (its first grid point) before the demo moved to
# LightGBM, kept so that a new run compares with docs/benchmarks.md's figures.
SERVED = ("gradient_boosting", "GradientBoosting", {"n_estimators": 150, "max_depth": 3, "learning_rate": 0.05})
CONCURRENCY = (1, 8, 32)
COLUMNS = (
    "benchmark",
    "server",
    "concurrency",
    "req/s",
    "p50 (ms)",
    "p99 (ms)",
    "vs reference",
    "client CPU (%)",
    "errors",
)
DISTINCT_BODIES = 1000
ADMIN_TOKEN = "benchmark"
# Several models on one service: how many for the throughput figures, at which concurrencies, and how many
# services of 1, 3, ... models the memory figures are taken of.
SEVERAL = 3
MULTI_CONCURRENCY = (8, 32)
MEMORY_COUNTS = (1, 3, 6)
WARM_UP_SECONDS = 3.0
SINGLE_OFF = "BentoML 1 model (log off)"
SINGLE_ON = "BentoML 1 model (log on)"
SEVERAL_DEMO = f"BentoML {SEVERAL} models (log on), load on the demo route"
SEVERAL_SPREAD = f"BentoML {SEVERAL} models (log on), load spread over the {SEVERAL} routes"
BARE = "FastAPI + onnxruntime"
MLFLOW = "mlflow models serve"
# Rollouts (6.): each configuration and the rollout it runs beside the champion (none: the champion alone).
CANARY_SHARE = 0.1
ALONE = "champion alone"
SHADOW = "shadow challenger"
CANARY = f"canary, share {CANARY_SHARE:g}"
ROLLOUTS: dict[str, dict[str, Any] | None] = {
    ALONE: None,
    SHADOW: {"mode": "shadow"},
    CANARY: {"mode": "canary", "share": CANARY_SHARE},
}
SHADOW_P99_TARGET = 1.10
ROLLOUT_COLUMNS = (
    "configuration",
    "concurrency",
    "req/s",
    "p50 (ms)",
    "p95 (ms)",
    "p99 (ms)",
    "p99 vs alone",
    "p99 vs alone, by round",
    "client CPU (%)",
    "errors",
    "records answered",
    "answered by the challenger",
    "scored off the path",
    "dropped off the path",
    "failed off the path",
    "model time (us), champion / challenger",
)
# How long the model off the path may take to catch up after a measurement before its figures are read.
SETTLE_SECONDS = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="simulated rows to fit on")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per server and concurrency")
    parser.add_argument(
        "--rollout-rounds", type=int, default=4, help="rounds of the rollout figures (each: the 3 configurations)"
    )
    parser.add_argument("--only-rollouts", action="store_true", help="measure the rollout figures (6.) only")
    parser.add_argument("--only-hostile", action="store_true", help="measure the hostile input figures (7.) only")
    args = parser.parse_args()
    if args.only_hostile:
        hostile_main()
        return
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    load_before = _uptime()

    from include.mlops import packaging, training
    from include.mlops.config import load_config

    config = load_config("fraud_demo.yaml")
    print(f"simulating {args.rows:,} rows and fitting the gradient boosting pipeline ...", flush=True)
    splits = demo_splits(config, args.rows)
    spec = training.CandidateSpec(*SERVED)
    pipeline = training.fit(training.build_pipeline(config, spec), config, splits["train"])
    onnx_bytes = packaging.to_onnx(pipeline, config)
    # The rollouts' challenger: the demo model fitted on another sample of the training rows (the copies below
    # take the random states 1, 2, ...).
    challenger_sample = splits["train"].sample(frac=0.8, random_state=0)
    challenger_pipeline = training.fit(training.build_pipeline(config, spec), config, challenger_sample)
    challenger_onnx = packaging.to_onnx(challenger_pipeline, config)
    test = splits["test"]

    server_core, client_core = _cores()
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})

    rows = [] if args.only_rollouts else in_process_rows(pipeline, onnx_bytes, config, test)
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        copies = model_copies(folder, config, 1 if args.only_rollouts else max(MEMORY_COUNTS))
        print(f"fitting {len(copies) - 1} more models (copies of the demo under other names) ...", flush=True)
        onnx_models = [(copies[0][0], copies[0][1], onnx_bytes)]
        for index, (path, copy) in enumerate(copies[1:], start=1):
            # Each its own model: fitted on another sample of the training rows.
            sample = splits["train"].sample(frac=0.8, random_state=index)
            fitted = training.fit(training.build_pipeline(copy, spec), copy, sample)
            onnx_models.append((path, copy, packaging.to_onnx(fitted, copy)))
        counts = (1,) if args.only_rollouts else tuple(sorted({1, SEVERAL, *MEMORY_COUNTS}))
        models = _bentoml_store(folder, onnx_models, counts)
        challenger = _store_challenger(config, challenger_onnx)
        if not args.only_rollouts:
            request_cpu, writer_cpu = inference_log_cpu_per_row(folder, config, test)
            rows += http_rows(
                folder, models, pipeline, onnx_bytes, config, test, args.seconds, args.rounds, server_core
            )
            load_http = _uptime()
        rollouts = rollout_rows(
            folder, models, challenger, config, test, args.seconds, args.rollout_rounds, server_core
        )
        load_rollouts = _uptime()
        if not args.only_rollouts:
            memory = memory_rows(folder, models, config, test, server_core)
            hostile = hostile_rows(folder, models, config, test, server_core)
    load_after = _uptime()
    cores = (
        f"servers on core {server_core}, load generator on core {client_core}"
        if client_core is not None
        else "not pinned (fewer than 2 cores allowed)"
    )
    if not args.only_rollouts:
        publish(
            "serving",
            rows,
            {
                "model": f"{spec.name} on {len(splits['train']):,} rows, {len(config.dataset.features)} features",
                "cores": cores,
                "load generator": "aiohttp, one record per request, distinct records, keep-alive connections",
                "BentoML route": f"/models/{config.name}/predict; the 1-model services serve a config folder holding "
                f"only the demo config, the {SEVERAL}-model one the demo config and {SEVERAL - 1} copies (other "
                "model.registered_name and dataset.name, each its own ONNX model); all are measured in turns "
                "with the bare server, round by round",
                "inference log CPU per row, on the request path (handing it to the writer process)": (
                    f"{request_cpu * 1e6:.1f} us"
                ),
                "inference log CPU per row, in the writer process (SQLite, serialise and insert)": (
                    f"{writer_cpu * 1e6:.1f} us"
                ),
                "targets": "onnxruntime >= 10x sklearn on one row, >= 1x on 1,000 rows; BentoML >= 2x mlflow serve, "
                f">= 0.7x the bare server, p99 <= 20 ms at concurrency 8; inference log costs <= 10 % throughput; "
                f"with {SEVERAL} models loaded, a model's throughput >= 0.8x that of a service of it alone",
                **verdicts(rows),
                "load average": f"before: {load_before}; after the HTTP figures: {load_http}",
            },
        )
    publish(
        "serving_rollout",
        rollouts,
        {
            "model": f"champion {config.name}:v1, {spec.name} on {len(splits['train']):,} rows; challenger "
            f"{challenger}, the same on another sample of 80 % of them",
            "cores": cores + "; the service's shadow thread runs on the server's core",
            "load generator": "aiohttp, one record per request, distinct records, keep-alive connections, "
            f"{args.seconds:g} s measured after 1 s of warm-up, {args.rollout_rounds} rounds",
            "service": f"1 worker, /models/{config.name}/predict, inference log on (SQLite): the model off the "
            "path logs its predictions too; no rollout key (the canary's requests are drawn at random)",
            "how": "one service process; a rollout is started (POST /admin/models/<model>/rollout) before and "
            "ended (DELETE) after each of its measurements, and /metrics read before and after, once the model "
            "off the path has caught up; the three configurations in turns round by round, in another order each "
            "round. `records answered` counts the warm-up's too (mlops_predictions_total); `scored off the path` "
            "is mlops_rollout_comparisons_total, `dropped off the path` mlops_shadow_dropped_total, `failed off "
            "the path` mlops_scoring_errors_total; `model time` is the mean of mlops_model_duration_seconds by "
            "role, on the path and off it (the shadow's challenger and the canary's champion score off it)",
            "target": f"shadow p99 <= {SHADOW_P99_TARGET:.2f}x the champion alone's, at each concurrency",
            **rollout_verdicts(rollouts),
            "load average": f"before the rollout figures: {load_http if not args.only_rollouts else load_before}; "
            f"after: {load_rollouts}",
        },
    )
    if not args.only_rollouts:
        publish(
            "serving_memory",
            memory,
            {
                "what": "PSS of the service's process tree (devstack/processes.py tree_pss_bytes: the "
                "`bentoml serve` arbiter and its worker), median of 5 samples, each service alone on the machine's "
                f"core {server_core}, after {WARM_UP_SECONDS:.0f} s of load spread over all its routes, inference log "
                "on; USS (pages of the tree alone) beside it: PSS moves with other processes sharing the libraries",
                "models": "the demo model and copies of it (other model and dataset names, each its own ONNX model of "
                "the same size)",
                **memory_verdicts(memory),
                "load average": f"after: {load_after}",
            },
        )

    if not args.only_rollouts:
        publish("serving_hostile_input", hostile, HOSTILE_NOTES)


HOSTILE_NOTES = {
    "what": "RSS of the service's process tree (the `bentoml serve` arbiter and its one worker), sampled every 5 ms "
    "with psutil while each body is sent 3 times, against the tree's RSS at rest (after 200 valid requests); "
    "the demo model alone, so /predict and /predict_batched exist",
    "limits": "body: 64 KiB + 4 KiB x MLOPS_MAX_RECORDS (4,161,536 bytes at the default 1,000), read no further; "
    "records: MLOPS_MAX_RECORDS per /predict request, 1 per /predict_batched call",
}


def hostile_main() -> None:
    from include.mlops import packaging, training
    from include.mlops.config import load_config

    config = load_config("fraud_demo.yaml")
    splits = demo_splits(config, 5_000)
    spec = training.CandidateSpec(*SERVED)
    onnx_bytes = packaging.to_onnx(training.fit(training.build_pipeline(config, spec), config, splits["train"]), config)
    server_core, client_core = _cores()
    if client_core is not None:
        os.sched_setaffinity(0, {client_core})
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        folder = Path(tmp)
        copies = model_copies(folder, config, 1)
        models = _bentoml_store(folder, [(copies[0][0], copies[0][1], onnx_bytes)], (1,))
        rows = hostile_rows(folder, models, config, splits["test"], server_core)
    publish("serving_hostile_input", rows, HOSTILE_NOTES)


def hostile_rows(tmp: Path, models: Models, config, frame, core: int | None) -> list[dict[str, Any]]:
    """Peak RSS of the service's tree while oversized bodies are refused, against its RSS at rest."""
    import httpx

    from devstack.memory import TreeMemory

    record = _records(frame.iloc[:1], config.dataset)[0]
    bodies = {
        "50 MB (one 50 MB category)": json.dumps({"records": [{**record, "channel": "x" * 50_000_000}]}).encode(),
        "100,000 records": json.dumps({"records": [record] * 100_000}).encode(),
        "100,000 empty records": json.dumps({"records": [{}] * 100_000}).encode(),
        "1,000 records (valid)": json.dumps({"records": _records(frame.iloc[:1000], config.dataset)}).encode(),
    }
    with _started_on(core):
        service = _start_bentoml(tmp / "bento-hostile", models.settings, models.folders[1])
    rows = []
    try:
        tree = TreeMemory(service.pid)
        with httpx.Client(base_url=service.url, timeout=60) as client:
            for _ in range(200):
                assert client.post("/predict", json={"records": [record]}).status_code == 200
            time.sleep(1.0)
            rest = statistics.median(tree.rss() for _ in range(5))
            cases = [
                (route, what, body)
                for route in ("/predict", "/predict_batched", f"/models/{config.name}/predict")
                for what, body in bodies.items()
                if not (route == "/predict_batched" and what.endswith("(valid)"))
            ]
            cases.append((f"/admin/models/{config.name} (no token)", "50 MB", b'{"tag": "' + b"x" * 50_000_000 + b'"}'))
            for route, what, body in cases:
                path = route.split(" ")[0]
                statuses, seconds = collections.Counter(), []
                with TreeMemory(service.pid) as memory:
                    for _ in range(3):
                        started = time.perf_counter()
                        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
                        seconds.append(time.perf_counter() - started)
                        statuses[response.status_code] += 1
                    time.sleep(0.05)
                answer = response.json()
                problem = answer.get("problems", [answer.get("detail")])[0] if response.status_code >= 400 else ""
                rows.append(
                    {
                        "route": route,
                        "body": f"{what}, {len(body) / 2**20:,.1f} MiB",
                        "answer": f"{_by_status(list(statuses.elements()))} {str(problem)[:70]}".strip(),
                        "median answer (ms)": statistics.median(seconds) * 1000,
                        "RSS at rest (MiB)": rest / 2**20,
                        "peak RSS (MiB)": memory.peak / 2**20,
                        "peak - rest (MiB)": (memory.peak - rest) / 2**20,
                    }
                )
            after = tree.rss()
            rows.append(
                {
                    "route": "(after all of the above)",
                    "body": "",
                    "answer": "",
                    "median answer (ms)": "",
                    "RSS at rest (MiB)": rest / 2**20,
                    "peak RSS (MiB)": after / 2**20,
                    "peak - rest (MiB)": (after - rest) / 2**20,
                }
            )
    finally:
        service.stop()
    return rows


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# --- 1. in process ---------------------------------------------------------------------------------------------


def in_process_rows(pipeline, onnx_bytes: bytes, config, frame) -> list[dict[str, Any]]:
    from include.mlops import packaging, training
    from include.serving import schema
    from include.serving.models import new_session

    dataset = config.dataset
    features = training.features_of(frame, dataset)
    session = new_session(onnx_bytes)
    record_model = schema.record_model(dataset)
    records = [record_model.model_validate(r) for r in _records(frame, dataset)]
    batch = features.iloc[:1000]
    batch_feeds = packaging.onnx_feeds(batch, dataset)
    one_row = [features.iloc[[i]] for i in range(300)]
    one_feeds = [packaging.onnx_feeds(row, dataset) for row in one_row]

    def single(run: Callable[[int], Any]) -> float:
        return median_seconds(lambda i: run(i % 300), 300)

    timings = {
        ("1 row", "sklearn predict_proba"): single(lambda i: pipeline.predict_proba(one_row[i])),
        ("1 row", "onnxruntime"): single(lambda i: session.run(None, one_feeds[i])),
        ("1 row", "onnxruntime + records to inputs"): single(
            lambda i: session.run(None, schema.feeds(records[i : i + 1], dataset))
        ),
        ("1,000 rows", "sklearn predict_proba"): median_seconds(lambda _: pipeline.predict_proba(batch), 15),
        ("1,000 rows", "onnxruntime"): median_seconds(lambda _: session.run(None, batch_feeds), 15),
        ("1,000 rows", "onnxruntime + records to inputs"): median_seconds(
            lambda _: session.run(None, schema.feeds(records[:1000], dataset)), 15
        ),
    }
    rows = []
    for (size, how), seconds in timings.items():
        baseline = timings[(size, "sklearn predict_proba")]
        rows.append(
            {
                "benchmark": f"in process, {size}",
                "server": how,
                "concurrency": "",
                "req/s": "",
                "p50 (ms)": seconds * 1000,
                "p99 (ms)": "",
                "vs reference": f"{baseline / seconds:.1f}x sklearn",
                "client CPU (%)": "",
                "errors": "",
            }
        )
    return rows


def inference_log_cpu_per_row(tmp: Path, config, frame, requests: int = 10_000) -> tuple[float, float]:
    """CPU seconds the inference log spends per one-record request: the request's share (handing the row over, in
    the worker) and the writer process's (serialising and inserting it; its start-up, measured on a log that
    writes nothing, left out)."""
    import datetime as dt
    import resource

    from include.serving import schema
    from include.serving.inference_log import InferenceLog, LoggedRequest

    record_model = schema.record_model(config.dataset)
    records = [record_model.model_validate(r) for r in _records(frame.iloc[:100], config.dataset)]
    prediction = {"label": 0, "probabilities": {"0": 0.98, "1": 0.02}}

    def writer_cpu(rows: int) -> tuple[float, float]:
        """(this process's CPU to hand `rows` over, the writer's CPU from its start to its end)"""
        log = InferenceLog(f"sqlite:///{tmp / f'writer-{rows}.db'}", {config.name: config.dataset.id_column}, _no_drops)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        log.start()
        began = time.process_time()
        for i in range(rows):
            now = dt.datetime.now(dt.UTC)
            log.submit(LoggedRequest(f"{i:032x}", config.name, "1", now, [records[i % 100]], [prediction]))
        handing_over = time.process_time() - began
        log.stop(timeout=60)
        # The writer's CPU, once it has ended and been waited for.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
        return handing_over, used

    _, start_up = writer_cpu(0)
    request_share, writer = writer_cpu(requests)
    return request_share / requests, (writer - start_up) / requests


def _no_drops(model: str, rows: int) -> None:
    raise AssertionError(f"the inference log dropped {rows} rows of {model}")


# --- 2. and 3. over HTTP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    urls: list[str]  # several: each client's requests go round them
    bodies: list[bytes]
    concurrencies: tuple[int, ...] = CONCURRENCY


@dataclass(frozen=True)
class Run:
    latencies: list[float]
    errors: list[int]  # the HTTP status of each failed request
    client_cpu_seconds: float
    seconds: float


@dataclass(frozen=True)
class Models:
    """The demo model and its copies (other model and dataset names, each an ONNX model of its own) in one model
    store, and config folders holding the first 1, 3, ... of them."""

    settings: dict[str, str]  # the service's settings, for every model in the store
    folders: dict[int, Path]  # models served -> a config folder of that many

    def names(self, count: int) -> list[str]:
        from include.mlops.config import load_folder

        return [c.name for c in load_folder(self.folders[count]).configs]


def http_rows(
    tmp: Path, models: Models, pipeline, onnx_bytes: bytes, config, frame, seconds: float, rounds: int, core
) -> list[dict]:
    records = _records(frame.iloc[:DISTINCT_BODIES], config.dataset)
    ours = [json.dumps({"records": [r]}).encode() for r in records]
    model_path = tmp / "model.onnx"
    model_path.write_bytes(onnx_bytes)
    runs: dict[tuple[str, int], list[Run]] = {}

    def measure(targets: list[Target]) -> None:
        # Rounds alternate between the targets, so that a slow moment of the machine does not fall on one only.
        for concurrency in CONCURRENCY:
            for _ in range(rounds):
                for target in targets:
                    if concurrency not in target.concurrencies:
                        continue
                    print(f"  {target.name}, concurrency {concurrency} ...", flush=True)
                    run = asyncio.run(_load(target.urls, target.bodies, concurrency, seconds))
                    runs.setdefault((target.name, concurrency), []).append(run)

    one, several = models.folders[1], models.folders[SEVERAL]
    demo = config.name
    log_on = {"MLOPS_INFERENCE_LOG_URL": f"sqlite:///{tmp / 'inference_log.db'}"}
    log_several = {"MLOPS_INFERENCE_LOG_URL": f"sqlite:///{tmp / 'inference_log_several.db'}"}
    started = []
    try:
        with _started_on(core):
            started.append(without_log := _start_bentoml(tmp / "bento-log-off", models.settings, one))
            started.append(with_log := _start_bentoml(tmp / "bento-log-on", {**models.settings, **log_on}, one))
            started.append(multi := _start_bentoml(tmp / "bento-several", {**models.settings, **log_several}, several))
            started.append(bare := _start_baseline(tmp, model_path))
        route = f"/models/{demo}/predict"
        measure(
            [
                Target(SINGLE_OFF, [without_log.url + route], ours),
                Target(SINGLE_ON, [with_log.url + route], ours),
                Target(BARE, [f"{bare.url}/predict"], ours),
                Target(SEVERAL_DEMO, [multi.url + route], ours, MULTI_CONCURRENCY),
                Target(
                    SEVERAL_SPREAD,
                    [f"{multi.url}/models/{m}/predict" for m in models.names(SEVERAL)],
                    ours,
                    MULTI_CONCURRENCY,
                ),
            ]
        )
        measure([Target("BentoML /predict_batched (log off)", [f"{without_log.url}/predict_batched"], ours)])
    finally:
        for process in started:
            process.stop()
    with _started_on(core):
        server = _start_mlflow_serve(tmp, pipeline, config, frame)
    try:
        mlflow_bodies = [json.dumps({"dataframe_records": [r]}).encode() for r in _feature_records(frame, config)]
        measure([Target(MLFLOW, [f"{server.url}/invocations"], mlflow_bodies)])
    finally:
        server.stop()

    figures = {key: _summary(measured) for key, measured in runs.items()}
    rows = []
    for (name, concurrency), summary in figures.items():
        if name in (SEVERAL_DEMO, SEVERAL_SPREAD):
            reference = figures[(SINGLE_ON, concurrency)]["req/s"]
            versus = f"{summary['req/s'] / reference:.2f}x 1 model"
        else:
            reference = figures[(MLFLOW, concurrency)]["req/s"]
            versus = f"{summary['req/s'] / reference:.1f}x mlflow serve"
        rows.append(
            {
                "benchmark": "HTTP, 1 record per request",
                "server": name,
                "concurrency": concurrency,
                **summary,
                "vs reference": versus,
            }
        )
    return [{column: row[column] for column in COLUMNS} for row in rows]


def memory_rows(tmp: Path, models: Models, config, frame, core: int | None) -> list[dict[str, Any]]:
    """PSS (and USS) of the service's process tree with 1, 3, ... models loaded, each service alone and warmed up:
    every route answered WARM_UP_SECONDS of load first, the inference log on."""
    from devstack.processes import tree_pss_bytes

    records = _records(frame.iloc[:DISTINCT_BODIES], config.dataset)
    bodies = [json.dumps({"records": [r]}).encode() for r in records]
    rows = []
    for count, folder in sorted(models.folders.items()):
        log = {"MLOPS_INFERENCE_LOG_URL": f"sqlite:///{tmp / f'inference_log_memory_{count}.db'}"}
        with _started_on(core):
            service = _start_bentoml(tmp / f"bento-memory-{count}", {**models.settings, **log}, folder)
        try:
            urls = [f"{service.url}/models/{m}/predict" for m in models.names(count)]
            warm = asyncio.run(_load(urls, bodies, 8, WARM_UP_SECONDS))
            assert not warm.errors, _by_status(warm.errors)
            time.sleep(2.0)  # the inference log's writer has flushed
            pss, uss = [], []
            for _ in range(5):
                pss.append(tree_pss_bytes(service.pid))
                uss.append(_tree_uss_bytes(service.pid))
                time.sleep(0.5)
            processes = 1 + len(psutil_children(service.pid))
        finally:
            service.stop()
        rows.append(
            {
                "models loaded": count,
                "processes": processes,
                "PSS (MiB)": statistics.median(pss) / 2**20,
                "USS (MiB)": statistics.median(uss) / 2**20,
            }
        )
    first = rows[0]
    for row in rows:
        extra = row["models loaded"] - first["models loaded"]
        for kind in ("PSS", "USS"):
            added = row[f"{kind} (MiB)"] - first[f"{kind} (MiB)"]
            row[f"{kind} per extra model (MiB)"] = added / extra if extra else ""
    return rows


def psutil_children(pid: int) -> list:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _tree_uss_bytes(pid: int) -> int:
    """Pages of the tree's processes alone (not shared with any other process): a bound below PSS that other
    processes on the machine sharing the libraries do not move."""
    import psutil

    total = 0
    for process in [psutil.Process(pid), *psutil_children(pid)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_full_info().uss
    return total


def _summary(runs: list[Run]) -> dict[str, float]:
    latencies = [latency for run in runs for latency in run.latencies]
    seconds = sum(run.seconds for run in runs)
    return {
        "req/s": len(latencies) / seconds,
        "p50 (ms)": float(np.percentile(latencies, 50) * 1000),
        "p95 (ms)": float(np.percentile(latencies, 95) * 1000),
        "p99 (ms)": float(np.percentile(latencies, 99) * 1000),
        "client CPU (%)": 100 * sum(run.client_cpu_seconds for run in runs) / seconds,
        "errors": _by_status([status for run in runs for status in run.errors]),
    }


def _by_status(statuses: list[int]) -> str | int:
    """0, or how many requests failed with each status (e.g. "503: 10")."""
    if not statuses:
        return 0
    return ", ".join(f"{status}: {count}" for status, count in sorted(collections.Counter(statuses).items()))


async def _load(urls: list[str], bodies: list[bytes], concurrency: int, seconds: float) -> Run:
    """Requests back to back from `concurrency` clients, each going round `urls`: one second of warm-up, then
    `seconds` measured."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client(index: int, until: float, latencies: list[float], errors: list[int]) -> None:
            sent = index
            while time.perf_counter() < until:
                body = bodies[sent % len(bodies)]
                url = urls[sent % len(urls)]
                sent += concurrency
                began = time.perf_counter()
                async with session.post(url, data=body) as response:
                    await response.read()
                    if response.status != 200:
                        errors.append(response.status)
                latencies.append(time.perf_counter() - began)

        async def run(duration: float) -> Run:
            latencies: list[float] = []
            errors: list[int] = []
            until = time.perf_counter() + duration
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(client(i, until, latencies, errors) for i in range(concurrency)))
            return Run(latencies, errors, time.process_time() - cpu, time.perf_counter() - wall)

        await run(1.0)
        return await run(seconds)


# --- 6. rollouts -----------------------------------------------------------------------------------------------


def rollout_rows(
    tmp: Path, models: Models, challenger: str, config, frame, seconds: float, rounds: int, core: int | None
) -> list[dict[str, Any]]:
    """The champion's latency alone, beside a shadow challenger and with a canary, on one service process (log
    on): each rollout started over the admin API before its measurement and ended after it, the configurations
    in turns round by round, each round in another order, so that a slow moment of the machine does not fall
    on one only."""
    import httpx

    records = _records(frame.iloc[:DISTINCT_BODIES], config.dataset)
    bodies = [json.dumps({"records": [r]}).encode() for r in records]
    log = {"MLOPS_INFERENCE_LOG_URL": f"sqlite:///{tmp / 'inference_log_rollout.db'}"}
    with _started_on(core):
        service = _start_bentoml(tmp / "bento-rollout", {**models.settings, **log}, models.folders[1])
    url = f"{service.url}/models/{config.name}/predict"
    runs: dict[tuple[str, int], list[Run]] = {}
    counts: dict[tuple[str, int], collections.Counter] = collections.defaultdict(collections.Counter)
    rollout = f"{service.url}/admin/models/{config.name}/rollout"
    admin = httpx.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    try:
        for concurrency in CONCURRENCY:
            for index in range(rounds):
                names = list(ROLLOUTS)
                turn = index % len(names)
                for name in names[turn:] + names[:turn]:
                    plan = ROLLOUTS[name]
                    print(f"  {name}, concurrency {concurrency} ...", flush=True)
                    if plan is not None:
                        started = admin.post(rollout, json={"tag": challenger, **plan})
                        assert started.status_code == 200, started.text
                        assert started.json()["rollout"]["loaded"], started.text
                    before = _rollout_counts(service.url, config.name)
                    runs.setdefault((name, concurrency), []).append(
                        asyncio.run(_load([url], bodies, concurrency, seconds))
                    )
                    after = _settled_counts(service.url, config.name, before, plan)
                    if plan is not None:
                        ended = admin.delete(rollout)
                        assert ended.status_code == 200 and ended.json()["rollout"] is None, ended.text
                    counts[(name, concurrency)].update(after - before)
    finally:
        admin.close()
        service.stop()

    figures = {key: _summary(measured) for key, measured in runs.items()}
    rows = []
    for concurrency in CONCURRENCY:
        alone = figures[(ALONE, concurrency)]
        for name, plan in ROLLOUTS.items():
            summary, delta = figures[(name, concurrency)], counts[(name, concurrency)]
            by_round = [
                _p99(run) / _p99(reference)
                for run, reference in zip(runs[(name, concurrency)], runs[(ALONE, concurrency)], strict=True)
            ]
            # The model that scores off the path: the challenger beside a shadow, the champion beside a canary.
            off_path = None if plan is None else ("challenger" if plan["mode"] == "shadow" else "champion")
            rows.append(
                {
                    "configuration": name,
                    "concurrency": concurrency,
                    **summary,
                    "p99 vs alone": f"{summary['p99 (ms)'] / alone['p99 (ms)']:.2f}x",
                    "p99 vs alone, by round": "" if plan is None else ", ".join(f"{r:.2f}" for r in by_round),
                    "records answered": int(delta["answered, champion"] + delta["answered, challenger"]),
                    "answered by the challenger": int(delta["answered, challenger"]),
                    "scored off the path": int(delta["compared"]),
                    "dropped off the path": int(delta["dropped"]),
                    "failed off the path": int(delta[f"failed, {off_path}"]) if off_path else 0,
                    "model time (us), champion / challenger": " / ".join(
                        f"{1e6 * delta[f'model seconds, {role}'] / delta[f'scorings, {role}']:.0f}"
                        if delta[f"scorings, {role}"]
                        else "-"
                        for role in ("champion", "challenger")
                    ),
                }
            )
    return [{column: row[column] for column in ROLLOUT_COLUMNS} for row in rows]


def _p99(run: Run) -> float:
    return float(np.percentile(run.latencies, 99))


def _rollout_counts(url: str, model: str) -> collections.Counter:
    """The service's rollout counters of `model` from /metrics: records answered by each role, records both
    models scored (`compared`), records dropped off the path, scorings that failed, and model time and scorings
    (on the path or off it) by role."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "mlops_predictions_total": "answered",
        "mlops_rollout_comparisons_total": "compared",
        "mlops_shadow_dropped_total": "dropped",
        "mlops_scoring_errors_total": "failed",
        "mlops_model_duration_seconds_sum": "model seconds",
        "mlops_model_duration_seconds_count": "scorings",
    }
    counts: collections.Counter = collections.Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name not in names or sample.labels.get("model") != model:
                continue
            what = names[sample.name]
            counts[f"{what}, {sample.labels['role']}" if "role" in sample.labels else what] += sample.value
    return counts


def _settled_counts(
    url: str, model: str, before: collections.Counter, plan: dict[str, Any] | None
) -> collections.Counter:
    """The counters once the model off the path has scored, dropped or failed every record it was handed since
    `before` (at most SETTLE_SECONDS later): its queue is worked off after the load stops."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        counts = _rollout_counts(url, model)
        if plan is None:
            return counts
        delta = counts - before
        shadow = plan["mode"] == "shadow"
        handed = delta["answered, champion" if shadow else "answered, challenger"]
        done = delta["compared"] + delta["dropped"] + delta["failed, challenger" if shadow else "failed, champion"]
        if done >= handed or time.monotonic() > deadline:
            return counts
        time.sleep(0.2)


def _store_challenger(config, onnx_bytes: bytes) -> str:
    """The rollouts' challenger in the model store, beside the demo model's v1, as `<name>:v2`."""
    from include.mlops import deployment

    return deployment.save_to_model_store(onnx_bytes, config, "2", {"source": "benchmark"})


def model_copies(tmp: Path, config, count: int) -> list[tuple[Path, Any]]:
    """The demo config and `count - 1` copies of it under other model and dataset names, as files and configs."""
    import yaml

    from include.mlops.config import load_config

    original = yaml.safe_load(Path(config.path).read_text())
    files = []
    folder = tmp / "configs"
    folder.mkdir(exist_ok=True)
    for index in range(count):
        copy = json.loads(json.dumps(original))
        if index:
            copy["model"]["registered_name"] = f"{config.name}_copy{index}"
            copy["dataset"]["name"] = f"{config.dataset.name}_copy{index}"
        path = folder / f"{index:02d}_{copy['model']['registered_name']}.yaml"
        path.write_text(yaml.safe_dump(copy, sort_keys=False))
        files.append((path, load_config(path)))
    return files


def _bentoml_store(tmp: Path, onnx_models: list[tuple[Path, Any, bytes]], counts: tuple[int, ...]) -> Models:
    """A model store holding each model as <name>:v1, and a config folder per count of models served."""
    from include.mlops import deployment

    # BentoML fixes its model store (BENTOML_HOME) when first imported in a process.
    assert "bentoml" not in sys.modules, "bentoml was imported before the benchmark chose its BENTOML_HOME"
    home = tmp / "bentoml"
    os.environ["BENTOML_HOME"] = str(home)
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    lineage = {"source": "benchmark"}
    tags = [deployment.save_to_model_store(onnx, config, "1", lineage) for _, config, onnx in onnx_models]
    folders = {}
    for count in counts:
        folder = tmp / f"configs-{count}"
        folder.mkdir()
        for path, _, _ in onnx_models[:count]:
            (folder / path.name).symlink_to(path)
        folders[count] = folder
    settings = {"MLOPS_MODEL_TAG": ",".join(tags), "MLOPS_ADMIN_TOKEN": ADMIN_TOKEN, "_MODELS": str(home / "models")}
    return Models(settings, folders)


def _start_bentoml(home: Path, settings: dict[str, str], config_dir: Path):
    from devstack import services
    from devstack.processes import free_port

    # A home per server (its Prometheus folder is emptied at start) around the one model store.
    home.mkdir()
    (home / "models").symlink_to(settings["_MODELS"])
    env = {k: v for k, v in settings.items() if not k.startswith("_")}
    env.update(
        {"BENTOML_HOME": str(home), "MLOPS_SERVING_STATE_DIR": str(home / "state"), "MLOPS_CONFIG_DIR": str(config_dir)}
    )
    return services.start_serving(free_port(), home / "logs", env)


def _start_baseline(tmp: Path, model_path: Path):
    from devstack.processes import free_port, start_process, wait_until_healthy
    from devstack.services import REPO_ROOT

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.serving:baseline_app", "--factory", "--workers", "1"]
    process = start_process(
        "baseline",
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        tmp / "logs" / "baseline.log",
        env={**os.environ, "BENCH_MODEL": str(model_path)},
        cwd=REPO_ROOT,
        url=f"http://127.0.0.1:{port}",
    )
    wait_until_healthy(process, f"{process.url}/livez", timeout=60)
    return process


def baseline_app():
    """FastAPI + onnxruntime and nothing else (no validation, metrics or log): the floor for this model."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, PlainTextResponse

    from include.mlops.config import load_config
    from include.mlops.training import MISSING_CATEGORY
    from include.serving.models import new_session

    dataset = load_config("fraud_demo.yaml").dataset
    session = new_session(Path(os.environ["BENCH_MODEL"]).read_bytes())
    app = FastAPI()

    @app.get("/livez")
    async def livez() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.post("/predict")
    async def predict(body: dict) -> JSONResponse:
        records = body["records"]
        feeds = {}
        for feature in dataset.features:
            values = [r.get(feature.name) for r in records]
            if feature.type == "categorical":
                column = np.array([MISSING_CATEGORY if v is None else v for v in values], dtype=object)
            else:
                column = np.array([np.nan if v is None else v for v in values], dtype=np.float64).astype(np.float32)
            feeds[feature.name] = column.reshape(-1, 1)
        labels, probabilities = session.run(None, feeds)
        return JSONResponse(
            {
                "predictions": [
                    {"label": label, "probabilities": {"0": row[0], "1": row[1]}}
                    for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True)
                ]
            }
        )

    return app


def _start_mlflow_serve(tmp: Path, pipeline, config, frame):
    """The same sklearn pipeline logged to a temporary MLflow store and served by `mlflow models serve`."""
    import mlflow
    import skops.io
    from mlflow.models import infer_signature

    from devstack.processes import free_port, start_process, wait_until_healthy
    from devstack.services import venv_bin
    from include.mlops import training

    # MLflow 3 refuses its file store (maintenance mode); SQLite is the local store it supports.
    tracking_uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(tracking_uri)
    experiment = mlflow.create_experiment("serving-benchmark", artifact_location=(tmp / "artifacts").as_uri())
    example = training.features_of(frame.head(5), config.dataset)
    with mlflow.start_run(experiment_id=experiment):
        logged = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(example, pipeline.predict_proba(example)),
            serialization_format="skops",
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)),
            pip_requirements=["scikit-learn", "skops", "pandas"],
        )
    port = free_port()
    # It starts `uvicorn` from PATH.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "PATH": path}
    process = start_process(
        "mlflow-serve",
        [venv_bin("mlflow"), "models", "serve", "-m", logged.model_uri, "--env-manager", "local"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        tmp / "logs" / "mlflow-serve.log",
        env=env,
        url=f"http://127.0.0.1:{port}",
    )
    try:
        wait_until_healthy(process, f"{process.url}/ping", timeout=180)
    except BaseException:
        process.stop()
        raise
    return process


def _records(frame, dataset) -> list[dict[str, Any]]:
    """Rows as a client of the service sends them (features only, null where missing)."""
    from include.mlops import deployment

    return deployment.records_of(frame, dataset)


def _feature_records(frame, config) -> list[dict[str, Any]]:
    """Rows as the sklearn pipeline's MLflow signature takes them (training.features_of: numbers as floats)."""
    from include.mlops import training

    features = training.features_of(frame.iloc[:DISTINCT_BODIES], config.dataset)
    return json.loads(features.to_json(orient="records"))


def _cores() -> tuple[int | None, int | None]:
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else (None, None)


@contextmanager
def _started_on(core: int | None) -> Generator[None]:
    """Processes started inside run on `core`: a child inherits its parent's CPU affinity, threads included."""
    if core is None:
        yield
        return
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Each target, met or not, with the figures it was decided on."""

    def http(server: str, concurrency: int) -> dict[str, Any]:
        return next(r for r in rows if r["server"] == server and r["concurrency"] == concurrency)

    def in_process(size: str, how: str) -> float:
        return next(r["p50 (ms)"] for r in rows if r["benchmark"] == f"in process, {size}" and r["server"] == how)

    result = {}
    for size, target in (("1 row", 10), ("1,000 rows", 1)):
        speedup = in_process(size, "sklearn predict_proba") / in_process(size, "onnxruntime")
        result[f"onnxruntime vs sklearn, {size}"] = _verdict(speedup >= target, f"{speedup:.1f}x (target {target}x)")
    for concurrency in CONCURRENCY:
        ours = http(SINGLE_ON, concurrency)["req/s"]
        mlflow = http(MLFLOW, concurrency)["req/s"]
        bare = http(BARE, concurrency)["req/s"]
        result[f"BentoML (log on) vs mlflow serve, concurrency {concurrency}"] = _verdict(
            ours >= 2 * mlflow, f"{ours / mlflow:.1f}x (target 2x)"
        )
        result[f"BentoML (log on) vs bare server, concurrency {concurrency}"] = _verdict(
            ours >= 0.7 * bare, f"{ours / bare:.2f}x (target 0.7x)"
        )
        off = http(SINGLE_OFF, concurrency)["req/s"]
        result[f"inference log cost, concurrency {concurrency}"] = _verdict(
            ours >= 0.9 * off, f"{100 * (1 - ours / off):.1f} % less throughput (target <= 10 %)"
        )
    p99 = http(SINGLE_ON, 8)["p99 (ms)"]
    result["BentoML p99 at concurrency 8"] = _verdict(p99 <= 20, f"{p99:.1f} ms (target <= 20 ms)")
    for concurrency in MULTI_CONCURRENCY:
        alone = http(SINGLE_ON, concurrency)["req/s"]
        for server, what in ((SEVERAL_DEMO, "the demo route"), (SEVERAL_SPREAD, f"all {SEVERAL} routes at once")):
            ratio = http(server, concurrency)["req/s"] / alone
            result[f"{SEVERAL} models vs 1, load on {what}, concurrency {concurrency}"] = _verdict(
                ratio >= 0.8, f"{ratio:.2f}x the 1-model service (target >= 0.8x)"
            )
    return result


def memory_verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """MiB each model adds to the service (no target was set: reported for sizing)."""
    result = {}
    first = rows[0]
    for row in rows[1:]:
        result[f"memory per extra model, {first['models loaded']} -> {row['models loaded']} models"] = (
            f"{row['PSS per extra model (MiB)']:.1f} MiB PSS ({row['USS per extra model (MiB)']:.1f} MiB USS); "
            f"{first['PSS (MiB)']:.0f} MiB for the service of 1 model"
        )
    return result


def rollout_verdicts(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The shadow's target, met or not, the canary's cost (no target), and what the model off the path scored."""

    def row(name: str, concurrency: int) -> dict[str, Any]:
        return next(r for r in rows if r["configuration"] == name and r["concurrency"] == concurrency)

    result = {}
    for concurrency in CONCURRENCY:
        alone = row(ALONE, concurrency)["p99 (ms)"]
        for name in (SHADOW, CANARY):
            figures = row(name, concurrency)
            ratio = figures["p99 (ms)"] / alone
            text = f"{ratio:.2f}x ({figures['p99 (ms)']:.1f} against {alone:.1f} ms"
            key = f"{name} p99 vs champion alone, concurrency {concurrency}"
            if name == SHADOW:
                result[key] = _verdict(ratio <= SHADOW_P99_TARGET, f"{text}; target <= {SHADOW_P99_TARGET:.2f}x)")
            else:
                result[key] = f"{text}; no target)"
            answered = figures["records answered"]
            handed = answered if name == SHADOW else figures["answered by the challenger"]
            share = f"; the challenger answered {100 * handed / answered:.1f} %" if name == CANARY and answered else ""
            result[f"{name} off the path, concurrency {concurrency}"] = (
                f"{figures['scored off the path']:,} of {handed:,} records scored, "
                f"{figures['dropped off the path']:,} dropped, {figures['failed off the path']:,} failed{share}"
            )
    return result


def _verdict(ok: bool, text: str) -> str:
    return ("met: " if ok else "NOT met: ") + text


if __name__ == "__main__":
    main()
