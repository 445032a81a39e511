"""Patterns -> scored patterns: an eval_score per pattern, then near-duplicate removal within the scope.

Strategies: ``neutral`` gives every pattern 5.0 (the Assistants API kept no quality signal);
``feedback`` reads the user's own feedback export (CSV or Parquet) keyed by ``message_id`` or
``thread_id``: a ``feedback`` label (positive -> 7.0, negative -> 3.0) or a numeric ``rating`` mapped
linearly from its scale into 0..10. Message-level feedback beats thread-level feedback; several rows
for one key are averaged; patterns without feedback stay neutral.

Near-duplicates are removed over the whole scope every run (see :mod:`pipelines.scoring.near_duplicates`), so
the result never depends on the order dumps arrived in. Re-running it on a whole scope after each small dump
would make every incremental run as expensive as the first, so each scope keeps a cache
(``staged/_dedup/scope=<key>/``, see :class:`DedupCache`) of every pattern's token set, score and
outcome. The keep rule walks patterns in priority order and only ever compares near-duplicates, so the
outcome inside one connected group of near-duplicates (a component of the similarity graph) depends on
that group alone. A run therefore finds the patterns that changed (new or vanished patterns, changed
scores), closes them over the similarity graph with an exact prefix-filtered search, runs the keep rule
on just those components (``near_duplicates_of_sets``, on the cached token sets: only new patterns' tasks
are read) and keeps every other pattern's cached outcome: the result is the same as a full recompute
(tests/test_performance_shapes.py checks it against one).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl

from pipelines.pairing.batches import Repaired, ScopeState, current, repaired_since
from pipelines.scoring.near_duplicates import (
    JACCARD_THRESHOLD,
    csr_take,
    near_duplicates,
    near_duplicates_of_sets,
    near_duplicates_with_tokens,
)
from pipelines.tables import INTERMEDIATE_COMPRESSION, DataLayout, parquet_files, write_parquet

NEUTRAL_SCORE = 5.0
POSITIVE_SCORE = 7.0
NEGATIVE_SCORE = 3.0
POSITIVE_LABELS = ("positive", "pos", "up", "thumbs_up", "like", "good", "+1", "1", "true", "yes")
NEGATIVE_LABELS = ("negative", "neg", "down", "thumbs_down", "dislike", "bad", "-1", "0", "false", "no")


class ScoreStrategy(StrEnum):
    NEUTRAL = "neutral"
    FEEDBACK = "feedback"


@dataclass(frozen=True)
class ScoringOptions:
    strategy: ScoreStrategy = ScoreStrategy.NEUTRAL
    feedback: Path | None = None
    rating_min: float = 1.0
    rating_max: float = 5.0
    threshold: float = JACCARD_THRESHOLD

    def __post_init__(self) -> None:
        if self.strategy is ScoreStrategy.FEEDBACK and self.feedback is None:
            raise ValueError("score strategy 'feedback' needs a feedback file (CSV or Parquet)")
        if self.rating_max <= self.rating_min:
            raise ValueError("rating_max must be greater than rating_min")


def read_feedback(options: ScoringOptions) -> pl.DataFrame:
    """Normalise a feedback file to ``(key_kind, key, score)`` with one row per key."""
    path = Path(options.feedback)  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"feedback file not found: {path}")
    raw = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path, infer_schema=False)
    kinds = [c for c in ("message_id", "thread_id") if c in raw.columns]
    if not kinds:
        raise ValueError(f"{path}: needs a 'message_id' or a 'thread_id' column, found {raw.columns}")
    if "feedback" not in raw.columns and "rating" not in raw.columns:
        raise ValueError(f"{path}: needs a 'feedback' (positive/negative) or a 'rating' (number) column")
    raw = raw.with_row_index("line", offset=2)  # header is line 1
    label = (
        pl.col("feedback").cast(pl.String).str.strip_chars().str.to_lowercase()
        if "feedback" in raw.columns
        else None
    )
    span = options.rating_max - options.rating_min
    rating = (
        ((pl.col("rating").cast(pl.Float64, strict=False) - options.rating_min) / span * 10.0).clip(0.0, 10.0)
        if "rating" in raw.columns
        else None
    )
    score = pl.lit(None, dtype=pl.Float64)
    if rating is not None:
        score = rating
    if label is not None:
        score = (
            pl.when(label.is_in(POSITIVE_LABELS))
            .then(POSITIVE_SCORE)
            .when(label.is_in(NEGATIVE_LABELS))
            .then(NEGATIVE_SCORE)
            .otherwise(score)
        )
    scored = raw.with_columns(score=score)
    bad = scored.filter(pl.col("score").is_null())
    if bad.height:
        rows = ", ".join(str(n) for n in bad["line"].head(5).to_list())
        raise ValueError(
            f"{path}: {bad.height} rows have no usable feedback or rating (lines {rows}); "
            f"use positive/negative or a number between {options.rating_min} and {options.rating_max}"
        )
    frames = []
    for kind in kinds:
        frames.append(
            scored.filter(pl.col(kind).is_not_null() & (pl.col(kind) != ""))
            .group_by(pl.col(kind).alias("key"))
            .agg(pl.col("score").mean())
            .with_columns(key_kind=pl.lit(kind))
        )
    return pl.concat(frames).select("key_kind", "key", "score")


def score(patterns: pl.LazyFrame, feedback: pl.DataFrame | None) -> pl.LazyFrame:
    """``pattern_id, eval_score, score_source`` for every pattern."""
    base = patterns.select("pattern_id", "thread_id", "user_message_ids", "assistant_message_ids")
    if feedback is None:
        return base.select("pattern_id", eval_score=pl.lit(NEUTRAL_SCORE), score_source=pl.lit("neutral"))
    by_message = (
        base.select("pattern_id", key=pl.concat_list("user_message_ids", "assistant_message_ids"))
        .explode("key")
        .join(feedback.lazy().filter(pl.col("key_kind") == "message_id"), on="key", how="inner")
        .group_by("pattern_id")
        .agg(message_score=pl.col("score").mean())
    )
    by_thread = (
        feedback.lazy()
        .filter(pl.col("key_kind") == "thread_id")
        .select(thread_id="key", thread_score="score")
    )
    return (
        base.join(by_message, on="pattern_id", how="left")
        .join(by_thread, on="thread_id", how="left")
        .select(
            "pattern_id",
            eval_score=pl.coalesce("message_score", "thread_score", pl.lit(NEUTRAL_SCORE)),
            score_source=pl.when(pl.col("message_score").is_not_null())
            .then(pl.lit("feedback:message"))
            .when(pl.col("thread_score").is_not_null())
            .then(pl.lit("feedback:thread"))
            .otherwise(pl.lit("neutral")),
        )
    )


@dataclass
class ScoringResult:
    patterns: int
    kept: int
    duplicates: int
    from_feedback: int


def _scoring_inputs(state: ScopeState, options: ScoringOptions, feedback: pl.DataFrame | None) -> dict:
    """Everything the scored table depends on: the patterns (a new batch is the only way they change),
    the options and the feedback's content."""
    return {
        "version": 1,
        "batches": state.batches,
        "pairing": state.pairing,
        "strategy": options.strategy.value,
        "threshold": options.threshold,
        "rating": [options.rating_min, options.rating_max],
        "feedback": None
        if feedback is None
        else [feedback.height, int(feedback.hash_rows(seed=0).sum()), feedback.columns],
    }


def score_scope(
    layout: DataLayout, scope: str, options: ScoringOptions, feedback: pl.DataFrame | None = None
) -> ScoringResult:
    """Rewrite ``staged/scored/scope=<key>/scored.parquet`` for the scope's current patterns.

    A scope whose patterns, options and feedback are those of the last run keeps its table as it is
    (``scored.json`` beside it records what it was made from): a run that brought nothing new for the
    scope costs it one small file read. When new batches are all that changed, the table is brought up
    to date from them: the rows of the threads they re-paired are replaced, and only new patterns are
    scored, read and tokenised. Rows are in ``current()`` order as the table was built up, not sorted.
    """
    patterns = current(layout, "patterns", scope)
    target = _scored_file(layout, scope)
    if patterns is None:
        return ScoringResult(0, 0, 0, 0)
    if options.strategy is ScoreStrategy.FEEDBACK and feedback is None:
        feedback = read_feedback(options)
    feedback = feedback if options.strategy is ScoreStrategy.FEEDBACK else None
    state = ScopeState.load(layout, scope)
    inputs = _scoring_inputs(state, options, feedback)
    marker = _marker(target)
    made = _made(target)
    if made is not None and made.get("inputs") == inputs:
        return ScoringResult(**made["result"])
    marker.unlink(missing_ok=True)
    # Tasks are fixed by the pattern id and the pairing options in force (see DedupCache). With a cache
    # in force only the patterns it has to decide need theirs, read on demand; without, all are needed.
    context = state.pairing
    cache = DedupCache(layout.dedup_cache(scope))
    cached = cache.holds(options.threshold, context)
    since = _made_at(made, inputs) if cached else None
    repaired = repaired_since(layout, "patterns", scope, since) if since is not None else None
    if repaired is not None:
        narrow, tasks = _brought_up_to_date(target, repaired, feedback)
    else:
        narrow = (
            patterns.select("pattern_id", "thread_id", "created_at", *([] if cached else ["task"]))
            .join(score(patterns, feedback), on="pattern_id", how="left")
            .collect()
        )
        # The ids asked for are current, and a current id's row is in the latest batch holding it (an
        # older batch may hold the same id paired under other options): cheaper than ``current``'s join.
        tasks = (
            pl.scan_parquet(parquet_files(layout.patterns(scope)))
            .select("pattern_id", "task", "batch")
            .sort("batch", descending=True)
        )
    decided = cache.near_duplicates(narrow, options.threshold, context, tasks=tasks)
    scored = _with_outcomes(narrow.drop("task", strict=False), decided)
    write_parquet(scored, target, compression=INTERMEDIATE_COMPRESSION)
    kept = int(scored["kept"].sum())
    result = ScoringResult(
        patterns=scored.height,
        kept=kept,
        duplicates=scored.height - kept,
        from_feedback=int((scored["score_source"] != "neutral").sum()),
    )
    tmp = marker.with_name(".scored.json.tmp")
    tmp.write_text(json.dumps({"inputs": inputs, "result": asdict(result)}))
    tmp.replace(marker)
    return result


def _made_at(made: dict | None, inputs: dict) -> int | None:
    """The batch count a scored table was made at, when new batches are all that changed since."""
    if made is None:
        return None
    before = made.get("inputs", {})
    same = {k: v for k, v in before.items() if k != "batches"} == {
        k: v for k, v in inputs.items() if k != "batches"
    }
    batches = before.get("batches")
    return batches if same and isinstance(batches, int) and batches < inputs["batches"] else None


def _brought_up_to_date(
    target: Path, repaired: Repaired, feedback: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """The scored table's rows for threads no new batch touched, plus the new batches' current rows,
    scored: the same rows as scoring ``current()`` whole (the options and feedback are unchanged, so
    an earlier row's score still holds), at the cost of the new rows. Returns that frame without
    outcomes, and the new rows' tasks (only new patterns need theirs)."""
    fresh = repaired.rows.select(
        "pattern_id", "thread_id", "created_at", "task", "user_message_ids", "assistant_message_ids"
    ).collect()
    new = fresh.select("pattern_id", "thread_id", "created_at", "task").join(
        score(fresh.lazy(), feedback).collect(), on="pattern_id", how="left", maintain_order="left"
    )
    columns = ["pattern_id", "thread_id", "created_at", "eval_score", "score_source"]
    earlier = (
        pl.scan_parquet(target)
        .select(columns)
        .filter(~pl.col("thread_id").is_in(repaired.threads["thread_id"].implode()))
        .collect()
    )
    narrow = pl.concat([earlier, new.select(columns).cast(earlier.schema)])
    return narrow, new.select("pattern_id", "task").lazy()


def _with_outcomes(frame: pl.DataFrame, decided: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with the outcome columns of ``decided`` (matched by pattern id; when both are in the
    same order, as after an incremental update, the columns are simply put side by side)."""
    if decided["pattern_id"].equals(frame["pattern_id"]):
        return frame.hstack(decided.drop("pattern_id"))
    return frame.join(decided, on="pattern_id", how="left", maintain_order="left")


# --------------------------------------------------------------------------------------------------
# Incremental near-duplicate removal
# --------------------------------------------------------------------------------------------------

# The ASCII characters str.isspace() accepts besides " " (information separators \x1c-\x1f included).
_ASCII_WS = r"[\t\n\x0b\x0c\r\x1c-\x1f]"
_DECISION_SCHEMA = {
    "pattern_id": pl.String,
    "kept": pl.Boolean,
    "duplicate_of": pl.String,
    "similarity": pl.Float64,
}
_CACHE_VERSION = 6
# Tasks tokenised at once (bounds the exploded token strings held in memory).
_TOKENISE_ROWS = 100_000
# Two independent 64-bit mixes of a token rank; a set's hash is their wrapping sum over its tokens.
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))


def _token_codes(tasks: pl.Series) -> tuple[np.ndarray, np.ndarray, pl.Series]:
    """The tokens of ``task.lower().split()`` of every task (a null task has none) as
    ``(rows, codes, tokens)``: one (row, code) pair per token (repeats included), codes indexing the
    ``tokens`` strings.

    Vectorised where Polars provably agrees with Python, on pure-ASCII rows: there ``lower()`` only maps
    A-Z, and ``split()`` splits on runs of the ASCII whitespace characters, which become spaces first.
    Other rows are tokenised by Python itself (Rust's and CPython's Unicode tables may disagree).
    Tasks are tokenised in slices sharing one dictionary, so the exploded tokens never exist all at once.
    """
    tasks = tasks.fill_null("")
    cats = pl.Categories.random()
    keep = []  # the encoded slices keep the dictionary alive until its strings are read
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    for start in range(0, max(tasks.len(), 1), _TOKENISE_ROWS):
        chunk = tasks.slice(start, _TOKENISE_ROWS)
        exotic = chunk.str.len_bytes() != chunk.str.len_chars()
        frame = pl.DataFrame({"token": chunk}).with_row_index("row", offset=start)
        flat = (
            frame.lazy()
            .filter(~exotic)
            .select("row", pl.col("token").str.replace_all(_ASCII_WS, " ").str.to_lowercase().str.split(" "))
            .explode("token")
            .filter(pl.col("token") != "")
            .collect(engine="streaming")
        )
        slow = frame.filter(exotic)
        if slow.height:
            exact = [(row, tok) for row, task in slow.iter_rows() for tok in task.lower().split()]
            flat = pl.concat([flat, pl.DataFrame(exact, schema=flat.schema, orient="row")])
        # Dictionary codes make "distinct per row" an integer sort instead of hashing strings.
        encoded = flat["token"].cast(pl.Categorical(cats))
        keep.append(encoded.head(1))
        parts.append((flat["row"].to_numpy(), encoded.to_physical().to_numpy()))
        del flat, encoded
    tokens = cats.to_series().alias("token")
    del keep
    return np.concatenate([r for r, _ in parts]), np.concatenate([c for _, c in parts]), tokens


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique may hash instead, which is several times slower here)."""
    return _unique_sorted(np.sort(values))


def _unique_sorted(values: np.ndarray) -> np.ndarray:
    """The distinct values of an already sorted array."""
    if values.size:
        keep = np.empty(values.size, dtype=bool)
        keep[0] = True
        np.not_equal(values[1:], values[:-1], out=keep[1:])
        values = values[keep]
    return values


def _offsets(sizes: np.ndarray) -> np.ndarray:
    """CSR offsets of consecutive sets of these sizes."""
    offsets = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets


class _Sets:
    """Token sets in CSR layout: ``values[offsets[i]:offsets[i + 1]]`` is set i, increasing ranks."""

    def __init__(self, offsets: np.ndarray, values: np.ndarray) -> None:
        self.offsets = offsets
        self.values = values
        self.sizes = np.diff(offsets)

    @classmethod
    def from_pairs(cls, rows: np.ndarray, values: np.ndarray, n: int) -> _Sets:
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
        keys = _unique_sorted(keys)
        np.cumsum(np.bincount(keys >> shift, minlength=n), out=offsets[1:])
        return cls(offsets, (keys & ((1 << shift) - 1)) + base)

    def take(self, rows: np.ndarray) -> _Sets:
        """The sets of ``rows``, in that order."""
        return _Sets(*csr_take(self.offsets, self.values, rows))

    def keep(self, mask: np.ndarray) -> _Sets:
        """The sets where ``mask`` is true, in order (cheaper than :meth:`take` for an ordered subset)."""
        return _Sets(_offsets(self.sizes[mask]), self.values[np.repeat(mask, self.sizes)])

    @staticmethod
    def concat(parts: list[_Sets]) -> _Sets:
        return _Sets(
            _offsets(np.concatenate([p.sizes for p in parts])), np.concatenate([p.values for p in parts])
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
            bits = np.left_shift(np.uint64(1), (ranks * _MIX[0]) >> np.uint64(58))
            out[nonempty, 2] = np.bitwise_or.reduceat(bits, starts)
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
        leaders = _sorted_unique(leader)
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


class _Graph:
    """The near-duplicate graph over distinct token sets, searched with an exact prefix filter.

    A pair reaching the threshold shares at least ceil(low * |A|) tokens of A, so in the global token
    order (increasing rank) its first shared token is within A's first |A| - ceil(low * |A|) + 1 tokens,
    and within B's likewise: every similar pair shares a "prefix" token. ``low`` is the largest double
    below the threshold, because float division of exact integers can round a quotient just below the
    threshold up onto it; the final test is that very division, as in the reference.
    """

    def __init__(self, sets: _Sets, nodes: np.ndarray, threshold: float, bitmaps: np.ndarray) -> None:
        """Similarity search over the sets ``nodes`` (other sets may be probed from, never found);
        ``bitmaps`` are the sets' token bitmaps (the third column of :meth:`_Sets.hashes`)."""
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
        lengths = self.prefix[rows]
        entry_rows = np.repeat(rows, lengths)
        pos = np.arange(entry_rows.size, dtype=np.int64) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return entry_rows, self.sets.values[self.sets.offsets[:-1][entry_rows] + pos]

    def neighbours(self, rows: np.ndarray) -> np.ndarray:
        """Every set with a Jaccard similarity >= threshold to one of ``rows`` (exact)."""
        rows, tokens = self._prefix_entries(rows)
        lo = np.searchsorted(self.index_tokens, tokens, "left")
        counts = np.searchsorted(self.index_tokens, tokens, "right") - lo
        sizes = self.sets.sizes
        found: list[np.ndarray] = []
        # Candidates are expanded in slices so a token shared by many prefixes cannot exhaust memory.
        for start, stop in _slices(counts, 2_000_000):
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
        return _sorted_unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def _intersections(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """|set(a) & set(b)| per pair: a's tokens looked up by binary search among the sorted
        (set, rank) keys of just the b sets involved."""
        targets = _sorted_unique(b)
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
        frontier = _sorted_unique(seeds)
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


def _slices(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """[start, stop) runs of items whose counts add up to about ``budget`` (one item may exceed it)."""
    if counts.size == 0:
        return []
    cum = np.cumsum(counts)
    cuts = np.searchsorted(cum, np.arange(budget, int(cum[-1]), budget), "right").tolist()
    bounds = [0, *sorted({c for c in cuts if 0 < c < counts.size}), counts.size]
    return list(itertools.pairwise(bounds))


def _tokenise(tasks: pl.Series, vocab: pl.DataFrame) -> tuple[_Sets, pl.DataFrame]:
    """Token sets of ``tasks`` as ranks of the cached vocabulary, and that vocabulary extended by their
    new tokens.

    The first vocabulary comes from the full run (``near_duplicates_with_tokens``: rarest first, so
    prefixes hold rare tokens and candidate lists stay short). Tokens added later rank before all
    others: that keeps the order, and so the prefix, of every stored set.
    """
    rows, codes, tokens = _token_codes(tasks)
    looked_up = tokens.to_frame().join(vocab, on="token", how="left", maintain_order="left")
    unseen = looked_up["rank"].is_null()
    if unseen.any():
        first = int(vocab["rank"].min()) if vocab.height else 0
        added = looked_up.filter(unseen).select("token").sort("token")
        vocab = pl.concat(
            [vocab, added.with_columns(rank=first - 1 - pl.int_range(pl.len(), dtype=pl.Int64))]
        )
        looked_up = tokens.to_frame().join(vocab, on="token", how="left", maintain_order="left")
    rank_of_code = looked_up["rank"].to_numpy().astype(np.int64)
    sets = _Sets.from_pairs(rows, rank_of_code[codes], tasks.len())
    # Stored sets are 32-bit (a scope has far fewer distinct tokens): new ones join them without a copy
    # of the old ones into 64 bits.
    return _Sets(sets.offsets, sets.values.astype(np.int32)), vocab


class DedupCache:
    """The per-scope cache behind incremental near-duplicate removal (see the module docstring).

    ``ranks.i32`` holds token sets (vocabulary ranks as native int32, set after set) and is only ever
    appended to; ``state.parquet`` has one row per stored set, in the same order: pattern id,
    created_at, eval_score, the set's size, two hashes and token bitmap, the outcome, and whether the
    pattern is still ``live`` (a pattern that is gone keeps its row and its set until more than a
    quarter of the rows are gone, when both files are written afresh without them). ``vocab.parquet``
    maps tokens to ranks; ``meta.json`` names the threshold and the ``context`` the state belongs to,
    and how many rows and ranks it has. A pattern id names a fixed list of immutable messages, so its
    task is fixed as long as the pairing options are: callers pass those options as ``context``, and
    any change of context or threshold starts the cache afresh.

    A run after a small dump therefore writes the new sets and the small state table, never the sets
    already stored.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def near_duplicates(
        self,
        patterns: pl.DataFrame,
        threshold: float,
        context: str = "",
        tasks: pl.LazyFrame | None = None,
    ) -> pl.DataFrame:
        """``near_duplicates(patterns, threshold)``, reusing the cached outcomes.

        ``patterns`` may leave out ``task`` when ``tasks`` (``pattern_id, task``, e.g. a Parquet scan)
        is given: tasks are then read only for the patterns that need deciding, which after a small
        dump are a small share of the scope.
        """
        task_of = _task_lookup(patterns, tasks)
        if not 0.0 < threshold <= 1.0:
            # Degenerate thresholds (everything or nothing is a duplicate) are cheap and never cached.
            return near_duplicates(_with_tasks(patterns, task_of), threshold)
        frame = patterns.select(
            pl.col("pattern_id").cast(pl.String),
            pl.col("eval_score").cast(pl.Float64),
            pl.col("created_at"),
        )
        key = self._key(threshold, context)
        cached = self._load(key)
        if cached is None:
            decided, tokens = near_duplicates_with_tokens(_with_tasks(frame, task_of), threshold)
            sets = _Sets(tokens.offsets, tokens.ranks)
            # The state is kept in the order the sets come in (any order will do): rows follow the sets.
            rows = pl.concat([frame, decided.drop("pattern_id")], how="horizontal")[tokens.rows]
            self._write(
                _state_rows(rows, sets, sets.hashes()), sets.values, tokens.vocabulary, key, fresh=True
            )
            return decided
        state, stored, vocab = cached
        decided, change = _update(frame, task_of, state, stored, vocab, threshold)
        if change is not None:
            new_state, values, new_vocab = change
            vocab_changed = new_vocab is not vocab
            gone = new_state.height - int(new_state["live"].sum())
            if gone * 4 > new_state.height:
                # Compaction: the rows and sets of patterns that are gone are dropped.
                live = new_state["live"].to_numpy()
                every = _Sets(_offsets(new_state["size"].to_numpy()), np.concatenate([stored.values, values]))
                kept_values = every.keep(live).values
                self._write(new_state.filter(pl.Series(live)), kept_values, new_vocab, key, fresh=True)
            else:
                self._write(new_state, values, new_vocab if vocab_changed else None, key, fresh=False)
        return decided

    def holds(self, threshold: float, context: str = "") -> bool:
        """Whether a cache for this threshold and context is in place (else the next call starts afresh)."""
        return self._meta(self._key(threshold, context)) is not None

    @staticmethod
    def _key(threshold: float, context: str) -> dict:
        return {"version": _CACHE_VERSION, "threshold": threshold, "context": context}

    def _meta(self, key: dict) -> dict | None:
        """The cache's meta.json when it belongs to ``key`` and its files are whole, else None."""
        path = self.folder / "meta.json"
        if not path.exists():
            return None
        meta = json.loads(path.read_text())
        if {k: meta.get(k) for k in key} != key:
            return None
        ranks = self.folder / "ranks.i32"
        if not ranks.exists() or ranks.stat().st_size != 4 * int(meta.get("values", -1)):
            return None
        return meta

    def _load(self, key: dict) -> tuple[pl.DataFrame, _Sets, pl.DataFrame] | None:
        meta = self._meta(key)
        if meta is None:
            return None
        state = pl.read_parquet(self.folder / "state.parquet")
        if state.height != meta.get("rows"):
            return None
        # Mapped, not read: the sets stay in the page cache and only those looked at are touched.
        values = np.zeros(0, dtype=np.int32)
        if meta["values"]:
            # A plain array over the mapping: np.memmap's own indexing adds Python work to every gather.
            values = np.memmap(self.folder / "ranks.i32", dtype=np.int32, mode="r").view(np.ndarray)
        sets = _Sets(_offsets(state["size"].to_numpy()), values)
        return state, sets, pl.read_parquet(self.folder / "vocab.parquet")

    def _write(
        self, state: pl.DataFrame, values: np.ndarray, vocab: pl.DataFrame | None, key: dict, fresh: bool
    ) -> None:
        """Write the state table and the sets: all of them (``fresh``) or, appended, the sets of the
        state's new rows; the vocabulary only when it changed (``None`` otherwise)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        # meta.json is removed first and written last, with the sizes of the files: a crash in between
        # leaves no cache, never a cache that disagrees with itself.
        (self.folder / "meta.json").unlink(missing_ok=True)
        ranks = self.folder / "ranks.i32"
        if fresh:
            tmp = self.folder / ".ranks.i32.tmp"
            np.ascontiguousarray(values, dtype=np.int32).tofile(tmp)
            tmp.replace(ranks)
        elif values.size:
            with open(ranks, "ab") as f:
                f.write(np.ascontiguousarray(values, dtype=np.int32).tobytes())
        if vocab is not None:
            write_parquet(vocab, self.folder / "vocab.parquet", compression=INTERMEDIATE_COMPRESSION)
        write_parquet(state, self.folder / "state.parquet", compression=INTERMEDIATE_COMPRESSION)
        tmp = self.folder / ".meta.json.tmp"
        tmp.write_text(json.dumps({**key, "rows": state.height, "values": int(state["size"].sum() or 0)}))
        tmp.replace(self.folder / "meta.json")


_STATE_COLUMNS = ("pattern_id", "created_at", "eval_score", "kept", "duplicate_of", "similarity")


def _state_rows(rows: pl.DataFrame, sets: _Sets, hashes: np.ndarray) -> pl.DataFrame:
    """State rows for ``rows`` (pattern_id, created_at, eval_score and outcome) and their token sets."""
    return rows.select(_STATE_COLUMNS).with_columns(
        size=pl.Series(sets.sizes, dtype=pl.Int64),
        h1=pl.Series(hashes[:, 0]),
        h2=pl.Series(hashes[:, 1]),
        bitmap=pl.Series(hashes[:, 2]),
        live=pl.lit(True),
    )


TaskLookup = Callable[[np.ndarray], pl.Series]


def _task_lookup(patterns: pl.DataFrame, tasks: pl.LazyFrame | None) -> TaskLookup:
    """The tasks of given rows of ``patterns``: from its own ``task`` column, or read from ``tasks``."""
    if "task" in patterns.columns:
        column = patterns["task"].cast(pl.String)
        return lambda rows: column.gather(rows)
    if tasks is None:
        raise ValueError("patterns has no task column and no tasks source was given")
    ids = patterns["pattern_id"].cast(pl.String)

    def lookup(rows: np.ndarray) -> pl.Series:
        wanted = ids.gather(rows).to_frame()
        source = tasks.select(pl.col("pattern_id").cast(pl.String), pl.col("task").cast(pl.String))
        if rows.size < ids.len():
            # A filter the Parquet reader applies while scanning: only these rows' tasks are read.
            source = source.filter(pl.col("pattern_id").is_in(wanted["pattern_id"].implode()))
        found = source.collect().unique("pattern_id", keep="first", maintain_order=True)
        return wanted.join(found, on="pattern_id", how="left", maintain_order="left")["task"]

    return lookup


def _with_tasks(frame: pl.DataFrame, task_of: TaskLookup) -> pl.DataFrame:
    if "task" in frame.columns:
        return frame
    return frame.with_columns(task=task_of(np.arange(frame.height)))


def _update(
    frame: pl.DataFrame,
    task_of: TaskLookup,
    state: pl.DataFrame,
    stored: _Sets,
    vocab: pl.DataFrame,
    threshold: float,
) -> tuple[pl.DataFrame, tuple[pl.DataFrame, np.ndarray, pl.DataFrame] | None]:
    """Outcomes for ``frame`` (no tasks: ``task_of`` reads them for given rows) from the cached ``state``
    (whose token sets are ``stored``): only groups that changed are decided again, on token sets, so only
    the tasks of new patterns are read.

    Returns the outcomes (in ``frame`` order) and, when anything differs from the state, what to save:
    the new state (every old row in its place, then the new patterns' rows), the new rows' token sets
    (flat ranks, to append) and the vocabulary.
    """
    rows = frame.select("pattern_id", "eval_score", "created_at").join(
        state.select("pattern_id", "created_at", "eval_score", "kept", "duplicate_of", "similarity", "live")
        .with_row_index("srow")
        .filter(pl.col("live"))
        .drop("live")
        .rename({"created_at": "cached_at", "eval_score": "cached_score"}),
        on="pattern_id",
        how="left",
        maintain_order="left",
    )
    known = (rows["srow"].is_not_null() & rows["created_at"].eq_missing(rows["cached_at"])).fill_null(False)
    same_score = rows["eval_score"].eq(rows["cached_score"]) | (
        rows["eval_score"].is_nan() & rows["cached_score"].is_nan()
    )
    rescored = (known & ~same_score.fill_null(False)).to_numpy()
    known_np = known.to_numpy()
    fresh = np.flatnonzero(~known_np)
    # Every set gets a node: the state's rows first (in state order), then the fresh rows' sets.
    node = np.empty(frame.height, dtype=np.int64)
    node[known_np] = rows["srow"].to_numpy()[known_np].astype(np.int64)
    node[fresh] = state.height + np.arange(fresh.size)
    alive = np.zeros(state.height + fresh.size, dtype=bool)
    alive[node] = True
    gone = np.flatnonzero(state["live"].to_numpy() & ~alive[: state.height])
    if not fresh.size and not gone.size and not rescored.any():
        # Nothing changed since the last run: every cached outcome holds.
        return rows.select("pattern_id", "kept", "duplicate_of", "similarity").cast(_DECISION_SCHEMA), None

    new_sets, vocab = _tokenise(task_of(fresh), vocab)
    new_hashes = new_sets.hashes()
    sets = _Sets.concat([stored, new_sets])
    stored_hashes = np.column_stack(
        [state["h1"].to_numpy(), state["h2"].to_numpy(), state["bitmap"].to_numpy()]
    )
    hashes = np.concatenate([stored_hashes, new_hashes])
    group, leaders = sets.groups(node, hashes)
    graph = _Graph(sets, leaders, threshold, hashes[:, 2])
    # A set that is gone was similar (at least) to the group that kept its other members.
    seeds = np.concatenate(
        [leaders[group[fresh]], leaders[group[np.flatnonzero(rescored)]], graph.neighbours(gone)]
    )
    affected = graph.closure(seeds)[leaders[group]]
    reuse = rows.with_row_index("row").filter(pl.Series(~affected))
    redo_rows = np.flatnonzero(affected)
    # Decided on the token sets already at hand: no task of a known pattern is read again.
    redo_sets = sets.take(node[redo_rows])
    redo = near_duplicates_of_sets(frame[redo_rows], redo_sets.offsets, redo_sets.values, threshold)
    redo = redo.with_columns(row=pl.Series(redo_rows, dtype=pl.UInt32))
    columns = ["row", "pattern_id", "kept", "duplicate_of", "similarity"]
    decided = (
        pl.concat([reuse.select(columns), redo.select(columns)])
        .sort("row")
        .drop("row")
        .cast(_DECISION_SCHEMA)
    )
    # Old rows keep their place, so their sets stay where they are on disk: a row that is gone stays
    # (not live) with its old values, a live one takes its score and outcome from this run.
    outcomes = ["eval_score", "kept", "duplicate_of", "similarity"]
    now = pl.concat([frame.select("eval_score"), decided.drop("pattern_id")], how="horizontal")
    frame_row = np.full(state.height, -1, dtype=np.int64)
    frame_row[node[known_np]] = np.flatnonzero(known_np)
    live = frame_row >= 0
    pick = np.where(live, frame_row, frame.height + np.arange(state.height))
    kept_rows = pl.concat(
        [
            state.select("pattern_id", "created_at"),
            pl.concat([now, state.select(outcomes)])[pick],
            state.select("size", "h1", "h2", "bitmap"),
        ],
        how="horizontal",
    ).with_columns(live=pl.Series(live))
    fresh_rows = pl.concat([frame, decided.drop("pattern_id")], how="horizontal")[fresh]
    new_state = pl.concat([kept_rows, _state_rows(fresh_rows, new_sets, new_hashes)])
    return decided, (new_state, new_sets.values, vocab)


def _scored_file(layout: DataLayout, scope: str) -> Path:
    return layout.scored(scope) / "scored.parquet"


def _marker(target: Path) -> Path:
    return target.with_name("scored.json")


def _made(target: Path) -> dict | None:
    """What the scored table was made from and what it gave (its marker), if both are there."""
    marker = _marker(target)
    return json.loads(marker.read_text()) if target.exists() and marker.exists() else None


def scored_in_step(layout: DataLayout, scope: str) -> bool:
    """Whether the scored table was made from the scope's current batches, and so holds exactly the
    current patterns (its marker is removed before the table is rewritten and written after)."""
    made = _made(_scored_file(layout, scope))
    if made is None:
        return False
    inputs = made.get("inputs", {})
    state = ScopeState.load(layout, scope)
    return inputs.get("batches") == state.batches and inputs.get("pairing") == state.pairing


def scan_scored(layout: DataLayout, scope: str) -> pl.LazyFrame | None:
    path = _scored_file(layout, scope)
    return pl.scan_parquet(path) if path.exists() else None
