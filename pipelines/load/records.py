"""Kept patterns -> what Engramia stores: import records, learn payloads and the pattern key.

Invariants: a pattern's key is ``patterns/<pattern_id>`` everywhere (:func:`pattern_key` is the one
place that builds it, for a Python string or a Polars column), so every destination and the ledger name
a pattern alike. Provenance goes inside ``data.design`` (Engramia keeps extra keys there), so a loaded
pattern can always be traced back to its thread and messages. ``data.timestamp`` is the question's
``created_at``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, overload

import polars as pl

from pipelines.pairing.batches import current
from pipelines.scoring.scored import scan_scored, scored_in_step
from pipelines.tables import DataLayout

EXPORT_VERSION = 1
KEY_PREFIX = "patterns/"
SOURCE = "import"
PIPELINE = "assistants-backfill"


@overload
def pattern_key(pattern_id: str) -> str: ...
@overload
def pattern_key(pattern_id: pl.Expr) -> pl.Expr: ...
def pattern_key(pattern_id: str | pl.Expr) -> str | pl.Expr:
    """The deterministic Engramia key of a pattern (a string, or an expression over a column)."""
    if isinstance(pattern_id, pl.Expr):
        return pl.lit(KEY_PREFIX) + pattern_id
    return f"{KEY_PREFIX}{pattern_id}"


def kept_patterns(
    layout: DataLayout,
    scope: str,
    ordered: bool = True,
    reduced: Mapping[str, pl.Expr] | None = None,
) -> pl.LazyFrame | None:
    """The scope's kept patterns with text, score and provenance, ready to become records, by id
    (``ordered``; a check that reads every row in any order saves the sort, which moves every text: 4.1-4.9
    s against 2.3 s for a scope's kept patterns at 10M messages).

    ``reduced`` names columns computed from each paired pattern before it meets its score, which then
    stand in for the pattern's own columns (``thread_id`` is always kept): a check that needs only a
    measure of the texts never holds the texts themselves (a scope's quality check at 10M messages
    needed ~1 GB for them).

    Every kept row of the scored table is here: one whose paired pattern is not current has no text
    (see :func:`without_text`), which the quality check names and the load refuses. Dropping it instead
    would make the load retract it from Engramia without a word."""
    scored = scan_scored(layout, scope)
    patterns = current(layout, "patterns", scope)
    if scored is None or patterns is None:
        # No paired table at all: the scoring check finds every scored row not current.
        return None
    paired = (
        patterns.drop("batch") if reduced is None else patterns.select("pattern_id", "thread_id", **reduced)
    )
    kept = (
        scored.filter(pl.col("kept"))
        .select("pattern_id", "eval_score", "score_source")
        .join(paired, on="pattern_id", how="left")
        .with_columns(key=pattern_key(pl.col("pattern_id")))
    )
    return kept.sort("pattern_id") if ordered else kept


def without_text(kept: pl.LazyFrame | pl.DataFrame) -> list[str]:
    """Ids of :func:`kept_patterns` rows whose paired pattern is missing (kept in the scored table, but
    no current pattern of the scope has that id)."""
    missing = kept.lazy().filter(pl.col("thread_id").is_null())
    return missing.select("pattern_id").collect()["pattern_id"].to_list()


def kept_scores(layout: DataLayout, scope: str) -> pl.DataFrame:
    """``pattern_id, eval_score`` of :func:`kept_patterns`: read from the scored table alone when it is
    in step with the scope's batches, which spares reading which batch holds each thread."""
    scored = scan_scored(layout, scope)
    if scored is not None and scored_in_step(layout, scope):
        return scored.filter(pl.col("kept")).select("pattern_id", "eval_score").collect()
    kept = kept_patterns(layout, scope)
    return (
        # A scored table that lags the pairing names patterns paired again since: the current ones count.
        kept.filter(pl.col("thread_id").is_not_null()).select("pattern_id", "eval_score").collect()
        if kept is not None
        else pl.DataFrame(schema={"pattern_id": pl.String, "eval_score": pl.Float64})
    )


def kept_ids(layout: DataLayout, scope: str) -> pl.DataFrame:
    """The ids of :func:`kept_patterns` (see :func:`kept_scores`)."""
    return kept_scores(layout, scope).select("pattern_id")


def design(row: dict[str, Any], tenant_id: str, project_id: str) -> dict[str, Any]:
    return {
        "code": row["code"],
        "classification": "internal",
        "source": SOURCE,
        "pipeline": PIPELINE,
        "pattern_id": row["pattern_id"],
        "thread_id": row["thread_id"],
        "assistant_id": row["assistant_id"],
        "user_message_ids": list(row["user_message_ids"]),
        "assistant_message_ids": list(row["assistant_message_ids"]),
        "tenant_id": tenant_id,
        "project_id": project_id,
        "task_truncated": bool(row["task_truncated"]),
        "code_truncated": bool(row["code_truncated"]),
        "score_source": row["score_source"],
    }


def import_record(row: dict[str, Any], tenant_id: str, project_id: str) -> dict[str, Any]:
    return {
        "version": EXPORT_VERSION,
        "key": pattern_key(row["pattern_id"]),
        "data": {
            "task": row["task"],
            "design": design(row, tenant_id, project_id),
            "success_score": float(row["eval_score"]),
            "reuse_count": 0,
            "timestamp": row["created_at"].timestamp(),
        },
    }


def learn_payload(row: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/learn`` body; ``run_id`` carries the pattern id so server logs point back here."""
    return {
        "task": row["task"],
        "code": row["code"],
        "eval_score": float(row["eval_score"]),
        "run_id": row["pattern_id"],
        "classification": "internal",
        "source": SOURCE,
    }


def iter_rows(frame: pl.LazyFrame | pl.DataFrame, batch_rows: int = 5_000) -> Iterator[list[dict[str, Any]]]:
    """Rows in batches, so a large scope never sits in Python objects all at once."""
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    for start in range(0, df.height, batch_rows):
        yield df.slice(start, batch_rows).to_dicts()
