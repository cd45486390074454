"""Replay: a cassette served over HTTP on loopback, so a recorded notebook re-runs offline.

``Replay(path)`` hosts a ``ReplayApp`` in the sandbox's HTTP server, so replayed requests take
the same path as live ones (client, auth, retries, traces, errors) and get the recorded replies
back, with their status, headers and ``x-request-id``. Its token endpoint issues tokens for the
sandbox's demo credentials; nothing secret is needed, or held by the cassette.

Requests are matched by meaning, not by exact sequence. A request's key is its method, its
path, its query parameters without ``maxWait`` and its body; a job creation's body without
its ``jobId`` and ``clientVersion``, with the SQL's white space normalized and any instance id
in its table names read as ``<instance>`` (so is a ``tenantId``). Job ids are
client-chosen (``cortexnb-<uuid4>``), so each recorded job gets a token (``{job1}``) that stands
for its id in later keys; a replayed creation maps the new id to the token of the recorded job
it matched, and every reply has the recorded ids replaced by the new ones. Replies to one key
are served in recorded order, the last one again once they run out: a job polled three times
answers RUNNING, RUNNING, DONE and then DONE, a query run twice gets the second recorded run,
pages fetched by offset in parallel each find their own. A request no key holds is answered
410 with one line naming it.

Only the reply headers a recording keeps (``cassette.RESPONSE_HEADERS``) are replayed, whatever
a cassette from elsewhere holds: never a ``Location`` (a replayed redirect would send the
"offline" client to another host), a cookie or a hop-by-hop header; ``Cassette.load`` refuses a
header with a control character in it.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from typing import Any

from cortex_nb.record.cassette import (
    INSTANCE,
    RESPONSE_HEADERS,
    Cassette,
    Cleaner,
    body_of,
    with_instance_placeholder,
)
from cortex_nb.sandbox.server import RecordedRequest, Sandbox
from cortex_nb.sandbox.service.api import Reply, Request, error_reply, json_reply
from cortex_nb.sandbox.service.tokens import OAuthError, TokenAuthority
from cortex_nb.sql.params import normalize_sql
from cortex_nb.wire import JOBS, OAUTH_PATHS

__all__ = ["MISS_STATUS", "Replay", "ReplayApp"]

MISS_STATUS = 410  # Gone: no hint of the client's (404, 5xx) would point the wrong way
IGNORED_PARAMS = frozenset({"maxWait"})  # how long a poll may be held, not what it asks for
IGNORED_CREATE_KEYS = ("jobId", "clientVersion")
_SHOWN_SQL = 160


def _creates_job(method: str, path: str) -> bool:
    return method.upper() == "POST" and (path.rstrip("/") or "/") == JOBS


def _meaning(method: str, path: str, query: dict[str, Any], body: Any) -> str:
    """What a request asks for, as text (before job ids become tokens)."""
    path = path.rstrip("/") or "/"
    query = {k: v for k, v in query.items() if k not in IGNORED_PARAMS}
    if "tenantId" in query:  # one tenant is replayed, whichever id a notebook names
        query["tenantId"] = INSTANCE
    if _creates_job(method, path) and isinstance(body, dict):
        body = {k: v for k, v in body.items() if k not in IGNORED_CREATE_KEYS}
        params = body.get("params")
        if isinstance(params, dict) and isinstance(params.get("query"), str):
            sql = with_instance_placeholder(normalize_sql(params["query"]))
            body["params"] = {**params, "query": sql}
    return json.dumps([method.upper(), path, query, body], sort_keys=True, ensure_ascii=False)


def _body_value(body: dict[str, Any]) -> Any:
    return body.get("json", body.get("text"))


def _created_ids(exchange: dict[str, Any]) -> list[str]:
    """The job ids a recorded creation names: the one asked for, the one the reply gave."""
    found = []
    for part in ("request", "response"):
        value = exchange[part].get("json")
        job_id = value.get("jobId") if isinstance(value, dict) else None
        if isinstance(job_id, str) and job_id and job_id not in found:
            found.append(job_id)
    return found


def _header_name(name: str) -> str:
    """Header names as the server sends them (``x-request-id`` stays as the server expects)."""
    if name.lower() == "x-request-id":
        return "x-request-id"
    return "-".join(part.capitalize() for part in name.split("-"))


class ReplayApp:
    """Answers requests from a cassette's exchanges (the routes of a ``Replay``)."""

    def __init__(self, cassette: Cassette) -> None:
        self.cassette = cassette
        self.tokens = TokenAuthority("replay")
        self.misses: list[str] = []
        self._cleaner = Cleaner((), ())
        self._lock = threading.Lock()
        self._replies: dict[str, list[tuple[dict[str, Any], str | None]]] = {}
        self._paths: set[tuple[str, str]] = set()
        self._served: Counter[str] = Counter()
        self._job_of: dict[str, str] = {}  # a job id, recorded or new -> its job's token
        self._recorded: dict[str, list[str]] = {}  # token -> the recorded ids of that job
        self._latest: dict[str, str] = {}  # token -> the new id last mapped to it
        for exchange in cassette.exchanges:
            if exchange.get("kind") != "token":
                self._learn(exchange)

    def _learn(self, exchange: dict[str, Any]) -> None:
        request = exchange["request"]
        method, path = request["method"], request["path"]
        key = self._key(method, path, request.get("query") or {}, _body_value(request))
        job = None
        if _creates_job(method, path):
            job = f"{{job{len(self._recorded) + 1}}}"
            self._recorded[job] = _created_ids(exchange)
            self._job_of.update(dict.fromkeys(self._recorded[job], job))
        self._replies.setdefault(key, []).append((exchange, job))
        self._paths.add((method.upper(), self._tokenized(path.rstrip("/") or "/")))

    def _tokenized(self, text: str) -> str:
        for job_id, job in self._job_of.items():
            if job_id in text:
                text = text.replace(job_id, job)
        return text

    def _key(self, method: str, path: str, query: dict[str, Any], body: Any) -> str:
        return self._tokenized(_meaning(method, path, query, body))

    # -- serving ---------------------------------------------------------------------------------
    def handle(self, request: Request) -> Reply:
        """The recorded reply to ``request``, a token for the demo credentials, or a 410."""
        if request.path.startswith(OAUTH_PATHS):
            return self._token_reply(request)
        query = self._cleaner.json(dict(request.query))
        body = _body_value(body_of(request.body, self._cleaner))
        with self._lock:
            key = self._key(request.method, request.path, query, body)
            choices = self._replies.get(key)
            if not choices:
                return self._miss(request, body)
            exchange, job = choices[min(self._served[key], len(choices) - 1)]
            self._served[key] += 1
            if job is not None:
                self._map_new_job(job, body, exchange)
            swaps = self._swaps(request.path + " " + json.dumps(query) + " " + json.dumps(body))
        return self._reply(exchange["response"], swaps)

    def _map_new_job(self, job: str, body: Any, exchange: dict[str, Any]) -> None:
        """A replayed creation: its job id (ours, or the recorded one served) stands for ``job``."""
        asked = body.get("jobId") if isinstance(body, dict) else None
        new_id = asked if isinstance(asked, str) and asked else next(iter(self._recorded[job]), "")
        if new_id:
            self._job_of[new_id] = job
            self._latest[job] = new_id

    def _swaps(self, request_text: str) -> dict[str, str]:
        """Recorded job id -> the new id to put in its place in this request's reply."""
        new = dict(self._latest)
        for job_id, job in self._job_of.items():  # a job the request names wins over the latest
            if job_id in request_text and job_id not in self._recorded.get(job, ()):
                new[job] = job_id
        return {old: new[job] for job, olds in self._recorded.items() if job in new
                for old in olds if old != new[job]}

    @staticmethod
    def _reply(response: dict[str, Any], swaps: dict[str, str]) -> Reply:
        if "json" in response:
            text = json.dumps(response["json"], ensure_ascii=False, separators=(",", ":"))
        else:
            text = response.get("text") or ""
        for old, new in swaps.items():
            text = text.replace(old, new)
        headers = {
            _header_name(k): str(v) for k, v in (response.get("headers") or {}).items()
            if k.lower() in RESPONSE_HEADERS  # nothing that redirects, sets cookies or frames
        }
        return Reply(response["status"], text.encode("utf-8"), headers)

    def _miss(self, request: Request, body: Any) -> Reply:
        what = f"{request.method} {request.path}"
        if request.query:
            what += "?" + "&".join(f"{k}={v}" for k, v in request.query.items())
        sql = body.get("params", {}).get("query") if isinstance(body, dict) else None
        if isinstance(sql, str):
            sql = normalize_sql(sql)
            shown = sql if len(sql) <= _SHOWN_SQL else sql[:_SHOWN_SQL] + "..."
            what += f" with the query {shown!r}"
        self.misses.append(what)
        shape = (request.method.upper(), self._tokenized(request.path.rstrip("/") or "/"))
        hint = (
            "; it holds other requests to that path: was the query or an option (--page-size, "
            "--limit) changed since the recording?" if shape in self._paths else "."
        )
        return error_reply(
            MISS_STATUS,
            f"Not in the cassette {self.cassette.path.name}: {what}{hint} Replay answers only "
            "what was recorded; record the notebook again to add it",
        )

    def _token_reply(self, request: Request) -> Reply:
        form = request.json if isinstance(request.json, dict) else (request.form or {})
        form = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            if request.path.rstrip("/").endswith("/RevokeToken"):
                return json_reply(200, self.tokens.revoke(form))
            return json_reply(200, self.tokens.grant(form))
        except OAuthError as refused:
            return json_reply(refused.status, refused.body())


class Replay:
    """A cassette served on loopback by the sandbox's HTTP server, in a thread.

    ``with Replay("investigation.cassette") as rp:`` then ``rp.url``, ``rp.credentials()`` (the
    sandbox's demo credentials) and ``rp.instance_id`` (the placeholder the recording left in
    the tenant's place) connect a client to it, as to the sandbox.
    """

    def __init__(
        self, path: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.cassette = Cassette.load(path)
        self.app = ReplayApp(self.cassette)
        self._server = Sandbox(host=host, port=port, instance_id="replay", app=self.app)

    @property
    def path(self) -> os.PathLike[str]:
        """The cassette file."""
        return self.cassette.path

    @property
    def instance_id(self) -> str:
        """The instance id to query with (``<instance>``: the recording's stand-in)."""
        return self.cassette.instance_id

    @property
    def url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:8123``."""
        return self._server.url

    @property
    def token_url(self) -> str:
        """The token endpoint on the same server."""
        return self._server.token_url

    @property
    def misses(self) -> list[str]:
        """The requests the cassette held no reply for, as named in their errors."""
        return list(self.app.misses)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests the replay received, oldest first."""
        return self._server.requests

    def credentials(self) -> dict[str, str]:
        """Demo credentials that the replay's token endpoint accepts."""
        return self._server.credentials()

    def start(self) -> Replay:
        """Serve the cassette (on a free port unless one was given)."""
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving (safe to call twice)."""
        self._server.stop()

    def describe(self) -> str:
        """What is replayed, and where."""
        count = len(self.cassette.exchanges)
        return f"Replaying {self.path} ({count} recorded exchanges) at {self.url}"

    def __enter__(self) -> Replay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Replay {self.path} ({len(self.cassette.exchanges)} exchanges)>"
