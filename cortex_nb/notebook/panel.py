"""The credentials panel: connect the shared connection by filling fields, not by pasting secrets.

``CredentialsPanel`` *is* an ipywidgets ``VBox`` (plain widgets, no front-end code of its own,
so it works in JupyterLab, Notebook 7 and VS Code). Its children are private; handlers are
named ``_on_<child>_<event>`` and stay short; the decisions (what the fields mean, what is
missing, what a profile holds) are pure functions below, tested without widgets.

Secrets typed into the panel are cleared from the widgets as soon as a button has read them,
whether the connection worked or not, so they never reach the notebook's saved widget state or
an output. Profiles keep their secrets out of the widgets altogether. Errors show as one line in
the panel, scrubbed of secrets, never as a traceback.

``cortex_nb.notebook.panel()`` (this module is callable) and ``%cortex panel`` return a new panel.
"""

from __future__ import annotations

import html
import re
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http import profiles
from cortex_nb.http.credentials import Credentials
from cortex_nb.http.endpoints import REGIONS, SANDBOX, Endpoint
from cortex_nb.http.security import scrub
from cortex_nb.notebook.connection import Connection, get_connection

__all__ = [
    "REGION_OPTIONS",
    "CredentialsPanel",
    "PanelFields",
    "credentials_from_fields",
    "fields_from_profile",
    "missing_fields_message",
    "one_line",
    "panel",
    "status_html",
]

CUSTOM = "custom"
REGION_OPTIONS = (
    *((region.label, region.name) for region in REGIONS.values()),
    ("Sandbox (offline, on this machine)", SANDBOX),
    ("Custom URL", CUSTOM),
)
_LABEL_WIDTH = "9.5em"
_FIELD_LAYOUT = {"width": "100%", "max_width": "36em"}
# status and messages are sentences: wide enough not to break mid-sentence, wrapping at words
_LINE_LAYOUT = {"width": "100%", "max_width": "60em"}
_SANDBOX_HINT = (
    "No typing needed: Connect starts the offline sandbox on this machine and uses its demo "
    "credentials."
)
# buttons start where the fields do: after the label column and the label's margin
_BUTTON_ROW = {"margin": f"2px 0 2px calc({_LABEL_WIDTH} + 8px)"}


# -- pure logic ------------------------------------------------------------------------------------
@dataclass
class PanelFields:
    """What the panel's fields hold at one moment; secrets are left out of the repr."""

    region: str = "americas"
    url: str = ""
    token_url: str = ""
    instance_id: str = ""
    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)

    def secrets(self) -> list[str]:
        """The secret values held, for scrubbing messages."""
        return [s for s in (self.client_secret, self.refresh_token, self.access_token) if s]


def missing_fields_message(fields: PanelFields) -> str | None:
    """The one-line reason these fields cannot connect, or None when they can try."""
    if fields.access_token.strip():
        return None
    needed = {
        "client id": fields.client_id,
        "client secret": fields.client_secret,
        "refresh token": fields.refresh_token,
    }
    missing = [name for name, value in needed.items() if not value.strip()]
    if len(missing) == len(needed):
        return "Type the client id, client secret and refresh token, or an access token."
    if missing:
        return f"Type the {' and '.join(missing)} too (or use an access token)."
    return None


def credentials_from_fields(fields: PanelFields, endpoint: Endpoint) -> Credentials:
    """Credentials from the typed fields only (the ``PAN_*`` environment is not consulted)."""
    return Credentials(
        access_token=fields.access_token.strip() or None,
        client_id=fields.client_id.strip() or None,
        client_secret=fields.client_secret.strip() or None,
        refresh_token=fields.refresh_token.strip() or None,
        token_url=endpoint.token_url,
        environ={},
    )


def endpoint_from_fields(fields: PanelFields, connection: Connection) -> Endpoint:
    """The endpoint the region choice and URL fields mean (the sandbox region starts it)."""
    custom = fields.region == CUSTOM
    if custom and not fields.url.strip():
        raise ConfigurationError("Type the API URL (Custom URL needs one).")
    return connection.endpoint_for(
        None if custom else fields.region,
        fields.url if custom else None,
        fields.token_url.strip() or None,
        fields.instance_id.strip() or None,
    )


def fields_from_profile(stored: dict[str, str]) -> PanelFields:
    """Panel fields (secrets included, for connecting only) from a stored profile."""
    region = stored.get("region") or (CUSTOM if stored.get("url") else "americas")
    return PanelFields(
        region=region.lower(),
        url=stored.get("url", ""),
        token_url="" if region == SANDBOX else stored.get("token_url", ""),
        instance_id=stored.get("instance_id", ""),
        client_id=stored.get("client_id", ""),
        client_secret=stored.get("client_secret", ""),
        refresh_token=stored.get("refresh_token", ""),
        access_token=stored.get("access_token", ""),
    )


def _nothing_typed(fields: PanelFields) -> bool:
    """True when no secret was typed and the client id is empty or the sandbox's demo one."""
    from cortex_nb.sandbox.service.tokens import DEMO_CLIENT_ID

    return not fields.secrets() and fields.client_id.strip() in ("", DEMO_CLIENT_ID)


def one_line(error: BaseException, secrets: Iterable[str] = ()) -> str:
    """An error as one line for the panel, with every known secret masked."""
    text = re.sub(r"\s+", " ", str(error)).strip() or type(error).__name__
    return scrub(text, secrets)


def status_html(connection: Connection, now: float | None = None) -> str:
    """The live status line: a state mark, where the connection goes and until when."""
    if not connection.connected:
        return _status("disconnected", "○ Not connected.")
    text = "● " + connection.describe()
    credentials = connection.credentials
    expires = credentials.expires_at if credentials is not None else None
    if expires is not None:
        minutes = int((expires - (time.time() if now is None else now)) // 60)
        text += f" ({minutes} min left)" if minutes >= 0 else " (expired; reconnect)"
    return _status("connected", text)


# break lines between words only (long URLs may still break anywhere rather than overflow)
_SENTENCE_STYLE = "white-space: normal; overflow-wrap: anywhere; line-height: 1.4"


def _status(state: str, text: str) -> str:
    return (
        f'<div class="cortex-state" data-state="{state}" role="status" aria-live="polite" '
        f'style="{_SENTENCE_STYLE}">{html.escape(text)}</div>'
    )


# -- the widget ------------------------------------------------------------------------------------
class CredentialsPanel(widgets.VBox):
    """Connect, save, load and disconnect the shared connection from a notebook.

    ``connection`` defaults to the shared one; ``session=`` is its old name.
    """

    def __init__(
        self, connection: Connection | None = None, *, session: Connection | None = None,
        **kwargs: Any,
    ) -> None:
        connection = connection if connection is not None else session
        self._connection = connection if connection is not None else get_connection()
        self._make_fields()
        self._make_buttons()
        super().__init__(children=self._rows(), **kwargs)
        self.add_class("cortex-panel")
        self._region.observe(self._on_region_change, names="value")
        self._on_region_change()
        self._connection.listeners.append(self._on_connection_change)
        self._on_connection_change(self._connection)

    # -- building ----------------------------------------------------------------------------------
    def _make_fields(self) -> None:
        self._region = widgets.Dropdown(
            options=REGION_OPTIONS, value="americas", description="Region",
            tooltip="Cortex Data Lake region, the offline sandbox, or a custom API URL",
        )
        self._url = _text("API URL", "https://api.example.com", "cortex-url")
        self._token_url = _text("Token URL", "default: region's or API host's", "cortex-token-url")
        self._instance_id = _text("Instance ID", "optional", "cortex-instance-id")
        self._client_id = _text("Client ID", "OAuth2 client id", "cortex-client-id")
        self._client_secret = _secret("Client secret", "cortex-client-secret")
        self._refresh_token = _secret("Refresh token", "cortex-refresh-token")
        self._access_token = _secret("Access token", "cortex-access-token", "or this alone")
        self._profile = widgets.Combobox(
            description="Profile", placeholder="profile name", options=_known_profiles(),
            ensure_option=False, tooltip="Name of a saved profile to load, or a new one to save",
        )
        for child, css in ((self._region, "cortex-region"), (self._profile, "cortex-profile")):
            _style(child, css)
        self._status = _html("cortex-status")
        self._message = _html("cortex-message")

    def _make_buttons(self) -> None:
        self._connect = _button("Connect", "plug", "Check the credentials and connect")
        self._disconnect = _button("Disconnect", "times", "Forget the credentials")
        self._save = _button("Save profile", "save", "Save this connection as a profile")
        self._load = _button("Load profile", "folder-open", "Connect with a saved profile")
        self._connect.button_style = "primary"
        self._connect.on_click(self._on_connect_click)
        self._disconnect.on_click(self._on_disconnect_click)
        self._save.on_click(self._on_save_click)
        self._load.on_click(self._on_load_click)

    def _rows(self) -> tuple[widgets.Widget, ...]:
        title = widgets.HTML("<b>Cortex Data Lake connection</b>")
        return (
            title, self._region, self._url, self._token_url, self._instance_id,
            self._client_id, self._client_secret, self._refresh_token, self._access_token,
            widgets.HBox([self._connect, self._disconnect], layout=widgets.Layout(**_BUTTON_ROW)),
            widgets.HBox([self._profile, self._save, self._load]),
            self._status, self._message,
        )

    # -- handlers ----------------------------------------------------------------------------------
    def _on_region_change(self, change: dict[str, Any] | None = None) -> None:
        region = self._region.value
        self._url.layout.display = "" if region == CUSTOM else "none"
        for child in (self._token_url, self._instance_id):
            child.layout.display = "none" if region == SANDBOX else ""
        # what was said about the former choice no longer holds
        self._message.value = _message("hint", _SANDBOX_HINT) if region == SANDBOX else ""

    def _on_connect_click(self, _button: widgets.Button) -> None:
        fields = self._take_fields()
        self._act("Connecting…", lambda: self._connect_with(fields), fields.secrets())

    def _on_disconnect_click(self, _button: widgets.Button) -> None:
        self._act("Disconnecting…", self._forget_connection)

    def _on_save_click(self, _button: widgets.Button) -> None:
        self._act("Saving profile…", self._save_profile)

    def _on_load_click(self, _button: widgets.Button) -> None:
        self._act("Loading profile…", self._load_profile)

    def _on_connection_change(self, connection: Connection) -> None:
        self._status.value = status_html(connection)
        if connection.connected and connection.endpoint is not None:
            self._show_endpoint(connection.endpoint)

    # -- actions (each returns the message to show) ------------------------------------------------
    def _connect_with(self, fields: PanelFields) -> str:
        problem = missing_fields_message(fields)
        if problem and fields.region == SANDBOX and _nothing_typed(fields):
            self._connection.connect_sandbox()  # nothing typed: the sandbox's demo credentials
            self._client_id.value = self._connection.credentials.client_id or ""
            return "Connected to the offline sandbox with its demo credentials."
        if problem:
            raise ConfigurationError(problem)
        endpoint = endpoint_from_fields(fields, self._connection)
        credentials = credentials_from_fields(fields, endpoint)
        self._connection.connect(credentials, endpoint=endpoint)
        return "Connected. The secrets were cleared from the fields."

    def _forget_connection(self) -> str:
        self._connection.disconnect()
        return "Disconnected."

    def _save_profile(self) -> str:
        name = profiles.check_name(self._profile.value.strip())
        connection = self._connection
        if not connection.connected or connection.credentials is None or not connection.endpoint:
            raise ConfigurationError("Connect first: a profile is saved from a working connection.")
        extra = connection.endpoint.profile_fields()
        with warnings.catch_warnings():  # said in the panel's message instead
            warnings.simplefilter("ignore", profiles.SecretsInFileWarning)
            path = connection.credentials.save_profile(name, **extra)
        self._profile.options = tuple(_known_profiles())
        where = profiles.show_profile(name)["secret_store"]
        note = {"keyring": "secrets in the OS keyring",
                "file": "secrets in that file (mode 0600): no usable OS keyring"}.get(where, "")
        return f"Saved profile {name!r} to {path}" + (f"; {note}." if note else ".")

    def _load_profile(self) -> str:
        name = profiles.check_name(self._profile.value.strip())
        fields = fields_from_profile(profiles.load_profile(name))
        self._show_fields(fields)
        try:
            self._connect_with(fields)
        except Exception as exc:
            reason = one_line(exc, fields.secrets())
            raise ConfigurationError(f"Profile {name!r}: {reason}") from None
        return f"Connected with profile {name!r}."

    # -- helpers -----------------------------------------------------------------------------------
    def _act(self, busy: str, action: Callable[[], str], secrets: Iterable[str] = ()) -> None:
        """Run ``action`` with the buttons disabled; show its message or its error as one line."""
        self._set_busy(True, busy)
        try:
            self._message.value = _message("ok", action())
        except Exception as exc:  # the panel is the notebook's boundary: one line, no traceback
            held = self._connection.secrets()
            known = [*secrets, *held]
            self._message.value = _message("error", one_line(exc, known))
        finally:
            self._set_busy(False)
            self._on_connection_change(self._connection)

    def _set_busy(self, busy: bool, text: str = "") -> None:
        for button in (self._connect, self._disconnect, self._save, self._load):
            button.disabled = busy
        if busy:
            self._status.value = _status("busy", "◌ " + text)

    def _take_fields(self) -> PanelFields:
        """Read every field, then clear the secret ones at once."""
        fields = PanelFields(
            region=self._region.value, url=self._url.value, token_url=self._token_url.value,
            instance_id=self._instance_id.value, client_id=self._client_id.value,
            client_secret=self._client_secret.value, refresh_token=self._refresh_token.value,
            access_token=self._access_token.value,
        )
        for secret in (self._client_secret, self._refresh_token, self._access_token):
            secret.value = ""
        return fields

    def _show_endpoint(self, endpoint: Endpoint) -> None:
        """Show where the connection went, whoever connected it (the magic, a profile, code)."""
        region = SANDBOX if endpoint.sandbox else (endpoint.region or CUSTOM)
        if self._region.value != region:
            self._region.value = region
        if region == CUSTOM:
            self._url.value = endpoint.api_url
        self._instance_id.value = "" if endpoint.sandbox else (endpoint.instance_id or "")

    def _show_fields(self, fields: PanelFields) -> None:
        """Show a profile's public fields; its secrets never enter a widget."""
        known = fields.region in (value for _, value in REGION_OPTIONS)
        self._region.value = fields.region if known else CUSTOM
        self._url.value, self._token_url.value = fields.url, fields.token_url
        self._instance_id.value, self._client_id.value = fields.instance_id, fields.client_id

    def close(self) -> None:
        """Stop following the connection, then close the widgets."""
        if self._on_connection_change in self._connection.listeners:
            self._connection.listeners.remove(self._on_connection_change)
        for child in self.children:
            child.close()
        super().close()

    def __repr__(self) -> str:
        state = "connected" if self._connection.connected else "not connected"
        region, client = self._region.value, self._client_id.value
        return f"CredentialsPanel(region={region!r}, client_id={client!r}, {state})"


def _style(child: widgets.Widget, css_class: str) -> widgets.Widget:
    child.style.description_width = _LABEL_WIDTH
    child.layout = widgets.Layout(**_FIELD_LAYOUT)
    return child.add_class(css_class)


def _text(label: str, placeholder: str, css_class: str) -> widgets.Text:
    """A labelled text field; the label is the input's accessible name."""
    text = widgets.Text(description=label, placeholder=placeholder, tooltip=label)
    return _style(text, css_class)


def _secret(label: str, css_class: str, placeholder: str = "") -> widgets.Password:
    """A labelled password field whose value the panel clears right after reading it."""
    tip = f"{label}: cleared from the panel as soon as it is used"
    hint = placeholder or "cleared after use"
    return _style(widgets.Password(description=label, placeholder=hint, tooltip=tip), css_class)


def _button(label: str, icon: str, tooltip: str) -> widgets.Button:
    css_class = "cortex-" + label.split()[0].lower()  # cortex-connect, cortex-save, ...
    return widgets.Button(description=label, icon=icon, tooltip=tooltip).add_class(css_class)


def _html(css_class: str) -> widgets.HTML:
    return widgets.HTML(layout=widgets.Layout(**_LINE_LAYOUT)).add_class(css_class)


def _message(kind: str, text: str) -> str:
    role = "alert" if kind == "error" else "status"
    mark = "⚠ " if kind == "error" else ""
    return (
        f'<div class="cortex-{kind}" role="{role}" style="{_SENTENCE_STYLE}">'
        f"{mark}{html.escape(text)}</div>"
    )


def _known_profiles() -> list[str]:
    try:
        return profiles.list_profiles()
    except Exception:  # a broken profiles file must not stop the panel; Load says what is wrong
        return []


def panel(connection: Connection | None = None) -> CredentialsPanel:
    """A new credentials panel bound to ``connection`` (default: the shared one)."""
    return CredentialsPanel(connection)


class _CallableModule(types.ModuleType):
    """Makes ``cortex_nb.panel()`` work whether that name is this module or its ``panel``."""

    def __call__(self, connection: Connection | None = None) -> CredentialsPanel:
        return panel(connection)


sys.modules[__name__].__class__ = _CallableModule
