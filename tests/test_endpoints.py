"""Where to connect: the region table, the URL check, token URLs and the Endpoint value."""

from __future__ import annotations

import re

import pytest

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.endpoints import (
    DEFAULT_TOKEN_URL,
    DEFAULT_URL,
    REGION_NAMES,
    REGIONS,
    Endpoint,
    check_url,
    implied_token_url,
    normalize_token_url,
    token_url_on_host,
)
from cortex_nb.notebook.connection import Connection


def test_one_region_table_with_the_documented_hosts():
    assert {name: r.api_url for name, r in REGIONS.items()} == {
        "americas": "https://api.us.cdl.paloaltonetworks.com",
        "europe": "https://api.nl.cdl.paloaltonetworks.com",
        "uk": "https://api.uk.cdl.paloaltonetworks.com",
    }
    assert all(r.token_url == DEFAULT_TOKEN_URL for r in REGIONS.values())
    assert REGIONS["americas"].api_url == DEFAULT_URL
    assert REGION_NAMES == ("americas", "europe", "uk", "sandbox")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("api.example.com", "is not an http(s) URL"),
        ("ftp://api.example.com", "is not an http(s) URL"),
        ("https://", "is not an http(s) URL"),
        ("https://api.example.com:99999", "has an invalid port"),
        ("https://api.exa mple.com", "contains white space"),
        (None, "is not an http(s) URL"),
    ],
)
def test_check_url_refuses_what_cannot_be_reached(url, problem):
    with pytest.raises(ConfigurationError, match=re.escape(problem)):
        check_url(url, "API URL")


def test_check_url_trims_space_and_trailing_slash():
    assert check_url("  https://api.example.com/base/ ") == "https://api.example.com/base"


def test_token_urls():
    assert normalize_token_url("https://idp.example.com/") == (
        "https://idp.example.com/api/oauth2/RequestToken"
    )
    assert normalize_token_url("https://idp.example.com/tok/") == "https://idp.example.com/tok"
    assert token_url_on_host("https://cdl.example.com/base/path") == (
        "https://cdl.example.com/api/oauth2/RequestToken"
    )
    # the vendor's hosts share the central token endpoint; other hosts serve their own
    assert implied_token_url("https://api.sg.cdl.paloaltonetworks.com") == DEFAULT_TOKEN_URL
    assert implied_token_url("http://127.0.0.1:8123") == (
        "http://127.0.0.1:8123/api/oauth2/RequestToken"
    )


def test_endpoint_for_named_regions():
    europe = Endpoint.for_region("Europe", instance_id="42")
    assert europe == Endpoint(REGIONS["europe"].api_url, DEFAULT_TOKEN_URL, "europe", "42")
    custom_idp = Endpoint.for_region("uk", token_url="https://idp.example.com/tok/")
    assert custom_idp.token_url == "https://idp.example.com/tok"
    with pytest.raises(ConfigurationError, match="Unknown region 'mars'"):
        Endpoint.for_region("mars")


def test_endpoint_for_url():
    local = Endpoint.for_url(" http://127.0.0.1:8123/ ")
    assert local == Endpoint(
        "http://127.0.0.1:8123", "http://127.0.0.1:8123/api/oauth2/RequestToken", None
    )
    # a region's own URL is that region
    assert Endpoint.for_url(REGIONS["uk"].api_url + "/").region == "uk"
    given = Endpoint.for_url("https://a.example", token_url="https://idp.example/t")
    assert given.token_url == "https://idp.example/t"


def test_resolve_region_or_url_or_environment():
    assert Endpoint.resolve(environ={}).region == "americas"
    assert Endpoint.resolve(environ={"PAN_REGION": "europe"}).region == "europe"
    assert Endpoint.resolve("uk", environ={"PAN_REGION": "europe"}).region == "uk"
    assert Endpoint.resolve(url="https://a.example").api_url == "https://a.example"
    with pytest.raises(ConfigurationError, match="not both"):
        Endpoint.resolve("uk", "https://a.example")
    with pytest.raises(ConfigurationError, match="needs a running sandbox"):
        Endpoint.resolve("sandbox")


def test_profile_fields(sandbox):
    assert Endpoint.for_sandbox(sandbox).profile_fields() == {
        "region": "sandbox", "url": None, "token_url": None, "instance_id": None,
    }
    assert Endpoint.for_region("europe", instance_id="42").profile_fields() == {
        "region": "europe", "url": None, "token_url": None, "instance_id": "42",
    }
    assert Endpoint.for_url("https://cdl.example.com").profile_fields() == {
        "region": None, "url": "https://cdl.example.com", "token_url": None, "instance_id": None,
    }
    other_idp = Endpoint.for_url("https://cdl.example.com", token_url="https://idp.example/t")
    assert other_idp.profile_fields()["token_url"] == "https://idp.example/t"


def test_endpoint_is_frozen():
    with pytest.raises(AttributeError):
        Endpoint().api_url = "https://elsewhere.example"  # type: ignore[misc]


def test_connection_endpoint_for_the_sandbox_region_uses_the_running_one(sandbox):
    connection = Connection()
    connection.sandbox = sandbox
    try:
        endpoint = connection.endpoint_for("sandbox", "ignored", "ignored")
        assert endpoint == Endpoint(
            sandbox.url, sandbox.token_url, "sandbox", sandbox.instance_id, sandbox=True
        )
    finally:
        connection.sandbox = None  # the fixture owns it
