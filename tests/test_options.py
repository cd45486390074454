"""One options object: every query option means the same on every path, and nothing else is
sent to the service.

The paths of the library (query, a started job, fetch by id, a background query, a background
fetch, the result cache, a dataset) and of the command line run the same small queries against
the real sandbox; each option is checked where it has an effect, as a table.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from cortex_nb import (
    ConfigurationError,
    CortexError,
    Credentials,
    HTTPClient,
    QueryError,
    QueryService,
    ResultTooLarge,
)
from cortex_nb.cli import main as cli_main
from cortex_nb.options import OPTIONS, OptionError, QueryOptions, given, given_by
from cortex_nb.results.cache import CACHE_ENV, ResultCache
from cortex_nb.results.datasets import Dataset

ROWS_SQL = "SELECT source_ip, [1, 2] AS xs FROM `{i}.firewall.traffic` ORDER BY time_generated"
SLOW_SQL = "SELECT COUNT(*) AS n FROM `{i}.firewall.traffic` a, `{i}.firewall.traffic` b"


# -- the value itself ----------------------------------------------------------------------------
def test_defaults_are_the_documented_ones():
    options = QueryOptions()
    assert (options.limit, options.max_rows, options.page_size, options.parallel) == (
        None, 500_000, 10_000, 4
    )
    assert (options.structs, options.dtypes, options.timeout) == ("value", "objects", 3600.0)
    assert dict(options.properties) == {} and repr(options) == "QueryOptions()"


def test_an_unknown_option_names_the_closest_one_and_is_a_type_error():
    with pytest.raises(OptionError, match="unknown option 'page_sise': did you mean 'page_size'"):
        QueryOptions.build(page_sise=5)
    with pytest.raises(TypeError) as raised:
        QueryOptions.build(doing="submit_query()", bogus=1)
    error = raised.value
    assert isinstance(error, CortexError) and "submit_query() got an unknown option" in str(error)
    assert "properties={...}" in str(error)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": 0}, "limit must be at least 1"),
        ({"limit": True}, "limit must be a whole number"),
        ({"page_size": 100_001}, "page_size must be 1..100,000"),
        ({"parallel": 0}, "parallel must be 1..64"),
        ({"max_rows": -1}, "max_rows must be at least 1"),
        ({"timeout": -2}, "timeout must be positive seconds"),
        ({"timeout": "1"}, "timeout must be seconds"),
        ({"structs": "flat"}, "structs='flat': use 'value', 'keep', 'flatten'"),
        ({"dtypes": "numpy"}, "dtypes='numpy': use 'objects', 'arrow'"),
        ({"overwrite": True}, "give to=DIR too"),
        ({"to": "d", "cache": True}, "choose one"),
        ({"to": ""}, "to must name a directory"),
        ({"properties": {1: 2}}, "string keys"),
        ({"result_format": "csv"}, "use 'valuesDictionary', 'valuesArray'"),
    ],
)
def test_a_bad_value_is_refused_with_what_to_do(changes, message):
    with pytest.raises(OptionError, match=message):
        QueryOptions(**changes)


def test_zero_means_none_for_the_guardrail_and_the_timeout():
    options = QueryOptions(max_rows=0, timeout=0)
    assert options.max_rows is None and options.timeout is None


def test_options_are_frozen_and_replace_checks_again():
    options = QueryOptions(limit=5, properties={"a": 1})
    with pytest.raises(AttributeError):
        options.limit = 6  # type: ignore[misc]
    with pytest.raises(TypeError):
        options.properties["b"] = 2  # type: ignore[index]
    assert options.replace(limit=7).limit == 7 and options.limit == 5
    with pytest.raises(OptionError, match="limit must be at least 1"):
        options.replace(limit=-1)
    assert QueryOptions.build({"limit": 3}, parallel=2) == QueryOptions(limit=3, parallel=2)
    assert QueryOptions.build(options) is options


def test_command_lines_give_only_what_was_given():
    assert given(limit=None, max_rows=0, cache=None) == {"max_rows": 0}

    class Parsed:
        limit, structs, cache, overwrite = 3, None, True, False

    assert given_by(Parsed()) == {"limit": 3, "cache": True}
    assert {spec.name for spec in OPTIONS} == set(QueryOptions.__dataclass_fields__)


def test_the_guardrail_does_not_apply_to_a_dataset():
    assert QueryOptions(max_rows=5).guardrail == 5
    assert QueryOptions(max_rows=5, to="out").guardrail is None


# -- every path ----------------------------------------------------------------------------------
@pytest.fixture()
def service(sandbox, tmp_path, monkeypatch) -> QueryService:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials(),
                                                                 environ={}))
    yield QueryService(client=client)
    client.close()


def _frame(result: Any) -> pd.DataFrame:
    return result.to_pandas() if isinstance(result, Dataset) else result.df


def _by_query(service, sql, tmp_path, **options):
    return _frame(service.query(sql, **options))


def _by_started_job(service, sql, tmp_path, **options):
    job = service.start(sql, **options)
    with job.cancel_on_interrupt():
        return job.result().df


def _by_fetch(service, sql, tmp_path, **options):
    job_id = service.submit(sql)
    return _frame(service.fetch(job_id, **options))


def _by_background(service, sql, tmp_path, **options):
    return _frame(service.submit_query(sql, **options).result(60))


def _by_background_fetch(service, sql, tmp_path, **options):
    job_id = service.submit(sql)
    return _frame(service.submit_fetch(job_id, **options).result(60))


def _by_cache(service, sql, tmp_path, **options):
    """Through the result cache: the miss, then the hit, which must equal it."""
    miss = service.query(sql, cache=True, **options).df
    hit = service.query(sql, cache=True, **options)
    assert hit.__class__.__name__ == "CachedResult", "the second run is a cache hit"
    pd.testing.assert_frame_equal(hit.df, miss)
    return hit.df


def _by_dataset(service, sql, tmp_path, **options):
    target = tmp_path / f"ds-{len(list(tmp_path.iterdir()))}"
    dataset = service.query(sql, to=target, **options)
    return dataset.to_pandas(dtypes=options.get("dtypes", "objects"))


PATHS: dict[str, Callable[..., pd.DataFrame]] = {
    "query": _by_query,
    "job": _by_started_job,
    "fetch": _by_fetch,
    "background": _by_background,
    "background fetch": _by_background_fetch,
    "cache": _by_cache,
    "dataset": _by_dataset,
}
EXISTING_JOB = {"fetch", "background fetch"}


def _sql(sandbox, template: str = ROWS_SQL, limit: int = 20) -> str:
    return template.format(i=sandbox.instance_id) + f" LIMIT {limit}"


def _results_requests(sandbox) -> list:
    return [r for r in sandbox.requests if "/jobResults/" in r.path]


@pytest.mark.parametrize("path", PATHS)
def test_limit(path, sandbox, service, tmp_path):
    assert len(PATHS[path](service, _sql(sandbox), tmp_path, limit=3)) == 3


@pytest.mark.parametrize("path", PATHS)
def test_page_size(path, sandbox, service, tmp_path):
    frame = PATHS[path](service, _sql(sandbox), tmp_path, page_size=7, parallel=1)
    assert len(frame) == 20
    sizes = {r.query.get("pageSize") for r in _results_requests(sandbox)}
    assert sizes == {"7"}, sizes


@pytest.mark.parametrize("path", PATHS)
def test_parallel(path, sandbox, service, tmp_path):
    """One page at a time follows the cursor; several at once ask by offset."""
    PATHS[path](service, _sql(sandbox, limit=20), tmp_path, page_size=5, parallel=1)
    assert not any("offset" in r.query for r in _results_requests(sandbox))
    sandbox.clear()
    PATHS[path](service, _sql(sandbox, limit=21), tmp_path, page_size=5, parallel=3)
    assert any("offset" in r.query for r in _results_requests(sandbox))


@pytest.mark.parametrize("path", PATHS)
def test_structs(path, sandbox, service, tmp_path):
    kept = PATHS[path](service, _sql(sandbox), tmp_path, structs="keep")
    assert isinstance(kept["source_ip"].iloc[0], dict) and "value" in kept["source_ip"].iloc[0]
    flat = PATHS[path](service, _sql(sandbox), tmp_path, structs="flatten")
    assert "source_ip.value" in flat.columns


@pytest.mark.parametrize("path", PATHS)
def test_dtypes(path, sandbox, service, tmp_path):
    arrow = PATHS[path](service, _sql(sandbox), tmp_path, dtypes="arrow")
    assert isinstance(arrow["xs"].dtype, pd.ArrowDtype), arrow.dtypes
    objects = PATHS[path](service, _sql(sandbox), tmp_path, dtypes="objects")
    assert objects["xs"].dtype == object and objects["xs"].iloc[0] == [1, 2]


@pytest.mark.parametrize("path", PATHS)
def test_max_rows(path, sandbox, service, tmp_path):
    if path == "dataset":  # rows streamed to disk are not held in memory: no guardrail
        assert len(PATHS[path](service, _sql(sandbox), tmp_path, max_rows=5)) == 20
        return
    with pytest.raises(ResultTooLarge, match="more than max_rows=5"):
        PATHS[path](service, _sql(sandbox), tmp_path, max_rows=5)
    assert len(PATHS[path](service, _sql(sandbox), tmp_path, max_rows=0)) == 20


@pytest.mark.parametrize("path", PATHS)
def test_timeout(path, sandbox, service, tmp_path):
    with pytest.raises(QueryError, match="not finished within"):
        PATHS[path](service, _sql(sandbox), tmp_path, timeout=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_properties_are_what_is_sent(path, sandbox, service, tmp_path):
    sql = _sql(sandbox, SLOW_SQL, 1)
    if path in EXISTING_JOB:
        with pytest.raises(OptionError, match="already exists"):
            PATHS[path](service, sql, tmp_path, properties={"timeoutMs": 1})
        return
    with pytest.raises(QueryError, match="timed out"):
        PATHS[path](service, sql, tmp_path, properties={"timeoutMs": 1})
    [create] = [r for r in sandbox.requests if r.method == "POST" and r.path.endswith("/jobs")]
    assert create.json["params"]["properties"] == {"timeoutMs": 1}


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_option_is_refused_before_any_request(path, sandbox, service, tmp_path):
    with pytest.raises(OptionError, match="did you mean 'page_size'"):
        PATHS[path](service, _sql(sandbox), tmp_path, page_sise=5)
    creates = [r for r in sandbox.requests if r.method == "POST" and r.path.endswith("/jobs")]
    own = 1 if path in EXISTING_JOB else 0  # the test's own job, to fetch
    assert len(creates) == own and not _results_requests(sandbox)


@pytest.mark.parametrize("path", PATHS)
def test_result_format(path, sandbox, service, tmp_path):
    frame = PATHS[path](service, _sql(sandbox), tmp_path, result_format="valuesArray")
    assert list(frame.columns) == ["source_ip", "xs"] and len(frame) == 20
    assert {r.query.get("resultFormat") for r in _results_requests(sandbox)} == {"valuesArray"}


# -- the same frame, whichever way --------------------------------------------------------------
@pytest.mark.parametrize("dtypes", ["objects", "arrow"])
def test_every_path_gives_the_same_frame(sandbox, service, tmp_path, dtypes):
    sql = _sql(sandbox, limit=30)
    frames = {path: run(service, sql, tmp_path, dtypes=dtypes) for path, run in PATHS.items()}
    reference = frames.pop("query")
    for path, frame in frames.items():
        try:
            pd.testing.assert_frame_equal(frame, reference)
        except AssertionError as error:
            raise AssertionError(f"{path} differs from query(): {error}") from None


def test_a_dataset_and_a_frame_are_typed_the_same_when_a_page_holds_only_nulls(
    sandbox, service, tmp_path
):
    """The first page's column is all nulls; the catalog says it is a timestamp."""
    sql = (
        f"SELECT IF(n < 10, NULL, time_generated) AS time_generated, n FROM ("
        f"SELECT time_generated, ROW_NUMBER() OVER (ORDER BY time_generated) AS n "
        f"FROM `{sandbox.instance_id}.firewall.traffic`) ORDER BY n LIMIT 25"
    )
    frame = service.query(sql, page_size=10, parallel=1).df
    dataset = service.query(sql, page_size=10, parallel=1, to=tmp_path / "nulls").to_pandas()
    assert str(frame["time_generated"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(dataset, frame)


# -- the command line ----------------------------------------------------------------------------
def test_the_command_line_takes_every_flagged_option(capsys):
    from cortex_nb.cli import build_parser

    parser = build_parser()
    query = parser._subparsers._group_actions[0].choices["query"]  # argparse keeps them there
    flags = {s for action in query._actions for s in action.option_strings}
    assert {spec.flag for spec in OPTIONS if spec.flag and spec.name != "to"} <= flags


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--limit", "3"], lambda out, err, code: code == 0 and len(out.splitlines()) == 4),
        (["--max-rows", "5"], lambda out, err, code: code == 2 and "more than max_rows=5" in err),
        (["--structs", "keep"], lambda out, err, code: code == 0 and "'value':" in out),
        (["--page-size", "0"], lambda out, err, code: code == 2 and "error: --page-size must be" in err),
        (["--timeout", "-1"], lambda out, err, code: code == 2 and "error: --timeout must be" in err),
        (["--page-sise", "5"], lambda out, err, code: code == 2 and "did you mean --page-size" in err),
        (["--dtypes", "numpy"], lambda out, err, code: code == 2 and "invalid choice" in err),
        (["--parallel", "x"],
         lambda out, err, code: code == 2 and "error: --parallel must be a whole number, not 'x'"
         in err),
        (["--until", "now"],
         lambda out, err, code: code == 2 and "error: --until ends a window that --since starts: "
         "give --since 24h too." in err),
    ],
)
def test_the_command_line_options_mean_the_same(args, check, capsys):
    code = cli_main(["query", "SELECT source_ip FROM firewall.traffic LIMIT 20", "--sandbox",
                     *args])
    out, err = capsys.readouterr()
    assert check(out, err, code), (code, out[-300:], err[-300:])


def test_a_lone_between_before_the_sql_says_what_the_flag_takes(capsys):
    # argparse takes the SQL as END: the value is checked as a time, not run as the query
    code = cli_main(["query", "--sandbox", "--between", "2026-12-01",
                     "SELECT source_ip FROM firewall.traffic"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert ("error: --between: 'SELECT source_ip FROM firewall.traffic' is not a time; it takes "
            "two, START and END") in err and len(err.splitlines()) == 1
    assert "required: sql" not in err


def test_the_command_line_writes_a_dataset_typed_like_the_frame(tmp_path, capsys):
    sql = "SELECT source_ip, time_generated FROM firewall.traffic ORDER BY time_generated LIMIT 50"
    assert cli_main(["query", sql, "--sandbox", "--output", str(tmp_path / "ds")]) == 0
    dataset = Dataset(tmp_path / "ds")
    frame = dataset.to_pandas()
    assert len(frame) == 50 and str(frame["time_generated"].dtype) == "datetime64[us, UTC]"
    assert isinstance(frame["source_ip"].iloc[0], str)
    capsys.readouterr()


def test_results_cache_keys_follow_every_option_that_shapes_the_frame():
    cache = ResultCache("unused")
    base = QueryOptions()
    keys = {cache.key("t", "i", "SELECT 1", base.replace(**change))
            for change in ({}, {"dtypes": "arrow"}, {"structs": "keep"}, {"limit": 5},
                           {"properties": {"a": 1}}, {"result_format": "valuesArray"})}
    assert len(keys) == 6
    same = {cache.key("t", "i", "SELECT 1", base.replace(**change))
            for change in ({}, {"page_size": 5}, {"parallel": 1}, {"timeout": 9})}
    assert len(same) == 1, "paging and time do not change the frame"


def test_bad_options_on_the_python_api_are_configuration_errors_before_sending(sandbox, service):
    for call in (
        lambda: service.query("SELECT 1", bogus=1),
        lambda: service.start("SELECT 1", limit=0),
        lambda: service.submit_query("SELECT 1", to="x", cache=True),
        lambda: service.fetch("job-1", properties={"x": 1}),
        lambda: service.query("SELECT 1", options={"limit": 1}),
    ):
        with pytest.raises(ConfigurationError):
            call()
    assert [r for r in sandbox.requests if r.method == "POST"] == []


def test_a_path_object_for_to(sandbox, service, tmp_path):
    dataset = service.query(_sql(sandbox), to=Path(tmp_path) / "p", limit=4)
    assert isinstance(dataset, Dataset) and dataset.rows == 4


def test_the_readme_table_names_every_option_and_its_flag():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Query options")[1].split("\n## ")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named == {spec.name for spec in OPTIONS}
    flags = " ".join(row.split("|")[2] for row in rows)
    assert all(spec.flag in flags for spec in OPTIONS if spec.flag)
