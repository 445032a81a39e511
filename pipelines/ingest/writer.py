"""Where one dump's classified rows go: typed rows appended to one Parquet file per scope, in chunk
order (``staged/raw/dump=<id>/scope=<key>/part-0.parquet``, then ``part-1.parquet`` for rows that waited
for their assistant), and bad rows to the dump's quarantine file, all counted in the dump's result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.ingest.dumps import Dump
from pipelines.ingest.formats.guide import NAME as GUIDE
from pipelines.progress import ProgressBar
from pipelines.scopes import scope_key
from pipelines.tables import ARROW_INTERMEDIATE_COMPRESSION, QUARANTINE_SCHEMA, RAW_SCHEMA

RAW_FILE = "part-0.parquet"
# Low-cardinality columns get dictionary pages and statistics; ids and texts never repeat within a file.
_DICTIONARY_COLUMNS = ["thread_id", "assistant_id", "role", "tenant_id", "project_id", "dump_id", "branch"]
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


class DumpWriter:
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
            routed = arrow_table(good.select(RAW_SCHEMA.names), RAW_SCHEMA)
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
        self.quarantine.write_table(arrow_table(rows, QUARANTINE_SCHEMA))
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


def arrow_table(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """``frame`` as an Arrow table of ``schema`` (Polars' oldest Arrow types: large strings, no views)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())
    if not table.schema.equals(schema):
        raise TypeError(f"staged rows do not match their schema:\n{table.schema}\nexpected:\n{schema}")
    return table
