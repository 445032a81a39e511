"""The user's own feedback export (CSV or Parquet) as scores on the 0..10 eval_score scale.

Invariants: the result has one row per ``(key_kind, key)``: several rows for one key are averaged; a
``feedback`` label beats a ``rating`` on the same row (positive -> 7.0, negative -> 3.0), and a rating
maps linearly from its scale into 0..10. A file with any row that yields no score, or with a rating
outside its declared scale (a 10 on a 1..5 scale means the scale is wrong, and clipping it would hide
that), is rejected with a :class:`FeedbackError` naming the file, the rows at fault and the scale: never
half read. Each key keeps the file rows it came from, so rows whose keys match no message can be
counted (:func:`unmatched_rows`).
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


class FeedbackError(ValueError):
    """The feedback file cannot be used as it is; the message is one line naming the file and what to fix."""


class ScoreSource(StrEnum):
    """Where a pattern's eval_score came from (the ``score_source`` column), in order of precedence:
    explicit feedback (message, then thread) > LLM judge > implicit signals > neutral."""

    NEUTRAL = "neutral"
    MESSAGE = "feedback:message"
    THREAD = "feedback:thread"
    JUDGE = "llm_judge"
    IMPLICIT = "implicit"


def check_feedback(options: ScoringOptions) -> str | None:
    """The one-line problem with the feedback file of ``options``, or None when it can be used: the same
    reading as scoring does, so a run can refuse a bad file before any work."""
    try:
        read_feedback(options)
    except FeedbackError as exc:
        return str(exc)
    return None


def _rows_named(path: Path, lines: pl.Series, limit: int = 5) -> str:
    """``lines 3, 7`` for a CSV (the header is line 1), ``rows 1, 5`` for Parquet (counted from 1)."""
    shown = ", ".join(str(n) for n in lines.head(limit).to_list())
    more = f" (and {lines.len() - limit} more)" if lines.len() > limit else ""
    return f"{'rows' if path.suffix == '.parquet' else 'lines'} {shown}{more}"


def read_feedback(options: ScoringOptions) -> pl.DataFrame:
    """Normalise a feedback file to ``(key_kind, key, score, lines)`` with one row per key (``lines``: the
    file rows behind the key). Raises :class:`FeedbackError` for a file that cannot be used as it is."""
    path = Path(options.feedback)  # type: ignore[arg-type]
    if not path.is_file():
        raise FeedbackError(f"feedback file not found: {path}")
    try:
        raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    except Exception as exc:  # any reader error: the file is not what it claims to be
        raise FeedbackError(f"{path}: not a readable CSV or Parquet file ({exc})") from None
    kinds = [c for c in KEY_KINDS if c in raw.columns]
    if not kinds:
        raise FeedbackError(f"{path}: needs a 'message_id' or a 'thread_id' column, found {raw.columns}")
    if "feedback" not in raw.columns and "rating" not in raw.columns:
        raise FeedbackError(f"{path}: needs a 'feedback' (positive/negative) or a 'rating' (number) column")
    # A CSV's header is line 1; Parquet rows are counted from 1.
    raw = raw.with_row_index("line", offset=1 if path.suffix == ".parquet" else 2).with_columns(
        pl.col("line").cast(pl.Int64)
    )
    scale = f"{options.rating_min:g}..{options.rating_max:g}"
    label = (
        pl.col("feedback").cast(pl.String).str.strip_chars().str.to_lowercase()
        if "feedback" in raw.columns
        else None
    )
    value = pl.col("rating").cast(pl.Float64, strict=False) if "rating" in raw.columns else None
    if value is not None:
        outside = raw.filter(~value.is_between(options.rating_min, options.rating_max) & value.is_not_null())
        if outside.height:
            first = outside.row(0, named=True)
            key = ", ".join(f"{k} {first[k]}" for k in kinds if first.get(k))
            raise FeedbackError(
                f"{path}: {outside.height} ratings outside the rating scale {scale} "
                f"({_rows_named(path, outside['line'])}; first: rating {first['rating']}"
                f"{' for ' + key if key else ''}); give the file's scale with --rating-min/--rating-max"
            )
    span = options.rating_max - options.rating_min
    score = pl.lit(None, dtype=pl.Float64)
    if value is not None:
        score = (value - options.rating_min) / span * 10.0
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
        where = _rows_named(path, bad["line"])
        raise FeedbackError(
            f"{path}: {bad.height} rows have no usable feedback or rating ({where}); "
            f"use positive/negative or a number between {options.rating_min:g} and {options.rating_max:g}"
        )
    frames = []
    for kind in kinds:
        frames.append(
            scored.filter(pl.col(kind).is_not_null() & (pl.col(kind) != ""))
            .group_by(pl.col(kind).cast(pl.String).alias("key"))
            .agg(pl.col("score").mean(), pl.col("line").alias("lines"))
            .with_columns(key_kind=pl.lit(kind))
        )
    return pl.concat(frames).select("key_kind", "key", "score", "lines")


def unmatched_rows(feedback: pl.DataFrame, messages: pl.LazyFrame) -> int:
    """Feedback rows none of whose keys names a message (by ``message_id``) or a thread (by ``thread_id``)
    of ``messages``: they score nothing. A row keyed by both counts once, and only if neither matches."""
    matched: list[pl.DataFrame] = []
    for kind in KEY_KINDS:
        keys = feedback.filter(pl.col("key_kind") == kind).select("key", "lines")
        if keys.is_empty():
            continue
        found = (
            messages.select(pl.col(kind).alias("key"))
            .join(keys.lazy().select("key"), on="key", how="semi")
            .unique()
            .collect()
        )
        matched.append(keys.join(found, on="key", how="semi").select(pl.col("lines").explode()))
    every = feedback.select(pl.col("lines").explode()).unique()
    if matched:
        every = every.join(pl.concat(matched).unique(), on="lines", how="anti")
    return every.height
