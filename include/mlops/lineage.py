"""What ties a model to its data and code: lakeFS URIs of the exact commit, and the version of this project.

`LakeFSDatasetSource` lets MLflow record a dataset input whose source is `lakefs://<repo>/<commit>/<path>`, so
a run's "Datasets" section points at immutable data.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import register_dataset_source

from include.mlops.naming import parse_lakefs_uri

PROJECT_ROOT = Path(__file__).resolve().parents[2]
_SOURCE_FOLDERS = ("include", "dags", "plugins")


class LakeFSDatasetSource(DatasetSource):
    """A dataset in lakeFS at a commit: `lakefs://<repository>/<commit id>/<path>`."""

    def __init__(self, uri: str):
        parse_lakefs_uri(uri)
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "lakefs"

    def load(self, dst_path: str | None = None) -> str:
        """Download the object to `dst_path` (a temporary folder by default) with the lakeFS client configured
        by the environment (LAKECTL_* or ~/.lakectl.yaml, as `lakefs.Client()` reads them)."""
        import tempfile

        import lakefs

        repository, ref, path = parse_lakefs_uri(self.uri)
        target = Path(dst_path or tempfile.mkdtemp(prefix="lakefs-dataset-")) / Path(path).name
        with lakefs.repository(repository).ref(ref).object(path).reader(mode="rb") as reader:
            target.write_bytes(reader.read())
        return str(target)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("lakefs://")

    @classmethod
    def _resolve(cls, raw_source: Any) -> LakeFSDatasetSource:
        return cls(raw_source)

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> LakeFSDatasetSource:
        return cls(source_dict["uri"])


register_dataset_source(LakeFSDatasetSource)


@cache
def code_version() -> str:
    """The project's git commit (with `-dirty` when its sources have uncommitted changes), or, without git
    (a container image), a hash of the source files, prefixed `sha256:`."""
    if override := os.environ.get("MLOPS_CODE_VERSION"):
        return override
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--", *_SOURCE_FOLDERS)
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        digest = hashlib.sha256()
        for folder in _SOURCE_FOLDERS:
            for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
                digest.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
                digest.update(path.read_bytes())
        return "sha256:" + digest.hexdigest()[:16]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
