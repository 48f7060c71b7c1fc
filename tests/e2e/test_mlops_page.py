"""The MLOps page in the Airflow UI, in a real browser, on the stack the e2e tests share: a user signs in, opens
the page from the navigation (it shows inside the UI, in Airflow's plugin iframe), sees both models with what
serves and where it came from, follows a lineage link to the lakeFS commit the champion was trained on, rolls
the demo model back to its previous champion with the page's button, and sees the service answer with that
version and the alias history name the rollback and the user.

It needs a demo model with a champion and a previous one, and a breast cancer model whose champion a person
approved: after the drift loop they are there, and run on its own, its fixtures train them. Screenshots go to
`<tmp_path>/screenshots`, and to `$MLOPS_TEST_OUTPUT/test_mlops_page/` when that variable is set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.entities.model_registry import ModelVersion
from playwright.sync_api import FrameLocator, Page, expect, sync_playwright

from devstack import demo
from include.mlops import registry
from include.mlops.naming import rollback_dag_id, training_dag_id
from tests.e2e import browser
from tests.e2e.conftest import BREAST_CANCER, DEMO

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

UI_TIMEOUT_MS = 30_000
ROLLBACK_TIMEOUT = 300


@pytest.fixture
def previous_champion(e2e, champions, edit_config) -> ModelVersion:
    """The demo's previous champion, the one a rollback goes back to. Where there is none (the drift loop's
    retraining leaves one), the demo is retrained on its champion's snapshot, and the challenger, scoring as the
    champion does, passes a gate that asks for no improvement."""
    client = e2e.mlflow()
    if previous := registry.version_by_alias(client, DEMO, registry.PREVIOUS_CHAMPION):
        return previous
    edit_config(DEMO, lambda raw: raw["gate"].update(min_improvement=0.0))
    api = e2e.stack.airflow_api()
    try:
        conf = {"reason": "retrain", "data_commit": champions[DEMO].tags["lakefs_commit"]}
        run = api.trigger(training_dag_id(DEMO), conf)
        assert api.wait_for_run(training_dag_id(DEMO), run, 900) == "success", e2e.logs()
    finally:
        api.close()
    return registry.version_by_alias(client, DEMO, registry.PREVIOUS_CHAMPION)


def test_a_user_sees_every_model_follows_its_lineage_and_rolls_one_back(
    e2e, previous_champion, tmp_path: Path, chromium: Path
):
    expect.set_options(timeout=UI_TIMEOUT_MS)
    stack = e2e.stack
    client = e2e.mlflow()
    champion = registry.version_by_alias(client, DEMO, registry.CHAMPION)
    previous = previous_champion
    served = demo.served_model(stack.urls["Serving"], stack.credentials["serving_admin_token"], DEMO)
    assert served.model_version == champion.version

    shots = browser.Screenshots(tmp_path / "screenshots", "test_mlops_page")
    api = stack.airflow_api()
    with sync_playwright() as playwright:
        with browser.open_browser(
            playwright, chromium, stack.urls["lakeFS"], stack.lakefs_keys, UI_TIMEOUT_MS, shots
        ) as context:
            page = context.new_page()
            airflow = stack.urls["Airflow"]
            browser.sign_in(page, airflow, stack.credentials["airflow_admin_password"])
            mlops = open_the_page(page)
            for model in (DEMO, BREAST_CANCER):
                expect(mlops.locator(f'section[data-model="{model}"] h2')).to_have_text(model)
            champion_card = mlops.locator(f'section[data-model="{DEMO}"] .card[data-alias="champion"]')
            expect(champion_card).to_have_attribute("data-version", champion.version)
            approved = mlops.locator(f'section[data-model="{BREAST_CANCER}"] table.moves tr', has_text="approval")
            expect(approved.first).to_contain_text("admin")
            shots.take(page, "mlops_page")

            follow_the_lineage(page, champion_card, served.labels["lakefs_commit"], shots)

            run_id = roll_back(page, mlops, shots)
            state = api.wait_for_run(rollback_dag_id(DEMO), run_id, ROLLBACK_TIMEOUT)
            assert state == "success", e2e.logs()
            page.reload()
            section = page.frame_locator("iframe").locator(f'section[data-model="{DEMO}"]')
            expect(section.locator('.card[data-alias="champion"]')).to_have_attribute("data-version", previous.version)
            newest = section.locator("table.moves tr").nth(1)  # under the header row
            expect(newest).to_contain_text(f"v{champion.version} → v{previous.version}")
            expect(newest).to_contain_text("rollback")
            expect(newest).to_contain_text("admin")
            section.locator("table.moves").scroll_into_view_if_needed()
            shots.take(page, "history_after_rollback")

    # What is served changed: the service answers with the previous champion, and the run was the user's.
    records = demo.sample_records(stack.urls["lakeFS"], stack.lakefs_keys, served.labels, e2e.config(DEMO), 3)
    assert demo.predict(stack.urls["Serving"], DEMO, records)["model_version"] == previous.version
    assert registry.version_by_alias(client, DEMO, registry.CHAMPION).version == previous.version
    run = api.run(rollback_dag_id(DEMO), run_id)
    assert run["triggered_by"] == "ui" and run["triggering_user_name"] == "admin" and run["conf"] == {}, run
    api.close()


def open_the_page(page: Page) -> FrameLocator:
    """The MLOps entry of the UI's navigation shows the page (/mlops/) inside the UI, in an iframe."""
    page.get_by_role("link", name="MLOps").click()
    expect(page).to_have_url(re.compile(r"/plugin/mlops$"))
    mlops = page.frame_locator("iframe")
    expect(mlops.get_by_role("heading", name="MLOps", exact=True)).to_be_visible()
    return mlops


def follow_the_lineage(page: Page, champion_card, commit: str, shots: browser.Screenshots) -> None:
    """The champion's lakeFS link opens the commit of the data it was trained on, in a new tab (from inside the
    UI's sandboxed iframe: the page hands the click to the UI's window)."""
    link = champion_card.locator("dd.lakefs a")
    expect(link).to_have_attribute("href", re.compile(f"/repositories/mlops/commits/{commit}$"))
    with page.context.expect_page() as opened:
        link.click()
    lakefs = opened.value
    lakefs.wait_for_load_state()
    expect(lakefs.get_by_role("heading", name=f"Commit {commit}")).to_be_visible()
    shots.take(lakefs, "lakefs_commit_of_the_champion")
    lakefs.close()


def roll_back(page: Page, mlops: FrameLocator, shots: browser.Screenshots) -> str:
    """The demo's Rollback button with no version: back to the previous champion, once the user confirms (the
    UI's window asks). Returns the run it started."""
    form = mlops.locator(f'section[data-model="{DEMO}"] form.rollback')
    expect(form.locator("input[name=version]")).to_have_value("")
    asked: list[str] = []

    def confirm(dialog) -> None:
        asked.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    form.get_by_role("button", name="Rollback").click()
    notice = mlops.locator("#notice")
    expect(notice).to_contain_text(f"Triggered {rollback_dag_id(DEMO)}")
    assert asked == [f"Roll {DEMO} back? This triggers {rollback_dag_id(DEMO)}."], asked
    shots.take(page, "rollback_triggered")
    return notice.locator("a").inner_text().strip()
