"""The notebook's connection: the one shared state that the magic, the panel and user code drive.

``get_connection()`` returns the process-wide ``Connection``. It holds where it is connected
(an ``Endpoint``), the ``Credentials``, the ``HTTPClient`` and the ``QueryService`` on top of
it, the trace history (kept across reconnects, so ``%cortex history`` tells the whole story),
the session's background queries (``jobs``, also kept across reconnects) and, after
``connect_sandbox()``, the sandbox (in this process or its own: a ``services.LocalSandbox``).
Listeners (the panel's status line) are told after every connect and disconnect.
(``Session`` and ``get_session``, importable from ``cortex_nb.session``, are the old names of
``Connection`` and ``get_connection``.)

Background queries share the connection from worker threads: the client's connection pool is
sized for them, its retries hold one shared backoff gate on a 429 (``http.transport.gated_retry``),
the trace history and the token refresh take their own locks, and a background query keeps the
client it started with when the notebook reconnects.

``record(path)`` writes every exchange from then on (token refreshes included) into a cassette
(``cortex_nb.record.cassette``), across reconnects, until ``stop_recording()``, ``disconnect()``
or ``connect_replay()``; ``connect_replay(path)`` ends any recording (a replay is not recorded:
it would write its own misses into the cassette it serves), serves a cassette on loopback
(``cortex_nb.record.replay``) and connects to it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.client import HTTPClient
from cortex_nb.http.credentials import Credentials
from cortex_nb.http.endpoints import SANDBOX, Endpoint
from cortex_nb.http.security import mask_url
from cortex_nb.http.tracing import TraceLog
from cortex_nb.http.transport import gated_retry
from cortex_nb.notebook.services import LocalSandbox
from cortex_nb.query.background import BackgroundJobs
from cortex_nb.query.service import QueryService
from cortex_nb.results.cache import cache_scope

if TYPE_CHECKING:  # imported when used: a notebook that records nothing never loads them
    from cortex_nb.record.cassette import Recorder
    from cortex_nb.record.replay import Replay

__all__ = ["Connection", "get_connection"]

NOT_CONNECTED = (
    "Not connected. Run `%cortex connect sandbox` for the offline sandbox, `%cortex connect` "
    "with PAN_* variables or --profile NAME for a tenant, or `%cortex panel`."
)
# connections kept per host: background jobs (4 at once) each fetch 4 pages at once, plus the
# notebook's own query; urllib3 would otherwise warn of (and drop) the connections beyond 10
POOL_MAXSIZE = 32


class Connection:
    """Shared connection state: endpoint, credentials, client, query service, traces, sandbox."""

    def __init__(self) -> None:
        self.endpoint: Endpoint | None = None
        self.credentials: Credentials | None = None
        self.client: HTTPClient | None = None
        self.queries: QueryService | None = None
        self.sandbox: LocalSandbox | None = None  # after start_sandbox(): ours, in any process
        self.replay: Replay | None = None  # serving a cassette, after connect_replay()
        self.recorder: Recorder | None = None  # writing a cassette, after record()
        self.traces = TraceLog(secrets=self.secrets)
        self.jobs = BackgroundJobs()
        self.listeners: list[Callable[[Connection], None]] = []
        self._lock = threading.RLock()

    def secrets(self) -> list[str]:
        """The secret values of the connected credentials, for scrubbing text before showing it."""
        return self.credentials.secrets() if self.credentials is not None else []

    @property
    def connected(self) -> bool:
        """True once ``connect`` succeeded and until ``disconnect``."""
        return self.queries is not None

    @property
    def instance_id(self) -> str | None:
        """The tenant's instance id (completes table names), if known."""
        return self.endpoint.instance_id if self.endpoint is not None else None

    # -- where to -----------------------------------------------------------------------------
    def endpoint_for(
        self,
        region: str | None = None,
        url: str | None = None,
        token_url: str | None = None,
        instance_id: str | None = None,
    ) -> Endpoint:
        """The endpoint for a region or URL; the "sandbox" region starts the sandbox if needed."""
        if region is not None and region.strip().lower() == SANDBOX:
            return Endpoint.for_sandbox(self.start_sandbox())
        return Endpoint.resolve(region, url, token_url, instance_id)

    # -- connecting ---------------------------------------------------------------------------
    def connect(
        self,
        credentials: Credentials | None = None,
        *,
        endpoint: Endpoint | None = None,
        url: str | None = None,
        instance_id: str | None = None,
        validate: bool = True,
        **client_kwargs: Any,
    ) -> Connection:
        """Connect to ``endpoint`` (or ``url``; default: ``PAN_REGION`` or americas) with
        ``credentials`` (default: from ``PAN_*``), checking them by a refresh."""
        if endpoint is None:
            endpoint = Endpoint.resolve(url=url, instance_id=instance_id)
        elif url is not None or instance_id is not None:
            raise ConfigurationError("Give an endpoint, or url= and instance_id=, not both.")
        credentials = credentials if credentials is not None else Credentials()
        credentials.adopt_token_url(endpoint.token_url)
        self.traces.attach(credentials.http, kind="token")
        if self.recorder is not None:
            self.recorder.attach(credentials.http, kind="token")
        if validate:
            credentials.refresh_if_expiring()
        client_kwargs.setdefault("max_retries", gated_retry(self.jobs.gate))
        client_kwargs.setdefault("pool_maxsize", POOL_MAXSIZE)
        client = HTTPClient(url=endpoint.api_url, credentials=credentials, **client_kwargs)
        if self.recorder is not None:
            self.recorder.attach(client.session)
        with self._lock:
            self._close_client()
            if self.replay is not None and endpoint.api_url != self.replay.url:
                self.stop_replay()  # connected elsewhere: the replayed cassette is done with
            self.endpoint, self.credentials, self.client = endpoint, credentials, client
            self.queries = QueryService(
                client=client, traces=self.traces, jobs=self.jobs,
                cache_scope=functools.partial(cache_scope, self),
            )
        self._notify()
        return self

    def start_sandbox(self, **sandbox_kwargs: Any) -> LocalSandbox:
        """The sandbox, started now if none runs, restarted if the options asked (``rows``,
        ``seed``, ``port``...) differ from the running one's; connects nothing. It runs in this
        process, or with ``process=True`` in its own (its memory is then not the kernel's)."""
        with self._lock:
            if self.sandbox is not None and self.sandbox_changes(**sandbox_kwargs):
                self.stop_sandbox()
            if self.sandbox is None:
                self.sandbox = _started_sandbox(sandbox_kwargs)
            return self.sandbox

    def sandbox_changes(self, **sandbox_kwargs: Any) -> str:
        """How the options asked differ from the running sandbox's (``rows 3,000 -> 10,000``);
        empty when they do not, or when no sandbox runs."""
        sandbox = self.sandbox
        if sandbox is None:
            return ""
        changes = []
        for name, wanted in sandbox_kwargs.items():
            current = _setting(sandbox, name, wanted)
            if not _same(wanted, current) and not (name == "port" and wanted == 0):
                numeric = all(isinstance(v, int | float) and not isinstance(v, bool)
                              for v in (wanted, current))
                changes.append(f"{name} {current:,} -> {wanted:,}" if numeric
                               else f"{name} {current!r} -> {wanted!r}")
        return ", ".join(changes)

    def connect_sandbox(self, **sandbox_kwargs: Any) -> Connection:
        """Start a sandbox (once) and connect to it with its demo credentials."""
        sandbox = self.start_sandbox(**sandbox_kwargs)
        return self.connect(
            Credentials(**sandbox.credentials()), endpoint=Endpoint.for_sandbox(sandbox)
        )

    def connect_profile(self, name: str, *, url: str | None = None) -> Connection:
        """Connect with a stored profile: its region or URL, instance id and credentials."""
        from cortex_nb.http import profiles

        stored = profiles.load_profile(name)
        region = None if url else stored.get("region")
        endpoint = self.endpoint_for(
            region, url or stored.get("url"), stored.get("token_url"), stored.get("instance_id")
        )
        # the sandbox's port changes: its profile's stored token URL (if any) is not used
        token_url = endpoint.token_url if endpoint.sandbox else None
        return self.connect(Credentials(profile=name, token_url=token_url), endpoint=endpoint)

    def disconnect(self) -> None:
        """Forget the credentials and close the client; stop recording and replaying (the
        sandbox keeps running)."""
        with self._lock:
            self._close_client()
            self.client = self.queries = self.credentials = self.endpoint = None
            self.stop_recording()
            self.stop_replay()
        self._notify()

    # -- cassettes ----------------------------------------------------------------------------
    def record(self, path: str | os.PathLike[str]) -> Recorder:
        """Record every exchange from now on into the cassette at ``path`` (replaced), without
        tokens, secrets or the instance id; returns the ``cassette.Recorder``."""
        from cortex_nb.record.cassette import Recorder

        with self._lock:
            self.stop_recording()
            self.recorder = Recorder(path, instance_id=lambda: self.instance_id,
                                     secrets=self.secrets)
            if self.client is not None and self.credentials is not None:
                self.recorder.attach(self.credentials.http, kind="token")
                self.recorder.attach(self.client.session)
            return self.recorder

    def stop_recording(self) -> None:
        """Stop recording, if recording (the cassette keeps what it holds)."""
        with self._lock:
            if self.recorder is not None:
                self.recorder.close()
                self.recorder = None

    def connect_replay(self, path: str | os.PathLike[str]) -> Connection:
        """End recording; serve the cassette at ``path`` on loopback (``replay.Replay``) and
        connect to it."""
        from cortex_nb.record.replay import Replay

        replay = Replay(path).start()
        with self._lock:
            self.stop_recording()
            self.stop_replay()
            self.replay = replay
        endpoint = Endpoint.for_url(
            replay.url, token_url=replay.token_url, instance_id=replay.instance_id
        )
        return self.connect(Credentials(**replay.credentials(), environ={}), endpoint=endpoint)

    def stop_replay(self) -> None:
        """Stop serving the replayed cassette, if one is served."""
        with self._lock:
            if self.replay is not None:
                self.replay.stop()
                self.replay = None

    def stop_sandbox(self) -> None:
        """Stop the sandbox, if one runs (and disconnect if connected to it)."""
        with self._lock:
            if self.sandbox is None:
                return
            if self.endpoint is not None and self.endpoint.sandbox:
                self.disconnect()
            self.sandbox.stop()
            self.sandbox = None

    def require(self) -> QueryService:
        """The query service, or a clear error saying how to connect."""
        queries = self.queries  # read once: another thread may disconnect meanwhile
        if queries is None:
            raise ConfigurationError(NOT_CONNECTED)
        return queries

    def describe(self) -> str:
        """Where the connection goes, as whom, and until when the token is valid."""
        if self.client is None or self.credentials is None:
            return "Not connected."
        who = self.credentials.client_id or "access token"
        text = f"Connected to {mask_url(self.client.url)} as {who}"
        exp = self.credentials.expires_at
        if exp is not None:
            when = datetime.fromtimestamp(exp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            text += f"; token valid until {when}"
        if self.instance_id:
            text += f"; instance {self.instance_id}"
        if self.replay is not None and self.client.url == self.replay.url:
            text += f"; replaying {self.replay.path}"
        if self.recorder is not None:
            text += f"; recording to {self.recorder.path}"
        return text

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


def _setting(sandbox: LocalSandbox, name: str, wanted: Any) -> Any:
    """What the running sandbox has for the option ``name``: its port, whether it runs in its
    own process, its settings (a process sandbox's as its child reported them); ``wanted``
    when it has no such setting."""
    if name == "port":
        return sandbox.port
    if name == "process":
        return getattr(sandbox, "process", False)
    settings = getattr(sandbox, "settings", None)
    if isinstance(settings, dict):
        return settings.get(name, wanted)
    return getattr(sandbox, name, wanted)


def _same(wanted: Any, current: Any) -> bool:
    """Whether a setting asked is the running one's (0 and None both mean "none")."""
    return wanted == current or (wanted in (0, None) and current in (0, None)
                                 and not isinstance(wanted, bool))


def _started_sandbox(options: dict[str, Any]) -> LocalSandbox:
    """A new sandbox, started (``process=True``: in its own process); a bad option or a taken
    port is a clear error."""
    options = dict(options)
    if options.pop("process", False):
        from cortex_nb.sandbox.process import SandboxProcess as Sandbox
    else:
        from cortex_nb.sandbox import Sandbox

    try:
        sandbox = Sandbox(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"Cannot start the sandbox: {exc}.") from None
    try:
        return sandbox.start()
    except ValueError as exc:  # rows that do not fit; a sandbox process checks options here
        raise ConfigurationError(f"Cannot start the sandbox: {exc}.") from None
    except OSError as exc:
        where = f"{sandbox.host}:{options.get('port', 0)}"
        raise ConfigurationError(
            f"Cannot start the sandbox on {where}: {exc.strerror or exc}. Pick another --port "
            "(0 picks a free one)."
        ) from None


_SHARED: Connection | None = None
_SHARED_LOCK = threading.Lock()


def get_connection() -> Connection:
    """The process-wide shared connection."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = Connection()
        return _SHARED


# the old names (``cortex_nb.session``): deprecated, kept for code written against them
Session = Connection
get_session = get_connection
