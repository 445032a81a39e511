"""The user's own feedback export (CSV or Parquet) as scores on the 0..10 eval_score scale.

Invariants: the result has one row per ``(key_kind, key)``: several rows for one key are averaged; a
``feedback`` label beats a ``rating`` on the same row (positive -> 7.0, negative -> 3.0), and a rating
maps linearly from its scale into 0..10, clipped. A file with any row that yields no score is rejected
with the lines at fault, never half read.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

import polars as pl

from pipelines.scoring.options import ScoringOptions

NEUTRAL_SCORE = 5.0
POSITIVE_SCORE = 7.0
NEGATIVE_SCORE = 3.0
POSITIVE_LABELS = ("positive", "pos", "up", "thumbs_up", "like", "good", "+1", "1", "true", "yes")
NEGATIVE_LABELS = ("negative", "neg", "down", "thumbs_down", "dislike", "bad", "-1", "0", "false", "no")

# The columns a feedback row may be keyed by, the more specific first.
KeyKind = Literal["message_id", "thread_id"]
KEY_KINDS: tuple[KeyKind, ...] = ("message_id", "thread_id")


class ScoreSource(StrEnum):
    """Where a pattern's eval_score came from (the ``score_source`` column)."""

    NEUTRAL = "neutral"
    MESSAGE = "feedback:message"
    THREAD = "feedback:thread"


def read_feedback(options: ScoringOptions) -> pl.DataFrame:
    """Normalise a feedback file to ``(key_kind, key, score)`` with one row per key."""
    path = Path(options.feedback)  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"feedback file not found: {path}")
    raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    kinds = [c for c in KEY_KINDS if c in raw.columns]
    if not kinds:
        raise ValueError(f"{path}: needs a 'message_id' or a 'thread_id' column, found {raw.columns}")
    if "feedback" not in raw.columns and "rating" not in raw.columns:
        raise ValueError(f"{path}: needs a 'feedback' (positive/negative) or a 'rating' (number) column")
    raw = raw.with_row_index("line", offset=2)  # header is line 1
    label = (
        pl.col("feedback").cast(pl.String).str.strip_chars().str.to_lowercase()
        if "feedback" in raw.columns
        else None
    )
    span = options.rating_max - options.rating_min
    rating = (
        ((pl.col("rating").cast(pl.Float64, strict=False) - options.rating_min) / span * 10.0).clip(0.0, 10.0)
        if "rating" in raw.columns
        else None
    )
    score = pl.lit(None, dtype=pl.Float64)
    if rating is not None:
        score = rating
    if label is not None:
        score = (
            pl.when(label.is_in(POSITIVE_LABELS))
            .then(POSITIVE_SCORE)
            .when(label.is_in(NEGATIVE_LABELS))
            .then(NEGATIVE_SCORE)
            .otherwise(score)
        )
    scored = raw.with_columns(score=score)
    bad = scored.filter(pl.col("score").is_null())
    if bad.height:
        rows = ", ".join(str(n) for n in bad["line"].head(5).to_list())
        raise ValueError(
            f"{path}: {bad.height} rows have no usable feedback or rating (lines {rows}); "
            f"use positive/negative or a number between {options.rating_min} and {options.rating_max}"
        )
    frames = []
    for kind in kinds:
        frames.append(
            scored.filter(pl.col(kind).is_not_null() & (pl.col(kind) != ""))
            .group_by(pl.col(kind).alias("key"))
            .agg(pl.col("score").mean())
            .with_columns(key_kind=pl.lit(kind))
        )
    return pl.concat(frames).select("key_kind", "key", "score")
