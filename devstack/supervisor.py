"""Keep the local stack's servers running: a server that may restart is started again when it exits.

`make run` checks its servers every second. The model service restarts (it comes back serving the model its
pointer file names); the others stop the stack, since they hold state a blind restart could hide a fault in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from devstack.processes import ManagedProcess, StartupError

# A server that keeps dying is not restarted forever: this many restarts per window, then the stack stops.
MAX_RESTARTS = 5
RESTART_WINDOW_SECONDS = 300.0


class ServerFailed(RuntimeError):
    """A server exited and may not (or may no longer) be restarted."""


@dataclass
class Supervised:
    name: str
    start: Callable[[], ManagedProcess]
    restart: bool
    process: ManagedProcess | None = None
    restarts: list[float] = field(default_factory=list)


class Supervisor:
    def __init__(self, say: Callable[[str], None] = print):
        self._servers: list[Supervised] = []
        self._say = say

    def start(self, name: str, start: Callable[[], ManagedProcess], restart: bool = False) -> ManagedProcess:
        server = Supervised(name, start, restart)
        server.process = start()
        self._servers.append(server)
        return server.process

    @property
    def processes(self) -> list[ManagedProcess]:
        return [s.process for s in self._servers if s.process is not None]

    def check(self) -> None:
        """Restart what exited and may restart; raise `ServerFailed` for anything else that exited."""
        for server in self._servers:
            process = server.process
            if process is None or process.is_running():
                continue
            code = process.popen.returncode
            if not server.restart:
                raise ServerFailed(f"{server.name} exited (code {code}); see {process.log_path}")
            now = time.monotonic()
            server.restarts = [t for t in server.restarts if now - t < RESTART_WINDOW_SECONDS]
            if len(server.restarts) >= MAX_RESTARTS:
                window = f"{RESTART_WINDOW_SECONDS:.0f} s"
                raise ServerFailed(f"{server.name} exited {MAX_RESTARTS} times in {window}; see {process.log_path}")
            server.restarts.append(now)
            self._say(f"{server.name} exited (code {code}); starting it again")
            process.stop()
            try:
                server.process = server.start()
            except StartupError as error:
                raise ServerFailed(f"{server.name} did not come back: {error}") from error
            self._say(f"{server.name} is back at {server.process.url} (pid {server.process.pid})")

    def stop_all(self) -> None:
        for server in reversed(self._servers):
            if server.process is not None:
                self._say(f"stopping {server.name} (pid {server.process.pid}) ...")
                server.process.stop()
