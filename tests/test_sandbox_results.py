"""Sandbox job results: paging modes and their errors, formats, schema, value encodings, csql."""

from __future__ import annotations

import pytest

from tests.conftest import SANDBOX_ROWS

INT64_MIN = -9223372036854775808


@pytest.fixture()
def ordered_job(sandbox_api) -> str:
    """A finished job over every traffic row, ordered by session id."""
    sql = f"SELECT session_id, app FROM {sandbox_api.traffic} ORDER BY session_id"
    job_id = sandbox_api.create(sql).json()["jobId"]
    assert sandbox_api.results(job_id, maxWait=2000).json()["state"] == "DONE"
    return job_id


def walk_cursor(sandbox_api, job_id: str, **params) -> list[dict]:
    pages, cursor = [], None
    while True:
        extra = {"pageCursor": cursor} if cursor else {}
        page = sandbox_api.results(job_id, **params, **extra).json()
        pages.append(page)
        cursor = page["page"]["pageCursor"]
        if cursor is None:
            return pages


def test_cursor_paging_covers_every_row_in_order(sandbox_api, ordered_job):
    pages = walk_cursor(sandbox_api, ordered_job, pageSize=700)
    assert [p["rowsInPage"] for p in pages] == [700, 700, 700, 700, SANDBOX_ROWS - 2800]
    assert {p["rowsInJob"] for p in pages} == {SANDBOX_ROWS}
    ids = [row["session_id"] for p in pages for row in p["page"]["result"]["data"]]
    assert ids == sorted(ids) and len(set(ids)) == SANDBOX_ROWS
    assert pages[-1]["page"]["pageCursor"] is None


def test_default_page_size_is_10000(sandbox_api, ordered_job):
    page = sandbox_api.results(ordered_job).json()
    assert page["rowsInPage"] == SANDBOX_ROWS and page["page"]["pageCursor"] is None


def test_default_page_size_property_of_the_job_applies(sandbox_api):
    sql = f"SELECT session_id FROM {sandbox_api.traffic}"
    job_id = sandbox_api.create(sql, params={"properties": {"defaultPageSize": 1000}}).json()[
        "jobId"
    ]
    pages = walk_cursor(sandbox_api, job_id, maxWait=2000)
    assert [p["rowsInPage"] for p in pages] == [1000, 1000, 1000]


def test_offset_paging(sandbox_api, ordered_job):
    everything = sandbox_api.results(ordered_job).json()["page"]["result"]["data"]
    page = sandbox_api.results(ordered_job, offset=2950, pageSize=100).json()
    assert page["rowsInPage"] == 50
    assert page["page"]["result"]["data"] == everything[2950:]
    assert page["page"]["pageCursor"] is None


def test_offset_past_the_end_is_an_empty_last_page(sandbox_api, ordered_job):
    page = sandbox_api.results(ordered_job, offset=SANDBOX_ROWS + 5).json()
    assert page["rowsInPage"] == 0 and page["page"]["result"]["data"] == []
    assert page["page"]["pageCursor"] is None


def test_page_number_uses_the_default_page_size_and_ignores_page_size(sandbox_api):
    sql = f"SELECT session_id FROM {sandbox_api.traffic} ORDER BY session_id"
    job_id = sandbox_api.create(sql, params={"properties": {"defaultPageSize": 1000}}).json()[
        "jobId"
    ]
    everything = sandbox_api.results(job_id, maxWait=2000, pageSize=5000).json()
    page = sandbox_api.results(job_id, pageNumber=1, pageSize=7).json()
    assert page["rowsInPage"] == 1000
    assert page["page"]["result"]["data"] == everything["page"]["result"]["data"][1000:2000]


def test_a_cursor_continues_with_its_page_size(sandbox_api, ordered_job):
    first = sandbox_api.results(ordered_job, pageSize=1000).json()
    second = sandbox_api.results(ordered_job, pageCursor=first["page"]["pageCursor"]).json()
    assert second["rowsInPage"] == 1000
    assert (
        second["page"]["result"]["data"][0]["session_id"]
        > first["page"]["result"]["data"][-1]["session_id"]
    )


@pytest.mark.parametrize(
    "params",
    [
        {"pageCursor": "x", "offset": 0},
        {"pageCursor": "x", "pageNumber": 0},
        {"pageCursor": "not-a-cursor"},
        {"pageSize": 100_001},
        {"pageSize": 0},
        {"pageSize": "ten"},
        {"offset": -1},
        {"resultFormat": "valuesJson"},
    ],
)
def test_bad_paging_parameters_are_400(sandbox_api, ordered_job, params):
    r = sandbox_api.results(ordered_job, **params)
    assert r.status_code == 400
    assert r.json()["errors"][0]["errorCode"] == 400


def test_page_size_up_to_100000_is_accepted(sandbox_api, ordered_job):
    assert sandbox_api.results(ordered_job, pageSize=100_000).json()["rowsInPage"] == SANDBOX_ROWS


def test_a_cursor_from_another_job_is_400(sandbox_api, ordered_job):
    cursor = sandbox_api.results(ordered_job, pageSize=10).json()["page"]["pageCursor"]
    other = sandbox_api.create("SELECT 1 AS x").json()["jobId"]
    r = sandbox_api.results(other, pageCursor=cursor, maxWait=2000)
    assert r.status_code == 400 and "another job" in r.json()["errors"][0]["message"]


def test_values_array_rows_follow_the_schema_order(sandbox_api):
    sql = (
        f"SELECT session_id, app, dest_user FROM {sandbox_api.traffic} ORDER BY session_id LIMIT 3"
    )
    as_dicts = sandbox_api.run(sql)
    as_arrays = sandbox_api.run(sql, resultFormat="valuesArray")
    assert as_arrays["resultFormat"] == "valuesArray"
    names = [f["name"] for f in as_arrays["schema"]["fields"]]
    assert names == ["session_id", "app", "dest_user"]
    for row, array in zip(as_dicts["page"]["result"]["data"], as_arrays["page"]["result"]["data"]):
        assert array == [row.get(name) for name in names]  # nulls kept as null in arrays
        assert "dest_user" not in row


def test_schema_uses_bigquery_type_names(sandbox_api):
    sql = (
        "SELECT time_generated, source_ip, bytes_sent, app, is_nat, characteristics_of_app, "
        f"bytes_sent / 2 AS half FROM {sandbox_api.traffic} LIMIT 1"
    )
    fields = {f["name"]: f for f in sandbox_api.run(sql)["schema"]["fields"]}
    assert fields["time_generated"]["type"] == "TIMESTAMP"
    assert fields["bytes_sent"]["type"] == "INTEGER"
    assert fields["app"]["type"] == "STRING"
    assert fields["is_nat"]["type"] == "BOOLEAN"
    assert fields["half"]["type"] == "FLOAT"
    assert fields["characteristics_of_app"]["mode"] == "REPEATED"
    assert fields["characteristics_of_app"]["type"] == "STRING"
    assert fields["source_ip"]["type"] == "RECORD"
    assert [f["name"] for f in fields["source_ip"]["fields"]] == ["value", "hex"]


def test_values_are_encoded_as_the_service_does(sandbox_api):
    rows = sandbox_api.rows(f"SELECT * FROM {sandbox_api.traffic}")
    row = rows[0]
    assert isinstance(row["time_generated"], int) and row["time_generated"] > 1_500_000_000_000_000
    ip = row["source_ip"]
    assert set(ip) == {"value", "hex"}
    octets = [int(part) for part in ip["value"].split(".")]
    assert ip["hex"] == "00000000000000000000ffff" + "".join(f"{o:02x}" for o in octets)
    assert set(row["protocol"]) == {"id", "value"} and row["protocol"]["value"] in (
        "tcp",
        "udp",
        "icmp",
    )
    assert isinstance(row["characteristics_of_app"], list)
    assert isinstance(row["is_nat"], bool)
    assert isinstance(row["log_source_id"], str) and isinstance(row["customer_id"], str)
    assert {r["action_flags"] for r in rows} >= {INT64_MIN, 0}
    assert set(row["inbound_if_details"]) == {"unit", "type", "slot", "port"}


def test_null_columns_are_left_out_of_dictionary_rows(sandbox_api):
    rows = sandbox_api.rows(f"SELECT * FROM {sandbox_api.traffic}")
    assert all("dest_user" not in r for r in rows)
    without_nat = [r for r in rows if not r["is_nat"]]
    assert without_nat and all("nat_source" not in r for r in without_nat)
    assert all("nat_source" in r for r in rows if r["is_nat"])


def test_rows_in_page_sum_to_rows_in_job_for_a_grouped_query(sandbox_api):
    sql = f"SELECT app, COUNT(*) AS n FROM {sandbox_api.traffic} GROUP BY app ORDER BY n DESC"
    pages = walk_cursor(
        sandbox_api, sandbox_api.create(sql).json()["jobId"], pageSize=3, maxWait=2000
    )
    assert sum(p["rowsInPage"] for p in pages) == pages[0]["rowsInJob"] > 3
    assert sum(r["n"] for p in pages for r in p["page"]["result"]["data"]) == SANDBOX_ROWS


@pytest.mark.parametrize(
    "where",
    [
        'app = "ssl"',
        "app LIKE 'ms-%'",
        'time_generated BETWEEN TIMESTAMP("2020-03-01 00:00:00") AND CURRENT_TIMESTAMP',
        "time_generated > TIMESTAMP_SUB(CURRENT_TIMESTAMP, INTERVAL 1 DAY)",
        'source_ip.value LIKE "10.%"',
        "dest_port BETWEEN 1 AND 1024",
    ],
)
def test_csql_filters_find_rows(sandbox_api, where):
    rows = sandbox_api.rows(f"SELECT COUNT(*) AS n FROM {sandbox_api.traffic} WHERE {where}")
    assert 0 < rows[0]["n"] <= SANDBOX_ROWS


def test_tables_without_instance_prefix_and_unquoted_names_work(sandbox_api):
    a = sandbox_api.rows("SELECT COUNT(*) AS n FROM `firewall.traffic`")
    b = sandbox_api.rows("SELECT COUNT(*) AS n FROM sandbox0.firewall.traffic")
    assert a == b == [{"n": SANDBOX_ROWS}]


def test_unnamed_columns_get_bigquery_names(sandbox_api):
    rows = sandbox_api.rows(f"SELECT COUNT(*), MAX(time_generated) FROM {sandbox_api.traffic}")
    assert set(rows[0]) == {"f0_", "f1_"}


def test_order_by_and_limit(sandbox_api):
    sql = f"SELECT time_generated FROM {sandbox_api.traffic} ORDER BY time_generated DESC LIMIT 25"
    times = [r["time_generated"] for r in sandbox_api.rows(sql)]
    assert len(times) == 25 and times == sorted(times, reverse=True)
