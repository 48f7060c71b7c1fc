"""The screenshots the browser tests take (tests/e2e/test_mlops_page.py, test_airflow_ui.py), from the folder they
copy them to: `$MLOPS_TEST_OUTPUT/<test>/`. They are not in the repository; the page shows those of the machine
that builds the site, and says how to make them when there are none."""

from __future__ import annotations

from pathlib import Path

TESTS = {
    "test_mlops_page": "The MLOps page (tests/e2e/test_mlops_page.py)",
    "test_airflow_ui": "The Airflow UI (tests/e2e/test_airflow_ui.py)",
}

INTRO = """# Screenshots

Taken by the browser tests, step by step, on the stack `make run` starts: Chromium on the Airflow UI, the
[MLOps page](mlops-page.md), MLflow and lakeFS. The tests copy them to `$MLOPS_TEST_OUTPUT/<test>/`; this page
shows those of the machine that built the site (they are not in the repository).
"""

HOW = """
None here: the site was built without `MLOPS_TEST_OUTPUT`, or the browser tests have not run with it. To see
them (the tests start the whole stack: several minutes):

```bash
MLOPS_TEST_OUTPUT=$PWD/.local/test-output .venv/bin/pytest tests/e2e/test_mlops_page.py tests/e2e/test_airflow_ui.py
MLOPS_TEST_OUTPUT=$PWD/.local/test-output make docs
```
"""


def found(output: Path | None) -> dict[str, Path]:
    """`screenshots/<test>/<file>` -> the file, for each step's screenshot (not those of a failure), in order."""
    if output is None:
        return {}
    return {
        f"screenshots/{test}/{shot.name}": shot
        for test in TESTS
        for shot in sorted((output / test).glob("[0-9][0-9]_*.png"))
    }


def markdown(shots: dict[str, Path]) -> str:
    if not shots:
        return INTRO + HOW
    lines = [INTRO]
    for test, title in TESTS.items():
        mine = [uri for uri in shots if uri.startswith(f"screenshots/{test}/")]
        if mine:
            lines.append(f"\n## {title}\n")
        for uri in mine:
            step = Path(uri).stem.split("_", 1)[1].replace("_", " ")
            lines.append(f"\n{step}:\n\n![{step}]({uri})\n")
    return "".join(lines)
