"""`%cortex tables` / `%cortex columns` in a real InteractiveShell, and the same from Python."""

from __future__ import annotations

import pandas as pd
import pytest

import cortex_nb
from cortex_nb import UnknownNameError, catalog

from .support import failed_with
from .support import run_cell as run


def test_tables_lists_every_log_type_with_its_time_column(ip):
    result, _ = run(ip, "%cortex tables")
    assert result.success
    frame = result.result
    assert list(frame["name"]) == list(catalog.table_names()) and len(frame) == 16
    assert list(frame.columns) == ["name", "description", "time_column", "fields"]
    assert frame.set_index("name").loc["log.system", "time_column"] == "event_time"


def test_tables_filters_by_substring_or_glob(ip):
    assert set(run(ip, "%cortex tables log")[0].result["name"]) == {"log.system", "log.config"}
    globbed = run(ip, "%cortex tables firewall.t*")[0].result
    assert set(globbed["name"]) == {"firewall.traffic", "firewall.threat", "firewall.tunnel"}


def test_columns_lists_names_types_descriptions_and_struct_subfields(ip):
    result, _ = run(ip, "%cortex columns firewall.traffic source")
    frame = result.result
    assert list(frame.columns) == ["name", "type", "description"]
    rows = frame.set_index("name")
    assert rows.loc["source_ip", "type"] == "ip"
    assert rows.loc["source_ip.value", "type"] == "string"
    assert rows.loc["source_ip.hex", "type"] == "string"
    assert rows.loc["source_port", "type"] == "integer"
    assert all("source" in name for name in frame["name"]) and "nat_source" in set(frame["name"])
    assert rows["description"].str.len().min() > 5


def test_columns_accepts_the_instance_id_and_backticks(ip):
    frame = run(ip, "%cortex columns `1234567890.log.system` event_time")[0].result
    assert list(frame["name"]) == ["event_time"] and list(frame["type"]) == ["timestamp"]


def test_a_long_listing_is_shown_whole(ip):
    result, _ = run(ip, "%cortex columns firewall.traffic")
    frame = result.result
    assert len(frame) == len(catalog.table("firewall.traffic").columns()) > 200
    shown = repr(frame)
    assert shown.count("\n") == len(frame) and "source_ip.hex" in shown  # a line per row
    assert frame._repr_html_().count("<tr") == len(frame) + 1  # the header, then every row


def test_an_unknown_table_is_one_line_that_suggests(ip):
    message = failed_with(*run(ip, "%cortex columns firewall.trafic"))
    assert message == "Unknown table `firewall.trafic`: did you mean `firewall.traffic`?"


def test_columns_without_a_table_says_what_is_missing(ip):
    assert "table" in failed_with(*run(ip, "%cortex columns"))


def test_the_same_from_python():
    assert "tables" in cortex_nb.__all__ and "columns" in cortex_nb.__all__
    assert isinstance(cortex_nb.tables(), pd.DataFrame) and len(cortex_nb.tables()) == 16
    found = cortex_nb.columns("firewall.threat", "threat_*")
    assert "threat_name" in set(found["name"])
    with pytest.raises(UnknownNameError) as caught:
        cortex_nb.columns("firewall.thret")
    assert caught.value.suggestions[0] == "firewall.threat"
    assert isinstance(caught.value, cortex_nb.CortexError) and isinstance(caught.value, LookupError)
