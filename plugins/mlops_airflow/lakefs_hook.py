"""A thin hook from the Airflow connection `lakefs_default` to a lakeFS client.

airflow-provider-lakeFS does not import on Airflow 3 (it still uses `apply_defaults`), so this project keeps its
own. Connection fields: host (URL of the lakeFS server, e.g. http://127.0.0.1:8000), login (access key id),
password (secret access key); extra: `repository` (default "mlops"), `storage_namespace` (default
"local://<repository>"), `ui_url` (where the lakeFS UI is, when not at host).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

DEFAULT_REPOSITORY = "mlops"


class LakeFSConnectionError(RuntimeError):
    """The lakeFS connection is missing, incomplete, or lakeFS refuses it."""


class LakeFSHook(BaseHook):
    conn_name_attr = "lakefs_conn_id"
    default_conn_name = "lakefs_default"
    conn_type = "lakefs"
    hook_name = "lakeFS"

    def __init__(self, lakefs_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lakefs_conn_id = lakefs_conn_id

    @cached_property
    def _connection(self):
        try:
            return self.get_connection(self.lakefs_conn_id)
        except AirflowNotFoundException:
            raise LakeFSConnectionError(
                f"Airflow connection {self.lakefs_conn_id!r} is not defined: add it to airflow_settings.yaml or set "
                f"AIRFLOW_CONN_{self.lakefs_conn_id.upper()} (host = lakeFS URL, login = access key id, "
                "password = secret access key)."
            ) from None

    @property
    def endpoint(self) -> str:
        conn = self._connection
        if not conn.host:
            raise LakeFSConnectionError(f"Airflow connection {self.lakefs_conn_id!r} has no host (the lakeFS URL).")
        host = conn.host.rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}"
        if conn.port:
            host = f"{host}:{conn.port}"
        return host.removesuffix("/api/v1")

    @property
    def ui_url(self) -> str:
        return str(self._connection.extra_dejson.get("ui_url") or self.endpoint).rstrip("/")

    @property
    def repository_name(self) -> str:
        return str(self._connection.extra_dejson.get("repository") or DEFAULT_REPOSITORY)

    def get_conn(self):
        """A checked `lakefs.Client`: a wrong URL or key fails here in one sentence."""
        from include.mlops import lakefs_repository

        conn = self._connection
        if not conn.login or not conn.password:
            raise LakeFSConnectionError(
                f"Airflow connection {self.lakefs_conn_id!r} needs login (access key id) and password "
                "(secret access key)."
            )
        try:
            return lakefs_repository.connect(f"{self.endpoint}/api/v1", conn.login, conn.password)
        except lakefs_repository.LakeFSUnavailable as exc:
            raise LakeFSConnectionError(f"Airflow connection {self.lakefs_conn_id!r}: {exc}.") from exc

    def get_repository(self, name: str | None = None):
        """The repository (the connection's by default), created on first use so a fresh stack just works."""
        from include.mlops import lakefs_repository

        name = name or self.repository_name
        namespace = self._connection.extra_dejson.get("storage_namespace") or f"local://{name}"
        return lakefs_repository.ensure_repository(self.get_conn(), name, namespace)

    def commit_url(self, repository: str, commit_id: str) -> str:
        from include.mlops import lakefs_repository

        return lakefs_repository.commit_ui_url(self.ui_url, repository, commit_id)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn()
        except LakeFSConnectionError as exc:
            return False, str(exc)
        return True, f"lakeFS at {self.endpoint} accepted the credentials"
