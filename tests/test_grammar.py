"""The magic's grammar: one description drives parsing (argparse) and Tab completion alike."""

from __future__ import annotations

import dataclasses

import pytest

from cortex_nb import options
from cortex_nb.notebook import grammar
from cortex_nb.notebook.completion import complete
from cortex_nb.notebook.errors import CortexCellError
from cortex_nb.notebook.grammar import CellCommand, LineCommand, parse_line
from cortex_nb.notebook.magic import CortexMagics


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


def test_the_cell_s_own_options_are_fields_and_its_query_options_a_dict():
    fields = set(CellCommand.__dataclass_fields__)
    assert {option.dest for option in grammar.CELL_OPTIONS} <= fields
    command = grammar.parse_cell("--bg -o x --dtypes arrow --to d --overwrite", "SELECT 1")
    assert (command.background, command.output) == (True, "x")
    assert command.options == {"dtypes": "arrow", "to": "d", "overwrite": True}
    assert command.dtypes == "arrow" and command.limit is None  # read as the old fields were


SAMPLES = {int: ("7", 7), float: ("2.5", 2.5), str: ("somewhere", "somewhere")}
# options whose values are times: words on the line, and the value they mean
TIME_SAMPLES = {
    "between": (["2026-12-01", "2026-12-02"], ["2026-12-01", "2026-12-02"]),
    "since": (["24h"], "24h"),
    "until": (["2026-12-02"], "2026-12-02"),
}
NAMED_SAMPLES = {"split": ("1h", "1h")}  # what these options take is narrower than their kind
# what an option needs beside it to be a valid query's options
NEEDS = {"overwrite": " --to d", "until": " --since 1h", "split": " --since 1d",
         "resume": " --split 1h --since 1d --to d"}


def flagged_specs():
    return [spec for spec in options.OPTIONS if spec.flag]


def sample(spec) -> tuple[list[str], object]:
    """The words that give ``spec`` on a command line, and the value they mean."""
    if spec.kind is bool:
        return [spec.flag], True
    if spec.name in TIME_SAMPLES:
        texts_, value = TIME_SAMPLES[spec.name]
        return [spec.flag, *texts_], value
    if spec.name in NAMED_SAMPLES:
        return [spec.flag, NAMED_SAMPLES[spec.name][0]], NAMED_SAMPLES[spec.name][1]
    text, value = (spec.choices[-1],) * 2 if spec.choices else SAMPLES[spec.kind]
    return [spec.flag, text], value


@pytest.mark.parametrize("spec", flagged_specs(), ids=lambda spec: spec.flag)
def test_every_query_option_is_parsed_completed_and_reaches_query_options(spec):
    words, value = sample(spec)
    extra = NEEDS.get(spec.name, "")
    cell = grammar.parse_cell(" ".join(words) + extra, "SELECT 1")
    assert cell.options[spec.name] == value
    fetch = parse_line("fetch job-1 " + " ".join(words) + extra)
    assert getattr(fetch.args, spec.name) == value
    assert spec.flag in texts("%%cortex --") and spec.flag in texts("%cortex fetch j --")
    built = CortexMagics().query_options(cell.options)
    assert getattr(built, spec.name) == (tuple(value) if spec.nargs else value)


def test_a_query_option_given_a_flag_reaches_the_magic_untouched(monkeypatch):
    """A flag added to cortex_nb.options.OPTIONS is parsed, completed and handed on by the
    magic with nothing changed in the grammar or completion."""
    flagged = [
        dataclasses.replace(spec, flag="--result-format") if spec.name == "result_format"
        else spec for spec in options.OPTIONS
    ]
    monkeypatch.setattr(options, "OPTIONS", tuple(flagged))
    assert texts("%%cortex --result") == ["--result-format"]
    assert texts("%%cortex --result-format ") == ["valuesDictionary", "valuesArray"]
    command = grammar.parse_cell("--result-format valuesArray", "SELECT 1")
    assert command.options == {"result_format": "valuesArray"}
    assert CortexMagics().query_options(command.options).result_format == "valuesArray"
    assert parse_line("fetch j --result-format valuesArray").args.result_format == "valuesArray"


@pytest.mark.parametrize(("line", "said"), [
    ("--page-sise 7", "%%cortex: unrecognized arguments: --page-sise; did you mean --page-size?"),
    ("--dtpyes arrow", "did you mean --dtypes?"),
])
def test_an_unknown_cell_flag_names_the_closest_one(line, said):
    with pytest.raises(CortexCellError) as error:
        grammar.parse_cell(line, "SELECT 1")
    assert said in str(error.value)


def test_an_unknown_fetch_flag_names_the_closest_one():
    with pytest.raises(CortexCellError, match="did you mean --max-rows"):
        parse_line("fetch job-1 --max-rwos 5")


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


def test_a_line_with_a_two_value_flag_before_its_sql_is_a_query():
    command = parse_line("-q --between now-1d now SELECT 1")
    assert isinstance(command, CellCommand) and command.text == "SELECT 1"
    assert command.options["between"] == ["now-1d", "now"] and command.quiet
    with pytest.raises(CortexCellError):  # a third word is not --between's: not a query line
        parse_line("--between now-1d now later SELECT 1")


def test_a_subcommand_s_arguments_arrive_by_name():
    command = parse_line("connect sandbox --rows 5 --process")
    assert (command.args.target, command.args.rows, command.args.process) == ("sandbox", 5, True)
    assert parse_line("connect sandbox").args.process is None  # not given: the running one's
    assert parse_line("trace").args.n == 1 and parse_line("cache").args.action == "list"


@pytest.mark.parametrize("line", ['connect --url "http://x', "nonsense", "columns"])
def test_a_bad_line_is_one_line_naming_the_magic(line):
    with pytest.raises(CortexCellError, match=r"^%cortex"):
        parse_line(line)
