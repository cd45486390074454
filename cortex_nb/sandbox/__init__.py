"""An offline Cortex Data Lake: OAuth2 and Query Service v2 over synthetic firewall logs.

``Sandbox`` serves the wire format of CORTEX_API.md on a local port from a background thread::

    with Sandbox(rows=10_000, seed=7) as sb:
        sb.url, sb.port, sb.credentials()

Modules: ``server`` (HTTP and the ``Sandbox`` life cycle), ``origins`` (browser safety),
``api`` (routes), ``cursors`` (signed page cursors), ``jobs`` (job states, workers and limits),
``retention`` (how long results are kept), ``limits`` (resource defaults), ``engine`` (csql ->
DuckDB), ``csql`` (BigQuery's forms in DuckDB's words), ``typecheck`` (BigQuery's type
checks at creation), ``policy`` (what a query may touch), ``logs`` (the synthetic log tables,
made from ``world``: hosts, users and the story; ``sessions``, ``story`` and ``events``: the
generators; ``columns``: catalog columns in DuckDB), ``tokens`` (OAuth2 and JWTs), ``faults`` (fault
injection). Nothing here imports the client side of cortex_nb (only its ``catalog``, the data
both sides read): the sandbox emulates the service, it does not mirror our code.
"""

from cortex_nb.sandbox.server import RecordedRequest, Sandbox

__all__ = ["RecordedRequest", "Sandbox"]
