"""Each pattern's score from the first source that has one, in a fixed precedence: explicit feedback >
LLM judge > implicit signals > neutral 5.0; then the curation gates.

Invariants: every pattern handed in comes out once with ``eval_score``, ``score_source``, a one-line
``score_reason`` and, when a gate caught it, ``filtered`` and ``filter_reason``. The judge is asked only
about patterns that no feedback scored and no text gate filtered (asking about "thanks!" would cost and
change nothing); a pattern the judge did not answer (error, limit) takes the next source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipelines.scoring.feedback import NEUTRAL_SCORE, ScoreSource
from pipelines.scoring.gates import FILTERED_SCHEMA, score_gate, text_gates
from pipelines.scoring.judge.cache import JudgeCache
from pipelines.scoring.judge.judging import JUDGED_SCHEMA, JudgeStats, judge_patterns
from pipelines.scoring.options import ScoringOptions
from pipelines.scoring.signals import (
    IMPLICIT_SCHEMA,
    SignalRules,
    implicit_scores,
    next_turns,
    scope_messages,
    signal_counts,
)

SOURCE_COLUMNS = ("eval_score", "score_source", "score_reason", "filtered", "filter_reason")
_FEEDBACK = (ScoreSource.MESSAGE.value, ScoreSource.THREAD.value)


@dataclass
class SourceStats:
    judge: JudgeStats = field(default_factory=JudgeStats)
    signals: dict[str, int] = field(default_factory=dict)


def base_reason() -> pl.Expr:
    source = pl.col("score_source")
    return (
        pl.when(source == ScoreSource.MESSAGE.value)
        .then(pl.lit("feedback on the pattern's messages"))
        .when(source == ScoreSource.THREAD.value)
        .then(pl.lit("feedback on the thread"))
        .otherwise(pl.lit("no signal: neutral"))
    )


def _texts_of(texts: pl.LazyFrame, rows: pl.DataFrame) -> pl.DataFrame:
    """The texts of the patterns in ``rows``, one row per pattern id."""
    chosen = texts.join(rows.select("pattern_id").lazy(), on="pattern_id", how="semi")
    return chosen.collect().unique("pattern_id", keep="first", maintain_order=True)


def with_sources(
    rows: pl.DataFrame,
    texts: pl.LazyFrame,
    options: ScoringOptions,
    judge_folder: Path,
    messages_folder: Path,
    log: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, SourceStats]:
    """``rows`` (``pattern_id, eval_score, score_source`` from feedback or neutral, plus any other
    columns, kept in order) with every column of :data:`SOURCE_COLUMNS`. ``texts`` holds ``pattern_id,
    thread_id, task, code, assistant_message_ids`` of at least these patterns."""
    stats = SourceStats()
    out = rows.with_columns(
        score_reason=base_reason(),
        filtered=pl.lit(None, dtype=pl.String),
        filter_reason=pl.lit(None, dtype=pl.String),
    )
    if not options.sources_active or rows.is_empty():
        return out, stats
    # Read for each use and only for the patterns it needs, never held whole: a scope's texts are most of
    # its size (~1 GB at 10M messages). A filter, not a semi join: the join held every text it passed
    # (the gates of a 10M-size scope peaked at 1.4 GB).
    text = texts.select("pattern_id", "thread_id", "task", "code", "assistant_message_ids").filter(
        pl.col("pattern_id").is_in(rows["pattern_id"].implode())
    )
    gated = text_gates(text, options.gates)
    open_rows = (
        out.select("pattern_id", "score_source")
        .join(gated.filter(pl.col("filtered").is_null()).select("pattern_id"), on="pattern_id", how="semi")
        .filter(~pl.col("score_source").is_in(_FEEDBACK))
    )
    # The open patterns' texts, read once for the judge and the signals alike.
    wanted = open_rows.height and (options.judge is not None or options.signals)
    candidates = _texts_of(text, open_rows) if wanted else None
    judged = pl.DataFrame(schema=JUDGED_SCHEMA)
    if options.judge is not None and candidates is not None:
        judged, stats.judge = judge_patterns(candidates, options.judge, JudgeCache(judge_folder), log=log)
    implicit = pl.DataFrame(schema=IMPLICIT_SCHEMA)
    messages = scope_messages(messages_folder) if options.signals else None
    if messages is not None and candidates is not None:
        rules = SignalRules.load(options.signal_rules)
        turns = next_turns(messages, candidates)
        implicit = implicit_scores(turns, rules)
        stats.signals = signal_counts(implicit)
    feedback = pl.col("score_source").is_in(_FEEDBACK)
    judge_ok = ~feedback & pl.col("judge_score").is_not_null()
    implicit_ok = ~feedback & pl.col("judge_score").is_null() & pl.col("implicit_score").is_not_null()
    combined = (
        out.drop("filtered", "filter_reason")
        .join(gated, on="pattern_id", how="left", maintain_order="left")
        .join(judged, on="pattern_id", how="left", maintain_order="left")
        .join(implicit.drop("signals"), on="pattern_id", how="left", maintain_order="left")
        .with_columns(
            eval_score=pl.when(judge_ok)
            .then("judge_score")
            .when(implicit_ok)
            .then("implicit_score")
            .when(feedback)
            .then("eval_score")
            .otherwise(pl.lit(NEUTRAL_SCORE)),
            score_source=pl.when(judge_ok)
            .then(pl.lit(ScoreSource.JUDGE.value))
            .when(implicit_ok)
            .then(pl.lit(ScoreSource.IMPLICIT.value))
            .otherwise("score_source"),
            score_reason=pl.when(judge_ok)
            .then(pl.lit("judge: ") + pl.col("judge_reason").fill_null(""))
            .when(implicit_ok)
            .then("implicit_reason")
            .otherwise("score_reason"),
        )
        .drop("judge_score", "judge_reason", "implicit_score", "implicit_reason")
    )
    return score_gate(combined, options.gates).cast(FILTERED_SCHEMA | {"eval_score": pl.Float64}), stats
