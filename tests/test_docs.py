"""The documentation site (mkdocs.yml, docs/): it builds in strict mode, so a broken link or anchor, a page missing
from the navigation or a navigation entry without its page fails `make test`, naming it; the generated
configuration reference holds every key of the config models; and a config field without a description fails
the build, naming it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, Field

from docs.gen import benchmark_tables, config_reference, pipeline_pages, screenshots
from include.mlops.config import PipelineConfig
from tests.conftest import REPO_ROOT


def mkdocs_build(config_file: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config_file), "-d", str(site)],
        cwd=REPO_ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site")
    built = mkdocs_build(REPO_ROOT / "mkdocs.yml", folder)
    assert built.returncode == 0, "the site does not build in strict mode:\n" + problems(built.stderr)
    return folder


def problems(log: str) -> str:
    """MkDocs' warnings and errors, each with its continuation lines (a list of pages, say), without its INFO."""
    kept, level = [], ""
    for line in log.splitlines():
        level = line.split(maxsplit=1)[0] if line[:1].isupper() else level
        if level in ("WARNING", "ERROR", "Aborted"):
            kept.append(line)
    return "\n".join(kept) or log


def test_every_config_key_is_in_the_reference(site):
    """Each model's keys, as pydantic's JSON schema of the config lists them, in that model's section."""
    page = (site / "config-reference" / "index.html").read_text()
    schema = PipelineConfig.model_json_schema()
    models = {"PipelineConfig": schema} | schema["$defs"]
    missing = []
    for name, model in models.items():
        if "properties" not in model:
            continue  # an enumeration, not a section
        section = re.search(rf'id="{name.strip("_").lower()}".*?(?=<h[23] |$)', page, re.DOTALL)
        assert section, f"the reference has no section for {name}"
        missing += [f"{name}.{key}" for key in model["properties"] if f"{key}</code>" not in section.group(0)]
    assert not missing, f"keys missing from the configuration reference: {missing}"


def test_each_pipeline_has_a_page_from_its_doc_md_and_its_details(site):
    for dag_file in ("ml_training", "drift_monitor", "model_rollout", "model_rollback", "batch_scoring"):
        page = (site / "pipelines" / dag_file / "index.html").read_text()
        assert re.search(rf"<h1[^>]*>{dag_file}__&lt;model&gt;<", page), f"no page of {dag_file}'s doc_md"
        details = (REPO_ROOT / "docs" / "pipeline-details" / f"{dag_file}.md").read_text()
        first_line = re.sub(r"`([^`]*)`", r"<code>\1</code>", details.splitlines()[0])
        assert ">In detail<" in page and first_line in page, f"{dag_file}'s page lacks its details"


def test_a_dag_without_its_details_and_details_without_their_dag_are_named(tmp_path):
    dags, details = tmp_path / "dags", tmp_path / "details"
    dags.mkdir(), details.mkdir()
    (dags / "nightly.py").write_text('"""### nightly\n\nRuns at night."""\nDAG(doc_md=__doc__)\n')
    with pytest.raises(ValueError, match=r"nightly.py: its details page .*details/nightly.md is missing"):
        pipeline_pages.pages(dags, details)
    (details / "nightly.md").write_text("Runs: nightly.\n")
    (details / "hourly.md").write_text("Runs: hourly.\n")
    with pytest.raises(ValueError, match=r"details of no DAG file with a doc_md: hourly.md"):
        pipeline_pages.pages(dags, details)
    (details / "hourly.md").unlink()
    page = pipeline_pages.pages(dags, details)["nightly.md"]
    assert page.startswith("# nightly\n\nRuns at night.") and page.endswith("## In detail\n\nRuns: nightly.\n")


def test_the_service_api_page_shows_each_shipped_models_routes(site):
    page = (site / "model-service-api" / "index.html").read_text()
    for model in ("fraud_detector", "breast_cancer_classifier"):
        assert f"POST /models/{model}/predict</code>" in page
    assert "RecordFraudDetector" in page


def test_a_broken_link_or_anchor_fails_the_build_naming_it(tmp_path):
    """The project's own validation settings, on a site of one page with a dead link and a dead anchor."""
    settings = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\n[gone](missing.md), [nowhere](#no-such-heading)\n")
    config_file = tmp_path / "mkdocs.yml"
    config_file.write_text(
        yaml.safe_dump(
            {"site_name": "t", "docs_dir": str(tmp_path / "docs"), "validation": settings["validation"]}
            | {"markdown_extensions": settings["markdown_extensions"]}
        )
    )
    built = mkdocs_build(config_file, tmp_path / "site")
    assert built.returncode != 0
    assert "missing.md" in built.stderr
    assert "#no-such-heading" in built.stderr


def test_the_benchmark_page_shows_each_results_table(tmp_path):
    """As `make bench` writes them (benchmarks/report.py), one section per file; none: how to make them."""
    assert "run `make bench`" in benchmark_tables.markdown(tmp_path)
    rows = [{"figure": "p99 at c = 8", "measured": 11.84}, {"figure": "rows", "measured": 1000}]
    result = {"benchmark": "serving", "machine": {"cpus": 2}, "notes": {"load": "0.5-2.0"}, "rows": rows}
    (tmp_path / "serving.json").write_text(json.dumps(result))
    page = benchmark_tables.markdown(tmp_path)
    assert "## serving" in page
    assert "| p99 at c = 8 | 11.84 |\n| rows | 1,000 |" in page
    assert "load: 0.5-2.0" in page


def test_the_screenshot_page_shows_each_steps_screenshot_not_a_failures(tmp_path):
    assert "MLOPS_TEST_OUTPUT=" in screenshots.markdown(screenshots.found(None))
    (tmp_path / "test_mlops_page").mkdir()
    for name in ("02_rollback_triggered.png", "01_mlops_page.png", "failure_0.png"):
        (tmp_path / "test_mlops_page" / name).write_bytes(b"")
    shots = screenshots.found(tmp_path)
    assert list(shots) == [
        "screenshots/test_mlops_page/01_mlops_page.png",
        "screenshots/test_mlops_page/02_rollback_triggered.png",
    ]
    page = screenshots.markdown(shots)
    assert page.index("![mlops page]") < page.index("![rollback triggered]")


class Inner(BaseModel):
    documented: int = Field(default=1, description="has one")
    bare: int = 2


class Root(BaseModel):
    inner: Inner = Field(default_factory=Inner, description="a nested section")


def test_a_field_without_a_description_fails_naming_it():
    with pytest.raises(config_reference.MissingDescription, match=r"Inner\.bare") as error:
        config_reference.markdown(Root)
    assert "documented" not in str(error.value)
    assert "Root.inner" not in str(error.value)
