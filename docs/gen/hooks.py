"""MkDocs hooks (mkdocs.yml `hooks:`): the pages generated from the code, added to the site at each build, so that
they cannot drift from it. None is written into docs/."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]


def on_config(config):
    # The generators import the project's packages (include, benchmarks, docs.gen), as its tests do, from the root.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_files(files: Files, config) -> Files:
    from docs.gen import benchmark_tables, config_reference, pipeline_pages, screenshots, service_api
    from include.mlops.config import CONFIG_DIR, PipelineConfig

    output = os.environ.get("MLOPS_TEST_OUTPUT")
    shots = screenshots.found(Path(output) if output else None)
    # A generator's ValueError (a field without a description, a DAG file without its docstring, a shipped config
    # that does not load) ends the build with its message alone, which names what to fix.
    try:
        pages = {"config-reference.md": config_reference.markdown(PipelineConfig)}
        dag_pages = pipeline_pages.pages(ROOT / "dags", ROOT / "docs" / "pipeline-details")
        pages |= {f"pipelines/{name}": page for name, page in dag_pages.items()}
        document = service_api.openapi_document(CONFIG_DIR)
    except ValueError as error:
        raise PluginError(str(error)) from None
    pages["model-service-api.md"] = service_api.markdown(document)
    pages["model-service-openapi.json"] = json.dumps(document, indent=2)
    pages["benchmark-results.md"] = benchmark_tables.markdown(ROOT / "benchmarks" / "results")
    pages["screenshots.md"] = screenshots.markdown(shots)
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    for path, shot in shots.items():
        files.append(File.generated(config, path, abs_src_path=str(shot)))
    return files
