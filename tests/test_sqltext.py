"""Reading csql text: the tables a query names, its outer SELECT list, where a table goes."""

from __future__ import annotations

import pytest

from cortex_nb.sql.text import SelectItem, cte_names, expects_table, outer_select, table_refs


def refs(sql: str) -> list[tuple[str, str | None]]:
    return [(r.name, r.alias) for r in table_refs(sql)]


def test_tables_with_and_without_aliases_instance_ids_and_backticks():
    sql = (
        "SELECT * FROM `1234.firewall.traffic` AS t LEFT OUTER JOIN firewall.threat h "
        "ON t.session_id = h.session_id, log.system WHERE TRUE"
    )
    assert refs(sql) == [
        ("1234.firewall.traffic", "t"), ("firewall.threat", "h"), ("log.system", None)
    ]


def test_from_in_strings_comments_and_extract_is_no_table():
    sql = (
        "SELECT EXTRACT(HOUR FROM time_generated), 'FROM fake.table' -- FROM other.table\n"
        "FROM firewall.url /* JOIN hidden.table */ LIMIT 5"
    )
    assert refs(sql) == [("firewall.url", None)]


def test_subqueries_ctes_and_unnest():
    sql = (
        "WITH recent AS (SELECT app FROM firewall.traffic) "
        "SELECT * FROM recent, UNNEST(recent.tags) AS tag JOIN (SELECT 1 FROM log.config) c ON TRUE"
    )
    assert refs(sql) == [("firewall.traffic", None), ("recent", None), ("log.config", None)]
    assert cte_names(sql) == {"recent"}


def test_the_outer_select_list():
    items, tables = outer_select(
        "SELECT DISTINCT t.app, source_ip.value, bytes AS b, bytes b2, COUNT(*) AS n, t.* "
        "FROM firewall.traffic t WHERE app IN (SELECT app FROM firewall.threat)"
    )
    assert items == [
        SelectItem("app", ("t", "app")), SelectItem("value", ("source_ip", "value")),
        SelectItem("b", ("bytes",)), SelectItem("b2", ("bytes",)), SelectItem(),
        SelectItem(path=("t",), star=True),
    ]
    assert [(r.name, r.alias) for r in tables] == [("firewall.traffic", "t")]


@pytest.mark.parametrize("sql", [
    "SELECT a FROM firewall.traffic UNION ALL SELECT a FROM firewall.threat",
    "SELECT a FROM (SELECT a FROM firewall.traffic)",
    "SELECT x FROM UNNEST([1, 2]) AS x",
    "SELECT 1",
])
def test_an_outer_select_it_cannot_follow_is_none(sql):
    assert outer_select(sql) is None


@pytest.mark.parametrize(("before", "expected"), [
    ("SELECT * FROM ", True),
    ("SELECT * FROM firewall.traffic t JOIN ", True),
    ("SELECT * FROM a, ", True),
    ("SELECT * FROM a t WHERE x IN (SELECT y FROM ", True),
    ("SELECT ", False),
    ("SELECT EXTRACT(DAY FROM ", False),
    ("SELECT * FROM a WHERE ", False),
    ("SELECT a, ", False),
])
def test_where_a_table_goes(before, expected):
    assert expects_table(before) is expected
