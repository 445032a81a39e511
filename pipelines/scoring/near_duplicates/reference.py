"""Brute-force reference for near-duplicate removal (tests and benchmarks only: O(n^2) pure Python).

Invariant: this is the executable form of the contract, kept boring on purpose; the exact engine
(:mod:`.exact`) and the incremental cache (:mod:`.cache`) must match it exactly.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from pipelines.scoring.near_duplicates.frames import JACCARD_THRESHOLD, OUTPUT_SCHEMA, collect_patterns


def _reference_priority_key(row: dict[str, Any]) -> tuple[tuple, tuple, str]:
    score, created = row["eval_score"], row["created_at"]
    if score is None:
        score_key: tuple = (2, 0.0)
    elif math.isnan(score):
        score_key = (0, 0.0)
    else:
        score_key = (1, -score)
    if created is None:
        created_key: tuple = (1, 0)
    else:
        epoch = datetime(1970, 1, 1, tzinfo=created.tzinfo)
        created_key = (0, -((created - epoch) // timedelta(microseconds=1)))
    return score_key, created_key, row["pattern_id"]


def near_duplicates_reference(patterns: pl.DataFrame, threshold: float = JACCARD_THRESHOLD) -> pl.DataFrame:
    """Brute-force reference for ``near_duplicates``.

    Engramia's ``jaccard`` on every (kept, candidate) pair, walked greedily in priority order.
    """
    threshold = float(threshold)  # as near_duplicates does
    df = collect_patterns(patterns)
    rows = df.to_dicts()
    order = sorted(range(len(rows)), key=lambda i: _reference_priority_key(rows[i]))
    word_sets = [set((r["task"] or "").lower().split()) for r in rows]

    def jaccard(a: set[str], b: set[str]) -> float:
        if not a or not b:
            return 0.0
        return len(a & b) / len(a | b)

    kept: list[int] = []
    result: dict[int, tuple[bool, str | None, float | None]] = {}
    for i in order:
        for k in kept:
            s = jaccard(word_sets[k], word_sets[i])
            if s >= threshold:
                result[i] = (False, rows[k]["pattern_id"], s)
                break
        else:
            kept.append(i)
            result[i] = (True, None, None)
    return pl.DataFrame(
        {
            "pattern_id": [r["pattern_id"] for r in rows],
            "kept": [result[i][0] for i in range(len(rows))],
            "duplicate_of": [result[i][1] for i in range(len(rows))],
            "similarity": [result[i][2] for i in range(len(rows))],
        },
        schema=OUTPUT_SCHEMA,
    )
