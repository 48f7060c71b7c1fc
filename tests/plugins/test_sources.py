"""plugins/mlops_airflow/sources.py: HTTP header secrets from real Airflow connections (AIRFLOW_CONN_<ID>, JSON)
and the environment, sent to a loopback API that refuses requests without them."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from airflow.sdk.log import redact

from include.mlops.config import HttpSource, Secret, load_config
from include.mlops.sources import SourceError
from mlops_airflow.sources import fetcher
from tests.mlops.fake_api import FakeApi, Reply

START = dt.datetime(2026, 11, 14, tzinfo=dt.UTC)
RECORDS = [
    {"sample_id": "a", "event_time": "2026-11-14T08:00:00Z"},
    {"sample_id": "b", "event_time": "2026-11-15T00:00:00Z"},
]


@pytest.fixture(scope="module")
def api():
    server = FakeApi()
    yield server
    server.close()


def _guarded(header: str, expected: str):
    """The records, for a request whose `header` is `expected`; 401 otherwise."""
    return lambda hit: Reply(body=RECORDS) if hit.headers.get(header.lower()) == expected else Reply(401, "who?")


def _fetch(url: str, headers: dict):
    config = load_config("breast_cancer.yaml")
    config = config.model_copy(update={"source": HttpSource(kind="http", url=url, headers=headers)})
    return fetcher(config, as_of=START)(START, START + dt.timedelta(days=1))


def _connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "http", **fields}))


@pytest.mark.parametrize(
    ("fields", "secret", "header", "sent"),
    [
        ({"password": "p4ss-word"}, {"prefix": "Bearer "}, "Authorization", "Bearer p4ss-word"),
        ({"login": "acct-7"}, {"field": "login"}, "X-Account-Token", "acct-7"),
        ({"extra": {"api_key": "k3y-123"}}, {"field": "extra.api_key"}, "X-Api-Key", "k3y-123"),
    ],
    ids=["password", "login", "extra"],
)
def test_a_header_from_an_airflow_connection_reaches_the_api(api, monkeypatch, fields, secret, header, sent):
    _connection(monkeypatch, "vendor_api", **fields)
    url = api.route(f"/{header}", _guarded(header, sent))
    fetched = _fetch(url, {header: Secret(connection="vendor_api", **secret), "Accept": "application/json"})
    assert fetched.rows["sample_id"].tolist() == ["a"]  # b is of the next day
    assert fetched.outside_interval == 1
    (hit,) = api.hits_on(f"/{header}")
    assert hit.headers["accept"] == "application/json"
    # Airflow masks the value in task logs, a login or host as much as a password.
    assert redact(f"sent {sent}") == "sent " + sent.replace(sent.removeprefix(secret.get("prefix", "")), "***")


def test_a_header_from_the_environment_reaches_the_api(api, monkeypatch):
    monkeypatch.setenv("VENDOR_TOKEN", "env-t0ken")
    url = api.route("/env", _guarded("Authorization", "Token env-t0ken"))
    fetched = _fetch(url, {"Authorization": Secret(env="VENDOR_TOKEN", prefix="Token ")})
    assert fetched.rows["sample_id"].tolist() == ["a"]
    assert redact("env-t0ken") == "***"


def test_a_header_naming_a_connection_that_does_not_exist_names_the_header_and_the_connection(api):
    url = api.route("/none", lambda hit: Reply(body=RECORDS))
    with pytest.raises(SourceError, match=r"^headers\.Authorization: there is no Airflow connection 'no_such_api'$"):
        _fetch(url, {"Authorization": Secret(connection="no_such_api")})
    assert api.hits_on("/none") == []


def test_a_connection_without_the_field_names_it_and_shows_no_value(api, monkeypatch):
    _connection(monkeypatch, "half_api", password="hidden-pw", extra={"other": "x"})
    url = api.route("/half", lambda hit: Reply(body=RECORDS))
    with pytest.raises(SourceError) as caught:
        _fetch(url, {"X-Api-Key": Secret(connection="half_api", field="extra.api_key")})
    assert str(caught.value) == "headers.X-Api-Key: Airflow connection 'half_api' has no extra.api_key"


def test_a_missing_environment_variable_names_the_header_and_the_variable(api, monkeypatch):
    monkeypatch.delenv("VENDOR_TOKEN", raising=False)
    url = api.route("/env-missing", lambda hit: Reply(body=RECORDS))
    with pytest.raises(SourceError, match=r"headers\.Authorization: the environment variable 'VENDOR_TOKEN'"):
        _fetch(url, {"Authorization": Secret(env="VENDOR_TOKEN")})


def test_without_the_header_the_api_refuses_and_the_error_says_so(api, monkeypatch):
    _connection(monkeypatch, "vendor_api", password="right")
    url = api.route("/wrong", _guarded("Authorization", "right-but-other"))
    with pytest.raises(SourceError, match="HTTP 401 Unauthorized, not retried") as caught:
        _fetch(url, {"Authorization": Secret(connection="vendor_api")})
    assert "right" not in str(caught.value)
