"""The stack's supervisor restarts what may restart, stops on what may not, and gives up on a crash loop."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from devstack import supervisor as supervision
from devstack.processes import start_process

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def _sleeper(tmp_path: Path, name: str):
    return lambda: start_process(name, SLEEPER, tmp_path / f"{name}.log")


def _wait_dead(process) -> None:
    deadline = time.monotonic() + 10
    while process.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_restartable_server_comes_back(tmp_path: Path):
    said: list[str] = []
    stack = supervision.Supervisor(say=said.append)
    first = stack.start("serving", _sleeper(tmp_path, "serving"), restart=True)
    try:
        first.popen.kill()
        _wait_dead(first)
        stack.check()
        (second,) = stack.processes
        assert second.pid != first.pid and second.is_running()
        assert said[0].startswith("serving exited (code -9); starting it again")
    finally:
        stack.stop_all()


def test_a_server_that_may_not_restart_stops_the_stack(tmp_path: Path):
    stack = supervision.Supervisor(say=lambda _: None)
    process = stack.start("airflow", _sleeper(tmp_path, "airflow"))
    try:
        process.popen.kill()
        _wait_dead(process)
        with pytest.raises(supervision.ServerFailed, match="airflow exited"):
            stack.check()
    finally:
        stack.stop_all()


def test_a_crash_loop_is_given_up(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(supervision, "MAX_RESTARTS", 2)
    crash = lambda: start_process("serving", [sys.executable, "-c", "raise SystemExit(4)"], tmp_path / "c.log")  # noqa: E731
    stack = supervision.Supervisor(say=lambda _: None)
    stack.start("serving", crash, restart=True)
    with pytest.raises(supervision.ServerFailed, match="exited 2 times"):
        for _ in range(20):
            _wait_dead(stack.processes[0])
            stack.check()
    stack.stop_all()
