"""Incremental re-pairing per scope: only threads touched by new messages are paired again.

A thread is touched when a new dump brings it a message, or takes one away (a corrected re-export
staged under the ``latest`` conflict policy supersedes an earlier message).

Paired tables are stored as batches (``staged/<table>/scope=<key>/batch=<n>.parquet``): each run writes
one batch covering the threads it re-paired, and a thread's current rows are those of the latest batch
that covers it (``staged/threads``). A question staged in one dump and its answer in a later one pair
up because the whole thread is paired again when the answer arrives. Nothing is rewritten, so the cost
of a run follows the size of what is new, not of what is stored.

Memory stays bounded whatever the scope's size: the touched threads are split into groups whose texts
add up to at most ``text_budget`` characters, and each group is read, paired and written on its own
(``batch=<n>-g<k>.parquet``; threads never span groups, so pairs are the same as in one go). A scope
under the budget is still split into a few groups when that lowers its peak for a few cheap passes
(:func:`group_chars`).

Invariants: a batch's threads file is written last, so a batch is visible to :func:`current` only once
its patterns and unpaired rows are complete; each thread's current rows come from one batch (the latest
covering it), so the current patterns and unpaired rows of a scope account for its messages once each.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from pipelines.ingest.messages import superseded_threads
from pipelines.ingest.upgrade import upgrade_layout
from pipelines.pairing.pairs import PAIRING_COLUMNS, PairingOptions, pair_frame
from pipelines.tables import (
    INTERMEDIATE_COMPRESSION,
    UNPAIRED_SCHEMA,
    DataLayout,
    parquet_files,
    write_parquet,
)

type BatchedTable = Literal["patterns", "unpaired"]
# Characters of message text paired at once (about as many bytes for mostly-ASCII text; the pairing
# holds the texts and the assembled patterns, so peak memory is a small multiple of this).
DEFAULT_TEXT_BUDGET = 128 * 1024 * 1024
# Under the budget a scope is still split into up to SPLIT_GROUPS groups of at least MIN_GROUP_CHARS: each
# group costs a pass over the scope's messages, little next to the memory it saves (one scope of 100 MB of
# text peaked 460 MB above the process's base paired at once, 200 MB in 16 MB groups, in the same time).
SPLIT_GROUPS = 8
MIN_GROUP_CHARS = 16 * 1024 * 1024


@dataclass
class ScopeState:
    paired_dumps: list[str] = field(default_factory=list)
    batches: int = 0
    pairing: str = ""

    @classmethod
    def load(cls, layout: DataLayout, scope: str) -> ScopeState:
        path = layout.state(scope)
        return cls(**json.loads(path.read_text())) if path.exists() else cls()

    def save(self, layout: DataLayout, scope: str) -> None:
        path = layout.state(scope)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


@dataclass
class PairingResult:
    batch: int | None
    threads: int
    patterns: int
    unpaired: int
    dumps: list[str]
    full_repair: bool


def _folder(layout: DataLayout, table: BatchedTable, scope: str) -> Path:
    return layout.patterns(scope) if table == "patterns" else layout.unpaired(scope)


def current(layout: DataLayout, table: BatchedTable, scope: str) -> pl.LazyFrame | None:
    """The current rows of a batched table: for each thread, those of the latest batch covering it.

    The latest batch of each thread is read when this is called (the threads table is small); the rows
    themselves are read when the frame is collected.
    """
    files = parquet_files(_folder(layout, table, scope))
    if not files:
        return None
    return _rows_of_latest(files, _latest_batches(parquet_files(layout.threads(scope))))


def _latest_batches(thread_files: list[Path]) -> pl.DataFrame:
    """``thread_id, batch``: the latest batch of each thread in these files of the threads table."""
    return pl.scan_parquet(thread_files).group_by("thread_id").agg(pl.col("batch").max()).collect()


def _rows_of_latest(files: list[Path], latest: pl.DataFrame) -> pl.LazyFrame:
    """The rows of ``files`` whose ``(thread_id, batch)`` is in ``latest``.

    A filter per batch file, not a join: a join carried every text of the table through it and held them
    all at once, whatever the caller then reduced them to (a scope's quality check at 10M messages
    peaked at 1.17 GB instead of 0.57 GB), while a filter is applied as each part of a file is read. A
    batch that is no thread's latest is not read at all.
    """
    by_batch: dict[int, list[Path]] = {}
    for path in files:
        by_batch.setdefault(_batch_of(path), []).append(path)
    parts = []
    for batch, paths in by_batch.items():
        threads = latest.filter(pl.col("batch") == batch)["thread_id"]
        if not threads.is_empty():
            parts.append(pl.scan_parquet(paths).filter(pl.col("thread_id").is_in(threads.implode())))
    return pl.concat(parts, how="vertical") if parts else pl.scan_parquet(files).clear()


@dataclass(frozen=True)
class PatternTotals:
    patterns: int
    tasks_truncated: int
    codes_truncated: int


def pattern_totals(layout: DataLayout, scope: str) -> PatternTotals:
    """How many current patterns the scope has, and how many had their task or answer cut."""
    patterns = current(layout, "patterns", scope)
    if patterns is None:
        return PatternTotals(0, 0, 0)
    row = (
        patterns.select(pl.len(), pl.col("task_truncated").sum(), pl.col("code_truncated").sum())
        .collect()
        .row(0)
    )
    return PatternTotals(*(int(v or 0) for v in row))


def unpaired_reasons(layout: DataLayout, scope: str) -> dict[str, int]:
    """Current unpaired messages by reason, most frequent first."""
    unpaired = current(layout, "unpaired", scope)
    if unpaired is None:
        return {}
    counts = unpaired.group_by("reason").len().sort(["len", "reason"], descending=[True, False]).collect()
    return {str(r): int(n) for r, n in counts.iter_rows()}


def _batch_of(path: Path) -> int:
    """``batch=000007.parquet`` and ``batch=000007-g003.parquet`` both belong to batch 7."""
    return int(path.stem.removeprefix("batch=").split("-", 1)[0])


@dataclass
class Repaired:
    """What the batches after a given one changed: the threads they re-paired (each with the latest
    batch covering it) and their current rows, which replace every earlier row of those threads."""

    threads: pl.DataFrame
    rows: pl.LazyFrame


def repaired_since(layout: DataLayout, table: BatchedTable, scope: str, batch: int) -> Repaired | None:
    """The rows of a batched table that became current after ``batch`` (None when no later batch exists).

    ``current()`` as of ``batch``, minus the rows of ``threads``, plus ``rows`` is ``current()`` now:
    a run can bring a derived table up to date from its last state while reading only the new batches.
    """
    thread_files = [p for p in parquet_files(layout.threads(scope)) if _batch_of(p) > batch]
    files = [p for p in parquet_files(_folder(layout, table, scope)) if _batch_of(p) > batch]
    if not thread_files or not files:
        return None
    threads = _latest_batches(thread_files)
    return Repaired(threads, _rows_of_latest(files, threads))


def _thread_groups(sizes: pl.DataFrame, budget: int) -> list[pl.Series]:
    """Split threads (``thread_id``, ``chars``) into groups of at most ``budget`` characters each
    (a single larger thread gets a group of its own)."""
    total = int(sizes["chars"].sum() or 0)
    if total <= budget:
        return [sizes["thread_id"]]
    groups = max(2, math.ceil(total / budget))
    # Contiguous ranges of the cumulative size: balanced groups without any bin packing.
    group = (sizes["chars"].cum_sum() - sizes["chars"]) * groups // (total + 1)
    frame = sizes.with_columns(group=group)
    return [g["thread_id"] for _, g in frame.group_by("group", maintain_order=True)]


def group_chars(total_chars: int, text_budget: int) -> int:
    """The characters of text paired at once in a scope of ``total_chars``: at most ``text_budget``."""
    return min(text_budget, max(MIN_GROUP_CHARS, -(-total_chars // SPLIT_GROUPS)))


def pair_scope(
    layout: DataLayout, scope: str, options: PairingOptions, text_budget: int = DEFAULT_TEXT_BUDGET
) -> PairingResult:
    """Pair the threads of ``scope`` that new messages touched (all threads when the pairing options
    changed since the last run, so the stored result always matches the options in force)."""
    upgrade_layout(layout)
    state = ScopeState.load(layout, scope)
    message_files = {p.stem.removeprefix("dump="): p for p in parquet_files(layout.messages(scope))}
    pending = [d for d in message_files if d not in state.paired_dumps]
    full = bool(state.pairing) and state.pairing != options.describe()
    if not pending and not full:
        return PairingResult(None, 0, 0, 0, [], False)
    all_messages = pl.scan_parquet(list(message_files.values()))
    everything = full or len(pending) == len(message_files)
    if everything:
        threads = all_messages.select("thread_id").unique()
    else:
        # Threads with new messages, and threads that lost a message to a corrected copy (which may name
        # another thread): both pair differently now.
        threads = pl.concat(
            [
                pl.scan_parquet([message_files[d] for d in pending]).select("thread_id"),
                superseded_threads(layout, scope, pending).to_frame().lazy(),
            ]
        ).unique()
    threads_df = threads.collect()
    touched = all_messages if everything else _only(all_messages, threads_df["thread_id"])
    # Sizing threads costs a pass over the scope's messages: needed only when the whole scope's text
    # (one integer column to add up) could exceed the budget.
    total_chars = all_messages.select(pl.col("text_chars").sum()).collect().item() or 0
    budget = group_chars(total_chars, text_budget)
    if total_chars <= budget:
        groups = [threads_df["thread_id"]]
    else:
        sizes = touched.group_by("thread_id").agg(chars=pl.col("text_chars").sum()).sort("thread_id")
        groups = _thread_groups(sizes.collect(), budget)
    batch = state.batches + 1
    name = f"batch={batch:06d}.parquet"
    target = layout.patterns(scope) / name
    # A crashed attempt at this batch may have left group files behind: they must not join the batch.
    for stale in [target, *target.parent.glob(f"batch={batch:06d}-g*.parquet")]:
        stale.unlink(missing_ok=True)
    unpaired_parts = []
    n_patterns = 0
    for i, group in enumerate(groups):
        source = touched if len(groups) == 1 else _only(all_messages, group)
        frame = source.select(PAIRING_COLUMNS).collect()
        patterns, unpaired = pair_frame(frame, options)
        del frame
        # One file per group (only a single group keeps the plain batch name): every file is written
        # once, straight from Polars; ``current`` reads all files of the folder.
        path = target if len(groups) == 1 else target.with_name(f"batch={batch:06d}-g{i:03d}.parquet")
        n_patterns += write_parquet(
            patterns.with_columns(pl.lit(batch, dtype=pl.Int64).alias("batch")),
            path,
            compression=INTERMEDIATE_COMPRESSION,
        )
        unpaired_parts.append(unpaired)
    batch_col = pl.lit(batch, dtype=pl.Int64).alias("batch")
    unpaired = pl.concat(unpaired_parts) if unpaired_parts else pl.DataFrame(schema=UNPAIRED_SCHEMA)
    write_parquet(unpaired.with_columns(batch_col), layout.unpaired(scope) / name)
    # The threads file is written last: until it exists, the batch is invisible to ``current``.
    write_parquet(threads_df.with_columns(batch_col), layout.threads(scope) / name)
    state.paired_dumps = sorted(message_files)
    state.batches = batch
    state.pairing = options.describe()
    state.save(layout, scope)
    return PairingResult(batch, threads_df.height, n_patterns, unpaired.height, pending, full)


def _only(messages: pl.LazyFrame, threads: pl.Series) -> pl.LazyFrame:
    """Messages of some threads; a filter (not a join) so the Parquet reader skips the other rows."""
    return messages.filter(pl.col("thread_id").is_in(threads.implode()))
