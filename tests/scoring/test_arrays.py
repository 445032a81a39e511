"""The array helpers both near-duplicate engines share."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.scoring.near_duplicates.arrays import (
    chunks,
    csr_offsets,
    csr_take,
    drop_repeats,
    prefix_entries,
    sorted_unique,
    token_bitmaps,
)

SETS = st.lists(st.sets(st.integers(-5, 200), max_size=30).map(sorted), max_size=20)


@given(st.lists(st.integers(0, 50), max_size=40), st.integers(1, 60))
def test_chunks_cover_every_item_once_within_budget(counts: list[int], budget: int) -> None:
    runs = chunks(np.array(counts, dtype=np.int64), budget)
    assert [i for start, stop in runs for i in range(start, stop)] == list(range(len(counts)))
    # A run overshoots the budget by at most its largest item.
    assert all(sum(counts[start:stop]) <= budget + max(counts[start:stop]) for start, stop in runs)


@given(st.lists(st.integers(-10, 10), max_size=40))
def test_distinct_values(values: list[int]) -> None:
    a = np.array(values, dtype=np.int64)
    assert sorted_unique(a).tolist() == sorted(set(values))
    assert drop_repeats(np.sort(a)).tolist() == sorted(set(values))


@given(SETS, st.data())
@settings(max_examples=100)
def test_csr_take_and_prefixes(sets: list[list[int]], data: st.DataObject) -> None:
    offsets = csr_offsets(np.array([len(s) for s in sets], dtype=np.int64))
    values = np.array([v for s in sets for v in s], dtype=np.int64)
    rows = np.array(data.draw(st.lists(st.integers(0, max(len(sets) - 1, 0)), max_size=10)) if sets else [])
    rows = rows.astype(np.int64)
    taken_offsets, taken = csr_take(offsets, values, rows)
    assert [taken[taken_offsets[k] : taken_offsets[k + 1]].tolist() for k in range(rows.size)] == [
        sets[r] for r in rows
    ]
    lengths = np.array([len(sets[r]) // 2 for r in rows], dtype=np.int64)
    ent_row, ent_pos, tok = prefix_entries(rows, lengths, offsets, values)
    assert list(zip(ent_row.tolist(), ent_pos.tolist(), tok.tolist(), strict=True)) == [
        (r, p, sets[r][p]) for r, n in zip(rows.tolist(), lengths.tolist(), strict=True) for p in range(n)
    ]


@given(SETS)
def test_bitmaps_bound_the_symmetric_difference(sets: list[list[int]]) -> None:
    offsets = csr_offsets(np.array([len(s) for s in sets], dtype=np.int64))
    values = np.array([v for s in sets for v in s], dtype=np.int64)
    bitmaps = token_bitmaps(offsets, np.diff(offsets), values)
    for i, a in enumerate(sets):
        assert (bitmaps[i] == 0) == (not a)
        for j, b in enumerate(sets):
            assert int(np.bitwise_count(bitmaps[i] ^ bitmaps[j])) <= len(set(a) ^ set(b))
