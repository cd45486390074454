"""Parsing %%cortex cells: SQL vs REST mode and options (no kernel, no network)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from cortex_nb.notebook.magic import parse_cell


def test_sql_mode_with_every_option():
    cmd = parse_cell("-o df --trace --dry-run --limit 5 --page-size 100 --raw", "SELECT 1\n")
    assert (cmd.mode, cmd.text, cmd.output) == ("sql", "SELECT 1", "df")
    assert (cmd.trace, cmd.dry_run, cmd.raw) == (True, True, True)
    assert (cmd.limit, cmd.page_size) == (5, 100)


def test_rest_mode_on_the_magic_line():
    cmd = parse_cell("POST /query/v2/jobs -o r", '{"params": {"query": "SELECT 1"}}')
    assert (cmd.mode, cmd.method, cmd.path, cmd.output) == ("rest", "POST", "/query/v2/jobs", "r")
    assert cmd.text == '{"params": {"query": "SELECT 1"}}'


def test_rest_mode_on_the_first_cell_line():
    cmd = parse_cell("", "get /query/v2/jobs\n")
    assert (cmd.mode, cmd.method, cmd.path, cmd.text) == ("rest", "GET", "/query/v2/jobs", "")


def test_sql_starting_with_a_method_like_word_stays_sql():
    assert parse_cell("", "SELECT 1 FROM x").mode == "sql"


@pytest.mark.parametrize(
    ("line", "cell"),
    [("", "   "), ("--limit abc", "SELECT 1"), ("--bogus", "SELECT 1"), ("FETCH /x", "{}"), ("GET", "")],
)
def test_bad_cells_are_usage_errors(line, cell):
    with pytest.raises(UsageError):
        parse_cell(line, cell)
