"""Query jobs of the sandbox: their life cycle, worker threads and limits.

States, as the service reports them (``cortex_nb.wire`` names them)::

    PENDING ──> RUNNING ──> DONE
       │           ├──────> FAILED     refused by the check after creation, or a runtime error
       │           └──────> TIMEDOUT   ran longer than its timeout
       └───────────┴──────> CANCELLED  DELETE /query/v2/jobs/<id>, or the sandbox stopping

Every piece of SQL work happens in a job worker, never in an HTTP thread: a worker takes the
job, checks and binds the statement (PENDING; ``Engine.prepare``), waits ``job_delay_ms / 2``,
runs it in DuckDB (RUNNING), waits the other half and finishes. ``checked`` is set once the
check is over, so job creation can answer 400 for a statement refused quickly and 201 otherwise.

Job time: on the real service a job's own time grows with the data it scans (a week of a
tenant's logs is tens of seconds to minutes of server time, and many jobs run at once there),
while DuckDB answers the sandbox's small logs at once. With a ``scan_rate`` (rows per second) a
job stays RUNNING ``rows / scan_rate`` seconds more after its query, ``rows`` being the rows its
result holds: a proxy for the rows scanned (an aggregate's scan, many rows in and few out, is
not modelled). That wait happens off the worker (a thread that only sleeps), so the worker
takes the next job and the scan times of many jobs overlap as on the service; the job's
timeout, cancel and shutdown still end it at once. No rate (0 or None): jobs finish as soon as
their query has run.

Limits: ``workers`` jobs run at once (several, so that heavy jobs do not hold up light ones;
the rest wait in order). A job's timeout is the request's ``timeoutMs`` when it is shorter than
the sandbox's ``timeout_ms`` (the default and the ceiling); it counts from when a worker takes
the job, check included. Cancel, timeout and shutdown end a job at once (its state is final
from that moment) and interrupt DuckDB until its worker lets go; whatever the worker was doing
is thrown away. DuckDB heeds an interrupt only between chunks of rows, and one chunk of an
expensive expression can take seconds: a worker still held ``RELEASE_GRACE_S`` after its job
ended is retired (it exits once DuckDB lets go) and a new worker takes its place, so a timed-out
or cancelled job frees its worker at once. At most ``workers`` retired workers run at a time.
Memory is DuckDB's limit, shared by the sandbox (see ``engine``).

So that every polling client sees the intermediate states the real service shows, whatever the
timing, reports never skip a state: the first status read of a job (job detail, results without
``maxWait``) says PENDING, and each later read moves the reported state at most one step along
PENDING -> RUNNING -> final state. CANCELLED is reported at once, and so is the final state of a
job that finished more than a second ago. A results request with ``maxWait`` holds the request
up to that many ms (at most ``wire.MAX_WAIT_MS``) for the job to finish and then reports the
true state. Job lists show the last reported state without moving it. Cancelling a finished job
changes nothing.
Results are kept as ``retention`` says.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from cortex_nb.sandbox.service.engine import Engine, QueryRejected, ResultSet
from cortex_nb.sandbox.service.retention import Retention
from cortex_nb.wire import CANCELLED, DONE, FAILED, FINAL_STATES, PENDING, RUNNING, TIMEDOUT

STALE_MS = 1000  # a job finished this long ago reports its final state at once
RELEASE_GRACE_S = 0.1  # a worker still held this long after its job ended is replaced


class DuplicateJob(Exception):
    """A client-chosen jobId that already exists (HTTP 409)."""


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


def error_item(message: str, context: str | None = None, code: int = 400) -> dict:
    """One item of a job's ``errors`` list."""
    return {"errorCode": code, "message": message, **({"context": context} if context else {})}


@dataclass(eq=False)
class Job:
    """One query job and what its worker learnt about it."""

    job_id: str
    params: dict
    timeout_ms: int | None
    submit_ms: int = field(default_factory=now_ms)
    state: str = PENDING
    start_ms: int | None = None
    end_ms: int | None = None
    errors: list | None = None
    rejection: QueryRejected | None = None  # why the check refused the statement
    result: ResultSet | None = None
    reported: str | None = None  # what the last status read said
    finished: threading.Event = field(default_factory=threading.Event)
    checked: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)  # worker let go
    cursor: duckdb.DuckDBPyConnection | None = None
    worker: threading.Thread | None = None  # the worker running it, once taken
    lock: threading.Lock = field(default_factory=threading.Lock)
    scan: tuple[float, float] | None = None  # its modelled scan: (monotonic start, seconds)

    @property
    def query(self) -> str:
        """The csql text."""
        return self.params["query"]

    def observe(self, waited: bool = False) -> str:
        """The state to report for one status read (see the module doc: no skipped states)."""
        with self.lock:
            ended = self.state in FINAL_STATES and (waited or self._stale())
            if self.state == CANCELLED or ended:
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
            if self.state == CANCELLED or (self.state in FINAL_STATES and self._stale()):
                return self.state
            return self.reported or PENDING

    def _stale(self) -> bool:
        return self.end_ms is not None and now_ms() - self.end_ms > STALE_MS

    def stop(self, reason: str) -> None:
        """End the job now as ``reason`` (CANCELLED or TIMEDOUT) and interrupt its DuckDB work."""
        with self.lock:
            if self.state in FINAL_STATES:
                return
            if reason == TIMEDOUT:
                limit = f"query timed out after {self.timeout_ms} ms (timeoutMs)"
                self.errors = [error_item(limit, code=408)]
            self.end(reason)
            cursor = self.cursor
        if cursor is not None:
            threading.Thread(
                target=self._interrupt_until_released, args=(cursor,), daemon=True
            ).start()

    def end(self, state: str) -> None:
        """Make ``state`` final (call with ``lock`` held)."""
        self.state, self.end_ms = state, now_ms()
        self.checked.set()
        self.finished.set()

    def _interrupt_until_released(self, cursor: duckdb.DuckDBPyConnection) -> None:
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
            if self.released.wait(0.02):
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
        if state in FINAL_STATES and self.end_ms is not None:
            body["endTime"] = self.end_ms
        done_pct, eta_ms = (100, 0) if state in FINAL_STATES else self._running_progress()
        body["progress"] = {"completionPct": done_pct if shown_start else 0}
        run_ms = (body.get("endTime") or now_ms()) - self.start_ms if shown_start else 0
        body["statistics"] = {"runTimeMs": run_ms, "cachePct": 0,
                              "etaMs": eta_ms if shown_start else 0}
        if state in (FAILED, TIMEDOUT) and self.errors:
            body["errors"] = self.errors
        return body


    def _running_progress(self) -> tuple[int, int]:
        """``(completionPct, etaMs)`` of a running job: 50 while DuckDB runs it, then up to 99
        as its modelled scan time passes (with the scan's time left)."""
        if self.scan is None:
            return 50, 0
        began, seconds = self.scan
        gone = min(1.0, (time.monotonic() - began) / seconds)
        return 50 + int(49 * gone), int(1000 * seconds * (1 - gone))


class JobManager:
    """Creates jobs, runs them on a few worker threads, keeps recent ones and their results."""

    def __init__(
        self,
        engine: Engine,
        job_delay_ms: float = 20,
        workers: int = 4,
        timeout_ms: int | None = None,
        retention: Retention | None = None,
        log: Callable[[str], None] | None = None,
        keep_jobs: int = 1000,
        scan_rate: float | None = None,
    ) -> None:
        self.engine, self.log = engine, log or (lambda line: None)
        self.job_delay_ms, self.timeout_ms = job_delay_ms, timeout_ms
        self.scan_rate = scan_rate or None
        self._scans: set[threading.Thread] = set()  # jobs in their modelled scan time
        self.results = retention or Retention(engine.drop)
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._jobs: dict[str, Job] = {}
        self._keep_jobs = keep_jobs
        self._lock = threading.Lock()
        self._counter = 0
        self._max_retired = workers
        self._retired: set[threading.Thread] = set()  # workers held by a job that ended
        self.workers: list[threading.Thread] = []
        for _ in range(workers):
            self._start_worker()

    def _start_worker(self) -> None:
        worker = threading.Thread(
            target=self._work, name=f"sandbox-job-{len(self.workers)}", daemon=True
        )
        self.workers.append(worker)
        worker.start()

    def submit(self, job_id: str | None, params: dict, timeout_ms: int | None) -> Job:
        """Register a job and queue it for a worker; ``DuplicateJob`` when the id exists."""
        with self._lock:
            if job_id is None:
                self._counter += 1
                job_id = f"sandbox-{self._counter:06d}-{now_ms()}"
            if job_id in self._jobs:
                raise DuplicateJob(job_id)
            limits = [limit for limit in (timeout_ms, self.timeout_ms) if limit]
            job = Job(job_id, params, min(limits) if limits else None)
            self._jobs[job_id] = job
            self._forget_old_jobs()
        self._queue.put(job)
        return job

    def forget(self, job: Job) -> None:
        """Drop ``job`` from the registry (a statement refused at creation leaves no job)."""
        job.stop(CANCELLED)
        with self._lock:
            if self._jobs.get(job.job_id) is job:
                del self._jobs[job.job_id]

    def get(self, job_id: str) -> Job | None:
        """The job with that id, if known."""
        with self._lock:
            return self._jobs.get(job_id)

    def newest_first(self) -> list[Job]:
        """Every known job, newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))

    def cancel(self, job: Job) -> None:
        """Cancel ``job`` now unless it already finished (its worker is interrupted)."""
        self._stop(job, CANCELLED)

    def _stop(self, job: Job, reason: str) -> None:
        """End ``job`` as ``reason``; replace its worker if DuckDB holds it past the grace."""
        job.stop(reason)
        if job.worker is not None and not job.released.is_set():
            threading.Thread(target=self._replace_if_held, args=(job,), daemon=True).start()

    def _replace_if_held(self, job: Job) -> None:
        """Retire ``job``'s worker and start another when it has not let go in time."""
        if job.released.wait(RELEASE_GRACE_S):
            return
        with self._lock:
            self._retired = {w for w in self._retired if w.is_alive()}
            if job.released.is_set() or len(self._retired) >= self._max_retired:
                return  # too many held already: this one keeps its place
            self._retired.add(job.worker)
        self.log(f"job {job.job_id}: its worker is still busy in DuckDB; started another")
        self._start_worker()

    def result_of(self, job: Job) -> ResultSet | None:
        """``job``'s result, unless retention has dropped it."""
        self.results.expire()
        return job.result

    def shutdown(self, timeout: float) -> bool:
        """Stop every job, then wait up to ``timeout`` s for the workers; True if they ended."""
        for job in self.newest_first():
            job.stop(CANCELLED)
        for _ in self.workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in self.workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        with self._lock:  # after the workers: they start scans; a scan ends once stopped
            scans = list(self._scans)
        for scan in scans:
            scan.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in [*self.workers, *scans])

    def _work(self) -> None:
        while not self._is_retired() and (job := self._queue.get()) is not None:
            try:
                self._run(job)
            except Exception as error:  # a bug must not leave the job RUNNING for ever
                problem = f"Internal error in the sandbox: {type(error).__name__}: {error}"
                self.log(f"job {job.job_id}: {problem}")
                self._fail(job, error_item(problem, code=500))
                with job.lock:
                    if job.state not in FINAL_STATES:
                        job.end(FAILED)

    def _is_retired(self) -> bool:
        with self._lock:
            return threading.current_thread() in self._retired

    def _run(self, job: Job) -> None:
        cursor = self.engine.cursor()
        with job.lock:
            if job.state in FINAL_STATES:  # stopped while it waited in the queue
                cursor.close()
                return
            job.cursor, job.worker = cursor, threading.current_thread()
        timer = self._timeout_timer(job)
        try:
            result = self._check_and_execute(job, cursor)
        except BaseException:  # the job fails in _work; its timeout no longer applies
            if timer is not None:
                timer.cancel()
            raise
        finally:
            with job.lock:  # nothing may interrupt a cursor once it is closed
                job.cursor = None
            job.released.set()
            cursor.close()
        scan_s = self._scan_seconds(result)
        if scan_s > 0:  # the worker lets go now; the job's time runs on without it
            self._finish_after_scan(job, result, timer, scan_s)
        else:
            self._finish_in_time(job, result, timer)

    def _scan_seconds(self, result: ResultSet | None) -> float:
        """The modelled scan time of a job with ``result`` (see the module doc: job time)."""
        if self.scan_rate is None or result is None:
            return 0.0
        return result.rows / self.scan_rate

    def _finish_after_scan(
        self, job: Job, result: ResultSet, timer: threading.Timer | None, scan_s: float
    ) -> None:
        """Keep ``job`` RUNNING ``scan_s`` more seconds on a sleeping thread, not the worker."""
        job.scan = (time.monotonic(), scan_s)
        scan = threading.Thread(
            target=self._scan, args=(job, result, timer, scan_s),
            name=f"sandbox-scan-{job.job_id}", daemon=True,
        )
        with self._lock:
            self._scans.add(scan)
        scan.start()

    def _scan(
        self, job: Job, result: ResultSet, timer: threading.Timer | None, scan_s: float
    ) -> None:
        try:
            job.finished.wait(scan_s)  # cut short by cancel, timeout or shutdown
            self._finish_in_time(job, result, timer)
        finally:
            with self._lock:
                self._scans.discard(threading.current_thread())

    def _finish_in_time(
        self, job: Job, result: ResultSet | None, timer: threading.Timer | None
    ) -> None:
        """Finish ``job`` (unless its timeout, a cancel or shutdown ended it first)."""
        if timer is not None:
            timer.cancel()
        self._finish(job, result)

    def _timeout_timer(self, job: Job) -> threading.Timer | None:
        if job.timeout_ms is None:
            return None
        timer = threading.Timer(job.timeout_ms / 1000, self._stop, args=(job, TIMEDOUT))
        timer.daemon = True
        timer.start()
        return timer

    def _check_and_execute(self, job: Job, cursor: duckdb.DuckDBPyConnection) -> ResultSet | None:
        try:
            prepared = self._check(job, cursor)
            if prepared is None or not self._start(job):
                return None
            result = self.engine.materialize(cursor, prepared)
            job.finished.wait(self.job_delay_ms / 2000)
            return result
        except duckdb.InterruptException:
            return None
        except duckdb.OutOfMemoryException:
            self._fail(job, error_item(self._memory_message()))
        except duckdb.Error as error:
            lines = str(error).strip().splitlines()
            self._fail(job, error_item(lines[0], "\n".join(lines[1:]).strip() or None))
        return None

    def _check(self, job: Job, cursor: duckdb.DuckDBPyConnection):
        """The prepared statement, or None when the check refused it (``job.rejection``)."""
        try:
            return self.engine.prepare(cursor, job.query)
        except QueryRejected as rejected:
            job.rejection = rejected
            self._fail(job, error_item(rejected.message, rejected.context))
            return None
        finally:
            job.checked.set()

    def _start(self, job: Job) -> bool:
        """Wait the rest of PENDING, then move to RUNNING; False when stopped meanwhile."""
        if job.finished.wait(self.job_delay_ms / 2000):
            return False
        with job.lock:
            if job.state in FINAL_STATES:
                return False
            job.state, job.start_ms = RUNNING, now_ms()
        return True

    def _fail(self, job: Job, error: dict) -> None:
        with job.lock:
            if job.state not in FINAL_STATES:
                job.errors = [error]

    def _memory_message(self) -> str:
        return (
            f"Out of memory: the query needs more than the sandbox's memory limit of "
            f"{self.engine.memory_limit_mb:,} MB (shared by the logs, running queries and kept "
            "results). Filter or aggregate more, or start the sandbox with a larger memory "
            "limit (memory_limit_mb, cortex-nb sandbox --memory-limit-mb)."
        )

    def _finish(self, job: Job, result: ResultSet | None) -> None:
        with job.lock:
            if job.state not in FINAL_STATES:
                job.result = result
                job.end(FAILED if job.errors or result is None else DONE)
            kept = result is not None and job.result is result
        if result is not None and not kept:
            self.engine.drop(result)
        if kept:
            self.results.keep(job)

    def _forget_old_jobs(self) -> None:
        while len(self._jobs) > self._keep_jobs:
            oldest = next(iter(self._jobs.values()))
            if oldest.state not in FINAL_STATES:
                break
            del self._jobs[oldest.job_id]
