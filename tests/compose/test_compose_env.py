"""`make env` (devstack/compose_env.py): .env from .env.example with random secrets, never overwritten."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from devstack import compose_env
from tests.compose import stack
from tests.conftest import REPO_ROOT


def make_env(tmp_path: Path, example: Path = stack.ENV_EXAMPLE) -> subprocess.CompletedProcess:
    """`make env`'s command, on a .env in `tmp_path` (the Makefile runs it on the repository's)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "devstack.compose_env",
            "--example",
            str(example),
            "--env",
            str(tmp_path / ".env"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=60,
    )


def test_make_env_writes_random_secrets_readable_by_its_owner_only(tmp_path: Path):
    result = make_env(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "random secrets" in result.stdout
    env_file = tmp_path / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = compose_env.env_variables(env_file.read_text())
    example = stack.example_env()
    assert env.keys() == example.keys()
    for name, value in example.items():
        if value == compose_env.PLACEHOLDER:
            assert value != env[name] and len(env[name]) >= 20, name
        else:
            assert env[name] == value, f"{name}: a setting that is not a secret is copied as it is"
    Fernet(env["AIRFLOW_FERNET_KEY"])  # raises unless a valid key
    assert env["LAKEFS_ACCESS_KEY_ID"].startswith("AKIA")
    # Every secret differs from every other, and from those of another run.
    secrets = [env[name] for name, value in example.items() if value == compose_env.PLACEHOLDER]
    assert len(set(secrets)) == len(secrets)
    other = tmp_path / "other"
    other.mkdir()
    assert make_env(other).returncode == 0
    again = compose_env.env_variables((other / ".env").read_text())
    assert not set(secrets) & set(again.values())


def test_the_env_file_fills_every_variable_compose_uses(tmp_path: Path):
    assert make_env(tmp_path).returncode == 0
    env = compose_env.env_variables((tmp_path / ".env").read_text())
    compose_text = stack.COMPOSE_FILE.read_text()
    assert compose_env.missing_variables(compose_text, (tmp_path / ".env").read_text()) == []
    # ... with values compose accepts: every `${...}` of the file interpolates.
    for text in stack.strings(stack.load()):
        stack.interpolate(text, env)


def test_make_env_leaves_an_existing_env_as_it_is_and_says_so(tmp_path: Path):
    assert make_env(tmp_path).returncode == 0
    before = (tmp_path / ".env").read_text()
    result = make_env(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "exists; left as it is" in result.stdout
    assert (tmp_path / ".env").read_text() == before


def test_an_existing_env_that_lacks_a_variable_is_named_and_kept(tmp_path: Path):
    assert make_env(tmp_path).returncode == 0
    env_file = tmp_path / ".env"
    kept = "".join(line + "\n" for line in env_file.read_text().splitlines() if not line.startswith("REDIS_PASSWORD="))
    env_file.write_text(kept)
    result = make_env(tmp_path)
    assert result.returncode == 1
    assert "lacks REDIS_PASSWORD" in result.stderr and "left as it is" in result.stderr
    assert env_file.read_text() == kept


def test_an_env_example_without_a_variable_compose_uses_fails_naming_it(tmp_path: Path):
    example = tmp_path / ".env.example"
    example.write_text(
        "".join(line + "\n" for line in stack.ENV_EXAMPLE.read_text().splitlines() if "MLOPS_ADMIN_TOKEN=" not in line)
    )
    result = make_env(tmp_path, example)
    assert result.returncode == 1
    assert "does not name MLOPS_ADMIN_TOKEN, which docker-compose.yaml uses" in result.stderr
    assert not (tmp_path / ".env").exists()
    # The static check of the repository's own files says the same.
    assert compose_env.missing_variables(stack.COMPOSE_FILE.read_text(), example.read_text()) == ["MLOPS_ADMIN_TOKEN"]


@pytest.mark.parametrize(
    ("compose_text", "variables"),
    [
        ("a: ${A}\nb: ${B:-x}\nc: ${C:?run make env}\nd: $D\n", {"A", "B", "C", "D"}),
        # $$ is compose's escape: the container's shell reads the variable, compose does not.
        ('test: ["CMD-SHELL", "pg_isready -U $${POSTGRES_USER}"]\nx: $$HOSTNAME\n', set()),
        ("x: $$${A}\n", {"A"}),
        ("# a comment naming ${NOT_READ}\nx: 1\n", set()),
    ],
)
def test_compose_variables_are_read_as_compose_reads_them(compose_text: str, variables: set[str]):
    assert compose_env.compose_variables(compose_text) == variables


def test_a_malformed_env_file_is_named_by_line():
    with pytest.raises(compose_env.EnvFileError, match="line 2 is not NAME=value"):
        compose_env.env_variables("A=1\nthis is not an assignment\n")


def test_env_is_ignored_by_git_and_the_makefile_has_the_target():
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, ".env must be in .gitignore"
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO_ROOT).returncode == 1
    dry_run = subprocess.run(["make", "-n", "env"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert dry_run.returncode == 0 and "-m devstack.compose_env" in dry_run.stdout
