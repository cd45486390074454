"""Benchmark: the same result pages as a DataFrame in each dtype mode, side by side.

    python bench/bench_dtypes.py                      # 1M rows
    python bench/bench_dtypes.py --rows 100000

The traffic-like pages of ``bench_frames.py`` (~44 columns, one list column, two structs kept
whole) go through the query path (``parse_page`` + ``FrameBuilder.add_arrow_page``, the first
page through ``add_page``) in a fresh subprocess per mode:

    objects   lists and structs as Python lists and dicts (``object`` columns)
    arrow     lists and structs as pandas ``ArrowDtype`` (one Arrow buffer per column)

Strings are Arrow-backed in both (pandas' ``str``). It prints the build time, the peak RSS
above the subprocess's baseline, the RSS still held with only the frame alive (what the
frame really costs: ``memory_usage(deep=True)`` counts a list or dict cell's container, not
what it holds), deep memory, and a few operations on the nested columns written the same way
for both modes (``apply`` as a user would, ``explode``, ``to_parquet``), with the ratio
``arrow / objects``. Not a test: run by hand.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_frames import ensure_pages, iter_pages, peak_mb, rss_mb

MODES = ("objects", "arrow")
OPERATIONS = ("apply len", "explode", "struct field", "to_parquet")


def build(path: Path, dtypes: str):
    """The frame of every page, built as a query builds it."""
    import orjson

    from cortex_nb.results.frames import FrameBuilder, parse_page

    builder = FrameBuilder(dtypes=dtypes)
    for number, raw in enumerate(iter_pages(path)):
        parsed = None if number == 0 else parse_page(raw)
        if parsed is None:
            builder.add_page(orjson.loads(raw)["page"]["result"]["data"])
        else:
            builder.add_arrow_page(parsed.rows)
    return builder.to_dataframe()


def operations(df) -> dict:
    """Seconds for common operations on the nested columns, the same code in both modes."""
    timed = {
        "apply len": lambda: df["characteristics_of_app"].apply(
            lambda v: 0 if v is None else len(v)
        ),
        "explode": lambda: df["characteristics_of_app"].explode().value_counts(),
        "struct field": lambda: df["inbound_if_details"].apply(
            lambda d: None if d is None else d["port"]
        ),
        "to_parquet": lambda: df.to_parquet(io.BytesIO()),
    }
    seconds = {}
    for name, run in timed.items():
        started = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - started
    return seconds


def measure(dtypes: str, path: Path) -> dict:
    """Build the frame in this process; time, memory, operations."""
    import orjson  # noqa: F401  (imports are part of the baseline)
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import cortex_nb.results.frames  # noqa: F401

    baseline = rss_mb()
    started = time.perf_counter()
    df = build(path, dtypes)
    seconds = time.perf_counter() - started
    peak = peak_mb() - baseline
    gc.collect()
    held = rss_mb() - baseline
    return {
        "mode": dtypes,
        "rows": len(df),
        "build_s": seconds,
        "peak_mb": peak,
        "held_mb": held,
        "deep_mb": df.memory_usage(deep=True).sum() / 2**20,
        **operations(df),
    }


def run_in_subprocess(dtypes: str, path: Path) -> dict:
    """Measure one mode in a fresh interpreter (so its peak RSS is its own)."""
    command = [sys.executable, __file__, "--measure", dtypes, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{dtypes} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    """One row per mode, then the ratio arrow / objects."""
    columns = ("build_s", "peak_mb", "held_mb", "deep_mb", *OPERATIONS)
    print(f"{'rows':>9} {'mode':<16}" + "".join(f"{c:>13}" for c in columns))
    by_mode = {r["mode"]: r for r in results}
    for r in results:
        print(f"{r['rows']:>9,} {r['mode']:<16}" + "".join(f"{r[c]:>13.2f}" for c in columns))
    if set(MODES) <= by_mode.keys():
        arrow, objects = by_mode["arrow"], by_mode["objects"]
        ratios = "".join(f"{arrow[c] / objects[c]:>13.2f}" for c in columns)
        print(f"{arrow['rows']:>9,} {'arrow / objects':<16}" + ratios)


def main() -> None:
    """Generate the pages if needed, measure each mode, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cortex_nb_bench"
    )
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "PAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    path = ensure_pages(args.data_dir, args.rows)
    print_table([run_in_subprocess(mode, path) for mode in MODES])


if __name__ == "__main__":
    main()
