"""Start and stop the local servers that `make run` and the tests use.

Every server runs in a process group of its own (``start_new_session``) so that stopping it also stops the
children it forked: `airflow scheduler` (LocalExecutor's task workers) and `mlflow server` both fork workers,
and killing the parent alone leaves them running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    """A server started by us, in its own process group, with its output in a log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path
    url: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the whole group, then SIGKILL what is left after `timeout` seconds."""
        if self._stopped:
            return
        self._stopped = True
        pgid = self.popen.pid  # the leader's pid is the group id (start_new_session)
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # Children may outlive the leader; the group id stays valid while any member lives.
        deadline = time.monotonic() + timeout
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
        if self.popen.poll() is None:
            self.popen.wait(timeout=5)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_process(
    name: str,
    command: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    url: str = "",
) -> ManagedProcess:
    """Start `command` in a new process group, its stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(command),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    return ManagedProcess(name=name, popen=popen, log_path=log_path, url=url)


class StartupError(RuntimeError):
    """A server did not become healthy in time."""


def wait_until_healthy(process: ManagedProcess, health_url: str, timeout: float = 120.0) -> None:
    """Poll `health_url` until it answers 2xx; fail early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if not process.is_running():
            raise StartupError(
                f"{process.name} exited with code {process.popen.returncode} before it was healthy; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        try:
            with urllib.request.urlopen(health_url, timeout=5) as response:
                if 200 <= response.status < 300:
                    return
                last_error = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.25)
    raise StartupError(
        f"{process.name} was not healthy at {health_url} after {timeout:.0f} s ({last_error}); "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


def tree_pss_bytes(root_pid: int) -> int:
    """Memory of a process and all its descendants, as PSS (shared pages split among their sharers), so that
    forked workers are not counted once per worker."""
    import psutil

    root = psutil.Process(root_pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass  # exited between the listing and the reading
    return total
