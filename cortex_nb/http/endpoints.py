"""Where to connect: the one region table, the one URL check and the ``Endpoint`` value.

An ``Endpoint`` says where a connection goes: the Query API's base URL, the OAuth2 token
endpoint, the region name (when it is a known region), the tenant's instance id, and whether it
is the local sandbox. Profiles, the credentials panel, the command line and the connection all
build it here, so a region, a URL or a token URL is checked and derived in one place only.
Credentials hold secrets and a token URL; they never pick the API.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.security import mask_url
from cortex_nb.wire import TOKEN_PATH

__all__ = [
    "DEFAULT_REGION",
    "DEFAULT_TOKEN_URL",
    "DEFAULT_URL",
    "REGIONS",
    "REGION_NAMES",
    "SANDBOX",
    "TOKEN_PATH",
    "Endpoint",
    "Region",
    "check_url",
    "implied_token_url",
    "normalize_token_url",
    "region_for_url",
    "token_url_on_host",
]

DEFAULT_TOKEN_URL = "https://api.paloaltonetworks.com" + TOKEN_PATH
SANDBOX = "sandbox"
REGION_ENV = "PAN_REGION"


@dataclass(frozen=True)
class Region:
    """A Cortex Data Lake region: its name, its label for people, its API and token URLs."""

    name: str
    label: str
    api_url: str
    token_url: str = DEFAULT_TOKEN_URL


REGIONS: Mapping[str, Region] = MappingProxyType({
    "americas": Region("americas", "Americas", "https://api.us.cdl.paloaltonetworks.com"),
    "europe": Region("europe", "Europe", "https://api.nl.cdl.paloaltonetworks.com"),
    "uk": Region("uk", "UK", "https://api.uk.cdl.paloaltonetworks.com"),
})
DEFAULT_REGION = "americas"
DEFAULT_URL = REGIONS[DEFAULT_REGION].api_url
# what a profile may name as its region: the real ones, and the sandbox (its port changes)
REGION_NAMES = (*REGIONS, SANDBOX)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_VENDOR_DOMAIN = "paloaltonetworks.com"


def check_url(url: Any, what: str = "URL", example: str = DEFAULT_URL) -> str:
    """Return ``url`` without a trailing slash if it is an absolute http(s) URL; else raise.

    The one URL check: scheme http or https, a host, a valid port, no white space inside.
    """
    text = url.strip() if isinstance(url, str) else ""
    parts = urlsplit(text)
    problem = None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        problem = "is not an http(s) URL"
    elif any(ch.isspace() for ch in text):
        problem = "contains white space"
    else:
        try:
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            problem = "has an invalid port"
    if problem:
        shown = mask_url(url) if isinstance(url, str) else url
        raise ConfigurationError(f"The {what} {shown!r} {problem}; give one like {example!r}.")
    return text.rstrip("/")


def normalize_token_url(url: str) -> str:
    """The token endpoint meant by ``url``: a URL with no path gets ``TOKEN_PATH``."""
    checked = check_url(url, "token URL", DEFAULT_TOKEN_URL)
    return checked + TOKEN_PATH if urlsplit(checked).path in ("", "/") else checked


def token_url_on_host(api_url: str) -> str:
    """The token endpoint on the API's own host: ``scheme://host[:port]/api/oauth2/...``."""
    parts = urlsplit(check_url(api_url, "API URL"))
    return f"{parts.scheme}://{parts.netloc}{TOKEN_PATH}"


def implied_token_url(api_url: str) -> str:
    """The token endpoint an API URL implies when none is named.

    Palo Alto Networks' own hosts (every region, listed here or not) share the central token
    endpoint; any other host (the sandbox, a replay server, a gateway) serves its own.
    """
    host = urlsplit(api_url).hostname or ""
    if host == _VENDOR_DOMAIN or host.endswith("." + _VENDOR_DOMAIN):
        return DEFAULT_TOKEN_URL
    return token_url_on_host(api_url)


def region_for_url(api_url: str) -> str | None:
    """The name of the region whose API lives at ``api_url``, or None."""
    wanted = api_url.rstrip("/")
    return next((r.name for r in REGIONS.values() if r.api_url == wanted), None)


def _region(name: str) -> Region:
    region = REGIONS.get(name.strip().lower())
    if region is None:
        raise ConfigurationError(
            f"Unknown region {name!r}; use one of {', '.join(REGION_NAMES)}, or give a URL."
        )
    return region


@dataclass(frozen=True)
class Endpoint:
    """Where a connection goes: API URL, token URL, region, instance id, sandbox or not."""

    api_url: str = DEFAULT_URL
    token_url: str = DEFAULT_TOKEN_URL
    region: str | None = DEFAULT_REGION
    instance_id: str | None = None
    sandbox: bool = False

    @classmethod
    def for_region(
        cls, name: str, *, token_url: str | None = None, instance_id: str | None = None
    ) -> Endpoint:
        """A known region's API, with its token endpoint unless ``token_url`` names another."""
        region = _region(name)
        token = normalize_token_url(token_url) if token_url else region.token_url
        return cls(region.api_url, token, region.name, instance_id or None)

    @classmethod
    def for_url(
        cls, url: str, *, token_url: str | None = None, instance_id: str | None = None
    ) -> Endpoint:
        """An API at ``url``; the token endpoint defaults to the region's or to the API host's."""
        api = check_url(url, "API URL")
        name = region_for_url(api)
        if name is not None:
            return cls.for_region(name, token_url=token_url, instance_id=instance_id)
        token = normalize_token_url(token_url) if token_url else implied_token_url(api)
        return cls(api, token, None, instance_id or None)

    @classmethod
    def for_sandbox(cls, sandbox: Any) -> Endpoint:
        """A running sandbox (anything with ``url``, ``token_url`` and ``instance_id``)."""
        return cls(sandbox.url, sandbox.token_url, SANDBOX, sandbox.instance_id, sandbox=True)

    @classmethod
    def resolve(
        cls,
        region: str | None = None,
        url: str | None = None,
        token_url: str | None = None,
        instance_id: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Endpoint:
        """The endpoint for a region or a URL (not both); neither: ``PAN_REGION`` or americas."""
        if region and url:
            raise ConfigurationError("Give a region or a URL, not both.")
        if url:
            return cls.for_url(url, token_url=token_url, instance_id=instance_id)
        if region and region.strip().lower() == SANDBOX:
            raise ConfigurationError(
                "The sandbox region needs a running sandbox: use `%cortex connect sandbox`."
            )
        env = os.environ if environ is None else environ
        name = region or env.get(REGION_ENV) or DEFAULT_REGION
        return cls.for_region(name, token_url=token_url, instance_id=instance_id)

    def profile_fields(self) -> dict[str, str | None]:
        """Where-to fields of a profile: the sandbox or a region by name, else the URL.

        The token URL is kept only where it differs from what the region or host implies,
        and the sandbox keeps neither URL nor instance (its port changes each time).
        """
        if self.sandbox:
            return {"region": SANDBOX, "url": None, "token_url": None, "instance_id": None}
        implied = REGIONS[self.region].token_url if self.region else implied_token_url(self.api_url)
        return {
            "region": self.region,
            "url": None if self.region else self.api_url,
            "token_url": None if self.token_url == implied else self.token_url,
            "instance_id": self.instance_id,
        }

    def describe(self) -> str:
        """Where, in words: the region or URL, and the instance."""
        where = "the sandbox" if self.sandbox else (self.region or "custom URL")
        text = f"{mask_url(self.api_url)} ({where})"
        return text + (f", instance {self.instance_id}" if self.instance_id else "")
