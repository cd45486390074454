"""Sandbox OAuth2: token grants, revocation, JWT shape, 401s, response headers."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from pan_cortex_data_lake import Credentials as SDKCredentials

from cortex_nb.sandbox.service.tokens import TokenAuthority


def grant_body(sandbox, **overrides: str) -> dict:
    creds = sandbox.credentials()
    body = {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": creds["refresh_token"],
        "grant_type": "refresh_token",
    }
    return {**body, **overrides}


def jwt_payload(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))


def test_refresh_grant_as_json(sandbox):
    r = requests.post(sandbox.token_url, json=grant_body(sandbox))
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == "3599"
    assert "refresh_token" not in body  # refresh grants do not roll the refresh token
    assert jwt_payload(body["access_token"])["exp"] > time.time() + 3500


def test_refresh_grant_as_form(sandbox):
    r = requests.post(sandbox.token_url, data=grant_body(sandbox))
    assert r.status_code == 200
    assert r.json()["access_token"].count(".") == 2


def test_authorization_code_grant_hands_out_a_new_refresh_token(sandbox):
    code = sandbox.issue_authorization_code()
    body = grant_body(sandbox, grant_type="authorization_code", code=code, redirect_uri="http://x")
    first = requests.post(sandbox.token_url, json=body)
    assert first.status_code == 200
    new_refresh = first.json()["refresh_token"]
    again = requests.post(sandbox.token_url, json=body)  # codes are single-use
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    refreshed = requests.post(
        sandbox.token_url, json=grant_body(sandbox, refresh_token=new_refresh)
    )
    assert refreshed.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"refresh_token": "nope"}, "invalid_grant"),
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"grant_type": "password"}, "unsupported_grant_type"),
    ],
)
def test_refused_grants_answer_idp_style_400(sandbox, overrides, error):
    r = requests.post(sandbox.token_url, json=grant_body(sandbox, **overrides))
    assert r.status_code == 400
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["error"] == error
    assert r.json()["error_description"]


def test_bad_refresh_token_has_the_documented_description(sandbox):
    r = requests.post(sandbox.token_url, json=grant_body(sandbox, refresh_token="nope"))
    assert r.json() == {
        "error": "invalid_grant",
        "error_description": "unknown, invalid, or expired refresh token",
    }


def test_empty_token_request_is_invalid_request(sandbox):
    r = requests.post(sandbox.token_url)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


def test_jwt_payloads_are_standard_base64_safe_and_carry_integer_exp():
    authority = TokenAuthority("tenant-with-a-long-name-0123456789")
    for ttl in range(0, 4000, 7):
        payload = authority.issue(ttl).split(".")[1]
        assert "-" not in payload and "_" not in payload
        assert isinstance(jwt_payload(authority.issue(ttl))["exp"], int)


def test_official_sdk_decodes_the_access_token(sandbox):
    token = requests.post(sandbox.token_url, json=grant_body(sandbox)).json()["access_token"]
    sdk = SDKCredentials(access_token=token, storage_params={"memory_storage": True})
    assert sdk.decode_jwt_payload()["exp"] == jwt_payload(token)["exp"]
    assert not sdk.jwt_is_expired()


def api_get(sandbox, token: str | None) -> requests.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return requests.get(f"{sandbox.url}/query/v2/jobs", headers=headers)


def test_valid_token_is_accepted(sandbox):
    assert api_get(sandbox, sandbox.issue_access_token()).status_code == 200


@pytest.mark.parametrize("token", [None, "garbage", "a.b.c", "None"])
def test_missing_or_invalid_bearer_token_is_401(sandbox, token):
    r = api_get(sandbox, token)
    assert r.status_code == 401
    assert r.json()["errors"][0]["errorCode"] == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_token_past_its_exp_is_401(sandbox):
    r = api_get(sandbox, sandbox.issue_access_token(ttl=-1))
    assert r.status_code == 401 and "expired" in r.json()["errors"][0]["message"]


def test_expire_tokens_expires_every_token_issued_so_far(sandbox):
    old = sandbox.issue_access_token()
    sandbox.expire_tokens()
    assert api_get(sandbox, old).status_code == 401
    assert api_get(sandbox, sandbox.issue_access_token()).status_code == 200


def test_revoked_access_token_is_401(sandbox):
    token = sandbox.issue_access_token()
    creds = sandbox.credentials()
    body = {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "token": token,
        "token_type_hint": "access_token",
    }
    r = requests.post(f"{sandbox.url}/api/oauth2/RevokeToken", json=body)
    assert r.status_code == 200
    assert api_get(sandbox, token).status_code == 401


def test_a_revoked_refresh_token_is_refused(sandbox):
    code = sandbox.issue_authorization_code()
    granted = requests.post(
        sandbox.token_url, json=grant_body(sandbox, grant_type="authorization_code", code=code)
    )
    refresh_token = granted.json()["refresh_token"]
    creds = sandbox.credentials()
    body = {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "token": refresh_token,
        "token_type_hint": "refresh_token",
    }
    assert requests.post(f"{sandbox.url}/api/oauth2/RevokeToken", data=body).status_code == 200
    refused = requests.post(sandbox.token_url, json=grant_body(sandbox, refresh_token=refresh_token))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/oauth2/RequestToken"),
        ("GET", "/query/v2/jobs"),
        ("GET", "/query/v2/jobs/unknown"),
        ("GET", "/nowhere"),
        ("PUT", "/query/v2/jobs"),
    ],
)
def test_every_reply_is_exactly_json_with_a_request_id(sandbox, method, path):
    headers = {"Authorization": f"Bearer {sandbox.issue_access_token()}"}
    r = requests.request(method, sandbox.url + path, headers=headers)
    assert r.headers["Content-Type"] == "application/json"
    assert len(r.headers["x-request-id"]) >= 16
    assert isinstance(r.json(), dict | list)
