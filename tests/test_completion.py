"""Tab completion: ``complete()`` itself, IPython's completer in-process, and a real kernel's
``complete_request`` (jupyter_client), the way JupyterLab, Notebook and VS Code ask for it."""

from __future__ import annotations

import re
import time

import pytest
from IPython.core.completer import provisionalcompleter

from cortex_nb import catalog
from cortex_nb.notebook import completion
from cortex_nb.notebook.completion import complete


def texts(code: str, offset: int | None = None, instance_id: str | None = None) -> list[str]:
    found = complete(code, len(code) if offset is None else offset, instance_id)
    return [] if found is None else [text for text, _ in found.items]


def at(code: str, marker: str = "|") -> tuple[str, int]:
    """``code`` without ``marker``, and the offset where the marker was (the cursor)."""
    return code.replace(marker, ""), code.index(marker)


# ---- what is completed --------------------------------------------------------------------


def test_table_names_after_from_and_join():
    assert texts("%%cortex\nSELECT * FROM firewall.tr") == ["firewall.traffic"]
    assert texts("%%cortex\nSELECT * FROM firewall.traffic t JOIN log.") == [
        "log.system", "log.config"
    ]
    assert "firewall.threat" in texts("%%cortex\nselect * from firewall.traffic, firewall.th")
    assert texts("%%cortex\nSELECT * FROM traf") == ["firewall.traffic"]  # the log type alone


def test_table_names_with_the_instance_id_and_backticks():
    assert texts("%%cortex\nSELECT * FROM `firewall.url") == ["`firewall.url`"]
    assert texts("%%cortex\nSELECT * FROM `sb0.firewall.url", instance_id="sb0") == [
        "`sb0.firewall.url`"
    ]
    assert texts("%%cortex\nSELECT * FROM 1234567890.log.sys") == ["`1234567890.log.system`"]
    code, offset = at("%%cortex\nSELECT * FROM `log.sy|`")  # the editor closed the backtick
    assert texts(code, offset) == ["`log.system"]
    offered = texts("%%cortex\nSELECT * FROM `", instance_id="sb0")
    assert "`firewall.traffic`" in offered and "`sb0.firewall.traffic`" in offered
    assert len(offered) == 2 * len(catalog.table_names())


def test_columns_of_the_tables_the_cell_names_wherever_the_cursor_is():
    code, offset = at("%%cortex\nSELECT sou| FROM firewall.traffic")
    offered = texts(code, offset)
    assert "source_ip" in offered and "source_port" in offered
    assert all(name.startswith("sou") for name in offered)
    threat_only = set(catalog.table("firewall.threat").columns()) - set(
        catalog.table("firewall.traffic").columns()
    )
    code, offset = at("%%cortex\nSELECT threat| FROM firewall.traffic")
    assert not threat_only & set(texts(code, offset))


def test_struct_subfields_after_a_dot():
    code, offset = at("%%cortex\nSELECT source_ip.| FROM firewall.traffic")
    assert texts(code, offset) == ["source_ip.value", "source_ip.hex"]
    code, offset = at("%%cortex\nSELECT inbound_if_details.type.| FROM firewall.traffic")
    assert texts(code, offset) == ["inbound_if_details.type.id", "inbound_if_details.type.value"]


def test_columns_through_a_table_alias():
    code, offset = at("%%cortex\nSELECT h.threat_n| FROM firewall.traffic t JOIN firewall.threat h")
    assert "h.threat_name" in texts(code, offset)
    code, offset = at("%%cortex\nSELECT h.source_ip.| FROM firewall.threat h")
    assert texts(code, offset) == ["h.source_ip.value", "h.source_ip.hex"]


def test_keywords_and_functions_in_the_case_they_are_typed():
    assert texts("%%cortex\nSEL") == ["SELECT"]
    assert texts("%%cortex\nsel") == ["select"]
    code, offset = at("%%cortex\nSELECT COUN| FROM log.system")
    assert texts(code, offset) == ["COUNT", "COUNTIF"]  # log.system has no coun... column
    assert "TIMESTAMP_SUB" in texts("%%cortex\nSELECT * FROM firewall.traffic WHERE time_generated > TIMESTAMP_")


@pytest.mark.parametrize("code", [
    "%%cortex\nSELECT * FROM firewall.traffic WHERE app = 'fire",
    "%%cortex\nSELECT 1 -- FROM fire",
    '%%cortex GET /query/v2/jobs\n{"x": 1, "y": fire',
    '%%cortex\nPOST /query/v2/jobs\n{"params": {"query": "SELECT * FROM fire',
    "x = firewall.tr",  # plain Python is IPython's
])
def test_nothing_inside_strings_comments_rest_cells_or_python(code):
    assert complete(code, len(code)) is None


def test_cortex_subcommands_options_and_values():
    assert "columns" in texts("%cortex ") and "tables" in texts("%cortex ")
    assert texts("%cortex col") == ["columns"]
    assert texts("%cortex columns firewall.thr") == ["firewall.threat"]
    assert "source_ip.value" in texts("%cortex columns firewall.traffic source_ip")
    assert texts("%cortex connect --region eu") == ["europe"]
    assert texts("%cortex connect sa") == ["sandbox"]
    assert "--instance" in texts("%cortex connect --")
    assert texts("%%cortex --str") == ["--structs"]
    assert texts("%%cortex --structs fl") == ["flatten"]


def test_an_option_of_two_values_is_not_interrupted_by_flags():
    assert texts("%%cortex --between ") == []  # START, then END: no flag offered in between
    assert texts("%%cortex --between 2026-12-01 ") == []
    assert "--limit" in texts("%%cortex --between 2026-12-01 2026-12-02 ")
    assert "--limit" in texts("%%cortex --since 24h ")


def test_sql_on_the_line_is_completed_too():
    assert texts("%cortex SELECT * FROM firewall.ur") == ["firewall.url"]
    code, offset = at("%cortex -o x SELECT source_ip.v| FROM firewall.traffic")
    assert texts(code, offset) == ["source_ip.value"]


def test_subcommands_come_from_the_magic_s_grammar(monkeypatch):
    """A subcommand added to the grammar is offered without touching completion."""
    from cortex_nb.notebook import grammar

    added = grammar.Subcommand("jumble", "a new subcommand", (
        grammar.Positional("mode", "how", choices=("fast", "slow")),
        grammar.Option(("--speed",), int, "how fast"),
    ))
    monkeypatch.setattr(grammar, "SUBCOMMANDS", (*grammar.SUBCOMMANDS, added))
    assert texts("%cortex ju") == ["jumble"]
    assert texts("%cortex jumble ") == ["fast", "slow", "--speed"]


@pytest.mark.parametrize("code", [
    "%%cortex -o x --structs flatten\nWITH r AS (SELECT * FROM `1.firewall.url` u)\n"
    "SELECT u.source_ip.value, COUNT(*) FROM r JOIN log.system s ON (s.x = 'a\\'b') -- c\n",
    "%cortex columns `firewall.traffic` *_ip --x",
    "%%cortex GET /query/v2/jobs\n{\"a\": [1, 2]}",
    "%%cortex\nSELECT ``, `, \"unclosed, /* comment",
])
def test_complete_never_raises_at_any_cursor(code):
    for offset in range(len(code) + 1):
        complete(code, offset, "sb0")


def test_a_large_cell_completes_quickly():
    body = "\n".join(f"  AND app != 'x{i}'" for i in range(300))
    code = f"%%cortex\nSELECT * FROM firewall.traffic t WHERE TRUE\n{body}\nAND t.sou"
    complete(code, len(code))  # the catalog is loaded once
    started = time.perf_counter()
    assert "t.source_ip" in texts(code)
    assert time.perf_counter() - started < 0.5


# ---- IPython's completer, in-process ------------------------------------------------------


def shell_completions(ip, code: str, offset: int | None = None) -> list:
    with provisionalcompleter():
        return list(ip.Completer.completions(code, len(code) if offset is None else offset))


def test_loading_twice_registers_the_matcher_once(ip):
    ip.run_line_magic("reload_ext", "cortex_nb")
    assert ip.Completer.custom_matchers.count(completion.cortex_matcher) == 1


def test_the_shell_s_completer_offers_only_sql_names_in_a_cortex_cell(ip):
    code = "%%cortex\nSELECT * FROM firewall.tr"
    found = shell_completions(ip, code)
    assert [(c.text, c.type) for c in found] == [("firewall.traffic", "table")]
    assert found[0].start == code.index("firewall.tr") and found[0].end == len(code)


def test_a_completer_failure_leaves_tab_working(ip, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(completion, "complete", broken)
    found = shell_completions(ip, "%%cortex\nSELECT * FROM firewall.tr")  # does not raise
    assert "table" not in {c.type for c in found}
    assert "import" in [c.text for c in shell_completions(ip, "impor")]
    assert completion.cortex_matcher(type("Context", (), {"full_text": None})()) == {
        "completions": [], "suppress": False
    }


# ---- a real kernel (jupyter_client), as every front end asks -------------------------------


jupyter_client = pytest.importorskip("jupyter_client.manager")


@pytest.fixture(scope="module")
def kernel():
    km, kc = jupyter_client.start_new_kernel(kernel_name="python3")
    try:
        reply = kc.execute_interactive(
            "%load_ext cortex_nb\n%cortex connect sandbox --rows 500", timeout=120
        )
        assert reply["content"]["status"] == "ok"
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def kernel_complete(kc, code: str, offset: int | None = None) -> dict:
    msg_id = kc.complete(code, len(code) if offset is None else offset)
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def test_kernel_completes_table_names(kernel):
    code = "%%cortex\nSELECT COUNT(*) FROM firewall.t"
    reply = kernel_complete(kernel, code)
    assert reply["status"] == "ok"
    assert set(reply["matches"]) == {"firewall.traffic", "firewall.threat", "firewall.tunnel"}
    assert reply["cursor_start"] == code.index("firewall.t") and reply["cursor_end"] == len(code)
    kinds = {m["text"]: m["type"] for m in reply["metadata"]["_jupyter_types_experimental"]}
    assert kinds["firewall.traffic"] == "table"


def test_kernel_completes_with_the_connected_instance_id(kernel):
    """The sandbox's instance id (``sandbox0``...) comes from the kernel's connection."""
    matches = kernel_complete(kernel, "%%cortex\nSELECT * FROM `sandbox")["matches"]
    assert len(matches) == len(catalog.table_names())
    assert all(re.fullmatch(r"`sandbox\w*\.\w+\.\w+`", m) for m in matches), matches


def test_kernel_completes_columns_and_subfields(kernel):
    code, offset = at("%%cortex\nSELECT dest_p| FROM firewall.traffic")
    columns = kernel_complete(kernel, code, offset)["matches"]
    assert "dest_port" in columns and all(m.startswith("dest_p") for m in columns)
    code, offset = at("%%cortex\nSELECT dest_port, source_ip.| FROM firewall.traffic")
    reply = kernel_complete(kernel, code, offset)
    assert reply["matches"] == ["source_ip.value", "source_ip.hex"]
    assert code[reply["cursor_start"] : reply["cursor_end"]] == "source_ip."


def test_kernel_completes_chart_columns_from_the_cell_s_sql(kernel):
    code, offset = at("%%cortex --plot bar --by |\nSELECT app, COUNT(*) AS n FROM firewall.traffic GROUP BY app")
    assert kernel_complete(kernel, code, offset)["matches"] == ["app", "n"]


def test_kernel_completes_cortex_subcommands_and_python_still_works(kernel):
    assert kernel_complete(kernel, "%cortex tab")["matches"] == ["tables"]
    assert "import" in kernel_complete(kernel, "impor")["matches"]


def test_chart_columns_come_from_the_cell_s_select_list():
    sql = "SELECT app, COUNT(*) AS sessions, SUM(bytes_total) AS bytes FROM firewall.traffic GROUP BY app"
    code = f"%%cortex --plot bar --by \n{sql}"
    offset = code.index("\n")
    assert [text for text, _ in complete(code, offset).items] == ["app", "sessions", "bytes"]
    code = f"%%cortex --plot bar --by app --value by\n{sql}"
    assert complete(code, code.index("\n")).items == (("bytes", "value"),)


def test_chart_columns_of_a_star_are_the_table_s_and_none_before_sql_parses():
    code = "%%cortex --plot timeline --by ap\nSELECT * FROM `sb0.firewall.traffic` LIMIT 10"
    texts = [text for text, _ in complete(code, code.index("\n")).items]
    assert "app" in texts and "app_category" in texts and all(t.startswith("ap") for t in texts)
    code = "%%cortex --plot timeline --by \nSELECT FROM WHERE ((("
    assert complete(code, code.index("\n")).items == ()
