"""An offline Cortex Data Lake: OAuth2 and Query Service v2 over synthetic firewall logs.

``Sandbox`` serves the wire format of CORTEX_API.md on a local port from a background thread::

    with Sandbox(rows=10_000, seed=7) as sb:
        sb.url, sb.port, sb.credentials()

Layout: ``server`` (HTTP and the ``Sandbox`` life cycle), ``process`` (the sandbox in its own
process), ``origins`` (browser safety), ``limits`` (resource defaults), ``faults`` (fault
injection); ``service/`` the emulated service (``api`` routes, ``tokens`` OAuth2 and JWTs,
``jobs`` job states and workers, ``cursors`` signed page cursors, ``retention``, ``engine`` csql
-> DuckDB, ``csql`` BigQuery's forms in DuckDB's words, ``typecheck`` BigQuery's type checks at
creation, ``policy`` what a query may touch); ``data/`` the synthetic logs (``world`` hosts,
users and the story's facts; ``flows``, ``story`` and ``events`` the generators; ``columns``
catalog columns in DuckDB; ``logs`` the tables). Nothing here imports the client side of
cortex_nb (only its ``catalog`` and ``wire``, what both sides read): the sandbox emulates the
service, it does not mirror our code.
"""

from cortex_nb.sandbox.server import RecordedRequest, Sandbox

__all__ = ["RecordedRequest", "Sandbox"]
