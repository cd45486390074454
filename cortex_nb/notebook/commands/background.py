"""``%cortex jobs``, ``cancel``, ``wait`` and ``fetch``: background queries, and jobs by id.

A background query is what ``%%cortex --bg -o NAME`` starts (a ``BackgroundQuery`` handle in
the connection's ``jobs``); a job is the service's, known by its id (``%cortex jobs --server``
lists them, ``%cortex fetch JOB_ID`` takes one up).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from cortex_nb.exceptions import QueryError
from cortex_nb.notebook.errors import CortexCellError, guardrail_advice
from cortex_nb.options import given_by
from cortex_nb.query.replies import raise_for_reply

if TYPE_CHECKING:
    from cortex_nb.notebook.magic import CortexMagics
    from cortex_nb.query.background import BackgroundJobs, BackgroundQuery

__all__ = ["cancel", "fetch", "jobs", "wait"]


def jobs(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """This session's background queries, or (``--server``) the service's recent jobs."""
    connection = magics.connection
    if args.server:
        return _server_jobs(connection.require().recent_jobs(args.max, args.state))
    if not len(connection.jobs):
        print("No background queries in this session (%%cortex --bg -o NAME starts one).")
        return None
    return connection.jobs.to_frame()


def cancel(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Cancel background queries by name or id (``all``: every running one), or a job on the
    service by its id."""
    background = magics.connection.jobs
    for target in args.targets:
        if target.lower() == "all":
            cancelled = background.cancel_all()
            if not cancelled:
                print("No background query was running.")
            _report_cancelled(cancelled)
        elif (query := background.find(target)) is not None:
            if query.cancel():
                _report_cancelled([query])
            else:
                print(f"{query.name or query.id} had already ended: {query.line()}")
        else:  # a job id from elsewhere: cancel it on the service
            _cancel_job(magics, target)


def _cancel_job(magics: CortexMagics, job_id: str) -> None:
    """Cancel a job on the service by its id, or raise what the service said."""
    service = magics.connection.require()
    response = service.cancel_job(job_id)
    if not response.ok:
        raise_for_reply(response, f"cancelling job {job_id}", job_id, service.secrets())
    print(f"Cancelled job {job_id} on the service.")


def wait(magics: CortexMagics, args: argparse.Namespace) -> None:
    """Wait for the background queries named (default: every running one) to end."""
    background = magics.connection.jobs
    waited = [_find(background, t) for t in args.targets] if args.targets else background.active()
    try:
        with guardrail_advice():  # a refused result says the cell's flags, not Python's
            for query in waited:
                query.result(args.timeout)  # raises what the query ended with
    except KeyboardInterrupt:
        raise CortexCellError(
            "Stopped waiting; the background queries go on (%cortex jobs lists them)."
        ) from None


def fetch(magics: CortexMagics, args: argparse.Namespace) -> Any:
    """Take up an existing job by its id and fetch its rows, with the query options a cell
    takes (``--dtypes``, ``--to``...; ``--bg``: as a background query into ``-o NAME``)."""
    service = magics.connection.require()
    options = magics.query_options(given_by(args), doing="%cortex fetch")
    if args.bg:
        if not args.output:
            raise CortexCellError("%cortex fetch --bg needs -o NAME, the variable to fill.")
        magics.start_background(
            args.output, args.quiet,
            lambda **kw: service.submit_fetch(args.job_id, options, name=args.output, **kw),
        )
        return None
    with guardrail_advice():
        result = service.fetch(
            args.job_id, options, progress=magics.progress_line(args.quiet),
            say=None if args.quiet else print,
        )
    value = getattr(result, "df", result)  # a Dataset with --to
    if args.output:
        magics.shell.user_ns[args.output] = value
    return None if args.quiet else value


def _find(background: BackgroundJobs, key: str) -> BackgroundQuery:
    """The background query named or numbered ``key``, or a clear error."""
    query = background.find(key)
    if query is None:
        raise QueryError(
            f"No background query {key!r} in this session; %cortex jobs lists them "
            "(%cortex fetch JOB_ID takes up a job from elsewhere)."
        )
    return query


def _report_cancelled(queries: list[BackgroundQuery]) -> None:
    """Wait a moment for each cancelled background query to stop, then say how it ended."""
    for query in queries:
        query.wait(10)  # the worker stops at its next step; the service answers at once
        print(f"{query.name or query.id}: {query.line()}")


def _server_jobs(found: list[dict[str, Any]]) -> Any:
    """The list endpoint's jobs as a DataFrame (times as UTC datetimes, full job ids)."""
    import pandas as pd

    from cortex_nb.notebook.display import with_epoch_ms_times

    frame = with_epoch_ms_times(pd.json_normalize(found))
    wanted = ["jobId", "state", "submitTime", "startTime", "endTime", "statistics.runTimeMs",
              "params.query"]
    return frame[[c for c in wanted if c in frame.columns]] if len(frame) else frame
