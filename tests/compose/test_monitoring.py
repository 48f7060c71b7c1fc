"""The monitoring configs compose mounts, run for real: a real model service (tests/fixtures/serving.py) with
traffic, model switches, a shadow and a canary rollout, and drift checks; a real Prometheus (Debian's) with
deploy/prometheus/prometheus.yml, only its target moved to the service's loopback port; and every query of the
Grafana dashboards asked of it.

Grafana itself does not run here (no package of it is at hand): what is checked is that each panel's query
returns data from what Prometheus scraped, not how Grafana draws it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import onnx
import pytest
import sqlalchemy as sa
import yaml

from devstack.processes import ManagedProcess
from include.mlops import monitoring, operations_store
from include.serving.shadow import CAPACITY_RECORDS
from tests.compose.tools import start_debian_server
from tests.conftest import REPO_ROOT
from tests.fixtures.serving import ADMIN_TOKEN, DEMO_MODEL, Service, service_launcher
from tests.serving.conftest import (  # noqa: F401 (fixtures)
    config,
    drift_check_row,
    records_of,
    save_model,
    splits,
    stored_models,
)

DASHBOARDS = sorted((REPO_ROOT / "deploy/grafana/dashboards").glob("*.json"))
PROMETHEUS_CONFIG = REPO_ROOT / "deploy/prometheus/prometheus.yml"
# Grafana's own variables, as Grafana would fill them on a dashboard showing the last few minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__range": "10m"}
# What the panels must show (the dashboard's purpose): request latency, predictions by model version, drift, and
# a rollout's model time by role, challenger errors, agreement and dropped shadow scorings.
REQUIRED_METRICS = {
    "bentoml_service_request_duration_seconds_bucket",
    "mlops_predictions_total",
    "mlops_drift_share",
    "mlops_model_duration_seconds_bucket",
    "mlops_scoring_errors_total",
    "mlops_rollout_comparisons_total",
    "mlops_shadow_dropped_total",
}
GRID_COLUMNS = 24
_PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}


@dataclass(frozen=True)
class Panel:
    dashboard: str
    title: str
    expr: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.title}"


def grid_panels(dashboard: dict) -> list[dict]:
    """Every panel of a dashboard, rows included, with the panels a collapsed row holds."""
    return [inner for panel in dashboard["panels"] for inner in [panel, *panel.get("panels", [])]]


def panels() -> list[Panel]:
    """Every query of every panel (rows are headings, with no query of their own)."""
    found = []
    for path in DASHBOARDS:
        for panel in grid_panels(json.loads(path.read_text())):
            if panel["type"] != "row":
                found.extend(Panel(path.name, panel["title"], target["expr"]) for target in panel["targets"])
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: its identifiers that are not functions, keywords, label names
    (in `{...}` and `by (...)`), durations or Grafana variables."""
    expr = re.sub(r"\$\w+", "", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"\b[A-Za-z_:][A-Za-z0-9_:]*\b(?!\s*\()", expr)
    return set(names) - _PROMQL_WORDS


@dataclass
class Observed:
    service: Service
    prometheus: ManagedProcess
    records: list[dict]

    def traffic(self, seconds: float) -> None:
        """Predictions on both routes, and a bad request, for `seconds` (so that rates span several scrapes)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.service.predict(self.records).status_code == 200
            one = httpx.post(f"{self.service.url}/predict_batched", json={"records": self.records[:1]}, timeout=30)
            assert one.status_code == 200
            assert self.service.predict([{"amount": "not a number"}]).status_code == 422
            time.sleep(0.1)

    def query(self, expr: str) -> list[dict]:
        response = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=30)
        assert response.status_code == 200, f"{expr}: {response.text}"
        return response.json()["data"]["result"]

    def rollout(self, method: str, body: dict | None = None) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        url = f"{self.service.url}/admin/models/{DEMO_MODEL}/rollout"
        response = httpx.request(method, url, json=body, headers=headers, timeout=60)
        assert response.status_code == 200, response.text

    def values(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(s["metric"][label] for label in labels): float(s["value"][1]) for s in self.query(expr)}


def start_prometheus(target: str, folder: Path) -> ManagedProcess:
    """Debian's Prometheus on the compose config, scraping `target` every second instead of model-service:3000."""
    settings = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    settings["global"]["scrape_interval"] = "1s"
    (job,) = [job for job in settings["scrape_configs"] if job["job_name"] == "model-service"]
    job["static_configs"] = [{"targets": [target]}]
    return start_debian_server("prometheus", "prometheus", settings, folder, "--storage.tsdb.path")


def record_drift_checks(url: str) -> None:
    """drift_monitor's last check of v1 (with a live score) and of v2, as it writes them to its history."""
    engine = sa.create_engine(url)
    operations_store.upgrade(engine)
    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for run_id, version, figures in (
        ("check-v1", "1", {"drift_share": 0.4, "live_score": 0.62, "labelled_rows": 300, "retrain": True}),
        ("check-v2", "2", {"drift_share": 0.1}),
    ):
        monitoring.record_check(engine, drift_check_row(run_id, version, end, **figures))
    engine.dispose()


@pytest.fixture(scope="module")
def failing_challenger(stored_models, config) -> str:  # noqa: F811
    """fraud_detector v5: v2 exported with a batch dimension fixed at 1. It loads, passes the service's one-record
    check and answers one record as v2 does (the two agree); it raises on every request of two or more."""
    model = onnx.load_from_string(stored_models.onnx["2"])
    for graph_input in model.graph.input:
        graph_input.type.tensor_type.shape.dim[0].dim_value = 1
    return save_model(config, "5", model.SerializeToString())


@pytest.fixture(scope="module")
def observed(stored_models, failing_challenger, config, splits, tmp_path_factory) -> Iterator[Observed]:  # noqa: F811
    """A model service that served v1 then v2 (and refused v3), then tried v5 beside v2 in a shadow rollout (one
    request too large for the shadow queue) and in a canary rollout that stays on, with drift checks of v1 and v2,
    under Prometheus."""
    log_url = f"sqlite:///{tmp_path_factory.mktemp('inference-log') / 'log.db'}"
    with service_launcher(tmp_path_factory) as start:
        service = start(
            MLOPS_MODEL_TAG=stored_models.tag("1"),
            MLOPS_INFERENCE_LOG_URL=log_url,
            MLOPS_DRIFT_METRICS_SECONDS="1",
            MLOPS_MAX_RECORDS=str(CAPACITY_RECORDS + 1),
        )
        prometheus = start_prometheus(service.url.removeprefix("http://"), tmp_path_factory.mktemp("prometheus"))
        try:
            seen = Observed(service, prometheus, records_of(splits["test"].head(5), config.dataset))
            seen.traffic(3)
            assert service.admin("POST", {"tag": stored_models.tag("3")}).status_code == 422  # a rejected switch
            assert service.admin("POST", {"tag": stored_models.tag("2")}).status_code == 200
            seen.traffic(3)
            # v5 scores off the request path: it fails on the five-record requests and agrees with v2 on the single
            # records; a request of more records than the shadow queue holds is answered, and its shadow dropped.
            seen.rollout("POST", {"tag": failing_challenger, "mode": "shadow"})
            seen.traffic(2)
            too_many = (seen.records * (CAPACITY_RECORDS // len(seen.records) + 1))[: CAPACITY_RECORDS + 1]
            answer = httpx.post(f"{service.url}/predict", json={"records": too_many}, timeout=120)
            assert answer.status_code == 200, answer.text[:2000]
            seen.rollout("DELETE")
            # v5 answers about half the requests: its single records, while the champion answers for it when it
            # fails.
            seen.rollout("POST", {"tag": failing_challenger, "mode": "canary", "share": 0.5})
            seen.traffic(3)
            record_drift_checks(log_url)
            yield seen
        finally:
            prometheus.stop()


def test_the_dashboards_show_latency_predictions_by_version_drift_and_rollouts():
    used = set().union(*(metric_names(panel.expr) for panel in panels()))
    assert REQUIRED_METRICS <= used, f"no panel reads {REQUIRED_METRICS - used}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_the_dashboard_panels_tile_the_grid(path: Path):
    """Grafana packs overlapping panels and clips wide ones where it likes: each panel has a place of its own
    within the 24 columns, a row heading spans them all, and ids are unique."""
    dashboard = json.loads(path.read_text())
    taken: dict[tuple[int, int], str] = {}
    ids = []
    for panel in grid_panels(dashboard):
        ids.append(panel["id"])
        x, y, w, h = (panel["gridPos"][key] for key in ("x", "y", "w", "h"))
        assert x >= 0 and w > 0 and h > 0 and x + w <= GRID_COLUMNS, panel["title"]
        if panel["type"] == "row":
            assert (x, w, h) == (0, GRID_COLUMNS, 1), panel["title"]
        for cell in ((column, line) for column in range(x, x + w) for line in range(y, y + h)):
            assert cell not in taken, f"{panel['title']} overlaps {taken[cell]}"
            taken[cell] = panel["title"]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{endpoint=~"/p|/q"}[$__rate_interval])))', {"a_bucket"}),
        (
            "sum by (v, c) (increase(b_total[$__range])) / ignoring (c) group_left sum by (v) (increase(b_total[1h]))",
            {"b_total"},
        ),
        ("gauge_a + on (x) gauge_b offset 5m", {"gauge_a", "gauge_b"}),
    ],
)
def test_metric_names_are_read_from_promql(expr: str, names: set[str]):
    assert metric_names(expr) == names


def test_every_metric_a_dashboard_panel_reads_is_on_the_services_metrics(observed: Observed):
    def missing() -> dict[str, set[str]]:
        exposed = {name for name, _ in observed.service.metrics()}
        return {
            str(panel): metric_names(panel.expr) - exposed for panel in panels() if metric_names(panel.expr) - exposed
        }

    deadline = time.monotonic() + 15  # the drift gauges are read from the history every second
    while (absent := missing()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not absent, f"panels read metrics the model service does not expose: {absent}"


def test_every_dashboard_panel_gets_data_from_prometheus_scraping_the_service(observed: Observed):
    targets = observed.query('up{job="model-service"}')
    assert [float(t["value"][1]) for t in targets] == [1.0], f"Prometheus does not scrape the service: {targets}"

    def unanswered() -> list[str]:
        empty = []
        for panel in panels():
            expr = panel.expr
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            values = [float(series["value"][1]) for series in observed.query(expr)]
            if not values or not all(math.isfinite(value) for value in values):
                empty.append(f"{panel}: {expr} -> {values}")
        return empty

    deadline = time.monotonic() + 45
    while (empty := unanswered()) and time.monotonic() < deadline:
        observed.traffic(1)
    assert not empty, "panels without data:\n" + "\n".join(empty)
    # The predictions counter's role label: a query that sums it away counts the canary's answers with the rest.
    versions = {
        s["metric"]["model_version"] for s in observed.query("sum by (model_version) (mlops_predictions_total)")
    }
    assert versions == {"1", "2", "5"}
    answered = observed.values("sum by (role, model_version) (mlops_predictions_total)", "role", "model_version")
    assert set(answered) == {("champion", "1"), ("champion", "2"), ("challenger", "5")}
    errors = observed.values("sum by (role, model_version) (mlops_scoring_errors_total)", "role", "model_version")
    assert set(errors) == {("challenger", "5")} and errors["challenger", "5"] > 0
    compared = observed.values("sum by (challenger_version, agreement) (mlops_rollout_comparisons_total)", "agreement")
    assert set(compared) == {("agree",)}
    dropped = observed.values("sum by (model) (mlops_shadow_dropped_total)", "model")
    assert dropped == {(DEMO_MODEL,): CAPACITY_RECORDS + 1}

    def shares() -> dict[str, float]:
        return {s["metric"]["model_version"]: float(s["value"][1]) for s in observed.query("mlops_drift_share")}

    deadline = time.monotonic() + 15  # read from the history every second, scraped every second
    while shares() != {"1": 0.4, "2": 0.1} and time.monotonic() < deadline:
        time.sleep(0.5)
    assert shares() == {"1": 0.4, "2": 0.1}
