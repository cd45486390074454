"""Every example in the README runs as written: magics in a real InteractiveShell, Python as
Python, commands through the CLI, all against sandboxes on 127.0.0.1. Examples that name a real
tenant run against the sandbox with only the host swapped; a new example nobody checks fails."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import Credentials, cli
from cortex_nb.http import profiles
from cortex_nb.notebook.connection import get_connection as get_session
from cortex_nb.notebook.grammar import cell_parser, line_parser, parse_cell

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, re.DOTALL)  # untagged blocks too
TENANT_URL = "https://api.nl.cdl.paloaltonetworks.com"


def block(starting: str) -> str:
    found = [text for _, text in BLOCKS if text.lstrip().startswith(starting)]
    assert len(found) == 1, f"one README block starts with {starting!r}"
    return found[0]


CHECKED = (
    "git clone",  # the quickstart: test_the_quickstart_says_what_a_newcomer_needs
    "%load_ext cortex_nb",
    "%%cortex -o talkers",
    "from cortex_nb import Credentials, HTTPClient, QueryService",
    "%cortex connect --region",
    "from cortex_nb import Credentials, HTTPClient\n",
    "cortex-nb query --sandbox",
    "cortex-nb sandbox --port",
    "from cortex_nb import get_connection",
    "%cortex connect --profile work --record",
    "from cortex_nb import get_connection\nfrom cortex_nb.record.replay import Replay",
    "%%cortex --cache",
    "%%cortex -o recent --since 24h",  # tests/test_timefilter.py
    "%%cortex -o week --since 7d --split 1h",  # tests/test_fanout.py
    "%%cortex\nSELECT src_ip",  # and the error it shows, below it
    "Unrecognized name: src_ip",
    # Big results: tests/test_readme_big_results.py
    "%%cortex -o week --to traffic_week",
    "cortex-nb query --output traffic_week",
    "import duckdb",
    "spark.read.parquet",
    # Charts: tests/test_charts.py
    "%%cortex -o traffic --plot",
    "from cortex_nb import plot",
)


def test_every_readme_example_is_checked_here():
    for _, text in BLOCKS:
        assert any(text.lstrip().startswith(s.strip()) for s in CHECKED), (
            f"a README example no test runs:\n{text}"
        )


@pytest.fixture()
def shell(monkeypatch, tmp_path):
    monkeypatch.setenv(profiles.CONFIG_ENV, str(tmp_path / "cfg"))
    monkeypatch.setenv(profiles.KEYRING_ENV, "0")
    ip = InteractiveShell.instance()
    yield ip
    get_session().disconnect()
    get_session().stop_sandbox()


def run_cell(ip, cell: str):
    with capture_output() as cap:
        result = ip.run_cell(cell)
    assert result.success, f"{cell!r} failed: {result.error_in_exec}\n{cap.stdout}{cap.stderr}"
    return result, cap


def test_thirty_seconds(shell):
    run_cell(shell, block("%load_ext cortex_nb"))
    run_cell(shell, block("%%cortex -o talkers"))
    talkers = shell.user_ns["talkers"]
    assert isinstance(talkers, pd.DataFrame) and list(talkers.columns) == ["src", "n"]
    assert len(talkers) == 10


ROOT = Path(__file__).parent.parent


def test_the_quickstart_says_what_a_newcomer_needs():
    clone, venv, lab, test = block("git clone").strip().splitlines()
    quickstart = README.split("## Quickstart")[1].split("\n## ")[0]
    # clone, then a virtual environment in a folder git ignores, on the Python the package needs
    assert clone.startswith("git clone ") and clone.endswith("&& cd cortex-nb")
    folder = re.fullmatch(r"python3 -m venv (\S+) && \. \1/bin/activate", venv).group(1)
    assert f"{folder}/" in (ROOT / ".gitignore").read_text().splitlines()
    needs = re.search(r'requires-python = ">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text())
    assert f"Python {needs.group(1)} or newer" in quickstart
    # the two commands, the second being what CI runs
    assert lab.startswith('pip install -e ".[lab]" && cortex-nb lab ')
    assert test.startswith('pip install -e ".[test]" && pytest ')
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[test]"' in ci and "\npytest\n" in ci
    # the lab options it names exist; the Chromium it names is the one the browser tests use
    options = re.search(r"`(--port \d+ --no-browser)`", quickstart).group(1)
    args = cli.build_parser().parse_args(["lab", *options.split()])
    assert args.no_browser and args.port == 8890
    chromium = re.search(r'CHROMIUM = "([^"]+)"', (ROOT / "tests" / "test_browser.py").read_text())
    assert f"`{chromium.group(1)}`" in quickstart and "apt-get install chromium" in quickstart


# what changes from run to run in a shown error: the sandbox's port and the request id
_VOLATILE = (
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"request id [0-9a-f]+(?:\.\.\.)?"), "request id ID"),
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def comparable(shown: str) -> str:
    """A shown text without its colours and with its port and request id made placeholders."""
    shown = _ANSI.sub("", shown).strip()
    for pattern, placeholder in _VOLATILE:
        shown = pattern.sub(placeholder, shown)
    return shown


def test_the_error_that_teaches_is_what_the_cell_shows(shell):
    run_cell(shell, "%load_ext cortex_nb\n%cortex connect sandbox --rows 1000")
    with capture_output() as cap:
        result = shell.run_cell(block("%%cortex\nSELECT src_ip"))
    assert not result.success
    assert comparable(cap.stdout + cap.stderr) == comparable(block("Unrecognized name: src_ip"))


def test_from_plain_python(capsys):
    namespace: dict = {}
    exec(compile(block("from cortex_nb import Credentials, HTTPClient, QueryService"),
                 "README", "exec"), namespace)
    assert "100 rows (100 in job)" in capsys.readouterr().out
    assert len(namespace["result"].df) == 100


def test_connecting_to_a_real_tenant(shell, sandbox, monkeypatch):
    lines = block("%cortex connect --region").strip().splitlines()
    words = [shlex.split(line.split("#")[0].removeprefix("%cortex")) for line in lines]
    parsed = [line_parser().parse_args(w) for w in words]
    assert (parsed[0].region, parsed[0].instance) == ("europe", "1234567890")
    assert parsed[1].profile == "work" and parsed[2].command == "panel"
    # the profile line runs for real: a saved profile "work" that points at the sandbox
    demo = sandbox.credentials()
    with pytest.warns(profiles.SecretsInFileWarning):
        profiles.save_profile("work", url=sandbox.url, **demo)
    run_cell(shell, "%load_ext cortex_nb")
    run_cell(shell, lines[1])
    assert get_session().client.url == sandbox.url
    result, _ = run_cell(shell, lines[2])
    assert type(result.result).__name__ == "CredentialsPanel"
    result.result.close()


def test_the_magic_table_forms_parse(shell, sandbox):
    table = [m for m in re.findall(r"^\| `(%%?cortex[^`]*)`", README, re.MULTILINE)]
    assert len(table) >= 8
    samples = {"N": "5", "S": "7", "P": "0", "NAME": "work", "R": "europe", "ID": "42",
               "URL": "https://cdl.example.com", "VAR": "v", "MODE": "flatten",
               "START": "2026-12-01", "END": "now", "TIME": "now-1h", "DURATION": "24h"}
    for form in table:
        text = re.sub(r"\[|\]", "", form)
        text = re.sub(rf"\b({'|'.join(samples)})\b", lambda m: samples[m.group()], text)
        if text.startswith("%%cortex"):
            command = parse_cell(text.removeprefix("%%cortex"), "SELECT 1")
            assert command.mode in ("sql", "rest"), form
        elif "SELECT" not in text:
            line_parser().parse_args(shlex.split(text.removeprefix("%cortex")))
    # the REST form runs as written, with nothing below it
    get_session().connect_sandbox(rows=200)
    run_cell(shell, "%load_ext cortex_nb")
    result, _ = run_cell(shell, "%%cortex GET /query/v2/jobs")
    assert isinstance(result.result, pd.DataFrame)
    assert cell_parser().prog == "%cortex"


def test_background_queries_from_python(sandbox, capsys):
    get_session().connect(Credentials(**sandbox.credentials(), environ={}), url=sandbox.url,
                          instance_id=sandbox.instance_id)
    namespace: dict = {}
    try:
        exec(compile(block("from cortex_nb import get_connection\n\nqueries"), "README", "exec"), namespace)
    finally:
        get_session().disconnect()
    assert capsys.readouterr().out.split()[0] in {"WAITING", "PENDING", "RUNNING", "DOWNLOADING"}
    pd.testing.assert_frame_equal(namespace["again"].df, namespace["result"].df)
    assert len(namespace["result"].df) > 5


def test_the_http_client(sandbox, monkeypatch):
    code = block("from cortex_nb import Credentials, HTTPClient\n").replace(TENANT_URL, sandbox.url)
    for name, value in {"PAN_CLIENT_ID": "client_id", "PAN_CLIENT_SECRET": "client_secret",
                        "PAN_REFRESH_TOKEN": "refresh_token", "PAN_TOKEN_URL": "token_url"}.items():
        monkeypatch.setenv(name, sandbox.credentials()[value])
    namespace: dict = {}
    exec(compile(code, "README", "exec"), namespace)
    assert namespace["r"].status_code == 200
    assert isinstance(namespace["r"].json(), list)


def test_the_command_line(sandbox, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(profiles.CONFIG_ENV, str(tmp_path / "cfg"))
    monkeypatch.setenv(profiles.KEYRING_ENV, "0")
    monkeypatch.chdir(tmp_path)
    with pytest.warns(profiles.SecretsInFileWarning):
        profiles.save_profile("work", region="sandbox", **{
            k: v for k, v in sandbox.credentials().items() if k != "token_url"})
    query_sandbox, query_profile, profiles_line = block("cortex-nb query --sandbox").splitlines()
    assert cli.main(shlex.split(query_sandbox)[1:]) == 0
    assert "app" in capsys.readouterr().out
    assert cli.main(shlex.split(query_profile)[1:]) == 0
    assert len(pd.read_parquet(tmp_path / "threats.parquet")) == 1000
    usage = profiles_line.split("#")[0].strip().removeprefix("cortex-nb profiles ").split(" | ")
    assert usage == ["list", "show NAME", "delete NAME"]
    for words in usage:
        assert cli.main(["profiles", *words.replace("NAME", "work").split()]) == 0, words
    assert profiles.list_profiles() == []


def test_the_sandbox_command_parses():
    line = block("cortex-nb sandbox --port").replace("\\\n", " ").strip()
    args = cli.build_parser().parse_args(shlex.split(re.sub(r"\[|\]", "", line))[1:])
    assert (args.port, args.rows, args.seed, args.latency_ms, args.fail_rate) == (
        8080, 100_000, 7, 50, 0.05
    )
    assert (args.query_timeout_ms, args.memory_limit_mb, args.workers) == (120_000, 2048, 4)


def test_record_once_replay_offline(shell, sandbox, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(profiles.SecretsInFileWarning):
        profiles.save_profile("work", url=sandbox.url, **sandbox.credentials())
    record, _, replay = block("%cortex connect --profile work --record").strip().splitlines()
    query = "%%cortex -o n\nSELECT COUNT(*) AS n FROM `sandbox0.firewall.threat`"
    run_cell(shell, "%load_ext cortex_nb")
    run_cell(shell, record)
    run_cell(shell, query)
    recorded = shell.user_ns["n"]
    _, cap = run_cell(shell, replay)
    assert "Replaying investigation.cassette" in cap.stdout
    sandbox.clear()
    run_cell(shell, query.replace("sandbox0", "<instance>"))
    pd.testing.assert_frame_equal(shell.user_ns["n"], recorded)
    assert sandbox.requests == []


def test_record_and_replay_from_python(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    get_session().start_sandbox(rows=500)  # connect_sandbox() below uses the running one
    try:
        exec(compile(block("from cortex_nb import get_connection\nfrom cortex_nb.record.replay"),
                     "README", "exec"), {})
    finally:
        get_session().stop_sandbox()
    assert "Replaying investigation.cassette (3 recorded exchanges)" in capsys.readouterr().out
    assert "sandbox0" not in (tmp_path / "investigation.cassette").read_text()


def test_the_result_cache(shell, sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv("CORTEX_NB_CACHE_DIR", str(tmp_path / "cache"))
    get_session().connect_sandbox(rows=200)
    run_cell(shell, "%load_ext cortex_nb")
    cell = block("%%cortex --cache")
    run_cell(shell, cell)
    _, cap = run_cell(shell, cell)
    assert "Cached result from" in cap.stdout and "no request sent" in cap.stdout
