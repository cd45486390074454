"""``%cortex`` subcommands are routed by a table: one handler per subcommand of the grammar."""

from __future__ import annotations

import pytest

from cortex_nb.notebook import commands, grammar
from cortex_nb.notebook.errors import CortexCellError


def test_every_subcommand_has_a_handler_and_every_handler_a_subcommand():
    assert set(commands.COMMANDS) == set(grammar.subcommands())


def test_a_new_subcommand_is_its_grammar_plus_a_handler(ip, monkeypatch):
    added = grammar.Subcommand("echo", "say it back", (grammar.Positional("word", "what"),))
    monkeypatch.setattr(grammar, "SUBCOMMANDS", (*grammar.SUBCOMMANDS, added))
    handlers = {**commands.COMMANDS, "echo": lambda magics, args: args.word.upper()}
    monkeypatch.setattr(commands, "COMMANDS", handlers)
    assert ip.run_line_magic("cortex", "echo hello") == "HELLO"


def test_an_unclosed_quote_on_the_line_is_one_line(ip):
    with pytest.raises(CortexCellError, match=r"^%cortex: No closing quotation"):
        ip.run_line_magic("cortex", 'connect --url "http://x')
