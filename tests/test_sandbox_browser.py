"""Sandbox browser safety: no web page can use or revoke the demo credentials (DNS rebinding,
cross-site posts)."""

from __future__ import annotations

import pytest
import requests


def revoke_form(sandbox) -> dict:
    creds = sandbox.credentials()
    return {
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "token": creds["refresh_token"],
        "token_type_hint": "refresh_token",
    }


def demo_refresh_works(sandbox) -> bool:
    grant = {**sandbox.credentials(), "grant_type": "refresh_token"}
    return requests.post(sandbox.token_url, json=grant, timeout=10).status_code == 200


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://127.0.0.1:1"])
def test_a_cross_site_form_post_cannot_revoke_the_demo_token(sandbox, origin):
    r = requests.post(
        f"{sandbox.url}/api/oauth2/RevokeToken",
        data=revoke_form(sandbox),
        headers={"Origin": origin},
        timeout=10,
    )
    assert r.status_code == 403 and r.json()["error"] == "access_denied"
    assert demo_refresh_works(sandbox)


def test_a_cross_site_page_cannot_get_a_token(sandbox):
    grant = {**sandbox.credentials(), "grant_type": "refresh_token"}
    headers = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    r = requests.post(sandbox.token_url, json=grant, headers=headers, timeout=10)
    assert r.status_code == 403 and "access_token" not in r.json()


def test_a_request_marked_cross_site_by_the_browser_is_refused(sandbox, sandbox_http):
    r = sandbox_http.get(f"{sandbox.url}/query/v2/jobs", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["errors"][0]["errorCode"] == 403


@pytest.mark.parametrize("path", ["/api/oauth2/RequestToken", "/query/v2/jobs"])
def test_a_rebound_host_name_is_refused(sandbox, sandbox_http, path):
    grant = {**sandbox.credentials(), "grant_type": "refresh_token"}
    headers = {"Host": f"rebind.evil.example:{sandbox.port}"}
    r = sandbox_http.request(
        "POST" if "oauth2" in path else "GET", sandbox.url + path, json=grant, headers=headers
    )
    assert r.status_code == 403 and "Host" in r.text
    assert not any(r.status == 200 for r in sandbox.requests)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_the_sandbox_own_addresses_and_its_own_origin_are_served(sandbox, sandbox_http, host):
    headers = {"Host": f"{host}:{sandbox.port}", "Origin": f"http://{host}:{sandbox.port}"}
    assert sandbox_http.get(f"{sandbox.url}/query/v2/jobs", headers=headers).status_code == 200
    form = {**revoke_form(sandbox), "token": "some-other-token"}  # leaves the demo token alone
    r = requests.post(f"{sandbox.url}/api/oauth2/RevokeToken", data=form, headers=headers)
    assert r.status_code == 200 and r.json() == {"revoked": True}
