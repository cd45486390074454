"""Shared fixtures: one real sandbox for the whole session, reset before and after each test;
an InteractiveShell and a real IPython kernel per test module that asks for one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import requests
from IPython.core.interactiveshell import InteractiveShell

from cortex_nb import Credentials
from cortex_nb.notebook.connection import get_connection as get_session
from cortex_nb.sandbox import Sandbox
from tests.support import Kernel, running

SANDBOX_ROWS = 3000  # small enough for a fast suite, large enough for several pages
SANDBOX_SEED = 7


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """A started sandbox on a free loopback port (``sandbox.url``, ``sandbox.credentials()``)."""
    with Sandbox(port=0, rows=SANDBOX_ROWS, seed=SANDBOX_SEED) as sb:
        yield sb


@pytest.fixture(autouse=True)
def _isolate_sandbox(request: pytest.FixtureRequest) -> Iterator[None]:
    """Clear the request log and injected faults around every test that uses the sandbox."""
    if "sandbox" not in request.fixturenames:
        yield
        return
    sb = request.getfixturevalue("sandbox")
    sb.clear()
    yield
    sb.clear()


@pytest.fixture()
def sandbox_http(sandbox: Sandbox) -> Iterator[requests.Session]:
    """A plain ``requests`` session carrying a valid bearer token for ``sandbox``."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {sandbox.issue_access_token()}"
        yield session


class SandboxAPI:
    """Thin helpers over plain ``requests`` for the sandbox's Query API (no client code)."""

    def __init__(self, sandbox: Sandbox, session: requests.Session) -> None:
        self.sandbox, self.http = sandbox, session
        self.traffic = f"`{sandbox.instance_id}.firewall.traffic`"

    def create(self, sql: str, **body: object) -> requests.Response:
        """POST /query/v2/jobs with ``params.query = sql`` plus any other body keys."""
        params = {"query": sql, **body.pop("params", {})}
        return self.http.post(f"{self.sandbox.url}/query/v2/jobs", json={"params": params, **body})

    def job(self, job_id: str) -> requests.Response:
        """GET the job detail."""
        return self.http.get(f"{self.sandbox.url}/query/v2/jobs/{job_id}")

    def results(self, job_id: str, **params: object) -> requests.Response:
        """GET /query/v2/jobResults/<id> with the given query parameters."""
        return self.http.get(f"{self.sandbox.url}/query/v2/jobResults/{job_id}", params=params)

    def run(self, sql: str, **params: object) -> dict:
        """Create a job and return its first DONE results page (maxWait holds until done)."""
        created = self.create(sql)
        assert created.status_code == 201, created.text
        page = self.results(created.json()["jobId"], maxWait=2000, **params).json()
        assert page["state"] == "DONE", page
        return page

    def rows(self, sql: str) -> list[dict]:
        """Every row of a query, as valuesDictionary objects (one page of up to 100000)."""
        return self.run(sql, pageSize=100_000)["page"]["result"]["data"]


@pytest.fixture()
def sandbox_api(sandbox: Sandbox, sandbox_http: requests.Session) -> SandboxAPI:
    """Query API helpers bound to the session sandbox."""
    return SandboxAPI(sandbox, sandbox_http)


@contextlib.contextmanager
def sandbox_client(sb: Sandbox) -> Iterator[SandboxAPI]:
    """Query API helpers with their own authorised session, for a sandbox a test starts itself."""
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {sb.issue_access_token()}"
        yield SandboxAPI(sb, session)


@pytest.fixture(scope="module")
def ip() -> Iterator[InteractiveShell]:
    """IPython's shell with ``%load_ext cortex_nb`` done; the connection is dropped after."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cortex_nb")
    yield shell
    get_session().disconnect()


@pytest.fixture()
def connected(ip: InteractiveShell, sandbox: Sandbox) -> InteractiveShell:
    """The shell, its shared connection on the session sandbox (with its instance id)."""
    get_session().connect(
        Credentials(**sandbox.credentials()), url=sandbox.url, instance_id=sandbox.instance_id
    )
    sandbox.clear()
    ip.run_line_magic("config", "CortexMagics.page_size = 10000")
    return ip


# -- a real IPython kernel, one per test module ------------------------------------------------
@pytest.fixture(scope="module")
def kernel(sandbox: Sandbox) -> Iterator[Kernel]:
    """A real IPython kernel (jupyter_client) connected by URL to the session's sandbox."""
    with running(Kernel.connected_to(sandbox)) as k:
        yield k


@pytest.fixture(scope="module")
def kernel_with_sandbox() -> Iterator[Kernel]:
    """A real IPython kernel running a sandbox of its own (``%cortex connect sandbox``)."""
    with running(Kernel.with_own_sandbox()) as k:
        yield k
