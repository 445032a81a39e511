"""The near-duplicate graph over distinct stored token sets, searched with an exact prefix filter.

Invariant: ``neighbours`` returns exactly the sets whose Jaccard similarity with a probed set reaches the
threshold, decided by the same IEEE division of exact integers as the reference; the filters before it
only ever drop pairs that cannot reach the threshold.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from pipelines.scoring.near_duplicates.arrays import chunks, prefix_entries, sorted_unique
from pipelines.scoring.near_duplicates.stored import StoredSets

# Candidates expanded at once while searching neighbours (bounds memory when a token is shared by many
# prefixes).
_NEIGHBOUR_CHUNK = 2_000_000


class Graph:
    """The near-duplicate graph over distinct token sets, searched with an exact prefix filter.

    A pair reaching the threshold shares at least ceil(low * |A|) tokens of A, so in the global token
    order (increasing rank) its first shared token is within A's first |A| - ceil(low * |A|) + 1 tokens,
    and within B's likewise: every similar pair shares a "prefix" token. ``low`` is the largest double
    below the threshold, because float division of exact integers can round a quotient just below the
    threshold up onto it; the final test is that very division, as in the reference.
    """

    def __init__(self, sets: StoredSets, nodes: np.ndarray, threshold: float, bitmaps: np.ndarray) -> None:
        """Similarity search over the sets ``nodes`` (other sets may be probed from, never found);
        ``bitmaps`` are the sets' token bitmaps (the third column of :meth:`StoredSets.hashes`)."""
        self.sets = sets
        self.bitmaps = bitmaps
        self.threshold = threshold
        low = Fraction(math.nextafter(threshold, -math.inf))
        sizes = sets.sizes
        # Exact rational bounds per set size, in Python integers (numerator * size overflows int64).
        top = int(sizes.max()) if sizes.size else 0
        num, den = low.numerator, low.denominator
        need = np.array([-((-num * n) // den) for n in range(top + 1)], dtype=np.int64)  # ceil(low * n)
        # Jaccard <= small / large, so the smaller set must exceed low * the larger one.
        self.min_small = np.array([(num * n) // den + 1 for n in range(top + 1)], dtype=np.int64)
        # |A ^ B| = |A| + |B| - 2|A & B|, and Jaccard >= low means |A & B| >= low (|A| + |B|) / (1 + low):
        # at most floor(n (1 - low) / (1 + low)) tokens differ between two sets of n tokens in all.
        self.max_diff = np.array(
            [(n * (den - num)) // (den + num) for n in range(2 * top + 1)], dtype=np.int64
        )
        self.prefix = np.clip(sizes - need[sizes] + 1, 0, sizes)
        # Ranks minus ``base`` are non-negative, so (set, rank) packs into one sortable key.
        self.base = int(sets.values.min()) if sets.values.size else 0
        top_rank = int(sets.values.max()) - self.base if sets.values.size else 0
        self.shift = max(1, top_rank.bit_length())
        rows, tokens = self._prefix_entries(nodes)
        self.index_tokens, self.index_rows = _by_token(tokens, rows, self.base, self.shift)

    def _prefix_entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        entry_rows, _, tokens = prefix_entries(rows, self.prefix[rows], self.sets.offsets, self.sets.values)
        return entry_rows, tokens

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Every set with a Jaccard similarity >= threshold to one of ``rows`` (exact)."""
        rows, tokens = self._prefix_entries(rows)
        lo = np.searchsorted(self.index_tokens, tokens, "left")
        counts = np.searchsorted(self.index_tokens, tokens, "right") - lo
        sizes = self.sets.sizes
        found: list[np.ndarray] = []
        # Candidates are expanded in slices so a token shared by many prefixes cannot exhaust memory.
        for start, stop in chunks(counts, _NEIGHBOUR_CHUNK):
            cnt = counts[start:stop]
            total = int(cnt.sum())
            if not total:
                continue
            ends = np.cumsum(cnt)
            a = np.repeat(rows[start:stop], cnt)
            b = self.index_rows[np.arange(total) + np.repeat(lo[start:stop] - (ends - cnt), cnt)]
            small, large = np.minimum(sizes[a], sizes[b]), np.maximum(sizes[a], sizes[b])
            ok = (a != b) & (small >= self.min_small[large])
            a, b = a[ok], b[ok]
            # Bits set in one bitmap only each stand for a token of one set only.
            differ = np.bitwise_count(self.bitmaps[a] ^ self.bitmaps[b])
            ok = differ <= self.max_diff[sizes[a] + sizes[b]]
            a, b = a[ok], b[ok]
            if a.size:
                inter = self._intersections(a, b)
                union = sizes[a] + sizes[b] - inter
                # The same IEEE division of exact integers as Python's int / int in the reference.
                found.append(b[inter / union >= self.threshold])
        return sorted_unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def _intersections(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """|set(a) & set(b)| per pair: a's tokens looked up by binary search among the sorted
        (set, rank) keys of just the b sets involved."""
        targets = sorted_unique(b)
        sizes = self.sets.sizes[targets]
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        local = np.repeat(np.arange(targets.size, dtype=np.int64), sizes)
        values = self.sets.values[np.repeat(self.sets.offsets[:-1][targets], sizes) + within] - self.base
        keys = (local << self.shift) | values
        counts = self.sets.sizes[a]
        seg = np.repeat(np.arange(a.size), counts)
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        b_local = np.searchsorted(targets, b)
        probe = (b_local[seg] << self.shift) | (
            self.sets.values[self.sets.offsets[:-1][a][seg] + within] - self.base
        )
        pos = np.minimum(np.searchsorted(keys, probe), keys.size - 1)
        return np.bincount(seg, weights=keys[pos] == probe, minlength=a.size).astype(np.int64)

    def closure(self, seeds: np.ndarray) -> np.ndarray:
        """Whether each set is one of the seeds or connected to them through near-duplicate pairs."""
        seen = np.zeros(self.sets.sizes.size, dtype=bool)
        frontier = sorted_unique(seeds)
        seen[frontier] = True
        while frontier.size:
            nxt = self.neighbours(frontier)
            frontier = nxt[~seen[nxt]]
            seen[frontier] = True
        return seen


def _by_token(tokens: np.ndarray, rows: np.ndarray, base: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(token, row) pairs sorted by token (rows of one token in any order): one sort of packed 64-bit
    keys, several times faster than a stable argsort of the tokens."""
    row_bits = max(1, int(rows.max()).bit_length()) if rows.size else 1
    if shift + row_bits > 62:
        order = np.argsort(tokens)
        return tokens[order], rows[order]
    keys = tokens.astype(np.int64)
    keys -= base
    keys <<= row_bits
    keys |= rows
    keys.sort()
    return (keys >> row_bits) + base, keys & ((1 << row_bits) - 1)
