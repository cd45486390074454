"""Browser safety: no web page may reach the sandbox through the user's browser.

The sandbox serves no web page, and its demo credentials are public, so a page the user visits
must not be able to use them: by DNS rebinding (a name the page controls made to resolve to
127.0.0.1) or by a cross-site request (a form post to the RevokeToken endpoint, say).

- ``Host`` must name the sandbox by an IP address, ``localhost`` or the host it was started
  with; a rebound name never matches. A request without ``Host`` (not a browser) is served.
- ``Origin``, sent by browsers with every cross-site request and every POST, must be the
  sandbox's own origin; ``null`` (sandboxed frames, file pages) is refused too.
- ``Sec-Fetch-Site``, when a browser sends it, must say ``same-origin`` or ``none``.

Clients that are not browsers (requests, the official SDK, curl) send none of the last two.
"""

from __future__ import annotations

import ipaddress
import urllib.parse

ALLOWED_FETCH_SITES = ("same-origin", "none")


class BrowserGuard:
    """Refuses requests that a web page could have made, for one sandbox address."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host.lower().strip("[]"), port

    def refusal(self, headers: dict[str, str]) -> str | None:
        """Why a request with these (lower-case) headers is refused, or None."""
        host = headers.get("host")
        if host is not None and not self._own_name(_hostname(host)):
            return (
                f"Host {host!r} is not this sandbox's address: requests must name it by IP "
                "address or localhost (names that could rebind to it are refused)"
            )
        origin = headers.get("origin")
        if origin is not None and not self._own_origin(origin):
            return (
                f"Cross-site request from {origin!r} refused: the sandbox serves no web page, "
                "so no page may use its credentials"
            )
        site = headers.get("sec-fetch-site")
        if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
            return f"Request from a {site} web page refused: the sandbox serves no web page"
        return None

    def _own_name(self, name: str | None) -> bool:
        if name is None:
            return False
        if name in ("localhost", self.host):
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _own_origin(self, origin: str) -> bool:
        try:
            url = urllib.parse.urlsplit(origin)
            port = url.port or 80
        except ValueError:
            return False
        return url.scheme == "http" and self._own_name(url.hostname) and port == self.port


def _hostname(host: str) -> str | None:
    """The lower-case name in a Host header value (no port, no IPv6 brackets)."""
    try:
        return urllib.parse.urlsplit(f"//{host}").hostname
    except ValueError:
        return None
