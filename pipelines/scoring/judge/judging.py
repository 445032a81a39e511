"""Scores from the LLM judge for a set of patterns: cached answers first, then as many new questions as
the limits allow, every answer (or error) recorded in the cache as it comes.

Invariants: a pattern with a cached answer for (model, prompt version) is never asked again; the limits
(``max_patterns``, ``max_cost``) are never passed: patterns are admitted in id order while the estimate
of what is spent so far plus the next request stays within them, and admission stops for good at the
first that would not fit (:attr:`JudgeStats.stopped` says why, also when the judge halted: see
:class:`~pipelines.scoring.judge.client.Judge`). Patterns not answered (an error, a limit, a halt, a batch
still running) get no judge score and fall back to the next source.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import polars as pl

from pipelines.scoring.judge.batch import BatchRun
from pipelines.scoring.judge.cache import JudgeCache
from pipelines.scoring.judge.client import Answer, Judge, Request
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.judge.prompt import EST_ANSWER_TOKENS, PROMPT_VERSION, estimate_tokens

JUDGED_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "pattern_id": pl.String,
    "judge_score": pl.Float64,
    "judge_reason": pl.String,
}
# Answers are written to the cache in groups of this many, so a crash loses little.
_FLUSH_EVERY = 500


@dataclass
class JudgeStats:
    patterns: int = 0  # handed to the judge (no feedback, not gated)
    cached: int = 0  # answered from the cache: no request
    asked: int = 0  # sent this run
    answered: int = 0
    errors: int = 0
    skipped: int = 0  # not sent: a limit, or a batch still running
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    rate_limited: int = 0
    stopped: str = ""

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out


def requests_for(frame: pl.DataFrame) -> list[Request]:
    return [
        Request(p, t or "", c or "", estimate_tokens(t or "", c or ""))
        for p, t, c in frame.select("pattern_id", "task", "code").sort("pattern_id").iter_rows()
    ]


def estimated_cost(options: JudgeOptions, requests: list[Request]) -> tuple[int, int, float]:
    """Tokens in and out, and their price, for asking ``requests`` (before any is sent)."""
    tokens_in = sum(r.est_tokens_in for r in requests)
    tokens_out = EST_ANSWER_TOKENS * len(requests)
    return tokens_in, tokens_out, options.cost(tokens_in, tokens_out)


def uncached(frame: pl.DataFrame, options: JudgeOptions, cache: JudgeCache) -> pl.DataFrame:
    done = cache.answers(options.model, PROMPT_VERSION).select("pattern_id")
    return frame.join(done, on="pattern_id", how="anti")


class _Budget:
    """What may still be sent: counts and estimated cost of what is admitted, replaced by the real
    usage as answers arrive."""

    def __init__(self, options: JudgeOptions, stats: JudgeStats) -> None:
        self.options, self.stats = options, stats
        self.admitted = 0
        self.outstanding = 0.0  # estimated cost of requests sent but not answered yet

    def admit(self, request: Request) -> bool:
        o = self.options
        if self.stats.stopped:
            return False
        if o.max_patterns is not None and self.admitted + 1 > o.max_patterns:
            self.stats.stopped = f"--llm-max-patterns {o.max_patterns} reached"
            return False
        estimate = o.cost(request.est_tokens_in, EST_ANSWER_TOKENS)
        if o.max_cost is not None and self.stats.cost_usd + self.outstanding + estimate > o.max_cost:
            self.stats.stopped = f"--llm-max-cost {o.max_cost:g} USD would be exceeded"
            return False
        self.admitted += 1
        self.outstanding += estimate
        return True

    def settle(self, request_estimate: int, answer: Answer) -> None:
        self.outstanding = max(0.0, self.outstanding - self.options.cost(request_estimate, EST_ANSWER_TOKENS))


def judge_patterns(
    frame: pl.DataFrame,
    options: JudgeOptions,
    cache: JudgeCache,
    judge: Judge | None = None,
    batch: BatchRun | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[pl.DataFrame, JudgeStats]:
    """``pattern_id, judge_score, judge_reason`` for the patterns of ``frame`` (``pattern_id, task,
    code``) the judge answered, from the cache or asked now; and what it took."""
    stats = JudgeStats(patterns=frame.height)
    cached = cache.answers(options.model, PROMPT_VERSION).join(frame.select("pattern_id"), on="pattern_id")
    stats.cached = cached.height
    todo = requests_for(frame.join(cached.select("pattern_id"), on="pattern_id", how="anti"))
    if not todo:
        return cached, stats
    budget = _Budget(options, stats)
    estimates = {r.pattern_id: r.est_tokens_in for r in todo}
    new: list[Answer] = []
    buffer: list[dict] = []

    def record(answer: Answer, via: str) -> None:
        new.append(answer)
        stats.tokens_in += answer.tokens_in
        stats.tokens_out += answer.tokens_out
        stats.cost_usd += options.cost(answer.tokens_in, answer.tokens_out)
        stats.rate_limited += answer.rate_limited
        if answer.error is None:
            stats.answered += 1
        else:
            stats.errors += 1
        buffer.append(_cache_row(answer, options.model, via))
        if len(buffer) >= _FLUSH_EVERY:
            cache.append(buffer)
            buffer.clear()

    try:
        if options.batch:
            runner = batch if batch is not None else BatchRun(options, cache.folder, log=log)
            admitted = [r for r in todo if budget.admit(r)]
            outcome = runner.run(admitted)
            stats.asked = len(outcome.answers)
            for answer in outcome.answers:
                record(answer, "batch")
            if outcome.pending:
                stats.stopped = stats.stopped or (
                    f"batch {outcome.batch_id} still {outcome.status}: the next run collects it"
                )
            else:
                cache.append(buffer)
                buffer.clear()
                runner.clear()
        else:
            asker = judge if judge is not None else Judge(options)
            for answer in asker.ask_all(todo, keep_going=budget.admit):
                budget.settle(estimates[answer.pattern_id], answer)
                record(answer, "chat")
            stats.asked = len(new)
            stats.stopped = stats.stopped or asker.halted or ""
    finally:
        cache.append(buffer)
    stats.skipped = len(todo) - stats.answered - stats.errors
    if stats.stopped and log is not None:
        log(f"judge stopped: {stats.stopped}; {stats.skipped} patterns fall back to the next source")
    answered = pl.DataFrame(
        [(a.pattern_id, a.score, a.reason) for a in new if a.error is None],
        schema=JUDGED_SCHEMA,
        orient="row",
    )
    return pl.concat([cached.cast(JUDGED_SCHEMA), answered]), stats  # type: ignore[arg-type]


def _cache_row(answer: Answer, model: str, via: str) -> dict:
    return {
        "pattern_id": answer.pattern_id,
        "model": model,
        "prompt_version": PROMPT_VERSION,
        "score": answer.score,
        "reason": answer.reason,
        "error": answer.error,
        "tokens_in": answer.tokens_in,
        "tokens_out": answer.tokens_out,
        "via": via,
        "at": datetime.fromtimestamp(time.time(), UTC),
    }
