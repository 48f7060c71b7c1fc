"""The memory of `make run`'s local stack (PSS) from start-up through the first training runs, and idling.

Runs the real entry point, `python -m devstack --state-dir <tmp> --free-ports` (what `make run` runs),
in a session of its own, and samples the PSS of its whole process tree every 2 s
(`devstack.processes.tree_pss_bytes`): shared pages are split among the processes sharing them, so
forked workers are not counted once each. The stack process's children are the servers' process-group leaders
(lakeFS, MLflow, the BentoML service, the Airflow components), and each is measured with its own tree. Sampling
goes on through the stack's start-up and the first training runs that `make run` triggers itself, one
`ml_training__<model>` per config of include/config/ (the demo's and the breast cancer model's), side by side
(`--history-days` days collected, default each config's training window), up to "Ready; Ctrl-C stops
everything", then for `--idle-seconds` more while the demo traffic plays to the model service. Then Ctrl-C
(SIGINT), and the stack has to stop.
With `--demo-drift` (passed through) the drift loop runs before "Ready": the peak then includes the
drift-triggered retraining.

Target (issue 7): the whole local stack stays under 4 GiB of memory (PSS) on this machine; printed as PASS/MISS.

    .venv/bin/python -m benchmarks.local_stack_memory [--demo-drift] [--history-days N] [--idle-seconds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.report import publish
from devstack.processes import group_alive

TARGET_BYTES = 4 * 2**30
READY = "Ready; Ctrl-C stops everything"
SERVERS = ("lakefs", "mlflow", "serving", "airflow", "make run itself")
GiB = 2**30


def server_name(process: psutil.Process) -> str:
    """Which server a child of the stack process is, from its command line (BentoML renames itself circusd)."""
    try:
        command = " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "lakefs_server" in command:
        return "lakefs"
    if "mlflow" in command:
        return "mlflow"
    if "bentoml" in command or "circusd" in command:
        return "serving"
    if "airflow" in command:
        return "airflow"
    return "other"


def sample(stack_pid: int, seen_groups: set[int]) -> dict[str, int]:
    """PSS of the stack process and of each server's process tree, in bytes."""
    from devstack.processes import tree_pss_bytes

    figures = dict.fromkeys(SERVERS, 0)
    try:
        stack = psutil.Process(stack_pid)
        figures["make run itself"] = stack.memory_full_info().pss
        children = stack.children()
    except psutil.NoSuchProcess:
        return figures
    for child in children:
        seen_groups.add(child.pid)
        name = server_name(child)
        try:
            figures[name] = figures.get(name, 0) + tree_pss_bytes(child.pid)
        except psutil.NoSuchProcess:
            pass  # a short-lived child (e.g. `airflow db migrate`) that ended between the listing and the reading
    return figures


def tree_rss_uss(stack_pid: int) -> tuple[int, int]:
    """RSS (shared pages counted in every process) and USS (pages of this tree alone) of the whole tree: the
    upper and lower bounds around PSS."""
    rss = uss = 0
    root = psutil.Process(stack_pid)
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            info = process.memory_full_info()
            rss, uss = rss + info.rss, uss + info.uss
    return rss, uss


# make run's lines about training runs (devstack/demo.py): one per model started and finished, e.g.
# "[make run] ml_training__fraud_detector run manual__2026-12-02T20:40:00+00:00 started (reason=manual, ...)",
# "[make run] ml_training__fraud_detector run manual__...: success", and the drift monitor's
# "[make run] drift_monitor__fraud_detector started ml_training__fraud_detector run drift__... by itself".
STARTED = re.compile(r"^\[make run\] (ml_training__\w+) run (\S+) started \(")
FINISHED = re.compile(r"^\[make run\] (ml_training__\w+) run (\S+): (success|failed)$")
BY_ITSELF = re.compile(r"^\[make run\] drift_monitor__\w+ started (ml_training__\w+) run (\S+) by itself$")
SERVED = re.compile(r"^\[make run\]\s+-> (\w+) v(\S+): ")


class Output(threading.Thread):
    """Reads the stack's output line by line: echoes it, keeps it, and follows which phase the stack is in.

    make run starts the first training run of every model at once: the phase "first ml_training runs" lasts
    until all of them have finished."""

    def __init__(self, stream):
        super().__init__(name="stack-output", daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.phase = "start-up"
        self.phase_started: dict[str, float] = {"start-up": time.monotonic()}
        self.running: set[tuple[str, str]] = set()
        self.outcomes: list[str] = []  # "<dag id> run <run id>: <state>"
        self.drifted = False
        self.ready = threading.Event()

    def _enter(self, phase: str) -> None:
        self.phase = phase
        self.phase_started.setdefault(phase, time.monotonic())

    def run(self) -> None:
        for line in self.stream:
            line = line.rstrip()
            self.lines.append(line)
            print(f"  | {line}", flush=True)
            if match := STARTED.match(line):
                self.running.add(match.groups())
                self._enter("first ml_training runs")
            elif match := BY_ITSELF.match(line):
                self.running.add(match.groups())
                self._enter("drift-triggered ml_training run")
            elif match := FINISHED.match(line):
                dag_id, run_id, state = match.groups()
                self.running.discard((dag_id, run_id))
                self.outcomes.append(f"{dag_id} run {run_id}: {state}")
                if not self.running:
                    self._enter("after drift retraining" if self.drifted else "after training")
            elif "the world changes" in line:
                self.drifted = True
                self._enter("drift loop")
            elif READY in line:
                self._enter("ready, idling with traffic")
                self.ready.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-drift", action="store_true", help="passed to make run: the drift loop before Ready")
    parser.add_argument("--history-days", type=int, help="passed to make run (its default: 30)")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="sampling after Ready (default 60)")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples (default 2)")
    parser.add_argument("--timeout", type=float, default=2400.0, help="seconds to wait for Ready")
    parser.add_argument("--name", help="results file name (default local_stack_memory[_drift])")
    parser.add_argument("--keep-state", action="store_true", help="keep the temporary state folder")
    args = parser.parse_args()
    name = args.name or ("local_stack_memory_drift" if args.demo_drift else "local_stack_memory")

    from devstack.services import REPO_ROOT

    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"before: {load_before}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-stack-memory-"))
    command = [sys.executable, "-m", "devstack", "--state-dir", str(tmp / "state"), "--free-ports"]
    if args.demo_drift:
        command.append("--demo-drift")
    if args.history_days:
        command += ["--history-days", str(args.history_days)]
    # As a developer's shell would run it: no Airflow settings from this process's environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    began = time.monotonic()
    stack = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = Output(stack.stdout)
    output.start()
    samples: list[dict[str, Any]] = []
    seen_groups: set[int] = set()
    at_ready: dict[str, Any] | None = None
    bounds_at_ready = (0, 0)
    ready_at = None
    try:
        next_sample = time.monotonic()
        while True:
            now = time.monotonic()
            if stack.poll() is not None:
                raise SystemExit(f"make run exited with code {stack.returncode} before it was done; output above")
            if ready_at is None and output.ready.is_set():
                ready_at = now
                at_ready = {"t": now - began, "phase": output.phase, **sample(stack.pid, seen_groups)}
                samples.append(at_ready)
                bounds_at_ready = tree_rss_uss(stack.pid)
                next_sample = now + args.every
            if ready_at is not None and now - ready_at >= args.idle_seconds:
                break
            if ready_at is None and now - began > args.timeout:
                raise SystemExit(f"no '{READY}' after {args.timeout:.0f} s")
            if now >= next_sample:
                samples.append({"t": now - began, "phase": output.phase, **sample(stack.pid, seen_groups)})
                next_sample += args.every
            time.sleep(0.2)
    finally:
        stopping = time.monotonic()
        stack.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            stack.wait(timeout=180)
        except subprocess.TimeoutExpired:
            # The servers run in sessions of their own: the stack's group alone would leave them running.
            for group in [stack.pid, *seen_groups]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            stack.wait()
        stop_seconds = time.monotonic() - stopping
        output.join(timeout=10)
        time.sleep(1)
        left = sorted(g for g in seen_groups if group_alive(g))
        if not args.keep_state:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()

    def total(s: dict[str, Any]) -> int:
        return sum(s[k] for k in SERVERS)

    peak = max(samples, key=total)
    phases: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        phases.setdefault(s["phase"], []).append(s)
    rows = []
    for phase, group in phases.items():
        top = max(group, key=total)
        rows.append(
            {
                "phase": phase,
                "from (s)": group[0]["t"],
                "samples": len(group),
                "peak PSS (GiB)": total(top) / GiB,
                **{f"{k} at that peak (MiB)": top[k] / 2**20 for k in SERVERS},
            }
        )
    reported = next((line for line in output.lines if "The stack uses" in line), "")
    served = [f"{m[1]} v{m[2]}" for line in output.lines if (m := SERVED.match(line))]
    verdict = "PASS" if total(peak) <= TARGET_BYTES else "MISS"
    notes = {
        "peak PSS of the whole stack": f"{total(peak) / GiB:.2f} GiB at {peak['t']:.0f} s ({peak['phase']}); "
        f"target 4 GiB: {verdict}",
        "peak by server": ", ".join(f"{k} {peak[k] / 2**20:,.0f} MiB" for k in SERVERS),
        "each server's own peak": ", ".join(f"{k} {max(s[k] for s in samples) / 2**20:,.0f} MiB" for k in SERVERS),
        "at Ready": (
            f"{total(at_ready) / GiB:.2f} GiB after {at_ready['t']:.0f} s: "
            + ", ".join(f"{k} {at_ready[k] / 2**20:,.0f} MiB" for k in SERVERS)
        )
        if at_ready
        else "not reached",
        "at Ready, RSS / USS of the tree (upper / lower bound)": (
            f"{bounds_at_ready[0] / GiB:.2f} / {bounds_at_ready[1] / GiB:.2f} GiB"
        ),
        "idle with traffic, max / last": (
            f"{max(total(s) for s in phases.get('ready, idling with traffic', [peak])) / GiB:.2f} / "
            f"{total(samples[-1]) / GiB:.2f} GiB over {args.idle_seconds:.0f} s"
        ),
        "make run's own figure": reported.removeprefix("[make run] ") or "not printed",
        "training runs": "; ".join(output.outcomes) or "no outcome printed",
        "served": ", ".join(served) or "no model served",
        "command": " ".join(["python", *command[1:3], "--state-dir <tmp>", *command[5:]]),
        "samples": f"{len(samples)}, every {args.every:.0f} s",
        "Ctrl-C": f"exit code {stack.returncode} after {stop_seconds:.1f} s; process groups left: {left or 'none'}",
        "load before": load_before,
        "load after": load_after,
        "PSS": "shared pages are split among all processes mapping them, on the whole machine: with other stacks "
        "running, the venv's shared libraries are split further and this stack's PSS is a little lower",
    }
    path = publish(name, rows, notes)
    import json

    results = json.loads(path.read_text())
    results["samples"] = [{k: (v / 2**20 if k in SERVERS else v) for k, v in s.items()} for s in samples]
    results["samples_unit"] = "MiB"
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
