"""The exact engine's token sets: ranked rarest first, keyed for binary search, identical sets collapsed.

Invariants: a row's set is strictly increasing ranks (rank 0 the globally rarest token) and equals
``set(task.lower().split())`` (see :mod:`.tokens`); intersection sizes are exact integers; rows are only
collapsed onto a representative after their sets were verified equal to its set, so a hash collision
costs time, never correctness.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import polars as pl

from pipelines.scoring.near_duplicates.arrays import chunks, csr_take, token_bitmaps
from pipelines.scoring.near_duplicates.tokens import encode


class KeyedSets(NamedTuple):
    """Token sets of all rows in CSR layout.

    ``ranks[offsets[r]:offsets[r+1]]`` is the strictly increasing array of token ranks of row r (rank 0 is
    the globally rarest token) and ``keys = (row << shift) | rank`` is the same data as one globally sorted
    array, which turns "is token t in row r" into a binary search.
    """

    offsets: np.ndarray
    sizes: np.ndarray
    ranks: np.ndarray
    keys: np.ndarray
    shift: int


def rank_tokens(tasks: pl.Series, with_vocabulary: bool = False) -> tuple[KeyedSets, pl.DataFrame | None]:
    """Exact ``set(task.lower().split())`` for every row, dictionary-encoded (no hashing, no collisions),
    and with ``with_vocabulary`` the ``(token, rank)`` table of every token."""
    n = tasks.len()
    lens, codes, empty_code, token_strings = encode(tasks, with_strings=with_vocabulary)
    n_codes = int(codes.max()) + 1 if codes.size else 0
    # Global order: rarest first, so prefixes hold rare tokens and candidate lists stay short. Counting
    # occurrences instead of document frequency is fine: any fixed total order keeps prefix filtering exact.
    freq = np.bincount(codes, minlength=n_codes)
    if empty_code >= 0:
        freq[empty_code] = codes.size + 1  # rank it last, then drop it below
    rank_of_code = np.empty(n_codes, dtype=np.int64)
    if token_strings is None:
        order = np.argsort(freq, kind="stable")
    else:
        # The vocabulary is kept (the near-duplicate cache): ties broken by the token itself, so the same
        # tasks give the same ranks in every run. Codes come from an encoding spread over all cores, whose
        # order differs from run to run.
        by_text = np.empty(n_codes, dtype=np.int64)
        by_text[token_strings.head(n_codes).arg_sort().to_numpy()] = np.arange(n_codes, dtype=np.int64)
        order = np.lexsort((by_text, freq))
    rank_of_code[order] = np.arange(n_codes, dtype=np.int64)
    vocabulary = None
    if token_strings is not None:
        table = pl.DataFrame({"token": token_strings.head(n_codes), "rank": rank_of_code})
        vocabulary = table.filter(pl.col("token") != "").sort("rank")  # stored: in the same order every run
    shift = max(1, int(n_codes).bit_length())
    mask = (1 << shift) - 1
    keys = np.repeat(np.arange(n, dtype=np.int64) << shift, lens)
    keys |= rank_of_code[codes]
    del codes
    # Rows are already contiguous, so this mostly sorts tokens within each row.
    keys.sort()
    # Sets, not bags: drop repeated words within a row (and the "" pseudo-token).
    keep = np.ones(keys.size, dtype=bool)
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    if empty_code >= 0:
        keep &= (keys & mask) != rank_of_code[empty_code]
    keys = keys[keep]
    # Row boundaries by binary search of sorted needles: cheaper than another pass over every token.
    offsets = np.searchsorted(keys, np.arange(n + 1, dtype=np.int64) << shift).astype(np.int64)
    sizes = np.diff(offsets)
    return KeyedSets(offsets, sizes, keys & mask, keys, shift), vocabulary


def keyed_from_csr(offsets: np.ndarray, ranks: np.ndarray, order: np.ndarray) -> KeyedSets:
    """Known sets (row i is ``ranks[offsets[i]:offsets[i + 1]]``, distinct and increasing) as keyed sets
    of rows ``order``, in that order."""
    new_offsets, values = csr_take(offsets, ranks, order)
    sizes = np.diff(new_offsets)
    base = int(values.min()) if values.size else 0
    values = values.astype(np.int64) - base  # ranks may come as 32-bit (the cache's)
    shift = max(1, int(values.max()).bit_length()) if values.size else 1
    keys = (np.repeat(np.arange(order.size, dtype=np.int64), sizes) << shift) | values
    return KeyedSets(new_offsets, sizes, values, keys, shift)


def intersections(xs: np.ndarray, ys: np.ndarray, ts: KeyedSets) -> np.ndarray:
    """|set(x) & set(y)| for each pair, exactly.

    The tokens of the smaller set are looked up by binary search in the globally sorted (row, rank) keys,
    so the cost is O(sum of min sizes * log total) with no Python per pair.
    """
    out = np.zeros(xs.size, dtype=np.int64)
    if xs.size == 0:
        return out
    sizes = ts.sizes
    swap = sizes[xs] > sizes[ys]
    small = np.where(swap, ys, xs)
    large = np.where(swap, xs, ys)
    counts = sizes[small]
    # Process in slices so the expanded token arrays stay bounded in memory.
    for start, stop in chunks(counts):
        c = counts[start:stop]
        total = int(c.sum())
        if total:
            seg = np.repeat(np.arange(stop - start), c)
            within = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
            tok = ts.ranks[ts.offsets[small[start:stop]][seg] + within]
            probe = (large[start:stop][seg] << ts.shift) | tok
            pos = np.minimum(np.searchsorted(ts.keys, probe), ts.keys.size - 1)
            hit = ts.keys[pos] == probe
            out[start:stop] = np.bincount(seg, weights=hit, minlength=stop - start).astype(np.int64)
    return out


def signatures(ts: KeyedSets) -> np.ndarray:
    """64-bit token bitmap per row (see :func:`.arrays.token_bitmaps`); also a cheap ingredient of the
    set hash used to group identical sets."""
    return token_bitmaps(ts.offsets, ts.sizes, ts.ranks)


def _set_hashes(ts: KeyedSets, rows: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """64-bit hash of each (non-empty) row's token set from its bitmap, size, rarest and commonest token.

    Equal sets always hash equal; unequal ones rarely do, and since members are verified against their
    representative, a collision only costs time, never correctness. Reusing the bitmap avoids another
    pass over all tokens.
    """
    first = ts.ranks[ts.offsets[rows]].astype(np.uint64)
    last = ts.ranks[ts.offsets[rows + 1] - 1].astype(np.uint64)
    size = ts.sizes[rows].astype(np.uint64)
    return (
        sig[rows]
        ^ (size * np.uint64(0x9E3779B97F4A7C15))
        ^ (first * np.uint64(0xC2B2AE3D27D4EB4F))
        ^ (last * np.uint64(0x165667B19E3779F9))
    )


def collapse_identical(ts: KeyedSets, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split non-empty rows into representatives and members of identical-set groups.

    Exact-duplicate groups would otherwise produce a quadratic number of pairs. Groups come from a 64-bit
    set hash, then every member is verified to be exactly equal to its representative; a member of a
    colliding group just stays its own representative, which is always correct (only slower).
    """
    sizes = ts.sizes
    rows = np.flatnonzero(sizes > 0)
    if rows.size == 0:
        return rows, rows, rows
    set_hash = _set_hashes(ts, rows, sig)
    order = np.lexsort((rows, set_hash))
    h, r = set_hash[order], rows[order]
    first = np.empty(h.size, dtype=bool)
    first[0] = True
    np.not_equal(h[1:], h[:-1], out=first[1:])
    group_first = r[np.maximum.accumulate(np.where(first, np.arange(h.size), 0))]
    members, member_rep = r[~first], group_first[~first]
    same = (sizes[members] == sizes[member_rep]) & (intersections(members, member_rep, ts) == sizes[members])
    reps = np.sort(np.concatenate([r[first], members[~same]]))
    return reps, members[same], member_rep[same]
