"""cortex_nb.results.frames: Query Service result rows -> typed DataFrames (no network)."""

from __future__ import annotations

import gc
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pandas as pd
import pytest

import cortex_nb.results.frames as frames
from cortex_nb.exceptions import ConfigurationError, CortexError, QueryError
from cortex_nb.results.frames import FrameBuilder, ValueLostWarning, to_dataframe

T0 = 1_583_020_800_123_456  # 2020-03-01 00:00:00.123456 UTC, in microseconds
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

IP = {"value": "10.154.1.20", "hex": "00000000000000000000ffff0a9a0114"}
ENUM = {"id": 6, "value": "tcp"}
IFACE = {"value": "ethernet1/1", "hex": 1138183110656}
IF_DETAILS = {"unit": 0, "type": {"id": 0, "value": "ethernet"}, "slot": 1, "port": 3}

TRAFFIC_SCHEMA = {
    "fields": [
        {"name": "time_generated", "type": "TIMESTAMP"},
        {
            "name": "source_ip",
            "type": "RECORD",
            "fields": [{"name": "value", "type": "STRING"}, {"name": "hex", "type": "STRING"}],
        },
        {
            "name": "protocol",
            "type": "RECORD",
            "fields": [{"name": "id", "type": "INTEGER"}, {"name": "value", "type": "STRING"}],
        },
        {"name": "bytes_sent", "type": "INTEGER"},
        {"name": "ratio", "type": "FLOAT"},
        {"name": "is_nat", "type": "BOOLEAN"},
        {"name": "app", "type": "STRING"},
        {"name": "characteristics_of_app", "type": "STRING", "mode": "REPEATED"},
    ]
}


def build(*pages, **options) -> pd.DataFrame:
    builder = FrameBuilder(**options)
    for page in pages:
        builder.add_page(page)
    return builder.to_dataframe()


def us(micros: int) -> pd.Timestamp:
    return pd.Timestamp(micros, unit="us", tz="UTC")


def lost_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, ValueLostWarning)]


# -- value kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "time_generated",
        "log_time",
        "session_start_time",
        "event_time",
        "receive_time",
        "custom_time",
    ],
)
def test_known_timestamp_columns_become_utc_microseconds(name: str) -> None:
    df = build([{name: T0}, {name: T0 + 1}, {}])
    assert str(df[name].dtype) == "datetime64[us, UTC]"
    assert df[name].iloc[0] == us(T0)
    assert df[name].iloc[1] - df[name].iloc[0] == pd.Timedelta(microseconds=1)
    assert df[name].iloc[0].microsecond == 123456
    assert pd.isna(df[name].iloc[2])


def test_time_suffix_rule_needs_ints_and_names() -> None:
    df = build([{"total_time_elapsed": 5, "start_time": "yesterday", "timeout": 7}])
    assert df.dtypes.astype(str).to_dict() == {
        "total_time_elapsed": "Int64",
        "start_time": "string",
        "timeout": "Int64",
    }


def test_ints_are_nullable_int64() -> None:
    df = build([{"port": 443}, {"port": None}, {}, {"port": 80}])
    assert str(df["port"].dtype) == "Int64"
    assert df["port"].tolist() == [443, pd.NA, pd.NA, 80]


def test_ints_without_nulls_are_int64_too() -> None:
    assert str(build([{"n": 1}, {"n": 2}])["n"].dtype) == "Int64"


@pytest.mark.parametrize(
    "pages",
    [
        [[{"f": INT64_MIN}, {"f": INT64_MAX}, {"f": 0}]],
        [[{"f": 1}], [{"f": INT64_MIN}, {"f": INT64_MAX}, {"f": 0}]],
    ],
)
def test_int64_extremes_survive_exactly(pages: list) -> None:
    column = build(*pages)["f"]
    assert str(column.dtype) == "Int64"
    assert column.tolist()[-3:] == [INT64_MIN, INT64_MAX, 0]


def test_booleans_are_nullable_boolean() -> None:
    df = build([{"is_nat": True}, {"is_nat": False}, {}])
    assert str(df["is_nat"].dtype) == "boolean"
    assert df["is_nat"].tolist() == [True, False, pd.NA]


def test_floats_are_float64_and_ints_among_floats_are_floats() -> None:
    df = build([{"x": 1.5}, {"x": 2}, {}])
    assert df["x"].dtype == np.float64
    assert df["x"].tolist()[:2] == [1.5, 2.0]
    assert np.isnan(df["x"].iloc[2])


def test_strings_are_pandas_strings_with_missing() -> None:
    df = build([{"app": "ssl"}, {}, {"app": "dns"}])
    assert pd.api.types.is_string_dtype(df["app"].dtype)
    assert df["app"].dtype != object
    assert df["app"].iloc[0] == "ssl" and df["app"].iloc[2] == "dns"
    assert pd.isna(df["app"].iloc[1])


def test_lists_of_ints_and_mixed_lists_are_exact() -> None:
    pages = [[{"l": [1, INT64_MIN]}, {"l": [None]}], [{"l": [2, 3]}], [{"l": [2**64, 1.5, "x"]}]]
    df = build(*pages, [{"l": [4]}, {"l": None}], [{"l": [2**63, None]}])
    assert df["l"].tolist() == [
        [1, INT64_MIN],
        [None],
        [2, 3],
        [2**64, 1.5, "x"],
        [4],
        None,
        [2**63, None],
    ]
    assert [type(v) for v in df["l"].iloc[2]] == [int, int]


def test_lists_stay_python_lists() -> None:
    df = build([{"c": ["a", "b"]}, {"c": []}, {}])
    assert df["c"].dtype == object
    assert df["c"].iloc[0] == ["a", "b"] and type(df["c"].iloc[0]) is list
    assert df["c"].iloc[1] == []
    assert df["c"].iloc[2] is None


def test_absent_keys_become_missing_values() -> None:
    df = build([{"a": 1, "b": "x"}, {"b": "y"}, {"a": 3}])
    assert df["a"].tolist() == [1, pd.NA, 3]
    assert pd.isna(df["b"].iloc[2]) and df["b"].iloc[1] == "y"


# -- structs ---------------------------------------------------------------------------------


def test_value_structs_become_their_value_by_default() -> None:
    df = build([{"source_ip": IP, "protocol": ENUM, "inbound_interface": IFACE}, {}])
    assert list(df.columns) == ["source_ip", "protocol", "inbound_interface"]
    assert df.iloc[0].tolist() == ["10.154.1.20", "tcp", "ethernet1/1"]
    assert all(pd.api.types.is_string_dtype(t) for t in df.dtypes)
    assert df.iloc[1].isna().all()


def test_structs_without_value_stay_dicts_in_value_mode() -> None:
    df = build([{"inbound_if_details": IF_DETAILS}, {}])
    assert df["inbound_if_details"].dtype == object
    assert df["inbound_if_details"].iloc[0] == IF_DETAILS
    assert df["inbound_if_details"].iloc[1] is None


def test_structs_keep_mode_keeps_dicts() -> None:
    df = build([{"source_ip": IP, "protocol": ENUM, "port": 1}], structs="keep")
    assert df["source_ip"].iloc[0] == IP and df["protocol"].iloc[0] == ENUM
    assert df["source_ip"].dtype == object
    assert str(df["port"].dtype) == "Int64"


def test_structs_flatten_mode_makes_typed_dotted_columns() -> None:
    row = {"source_ip": IP, "protocol": ENUM, "inbound_if_details": IF_DETAILS, "port": 1}
    df = build([row, {"port": 2}], structs="flatten")
    assert list(df.columns) == [
        "source_ip.value",
        "source_ip.hex",
        "protocol.id",
        "protocol.value",
        "inbound_if_details.unit",
        "inbound_if_details.type.id",
        "inbound_if_details.type.value",
        "inbound_if_details.slot",
        "inbound_if_details.port",
        "port",
    ]
    assert df["source_ip.hex"].iloc[0] == IP["hex"]
    assert str(df["protocol.id"].dtype) == "Int64" and df["protocol.id"].iloc[0] == 6
    assert df["inbound_if_details.type.value"].iloc[0] == "ethernet"
    assert df["protocol.id"].isna().iloc[1]


def test_flatten_picks_up_subfields_first_seen_on_a_later_page() -> None:
    df = build([{"ip": {"value": "a"}}], [{"ip": {"value": "b", "hex": "0b"}}], structs="flatten")
    assert list(df.columns) == ["ip.value", "ip.hex"]
    assert df["ip.hex"].tolist()[1] == "0b" and pd.isna(df["ip.hex"].iloc[0])


def test_flatten_keeps_lists_inside_structs_as_lists() -> None:
    df = build([{"app": {"name": "ssl", "tags": ["a", "b"]}}, {}], structs="flatten")
    assert list(df.columns) == ["app.name", "app.tags"]
    assert df["app.tags"].iloc[0] == ["a", "b"] and df["app.tags"].iloc[1] is None


def test_flatten_with_mixed_types_inside_structs() -> None:
    rows = [{"p": {"id": 1, "value": "tcp"}}, {"p": {"id": "x", "value": "udp"}}, {}]
    with pytest.warns(ValueLostWarning, match=r"'p\.id': 1 value"):
        df = build(rows, structs="flatten")
    assert df["p.id"].tolist() == [1, pd.NA, pd.NA]
    assert df["p.value"].tolist()[:2] == ["tcp", "udp"]


def test_value_of_a_struct_may_be_a_struct() -> None:
    rows = [{"c": {"value": {"a": 1, "b": "x"}}}, {"c": {"value": {"a": INT64_MIN}}}]
    df = build(rows, rows)
    assert df["c"].tolist()[2:] == [{"a": 1, "b": "x"}, {"a": INT64_MIN, "b": None}]
    assert type(df["c"].iloc[3]["a"]) is int


def test_value_of_a_struct_may_be_a_list() -> None:
    rows = [{"c": {"value": [1, 2]}}, {"c": {"value": []}}]
    df = build(rows, [rows[0]])
    assert df["c"].tolist() == [[1, 2], [], [1, 2]]


# -- column order and pages --------------------------------------------------------------------


def test_column_order_is_first_appearance_across_pages() -> None:
    df = build([{"b": 1, "a": 2}, {"c": 3, "a": 4}], [{"d": 5}, {"a": 6, "e": 7}])
    assert list(df.columns) == ["b", "a", "c", "d", "e"]
    assert df["a"].tolist() == [2, 4, pd.NA, 6]


def test_column_order_follows_schema_then_extra_columns() -> None:
    row = {"extra": "x", "app": "ssl", "time_generated": T0, "source_ip": IP}
    df = build([row], schema=TRAFFIC_SCHEMA)
    names = [f["name"] for f in TRAFFIC_SCHEMA["fields"]]
    assert list(df.columns) == [*names, "extra"]


def test_many_pages_concatenate_in_order() -> None:
    pages = [[{"i": p * 10 + r, "s": f"{p}.{r}"} for r in range(10)] for p in range(5)]
    builder = FrameBuilder()
    for page in pages:
        builder.add_page(page)
    assert builder.rows == 50
    df = builder.to_dataframe()
    assert df["i"].tolist() == list(range(50))
    assert df["s"].iloc[37] == "3.7"
    assert list(df.index) == list(range(50))


def test_pages_disagreeing_on_types_are_unified() -> None:
    df = build(
        [{"a": 1}, {"a": 2}],  # b absent, c ints
        [{"a": 3, "b": 10, "c": None}],  # b appears, c explicit null
        [{"b": None, "c": 2.5}, {"d": [1]}],  # b null, c float, d list
        [],  # an empty page
        [{"a": 4, "b": 11, "c": 1}],
    )
    assert df.dtypes.astype(str).to_dict() == {
        "a": "Int64",
        "b": "Int64",
        "c": "float64",
        "d": "object",
    }
    assert df["b"].tolist() == [pd.NA, pd.NA, 10, pd.NA, pd.NA, 11]
    assert df["c"].tolist()[3] == 2.5 and df["c"].tolist()[5] == 1.0
    assert df["d"].tolist()[4] == [1] and df["d"].iloc[0] is None


def test_timestamp_column_absent_on_first_page_is_still_a_timestamp() -> None:
    df = build([{"a": 1}], [{"event_time": T0}])
    assert str(df["event_time"].dtype) == "datetime64[us, UTC]"
    assert pd.isna(df["event_time"].iloc[0]) and df["event_time"].iloc[1] == us(T0)


def test_struct_column_absent_on_first_page_still_gives_its_value() -> None:
    df = build([{"a": 1}], [{"a": 2, "dest_ip": IP}], [{"a": 3, "dest_ip": IP}])
    assert df["dest_ip"].tolist()[1:] == ["10.154.1.20"] * 2


def test_page_dicts_are_not_kept_after_add_page() -> None:
    class Row(dict):
        pass  # plain dicts cannot be weakly referenced

    rows = [Row(a=i, ip=dict(IP), tags=["x"]) for i in range(100)]
    refs = [weakref.ref(r) for r in rows]
    builder = FrameBuilder()
    builder.add_page(rows)
    del rows
    gc.collect()
    assert all(ref() is None for ref in refs)
    assert builder.to_dataframe()["ip"].iloc[99] == "10.154.1.20"


@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collector_state_is_restored(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        df = build([{"tags": ["a"], "d": IF_DETAILS}])
        assert gc.isenabled() is enabled
        assert df["tags"].iloc[0] == ["a"] and df["d"].iloc[0] == IF_DETAILS
    finally:
        (gc.enable if was else gc.disable)()


# -- schema ----------------------------------------------------------------------------------


def test_schema_types_drive_dtypes() -> None:
    row = {
        "time_generated": T0,
        "source_ip": IP,
        "protocol": ENUM,
        "bytes_sent": 5,
        "ratio": 1,
        "is_nat": False,
        "app": "ssl",
        "characteristics_of_app": ["a"],
    }
    df = build([row, {}], schema=TRAFFIC_SCHEMA)
    assert df.dtypes.astype(str).tolist() == [
        "datetime64[us, UTC]",
        "string",
        "string",
        "Int64",
        "float64",
        "boolean",
        "string",
        "object",
    ]
    assert df.iloc[0].tolist() == [us(T0), "10.154.1.20", "tcp", 5, 1.0, False, "ssl", ["a"]]


def test_schema_date_and_unknown_types() -> None:
    schema = {"fields": [{"name": "d", "type": "DATE"}, {"name": "t", "type": "TIME"}]}
    df = build([{"d": "2020-03-01", "t": "12:00:00"}, {}], schema=schema)
    assert df["d"].iloc[0] == pd.Timestamp("2020-03-01")
    assert df["d"].dtype.kind == "M"
    assert df["t"].iloc[0] == "12:00:00"


def test_schema_timestamp_wins_over_name_rule_and_integer_wins_too() -> None:
    schema = {
        "fields": [
            {"name": "created", "type": "TIMESTAMP"},
            {"name": "log_time", "type": "INTEGER"},
        ]
    }
    df = build([{"created": T0, "log_time": 7}], schema=schema)
    assert df["created"].iloc[0] == us(T0)
    assert str(df["log_time"].dtype) == "Int64"


@pytest.mark.parametrize("structs", ["value", "keep", "flatten"])
def test_empty_result_with_schema_keeps_columns_and_dtypes(structs: str) -> None:
    builder = FrameBuilder(schema=TRAFFIC_SCHEMA, structs=structs)
    builder.add_page([])
    df = builder.to_dataframe()
    assert len(df) == 0
    dtypes = df.dtypes.astype(str).to_dict()
    assert dtypes["time_generated"] == "datetime64[us, UTC]"
    assert dtypes["bytes_sent"] == "Int64" and dtypes["is_nat"] == "boolean"
    assert dtypes["ratio"] == "float64" and dtypes["characteristics_of_app"] == "object"
    if structs == "value":
        assert list(df.columns) == [f["name"] for f in TRAFFIC_SCHEMA["fields"]]
        assert dtypes["protocol"] == "string"
    elif structs == "flatten":
        assert dtypes["protocol.id"] == "Int64" and "source_ip.hex" in df.columns
    else:
        assert dtypes["source_ip"] == "object"


def test_empty_result_without_schema_is_an_empty_frame() -> None:
    df = to_dataframe([])
    assert df.shape == (0, 0)


def test_rows_of_empty_objects_keep_their_count() -> None:
    assert build([{}, {}, {}]).shape == (3, 0)


# -- valuesArray -----------------------------------------------------------------------------


def test_values_array_rows_follow_schema() -> None:
    rows = [
        [T0, IP, ENUM, 5, 0.5, True, "ssl", ["a"]],
        [None, None, None, None, None, None, None, None],
    ]
    df = build(rows, [rows[0]], schema=TRAFFIC_SCHEMA, result_format="valuesArray")
    assert list(df.columns) == [f["name"] for f in TRAFFIC_SCHEMA["fields"]]
    assert df.iloc[0].tolist() == [us(T0), "10.154.1.20", "tcp", 5, 0.5, True, "ssl", ["a"]]
    assert df.iloc[1].isna().all() and df["characteristics_of_app"].iloc[1] is None
    assert df.iloc[2].tolist() == df.iloc[0].tolist()


def test_values_array_without_schema_is_a_clear_error() -> None:
    with pytest.raises(QueryError, match=r"results page 0.*schema"):
        to_dataframe([[1, 2]], result_format="valuesArray")


def test_values_array_empty_without_schema_is_fine() -> None:
    assert to_dataframe([], result_format="valuesArray").shape == (0, 0)


def test_values_array_row_length_mismatch_names_page_and_row() -> None:
    builder = FrameBuilder(
        schema={"fields": [{"name": "a", "type": "INTEGER"}]}, result_format="valuesArray"
    )
    builder.add_page([[1]])
    with pytest.raises(QueryError, match=r"results page 1, row 2: 2 values but the schema has 1"):
        builder.add_page([[1], [2], [3, 4]])


# -- malformed input -------------------------------------------------------------------------


@pytest.mark.parametrize("rows", [None, {"data": []}, "rows", ({"a": 1},)])
def test_rows_that_are_not_a_list_raise_query_error(rows: object) -> None:
    with pytest.raises(QueryError, match=r"results page 0: rows must be a list"):
        to_dataframe(rows)  # type: ignore[arg-type]


def test_wrong_row_kind_for_values_dictionary_names_page_row_and_fix() -> None:
    builder = FrameBuilder()
    builder.add_page([{"a": 1}])
    with pytest.raises(QueryError) as caught:
        builder.add_page([{"a": 1}, [1], {"a": 2}])
    message = str(caught.value)
    assert "results page 1, row 1" in message and "JSON object" in message
    assert "valuesArray" in message


def test_wrong_row_kind_for_values_array() -> None:
    with pytest.raises(QueryError, match=r"row 0: expected a JSON array, got dict"):
        to_dataframe([{"a": 1}], schema={"fields": [{"name": "a"}]}, result_format="valuesArray")


def test_none_row_is_malformed() -> None:
    with pytest.raises(QueryError, match=r"row 1: expected a JSON object, got NoneType"):
        to_dataframe([{"a": 1}, None])


@pytest.mark.parametrize("schema", [{"fields": "a"}, {"fields": [{"type": "STRING"}]}, [1]])
def test_malformed_schema_is_a_query_error(schema: object) -> None:
    with pytest.raises(QueryError, match="schema is malformed"):
        FrameBuilder(schema=schema)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", [{"result_format": "csv"}, {"structs": "explode"}])
def test_bad_options_are_configuration_errors(option: dict) -> None:
    with pytest.raises(ConfigurationError):
        FrameBuilder(**option)


def test_builder_is_used_once() -> None:
    builder = FrameBuilder()
    builder.add_page([{"a": 1}])
    builder.to_dataframe()
    with pytest.raises(CortexError, match="already called"):
        builder.to_dataframe()
    with pytest.raises(CortexError, match="new FrameBuilder"):
        builder.add_page([{"a": 2}])


# -- out-of-range values -> missing + warning ------------------------------------------------


def test_int_beyond_int64_becomes_missing_with_warning() -> None:
    with pytest.warns(ValueLostWarning) as record:
        df = build([{"n": 1}, {"n": 2**64}, {"n": INT64_MIN}], [{"n": 2**63}, {"n": 5}])
    assert df["n"].tolist() == [1, pd.NA, INT64_MIN, pd.NA, 5]
    assert lost_warnings(record) == [
        "column 'n': 2 value(s) could not be read as a 64-bit integer and are missing (NA) "
        "in the DataFrame"
    ]


def test_string_in_int_column_becomes_missing_with_warning() -> None:
    with pytest.warns(ValueLostWarning, match=r"column 'port': 1 value\(s\)"):
        df = build(
            [
                {"port": 1, "app": "x", "ip": IP},
                {"port": "n/a", "app": "y", "ip": IP},
                {"port": 3, "app": "z"},
            ]
        )
    assert df["port"].tolist() == [1, pd.NA, 3]
    assert df["app"].tolist() == ["x", "y", "z"]  # the rest of the page is unharmed
    assert df["ip"].tolist()[:2] == ["10.154.1.20"] * 2


def test_string_in_schema_int_column_on_a_later_page() -> None:
    schema = {"fields": [{"name": "port", "type": "INTEGER"}]}
    with pytest.warns(ValueLostWarning, match=r"'port': 2 value"):
        df = build([{"port": 1}], [{"port": "a"}, {"port": "b"}], schema=schema)
    assert df["port"].tolist() == [1, pd.NA, pd.NA]


def test_float_is_never_truncated_into_an_int_column() -> None:
    df = build([{"x": 1}, {"x": 2}], [{"x": 1.5}])  # page 2 uses the int request type
    assert df["x"].tolist() == [1.0, 2.0, 1.5]
    schema = {"fields": [{"name": "x", "type": "INTEGER"}]}
    with pytest.warns(ValueLostWarning, match="'x': 1 value"):
        df = build([{"x": 1}], [{"x": 1.5}], schema=schema)
    assert df["x"].tolist() == [1, pd.NA]


def test_big_ints_sharing_a_page_with_a_float_stay_exact_in_an_int_column() -> None:
    schema = {"fields": [{"name": "x", "type": "INTEGER"}]}
    with pytest.warns(ValueLostWarning, match="'x': 1 value"):
        df = build([{"x": 1}], [{"x": 2**53 + 1}, {"x": 1.5}, {"x": 2.0}], schema=schema)
    assert df["x"].tolist() == [1, 2**53 + 1, pd.NA, 2]


def test_float_in_a_timestamp_column_without_schema_keeps_it_a_timestamp() -> None:
    with pytest.warns(ValueLostWarning, match="'log_time': 1 value.*timestamp"):
        df = build([{"log_time": T0}], [{"log_time": 1.5}, {"log_time": T0 + 1}])
    assert str(df["log_time"].dtype) == "datetime64[us, UTC]"
    assert df["log_time"].iloc[2] == us(T0 + 1) and pd.isna(df["log_time"].iloc[1])


@pytest.mark.parametrize("bad", [2**64, INT64_MIN, "soon", 1.5e300])
def test_timestamp_out_of_range_becomes_nat_with_warning(bad: object) -> None:
    with pytest.warns(ValueLostWarning, match=r"column 'time_generated': 1 value\(s\).*timestamp"):
        df = build(
            [{"time_generated": T0}, {"time_generated": T0 + 1}],
            [{"time_generated": bad}, {"time_generated": T0 + 2}],
            schema={"fields": [{"name": "time_generated", "type": "TIMESTAMP"}]},
        )
    assert str(df["time_generated"].dtype) == "datetime64[us, UTC]"
    assert pd.isna(df["time_generated"].iloc[2])
    assert df["time_generated"].iloc[3] == us(T0 + 2)


def test_timestamp_out_of_range_without_schema() -> None:
    with pytest.warns(ValueLostWarning, match="'log_time': 2 value"):
        df = build([{"log_time": T0}, {"log_time": 2**70}, {"log_time": INT64_MIN}])
    assert df["log_time"].iloc[0] == us(T0) and df["log_time"].isna().tolist()[1:] == [True] * 2


def test_value_structs_with_mixed_value_types_use_the_majority() -> None:
    with pytest.warns(ValueLostWarning, match="'p': 1 value"):
        df = build([{"p": {"id": 1, "value": 7}}, {"p": {"value": 8}}, {"p": {"value": "x"}}])
    assert df["p"].tolist() == [7, 8, pd.NA]


def test_mixed_scalars_without_schema_keep_the_majority_type() -> None:
    with pytest.warns(ValueLostWarning) as record:
        df = build(
            [
                {"f": 1, "b": True, "s": "a"},
                {"f": 2.5, "b": False, "s": "b"},
                {"f": "x", "b": 1, "s": 3},
            ]
        )
    assert df["f"].tolist()[:2] == [1.0, 2.5] and np.isnan(df["f"].iloc[2])
    assert df["b"].tolist() == [True, False, pd.NA]
    assert df["s"].tolist()[:2] == ["a", "b"] and pd.isna(df["s"].iloc[2])
    assert sorted(lost_warnings(record)) == [
        f"column {c!r}: 1 value(s) could not be read as {kind} and are missing (NA) in the "
        "DataFrame"
        for c, kind in [("b", "a boolean"), ("f", "a float"), ("s", "a string")]
    ]


def test_lists_mixed_with_scalars_stay_objects() -> None:
    df = build([{"a": [1]}, {"a": "x"}, {"a": 2}])
    assert df["a"].dtype == object and df["a"].tolist() == [[1], "x", 2]


def test_schema_types_reject_other_kinds() -> None:
    schema = {
        "fields": [
            {"name": "b", "type": "BOOL"},
            {"name": "s", "type": "STRING"},
            {"name": "f", "type": "FLOAT64"},
            {"name": "d", "type": "DATE"},
        ]
    }
    with pytest.warns(ValueLostWarning) as record:
        df = build(
            [{"b": True, "s": "a", "f": 0.5, "d": "2020-03-01"}],
            [{"b": "yes", "s": 5, "f": "big", "d": "March"}],
            schema=schema,
        )
    assert df.iloc[0].tolist() == [True, "a", 0.5, pd.Timestamp("2020-03-01")]
    assert df.iloc[1].isna().all()
    assert len(lost_warnings(record)) == 4


def test_all_null_column_without_schema_is_kept_as_missing() -> None:
    df = build([{"a": None, "b": 1}], [{"a": None, "b": 2}])
    assert list(df.columns) == ["a", "b"] and df["a"].isna().all()


def test_column_whose_first_page_needed_cleaning_still_converts_later_pages() -> None:
    with pytest.warns(ValueLostWarning, match="'n': 3 value"):
        df = build([{"n": 2**64}, {"n": 1}], [{"n": 2**63}, {"n": 2}], [{"n": "x"}, {"n": 3}])
    assert df["n"].tolist() == [pd.NA, 1, pd.NA, 2, pd.NA, 3]


def test_no_warning_when_nothing_is_lost() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build([{"a": 1, "t": T0}], [{"a": None, "b": 2.5}])


def test_values_array_bad_value_is_reported() -> None:
    schema = {"fields": [{"name": "n", "type": "INTEGER"}, {"name": "s", "type": "STRING"}]}
    with pytest.warns(ValueLostWarning, match="'n': 1 value"):
        df = build([[1, "a"], ["x", "b"]], schema=schema, result_format="valuesArray")
    assert df["n"].tolist() == [1, pd.NA] and df["s"].tolist() == ["a", "b"]


# -- API surface -----------------------------------------------------------------------------


def test_one_shot_to_dataframe_matches_builder() -> None:
    rows = [{"time_generated": T0, "source_ip": IP, "n": 1}]
    pd.testing.assert_frame_equal(to_dataframe(rows), build(rows))
    kept = to_dataframe(rows, structs="keep")
    assert kept["source_ip"].iloc[0] == IP


def test_public_names() -> None:
    assert sorted(frames.__all__) == [
        "ArrowPage",
        "DEFAULT_DTYPES",
        "DTYPE_MODES",
        "FrameBuilder",
        "TIMESTAMP_COLUMNS",
        "ValueLostWarning",
        "arrow_to_frame",
        "parse_page",
        "release_freed_memory",
        "to_dataframe",
    ]
    assert all(hasattr(frames, name) for name in frames.__all__)
    assert issubclass(ValueLostWarning, UserWarning)


def test_importing_the_package_does_not_import_frames() -> None:
    code = (
        "import sys, cortex_nb; print('cortex_nb.results.frames' in sys.modules, 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# -- pages parsed by Arrow (parse_page + add_arrow_page) ---------------------------------------


def page_bytes(rows, state="DONE", cursor=None, rows_in_page=None) -> bytes:
    import orjson

    body = {
        "jobId": "j", "state": state, "rowsInJob": 99,
        "rowsInPage": len(rows) if rows_in_page is None and rows is not None else rows_in_page,
        "page": {"pageCursor": cursor, "result": {"data": rows}},
    }
    return orjson.dumps(body)


RICH_ROWS = [
    {"time_generated": T0, "source_ip": IP, "protocol": ENUM, "dest_port": 443, "is_nat": True,
     "characteristics_of_app": ["evasive", "tunnel"], "action_flags": -(2**63),
     "if_details": {"unit": 0, "type": ENUM, "slot": 1}, "app": "ssl"},
    {"time_generated": T0 + 1, "source_ip": IP, "protocol": ENUM, "is_nat": False,
     "characteristics_of_app": [], "action_flags": 2**63 - 1, "app": "caf\u00e9 \"x\""},
    {"time_generated": T0 + 2, "dest_port": 53, "if_details": {"unit": 1, "type": ENUM, "slot": 2}},
]


@pytest.mark.parametrize("structs", ["value", "keep", "flatten"])
def test_arrow_pages_give_the_same_frame_as_decoded_rows(structs) -> None:
    import orjson

    pages = [RICH_ROWS, RICH_ROWS[1:], [{"late_column": "x", "dest_port": 1}]]
    by_rows, by_arrow = FrameBuilder(structs=structs), FrameBuilder(structs=structs)
    for rows in pages:
        content = page_bytes(rows)
        by_rows.add_page(orjson.loads(content)["page"]["result"]["data"])
        parsed = frames.parse_page(content)
        assert parsed is not None and len(parsed.rows) == len(rows)
        by_arrow.add_arrow_page(parsed.rows)
    pd.testing.assert_frame_equal(by_rows.to_dataframe(), by_arrow.to_dataframe())


def test_parse_page_reads_the_envelope() -> None:
    parsed = frames.parse_page(page_bytes(RICH_ROWS, cursor="next-1"))
    assert (parsed.state, parsed.page_cursor, parsed.rows_in_page) == ("DONE", "next-1", 3)
    empty = frames.parse_page(page_bytes([]))
    assert empty is not None and len(empty.rows) == 0


@pytest.mark.parametrize(
    "content",
    [
        page_bytes([{"n": 1}, {"n": 1.5}]),  # floats go the strict way (no silent truncation)
        page_bytes([{"n": 2**63}]),  # Arrow would read it as a float
        page_bytes([{"n": 1}, {"n": "x"}]),  # mixed kinds: Arrow refuses
        page_bytes([{"s": {}}]),  # empty struct
        page_bytes(None, state="RUNNING"),
        page_bytes([[1, "a"], [2, "b"]]),  # valuesArray rows
        b"not json",
        b'[{"state": "DONE"}]',
    ],
)
def test_parse_page_leaves_what_it_cannot_read_exactly_to_the_strict_path(content) -> None:
    assert frames.parse_page(content) is None


def test_add_arrow_page_after_to_dataframe_is_an_error() -> None:
    builder = FrameBuilder()
    builder.add_arrow_page(frames.parse_page(page_bytes(RICH_ROWS)).rows)
    assert len(builder.to_dataframe()) == 3
    with pytest.raises(CortexError, match="new FrameBuilder"):
        builder.add_arrow_page(frames.parse_page(page_bytes(RICH_ROWS)).rows)


def test_equal_strings_in_list_and_dict_cells_are_shared_not_aliased() -> None:
    rows = [
        {"tags": ["evasive", "tunnel"], "if": {"type": {"id": 1, "value": "ethernet"}, "slot": 1}}
        for _ in range(3)
    ]
    df = to_dataframe([dict(r, tags=list(r["tags"])) for r in rows])
    tags, ifs = df["tags"].tolist(), df["if"].tolist()
    assert tags == [["evasive", "tunnel"]] * 3
    assert tags[0][0] is tags[2][0]  # one str object for equal values
    assert ifs[0]["type"]["value"] is ifs[1]["type"]["value"]
    tags[0].append("x")  # cells stay separate objects: changing one changes no other
    ifs[0]["slot"] = 9
    assert df["tags"].iloc[1] == ["evasive", "tunnel"] and df["if"].iloc[1]["slot"] == 1


MISSING = [
    {"app": "ssl", "port": 443, "is_nat": True, "time_generated": T0},
    {},  # every column missing in this row
]


@pytest.mark.parametrize("dtypes", ["objects", "arrow"])
def test_missing_text_shows_the_same_marker_as_missing_numbers_and_booleans(dtypes):
    """Text, Int64 and boolean are pandas' nullable dtypes: a missing value is pd.NA, shown
    <NA>, in every column (a timestamp shows NaT, pandas' only marker for it)."""
    for df in (
        build(MISSING, schema=TRAFFIC_SCHEMA, dtypes=dtypes),
        build(MISSING, dtypes=dtypes),
        frames.arrow_to_frame(_table_of(MISSING), dtypes=dtypes),
    ):
        missing = df.iloc[1]
        assert all(missing[c] is pd.NA for c in ("app", "port", "is_nat")), df.dtypes
        assert isinstance(df["app"].dtype, pd.StringDtype) and df["app"].dtype.na_value is pd.NA
        assert "NaN" not in df[["app", "port", "is_nat"]].to_string()
        assert pd.isna(df["time_generated"].iloc[1])


def _table_of(rows):
    builder = FrameBuilder()
    builder.add_page(rows)
    return builder.take_table()
