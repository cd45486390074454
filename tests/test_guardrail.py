"""The max-rows guardrail: a result too big for memory stops after its first page, in the library,
the magic and the command line, against the real sandbox over HTTP."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import ConfigurationError, Credentials, HTTPClient, ResultTooLarge, options
from cortex_nb.cli import main
from cortex_nb.notebook.connection import get_connection as get_session
from cortex_nb.notebook.magic import CortexMagics
from cortex_nb.options import QueryOptions
from cortex_nb.query.service import DEFAULT_MAX_ROWS, QueryService
from tests.conftest import SANDBOX_ROWS

RESULTS = "/query/v2/jobResults/"


@pytest.fixture()
def service(sandbox) -> QueryService:
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    return QueryService(client=client)


def select_all(sandbox) -> str:
    return f"SELECT * FROM `{sandbox.instance_id}.firewall.traffic`"


def results_requests(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith(RESULTS)]


def test_guardrail_stops_after_the_first_page_and_cancels_the_job(sandbox, service):
    with pytest.raises(ResultTooLarge) as raised:
        service.query(select_all(sandbox), page_size=500, max_rows=1000)
    error = raised.value
    assert (error.rows, error.max_rows, error.cancelled) == (SANDBOX_ROWS, 1000, True)
    message = str(error)
    assert "\n" not in message
    assert f"{SANDBOX_ROWS:,} rows" in message and "max_rows=1,000" in message
    assert "limit=" in message and "to=" in message
    # polls only: no page after the first was asked for, then one DELETE of that job
    pages = results_requests(sandbox)
    assert pages and all("offset" not in r.query and "pageCursor" not in r.query for r in pages)
    assert sum(1 for r in pages if r.status == 200) == len(pages)
    deletes = [r for r in sandbox.requests if r.method == "DELETE"]
    assert [d.path.rsplit("/", 1)[-1] for d in deletes] == [error.job_id]


def test_without_the_guardrail_the_same_query_downloads_every_page(sandbox, service):
    df = service.query(select_all(sandbox), page_size=500, max_rows=None).df
    assert len(df) == SANDBOX_ROWS
    assert len([r for r in results_requests(sandbox) if "offset" in r.query]) == 5
    assert not [r for r in sandbox.requests if r.method == "DELETE"]


def test_a_result_at_the_guardrail_passes(sandbox, service):
    assert len(service.query(select_all(sandbox), max_rows=SANDBOX_ROWS).df) == SANDBOX_ROWS


def test_limit_counts_against_the_guardrail(sandbox, service):
    df = service.query(select_all(sandbox), page_size=500, limit=800, max_rows=1000).df
    assert len(df) == 800


def test_raw_rows_of_a_job_are_guarded_too(sandbox, service):
    job = service.start(select_all(sandbox), max_rows=10)
    with pytest.raises(ResultTooLarge):
        job.rows()


def test_max_rows_must_be_positive_or_none(sandbox, service):
    for bad in (-5, 2.5, "10"):
        with pytest.raises(ConfigurationError, match="max_rows must be"):
            service.query(select_all(sandbox), max_rows=bad)
    assert not [r for r in sandbox.requests if r.method == "POST"]
    # zero means "no guardrail" on every path, as --max-rows 0 and %config do
    assert QueryOptions(max_rows=0).max_rows is None


def test_the_default_guardrail_is_one_value_everywhere():
    assert QueryOptions().max_rows == DEFAULT_MAX_ROWS
    assert CortexMagics.max_rows.default_value == DEFAULT_MAX_ROWS


def test_the_default_guardrail_protects_a_16_gb_laptop():
    """Measured (bench/bench_guardrail.py, README "Big results"): a million traffic rows grow
    the kernel by 4.6 GiB with the sandbox in it (3.5 GiB against a tenant), half a million
    by 2.4 GiB (1.8 GiB)."""
    assert options.DEFAULT_MAX_ROWS == 500_000


def test_a_result_one_row_over_the_guardrail_is_refused_saying_more_than(sandbox, service):
    with pytest.raises(ResultTooLarge, match=rf"more than max_rows={SANDBOX_ROWS - 1:,}"):
        service.query(select_all(sandbox), max_rows=SANDBOX_ROWS - 1)


# -- the magic ---------------------------------------------------------------------------------
@pytest.fixture()
def ip(sandbox):
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "cortex_nb")
    get_session().connect(
        Credentials(**sandbox.credentials()), url=sandbox.url, instance_id=sandbox.instance_id
    )
    sandbox.clear()
    yield shell
    shell.run_line_magic("config", f"CortexMagics.max_rows = {DEFAULT_MAX_ROWS}")
    get_session().disconnect()


def run(ip, cell: str):
    with capture_output() as cap:
        result = ip.run_cell(cell)
    return result, cap.stdout + cap.stderr


def test_magic_says_in_one_line_what_to_do(ip, sandbox):
    result, shown = run(ip, "%%cortex --max-rows 1000\nSELECT * FROM firewall.traffic")
    assert not result.success and isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in shown
    line = str(result.error_in_exec)
    assert "\n" not in line and f"{SANDBOX_ROWS:,} rows" in line
    assert "--limit N" in line and "--to DIR" in line and "--max-rows N" in line
    assert [r.method for r in sandbox.requests if r.method == "DELETE"] == ["DELETE"]


def test_magic_guardrail_is_a_trait_and_zero_turns_it_off(ip):
    ip.run_line_magic("config", "CortexMagics.max_rows = 100")
    result, _ = run(ip, "%%cortex -o few\nSELECT * FROM firewall.traffic LIMIT 150")
    assert not result.success and "max_rows=100" in str(result.error_in_exec)
    result, _ = run(ip, "%%cortex -o few --limit 100\nSELECT * FROM firewall.traffic")
    assert result.success and len(ip.user_ns["few"]) == 100
    result, _ = run(ip, "%%cortex -o all --max-rows 0\nSELECT * FROM firewall.traffic")
    assert result.success and len(ip.user_ns["all"]) == SANDBOX_ROWS


# -- the command line ----------------------------------------------------------------------------
def test_cli_guardrail_is_one_line_and_exit_2(capsys):
    assert main(["query", "--sandbox", "--max-rows", "100", "SELECT * FROM firewall.traffic"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("cortex-nb: error: Job ")
    assert "--output DIR" in err and "--max-rows N" in err
