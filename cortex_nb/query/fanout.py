"""A query split by time: one server job per window, a few at once, put back together.

``run_split(service, sql, options)`` is what ``query(sql, split="1h", since="7d")``,
``%%cortex --split 1h --since 7d`` and their ``--bg`` forms run. The statement is checked
first (``sql.splitting``: nothing is sent for a result that cannot be concatenated), the
window is cut (``query.windows``), and each window becomes an ordinary ``QueryJob`` with the
window's time filter (``sql.timefilter.restrict``), started through ``QueryService`` and paged
in parallel as any job is. At most ``max_running`` windows run at once (the background limit),
all waiting on the service's shared 429 gate.

``split="auto"`` starts from a guess (``windows.auto_step``) and cuts again, in halves, every
window whose first page says it holds more than the per-window budget (``max_rows``, at most
``WINDOW_ROWS``). The guardrail still applies to the total in memory; ``to=DIR`` streams every
window into one dataset instead (``results.datasets.WindowedDataset``), which ``resume=True``
continues after an interruption, fetching only the windows it lacks.

A window that fails is tried again (``RETRIES`` times), then reported by its time range; the
other windows are kept, and the run raises ``WindowsMissing`` carrying them: a partial frame
never passes for a whole one. A request the service refuses (a 4xx: the statement is wrong)
stops the whole run at once with the service's message: every window would be refused alike.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cortex_nb.exceptions import (
    ConfigurationError,
    CortexError,
    QueryCancelled,
    QueryError,
    ResultTooLarge,
)
from cortex_nb.options import QueryOptions
from cortex_nb.query.job import Progress, QueryJob, Result, too_large
from cortex_nb.query.replies import new_job_id
from cortex_nb.query.windows import Window, auto_step, gaps, plan_windows
from cortex_nb.sql.splitting import NotSplittable, SplitPlan, check_splittable
from cortex_nb.sql.timefilter import parse_duration, restrict
from cortex_nb.wire import CANCELLED, DONE, FAILED, PENDING, RUNNING
from cortex_nb.words import plural

if TYPE_CHECKING:
    from cortex_nb.query.service import QueryService

__all__ = ["RETRIES", "WINDOW_ROWS", "FanOut", "SplitProgress", "SplitResult",
           "WindowsMissing", "run_split"]

WINDOW_ROWS = 1_000_000  # --split auto cuts a window again above this many rows (or max_rows)
RETRIES = 2  # a failed window is tried this many more times before it is reported missing
MIN_WINDOW = timedelta(minutes=1)  # --split auto cuts no window shorter than this
_WINDOW_ONLY = {"split": None, "resume": False, "between": None, "since": None, "until": None,
                "to": None, "overwrite": False}


@dataclass
class SplitProgress(Progress):
    """Where a split query stands: windows done, running and in all, rows, rate."""

    windows: int = 0
    windows_done: int = 0
    windows_running: int = 0
    windows_failed: int = 0
    jobs: int = 0

    def line(self, how_to_stop: str = "interrupt the kernel to stop") -> str:
        """One line: windows done/running/total, rows and their rate, time."""
        rate = self.rows / self.elapsed if self.elapsed > 0 else 0.0
        failed = f", {self.windows_failed} failed" if self.windows_failed else ""
        text = (
            f"{self.phase:<11} windows {self.windows_done}/{self.windows} done, "
            f"{self.windows_running} running{failed}, {plural(self.rows, 'row')} "
            f"({rate:,.0f} rows/s), {self.elapsed:.1f} s ({plural(self.jobs, 'job')})"
        )
        return text if self.done or not how_to_stop else f"{text} · {how_to_stop}"

    @property
    def phase(self) -> str:
        """The run in a word: running, done, failed, cancelled."""
        if self.state == DONE:
            return "done" if self.done else "running"
        return super().phase


@dataclass(repr=False)  # Result's one-line repr
class SplitResult(Result):
    """A split query's frame (the windows in time order) and the windows it came from."""

    windows: list[Window] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    missing: dict[Window, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: rows, windows, jobs, pages, time (and the windows missing)."""
        missing = f", {len(self.missing)} missing" if self.missing else ""
        return (
            f"{plural(len(self.df), 'row')} from {plural(len(self.windows), 'window')}"
            f"{missing} ({plural(len(self.job_ids), 'job')}), {plural(self.pages, 'page')}, "
            f"{self.elapsed:.2f} s"
        )


class WindowsMissing(QueryError):
    """Some windows of a split query failed every try; ``result`` holds the others'
    (a ``SplitResult``, or None when they went to a dataset that ``resume`` continues)."""

    def __init__(self, message: str, result: SplitResult | None, missing: dict) -> None:
        super().__init__(message)
        self.result, self.missing = result, missing


class _TotalTooLarge(Exception):
    """The windows' rows together pass the guardrail (raised in a window's thread)."""


def run_split(
    service: QueryService, sql: str, options: QueryOptions, *,
    progress: Callable[[Progress], None] | None = None, **kwargs: Any,
) -> Any:
    """Run ``sql`` split by ``options.split`` over its window: a ``SplitResult``, or with
    ``to`` the ``Dataset`` (see the module's docstring)."""
    return FanOut(service, sql, options, progress=progress, **kwargs).run()


class FanOut:
    """One split query: its windows, their jobs, its progress; ``run()`` once, ``cancel()``
    from any thread."""

    def __init__(
        self, service: QueryService, sql: str, options: QueryOptions, *,
        progress: Callable[[Progress], None] | None = None, window_rows: int = WINDOW_ROWS,
        now: datetime | None = None, run_id: str | None = None,
        say: Callable[[str], Any] | None = None,
    ) -> None:
        self.service, self.sql, self.options = service, sql, options
        self.plan = check_splittable(sql)
        self.say = say or (lambda line: None)
        if note := self.plan.note():
            self.say(note)
        self.span: tuple[datetime, datetime] = options.window(now)  # type: ignore[assignment]
        self.step = window_step(self.plan, options.split, self.span)
        self.auto = options.split == "auto"
        if options.limit is not None and options.to is not None:
            raise ConfigurationError(
                "--limit with --split --to would cut every window's rows: drop --limit (the "
                "dataset holds them all), or run it without --to."
            )
        self.budget = _least(window_rows, options.max_rows) if self.auto else options.guardrail
        self.parallel = service.background.max_running
        self.gate = shared_gate(service)
        self.callback = progress
        self.id = run_id or new_job_id()
        self.progress = SplitProgress(job_id=self.id, state=PENDING)
        self.sink: Any = None  # the dataset, opened when the run starts
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._running: dict[Window, QueryJob] = {}
        self._finished_rows = self._finished_pages = 0
        self._reserved: dict[str, int] = {}  # rows each counted job brings (the guardrail's)
        self._job_ids: list[str] = []
        self._started = time.monotonic()

    # -- planning ------------------------------------------------------------------------------
    def windows(self) -> list[Window]:
        """The windows still to run: the whole span, or what a dataset being resumed lacks."""
        start, end = self.span
        done = [Window(s, e) for s, e in self.sink.windows_done()] if self.sink else []
        return [w for s, e in gaps(start, end, done) for w in plan_windows(s, e, self.step)]

    def _open_sink(self) -> Any:
        if self.options.to is None:
            return None
        from cortex_nb.results.datasets import WindowedDataset  # pyarrow, lazily

        sink = WindowedDataset(
            self.options.to, sql=self.sql, span=self.span, split=str(self.options.split),
            resume=self.options.resume, overwrite=self.options.overwrite,
        )
        self.span = sink.span  # a resumed run continues the span it recorded
        return sink

    # -- running -------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run every window; the frame (``SplitResult``) or the ``Dataset``."""
        self.sink = self._open_sink()
        if self.sink is not None and self.sink.complete:  # resumed after the last window
            self.say(f"Every window of {self.sink.target} is written already: nothing to fetch.")
            return self.sink.dataset()
        self.step = window_step(self.plan, self.options.split, self.span)  # the span resumed
        with self.service.traces.collect() as seen:
            try:  # an interrupt from the first progress line on ends as a cancel
                windows = self.windows()
                done = len(self.sink.windows_done()) if self.sink else 0
                self.progress.windows, self.progress.windows_done = len(windows) + done, done
                self._report(RUNNING)
                results, missing = self._run_all(windows)
            except KeyboardInterrupt:
                self._report(CANCELLED, done=True)
                raise self._cancelled(self.progress.windows_done) from None
            except BaseException as exc:
                self._report(CANCELLED if isinstance(exc, QueryCancelled) else FAILED, done=True)
                raise
        traces = [t for t in seen if any(j in t.url or j in (t.request_body or "")
                                          for j in self._job_ids)]
        return self._finish(results, missing, traces)

    def cancel(self) -> bool:
        """Stop: cancel every running window's job on the service; True when any was told."""
        self._stop.set()
        with self._lock:
            running = list(self._running.values())
        return any([job.cancel() for job in running])

    def _run_all(self, windows: list[Window]) -> tuple[dict[Window, Any], dict[Window, str]]:
        """Every window's outcome (a ``Result`` or the dataset's record), and the windows
        that failed every try, with why."""
        pending, done, missing, tries = deque(windows), {}, {}, {}
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="cortex-window") as pool:
            running: dict[Future, Window] = {}
            try:
                while (pending or running) and not self._stop.is_set():
                    while pending and len(running) < self.parallel:
                        window = pending.popleft()
                        running[pool.submit(self._one, window)] = window
                    self._report(RUNNING)
                    finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for future in finished:
                        window = running.pop(future)
                        self._settle(window, future, pending, done, missing, tries)
            except BaseException:
                self.cancel()
                raise
        if self._stop.is_set():
            raise self._cancelled(len(done))
        return done, missing

    def _settle(
        self, window: Window, future: Future, pending: deque, done: dict, missing: dict,
        tries: dict,
    ) -> None:
        """What a window's end means: kept, cut again, tried again, or reported missing."""
        error = future.exception()
        if error is None:
            done[window] = future.result()
            self.progress.windows_done += 1
        elif isinstance(error, ResultTooLarge) and self._can_cut(window):
            pending.extendleft(reversed(window.halves()))  # the halves run next, in order
            self.progress.windows += 1
        elif isinstance(error, ResultTooLarge | _TotalTooLarge):
            raise self._too_large(error)
        elif isinstance(error, QueryCancelled) and self._stop.is_set():
            return
        elif _refused(error):  # the statement, not the window: every window would fail so
            self.cancel()
            raise error
        elif isinstance(error, CortexError):
            tries[window] = tries.get(window, 0) + 1
            if tries[window] <= RETRIES:
                pending.appendleft(window)  # tried again next, while the rest waits
            else:
                missing[window] = " ".join(str(error).split())
                self.progress.windows_failed += 1
        else:
            raise error

    def _can_cut(self, window: Window) -> bool:
        least = max(self.plan.bucket or timedelta(0), MIN_WINDOW)
        return self.auto and window.length / 2 >= least and window.length.total_seconds() >= 2

    def _one(self, window: Window) -> Any:
        """One window, in a worker thread: its job started, counted, then its rows."""
        options = self.options.replace(**_WINDOW_ONLY, max_rows=self._budget_for(window))
        sql = restrict(self.sql, window.start, window.end)
        job: QueryJob | None = None
        ok = False

        def make_job() -> QueryJob:
            nonlocal job
            pace = self.gate.pacer(self._stop)  # the shared 429 gate, within the job's deadline
            job = self.service.start(sql, options, progress=self._on_job, pace=pace)
            self._track(window, job)
            job.wait()  # the first page says how many rows: the guardrail counts them all
            self._reserve(job)
            return job

        try:
            if self.sink is None:
                outcome = self.service.run(make_job, options, cache_text=sql)
            else:
                outcome = self.sink.write_window(make_job(), window, options)
            ok = True
            return outcome
        finally:
            self._untrack(window, job, ok)

    def _budget_for(self, window: Window) -> int | None:
        """The rows a window's job may have: the budget, unless it cannot be cut again and
        streams to disk."""
        if self.sink is not None and not self._can_cut(window):
            return None
        return self.budget

    # -- bookkeeping (any thread) --------------------------------------------------------------
    def _track(self, window: Window, job: QueryJob) -> None:
        with self._lock:
            self._running[window] = job
            self._job_ids.append(job.id)
            self.progress.jobs += 1
        if self._stop.is_set():
            job.cancel()

    def _untrack(self, window: Window, job: QueryJob | None, ok: bool) -> None:
        """A window's job ended: its rows count as received, or (it failed) no longer count."""
        if job is None:
            return
        with self._lock:
            if self._running.get(window) is job:
                del self._running[window]
            if ok:
                self._finished_rows += job.progress.rows
                self._finished_pages += job.progress.pages
            else:
                self._reserved.pop(job.id, None)

    def _reserve(self, job: QueryJob) -> None:
        """Count a window's rows towards the guardrail; past it, stop everything."""
        guardrail = self.options.guardrail
        with self._lock:
            self._reserved[job.id] = job.wanted_rows
            total = sum(self._reserved.values())
            over = guardrail is not None and total > guardrail
        if over:
            job.cancel()
            raise _TotalTooLarge(total)

    def _on_job(self, progress: Progress) -> None:
        self._report(RUNNING)

    def _report(self, state: str, done: bool = False) -> None:
        p = self.progress
        with self._lock:
            running = list(self._running.values())
            live = [j.progress for j in running if not j.progress.done]
            p.rows = self._finished_rows + sum(progress.rows for progress in live)
            p.pages = self._finished_pages + sum(progress.pages for progress in live)
            p.windows_running = len(running)
        p.state, p.done, p.elapsed = state, done, time.monotonic() - self._started
        if self.callback is not None:
            self.callback(p)

    # -- the end -------------------------------------------------------------------------------
    def _finish(self, done: dict[Window, Any], missing: dict[Window, str], traces: list) -> Any:
        if self.sink is not None:
            if missing:
                raise WindowsMissing(self._missing_text(missing, written=True), None, missing)
            dataset = self.sink.finish()
            self._report(DONE, done=True)
            return dataset
        result = self._joined(done, missing, traces)
        if missing:
            raise WindowsMissing(self._missing_text(missing, written=False), result, missing)
        self._report(DONE, done=True)
        return result

    def _joined(self, done: dict[Window, Result], missing: dict, traces: list) -> SplitResult:
        """The windows' frames in time order (newest first when the query orders so)."""
        import pandas as pd

        windows = sorted(done, reverse=self.plan.descending)
        results = [done[w] for w in windows]
        frames = [r.df for r in results if len(r.df)] or [r.df for r in results[:1]]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else (
            frames[0].reset_index(drop=True) if frames else pd.DataFrame())
        if self.options.limit is not None:
            df = df.iloc[: self.options.limit]
        return SplitResult(
            df=df, job_id=self.id, rows_in_job=sum(r.rows_in_job for r in results),
            pages=sum(r.pages for r in results), elapsed=time.monotonic() - self._started,
            sql=self.sql, schema=results[0].schema if results else None, traces=traces,
            windows=sorted(done), job_ids=list(self._job_ids), missing=missing,
        )

    def _missing_text(self, missing: dict[Window, str], written: bool) -> str:
        first = min(missing)
        ranges = ", ".join(w.label() for w in sorted(missing)[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        kept = (
            "the others are written to the unfinished dataset: run it again with --resume "
            "(resume=True) to fetch only the missing windows"
            if written else
            "the rows of the others are in the error's .result (and in the -o variable)"
        )
        return (
            f"{plural(len(missing), 'window')} of {self.progress.windows} failed "
            f"{RETRIES + 1} tries: {ranges}{more} ({missing[first]}); {kept}."
        )

    def _too_large(self, error: BaseException) -> ResultTooLarge:
        self.cancel()
        if isinstance(error, ResultTooLarge):
            rows, job_id = error.rows, error.job_id or self.id
        else:
            rows, job_id = int(error.args[0]), self.id
        return too_large(job_id, rows, self.options.max_rows or 0, True)

    def _cancelled(self, windows_done: int) -> QueryCancelled:
        kept = (" (they are kept: continue with --resume)" if self.sink is not None
                else "")
        return QueryCancelled(
            f"Cancelled the split query: {windows_done} of {self.progress.windows} windows had "
            f"come back{kept}; the running windows' jobs were cancelled on the service.",
            self.id,
        )


def window_step(plan: SplitPlan, split: Any, span: tuple[datetime, datetime]) -> timedelta:
    """The windows' length: ``split``, or auto's first guess; ``NotSplittable`` when it would
    cut a time bucket of the statement in two."""
    bucket = plan.bucket or timedelta(0)
    if split == "auto":
        return auto_step(*span, max(bucket, MIN_WINDOW))
    step = parse_duration(split)
    if bucket and step % bucket:
        raise NotSplittable(
            f"--split {split} would cut the query's time buckets ({_span_words(bucket)}) in "
            f"two: split by a multiple of {_span_words(bucket)}."
        )
    return step


def preview(sql: str, options: QueryOptions, now: datetime | None = None) -> list[str]:
    """The statements a split query would send, one per window (what a dry run shows); the
    statement is refused first, as the run would refuse it."""
    plan = check_splittable(sql)
    span = options.window(now)
    step = window_step(plan, options.split, span)  # type: ignore[arg-type]
    return [restrict(sql, w.start, w.end) for w in plan_windows(*span, step)]  # type: ignore[misc]


def _refused(error: BaseException) -> bool:
    """Whether the service refused the request itself (a 4xx other than 408 and 429): a
    mistake in the statement or the request, which no retry and no other window escapes."""
    details = getattr(error, "details", None)
    status = details.get("status") if isinstance(details, dict) else None
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


def _least(a: int | None, b: int | None) -> int | None:
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


def _span_words(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds and seconds % size == 0:
            return plural(seconds // size, unit)
    return plural(seconds, "second")


def shared_gate(service: QueryService) -> Any:
    """The 429 gate the client's retries hold (``http.transport.GatedRetry``), else the
    background queries' own: every window waits on the one the service's refusals close."""
    retry = getattr(getattr(service.client, "adapter", None), "max_retries", None)
    gate = getattr(retry, "gate", None)
    return gate if gate is not None else service.background.gate
