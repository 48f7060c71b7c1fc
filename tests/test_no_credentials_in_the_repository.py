"""No credential is committed: every file git tracks is scanned for keys, tokens and the files that hold the
generated secrets of a stack (compose's .env, make run's credentials.json, Airflow's passwords file). The
compose file, the Helm chart and .env.example have checks of their own (tests/compose, tests/deploy)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.conftest import REPO_ROOT

# What a leaked credential looks like: a private key, an AWS access key id, a JWT, a Fernet key, a URL with
# a password in it.
PATTERNS = {
    "a private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a JWT": re.compile(r"\beyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]{10,}"),
    "a Fernet key": re.compile(r"(?<![\w-])[\w-]{43}=(?![\w=])"),
    "a URL with a password": re.compile(r"\b[a-z][a-z0-9+]*://[^\s:/@'\"]+:(?!\$\{)(?P<password>[^\s@/'\"$]{6,})@"),
}
SECRET_FILES = {".env", "credentials.json", "passwords.json"}
# Placeholders in examples and the made-up passwords tests write into URLs on purpose (a test's own fake
# credential, to show it is found where it must not be), and the local Postgres' well-known default.
PLACEHOLDERS = {"password", "PASSWORD", "postgres", "s3cret", "s3cr3t"}


def findings(text: str) -> list[str]:
    """What in `text` looks like a credential, named."""
    found = []
    for name, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if match.groupdict().get("password") not in PLACEHOLDERS:
                found.append(f"{name}: {match.group(0)[:40]}")
    return found


def tracked_files() -> list[str]:
    return subprocess.run(
        ["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()


def test_no_tracked_file_holds_a_credential():
    files = tracked_files()
    assert len(files) > 100
    committed_secret_files = [f for f in files if f.rsplit("/", 1)[-1] in SECRET_FILES]
    assert committed_secret_files == []
    leaks = {}
    for name in files:
        path = REPO_ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # binary (images, parquet fixtures)
        if found := findings(text):
            leaks[name] = found
    assert leaks == {}


# The samples are put together at run time: written whole, they would be findings in this file.
@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("-----BEGIN OPENSSH " + "PRIVATE KEY-----\nb3Blbn...", "a private key"),
        ("aws_access_key_id = AKIA" + "IOSFODNN7EXAMPL3", "an AWS access key id"),
        (
            "Authorization: Bearer eyJ" + "hbGciOiJIUzI1NiJ9.eyJ" + "zdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlc2lnbmF0dXJl",
            "a JWT",
        ),
        ("AIRFLOW__CORE__FERNET_KEY: 81HqDtbqAywKSOumSha3" + "BhWNOdQ26slT6K0YaZeZyPs=", "a Fernet key"),
        ("sql_alchemy_conn = postgresql://airflow:Zq8vR2" + "mKp4@db:5432/airflow", "a URL with a password"),
    ],
)
def test_a_committed_credential_is_found(text: str, named: str):
    assert [f.split(":")[0] for f in findings(text)] == [named]


@pytest.mark.parametrize(
    "text",
    [
        "redis://:${REDIS_PASSWORD}@redis:6379/0",
        "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
        "AIRFLOW__CORE__FERNET_KEY: ${AIRFLOW_FERNET_KEY:?run make env}",
        "https://github.com/apache/airflow",
    ],
)
def test_references_to_secrets_are_not_findings(text: str):
    assert findings(text) == []
