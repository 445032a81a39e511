"""The incremental cache's token sets: 32-bit ranks in CSR layout, hashed and grouped by identity.

Invariants: a stored set is strictly increasing ranks of the scope's vocabulary; grouping is exact (rows
share a group only when their sets were compared element by element); a set's hash never depends on
the order its tokens come in.
"""

from __future__ import annotations

import numpy as np

from pipelines.scoring.near_duplicates.arrays import (
    csr_offsets,
    csr_take,
    drop_repeats,
    sorted_unique,
    token_bitmaps,
)

# Two independent 64-bit mixes of a token rank; a set's hash is their wrapping sum over its tokens.
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


class StoredSets:
    """Token sets in CSR layout: ``values[offsets[i]:offsets[i + 1]]`` is set i, increasing ranks."""

    def __init__(self, offsets: np.ndarray, values: np.ndarray) -> None:
        self.offsets = offsets
        self.values = values
        self.sizes = np.diff(offsets)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, values: np.ndarray, n: int) -> StoredSets:
        """From (row, value) pairs in any order, repeats allowed: each row's distinct values, sorted."""
        offsets = np.zeros(n + 1, dtype=np.int64)
        if not values.size:
            return cls(offsets, values.astype(np.int64))
        # One in-place sort of packed (row, value) keys: several times faster than a two-key lexsort.
        base = int(values.min())
        shifted = values - base if base else values
        shift = max(1, int(shifted.max()).bit_length())
        keys = rows.astype(np.int64)
        keys <<= shift
        keys |= shifted
        keys.sort()
        keys = drop_repeats(keys)
        np.cumsum(np.bincount(keys >> shift, minlength=n), out=offsets[1:])
        return cls(offsets, (keys & ((1 << shift) - 1)) + base)

    def take(self, rows: np.ndarray) -> StoredSets:
        """The sets of ``rows``, in that order."""
        return StoredSets(*csr_take(self.offsets, self.values, rows))

    def keep(self, mask: np.ndarray) -> StoredSets:
        """The sets where ``mask`` is true, in order (cheaper than :meth:`take` for an ordered subset)."""
        return StoredSets(csr_offsets(self.sizes[mask]), self.values[np.repeat(mask, self.sizes)])

    @staticmethod
    def concat(parts: list[StoredSets]) -> StoredSets:
        return StoredSets(
            csr_offsets(np.concatenate([p.sizes for p in parts])), np.concatenate([p.values for p in parts])
        )

    def hashes(self) -> np.ndarray:
        """Per set, shape (n, 3): two independent 64-bit hashes (order-independent wrapping sums) and a
        64-bit token bitmap (one hashed bit per token; popcount(a ^ b) <= |A ^ B| for any two sets)."""
        out = np.zeros((self.sizes.size, 3), dtype=np.uint64)
        nonempty = self.sizes > 0
        if self.values.size:
            starts = self.offsets[:-1][nonempty]
            ranks = self.values.astype(np.uint64)
            for i, mix in enumerate(_MIX):
                mixed = (ranks + np.uint64(1)) * mix
                mixed ^= mixed >> np.uint64(31)
                out[nonempty, i] = np.add.reduceat(mixed, starts)
            out[:, 2] = token_bitmaps(self.offsets, self.sizes, self.values, _MIX[0])
        return out

    def groups(self, rows: np.ndarray, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Among ``rows``, rows with identical sets share a group: returns (group of each of ``rows``,
        the row leading each group).

        Sets are grouped by (size, two 64-bit hashes), then every row is compared element by element
        with its group's leader; a hash collision (never seen in practice) only makes the rows involved
        groups of their own, so grouping is exact.
        """
        n = rows.size
        h = hashes[rows]
        sizes = self.sizes[rows]
        # Sorting by one hash puts identical sets next to each other; rows whose (size, hashes) differ
        # from their predecessor start a new group. Identical sets that end up in two groups would still
        # be similar to each other (Jaccard 1), so only the element-wise check below matters for exactness.
        order = np.argsort(h[:, 0])
        key_change = np.ones(n, dtype=bool)
        if n > 1:
            key_change[1:] = (
                (np.diff(sizes[order]) != 0) | (np.diff(h[order, 0]) != 0) | (np.diff(h[order, 1]) != 0)
            )
        leader = order[np.maximum.accumulate(np.where(key_change, np.arange(n), 0))]
        follower = np.flatnonzero(leader != order)
        differs = follower[self._differs(rows[order[follower]], rows[leader[follower]])]
        if differs.size:
            # A collision: the rows that differ from their leader become leaders of their own.
            leader[differs] = order[differs]
        leaders = sorted_unique(leader)
        group_of = np.full(n, -1, dtype=np.int64)
        group_of[leaders] = np.arange(leaders.size)
        group = np.empty(n, dtype=np.int64)
        group[order] = group_of[leader]
        return group, rows[leaders]

    def _differs(self, rows: np.ndarray, leaders: np.ndarray) -> np.ndarray:
        """Whether each row's set differs from its leader's (sizes are already equal)."""
        sizes = self.sizes[rows]
        seg = np.repeat(np.arange(rows.size), sizes)
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        a = self.values[self.offsets[:-1][rows][seg] + within]
        b = self.values[self.offsets[:-1][leaders][seg] + within]
        return np.bincount(seg, weights=a != b, minlength=rows.size) > 0
