"""Read `airflow_settings.yaml` (the Astro CLI's format) and load it into an Airflow metadata database.

The file is the one source of connections, variables and pools. Values may be written `${NAME}` or
`${NAME:-default}`: they are filled from the environment here, so that ports and credentials of a stack come
from one place (`make run`'s choices, or compose's `.env`) and no secret has to be committed.

    python -m include.bootstrap.airflow_settings [airflow_settings.yaml] [--airflow AIRFLOW]

loads the file with the process environment and imports it into the metadata database that environment
configures (compose's airflow-init runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def venv_bin(name: str) -> str:
    """A console script of the running interpreter's environment (the project's .venv under make)."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


class SettingsError(ValueError):
    """airflow_settings.yaml is malformed, or names a variable that is not set."""


@dataclass(frozen=True)
class ConnectionSetting:
    conn_id: str
    conn_type: str
    host: str = ""
    schema: str = ""
    login: str = ""
    password: str = ""
    port: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_airflow_json(self) -> dict[str, Any]:
        """The form `airflow connections import` and `AIRFLOW_CONN_<ID>` take."""
        data: dict[str, Any] = {"conn_type": self.conn_type}
        for key in ("host", "schema", "login", "password"):
            if value := getattr(self, key):
                data[key] = value
        if self.port is not None:
            data["port"] = self.port
        if self.extra:
            data["extra"] = json.dumps(self.extra)
        return data


@dataclass(frozen=True)
class AirflowSettings:
    connections: list[ConnectionSetting]
    variables: dict[str, str]
    pools: dict[str, tuple[int, str]]

    def connection(self, conn_id: str) -> ConnectionSetting:
        for conn in self.connections:
            if conn.conn_id == conn_id:
                return conn
        raise SettingsError(f"airflow_settings.yaml has no connection {conn_id!r}")

    def as_environment(self) -> dict[str, str]:
        """The same settings as AIRFLOW_CONN_* / AIRFLOW_VAR_* variables (pools have no such form)."""
        env = {f"AIRFLOW_CONN_{c.conn_id.upper()}": json.dumps(c.as_airflow_json()) for c in self.connections}
        env.update({f"AIRFLOW_VAR_{name.upper()}": value for name, value in self.variables.items()})
        return env


def load(path: Path, environ: Mapping[str, str] | None = None) -> AirflowSettings:
    """Parse `path`, filling `${NAME:-default}` from `environ` (the process environment by default)."""
    environ = os.environ if environ is None else environ
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"{path}: cannot be read as YAML: {exc}") from exc
    section = _expand(raw.get("airflow") or {}, environ, path)
    if not isinstance(section, dict):
        raise SettingsError(f"{path}: 'airflow' must be a mapping")
    return AirflowSettings(
        connections=[_connection(item, path, i) for i, item in enumerate(section.get("connections") or [])],
        variables={
            _required(item, "variable_name", path, f"variables[{i}]"): str(item.get("variable_value") or "")
            for i, item in enumerate(section.get("variables") or [])
        },
        pools={
            _required(item, "pool_name", path, f"pools[{i}]"): (
                int(_required(item, "pool_slot", path, f"pools[{i}]")),
                str(item.get("pool_description") or ""),
            )
            for i, item in enumerate(section.get("pools") or [])
        },
    )


def import_into_airflow(settings: AirflowSettings, airflow_bin: str, env: Mapping[str, str]) -> None:
    """Write the settings into the metadata DB with Airflow's own import commands (overwriting)."""
    with tempfile.TemporaryDirectory(prefix="airflow-settings-") as tmp:
        folder = Path(tmp)
        commands: list[list[str]] = []
        if settings.connections:
            connections = folder / "connections.json"
            connections.write_text(json.dumps({c.conn_id: c.as_airflow_json() for c in settings.connections}))
            commands.append([airflow_bin, "connections", "import", "--overwrite", str(connections)])
        if settings.variables:
            variables = folder / "variables.json"
            variables.write_text(json.dumps(settings.variables))
            commands.append(
                [airflow_bin, "variables", "import", "--action-on-existing-key", "overwrite", str(variables)]
            )
        if settings.pools:
            pools = folder / "pools.json"
            pools.write_text(
                json.dumps(
                    {name: {"slots": slots, "description": text} for name, (slots, text) in settings.pools.items()}
                )
            )
            commands.append([airflow_bin, "pools", "import", str(pools)])
        for command in commands:
            result = subprocess.run(command, env=dict(env), capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SettingsError(f"`{' '.join(command[1:3])}` failed:\n{result.stdout}\n{result.stderr}")


def _expand(value: Any, environ: Mapping[str, str], path: Path) -> Any:
    if isinstance(value, str):

        def fill(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ and environ[name] != "":
                return environ[name]
            if default is not None:
                return default
            raise SettingsError(f"{path}: ${{{name}}} is used but the environment variable {name} is not set")

        return _PLACEHOLDER.sub(fill, value)
    if isinstance(value, list):
        return [_expand(v, environ, path) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, environ, path) for k, v in value.items()}
    return value


def _required(item: Mapping[str, Any], key: str, path: Path, where: str) -> Any:
    if not isinstance(item, Mapping) or item.get(key) in (None, ""):
        raise SettingsError(f"{path}: airflow.{where} needs '{key}'")
    return item[key]


def _connection(item: Mapping[str, Any], path: Path, index: int) -> ConnectionSetting:
    where = f"connections[{index}]"
    extra = item.get("conn_extra") or {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path}: airflow.{where}.conn_extra is not valid JSON: {exc}") from exc
    port = item.get("conn_port")
    try:
        port_number = int(port) if port not in (None, "") else None
    except ValueError:
        raise SettingsError(f"{path}: airflow.{where}.conn_port is not a number: {port!r}") from None
    return ConnectionSetting(
        conn_id=_required(item, "conn_id", path, where),
        conn_type=_required(item, "conn_type", path, where),
        host=str(item.get("conn_host") or ""),
        schema=str(item.get("conn_schema") or ""),
        login=str(item.get("conn_login") or ""),
        password=str(item.get("conn_password") or ""),
        port=port_number,
        extra=dict(extra),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m include.bootstrap.airflow_settings",
        description="Import airflow_settings.yaml, ${...} filled from the environment, into Airflow's metadata DB.",
    )
    parser.add_argument("file", nargs="?", type=Path, default=Path("airflow_settings.yaml"))
    parser.add_argument("--airflow", help="the airflow command (default: the one beside this Python, else PATH's)")
    args = parser.parse_args(argv)
    try:
        settings = load(args.file)
        import_into_airflow(settings, args.airflow or venv_bin("airflow"), os.environ)
    except SettingsError as exc:
        print(f"airflow_settings: {exc}", file=sys.stderr)
        return 1
    print(
        f"imported {len(settings.connections)} connections, {len(settings.variables)} variables and "
        f"{len(settings.pools)} pools from {args.file}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
