"""cortex_nb: the Cortex Data Lake REST API from Jupyter.

Public names are imported lazily so that ``import cortex_nb`` and ``%load_ext cortex_nb`` stay
quick: pandas, ipywidgets and DuckDB load only when something that needs them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from cortex_nb import _aliases
from cortex_nb._version import __version__

_aliases.install()  # the old flat module names (cortex_nb.frames...) still import

# public name -> module that defines it
_LAZY = {
    "CortexError": "exceptions",
    "ConfigurationError": "exceptions",
    "CredentialsError": "exceptions",
    "HTTPError": "exceptions",
    "InvalidJSONError": "exceptions",
    "QueryCancelled": "exceptions",
    "QueryError": "exceptions",
    "QueryStillRunning": "exceptions",
    "ResultTooLarge": "exceptions",
    "TransportError": "exceptions",
    "UnknownNameError": "exceptions",
    "Credentials": "http.credentials",
    "Endpoint": "http.endpoints",
    "HTTPClient": "http.client",
    "QueryJob": "query.job",
    "QueryService": "query.service",
    "Result": "results.collect",
    "QueryOptions": "options",
    "BackgroundJobs": "query.background",  # the old name of BackgroundQueries
    "BackgroundQueries": "query.background",
    "BackgroundQuery": "query.background",
    "SplitResult": "query.fanout",  # a query split by time (split=...)
    "WindowsMissing": "query.fanout",
    "Dataset": "results.datasets",
    "open_dataset": "results.datasets",
    "Chart": "results.charts",
    "ChartError": "results.charts",
    "plot": "results.charts",  # callable: cortex_nb.plot(df, "timeline", by="app")
    "Connection": "notebook.connection",
    "get_connection": "notebook.connection",
    "get_session": "notebook.connection",  # the old name of get_connection
    "CredentialsPanel": "notebook.panel",
    "panel": "notebook.panel",  # callable: cortex_nb.panel() shows the panel
    "tables": "sql.guide",  # the log types as a DataFrame
    "columns": "sql.guide",  # a log type's columns as a DataFrame
}

__all__ = [*sorted(_LAZY), "__version__", "load_ipython_extension"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cortex_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cortex_nb.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%cortex`` / ``%%cortex`` magics (``%load_ext cortex_nb``)."""
    from cortex_nb.notebook.magic import load_ipython_extension as _load

    _load(ipython)
