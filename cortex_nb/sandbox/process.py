"""The sandbox in its own process, so that its memory and CPU time are not the notebook's.

``SandboxProcess(rows=..., seed=..., port=0, ...)`` takes the options of ``Sandbox`` and runs
one in a child Python (``python -m cortex_nb.sandbox.process OPTIONS-JSON``). The child starts
the sandbox, prints one JSON line (its URL, instance id and demo credentials, or the error that
stopped it) and serves until its standard input closes: only the parent holds that pipe, so the
child ends with its parent, however the parent ends (a kernel restart, a crash, SIGKILL).
SIGTERM and SIGINT stop it too.

The object offers what a connection uses of an in-process ``Sandbox``: ``url``, ``port``,
``host``, ``token_url``, ``instance_id``, ``rows``, ``seed``, ``data_identity`` (the child's
own, anchor hour included), ``credentials()``, ``start()``, ``stop()`` and ``with``. (The
request log, fault injection and token tricks are the in-process sandbox's; tests use that one.)
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
from typing import IO, Any

__all__ = ["SETTINGS", "SandboxProcess"]

# what a connection compares to decide whether a running sandbox serves the options asked
SETTINGS = (
    "rows", "seed", "host", "latency_ms", "job_delay_ms", "threads", "workers",
    "query_rate_limit", "memory_limit_mb", "query_timeout_ms", "results_ttl_s", "results_mb",
    "scan_rate", "verbose",
)
START_TIMEOUT_S = 600.0  # generating tens of millions of rows takes minutes
STOP_TIMEOUT_S = 10.0


class SandboxProcess:
    """An offline Cortex Data Lake served by a child process (options as ``Sandbox``)."""

    process = True  # what a connection compares when asked for a sandbox in its own process

    def __init__(self, start_timeout: float = START_TIMEOUT_S, **options: Any) -> None:
        self.options = {"host": "127.0.0.1", "port": 0, **options}
        self.start_timeout = start_timeout
        self.host = self.options["host"]
        self.rows = self.options.get("rows", 100_000)
        self.seed = self.options.get("seed", 7)
        self._child: subprocess.Popen | None = None
        self._facts: dict[str, Any] = {}

    def start(self) -> SandboxProcess:
        """Start the child and wait (up to ``start_timeout``) for its address; ``ValueError``
        or ``OSError`` as an in-process sandbox would raise them."""
        if self._child is not None:
            return self
        command = [sys.executable, "-m", "cortex_nb.sandbox.process", json.dumps(self.options)]
        self._child = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        facts = _first_line(self._child.stdout, self.start_timeout)
        if facts is None or "error" in facts:
            self.stop()
            problem = facts["error"] if facts else (
                f"its process gave no address within {self.start_timeout:g} s"
            )
            raise (OSError if facts and facts.get("kind") == "OSError" else ValueError)(problem)
        self._facts = facts
        return self

    def stop(self) -> None:
        """End the child (closing its stdin, then SIGTERM, then SIGKILL); safe to call twice."""
        child, self._child = self._child, None
        if child is None:
            return
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=STOP_TIMEOUT_S / 2)
        except subprocess.TimeoutExpired:
            child.terminate()
            try:
                child.wait(timeout=STOP_TIMEOUT_S / 2)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if child.stdout is not None:
            child.stdout.close()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._facts.get("url", "not started") if self._child else "not started"
        pid = f", pid {self._child.pid}" if self._child else ""
        return f"SandboxProcess({where}, rows={self.rows}, seed={self.seed}{pid})"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._child.pid if self._child is not None else None

    @property
    def url(self) -> str:
        """Base URL of the Query API (no trailing slash)."""
        return self._fact("url")

    @property
    def port(self) -> int:
        """The bound port."""
        return self._fact("port")

    @property
    def instance_id(self) -> str:
        """The tenant id in table names."""
        return self._fact("instance_id")

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""
        return self._fact("credentials")["token_url"]

    @property
    def settings(self) -> dict[str, Any]:
        """The settings the child's sandbox runs with (``SETTINGS``: rows, latency, scan
        rate...), the defaults included, as it reported them when it started."""
        return dict(self._fact("settings"))

    @property
    def data_identity(self) -> str:
        """What its rows depend on (rows, seed, anchor hour), as the child's sandbox says."""
        return self._fact("data_identity")

    def credentials(self) -> dict[str, str]:
        """The demo credentials: ``client_id``, ``client_secret``, ``refresh_token``, token URL."""
        return dict(self._fact("credentials"))

    def _fact(self, name: str) -> Any:
        if self._child is None or not self._facts:
            raise RuntimeError("the sandbox process is not running: call start()")
        return self._facts[name]


def _first_line(stream: IO[str] | None, timeout: float) -> dict | None:
    """The first line the child prints, as JSON, within ``timeout`` s (None if none came)."""
    lines: queue.Queue[str] = queue.Queue()
    if stream is None:
        return None
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        return None
    try:
        facts = json.loads(line)
    except ValueError:
        return None
    return facts if isinstance(facts, dict) else None


def main(argv: list[str]) -> int:
    """The child: start the sandbox, say where it is, serve until stdin closes or a signal."""
    from cortex_nb.sandbox.server import Sandbox

    try:
        sandbox = Sandbox(**json.loads(argv[0])).start()
    except (TypeError, ValueError, OSError) as error:
        kind = "OSError" if isinstance(error, OSError) else "ValueError"
        print(json.dumps({"error": str(error), "kind": kind}), flush=True)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=_set_at_eof, args=(sys.stdin, stop), daemon=True).start()
    facts = {
        "url": sandbox.url, "port": sandbox.port, "instance_id": sandbox.instance_id,
        "credentials": sandbox.credentials(), "data_identity": sandbox.data_identity,
        "settings": {name: getattr(sandbox, name) for name in SETTINGS},
    }
    print(json.dumps(facts), flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
    return 0


def _set_at_eof(stream: IO[str], event: threading.Event) -> None:
    """Set ``event`` once ``stream`` ends (the parent closed it, or is gone)."""
    while stream.readline():
        pass
    event.set()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
