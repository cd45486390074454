"""The one path from a job's results pages to typed columns.

Every consumer of a query's rows goes through ``typed_pages``: the in-memory frame
(``collect_result``, what ``query()``, ``fetch()`` and background queries return) and the
Parquet dataset (``results.datasets``). One ``FrameBuilder`` per job, made in one place
(``frame_builder``) from the page's schema, the catalog's types of the columns the SQL names,
and the options' ``structs`` and ``dtypes``: a frame and a dataset of the same query are typed
the same, pages of nulls included.

The job is anything with ``iter_pages()``, ``schema``, ``sql``, ``id``, ``limit``,
``rows_in_job``, ``pages`` and ``progress`` (``cortex_nb.query.job.QueryJob``); nothing here
sends a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cortex_nb.sql import guide
from cortex_nb.words import plural

if TYPE_CHECKING:
    from cortex_nb.options import QueryOptions
    from cortex_nb.results.frames import FrameBuilder

__all__ = ["Result", "collect_result", "frame_builder", "typed_pages"]


@dataclass
class Result:
    """A finished query: the DataFrame and how it was obtained."""

    df: Any
    job_id: str
    rows_in_job: int
    pages: int
    elapsed: float
    sql: str
    schema: dict[str, Any] | None = None
    traces: list[Any] = field(default_factory=list)

    def summary(self) -> str:
        """One line: rows, pages, time and job id."""
        return (
            f"{plural(len(self.df), 'row')} ({self.rows_in_job:,} in job), "
            f"{plural(self.pages, 'page')}, {self.elapsed:.2f} s, job {self.job_id}"
        )

    def plot(self, kind: str = "timeline", **options: Any) -> Any:
        """A chart of the rows: ``timeline``, ``bar`` or ``hist`` (``cortex_nb.plot``'s
        options: ``by``, ``value``, ``bucket``, ``top``, ``bins``, ``time``, ``title``)."""
        from cortex_nb.results.charts import plot  # pandas is loaded already: the frame is

        return plot(self.df, kind, **options)

    def __repr__(self) -> str:
        return f"<Result {self.summary()}>"

    def _repr_html_(self) -> str:
        return f"<p><code>{self.summary()}</code></p>" + self.df._repr_html_()


def frame_builder(job: Any, options: QueryOptions) -> FrameBuilder:
    """The builder a job's pages go through: its schema, the catalog's types, the options."""
    from cortex_nb.results.frames import FrameBuilder  # pandas loads when rows arrive

    return FrameBuilder(
        schema=job.schema, result_format=options.result_format, structs=options.structs,
        known_types=guide.known_types(job.sql) if job.sql else None, dtypes=options.dtypes,
    )


def typed_pages(
    job: Any, options: QueryOptions, *, frame: bool = False
) -> Iterator[FrameBuilder]:
    """Feed every wanted page of ``job`` into one builder; yield it after each page.

    Each page's rows are let go as soon as its columns are kept. The caller takes what it
    needs from the builder between pages (``take_table()`` for a dataset) or at the end
    (``to_dataframe()`` for a ``frame``: its Python objects are then built as pages come).
    """
    job.wait()
    builder = frame_builder(job, options)
    if frame:
        builder.objects_as_pages_come()
    try:
        for page in job.iter_pages():
            if page.arrow:
                builder.add_arrow_page(page.rows)
            else:
                builder.add_page(page.rows)
            page.rows = None
            yield builder
    finally:  # an interrupted frame's objects go back to the collector
        builder.close()


def collect_result(job: Any, options: QueryOptions) -> Result:
    """Every wanted row of ``job`` as one typed DataFrame, in a ``Result``."""
    builders = typed_pages(job, options, frame=True)
    with contextlib.closing(builders):
        builder = next(builders)  # a job always hands out its first page, rows or not
        for builder in builders:  # noqa: B007 (the same builder, fed one more page)
            pass
        df = builder.to_dataframe()
    if job.limit is not None and len(df) > job.limit:
        df = df.iloc[: job.limit]
    return Result(
        df=df, job_id=job.id, pages=job.pages,
        rows_in_job=job.rows_in_job if job.rows_in_job is not None else job.progress.rows,
        elapsed=job.progress.elapsed, sql=job.sql or "", schema=job.schema,
    )
