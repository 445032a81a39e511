"""The frames near-duplicate removal reads and returns, shared by the engines and the reference.

Invariants: every result has ``OUTPUT_SCHEMA``, one row per input pattern; inputs are rejected unless
their pattern ids are non-null and unique, because ``duplicate_of`` names a pattern by its id.
"""

from __future__ import annotations

import polars as pl

JACCARD_THRESHOLD = 0.92

OUTPUT_SCHEMA = {
    "pattern_id": pl.String,
    "kept": pl.Boolean,
    "duplicate_of": pl.String,
    "similarity": pl.Float64,
}
_REQUIRED = ("pattern_id", "task", "eval_score", "created_at")


def collect_patterns(patterns: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Select and type the columns we use and reject inputs the contract cannot answer."""
    lf = patterns.lazy()
    missing = [c for c in _REQUIRED if c not in lf.collect_schema().names()]
    if missing:
        raise ValueError(f"patterns is missing column(s): {missing}")
    df = lf.select(
        pl.col("pattern_id").cast(pl.String),
        pl.col("task").cast(pl.String),
        pl.col("eval_score").cast(pl.Float64),
        pl.col("created_at"),
    ).collect()
    ids = df["pattern_id"]
    if ids.null_count():
        raise ValueError("pattern_id must not be null")
    if ids.n_unique() != df.height:
        raise ValueError("pattern_id must be unique")
    return df


def empty_result() -> pl.DataFrame:
    return pl.DataFrame(schema=OUTPUT_SCHEMA)
