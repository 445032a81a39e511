"""The one tokeniser equals Python's ``str.lower().split()`` on every row."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.scoring.near_duplicates.sets import rank_tokens
from pipelines.scoring.near_duplicates.tokens import encode, token_pairs

TEXT = st.lists(
    st.one_of(
        st.none(),
        st.text(
            alphabet=st.sampled_from(list("aAbBzZ İΣςß\t\n\x0b\x0c\r\x1c\x1f\x85\xa0\u2028.,")), max_size=14
        ),
    ),
    max_size=12,
)


@given(TEXT)
@settings(max_examples=200, deadline=None)
def test_token_pairs_are_each_rows_words_with_repeats(tasks: list[str | None]) -> None:
    rows, codes, tokens = token_pairs(pl.Series(tasks, dtype=pl.String))
    got: list[Counter[str]] = [Counter() for _ in tasks]
    for row, code in zip(rows.tolist(), codes.tolist(), strict=True):
        got[row][tokens[code]] += 1
    assert got == [Counter((task or "").lower().split()) for task in tasks]


@given(TEXT)
@settings(max_examples=100, deadline=None)
def test_encoded_rows_hold_their_words_and_empty_pseudo_tokens(tasks: list[str | None]) -> None:
    encoded = encode(pl.Series(tasks, dtype=pl.String), with_strings=True)
    assert encoded.strings is not None
    assert encoded.lengths.size == len(tasks) and int(encoded.lengths.sum()) == encoded.codes.size
    starts = np.zeros(len(tasks) + 1, dtype=np.int64)
    np.cumsum(encoded.lengths, out=starts[1:])
    for i, task in enumerate(tasks):
        codes = encoded.codes[starts[i] : starts[i + 1]].tolist()
        words = [encoded.strings[c] for c in codes]
        assert [w for w in words if w] == (task or "").lower().split()
        assert all(c == encoded.empty for w, c in zip(words, codes, strict=True) if not w)


def test_kept_vocabulary_ranks_do_not_depend_on_the_encoding_order() -> None:
    """The near-duplicate cache keeps the vocabulary: the same tasks, in any order of encoding, give every
    token the same rank (rarest first, ties by the token), so the cache is the same file in every run."""
    words = [f"w{i:03d}" for i in range(300)]
    rng = np.random.default_rng(0)
    tasks = [" ".join(rng.choice(words, size=6)) for _ in range(2_000)]
    reference = None
    for seed in range(4):
        # Shuffled rows encode their tokens in another order; the ranks of the same set of tasks must not
        # follow it.
        order = np.random.default_rng(seed).permutation(len(tasks))
        _, vocabulary = rank_tokens(pl.Series([tasks[i] for i in order]), with_vocabulary=True)
        assert vocabulary is not None
        assert vocabulary["rank"].is_sorted()
        if reference is None:
            reference = vocabulary
        assert vocabulary.equals(reference)
    counts = Counter(w for t in tasks for w in t.split())
    expected = sorted(counts, key=lambda w: (counts[w], w))
    assert reference["token"].to_list() == expected
