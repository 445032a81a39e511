"""Raw thread exports -> typed rows per scope, or quarantined lines with their reason.

Threads form a pipeline per dump: one reads and splits the next chunks (:mod:`pipelines.ingest.dumps`),
one single-threaded DuckDB connection per core classifies a chunk each, side by side
(:mod:`pipelines.ingest.classify`), and a writer appends finished chunks in order to one Parquet file
per scope (``staged/raw/dump=<id>/scope=<key>/part-0.parquet``, columns in the order of the messages
table, so the message stage can adopt the file as it is when the dump repeats nothing). A dump that
reconciles is then recorded in the manifest (:mod:`pipelines.ingest.catalog`).

Each dump is read in its shape (:mod:`pipelines.ingest.formats`, detected from its content unless one is
forced): the guide's NDJSON in bulk as above, other shapes through their reader in batches of records
(:mod:`pipelines.ingest.records`) classified by the same query. Rows without an assistant wait until the
whole dump is classified and then get the assistant of their exchange (:mod:`pipelines.ingest.assistants`),
written to a second file per scope (``part-1.parquet``).

Invariant per dump: lines (records) = staged rows + quarantined rows; a dump that does not reconcile
raises before it reaches the manifest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.duck import connect
from pipelines.ingest.assistants import resolve_pending
from pipelines.ingest.catalog import pending_dumps, read_manifest, record_dump
from pipelines.ingest.classify import classifier, classify_chunk, classify_sql
from pipelines.ingest.dumps import DEFAULT_CHUNK_BYTES, Dump, prefetched, split_chunks
from pipelines.ingest.formats import detect_format, reader
from pipelines.ingest.formats.guide import NAME as GUIDE
from pipelines.ingest.formats.stream import compression, inner_name, open_member
from pipelines.ingest.records import HashingReader, record_batches
from pipelines.progress import ProgressBar, open_bar
from pipelines.scopes import ScopeMapping, load_tenant_map, scope_key
from pipelines.tables import (
    ARROW_INTERMEDIATE_COMPRESSION,
    QUARANTINE_SCHEMA,
    RAW_SCHEMA,
    RECORDS_SCHEMA,
    DataLayout,
    write_parquet,
)

# Dumps are not split below this size to spread them over the cores.
_MIN_SPLIT_BYTES = 2 * 1024 * 1024
RAW_FILE = "part-0.parquet"
# Low-cardinality columns get dictionary pages and statistics; ids and texts never repeat within a file.
_DICTIONARY_COLUMNS = ["thread_id", "assistant_id", "role", "tenant_id", "project_id", "dump_id"]
_STATISTICS_COLUMNS = ["message_id", "thread_id", "created_at", "dump_seq", "line_no"]


@dataclass
class DumpResult:
    dump_id: str
    file: str
    lines: int = 0
    staged: int = 0
    quarantined: int = 0
    scopes: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    scope_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    format: str = GUIDE


class _DumpWriter:
    """Appends classified chunks to the dump's Parquet files, in chunk order, from one thread.

    Owns every mutable piece of the dump's result, so the thread doing the writing is also the only
    one counting; the caller reads the result after :meth:`close`.
    """

    def __init__(self, raw_dir: Path, qfile: Path, dump: Dump, result: DumpResult) -> None:
        self.raw_dir = raw_dir
        self.bar: ProgressBar | None = None  # advanced by the bytes (guide NDJSON) or records written
        self.qfile = qfile
        self.file = dump.label
        self.result = result
        self.file_name = RAW_FILE
        # Rows waiting for their assistant until the whole dump is classified.
        self.pending: list[pl.DataFrame] = []
        self.keys: dict[tuple[str, str], str] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.quarantine: pq.ParquetWriter | None = None
        self._open_quarantine()
        self.sha = hashlib.sha256()

    def _open_quarantine(self) -> None:
        self.quarantine = pq.ParquetWriter(
            self.qfile, QUARANTINE_SCHEMA, compression="zstd", store_schema=False
        )

    def _scope_writer(self, scope: str) -> pq.ParquetWriter:
        writer = self.writers.get(scope)
        if writer is None:
            folder = self.raw_dir / f"scope={scope}"
            folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                folder / self.file_name,
                RAW_SCHEMA,
                compression=ARROW_INTERMEDIATE_COMPRESSION,
                use_dictionary=_DICTIONARY_COLUMNS,
                write_statistics=_STATISTICS_COLUMNS,
            )
            self.writers[scope] = writer
        return writer

    def write(self, data: bytes, table: pa.Table, count: int) -> None:
        self.sha.update(data)
        # Routed with Polars: Arrow's take and cast import pyarrow.compute, ~0.1 s per process, which is
        # a good part of a small incremental run.
        frame = pl.from_arrow(table).with_columns(pl.col("created_at").dt.convert_time_zone("UTC"))
        for tenant_id, project_id in (
            frame.drop_nulls(["tenant_id", "project_id"]).select("tenant_id", "project_id").unique().rows()
        ):
            self.keys.setdefault((tenant_id, project_id), scope_key(tenant_id, project_id))
        # Good lines always have both scope columns. A stable sort by scope keeps each scope's rows in
        # line order, so one gather and one slice per scope route the whole chunk.
        ok = pl.col("reason").is_null()
        if frame["pending"].any():
            self.pending.append(frame.filter(pl.col("pending")))
            ok = ok & ~pl.col("pending")
        self._route(frame.filter(ok))
        bad = frame.filter(pl.col("reason").is_not_null())
        if bad.height:
            self._quarantine(bad)
        self.result.lines += count
        if self.bar is not None:
            self.bar.update(len(data) or count)

    def write_late(self, rows: pl.DataFrame) -> None:
        """Rows that waited for their assistant: to a second file per scope, or to quarantine."""
        self.close()
        self.file_name = "part-1.parquet"
        self.qfile = self.qfile.with_name(self.qfile.name.replace("-c00000", "-c00001"))
        self._open_quarantine()
        for tenant_id, project_id in (
            rows.drop_nulls(["tenant_id", "project_id"]).select("tenant_id", "project_id").unique().rows()
        ):
            self.keys.setdefault((tenant_id, project_id), scope_key(tenant_id, project_id))
        self._route(rows.filter(pl.col("reason").is_null()))
        bad = rows.filter(pl.col("reason").is_not_null())
        if bad.height:
            self._quarantine(bad)

    def _route(self, good: pl.DataFrame) -> None:
        good = good.sort(["tenant_id", "project_id"], maintain_order=True)
        if good.height:
            routed = _arrow(good.select(RAW_SCHEMA.names), RAW_SCHEMA)
            start = 0
            for tenant_id, project_id, size in (
                good.group_by(["tenant_id", "project_id"], maintain_order=True).len().rows()
            ):
                scope = self.keys[(tenant_id, project_id)]
                self._scope_writer(scope).write_table(routed.slice(start, size))
                self.result.scopes[scope] = self.result.scopes.get(scope, 0) + size
                self.result.staged += size
                start += size

    def _quarantine(self, bad: pl.DataFrame) -> None:
        scopes = [self.keys.get(pair) for pair in bad.select("tenant_id", "project_id").rows()]
        rows = bad.select(
            "dump_id",
            file=pl.lit(self.file, dtype=pl.String),
            line_no="line_no",
            raw_text="raw_text",
            reason="reason",
            stage=pl.lit("ingest", dtype=pl.String),
            scope=pl.Series(scopes, dtype=pl.String),
            thread_id="thread_id",
            message_id="message_id",
        )
        assert self.quarantine is not None
        self.quarantine.write_table(_arrow(rows, QUARANTINE_SCHEMA))
        self.result.quarantined += bad.height
        for kind, n_kind in bad.group_by("reason_kind").len().rows():
            self.result.reasons[kind] = self.result.reasons.get(kind, 0) + n_kind

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}
        if self.quarantine is not None:
            self.quarantine.close()
            self.quarantine = None


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of ``schema`` (Polars' oldest Arrow types: large strings, no views)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    if not table.schema.equals(schema):
        raise TypeError(f"staged rows do not match their schema:\n{table.schema}\nexpected:\n{schema}")
    return table


def ingest_dump(
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fmt: str | None = None,
) -> tuple[DumpResult, str]:
    """Stage one dump: typed rows to ``staged/raw/dump=<id>/scope=<key>/`` and bad lines to
    ``staged/quarantine/``. Partial output of an earlier crashed attempt is removed first. ``fmt``
    forces the input shape; by default it is detected from the content."""
    started = time.perf_counter()
    dump_id = dump.dump_id
    raw_dir = layout.raw(dump_id)
    shutil.rmtree(raw_dir, ignore_errors=True)
    raw_dir.mkdir(parents=True)
    qdir = layout.quarantine()
    qdir.mkdir(parents=True, exist_ok=True)
    for stale in qdir.glob(f"dump={dump_id}-*.parquet"):
        stale.unlink()
    fmt = fmt or detect_format(dump.path, dump.member)
    result = DumpResult(dump_id=dump_id, file=dump.label, format=fmt)
    writer = _DumpWriter(raw_dir, qdir / f"dump={dump_id}-c00000.parquet", dump, result)
    # Bytes of a plain NDJSON file (its size is the total); records of anything read through a reader.
    plain = dump.size if fmt == GUIDE and dump.member is None and compression(dump.path) is None else None
    writer.bar = open_bar(f"ingest {dump.label}", plain, "B" if fmt == GUIDE else "record")
    layout.records(dump_id).unlink(missing_ok=True)
    if fmt == GUIDE:
        sha = _stage_lines(con, dump, seq, mapping, chunk_bytes, writer)
    else:
        sha = _stage_records(con, layout, dump, seq, mapping, fmt, writer)
    if writer.pending:
        files = sorted(raw_dir.glob("scope=*/*.parquet"))
        complete = set(read_manifest(layout)["dump_id"].to_list())
        late = resolve_pending(con, pl.concat(writer.pending), files, layout, complete, dump_id, mapping)
        writer.pending = []
        try:
            writer.write_late(late)
        finally:
            writer.close()
    if writer.bar is not None:
        writer.bar.close()
    if result.lines != result.staged + result.quarantined:
        raise RuntimeError(
            f"{dump.label}: {result.lines} records but {result.staged} staged "
            f"+ {result.quarantined} quarantined"
        )
    result.seconds = time.perf_counter() - started
    result.scope_names = {k: tp for tp, k in writer.keys.items()}
    return result, sha


def _stage_records(
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    fmt: str,
    writer: _DumpWriter,
) -> str:
    """A dump of any shape but the guide's, through its reader, in batches of records."""
    sql = classify_sql(mapping, dump.dump_id, seq, records=True)
    cursor = classifier(con, mapping)
    metadata: list[pl.DataFrame] = []
    try:
        with open_member(dump.path, dump.member) as raw:
            stream = HashingReader(raw)
            for lines, meta in record_batches(reader(fmt).read(stream, inner_name(dump.path, dump.member))):  # type: ignore[arg-type]
                writer.write(b"", classify_chunk(cursor, lines, sql), lines.height)
                metadata.append(meta)
    finally:
        writer.close()
        cursor.close()
    if metadata:
        table = pl.concat(metadata).with_columns(dump_id=pl.lit(dump.dump_id)).select(list(RECORDS_SCHEMA))
        write_parquet(table, layout.records(dump.dump_id))
    return stream.sha.hexdigest()


def _stage_lines(
    con: duckdb.DuckDBPyConnection,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    chunk_bytes: int,
    writer: _DumpWriter,
) -> str:
    """The guide's NDJSON: newline-aligned chunks classified side by side, written in order."""
    sql = classify_sql(mapping, dump.dump_id, seq)
    # A pipeline on threads: one reads and splits the next chunks, single-threaded DuckDB connections
    # classify one chunk each side by side (one query spread over every core left cores idle at the end
    # of each chunk: measured ~10% slower), and a writer appends finished chunks in order.
    cores = os.cpu_count() or 1
    # A dump smaller than a chunk per core (a typical incremental delivery) is cut into one chunk per
    # core, so that every core classifies; a tiny one stays whole (a query has a fixed cost).
    chunk_bytes = min(chunk_bytes, max(_MIN_SPLIT_BYTES, -(-dump.size // cores)))
    chunks_in_dump = max(1, -(-dump.size // chunk_bytes))
    classifiers = [classifier(con, mapping) for _ in range(max(1, min(cores, chunks_in_dump)))]
    classified: deque[tuple[bytes, int, Future]] = deque()
    pending: Future | None = None
    with (
        ThreadPoolExecutor(max_workers=len(classifiers), thread_name_prefix="ingest-classify") as classify,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-writer") as write,
    ):

        def hand_over() -> None:
            """The oldest classified chunk goes to the writer after the previous one, in order."""
            nonlocal pending
            data, count, table = classified.popleft()
            table = table.result()
            if pending is not None:
                pending.result()
            pending = write.submit(writer.write, data, table, count)

        try:
            chunks = prefetched(split_chunks(dump, chunk_bytes))
            for number, (data, lines, count) in enumerate(chunks):
                cursor = classifiers[number % len(classifiers)]
                classified.append((data, count, classify.submit(classify_chunk, cursor, lines, sql)))
                del data, lines
                while len(classified) >= len(classifiers) or (classified and classified[0][2].done()):
                    hand_over()
            while classified:
                hand_over()
            if pending is not None:
                pending.result()
        finally:
            writer.close()
            for cursor in classifiers:
                cursor.close()
    return writer.sha.hexdigest()


def ingest(
    layout: DataLayout,
    source: Path,
    mapping: ScopeMapping,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    log: Callable[[str], None] | None = None,
    settle_seconds: float = 0.0,
    fmt: str | None = None,
) -> list[DumpResult]:
    """Stage every dump under ``source`` that is not in the manifest yet, in name order (skipping files
    modified in the last ``settle_seconds``)."""
    manifest = read_manifest(layout)
    mappings = set(manifest["mapping"].unique().to_list())
    if mappings and mappings != {mapping.describe()}:
        raise ValueError(
            f"{layout.root}: earlier dumps were staged with {sorted(mappings)} but this run uses "
            f"{mapping.describe()}; use a fresh data directory to change the scope mapping"
        )
    todo = pending_dumps(layout, source, settle_seconds)
    if not todo:
        return []
    # Output order is line order (the staged files are adopted as messages), so insertion order stays.
    con = connect(preserve_order=True)
    if mapping.tenant_map is not None:
        # Also validates the map before any dump is touched.
        load_tenant_map(con, Path(mapping.tenant_map))
    seq = int(manifest["seq"].max() or 0)
    results: list[DumpResult] = []
    for dump in todo:
        seq += 1
        result, sha = ingest_dump(con, layout, dump, seq, mapping, chunk_bytes, fmt)
        if log:
            log(
                f"{dump.label}: {result.lines} {'lines' if result.format == GUIDE else 'records'} "
                f"({result.format}) -> {result.staged} staged, {result.quarantined} quarantined in "
                f"{result.seconds:.1f}s"
            )
        entry = {
            "dump_id": result.dump_id,
            "seq": seq,
            "file": dump.label,
            "size": dump.size,
            "mtime_ns": dump.mtime_ns,
            "sha256": sha,
            "lines": result.lines,
            "staged": result.staged,
            "quarantined": result.quarantined,
            "scopes": sorted(result.scopes),
            "mapping": mapping.describe(),
            "ingested_at": datetime.now(UTC),
            "format": result.format,
        }
        manifest = record_dump(layout, manifest, entry, result.scope_names)
        results.append(result)
    con.close()
    return results
