"""What the notebook's connection uses of a sandbox it starts: ``LocalSandbox``.

Two classes satisfy it, structurally (neither imports this module: the sandbox knows nothing
of the client side): ``cortex_nb.sandbox.Sandbox``, served by a thread of this process, and
``cortex_nb.sandbox.process.SandboxProcess``, served by a child process. The connection, the
result cache's scope (``results.cache.cache_scope``) and the magic use nothing else of them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["LocalSandbox"]


@runtime_checkable
class LocalSandbox(Protocol):
    """A running sandbox on loopback: where it listens, its tenant, its demo credentials,
    what its data are (for cache keys), and how to start and stop it."""

    host: str
    rows: int
    seed: int

    @property
    def url(self) -> str:
        """Base URL of the Query API (no trailing slash)."""

    @property
    def port(self) -> int:
        """The bound port."""

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""

    @property
    def instance_id(self) -> str:
        """The tenant id in table names."""

    @property
    def data_identity(self) -> str:
        """What its rows depend on (rows, seed, anchor hour): equal identities, equal data."""

    def credentials(self) -> dict[str, str]:
        """The demo credentials (``client_id``, ``client_secret``, ``refresh_token``...)."""

    def start(self) -> LocalSandbox:
        """Start serving (a no-op when it already does); returns itself."""

    def stop(self) -> None:
        """Stop serving (safe to call twice)."""
