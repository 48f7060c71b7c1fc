"""Pure functions over trees (path -> Entry mappings): diffs, three-way merges and paged listings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from devstack.lakefs_server.model import Change, Entry

Tree = Mapping[str, Entry]
T = TypeVar("T")

DEST_WINS = "dest-wins"
SOURCE_WINS = "source-wins"


class MergeConflict(Exception):
    def __init__(self, paths: list[str]) -> None:
        super().__init__(", ".join(paths))
        self.paths = paths


def _change(path: str, before: Entry | None, after: Entry | None) -> Change:
    if before is None:
        return Change("added", path, size=after.size if after else None)
    if after is None:
        return Change("removed", path, size=before.size)
    return Change("changed", path, size=after.size)


def diff(left: Tree, right: Tree) -> list[Change]:
    """Two-dot diff: what changes from `left` to `right`."""
    return [
        _change(path, left.get(path), right.get(path))
        for path in sorted(set(left) | set(right))
        if left.get(path) != right.get(path)
    ]


def compare(left: Tree, right: Tree, base: Tree) -> list[Change]:
    """Three-dot diff: what merging `right` into `left` would bring, relative to their merge base.

    Paths changed only on the left are not listed; paths changed differently on both sides are conflicts.
    """
    changes = []
    for path in sorted(set(left) | set(right)):
        ours, theirs, common = left.get(path), right.get(path), base.get(path)
        if ours == theirs or theirs == common:
            continue
        if ours == common:
            changes.append(_change(path, common, theirs))
        else:
            changes.append(Change("conflict", path, size=theirs.size if theirs else None))
    return changes


def merge(dest: Tree, source: Tree, base: Tree, strategy: str = "") -> dict[str, Entry]:
    """The three-way merge of `source` into `dest`; conflicts raise unless a strategy picks a side."""
    result: dict[str, Entry] = {}
    conflicts = []
    for path in sorted(set(dest) | set(source) | set(base)):
        ours, theirs, common = dest.get(path), source.get(path), base.get(path)
        if ours == theirs or theirs == common:
            chosen = ours
        elif ours == common:
            chosen = theirs
        elif strategy == DEST_WINS:
            chosen = ours
        elif strategy == SOURCE_WINS:
            chosen = theirs
        else:
            conflicts.append(path)
            continue
        if chosen is not None:
            result[path] = chosen
    if conflicts:
        raise MergeConflict(conflicts)
    return result


def list_level(
    items: Iterable[tuple[str, T]],
    prefix: str,
    delimiter: str,
    after: str,
    amount: int,
    common_prefix: Callable[[str], T],
) -> tuple[list[tuple[str, T]], bool]:
    """One page of a listing: items in path order, those below a `delimiter` folded into common prefixes.

    `items` are sorted and all start with `prefix`. Returns up to `amount` (key, item) pairs whose key comes
    after `after`, and whether more follow. A common prefix's item is `common_prefix(key)`.
    """
    page: list[tuple[str, T]] = []
    last_folded = ""
    for path, item in items:
        key = path
        if delimiter:
            cut = path.find(delimiter, len(prefix))
            if cut >= 0:
                key = path[: cut + len(delimiter)]
                if key == last_folded:
                    continue
                last_folded = key
                item = common_prefix(key)
        if key <= after:
            continue
        if len(page) == amount:
            return page, True
        page.append((key, item))
    return page, False


def page_of_changes(
    listed: list[Change], prefix: str, after: str, delimiter: str, amount: int
) -> tuple[list[Change], bool]:
    """A page of a diff under `prefix`; with a delimiter, changes below it fold into changed prefixes."""
    items = [(change.path, change) for change in listed if change.path.startswith(prefix)]
    page, has_more = list_level(
        items, prefix, delimiter, after, amount, lambda key: Change("prefix_changed", key, "common_prefix")
    )
    return [change for _, change in page], has_more
