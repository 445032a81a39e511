"""Dumps a run would ingest, and staged rows it would take in, measured without staging them: lines
counted, and rows and user -> assistant exchanges per scope from a DuckDB scan of a few fields. Read-only;
every figure here except the line count is an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.duck import file_list
from pipelines.quality.status import parquet_rows
from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.tables import DataLayout, parquet_files


@dataclass
class PendingDump:
    file: str
    dump_id: str
    size: int
    lines: int  # counted
    lines_per_scope: dict[str, int]  # estimate: rows whose thread_id/assistant_id/role parse


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
    them). row_number() follows the files' order because the connection preserves insertion order."""
    files = file_list(paths)
    return (
        f"(SELECT filename AS file, *, row_number() OVER () AS n FROM read_json({files}, "
        "format='newline_delimited', ignore_errors=true, filename=true, columns={'thread_id': 'VARCHAR', "
        "'assistant_id': 'VARCHAR', 'role': 'VARCHAR', 'created_at': 'BIGINT'}))"
    )


def scan_shape(con: Any, source: str, mapping: ScopeMapping) -> Shape:
    """Rows and exchanges of rows with a thread and an assistant; rows the ingest would quarantine for a
    missing field or an unmapped thread reach no scope."""
    tenant, project = mapping.sql_columns()
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
