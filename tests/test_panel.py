"""The credentials panel: pure helpers without widgets, then the widget driven by button.click()
against the real sandbox over HTTP on 127.0.0.1 (no kernel, no mocks)."""

from __future__ import annotations

import html
import json
import re
import stat

import ipywidgets as widgets
import pytest

import cortex_nb
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http import profiles
from cortex_nb.http.endpoints import Endpoint
from cortex_nb.notebook.connection import Connection as Session
from cortex_nb.notebook.connection import get_connection as get_session
from cortex_nb.notebook.panel import (
    CredentialsPanel,
    PanelFields,
    credentials_from_fields,
    endpoint_from_fields,
    fields_from_profile,
    missing_fields_message,
    one_line,
    status_html,
)

BAD_SECRET = "not-the-secret-Zq81"


@pytest.fixture(autouse=True)
def config(tmp_path, monkeypatch):
    """Profiles in a temporary dir, no OS keyring, no PAN_* variables."""
    monkeypatch.setenv(profiles.CONFIG_ENV, str(tmp_path / "cfg"))
    monkeypatch.setenv(profiles.KEYRING_ENV, "0")
    for var in ("PAN_CLIENT_ID", "PAN_CLIENT_SECRET", "PAN_REFRESH_TOKEN", "PAN_ACCESS_TOKEN",
                "PAN_TOKEN_URL", "PAN_REGION"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cfg"


@pytest.fixture
def session(sandbox):
    """A fresh session that knows the shared test sandbox (so the panel starts none)."""
    s = Session()
    s.sandbox = sandbox
    yield s
    s.disconnect()
    s.sandbox = None  # the sandbox fixture owns it


@pytest.fixture
def panel(session):
    p = CredentialsPanel(session=session)
    yield p
    p.close()


def fill(panel, **values):
    """Type into the panel's fields, by their private names (as a browser would by label)."""
    for name, value in values.items():
        getattr(panel, f"_{name}").value = value


def fill_demo(panel, sandbox, region="sandbox"):
    demo = sandbox.credentials()
    fill(panel, region=region, client_id=demo["client_id"],
         client_secret=demo["client_secret"], refresh_token=demo["refresh_token"])
    return demo


def all_states(widget, seen=None):
    """get_state() of ``widget`` and of every widget it references, recursively."""
    seen = {} if seen is None else seen
    if widget.model_id in seen:
        return seen
    seen[widget.model_id] = widget.get_state()
    for key in widget.keys:
        value = getattr(widget, key, None)
        for item in value if isinstance(value, tuple | list) else [value]:
            if isinstance(item, widgets.Widget):
                all_states(item, seen)
    return seen


def message(panel):
    return html.unescape(panel._message.value)


# -- pure helpers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "text"),
    [
        (PanelFields(region="custom"), "Type the API URL"),
        (PanelFields(region="custom", url="api.example.com"), "'api.example.com' is not an http"),
        (PanelFields(region="uk", token_url="idp.example.com"), "token URL 'idp.example.com'"),
        (PanelFields(region="mars"), "Unknown region 'mars'"),
    ],
)
def test_endpoint_from_fields_errors(fields, text, session):
    with pytest.raises(ConfigurationError, match=re.escape(text)):
        endpoint_from_fields(fields, session)


def test_endpoint_from_fields(session, sandbox):
    custom = PanelFields(region="custom", url=" http://127.0.0.1:8123/ ", instance_id=" 7 ")
    assert endpoint_from_fields(custom, session) == Endpoint(
        "http://127.0.0.1:8123", "http://127.0.0.1:8123/api/oauth2/RequestToken", None, "7"
    )
    europe = endpoint_from_fields(PanelFields(region="europe", url="ignored"), session)
    assert europe == Endpoint.for_region("europe")
    sandboxed = endpoint_from_fields(PanelFields(region="sandbox", url="x", token_url="y"), session)
    assert sandboxed == Endpoint.for_sandbox(sandbox)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (PanelFields(), "Type the client id, client secret and refresh token, or an access token."),
        (PanelFields(client_id="c", client_secret="s"), "Type the refresh token too"),
        (PanelFields(client_id=" ", refresh_token="r"), "Type the client id and client secret too"),
        (PanelFields(client_id="c", client_secret="s", refresh_token="r"), None),
        (PanelFields(access_token="tok"), None),
    ],
)
def test_missing_fields_message(fields, expected):
    got = missing_fields_message(fields)
    assert got == expected if expected is None else got.startswith(expected)


def test_panel_fields_repr_hides_secrets():
    fields = PanelFields(client_id="c", client_secret="s3cr3t", refresh_token="r3fr3sh")
    assert "s3cr3t" not in repr(fields) and "r3fr3sh" not in repr(fields)
    assert fields.secrets() == ["s3cr3t", "r3fr3sh"]


def test_credentials_from_fields_ignore_the_environment(monkeypatch):
    monkeypatch.setenv("PAN_CLIENT_SECRET", "from-env")
    monkeypatch.setenv("PAN_ACCESS_TOKEN", "from-env")
    fields = PanelFields(client_id=" c ", refresh_token="r\n")
    endpoint = Endpoint.for_url("https://a.example", token_url="https://a.example/t")
    creds = credentials_from_fields(fields, endpoint)
    assert (creds.client_id, creds.refresh_token) == ("c", "r")
    assert creds.client_secret is None and creds.access_token is None
    assert creds.token_url == "https://a.example/t"


def test_fields_from_profile():
    custom = fields_from_profile({"url": "https://a.example", "client_id": "c",
                                  "client_secret": "s", "token_url": "https://a.example/t"})
    assert (custom.region, custom.url, custom.client_secret) == ("custom", "https://a.example", "s")
    sandboxed = fields_from_profile({"region": "sandbox", "token_url": "http://old:1/t"})
    assert sandboxed.region == "sandbox" and sandboxed.token_url == ""
    assert fields_from_profile({}).region == "americas"


def test_one_line_collapses_and_scrubs():
    error = ValueError("bad\n  secret s3cr3t\tand Bearer abc.def.ghi")
    assert one_line(error, ["s3cr3t"]) == "bad secret ****** and Bearer ******"
    assert one_line(KeyError()) == "KeyError"


def test_status_html(sandbox):
    s = Session()
    assert 'data-state="disconnected"' in status_html(s)
    demo = sandbox.credentials()
    from cortex_nb.http.credentials import Credentials

    s.connect(Credentials(**demo), url=sandbox.url, instance_id="sandbox0")
    exp = s.credentials.expires_at
    line = status_html(s, now=exp - 600)
    assert 'data-state="connected"' in line and 'role="status"' in line
    assert f"Connected to {sandbox.url} as {demo['client_id']}" in line
    assert "(10 min left)" in line
    assert "expired; reconnect" in status_html(s, now=exp + 1)
    s.disconnect()


# -- the widget, without a kernel ------------------------------------------------------------------
def test_panel_is_a_vbox_with_labelled_classed_children(panel):
    assert isinstance(panel, widgets.VBox)
    for name in ("region", "url", "token_url", "instance_id", "client_id", "client_secret",
                 "refresh_token", "access_token", "profile"):
        child = getattr(panel, f"_{name}")
        assert child.description, name
        assert f"cortex-{name.replace('_', '-')}" in child._dom_classes
    for name in ("connect", "disconnect", "save", "load"):
        button = getattr(panel, f"_{name}")
        assert button.tooltip and f"cortex-{name}" in button._dom_classes
    assert isinstance(panel._client_secret, widgets.Password)
    assert isinstance(panel._access_token, widgets.Password)


def test_region_choice_shows_the_fields_it_needs(panel):
    assert panel._url.layout.display == "none"
    panel._region.value = "custom"
    assert panel._url.layout.display == "" and panel._token_url.layout.display == ""
    panel._region.value = "sandbox"
    assert panel._url.layout.display == "none" and panel._token_url.layout.display == "none"


def test_connect_with_demo_credentials(panel, session, sandbox):
    demo = fill_demo(panel, sandbox)
    panel._connect.click()
    assert session.connected, message(panel)
    assert "Connected." in message(panel)
    status = panel._status.value
    assert f"Connected to {sandbox.url} as {demo['client_id']}" in status
    assert "token valid until" in status and "min left" in status
    assert session.instance_id == sandbox.instance_id
    assert panel._client_secret.value == panel._refresh_token.value == ""
    assert panel._client_id.value == demo["client_id"]  # not a secret: kept for the next try
    # the session the panel connected is the one queries run on
    result = session.require().query("SELECT action FROM `firewall.traffic` LIMIT 3")
    assert len(result.df) == 3


def test_no_secret_in_widget_state_or_repr_after_connect(panel, session, sandbox):
    demo = fill_demo(panel, sandbox)
    panel._connect.click()
    assert session.connected
    secrets = [demo["client_secret"], demo["refresh_token"], session.credentials.access_token]
    states = all_states(panel)
    assert len(states) > 15  # children, boxes, layouts and styles were all walked
    dumped = json.dumps(states, default=str) + repr(panel)
    for secret in secrets:
        assert secret and secret not in dumped


def test_custom_url_to_the_sandbox(panel, session, sandbox):
    fill_demo(panel, sandbox, region="custom")
    fill(panel, url=sandbox.url + "/", instance_id="sandbox0")
    panel._connect.click()
    assert session.connected, message(panel)
    assert session.client.url == sandbox.url
    assert session.credentials.token_url == sandbox.token_url
    assert session.instance_id == "sandbox0"


def test_access_token_alone(panel, session, sandbox):
    token = sandbox.issue_access_token()
    fill(panel, region="sandbox", access_token=token)
    panel._connect.click()
    assert session.connected, message(panel)
    assert "as access token" in panel._status.value
    assert panel._access_token.value == ""
    assert token not in json.dumps(all_states(panel), default=str)


def test_bad_secret_is_one_clear_line_and_nothing_connected_or_saved(panel, session, sandbox,
                                                                    config):
    demo = fill_demo(panel, sandbox)
    fill(panel, client_secret=BAD_SECRET)
    panel._connect.click()
    text = message(panel)
    assert not session.connected
    assert 'role="alert"' in text and "Token refresh failed" in text
    assert "Check the client id, client secret and refresh token" in text
    assert "\n" not in text and "Traceback" not in text
    assert BAD_SECRET not in text and demo["refresh_token"] not in text
    assert panel._client_secret.value == panel._refresh_token.value == ""
    assert 'data-state="disconnected"' in panel._status.value
    assert not any(b.disabled for b in (panel._connect, panel._save, panel._load))
    fill(panel, profile="oops")
    panel._save.click()
    assert "Connect first" in message(panel)
    assert not (config / "profiles.json").exists()


def test_missing_fields_are_said_before_anything_is_sent(panel, session, sandbox):
    fill(panel, region="sandbox", client_id="c")
    panel._connect.click()
    assert "Type the client secret and refresh token too" in message(panel)
    assert not session.connected
    assert sandbox.requests == []


def test_plain_http_to_a_remote_host_is_refused(panel, session):
    fill(panel, region="custom", url="http://cdl.example.com", client_id="c",
         client_secret="s-remote", refresh_token="r-remote")
    panel._connect.click()
    assert "Refusing to send credentials" in message(panel)
    assert "s-remote" not in message(panel)
    assert not session.connected


def test_save_and_load_profile(panel, session, sandbox, config):
    demo = fill_demo(panel, sandbox)
    panel._connect.click()
    fill(panel, profile="lab")
    panel._save.click()
    assert "Saved profile 'lab'" in message(panel), message(panel)
    assert "no usable OS keyring" in message(panel)
    path = config / "profiles.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = profiles.load_profile("lab")
    assert stored["region"] == "sandbox" and "url" not in stored and "token_url" not in stored
    assert stored["client_secret"] == demo["client_secret"]
    assert "lab" in panel._profile.options

    panel._disconnect.click()
    assert not session.connected and "Disconnected." in message(panel)
    fill(panel, region="americas", client_id="")
    panel._load.click()
    assert session.connected, message(panel)
    assert "Connected with profile 'lab'" in message(panel)
    assert (panel._region.value, panel._client_id.value) == ("sandbox", demo["client_id"])
    assert panel._client_secret.value == panel._refresh_token.value == ""
    assert demo["client_secret"] not in json.dumps(all_states(panel), default=str)


def test_load_unknown_profile_names_the_known_ones(panel, session):
    profiles.save_profile("prod", region="europe", client_id="c")
    fill(panel, profile="ghost")
    panel._load.click()
    assert "No profile 'ghost'" in message(panel) and "known profiles: prod" in message(panel)
    fill(panel, profile="../etc")
    panel._load.click()
    assert "Invalid profile name" in message(panel)
    assert not session.connected


def test_load_profile_with_bad_secret_says_which_profile(panel, session, sandbox):
    with pytest.warns(profiles.SecretsInFileWarning):
        profiles.save_profile("stale", region="sandbox", client_id="sandbox-client",
                              client_secret=BAD_SECRET, refresh_token="r-stale")
    fill(panel, profile="stale")
    panel._load.click()
    text = message(panel)
    assert "Profile 'stale': Token refresh failed" in text
    assert BAD_SECRET not in text and "r-stale" not in text
    assert not session.connected


def test_status_follows_the_session_when_others_drive_it(panel, session, sandbox):
    session.connect_sandbox()  # as `%cortex connect sandbox` would
    assert f"Connected to {sandbox.url}" in panel._status.value
    session.disconnect()  # as `%cortex disconnect` would
    assert 'data-state="disconnected"' in panel._status.value
    panel.close()
    assert panel._on_connection_change not in session.listeners


def test_sandbox_region_starts_a_sandbox_when_none_runs():
    session = Session()
    p = CredentialsPanel(session=session)
    try:
        fill(p, region="sandbox", client_id="sandbox-client", client_secret=BAD_SECRET,
             refresh_token="wrong")
        p._connect.click()
        assert session.sandbox is not None, message(p)
        assert not session.connected and "Token refresh failed" in message(p)
        demo = session.sandbox.credentials()
        fill(p, client_id=demo["client_id"], client_secret=demo["client_secret"],
             refresh_token=demo["refresh_token"])
        p._connect.click()
        assert session.connected and session.client.url == session.sandbox.url
    finally:
        p.close()
        session.disconnect()
        session.stop_sandbox()


def test_cortex_nb_panel_is_callable_and_uses_the_shared_session():
    import cortex_nb.notebook.panel as module

    made = module()
    try:
        assert isinstance(made, CredentialsPanel) and made._connection is get_session()
        assert callable(cortex_nb.notebook.panel)
    finally:
        made.close()


# -- the first hour ---------------------------------------------------------------------------------
def test_sandbox_region_needs_no_typing(panel, session, sandbox):
    panel._region.value = "sandbox"
    assert "No typing needed" in message(panel)
    panel._connect.click()
    assert session.connected, message(panel)
    assert session.endpoint.sandbox and session.client.url == sandbox.url
    assert "demo credentials" in message(panel)
    assert panel._client_id.value == sandbox.credentials()["client_id"]
    state = json.dumps(all_states(panel))
    for secret in session.secrets():
        assert secret not in state


def test_panel_shows_where_the_connection_went_whoever_connected_it(panel, session, sandbox):
    session.connect_sandbox()  # as `%cortex connect sandbox` does
    assert panel._region.value == "sandbox"
    assert 'data-state="connected"' in panel._status.value
    from cortex_nb.http.credentials import Credentials

    session.connect(Credentials(**sandbox.credentials()), endpoint=Endpoint.for_url(sandbox.url))
    assert (panel._region.value, panel._url.value) == ("custom", sandbox.url)


def test_changing_the_region_clears_a_stale_warning(panel):
    panel._region.value = "custom"
    panel._connect.click()
    assert "cortex-error" in panel._message.value
    panel._region.value = "europe"
    assert "cortex-error" not in panel._message.value


def test_status_and_messages_wrap_between_words_in_a_wide_line(panel):
    for line in (panel._status, panel._message):
        assert line.layout.max_width == "60em"
    panel._region.value = "custom"
    panel._connect.click()
    assert "white-space: normal" in panel._message.value
    assert "white-space: normal" in panel._status.value
