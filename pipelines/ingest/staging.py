"""Raw thread exports -> typed rows per scope, or quarantined lines with their reason.

Threads form a pipeline per dump: one reads and splits the next chunks (:mod:`pipelines.ingest.dumps`),
one single-threaded DuckDB connection per core classifies a chunk each, side by side
(:mod:`pipelines.ingest.classify`), and a writer (:mod:`pipelines.ingest.writer`) appends finished
chunks in order to one Parquet file per scope (``staged/raw/dump=<id>/scope=<key>/part-0.parquet``,
columns in the order of the messages table, so the message stage can adopt the file as it is when the
dump repeats nothing). A dump that reconciles is then recorded in the manifest
(:mod:`pipelines.ingest.catalog`).

Each dump is read in its shape (:mod:`pipelines.ingest.formats`, detected from its content unless one is
forced): the guide's NDJSON in bulk as above, other shapes through their reader in batches of records
(:mod:`pipelines.ingest.records`) classified by the same query. Rows without an assistant wait until the
whole dump is classified and then get the assistant of their exchange (:mod:`pipelines.ingest.assistants`),
written to a second file per scope (``part-1.parquet``).

Invariant per dump: lines (records) = staged rows + quarantined rows; a dump that does not reconcile
raises before it reaches the manifest. Several ingest runs may share a data directory: each dump is staged
by the one run that claims it (:mod:`pipelines.ingest.claims`). Rows without an assistant are resolved
against the dumps complete when their dump is staged, so with concurrent runs a dump that needs an earlier
dump's rows for that may find it still in progress (the guide's NDJSON carries the assistant on every line
and never needs it).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import duckdb
import polars as pl
import pyarrow as pa

from pipelines.duck import connect
from pipelines.ingest.array_chunks import NotSplittable, array_batches, splittable
from pipelines.ingest.assistants import resolve_pending
from pipelines.ingest.catalog import pending_dumps, read_manifest, record_dump
from pipelines.ingest.claims import catalog_lock, claim, dump_seqs
from pipelines.ingest.classify import classifier, classify_chunk, classify_sql
from pipelines.ingest.dumps import DEFAULT_CHUNK_BYTES, Dump, prefetched, split_chunks
from pipelines.ingest.formats import detect_format, reader
from pipelines.ingest.formats.guide import NAME as GUIDE
from pipelines.ingest.formats.stream import inner_name, open_member
from pipelines.ingest.records import HashingReader, record_batches
from pipelines.ingest.upgrade import upgrade_layout
from pipelines.ingest.writer import DumpResult, DumpWriter
from pipelines.progress import open_bar
from pipelines.scopes import ScopeMapping, load_tenant_map
from pipelines.tables import (
    RECORDS_SCHEMA,
    DataLayout,
    write_parquet,
)

# Dumps are not split below this size to spread them over the cores.
_MIN_SPLIT_BYTES = 2 * 1024 * 1024


def ingest_dump(
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fmt: str | None = None,
    in_chunks: bool = True,
) -> tuple[DumpResult, str]:
    """Stage one dump: typed rows to ``staged/raw/dump=<id>/scope=<key>/`` and bad lines to
    ``staged/quarantine/``. Partial output of an earlier crashed attempt is removed first. ``fmt``
    forces the input shape; by default it is detected from the content. ``in_chunks``: a large array
    may be read on worker processes (:mod:`pipelines.ingest.array_chunks`)."""
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
    writer = DumpWriter(raw_dir, qdir / f"dump={dump_id}-c00000.parquet", dump, result)
    # Bytes of a plain NDJSON file (its size is the total); records of anything read through a reader.
    plain = dump.size if fmt == GUIDE and dump.plain else None
    writer.bar = open_bar(f"ingest {dump.label}", plain, "B" if fmt == GUIDE else "record")
    layout.records(dump_id).unlink(missing_ok=True)
    if fmt == GUIDE:
        sha = _stage_lines(con, dump, seq, mapping, chunk_bytes, writer)
    else:
        try:
            sha = _stage_records(con, layout, dump, seq, mapping, fmt, writer, in_chunks)
        except NotSplittable:
            if writer.bar is not None:
                writer.bar.close()
            # Read again from the start, by the reader alone: it quarantines what does not parse.
            return ingest_dump(con, layout, dump, seq, mapping, chunk_bytes, fmt, in_chunks=False)
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
    writer: DumpWriter,
    in_chunks: bool,
) -> str:
    """A dump of any shape but the guide's, through its reader, in batches of records."""
    sql = classify_sql(mapping, dump.dump_id, seq, records=True)
    cursor = classifier(con, mapping)
    metadata: list[pl.DataFrame] = []

    def stage(lines: pl.DataFrame | pa.Table) -> None:
        writer.write(b"", classify_chunk(cursor, lines, sql), len(lines))

    # The reader runs in Python (holding the GIL); DuckDB classifies and Parquet is written without it,
    # so one batch is staged on a second thread while the reader makes the next.
    pending: Future | None = None
    try:
        with (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-records") as pool,
            _batches(dump, fmt, in_chunks and dump.plain) as (batches, sha),
        ):
            for lines, meta in batches:
                if pending is not None:
                    pending.result()
                pending = pool.submit(stage, lines)
                metadata.append(meta)
            if pending is not None:
                pending.result()
    finally:
        writer.close()
        cursor.close()
    if metadata:
        table = pl.concat(metadata).with_columns(dump_id=pl.lit(dump.dump_id)).select(list(RECORDS_SCHEMA))
        write_parquet(table, layout.records(dump.dump_id))
    return sha.hexdigest()


# A batch's lines to classify and its rows of the record table.
type RecordBatch = tuple[pl.DataFrame | pa.Table, pl.DataFrame]


class Digest(Protocol):
    def hexdigest(self) -> str: ...


@contextmanager
def _batches(dump: Dump, fmt: str, in_chunks: bool) -> Iterator[tuple[Iterator[RecordBatch], Digest]]:
    """The dump's batches of records and the hash of its bytes, complete once they are read. The
    batches are closed however the block ends (Ctrl-C included): worker processes stop with them."""
    if in_chunks:
        with dump.path.open("rb") as f:
            head = f.read(4096)
        if splittable(fmt, head, dump.size):
            sha = hashlib.sha256()
            with closing(array_batches(dump.path, fmt, sha)) as batches:
                yield batches, sha
            return
    with open_member(dump.path, dump.member) as raw, HashingReader(raw) as stream:
        name = inner_name(dump.path, dump.member)
        with closing(record_batches(reader(fmt).read(stream, name))) as batches:  # type: ignore[arg-type]
            yield batches, stream


def _stage_lines(
    con: duckdb.DuckDBPyConnection,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    chunk_bytes: int,
    writer: DumpWriter,
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
            for number, (data, lines) in enumerate(chunks):
                cursor = classifiers[number % len(classifiers)]
                classified.append((data, lines.height, classify.submit(classify_chunk, cursor, lines, sql)))
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
    only: Collection[str] | None = None,
) -> list[DumpResult]:
    """Stage every dump under ``source`` that is not in the manifest yet (with ``only``, those of these
    dump ids), in name order, skipping files modified in the last ``settle_seconds`` and dumps another
    run holds the claim of (:mod:`pipelines.ingest.claims`)."""
    manifest = read_manifest(layout)
    mappings = set(manifest["mapping"].unique().to_list())
    if mappings and mappings != {mapping.describe()}:
        raise ValueError(
            f"{layout.root}: earlier dumps were staged with {sorted(mappings)} but this run uses "
            f"{mapping.describe()}; use a fresh data directory to change the scope mapping"
        )
    pending = pending_dumps(layout, source, settle_seconds)
    todo = [d for d in pending if only is None or d.dump_id in only]
    if not todo:
        return []
    with catalog_lock(layout):
        upgrade_layout(layout)
        # Every pending dump gets its seq now, in name order, whichever run stages it later.
        seqs = dump_seqs(layout, [d.dump_id for d in pending], int(manifest["seq"].max() or 0))
    # Output order is line order (the staged files are adopted as messages), so insertion order stays.
    con = connect(preserve_order=True)
    if mapping.tenant_map is not None:
        # Also validates the map before any dump is touched.
        load_tenant_map(con, Path(mapping.tenant_map))
    results: list[DumpResult] = []
    for dump in todo:
        with claim(layout, dump.dump_id) as mine:
            # Held by a run staging it now, or staged by one since this run listed the landing folder.
            if not mine or dump.dump_id in set(read_manifest(layout)["dump_id"].to_list()):
                if log:
                    log(f"{dump.label}: taken by another ingest run")
                continue
            results.append(
                _stage_and_record(con, layout, dump, seqs[dump.dump_id], mapping, chunk_bytes, fmt, log)
            )
    con.close()
    return results


def _stage_and_record(
    con: duckdb.DuckDBPyConnection,
    layout: DataLayout,
    dump: Dump,
    seq: int,
    mapping: ScopeMapping,
    chunk_bytes: int,
    fmt: str | None,
    log: Callable[[str], None] | None,
) -> DumpResult:
    result, sha = ingest_dump(con, layout, dump, seq, mapping, chunk_bytes, fmt)
    if log:
        log(
            f"{dump.label}: {result.lines} {'lines' if result.format == GUIDE else 'records'} "
            f"({result.format}) "
            f"-> {result.staged} staged, "
            f"{result.quarantined} quarantined in {result.seconds:.1f}s"
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
    record_dump(layout, entry, result.scope_names)
    return result
