"""The incremental near-duplicate cache: a run after new patterns equals a full recompute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from pipelines.scoring.near_duplicates import near_duplicates
from pipelines.scoring.near_duplicates.cache import DedupCache

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SCHEMA = {
    "pattern_id": pl.String,
    "task": pl.String,
    "eval_score": pl.Float64,
    "created_at": pl.Datetime("us", "UTC"),
}


def _frame(tasks: list[str | None], first: int = 0) -> pl.DataFrame:
    rows = [(f"p{first + i:03d}", t, 5.0, T0 + timedelta(minutes=first + i)) for i, t in enumerate(tasks)]
    return pl.DataFrame(rows, schema=SCHEMA, orient="row")


def test_new_tasks_with_blank_runs_and_odd_whitespace_join_the_cache(tmp_path):
    cache = DedupCache(tmp_path / "cache")
    first = _frame(["reset my password now", "where is my invoice", "reset  my password now", ""])
    assert cache.near_duplicates(first, 0.75, "c").equals(near_duplicates(first, 0.75))
    more = _frame(
        ["", None, "  where is\tmy  invoice ", "brand new\x1cwords  here", "RESET my password now"], 10
    )
    both = pl.concat([first, more])
    assert cache.holds(0.75, "c")
    assert cache.near_duplicates(both, 0.75, "c").equals(near_duplicates(both, 0.75))
    vocab = pl.read_parquet(tmp_path / "cache" / "vocab.parquet")
    # Runs of spaces never make a token, and every token keeps one rank.
    assert "" not in vocab["token"].to_list()
    assert vocab["token"].is_unique().all() and vocab["rank"].is_unique().all()
    assert {"brand", "new", "words", "here"} <= set(vocab["token"].to_list())
