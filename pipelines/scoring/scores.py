"""Patterns -> scored patterns: an eval_score per pattern, then near-duplicate removal within the scope.

Strategies: ``neutral`` gives every pattern 5.0 (the Assistants API kept no quality signal);
``feedback`` reads the user's own feedback export (see :mod:`pipelines.scoring.feedback`) keyed by
``message_id`` or ``thread_id``. Message-level feedback beats thread-level feedback. Patterns without
feedback take the LLM judge's score, else the implicit signals', else stay neutral, and the curation
gates filter what is not worth remembering before near-duplicates are decided (:mod:`.sources`).

Invariant: the scored table always equals scoring the scope's current patterns from scratch, whatever
order dumps arrived in and however it was brought up to date. Near-duplicates are removed over the whole
scope every run, through the per-scope cache (:class:`~pipelines.scoring.near_duplicates.DedupCache`),
which decides again only what changed (tests/scoring/test_cache_recompute.py checks it against a full
recompute); a run that changed nothing for the scope keeps its table as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from pipelines.pairing.batches import Repaired, ScopeState, current, repaired_since
from pipelines.scoring.feedback import NEUTRAL_SCORE, ScoreSource, read_feedback, unmatched_rows
from pipelines.scoring.near_duplicates.cache import DedupCache
from pipelines.scoring.options import ScoreStrategy, ScoringOptions
from pipelines.scoring.scored import FILTERED_COLUMNS, filtered_file, made, marker, scored_file, write_marker
from pipelines.scoring.signals import SignalRules
from pipelines.scoring.sources import SOURCE_COLUMNS, SourceStats, with_sources
from pipelines.tables import INTERMEDIATE_COMPRESSION, DataLayout, parquet_files, write_parquet


def score(patterns: pl.LazyFrame, feedback: pl.DataFrame | None) -> pl.LazyFrame:
    """``pattern_id, eval_score, score_source`` for every pattern."""
    base = patterns.select("pattern_id", "thread_id", "user_message_ids", "assistant_message_ids")
    if feedback is None:
        return base.select(
            "pattern_id", eval_score=pl.lit(NEUTRAL_SCORE), score_source=pl.lit(ScoreSource.NEUTRAL.value)
        )
    by_message = (
        base.select("pattern_id", key=pl.concat_list("user_message_ids", "assistant_message_ids"))
        .explode("key")
        .join(feedback.lazy().filter(pl.col("key_kind") == "message_id"), on="key", how="inner")
        .group_by("pattern_id")
        .agg(message_score=pl.col("score").mean())
    )
    by_thread = (
        feedback.lazy()
        .filter(pl.col("key_kind") == "thread_id")
        .select(thread_id="key", thread_score="score")
    )
    return (
        base.join(by_message, on="pattern_id", how="left")
        .join(by_thread, on="thread_id", how="left")
        .select(
            "pattern_id",
            eval_score=pl.coalesce("message_score", "thread_score", pl.lit(NEUTRAL_SCORE)),
            score_source=pl.when(pl.col("message_score").is_not_null())
            .then(pl.lit(ScoreSource.MESSAGE.value))
            .when(pl.col("thread_score").is_not_null())
            .then(pl.lit(ScoreSource.THREAD.value))
            .otherwise(pl.lit(ScoreSource.NEUTRAL.value)),
        )
    )


@dataclass
class ScoringResult:
    patterns: int
    kept: int
    duplicates: int
    from_feedback: int
    # Feedback rows whose keys name no message or thread of the data folder (any scope): they score
    # nothing, which usually means an export of another system or of threads never backfilled.
    feedback_unmatched: int = 0
    # Caught by a curation gate (never near-duplicates, never loaded): patterns = kept + duplicates +
    # filtered.
    filtered: int = 0
    filtered_by: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    # Patterns each implicit-signal rule touched (among the patterns scored this time).
    signals: dict[str, int] = field(default_factory=dict)
    # The judge's work when the table was made (JudgeStats.as_dict()); a run that keeps the table as
    # it is asks nothing, and says so with asked = 0.
    judge: dict[str, object] = field(default_factory=dict)


def _scoring_inputs(
    state: ScopeState, options: ScoringOptions, feedback: pl.DataFrame | None
) -> dict[str, Any]:
    """Everything the scored table depends on: the patterns (a new batch is the only way they change),
    the options and the feedback's content."""
    fingerprint = SignalRules.load(options.signal_rules).fingerprint if options.signals else None
    return {
        "version": 2,
        "sources": options.describe_sources(fingerprint),
        "batches": state.batches,
        "pairing": state.pairing,
        "strategy": options.strategy.value,
        "threshold": options.threshold,
        "rating": [options.rating_min, options.rating_max],
        "feedback": None if feedback is None else _fingerprint(feedback.select("key_kind", "key", "score")),
    }


def _fingerprint(feedback: pl.DataFrame) -> list[Any]:
    return [feedback.height, int(feedback.hash_rows(seed=0).sum()), feedback.columns]


def _unmatched(layout: DataLayout, feedback: pl.DataFrame | None) -> int:
    """Feedback rows that name nothing in the data folder. Every scope is looked at (a file covers all
    of them), reading only the two key columns of the messages."""
    if feedback is None:
        return 0
    files = sorted(layout.staged.glob("messages/scope=*/*.parquet"))
    messages = (
        pl.scan_parquet(files).select("message_id", "thread_id")
        if files
        else pl.LazyFrame(schema={"message_id": pl.String, "thread_id": pl.String})
    )
    return unmatched_rows(feedback, messages)


def score_scope(
    layout: DataLayout,
    scope: str,
    options: ScoringOptions,
    feedback: pl.DataFrame | None = None,
    log: Callable[[str], None] | None = None,
) -> ScoringResult:
    """Rewrite ``staged/scored/scope=<key>/scored.parquet`` for the scope's current patterns.

    A scope whose patterns, options and feedback are those of the last run keeps its table as it is
    (``scored.json`` beside it records what it was made from): a run that brought nothing new for the
    scope costs it one small file read. When new batches are all that changed, the table is brought up
    to date from them: the rows of the threads they re-paired are replaced, and only new patterns are
    scored, read and tokenised. Rows are in ``current()`` order as the table was built up, not sorted.
    With feedback, the result also counts the feedback rows that match nothing in the data folder.
    A table made while the judge failed for some patterns or stopped at a limit is made again (only
    the patterns without a cached answer are asked).
    """
    if options.strategy is ScoreStrategy.FEEDBACK and feedback is None:
        feedback = read_feedback(options)
    feedback = feedback if options.strategy is ScoreStrategy.FEEDBACK else None
    result = _score_scope(layout, scope, options, feedback, log)
    # Counted apart from the table's record: messages staged in other scopes change what matches.
    result.feedback_unmatched = _unmatched(layout, feedback)
    return result


def _score_scope(
    layout: DataLayout,
    scope: str,
    options: ScoringOptions,
    feedback: pl.DataFrame | None,
    log: Callable[[str], None] | None,
) -> ScoringResult:
    patterns = current(layout, "patterns", scope)
    target = scored_file(layout, scope)
    if patterns is None:
        return ScoringResult(0, 0, 0, 0)
    state = ScopeState.load(layout, scope)
    inputs = _scoring_inputs(state, options, feedback)
    record = made(target)
    if record is not None and record.get("inputs") == inputs and not _judge_unfinished(record):
        kept_as_is = ScoringResult(**record["result"])
        if judge := kept_as_is.judge:
            # Nothing asked this time: every answer the table holds came from the cache.
            cached = int(judge.get("cached", 0)) + int(judge.get("answered", 0))  # type: ignore[call-overload]
            zero = {"asked": 0, "answered": 0, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0}
            kept_as_is.judge = {**judge, **zero, "cached": cached}
        return kept_as_is
    marker(target).unlink(missing_ok=True)
    # A task changes only when the pairing options change or its thread is paired again (see DedupCache).
    # With a cache in force only the patterns it has to decide need theirs, read on demand; without, all
    # are needed.
    context = state.pairing
    cache = DedupCache(layout.dedup_cache(scope))
    cached = cache.holds(options.threshold, context)
    # Patterns the judge left unanswered are asked again only on the whole-table path: bringing the
    # table up to date scores just the new batches' rows.
    unfinished = record is not None and _judge_unfinished(record)
    since = _made_at(record, inputs) if cached and not unfinished else None
    repaired = repaired_since(layout, "patterns", scope, since) if since is not None else None
    folders = (layout.judge_cache(scope), layout.messages(scope))
    if repaired is not None:
        narrow, tasks, stats = _brought_up_to_date(target, repaired, feedback, options, folders, log)
    else:
        narrow = (
            patterns.select("pattern_id", "thread_id", "created_at", *([] if cached else ["task"]))
            .join(score(patterns, feedback), on="pattern_id", how="left")
            .collect()
        )
        narrow, stats = with_sources(narrow, patterns, options, *folders, log=log)
        # The ids asked for are current, and a current id's row is in the latest batch holding it (an
        # older batch may hold the same id paired under other options): cheaper than ``current``'s join.
        tasks = (
            pl.scan_parquet(parquet_files(layout.patterns(scope)))
            .select("pattern_id", "task", "batch")
            .sort("batch", descending=True)
        )
    # Gated patterns take no part in near-duplicate removal: a greeting never wins over a real task.
    open_rows = narrow.filter(pl.col("filtered").is_null())
    brought = tasks if repaired is not None else None
    refresh = _repaired_ids(layout, scope, cache.batch(options.threshold, context), since, brought)
    decided = cache.near_duplicates(
        open_rows, options.threshold, context, tasks=tasks, batch=state.batches, refresh=refresh
    )
    scored = _with_outcomes(narrow.drop("task", strict=False), decided)
    write_parquet(scored, target, compression=INTERMEDIATE_COMPRESSION)
    write_parquet(
        scored.filter(pl.col("filtered").is_not_null()).select(FILTERED_COLUMNS),
        filtered_file(layout, scope),
    )
    result = _result(scored, stats)
    write_marker(target, inputs, asdict(result))
    return result


def _result(scored: pl.DataFrame, stats: SourceStats) -> ScoringResult:
    kept = int(scored["kept"].sum())
    filtered = int(scored["filtered"].is_not_null().sum())
    feedback = (ScoreSource.MESSAGE.value, ScoreSource.THREAD.value)
    return ScoringResult(
        patterns=scored.height,
        kept=kept,
        duplicates=scored.height - kept - filtered,
        from_feedback=int(scored["score_source"].is_in(feedback).sum()),
        filtered=filtered,
        filtered_by=_counts(scored["filtered"].drop_nulls()),
        by_source=_counts(scored["score_source"]),
        signals=stats.signals,
        judge=stats.judge.as_dict() if stats.judge.patterns else {},
    )


def _counts(values: pl.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in values.value_counts(sort=True).iter_rows()}


def _judge_unfinished(record: dict[str, Any]) -> bool:
    """Whether the judge left patterns unanswered (errors, a limit, a batch still running) when the
    table was made: they are asked again (the answered ones come from the cache)."""
    judge = record.get("result", {}).get("judge") or {}
    return bool(judge.get("errors") or judge.get("skipped"))


def _made_at(record: dict[str, Any] | None, inputs: dict[str, Any]) -> int | None:
    """The batch count a scored table was made at, when new batches are all that changed since."""
    if record is None:
        return None
    before = record.get("inputs", {})
    same = {k: v for k, v in before.items() if k != "batches"} == {
        k: v for k, v in inputs.items() if k != "batches"
    }
    batches = before.get("batches")
    return batches if same and isinstance(batches, int) and batches < inputs["batches"] else None


def _repaired_ids(
    layout: DataLayout, scope: str, cached_at: int | None, since: int | None, brought: pl.LazyFrame | None
) -> pl.Series | None:
    """Ids of the patterns paired again after the near-duplicate cache was written at batch ``cached_at``:
    a corrected message or an earlier exchange arriving as context changes a task under the same id.
    ``brought`` holds the rows the table was just brought up to date with since ``since``: when the cache
    was written at that batch too, they are those patterns, already read."""
    if cached_at is None:
        return None
    if brought is not None and cached_at == since:
        return brought.select("pattern_id").collect()["pattern_id"]
    repaired = repaired_since(layout, "patterns", scope, cached_at)
    if repaired is None:
        return None
    return repaired.rows.select("pattern_id").collect()["pattern_id"]


def _brought_up_to_date(
    target: Path,
    repaired: Repaired,
    feedback: pl.DataFrame | None,
    options: ScoringOptions,
    folders: tuple[Path, Path],
    log: Callable[[str], None] | None,
) -> tuple[pl.DataFrame, pl.LazyFrame, SourceStats]:
    """The scored table's rows for threads no new batch touched, plus the new batches' current rows,
    scored: the same rows as scoring ``current()`` whole (the options and feedback are unchanged, so
    an earlier row's score still holds), at the cost of the new rows. Returns that frame without
    outcomes, and the new rows' tasks (only new patterns need theirs)."""
    fresh = repaired.rows.select(
        "pattern_id", "thread_id", "created_at", "task", "code", "user_message_ids", "assistant_message_ids"
    ).collect()
    new = fresh.select("pattern_id", "thread_id", "created_at", "task").join(
        score(fresh.lazy(), feedback).collect(), on="pattern_id", how="left", maintain_order="left"
    )
    new, stats = with_sources(new, fresh.lazy(), options, *folders, log=log)
    columns = ["pattern_id", "thread_id", "created_at", *SOURCE_COLUMNS]
    earlier = (
        pl.scan_parquet(target)
        .select(columns)
        .filter(~pl.col("thread_id").is_in(repaired.threads["thread_id"].implode()))
        .collect()
    )
    narrow = pl.concat([earlier, new.select(columns).cast(earlier.schema)])
    return narrow, new.select("pattern_id", "task").lazy(), stats


def _with_outcomes(frame: pl.DataFrame, decided: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the outcome columns of ``decided`` (matched by pattern id; when both are in the
    same order, as after an incremental update, the columns are simply put side by side)."""
    if decided["pattern_id"].equals(frame["pattern_id"]):
        return frame.hstack(decided.drop("pattern_id"))
    joined = frame.join(decided, on="pattern_id", how="left", maintain_order="left")
    return joined.with_columns(pl.col("kept").fill_null(False))
