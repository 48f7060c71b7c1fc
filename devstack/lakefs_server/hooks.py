"""lakeFS actions: `_lakefs_actions/*.yaml` files in the repository that run webhooks on events.

An action names the events it reacts to (`on: {pre-commit: {branches: [...]}}`) and its hooks. Like
lakeFS, the actions of a pre-commit come from the branch being committed (uncommitted files included) and
those of a pre-merge from the merge source; a failing pre-hook (a non-2xx answer, a timeout, an
unreachable URL, an invalid action file) aborts the operation with 412. Post-hooks run after it and
their failures are only recorded. Only `webhook` hooks run here; lakeFS's Lua and Airflow hooks do not.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import secrets
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml

ACTIONS_PREFIX = "_lakefs_actions/"
PRE_COMMIT, POST_COMMIT, PRE_MERGE, POST_MERGE = "pre-commit", "post-commit", "pre-merge", "post-merge"
# Events lakeFS accepts in an action file; the branch and tag ones are valid here but never fire.
KNOWN_EVENTS = {
    PRE_COMMIT,
    POST_COMMIT,
    PRE_MERGE,
    POST_MERGE,
    "pre-create-branch",
    "post-create-branch",
    "pre-delete-branch",
    "post-delete-branch",
    "pre-create-tag",
    "post-create-tag",
    "pre-delete-tag",
    "post-delete-tag",
    "pre-revert",
    "post-revert",
    "pre-cherry-pick",
    "post-cherry-pick",
}
_ACTION_NAME = re.compile(r"^\w[\w\-. ]+$")
_HOOK_ID = re.compile(r"^[_a-zA-Z][\-_a-zA-Z0-9]{1,255}$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DEFAULT_TIMEOUT = 60.0  # lakeFS's default webhook timeout: one minute


class InvalidAction(ValueError):
    pass


class _Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans, as lakeFS's Go parser reads them: an action's `on:` key is the string "on"."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Hook:
    """A webhook: where the event is POSTed, and how long to wait for its answer."""

    id: str
    url: str
    timeout: float
    query_params: list[tuple[str, str]]
    headers: dict[str, str]


@dataclass(frozen=True)
class Action:
    name: str
    on: dict[str, list[str]]  # event -> branch patterns (empty: every branch)
    hooks: list[Hook]

    def matches(self, event_type: str, branch: str) -> bool:
        if event_type not in self.on:
            return False
        patterns = self.on[event_type]
        return not patterns or any(fnmatch.fnmatchcase(branch, pattern) for pattern in patterns)


@dataclass(frozen=True)
class Event:
    """What a hook is told: lakeFS's webhook body, less the per-hook fields."""

    event_type: str
    repository_id: str
    branch_id: str
    source_ref: str
    commit_message: str
    committer: str
    commit_metadata: dict[str, str]
    commit_id: str = ""


@dataclass
class HookRun:
    hook_run_id: str
    action: str
    hook_id: str
    start_time: str
    end_time: str
    output: str  # the request and the answer, as lakeFS shows a hook's log
    error: str  # why it failed; empty when it passed

    @property
    def passed(self) -> bool:
        return not self.error


@dataclass
class Run:
    run_id: str
    event: Event
    start_time: str
    end_time: str = ""
    hooks: list[HookRun] = field(default_factory=list)
    error: str = ""  # why the run failed, for the 412 message

    @property
    def passed(self) -> bool:
        return not self.error


def parse_actions(files: dict[str, bytes]) -> list[Action]:
    """The actions defined by the given `_lakefs_actions/` files (path -> content)."""
    actions = []
    for path, content in sorted(files.items()):
        try:
            actions.append(_parse_action(yaml.load(content, Loader=_Yaml12Loader)))  # a SafeLoader subclass
        except (yaml.YAMLError, InvalidAction) as exc:
            raise InvalidAction(f"parsing file {path}: {exc}") from exc
    names = [action.name for action in actions]
    for name in names:
        if names.count(name) > 1:
            raise InvalidAction(f"action name '{name}' already loaded: invalid action")
    return actions


def _parse_action(doc: Any) -> Action:
    if not isinstance(doc, dict):
        raise InvalidAction("an action file must be a YAML mapping: invalid action")
    name = doc.get("name")
    if not name:
        raise InvalidAction("'name' is required: invalid action")
    if not isinstance(name, str) or not _ACTION_NAME.match(name):
        raise InvalidAction("'name' is invalid: invalid action")
    on = doc.get("on") or {}
    if not isinstance(on, dict) or not on:
        raise InvalidAction("'on' is required: invalid action")
    events: dict[str, list[str]] = {}
    for event, spec in on.items():
        if event not in KNOWN_EVENTS:
            raise InvalidAction(f"event '{event}' is not supported: invalid action")
        if not isinstance(spec or {}, dict):
            raise InvalidAction(f"event '{event}' must map to {{branches: [...]}}: invalid action")
        events[event] = [str(branch) for branch in ((spec or {}).get("branches") or [])]
    hooks: list[Hook] = []
    for index, raw in enumerate(doc.get("hooks") or []):
        if not isinstance(raw, dict):
            raise InvalidAction(f"hook[{index}] must be a mapping: invalid action")
        hook_id = str(raw.get("id", ""))
        if not _HOOK_ID.match(hook_id):
            raise InvalidAction(f"hook[{index}] missing ID: invalid action")
        if any(hook.id == hook_id for hook in hooks):
            raise InvalidAction(f"hook[{index}] duplicate ID '{hook_id}': invalid action")
        if raw.get("type") != "webhook":
            raise InvalidAction(
                f"hook[{index}] type '{raw.get('type')}' is not supported by this server (only webhook)"
            )
        properties = raw.get("properties") or {}
        if not isinstance(properties, dict):
            raise InvalidAction(f"hook[{index}] properties must be a mapping: invalid action")
        hooks.append(_webhook(hook_id, properties))
    return Action(name, events, hooks)


def _webhook(hook_id: str, properties: dict[str, Any]) -> Hook:
    url = properties.get("url")
    if not isinstance(url, str):
        raise InvalidAction(f"hook '{hook_id}': missing url: webhook wrong format")
    timeout = parse_duration(str(properties["timeout"])) if properties.get("timeout") else DEFAULT_TIMEOUT
    query_params = [
        (str(key), str(item))
        for key, value in (properties.get("query_params") or {}).items()
        for item in (value if isinstance(value, list) else [value])
    ]
    headers = {str(key): str(value) for key, value in (properties.get("headers") or {}).items()}
    return Hook(hook_id, url, timeout, query_params, headers)


def parse_duration(text: str) -> float:
    """A Go duration ("10s", "1m30s", "500ms") in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise InvalidAction(f"webhook request duration: invalid duration {text!r}")
    return sum(float(number) * _SECONDS[unit] for number, unit in parts)


def run_hooks(actions: list[Action], event: Event) -> Run | None:
    """Run the hooks of the actions matching `event`; None when no action matches (nothing is recorded)."""
    matched = [action for action in actions if action.matches(event.event_type, event.branch_id)]
    if not matched:
        return None
    run = Run(run_id=new_run_id(), event=event, start_time=_now())
    failures = []
    for action_index, action in enumerate(matched):
        for hook_index, hook in enumerate(action.hooks):
            hook_run = _run_webhook(f"{action_index:04d}_{hook_index:04d}", action, hook, event)
            run.hooks.append(hook_run)
            if not hook_run.passed:
                where = f"hook run id '{hook_run.hook_run_id}' failed on action '{action.name}' hook '{hook.id}'"
                failures.append(f"{where}: {hook_run.error}")
                break  # like lakeFS, an action stops at its first failing hook
    run.end_time = _now()
    if failures:
        run.error = f"{event.event_type} hook aborted, run id '{run.run_id}': " + "; ".join(failures)
    return run


def failed_to_load(event: Event, error: InvalidAction) -> Run:
    """The run lakeFS records when the action files themselves are broken: it fails the operation."""
    now = _now()
    run = Run(run_id=new_run_id(), event=event, start_time=now, end_time=now)
    run.error = f"{event.event_type} hook aborted, run id '{run.run_id}': {error}"
    return run


def _run_webhook(hook_run_id: str, action: Action, hook: Hook, event: Event) -> HookRun:
    start = _now()
    body = {
        "event_type": event.event_type,
        "event_time": start,
        "action_name": action.name,
        "hook_id": hook.id,
        "repository_id": event.repository_id,
        "branch_id": event.branch_id,
        "source_ref": event.source_ref,
        "commit_message": event.commit_message,
        "committer": event.committer,
        "commit_metadata": event.commit_metadata,
    }
    if event.commit_id:
        body["commit_id"] = event.commit_id
    log = [f"Request:\nPOST {hook.url}", f"Request Body:\n{json.dumps(body)}"]
    try:
        response = httpx.post(hook.url, json=body, params=hook.query_params, headers=hook.headers, timeout=hook.timeout)
        log.append(f"Response:\n{response.status_code} {response.reason_phrase}\n{response.text}")
        error = (
            "" if 200 <= response.status_code < 300 else f"webhook request failed (status code: {response.status_code})"
        )
    except httpx.HTTPError as exc:
        error = f"webhook request failed: {type(exc).__name__}: {exc}"
    return HookRun(hook_run_id, action.name, hook.id, start, _now(), "\n\n".join([*log, error]), error)


def new_run_id() -> str:
    # Sortable by time, so that listing newest first is ordering by id.
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f") + secrets.token_hex(3)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def save_run(conn: sqlite3.Connection, repo: str, run: Run, commit_id: str = "") -> None:
    conn.execute(
        "INSERT INTO action_runs (repo, run_id, branch, commit_id, event_type, status, start_time, end_time) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            repo,
            run.run_id,
            run.event.branch_id,
            commit_id,
            run.event.event_type,
            "completed" if run.passed else "failed",
            run.start_time,
            run.end_time,
        ),
    )
    conn.executemany(
        "INSERT INTO hook_runs (repo, run_id, hook_run_id, action, hook_id, status, start_time, end_time, "
        "output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                repo,
                run.run_id,
                hook.hook_run_id,
                hook.action,
                hook.hook_id,
                "completed" if hook.passed else "failed",
                hook.start_time,
                hook.end_time,
                hook.output,
            )
            for hook in run.hooks
        ],
    )
