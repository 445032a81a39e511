"""Staged rows of one scope -> the scope's messages, one message per ``message_id``.

Exports overlap (a re-exported thread, a dump delivered twice), so the same message arrives more than
once. An exact repeat collapses into the message already staged and is counted; the same id with
different content is quarantined with a reason that points at the copy that was kept. The first copy
in ingest order wins, so earlier dumps never change after the fact.

Invariant per scope and dump: staged rows = messages + repeats + conflicts (quarantined).
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from pipelines.duck import connect, copy_parquet, file_list
from pipelines.ingest import scope_dump_rows
from pipelines.layout import DataLayout, parquet_files, write_parquet

MESSAGE_COLUMNS = (
    "message_id, thread_id, assistant_id, role, text, created_at, created_epoch, text_chars, is_blank, "
    "tenant_id, project_id, dump_id, dump_seq, line_no"
)
_SAME_CONTENT = (
    "a.thread_id = b.thread_id AND a.assistant_id = b.assistant_id AND a.role = b.role "
    "AND a.text = b.text AND a.created_at = b.created_at"
)


@dataclass
class MessageStats:
    dump_id: str
    rows_in: int
    messages: int
    repeats: int
    conflicts: int


def staged_dumps(layout: DataLayout, scope: str) -> set[str]:
    """Dumps whose rows this scope has already turned into messages."""
    return {p.stem.removeprefix("dump=") for p in parquet_files(layout.table("message_stats", scope))}


def pending_message_dumps(layout: DataLayout, scope: str) -> list[str]:
    done = staged_dumps(layout, scope)
    return [d for d in scope_dump_rows(layout, scope) if d not in done]


def stage_messages(layout: DataLayout, scope: str) -> list[MessageStats]:
    """Stage every dump of ``scope`` not staged yet, in ingest order."""
    raw = scope_dump_rows(layout, scope)
    done = staged_dumps(layout, scope)
    manifest_files = {}
    if layout.manifest.exists():
        manifest_files = dict(pl.read_parquet(layout.manifest).select("dump_id", "file").iter_rows())
    out = []
    con = connect()
    for dump_id, files in raw.items():
        if dump_id in done:
            continue
        out.append(_stage_one(con, layout, scope, dump_id, files, manifest_files.get(dump_id, "")))
    con.close()
    return out


def _stage_one(
    con: duckdb.DuckDBPyConnection, layout: DataLayout, scope: str, dump_id: str, files: list, file: str
) -> MessageStats:
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT *, row_number() OVER "
        f"(PARTITION BY message_id ORDER BY line_no) AS rn FROM read_parquet({file_list(files)})"
    )
    existing = parquet_files(layout.table("messages", scope))
    if existing:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE earlier AS SELECT m.* FROM read_parquet({file_list(existing)}) m "
            f"SEMI JOIN incoming i USING (message_id)"
        )
    else:
        con.execute(f"CREATE OR REPLACE TEMP TABLE earlier AS SELECT {MESSAGE_COLUMNS} FROM incoming LIMIT 0")
    # Each incoming row is compared with the copy that wins: the earlier dump's, else the first in this dump.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE judged AS
        SELECT a.*,
               CASE WHEN b.message_id IS NULL THEN 'new'
                    WHEN {_SAME_CONTENT} THEN 'repeat'
                    ELSE 'conflict' END AS verdict,
               b.dump_id AS kept_dump, b.line_no AS kept_line
        FROM incoming a
        LEFT JOIN (
            SELECT message_id, thread_id, assistant_id, role, text, created_at, dump_id, line_no FROM earlier
            UNION ALL
            SELECT i.message_id, i.thread_id, i.assistant_id, i.role, i.text, i.created_at, i.dump_id, i.line_no
            FROM incoming i WHERE i.rn = 1 AND i.message_id NOT IN (SELECT message_id FROM earlier)
        ) b ON a.message_id = b.message_id AND NOT (a.dump_id = b.dump_id AND a.line_no = b.line_no)
        """
    )
    target = layout.table("messages", scope) / f"dump={dump_id}.parquet"
    copy_parquet(con, f"SELECT {MESSAGE_COLUMNS} FROM judged WHERE verdict = 'new' ORDER BY line_no", target)
    qfile = layout.quarantine() / f"scope={scope}-dump={dump_id}-conflicts.parquet"
    copy_parquet(
        con,
        """
        SELECT dump_id, ? AS file, line_no,
               to_json({thread_id: thread_id, assistant_id: assistant_id, message_id: message_id, role: role,
                        text: text, created_at: created_epoch}) AS raw_text,
               'message_id ' || message_id || ' already staged with different content (kept: dump '
                   || kept_dump || ' line ' || kept_line || ')' AS reason,
               'messages' AS stage, ? AS scope, thread_id, message_id
        FROM judged WHERE verdict = 'conflict' ORDER BY line_no
        """,
        qfile,
        [file, scope],
    )
    counts = dict(con.execute("SELECT verdict, count(*) FROM judged GROUP BY 1").fetchall())
    stats = MessageStats(
        dump_id=dump_id,
        rows_in=sum(counts.values()),
        messages=counts.get("new", 0),
        repeats=counts.get("repeat", 0),
        conflicts=counts.get("conflict", 0),
    )
    # Written last: its presence marks the dump as staged for this scope.
    write_parquet(
        pl.DataFrame([stats.__dict__]).with_columns(pl.lit(scope).alias("scope")),
        layout.table("message_stats", scope) / f"dump={dump_id}.parquet",
    )
    return stats


def scan_messages(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    files = parquet_files(layout.table("messages", scope))
    return pl.scan_parquet(files) if files else None
