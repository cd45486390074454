"""The one shared connection that the ``%%cortex`` magic, the panel and user code all drive.

``get_session()`` returns the process-wide ``Session``. It holds the ``HTTPClient``, the
``QueryService`` on top of it, the trace history (kept across reconnects, so ``%cortex
history`` tells the whole story) and, after ``connect_sandbox()``, the in-process sandbox.
Listeners (the panel's status line) are told after every connect and disconnect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from cortex_nb.credentials import Credentials
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.httpclient import HTTPClient
from cortex_nb.query import QueryService
from cortex_nb.tracing import TraceLog

__all__ = ["Session", "get_session"]

NOT_CONNECTED = (
    "Not connected. Run `%cortex connect sandbox` for the offline sandbox, `%cortex connect` "
    "with PAN_* variables or --profile NAME for a tenant, or `%cortex panel`."
)


class Session:
    """Shared connection state: client, query service, traces, optional sandbox."""

    def __init__(self) -> None:
        self.client: HTTPClient | None = None
        self.queries: QueryService | None = None
        self.credentials: Credentials | None = None
        self.instance_id: str | None = None
        self.sandbox: Any = None
        self.traces = TraceLog(secrets=self.secrets)
        self.listeners: list[Callable[[Session], None]] = []
        self._lock = threading.RLock()

    def secrets(self) -> list[str]:
        """The secret values of the connected credentials, for scrubbing text before showing it."""
        return self.credentials.secrets() if self.credentials is not None else []

    @property
    def connected(self) -> bool:
        """True once ``connect`` succeeded and until ``disconnect``."""
        return self.queries is not None

    def connect(
        self,
        credentials: Credentials | None = None,
        *,
        url: str | None = None,
        instance_id: str | None = None,
        validate: bool = True,
        **client_kwargs: Any,
    ) -> Session:
        """Connect with ``credentials`` (default: from ``PAN_*``), checking them by a refresh."""
        credentials = credentials if credentials is not None else Credentials()
        self.traces.attach(credentials.http, kind="token")
        if validate:
            credentials.refresh_if_expiring()
        if url is not None:
            client_kwargs["url"] = url
        client = HTTPClient(credentials=credentials, **client_kwargs)
        with self._lock:
            self._close_client()
            self.credentials, self.client = credentials, client
            self.queries = QueryService(session=client, traces=self.traces)
            self.instance_id = instance_id
        self._notify()
        return self

    def start_sandbox(self, **sandbox_kwargs: Any) -> Any:
        """The in-process sandbox, started now if none runs (connects nothing)."""
        from cortex_nb.sandbox import Sandbox

        with self._lock:
            if self.sandbox is None:
                sandbox = Sandbox(**sandbox_kwargs)
                sandbox.start()
                self.sandbox = sandbox
            return self.sandbox

    def connect_sandbox(self, **sandbox_kwargs: Any) -> Session:
        """Start an in-process sandbox (once) and connect to it with its demo credentials."""
        sandbox = self.start_sandbox(**sandbox_kwargs)
        return self.connect(
            Credentials(**sandbox.credentials()), url=sandbox.url, instance_id=sandbox.instance_id
        )

    def connect_profile(self, name: str, *, url: str | None = None) -> Session:
        """Connect with a stored profile: its region or URL, instance id and credentials."""
        from cortex_nb import profiles

        stored = profiles.load_profile(name)
        if stored.get("region") == "sandbox":  # the sandbox's port changes: start one now
            sandbox = self.start_sandbox()
            credentials = Credentials(profile=name, token_url=sandbox.token_url)
            return self.connect(credentials, url=sandbox.url, instance_id=sandbox.instance_id)
        return self.connect(
            Credentials(profile=name),
            url=url or stored.get("url"),
            instance_id=stored.get("instance_id"),
        )

    def disconnect(self) -> None:
        """Forget the credentials and close the client (the sandbox keeps running)."""
        with self._lock:
            self._close_client()
            self.client = self.queries = self.credentials = None
            self.instance_id = None
        self._notify()

    def stop_sandbox(self) -> None:
        """Stop the in-process sandbox, if one runs."""
        with self._lock:
            if self.sandbox is not None:
                self.sandbox.stop()
                self.sandbox = None

    def require(self) -> QueryService:
        """The query service, or a clear error saying how to connect."""
        if self.queries is None:
            raise ConfigurationError(NOT_CONNECTED)
        return self.queries

    def describe(self) -> str:
        """Where the session is connected, as whom, and until when the token is valid."""
        if self.client is None or self.credentials is None:
            return "Not connected."
        who = self.credentials.client_id or "access token"
        text = f"Connected to {self.client.url} as {who}"
        exp = self.credentials.expires_at
        if exp is not None:
            when = datetime.fromtimestamp(exp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            text += f"; token valid until {when}"
        if self.instance_id:
            text += f"; instance {self.instance_id}"
        return text

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


_SESSION: Session | None = None
_SESSION_LOCK = threading.Lock()


def get_session() -> Session:
    """The process-wide shared session."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            _SESSION = Session()
        return _SESSION
