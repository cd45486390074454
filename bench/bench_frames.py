"""Micro-benchmark: results pages (JSON bytes) -> DataFrame, three ways, no network.

    python bench/bench_frames.py                    # 100k and 1M rows
    python bench/bench_frames.py --rows 100000      # one size

Traffic-like rows (~44 columns: IP and enum structs, interfaces, an ``*_if_details`` struct,
microsecond timestamps, ints with omitted nulls, int64 extremes, bools, a list column, omitted
null columns) are generated once into ``--data-dir`` as one results page per line (pageSize
10000, the whole results envelope). Each way then runs in a fresh subprocess that reads the pages
one by one (standing in for the download) and:

    floor  orjson.loads each page, nothing kept, no typing
    ours   orjson.loads + cortex_nb.results.frames.FrameBuilder.add_page, then to_dataframe()
    sdk    orjson.loads + all rows in one list + pandas.json_normalize (the official SDK's path,
           minus its second JSON decode of every page)

It prints wall seconds, rows/s, the ratio to the floor, the peak RSS above the subprocess's
baseline after imports, and the final frame's deep memory use. Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PAGE_ROWS = 10_000
T0 = 1_583_020_800_000_000  # 2020-03-01T00:00:00Z in microseconds
ENUMS = {
    "log_type": ["traffic"],
    "sub_type": ["start", "end", "drop", "deny"],
    "protocol": ["tcp", "udp", "icmp"],
    "action": ["allow", "deny", "drop", "reset-both"],
    "session_end_reason": ["tcp-fin", "aged-out", "tcp-rst-from-client", "policy-deny"],
    "url_category": ["any", "business-and-economy", "computer-and-internet-info", "unknown"],
}
APPS = ["ssl", "web-browsing", "dns", "google-base", "ms-update", "smtp", "ssh"]
TRAITS = ["able-to-transfer-data", "tunnel-other-application", "has-known-vulnerability"]
WAYS = ("floor", "ours", "sdk")


# -- data ------------------------------------------------------------------------------------


def ip(rng: random.Random) -> dict:
    """An IP struct: dotted value and 16-byte IPv4-mapped hex."""
    octets = (10, rng.randrange(256), rng.randrange(256), rng.randrange(1, 255))
    return {
        "value": ".".join(map(str, octets)),
        "hex": "00000000000000000000ffff" + "".join(f"{o:02x}" for o in octets),
    }


def enum(rng: random.Random, name: str) -> dict:
    """An enumeration struct ``{"id", "value"}``."""
    index = rng.randrange(len(ENUMS[name]))
    return {"id": index, "value": ENUMS[name][index]}


def traffic_row(rng: random.Random, i: int) -> dict:
    """One firewall.traffic row as the service sends it (null columns left out)."""
    t = T0 + i * 1000 + rng.randrange(1000)
    sent, received = rng.randrange(10**6), rng.randrange(10**7)
    row = {
        "time_generated": t,
        "log_time": t + 5_000_000,
        **{name: enum(rng, name) for name in ("log_type", "sub_type")},
        **{name: ip(rng) for name in ("source_ip", "dest_ip", "nat_source", "nat_dest")},
        "source_port": rng.randrange(1024, 65535),
        "dest_port": rng.choice([443, 80, 53, 22]),
        "nat_source_port": rng.randrange(1024, 65535),
        "nat_dest_port": 0,
        **{name: enum(rng, name) for name in ("protocol", "action")},
        "app": rng.choice(APPS),
        "app_category": "networking",
        "app_sub_category": "encrypted-tunnel",
        "rule_matched": f"allow-out-{rng.randrange(20)}",
        "from_zone": "trust",
        "to_zone": "untrust",
        "source_location": "10.0.0.0-10.255.255.255",
        "dest_location": "US",
        "bytes_sent": sent,
        "bytes_received": received,
        "bytes_total": sent + received,
        "packets_sent": rng.randrange(1000),
        "packets_received": rng.randrange(1000),
        "session_id": rng.randrange(10**6),
        "session_start_time": t - rng.randrange(10**8),
        "total_time_elapsed": rng.randrange(3600),
        **{name: enum(rng, name) for name in ("session_end_reason", "url_category")},
        "log_source_id": f"0079010{rng.randrange(100):05d}",
        "log_source_name": f"fw-{rng.randrange(5)}",
        "vsys": "vsys1",
        "customer_id": "1234567890",
        "is_nat": rng.random() < 0.3,
        "characteristics_of_app": rng.sample(TRAITS, rng.randrange(3)),
        "action_flags": rng.choice([-9223372036854775808, 0, 1]),
        "inbound_if_details": {
            "unit": 0,
            "type": {"id": 0, "value": "ethernet"},
            "slot": 1,
            "port": rng.randrange(8),
        },
        "inbound_interface": {"value": f"ethernet1/{rng.randrange(8)}", "hex": 1138183110656},
    }
    if rng.random() < 0.5:
        row["source_user"] = f"corp\\user{rng.randrange(500)}"
    if rng.random() < 0.1:
        row["dest_user"] = f"svc{rng.randrange(50)}"
    if rng.random() < 0.2:
        del row["session_id"]  # a null column, left out like the service does
    return row


def ensure_pages(data_dir: Path, rows: int, seed: int = 1) -> Path:
    """Write rows as results pages, one JSON envelope per line, unless already there."""
    import orjson

    path = data_dir / f"traffic_{rows}_{seed}.jsonl"
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        for start in range(0, rows, PAGE_ROWS):
            data = [traffic_row(rng, i) for i in range(start, min(rows, start + PAGE_ROWS))]
            cursor = None if start + PAGE_ROWS >= rows else f"c{start + PAGE_ROWS}"
            page = {
                "jobId": "bench",
                "state": "DONE",
                "resultFormat": "valuesDictionary",
                "rowsInJob": rows,
                "rowsInPage": len(data),
                "page": {"pageCursor": cursor, "result": {"data": data}},
            }
            out.write(orjson.dumps(page) + b"\n")
    partial.rename(path)
    return path


def iter_pages(path: Path) -> Iterator[bytes]:
    """The pages of a data file, one JSON document each (standing in for the download)."""
    with path.open("rb") as pages:
        yield from pages


# -- the three ways (each in its own subprocess) ----------------------------------------------


def run_floor(path: Path) -> dict:
    """Parse every page with orjson and keep nothing."""
    import orjson

    rows = 0
    for raw in iter_pages(path):
        rows += len(orjson.loads(raw)["page"]["result"]["data"])
    return {"rows": rows}


def run_ours(path: Path) -> dict:
    """Parse every page and hand its rows to FrameBuilder; build the frame."""
    import orjson

    from cortex_nb.results.frames import FrameBuilder

    builder = FrameBuilder()
    for raw in iter_pages(path):
        builder.add_page(orjson.loads(raw)["page"]["result"]["data"])
    return {"frame": builder.to_dataframe()}


def run_sdk(path: Path) -> dict:
    """Parse every page, collect all rows, then pandas.json_normalize them."""
    import orjson
    import pandas as pd

    rows: list = []
    for raw in iter_pages(path):
        rows.extend(orjson.loads(raw)["page"]["result"]["data"])
    return {"frame": pd.json_normalize(rows)}


def measure(way: str, path: Path) -> dict:
    """Run one way in this process; wall time, peak RSS above the baseline, frame size."""
    import orjson  # noqa: F401  (imports are part of the baseline, not of the run)
    import pandas as pd  # noqa: F401
    import pyarrow  # noqa: F401

    import cortex_nb.results.frames  # noqa: F401

    baseline = rss_mb()
    start = time.perf_counter()
    result = {"floor": run_floor, "ours": run_ours, "sdk": run_sdk}[way](path)
    seconds = time.perf_counter() - start
    frame = result.get("frame")
    return {
        "way": way,
        "rows": len(frame) if frame is not None else result["rows"],
        "columns": frame.shape[1] if frame is not None else None,
        "seconds": seconds,
        "peak_mb": peak_mb() - baseline,
        "frame_mb": frame.memory_usage(deep=True).sum() / 2**20 if frame is not None else None,
    }


def rss_mb() -> float:
    """Current resident set size in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- driver ---------------------------------------------------------------------------------


def run_in_subprocess(way: str, path: Path) -> dict:
    """Measure one way in a fresh interpreter (so its peak RSS is its own)."""
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, __file__, "--measure", way, str(path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{way} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_table(results: list[dict]) -> None:
    """Print the results as a Markdown table."""
    header = ("rows", "way", "wall s", "rows/s", "x floor", "peak RSS MB", "frame MB", "RSS/frame")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for size_results in _by_size(results):
        floor = next((r["seconds"] for r in size_results if r["way"] == "floor"), None)
        for r in size_results:
            frame = r["frame_mb"]
            cells = [
                f"{r['rows']:,}",
                r["way"],
                f"{r['seconds']:.2f}",
                f"{r['rows'] / r['seconds']:,.0f}",
                "-" if floor is None else f"{r['seconds'] / floor:.2f}",
                f"{r['peak_mb']:,.0f}",
                "-" if frame is None else f"{frame:,.0f}",
                "-" if frame is None else f"{r['peak_mb'] / frame:.2f}",
            ]
            print("| " + " | ".join(cells) + " |")


def _by_size(results: list[dict]) -> list[list[dict]]:
    """Results grouped by row count, in run order."""
    sizes = dict.fromkeys(r["rows"] for r in results)
    return [[r for r in results if r["rows"] == size] for size in sizes]


def main() -> None:
    """Generate the data if needed, measure each way, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--ways", nargs="+", choices=WAYS, default=list(WAYS))
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per way, interleaved; the table keeps the "
        "fastest wall time and the largest peak RSS (the machine may be shared)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "cortex_nb_bench"
    )
    parser.add_argument("--measure", nargs=2, metavar=("WAY", "PAGES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    results = []
    for rows in args.rows:
        started = time.perf_counter()
        path = ensure_pages(args.data_dir, rows)
        print(
            f"# {rows:,} rows: {path} ({path.stat().st_size / 2**20:,.0f} MB, "
            f"ready in {time.perf_counter() - started:.0f} s)",
            file=sys.stderr,
        )
        runs: dict[str, list[dict]] = {way: [] for way in args.ways}
        for _ in range(args.repeat):
            for way in args.ways:
                runs[way].append(run_in_subprocess(way, path))
                print(f"#   {way}: {runs[way][-1]['seconds']:.2f} s", file=sys.stderr)
        results.extend(best_of(way_runs) for way_runs in runs.values())
    print_table(results)


def best_of(runs: list[dict]) -> dict:
    """The fastest run, with the largest peak RSS seen over all runs."""
    best = dict(min(runs, key=lambda r: r["seconds"]))
    best["peak_mb"] = max(r["peak_mb"] for r in runs)
    return best


if __name__ == "__main__":
    main()
