"""The per-scope cache behind incremental near-duplicate removal (``staged/_dedup/scope=<key>/``).

Invariants: the cache's outcomes always equal a full recompute (``near_duplicates``); a cache written for
another threshold, another ``context`` or another format version, or whose files disagree with each
other (a crash while writing), is no cache at all and the next call starts afresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from pipelines.scoring.near_duplicates.arrays import csr_offsets
from pipelines.scoring.near_duplicates.exact import near_duplicates, near_duplicates_with_tokens
from pipelines.scoring.near_duplicates.incremental import state_rows, task_lookup, update, with_tasks
from pipelines.scoring.near_duplicates.stored import StoredSets
from pipelines.tables import INTERMEDIATE_COMPRESSION, write_parquet

_CACHE_VERSION = 7


class DedupCache:
    """The per-scope cache behind incremental near-duplicate removal (see :mod:`.incremental`).

    ``ranks.i32`` holds token sets (vocabulary ranks as native int32, set after set) and is only ever
    appended to; ``state.parquet`` has one row per stored set, in the same order: pattern id,
    created_at, eval_score, the set's size, two hashes and token bitmap, the outcome, and whether the
    pattern is still ``live`` (a pattern that is gone keeps its row and its set until more than a
    quarter of the rows are gone, when both files are written afresh without them). ``vocab.parquet``
    maps tokens to ranks; ``meta.json`` names the threshold and the ``context`` the state belongs to,
    how many rows and ranks it has, and the pairing ``batch`` its tasks were read at. A pattern's task
    changes only when its thread is paired again (a corrected message, an earlier exchange arriving as
    context): callers pass the options in force as ``context`` (any change of context or threshold
    starts the cache afresh), and as ``refresh`` the ids of patterns paired after the cache's
    ``batch``, whose cached sets are then not trusted.

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
        batch: int = 0,
        refresh: pl.Series | None = None,
    ) -> pl.DataFrame:
        """``near_duplicates(patterns, threshold)``, reusing the cached outcomes.

        ``patterns`` may leave out ``task`` when ``tasks`` (``pattern_id, task``, e.g. a Parquet scan)
        is given: tasks are then read only for the patterns that need deciding, which after a small
        dump are a small share of the scope. ``refresh`` names patterns whose task may have changed
        since the cache was written (at :meth:`batch`); they are tokenised again like new ones.
        ``batch`` is recorded as the batch the cache now reflects.
        """
        task_of = task_lookup(patterns, tasks)
        if not 0.0 < threshold <= 1.0:
            # Degenerate thresholds (everything or nothing is a duplicate) are cheap and never cached.
            return near_duplicates(with_tasks(patterns, task_of), threshold)
        frame = patterns.select(
            pl.col("pattern_id").cast(pl.String),
            pl.col("eval_score").cast(pl.Float64),
            pl.col("created_at"),
        )
        key = {**self._key(threshold, context), "batch": batch}
        cached = self._load(self._key(threshold, context))
        if cached is None:
            decided, tokens = near_duplicates_with_tokens(with_tasks(frame, task_of), threshold)
            sets = StoredSets(tokens.offsets, tokens.ranks)
            # The state is kept in the order the sets come in (any order will do): rows follow the sets.
            rows = pl.concat([frame, decided.drop("pattern_id")], how="horizontal")[tokens.rows]
            self._write(
                state_rows(rows, sets, sets.hashes()), sets.values, tokens.vocabulary, key, fresh=True
            )
            return decided
        state, stored, vocab = cached
        decided, change = update(frame, task_of, state, stored, vocab, threshold, refresh)
        if change is not None:
            new_state, values, new_vocab = change
            vocab_changed = new_vocab is not vocab
            gone = new_state.height - int(new_state["live"].sum())
            if gone * 4 > new_state.height:
                # Compaction: the rows and sets of patterns that are gone are dropped.
                live = new_state["live"].to_numpy()
                every = StoredSets(
                    csr_offsets(new_state["size"].to_numpy()), np.concatenate([stored.values, values])
                )
                kept_values = every.keep(live).values
                self._write(new_state.filter(pl.Series(live)), kept_values, new_vocab, key, fresh=True)
            else:
                self._write(new_state, values, new_vocab if vocab_changed else None, key, fresh=False)
        return decided

    def holds(self, threshold: float, context: str = "") -> bool:
        """Whether a cache for this threshold and context is in place (else the next call starts afresh)."""
        return self._meta(self._key(threshold, context)) is not None

    def batch(self, threshold: float, context: str = "") -> int | None:
        """The pairing batch the cache's tasks were read at (None when no cache is in place)."""
        meta = self._meta(self._key(threshold, context))
        return None if meta is None else int(meta["batch"])

    @staticmethod
    def _key(threshold: float, context: str) -> dict[str, Any]:
        return {"version": _CACHE_VERSION, "threshold": threshold, "context": context}

    def _meta(self, key: dict[str, Any]) -> dict[str, Any] | None:
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

    def _load(self, key: dict[str, Any]) -> tuple[pl.DataFrame, StoredSets, pl.DataFrame] | None:
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
        sets = StoredSets(csr_offsets(state["size"].to_numpy()), values)
        return state, sets, pl.read_parquet(self.folder / "vocab.parquet")

    def _write(
        self,
        state: pl.DataFrame,
        values: np.ndarray,
        vocab: pl.DataFrame | None,
        key: dict[str, Any],
        fresh: bool,
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
