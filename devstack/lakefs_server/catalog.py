"""The catalog: every operation of the server, grouped by what it works on."""

from __future__ import annotations

from pathlib import Path

from devstack.lakefs_server.blobs import BlobStore
from devstack.lakefs_server.db import Database
from devstack.lakefs_server.objects import ObjectOperations
from devstack.lakefs_server.repositories import RepositoryOperations
from devstack.lakefs_server.versioning import VersionOperations


class Catalog(RepositoryOperations, ObjectOperations, VersionOperations):
    """Repositories, refs, objects and versions, stored under one data directory."""


def open_catalog(data_dir: Path) -> Catalog:
    data_dir.mkdir(parents=True, exist_ok=True)
    return Catalog(Database(data_dir / "lakefs.sqlite3"), BlobStore(data_dir))
