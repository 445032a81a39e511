"""Every table of the pipeline: where it lives under one data directory, and the schema it is written with.

All paths are derived from a single root so that the CLI, the Dagster assets, the sensor and the
DuckDB warehouse agree on them without passing paths around. Each published table's schema is defined
here once and imported by the stage that writes it and by the stages that read it, so a writer and its
readers can never disagree about a column. (The load ledger's schema belongs to the load stage.)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl
import pyarrow as pa

type PolarsSchema = dict[str, pl.DataType | type[pl.DataType]]
# Polars' spellings of the codecs the pipeline writes with.
type ParquetCompression = Literal["uncompressed", "lz4", "zstd", "snappy"]

# Large intermediate tables (staged rows, messages, patterns) are written once and read a few times by
# the next stages on the same machine. Compressing their text costs more CPU than reading it back
# uncompressed saves (measured: zstd ~5x, LZ4 ~2.5x the CPU of an uncompressed write, for ~2x-4x less
# disk), so they are stored uncompressed; small tables keep zstd. :data:`ARROW_INTERMEDIATE_COMPRESSION`
# is the same codec as pyarrow names it.
INTERMEDIATE_COMPRESSION: ParquetCompression = "uncompressed"
ARROW_INTERMEDIATE_COMPRESSION = (
    "none" if INTERMEDIATE_COMPRESSION == "uncompressed" else INTERMEDIATE_COMPRESSION
)

# ------------------------------------------------------------------------------------------------
# Schemas, in the order of the flow
# ------------------------------------------------------------------------------------------------

# One row per ingested dump; a dump is complete once its row is here.
MANIFEST_SCHEMA: PolarsSchema = {
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
    # The input shape (a name of pipelines.ingest.formats.FORMATS); manifests written before formats
    # existed read as "guide-ndjson", the only shape there was.
    "format": pl.String,
}
MANIFEST_DEFAULTS: dict[str, object] = {"format": "guide-ndjson"}

# Per dump of a shape other than the guide's NDJSON, one row per record: where it is in its file and
# what the staged row does not hold. ``line_no`` is the staged row's (the record's order key).
RECORDS_SCHEMA: PolarsSchema = {
    "dump_id": pl.String,
    "line_no": pl.Int64,
    "position": pl.String,  # "line 12", "$[3]", "line 2 $.data[5]"
    "message_id": pl.String,
    "run_id": pl.String,
    "branch": pl.String,  # current | abandoned
    "timed": pl.Boolean,  # false: the source had no time, the row is staged at unix time 0
    "images": pl.Int64,
    "files": pl.Int64,
    "attachments": pl.Int64,
    "annotations": pl.Int64,
    "other": pl.Int64,
}

# Every scope seen so far with its Engramia ``(tenant_id, project_id)``.
SCOPES_SCHEMA: PolarsSchema = {"scope": pl.String, "tenant_id": pl.String, "project_id": pl.String}

# Staged rows and messages share one schema: a dump that repeats nothing has its staged file adopted as
# its messages file as it is.
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
        # "current", or "abandoned": an edited or regenerated message the conversation moved away from,
        # kept for the record and never paired.
        ("branch", pa.large_string()),
    ]
)
MESSAGE_COLUMNS: tuple[str, ...] = tuple(RAW_SCHEMA.names)

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

# Paired tables also carry the ``batch`` that wrote them (see pipelines.pairing.batches).
PATTERN_COLUMNS: tuple[str, ...] = (
    "pattern_id",
    "thread_id",
    "assistant_id",
    "task",
    "code",
    "task_chars",
    "code_chars",
    "task_truncated",
    "code_truncated",
    "user_message_ids",
    "assistant_message_ids",
    "created_at",
    "answered_at",
)
UNPAIRED_SCHEMA: PolarsSchema = {
    "message_id": pl.String,
    "thread_id": pl.String,
    "role": pl.String,
    "created_at": pl.Datetime("us", "UTC"),
    "reason": pl.String,
}

# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------

# The data folder of a command or a resource that names none (relative to the current folder).
DEFAULT_DATA_DIR = Path("data")


@dataclass(frozen=True)
class DataLayout:
    root: Path

    @classmethod
    def at(cls, root: str | Path) -> DataLayout:
        return cls(Path(root).resolve())

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def staged(self) -> Path:
        return self.root / "staged"

    @property
    def engramia(self) -> Path:
        return self.root / "engramia"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    @property
    def manifest(self) -> Path:
        """One row per complete dump (:data:`MANIFEST_SCHEMA`)."""
        return self.staged / "_manifest" / "dumps.parquet"

    @property
    def scope_catalog(self) -> Path:
        """Every scope seen so far (:data:`SCOPES_SCHEMA`)."""
        return self.manifest.with_name("scopes.parquet")

    def raw(self, dump_id: str | None = None) -> Path:
        """Staged rows (:data:`RAW_SCHEMA`), ``dump=<id>/scope=<key>/`` below it."""
        base = self.staged / "raw"
        return base if dump_id is None else base / f"dump={dump_id}"

    def records(self, dump_id: str | None = None) -> Path:
        """Per record of a non-guide dump: position, run_id, branch, part counts (:data:`RECORDS_SCHEMA`)."""
        base = self.staged / "records"
        return base if dump_id is None else base / f"dump={dump_id}.parquet"

    def quarantine(self) -> Path:
        """Lines and messages set aside with their reason (:data:`QUARANTINE_SCHEMA`)."""
        return self.staged / "quarantine"

    def _scoped(self, name: str, scope: str) -> Path:
        return self.staged / name / f"scope={scope}"

    # One accessor per scope-partitioned table (``staged/<table>/scope=<key>/``), in the order of the flow.
    def messages(self, scope: str) -> Path:
        """Typed messages (:data:`RAW_SCHEMA`), one file per dump (``dump=<id>.parquet``)."""
        return self._scoped("messages", scope)

    def message_stats(self, scope: str) -> Path:
        """Per dump: rows in, messages, repeats, conflicts (marks a dump as staged for the scope)."""
        return self._scoped("message_stats", scope)

    def patterns(self, scope: str) -> Path:
        """Paired (user, assistant) patterns (:data:`PATTERN_COLUMNS`), one file per pairing batch."""
        return self._scoped("patterns", scope)

    def unpaired(self, scope: str) -> Path:
        """Messages left out of every pattern, with their reason (:data:`UNPAIRED_SCHEMA`), one file per
        pairing batch."""
        return self._scoped("unpaired", scope)

    def threads(self, scope: str) -> Path:
        """Which batch holds each thread's current pairing."""
        return self._scoped("threads", scope)

    def scored(self, scope: str) -> Path:
        """Scores and near-duplicate outcomes of the current patterns."""
        return self._scoped("scored", scope)

    def filtered(self, scope: str) -> Path:
        """Patterns a curation gate filtered, with the gate and its reason (written with the scored table)."""
        return self._scoped("filtered", scope)

    def judge_cache(self, scope: str) -> Path:
        """The LLM judge's answers keyed by (pattern id, model, prompt version), and a batch in flight."""
        return self._scoped("judge", scope)

    def dedup_cache(self, scope: str) -> Path:
        """The near-duplicate cache (token sets and outcomes) behind incremental scoring."""
        return self._scoped("_dedup", scope)

    def ledger(self, scope: str) -> Path:
        """Each pattern's load outcome per destination."""
        return self._scoped("ledger", scope)

    def loads(self, scope: str) -> Path:
        """One summary row per load run."""
        return self._scoped("loads", scope)

    def state(self, scope: str) -> Path:
        return self.staged / "_state" / f"scope={scope}.json"

    def settled(self, scope: str) -> Path:
        """The scope's last complete run and what it was made from (:mod:`pipelines.settled`)."""
        return self.staged / "_settled" / f"scope={scope}.json"


def parquet_files(directory: Path, pattern: str = "*.parquet") -> list[Path]:
    """Sorted Parquet files of a folder; a missing folder is simply empty."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.is_file())


def damaged_parquet(layout: DataLayout, scope: str) -> list[Path]:
    """The scope's staged Parquet files that cannot be read as Parquet (cut short by a copy or a restore
    that stopped), relative to the data folder. A reader's error names no file: these name it."""
    # Imported here: only a run that failed looks, and the command that finds nothing new never does.
    import pyarrow.parquet as pq

    damaged = []
    for folder in sorted(layout.staged.glob(f"*/scope={scope}")):
        for path in sorted(folder.rglob("*.parquet")):
            try:
                pq.read_metadata(path)
            except (OSError, ValueError):
                damaged.append(path.relative_to(layout.root))
    return damaged


def write_parquet(
    frame: pl.DataFrame | pl.LazyFrame, path: Path, compression: ParquetCompression = "zstd"
) -> int:
    """Write atomically (temp file, then rename) so a crash never leaves half a file behind.

    A LazyFrame is streamed, so it never has to fit in memory. Returns the number of rows written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if isinstance(frame, pl.LazyFrame):
        frame.sink_parquet(tmp, compression=compression)
        rows = pl.scan_parquet(tmp).select(pl.len()).collect().item()
    else:
        frame.write_parquet(tmp, compression=compression)
        rows = frame.height
    os.replace(tmp, path)
    return int(rows)
