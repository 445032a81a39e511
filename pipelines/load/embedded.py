"""The embedded destination: the real ``engramia`` package in-process, on :mod:`pipelines.load.store`.

Patterns go in through ``Memory.import_data`` with deterministic keys, never a loop of
``Memory.learn`` (which lists the whole scope on every call and stores a new copy each time in 0.6.6).

Invariants: the plan is the shared :func:`pipelines.load.plan.plan_load`, on ids and bases alone,
trusting the ledger only for keys the store really holds (a wiped or damaged store is refilled); texts
are read only for the patterns to send or to compare; a pattern whose score or text changed is rewritten
under its own key (counted ``updated``, the count does not move); the scope's cap is checked before
anything is written; and the store's own count comes from ``storage.count_patterns()`` (what
``memory.metrics.pattern_count`` returns, without computing the other metrics).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import engramia
import polars as pl

from pipelines.load.content import with_fingerprints
from pipelines.load.ledger import Ledger, Outcome
from pipelines.load.limits import SCOPE_PATTERN_CAP
from pipelines.load.plan import UPDATE_SAMPLE, LoadResult, plan_load, settle_updates, texts_to_send
from pipelines.load.records import KEY_PREFIX, import_record, iter_rows, pattern_key
from pipelines.load.store import engramia_scope, open_memory, pattern_count
from pipelines.objectstore.sync import published_path
from pipelines.tables import DataLayout

DESTINATION = "embedded"
# What the embedded load does to texts before storing them (part of a pattern's basis): nothing.
TRANSFORM = "as-is"


def destination_id(store: Path) -> str:
    store = Path(store).resolve()
    # A store inside the working copy of an s3:// data directory is named by its published location.
    return f"{DESTINATION}:{published_path(store) or store}"


def load_embedded(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    store: Path | None = None,
    batch_rows: int = 5_000,
    progress: Callable[[int], None] | None = None,
    writes: AbstractContextManager[Any] | None = None,
) -> LoadResult:
    """Load the scope's kept patterns that the store lacks; retract those no longer kept.

    ``writes`` (a lock shared by concurrent loads) is held only while files are written and deleted:
    planning and reading texts run beside another scope's writes.
    """
    started = time.perf_counter()
    store = Path(store or layout.engramia)
    ledger = Ledger(layout, scope, destination_id(store))
    result = LoadResult(scope=scope, destination=DESTINATION, tenant_id=tenant_id, project_id=project_id)
    result.ledger_run_id = ledger.run_id
    result.server_version = f"engramia {getattr(engramia, '__version__', '?')} (embedded)"
    memory = open_memory(store)
    with engramia_scope(tenant_id, project_id):
        # count_patterns() is len(list_keys(KEY_PREFIX)): one listing gives both the count and the keys.
        existing = set(memory.storage.list_keys(prefix=KEY_PREFIX))
        before = len(existing)
        # Trust the ledger only for keys the store really holds: a wiped or damaged store is refilled.
        in_store = ledger.in_store().filter(pl.col("key").is_in(list(existing)))
        plan = plan_load(layout, scope, in_store, TRANSFORM)
        to_retract, n_new = plan.to_retract, plan.send_ids.height
        result.kept, result.already_loaded = plan.kept, plan.already
        result.pattern_count_before = before
        if before - to_retract.height + n_new > SCOPE_PATTERN_CAP:
            result.error = (
                f"scope {scope} ({tenant_id}/{project_id}) would hold more than {SCOPE_PATTERN_CAP:,} "
                f"patterns ({before:,} stored + {n_new:,} new); "
                "split it (scope_by=tenant or assistant)"
            )
            result.pattern_count_after = before
            result.settle_unsent()
            return result
        to_send = texts_to_send(layout, scope, plan)
        unchanged = None
        if to_send is not None:
            to_send, unchanged = settle_updates(plan, with_fingerprints(to_send))
        # Only the writes wait for other loads' writes (see ``writes``).
        with writes or nullcontext():
            if unchanged is not None:
                _refresh_unchanged(ledger, unchanged, result)
            for row in to_retract.iter_rows(named=True):
                memory.delete_pattern(row["key"])
                ledger.record(row["pattern_id"], row["key"], Outcome.RETRACTED, "no longer kept")
                result.retracted += 1
            ledger.flush()
            for rows in iter_rows(to_send, batch_rows) if to_send is not None else ():
                records, updates = [], []
                content = {r["key"]: (r["fingerprint"], r["basis"]) for r in rows}
                for row in rows:
                    key = pattern_key(row["pattern_id"])
                    if row["update"]:
                        updates.append(import_record(row, tenant_id, project_id))
                    elif key in existing:
                        # Held by the store but not by the ledger: adopted as it is, like a ledger row
                        # without a fingerprint (see plan.settle_updates).
                        ledger.record(
                            row["pattern_id"], key, Outcome.PRESENT, "key already in the store", *content[key]
                        )
                        result.present += 1
                    else:
                        records.append(import_record(row, tenant_id, project_id))
                # Keys already present were filtered out above, so overwrite=True only skips a second lookup.
                # Serial on purpose: two threads or processes writing files into the scope folder were slower
                # than one (measured 7.5k and 3.1k vs 9-12k files/s), the file system serialises them.
                imported = memory.import_data(records, overwrite=True) if records else 0
                if imported != len(records):
                    raise RuntimeError(f"scope {scope}: import stored {imported} of {len(records)} records")
                for rec in records:
                    pid = rec["data"]["design"]["pattern_id"]
                    ledger.record(pid, rec["key"], Outcome.STORED, None, *content[rec["key"]])
                result.stored += imported
                # A changed pattern is rewritten under its own key: the count does not move.
                if updates and memory.import_data(updates, overwrite=True) != len(updates):
                    raise RuntimeError(f"scope {scope}: rewriting {len(updates)} changed patterns failed")
                for rec in updates:
                    pid = rec["data"]["design"]["pattern_id"]
                    reason = "updated: score or text changed"
                    ledger.record(pid, rec["key"], Outcome.STORED, reason, *content[rec["key"]])
                    if len(result.updates) < UPDATE_SAMPLE:
                        result.updates.append({"pattern_id": pid, "key": rec["key"]})
                result.updated += len(updates)
                result.sent += len(rows)
                ledger.flush()
                if progress:
                    progress(len(rows))
        # Nothing written means nothing to recount (listing a large scope takes seconds).
        changed = result.stored or result.retracted or result.updated
        result.pattern_count_after = pattern_count(memory) if changed else before
    result.seconds = time.perf_counter() - started
    return result


def _refresh_unchanged(ledger: Ledger, unchanged: pl.DataFrame, result: LoadResult) -> None:
    """Patterns whose basis changed but whose content did not: the ledger learns their new basis (and,
    for rows written before fingerprints were kept, adopts the fingerprint), nothing is written."""
    for row in unchanged.iter_rows(named=True):
        reason = "fingerprint adopted (ledger row had none)" if row["adopted"] else "unchanged content"
        ledger.record(
            row["pattern_id"], row["key"], Outcome.PRESENT, reason, row["fingerprint"], row["basis"]
        )
    adopted = int(unchanged["adopted"].sum())
    if adopted:
        result.notes += f"{adopted} fingerprints adopted from the current content without rewriting; "
    ledger.flush()
