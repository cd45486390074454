"""Secrets a server echoes back stay masked: in traces (text, HTML, curl) and cassettes from the
very first token request of ``connect()``, in any header, in ``repr``, in the local variables a
traceback shows, and in the error for a token that no header can carry. Hostile servers are
pytest-httpserver instances on 127.0.0.1.
"""

from __future__ import annotations

import time
import traceback

import pytest
from werkzeug import Response

from cortex_nb import CredentialsError, HTTPClient
from cortex_nb.http.security import MASK
from cortex_nb.http.tracing import TraceLog
from cortex_nb.notebook.connection import Connection

from .support import (
    API_PATH,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    make_jwt,
    refresh_credentials,
)
from .test_secrets_leak import known_credentials, shows_part_of

TOKEN_PATH = "/api/oauth2/RequestToken"
QUOTED = f"refresh token {REFRESH_TOKEN} of client {CLIENT_ID} (secret {CLIENT_SECRET}) is revoked"


def idp_quoting_the_secrets(httpserver) -> None:
    """A token endpoint whose refusal quotes the refresh token and the client secret, as some
    identity providers do, at the top level and deeper."""
    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_json(
        {"error": "invalid_grant", "error_description": QUOTED,
         "details": {"request": {"refresh_token": REFRESH_TOKEN, "note": QUOTED}}},
        status=400,
    )


def shown(traces) -> str:
    """Everything a trace can show: text, HTML, curl."""
    return "\n".join(str(t) + t._repr_html_() + t.to_curl() for t in traces)


def assert_hidden(text: str, *secrets: str) -> None:
    for value in secrets:
        assert not shows_part_of(value, text), value[:8] + "..."


def test_an_idp_quoting_secrets_during_connect_is_masked_in_cassette_and_traces(
    httpserver, tmp_path
):
    idp_quoting_the_secrets(httpserver)
    cassette = tmp_path / "connect.cassette"
    connection = Connection()
    connection.record(cassette)  # recording and tracing before the credentials are known
    try:
        with pytest.raises(CredentialsError, match="invalid_grant") as refused:
            connection.connect(refresh_credentials(httpserver), url=httpserver.url_for("/"))
    finally:
        connection.disconnect()
    text = cassette.read_text()
    assert "invalid_grant" in text and "revoked" in text  # the refusal was recorded
    assert list(connection.traces) and "revoked" in shown(connection.traces)
    for where in (text, shown(connection.traces), str(refused.value)):
        assert_hidden(where, REFRESH_TOKEN, CLIENT_SECRET)


def test_a_header_echoing_the_token_is_masked_in_every_trace(httpserver):
    credentials = known_credentials()
    token = credentials.access_token
    httpserver.expect_request(API_PATH).respond_with_response(Response(
        "[]", content_type="application/json",
        headers={"X-Echo": f"you sent Bearer {token}", "x-request-id": f"req-{token}"}))
    client = HTTPClient(url=httpserver.url_for("/"), credentials=credentials, max_retries=0)
    told_nothing = TraceLog()  # knows no secret: the client's session announces them
    told_nothing.attach(client.session)
    connection = Connection()
    connection.connect(credentials, url=httpserver.url_for("/"), validate=False)
    for sender in (client, connection.client):
        sender.request(method="GET", path=API_PATH, headers={"X-Forwarded-Token": token})
    for traces in (told_nothing, connection.traces):
        (trace,) = traces
        assert trace.response_headers["X-Echo"] == f"you sent Bearer {MASK}"
        assert trace.request_headers["X-Forwarded-Token"] == MASK
        assert_hidden(shown(traces) + trace.summary(), token)
    connection.disconnect()


def test_client_repr_masks_proxy_passwords_and_secret_params():
    credentials = known_credentials()
    client = HTTPClient(
        url="https://api.example.com", credentials=credentials,
        proxies={"https": "http://analyst:pw-SECRET-1@proxy.example.com:3128",
                 "http": "analyst:pw-SECRET-2@proxy.example.com:3128"},
        params={"token": "tk-SECRET-3", "region": "us", "echo": credentials.access_token},
    )
    text = repr(client)
    assert_hidden(text, "pw-SECRET-1", "pw-SECRET-2", "tk-SECRET-3", credentials.access_token)
    assert f"http://{MASK}@proxy.example.com:3128" in text and "'region': 'us'" in text
    listed = repr(HTTPClient(params=[("access_token", "tk-SECRET-4"), ("page", "2")]))
    assert "tk-SECRET-4" not in listed and "('page', '2')" in listed


def test_token_reply_locals_hold_no_quoted_secret(httpserver):
    idp_quoting_the_secrets(httpserver)
    credentials = refresh_credentials(httpserver)
    with pytest.raises(CredentialsError) as refused:
        credentials.refresh()
    text = "".join(traceback.TracebackException.from_exception(
        refused.value, capture_locals=True).format())
    assert "_token_reply" in text and "reply = " in text and "detail = " in text  # shown
    assert_hidden(text, REFRESH_TOKEN, CLIENT_SECRET)


@pytest.mark.parametrize(("token", "problem"), [
    ("at-123\r\nX-Injected: 1", "a carriage return at position 7"),
    (make_jwt(time.time() + 3600) + "\n", "a line break at position"),
    ("tök€n-7781", "the character U+00F6 at position 2"),
])
def test_a_token_no_header_can_carry_is_a_clear_credentials_error(httpserver, token, problem):
    client = HTTPClient(url=httpserver.url_for("/"), max_retries=0,
                        credentials=known_credentials(access_token=token))
    with pytest.raises(CredentialsError, match="cannot be sent in an HTTP header") as caught:
        client.request(method="GET", path=API_PATH)
    assert problem in str(caught.value) and "\n" not in str(caught.value)
    assert_hidden(str(caught.value), token.strip())
    assert httpserver.log == []  # nothing was sent


def test_an_idp_token_no_header_can_carry_is_refused_when_it_arrives(httpserver):
    bad = "at-FROM-IDP-0042\r\nSet-Cookie: x=1"
    httpserver.expect_request(TOKEN_PATH, method="POST").respond_with_json(
        {"access_token": bad, "token_type": "Bearer"})
    credentials = refresh_credentials(httpserver)
    with pytest.raises(CredentialsError, match=r"answered an access token that cannot be sent") \
            as caught:
        credentials.refresh()
    assert "a carriage return at position 17" in str(caught.value)
    assert "at-FROM-IDP" not in str(caught.value) and "\n" not in str(caught.value)
    assert credentials.access_token is None  # not kept, never sent
