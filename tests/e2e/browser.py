"""A headless Chromium for the browser tests: Debian's package, driven by Playwright's Python client.

Playwright's own browser builds (`playwright install`) come from a download site this project's machines cannot
reach; the pip wheel ships only the driver, so the tests launch Debian's `chromium` instead, installed with
apt-get when it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import BrowserContext, Page

CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium"))
# fonts-liberation is only recommended, and without a font the screenshots show boxes for text.
DEBIAN_PACKAGES = ["chromium", "fonts-liberation"]
# Chromium phones home (updates, sync, safe browsing, QUIC probes) unless told not to; on a closed network
# those connections are refused and slow every page down. Sandboxing needs user namespaces a root container
# lacks.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_missing_reason(install: bool = True) -> str:
    """Empty when Chromium can be launched (installing Debian's package first when `install` and it is
    missing); otherwise why not, in one sentence a skip can show."""
    if CHROMIUM.exists():
        return ""
    if not install:
        return f"{CHROMIUM} is missing (install Debian's package: apt-get install chromium)"
    apt_get = shutil.which("apt-get")
    if apt_get is None:
        return f"{CHROMIUM} is missing and there is no apt-get to install Debian's chromium package"
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and apt-get needs root: run `sudo apt-get install chromium` once"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = [[apt_get, "update"], [apt_get, "install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES]]
    for step in steps:
        done = subprocess.run(step, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return f"{CHROMIUM} is missing and `{' '.join(step[1:3])}` failed: {' / '.join(tail)}"
    if not CHROMIUM.exists():
        return f"apt-get installed {DEBIAN_PACKAGES} but {CHROMIUM} is still missing"
    return ""


class Screenshots:
    """A browser test's screenshots, numbered in the order taken, in `folder`; copied to
    `$MLOPS_TEST_OUTPUT/<test>/` when that variable is set."""

    def __init__(self, folder: Path, test: str) -> None:
        self.folder = folder
        self.test = test
        folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[str] = []

    def take(self, page: Page, name: str) -> None:
        page.screenshot(path=self.folder / f"{len(self.taken) + 1:02d}_{name}.png", full_page=True)
        self.taken.append(name)

    def failure(self, pages: list[Page]) -> None:
        """What each open tab showed when the test failed (best effort: the failure is what matters)."""
        for number, page in enumerate(pages):
            try:
                page.screenshot(path=self.folder / f"failure_{number}.png", full_page=True, timeout=10_000)
            except Exception as exc:
                print(f"no screenshot of tab {number}: {exc}")

    def publish(self) -> None:
        print(f"screenshots: {self.folder}")
        if target := os.environ.get("MLOPS_TEST_OUTPUT"):
            copy = Path(target) / self.test
            shutil.copytree(self.folder, copy, dirs_exist_ok=True)
            print(f"screenshots copied to {copy}")


@contextmanager
def open_browser(
    playwright, chromium: Path, lakefs_url: str, lakefs_keys: tuple[str, str], timeout_ms: int, shots: Screenshots
) -> Generator[BrowserContext, None, None]:
    """A context of Chromium (a window of 1400 x 1000) for one browser test: on a failure every open tab is
    screenshotted; the screenshots are published and the browser closed in any case. The lakeFS UI asks for the
    access key by HTTP Basic auth, as a browser prompt would: the context answers it with the stack's key."""
    chrome = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
    access_key, secret_key = lakefs_keys
    login = {"username": access_key, "password": secret_key, "origin": lakefs_url}
    context = chrome.new_context(viewport={"width": 1400, "height": 1000}, http_credentials=login)
    context.set_default_timeout(timeout_ms)
    try:
        yield context
    except BaseException:
        shots.failure(context.pages)
        raise
    finally:
        shots.publish()
        context.close()
        chrome.close()


def sign_in(page: Page, airflow: str, password: str, username: str = "admin") -> None:
    """Through SimpleAuthManager's login page, until the UI's navigation shows."""
    page.goto(f"{airflow}/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("nav-dags-link").wait_for()
