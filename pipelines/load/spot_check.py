"""The spot check of an embedded load: patterns this load stored, read back by key, leaving the store as it
found it.

Invariants: the patterns this load stored are checked, a sample spread over the load; a load that stored
nothing checks a sample of what the ledger says the store holds instead (so a pattern changed behind the
pipeline's back is found by the next run, even one with nothing to send). Each is read by its key
through Engramia's own storage (read-only: :class:`pipelines.load.store.ReadOnlyJSONStorage`), must parse
as Engramia's ``Pattern``, and must hold the content the ledger says was sent (its fingerprint over task,
code and score), as the REST check reads back through ``/v1/export``. The check costs its sample, never
the scope. It used Engramia's keyword recall before: without embeddings each recall lists the scope and
reads and scores every stored pattern, seconds per call at 33k patterns, and most of what the CLI spent
beyond the core path at 1M messages (benchmarks/NOTES.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from engramia.types import Pattern
from pydantic import ValidationError

from pipelines.load.ledger import Ledger
from pipelines.load.store import ReadOnlyJSONStorage, engramia_scope
from pipelines.load.verify import spread, stored_by_load, verdict
from pipelines.tables import DataLayout

# Patterns read back per load: one file read each.
READ_BACK_SAMPLE = 20


def read_back_embedded(
    store: Path, tenant_id: str, project_id: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each of ``rows`` (ledger rows: pattern_id, key, fingerprint) read by key from the store: ``found``
    when its file parses as Engramia's ``Pattern`` and holds the content the fingerprint names."""
    storage = ReadOnlyJSONStorage(store)
    out = []
    with engramia_scope(tenant_id, project_id):
        for row in rows:
            data = storage.load(row["key"]) if row["key"] else None
            checked = verdict(row, data, lambda _d: None)
            if data is not None:
                try:
                    Pattern.model_validate(data)
                except ValidationError as exc:
                    checked = {**checked, "held": False, "note": f"not an Engramia pattern: {exc}"}
            out.append({**checked, "found": checked["held"] is True})
    return out


def spot_check_embedded(
    layout: DataLayout,
    scope: str,
    store: Path,
    destination: str,
    tenant_id: str,
    project_id: str,
    ledger_run_id: str | None,
) -> tuple[str, list[dict[str, Any]]]:
    """How the store was read (``read back by key``: what this load stored; ``read back by key (held
    before)``: what the store held already, when this load stored nothing; ``nothing stored``) and one
    ``{"pattern_id", "key", "found": bool, ...}`` per checked pattern."""
    ledger = Ledger(layout, scope, destination)
    method, rows = "read back by key", stored_by_load(ledger, ledger_run_id)
    if rows.is_empty():
        # Rows recorded before fingerprints were kept cannot be compared: the next load adopts theirs.
        held = ledger.in_store().filter(pl.col("fingerprint").is_not_null()).sort("pattern_id")
        method, rows = "read back by key (held before)", held.select("pattern_id", "key", "fingerprint")
    if rows.is_empty():
        return "nothing stored", []
    sample = spread(rows, READ_BACK_SAMPLE).to_dicts()
    return method, read_back_embedded(store, tenant_id, project_id, sample)
