"""Objects: uploads (raw and multipart), reads with ranges, stats and metadata, listings, deletions, copies."""

from __future__ import annotations

import hashlib

import lakefs
import lakefs_sdk
import pytest

from tests.lakefs_server.support import message_of

pytestmark = pytest.mark.contract


def test_high_level_upload_keeps_content_type_and_metadata(lakefs_repo):
    obj = lakefs_repo.branch("main").object("data/table.csv")
    obj.upload(b"a,b\n1,2\n", content_type="text/csv", metadata={"source": "unit-test", "rows": "1"})
    stat = obj.stat()
    assert stat.path == "data/table.csv"
    assert stat.size_bytes == 8
    assert stat.content_type == "text/csv"
    assert stat.metadata == {"source": "unit-test", "rows": "1"}
    assert stat.checksum and isinstance(stat.mtime, int)
    assert obj.reader().read() == b"a,b\n1,2\n"
    assert obj.reader(mode="r").read() == "a,b\n1,2\n"


def test_sdk_multipart_upload_and_download(lakefs_repo, lakefs_server):
    objects = lakefs_server.client().sdk_client.objects_api
    stats = objects.upload_object(lakefs_repo.id, "main", "raw/bytes.bin", content=b"\x00\x01binary")
    assert stats.path_type == "object" and stats.size_bytes == 8
    assert objects.get_object(lakefs_repo.id, "main", "raw/bytes.bin") == b"\x00\x01binary"
    head = objects.head_object_with_http_info(lakefs_repo.id, "main", "raw/bytes.bin")
    assert head.status_code == 200 and head.headers["Content-Length"] == "8"
    assert head.headers["ETag"].strip('"') == stats.checksum


def test_user_metadata_round_trip_and_update(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("m.txt").upload(b"x", metadata={"owner": "ml-team"})
    objects = lakefs_server.client().sdk_client.objects_api
    assert objects.stat_object(lakefs_repo.id, "main", "m.txt").metadata == {"owner": "ml-team"}
    assert objects.stat_object(lakefs_repo.id, "main", "m.txt", user_metadata=False).metadata == {}
    objects.update_object_user_metadata(
        lakefs_repo.id, "main", "m.txt", lakefs_sdk.UpdateObjectUserMetadata(set={"owner": "data", "stage": "raw"})
    )
    assert objects.stat_object(lakefs_repo.id, "main", "m.txt").metadata == {"owner": "data", "stage": "raw"}
    listed = objects.list_objects(lakefs_repo.id, "main").results
    assert listed[0].metadata == {"owner": "data", "stage": "raw"}
    assert objects.list_objects(lakefs_repo.id, "main", user_metadata=False).results[0].metadata in (None, {})
    main.commit("with metadata")
    assert lakefs_repo.ref("main@").object("m.txt").stat().metadata == {"owner": "data", "stage": "raw"}


def test_exclusive_upload_refuses_an_existing_path(lakefs_repo, lakefs_server):
    obj = lakefs_repo.branch("main").object("once.txt")
    obj.upload(b"first", mode="x")
    with pytest.raises(lakefs.exceptions.ObjectExistsException):
        obj.upload(b"second", mode="x")
    # The server's own check (If-None-Match: *), without the client's existence probe.
    objects = lakefs_server.client().sdk_client.objects_api
    with pytest.raises(lakefs_sdk.ApiException) as refused:
        objects.upload_object(lakefs_repo.id, "main", "once.txt", content=b"third", if_none_match="*")
    assert refused.value.status == 412
    assert obj.reader().read() == b"first"


def test_conditional_upload_and_download_by_etag(lakefs_repo, lakefs_server):
    objects = lakefs_server.client().sdk_client.objects_api
    first = objects.upload_object(lakefs_repo.id, "main", "etag.txt", content=b"v1")
    second = objects.upload_object(lakefs_repo.id, "main", "etag.txt", content=b"v2", if_match=first.checksum)
    with pytest.raises(lakefs_sdk.ApiException) as stale:
        objects.upload_object(lakefs_repo.id, "main", "etag.txt", content=b"v3", if_match=first.checksum)
    assert stale.value.status == 412
    with pytest.raises(lakefs_sdk.ApiException) as unchanged:
        objects.get_object(lakefs_repo.id, "main", "etag.txt", if_none_match=f'"{second.checksum}"')
    assert unchanged.value.status == 304
    assert objects.get_object(lakefs_repo.id, "main", "etag.txt", if_none_match='"other"') == b"v2"


def test_range_reads(lakefs_repo, lakefs_server):
    content = bytes(range(256)) * 40
    obj = lakefs_repo.branch("main").object("bytes.bin")
    obj.upload(content)
    with obj.reader() as reader:
        reader.seek(100)
        assert reader.read(50) == content[100:150]
        reader.seek(-10, 2)
        assert reader.read() == content[-10:]
        assert reader.read() == b""  # past the end: lakeFS answers 416, the client returns nothing
    objects = lakefs_server.client().sdk_client.objects_api
    partial = objects.get_object_with_http_info(lakefs_repo.id, "main", "bytes.bin", range="bytes=0-9")
    assert partial.status_code == 206 and partial.data == content[:10]
    assert partial.headers["Content-Range"] == f"bytes 0-9/{len(content)}"
    assert objects.get_object(lakefs_repo.id, "main", "bytes.bin", range="bytes=-5") == content[-5:]
    assert objects.get_object(lakefs_repo.id, "main", "bytes.bin", range="bytes=10200-99999") == content[10200:]
    with pytest.raises(lakefs_sdk.ApiException) as unsatisfiable:
        objects.get_object(lakefs_repo.id, "main", "bytes.bin", range=f"bytes={len(content)}-")
    assert unsatisfiable.value.status == 416


def test_exists_and_missing_objects(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("here.txt").upload(b"x")
    assert main.object("here.txt").exists()
    assert not main.object("missing.txt").exists()
    with pytest.raises(lakefs.exceptions.ObjectNotFoundException):
        main.object("missing.txt").stat()
    with pytest.raises(lakefs.exceptions.ObjectNotFoundException):
        main.object("missing.txt").reader().read()
    with pytest.raises(lakefs_sdk.ApiException) as missing:
        lakefs_server.client().sdk_client.objects_api.get_object(lakefs_repo.id, "main", "missing.txt")
    assert missing.value.status == 404 and "not found" in message_of(missing.value)


def test_refused_paths(lakefs_repo, lakefs_server):
    objects = lakefs_server.client().sdk_client.objects_api
    with pytest.raises(lakefs_sdk.ApiException) as empty:
        objects.upload_object(lakefs_repo.id, "main", "", content=b"x")
    assert empty.value.status == 400 and "path" in message_of(empty.value)
    with pytest.raises(lakefs_sdk.ApiException) as too_long:
        objects.upload_object(lakefs_repo.id, "main", "x" * 1025, content=b"x")
    assert too_long.value.status == 400 and "1024" in message_of(too_long.value)


def test_listing_with_prefix_delimiter_and_pages(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    paths = ["a/1.txt", "a/2.txt", "a/sub/3.txt", "b/4.txt", "c.txt", "d.txt"]
    for path in paths:
        main.object(path).upload(path.encode())
    main.commit("tree")
    main.object("a/staged.txt").upload(b"s")
    main.object("c.txt").delete()

    top = list(main.objects(delimiter="/"))
    assert [(o.path, type(o).__name__) for o in top] == [
        ("a/", "CommonPrefix"),
        ("b/", "CommonPrefix"),
        ("d.txt", "ObjectInfo"),
    ]
    assert [o.path for o in main.objects(prefix="a/", delimiter="/")] == [
        "a/1.txt",
        "a/2.txt",
        "a/staged.txt",
        "a/sub/",
    ]
    assert [o.path for o in lakefs_repo.ref("main@").objects(prefix="a/")] == ["a/1.txt", "a/2.txt", "a/sub/3.txt"]

    objects = lakefs_server.client().sdk_client.objects_api
    page = objects.list_objects(lakefs_repo.id, "main", amount=2)
    assert [o.path for o in page.results] == ["a/1.txt", "a/2.txt"]
    assert page.pagination.has_more and page.pagination.next_offset == "a/2.txt"
    rest = objects.list_objects(lakefs_repo.id, "main", after="a/2.txt", amount=10)
    assert [o.path for o in rest.results] == ["a/staged.txt", "a/sub/3.txt", "b/4.txt", "d.txt"]
    assert not rest.pagination.has_more and rest.pagination.next_offset == ""
    folded = objects.list_objects(lakefs_repo.id, "main", delimiter="/", amount=1, after="a/")
    assert [(o.path, o.path_type) for o in folded.results] == [("b/", "common_prefix")]
    assert [o.path for o in main.objects(max_amount=3)] == ["a/1.txt", "a/2.txt", "a/staged.txt"]


def test_delete_one_and_many(lakefs_repo):
    main = lakefs_repo.branch("main")
    for name in ["x1", "x2", "x3", "x4"]:
        main.object(name).upload(name.encode())
    main.commit("four")
    main.object("new").upload(b"n")
    main.object("x1").delete()
    main.object("new").delete()  # never committed: it just disappears
    main.delete_objects(["x2", "x3", "not-there"])
    assert [o.path for o in main.objects()] == ["x4"]
    assert sorted((c.path, c.type) for c in main.uncommitted()) == [
        ("x1", "removed"),
        ("x2", "removed"),
        ("x3", "removed"),
    ]
    main.object("not-there-either").delete()  # a missing object is not an error


def test_copy_object(lakefs_repo):
    main = lakefs_repo.branch("main")
    main.object("src.csv").upload(b"payload", content_type="text/csv", metadata={"k": "v"})
    main.commit("source")
    feature = lakefs_repo.branch("feature").create(main)
    copied = main.object("src.csv").copy("feature", "dst/copy.csv")
    assert copied.reader().read() == b"payload"
    assert copied.stat().metadata == {"k": "v"} and copied.stat().content_type == "text/csv"
    assert [c.path for c in feature.uncommitted()] == ["dst/copy.csv"]
    with pytest.raises(lakefs.exceptions.NotFoundException):
        main.object("missing").copy("feature", "x")


def test_reset_uncommitted_changes(lakefs_repo):
    main = lakefs_repo.branch("main")
    main.object("keep/a.txt").upload(b"a")
    main.commit("base")
    main.object("keep/a.txt").upload(b"changed")
    main.object("dir/b.txt").upload(b"b")
    main.object("dir/c.txt").upload(b"c")
    main.object("e.txt").upload(b"e")
    main.reset_changes("object", "e.txt")
    assert sorted(c.path for c in main.uncommitted()) == ["dir/b.txt", "dir/c.txt", "keep/a.txt"]
    main.reset_changes("common_prefix", "dir/")
    assert [c.path for c in main.uncommitted()] == ["keep/a.txt"]
    main.reset_changes()
    assert list(main.uncommitted()) == []
    assert main.object("keep/a.txt").reader().read() == b"a"


def test_uncommitted_diff_by_pages(lakefs_repo, lakefs_server):
    main = lakefs_repo.branch("main")
    main.object("changed").upload(b"1")
    main.object("removed").upload(b"1")
    main.commit("base")
    main.object("changed").upload(b"22")
    main.object("removed").delete()
    main.object("added/x").upload(b"333")
    changes = {c.path: (c.type, c.size_bytes) for c in main.uncommitted()}
    assert changes == {"added/x": ("added", 3), "changed": ("changed", 2), "removed": ("removed", 1)}
    branches = lakefs_server.client().sdk_client.branches_api
    page = branches.diff_branch(lakefs_repo.id, "main", amount=2)
    assert [d.path for d in page.results] == ["added/x", "changed"] and page.pagination.has_more
    rest = branches.diff_branch(lakefs_repo.id, "main", amount=2, after=page.pagination.next_offset)
    assert [d.path for d in rest.results] == ["removed"] and not rest.pagination.has_more
    assert [d.path for d in main.uncommitted(prefix="added/")] == ["added/x"]


def test_upload_preflight(lakefs_repo, lakefs_server):
    internal = lakefs_server.client().sdk_client.internal_api
    # lakeFS only checks that the caller may upload there.
    response = internal.upload_object_preflight_with_http_info(lakefs_repo.id, "main", "some/path.txt")
    assert response.status_code == 204


def test_a_large_object_round_trips(lakefs_repo):
    content = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)  # 3 MB
    obj = lakefs_repo.branch("main").object("large.bin")
    with obj.writer("wb") as writer:
        for offset in range(0, len(content), 1 << 20):
            writer.write(content[offset : offset + (1 << 20)])
    assert obj.stat().size_bytes == len(content)
    assert obj.reader().read() == content
