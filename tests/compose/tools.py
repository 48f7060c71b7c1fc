"""Binaries from Debian's packages that the compose tests run (promtool and Prometheus, package `prometheus`;
alertmanager and amtool, package `prometheus-alertmanager`).

Found on PATH, or unpacked from the package into .local/tools/<package>/ on first use. Unpacked with
`apt-get download` + `dpkg-deb -x` rather than installed with `apt-get install`: the package's install script
starts a Prometheus daemon on 0.0.0.0:9090, which nothing here wants running; the binaries need nothing else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from devstack.processes import ManagedProcess, free_port, start_process, wait_until_healthy
from tests.conftest import REPO_ROOT

TOOLS = REPO_ROOT / ".local" / "tools"


def debian_binary(name: str, package: str) -> Path:
    """`name` from PATH, or from Debian's `package` unpacked under .local/tools; skipped only without apt."""
    if found := shutil.which(name):
        return Path(found)
    binary = TOOLS / package / "usr" / "bin" / name
    if binary.exists():
        return binary
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip(f"{name} is not on PATH, and without apt-get and dpkg-deb Debian's {package} cannot be fetched")
    with tempfile.TemporaryDirectory(prefix=f"{package}-") as download:
        result = _run(["apt-get", "download", package], Path(download))
        if result.returncode != 0 and os.geteuid() == 0:
            # A machine whose package lists were never fetched knows no package yet.
            _run(["apt-get", "update"], Path(download))
            result = _run(["apt-get", "download", package], Path(download))
        assert result.returncode == 0, f"apt-get download {package} failed:\n{result.stdout}\n{result.stderr}"
        (deb,) = Path(download).glob(f"{package}_*.deb")
        # Unpacked beside its final place and renamed, so that an interrupted unpack is never taken as done.
        TOOLS.mkdir(parents=True, exist_ok=True)
        unpacking = Path(tempfile.mkdtemp(prefix=f"{package}-", dir=TOOLS))
        result = _run(["dpkg-deb", "-x", str(deb), str(unpacking)], Path(download))
        assert result.returncode == 0, f"dpkg-deb -x {deb.name} failed:\n{result.stderr}"
        shutil.rmtree(TOOLS / package, ignore_errors=True)
        unpacking.rename(TOOLS / package)
    assert binary.exists(), f"Debian's {package} has no usr/bin/{name}"
    return binary


def start_debian_server(
    name: str, package: str, settings: dict, folder: Path, storage_flag: str, *flags: str, share: bool = False
) -> ManagedProcess:
    """Debian's `name` (Prometheus, Alertmanager) on `settings` written into `folder`, its data there too, on a
    free loopback port; returned once it is ready. `share`: it reads files of its package's usr/share/."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yml").write_text(yaml.safe_dump(settings))
    port = free_port()
    binary = debian_binary(name, package)
    command = [
        str(binary),
        f"--config.file={folder / f'{name}.yml'}",
        f"{storage_flag}={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    process = start_process(
        name,
        with_package_share(command, package) if share and binary.is_relative_to(TOOLS) else command,
        folder / f"{name}.log",
        url=f"http://127.0.0.1:{port}",
    )
    try:
        wait_until_healthy(process, f"{process.url}/-/ready", timeout=60)
    except BaseException:
        process.stop()
        raise
    return process


def with_package_share(command: list[str], package: str) -> list[str]:
    """`command` seeing the unpacked package's usr/share/ as if it were installed. Debian's alertmanager reads its
    default templates from /usr/share/prometheus/alertmanager/, a path fixed at build time: the command runs in a
    mount namespace of its own, where /usr/share shows the package's files over the system's (a read-only
    overlay that no other process sees, gone with the process)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip(f"{package} reads /usr/share/prometheus: needs it installed, or root and unshare to overlay it")
    share = TOOLS / package / "usr" / "share"
    overlay = f'mount -t overlay overlay -o lowerdir={share}:/usr/share /usr/share && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", overlay, "sh", *command]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
