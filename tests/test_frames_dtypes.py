"""Lean frames: lists and structs as Arrow-backed pandas columns or Python objects (the default),
in FrameBuilder, query() and the magic."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from cortex_nb import ConfigurationError, Credentials, HTTPClient
from cortex_nb.notebook.connection import get_connection as get_session
from cortex_nb.options import QueryOptions
from cortex_nb.query.service import QueryService
from cortex_nb.results.cache import ResultCache
from cortex_nb.results.frames import FrameBuilder, parse_page

IF_DETAILS = {"unit": 0, "type": {"id": 0, "value": "ethernet"}, "slot": 1, "port": 3}
ROWS = [
    {"tags": ["evasive", "tunnel"], "if": IF_DETAILS, "app": "ssl"},
    {"tags": [], "app": "dns"},
    {"if": dict(IF_DETAILS, port=7)},
]


def build(*pages, **options) -> pd.DataFrame:
    builder = FrameBuilder(**options)
    for page in pages:
        builder.add_page(page)
    return builder.to_dataframe()


def test_lists_and_structs_can_be_arrow_backed():
    df = build(ROWS, dtypes="arrow")
    assert isinstance(df["tags"].dtype, pd.ArrowDtype) and isinstance(df["if"].dtype, pd.ArrowDtype)
    assert df["tags"].iloc[0] == ["evasive", "tunnel"] and df["if"].iloc[2]["port"] == 7
    assert df["tags"].isna().tolist() == [False, False, True]
    assert df["tags"].list.len().tolist() == [2, 0, pd.NA]
    assert df["if"].struct.field("port").tolist() == [3, pd.NA, 7]
    assert str(df["app"].dtype) == "string"


def test_both_modes_hold_the_same_values():
    arrow, objects = build(ROWS, dtypes="arrow"), build(ROWS)
    assert objects["tags"].dtype == object and objects["if"].dtype == object
    for name in ("tags", "if"):
        left = [None if v is pd.NA else v for v in arrow[name].tolist()]
        assert left == objects[name].tolist()


def test_struct_fields_first_seen_on_a_later_page_are_merged():
    df = build([{"s": {"a": 1}}], [{"s": {"a": 2, "b": "x"}}], dtypes="arrow")
    assert df["s"].tolist() == [{"a": 1, "b": None}, {"a": 2, "b": "x"}]


def test_arrow_parsed_pages_and_decoded_pages_make_one_column():
    import orjson

    builder = FrameBuilder(dtypes="arrow")
    builder.add_page(ROWS)
    body = orjson.dumps({"state": "DONE", "page": {"pageCursor": None, "result": {"data": ROWS}}})
    builder.add_arrow_page(parse_page(body).rows)
    df = builder.to_dataframe()
    assert isinstance(df["if"].dtype, pd.ArrowDtype) and len(df) == 6
    assert df["tags"].iloc[3] == ["evasive", "tunnel"]


def test_a_column_of_mixed_kinds_stays_python_objects():
    df = build([{"c": [1, 2]}, {"c": {"x": 1}}, {"c": "text"}], dtypes="arrow")
    assert df["c"].dtype == object and df["c"].tolist() == [[1, 2], {"x": 1}, "text"]


def test_an_unknown_mode_is_a_clear_error():
    with pytest.raises(ConfigurationError, match=r"dtypes='numpy'.*'arrow'.*'objects'"):
        FrameBuilder(dtypes="numpy")


@pytest.fixture()
def service(sandbox) -> QueryService:
    client = HTTPClient(url=sandbox.url, credentials=Credentials(**sandbox.credentials()))
    return QueryService(client=client)


def test_query_takes_the_mode(sandbox, service):
    sql = f"SELECT * FROM `{sandbox.instance_id}.firewall.traffic` LIMIT 50"
    lean, objects = service.query(sql, dtypes="arrow").df, service.query(sql).df
    assert str(lean["characteristics_of_app"].dtype) == "list<item: string>[pyarrow]"
    assert objects["characteristics_of_app"].dtype == object
    assert isinstance(lean["inbound_if_details"].dtype, pd.ArrowDtype)


def test_every_frame_path_shows_missing_values_alike(sandbox, service, tmp_path):
    """In memory (both modes), from a dataset and from the cache: text, integers and booleans
    missing are pd.NA, shown <NA>; the frames are equal."""
    sql = (
        "SELECT app, IF(dest_port = 443, NULL, app) AS other, IF(dest_port = 443, NULL, dest_port)"
        " AS port, IF(dest_port = 443, NULL, is_nat) AS nat, time_generated"
        f" FROM `{sandbox.instance_id}.firewall.traffic` ORDER BY time_generated LIMIT 200"
    )
    cache = ResultCache(tmp_path / "cache")
    for _ in range(2):  # the second one is a cache hit
        cached = cache.get_or_run(
            ("t", "i"), sql, QueryOptions(), lambda: service.query(sql), say=lambda line: None
        )
    frames = {
        "objects": service.query(sql).df,
        "arrow": service.query(sql, dtypes="arrow").df,
        "dataset": service.query(sql, to=tmp_path / "ds").to_pandas()[list(cached.df.columns)],
        "cache": cached.df,
    }
    for way, df in frames.items():
        missing = df[df["other"].isna()]
        assert len(missing) > 0, way
        assert str(df["other"].dtype) == "string" and df["other"].dtype.na_value is pd.NA, way
        assert "NaN" not in missing.to_string() and "<NA>" in missing.to_string(), way
        pd.testing.assert_frame_equal(df, frames["objects"], check_like=False, obj=way)


def test_default_frames_go_to_parquet_and_feather_and_back(sandbox, service, tmp_path):
    df = service.query(f"SELECT * FROM `{sandbox.instance_id}.firewall.traffic`").df
    df.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "t.parquet"), df)
    df.to_feather(tmp_path / "t.feather")
    assert len(pd.read_feather(tmp_path / "t.feather")) == len(df)


def test_magic_takes_the_mode_per_cell_and_as_a_trait(sandbox):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "cortex_nb")
    get_session().connect(
        Credentials(**sandbox.credentials()), url=sandbox.url, instance_id=sandbox.instance_id
    )
    sql = "SELECT characteristics_of_app FROM firewall.traffic LIMIT 5"
    try:
        with capture_output():
            ip.run_cell(f"%%cortex -o a\n{sql}")
            ip.run_cell(f"%%cortex -o b --dtypes arrow\n{sql}")
            ip.run_line_magic("config", "CortexMagics.dtypes = 'arrow'")
            ip.run_cell(f"%%cortex -o c\n{sql}")
        kinds = [str(ip.user_ns[v]["characteristics_of_app"].dtype) for v in "abc"]
        assert kinds == ["object", *["list<item: string>[pyarrow]"] * 2]
    finally:
        ip.run_line_magic("config", "CortexMagics.dtypes = 'objects'")
        get_session().disconnect()
