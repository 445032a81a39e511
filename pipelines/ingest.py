"""Raw thread exports -> typed rows per scope, or quarantined lines with their reason.

A dump is read in newline-aligned byte chunks so memory stays bounded whatever the file size;
each chunk is split into lines by Polars (keeping line numbers, blank lines included) and
classified by DuckDB, whose JSON functions judge every line on its own (Polars' JSON decoder
fails a whole column on one bad line). Nothing is pulled into Python objects line by line, except
to locate the lines of a chunk that holds invalid UTF-8.

Invariant per dump: lines = staged rows + quarantined rows.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl

from pipelines.duck import connect
from pipelines.layout import DataLayout, parquet_files, write_parquet
from pipelines.scopes import ScopeBy, ScopeMapping, load_tenant_map, scope_key

DUMP_SUFFIXES = (".ndjson", ".jsonl")
DEFAULT_CHUNK_BYTES = 128 * 1024 * 1024
ROLES = ("user", "assistant", "system")

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


@dataclass(frozen=True)
class Dump:
    path: Path
    size: int
    mtime_ns: int

    @property
    def dump_id(self) -> str:
        """Stable for an unchanged file; a rewritten or grown file is a new dump (its old lines then
        come back as exact repeats, which the message stage collapses)."""
        digest = hashlib.sha256(f"{self.path.name}|{self.size}|{self.mtime_ns}".encode()).hexdigest()[:12]
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


def pending_dumps(layout: DataLayout, source: Path) -> list[Dump]:
    done = set(read_manifest(layout)["dump_id"].to_list())
    return [d for d in discover_dumps(source) if d.dump_id not in done]


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


def _reason_sql() -> str:
    """One SQL CASE that names the first thing wrong with a line, or NULL for a good one."""
    checks = [
        "WHEN bad_utf8 THEN 'invalid UTF-8'",
        "WHEN line IS NULL OR trim(line) = '' THEN 'empty line'",
        "WHEN NOT valid THEN 'malformed JSON'",
        "WHEN kind <> 'OBJECT' THEN 'not a JSON object'",
    ]
    for i, (name, _) in enumerate(FIELDS, start=1):
        checks.append(f"WHEN v[{i}] IS NULL OR json_type(v[{i}]) = 'NULL' THEN 'missing field: {name}'")
    for i, (name, kind) in enumerate(FIELDS, start=1):
        if kind == "string":
            checks.append(f"WHEN json_type(v[{i}]) <> 'VARCHAR' THEN 'mistyped field: {name} must be a string'")
        else:
            checks.append(
                f"WHEN json_type(v[{i}]) NOT IN ('BIGINT', 'UBIGINT', 'DOUBLE') "
                f"THEN 'mistyped field: {name} must be unix seconds (a number)'"
            )
    for name in ("thread_id", "assistant_id", "message_id"):
        checks.append(f"WHEN trim({name}) = '' THEN 'empty field: {name}'")
    checks.append(f"WHEN created_epoch < 0 OR created_epoch > {_MAX_EPOCH} THEN 'created_at out of range'")
    roles = ", ".join(f"'{r}'" for r in ROLES)
    checks.append(f"WHEN role NOT IN ({roles}) THEN 'unknown role: ' || left(role, 40)")
    checks.append("WHEN tenant_id IS NULL THEN 'thread_id has no tenant in the tenant map'")
    return "CASE " + " ".join(checks) + " END"


def _classify(con: duckdb.DuckDBPyConnection, mapping: ScopeMapping) -> None:
    """Turn the temp table ``lines`` into ``classified``: typed fields, scope columns and a reason."""
    paths = ", ".join(f"'$.{name}'" for name, _ in FIELDS)
    tenant_sql, project_sql = mapping.sql_columns()
    join = "LEFT JOIN tenant_map m USING (thread_id)" if mapping.scope_by is ScopeBy.TENANT else ""
    map_col = "m.tenant_id AS map_tenant" if mapping.scope_by is ScopeBy.TENANT else "NULL AS map_tenant"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE classified AS
        WITH parsed AS (
            SELECT line_no, line, bad_utf8,
                   CASE WHEN bad_utf8 OR line IS NULL OR trim(line) = '' THEN NULL ELSE json_valid(line) END AS valid
            FROM lines
        ), fields AS (
            SELECT *,
                   CASE WHEN valid THEN json_type(line) END AS kind,
                   CASE WHEN valid AND json_type(line) = 'OBJECT' THEN json_extract(line, [{paths}]) END AS v
            FROM parsed
        ), typed AS (
            SELECT line_no, line, bad_utf8, valid, kind, v,
                   CASE WHEN json_type(v[1]) = 'VARCHAR' THEN v[1] ->> '$' END AS thread_id,
                   CASE WHEN json_type(v[2]) = 'VARCHAR' THEN v[2] ->> '$' END AS assistant_id,
                   CASE WHEN json_type(v[3]) = 'VARCHAR' THEN v[3] ->> '$' END AS message_id,
                   CASE WHEN json_type(v[4]) = 'VARCHAR' THEN v[4] ->> '$' END AS role,
                   CASE WHEN json_type(v[5]) = 'VARCHAR' THEN v[5] ->> '$' END AS text,
                   CASE WHEN json_type(v[6]) IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                        THEN TRY_CAST(v[6] AS DOUBLE) END AS created_epoch
            FROM fields
        ), scoped AS (
            SELECT t.*, {map_col} FROM typed t {join}
        ), with_scope AS (
            SELECT *,
                   CASE WHEN thread_id IS NOT NULL AND assistant_id IS NOT NULL THEN {tenant_sql} END AS tenant_id,
                   CASE WHEN thread_id IS NOT NULL AND assistant_id IS NOT NULL THEN {project_sql} END AS project_id
            FROM scoped
        )
        SELECT *, {_reason_sql()} AS reason FROM with_scope
        """
    )


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
    sha = hashlib.sha256()
    keys: dict[tuple[str, str], str] = {}
    for chunk_no, (first, data, count) in enumerate(iter_chunks(dump.path, chunk_bytes)):
        sha.update(data)
        lines = _lines_frame(data, first, count)
        del data
        con.register("lines", lines)
        _classify(con, mapping)
        con.unregister("lines")
        del lines
        for tenant_id, project_id in con.execute(
            "SELECT DISTINCT tenant_id, project_id FROM classified WHERE tenant_id IS NOT NULL "
            "AND project_id IS NOT NULL"
        ).fetchall():
            keys.setdefault((tenant_id, project_id), scope_key(tenant_id, project_id))
        con.execute("CREATE OR REPLACE TEMP TABLE scope_keys (tenant_id VARCHAR, project_id VARCHAR, scope VARCHAR)")
        if keys:
            con.executemany("INSERT INTO scope_keys VALUES (?, ?, ?)", [(t, p, k) for (t, p), k in keys.items()])
        con.execute(
            f"""
            COPY (
                SELECT c.thread_id, c.assistant_id, c.message_id, c.role, c.text,
                       make_timestamptz(CAST(c.created_epoch * 1000000 AS BIGINT)) AS created_at,
                       CAST(c.created_epoch AS BIGINT) AS created_epoch,
                       length(c.text) AS text_chars,
                       regexp_full_match(c.text, '[\\s\\x{{00A0}}\\x{{2000}}-\\x{{200B}}\\x{{3000}}]*') AS is_blank,
                       c.tenant_id, c.project_id, k.scope,
                       '{dump_id}' AS dump_id, CAST({seq} AS BIGINT) AS dump_seq, c.line_no
                FROM classified c JOIN scope_keys k USING (tenant_id, project_id)
                WHERE c.reason IS NULL
                ORDER BY c.line_no
            ) TO '{raw_dir}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (scope),
                               FILENAME_PATTERN 'c{chunk_no:05d}-{{i}}', OVERWRITE_OR_IGNORE)
            """
        )
        qfile = qdir / f"dump={dump_id}-c{chunk_no:05d}.parquet"
        con.execute(
            f"""
            COPY (
                SELECT '{dump_id}' AS dump_id, ? AS file, c.line_no, c.line AS raw_text, c.reason,
                       'ingest' AS stage, k.scope, c.thread_id, c.message_id
                FROM classified c LEFT JOIN scope_keys k USING (tenant_id, project_id)
                WHERE c.reason IS NOT NULL
                ORDER BY c.line_no
            ) TO '{qfile}' (FORMAT parquet, COMPRESSION zstd)
            """,
            [str(dump.path)],
        )
        for scope, staged, quarantined in con.execute(
            "SELECT k.scope, count(*) FILTER (WHERE c.reason IS NULL), count(*) FILTER (WHERE c.reason IS NOT NULL) "
            "FROM classified c LEFT JOIN scope_keys k USING (tenant_id, project_id) GROUP BY ALL"
        ).fetchall():
            result.staged += staged
            result.quarantined += quarantined
            if scope is not None and staged:
                result.scopes[scope] = result.scopes.get(scope, 0) + staged
        for reason, n in con.execute(
            "SELECT regexp_replace(reason, ':.*', ''), count(*) FROM classified WHERE reason IS NOT NULL GROUP BY 1"
        ).fetchall():
            result.reasons[reason] = result.reasons.get(reason, 0) + n
        result.lines += count
    if result.lines != result.staged + result.quarantined:
        raise RuntimeError(
            f"{dump.path}: {result.lines} lines but {result.staged} staged + {result.quarantined} quarantined"
        )
    result.seconds = time.perf_counter() - started
    result.scope_names = {k: tp for tp, k in keys.items()}
    return result, sha.hexdigest()


def ingest(
    layout: DataLayout,
    source: Path,
    mapping: ScopeMapping,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    log: Callable[[str], None] | None = None,
) -> list[DumpResult]:
    """Stage every dump under ``source`` that is not in the manifest yet, in name order."""
    manifest = read_manifest(layout)
    mappings = set(manifest["mapping"].unique().to_list())
    if mappings and mappings != {mapping.describe()}:
        raise ValueError(
            f"{layout.root}: earlier dumps were staged with {sorted(mappings)} but this run uses "
            f"{mapping.describe()}; use a fresh data directory to change the scope mapping"
        )
    todo = pending_dumps(layout, source)
    if not todo:
        return []
    con = connect()
    if mapping.tenant_map is not None:
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
    """Staged raw files of one scope, per dump id."""
    out: dict[str, list[Path]] = {}
    for dump_dir in sorted(layout.raw().glob("dump=*")):
        files = parquet_files(dump_dir / f"scope={scope}")
        if files:
            out[dump_dir.name.removeprefix("dump=")] = files
    return out


def quarantine_frame(layout: DataLayout) -> pl.LazyFrame | None:
    files = parquet_files(layout.quarantine())
    return pl.scan_parquet(files) if files else None
