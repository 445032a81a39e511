"""Near-duplicate removal on concrete examples: the keep rule, the threshold boundary, tokenisation, odd
scores and inputs, many rows and forced multi-step paths; each checks the fast path against the
brute-force reference."""

from __future__ import annotations

import random
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from pipelines.scoring.near_duplicates import (
    JACCARD_THRESHOLD,
    arrays,
    frames,
    keep,
    near_duplicates,
    near_duplicates_reference,
    pairs,
    sets,
)
from tests.support.near_duplicates import SCHEMA, T0, frame


def outcome(df: pl.DataFrame, threshold: float = JACCARD_THRESHOLD) -> dict[str, tuple]:
    """pattern_id -> (kept, duplicate_of, similarity), after checking fast == reference."""
    fast = near_duplicates(df, threshold)
    ref = near_duplicates_reference(df, threshold)
    assert fast.schema == ref.schema == pl.Schema(frames.OUTPUT_SCHEMA)
    assert fast.to_dicts() == ref.to_dicts()
    return {r["pattern_id"]: (r["kept"], r["duplicate_of"], r["similarity"]) for r in fast.to_dicts()}


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_empty_input() -> None:
    out = near_duplicates(pl.DataFrame(schema=SCHEMA))
    assert out.height == 0
    assert out.schema == pl.Schema(frames.OUTPUT_SCHEMA)
    assert near_duplicates_reference(pl.DataFrame(schema=SCHEMA)).equals(out)


def test_exact_duplicates_keep_best_score() -> None:
    task = "Write a SQL query that lists all users created this week"
    res = outcome(
        frame(
            [
                ("low", task, 0.2, T0),
                ("best", task.upper(), 0.9, T0),
                ("mid", "  " + task.replace(" ", "\t") + "\n", 0.5, T0),
            ]
        )
    )
    assert res == {"best": (True, None, None), "mid": (False, "best", 1.0), "low": (False, "best", 1.0)}


def test_keep_rule_score_then_latest_then_smallest_id() -> None:
    task = "summarise the quarterly revenue report in three bullet points"
    res = outcome(
        frame(
            [
                ("b", task, 0.5, T0 + timedelta(days=1)),
                ("a", task, 0.5, T0 + timedelta(days=1)),  # ties with b: smallest id wins
                ("c", task, 0.5, T0),  # same score, older
                ("z", task, 0.4, T0 + timedelta(days=9)),  # latest but lower score
            ]
        )
    )
    assert res["a"] == (True, None, None)
    assert {k: v[1] for k, v in res.items() if k != "a"} == {"b": "a", "c": "a", "z": "a"}

    # Without the score tie, the latest timestamp wins over the smaller id.
    res = outcome(frame([("a", task, 0.5, T0), ("b", task, 0.5, T0 + timedelta(seconds=1))]))
    assert res == {"a": (False, "b", 1.0), "b": (True, None, None)}


def test_chain_only_compares_against_kept() -> None:
    base = words("w", 24)
    a = [*base, "x"]
    b = [*base, "x", "y"]  # J(a, b) = 25/26
    c = [*base, "y", "z"]  # J(b, c) = 25/27, J(a, c) = 24/27 < 0.92
    res = outcome(
        frame([("A", " ".join(a), 3.0, T0), ("B", " ".join(b), 2.0, T0), ("C", " ".join(c), 1.0, T0)])
    )
    assert res == {"A": (True, None, None), "B": (False, "A", 25 / 26), "C": (True, None, None)}


def test_duplicate_of_is_earliest_kept_not_most_similar() -> None:
    base = words("w", 50)
    k1 = [*base, "p1", "p2", "p3"]
    k2 = [*base, "q1", "q2", "q3"]  # J(k1, k2) = 50/56 < 0.92: both kept
    d = [*base, "p1", "p2", "q1", "q2", "q3"]  # J(d, k1) = 52/56, J(d, k2) = 53/55 (more similar)
    res = outcome(
        frame([("k1", " ".join(k1), 2.0, T0), ("k2", " ".join(k2), 1.0, T0), ("d", " ".join(d), 0.5, T0)])
    )
    assert res == {"k1": (True, None, None), "k2": (True, None, None), "d": (False, "k1", 52 / 56)}


def test_boundary_23_over_25_is_a_duplicate_and_22_over_24_is_not() -> None:
    base = words("w", 23)
    res = outcome(
        frame(
            [
                ("a", " ".join([*base, "x"]), 1.0, T0),
                ("b", " ".join([*base, "y"]), 0.5, T0),  # 23/25 == 0.92 exactly
            ]
        )
    )
    assert res["b"] == (False, "a", 23 / 25)
    assert 23 / 25 >= 0.92

    base = words("w", 22)
    res = outcome(frame([("a", " ".join([*base, "x"]), 1.0, T0), ("b", " ".join([*base, "y"]), 0.5, T0)]))
    assert res["b"] == (True, None, None)  # 22/24 = 0.9166...


def test_float_threshold_semantics_follow_python() -> None:
    # The reference compares the rounded quotient with the float threshold, not exact rationals:
    # 3/10 evaluates to 0.3, which is below 0.1 + 0.2 == 0.30000000000000004, but equal to 0.3.
    pair = frame([("x", "a b c x1 x2 x3 x4 x5 x6 x7", 1.0, T0), ("y", "a b c", 0.5, T0)])  # J = 3/10
    assert 3 / 10 < 0.1 + 0.2
    assert outcome(pair, 0.1 + 0.2)["y"] == (True, None, None)
    assert outcome(pair, 0.3)["y"] == (False, "x", 0.3)


@pytest.mark.parametrize(("inter", "union"), [(5, 6), (7, 9), (9, 11), (23, 25), (36, 39)])
def test_threshold_equal_to_a_rounded_quotient_accepts_it(inter: int, union: int) -> None:
    """Thresholds like 5/6 round *up* as floats (0.8333333333333334 > 5/6), yet ``5 / 6 >= t`` holds.

    So the filters must not use the decimal/rational value of the threshold as an exact bound.
    """
    t = inter / union
    base = words("w", inter)
    subset = frame(
        [("big", " ".join([*base, *words("x", union - inter)]), 1.0, T0), ("small", " ".join(base), 0.5, T0)]
    )
    assert outcome(subset, t)["small"] == (False, "big", t)
    extra = union - inter
    split = frame(
        [
            ("p", " ".join([*base, *words("x", extra // 2)]), 1.0, T0),
            ("q", " ".join([*base, *words("y", extra - extra // 2)]), 0.5, T0),
        ]
    )
    assert outcome(split, t)["q"] == (False, "p", t)


def test_ascii_control_separators_split_like_python() -> None:
    # \x0b \x0c \x1c-\x1f are whitespace for str.split() (but \x1c-\x1f are not regex \s).
    res = outcome(
        frame(
            [
                ("a", "Alpha beta gamma delta", 1.0, T0),
                ("b", "alpha\x1cbeta\x1dgamma\x1e\x1fDELTA\x0b\x0c", 0.5, T0),
                ("c", "alpha\x00beta gamma delta", 0.4, T0),  # NUL is not whitespace
            ]
        ),
        0.9,
    )
    assert res == {"a": (True, None, None), "b": (False, "a", 1.0), "c": (True, None, None)}


def test_empty_and_whitespace_tasks_are_always_kept() -> None:
    df = frame(
        [
            ("e1", "", 1.0, T0),
            ("e2", " \t\x1c\x1f\x85\u3000 ", 1.0, T0),
            ("e3", None, 1.0, T0),
            ("w", "word", 0.5, T0),
            ("w2", "WORD", 0.4, T0),
        ]
    )
    res = outcome(df)
    assert all(res[k] == (True, None, None) for k in ("e1", "e2", "e3", "w"))
    assert res["w2"] == (False, "w", 1.0)
    # Thresholds <= 0 make every pair (even empty ones, similarity 0.0) a near-duplicate.
    res = outcome(df, 0.0)
    assert [k for k, v in res.items() if v[0]] == ["e1"]
    assert res["w"] == (False, "e1", 0.0)


@pytest.mark.parametrize("threshold", [1.0, 1.5, float("nan"), -1.0, 0.5, 2 / 3])
def test_other_thresholds(threshold: float) -> None:
    rng = random.Random(7)
    vocab = words("v", 12)
    rows = [
        (f"p{i}", " ".join(rng.sample(vocab, rng.randint(0, 6))), float(rng.randint(0, 3)), T0)
        for i in range(60)
    ]
    outcome(frame(rows), threshold)


def test_unicode_tokenisation_matches_python() -> None:
    dotted_i = "i\u0307stanbul"  # what "İstanbul".lower() returns: one character longer
    df = frame(
        [
            # Final sigma lowers to 'ς'; \x1c, NBSP and U+2028 are whitespace for str.split().
            ("a", "İstanbul ΟΔΟΣ straße\x1cnaïve\u00a0x\u2028y", 1.0, T0),
            ("b", f"{dotted_i} οδος STRASSE naïve x y", 0.5, T0),
            ("c", f"{dotted_i} οδοσ straße naïve x y", 0.4, T0),
            # U+200B is not whitespace for str.split(), so this is a single token.
            ("d", f"{dotted_i}\u200bοδος", 0.3, T0),
        ]
    )
    res = outcome(df, 0.5)
    assert res["b"] == (False, "a", 5 / 7)  # all shared but straße != strasse
    assert res["c"] == (False, "a", 5 / 7)  # all shared but 'οδοσ' != 'οδος'
    assert res["d"] == (True, None, None)


def test_lazyframe_input_extra_columns_and_input_order() -> None:
    df = frame(
        [("z", "same words here", 0.1, T0), ("y", "same words here", 0.9, T0), ("x", "other", 0.5, T0)]
    )
    out = near_duplicates(df.with_columns(scope=pl.lit("s1")).lazy())
    assert out["pattern_id"].to_list() == ["z", "y", "x"]
    assert out.filter(pl.col("pattern_id") == "z").row(0) == ("z", False, "y", 1.0)


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        near_duplicates(frame([("a", "x", 1.0, T0), ("a", "y", 1.0, T0)]))


def test_nan_and_null_scores_and_timestamps_order() -> None:
    task = "one two three"
    rows = [
        ("null_score", task, None, T0),
        ("nan", task, float("nan"), None),
        ("neg_zero", task, -0.0, T0),
        ("zero", task, 0.0, None),
    ]
    res = outcome(frame(rows))
    # NaN sorts above every number (Polars' order); null scores sort last.
    assert res["nan"] == (True, None, None)


def families_frame(n: int, seed: int) -> pl.DataFrame:
    """Tasks drawn Zipf-like from a small vocabulary, 40% of them edited copies of an earlier task."""
    rng = random.Random(seed)
    vocab = [*words("w", 300), "the", "a", "to", "İ", "Σ", "ok,", "OK"]
    weights = [1.0 / (k + 1) for k in range(len(vocab))]
    rows: list[tuple] = []
    for i in range(n):
        if i and rng.random() < 0.4:
            src = rows[rng.randrange(len(rows))][1].split()
            op = rng.randrange(4)
            if op == 0 and src:
                src[rng.randrange(len(src))] = rng.choice(vocab)
            elif op == 1:
                src.insert(rng.randrange(len(src) + 1), rng.choice(vocab))
            elif op == 2 and src:
                src[rng.randrange(len(src))] = src[0].upper()
            task = " ".join(src)
        else:
            task = " ".join(rng.choices(vocab, weights=weights, k=rng.randint(1, 40)))
        rows.append((f"p{i:04d}", task, round(rng.random(), 1), T0 + timedelta(hours=rng.randrange(3))))
    return frame(rows)


def test_many_rows_against_reference() -> None:
    df = families_frame(600, seed=1)
    res = outcome(df)
    assert sum(not v[0] for v in res.values()) > 50
    outcome(df, 0.8)


def test_many_rows_with_tiny_chunks_batches_and_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force every multi-step path: chunked joins, batched greedy walk, one block per few rows."""
    monkeypatch.setattr(arrays, "_CHUNK", 7)
    monkeypatch.setattr(keep, "_PAIR_BATCH", 3)
    monkeypatch.setattr(pairs, "_BLOCK_BUDGET", 0)
    monkeypatch.setattr(pairs, "_MIN_BLOCK", 3)
    df = families_frame(400, seed=2)
    res = outcome(df)
    assert sum(not v[0] for v in res.values()) > 30
    outcome(df, 0.7)


def test_templated_cluster() -> None:
    """Many one-word variants of one template: most pairs are near-duplicates of each other."""
    rng = random.Random(3)
    template = words("t", 30)
    rows = []
    for i in range(300):
        w = list(template)
        w[rng.randrange(30)] = f"v{rng.randrange(40)}"
        rows.append((f"p{i:03d}", " ".join(w), float(rng.randrange(5)), T0))
    res = outcome(frame(rows))
    kept = [k for k, v in res.items() if v[0]]
    assert 1 < len(kept) < 60


def test_hash_collisions_do_not_merge_different_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The identical-set collapse verifies members, so even a useless set hash stays exact."""
    monkeypatch.setattr(sets, "_set_hashes", lambda ts, rows, sig: ts.sizes[rows].astype(np.uint64))
    rows = [(f"p{i}", t, 1.0 - i / 10, T0) for i, t in enumerate(["a b", "a c", "b a", "c d", "a b", "x"])]
    res = outcome(frame(rows), 0.9)
    assert res["p2"] == (False, "p0", 1.0)
    assert res["p4"] == (False, "p0", 1.0)
    assert res["p1"][0] and res["p3"][0]
