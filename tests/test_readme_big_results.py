"""The README's "Big results" examples run as written (Spark and Dask, not installed here, are
checked for what they read), against sandboxes on 127.0.0.1."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd

from cortex_nb import cli, options
from cortex_nb.results.datasets import Dataset, open_dataset
from tests.test_readme import README, block, run_cell, shell  # noqa: F401  (shell is a fixture)


def test_streaming_to_a_dataset_and_reading_it_with_duckdb(shell, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    run_cell(shell, "%load_ext cortex_nb\n%cortex connect sandbox --rows 3000")
    run_cell(shell, block("%%cortex -o week --to traffic_week"))
    week = shell.user_ns["week"]
    assert isinstance(week, Dataset) and week.rows == 3000 and week.partitioning == ["date", "hour"]
    run_cell(shell, block("import duckdb"))
    small = shell.user_ns["small"]
    assert isinstance(small, pd.DataFrame) and len(small) == 3000
    hours = shell.ev('duckdb.sql("SELECT date, hour, count(*) AS n FROM week GROUP BY ALL").df()')
    assert hours["n"].sum() == 3000 and len(hours) == len(week.files)


def test_the_dataset_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    line = block("cortex-nb query --output traffic_week").strip()
    assert cli.main(shlex.split(line)[1:]) == 0
    assert open_dataset(tmp_path / "traffic_week").rows == 10_000
    assert "wrote 10,000 rows" in capsys.readouterr().err


def test_spark_and_dask_lines_read_the_same_folder():
    code = block("spark.read.parquet")
    compile(code, "README", "exec")
    lines = [x for x in code.splitlines() if x.strip()]
    assert len(lines) == 2 and all('("traffic_week")' in x for x in lines)


def test_the_guardrail_s_default_stands_next_to_its_measured_cost():
    guardrail = README.split("**A guardrail before downloading.**")[1].split("\n\n**")[0]
    default = options.DEFAULT_MAX_ROWS
    assert f"With more than `max_rows` rows (default {default:,}; exactly `max_rows` come" in (
        " ".join(guardrail.split())
    )
    # a table row of measured figures at the default size, from the bench script it names
    assert re.search(rf"^\| {default:,} \(the default\)( \| [\d.]+ GiB){{4}} \|$", guardrail, re.M)
    assert "`bench/bench_guardrail.py`" in guardrail
    assert (Path(__file__).parent.parent / "bench" / "bench_guardrail.py").is_file()
