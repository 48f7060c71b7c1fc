"""What a user does in the Airflow UI, in a real browser, on the whole stack with CeleryExecutor.

Headless Chromium (Debian's, driven by Playwright) signs into the Airflow 3.3 UI, finds the pipelines of both
models in the Dag list, triggers the breast cancer model's training DAG from the Trigger form with its params
typed in, approves its challenger in Required Actions (the model's config asks for a person's approval),
watches the run succeed on the run page, and follows the task buttons "lakeFS" and "MLflow run" to
the commit and the MLflow run this very run made. It runs on the stack the e2e tests share
(tests/e2e/conftest.py). Screenshots of every step go to `<tmp_path>/screenshots` (printed), and are copied to
`$MLOPS_TEST_OUTPUT/test_airflow_ui/` when that variable is set.
"""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect, sync_playwright

from devstack.airflow_api import AirflowAPI, TaskState, progress_line
from include.mlops.naming import monitor_dag_id, training_dag_id
from tests.e2e import approvals, browser
from tests.e2e.conftest import BREAST_CANCER, DEMO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

DAGS = tuple(dag(model) for model in (DEMO, BREAST_CANCER) for dag in (training_dag_id, monitor_dag_id))
TRAINING_DAG = training_dag_id(BREAST_CANCER)
# What the user types into the trigger form.
REASON = "ui-test"
HISTORY_DAYS = 30  # the breast cancer config's training window
RUN_TIMEOUT = 420
UI_TIMEOUT_MS = 30_000


def test_a_user_trains_from_the_airflow_ui_and_follows_the_links(e2e, tmp_path: Path, chromium: Path):
    expect.set_options(timeout=UI_TIMEOUT_MS)
    shots = browser.Screenshots(tmp_path / "screenshots", "test_airflow_ui")
    run_id = f"ui_test_{uuid.uuid4().hex[:8]}"
    started = time.monotonic()

    def mark(step: str) -> None:
        print(f"{time.monotonic() - started:6.1f} s  {step}")

    stack = e2e.stack
    with sync_playwright() as playwright:
        api = stack.airflow_api()
        mark("stack up")
        api.wait_for_dags(set(DAGS))
        mark("DAGs parsed")
        with browser.open_browser(
            playwright, chromium, stack.urls["lakeFS"], stack.lakefs_keys, UI_TIMEOUT_MS, shots
        ) as context:
            page = context.new_page()
            airflow = stack.urls["Airflow"]
            sign_in(page, airflow, stack.credentials["airflow_admin_password"], shots)
            see_the_dags(page, airflow, shots)
            trigger_from_the_form(page, airflow, run_id, shots)
            mark(f"signed in, saw the DAGs, triggered {run_id}")
            approve_from_required_actions(page, airflow, api, run_id, shots)
            mark("approved the challenger in Required Actions")

            # The run page refreshes itself while the run is active; the REST client only bounds the wait and
            # says which task failed.
            page.goto(f"{airflow}/dags/{TRAINING_DAG}/runs/{urllib.parse.quote(run_id)}")
            badge = page.get_by_test_id("header-card").get_by_test_id("state-badge")
            expect(badge).to_be_visible()
            said: list[str] = []
            state = api.wait_for_run(TRAINING_DAG, run_id, RUN_TIMEOUT, on_progress=progress(said))
            assert state == "success", "\n".join(said) + "\n" + e2e.logs()
            expect(badge).to_have_text("Success")
            # The grid beside it polls on a clock of its own and may still show the last task running: the
            # screenshot is taken of the page loaded afresh.
            page.reload()
            expect(badge).to_have_text("Success")
            expect(page.get_by_test_id(f"grid-{run_id}-merge_reference")).to_be_visible()
            page.wait_for_load_state("networkidle")
            shots.take(page, "run_succeeded")
            mark("run succeeded")

            run = api.run(TRAINING_DAG, run_id)
            assert run["conf"]["reason"] == REASON
            assert run["conf"]["history_days"] == HISTORY_DAYS  # an integer, as the param's type says
            assert run["triggered_by"] == "ui", run

            lakefs_url = extra_link(page, airflow, run_id, "commit_snapshot", "lakeFS", shots)
            mlflow_url = extra_link(page, airflow, run_id, "gate", "MLflow run", shots)
            commit = check_lakefs_link(lakefs_url, stack.urls["lakeFS"], stack.lakefs_keys, run_id)
            check_mlflow_link(mlflow_url, stack.urls["MLflow"], run_id, commit)
            # Clicked as a user would: each opens in a new tab. The gate's page is still open.
            mlflow_page = open_link(page, "MLflow run")
            expect(mlflow_page.get_by_role("heading", name=run_id, exact=True)).to_be_visible()
            shots.take(mlflow_page, "mlflow_run_page")
            extra_link(page, airflow, run_id, "commit_snapshot", "lakeFS", shots=None)
            lakefs_page = open_link(page, "lakeFS")
            expect(lakefs_page.get_by_role("heading", name=f"Commit {commit}")).to_be_visible()
            shots.take(lakefs_page, "lakefs_commit_page")
            mark("extra links checked")
        api.close()


def sign_in(page: Page, airflow: str, password: str, shots: browser.Screenshots) -> None:
    """SimpleAuthManager's login page: a wrong password keeps the user out, the generated one lets them in."""
    page.goto(f"{airflow}/")
    expect(page).to_have_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password + "-wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Invalid credentials")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/auth/login"))
    shots.take(page, "login_refused")

    page.get_by_label("Password").fill(password)
    shots.take(page, "login")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_test_id("nav-dags-link")).to_be_visible()


def see_the_dags(page: Page, airflow: str, shots: browser.Screenshots) -> None:
    page.goto(f"{airflow}/dags")
    for dag_id in DAGS:
        expect(page.get_by_role("link", name=dag_id, exact=True)).to_be_visible()
    shots.take(page, "dag_list")


def trigger_from_the_form(page: Page, airflow: str, run_id: str, shots: browser.Screenshots) -> None:
    """The Trigger dialog renders one field per DAG param (`element_<name>`); Advanced Options holds the run id
    and the JSON the form turns into the run's conf."""
    page.goto(f"{airflow}/dags/{TRAINING_DAG}")
    page.get_by_test_id("trigger-dag-button").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", name=f"Trigger Dag - {TRAINING_DAG}")).to_be_visible()
    dialog.locator('input[name="element_reason"]').fill(REASON)
    history_days = dialog.get_by_role("spinbutton", name="history_days")
    history_days.fill(str(HISTORY_DAYS))
    history_days.blur()
    shots.take(page, "trigger_form_params")
    dialog.get_by_role("button", name="Advanced Options").click()
    dialog.get_by_role("textbox", name="Run ID").fill(run_id)
    # The JSON editor (role "code") shows the conf the fields became.
    expect(dialog.get_by_role("code")).to_contain_text(f'"history_days": {HISTORY_DAYS}')
    expect(dialog.get_by_role("code")).to_contain_text(f'"reason": "{REASON}"')
    shots.take(page, "trigger_form_conf")
    dialog.get_by_test_id("trigger-dag-submit").click()
    # The UI opens the new run's page.
    expect(page).to_have_url(re.compile(re.escape(f"/dags/{TRAINING_DAG}/runs/{run_id}") + "$"))


def approve_from_required_actions(
    page: Page, airflow: str, api: AirflowAPI, run_id: str, shots: browser.Screenshots
) -> None:
    """The model's config asks a person to approve each challenger: the run waits in the UI's Required Actions,
    where the request shows the gate's verdict and both models' metrics, and Approve lets it deploy."""
    approvals.wait_until_asked(api, TRAINING_DAG, run_id, RUN_TIMEOUT)
    page.goto(f"{airflow}/required_actions")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=run_id, exact=True))
    expect(row).to_have_count(1)
    expect(row.get_by_text("Approval Required")).to_be_visible()
    shots.take(page, "required_actions")
    row.get_by_role("link", name=re.compile(f"^Deploy .* of {BREAST_CANCER}")).click()
    expect(page.get_by_text("| metric (test split) |")).to_have_count(0)  # rendered as a table, not as text
    expect(page.get_by_role("cell", name="roc_auc (gate)")).to_be_visible()
    card = re.compile(rf"/mlops/models/{BREAST_CANCER}/versions/\d+/card$")
    expect(page.get_by_role("link", name="Model card", exact=True)).to_have_attribute("href", card)
    approve = page.get_by_role("button", name="Approve")
    expect(approve).to_be_enabled()
    shots.take(page, "approval_request")
    approve.click()
    expect(page.get_by_text(re.compile(r"Response received at .* from admin"))).to_be_visible()
    shots.take(page, "approved")
    answer = api.request("GET", approvals.hitl_path(TRAINING_DAG, run_id))
    assert answer["chosen_options"] == ["Approve"] and answer["responded_by_user"]["name"] == "admin", answer


def extra_link(
    page: Page, airflow: str, run_id: str, task_id: str, name: str, shots: browser.Screenshots | None
) -> str:
    """The task's button `name` (the Details tab's "Extra Links"); returns where it points."""
    page.goto(f"{airflow}/dags/{TRAINING_DAG}/runs/{urllib.parse.quote(run_id)}/tasks/{task_id}/details")
    expect(page.get_by_role("heading", name="Extra Links")).to_be_visible()
    link = page.get_by_role("link", name=name, exact=True)
    expect(link).to_have_attribute("href", re.compile(r"^http://127\.0\.0\.1:\d+/"))
    if shots:
        shots.take(page, f"{task_id}_extra_links")
    return link.get_attribute("href") or ""


def check_lakefs_link(url: str, lakefs: str, keys: tuple[str, str], run_id: str) -> str:
    """The link opens this stack's lakeFS at a commit this run made; returns the commit id."""
    match = re.fullmatch(re.escape(f"{lakefs}/repositories/mlops/commits/") + "([0-9a-f]{64})", url)
    assert match, f"lakeFS link {url!r} does not point at a commit in {lakefs}"
    commit = match.group(1)
    page = httpx.get(url, auth=keys, timeout=30)
    assert page.status_code == 200, f"GET {url}: {page.status_code}"
    assert commit in page.text and f"Training snapshot of {BREAST_CANCER} ({REASON} run)" in page.text
    api = httpx.get(f"{lakefs}/api/v1/repositories/mlops/commits/{commit}", auth=keys, timeout=30)
    assert api.json()["metadata"]["airflow_run_id"] == run_id
    return commit


def check_mlflow_link(url: str, mlflow: str, run_id: str, commit: str) -> None:
    """The link opens this stack's MLflow at this run's training run, which trained on the linked commit."""
    match = re.fullmatch(re.escape(f"{mlflow}/#/experiments/") + r"(\d+)/runs/([0-9a-f]{32})", url)
    assert match, f"MLflow link {url!r} does not point at a run in {mlflow}"
    assert httpx.get(url, timeout=30).status_code == 200  # the UI (the part after # stays in the browser)
    answer = httpx.get(f"{mlflow}/api/2.0/mlflow/runs/get", params={"run_id": match.group(2)}, timeout=30)
    assert answer.status_code == 200, answer.text
    run = answer.json()["run"]
    assert run["info"]["experiment_id"] == match.group(1)
    tags = {tag["key"]: tag["value"] for tag in run["data"]["tags"]}
    assert tags["airflow_run_id"] == run_id
    assert tags["reason"] == REASON
    assert tags["lakefs_commit"] == commit


def open_link(page: Page, name: str) -> Page:
    """Click the link `name`; returns the tab it opened."""
    with page.context.expect_page() as opened:
        page.get_by_role("link", name=name, exact=True).click()
    target = opened.value
    target.wait_for_load_state()
    return target


def progress(said: list[str]) -> Callable[[list[TaskState]], None]:
    def record(tasks: list[TaskState]) -> None:
        line = progress_line(tasks)
        if not said or said[-1] != line:
            said.append(line)

    return record
