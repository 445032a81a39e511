"""Patterns -> scored patterns: an eval_score per pattern, then near-duplicate removal within the scope.

Strategies: ``neutral`` gives every pattern 5.0 (the Assistants API kept no quality signal);
``feedback`` reads the user's own feedback export (CSV or Parquet) keyed by ``message_id`` or
``thread_id``: a ``feedback`` label (positive -> 7.0, negative -> 3.0) or a numeric ``rating`` mapped
linearly from its scale into 0..10. Message-level feedback beats thread-level feedback; several rows
for one key are averaged; patterns without feedback stay neutral.

Near-duplicates are removed over the whole scope every run (see :mod:`pipelines.dedup`), so the result
never depends on the order dumps arrived in.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import polars as pl

from pipelines.dedup import JACCARD_THRESHOLD, near_duplicates
from pipelines.incremental import current
from pipelines.layout import DataLayout, write_parquet

NEUTRAL_SCORE = 5.0
POSITIVE_SCORE = 7.0
NEGATIVE_SCORE = 3.0
POSITIVE_LABELS = ("positive", "pos", "up", "thumbs_up", "like", "good", "+1", "1", "true", "yes")
NEGATIVE_LABELS = ("negative", "neg", "down", "thumbs_down", "dislike", "bad", "-1", "0", "false", "no")


class ScoreStrategy(StrEnum):
    NEUTRAL = "neutral"
    FEEDBACK = "feedback"


@dataclass(frozen=True)
class ScoringOptions:
    strategy: ScoreStrategy = ScoreStrategy.NEUTRAL
    feedback: Path | None = None
    rating_min: float = 1.0
    rating_max: float = 5.0
    threshold: float = JACCARD_THRESHOLD

    def __post_init__(self) -> None:
        if self.strategy is ScoreStrategy.FEEDBACK and self.feedback is None:
            raise ValueError("score strategy 'feedback' needs a feedback file (CSV or Parquet)")
        if self.rating_max <= self.rating_min:
            raise ValueError("rating_max must be greater than rating_min")


def read_feedback(options: ScoringOptions) -> pl.DataFrame:
    """Normalise a feedback file to ``(key_kind, key, score)`` with one row per key."""
    path = Path(options.feedback)  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"feedback file not found: {path}")
    raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    kinds = [c for c in ("message_id", "thread_id") if c in raw.columns]
    if not kinds:
        raise ValueError(f"{path}: needs a 'message_id' or a 'thread_id' column, found {raw.columns}")
    if "feedback" not in raw.columns and "rating" not in raw.columns:
        raise ValueError(f"{path}: needs a 'feedback' (positive/negative) or a 'rating' (number) column")
    raw = raw.with_row_index("line", offset=2)  # header is line 1
    label = pl.col("feedback").cast(pl.String).str.strip_chars().str.to_lowercase() if "feedback" in raw.columns else None
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


def score(patterns: pl.LazyFrame, feedback: pl.DataFrame | None) -> pl.LazyFrame:
    """``pattern_id, eval_score, score_source`` for every pattern."""
    base = patterns.select("pattern_id", "thread_id", "user_message_ids", "assistant_message_ids")
    if feedback is None:
        return base.select("pattern_id", eval_score=pl.lit(NEUTRAL_SCORE), score_source=pl.lit("neutral"))
    by_message = (
        base.select("pattern_id", key=pl.concat_list("user_message_ids", "assistant_message_ids"))
        .explode("key")
        .join(feedback.lazy().filter(pl.col("key_kind") == "message_id"), on="key", how="inner")
        .group_by("pattern_id")
        .agg(message_score=pl.col("score").mean())
    )
    by_thread = feedback.lazy().filter(pl.col("key_kind") == "thread_id").select(
        thread_id="key", thread_score="score"
    )
    return (
        base.join(by_message, on="pattern_id", how="left")
        .join(by_thread, on="thread_id", how="left")
        .select(
            "pattern_id",
            eval_score=pl.coalesce("message_score", "thread_score", pl.lit(NEUTRAL_SCORE)),
            score_source=pl.when(pl.col("message_score").is_not_null())
            .then(pl.lit("feedback:message"))
            .when(pl.col("thread_score").is_not_null())
            .then(pl.lit("feedback:thread"))
            .otherwise(pl.lit("neutral")),
        )
    )


@dataclass
class ScoringResult:
    patterns: int
    kept: int
    duplicates: int
    from_feedback: int


def score_scope(
    layout: DataLayout, scope: str, options: ScoringOptions, feedback: pl.DataFrame | None = None
) -> ScoringResult:
    """Rewrite ``staged/scored/scope=<key>/scored.parquet`` for the scope's current patterns."""
    patterns = current(layout, "patterns", scope)
    target = layout.table("scored", scope) / "scored.parquet"
    if patterns is None:
        return ScoringResult(0, 0, 0, 0)
    if options.strategy is ScoreStrategy.FEEDBACK and feedback is None:
        feedback = read_feedback(options)
    scores = score(patterns, feedback if options.strategy is ScoreStrategy.FEEDBACK else None)
    narrow = (
        patterns.select("pattern_id", "thread_id", "task", "created_at")
        .join(scores, on="pattern_id", how="left")
        .collect()
    )
    decided = near_duplicates(narrow, threshold=options.threshold)
    scored = narrow.drop("task").join(decided, on="pattern_id", how="left").sort("pattern_id")
    write_parquet(scored, target)
    kept = int(scored["kept"].sum())
    return ScoringResult(
        patterns=scored.height,
        kept=kept,
        duplicates=scored.height - kept,
        from_feedback=int((scored["score_source"] != "neutral").sum()),
    )


def scan_scored(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    path = layout.table("scored", scope) / "scored.parquet"
    return pl.scan_parquet(path) if path.exists() else None
