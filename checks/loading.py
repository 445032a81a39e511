"""Checks on what reached Engramia: its own ``pattern_count`` moved by exactly what this load says it
stored and retracted, still holds at least what the ledger says is there, and recall finds loaded
patterns by their own task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

RECALL_SAMPLE = 3

PATTERN_COUNT_RECONCILES = dg.AssetCheckSpec(
    "pattern_count_reconciles",
    asset="engramia_scopes",
    description="Engramia's pattern_count after the load = before + stored - retracted, still so now, and "
    "at least what the ledger says is stored.",
)
RECALL_SPOT_CHECK = dg.AssetCheckSpec(
    "recall_spot_check",
    asset="engramia_scopes",
    description=f"Recall finds {RECALL_SAMPLE} loaded tasks as duplicate-tier matches of their own pattern.",
)


def pattern_count_reconciles(
    load: Mapping[str, Any] | None, pattern_count_now: int, in_ledger: int
) -> dg.AssetCheckResult:
    """``load``: the load's figures (``pattern_count_before``, ``stored``, ``retracted``,
    ``pattern_count_after``); ``pattern_count_now`` asked of Engramia; ``in_ledger`` from the ledger."""
    if load is None:
        return dg.AssetCheckResult(
            check_name=PATTERN_COUNT_RECONCILES.name,
            passed=False,
            metadata={"error": "no load recorded for this scope"},
        )
    expected = load["pattern_count_before"] + load["stored"] - load["retracted"]
    return dg.AssetCheckResult(
        check_name=PATTERN_COUNT_RECONCILES.name,
        # A wiped or shrunk store fails the last condition: it holds less than the ledger says it does.
        passed=load["pattern_count_after"] == expected
        and pattern_count_now == load["pattern_count_after"]
        and in_ledger <= pattern_count_now,
        metadata={
            "pattern_count_before": load["pattern_count_before"],
            "stored": load["stored"],
            "retracted": load["retracted"],
            "pattern_count_after": load["pattern_count_after"],
            "pattern_count_now": pattern_count_now,
            "in_store_per_ledger": in_ledger,
        },
    )


def recall_spot_check(hits: list[dict[str, Any]]) -> dg.AssetCheckResult:
    """``hits``: one ``{"found": bool, ...}`` per sampled task (empty when the scope loaded nothing)."""
    return dg.AssetCheckResult(
        check_name=RECALL_SPOT_CHECK.name,
        passed=all(h["found"] for h in hits),
        metadata={
            "checked": len(hits),
            "found": sum(h["found"] for h in hits),
            "results": dg.MetadataValue.json(hits),
        },
    )
