"""The Query Service v2 wire format, written once for the client and the sandbox.

API paths, job states, page limits and result formats (CORTEX_API.md). The sandbox may import
this module: it describes the service, not our client. Nothing heavy is imported here.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "JOBS",
    "MAX_PAGE_SIZE",
    "MAX_WAIT_MS",
    "PENDING_STATES",
    "RESULTS",
    "RESULT_FORMATS",
    "TERMINAL_STATES",
]

JOBS = "/query/v2/jobs"
RESULTS = "/query/v2/jobResults"
PENDING_STATES = frozenset({"PENDING", "RUNNING"})
TERMINAL_STATES = frozenset({"DONE", "FAILED", "CANCELLED", "TIMEDOUT"})
DEFAULT_PAGE_SIZE = 10_000
MAX_PAGE_SIZE = 100_000
MAX_WAIT_MS = 2000
RESULT_FORMATS = ("valuesDictionary", "valuesArray")
