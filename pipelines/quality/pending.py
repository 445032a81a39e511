"""Dumps a run would ingest, and staged rows it would take in, measured without staging them: lines
counted, and rows and user -> assistant exchanges per scope from a DuckDB scan of a few fields. Read-only;
every figure here except the line (record) count is an estimate.

A plain guide NDJSON file is scanned by DuckDB as it is; a dump of any other shape, or compressed, or a zip
member, goes through its format's reader over the same decompressing stream the ingest uses
(:mod:`pipelines.ingest.formats`), and its figures count records (messages the reader found) instead of
lines. A message without an ``assistant_id`` takes the one the ingest would give it (the next assistant of
its thread, else the previous one). A dump whose format cannot be detected is not estimated at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.duck import file_list
from pipelines.ingest.dumps import Dump
from pipelines.ingest.formats import detect_format, reader
from pipelines.ingest.formats.guide import NAME as GUIDE
from pipelines.ingest.formats.stream import inner_name, open_member
from pipelines.quality.status import parquet_rows
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.tables import DataLayout, parquet_files


@dataclass
class PendingDump:
    file: str
    dump_id: str
    size: int
    lines: int  # counted: lines of a plain guide NDJSON file, records a reader finds in any other dump
    lines_per_scope: dict[str, int]  # estimate: rows whose thread_id/assistant_id/role parse
    format: str | None = None  # None: not detected, and nothing estimated
    unit: str = "lines"  # "records" for a dump estimated through its reader


def dump_format(dump: Dump, forced: str | None) -> tuple[str | None, str | None]:
    """``(format, None)``, or ``(None, why)`` when the dump's format cannot be detected or read."""
    if forced:
        return forced, None
    try:
        return detect_format(dump.path, dump.member), None
    except Exception as exc:  # UnknownFormat, or a damaged archive
        return None, str(exc)


def scanned_as_json(dump: Dump, fmt: str) -> bool:
    """Whether DuckDB reads the dump as it is (a plain guide NDJSON file), not through its reader."""
    return fmt == GUIDE and dump.plain


_RECORD_SCHEMA = {
    "file": pl.String,
    "thread_id": pl.String,
    "assistant_id": pl.String,
    "role": pl.String,
    "created_at": pl.Float64,
    "n": pl.Int64,
}


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def read_records(dump: Dump, fmt: str, index: int) -> tuple[pl.DataFrame, int]:
    """The fields the scan reads, of every record of a dump, through its reader; and the record count.
    ``n`` keeps the ingest's order: dumps in ``index`` order, records by their order key."""
    rows: list[tuple[Any, ...]] = []
    count = 0
    with open_member(dump.path, dump.member) as stream:
        for count, rec in enumerate(reader(fmt).read(stream, inner_name(dump.path, dump.member)), start=1):
            if rec.get("quarantine") or rec.get("branch") == "abandoned":
                continue
            order = int(rec.get("order", count))
            rows.append(
                (
                    dump.label,
                    _text(rec.get("thread_id")),
                    _text(rec.get("assistant_id")),
                    _text(rec.get("role")),
                    _epoch(rec.get("created_at")) or 0.0,
                    # As pairing orders ties: among newest-first records the later dump is the older.
                    (-index if order < 0 else index) * 10**12 + order,
                )
            )
    return pl.DataFrame(rows, schema=_RECORD_SCHEMA, orient="row"), count


def count_lines(path: Path, chunk: int = 16 << 20) -> int:
    """Lines as the ingest numbers them (a last line without a newline counts)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while data := f.read(chunk):
            lines += data.count(b"\n")
            last = data[-1:]
    return lines + (0 if last == b"\n" else 1)


# Rows per (file, scope), and exchanges per scope: a user message followed by an assistant message in its
# thread's order (created_at, then ingest order ``n``), which is a pattern under either pairing (merge
# joins the runs of one role into a turn, strict pairs exactly these neighbours). System messages take no
# part; blank texts (not read here) and threads continued from staged messages make it an estimate.
_SHAPE_SQL = """
WITH rows AS (
  SELECT file, {tenant} AS tenant_id, {project} AS project_id, thread_id, role, created_at, n FROM {source}
),
turns AS (
  SELECT tenant_id, project_id, role,
         lag(role) OVER (PARTITION BY tenant_id, project_id, thread_id ORDER BY created_at, n) AS prev
  FROM rows WHERE role IN ('user', 'assistant')
)
SELECT file, tenant_id, project_id, count(*)::BIGINT, 0::BIGINT FROM rows GROUP BY ALL
UNION ALL
SELECT NULL, tenant_id, project_id, 0, count(*) FILTER (role = 'assistant' AND prev = 'user')
FROM turns GROUP BY ALL
"""


@dataclass
class Shape:
    rows: dict[tuple[str, str, str], int]  # (file, tenant, project) -> rows
    exchanges: dict[tuple[str, str], int]  # (tenant, project) -> user -> assistant exchanges


def json_source(paths: list[Path]) -> str:
    """The dumps in ingest order; rows whose fields do not parse are skipped (the ingest quarantines
    them). row_number() follows the files' order because the connection preserves insertion order.
    ``created_at`` is unix seconds or an ISO-8601 time (a zone-less one is UTC), as the ingest takes it."""
    files = file_list(paths)
    return (
        "(SELECT filename AS file, thread_id, assistant_id, role, "
        "coalesce(TRY_CAST(created_at AS DOUBLE), "
        "epoch(TRY_CAST(created_at AS TIMESTAMPTZ))) AS created_at, "
        f"row_number() OVER () AS n FROM read_json({files}, "
        "format='newline_delimited', ignore_errors=true, filename=true, columns={'thread_id': 'VARCHAR', "
        "'assistant_id': 'VARCHAR', 'role': 'VARCHAR', 'created_at': 'VARCHAR'}))"
    )


# A message without an assistant takes the next assistant of its thread, else the previous one.
_RESOLVED = """(SELECT file, thread_id, role, created_at, n,
    CASE WHEN assistant_id IS NULL AND role <> 'assistant' THEN coalesce(
        first_value(assistant_id IGNORE NULLS) OVER (PARTITION BY thread_id ORDER BY created_at, n
            ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING),
        last_value(assistant_id IGNORE NULLS) OVER (PARTITION BY thread_id ORDER BY created_at, n
            ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
    ELSE assistant_id END AS assistant_id
    FROM {source})"""


def scan_shape(con: Any, source: str, mapping: ScopeMapping) -> Shape:
    """Rows and exchanges of rows with a thread and an assistant; rows the ingest would quarantine for a
    missing field or an unmapped thread reach no scope."""
    tenant, project = mapping.sql_columns()
    source = _RESOLVED.format(source=source)
    if mapping.scope_by is ScopeBy.TENANT:
        source = (
            f"(SELECT s.*, m.tenant_id AS map_tenant FROM {source} s JOIN tenant_map m USING (thread_id))"
        )
    where = f"(SELECT * FROM {source} WHERE thread_id IS NOT NULL AND assistant_id IS NOT NULL)"
    sql = _SHAPE_SQL.format(tenant=tenant, project=project, source=where)
    shape = Shape({}, {})
    for file, t, p, n, exchanges in con.execute(sql).fetchall():
        if not (t and p):
            continue
        if file is None:
            shape.exchanges[(t, p)] = int(exchanges)
        else:
            shape.rows[(file, t, p)] = int(n)
    return shape


def staged_shape(con: Any, layout: DataLayout, scope: str, dumps: list[str]) -> tuple[int, int]:
    """(rows, exchanges) of staged rows the scope's messages have not taken in yet."""
    files = [f for d in dumps for f in parquet_files(layout.raw(d) / f"scope={scope}")]
    if not files:
        return 0, 0
    source = (
        "(SELECT NULL AS file, thread_id, assistant_id, role, created_epoch AS created_at, "
        f"dump_seq * 10_000_000_000 + line_no AS n FROM read_parquet({file_list(files)}))"
    )
    # Staged rows already belong to this scope: any one-scope mapping counts them alike.
    shape = scan_shape(con, source, ScopeMapping(scope_by=ScopeBy.SINGLE))
    return parquet_rows(files), sum(shape.exchanges.values())
