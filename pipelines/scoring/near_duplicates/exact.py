"""The exact near-duplicate engine: word-Jaccard removal within one scope, fast enough for a million tasks.

Invariant (see ``near_duplicates``): results are identical to the brute-force greedy reference
(:mod:`.reference`) on every input, including the floating-point boundary of the threshold. Rows are
sorted once into keep-rule priority order and from then on identified by their position in it; the
result always comes back in input order.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import polars as pl

from pipelines.scoring.near_duplicates.frames import JACCARD_THRESHOLD, collect_patterns, empty_result
from pipelines.scoring.near_duplicates.keep import expand_members, keep_rule
from pipelines.scoring.near_duplicates.sets import (
    KeyedSets,
    collapse_identical,
    intersections,
    keyed_from_csr,
    rank_tokens,
    signatures,
)


def _priority_sorted(df: pl.DataFrame) -> pl.DataFrame:
    """Rows in keep-rule priority order, with their input position in ``_input_pos``.

    NaN scores sort above +inf and nulls go last (Polars' convention), -0.0 ties with 0.0. Sorting by id
    first and then stably by the numeric keys measured faster than one three-key sort (row encoding of
    the strings), with the same result since ids are unique.
    """
    return (
        df.with_row_index("_input_pos")
        .sort("pattern_id")
        .sort(["eval_score", "created_at"], descending=True, nulls_last=True, maintain_order=True)
    )


class TokenSets(NamedTuple):
    """Token sets as distinct increasing ranks in CSR layout: ``ranks[offsets[k]:offsets[k + 1]]`` is the
    set of input row ``rows[k]`` (the sets come in the keep rule's priority order, which spares copying
    them into input order); ``vocabulary`` maps each token to its rank."""

    offsets: np.ndarray
    ranks: np.ndarray
    rows: np.ndarray
    vocabulary: pl.DataFrame


def near_duplicates_with_tokens(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float
) -> tuple[pl.DataFrame, TokenSets]:
    """:func:`near_duplicates`, and the token sets it computed on the way (for a caller that keeps them,
    such as the incremental cache, which would otherwise tokenise every task a second time).

    Needs ``0 < threshold <= 1``: only then is every task tokenised.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    result, tokens = _near_duplicates(patterns, threshold, keep_tokens=True)
    if tokens is None:  # no rows: nothing was tokenised
        empty = np.zeros(0, dtype=np.int64)
        vocabulary = pl.DataFrame(schema={"token": pl.String, "rank": pl.Int64})
        return result, TokenSets(np.zeros(1, dtype=np.int64), empty, empty, vocabulary)
    return result, tokens


def near_duplicates(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float = JACCARD_THRESHOLD
) -> pl.DataFrame:
    """Flag near-duplicate tasks within one scope, keeping the best pattern of each near-duplicate group.

    Input columns (others ignored): pattern_id (String, unique), task (String), eval_score (Float64),
    created_at (Datetime("us", "UTC")).
    Returns one row per input pattern, in input order, with columns:
      pattern_id (String), kept (Boolean), duplicate_of (String, null when kept),
      similarity (Float64, the Jaccard with duplicate_of; null when kept).

    Similarity is Engramia's word Jaccard on ``set(task.lower().split())`` (0.0 if either set is empty);
    two tasks are near-duplicates when similarity >= threshold. Walking patterns by eval_score desc,
    created_at desc, pattern_id asc, a pattern is dropped when an already kept pattern is a near-duplicate
    (``duplicate_of`` = the earliest such kept pattern), otherwise kept. The result equals
    ``near_duplicates_reference`` exactly. A null task counts as empty; a NaN score sorts above every
    number and null scores/timestamps sort last.
    """
    return _near_duplicates(patterns, threshold)[0]


def _near_duplicates(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float, keep_tokens: bool = False
) -> tuple[pl.DataFrame, TokenSets | None]:
    """:func:`near_duplicates`, with ``keep_tokens`` also the token sets (None when nothing was
    tokenised)."""
    df = collect_patterns(patterns)
    if df.height == 0:
        return empty_result(), None
    df = _priority_sorted(df)
    tokens = None
    ts = None
    if float(threshold) <= 1.0:  # otherwise (t > 1 or NaN) nothing is ever similar enough: all kept
        ts, vocabulary = rank_tokens(df["task"], with_vocabulary=keep_tokens)
        if vocabulary is not None:
            rows = df["_input_pos"].to_numpy().astype(np.int64)
            tokens = TokenSets(ts.offsets, ts.ranks, rows, vocabulary)
    return _decide(df, ts, threshold), tokens


def near_duplicates_of_sets(
    patterns: pl.DataFrame, offsets: np.ndarray, ranks: np.ndarray, threshold: float
) -> pl.DataFrame:
    """:func:`near_duplicates` for patterns whose token sets are already known: row i's set is
    ``ranks[offsets[i]:offsets[i + 1]]``, distinct and increasing, in any fixed token order (the result
    does not depend on the order; rarer tokens first only makes it faster). ``patterns`` needs no task."""
    missing = [c for c in ("pattern_id", "eval_score", "created_at") if c not in patterns.columns]
    if missing:
        raise ValueError(f"patterns is missing column(s): {missing}")
    if patterns.height == 0:
        return empty_result()
    df = _priority_sorted(
        patterns.select(
            pl.col("pattern_id").cast(pl.String), pl.col("eval_score").cast(pl.Float64), pl.col("created_at")
        )
    )
    order = df["_input_pos"].to_numpy().astype(np.int64)
    ts = keyed_from_csr(offsets, ranks, order)
    return _decide(df, ts if float(threshold) <= 1.0 else None, threshold)


def _decide(df: pl.DataFrame, ts: KeyedSets | None, threshold: float) -> pl.DataFrame:
    """The keep rule over rows in priority order (``_priority_sorted``) with their token sets ``ts``
    (None when the threshold is above 1 or NaN: nothing is similar enough); the result in input order."""
    n = df.height
    t = float(threshold)
    dup = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan)
    if ts is not None:
        sizes = ts.sizes
        if t <= 0.0:
            # Every pair qualifies, even empty tasks (similarity 0.0 >= t): the first row absorbs all.
            others = np.arange(1, n, dtype=np.int64)
            first = np.zeros(n - 1, dtype=np.int64)
            inter = intersections(first, others, ts)
            union = sizes[0] + sizes[others] - inter
            dup[1:] = 0
            with np.errstate(invalid="ignore", divide="ignore"):
                sim[1:] = np.where((sizes[0] > 0) & (sizes[others] > 0), inter / union, 0.0)
        else:
            sig = signatures(ts)
            reps, members, member_rep = collapse_identical(ts, sig)
            # Filters use the largest double below t: any i/u whose rounded quotient is >= t exceeds it.
            c = Fraction(math.nextafter(t, -math.inf))
            dup, sim = keep_rule(reps, ts, sig, c, t)
            expand_members(dup, sim, members, member_rep)

    ids = df["pattern_id"]
    dropped = dup >= 0
    out = pl.DataFrame(
        {
            "_input_pos": df["_input_pos"],
            "pattern_id": ids,
            "kept": ~dropped,
            "duplicate_of": ids.gather(np.where(dropped, dup, 0)),
            "similarity": sim,
        }
    ).with_columns(
        pl.when(pl.col("kept")).then(None).otherwise(pl.col("duplicate_of")).alias("duplicate_of"),
        pl.when(pl.col("kept")).then(None).otherwise(pl.col("similarity")).alias("similarity"),
    )
    return out.sort("_input_pos").drop("_input_pos")
