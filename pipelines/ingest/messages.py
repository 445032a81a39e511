"""Staged rows of one scope -> the scope's messages, one message per ``message_id``.

Exports overlap (a re-exported thread, a dump delivered twice), so the same message arrives more than
once. An exact repeat collapses into the message already staged and is counted; the same id with
different content is a conflict, settled by the policy in force:

- ``first`` (default): the first copy in ingest order wins and later ones are quarantined with a reason
  that points at the copy kept, so earlier dumps never change after the fact;
- ``latest``: a corrected re-export wins: the latest copy in ingest order becomes the message, and the
  copy it replaces is quarantined as superseded (removed from its dump's messages file, recorded in
  ``scope=<key>-dump=<id>-superseded.parquet`` of the dump that superseded it).

A copy that differs only in ``branch`` is neither a repeat nor a conflict but a branch move: the
conversation tree changed between exports (an answer regenerated, a question edited, or the user went
back to an older version), and the later export in ingest order saw it as the user last left it. So the
latest copy's branch wins whatever the policy, in both directions (``current`` -> ``abandoned`` and back):
a message is content, and the policy only settles content; where it sits in the tree is a fact of the
export, and only the latest export knows the tree as it is now. The earlier copy is superseded exactly as
under ``latest`` (quarantined as ``moved to the <branch> branch by a later copy``), so its thread is
paired again and an answer moved off the current branch is never paired. When the content differs too,
the policy picks the winning content, and the latest copy with that content gives the branch.

Repeats and conflicts are found on the narrow ``message_id`` column first. A dump whose ids are unique
and new to the scope (the usual case) needs no comparison at all: its staged file, already in message
column order and line order, becomes the messages file through a hard link, so a large dump is never
rewritten. Otherwise only the rows whose id occurs twice are compared in DuckDB, and the messages file
is the staged rows minus the repeats and conflicts, streamed in line order.

Invariants: per scope and dump, staged rows = messages + repeats + conflicts (quarantined); per scope,
the messages are the dumps' messages minus those superseded, and every superseded message is a
quarantined row, so lines in = messages + quarantined + repeats holds under both policies.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

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
type ConflictPolicy = Literal["first", "latest"]
CONFLICT_POLICIES: tuple[str, ...] = get_args(ConflictPolicy.__value__)


def _same_content(a: str, b: str, branch: bool = False) -> str:
    """SQL: the two copies say the same (and, with ``branch``, sit on the same branch too)."""
    return " AND ".join(
        f"{a}.{c} IS NOT DISTINCT FROM {b}.{c}"
        for c in ("thread_id", "assistant_id", "role", "text", "created_at") + (("branch",) if branch else ())
    )


@dataclass
class MessageStats:
    dump_id: str
    rows_in: int
    messages: int
    repeats: int
    conflicts: int
    # Messages of earlier dumps this dump's copies replaced (policy ``latest``); they are quarantined.
    superseded: int = 0


def staged_dumps(layout: DataLayout, scope: str) -> set[str]:
    """Dumps whose rows this scope has already turned into messages."""
    return {p.stem.removeprefix("dump=") for p in parquet_files(layout.message_stats(scope))}


def pending_message_dumps(layout: DataLayout, scope: str) -> list[str]:
    done = staged_dumps(layout, scope)
    return [d for d in scope_dump_rows(layout, scope) if d not in done]


def superseded_file(layout: DataLayout, scope: str, dump_id: str) -> Path:
    """The quarantined messages of earlier dumps that ``dump_id``'s copies replaced (may not exist)."""
    return layout.quarantine() / f"scope={scope}-dump={dump_id}-superseded.parquet"


def superseded_threads(layout: DataLayout, scope: str, dump_ids: list[str]) -> pl.Series:
    """Threads that lost a message to a later copy in one of ``dump_ids``: their pairing is stale even
    when the copy that replaced it names another thread."""
    files = [f for d in dump_ids if (f := superseded_file(layout, scope, d)).is_file()]
    if not files:
        return pl.Series("thread_id", [], dtype=pl.String)
    return pl.read_parquet(files, columns=["thread_id"])["thread_id"].unique()


def stage_messages(layout: DataLayout, scope: str, conflicts: ConflictPolicy = "first") -> list[MessageStats]:
    """Stage every dump of ``scope`` not staged yet, in ingest order, settling conflicting copies by
    the ``conflicts`` policy (see the module docstring)."""
    if conflicts not in CONFLICT_POLICIES:
        raise ValueError(f"conflicts must be one of {', '.join(CONFLICT_POLICIES)}, not {conflicts!r}")
    raw = scope_dump_rows(layout, scope)
    done = staged_dumps(layout, scope)
    # A run that stopped after a dump's stats but before its superseded copies left their files.
    _remove_superseded(layout, scope, [d for d in raw if d in done])
    todo = [d for d in raw if d not in done]
    if not todo:
        return []
    manifest_files: dict[str, str] = dict(read_manifest(layout).select("dump_id", "file").iter_rows())
    con = thread_connection()
    out = []
    for dump_id in todo:
        out.append(_stage_one(con, layout, scope, dump_id, raw[dump_id], manifest_files, conflicts))
        # After the stats: a crash before this completes is finished by the next run's first call.
        _remove_superseded(layout, scope, [dump_id])
    return out


def _remove_superseded(layout: DataLayout, scope: str, dump_ids: list[str]) -> None:
    """Take superseded messages out of their dumps' messages files; a file already without them is left
    alone, so this is idempotent (and costs one small read when nothing was superseded)."""
    files = [f for d in dump_ids if (f := superseded_file(layout, scope, d)).is_file()]
    if not files:
        return
    gone = pl.read_parquet(files, columns=["dump_id", "line_no"])
    for (dump_id,), rows in gone.group_by("dump_id"):
        path = layout.messages(scope) / f"dump={dump_id}.parquet"
        if not path.is_file():
            continue
        lines = rows["line_no"].implode()
        left = pl.scan_parquet(path).filter(pl.col("line_no").is_in(lines)).select(pl.len()).collect().item()
        if left:
            # A new file replaces the old one (which may be a hard link to the staged rows: those stay).
            write_parquet(
                pl.scan_parquet(path).filter(~pl.col("line_no").is_in(lines)),
                path,
                compression=INTERMEDIATE_COMPRESSION,
            )


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
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    scope: str,
    dump_id: str,
    files: list[Path],
    manifest_files: dict[str, str],
    policy: ConflictPolicy,
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
        superseded_file(layout, scope, dump_id).unlink(missing_ok=True)
    else:
        judge = _Judge(con, layout, scope, dump_id, manifest_files, policy)
        counts = judge(files, earlier_files, involved, target, qfile, ids.height)
    stats = MessageStats(
        dump_id=dump_id,
        rows_in=ids.height,
        messages=counts.get("new", 0),
        repeats=counts.get("repeat", 0),
        conflicts=counts.get("conflict", 0),
        superseded=counts.get("superseded", 0),
    )
    # Written last: its presence marks the dump as staged for this scope.
    write_parquet(
        pl.DataFrame([stats.__dict__]).with_columns(pl.lit(scope).alias("scope")),
        layout.message_stats(scope) / f"dump={dump_id}.parquet",
    )
    return stats


_REASONS: dict[str, str] = {
    "first": "already staged with different content",
    "latest": "superseded by a later copy with different content",
}


@dataclass
class _Judge:
    """Settles the rows of one dump whose id occurs more than once (in the dump or in the scope)."""

    con: duckdb.DuckDBPyConnection
    layout: DataLayout
    scope: str
    dump_id: str
    manifest_files: dict[str, str]
    policy: ConflictPolicy

    def __call__(
        self,
        files: list[Path],
        earlier_files: list[Path],
        involved: pl.DataFrame,
        target: Path,
        qfile: Path,
        rows_in: int,
    ) -> dict[str, int]:
        """Write the dump's messages and quarantine files; returns the count per verdict."""
        con = self.con
        self._candidates(files, earlier_files, involved)
        # Staging order: every message staged before comes ahead of this dump's rows, whatever its seq,
        # so under ``first`` an earlier dump's message is never replaced.
        order = "incoming, dump_seq, line_no"
        c_order = "c.incoming, c.dump_seq, c.line_no"
        latest = "incoming DESC, dump_seq DESC, line_no DESC"
        c_latest = "c.incoming DESC, c.dump_seq DESC, c.line_no DESC"
        # The winning content is the first copy's or the latest's, on the branch of the latest copy that
        # has it (a branch move, see the module docstring); the copy kept is the first one that has both,
        # so an earlier message that already says the same stays where it is. A copy of this dump that
        # only sits on another branch is a repeat: a later line of the same dump has the final say.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE judged AS
            WITH winners AS (
                SELECT * FROM candidates QUALIFY row_number() OVER
                    (PARTITION BY message_id ORDER BY {latest if self.policy == "latest" else order}) = 1
            ), branches AS (
                SELECT c.message_id, c.branch FROM candidates c JOIN winners w
                    ON c.message_id = w.message_id AND {_same_content("c", "w")}
                QUALIFY row_number() OVER (PARTITION BY c.message_id ORDER BY {c_latest}) = 1
            ), keepers AS (
                SELECT c.* FROM candidates c JOIN winners w
                    ON c.message_id = w.message_id AND {_same_content("c", "w")}
                JOIN branches b ON c.message_id = b.message_id AND c.branch IS NOT DISTINCT FROM b.branch
                QUALIFY row_number() OVER (PARTITION BY c.message_id ORDER BY {c_order}) = 1
            )
            SELECT a.*,
                   CASE WHEN a.dump_id = k.dump_id AND a.line_no = k.line_no
                            THEN CASE WHEN a.incoming THEN 'new' ELSE 'kept' END
                        WHEN {_same_content("a", "k", branch=True)} THEN 'repeat'
                        WHEN a.incoming AND {_same_content("a", "k")} THEN 'repeat'
                        WHEN a.incoming THEN 'conflict'
                        ELSE 'superseded' END AS verdict,
                   {_same_content("a", "k")} AS moved, k.branch AS kept_branch,
                   k.dump_id AS kept_dump, k.line_no AS kept_line
            FROM candidates a JOIN keepers k ON a.message_id = k.message_id
            """
        )
        dropped = con.sql("SELECT line_no FROM judged WHERE incoming AND verdict <> 'new'").pl()["line_no"]
        # Line numbers are unique within a dump, and a filter keeps the staged (line) order while streaming.
        write_parquet(
            pl.scan_parquet(files)
            .select(_MESSAGE_COLUMN_LIST)
            .filter(~pl.col("line_no").is_in(dropped.implode())),
            target,
            compression=INTERMEDIATE_COMPRESSION,
        )
        con.register(
            "dump_files",
            pl.DataFrame(
                list(self.manifest_files.items()),
                schema={"dump_id": pl.String, "file": pl.String},
                orient="row",
            ),
        )
        try:
            self._quarantine("verdict = 'conflict'", qfile)
            gone = superseded_file(self.layout, self.scope, self.dump_id)
            if con.execute("SELECT count(*) FROM judged WHERE verdict = 'superseded'").fetchall()[0][0]:
                self._quarantine("verdict = 'superseded'", gone)
            else:
                gone.unlink(missing_ok=True)
        finally:
            con.unregister("dump_files")
        counts = dict(con.execute("SELECT verdict, count(*) FROM judged GROUP BY 1").fetchall())
        incoming = sum(counts.get(v, 0) for v in ("new", "repeat", "conflict"))
        counts["new"] = counts.get("new", 0) + rows_in - incoming
        for table in ("candidates", "judged"):
            con.execute(f"DROP TABLE IF EXISTS {table}")
        return counts

    def _candidates(self, files: list[Path], earlier_files: list[Path], involved: pl.DataFrame) -> None:
        """Every copy of the involved ids: this dump's rows and the scope's messages staged before."""
        con = self.con
        con.register("involved_ids", involved)
        try:
            earlier = (
                f"SELECT {_MESSAGE_COLUMN_SQL}, false AS incoming "
                f"FROM read_parquet({file_list(earlier_files)}) SEMI JOIN involved_ids USING (message_id) "
                "UNION ALL "
                if earlier_files
                else ""
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE candidates AS {earlier}"
                f"SELECT {_MESSAGE_COLUMN_SQL}, true AS incoming FROM read_parquet({file_list(files)}) "
                "SEMI JOIN involved_ids USING (message_id)"
            )
        finally:
            con.unregister("involved_ids")

    def _quarantine(self, where: str, path: Path) -> None:
        """Quarantine rows of ``judged``, each with its own dump's file and a pointer to the copy kept."""
        copy_parquet(
            self.con,
            f"""
            SELECT dump_id, coalesce(f.file, '') AS file, line_no,
                   {_RAW_TEXT} AS raw_text,
                   'message_id ' || message_id
                       || CASE WHEN moved THEN ' moved to the ' || kept_branch || ' branch by a later copy'
                               ELSE ' {_REASONS[self.policy]}' END
                       || ' (kept: dump ' || kept_dump || ' line ' || kept_line || ')' AS reason,
                   'messages' AS stage, ? AS scope, thread_id, message_id
            FROM judged LEFT JOIN dump_files f USING (dump_id) WHERE {where} ORDER BY dump_seq, line_no
            """,
            path,
            [self.scope],
        )


# The line a quarantined copy came from, rebuilt in the export's shape (as plain text, like the ingest
# quarantine's raw_text).
_RAW_TEXT = (
    "to_json({thread_id: thread_id, assistant_id: assistant_id, message_id: message_id, role: role, "
    "text: text, created_at: created_epoch})::VARCHAR"
)


def _write_no_conflicts(qfile: Path) -> None:
    """The empty conflicts file of a dump, atomically; no Arrow schema metadata, like DuckDB's files."""
    qfile.parent.mkdir(parents=True, exist_ok=True)
    tmp = qfile.with_name(f".{qfile.name}.tmp")
    # Not Schema.empty_table(): it imports pandas (~1 s) to build the table.
    pq.write_table(pa.Table.from_batches([], schema=_CONFLICT_SCHEMA), tmp, store_schema=False)
    os.replace(tmp, qfile)


def scan_messages(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    files = parquet_files(layout.messages(scope))
    return pl.scan_parquet(files) if files else None
