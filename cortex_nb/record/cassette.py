"""Cassettes: a session's HTTP exchanges written to a plain text file, with no secret and no
tenant id in it, and read back for replay (``cortex_nb.record.replay``).

A ``Recorder`` observes ``requests`` sessions through their response hooks, as tracing does,
and appends each exchange to the file as it happens (a kernel that dies keeps what was
recorded). Before anything is written:

- request headers are left out (the bearer token travels there), and of the reply's headers
  only those that say something about the reply are kept (``RESPONSE_HEADERS``);
- JSON values under sensitive keys (``access_token``, ``client_secret``, ``refresh_token``,
  ``client_id``...) become ``******``, at any depth; in text, the session's secret values,
  bearer tokens and JWT-shaped strings are masked, and non-JSON bodies are scrubbed whole;
- the tenant's instance id (the connection's, and any named in a table such as
  `` `1234567890.firewall.traffic` ``) becomes ``<instance>``, wherever it stands as a word.

The file is a stream of JSON documents (``jq`` reads it as is): a header, then one document per
exchange, laid out one key per line with each result row on a line of its own, so a cassette
recorded again diffs row by row. Job ids stay as recorded: replay maps them to the new ones.

A cassette is meant to be shared, so one from elsewhere is read with care: only a regular file
of at most ``MAX_CASSETTE_BYTES`` (never a FIFO or a device), JSON nested no deeper than the
parser allows, and reply headers without control characters (a CR/LF would split the replayed
reply); anything else is one ``ConfigurationError``. Recording never writes through a symbolic
link at the cassette's path (it would overwrite the file the link points to).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import requests

from cortex_nb._version import __version__
from cortex_nb.exceptions import ConfigurationError
from cortex_nb.http.security import MASK, SENSITIVE_KEYS, mask_url, scrub, secrets_of
from cortex_nb.localfiles import open_for_writing, read_regular_file
from cortex_nb.sql.params import DATASETS

__all__ = [
    "FORMAT",
    "INSTANCE",
    "RESPONSE_HEADERS",
    "Cassette",
    "Cleaner",
    "Recorder",
    "body_of",
    "dump_document",
    "exchange_of",
    "with_instance_placeholder",
]

FORMAT = "cortex_nb cassette"
VERSION = 1
INSTANCE = "<instance>"  # stands for the tenant's instance id
# the client id names the tenant's OAuth2 app: not a secret to the client, but not for sharing
CASSETTE_KEYS = SENSITIVE_KEYS | {"client_id"}
# reply headers worth replaying; everything else (cookies, dates, proxies' own) is left out
RESPONSE_HEADERS = ("content-type", "x-request-id", "retry-after", "www-authenticate", "allow")
WIDTH = 100  # a JSON value shorter than this stays on one line
MAX_CASSETTE_BYTES = 512 * 2**20  # the client's largest reply; a cassette holds a few pages
# a header name is an RFC 9110 token; a value holds no control character (CR/LF split replies)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# a bearer token, not a challenge's parameters (WWW-Authenticate: Bearer error="...")
_BEARER = re.compile(
    r"(Bearer\s+)(?!\*{6}|(?:realm|scope|error|error_description|error_uri)=)[^\s,\"]+",
    re.IGNORECASE,
)
_TABLE_INSTANCE = re.compile(rf"`([^`.\s]+)(\.(?:{'|'.join(DATASETS)})\.[A-Za-z_][A-Za-z0-9_]*`)")


# -- what is kept of a string, a JSON value, an exchange --------------------------------------
class Cleaner:
    """Masks secrets and replaces instance ids in the strings and JSON values of an exchange."""

    def __init__(self, secrets: Iterable[str], instance_ids: Iterable[str]) -> None:
        self.secrets = sorted((s for s in secrets if s), key=len, reverse=True)
        ids = sorted((i for i in instance_ids if i and i != INSTANCE), key=len, reverse=True)
        self.instance = (
            re.compile(rf"(?<![A-Za-z0-9_-])(?:{'|'.join(map(re.escape, ids))})(?![A-Za-z0-9_-])")
            if ids else None
        )

    def text(self, value: str) -> str:
        """A string from a reply or a request: secrets masked, instance ids replaced."""
        for secret in self.secrets:
            value = value.replace(secret, MASK)
        # cheap tests first: a results page holds hundreds of thousands of strings
        if "://" in value:
            value = mask_url(value)
        if "eyJ" in value:
            value = _JWT.sub(MASK, value)
        value = _BEARER.sub(lambda m: m.group(1) + MASK, value)
        return self.instance.sub(INSTANCE, value) if self.instance else value

    def scrubbed(self, value: str) -> str:
        """Text that is not JSON: also ``key=value`` pairs and JSON-looking secrets masked."""
        return self.text(scrub(value, self.secrets))

    def json(self, value: Any) -> Any:
        """A decoded JSON value with sensitive keys masked and every string cleaned."""
        if isinstance(value, dict):
            return {
                k: MASK if str(k).lower() in CASSETTE_KEYS else self.json(v)
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return self.text(value) if isinstance(value, str) else value


def body_of(raw: Any, cleaner: Cleaner) -> dict[str, Any]:
    """``{"json": value}`` or ``{"text": str}`` for a body, cleaned; ``{}`` when empty."""
    if not raw:
        return {}
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        return {"json": cleaner.json(json.loads(text))}
    except ValueError:
        return {"text": cleaner.scrubbed(text)}


def exchange_of(
    response: requests.Response, kind: str = "api", secrets: Iterable[str] = (),
    instance_ids: Iterable[str] = (),
) -> dict[str, Any]:
    """One exchange as a cassette document: request and reply, with nothing secret left."""
    cleaner = Cleaner(secrets, instance_ids)
    request = response.request
    url = urlsplit(request.url or "")
    query = cleaner.json(dict(parse_qsl(url.query, keep_blank_values=True)))
    headers = {
        name: cleaner.text(response.headers[name])
        for name in RESPONSE_HEADERS if name in response.headers
    }
    return {
        "kind": kind,
        "request": {
            "method": request.method or "GET", "path": cleaner.text(url.path or "/"),
            **({"query": query} if query else {}), **body_of(request.body, cleaner),
        },
        "response": {
            "status": response.status_code, "reason": cleaner.text(response.reason or ""),
            "headers": headers, **body_of(response.content, cleaner),
        },
        "elapsed_ms": round(response.elapsed.total_seconds() * 1000, 1),
    }


def instance_ids_in(request: requests.PreparedRequest) -> set[str]:
    """Instance ids named in the tables of a query the request submits (`` `ID.firewall.x` ``)."""
    body = request.body
    if not body:
        return set()
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    return {match.group(1) for match in _TABLE_INSTANCE.finditer(text)}


def with_instance_placeholder(sql: str) -> str:
    """``sql`` with the instance id of each table name (`` `ID.firewall.traffic` ``) replaced by
    the placeholder: a replay serves one tenant, whichever id a notebook spells out."""
    return _TABLE_INSTANCE.sub(lambda m: f"`{INSTANCE}{m.group(2)}", sql)


# -- the file -----------------------------------------------------------------------------------
def dump_document(value: Any, indent: int = 0) -> str:
    """``value`` as JSON text for a cassette: objects one key per line while they are too wide
    for one, the items of a list (result rows) one per line."""
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(flat) + indent <= WIDTH or not isinstance(value, dict | list) or not value:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, list):
        items = [inner + json.dumps(v, ensure_ascii=False, separators=(",", ":")) for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    items = [
        f"{inner}{json.dumps(k, ensure_ascii=False)}: {dump_document(v, indent + 2)}"
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(items) + f"\n{pad}}}"


def _documents(text: str, path: Path) -> Iterator[Any]:
    """The JSON documents of a cassette's text, in order; a clear error naming the line."""
    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        try:
            value, at = decoder.raw_decode(text, at)
        except (ValueError, RecursionError) as exc:
            line = text.count("\n", 0, at) + 1
            problem = getattr(exc, "msg", "JSON nested too deeply")
            raise ConfigurationError(
                f"The cassette {path} is damaged at line {line}: {problem}. Record it again."
            ) from None
        yield value


def _read_text(where: Path) -> str:
    """A cassette file's text: a regular UTF-8 file of a sane size, or a clear error."""
    try:
        data = read_regular_file(
            where, what="The cassette", limit=MAX_CASSETTE_BYTES,
            fix="give the path of a file recorded with `%cortex connect ... --record FILE`.",
        )
        return data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"No cassette at {where.resolve()}. Give the path of a file recorded with "
            "`%cortex connect ... --record FILE` (relative paths start at the notebook's "
            "folder)."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"Cannot read the cassette {where}: {exc}.") from None


def _unsafe_header(exchange: dict[str, Any]) -> str | None:
    """The first reply header of an exchange that could not be sent as recorded, or None."""
    headers = exchange["response"].get("headers") or {}
    if not isinstance(headers, dict):
        return "headers"
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name) or not isinstance(value, str) or _CONTROL.search(value):
            return name
    return None


@dataclass
class Cassette:
    """A cassette read from disk: where it is, its header and its exchanges in recorded order."""

    path: Path
    header: dict[str, Any]
    exchanges: list[dict[str, Any]]
    digest: str = ""  # SHA-256 of the text: what was recorded, whatever the file is called

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Cassette:
        """Read and check the cassette at ``path`` (relative to the current directory)."""
        where = Path(path).expanduser()
        text = _read_text(where)
        documents = list(_documents(text, where))
        header = documents[0] if documents else None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ConfigurationError(
                f"{where} is not a cortex_nb cassette (it does not start with the cassette "
                "header). Record one with `%cortex connect ... --record FILE`."
            )
        if header.get("version") != VERSION:
            raise ConfigurationError(
                f"The cassette {where} has format version {header.get('version')!r}; this "
                f"cortex_nb reads version {VERSION}. Record it again."
            )
        exchanges = [d for d in documents[1:] if _is_exchange(d)]
        if len(exchanges) != len(documents) - 1:
            raise ConfigurationError(
                f"The cassette {where} holds a document that is not an exchange. Record it again."
            )
        for number, exchange in enumerate(exchanges, 1):
            if (name := _unsafe_header(exchange)) is not None:
                raise ConfigurationError(
                    f"The cassette {where} has a reply header that cannot be replayed (exchange "
                    f"{number}, header {name!r}: a control character or a malformed name); it "
                    "may have been tampered with. Record it again."
                )
        return cls(where, header, exchanges, hashlib.sha256(text.encode()).hexdigest())

    @property
    def instance_id(self) -> str:
        """The instance id replayed requests use: the placeholder the recording left."""
        return str(self.header.get("instance") or INSTANCE)


def _is_exchange(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("request"), dict)
        and isinstance(document.get("response"), dict)
        and isinstance(document["request"].get("method"), str)
        and isinstance(document["request"].get("path"), str)
        and isinstance(document["response"].get("status"), int)
        and 200 <= document["response"]["status"] <= 599  # 1xx would leave the client waiting
    )


# -- recording -----------------------------------------------------------------------------------
class Recorder:
    """Writes every exchange of the sessions it is attached to into a cassette file.

    ``instance_id`` and ``secrets`` are callables asked at every exchange (the connection's
    current instance id and secret values), or plain values; the secrets a session announces
    (``security.secrets_of``: its credentials', known before their first token request) are
    masked too. Every instance id seen once is replaced from then on. The file is created (or
    replaced) at once, with its header; a symbolic link at its path is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        instance_id: str | Callable[[], str | None] | None = None,
        secrets: Iterable[str] | Callable[[], Iterable[str]] = (),
    ) -> None:
        self.path = Path(path).expanduser()
        self._instance_id = instance_id if callable(instance_id) else (lambda: instance_id)
        self._secrets = secrets if callable(secrets) else (lambda: list(secrets))
        self._instance_ids: set[str] = set()
        self._lock = threading.Lock()
        self.count = 0
        self.closed = False
        header = {"format": FORMAT, "version": VERSION, "instance": INSTANCE,
                  "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "client": f"cortex-nb/{__version__}"}
        try:
            self._file = open_for_writing(
                self.path, what="The cassette path", fix="Remove it, or give another path."
            )
            self._write(header)
        except OSError as exc:
            raise ConfigurationError(
                f"Cannot record to {self.path}: {exc.strerror or exc}. Give a writable path."
            ) from None

    def attach(self, session: requests.Session, kind: str = "api") -> None:
        """Record every reply ``session`` receives (``kind``: ``api`` or ``token``)."""

        def hook(response: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
            self.record(response, kind, secrets_of(session))
            return response

        hook.cortex_recorder = self
        hooks = session.hooks.setdefault("response", [])
        if not any(getattr(h, "cortex_recorder", None) is self for h in hooks):
            hooks.append(hook)

    def record(
        self, response: requests.Response, kind: str = "api", secrets: Iterable[str] = ()
    ) -> None:
        """Append one exchange (the whole reply is read, even a streamed one), masking
        ``secrets`` as well as the recorder's own."""
        if self.closed:
            return
        named = {self._instance_id()} | instance_ids_in(response.request)
        with self._lock:  # pages arrive on several threads at once
            self._instance_ids |= named - {None}
            instance_ids = list(self._instance_ids)
        document = exchange_of(response, kind, [*self._secrets(), *secrets], instance_ids)
        with self._lock:
            if self.closed:
                return
            try:
                self._write(document)
            except OSError as exc:
                raise ConfigurationError(
                    f"Recording to {self.path} failed: {exc.strerror or exc}."
                ) from None
            self.count += 1

    def _write(self, document: dict[str, Any]) -> None:
        self._file.write(dump_document(document) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Stop recording and close the file (safe to call twice)."""
        with self._lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(OSError):
                    self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else "recording"
        return f"<Recorder {self.path} ({state}, {self.count} exchanges)>"
