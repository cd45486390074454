"""Query jobs of the sandbox: their life cycle, worker threads and retention.

States, as the service reports them::

    PENDING ──> RUNNING ──> DONE
       │           ├──────> FAILED     runtime error (bad SQL is refused at creation instead)
       │           └──────> TIMEDOUT   ran longer than properties.timeoutMs
       └───────────┴──────> CANCELLED  DELETE /query/v2/jobs/<id>

A worker thread waits ``job_delay_ms / 2`` in PENDING, runs the query in DuckDB (RUNNING),
waits the other half and finishes. So that every polling client sees the intermediate states
the real service shows, whatever the timing, reports never skip a state: the first status read
of a job (job detail, results without ``maxWait``) says PENDING, and each later read moves the
reported state at most one step along PENDING -> RUNNING -> final state. CANCELLED is reported
at once, and so is the final state of a job that finished more than a second ago. A results
request with ``maxWait`` holds the request up to that many ms (at most 2000) for the job to
finish and then reports the true state. Job lists show the last reported state without moving
it. Cancelling a finished job changes nothing.

``timeoutMs`` counts from the start of RUNNING. Results of the most recent ``keep_results``
finished jobs are kept; older ones are dropped (their results answer 404), as are the results
of cancelled jobs.
"""

from __future__ import annotations

import collections
import contextlib
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb

from cortex_nb.sandbox.engine import Engine, Prepared, ResultSet

PENDING, RUNNING, DONE = "PENDING", "RUNNING", "DONE"
FAILED, CANCELLED, TIMEDOUT = "FAILED", "CANCELLED", "TIMEDOUT"
STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, TIMEDOUT)
FINISHED = frozenset({DONE, FAILED, CANCELLED, TIMEDOUT})
MAX_WAIT_MS = 2000
STALE_MS = 1000  # a job finished this long ago reports its final state at once
JOB_ID = re.compile(r"[A-Za-z0-9-]{1,1000}")


class DuplicateJob(Exception):
    """A client-chosen jobId that already exists (HTTP 409)."""


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


@dataclass(eq=False)
class Job:
    """One query job and what the worker learnt about it."""

    job_id: str
    params: dict
    prepared: Prepared
    timeout_ms: int | None
    submit_ms: int = field(default_factory=now_ms)
    state: str = PENDING
    start_ms: int | None = None
    end_ms: int | None = None
    errors: list | None = None
    result: ResultSet | None = None
    reported: str | None = None  # what the last status read said
    stop_reason: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    cursor: duckdb.DuckDBPyConnection | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, waited: bool = False) -> str:
        """The state to report for one status read (see the module doc: no skipped states)."""
        with self.lock:
            if self.state == CANCELLED or (self.state in FINISHED and (waited or self._stale())):
                self.reported = self.state
            elif self.reported is None:
                self.reported = PENDING
            elif self.reported == PENDING:
                self.reported = PENDING if self.state == PENDING else RUNNING
            else:
                self.reported = self.state
            return self.reported

    def peek(self) -> str:
        """The state to report without counting a read (job lists)."""
        with self.lock:
            if self.state == CANCELLED or (self.state in FINISHED and self._stale()):
                return self.state
            return self.reported or PENDING

    def _stale(self) -> bool:
        return self.end_ms is not None and now_ms() - self.end_ms > STALE_MS

    def stop(self, reason: str) -> None:
        """Ask the worker to stop (cancel, timeout, shutdown) and interrupt DuckDB."""
        with self.lock:
            if self.state in FINISHED or self.stop_reason:
                return
            self.stop_reason = reason
            cursor = self.cursor
            if self.state == PENDING:  # the worker has not started: finish it here
                self.state, self.end_ms = reason, now_ms()
                self.finished.set()
        self.stopped.set()
        if cursor is not None:
            threading.Thread(
                target=self._interrupt_until_stopped, args=(cursor,), daemon=True
            ).start()

    def _interrupt_until_stopped(self, cursor: duckdb.DuckDBPyConnection) -> None:
        """Interrupt DuckDB until the worker lets go of ``cursor``.

        One interrupt is not enough: one that lands before DuckDB starts executing (or between
        two statements) is lost, and the query then runs to its end (forever, for a cross
        join). The lock keeps the worker from closing the cursor while it is interrupted.
        """
        while True:
            with self.lock:
                if self.cursor is not cursor:
                    return
                with contextlib.suppress(duckdb.Error):  # the query may have just ended
                    cursor.interrupt()
            if self.finished.wait(0.02):
                return

    def detail(self, state: str) -> dict:
        """The job detail object as reported in ``state``."""
        body = {
            "jobId": self.job_id,
            "state": state,
            "submitTime": self.submit_ms,
            "params": self.params,
        }
        shown_start = state != PENDING and self.start_ms is not None
        if shown_start:
            body["startTime"] = self.start_ms
        if state in FINISHED and self.end_ms is not None:
            body["endTime"] = self.end_ms
        body["progress"] = {"completionPct": 100 if state in FINISHED else 50 if shown_start else 0}
        run_ms = (body.get("endTime") or now_ms()) - self.start_ms if shown_start else 0
        body["statistics"] = {"runTimeMs": run_ms, "cachePct": 0, "etaMs": 0}
        if state in (FAILED, TIMEDOUT) and self.errors:
            body["errors"] = self.errors
        return body


class JobManager:
    """Creates jobs, runs them on a small thread pool, keeps recent ones."""

    def __init__(
        self,
        engine: Engine,
        job_delay_ms: float = 20,
        workers: int = 2,
        keep_jobs: int = 1000,
        keep_results: int = 16,
    ) -> None:
        self.engine = engine
        self.job_delay_ms = job_delay_ms
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox-job")
        self._jobs: dict[str, Job] = {}
        self._with_results: collections.deque[Job] = collections.deque()
        self._keep_jobs, self._keep_results = keep_jobs, keep_results
        self._lock = threading.Lock()
        self._counter = 0

    def submit(
        self, job_id: str | None, params: dict, prepared: Prepared, timeout_ms: int | None
    ) -> Job:
        """Register and start a job; ``DuplicateJob`` when the id exists."""
        with self._lock:
            if job_id is None:
                self._counter += 1
                job_id = f"sandbox-{self._counter:06d}-{now_ms()}"
            if job_id in self._jobs:
                raise DuplicateJob(job_id)
            job = Job(job_id, params, prepared, timeout_ms)
            self._jobs[job_id] = job
            self._forget_old_jobs()
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with that id, if known."""
        with self._lock:
            return self._jobs.get(job_id)

    def newest_first(self) -> list[Job]:
        """Every known job, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` unless it already finished; return once it has stopped."""
        job.stop(CANCELLED)
        job.finished.wait(MAX_WAIT_MS / 1000)

    def shutdown(self) -> None:
        """Stop every job and wait for the workers."""
        for job in self.newest_first():
            job.stop(CANCELLED)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job) -> None:
        job.stopped.wait(self.job_delay_ms / 2000)
        cursor = self.engine.cursor()
        with job.lock:
            if job.stop_reason:  # stopped while PENDING: stop() already finished it
                cursor.close()
                return
            job.state, job.start_ms, job.cursor = RUNNING, now_ms(), cursor
        timer = self._timeout_timer(job)
        result = self._execute(job, cursor)
        with job.lock:  # nothing may interrupt a cursor once it is closed
            job.cursor = None
        cursor.close()
        job.stopped.wait(self.job_delay_ms / 2000)
        if timer:
            timer.cancel()
        self._finish(job, result)

    def _timeout_timer(self, job: Job) -> threading.Timer | None:
        if job.timeout_ms is None:
            return None
        timer = threading.Timer(job.timeout_ms / 1000, job.stop, args=(TIMEDOUT,))
        timer.daemon = True
        timer.start()
        return timer

    def _execute(self, job: Job, cursor: duckdb.DuckDBPyConnection) -> ResultSet | None:
        try:
            return self.engine.materialize(cursor, job.prepared)
        except duckdb.InterruptException:
            return None
        except duckdb.Error as error:
            lines = str(error).strip().splitlines()
            job.errors = [
                {
                    "errorCode": 400,
                    "message": lines[0],
                    **({"context": "\n".join(lines[1:])} if len(lines) > 1 else {}),
                }
            ]
            return None

    def _finish(self, job: Job, result: ResultSet | None) -> None:
        with job.lock:
            reason, job.end_ms = job.stop_reason, now_ms()
            elapsed = job.end_ms - (job.start_ms or job.end_ms)
            if reason is None and job.timeout_ms is not None and elapsed > job.timeout_ms:
                reason = TIMEDOUT
            if reason == TIMEDOUT:
                job.errors = [
                    {
                        "errorCode": 408,
                        "message": f"query timed out after {job.timeout_ms} ms (timeoutMs)",
                    }
                ]
            job.state = reason or (FAILED if job.errors else DONE)
            keep = job.state == DONE and result is not None
            job.result = result if keep else None
        if result is not None and not keep:
            self.engine.drop(result)
        if keep:
            self._retain(job)
        job.finished.set()

    def _retain(self, job: Job) -> None:
        with self._lock:
            self._with_results.append(job)
            expired = []
            while len(self._with_results) > self._keep_results:
                expired.append(self._with_results.popleft())
        for old in expired:
            result, old.result = old.result, None
            if result is not None:
                self.engine.drop(result)

    def _forget_old_jobs(self) -> None:
        while len(self._jobs) > self._keep_jobs:
            oldest = next(iter(self._jobs.values()))
            if oldest.state not in FINISHED:
                break
            del self._jobs[oldest.job_id]
