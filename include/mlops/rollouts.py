"""Shadow and canary rollouts, judged: the challenger against the champion on the same live rows.

During a rollout the model service scores each request routed to it with both models (one answers, the other
scores off the request path) and writes both predictions to the inference log with the request id, the role
(`champion` / `challenger`), whether it was the answer, the error when a scoring raised, and the model time
(include/serving/rollout.py). `compare` reads the rollout's rows since it started and measures, on the records
both scored: agreement, the drift between the two models' predictions, the challenger's error rate and the p99
model time of each; and, once labels arrived, the primary metric of each on the same labelled rows. `judge`
turns the figures into a verdict against the config's `rollout` section: wait, promote or roll back, with the
reason. The rollouts table (include/mlops/operations_store.py) keeps each rollout's state and last figures for
the MLOps page.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from include.mlops.config import Dataset, PipelineConfig
from include.mlops.monitoring import PREDICTION_COLUMN, as_utc, live_performance, measure_drift
from include.mlops.operations_store import inference_log, rollouts
from include.mlops.training import higher_is_better

Verdict = Literal["wait", "promote", "rollback"]


def same_answer(champion: dict[str, Any], challenger: dict[str, Any], value_tolerance: float) -> bool:
    """Whether two predictions of one record agree: the same class, or values within `value_tolerance` of each
    other relative to the champion's (absolute below 1)."""
    if "value" in champion or "value" in challenger:
        first, second = champion.get("value"), challenger.get("value")
        if first is None or second is None:
            return False
        return abs(float(second) - float(first)) <= value_tolerance * max(1.0, abs(float(first)))
    return str(champion.get("label")) == str(challenger.get("label"))


RUNNING, PROMOTED, ROLLED_BACK = "running", "promoted", "rolled_back"


@dataclass(frozen=True)
class Figures:
    """The challenger against the champion on the records both scored since the rollout started."""

    pairs: int  # records both models scored
    agreement: float | None
    prediction_drift: dict[str, Any] | None  # Evidently's {method, threshold, score, drifted} for the predictions
    challenger_scorings: int  # the challenger's scorings (requests or batches), failed ones included
    challenger_errors: int
    champion_p99_ms: float | None
    challenger_p99_ms: float | None
    labelled_pairs: int = 0
    champion_live_score: float | None = None
    challenger_live_score: float | None = None
    hours: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def error_rate(self) -> float | None:
        return self.challenger_errors / self.challenger_scorings if self.challenger_scorings else None

    @property
    def latency_ratio(self) -> float | None:
        if not self.champion_p99_ms or self.challenger_p99_ms is None:
            return None
        return self.challenger_p99_ms / self.champion_p99_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "notes": list(self.notes),
            "error_rate": self.error_rate,
            "latency_ratio": self.latency_ratio,
        }


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def paired_rows(engine: sa.Engine, model_name: str, challenger_version: str, since: dt.datetime) -> pd.DataFrame:
    """The records both models scored since `since`: one row per record with the id, each model's prediction
    (`<role>_prediction`, `<role>_probabilities`) and model time (`<role>_ms`), and `request_id`."""
    challenger, champion = inference_log.alias("challenger"), inference_log.alias("champion")
    prediction = "value" if _is_regression(engine, model_name) else "label"
    query = (
        sa.select(
            challenger.c.request_id,
            challenger.c.record_id,
            challenger.c[prediction].label("challenger_prediction"),
            sa.type_coerce(challenger.c.probabilities, sa.Text).label("challenger_probabilities"),
            challenger.c.latency_ms.label("challenger_ms"),
            champion.c[prediction].label("champion_prediction"),
            sa.type_coerce(champion.c.probabilities, sa.Text).label("champion_probabilities"),
            champion.c.latency_ms.label("champion_ms"),
        )
        .join(
            champion,
            sa.and_(
                champion.c.request_id == challenger.c.request_id,
                champion.c.record_index == challenger.c.record_index,
                champion.c.model_name == model_name,
                champion.c.role == "champion",
                champion.c.error.is_(None),
                champion.c.predicted_at >= since,
            ),
        )
        .where(
            challenger.c.model_name == model_name,
            challenger.c.role == "challenger",
            challenger.c.model_version == challenger_version,
            challenger.c.error.is_(None),
            challenger.c.predicted_at >= since,
        )
    )
    with engine.connect() as connection:
        return pd.DataFrame(
            connection.execute(query).mappings().all(), columns=[c.name for c in query.selected_columns]
        )


def _is_regression(engine: sa.Engine, model_name: str) -> bool:
    # Only the pairing query needs to know; the config says it too, but this module reads the log alone.
    with engine.connect() as connection:
        found = connection.execute(
            sa.select(inference_log.c.value)
            .where(inference_log.c.model_name == model_name, inference_log.c.value.is_not(None))
            .limit(1)
        ).first()
    return found is not None


def challenger_scorings(
    engine: sa.Engine, model_name: str, challenger_version: str, since: dt.datetime
) -> tuple[int, int]:
    """How many scorings (requests) the challenger made since `since`, and how many of them raised."""
    log = inference_log.c
    query = sa.select(
        sa.func.count(sa.distinct(log.request_id)),
        sa.func.count(sa.distinct(sa.case((log.error.is_not(None), log.request_id)))),
    ).where(
        log.model_name == model_name,
        log.role == "challenger",
        log.model_version == challenger_version,
        log.predicted_at >= since,
    )
    with engine.connect() as connection:
        scorings, errors = connection.execute(query).one()
    return int(scorings), int(errors)


def compare(
    engine: sa.Engine,
    config: PipelineConfig,
    challenger_version: str,
    started_at: dt.datetime,
    now: dt.datetime,
    labels: pd.DataFrame | None = None,
) -> Figures:
    """Measure the rollout of `challenger_version` since `started_at`. `labels`: the source's rows (id and
    target) of the period, when it has any, for the live metric of each model on the same records."""
    pairs = paired_rows(engine, config.name, challenger_version, started_at)
    scorings, errors = challenger_scorings(engine, config.name, challenger_version, started_at)
    hours = (now - started_at).total_seconds() / 3600
    if pairs.empty:
        return Figures(0, None, None, scorings, errors, None, None, hours=hours)
    tolerance = config.rollout.criteria.value_tolerance
    key = "value" if config.dataset.task == "regression" else "label"
    agreed = [
        same_answer({key: a}, {key: b}, tolerance)
        for a, b in zip(pairs["champion_prediction"], pairs["challenger_prediction"], strict=True)
    ]
    per_request = pairs.drop_duplicates("request_id")
    notes = []
    drift = _prediction_drift(pairs, config, notes)
    figures = Figures(
        pairs=len(pairs),
        agreement=sum(agreed) / len(pairs),
        prediction_drift=drift,
        challenger_scorings=scorings,
        challenger_errors=errors,
        champion_p99_ms=_p99(per_request["champion_ms"]),
        challenger_p99_ms=_p99(per_request["challenger_ms"]),
        hours=hours,
    )
    if labels is None:
        return dataclasses.replace(figures, notes=tuple(notes))
    scores = {}
    for role in ("champion", "challenger"):
        live = pairs.rename(columns={f"{role}_prediction": PREDICTION_COLUMN, f"{role}_probabilities": "probabilities"})
        scores[role] = live_performance(config, live, labels)
    labelled = scores["champion"].labelled_rows
    if scores["champion"].score is None:
        notes.append(f"live metric: {scores['champion'].note}")
    return dataclasses.replace(
        figures,
        labelled_pairs=labelled,
        champion_live_score=scores["champion"].score,
        challenger_live_score=scores["challenger"].score,
        notes=tuple(notes),
    )


def _prediction_drift(pairs: pd.DataFrame, config: PipelineConfig, notes: list[str]) -> dict[str, Any] | None:
    """Evidently's drift verdict for the challenger's predictions against the champion's on the same records."""
    prediction_only = Dataset.model_construct(**{**dict(config.dataset), "features": []})
    frames = [
        pd.DataFrame({PREDICTION_COLUMN: pairs[f"{role}_prediction"].astype(str)})
        for role in ("champion", "challenger")
    ]
    if frames[0][PREDICTION_COLUMN].nunique() + frames[1][PREDICTION_COLUMN].nunique() < 2:
        notes.append("prediction drift: both models predict one and the same class throughout")
        return None
    report = measure_drift(frames[0], frames[1], prediction_only)
    if report.prediction is None:
        return None
    found = report.prediction
    return {"method": found.method, "threshold": found.threshold, "score": found.score, "drifted": found.drifted}


def _p99(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.quantile(0.99)) if len(values) else None


def judge(figures: Figures, config: PipelineConfig) -> Judgement:
    """Wait, promote or roll back, and why, from a rollout's figures and the config's `rollout` section."""
    rollout, criteria = config.rollout, config.rollout.criteria
    # Errors are judged as soon as there are enough scorings to tell: a broken challenger need not wait.
    enough_scorings = figures.challenger_scorings >= min(rollout.min_rows, 100)
    if enough_scorings and figures.error_rate is not None and figures.error_rate > criteria.max_error_rate:
        return Judgement(
            "rollback",
            f"error rate {figures.error_rate:.3f} above {criteria.max_error_rate} "
            f"({figures.challenger_errors} of {figures.challenger_scorings} scorings raised)",
        )
    if figures.pairs < rollout.min_rows or figures.hours < rollout.min_hours:
        waiting = (
            f"{figures.pairs} of {rollout.min_rows} records scored by both, "
            f"{figures.hours:.2f} of {rollout.min_hours} h"
        )
        if figures.hours >= rollout.max_hours:
            return Judgement("rollback", f"no verdict within {rollout.max_hours} h: {waiting}")
        return Judgement("wait", waiting)
    failures = []
    if figures.agreement is not None and figures.agreement < criteria.min_agreement:
        failures.append(f"agreement {figures.agreement:.3f} below {criteria.min_agreement}")
    drift = figures.prediction_drift
    if criteria.rollback_on_prediction_drift and drift and drift["drifted"]:
        failures.append(f"the predictions drift from the champion's ({drift['method']} {drift['score']:.3g})")
    if figures.latency_ratio is not None and figures.latency_ratio > criteria.max_latency_ratio:
        failures.append(
            f"p99 model time {figures.challenger_p99_ms:.3f} ms is {figures.latency_ratio:.2f}x the champion's "
            f"(at most {criteria.max_latency_ratio}x)"
        )
    if figures.champion_live_score is not None and figures.challenger_live_score is not None:
        better = 1 if higher_is_better(config, config.model.primary_metric) else -1
        drop = better * (figures.champion_live_score - figures.challenger_live_score)
        if drop > criteria.max_live_metric_drop:
            failures.append(
                f"live {config.model.primary_metric} {figures.challenger_live_score:.4f} against the champion's "
                f"{figures.champion_live_score:.4f} on {figures.labelled_pairs} labelled records"
            )
    if failures:
        return Judgement("rollback", "; ".join(failures) + f" (on {figures.pairs} records, {figures.hours:.2f} h)")
    summary = f"agreement {figures.agreement:.3f} on {figures.pairs} records in {figures.hours:.2f} h"
    if figures.error_rate is not None:
        summary += f", error rate {figures.error_rate:.3f}"
    if figures.latency_ratio is not None:
        summary += f", p99 model time {figures.latency_ratio:.2f}x the champion's"
    if figures.challenger_live_score is not None:
        summary += (
            f", live {config.model.primary_metric} {figures.challenger_live_score:.4f} against "
            f"{figures.champion_live_score:.4f}"
        )
    return Judgement("promote", summary)


def record_start(engine: sa.Engine, row: dict[str, Any]) -> int:
    """Record a rollout the pipeline started (once per Airflow run: a retry finds its row); returns its id."""
    table = rollouts.c
    with engine.begin() as connection:
        same = sa.select(table.id).where(
            table.model_name == row["model_name"],
            table.challenger_version == row["challenger_version"],
            table.airflow_run_id == row["airflow_run_id"],
        )
        if (found := connection.execute(same).scalar()) is not None:
            return int(found)
        return int(connection.execute(rollouts.insert().values(state=RUNNING, **row)).inserted_primary_key[0])


def running(engine: sa.Engine, model_name: str) -> dict[str, Any] | None:
    """The model's running rollout, as recorded (None: none)."""
    table = rollouts.c
    query = sa.select(rollouts).where(table.model_name == model_name, table.state == RUNNING).order_by(table.id.desc())
    with engine.connect() as connection:
        row = connection.execute(query).mappings().first()
    return None if row is None else _plain(row)


def record_check(engine: sa.Engine, rollout_id: int, figures: Figures, judgement: Judgement, now: dt.datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            rollouts.update()
            .where(rollouts.c.id == rollout_id)
            .values(figures=figures.to_dict(), checked_at=now, reason=judgement.reason)
        )


def record_end(engine: sa.Engine, rollout_id: int, state: str, reason: str, now: dt.datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            rollouts.update().where(rollouts.c.id == rollout_id).values(state=state, reason=reason, ended_at=now)
        )


def history(engine: sa.Engine, model_name: str, last: int = 10) -> list[dict[str, Any]]:
    """The model's last `last` rollouts, newest first."""
    table = rollouts.c
    query = sa.select(rollouts).where(table.model_name == model_name).order_by(table.id.desc()).limit(last)
    with engine.connect() as connection:
        return [_plain(row) for row in connection.execute(query).mappings().all()]


def _plain(row: Any) -> dict[str, Any]:
    found = dict(row)
    for moment in ("started_at", "ended_at", "checked_at"):
        if found.get(moment) is not None:
            found[moment] = as_utc(found[moment])
    return found


def approval_request(
    on_trial: dict[str, Any], figures: dict[str, Any], judgement: dict[str, Any], links: dict[str, str]
) -> str:
    """The Markdown a person reads before promoting a challenger after its rollout: the check's verdict and the
    two models side by side on the same live records."""

    def shown(value: Any, digits: str = ".4f") -> str:
        return "–" if value is None else format(value, digits)

    drift = figures.get("prediction_drift") or {}
    rows = [
        ("records scored by both", str(figures["pairs"]), ""),
        ("agreement", shown(figures["agreement"]), ""),
        (
            "prediction drift between the two",
            f"{drift['method']} {drift['score']:.4g}, {'drifted' if drift['drifted'] else 'no drift'}"
            if drift
            else "–",
            "",
        ),
        ("scorings that raised", f"{figures['challenger_errors']} of {figures['challenger_scorings']}", "0"),
        ("p99 model time (ms)", shown(figures["challenger_p99_ms"], ".3f"), shown(figures["champion_p99_ms"], ".3f")),
        (
            f"live metric on {figures['labelled_pairs']} labelled records",
            shown(figures["challenger_live_score"]),
            shown(figures["champion_live_score"]),
        ),
    ]
    table = "\n".join(f"| {name} | {challenger} | {champion} |" for name, challenger, champion in rows)
    share = f" ({on_trial['share']:.0%} of requests)" if on_trial["mode"] == "canary" else ""
    lines = [
        f"**Rollout:** {on_trial['mode']}{share} of `{on_trial['tag']}` since {on_trial['started_at']}, "
        f"{figures['hours']:.2f} h",
        f"**Check:** {judgement['verdict'].upper()}: {judgement['reason']}",
        "",
        "| on the same live records | challenger | champion |",
        "|---|---|---|",
        table,
        "",
        *(f"- [{name}]({url})" for name, url in links.items()),
    ]
    return "\n".join(lines)
