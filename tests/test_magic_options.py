"""Every query option means the same on every notebook path: a cell, a ``--bg`` cell,
``%cortex fetch`` and ``%cortex fetch --bg``, in a real InteractiveShell against the sandbox.

One table: each option x each path, checked by what the option does (rows, types, requests,
files, errors), not by what was passed along. The ``%config`` defaults are checked as the
options are.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from cortex_nb.notebook.connection import get_connection
from cortex_nb.options import OPTIONS, OptionError, QueryOptions
from cortex_nb.results.cache import CACHE_ENV
from cortex_nb.results.datasets import Dataset

SQL = (
    "SELECT session_id, source_ip, characteristics_of_app FROM firewall.traffic "
    "ORDER BY session_id LIMIT 20"
)
PATHS = ("cell", "bg", "fetch", "fetch-bg")


class Refused(Exception):
    """The one line a path failed with (the cell's error, or the background query's)."""


@pytest.fixture()
def nb(connected, sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "results"))
    yield connected
    sandbox.latency_ms = 0


def cell(ip, source: str) -> None:
    with capture_output():
        result = ip.run_cell(source)
    if not result.success:
        assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
        raise Refused(str(result.error_in_exec))


def run(ip, sandbox, path: str, flags: str, job_id: str | None = None):
    """Run SQL on ``path`` with ``flags``; what lands in the variable (a job id is made first
    for the fetch paths, and requests before it are not logged)."""
    if path.startswith("fetch"):
        job_id = job_id or new_job(sandbox)
        sandbox.clear()
        bg = " --bg" if path == "fetch-bg" else ""
        cell(ip, f"%cortex fetch {job_id}{bg} -o v -q {flags}")
    else:
        bg = "--bg " if path == "bg" else ""
        cell(ip, f"%%cortex {bg}-o v -q {flags}\n{SQL}")
    if path.endswith("bg"):
        cell(ip, "%cortex wait v")
    return ip.user_ns["v"]


def new_job(sandbox) -> str:
    """The id of a new job running ``SQL`` on the service (for ``%cortex fetch`` to take up)."""
    table = f"`{sandbox.instance_id}.firewall.traffic`"
    return get_connection().require().submit(SQL.replace("firewall.traffic", table))


def results_requests(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/query/v2/jobResults")]


def query_requests(sandbox) -> list:
    return [r for r in sandbox.requests if r.path.startswith("/query/")]


# ---- each option: how to check that it took effect -----------------------------------------


def check_limit(ip, sandbox, path, tmp_path):
    assert len(run(ip, sandbox, path, "--limit 3")) == 3


def check_max_rows(ip, sandbox, path, tmp_path):
    with pytest.raises(Refused, match="more than max_rows=5"):
        run(ip, sandbox, path, "--max-rows 5")
    assert len(run(ip, sandbox, path, "--max-rows 0")) == 20  # 0: no guardrail


def check_page_size(ip, sandbox, path, tmp_path):
    assert len(run(ip, sandbox, path, "--page-size 7")) == 20
    assert {r.query.get("pageSize") for r in results_requests(sandbox)} == {"7"}


def check_parallel(ip, sandbox, path, tmp_path):
    run(ip, sandbox, path, "--page-size 5 --parallel 1")  # one at a time: by cursor
    pages = results_requests(sandbox)
    assert any("pageCursor" in r.query for r in pages)
    assert not any("offset" in r.query for r in pages)


def check_structs(ip, sandbox, path, tmp_path):
    frame = run(ip, sandbox, path, "--structs keep")
    assert isinstance(frame["source_ip"].iloc[0], dict) and "value" in frame["source_ip"].iloc[0]
    assert "source_ip.value" in run(ip, sandbox, path, "--structs flatten").columns


def check_dtypes(ip, sandbox, path, tmp_path):
    arrow = run(ip, sandbox, path, "--dtypes arrow")
    assert isinstance(arrow["characteristics_of_app"].dtype, pd.ArrowDtype)
    assert run(ip, sandbox, path, "--dtypes objects")["characteristics_of_app"].dtype == object


def check_timeout(ip, sandbox, path, tmp_path):
    sandbox.latency_ms = 200  # ten pages of 2 rows cannot come within 0.3 s
    with pytest.raises(Refused, match=r"not finished within 0\.3 s"):
        run(ip, sandbox, path, "--timeout 0.3 --page-size 2")


def check_to(ip, sandbox, path, tmp_path):
    dataset = run(ip, sandbox, path, f"--to {tmp_path / 'ds'}")
    assert isinstance(dataset, Dataset) and dataset.rows == 20 and dataset.files


def check_overwrite(ip, sandbox, path, tmp_path):
    target = tmp_path / "ds"
    run(ip, sandbox, path, f"--to {target} --limit 4")
    with pytest.raises(Refused, match="overwrite"):
        run(ip, sandbox, path, f"--to {target}")
    assert run(ip, sandbox, path, f"--to {target} --overwrite").rows == 20


def check_cache(ip, sandbox, path, tmp_path):
    job_id = new_job(sandbox) if path.startswith("fetch") else None  # fetched twice
    first = run(ip, sandbox, path, "--cache", job_id)
    assert query_requests(sandbox)
    sandbox.clear()
    pd.testing.assert_frame_equal(run(ip, sandbox, path, "--cache", job_id), first)
    assert query_requests(sandbox) == []


def check_refresh(ip, sandbox, path, tmp_path):
    job_id = new_job(sandbox) if path.startswith("fetch") else None  # fetched twice
    run(ip, sandbox, path, "--cache", job_id)
    sandbox.clear()
    assert len(run(ip, sandbox, path, "--refresh", job_id)) == 20
    assert results_requests(sandbox)


def quiet_hour(sandbox) -> tuple[datetime, datetime]:
    """A night hour two days before the sandbox's data ends (its rows do not depend on the
    hour the sandbox started in)."""
    day = datetime.fromtimestamp(sandbox.anchor, timezone.utc).replace(hour=0) - timedelta(2)
    return day.replace(hour=2), day.replace(hour=3)


def by_hand(sandbox, start: datetime, end: datetime) -> pd.DataFrame:
    """``SQL``'s rows in ``[start, end)``, with the time filter written by hand."""
    table = f"`{sandbox.instance_id}.firewall.traffic`"
    bounded = SQL.replace("firewall.traffic", table).replace(
        " ORDER BY", f" WHERE time_generated >= TIMESTAMP('{start.isoformat()}') AND "
        f"time_generated < TIMESTAMP('{end.isoformat()}') ORDER BY",
    )
    return get_connection().require().query(bounded, page_size=10_000).df


def expect_window(ip, sandbox, path, flags: str, start: datetime, end: datetime) -> None:
    """A window's flags bring the rows of the hand-written filter; a job taken up by id
    already has its statement, so the fetch paths refuse them."""
    if path.startswith("fetch"):
        with pytest.raises(Refused, match="drop between/since/until"):
            run(ip, sandbox, path, flags)
        return
    frame = run(ip, sandbox, path, flags)
    assert 0 < len(frame) < 20  # the window holds some rows, not the 20 of the whole week
    pd.testing.assert_frame_equal(frame, by_hand(sandbox, start, end))


def check_between(ip, sandbox, path, tmp_path):
    start, end = quiet_hour(sandbox)
    flags = f"--between {start:%Y-%m-%dT%H:%M} {end.isoformat()}"  # naive is UTC
    expect_window(ip, sandbox, path, flags, start, end)


def check_since(ip, sandbox, path, tmp_path):
    start, end = quiet_hour(sandbox)
    expect_window(ip, sandbox, path, f"--since 1h --until {end.isoformat()}", start, end)
    if not path.startswith("fetch"):  # without --until the window ends now
        sent = [r.json["params"]["query"] for r in query_requests(sandbox) if r.method == "POST"]
        run(ip, sandbox, path, "--since 90m")
        sent = [r.json["params"]["query"] for r in query_requests(sandbox)
                if r.method == "POST"][len(sent):]
        lower = datetime.fromisoformat(re.findall(r"TIMESTAMP\('([^']+)'\)", sent[0])[0])
        assert abs(lower - (datetime.now(timezone.utc) - timedelta(minutes=90))) < timedelta(
            minutes=5
        )


def check_until(ip, sandbox, path, tmp_path):
    start, end = quiet_hour(sandbox)
    start, end = start + timedelta(minutes=30), end + timedelta(minutes=30)
    expect_window(ip, sandbox, path, f"--until {end:%Y-%m-%dT%H:%M} --since 60m", start, end)


SPLITTABLE = "SELECT session_id, time_generated FROM firewall.traffic ORDER BY time_generated"


def split_cell(ip, sandbox, path: str, flags: str):
    """A splittable query (``SQL`` has a LIMIT, which --split refuses) on ``path``."""
    if path.startswith("fetch"):
        return run(ip, sandbox, path, flags)
    bg = "--bg " if path == "bg" else ""
    cell(ip, f"%%cortex {bg}-o v -q --since 7d {flags}\n{SPLITTABLE}")
    if path == "bg":
        cell(ip, "%cortex wait v")
    return ip.user_ns["v"]


def created_jobs(sandbox) -> list:
    return [r for r in sandbox.requests if r.method == "POST" and r.path == "/query/v2/jobs"]


def check_split(ip, sandbox, path, tmp_path):
    if path.startswith("fetch"):  # a job taken up by id has its statement already
        with pytest.raises(Refused, match="split"):
            run(ip, sandbox, path, "--split 1d")
        return
    frame = split_cell(ip, sandbox, path, "--split 2d")
    assert len(frame) == 3000 and frame["time_generated"].is_monotonic_increasing
    assert 4 <= len(created_jobs(sandbox)) <= 5  # 7 days in 2-day windows (aligned, clipped)


def check_resume(ip, sandbox, path, tmp_path):
    if path.startswith("fetch"):
        with pytest.raises(Refused, match="resume"):
            run(ip, sandbox, path, f"--resume --to {tmp_path / 'ds'}")
        return
    target = tmp_path / "ds"
    assert split_cell(ip, sandbox, path, f"--split 2d --to {target}").rows == 3000
    sandbox.clear()
    assert split_cell(ip, sandbox, path, f"--split 2d --to {target} --resume").rows == 3000
    assert created_jobs(sandbox) == []  # every window was there already


CHECKS = {name.removeprefix("check_"): check for name, check in globals().items()
          if name.startswith("check_")}


def test_every_flagged_option_has_a_check_here():
    assert set(CHECKS) == {spec.name for spec in OPTIONS if spec.flag}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("option", sorted(CHECKS))
def test_the_option_takes_effect_on_every_path(option, path, nb, sandbox, tmp_path):
    CHECKS[option](nb, sandbox, path, tmp_path)


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_option_is_refused_before_any_request(path, nb, sandbox):
    with pytest.raises(Refused, match=r"unrecognized arguments: --page-sise.*did you mean --page-size"):
        run(nb, sandbox, path, "--page-sise 7")
    assert query_requests(sandbox) == []


@pytest.mark.parametrize(("flags", "said"), [
    ("--parallel 100", "--parallel must be 1..64, not 100."),
    ("--timeout abc", "--timeout must be seconds (a number), not 'abc'"),
    ("--limit many", "--limit must be a whole number, not 'many'"),
    ("--between 2026-12-01", "--between needs two values: --between START END"),
    ("--between 2026-12-01 soon", "--between: 'soon' is not a time; it takes two"),
    ("--since 5x", "--since: Cannot read '5x' as a duration: use a number and a unit: '90s', "
                   "'15m', '24h', '7d', '1w'."),
    ("--split hourly --since 1d", "--split must be a window length such as '1h', '30m' or "
                                  "'1d', or 'auto', not 'hourly'."),
    ("--until now", "--until ends a window that --since starts: give --since 24h too."),
    ("--split 1h", "--split cuts a time window into jobs: give the window too, --between START "
                   "END or --since 7d."),
    ("--resume", "--resume continues a split run into a dataset: give --split and --to as"),
])
@pytest.mark.parametrize("path", ["cell", "fetch"])
def test_a_bad_option_is_said_with_the_flags_a_cell_has(flags, said, path, nb, sandbox):
    if path == "fetch" and ("--split" in flags or "--resume" in flags):
        return  # a job taken up by id has no window to split (its own message)
    with pytest.raises(Refused) as refused:
        run(nb, sandbox, path, flags, job_id="cortexnb-not-sent")
    message = re.sub(r"^%%?cortex( fetch)?: ", "", str(refused.value))  # argparse's own
    assert message.startswith(said), str(refused.value)
    assert not re.search(r"\b[a-z_]+=", str(refused.value))  # no Python keyword in a cell
    assert query_requests(sandbox) == []


def test_python_keeps_the_options_python_names(nb):
    service = get_connection().require()
    with pytest.raises(OptionError, match=r"^parallel must be 1..64, not 100\.$"):
        service.query("SELECT 1", parallel=100)
    with pytest.raises(OptionError, match=r"^until= \(--until\) ends a window that since= "):
        service.query("SELECT 1", until="now")


@pytest.mark.parametrize(("name", "bad"), [
    ("page_size", 0), ("page_size", 100_001), ("parallel", 0), ("timeout", -1.0),
    ("max_rows", -5),
])
def test_a_bad_config_default_is_refused_as_the_option_is(name, bad, nb, caplog):
    with pytest.raises(OptionError) as expected:
        get_connection().require().query("SELECT 1", **{name: bad})
    before = nb.run_line_magic("config", f"CortexMagics.{name}")
    nb.run_line_magic("config", f"CortexMagics.{name} = {bad!r}")  # %config logs what it refused
    # one line per CortexMagics the shell holds (a test may have loaded the extension twice)
    assert {r.getMessage() for r in caplog.records} == {str(expected.value)}
    assert nb.run_line_magic("config", f"CortexMagics.{name}") == before


def test_config_defaults_reach_every_path_and_a_cell_overrides_them(nb, sandbox):
    nb.run_line_magic("config", "CortexMagics.dtypes = 'arrow'")
    try:
        for path in PATHS:
            frame = run(nb, sandbox, path, "")
            assert isinstance(frame["characteristics_of_app"].dtype, pd.ArrowDtype), path
            frame = run(nb, sandbox, path, "--dtypes objects")
            assert frame["characteristics_of_app"].dtype == object, path
    finally:
        nb.run_line_magic("config", "CortexMagics.dtypes = 'objects'")


def test_a_refused_config_default_does_not_break_reloading_the_extension(nb, caplog):
    nb.run_line_magic("config", "CortexMagics.parallel = 0")  # refused, yet kept in shell.config
    assert nb.config.CortexMagics.parallel == 0
    caplog.clear()
    nb.run_line_magic("reload_ext", "cortex_nb")
    assert "parallel" not in nb.config.CortexMagics
    assert any("parallel must be" in r.getMessage() and "default is used" in r.getMessage()
               for r in caplog.records)
    assert nb.run_line_magic("config", "CortexMagics.parallel") == QueryOptions().parallel
