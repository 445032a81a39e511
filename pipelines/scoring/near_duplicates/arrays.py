"""Array helpers both near-duplicate engines build on: CSR token sets, bounded chunking, distinct values.

Invariants: every helper is exact and keeps the order it documents; token sets are CSR layouts
(``values[offsets[i]:offsets[i + 1]]`` is set i); ``chunks`` is the one place that decides how much a
vectorised expansion may materialise at once.
"""

from __future__ import annotations

import itertools

import numpy as np

# Elements a vectorised expansion materialises at once unless told otherwise. ~10 temporaries each; this
# size keeps them cache-resident, which measured faster than larger chunks (and bounds memory regardless
# of the input).
_CHUNK = 1 << 18
# Golden-ratio multiplier: its top 6 bits of rank * mix pick a token's bit in a 64-bit bitmap.
BITMAP_MIX = np.uint64(0x9E3779B97F4A7C15)


def chunks(counts: np.ndarray, budget: int | None = None) -> list[tuple[int, int]]:
    """Split items that expand to ``counts`` elements into [start, stop) runs of about ``budget`` elements.

    Bounds the memory of the vectorised expansion; an item larger than the budget simply gets its own run.
    """
    if counts.size == 0:
        return []
    budget = budget or _CHUNK
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(budget, int(cum[-1]), budget), "right").tolist()
    bounds = [0, *sorted({c for c in cuts if 0 < c < counts.size}), counts.size]
    return list(itertools.pairwise(bounds))


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique may hash instead, which is several times slower here)."""
    return drop_repeats(np.sort(values))


def drop_repeats(values: np.ndarray) -> np.ndarray:
    """The distinct values of an already sorted array."""
    if values.size:
        keep = np.empty(values.size, dtype=bool)
        keep[0] = True
        np.not_equal(values[1:], values[:-1], out=keep[1:])
        values = values[keep]
    return values


def csr_offsets(sizes: np.ndarray) -> np.ndarray:
    """CSR offsets of consecutive sets of these sizes."""
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


def csr_take(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` (in that order) of the CSR layout ``values[offsets[i]:offsets[i + 1]]``."""
    sizes = np.diff(offsets)[rows]
    taken = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=taken[1:])
    starts = np.repeat(offsets[:-1][rows] - taken[:-1], sizes)
    return taken, values[starts + np.arange(taken[-1], dtype=np.int64)]


def prefix_entries(
    rows: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, token) for the first ``lengths[i]`` tokens of each of ``rows``."""
    ent_row = np.repeat(rows, lengths)
    ent_pos = np.arange(ent_row.size, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return ent_row, ent_pos, values[offsets[ent_row] + ent_pos]


def token_bitmaps(
    offsets: np.ndarray, sizes: np.ndarray, values: np.ndarray, mix: np.uint64 = BITMAP_MIX
) -> np.ndarray:
    """64-bit token bitmap per set (one hashed bit per token; 0 for empty sets).

    popcount(bitmap_a ^ bitmap_b) <= |A ^ B| for any two sets: each differing bit needs a token that only
    one of the sets has.
    """
    # In place: one 8-byte temporary per token instead of three.
    bits = values.astype(np.uint64)
    bits *= mix
    bits >>= np.uint64(58)
    np.left_shift(np.uint64(1), bits, out=bits)
    out = np.zeros(sizes.size, dtype=np.uint64)
    nonempty = sizes > 0
    if bits.size:
        out[nonempty] = np.bitwise_or.reduceat(bits, offsets[:-1][nonempty])
    return out
