"""What the server stores: repositories, commits and the entries (objects) of trees and staging areas."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Entry:
    """One object as a tree or staging area holds it; equal entries are the same object version."""

    address: str  # the blob holding the content
    checksum: str
    size: int
    mtime: int
    content_type: str
    metadata: Mapping[str, str] = field(default_factory=dict)

    def identity(self) -> str:
        """A stable text form, hashed into the id of a tree."""
        meta = json.dumps(dict(self.metadata), sort_keys=True, separators=(",", ":"))
        return f"{self.address}\0{self.checksum}\0{self.size}\0{self.mtime}\0{self.content_type}\0{meta}"


@dataclass(frozen=True)
class Commit:
    id: str
    tree_id: str
    parents: list[str]
    committer: str
    message: str
    metadata: dict[str, str]
    creation_date: int
    generation: int
    # When it was made, in nanoseconds: orders the commits of one second, as lakeFS's finer clock does.
    created_ns: int


@dataclass(frozen=True)
class Repository:
    id: str
    storage_namespace: str
    default_branch: str
    creation_date: int
    metadata: dict[str, str]
    protected_branches: list[str]

    def physical_address(self, entry: Entry) -> str:
        return f"{self.storage_namespace.rstrip('/')}/data/{entry.address}"


@dataclass(frozen=True)
class Change:
    """One line of a diff: lakeFS's Diff object."""

    type: str  # added, removed, changed, conflict, prefix_changed
    path: str
    path_type: str = "object"  # or common_prefix
    size: int | None = None


# The installation's only user: the owner of the access key the server was started with, and every
# commit's committer.
ADMIN_USER = "admin"
