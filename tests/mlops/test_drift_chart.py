"""The drift chart: one dot per check at its time and share, the threshold, the live score, report links."""

from __future__ import annotations

import datetime as dt
import re

from include.mlops.drift_chart import HEIGHT, svg
from include.mlops.model_overview import DriftPoint

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def point(hour: int, share: float | None, live: float | None = None, retrain: bool = False, report=None):
    return DriftPoint(T0 + dt.timedelta(hours=hour), 600, share, live, 0.97, retrain, "why", "2", report)


def test_no_checks_draw_no_chart():
    assert svg([], 0.3, "roc_auc") == ""


def test_each_check_is_a_dot_at_its_share_and_the_threshold_a_line_at_its_height():
    chart = svg([point(0, 0.0), point(1, 0.5, retrain=True), point(2, 1.0)], 0.3, "roc_auc")
    dots = re.findall(r'<circle class="(check[^"]*)" cx="([\d.]+)" cy="([\d.]+)"', chart)
    assert [d[0] for d in dots] == ["check", "check retrain", "check"]
    xs, ys = [float(d[1]) for d in dots], [float(d[2]) for d in dots]
    assert xs[0] < xs[1] < xs[2] and xs[1] - xs[0] == xs[2] - xs[1]
    assert ys[0] > ys[1] > ys[2]  # higher share, higher on the chart (smaller y)
    (threshold,) = re.findall(r'<line class="threshold" x1="[\d.]+" x2="[\d.]+" y1="([\d.]+)"', chart)
    assert ys[0] > float(threshold) > ys[1] and 0 < float(threshold) < HEIGHT


def test_a_check_without_labels_breaks_the_live_score_line_and_a_lone_score_is_a_dot():
    chart = svg([point(0, 0.1, 0.9), point(1, 0.1, 0.8), point(2, 0.1), point(3, 0.1, 0.85)], 0.3, "roc_auc")
    assert len(re.findall(r'<polyline class="live-score" points="([^"]+)"', chart)) == 2
    assert len(re.findall(r'<circle class="live-score"', chart)) == 1


def test_a_check_with_a_report_links_its_dot_and_text_is_escaped():
    chart = svg([point(0, 0.2, report="http://mlflow/#/x?a=1&b=2")], 0.3, "<metric>")
    assert '<a href="http://mlflow/#/x?a=1&amp;b=2" target="_blank"' in chart
    assert "&lt;metric&gt;" in chart and "<metric>" not in chart


def test_scores_outside_zero_to_one_get_their_own_scale():
    chart = svg([point(0, 0.1, 120.0), point(1, 0.2, 80.0)], 0.3, "rmse")
    assert re.search(r'<text class="axis score"', chart)
    assert '<text class="axis score"' not in svg([point(0, 0.1, 0.9)], 0.3, "roc_auc")


def test_a_batch_runs_check_is_a_hollow_dot_on_a_line_of_its_own():
    online = [point(0, 0.1), point(2, 0.2)]
    batch = DriftPoint(T0 + dt.timedelta(hours=1), 1500, 0.6, None, 0.97, True, "data drift", "2", None, "batch")
    chart = svg([online[0], batch, online[1]], 0.3, "roc_auc")
    dots = re.findall(r'<circle class="(check[^"]*)"[^>]*data-source="(\w+)"><title>([^<]*)</title>', chart)
    assert [(css, source) for css, source, _ in dots] == [
        ("check", "online"),
        ("check retrain batch", "batch"),
        ("check", "online"),
    ]
    assert "(batch run): 60% drifted" in dots[1][2]
    lines = dict(re.findall(r'<polyline class="(drift-share[^"]*)" points="([^"]+)"', chart))
    assert len(lines["drift-share"].split()) == 2 and len(lines["drift-share batch"].split()) == 1


def test_the_estimate_is_a_line_in_its_band_beside_the_live_score():
    def estimated(hour: int, live: float | None, score: float) -> DriftPoint:
        values = {"estimated_score": score, "estimated_low": score - 0.02, "estimated_high": score + 0.02}
        return DriftPoint(T0 + dt.timedelta(hours=hour), 600, 0.1, live, 0.97, False, "why", "2", None, **values)

    chart = svg([estimated(0, None, 0.9), estimated(1, 0.6, 0.88), point(2, 0.1, 0.5)], 0.3, "roc_auc")
    (line,) = re.findall(r'<polyline class="estimated-score" points="([^"]+)"', chart)
    (band,) = re.findall(r'<polygon class="estimated-band" points="([^"]+)"', chart)
    ys = {float(c.split(",")[1]) for c in line.split()}
    band_ys = [float(c.split(",")[1]) for c in band.split()]
    assert len(band_ys) == 4 and min(band_ys) < min(ys) and max(ys) < max(band_ys)  # the line inside its band
    # Where labels came (hours 1 and 2) the live score is far below the estimate: the chart shows them apart.
    (live,) = re.findall(r'<polyline class="live-score" points="([^"]+)"', chart)
    assert min(float(c.split(",")[1]) for c in live.split()) > max(band_ys)
