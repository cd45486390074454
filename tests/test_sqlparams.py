"""SQL parameters become typed, safely quoted literals; table names get the instance id."""

from __future__ import annotations

import datetime as dt

import pytest

from cortex_nb.exceptions import ConfigurationError
from cortex_nb.sql.params import qualify_tables, render_parameters, sql_literal


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        (None, "NULL"),
        (True, "TRUE"),
        (False, "FALSE"),
        (42, "42"),
        (-7, "-7"),
        (2.5, "2.5"),
        ("plain", "'plain'"),
        ("it's", "'it\\'s'"),
        ('x" OR 1=1 --', "'x\" OR 1=1 --'"),
        ("back\\slash", "'back\\\\slash'"),
        ("two\nlines", "'two\\nlines'"),
        (dt.datetime(2020, 3, 1, 12, 30), 'TIMESTAMP("2020-03-01 12:30:00")'),
        (dt.datetime(2020, 3, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), 'TIMESTAMP("2020-03-01 12:00:00")'),
        (dt.date(2020, 3, 1), 'DATE("2020-03-01")'),
        ([1, "a", None], "(1, 'a', NULL)"),
        (("x",), "('x')"),
    ],
)
def test_literals(value, literal):
    assert sql_literal(value) == literal


@pytest.mark.parametrize("bad", [[], float("nan"), float("inf"), object(), {"a": 1}])
def test_values_that_cannot_be_literals_are_refused(bad):
    with pytest.raises(ConfigurationError):
        sql_literal(bad)


def test_render_replaces_names_outside_quotes_only():
    sql = "SELECT '{a}', \"{a}\", `{a}` FROM t WHERE x = {a} AND y IN {ys} -- {{literal}}"
    out = render_parameters(sql, {"a": "v", "ys": [1, 2]})
    assert out == "SELECT '{a}', \"{a}\", `{a}` FROM t WHERE x = 'v' AND y IN (1, 2) -- {literal}"


def test_hostile_string_cannot_escape_its_literal():
    out = render_parameters("WHERE app = {app}", {"app": "x' OR 1=1 --"})
    assert out == "WHERE app = 'x\\' OR 1=1 --'"


def test_unknown_name_is_an_error_naming_it():
    with pytest.raises(ConfigurationError, match="missing_var"):
        render_parameters("WHERE a = {missing_var}", {})


def test_never_evaluates_expressions():
    with pytest.raises(ConfigurationError):
        render_parameters("WHERE a = {__import__}", {})
    calls = []
    with pytest.raises(ConfigurationError, match=r"only \{name\}"):
        render_parameters("{os.system('x')}", {"os": type("Os", (), {"system": calls.append})})
    assert calls == []


@pytest.mark.parametrize(
    "expression",
    ['talkers.iloc[0]["src"]', "row['src']", "x + 1", "f(x)", "a.b", " name ", "x!r", ""],
)
def test_braces_around_anything_but_a_name_are_refused_before_sending(expression):
    sql = f"SELECT app FROM firewall.traffic WHERE source_ip.value = {{{expression}}}"
    with pytest.raises(ConfigurationError) as raised:
        render_parameters(sql, {"talkers": object(), "row": {"src": "10.1.7.23"}, "x": 1})
    message = str(raised.value)
    assert "\n" not in message and f"{{{expression}}}" in message
    assert "only {name} is substituted" in message
    assert f"value = {expression.strip() or '...'}" in message and "{value}" in message


def test_braces_in_strings_json_and_escapes_are_not_parameters():
    sql = (
        "SELECT JSON_VALUE('{\"a\": {\"b\": 1}}', '$.a.b') AS j, \"{x.y}\" AS s, `{a b}` AS t"
        " -- {{x.y}}"
    )
    out = render_parameters(sql, {})
    assert out == sql.replace("{{x.y}}", "{x.y}")


def test_qualify_tables_adds_the_instance_id():
    sql = "SELECT * FROM `firewall.traffic` t JOIN firewall.threat h ON t.a = h.a"
    assert qualify_tables(sql, "inst1") == (
        "SELECT * FROM `inst1.firewall.traffic` t JOIN `inst1.firewall.threat` h ON t.a = h.a"
    )


def test_qualify_tables_leaves_qualified_names_strings_and_no_instance_alone():
    sql = "SELECT 'firewall.traffic' FROM `other.firewall.traffic` WHERE x = \"FROM log.system\""
    assert qualify_tables(sql, "inst1") == sql
    assert qualify_tables("FROM `firewall.traffic`", None) == "FROM `firewall.traffic`"
    assert qualify_tables("from log.system", "i") == "from `i.log.system`"
