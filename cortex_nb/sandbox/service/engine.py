"""The sandbox's query engine: csql (BigQuery-like) translated by sqlglot, run by DuckDB.

``Engine.prepare`` checks a query the way the service does when a job is created: syntax, a
single SELECT, known tables of this instance, nothing of DuckDB's own (``policy``), BigQuery's
typing (``typecheck``), columns and functions that bind (DuckDB's binding errors worded as the
service words them). Any problem raises ``QueryRejected`` (400, or a FAILED job). The csql is
written for DuckDB with BigQuery's meaning by ``csql``. ``prepare`` runs in the job's worker on
the job's cursor, like ``Engine.materialize``, which runs a prepared query into a result
table; errors there are runtime errors (the job becomes FAILED).

Limits: DuckDB runs on ``threads`` threads within its share of ``memory_limit_mb`` (the logs,
running queries and kept results together; see ``limits``) and never spills to disk, so a query
that needs more fails with DuckDB's out-of-memory error instead of growing.

A result table keeps the typed columns only; each page is rendered to JSON when it is asked
for, by DuckDB (a range scan by ``rowid`` and one SQL expression per row: no Python work per
cell), as the service's ``valuesDictionary`` objects or ``valuesArray`` lists. A query that is
one log table's rows in table order (``SELECT *``, columns, struct fields, aliases: no filter,
join, grouping, order or limit) is not copied at all: its pages are read in place, slices of a
plain scan of the log table's view in its stored order (the logs never change). So a job is
DONE as soon as its rows are counted or stored, the first page of a million-row ``SELECT *``
comes back in a fraction of a second, and a kept result costs its typed columns at most, never
its JSON; pages asked for at once render on several cores.
Timestamps become microsecond integers, structs nested objects, lists arrays, and null columns
are left out of the row (``concat_ws`` skips NULL parts).

Table names: `` `<instance_id>.firewall.traffic` `` or `` `firewall.traffic` ``, quoted or not.
Columns without a name get BigQuery's ``f0_``, ``f1_``... (Timestamps nested inside structs
or arrays of a result stay ISO strings; the logs have none.) The logs' timestamp columns are
DuckDB TIMESTAMPTZ, csql's TIMESTAMP (an instant; wall-clock TIMESTAMP columns of the generator
are converted when loaded), and the session time zone is UTC, so ``CURRENT_TIMESTAMP``,
``TIMESTAMP("2020-03-01 00:00:00")`` and ``time_generated`` compare, print and take ``TIME()``
as in the service. File access and Python replacement scans are disabled and the configuration
locked after loading.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import duckdb
import orjson
import sqlglot
from sqlglot import exp
from sqlglot.schema import MappingSchema

from cortex_nb import catalog
from cortex_nb.sandbox.data import columns, logs
from cortex_nb.sandbox.limits import duckdb_memory_mb
from cortex_nb.sandbox.service import policy, typecheck
from cortex_nb.sandbox.service.csql import to_duckdb
from cortex_nb.sandbox.service.policy import QueryRejected

__all__ = ["Engine", "Prepared", "QueryRejected", "ResultSet", "bigquery_field"]

JSON_SAMPLE_ROWS = 1000  # rows rendered to estimate a result's JSON size (for retention)
CATALOG = "sandbox"  # the compressed in-memory database every name is qualified with
_TIMESTAMP_TYPES = {
    "timestamp",
    "timestamp with time zone",
    "timestamp_ns",
    "timestamp_ms",
    "timestamp_s",
}
_BIGQUERY_TYPES = {
    "boolean": "BOOLEAN",
    "tinyint": "INTEGER",
    "smallint": "INTEGER",
    "integer": "INTEGER",
    "bigint": "INTEGER",
    "hugeint": "INTEGER",
    "utinyint": "INTEGER",
    "usmallint": "INTEGER",
    "uinteger": "INTEGER",
    "ubigint": "INTEGER",
    "uhugeint": "INTEGER",
    "float": "FLOAT",
    "double": "FLOAT",
    "decimal": "FLOAT",
    "varchar": "STRING",
    "blob": "BYTES",
    "date": "DATE",
    "time": "TIME",
    **dict.fromkeys(_TIMESTAMP_TYPES, "TIMESTAMP"),
}


@dataclass(frozen=True)
class Prepared:
    """A checked query: the DuckDB SQL and its output columns."""

    sql: str
    names: list[str]
    types: list[duckdb.DuckDBPyType]
    # a table's rows in table order: the SQL of a slice of them (``LIMIT ? OFFSET ?``), else None
    rows_in_place: str | None = None


@dataclass
class ResultSet:
    """A job result: a result table (``table``), or, with ``table`` empty, a log table's rows
    read in place (``prepared.rows_in_place``). ``size`` is about the bytes of its rows as
    JSON for a result table, 0 for rows read in place (they hold no memory); ``row_bytes``
    about the bytes of one row as JSON, for both (what a page will cost)."""

    table: str
    rows: int
    prepared: Prepared
    schema: list[dict] = field(default_factory=list)
    size: int = 0
    row_bytes: int = 0


class Engine:
    """DuckDB with the synthetic logs loaded, serving one sandbox instance."""

    def __init__(
        self,
        rows: int,
        seed: int,
        anchor: int,
        instance_id: str,
        threads: int = 2,
        memory_limit_mb: int = 1024,
    ) -> None:
        self.instance_id, self.memory_limit_mb = instance_id, memory_limit_mb
        # no temp_directory: over the limit a query fails instead of spilling into the cwd
        memory = f"{duckdb_memory_mb(memory_limit_mb)}MB"
        limits = {"threads": threads, "memory_limit": memory, "temp_directory": ""}
        self._con = duckdb.connect(config=limits)
        self._con.execute("SET TimeZone = 'UTC'")
        # no progress bar: DuckDB would print it into the user's terminal or notebook
        self._con.execute("SET enable_progress_bar = false")
        # a compressed in-memory catalog holds the logs in a tenth of the memory
        self._con.execute(f"ATTACH ':memory:' AS {CATALOG} (COMPRESS)")
        self._con.execute(f"USE {CATALOG}")  # for loading only: cursors start elsewhere
        # traffic now, every other log table when a query first names it (see _map_table)
        self.logs = logs.LogTables(self._con, rows, seed, anchor, database=CATALOG)
        self.schema = _logs_schema()
        # results stay uncompressed: written once, read soon, and compressing JSON text is slow
        self._con.execute("CREATE SCHEMA memory.results")
        # queries are untrusted text: no files, no network, no way to turn that back on
        self._con.execute("SET enable_external_access = false")
        self._con.execute("SET python_enable_replacements = false")  # no Python variables
        self._con.execute("SET lock_configuration = true")
        self._names = itertools.count(1)

    def close(self) -> None:
        """Release the database."""
        self._con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection for one thread (DuckDB connections are not shared across threads)."""
        return self._con.cursor()

    def prepare(self, cur: duckdb.DuckDBPyConnection, csql: str) -> Prepared:
        """Translate and bind ``csql`` on ``cur``; ``QueryRejected`` for what the service refuses.

        Binding may fold constants, which is real work: it runs on the job's cursor, so the
        job's interrupt (cancel, timeout) reaches it.
        """
        sql = self.translate(csql)
        try:
            relation = cur.sql(sql)
            names, types = relation.columns, relation.dtypes
        except (duckdb.InterruptException, duckdb.OutOfMemoryException):
            raise  # the job's own limits: its worker reports them
        except duckdb.Error as error:
            names = typecheck.visible_names(sql, self.schema)
            raise typecheck.binding_refusal(
                _first_line(error), _error_context(error), csql, names
            ) from None
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise QueryRejected(
                "Duplicate column names in the result are not supported. Found duplicate(s): "
                f"{', '.join(duplicates)} (give the columns aliases with AS)"
            )
        return Prepared(sql, list(names), list(types), _rows_in_place(sql))

    def translate(self, csql: str) -> str:
        """csql -> DuckDB SQL: checked by ``policy`` and ``typecheck``, tables mapped, unnamed
        columns ``fN_``, BigQuery's functions in DuckDB's words (``csql``)."""
        try:
            tree = _parse_single_select(csql)
            policy.check(tree, self._map_table)
            _name_anonymous_columns(tree)
            typecheck.check(tree, self.schema, csql)
            return to_duckdb(tree)
        except sqlglot.errors.SqlglotError as error:  # the scope analysis could not follow it
            raise QueryRejected(f"Unsupported query: {_sqlglot_message(error)}", csql) from None
        except RecursionError:
            raise QueryRejected(
                "The query is nested too deeply to parse; flatten it (fewer levels of "
                "parentheses, subqueries or CASE)"
            ) from None

    def _map_table(self, table: exp.Table) -> None:
        """Point a log table reference at the sandbox's catalog, or refuse it."""
        if not isinstance(table.this, exp.Identifier):
            raise QueryRejected("Table functions are not supported", context=table.sql("bigquery"))
        catalog, db, name = table.catalog, table.db.lower(), table.name.lower()
        shown = ".".join(p for p in (catalog, table.db, table.name) if p)
        if catalog and catalog != self.instance_id:
            raise QueryRejected(
                f"Unknown instance '{catalog}' in table `{shown}`: this sandbox serves instance "
                f"'{self.instance_id}'",
                context=shown,
            )
        if f"{db}.{name}" not in self.logs.names:
            raise QueryRejected(
                f"Table not found: `{shown}`. Tables: {', '.join(sorted(self.logs.names))} "
                f"(optionally prefixed with '{self.instance_id}.')",
                context=shown,
            )
        self.logs.ensure(f"{db}.{name}")
        table.set("catalog", exp.to_identifier(CATALOG))
        table.set("db", exp.to_identifier(db))
        table.set("this", exp.to_identifier(name))

    def materialize(self, cur: duckdb.DuckDBPyConnection, prepared: Prepared) -> ResultSet:
        """Run ``prepared`` on ``cur`` into a result table (``cur.interrupt()`` stops it)."""
        schema = [bigquery_field(n, t) for n, t in zip(prepared.names, prepared.types, strict=True)]
        # the query text was parsed, checked and regenerated by sqlglot in prepare()
        if prepared.rows_in_place is not None:  # read in place: only count the rows
            count = f"SELECT count(*) FROM ({prepared.sql}) AS q"  # noqa: S608
            rows = cur.execute(count).fetchone()[0]
            sample = f"SELECT * FROM ({prepared.sql}) AS q LIMIT {JSON_SAMPLE_ROWS}"  # noqa: S608
            return ResultSet("", rows, prepared, schema, 0, _row_bytes(cur, sample, prepared))
        table = f'memory.results."r{next(self._names)}"'
        cur.execute(f"CREATE TABLE {table} AS SELECT * FROM ({prepared.sql}) AS q")  # noqa: S608
        rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
        sample = f"SELECT * FROM {table} WHERE rowid < {JSON_SAMPLE_ROWS}"  # noqa: S608
        row_bytes = _row_bytes(cur, sample, prepared)
        return ResultSet(table, rows, prepared, schema, row_bytes * rows, row_bytes)

    def drop(self, result: ResultSet) -> None:
        """Free a result table (rows read in place hold nothing)."""
        if not result.table:
            return
        with self.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {result.table}")

    def page(self, result: ResultSet, offset: int, limit: int, values_array: bool = False) -> bytes:
        """Rows ``offset``..``offset+limit`` as JSON texts joined by commas (no brackets)."""
        if values_array:
            value = _row_array_sql(result.prepared.names, result.prepared.types)
        else:
            value = _row_json_sql(result.prepared.names, result.prepared.types)
        if result.table:
            where = "WHERE rowid >= ? AND rowid < ? ORDER BY rowid"
            sql = f"SELECT {value} FROM {result.table} {where}"  # noqa: S608 (our own names)
            bounds = [offset, offset + limit]
        else:  # log tables are views: no rowid, but a plain scan keeps the table's order
            sql = f"SELECT {value} FROM ({result.prepared.rows_in_place}) AS q"  # noqa: S608
            bounds = [limit, offset]
        with self.cursor() as cur:
            texts = cur.execute(sql, bounds).fetchnumpy()
        return ",".join(next(iter(texts.values())).tolist()).encode()


def _logs_schema() -> MappingSchema:
    """Every log table's columns and their DuckDB types, for sqlglot's type checks.

    Read from the catalog, as the views are made (``columns.sql_type``), so a table not made
    yet (they are made on first use) is checked all the same. Timestamps are TIMESTAMPTZ:
    csql's TIMESTAMP is an instant, as in BigQuery, not DuckDB's wall-clock TIMESTAMP (which
    would not take ``TIME()`` and would print without its ``+00``).
    """
    tables: dict[str, dict[str, dict[str, exp.DataType]]] = {}
    for table in catalog.tables():
        db, name = table.name.split(".")
        tables.setdefault(db, {})[name] = {
            f.name: exp.DataType.build(columns.sql_type(f), dialect="duckdb") for f in table.fields
        }
    return MappingSchema({CATALOG: tables}, dialect="bigquery")


_ROW_WISE = (exp.Star, exp.Column, exp.Dot, exp.Identifier)  # nodes that keep one row per row


def _rows_in_place(sql: str) -> str | None:
    """For a query that is one table's rows in table order, the SQL of a slice of them
    (``LIMIT ? OFFSET ?``: a plain scan keeps the stored order); None for any other query."""
    tree = sqlglot.parse_one(sql, read="duckdb")
    if not isinstance(tree, exp.Select):
        return None
    source = tree.args.get("from_") or tree.args.get("from")  # the key's name in sqlglot < 28
    table = source.this if isinstance(source, exp.From) else None
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        return None
    plain = {"expressions", "from", "from_"}
    if any(v for k, v in tree.args.items() if k not in plain) or any(
        v for k, v in table.args.items() if k not in {"this", "db", "catalog", "alias"}
    ):
        return None  # a filter, join, grouping, order, limit, sample: not the table's rows
    for item in tree.expressions:
        item = item.this if isinstance(item, exp.Alias) else item
        if not all(isinstance(node, _ROW_WISE) for node in item.walk()):
            return None
    return tree.sql(dialect="duckdb") + " LIMIT ? OFFSET ?"


def _row_bytes(cur: duckdb.DuckDBPyConnection, sample: str, prepared: Prepared) -> int:
    """About the bytes of one row as ``valuesDictionary`` JSON, from the rows ``sample`` reads."""
    if not prepared.names:
        return 0
    row_json = _row_json_sql(prepared.names, prepared.types)
    measure = f"SELECT avg(strlen({row_json})) FROM ({sample}) AS s"  # noqa: S608 (our own SQL)
    average = cur.execute(measure).fetchone()[0]
    return int(average or 0)


def bigquery_field(name: str, dtype: duckdb.DuckDBPyType) -> dict:
    """A ``schema.fields`` item (BigQuery type names) for a DuckDB column type."""
    if dtype.id in ("list", "array"):
        item = bigquery_field(name, dtype.children[0][1])
        return {**item, "mode": "REPEATED"}
    if dtype.id == "struct":
        fields = [bigquery_field(n, t) for n, t in dtype.children]
        return {"name": name, "type": "RECORD", "mode": "NULLABLE", "fields": fields}
    return {"name": name, "type": _BIGQUERY_TYPES.get(dtype.id, "STRING"), "mode": "NULLABLE"}


def _parse_single_select(csql: str) -> exp.Query:
    try:
        statements = [s for s in sqlglot.parse(csql, read="bigquery") if s is not None]
    except sqlglot.errors.SqlglotError as error:
        raise QueryRejected(f"Syntax error: {_sqlglot_message(error)}", context=csql) from None
    if len(statements) != 1:
        raise QueryRejected("Expected exactly one SELECT statement", context=csql)
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryRejected("Only SELECT queries are supported", context=csql)
    return tree


def _name_anonymous_columns(tree: exp.Query) -> None:
    """Give unnamed result columns BigQuery's names (``f0_``, ``f1_``...)."""
    if not isinstance(tree, exp.Select):
        return
    anonymous = 0
    for position, item in enumerate(tree.expressions):
        if isinstance(item, (exp.Alias, exp.Column, exp.Star, exp.Dot)):
            continue
        tree.expressions[position] = exp.alias_(item, f"f{anonymous}_", copy=False)
        anonymous += 1


def _sqlglot_message(error: sqlglot.errors.SqlglotError) -> str:
    details = getattr(error, "errors", None) or []
    if details:
        first = details[0]
        return f"{first.get('description')} at line {first.get('line')}, column {first.get('col')}"
    return str(error).splitlines()[0]


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _error_context(error: Exception) -> str | None:
    lines = str(error).strip().splitlines()
    return "\n".join(lines[1:]).strip() or None


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _json_value_sql(name: str, dtype: duckdb.DuckDBPyType) -> str:
    """JSON text of one column value, NULL when the value is NULL."""
    if dtype.id in _TIMESTAMP_TYPES:
        return f"to_json(epoch_us({_ident(name)}))"
    return f"to_json({_ident(name)})"


def _row_json_sql(names: list[str], types: list) -> str:
    """SQL for a row as a JSON object without its null columns."""
    parts = [
        f"{columns.lit(orjson.dumps(n).decode() + ':')} || {_json_value_sql(n, t)}"
        for n, t in zip(names, types, strict=True)
    ]
    return f"'{{' || concat_ws(',', {', '.join(parts)}) || '}}'"


def _row_array_sql(names: list[str], types: list) -> str:
    """SQL for a row as a JSON array ordered like the schema (nulls kept as null)."""
    parts = [
        f"coalesce({_json_value_sql(n, t)}, 'null')" for n, t in zip(names, types, strict=True)
    ]
    return "concat('[', " + ", ',', ".join(parts) + ", ']')"
