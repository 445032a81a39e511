"""Incremental near-duplicate removal (DedupCache) equals a full recompute, whatever changes between
calls: patterns added, gone, rescored or grown, options changed, hash collisions, very long tasks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from pipelines.scoring.near_duplicates import near_duplicates
from pipelines.scoring.near_duplicates import stored as stored_sets
from pipelines.scoring.near_duplicates.cache import DedupCache
from pipelines.scoring.near_duplicates.tokens import token_pairs
from tests.support.near_duplicates import SCHEMA

_WORDS = [
    *["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"],
    *["theta", "iota", "kappa", "lam", "mu", "nu", "xi"],
    "Ünï",
    "İx",
    "straße",
    "A\tb",
]


def _pattern(rng: random.Random, i: int, pool: dict) -> dict:
    if pool and rng.random() < 0.4:
        task = rng.choice(list(pool.values()))["task"]
    else:
        words = [rng.choice(_WORDS[: rng.randint(3, len(_WORDS))]) for _ in range(rng.randint(0, 12))]
        task = rng.choice([" ", "  ", "\n", " \x1f"]).join(words)
        task = task.upper() if rng.random() < 0.1 else task
    if task is not None and rng.random() < 0.3:
        task = f"{task} {rng.choice(_WORDS)}"
    return {
        "pattern_id": f"p{i:05d}",
        "task": None if rng.random() < 0.02 else task,
        "eval_score": rng.choice([5.0, 5.0, 3.0, 7.0, float("nan")]),
        "created_at": datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 50)),
    }


@pytest.mark.parametrize("seed", range(40))
def test_cached_near_duplicates_equal_a_full_recompute(tmp_path, seed):
    rng = random.Random(seed)
    threshold = rng.choice([0.92, 0.5, 0.75, 1.0, 0.3])
    counter = iter(range(10**6))
    pool: dict[int, dict] = {}
    for _ in range(rng.randint(5, 80)):
        i = next(counter)
        pool[i] = _pattern(rng, i, pool)
    cache = DedupCache(tmp_path / "cache")
    for step in range(6):
        frame = pl.DataFrame(list(pool.values()), schema=SCHEMA)
        context = "ctx" if step < 4 else "new options"  # a context change starts afresh
        if seed % 2:
            # Tasks read on demand from a Parquet file in another order, as score_scope does.
            frame.select("pattern_id", "task").sample(fraction=1.0, shuffle=True, seed=step).write_parquet(
                tmp_path / "tasks.parquet"
            )
            tasks = pl.scan_parquet(tmp_path / "tasks.parquet")
            decided = cache.near_duplicates(frame.drop("task"), threshold, context, tasks=tasks)
        else:
            decided = cache.near_duplicates(frame, threshold, context)
        assert decided.equals(near_duplicates(frame, threshold)), step
        for _ in range(rng.randint(0, 10)):
            i = next(counter)
            pool[i] = _pattern(rng, i, pool)
        for key in rng.sample(list(pool), min(len(pool) - 1, rng.randint(0, 5))):
            del pool[key]
        for key in rng.sample(list(pool), min(len(pool), rng.randint(0, 3))):
            pool[key]["eval_score"] = rng.choice([1.0, 9.0, 5.0])
        for key in rng.sample(list(pool), min(len(pool), rng.randint(0, 2))):
            # A turn that grows: its pattern goes, a new id comes with a longer task.
            old, i = pool.pop(key), next(counter)
            pool[i] = {**old, "pattern_id": f"p{i:05d}", "task": f"{old['task'] or ''} {rng.choice(_WORDS)}"}


def test_cache_appends_sets_keeps_gone_rows_and_compacts(tmp_path):
    rng = random.Random(7)
    pool = {i: _pattern(rng, i, {}) for i in range(40)}
    folder = tmp_path / "cache"
    cache = DedupCache(folder)

    def run() -> pl.DataFrame:
        frame = pl.DataFrame(list(pool.values()), schema=SCHEMA)
        decided = cache.near_duplicates(frame, 0.75, "c")
        assert decided.equals(near_duplicates(frame, 0.75))
        return pl.read_parquet(folder / "state.parquet")

    state = run()
    stored = (folder / "ranks.i32").read_bytes()
    assert state.height == 40 and state["live"].all()
    assert len(stored) == 4 * state["size"].sum()

    for i in range(40, 45):
        pool[i] = _pattern(rng, i, pool)
    state = run()
    ranks = (folder / "ranks.i32").read_bytes()
    assert ranks.startswith(stored) and len(ranks) == 4 * state["size"].sum()  # appended, not rewritten
    assert state.height == 45 and state["live"].all()

    removed = {key: pool.pop(key) for key in (3, 7, 11)}
    state = run()
    assert (folder / "ranks.i32").read_bytes() == ranks  # a pattern gone keeps its set...
    assert state.height == 45 and state.filter(~pl.col("live"))["pattern_id"].sort().to_list() == [
        "p00003",
        "p00007",
        "p00011",
    ]
    pool[7] = removed[7]  # ...and one that comes back gets a row of its own
    state = run()
    assert state.height == 46 and state.filter(pl.col("pattern_id") == "p00007")["live"].to_list() == [
        False,
        True,
    ]

    for key in range(12, 24):
        del pool[key]
    state = run()  # more than a quarter gone: both files are written afresh without them
    assert state.height == len(pool) and state["live"].all()
    assert (folder / "ranks.i32").stat().st_size == 4 * state["size"].sum()

    # A set file cut short (a crash while appending) is no cache at all: the next call starts afresh.
    with open(folder / "ranks.i32", "r+b") as f:
        f.truncate(8)
    assert not cache.holds(0.75, "c")
    pool[99] = _pattern(rng, 99, pool)
    run()
    assert cache.holds(0.75, "c")


def test_cache_grouping_survives_hash_collisions(tmp_path, monkeypatch):
    # Every set hashes to the same value: grouping must fall back on comparing the sets themselves.
    monkeypatch.setattr(stored_sets, "_MIX", (np.uint64(0), np.uint64(0)))
    rng = random.Random(1)
    pool = {i: _pattern(rng, i, {}) for i in range(60)}
    cache = DedupCache(tmp_path / "cache")
    frame = pl.DataFrame(list(pool.values()), schema=SCHEMA)
    cache.near_duplicates(frame, 0.75, "c")
    more = pl.DataFrame([_pattern(rng, i, pool) for i in range(60, 90)], schema=SCHEMA)
    both = pl.concat([frame, more])
    assert cache.near_duplicates(both, 0.75, "c").equals(near_duplicates(both, 0.75))


def test_tokens_match_python_split_on_ascii_whitespace():
    tasks = pl.Series(["A\tb\nc\x0bd\x0ce\rf\x1cg\x1dh\x1ei\x1fj k  l", "", None, "Ünï İx", "x\u00a0y"])
    rows, codes, tokens = token_pairs(tasks)
    got: dict[int, set[str]] = {}
    for row, code in zip(rows.tolist(), codes.tolist(), strict=True):
        got.setdefault(row, set()).add(tokens[code])
    for row, task in enumerate(tasks.to_list()):
        assert got.get(row, set()) == set((task or "").lower().split()), task


def test_cache_is_exact_for_very_long_tasks(tmp_path):
    # Thousands of tokens per task: size bounds must not overflow 64-bit arithmetic.
    words = [f"w{i}" for i in range(6000)]
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        {"pattern_id": "a", "task": " ".join(words[:3000]), "eval_score": 5.0, "created_at": base},
        {"pattern_id": "b", "task": " ".join(words[1:3001]), "eval_score": 5.0, "created_at": base},
        {"pattern_id": "c", "task": " ".join(words[3000:]), "eval_score": 5.0, "created_at": base},
    ]
    cache = DedupCache(tmp_path / "cache")
    first = pl.DataFrame(rows[:1] + rows[2:], schema=SCHEMA)
    cache.near_duplicates(first, 0.92, "c")
    both = pl.DataFrame(rows, schema=SCHEMA)
    got = cache.near_duplicates(both, 0.92, "c")
    assert got.equals(near_duplicates(both, 0.92))
    assert got.filter(pl.col("pattern_id") == "b")["duplicate_of"].item() == "a"
