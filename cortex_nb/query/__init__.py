"""Query jobs end to end: the service's calls, one job's life (poll, page, cancel), background
queries, and the ``QueryService`` that puts them together.
"""

from __future__ import annotations

import importlib
from typing import Any

# what ``cortex_nb.query`` offered when it was one module: name -> the module that has it now.
# Resolved on first use, so that importing a part of this package imports nothing else.
_NAMES = {
    "QueryService": "service",
    "QueryJob": "job",
    "Result": "job",
    "QueryOptions": "job",
    "Progress": "job",
    "Page": "job",
    "DEFAULT_MAX_ROWS": "job",
    "too_large": "job",
    "TERMINAL_STATES": "replies",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'cortex_nb.query' has no attribute {name!r}")
    return getattr(importlib.import_module(f"cortex_nb.query.{module}"), name)
