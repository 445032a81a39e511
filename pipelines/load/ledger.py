"""The load ledger: what happened to each pattern at each destination, so nothing is sent twice.

One ledger per scope and destination (``staged/ledger/scope=<key>/dest=<id>/``), append-only: every
load writes one Parquet file of outcomes, and a pattern's state is its latest row. A crash loses at
most the outcomes of the batch in flight, and those are recovered by the idempotent import keys or by
the next run's comparison with the server. API keys never reach it.

Outcomes are :class:`Outcome` values; they are written to Parquet as their strings, which never change.

A row of a pattern in the store also says what the store holds: ``fingerprint`` (of the task, code and
score as sent, :mod:`pipelines.load.content`) and ``basis`` (what that content was made from), so a
later load can tell a pattern whose score or text changed (:func:`pipelines.load.plan.plan_load`).
Files written before these columns existed read them as null ("unknown").

A learn that overwrote another pattern on the server (0.7.x keeps the better of two near-duplicates under
the OLD key) is marked ``replaced``, with ``previous``: the record the server held under that key before
(JSON ``{"key", "data"}``, from an export taken before sending), or null when the key could not export.
Rollback restores ``previous`` and never deletes such a key (:mod:`pipelines.load.rollback`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import polars as pl

from pipelines.scopes import sanitize_key
from pipelines.tables import DataLayout, parquet_files, write_parquet


class Outcome(StrEnum):
    """What happened to a pattern at a destination (its latest ledger row is its state)."""

    STORED = "stored"  # written now
    PRESENT = "present"  # the destination already had it
    REJECTED = "rejected"  # refused (by the server or the pipeline's own check of its limits), with why
    RETRACTED = "retracted"  # removed: superseded, no longer kept, or rolled back
    NOT_STORED = "not_stored"  # accepted but not stored, e.g. the server's own near-duplicate rule
    FAILED = "failed"  # certainly not stored (the request failed before the server could store it)
    # Intent row written (and flushed) before a request. Not in IN_STORE, so the pattern stays "to send"
    # until the next run has resolved it against the server.
    SENDING = "sending"


IN_STORE = (Outcome.STORED, Outcome.PRESENT)

LEDGER_SCHEMA = {
    "pattern_id": pl.String,
    "key": pl.String,
    "outcome": pl.String,
    "reason": pl.String,
    "destination": pl.String,
    "run_id": pl.String,
    "at": pl.Datetime("us", "UTC"),
    "fingerprint": pl.String,
    "basis": pl.String,
    "replaced": pl.Boolean,
    "previous": pl.String,
}


@dataclass
class Ledger:
    layout: DataLayout
    scope: str
    destination: str
    run_id: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f"))
    _pending: list[dict] = field(default_factory=list)
    _part: int = 0

    @property
    def folder(self) -> Path:
        return self.layout.ledger(self.scope) / f"dest={sanitize_key(self.destination)}"

    def history(self) -> pl.DataFrame:
        files = parquet_files(self.folder)
        if not files:
            return pl.DataFrame(schema=LEDGER_SCHEMA)
        # Older files lack the content columns: they read as null, never as an error.
        return pl.scan_parquet(files, schema=LEDGER_SCHEMA, missing_columns="insert").collect()

    def state(self) -> pl.DataFrame:
        """Latest outcome per pattern."""
        return self.history().sort("at").group_by("pattern_id").agg(pl.all().last())

    def in_store(self) -> pl.DataFrame:
        return self.state().filter(pl.col("outcome").is_in(IN_STORE))

    def record(
        self,
        pattern_id: str,
        key: str | None,
        outcome: Outcome,
        reason: str | None = None,
        fingerprint: str | None = None,
        basis: str | None = None,
        replaced: bool = False,
        previous: str | None = None,
    ) -> None:
        self._pending.append(
            {
                "pattern_id": pattern_id,
                "key": key,
                "outcome": Outcome(outcome).value,
                "reason": reason,
                "destination": self.destination,
                "run_id": self.run_id,
                "at": datetime.now(UTC),
                "fingerprint": fingerprint,
                "basis": basis,
                "replaced": replaced,
                "previous": previous,
            }
        )

    def flush(self) -> int:
        """Persist what was recorded since the last flush (call after every batch sent)."""
        if not self._pending:
            return 0
        rows = pl.DataFrame(self._pending, schema=LEDGER_SCHEMA)
        self._part += 1
        write_parquet(rows, self.folder / f"run={self.run_id}-{self._part:05d}-{time.monotonic_ns()}.parquet")
        self._pending.clear()
        return rows.height
