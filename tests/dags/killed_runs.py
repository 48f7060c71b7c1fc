"""A DAG run killed with SIGKILL inside one of its tasks, in a process forked from one that has imported Airflow
and the tasks' libraries and built Airflow's in-process execution API already: in a fresh interpreter per kill,
the killed run took 8.6 s, against 1.6-2.5 s forked.

The processes fork from multiprocessing's fork server, a process of its own that never runs a DAG (forking the test
process, after its own `dag.test()` runs, hung the child). Keep this module free of the tests' set-up (it must not
import tests.conftest): the forked child imports it to find its target.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import threading
from pathlib import Path

_forks = multiprocessing.get_context("forkserver")
# A module name, as the fork server wants it; importable from the repository's root, where the tests run (the
# server skips a preload it cannot import, and each child then imports for itself).
_forks.set_forkserver_preload(["tests.dags.fork_server_warm_up"])


def kill_inside(
    dag_file: Path, dag_id: str, task_id: str, delay: float, when: dt.datetime, run_conf: dict, log: Path
) -> int:
    """`dag.test()` of `dag_id` (in `dag_file`) at logical date `when`, with this process's environment, killed
    `delay` seconds after `task_id` starts; its output goes to `log`. Returns the process's exit code (-SIGKILL
    when the kill came)."""
    args = (dict(os.environ), str(dag_file), dag_id, task_id, delay, when, run_conf, str(log))
    process = _forks.Process(target=_run_and_kill, args=args, name=f"killed-in-{task_id}")
    process.start()
    process.join(timeout=600)
    if process.exitcode is None:
        process.kill()
        process.join()
    return process.exitcode


def _run_and_kill(
    env: dict[str, str],
    dag_file: str,
    dag_id: str,
    task_id: str,
    delay: float,
    when: dt.datetime,
    run_conf: dict,
    log: str,
) -> None:
    os.environ.clear()
    os.environ.update(env)
    with open(log, "ab") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=dag_file).dags[dag_id]
    dag.get_task(task_id).on_execute_callback = [
        lambda context: threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL)).start()
    ]
    dag.test(logical_date=when, run_after=when, run_conf=run_conf)
