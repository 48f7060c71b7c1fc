"""Capacity on paper: what N models (hourly drift checks, nightly training) ask of Airflow, the model service and
the object store, from per-task costs measured on this machine. Nothing is run: it reads the task logs and the
stores of a run of the whole stack, and multiplies (in well under a second).

    .venv/bin/python -m benchmarks.capacity [--logs <state>/airflow/logs] [--models 50]

Inputs, and where each comes from:

**Measured, by a whole run of the stack on this machine**, read from its state folder (`--logs` names its
`airflow/logs`): an end-to-end test run (`pytest -m e2e tests/e2e`, state in `<basetemp>/e2e0/state/`: the
CeleryExecutor with 4 slots, two models side by side; by default the newest one pytest kept under
/tmp/pytest-of-<user>/, but pytest keeps only its last three basetemp folders, so copy it or pass `--basetemp`)
or `make run --demo-drift` (`--state-dir`, default .local/: Airflow components on LocalExecutor with parallelism
4: the demo model's first training, a drift check of its changed traffic and the retraining it starts, a rollout
check with no rollout on), both on the 2-core machine:
- a task's time: each execution in its log (`attempt=<n>.log`, JSON lines) runs from the task runner's
  "Pre Execute" line to the last line before the next execution's (a sensor's reschedule, a resumed deferral):
  the DAG file's parse, the task's imports and code, the XCom push. Time deferred (a person's approval waits in
  the triggerer) is not counted, nor the worker's fork before the first line. Each execution is a process under
  the CeleryExecutor and a pod under the KubernetesExecutor.
- a DAG run's tasks: its task logs (a mapped task one per map index); a skipped task leaves no log and takes no
  slot or pod, so it is not counted.
- a nightly training: the mean of the ml_training runs that collected, trained and deployed (tasks `collect`
  and `deploy_model`), the worst case of every model promoting every night. `train_candidate` grows with the
  data (`make run`'s demo: 30 days of 2,000 rows; the e2e's: 5 days of 4,000), the tasks around it do not.
- a drift check: the mean of its drift_monitor runs that checked (`check_drift`); `trigger_ml_training`
  counts where it ran (a check that asks for retraining).
- a rollout check with no rollout on: `check_rollout` alone (the rest is skipped), its mean.
- model sizes: `state/bentoml/models/*/*/model.onnx`, what the deploy task publishes and each replica pulls.
- MLflow and lakeFS bytes per training run: `mlflow/artifacts` and `lakefs/blobs` of the state folder over all
  its training runs, when they are there: bytes stored, a floor for what the runs wrote (MLflow's include the drift
  checks' reports).

**Measured by the other benchmarks** (docs/benchmarks.md): the model service answers 1,895 one-record
requests/s on one core (benchmarks/serving.py: BentoML, one worker pinned to one core, inference log on, c = 8;
`--rps-per-core`).

**From the code**: every ml_training__<model> runs at 02:00 UTC (dags/ml_training.py, one cron for all, no
jitter); drift_monitor__<model> @hourly, at minute 0 (dags/drift_monitor.py), its sensor poking once when the
window holds its rows (plugins/mlops_airflow/monitoring.py); model_rollout__<model> every
`rollout.check_every_minutes`, default 60 (include/mlops/config.py); every worker of every replica reads each
model's pointer once a second (MLOPS_POINTER_CHECK_SECONDS, default 1: one HEAD per pointer); the
production profile's model service: 2 workers a replica, the HPA at 65 % CPU, at least 2 replicas
(deploy/helm/airflow-mlops/profiles/production.yaml).

**Assumed** (options): a pod's start under the KubernetesExecutor, 5-10 s (scheduling, the container's start,
the interpreter and the task runner up to its first log line: not measured here, there is no cluster); Airflow
worker slots sized for 70 % utilisation; the request rates; training spread over 6 night hours as the
alternative to all at 02:00; S3 Standard's list price of $0.0004 per 1,000 GET/HEAD requests (us-east-1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import statistics
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.report import publish

HOUR = 3600.0
MONTH_SECONDS = 30 * 24 * HOUR
ATTEMPT_LOG = re.compile(r"attempt=(\d+)\.log$")
# The first line of every execution of a task (the task runner's start).
EXECUTION_START = "::group::Pre Execute"

# From the code (see the docstring).
SERVING_WORKERS = 2  # production profile: modelService.workers
SERVING_TARGET_CPU = 0.65  # production profile: the HPA's targetCPUUtilizationPercentage
SERVING_MIN_REPLICAS = 2  # production profile: the HPA's minReplicas
POINTER_POLLS_PER_SECOND = 1.0  # the service's default MLOPS_POINTER_CHECK_SECONDS = 1
ROLLOUT_CHECK_MINUTES = 60  # include/mlops/config.py rollout.check_every_minutes, its default
ROLLOUT_CHECKS_PER_HOUR = 60 / ROLLOUT_CHECK_MINUTES
# Measured by benchmarks/serving.py (docs/benchmarks.md): BentoML, one worker on one core, log on, c = 8.
RPS_PER_CORE = 1895.0
# Assumed.
S3_PRICE_PER_1000_GET = 0.0004  # USD, S3 Standard, GET/HEAD and "all other requests", us-east-1 list price


@dataclass
class Execution:
    start: dt.datetime
    end: dt.datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Run:
    dag_id: str
    run_id: str
    tasks: dict[str, list[Execution]] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.dag_id.split("__")[0]

    @property
    def executions(self) -> int:
        return sum(len(e) for e in self.tasks.values())

    @property
    def seconds(self) -> float:
        return sum(x.seconds for e in self.tasks.values() for x in e)

    def widest(self) -> int:
        """The most executions of this run that were running at the same moment."""
        executions = [x for e in self.tasks.values() for x in e]
        edges = sorted([(x.start, 1) for x in executions] + [(x.end, -1) for x in executions])
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        return most


@dataclass(frozen=True)
class Profile:
    """One DAG run of one model, as measured: its task executions and their seconds."""

    name: str
    runs: int
    executions: float
    seconds: float
    seconds_min: float
    seconds_max: float
    widest: int


def newest_e2e_logs() -> Path:
    """The Airflow logs folder of the newest e2e run that pytest kept, or exit with what to do."""
    found = []
    for logs in Path(tempfile.gettempdir()).glob("pytest-of-*/pytest-*/e2e*/state/airflow/logs"):
        number = re.search(r"pytest-(\d+)$", logs.parents[3].name)
        if number and any(logs.glob("dag_id=ml_training__*")):
            found.append((int(number.group(1)), logs))
    if not found:
        sys.exit(
            f"no end-to-end run's Airflow logs under {tempfile.gettempdir()}/pytest-of-*/pytest-*/e2e*/state/airflow"
            "/logs (pytest keeps only its last three basetemp folders): pass --logs <state>/airflow/logs of a run, "
            "e.g. `.venv/bin/pytest -m e2e tests/e2e --basetemp=/tmp/e2e-run` (--logs /tmp/e2e-run/e2e0/state/airflow/"
            "logs) or `make run ARGS='--demo-drift --state-dir /tmp/run'` (--logs /tmp/run/airflow/logs)"
        )
    return max(found)[1]


def read_executions(log: Path) -> list[Execution]:
    """A task log's executions: each from its "Pre Execute" line to the last line before the next one."""
    executions: list[Execution] = []
    start = end = None
    for line in log.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            stamp = dt.datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if record.get("event") == EXECUTION_START and start is not None:
            executions.append(Execution(start, end))
            start = None
        if start is None:
            start = stamp
        end = stamp
    if start is not None:
        executions.append(Execution(start, end))
    return executions


def read_runs(logs: Path) -> list[Run]:
    """Every DAG run in an Airflow logs folder (dag_id=*/run_id=*/task_id=*[/map_index=*]/attempt=*.log)."""
    runs: dict[tuple[str, str], Run] = {}
    for log in sorted(logs.glob("dag_id=*/run_id=*/task_id=*/**/attempt=*.log")):
        if not ATTEMPT_LOG.search(log.name):
            continue  # a trigger's log (attempt=1.log.trigger.<id>.log)
        parts = log.relative_to(logs).parts
        dag_id, run_id = parts[0].removeprefix("dag_id="), parts[1].removeprefix("run_id=")
        # "collect", or "train_candidate[0]" for a mapped task's map index 0
        task = parts[2].removeprefix("task_id=")
        if len(parts) == 5:
            task += f"[{parts[3].removeprefix('map_index=')}]"
        run = runs.setdefault((dag_id, run_id), Run(dag_id, run_id))
        run.tasks.setdefault(task, []).extend(read_executions(log))
    return list(runs.values())


def profile(name: str, runs: list[Run]) -> Profile:
    if not runs:
        sys.exit(f"the logs hold no {name}: not the logs of a whole run (an e2e run, or make run --demo-drift)?")
    seconds = [r.seconds for r in runs]
    return Profile(
        name=name,
        runs=len(runs),
        executions=statistics.mean(r.executions for r in runs),
        seconds=statistics.mean(seconds),
        seconds_min=min(seconds),
        seconds_max=max(seconds),
        widest=max(r.widest() for r in runs),
    )


def task_profile(name: str, runs: list[Run], task: str) -> Profile:
    """One task alone: what a run costs when the rest of it is skipped."""
    only = [Run(r.dag_id, r.run_id, {task: r.tasks[task]}) for r in runs if task in r.tasks]
    return profile(name, only)


@dataclass(frozen=True)
class Stored:
    """Bytes a run's state folder holds, as measured (0 where the folder is not there)."""

    model: float  # mean ONNX model (state/bentoml/models/*/*/model.onnx)
    models: int
    training_mlflow: float  # MLflow artifacts a training run left, drift reports aside
    drift_report: float  # one drift check's Evidently report in MLflow
    drift_reports: int
    training_lakefs: float  # lakeFS objects a training run left

    @classmethod
    def measure(cls, state: Path, training_runs: int) -> Stored:
        models = [p.stat().st_size for p in state.glob("bentoml/models/*/*/model.onnx")]
        artifacts = [p for p in (state / "mlflow" / "artifacts").rglob("*") if p.is_file()]
        reports = [p.stat().st_size for p in artifacts if p.parent.name == "drift_reports"]
        training = sum(p.stat().st_size for p in artifacts) - sum(reports)
        lakefs = sum(p.stat().st_size for p in (state / "lakefs" / "blobs").rglob("*") if p.is_file())
        runs = max(training_runs, 1)
        return cls(
            model=statistics.mean(models) if models else 0.0,
            models=len(models),
            training_mlflow=training / runs,
            drift_report=statistics.mean(reports) if reports else 0.0,
            drift_reports=len(reports),
            training_lakefs=lakefs / runs,
        )


def slots(task_seconds: float, target: float) -> int:
    """Worker slots that do an hour's task-seconds at the target utilisation."""
    return math.ceil(task_seconds / HOUR / target)


def replicas(rps: float, rps_per_core: float) -> int:
    return max(SERVING_MIN_REPLICAS, math.ceil(rps / (rps_per_core * SERVING_WORKERS * SERVING_TARGET_CPU)))


def mib(size: float) -> str:
    """Bytes in KiB, MiB or GiB."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if size >= scale:
            return f"{size / scale:,.1f} {unit}"
    return f"{size / 1024:,.1f} KiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--logs", type=Path, help="<state>/airflow/logs of an e2e run or of make run (default: the newest e2e run's)"
    )
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--utilisation", type=float, default=0.7, help="target utilisation of the worker slots")
    parser.add_argument("--pod-start", type=float, nargs=2, default=(5.0, 10.0), help="assumed seconds, low high")
    parser.add_argument("--night-hours", type=int, default=6, help="hours the trainings would be spread over")
    parser.add_argument("--rps", type=float, nargs="+", default=(500.0, 2000.0, 10000.0), help="all models' req/s")
    parser.add_argument("--rps-per-core", type=float, default=RPS_PER_CORE)
    args = parser.parse_args()

    logs = (args.logs or newest_e2e_logs()).resolve()
    if not logs.is_dir():
        sys.exit(f"{logs} is not a folder")
    state = logs.parents[1]
    runs = read_runs(logs)
    by_family: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_family[run.family].append(run)

    training = profile(
        "ml_training (collects, trains, deploys)",
        [r for r in by_family["ml_training"] if "collect" in r.tasks and "deploy_model" in r.tasks],
    )
    drift = profile("drift_monitor (a check)", [r for r in by_family["drift_monitor"] if "check_drift" in r.tasks])
    rollout = task_profile("model_rollout (check, no rollout on)", by_family["model_rollout"], "check_rollout")
    inputs = [
        {
            "DAG run (one model)": p.name,
            "runs measured": p.runs,
            "tasks": round(p.executions, 1),
            "task-s (mean)": round(p.seconds, 1),
            "task-s (range)": f"{p.seconds_min:.1f}-{p.seconds_max:.1f}",
            "most at once": p.widest,
        }
        for p in (training, drift, rollout)
    ]
    training_runs = by_family["ml_training"]  # every one leaves MLflow artifacts and lakeFS objects
    stored = Stored.measure(state, len(training_runs))
    publish(
        "capacity_inputs",
        inputs,
        {
            "logs": str(logs),
            "sizes from": f"{state}: ONNX models {stored.models} (bentoml/models), drift reports "
            f"{stored.drift_reports} and training runs {len(training_runs)} (mlflow/artifacts, lakefs/blobs)",
        },
    )

    n, util = args.models, args.utilisation
    low, high = args.pod_start
    checks = {"runs": n + n * ROLLOUT_CHECKS_PER_HOUR}
    checks["tasks"] = n * drift.executions + n * ROLLOUT_CHECKS_PER_HOUR * rollout.executions
    checks["seconds"] = n * drift.seconds + n * ROLLOUT_CHECKS_PER_HOUR * rollout.seconds
    checks["at once"] = n * drift.widest + n * rollout.widest
    hours = [
        ("any hour: drift checks + rollout checks", 0.0, checks["at once"]),
        ("02:00 UTC as configured: + every nightly training", float(n), checks["at once"] + n * training.widest),
        (
            f"trainings spread over {args.night_hours} night hours (not configured)",
            n / args.night_hours,
            checks["at once"] + math.ceil(n / args.night_hours) * training.widest,
        ),
    ]
    rows = []
    for name, trainings, at_once in hours:
        tasks = checks["tasks"] + trainings * training.executions
        seconds = checks["seconds"] + trainings * training.seconds
        rows.append(
            {
                "hour": name,
                "DAG runs": round(checks["runs"] + trainings),
                "tasks = pods": round(tasks),
                "task-s": round(seconds),
                f"+ pod starts ({low:g}-{high:g} s)": f"{seconds + tasks * low:,.0f}-{seconds + tasks * high:,.0f}",
                f"slots at {util:.0%} (with {high:g}-s pod starts)": f"{slots(seconds, util)} "
                f"({slots(seconds + tasks * high, util)})",
                "tasks at once, if all start together": at_once,
            }
        )
    publish(
        "capacity",
        rows,
        {
            "models": n,
            "measured": "task-s and tasks per DAG run (table capacity_inputs)",
            "assumed": f"pod start {low:g}-{high:g} s each, slots at {util:.0%} utilisation",
        },
    )

    service = []
    for rps in args.rps:
        count = replicas(rps, args.rps_per_core)
        heads = count * SERVING_WORKERS * n * POINTER_POLLS_PER_SECOND
        service.append(
            {
                "req/s (all models)": round(rps),
                f"replicas ({SERVING_WORKERS} workers, {SERVING_TARGET_CPU:.0%} CPU)": count,
                "pointer HEAD/s": round(heads),
                "HEAD per 30 days": f"{heads * MONTH_SECONDS / 1e6:,.0f} M",
                "at S3 list price": f"${heads * MONTH_SECONDS / 1000 * S3_PRICE_PER_1000_GET:,.0f}/month",
                "model pulls a night (all deploy)": f"{n * count} GET, {mib(n * count * stored.model)}",
            }
        )
    publish(
        "capacity_service",
        service,
        {
            "models": n,
            "measured": f"{args.rps_per_core:,.0f} req/s a core (benchmarks/serving.py), "
            f"model size {mib(stored.model)} (the run's model store)",
            "from the code": f"{POINTER_POLLS_PER_SECOND:g} pointer HEAD a second per worker per model, "
            f"{SERVING_WORKERS} workers a replica, at least {SERVING_MIN_REPLICAS} replicas",
            "assumed": f"S3 Standard ${S3_PRICE_PER_1000_GET} per 1,000 GET/HEAD",
        },
    )

    writes = [
        ("ONNX model, published by a deploy (model store)", stored.model, n),
        ("a training run's MLflow artifacts (candidates, ONNX, config)", stored.training_mlflow, n),
        ("a drift check's Evidently report (MLflow), every hour", stored.drift_report, 24 * n),
        ("a training run's lakeFS objects (raw days, snapshot, reference)", stored.training_lakefs, n),
    ]
    publish(
        "capacity_object_store",
        [
            {"written a day": what, "each (measured)": mib(size), "count": count, "a day": mib(size * count)}
            for what, size, count in writes
        ],
        {
            "models": n,
            "total a day": mib(sum(size * count for _, size, count in writes)),
            "not measured": "reads: lakeFS (the training window, the references), MLflow (the champion's model)",
        },
    )


if __name__ == "__main__":
    main()
