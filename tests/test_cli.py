"""The cortex-nb command: query and lab (the sandbox and profiles commands have their own tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import requests

from cortex_nb.cli import main

TOP = "SELECT source_ip.value AS src, COUNT(*) AS n FROM firewall.traffic GROUP BY src ORDER BY n DESC LIMIT 3"


def test_query_against_the_sandbox_prints_the_table(capsys):
    assert main(["query", "--sandbox", TOP]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["src", "n"] and len(out.splitlines()) == 4


def test_resuming_a_complete_split_dataset_fetches_nothing_and_says_so(tmp_path, capsys):
    sql = "SELECT time_generated, source_ip FROM firewall.traffic"
    split = ["query", "--sandbox", "--since", "2d", "--split", "1d", "--output", str(tmp_path)]
    assert main([*split, sql]) == 0
    assert capsys.readouterr().err.startswith("wrote ")
    second = int(time.time())
    while int(time.time()) == second:  # "created" is kept to the second
        time.sleep(0.05)
    assert main([*split, "--resume", sql]) == 0
    said = capsys.readouterr().err.splitlines()
    assert said[0] == f"Every window of {tmp_path} is written already: nothing to fetch."
    assert said[1].startswith("already there: ") and "(3 windows of 1d from " in said[1]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_query_writes_files(tmp_path, capsys, suffix):
    target = tmp_path / f"top{suffix}"
    assert main(["query", "--sandbox", "--output", str(target), TOP]) == 0
    reader = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".json": pd.read_json}[suffix]
    df = reader(target)
    assert list(df.columns)[-2:] == ["src", "n"] and len(df) == 3
    assert "wrote 3 rows" in capsys.readouterr().err


def test_query_errors_are_one_message_and_exit_2(capsys, monkeypatch):
    for name in ("PAN_ACCESS_TOKEN", "PAN_CLIENT_ID", "PAN_CLIENT_SECRET", "PAN_REFRESH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert main(["query", "--sandbox", "SELEKT 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cortex-nb: error:") and err.count("cortex-nb: error:") == 1
    first, *excerpt, last = err.splitlines()  # the SQL line and its caret sit in between
    assert "Syntax error" in first and "HTTP 400" in last and "Traceback" not in err
    assert excerpt == ["  1 | SELEKT 1", "    |        ^"]
    assert main(["query", "SELECT 1"]) == 2
    assert "PAN_CLIENT_ID" in capsys.readouterr().err
    assert main(["query", "--sandbox", "--output", "x.xlsx", TOP]) == 2
    assert ".parquet" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "sql", "says"),
    [
        (["--resume"], "SELECT * FROM firewall.traffic",
         "--resume continues a split run into a dataset: give --split and --output DIR"),
        (["--cache"], "SELECT * FROM firewall.traffic", "drop --cache/--refresh, or --split."),
        ([], "SELECT COUNT(*) AS n FROM firewall.traffic", "or run it without --split."),
    ],
)
def test_split_errors_name_the_commands_own_flags(capsys, flags, sql, says):
    assert main(["query", "--sandbox", "--since", "2d", "--split", "6h", *flags, sql]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1
    assert not any(python in err for python in ("=True", "split=", "to=DIR", "--to", "(--"))


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--parallel", "0"], "--parallel must be 1..64, not 0."),
        (["--since", "bogus"], "--since: Cannot read 'bogus' as a duration"),
        (["--max-rows", "-3"], "--max-rows must be at least 1"),
        (["--since", "1d", "--split", "0h"], "--split must be a window length such as '1h'"),
    ],
)
def test_option_errors_name_the_flag_given(capsys, flags, says):
    assert main(["query", "--sandbox", *flags, "SELECT app FROM firewall.traffic"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"cortex-nb: error: {says}") and "timedelta" not in err


def test_lab_refuses_a_missing_folder(capsys):
    assert main(["lab", "--dir", "/no/such/folder"]) == 2
    assert "no folder" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_lab_starts_jupyterlab_on_the_notebooks(tmp_path):
    pytest.importorskip("jupyterlab")
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "hello.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    port, token = free_port(), "cli-test-token"
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    lab = subprocess.Popen(
        [sys.executable, "-m", "cortex_nb.cli", "lab", "--no-browser", "--port", str(port),
         f"--IdentityProvider.token={token}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=2)
                if reply.ok:
                    break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        names = [item["name"] for item in reply.json()["content"]]
        assert names == ["hello.ipynb"]
    finally:
        lab.terminate()
        out, _ = lab.communicate(timeout=30)
    assert "Starting JupyterLab on" in out and f"127.0.0.1:{port}" in out
