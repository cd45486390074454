"""Every error cortex_nb raises, rooted in one class.

The tree::

    CortexError                     root: catch this to catch everything from cortex_nb
    ├── ConfigurationError          bad keyword, bad URL, insecure setup (raised before sending)
    ├── CredentialsError            no usable credentials, or the token endpoint refused them
    ├── TransportError              the request never got a reply (DNS, refused, reset, timeout)
    ├── HTTPError                   a reply with a non-2xx status (``raise_for_status``)
    ├── InvalidJSONError            a reply whose body is not JSON (``enforce_json``)
    ├── UnknownNameError            a table or column the catalog does not know (with suggestions)
    └── QueryError                  a query job failed, was cancelled, timed out or lost rows
        ├── QueryCancelled          the job was cancelled (by the user, an interrupt or the server)
        ├── QueryStillRunning       a background job's result was asked for with a timeout that
        │                           passed before the job ended (also a ``TimeoutError``)
        ├── ResultTooLarge          more rows than the guardrail allows in memory (``max_rows``)
        └── WindowsMissing          windows of a split query failed every try (the others kept;
                                    defined in ``cortex_nb.query.fanout``)

Messages say what failed, where, and what to do next. They never contain a secret: callers
pass only redacted material, and the classes keep no request bodies or headers of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import requests

__all__ = [
    "ConfigurationError",
    "CortexError",
    "CredentialsError",
    "HTTPError",
    "InvalidJSONError",
    "QueryCancelled",
    "QueryError",
    "QueryStillRunning",
    "ResultTooLarge",
    "TransportError",
    "UnknownNameError",
]


class CortexError(Exception):
    """Root of every error raised by cortex_nb."""


class ConfigurationError(CortexError, ValueError):
    """A setting is wrong or unsafe; nothing was sent."""


class CredentialsError(CortexError):
    """No usable credentials, or the token endpoint refused them."""


class TransportError(CortexError):
    """The request got no reply (connection refused, reset, DNS failure, timeout)."""


class _ResponseError(CortexError):
    """An error tied to one HTTP reply; keeps the response for inspection."""

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        super().__init__(message)
        self.response = response

    @property
    def status_code(self) -> int | None:
        """HTTP status of the reply, if there was one."""
        return None if self.response is None else self.response.status_code

    @property
    def request_id(self) -> str | None:
        """The service's ``x-request-id`` for the reply, to quote to support."""
        return None if self.response is None else self.response.headers.get("x-request-id")


class HTTPError(_ResponseError):
    """The service answered with a non-2xx status."""


class InvalidJSONError(_ResponseError):
    """The reply body is not JSON although JSON was required."""


class QueryError(CortexError):
    """A query job did not deliver its full result."""

    def __init__(self, message: str, job_id: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.details = details


class QueryCancelled(QueryError):
    """The query job was cancelled."""


class UnknownNameError(CortexError, LookupError):
    """A table or column name the catalog does not know; ``suggestions`` are the closest."""

    def __init__(self, message: str, suggestions: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.suggestions = tuple(suggestions)


class QueryStillRunning(QueryError, TimeoutError):
    """A background job had not ended within the time given to wait for its result."""


class ResultTooLarge(QueryError):
    """The result has more rows than ``max_rows`` allows in memory; the job was cancelled.

    ``rows`` is what the job has (``rowsInJob``), ``max_rows`` the guardrail it crossed and
    ``cancelled`` whether the service accepted the cancel.
    """

    def __init__(
        self, message: str, job_id: str | None, rows: int, max_rows: int, cancelled: bool
    ) -> None:
        super().__init__(message, job_id)
        self.rows, self.max_rows, self.cancelled = rows, max_rows, cancelled
