"""Recall spot checks against the embedded store that leave the store exactly as they found it.

Engramia's recall rewards every pattern it returns (``reuse_count + 1``, ``success_score + 0.1``), padding
matches included. A check that changed the scores it was checking would make every re-run drift, so the
spot check reads through a storage whose writes are dropped: the recall itself is Engramia's own.

Without embeddings Engramia's recall scores every pattern of the scope: it lists the scope and reads each
file on every call. The read-only storage keeps what it listed and read for its own lifetime (one check),
so the sample's recalls read each pattern file once, not once per recall; the store is not written
meanwhile (the check runs after the load), and its writes are dropped anyway.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import engramia
import polars as pl
from engramia._context import get_scope

from pipelines.load.ledger import Ledger
from pipelines.load.records import kept_patterns
from pipelines.load.store import FastJSONStorage, engramia_scope
from pipelines.tables import DataLayout

SAMPLE = 3


class ReadOnlyJSONStorage(FastJSONStorage):
    """Engramia's JSON storage that reads each key and listing once and ignores writes (counted, for the
    record)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path)
        self.dropped_writes = 0
        self._listed: dict[tuple[str, str, str], list[str]] = {}
        self._read: dict[tuple[str, str, str], Any] = {}

    def list_keys(self, prefix: str = "") -> list[str]:
        scope = get_scope()
        where = (scope.tenant_id, scope.project_id, prefix)
        if where not in self._listed:
            self._listed[where] = super().list_keys(prefix)
        return list(self._listed[where])

    def load(self, key: str) -> dict | None:
        # Keyed by scope and key, not by path: mapping a key to its path costs more than the lookup.
        scope = get_scope()
        where = (scope.tenant_id, scope.project_id, key)
        if where not in self._read:
            self._read[where] = super().load(key)
        # Engramia changes some of what it loads before writing it back (a recall's reward, an analytics
        # event appended): a copy keeps that out of what the next recall reads.
        return copy.copy(self._read[where])

    def save(self, key: str, data: dict[str, Any] | list[Any]) -> None:
        self.dropped_writes += 1

    def delete(self, key: str) -> None:
        self.dropped_writes += 1

    def save_embedding(self, key: str, embedding: list[float]) -> None:
        self.dropped_writes += 1


def read_only_memory(store: Path) -> engramia.Memory:
    return engramia.Memory(embeddings=None, storage=ReadOnlyJSONStorage(path=str(store)))


def recall_check(
    store: Path, tenant_id: str, project_id: str, tasks: pl.Series, keys: pl.Series
) -> list[dict]:
    """Recall each task; a hit counts only when its own pattern comes back as a duplicate-tier match."""
    memory = read_only_memory(store)
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


def spot_check_embedded(
    layout: DataLayout, scope: str, store: Path, destination: str, tenant_id: str, project_id: str
) -> tuple[str, list[dict]]:
    """:func:`recall_check` of a few kept patterns the ledger says the store holds (the recall is
    read-only, so any stored pattern may be checked); patterns not stored are not checked."""
    in_store = Ledger(layout, scope, destination).in_store()
    kept = kept_patterns(layout, scope)
    if kept is None or in_store.is_empty():
        return "nothing stored", []
    sample = (
        kept.filter(pl.col("key").is_in(in_store["key"].implode()))
        .select("task", "key")
        .head(SAMPLE)
        .collect()
    )
    return "read-only recall", recall_check(store, tenant_id, project_id, sample["task"], sample["key"])
