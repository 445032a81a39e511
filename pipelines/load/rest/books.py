"""The books of one scope's REST load: ledger rows, the result's counters and the progress shown.

Invariants: every change is made under one lock and flushed to disk before the call returns, so a
crash loses no answer the server gave; an intent row (``sending``) is on disk before its request is
started; each outcome adds to exactly one counter of the :class:`LoadResult`; and a row saying a
pattern is in the store carries the fingerprint and basis of what was sent (:attr:`LoadBooks.content`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from pipelines.load.ledger import IN_STORE, Ledger, Outcome
from pipelines.load.plan import UPDATE_SAMPLE, LoadResult
from pipelines.load.rest.readback import task_hash8
from pipelines.progress import ProgressBar

# LoadResult counters per outcome (RETRACTED is counted by the retraction itself: an absent pattern
# is recorded retracted without counting).
_COUNTER = {
    Outcome.STORED: "stored",
    Outcome.PRESENT: "present",
    Outcome.REJECTED: "rejected",
    Outcome.NOT_STORED: "not_stored",
    Outcome.FAILED: "failed",
}


@dataclass
class Entry:
    """An outcome to record for one pattern."""

    pattern_id: str
    key: str | None
    outcome: Outcome
    reason: str | None = None
    # the LoadResult counter to add to when it is not the outcome's own (e.g. a 0.7.x learn that
    # replaced a near-duplicate is in the store, but did not add to pattern_count; a changed pattern
    # rewritten is ``updated``; a pattern found unchanged is ``uncounted``: it was already loaded)
    tally: Literal["present", "replaced", "updated", "uncounted"] | None = None
    # what the store holds for the pattern, when not what this load sent (see LoadBooks.content)
    fingerprint: str | None = None
    basis: str | None = None
    # the learn overwrote another pattern under its key; ``previous``: that pattern's record as JSON
    replaced: bool = False
    previous: str | None = None


@dataclass
class LoadBooks:
    ledger: Ledger
    result: LoadResult
    scope: str
    mode: str
    say: Callable[[str], None]
    progress: Callable[[int], None] | None = None
    bar: ProgressBar | None = None
    total: int = 0
    started: float = field(default_factory=time.perf_counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_log: float = field(default_factory=time.monotonic)
    # pattern_id -> (fingerprint, basis) of the rows this load sends, for the rows saying they are stored
    content: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)

    def _record(self, e: Entry) -> None:
        fingerprint, basis = e.fingerprint, e.basis
        if fingerprint is None and e.outcome in IN_STORE:
            fingerprint, basis = self.content.get(e.pattern_id, (None, None))
        self.ledger.record(
            e.pattern_id, e.key, e.outcome, e.reason, fingerprint, basis, e.replaced, e.previous
        )

    def commit(self, entries: list[Entry], sent: int = 0) -> None:
        with self._lock:
            for e in entries:
                self._record(e)
                counter = e.tally or _COUNTER.get(e.outcome)
                if counter and counter != "uncounted":
                    setattr(self.result, counter, getattr(self.result, counter) + 1)
                if counter == "updated" and len(self.result.updates) < UPDATE_SAMPLE:
                    self.result.updates.append({"pattern_id": e.pattern_id, "key": e.key})
                if e.outcome == Outcome.REJECTED and not e.tally:
                    self.result.rejections.append({"pattern_id": e.pattern_id, "reason": e.reason})
            self.result.sent += sent
            self.ledger.flush()
        if sent:
            self.tick(sent)

    def rekey(self, entries: list[Entry]) -> None:
        """Record what was found later of patterns already counted, their outcome unchanged: a learned
        pattern's key, or the near-duplicate a pattern not stored lost to."""
        with self._lock:
            for e in entries:
                self._record(e)
            self.ledger.flush()

    def keep_unchanged(self, unchanged: pl.DataFrame) -> None:
        """Patterns whose basis changed but whose content as sent did not: the ledger learns their new
        basis (a row without a fingerprint adopts the current one, see plan.settle_updates); nothing is
        sent and nothing counted."""
        entries = [
            Entry(
                r["pattern_id"],
                r["key"],
                Outcome.PRESENT,
                "fingerprint adopted (ledger row had none)" if r["adopted"] else "unchanged content",
                tally="uncounted",
                fingerprint=r["fingerprint"],
                basis=r["basis"],
            )
            for r in unchanged.iter_rows(named=True)
        ]
        if entries:
            self.commit(entries)
        adopted = int(unchanged["adopted"].sum())
        if adopted:
            self.result.notes += (
                f"{adopted} fingerprints adopted from the current content without rewriting; "
            )

    def intend(self, rows: list[dict[str, Any]], keys: list[str | None]) -> None:
        with self._lock:
            for row, key in zip(rows, keys, strict=True):
                reason = f"{self.mode}; task sha8 {task_hash8(row['task'])}"
                self.ledger.record(row["pattern_id"], key, Outcome.SENDING, reason)
            self.ledger.flush()

    def claimed_keys(self) -> set[str]:
        state = self.ledger.in_store()
        return {k for k in state["key"].to_list() if k}

    def tick(self, n: int) -> None:
        if self.progress:
            self.progress(n)
        if self.bar:
            self.bar.update(n)
            self.bar.set_postfix_str(self.status(short=True), refresh=False)
        if time.monotonic() - self._last_log >= 10:
            self._last_log = time.monotonic()
            self.say(f"{self.scope}: {self.status()}")

    def status(self, short: bool = False) -> str:
        r = self.result
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        if short:
            return f"stored {r.stored} skipped {r.skipped} rejected {r.rejected}"
        return (
            f"sent {r.sent}/{self.total}, stored {r.stored}, present {r.present}, skipped {r.skipped}, "
            f"rejected {r.rejected}, not_stored {r.not_stored}, {r.sent / elapsed:.1f} patterns/s"
        )
