"""Errors that teach: the service's message first, the SQL line with a caret, the closest
catalog names for an unknown table or column, the request id last.

Against the real sandbox over HTTP (through the magic and through ``QueryService``), and
``explain`` alone for the wording of other services (BigQuery's ``Unrecognized name``)."""

from __future__ import annotations

import re

import pytest

from cortex_nb import Credentials, HTTPClient, QueryError, QueryService
from cortex_nb.sql.guide import explain

from .support import failed_with, run_cell

REQUEST_ID = re.compile(r"; request id ([0-9a-f]{16,})\)$")


def cell_error(ip, cell: str) -> str:
    """The error a failed cell showed (the cell must fail, with no traceback)."""
    return failed_with(*run_cell(ip, cell))


def caret_under(lines: list[str]) -> str:
    """The text of the SQL line that the carets on the next line point at."""
    sql_line, carets = lines
    start = carets.index("^")
    return sql_line[start : start + carets.count("^")]


def test_an_unknown_column_gets_a_caret_and_the_closest_column(connected, sandbox):
    message = cell_error(connected, "%%cortex\nSELECT src_ip, app FROM firewall.traffic")
    lines = message.split("\n")
    # the sandbox speaks BigQuery: its own suggestion is not repeated by the catalog's
    assert lines[0].startswith("Unrecognized name: src_ip; Did you mean source_ip?")
    assert lines[0].lower().count("did you mean") == 1
    assert lines[1] == f"  1 | SELECT src_ip, app FROM `{sandbox.instance_id}.firewall.traffic`"
    assert caret_under(lines[1:3]) == "src_ip"
    assert len(lines) == 4 and REQUEST_ID.search(lines[3])


def test_a_typo_in_a_dotted_name_reads_like_a_typo_in_a_plain_one(connected):
    sql = "SELECT app FROM firewall.traffic WHERE sorce_ip.value = '10.1.7.23'"
    lines = cell_error(connected, f"%%cortex\n{sql}").split("\n")
    assert lines[0].startswith("Unrecognized name: sorce_ip; Did you mean source_ip? at [1:")
    assert lines[0].lower().count("did you mean") == 1
    assert caret_under(lines[1:3]).startswith("sorce_ip")


def test_braces_around_an_expression_are_refused_before_anything_is_sent(connected, sandbox):
    connected.user_ns["talkers"] = {"src": "10.1.7.23"}
    cell = '%%cortex\nSELECT app FROM firewall.traffic WHERE source_ip.value = {talkers["src"]}'
    message = cell_error(connected, cell)
    assert "\n" not in message and message.startswith('{talkers["src"]} in the query')
    assert "only {name} is substituted" in message
    assert sandbox.requests == []


def test_the_caret_is_on_the_line_that_holds_the_unknown_column(connected):
    sql = "SELECT\n  app,\n  bytes_snt\nFROM firewall.traffic\nLIMIT 5"
    lines = cell_error(connected, f"%%cortex\n{sql}").split("\n")
    assert "did you mean bytes_sent" in lines[0].lower()
    assert lines[1].startswith("  3 | ") and caret_under(lines[1:3]) == "bytes_snt"


def test_an_unknown_table_suggests_the_catalog_s_table(connected, sandbox):
    lines = cell_error(connected, "%%cortex\nSELECT * FROM firewall.trafic LIMIT 1").split("\n")
    assert lines[0].startswith("Table not found")
    assert "did you mean `firewall.traffic`?" in lines[0]
    assert caret_under(lines[1:3]) == f"`{sandbox.instance_id}.firewall.trafic`"


def test_an_unknown_struct_subfield_suggests_the_subfield(connected):
    lines = cell_error(connected, "%%cortex\nSELECT source_ip.valeu FROM firewall.traffic")
    assert "did you mean `source_ip.value`" in lines.split("\n")[0]


def test_a_column_of_an_aliased_table_is_looked_up_in_that_table(connected):
    sql = (
        "SELECT t.app, h.threat_nme FROM firewall.traffic t "
        "JOIN firewall.threat h ON t.session_id = h.session_id"
    )
    lines = cell_error(connected, f"%%cortex\n{sql}").split("\n")
    assert re.search(r"did you mean `?threat_name", lines[0], re.IGNORECASE), lines[0]
    # the service points at the field; the caret covers the whole name as written
    assert caret_under(lines[1:3]) == "h.threat_nme"


def test_a_syntax_error_gets_the_caret_at_the_line_and_column_the_service_names(connected):
    lines = cell_error(connected, "%%cortex\nSELECT app\nFROM firewall.traffic WHERE").split("\n")
    assert lines[0].startswith("Syntax error") and "line 2, column" in lines[0]
    assert "did you mean" not in lines[0]
    assert lines[1].startswith("  2 | FROM") and lines[2].rstrip().endswith("^")
    assert caret_under(lines[1:3]) == "E"  # sqlglot points at the end of WHERE


def test_an_error_naming_no_catalog_name_gets_only_the_caret_the_service_points_at(connected):
    message = cell_error(connected, "%%cortex\nSELECT nosuchfunc(app) FROM firewall.traffic")
    lines = message.split("\n")
    assert lines[0].startswith("Function not found: nosuchfunc") and "did you mean" not in message
    assert caret_under(lines[1:3]) == "n"  # [1:8]: where the function name starts
    assert len(lines) == 4 and REQUEST_ID.search(lines[3])


def test_query_service_raises_the_same_lesson_from_python(sandbox):
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    with client, pytest.raises(QueryError) as caught:
        QueryService(client=client).query("SELECT dest_prot FROM firewall.traffic")
    lines = str(caught.value).split("\n")
    assert "did you mean dest_port" in lines[0].lower() and caret_under(lines[1:3]) == "dest_prot"
    assert REQUEST_ID.search(lines[-1])


# ---- other services' wording --------------------------------------------------------------


def test_bigquery_wording_with_a_position():
    lesson = explain("Unrecognized name: src_ip at [1:8]", "SELECT src_ip FROM firewall.traffic")
    assert lesson.hint == "did you mean `source_ip`, `is_ipv6` or `dest_ip`?"
    assert lesson.excerpt.split("\n")[1] == "    |        ^^^^^^"


def test_a_table_named_without_quotes_in_the_message():
    lesson = explain("Not found: Table 1234:firewall.thraet was not found", "SELECT * FROM firewall.thraet")
    assert lesson.hint == "did you mean `firewall.threat`?"


def test_a_name_the_catalog_knows_gets_the_caret_but_no_suggestion():
    """A documented column or log type this service lacks: nothing closer to suggest."""
    sql = "SELECT app, source_ip FROM firewall.traffic"
    lesson = explain('Referenced column "source_ip" not found', sql)
    assert lesson.hint == "" and caret_under(lesson.excerpt.split("\n")) == "source_ip"
    lesson = explain("Table not found: `firewall.auth`", "SELECT * FROM firewall.auth")
    assert lesson.hint == "" and caret_under(lesson.excerpt.split("\n")) == "firewall.auth"


def test_a_common_table_expression_is_not_an_unknown_table():
    sql = "WITH recent AS (SELECT app FROM firewall.traffic) SELECT ap FROM recent"
    lesson = explain('Table "recent" does not have a column named "ap"', sql)
    assert lesson.hint == "did you mean `app`?"  # a column, not another table for `recent`
    assert caret_under(lesson.excerpt.split("\n")) == "ap"


@pytest.mark.parametrize("message, sql", [
    ("Unrecognized name: x", "SELECT 'unclosed FROM"),
    ("line 99, column 5: nope", "SELECT 1"),
    ("not found", ""),
    ("Unknown column `a`", "SELECT `a` FROM `"),
])
def test_explain_never_raises(message, sql):
    explain(message, sql)


def test_a_long_line_is_cut_around_the_caret():
    sql = "SELECT " + ", ".join(f"app AS a{i}" for i in range(40)) + ", srcip FROM firewall.traffic"
    excerpt = explain('Referenced column "srcip" not found', sql).excerpt
    shown, carets = excerpt.split("\n")
    assert len(shown) < 120 and shown.startswith("  1 | …") and caret_under([shown, carets]) == "srcip"
