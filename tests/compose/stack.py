"""docker-compose.yaml read the way compose reads it (anchors merged, `${...}` filled from an env file), and the
checks on it that need more than one line, kept apart so that tests can feed them broken copies."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from devstack import compose_env
from tests.conftest import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
PROJECT_BUILD = {"context": ".", "dockerfile": "Dockerfile"}

_REFERENCE = r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::[-?][^}]*)?\}"
_ONLY_A_REFERENCE = re.compile(rf"^{_REFERENCE}$")
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([-?])([^}]*))?\}")
# Variable names that hold a secret; *_FILE names a file that holds one (a path, not a secret).
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|ACCESS_KEY|_AUTH$")
_URL_CREDENTIALS = re.compile(r"://[^:/@\s]*:(?P<password>[^@\s]+)@")
_SECRET_OPTION = re.compile(r"^--?[\w-]*(pass|password|secret|token)[\w-]*$", re.IGNORECASE)


def load(text: str | None = None) -> dict[str, Any]:
    """The compose file with its YAML anchors and `<<` merges resolved, `${...}` left as written."""
    return yaml.safe_load(COMPOSE_FILE.read_text() if text is None else text)


def example_env() -> dict[str, str]:
    return compose_env.env_variables(ENV_EXAMPLE.read_text())


def generated_env() -> dict[str, str]:
    """A .env as `make env` writes it: every secret random, so that two secrets wired up wrongly differ."""
    return compose_env.env_variables(compose_env.generate(ENV_EXAMPLE.read_text()))


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """`value` as compose passes it to a container: `${NAME}`, `${NAME:-default}`, `${NAME:?error}` filled from
    `env`, and `$$` turned into `$`."""

    def fill(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, kind, argument = match.groups()
        if env.get(name):
            return env[name]
        if kind == "-":
            return argument
        raise KeyError(f"${{{name}}} is not set")

    return _INTERPOLATION.sub(fill, value)


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, whether written as a mapping or as a list of NAME=value."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's dependencies and the condition of each (`service_started` when none is written)."""
    dependencies = service.get("depends_on") or {}
    if isinstance(dependencies, list):
        return dict.fromkeys(dependencies, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in dependencies.items()}


def one_shots(compose: Mapping[str, Any]) -> set[str]:
    """Services another service waits to see complete: jobs that run once and exit."""
    return {
        name
        for service in compose["services"].values()
        for name, condition in depends_on(service).items()
        if condition == "service_completed_successfully"
    }


def airflow_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services that run an Airflow component (they hold Airflow's metadata database setting)."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in environment(service)
    }


def container_ports(service: Mapping[str, Any]) -> set[int]:
    """The container side of a service's published ports (`[ip:]host:container`)."""
    return {int(str(port).rsplit(":", 1)[-1].split("/")[0]) for port in service.get("ports") or []}


def strings(value: Any) -> Iterator[str]:
    """Every string in a piece of YAML, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def written_secrets(compose: Mapping[str, Any]) -> list[str]:
    """Places where a secret is written into the compose file rather than taken from .env, one line each."""
    problems = []
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            if _SECRET_NAME.search(key) and not key.endswith("_FILE") and not _ONLY_A_REFERENCE.match(value):
                problems.append(f"{name}: environment {key} is {value!r}, not a ${{VARIABLE}} from .env")
        for text in strings(service):
            for match in _URL_CREDENTIALS.finditer(text):
                if not _ONLY_A_REFERENCE.match(match.group("password")):
                    problems.append(f"{name}: a URL with a password written in it: {text!r}")
        for command in (service.get("command"), service.get("entrypoint")):
            arguments = command.split() if isinstance(command, str) else list(command or [])
            for option, value in itertools.pairwise([*arguments, ""]):
                option, _, inline = str(option).partition("=")
                if _SECRET_OPTION.match(option) and not _ONLY_A_REFERENCE.match(inline or str(value)):
                    problems.append(f"{name}: {option} is given a written value")
    return problems


def airflow_settings_variables() -> dict[str, set[str]]:
    """For each connection of airflow_settings.yaml, the environment variables its fields are filled from."""
    raw = yaml.safe_load((REPO_ROOT / "airflow_settings.yaml").read_text())
    pattern = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
    return {
        connection["conn_id"]: {name for text in strings(connection) for name in pattern.findall(text)}
        for connection in raw["airflow"]["connections"]
    }
