"""The verdict on each line of a dump: typed fields and scope columns for a good line, the first thing
wrong with it for a bad one.

DuckDB's JSON functions judge every line on its own (Polars' JSON decoder fails a whole column on one
bad line). One query per chunk parses each line three times at most (``json_valid``, then the types and
the unescaped values of all fields in one call each) and hands back typed rows as Arrow.

Invariant: the query returns exactly one row per input line, in line order; a row without a ``reason``
has both scope columns (``tenant_id``, ``project_id``), and a row with one keeps its line in ``raw_text``.
So every line is either staged in a scope or quarantined with its reason, never both and never neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map

type JsonKind = Literal["string", "number"]

ROLES = ("user", "assistant", "system")
# (json field, expected JSON kind) in the guide's export shape, in the order reasons are reported.
FIELDS: tuple[tuple[str, JsonKind], ...] = (
    ("thread_id", "string"),
    ("assistant_id", "string"),
    ("message_id", "string"),
    ("role", "string"),
    ("text", "string"),
    ("created_at", "number"),
)
# Unix seconds beyond this are certainly not a message time (year 2100); they would overflow timestamps.
_MAX_EPOCH = 4_102_444_800


def _reason_sql() -> str:
    """One SQL CASE that names the first thing wrong with a line, or NULL for a good one.

    ``t<i>`` is the JSON type of field i (NULL when absent), read from the line itself.
    """
    checks = [
        "WHEN bad_utf8 THEN 'invalid UTF-8'",
        # A line that trims to nothing is never valid JSON, so only invalid lines need trimming (a copy).
        "WHEN line IS NULL OR (NOT valid AND trim(line) = '') THEN 'empty line'",
        "WHEN NOT valid THEN 'malformed JSON'",
        "WHEN kind <> 'OBJECT' THEN 'not a JSON object'",
    ]
    for i, (name, _) in enumerate(FIELDS, start=1):
        checks.append(f"WHEN t{i} IS NULL OR t{i} = 'NULL' THEN 'missing field: {name}'")
    for i, (name, kind) in enumerate(FIELDS, start=1):
        if kind == "string":
            checks.append(f"WHEN t{i} <> 'VARCHAR' THEN 'mistyped field: {name} must be a string'")
        else:
            checks.append(
                f"WHEN t{i} NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
                f"THEN 'mistyped field: {name} must be unix seconds (a number)'"
            )
    for name in ("thread_id", "assistant_id", "message_id"):
        checks.append(f"WHEN trim({name}) = '' THEN 'empty field: {name}'")
    checks.append(f"WHEN created_epoch < 0 OR created_epoch > {_MAX_EPOCH} THEN 'created_at out of range'")
    roles = ", ".join(f"'{r}'" for r in ROLES)
    checks.append(f"WHEN role NOT IN ({roles}) THEN 'unknown role: ' || left(role, 40)")
    checks.append("WHEN tenant_id IS NULL THEN 'thread_id has no tenant in the tenant map'")
    return "CASE " + " ".join(checks) + " END"


def classify_sql(mapping: ScopeMapping, dump_id: str, seq: int) -> str:
    """Typed fields, scope columns, a reason and (for bad lines only) the raw text of every line of
    the relation ``lines``, in line order.

    Each value is read straight from the line: ``json_type`` and ``json_extract_string`` with a list of
    paths parse the line once each, where extracting JSON values and asking each for its type and
    string would parse the long text field three more times. For numbers ``json_extract_string`` gives
    exactly the JSON text ``json_extract`` gives, so ``created_at`` goes through the same JSON -> DOUBLE
    cast as a plain JSON extraction.
    """
    paths = ", ".join(f"'$.{name}'" for name, _ in FIELDS)
    tenant_sql, project_sql = mapping.sql_columns()
    join = "LEFT JOIN tenant_map m USING (thread_id)" if mapping.scope_by is ScopeBy.TENANT else ""
    map_col = "m.tenant_id AS map_tenant" if mapping.scope_by is ScopeBy.TENANT else "NULL AS map_tenant"
    string_fields = ",\n".join(
        f"CASE WHEN t{i} = 'VARCHAR' THEN s[{i}] END AS {name}"
        for i, (name, kind) in enumerate(FIELDS, start=1)
        if kind == "string"
    )
    # One column per field type: referring to list elements over and over costs a copy each time.
    type_columns = ", ".join(
        f"CASE WHEN types[1] = 'OBJECT' THEN types[{i + 1}] END AS t{i}" for i in range(1, len(FIELDS) + 1)
    )
    type_names = ", ".join(f"t{i}" for i in range(1, len(FIELDS) + 1))
    created = len(FIELDS)
    dump_lit = "'" + dump_id.replace("'", "''") + "'"
    return f"""
        WITH parsed AS (
            SELECT line_no, line, bad_utf8,
                   CASE WHEN bad_utf8 OR line IS NULL THEN NULL ELSE json_valid(line) END AS valid
            FROM lines
        ), typed_root AS (
            SELECT *, CASE WHEN valid THEN json_type(line, ['$', {paths}]) END AS types FROM parsed
        ), fields AS (
            SELECT line_no, line, bad_utf8, valid, types[1] AS kind, {type_columns},
                   CASE WHEN types[1] = 'OBJECT' THEN json_extract_string(line, [{paths}]) END AS s
            FROM typed_root
        ), typed AS (
            SELECT line_no, line, bad_utf8, valid, kind, {type_names},
                   {string_fields},
                   CASE WHEN t{created} IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                        THEN TRY_CAST(CAST(s[{created}] AS JSON) AS DOUBLE) END AS created_epoch
            FROM fields
        ), scoped AS (
            SELECT f.*, {map_col} FROM typed f {join}
        ), with_scope AS (
            SELECT *,
                   CASE WHEN thread_id IS NOT NULL AND assistant_id IS NOT NULL
                        THEN {tenant_sql} END AS tenant_id,
                   CASE WHEN thread_id IS NOT NULL AND assistant_id IS NOT NULL
                        THEN {project_sql} END AS project_id
            FROM scoped
        ), judged AS (
            SELECT *, {_reason_sql()} AS reason FROM with_scope
        )
        SELECT message_id, thread_id, assistant_id, role, text,
               CASE WHEN reason IS NULL THEN make_timestamptz(CAST(created_epoch * 1000000 AS BIGINT)) END
                   AS created_at,
               CASE WHEN reason IS NULL THEN CAST(created_epoch AS BIGINT) END AS created_epoch,
               CASE WHEN reason IS NULL THEN length(text) END AS text_chars,
               CASE WHEN reason IS NULL
                    THEN regexp_full_match(text, '[\\s\\x{{00A0}}\\x{{2000}}-\\x{{200B}}\\x{{3000}}]*')
               END AS is_blank,
               tenant_id, project_id, {dump_lit} AS dump_id, CAST({seq} AS BIGINT) AS dump_seq, line_no,
               reason,
               CASE WHEN reason IS NOT NULL THEN regexp_replace(reason, ':.*', '') END AS reason_kind,
               CASE WHEN reason IS NOT NULL THEN line END AS raw_text
        FROM judged
        """


def classifier(con: duckdb.DuckDBPyConnection, mapping: ScopeMapping) -> duckdb.DuckDBPyConnection:
    """A connection of its own (temp tables, registered frames) to classify chunks on one thread."""
    cursor = con.cursor()
    cursor.execute("SET threads = 1")
    cursor.execute("SET preserve_insertion_order = true")
    # Strings leave DuckDB as large_string, the type the staged files are written with: no conversion.
    cursor.execute("SET arrow_large_buffer_size = true")
    if mapping.tenant_map is not None:
        load_tenant_map(cursor, Path(mapping.tenant_map))
    return cursor


def classify_chunk(con: duckdb.DuckDBPyConnection, lines: pl.DataFrame, sql: str) -> pa.Table:
    """Run the classification over one chunk's lines; the result keeps the line order."""
    con.register("lines", lines.to_arrow())
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("lines")
