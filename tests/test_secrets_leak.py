"""No secret leaves: not over a refused hop (redirects, proxies, any credential header), not in
an exception that outlives the call, not in a traceback that shows local variables, not in a
URL's user:password. Servers are on 127.0.0.1 (pytest-httpserver, the sandbox).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import traceback

import pytest
import requests
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from pytest_httpserver import HTTPServer
from werkzeug import Response

from cortex_nb import (
    ConfigurationError,
    CortexError,
    Credentials,
    CredentialsError,
    HTTPClient,
    HTTPError,
    TransportError,
)
from cortex_nb.http.endpoints import Endpoint, check_url
from cortex_nb.http.security import MASK, Secret, check_route, is_loopback, scrub
from cortex_nb.http.tracing import TraceLog
from cortex_nb.http.transport import RetryingAdapter
from cortex_nb.notebook.connection import Connection
from cortex_nb.query.service import QueryService

from .support import API_PATH, CLIENT_SECRET, REFRESH_TOKEN, make_jwt

TOKEN_PATH = "/api/oauth2/RequestToken"
API_KEY, COOKIE = "ak-SECRET-31c7", "ck-SECRET-90e2"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture()
def other_server():
    """A second loopback server, reached by another name (``localhost``): another origin."""
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture()
def no_proxy_env(monkeypatch):
    """No proxy variables from the machine running the tests."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return monkeypatch


def known_credentials(**overrides) -> Credentials:
    values = {
        "access_token": make_jwt(time.time() + 3600), "client_id": "cid-1",
        "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN, "environ": {},
    }
    return Credentials(**{**values, **overrides})


def redirect_to(location: str, status: int = 307) -> Response:
    return Response(status=status, headers={"Location": location})


# -- every hop: redirects ---------------------------------------------------------------------
@pytest.mark.parametrize("target", ["localhost", "evil.invalid"])
def test_a_token_request_follows_no_redirect(httpserver, other_server, target):
    where = f"http://{target}:{other_server.port}{TOKEN_PATH}"
    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_response(redirect_to(where))
    other_server.expect_request(TOKEN_PATH).respond_with_json({"access_token": "stolen"})
    credentials = known_credentials(
        access_token=None, token_url=f"http://127.0.0.1:{httpserver.port}"
    )
    with pytest.raises(CredentialsError, match=r"answered HTTP 307, redirecting to") as info:
        credentials.refresh()
    assert where in str(info.value) and "never re-sent to a redirect" in str(info.value)
    assert other_server.log == []  # the client secret and refresh token stayed home
    assert len(httpserver.log) == 1


def test_a_redirect_to_another_origin_drops_every_credential_header(httpserver, other_server):
    other = f"http://localhost:{other_server.port}/landing"
    httpserver.expect_request(API_PATH).respond_with_response(redirect_to(other, 302))
    httpserver.expect_request("/same").respond_with_response(redirect_to("/landing", 302))
    httpserver.expect_request("/landing").respond_with_json([])
    other_server.expect_request("/landing").respond_with_json([])
    jar = requests.cookies.RequestsCookieJar()
    jar.set("sid", COOKIE)
    client = HTTPClient(
        url="http://127.0.0.1", port=httpserver.port, credentials=known_credentials(),
        headers={"X-Api-Key": API_KEY}, cookies=jar,
    )
    assert client.request(method="GET", path=API_PATH).ok
    (request, _), = other_server.log
    sent = {name.lower() for name, _ in request.headers.items()}
    assert not {"authorization", "x-api-key", "cookie"} & sent
    assert client.request(method="GET", path="/same").ok  # same origin: credentials kept
    request, _ = httpserver.log[-1]
    assert request.path == "/landing" and request.headers["X-Api-Key"] == API_KEY
    assert request.headers["Authorization"].startswith("Bearer ey")
    assert request.cookies["sid"] == COOKIE


# -- every credential header, every name -------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"headers": {"X-Api-Key": API_KEY}},
        {"headers": {"Cookie": f"sid={COOKIE}"}},
        {"auth": ("user", "pw-SECRET")},
        {"credentials": known_credentials()},
    ],
)
def test_any_credential_header_is_refused_over_plain_http_off_loopback(options):
    client = HTTPClient(url="http://api.invalid", port=80, max_retries=0, **options)
    with pytest.raises(ConfigurationError, match=r"over http: http://api\.invalid"):
        client.request(method="GET", path=API_PATH)


def test_loopback_means_loopback_addresses_and_exactly_localhost(sandbox):
    for host in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("api.localhost", "localhost.", "localhost.evil.com", "127.0.0.1.nip.io",
                 "0x7f.1", "127.1", "", None):
        assert not is_loopback(host), host
    # a name that only DNS (or a resolver's special case) maps to loopback gets no token
    named = HTTPClient(url=f"http://sandbox.localhost:{sandbox.port}",
                       credentials=known_credentials(), max_retries=0)
    with pytest.raises(ConfigurationError, match=r"over http: http://sandbox\.localhost"):
        named.request(method="GET", path=API_PATH)
    assert sandbox.requests == []


# -- every hop: proxies ---------------------------------------------------------------------------
def test_no_bearer_in_clear_through_a_proxy_off_loopback(sandbox, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    credentials = known_credentials(access_token=sandbox.issue_access_token())
    client = HTTPClient(url=sandbox.url, credentials=credentials, max_retries=0)
    with pytest.raises(ConfigurationError, match=r"through the proxy http://proxy\.invalid:3128"):
        client.request(method="GET", path=API_PATH)
    given = HTTPClient(
        url=sandbox.url, credentials=credentials, max_retries=0, trust_env=False,
        proxies={"http": "http://user:pw-SECRET@proxy.invalid:3128"},
    )
    with pytest.raises(ConfigurationError, match="NO_PROXY") as info:
        given.request(method="GET", path=API_PATH)
    assert "pw-SECRET" not in str(info.value) and f"{MASK}@proxy.invalid" in str(info.value)
    no_proxy_env.setenv("NO_PROXY", "127.0.0.1")  # exempted: straight to the sandbox
    assert client.request(method="GET", path=API_PATH).status_code == 200


def test_no_token_body_in_clear_through_a_proxy_off_loopback(sandbox, no_proxy_env):
    no_proxy_env.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    credentials = Credentials(**sandbox.credentials(), environ={})
    with pytest.raises(ConfigurationError, match=r"to the token endpoint at .* through the proxy"):
        credentials.refresh()
    assert sandbox.requests == []


def test_a_loopback_proxy_is_a_hop_that_may_carry_credentials(httpserver, no_proxy_env):
    # the "proxy" is a loopback server answering the absolute-form request it is sent
    httpserver.expect_request(API_PATH).respond_with_json([])
    client = HTTPClient(
        url="http://127.0.0.1", port=9, credentials=known_credentials(), max_retries=0,
        proxies={"http": f"http://127.0.0.1:{httpserver.port}"},
    )
    assert client.request(method="GET", path=API_PATH).ok
    assert httpserver.log[0][0].headers["Authorization"].startswith("Bearer ")
    check_route("https://api.example.com/x", "http://proxy.example.com:3128", "the API")
    check_route("http://127.0.0.1:8080/x", "https://proxy.example.com", "the API")
    with pytest.raises(ConfigurationError):
        check_route("http://127.0.0.1:8080/x", "socks5://proxy.example.com:1080", "the API")


# -- exceptions and returned replies hold masked values only ------------------------------------
def shows_part_of(value: str, text: str) -> bool:
    """True when ``text`` holds any 16 characters of ``value`` (reprs may be cut short)."""
    return any(value[i:i + 16] in text for i in range(max(1, len(value) - 15)))


def reachable_text(exc: BaseException) -> str:
    """Everything an exception lets code reach: messages, chained errors, replies, requests."""
    found, stack, seen = [], [exc], set()
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, BaseException):
            found += [str(obj), repr(obj.args)]
            stack += [obj.__context__, obj.__cause__, *obj.args]
            stack += [getattr(obj, "response", None), getattr(obj, "request", None)]
        elif isinstance(obj, requests.Response):
            stack += [obj.request, *obj.history]
        elif isinstance(obj, requests.PreparedRequest):
            found += [str(dict(obj.headers)), str(obj.body), obj.url or ""]
    return "\n".join(found)


def assert_no_secret(text: str, credentials: Credentials, *more: str) -> None:
    for value in (*credentials.secrets(), *more):
        assert not shows_part_of(value, text), value[:8] + "..."


def test_http_error_keeps_the_reply_with_masked_credentials(sandbox):
    sandbox.inject(status=500, count=3)
    credentials = Credentials(**sandbox.credentials(), environ={})
    client = HTTPClient(url=sandbox.url, credentials=credentials, max_retries=0,
                        raise_for_status=True, headers={"X-Api-Key": API_KEY})
    with pytest.raises(HTTPError) as info:
        client.request(method="GET", path=API_PATH)
    headers = info.value.response.request.headers
    assert headers["Authorization"] == f"Bearer {MASK}" and headers["X-Api-Key"] == MASK
    assert_no_secret(reachable_text(info.value), credentials, API_KEY)
    reply = client.request(method="GET", path=API_PATH, raise_for_status=False)
    assert reply.request.headers["Authorization"] == f"Bearer {MASK}"


def test_transport_and_credentials_errors_chain_no_request(sandbox):
    sandbox.inject(drop=True)
    credentials = Credentials(**sandbox.credentials(), environ={})
    client = HTTPClient(url=sandbox.url, credentials=credentials, max_retries=0)
    with pytest.raises(TransportError) as info:
        client.request(method="GET", path=API_PATH)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert_no_secret(reachable_text(info.value), credentials)
    unreachable = Credentials(**{**sandbox.credentials(), "token_url": "http://127.0.0.1:9"},
                              environ={})
    unreachable.http.mount("http://", RetryingAdapter(max_retries=0))  # refused at once
    with pytest.raises(CredentialsError, match="Could not reach") as info:
        unreachable.refresh()
    assert info.value.__context__ is None
    assert_no_secret(reachable_text(info.value), unreachable)


# -- tracebacks that show local variables -------------------------------------------------------
# two failing queries, each raised where the secrets sit in the frames' variables
FAILURES = {
    # the API drops the connection: the bearer is a local of the request path
    "api": TransportError,
    # the API refuses the token and the token endpoint refuses the refresh: the token is on the
    # line being run (`credentials.refresh(stale=token)`), the client secret and refresh token
    # in the grant's body
    "refresh": CredentialsError,
}


def failing_service(sandbox, kind: str) -> tuple[QueryService, Credentials]:
    token = sandbox.issue_access_token()
    if kind == "api":
        sandbox.inject(drop=True, count=5)
    else:
        sandbox.expire_tokens()
        sandbox.inject(status=400, count=5, path_prefix="/api/oauth2")
    credentials = Credentials(**sandbox.credentials(), access_token=token, environ={})
    client = HTTPClient(url=sandbox.url, credentials=credentials, max_retries=0)
    return QueryService(client=client), credentials


def assert_shows_no_secret(text: str, sandbox, credentials: Credentials) -> None:
    demo = sandbox.credentials()
    for value in (*credentials.secrets(), demo["client_secret"], demo["refresh_token"]):
        assert not shows_part_of(value, text), value[:8] + "..."
    # the variables were shown (pytest aligns the "="), the token among them, masked
    assert re.search(r"\btoken\s*=\s*Secret\('\*{6}'\)", text), text[-3000:]


@pytest.mark.parametrize("kind", FAILURES)
def test_traceback_with_captured_locals_shows_no_secret(sandbox, kind):
    service, credentials = failing_service(sandbox, kind)
    with pytest.raises(FAILURES[kind]) as info:
        service.query("SELECT 1")
    text = "".join(traceback.TracebackException.from_exception(
        info.value, capture_locals=True).format())
    assert_shows_no_secret(text, sandbox, credentials)
    if kind == "refresh":
        assert "body = {" in text and "'client_secret': Secret('******')" in text


LEAK_TEST = '''
import os

from cortex_nb import Credentials, HTTPClient
from cortex_nb.query.service import QueryService


def service():
    env = os.environ
    credentials = Credentials(
        access_token=env["T_TOKEN"], client_id=env["T_CID"], client_secret=env["T_CS"],
        refresh_token=env["T_RT"], token_url=env["T_TOKEN_URL"], environ={},
    )
    client = HTTPClient(url=env["T_URL"], credentials=credentials, max_retries=0)
    return QueryService(client=client)


def test_failing_query():
    service().query("SELECT 1")
'''


@pytest.mark.parametrize("kind", FAILURES)
def test_pytest_showlocals_shows_no_secret(sandbox, kind, tmp_path):
    _, credentials = failing_service(sandbox, kind)
    demo = sandbox.credentials()
    env = {
        "T_TOKEN": credentials.access_token, "T_CID": demo["client_id"],
        "T_CS": demo["client_secret"], "T_RT": demo["refresh_token"],
        "T_TOKEN_URL": demo["token_url"], "T_URL": sandbox.url,
    }
    (tmp_path / "test_leak.py").write_text(LEAK_TEST)
    run = subprocess.run(
        # -l with --tb=long: the locals of every frame, not only of the first and the last
        [sys.executable, "-m", "pytest", "-l", "--tb=long", "-q", "-p", "no:cacheprovider",
         "test_leak.py"],
        cwd=tmp_path, env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )
    text = run.stdout + run.stderr
    assert run.returncode == 1 and FAILURES[kind].__name__ in text, text[-3000:]
    assert_shows_no_secret(text, sandbox, credentials)


def test_ipython_verbose_traceback_shows_no_secret(sandbox):
    service, credentials = failing_service(sandbox, "refresh")
    ip = InteractiveShell.instance()
    ip.user_ns["service"] = service
    ip.run_line_magic("xmode", "Verbose")
    try:
        with capture_output() as cap:
            result = ip.run_cell("service.query('SELECT 1')")
    finally:
        ip.run_line_magic("xmode", "Context")
        ip.user_ns.pop("service", None)
    assert isinstance(result.error_in_exec, CredentialsError)
    text = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
    assert "refresh(stale=token)" in text  # the frame whose line holds the token was shown
    assert_shows_no_secret(text, sandbox, credentials)


def test_secrets_are_held_as_masked_strings(sandbox):
    credentials = Credentials(**sandbox.credentials(), environ={})
    credentials.refresh()
    for value in (credentials.access_token, credentials.client_secret, credentials.refresh_token):
        assert isinstance(value, Secret) and repr(value) == "Secret('******')"
        assert value == str(value) and MASK not in str(value)  # still the real value to send


# -- URLs with user:password -------------------------------------------------------------------
def test_url_passwords_are_masked_wherever_shown():
    url = "https://analyst:pw-SECRET@gw.example.com"
    shown = [
        repr(HTTPClient(url=url)),
        repr(Credentials(access_token="at", token_url=url, environ={})),
        Endpoint.for_url(url, token_url=url).describe(),
        scrub(f"GET {url}/query/v2/jobs failed"),
    ]
    with pytest.raises(ConfigurationError) as info:
        check_url(url + "/a b", "API URL")
    shown.append(str(info.value))
    with pytest.raises(ConfigurationError) as info:
        HTTPClient(url="http://u:pw-SECRET@api.invalid", credentials=known_credentials()).request(
            method="GET", path="/"
        )
    shown.append(str(info.value))
    connection = Connection()
    connection.connect(known_credentials(), url=url, validate=False)
    shown.append(connection.describe())
    for text in shown:
        assert "pw-SECRET" not in text and f"{MASK}@" in text, text


def test_cortex_errors_never_show_a_url_password(httpserver):
    httpserver.expect_request("/boom").respond_with_json({"errors": [{"message": "no"}]}, 500)
    client = HTTPClient(url=f"http://u:pw-SECRET@127.0.0.1:{httpserver.port}", max_retries=0)
    traces = TraceLog()
    traces.attach(client.session)
    for path in ("/boom", "/missing"):
        with pytest.raises(CortexError) as info:
            client.request(method="GET", path=path, raise_for_status=True)
        assert "pw-SECRET" not in str(info.value) and f"{MASK}@127.0.0.1" in str(info.value)
    for trace in traces:
        shown = str(trace) + trace.to_curl() + trace._repr_html_()
        assert "pw-SECRET" not in shown and f"{MASK}@127.0.0.1" in shown
