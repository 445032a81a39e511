"""Staged rows of one scope -> the scope's messages, one message per ``message_id``.

Exports overlap (a re-exported thread, a dump delivered twice), so the same message arrives more than
once. An exact repeat collapses into the message already staged and is counted; the same id with
different content is quarantined with a reason that points at the copy that was kept. The first copy
in ingest order wins, so earlier dumps never change after the fact.

Repeats and conflicts are found on the narrow ``message_id`` column first. A dump whose ids are unique
and new to the scope (the usual case) needs no comparison at all: its staged file, already in message
column order and line order, becomes the messages file through a hard link, so a large dump is never
rewritten. Otherwise only the rows whose id occurs twice are compared in DuckDB, and the messages file
is the staged rows minus the repeats and conflicts, streamed in line order.

Invariant per scope and dump: staged rows = messages + repeats + conflicts (quarantined).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.duck import copy_parquet, file_list, thread_connection
from pipelines.ingest.catalog import read_manifest, scope_dump_rows
from pipelines.tables import (
    INTERMEDIATE_COMPRESSION,
    MESSAGE_COLUMNS,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    DataLayout,
    parquet_files,
    write_parquet,
)

_MESSAGE_COLUMN_LIST = list(MESSAGE_COLUMNS)
_MESSAGE_COLUMN_SQL = ", ".join(MESSAGE_COLUMNS)
# The conflicts file has the quarantine's columns and types: raw_text is plain text there too (the Parquet
# JSON type would make a read over both kinds of quarantine file cast malformed ingest lines to JSON). A
# dump without conflicts gets an empty file that Polars and DuckDB read exactly like one written by the
# query below.
_CONFLICT_SCHEMA = QUARANTINE_SCHEMA
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
    return {p.stem.removeprefix("dump=") for p in parquet_files(layout.message_stats(scope))}


def pending_message_dumps(layout: DataLayout, scope: str) -> list[str]:
    done = staged_dumps(layout, scope)
    return [d for d in scope_dump_rows(layout, scope) if d not in done]


def stage_messages(layout: DataLayout, scope: str) -> list[MessageStats]:
    """Stage every dump of ``scope`` not staged yet, in ingest order."""
    raw = scope_dump_rows(layout, scope)
    done = staged_dumps(layout, scope)
    todo = [d for d in raw if d not in done]
    if not todo:
        return []
    manifest_files: dict[str, str] = dict(read_manifest(layout).select("dump_id", "file").iter_rows())
    con = thread_connection()
    return [_stage_one(con, layout, scope, d, raw[d], manifest_files.get(d, "")) for d in todo]


def _adoptable(files: list[Path]) -> bool:
    """A single staged file written with exactly the messages schema can be the messages file as is."""
    if len(files) != 1:
        return False
    return pq.read_schema(files[0]).remove_metadata().equals(RAW_SCHEMA.remove_metadata())


def _link_or_copy(source: Path, target: Path) -> None:
    """Give ``target`` the content of the immutable ``source`` atomically, sharing its blocks if possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        # Another file system, or one without hard links: a plain copy is still cheaper than a rewrite.
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _stage_one(
    con: duckdb.DuckDBPyConnection, layout: DataLayout, scope: str, dump_id: str, files: list[Path], file: str
) -> MessageStats:
    target = layout.messages(scope) / f"dump={dump_id}.parquet"
    qfile = layout.quarantine() / f"scope={scope}-dump={dump_id}-conflicts.parquet"
    ids = pl.scan_parquet(files).select("message_id", "line_no").collect()
    # A message file of this very dump can only be left over from an attempt that crashed before its
    # stats were written: it is redone, never compared with itself.
    earlier_files = [p for p in parquet_files(layout.messages(scope)) if p != target]
    repeated = ids.filter(pl.col("message_id").is_duplicated()).select("message_id").unique()
    seen_before = (
        pl.scan_parquet(earlier_files)
        .select("message_id")
        .join(ids.lazy().select("message_id"), on="message_id", how="semi")
        .unique()
        .collect()
        if earlier_files
        else pl.DataFrame(schema={"message_id": pl.String})
    )
    involved = pl.concat([repeated, seen_before]).unique()
    if involved.is_empty():
        if _adoptable(files):
            _link_or_copy(files[0], target)
        else:
            write_parquet(
                pl.scan_parquet(files).select(_MESSAGE_COLUMN_LIST).sort("line_no"),
                target,
                compression=INTERMEDIATE_COMPRESSION,
            )
        counts = {"new": ids.height}
        _write_no_conflicts(qfile)
    else:
        counts = _judge(con, layout, scope, files, earlier_files, involved, target, qfile, file, ids.height)
    stats = MessageStats(
        dump_id=dump_id,
        rows_in=ids.height,
        messages=counts.get("new", 0),
        repeats=counts.get("repeat", 0),
        conflicts=counts.get("conflict", 0),
    )
    # Written last: its presence marks the dump as staged for this scope.
    write_parquet(
        pl.DataFrame([stats.__dict__]).with_columns(pl.lit(scope).alias("scope")),
        layout.message_stats(scope) / f"dump={dump_id}.parquet",
    )
    return stats


def _judge(
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    scope: str,
    files: list[Path],
    earlier_files: list[Path],
    involved: pl.DataFrame,
    target: Path,
    qfile: Path,
    file: str,
    rows_in: int,
) -> dict[str, int]:
    """Compare the rows whose id occurs more than once; returns the count per verdict."""
    con.register("involved_ids", involved)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE incoming AS SELECT *, row_number() OVER "
        f"(PARTITION BY message_id ORDER BY line_no) AS rn FROM read_parquet({file_list(files)}) "
        f"SEMI JOIN involved_ids USING (message_id)"
    )
    if earlier_files:
        con.execute(
            "CREATE OR REPLACE TEMP TABLE earlier AS SELECT m.* "
            f"FROM read_parquet({file_list(earlier_files)}) m SEMI JOIN involved_ids USING (message_id)"
        )
    else:
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE earlier AS SELECT {_MESSAGE_COLUMN_SQL} FROM incoming LIMIT 0"
        )
    con.unregister("involved_ids")
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
            SELECT i.message_id, i.thread_id, i.assistant_id, i.role, i.text, i.created_at, i.dump_id,
                   i.line_no
            FROM incoming i WHERE i.rn = 1 AND i.message_id NOT IN (SELECT message_id FROM earlier)
        ) b ON a.message_id = b.message_id AND NOT (a.dump_id = b.dump_id AND a.line_no = b.line_no)
        """
    )
    dropped = con.sql("SELECT line_no FROM judged WHERE verdict <> 'new'").pl()["line_no"]
    # Line numbers are unique within a dump, and a filter keeps the staged (line) order while streaming.
    write_parquet(
        pl.scan_parquet(files)
        .select(_MESSAGE_COLUMN_LIST)
        .filter(~pl.col("line_no").is_in(dropped.implode())),
        target,
        compression=INTERMEDIATE_COMPRESSION,
    )
    _write_conflicts(con, "SELECT * FROM judged WHERE verdict = 'conflict'", qfile, file, scope)
    counts = dict(con.execute("SELECT verdict, count(*) FROM judged GROUP BY 1").fetchall())
    counts["new"] = counts.get("new", 0) + rows_in - sum(counts.values())
    for table in ("incoming", "earlier", "judged"):
        con.execute(f"DROP TABLE IF EXISTS {table}")
    return counts


def _write_no_conflicts(qfile: Path) -> None:
    """The empty conflicts file of a dump, atomically; no Arrow schema metadata, like DuckDB's files."""
    qfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = qfile.with_name(f".{qfile.name}.tmp")
    # Not Schema.empty_table(): it imports pandas (~1 s) to build the table.
    pq.write_table(pa.Table.from_batches([], schema=_CONFLICT_SCHEMA), tmp, store_schema=False)
    os.replace(tmp, qfile)


def _write_conflicts(con: duckdb.DuckDBPyConnection, source: str, qfile: Path, file: str, scope: str) -> None:
    """The quarantine file of a dump's conflicts (written even when empty, so every staged dump has one)."""
    copy_parquet(
        con,
        f"""
        SELECT dump_id, ? AS file, line_no,
               to_json({{thread_id: thread_id, assistant_id: assistant_id, message_id: message_id, role: role,
                        text: text, created_at: created_epoch}})::VARCHAR AS raw_text,
               'message_id ' || message_id || ' already staged with different content (kept: dump '
                   || kept_dump || ' line ' || kept_line || ')' AS reason,
               'messages' AS stage, ? AS scope, thread_id, message_id
        FROM ({source}) ORDER BY line_no
        """,
        qfile,
        [file, scope],
    )


def scan_messages(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    files = parquet_files(layout.messages(scope))
    return pl.scan_parquet(files) if files else None
