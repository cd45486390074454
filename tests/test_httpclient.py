"""HTTPClient over real HTTP (pytest-httpserver): keywords, precedence, auth, retries, errors."""

from __future__ import annotations

import time

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cortex_nb import (
    ConfigurationError,
    CortexError,
    Credentials,
    CredentialsError,
    HTTPClient,
    HTTPError,
    InvalidJSONError,
    TransportError,
)
from cortex_nb.http.client import DEFAULT_URL, build_url

from .support import (
    API_PATH,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    bearers_seen,
    json_response,
    make_jwt,
    sandbox_credentials,
    statuses_at_once,
    token_requests,
)


@pytest.fixture(scope="module")
def threaded_server():
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


@pytest.fixture()
def server(threaded_server):
    threaded_server.clear()
    yield threaded_server
    threaded_server.clear()


def base(server: HTTPServer) -> dict:
    return {"url": "http://127.0.0.1", "port": server.port}


def sandboxed(sandbox, **kwargs) -> HTTPClient:
    """A client of the sandbox with its demo credentials (overridden by ``access_token=``)."""
    token = {"access_token": kwargs.pop("access_token")} if "access_token" in kwargs else {}
    return HTTPClient(url=sandbox.url, credentials=sandbox_credentials(sandbox, **token), **kwargs)


def known_secrets() -> Credentials:
    """Credentials whose secrets are known to the test; the token is fresh, so nothing refreshes."""
    return Credentials(
        access_token=make_jwt(time.time() + 3600), client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET, refresh_token=REFRESH_TOKEN, environ={},
    )


# -- construction ------------------------------------------------------------------------------
def test_seed_defaults():
    c = HTTPClient()
    assert (c.auto_refresh, c.auto_retry, c.credentials) == (True, True, None)
    assert (c.enforce_json, c.force_trace, c.raise_for_status) == (False, False, False)
    assert c.port == 443 and c.url == DEFAULT_URL
    assert c.session.verify is True  # TLS verification stays on


def test_unknown_keywords_raise_naming_them():
    with pytest.raises(ConfigurationError, match="bogus"):
        HTTPClient(bogus=1)
    with pytest.raises(ConfigurationError, match="jsn"):
        HTTPClient().request(method="GET", path="/", jsn={})
    with pytest.raises(ConfigurationError, match="method="):
        HTTPClient().request(path="/")
    assert isinstance(ConfigurationError("x"), CortexError)


def test_url_port_and_path_composition():
    assert build_url("http://127.0.0.1", 8080, "/q") == "http://127.0.0.1:8080/q"
    assert build_url("http://127.0.0.1:9000", 8080, "/q") == "http://127.0.0.1:9000/q"
    assert build_url("https://api.example", 443, "/q") == "https://api.example/q"
    assert build_url("https://api.example/", 8443, "q") == "https://api.example:8443/q"
    with pytest.raises(ConfigurationError):
        build_url("api.example", 443, "/q")
    with pytest.raises(ConfigurationError):
        HTTPClient(url="ftp://x")


def test_path_and_endpoint_alias_reach_the_server(server):
    server.expect_request("/query/v2/jobs").respond_with_json([])
    c = HTTPClient(**base(server))
    assert c.request(method="GET", path="/query/v2/jobs").json() == []
    r = c.request(method="get", endpoint="/query/v2/jobs")
    assert isinstance(r, requests.Response) and r.status_code == 200
    with pytest.raises(ConfigurationError, match="not both"):
        c.request(method="GET", path="/a", endpoint="/b")


def test_session_attributes_are_applied(server):
    server.expect_request("/echo").respond_with_json({})
    jar = requests.cookies.RequestsCookieJar()
    jar.set("sid", "cookie-1")
    c = HTTPClient(
        **base(server), headers={"X-Team": "blue"}, params={"tenant": "t1"},
        cookies=jar, auth=("user", "pw"), trust_env=False, stream=False, verify=False,
        proxies={}, cert=None,
    )
    c.request(method="GET", path="/echo", params={"q": "1"})
    request, _ = server.log[-1]
    assert request.headers["X-Team"] == "blue"
    assert request.args.to_dict() == {"tenant": "t1", "q": "1"}
    assert request.cookies["sid"] == "cookie-1"
    assert request.authorization.username == "user"
    assert request.headers["Accept"] == "application/json"
    assert (c.session.trust_env, c.session.verify) == (False, False)


def test_adapter_parameters_are_applied():
    c = HTTPClient(pool_connections=3, pool_maxsize=7, pool_block=True, max_retries=0)
    assert c.adapter._pool_connections == 3
    assert c.adapter._pool_maxsize == 7 and c.adapter._pool_block is True
    assert c.adapter.max_retries.total == 0


def test_method_level_values_override_class_level(server):
    server.expect_request("/notjson").respond_with_data("<html>", status=500)
    c = HTTPClient(**base(server), raise_for_status=True, enforce_json=True)
    with pytest.raises(HTTPError):
        c.request(method="GET", path="/notjson")
    r = c.request(method="GET", path="/notjson", raise_for_status=False, enforce_json=False)
    assert r.status_code == 500
    loose = HTTPClient(**base(server))
    with pytest.raises(HTTPError):
        loose.request(method="GET", path="/notjson", raise_for_status=True)


def test_per_request_url_port_and_headers_override(server):
    server.expect_request("/h").respond_with_json({})
    c = HTTPClient(url="http://127.0.0.1", port=1, headers={"X-A": "class", "X-B": "keep"})
    c.request(method="GET", path="/h", port=server.port, headers={"X-A": "method"})
    request, _ = server.log[-1]
    assert request.headers["X-A"] == "method" and request.headers["X-B"] == "keep"
    c2 = HTTPClient(url="http://127.0.0.1:1")
    assert c2.request(method="GET", path="/h", url=f"http://127.0.0.1:{server.port}").ok


def test_force_trace_sends_the_envoy_header(server):
    server.expect_request("/t").respond_with_json({})
    HTTPClient(**base(server), force_trace=True).request(method="GET", path="/t")
    assert "x-envoy-force-trace" in server.log[-1][0].headers
    HTTPClient(**base(server)).request(method="GET", path="/t")
    assert "x-envoy-force-trace" not in server.log[-1][0].headers
    HTTPClient(**base(server)).request(method="GET", path="/t", force_trace=True)
    assert "x-envoy-force-trace" in server.log[-1][0].headers


def test_enforce_json_raises_on_a_non_json_body(server):
    server.expect_request("/html").respond_with_data("<html>oops</html>", content_type="text/html")
    server.expect_request("/json").respond_with_json({"a": 1})
    c = HTTPClient(**base(server), enforce_json=True)
    assert c.request(method="GET", path="/json").json() == {"a": 1}
    with pytest.raises(InvalidJSONError) as info:
        c.request(method="GET", path="/html")
    assert "text/html" in str(info.value) and "/html" in str(info.value)
    assert isinstance(info.value, CortexError) and info.value.status_code == 200


def test_raise_for_status_message_names_status_reason_url_and_request_id(server):
    server.expect_request("/query/v2/jobs/nope").respond_with_response(
        json_response({"errors": [{"errorCode": 404, "message": "job nope not found"}]}, 404)
    )
    c = HTTPClient(**base(server), raise_for_status=True)
    with pytest.raises(HTTPError) as info:
        c.request(method="GET", path="/query/v2/jobs/nope")
    text = str(info.value)
    assert "HTTP 404 NOT FOUND" in text.upper() and "/query/v2/jobs/nope" in text
    assert "req-123" in text and "job nope not found" in text
    assert info.value.status_code == 404 and info.value.request_id == "req-123"


# -- auth (the sandbox is the token endpoint and the API) -------------------------------------
def test_missing_token_is_refreshed_before_sending(sandbox):
    c = sandboxed(sandbox)
    r = c.request(method="GET", path=API_PATH)
    assert r.status_code == 200
    assert len(token_requests(sandbox)) == 1
    assert bearers_seen(sandbox) == [f"Bearer {c.credentials.access_token}"]


def test_expiring_token_is_refreshed_before_sending(sandbox):
    old = sandbox.issue_access_token(ttl=10)  # valid, but inside the 60 s leeway
    c = sandboxed(sandbox, access_token=old)
    c.request(method="GET", path=API_PATH)
    assert len(token_requests(sandbox)) == 1
    assert bearers_seen(sandbox) == [f"Bearer {c.credentials.access_token}"]
    assert c.credentials.access_token != old


def test_auto_refresh_off_without_token_is_a_clear_error(sandbox):
    c = sandboxed(sandbox, auto_refresh=False)
    with pytest.raises(CredentialsError, match="auto_refresh"):
        c.request(method="GET", path=API_PATH)
    assert sandbox.requests == []


def test_401_refreshes_once_and_resends_once(sandbox):
    token = sandbox.issue_access_token()
    sandbox.expire_tokens()  # valid-looking, but the server now refuses it
    c = sandboxed(sandbox, access_token=token)
    r = c.request(method="GET", path=API_PATH)
    assert r.status_code == 200
    assert len(token_requests(sandbox)) == 1
    assert bearers_seen(sandbox) == [f"Bearer {token}", f"Bearer {c.credentials.access_token}"]


def test_401_twice_is_returned_not_looped(sandbox):
    sandbox.inject(status=401, count=5)
    c = sandboxed(sandbox)
    r = c.request(method="GET", path=API_PATH)
    assert r.status_code == 401
    assert len(bearers_seen(sandbox)) == 2
    assert len(token_requests(sandbox)) == 2  # the first token, then one refresh


def test_auto_retry_off_returns_the_401(sandbox):
    token = sandbox.issue_access_token()
    sandbox.expire_tokens()
    c = sandboxed(sandbox, access_token=token, auto_retry=False)
    assert c.request(method="GET", path=API_PATH).status_code == 401
    assert token_requests(sandbox) == []
    assert c.request(method="GET", path=API_PATH, auto_retry=True).status_code == 200


def test_32_threads_share_one_refresh(sandbox):
    sandbox.inject(path_prefix="/api/oauth2", latency_ms=300)  # widen the race window
    c = sandboxed(sandbox, pool_maxsize=32)
    assert statuses_at_once(c, 32) == [200] * 32
    assert len(token_requests(sandbox)) == 1
    seen = bearers_seen(sandbox)
    assert len(seen) == 32 and set(seen) == {f"Bearer {c.credentials.access_token}"}


def test_method_level_credentials_override(sandbox):
    c = HTTPClient(url=sandbox.url)
    assert c.request(method="GET", path=API_PATH).status_code == 401
    creds = sandbox_credentials(sandbox)
    assert c.request(method="GET", path=API_PATH, credentials=creds).status_code == 200


def test_no_bearer_token_over_plain_http_off_loopback(server):
    c = HTTPClient(url="http://api.example.com", port=80, credentials=Credentials(
        access_token=make_jwt(time.time() + 3600), environ={}))
    with pytest.raises(ConfigurationError, match="https"):
        c.request(method="GET", path="/query/v2/jobs")
    manual = HTTPClient(url="http://api.example.com", headers={"Authorization": "Bearer abc"})
    with pytest.raises(ConfigurationError):
        manual.request(method="GET", path="/")


# -- transient failures ---------------------------------------------------------------------
class Flaky:
    """Fails the first ``n`` calls with ``status`` (and headers), then answers 200."""

    def __init__(self, n: int, status: int, headers: dict | None = None) -> None:
        self.n, self.status, self.headers, self.calls, self.times = n, status, headers or {}, 0, []

    def __call__(self, request: Request) -> Response:
        self.calls += 1
        self.times.append(time.monotonic())
        if self.calls <= self.n:
            return json_response({"errors": [{"message": "busy"}]}, self.status, self.headers)
        return json_response({"ok": self.calls})


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried_for_get(server, status):
    flaky = Flaky(2, status)
    server.expect_request("/flaky").respond_with_handler(flaky)
    r = HTTPClient(**base(server)).request(method="GET", path="/flaky")
    assert r.status_code == 200 and flaky.calls == 3


def test_429_honours_retry_after(server):
    flaky = Flaky(1, 429, {"Retry-After": "1"})
    server.expect_request("/limited").respond_with_handler(flaky)
    r = HTTPClient(**base(server)).request(method="GET", path="/limited")
    assert r.status_code == 200 and flaky.calls == 2
    assert flaky.times[1] - flaky.times[0] >= 0.9


def test_retries_are_bounded(server):
    flaky = Flaky(100, 503)
    server.expect_request("/down").respond_with_handler(flaky)
    r = HTTPClient(**base(server)).request(method="GET", path="/down")
    assert r.status_code == 503 and flaky.calls == 5  # first try + 4 retries
    with pytest.raises(HTTPError, match="503"):
        HTTPClient(**base(server), max_retries=0).request(
            method="GET", path="/down", raise_for_status=True
        )


def test_post_is_resent_only_when_marked_idempotent(server):
    plain = Flaky(1, 503)
    server.expect_request("/post1").respond_with_handler(plain)
    assert HTTPClient(**base(server)).request(method="POST", path="/post1", json={}).status_code == 503
    assert plain.calls == 1
    marked = Flaky(1, 503)
    server.expect_request("/post2").respond_with_handler(marked)
    r = HTTPClient(**base(server)).request(method="POST", path="/post2", json={}, idempotent=True)
    assert r.status_code == 200 and marked.calls == 2


def test_repr_shows_no_port_the_url_contradicts(server):
    c = HTTPClient(url=f"http://127.0.0.1:{server.port}", port=443)
    assert repr(c).startswith(f"HTTPClient(url='http://127.0.0.1:{server.port}'")
    assert "port=443" not in repr(c)
    # the URL names the port the requests go to
    server.expect_request("/x").respond_with_json({})
    assert c.request(method="GET", path="/x").status_code == 200


def test_connection_refused_is_a_transport_error():
    c = HTTPClient(url="http://127.0.0.1", port=9, max_retries=0)
    with pytest.raises(TransportError, match=r"127\.0\.0\.1:9"):
        c.request(method="GET", path="/x")


# -- secrets --------------------------------------------------------------------------------
def test_repr_masks_secrets_everywhere(server):
    credentials = known_secrets()
    c = HTTPClient(
        **base(server), credentials=credentials,
        headers={"Authorization": "Bearer hdr-SECRET"}, auth=("u", "pw-SECRET"),
    )
    text = repr(c) + str(c)
    assert f"url='http://127.0.0.1', port={server.port}" in text
    for secret in (*credentials.secrets(), "hdr-SECRET", "pw-SECRET"):
        assert secret not in text


def test_error_messages_carry_no_secret(server):
    # a reply the sandbox cannot give: an error body that echoes a secret
    server.expect_request("/boom").respond_with_response(
        json_response({"errors": [{"message": f"token {REFRESH_TOKEN} rejected"}]}, 500)
    )
    creds = known_secrets()
    c = HTTPClient(**base(server), credentials=creds, raise_for_status=True, max_retries=0)
    with pytest.raises(HTTPError) as info:
        c.request(method="GET", path="/boom")
    text = str(info.value)
    assert REFRESH_TOKEN not in text and c.credentials.access_token not in text
    assert "500" in text


def test_per_request_override_of_none_is_kept_apart_from_not_given(sandbox):
    creds = sandbox_credentials(sandbox)
    c = HTTPClient(url=sandbox.url, credentials=creds)
    assert c.request(method="GET", path=API_PATH).status_code == 200
    # credentials=None for one request means "no credentials", not "the client's"
    assert c.request(method="GET", path=API_PATH, credentials=None).status_code == 401
    assert bearers_seen(sandbox)[-1] is None


def test_cookies_given_as_a_dict_are_sent_and_kept(sandbox):
    c = HTTPClient(url=sandbox.url, credentials=sandbox_credentials(sandbox),
                   cookies={"sid": "ck-7f1"})
    for _ in range(2):  # a reply is taken into the session's jar; the next request still goes
        assert c.request(method="GET", path=API_PATH).status_code == 200
    assert [r.headers.get("cookie") for r in sandbox.requests if r.path == API_PATH] == [
        "sid=ck-7f1", "sid=ck-7f1"]
    assert "ck-7f1" not in repr(c)
