"""`make env`: the `.env` that docker compose reads, made from `.env.example` with random secrets.

`.env.example` names every variable docker-compose.yaml uses, each with a comment; a value of `change-me` marks
a secret. `make env` copies the file to `.env` (readable by its owner only) with every `change-me` replaced by a
random value of the kind the variable needs, and leaves an existing `.env` as it is: its secrets are already in
the volumes of a stack that ran with it (Postgres keeps the password it was initialised with).

    python -m devstack.compose_env [--example .env.example] [--env .env] [--compose docker-compose.yaml]

Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import secrets
import sys
from pathlib import Path

PLACEHOLDER = "change-me"
REPO_ROOT = Path(__file__).resolve().parents[1]

# `${NAME}`, `${NAME:-default}`, `${NAME:?message}` and `$NAME`, but not `$$NAME` (compose's escape for a `$`
# that the container's shell reads).
_COMPOSE_VARIABLE = re.compile(r"(?<!\$)(?:\$\$)*\$(?:\{([A-Za-z_][A-Za-z0-9_]*)|([A-Za-z_][A-Za-z0-9_]*))")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)$")


class EnvFileError(ValueError):
    """`.env.example` (or `.env`) does not name a variable docker-compose.yaml uses, or is malformed."""


def compose_variables(compose_text: str) -> set[str]:
    """The variables docker-compose.yaml interpolates (outside comment lines, which compose does not read)."""
    code = "\n".join(line for line in compose_text.splitlines() if not line.lstrip().startswith("#"))
    return {braced or bare for braced, bare in _COMPOSE_VARIABLE.findall(code)}


def env_variables(env_text: str) -> dict[str, str]:
    """`NAME=value` lines of an env file, in order; comments and blank lines are skipped."""
    variables: dict[str, str] = {}
    for number, line in enumerate(env_text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ASSIGNMENT.match(line)
        if not match:
            raise EnvFileError(f"line {number} is not NAME=value: {line!r}")
        variables[match.group(1)] = match.group(2).strip()
    return variables


def missing_variables(compose_text: str, env_text: str) -> list[str]:
    """The variables docker-compose.yaml uses that an env file does not name, sorted."""
    return sorted(compose_variables(compose_text) - set(env_variables(env_text)))


def secret_for(name: str) -> str:
    """A random value for `name`, of the form its consumer needs."""
    if name.endswith("FERNET_KEY"):
        # What cryptography's Fernet.generate_key() returns: 32 random bytes, url-safe base64.
        return base64.urlsafe_b64encode(os.urandom(32)).decode()
    if name.endswith("ACCESS_KEY_ID"):
        # The shape of an AWS access key id, which lakeFS and S3 clients expect.
        return "AKIA" + secrets.token_hex(8).upper()
    # Hex: safe inside the URLs compose builds from these (postgresql://user:password@...), and never starts
    # with a "-" that a command line would read as an option.
    return secrets.token_hex(24)


def generate(example_text: str) -> str:
    """`example_text` with every `NAME=change-me` given a random value; everything else kept as written."""
    lines = []
    for line in example_text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match.group(2).strip() == PLACEHOLDER:
            line = f"{match.group(1)}={secret_for(match.group(1))}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def make_env(example: Path, env: Path, compose: Path) -> str:
    """Write `env` from `example` unless it exists; returns what was done, in one sentence for the user."""
    example_text = example.read_text()
    if missing := missing_variables(compose.read_text(), example_text):
        raise EnvFileError(f"{example} does not name {', '.join(missing)}, which {compose.name} uses")
    if env.exists():
        if stale := missing_variables(compose.read_text(), env.read_text()):
            raise EnvFileError(
                f"{env} exists and was left as it is, but lacks {', '.join(stale)} (see {example}): add them, "
                f"or remove {env} to generate a new one (a new one cannot open volumes made with the old secrets)"
            )
        return f"{env} exists; left as it is (remove it to generate a new one)"
    # Created readable by its owner only, before anything secret is written into it.
    descriptor = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(generate(example_text))
    generated = sum(1 for value in env_variables(example_text).values() if value == PLACEHOLDER)
    return f"wrote {env} with {generated} random secrets from {example}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make env", description=__doc__.splitlines()[0])
    parser.add_argument("--example", type=Path, default=REPO_ROOT / ".env.example")
    parser.add_argument("--env", type=Path, default=REPO_ROOT / ".env")
    parser.add_argument("--compose", type=Path, default=REPO_ROOT / "docker-compose.yaml")
    args = parser.parse_args(argv)
    try:
        print(make_env(args.example, args.env, args.compose))
    except (EnvFileError, OSError) as exc:
        print(f"make env: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
