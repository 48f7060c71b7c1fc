"""The read-only HTML UI at lakeFS's UI paths, so that "open in lakeFS" links work on the local stack."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.contract


@pytest.fixture
def browser(lakefs_server):
    if not lakefs_server.is_local:
        pytest.skip("a real lakeFS serves its own UI")
    auth = (lakefs_server.access_key_id, lakefs_server.secret_access_key)
    with httpx.Client(base_url=lakefs_server.url, auth=auth, follow_redirects=True) as client:
        yield client


def test_the_ui_asks_for_credentials(lakefs_server, browser):
    anonymous = httpx.get(f"{lakefs_server.url}/")
    assert anonymous.status_code == 401 and anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert browser.get("/").status_code == 200


def test_repositories_objects_and_commit_pages(lakefs_repo, browser):
    main = lakefs_repo.branch("main")
    main.object("raw/<script>alert(1)</script>.csv").upload(b"a,b\n", metadata={"source": "<b>bold</b>"})
    main.object("raw/date=2024-01-01/part.parquet").upload(b"PAR1")
    commit = main.commit("collect <data>", metadata={"dag_id": "ml_training", "run_id": "r&1"}).get_commit()

    home = browser.get("/")
    assert home.status_code == 200 and lakefs_repo.id in home.text

    listing = browser.get(f"/repositories/{lakefs_repo.id}/objects", params={"ref": "main", "path": "raw/"})
    assert listing.status_code == 200
    assert "date=2024-01-01/" in listing.text
    assert "<script>alert(1)</script>" not in listing.text and "&lt;script&gt;" in listing.text

    single = browser.get(
        f"/repositories/{lakefs_repo.id}/objects", params={"ref": commit.id, "path": "raw/date=2024-01-01/part.parquet"}
    )
    assert single.status_code == 200 and "4 bytes" in single.text

    page = browser.get(f"/repositories/{lakefs_repo.id}/commits/{commit.id}")
    assert page.status_code == 200
    assert commit.id in page.text and "collect &lt;data&gt;" in page.text
    assert "ml_training" in page.text and "r&amp;1" in page.text
    assert commit.parents[0][:16] in page.text
    assert "raw/date=2024-01-01/part.parquet" in page.text and "added" in page.text

    log = browser.get(f"/repositories/{lakefs_repo.id}/commits", params={"ref": "main"})
    assert log.status_code == 200 and "Repository created" in log.text
    assert browser.get(f"/repositories/{lakefs_repo.id}").status_code == 200


def test_unknown_pages_answer_404_in_html(lakefs_repo, browser):
    missing = browser.get(f"/repositories/{lakefs_repo.id}/commits/{'0' * 64}")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
