"""Cassettes: a session recorded against a real sandbox over HTTP, replayed with the sandbox
stopped: the same frames, errors and traces, no secret and no instance id in the file."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import requests
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from werkzeug import Response

from cortex_nb import ConfigurationError, Credentials, HTTPClient, QueryError
from cortex_nb.notebook.connection import Connection, get_connection
from cortex_nb.record.cassette import FORMAT, INSTANCE, Cassette, Recorder, dump_document
from cortex_nb.record.replay import MISS_STATUS, Replay
from cortex_nb.sandbox import Sandbox
from cortex_nb.sandbox.service.tokens import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN

from .support import CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, make_jwt, refresh_credentials

INSTANCE_ID = "7391550263"  # a tenant-like instance id: digits, as real ones are
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer (?!\*{6}|error=|realm=)\S+")  # not a WWW-Authenticate challenge
TALKERS = "SELECT source_ip.value AS src, COUNT(*) AS n FROM {t} GROUP BY src ORDER BY n DESC, src LIMIT 12"
BY_OFFSET = "SELECT session_id, app, source_ip, characteristics_of_app FROM {t} ORDER BY session_id LIMIT 350"
BY_CURSOR = "SELECT session_id, bytes_total FROM {t} ORDER BY session_id DESC LIMIT 250"
BAD = "SELECT no_such_column FROM {t}"


def table(connection: Connection) -> str:
    return f"`{connection.instance_id}.firewall.traffic`"


@dataclass
class Session:
    """What one run of the investigation saw."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)
    details: list[dict] = field(default_factory=list)
    listed: list[str] = field(default_factory=list)
    error: str = ""
    traces: list = field(default_factory=list)


def investigate(connection: Connection, expire=lambda: None) -> Session:
    """Queries of every kind: parallel pages by offset, pages by cursor, a REST call, a job
    detail, a refused query, and a query after the token was expired (401, refresh, resend)."""
    service, t, seen = connection.require(), table(connection), Session()
    with connection.traces.collect() as traces:
        for name, sql, options in (
            ("talkers", TALKERS, {}),
            ("by_offset", BY_OFFSET, {"page_size": 100, "parallel": 4, "structs": "keep"}),
            ("by_cursor", BY_CURSOR, {"page_size": 100, "parallel": 1}),
        ):
            result = service.query(sql.format(t=t), **options)
            seen.frames[name], seen.job_ids = result.df, [*seen.job_ids, result.job_id]
        seen.details.append(service.get_job(seen.job_ids[0]).json())
        try:
            service.query(BAD.format(t=t))
        except QueryError as exc:
            seen.error = str(exc)
        expire()
        again = service.query(TALKERS.format(t=t))
        seen.frames["after_401"], seen.job_ids = again.df, [*seen.job_ids, again.job_id]
        listed = service.list_jobs(tenant_id=connection.instance_id, state="done").json()
        seen.listed = [job["jobId"] for job in listed]
    seen.traces = list(traces)
    return seen


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A session recorded against its own sandbox, which is stopped before any test replays."""
    path = tmp_path_factory.mktemp("cassettes") / "session.cassette"
    sandbox = Sandbox(rows=2000, seed=11, instance_id=INSTANCE_ID).start()
    url, connection = sandbox.url, Connection()
    tokens = []
    try:
        connection.record(path)
        connection.connect(Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
                           instance_id=INSTANCE_ID)
        tokens.append(connection.credentials.access_token)
        live = investigate(connection, expire=sandbox.expire_tokens)
        tokens.append(connection.credentials.access_token)
    finally:
        connection.disconnect()
        sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/query/v2/jobs", timeout=2)
    return path, live, tokens


@pytest.fixture()
def replayed(recorded):
    path, live, _ = recorded
    connection = Connection()
    connection.connect_replay(path)
    yield connection, live
    connection.disconnect()


def shape(trace) -> tuple:
    """What a trace says, without what differs from run to run (host, port, job ids)."""
    url = re.sub(r"^https?://[^/]+", "", trace.url)
    url = re.sub(r"cortexnb-[0-9a-f-]{36}", "JOB", url)
    url = url.replace(INSTANCE_ID, "INSTANCE").replace("%3Cinstance%3E", "INSTANCE")
    request_id = trace.request_id if trace.kind == "api" else None  # tokens are not replayed
    return trace.kind, trace.method, url, trace.status, trace.note, request_id


def test_replay_with_the_sandbox_stopped_gives_equal_frames(replayed):
    connection, live = replayed
    again = investigate(connection)
    assert list(again.frames) == list(live.frames)
    for name, frame in live.frames.items():
        pd.testing.assert_frame_equal(again.frames[name], frame)
    assert len(live.frames["by_offset"]) == 350 and isinstance(
        again.frames["by_offset"]["characteristics_of_app"][0], list)


def test_replay_gives_the_same_traces_and_errors(replayed):
    connection, live = replayed
    again = investigate(connection)
    replayed, recorded = [shape(t) for t in again.traces], [shape(t) for t in live.traces]
    assert sorted(replayed, key=str) == sorted(recorded, key=str)
    in_order = [s for s in recorded if "offset=" not in s[2]]  # parallel pages come in any order
    assert [s for s in replayed if "offset=" not in s[2]] == in_order
    assert any(t.status == 401 for t in live.traces) and any(t.kind == "token" for t in live.traces)
    # what varies: job ids, ports, and the instance id the error quotes from the SQL sent (a
    # replay knows only the cassette's placeholder)
    unvarying = re.compile(rf"cortexnb-[0-9a-f-]{{36}}|127\.0\.0\.1:\d+|{INSTANCE_ID}|<instance>")
    assert "no_such_column" in live.error
    assert unvarying.sub("", again.error) == unvarying.sub("", live.error)


def test_a_notebook_that_spells_out_the_instance_id_replays_too(replayed):
    connection, live = replayed
    spelled_out = f"`{INSTANCE_ID}.firewall.traffic`"
    again = connection.require().query(TALKERS.format(t=spelled_out))
    pd.testing.assert_frame_equal(again.df, live.frames["talkers"])
    listed = connection.require().list_jobs(tenant_id=INSTANCE_ID, state="done")
    assert listed.status_code == 200 and connection.replay.misses == []


def test_replayed_job_ids_are_the_new_ones(replayed):
    connection, live = replayed
    again = investigate(connection)
    assert set(again.job_ids).isdisjoint(live.job_ids)
    assert again.details[0]["jobId"] == again.job_ids[0]
    assert set(again.listed) == set(again.job_ids) and set(live.listed) == set(live.job_ids)


def test_a_cassette_holds_no_secret_and_no_instance_id(recorded):
    path, _, tokens = recorded
    text = path.read_text()
    for secret in (DEMO_CLIENT_SECRET, DEMO_REFRESH_TOKEN, DEMO_CLIENT_ID, INSTANCE_ID, *tokens):
        assert secret not in text
    assert not JWT.search(text) and not BEARER.search(text)
    assert "authorization" not in text.lower()
    assert f"`{INSTANCE}.firewall.traffic`" in text
    statuses = [e["response"]["status"] for e in Cassette.load(path).exchanges]
    assert 401 in statuses and 400 in statuses  # the refusals are in it, minus their secrets


def test_secrets_anywhere_in_an_exchange_stay_out_of_the_cassette(httpserver, tmp_path):
    """Query strings, form and JSON bodies, reply headers and reply data, at any depth."""
    jwt = make_jwt(time.time() + 3600, sub="someone")
    httpserver.expect_request("/api/oauth2/RequestToken").respond_with_json(
        {"access_token": jwt, "refresh_token": "rt-ROLLED-5e1", "expires_in": "3599"})
    echo = {"items": [{"note": f"token {jwt} in a message", "auth": f"Bearer {jwt}",
                       "url": "https://user:pw-SECRET-9@example.com/x",
                       "nested": {"client_secret": "cs-NESTED-2"}}]}
    httpserver.expect_request("/echo").respond_with_response(Response(
        json.dumps(echo), content_type="application/json",
        headers={"Set-Cookie": "session=ck-SECRET-3", "x-request-id": "req-1"}))
    credentials = refresh_credentials(httpserver)
    client = HTTPClient(url=httpserver.url_for("/"), credentials=credentials)
    path = tmp_path / "secrets.cassette"
    with Recorder(path, instance_id=INSTANCE_ID, secrets=credentials.secrets) as recorder:
        recorder.attach(credentials.http, kind="token")
        recorder.attach(client.session)
        client.request(method="GET", path="/echo",
                       params={"access_token": "qp-SECRET-4", "tenantId": INSTANCE_ID})
        client.request(method="POST", path="/echo", data="client_secret=form-SECRET-5&x=1",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
        client.request(method="POST", path="/echo", json={
            "token": "body-SECRET-6", "query": f"SELECT 1 FROM `{INSTANCE_ID}.firewall.url`"})
    text = path.read_text()
    for secret in (jwt, CLIENT_ID, CLIENT_SECRET, REFRESH_TOKEN, "rt-ROLLED-5e1", "qp-SECRET-4",
                   "form-SECRET-5", "body-SECRET-6", "ck-SECRET-3", "pw-SECRET-9",
                   "cs-NESTED-2", INSTANCE_ID):
        assert secret not in text, secret
    exchanges = Cassette.load(path).exchanges
    assert [e["kind"] for e in exchanges] == ["token", "api", "api", "api"]
    assert exchanges[1]["request"]["query"]["tenantId"] == INSTANCE
    assert exchanges[1]["response"]["headers"] == {"content-type": "application/json",
                                                   "x-request-id": "req-1"}


def test_a_cassette_is_plain_text_with_one_result_row_per_line(recorded):
    path, _, _ = recorded
    lines = {line.strip().rstrip(",") for line in path.read_text().splitlines()}
    pages = [e["response"]["json"] for e in Cassette.load(path).exchanges
             if isinstance(e["response"].get("json"), dict) and "rowsInJob" in e["response"]["json"]]
    rows = [row for page in pages for row in page["page"]["result"]["data"]]
    assert len(rows) > 600
    assert all(json.dumps(row, separators=(",", ":"), ensure_ascii=False) in lines for row in rows)


def test_pages_by_offset_are_served_in_any_order(recorded):
    path, live, _ = recorded
    expected = live.frames["by_offset"]["session_id"].tolist()
    with Replay(path) as replay:
        client = Connection()
        client.connect(Credentials(**replay.credentials(), environ={}), url=replay.url,
                       instance_id=replay.instance_id)
        service = client.require()
        job = service.start(BY_OFFSET.format(t=table(client)), page_size=100)
        job.wait()
        for offset in (300, 100, 200):
            page = service.get_job_results(job.id, offset=offset, page_size=100,
                                           result_format="valuesDictionary").json()
            assert page["jobId"] == job.id
            assert [r["session_id"] for r in page["page"]["result"]["data"]] == \
                expected[offset:offset + 100]
        client.disconnect()
        assert replay.misses == []


def test_a_request_the_cassette_does_not_hold_is_one_clear_error(replayed):
    connection, _ = replayed
    with pytest.raises(QueryError) as caught:
        connection.require().query(f"SELECT 42 AS answer FROM {table(connection)}")
    message = str(caught.value)
    assert message.startswith("Not in the cassette session.cassette: POST /query/v2/jobs")
    assert "SELECT 42 AS answer" in message and f"HTTP {MISS_STATUS}" in message
    assert "\n" not in message and connection.replay.misses


def test_polls_are_answered_in_recorded_order_then_the_last_again(tmp_path):
    """A job recorded RUNNING, RUNNING, DONE: replayed the same way, and DONE once it ran out."""
    path = tmp_path / "polls.cassette"
    job = "cortexnb-00000000-0000-4000-8000-000000000001"
    poll = {"method": "GET", "path": f"/query/v2/jobResults/{job}",
            "query": {"maxWait": "2000", "pageSize": "10000", "resultFormat": "valuesDictionary"}}
    running = {"jobId": job, "state": "RUNNING", "page": {"pageCursor": None, "result": {"data": None}}}
    done = {"jobId": job, "state": "DONE", "rowsInJob": 2, "rowsInPage": 2,
            "page": {"pageCursor": None, "result": {"data": [{"n": 1}, {"n": 2}]}}}
    exchanges = [
        {"request": {"method": "POST", "path": "/query/v2/jobs",
                     "json": {"jobId": job, "params": {"query": "SELECT n FROM t", "dialect": "csql"},
                              "clientType": "cortex-nb", "clientVersion": "0.0.1"}},
         "response": {"status": 201, "json": {"jobId": job, "uri": f"/query/v2/jobs/{job}"}}},
        *({"request": poll, "response": {"status": 200, "json": body}}
          for body in (running, running, done)),
    ]
    header = {"format": FORMAT, "version": 1, "instance": INSTANCE}
    path.write_text("\n".join(dump_document(d) for d in (header, *exchanges)))
    with Replay(path) as replay:
        client = Connection()
        client.connect(Credentials(**replay.credentials(), environ={}), url=replay.url)
        first = client.require().query("SELECT n\n  FROM t")
        second = client.require().query("SELECT n FROM t")
        client.disconnect()
        polls = [r for r in replay.requests if r.path.startswith("/query/v2/jobResults/")]
    assert first.df["n"].tolist() == second.df["n"].tolist() == [1, 2]
    assert first.job_id != job and second.job_id != first.job_id
    assert [p.path.rsplit("/", 1)[1] for p in polls] == [first.job_id] * 3 + [second.job_id]


@pytest.mark.parametrize(("text", "problem"), [
    ('{"format": "cortex_nb cassette", "version": 1}\n{"kind": "api", "request": {', "damaged at line 2"),
    ('{"hello": "world"}\n', "is not a cortex_nb cassette"),
    ('{"format": "cortex_nb cassette", "version": 99}\n', "format version 99"),
])
def test_a_bad_cassette_is_one_clear_error(tmp_path, text, problem):
    path = tmp_path / "bad.cassette"
    path.write_text(text)
    with pytest.raises(ConfigurationError, match=problem):
        Connection().connect_replay(path)


def test_a_missing_cassette_names_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as caught:
        Connection().connect_replay("nowhere.cassette")
    assert str(tmp_path / "nowhere.cassette") in str(caught.value)


# -- the magic ---------------------------------------------------------------------------------
@pytest.fixture()
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cortex_nb")
    yield shell
    get_connection().disconnect()
    get_connection().stop_sandbox()


def cell(ip, source: str):
    with capture_output() as cap:
        result = ip.run_cell(source)
    return result, cap.stdout + cap.stderr


def test_magic_records_then_replays_offline(ip, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sql = "%%cortex -o top\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app ORDER BY n DESC, app LIMIT 4"
    result, out = cell(ip, "%cortex connect sandbox --rows 1500 --seed 3 --record nb.cassette")
    assert result.success and "Recording to" in out
    cell(ip, sql)
    recorded = ip.user_ns["top"]
    get_connection().stop_sandbox()
    result, out = cell(ip, "%cortex connect replay nb.cassette")
    assert result.success and "Replaying nb.cassette" in out and get_connection().sandbox is None
    cell(ip, sql)
    pd.testing.assert_frame_equal(ip.user_ns["top"], recorded)
    assert get_connection().recorder is None  # the replay is not recorded over the cassette
    missed, out = cell(ip, "%cortex SELECT 1 AS one")
    assert isinstance(missed.error_in_exec, UsageError) and "Traceback" not in out
    assert "Not in the cassette nb.cassette" in str(missed.error_in_exec)


def test_magic_refuses_to_record_a_replay(ip, recorded, tmp_path, monkeypatch):
    path, _, _ = recorded
    monkeypatch.chdir(tmp_path)
    result, _ = cell(ip, f"%cortex connect replay {path} --record other.cassette")
    assert not result.success and "cannot be recorded" in str(result.error_in_exec)
    assert not Path("other.cassette").exists()
