"""The analysts' DuckDB file: one view per staged table, straight over the Parquet files.

Invariant: after :func:`refresh`, every view named in :data:`VIEWS` exists and answers ``SELECT *``,
whatever the data directory holds. A table whose files exist is read at query time (new dumps show up
without rebuilding anything); a table with no files yet gets an empty view with the table's columns,
so analysts' queries and the README's examples work from the very first run, even one that staged
nothing. The file is refreshed after every run so that an empty view is swapped for one over the
files once they appear.
"""

from __future__ import annotations

import functools
import hashlib
import json
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.scoring.scored import FILTERED_COLUMNS, SCORED_SCHEMA
from pipelines.tables import (
    MANIFEST_SCHEMA,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    SCOPES_SCHEMA,
    DataLayout,
    PolarsSchema,
)

type Columns = list[tuple[str, str]]  # (name, DuckDB type)


def _from_arrow(schema: pa.Schema) -> PolarsSchema:
    # Not Schema.empty_table(): it imports pandas.
    return dict(pl.from_arrow(pa.Table.from_batches([], schema=schema)).schema)  # type: ignore[union-attr]


_PY_TYPES: dict[type, pl.DataType | type[pl.DataType]] = {
    str: pl.String,
    int: pl.Int64,
    float: pl.Float64,
    bool: pl.Boolean,
}


def _dataclass_schema(cls: type, extra: PolarsSchema | None = None) -> PolarsSchema:
    """A dataclass written as one row per instance: its scalar fields (``X | None`` as X), then ``extra``,
    then its list and dict fields, which are written as JSON text."""
    hints = typing.get_type_hints(cls)
    scalars: PolarsSchema = {}
    as_json: PolarsSchema = {}
    for f in fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType):
            hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
        if hint in _PY_TYPES:
            scalars[f.name] = _PY_TYPES[hint]
        elif typing.get_origin(hint) in (list, dict):
            as_json[f.name] = pl.String
    return scalars | (extra or {}) | as_json


def _message_stats() -> PolarsSchema:
    from pipelines.ingest.messages import MessageStats

    return _dataclass_schema(MessageStats, {"scope": pl.String})


def _paired(table: str) -> Callable[[], PolarsSchema]:
    def schema() -> PolarsSchema:
        from pipelines.pairing.pairs import PAIRING_COLUMNS, pair_frame

        # The pairing's own output on no messages: exactly the columns and types a batch is written with.
        patterns, unpaired = pair_frame(pl.DataFrame(schema=_from_arrow(RAW_SCHEMA)).select(PAIRING_COLUMNS))
        frame = patterns if table == "patterns" else unpaired
        return dict(frame.schema) | {"batch": pl.Int64}

    return schema


def _scored() -> PolarsSchema:
    return dict(SCORED_SCHEMA)


def _filtered() -> PolarsSchema:
    return {c: SCORED_SCHEMA[c] for c in FILTERED_COLUMNS}


def _ledger() -> PolarsSchema:
    from pipelines.load.ledger import LEDGER_SCHEMA

    return dict(LEDGER_SCHEMA)


def _loads() -> PolarsSchema:
    from pipelines.load.plan import LoadResult

    # As save_load_result writes a LoadResult: its figures, whether they reconcile, the run, then its
    # lists (rejections, ...) as JSON text.
    return _dataclass_schema(
        LoadResult,
        {"reconciles": pl.Boolean, "loaded": pl.Int64, "accounts_for_kept": pl.Boolean, "run_id": pl.String},
    )


@dataclass(frozen=True)
class _Table:
    """A staged table: its files (each glob under ``staged/`` is read on its own, then the reads are
    stacked by column name), the hive partition columns of its paths (in the order DuckDB adds them:
    by name), and its files' columns."""

    globs: tuple[str, ...]
    hive: tuple[str, ...]
    schema: Callable[[], PolarsSchema]
    # Columns read as another type than some files store them with.
    casts: tuple[tuple[str, str], ...] = ()


_TABLES: dict[str, _Table] = {
    "manifest": _Table(("_manifest/dumps.parquet",), (), lambda: dict(MANIFEST_SCHEMA)),
    "scopes": _Table(("_manifest/scopes.parquet",), (), lambda: dict(SCOPES_SCHEMA)),
    "raw_rows": _Table(("raw/dump=*/scope=*/*.parquet",), ("dump", "scope"), lambda: _from_arrow(RAW_SCHEMA)),
    # The ingest quarantine and the messages stage's (conflicts, superseded copies) are read apart:
    # conflict files written before raw_text was plain text carry the Parquet JSON type, which a read
    # across both would impose on the ingest rows (malformed lines are not JSON, so the view failed).
    "quarantine": _Table(
        ("quarantine/dump=*.parquet", "quarantine/scope=*.parquet"),
        (),
        lambda: _from_arrow(QUARANTINE_SCHEMA),
        casts=(("raw_text", "VARCHAR"),),
    ),
    "messages": _Table(("messages/scope=*/*.parquet",), ("scope",), lambda: _from_arrow(RAW_SCHEMA)),
    "message_stats": _Table(("message_stats/scope=*/*.parquet",), ("scope",), _message_stats),
    "pattern_batches": _Table(("patterns/scope=*/*.parquet",), ("scope",), _paired("patterns")),
    "unpaired_batches": _Table(("unpaired/scope=*/*.parquet",), ("scope",), _paired("unpaired")),
    "thread_batches": _Table(
        ("threads/scope=*/*.parquet",), ("scope",), lambda: {"thread_id": pl.String, "batch": pl.Int64}
    ),
    "scored": _Table(("scored/scope=*/*.parquet",), ("scope",), _scored),
    # Patterns a curation gate filtered (never near-duplicates, never loaded), with the gate and reason.
    "filtered_table": _Table(("filtered/scope=*/*.parquet",), ("scope",), _filtered),
    "ledger_history": _Table(("ledger/scope=*/dest=*/*.parquet",), ("dest", "scope"), _ledger),
    "loads": _Table(("loads/scope=*/*.parquet",), ("scope",), _loads),
}

_DERIVED = {
    "current_batches": "SELECT scope, thread_id, max(batch) AS batch FROM thread_batches GROUP BY ALL",
    "patterns": "SELECT p.* FROM pattern_batches p "
    "SEMI JOIN current_batches c USING (scope, thread_id, batch)",
    "unpaired": "SELECT u.* FROM unpaired_batches u "
    "SEMI JOIN current_batches c USING (scope, thread_id, batch)",
    "kept_patterns": "SELECT p.*, s.eval_score, s.score_source FROM patterns p "
    "JOIN scored s USING (scope, pattern_id) WHERE s.kept",
    "duplicates": "SELECT s.scope, s.pattern_id, s.duplicate_of, s.similarity, p.task, k.task AS kept_task "
    "FROM scored s JOIN patterns p USING (scope, pattern_id) "
    "LEFT JOIN patterns k ON k.scope = s.scope AND k.pattern_id = s.duplicate_of "
    "WHERE NOT s.kept AND s.duplicate_of IS NOT NULL",
    "filtered": "SELECT f.scope, f.pattern_id, f.filtered AS gate, f.filter_reason AS reason, f.eval_score, "
    "f.score_source, p.task, p.code FROM filtered_table f LEFT JOIN patterns p USING (scope, pattern_id)",
    "ledger": "SELECT * FROM ledger_history QUALIFY row_number() OVER "
    '(PARTITION BY scope, dest, pattern_id ORDER BY "at" DESC) = 1',
}

VIEWS: tuple[str, ...] = (*_TABLES, *_DERIVED)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def columns(name: str, con: duckdb.DuckDBPyConnection | None = None) -> Columns:
    """The columns of a staged table's view (its files' columns, then its hive columns); their types are
    DuckDB's for the table's schema, found on ``con`` (default: a connection of its own)."""
    table = _TABLES[name]
    schema, casts = table.schema(), dict(table.casts)
    own = con is None
    con = duckdb.connect() if con is None else con
    try:
        rel = con.from_arrow(pl.DataFrame(schema=schema).to_arrow())
        found = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    finally:
        if own:
            con.close()
    files = [(c, casts.get(c, found[c])) for c in schema]
    return files + [(h, "VARCHAR") for h in table.hive if h not in schema]


@functools.cache
def _empty_sqls() -> dict[str, str]:
    # Made once per process, for every table on one connection: a table's columns are fixed by the code,
    # and a DuckDB connection costs more to open (~20 ms) than finding one table's types on it (~2 ms).
    # A scope run early in a data folder's life has no files yet for several tables.
    con = duckdb.connect()
    try:
        return {name: _select_nulls(columns(name, con)) for name in _TABLES}
    finally:
        con.close()


def _select_nulls(cols: Columns) -> str:
    listed = ", ".join(f"CAST(NULL AS {t}) AS {_quote(c)}" for c, t in cols)
    return f"SELECT {listed} WHERE false"


def _empty_sql(name: str) -> str:
    return _empty_sqls()[name]


def _read_sql(staged: str, table: _Table, glob: str) -> str:
    path = _literal(f"{staged.rstrip('/')}/{glob}")
    # Hive values stay text: a scope or dump key that happens to look like a number or a date must
    # not change the column's type from one data directory to another.
    read = (
        f"read_parquet({path}, hive_partitioning = true, hive_types_autocast = false, union_by_name = true)"
    )
    if not table.casts:
        return f"SELECT * FROM {read}"
    replace = ", ".join(f"CAST({_quote(c)} AS {t}) AS {_quote(c)}" for c, t in table.casts)
    return f"SELECT * REPLACE ({replace}) FROM {read}"


def _table_sql(staged: str, name: str, has_files: Callable[[str], bool]) -> str:
    table = _TABLES[name]
    reads = [_read_sql(staged, table, g) for g in table.globs if has_files(g)]
    return " UNION ALL BY NAME ".join(reads) if reads else _empty_sql(name)


def _mark(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()[:16]


def create_views(con: duckdb.DuckDBPyConnection, staged: str, has_files: Callable[[str], bool]) -> list[str]:
    """Every view of :data:`VIEWS` on ``con`` over the tables under ``staged`` (a folder, or an
    ``s3://`` URL the connection can read); ``has_files(glob)`` says whether a glob under it matches.

    A view is made again only when its SQL has changed: each carries a digest of its SQL as its comment.
    Making a view binds it, which reads the footer of every file its globs match, over every scope: a
    cost that grows with the folder, paid by every run while the SQL changes only when a table gets its
    first files. A view over files sees new ones at query time, new columns included.
    """
    _make_views(con, _wanted(staged, has_files))
    return list(VIEWS)


def _wanted(staged: str, has_files: Callable[[str], bool]) -> dict[str, str]:
    return {name: _table_sql(staged, name, has_files) for name in _TABLES} | _DERIVED


def _make_views(con: duckdb.DuckDBPyConnection, wanted: dict[str, str]) -> None:
    # The views of the schema they are made in: a view of that name elsewhere is not one of them.
    made = dict(
        con.execute(
            "SELECT view_name, comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = current_schema()"
        ).fetchall()
    )
    for name, sql in wanted.items():
        if made.get(name) != (mark := _mark(sql)):
            con.execute(f"CREATE OR REPLACE VIEW {name} AS {sql}")
            con.execute(f"COMMENT ON VIEW {name} IS {_literal(mark)}")


def refresh(layout: DataLayout) -> list[str]:
    """(Re)create every view whose SQL has changed; returns their names (all of :data:`VIEWS`).

    The file is not opened when this very SQL was checked against it last and nothing has written to it
    since (``.warehouse.duckdb.views`` beside it records both): opening and checking took ~60 ms, paid by
    every scope run. An analyst's change to the file, committed or still in its write-ahead log, shows
    as a change of either file, and the views are checked again.
    """
    layout.root.mkdir(parents=True, exist_ok=True)
    wanted = _wanted(str(layout.staged), lambda glob: any(layout.staged.glob(glob)))
    views = _mark(json.dumps(wanted, sort_keys=True))
    record = layout.root / f".{layout.warehouse.name}.views"
    if _read_record(record) == _checked(views, layout.warehouse):
        return list(VIEWS)
    con = duckdb.connect(str(layout.warehouse))
    try:
        _make_views(con, wanted)
    finally:
        con.close()
    tmp = record.with_name(f"{record.name}.tmp")
    tmp.write_text(json.dumps(_checked(views, layout.warehouse)))
    tmp.replace(record)
    return list(VIEWS)


def _read_record(record: Path) -> object:
    """The record of the last check; None when there is none or it cannot be read (checked again then)."""
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def _checked(views: str, warehouse: Path) -> dict[str, object]:
    """The views' SQL and the state of the file and its write-ahead log, as a record of a check."""
    files = {}
    for path in (warehouse, warehouse.with_name(f"{warehouse.name}.wal")):
        try:
            st = path.stat()
        except FileNotFoundError:
            files[path.name] = None
            continue
        files[path.name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return {"views": views, "files": files}
