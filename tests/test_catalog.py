"""The log-type catalog: its data file, lookups, frames, suggestions, and agreement with the sandbox."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import requests

from cortex_nb import catalog
from cortex_nb.catalog import CatalogLookupError, Field
from cortex_nb.sandbox import Sandbox
from tests.conftest import SandboxAPI

# The log types the Cortex Data Lake documentation lists (CORTEX_API.md, issue 14).
FIREWALL_TABLES = [
    "firewall.traffic",
    "firewall.threat",
    "firewall.url",
    "firewall.file_data",
    "firewall.auth",
    "firewall.decryption",
    "firewall.dns_security",
    "firewall.globalprotect",
    "firewall.hipmatch",
    "firewall.iptag",
    "firewall.sctp",
    "firewall.tunnel",
    "firewall.userid",
]
LOG_TABLES = ["log.system", "log.config"]
WIRE_TYPES = {"string", "integer", "float", "boolean", "timestamp", "ip", "enum", "list", "struct"}
SCALARS = {"string", "integer", "float", "boolean", "timestamp"}

# CORTEX_API.md, "How values look in rows" and the core traffic / threat columns
TRAFFIC_CORE = [
    "time_generated", "log_time", "log_type", "sub_type", "source_ip", "dest_ip", "nat_source",
    "nat_dest", "source_port", "dest_port", "nat_source_port", "nat_dest_port", "protocol",
    "action", "app", "app_category", "app_sub_category", "rule_matched", "from_zone", "to_zone",
    "source_user", "dest_user", "source_location", "dest_location", "bytes_sent", "bytes_received",
    "bytes_total", "packets_sent", "packets_received", "packets_total", "session_id",
    "session_start_time", "total_time_elapsed", "session_end_reason", "url_category",
    "log_source_id", "log_source_name", "vsys", "customer_id", "is_nat",
]
THREAT_ADDS = [
    "threat_id", "threat_name", "threat_category", "vendor_severity", "severity",
    "direction_of_attack", "file_name", "file_sha_256", "file_type", "url_domain", "verdict",
    "pcap_id", "content_version",
]
DOCUMENTED_TYPES = [
    ("firewall.traffic", "time_generated", "timestamp"),
    ("firewall.traffic", "log_time", "timestamp"),
    ("firewall.traffic", "session_start_time", "timestamp"),
    ("log.system", "event_time", "timestamp"),
    *[("firewall.traffic", n, "ip") for n in ("source_ip", "dest_ip", "nat_source", "nat_dest")],
    ("firewall.traffic", "xff_ip", "ip"),
    *[
        ("firewall.traffic", n, "enum")
        for n in ("log_type", "sub_type", "protocol", "action", "session_end_reason", "url_category")
    ],
    *[
        ("firewall.threat", n, "enum")
        for n in ("vendor_severity", "direction_of_attack", "threat_category", "verdict")
    ],
    ("firewall.traffic", "characteristics_of_app", "list"),
    ("firewall.traffic", "action_flags", "integer"),
    ("firewall.traffic", "is_nat", "boolean"),
    ("firewall.traffic", "log_source_id", "string"),
    ("firewall.traffic", "customer_id", "string"),
    ("firewall.traffic", "inbound_if", "struct"),
    ("firewall.traffic", "outbound_if_details", "struct"),
]


def all_fields() -> list[tuple[str, str, Field]]:
    return [(t.name, path, f) for t in catalog.tables() for path, f in t.walk()]


# ---- the data --------------------------------------------------------------------------


def test_the_data_file_ships_with_the_package():
    text = resources.files("cortex_nb").joinpath("catalog.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["sources"] and all(isinstance(s, str) and s for s in data["sources"])
    assert sorted(data["tables"]) == sorted(catalog.table_names())


def test_a_wheel_would_ship_the_data_file():
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    header = r"^\[tool\.setuptools\.package-data\]\n(.*?)(?:^\[|\Z)"
    section = re.search(header, pyproject, re.M | re.S)
    assert section, "no [tool.setuptools.package-data] in pyproject.toml"
    assert re.search(r'^cortex_nb\s*=\s*\[[^]]*"catalog\.json"', section.group(1), re.M)


@pytest.mark.parametrize("name", [*FIREWALL_TABLES, *LOG_TABLES, "endpoint.agent"])
def test_every_documented_log_type_is_there_with_its_time_column(name):
    found = catalog.table(name)
    expected_time = "event_time" if name.startswith("log.") else "time_generated"
    assert found.name == name
    assert found.description.strip()
    assert found.time_column == expected_time
    assert found.field(expected_time).type == "timestamp"
    assert len(found.fields) >= 10


def test_the_data_file_holds_no_orphan_or_dangling_definition():
    data = json.loads(resources.files("cortex_nb").joinpath("catalog.json").read_text("utf-8"))
    used = {e if isinstance(e, str) else e["name"] for t in data["tables"].values() for e in t["fields"]}
    assert used == set(data["fields"])
    shapes = {f["shape"] for f in data["fields"].values() if f["type"] == "struct"}
    assert shapes | {"ip", "enum"} == set(data["shapes"])


def test_field_names_are_unique_within_each_table():
    for t in catalog.tables():
        names = [f.name for f in t.fields]
        assert len(names) == len(set(names)), t.name


def test_every_field_has_a_valid_wire_type_and_a_description():
    for table_name, path, field in all_fields():
        where = f"{table_name}.{path}"
        assert field.type in WIRE_TYPES, where
        assert field.description.strip(), where
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field.name), where


def test_structured_types_have_the_documented_subfields():
    for table_name, path, field in all_fields():
        where = f"{table_name}.{path}"
        subs = {s.name: s.type for s in field.subfields}
        if field.type == "ip":
            assert subs == {"value": "string", "hex": "string"}, where
        elif field.type == "enum":
            assert subs == {"id": "integer", "value": "string"}, where
        elif field.type == "struct":
            assert subs and field.shape, where
        else:
            assert not subs, where
        if field.type == "list":
            assert field.items in SCALARS, where


def test_interfaces_and_interface_details_are_shaped_as_on_the_wire():
    traffic = catalog.table("firewall.traffic")
    interface = {s.name: s.type for s in traffic.field("inbound_if").subfields}
    details = {s.name: s.type for s in traffic.field("outbound_if_details").subfields}
    assert interface == {"value": "string", "hex": "integer"}
    assert details == {"unit": "integer", "type": "enum", "slot": "integer", "port": "integer"}


def test_the_core_traffic_and_threat_columns_are_there():
    traffic, threat = catalog.table("firewall.traffic"), catalog.table("firewall.threat")
    assert [c for c in TRAFFIC_CORE if c not in traffic] == []
    assert [c for c in THREAT_ADDS if c not in threat] == []


@pytest.mark.parametrize(("table_name", "name", "wire"), DOCUMENTED_TYPES)
def test_documented_encodings(table_name, name, wire):
    assert catalog.table(table_name).field(name).type == wire


# Fields of the Query API sample row in the vendor's SDK docs (cortex.pan.dev, SELECT * FROM
# firewall.traffic), grouped by how their values looked there.
VENDOR_ROW = {
    "string": [
        "vendor_name", "log_source", "log_source_id", "log_source_name", "customer_id", "app",
        "app_category", "dest_location", "from_zone", "log_set", "rule_matched",
        "rule_matched_uuid", "source_location", "app_sub_category", "technology_of_app", "to_zone",
        "tunneled_app", "users", "vsys",
    ],
    "integer": [
        "source_port", "dest_port", "bytes_total", "bytes_received", "bytes_sent", "ep_assoc_id",
        "chunks_total", "chunks_received", "chunks_sent", "packets_total", "packets_received",
        "packets_sent", "total_time_elapsed", "traffic_flags", "action_flags", "dg_hier_level_1",
        "dg_hier_level_2", "dg_hier_level_3", "dg_hier_level_4", "http2_connection",
        "nat_dest_port", "nat_source_port", "non_standard_dest_port", "parent_session_id",
        "count_of_repeats", "risk_of_app", "sequence_no", "session_id", "tunnelid_imsi", "vsys_id",
    ],
    "timestamp": ["log_time", "session_start_time", "parent_start_time", "time_generated"],
    "boolean": [
        "is_exported", "is_forwarded", "is_saas_app", "is_dup_log", "is_prisma_branch",
        "is_prisma_mobile", "sanctioned_state_of_app",
    ],
    "ip": ["source_ip", "dest_ip", "nat_dest", "nat_source"],
    "enum": [
        "log_type", "sub_type", "protocol", "action_source", "session_end_reason", "url_category",
        "action", "tunnel",
    ],
}
SAMPLE_VALUES = {
    "string": "text",
    "integer": -(2**63),
    "timestamp": 1_700_000_000_000_000,
    "boolean": False,
    "ip": {"value": "192.0.2.1", "hex": "00000000000000000000ffffc0000201"},
    "enum": {"id": 3, "value": "name"},
}


def test_a_traffic_row_shaped_like_the_vendors_sample_fits_the_catalog():
    row = {name: SAMPLE_VALUES[kind] for kind, names in VENDOR_ROW.items() for name in names}
    details = {"unit": 0, "type": {"id": 0, "value": "ethernet"}, "slot": 1, "port": 4}
    row |= {"characteristics_of_app": ["3", "7"], "inbound_if_details": details}
    row |= {"inbound_if": {"value": "ethernet", "hex": 1138183110660}}
    traffic = catalog.table("firewall.traffic")
    assert [n for n in row if n not in traffic] == []
    assert [n for n, v in row.items() if not value_fits(v, traffic.field(n))] == []


def test_sandbox_only_fields_are_marked_undocumented():
    # the sandbox's made-up flag is no documented field; the reference's own fields are
    assert catalog.table("firewall.traffic").field("is_inbound").documented is False
    assert catalog.table("firewall.traffic").field("source_ip").documented is True


def test_every_public_name_of_the_module_exists():
    for name in catalog.__all__:
        assert getattr(catalog, name) is not None, name


# ---- lookups ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "firewall.traffic",
        "`firewall.traffic`",
        "`1234567890.firewall.traffic`",
        "1234567890.firewall.traffic",
        " `1234567890`.`firewall`.`traffic` ",
        "FIREWALL.Traffic",
    ],
)
def test_a_table_is_found_by_every_way_of_writing_it(written):
    assert catalog.table(written).name == "firewall.traffic"


def test_the_instance_id_is_split_off():
    assert catalog.parse_table_name("`42.log.system`") == ("42", "log.system")
    assert catalog.parse_table_name("log.system") == (None, "log.system")


def test_an_unknown_table_is_a_lookup_error_that_suggests():
    with pytest.raises(CatalogLookupError) as caught:
        catalog.table("`123.firewall.trafic`")
    assert isinstance(caught.value, LookupError)
    assert caught.value.suggestions[0] == "firewall.traffic"
    assert "did you mean `firewall.traffic`" in str(caught.value)


def test_subfield_paths_reach_into_structs():
    traffic = catalog.table("firewall.traffic")
    assert traffic.field("source_ip.value").type == "string"
    assert traffic.field("protocol.id").type == "integer"
    assert traffic.field("inbound_if_details.type.value").type == "string"
    assert traffic.field("inbound_if.hex").type == "integer"
    assert "dest_ip.hex" in traffic
    assert "dest_ip.nothing" not in traffic


def test_columns_list_every_field_then_its_subfields():
    columns = catalog.table("firewall.traffic").columns()
    at = columns.index("source_ip")
    assert columns[at : at + 3] == ("source_ip", "source_ip.value", "source_ip.hex")
    assert {"inbound_if_details.type.id", "inbound_if_details.port", "app"} <= set(columns)
    assert len(columns) == len(set(columns))


def test_an_unknown_subfield_names_its_parent_and_suggests():
    with pytest.raises(CatalogLookupError) as caught:
        catalog.table("firewall.traffic").field("source_ip.valeu")
    assert caught.value.suggestions[0] == "value"
    assert "`source_ip`" in str(caught.value)


def test_a_subfield_of_a_scalar_is_unknown():
    with pytest.raises(CatalogLookupError):
        catalog.table("firewall.traffic").field("app.value")


# ---- suggestions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("firewall.trafic", "firewall.traffic"),
        ("traffic", "firewall.traffic"),
        ("firewal.threat", "firewall.threat"),
        ("log.sytem", "log.system"),
        ("dns", "firewall.dns_security"),
    ],
)
def test_table_typos_suggest_the_table(typed, meant):
    assert catalog.suggest_table(typed)[0] == meant


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("src_ip", "source_ip"),
        ("sourceip", "source_ip"),
        ("source_ip.valeu", "source_ip.value"),
        ("sesion_id", "session_id"),
    ],
)
def test_column_typos_suggest_the_column(typed, meant):
    assert catalog.suggest_column("firewall.traffic", typed)[0] == meant


def test_nothing_close_suggests_nothing():
    assert catalog.suggest_table("zzzz") == []
    assert catalog.suggest_column("firewall.traffic", "qqqqqq") == []


def test_closest_ignores_case_and_keeps_the_candidates_spelling():
    assert catalog.closest("SOURCE_IP", ["source_ip", "dest_ip"])[0] == "source_ip"
    assert catalog.closest("bytes", ["bytes_sent", "app"]) == ["bytes_sent"]


# ---- frames ----------------------------------------------------------------------------


def test_tables_frame_lists_every_table():
    frame = catalog.tables_frame()
    assert list(frame.columns) == ["name", "description", "time_column", "fields"]
    assert sorted(frame["name"]) == sorted([*FIREWALL_TABLES, *LOG_TABLES, "endpoint.agent"])


def test_tables_frame_filters_by_glob_or_substring():
    assert sorted(catalog.tables_frame("firewall.*")["name"]) == sorted(FIREWALL_TABLES)
    assert list(catalog.tables_frame("dns")["name"]) == ["firewall.dns_security"]
    assert list(catalog.tables_frame("LOG.*")["name"]) == LOG_TABLES


def test_columns_frame_has_a_row_per_column_with_its_type():
    frame = catalog.columns_frame("`1.firewall.traffic`")
    assert list(frame.columns) == ["name", "type", "description"]
    assert len(frame) == len(catalog.table("firewall.traffic").columns())
    types = dict(zip(frame["name"], frame["type"], strict=True))
    assert types["source_ip"] == "ip"
    assert types["source_ip.hex"] == "string"
    assert types["characteristics_of_app"] == "list<string>"
    assert types["inbound_if_details"].startswith("struct")


def test_columns_frame_filters_by_glob_or_substring():
    glob = catalog.columns_frame("firewall.traffic", "source_ip*")
    assert set(glob["name"]) == {"source_ip", "source_ip.value", "source_ip.hex"}
    assert set(catalog.columns_frame("firewall.traffic", "NAT_SOURCE")["name"]) == {
        "nat_source",
        "nat_source.value",
        "nat_source.hex",
        "nat_source_port",
    }


def test_importing_the_catalog_loads_no_heavy_module():
    heavy = "{'pandas', 'duckdb', 'requests'} & set(sys.modules)"
    code = f"import sys, cortex_nb.catalog as c; c.table('log.system').columns(); assert not {heavy}"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- agreement with the sandbox --------------------------------------------------------

# The sandbox serves every log type of the catalog, with exactly the catalog's columns (the
# drift it once had, a string http_method and *_interface names, is fixed: nothing is excused).
SANDBOX_TABLES = list(catalog.table_names())
_BIGQUERY = {
    "string": "STRING",
    "integer": "INTEGER",
    "float": "FLOAT",
    "boolean": "BOOLEAN",
    "timestamp": "TIMESTAMP",
}


def catalog_encoding(field: Field) -> object:
    """How the catalog says a field looks in a results schema (BigQuery type names)."""
    if field.type == "list":
        return ("REPEATED", _BIGQUERY[field.items])
    if field.subfields:
        return ("RECORD", tuple(sorted((s.name, catalog_encoding(s)) for s in field.subfields)))
    return _BIGQUERY[field.type]


def schema_encoding(item: dict) -> object:
    """How a results schema item describes its column."""
    if item.get("mode") == "REPEATED":
        return ("REPEATED", item["type"])
    if item["type"] == "RECORD":
        return ("RECORD", tuple(sorted((s["name"], schema_encoding(s)) for s in item["fields"])))
    return item["type"]


def value_fits(value: object, field: Field) -> bool:
    """Whether a row value has the shape the catalog gives the field."""
    if field.type in ("integer", "timestamp"):
        return isinstance(value, int) and not isinstance(value, bool)
    if field.type == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if field.type == "boolean":
        return isinstance(value, bool)
    if field.type == "string":
        return isinstance(value, str)
    if field.type == "list":
        item = Field("item", field.items or "", "")
        return isinstance(value, list) and all(value_fits(v, item) for v in value)
    if not isinstance(value, dict):
        return False
    if field.type == "ip" and not re.fullmatch(r"[0-9a-f]{32}", str(value.get("hex"))):
        return False
    subs = {s.name: s for s in field.subfields}
    return all(k in subs and value_fits(v, subs[k]) for k, v in value.items())


@pytest.fixture(scope="module")
def served(sandbox: Sandbox) -> dict[str, dict]:
    """``SELECT *`` of every sandbox table: its schema and its rows, as the service sends them."""
    pages = {}
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {sandbox.issue_access_token()}"
        api = SandboxAPI(sandbox, http)
        for name in SANDBOX_TABLES:
            page = api.run(f"SELECT * FROM `{sandbox.instance_id}.{name}`", pageSize=100_000)
            pages[name] = {
                "schema": {item["name"]: item for item in page["schema"]["fields"]},
                "rows": page["page"]["result"]["data"],
            }
    return pages


@pytest.mark.parametrize("table_name", SANDBOX_TABLES)
def test_every_sandbox_table_has_exactly_the_catalog_columns_with_their_encodings(
    served, table_name
):
    entry, found = served[table_name], catalog.table(table_name)
    assert entry["rows"], table_name
    assert list(entry["schema"]) == [f.name for f in found.fields]
    mismatched = {
        name: f"served {schema_encoding(item)}"
        for name, item in entry["schema"].items()
        if schema_encoding(item) != catalog_encoding(found.field(name))
    }
    assert mismatched == {}


@pytest.mark.parametrize("table_name", SANDBOX_TABLES)
def test_every_sandbox_value_has_the_catalog_shape(served, table_name):
    found = catalog.table(table_name)
    bad = {
        name: value
        for row in served[table_name]["rows"]
        for name, value in row.items()
        if name not in found or not value_fits(value, found.field(name))
    }
    assert bad == {}
