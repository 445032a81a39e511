"""Incremental re-pairing per scope: only threads touched by new messages are paired again.

Paired tables are stored as batches (``staged/<table>/scope=<key>/batch=<n>.parquet``): each run writes
one batch covering the threads it re-paired, and a thread's current rows are those of the latest batch
that covers it (``staged/threads``). A question staged in one dump and its answer in a later one pair
up because the whole thread is paired again when the answer arrives. Nothing is rewritten, so the cost
of a run follows the size of what is new, not of what is stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import polars as pl

from pipelines.layout import DataLayout, parquet_files, write_parquet
from pipelines.pairing import PairingOptions, pair_messages

BATCHED_TABLES = ("patterns", "unpaired")


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


def current(layout: DataLayout, table: str, scope: str) -> pl.LazyFrame | None:
    """The current rows of a batched table: for each thread, those of the latest batch covering it."""
    files = parquet_files(layout.table(table, scope))
    if not files:
        return None
    latest = pl.scan_parquet(parquet_files(layout.table("threads", scope))).group_by("thread_id").agg(
        pl.col("batch").max()
    )
    return pl.scan_parquet(files).join(latest, on=["thread_id", "batch"], how="semi")


def pair_scope(layout: DataLayout, scope: str, options: PairingOptions) -> PairingResult:
    """Pair the threads of ``scope`` that new messages touched (all threads when the pairing options
    changed since the last run, so the stored result always matches the options in force)."""
    state = ScopeState.load(layout, scope)
    message_files = {p.stem.removeprefix("dump="): p for p in parquet_files(layout.table("messages", scope))}
    pending = [d for d in message_files if d not in state.paired_dumps]
    full = bool(state.pairing) and state.pairing != options.describe()
    if not pending and not full:
        return PairingResult(None, 0, 0, 0, [], False)
    all_messages = pl.scan_parquet(list(message_files.values()))
    if full:
        threads = all_messages.select("thread_id").unique()
    else:
        threads = pl.scan_parquet([message_files[d] for d in pending]).select("thread_id").unique()
    threads_df = threads.collect()
    batch = state.batches + 1
    messages = all_messages.join(threads_df.lazy(), on="thread_id", how="semi")
    patterns, unpaired = pair_messages(messages, options)
    batch_col = pl.lit(batch, dtype=pl.Int64).alias("batch")
    name = f"batch={batch:06d}.parquet"
    n_patterns = write_parquet(patterns.with_columns(batch_col), layout.table("patterns", scope) / name)
    write_parquet(unpaired.with_columns(batch_col), layout.table("unpaired", scope) / name)
    # The threads file is written last: until it exists, the batch is invisible to ``current``.
    write_parquet(threads_df.with_columns(batch_col), layout.table("threads", scope) / name)
    state.paired_dumps = sorted(message_files)
    state.batches = batch
    state.pairing = options.describe()
    state.save(layout, scope)
    return PairingResult(batch, threads_df.height, n_patterns, unpaired.height, pending, full)
