"""Helpers for tests that need tokens, the sandbox's OAuth2 endpoint, stub replies, an
InteractiveShell or a real IPython kernel."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator

import requests
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from werkzeug import Response

from cortex_nb import Credentials

CLIENT_ID = "test-client"
CLIENT_SECRET = "cs-SECRET-4f1d9e"
REFRESH_TOKEN = "rt-SECRET-77aa01"


def make_jwt(exp: float, **claims: object) -> str:
    """A JWT-shaped token (unsigned) whose payload carries ``exp``, URL-safe base64 encoded."""

    def seg(obj: object) -> str:
        raw = json.dumps(obj, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{seg({'alg': 'none'})}.{seg({'exp': int(exp), **claims})}.sig"


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(
        json.dumps(body), status=status, headers=headers or {}, content_type="application/json"
    )


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    """A werkzeug JSON response with an x-request-id header."""
    return _json(body, status, {"x-request-id": "req-123", **(headers or {})})


def refresh_credentials(server, **overrides: object) -> Credentials:
    """Credentials that refresh against ``server``'s token endpoint (no PAN_* leaks in)."""
    values = dict(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN)
    values.update(overrides)
    return Credentials(token_url=server.url_for("/"), environ={}, **values)


# -- the sandbox as the token authority ---------------------------------------------------------
TOKEN_PATH = "/api/oauth2/RequestToken"
API_PATH = "/query/v2/jobs"  # any API route: the sandbox checks the bearer token on each


def sandbox_credentials(sandbox, **overrides: object) -> Credentials:
    """The sandbox's demo credentials (refreshing against it), with ``overrides``."""
    return Credentials(**{**sandbox.credentials(), **overrides}, environ={})


def token_requests(sandbox) -> list:
    """The requests the sandbox's token endpoint received."""
    return [r for r in sandbox.requests if r.path == TOKEN_PATH]


def bearers_seen(sandbox, path: str = API_PATH) -> list[str | None]:
    """The Authorization header of each request to ``path``, in order."""
    return [r.headers.get("authorization") for r in sandbox.requests if r.path == path]


def sandbox_accepts(sandbox, token: str) -> bool:
    """True when the sandbox's API takes ``token`` (asked with plain requests)."""
    reply = requests.get(
        sandbox.url + API_PATH, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    return reply.status_code == 200


def statuses_at_once(client, n: int, path: str = API_PATH) -> list[int]:
    """The statuses of ``n`` GETs of ``path`` by ``n`` threads released at once (bounded)."""
    barrier = threading.Barrier(n)
    statuses: list[int] = []

    def worker() -> None:
        barrier.wait(timeout=30)
        statuses.append(client.request(method="GET", path=path).status_code)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses


# -- cells in an InteractiveShell -----------------------------------------------------------------
def run_cell(ip, cell: str):
    """Run a cell; return (result, captured output)."""
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap


def failed_with(result, cap) -> str:
    """The one-line error a failed cell showed (asserts it failed without a traceback)."""
    assert not result.success and isinstance(result.error_in_exec, UsageError)
    text = cap.stdout + cap.stderr
    assert "Traceback" not in text
    return str(result.error_in_exec)


# -- a real IPython kernel (jupyter_client), driven as a notebook drives it -----------------------
PROGRESS = ("display_data", "update_display_data")  # the message types a progress line comes as


class Kernel:
    """A kernel and its client; every iopub message is kept, whichever cell it belongs to."""

    def __init__(self, connect_code: str, env: dict[str, str] | None = None) -> None:
        from jupyter_client.manager import start_new_kernel  # only the kernel tests need it

        self.connect_code = connect_code
        started = start_new_kernel(kernel_name="python3", **({} if env is None else {"env": env}))
        self.km, self.kc = started
        self.messages: list[dict] = []

    @classmethod
    def with_own_sandbox(cls) -> Kernel:
        """A kernel that starts a sandbox of its own (``%cortex connect sandbox``)."""
        return cls("%load_ext cortex_nb\n%cortex connect sandbox --rows 2000")

    @classmethod
    def connected_to(cls, sandbox) -> Kernel:
        """A kernel that connects by URL (PAN_* variables) to ``sandbox``, in the test process:
        it outlives every kernel restart, as the real service does."""
        creds = sandbox.credentials()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAN_")}
        env.update(PAN_CLIENT_ID=creds["client_id"], PAN_CLIENT_SECRET=creds["client_secret"],
                   PAN_REFRESH_TOKEN=creds["refresh_token"])
        connect = f"%cortex connect --url {sandbox.url} --instance {sandbox.instance_id}"
        return cls(f"%load_ext cortex_nb\n{connect}", env)

    def execute(self, code: str, timeout: float = 60) -> list[dict]:
        """Run ``code``; its own messages until the kernel is idle again (others are kept)."""
        return self.finished(self.kc.execute(code), timeout)

    def own(self, msg_id: str) -> list[dict]:
        """The messages kept so far that belong to request ``msg_id``."""
        return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id]

    def finished(self, msg_id: str, timeout: float = 60, linger: float = 0.0) -> list[dict]:
        """The messages of request ``msg_id`` once the kernel is idle after it, then any that
        arrive in ``linger`` seconds more (output printed late by background threads)."""
        deadline = time.monotonic() + timeout
        while not any(m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                      for m in self.own(msg_id)):
            if time.monotonic() >= deadline:
                raise AssertionError(f"the kernel was not idle within {timeout} s")
            self.read(0.2)
        return self.own(msg_id) + self.read_for(linger)

    def read(self, seconds: float) -> None:
        """Keep the next iopub message, if one arrives within ``seconds``."""
        with contextlib.suppress(queue.Empty):
            self.messages.append(self.kc.get_iopub_msg(timeout=seconds))

    def read_for(self, seconds: float) -> list[dict]:
        """Every iopub message that arrives within ``seconds``, whichever cell sent it."""
        first, end = len(self.messages), time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.read(min(left, 0.2))
        return self.messages[first:]

    def printed(self, code: str, timeout: float = 60) -> str:
        """What ``code`` printed; fails on an error output."""
        outputs = self.execute(code, timeout)
        assert not errors(outputs), errors(outputs)
        return "".join(m["content"]["text"] for m in outputs if m["msg_type"] == "stream")

    def background(self, line: str, sql: str) -> tuple[list[dict], str]:
        """Run a ``%%cortex --bg`` cell; its messages and the id of its status display."""
        outputs = self.execute(f"%%cortex --bg {line}\n{sql}")
        assert not errors(outputs)
        [shown] = [m for m in outputs if m["msg_type"] == "display_data"]
        return outputs, shown["content"]["transient"]["display_id"]

    def status_lines(self, display_id: str) -> list[str]:
        """Every text the display ``display_id`` showed so far, in order."""
        return [
            m["content"]["data"]["text/plain"] for m in self.messages
            if m["msg_type"] in PROGRESS
            and m["content"].get("transient", {}).get("display_id") == display_id
        ]

    def wait_for_status(self, display_id: str, start: str, timeout: float = 60) -> str:
        """The first text of that display starting with ``start`` (waiting for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.status_lines(display_id) if t.startswith(start)]
            if found:
                return found[0]
            self.read(0.2)
        raise AssertionError(f"no {start!r} line within {timeout} s: {self.status_lines(display_id)}")

    def restart(self) -> None:
        """Restart as Kernel > Restart does (a shutdown request, then a new process)."""
        self.km.restart_kernel(now=False)
        self.kc.wait_for_ready(timeout=60)
        self.printed(self.connect_code)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@contextlib.contextmanager
def running(kernel: Kernel) -> Iterator[Kernel]:
    """``kernel``, connected (its connect cell ran cleanly); shut down afterwards."""
    try:
        assert "Connected to" in kernel.printed(kernel.connect_code, timeout=120)
        yield kernel
    finally:
        kernel.close()


def errors(outputs: list[dict]) -> list[dict]:
    """The error outputs among a cell's messages."""
    return [m["content"] for m in outputs if m["msg_type"] == "error"]


def texts(outputs: list[dict], kinds: tuple[str, ...]) -> list[str]:
    """The plain texts of the messages of ``kinds`` that carry data, in order."""
    return [
        m["content"]["data"].get("text/plain", "")
        for m in outputs if m["msg_type"] in kinds and "data" in m["content"]
    ]
