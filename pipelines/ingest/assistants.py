"""Giving messages without an ``assistant_id`` the assistant of their exchange, after a dump is classified.

The Assistants API leaves ``assistant_id`` null on user messages: the assistant is known only from the
run that answered. A message without one (``pending`` in the classification) gets, in this order:

1. the assistant of the next assistant message of its thread in the same dump (the one that answered
   it, so ``--scope-by assistant`` never separates a question from its answer, also when several
   assistants take turns in one thread);
2. else the thread's last assistant in the same dump (a last turn no one answered yet);
3. else the thread's last assistant in the dumps ingested before (its answer came first);
4. else it is quarantined with :data:`REASON_NO_ASSISTANT`. Its answer may arrive in a later dump, but
   the question stays quarantined: deliver the file again (a new modification time makes it a new
   dump) once the answers are ingested, and step 3 finds their assistant.

Order within a thread is ``(created_at, line_no)`` as in pairing (``line_no`` is the record's order key).

Invariant: every pending row comes back exactly once, either with an ``assistant_id`` (and its scope
columns) or with a reason.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl

from pipelines.scopes import ScopeBy, ScopeMapping
from pipelines.tables import DataLayout

REASON_NO_ASSISTANT = "no assistant: no message of this thread names one yet"


def _earlier_files(layout: DataLayout, complete: set[str], dump_id: str) -> list[str]:
    files: list[str] = []
    for dump_dir in sorted(layout.raw().glob("dump=*")):
        other = dump_dir.name.removeprefix("dump=")
        if other != dump_id and other in complete:
            files.extend(str(p) for p in sorted(dump_dir.glob("scope=*/*.parquet")))
    return files


def resolve_pending(
    con: duckdb.DuckDBPyConnection,
    pending: pl.DataFrame,
    dump_files: list[Path],
    layout: DataLayout,
    complete: set[str],
    dump_id: str,
    mapping: ScopeMapping,
) -> pl.DataFrame:
    """``pending`` with ``assistant_id`` filled in (and the scope columns where the scope follows the
    assistant), or with ``reason``/``reason_kind`` set where no assistant could be found."""
    cur = con.cursor()
    try:
        cur.register("pending_rows", pending.select("thread_id", "created_at", "line_no").to_arrow())
        # File lists are bound, not spliced into the SQL: a data folder may be named with any character.
        # DuckDB refuses a parameter the query does not use, so each list is bound only where it is read.
        params: dict[str, list[str]] = {}
        if dump_files:
            params["same"] = [str(p) for p in dump_files]
        answers = (
            "SELECT thread_id, created_at, line_no, assistant_id, false AS is_pending "
            "FROM read_parquet($same) "
            "WHERE role = 'assistant' AND thread_id IN (SELECT thread_id FROM pending_rows)"
            if dump_files
            else "SELECT NULL::VARCHAR, NULL::TIMESTAMPTZ, NULL::BIGINT, NULL::VARCHAR, false WHERE false"
        )
        earlier = _earlier_files(layout, complete, dump_id)
        if earlier:
            params["earlier"] = earlier
        before = (
            "SELECT thread_id, arg_max(assistant_id, (created_at, dump_seq, line_no)) AS before_a "
            "FROM read_parquet($earlier) "
            "WHERE role = 'assistant' AND thread_id IN (SELECT thread_id FROM pending_rows) "
            "GROUP BY thread_id"
            if earlier
            else "SELECT NULL::VARCHAR AS thread_id, NULL::VARCHAR AS before_a WHERE false"
        )
        resolved = cur.sql(
            f"""
            WITH u AS (
                SELECT thread_id, created_at, line_no, NULL::VARCHAR AS assistant_id, true AS is_pending
                FROM pending_rows
                UNION ALL {answers}
            ), w AS (
                SELECT *,
                    first_value(assistant_id IGNORE NULLS) OVER (PARTITION BY thread_id
                        ORDER BY created_at NULLS FIRST, line_no
                        ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS next_a,
                    last_value(assistant_id IGNORE NULLS) OVER (PARTITION BY thread_id
                        ORDER BY created_at NULLS FIRST, line_no
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prev_a
                FROM u
            )
            SELECT w.line_no, coalesce(next_a, prev_a, b.before_a) AS resolved
            FROM w LEFT JOIN ({before}) b USING (thread_id) WHERE is_pending
            """,
            params=params or None,
        ).pl()
    finally:
        cur.close()
    out = (
        pending.join(resolved, on="line_no", how="left")
        .with_columns(assistant_id=pl.col("resolved"))
        .drop("resolved")
    )
    found = pl.col("assistant_id").is_not_null()
    if mapping.scope_by is ScopeBy.ASSISTANT:
        out = out.with_columns(
            tenant_id=pl.when(found).then(pl.lit(mapping.tenant)),
            project_id=pl.when(found).then(pl.col("assistant_id")),
        )
    return out.with_columns(
        reason=pl.when(found).then(None).otherwise(pl.lit(REASON_NO_ASSISTANT)),
        reason_kind=pl.when(found).then(None).otherwise(pl.lit("no assistant")),
        pending=pl.lit(False),
    )
