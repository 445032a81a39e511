"""What the judge would cost a run, before it runs: patterns to ask, tokens and price, within the limits.

Invariants: reads only (the staged patterns and the judge's cache). Staged patterns without a cached
answer are counted exactly, with their prompt tokens estimated from their text; patterns of dumps not
staged yet are estimated at the staged average (or :data:`DEFAULT_TOKENS_IN` when nothing is staged).
Both are upper bounds: patterns scored by feedback or caught by a text gate are not asked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from pipelines.pairing.batches import current
from pipelines.scoring.judge.cache import JudgeCache
from pipelines.scoring.judge.judging import requests_for
from pipelines.scoring.judge.options import JudgeOptions
from pipelines.scoring.judge.prompt import EST_ANSWER_TOKENS, PROMPT_VERSION, RUBRIC
from pipelines.tables import DataLayout

DEFAULT_TOKENS_IN = (len(RUBRIC) + 1200) // 4


@dataclass
class JudgePlan:
    model: str
    prompt_version: str
    cached: int
    to_ask: int  # within the limits
    over_limit: int  # patterns the limits would leave to the next source
    tokens_in: int
    tokens_out: int
    cost_usd: float
    estimated: bool  # includes patterns of dumps not staged yet

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def judge_plan(layout: DataLayout, scope: str, options: JudgeOptions, new_patterns: int) -> JudgePlan:
    patterns = current(layout, "patterns", scope)
    staged = (
        pl.DataFrame(schema={"pattern_id": pl.String, "task": pl.String, "code": pl.String})
        if patterns is None
        else patterns.select("pattern_id", "task", "code").collect()
    )
    done = JudgeCache(layout.judge_cache(scope)).answers(options.model, PROMPT_VERSION).select("pattern_id")
    todo = requests_for(staged.join(done, on="pattern_id", how="anti"))
    cached = staged.height - len(todo)
    average = sum(r.est_tokens_in for r in todo) // len(todo) if todo else DEFAULT_TOKENS_IN
    sizes = [r.est_tokens_in for r in todo] + [average] * new_patterns
    asked: list[int] = []
    spent = 0.0
    for tokens in sizes:
        price = options.cost(tokens, EST_ANSWER_TOKENS)
        if options.max_patterns is not None and len(asked) >= options.max_patterns:
            break
        if options.max_cost is not None and spent + price > options.max_cost:
            break
        asked.append(tokens)
        spent += price
    tokens_in, tokens_out = sum(asked), EST_ANSWER_TOKENS * len(asked)
    return JudgePlan(
        model=options.model,
        prompt_version=PROMPT_VERSION,
        cached=cached,
        to_ask=len(asked),
        over_limit=len(sizes) - len(asked),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=round(options.cost(tokens_in, tokens_out), 6),
        estimated=new_patterns > 0,
    )
