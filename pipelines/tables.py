"""Where every table of the pipeline lives under one data directory.

All paths are derived from a single root so that the CLI, the Dagster assets, the sensor and the
DuckDB warehouse agree on them without passing paths around.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

# Large intermediate tables (staged rows, messages, patterns) are written once and read a few times by
# the next stages on the same machine. Compressing their text costs more CPU than reading it back
# uncompressed saves (measured: zstd ~5x, LZ4 ~2.5x the CPU of an uncompressed write, for ~2x-4x less
# disk), so they are stored uncompressed; small tables keep zstd. Polars' spelling ("lz4", "zstd" and
# "snappy" also work); :data:`ARROW_INTERMEDIATE_COMPRESSION` is the same codec as pyarrow names it.
INTERMEDIATE_COMPRESSION = "uncompressed"
ARROW_INTERMEDIATE_COMPRESSION = (
    "none" if INTERMEDIATE_COMPRESSION == "uncompressed" else INTERMEDIATE_COMPRESSION
)


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
        return self.staged / "_manifest" / "dumps.parquet"

    def raw(self, dump_id: str | None = None) -> Path:
        base = self.staged / "raw"
        return base if dump_id is None else base / f"dump={dump_id}"

    def quarantine(self) -> Path:
        return self.staged / "quarantine"

    def _scoped(self, name: str, scope: str) -> Path:
        return self.staged / name / f"scope={scope}"

    # One accessor per scope-partitioned table (``staged/<table>/scope=<key>/``), in the order of the flow.
    def messages(self, scope: str) -> Path:
        """Typed messages, one file per dump (``dump=<id>.parquet``)."""
        return self._scoped("messages", scope)

    def message_stats(self, scope: str) -> Path:
        """Per dump: rows in, messages, repeats, conflicts (marks a dump as staged for the scope)."""
        return self._scoped("message_stats", scope)

    def patterns(self, scope: str) -> Path:
        """Paired (user, assistant) patterns, one file per pairing batch."""
        return self._scoped("patterns", scope)

    def unpaired(self, scope: str) -> Path:
        """Messages left out of every pattern, with their reason, one file per pairing batch."""
        return self._scoped("unpaired", scope)

    def threads(self, scope: str) -> Path:
        """Which batch holds each thread's current pairing."""
        return self._scoped("threads", scope)

    def scored(self, scope: str) -> Path:
        """Scores and near-duplicate outcomes of the current patterns."""
        return self._scoped("scored", scope)

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


def parquet_files(directory: Path, pattern: str = "*.parquet") -> list[Path]:
    """Sorted Parquet files of a folder; a missing folder is simply empty."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(pattern) if p.is_file())


def write_parquet(frame: pl.DataFrame | pl.LazyFrame, path: Path, compression: str = "zstd") -> int:
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
