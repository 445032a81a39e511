"""The judge's answers, per scope (``staged/judge/scope=<key>/``), keyed by (pattern id, model, prompt
version).

Invariants: the cache is append-only Parquet (``answers-*.parquet``, each written atomically), so a
crash loses at most the answers of the file being written and never damages earlier ones; a pattern
asked once under a model and prompt version is never asked again under them (its latest successful
answer wins); errors are recorded too, but never count as an answer, so the next scoring asks again.
Compaction rewrites all files into one when they pile up, keeping every row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl

from pipelines.tables import parquet_files, write_parquet

CACHE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "pattern_id": pl.String,
    "model": pl.String,
    "prompt_version": pl.String,
    "score": pl.Float64,
    "reason": pl.String,
    "error": pl.String,
    "tokens_in": pl.Int64,
    "tokens_out": pl.Int64,
    "via": pl.String,  # "chat" or "batch"
    "at": pl.Datetime("us", "UTC"),
}
_COMPACT_AT = 64


class JudgeCache:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _files(self) -> list[Path]:
        return parquet_files(self.folder, "answers-*.parquet")

    def rows(self) -> pl.DataFrame:
        files = self._files()
        if not files:
            return pl.DataFrame(schema=CACHE_SCHEMA)
        return pl.read_parquet(files).cast(CACHE_SCHEMA)  # type: ignore[arg-type]

    def answers(self, model: str, prompt_version: str) -> pl.DataFrame:
        """``pattern_id, judge_score, judge_reason``: the latest successful answer per pattern."""
        return (
            self.rows()
            .filter(
                (pl.col("model") == model)
                & (pl.col("prompt_version") == prompt_version)
                & pl.col("error").is_null()
                & pl.col("score").is_not_null()
            )
            .sort("at")
            .unique("pattern_id", keep="last")
            .select("pattern_id", judge_score="score", judge_reason="reason")
        )

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        frame = pl.DataFrame(rows, schema=CACHE_SCHEMA)
        name = f"answers-{time.time_ns():020d}-{os.getpid()}.parquet"
        write_parquet(frame, self.folder / name)
        if len(self._files()) > _COMPACT_AT:
            self._compact()

    def _compact(self) -> None:
        files = self._files()
        merged = pl.read_parquet(files).cast(CACHE_SCHEMA)  # type: ignore[arg-type]
        # Named after the newest file it replaces, so it sorts after none of the files written later.
        write_parquet(merged, files[-1].with_name(files[-1].stem + "-c.parquet"))
        for path in files:
            path.unlink(missing_ok=True)
