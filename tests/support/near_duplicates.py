"""Pattern frames for the near-duplicate tests: one row per (pattern_id, task, eval_score, created_at)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SCHEMA = {
    "pattern_id": pl.String,
    "task": pl.String,
    "eval_score": pl.Float64,
    "created_at": pl.Datetime("us", "UTC"),
}


def frame(rows: list[tuple]) -> pl.DataFrame:
    """rows of (pattern_id, task, eval_score, created_at)."""
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")
