"""The project's server on its own data directory: restarts, SIGKILLs and a large upload.

These start their own instance (not the session's), behind a validating proxy of their own, because they
restart or kill it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lakefs
import lakefs_sdk
import pytest

from tests.fixtures.lakefs import LocalLakeFS, spec_missing_reason, spec_path, start_local_lakefs
from tests.lakefs_server.validating_proxy import ValidatingProxy

pytestmark = pytest.mark.contract

BIG = 50 * 1024 * 1024


@dataclass
class OwnLakeFS:
    server: LocalLakeFS
    proxy: ValidatingProxy

    def client(self) -> lakefs.Client:
        return lakefs.Client(
            host=self.proxy.url, username=self.server.access_key_id, password=self.server.secret_access_key
        )

    def kill(self) -> None:
        assert self.server.process is not None
        os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.popen.wait(10)

    def peak_memory(self) -> int:
        """VmHWM: the server process's peak resident memory so far, in bytes."""
        assert self.server.process is not None
        for line in Path(f"/proc/{self.server.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc")


@pytest.fixture
def own_lakefs(tmp_path: Path) -> Iterator[OwnLakeFS]:
    server = start_local_lakefs(tmp_path)
    proxy = ValidatingProxy(server.url, None if spec_missing_reason() else spec_path()).start()
    try:
        yield OwnLakeFS(server, proxy)
    finally:
        proxy.stop()
        server.stop()
    assert proxy.violations == []


def _pattern(size: int, seed: bytes) -> bytes:
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def _contents(ref: lakefs.Reference) -> dict[str, bytes]:
    return {obj.path: ref.object(obj.path).reader().read() for obj in ref.objects()}


def test_everything_survives_a_restart(own_lakefs):
    repo = lakefs.Repository("persisted", client=own_lakefs.client()).create("local://persisted")
    main = repo.branch("main")
    main.object("data/a.csv").upload(b"a,b\n1,2\n", content_type="text/csv", metadata={"source": "test"})
    main.object("data/b.bin").upload(_pattern(3 * 1024 * 1024, b"b"))
    first = main.commit("first", metadata={"run": "1"}).get_commit()
    feature = repo.branch("feature").create(main)
    feature.object("data/c.txt").upload(b"feature")
    feature.commit("feature work")
    repo.tag("v1").create(first.id)
    main.object("staged.txt").upload(b"not committed yet")
    repositories_api = own_lakefs.client().sdk_client.repositories_api
    repositories_api.set_branch_protection_rules("persisted", [lakefs_sdk.BranchProtectionRule(pattern="prod")])
    before = {
        "log": [c.id for c in main.log()],
        "main": _contents(main),
        "feature": _contents(feature),
        "branches": [b.id for b in repo.branches()],
        "uncommitted": [(c.path, c.type) for c in main.uncommitted()],
    }

    own_lakefs.server.restart()

    repo = lakefs.Repository("persisted", client=own_lakefs.client())
    main, feature = repo.branch("main"), repo.branch("feature")
    assert [c.id for c in main.log()] == before["log"]
    assert _contents(main) == before["main"]
    assert _contents(feature) == before["feature"]
    assert [b.id for b in repo.branches()] == before["branches"]
    assert [(c.path, c.type) for c in main.uncommitted()] == before["uncommitted"]
    assert repo.tag("v1").get_commit().id == first.id
    assert repo.commit(first.id).get_commit().metadata == {"run": "1"}
    assert main.object("data/a.csv").stat().metadata == {"source": "test"}
    assert main.object("data/a.csv").stat().content_type == "text/csv"
    rules = own_lakefs.client().sdk_client.repositories_api.get_branch_protection_rules("persisted")
    assert [rule.pattern for rule in rules] == ["prod"]


def test_a_50_mb_upload_streams_through_bounded_memory(own_lakefs):
    repo = lakefs.Repository("big", client=own_lakefs.client()).create("local://big")
    content = _pattern(BIG, b"big")
    baseline = own_lakefs.peak_memory()
    obj = repo.branch("main").object("datasets/train.parquet")
    with obj.writer("wb") as writer:  # the high-level client's chunked raw upload
        writer.write(content)
    grown = own_lakefs.peak_memory() - baseline
    assert obj.stat().size_bytes == BIG
    digest = hashlib.sha256()
    with obj.reader() as reader:
        while chunk := reader.read(8 * 1024 * 1024):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(content).hexdigest()
    grown = max(grown, own_lakefs.peak_memory() - baseline)
    # Streaming costs a few MB (measured: ~2); holding the object in memory even once would cost 50.
    assert grown < BIG // 2, f"the server grew by {grown / 2**20:.0f} MB for a {BIG / 2**20:.0f} MB object"


def test_sigkill_during_a_big_upload_loses_nothing_committed(own_lakefs):
    repo = lakefs.Repository("killed-upload", client=own_lakefs.client()).create("local://killed-upload")
    main = repo.branch("main")
    main.object("committed.bin").upload(_pattern(2 * 1024 * 1024, b"committed"))
    main.commit("committed before the crash")
    main.object("staged.txt").upload(b"staged before the crash")
    committed = _contents(repo.ref("main@"))
    tmp_dir = own_lakefs.server.data_dir / "tmp"

    failure: list[BaseException] = []

    def upload_big() -> None:
        try:
            main.object("interrupted.bin").upload(_pattern(4 * BIG, b"interrupted"))
        except BaseException as exc:  # the connection dies with the server
            failure.append(exc)

    uploader = threading.Thread(target=upload_big)
    uploader.start()
    deadline = time.monotonic() + 60
    while not any(f.stat().st_size > 10 * 1024 * 1024 for f in tmp_dir.glob("upload-*")):
        assert time.monotonic() < deadline and uploader.is_alive(), "the upload never reached the server"
        time.sleep(0.002)
    own_lakefs.kill()
    uploader.join(60)
    assert failure, "the upload should have failed with the server killed"

    own_lakefs.server.start()
    assert list(tmp_dir.iterdir()) == []  # the partial upload was discarded
    repo = lakefs.Repository("killed-upload", client=own_lakefs.client())
    main = repo.branch("main")
    assert _contents(repo.ref("main@")) == committed
    assert sorted(o.path for o in main.objects()) == ["committed.bin", "staged.txt"]
    main.object("after.txt").upload(b"the server works again")
    main.commit("after the crash")


def test_sigkill_during_commits_keeps_every_acknowledged_commit(own_lakefs):
    repo = lakefs.Repository("killed-commits", client=own_lakefs.client()).create("local://killed-commits")
    acknowledged: list[tuple[str, str]] = []  # (commit id, path it added)

    for cycle in range(3):
        stop = threading.Event()

        def commit_loop(cycle: int = cycle, stop: threading.Event = stop) -> None:
            main = lakefs.Repository("killed-commits", client=own_lakefs.client()).branch("main")
            index = 0
            while not stop.is_set():
                path = f"c{cycle}/{index:05d}.txt"
                try:
                    main.object(path).upload(path.encode() * 100)
                    acknowledged.append((main.commit(f"commit {path}").get_commit().id, path))
                except Exception:  # the server is gone
                    return
                index += 1

        committer = threading.Thread(target=commit_loop)
        committer.start()
        count = len(acknowledged)
        deadline = time.monotonic() + 30
        while len(acknowledged) < count + 3:
            assert time.monotonic() < deadline, "commits are not going through"
            time.sleep(0.005)
        time.sleep(0.013 * (cycle + 1))  # a different moment of the upload/commit cycle each time
        own_lakefs.kill()
        stop.set()
        committer.join(30)
        own_lakefs.server.start()

    repo = lakefs.Repository("killed-commits", client=own_lakefs.client())
    main = repo.branch("main")
    logged = [c.id for c in main.log()]
    for commit_id, path in acknowledged:
        assert commit_id in logged, f"acknowledged commit {commit_id} ({path}) was lost"
        assert repo.commit(commit_id).object(path).reader().read() == path.encode() * 100
    # Every object of the head and of the staging area reads back whole.
    for obj in main.objects():
        assert main.object(obj.path).reader().read() == obj.path.encode() * 100
    main.object("after.txt").upload(b"x")
    main.commit("after the crashes")
