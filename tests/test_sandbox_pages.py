"""Results pages rendered to JSON when they are asked for: the same rows at any offset and in
either format, a plain SELECT read in place exactly as a stored result, and a stored result's
size (what retention bounds) close to the bytes it serves."""

from __future__ import annotations

import orjson


def test_a_page_renders_the_same_rows_wherever_it_starts(sandbox_api):
    sql = f"SELECT * FROM {sandbox_api.traffic}"
    job = sandbox_api.create(sql).json()["jobId"]
    everything = sandbox_api.results(job, maxWait=2000, pageSize=3000).json()["page"]["result"]["data"]
    middle = sandbox_api.results(job, offset=1234, pageSize=321).json()
    assert middle["page"]["result"]["data"] == everything[1234:1555]
    assert middle["rowsInPage"] == 321 and middle["rowsInJob"] == len(everything)
    arrays = sandbox_api.results(job, offset=1234, pageSize=321, resultFormat="valuesArray").json()
    names = [f["name"] for f in arrays["schema"]["fields"]]
    as_dicts = [{n: v for n, v in zip(names, row, strict=True) if v is not None}
                for row in arrays["page"]["result"]["data"]]
    assert as_dicts == everything[1234:1555]


def test_a_plain_select_read_in_place_gives_what_a_stored_result_gives(sandbox_api):
    in_place = sandbox_api.create(f"SELECT *, source_ip.value AS src FROM {sandbox_api.traffic}")
    stored = sandbox_api.create(f"SELECT *, source_ip.value AS src FROM {sandbox_api.traffic} "
                                "WHERE session_id IS NOT NULL OR session_id IS NULL")
    for params in ({"offset": 0, "pageSize": 3000}, {"offset": 777, "pageSize": 555},
                   {"offset": 2900, "pageSize": 555, "resultFormat": "valuesArray"}):
        pages = [sandbox_api.results(r.json()["jobId"], maxWait=2000, **params).json()
                 for r in (in_place, stored)]
        assert pages[0]["page"]["result"] == pages[1]["page"]["result"]
        assert pages[0]["rowsInJob"] == pages[1]["rowsInJob"] == 3000
        assert pages[0]["schema"] == pages[1]["schema"]


def test_a_stored_results_size_is_about_the_json_it_serves(sandbox, sandbox_api):
    sql = f"SELECT * FROM {sandbox_api.traffic} WHERE session_id IS NOT NULL"
    job = sandbox_api.create(sql).json()["jobId"]
    rows = sandbox_api.results(job, maxWait=2000, pageSize=100_000).json()["page"]["result"]["data"]
    served = sum(len(orjson.dumps(row)) for row in rows)
    kept = sandbox.jobs.get(job).result.size
    assert abs(kept - served) / served < 0.1


def test_plain_selects_read_in_place_keep_nothing_and_never_expire():
    from cortex_nb.sandbox import Sandbox
    from tests.conftest import sandbox_client

    with Sandbox(rows=3000, results_mb=1) as sb, sandbox_client(sb) as api:
        jobs = [api.create(f"SELECT * FROM {api.traffic}").json()["jobId"] for _ in range(3)]
        for job in jobs:
            assert api.results(job, maxWait=2000, pageSize=1).json()["rowsInJob"] == 3000
        assert sb.jobs.results.kept_bytes == 0
        assert all(api.results(job, offset=2999).json()["rowsInPage"] == 1 for job in jobs)
