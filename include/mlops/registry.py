"""The champion/challenger gate on MLflow registry aliases.

The best candidate on the validation split becomes a new version of the registered model with alias
`challenger`. It is compared with the current `champion` on this run's test split, and may replace it only if
it is better by `gate.min_improvement` and no worse than each of `gate.floors`. `champion` moves in
`promote`, and the version it leaves keeps the alias `previous-champion`. The decision (both scores, the
margin and the reason) is an artifact of the training run and tags on the new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from include.mlops import training
from include.mlops.config import PipelineConfig
from include.mlops.tracking import CandidateResult, load_sklearn_model

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"


class NoCandidate(RuntimeError):
    """Every candidate failed: there is nothing to gate."""


class RollbackRefused(ValueError):
    """The version asked to roll back to does not exist, serves already, or was never deployable."""


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    metric: str
    challenger: str
    challenger_run_id: str
    challenger_model_uri: str
    challenger_score: float
    champion_version: str | None
    champion_score: float | None
    margin: float | None
    min_improvement: float
    floors_failed: dict[str, float] = field(default_factory=dict)
    failed_candidates: list[str] = field(default_factory=list)
    version: str | None = None
    # Every metric of both models on this run's test split, for the person who approves the challenger.
    challenger_test: dict[str, float] = field(default_factory=dict)
    champion_test: dict[str, float] | None = None

    def summary(self) -> str:
        """The decision in one line, as the gate task's log states it."""
        verdict = "PROMOTE" if self.promote else "REJECT"
        champion = (
            f"champion v{self.champion_version} {self.metric}={self.champion_score:.4f}"
            if self.champion_version
            else "no champion"
        )
        margin = f", margin {self.margin:+.4f} (needed {self.min_improvement:+.4f})" if self.margin is not None else ""
        failed = f"; failed candidates: {', '.join(self.failed_candidates)}" if self.failed_candidates else ""
        return (
            f"{verdict}: challenger {self.challenger} {self.metric}={self.challenger_score:.4f} vs {champion}"
            f"{margin}: {self.reason}{failed}"
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> GateDecision:
        """The decision in `values`, which may carry more (what register_challenger hands on adds the ONNX URI)."""
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})

    def as_tags(self) -> dict[str, str]:
        return {
            "gate_decision": "promote" if self.promote else "reject",
            "gate_reason": self.reason,
            "gate_metric": self.metric,
            "gate_challenger_score": f"{self.challenger_score:.6f}",
            "gate_champion_version": self.champion_version or "",
            "gate_champion_score": "" if self.champion_score is None else f"{self.champion_score:.6f}",
            "gate_margin": "" if self.margin is None else f"{self.margin:.6f}",
        }


def approval_request(decision: GateDecision, links: Mapping[str, str]) -> str:
    """What a person reads before approving the challenger (Markdown): the gate's verdict, both models' metrics
    on the same test split side by side, and `links` (name -> URL) to the evidence."""
    champion = f"champion v{decision.champion_version}" if decision.champion_version else "champion (none yet)"
    challenger = f"challenger v{decision.version}" if decision.version else "challenger"
    rows = [f"| metric (test split) | {challenger} | {champion} |", "|---|---|---|"]
    for metric, score in sorted(decision.challenger_test.items()):
        theirs = (decision.champion_test or {}).get(metric)
        marker = " **(gate)**" if metric == decision.metric else ""
        rows.append(f"| {metric}{marker} | {score:.4f} | {'-' if theirs is None else f'{theirs:.4f}'} |")
    evidence = [f"- [{name}]({url})" for name, url in links.items()]
    return "\n".join([f"**Gate:** {decision.summary()}", "", *rows, "", *evidence])


def best_candidate(config: PipelineConfig, results: list[CandidateResult]) -> CandidateResult:
    """The candidate with the best primary metric on the validation split (ties: the first in config order)."""
    if not results:
        raise NoCandidate("every candidate failed to train; see the failed mapped tasks")
    metric = config.model.primary_metric
    sign = 1 if training.higher_is_better(config, metric) else -1
    return max(results, key=lambda r: sign * r.valid.get(metric, float("-inf") * sign))


def decide(
    config: PipelineConfig,
    challenger: CandidateResult,
    champion_version: str | None,
    champion_test: Mapping[str, float] | None,
    failed_candidates: list[str],
) -> GateDecision:
    """Whether `challenger` may replace the champion, judged on the same test split."""
    metric = config.model.primary_metric
    sign = 1 if training.higher_is_better(config, metric) else -1
    floors_failed = {
        name: floor
        for name, floor in config.gate.floors.items()
        if sign_of(config, name) * (challenger.test.get(name, float("nan")) - floor) < 0
        or pd.isna(challenger.test.get(name))
    }
    score = challenger.test[metric]
    champion_score = None if champion_test is None else champion_test[metric]
    margin = None if champion_score is None else sign * (score - champion_score)
    if floors_failed:
        promote = False
        reason = "below the floor(s) " + ", ".join(
            f"{name} {challenger.test.get(name, float('nan')):.4f} vs {floor}" for name, floor in floors_failed.items()
        )
    elif margin is None:
        promote, reason = True, "first model: there is no champion yet, and the floors are met"
    elif margin >= config.gate.min_improvement:
        promote, reason = True, "better than the champion by at least the required margin"
    else:
        promote, reason = False, "not better than the champion by the required margin"
    return GateDecision(
        promote=promote,
        reason=reason,
        metric=metric,
        challenger=challenger.candidate,
        challenger_run_id=challenger.run_id,
        challenger_model_uri=challenger.model_uri,
        challenger_score=score,
        champion_version=champion_version,
        champion_score=champion_score,
        margin=margin,
        min_improvement=config.gate.min_improvement,
        floors_failed=floors_failed,
        failed_candidates=failed_candidates,
        challenger_test=dict(challenger.test),
        champion_test=None if champion_test is None else dict(champion_test),
    )


def sign_of(config: PipelineConfig, metric: str) -> int:
    return 1 if training.higher_is_better(config, metric) else -1


def version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def champion_test_metrics(
    client: MlflowClient, config: PipelineConfig, test: pd.DataFrame
) -> tuple[str | None, dict[str, float] | None]:
    """The champion's version and its metrics on `test` (this run's split), or (None, None) without one."""
    version = version_by_alias(client, config.model.registered_name, CHAMPION)
    if version is None:
        return None, None
    model = load_sklearn_model(f"models:/{config.model.registered_name}@{CHAMPION}")
    return version.version, training.evaluate(model, config, test)


def register_challenger(
    client: MlflowClient, config: PipelineConfig, decision: GateDecision, tags: Mapping[str, str]
) -> str:
    """Register the challenger's model as a version (once per run: a retry finds it), tag it, alias it."""
    name = config.model.registered_name
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(name, description=f"{config.dataset.task} model of {config.dataset.name}")
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{decision.challenger_run_id}'")
    if existing:
        version = existing[0].version
    else:
        version = client.create_model_version(
            name,
            decision.challenger_model_uri,
            run_id=decision.challenger_run_id,
            tags=dict(tags),
            description=decision.summary(),
            model_id=decision.challenger_model_uri.removeprefix("models:/"),
        ).version
    for key, value in {**tags, **decision.as_tags()}.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, CHALLENGER, version)
    return str(version)


def promote(client: MlflowClient, name: str, version: str) -> str | None:
    """Move `champion` to `version`; the version it left becomes `previous-champion`. Returns that version."""
    current = version_by_alias(client, name, CHAMPION)
    if current is not None and str(current.version) == str(version):
        return None  # already the champion (a retried promotion)
    if current is not None:
        client.set_registered_model_alias(name, PREVIOUS_CHAMPION, current.version)
    client.set_registered_model_alias(name, CHAMPION, version)
    return None if current is None else str(current.version)


def rollback_target(client: MlflowClient, name: str, requested: str | None = None) -> str:
    """The version a rollback of `name` puts back: `requested`, or by default the previous champion. It must
    exist, not be the champion already, and have passed ONNX parity with an ONNX model to deploy (a version
    registered by ml_training always has; one whose parity failed never was registered, and one registered by
    hand may lack both)."""
    champion = version_by_alias(client, name, CHAMPION)
    if requested is None:
        previous = version_by_alias(client, name, PREVIOUS_CHAMPION)
        if previous is None:
            raise RollbackRefused(f"{name} has no {PREVIOUS_CHAMPION}: name the version to roll back to")
        requested = str(previous.version)
    try:
        version = client.get_model_version(name, requested)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        known = sorted((v.version for v in client.search_model_versions(f"name = '{name}'")), key=int)
        raise RollbackRefused(
            f"{name} has no version {requested!r} (versions: {', '.join(map(str, known)) or 'none'})"
        ) from None
    if champion is not None and str(champion.version) == str(version.version):
        raise RollbackRefused(f"{name} v{version.version} is the champion already")
    parity = version.tags.get("onnx_parity")
    if parity != "passed" or not version.tags.get("onnx_model_uri"):
        raise RollbackRefused(
            f"{name} v{version.version} is not deployable: onnx_parity={parity or 'not recorded'}, "
            f"onnx_model_uri {'recorded' if version.tags.get('onnx_model_uri') else 'not recorded'}"
        )
    return str(version.version)
