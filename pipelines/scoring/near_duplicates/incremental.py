"""One incremental near-duplicate update: decide again only the groups of near-duplicates that changed.

Invariant: the outcomes equal ``near_duplicates`` on the whole frame. The keep rule walks patterns in
priority order and only ever compares near-duplicates, so the outcome inside one connected group of
near-duplicates (a component of the similarity graph) depends on that group alone: the patterns that
changed (new or vanished patterns, changed scores) are closed over the similarity graph with an exact
search, the keep rule runs on just those components (on the cached token sets: only new patterns' tasks
are read) and every other pattern keeps its cached outcome.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl

from pipelines.scoring.near_duplicates.exact import near_duplicates_of_sets
from pipelines.scoring.near_duplicates.frames import OUTPUT_SCHEMA
from pipelines.scoring.near_duplicates.graph import Graph
from pipelines.scoring.near_duplicates.stored import StoredSets
from pipelines.scoring.near_duplicates.tokens import token_pairs

_STATE_COLUMNS = ("pattern_id", "created_at", "eval_score", "kept", "duplicate_of", "similarity")

TaskLookup = Callable[[np.ndarray], pl.Series]


def _tokenise(tasks: pl.Series, vocab: pl.DataFrame) -> tuple[StoredSets, pl.DataFrame]:
    """Token sets of ``tasks`` as ranks of the cached vocabulary, and that vocabulary extended by their
    new tokens.

    The first vocabulary comes from the full run (``near_duplicates_with_tokens``: rarest first, so
    prefixes hold rare tokens and candidate lists stay short). Tokens added later rank before all
    others: that keeps the order, and so the prefix, of every stored set.
    """
    rows, codes, tokens = token_pairs(tasks)
    looked_up = tokens.to_frame().join(vocab, on="token", how="left", maintain_order="left")
    # The dictionary may hold "" (from runs of spaces), which no code refers to: it is never ranked.
    unseen = looked_up["rank"].is_null() & (looked_up["token"] != "")
    if unseen.any():
        first = int(vocab["rank"].min()) if vocab.height else 0
        added = looked_up.filter(unseen).select("token").sort("token")
        vocab = pl.concat(
            [vocab, added.with_columns(rank=first - 1 - pl.int_range(pl.len(), dtype=pl.Int64))]
        )
        looked_up = tokens.to_frame().join(vocab, on="token", how="left", maintain_order="left")
    rank_of_code = looked_up["rank"].fill_null(0).to_numpy().astype(np.int64)
    sets = StoredSets.from_pairs(rows, rank_of_code[codes], tasks.len())
    # Stored sets are 32-bit (a scope has far fewer distinct tokens): new ones join them without a copy
    # of the old ones into 64 bits.
    return StoredSets(sets.offsets, sets.values.astype(np.int32)), vocab


def state_rows(rows: pl.DataFrame, sets: StoredSets, hashes: np.ndarray) -> pl.DataFrame:
    """State rows for ``rows`` (pattern_id, created_at, eval_score and outcome) and their token sets."""
    return rows.select(_STATE_COLUMNS).with_columns(
        size=pl.Series(sets.sizes, dtype=pl.Int64),
        h1=pl.Series(hashes[:, 0]),
        h2=pl.Series(hashes[:, 1]),
        bitmap=pl.Series(hashes[:, 2]),
        live=pl.lit(True),
    )


def task_lookup(patterns: pl.DataFrame, tasks: pl.LazyFrame | None) -> TaskLookup:
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


def with_tasks(frame: pl.DataFrame, task_of: TaskLookup) -> pl.DataFrame:
    if "task" in frame.columns:
        return frame
    return frame.with_columns(task=task_of(np.arange(frame.height)))


def update(
    frame: pl.DataFrame,
    task_of: TaskLookup,
    state: pl.DataFrame,
    stored: StoredSets,
    vocab: pl.DataFrame,
    threshold: float,
    refresh: pl.Series | None = None,
) -> tuple[pl.DataFrame, tuple[pl.DataFrame, np.ndarray, pl.DataFrame] | None]:
    """Outcomes for ``frame`` (no tasks: ``task_of`` reads them for given rows) from the cached ``state``
    (whose token sets are ``stored``): only groups that changed are decided again, on token sets, so only
    the tasks of new patterns are read. A pattern in ``refresh`` (its task may have changed) is taken
    as new: its task is read, and its cached row counts as gone.

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
    if refresh is not None and refresh.len():
        known = known & ~rows["pattern_id"].is_in(refresh.cast(pl.String).implode())
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
        return rows.select("pattern_id", "kept", "duplicate_of", "similarity").cast(OUTPUT_SCHEMA), None

    new_sets, vocab = _tokenise(task_of(fresh), vocab)
    new_hashes = new_sets.hashes()
    sets = StoredSets.concat([stored, new_sets])
    stored_hashes = np.column_stack(
        [state["h1"].to_numpy(), state["h2"].to_numpy(), state["bitmap"].to_numpy()]
    )
    hashes = np.concatenate([stored_hashes, new_hashes])
    group, leaders = sets.groups(node, hashes)
    graph = Graph(sets, leaders, threshold, hashes[:, 2])
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
        pl.concat([reuse.select(columns), redo.select(columns)]).sort("row").drop("row").cast(OUTPUT_SCHEMA)
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
    new_state = pl.concat([kept_rows, state_rows(fresh_rows, new_sets, new_hashes)])
    return decided, (new_state, new_sets.values, vocab)
