"""REST mode of the magic: one request (``%%cortex GET /path``, the cell as its JSON body) and
its reply shown as a table (a list of records) or as indented JSON; ``--dry-run`` shows the
request instead of sending it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cortex_nb.http.security import mask_url
from cortex_nb.notebook.errors import CortexCellError
from cortex_nb.notebook.status import show_traces

if TYPE_CHECKING:
    from cortex_nb.http.client import HTTPClient
    from cortex_nb.notebook.connection import Connection
    from cortex_nb.notebook.grammar import CellCommand

__all__ = ["PrettyJSON", "dry_run", "json_body", "rest_output", "run_rest"]


def run_rest(connection: Connection, command: CellCommand, traces: bool) -> Any:
    """Send the cell's request on the shared client; its reply as a table or JSON."""
    body = json_body(command.text)
    if command.dry_run:
        return dry_run(connection.client, command.method or "GET", command.path or "/", body)
    client = connection.require().client
    with connection.traces.collect() as seen:
        response = client.request(method=command.method, path=command.path, json=body)
    if traces:
        show_traces(seen)
    return rest_output(response, command.raw, command.options.get("limit"))


def dry_run(client: HTTPClient | None, method: str, path: str, body: Any) -> None:
    """Print the request that would be sent (the token as ``$TOKEN``); send nothing."""
    base = mask_url(client.url) if client is not None else "<not connected>"
    print(f"{method} {base}{path}")
    print("Authorization: Bearer $TOKEN")
    if body is not None:
        print(json.dumps(body, indent=2))
    print("(dry run: nothing was sent)")


def json_body(text: str) -> Any:
    """The cell's JSON body (None when empty), or a one-line error saying why it is not JSON."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise CortexCellError(f"%%cortex: the cell body is not valid JSON ({exc})") from None


def rest_output(response: Any, raw: bool, limit: int | None) -> Any:
    """The reply as a DataFrame when it is a list of records (job times as UTC datetimes),
    else its JSON (or text)."""
    try:
        payload = response.json()
    except ValueError:
        return response.text
    if not response.ok:
        print(f"HTTP {response.status_code} {response.reason}")
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        if raw:
            return payload[:limit] if limit else payload
        import pandas as pd

        from cortex_nb.notebook.display import ShortFrame, with_epoch_ms_times

        frame = with_epoch_ms_times(pd.json_normalize(payload))
        return ShortFrame(frame.head(limit) if limit else frame)
    return PrettyJSON(payload)


class PrettyJSON:
    """Shows decoded JSON indented; ``.data`` holds the value."""

    def __init__(self, data: Any) -> None:
        self.data = data

    def __repr__(self) -> str:
        return json.dumps(self.data, indent=2, default=str)

    def _repr_json_(self) -> Any:
        return self.data
