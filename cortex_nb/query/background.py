"""Background queries: query jobs that run in worker threads while the notebook goes on.

``BackgroundQueries`` runs one session's background queries. ``submit(service, sql)`` (or
``QueryService.submit_query``) returns a ``BackgroundQuery`` handle at once and runs the job in
a daemon thread; ``take_up(service, job_id)`` (``QueryService.submit_fetch``) fetches the
results of a job that already exists the same way. At most ``max_running`` jobs run at once;
the others wait their turn, first come first served.

The handle is the job as the notebook sees it: ``id`` (chosen before the job is created, so it
can be shown, listed, cancelled and fetched from the start), ``name``, ``state`` (WAITING,
PENDING, RUNNING, DOWNLOADING, then DONE, FAILED or CANCELLED), ``progress``, ``done()``,
``wait(timeout)``, ``result(timeout)``, ``exception(timeout)`` and ``cancel()``. The
``on_update`` listener given at submit hears of every step and of the end, before anyone
waiting for the job wakes up; every failure is kept on the handle, none is lost.

The jobs share one ``BackoffGate`` (``cortex_nb.http.transport``): when the service answers any
request 429 with a ``Retry-After``, urllib3's ``Retry`` sleeps as it always does, and
``GatedRetry`` also holds the gate that long, so every background job waits before its next
request: they slow down together instead of taking turns at being refused.

At interpreter exit (a kernel shut down or restarted) running and waiting jobs are cancelled
on the service unless ``cancel_at_exit`` is False; a killed process cancels nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from cortex_nb.exceptions import (
    ConfigurationError,
    QueryCancelled,
    QueryStillRunning,
    ResultTooLarge,
)
from cortex_nb.http.transport import BackoffGate
from cortex_nb.options import QueryOptions
from cortex_nb.query.job import Progress, QueryJob, Result, too_large
from cortex_nb.query.replies import new_job_id
from cortex_nb.wire import CANCELLED, DONE, FAILED, JOBS, LIVE_STATES, PENDING, RUNNING, job_path
from cortex_nb.words import plural

if TYPE_CHECKING:
    from cortex_nb.query.service import QueryService

__all__ = [
    "FINAL_STATES",
    "BackgroundJobs",
    "BackgroundQueries",
    "BackgroundQuery",
]

# A handle's states: the service's job states (``cortex_nb.wire``) and two of its own, around
# them: WAITING for its turn before the job is created, DOWNLOADING pages once it is DONE. It
# ends DONE, FAILED (a TIMEDOUT job included) or CANCELLED.
WAITING, DOWNLOADING = "WAITING", "DOWNLOADING"
FINAL_STATES = frozenset({DONE, FAILED, CANCELLED})
_LIVE_STATES = LIVE_STATES | {WAITING}
DEFAULT_MAX_RUNNING = 4
KEEP_FINISHED = 32  # finished jobs listed (and their results kept) besides the running ones
EXIT_CANCEL_SECONDS = 3.0  # a restarting kernel gets about 5 s to exit before it is killed
_JOB_OPTIONS = frozenset(
    {"page_size", "result_format", "limit", "max_rows", "parallel", "timeout"}
)


# -- turns -------------------------------------------------------------------------------------
class _Slots:
    """At most ``limit`` jobs run at once; the others wait their turn, first come first served."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    def set_limit(self, limit: int) -> None:
        """Change the limit; waiting jobs start at once if it grew."""
        with self._changed:
            self.limit = limit
            self._changed.notify_all()

    def wake(self) -> None:
        """Let waiting jobs look again (one of them was cancelled)."""
        with self._changed:
            self._changed.notify_all()

    def waiting(self) -> int:
        """Jobs waiting for their turn."""
        return len(self._queue)

    @contextlib.contextmanager
    def held(self, stop: threading.Event) -> Iterator[bool]:
        """A slot while inside (True), or no slot (False) when ``stop`` was set while waiting.

        The wait ends when a running job ends, and every job has a deadline.
        """
        turn = object()
        with self._changed:
            self._queue.append(turn)
            while not stop.is_set() and not (self._queue[0] is turn and self.running < self.limit):
                self._changed.wait(1.0)
            self._queue.remove(turn)
            got = not stop.is_set()
            self.running += got
            self._changed.notify_all()
        try:
            yield got
        finally:
            if got:
                with self._changed:
                    self.running -= 1
                    self._changed.notify_all()


# -- the handle --------------------------------------------------------------------------------
class BackgroundQuery:
    """A query job running in a worker thread: its state and progress now, its result later."""

    def __init__(
        self, jobs: BackgroundQueries, service: QueryService, job_id: str, *, sql: str | None,
        name: str | None, options: QueryOptions,
        on_update: Callable[[BackgroundQuery], None] | None,
    ) -> None:
        self.id, self.sql, self.name = job_id, sql, name
        self.service = service
        self._jobs, self.options = jobs, options
        self._on_update = on_update
        self._stop, self._finished = threading.Event(), threading.Event()
        self._job: QueryJob | None = None
        self._progress = Progress(job_id=job_id, state=WAITING)
        self._result: Result | None = None
        self._error: Exception | None = None
        self._final: str | None = None
        self._submitted, self._ended = time.monotonic(), None
        self._thread = threading.Thread(
            target=self._run, name=f"cortex-bg-{name or job_id}", daemon=True
        )

    # -- what it is now ------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """WAITING (its turn), PENDING, RUNNING, DOWNLOADING, then DONE, FAILED or CANCELLED."""
        if self._final is not None:
            return self._final
        state = self.progress.state
        if state == DONE:
            return DOWNLOADING
        # a job that failed reports it a moment before the handle knows the outcome
        return state if state in _LIVE_STATES else RUNNING

    @property
    def progress(self) -> Progress:
        """The job's ``Progress``: state, rows and pages received, rows in the job."""
        return self._job.progress if self._job is not None else self._progress

    @property
    def elapsed(self) -> float:
        """Seconds since it was submitted (waiting included), until it ended."""
        return (self._ended or time.monotonic()) - self._submitted

    def done(self) -> bool:
        """True once it has ended (DONE, FAILED or CANCELLED) and its listener has run."""
        return self._finished.is_set()

    def line(self, how_to_stop: str = "cancel() stops it", advice: str | None = None) -> str:
        """One status line: state, rows, pages, time and job id; then the outcome (a guardrail
        refusal with ``advice`` instead of the library's, e.g. the magic's flags)."""
        if self._final == DONE and self._result is not None:
            where = f"done → {self.name}" if self.name else "done"
            return f"{where}: {self._result.summary()}"
        if self._final is not None:
            return f"{self._final.lower()}: {self.error_text(advice)}"
        if self.state == WAITING:
            text = (
                f"waiting     for its turn ({self._jobs.max_running} run at once), "
                f"{self.elapsed:.1f} s (job {self.id})"
            )
            return f"{text} · {how_to_stop}" if how_to_stop else text
        progress = dataclasses.replace(self.progress, elapsed=self.elapsed, done=False)
        return progress.line(how_to_stop)

    def error_text(self, advice: str | None = None) -> str:
        """The failure as one line naming the job ("" when there is none); a guardrail refusal
        says ``advice`` when given (what to do where the query was started)."""
        error = self._error
        if error is None:
            return ""
        if advice is not None and isinstance(error, ResultTooLarge):
            error = too_large(error.job_id or self.id, error.rows, error.max_rows,
                              error.cancelled, advice)
        text = " ".join(str(error).split()) or type(error).__name__
        if not isinstance(error, ConfigurationError | QueryCancelled) and self.id not in text:
            text += f" (job {self.id})"
        return text

    def __repr__(self) -> str:
        return f"<BackgroundQuery {self.line()}>"

    # -- waiting for it ------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it has ended (at most ``timeout`` seconds); True when it has."""
        return self._finished.wait(timeout)

    def result(self, timeout: float | None = None) -> Result:
        """Its ``Result`` (waiting at most ``timeout`` seconds); raises the error it ended with."""
        self._wait_or_raise(timeout)
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]  # ended without error: a result

    def exception(self, timeout: float | None = None) -> Exception | None:
        """The error it ended with, or None (waiting at most ``timeout`` seconds)."""
        self._wait_or_raise(timeout)
        return self._error

    def _wait_or_raise(self, timeout: float | None) -> None:
        if self._final is not None and threading.current_thread() is self._thread:
            return  # the listener, told of the end, reads the outcome before waiters wake
        if not self.wait(timeout):
            raise QueryStillRunning(
                f"Job {self.id} is still {self.progress.phase} after {timeout:g} s "
                f"({plural(self.progress.rows, 'row')} so far); wait longer or cancel it.",
                self.id,
            )

    # -- stopping it ---------------------------------------------------------------------------
    def cancel(self) -> bool:
        """Cancel it: at once while it waits its turn, else on the service and in its thread.

        True when the cancel was sent; False when it had already ended.
        """
        if self._final is not None:
            return False
        self._stop.set()
        self._jobs.wake()
        job = self._job
        if job is not None:
            job.cancel()
        return True

    # -- the worker ----------------------------------------------------------------------------
    def start(self) -> BackgroundQuery:
        """Start the worker thread (``BackgroundQueries`` does this)."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with self._jobs.slot(self._stop) as got:
                if not got:
                    raise QueryCancelled(f"Job {self.id} was cancelled before it started.", self.id)
                if self.options.split is not None:
                    result = self._run_split()
                else:
                    result = self.service.run(
                        self._start_job, self.options,
                        cache_text=self.sql or f"-- job {self.id}", cancel=self.sql is not None,
                    )
        except Exception as exc:  # kept for the handle and the listener: no failure is lost
            self._end(None, exc)
        else:
            self._end(result, None)

    def _run_split(self) -> Any:
        """A split query (``query.fanout``): its windows' jobs run inside this one turn."""
        from cortex_nb.query.fanout import FanOut  # beside this module, which it does not need

        fan_out = FanOut(self.service, self.sql or "", self.options,
                         progress=self._on_progress, run_id=self.id)
        self._job = fan_out  # type: ignore[assignment]  # its progress and cancel() serve
        if self._stop.is_set():
            fan_out.cancel()
        return fan_out.run()

    def _start_job(self) -> QueryJob:
        """Create the job (or take up the existing one), once the shared backoff allows."""
        self._jobs.gate.wait(self._stop)
        if self._stop.is_set():
            raise QueryCancelled(f"Job {self.id} was cancelled before it started.", self.id)
        self._progress.state = PENDING
        self._notify()
        follow = {"progress": self._on_progress, "pace": self._jobs.gate.pacer(self._stop)}
        if self.sql is None:
            job = self.service.job(self.id, self.options, **follow)
        else:
            job = self.service.start(self.sql, self.options, job_id=self.id, **follow)
        self.id, self._job = job.id, job
        if self._stop.is_set():  # cancelled while the job was being created
            job.cancel()
        return job

    def _on_progress(self, progress: Progress) -> None:
        if not progress.done:  # the end is told once, with its outcome, by _end
            self._notify()

    def _end(self, result: Result | None, error: Exception | None) -> None:
        self._result, self._error, self._ended = result, error, time.monotonic()
        cancelled = isinstance(error, QueryCancelled)
        self._final = DONE if error is None else CANCELLED if cancelled else FAILED
        self._notify()  # the listener stores the result before anyone waiting wakes up
        self._finished.set()
        self._jobs.forget_old()

    def _notify(self) -> None:
        if self._on_update is not None:
            with contextlib.suppress(Exception):  # a display that fails must not stop the job
                self._on_update(self)


# -- the session's jobs ------------------------------------------------------------------------
class BackgroundQueries:
    """A session's background queries: at most ``max_running`` at once, listed, cancelled.

    ``cancel_at_exit`` (default True): running and waiting jobs are cancelled on the service
    when the interpreter exits (a kernel shut down or restarted).
    """

    def __init__(self, max_running: int = DEFAULT_MAX_RUNNING, cancel_at_exit: bool = True):
        self.gate = BackoffGate()
        self.cancel_at_exit = cancel_at_exit
        self._slots = _Slots(_checked_limit(max_running))
        self._jobs: list[BackgroundQuery] = []
        self._lock = threading.Lock()
        self._exit_hook = False

    @property
    def max_running(self) -> int:
        """How many background jobs run at once; the others wait their turn."""
        return self._slots.limit

    @max_running.setter
    def max_running(self, limit: int) -> None:
        self._slots.set_limit(_checked_limit(limit))

    # -- starting ------------------------------------------------------------------------------
    def submit(
        self, service: QueryService, sql: str, options: QueryOptions | None = None, *,
        name: str | None = None, job_id: str | None = None,
        on_update: Callable[[BackgroundQuery], None] | None = None,
    ) -> BackgroundQuery:
        """Run ``sql`` in a worker thread once its turn comes; return its handle at once.

        ``options`` as ``QueryService.query`` (its result is the handle's: a ``Result``, or a
        ``Dataset`` with ``to``); ``on_update(handle)`` is called after every step and at the
        end.
        """
        return self._launch(service, job_id or new_job_id(), sql, name, options, on_update)

    def take_up(
        self, service: QueryService, job_id: str, options: QueryOptions | None = None, *,
        name: str | None = None, on_update: Callable[[BackgroundQuery], None] | None = None,
    ) -> BackgroundQuery:
        """Fetch the results of the existing job ``job_id`` in a worker thread; the handle."""
        job_path(JOBS, job_id)  # a bad id fails here, in the caller's thread
        return self._launch(service, job_id, None, name, options, on_update)

    def _launch(
        self, service: QueryService, job_id: str, sql: str | None, name: str | None,
        options: QueryOptions | None, on_update: Any,
    ) -> BackgroundQuery:
        options = options if options is not None else QueryOptions()
        # a dataset that cannot be written fails here, at once (one being resumed may be there)
        if options.to is not None and not options.resume:
            from cortex_nb.results.datasets import check_target  # pyarrow, lazily

            check_target(options.to, options.overwrite)
        job = BackgroundQuery(
            self, service, job_id, sql=sql, name=name, options=options, on_update=on_update
        )
        with self._lock:
            self._jobs.append(job)
            if not self._exit_hook:
                atexit.register(self._at_exit)
                self._exit_hook = True
        return job.start()

    @contextlib.contextmanager
    def slot(self, stop: threading.Event) -> Iterator[bool]:
        """A turn to run (see ``_Slots.held``)."""
        with self._slots.held(stop) as got:
            yield got

    def wake(self) -> None:
        """Let waiting jobs look again."""
        self._slots.wake()

    # -- finding, listing, cancelling ----------------------------------------------------------
    def __iter__(self) -> Iterator[BackgroundQuery]:
        with self._lock:
            return iter(list(self._jobs))

    def __len__(self) -> int:
        return len(self._jobs)

    def find(self, key: str) -> BackgroundQuery | None:
        """The job with that id, else the latest one with that name, else None."""
        jobs = list(self)
        by_id = [job for job in jobs if job.id == key]
        by_name = [job for job in jobs if job.name == key]
        return (by_id or by_name or [None])[-1]

    def active(self) -> list[BackgroundQuery]:
        """The jobs that have not ended (running or waiting their turn)."""
        return [job for job in self if not job.done()]

    def cancel_all(self) -> list[BackgroundQuery]:
        """Cancel every job that has not ended; the ones a cancel was sent to."""
        return [job for job in self.active() if job.cancel()]

    def forget_old(self, keep: int = KEEP_FINISHED) -> None:
        """Forget the oldest finished jobs beyond ``keep`` (running ones always stay)."""
        with self._lock:
            finished = [job for job in self._jobs if job.done()]
            old = {id(job) for job in finished[: max(0, len(finished) - keep)]}
            self._jobs = [job for job in self._jobs if id(job) not in old]

    def to_frame(self) -> Any:
        """The jobs as a DataFrame: name, state, rows, pages, elapsed, job id, error, query."""
        import pandas as pd

        columns = ["name", "state", "rows", "pages", "elapsed_s", "job_id", "error", "query"]
        rows = [
            {
                "name": job.name or "", "state": job.state, "rows": job.progress.rows,
                "pages": job.progress.pages, "elapsed_s": round(job.elapsed, 1),
                "job_id": job.id, "error": job.error_text(), "query": job.sql or "(fetch)",
            }
            for job in self
        ]
        return pd.DataFrame(rows, columns=columns)

    # -- the end of the process ----------------------------------------------------------------
    def _at_exit(self) -> None:
        """Cancel what still runs (when ``cancel_at_exit``), within a few seconds at most."""
        if not self.cancel_at_exit:
            return
        threads = [
            threading.Thread(target=job.cancel, daemon=True) for job in self.active()
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + EXIT_CANCEL_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _checked_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(
            f"The number of background jobs that run at once must be at least 1, not {limit!r}."
        )
    return limit


BackgroundJobs = BackgroundQueries  # its old name (a "job" is the service's query job)
