"""Frames typed from the catalog: every log type's columns get their catalog dtype, even when
the service sends no schema and a page (or every page) holds only nulls for them.

Rows are built from the catalog's own wire types; the sandbox's tables are also read over HTTP,
with the service's schema and without it (a tenant that sends none)."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from cortex_nb import Credentials, HTTPClient, QueryService, catalog
from cortex_nb.results.frames import FrameBuilder
from cortex_nb.sql.guide import known_types

SANDBOX_TABLES = ["firewall.traffic", "firewall.threat", "firewall.url", "log.system"]
DRIFT = {"http_method"}  # a plain string in the sandbox, an enum in the catalog (test_catalog)


def wire_value(field: catalog.Field, i: int) -> object:
    """A value shaped as the service sends ``field`` (row ``i``)."""
    if field.subfields:
        return {sub.name: wire_value(sub, i) for sub in field.subfields}
    return {
        "timestamp": 1_700_000_000_000_000 + i,
        "integer": i,
        "float": i + 0.5,
        "boolean": i % 2 == 0,
        "string": f"s{i}",
        "list": [f"a{i}"],
    }[field.type]


def expected_dtype(field: catalog.Field) -> str:
    """The dtype a column of ``field`` must have (structs as their value, else objects)."""
    value = next((s for s in field.subfields if s.name == "value"), None)
    if field.subfields:
        return expected_dtype(value) if value is not None else "object"
    return {
        "timestamp": "datetime64[us, UTC]",
        "integer": "Int64",
        "float": "float64",
        "boolean": "boolean",
        "string": "string",
        "list": "object",
    }[field.type]


def dtype_name(series: pd.Series) -> str:
    if isinstance(series.dtype, pd.StringDtype):
        return "string"
    return str(series.dtype)


def pages_with_nulls_first(table: catalog.Table) -> list[list[dict]]:
    """Page 1: every field null. Page 2: values for every other field (the rest stay null)."""
    nulls = [{f.name: None for f in table.fields} for _ in range(3)]
    values = [
        {f.name: wire_value(f, i) if n % 2 == 0 else None for n, f in enumerate(table.fields)}
        for i in range(3)
    ]
    return [nulls, values]


def build(pages: list[list[dict]], known: dict | None, structs: str = "value") -> pd.DataFrame:
    builder = FrameBuilder(structs=structs, known_types=known)
    for page in pages:
        builder.add_page(page)
    return builder.to_dataframe()


@pytest.mark.parametrize("name", catalog.table_names())
def test_every_catalog_column_gets_its_catalog_type_when_pages_start_null(name):
    table = catalog.table(name)
    df = build(pages_with_nulls_first(table), known_types(f"SELECT * FROM `{name}`"))
    assert list(df.columns) == [f.name for f in table.fields]
    wrong = {
        f.name: dtype_name(df[f.name])
        for f in table.fields
        if dtype_name(df[f.name]) != expected_dtype(f)
    }
    assert wrong == {}
    first = table.fields[0]  # values survive the typing
    assert df[first.name].iloc[3] is not pd.NA and not pd.isna(df[first.name].iloc[3])


@pytest.mark.parametrize("name", catalog.table_names())
def test_flattened_structs_get_their_subfield_types(name):
    table = catalog.table(name)
    df = build(pages_with_nulls_first(table), known_types(f"SELECT * FROM {name}"), "flatten")
    leaves = {path: f for path, f in table.walk() if not f.subfields}
    wrong = {
        path: dtype_name(df[path])
        for path, f in leaves.items()
        if path in df.columns and dtype_name(df[path]) != expected_dtype(f)
    }
    assert wrong == {}
    assert {p for p in leaves if "." in p} & set(df.columns)  # structs were flattened


def test_without_the_catalog_the_same_pages_lose_types():
    """What the catalog fixes: a timestamp whose name does not say so, columns only null."""
    table = catalog.table("firewall.decryption")
    df = build(pages_with_nulls_first(table), None)
    valued = [f for n, f in enumerate(table.fields) if n % 2 == 0]
    stamp = next(f for f in valued if f.type == "timestamp" and not f.name.endswith("_time"))
    assert dtype_name(df[stamp.name]) == "Int64"  # microseconds, not a datetime
    odd = next(f for n, f in enumerate(table.fields) if n % 2 and f.type == "integer")
    assert dtype_name(df[odd.name]) == "object"  # only nulls: no type at all


def test_selected_columns_are_typed_by_their_table_and_alias():
    sql = (
        "SELECT d.not_after, d.not_after AS expiry, source_port, COUNT(*) AS n, "
        "source_ip.value FROM `1234.firewall.decryption` AS d"
    )
    fields = {f["name"]: f for f in known_types(sql)["fields"]}
    assert fields["not_after"]["type"] == fields["expiry"]["type"] == "TIMESTAMP"
    assert fields["source_port"]["type"] == "INTEGER" and fields["value"]["type"] == "STRING"
    assert "n" not in fields  # computed: left to inference
    rows = [{"not_after": None, "expiry": None, "source_port": None, "n": 4, "value": None}]
    df = build([rows, [{"not_after": 1, "expiry": 2, "source_port": 3, "n": 5}]],
               known_types(sql))
    assert [dtype_name(df[c]) for c in df.columns] == [
        "datetime64[us, UTC]", "datetime64[us, UTC]", "Int64", "Int64", "string"
    ]


@pytest.mark.parametrize("sql", [
    "SELECT a FROM firewall.traffic UNION ALL SELECT b FROM firewall.threat",
    "SELECT * FROM (SELECT COUNT(*) AS time_generated FROM firewall.traffic)",
    "WITH x AS (SELECT 1 AS bytes_sent) SELECT bytes_sent FROM x",
    "SELECT COUNT(*) AS bytes_sent FROM firewall.traffic",
    "SELECT app FROM my_own_table",
])
def test_queries_the_catalog_cannot_vouch_for_are_left_to_inference(sql):
    assert known_types(sql) is None


def test_a_column_whose_values_contradict_the_catalog_keeps_its_values():
    """The catalog is a hint: a service that sends text where it says integer loses nothing."""
    known = known_types("SELECT source_port FROM firewall.traffic")
    df = build([[{"source_port": "eighty"}], [{"source_port": "443"}]], known)
    assert list(df["source_port"]) == ["eighty", "443"]


# ---- the sandbox over HTTP ----------------------------------------------------------------


def _strip_schema(response, *args, **kwargs):
    """Response hook: the results page as a service that sends no schema would send it."""
    if "/jobResults/" in response.url and response.ok:
        payload = orjson.loads(response.content)
        payload.pop("schema", None)
        response._content = orjson.dumps(payload)
    return response


@pytest.fixture(params=["schema", "no schema"])
def service(request, sandbox):
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    if request.param == "no schema":
        client.session.hooks["response"].append(_strip_schema)
    with client:
        yield QueryService(client=client)


@pytest.mark.parametrize("name", SANDBOX_TABLES)
def test_sandbox_tables_arrive_typed_as_the_catalog_says(service, name, sandbox):
    result = service.query(f"SELECT * FROM `{sandbox.instance_id}.{name}`", page_size=1000)
    assert result.pages >= 2 or len(result.df) < 1000  # later pages take Arrow's path
    assert (result.schema is None) == (_strip_schema in service.client.session.hooks["response"])
    table = catalog.table(name)
    typed = [c for c in result.df.columns if c in table and c not in DRIFT]
    assert len(typed) >= 10
    wrong = {
        c: dtype_name(result.df[c])
        for c in typed
        if dtype_name(result.df[c]) != expected_dtype(table.field(c))
    }
    assert wrong == {}
