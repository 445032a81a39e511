"""The one tokeniser equals Python's ``str.lower().split()`` on every row."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

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
