"""Credentials: resolution order, token URL, JWT expiry, refresh, single flight, no secret shown."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from cortex_nb import Credentials, CredentialsError
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.credentials import DEFAULT_TOKEN_URL, jwt_expiry

from .support import (
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    make_jwt,
    refresh_credentials,
    sandbox_accepts,
    sandbox_credentials,
    token_requests,
)

# stub token endpoints (pytest-httpserver) only for replies the sandbox cannot give
creds_for = refresh_credentials


def test_arguments_win_over_environment_field_by_field():
    env = {"PAN_CLIENT_ID": "env-id", "PAN_CLIENT_SECRET": "env-secret", "PAN_REFRESH_TOKEN": "env-rt"}
    c = Credentials(client_id="arg-id", environ=env)
    assert c.client_id == "arg-id"
    assert c.client_secret == "env-secret"
    assert c.refresh_token == "env-rt"
    assert c.can_refresh


def test_environment_is_read_when_no_arguments():
    c = Credentials(environ={"PAN_ACCESS_TOKEN": "at-env"})
    assert c.access_token == "at-env"
    assert not c.can_refresh


def test_token_url_bare_host_gets_the_request_token_path():
    assert Credentials(token_url="https://idp.example", environ={}).token_url == (
        "https://idp.example/api/oauth2/RequestToken"
    )
    full = "https://idp.example/custom/token"
    assert Credentials(token_url=full, environ={}).token_url == full
    assert Credentials(environ={}).token_url == DEFAULT_TOKEN_URL
    with pytest.raises(ConfigurationError, match="token URL"):
        Credentials(token_url="idp.example", environ={})


def test_jwt_exp_is_read_with_url_safe_base64():
    # Pick claims until the payload segment holds '-' or '_', which standard base64 rejects.
    for i in range(2000):
        token = make_jwt(1_900_000_000, sub=f"??>>{i}~~")
        if "-" in token.split(".")[1] or "_" in token.split(".")[1]:
            break
    else:
        pytest.fail("could not build a payload with - or _")
    assert jwt_expiry(token) == 1_900_000_000
    assert jwt_expiry("opaque-token") is None
    assert jwt_expiry("a.%%%.c") is None


def test_expiring_within_leeway_counts_as_expiring():
    c = Credentials(access_token=make_jwt(time.time() + 30), environ={}, leeway=60)
    assert c.is_expiring()
    c = Credentials(access_token=make_jwt(time.time() + 600), environ={}, leeway=60)
    assert not c.is_expiring()
    assert Credentials(access_token="opaque", environ={}).is_expiring() is False


def test_refresh_gets_a_token_and_sends_json_grant(sandbox):
    c = sandbox_credentials(sandbox)
    token = c.refresh()
    assert c.access_token == token
    [request] = token_requests(sandbox)
    demo = sandbox.credentials()
    assert request.json == {
        "client_id": demo["client_id"],
        "client_secret": demo["client_secret"],
        "refresh_token": demo["refresh_token"],
        "grant_type": "refresh_token",
    }
    assert sandbox_accepts(sandbox, token)


def test_token_requests_name_cortex_nb_as_api_calls_do(sandbox):
    from cortex_nb import HTTPClient

    client = HTTPClient(url=sandbox.url, credentials=sandbox_credentials(sandbox))
    client.request(method="GET", path="/query/v2/jobs")
    agents = {r.path: r.headers.get("user-agent") for r in sandbox.requests}
    assert agents["/api/oauth2/RequestToken"] == agents["/query/v2/jobs"]
    assert agents["/query/v2/jobs"].startswith("cortex-nb/")


def test_refresh_token_rolls_when_the_endpoint_sends_a_new_one(httpserver):
    httpserver.expect_request("/api/oauth2/RequestToken").respond_with_json(
        {"access_token": make_jwt(time.time() + 3600), "refresh_token": "rt-new", "expires_in": "3599"}
    )
    c = creds_for(httpserver)
    c.refresh()
    assert c.refresh_token == "rt-new"


def test_bad_refresh_token_is_a_clear_error_without_secrets(sandbox):
    c = sandbox_credentials(sandbox, refresh_token="rt-WRONG-SECRET")
    with pytest.raises(CredentialsError) as info:
        c.refresh()
    message = str(info.value)
    assert "invalid_grant" in message and "HTTP 400" in message
    assert "rt-WRONG-SECRET" not in message and c.client_secret not in message


def test_2xx_reply_carrying_error_is_a_failure(httpserver):
    httpserver.expect_request("/api/oauth2/RequestToken").respond_with_json(
        {"error": "invalid_client", "error_description": f"bad secret {CLIENT_SECRET}"}
    )
    with pytest.raises(CredentialsError) as info:
        creds_for(httpserver).refresh()
    assert "invalid_client" in str(info.value)
    assert CLIENT_SECRET not in str(info.value)  # scrubbed even when the server echoes it


def test_refresh_without_refresh_credentials_says_what_is_missing():
    c = Credentials(environ={})
    with pytest.raises(CredentialsError, match="PAN_ACCESS_TOKEN"):
        c.refresh_if_expiring()
    expired = Credentials(access_token=make_jwt(time.time() - 10), environ={})
    with pytest.raises(CredentialsError, match="expired"):
        expired.refresh_if_expiring()


def test_refresh_if_expiring_keeps_a_fresh_token(sandbox):
    fresh = sandbox.issue_access_token()
    c = sandbox_credentials(sandbox, access_token=fresh)
    assert c.refresh_if_expiring() == fresh
    assert token_requests(sandbox) == []
    stale = sandbox_credentials(sandbox, access_token=sandbox.issue_access_token(ttl=5))
    renewed = stale.refresh_if_expiring()
    assert len(token_requests(sandbox)) == 1
    assert sandbox_accepts(sandbox, renewed)


def test_single_flight_refresh_across_threads(sandbox):
    sandbox.inject(path_prefix="/api/oauth2", latency_ms=200)  # widen the race window
    c = sandbox_credentials(sandbox)
    results: list[str] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(c.refresh_if_expiring())

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(token_requests(sandbox)) == 1
    assert len(results) == 16 and len(set(results)) == 1
    assert sandbox_accepts(sandbox, results[0])


def test_plain_http_token_endpoint_off_loopback_is_refused():
    c = Credentials(
        client_id="x", client_secret="y", refresh_token="z",
        token_url="http://idp.example.com/api/oauth2/RequestToken", environ={},
    )
    with pytest.raises(ConfigurationError, match="https"):
        c.refresh()


def test_repr_and_str_mask_every_secret():
    at = make_jwt(time.time() + 3600)
    c = Credentials(
        access_token=at, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        refresh_token=REFRESH_TOKEN, environ={},
    )
    for text in (repr(c), str(c), f"{c}", repr([c])):
        assert CLIENT_SECRET not in text and REFRESH_TOKEN not in text and at not in text
        assert "******" in text and CLIENT_ID in text


def test_jwt_payload_segment_is_standard_json():
    token = make_jwt(123, a=1)
    seg = token.split(".")[1]
    assert json.loads(base64.urlsafe_b64decode(seg + "==")) == {"exp": 123, "a": 1}


def test_region_is_not_a_credential():
    with pytest.warns(DeprecationWarning, match="credentials do not choose the API"):
        c = Credentials(access_token="opaque", region="europe", environ={})
    assert not hasattr(c, "region") and c.token_url == DEFAULT_TOKEN_URL


def test_a_connection_sets_the_token_url_only_when_none_was_chosen():
    unchosen = Credentials(access_token="opaque", environ={})
    unchosen.adopt_token_url("http://127.0.0.1:9/")
    assert unchosen.token_url == "http://127.0.0.1:9/api/oauth2/RequestToken"
    from_env = Credentials(environ={"PAN_TOKEN_URL": "https://idp.example/t"})
    from_env.adopt_token_url("http://127.0.0.1:9/")
    assert from_env.token_url == "https://idp.example/t"
