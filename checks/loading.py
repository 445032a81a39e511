"""Checks on what reached Engramia: its own ``pattern_count`` moved by exactly what this load says it
stored and retracted (patterns it updated do not count), still holds at least what the ledger says is
there, patterns it updated hold their new content, and the patterns it stored read back as sent."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

PATTERN_COUNT_RECONCILES = dg.AssetCheckSpec(
    "pattern_count_reconciles",
    asset="engramia_scopes",
    description="Engramia's pattern_count after the load = before + stored - retracted (updates rewrite, "
    "they do not add), still so now, and at least what the ledger says is stored; a sample of the patterns "
    "the load updated holds the new score and text.",
)
RECALL_SPOT_CHECK = dg.AssetCheckSpec(
    "recall_spot_check",
    asset="engramia_scopes",
    description="Patterns this load stored read back as sent, without changing the store: by key through "
    "/v1/export on a server (recall of one pattern at limit 1 only when the key cannot export), by key "
    "through a read-only storage in the embedded store (a sample spread over the load, each a valid "
    "Engramia pattern holding the sent task, code and score). Patterns not stored by this load "
    "(not_stored, rejected, skipped, already loaded) are not checked.",
)


def pattern_count_reconciles(
    load: Mapping[str, Any] | None,
    pattern_count_now: int,
    in_ledger: int,
    updates_held: list[dict[str, Any]] | None = None,
) -> dg.AssetCheckResult:
    """``load``: the load's figures (``pattern_count_before``, ``stored``, ``retracted``,
    ``pattern_count_after``, ``updated``); ``pattern_count_now`` asked of Engramia; ``in_ledger`` from the
    ledger; ``updates_held``: updated patterns read back from the store, one ``{"held": bool | None, ...}``
    each (None: the store could not be read with this key, which does not fail the check)."""
    if load is None:
        return dg.AssetCheckResult(
            check_name=PATTERN_COUNT_RECONCILES.name,
            passed=False,
            metadata={"error": "no load recorded for this scope"},
        )
    expected = load["pattern_count_before"] + load["stored"] - load["retracted"]
    updates_held = updates_held or []
    return dg.AssetCheckResult(
        check_name=PATTERN_COUNT_RECONCILES.name,
        # A wiped or shrunk store fails the third condition: it holds less than the ledger says it does.
        passed=load["pattern_count_after"] == expected
        and pattern_count_now == load["pattern_count_after"]
        and in_ledger <= pattern_count_now
        and all(u["held"] is not False for u in updates_held),
        metadata={
            "pattern_count_before": load["pattern_count_before"],
            "stored": load["stored"],
            "retracted": load["retracted"],
            "pattern_count_after": load["pattern_count_after"],
            "pattern_count_now": pattern_count_now,
            "in_store_per_ledger": in_ledger,
            "updated": load.get("updated") or 0,
            "updates_checked": len(updates_held),
            "updates_held": sum(u["held"] is True for u in updates_held),
            "updates_read_back": dg.MetadataValue.json(updates_held),
        },
    )


def recall_spot_check(hits: list[dict[str, Any]], method: str = "recall") -> dg.AssetCheckResult:
    """``hits``: one ``{"found": bool, ...}`` per checked pattern (empty when the load stored nothing);
    ``method``: how they were read (``export``, ``recall``, ``read back by key``, ``nothing stored``)."""
    return dg.AssetCheckResult(
        check_name=RECALL_SPOT_CHECK.name,
        passed=all(h["found"] for h in hits),
        metadata={
            "method": method,
            "checked": len(hits),
            "found": sum(h["found"] for h in hits),
            "results": dg.MetadataValue.json(hits),
        },
    )
