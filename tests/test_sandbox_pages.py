"""Results pages rendered to JSON when they are asked for: the same rows at any offset and in
either format, and a result's size (what retention bounds) close to the bytes it serves."""

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


def test_a_results_size_is_about_the_json_it_serves(sandbox, sandbox_api):
    job = sandbox_api.create(f"SELECT * FROM {sandbox_api.traffic}").json()["jobId"]
    rows = sandbox_api.results(job, maxWait=2000, pageSize=100_000).json()["page"]["result"]["data"]
    served = sum(len(orjson.dumps(row)) for row in rows)
    kept = sandbox.jobs.get(job).result.size
    assert abs(kept - served) / served < 0.1
