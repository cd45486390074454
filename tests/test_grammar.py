"""The magic's grammar: one description drives parsing (argparse) and Tab completion alike."""

from __future__ import annotations

import pytest

from cortex_nb.notebook import grammar
from cortex_nb.notebook.completion import complete
from cortex_nb.notebook.errors import CortexCellError
from cortex_nb.notebook.grammar import CellCommand, LineCommand, parse_line


def texts(code: str) -> list[str]:
    found = complete(code, len(code))
    return [] if found is None else [text for text, _ in found.items]


def long_flags(parser) -> list[str]:
    return [s for a in parser._actions for s in a.option_strings if s.startswith("--")]


def test_every_option_the_cell_parser_accepts_is_completed():
    accepted = long_flags(grammar.cell_parser())
    assert "--dtypes" in accepted and "--bg" in accepted
    assert texts("%%cortex --") == accepted
    for option in grammar.cell_options():
        if option.choices:
            assert texts(f"%%cortex {option.flags[-1]} ") == list(option.choices)


def test_every_subcommand_and_its_options_are_completed():
    chooser = grammar.line_parser()._subparsers._group_actions[0]
    assert texts("%cortex ") == list(chooser.choices)
    for name, parser in chooser.choices.items():
        offered = texts(f"%cortex {name} --")
        assert offered == long_flags(parser), name


def test_an_option_added_to_the_grammar_is_parsed_and_completed(monkeypatch):
    added = grammar.Option(("--colour",), str, "a new option", choices=("red", "blue"))
    monkeypatch.setattr(grammar, "CELL_OPTIONS", (*grammar.CELL_OPTIONS, added))
    assert grammar.cell_parser().parse_args(["--colour", "red"]).colour == "red"
    assert texts("%%cortex --col") == ["--colour"]
    assert texts("%%cortex --colour ") == ["red", "blue"]
    with pytest.raises(CortexCellError, match="invalid choice: 'green'"):
        grammar.cell_parser().parse_args(["--colour", "green"])


def test_every_cell_option_lands_in_the_cell_command():
    fields = set(CellCommand.__dataclass_fields__)
    assert {option.dest for option in grammar.cell_options()} <= fields
    command = grammar.parse_cell("--bg -o x --dtypes arrow --to d --overwrite", "SELECT 1")
    assert (command.background, command.output, command.dtypes) == (True, "x", "arrow")
    assert (command.to, command.overwrite) == ("d", True)


@pytest.mark.parametrize(("line", "kind", "what"), [
    ("-o x SELECT 1", CellCommand, "sql"),
    ("GET /query/v2/jobs -o r", CellCommand, "rest"),
    ("connect sandbox --rows 5", LineCommand, "connect"),
    ("", LineCommand, "status"),
    ("fetch abc --limit 3  # a note", LineCommand, "fetch"),
])
def test_a_line_is_sql_a_request_or_a_subcommand(line, kind, what):
    command = parse_line(line)
    assert isinstance(command, kind)
    assert (command.mode if kind is CellCommand else command.name) == what


def test_a_subcommand_s_arguments_arrive_by_name():
    command = parse_line("connect sandbox --rows 5 --process")
    assert (command.args.target, command.args.rows, command.args.process) == ("sandbox", 5, True)
    assert parse_line("connect sandbox").args.process is None  # not given: the running one's
    assert parse_line("trace").args.n == 1 and parse_line("cache").args.action == "list"


@pytest.mark.parametrize("line", ['connect --url "http://x', "nonsense", "columns"])
def test_a_bad_line_is_one_line_naming_the_magic(line):
    with pytest.raises(CortexCellError, match=r"^%cortex"):
        parse_line(line)
