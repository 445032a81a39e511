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
5. Candidate pairs among representatives come from prefix filtering (probe prefix of the larger set
   against the shorter "mid" prefix of the smaller set), restricted by size, position and a 64-bit
   token-bitmap bound on the symmetric difference. All bounds use a threshold that is a little *lower*
   than the float threshold, so they are conservative.
6. Survivors are verified exactly (integer intersection sizes) and the decision is ``i / u >= threshold``
   evaluated in IEEE double arithmetic, which is bit-for-bit what the Python reference computes.
7. The greedy keep rule runs in Python over the (small) list of verified pairs.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta
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
# Bound on candidate pairs materialised at once; ~10 int64 temporaries each, so ~0.3 GB per chunk.
_CHUNK = 4_000_000


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


def _tokenize(tasks: pl.Series) -> _TokenSets:
    """Exact ``set(task.lower().split())`` for every row, dictionary-encoded (no hashing, no collisions)."""
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
    empty_code = cats[""] if "" in cats else None
    del parts
    # Runs of spaces (and empty tasks) yield "" tokens; str.split() without argument has none.
    if empty_code is not None:
        nonempty = codes != empty_code
        lens = np.bincount(np.repeat(np.arange(n), lens)[nonempty], minlength=n)
        codes = codes[nonempty]
    if codes.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return _TokenSets(np.zeros(n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64), z, z, 0)
    # Global order: rarest first, so prefixes hold rare tokens and candidate lists stay short. Counting
    # occurrences instead of document frequency is fine: any fixed total order keeps prefix filtering exact.
    n_codes = int(codes.max()) + 1
    freq = np.bincount(codes, minlength=n_codes)
    rank_of_code = np.empty(n_codes, dtype=np.int64)
    rank_of_code[np.argsort(freq, kind="stable")] = np.arange(n_codes, dtype=np.int64)
    shift = max(1, int(n_codes - 1).bit_length())
    keys = np.repeat(np.arange(n, dtype=np.int64) << shift, lens)
    keys |= rank_of_code[codes]
    del codes
    # Rows are already contiguous, so this mostly sorts tokens within each row.
    keys.sort()
    # Sets, not bags: drop repeated words within a row.
    keep = np.empty(keys.size, dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    keys = keys[keep]
    sizes = np.bincount(keys >> shift, minlength=n).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return _TokenSets(offsets, sizes, keys & ((1 << shift) - 1), keys, shift)


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


def _chunks(counts: np.ndarray, budget: int = _CHUNK) -> list[tuple[int, int]]:
    """Split items that expand to ``counts`` elements into [start, stop) runs of about ``budget`` elements.

    Bounds the memory of the vectorised expansion; an item larger than the budget simply gets its own run.
    """
    if counts.size == 0:
        return []
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


def _candidate_pairs(reps: np.ndarray, ts: _TokenSets, c: Fraction) -> np.ndarray:
    """Unique candidate pairs (x < y, as x * n + y) among ``reps`` that may reach Jaccard >= c.

    Every pair with Jaccard >= c is returned (prefix, size, positional and bitmap filters are all
    necessary conditions); false positives are removed later by exact verification.

    Pair (A, B) with |A| <= |B| is generated when a token among the first ``index_len[|A|]`` of A equals a
    token among the first ``probe_len[|B|]`` of B: the first shared token of any qualifying pair lies in
    both. Index entries are sorted by (token, size), so each probe entry's partners form one contiguous
    range, and the size and "overlap left after the probe position" bounds just narrow that range.
    """
    offsets, sizes, ranks = ts.offsets, ts.sizes, ts.ranks
    n = sizes.size
    if reps.size < 2:
        return np.zeros(0, dtype=np.int64)
    max_size = int(sizes[reps].max())
    probe_len, index_len, min_partner, alpha = _bound_tables(c, max_size)
    # Largest |A| + |B| whose required overlap still fits in v tokens (alpha is non-decreasing).
    max_total = np.searchsorted(alpha, np.arange(max_size + 1), "right") - 1
    # Upper bound of |A ^ B| = |A| + |B| - 2 * overlap over all pairs with |A| + |B| <= k.
    max_diff = np.maximum.accumulate(np.arange(alpha.size) - 2 * alpha)

    # 64-bit signature, one bit per hashed token: popcount(sig_a ^ sig_b) <= |A ^ B| for any two sets.
    # It rejects nearly all unrelated pairs that share a prefix token with a few cheap sequential ops.
    bit = (ranks.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(58)
    sig = np.zeros(n, dtype=np.uint64)
    nonempty = sizes > 0
    sig[nonempty] = np.bitwise_or.reduceat(np.left_shift(np.uint64(1), bit), offsets[:-1][nonempty])
    del bit

    stride = max_size + 1
    i_row, i_pos, i_tok = _prefix_entries(reps, index_len[sizes[reps]], offsets, ranks)
    i_key = i_tok * stride + sizes[i_row]
    order = np.argsort(i_key, kind="stable")
    i_key, i_row, i_pos = i_key[order], i_row[order], i_pos[order]
    i_sig = sig[i_row]
    del order, i_tok

    p_row, p_pos, p_tok = _prefix_entries(reps, probe_len[sizes[reps]], offsets, ranks)
    p_size = sizes[p_row]
    hi_size = np.minimum(p_size, max_total[p_size - p_pos] - p_size)
    lo = np.searchsorted(i_key, p_tok * stride + min_partner[p_size], "left")
    hi = np.searchsorted(i_key, p_tok * stride + hi_size, "right")
    counts = np.maximum(hi - lo, 0)
    has = np.flatnonzero(counts)
    p_row, p_pos, p_size, lo, counts = p_row[has], p_pos[has], p_size[has], lo[has], counts[has]
    p_sig, p_diff = sig[p_row], max_diff[2 * p_size]
    del p_tok, hi, has

    found: list[np.ndarray] = []
    for start, stop in _chunks(counts):
        cnt = counts[start:stop]
        ends = np.cumsum(cnt)
        # j enumerates every index entry in every probe range of this chunk, with one repeat.
        j = np.arange(ends[-1]) + np.repeat(lo[start:stop] - (ends - cnt), cnt)
        xor_bits = np.bitwise_count(i_sig[j] ^ np.repeat(p_sig[start:stop], cnt))
        hit = np.flatnonzero(xor_bits <= np.repeat(p_diff[start:stop], cnt))
        # Few survivors: apply the exact per-pair bounds only to them.
        j = j[hit]
        q = start + np.searchsorted(ends, hit, "right")
        a_row, b_row = i_row[j], p_row[q]
        sa, sb = sizes[a_row], p_size[q]
        need = alpha[sa + sb]
        # The index side holds the smaller set; equal sizes are found from both sides, keep one.
        ok = (sa < sb) | (a_row < b_row)
        # Positional bound at the first shared token: the overlap can't exceed what follows it.
        ok &= (sa - i_pos[j] >= need) & (sb - p_pos[q] >= need)
        ok &= np.bitwise_count(sig[a_row] ^ sig[b_row]) <= sa + sb - 2 * need
        a_row, b_row = a_row[ok], b_row[ok]
        found.append(np.minimum(a_row, b_row) * n + np.maximum(a_row, b_row))
    if not found:
        return np.zeros(0, dtype=np.int64)
    pairs = np.sort(np.concatenate(found))
    keep = np.ones(pairs.size, dtype=bool)
    np.not_equal(pairs[1:], pairs[:-1], out=keep[1:])
    return pairs[keep]


# --------------------------------------------------------------------------------------------------
# Greedy keep rule
# --------------------------------------------------------------------------------------------------


def _greedy(n: int, xs: np.ndarray, ys: np.ndarray, sims: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply the keep rule to verified near-duplicate pairs (x < y in priority order).

    Returns (dup_of, similarity) per row, dup_of = -1 for kept rows. Pairs are walked by y then x, so
    when y is reached every x < y already has its final status and the first kept x is the earliest.
    """
    dup = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan)
    order = np.lexsort((xs, ys))
    dropped = bytearray(n)
    for x, y, s in zip(xs[order].tolist(), ys[order].tolist(), sims[order].tolist(), strict=True):
        if not dropped[y] and not dropped[x]:
            dropped[y] = 1
            dup[y] = x
            sim[y] = s
    return dup, sim


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


def _collapse_identical(ts: _TokenSets) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split non-empty rows into representatives and members of identical-set groups.

    Groups come from an order-independent 64-bit set hash, then every member is verified to be exactly
    equal to its representative; a (practically impossible) hash collision just leaves the row as its
    own representative, which is always correct.
    """
    offsets, sizes, ranks = ts.offsets, ts.sizes, ts.ranks
    rows = np.flatnonzero(sizes > 0)
    if rows.size == 0:
        return rows, rows, rows
    rng = np.random.default_rng(0x5EED)
    # Odd random 64-bit values; a set's hash is their wrapping sum (order-independent, vectorisable).
    token_hash = rng.integers(0, 2**63, size=int(ranks.max()) + 1, dtype=np.int64).astype(np.uint64)
    token_hash = token_hash * np.uint64(2) + np.uint64(1)
    set_hash = np.add.reduceat(token_hash[ranks], offsets[:-1][rows])
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
    # NaN scores sort above +inf and nulls go last (Polars' convention), -0.0 ties with 0.0.
    return df.with_row_index("_input_pos").sort(
        ["eval_score", "created_at", "pattern_id"], descending=[True, True, False], nulls_last=True
    )


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
    df = _collect(patterns)
    n = df.height
    if n == 0:
        return _empty_result()
    df = _priority_sorted(df)
    t = float(threshold)
    dup = np.full(n, -1, dtype=np.int64)
    sim = np.full(n, np.nan)

    if t <= 1.0:  # otherwise (t > 1 or NaN) nothing is ever similar enough: all kept
        ts = _tokenize(df["task"])
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
            reps, members, member_rep = _collapse_identical(ts)
            # Filters use the largest double below t: any i/u whose rounded quotient is >= t exceeds it.
            c = Fraction(math.nextafter(t, -math.inf))
            pairs = _candidate_pairs(reps, ts, c)
            xs, ys = pairs // n, pairs % n
            inter = _intersections(xs, ys, ts)
            union = sizes[xs] + sizes[ys] - inter
            # IEEE division of exact integers (< 2**53) is the same correctly rounded double Python's
            # int / int produces, so this is bit-for-bit the reference's `len(a&b)/len(a|b) >= t`.
            s = inter / union
            near = s >= t
            dup, sim = _greedy(n, xs[near], ys[near], s[near])
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
        epoch = datetime(1970, 1, 1, tzinfo=created.tzinfo or UTC)
        created_key = (0, -((created - epoch) // timedelta(microseconds=1)))
    return score_key, created_key, row["pattern_id"]


def near_duplicates_reference(patterns: pl.DataFrame, threshold: float = JACCARD_THRESHOLD) -> pl.DataFrame:
    """Brute-force reference for ``near_duplicates`` (tests and benchmarks only: O(n^2) pure Python).

    It is the executable form of the contract: Engramia's ``jaccard`` on every (kept, candidate) pair,
    walked greedily in priority order. Keep it boring; ``near_duplicates`` must match it exactly.
    """
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
