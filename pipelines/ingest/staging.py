"""Raw thread exports -> typed rows per scope, or quarantined lines with their reason.

A dump is read in newline-aligned byte chunks so memory stays bounded whatever the file size;
each chunk is split into lines by Polars (keeping line numbers, blank lines included) and
classified by DuckDB, whose JSON functions judge every line on its own (Polars' JSON decoder
fails a whole column on one bad line). Nothing is pulled into Python objects line by line, except
to locate the lines of a chunk that holds invalid UTF-8.

One DuckDB query per chunk parses each line three times at most (``json_valid``, then the types and
the unescaped values of all fields in one call each) and hands back typed rows as Arrow. Threads form
a pipeline: one reads and splits the next chunks, one single-threaded DuckDB connection per core
classifies a chunk each, side by side, and a writer appends finished chunks in order to one Parquet
file per scope (``staged/raw/dump=<id>/scope=<key>/part-0.parquet``, columns in the order of the
messages table, so the message stage can adopt the file as it is when the dump repeats nothing).

Invariant per dump: lines = staged rows + quarantined rows.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from queue import Empty, Full, Queue

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.duck import connect
from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map, scope_key
from pipelines.tables import ARROW_INTERMEDIATE_COMPRESSION, DataLayout, parquet_files, write_parquet

DUMP_SUFFIXES = (".ndjson", ".jsonl")
# A chunk's working set (its bytes, lines, Arrow in and out) is a few times its size and up to three
# chunks are in flight. Measured on the benchmark machine, 16-24 MB chunks ran faster than 64 MB ones
# (cache locality); per-chunk overhead (one query, one row group per scope) is noise at this size.
DEFAULT_CHUNK_BYTES = 24 * 1024 * 1024
# Dumps are not split below this size to spread them over the cores.
_MIN_SPLIT_BYTES = 2 * 1024 * 1024
ROLES = ("user", "assistant", "system")
RAW_FILE = "part-0.parquet"

# (json field, expected JSON kind) in the guide's export shape, in the order reasons are reported.
FIELDS: tuple[tuple[str, str], ...] = (
    ("thread_id", "string"),
    ("assistant_id", "string"),
    ("message_id", "string"),
    ("role", "string"),
    ("text", "string"),
    ("created_at", "number"),
)
# Unix seconds beyond this are certainly not a message time (year 2100); they would overflow timestamps.
_MAX_EPOCH = 4_102_444_800

MANIFEST_SCHEMA = {
    "dump_id": pl.String,
    "seq": pl.Int64,
    "file": pl.String,
    "size": pl.Int64,
    "mtime_ns": pl.Int64,
    "sha256": pl.String,
    "lines": pl.Int64,
    "staged": pl.Int64,
    "quarantined": pl.Int64,
    "scopes": pl.List(pl.String),
    "mapping": pl.String,
    "ingested_at": pl.Datetime("us", "UTC"),
}

# Staged rows, in the column order of the messages table (see pipelines.ingest.messages).
RAW_SCHEMA = pa.schema(
    [
        ("message_id", pa.large_string()),
        ("thread_id", pa.large_string()),
        ("assistant_id", pa.large_string()),
        ("role", pa.large_string()),
        ("text", pa.large_string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("created_epoch", pa.int64()),
        ("text_chars", pa.int64()),
        ("is_blank", pa.bool_()),
        ("tenant_id", pa.large_string()),
        ("project_id", pa.large_string()),
        ("dump_id", pa.large_string()),
        ("dump_seq", pa.int64()),
        ("line_no", pa.int64()),
    ]
)
# Strings are large here, as Polars hands them over; the files are written without the Arrow schema,
# so readers see plain strings, as in the quarantine files DuckDB writes.
QUARANTINE_SCHEMA = pa.schema(
    [
        ("dump_id", pa.large_string()),
        ("file", pa.large_string()),
        ("line_no", pa.int64()),
        ("raw_text", pa.large_string()),
        ("reason", pa.large_string()),
        ("stage", pa.large_string()),
        ("scope", pa.large_string()),
        ("thread_id", pa.large_string()),
        ("message_id", pa.large_string()),
    ]
)
# Low-cardinality columns get dictionary pages and statistics; ids and texts never repeat within a file.
_DICTIONARY_COLUMNS = ["thread_id", "assistant_id", "role", "tenant_id", "project_id", "dump_id"]
_STATISTICS_COLUMNS = ["message_id", "thread_id", "created_at", "dump_seq", "line_no"]


@dataclass(frozen=True)
class Dump:
    path: Path
    size: int
    mtime_ns: int

    @property
    def dump_id(self) -> str:
        """Stable for an unchanged file; a rewritten or grown file is a new dump (its old lines then
        come back as exact repeats, which the message stage collapses). The full path takes part, so two
        files of one name, size and time in different folders stay two dumps."""
        digest = hashlib.sha256(f"{self.path}|{self.size}|{self.mtime_ns}".encode()).hexdigest()[:12]
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.path.stem)[:40]
        return f"{stem}-{digest}"


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


def discover_dumps(source: Path) -> list[Dump]:
    """The dump files under ``source`` (a file or a folder, searched recursively), in name order,
    which is also the ingest order that breaks ``created_at`` ties between dumps."""
    source = Path(source)
    if source.is_file():
        files = [source]
    elif source.is_dir():
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file() and p.suffix.lower() in DUMP_SUFFIXES and not p.name.startswith(".")
        )
    else:
        raise FileNotFoundError(f"input not found: {source}")
    dumps = []
    for p in files:
        st = p.stat()
        dumps.append(Dump(p.resolve(), st.st_size, st.st_mtime_ns))
    return dumps


def read_manifest(layout: DataLayout) -> pl.DataFrame:
    if layout.manifest.exists():
        return pl.read_parquet(layout.manifest)
    return pl.DataFrame(schema=MANIFEST_SCHEMA)


def pending_dumps(layout: DataLayout, source: Path, settle_seconds: float = 0.0) -> list[Dump]:
    """Dumps not in the manifest yet; with ``settle_seconds``, only files unchanged for that long (a file
    still being copied in would otherwise be read half-written)."""
    done = set(read_manifest(layout)["dump_id"].to_list())
    newest = time.time_ns() - int(settle_seconds * 1e9)
    return [d for d in discover_dumps(source) if d.dump_id not in done and d.mtime_ns <= newest]


def iter_chunks(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, bytes, int]]:
    """Yield ``(first line number, bytes, line count)`` for newline-aligned chunks of a file."""
    first = 1
    with open(path, "rb") as f:
        while data := f.read(chunk_bytes):
            if not data.endswith(b"\n"):
                data += f.readline()
            count = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            yield first, data, count
            first += count


def _bad_utf8_lines(data: bytes, first: int) -> list[int]:
    # isascii() is a memory scan with no allocation: nearly every chunk is done here.
    if data.isascii():
        return []
    try:
        data.decode("utf-8")
        return []
    except UnicodeDecodeError:
        pass
    bad = []
    for i, raw in enumerate(data.split(b"\n")):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(first + i)
    return bad


def _lines_frame(data: bytes, first: int, count: int) -> pl.DataFrame:
    # NUL never appears in valid JSON text, so as a separator it leaves every real line whole.
    frame = pl.read_csv(
        io.BytesIO(data),
        has_header=False,
        separator="\x00",
        quote_char=None,
        schema={"line": pl.String},
        encoding="utf8-lossy",
        extra_columns="ignore",
    )
    if frame.height != count:
        raise RuntimeError(f"line split mismatch: expected {count} lines, read {frame.height}")
    bad = _bad_utf8_lines(data, first)
    return frame.with_row_index("line_no", offset=first).with_columns(
        pl.col("line_no").cast(pl.Int64),
        pl.col("line_no").is_in(bad).alias("bad_utf8") if bad else pl.lit(False).alias("bad_utf8"),
    )


def _split_chunks(path: Path, chunk_bytes: int) -> Iterator[tuple[bytes, pl.DataFrame, int]]:
    """``(bytes, lines frame, line count)`` per chunk of the file."""
    for first, data, count in iter_chunks(path, chunk_bytes):
        yield data, _lines_frame(data, first, count), count


def _prefetched[T](items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Iterate ``items`` on a background thread, at most ``depth`` items ahead of the consumer."""
    queue: Queue = Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            queue.put(exc)
            return
        queue.put(done)

    thread = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # The consumer stopped early (an error downstream): let the reader finish and go.
        stop.set()
        while thread.is_alive():
            try:
                queue.get_nowait()
            except Empty:
                thread.join(0.05)


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


def _classify_sql(mapping: ScopeMapping, dump_id: str, seq: int) -> str:
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


def _classifier(con: duckdb.DuckDBPyConnection, mapping: ScopeMapping) -> duckdb.DuckDBPyConnection:
    """A connection of its own (temp tables, registered frames) to classify chunks on one thread."""
    cursor = con.cursor()
    cursor.execute("SET threads = 1")
    cursor.execute("SET preserve_insertion_order = true")
    # Strings leave DuckDB as large_string, the type the staged files are written with: no conversion.
    cursor.execute("SET arrow_large_buffer_size = true")
    if mapping.tenant_map is not None:
        load_tenant_map(cursor, Path(mapping.tenant_map))
    return cursor


def _classify(con: duckdb.DuckDBPyConnection, lines: pl.DataFrame, sql: str) -> pa.Table:
    """Run the classification over one chunk's lines; the result keeps the line order."""
    con.register("lines", lines.to_arrow())
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.unregister("lines")


class _DumpWriter:
    """Appends classified chunks to the dump's Parquet files, in chunk order, from one thread.

    Owns every mutable piece of the dump's result, so the thread doing the writing is also the only
    one counting; the caller reads the result after :meth:`close`.
    """

    def __init__(self, raw_dir: Path, qfile: Path, dump: Dump, result: DumpResult) -> None:
        self.raw_dir = raw_dir
        self.qfile = qfile
        self.file = str(dump.path)
        self.result = result
        self.keys: dict[tuple[str, str], str] = {}
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.quarantine = pq.ParquetWriter(qfile, QUARANTINE_SCHEMA, compression="zstd", store_schema=False)
        self.sha = hashlib.sha256()

    def _scope_writer(self, scope: str) -> pq.ParquetWriter:
        writer = self.writers.get(scope)
        if writer is None:
            folder = self.raw_dir / f"scope={scope}"
            folder.mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(
                folder / RAW_FILE,
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
        good = frame.filter(pl.col("reason").is_null()).sort(["tenant_id", "project_id"], maintain_order=True)
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
        if good.height < frame.height:
            self._quarantine(frame.filter(pl.col("reason").is_not_null()))
        self.result.lines += count

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
        self.quarantine.write_table(_arrow(rows, QUARANTINE_SCHEMA))
        self.result.quarantined += bad.height
        for kind, n_kind in bad.group_by("reason_kind").len().rows():
            self.result.reasons[kind] = self.result.reasons.get(kind, 0) + n_kind

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.quarantine.close()


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
) -> tuple[DumpResult, str]:
    """Stage one dump: typed rows to ``staged/raw/dump=<id>/scope=<key>/`` and bad lines to
    ``staged/quarantine/``. Partial output of an earlier crashed attempt is removed first."""
    started = time.perf_counter()
    dump_id = dump.dump_id
    raw_dir = layout.raw(dump_id)
    shutil.rmtree(raw_dir, ignore_errors=True)
    raw_dir.mkdir(parents=True)
    qdir = layout.quarantine()
    qdir.mkdir(parents=True, exist_ok=True)
    for stale in qdir.glob(f"dump={dump_id}-*.parquet"):
        stale.unlink()
    result = DumpResult(dump_id=dump_id, file=str(dump.path))
    sql = _classify_sql(mapping, dump_id, seq)
    writer = _DumpWriter(raw_dir, qdir / f"dump={dump_id}-c00000.parquet", dump, result)
    # A pipeline on threads: one reads and splits the next chunks, single-threaded DuckDB connections
    # classify one chunk each side by side (one query spread over every core left cores idle at the end
    # of each chunk: measured ~10% slower), and a writer appends finished chunks in order.
    cores = os.cpu_count() or 1
    # A dump smaller than a chunk per core (a typical incremental delivery) is cut into one chunk per
    # core, so that every core classifies; a tiny one stays whole (a query has a fixed cost).
    chunk_bytes = min(chunk_bytes, max(_MIN_SPLIT_BYTES, -(-dump.size // cores)))
    chunks_in_dump = max(1, -(-dump.size // chunk_bytes))
    classifiers = [_classifier(con, mapping) for _ in range(max(1, min(cores, chunks_in_dump)))]
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
            chunks = _prefetched(_split_chunks(dump.path, chunk_bytes))
            for number, (data, lines, count) in enumerate(chunks):
                cursor = classifiers[number % len(classifiers)]
                classified.append((data, count, classify.submit(_classify, cursor, lines, sql)))
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
    if result.lines != result.staged + result.quarantined:
        raise RuntimeError(
            f"{dump.path}: {result.lines} lines but {result.staged} staged + {result.quarantined} quarantined"
        )
    result.seconds = time.perf_counter() - started
    result.scope_names = {k: tp for tp, k in writer.keys.items()}
    return result, writer.sha.hexdigest()


def ingest(
    layout: DataLayout,
    source: Path,
    mapping: ScopeMapping,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    log: Callable[[str], None] | None = None,
    settle_seconds: float = 0.0,
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
    results = []
    for dump in todo:
        seq += 1
        result, sha = ingest_dump(con, layout, dump, seq, mapping, chunk_bytes)
        if log:
            log(
                f"{dump.path.name}: {result.lines} lines -> {result.staged} staged, "
                f"{result.quarantined} quarantined in {result.seconds:.1f}s"
            )
        row = pl.DataFrame(
            [
                {
                    "dump_id": result.dump_id,
                    "seq": seq,
                    "file": str(dump.path),
                    "size": dump.size,
                    "mtime_ns": dump.mtime_ns,
                    "sha256": sha,
                    "lines": result.lines,
                    "staged": result.staged,
                    "quarantined": result.quarantined,
                    "scopes": sorted(result.scopes),
                    "mapping": mapping.describe(),
                    "ingested_at": datetime.now(UTC),
                }
            ],
            schema=MANIFEST_SCHEMA,
        )
        manifest = pl.concat([manifest, row])
        _register_scopes(layout, result.scope_names)
        # The manifest is written after each dump so a crash re-does at most the dump in progress.
        write_parquet(manifest, layout.manifest)
        results.append(result)
    con.close()
    return results


SCOPES_SCHEMA = {"scope": pl.String, "tenant_id": pl.String, "project_id": pl.String}


def read_scopes(layout: DataLayout) -> pl.DataFrame:
    """Every scope seen so far with its Engramia ``(tenant_id, project_id)``."""
    path = layout.manifest.with_name("scopes.parquet")
    return pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=SCOPES_SCHEMA)


def scope_names(layout: DataLayout, scope: str) -> tuple[str, str]:
    row = read_scopes(layout).filter(pl.col("scope") == scope)
    if row.is_empty():
        raise KeyError(f"unknown scope {scope!r}: no staged dump has produced it")
    return row["tenant_id"][0], row["project_id"][0]


def _register_scopes(layout: DataLayout, names: dict[str, tuple[str, str]]) -> None:
    known = read_scopes(layout)
    new = pl.DataFrame(
        [{"scope": k, "tenant_id": t, "project_id": p} for k, (t, p) in names.items()], schema=SCOPES_SCHEMA
    )
    merged = pl.concat([known, new]).unique("scope", keep="first").sort("scope")
    if merged.height != known.height:
        write_parquet(merged, layout.manifest.with_name("scopes.parquet"))


def scope_dump_rows(layout: DataLayout, scope: str) -> dict[str, list[Path]]:
    """Staged raw files of one scope, per dump id, for dumps the manifest lists as complete (the files
    of a dump whose ingest crashed are ignored until it is ingested again)."""
    complete = set(read_manifest(layout)["dump_id"].to_list())
    out: dict[str, list[Path]] = {}
    for dump_dir in sorted(layout.raw().glob("dump=*")):
        if dump_dir.name.removeprefix("dump=") not in complete:
            continue
        files = parquet_files(dump_dir / f"scope={scope}")
        if files:
            out[dump_dir.name.removeprefix("dump=")] = files
    return out


def quarantine_frame(layout: DataLayout) -> pl.LazyFrame | None:
    files = parquet_files(layout.quarantine())
    return pl.scan_parquet(files) if files else None
