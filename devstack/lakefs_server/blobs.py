"""Object contents, stored once per distinct content under `<data-dir>/blobs/<sha256[:2]>/<sha256>`.

A blob is written to `<data-dir>/tmp`, fsync'd and renamed into place, so a crash never leaves a partial
blob where a committed entry could point: it only leaves a temporary file, removed at the next start.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Blob:
    address: str  # sha256 of the content, which names the file
    size: int
    checksum: str  # md5, what lakeFS reports as the object's checksum/ETag on a local blockstore


class BlobWriter:
    """Receives an object's content in chunks; `finish()` makes it durable and returns its address."""

    def __init__(self, store: BlobStore) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="upload-")
        self._file = os.fdopen(fd, "wb")
        self._tmp_path = Path(name)
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()
        self._size = 0

    def write(self, chunk: bytes) -> None:
        self._file.write(chunk)
        self._sha256.update(chunk)
        self._md5.update(chunk)
        self._size += len(chunk)

    def finish(self) -> Blob:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        blob = Blob(address=self._sha256.hexdigest(), size=self._size, checksum=self._md5.hexdigest())
        self._store.adopt(self._tmp_path, blob.address)
        return blob

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp_path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "blobs"
        self.tmp_dir = root / "tmp"
        self.root.mkdir(parents=True, exist_ok=True)
        # Whatever is here was being uploaded when the server stopped; nothing refers to it.
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True)

    def writer(self) -> BlobWriter:
        return BlobWriter(self)

    def path(self, address: str) -> Path:
        return self.root / address[:2] / address

    def adopt(self, tmp_path: Path, address: str) -> None:
        """Move a finished temporary file into place; identical content is stored once."""
        final = self.path(address)
        if final.exists():
            tmp_path.unlink()
            return
        final.parent.mkdir(exist_ok=True)
        os.replace(tmp_path, final)
        _fsync_dir(final.parent)

    def read(self, address: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The blob's bytes from `start`, `length` of them (all when None), in chunks."""
        with open(self.path(address), "rb") as f:
            f.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = f.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk


def _fsync_dir(directory: Path) -> None:
    # The rename itself must survive a power loss, not only the file's content.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
