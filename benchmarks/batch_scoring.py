"""Batch scoring of 1,000,000 rows end to end: the project's batch_scoring DAG against bare scripts, in one run.

Three measurements of the same Parquet file of the demo's transactions (one simulated day), scored by the same
LightGBM pipeline (the demo config's `lightgbm` candidate, fitted here on other simulated days):

- project: a real `batch_scoring__<model>` run, `dag.test()` in a process of its own (as the DAG tests run it), on
  the project's lakeFS-compatible server, with the champion registered in a real `mlflow server` and its ONNX
  bytes in the BentoML model store. The config's `batch.source` is the Parquet file's folder, so collect_input
  reads that file. Every task runs in that process, one after the other; a listener resets the process's peak
  resident memory (Linux `clear_refs`) as each task starts and reads it (VmHWM) as it ends. Then collect_input,
  the run's first chunk's score_chunk and check_drift run again, each by its task's callable in a fresh process,
  as a task process has it: Airflow imported and the DAG file parsed first; its time and peak are those of one
  task process.
- bare sklearn: one process reads the file, scores it with the pickled sklearn pipeline and writes the id, label and
  probabilities to a local Parquet file.
- bare onnxruntime: the same with the ONNX model, on one thread as the project's chunks use.

Targets (issue 26): at most 60 s end to end and 1 GiB peak per task process at 1,000,000 rows.

    .venv/bin/python -m benchmarks.batch_scoring [--rows N] [--chunk-rows N] [--profile FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import yaml

from benchmarks.report import process_peak_rss_bytes, publish

REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = dt.date(2026, 3, 1)  # the scored day; its run's logical date is the next midnight (a 24-hour window)
SEED = 5
MODEL = "fraud_bench"
TRAINING_ROWS = 50_000
KEYS = ("AKIABENCHMARK00000000", "benchmark-secret-key-0000000000000000")
REPOSITORY = "bench"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-rows", type=int, help="batch.chunk_rows (default: the config's)")
    parser.add_argument("--profile", type=Path, help="write cProfile statistics of the DAG run to this file")
    parser.add_argument("--dag-run", nargs=2, metavar=("CONFIG", "PROFILE"), help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--task-alone", nargs=2, metavar=("TASK", "ARGUMENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dag_run:
        print(json.dumps(dag_run(Path(args.dag_run[0]), args.dag_run[1])))
        return
    if args.task_alone:
        print(json.dumps(task_alone(args.task_alone[0], json.loads(Path(args.task_alone[1]).read_text()))))
        return
    if args.bare:
        print(json.dumps(BARE[args.bare[0]](Path(args.bare[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        _isolate(folder)
        config_path, chunk_rows = prepare(folder, args.rows, args.chunk_rows)
        results = measure(folder, config_path, args.profile)
    report(results, args.rows, chunk_rows, args.profile)


def _isolate(folder: Path) -> None:
    """Airflow, BentoML and the connections of this run only, for this process and the ones it starts."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(folder / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__LOAD_DEFAULT_CONNECTIONS": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{folder / 'airflow' / 'airflow.db'}",
            "AIRFLOW__API__BASE_URL": "http://airflow.bench",
            "BENTOML_HOME": str(folder / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "MLOPS_CONFIG_DIR": str(folder / "configs"),
        }
    )
    os.environ.pop("MLOPS_MODEL_STORE_URL", None)  # the bytes come from the BentoML model store


def prepare(folder: Path, rows: int, chunk_rows: int | None) -> tuple[Path, int]:
    """The input file, the config, the fitted model (pickled, ONNX), and the Airflow metadata DB."""
    from benchmarks.training_overhead import demo_splits
    from include.demo_sources import simulator
    from include.mlops import deployment, monitoring, packaging, training
    from include.mlops.config import CONFIG_DIR, load_config

    print(f"simulating {rows:,} transactions to score ...", flush=True)
    (folder / "input").mkdir()
    simulator.generate_day(DAY, rows, seed=SEED).transactions.to_parquet(folder / "input" / "transactions.parquet")
    # The demo's own source, where the drift check finds the labels the day's transactions have by then.
    simulator.write_days(f"sqlite:///{folder / 'transactions.db'}", DAY, 1, rows, seed=SEED)

    raw = yaml.safe_load((CONFIG_DIR / "fraud_demo.yaml").read_text())
    raw["model"]["registered_name"] = MODEL
    source = {"kind": "files", "path": str(folder / "input"), "format": "parquet", "pattern": "*.parquet"}
    raw["batch"] = {"window_hours": 24, "source": source} | ({"chunk_rows": chunk_rows} if chunk_rows else {})
    (folder / "configs").mkdir()
    config_path = folder / "configs" / "fraud_demo.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)

    print(f"fitting the demo's lightgbm candidate on {TRAINING_ROWS:,} other rows ...", flush=True)
    spec = next(s for s in training.expand_candidates(config) if s.estimator == "LightGBM")
    train = demo_splits(config, TRAINING_ROWS)["train"]
    pipeline = training.fit(training.build_pipeline(config, spec), config, train)
    (folder / "model.pkl").write_bytes(pickle.dumps(pipeline))
    onnx = packaging.to_onnx(pipeline, config)
    (folder / "model.onnx").write_bytes(onnx)
    # The drift reference, as ml_training's store_reference leaves it: the run's drift check has one to judge by.
    sample = monitoring.sample_reference(train, config)
    predictions = deployment.offline_predictions(onnx, config, sample)
    monitoring.with_predictions(sample, predictions, config.dataset).to_parquet(folder / "reference.parquet")
    described = {"features": [[f.name, f.type] for f in config.dataset.features], "classes": [*pipeline.classes_]}
    (folder / "model.json").write_text(json.dumps(described, default=int))

    print("migrating the Airflow metadata DB ...", flush=True)
    (folder / "airflow").mkdir()
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True)
    return config_path, config.batch.chunk_rows


def measure(folder: Path, config_path: Path, profile: Path | None) -> dict[str, Any]:
    """The three measurements, with the servers the DAG run needs started around it."""
    from devstack import services
    from devstack.processes import free_port

    results: dict[str, Any] = {"load": f"{os.getloadavg()[0]:.1f}"}
    logs = folder / "logs"
    lakefs = services.start_lakefs_server(folder / "lakefs", free_port(), services.LakeFSCredentials(*KEYS), logs)
    mlflow = None
    try:
        mlflow = services.start_mlflow(folder / "mlflow", free_port(), logs)
        _connections(folder, lakefs.url, mlflow.url)
        _champion(folder, config_path, mlflow.url, lakefs.url)
        print("batch_scoring DAG run ...", flush=True)
        results["project"] = _child(["--dag-run", str(config_path), str(profile or "")])
        results["lakefs_peak_rss"] = process_peak_rss_bytes(lakefs.pid)
        # The shared process keeps what earlier tasks held (its RSS does not fall back): a task's own process peak
        # is measured again alone, for the largest chunk and the drift check.
        for task_id, arguments in results["project"]["tasks_alone"].items():
            print(f"{task_id} again, in a process of its own ...", flush=True)
            path = folder / f"{task_id}.json"
            path.write_text(json.dumps(arguments))
            results.setdefault("alone", {})[task_id] = _child(["--task-alone", task_id, str(path)])
        _project_predictions(folder, lakefs.url, results["project"]["predictions"])
    finally:
        if mlflow is not None:
            mlflow.stop()
        lakefs.stop()
    for kind in BARE:
        print(f"bare {kind} ...", flush=True)
        results[kind] = _child(["--bare", kind, str(folder)])
    onnx = folder / "bare-onnxruntime.parquet"
    results["agreement"] = {
        "project": _max_difference(folder / "project.parquet", onnx),
        "sklearn": _max_difference(folder / "bare-sklearn.parquet", onnx),
    }
    results["load"] += f" / {os.getloadavg()[0]:.1f}"
    return results


def _champion(folder: Path, config_path: Path, mlflow_url: str, lakefs_url: str) -> None:
    """Version 1 of the model, its `champion`, in the MLflow registry, its ONNX bytes in the BentoML model store,
    and its drift reference in lakeFS: what ml_training's register, publish and store_reference steps leave."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from include.mlops import deployment, lakefs_repository, registry
    from include.mlops.config import load_config
    from include.mlops.naming import lakefs_uri

    config = load_config(config_path)
    client = MlflowClient(mlflow_url, registry_uri=mlflow_url)
    client.create_registered_model(MODEL)
    run = client.create_run(client.create_experiment(MODEL))
    tags = {"lakefs_repository": REPOSITORY, "lakefs_commit": "b" * 64}
    version = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run.info.run_id, tags=tags)
    client.set_registered_model_alias(MODEL, registry.CHAMPION, version.version)
    deployment.save_to_model_store((folder / "model.onnx").read_bytes(), config, version.version, tags)
    client_of_lakefs = lakefs_repository.connect(lakefs_url, *KEYS)
    repo = lakefs_repository.ensure_repository(client_of_lakefs, REPOSITORY, f"local://{REPOSITORY}")
    path = f"reference/{MODEL}/bench/reference.parquet"
    lakefs_repository.write_parquet(repo, "main", path, pd.read_parquet(folder / "reference.parquet"))
    commit = lakefs_repository.commit(repo, "main", f"Drift reference of {MODEL} v{version.version}")
    client.set_model_version_tag(MODEL, version.version, "drift_reference", lakefs_uri(REPOSITORY, commit.id, path))


def _connections(folder: Path, lakefs_url: str, mlflow_url: str) -> None:
    import sqlalchemy as sa

    from include.mlops import lakefs_repository, operations_store

    store = folder / "operations.db"  # where the run records itself (batch_runs) and its drift check
    operations_store.upgrade(sa.create_engine(f"sqlite:///{store}"))

    lakefs_repository.ensure_repository(
        lakefs_repository.connect(lakefs_url, *KEYS), REPOSITORY, f"local://{REPOSITORY}"
    )
    host, port = mlflow_url.removeprefix("http://").split(":")
    lakefs = {"conn_type": "lakefs", "host": lakefs_url, "login": KEYS[0], "password": KEYS[1]}
    connections = {
        "LAKEFS_DEFAULT": lakefs | {"extra": json.dumps({"repository": REPOSITORY})},
        "MLFLOW_DEFAULT": {"conn_type": "http", "host": host, "port": int(port), "schema": "http"},
        "INFERENCE_LOG_DB": {"conn_type": "sqlite", "host": str(store)},
        "TRANSACTIONS_DB": {"conn_type": "sqlite", "host": str(folder / "transactions.db")},
    }
    for name, conn in connections.items():
        os.environ[f"AIRFLOW_CONN_{name}"] = json.dumps(conn)


def _child(arguments: list[str]) -> dict[str, Any]:
    """Run this module with `arguments` in a process of its own; its JSON answer, with the process's wall time."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.batch_scoring", *arguments],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=os.environ | ONE_THREAD,
    )
    process_wall = time.perf_counter() - began
    if done.returncode:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) | {"process_wall": process_wall}


# --- the project: a DAG run ---


def dag_run(config_path: Path, profile: str) -> dict[str, Any]:
    """One batch_scoring run of the day, `dag.test()` in this process; what each task took and held."""
    began = time.perf_counter()
    sys.path.insert(0, str(REPO_ROOT / "plugins"))  # as Airflow does in its own processes
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.listener import get_listener_manager

    from include.mlops.config import load_config
    from include.mlops.naming import batch_scoring_dag_id

    dag_id = batch_scoring_dag_id(load_config(config_path).name)
    dag = DagBag(dag_folder=str(REPO_ROOT / "dags" / "batch_scoring.py")).dags[dag_id]
    tasks = _hookimpl(_TaskMemory)()
    get_listener_manager().add_listener(tasks)
    before_run = {"seconds": time.perf_counter() - began, "rss": _status("VmRSS")}

    logical_date = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(), dt.UTC)
    began = time.perf_counter()
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        run = profiler.runcall(dag.test, logical_date=logical_date)
        profiler.dump_stats(profile)
    else:
        run = dag.test(logical_date=logical_date)
    wall = time.perf_counter() - began
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    if run.state != "success":
        raise RuntimeError(f"the batch_scoring run ended {run.state}: {states}")

    def xcom(task_id: str) -> Any:
        return run.get_task_instance(task_id).xcom_pull(task_ids=task_id)

    merged = xcom("merge_predictions")
    model, batch = xcom("resolve_model"), xcom("collect_input")
    tasks_alone = {  # the arguments of tasks to run again in a process of their own
        "collect_input": {
            "config_file": str(config_path),
            "model": model,
            # What it reads of its context; it writes the same parts and finds its commit made.
            "run": {"dag_id": dag_id, "run_id": run.run_id, "interval_end": run.data_interval_end.isoformat()},
        },
        "score_chunk": {  # the first (largest) chunk
            "config_file": str(config_path),
            "model": model,
            "batch": batch,
            "chunk": xcom("plan_chunks")[0],
            "run_id": run.run_id,
        },
        "check_drift": {"config_file": str(config_path), "model": model, "batch": batch, "merged": merged},
    }
    return {
        "wall": wall,
        "before_run": before_run,
        "tasks": tasks.measured,
        # VmHWM is reset as each task starts: the run's peak is its largest task's.
        "peak_rss": max(t["peak_rss"] for t in tasks.measured),
        "rows_scored": int(merged["rows_scored"]),
        "rows_quarantined": int(merged["rows_quarantined"]),
        "predictions": merged["predictions"],
        "tasks_alone": tasks_alone,
    }


def task_alone(task_id: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The callable of batch_scoring's task `task_id` in this fresh process, after what its task process has
    before it runs the task (Airflow, the DAG file parsed): its time, imports included, and the process's peak."""
    began = time.perf_counter()
    sys.path.insert(0, str(REPO_ROOT / "plugins"))
    from airflow.dag_processing.dagbag import DagBag

    DagBag(dag_folder=str(REPO_ROOT / "dags" / "batch_scoring.py"))
    from airflow.sdk.execution_time.context import set_current_context

    from mlops_airflow import batch_scoring

    class Pushed:
        """The task instance of the context, as far as the callables use it: the links they push, and the run's
        names."""

        def __init__(self, dag_id: str = "", run_id: str = "") -> None:
            self.dag_id, self.run_id, self.task_id, self.try_number = dag_id, run_id, task_id, 1

        def xcom_push(self, key: str, value: Any) -> None:
            pass

    ti = Pushed()
    if run := arguments.pop("run", None):  # a task that reads its run from its context
        ti = Pushed(run["dag_id"], run["run_id"])
        end = dt.datetime.fromisoformat(run["interval_end"])
        dag_run = types.SimpleNamespace(dag_id=run["dag_id"], run_type="manual", run_after=end, logical_date=end)
        arguments |= {"ti": ti, "dag_run": dag_run, "run_id": run["run_id"], "data_interval_end": end, "params": {}}
    before_task = time.perf_counter() - began
    began = time.perf_counter()
    with set_current_context({"ti": ti}):
        getattr(batch_scoring, task_id).function(**arguments)
    return {"before_task": before_task, "wall": time.perf_counter() - began, "peak_rss": _status("VmHWM")}


def _status(field: str) -> int:
    """A field of this process's /proc status, in bytes (VmHWM: the peak resident memory since the last reset).

    Not getrusage's ru_maxrss: Linux carries it over from the parent across fork and exec, so every child of the
    benchmark, which holds the million rows, reported the benchmark's own peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


class _TaskMemory:
    """An Airflow listener: each task's time and peak resident memory, the peak reset as the task starts. A task
    starts with what earlier tasks of the process left (their imports, freed memory the allocator kept), so its
    peak is an upper bound of what it holds in a process of its own."""

    def __init__(self) -> None:
        self.measured: list[dict[str, Any]] = []
        self._started = 0.0
        self._rss_at_start = 0

    def on_task_instance_running(self, previous_state, task_instance) -> None:
        Path("/proc/self/clear_refs").write_text("5")
        self._rss_at_start = _status("VmRSS")
        self._started = time.perf_counter()

    def on_task_instance_success(self, previous_state, task_instance) -> None:
        self.measured.append(
            {
                "task": task_instance.task_id
                + (f"[{task_instance.map_index}]" if task_instance.map_index >= 0 else ""),
                "seconds": time.perf_counter() - self._started,
                "rss_at_start": self._rss_at_start,
                "peak_rss": _status("VmHWM"),
            }
        )


def _hookimpl(listener: type) -> type:
    from airflow.sdk._shared.listeners import hookimpl

    for name in ("on_task_instance_running", "on_task_instance_success"):
        setattr(listener, name, hookimpl(getattr(listener, name)))
    return listener


# --- the bare scripts ---


def bare_sklearn(folder: Path) -> dict[str, Any]:
    began = time.perf_counter()
    import pandas as pd

    frame = pd.read_parquet(folder / "input" / "transactions.parquet")
    pipeline = pickle.loads((folder / "model.pkl").read_bytes())
    probabilities = pipeline.predict_proba(_features(frame, folder))
    labels = pipeline.classes_[probabilities.argmax(axis=1)]
    _write(folder / "bare-sklearn.parquet", frame["transaction_id"], labels, probabilities, pipeline.classes_)
    return {"wall": time.perf_counter() - began, "peak_rss": _status("VmHWM"), "rows_scored": len(frame)}


def bare_onnxruntime(folder: Path) -> dict[str, Any]:
    began = time.perf_counter()
    import numpy as np
    import onnxruntime
    import pandas as pd

    frame = pd.read_parquet(folder / "input" / "transactions.parquet")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    features, described = _features(frame, folder), json.loads((folder / "model.json").read_text())
    feeds = {
        name: features[name].to_numpy(dtype=object if kind == "categorical" else np.float32).reshape(-1, 1)
        for name, kind in described["features"]
    }
    labels, probabilities = session.run(["label", "probabilities"], feeds)
    _write(folder / "bare-onnxruntime.parquet", frame["transaction_id"], labels, probabilities, described["classes"])
    return {"wall": time.perf_counter() - began, "peak_rss": _status("VmHWM"), "rows_scored": len(frame)}


def _features(frame, folder: Path):
    """The model's inputs as a person would prepare them: numbers (and booleans) as float64, categories as text."""
    import pandas as pd

    columns = {}
    for name, kind in json.loads((folder / "model.json").read_text())["features"]:
        values = frame[name]
        columns[name] = values.astype(str) if kind == "categorical" else values.astype("float64")
    return pd.DataFrame(columns)


def _write(path: Path, ids, labels, probabilities, classes) -> None:
    import pandas as pd

    columns = {"transaction_id": ids.to_numpy(), "prediction": labels.reshape(-1)}
    columns |= {f"probability_{c}": probabilities[:, i] for i, c in enumerate(classes)}
    pd.DataFrame(columns).to_parquet(path)


BARE = {"sklearn": bare_sklearn, "onnxruntime": bare_onnxruntime}


# --- checks and the report ---


def _project_predictions(folder: Path, lakefs_url: str, prefix: str) -> None:
    """The predictions the run merged into `main`, copied to `project.parquet` to compare with the bare ones."""
    import pandas as pd

    from include.mlops import lakefs_repository

    repo = lakefs_repository.ensure_repository(
        lakefs_repository.connect(lakefs_url, *KEYS), REPOSITORY, f"local://{REPOSITORY}"
    )
    parts = [o.path for o in lakefs_repository.list_objects(repo, "main", prefix) if "/quarantine/" not in o.path]
    merged = pd.concat([lakefs_repository.read_parquet(repo, "main", p) for p in parts], ignore_index=True)
    merged.to_parquet(folder / "project.parquet")


def _max_difference(path: Path, other: Path) -> float:
    import pandas as pd

    left, right = pd.read_parquet(path), pd.read_parquet(other)
    joined = left.merge(right, on="transaction_id", validate="one_to_one")
    if len(joined) != len(left) or len(joined) != len(right):
        raise RuntimeError(f"{path.name} and {other.name} score different rows: {len(left)}, {len(right)}")
    return float((joined["probability_1_x"] - joined["probability_1_y"]).abs().max())


def report(results: dict[str, Any], rows: int, chunk_rows: int, profile: Path | None) -> None:
    mib = 2**20
    project, sklearn, onnx = results["project"], results["sklearn"], results["onnxruntime"]
    for name, measured in (("project", project), ("sklearn", sklearn), ("onnxruntime", onnx)):
        if measured["rows_scored"] != rows:
            raise RuntimeError(f"{name} scored {measured['rows_scored']} of {rows} rows")

    def row(name: str, measured: dict[str, Any], peak: int) -> dict[str, Any]:
        return {
            "path": name,
            "wall (s)": measured["wall"],
            "process wall incl. start-up (s)": measured["process_wall"],
            "rows per second": int(rows / measured["wall"]),
            "peak RSS (MiB)": peak / mib,
            "vs bare onnxruntime": measured["wall"] / onnx["wall"],
            "vs bare sklearn": measured["wall"] / sklearn["wall"],
        }

    busy = sum(t["seconds"] for t in project["tasks"])
    largest_task = max(t["peak_rss"] for t in project["tasks"])
    table = [
        row("project: batch_scoring DAG run (dag.test)", project, largest_task),
        row("bare sklearn", sklearn, sklearn["peak_rss"]),
        row("bare onnxruntime", onnx, onnx["peak_rss"]),
    ]
    tasks = {
        t["task"]: f"{t['seconds']:.2f} s, peak {t['peak_rss'] / mib:.0f} MiB (at start {t['rss_at_start'] / mib:.0f})"
        for t in project["tasks"]
    }
    notes: dict[str, Any] = {
        "rows": rows,
        "chunk_rows": chunk_rows,
        "project's peak RSS": "the largest task's (each task's peak from its start, in the one dag.test process)",
        "tasks": tasks,
        "sum of task times (s)": busy,
        "dag.test's own machinery (its in-process API server, metadata DB): wall - sum of task times (s)": (
            project["wall"] - busy
        ),
        "dag.test process: Airflow import and DAG parse before the run (s)": project["before_run"]["seconds"],
        "dag.test process: RSS before the run (MiB)": project["before_run"]["rss"] / mib,
        "dag.test process: peak RSS over the run (MiB)": project["peak_rss"] / mib,
        "lakeFS server peak RSS (MiB)": results["lakefs_peak_rss"] / mib,
        **{
            f"{task_id} again, in a process of its own": (
                f"Airflow import and DAG parse {alone['before_task']:.2f} s, then the task {alone['wall']:.2f} s (its "
                f"imports included), process peak RSS {alone['peak_rss'] / mib:.0f} MiB"
            )
            for task_id, alone in results["alone"].items()
        },
        "1-minute load average before / after the measurements": results["load"],
        "max |probability| difference, project vs bare onnxruntime": f"{results['agreement']['project']:.1e}",
        "max |probability| difference, bare sklearn vs bare onnxruntime": f"{results['agreement']['sklearn']:.1e}",
        "targets": "project <= 60 s end to end and <= 1024 MiB peak per task process at 1,000,000 rows",
    }
    if profile:
        notes["profile"] = str(profile)
    publish("batch_scoring", table, notes)


if __name__ == "__main__":
    main()
