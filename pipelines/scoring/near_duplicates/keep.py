"""The greedy keep rule of the exact engine, block by block in priority order.

Invariants: rows are identified by their position in priority order, so "earlier" means a smaller
row; a row is dropped exactly when an earlier *kept* row reaches the threshold with it, and then names
the earliest such row. Verification is exact (integer intersection sizes) and the decision is
``i / u >= threshold`` in IEEE double arithmetic, bit-for-bit what the reference computes; the
sequential part is a Python loop over verified near-duplicate pairs only.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np

from pipelines.scoring.near_duplicates.arrays import sorted_unique
from pipelines.scoring.near_duplicates.pairs import Entries, PairFinder
from pipelines.scoring.near_duplicates.sets import KeyedSets, intersections

# Candidate pairs verified per step of the greedy walk (see _KeepState.walk): small enough that
# clusters of similar tasks get pruned early, large enough that ordinary inputs need a single step.
_PAIR_BATCH = 200_000


def _similarities(xs: np.ndarray, ys: np.ndarray, ts: KeyedSets) -> np.ndarray:
    """Exact word Jaccard as the reference computes it (pairs of non-empty sets)."""
    inter = intersections(xs, ys, ts)
    # IEEE division of exact integers (< 2**53) gives the same correctly rounded double as Python's
    # int / int, so comparing this with the threshold is bit-for-bit `len(a&b)/len(a|b) >= t`.
    return inter / (ts.sizes[xs] + ts.sizes[ys] - inter)


class _KeepState:
    """Greedy outcome so far: ``dup[r]`` (-1 while kept), ``sim[r]`` and a dropped flag per row.

    Candidate pairs arrive as sorted ``y * n + x`` (x < y). Only pairs whose x is kept can decide
    anything, so pairs with a dropped x are discarded without verification.
    """

    def __init__(self, ts: KeyedSets, t: float) -> None:
        n = ts.sizes.size
        self.ts, self.t, self.n = ts, t, n
        self.dup = np.full(n, -1, dtype=np.int64)
        self.sim = np.full(n, np.nan)
        # One buffer seen both as a bytearray (fast scalar access in the walk) and as a numpy array.
        self.dropped_buf = bytearray(n)
        self.dropped = np.frombuffer(self.dropped_buf, dtype=np.uint8)

    def settle(self, xs: np.ndarray, ys: np.ndarray) -> None:
        """Pairs (sorted by y, x) whose x already has its final status: decide their y in bulk."""
        sel = np.flatnonzero(self.dropped[xs] == 0)
        s = _similarities(xs[sel], ys[sel], self.ts)
        near = s >= self.t
        hx, hy, hs = xs[sel][near], ys[sel][near], s[near]
        # The earliest kept near-duplicate is the first pair of each y.
        first = np.ones(hy.size, dtype=bool)
        np.not_equal(hy[1:], hy[:-1], out=first[1:])
        hy = hy[first]
        self.dup[hy], self.sim[hy], self.dropped[hy] = hx[first], hs[first], 1

    def walk(self, pairs: np.ndarray) -> None:
        """Pairs among rows that are still undecided, in batches of y ranges.

        When a batch starts, every x before it is final (settled in bulk); only pairs inside the batch
        need the sequential walk, in (y, x) order, where x < y is always decided before y.
        """
        ys_all, xs_all = np.divmod(pairs, self.n)
        dropped, buf = self.dropped, self.dropped_buf
        for start, stop in _pair_batches(ys_all):
            xs, ys = xs_all[start:stop], ys_all[start:stop]
            earlier = xs < ys[0]
            self.settle(xs[earlier], ys[earlier])
            sel = np.flatnonzero(~earlier & (dropped[xs] == 0) & (dropped[ys] == 0))
            s = _similarities(xs[sel], ys[sel], self.ts)
            near = s >= self.t
            for x, y, sxy in zip(
                xs[sel][near].tolist(), ys[sel][near].tolist(), s[near].tolist(), strict=True
            ):
                if not buf[y] and not buf[x]:
                    buf[y] = 1
                    self.dup[y] = x
                    self.sim[y] = sxy


def _pair_batches(ys: np.ndarray, budget: int | None = None) -> list[tuple[int, int]]:
    """[start, stop) runs of ``ys`` (sorted) of about ``budget`` pairs that never split one y's pairs."""
    if ys.size == 0:
        return []
    budget = budget or _PAIR_BATCH
    cuts = np.searchsorted(ys, ys[np.arange(budget, ys.size, budget)], "left").tolist()
    bounds = [0, *sorted({c for c in cuts if 0 < c < ys.size}), ys.size]
    return list(itertools.pairwise(bounds))


def keep_rule(
    reps: np.ndarray, ts: KeyedSets, sig: np.ndarray, c: Fraction, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy keep rule over representative rows, block by block in priority order.

    Each block is first joined against the rows kept so far (a few key-sorted segments, merged
    LSM-style so their number stays logarithmic) and those pairs are settled in bulk; then the block's
    still-undecided rows are joined among themselves and walked. Returns (dup_of, similarity) per row.
    """
    state = _KeepState(ts, t)
    if reps.size < 2:
        return state.dup, state.sim
    finder = PairFinder(ts, c, reps, sig)
    n = ts.sizes.size
    kept_segments: list[Entries] = []
    for left, probes in finder.blocks(reps):
        if kept_segments:
            found = [finder.join(seg, probes, ordered=False) for seg in kept_segments]
            ys, xs = np.divmod(sorted_unique(np.concatenate(found)), n)
            state.settle(xs, ys)
            left = left.where(state.dropped[left.row] == 0)
            probes = probes.where(state.dropped[probes.row] == 0)
        state.walk(finder.join(left, probes, ordered=True))
        kept_segments.append(probes.where(state.dropped[probes.row] == 0))
        while len(kept_segments) > 1 and kept_segments[-2].key.size <= 2 * kept_segments[-1].key.size:
            b, a = kept_segments.pop(), kept_segments.pop()
            merged = Entries(*(np.concatenate([u, v]) for u, v in zip(a, b, strict=True)))
            kept_segments.append(merged.where(np.argsort(merged.key, kind="stable")))
    return state.dup, state.sim


def expand_members(dup: np.ndarray, sim: np.ndarray, members: np.ndarray, member_rep: np.ndarray) -> None:
    """Give rows whose token set equals an earlier representative's set their greedy outcome (in place).

    If the representative h was kept, the member is dropped as a duplicate of h (Jaccard 1.0): no kept row
    before h can be similar to h's set. If h was dropped as a duplicate of k, the member sees exactly the
    same earlier kept rows (same set), and k is the earliest of them, so it inherits (k, sim(h, k)).
    Members are always dropped, so they never influence any other row's decision.
    """
    rep_dup = dup[member_rep]
    kept_rep = rep_dup < 0
    dup[members] = np.where(kept_rep, member_rep, rep_dup)
    sim[members] = np.where(kept_rep, 1.0, sim[member_rep])
