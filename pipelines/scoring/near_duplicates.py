"""Exact near-duplicate removal of pattern tasks (word Jaccard), fast enough for a million tasks per scope.

Contract (see ``near_duplicates``): results are identical to the brute-force greedy reference
``near_duplicates_reference`` on every input, including the floating-point boundary of the threshold.

Design, in the order the work happens:

1. Priority order. Rows are sorted once by (eval_score desc, created_at desc, pattern_id asc) and from
   then on a row is identified by its position ``r`` in that order, so "earlier" simply means smaller r.
2. Tokenisation must equal Python's ``str.lower().split()``. For pure-ASCII rows that only contain the
   space character as whitespace this is Polars' ``to_lowercase`` + literal split on " " (empty tokens
   dropped). Every other row (non-ASCII, or ASCII whitespace such as \\t \\n \\x1c-\\x1f) is normalised by
   Python itself, because Rust's Unicode tables/whitespace class and CPython's can disagree.
3. Tokens are dictionary-encoded and re-numbered by a global order, rarest first; each row becomes a
   sorted, de-duplicated array of token ranks (CSR layout in numpy).
4. Rows with identical token sets are collapsed onto their highest-priority member (exact-duplicate
   groups would otherwise produce a quadratic number of pairs); the greedy outcome of the other members
   follows from the representative's outcome (see ``_expand_members``).
5. Candidate pairs among representatives come from prefix filtering over that global order, narrowed
   by size, position and token-bitmap bounds on the symmetric difference (64-bit, then a lazily built
   256-bit one). All bounds use the largest double *below* the threshold, so they are conservative.
6. The greedy runs over blocks of representatives in priority order: a block is first joined against
   the rows kept so far, then its undecided rows among themselves. Pairs whose earlier row is already
   dropped are never verified. Blocks are halved while their internal join is too large, which keeps
   clusters of mutually similar tasks (templated prompts) from costing a quadratic number of pairs.
7. Verification is exact (integer intersection sizes) and the decision is ``i / u >= threshold`` in IEEE
   double arithmetic, bit-for-bit what the Python reference computes; the sequential part of the greedy
   is a Python loop over verified near-duplicate pairs only.

Measured numbers and the effect of each optimisation are recorded in ``benchmarks/bench_dedup.py``.
"""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timedelta
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import polars as pl

JACCARD_THRESHOLD = 0.92

_OUTPUT_SCHEMA = {
    "pattern_id": pl.String,
    "kept": pl.Boolean,
    "duplicate_of": pl.String,
    "similarity": pl.Float64,
}
_REQUIRED = ("pattern_id", "task", "eval_score", "created_at")
# ASCII characters that Python's str.split() treats as whitespace besides " ": \t \n \v \f \r and the
# information separators \x1c-\x1f (which the Unicode White_Space property, and so regex \s, does not).
_ODD_ASCII_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f]"
# Candidate pairs materialised at once. ~10 temporaries each; this size keeps them cache-resident,
# which measured faster than larger chunks (and bounds memory regardless of the input).
_CHUNK = 1 << 18
# Candidate pairs verified per step of the greedy walk (see _KeepState.walk): small enough that
# clusters of similar tasks get pruned early, large enough that ordinary inputs need a single step.
_PAIR_BATCH = 200_000
# Raw candidates allowed in one block's within-block join before the block is halved (see
# _PairFinder.blocks), and the size below which blocks are never split.
_BLOCK_BUDGET = 16_000_000
_MIN_BLOCK = 1024


# --------------------------------------------------------------------------------------------------
# Input handling shared by the fast path and the reference
# --------------------------------------------------------------------------------------------------


def _collect(patterns: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Select and type the columns we use and reject inputs the contract cannot answer."""
    lf = patterns.lazy()
    missing = [c for c in _REQUIRED if c not in lf.collect_schema().names()]
    if missing:
        raise ValueError(f"patterns is missing column(s): {missing}")
    df = lf.select(
        pl.col("pattern_id").cast(pl.String),
        pl.col("task").cast(pl.String),
        pl.col("eval_score").cast(pl.Float64),
        pl.col("created_at"),
    ).collect()
    ids = df["pattern_id"]
    # duplicate_of names a pattern by id, so ids must identify rows unambiguously.
    if ids.null_count():
        raise ValueError("pattern_id must not be null")
    if ids.n_unique() != df.height:
        raise ValueError("pattern_id must be unique")
    return df


def _empty_result() -> pl.DataFrame:
    return pl.DataFrame(schema=_OUTPUT_SCHEMA)


# --------------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------------


class _TokenSets(NamedTuple):
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


def _tokenize(tasks: pl.Series, with_vocabulary: bool = False) -> tuple[_TokenSets, pl.DataFrame | None]:
    """Exact ``set(task.lower().split())`` for every row, dictionary-encoded (no hashing, no collisions),
    and with ``with_vocabulary`` the ``(token, rank)`` table of every token."""
    n = tasks.len()
    tasks = tasks.fill_null("")
    # Only rows whose lowercasing/splitting Polars provably does like CPython stay on the fast path.
    exotic = (tasks.str.len_bytes() != tasks.str.len_chars()) | tasks.str.contains(_ODD_ASCII_WS)
    low = tasks.str.to_lowercase()
    idx = exotic.arg_true()
    if idx.len():
        normalised = [" ".join(t.lower().split()) for t in tasks.gather(idx).to_list()]
        # Scatter after lowercasing: Rust's to_lowercase must never touch Python's output, since the two
        # Unicode tables may disagree (e.g. characters added in a newer Unicode version).
        low = low.scatter(idx, pl.Series(normalised, dtype=pl.String))
    # A fresh Categories keeps the dictionary private to this call (freed with the data) instead of
    # growing the process-global one; the streaming engine splits and encodes on all cores.
    cats = pl.Categories.random()
    parts = (
        pl.DataFrame({"t": low})
        .lazy()
        .select(pl.col("t").str.split(" ").cast(pl.List(pl.Categorical(cats))))
        .collect(engine="streaming")
        .to_series()
    )
    del low
    lens = parts.list.len().to_numpy()
    codes = parts.explode().to_physical().to_numpy()
    # Look up "" while `parts` is alive: the Categories mapping is freed together with its last user.
    # Runs of spaces (and empty tasks) yield "" tokens, which str.split() without argument never does.
    empty_code = int(cats[""]) if "" in cats else -1  # (Categories has no .get)
    token_strings = cats.to_series() if with_vocabulary else None
    del parts
    n_codes = int(codes.max()) + 1 if codes.size else 0
    # Global order: rarest first, so prefixes hold rare tokens and candidate lists stay short. Counting
    # occurrences instead of document frequency is fine: any fixed total order keeps prefix filtering exact.
    freq = np.bincount(codes, minlength=n_codes)
    if empty_code >= 0:
        freq[empty_code] = codes.size + 1  # rank it last, then drop it below
    rank_of_code = np.empty(n_codes, dtype=np.int64)
    rank_of_code[np.argsort(freq, kind="stable")] = np.arange(n_codes, dtype=np.int64)
    vocabulary = None
    if token_strings is not None:
        table = pl.DataFrame({"token": token_strings.head(n_codes), "rank": rank_of_code})
        vocabulary = table.filter(pl.col("token") != "")
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
    return _TokenSets(offsets, sizes, keys & mask, keys, shift), vocabulary


# --------------------------------------------------------------------------------------------------
# Exact intersections
# --------------------------------------------------------------------------------------------------


def _intersections(xs: np.ndarray, ys: np.ndarray, ts: _TokenSets) -> np.ndarray:
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
    for start, stop in _chunks(counts):
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


def _chunks(counts: np.ndarray, budget: int | None = None) -> list[tuple[int, int]]:
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


# --------------------------------------------------------------------------------------------------
# Candidate generation
# --------------------------------------------------------------------------------------------------


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


def _prefix_entries(
    rows: np.ndarray, lengths: np.ndarray, offsets: np.ndarray, ranks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, position, token) for the first ``lengths[i]`` tokens of each of ``rows``."""
    ent_row = np.repeat(rows, lengths)
    ent_pos = np.arange(ent_row.size, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return ent_row, ent_pos, ranks[offsets[ent_row] + ent_pos]


class _WideSignatures:
    """256-bit token bitmaps (4 x uint64 per row), computed lazily for the rows that need them."""

    def __init__(self, ts: _TokenSets) -> None:
        self.ts = ts
        self.sig = np.zeros((ts.sizes.size, 4), dtype=np.uint64)
        self.done = np.zeros(ts.sizes.size, dtype=bool)

    def ensure(self, rows: np.ndarray) -> None:
        todo = rows[~self.done[rows]]
        if todo.size == 0:
            return
        todo = np.sort(todo)
        todo = todo[np.concatenate(([True], todo[1:] != todo[:-1]))]
        lengths = self.ts.sizes[todo]
        _, _, tok = _prefix_entries(todo, lengths, self.ts.offsets, self.ts.ranks)
        # A different multiplier than the 64-bit signature so the two filters fail independently.
        h = (tok.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)) >> np.uint64(56)
        bits = np.left_shift(np.uint64(1), h & np.uint64(63))
        word = h >> np.uint64(6)
        starts = np.cumsum(lengths) - lengths
        for w in range(4):
            self.sig[todo, w] = np.bitwise_or.reduceat(np.where(word == w, bits, np.uint64(0)), starts)
        self.done[todo] = True


class _Entries(NamedTuple):
    """One entry per (row, prefix position); ``key = token * stride + size(row)``."""

    key: np.ndarray
    row: np.ndarray
    pos: np.ndarray

    def where(self, mask: np.ndarray) -> _Entries:
        """Select by boolean mask (keeps a key-sorted array sorted) or by index array (reorders)."""
        return _Entries(self.key[mask], self.row[mask], self.pos[mask])


def _unique_sorted(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    keep = np.ones(a.size, dtype=bool)
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


class _PairFinder:
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

    def __init__(self, ts: _TokenSets, c: Fraction, reps: np.ndarray, sig: np.ndarray) -> None:
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

    def entries(self, rows: np.ndarray, probe: bool, sort: bool) -> _Entries:
        sizes = self.ts.sizes
        lengths = (self.probe_len if probe else self.index_len)[sizes[rows]]
        row, pos, tok = _prefix_entries(rows, lengths, self.ts.offsets, self.ts.ranks)
        key = tok * self.stride + sizes[row]
        if sort:
            order = np.argsort(key, kind="stable")
            key, row, pos = key[order], row[order], pos[order]
        return _Entries(key, row, pos)

    def _ranges(self, left: _Entries, probes: _Entries, ordered: bool) -> tuple[np.ndarray, np.ndarray]:
        size = self.ts.sizes[probes.row]
        base = probes.key - size  # token * stride
        hi_size = self.max_total[size - probes.pos] - size
        if ordered:
            hi_size = np.minimum(hi_size, size)
        lo = np.searchsorted(left.key, base + self.min_partner[size], "left")
        hi = np.searchsorted(left.key, base + hi_size, "right")
        return lo, np.maximum(hi - lo, 0)

    def count(self, left: _Entries, probes: _Entries) -> int:
        """Raw candidate count of the within-block join (before the per-pair filters)."""
        return int(self._ranges(left, probes, True)[1].sum())

    def join(self, left: _Entries, probes: _Entries, ordered: bool) -> np.ndarray:
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
        for start, stop in _chunks(counts):
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
        return _unique_sorted(np.concatenate(found))

    def blocks(self, reps: np.ndarray) -> list[tuple[_Entries, _Entries]]:
        """Split ``reps`` (priority order) into consecutive blocks with a bounded within-block join.

        Returns (sorted index entries, probe entries) per block. A cluster of mutually similar tasks
        makes the within-block join quadratic in the cluster's share of the block, whereas joining a
        block against earlier *kept* rows only costs as much as the (few) kept members of the cluster.
        So halve blocks until the within-block raw candidate count fits the budget.
        """
        out: list[tuple[_Entries, _Entries]] = []

        def split(lo: int, hi: int, left: _Entries, probes: _Entries) -> None:
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


# --------------------------------------------------------------------------------------------------
# Greedy keep rule
# --------------------------------------------------------------------------------------------------


def _similarities(xs: np.ndarray, ys: np.ndarray, ts: _TokenSets) -> np.ndarray:
    """Exact word Jaccard as the reference computes it (pairs of non-empty sets)."""
    inter = _intersections(xs, ys, ts)
    # IEEE division of exact integers (< 2**53) gives the same correctly rounded double as Python's
    # int / int, so comparing this with the threshold is bit-for-bit `len(a&b)/len(a|b) >= t`.
    return inter / (ts.sizes[xs] + ts.sizes[ys] - inter)


class _KeepState:
    """Greedy outcome so far: ``dup[r]`` (-1 while kept), ``sim[r]`` and a dropped flag per row.

    Candidate pairs arrive as sorted ``y * n + x`` (x < y). Only pairs whose x is kept can decide
    anything, so pairs with a dropped x are discarded without verification.
    """

    def __init__(self, ts: _TokenSets, t: float) -> None:
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


def _keep_rule(
    reps: np.ndarray, ts: _TokenSets, sig: np.ndarray, c: Fraction, t: float
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy keep rule over representative rows, block by block in priority order.

    Each block is first joined against the rows kept so far (a few key-sorted segments, merged
    LSM-style so their number stays logarithmic) and those pairs are settled in bulk; then the block's
    still-undecided rows are joined among themselves and walked. Returns (dup_of, similarity) per row.
    """
    state = _KeepState(ts, t)
    if reps.size < 2:
        return state.dup, state.sim
    finder = _PairFinder(ts, c, reps, sig)
    n = ts.sizes.size
    kept_segments: list[_Entries] = []
    for left, probes in finder.blocks(reps):
        if kept_segments:
            found = [finder.join(seg, probes, ordered=False) for seg in kept_segments]
            ys, xs = np.divmod(_unique_sorted(np.concatenate(found)), n)
            state.settle(xs, ys)
            left = left.where(state.dropped[left.row] == 0)
            probes = probes.where(state.dropped[probes.row] == 0)
        state.walk(finder.join(left, probes, ordered=True))
        kept_segments.append(probes.where(state.dropped[probes.row] == 0))
        while len(kept_segments) > 1 and kept_segments[-2].key.size <= 2 * kept_segments[-1].key.size:
            b, a = kept_segments.pop(), kept_segments.pop()
            merged = _Entries(*(np.concatenate([u, v]) for u, v in zip(a, b, strict=True)))
            kept_segments.append(merged.where(np.argsort(merged.key, kind="stable")))
    return state.dup, state.sim


def _expand_members(dup: np.ndarray, sim: np.ndarray, members: np.ndarray, member_rep: np.ndarray) -> None:
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


def _signatures(ts: _TokenSets) -> np.ndarray:
    """64-bit token bitmap per row (one hashed bit per token; 0 for empty rows).

    popcount(sig_a ^ sig_b) <= |A ^ B| for any two sets: each differing bit needs a token that only one
    of the sets has. Also a cheap ingredient of the set hash used to group identical sets.
    """
    # In place: one 8-byte temporary per token instead of three.
    bits = ts.ranks.astype(np.uint64)
    bits *= np.uint64(0x9E3779B97F4A7C15)
    bits >>= np.uint64(58)
    np.left_shift(np.uint64(1), bits, out=bits)
    sig = np.zeros(ts.sizes.size, dtype=np.uint64)
    nonempty = ts.sizes > 0
    if bits.size:
        sig[nonempty] = np.bitwise_or.reduceat(bits, ts.offsets[:-1][nonempty])
    return sig


def _set_hashes(ts: _TokenSets, rows: np.ndarray, sig: np.ndarray) -> np.ndarray:
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


def _collapse_identical(ts: _TokenSets, sig: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split non-empty rows into representatives and members of identical-set groups.

    Groups come from a 64-bit set hash, then every member is verified to be exactly equal to its
    representative; a member of a colliding group just stays its own representative, which is always
    correct (only slower).
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
    same = (sizes[members] == sizes[member_rep]) & (_intersections(members, member_rep, ts) == sizes[members])
    reps = np.sort(np.concatenate([r[first], members[~same]]))
    return reps, members[same], member_rep[same]


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------


def _priority_sorted(df: pl.DataFrame) -> pl.DataFrame:
    """Rows in keep-rule priority order, with their input position in ``_input_pos``.

    NaN scores sort above +inf and nulls go last (Polars' convention), -0.0 ties with 0.0. Sorting by id
    first and then stably by the numeric keys measured faster than one three-key sort (row encoding of
    the strings), with the same result since ids are unique.
    """
    return (
        df.with_row_index("_input_pos")
        .sort("pattern_id")
        .sort(["eval_score", "created_at"], descending=True, nulls_last=True, maintain_order=True)
    )


class TokenSets(NamedTuple):
    """Token sets as distinct increasing ranks in CSR layout: ``ranks[offsets[k]:offsets[k + 1]]`` is the
    set of input row ``rows[k]`` (the sets come in the keep rule's priority order, which spares copying
    them into input order); ``vocabulary`` maps each token to its rank."""

    offsets: np.ndarray
    ranks: np.ndarray
    rows: np.ndarray
    vocabulary: pl.DataFrame


def near_duplicates_with_tokens(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float
) -> tuple[pl.DataFrame, TokenSets]:
    """:func:`near_duplicates`, and the token sets it computed on the way (for a caller that keeps them,
    such as the incremental cache, which would otherwise tokenise every task a second time).

    Needs ``0 < threshold <= 1``: only then is every task tokenised.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    result, tokens = _near_duplicates(patterns, threshold, keep_tokens=True)
    if tokens is None:  # no rows: nothing was tokenised
        empty = np.zeros(0, dtype=np.int64)
        vocabulary = pl.DataFrame(schema={"token": pl.String, "rank": pl.Int64})
        return result, TokenSets(np.zeros(1, dtype=np.int64), empty, empty, vocabulary)
    return result, tokens


def near_duplicates(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float = JACCARD_THRESHOLD
) -> pl.DataFrame:
    """Flag near-duplicate tasks within one scope, keeping the best pattern of each near-duplicate group.

    Input columns (others ignored): pattern_id (String, unique), task (String), eval_score (Float64),
    created_at (Datetime("us", "UTC")).
    Returns one row per input pattern, in input order, with columns:
      pattern_id (String), kept (Boolean), duplicate_of (String, null when kept),
      similarity (Float64, the Jaccard with duplicate_of; null when kept).

    Similarity is Engramia's word Jaccard on ``set(task.lower().split())`` (0.0 if either set is empty);
    two tasks are near-duplicates when similarity >= threshold. Walking patterns by eval_score desc,
    created_at desc, pattern_id asc, a pattern is dropped when an already kept pattern is a near-duplicate
    (``duplicate_of`` = the earliest such kept pattern), otherwise kept. The result equals
    ``near_duplicates_reference`` exactly. A null task counts as empty; a NaN score sorts above every
    number and null scores/timestamps sort last.
    """
    return _near_duplicates(patterns, threshold)[0]


def _near_duplicates(
    patterns: pl.DataFrame | pl.LazyFrame, threshold: float, keep_tokens: bool = False
) -> tuple[pl.DataFrame, TokenSets | None]:
    """:func:`near_duplicates`, with ``keep_tokens`` also the token sets (None when nothing was
    tokenised)."""
    df = _collect(patterns)
    if df.height == 0:
        return _empty_result(), None
    df = _priority_sorted(df)
    tokens = None
    ts = None
    if float(threshold) <= 1.0:  # otherwise (t > 1 or NaN) nothing is ever similar enough: all kept
        ts, vocabulary = _tokenize(df["task"], with_vocabulary=keep_tokens)
        if vocabulary is not None:
            rows = df["_input_pos"].to_numpy().astype(np.int64)
            tokens = TokenSets(ts.offsets, ts.ranks, rows, vocabulary)
    return _decide(df, ts, threshold), tokens


def csr_take(offsets: np.ndarray, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` (in that order) of the CSR layout ``values[offsets[i]:offsets[i + 1]]``."""
    sizes = np.diff(offsets)[rows]
    taken = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=taken[1:])
    starts = np.repeat(offsets[:-1][rows] - taken[:-1], sizes)
    return taken, values[starts + np.arange(taken[-1], dtype=np.int64)]


def near_duplicates_of_sets(
    patterns: pl.DataFrame, offsets: np.ndarray, ranks: np.ndarray, threshold: float
) -> pl.DataFrame:
    """:func:`near_duplicates` for patterns whose token sets are already known: row i's set is
    ``ranks[offsets[i]:offsets[i + 1]]``, distinct and increasing, in any fixed token order (the result
    does not depend on the order; rarer tokens first only makes it faster). ``patterns`` needs no task."""
    missing = [c for c in ("pattern_id", "eval_score", "created_at") if c not in patterns.columns]
    if missing:
        raise ValueError(f"patterns is missing column(s): {missing}")
    if patterns.height == 0:
        return _empty_result()
    df = _priority_sorted(
        patterns.select(
            pl.col("pattern_id").cast(pl.String), pl.col("eval_score").cast(pl.Float64), pl.col("created_at")
        )
    )
    order = df["_input_pos"].to_numpy().astype(np.int64)
    new_offsets, values = csr_take(offsets, ranks, order)
    sizes = np.diff(new_offsets)
    base = int(values.min()) if values.size else 0
    values = values.astype(np.int64) - base  # ranks may come as 32-bit (the cache's)
    shift = max(1, int(values.max()).bit_length()) if values.size else 1
    keys = (np.repeat(np.arange(order.size, dtype=np.int64), sizes) << shift) | values
    ts = _TokenSets(new_offsets, sizes, values, keys, shift)
    return _decide(df, ts if float(threshold) <= 1.0 else None, threshold)


def _decide(df: pl.DataFrame, ts: _TokenSets | None, threshold: float) -> pl.DataFrame:
    """The keep rule over rows in priority order (``_priority_sorted``) with their token sets ``ts``
    (None when the threshold is above 1 or NaN: nothing is similar enough); the result in input order."""
    n = df.height
    t = float(threshold)
    dup = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan)
    if ts is not None:
        sizes = ts.sizes
        if t <= 0.0:
            # Every pair qualifies, even empty tasks (similarity 0.0 >= t): the first row absorbs all.
            others = np.arange(1, n, dtype=np.int64)
            first = np.zeros(n - 1, dtype=np.int64)
            inter = _intersections(first, others, ts)
            union = sizes[0] + sizes[others] - inter
            dup[1:] = 0
            with np.errstate(invalid="ignore", divide="ignore"):
                sim[1:] = np.where((sizes[0] > 0) & (sizes[others] > 0), inter / union, 0.0)
        else:
            sig = _signatures(ts)
            reps, members, member_rep = _collapse_identical(ts, sig)
            # Filters use the largest double below t: any i/u whose rounded quotient is >= t exceeds it.
            c = Fraction(math.nextafter(t, -math.inf))
            dup, sim = _keep_rule(reps, ts, sig, c, t)
            _expand_members(dup, sim, members, member_rep)

    ids = df["pattern_id"]
    dropped = dup >= 0
    out = pl.DataFrame(
        {
            "_input_pos": df["_input_pos"],
            "pattern_id": ids,
            "kept": ~dropped,
            "duplicate_of": ids.gather(np.where(dropped, dup, 0)),
            "similarity": sim,
        }
    ).with_columns(
        pl.when(pl.col("kept")).then(None).otherwise(pl.col("duplicate_of")).alias("duplicate_of"),
        pl.when(pl.col("kept")).then(None).otherwise(pl.col("similarity")).alias("similarity"),
    )
    return out.sort("_input_pos").drop("_input_pos")


def _reference_priority_key(row: dict) -> tuple:
    score, created = row["eval_score"], row["created_at"]
    if score is None:
        score_key: tuple = (2, 0.0)
    elif math.isnan(score):
        score_key = (0, 0.0)
    else:
        score_key = (1, -score)
    if created is None:
        created_key: tuple = (1, 0)
    else:
        epoch = datetime(1970, 1, 1, tzinfo=created.tzinfo)
        created_key = (0, -((created - epoch) // timedelta(microseconds=1)))
    return score_key, created_key, row["pattern_id"]


def near_duplicates_reference(patterns: pl.DataFrame, threshold: float = JACCARD_THRESHOLD) -> pl.DataFrame:
    """Brute-force reference for ``near_duplicates`` (tests and benchmarks only: O(n^2) pure Python).

    It is the executable form of the contract: Engramia's ``jaccard`` on every (kept, candidate) pair,
    walked greedily in priority order. Keep it boring; ``near_duplicates`` must match it exactly.
    """
    threshold = float(threshold)  # as near_duplicates does
    df = _collect(patterns)
    rows = df.to_dicts()
    order = sorted(range(len(rows)), key=lambda i: _reference_priority_key(rows[i]))
    word_sets = [set((r["task"] or "").lower().split()) for r in rows]

    def jaccard(a: set[str], b: set[str]) -> float:
        if not a or not b:
            return 0.0
        return len(a & b) / len(a | b)

    kept: list[int] = []
    result: dict[int, tuple[bool, str | None, float | None]] = {}
    for i in order:
        for k in kept:
            s = jaccard(word_sets[k], word_sets[i])
            if s >= threshold:
                result[i] = (False, rows[k]["pattern_id"], s)
                break
        else:
            kept.append(i)
            result[i] = (True, None, None)
    return pl.DataFrame(
        {
            "pattern_id": [r["pattern_id"] for r in rows],
            "kept": [result[i][0] for i in range(len(rows))],
            "duplicate_of": [result[i][1] for i in range(len(rows))],
            "similarity": [result[i][2] for i in range(len(rows))],
        },
        schema=_OUTPUT_SCHEMA,
    )
