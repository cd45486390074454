"""Query results streamed to a hive-partitioned Parquet dataset, against the real sandbox over
HTTP: every row, read back equal, partitioned by hour, a manifest with checksums, nothing that
looks complete after an interrupt, no overwriting without asking."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from cortex_nb import ConfigurationError, CortexError, Credentials, HTTPClient, QueryCancelled
from cortex_nb.cli import main
from cortex_nb.query.service import QueryService
from cortex_nb.results.datasets import MANIFEST, Dataset, open_dataset
from tests.conftest import SANDBOX_ROWS
from tests.test_guardrail import ip, run  # noqa: F401  (ip: a shell connected to the sandbox)

KEY = ["time_generated", "session_id", "source_port"]


@pytest.fixture()
def service(sandbox) -> QueryService:
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    return QueryService(client=client)


def traffic(sandbox, rest: str = "") -> str:
    return f"SELECT * FROM `{sandbox.instance_id}.firewall.traffic` {rest}".strip()


def in_order(df: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def creates(sandbox) -> int:
    return sum(1 for r in sandbox.requests if r.method == "POST" and r.path == "/query/v2/jobs")


@pytest.mark.parametrize("dtypes", ["arrow", "objects"])
def test_a_streamed_dataset_has_every_row_and_reads_back_equal(sandbox, service, tmp_path, dtypes):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week", page_size=500)
    assert isinstance(dataset, Dataset)
    assert dataset.rows == dataset.rows_in_job == SANDBOX_ROWS
    assert sum(r["rows"] for r in dataset.manifest["files"]) == SANDBOX_ROWS
    assert dataset.duckdb(duckdb.connect()).aggregate("count(*)").fetchall() == [(SANDBOX_ROWS,)]
    assert pads.dataset(tmp_path / "week", partitioning="hive").count_rows() == SANDBOX_ROWS
    frame = service.query(traffic(sandbox), dtypes=dtypes).df
    back = dataset.to_pandas(dtypes=dtypes)
    assert list(back.columns) == list(frame.columns) and (back.dtypes == frame.dtypes).all()
    pd.testing.assert_frame_equal(in_order(back, KEY), in_order(frame, KEY))


def test_files_are_partitioned_by_the_hour_of_time_generated(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week", page_size=700)
    assert dataset.partitioning == ["date", "hour"]
    arrow = dataset.arrow()
    assert arrow.count_rows() == SANDBOX_ROWS and {"date", "hour"} <= set(arrow.schema.names)
    for path in dataset.files:
        date, hour = path.parent.parent.name, path.parent.name
        times = pq.read_table(path, columns=["time_generated"]).column(0).to_pandas()
        assert date == "date=" + times.min().strftime("%Y-%m-%d") == "date=" + times.max().strftime("%Y-%m-%d")
        assert hour == f"hour={times.min().hour}" == f"hour={times.max().hour}"
        assert "date" not in pq.read_schema(path).names  # keys live in the paths only
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    relation = dataset.duckdb(con, view="week")
    assert {"date", "hour"} <= set(relation.columns)
    wrong = con.execute("SELECT count(*) FROM week WHERE hour <> hour(time_generated) "
                        "OR date <> CAST(time_generated AS DATE)").fetchone()[0]
    assert wrong == 0


def test_the_manifest_names_the_query_and_every_file_with_rows_and_checksum(sandbox, service, tmp_path):
    sql = traffic(sandbox)
    dataset = service.query(sql, to=tmp_path / "week", page_size=1000)
    manifest = json.loads((tmp_path / "week" / MANIFEST).read_text())
    assert manifest["sql"] == sql and manifest["job_id"].startswith("cortexnb-")
    assert manifest["rows_in_job"] == SANDBOX_ROWS and manifest["created"].endswith("+00:00")
    on_disk = sorted(p.relative_to(tmp_path / "week").as_posix()
                     for p in (tmp_path / "week").rglob("*.parquet"))
    assert sorted(f["path"] for f in manifest["files"]) == on_disk
    for record in manifest["files"]:
        path = tmp_path / "week" / record["path"]
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert record["rows"] == pq.read_metadata(path).num_rows and record["bytes"] == path.stat().st_size
    assert dataset.verify().files == len(manifest["files"])
    first = dataset.files[0]
    first.write_bytes(first.read_bytes()[:-1] + b"\0")
    with pytest.raises(CortexError, match="changed since it was written"):
        dataset.verify()


def _hours_read(dataset: Dataset) -> dict[str, tuple[str, set]]:
    """The hour key as DuckDB and Arrow read it: its type and its values."""
    relation = dataset.duckdb(duckdb.connect())
    [by_duckdb] = relation.aggregate("any_value(typeof(hour)), list(DISTINCT hour)").fetchall()
    by_arrow = dataset.arrow().to_table(columns=["hour"]).column(0)
    return {
        "duckdb": (by_duckdb[0], set(by_duckdb[1])),
        "arrow": (str(by_arrow.type), set(by_arrow.to_pylist())),
    }


def test_the_hour_key_is_an_integer_for_every_reader(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week")
    hours = {int(p.parent.name.removeprefix("hour=")) for p in dataset.files}
    assert hours & set(range(10)), "the sandbox's data spans hours 0-9"
    assert all(p.parent.name == f"hour={int(p.parent.name[5:])}" for p in dataset.files)
    assert _hours_read(dataset) == {"duckdb": ("BIGINT", hours), "arrow": ("int32", hours)}
    # the folder read directly, as the README shows, gives integers too
    direct = duckdb.sql(f"SELECT DISTINCT typeof(hour) FROM '{tmp_path / 'week'}/**/*.parquet'")
    assert direct.fetchall() == [("BIGINT",)]


def test_a_dataset_written_with_two_digit_hours_reads_the_same(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week")
    expected = _hours_read(dataset)
    old = _as_two_digit_hours(tmp_path / "week")
    assert any(p.parent.name in {f"hour=0{h}" for h in range(10)} for p in old.files)
    assert _hours_read(old) == expected
    assert old.verify().rows == SANDBOX_ROWS


def _as_two_digit_hours(path) -> Dataset:
    """The dataset at ``path`` laid out as cortex_nb wrote it before (``hour=07``)."""
    manifest = json.loads((path / MANIFEST).read_text())
    for record in manifest["files"]:
        date, hour, name = record["path"].split("/")
        padded = f"hour={int(hour.removeprefix('hour=')):02d}"
        (path / date / padded).mkdir(exist_ok=True)
        os.replace(path / record["path"], path / date / padded / name)
        record["path"] = f"{date}/{padded}/{name}"
    for folder in path.glob("date=*/hour=*"):
        if not any(folder.iterdir()):
            folder.rmdir()
    (path / MANIFEST).write_text(json.dumps(manifest))
    return Dataset(path)


def test_verify_says_what_it_verified(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week")
    report = dataset.verify()
    files = dataset.manifest["files"]
    assert (report.files, report.rows) == (len(files), SANDBOX_ROWS)
    assert report.bytes == sum(f["bytes"] for f in files) == sum(p.stat().st_size for p in dataset.files)
    assert str(report) == (
        f"verified {len(files)} Parquet files, {SANDBOX_ROWS:,} rows, {report.bytes:,} bytes at "
        f"{dataset.path}: sizes, SHA-256 and row counts match the manifest"
    )


def test_a_result_without_time_generated_is_not_partitioned(sandbox, service, tmp_path):
    sql = f"SELECT app, COUNT(*) AS n FROM `{sandbox.instance_id}.firewall.traffic` GROUP BY app"
    dataset = service.query(sql, to=tmp_path / "apps")
    assert dataset.partitioning == [] and [p.parent for p in dataset.files] == [tmp_path / "apps"]
    pd.testing.assert_frame_equal(in_order(dataset.to_pandas(), ["app"]),
                                  in_order(service.query(sql).df, ["app"]))


def test_a_limit_caps_the_rows_written(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "some", page_size=500, limit=1234)
    assert dataset.rows == 1234 and dataset.rows_in_job == SANDBOX_ROWS
    assert pads.dataset(dataset.files).count_rows() == 1234


def test_an_empty_result_keeps_its_columns(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox, "WHERE 1 = 0"), to=tmp_path / "none")
    assert dataset.rows == 0 and len(dataset.files) == 1
    assert "time_generated" in dataset.schema.names
    assert dataset.to_pandas().empty and "app" in dataset.to_pandas().columns


def test_an_existing_dataset_is_replaced_only_when_asked(sandbox, service, tmp_path):
    target = tmp_path / "week"
    first = service.query(traffic(sandbox, "LIMIT 10"), to=target)
    sandbox.clear()
    with pytest.raises(ConfigurationError, match=r"already holds a dataset.*overwrite"):
        service.query(traffic(sandbox, "LIMIT 20"), to=target)
    assert creates(sandbox) == 0  # refused before the query ran
    assert open_dataset(target).manifest["job_id"] == first.manifest["job_id"]
    second = service.query(traffic(sandbox, "LIMIT 20"), to=target, overwrite=True)
    assert second.rows == 20 and open_dataset(target).manifest["job_id"] != first.manifest["job_id"]
    assert [p.name for p in tmp_path.iterdir()] == ["week"]  # nothing left beside it


def test_a_folder_that_is_not_a_dataset_is_never_replaced(sandbox, service, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigurationError, match="not a cortex_nb dataset"):
        service.query(traffic(sandbox, "LIMIT 5"), to=tmp_path / "notes", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="is a file"):
        service.query(traffic(sandbox, "LIMIT 5"), to=tmp_path / "file")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me" and creates(sandbox) == 0
    (tmp_path / "empty").mkdir()
    assert service.query(traffic(sandbox, "LIMIT 5"), to=tmp_path / "empty").rows == 5


def test_an_interrupted_stream_leaves_nothing_that_looks_complete(sandbox, service, tmp_path):
    def interrupt_on_third_page(progress):  # as Ctrl-C would, once, in the main thread
        if progress.pages == 3 and not progress.done:
            raise KeyboardInterrupt

    with pytest.raises(QueryCancelled, match="Interrupted"):
        service.query(traffic(sandbox), to=tmp_path / "week", page_size=300,
                      progress=interrupt_on_third_page)
    assert list(tmp_path.iterdir()) == []  # no dataset, and its hidden staging folder is gone
    assert [r.method for r in sandbox.requests if r.method == "DELETE"] == ["DELETE"]
    with pytest.raises(ConfigurationError, match="not a complete cortex_nb dataset"):
        open_dataset(tmp_path / "week")


KILLED_WRITER = """
import sys
from cortex_nb import Credentials, HTTPClient
from cortex_nb.results.datasets import write_dataset
from cortex_nb.query.service import QueryService
url, token_url, sql, target = sys.argv[1:]
creds = Credentials(client_id="{client_id}", client_secret="{client_secret}",
                    refresh_token="{refresh_token}", token_url=token_url)
job = QueryService(client=HTTPClient(url=url, credentials=creds)).start(sql, page_size=100, parallel=1)
write_dataset(job, target, buffer_bytes=1, row_group_bytes=1)  # every page written at once
"""


def test_a_killed_writer_leaves_nothing_that_looks_complete(sandbox, tmp_path):
    demo = sandbox.credentials()
    script = textwrap.dedent(KILLED_WRITER).format(**demo)
    sandbox.latency_ms = 100  # ~3 s of pages: time to kill it in the middle
    try:
        child = subprocess.Popen([sys.executable, "-c", script, sandbox.url, demo["token_url"],
                                  traffic(sandbox), str(tmp_path / "week")])
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob(".week.partial-*/**/*.parquet")):
            assert child.poll() is None and time.monotonic() < deadline, "no file was written"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        sandbox.latency_ms = 0
    (staging,) = tmp_path.glob(".week.partial-*")  # hidden, and without a manifest
    assert not (tmp_path / "week").exists() and not (staging / MANIFEST).exists()
    for path in (tmp_path / "week", staging):
        with pytest.raises(ConfigurationError, match="not a complete cortex_nb dataset"):
            open_dataset(path)


def test_to_pandas_is_refused_when_it_would_not_fit(sandbox, service, tmp_path):
    dataset = service.query(traffic(sandbox), to=tmp_path / "week")
    with pytest.raises(ConfigurationError, match=r"3,000 rows, more than max_rows=1,000.*duckdb"):
        dataset.to_pandas(max_rows=1000)
    assert len(dataset.to_pandas(max_rows=None)) == SANDBOX_ROWS


# -- the magic and the command line ---------------------------------------------------------------
def test_magic_streams_to_a_dataset_and_shows_its_handle(ip, sandbox, tmp_path):  # noqa: F811
    target = tmp_path / "week"
    result, shown = run(ip, f"%%cortex -o week --to {target} --max-rows 10\nSELECT * FROM firewall.traffic")
    assert result.success, shown
    dataset = ip.user_ns["week"]
    assert isinstance(dataset, Dataset) and dataset.rows == SANDBOX_ROWS  # no guardrail on disk
    assert f"{SANDBOX_ROWS:,} rows" in repr(result.result)
    result, _ = run(ip, f"%%cortex --to {target}\nSELECT * FROM firewall.traffic LIMIT 3")
    assert not result.success and "--overwrite" in str(result.error_in_exec)
    result, _ = run(ip, f"%%cortex -o week --to {target} --overwrite\nSELECT * FROM firewall.traffic LIMIT 3")
    assert result.success and ip.user_ns["week"].rows == 3
    result, _ = run(ip, f"%%cortex --to {target} --raw\nSELECT 1")
    assert not result.success and "--raw" in str(result.error_in_exec)


def test_cli_output_dir_streams_a_dataset(tmp_path, capsys):
    target = tmp_path / "traffic"
    assert main(["query", "--sandbox", "--output", str(target), "SELECT * FROM firewall.traffic"]) == 0
    assert "wrote 10,000 rows" in capsys.readouterr().err
    assert open_dataset(target).rows == 10_000
    assert main(["query", "--sandbox", "--output", str(target), "SELECT 1 AS x"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["query", "--sandbox", "--output", str(target), "--overwrite", "SELECT 1 AS x"]) == 0
    assert open_dataset(target).to_pandas()["x"].tolist() == [1]
