"""The drift history of one model as a small inline SVG chart, drawn on the server (no script, nothing fetched).

Over time (x): the share of drifted features per check (a line per source, one dot per check, red where the
check asked to retrain, hollow for a batch run's check, each dot a link to its HTML report when it has one), the
retraining threshold (a dashed line), and, where labels had arrived, the live score of the primary metric (a
second line) with the champion's test score (dotted); beside it the score estimated without labels (a dashed line
in its shaded band), so that a reader sees where estimate and labels part (concept drift). Shares and scores in
[0, 1] share the left axis; a score outside it (a regression error) gets its own scale on the right.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape

from include.mlops.model_overview import DriftPoint
from include.mlops.monitoring import ONLINE

WIDTH, HEIGHT = 1100, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 52, 14, 30
X_TICKS = 5


def svg(points: Sequence[DriftPoint], threshold: float, metric: str) -> str:
    """The chart of `points` (oldest first), or an empty string when there is none."""
    if not points:
        return ""
    start, end = points[0].window_end, points[-1].window_end
    span = (end - start).total_seconds() or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(moment: dt.datetime) -> float:
        return LEFT + plot_w * ((moment - start).total_seconds() / span if end > start else 0.5)

    def y_share(value: float) -> float:
        return TOP + plot_h * (1 - value)

    scores = [
        v for p in points for v in (p.live_score, p.champion_score, p.estimated_low, p.estimated_high) if v is not None
    ]
    low, high = (0.0, 1.0) if all(0 <= v <= 1 for v in scores) else _padded(min(scores), max(scores))
    own_scale = (low, high) != (0.0, 1.0)

    def y_score(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [
        f'<svg class="drift-chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="share of drifted features and live {escape(metric)} over time">'
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        y = y_share(tick)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:.0%}</text>')
        if own_scale:
            label = low + tick * (high - low)
            parts.append(f'<text class="axis score" x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}">{label:.3g}</text>')
    for i in range(X_TICKS):
        moment = start + (end - start) * i / (X_TICKS - 1)
        anchor = "start" if i == 0 else "end" if i == X_TICKS - 1 else "middle"
        parts.append(
            f'<text class="axis" x="{x(moment):.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}">'
            f"{moment:%Y-%m-%d %H:%M}</text>"
        )
        if end == start:
            break
    y = y_share(threshold)
    parts.append(
        f'<line class="threshold" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
        f'data-threshold="{threshold}"><title>retraining threshold {threshold:.0%}</title></line>'
    )
    banded = [
        p.estimated_score if p.estimated_low is not None and p.estimated_high is not None else None for p in points
    ]
    for run in _runs(points, banded):
        upper = [f"{x(p.window_end):.1f},{y_score(p.estimated_high):.1f}" for p, _ in run]
        lower = [f"{x(p.window_end):.1f},{y_score(p.estimated_low):.1f}" for p, _ in reversed(run)]
        title = f"estimated {metric}: band of {len(run)} check(s) without labels"
        parts.append(
            f'<polygon class="estimated-band" points="{" ".join(upper + lower)}"><title>{escape(title)}</title>'
            "</polygon>"
        )
    for css, values in (
        ("champion-score", [p.champion_score for p in points]),
        ("estimated-score", [p.estimated_score for p in points]),
        ("live-score", [p.live_score for p in points]),
    ):
        for run in _runs(points, values):
            coords = " ".join(f"{x(p.window_end):.1f},{y_score(v):.1f}" for p, v in run)
            parts.append(f'<polyline class="{css}" points="{coords}"/>')
            if len(run) == 1:  # a line of one point draws nothing
                ((p, v),) = run
                parts.append(f'<circle class="{css}" cx="{x(p.window_end):.1f}" cy="{y_score(v):.1f}" r="2"/>')
    shared = [p for p in points if p.drift_share is not None]
    for source in sorted({p.source for p in shared}):
        coords = " ".join(f"{x(p.window_end):.1f},{y_share(p.drift_share):.1f}" for p in shared if p.source == source)
        css = "drift-share" if source == ONLINE else f"drift-share {escape(source)}"
        parts.append(f'<polyline class="{css}" points="{coords}"/>')
    for p in shared:
        css = "check retrain" if p.retrain else "check"
        css += "" if p.source == ONLINE else f" {escape(p.source)}"
        what = "" if p.source == ONLINE else f" ({p.source} run)"
        title = escape(f"{p.window_end:%Y-%m-%d %H:%M} UTC{what}: {p.drift_share:.0%} drifted; {p.reason}")
        dot = (
            f'<circle class="{css}" cx="{x(p.window_end):.1f}" cy="{y_share(p.drift_share):.1f}" r="2.5" '
            f'data-window-end="{p.window_end.isoformat()}" data-drift-share="{p.drift_share}" '
            f'data-source="{escape(p.source)}"><title>{title}</title></circle>'
        )
        if p.report_url:
            dot = f'<a href="{escape(p.report_url)}" target="_blank" rel="noopener">{dot}</a>'
        parts.append(dot)
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: Sequence[DriftPoint], values: list[float | None]) -> list[list[tuple[DriftPoint, float]]]:
    """Unbroken stretches of points with a value: a check without labels breaks the line."""
    runs: list[list[tuple[DriftPoint, float]]] = [[]]
    for point, value in zip(points, values, strict=True):
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((point, value))
    return [run for run in runs if run]


def _padded(low: float, high: float) -> tuple[float, float]:
    pad = (high - low) * 0.1 or abs(high) * 0.1 or 1.0
    return low - pad, high + pad
