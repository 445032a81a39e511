"""The embedded destination: the real ``engramia`` package in-process, JSON storage on local disk.

Patterns go in through ``Memory.import_data`` with deterministic keys, never a loop of
``Memory.learn`` (which lists the whole scope on every call and stores a new copy each time in 0.6.6).
Engramia reads the scope from a context variable, so every call runs inside :func:`engramia_scope`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import engramia
import polars as pl
from engramia._context import reset_scope, set_scope
from engramia.providers.json_storage import JSONStorage
from engramia.types import Scope

from pipelines.layout import DataLayout
from pipelines.ledger import PRESENT, RETRACTED, STORED, Ledger
from pipelines.load_plan import LoadResult, plan_load
from pipelines.records import import_record, iter_rows

DESTINATION = "embedded"
# Engramia refuses to learn beyond this many patterns in one scope; an import past it would leave
# the scope in a state the library itself does not expect.
SCOPE_PATTERN_CAP = 100_000

# Without embeddings engramia warns on every recall that it falls back to keyword search: expected here.
logging.getLogger("engramia.core.services.recall").setLevel(logging.ERROR)


@contextmanager
def engramia_scope(tenant_id: str, project_id: str) -> Iterator[None]:
    token = set_scope(Scope(tenant_id=tenant_id, project_id=project_id))
    try:
        yield
    finally:
        reset_scope(token)


def open_memory(store: Path) -> engramia.Memory:
    # No embeddings: recall falls back to Engramia's keyword search, which needs no model or key.
    return engramia.Memory(embeddings=None, storage=JSONStorage(path=str(store)))


def pattern_count(memory: engramia.Memory) -> int:
    return int(memory.metrics.pattern_count)


def destination_id(store: Path) -> str:
    return f"{DESTINATION}:{Path(store).resolve()}"


def load_embedded(
    layout: DataLayout,
    scope: str,
    tenant_id: str,
    project_id: str,
    store: Path | None = None,
    batch_rows: int = 5_000,
    progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Load the scope's kept patterns that the store lacks; retract those no longer kept."""
    started = time.perf_counter()
    store = Path(store or layout.engramia)
    ledger = Ledger(layout, scope, destination_id(store))
    result = LoadResult(scope=scope, destination=DESTINATION, tenant_id=tenant_id, project_id=project_id)
    result.server_version = f"engramia {getattr(engramia, '__version__', '?')} (embedded)"
    memory = open_memory(store)
    with engramia_scope(tenant_id, project_id):
        plan = plan_load(layout, scope, ledger)
        result.kept, result.already_loaded = plan.kept, plan.already
        before = pattern_count(memory)
        result.pattern_count_before = before
        if before - plan.to_retract.height + plan.to_send.height > SCOPE_PATTERN_CAP:
            result.error = (
                f"scope {scope} ({tenant_id}/{project_id}) would hold more than {SCOPE_PATTERN_CAP:,} patterns "
                f"({before:,} stored + {plan.to_send.height:,} new); split it (scope_by=tenant or assistant)"
            )
            result.pattern_count_after = before
            return result
        existing = set(memory.storage.list_keys(prefix="patterns/")) if plan.to_send.height else set()
        for row in plan.to_retract.iter_rows(named=True):
            memory.delete_pattern(row["key"])
            ledger.record(row["pattern_id"], row["key"], RETRACTED, "no longer kept")
            result.retracted += 1
        ledger.flush()
        for rows in iter_rows(plan.to_send, batch_rows):
            records = []
            for row in rows:
                key = f"patterns/{row['pattern_id']}"
                if key in existing:
                    ledger.record(row["pattern_id"], key, PRESENT, "key already in the store")
                    result.present += 1
                else:
                    records.append(import_record(row, tenant_id, project_id))
            # Keys already present were filtered out above, so overwrite=True only skips a second lookup.
            imported = memory.import_data(records, overwrite=True) if records else 0
            if imported != len(records):
                raise RuntimeError(f"scope {scope}: import stored {imported} of {len(records)} records")
            for rec in records:
                ledger.record(rec["data"]["design"]["pattern_id"], rec["key"], STORED)
            result.stored += imported
            result.sent += len(rows)
            ledger.flush()
            if progress:
                progress(len(rows))
        result.pattern_count_after = pattern_count(memory)
    result.seconds = time.perf_counter() - started
    return result


def recall_check(store: Path, tenant_id: str, project_id: str, tasks: pl.Series, keys: pl.Series) -> list[dict]:
    """Recall each task and report whether its own pattern came back as a duplicate-tier match."""
    memory = open_memory(store)
    out = []
    with engramia_scope(tenant_id, project_id):
        for task, key in zip(tasks.to_list(), keys.to_list(), strict=True):
            matches = memory.recall(task, limit=5, deduplicate=False)
            hit = next((m for m in matches if m.pattern_key == key), None)
            out.append(
                {
                    "key": key,
                    "found": hit is not None and hit.reuse_tier == "duplicate",
                    "similarity": None if hit is None else float(hit.similarity),
                    "reuse_tier": None if hit is None else hit.reuse_tier,
                }
            )
    return out
