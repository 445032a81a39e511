"""Candidate pairs for the exact engine: prefix filtering over the global token order.

Invariant: every bound is a necessary condition for Jaccard >= c, where c is a *lower* bound of the
threshold (the largest double below it), so every pair that can reach the threshold is produced; exact
verification (:mod:`.keep`) removes the rest. Blocks are halved while their internal join is too large,
which keeps clusters of mutually similar tasks (templated prompts) from costing a quadratic number of pairs.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from pipelines.scoring.near_duplicates.arrays import chunks, prefix_entries, sorted_unique
from pipelines.scoring.near_duplicates.sets import KeyedSets

# Raw candidates allowed in one block's within-block join before the block is halved (see
# PairFinder.blocks), and the size below which blocks are never split.
_BLOCK_BUDGET = 16_000_000
_MIN_BLOCK = 1024


def _ceil_frac(num: int, den: int) -> int:
    return -((-num) // den)


def _bound_tables(c: Fraction, max_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integer filter bounds for a *lower* bound ``c`` of the threshold (all exact rationals).

    probe[s]: prefix length of a set of size s probing larger-or-equal partners: s - ceil(c*s) + 1.
    index[s]: prefix length indexed for partners at least as large: s - ceil(2c/(1+c)*s) + 1.
    min_partner[s]: smallest partner size a set of size s can match: ceil(c*s).
    alpha[k]: minimal overlap when |A| + |B| = k: ceil(c/(1+c) * k), at least 1 because any pair below
    the threshold has J > 0, i.e. shares a token.
    """
    a, b = c.numerator, c.denominator
    sizes = range(max_size + 1)
    probe = np.array([min(s, s - _ceil_frac(a * s, b) + 1) for s in sizes], dtype=np.int64)
    index = np.array([min(s, s - _ceil_frac(2 * a * s, a + b) + 1) for s in sizes], dtype=np.int64)
    min_partner = np.array([max(1, _ceil_frac(a * s, b)) for s in sizes], dtype=np.int64)
    alpha = np.array([max(1, _ceil_frac(a * k, a + b)) for k in range(2 * max_size + 1)], dtype=np.int64)
    return probe, index, min_partner, alpha


class _WideSignatures:
    """256-bit token bitmaps (4 x uint64 per row), computed lazily for the rows that need them."""

    def __init__(self, ts: KeyedSets) -> None:
        self.ts = ts
        self.sig = np.zeros((ts.sizes.size, 4), dtype=np.uint64)
        self.done = np.zeros(ts.sizes.size, dtype=bool)

    def ensure(self, rows: np.ndarray) -> None:
        todo = rows[~self.done[rows]]
        if todo.size == 0:
            return
        todo = sorted_unique(todo)
        lengths = self.ts.sizes[todo]
        _, _, tok = prefix_entries(todo, lengths, self.ts.offsets, self.ts.ranks)
        # A different multiplier than the 64-bit signature so the two filters fail independently.
        h = (tok.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(56)
        bits = np.left_shift(np.uint64(1), h & np.uint64(63))
        word = h >> np.uint64(6)
        starts = np.cumsum(lengths) - lengths
        for w in range(4):
            self.sig[todo, w] = np.bitwise_or.reduceat(np.where(word == w, bits, np.uint64(0)), starts)
        self.done[todo] = True


class Entries(NamedTuple):
    """One entry per (row, prefix position); ``key = token * stride + size(row)``."""

    key: np.ndarray
    row: np.ndarray
    pos: np.ndarray

    def where(self, mask: np.ndarray) -> Entries:
        """Select by boolean mask (keeps a key-sorted array sorted) or by index array (reorders)."""
        return Entries(self.key[mask], self.row[mask], self.pos[mask])


class PairFinder:
    """Candidate pairs by prefix filtering, narrowed by size, position and token-bitmap bounds.

    Every bound is a necessary condition for Jaccard >= c (c a lower bound of the threshold), so every
    qualifying pair is produced; exact verification removes the rest.

    Two kinds of join, both "sorted left entries x probe entries" range joins:

    * within a block (``ordered``): left = the short "index" prefix of each row, probes = the longer
      "probe" prefix; pair (A, B) with |A| <= |B| is found from A's index entries, because the first
      shared token of a qualifying pair lies within A's index prefix and B's probe prefix.
    * against kept rows of earlier blocks: both sides use the probe prefix (valid for either size order).

    Left entries are sorted by (token, size), so each probe's partners are one contiguous range; the
    size bounds and "overlap still possible after the probe position" bound just narrow that range.
    """

    def __init__(self, ts: KeyedSets, c: Fraction, reps: np.ndarray, sig: np.ndarray) -> None:
        self.ts = ts
        self.n = ts.sizes.size
        max_size = int(ts.sizes[reps].max())
        self.probe_len, self.index_len, self.min_partner, self.alpha = _bound_tables(c, max_size)
        # Largest |A| + |B| whose required overlap still fits in v tokens (alpha is non-decreasing).
        self.max_total = np.searchsorted(self.alpha, np.arange(max_size + 1), "right") - 1
        # Upper bound of |A ^ B| = |A| + |B| - 2 * overlap over all pairs with |A| + |B| <= k.
        self.max_diff = np.maximum.accumulate(np.arange(self.alpha.size) - 2 * self.alpha)
        self.stride = max_size + 1
        # The 64-bit bitmap bound rejects nearly all unrelated pairs that share a prefix token.
        self.sig = sig
        self.wide = _WideSignatures(ts)

    def entries(self, rows: np.ndarray, probe: bool, sort: bool) -> Entries:
        sizes = self.ts.sizes
        lengths = (self.probe_len if probe else self.index_len)[sizes[rows]]
        row, pos, tok = prefix_entries(rows, lengths, self.ts.offsets, self.ts.ranks)
        key = tok * self.stride + sizes[row]
        if sort:
            order = np.argsort(key, kind="stable")
            key, row, pos = key[order], row[order], pos[order]
        return Entries(key, row, pos)

    def _ranges(self, left: Entries, probes: Entries, ordered: bool) -> tuple[np.ndarray, np.ndarray]:
        size = self.ts.sizes[probes.row]
        base = probes.key - size  # token * stride
        hi_size = self.max_total[size - probes.pos] - size
        if ordered:
            hi_size = np.minimum(hi_size, size)
        lo = np.searchsorted(left.key, base + self.min_partner[size], "left")
        hi = np.searchsorted(left.key, base + hi_size, "right")
        return lo, np.maximum(hi - lo, 0)

    def count(self, left: Entries, probes: Entries) -> int:
        """Raw candidate count of the within-block join (before the per-pair filters)."""
        return int(self._ranges(left, probes, True)[1].sum())

    def join(self, left: Entries, probes: Entries, ordered: bool) -> np.ndarray:
        """Sorted unique candidate pairs as ``y * n + x`` with x < y (priority order)."""
        sizes, n = self.ts.sizes, self.n
        lo, counts = self._ranges(left, probes, ordered)
        has = np.flatnonzero(counts)
        lo, counts = lo[has], counts[has]
        p_row, p_pos = probes.row[has], probes.pos[has]
        p_size = sizes[p_row]
        p_sig = self.sig[p_row]
        max_pair_size = self.max_total[p_size - p_pos]
        if ordered:
            max_pair_size = np.minimum(max_pair_size, 2 * p_size)
        p_diff = self.max_diff[max_pair_size]
        l_sig = self.sig[left.row]
        found: list[np.ndarray] = []
        for start, stop in chunks(counts):
            cnt = counts[start:stop]
            ends = np.cumsum(cnt)
            # j enumerates every left entry in every probe range of this chunk, with one repeat.
            j = np.arange(ends[-1]) + np.repeat(lo[start:stop] - (ends - cnt), cnt)
            xor_bits = np.bitwise_count(l_sig[j] ^ np.repeat(p_sig[start:stop], cnt))
            hit = np.flatnonzero(xor_bits <= np.repeat(p_diff[start:stop], cnt))
            # Few survivors: apply the exact per-pair bounds only to them.
            j = j[hit]
            q = start + np.searchsorted(ends, hit, "right")
            a_row, b_row = left.row[j], p_row[q]
            sa, sb = sizes[a_row], p_size[q]
            need = self.alpha[sa + sb]
            # Positional bound at the first shared token: the overlap can't exceed what follows it.
            ok = (sa - left.pos[j] >= need) & (sb - p_pos[q] >= need)
            if ordered:
                # The left side holds the smaller set; equal sizes are found from both sides, keep one.
                ok &= (sa < sb) | (a_row < b_row)
            ok &= np.bitwise_count(self.sig[a_row] ^ self.sig[b_row]) <= sa + sb - 2 * need
            a_row, b_row, max_sym = a_row[ok], b_row[ok], (sa + sb - 2 * need)[ok]
            # 64 bits saturate for long tasks, so pairs of genuinely close tasks (e.g. templated prompts)
            # slip through; a 256-bit signature, built only for rows that get here, stops most of them.
            self.wide.ensure(a_row)
            self.wide.ensure(b_row)
            ok = np.bitwise_count(self.wide.sig[a_row] ^ self.wide.sig[b_row]).sum(axis=1, dtype=np.int64)
            ok = ok <= max_sym
            a_row, b_row = a_row[ok], b_row[ok]
            found.append(np.maximum(a_row, b_row) * n + np.minimum(a_row, b_row))
        if not found:
            return np.zeros(0, dtype=np.int64)
        # A pair sharing several prefix tokens is found several times.
        return sorted_unique(np.concatenate(found))

    def blocks(self, reps: np.ndarray) -> list[tuple[Entries, Entries]]:
        """Split ``reps`` (priority order) into consecutive blocks with a bounded within-block join.

        Returns (sorted index entries, probe entries) per block. A cluster of mutually similar tasks
        makes the within-block join quadratic in the cluster's share of the block, whereas joining a
        block against earlier *kept* rows only costs as much as the (few) kept members of the cluster.
        So halve blocks until the within-block raw candidate count fits the budget.
        """
        out: list[tuple[Entries, Entries]] = []

        def split(lo: int, hi: int, left: Entries, probes: Entries) -> None:
            if hi - lo <= _MIN_BLOCK or self.count(left, probes) <= _BLOCK_BUDGET:
                out.append((left, probes))
                return
            mid = reps[(lo + hi) // 2]
            split(lo, (lo + hi) // 2, left.where(left.row < mid), probes.where(probes.row < mid))
            split((lo + hi) // 2, hi, left.where(left.row >= mid), probes.where(probes.row >= mid))

        # Probes sorted too: ordered needles make searchsorted and the left-side gathers cache-friendly,
        # and a block's kept probes become the next kept segment without another sort.
        index, probes = self.entries(reps, probe=False, sort=True), self.entries(reps, probe=True, sort=True)
        split(0, reps.size, index, probes)
        return out
