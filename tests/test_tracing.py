"""Traces: recorded through response hooks, redacted before storage, rendered three ways."""

from __future__ import annotations

import shlex
import time

import pytest

from cortex_nb import HTTPClient
from cortex_nb.http.tracing import TraceLog

from .support import API_PATH, make_jwt, sandbox_credentials


@pytest.fixture()
def traced(sandbox):
    """A client of the sandbox whose API and token requests are traced into one log."""
    creds = sandbox_credentials(sandbox)
    client = HTTPClient(url=sandbox.url, credentials=creds)
    log = TraceLog(secrets=creds.secrets)
    log.attach(client.session)
    log.attach(creds.http, kind="token")
    log.attach(client.session)  # attaching twice must not record twice
    return client, log


def all_text(log: TraceLog) -> str:
    return "\n".join(str(t) + t.to_curl() + t._repr_html_() + repr(t.as_record()) for t in log)


def test_each_request_becomes_one_trace_with_its_facts(traced):
    client, log = traced
    body = {"jobId": "trace-j1", "params": {"query": "SELECT 1"}}
    reply = client.request(method="POST", path="/query/v2/jobs", json=body)
    kinds = [(t.kind, t.method, t.status) for t in log]
    assert kinds == [("token", "POST", 200), ("api", "POST", 201)]
    trace = log.last()[0]
    assert trace.url.endswith("/query/v2/jobs")
    assert trace.request_id == reply.headers["x-request-id"] and trace.request_id
    assert trace.elapsed_ms >= 0
    assert '"query":"SELECT 1"' in trace.request_body
    assert '"jobId":"trace-j1"' in trace.response_body
    assert log.last(1)[0].note is None and log.last(2)[0].note == "token refresh"


def test_secrets_are_redacted_before_storage(traced):
    client, log = traced
    client.request(method="GET", path=API_PATH, params={"token": "qs-SECRET-1"})
    text = all_text(log)
    for secret in (*client.credentials.secrets(), "qs-SECRET-1"):
        assert secret not in text
    token_trace = next(t for t in log if t.kind == "token")
    assert '"client_secret":"******"' in token_trace.request_body
    assert '"access_token":"******"' in token_trace.response_body
    api_trace = next(t for t in log if t.kind == "api")
    assert api_trace.request_headers["Authorization"] == "******"


def test_401_resend_is_noted(traced):
    client, log = traced
    client.credentials._access_token = make_jwt(time.time() + 3600)  # unknown to the server
    client.request(method="GET", path=API_PATH)
    notes = [(t.kind, t.status, t.note) for t in log]
    assert notes == [
        ("api", 401, None),
        ("token", 200, "token refresh"),
        ("api", 200, "resent after 401 with a refreshed token"),
    ]


def test_curl_export_uses_a_token_variable_and_reproduces_the_request(traced):
    client, log = traced
    body = {"params": {"query": "SELECT 'it''s'"}}
    client.request(method="POST", path="/query/v2/jobs", json=body)
    curl = log.last()[0].to_curl()
    assert '"Authorization: Bearer $TOKEN"' in curl
    words = shlex.split(curl)
    assert words[:3] == ["curl", "-X", "POST"] and words[3].endswith("/query/v2/jobs")
    assert words[words.index("--data-raw") + 1] == '{"params":{"query":"SELECT \'it\'\'s\'"}}'


def test_html_is_collapsible_and_history_is_a_frame(traced):
    client, log = traced
    client.request(method="GET", path=API_PATH)
    html = log.last()[0]._repr_html_()
    assert html.startswith("<details") and "<summary" in html
    frame = log.to_frame()
    assert list(frame["status"]) == [200, 200] and list(frame["kind"]) == ["token", "api"]


def test_long_bodies_are_truncated_and_still_scrubbed(httpserver):
    body = '{"refresh_token": "rt-LONG-SECRET", "pad": "' + "x" * 20000 + '"}'
    httpserver.expect_request("/big").respond_with_data(body, content_type="application/json")
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port)
    log = TraceLog()
    log.attach(client.session)
    client.request(method="GET", path="/big")
    stored = log.last()[0].response_body
    assert len(stored) < 2100 and "more]" in stored and "rt-LONG-SECRET" not in stored


def test_history_is_bounded():
    log = TraceLog(maxlen=3)
    assert len(log) == 0 and log.last(5) == []


def test_collect_gathers_everything_even_past_the_history_bound(httpserver):
    httpserver.expect_request("/x").respond_with_json({})
    client = HTTPClient(url="http://127.0.0.1", port=httpserver.port)
    log = TraceLog(maxlen=2)
    log.attach(client.session)
    with log.collect() as seen:
        for _ in range(5):
            client.request(method="GET", path="/x")
    client.request(method="GET", path="/x")
    assert len(seen) == 5 and len(log) == 2 and log.listeners == []
