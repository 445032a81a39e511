"""Property tests: the fast near-duplicate path, and deciding on token sets handed out, must equal the
brute-force reference on every input."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.scoring.near_duplicates import (
    JACCARD_THRESHOLD,
    arrays,
    keep,
    near_duplicates,
    near_duplicates_of_sets,
    near_duplicates_reference,
    near_duplicates_with_tokens,
    pairs,
)
from tests.support.near_duplicates import T0, frame

VOCAB = [
    "alpha",
    "Alpha",
    "ALPHA",
    "beta",
    "beta,",
    "beta.",
    "gamma",
    "the",
    "a",
    "İ",
    "i̇",
    "ΣΑΣ",
    "σας",
    "ß",
    "ss",
]
VOCAB += [f"w{i}" for i in range(26)]
SEPARATORS = [
    " ",
    " ",
    " ",
    "  ",
    "\t",
    "\n",
    "\x1c",
    "\x1f",
    "\x85",
    "\xa0",
    "\u2028",
    "\u3000",
    "\u200b",
    "\r\n",
]
SCORES = [0.0, -0.0, 0.5, 1.0, 0.25, float("nan"), None]
TIMES = [T0, T0 + timedelta(microseconds=1), T0 + timedelta(days=3), None]
THRESHOLDS = [JACCARD_THRESHOLD, 23 / 25, 0.5, 2 / 3, 0.75, 0.8, 0.9, 1.0, 0.0, -0.1, 1.01, 0.1 + 0.2]


@st.composite
def task_text(draw: st.DrawFn, base: list[str]) -> str:
    """A task derived from a shared base word list, so that near-boundary Jaccard values are common."""
    tokens = list(base)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "case"]))
        if op == "insert" or not tokens:
            tokens.insert(draw(st.integers(0, len(tokens))), draw(st.sampled_from(VOCAB)))
        elif op == "replace":
            tokens[draw(st.integers(0, len(tokens) - 1))] = draw(st.sampled_from(VOCAB))
        elif op == "delete":
            del tokens[draw(st.integers(0, len(tokens) - 1))]
        else:
            k = draw(st.integers(0, len(tokens) - 1))
            tokens[k] = tokens[k].swapcase()
    if draw(st.booleans()):
        tokens.append(draw(st.text(max_size=4)))  # arbitrary unicode, incl. odd whitespace
    seps = draw(st.lists(st.sampled_from(SEPARATORS), min_size=len(tokens) + 1, max_size=len(tokens) + 1))
    lead = seps[0] if draw(st.booleans()) else ""
    return lead + "".join(t + s for t, s in zip(tokens, seps[1:], strict=True)).rstrip(" ")


@st.composite
def pattern_frames(draw: st.DrawFn) -> pl.DataFrame:
    n_bases = draw(st.integers(1, 3))
    bases = [
        draw(st.lists(st.sampled_from(VOCAB), min_size=0, max_size=draw(st.sampled_from([1, 3, 12, 26]))))
        for _ in range(n_bases)
    ]
    n = draw(st.integers(0, 14))
    ids = draw(st.lists(st.text(min_size=1, max_size=3), min_size=n, max_size=n, unique=True))
    rows = []
    for pid in ids:
        base = draw(st.sampled_from(bases))
        rows.append((pid, draw(task_text(base)), draw(st.sampled_from(SCORES)), draw(st.sampled_from(TIMES))))
    return frame(rows)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    df=pattern_frames(),
    threshold=st.one_of(st.sampled_from(THRESHOLDS), st.floats(0.3, 1.0)),
    tiny_steps=st.booleans(),
)
def test_matches_reference(df: pl.DataFrame, threshold: float, tiny_steps: bool) -> None:
    if tiny_steps:  # one row per block, one pair per batch, one candidate per chunk
        with (
            mock.patch.object(pairs, "_BLOCK_BUDGET", 0),
            mock.patch.object(pairs, "_MIN_BLOCK", 1),
            mock.patch.object(keep, "_PAIR_BATCH", 1),
            mock.patch.object(arrays, "_CHUNK", 1),
        ):
            fast = near_duplicates(df, threshold)
    else:
        fast = near_duplicates(df, threshold)
    ref = near_duplicates_reference(df, threshold)
    assert fast.to_dicts() == ref.to_dicts()
    kept_ids = set(fast.filter("kept")["pattern_id"])
    assert all(d in kept_ids for d in fast["duplicate_of"].drop_nulls())


@settings(max_examples=60, deadline=None)
@given(
    tasks=st.lists(
        st.text(alphabet=st.sampled_from(list("aAbB İΣς\t\x1c\x85\u2028.,ß")), max_size=12), max_size=10
    )
)
def test_matches_reference_on_raw_unicode_text(tasks: list[str]) -> None:
    df = frame([(f"p{i}", t, 0.0, T0) for i, t in enumerate(tasks)])
    for threshold in (JACCARD_THRESHOLD, 0.5):
        assert (
            near_duplicates(df, threshold).to_dicts() == near_duplicates_reference(df, threshold).to_dicts()
        )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(df=pattern_frames(), threshold=st.sampled_from([JACCARD_THRESHOLD, 0.5, 1.0]))
def test_token_sets_handed_out_are_each_rows_words(df: pl.DataFrame, threshold: float) -> None:
    result, tokens = near_duplicates_with_tokens(df, threshold)
    assert result.equals(near_duplicates(df, threshold))
    vocabulary = dict(tokens.vocabulary.iter_rows())
    assert len(set(vocabulary.values())) == len(vocabulary)  # a rank names one token
    assert tokens.offsets.size == df.height + 1
    assert sorted(tokens.rows.tolist()) == list(range(df.height))  # every row's set, once
    tasks = df["task"].to_list()
    for k, row in enumerate(tokens.rows.tolist()):
        ranks = tokens.ranks[tokens.offsets[k] : tokens.offsets[k + 1]]
        assert list(ranks) == sorted(set(ranks))  # distinct, increasing
        assert set(ranks) == {vocabulary[w] for w in set((tasks[row] or "").lower().split())}


def test_token_sets_need_a_threshold_that_tokenises() -> None:
    with pytest.raises(ValueError, match="threshold"):
        near_duplicates_with_tokens(frame([("a", "x", 1.0, T0)]), 1.5)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    df=pattern_frames(),
    threshold=st.one_of(st.sampled_from([t for t in THRESHOLDS if 0.0 < t <= 1.0]), st.floats(0.3, 1.0)),
    flip=st.booleans(),
)
def test_deciding_on_known_token_sets_matches_deciding_on_tasks(
    df: pl.DataFrame, threshold: float, flip: bool
):
    _, tokens = near_duplicates_with_tokens(df, threshold)
    offsets, ranks = tokens.offsets, tokens.ranks
    if flip:
        # Another token order (commonest first, some ranks negative): the outcome must not change.
        ranks = -ranks
        for i in range(offsets.size - 1):
            ranks[offsets[i] : offsets[i + 1]] = np.sort(ranks[offsets[i] : offsets[i + 1]])
    # The sets come in their own order: the rows are given in that order.
    in_set_order = df[tokens.rows]
    got = near_duplicates_of_sets(in_set_order.drop("task"), offsets, ranks, threshold)
    assert got.to_dicts() == near_duplicates_reference(in_set_order, threshold).to_dicts()
